//! Hostile input over the wire against the real IMAP listener: overlong lines, literals that
//! announce absurd sizes or never end, NUL and invalid UTF-8, broken and cancelled
//! AUTHENTICATE, commands out of state, bad and enormous sequence sets, deep nesting, error
//! floods, huge pipelined bursts, a client that reads nothing, slow-drip clients, STARTTLS
//! injection, clear-text logins where they are not allowed and password guessing. Each case
//! expects a clear reply (tagged BAD or NO, or `* BYE` and the end of the connection) and a
//! server that still serves a fresh, well-behaved client afterwards. Also: a silent client is
//! logged out after the configured `imap_idle_timeout`, and one address cannot take every
//! connection.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::hostile_support::{
    CAROL_PASSWORD, Client, PASSWORD, Rig, TlsClient, expect, imap_still_serves,
};
use base64::Engine as _;

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn greeted(port: u16) -> Client {
    let mut c = Client::connect(port);
    expect(&c.imap_response(), "* OK");
    c
}

/// Logged in as bob.
fn logged_in(port: u16) -> Client {
    let mut c = greeted(port);
    expect(
        &c.imap(&format!("l1 LOGIN bob@example.jp {PASSWORD}")),
        "l1 OK",
    );
    c
}

/// Logged in as bob, INBOX selected.
fn selected(port: u16) -> Client {
    let mut c = logged_in(port);
    expect(&c.imap("l2 SELECT INBOX"), "l2 OK [READ-WRITE]");
    c
}

/// The last line of a reply: the tagged completion (or what came last before a close).
fn last_line(reply: &str) -> &str {
    reply.lines().last().unwrap_or_default()
}

/// `* n EXISTS` in a reply.
fn exists(reply: &str) -> Option<u32> {
    reply
        .lines()
        .find_map(|l| l.strip_prefix("* ")?.strip_suffix(" EXISTS")?.parse().ok())
}

/// A message of about `size` octets.
fn message(n: usize, size: usize) -> Vec<u8> {
    let mut text = format!("From: filler@client.example\r\nSubject: filler {n}\r\n\r\n");
    while text.len() < size {
        text.push_str("some text to fill the message up to the size it should have\r\n");
    }
    text.into_bytes()
}

/// APPENDs `message` with a non-synchronizing literal; returns the replies up to `tag`'s.
fn append(c: &mut Client, tag: &str, folder: &str, message: &[u8]) -> String {
    let mut bytes = format!("{tag} APPEND {folder} {{{}+}}\r\n", message.len()).into_bytes();
    bytes.extend_from_slice(message);
    bytes.extend_from_slice(b"\r\n");
    c.send(&bytes);
    c.imap_until(tag)
}

/// Puts `count` messages of about `size` octets into bob's INBOX.
fn fill_bob(port: u16, count: usize, size: usize) {
    let mut c = logged_in(port);
    for n in 0..count {
        expect(
            &append(&mut c, &format!("f{n}"), "INBOX", &message(n, size)),
            &format!("f{n} OK [APPENDUID"),
        );
    }
    expect(&c.imap("f LOGOUT"), "f OK");
}

/// How many messages bob's INBOX holds, seen by a fresh session.
fn bob_messages(port: u16) -> u32 {
    let mut c = logged_in(port);
    let reply = c.imap("e1 EXAMINE INBOX");
    expect(&reply, "e1 OK [READ-ONLY]");
    exists(&reply).expect("EXISTS in the EXAMINE reply")
}

/// Bob's folders, seen by a fresh session.
fn bob_folders(port: u16) -> String {
    let mut c = logged_in(port);
    let reply = c.imap("e2 LIST \"\" \"*\"");
    expect(&reply, "e2 OK");
    reply
}

/// After a refusal that ends the session: `* BYE`, then the end of the connection.
#[track_caller]
fn says_bye_and_closes(c: &mut Client) {
    let bye = c.imap_response();
    assert!(bye.starts_with("* BYE"), "expected * BYE, got {bye:?}");
    assert!(c.closes(), "the connection stays open after * BYE");
}

#[test]
fn overlong_command_lines_are_refused_and_the_session_stays_in_step() {
    let mut rig = Rig::with_imap("");
    let port = rig.port("imap");
    let mut c = greeted(port);
    // Before login the largest command is a login's (16 KiB): within it but no command…
    expect(
        &c.imap(&format!("a1 NOOP {}", "x".repeat(10_000))),
        "a1 BAD",
    );
    // …and past it, where a logged-in session would still read it (see a8 below).
    expect(
        &c.imap(&format!("a1 NOOP {}", "x".repeat(100_000))),
        "a1 NO [TOOBIG]",
    );
    // Over it: read through to its end, then refused as too big.
    expect(
        &c.imap(&format!("a2 NOOP {}", "x".repeat(200_000))),
        "a2 NO [TOOBIG]",
    );
    expect(&c.imap("a3 NOOP"), "a3 OK");
    // Eight megabytes on one line: dropped as they arrive, one refusal at the end.
    let before = rig.server.rss_kib();
    c.send(b"a4 NOOP ");
    let mega = vec![b'A'; 1 << 20];
    for _ in 0..8 {
        c.send(&mega);
    }
    c.send(b"\r\n");
    expect(&c.imap_until("a4"), "a4 NO [TOOBIG]");
    let grown = rig.server.rss_kib().saturating_sub(before);
    println!("an 8 MB line: the server's RSS grew {grown} KiB");
    assert!(
        grown < 16 * 1024,
        "an 8 MB line grew the server by {grown} KiB"
    );
    // The same without a tag: an untagged refusal.
    c.send(&mega);
    c.send(b"\r\n");
    expect(&c.imap_response(), "* BAD [TOOBIG]");
    expect(
        &c.imap(&format!(
            "a5 LOGIN {}@example.jp {PASSWORD}",
            "b".repeat(200_000)
        )),
        "a5 NO [TOOBIG]",
    );
    expect(
        &c.imap(&format!("a6 LOGIN bob@example.jp {PASSWORD}")),
        "a6 OK",
    );
    expect(&c.imap("a7 SELECT INBOX"), "a7 OK");
    // Logged in, within the largest command (the 64 KB message limit and 64 KiB more).
    expect(
        &c.imap(&format!("a7 NOOP {}", "x".repeat(100_000))),
        "a7 BAD",
    );
    expect(
        &c.imap(&format!("a8 SEARCH SUBJECT \"{}\"", "s".repeat(100_000))),
        "a8 OK",
    );
    expect(&c.imap("a9 LOGOUT"), "a9 OK");
    rig.server.assert_alive();
    imap_still_serves(port);
}

#[test]
fn literals_announcing_huge_sizes_are_refused_without_allocating() {
    let mut rig = Rig::with_imap("");
    let port = rig.port("imap");
    let mut c = logged_in(port);
    let before = rig.server.rss_kib();
    // Synchronizing: refused before the client sends a byte of it; the session goes on.
    c.send(b"a1 APPEND INBOX {4294967295}\r\n");
    expect(&c.imap_until("a1"), "a1 NO [TOOBIG]");
    c.send(b"a2 CREATE {4294967295}\r\n");
    expect(&c.imap_until("a2"), "a2 NO [TOOBIG]");
    // More than 32 bits: not a literal the server can count, so not a command either.
    c.send(b"a3 APPEND INBOX {99999999999999999999}\r\n");
    expect(&c.imap_until("a3"), "a3 BAD");
    expect(&c.imap("a4 NOOP"), "a4 OK");
    let grown = rig.server.rss_kib().saturating_sub(before);
    println!("synchronizing literals of 4 GiB and more: the server's RSS grew {grown} KiB");
    assert!(
        grown < 8 * 1024,
        "the announcements grew the server by {grown} KiB"
    );

    // Non-synchronizing (LITERAL+ is offered): the client does not wait, so 4 GiB would
    // follow. Refused at once and the connection closed, rather than read through.
    let caps = c.imap("a5 CAPABILITY");
    assert!(caps.contains("LITERAL+"), "{caps}");
    c.send(b"a6 APPEND INBOX {4294967295+}\r\n");
    expect(&c.imap_until("a6"), "a6 NO [TOOBIG]");
    says_bye_and_closes(&mut c);
    // The same before login.
    let mut early = greeted(port);
    early.send(b"a7 LOGIN {4294967295+}\r\n");
    expect(&early.imap_until("a7"), "a7 NO [TOOBIG]");
    says_bye_and_closes(&mut early);
    let grown = rig.server.rss_kib().saturating_sub(before);
    assert!(
        grown < 8 * 1024,
        "the announcements grew the server by {grown} KiB"
    );

    // A non-synchronizing literal whose size does not fit 32 bits: where its data ends cannot
    // be known, so nothing after it may run as a command. Refused, and the connection closed.
    let mut c = logged_in(port);
    c.send(b"a8 APPEND INBOX {99999999999999999999+}\r\nb1 CREATE Smuggled\r\n");
    expect(&c.imap_until("a8"), "a8 BAD");
    says_bye_and_closes(&mut c);
    rig.server.assert_alive();
    imap_still_serves(port);
    let folders = bob_folders(port);
    assert!(
        !folders.contains("Smuggled"),
        "the smuggled CREATE ran:\n{folders}"
    );
    assert_eq!(bob_messages(port), 0);
}

#[test]
fn an_append_over_the_size_limit_is_refused_and_nothing_is_stored() {
    let mut rig = Rig::with_imap("");
    let port = rig.port("imap");
    let mut c = selected(port);
    // The limit is [smtp] max_message_size, 64 KB here.
    c.send(b"a1 APPEND INBOX {100000}\r\n");
    expect(&c.imap_until("a1"), "a1 NO [TOOBIG]");
    expect(&c.imap("a2 NOOP"), "a2 OK");
    // Non-synchronizing and under twice the limit: already on its way, so read through,
    // then refused.
    let reply = append(&mut c, "a3", "INBOX", &message(3, 100_000));
    expect(&reply, "a3 NO [TOOBIG]");
    expect(&c.imap("a4 NOOP"), "a4 OK");
    // Just under the limit is stored.
    expect(
        &append(&mut c, "a5", "INBOX", &message(5, 60_000)),
        "a5 OK [APPENDUID",
    );
    expect(&c.imap("a6 LOGOUT"), "a6 OK");
    assert_eq!(bob_messages(port), 1);
    rig.server.assert_alive();
    imap_still_serves(port);
}

/// (Such a client is let go by the autologout timer, as any idle client: the next test shortens
/// `imap_idle_timeout` to see it.)
#[test]
fn a_literal_that_never_ends_costs_bounded_memory_and_stores_nothing() {
    let mut rig = Rig::with_imap("");
    let port = rig.port("imap");
    let mut c = logged_in(port);
    // Measured after the logins: an argon2id check takes 19 MiB of its own, which the
    // allocator may keep.
    let before = rig.server.rss_kib();
    c.send(b"a1 APPEND INBOX {60000}\r\n");
    expect(&c.imap_response(), "+");
    c.send(&[b'x'; 30_000]);
    // Before login too: a LOGIN whose password literal stops half-way.
    let mut early = greeted(port);
    early.send(b"a2 LOGIN bob@example.jp {1000}\r\n");
    expect(&early.imap_response(), "+");
    early.send(b"only a few octets");
    std::thread::sleep(Duration::from_millis(200));
    let grown = rig.server.rss_kib().saturating_sub(before);
    println!("two unfinished literals: the server's RSS grew {grown} KiB");
    assert!(
        grown < 4 * 1024,
        "unfinished literals grew the server by {grown} KiB"
    );
    // Others are served meanwhile; bob's INBOX has nothing half-appended.
    imap_still_serves(port);
    assert_eq!(bob_messages(port), 0);
    // The clients go away: still nothing stored, and no session left behind.
    drop(c);
    drop(early);
    rig.server.assert_alive();
    imap_still_serves(port);
    assert_eq!(bob_messages(port), 0);
}

/// The same unfinished literals end with the idle timeout: `* BYE`, the connection closed,
/// nothing stored.
#[test]
fn a_literal_that_never_ends_is_given_up_after_the_idle_timeout() {
    let rig = Rig::with_imap("[limits]\nimap_idle_timeout = \"3s\"\n");
    let port = rig.port("imap");
    let mut c = logged_in(port);
    c.send(b"a1 APPEND INBOX {60000}\r\n");
    expect(&c.imap_response(), "+");
    c.send(&[b'x'; 30_000]);
    let mut early = greeted(port);
    early.send(b"a2 LOGIN bob@example.jp {1000}\r\n");
    expect(&early.imap_response(), "+");
    early.send(b"only a few octets");
    for client in [&mut c, &mut early] {
        let reply = client.imap_response();
        assert!(reply.starts_with("* BYE"), "{reply:?}");
        assert!(client.closes(), "the connection stays open after BYE");
    }
    imap_still_serves(port);
    assert_eq!(bob_messages(port), 0);
}

#[test]
fn nul_bytes_and_invalid_utf8_get_clear_replies() {
    let mut rig = Rig::with_imap("");
    let port = rig.port("imap");
    let mut c = greeted(port);
    // Before login.
    for (line, tag) in [
        (&b"\0\0\0\0\r\n"[..], "*"),
        (b"\xff\xfe\xfd\r\n", "*"),
        (b"a1 NO\0OP\r\n", "a1"),
        (b"a2 LOGIN b\0b@example.jp pw\r\n", "a2"),
        (b"a3 LOGIN \"b\xffb@example.jp\" pw\r\n", "a3"),
        (b"a4 CAPABILITY\0\r\n", "a4"),
    ] {
        c.send(line);
        let reply = c.imap_until(tag);
        assert!(
            last_line(&reply).starts_with(&format!("{tag} BAD")),
            "{line:?}: {reply:?}"
        );
    }
    // No literal may hold a NUL (only BINARY's literal8, which is not offered).
    c.send(b"a5 LOGIN bob@example.jp {4+}\r\n\xff\xfe\0x\r\n");
    expect(&c.imap_until("a5"), "a5 BAD");
    expect(
        &c.imap(&format!("a6 LOGIN bob@example.jp {PASSWORD}")),
        "a6 OK",
    );
    // In mailbox names.
    for (line, tag, answer) in [
        (&b"b1 SELECT \"IN\0BOX\"\r\n"[..], "b1", "b1 BAD"),
        (b"b2 SELECT \xff\xfe\r\n", "b2", "b2 BAD"),
        (b"b3 CREATE \"caf\xff\"\r\n", "b3", "b3 BAD"),
        (b"b4 CREATE {4+}\r\n\xff\xfeab\r\n", "b4", "b4 NO [CANNOT]"),
        (b"b5 CREATE {3+}\r\na\0b\r\n", "b5", "b5 BAD"),
        (b"b6 SELECT {2+}\r\n\xc3\xa9\r\n", "b6", "b6 NO"),
        (b"b7 LIST \"\" \"\xff*\"\r\n", "b7", "b7 BAD"),
        (b"b8 RENAME INBOX {3+}\r\n\xe3\x81\x82\r\n", "b8", "b8 NO"),
    ] {
        c.send(line);
        let reply = c.imap_until(tag);
        assert!(
            last_line(&reply).starts_with(answer),
            "{line:?}: expected {answer:?}, got {reply:?}"
        );
    }
    let folders = c.imap("b9 LIST \"\" \"*\"");
    expect(&folders, "b9 OK");
    assert_eq!(folders.matches("* LIST").count(), 1, "{folders}");
    // In a message: invalid UTF-8 is kept as it is.
    let body = b"Subject: binary\r\n\r\ninvalid \xff\xfe utf-8, \xe3\x81\x82 valid\r\n";
    expect(&append(&mut c, "c1", "INBOX", body), "c1 OK [APPENDUID");
    expect(&c.imap("c2 SELECT INBOX"), "c2 OK");
    let fetched = c.imap("c3 FETCH 1 BODY.PEEK[]");
    expect(&fetched, "c3 OK");
    // (Replies are read through from_utf8_lossy: compare what survives that here, and the
    // bytes on disk below.)
    assert!(
        fetched.contains(&*String::from_utf8_lossy(body)),
        "{fetched:?}"
    );
    let inbox = rig.dir.path().join("dirmail-data/mail/example.jp/bob");
    let stored: Vec<Vec<u8>> = ["new", "cur"]
        .iter()
        .filter_map(|sub| std::fs::read_dir(inbox.join(sub)).ok())
        .flatten()
        .filter_map(|entry| std::fs::read(entry.ok()?.path()).ok())
        .collect();
    assert!(
        stored.iter().any(|m| m.as_slice() == body),
        "stored differently: {stored:?}"
    );
    expect(&c.imap("c4 NOOP"), "c4 OK");
    rig.server.assert_alive();
    imap_still_serves(port);
}

#[test]
fn invalid_base64_in_authenticate_is_refused_and_authenticate_still_works() {
    let rig = Rig::with_imap("");
    let port = rig.port("imap");
    let mut c = greeted(port);
    expect(&c.imap("a1 AUTHENTICATE PLAIN @@@not-base64@@@"), "a1 BAD");
    c.send(b"a2 AUTHENTICATE PLAIN\r\n");
    expect(&c.imap_response(), "+");
    c.send(b"dGlt$$$\r\n");
    expect(&c.imap_until("a2"), "a2 BAD");
    c.send(b"a3 AUTHENTICATE LOGIN\r\n");
    expect(&c.imap_response(), "+");
    c.send(b"!!!!\r\n");
    expect(&c.imap_until("a3"), "a3 BAD");
    // Valid base64 of something that is no PLAIN response.
    expect(
        &c.imap(&format!("a4 AUTHENTICATE PLAIN {}", b64("no nul in here"))),
        "a4 NO",
    );
    expect(&c.imap("a5 NOOP"), "a5 OK");
    let plain = b64(&format!("\0bob@example.jp\0{PASSWORD}"));
    expect(&c.imap(&format!("a6 AUTHENTICATE PLAIN {plain}")), "a6 OK");
    expect(&c.imap("a7 SELECT INBOX"), "a7 OK");
    imap_still_serves(port);
}

#[test]
fn a_sasl_exchange_cancelled_with_a_star_ends_cleanly() {
    let rig = Rig::with_imap("");
    let port = rig.port("imap");
    let mut c = greeted(port);
    c.send(b"a1 AUTHENTICATE PLAIN\r\n");
    expect(&c.imap_response(), "+");
    c.send(b"*\r\n");
    expect(&c.imap_until("a1"), "a1 BAD");
    c.send(b"a2 AUTHENTICATE LOGIN\r\n");
    expect(&c.imap_response(), "+");
    c.send(format!("{}\r\n", b64("bob@example.jp")).as_bytes());
    expect(&c.imap_response(), "+");
    c.send(b"*\r\n");
    expect(&c.imap_until("a2"), "a2 BAD");
    // Not logged in.
    expect(&c.imap("a3 SELECT INBOX"), "a3 BAD");
    c.send(b"a4 AUTHENTICATE LOGIN\r\n");
    expect(&c.imap_response(), "+");
    c.send(format!("{}\r\n", b64("bob@example.jp")).as_bytes());
    expect(&c.imap_response(), "+");
    c.send(format!("{}\r\n", b64(PASSWORD)).as_bytes());
    expect(&c.imap_until("a4"), "a4 OK");
    expect(&c.imap("a5 SELECT INBOX"), "a5 OK");
    imap_still_serves(port);
}

#[test]
fn commands_out_of_state_are_refused() {
    let rig = Rig::with_imap("");
    let port = rig.port("imap");
    fill_bob(port, 2, 200);
    // Before login.
    let mut c = greeted(port);
    for (n, command) in [
        "SELECT INBOX",
        "EXAMINE INBOX",
        "FETCH 1 FLAGS",
        "UID FETCH 1 FLAGS",
        "LIST \"\" \"*\"",
        "STATUS INBOX (MESSAGES)",
        "EXPUNGE",
        "IDLE",
    ]
    .iter()
    .enumerate()
    {
        let tag = format!("a{n}");
        expect(&c.imap(&format!("{tag} {command}")), &format!("{tag} BAD"));
    }
    c.send(b"a9 APPEND INBOX {3+}\r\nabc\r\n");
    expect(&c.imap_until("a9"), "a9 BAD");
    // Logged in, nothing selected.
    let mut c = logged_in(port);
    for (n, command) in [
        "FETCH 1 FLAGS",
        "STORE 1 +FLAGS (\\Deleted)",
        "EXPUNGE",
        "SEARCH ALL",
        "COPY 1 INBOX",
        "CLOSE",
        &format!("LOGIN bob@example.jp {PASSWORD}"),
        "STARTTLS",
        "AUTHENTICATE PLAIN",
    ]
    .iter()
    .enumerate()
    {
        let tag = format!("b{n}");
        expect(&c.imap(&format!("{tag} {command}")), &format!("{tag} BAD"));
    }
    // EXAMINE is read-only: nothing may change, nothing may be expunged.
    expect(&c.imap("c1 SELECT INBOX"), "c1 OK [READ-WRITE]");
    expect(&c.imap("c2 STORE 1 +FLAGS.SILENT (\\Deleted)"), "c2 OK");
    expect(&c.imap("c3 EXAMINE INBOX"), "c3 OK [READ-ONLY]");
    expect(&c.imap("c4 EXPUNGE"), "c4 NO [READ-ONLY]");
    expect(&c.imap("c5 UID EXPUNGE 1:*"), "c5 NO [READ-ONLY]");
    expect(
        &c.imap("c6 STORE 2 +FLAGS (\\Deleted)"),
        "c6 NO [READ-ONLY]",
    );
    expect(&c.imap("c7 MOVE 1 INBOX"), "c7 NO [READ-ONLY]");
    expect(&c.imap("c8 CLOSE"), "c8 OK");
    assert_eq!(bob_messages(port), 2, "a read-only session expunged");
    // IDLE ends with DONE and nothing else.
    expect(&c.imap("d1 SELECT INBOX"), "d1 OK");
    c.send(b"d2 IDLE\r\n");
    expect(&c.imap_response(), "+");
    c.send(b"d3 NOOP\r\n");
    expect(&c.imap_until("d2"), "d2 BAD");
    expect(&c.imap("d4 NOOP"), "d4 OK");
    imap_still_serves(port);
}

/// "1,2,3,…,n".
fn list_of(n: u32) -> String {
    (1..=n).map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

#[test]
fn bad_and_enormous_sequence_sets_get_clear_replies_quickly() {
    // A 1 MB limit so that a set of 100 000 numbers fits in one command.
    let rig = Rig::with_imap("[smtp]\nmax_message_size = \"1MB\"\n");
    let port = rig.port("imap");
    fill_bob(port, 3, 200);
    let mut c = selected(port);
    let fetches = |reply: &str| reply.matches(" FETCH (").count();
    expect(&c.imap("a1 FETCH 0 FLAGS"), "a1 BAD");
    expect(&c.imap("a2 FETCH 0:2 FLAGS"), "a2 BAD");
    let reply = c.imap("a3 FETCH *:* FLAGS");
    expect(&reply, "a3 OK");
    assert!(
        reply.starts_with("* 3 FETCH") && fetches(&reply) == 1,
        "{reply}"
    );
    expect(&c.imap("a4 FETCH 4294967296 FLAGS"), "a4 BAD");
    expect(&c.imap("a5 FETCH 4294967295 FLAGS"), "a5 BAD");
    let reply = c.imap("a6 FETCH 3:1 FLAGS");
    expect(&reply, "a6 OK");
    assert_eq!(fetches(&reply), 3, "{reply}");
    let reply = c.imap("a7 FETCH 1:2,2:3,1 FLAGS");
    assert_eq!(fetches(&reply), 3, "each message once: {reply}");
    let reply = c.imap("a8 UID FETCH 1:4294967295 FLAGS");
    expect(&reply, "a8 OK");
    assert_eq!(fetches(&reply), 3, "{reply}");

    let hundred_thousand = list_of(100_000);
    let ones = vec!["1"; 100_000].join(",");
    let started = Instant::now();
    expect(
        &c.imap(&format!("b1 FETCH {hundred_thousand} FLAGS")),
        "b1 BAD",
    );
    let reply = c.imap(&format!("b2 UID FETCH {hundred_thousand} FLAGS"));
    expect(&reply, "b2 OK");
    assert_eq!(fetches(&reply), 3, "{reply}");
    let reply = c.imap(&format!("b3 FETCH {ones} FLAGS"));
    expect(&reply, "b3 OK");
    assert_eq!(fetches(&reply), 1, "{reply}");
    expect(
        &c.imap(&format!(
            "b4 UID STORE {hundred_thousand} +FLAGS.SILENT (\\Flagged)"
        )),
        "b4 OK",
    );
    let reply = c.imap(&format!("b5 SEARCH {hundred_thousand}"));
    expect(&reply, "b5 OK");
    assert!(reply.contains("* SEARCH 1 2 3\r\n"), "{reply}");
    let reply = c.imap(&format!("b6 UID SEARCH UID {hundred_thousand} FLAGGED"));
    expect(&reply, "b6 OK");
    assert!(reply.contains("* SEARCH 1 2 3\r\n"), "{reply}");
    expect(
        &c.imap(&format!("b7 COPY {hundred_thousand} INBOX")),
        "b7 BAD",
    );
    let took = started.elapsed();
    println!("seven commands with 100 000 numbers each took {took:?}");
    assert!(took < Duration::from_secs(10), "they took {took:?}");
    assert_eq!(bob_messages(port), 3);
    imap_still_serves(port);
}

/// A message `depth` multiparts deep.
fn nested_multipart(depth: usize) -> Vec<u8> {
    let mut text = String::from("From: deep@client.example\r\nSubject: deep\r\n");
    for level in 0..depth {
        text.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{level}\"\r\n\r\n--b{level}\r\n"
        ));
    }
    text.push_str("Content-Type: text/plain\r\n\r\nthe leaf\r\n");
    for level in (0..depth).rev() {
        text.push_str(&format!("--b{level}--\r\n"));
    }
    text.into_bytes()
}

/// A message `depth` message/rfc822 parts deep.
fn nested_messages(depth: usize) -> Vec<u8> {
    let mut text = String::from("From: deep@client.example\r\nSubject: deep\r\n");
    for _ in 0..depth {
        text.push_str("Content-Type: message/rfc822\r\n\r\n");
    }
    text.push_str("Subject: the innermost\r\n\r\nthe leaf\r\n");
    text.into_bytes()
}

#[test]
fn deep_nesting_in_commands_and_messages_is_stack_safe() {
    let mut rig = Rig::with_imap("");
    let port = rig.port("imap");
    let mut c = logged_in(port);
    expect(
        &append(&mut c, "m1", "INBOX", &nested_multipart(700)),
        "m1 OK",
    );
    expect(
        &append(&mut c, "m2", "INBOX", &nested_messages(1_500)),
        "m2 OK",
    );
    expect(&c.imap("m3 SELECT INBOX"), "m3 OK");
    // Parentheses, NOTs and ORs nested tens of thousands deep (within the largest command).
    let deep = 50_000;
    for (tag, command) in [
        (
            "a1",
            format!("SEARCH {}ALL{}", "(".repeat(deep), ")".repeat(deep)),
        ),
        ("a2", format!("SEARCH {}ALL", "NOT ".repeat(30_000))),
        (
            "a3",
            format!("SEARCH {}ALL{}", "OR ALL ".repeat(deep / 4), ""),
        ),
        (
            "a4",
            format!("FETCH 1 {}FLAGS{}", "(".repeat(deep), ")".repeat(deep)),
        ),
        (
            "a5",
            format!(
                "FETCH 1 BODY.PEEK[HEADER.FIELDS {}SUBJECT{}]",
                "(".repeat(deep),
                ")".repeat(deep)
            ),
        ),
    ] {
        let reply = c.imap(&format!("{tag} {command}"));
        assert!(
            last_line(&reply).starts_with(&format!("{tag} BAD")),
            "{tag}: {reply:?}"
        );
        rig.server.assert_alive();
    }
    // A little nesting is fine.
    let reply = c.imap("a6 SEARCH (((NOT (OR SEEN (DELETED)))))");
    expect(&reply, "a6 OK");
    // The deep messages: structure, parts and text search are bounded walks.
    for (tag, command) in [
        ("b1", "FETCH 1:2 BODYSTRUCTURE".to_owned()),
        ("b2", "FETCH 1:2 (BODY ENVELOPE)".to_owned()),
        (
            "b3",
            format!("FETCH 1:2 BODY.PEEK[{}]", vec!["1"; 2_000].join(".")),
        ),
        (
            "b4",
            format!("FETCH 1:2 BODY.PEEK[{}.MIME]", vec!["1"; 600].join(".")),
        ),
        ("b5", "SEARCH TEXT \"the leaf\"".to_owned()),
        ("b6", "SEARCH BODY innermost HEADER Subject deep".to_owned()),
    ] {
        let reply = c.imap(&format!("{tag} {command}"));
        expect(&reply, &format!("{tag} OK"));
        rig.server.assert_alive();
    }
    imap_still_serves(port);
}

#[test]
fn too_many_errors_close_the_session() {
    let rig = Rig::with_imap("");
    let port = rig.port("imap");
    // Before login: bad commands and commands out of state all count.
    let mut c = greeted(port);
    let mut closed_after = None;
    for n in 1..=40 {
        let command = if n % 2 == 0 { "FROB" } else { "SELECT INBOX" };
        let reply = c.imap(&format!("x{n} {command}"));
        expect(&reply, &format!("x{n} BAD"));
        if c.has_more() {
            says_bye_and_closes(&mut c);
            closed_after = Some(n);
            break;
        }
    }
    println!("closed after {closed_after:?} refused commands");
    assert_eq!(
        closed_after,
        Some(20),
        "the session was not cut off after 20 errors"
    );
    // Once logged in as well; another connection is not affected.
    let mut c = logged_in(port);
    let mut other = logged_in(port);
    let mut closed_after = None;
    for n in 1..=40 {
        let reply = c.imap(&format!("y{n} FETCH 1 FLAGS"));
        expect(&reply, &format!("y{n} BAD"));
        if c.has_more() {
            says_bye_and_closes(&mut c);
            closed_after = Some(n);
            break;
        }
    }
    assert_eq!(closed_after, Some(20));
    expect(&other.imap("o1 SELECT INBOX"), "o1 OK");
    imap_still_serves(port);
}

#[test]
fn a_huge_pipelined_burst_gets_one_reply_per_command_in_order() {
    let rig = Rig::with_imap("");
    let port = rig.port("imap");
    fill_bob(port, 3, 300);
    // Ten thousand NOOPs in one write, before login.
    let mut c = greeted(port);
    const NOOPS: usize = 10_000;
    let burst: String = (0..NOOPS).map(|i| format!("n{i} NOOP\r\n")).collect();
    let writer = c.stream().try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        let mut writer = writer;
        writer.write_all(burst.as_bytes()).expect("send the burst");
    });
    for i in 0..NOOPS {
        let reply = c.imap_response();
        assert!(
            reply.starts_with(&format!("n{i} OK")),
            "NOOP {i}: got {reply:?}"
        );
    }
    sender.join().expect("the sender");
    // A mixed burst in a selected mailbox.
    expect(
        &c.imap(&format!("l1 LOGIN bob@example.jp {PASSWORD}")),
        "l1 OK",
    );
    expect(&c.imap("l2 SELECT INBOX"), "l2 OK");
    const ROUNDS: usize = 1_000;
    let burst: String = (0..ROUNDS)
        .map(|i| {
            format!(
                "p{i} NOOP\r\nq{i} FETCH 2 (UID FLAGS)\r\nr{i} UID SEARCH ALL\r\ns{i} STORE 3 FLAGS.SILENT (\\Seen)\r\n"
            )
        })
        .collect();
    let writer = c.stream().try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        let mut writer = writer;
        writer.write_all(burst.as_bytes()).expect("send the burst");
    });
    for i in 0..ROUNDS {
        expect(&c.imap_until(&format!("p{i}")), &format!("p{i} OK"));
        let fetch = c.imap_until(&format!("q{i}"));
        assert!(
            fetch.starts_with("* 2 FETCH (UID 2 FLAGS")
                && fetch.ends_with(&format!("q{i} OK FETCH completed\r\n")),
            "round {i}: {fetch:?}"
        );
        let search = c.imap_until(&format!("r{i}"));
        assert!(
            search.starts_with("* SEARCH 1 2 3\r\n"),
            "round {i}: {search:?}"
        );
        expect(&c.imap_until(&format!("s{i}")), &format!("s{i} OK"));
    }
    sender.join().expect("the sender");
    expect(&c.imap("z9 LOGOUT"), "z9 OK");
    imap_still_serves(port);
}

#[test]
fn a_client_that_reads_nothing_is_not_buffered_without_bound() {
    let mut rig = Rig::with_imap("");
    let port = rig.port("imap");
    fill_bob(port, 40, 60_000);
    imap_still_serves(port);
    // Measured after the login: an argon2id check takes 19 MiB of its own, which the
    // allocator may keep.
    let mut deaf = selected(port);
    let before = rig.server.rss_kib();
    // Each FETCH asks for 2.4 MB; the client never reads it.
    let chunk = "a FETCH 1:* BODY.PEEK[]\r\n".repeat(1_000);
    let limit = 64 << 20;
    let sent = deaf.push_until_blocked(chunk.as_bytes(), limit, Duration::from_secs(2));
    assert!(
        sent < limit,
        "the server took {sent} octets of commands without its replies being read"
    );
    let grown = rig.server.rss_kib().saturating_sub(before);
    println!("the server stopped reading after {sent} octets; its RSS grew {grown} KiB");
    assert!(
        grown < 48 * 1024,
        "a client that reads nothing grew the server by {grown} KiB after {sent} octets"
    );
    // Others are served while it sits there.
    imap_still_serves(port);
    drop(deaf);
    rig.server.assert_alive();
    imap_still_serves(port);
}

#[test]
fn a_fetch_naming_the_same_bytes_over_and_over_costs_bounded_memory() {
    let mut rig = Rig::with_imap("");
    let port = rig.port("imap");
    fill_bob(port, 1, 60_000);
    let mut c = selected(port);
    let before = rig.server.rss_kib();
    let peak_while_unread = |rig: &Rig| {
        let mut peak = 0;
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(50));
            peak = peak.max(rig.server.rss_kib());
        }
        peak
    };
    // The whole message a thousand times over: 60 MB of reply for 12 KB of command.
    c.send(
        format!(
            "a1 FETCH 1 ({})\r\n",
            "BODY.PEEK[] ".repeat(1_000).trim_end()
        )
        .as_bytes(),
    );
    let grown = peak_while_unread(&rig).saturating_sub(before);
    let reply = c.imap_until("a1");
    println!(
        "BODY.PEEK[] 1000 times: the server's RSS grew {grown} KiB, the reply is {} octets",
        reply.len()
    );
    assert!(
        grown < 24 * 1024,
        "the FETCH grew the server by {grown} KiB"
    );
    expect(&reply, "a1 OK");
    assert!(
        reply.len() < 200_000,
        "the reply has {} octets",
        reply.len()
    );
    // Overlapping ranges of it, each a different item.
    let ranges: Vec<String> = (0..1_000)
        .map(|i| format!("BODY.PEEK[]<{i}.60000>"))
        .collect();
    c.send(format!("a2 FETCH 1 ({})\r\n", ranges.join(" ")).as_bytes());
    let grown = peak_while_unread(&rig).saturating_sub(before);
    let reply = c.imap_until("a2");
    println!(
        "1000 overlapping ranges: the server's RSS grew {grown} KiB, the reply is {} octets",
        reply.len()
    );
    assert!(
        grown < 24 * 1024,
        "the FETCH grew the server by {grown} KiB"
    );
    assert!(
        reply.len() < 1_000_000,
        "the reply has {} octets",
        reply.len()
    );
    expect(&reply, "a2 NO [LIMIT]");
    // A reasonable mix is still answered whole.
    let reply = c.imap("a3 FETCH 1 (BODY.PEEK[HEADER] BODY.PEEK[TEXT] BODY.PEEK[] RFC822.SIZE)");
    expect(&reply, "a3 OK");
    assert!(
        reply.len() > 110_000,
        "the reply has {} octets",
        reply.len()
    );
    rig.server.assert_alive();
    imap_still_serves(port);
}

#[test]
fn slow_drip_clients_are_answered_and_do_not_hold_up_others() {
    let rig = Rig::with_imap("");
    let port = rig.port("imap");
    fill_bob(port, 1, 100);
    let mut slow = greeted(port);
    let drip = |client: &mut Client, text: &str| {
        for byte in text.as_bytes() {
            client.send(std::slice::from_ref(byte));
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    drip(
        &mut slow,
        &format!("a1 LOGIN bob@example.jp {PASSWORD}\r\n"),
    );
    expect(&slow.imap_until("a1"), "a1 OK");
    // A whole session by someone else while the slow one is mid-conversation.
    imap_still_serves(port);
    drip(
        &mut slow,
        "a2 SELECT INBOX\r\na3 FETCH 1 (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n",
    );
    expect(&slow.imap_until("a2"), "a2 OK");
    let fetch = slow.imap_until("a3");
    expect(&fetch, "a3 OK");
    assert!(fetch.contains("Subject: filler 0"), "{fetch}");
    // A literal dripped in.
    drip(
        &mut slow,
        "a4 APPEND INBOX {20+}\r\nSubject: drip\r\n\r\nx\r\n\r\n",
    );
    expect(&slow.imap_until("a4"), "a4 OK");
    drip(&mut slow, "a5 LOGOUT\r\n");
    expect(&slow.imap_until("a5"), "a5 OK");
    assert_eq!(bob_messages(port), 2);
}

#[test]
fn commands_pipelined_after_starttls_never_run() {
    let rig = Rig::with_imap("[server]\nlogging = 3\n");
    let port = rig.port("imap");
    let mut c = greeted(port);
    let caps = c.imap("a0 CAPABILITY");
    assert!(caps.contains("STARTTLS"), "{caps}");
    // One write: STARTTLS, and what an attacker in the path appended in clear text (which
    // loopback's plaintext_auth would let run).
    c.send(
        format!(
            "a1 STARTTLS\r\nb1 LOGIN bob@example.jp {PASSWORD}\r\nb2 CREATE Injected\r\nb3 SELECT INBOX\r\n"
        )
        .as_bytes(),
    );
    let reply = c.imap_until("a1");
    assert_eq!(
        last_line(&reply).split(' ').take(2).collect::<Vec<_>>(),
        ["a1", "OK"]
    );
    assert!(!reply.contains("b1"), "{reply}");
    std::thread::sleep(Duration::from_millis(300));
    let mut tls = TlsClient::handshake(c, &rig.certificate());
    let caps = tls.imap("c1 CAPABILITY");
    assert!(
        !caps.contains("b1") && !caps.contains("b2") && !caps.contains("b3"),
        "{caps}"
    );
    assert!(!caps.contains("STARTTLS"), "{caps}");
    expect(&caps, "c1 OK");
    // Not logged in: the injected LOGIN never ran.
    expect(&tls.imap("c2 SELECT INBOX"), "c2 BAD");
    expect(
        &tls.imap(&format!("c3 LOGIN bob@example.jp {PASSWORD}")),
        "c3 OK",
    );
    let folders = tls.imap("c4 LIST \"\" \"*\"");
    expect(&folders, "c4 OK");
    assert!(!folders.contains("Injected"), "{folders}");
    expect(&tls.imap("c5 STARTTLS"), "c5 BAD");
    expect(&tls.imap("c6 LOGOUT"), "c6 OK");
    let log = rig.server.log();
    assert_eq!(log.matches("imap login").count(), 1, "{log}");
    imap_still_serves(port);
}

#[test]
fn clear_text_logins_are_refused_without_tls_when_the_policy_says_so() {
    let rig = Rig::with_imap("[tls]\nplaintext_auth = \"tls\"\n[server]\nlogging = 3\n");
    let port = rig.port("imap");
    let mut c = Client::connect(port);
    let greeting = c.imap_response();
    assert!(
        greeting.contains("STARTTLS") && greeting.contains("LOGINDISABLED"),
        "{greeting}"
    );
    assert!(!greeting.contains("AUTH=PLAIN"), "{greeting}");
    let started = Instant::now();
    expect(
        &c.imap(&format!("a1 LOGIN bob@example.jp {PASSWORD}")),
        "a1 NO [PRIVACYREQUIRED]",
    );
    let plain = b64(&format!("\0bob@example.jp\0{PASSWORD}"));
    expect(
        &c.imap(&format!("a2 AUTHENTICATE PLAIN {plain}")),
        "a2 NO [PRIVACYREQUIRED]",
    );
    expect(&c.imap("a3 AUTHENTICATE LOGIN"), "a3 NO [PRIVACYREQUIRED]");
    expect(
        &c.imap("a4 LOGIN bob@example.jp Wrong-guess"),
        "a4 NO [PRIVACYREQUIRED]",
    );
    // Refused before any password is looked at: no throttle delay, nothing in the log.
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(250),
        "the refusals took {took:?}"
    );
    expect(&c.imap("a5 SELECT INBOX"), "a5 BAD");
    // From another address as well.
    let mut other = Client::connect_from(Ipv4Addr::new(127, 0, 0, 2), port);
    expect(&other.imap_response(), "* OK");
    expect(
        &other.imap(&format!("o1 LOGIN bob@example.jp {PASSWORD}")),
        "o1 NO [PRIVACYREQUIRED]",
    );
    // Inside TLS the same login works.
    expect(&c.imap("a6 STARTTLS"), "a6 OK");
    let mut tls = TlsClient::handshake(c, &rig.certificate());
    let caps = tls.imap("b1 CAPABILITY");
    assert!(
        caps.contains("AUTH=PLAIN") && !caps.contains("LOGINDISABLED"),
        "{caps}"
    );
    expect(
        &tls.imap(&format!("b2 LOGIN bob@example.jp {PASSWORD}")),
        "b2 OK",
    );
    expect(&tls.imap("b3 SELECT INBOX"), "b3 OK");
    let log = rig.server.log();
    assert!(!log.contains("imap login refused"), "{log}");
    for secret in [PASSWORD, "Wrong-guess", &plain] {
        assert!(!log.contains(secret), "the log holds {secret:?}:\n{log}");
    }
}

#[test]
fn password_guessing_slows_that_address_down_and_not_others() {
    let rig = Rig::with_imap("[server]\nlogging = 3\n");
    let port = rig.port("imap");
    let wrong = |n: usize| format!("Wrong-imap-guess-{n}");
    // Each refusal from 127.0.0.1 waits at least the throttle's delay: 250 ms, doubling.
    let mut waits = Vec::new();
    for n in 1..=4 {
        let mut c = greeted(port);
        let user = if n == 1 {
            "nosuch@example.jp"
        } else {
            "bob@example.jp"
        };
        let started = Instant::now();
        let reply = if n == 3 {
            c.imap(&format!(
                "g{n} AUTHENTICATE PLAIN {}",
                b64(&format!("\0{user}\0{}", wrong(n)))
            ))
        } else {
            c.imap(&format!("g{n} LOGIN {user} {}", wrong(n)))
        };
        waits.push(started.elapsed());
        expect(&reply, &format!("g{n} NO [AUTHENTICATIONFAILED]"));
    }
    for (i, wait) in waits.iter().enumerate() {
        let least = Duration::from_millis(250) * (1 << i);
        assert!(
            *wait >= least,
            "refusal {}: answered after {wait:?}, before {least:?}",
            i + 1
        );
    }
    // The fifth guess (held for 4 s) and a login from another address at the same time: the
    // other address is answered while the guess is still held.
    let mut guesser = greeted(port);
    guesser.send(format!("g5 LOGIN bob@example.jp {}\r\n", wrong(5)).as_bytes());
    let started = Instant::now();
    let mut other = Client::connect_from(Ipv4Addr::new(127, 0, 0, 2), port);
    expect(&other.imap_response(), "* OK");
    expect(
        &other.imap(&format!("o1 LOGIN carol@example.jp {CAROL_PASSWORD}")),
        "o1 OK",
    );
    expect(&other.imap("o2 SELECT INBOX"), "o2 OK");
    let other_done = started.elapsed();
    expect(&guesser.imap_until("g5"), "g5 NO [AUTHENTICATIONFAILED]");
    let guess_done = started.elapsed();
    println!(
        "refusals from one address waited {waits:?}; another address logged in after \
         {other_done:?}, the guess was answered after {guess_done:?}"
    );
    assert!(
        other_done < guess_done,
        "the other address waited {other_done:?}, the guesser {guess_done:?}"
    );
    let log = rig.server.log();
    assert!(log.contains("imap login refused"), "{log}");
    assert!(log.contains("unknown user"), "{log}");
    assert!(log.contains("bad password"), "{log}");
    let mut secrets: Vec<String> = (1..=5).map(wrong).collect();
    secrets.push(PASSWORD.to_owned());
    secrets.push(CAROL_PASSWORD.to_owned());
    secrets.push(b64(&format!("\0bob@example.jp\0{}", wrong(3))));
    for secret in secrets {
        assert!(!log.contains(&secret), "the log holds {secret:?}:\n{log}");
    }
}

#[track_caller]
fn starts(line: &str, prefix: &str) {
    assert!(
        line.starts_with(prefix),
        "expected {prefix:?}, got {line:?}"
    );
}

#[test]
fn a_silent_client_is_logged_out_with_bye_after_the_configured_timeout() {
    let rig = Rig::with_imap("[limits]\nimap_idle_timeout = \"3s\"\n");
    let port = rig.port("imap");
    // Before login the leash is 3 minutes, or the idle timeout when shorter.
    let mut anonymous = Client::connect(port);
    starts(&anonymous.line(), "* OK");
    let mut logged_in = Client::connect(port);
    starts(&logged_in.line(), "* OK");
    logged_in.send(format!("a1 LOGIN bob@example.jp {PASSWORD}\r\n").as_bytes());
    let mut reply = logged_in.line();
    while reply.starts_with("* ") {
        reply = logged_in.line();
    }
    starts(&reply, "a1 OK");
    logged_in.send(b"a2 SELECT INBOX\r\n");
    loop {
        let line = logged_in.line();
        if line.starts_with("a2 ") {
            starts(&line, "a2 OK");
            break;
        }
        assert!(!line.is_empty(), "the server closed during SELECT");
    }
    // Half a command, then nothing.
    logged_in.send(b"a3 NO");
    for c in [&mut anonymous, &mut logged_in] {
        starts(&c.line(), "* BYE");
        assert!(c.closes(), "the connection stays open after BYE");
    }
}

#[test]
fn one_address_gets_its_share_of_the_connections_and_another_still_gets_in() {
    let rig = Rig::with_imap("[limits]\nsocket_max = 4\nper_address_max = 2\nsocket_min = 1\n");
    let port = rig.port("imap");
    let held: Vec<Client> = (0..2)
        .map(|_| {
            let mut c = Client::connect(port);
            starts(&c.line(), "* OK");
            c
        })
        .collect();
    let mut extra = Client::connect(port);
    starts(
        &extra.line(),
        "* BYE [UNAVAILABLE] Too many connections from your address",
    );
    assert!(extra.closes());
    let mut other = Client::connect_from(Ipv4Addr::new(127, 0, 0, 2), port);
    starts(&other.line(), "* OK");
    drop(held);
}
