//! The one driver: joins any protocol core (a [`Session`]) to a client connection. It reads
//! under the session's deadline, writes under the connection's write timeout
//! ([`Conn`]), does the STARTTLS handshake when the core asks, tells the core when the server
//! is stopping, and hands each of the core's requests to the protocol's [`Handler`]. What
//! differs between protocols is the handler: how it answers requests, and for IMAP an input
//! besides the client (news of changes to the open folder).
//!
//! It also keeps the connection's place in the [`admission`](super::admission) counts up to
//! date: whether the session waits for its client (then, not logged in, it may be closed for a
//! newcomer), and when it logs in. Before login a wait is cut at `[limits] prelogin_timeout`
//! (the SMTP relay port, whose clients never log in, only when the server is under pressure;
//! never inside DATA), so that idle strangers cannot keep slots for the protocols' long
//! timeouts. Both ends are told in the protocol's busy words ([`Busy`]).
//!
//! When the log level lets them through (`logging = 3`, or `debug` for the target
//! `dirmail_net::trace`), every line in and out is logged as a protocol trace, each through the
//! core's [`Tracer`], which hides passwords and SASL payloads and gives message content as its
//! size.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::admission::Ticket;
use super::budget::READ_CHUNK;
use super::conn::Conn;
use super::shared::{Service, Shared, stopped};
use dirmail_proto::session::{Busy, Session, Step};
use dirmail_proto::trace::Tracer;

/// The log target of protocol traces, so a filter can turn them on alone
/// (`--log-level dirmail_net::trace=debug,info`).
pub const TRACE_TARGET: &str = "dirmail_net::trace";

/// One connection's protocol trace, when the log level wants it.
struct Trace {
    tracer: Option<Tracer>,
    peer: SocketAddr,
    protocol: &'static str,
}

impl Trace {
    fn new<S: Session>(peer: SocketAddr) -> Trace {
        let wanted = tracing::enabled!(target: TRACE_TARGET, tracing::Level::DEBUG);
        Trace {
            tracer: wanted.then(|| Tracer::new(S::TRACE)),
            peer,
            protocol: S::PROTOCOL,
        }
    }

    fn client(&mut self, bytes: &[u8]) {
        if let Some(tracer) = &mut self.tracer {
            for line in tracer.client(bytes) {
                tracing::debug!(target: TRACE_TARGET, peer = %self.peer, protocol = self.protocol, "C: {line}");
            }
        }
    }

    fn server(&mut self, bytes: &[u8]) {
        if let Some(tracer) = &mut self.tracer {
            for line in tracer.server(bytes) {
                tracing::debug!(target: TRACE_TARGET, peer = %self.peer, protocol = self.protocol, "S: {line}");
            }
        }
    }
}

/// Replies are written out once this much has piled up, even mid-command (an IMAP FETCH of
/// many messages), so memory stays bounded.
const FLUSH_AT: usize = 256 * 1024;

/// How long a session may wait for the input budget to have room before it is closed.
const BUDGET_WAIT: Duration = Duration::from_secs(60);

/// One protocol's side of the driver: it answers the core's requests.
pub trait Handler<S: Session>: Send {
    /// Answers one request; the core reads nothing more until it has the answer.
    fn answer(&mut self, request: S::Request) -> impl Future<Output = S::Response> + Send;

    /// An input besides the client, for a protocol that has one. Completes with `true` when
    /// the session should hear news ([`Session::news`]); `idle` is true while the session
    /// waits for news ([`Session::awaits_news`]). Without such an input it never completes.
    fn wake(&mut self, idle: bool) -> impl Future<Output = bool> + Send {
        let _ = idle;
        std::future::pending()
    }
}

/// A connection the server has accepted, with its place in the admission counts.
#[derive(Debug)]
pub struct Accepted {
    pub tcp: TcpStream,
    pub ticket: Ticket,
}

/// The client's connection as the driver runs it: the socket, its place in the counts, and
/// the listener it came through.
#[derive(Debug)]
pub struct Connection {
    conn: Conn,
    ticket: Ticket,
    service: Service,
}

impl Connection {
    pub fn is_tls(&self) -> bool {
        self.conn.is_tls()
    }
}

/// The client's connection, after the TLS handshake on an implicit-TLS listener. A handshake
/// is a wait for a client that has not logged in, so it too may be cut for a newcomer.
pub async fn connect(
    service: Service,
    accepted: Accepted,
    shared: &Shared,
) -> std::io::Result<Connection> {
    let Accepted { tcp, ticket } = accepted;
    let mut conn = Conn::new(tcp, shared.config.limits.write_timeout);
    if service.implicit_tls() {
        tokio::select! {
            done = conn.upgrade(&shared.tls) => done?,
            _ = ticket.evicted() => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "closed for a newcomer before the TLS handshake ended",
                ));
            }
        }
    }
    Ok(Connection {
        conn,
        ticket,
        service,
    })
}

/// Runs `session` on `conn` until the client quits, the session closes it, or the server
/// stops (then the session says goodbye; a request under way is answered first).
pub async fn run<S, H>(
    connection: Connection,
    mut session: S,
    handler: &mut H,
    shared: &Shared,
    peer: SocketAddr,
) -> std::io::Result<()>
where
    S: Session,
    H: Handler<S>,
{
    let Connection {
        mut conn,
        ticket,
        service,
    } = connection;
    let mut trace = Trace::new::<S>(peer);
    let mut out = Vec::new();
    session.write_greeting(&mut out);
    let mut stopping = shared.stopping.clone();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut share = shared.input_budget.share();
    // Since when the session has been waiting for the budget to have room, if it is.
    let mut starved_since: Option<Instant> = None;
    let mut last_input = Instant::now();
    let mut logged_in = false;
    loop {
        while let Some(step) = session.next_step(&mut out) {
            match step {
                Step::Wrote => {
                    if out.len() >= FLUSH_AT {
                        flush(&mut conn, &mut out, &mut trace).await?;
                    }
                }
                Step::Request(request) => {
                    flush(&mut conn, &mut out, &mut trace).await?;
                    let response = handler.answer(request).await;
                    if let Err(e) = session.answer(response) {
                        tracing::error!(%peer, "{} core refused an answer: {e}", S::PROTOCOL);
                        return Ok(());
                    }
                }
                Step::StartTls => {
                    flush(&mut conn, &mut out, &mut trace).await?;
                    conn.upgrade(&shared.tls).await?;
                    session.tls_started(Instant::now());
                }
                Step::Close => {
                    flush(&mut conn, &mut out, &mut trace).await?;
                    let _ = conn.shutdown().await;
                    return Ok(());
                }
            }
        }
        flush(&mut conn, &mut out, &mut trace).await?;
        if !logged_in && session.is_authenticated() {
            ticket.logged_in();
            logged_in = true;
        }
        let deadline = session.deadline();
        let cut = prelogin_cut(&session, logged_in, service, &ticket, shared, last_input);
        let idle = session.awaits_news();
        share.holds(session.buffered());
        let may_read = share.may_read(session.buffered());
        if may_read {
            starved_since = None;
        } else if starved_since.get_or_insert_with(Instant::now).elapsed() > BUDGET_WAIT {
            // Every other session holding the budget has not let go for this long: give this
            // one's memory back rather than wait without end.
            tracing::warn!(%peer, held = session.buffered(), "connection closed: the input memory budget ([limits] input_memory) stayed full");
            let _ = conn.shutdown().await;
            return Ok(());
        }
        ticket.waiting(last_input);
        tokio::select! {
            read = conn.read(&mut buf), if may_read => {
                if !ticket.busy() {
                    return goodbye::<S>(conn, Busy::Evicted, peer, &mut trace).await;
                }
                let n = read?;
                if n == 0 {
                    return Ok(());
                }
                last_input = Instant::now();
                let input = buf.get(..n).unwrap_or_default();
                trace.client(input);
                session.feed(input, last_input);
            }
            _ = sleep_until(earliest(deadline, cut)) => {
                if !ticket.busy() {
                    return goodbye::<S>(conn, Busy::Evicted, peer, &mut trace).await;
                }
                let now = Instant::now();
                let core_due = deadline.is_some_and(|at| now >= at);
                if !core_due && cut.is_some_and(|at| now >= at) {
                    return goodbye::<S>(conn, Busy::LoginTimeout, peer, &mut trace).await;
                }
                session.timeout(now);
            }
            _ = shared.input_budget.released(), if !may_read => {}
            news = handler.wake(idle) => {
                if !ticket.busy() {
                    return goodbye::<S>(conn, Busy::Evicted, peer, &mut trace).await;
                }
                if news {
                    session.news();
                }
            }
            _ = ticket.evicted() => return goodbye::<S>(conn, Busy::Evicted, peer, &mut trace).await,
            _ = stopped(&mut stopping) => {
                session.stop();
                while let Some(step) = session.next_step(&mut out) {
                    if matches!(step, Step::Close) {
                        break;
                    }
                }
                // Goodbye if the client still listens; the server goes either way.
                let _ = flush(&mut conn, &mut out, &mut trace).await;
                let _ = conn.shutdown().await;
                return Ok(());
            }
        }
    }
}

/// When a wait of a session that has not logged in ends regardless of the core's own
/// deadline: `prelogin_timeout` after the client's last input. Not once logged in, not inside
/// SMTP DATA, and on the SMTP relay port (whose clients, other servers, never log in and may
/// wait RFC 5321's five minutes for a command) only while the server is under pressure.
fn prelogin_cut<S: Session>(
    session: &S,
    logged_in: bool,
    service: Service,
    ticket: &Ticket,
    shared: &Shared,
    last_input: Instant,
) -> Option<Instant> {
    if logged_in || session.in_message() {
        return None;
    }
    if service == Service::Smtp && !ticket.under_pressure() {
        return None;
    }
    last_input.checked_add(shared.config.limits.prelogin_timeout)
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Closes a session that has not logged in, for a newcomer or after `prelogin_timeout`, with
/// the protocol's busy words. Such a session holds nothing that needs tidying (no POP3 hold, no
/// delivery), so the core is simply dropped.
async fn goodbye<S: Session>(
    mut conn: Conn,
    why: Busy,
    peer: SocketAddr,
    trace: &mut Trace,
) -> std::io::Result<()> {
    tracing::debug!(%peer, ?why, "{} connection closed before login", S::PROTOCOL);
    let mut out = Vec::new();
    S::write_busy(why, &mut out);
    // Goodbye if the client still listens; the connection goes either way.
    let _ = flush(&mut conn, &mut out, trace).await;
    let _ = conn.shutdown().await;
    Ok(())
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

async fn flush(conn: &mut Conn, out: &mut Vec<u8>, trace: &mut Trace) -> std::io::Result<()> {
    if !out.is_empty() {
        trace.server(out);
        conn.write_all(out).await?;
        conn.flush().await?;
        out.clear();
    }
    Ok(())
}
