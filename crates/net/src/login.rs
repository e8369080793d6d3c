//! What the drivers share about logins: running the one login decision
//! ([`dirmail_directory::login::decide`]) off the async threads, logging its outcome with the
//! R27 reason (never the password), and slowing down a peer that keeps failing (the
//! [`Throttle`](super::throttle::Throttle)). Also the two session settings every protocol's
//! login needs: whether clear text may cross before TLS, and a unique challenge.

use std::net::SocketAddr;
use std::time::Instant;

use dirmail_config::PlaintextAuth;
use dirmail_directory::login::{LoginError, Service};
use dirmail_proto::auth::Credentials;
use dirmail_store::MailboxRow;

use super::shared::Shared;

/// A login as a driver answers it; each protocol says these in its own words.
#[derive(Debug)]
pub enum LoginAnswer {
    Accepted(MailboxRow),
    /// R13/R14: right credentials, retrieval locked (never for sending).
    Locked,
    /// Refused; the throttle's delay has already been waited.
    BadCredentials,
    /// The directory or the store cannot answer now (R24): a temporary failure.
    Unavailable,
}

/// Decides a login for `service` and logs how it went.
pub async fn log_in(
    shared: &Shared,
    peer: SocketAddr,
    service: Service,
    credentials: Credentials,
) -> LoginAnswer {
    let protocol = protocol_name(service);
    let user = credentials.username.clone();
    let backend = std::sync::Arc::clone(&shared.backend);
    let decided = tokio::task::spawn_blocking(move || backend.log_in(service, &credentials)).await;
    match decided {
        Ok(Ok(mailbox)) => {
            shared.throttle.succeeded(peer.ip());
            LoginAnswer::Accepted(mailbox)
        }
        Ok(Err(LoginError::Locked { mailbox, rule })) => {
            tracing::info!(%peer, user = %mailbox.address, reason = "locked by the administrator", rule, "{protocol} login refused");
            LoginAnswer::Locked
        }
        Ok(Err(LoginError::Refused(reason))) => {
            tracing::info!(%peer, %user, reason = reason.describe(), "{protocol} login refused");
            let delay = shared.throttle.failed(peer.ip(), Instant::now());
            tokio::time::sleep(delay).await;
            LoginAnswer::BadCredentials
        }
        Ok(Err(LoginError::Unavailable(e) | LoginError::Failed(e))) => {
            tracing::error!(%peer, "login check failed: {e}");
            LoginAnswer::Unavailable
        }
        Err(e) => {
            tracing::error!(%peer, "login check panicked: {e}");
            LoginAnswer::Unavailable
        }
    }
}

/// The protocol's name in the log.
fn protocol_name(service: Service) -> &'static str {
    match service {
        Service::Smtp => "smtp",
        Service::Pop3 => "pop3",
        Service::Imap => "imap",
        Service::Admin => "admin",
    }
}

/// May a clear-text password cross this connection before TLS?
pub fn plaintext_allowed_before_tls(policy: PlaintextAuth, peer: SocketAddr) -> bool {
    match policy {
        PlaintextAuth::Tls => false,
        PlaintextAuth::Loopback => peer.ip().to_canonical().is_loopback(),
        PlaintextAuth::Always => true,
    }
}

/// A challenge no other session gets (RFC 2195, and APOP's timestamp, RFC 1939 §7):
/// `<pid.random.time@hostname>`.
pub fn unique_challenge(hostname: &str) -> String {
    use argon2::password_hash::rand_core::{OsRng, RngCore};
    format!(
        "<{}.{}.{}@{hostname}>",
        std::process::id(),
        OsRng.next_u64(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    )
}
