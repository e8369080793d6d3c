//! In-memory POP3 sessions: a scripted driver plays directory and store; no sockets.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::auth::{Credentials, Proof, apop_digest, cram_md5_digest, encode};
use crate::names::Secret;

const TIMESTAMP: &str = "<1896.697170952@pop.example.jp>";

/// Plays directory and store. Accounts (password `secret`): `user@example.jp`,
/// `locked@example.jp` (R13), `busy@example.jp` (held by another session, R20); `temp` is a
/// directory outage.
#[derive(Debug)]
struct Driver {
    store: Vec<(String, Vec<u8>)>,
    snapshot: Vec<(String, Vec<u8>)>,
    requests: Vec<Request>,
    commit_fails: bool,
}

impl Driver {
    fn new() -> Self {
        Driver {
            store: vec![
                (
                    "uid-1".into(),
                    b"Subject: one\r\n\r\n.leading dot\r\nline 2\r\n".to_vec(),
                ),
                ("uid-2".into(), b"Subject: two\r\n\r\nbody\r\n".to_vec()),
            ],
            snapshot: Vec::new(),
            requests: Vec::new(),
            commit_fails: false,
        }
    }

    fn respond(&mut self, request: &Request) -> Response {
        self.requests.push(request.clone());
        match request {
            Request::Authenticate(Credentials {
                username, proof, ..
            }) => {
                if username == "temp" {
                    return Response::TempFail;
                }
                let known = ["user@example.jp", "locked@example.jp", "busy@example.jp"];
                if !known.contains(&username.as_str()) || !proof.verify(&Secret::new("secret")) {
                    return Response::BadCredentials;
                }
                if username == "locked@example.jp" {
                    return Response::Locked;
                }
                Response::Ok {
                    mailbox: username.clone(),
                }
            }
            Request::OpenMailbox { mailbox } => {
                if mailbox == "busy@example.jp" {
                    return Response::InUse;
                }
                self.snapshot = self.store.clone();
                Response::Opened(
                    self.snapshot
                        .iter()
                        .map(|(uid, m)| MessageInfo {
                            uid: uid.clone(),
                            size: m.len() as u64,
                        })
                        .collect(),
                )
            }
            Request::Retrieve { index, uid, .. } => match self.snapshot.get(*index) {
                Some((stored_uid, message)) if stored_uid == uid => {
                    Response::Message(message.clone())
                }
                _ => Response::TempFail,
            },
            Request::Commit { delete } => {
                if self.commit_fails {
                    return Response::TempFail;
                }
                self.store.retain(|(uid, _)| !delete.contains(uid));
                Response::Committed
            }
        }
    }

    fn commits(&self) -> Vec<&Request> {
        self.requests
            .iter()
            .filter(|r| matches!(r, Request::Commit { .. }))
            .collect()
    }
}

struct Harness {
    session: Session,
    driver: Driver,
    now: Instant,
    closed: bool,
}

#[derive(Debug)]
struct Written(String);

impl Written {
    /// The first line of what was written starts with `prefix`.
    #[track_caller]
    fn expect(self, prefix: &str) -> Self {
        assert!(
            self.0.starts_with(prefix),
            "expected {prefix:?}, got {:?}",
            self.0
        );
        self
    }
    #[track_caller]
    fn contains(self, needle: &str) -> Self {
        assert!(
            self.0.contains(needle),
            "expected {needle:?} in {:?}",
            self.0
        );
        self
    }
    #[track_caller]
    fn lacks(self, needle: &str) -> Self {
        assert!(
            !self.0.contains(needle),
            "did not expect {needle:?} in {:?}",
            self.0
        );
        self
    }
    #[track_caller]
    fn is(self, whole: &str) -> Self {
        assert_eq!(self.0, whole);
        self
    }
}

fn config() -> Config {
    Config::new("pop.example.jp", TIMESTAMP)
}

fn peer() -> IpAddr {
    "192.0.2.20".parse().unwrap()
}

impl Harness {
    fn new(config: Config, tls: bool) -> Self {
        let now = Instant::now();
        Harness {
            session: Session::new(config, peer(), tls, now),
            driver: Driver::new(),
            now,
            closed: false,
        }
    }

    /// Over TLS, logged in as `user@example.jp`.
    fn logged_in() -> Self {
        let mut h = Harness::new(config(), true);
        h.cmd("USER user@example.jp").expect("+OK");
        h.cmd("PASS secret").expect("+OK maildrop has 2 messages");
        h
    }

    fn send(&mut self, bytes: &[u8]) -> Written {
        self.session.feed(bytes, self.now);
        Written(self.drain())
    }

    fn drain(&mut self) -> String {
        let mut written = Vec::new();
        for _ in 0..10_000 {
            let Some(event) = self.session.poll() else {
                return String::from_utf8(written).unwrap();
            };
            match event {
                Event::Reply(reply) => written.extend_from_slice(&reply.to_bytes()),
                Event::Request(request) => {
                    let response = self.driver.respond(&request);
                    self.session.answer(response).unwrap();
                }
                Event::StartTls => self.session.tls_started(self.now),
                Event::Close => self.closed = true,
            }
        }
        panic!("the session did not settle");
    }

    fn cmd(&mut self, line: &str) -> Written {
        self.send(format!("{line}\r\n").as_bytes())
    }
}

#[test]
fn greeting_carries_the_apop_timestamp() {
    let h = Harness::new(config(), false);
    assert_eq!(
        h.session.greeting().to_bytes(),
        format!("+OK pop.example.jp POP3 server ready {TIMESTAMP}\r\n").into_bytes()
    );
}

#[test]
fn capabilities_follow_tls_and_policy() {
    let mut h = Harness::new(config(), false);
    h.cmd("CAPA")
        .expect("+OK")
        .contains("\r\nTOP\r\n")
        .contains("\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n")
        .contains("\r\nSTLS\r\n")
        .contains("\r\nIMPLEMENTATION dirmail\r\n.\r\n")
        .lacks("USER")
        .lacks("SASL");
    let mut h = Harness::new(config(), true);
    h.cmd("CAPA")
        .contains("\r\nUSER\r\n")
        .contains("\r\nSASL PLAIN LOGIN\r\n")
        .lacks("STLS");
    let mut plain = config();
    plain.plaintext_allowed = true;
    plain.offer_cram_md5 = true;
    let mut h = Harness::new(plain, false);
    h.cmd("CAPA")
        .contains("USER")
        .contains("SASL PLAIN LOGIN CRAM-MD5")
        .contains("STLS");
    let mut spa = config();
    spa.spa_required = true;
    let mut h = Harness::new(spa, true);
    h.cmd("CAPA").lacks("USER").lacks("SASL");
}

#[test]
fn a_whole_session_with_dele_rset_and_quit() {
    let mut h = Harness::logged_in();
    h.cmd("STAT").is("+OK 2 60\r\n");
    h.cmd("LIST")
        .is("+OK 2 messages (60 octets)\r\n1 38\r\n2 22\r\n.\r\n");
    h.cmd("LIST 2").is("+OK 2 22\r\n");
    h.cmd("UIDL")
        .is("+OK unique-id listing follows\r\n1 uid-1\r\n2 uid-2\r\n.\r\n");
    h.cmd("UIDL 1").is("+OK 1 uid-1\r\n");
    h.cmd("RETR 1")
        .is("+OK 38 octets\r\nSubject: one\r\n\r\n..leading dot\r\nline 2\r\n.\r\n");
    h.cmd("TOP 1 0")
        .is("+OK top of message follows\r\nSubject: one\r\n\r\n.\r\n");
    h.cmd("TOP 1 1")
        .is("+OK top of message follows\r\nSubject: one\r\n\r\n..leading dot\r\n.\r\n");
    h.cmd("DELE 1").expect("+OK message 1 deleted");
    h.cmd("DELE 1").is("-ERR message 1 already deleted\r\n");
    h.cmd("RETR 1").is("-ERR message 1 already deleted\r\n");
    h.cmd("LIST 1").expect("-ERR message 1 already deleted");
    h.cmd("UIDL 1").expect("-ERR message 1 already deleted");
    h.cmd("STAT").is("+OK 1 22\r\n");
    h.cmd("LIST")
        .is("+OK 1 messages (22 octets)\r\n2 22\r\n.\r\n");
    h.cmd("UIDL")
        .is("+OK unique-id listing follows\r\n2 uid-2\r\n.\r\n");
    h.cmd("RSET")
        .expect("+OK maildrop has 2 messages (60 octets)");
    h.cmd("RETR 1").expect("+OK");
    h.cmd("DELE 2").expect("+OK");
    h.cmd("RETR 0").is("-ERR no such message\r\n");
    h.cmd("RETR 3").is("-ERR no such message\r\n");
    h.cmd("NOOP").is("+OK\r\n");
    h.cmd("QUIT")
        .is("+OK pop.example.jp POP3 server signing off (1 messages left)\r\n");
    assert!(h.closed);
    assert_eq!(
        h.driver.commits(),
        [&Request::Commit {
            delete: vec!["uid-2".into()]
        }]
    );
    assert_eq!(h.driver.store.len(), 1);
}

#[test]
fn a_dropped_connection_deletes_nothing_r20() {
    let mut h = Harness::logged_in();
    h.cmd("DELE 1").expect("+OK");
    h.cmd("DELE 2").expect("+OK");
    // The client vanishes: the driver stops; nothing asked the store to delete.
    assert!(h.driver.commits().is_empty());
    assert_eq!(h.driver.store.len(), 2);
    // QUIT before login deletes nothing either.
    let mut h = Harness::new(config(), true);
    h.cmd("QUIT")
        .expect("+OK pop.example.jp POP3 server signing off");
    assert!(h.closed);
    assert!(h.driver.commits().is_empty());
}

#[test]
fn the_session_sees_a_snapshot_r20() {
    let mut h = Harness::logged_in();
    h.driver
        .store
        .push(("uid-3".into(), b"Subject: new\r\n\r\nx\r\n".to_vec()));
    h.cmd("STAT").expect("+OK 2 ");
    h.cmd("RETR 3").expect("-ERR no such message");
    h.cmd("QUIT").expect("+OK");
    let store = std::mem::take(&mut h.driver.store);
    let mut next = Harness::new(config(), true);
    next.driver.store = store;
    next.cmd("APOP user@example.jp").expect("-ERR syntax");
    let digest = apop_digest(TIMESTAMP, &Secret::new("secret"));
    next.cmd(&format!("APOP user@example.jp {digest}"))
        .expect("+OK maildrop has 3 messages");
}

#[test]
fn commit_failure_is_temporary_and_closes() {
    let mut h = Harness::logged_in();
    h.driver.commit_fails = true;
    h.cmd("DELE 1").expect("+OK");
    h.cmd("QUIT")
        .is("-ERR [SYS/TEMP] some deleted messages were not removed\r\n");
    assert!(h.closed);
}

#[test]
fn login_refusals_carry_response_codes() {
    let mut h = Harness::new(config(), true);
    h.cmd("PASS secret").expect("-ERR send USER first");
    h.cmd("USER user@example.jp").expect("+OK");
    h.cmd("PASS wrong").expect("-ERR [AUTH] ");
    h.cmd("PASS secret").expect("-ERR send USER first");
    h.cmd("USER locked@example.jp").expect("+OK");
    h.cmd("PASS secret")
        .is("-ERR [SYS/PERM] mailbox locked by the administrator\r\n");
    h.cmd("USER temp").expect("+OK");
    h.cmd("PASS x").expect("-ERR [SYS/TEMP] ");
    h.cmd("USER busy@example.jp").expect("+OK");
    h.cmd("PASS secret").expect("-ERR [IN-USE] ");
    h.cmd("STAT").expect("-ERR log in first");
    h.cmd("USER user@example.jp").expect("+OK");
    h.cmd("PASS secret").expect("+OK");
    h.cmd("USER user@example.jp")
        .expect("-ERR already logged in");
    h.cmd("STLS").expect("-ERR");
}

#[test]
fn spa_required_refuses_clear_text_logins() {
    let mut spa = config();
    spa.spa_required = true;
    let mut h = Harness::new(spa, true);
    h.cmd("USER user@example.jp")
        .expect("-ERR [AUTH] ")
        .contains("Secure Password Authentication is required");
    h.cmd("PASS secret").expect("-ERR [AUTH] ");
    h.cmd(&format!(
        "AUTH PLAIN {}",
        encode("\0user@example.jp\0secret")
    ))
    .expect("-ERR [AUTH] ")
    .contains("Secure Password Authentication is required");
    let digest = apop_digest(TIMESTAMP, &Secret::new("secret"));
    h.cmd(&format!("APOP user@example.jp {digest}"))
        .expect("+OK maildrop");
}

#[test]
fn apop_rfc1939_digest() {
    let mut h = Harness::new(config(), false);
    h.cmd("APOP user@example.jp c4c9334bac560ecc979e58001b3e22fb")
        .expect("-ERR [AUTH]");
    let digest = apop_digest(TIMESTAMP, &Secret::new("secret"));
    h.cmd(&format!("APOP user@example.jp {}", digest.to_uppercase()))
        .expect("+OK maildrop");
    let Some(Request::Authenticate(Credentials { proof, .. })) = h.driver.requests.get(1) else {
        panic!()
    };
    assert_eq!(
        proof,
        &Proof::Apop {
            timestamp: TIMESTAMP.into(),
            digest
        }
    );
}

#[test]
fn clear_text_needs_tls_and_stls_discards_injected_commands() {
    let mut h = Harness::new(config(), false);
    h.cmd("USER user@example.jp")
        .expect("-ERR [AUTH] ")
        .contains("STLS");
    h.cmd("AUTH PLAIN").expect("-ERR [AUTH] ");
    h.send(b"STLS\r\nUSER user@example.jp\r\nPASS secret\r\n")
        .is("+OK begin TLS negotiation\r\n");
    assert!(
        h.driver.requests.is_empty(),
        "the injected login was never read"
    );
    h.cmd("PASS secret").expect("-ERR send USER first");
    h.cmd("CAPA").lacks("STLS").contains("USER");
    h.cmd("USER user@example.jp").expect("+OK");
    h.cmd("PASS secret").expect("+OK maildrop");
}

#[test]
fn sasl_exchanges() {
    let mut cram = config();
    cram.offer_cram_md5 = true;
    let mut h = Harness::new(cram.clone(), true);
    h.cmd("AUTH")
        .is("+OK SASL mechanisms follow\r\nPLAIN\r\nLOGIN\r\nCRAM-MD5\r\n.\r\n");
    h.cmd("AUTH KERBEROS_V4")
        .expect("-ERR unsupported mechanism");
    h.cmd("AUTH PLAIN").is("+ \r\n");
    h.cmd("*").expect("-ERR authentication cancelled");
    h.cmd("AUTH LOGIN").is("+ VXNlcm5hbWU6\r\n");
    h.cmd("not base64!").expect("-ERR invalid base64");
    h.cmd("AUTH LOGIN").expect("+ ");
    h.cmd(&encode("user@example.jp")).is("+ UGFzc3dvcmQ6\r\n");
    h.cmd(&encode("wrong")).expect("-ERR [AUTH]");
    h.cmd(&format!(
        "AUTH PLAIN {}",
        encode("\0user@example.jp\0secret")
    ))
    .expect("+OK maildrop");

    let mut h = Harness::new(cram, false);
    h.cmd("AUTH")
        .is("+OK SASL mechanisms follow\r\nCRAM-MD5\r\n.\r\n");
    h.cmd("AUTH CRAM-MD5")
        .is(&format!("+ {}\r\n", encode(TIMESTAMP)));
    let digest = cram_md5_digest(TIMESTAMP, &Secret::new("secret"));
    h.cmd(&encode(format!("user@example.jp {digest}")))
        .expect("+OK maildrop");
}

#[test]
fn long_lines_and_too_many_errors() {
    let mut h = Harness::new(config(), true);
    let lenient = format!("USER {}", "u".repeat(300));
    h.cmd(&lenient).expect("+OK");
    h.cmd(&format!("USER {}", "u".repeat(1000)))
        .is("-ERR line too long\r\n");
    h.cmd("NOOP").expect("+OK");
    let mut strict = config();
    strict.max_invalid_commands = 2;
    let mut h = Harness::new(strict, true);
    h.cmd("XYZZY").expect("-ERR unknown command");
    h.cmd("XYZZY").contains("too many errors");
    assert!(h.closed);
}

#[test]
fn autologout() {
    let mut h = Harness::logged_in();
    h.cmd("DELE 1").expect("+OK");
    let deadline = h.session.deadline().unwrap();
    assert_eq!(deadline, h.now + Duration::from_secs(600));
    h.session.timeout(deadline - Duration::from_millis(1));
    assert_eq!(h.session.poll(), None);
    h.session.timeout(deadline);
    assert!(matches!(h.session.poll(), Some(Event::Reply(r)) if !r.is_ok()));
    assert_eq!(h.session.poll(), Some(Event::Close));
    assert!(h.driver.commits().is_empty(), "autologout deletes nothing");
}

#[test]
fn answers_must_fit_the_request() {
    let mut h = Harness::new(config(), true);
    assert_eq!(
        h.session.answer(Response::Committed),
        Err(AnswerError::NothingAsked)
    );
    h.session
        .feed(b"USER user@example.jp\r\nPASS secret\r\nSTAT\r\n", h.now);
    assert!(matches!(h.session.poll(), Some(Event::Reply(_))));
    assert!(matches!(
        h.session.poll(),
        Some(Event::Request(Request::Authenticate(_)))
    ));
    assert_eq!(h.session.poll(), None);
    assert_eq!(
        h.session.answer(Response::InUse),
        Err(AnswerError::Mismatch)
    );
    h.session
        .answer(Response::Ok {
            mailbox: "m".into(),
        })
        .unwrap();
    assert_eq!(
        h.session.poll(),
        Some(Event::Request(Request::OpenMailbox {
            mailbox: "m".into()
        }))
    );
    h.session.answer(Response::Opened(Vec::new())).unwrap();
    assert!(matches!(h.session.poll(), Some(Event::Reply(r)) if r.is_ok()));
    assert_eq!(h.session.poll(), Some(Event::Reply(Reply::ok("0 0"))));
}

const SCRIPT: &[u8] = b"CAPA\r\nUSER user@example.jp\r\nPASS wrong\r\nUSER user@example.jp\r\nPASS secret\r\n\
STAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nTOP 2 0\r\nDELE 1\r\nRETR 1\r\nBOGUS\r\nRSET\r\nDELE 2\r\nQUIT\r\n";

fn transcript(chunks: &[&[u8]]) -> (String, Vec<Request>) {
    let mut h = Harness::new(config(), true);
    let mut all = String::new();
    for chunk in chunks {
        all.push_str(&h.send(chunk).0);
    }
    (all, h.driver.requests)
}

#[test]
fn every_single_split_gives_the_same_replies() {
    let whole = transcript(&[SCRIPT]);
    assert!(
        whole.0.ends_with("signing off (1 messages left)\r\n"),
        "{}",
        whole.0
    );
    for at in 0..=SCRIPT.len() {
        let (a, b) = SCRIPT.split_at(at);
        assert_eq!(transcript(&[a, b]), whole, "split at {at}");
    }
}

proptest! {
    #[test]
    fn any_splits_give_the_same_replies(mut cuts in proptest::collection::vec(0..SCRIPT.len(), 0..12)) {
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for cut in cuts {
            chunks.push(&SCRIPT[start..cut]);
            start = cut;
        }
        chunks.push(&SCRIPT[start..]);
        prop_assert_eq!(transcript(&chunks), transcript(&[SCRIPT]));
    }

    /// Arbitrary input never panics, and what the core holds stays bounded.
    #[test]
    fn arbitrary_input_is_survived(chunks in proptest::collection::vec(
        proptest::collection::vec(prop_oneof![
            4 => any::<u8>(),
            2 => Just(b'\r'),
            2 => Just(b'\n'),
            1 => Just(b' '),
            1 => Just(b'1'),
        ], 0..300), 0..12),
        prefix in prop_oneof![
            Just(&b""[..]),
            Just(&b"USER user@example.jp\r\nPASS secret\r\n"[..]),
            Just(&b"AUTH LOGIN\r\n"[..]),
            Just(&b"USER user@example.jp\r\nPASS secret\r\nDELE 1\r\nRETR "[..]),
        ])
    {
        let mut small = config();
        small.max_line_length = 64;
        small.max_invalid_commands = 1000;
        let mut h = Harness::new(small, true);
        h.send(prefix);
        for chunk in &chunks {
            h.send(chunk);
            prop_assert!(h.session.buffered() <= 64 + 1);
        }
    }
}
