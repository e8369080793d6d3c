//! SMTP's side of the [`driver`](super::driver): the session's settings, and the answers to
//! its requests (logins, recipients, deliveries) from the [`Backend`](super::backend::Backend).
//! A message in DATA goes to a spool file piece by piece as it arrives (the core hands over at
//! most [`PIECE`](dirmail_proto::smtp::data::PIECE) octets at a time), written off the async
//! threads; the file goes with the handler, so a dropped connection leaves nothing behind.
//!
//! Each accepted message is logged once (`accepted`) and each of its recipients once
//! (`recipient`), every line with the message's id (`msg_id`: the queue id when any
//! recipient went to the outbound queue, else the spool file's unique name), its
//! `message_id` (the Message-ID header, `-` without one), the sender, the size and the reply
//! given, so `grep '<message-id>'` finds a message's whole life, the queue runner's lines too.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::backend::{Backend, DeliveryOutcome, Destinations, RecipientVerdict, is_disk_full};
use super::driver::{self, Accepted, Handler};
use super::login::{LoginAnswer, log_in, plaintext_allowed_before_tls, unique_challenge};
use super::sessions::Registration;
use super::shared::{Service, Shared};
use dirmail_directory::login::Service as LoginService;
use dirmail_proto::smtp::address::RcptAddress;
use dirmail_proto::smtp::header::{HEAD_SCAN, message_id};
use dirmail_proto::smtp::reply::Reply;
use dirmail_proto::smtp::session::delivery_reply;
use dirmail_proto::smtp::session::{
    Config as SessionConfig, Delivery, Listener, ReceivedHeader, Request, Response, Session, Target,
};
use dirmail_store::MailboxRow;
use dirmail_store::queue::Entry;
use dirmail_store::spool::SpoolFile;

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
    registration: Registration,
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
        session: registration,
        locals: HashMap::new(),
        spool: None,
        identity: None,
        incoming: None,
    };
    driver::run(conn, session, &mut handler, &shared, peer).await
}

/// What SMTP keeps beside the core.
struct Smtp {
    shared: Arc<Shared>,
    peer: SocketAddr,
    /// This session's place in the list `dirmail status` shows.
    session: Registration,
    /// Accepted local recipients of the current transaction, by the key the core carries: a
    /// mailbox's id, or `alias:` and the address for what an alias expands to (R28).
    locals: HashMap<String, Destinations>,
    /// The message coming in (DATA), removed when dropped.
    spool: Option<SpoolFile>,
    /// Who logged in (the core forgets a login at STARTTLS; `Incoming` asks it).
    identity: Option<String>,
    /// What the log says of the message coming in.
    incoming: Option<Incoming>,
}

/// The facts of the message coming in that its log lines carry.
struct Incoming {
    tls: bool,
    /// The logged-in user, if the session is logged in now.
    auth: Option<String>,
    /// Its first octets, where the Message-ID is looked for (at most `HEAD_SCAN`).
    head: Vec<u8>,
}

impl Incoming {
    fn keep_head(&mut self, piece: &[u8]) {
        let room = HEAD_SCAN.saturating_sub(self.head.len());
        self.head
            .extend_from_slice(piece.get(..room.min(piece.len())).unwrap_or_default());
    }
}

impl Handler<Session> for Smtp {
    async fn answer(&mut self, request: Request) -> Response {
        let (shared, peer) = (&self.shared, self.peer);
        match request {
            Request::Authenticate(credentials) => {
                match log_in(shared, peer, &self.session, LoginService::Smtp, credentials).await {
                    LoginAnswer::Accepted(mailbox) => {
                        tracing::info!(%peer, user = %mailbox.address, "smtp login");
                        self.identity = Some(mailbox.address.to_string());
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
            Request::OpenMessage(received) => {
                // One message at a time: anything earlier is dropped (and so removed) first.
                self.spool = None;
                // `ESMTPA`/`ESMTPSA`: the session is logged in now (RFC 3848).
                let logged_in = received.protocol.ends_with('A');
                self.incoming = Some(Incoming {
                    tls: received.tls,
                    auth: self.identity.clone().filter(|_| logged_in),
                    head: Vec::new(),
                });
                match open_spool(shared, peer, received).await {
                    Ok(spool) => {
                        self.spool = Some(spool);
                        Response::Opened
                    }
                    Err(response) => response,
                }
            }
            Request::AppendMessage(piece) => {
                if let Some(incoming) = &mut self.incoming {
                    incoming.keep_head(&piece);
                }
                append(peer, &mut self.spool, piece).await
            }
            Request::DiscardMessage => {
                if let Some(spool) = self.spool.take() {
                    // Removing a large file frees its blocks: off the async threads.
                    let _ = tokio::task::spawn_blocking(move || drop(spool)).await;
                }
                Response::Discarded
            }
            Request::Deliver(delivery) => {
                let spool = self.spool.take();
                let mut incoming = self.incoming.take().unwrap_or(Incoming {
                    tls: false,
                    auth: None,
                    head: Vec::new(),
                });
                incoming.keep_head(&delivery.tail);
                deliver(shared, peer, delivery, spool, &mut self.locals, incoming).await
            }
        }
    }
}

async fn check_recipient(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    address: RcptAddress,
    locals: &mut HashMap<String, Destinations>,
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
        Ok(Ok(RecipientVerdict::Local(destinations))) => {
            let quota_left = destinations.quota_left();
            let key = match destinations.mailboxes.as_slice() {
                [one] if !destinations.through_alias => one.mailbox.id.to_string(),
                _ => {
                    let written = address.as_written();
                    let mailboxes: Vec<String> = destinations
                        .mailboxes
                        .iter()
                        .map(|t| t.mailbox.address.to_string())
                        .collect();
                    tracing::info!(%peer, address = %written, ?mailboxes, outside = ?destinations.outside, "alias expanded (R28)");
                    if !destinations.dangling.is_empty() {
                        tracing::warn!(%peer, address = %written, skipped = ?destinations.dangling, "alias targets that receive no mail were skipped");
                    }
                    format!("alias:{}", written.to_lowercase())
                }
            };
            locals.insert(key.clone(), destinations);
            Response::Local {
                mailbox: key,
                quota_left,
            }
        }
        Ok(Ok(RecipientVerdict::AliasLoop(why))) => {
            tracing::warn!(%peer, address = %address.as_written(), "refused: {why} (R28)");
            let reply = Reply::alias_loop().to_string();
            tracing::info!(%peer, recipient = %address.as_written(), outcome = "refused", reply = reply.trim_end(), "recipient");
            shared.metrics.recipient_refused("alias_loop");
            Response::AliasLoop
        }
        Ok(Ok(RecipientVerdict::LocalUnknown)) => {
            let reply = Reply::no_such_mailbox().to_string();
            tracing::info!(%peer, recipient = %address.as_written(), outcome = "refused", reply = reply.trim_end(), "recipient");
            shared.metrics.recipient_refused("unknown");
            Response::LocalUnknown
        }
        Ok(Ok(RecipientVerdict::NotLocal)) => Response::NotLocal,
        Ok(Err(e)) => {
            tracing::error!(%peer, "recipient lookup failed: {e}");
            shared.metrics.recipient_refused("lookup_failed");
            Response::TempFail
        }
        Err(e) => {
            tracing::error!(%peer, "recipient lookup panicked: {e}");
            shared.metrics.recipient_refused("lookup_failed");
            Response::TempFail
        }
    }
}

/// Makes the spool file and writes the trace header, dated now (the start of DATA).
async fn open_spool(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    received: ReceivedHeader,
) -> Result<SpoolFile, Response> {
    let header = received.render(&rfc5322_date(std::time::SystemTime::now()));
    let backend = Arc::clone(&shared.backend);
    match tokio::task::spawn_blocking(move || backend.open_spool(header.as_bytes())).await {
        Ok(Ok(spool)) => Ok(spool),
        Ok(Err(e)) => Err(spool_failure(peer, &e)),
        Err(e) => {
            tracing::error!(%peer, "opening the spool panicked: {e}");
            Err(Response::TempFail)
        }
    }
}

/// Appends one piece of the message to the spool file, off the async threads.
async fn append(peer: SocketAddr, slot: &mut Option<SpoolFile>, piece: Vec<u8>) -> Response {
    let Some(mut spool) = slot.take() else {
        tracing::error!(%peer, "a piece of DATA without a spool file");
        return Response::TempFail;
    };
    let written = tokio::task::spawn_blocking(move || {
        let result = spool.append(&piece);
        (spool, result)
    })
    .await;
    match written {
        Ok((spool, result)) => {
            // Kept after a failure too, so the core's DiscardMessage (or the drop) removes it.
            *slot = Some(spool);
            match result {
                Ok(()) => Response::Appended,
                Err(e) => spool_failure(peer, &e),
            }
        }
        Err(e) => {
            tracing::error!(%peer, "writing to the spool panicked: {e}");
            Response::TempFail
        }
    }
}

fn spool_failure(peer: SocketAddr, e: &std::io::Error) -> Response {
    if is_disk_full(e) {
        tracing::error!(%peer, "cannot spool the message: the disk is full");
        Response::DiskFull
    } else {
        tracing::error!(%peer, "cannot spool the message: {e}");
        Response::TempFail
    }
}

/// The end of DATA: the remote recipients queued first (fsynced), then the local ones
/// delivered; if the local delivery fails, the queue entry is removed again, so the client's
/// retry duplicates nothing. One message, one answer.
fn accept(
    backend: &Backend,
    spool: &mut SpoolFile,
    tail: &[u8],
    envelope_from: &str,
    targets: &[(MailboxRow, PathBuf)],
    remote: &[String],
) -> (DeliveryOutcome, Option<Entry>) {
    let failed = |e: std::io::Error| {
        if is_disk_full(&e) {
            DeliveryOutcome::DiskFull
        } else {
            DeliveryOutcome::Failed(e.to_string())
        }
    };
    if let Err(e) = spool.append(tail) {
        return (failed(e), None);
    }
    let queued = if remote.is_empty() {
        None
    } else {
        match backend.enqueue(spool, envelope_from, remote) {
            Ok(entry) => Some(entry),
            Err(e) => return (failed(e), None),
        }
    };
    if !targets.is_empty() {
        let outcome = backend.deliver(targets, spool);
        if outcome != DeliveryOutcome::Delivered {
            if let Some(entry) = &queued
                && let Err(e) = backend.queue.remove(&entry.id)
            {
                tracing::error!(queue_id = %entry.id, "cannot take back the queue entry: {e}");
            }
            return (outcome, None);
        }
    }
    (DeliveryOutcome::Delivered, queued)
}

/// One accepted recipient as the log tells it: what it expanded to.
struct Outcome {
    address: String,
    /// The local mailboxes it was delivered to (an alias's, expanded).
    mailboxes: Vec<String>,
    /// The outside addresses queued for it: itself when relayed, or an alias's targets.
    queued: Vec<String>,
}

impl Outcome {
    fn word(&self) -> &'static str {
        match (self.mailboxes.is_empty(), self.queued.is_empty()) {
            (false, true) => "delivered",
            (true, false) => "queued",
            _ => "delivered+queued",
        }
    }
}

fn listed(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(", ")
    }
}

async fn deliver(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    delivery: Delivery,
    spool: Option<SpoolFile>,
    locals: &mut HashMap<String, Destinations>,
    incoming: Incoming,
) -> Response {
    let Some(mut spool) = spool else {
        tracing::error!(%peer, "the end of DATA without a spool file");
        locals.clear();
        return Response::TempFail;
    };
    let mut targets: Vec<(MailboxRow, PathBuf)> = Vec::new();
    let mut remote: Vec<String> = Vec::new();
    let mut outcomes: Vec<Outcome> = Vec::new();
    for recipient in &delivery.recipients {
        let mut outcome = Outcome {
            address: recipient.address.clone(),
            mailboxes: Vec::new(),
            queued: Vec::new(),
        };
        match &recipient.target {
            Target::Local { mailbox } => {
                let Some(found) = locals.get(mailbox) else {
                    return Response::TempFail;
                };
                // One copy per mailbox, however many of its addresses (and aliases) were named.
                for target in &found.mailboxes {
                    outcome.mailboxes.push(target.mailbox.address.to_string());
                    if !targets.iter().any(|(m, _)| m.id == target.mailbox.id) {
                        targets.push((target.mailbox.clone(), target.maildir.clone()));
                    }
                }
                // An alias's outside targets: through the outbound queue, like a relay.
                for outside in &found.outside {
                    outcome.queued.push(outside.clone());
                    if !remote.iter().any(|r| r.eq_ignore_ascii_case(outside)) {
                        remote.push(outside.clone());
                    }
                }
            }
            // R16 let the client relay: the outbound queue takes it.
            Target::Relay => {
                outcome.queued.push(recipient.address.clone());
                if !remote
                    .iter()
                    .any(|r| r.eq_ignore_ascii_case(&recipient.address))
                {
                    remote.push(recipient.address.clone());
                }
            }
        }
        outcomes.push(outcome);
    }
    locals.clear();
    let local_copies = targets.len();
    let backend = Arc::clone(&shared.backend);
    let Delivery {
        envelope_from,
        recipients: _,
        tail,
    } = delivery;
    let spool_name = spool
        .path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let from = envelope_from.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let outcome = accept(&backend, &mut spool, &tail, &from, &targets, &remote);
        // Delivered or not, the spool file has served: dropping it removes it (the queue and
        // the Maildirs hold their own links).
        (outcome, spool.size())
    })
    .await;
    let message_id = message_id(&incoming.head).unwrap_or_else(|| "-".to_owned());
    let from = if envelope_from.is_empty() {
        "<>"
    } else {
        envelope_from.as_str()
    };
    let (outcome, size, queued) = match outcome {
        Ok(((outcome, queued), size)) => (Ok(outcome), size, queued),
        Err(e) => (Err(e), 0, None),
    };
    let response = match &outcome {
        Ok(DeliveryOutcome::Delivered) => {
            shared.metrics.message_received(size);
            shared.metrics.delivered_locally(local_copies);
            Response::Delivered
        }
        Ok(DeliveryOutcome::QuotaExceeded(who)) => {
            tracing::info!(%peer, mailbox = %who, size, "refused: over quota (R15)");
            shared.metrics.message_refused("over_quota");
            Response::QuotaExceeded
        }
        Ok(DeliveryOutcome::DiskFull) => {
            tracing::error!(%peer, "delivery failed: the disk is full");
            shared.metrics.message_refused("disk_full");
            Response::DiskFull
        }
        Ok(DeliveryOutcome::Failed(e)) => {
            tracing::error!(%peer, "delivery failed: {e}");
            shared.metrics.message_refused("failed");
            Response::TempFail
        }
        Err(e) => {
            tracing::error!(%peer, "delivery panicked: {e}");
            shared.metrics.message_refused("failed");
            Response::TempFail
        }
    };
    let reply = delivery_reply(&response).to_string();
    let reply = reply.trim_end();
    let queue_id = queued.as_ref().map_or("-", |entry| entry.id.as_str());
    let msg_id = queued
        .as_ref()
        .map_or(spool_name.as_str(), |entry| entry.id.as_str());
    let auth = incoming.auth.as_deref().unwrap_or("-");
    let tls = if incoming.tls { "yes" } else { "no" };
    let everyone: Vec<String> = outcomes.iter().map(|o| o.address.clone()).collect();
    if response == Response::Delivered {
        tracing::info!(
            msg_id,
            %peer,
            from,
            message_id = %message_id,
            size,
            tls,
            auth,
            recipients = %listed(&everyone),
            count = outcomes.len(),
            reply,
            "accepted"
        );
    }
    for outcome in &outcomes {
        let word = if response == Response::Delivered {
            outcome.word()
        } else {
            "refused"
        };
        tracing::info!(
            msg_id,
            %peer,
            from,
            message_id = %message_id,
            size,
            recipient = %outcome.address,
            mailbox = %listed(&outcome.mailboxes),
            queued_for = %listed(&outcome.queued),
            queue_id,
            outcome = word,
            reply,
            "recipient"
        );
    }
    if let Some(entry) = &queued {
        shared.outbound.queued(entry);
        shared.metrics.queued();
    }
    response
}

/// Dates in trace headers and notifications are written one way (the outbound floor's).
pub use dirmail_outbound::rfc5322_date;
