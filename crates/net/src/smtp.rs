//! SMTP's side of the [`driver`](super::driver): the session's settings, and the answers to
//! its requests (logins, recipients, deliveries) from the [`Backend`](super::backend::Backend).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::backend::{DeliveryOutcome, RecipientVerdict};
use super::driver::{self, Accepted, Handler};
use super::login::{LoginAnswer, log_in, plaintext_allowed_before_tls, unique_challenge};
use super::shared::{Service, Shared};
use dirmail_directory::login::Service as LoginService;
use dirmail_proto::smtp::address::RcptAddress;
use dirmail_proto::smtp::session::{
    Config as SessionConfig, Delivery, Listener, Request, Response, Session, Target,
};
use dirmail_store::MailboxRow;

fn session_config(shared: &Shared, service: Service, peer: SocketAddr) -> SessionConfig {
    let c = &shared.config;
    let mut config = SessionConfig::new(c.server.hostname.clone());
    config.listener = match service {
        Service::Submission => Listener::Submission,
        Service::Smtps => Listener::ImplicitTls,
        _ => Listener::Relay,
    };
    config.max_message_size = c.smtp.max_message_size;
    config.plaintext_auth_without_tls = plaintext_allowed_before_tls(c.tls.plaintext_auth, peer);
    config.relay_allow = c.smtp.relay_networks.clone();
    config.require_own_sender = c.smtp.require_own_sender;
    config.command_timeout = c.limits.smtp_command_timeout;
    config.data_timeout = c.limits.smtp_data_timeout;
    config
}

/// Serves one SMTP connection until the client quits, the session closes it, or the server
/// stops (then idle sessions get `421`; a delivery under way finishes first).
pub async fn serve(
    service: Service,
    accepted: Accepted,
    peer: SocketAddr,
    shared: Arc<Shared>,
) -> std::io::Result<()> {
    let conn = driver::connect(service, accepted, &shared).await?;
    let mut config = session_config(&shared, service, peer);
    let backend = Arc::clone(&shared.backend);
    config.offer_cram_md5 = tokio::task::spawn_blocking(move || backend.any_mail_secrets())
        .await
        .unwrap_or(false);
    config.cram_challenge = unique_challenge(&shared.config.server.hostname);
    let session = Session::new(config, peer.ip(), conn.is_tls(), Instant::now());
    let mut handler = Smtp {
        shared: Arc::clone(&shared),
        peer,
        locals: HashMap::new(),
    };
    driver::run(conn, session, &mut handler, &shared, peer).await
}

/// What SMTP keeps beside the core.
struct Smtp {
    shared: Arc<Shared>,
    peer: SocketAddr,
    /// Accepted local recipients of the current transaction, by the key the core carries.
    locals: HashMap<String, (MailboxRow, PathBuf)>,
}

impl Handler<Session> for Smtp {
    async fn answer(&mut self, request: Request) -> Response {
        let (shared, peer) = (&self.shared, self.peer);
        match request {
            Request::Authenticate(credentials) => {
                match log_in(shared, peer, LoginService::Smtp, credentials).await {
                    LoginAnswer::Accepted(mailbox) => {
                        tracing::info!(%peer, user = %mailbox.address, "smtp login");
                        Response::AuthOk {
                            identity: mailbox.address.to_string(),
                            own_addresses: shared.backend.own_addresses(&mailbox),
                        }
                    }
                    // `Locked` never comes: R13 lets a locked mailbox send, and the login
                    // decision knows SMTP asks to send.
                    LoginAnswer::Locked | LoginAnswer::Unavailable => Response::TempFail,
                    LoginAnswer::BadCredentials => Response::BadCredentials,
                }
            }
            Request::CheckRecipient(address) => {
                check_recipient(shared, peer, address, &mut self.locals).await
            }
            Request::Deliver(delivery) => deliver(shared, peer, delivery, &mut self.locals).await,
        }
    }
}

async fn check_recipient(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    address: RcptAddress,
    locals: &mut HashMap<String, (MailboxRow, PathBuf)>,
) -> Response {
    let (local_part, domain) = match &address {
        RcptAddress::Postmaster => ("postmaster".to_owned(), None),
        RcptAddress::Mailbox { local_part, domain } => (local_part.clone(), Some(domain.clone())),
    };
    let backend = Arc::clone(&shared.backend);
    let verdict = tokio::task::spawn_blocking(move || {
        backend.check_recipient(&local_part, domain.as_deref())
    })
    .await;
    match verdict {
        Ok(Ok(RecipientVerdict::Local {
            mailbox,
            maildir,
            quota_left,
        })) => {
            let key = mailbox.id.to_string();
            locals.insert(key.clone(), (mailbox, maildir));
            Response::Local {
                mailbox: key,
                quota_left,
            }
        }
        Ok(Ok(RecipientVerdict::LocalUnknown)) => Response::LocalUnknown,
        Ok(Ok(RecipientVerdict::NotLocal)) => Response::NotLocal,
        Ok(Err(e)) => {
            tracing::error!(%peer, "recipient lookup failed: {e}");
            Response::TempFail
        }
        Err(e) => {
            tracing::error!(%peer, "recipient lookup panicked: {e}");
            Response::TempFail
        }
    }
}

async fn deliver(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    delivery: Delivery,
    locals: &mut HashMap<String, (MailboxRow, PathBuf)>,
) -> Response {
    let mut targets: Vec<(MailboxRow, PathBuf)> = Vec::new();
    for recipient in &delivery.recipients {
        match &recipient.target {
            Target::Local { mailbox } => {
                // One copy per mailbox, however many of its addresses were named.
                if targets.iter().any(|(m, _)| m.id.to_string() == *mailbox) {
                    continue;
                }
                match locals.get(mailbox) {
                    Some(found) => targets.push(found.clone()),
                    None => return Response::TempFail,
                }
            }
            Target::Relay => {
                // Outbound delivery (SPEC §11) is not built yet: say so with a temporary
                // failure, so the client keeps the message instead of it being lost here.
                tracing::warn!(%peer, to = %recipient.address, "relay accepted but outbound delivery is not available");
                locals.clear();
                return Response::TempFail;
            }
        }
    }
    locals.clear();
    let message = delivery.message_with_trace(&rfc5322_date(std::time::SystemTime::now()));
    let backend = Arc::clone(&shared.backend);
    let size = message.len();
    let outcome = tokio::task::spawn_blocking(move || backend.deliver(&targets, &message)).await;
    match outcome {
        Ok(DeliveryOutcome::Delivered) => {
            tracing::info!(%peer, from = %delivery.envelope_from, recipients = delivery.recipients.len(), size, "delivered");
            Response::Delivered
        }
        Ok(DeliveryOutcome::QuotaExceeded(who)) => {
            tracing::info!(%peer, mailbox = %who, size, "refused: over quota (R15)");
            Response::QuotaExceeded
        }
        Ok(DeliveryOutcome::DiskFull) => {
            tracing::error!(%peer, "delivery failed: the disk is full");
            Response::DiskFull
        }
        Ok(DeliveryOutcome::Failed(e)) => {
            tracing::error!(%peer, "delivery failed: {e}");
            Response::TempFail
        }
        Err(e) => {
            tracing::error!(%peer, "delivery panicked: {e}");
            Response::TempFail
        }
    }
}

/// An RFC 5322 date in UTC, e.g. `Sun, 22 Nov 2026 06:16:22 +0000`.
pub fn rfc5322_date(at: std::time::SystemTime) -> String {
    let secs = at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let weekday = WEEKDAYS[days.rem_euclid(7) as usize];
    let month_name = MONTHS[(month - 1) as usize];
    format!(
        "{weekday}, {day} {month_name} {year} {:02}:{:02}:{:02} +0000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_328_182);
        assert_eq!(rfc5322_date(at), "Sun, 22 Nov 2026 06:16:22 +0000");
        assert_eq!(
            rfc5322_date(std::time::UNIX_EPOCH),
            "Thu, 1 Jan 1970 00:00:00 +0000"
        );
        let leap = std::time::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(rfc5322_date(leap), "Tue, 29 Feb 2000 00:00:00 +0000");
    }
}
