//! IMAP corner cases over the wire with Python's imaplib, each one a gap a real client or an
//! IMAP compliance suite found (issue 14): UIDVALIDITY of a never-used folder, message numbers
//! past the end, keywords, `\Recent`, group addresses, parts of an attached message, and
//! folder names with a trailing delimiter.

use crate::common::Server;
use crate::imap_imaplib::{python, scratch};

/// A domain and `bob@example.jp` (password `Bob-pw1`).
fn with_bob() -> crate::common::Scratch {
    let s = scratch();
    s.expect(0, &["add", "example.jp"]);
    s.expect(0, &["add", "bob@example.jp", "--create-user", "Bob-pw1"]);
    s
}

#[test]
fn uidvalidity_of_a_never_used_folder_is_stable() {
    let s = with_bob();
    let mut server = Server::start(s.path());
    let script = r#"
m = imaps()
ok(m.login("bob@example.jp", "Bob-pw1"))
m.create("Fresh")
seen = {}
for name in ("INBOX", "Fresh"):
    values = set()
    for _ in range(3):
        ok(m.select(name))
        values.add(m.response("UIDVALIDITY")[1][0].decode())
        status = ok(m.status(name, "(UIDVALIDITY)"))[0].decode()
        values.add(status.split("UIDVALIDITY ")[1].rstrip(")"))
    assert len(values) == 1, (name, values)
    seen[name] = values.pop()
ok(m.create("Target"))
msg = b"From: Dave <dave@example.org>\r\nSubject: one\r\n\r\nbody\r\n"
ok(m.append("INBOX", None, None, msg))
ok(m.select("INBOX"))
typ, data = m.copy("1", "Target")
assert typ == "OK", data
told = data[0].decode().split("COPYUID ")[1].split()[0]
ok(m.select("Target"))
assert m.response("UIDVALIDITY")[1][0].decode() == told, told
print("INBOX", seen["INBOX"], "Fresh", seen["Fresh"])
m.logout()
"#;
    let first = python(&s, &server, script);
    assert_eq!(server.stop(), Some(0));
    let server = Server::start(s.path());
    let second = python(
        &s,
        &server,
        r#"
m = imaps()
ok(m.login("bob@example.jp", "Bob-pw1"))
for name in ("INBOX", "Fresh"):
    ok(m.select(name))
    print(name, m.response("UIDVALIDITY")[1][0].decode(), end=" ")
print()
m.logout()
"#,
    );
    assert_eq!(first.trim(), second.trim(), "the same after a restart");
}

#[test]
fn message_numbers_in_an_empty_mailbox_are_refused() {
    let s = with_bob();
    let server = Server::start(s.path());
    python(
        &s,
        &server,
        r#"
m = imaps()
ok(m.login("bob@example.jp", "Bob-pw1"))
ok(m.create("Other"))
assert ok(m.select("INBOX")) == [b"0"]
for command in (lambda: m.copy("1", "Other"), lambda: m.fetch("1", "(FLAGS)"),
                lambda: m.store("1", "+FLAGS", "(\\Seen)")):
    try:
        typ, data = command()
    except imaplib.IMAP4.error as e:
        typ, data = "BAD", [str(e).encode()]
    assert typ in ("BAD", "NO"), (typ, data)
ok(m.uid("FETCH", "1:*", "(FLAGS)"))
assert ok(m.status("Other", "(MESSAGES)")) == [b"Other (MESSAGES 0)"]
m.logout()
"#,
    );
}

#[test]
fn keywords_are_stored_searched_and_survive_a_restart() {
    let s = with_bob();
    let mut server = Server::start(s.path());
    let first = python(
        &s,
        &server,
        r#"
m = imaps()
ok(m.login("bob@example.jp", "Bob-pw1"))
for i in range(4):
    ok(m.append("INBOX", None, None, f"Subject: {i}\r\n\r\nbody\r\n".encode()))
ok(m.select("INBOX"))
permanent = m.response("PERMANENTFLAGS")[1][0].decode()
assert "\\*" in permanent, permanent
print(ok(m.store("2,4", "+FLAGS", "($hello $world)")))
flags = m.response("FLAGS")[1][-1].decode()
assert "$hello" in flags and "$world" in flags, flags
ok(m.store("4", "-FLAGS", "($hello)"))
print("KEYWORD", ok(m.search(None, "KEYWORD", "$hello")))
print("UNKEYWORD", ok(m.search(None, "UNKEYWORD", "$hello")))
ok(m.create("Junk"))
ok(m.copy("2", "Junk"))
ok(m.append("Junk", "($Junk \\Seen)", None, b"Subject: spam\r\n\r\nbody\r\n"))
m.logout()
"#,
    );
    assert!(
        first.contains("2 (FLAGS ($hello $world \\\\Recent))")
            && first.contains("4 (FLAGS ($hello $world \\\\Recent))"),
        "{first}"
    );
    assert!(first.contains("KEYWORD [b'2']"), "{first}");
    assert!(first.contains("UNKEYWORD [b'1 3 4']"), "{first}");
    assert_eq!(server.stop(), Some(0));
    let server = Server::start(s.path());
    let second = python(
        &s,
        &server,
        r#"
m = imaps()
ok(m.login("bob@example.jp", "Bob-pw1"))
ok(m.select("INBOX"))
print("FLAGS", m.response("FLAGS")[1][-1].decode())
print(ok(m.fetch("1:*", "(FLAGS)")))
ok(m.select("Junk"))
print(ok(m.fetch("1:*", "(FLAGS)")))
m.logout()
"#,
    );
    assert!(second.contains("$hello $world)"), "{second}");
    assert!(second.contains("2 (FLAGS ($hello $world))"), "{second}");
    assert!(second.contains("4 (FLAGS ($world))"), "{second}");
    // Junk was never selected: its messages are still \Recent.
    assert!(
        second.contains("1 (FLAGS ($hello $world \\\\Recent))"),
        "{second}"
    );
    assert!(
        second.contains("2 (FLAGS (\\\\Seen $Junk \\\\Recent))"),
        "{second}"
    );
}

#[test]
fn recent_is_told_to_the_first_select() {
    let s = with_bob();
    let server = Server::start(s.path());
    python(
        &s,
        &server,
        r#"
deliver("bob@example.jp", "one")
deliver("bob@example.jp", "two")
m = imaps()
ok(m.login("bob@example.jp", "Bob-pw1"))
def recent(client):
    return client.response("RECENT")[1][-1]
ok(m.create("Other"))
ok(m.append("Other", None, None, b"Subject: appended\r\n\r\nbody\r\n"))
ok(m.select("INBOX"))
assert recent(m) == b"2", "SELECT after delivery"
ok(m.copy("1", "Other"))
n = imaps()
ok(n.login("bob@example.jp", "Bob-pw1"))
assert ok(n.status("Other", "(RECENT)")) == [b"Other (RECENT 2)"]
ok(n.select("Other", readonly=True))
assert recent(n) == b"2", "EXAMINE sees them"
ok(m.select("Other"))
assert recent(m) == b"2", "and leaves them to the first SELECT"
assert ok(n.status("Other", "(RECENT)")) == [b"Other (RECENT 0)"]
n.logout()
ok(m.copy("1", "Other"))
assert recent(m) == b"3", "a COPY into the selected folder"
ok(m.append("Other", None, None, b"Subject: again\r\n\r\nbody\r\n"))
assert recent(m) == b"4", "an APPEND into the selected folder"
m.logout()
"#,
    );
}

#[test]
fn envelope_of_group_addresses() {
    let s = with_bob();
    let server = Server::start(s.path());
    let out = python(
        &s,
        &server,
        r#"
m = imaps()
ok(m.login("bob@example.jp", "Bob-pw1"))
msg = (b"From: Alice <alice@example.org>\r\n"
       b"To: group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;, user@domain.example\r\n"
       b"Cc: undisclosed-recipients:;\r\n"
       b"Bcc: <@relay.example:bob@example.jp>\r\n"
       b"Subject: groups\r\n\r\nbody\r\n")
ok(m.append("INBOX", None, None, msg))
ok(m.select("INBOX"))
print(ok(m.fetch("1", "(ENVELOPE)"))[0].decode())
m.logout()
"#,
    );
    assert!(
        out.contains(
            "((NIL NIL \"group\" NIL)(NIL NIL \"g1\" \"d1.org\")(NIL NIL \"g2\" \"d2.org\")\
             (NIL NIL NIL NIL)(NIL NIL \"group2\" NIL)(NIL NIL \"g3\" \"d3.org\")(NIL NIL NIL NIL)\
             (NIL NIL \"user\" \"domain.example\"))"
        ),
        "To: {out}"
    );
    assert!(
        out.contains("((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL))"),
        "Cc: {out}"
    );
    assert!(
        out.contains("((NIL \"@relay.example\" \"bob\" \"example.jp\"))"),
        "Bcc, a source route: {out}"
    );
}

#[test]
fn parts_of_an_attached_message() {
    let s = with_bob();
    let server = Server::start(s.path());
    python(
        &s,
        &server,
        r#"
inner = (b"From: Hanako <hanako@example.jp>\r\nSubject: Quarterly numbers\r\n"
         b"Content-Type: multipart/alternative; boundary=inner\r\n\r\n"
         b"--inner\r\nContent-Type: text/plain\r\n\r\nRevenue is up.\r\n"
         b"--inner\r\nContent-Type: text/html\r\n\r\n<p>Revenue is up.</p>\r\n--inner--\r\n")
inner_header, inner_text = inner.split(b"\r\n\r\n", 1)
inner_header += b"\r\n\r\n"
mime = b"Content-Type: message/rfc822\r\nContent-Description: forwarded\r\n\r\n"
forwarded = (b"From: Jiro <jiro@example.com>\r\nSubject: Fwd\r\n"
             b"Content-Type: multipart/mixed; boundary=outer\r\n\r\n"
             b"--outer\r\n" + mime + inner + b"\r\n--outer\r\n"
             b"Content-Type: text/plain\r\n\r\nSee above.\r\n--outer--\r\n")
top = (b"From: Jiro <jiro@example.com>\r\nSubject: Fwd\r\n"
       b"Content-Type: message/rfc822\r\n\r\n" + inner)
m = imaps()
ok(m.login("bob@example.jp", "Bob-pw1"))
ok(m.append("INBOX", None, None, forwarded))
ok(m.append("INBOX", None, None, top))
ok(m.select("INBOX"))
for n in (1, 2):
    data = ok(m.fetch(str(n), "(BODY.PEEK[1] BODY.PEEK[1.HEADER] BODY.PEEK[1.TEXT] BODY.PEEK[1.1] "
                              "BODY.PEEK[1.2] BODY.PEEK[1.1.MIME])"))
    got = [d[1] for d in data if isinstance(d, tuple)]
    assert got == [inner, inner_header, inner_text, b"Revenue is up.", b"<p>Revenue is up.</p>",
                   b"Content-Type: text/plain\r\n\r\n"], (n, got)
data = ok(m.fetch("1", "(BODY.PEEK[1.MIME] BODYSTRUCTURE)"))
assert data[0][1] == mime, data
structure = data[1].decode() if isinstance(data[1], bytes) else data[0][0].decode()
assert '("MESSAGE" "RFC822" NIL NIL "forwarded" "7BIT" %d (' % len(inner) in structure, structure
assert '"Quarterly numbers"' in structure and '"ALTERNATIVE"' in structure, structure
data = ok(m.fetch("2", "(BODYSTRUCTURE)"))
assert data[0].decode().startswith('2 (BODYSTRUCTURE ("MESSAGE" "RFC822" NIL NIL NIL "7BIT" %d (' % len(inner)), data
m.logout()
"#,
    );
}

#[test]
fn create_with_a_trailing_delimiter_and_lsub_of_a_parent() {
    let s = with_bob();
    let server = Server::start(s.path());
    let out = python(
        &s,
        &server,
        r#"
m = imaps()
ok(m.login("bob@example.jp", "Bob-pw1"))
ok(m.create("Projects."))
ok(m.create("Projects.2024."))
print("LIST", ok(m.list("\"\"", "Projects*")))
ok(m.subscribe("Projects.2024"))
print("LSUB%", ok(m.lsub("\"\"", "%")))
print("LSUB*", ok(m.lsub("\"\"", "*")))
ok(m.select("Projects.2024"))
m.logout()
"#,
    );
    assert!(
        out.contains("'(\\\\HasChildren) \".\" Projects'")
            && out.contains("'(\\\\HasNoChildren) \".\" Projects.2024'"),
        "{out}"
    );
    assert!(
        out.contains("LSUB% [b'(\\\\Noselect \\\\HasChildren) \".\" Projects']"),
        "{out}"
    );
    assert!(
        out.contains("LSUB* [b'(\\\\HasNoChildren) \".\" Projects.2024']"),
        "{out}"
    );
    assert!(
        s.mailroot()
            .join("example.jp/bob/.Projects.2024/cur")
            .is_dir()
    );
}
