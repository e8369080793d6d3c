//! Talking to the server as a client does: TCP to a listener, TLS with rustls (at once, or
//! after STARTTLS/STLS), raw bytes out, replies framed the way each protocol frames them.
//!
//! Every read has a deadline, so a server that says nothing fails the step instead of hanging
//! the suite. The framing is pure ([`reply_len`]) and tested without a socket.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::scenario::{Protocol, Replies, ReplyChecks};

/// How long a reply (or the end of a connection) may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long nothing must arrive for `expect_quiet`.
pub const QUIET_FOR: Duration = Duration::from_millis(500);

/// The name the server's certificate is checked against (its self-signed one names it).
const SERVER_NAME: &str = "localhost";

/// How many transcript lines a failure shows.
const TRANSCRIPT_TAIL: usize = 60;

/// The byte length of the first complete reply at the start of `buf`, or `None` when more
/// bytes are needed.
///
/// SMTP: lines up to the first whose fourth byte is not `-` (`250-…` goes on, `250 …` ends).
/// POP3: one line; with `multiline`, a `+OK` line opens a block that ends at a line `.`.
pub fn reply_len(buf: &[u8], protocol: Protocol, multiline: bool) -> Option<usize> {
    let mut offset = 0;
    let mut first = true;
    while let Some(end) = buf[offset..].iter().position(|&b| b == b'\n') {
        let line = &buf[offset..offset + end + 1];
        offset += end + 1;
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let done = match protocol {
            Protocol::Smtp => text.get(3) != Some(&b'-'),
            Protocol::Pop3 if first => !(multiline && text.starts_with(b"+OK")),
            Protocol::Pop3 => text == b".",
        };
        if done {
            return Some(offset);
        }
        first = false;
    }
    None
}

/// Every problem with `replies` against what `spec` expects.
pub fn check_replies(spec: &Replies, replies: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, (want, reply)) in spec.each.iter().zip(replies).enumerate() {
        if !reply.starts_with(want.as_str()) {
            problems.push(format!(
                "reply {} should begin with {want:?}, but is {}",
                i + 1,
                shown(reply)
            ));
        }
    }
    if let (Some(want), Some(reply)) = (&spec.last, replies.last())
        && !reply.starts_with(want.as_str())
    {
        let which = if replies.len() > 1 {
            "the last reply"
        } else {
            "the reply"
        };
        problems.push(format!(
            "{which} should begin with {want:?}, but is {}",
            shown(reply)
        ));
    }
    problems.extend(check_text(&spec.checks, &replies.concat(), "the replies"));
    problems
}

/// `contains`/`lacks` over `text`; `what` names it in the messages.
pub fn check_text(checks: &ReplyChecks, text: &str, what: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for needle in &checks.contains {
        if !text.contains(needle.as_str()) {
            problems.push(format!("{what} should contain {needle:?}: {}", shown(text)));
        }
    }
    for needle in &checks.lacks {
        if text.contains(needle.as_str()) {
            problems.push(format!(
                "{what} should not contain {needle:?}: {}",
                shown(text)
            ));
        }
    }
    problems
}

/// Text as a reader can see it: one quoted string, control characters escaped.
pub fn shown(text: &str) -> String {
    format!("\"{}\"", escape(text))
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The lines of a transcript for `bytes` sent (`C:`) or received (`S:`): CRLF ends a line
/// silently, any other line break is shown, since that is what smuggling tests are about.
fn transcript_lines(prefix: &str, bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    text.split_inclusive("\r\n")
        .map(|line| {
            let line = line.strip_suffix("\r\n").unwrap_or(line);
            format!("{prefix} {}", escape(line))
        })
        .collect()
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => &tls.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.read(buf),
            Stream::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.write(buf),
            Stream::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.flush(),
            Stream::Tls(tls) => tls.flush(),
        }
    }
}

/// What a read came to.
enum Got {
    Bytes,
    /// The peer closed (cleanly, by reset, or TLS without `close_notify`).
    End,
    /// The deadline passed.
    Nothing,
}

/// One open connection of a scenario.
pub struct Conn {
    pub listener: String,
    pub protocol: Protocol,
    stream: Stream,
    /// Bytes read and not yet part of a reply.
    pending: Vec<u8>,
    transcript: Vec<String>,
}

impl Conn {
    /// Connects to `127.0.0.1:port`; with `implicit_tls`, does the handshake at once.
    pub fn open(
        listener: &str,
        protocol: Protocol,
        port: u16,
        implicit_tls: bool,
        ca: &Path,
    ) -> Result<Conn, String> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let tcp = TcpStream::connect_timeout(&addr, READ_TIMEOUT)
            .map_err(|e| format!("cannot connect to {listener} at {addr}: {e}"))?;
        tcp.set_write_timeout(Some(READ_TIMEOUT))
            .and_then(|()| tcp.set_nodelay(true))
            .map_err(|e| format!("cannot set up the socket: {e}"))?;
        let mut conn = Conn {
            listener: listener.to_owned(),
            protocol,
            stream: Stream::Plain(tcp),
            pending: Vec::new(),
            transcript: vec![format!("-- connected to {listener} at {addr}")],
        };
        if implicit_tls {
            conn.start_tls(ca)?;
        }
        Ok(conn)
    }

    /// The last lines said on this connection.
    pub fn transcript(&self) -> String {
        let skip = self.transcript.len().saturating_sub(TRANSCRIPT_TAIL);
        let mut text = String::new();
        if skip > 0 {
            text.push_str(&format!("… {skip} earlier lines\n"));
        }
        for line in &self.transcript[skip..] {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// Sends `bytes` exactly as given.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.transcript.extend(transcript_lines("C:", bytes));
        self.stream
            .write_all(bytes)
            .and_then(|()| self.stream.flush())
            .map_err(|e| format!("cannot send: {e}"))
    }

    /// Reads one more chunk into `pending`, waiting until `deadline` at most.
    fn fill(&mut self, deadline: Instant) -> Result<Got, String> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Got::Nothing);
        }
        self.stream
            .tcp()
            .set_read_timeout(Some(left))
            .map_err(|e| format!("cannot set a read timeout: {e}"))?;
        let mut chunk = [0; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => Ok(Got::End),
            Ok(n) => {
                self.pending.extend_from_slice(&chunk[..n]);
                Ok(Got::Bytes)
            }
            Err(e) => match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Ok(Got::Nothing),
                io::ErrorKind::Interrupted => Ok(Got::Bytes),
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof => Ok(Got::End),
                _ => Err(format!("cannot read: {e}")),
            },
        }
    }

    /// Reads one reply, framed for this connection's protocol.
    pub fn read_reply(&mut self, multiline: bool) -> Result<String, String> {
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            if let Some(len) = reply_len(&self.pending, self.protocol, multiline) {
                let reply: Vec<u8> = self.pending.drain(..len).collect();
                self.transcript.extend(transcript_lines("S:", &reply));
                return Ok(String::from_utf8_lossy(&reply).into_owned());
            }
            let got = self.fill(deadline)?;
            let partial = || shown(&String::from_utf8_lossy(&self.pending));
            match got {
                Got::Bytes => {}
                Got::End => {
                    let message = format!(
                        "the server closed the connection before a whole reply; it sent {}",
                        partial()
                    );
                    self.transcript.push("-- closed by the server".into());
                    return Err(message);
                }
                Got::Nothing => {
                    return Err(format!(
                        "no whole reply within {} s; the server sent {}",
                        READ_TIMEOUT.as_secs(),
                        partial()
                    ));
                }
            }
        }
    }

    /// Reads `spec.count` replies.
    pub fn read_replies(&mut self, spec: &Replies) -> Result<Vec<String>, String> {
        if spec.multiline && self.protocol != Protocol::Pop3 {
            return Err("`multiline` is for POP3; SMTP replies frame themselves".into());
        }
        let mut replies = Vec::with_capacity(spec.count);
        for i in 0..spec.count {
            match self.read_reply(spec.multiline) {
                Ok(reply) => replies.push(reply),
                Err(e) if spec.count > 1 => {
                    return Err(format!("reply {} of {}: {e}", i + 1, spec.count));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(replies)
    }

    /// Nothing may arrive for `window` (a pipelined command the server should have dropped
    /// would be answered by now).
    pub fn expect_quiet(&mut self, window: Duration) -> Result<(), String> {
        let deadline = Instant::now() + window;
        while self.pending.is_empty() {
            match self.fill(deadline)? {
                Got::Nothing => return Ok(()),
                Got::End => {
                    self.transcript.push("-- closed by the server".into());
                    return Err("expected silence, but the server closed the connection".into());
                }
                Got::Bytes => {}
            }
        }
        let extra = std::mem::take(&mut self.pending);
        self.transcript.extend(transcript_lines("S:", &extra));
        Err(format!(
            "expected silence, but the server sent {}",
            shown(&String::from_utf8_lossy(&extra))
        ))
    }

    /// Waits for the server to close the connection; returns what it sent before.
    pub fn wait_closed(&mut self) -> Result<String, String> {
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            match self.fill(deadline)? {
                Got::Bytes => {}
                Got::End => break,
                Got::Nothing => {
                    let pending = shown(&String::from_utf8_lossy(&self.pending));
                    return Err(format!(
                        "the server did not close the connection within {} s; it sent {pending}",
                        READ_TIMEOUT.as_secs()
                    ));
                }
            }
        }
        let before = std::mem::take(&mut self.pending);
        self.transcript.extend(transcript_lines("S:", &before));
        self.transcript.push("-- closed by the server".into());
        Ok(String::from_utf8_lossy(&before).into_owned())
    }

    /// The TLS handshake on this connection, trusting only the certificate in `ca` and
    /// checking it names `localhost`.
    pub fn start_tls(&mut self, ca: &Path) -> Result<(), String> {
        let Stream::Plain(tcp) = &self.stream else {
            return Err("TLS is already on".into());
        };
        if !self.pending.is_empty() {
            let extra = shown(&String::from_utf8_lossy(&self.pending));
            return Err(format!(
                "the server sent more in clear text before the handshake: {extra}"
            ));
        }
        let config = client_config(ca)?;
        let name = ServerName::try_from(SERVER_NAME).map_err(|e| e.to_string())?;
        let client = ClientConnection::new(config, name).map_err(|e| format!("TLS: {e}"))?;
        // The same socket under a second descriptor: the plain one is dropped once TLS is on.
        let tcp = tcp
            .try_clone()
            .and_then(|tcp| tcp.set_read_timeout(Some(READ_TIMEOUT)).map(|()| tcp))
            .map_err(|e| format!("cannot set up the socket for TLS: {e}"))?;
        let mut tls = StreamOwned::new(client, tcp);
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
        }
        // Our last handshake message may still be queued; the server waits for it.
        while tls.conn.wants_write() {
            tls.conn
                .write_tls(&mut tls.sock)
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
        }
        let version = tls
            .conn
            .protocol_version()
            .map_or_else(|| "?".to_owned(), |v| format!("{v:?}"));
        self.transcript.push(format!("-- TLS on ({version})"));
        self.stream = Stream::Tls(Box::new(tls));
        Ok(())
    }
}

/// A client configuration whose only root is the store's certificate.
fn client_config(ca: &Path) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("cannot read the server certificate {}: {e}", ca.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smtp(buf: &str) -> Option<usize> {
        reply_len(buf.as_bytes(), Protocol::Smtp, false)
    }

    fn pop3(buf: &str, multiline: bool) -> Option<usize> {
        reply_len(buf.as_bytes(), Protocol::Pop3, multiline)
    }

    #[test]
    fn smtp_replies_end_at_a_line_without_a_dash() {
        assert_eq!(smtp("220 mail.example.jp ESMTP\r\n"), Some(27));
        assert_eq!(smtp("250-mail.example.jp\r\n250-PIPELINING\r\n"), None);
        let ehlo = "250-mail.example.jp\r\n250-PIPELINING\r\n250 HELP\r\n";
        assert_eq!(smtp(ehlo), Some(ehlo.len()));
        // Pipelined replies: only the first is taken.
        assert_eq!(smtp("250 2.1.0 OK\r\n250 2.1.5 OK\r\n"), Some(14));
        assert_eq!(smtp("250 2.1.0 O"), None);
        assert_eq!(smtp(""), None);
        // A bare code and a bare-LF line still end a reply.
        assert_eq!(smtp("250\r\n"), Some(5));
        assert_eq!(smtp("250 ok\n"), Some(7));
    }

    #[test]
    fn pop3_replies_are_one_line_or_a_dotted_block() {
        assert_eq!(pop3("+OK ready\r\n", false), Some(11));
        assert_eq!(pop3("+OK ready\r\n", true), None);
        let list = "+OK 2 messages\r\n1 120\r\n2 200\r\n.\r\n";
        assert_eq!(pop3(list, true), Some(list.len()));
        assert_eq!(pop3(&list[..list.len() - 3], true), None);
        // A byte-stuffed line is not the end.
        let retr = "+OK\r\n..not the end\r\n.\r\n+OK next\r\n";
        assert_eq!(pop3(retr, true), Some(retr.len() - 10));
        // An error never has a block.
        assert_eq!(pop3("-ERR [IN-USE] busy\r\n", true), Some(20));
        assert_eq!(pop3("+ \r\n", false), Some(4));
    }

    fn replies(each: &[&str], last: Option<&str>, contains: &[&str], lacks: &[&str]) -> Replies {
        Replies {
            count: each.len().max(1),
            multiline: false,
            each: each.iter().map(|s| s.to_string()).collect(),
            last: last.map(String::from),
            checks: ReplyChecks {
                contains: contains.iter().map(|s| s.to_string()).collect(),
                lacks: lacks.iter().map(|s| s.to_string()).collect(),
            },
        }
    }

    #[test]
    fn replies_are_checked_by_prefix_and_substring() {
        let got = [
            "250 2.1.0 Sender OK\r\n".to_owned(),
            "550 5.7.1 Unable to relay\r\n".to_owned(),
        ];
        assert!(
            check_replies(
                &replies(&["250", "550 5.7.1"], Some("5"), &["relay"], &["235"]),
                &got
            )
            .is_empty()
        );
        let problems = check_replies(
            &replies(&["250", "250"], Some("250"), &["AUTH"], &["relay"]),
            &got,
        );
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            problems[0].starts_with("reply 2 should begin with \"250\""),
            "{problems:?}"
        );
        assert!(problems[1].starts_with("the last reply should begin with \"250\""));
        assert!(problems[2].contains("should contain \"AUTH\""));
        assert!(problems[3].contains("should not contain \"relay\""));
        assert!(problems[3].contains("Unable to relay\\r\\n"));
    }

    #[test]
    fn transcripts_show_bare_line_breaks() {
        assert_eq!(
            transcript_lines("C:", b"DATA\r\nSubject: x\nbody\r\n.\r\n"),
            ["C: DATA", "C: Subject: x\\nbody", "C: ."]
        );
        assert_eq!(transcript_lines("S:", b"250 ok\r\n"), ["S: 250 ok"]);
        assert_eq!(transcript_lines("C:", b"x\r.\r"), ["C: x\\r.\\r"]);
    }

    /// A scripted server on loopback: it runs `script` on the accepted connection.
    fn fake_server(
        script: impl FnOnce(TcpStream) + Send + 'static,
    ) -> (u16, std::thread::JoinHandle<()>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            script(stream);
        });
        (port, handle)
    }

    #[test]
    fn a_connection_reads_replies_in_pieces_and_sees_the_close() {
        let (port, server) = fake_server(|mut s| {
            s.write_all(b"220 ready\r\n").unwrap();
            let mut buf = [0; 64];
            let n = s.read(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"EHLO x\r\nNOOP\r\n");
            // A multi-line reply split mid-line, and the next reply in the same write.
            s.write_all(b"250-hello\r\n250-PIPE").unwrap();
            std::thread::sleep(Duration::from_millis(50));
            s.write_all(b"LINING\r\n250 HELP\r\n250 ok\r\n221 bye\r\n")
                .unwrap();
        });
        let ca = Path::new("/nonexistent");
        let mut conn = Conn::open("smtp", Protocol::Smtp, port, false, ca).unwrap();
        assert_eq!(conn.read_reply(false).unwrap(), "220 ready\r\n");
        conn.send(b"EHLO x\r\nNOOP\r\n").unwrap();
        let spec = Replies {
            count: 2,
            multiline: false,
            each: vec!["250".into(), "250 ok".into()],
            last: None,
            checks: ReplyChecks::default(),
        };
        let replies = conn.read_replies(&spec).unwrap();
        assert_eq!(replies[0], "250-hello\r\n250-PIPELINING\r\n250 HELP\r\n");
        assert!(check_replies(&spec, &replies).is_empty());
        // What is left before the close is handed back.
        assert_eq!(conn.wait_closed().unwrap(), "221 bye\r\n");
        server.join().unwrap();
        let transcript = conn.transcript();
        assert!(
            transcript.contains("C: NOOP\nS: 250-hello\nS: 250-PIPELINING\n"),
            "{transcript}"
        );
        assert!(
            transcript.ends_with("S: 221 bye\n-- closed by the server\n"),
            "{transcript}"
        );
    }

    #[test]
    fn silence_and_early_closes_are_reported() {
        let (port, server) = fake_server(|mut s| {
            s.write_all(b"+OK hi\r\n").unwrap();
            let mut buf = [0; 64];
            let _ = s.read(&mut buf).unwrap();
            s.write_all(b"+OK capa\r\nTOP\r\n").unwrap();
        });
        let ca = Path::new("/nonexistent");
        let mut conn = Conn::open("pop3", Protocol::Pop3, port, false, ca).unwrap();
        assert_eq!(conn.read_reply(false).unwrap(), "+OK hi\r\n");
        assert!(conn.expect_quiet(Duration::from_millis(100)).is_ok());
        conn.send(b"CAPA\r\n").unwrap();
        let err = conn.read_reply(true).unwrap_err();
        assert!(
            err.contains("closed the connection before a whole reply"),
            "{err}"
        );
        assert!(err.contains("TOP\\r\\n"), "{err}");
        server.join().unwrap();
        // TLS against a missing certificate file says which file.
        let (port, server) = fake_server(|_| {});
        let err = Conn::open("pop3s", Protocol::Pop3, port, true, ca)
            .err()
            .unwrap();
        assert!(err.contains("/nonexistent"), "{err}");
        server.join().unwrap();
    }
}
