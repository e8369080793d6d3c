//! Test fixture: a real DNS server on loopback serving the records a test gives it (dnsmasq,
//! from Debian's `dnsmasq-base`), and a tiny responder that answers every question with one
//! error code (SERVFAIL), for the failures dnsmasq will not make on purpose.
//!
//! A crate of its own, beside `samba-dc`, rather than a module in one crate's `tests/`: the
//! routing tests of `dirmail-outbound` use it now, and the delivery tests of `server/tests/it`
//! and the conformance runner will use it later; a test module cannot be shared across
//! crates. It depends on nothing but std and `tempfile`.
//!
//! Each [`DnsServer`] runs its own dnsmasq, with its own configuration file in its own
//! temporary directory, on a free port of 127.0.0.1 (UDP and TCP), and kills that process (by
//! its id, the child handle's) when dropped. dnsmasq is told to read no `/etc/resolv.conf`, no
//! `/etc/hosts` and no `/etc/dnsmasq.conf`, and has no upstream: names under a domain given to
//! [`Records::local_domain`] that it has no record for are NXDOMAIN; other names are REFUSED.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// The records a [`DnsServer`] serves, as dnsmasq configuration lines.
#[derive(Debug, Clone, Default)]
pub struct Records {
    lines: Vec<String>,
    /// The first invalid value given, reported by [`DnsServer::start`].
    mistake: Option<String>,
}

impl Records {
    pub fn new() -> Records {
        Records::default()
    }

    /// `domain` and every name below it are answered from these records only: a name with
    /// no record is NXDOMAIN, a name with records of other types answers NODATA.
    pub fn local_domain(mut self, domain: &str) -> Records {
        if self.check(domain) {
            self.lines.push(format!("local=/{domain}/"));
        }
        self
    }

    /// An MX record of `domain` naming `exchange` at `preference`.
    pub fn mx(mut self, domain: &str, exchange: &str, preference: u16) -> Records {
        if self.check(domain) && self.check(exchange) {
            self.lines
                .push(format!("mx-host={domain},{exchange},{preference}"));
        }
        self
    }

    /// Questions about `domain` and the names below it go to the server at `upstream` (an
    /// [`ErrorServer`], say, so that one name fails while the others answer).
    pub fn forward(mut self, domain: &str, upstream: SocketAddr) -> Records {
        if self.check(domain) {
            self.lines.push(format!(
                "server=/{domain}/{}#{}",
                upstream.ip(),
                upstream.port()
            ));
        }
        self
    }

    /// A null MX (RFC 7505): one MX record of preference 0 whose exchange is the root (`.`).
    /// dnsmasq writes it as RFC 7505 asks, a zero-length name.
    pub fn null_mx(self, domain: &str) -> Records {
        self.mx(domain, ".", 0)
    }

    /// A and AAAA records of `name`, one per address, in this order.
    pub fn host(mut self, name: &str, addresses: &[IpAddr]) -> Records {
        if self.check(name) {
            // One line per address: a `host-record` holds at most one address of each family.
            for address in addresses {
                self.lines.push(format!("host-record={name},{address}"));
            }
        }
        self
    }

    /// A TXT record of `name` (a DKIM key, say), split into strings of at most 255 bytes as
    /// the DNS requires.
    pub fn txt(mut self, name: &str, text: &str) -> Records {
        if !self.check(name) {
            return self;
        }
        if text.is_empty() || text.contains(['"', '\\', '\n', '\r']) || !text.is_ascii() {
            self.mistake
                .get_or_insert(format!("a TXT value the fixture cannot quote: {text:?}"));
            return self;
        }
        let mut line = format!("txt-record={name}");
        for chunk in text.as_bytes().chunks(255) {
            let _ = write!(line, ",\"{}\"", String::from_utf8_lossy(chunk));
        }
        self.lines.push(line);
        self
    }

    /// A name that cannot break the configuration file (commas, slashes, new lines).
    fn check(&mut self, name: &str) -> bool {
        let fine = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if !fine {
            self.mistake
                .get_or_insert(format!("not a name the fixture takes: {name:?}"));
        }
        fine
    }
}

/// A dnsmasq serving [`Records`] on `127.0.0.1:<port>`, UDP and TCP. Killed when dropped.
#[derive(Debug)]
pub struct DnsServer {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

/// How long dnsmasq may take to answer its first question before the start is a failure.
const START_BOUND: Duration = Duration::from_secs(10);
/// Ports tried before giving up: another process may take the free port first.
const PORT_TRIES: usize = 5;

impl DnsServer {
    /// Starts dnsmasq, and returns once it answers.
    pub fn start(records: &Records) -> io::Result<DnsServer> {
        if let Some(mistake) = &records.mistake {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, mistake.clone()));
        }
        let mut last = None;
        for _ in 0..PORT_TRIES {
            match DnsServer::start_once(records, free_port(Ipv4Addr::LOCALHOST)?) {
                Ok(server) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("dnsmasq did not start")))
    }

    /// Starts dnsmasq on `127.0.0.1:<port>`, a port the caller chose beforehand (the
    /// conformance runner writes it into a configuration file before the records are known),
    /// and returns once it answers.
    pub fn start_on(records: &Records, port: u16) -> io::Result<DnsServer> {
        if let Some(mistake) = &records.mistake {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, mistake.clone()));
        }
        DnsServer::start_once(records, port)
    }

    fn start_once(records: &Records, port: u16) -> io::Result<DnsServer> {
        let ip = Ipv4Addr::LOCALHOST;
        let dir = tempfile::Builder::new().prefix("dns-fixture-").tempdir()?;
        let conf = dir.path().join("dnsmasq.conf");
        let mut text = String::from(
            "# Written by the dns-fixture crate for one test.\n\
             no-resolv\nno-hosts\nno-poll\nbind-interfaces\nlog-queries\n",
        );
        let _ = writeln!(text, "listen-address={ip}\nport={port}");
        for line in &records.lines {
            let _ = writeln!(text, "{line}");
        }
        fs::write(&conf, text)?;
        let log = fs::File::create(dir.path().join("dnsmasq.log"))?;
        let child = Command::new(dnsmasq_program())
            .arg("--keep-in-foreground")
            .arg(format!("--conf-file={}", conf.display()))
            .arg(format!(
                "--pid-file={}",
                dir.path().join("dnsmasq.pid").display()
            ))
            .arg("--log-facility=-")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot run dnsmasq (Debian's dnsmasq-base): {e}"),
                )
            })?;
        let mut server = DnsServer {
            child,
            addr: SocketAddr::new(IpAddr::V4(ip), port),
            dir,
        };
        server.wait_until_answering()?;
        Ok(server)
    }

    fn wait_until_answering(&mut self) -> io::Result<()> {
        let start = Instant::now();
        while start.elapsed() < START_BOUND {
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "dnsmasq exited ({status}) at start: {}",
                    self.log()
                )));
            }
            if answers(self.addr) {
                return Ok(());
            }
        }
        Err(io::Error::other(format!(
            "dnsmasq did not answer within {START_BOUND:?}: {}",
            self.log()
        )))
    }

    /// Where it listens, UDP and TCP: an `[outbound] dns_servers` entry.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What dnsmasq logged (every question it was asked), for a failing test's message.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default()
    }

    /// Its configuration directory (the configuration file and the log).
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        // By the child's own id; nothing else is touched.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `DNSMASQ` names another binary; otherwise the one on `PATH`, then Debian's place.
fn dnsmasq_program() -> PathBuf {
    if let Some(path) = std::env::var_os("DNSMASQ").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let debian = PathBuf::from("/usr/sbin/dnsmasq");
    if debian.exists() {
        debian
    } else {
        PathBuf::from("dnsmasq")
    }
}

/// A port of `ip` free for both UDP and TCP at this moment.
pub fn free_port(ip: Ipv4Addr) -> io::Result<u16> {
    for _ in 0..20 {
        let udp = UdpSocket::bind((ip, 0))?;
        let port = udp.local_addr()?.port();
        if TcpListener::bind((ip, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(io::Error::other("no port free for both UDP and TCP"))
}

/// Whether anything answers a DNS question at `addr` within a short wait.
fn answers(addr: SocketAddr) -> bool {
    let Ok(socket) = UdpSocket::bind((addr.ip(), 0)) else {
        return false;
    };
    if socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .is_err()
    {
        return false;
    }
    let id: u16 = 0x5a5a;
    let mut query = Vec::with_capacity(40);
    query.extend_from_slice(&id.to_be_bytes());
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in ["fixture-ready", "invalid"] {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    if socket.send_to(&query, addr).is_err() {
        // Nothing listening yet: wait a little, as the read would have.
        thread::sleep(Duration::from_millis(50));
        return false;
    }
    let mut buf = [0u8; 512];
    matches!(socket.recv_from(&mut buf), Ok((n, _)) if n >= 2 && buf[..2] == id.to_be_bytes())
}

/// A UDP responder on `127.0.0.1:<port>` that answers every question with one response code
/// and no records: SERVFAIL (2) by default. Only UDP: the resolver reads the error there and
/// stops. Stopped when dropped.
#[derive(Debug)]
pub struct ErrorServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl ErrorServer {
    /// Answers SERVFAIL to everything.
    pub fn servfail() -> io::Result<ErrorServer> {
        ErrorServer::start(2)
    }

    /// Answers `rcode` (0–15) to everything.
    pub fn start(rcode: u8) -> io::Result<ErrorServer> {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = thread::Builder::new()
            .name("dns-error-server".into())
            .spawn(move || {
                let mut buf = [0u8; 1500];
                while !stopped.load(Ordering::Relaxed) {
                    let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    if let Some(reply) = error_reply(&buf[..n], rcode) {
                        let _ = socket.send_to(&reply, peer);
                    }
                }
            })?;
        Ok(ErrorServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ErrorServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The reply to `query`: its id and question, the response bit, the query's RD bit, RA, and
/// `rcode`; no records. `None` for something that is not one question.
fn error_reply(query: &[u8], rcode: u8) -> Option<Vec<u8>> {
    let header = query.get(..12)?;
    if header[2] & 0x80 != 0 || header[4..6] != [0, 1] {
        return None;
    }
    // The question: labels up to the root, then type and class.
    let mut at = 12;
    loop {
        let len = *query.get(at)? as usize;
        if len & 0xc0 != 0 {
            return None;
        }
        at += 1 + len;
        if len == 0 {
            break;
        }
    }
    let question = query.get(12..at + 4)?;
    let mut reply = Vec::with_capacity(12 + question.len());
    reply.extend_from_slice(&header[..2]);
    reply.push(0x80 | (header[2] & 0x79));
    reply.push(0x80 | (rcode & 0x0f));
    reply.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    reply.extend_from_slice(question);
    Some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_reply_keeps_the_id_and_the_question() {
        let query = [
            0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1, 1, b'a', 0, 0, 15, 0, 1, 0, 0, 41,
        ];
        let reply = error_reply(&query, 2).unwrap();
        assert_eq!(
            reply,
            [
                0xab, 0xcd, 0x81, 0x82, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 15, 0, 1
            ]
        );
        assert!(error_reply(&query[..14], 2).is_none());
        assert!(
            error_reply(&reply, 2).is_none(),
            "a response is not answered"
        );
    }

    #[test]
    fn names_that_would_break_the_file_are_refused() {
        for records in [
            Records::new().mx("a.test", "b,c.test", 1),
            Records::new().host("a.test\nserver=8.8.8.8", &[]),
            Records::new().txt("a.test", "say \"hi\""),
            Records::new().local_domain("a/b"),
        ] {
            let error = DnsServer::start(&records).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{error}");
        }
    }

    #[test]
    fn long_txt_values_are_split() {
        let records = Records::new().txt("k._domainkey.a.test", &"x".repeat(300));
        let line = &records.lines[0];
        assert!(line.starts_with("txt-record=k._domainkey.a.test,\""));
        assert_eq!(line.matches('"').count(), 4, "{line}");
    }
}
