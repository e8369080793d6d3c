//! The IMAP driver: joins a [`proto::imap::Session`](dirmail_proto::imap::Session) to a socket
//! and answers its requests: logins through the one login check (and the throttle after a
//! failure), folders and messages through [`store::folders`](dirmail_store::folders).
//!
//! Several sessions may have one mailbox open. When a session changes a folder (flags,
//! expunges, copies, appends) it tells the others through the [`Hub`], a broadcast channel per
//! mailbox; they re-scan at the next command that may report it, at once while in IDLE. Mail
//! delivered by SMTP and deletions by POP3 do not go through the hub: a session in IDLE notices
//! them by watching its folder's `new/` and `cur/` modification times, and NOOP always
//! re-scans.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;

use super::conn::Conn;
use super::server::{Service, Shared, stopped};
use super::smtp::{flush, plaintext_allowed_before_tls, sleep_until};
use dirmail_directory::login::LoginOutcome;
use dirmail_proto::auth::{Credentials, Proof};
use dirmail_proto::imap::{
    Config as SessionConfig, Event, Failure, MessageMeta, Request, Response, Session, Snapshot,
};
use dirmail_store::folders::{Folder, FolderError, InvalidName, Mailstore, change_stamp};
use dirmail_store::rules::r15_quota_admits;
use dirmail_store::{MailboxRow, maildir};

/// How often a session in IDLE looks at its folder's modification times.
const IDLE_POLL: Duration = Duration::from_secs(2);
/// Replies are written out once this much has piled up, even mid-command.
const FLUSH_AT: usize = 256 * 1024;

static SESSION_IDS: AtomicU64 = AtomicU64::new(1);

/// One change: which session made it, in which folder.
type Change = (u64, Arc<Path>);

/// Per-mailbox news for the IMAP sessions of this server.
#[derive(Debug, Default)]
pub struct Hub {
    channels: Mutex<HashMap<PathBuf, broadcast::Sender<Change>>>,
}

impl Hub {
    fn subscribe(&self, mailbox: &Path) -> Option<broadcast::Receiver<Change>> {
        let mut channels = self.channels.lock().ok()?;
        // Forget mailboxes nobody listens to any more, so the table stays small.
        channels.retain(|_, sender| sender.receiver_count() > 0);
        let sender = channels
            .entry(mailbox.to_owned())
            .or_insert_with(|| broadcast::channel(64).0);
        Some(sender.subscribe())
    }

    fn notify(&self, mailbox: &Path, session: u64, folder: &Path) {
        if let Ok(channels) = self.channels.lock()
            && let Some(sender) = channels.get(mailbox)
        {
            let _ = sender.send((session, Arc::from(folder)));
        }
    }
}

/// What the driver keeps beside the core.
struct State {
    id: u64,
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
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
) -> std::io::Result<()> {
    let mut conn = Conn::new(tcp, shared.config.limits.write_timeout);
    if service.implicit_tls() {
        conn.upgrade(&shared.tls).await?;
    }
    let mut config = SessionConfig::new(shared.config.server.hostname.clone());
    config.plaintext_allowed = plaintext_allowed_before_tls(shared.config.tls.plaintext_auth, peer);
    config.max_message_size =
        u32::try_from(shared.config.smtp.max_message_size).unwrap_or(u32::MAX);
    config.idle_timeout = shared.config.limits.imap_idle_timeout;
    // Before login the leash is shorter, never longer.
    config.login_timeout = config.login_timeout.min(config.idle_timeout);
    let mut session = Session::new(config, peer.ip(), conn.is_tls(), Instant::now());
    let mut out = session.greeting().to_bytes();
    let mut state = State {
        id: SESSION_IDS.fetch_add(1, Ordering::Relaxed),
        mailbox: None,
        store: None,
        folder: None,
        changes: None,
        stamp: None,
    };
    let mut stopping = shared.stopping.clone();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while let Some(event) = session.poll() {
            match event {
                Event::Reply(reply) => {
                    reply.write_to(&mut out);
                    if out.len() >= FLUSH_AT {
                        flush(&mut conn, &mut out).await?;
                    }
                }
                Event::Request(request) => {
                    flush(&mut conn, &mut out).await?;
                    let response = answer(&shared, peer, request, &mut state).await;
                    if let Err(e) = session.answer(response) {
                        tracing::error!(%peer, "imap core refused an answer: {e}");
                        return Ok(());
                    }
                }
                Event::StartTls => {
                    flush(&mut conn, &mut out).await?;
                    conn.upgrade(&shared.tls).await?;
                    session.tls_started(Instant::now());
                }
                Event::Close => {
                    flush(&mut conn, &mut out).await?;
                    let _ = conn.shutdown().await;
                    return Ok(());
                }
            }
        }
        flush(&mut conn, &mut out).await?;
        let deadline = session.deadline();
        let idle = session.is_idle();
        tokio::select! {
            read = conn.read(&mut buf) => {
                let n = read?;
                if n == 0 {
                    return Ok(());
                }
                session.feed(buf.get(..n).unwrap_or_default(), Instant::now());
            }
            _ = sleep_until(deadline) => session.timeout(Instant::now()),
            change = next_change(&mut state.changes) => {
                let selected = state.folder.as_ref().map(|f| f.dir().to_owned());
                let ours = match change {
                    Some((from, folder)) => from != state.id && selected.as_deref() == Some(&*folder),
                    // Lagged: something happened, we do not know where.
                    None => selected.is_some(),
                };
                if ours {
                    session.poke();
                }
            }
            _ = tokio::time::sleep(IDLE_POLL), if idle => {
                if let Some(folder) = &state.folder {
                    let now = change_stamp(folder.dir());
                    if now != state.stamp {
                        session.poke();
                    }
                }
            }
            _ = stopped(&mut stopping) => {
                let _ = conn.write_all(b"* BYE [UNAVAILABLE] Server shutting down\r\n").await;
                let _ = conn.shutdown().await;
                return Ok(());
            }
        }
    }
}

/// The next change in the hub; `None` when some were missed. Never completes without a hub.
async fn next_change(changes: &mut Option<broadcast::Receiver<Change>>) -> Option<Change> {
    let Some(receiver) = changes else {
        return std::future::pending().await;
    };
    match receiver.recv().await {
        Ok(change) => Some(change),
        Err(broadcast::error::RecvError::Lagged(_)) => None,
        Err(broadcast::error::RecvError::Closed) => {
            *changes = None;
            std::future::pending().await
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
        Request::Select { folder, .. } => {
            state.folder = None;
            let opened = blocking(move || {
                let stamp = change_stamp(&store.dir_of(&folder));
                Folder::open(&store, &folder, true).map(|f| (f, stamp))
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
            folder.scan(true)?;
            Ok((snapshot(folder), stamp))
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
        Request::Store { uids, op, flags } => {
            let result =
                with_folder(state, peer, move |folder| folder.store(&uids, op, flags)).await;
            notify(shared, state);
            result.map(Response::Flags).unwrap_or_else(Response::Failed)
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
            date,
            message,
        } => append(shared, peer, state, store, folder, flags, date, message).await,
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
async fn with_folder<T: Send + 'static>(
    state: &mut State,
    peer: SocketAddr,
    f: impl FnOnce(&mut Folder) -> std::io::Result<T> + Send + 'static,
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
    flags: dirmail_store::folders::Flags,
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
            Ok((
                f.append(&message, flags, date)?,
                f.uidvalidity(),
                f.dir().to_owned(),
            ))
        })
        .await
    } else {
        match blocking(move || {
            let mut target = Folder::open(&store, &folder, false)?;
            let uid = target.append(&message, flags, date)?;
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
    let Credentials {
        authzid,
        username,
        proof,
    } = credentials;
    let Proof::Password(password) = proof else {
        tracing::info!(%peer, user = %username, reason = "no mail secret for a digest login", "imap login refused");
        return refuse(shared, peer).await;
    };
    if authzid
        .as_deref()
        .is_some_and(|z| !z.eq_ignore_ascii_case(&username))
    {
        tracing::info!(%peer, user = %username, reason = "asked to act as another identity", "imap login refused");
        return refuse(shared, peer).await;
    }
    let backend = Arc::clone(&shared.backend);
    let user = username.clone();
    let outcome = blocking(move || {
        let outcome = backend.login(&user, &password)?;
        let dir = match &outcome {
            LoginOutcome::Accepted(mailbox) => Some(backend.maildir_of(mailbox)?),
            _ => None,
        };
        Ok::<_, String>((outcome, dir))
    })
    .await;
    match outcome {
        Some(Ok((LoginOutcome::Accepted(mailbox), Some(dir)))) => {
            shared.throttle.succeeded(peer.ip());
            tracing::info!(%peer, user = %mailbox.address, "imap login");
            let store = Mailstore::new(dir, shared.config.server.hostname.clone());
            state.changes = shared.imap.subscribe(store.root());
            state.store = Some(store);
            state.mailbox = Some(mailbox);
            Response::LoggedIn
        }
        Some(Ok((LoginOutcome::Locked { mailbox, rule }, _))) => {
            tracing::info!(%peer, user = %mailbox.address, reason = "locked by the administrator", rule, "imap login refused");
            Response::Locked
        }
        Some(Ok((LoginOutcome::Refused(reason), _))) => {
            tracing::info!(%peer, user = %username, reason = reason.describe(), "imap login refused");
            refuse(shared, peer).await
        }
        Some(Ok((LoginOutcome::Accepted(_), None))) | Some(Err(_)) | None => {
            tracing::error!(%peer, "login check failed");
            Response::Failed(Failure::Unavailable)
        }
    }
}

/// A failed login waits as the throttle says before it is answered.
async fn refuse(shared: &Arc<Shared>, peer: SocketAddr) -> Response {
    let delay = shared.throttle.failed(peer.ip(), Instant::now());
    tokio::time::sleep(delay).await;
    Response::BadCredentials
}
