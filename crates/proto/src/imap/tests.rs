//! In-memory IMAP sessions: a scripted driver plays directory and store; no sockets.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::auth::{Credentials, encode};
use crate::imap::mailbox::{FlagOp, Flags, FolderStatus, keyword_bits};
use crate::names::Secret;

const LUNCH: &str = "From: Alice <alice@example.jp>\r\nTo: bob@example.jp\r\nSubject: Lunch\r\nDate: Mon, 7 Feb 1994 21:52:25 -0800\r\nMessage-ID: <1@example.jp>\r\n\r\nNoodles at noon?\r\n";
const ALTERNATIVE: &str = "From: Carol <carol@example.com>\r\nTo: bob@example.jp\r\nSubject: =?UTF-8?B?5pel5pys?=\r\nDate: Sat, 9 Mar 2024 10:00:00 +0900\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain words\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>html words</p>\r\n--b--\r\n";

#[derive(Debug, Clone)]
struct Stored {
    meta: MessageMeta,
    bytes: Vec<u8>,
}

#[derive(Debug, Clone)]
struct FakeFolder {
    uidvalidity: u32,
    uidnext: u32,
    messages: Vec<Stored>,
    keywords: Vec<String>,
}

impl FakeFolder {
    fn new(uidvalidity: u32) -> Self {
        FakeFolder {
            uidvalidity,
            uidnext: 1,
            messages: Vec::new(),
            keywords: Vec::new(),
        }
    }

    fn add(&mut self, bytes: &[u8], flags: Flags, date: i64) -> u32 {
        let uid = self.uidnext;
        self.uidnext += 1;
        self.messages.push(Stored {
            meta: MessageMeta {
                uid,
                flags,
                size: bytes.len() as u64,
                internal_date: date,
                recent: false,
            },
            bytes: bytes.to_vec(),
        });
        uid
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            uidvalidity: self.uidvalidity,
            uidnext: self.uidnext,
            messages: self.messages.iter().map(|m| m.meta).collect(),
            keywords: self.keywords.clone(),
        }
    }
}

/// Plays directory and store. Accounts (password `secret`): `user@example.jp`,
/// `locked@example.jp` (R13); `temp` is a directory outage.
#[derive(Debug)]
struct Driver {
    folders: BTreeMap<String, FakeFolder>,
    subscribed: BTreeSet<String>,
    selected: Option<String>,
    requests: Vec<Request>,
}

impl Driver {
    fn new() -> Self {
        let mut inbox = FakeFolder::new(1000);
        inbox.add(LUNCH.as_bytes(), Flags::NONE, 1_700_000_000);
        inbox.add(ALTERNATIVE.as_bytes(), Flags::SEEN, 1_710_000_000);
        let big = format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(5000));
        inbox.add(
            big.as_bytes(),
            Flags::FLAGGED.union(Flags::DELETED),
            1_720_000_000,
        );
        let mut folders = BTreeMap::new();
        folders.insert("INBOX".to_owned(), inbox);
        folders.insert("Archive".to_owned(), FakeFolder::new(2000));
        Driver {
            folders,
            subscribed: BTreeSet::new(),
            selected: None,
            requests: Vec::new(),
        }
    }

    fn selected(&mut self) -> Option<&mut FakeFolder> {
        let name = self.selected.clone()?;
        self.folders.get_mut(&name)
    }

    fn respond(&mut self, request: &Request) -> Response {
        self.requests.push(request.clone());
        match request {
            Request::Authenticate(Credentials {
                username, proof, ..
            }) => {
                if username == "temp" {
                    return Response::Failed(Failure::Unavailable);
                }
                let known = ["user@example.jp", "locked@example.jp"];
                if !known.contains(&username.as_str()) || !proof.verify(&Secret::new("secret")) {
                    return Response::BadCredentials;
                }
                if username == "locked@example.jp" {
                    return Response::Locked;
                }
                Response::LoggedIn
            }
            Request::ListFolders => Response::Folders {
                folders: self.folders.keys().cloned().collect(),
                subscribed: self.subscribed.iter().cloned().collect(),
            },
            Request::Create { folder } => {
                if self.folders.contains_key(folder) {
                    return Response::Failed(Failure::AlreadyExists);
                }
                let validity = 3000 + self.folders.len() as u32;
                self.folders
                    .insert(folder.clone(), FakeFolder::new(validity));
                Response::Done
            }
            Request::Delete { folder } => {
                if folder == "INBOX" {
                    return Response::Failed(Failure::Refused("INBOX cannot be deleted".into()));
                }
                match self.folders.remove(folder) {
                    Some(_) => Response::Done,
                    None => Response::Failed(Failure::NoSuchFolder),
                }
            }
            Request::Rename { from, to } => {
                if self.folders.contains_key(to) {
                    return Response::Failed(Failure::AlreadyExists);
                }
                match self.folders.remove(from) {
                    Some(f) => {
                        self.folders.insert(to.clone(), f);
                        Response::Done
                    }
                    None => Response::Failed(Failure::NoSuchFolder),
                }
            }
            Request::Subscribe { folder, subscribe } => {
                if *subscribe {
                    self.subscribed.insert(folder.clone());
                } else {
                    self.subscribed.remove(folder);
                }
                Response::Done
            }
            Request::Status { folder } => match self.folders.get(folder) {
                Some(f) => Response::Status(FolderStatus {
                    messages: f.messages.len() as u32,
                    recent: 0,
                    unseen: f
                        .messages
                        .iter()
                        .filter(|m| !m.meta.flags.contains(Flags::SEEN))
                        .count() as u32,
                    deleted: 0,
                    uidnext: f.uidnext,
                    uidvalidity: f.uidvalidity,
                    size: 0,
                }),
                None => Response::Failed(Failure::NoSuchFolder),
            },
            Request::Select { folder, .. } => match self.folders.get(folder) {
                Some(f) => {
                    let snapshot = f.snapshot();
                    self.selected = Some(folder.clone());
                    Response::Snapshot(snapshot)
                }
                None => Response::Failed(Failure::NoSuchFolder),
            },
            Request::Refresh => match self.selected() {
                Some(f) => Response::Snapshot(f.snapshot()),
                None => Response::Failed(Failure::NoSuchFolder),
            },
            Request::Load { uids } => {
                let Some(f) = self.selected() else {
                    return Response::Failed(Failure::Unavailable);
                };
                Response::Messages(
                    uids.iter()
                        .map(|uid| {
                            f.messages
                                .iter()
                                .find(|m| m.meta.uid == *uid)
                                .map(|m| m.bytes.clone())
                        })
                        .collect(),
                )
            }
            Request::Store {
                uids,
                op,
                flags,
                keywords,
            } => {
                let Some(f) = self.selected() else {
                    return Response::Failed(Failure::Unavailable);
                };
                let (bits, all) = keyword_bits(&mut f.keywords, keywords);
                if !all {
                    return Response::Failed(Failure::Refused("too many keywords".into()));
                }
                let mut out = Vec::new();
                for m in f.messages.iter_mut().filter(|m| uids.contains(&m.meta.uid)) {
                    m.meta.flags = op.apply(m.meta.flags, flags.union(bits));
                    out.push((m.meta.uid, m.meta.flags));
                }
                Response::Flags {
                    changed: out,
                    keywords: f.keywords.clone(),
                }
            }
            Request::Expunge { uids } => {
                let Some(f) = self.selected() else {
                    return Response::Failed(Failure::Unavailable);
                };
                let gone: Vec<u32> = f
                    .messages
                    .iter()
                    .filter(|m| uids.contains(&m.meta.uid) && m.meta.flags.contains(Flags::DELETED))
                    .map(|m| m.meta.uid)
                    .collect();
                f.messages.retain(|m| !gone.contains(&m.meta.uid));
                Response::Expunged(gone)
            }
            Request::Copy { uids, to, remove } => {
                let Some(source) = self.selected.clone() else {
                    return Response::Failed(Failure::Unavailable);
                };
                if !self.folders.contains_key(to) {
                    return Response::Failed(Failure::NoSuchFolder);
                }
                let copies: Vec<Stored> = self.folders[&source]
                    .messages
                    .iter()
                    .filter(|m| uids.contains(&m.meta.uid))
                    .cloned()
                    .collect();
                let from_keywords = self.folders[&source].keywords.clone();
                // What reaches the selected folder is \Recent in this session (the store's rule).
                let recent = self.selected.as_deref() == Some(to.as_str());
                let target = self.folders.get_mut(to).unwrap();
                let mut pairs = Vec::new();
                for m in &copies {
                    let flags = m.meta.flags.remap(&from_keywords, &mut target.keywords);
                    let uid = target.add(&m.bytes, flags, m.meta.internal_date);
                    if let Some(last) = target.messages.last_mut() {
                        last.meta.recent = recent;
                    }
                    pairs.push((m.meta.uid, uid));
                }
                let uidvalidity = target.uidvalidity;
                if *remove {
                    let source = self.folders.get_mut(&source).unwrap();
                    source.messages.retain(|m| !uids.contains(&m.meta.uid));
                }
                Response::Copied { uidvalidity, pairs }
            }
            Request::Append {
                folder,
                flags,
                keywords,
                date,
                message,
            } => match self.folders.get_mut(folder) {
                Some(f) => {
                    let (bits, _) = keyword_bits(&mut f.keywords, keywords);
                    let uid = f.add(message, flags.union(bits), date.unwrap_or(1_750_000_000));
                    if let Some(last) = f.messages.last_mut() {
                        last.meta.recent = self.selected.as_deref() == Some(folder.as_str());
                    }
                    Response::Appended {
                        uidvalidity: f.uidvalidity,
                        uid,
                    }
                }
                None => Response::Failed(Failure::NoSuchFolder),
            },
        }
    }
}

struct Harness {
    session: Session,
    driver: Driver,
    now: Instant,
    closed: bool,
    tls_requested: bool,
}

/// What the session wrote in answer to one input.
#[derive(Debug)]
struct Written(String);

impl Written {
    /// The output contains `text`.
    #[track_caller]
    fn has(self, text: &str) -> Self {
        assert!(self.0.contains(text), "expected {text:?} in:\n{}", self.0);
        self
    }

    #[track_caller]
    fn lacks(self, text: &str) -> Self {
        assert!(
            !self.0.contains(text),
            "did not expect {text:?} in:\n{}",
            self.0
        );
        self
    }

    /// The last line starts with `prefix`.
    #[track_caller]
    fn ends(self, prefix: &str) -> Self {
        let last = self
            .0
            .trim_end_matches("\r\n")
            .rsplit("\r\n")
            .next()
            .unwrap_or("");
        assert!(
            last.starts_with(prefix),
            "expected last line {prefix:?}, got:\n{}",
            self.0
        );
        self
    }

    fn lines(&self) -> Vec<&str> {
        self.0.split_terminator("\r\n").collect()
    }
}

impl Harness {
    fn with(config: Config, tls: bool) -> Harness {
        let now = Instant::now();
        let session = Session::new(config, IpAddr::from([127, 0, 0, 1]), tls, now);
        Harness {
            session,
            driver: Driver::new(),
            now,
            closed: false,
            tls_requested: false,
        }
    }

    /// A TLS session (so clear-text logins are allowed).
    fn new() -> Harness {
        Harness::with(Config::new("mail.example.jp"), true)
    }

    fn logged_in() -> Harness {
        let mut h = Harness::new();
        h.send("a0 LOGIN user@example.jp secret").ends("a0 OK");
        h
    }

    fn selected() -> Harness {
        let mut h = Harness::logged_in();
        h.send("s0 SELECT INBOX").ends("s0 OK [READ-WRITE]");
        h
    }

    fn pump(&mut self) -> String {
        let mut out = Vec::new();
        // Bounded, so a livelock fails the test rather than hanging it.
        for _ in 0..100_000 {
            match self.session.poll() {
                Some(Event::Reply(reply)) => reply.write_to(&mut out),
                Some(Event::Request(request)) => {
                    let response = self.driver.respond(&request);
                    self.session.answer(response).expect("the answer fits");
                }
                Some(Event::StartTls) => self.tls_requested = true,
                Some(Event::Close) => self.closed = true,
                None => break,
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn raw(&mut self, bytes: &[u8]) -> Written {
        self.session.feed(bytes, self.now);
        Written(self.pump())
    }

    fn send(&mut self, line: &str) -> Written {
        self.raw(format!("{line}\r\n").as_bytes())
    }

    fn poke(&mut self) -> Written {
        self.session.poke();
        Written(self.pump())
    }
}

fn plain(user: &str, password: &str) -> String {
    encode(format!("\0{user}\0{password}"))
}

#[test]
fn greeting_and_capabilities_before_tls() {
    let mut h = Harness::with(Config::new("mail.example.jp"), false);
    let greeting = String::from_utf8(h.session.greeting().to_bytes()).unwrap();
    assert!(
        greeting.starts_with("* OK [CAPABILITY IMAP4rev1 "),
        "{greeting}"
    );
    assert!(greeting.contains("STARTTLS LOGINDISABLED]"), "{greeting}");
    h.send("a1 CAPABILITY")
        .has("LITERAL+")
        .has("IDLE")
        .has("UIDPLUS")
        .has("MOVE")
        .has("NAMESPACE")
        .has("STARTTLS")
        .has("LOGINDISABLED")
        .lacks("AUTH=PLAIN")
        .ends("a1 OK");
    h.send("a2 LOGIN user@example.jp secret")
        .ends("a2 NO [PRIVACYREQUIRED]");
    h.send(&format!(
        "a3 AUTHENTICATE PLAIN {}",
        plain("user@example.jp", "secret")
    ))
    .ends("a3 NO [PRIVACYREQUIRED]");
    assert!(
        h.driver.requests.is_empty(),
        "no password reached the driver"
    );
    h.send("a4 SELECT INBOX").ends("a4 BAD");
}

#[test]
fn plaintext_allowed_by_configuration() {
    let mut config = Config::new("mail.example.jp");
    config.plaintext_allowed = true;
    let mut h = Harness::with(config, false);
    h.send("a1 CAPABILITY")
        .has("AUTH=PLAIN")
        .lacks("LOGINDISABLED");
    h.send("a2 LOGIN user@example.jp secret")
        .ends("a2 OK [CAPABILITY IMAP4rev1");
}

#[test]
fn starttls_discards_pipelined_plaintext() {
    let mut h = Harness::with(Config::new("mail.example.jp"), false);
    h.raw(b"a1 STARTTLS\r\na2 LOGIN user@example.jp secret\r\n")
        .ends("a1 OK")
        .lacks("a2");
    assert!(h.tls_requested);
    // Before the handshake finishes, nothing is read.
    h.send("a3 NOOP").lacks("a3");
    h.session.tls_started(h.now);
    h.send("a4 CAPABILITY")
        .has("AUTH=PLAIN")
        .lacks("STARTTLS")
        .ends("a4 OK");
    assert!(
        h.driver.requests.is_empty(),
        "the injected LOGIN was dropped"
    );
    h.send("a5 STARTTLS").ends("a5 BAD");
}

#[test]
fn logins_and_their_refusals() {
    let mut h = Harness::new();
    h.send("a1 LOGIN user@example.jp wrong")
        .ends("a1 NO [AUTHENTICATIONFAILED]");
    h.send("a2 LOGIN locked@example.jp secret")
        .ends("a2 NO [CONTACTADMIN]");
    h.send("a3 LOGIN temp secret").ends("a3 NO [UNAVAILABLE]");
    h.send("a4 LOGIN \"user@example.jp\" {6}").ends("+ Ready");
    h.send("secret")
        .ends("a4 OK [CAPABILITY IMAP4rev1")
        .lacks("STARTTLS");
    h.send("a5 LOGIN user@example.jp secret").ends("a5 BAD");
}

#[test]
fn authenticate_plain_with_and_without_initial_response() {
    let mut h = Harness::new();
    h.send(&format!(
        "a1 AUTHENTICATE PLAIN {}",
        plain("user@example.jp", "secret")
    ))
    .ends("a1 OK");
    let mut h = Harness::new();
    h.send("a1 AUTHENTICATE PLAIN").ends("+ ");
    h.send(&plain("user@example.jp", "wrong"))
        .ends("a1 NO [AUTHENTICATIONFAILED]");
    h.send("a2 AUTHENTICATE LOGIN").ends("+ VXNlcm5hbWU6");
    h.send(&encode("user@example.jp")).ends("+ UGFzc3dvcmQ6");
    h.send(&encode("secret")).ends("a2 OK");
    let mut h = Harness::new();
    h.send("a1 AUTHENTICATE PLAIN").ends("+ ");
    h.send("*").ends("a1 BAD");
    h.send("a2 AUTHENTICATE CRAM-MD5").ends("a2 NO");
    h.send("a3 NOOP").ends("a3 OK");
}

#[test]
fn select_examine_and_status() {
    let mut h = Harness::logged_in();
    let w = h.send("a1 SELECT inbox");
    assert_eq!(
        w.lines(),
        [
            "* FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft)",
            "* OK [PERMANENTFLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft \\*)] flags kept",
            "* 3 EXISTS",
            "* 0 RECENT",
            "* OK [UNSEEN 1] first unseen",
            "* OK [UIDVALIDITY 1000] UIDs valid",
            "* OK [UIDNEXT 4] predicted next UID",
            "a1 OK [READ-WRITE] SELECT completed",
        ]
    );
    h.send("a2 EXAMINE Archive")
        .has("* 0 EXISTS")
        .has("[PERMANENTFLAGS ()]")
        .ends("a2 OK [READ-ONLY]");
    h.send("a3 STORE 1 +FLAGS (\\Seen)")
        .ends("a3 NO [READ-ONLY]");
    h.send("a4 SELECT Nowhere").ends("a4 NO [NONEXISTENT]");
    h.send("a5 FETCH 1 FLAGS").ends("a5 BAD");
    h.send("a6 STATUS INBOX (MESSAGES UNSEEN UIDNEXT UIDVALIDITY RECENT)")
        .has("* STATUS INBOX (MESSAGES 3 UNSEEN 2 UIDNEXT 4 UIDVALIDITY 1000 RECENT 0)")
        .ends("a6 OK");
    h.send("a7 STATUS Nowhere (MESSAGES)")
        .ends("a7 NO [NONEXISTENT]");
}

#[test]
fn folders_create_list_rename_delete_subscribe() {
    let mut h = Harness::logged_in();
    h.send("a1 CREATE Archive.2024").ends("a1 OK");
    h.send("a2 CREATE Archive").ends("a2 NO [ALREADYEXISTS]");
    h.send("a3 CREATE a..b").ends("a3 NO [CANNOT]");
    h.send("a4 LIST \"\" \"*\"")
        .has("* LIST (\\HasNoChildren) \".\" INBOX")
        .has("* LIST (\\HasChildren) \".\" Archive")
        .has("* LIST (\\HasNoChildren) \".\" Archive.2024")
        .ends("a4 OK");
    h.send("a5 LIST \"\" \"%\"")
        .has("Archive\r\n")
        .lacks("Archive.2024");
    h.send("a6 LIST \"\" \"\"")
        .has("* LIST (\\Noselect) \".\" \"\"")
        .ends("a6 OK");
    h.send("a7 RENAME Archive.2024 Old").ends("a7 OK");
    h.send("a8 LIST \"\" Old").has("\".\" Old").ends("a8 OK");
    h.send("a9 DELETE INBOX").ends("a9 NO [CANNOT]");
    h.send("b1 DELETE Old").ends("b1 OK");
    h.send("b2 DELETE Old").ends("b2 NO [NONEXISTENT]");
    h.send("b3 SUBSCRIBE Archive").ends("b3 OK");
    h.send("b4 LSUB \"\" \"*\"")
        .has("* LSUB (\\HasNoChildren) \".\" Archive")
        .ends("b4 OK");
    h.send("b5 UNSUBSCRIBE Archive").ends("b5 OK");
    h.send("b6 LSUB \"\" \"*\"").lacks("* LSUB").ends("b6 OK");
    h.send("b7 NAMESPACE")
        .has("* NAMESPACE ((\"\" \".\")) NIL NIL")
        .ends("b7 OK");
    h.send("b9 ENABLE IMAP4rev2").has("* ENABLED").ends("b9 OK");
    h.send("b8 ID (\"name\" \"test\")")
        .has("* ID (\"name\" \"dirmail\"")
        .ends("b8 OK");
}

#[test]
fn append_with_literals_split_across_reads() {
    let mut h = Harness::selected();
    let message = "Subject: appended\r\n\r\nhello\r\n";
    h.send(&format!(
        "a1 APPEND INBOX (\\Seen \\Flagged) \"14-Jul-2024 02:44:25 +0200\" {{{}}}",
        message.len()
    ))
    .ends("+ Ready");
    let (first, second) = message.split_at(10);
    h.raw(first.as_bytes()).lacks("a1");
    h.raw(second.as_bytes()).lacks("a1");
    h.raw(b"\r\n")
        .has("* 4 EXISTS")
        .ends("a1 OK [APPENDUID 1000 4] APPEND completed");
    let appended = &h.driver.folders["INBOX"].messages[3];
    assert_eq!(appended.bytes, message.as_bytes());
    assert_eq!(appended.meta.flags, Flags::SEEN.union(Flags::FLAGGED));
    assert_eq!(appended.meta.internal_date, 1_720_917_865);

    // LITERAL+: no continuation, in one go with the next command.
    h.raw(
        format!(
            "a2 APPEND Archive {{{}+}}\r\n{message} \r\na3 NOOP\r\n",
            message.len()
        )
        .as_bytes(),
    )
    .lacks("+ Ready")
    .has("a2 BAD")
    .ends("a3 OK");
    h.raw(format!("a4 APPEND Archive {{{}+}}\r\n{message}\r\n", message.len()).as_bytes())
        .lacks("+ Ready")
        .ends("a4 OK [APPENDUID 2000 1]");
    h.send("a5 APPEND Nowhere {3+}\r\nabc")
        .ends("a5 NO [TRYCREATE]");
}

#[test]
fn oversized_literals_are_refused_and_the_session_goes_on() {
    let mut config = Config::new("mail.example.jp");
    config.max_message_size = 100;
    let mut h = Harness::with(config, true);
    h.send("a0 LOGIN user@example.jp secret").ends("a0 OK");
    h.send("a1 APPEND INBOX {5000}").ends("a1 NO [TOOBIG]");
    h.send("a2 NOOP").ends("a2 OK");
    // A non-synchronizing one (up to twice the limit) must be read through, then refused.
    let mut input = b"a3 APPEND INBOX {200+}\r\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 200));
    input.extend(b"\r\na4 NOOP\r\n");
    h.raw(&input).has("a3 NO [TOOBIG]").ends("a4 OK");
}

#[test]
fn before_login_a_command_is_no_larger_than_a_login() {
    // Hostile load (issue 21): a client that never logs in must not make the server hold a
    // message's worth of input (25 MB by default) per connection.
    let mut h = Harness::with(Config::new("mail.example.jp"), true);
    h.send("a1 LOGIN {100000}").ends("a1 NO [TOOBIG]");
    let mut input = b"a2 LOGIN {20000+}\r\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 20_000));
    input.extend(b" secret\r\na3 NOOP\r\n");
    h.raw(&input).has("a2 NO [TOOBIG]").ends("a3 OK");
    assert!(!h.closed);
    // A line that never ends is held only up to a login's size; the rest is dropped as read.
    for _ in 0..10 {
        h.session.feed(&[b'x'; 100_000], h.now);
        let held = h.session.buffered();
        assert!(held <= session::PRE_LOGIN_MAX_FRAME as usize, "{held} held");
    }
    h.send("\r\na4 NOOP").has("BAD").ends("a4 OK");
    // Never more before login than after: with a 100-octet message limit, 200 is too big.
    let mut small = Config::new("mail.example.jp");
    small.max_message_size = 100;
    let mut h = Harness::with(small, true);
    h.send("a1 APPEND INBOX {200}").ends("a1 NO [TOOBIG]");
    // Logged in, APPEND may bring the configured message size.
    let mut h = Harness::with(Config::new("mail.example.jp"), true);
    h.send("a0 LOGIN user@example.jp secret").ends("a0 OK");
    h.send("a1 APPEND INBOX {100000}").ends("+ Ready");
}

#[test]
fn literals_that_cannot_be_read_through_close_the_session() {
    let mut config = Config::new("mail.example.jp");
    config.max_message_size = 100;
    let mut h = Harness::with(config.clone(), true);
    h.send("a0 LOGIN user@example.jp secret").ends("a0 OK");
    // More than twice the limit is not read through (4 GiB might follow).
    h.send("a1 APPEND INBOX {201+}\r\nxxxx")
        .has("a1 NO [TOOBIG]")
        .ends("* BYE");
    assert!(h.closed);
    let mut h = Harness::with(config.clone(), false);
    h.send("a3 LOGIN {4294967295+}\r\nxxxx")
        .has("a3 NO [TOOBIG]")
        .ends("* BYE");
    assert!(h.closed);
    // A count past 32 bits: where the literal ends is unknown, so nothing after it runs.
    let mut h = Harness::with(config, true);
    h.send("a0 LOGIN user@example.jp secret").ends("a0 OK");
    h.send("a1 CREATE {99999999999999999999+}\r\nb1 CREATE Smuggled")
        .has("a1 BAD")
        .lacks("b1")
        .ends("* BYE");
    assert!(h.closed);
    assert!(
        !h.driver
            .requests
            .iter()
            .any(|r| matches!(r, Request::Create { .. })),
        "{:?}",
        h.driver.requests
    );
    // Synchronizing, the client waits: refused, and the session goes on.
    let mut h = Harness::new();
    h.send("a1 LOGIN {99999999999999999999}").ends("a1 BAD");
    h.send("a2 NOOP").ends("a2 OK");
    assert!(!h.closed);
}

#[test]
fn a_fetch_cannot_make_one_message_reply_huge() {
    let mut h = Harness::selected();
    // The same item many times is answered once.
    let same = vec!["BODY.PEEK[]"; 500].join(" ");
    let w = h.send(&format!("a1 FETCH 3 ({same})")).ends("a1 OK");
    assert_eq!(w.0.matches("BODY[] {5018}").count(), 1, "{}", w.0);
    // Overlapping ranges, each a different item: refused once they carry more than a few
    // copies of the message.
    let ranges: Vec<String> = (0..500).map(|i| format!("BODY.PEEK[]<{i}.5018>")).collect();
    let w = h
        .send(&format!("a2 FETCH 3 ({})", ranges.join(" ")))
        .ends("a2 NO [LIMIT]");
    assert!(w.0.len() < 100_000, "{} octets", w.0.len());
    // A few copies are fine.
    h.send("a3 FETCH 3 (RFC822 BODY.PEEK[] BODY.PEEK[TEXT] RFC822.HEADER)")
        .has("RFC822 {5018}")
        .has("BODY[TEXT] {5002}")
        .ends("a3 OK");
}

#[test]
fn malformed_commands_get_bad_and_the_session_goes_on() {
    let mut h = Harness::selected();
    h.send("a1 FROB").ends("a1 BAD");
    h.send("a2 FETCH").ends("a2 BAD");
    h.send("a3 FETCH 1:x FLAGS").ends("a3 BAD");
    h.send("a4 FETCH 9 FLAGS").ends("a4 BAD");
    h.send("a5 SEARCH NOT NOT NOT NOT NOT NOT NOT NOT NOT NOT ALL")
        .ends("a5 BAD");
    h.send("\u{1}\u{2} garbage").ends("* BAD");
    h.send("").lacks("BAD");
    h.send("a6 LOGIN x y").ends("a6 BAD");
    h.send("a7 NOOP").ends("a7 OK");
}

#[test]
fn input_read_ahead_while_waiting_stays_bounded() {
    // A driver may go on reading while the store works. What it feeds meanwhile is held, up to
    // one full command and 64 KiB more, and then the session is closed. Each answer used to
    // hand all of it to the framer, where the bound no longer counted it: 100 kB more held
    // after every round, without end.
    let mut config = Config::new("mail.example.jp");
    config.max_message_size = 100;
    let mut h = Harness::with(config, true);
    h.send("a0 LOGIN user@example.jp secret").ends("a0 OK");
    h.send("s0 SELECT INBOX").ends("s0 OK");
    let bound = 100 + 64 * 1024 + 64 * 1024;
    let pipelined = b"b NOOP\r\n".repeat(100_000 / 8);
    h.session.feed(b"a1 NOOP\r\n", h.now);
    let mut written = Vec::new();
    for _ in 0..4 {
        // Up to the re-scan the next NOOP asks for, left unanswered while more is read.
        while let Some(event) = h.session.poll() {
            match event {
                Event::Reply(reply) => reply.write_to(&mut written),
                Event::Request(Request::Refresh) => break,
                other => panic!("{other:?}"),
            }
        }
        h.session.feed(&pipelined, h.now);
        assert!(
            h.session.buffered() <= bound,
            "{} held",
            h.session.buffered()
        );
        if h.session.is_closed() {
            break;
        }
        let snapshot = h.driver.respond(&Request::Refresh);
        h.session
            .answer(snapshot)
            .expect("a snapshot answers a re-scan");
    }
    assert!(h.session.is_closed(), "{} held", h.session.buffered());
    h.pump();
    assert!(h.closed);
    let written = String::from_utf8_lossy(&written);
    assert!(written.contains("a1 OK"), "{written}");
    assert_eq!(h.session.buffered(), 0);
}

#[test]
fn too_many_errors_close_the_session() {
    let mut h = Harness::new();
    for i in 0..19 {
        h.send(&format!("x{i} FROB")).ends(&format!("x{i} BAD"));
    }
    h.send("x19 FROB").ends("* BYE");
    assert!(h.closed);
}

#[test]
fn fetch_items() {
    let mut h = Harness::selected();
    h.send("a1 FETCH 1:* (FLAGS UID)")
        .has("* 1 FETCH (FLAGS () UID 1)")
        .has("* 2 FETCH (FLAGS (\\Seen) UID 2)")
        .has("* 3 FETCH (FLAGS (\\Flagged \\Deleted) UID 3)")
        .ends("a1 OK");
    h.send("a2 FETCH 1 (INTERNALDATE RFC822.SIZE)")
        .has(&format!(
            "* 1 FETCH (INTERNALDATE \"14-Nov-2023 22:13:20 +0000\" RFC822.SIZE {})",
            LUNCH.len()
        ))
        .ends("a2 OK");
    h.send("a3 FETCH 1 ENVELOPE")
        .has("ENVELOPE (\"Mon, 7 Feb 1994 21:52:25 -0800\" \"Lunch\" ((\"Alice\" NIL \"alice\" \"example.jp\")) ((\"Alice\" NIL \"alice\" \"example.jp\")) ((\"Alice\" NIL \"alice\" \"example.jp\")) ((NIL NIL \"bob\" \"example.jp\")) NIL NIL NIL \"<1@example.jp>\")")
        .ends("a3 OK");
    h.send("a4 FETCH 2 BODYSTRUCTURE")
        .has("BODYSTRUCTURE ((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"utf-8\") NIL NIL \"7BIT\" 11 1 NIL NIL NIL NIL)(\"TEXT\" \"HTML\" NIL NIL NIL \"7BIT\" 17 1 NIL NIL NIL NIL) \"ALTERNATIVE\" (\"BOUNDARY\" \"b\") NIL NIL NIL)")
        .ends("a4 OK");
    h.send("a5 FETCH 2 BODY")
        .has("BODY ((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"utf-8\") NIL NIL \"7BIT\" 11 1)(\"TEXT\" \"HTML\" NIL NIL NIL \"7BIT\" 17 1) \"ALTERNATIVE\")")
        .ends("a5 OK");
    h.send("a6 FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]")
        .has("BODY[HEADER.FIELDS (SUBJECT FROM)] {50}\r\nFrom: Alice <alice@example.jp>\r\nSubject: Lunch\r\n\r\n)")
        .lacks("\\Seen")
        .ends("a6 OK");
    h.send("a7 FETCH 2 (BODY.PEEK[2] BODY.PEEK[1.MIME] BODY.PEEK[TEXT]<0.4>)")
        .has("BODY[2] {17}\r\n<p>html words</p>")
        .has("BODY[1.MIME] {43}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
        .has("BODY[TEXT]<0> {4}\r\n--b\r")
        .ends("a7 OK");
    h.send("a8 FETCH 1 (RFC822.HEADER)")
        .has("RFC822.HEADER {")
        .lacks("\\Seen")
        .ends("a8 OK");
    h.send("a9 FETCH 1 BODY[TEXT]")
        .has("BODY[TEXT] {18}\r\nNoodles at noon?\r\n")
        .has("FLAGS (\\Seen)")
        .ends("a9 OK");
    assert!(
        h.driver.folders["INBOX"].messages[0]
            .meta
            .flags
            .contains(Flags::SEEN)
    );
    h.send("b1 UID FETCH 2:3 (RFC822.SIZE)")
        .has("* 2 FETCH (UID 2 RFC822.SIZE")
        .has("* 3 FETCH (UID 3 RFC822.SIZE 5018)")
        .ends("b1 OK");
    h.send("b2 FETCH 3 RFC822.TEXT")
        .has("RFC822.TEXT {5002}")
        .ends("b2 OK");
    h.send("b3 FETCH 1 FAST")
        .has("FLAGS (\\Seen) INTERNALDATE")
        .ends("b3 OK");
    h.send("b4 UID FETCH 99 FLAGS")
        .lacks("FETCH (")
        .ends("b4 OK");
    h.send("b5 FETCH 1 BODY.PEEK[3]")
        .has("BODY[3] NIL")
        .ends("b5 OK");
    h.send("b6 FETCH 1 RFC822").has("RFC822 {").ends("b6 OK");
}

#[test]
fn fetch_loads_in_bounded_batches() {
    let mut config = Config::new("mail.example.jp");
    config.batch_messages = 2;
    let mut h = Harness::with(config, true);
    h.send("a0 LOGIN user@example.jp secret").ends("a0 OK");
    h.send("a1 SELECT INBOX").ends("a1 OK");
    h.send("a2 FETCH 1:* BODY.PEEK[]").ends("a2 OK");
    let loads: Vec<&Request> = h
        .driver
        .requests
        .iter()
        .filter(|r| matches!(r, Request::Load { .. }))
        .collect();
    assert_eq!(
        loads,
        [
            &Request::Load { uids: vec![1, 2] },
            &Request::Load { uids: vec![3] }
        ]
    );
}

#[test]
fn store_flags() {
    let mut h = Harness::selected();
    h.send("a1 STORE 1 +FLAGS (\\Flagged \\Answered)")
        .has("* 1 FETCH (FLAGS (\\Answered \\Flagged))")
        .ends("a1 OK");
    h.send("a2 STORE 1 -FLAGS.SILENT (\\Flagged)")
        .lacks("FETCH")
        .ends("a2 OK");
    h.send("a3 UID STORE 2 FLAGS (\\Draft $Label1)")
        .has("* 2 FETCH (FLAGS (\\Draft $Label1) UID 2)")
        .ends("a3 OK");
    h.send("a4 STORE 1:2 +FLAGS.SILENT (\\Deleted)")
        .ends("a4 OK");
    let flags: Vec<Flags> = h.driver.folders["INBOX"]
        .messages
        .iter()
        .map(|m| m.meta.flags)
        .collect();
    assert_eq!(
        flags,
        [
            Flags::ANSWERED.union(Flags::DELETED),
            Flags::DRAFT
                .union(Flags::DELETED)
                .union(Flags::keyword(0).unwrap()),
            Flags::FLAGGED.union(Flags::DELETED)
        ]
    );
}

#[test]
fn search_keys() {
    let mut h = Harness::selected();
    let search = |h: &mut Harness, query: &str| -> String {
        let w = h.send(&format!("s {query}"));
        assert!(w.0.contains("s OK"), "{query}: {}", w.0);
        w.lines()
            .iter()
            .find(|l| l.starts_with("* SEARCH"))
            .map(|l| l.to_string())
            .unwrap_or_default()
    };
    assert_eq!(search(&mut h, "SEARCH ALL"), "* SEARCH 1 2 3");
    assert_eq!(search(&mut h, "SEARCH SEEN"), "* SEARCH 2");
    assert_eq!(search(&mut h, "SEARCH UNSEEN"), "* SEARCH 1 3");
    assert_eq!(search(&mut h, "SEARCH FLAGGED"), "* SEARCH 3");
    assert_eq!(search(&mut h, "SEARCH DELETED"), "* SEARCH 3");
    assert_eq!(search(&mut h, "SEARCH UNDELETED UNSEEN"), "* SEARCH 1");
    assert_eq!(search(&mut h, "SEARCH 2:*"), "* SEARCH 2 3");
    assert_eq!(search(&mut h, "SEARCH UID 1,3"), "* SEARCH 1 3");
    assert_eq!(search(&mut h, "SEARCH FROM alice"), "* SEARCH 1");
    assert_eq!(
        search(&mut h, "SEARCH FROM CAROL@EXAMPLE.COM"),
        "* SEARCH 2"
    );
    assert_eq!(search(&mut h, "SEARCH TO bob"), "* SEARCH 1 2");
    assert_eq!(search(&mut h, "SEARCH SUBJECT lunch"), "* SEARCH 1");
    assert_eq!(
        search(&mut h, "SEARCH CHARSET UTF-8 SUBJECT {6}\r\n日本"),
        "* SEARCH 2",
        "decoded encoded words"
    );
    assert_eq!(search(&mut h, "SEARCH BODY \"html words\""), "* SEARCH 2");
    assert_eq!(search(&mut h, "SEARCH TEXT noodles"), "* SEARCH 1");
    assert_eq!(search(&mut h, "SEARCH TEXT \"Message-ID\""), "* SEARCH 1");
    assert_eq!(
        search(&mut h, "SEARCH HEADER Message-ID \"\""),
        "* SEARCH 1"
    );
    assert_eq!(search(&mut h, "SEARCH SINCE 1-Mar-2024"), "* SEARCH 2 3");
    assert_eq!(search(&mut h, "SEARCH BEFORE 1-Mar-2024"), "* SEARCH 1");
    assert_eq!(search(&mut h, "SEARCH ON 14-Nov-2023"), "* SEARCH 1");
    assert_eq!(search(&mut h, "SEARCH SENTBEFORE 1-Jan-2000"), "* SEARCH 1");
    assert_eq!(search(&mut h, "SEARCH SENTON 9-Mar-2024"), "* SEARCH 2");
    assert_eq!(search(&mut h, "SEARCH LARGER 1000"), "* SEARCH 3");
    assert_eq!(search(&mut h, "SEARCH SMALLER 1000"), "* SEARCH 1 2");
    assert_eq!(search(&mut h, "SEARCH NOT SEEN"), "* SEARCH 1 3");
    assert_eq!(search(&mut h, "SEARCH OR SEEN FLAGGED"), "* SEARCH 2 3");
    assert_eq!(
        search(&mut h, "SEARCH (SEEN) (OR FROM alice BODY nothing)"),
        "* SEARCH"
    );
    assert_eq!(search(&mut h, "SEARCH KEYWORD $Junk"), "* SEARCH");
    assert_eq!(search(&mut h, "UID SEARCH FLAGGED"), "* SEARCH 3");
    h.send("a1 SEARCH CHARSET KOI8-R ALL")
        .ends("a1 NO [BADCHARSET (US-ASCII UTF-8)]");
}

#[test]
fn expunge_close_unselect() {
    let mut h = Harness::selected();
    h.send("a1 STORE 1 +FLAGS (\\Deleted)").ends("a1 OK");
    h.send("a2 UID EXPUNGE 3")
        .has("* 3 EXPUNGE")
        .lacks("* 1 EXPUNGE")
        .ends("a2 OK");
    h.send("a3 EXPUNGE").has("* 1 EXPUNGE").ends("a3 OK");
    assert_eq!(h.driver.folders["INBOX"].messages.len(), 1);
    h.send("a4 STORE 1 +FLAGS (\\Deleted)").ends("a4 OK");
    h.send("a5 UNSELECT").ends("a5 OK");
    assert_eq!(
        h.driver.folders["INBOX"].messages.len(),
        1,
        "UNSELECT keeps them"
    );
    h.send("a6 SELECT INBOX").ends("a6 OK");
    h.send("a7 CLOSE").lacks("EXPUNGE").ends("a7 OK");
    assert!(
        h.driver.folders["INBOX"].messages.is_empty(),
        "CLOSE expunges silently"
    );
    h.send("a8 FETCH 1 FLAGS").ends("a8 BAD");
    h.send("a9 EXAMINE INBOX").ends("a9 OK");
    h.send("b1 EXPUNGE").ends("b1 NO [READ-ONLY]");
}

#[test]
fn copy_and_move_with_uidplus() {
    let mut h = Harness::selected();
    h.send("a1 COPY 1:2 Archive")
        .ends("a1 OK [COPYUID 2000 1:2 1:2] COPY completed");
    h.send("a2 UID MOVE 3 Archive")
        .has("* OK [COPYUID 2000 3 3] moved")
        .has("* 3 EXPUNGE")
        .ends("a2 OK");
    assert_eq!(h.driver.folders["INBOX"].messages.len(), 2);
    assert_eq!(h.driver.folders["Archive"].messages.len(), 3);
    h.send("a3 COPY 1 Nowhere").ends("a3 NO [TRYCREATE]");
    h.send("a4 COPY 1 INBOX")
        .has("* 3 EXISTS")
        .ends("a4 OK [COPYUID 1000 1 4]");
    h.send("a5 UID COPY 99 Archive").ends("a5 OK");
}

#[test]
fn noop_reports_what_other_sessions_did() {
    let mut h = Harness::selected();
    // Another session expunges message 2 and a new one is delivered.
    let inbox = h.driver.folders.get_mut("INBOX").unwrap();
    inbox.messages.remove(1);
    inbox.messages[0].meta.flags = Flags::ANSWERED;
    inbox.add(b"Subject: new\r\n\r\nnew\r\n", Flags::NONE, 1_760_000_000);
    let w = h.send("a1 NOOP");
    assert_eq!(
        w.lines(),
        [
            "* 2 EXPUNGE",
            "* 3 EXISTS",
            "* 1 FETCH (FLAGS (\\Answered) UID 1)",
            "a1 OK NOOP completed"
        ]
    );
    // Between commands, a poke waits for a command allowed to report expunges.
    h.driver
        .folders
        .get_mut("INBOX")
        .unwrap()
        .messages
        .remove(0);
    h.poke().lacks("EXPUNGE");
    h.send("a2 FETCH 1 FLAGS").lacks("EXPUNGE").ends("a2 OK");
    h.send("a3 UID FETCH 1:* FLAGS")
        .has("* 1 EXPUNGE")
        .ends("a3 OK");
    h.driver.folders.get_mut("INBOX").unwrap().add(
        b"Subject: later\r\n\r\nlater\r\n",
        Flags::NONE,
        1_770_000_000,
    );
    h.send("a4 CHECK")
        .has("* 3 EXISTS")
        .ends("a4 OK CHECK completed");
}

#[test]
fn idle_sees_new_mail() {
    let mut h = Harness::selected();
    h.send("a1 IDLE").ends("+ idling");
    assert!(h.session.is_idle());
    h.driver.folders.get_mut("INBOX").unwrap().add(
        b"Subject: new\r\n\r\nnew\r\n",
        Flags::NONE,
        1_760_000_000,
    );
    h.poke().has("* 4 EXISTS").lacks("a1 OK");
    assert!(h.session.is_idle());
    h.send("DONE").ends("a1 OK IDLE terminated");
    h.send("a2 IDLE").ends("+ idling");
    h.send("NOT DONE").ends("a2 BAD");
    h.send("a3 NOOP").ends("a3 OK");
}

#[test]
fn logout_and_timeouts() {
    let mut h = Harness::new();
    assert!(h.session.deadline().is_some());
    h.session.timeout(h.now + Duration::from_secs(60));
    assert!(!h.closed, "not yet");
    h.session.timeout(h.now + Duration::from_secs(3 * 60));
    assert!(h.pump().starts_with("* BYE"));
    let mut h = Harness::logged_in();
    h.send("a1 LOGOUT").has("* BYE").ends("a1 OK");
    assert!(h.closed);
}

#[test]
fn answers_must_fit() {
    let mut h = Harness::logged_in();
    assert_eq!(
        h.session.answer(Response::Done),
        Err(AnswerError::NothingAsked)
    );
    h.session.feed(b"a1 SELECT INBOX\r\n", h.now);
    assert!(matches!(
        h.session.poll(),
        Some(Event::Request(Request::Select { .. }))
    ));
    assert_eq!(
        h.session.answer(Response::LoggedIn),
        Err(AnswerError::Mismatch)
    );
    assert!(
        h.session
            .answer(Response::Failed(Failure::Unavailable))
            .is_ok()
    );
    assert!(h.pump().contains("a1 NO [UNAVAILABLE]"));
}

#[test]
fn store_ops_apply() {
    assert_eq!(
        FlagOp::Add.apply(Flags::SEEN, Flags::DRAFT),
        Flags::SEEN.union(Flags::DRAFT)
    );
}

/// Fuzz finding (`fuzz/regressions/imap_session/idle-in-a-vanished-folder`): a refresh that
/// fails while idling (the selected folder was renamed away or deleted, here by another
/// session) asked again at once, and again, for as long as the driver answered: one
/// connection kept a core and its store busy without end.
#[test]
fn idle_in_a_vanished_folder_does_not_spin() {
    let mut h = Harness::logged_in();
    h.send("a1 SELECT Archive").ends("a1 OK [READ-WRITE]");
    h.send("a3 IDLE").ends("+ idling");
    h.driver.folders.remove("Archive");
    h.driver.selected = None;
    let before = h.driver.requests.len();
    h.poke().lacks("a3 OK");
    let refreshes = h.driver.requests.len() - before;
    assert_eq!(refreshes, 1, "one poke, one refresh");
    assert!(h.session.is_idle(), "still idling, waiting for the client");
    h.poke();
    assert_eq!(
        h.driver.requests.len() - before,
        2,
        "each poke tries again, once"
    );
    h.send("DONE").ends("a3 OK IDLE terminated");
}

#[test]
fn message_numbers_past_the_end_are_bad_even_in_an_empty_mailbox() {
    let mut h = Harness::logged_in();
    h.send("a1 SELECT Archive").has("* 0 EXISTS").ends("a1 OK");
    h.send("a2 FETCH 1 FLAGS").lacks("FETCH (").ends("a2 BAD");
    h.send("a3 COPY 1 INBOX").ends("a3 BAD");
    h.send("a4 STORE 1 +FLAGS (\\Seen)").ends("a4 BAD");
    h.send("a5 FETCH 1:* FLAGS").ends("a5 BAD");
    h.send("a6 UID FETCH 1:* FLAGS").ends("a6 OK");
    h.send("a7 UID COPY 1 INBOX").ends("a7 OK");
    assert_eq!(
        h.driver.folders["INBOX"].messages.len(),
        3,
        "nothing copied"
    );
    h.send("b1 SELECT INBOX").ends("b1 OK");
    h.send("b2 FETCH 4 FLAGS").ends("b2 BAD");
    h.send("b3 COPY 2:4 Archive").ends("b3 BAD");
    assert!(h.driver.folders["Archive"].messages.is_empty());
}

#[test]
fn keywords_are_kept_searched_and_announced() {
    let mut h = Harness::selected();
    h.send("a1 STORE 2,3 +FLAGS ($hello $world)")
        .has("* FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft $hello $world)")
        .has("[PERMANENTFLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft $hello $world \\*)]")
        .has("* 2 FETCH (FLAGS (\\Seen $hello $world))")
        .has("* 3 FETCH (FLAGS (\\Flagged \\Deleted $hello $world))")
        .ends("a1 OK");
    h.send("a2 STORE 3 -FLAGS ($HELLO)")
        .lacks("* FLAGS")
        .has("* 3 FETCH (FLAGS (\\Flagged \\Deleted $world))")
        .ends("a2 OK");
    let search = |h: &mut Harness, query: &str| -> String {
        let w = h.send(&format!("s {query}"));
        w.lines()
            .iter()
            .find(|l| l.starts_with("* SEARCH"))
            .map(|l| l.to_string())
            .unwrap_or_default()
    };
    assert_eq!(search(&mut h, "SEARCH KEYWORD $hello"), "* SEARCH 2");
    assert_eq!(search(&mut h, "SEARCH KEYWORD $World"), "* SEARCH 2 3");
    assert_eq!(search(&mut h, "SEARCH UNKEYWORD $hello"), "* SEARCH 1 3");
    assert_eq!(search(&mut h, "SEARCH KEYWORD $nothing"), "* SEARCH");
    assert_eq!(
        search(&mut h, "SEARCH UNKEYWORD $nothing"),
        "* SEARCH 1 2 3"
    );
    h.send("a3 FETCH 2 FLAGS")
        .has("* 2 FETCH (FLAGS (\\Seen $hello $world))")
        .ends("a3 OK");
    h.send("a4 STORE 2 FLAGS (\\Seen)")
        .has("* 2 FETCH (FLAGS (\\Seen))")
        .ends("a4 OK");
    // A new SELECT shows the folder's keywords; a copy keeps its keywords by name.
    h.send("a5 COPY 3 Archive").ends("a5 OK");
    h.send("a6 SELECT Archive")
        .has("* FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft $world)")
        .ends("a6 OK");
    h.send("a7 FETCH 1 FLAGS")
        .has("* 1 FETCH (FLAGS (\\Flagged \\Deleted $world))")
        .ends("a7 OK");
    // APPEND takes keywords too.
    h.send("a8 APPEND Archive ($Junk) {8}\r\nSubject:")
        .has("* FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft $world $Junk)")
        .ends("a8 OK");
    h.send("a9 FETCH 2 FLAGS")
        .has("* 2 FETCH (FLAGS ($Junk \\Recent))")
        .ends("a9 OK");
}

#[test]
fn a_full_keyword_table_drops_the_asterisk_and_refuses_more() {
    let mut h = Harness::selected();
    let many: Vec<String> = (0..26).map(|i| format!("k{i}")).collect();
    h.send(&format!("a1 STORE 1 +FLAGS ({})", many.join(" ")))
        .has("k25")
        .lacks("\\*)]")
        .ends("a1 OK");
    h.send("a2 STORE 1 +FLAGS (one-more)").ends("a2 NO");
    h.send("a3 STORE 1 +FLAGS (K3 \\Seen)").ends("a3 OK");
}

#[test]
fn recent_is_told_after_select_copy_and_append() {
    let mut h = Harness::logged_in();
    let inbox = h.driver.folders.get_mut("INBOX").unwrap();
    inbox.messages[2].meta.recent = true;
    h.send("a1 SELECT INBOX")
        .has("* 3 EXISTS\r\n* 1 RECENT")
        .ends("a1 OK");
    h.send("a2 FETCH 3 FLAGS")
        .has("* 3 FETCH (FLAGS (\\Flagged \\Deleted \\Recent))")
        .ends("a2 OK");
    h.send("a3 COPY 1 INBOX")
        .has("* 4 EXISTS\r\n* 2 RECENT")
        .ends("a3 OK [COPYUID 1000 1 4]");
    h.send("a4 APPEND INBOX {8}\r\nSubject:")
        .has("* 5 EXISTS\r\n* 3 RECENT")
        .ends("a4 OK");
    h.send("a5 SEARCH RECENT")
        .has("* SEARCH 3 4 5")
        .ends("a5 OK");
    h.send("a6 COPY 1 Archive").lacks("RECENT").ends("a6 OK");
}

#[test]
fn create_with_a_trailing_delimiter_and_lsub_parents() {
    let mut h = Harness::logged_in();
    h.send("a1 CREATE Projects.").ends("a1 OK");
    h.send("a2 CREATE Projects.2024.").ends("a2 OK");
    assert!(h.driver.folders.contains_key("Projects"));
    assert!(h.driver.folders.contains_key("Projects.2024"));
    h.send("a3 CREATE Projects.").ends("a3 NO [ALREADYEXISTS]");
    h.send("a4 CREATE .").ends("a4 NO [CANNOT]");
    h.send("a5 CREATE Projects..").ends("a5 NO [CANNOT]");
    h.send("a6 LIST \"\" \"Projects*\"")
        .has("* LIST (\\HasChildren) \".\" Projects\r\n")
        .has("* LIST (\\HasNoChildren) \".\" Projects.2024\r\n")
        .ends("a6 OK");
    // Only the child is subscribed: `%` shows the parent, \Noselect; `*` shows the child.
    h.send("b1 SUBSCRIBE Projects.2024").ends("b1 OK");
    h.send("b2 LSUB \"\" \"%\"")
        .has("* LSUB (\\Noselect \\HasChildren) \".\" Projects\r\n")
        .lacks("Projects.2024")
        .ends("b2 OK");
    h.send("b3 LSUB \"\" \"*\"")
        .has("* LSUB (\\HasNoChildren) \".\" Projects.2024\r\n")
        .lacks("\" Projects\r\n")
        .ends("b3 OK");
    h.send("b4 SUBSCRIBE Projects").ends("b4 OK");
    h.send("b5 LSUB \"\" \"%\"")
        .has("* LSUB (\\HasChildren) \".\" Projects\r\n")
        .ends("b5 OK");
}
