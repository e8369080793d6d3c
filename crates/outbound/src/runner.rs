//! The queue runner inside `serve`: delivers what the outbound queue holds, retries on the
//! `[queue] retry` schedule, gives up after `max_age`, sends the notifications (RFC 3464) and
//! removes finished entries (docs/spec.md §11.3).
//!
//! In memory it keeps only each entry's id and next due time; an entry is loaded from its
//! envelope file when it is worked on, and saved (replaced whole, fsynced) after each attempt.
//! At most [`MAX_ENTRIES_AT_ONCE`] entries are worked on at once, with at most
//! [`MAX_CONNECTIONS`] connections in all and [`MAX_PER_DESTINATION`] to one domain.
//!
//! A notification is queued like any message, with the null reverse-path, before the entry it
//! reports on is removed; its recipient is usually local, and every recipient is first offered
//! to the server's own mailboxes ([`Mailboxes`], which the network floor implements with its
//! backend, so this floor does not reach up).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use dirmail_config::{Config, OutboundTls};
use dirmail_proto::smtp::client::{Disposition, Login, TlsPolicy};
use dirmail_proto::smtp::dsn::{self, Action, MAX_ORIGINAL_HEADERS, Notice};
use dirmail_store::queue::{Entry, Queue, QueueError, RecipientState};
use dirmail_store::spool::SpoolFile;

use crate::counts::AttemptResult;
use crate::deliver::{self, Attempt, Message, Settings};
use crate::dns::Router;
use crate::tls::TlsSetup;

/// Entries worked on at once.
pub const MAX_ENTRIES_AT_ONCE: usize = 32;
/// Outbound connections open at once, in all.
pub const MAX_CONNECTIONS: usize = 20;
/// Outbound connections open at once to one destination domain.
pub const MAX_PER_DESTINATION: usize = 4;
/// The queue directory is read again this often, to see what another process changed (the
/// `dirmail queue` commands).
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(60);
/// How often the runner looks whether the administration tool nudged it (`Queue::nudge`): one
/// `stat` of one file, so a `queue retry` takes effect within this.
pub const NUDGE_CHECK: Duration = Duration::from_secs(1);

/// The server's own mailboxes, as the runner needs them. Blocking: called off the async threads.
pub trait Mailboxes: Send + Sync + 'static {
    /// Delivers the message at `message` to `address` when it is a local address; an alias's
    /// outside targets are queued again with `reverse_path` (empty: the null sender).
    fn deliver_local(&self, address: &str, reverse_path: &str, message: &Path) -> LocalDelivery;
}

/// What [`Mailboxes::deliver_local`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalDelivery {
    /// Not a local domain: deliver over SMTP.
    NotLocal,
    Delivered,
    /// A permanent refusal, as a reply (`550 5.1.1 …`).
    Refused(String),
    /// A temporary failure, as a reply (`452 4.2.2 …`); tried again later.
    Failed(String),
}

/// Tells the runner that an entry was queued, so it need not wait for its next scan.
#[derive(Debug, Clone)]
pub struct QueueHandle {
    tx: mpsc::UnboundedSender<(String, i64)>,
}

impl QueueHandle {
    pub fn queued(&self, entry: &Entry) {
        if let Some(due) = entry.next_due() {
            let _ = self.tx.send((entry.id.clone(), due));
        }
    }
}

struct Context {
    queue: Queue,
    mailroot: PathBuf,
    /// Where the DKIM keys are (`dirmail_store::dkim_keys`).
    data_dir: PathBuf,
    hostname: String,
    retry: Vec<Duration>,
    max_age: Duration,
    delay_notice: Option<Duration>,
    router: Option<Router>,
    settings: Settings,
    mailboxes: Arc<dyn Mailboxes>,
    connections: Arc<Semaphore>,
    destinations: Mutex<HashMap<String, Arc<Semaphore>>>,
    handle: QueueHandle,
}

/// Starts the runner; it stops when `stopping` becomes true. Must be called inside a tokio
/// runtime. A resolver that cannot be set up is logged, and deliveries wait (temporary
/// failures) rather than the server refusing to start.
pub fn start(
    config: &Config,
    queue: Queue,
    mailboxes: Arc<dyn Mailboxes>,
    stopping: watch::Receiver<bool>,
) -> Result<(QueueHandle, tokio::task::JoinHandle<()>), String> {
    let router = match Router::new(&config.outbound) {
        Ok(router) => Some(router),
        Err(e) => {
            tracing::error!("outbound mail cannot be sent until this is fixed: {e}");
            None
        }
    };
    let policy = match config.outbound.tls {
        OutboundTls::Opportunistic => TlsPolicy::Opportunistic,
        OutboundTls::Required => TlsPolicy::Required,
    };
    let tls_setup = TlsSetup::new(policy == TlsPolicy::Opportunistic)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = QueueHandle { tx };
    let context = Arc::new(Context {
        queue,
        mailroot: config.store.mailroot.clone(),
        data_dir: config.store.data_dir.clone(),
        hostname: config.server.hostname.clone(),
        retry: config.queue.retry.clone(),
        max_age: config.queue.max_age,
        delay_notice: config.queue.delay_notice,
        router,
        settings: Settings {
            hostname: config.server.hostname.clone(),
            tls: policy,
            tls_setup,
            login: match (&config.outbound.relay_user, &config.outbound.relay_password) {
                (Some(user), Some(password)) => Some(Login {
                    user: user.clone(),
                    password: password.clone(),
                }),
                _ => None,
            },
        },
        mailboxes,
        connections: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        destinations: Mutex::new(HashMap::new()),
        handle: handle.clone(),
    });
    let task = tokio::spawn(run(context, rx, stopping));
    Ok((handle, task))
}

/// Seconds since the epoch.
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// When each entry is due, and what is being worked on.
#[derive(Default)]
struct Schedule {
    due: BTreeSet<(i64, String)>,
    by_id: HashMap<String, i64>,
    working: HashSet<String>,
}

impl Schedule {
    fn set(&mut self, id: String, at: i64) {
        if self.working.contains(&id) {
            return;
        }
        if let Some(old) = self.by_id.insert(id.clone(), at) {
            self.due.remove(&(old, id.clone()));
        }
        self.due.insert((at, id));
    }

    fn take_due(&mut self, now: i64) -> Option<String> {
        let first = self.due.first()?.clone();
        if first.0 > now {
            return None;
        }
        self.due.remove(&first);
        self.by_id.remove(&first.1);
        self.working.insert(first.1.clone());
        Some(first.1)
    }

    fn next(&self) -> Option<i64> {
        self.due.first().map(|(at, _)| *at)
    }
}

async fn run(
    context: Arc<Context>,
    mut queued: mpsc::UnboundedReceiver<(String, i64)>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut schedule = Schedule::default();
    let mut workers: JoinSet<(String, Option<i64>)> = JoinSet::new();
    let mut rescan = tokio::time::interval(RESCAN_INTERVAL);
    let mut nudge_check = tokio::time::interval(NUDGE_CHECK);
    let mut nudged = context.queue.nudged_at();
    loop {
        while workers.len() < MAX_ENTRIES_AT_ONCE {
            let Some(id) = schedule.take_due(now()) else {
                break;
            };
            let context = Arc::clone(&context);
            workers.spawn(async move {
                let next = work(&context, &id).await;
                (id, next)
            });
        }
        let wait = match schedule.next() {
            Some(at) if workers.len() < MAX_ENTRIES_AT_ONCE => {
                Duration::from_secs(u64::try_from(at - now()).unwrap_or(0).max(1))
            }
            _ => RESCAN_INTERVAL,
        };
        tokio::select! {
            () = stopped(&mut stopping) => break,
            Some((id, at)) = queued.recv() => schedule.set(id, at),
            Some(done) = workers.join_next() => {
                if let Ok((id, next)) = done {
                    schedule.working.remove(&id);
                    if let Some(at) = next {
                        schedule.set(id, at);
                    }
                }
            }
            _ = rescan.tick() => scan(&context, &mut schedule).await,
            _ = nudge_check.tick() => {
                let now_nudged = context.queue.nudged_at();
                if now_nudged != nudged {
                    nudged = now_nudged;
                    scan(&context, &mut schedule).await;
                }
            }
            () = tokio::time::sleep(wait) => {}
        }
    }
    // An attempt cut short is retried after the restart, as after a crash.
    workers.shutdown().await;
}

/// Completes once the server is stopping (or the sender is gone, which means the same).
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|s| *s).await;
}

/// Reads every envelope and schedules what is not being worked on.
async fn scan(context: &Arc<Context>, schedule: &mut Schedule) {
    let queue = context.queue.clone();
    let listed = tokio::task::spawn_blocking(move || {
        queue.list().map(|(entries, bad)| {
            for e in &bad {
                tracing::error!("outbound queue: {e}");
            }
            entries
                .into_iter()
                .map(|e| {
                    // A finished entry left by a crash is due now, to be finished.
                    let due = e.next_due().unwrap_or(0);
                    (e.id, due)
                })
                .collect::<Vec<_>>()
        })
    })
    .await;
    match listed {
        Ok(Ok(entries)) => {
            for (id, due) in entries {
                schedule.set(id, due);
            }
        }
        Ok(Err(e)) => tracing::error!("cannot read the outbound queue: {e}"),
        Err(e) => tracing::error!("reading the outbound queue panicked: {e}"),
    }
}

/// What the message's content asks of the receiver.
#[derive(Debug, Clone, Copy, Default)]
struct Content {
    eight_bit: bool,
    utf8_headers: bool,
}

fn scan_content(path: &Path) -> std::io::Result<Content> {
    let mut file = std::fs::File::open(path)?;
    let mut content = Content::default();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut in_header = true;
    // The last octets seen, to find the empty line across chunk boundaries.
    let mut tail = [0u8; 3];
    loop {
        let n = file.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        for &b in chunk.get(..n).unwrap_or_default() {
            if b > 127 {
                content.eight_bit = true;
                if in_header {
                    content.utf8_headers = true;
                }
            }
            if in_header && b == b'\n' && (tail[2] == b'\n' || tail[1..] == *b"\n\r") {
                in_header = false;
            }
            tail = [tail[1], tail[2], b];
        }
    }
    Ok(content)
}

/// The beginning of the message, enough for its header section in a notification.
fn read_headers(path: &Path) -> Vec<u8> {
    let mut head = Vec::new();
    if let Ok(file) = std::fs::File::open(path) {
        let _ = file
            .take(MAX_ORIGINAL_HEADERS as u64 + 1024)
            .read_to_end(&mut head);
    }
    head
}

/// The domain of an address (after its last `@`), lower-cased.
fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default()
}

/// One pass over one entry: attempts for its due recipients, the bookkeeping, a delay notice,
/// and, once it is finished, the bounce and its removal. Returns when it is due next.
async fn work(context: &Arc<Context>, id: &str) -> Option<i64> {
    let queue = context.queue.clone();
    let owned = id.to_owned();
    let loaded = tokio::task::spawn_blocking(move || queue.load(&owned)).await;
    let mut entry = match loaded {
        Ok(Ok(entry)) => entry,
        Ok(Err(QueueError::NotFound(_))) => return None,
        Ok(Err(e)) => {
            tracing::error!(queue_id = id, "outbound queue: {e}");
            return Some(now() + 3600);
        }
        Err(_) => return Some(now() + 3600),
    };
    let path = match context.queue.message_path(id) {
        Ok(path) => path,
        Err(_) => return None,
    };
    // The Message-ID on every line about the message, as on the lines of its acceptance.
    let message_id = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            dirmail_proto::smtp::header::message_id(&read_headers(&path))
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| "-".to_owned())
    };
    let started = now();
    let due: Vec<usize> = entry
        .recipients
        .iter()
        .enumerate()
        .filter(|(_, r)| r.state == RecipientState::Pending && r.next_attempt <= started)
        .map(|(i, _)| i)
        .collect();
    if !due.is_empty() {
        let attempts = attempt_all(context, &entry, &path, &due, &message_id).await;
        // Recorded into the entry as it is now, under the queue's lock: an administrator's
        // `queue retry` or `queue bounce` made during the attempts is kept, and a `queue
        // delete` is respected.
        let ctx = Arc::clone(context);
        let logged_id = message_id.clone();
        match update(context, id, move |fresh| {
            record(&ctx, fresh, &attempts, &logged_id)
        })
        .await
        {
            Ok(fresh) => entry = fresh,
            Err(QueueError::NotFound(_)) => return None,
            Err(e) => {
                tracing::error!(queue_id = id, "cannot update the queue entry: {e}");
                return Some(now() + 60);
            }
        }
    }
    maybe_delay_notice(context, &mut entry, &path).await;
    if entry.is_finished() {
        finish(context, &entry, &path, &message_id).await;
        return None;
    }
    entry.next_due()
}

/// Changes the entry `id` as it is on disk now, under the queue's lock (`Queue::update` of the store), and
/// returns it as changed.
async fn update(
    context: &Arc<Context>,
    id: &str,
    change: impl FnOnce(&mut Entry) + Send + 'static,
) -> Result<Entry, QueueError> {
    let queue = context.queue.clone();
    let id = id.to_owned();
    tokio::task::spawn_blocking(move || {
        queue.update(&id, |entry| {
            change(entry);
            entry.clone()
        })
    })
    .await
    .unwrap_or_else(|e| {
        Err(QueueError::Io {
            context: "the queue update panicked".into(),
            source: std::io::Error::other(e.to_string()),
        })
    })
}

/// Delivers to the due recipients: local ones into their mailboxes, the others by domain,
/// the domains at once.
async fn attempt_all(
    context: &Arc<Context>,
    entry: &Entry,
    path: &Path,
    due: &[usize],
    message_id: &str,
) -> Vec<Attempt> {
    let mut results = Vec::new();
    let mut remote: HashMap<String, Vec<String>> = HashMap::new();
    for &index in due {
        let Some(recipient) = entry.recipients.get(index) else {
            continue;
        };
        let address = recipient.address.clone();
        let mailboxes = Arc::clone(&context.mailboxes);
        let (who, from, file) = (address.clone(), entry.reverse_path.clone(), path.to_owned());
        let local =
            tokio::task::spawn_blocking(move || mailboxes.deliver_local(&who, &from, &file))
                .await
                .unwrap_or_else(|e| LocalDelivery::Failed(format!("451 4.3.0 {e}")));
        let host = Some(format!("{} (local)", context.hostname));
        let decided = |disposition, reply: String| Attempt {
            address: address.clone(),
            disposition,
            reply,
            host: host.clone(),
        };
        let attempt = match local {
            LocalDelivery::NotLocal => {
                remote
                    .entry(domain_of(&address))
                    .or_default()
                    .push(address.clone());
                continue;
            }
            LocalDelivery::Delivered => decided(
                Disposition::Delivered,
                "250 2.0.0 Delivered to the local mailbox".into(),
            ),
            LocalDelivery::Refused(reply) => decided(Disposition::Permanent, reply),
            LocalDelivery::Failed(reply) => decided(Disposition::Temporary, reply),
        };
        tracing::info!(queue_id = %entry.id, message_id, recipient = %attempt.address, reply = %attempt.reply, "outbound: local delivery");
        results.push(attempt);
    }
    if remote.is_empty() {
        return results;
    }
    let scanned = {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || scan_content(&path)).await
    };
    let content = match scanned {
        Ok(Ok(content)) => content,
        _ => {
            // The message file cannot be read: nothing to send now.
            for (_, addresses) in remote {
                results.extend(addresses.into_iter().map(|address| Attempt {
                    address,
                    disposition: Disposition::Temporary,
                    reply: "451 4.3.0 The queued message cannot be read".into(),
                    host: None,
                }));
            }
            return results;
        }
    };
    // Signed once per attempt, for all its domains: a key added or removed since the message
    // was queued is used or not at the next attempt, and the queue keeps no signature.
    let signatures = {
        let (data_dir, path, id) = (context.data_dir.clone(), path.to_owned(), entry.id.clone());
        tokio::task::spawn_blocking(move || crate::dkim::sign_file(&data_dir, &path, &id))
            .await
            .unwrap_or_default()
    };
    let signatures = Arc::new(signatures);
    let mut groups = JoinSet::new();
    for (domain, addresses) in remote {
        let context = Arc::clone(context);
        let signatures = Arc::clone(&signatures);
        let (path, reverse_path, id) = (
            path.to_owned(),
            entry.reverse_path.clone(),
            entry.id.clone(),
        );
        let size = entry.size;
        let message_id = message_id.to_owned();
        groups.spawn(async move {
            let per_destination = {
                let mut map = context
                    .destinations
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                Arc::clone(
                    map.entry(domain.clone())
                        .or_insert_with(|| Arc::new(Semaphore::new(MAX_PER_DESTINATION))),
                )
            };
            let _destination = per_destination.acquire_owned().await;
            let _connection = Arc::clone(&context.connections).acquire_owned().await;
            let message = Message {
                queue_id: &id,
                message_id: &message_id,
                path: &path,
                reverse_path: &reverse_path,
                size,
                prefix: &signatures,
                eight_bit: content.eight_bit,
                utf8_headers: content.utf8_headers,
            };
            deliver::deliver_domain(
                context.router.as_ref(),
                &context.settings,
                &message,
                &domain,
                addresses,
            )
            .await
        });
    }
    while let Some(done) = groups.join_next().await {
        if let Ok(attempts) = done {
            results.extend(attempts);
        }
    }
    results
}

/// Writes the attempts' results into the entry: delivered, failed, or pending with the next
/// attempt on the retry schedule, failed as expired once `max_age` has passed.
fn record(context: &Context, entry: &mut Entry, attempts: &[Attempt], message_id: &str) {
    let now = now();
    let deadline = entry
        .arrived
        .saturating_add(i64::try_from(context.max_age.as_secs()).unwrap_or(i64::MAX));
    let delay = now - entry.arrived;
    for attempt in attempts {
        let Some(recipient) = entry
            .recipients
            .iter_mut()
            .find(|r| r.address == attempt.address && r.state == RecipientState::Pending)
        else {
            continue;
        };
        recipient.attempts = recipient.attempts.saturating_add(1);
        recipient.last_reply = Some(attempt.reply.clone());
        recipient.last_host = attempt.host.clone();
        let result = match attempt.disposition {
            Disposition::Delivered => AttemptResult::Delivered,
            Disposition::Permanent => AttemptResult::Failed,
            Disposition::Temporary if now >= deadline => AttemptResult::Failed,
            Disposition::Temporary => AttemptResult::Deferred,
        };
        crate::counts::attempted(result);
        match attempt.disposition {
            Disposition::Delivered => recipient.state = RecipientState::Delivered,
            Disposition::Permanent => recipient.state = RecipientState::Failed,
            Disposition::Temporary if now >= deadline => {
                recipient.state = RecipientState::Failed;
                recipient.last_reply = Some(format!(
                    "451 4.4.7 Delivery time expired after {} attempts; the last reply: {}",
                    recipient.attempts, attempt.reply
                ));
            }
            Disposition::Temporary => {
                let step = usize::try_from(recipient.attempts.saturating_sub(1)).unwrap_or(0);
                let wait = context
                    .retry
                    .get(step)
                    .or(context.retry.last())
                    .copied()
                    .unwrap_or(Duration::from_secs(300));
                let wait = i64::try_from(wait.as_secs().max(1)).unwrap_or(i64::MAX);
                // The last attempt comes at the deadline, not long after it.
                recipient.next_attempt = now.saturating_add(wait).min(deadline.max(now + 1));
            }
        }
        let outcome = match recipient.state {
            RecipientState::Delivered => "delivered",
            RecipientState::Failed => "bounced",
            RecipientState::Pending => "deferred",
        };
        let from = if entry.reverse_path.is_empty() {
            "<>"
        } else {
            entry.reverse_path.as_str()
        };
        tracing::info!(
            queue_id = %entry.id,
            message_id,
            from,
            size = entry.size,
            recipient = %recipient.address,
            outcome,
            host = recipient.last_host.as_deref().unwrap_or("-"),
            attempts = recipient.attempts,
            delay_seconds = delay,
            reply = recipient.last_reply.as_deref().unwrap_or(""),
            "outbound: recorded"
        );
    }
}

/// Once per message, after `delay_notice`, the sender hears which recipients are still
/// waiting.
async fn maybe_delay_notice(context: &Arc<Context>, entry: &mut Entry, path: &Path) {
    let Some(after) = context.delay_notice else {
        return;
    };
    let after = i64::try_from(after.as_secs()).unwrap_or(i64::MAX);
    if entry.delay_notice_sent
        || entry.reverse_path.is_empty()
        || entry.is_finished()
        || now() - entry.arrived < after
    {
        return;
    }
    let pending: Vec<usize> = entry
        .recipients
        .iter()
        .enumerate()
        .filter(|(_, r)| r.state == RecipientState::Pending)
        .map(|(i, _)| i)
        .collect();
    if notify(context, entry, path, Action::Delayed, &pending).await {
        entry.delay_notice_sent = true;
        if let Err(e) = update(context, &entry.id, |fresh| fresh.delay_notice_sent = true).await {
            tracing::error!(queue_id = %entry.id, "cannot update the queue entry: {e}");
        }
    }
}

/// A finished entry: the bounce for its failed recipients (never for a null reverse-path),
/// queued before the entry goes, then the entry removed.
async fn finish(context: &Arc<Context>, entry: &Entry, path: &Path, message_id: &str) {
    let failed: Vec<usize> = entry
        .recipients
        .iter()
        .enumerate()
        .filter(|(_, r)| r.state == RecipientState::Failed)
        .map(|(i, _)| i)
        .collect();
    if !failed.is_empty() && !entry.reverse_path.is_empty() {
        if !notify(context, entry, path, Action::Failed, &failed).await {
            // Kept: the bounce is tried again with the next scan.
            return;
        }
    } else if !failed.is_empty() {
        tracing::info!(queue_id = %entry.id, "outbound: a notification failed; no bounce for a null reverse-path");
    }
    let queue = context.queue.clone();
    let id = entry.id.clone();
    // Removed only if it is still finished under the lock: an administrator's `queue retry`
    // cannot have made a failed recipient pending again, but nothing else may slip in either.
    let removed = tokio::task::spawn_blocking(move || {
        let _lock = queue.lock()?;
        if queue.load(&id)?.is_finished() {
            queue.remove(&id)
        } else {
            Ok(())
        }
    })
    .await;
    match removed {
        Ok(Ok(())) | Ok(Err(QueueError::NotFound(_))) => {
            tracing::info!(queue_id = %entry.id, message_id, "outbound: finished and removed");
        }
        Ok(Err(e)) => tracing::error!(queue_id = %entry.id, "cannot remove the queue entry: {e}"),
        Err(_) => {}
    }
}

/// Builds a notification about `which` recipients and queues it to the reverse-path. False
/// when it could not be queued.
async fn notify(
    context: &Arc<Context>,
    entry: &Entry,
    path: &Path,
    action: Action,
    which: &[usize],
) -> bool {
    let date = |secs: i64| {
        crate::rfc5322_date(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
    };
    let recipients: Vec<dsn::Recipient> =
        which
            .iter()
            .filter_map(|&i| entry.recipients.get(i))
            .map(|r| {
                let reply = r.last_reply.as_deref().and_then(deliver::parse_reply);
                let fallback = match action {
                    Action::Failed => dirmail_proto::smtp::Status(5, 0, 0),
                    Action::Delayed => dirmail_proto::smtp::Status(4, 0, 0),
                };
                dsn::Recipient {
                    address: r.address.clone(),
                    action,
                    status: reply.as_ref().and_then(|r| r.status).unwrap_or(fallback),
                    remote_mta: r
                        .last_host
                        .as_deref()
                        .and_then(|h| h.split(' ').next())
                        .map(str::to_owned),
                    diagnostic: reply,
                    last_attempt: Some(date(now())),
                    will_retry_until: match action {
                        Action::Delayed => Some(date(entry.arrived.saturating_add(
                            i64::try_from(context.max_age.as_secs()).unwrap_or(0),
                        ))),
                        Action::Failed => None,
                    },
                }
            })
            .collect();
    let head = {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || read_headers(&path))
            .await
            .unwrap_or_default()
    };
    let notice = Notice {
        hostname: &context.hostname,
        reverse_path: &entry.reverse_path,
        arrival_date: &date(entry.arrived),
        date: &date(now()),
        queue_id: &entry.id,
        unique: &entry.id,
        recipients: &recipients,
        original_headers: &head,
    };
    let notification = match dsn::build(&notice) {
        Ok(n) => n,
        Err(e) => {
            // Nothing will ever make this notification: do not keep the entry for it.
            tracing::warn!(queue_id = %entry.id, "outbound: no notification: {e}");
            return true;
        }
    };
    let (queue, mailroot, hostname) = (
        context.queue.clone(),
        context.mailroot.clone(),
        context.hostname.clone(),
    );
    let queued = tokio::task::spawn_blocking(move || -> std::io::Result<Entry> {
        let mut spool = SpoolFile::create(&mailroot, &hostname)?;
        spool.append(&notification.message)?;
        queue.enqueue(
            &spool,
            "",
            std::slice::from_ref(&notification.to),
            &hostname,
            now(),
        )
    })
    .await;
    match queued {
        Ok(Ok(new)) => {
            tracing::info!(queue_id = %entry.id, notification = %new.id, to = %entry.reverse_path, ?action, "outbound: notification queued");
            context.handle.queued(&new);
            true
        }
        Ok(Err(e)) => {
            tracing::error!(queue_id = %entry.id, "cannot queue the notification: {e}");
            false
        }
        Err(_) => false,
    }
}
