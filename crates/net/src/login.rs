//! What the drivers share about logins: running the one login decision
//! ([`dirmail_directory::login::decide`]) off the async threads, logging its outcome with the
//! R27 reason (never the password), and slowing down addresses and accounts that keep failing
//! (the [`Throttle`](super::throttle::Throttle), whose wait comes before the check). Also the
//! two session settings every protocol's login needs: whether clear text may cross before TLS,
//! and a unique challenge.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dirmail_config::PlaintextAuth;
use dirmail_directory::login::{LoginError, Service};
use dirmail_proto::auth::Credentials;
use dirmail_store::MailboxRow;

use super::metrics::LoginOutcome;
use super::sessions::Registration;
use super::shared::{Shared, stopped};

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

/// Decides a login for `service` and logs how it went. Every protocol's login comes here, so
/// the throttle sees them all: the attempt first waits its turn (its address's and, if that
/// address has failed, its account's), then the password is checked; a refusal is logged with
/// that turn (`queued_ms`) and is answered after its address's delay (`delay_ms`). The outcome
/// is counted for the metrics page, and a session that logged in is listed with its user.
pub async fn log_in(
    shared: &Shared,
    peer: SocketAddr,
    session: &Registration,
    service: Service,
    credentials: Credentials,
) -> LoginAnswer {
    let protocol = protocol_name(service);
    let user = credentials.username.clone();
    let mut stopping = shared.stopping.clone();
    // A throttled attempt may wait long for its turn; a stopping server does not wait for it
    // (and dropping the attempt gives its turn back).
    let turn = async {
        let attempt = shared.throttle.admit(peer.ip(), &user).await;
        tokio::time::sleep_until(attempt.start().into()).await;
        attempt
    };
    let attempt = tokio::select! {
        attempt = turn => attempt,
        () = stopped(&mut stopping) => return LoginAnswer::Unavailable,
    };
    let queued_ms = millis(attempt.queued());
    let backend = std::sync::Arc::clone(&shared.backend);
    let deciding = Instant::now();
    let decided = tokio::task::spawn_blocking(move || backend.log_in(service, &credentials)).await;
    let outcome = match &decided {
        Ok(Ok(_)) => LoginOutcome::Accepted,
        Ok(Err(LoginError::Locked { .. })) => LoginOutcome::Locked,
        Ok(Err(LoginError::Refused(reason))) => LoginOutcome::Refused(reason.label()),
        Ok(Err(LoginError::Unavailable(_) | LoginError::Failed(_))) | Err(_) => {
            LoginOutcome::Unavailable
        }
    };
    shared.metrics.login(protocol, outcome, deciding.elapsed());
    match decided {
        Ok(Ok(mailbox)) => {
            attempt.succeeded();
            session.logged_in(&mailbox.address.to_string());
            LoginAnswer::Accepted(mailbox)
        }
        Ok(Err(LoginError::Locked { mailbox, rule })) => {
            // The credentials were right: not a failure for the throttle.
            attempt.succeeded();
            tracing::info!(%peer, user = %mailbox.address, reason = "locked by the administrator", rule, "{protocol} login refused");
            LoginAnswer::Locked
        }
        Ok(Err(LoginError::Refused(reason))) => {
            let delay = attempt.failed(Instant::now());
            let delay_ms = millis(delay);
            tracing::info!(%peer, %user, reason = reason.describe(), queued_ms, delay_ms, "{protocol} login refused");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stopped(&mut stopping) => {}
            }
            LoginAnswer::BadCredentials
        }
        // Neither a success nor a failure: dropping the attempt gives its turn back.
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

/// A duration in whole milliseconds, for the log.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
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
