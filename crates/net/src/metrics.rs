//! The metrics page (`[metrics] listen`): counters kept as the server works, rendered in the
//! Prometheus text exposition format 0.0.4 at `GET /metrics` by a small HTTP/1.1 responder.
//!
//! The counters are atomics, or a map under a lock where a label's values are only known as
//! they come (logins by reason, refusals by reason), which happens at most once per login or
//! message; they are kept whether or not the page is served. What is cheaper to look at than
//! to keep up (the open sessions, the outbound queue) is read when the page is asked for. The
//! directory's latencies come from [`dirmail_directory::timing`].
//!
//! The responder reads one request of at most [`MAX_REQUEST`] bytes within [`SCRAPE_TIMEOUT`],
//! answers it and closes the connection; at most [`MAX_SCRAPES`] are served at once, and one
//! more is closed unanswered, so the page cannot be used to hold the server's descriptors.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::shared::{Service, Shared, stopped};
use dirmail_directory::timing::{self, Histogram, Snapshot};
use dirmail_store::queue::Summary;

/// The most bytes of a request read (the request line and headers).
pub const MAX_REQUEST: usize = 8 * 1024;
/// The longest a scrape may take, request and answer together.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrapes served at once.
pub const MAX_SCRAPES: usize = 4;

/// How a login ended, as the `outcome` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    Accepted,
    /// Refused, with the R27 reason's label ([`dirmail_directory::RefusalReason::label`]).
    Refused(&'static str),
    /// Right credentials, retrieval locked (R13/R14).
    Locked,
    /// The directory or the store could not answer (R24).
    Unavailable,
}

/// (protocol, outcome, reason) of a login.
type LoginKey = (&'static str, &'static str, Option<&'static str>);

/// The counters of the metrics page.
#[derive(Debug)]
pub struct Metrics {
    started: SystemTime,
    /// The listeners this server has, so each shows up with 0 before its first connection.
    listeners: Vec<Service>,
    accepted: [AtomicU64; Service::ALL.len()],
    /// Over the connection limit or the address's share.
    refused: [AtomicU64; Service::ALL.len()],
    logins: Mutex<BTreeMap<LoginKey, u64>>,
    /// From the decision's start (after the throttle's wait) to its answer.
    login_seconds: Histogram,
    messages_received: AtomicU64,
    bytes_received: AtomicU64,
    mailbox_deliveries: AtomicU64,
    messages_queued: AtomicU64,
    messages_refused: Mutex<BTreeMap<&'static str, u64>>,
    recipients_refused: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    pub fn new(listeners: Vec<Service>) -> Metrics {
        Metrics {
            started: SystemTime::now(),
            listeners,
            accepted: [const { AtomicU64::new(0) }; Service::ALL.len()],
            refused: [const { AtomicU64::new(0) }; Service::ALL.len()],
            logins: Mutex::default(),
            login_seconds: Histogram::new(),
            messages_received: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            mailbox_deliveries: AtomicU64::new(0),
            messages_queued: AtomicU64::new(0),
            messages_refused: Mutex::default(),
            recipients_refused: Mutex::default(),
        }
    }

    /// When the server started.
    pub fn started(&self) -> SystemTime {
        self.started
    }

    pub fn connection_accepted(&self, service: Service) {
        bump(self.accepted.get(service.index()));
    }

    pub fn connection_refused(&self, service: Service) {
        bump(self.refused.get(service.index()));
    }

    /// A login decided for `protocol` (`smtp`, `pop3`, `imap`), and how long the decision took.
    pub fn login(&self, protocol: &'static str, outcome: LoginOutcome, took: Duration) {
        let key = match outcome {
            LoginOutcome::Accepted => (protocol, "accepted", None),
            LoginOutcome::Refused(reason) => (protocol, "refused", Some(reason)),
            LoginOutcome::Locked => (protocol, "locked", None),
            LoginOutcome::Unavailable => (protocol, "unavailable", None),
        };
        *lock(&self.logins).entry(key).or_default() += 1;
        self.login_seconds.observe(took);
    }

    /// A message accepted at the end of DATA (`250`), of `bytes` octets.
    pub fn message_received(&self, bytes: u64) {
        self.messages_received.fetch_add(1, Ordering::Relaxed);
        self.bytes_received.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Copies of a message written into local mailboxes (one per mailbox).
    pub fn delivered_locally(&self, mailboxes: usize) {
        self.mailbox_deliveries
            .fetch_add(mailboxes as u64, Ordering::Relaxed);
    }

    /// A message put in the outbound queue.
    pub fn queued(&self) {
        self.messages_queued.fetch_add(1, Ordering::Relaxed);
    }

    /// A message refused at the end of DATA (`over_quota`, `disk_full`, `failed`).
    pub fn message_refused(&self, reason: &'static str) {
        *lock(&self.messages_refused).entry(reason).or_default() += 1;
    }

    /// A recipient refused at RCPT by the server's lookup (`unknown`, `alias_loop`,
    /// `lookup_failed`); the core's own refusals (relaying, syntax) are not seen here.
    pub fn recipient_refused(&self, reason: &'static str) {
        *lock(&self.recipients_refused).entry(reason).or_default() += 1;
    }

    /// The page: every metric with its HELP and TYPE lines. `sessions` are the open sessions
    /// per listener ([`Service::ALL`]'s order); `queue`, the outbound queue if it could be read.
    pub fn render(&self, sessions: &[usize], queue: Option<Summary>) -> String {
        let mut page = Page::default();
        page.family(
            "dirmail_build_info",
            "gauge",
            "The running dirmail's version (the value is always 1).",
        );
        page.sample(
            "dirmail_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1,
        );
        page.family(
            "dirmail_start_time_seconds",
            "gauge",
            "When the server started, in seconds since the Unix epoch.",
        );
        let started = self
            .started
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        page.sample("dirmail_start_time_seconds", &[], started);

        for (name, help, counts) in [
            (
                "dirmail_connections_accepted_total",
                "Connections accepted, by listener.",
                &self.accepted,
            ),
            (
                "dirmail_connections_refused_total",
                "Connections refused as too many (the connection limit or the address's share), by listener.",
                &self.refused,
            ),
        ] {
            page.family(name, "counter", help);
            for service in &self.listeners {
                let count = counts
                    .get(service.index())
                    .map_or(0, |c| c.load(Ordering::Relaxed));
                page.sample(name, &[("listener", service.name())], count);
            }
        }
        page.family(
            "dirmail_sessions_open",
            "gauge",
            "Sessions open now, by listener and protocol.",
        );
        for service in &self.listeners {
            let open = sessions.get(service.index()).copied().unwrap_or(0);
            page.sample(
                "dirmail_sessions_open",
                &[
                    ("listener", service.name()),
                    ("protocol", service.protocol()),
                ],
                open as u64,
            );
        }

        page.family(
            "dirmail_logins_total",
            "counter",
            "Logins decided, by protocol, outcome (accepted, refused, locked, unavailable) and, when refused, the R27 reason.",
        );
        for ((protocol, outcome, reason), count) in lock(&self.logins).iter() {
            let mut labels = vec![("protocol", *protocol), ("outcome", *outcome)];
            if let Some(reason) = reason {
                labels.push(("reason", *reason));
            }
            page.sample("dirmail_logins_total", &labels, *count);
        }
        page.histogram(
            "dirmail_login_duration_seconds",
            "How long the login decision took (directory, hash or cache), after the throttle's wait.",
            &self.login_seconds.snapshot(),
        );

        for (name, help, counter) in [
            (
                "dirmail_messages_received_total",
                "Messages accepted over SMTP (a 250 at the end of DATA).",
                &self.messages_received,
            ),
            (
                "dirmail_received_bytes_total",
                "Octets of the messages accepted over SMTP.",
                &self.bytes_received,
            ),
            (
                "dirmail_mailbox_deliveries_total",
                "Copies of messages delivered into local mailboxes (one per mailbox).",
                &self.mailbox_deliveries,
            ),
            (
                "dirmail_messages_queued_total",
                "Messages put in the outbound queue.",
                &self.messages_queued,
            ),
        ] {
            page.family(name, "counter", help);
            page.sample(name, &[], counter.load(Ordering::Relaxed));
        }
        for (name, help, map) in [
            (
                "dirmail_messages_refused_total",
                "Messages refused at the end of DATA, by reason.",
                &self.messages_refused,
            ),
            (
                "dirmail_recipients_refused_total",
                "Recipients refused at RCPT by the server's lookup, by reason.",
                &self.recipients_refused,
            ),
        ] {
            page.family(name, "counter", help);
            for (reason, count) in lock(map).iter() {
                page.sample(name, &[("reason", *reason)], *count);
            }
        }

        page.histogram(
            "dirmail_directory_lookup_duration_seconds",
            "Active Directory operations as the service account (searches), R24's retries included.",
            &timing::ad_lookups().snapshot(),
        );
        page.histogram(
            "dirmail_directory_bind_duration_seconds",
            "Active Directory password checks (binds as the user), R24's retries included.",
            &timing::ad_binds().snapshot(),
        );
        page.histogram(
            "dirmail_password_hash_wait_seconds",
            "How long an argon2 password hash waited for its turn at the hash gate.",
            &timing::hash_gate_waits().snapshot(),
        );

        page.family(
            "dirmail_outbound_attempts_total",
            "counter",
            "Outbound delivery attempts per recipient, by result: delivered, deferred to a later attempt, failed (refused for good or expired).",
        );
        for (result, count) in dirmail_outbound::counts::attempts() {
            page.sample(
                "dirmail_outbound_attempts_total",
                &[("result", result.label())],
                count,
            );
        }

        if let Some(queue) = queue {
            page.family(
                "dirmail_queue_messages",
                "gauge",
                "Messages in the outbound queue.",
            );
            page.sample("dirmail_queue_messages", &[], queue.messages as u64);
            page.family(
                "dirmail_queue_recipients",
                "gauge",
                "Pending recipients in the outbound queue: due now, or deferred to a later attempt.",
            );
            page.sample(
                "dirmail_queue_recipients",
                &[("state", "due")],
                queue.due as u64,
            );
            page.sample(
                "dirmail_queue_recipients",
                &[("state", "deferred")],
                queue.deferred as u64,
            );
            page.family(
                "dirmail_queue_unreadable_envelopes",
                "gauge",
                "Queue envelopes that cannot be read.",
            );
            page.sample(
                "dirmail_queue_unreadable_envelopes",
                &[],
                queue.unreadable as u64,
            );
        }
        page.text
    }
}

fn bump(counter: Option<&AtomicU64>) {
    if let Some(counter) = counter {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Counts are still counts after a panic elsewhere.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The page being written.
#[derive(Default)]
struct Page {
    text: String,
}

impl Page {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.text.push_str(name);
        self.labels(labels);
        let _ = writeln!(self.text, " {value}");
    }

    fn labels(&mut self, labels: &[(&str, &str)]) {
        if labels.is_empty() {
            return;
        }
        self.text.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                self.text.push(',');
            }
            let _ = write!(self.text, "{key}=\"{}\"", escape_label(value));
        }
        self.text.push('}');
    }

    fn histogram(&mut self, name: &str, help: &str, snapshot: &Snapshot) {
        self.family(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        for (bound, count) in &snapshot.cumulative {
            self.sample(&bucket, &[("le", &bound.to_string())], *count);
        }
        self.sample(&bucket, &[("le", "+Inf")], snapshot.count);
        let _ = writeln!(self.text, "{name}_sum {}", snapshot.sum_seconds);
        self.sample(&format!("{name}_count"), &[], snapshot.count);
    }
}

/// A label value: backslash, double quote and line feed escaped (format 0.0.4).
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A HELP text: backslash and line feed escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Serves the metrics page on `listener` until the server stops.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut stopping = shared.stopping.clone();
    let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped(&mut stopping) => return,
        };
        let Ok((tcp, peer)) = accepted else {
            // Out of descriptors, or a client gone before it was accepted: the session
            // listeners' loops log such things; a scrape can wait for the next interval.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!(%peer, "metrics request refused: {MAX_SCRAPES} already in progress");
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let _slot = slot;
            if tokio::time::timeout(SCRAPE_TIMEOUT, answer(tcp, &shared))
                .await
                .is_err()
            {
                tracing::debug!(%peer, "metrics request timed out");
            }
        });
    }
}

/// One request, one answer, then close.
async fn answer(mut tcp: TcpStream, shared: &Arc<Shared>) {
    let (status, body) = match read_request(&mut tcp).await {
        Ok(head) => match route(&head) {
            Route::Metrics => ("200 OK", Some(page(shared).await)),
            Route::NotFound => ("404 Not Found", None),
            Route::NotAllowed => ("405 Method Not Allowed", None),
            Route::Bad => ("400 Bad Request", None),
        },
        Err(RequestError::TooLarge) => ("431 Request Header Fields Too Large", None),
        Err(RequestError::Closed) => return,
    };
    let (content_type, body) = match body {
        Some(page) => ("text/plain; version=0.0.4; charset=utf-8", page),
        None => ("text/plain; charset=utf-8", format!("{status}\n")),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status.starts_with("405") {
        response.push_str("Allow: GET\r\n");
    }
    response.push_str("\r\n");
    response.push_str(&body);
    let _ = tcp.write_all(response.as_bytes()).await;
    let _ = tcp.shutdown().await;
}

async fn page(shared: &Arc<Shared>) -> String {
    let queue = shared.backend.queue.clone();
    let now = unix_now();
    let summary = match tokio::task::spawn_blocking(move || queue.summary(now)).await {
        Ok(Ok(summary)) => Some(summary),
        Ok(Err(e)) => {
            tracing::warn!("metrics: cannot read the outbound queue: {e}");
            None
        }
        Err(e) => {
            tracing::warn!("metrics: reading the outbound queue panicked: {e}");
            None
        }
    };
    shared
        .metrics
        .render(&shared.sessions.count_by_service(), summary)
}

/// Seconds since the Unix epoch, as the queue counts time.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

enum RequestError {
    /// Over [`MAX_REQUEST`] without the end of the headers.
    TooLarge,
    /// The client went away (or sent nothing).
    Closed,
}

/// Reads up to the blank line that ends the headers; returns what came before it.
async fn read_request(tcp: &mut TcpStream) -> Result<String, RequestError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = tcp
            .read(&mut chunk)
            .await
            .map_err(|_| RequestError::Closed)?;
        if n == 0 {
            return Err(RequestError::Closed);
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if let Some(end) = find(&buf, b"\r\n\r\n").or_else(|| find(&buf, b"\n\n")) {
            buf.truncate(end);
            return Ok(String::from_utf8_lossy(&buf).into_owned());
        }
        if buf.len() > MAX_REQUEST {
            return Err(RequestError::TooLarge);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    NotFound,
    NotAllowed,
    Bad,
}

/// What the request line asks for. A query string (`/metrics?x`) is allowed and ignored.
fn route(head: &str) -> Route {
    let line = head.lines().next().unwrap_or_default();
    let mut words = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Route::Bad;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::Bad;
    }
    if method != "GET" {
        return Route::NotAllowed;
    }
    let path = target.split('?').next().unwrap_or_default();
    if path == "/metrics" {
        Route::Metrics
    } else {
        Route::NotFound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_routed_by_method_and_path() {
        assert_eq!(route("GET /metrics HTTP/1.1\r\nHost: x"), Route::Metrics);
        assert_eq!(route("GET /metrics?name[]=x HTTP/1.0"), Route::Metrics);
        assert_eq!(route("GET / HTTP/1.1"), Route::NotFound);
        assert_eq!(route("GET /metrics/ HTTP/1.1"), Route::NotFound);
        assert_eq!(route("POST /metrics HTTP/1.1"), Route::NotAllowed);
        assert_eq!(route("GET /metrics"), Route::Bad);
        assert_eq!(route("GET /metrics SMTP/1.0"), Route::Bad);
        assert_eq!(route(""), Route::Bad);
    }

    #[test]
    fn the_page_has_help_and_type_for_every_family_and_counts_what_happened() {
        let metrics = Metrics::new(vec![Service::Smtp, Service::Imap]);
        metrics.connection_accepted(Service::Imap);
        metrics.connection_accepted(Service::Imap);
        metrics.connection_refused(Service::Smtp);
        metrics.login("imap", LoginOutcome::Accepted, Duration::from_millis(2));
        metrics.login(
            "imap",
            LoginOutcome::Refused("bad_password"),
            Duration::from_millis(2),
        );
        metrics.message_received(120);
        metrics.message_refused("over_quota");
        let mut sessions = [0; Service::ALL.len()];
        sessions[Service::Imap.index()] = 3;
        let page = metrics.render(&sessions, Some(Summary::default()));
        for line in [
            "dirmail_connections_accepted_total{listener=\"imap\"} 2",
            "dirmail_connections_accepted_total{listener=\"smtp\"} 0",
            "dirmail_connections_refused_total{listener=\"smtp\"} 1",
            "dirmail_sessions_open{listener=\"imap\",protocol=\"imap\"} 3",
            "dirmail_logins_total{protocol=\"imap\",outcome=\"accepted\"} 1",
            "dirmail_logins_total{protocol=\"imap\",outcome=\"refused\",reason=\"bad_password\"} 1",
            "dirmail_login_duration_seconds_count 2",
            "dirmail_login_duration_seconds_bucket{le=\"+Inf\"} 2",
            "dirmail_received_bytes_total 120",
            "dirmail_messages_refused_total{reason=\"over_quota\"} 1",
            "dirmail_queue_recipients{state=\"due\"} 0",
        ] {
            assert!(page.lines().any(|l| l == line), "{line} in\n{page}");
        }
        // Every sample belongs to a family announced just before it, with HELP and TYPE.
        let mut announced = Vec::new();
        for line in page.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                announced.push(rest.split(' ').next().unwrap().to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = announced.last().unwrap();
                assert!(name.starts_with(family.as_str()), "{name} under {family}");
            }
        }
        assert_eq!(
            page.matches("# HELP ").count(),
            page.matches("# TYPE ").count()
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
