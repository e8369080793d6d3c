//! The README, followed as a new user would: `dirmail serve` on the embedded defaults (no
//! configuration file, the documented ports), a domain and two mailboxes added with the
//! administration tool, a message sent from one to the other over submission with STARTTLS
//! and AUTH (lettre), then read over POP3 with STLS (Python's poplib and curl), and a graceful
//! stop.

use std::process::Command;

use crate::common::{Scratch, Server};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};

#[test]
fn readme_tour_sends_and_reads_mail() {
    // No dirmail.toml: the embedded defaults, as the README's first command runs.
    let s = Scratch::new();
    std::fs::remove_file(s.path().join("dirmail.toml")).expect("remove the scratch config");
    let mut server = Server::start(s.path());
    assert_eq!(server.port("submission"), 2587, "the README's ports");
    assert_eq!(server.port("pop3"), 1110);

    s.expect(0, &["add", "example.jp"]);
    s.expect(
        0,
        &["add", "alice@example.jp", "--create-user", "Alice-pw1"],
    );
    s.expect(0, &["add", "bob@example.jp", "--create-user", "Bob-pw1"]);

    let cert_path = s.path().join("dirmail-data/tls/cert.pem");
    let cert = Certificate::from_pem(&std::fs::read(&cert_path).expect("the store's certificate"))
        .expect("a PEM certificate");
    let tls = TlsParameters::builder("localhost".into())
        .add_root_certificate(cert)
        .build_rustls()
        .expect("TLS parameters");
    let mailer = SmtpTransport::builder_dangerous("127.0.0.1")
        .port(server.port("submission"))
        .tls(Tls::Required(tls))
        .credentials(Credentials::new(
            "alice@example.jp".into(),
            "Alice-pw1".into(),
        ))
        .build();
    let email = Message::builder()
        .from("Alice <alice@example.jp>".parse::<Mailbox>().expect("from"))
        .to("Bob <bob@example.jp>".parse::<Mailbox>().expect("to"))
        .subject("Lunch")
        .body(String::from(
            "Noodles at noon?\n.\nA line that was a lone dot.\n",
        ))
        .expect("message");
    mailer
        .send(&email)
        .expect("lettre sends with STARTTLS and AUTH");

    // Python's poplib: STLS, USER/PASS, STAT, RETR, then QUIT without deleting.
    let script = r#"
import poplib, ssl, sys
port, cafile = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=cafile)
p = poplib.POP3("127.0.0.1", port, timeout=20)
p.stls(context=ctx)
p.user("bob@example.jp"); p.pass_("Bob-pw1")
count, size = p.stat()
resp, lines, octets = p.retr(1)
print(count)
print("\n".join(l.decode() for l in lines))
p.quit()
"#;
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script, &server.port("pop3").to_string()])
        .arg(&cert_path)
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "poplib: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("1\n"), "one message: {text}");
    assert!(text.contains("Subject: Lunch"), "{text}");
    assert!(
        text.contains("Noodles at noon?\n.\nA line that was a lone dot."),
        "{text}"
    );
    assert!(text.contains("with ESMTPSA"), "{text}");

    // curl over POP3 with STLS required: list, then the message itself.
    let curl = |path: &str| {
        Command::new("curl")
            .args(["-s", "--ssl-reqd", "--cacert"])
            .arg(&cert_path)
            .args(["-u", "bob@example.jp:Bob-pw1"])
            .arg(format!("pop3://127.0.0.1:{}/{path}", server.port("pop3")))
            .output()
            .expect("curl runs")
    };
    let listed = curl("");
    assert!(listed.status.success(), "curl LIST: {listed:?}");
    assert!(String::from_utf8_lossy(&listed.stdout).starts_with("1 "));
    let message = curl("1");
    assert!(String::from_utf8_lossy(&message.stdout).contains("Subject: Lunch"));

    assert_eq!(server.stop(), Some(0), "a graceful stop");
    let rest: Vec<String> = server.stdout.try_iter().collect();
    assert!(rest.iter().any(|l| l == "stopped"), "{rest:?}");
}
