//! Signals to a running `dirmail serve` (issue 15): SIGHUP reads `dirmail.toml` and the TLS
//! certificate again for new connections while sessions in progress go on (an IMAP IDLE
//! across a certificate renewal); a broken file changes nothing and the log says why; a key
//! that needs a restart keeps its running value; SIGUSR1 and SIGUSR2 do not kill the server;
//! and systemd's readiness messages reach `$NOTIFY_SOCKET`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Server;
use crate::hostile_support::{Client, PASSWORD, Rig, WAIT, merge_tables};

/// Sends `signal` (`HUP`, `USR1`, …) to the server.
fn send_signal(server: &Server, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), server.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} failed");
}

/// Lines of the server's log that contain `marker`.
fn count(server: &Server, marker: &str) -> usize {
    server.log().lines().filter(|l| l.contains(marker)).count()
}

/// Waits until the log has more than `before` lines containing `marker`; panics after [`WAIT`].
fn wait_for_log(server: &Server, marker: &str, before: usize) {
    let deadline = Instant::now() + WAIT;
    while count(server, marker) <= before {
        assert!(
            Instant::now() < deadline,
            "no new {marker:?} in the log within {WAIT:?}:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A reload ends with one of these lines in the log, whatever its outcome.
const RELOAD_DONE: [&str; 2] = ["reloaded the TLS certificate", "reload refused"];

/// Sends SIGHUP and waits for the reload to end; returns the log lines it wrote.
fn reload(server: &Server) -> String {
    let before = server.log().lines().count();
    let done = |s: &Server| RELOAD_DONE.iter().map(|m| count(s, m)).sum::<usize>();
    let done_before = done(server);
    send_signal(server, "HUP");
    let deadline = Instant::now() + WAIT;
    while done(server) <= done_before {
        assert!(
            Instant::now() < deadline,
            "the reload did not end within {WAIT:?}:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
        .log()
        .lines()
        .skip(before)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Rewrites the rig's `dirmail.toml` with `extra` merged over what it holds now.
fn rewrite_config(rig: &Rig, extra: &str) {
    let path = rig.dir.path().join("dirmail.toml");
    let text = std::fs::read_to_string(&path).expect("read dirmail.toml");
    std::fs::write(&path, merge_tables(&format!("{text}\n{extra}"))).expect("write dirmail.toml");
}

/// The reply to `RCPT TO` an outside address, from a new session on the relay port (the
/// transaction is dropped before DATA, so nothing is ever queued for the outside).
fn relay_reply(rig: &Rig) -> String {
    let mut smtp = Client::connect(rig.port("smtp"));
    assert!(smtp.reply().starts_with("220"));
    assert!(smtp.cmd("EHLO client.example").starts_with("250"));
    assert!(smtp.cmd("MAIL FROM:<alice@example.org>").starts_with("250"));
    let reply = smtp.cmd("RCPT TO:<someone@example.net>");
    smtp.cmd("QUIT");
    reply
}

#[test]
fn sighup_applies_relay_networks_keeps_restart_keys_and_refuses_a_broken_file() {
    let mut rig = Rig::start("");
    assert!(
        relay_reply(&rig).starts_with("5"),
        "relaying is refused at first"
    );
    // A session opened before the reload keeps the settings it started with.
    let mut before = Client::connect(rig.port("smtp"));
    assert!(before.reply().starts_with("220"));

    rewrite_config(&rig, "[smtp]\nrelay_networks = [\"127.0.0.0/8\"]\n");
    let log = reload(&rig.server);
    assert!(log.contains("smtp.relay_networks changed"), "{log}");
    assert!(
        relay_reply(&rig).starts_with("250"),
        "relaying is allowed now"
    );
    assert!(before.cmd("EHLO client.example").starts_with("250"));
    assert!(
        before
            .cmd("MAIL FROM:<alice@example.org>")
            .starts_with("250")
    );
    let old = before.cmd("RCPT TO:<someone@example.net>");
    assert!(
        old.starts_with("5"),
        "the older session keeps its settings: {old}"
    );
    before.cmd("QUIT");

    // A key that needs a restart: the log says so, and the running value stays.
    rewrite_config(
        &rig,
        "[limits]\nsocket_max = 500\n[smtp]\nrelay_networks = []\n",
    );
    let log = reload(&rig.server);
    assert!(
        log.contains("reload: limits.socket_max") && log.contains("only at a restart"),
        "{log}"
    );
    assert!(log.contains("smtp.relay_networks changed"), "{log}");
    assert!(
        relay_reply(&rig).starts_with("5"),
        "relaying is refused again"
    );

    // A broken file: nothing changes, and the log says why.
    rewrite_config(
        &rig,
        "[smtp]\nrelay_networks = [\"127.0.0.0/8\", \"no-net\"]\n",
    );
    let log = reload(&rig.server);
    assert!(
        log.contains("reload refused") && log.contains("\"no-net\" is not a network"),
        "{log}"
    );
    assert!(log.contains("the running settings stay"), "{log}");
    assert!(
        relay_reply(&rig).starts_with("5"),
        "the old relay_networks still applies"
    );
    std::fs::write(rig.dir.path().join("dirmail.toml"), "[smtp\nport = ").unwrap();
    let log = reload(&rig.server);
    assert!(log.contains("reload refused"), "{log}");
    rig.server.assert_alive();
    let mut pop = Client::connect(rig.port("pop3"));
    assert!(pop.pop_line().starts_with("+OK"));
    assert!(pop.pop("USER bob@example.jp").starts_with("+OK"));
    assert!(pop.pop(&format!("PASS {PASSWORD}")).starts_with("+OK"));
    pop.pop("QUIT");
    assert_eq!(rig.server.stop(), Some(0));
}

#[test]
fn sigusr1_and_sigusr2_do_not_stop_the_server() {
    let mut rig = Rig::start("");
    for (signal, said) in [("USR1", "SIGUSR1 ignored"), ("USR2", "SIGUSR2 ignored")] {
        let before = count(&rig.server, said);
        send_signal(&rig.server, signal);
        wait_for_log(&rig.server, said, before);
        rig.server.assert_alive();
    }
    let mut smtp = Client::connect(rig.port("smtp"));
    assert!(smtp.reply().starts_with("220"));
    smtp.cmd("QUIT");
    assert_eq!(rig.server.stop(), Some(0));
}

/// A self-signed certificate for localhost, as PEM files `<name>-cert.pem` and `<name>-key.pem`
/// in `dir`.
fn make_certificate(dir: &Path, name: &str) -> (String, String) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (made.cert.pem(), made.signing_key.serialize_pem());
    std::fs::write(dir.join(format!("{name}-cert.pem")), &cert).unwrap();
    std::fs::write(dir.join(format!("{name}-key.pem")), &key).unwrap();
    (cert, key)
}

/// The client's side of the renewal: a new TLS session sees certificate A; an IMAP session
/// enters IDLE; (the test renews and reloads); a new session sees B, and the old one, still
/// on A, leaves IDLE and goes on.
const RENEWAL_SCRIPT: &str = r#"
import imaplib, os, ssl, sys
def der(path):
    return ssl.PEM_cert_to_DER_cert(open(path).read())
A, B = der(os.environ["CERT_A"]), der(os.environ["CERT_B"])
CTX = ssl.create_default_context()
CTX.check_hostname = False
CTX.verify_mode = ssl.CERT_NONE
def new_session_sees():
    m = imaplib.IMAP4_SSL("127.0.0.1", int(os.environ["IMAPS"]), ssl_context=CTX, timeout=20)
    seen = m.sock.getpeercert(binary_form=True)
    m.logout()
    return seen
assert new_session_sees() == A, "A at first"
old = imaplib.IMAP4("127.0.0.1", int(os.environ["IMAP"]), timeout=20)
old.starttls(ssl_context=CTX)
assert old.sock.getpeercert(binary_form=True) == A
typ, _ = old.login("bob@example.jp", os.environ["PASSWORD"])
assert typ == "OK"
typ, _ = old.select("INBOX")
assert typ == "OK"
old.send(b"i1 IDLE\r\n")
line = old.readline()
assert line.startswith(b"+"), line
print("IDLING", flush=True)
sys.stdin.readline()
assert new_session_sees() == B, "B after the reload"
old.send(b"DONE\r\n")
while True:
    line = old.readline()
    assert line, "the old session was closed"
    if line.startswith(b"i1 "):
        break
assert line.startswith(b"i1 OK"), line
assert old.sock.getpeercert(binary_form=True) == A, "the old session keeps its certificate"
typ, _ = old.noop()
assert typ == "OK"
old.logout()
print("DONE", flush=True)
"#;

#[test]
fn sighup_renews_the_certificate_for_new_sessions_while_an_idle_session_stays() {
    let certs = tempfile::tempdir().unwrap();
    let (cert_a, key_a) = make_certificate(certs.path(), "a");
    let (cert_b, key_b) = make_certificate(certs.path(), "b");
    assert_ne!(cert_a, cert_b);
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    std::fs::write(&cert, &cert_a).unwrap();
    std::fs::write(&key, &key_a).unwrap();
    let mut rig = Rig::start(&format!(
        "[imap]\nport = 0\nimaps_port = 0\n[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert.display(),
        key.display()
    ));
    let mut client = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(RENEWAL_SCRIPT)
        .env("CERT_A", certs.path().join("a-cert.pem"))
        .env("CERT_B", certs.path().join("b-cert.pem"))
        .env("IMAP", rig.port("imap").to_string())
        .env("IMAPS", rig.port("imaps").to_string())
        .env("PASSWORD", PASSWORD)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut said = BufReader::new(client.stdout.take().unwrap());
    let mut line = String::new();
    said.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "IDLING", "the client's first steps failed");

    // Renewed in place, as certbot's deploy hooks do: the paths in dirmail.toml stay.
    std::fs::write(&cert, &cert_b).unwrap();
    std::fs::write(&key, &key_b).unwrap();
    let log = reload(&rig.server);
    assert!(log.contains("reloaded the TLS certificate"), "{log}");
    assert!(
        log.contains("no setting for new connections changed"),
        "{log}"
    );

    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut said, &mut rest).unwrap();
    let status = client.wait().unwrap();
    assert!(status.success() && rest.contains("DONE"), "{rest}");

    // A key that does not match its certificate is refused; B stays.
    std::fs::write(&key, &key_a).unwrap();
    let log = reload(&rig.server);
    assert!(
        log.contains("reload refused") && log.contains("the running settings stay"),
        "{log}"
    );
    rig.server.assert_alive();
    assert_eq!(rig.server.stop(), Some(0));
}

#[test]
fn readiness_reload_and_stop_reach_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    std::fs::write(
        dir.path().join("dirmail.toml"),
        "[server]\nhostname = \"mail.example.jp\"\n[smtp]\nport = 0\nsubmission_port = false\n\
         smtps_port = false\n[pop3]\nport = false\npop3s_port = false\n\
         [imap]\nport = false\nimaps_port = false\n",
    )
    .unwrap();
    let mut server =
        Server::start_with_env(dir.path(), &[("NOTIFY_SOCKET", socket_path.as_os_str())]);
    let next = || {
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).expect("a message on NOTIFY_SOCKET");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    // `ready` is printed before READY=1 is sent, and the server was ready when it was read.
    assert_eq!(next(), "READY=1");
    send_signal(&server, "HUP");
    let reloading = next();
    let mut lines = reloading.lines();
    assert_eq!(lines.next(), Some("RELOADING=1"), "{reloading}");
    assert!(
        lines
            .next()
            .and_then(|l| l.strip_prefix("MONOTONIC_USEC="))
            .is_some_and(|us| us.parse::<u64>().is_ok()),
        "{reloading}"
    );
    assert_eq!(next(), "READY=1");
    assert_eq!(server.stop(), Some(0));
    assert_eq!(next(), "STOPPING=1");
}
