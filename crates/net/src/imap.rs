//! IMAP's side of the [`driver`](super::driver): the session's settings, the answers to its
//! requests (logins through the one login decision, folders and messages through
//! [`store::folders`](dirmail_store::folders)), and the driver's extra input: news of the open
//! folder.
//!
//! Several sessions may have one mailbox open; they tell each other of changes through the
//! [`Hub`](super::hub::Hub). Mail delivered by SMTP and deletions by POP3 do not go through the
//! hub: a session in IDLE notices them by watching its folder's `new/` and `cur/`
//! modification times, and NOOP always re-scans.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::broadcast;

use super::driver::{self, Accepted, Handler};
use super::hub::{self, Change};
use super::login::{LoginAnswer, log_in, plaintext_allowed_before_tls};
use super::sessions::Registration;
use super::shared::{Service, Shared};
use dirmail_directory::login::Service as LoginService;
use dirmail_proto::auth::Credentials;
use dirmail_proto::imap::{
    Config as SessionConfig, Failure, MessageMeta, Request, Response, Session, Snapshot,
};
use dirmail_store::folders::{Folder, FolderError, InvalidName, Mailstore, change_stamp};
use dirmail_store::rules::r15_quota_admits;
use dirmail_store::{MailboxRow, maildir};

/// How often a session in IDLE looks at its folder's modification times.
const IDLE_POLL: Duration = Duration::from_secs(2);

/// What IMAP keeps beside the core.
struct State {
    id: u64,
    /// This session's place in the list `dirmail status` shows.
    session: Registration,
    mailbox: Option<MailboxRow>,
    store: Option<Mailstore>,
    /// The selected folder, as last scanned.
    folder: Option<Folder>,
    changes: Option<broadcast::Receiver<Change>>,
    /// The folder's modification times at the last scan, for IDLE.
    stamp: Option<(SystemTime, SystemTime)>,
}

/// Serves one IMAP connection until the client logs out, the session closes it, or the server
/// stops (then the client is told `* BYE`).
pub async fn serve(
    service: Service,
    accepted: Accepted,
    peer: SocketAddr,
    shared: Arc<Shared>,
    registration: Registration,
) -> std::io::Result<()> {
    let conn = driver::connect(service, accepted, &shared).await?;
    let mut config = SessionConfig::new(shared.config.server.hostname.clone());
    config.plaintext_allowed = plaintext_allowed_before_tls(shared.config.tls.plaintext_auth, peer);
    config.max_message_size =
        u32::try_from(shared.config.smtp.max_message_size).unwrap_or(u32::MAX);
    config.idle_timeout = shared.config.limits.imap_idle_timeout;
    // Before login the leash is shorter, never longer.
    config.login_timeout = config.login_timeout.min(config.idle_timeout);
    let session = Session::new(config, peer.ip(), conn.is_tls(), Instant::now());
    let mut handler = Imap {
        shared: Arc::clone(&shared),
        peer,
        state: State {
            id: hub::session_id(),
            session: registration,
            mailbox: None,
            store: None,
            folder: None,
            changes: None,
            stamp: None,
        },
    };
    driver::run(conn, session, &mut handler, &shared, peer).await
}

struct Imap {
    shared: Arc<Shared>,
    peer: SocketAddr,
    state: State,
}

impl Handler<Session> for Imap {
    async fn answer(&mut self, request: Request) -> Response {
        answer(&self.shared, self.peer, request, &mut self.state).await
    }

    /// News for the session: another session changed the selected folder (or the hub lost
    /// count), or, while idling, the folder's modification times moved.
    async fn wake(&mut self, idle: bool) -> bool {
        let state = &mut self.state;
        tokio::select! {
            change = hub::next_change(&mut state.changes) => {
                let selected = state.folder.as_ref().map(|f| f.dir().to_owned());
                match change {
                    Some((from, folder)) => from != state.id && selected.as_deref() == Some(&*folder),
                    // Lagged: something happened, we do not know where.
                    None => selected.is_some(),
                }
            }
            _ = tokio::time::sleep(IDLE_POLL), if idle => {
                state.folder.as_ref().is_some_and(|folder| change_stamp(folder.dir()) != state.stamp)
            }
        }
    }
}

fn snapshot(folder: &Folder) -> Snapshot {
    Snapshot {
        uidvalidity: folder.uidvalidity(),
        uidnext: folder.uidnext(),
        messages: folder
            .entries()
            .iter()
            .map(|e| MessageMeta {
                uid: e.uid,
                flags: e.flags,
                size: e.size,
                internal_date: e.internal_date,
                recent: e.recent,
            })
            .collect(),
        keywords: folder.keywords().to_vec(),
    }
}

fn failure(peer: SocketAddr, error: FolderError) -> Failure {
    match error {
        FolderError::NoSuchFolder(_) => Failure::NoSuchFolder,
        FolderError::AlreadyExists(_) => Failure::AlreadyExists,
        FolderError::InvalidName(InvalidName(why)) | FolderError::Refused(why) => {
            Failure::Refused(why.into())
        }
        FolderError::Io(e) => {
            tracing::error!(%peer, "mail store error: {e}");
            Failure::Unavailable
        }
    }
}

/// Runs `f` on the blocking pool; a panic there is a store failure, not a crash.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

async fn answer(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    request: Request,
    state: &mut State,
) -> Response {
    if let Request::Authenticate(credentials) = request {
        return authenticate(shared, peer, credentials, state).await;
    }
    let Some(store) = state.store.clone() else {
        return Response::Failed(Failure::Unavailable);
    };
    match request {
        Request::Authenticate(_) => Response::Failed(Failure::Unavailable),
        Request::ListFolders => {
            let listed =
                blocking(move || Ok::<_, std::io::Error>((store.list()?, store.subscriptions()?)))
                    .await;
            match listed {
                Some(Ok((folders, subscribed))) => Response::Folders {
                    folders,
                    subscribed,
                },
                Some(Err(e)) => Response::Failed(failure(peer, e.into())),
                None => Response::Failed(Failure::Unavailable),
            }
        }
        Request::Create { folder } => done(peer, blocking(move || store.create(&folder)).await),
        Request::Delete { folder } => {
            if state.folder.as_ref().is_some_and(|f| f.name() == folder) {
                state.folder = None;
            }
            done(peer, blocking(move || store.delete(&folder)).await)
        }
        Request::Rename { from, to } => {
            done(peer, blocking(move || store.rename(&from, &to)).await)
        }
        Request::Subscribe { folder, subscribe } => done(
            peer,
            blocking(move || store.set_subscribed(&folder, subscribe)).await,
        ),
        Request::Status { folder } => match blocking(move || store.status(&folder)).await {
            Some(Ok(status)) => Response::Status(status),
            Some(Err(e)) => Response::Failed(failure(peer, e)),
            None => Response::Failed(Failure::Unavailable),
        },
        Request::Select { folder, read_only } => {
            state.folder = None;
            // EXAMINE looks at `\Recent` without taking it (RFC 3501 §6.3.2).
            let opened = blocking(move || {
                let stamp = change_stamp(&store.dir_of(&folder));
                Folder::open(&store, &folder, !read_only).map(|f| (f, stamp))
            })
            .await;
            match opened {
                Some(Ok((folder, stamp))) => {
                    let snapshot = snapshot(&folder);
                    state.folder = Some(folder);
                    state.stamp = stamp;
                    Response::Snapshot(snapshot)
                }
                Some(Err(e)) => Response::Failed(failure(peer, e)),
                None => Response::Failed(Failure::Unavailable),
            }
        }
        Request::Refresh => with_folder(state, peer, |folder| {
            let stamp = change_stamp(folder.dir());
            let claims = folder.claims_recent();
            folder.scan(claims)?;
            Ok::<_, std::io::Error>((snapshot(folder), stamp))
        })
        .await
        .map(|(snapshot, stamp)| {
            state.stamp = stamp;
            Response::Snapshot(snapshot)
        })
        .unwrap_or_else(Response::Failed),
        Request::Load { uids } => with_folder(state, peer, move |folder| {
            uids.iter()
                .map(|&uid| folder.read(uid))
                .collect::<std::io::Result<Vec<_>>>()
        })
        .await
        .map(Response::Messages)
        .unwrap_or_else(Response::Failed),
        Request::Store {
            uids,
            op,
            flags,
            keywords,
        } => {
            let result = with_folder(state, peer, move |folder| {
                let changed = folder.store(&uids, op, flags, &keywords)?;
                Ok::<_, FolderError>((changed, folder.keywords().to_vec()))
            })
            .await;
            notify(shared, state);
            result
                .map(|(changed, keywords)| Response::Flags { changed, keywords })
                .unwrap_or_else(Response::Failed)
        }
        Request::Expunge { uids } => {
            let result = with_folder(state, peer, move |folder| folder.expunge(&uids)).await;
            notify(shared, state);
            result
                .map(Response::Expunged)
                .unwrap_or_else(Response::Failed)
        }
        Request::Copy { uids, to, remove } => {
            copy(shared, peer, state, store, uids, to, remove).await
        }
        Request::Append {
            folder,
            flags,
            keywords,
            date,
            message,
        } => {
            append(
                shared,
                peer,
                state,
                store,
                folder,
                (flags, keywords),
                date,
                message,
            )
            .await
        }
    }
}

fn done(peer: SocketAddr, result: Option<Result<(), FolderError>>) -> Response {
    match result {
        Some(Ok(())) => Response::Done,
        Some(Err(e)) => Response::Failed(failure(peer, e)),
        None => Response::Failed(Failure::Unavailable),
    }
}

/// Runs `f` on the selected folder on the blocking pool, handing the folder back afterwards.
async fn with_folder<T: Send + 'static, E: Into<FolderError> + Send + 'static>(
    state: &mut State,
    peer: SocketAddr,
    f: impl FnOnce(&mut Folder) -> Result<T, E> + Send + 'static,
) -> Result<T, Failure> {
    let Some(mut folder) = state.folder.take() else {
        return Err(Failure::Unavailable);
    };
    let Some((folder, result)) = blocking(move || {
        let result = f(&mut folder);
        (folder, result)
    })
    .await
    else {
        return Err(Failure::Unavailable);
    };
    state.folder = Some(folder);
    result.map_err(|e| failure(peer, e.into()))
}

fn notify(shared: &Shared, state: &State) {
    if let (Some(store), Some(folder)) = (&state.store, &state.folder) {
        shared.imap.notify(store.root(), state.id, folder.dir());
    }
}

/// R15: may `adding` more octets go into the mailbox?
fn quota_admits(
    mailbox: Option<&MailboxRow>,
    store: &Mailstore,
    adding: u64,
) -> Result<bool, FolderError> {
    let Some(limit) = mailbox.and_then(|m| m.quota_bytes) else {
        return Ok(true);
    };
    let used = maildir::usage(store.root())
        .map_err(|e| FolderError::Io(std::io::Error::other(e.to_string())))?
        .bytes;
    Ok(r15_quota_admits(Some(limit), used, adding))
}

async fn copy(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    state: &mut State,
    store: Mailstore,
    uids: Vec<u32>,
    to: String,
    remove: bool,
) -> Response {
    let mailbox = state.mailbox.clone();
    let result = with_folder(state, peer, move |folder| {
        let chosen: std::collections::HashSet<u32> = uids.iter().copied().collect();
        let size: u64 = folder
            .entries()
            .iter()
            .filter(|e| chosen.contains(&e.uid))
            .map(|e| e.size)
            .sum();
        // A move stays within the mailbox: nothing to charge.
        if !remove
            && !quota_admits(mailbox.as_ref(), &store, size).map_err(std::io::Error::other)?
        {
            return Ok(Err(Failure::OverQuota));
        }
        if folder.name() == to {
            let pairs = folder.copy_here(&uids, remove)?;
            return Ok(Ok((folder.uidvalidity(), pairs, None)));
        }
        let mut target = match Folder::open(&store, &to, false) {
            Ok(target) => target,
            Err(FolderError::NoSuchFolder(_)) => return Ok(Err(Failure::NoSuchFolder)),
            Err(FolderError::InvalidName(InvalidName(why)) | FolderError::Refused(why)) => {
                return Ok(Err(Failure::Refused(why.into())));
            }
            Err(FolderError::AlreadyExists(_)) => return Ok(Err(Failure::Unavailable)),
            Err(FolderError::Io(e)) => return Err(e),
        };
        let pairs = folder.copy_to(&uids, &mut target, remove)?;
        Ok(Ok((
            target.uidvalidity(),
            pairs,
            Some(target.dir().to_owned()),
        )))
    })
    .await;
    match result {
        Ok(Ok((uidvalidity, pairs, target))) => {
            notify(shared, state);
            if let (Some(store), Some(target)) = (&state.store, target) {
                shared.imap.notify(store.root(), state.id, &target);
            }
            Response::Copied { uidvalidity, pairs }
        }
        Ok(Err(failure)) | Err(failure) => Response::Failed(failure),
    }
}

#[allow(clippy::too_many_arguments)]
async fn append(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    state: &mut State,
    store: Mailstore,
    folder: String,
    (flags, keywords): (dirmail_store::folders::Flags, Vec<String>),
    date: Option<i64>,
    message: Vec<u8>,
) -> Response {
    let mailbox = state.mailbox.clone();
    let size = message.len() as u64;
    let admitted = {
        let store = store.clone();
        blocking(move || quota_admits(mailbox.as_ref(), &store, size)).await
    };
    match admitted {
        Some(Ok(true)) => {}
        Some(Ok(false)) => return Response::Failed(Failure::OverQuota),
        Some(Err(e)) => return Response::Failed(failure(peer, e)),
        None => return Response::Failed(Failure::Unavailable),
    }
    let into_selected = state.folder.as_ref().is_some_and(|f| f.name() == folder);
    let result = if into_selected {
        with_folder(state, peer, move |f| {
            Ok::<_, FolderError>((
                f.append(&message, flags, &keywords, date)?,
                f.uidvalidity(),
                f.dir().to_owned(),
            ))
        })
        .await
    } else {
        match blocking(move || {
            let mut target = Folder::open(&store, &folder, false)?;
            let uid = target.append(&message, flags, &keywords, date)?;
            Ok::<_, FolderError>((uid, target.uidvalidity(), target.dir().to_owned()))
        })
        .await
        {
            Some(Ok(done)) => Ok(done),
            Some(Err(e)) => Err(failure(peer, e)),
            None => Err(Failure::Unavailable),
        }
    };
    match result {
        Ok((uid, uidvalidity, dir)) => {
            if let Some(store) = &state.store {
                shared.imap.notify(store.root(), state.id, &dir);
            }
            Response::Appended { uidvalidity, uid }
        }
        Err(failure) => Response::Failed(failure),
    }
}

async fn authenticate(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    credentials: Credentials,
    state: &mut State,
) -> Response {
    let mailbox = match log_in(
        shared,
        peer,
        &state.session,
        LoginService::Imap,
        credentials,
    )
    .await
    {
        LoginAnswer::Accepted(mailbox) => mailbox,
        LoginAnswer::Locked => return Response::Locked,
        LoginAnswer::BadCredentials => return Response::BadCredentials,
        LoginAnswer::Unavailable => return Response::Failed(Failure::Unavailable),
    };
    let backend = Arc::clone(&shared.backend);
    let found = mailbox.clone();
    let dir = match blocking(move || backend.maildir_of(&found)).await {
        Some(Ok(dir)) => dir,
        Some(Err(e)) => {
            tracing::error!(%peer, "login check failed: {e}");
            return Response::Failed(Failure::Unavailable);
        }
        None => {
            tracing::error!(%peer, "login check panicked");
            return Response::Failed(Failure::Unavailable);
        }
    };
    tracing::info!(%peer, user = %mailbox.address, "imap login");
    let store = Mailstore::new(dir, shared.config.server.hostname.clone());
    state.changes = shared.imap.subscribe(store.root());
    state.store = Some(store);
    state.mailbox = Some(mailbox);
    Response::LoggedIn
}
