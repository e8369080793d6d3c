//! IMAP over the wire with Python's imaplib (and smtplib, poplib): the real `dirmail serve`,
//! logins under `local` and `passwd-file`, mail delivered over SMTP then read over IMAP, flags
//! and UIDs that survive a restart, the locked and bad-password replies, and POP3 and IMAP on
//! one mailbox at once.

use std::process::Command;

use crate::common::{Scratch, Server};

/// Every listener on a port the system picks, so tests run side by side.
pub(crate) const CONFIG: &str = "[server]\nhostname = \"mail.example.jp\"\n\
[smtp]\nport = 0\nsubmission_port = 0\nsmtps_port = 0\n\
[pop3]\nport = 0\npop3s_port = 0\n\
[imap]\nport = 0\nimaps_port = 0\n";

/// Helpers every script starts with.
pub(crate) const PRELUDE: &str = r#"
import imaplib, os, poplib, smtplib, ssl, sys
CTX = ssl.create_default_context(cafile=os.environ["CAFILE"])
CTX.check_hostname = False
PORT = {name: int(os.environ[name.upper()]) for name in ("smtp", "pop3", "imap", "imaps")}

def deliver(to, subject, body="hello"):
    s = smtplib.SMTP("127.0.0.1", PORT["smtp"], timeout=20)
    s.sendmail("alice@example.org", [to],
               f"From: Alice <alice@example.org>\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n{body}\r\n")
    s.quit()

def imap():
    m = imaplib.IMAP4("127.0.0.1", PORT["imap"], timeout=20)
    m.starttls(ssl_context=CTX)
    return m

def imaps():
    return imaplib.IMAP4_SSL("127.0.0.1", PORT["imaps"], ssl_context=CTX, timeout=20)

def ok(result):
    typ, data = result
    assert typ == "OK", (typ, data)
    return data
"#;

pub(crate) fn scratch() -> Scratch {
    let s = Scratch::new();
    std::fs::write(s.path().join("dirmail.toml"), CONFIG).expect("write dirmail.toml");
    s
}

/// Runs `script` after [`PRELUDE`] against `server`; returns what it printed.
#[track_caller]
pub(crate) fn python(s: &Scratch, server: &Server, script: &str) -> String {
    let cert = s.path().join("dirmail-data/tls/cert.pem");
    // `serve` prints `ready` a moment before the self-signed certificate is on disk.
    for _ in 0..200 {
        if cert.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(format!("{PRELUDE}\n{script}"))
        .env("CAFILE", s.path().join("dirmail-data/tls/cert.pem"))
        .env("SMTP", server.port("smtp").to_string())
        .env("POP3", server.port("pop3").to_string())
        .env("IMAP", server.port("imap").to_string())
        .env("IMAPS", server.port("imaps").to_string())
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn local_login_delivery_and_flags_that_survive_a_restart() {
    let s = scratch();
    s.expect(0, &["add", "example.jp"]);
    s.expect(0, &["add", "bob@example.jp", "--create-user", "Bob-pw1"]);
    let mut server = Server::start(s.path());
    let first = python(
        &s,
        &server,
        r#"
deliver("bob@example.jp", "Lunch", "Noodles at noon?")
deliver("bob@example.jp", "Dinner", "Curry at seven?")
m = imaplib.IMAP4("127.0.0.1", PORT["imap"], timeout=20)
assert "LOGINDISABLED" in m.capabilities and "STARTTLS" in m.capabilities, m.capabilities
m.starttls(ssl_context=CTX)
assert "AUTH=PLAIN" in m.capabilities, m.capabilities
ok(m.login("bob@example.jp", "Bob-pw1"))
assert ok(m.select("INBOX")) == [b"2"]
print("UIDVALIDITY", m.response("UIDVALIDITY")[1][0].decode())
data = ok(m.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
headers = [d[1] for d in data if isinstance(d, tuple)]
assert headers == [b"Subject: Lunch\r\n\r\n", b"Subject: Dinner\r\n\r\n"], data
body = ok(m.fetch("1", "(BODY[TEXT])"))
assert body[0][1] == b"Noodles at noon?\r\n", body
ok(m.store("2", "+FLAGS", "(\\Flagged)"))
print(ok(m.fetch("1:*", "(UID FLAGS)")))
m.logout()
"#,
    );
    assert!(
        first.contains("(UID 1 FLAGS (\\\\Seen \\\\Recent))"),
        "{first}"
    );
    assert!(
        first.contains("(UID 2 FLAGS (\\\\Flagged \\\\Recent))"),
        "{first}"
    );
    let validity = first
        .lines()
        .find_map(|l| l.strip_prefix("UIDVALIDITY "))
        .expect("UIDVALIDITY printed")
        .to_owned();

    assert_eq!(server.stop(), Some(0));
    let server = Server::start(s.path());
    let second = python(
        &s,
        &server,
        r#"
m = imaps()
ok(m.login("bob", "Bob-pw1"))
assert ok(m.select("INBOX")) == [b"2"]
print("UIDVALIDITY", m.response("UIDVALIDITY")[1][0].decode())
print(ok(m.fetch("1:*", "(UID FLAGS)")))
m.logout()
"#,
    );
    assert!(
        second.contains(&format!("UIDVALIDITY {validity}")),
        "{second}"
    );
    assert!(second.contains("(UID 1 FLAGS (\\\\Seen))"), "{second}");
    assert!(second.contains("(UID 2 FLAGS (\\\\Flagged))"), "{second}");
    // Other Maildir tools read the flags from the names.
    let cur = s.mailroot().join("example.jp/bob/cur");
    let names: Vec<String> = std::fs::read_dir(&cur)
        .expect("cur/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n.ends_with(":2,S")), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with(":2,F")), "{names:?}");
}

#[test]
fn passwd_file_login_and_folders() {
    let s = scratch();
    s.expect(0, &["set", "authentication", "passwd-file"]);
    s.expect(0, &["add", "example.jp"]);
    s.expect(
        0,
        &["add", "carol@example.jp", "--create-user", "Carol-pw1"],
    );
    let server = Server::start(s.path());
    let out = python(
        &s,
        &server,
        r#"
m = imaps()
ok(m.login("carol@example.jp", "Carol-pw1"))
ok(m.create("Archive.2024"))
assert m.create("Archive")[0] == "NO"
print(ok(m.list()))
msg = b"From: Dave <dave@example.org>\r\nSubject: appended\r\n\r\nbody\r\n"
print(ok(m.append("INBOX", "(\\Seen)", imaplib.Time2Internaldate(1700000000), msg)))
ok(m.select("INBOX"))
print(ok(m.copy("1", "Archive.2024")))
print(m.uid("MOVE", "1", "Archive"))
assert ok(m.status("INBOX", "(MESSAGES)")) == [b"INBOX (MESSAGES 0)"]
assert ok(m.status("Archive", "(MESSAGES UIDNEXT)")) == [b"Archive (MESSAGES 1 UIDNEXT 2)"]
ok(m.select("Archive.2024"))
print(ok(m.fetch("1", "(FLAGS INTERNALDATE ENVELOPE)")))
ok(m.store("1", "+FLAGS", "(\\Deleted)"))
print(ok(m.expunge()))
ok(m.rename("Archive.2024", "Old"))
ok(m.subscribe("Old"))
print(ok(m.lsub()))
ok(m.delete("Old"))
print(ok(m.list()))
print(ok(m.namespace()))
m.logout()
"#,
    );
    assert!(
        out.contains("(\\\\HasChildren) \".\" Archive")
            && out.contains("(\\\\HasNoChildren) \".\" Archive.2024"),
        "{out}"
    );
    assert!(out.contains("[APPENDUID "), "{out}");
    assert!(out.contains("[COPYUID "), "{out}");
    assert!(
        out.contains("INTERNALDATE \"14-Nov-2023 22:13:20 +0000\""),
        "{out}"
    );
    assert!(
        out.contains("((\"Dave\" NIL \"dave\" \"example.org\"))"),
        "{out}"
    );
    assert!(out.contains("[b'1']"), "the expunged message number: {out}");
    assert!(out.contains("'(\\\\HasNoChildren) \".\" Old'"), "{out}");
    assert!(out.contains("((\"\" \".\")) NIL NIL"), "{out}");
    assert!(
        s.mailroot().join("example.jp/carol/.Archive/cur").is_dir(),
        "a Maildir++ folder"
    );
}

#[test]
fn locked_bad_password_and_clear_text_refusals() {
    let s = scratch();
    s.expect(0, &["add", "example.jp"]);
    s.expect(0, &["add", "bob@example.jp", "--create-user", "Bob-pw1"]);
    s.expect(0, &["add", "eve@example.jp", "--create-user", "Eve-pw1"]);
    s.expect(0, &["lock", "eve@example.jp"]);
    let server = Server::start(s.path());
    let out = python(
        &s,
        &server,
        r#"
def refused(m, user, password):
    try:
        m.login(user, password)
    except imaplib.IMAP4.error as e:
        return str(e)
    raise AssertionError("login accepted")

plain = imaplib.IMAP4("127.0.0.1", PORT["imap"], timeout=20)
print("cleartext:", refused(plain, "bob@example.jp", "Bob-pw1"))
print("locked:", refused(imaps(), "eve@example.jp", "Eve-pw1"))
print("bad:", refused(imaps(), "bob@example.jp", "nope"))
print("unknown:", refused(imaps(), "nobody@example.jp", "nope"))
"#,
    );
    assert!(out.contains("cleartext: b'[PRIVACYREQUIRED]"), "{out}");
    assert!(out.contains("locked: b'[CONTACTADMIN]"), "{out}");
    assert!(out.contains("bad: b'[AUTHENTICATIONFAILED]"), "{out}");
    assert!(out.contains("unknown: b'[AUTHENTICATIONFAILED]"), "{out}");
}

#[test]
fn pop3_and_imap_on_one_mailbox() {
    let s = scratch();
    s.expect(0, &["add", "example.jp"]);
    s.expect(0, &["add", "bob@example.jp", "--create-user", "Bob-pw1"]);
    let server = Server::start(s.path());
    let out = python(
        &s,
        &server,
        r#"
for subject in ("one", "two", "three"):
    deliver("bob@example.jp", subject)

# POP3 takes its R20 hold and snapshot first (the messages are still in new/).
p = poplib.POP3("127.0.0.1", PORT["pop3"], timeout=20)
p.stls(context=CTX)
p.user("bob@example.jp"); p.pass_("Bob-pw1")
uidl = [l.split()[1] for l in p.uidl()[1]]
assert p.stat()[0] == 3

# IMAP opens the same mailbox meanwhile: it moves the messages to cur/ and renames them.
m = imaps()
ok(m.login("bob@example.jp", "Bob-pw1"))
assert ok(m.select("INBOX")) == [b"3"]
ok(m.store("1:3", "+FLAGS", "(\\Seen \\Flagged)"))

# POP3's view is intact: same messages, still readable, deletions still work.
assert b"Subject: two" in b"\n".join(p.retr(2)[1])
p.dele(1)
p.quit()

# IMAP sees the POP3 deletion; POP3's next session sees the same unique names.
ok(m.noop())
print("noop:", m.response("EXPUNGE"))
ok(m.store("1", "+FLAGS", "(\\Deleted)"))
print("expunge:", ok(m.expunge()))
p = poplib.POP3("127.0.0.1", PORT["pop3"], timeout=20)
p.stls(context=CTX)
p.user("bob@example.jp"); p.pass_("Bob-pw1")
left = [l.split()[1] for l in p.uidl()[1]]
print("left:", len(left), left == uidl[2:])
p.quit()
m.logout()
"#,
    );
    assert!(
        out.contains("noop: ('EXPUNGE', [b'1'])"),
        "IMAP saw POP3's DELE: {out}"
    );
    assert!(out.contains("expunge: [b'1']"), "{out}");
    assert!(
        out.contains("left: 1 True"),
        "UIDL kept across IMAP's renames: {out}"
    );
}
