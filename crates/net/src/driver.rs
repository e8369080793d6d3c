//! The one driver: joins any protocol core (a [`Session`]) to a client connection. It reads
//! under the session's deadline, writes under the connection's write timeout
//! ([`Conn`]), does the STARTTLS handshake when the core asks, tells the core when the server
//! is stopping, and hands each of the core's requests to the protocol's [`Handler`]. What
//! differs between protocols is the handler: how it answers requests, and for IMAP an input
//! besides the client (news of changes to the open folder).

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::budget::READ_CHUNK;
use super::conn::Conn;
use super::shared::{Service, Shared, stopped};
use dirmail_proto::session::{Session, Step};

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

/// The client's connection, after the TLS handshake on an implicit-TLS listener.
pub async fn connect(service: Service, tcp: TcpStream, shared: &Shared) -> std::io::Result<Conn> {
    let mut conn = Conn::new(tcp, shared.config.limits.write_timeout);
    if service.implicit_tls() {
        conn.upgrade(&shared.tls).await?;
    }
    Ok(conn)
}

/// Runs `session` on `conn` until the client quits, the session closes it, or the server
/// stops (then the session says goodbye; a request under way is answered first).
pub async fn run<S, H>(
    mut conn: Conn,
    mut session: S,
    handler: &mut H,
    shared: &Shared,
    peer: SocketAddr,
) -> std::io::Result<()>
where
    S: Session,
    H: Handler<S>,
{
    let mut out = Vec::new();
    session.write_greeting(&mut out);
    let mut stopping = shared.stopping.clone();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut share = shared.input_budget.share();
    // Since when the session has been waiting for the budget to have room, if it is.
    let mut starved_since: Option<Instant> = None;
    loop {
        while let Some(step) = session.next_step(&mut out) {
            match step {
                Step::Wrote => {
                    if out.len() >= FLUSH_AT {
                        flush(&mut conn, &mut out).await?;
                    }
                }
                Step::Request(request) => {
                    flush(&mut conn, &mut out).await?;
                    let response = handler.answer(request).await;
                    if let Err(e) = session.answer(response) {
                        tracing::error!(%peer, "{} core refused an answer: {e}", S::PROTOCOL);
                        return Ok(());
                    }
                }
                Step::StartTls => {
                    flush(&mut conn, &mut out).await?;
                    conn.upgrade(&shared.tls).await?;
                    session.tls_started(Instant::now());
                }
                Step::Close => {
                    flush(&mut conn, &mut out).await?;
                    let _ = conn.shutdown().await;
                    return Ok(());
                }
            }
        }
        flush(&mut conn, &mut out).await?;
        let deadline = session.deadline();
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
        tokio::select! {
            read = conn.read(&mut buf), if may_read => {
                let n = read?;
                if n == 0 {
                    return Ok(());
                }
                session.feed(buf.get(..n).unwrap_or_default(), Instant::now());
            }
            _ = shared.input_budget.released(), if !may_read => {}
            _ = sleep_until(deadline) => session.timeout(Instant::now()),
            news = handler.wake(idle) => {
                if news {
                    session.news();
                }
            }
            _ = stopped(&mut stopping) => {
                session.stop();
                while let Some(step) = session.next_step(&mut out) {
                    if matches!(step, Step::Close) {
                        break;
                    }
                }
                // Goodbye if the client still listens; the server goes either way.
                let _ = flush(&mut conn, &mut out).await;
                let _ = conn.shutdown().await;
                return Ok(());
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

async fn flush(conn: &mut Conn, out: &mut Vec<u8>) -> std::io::Result<()> {
    if !out.is_empty() {
        conn.write_all(out).await?;
        conn.flush().await?;
        out.clear();
    }
    Ok(())
}
