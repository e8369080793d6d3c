//! DKIM signing end to end (issue 12): keys made with `dirmail dkim generate` (RSA and
//! Ed25519), their TXT records served by the test's dnsmasq, a message submitted to the sending
//! `dirmail serve` and delivered to a receiving one on 127.0.41.2; the received message is
//! checked by an independent verifier, Python's dkimpy (Debian's python3-dkim, asking the
//! dnsmasq with dnspython), which must also refuse it once one header byte is changed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dns_fixture::{DnsServer, Records};

use crate::common::{Scratch, Server};

const PASSWORD: &str = "Dkim-Passw0rd";
/// A bound on the arrival, not a measurement (the retry schedule is one second).
const ARRIVE_WITHIN: Duration = Duration::from_secs(60);
/// The Debian interpreter, where ci/packages.txt puts dkimpy and dnspython.
const PYTHON: &str = "/usr/bin/python3";

fn store(domain: &str, config: &str, users: &[&str]) -> Scratch {
    let store = Scratch::new();
    store.config(config);
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
    store
}

/// `dkim generate` with `--json`: the record's name and value.
fn generate(store: &Scratch, args: &[&str]) -> (String, String) {
    let mut all = vec!["dkim", "generate", "example.jp", "--json"];
    all.extend_from_slice(args);
    let out = store.expect(0, &all);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        json["name"].as_str().unwrap().to_owned(),
        json["value"].as_str().unwrap().to_owned(),
    )
}

fn submit(port: u16) {
    let script = r#"
import smtplib, sys
msg = ("From: Bob <bob@example.jp>\r\nTo: alice@dest.test\r\nSubject: signed\r\n"
       "Date: Thu, 03 Dec 2026 10:00:00 +0900\r\nMessage-ID: <dkim-test@example.jp>\r\n"
       "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
       "Hello,  signed   world.\r\n.a line that starts with a dot\r\n\r\n\r\n")
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=30) as s:
    s.login("bob@example.jp", sys.argv[2])
    assert not s.sendmail("bob@example.jp", ["alice@dest.test"], msg)
"#;
    let out = Command::new("python3")
        .args(["-c", script, &port.to_string(), PASSWORD])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "smtplib: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn arrived(dir: &Path, log: impl Fn() -> String) -> Vec<u8> {
    let deadline = Instant::now() + ARRIVE_WITHIN;
    loop {
        if let Some(file) = std::fs::read_dir(dir)
            .ok()
            .and_then(|mut entries| entries.next())
            .and_then(|e| e.ok())
        {
            return std::fs::read(file.path()).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "nothing arrived; the sender's log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// dkimpy's verdict on each DKIM-Signature of `message` (`a=… d=… s=… ok|fail`), asking the
/// test's dnsmasq for the keys.
fn verify(message: &[u8], dns: std::net::SocketAddr) -> String {
    let script = r#"
import sys, dkim, dns.resolver
resolver = dns.resolver.Resolver(configure=False)
resolver.nameservers = [sys.argv[1]]
resolver.port = int(sys.argv[2])
def dnsfunc(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    try:
        answer = resolver.resolve(name, "TXT", lifetime=timeout)
    except Exception:
        return None
    return b"".join(b"".join(r.strings) for r in answer)
message = sys.stdin.buffer.read()
d = dkim.DKIM(message)
count = sum(1 for line in message.split(b"\r\n\r\n")[0].split(b"\r\n") if line.lower().startswith(b"dkim-signature:"))
for i in range(count):
    try:
        ok = d.verify(idx=i, dnsfunc=dnsfunc)
    except dkim.ValidationError:
        ok = False  # a changed body: dkimpy raises rather than answering False
    tags = d.signature_fields
    print(tags.get(b"a", b"").decode(), tags.get(b"d", b"").decode(), tags.get(b"s", b"").decode(), "ok" if ok else "fail")
"#;
    let mut child = Command::new(PYTHON)
        .args(["-c", script, &dns.ip().to_string(), &dns.port().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(message).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dkimpy (Debian's python3-dkim and python3-dnspython, see ci/packages.txt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn outbound_mail_is_signed_with_the_domains_rsa_and_ed25519_keys_and_dkimpy_accepts_it() {
    let rx_store = store(
        "dest.test",
        "[server]\nhostname = \"mx.dest.test\"\nlisten_address = \"127.0.41.2\"\n\
         [smtp]\nport = 0\nsubmission_port = false\nsmtps_port = false\n\
         [pop3]\nport = false\npop3s_port = false\n[imap]\nport = false\nimaps_port = false\n",
        &["alice"],
    );
    let rx = Server::start_logged(rx_store.path());

    // The sender's store and keys first: their records go into the DNS the sender is
    // configured with.
    let tx_store = Scratch::new();
    tx_store.config("");
    tx_store.expect(0, &["add", "example.jp"]);
    let rsa = generate(&tx_store, &[]);
    let ed = generate(&tx_store, &["--selector", "ed", "--algorithm", "ed25519"]);
    assert_eq!(rsa.0, "dirmail._domainkey.example.jp");
    assert!(rsa.1.starts_with("v=DKIM1; k=rsa; p="), "{}", rsa.1);
    assert!(ed.1.starts_with("v=DKIM1; k=ed25519; p="), "{}", ed.1);
    // The same selector again is refused without --force.
    tx_store.expect(3, &["dkim", "generate", "example.jp"]);

    let dns = DnsServer::start(
        &Records::new()
            .local_domain("test")
            .local_domain("jp")
            .mx("dest.test", "mx.dest.test", 10)
            .host("mx.dest.test", &["127.0.41.2".parse().unwrap()])
            .txt(&rsa.0, &rsa.1)
            .txt(&ed.0, &ed.1),
    )
    .unwrap();
    tx_store.config(&format!(
        "[server]\nhostname = \"mail.example.jp\"\n\
         [smtp]\nport = 0\nsubmission_port = 0\nsmtps_port = false\n\
         [pop3]\nport = false\npop3s_port = false\n[imap]\nport = false\nimaps_port = false\n\
         [tls]\nplaintext_auth = \"loopback\"\n\
         [outbound]\ndns_servers = [\"{}\"]\nport = {}\n[queue]\nretry = [\"1s\"]\n",
        dns.addr(),
        rx.port("smtp")
    ));
    tx_store.expect(0, &["add", "bob@example.jp", "--create-user", PASSWORD]);
    let tx = Server::start_logged(tx_store.path());
    submit(tx.port("submission"));

    let inbox = rx_store.mailroot().join("dest.test/alice/new");
    let message = arrived(&inbox, || tx.log());
    let text = String::from_utf8_lossy(&message).into_owned();
    assert!(
        text.contains("DKIM-Signature: v=1; a=rsa-sha256;"),
        "{text}"
    );
    assert!(text.contains("a=ed25519-sha256;"), "{text}");
    let verdicts = verify(&message, dns.addr());
    assert_eq!(
        verdicts.lines().collect::<Vec<_>>(),
        [
            "rsa-sha256 example.jp dirmail ok",
            "ed25519-sha256 example.jp ed ok"
        ],
        "{text}"
    );
    assert!(tx.log().contains("outbound: DKIM signed"));

    // One byte of a signed header changed: both signatures fail.
    let tampered = text.replacen("Subject: signed", "Subject: signeD", 1);
    assert_ne!(tampered, text);
    let verdicts = verify(tampered.as_bytes(), dns.addr());
    assert_eq!(
        verdicts.lines().collect::<Vec<_>>(),
        [
            "rsa-sha256 example.jp dirmail fail",
            "ed25519-sha256 example.jp ed fail"
        ]
    );
    // So does one byte of the body.
    let tampered = text.replacen("signed   world", "signed   World", 1);
    let verdicts = verify(tampered.as_bytes(), dns.addr());
    assert_eq!(
        verdicts.lines().filter(|l| l.ends_with(" fail")).count(),
        2,
        "{verdicts}"
    );
}
