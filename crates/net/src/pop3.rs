//! The POP3 driver: joins a [`proto::pop3::Session`](dirmail_proto::pop3::Session) to a socket
//! and answers its requests: logins, the R20 hold and snapshot, messages, deletions at QUIT.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::backend::Pop3Hold;
use super::conn::Conn;
use super::server::{Service, Shared, stopped};
use super::smtp::{flush, plaintext_allowed_before_tls, sleep_until, unique_challenge};
use dirmail_directory::login::LoginOutcome;
use dirmail_proto::auth::{Credentials, Proof};
use dirmail_proto::pop3::session::{
    Config as SessionConfig, Event, MessageInfo, Request, Response, Session,
};
use dirmail_store::{MailboxRow, maildir};

/// What the driver keeps beside the core: who logged in, the hold and the snapshot.
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
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
) -> std::io::Result<()> {
    let mut conn = Conn::new(tcp, shared.config.limits.write_timeout);
    if service.implicit_tls() {
        conn.upgrade(&shared.tls).await?;
    }
    let (spa_required, any_secrets) = {
        let backend = Arc::clone(&shared.backend);
        tokio::task::spawn_blocking(move || {
            (
                backend.spa_required().unwrap_or(false),
                backend.any_mail_secrets(),
            )
        })
        .await
        .unwrap_or((false, false))
    };
    let timestamp = unique_challenge(&shared.config.server.hostname);
    let mut config = SessionConfig::new(shared.config.server.hostname.clone(), timestamp);
    config.plaintext_allowed = plaintext_allowed_before_tls(shared.config.tls.plaintext_auth, peer);
    config.spa_required = spa_required;
    config.offer_cram_md5 = any_secrets;
    config.idle_timeout = shared.config.limits.pop3_idle_timeout;
    let mut session = Session::new(config, peer.ip(), conn.is_tls(), Instant::now());
    let mut out = session.greeting().to_bytes();
    let mut drop_state = Maildrop::default();
    let mut stopping = shared.stopping.clone();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while let Some(event) = session.poll() {
            match event {
                Event::Reply(reply) => out.extend_from_slice(&reply.to_bytes()),
                Event::Request(request) => {
                    flush(&mut conn, &mut out).await?;
                    let response = answer(&shared, peer, request, &mut drop_state).await;
                    if let Err(e) = session.answer(response) {
                        tracing::error!(%peer, "pop3 core refused an answer: {e}");
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
        tokio::select! {
            read = conn.read(&mut buf) => {
                let n = read?;
                if n == 0 {
                    return Ok(());
                }
                session.feed(&buf[..n], Instant::now());
            }
            _ = sleep_until(deadline) => session.timeout(Instant::now()),
            _ = stopped(&mut stopping) => {
                let _ = conn.write_all(b"-ERR [SYS/TEMP] Server shutting down; nothing was deleted\r\n").await;
                let _ = conn.shutdown().await;
                return Ok(());
            }
        }
    }
}

async fn answer(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    request: Request,
    state: &mut Maildrop,
) -> Response {
    match request {
        Request::Authenticate(credentials) => authenticate(shared, peer, credentials, state).await,
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

async fn authenticate(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    credentials: Credentials,
    state: &mut Maildrop,
) -> Response {
    let Credentials {
        authzid,
        username,
        proof,
    } = credentials;
    if authzid
        .as_deref()
        .is_some_and(|z| !z.eq_ignore_ascii_case(&username))
    {
        tracing::info!(%peer, user = %username, reason = "asked to act as another identity", "pop3 login refused");
        return refuse(shared, peer).await;
    }
    let backend = Arc::clone(&shared.backend);
    let user = username.clone();
    let outcome = tokio::task::spawn_blocking(move || match &proof {
        Proof::Password(password) => backend.login(&user, password),
        // SPEC §10: APOP and CRAM-MD5 against the mail secret.
        Proof::Apop { .. } | Proof::CramMd5 { .. } => backend.digest_login(&user, &proof),
    })
    .await;
    match outcome {
        Ok(Ok(LoginOutcome::Accepted(mailbox))) => {
            shared.throttle.succeeded(peer.ip());
            let key = mailbox.id.to_string();
            state.mailbox = Some(mailbox);
            Response::Ok { mailbox: key }
        }
        Ok(Ok(LoginOutcome::Locked { mailbox, rule })) => {
            tracing::info!(%peer, user = %mailbox.address, reason = "locked by the administrator", rule, "pop3 login refused");
            Response::Locked
        }
        Ok(Ok(LoginOutcome::Refused(reason))) => {
            tracing::info!(%peer, user = %username, reason = reason.describe(), "pop3 login refused");
            refuse(shared, peer).await
        }
        Ok(Err(e)) => {
            tracing::error!(%peer, "login check failed: {e}");
            Response::TempFail
        }
        Err(e) => {
            tracing::error!(%peer, "login check panicked: {e}");
            Response::TempFail
        }
    }
}

async fn refuse(shared: &Arc<Shared>, peer: SocketAddr) -> Response {
    let delay = shared.throttle.failed(peer.ip(), Instant::now());
    tokio::time::sleep(delay).await;
    Response::BadCredentials
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
        let dir = backend.maildir_of(&mailbox)?;
        maildir::list_inbox(&dir).map_err(|e| e.to_string())
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
