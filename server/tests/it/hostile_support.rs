//! Helpers for the hostile-input batteries (`hostile_smtp.rs`, `hostile_pop3.rs`,
//! `hostile_imap.rs`): a real `dirmail serve` whose log is kept in a file
//! ([`Server::start_logged`]), raw line clients with bounded waits (in clear or, after STARTTLS,
//! inside TLS), and a client bound to another loopback address.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::common::{Server, dirmail};

/// How long any single wait for the server may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

pub const PASSWORD: &str = "Bob-pw1-secret";
pub const CAROL_PASSWORD: &str = "Carol-pw2-secret";

/// Turns the plain IMAP listener on (port 0); [`Rig::start`] leaves it off.
pub const IMAP_ON: &str = "[imap]\nport = 0\n";

/// A scratch store with `example.jp`, `bob@` and `carol@`, and a `dirmail.toml` that puts
/// every SMTP and POP3 listener on port 0 (IMAP off unless `extra` has [`IMAP_ON`]), lets
/// passwords cross loopback in clear, and adds `extra`.
pub struct Rig {
    pub dir: tempfile::TempDir,
    pub server: Server,
}

impl Rig {
    pub fn start(extra: &str) -> Rig {
        Rig::start_under(&[], extra)
    }

    /// [`Rig::start`] with the server run through `wrapper` ([`Server::start_logged_under`]).
    pub fn start_under(wrapper: &[&str], extra: &str) -> Rig {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = format!(
            "[server]\nhostname = \"mail.example.jp\"\nlogging = 2\n\
             [smtp]\nport = 0\nsubmission_port = 0\nsmtps_port = false\nmax_message_size = \"64KB\"\n\
             [pop3]\nport = 0\npop3s_port = false\n[imap]\nport = false\nimaps_port = false\n\
             [tls]\nplaintext_auth = \"loopback\"\n{extra}"
        );
        let config = merge_tables(&config);
        std::fs::write(dir.path().join("dirmail.toml"), config).expect("write dirmail.toml");
        admin(dir.path(), &["add", "example.jp"]);
        admin(
            dir.path(),
            &["add", "bob@example.jp", "--create-user", PASSWORD],
        );
        admin(
            dir.path(),
            &["add", "carol@example.jp", "--create-user", CAROL_PASSWORD],
        );
        let server = if wrapper.is_empty() {
            Server::start_logged(dir.path())
        } else {
            Server::start_logged_under(dir.path(), wrapper)
        };
        Rig { dir, server }
    }

    /// [`Rig::start`] with the plain IMAP listener on as well.
    pub fn with_imap(extra: &str) -> Rig {
        Rig::start(&format!("{IMAP_ON}{extra}"))
    }

    pub fn port(&self, name: &str) -> u16 {
        self.server.port(name)
    }

    /// The store's self-signed certificate, the only root a TLS client here trusts.
    pub fn certificate(&self) -> PathBuf {
        self.dir.path().join("dirmail-data/tls/cert.pem")
    }

    /// Messages in `name@example.jp`'s `new/`.
    pub fn delivered(&self, name: &str) -> Vec<Vec<u8>> {
        let new = self
            .dir
            .path()
            .join("dirmail-data/mail/example.jp")
            .join(name)
            .join("new");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&new)
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .map(|f| std::fs::read(f).expect("read a message"))
            .collect()
    }
}

/// Keys given again in a later `[table]` of the same name replace the earlier ones, so a test
/// can add or override `[smtp]` or `[limits]` keys without repeating a table (TOML refuses).
pub(crate) fn merge_tables(text: &str) -> String {
    let mut tables: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut current = 0;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with('[') {
            current = match tables.iter().position(|(name, _)| name == line) {
                Some(i) => i,
                None => {
                    tables.push((line.to_owned(), Vec::new()));
                    tables.len() - 1
                }
            };
            continue;
        }
        let key = line.split('=').next().unwrap_or(line).trim().to_owned();
        let Some((_, keys)) = tables.get_mut(current) else {
            panic!("a key before any [table]: {line}");
        };
        match keys.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = line.to_owned(),
            None => keys.push((key, line.to_owned())),
        }
    }
    let mut out = String::new();
    for (name, keys) in tables {
        out.push_str(&name);
        out.push('\n');
        for (_, line) in keys {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

fn admin(dir: &Path, args: &[&str]) {
    let out = dirmail(dir, args);
    assert!(
        out.status.success(),
        "dirmail {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A line client: writes what it is told, reads replies with a bounded wait.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
        Client::over(stream)
    }

    /// Connects from `source`, another loopback address (127.0.0.2, …), to 127.0.0.1.
    pub fn connect_from(source: Ipv4Addr, port: u16) -> Client {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("a runtime to make the socket");
        let stream = runtime
            .block_on(async {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
                let stream = socket
                    .connect(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port))
                    .await?;
                stream.into_std()
            })
            .expect("connect from another loopback address");
        stream.set_nonblocking(false).expect("blocking");
        Client::over(stream)
    }

    fn over(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(WAIT)).expect("read timeout");
        stream.set_write_timeout(Some(WAIT)).expect("write timeout");
        let writer = stream.try_clone().expect("clone the socket");
        Client {
            reader: BufReader::new(stream),
            writer,
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.writer
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write to the server");
    }

    /// One line, with its line ending; empty at the end of the stream.
    pub fn line(&mut self) -> String {
        let mut raw = Vec::new();
        match self.reader.read_until(b'\n', &mut raw) {
            Ok(_) => String::from_utf8_lossy(&raw).into_owned(),
            Err(e) => panic!("no reply within {WAIT:?}: {e}"),
        }
    }

    /// One SMTP reply, every line of it; empty when the server closed.
    pub fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let line = self.line();
            if line.is_empty() {
                return all;
            }
            let bytes = line.as_bytes();
            assert!(
                bytes.len() >= 6
                    && bytes[..3].iter().all(u8::is_ascii_digit)
                    && matches!(bytes[3], b' ' | b'-')
                    && line.ends_with("\r\n"),
                "not an SMTP reply line: {line:?}"
            );
            all.push_str(&line);
            if bytes[3] == b' ' {
                return all;
            }
        }
    }

    /// Sends `line` CRLF and returns the SMTP reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Sends `line` CRLF and returns the one-line POP3 reply.
    pub fn pop(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.pop_line()
    }

    /// One POP3 status line (`+OK`, `-ERR` or `+ `), checked for its form.
    pub fn pop_line(&mut self) -> String {
        let line = self.line();
        assert!(
            line.is_empty()
                || (line.ends_with("\r\n")
                    && (line.starts_with("+OK")
                        || line.starts_with("-ERR ")
                        || line.starts_with("+ "))),
            "not a POP3 reply: {line:?}"
        );
        line
    }

    /// The body of a multi-line POP3 reply, up to its `.` line.
    pub fn pop_body(&mut self) -> String {
        let mut body = String::new();
        loop {
            let line = self.line();
            assert!(
                !line.is_empty(),
                "the server closed inside a multi-line reply"
            );
            if line == ".\r\n" {
                return body;
            }
            body.push_str(&line);
        }
    }

    /// One IMAP response (see [`read_imap_response`]); empty when the server closed.
    pub fn imap_response(&mut self) -> String {
        read_imap_response(&mut self.reader)
    }

    /// Every response up to and including the one tagged `tag`; stops early (short of the
    /// tagged one) when the server closes.
    pub fn imap_until(&mut self, tag: &str) -> String {
        imap_until(&mut self.reader, tag)
    }

    /// Sends `line` CRLF and returns the responses up to the one tagged with its first word.
    /// (Not for a command the server answers with `+`: use [`Client::send`] and
    /// [`Client::imap_response`].)
    pub fn imap(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.imap_until(line.split(' ').next().unwrap_or(line))
    }

    /// True when more of the server's output has already arrived: a reply that came in the
    /// same write as the one just read (a refusal and the `421` after it), or the end.
    pub fn has_more(&mut self) -> bool {
        if !self.reader.buffer().is_empty() {
            return true;
        }
        let stream = self.reader.get_ref();
        stream.set_nonblocking(true).expect("non-blocking");
        let mut byte = [0u8; 1];
        let more = !matches!(stream.peek(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock);
        stream.set_nonblocking(false).expect("blocking");
        more
    }

    /// True when the server closes the connection (within the wait), after any last words.
    pub fn closes(&mut self) -> bool {
        let mut sink = [0u8; 4096];
        loop {
            match self.reader.read(&mut sink) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }

    /// Writes `chunk` again and again until the server stops taking it (a write blocks for
    /// `patience`) or `limit` octets went out; returns how many did.
    pub fn push_until_blocked(&mut self, chunk: &[u8], limit: usize, patience: Duration) -> usize {
        self.writer
            .set_write_timeout(Some(patience))
            .expect("write timeout");
        let mut sent = 0;
        while sent < limit {
            match self.writer.write(chunk) {
                Ok(n) => sent += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) => panic!("the server dropped the connection: {e}"),
            }
        }
        self.writer
            .set_write_timeout(Some(WAIT))
            .expect("write timeout");
        sent
    }
}

/// The octet count of the literal a response line ends with (`{n}` CRLF).
fn literal_length(line: &[u8]) -> Option<usize> {
    let head = line.strip_suffix(b"}\r\n")?;
    let open = head.iter().rposition(|&b| b == b'{')?;
    let digits = head.get(open + 1..)?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// One IMAP response: a line and, each time a line ends in `{n}`, the n octets of the literal
/// and the line that goes on after it. Empty when the stream ended before it; checked for its
/// form (`*`, `+` or a tag first, CRLF last).
pub fn read_imap_response(reader: &mut impl BufRead) -> String {
    let mut all = Vec::new();
    loop {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line) {
            Ok(_) => {}
            Err(e) => panic!("no reply within {WAIT:?}: {e}"),
        }
        if line.is_empty() {
            assert!(
                all.is_empty(),
                "the server closed inside a response: {:?}",
                String::from_utf8_lossy(&all)
            );
            return String::new();
        }
        assert!(
            line.ends_with(b"\r\n"),
            "not a whole IMAP response line: {:?}",
            String::from_utf8_lossy(&line)
        );
        all.extend_from_slice(&line);
        let Some(n) = literal_length(&line) else {
            break;
        };
        let mut literal = vec![0u8; n];
        if let Err(e) = reader.read_exact(&mut literal) {
            panic!("a literal of {n} octets did not arrive within {WAIT:?}: {e}");
        }
        all.extend(literal);
    }
    assert!(
        all.first()
            .is_some_and(|&b| b == b'*' || b == b'+' || b.is_ascii_alphanumeric()),
        "not an IMAP response: {:?}",
        String::from_utf8_lossy(&all)
    );
    String::from_utf8_lossy(&all).into_owned()
}

/// Responses from `reader` up to and including the one tagged `tag` (fewer if it closes).
pub fn imap_until(reader: &mut impl BufRead, tag: &str) -> String {
    let tagged = format!("{tag} ");
    let mut all = String::new();
    loop {
        let response = read_imap_response(reader);
        if response.is_empty() {
            return all;
        }
        all.push_str(&response);
        if response.starts_with(&tagged) {
            return all;
        }
    }
}

/// A client whose connection went into TLS after STARTTLS (or STLS).
pub struct TlsClient {
    reader: BufReader<StreamOwned<ClientConnection, TcpStream>>,
}

impl TlsClient {
    /// The TLS handshake on `client`'s connection, trusting only the certificate in `ca` and
    /// checking it names `localhost`. The server must not have said anything after its reply
    /// to STARTTLS.
    pub fn handshake(client: Client, ca: &Path) -> TlsClient {
        assert!(
            client.reader.buffer().is_empty(),
            "the server said more in clear text before the handshake: {:?}",
            String::from_utf8_lossy(client.reader.buffer())
        );
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).expect("read the server's certificate") {
            roots
                .add(cert.expect("a certificate"))
                .expect("a root certificate");
        }
        let config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        let name = ServerName::try_from("localhost").expect("a server name");
        let connection = ClientConnection::new(Arc::new(config), name).expect("a TLS client");
        let mut tls = StreamOwned::new(connection, client.writer);
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .expect("the TLS handshake");
        }
        while tls.conn.wants_write() {
            tls.conn
                .write_tls(&mut tls.sock)
                .expect("the TLS handshake");
        }
        TlsClient {
            reader: BufReader::new(tls),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        let stream = self.reader.get_mut();
        stream.write_all(bytes).expect("write inside TLS");
        stream.flush().expect("write inside TLS");
    }

    /// Sends `line` CRLF and returns the IMAP responses up to the one tagged with its first word.
    pub fn imap(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        imap_until(&mut self.reader, line.split(' ').next().unwrap_or(line))
    }
}

/// The reply starts with `prefix` (e.g. `250 2.0.0`).
#[track_caller]
pub fn expect(reply: &str, prefix: &str) {
    assert!(
        reply.lines().last().is_some_and(|l| l.starts_with(prefix)),
        "expected {prefix:?}, got {reply:?}"
    );
}

/// A well-behaved SMTP client delivers one message to bob, start to finish.
#[track_caller]
pub fn smtp_still_serves(port: u16) {
    let mut c = Client::connect(port);
    expect(&c.reply(), "220");
    expect(&c.cmd("EHLO fresh.example"), "250");
    expect(&c.cmd("MAIL FROM:<fresh@client.example>"), "250");
    expect(&c.cmd("RCPT TO:<bob@example.jp>"), "250");
    expect(&c.cmd("DATA"), "354");
    expect(
        &c.cmd("Subject: still here\r\n\r\nA fresh client is served.\r\n."),
        "250 2.0.0",
    );
    expect(&c.cmd("QUIT"), "221");
}

/// A well-behaved POP3 client logs in as carol, lists, and quits.
#[track_caller]
pub fn pop3_still_serves(port: u16) {
    let mut c = Client::connect(port);
    assert!(c.pop_line().starts_with("+OK"));
    assert!(c.pop("USER carol@example.jp").starts_with("+OK"));
    let pass = c.pop(&format!("PASS {CAROL_PASSWORD}"));
    assert!(pass.starts_with("+OK"), "{pass}");
    assert!(c.pop("STAT").starts_with("+OK"));
    assert!(c.pop("QUIT").starts_with("+OK"));
}

/// A well-behaved IMAP client logs in as carol, selects INBOX, and logs out.
#[track_caller]
pub fn imap_still_serves(port: u16) {
    let mut c = Client::connect(port);
    expect(&c.imap_response(), "* OK");
    expect(
        &c.imap(&format!("z1 LOGIN carol@example.jp {CAROL_PASSWORD}")),
        "z1 OK",
    );
    expect(&c.imap("z2 SELECT INBOX"), "z2 OK [READ-WRITE]");
    let bye = c.imap("z3 LOGOUT");
    assert!(bye.starts_with("* BYE"), "{bye:?}");
    expect(&bye, "z3 OK");
}

/// Waits (bounded) until `check` holds, retrying every 50 ms.
#[track_caller]
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
