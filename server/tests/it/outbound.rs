//! Outbound delivery end to end, on loopback only: a sending `dirmail serve` whose `[outbound]`
//! asks a dnsmasq of the test's own (the `dns-fixture` crate) and sends to receiving servers on
//! loopback addresses of their own (127.0.T.2, 127.0.T.3, … for test T, so parallel tests never
//! meet), all on one port. The receivers are second `dirmail serve`s, or a small scripted
//! Python server where a refusal must be scripted. Mail goes in through submission with AUTH
//! (Python's smtplib); what arrived is read from the receivers' Maildirs, and a bounce from
//! the sender's own mailbox, parsed by Python's `email` package.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dns_fixture::{DnsServer, Records};

use crate::common::{Scratch, Server};

const PASSWORD: &str = "Outbound-Passw0rd";
/// How long a message may take to arrive before the test fails (a bound, not a measurement:
/// the retry schedule in these tests is one second).
const ARRIVE_WITHIN: Duration = Duration::from_secs(60);

/// A receiving `dirmail serve` on `addr`, for `domain`, with mailboxes `users`.
struct Receiver {
    store: Scratch,
    server: Server,
    domain: String,
}

impl Receiver {
    /// `port` 0: the system picks one, which the other receivers of the test then share.
    fn start(addr: &str, port: u16, domain: &str, users: &[&str]) -> Receiver {
        let store = Scratch::new();
        store.config(&format!(
            "[server]\nhostname = \"mx.{domain}\"\nlisten_address = \"{addr}\"\n\
             [smtp]\nport = {port}\nsubmission_port = false\nsmtps_port = false\n\
             [pop3]\nport = false\npop3s_port = false\n[imap]\nport = false\nimaps_port = false\n"
        ));
        store.expect(0, &["add", domain]);
        for user in users {
            store.expect(
                0,
                &[
                    "add",
                    &format!("{user}@{domain}"),
                    "--create-user",
                    PASSWORD,
                ],
            );
        }
        let server = Server::start_logged(store.path());
        Receiver {
            store,
            server,
            domain: domain.to_owned(),
        }
    }

    fn port(&self) -> u16 {
        self.server.port("smtp")
    }

    fn inbox(&self, user: &str) -> PathBuf {
        self.store
            .mailroot()
            .join(&self.domain)
            .join(user)
            .join("new")
    }
}

/// The sending server: `example.jp` with `bob@` (who sends) and `carol@`, its DNS the test's.
struct Sender {
    store: Scratch,
    server: Option<Server>,
}

impl Sender {
    fn start(dns: SocketAddr, port: u16, extra: &str) -> Sender {
        let store = Scratch::new();
        store.config(&format!(
            "[server]\nhostname = \"mail.example.jp\"\n\
             [smtp]\nport = 0\nsubmission_port = 0\nsmtps_port = false\n\
             [pop3]\nport = false\npop3s_port = false\n[imap]\nport = false\nimaps_port = false\n\
             [tls]\nplaintext_auth = \"loopback\"\n\
             [outbound]\ndns_servers = [\"{dns}\"]\nport = {port}\n\
             [queue]\nretry = [\"1s\"]\n{extra}"
        ));
        store.expect(0, &["add", "example.jp"]);
        for user in ["bob", "carol"] {
            store.expect(
                0,
                &[
                    "add",
                    &format!("{user}@example.jp"),
                    "--create-user",
                    PASSWORD,
                ],
            );
        }
        let server = Some(Server::start_logged(store.path()));
        Sender { store, server }
    }

    fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
    }

    fn restart(&mut self) {
        // The log of the first run is kept beside the new one.
        let log = self.store.path().join("server.log");
        let _ = std::fs::rename(&log, self.store.path().join("server.log.1"));
        self.server = Some(Server::start_logged(self.store.path()));
    }

    fn inbox(&self, user: &str) -> PathBuf {
        self.store
            .mailroot()
            .join("example.jp")
            .join(user)
            .join("new")
    }

    fn queued(&self) -> usize {
        files(&self.store.mailroot().join(".queue/env")).len()
    }

    /// Submits a message from bob through submission with AUTH; panics unless it is accepted.
    fn submit(&self, to: &[&str], subject: &str) {
        let port = self.server().port("submission");
        let script = r#"
import smtplib, sys
port, user, password, subject = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
rcpts = sys.argv[5:]
msg = ("From: <%s>\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@example.jp>\r\n\r\n"
       "Hello from the outbound test.\r\n.a line that starts with a dot\r\nEND\r\n"
       % (user, ", ".join(rcpts), subject, subject))
with smtplib.SMTP("127.0.0.1", int(port), timeout=30) as s:
    s.ehlo("client.example.jp")
    s.login(user, password)
    refused = s.sendmail(user, rcpts, msg)
    assert not refused, refused
"#;
        let mut args = vec![
            "-c".to_owned(),
            script.to_owned(),
            port.to_string(),
            "bob@example.jp".to_owned(),
            PASSWORD.to_owned(),
            subject.to_owned(),
        ];
        args.extend(to.iter().map(|t| t.to_string()));
        let out = Command::new("python3").args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "smtplib: {}\nlog:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.server().log()
        );
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    !p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// Waits until `dir` holds `count` messages, and returns them.
fn arrived(dir: &Path, count: usize, log: impl Fn() -> String) -> Vec<String> {
    let deadline = Instant::now() + ARRIVE_WITHIN;
    loop {
        let found = files(dir);
        if found.len() >= count {
            return found
                .iter()
                .map(|f| String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned())
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "{count} message(s) did not arrive in {} within {ARRIVE_WITHIN:?}; the sender's log:\n{}",
            dir.display(),
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What Python's `email` package reads in a notification: its content type, report type, the
/// delivery-status part and the headers part.
fn parse_dsn(message: &str) -> String {
    let script = r#"
import email, sys
from email import policy
m = email.message_from_string(sys.stdin.read(), policy=policy.compat32)
print("type:", m.get_content_type(), m.get_param("report-type"))
print("from:", m["From"], "subject:", m["Subject"])
for part in m.walk():
    ct = part.get_content_type()
    if ct == "message/delivery-status":
        for block in part.get_payload():
            for k, v in block.items():
                print("status-field:", k, "=", v)
    elif ct == "text/rfc822-headers":
        print("headers-part:", part.get_payload().replace("\r\n", "|"))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(message.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn ip(text: &str) -> std::net::IpAddr {
    text.parse().unwrap()
}

#[test]
fn submission_to_an_outside_domain_arrives_with_our_trace_header_and_leaves_the_queue() {
    let rx = Receiver::start("127.0.31.2", 0, "dest.test", &["alice"]);
    let dns = DnsServer::start(
        &Records::new()
            .local_domain("test")
            .mx("dest.test", "mx.dest.test", 10)
            .host("mx.dest.test", &[ip("127.0.31.2")]),
    )
    .unwrap();
    let tx = Sender::start(dns.addr(), rx.port(), "");
    tx.submit(&["alice@dest.test"], "outward");
    let got = arrived(&rx.inbox("alice"), 1, || tx.server().log());
    let message = &got[0];
    assert!(message.contains("Subject: outward"), "{message}");
    // Ours (the submission's) and the receiver's trace headers, the dot line unstuffed.
    assert!(
        message.contains("by mail.example.jp (dirmail)"),
        "{message}"
    );
    assert!(message.contains("by mx.dest.test (dirmail)"), "{message}");
    assert!(message.contains("\r\n.a line that starts with a dot\r\n"));
    // The entry goes once delivered; the log has the attempt, over TLS (self-signed:
    // unverified, used anyway under "opportunistic").
    let deadline = Instant::now() + ARRIVE_WITHIN;
    while tx.queued() > 0 {
        assert!(Instant::now() < deadline, "the queue entry stayed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = tx.server().log();
    assert!(log.contains("outbound: attempt"), "{log}");
    assert!(log.contains("tls=unverified"), "{log}");
    assert!(log.contains("mx.dest.test [127.0.31.2:"), "{log}");
}

#[test]
fn the_second_mx_gets_it_when_the_first_is_down_and_a_domain_without_mx_goes_to_its_address() {
    // 127.0.32.2 is the preferred MX and nothing listens there.
    let second = Receiver::start("127.0.32.3", 0, "pref.test", &["alice"]);
    let port = second.port();
    let plain = Receiver::start("127.0.32.4", port, "plain.test", &["dan"]);
    let dns = DnsServer::start(
        &Records::new()
            .local_domain("test")
            .mx("pref.test", "mx1.pref.test", 10)
            .mx("pref.test", "mx2.pref.test", 20)
            .host("mx1.pref.test", &[ip("127.0.32.2")])
            .host("mx2.pref.test", &[ip("127.0.32.3")])
            // No MX: the A record of the domain itself (RFC 5321 §5.1).
            .host("plain.test", &[ip("127.0.32.4")]),
    )
    .unwrap();
    let tx = Sender::start(dns.addr(), port, "");
    tx.submit(&["alice@pref.test", "dan@plain.test"], "preference");
    let got = arrived(&second.inbox("alice"), 1, || tx.server().log());
    assert!(got[0].contains("Subject: preference"));
    let got = arrived(&plain.inbox("dan"), 1, || tx.server().log());
    assert!(got[0].contains("Subject: preference"));
    let log = tx.server().log();
    assert!(
        log.contains("mx1.pref.test [127.0.32.2:") && log.contains("Cannot connect"),
        "{log}"
    );
}

#[test]
fn a_null_mx_bounces_at_once_into_the_senders_mailbox() {
    let dns =
        DnsServer::start(&Records::new().local_domain("test").null_mx("nomail.test")).unwrap();
    // No receiver at all: nothing is tried.
    let tx = Sender::start(dns.addr(), 2525, "");
    tx.submit(&["nobody@nomail.test"], "into-the-void");
    let got = arrived(&tx.inbox("bob"), 1, || tx.server().log());
    let dsn = parse_dsn(&got[0]);
    assert!(
        dsn.contains("type: multipart/report delivery-status"),
        "{dsn}"
    );
    assert!(dsn.contains("from: Mail Delivery System <MAILER-DAEMON@mail.example.jp>"));
    assert!(dsn.contains("status-field: Action = failed"), "{dsn}");
    assert!(dsn.contains("status-field: Status = 5.1.10"), "{dsn}");
    assert!(
        dsn.contains("Final-Recipient = rfc822; nobody@nomail.test"),
        "{dsn}"
    );
    assert!(dsn.contains("Subject: into-the-void"), "{dsn}");
    // The bounce went in locally; the queue is empty again, the bounce sent with `<>`.
    let deadline = Instant::now() + ARRIVE_WITHIN;
    while tx.queued() > 0 {
        assert!(Instant::now() < deadline, "the queue did not empty");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(got[0].contains("Auto-Submitted: auto-replied"));
}

#[test]
fn a_5xx_from_the_receiver_bounces_with_its_reply_and_a_mixed_message_gets_one_250() {
    let rx = Receiver::start("127.0.33.2", 0, "far.test", &["alice"]);
    let dns = DnsServer::start(
        &Records::new()
            .local_domain("test")
            .mx("far.test", "mx.far.test", 10)
            .host("mx.far.test", &[ip("127.0.33.2")]),
    )
    .unwrap();
    let tx = Sender::start(dns.addr(), rx.port(), "");
    // Local carol, remote alice (exists) and remote ghost (does not): one message, one 250.
    tx.submit(
        &["carol@example.jp", "alice@far.test", "ghost@far.test"],
        "mixed",
    );
    assert_eq!(
        files(&tx.inbox("carol")).len(),
        1,
        "carol's copy is there at the 250"
    );
    let got = arrived(&rx.inbox("alice"), 1, || tx.server().log());
    assert!(got[0].contains("Subject: mixed"));
    let bounce = arrived(&tx.inbox("bob"), 1, || tx.server().log());
    let dsn = parse_dsn(&bounce[0]);
    assert!(
        dsn.contains("Final-Recipient = rfc822; ghost@far.test"),
        "{dsn}"
    );
    assert!(
        !dsn.contains("Final-Recipient = rfc822; alice@far.test"),
        "only the failed one: {dsn}"
    );
    assert!(dsn.contains("Status = 5.1.1"), "{dsn}");
    assert!(dsn.contains("Diagnostic-Code = smtp; 550"), "{dsn}");
    assert!(dsn.contains("Remote-MTA = dns; mx.far.test"), "{dsn}");
    assert!(dsn.contains("Subject: mixed"), "{dsn}");
}

/// A scripted receiver: `451` to every RCPT of its first connection, then it takes the
/// message; each message it took is written to `<out>.<connection>`.
struct Flaky {
    child: Child,
    out: PathBuf,
}

impl Flaky {
    fn start(addr: &str, port: u16, dir: &Path) -> Flaky {
        let script = r#"
import socket, sys
addr, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((addr, port))
srv.listen(8)
print("ready", flush=True)
n = 0
while True:
    c, _ = srv.accept()
    n += 1
    f = c.makefile("rb")
    w = lambda s: c.sendall(s.encode())
    w("220 flaky.test ESMTP\r\n")
    for line in f:
        cmd = line[:4].upper()
        if cmd in (b"EHLO", b"HELO"):
            w("250 flaky.test\r\n")
        elif cmd == b"MAIL":
            w("250 2.1.0 OK\r\n")
        elif cmd == b"RCPT":
            w("451 4.7.1 Greylisted, try again later\r\n" if n == 1 else "250 2.1.5 OK\r\n")
        elif cmd == b"DATA":
            w("354 Go ahead\r\n")
            body = b""
            for l in f:
                if l == b".\r\n":
                    break
                body += l
            open("%s.%d" % (out, n), "wb").write(body)
            w("250 2.0.0 Taken\r\n")
        elif cmd == b"QUIT":
            w("221 Bye\r\n")
            break
        else:
            w("500 5.5.1 What?\r\n")
    c.close()
"#;
        let out = dir.join("flaky");
        let mut child = Command::new("python3")
            .args(["-c", script, addr, &port.to_string()])
            .arg(&out)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        Flaky { child, out }
    }
}

impl Drop for Flaky {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_4xx_is_retried_on_the_schedule_and_then_delivered() {
    let port = {
        // A free port for the scripted receiver's address.
        let probe = std::net::TcpListener::bind("127.0.34.2:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let scratch = tempfile::tempdir().unwrap();
    let flaky = Flaky::start("127.0.34.2", port, scratch.path());
    let dns = DnsServer::start(
        &Records::new()
            .local_domain("test")
            .mx("grey.test", "mx.grey.test", 10)
            .host("mx.grey.test", &[ip("127.0.34.2")]),
    )
    .unwrap();
    let tx = Sender::start(dns.addr(), port, "");
    tx.submit(&["alice@grey.test"], "greylisted");
    let second = PathBuf::from(format!("{}.2", flaky.out.display()));
    let deadline = Instant::now() + ARRIVE_WITHIN;
    while !second.exists() {
        assert!(
            Instant::now() < deadline,
            "no retry arrived; log:\n{}",
            tx.server().log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let body = String::from_utf8_lossy(&std::fs::read(&second).unwrap()).into_owned();
    assert!(body.contains("Subject: greylisted"));
    // Dot-stuffed on the wire.
    assert!(
        body.contains("\r\n..a line that starts with a dot\r\n"),
        "{body}"
    );
    assert!(!PathBuf::from(format!("{}.1", flaky.out.display())).exists());
    let log = tx.server().log();
    assert!(log.contains("451 4.7.1 Greylisted"), "{log}");
    // No bounce, and no delay notice (4h by default).
    assert!(files(&tx.inbox("bob")).is_empty());
}

#[test]
fn a_sender_killed_between_acceptance_and_delivery_delivers_once_after_restart() {
    let dns_records = Records::new()
        .local_domain("test")
        .mx("later.test", "mx.later.test", 10)
        .host("mx.later.test", &[ip("127.0.35.2")]);
    let dns = DnsServer::start(&dns_records).unwrap();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.35.2:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    // The receiver is down: the message is accepted and queued, and stays.
    let mut tx = Sender::start(dns.addr(), port, "");
    tx.submit(&["alice@later.test"], "survivor");
    assert_eq!(tx.queued(), 1);
    let pid = tx.server().pid();
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    let _ = tx.server.as_mut().unwrap().child.wait();
    let rx = Receiver::start("127.0.35.2", port, "later.test", &["alice"]);
    tx.restart();
    let got = arrived(&rx.inbox("alice"), 1, || tx.server().log());
    assert!(got[0].contains("Subject: survivor"));
    let deadline = Instant::now() + ARRIVE_WITHIN;
    while tx.queued() > 0 {
        assert!(Instant::now() < deadline, "the queue did not empty");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Once: nothing more arrives while the sender keeps running (its queue is empty).
    assert_eq!(files(&rx.inbox("alice")).len(), 1);
}

/// With `[outbound] relay_host`, every message goes to the smarthost instead of the MX hosts
/// (no DNS is asked), and with `relay_user`/`relay_password` it logs in there, after STARTTLS
/// only: here the smarthost is a second dirmail's submission port, which refuses mail without
/// AUTH and AUTH without TLS.
#[test]
fn a_smarthost_with_auth_gets_everything_and_a_wrong_password_keeps_the_message_queued() {
    let smarthost = Scratch::new();
    smarthost.config(
        "[server]\nhostname = \"smarthost.test\"\nlisten_address = \"127.0.38.2\"\n\
         [smtp]\nport = false\nsubmission_port = 0\nsmtps_port = false\nrequire_own_sender = false\n\
         [pop3]\nport = false\npop3s_port = false\n[imap]\nport = false\nimaps_port = false\n",
    );
    smarthost.expect(0, &["add", "relay.test"]);
    for user in ["sender", "alice"] {
        smarthost.expect(
            0,
            &[
                "add",
                &format!("{user}@relay.test"),
                "--create-user",
                PASSWORD,
            ],
        );
    }
    let smart = Server::start_logged(smarthost.path());
    let port = smart.port("submission");
    let start = |password: &str| {
        let store = Scratch::new();
        // The DNS server named here does not exist: a smarthost needs none.
        store.config(&format!(
            "[server]\nhostname = \"mail.example.jp\"\n\
             [smtp]\nport = 0\nsubmission_port = 0\nsmtps_port = false\n\
             [pop3]\nport = false\npop3s_port = false\n[imap]\nport = false\nimaps_port = false\n\
             [tls]\nplaintext_auth = \"loopback\"\n\
             [outbound]\ndns_servers = [\"127.0.0.1:9\"]\nrelay_host = \"127.0.38.2:{port}\"\n\
             relay_user = \"sender@relay.test\"\nrelay_password = \"{password}\"\n\
             [queue]\nretry = [\"1s\"]\n"
        ));
        store.expect(0, &["add", "example.jp"]);
        store.expect(0, &["add", "bob@example.jp", "--create-user", PASSWORD]);
        let server = Some(Server::start_logged(store.path()));
        Sender { store, server }
    };
    let tx = start(PASSWORD);
    tx.submit(&["alice@relay.test"], "via-smarthost");
    let inbox = smarthost.mailroot().join("relay.test/alice/new");
    let got = arrived(&inbox, 1, || tx.server().log());
    assert!(got[0].contains("Subject: via-smarthost"), "{}", got[0]);
    let log = smart.log();
    assert!(
        log.contains("smtp login") && log.contains("sender@relay.test"),
        "the smarthost saw the login:\n{log}"
    );
    assert!(
        !tx.server().log().contains(PASSWORD),
        "no password in the sender's log"
    );

    // A wrong password is this server's configuration fault: the message waits, no bounce.
    let wrong = start("Not-the-password1");
    wrong.submit(&["alice@relay.test"], "refused-login");
    let deadline = Instant::now() + ARRIVE_WITHIN;
    while !wrong.server().log().contains("535") {
        assert!(
            Instant::now() < deadline,
            "no refused login in the log:\n{}",
            wrong.server().log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(wrong.queued(), 1, "kept for a retry");
    assert!(files(&wrong.inbox("bob")).is_empty(), "no bounce");
    assert_eq!(files(&inbox).len(), 1);
}

#[test]
fn an_alias_with_an_outside_target_sends_it_on_through_the_queue_and_keeps_a_local_copy() {
    let rx = Receiver::start("127.0.37.2", 0, "dest.test", &["alice"]);
    let dns = DnsServer::start(
        &Records::new()
            .local_domain("test")
            .mx("dest.test", "mx.dest.test", 10)
            .host("mx.dest.test", &[ip("127.0.37.2")]),
    )
    .unwrap();
    let tx = Sender::start(dns.addr(), rx.port(), "");
    tx.store.expect(
        0,
        &[
            "alias",
            "add",
            "team@example.jp",
            "carol@example.jp",
            "alice@dest.test",
        ],
    );
    // The alias and one of its targets named together: one copy each.
    tx.submit(&["team@example.jp", "alice@dest.test"], "through-an-alias");
    let got = arrived(&rx.inbox("alice"), 1, || tx.server().log());
    assert!(got[0].contains("Subject: through-an-alias"), "{}", got[0]);
    let carol = arrived(&tx.inbox("carol"), 1, || tx.server().log());
    assert!(carol[0].contains("Subject: through-an-alias"));
    let deadline = Instant::now() + ARRIVE_WITHIN;
    while tx.queued() > 0 {
        assert!(Instant::now() < deadline, "the queue entry stayed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = tx.server().log();
    assert!(log.contains("alias expanded"), "{log}");
}
