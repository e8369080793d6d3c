//! POP3's side of the [`driver`](super::driver): the session's settings, and the answers to
//! its requests: logins, the R20 hold and snapshot, messages, deletions at QUIT.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::backend::Pop3Hold;
use super::driver::{self, Accepted, Handler};
use super::login::{LoginAnswer, log_in, plaintext_allowed_before_tls, unique_challenge};
use super::sessions::Registration;
use super::shared::{Service, Shared};
use dirmail_directory::login::Service as LoginService;
use dirmail_proto::pop3::session::{
    Config as SessionConfig, MessageInfo, Request, Response, Session,
};
use dirmail_store::{MailboxRow, maildir};

/// What POP3 keeps beside the core: who logged in, the hold and the snapshot.
#[derive(Default)]
struct Maildrop {
    mailbox: Option<MailboxRow>,
    hold: Option<Pop3Hold>,
    snapshot: Vec<maildir::MessageFile>,
}

/// Serves one POP3 connection. A dropped connection deletes nothing (R20): deletions happen
/// only when the core asks for a `Commit` at QUIT.
pub async fn serve(
    service: Service,
    accepted: Accepted,
    peer: SocketAddr,
    shared: Arc<Shared>,
    registration: Registration,
) -> std::io::Result<()> {
    let conn = driver::connect(service, accepted, &shared).await?;
    let (spa_required, any_secrets) = {
        let backend = Arc::clone(&shared.backend);
        tokio::task::spawn_blocking(move || {
            (
                backend
                    .clear_text_refused(LoginService::Pop3)
                    .unwrap_or(false),
                backend.any_mail_secrets(),
            )
        })
        .await
        .unwrap_or((false, false))
    };
    let timestamp = unique_challenge(&shared.config.server.hostname);
    let mut config = SessionConfig::new(shared.config.server.hostname.clone(), timestamp);
    config.plaintext_allowed = plaintext_allowed_before_tls(shared.config.tls.plaintext_auth, peer);
    // The login decision refuses clear text under `sparequired`; the core need not offer it.
    config.spa_required = spa_required;
    config.offer_cram_md5 = any_secrets;
    config.idle_timeout = shared.config.limits.pop3_idle_timeout;
    let session = Session::new(config, peer.ip(), conn.is_tls(), Instant::now());
    let mut handler = Pop3 {
        shared: Arc::clone(&shared),
        peer,
        session: registration,
        drop: Maildrop::default(),
    };
    driver::run(conn, session, &mut handler, &shared, peer).await
}

struct Pop3 {
    shared: Arc<Shared>,
    peer: SocketAddr,
    /// This session's place in the list `dirmail status` shows.
    session: Registration,
    drop: Maildrop,
}

impl Handler<Session> for Pop3 {
    async fn answer(&mut self, request: Request) -> Response {
        answer(
            &self.shared,
            self.peer,
            &self.session,
            request,
            &mut self.drop,
        )
        .await
    }
}

async fn answer(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    session: &Registration,
    request: Request,
    state: &mut Maildrop,
) -> Response {
    match request {
        Request::Authenticate(credentials) => {
            match log_in(shared, peer, session, LoginService::Pop3, credentials).await {
                LoginAnswer::Accepted(mailbox) => {
                    let key = mailbox.id.to_string();
                    state.mailbox = Some(mailbox);
                    Response::Ok { mailbox: key }
                }
                LoginAnswer::Locked => Response::Locked,
                LoginAnswer::BadCredentials => Response::BadCredentials,
                LoginAnswer::Unavailable => Response::TempFail,
            }
        }
        Request::OpenMailbox { .. } => open(shared, peer, state).await,
        Request::Retrieve { index, uid, .. } => {
            let Some(file) = state.snapshot.get(index).filter(|f| f.uid == uid).cloned() else {
                return Response::TempFail;
            };
            // IMAP may have moved it to `cur/` or changed its flags since the snapshot.
            let path = tokio::task::spawn_blocking(move || maildir::current_path(&file))
                .await
                .ok()
                .flatten();
            let Some(path) = path else {
                tracing::info!(%peer, %uid, "a message of the snapshot is gone");
                return Response::TempFail;
            };
            match tokio::fs::read(&path).await {
                Ok(bytes) => Response::Message(bytes),
                Err(e) => {
                    tracing::warn!(%peer, %uid, "cannot read a message: {e}");
                    Response::TempFail
                }
            }
        }
        Request::Commit { delete } => {
            let doomed: Vec<maildir::MessageFile> = state
                .snapshot
                .iter()
                .filter(|f| delete.contains(&f.uid))
                .cloned()
                .collect();
            let result = tokio::task::spawn_blocking(move || {
                maildir::delete_messages(&doomed.iter().collect::<Vec<_>>())
            })
            .await;
            // The hold goes with the session either way.
            state.hold = None;
            match result {
                Ok(Ok(())) => {
                    if let Some(mailbox) = &state.mailbox {
                        tracing::info!(%peer, user = %mailbox.address, deleted = delete.len(), "pop3 quit");
                    }
                    Response::Committed
                }
                Ok(Err(e)) => {
                    tracing::error!(%peer, "deleting messages failed: {e}");
                    Response::TempFail
                }
                Err(e) => {
                    tracing::error!(%peer, "deleting messages panicked: {e}");
                    Response::TempFail
                }
            }
        }
    }
}

/// R20: takes the mailbox for this session (or `InUse`) and snapshots its messages; mail that
/// arrives later shows up in the next session.
async fn open(shared: &Arc<Shared>, peer: SocketAddr, state: &mut Maildrop) -> Response {
    let Some(mailbox) = state.mailbox.clone() else {
        return Response::TempFail;
    };
    let Some(hold) = shared.backend.r20_hold_pop3(mailbox.id) else {
        tracing::info!(%peer, user = %mailbox.address, "pop3 mailbox in use (R20)");
        return Response::InUse;
    };
    let backend = Arc::clone(&shared.backend);
    let listed = tokio::task::spawn_blocking(move || {
        let dir = backend
            .maildir_of(&mailbox)
            .map_err(std::io::Error::other)?;
        maildir::list_inbox(&dir)
    })
    .await;
    match listed {
        Ok(Ok(files)) => {
            let infos = files
                .iter()
                .map(|f| MessageInfo {
                    uid: f.uid.clone(),
                    size: f.size,
                })
                .collect();
            state.snapshot = files;
            state.hold = Some(hold);
            if let Some(mailbox) = &state.mailbox {
                tracing::info!(%peer, user = %mailbox.address, messages = state.snapshot.len(), "pop3 login");
            }
            Response::Opened(infos)
        }
        Ok(Err(e)) => {
            tracing::error!(%peer, "cannot list the mailbox: {e}");
            Response::TempFail
        }
        Err(e) => {
            tracing::error!(%peer, "listing the mailbox panicked: {e}");
            Response::TempFail
        }
    }
}
