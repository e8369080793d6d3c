//! SPEC §10: the separate mail secret. `dirmail secret set` gives a mailbox the secret that
//! APOP (POP3) and CRAM-MD5 (SMTP, POP3 SASL) need; the mechanisms work for it with Python's
//! poplib and smtplib, a wrong secret is refused, and a mailbox without one cannot use them.

use std::process::Command;

use crate::common::{Scratch, Server};

const CLIENT: &str = r#"
import poplib, smtplib, ssl, sys
pop3, submission, cafile = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=cafile)

def apop(user, secret):
    p = poplib.POP3("127.0.0.1", pop3, timeout=20)
    try:
        p.apop(user, secret)
        n = p.stat()[0]
        p.quit()
        return "ok %d" % n
    except poplib.error_proto as e:
        return "refused " + e.args[0].decode()

def cram(user, secret):
    s = smtplib.SMTP("127.0.0.1", submission, timeout=20)
    s.starttls(context=ctx)
    s.ehlo("secret.test")
    offered = s.esmtp_features.get("auth", "")
    s.user, s.password = user, secret
    try:
        code, _ = s.auth("CRAM-MD5", s.auth_cram_md5)
        s.quit()
        return "ok %d [%s]" % (code, offered)
    except smtplib.SMTPAuthenticationError as e:
        return "refused %d [%s]" % (e.smtp_code, offered)

print(apop("bob@example.jp", "tanstaaf"))
print(apop("bob@example.jp", "wrong"))
print(apop("carol@example.jp", "anything"))
print(cram("bob@example.jp", "tanstaaf"))
"#;

#[test]
fn apop_and_cram_md5_use_the_mail_secret() {
    let s = Scratch::new();
    s.config(
        "[server]\nhostname = \"mail.example.jp\"\nlogging = 1\n\
         [smtp]\nport = false\nsubmission_port = 0\nsmtps_port = false\n\
         [pop3]\nport = 0\npop3s_port = false\n[imap]\nport = false\nimaps_port = false\n",
    );
    s.expect(0, &["add", "example.jp"]);
    s.expect(0, &["add", "bob@example.jp", "--create-user", "Bob-pw1"]);
    s.expect(
        0,
        &["add", "carol@example.jp", "--create-user", "Carol-pw1"],
    );
    let text = s.text(0, &["secret", "set", "bob@example.jp", "tanstaaf"]);
    assert!(text.contains("APOP and CRAM-MD5 now work"), "{text}");
    // Not found (4): no such mailbox.
    s.expect(4, &["secret", "set", "nobody@example.jp", "x"]);
    let server = Server::start(s.path());
    let script = CLIENT;
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(server.port("pop3").to_string())
        .arg(server.port("submission").to_string())
        .arg(s.path().join("dirmail-data/tls/cert.pem"))
        .env("PYTHONUNBUFFERED", "1")
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "ok 0", "APOP with the secret: {text}");
    assert!(
        lines[1].starts_with("refused -ERR [AUTH]"),
        "a wrong secret: {text}"
    );
    assert!(
        lines[2].starts_with("refused -ERR [AUTH]"),
        "no secret set: {text}"
    );
    assert!(
        lines[3].starts_with("ok 235"),
        "CRAM-MD5 with the secret: {text}"
    );
    assert!(
        lines[3].contains("CRAM-MD5"),
        "offered once a secret exists: {text}"
    );
    s.expect(0, &["secret", "delete", "bob@example.jp"]);
    s.expect(4, &["secret", "delete", "bob@example.jp"]);
}
