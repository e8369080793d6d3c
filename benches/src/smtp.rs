//! An SMTP (and LMTP) client just big enough for the benchmark: one connection, many
//! transactions, each MAIL, RCPT, DATA in turn (no pipelining, so both servers see the same
//! round trips).

use anyhow::{Result, bail};

use crate::wire::{Conn, Endpoint, shown};

/// The protocol spoken: LMTP fills a peer's mailboxes directly, without Postfix's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Smtp,
    Lmtp,
}

pub struct Client {
    conn: Conn,
}

impl Client {
    /// Connects, reads the greeting and says EHLO (LHLO).
    pub async fn connect(endpoint: &Endpoint, dialect: Dialect) -> Result<Client> {
        let mut client = Client {
            conn: endpoint.connect().await?,
        };
        client.expect(b'2', "greeting").await?;
        let hello: &[u8] = match dialect {
            Dialect::Smtp => b"EHLO bench.example.org\r\n",
            Dialect::Lmtp => b"LHLO bench.example.org\r\n",
        };
        client.conn.send(hello).await?;
        client.expect(b'2', "EHLO").await?;
        Ok(client)
    }

    /// One transaction: `message` (already CRLF-terminated lines, no line starting with a dot)
    /// to `to`. Returns once the server has said 250 to the data: for dirmail the message is
    /// then in the Maildir and fsynced (R18), for Postfix in its queue and fsynced.
    pub async fn send(&mut self, from: &str, to: &str, message: &[u8]) -> Result<()> {
        self.conn
            .send(format!("MAIL FROM:<{from}>\r\n").as_bytes())
            .await?;
        self.expect(b'2', "MAIL").await?;
        self.conn
            .send(format!("RCPT TO:<{to}>\r\n").as_bytes())
            .await?;
        self.expect(b'2', "RCPT").await?;
        self.conn.send(b"DATA\r\n").await?;
        self.expect(b'3', "DATA").await?;
        self.conn.send_parts(message, b".\r\n").await?;
        self.expect(b'2', "the message").await?;
        Ok(())
    }

    /// AUTH PLAIN (RFC 4954) with `user` and `password`, as a submission client logs in.
    pub async fn login(&mut self, user: &str, password: &str) -> Result<()> {
        let token = base64(format!("\0{user}\0{password}").as_bytes());
        self.conn
            .send(format!("AUTH PLAIN {token}\r\n").as_bytes())
            .await?;
        self.expect(b'2', "AUTH").await
    }

    pub async fn quit(mut self) -> Result<()> {
        self.conn.send(b"QUIT\r\n").await?;
        self.expect(b'2', "QUIT").await?;
        self.conn.shutdown().await;
        Ok(())
    }

    /// Reads a whole reply (continuation lines have `-` after the code) and checks its class.
    async fn expect(&mut self, class: u8, what: &str) -> Result<()> {
        loop {
            let line = self.conn.read_line().await?;
            if line.len() < 4 || !line[..3].iter().all(u8::is_ascii_digit) {
                bail!("{what}: not an SMTP reply: {}", shown(line));
            }
            if line[0] != class {
                bail!("{what}: {}", shown(line));
            }
            if line[3] != b'-' {
                return Ok(());
            }
        }
    }
}

/// A message of exactly `size` bytes: a few headers and a body of 76-column lines, CRLF
/// throughout, no line starting with a dot. The same bytes go to every server.
pub fn message(size: usize) -> Vec<u8> {
    let mut text = b"From: Benchmark <bench@example.org>\r\n\
To: undisclosed-recipients:;\r\n\
Subject: dirmail load generator\r\n\
Date: Sun, 22 Nov 2026 06:16:22 +0000\r\n\
Message-ID: <loadgen@bench.example.org>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        .to_vec();
    let line = b"The quick brown fox jumps over the lazy dog; 0123456789 abcdefghijklmnopqrs\r\n";
    while text.len() + line.len() <= size {
        text.extend_from_slice(line);
    }
    // Pad so the total is exact: a last line of x's, or one more x on the last line.
    match size.saturating_sub(text.len()) {
        0 => {}
        1 => {
            let before_crlf = text.len() - 2;
            text.insert(before_crlf, b'x');
        }
        left => {
            text.extend(std::iter::repeat_n(b'x', left - 2));
            text.extend_from_slice(b"\r\n");
        }
    }
    text
}

/// Standard base64 with padding (RFC 4648), for AUTH PLAIN's one short token.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_asked_size_and_crlf_lines() {
        for size in [1024, 4096, 4097, 4098, 4099, 10_000] {
            let m = message(size);
            assert_eq!(m.len(), size);
            assert!(m.ends_with(b"\r\n"));
            for line in m.split(|&b| b == b'\n') {
                assert!(!line.starts_with(b"."));
                assert!(line.is_empty() || line.ends_with(b"\r"));
            }
        }
    }

    #[test]
    fn base64_matches_rfc_4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
