//! The POP3 session harness: a fuzzed client stream fed to [`Session::feed`] in pieces; every
//! request answered as the input chooses (logins, the R20 snapshot, messages, the commit).
//!
//! Input: `flags` `split` `n` `answers[n]` `stream…` (see `fuzz/README.md`).
//!
//! Invariants checked:
//! - every reply starts `+OK`, `-ERR` or `+ ` and is one CRLF line, or a multi-line reply
//!   whose body is byte-stuffed and ends at its own `.` line and nowhere earlier;
//! - RETR sends the stored message back line for line; TOP sends a prefix of it;
//! - a request is the last event until answered; wrong answers are refused and change nothing;
//! - clear-text credentials are asked about only over TLS or when allowed, never with
//!   `sparequired`;
//! - the mailbox opened is the one the login named; RETR and the commit name only messages
//!   of the snapshot (R20), the commit comes once, at the end;
//! - nothing pipelined behind STLS runs before the handshake; a closed session is silent;
//! - input held between commands stays within one line; the cut of the stream does not
//!   change the session (without STLS); the autologout closes an idle session.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dirmail_proto::pop3::session::AnswerError;
use dirmail_proto::pop3::{Config, Event, MessageInfo, Reply, Request, Response, Session};

use crate::{Answers, EVENT_BOUND, Header, chunks, only_crlf};

pub const MAX_LINE: usize = 120;

/// Stored messages the driver hands out: the awkward shapes for a multi-line reply.
pub const MESSAGES: [&[u8]; 8] = [
    b"Subject: a\r\n\r\nbody\r\n",
    b".\r\n..\r\n.x\r\n",
    b"no final line end",
    b"lf\nonly\n\n.\n",
    b"",
    b"Subject: b\r\n\r\n.\r\n\r\n.\r\nend",
    b"\r\n\r\n",
    b"cr\ronly\r",
];

#[derive(Debug, Clone, Copy)]
struct Setup {
    tls: bool,
    plaintext: bool,
    spa_required: bool,
    starttls: bool,
    cram: bool,
    lenient: bool,
    fire_timeout: bool,
}

impl Setup {
    fn read(flags: u8) -> Setup {
        Setup {
            tls: flags & 1 != 0,
            plaintext: flags & 2 != 0,
            spa_required: flags & 4 != 0,
            starttls: flags & 8 == 0,
            cram: flags & 0x10 != 0,
            lenient: flags & 0x20 != 0,
            fire_timeout: flags & 0x40 != 0,
        }
    }

    fn config(&self) -> Config {
        let mut config = Config::new("pop.example.jp", "<1896.697170952@pop.example.jp>");
        config.plaintext_allowed = self.plaintext;
        config.spa_required = self.spa_required;
        config.starttls_available = self.starttls;
        config.offer_cram_md5 = self.cram;
        config.max_line_length = MAX_LINE;
        config.max_invalid_commands = if self.lenient { 10_000 } else { 6 };
        config
    }
}

/// What the harness expects of the reply that answers a request.
#[derive(Debug)]
enum Expect {
    Nothing,
    Message { stored: &'static [u8], top: bool },
}

struct Run<'a> {
    setup: Setup,
    session: Session,
    answers: Answers<'a>,
    now: Instant,
    tls: bool,
    closed: bool,
    saw_stls: bool,
    /// The mailbox key of the last successful login, until it is opened.
    login: Option<String>,
    /// The snapshot handed out at open: (uid, message).
    snapshot: Option<Vec<(String, &'static [u8])>>,
    committed: bool,
    expect: Expect,
    transcript: Vec<u8>,
}

impl<'a> Run<'a> {
    fn new(setup: Setup, answers: Answers<'a>) -> Self {
        let now = Instant::now();
        let peer: IpAddr = "192.0.2.20".parse().expect("an address");
        let session = Session::new(setup.config(), peer, setup.tls, now);
        check_reply(&session.greeting());
        Run {
            setup,
            session,
            answers,
            now,
            tls: setup.tls,
            closed: false,
            saw_stls: false,
            login: None,
            snapshot: None,
            committed: false,
            expect: Expect::Nothing,
            transcript: Vec::new(),
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        self.session.feed(chunk, self.now);
        self.drain();
        if self.closed {
            assert!(self.session.is_closed());
            assert_eq!(self.session.deadline(), None);
        } else {
            assert!(self.session.wants_input());
            assert!(
                self.session.buffered() <= MAX_LINE + 1,
                "{} octets held between commands",
                self.session.buffered()
            );
        }
        assert_eq!(
            self.session.answer(Response::Committed),
            Err(AnswerError::NothingAsked)
        );
    }

    fn drain(&mut self) {
        for _ in 0..EVENT_BOUND {
            let Some(event) = self.session.poll() else {
                return;
            };
            assert!(!self.closed, "an event after Close: {event:?}");
            match event {
                Event::Reply(reply) => {
                    check_reply(&reply);
                    self.check_expected(&reply);
                    self.transcript.extend_from_slice(&reply.to_bytes());
                }
                Event::Request(request) => {
                    assert_eq!(self.session.poll(), None, "a request is the last event");
                    assert!(!self.session.wants_input());
                    assert!(!self.committed, "a request after the commit");
                    self.check_request(&request);
                    self.transcript
                        .extend_from_slice(format!("{request:?}\n").as_bytes());
                    let octet = self.answers.next();
                    if octet & 0x80 != 0 {
                        assert_eq!(
                            self.session.answer(wrong_response(&request)),
                            Err(AnswerError::Mismatch)
                        );
                        assert_eq!(self.session.poll(), None);
                    }
                    let response = self.response(&request, octet);
                    assert_eq!(self.session.answer(response), Ok(()));
                }
                Event::StartTls => {
                    assert!(!self.tls && self.setup.starttls, "STLS when not offered");
                    assert_eq!(self.session.poll(), None, "pipelined plaintext ran (STLS)");
                    assert!(self.snapshot.is_none(), "STLS after login");
                    self.saw_stls = true;
                    self.session.tls_started(self.now);
                    self.tls = true;
                    self.transcript.extend_from_slice(b"<tls>\n");
                }
                Event::Close => {
                    self.closed = true;
                    assert_eq!(self.session.poll(), None, "Close is the last event");
                }
            }
        }
        panic!("the session did not settle within {EVENT_BOUND} events");
    }

    fn check_expected(&mut self, reply: &Reply) {
        let Expect::Message { stored, top } = std::mem::replace(&mut self.expect, Expect::Nothing)
        else {
            return;
        };
        let Reply::Message { body, .. } = reply else {
            panic!("a message was read, and the reply is {reply:?}");
        };
        let sent = unstuff(body);
        let lines = stored_lines(stored);
        if top {
            assert!(lines.starts_with(&sent), "TOP is not a prefix: {sent:?}");
        } else {
            assert_eq!(sent, lines, "RETR changed the message");
        }
    }

    fn check_request(&mut self, request: &Request) {
        match request {
            Request::Authenticate(credentials) => {
                assert!(self.snapshot.is_none(), "a login inside TRANSACTION");
                if credentials.proof.is_clear_text() {
                    assert!(
                        (self.tls || self.setup.plaintext) && !self.setup.spa_required,
                        "a clear-text password asked about where it may not go"
                    );
                }
            }
            Request::OpenMailbox { mailbox } => {
                assert_eq!(
                    self.login.take().as_deref(),
                    Some(mailbox.as_str()),
                    "opened a mailbox nobody logged in to"
                );
            }
            Request::Retrieve {
                index,
                uid,
                top_lines,
            } => {
                let snapshot = self.snapshot.as_ref().expect("RETR before login");
                let (known, stored) = snapshot.get(*index).expect("RETR past the snapshot");
                assert_eq!(known, uid, "RETR names another message");
                self.expect = Expect::Message {
                    stored,
                    top: top_lines.is_some(),
                };
            }
            Request::Commit { delete } => {
                let snapshot = self.snapshot.as_ref().expect("a commit before login");
                for (i, uid) in delete.iter().enumerate() {
                    assert!(snapshot.iter().any(|(known, _)| known == uid), "{uid:?}");
                    assert!(!delete[..i].contains(uid), "{uid:?} deleted twice");
                }
                self.committed = true;
            }
        }
    }

    fn response(&mut self, request: &Request, octet: u8) -> Response {
        match request {
            Request::Authenticate(_) => match octet % 4 {
                0 => {
                    self.login = Some("mbox".into());
                    Response::Ok {
                        mailbox: "mbox".into(),
                    }
                }
                1 => Response::BadCredentials,
                2 => Response::Locked,
                _ => Response::TempFail,
            },
            Request::OpenMailbox { .. } => match octet % 3 {
                0 => {
                    let count = usize::from(octet >> 2) % 6;
                    let snapshot: Vec<(String, &'static [u8])> = (0..count)
                        .map(|i| {
                            let stored = MESSAGES[(i + usize::from(octet)) % MESSAGES.len()];
                            (format!("uid-{i}"), stored)
                        })
                        .collect();
                    let infos = snapshot
                        .iter()
                        .map(|(uid, stored)| MessageInfo {
                            uid: uid.clone(),
                            size: stored.len() as u64,
                        })
                        .collect();
                    self.snapshot = Some(snapshot);
                    Response::Opened(infos)
                }
                1 => Response::InUse,
                _ => Response::TempFail,
            },
            Request::Retrieve { .. } => {
                if octet % 5 == 4 {
                    self.expect = Expect::Nothing;
                    Response::TempFail
                } else {
                    match &self.expect {
                        Expect::Message { stored, .. } => Response::Message(stored.to_vec()),
                        Expect::Nothing => Response::TempFail,
                    }
                }
            }
            Request::Commit { .. } => match octet % 2 {
                0 => Response::Committed,
                _ => Response::TempFail,
            },
        }
    }

    /// RFC 1939 autologout: an idle session is closed, and nothing is committed.
    fn fire_timeout(&mut self) {
        if self.closed {
            return;
        }
        let deadline = self
            .session
            .deadline()
            .expect("a session waiting for input has a deadline");
        self.session.timeout(deadline - Duration::from_millis(1));
        assert_eq!(self.session.poll(), None, "logged out early");
        self.session.timeout(deadline);
        match self.session.poll() {
            Some(Event::Reply(reply)) => {
                check_reply(&reply);
                assert!(!reply.is_ok());
            }
            other => panic!("the autologout said {other:?}"),
        }
        assert_eq!(self.session.poll(), Some(Event::Close));
        self.closed = true;
        self.feed(b"QUIT\r\n");
    }
}

fn wrong_response(request: &Request) -> Response {
    match request {
        Request::Authenticate(_) => Response::Committed,
        Request::OpenMailbox { .. } => Response::BadCredentials,
        Request::Retrieve { .. } => Response::InUse,
        Request::Commit { .. } => Response::Message(Vec::new()),
    }
}

/// The stored message as the lines RETR must send: split at LF, one CR before it dropped.
fn stored_lines(stored: &[u8]) -> Vec<Vec<u8>> {
    let mut lines: Vec<&[u8]> = stored.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
        .into_iter()
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
        .collect()
}

/// A multi-line body back into its lines: CRLF-separated, the final `.` line removed, one
/// leading dot of every stuffed line removed. Panics when the body ends early or late.
fn unstuff(body: &[u8]) -> Vec<Vec<u8>> {
    let text = body
        .strip_suffix(b".\r\n")
        .expect("a multi-line reply ends with `.` CRLF");
    let mut lines = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("every line of a multi-line reply ends with CRLF");
        let (line, tail) = rest.split_at(end);
        rest = &tail[2..];
        let line = match line.first() {
            Some(b'.') => {
                assert_eq!(line.get(1), Some(&b'.'), "an unstuffed dot line: {line:?}");
                &line[1..]
            }
            _ => line,
        };
        lines.push(line.to_vec());
    }
    lines
}

/// The wire form: one `+OK`/`-ERR`/`+ ` line, or `+OK` and a terminated, stuffed body.
pub fn check_reply(reply: &Reply) {
    let wire = reply.to_bytes();
    let first_end = wire
        .windows(2)
        .position(|w| w == b"\r\n")
        .expect("a reply line ends with CRLF");
    let (first, body) = wire.split_at(first_end + 2);
    assert!(only_crlf(first), "{first:?}");
    let ok = first.starts_with(b"+OK\r\n") || first.starts_with(b"+OK ");
    let err = first.starts_with(b"-ERR ");
    let challenge = first.starts_with(b"+ ");
    assert!(ok || err || challenge, "{first:?}");
    assert_eq!(reply.is_ok(), !err);
    match reply {
        Reply::Lines { .. } | Reply::Message { .. } => {
            assert!(ok);
            unstuff(body);
        }
        Reply::Ok(_) | Reply::Err(..) | Reply::Challenge(_) => {
            assert!(body.is_empty(), "a single-line reply goes on: {wire:?}");
        }
    }
}

/// The fuzz target's body.
pub fn run(data: &[u8]) {
    let mut header = Header::new(data);
    let setup = Setup::read(header.byte());
    let split = header.byte();
    let answers = Answers::new(header.counted());
    let stream = header.rest();

    let mut cut = Run::new(setup, answers.clone());
    for chunk in chunks(stream, split) {
        cut.feed(chunk);
    }
    if split != 0 {
        let mut whole = Run::new(setup, answers);
        whole.feed(stream);
        if !cut.saw_stls && !whole.saw_stls {
            assert!(
                cut.transcript == whole.transcript,
                "cutting the stream changed the session:\n--- cut\n{}\n--- whole\n{}",
                String::from_utf8_lossy(&cut.transcript),
                String::from_utf8_lossy(&whole.transcript)
            );
        }
    }
    if setup.fire_timeout {
        cut.fire_timeout();
    }
}
