//! dirmail's floor without IO: validated names ([`names`]), the SASL steppers ([`auth`]) and the
//! sans-IO protocol cores ([`smtp`], [`pop3`], [`imap`]): bytes and `now` in, replies and
//! requests to the driver out. A core never touches a socket, a clock or the directory; this
//! crate depends on none of tokio, rusqlite, ldap3 or rustls, so the compiler keeps it so.
//!
//! Each core is a `Session` with the same shape: `greeting()`, `feed(bytes, now)`, then
//! `poll()` until it returns `None`; a `Request` event is answered with `answer(..)` before the
//! core reads further input; `StartTls` asks the driver for the handshake, after which it
//! calls `tls_started()`; `deadline()` says when to call `timeout(now)`. The [`session`]
//! trait states that shape once, so one driver runs all three. [`trace`] follows a
//! connection's bytes for the protocol trace, with secrets hidden.

pub mod auth;
pub mod imap;
pub mod names;
pub mod pop3;
pub mod session;
pub mod smtp;
pub mod trace;

/// One line taken from an [`InputBuffer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// The line without its `LF` or `CRLF` ending.
    Text(Vec<u8>),
    /// The line was longer than the limit; its bytes were dropped as they arrived, and this is
    /// returned once its end was seen, so the session stays in step with the client.
    TooLong,
}

/// Bytes received and not yet processed, with a line reader whose memory is bounded: a line
/// longer than `max_line` is discarded while it arrives, never kept whole.
///
/// "Need more bytes" is the ordinary answer (`None`), not an error.
#[derive(Debug)]
pub struct InputBuffer {
    buf: Vec<u8>,
    /// Start of the unread bytes in `buf`; the bytes before it are dropped on the next push.
    pos: usize,
    max_line: usize,
    /// Inside an over-long line: drop bytes until its end.
    discarding: bool,
}

impl InputBuffer {
    /// `max_line` counts the octets of a line without its ending.
    pub fn new(max_line: usize) -> Self {
        InputBuffer {
            buf: Vec::new(),
            pos: 0,
            max_line,
            discarding: false,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The bytes not yet processed.
    pub fn unread(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    /// Marks `n` unread bytes as processed.
    pub fn consume(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n).min(self.buf.len());
    }

    pub fn len(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops everything unread, including a partly received over-long line.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.pos = 0;
        self.discarding = false;
    }

    /// The next complete line, or `None` when more bytes are needed.
    pub fn next_line(&mut self) -> Option<Line> {
        let unread = self.unread();
        match unread.iter().position(|&b| b == b'\n') {
            Some(lf) => {
                let raw = unread.get(..lf).unwrap_or_default();
                let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
                let line = if self.discarding || raw.len() > self.max_line {
                    Line::TooLong
                } else {
                    Line::Text(raw.to_vec())
                };
                self.discarding = false;
                self.consume(lf + 1);
                Some(line)
            }
            None => {
                // One more octet is allowed for a CR whose LF has not arrived yet.
                if self.discarding || unread.len() > self.max_line.saturating_add(1) {
                    self.discarding = true;
                    self.buf.clear();
                    self.pos = 0;
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_wait_for_their_end() {
        let mut input = InputBuffer::new(10);
        input.push(b"NOOP\r");
        assert_eq!(input.next_line(), None);
        input.push(b"\nQUIT\nRS");
        assert_eq!(input.next_line(), Some(Line::Text(b"NOOP".to_vec())));
        assert_eq!(input.next_line(), Some(Line::Text(b"QUIT".to_vec())));
        assert_eq!(input.next_line(), None);
        assert_eq!(input.unread(), b"RS");
    }

    #[test]
    fn long_lines_are_dropped_as_they_arrive() {
        let mut input = InputBuffer::new(4);
        input.push(b"1234\r\n12345\r\n");
        assert_eq!(input.next_line(), Some(Line::Text(b"1234".to_vec())));
        assert_eq!(input.next_line(), Some(Line::TooLong));
        for _ in 0..1000 {
            input.push(b"xxxxxxxx");
            assert_eq!(input.next_line(), None);
            assert!(input.len() <= 8);
        }
        input.push(b"x\r\nok\r\n");
        assert_eq!(input.next_line(), Some(Line::TooLong));
        assert_eq!(input.next_line(), Some(Line::Text(b"ok".to_vec())));
    }
}
