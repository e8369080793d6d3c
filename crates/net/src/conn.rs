//! A client connection that may become TLS half-way (STARTTLS, STLS), and whose output may not
//! stall for longer than `[limits] write_timeout`.
//!
//! The drivers read under the session's own deadline, but a write blocks for as long as the
//! client does not read: without a bound, a client that stops reading would keep its
//! connection slot, and a POP3 session its mailbox (R20), for as long as TCP retries. So every
//! write, flush and shutdown here is watched: once output has made no progress for
//! `write_timeout`, the operation fails with `TimedOut` and the driver drops the connection.
//! The bound is on a stall, not on a whole reply, so a slow but reading client still gets a
//! large message. The TLS handshake gets the same bound as a whole.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

pub struct Conn {
    stream: Stream,
    write_timeout: Duration,
    /// Armed when output first has to wait; disarmed by any progress.
    stall: Option<Pin<Box<Sleep>>>,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while an upgrade is under way (or after one failed); any I/O on it fails.
    Upgrading,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.stream {
            Stream::Plain(_) => "Conn::Plain",
            Stream::Tls(_) => "Conn::Tls",
            Stream::Upgrading => "Conn::Upgrading",
        })
    }
}

impl Conn {
    pub fn new(tcp: TcpStream, write_timeout: Duration) -> Conn {
        Conn {
            stream: Stream::Plain(tcp),
            write_timeout,
            stall: None,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// The TLS handshake on a plain connection (STARTTLS, STLS, or implicit TLS at accept),
    /// within `write_timeout`.
    pub async fn upgrade(&mut self, acceptor: &TlsAcceptor) -> io::Result<()> {
        match std::mem::replace(&mut self.stream, Stream::Upgrading) {
            Stream::Plain(tcp) => {
                let tls = tokio::time::timeout(self.write_timeout, acceptor.accept(tcp))
                    .await
                    .map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "the TLS handshake did not finish within {:?}",
                                self.write_timeout
                            ),
                        )
                    })??;
                self.stream = Stream::Tls(Box::new(tls));
                Ok(())
            }
            other => {
                self.stream = other;
                Err(io::Error::other("the connection is already TLS"))
            }
        }
    }

    /// Passes on what an output operation gave, failing it once it has waited too long.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stall = None;
            return polled;
        }
        let timeout = self.write_timeout;
        let stall = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {timeout:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn upgrading() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "TLS upgrade in progress")
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = match &mut this.stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Upgrading => Poll::Ready(Err(upgrading())),
        };
        this.watch(cx, polled)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = match &mut this.stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Upgrading => Poll::Ready(Err(upgrading())),
        };
        this.watch(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = match &mut this.stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Upgrading => Poll::Ready(Err(upgrading())),
        };
        this.watch(cx, polled)
    }
}
