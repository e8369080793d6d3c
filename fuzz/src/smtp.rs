//! The SMTP session harness: a fuzzed client stream, cut into reads, fed to
//! [`Session::feed`]; every request answered with a response the input chooses; every event
//! checked.
//!
//! Input: `flags` `more` `split` `n` `answers[n]` `stream…` (see `fuzz/README.md`).
//!
//! Invariants checked:
//! - every reply is well-formed on the wire (`ddd-…`/`ddd …` lines, one code, CRLF only) and
//!   its enhanced status class matches the code;
//! - a request is the last event until it is answered; a wrong answer is refused and changes
//!   nothing; an answer when nothing was asked is refused;
//! - nothing pipelined behind STARTTLS runs before the handshake (R19);
//! - once closed, the session emits nothing more and has no deadline;
//! - input held while reading commands stays within one line (`buffered()`);
//! - clear-text credentials are only ever asked about over TLS or when configured;
//! - a routed path (R16) is never handed to the driver to look up;
//! - a delivery has recipients, no bare CR or LF and no NUL (R19), fits the size limit, relays
//!   only for a client that may relay (R16), and comes through submission only after AUTH;
//! - the spool file is opened before DATA's `354`, one at a time, pieces go only to an open
//!   one and are at most a piece long, and every spool file ends delivered or discarded (a
//!   failed append is never delivered);
//! - the `Received:` header cannot end the header block early;
//! - the replies and requests do not depend on how the stream was cut (when no STARTTLS);
//! - a session waiting for a command has a deadline, and the timeout closes it with `421`.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use dirmail_proto::smtp::address::{ForwardPath, classify};
use dirmail_proto::smtp::session::AnswerError;
use dirmail_proto::smtp::data::PIECE;
use dirmail_proto::smtp::{
    Config, Event, Listener, ReceivedHeader, Reply, Request, Response, Session, Target,
};

use crate::{Answers, EVENT_BOUND, Header, chunks, only_crlf};

/// Small limits, so the fuzzer reaches the overlong-line and too-big paths.
pub const MAX_LINE: usize = 200;
pub const MAX_MESSAGE: u64 = 1024;
pub const MAX_RECIPIENTS: usize = 4;

#[derive(Debug, Clone, Copy)]
struct Setup {
    tls: bool,
    plaintext: bool,
    allow_listed: bool,
    cram: bool,
    listener: Listener,
    own_sender: bool,
    fire_timeout: bool,
    starttls: bool,
    lenient: bool,
}

impl Setup {
    fn read(flags: u8, more: u8) -> Setup {
        Setup {
            tls: flags & 1 != 0,
            plaintext: flags & 2 != 0,
            allow_listed: flags & 4 != 0,
            cram: flags & 8 != 0,
            listener: match (flags >> 4) & 3 {
                1 => Listener::Submission,
                2 => Listener::ImplicitTls,
                _ => Listener::Relay,
            },
            own_sender: flags & 0x40 != 0,
            fire_timeout: flags & 0x80 != 0,
            starttls: more & 1 == 0,
            lenient: more & 2 != 0,
        }
    }

    fn config(&self) -> Config {
        let mut config = Config::new("mx.example.jp");
        config.listener = self.listener;
        config.max_message_size = MAX_MESSAGE;
        config.max_line_length = MAX_LINE;
        config.starttls_available = self.starttls;
        config.plaintext_auth_without_tls = self.plaintext;
        config.offer_cram_md5 = self.cram;
        config.cram_challenge = "<1896.697170952@mx.example.jp>".into();
        config.relay_allow = if self.allow_listed {
            vec!["192.0.2.0/24".parse().expect("a network")]
        } else {
            Vec::new()
        };
        config.require_own_sender = self.own_sender;
        config.max_recipients = MAX_RECIPIENTS;
        config.max_invalid_commands = if self.lenient { 10_000 } else { 6 };
        config
    }
}

/// One session and what the harness knows about it.
struct Run<'a> {
    setup: Setup,
    session: Session,
    answers: Answers<'a>,
    now: Instant,
    tls: bool,
    authenticated: bool,
    closed: bool,
    saw_starttls: bool,
    /// Mailbox keys handed out in `Local` answers.
    handed_out: HashSet<String>,
    /// Replies and requests, for comparing two ways of cutting the stream.
    transcript: Vec<u8>,
    /// The open spool file: what was appended, and whether an append failed.
    spool: Option<(Vec<u8>, bool)>,
}

impl<'a> Run<'a> {
    fn new(setup: Setup, answers: Answers<'a>) -> Self {
        let now = Instant::now();
        let peer: IpAddr = "192.0.2.10".parse().expect("an address");
        let session = Session::new(setup.config(), peer, setup.tls, now);
        check_reply(&session.greeting());
        Run {
            setup,
            session,
            answers,
            now,
            tls: setup.tls,
            authenticated: false,
            closed: false,
            saw_starttls: false,
            handed_out: HashSet::new(),
            transcript: Vec::new(),
            spool: None,
        }
    }

    fn may_relay(&self) -> bool {
        self.authenticated || self.setup.allow_listed
    }

    fn feed(&mut self, chunk: &[u8]) {
        self.session.feed(chunk, self.now);
        self.drain();
        if self.closed {
            assert!(self.session.is_closed());
            assert_eq!(
                self.session.deadline(),
                None,
                "a closed session has no deadline"
            );
        } else {
            assert!(
                self.session.wants_input(),
                "every request was answered, so the core reads input"
            );
            assert!(
                self.session.buffered() <= MAX_LINE + 1,
                "{} octets held between commands",
                self.session.buffered()
            );
        }
        assert_eq!(
            self.session.answer(Response::Delivered),
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
                    self.check_ehlo(&reply);
                    self.transcript.extend_from_slice(&reply.to_bytes());
                }
                Event::Request(request) => {
                    assert_eq!(self.session.poll(), None, "a request is the last event");
                    assert!(!self.session.wants_input());
                    self.check_request(&request);
                    self.transcript
                        .extend_from_slice(format!("{request:?}\n").as_bytes());
                    let octet = self.answers.next();
                    if octet & 0x80 != 0 {
                        assert_eq!(
                            self.session.answer(wrong_response(&request)),
                            Err(AnswerError::Mismatch)
                        );
                        assert_eq!(
                            self.session.poll(),
                            None,
                            "a refused answer changes nothing"
                        );
                    }
                    let response = self.response(&request, octet);
                    assert_eq!(self.session.answer(response), Ok(()));
                }
                Event::StartTls => {
                    assert!(!self.tls, "STARTTLS inside TLS");
                    assert!(self.setup.starttls, "STARTTLS when not offered");
                    // R19: whatever came behind STARTTLS is not answered before the handshake.
                    assert_eq!(self.session.poll(), None, "pipelined plaintext ran (R19)");
                    self.saw_starttls = true;
                    self.session.tls_started(self.now);
                    self.tls = true;
                    self.authenticated = false;
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

    /// The EHLO list offers STARTTLS only before TLS, and AUTH only where a password may go.
    fn check_ehlo(&self, reply: &Reply) {
        let lines = reply.lines();
        if reply.code != 250 || !lines.first().is_some_and(|l| l.contains(" greets ")) {
            return;
        }
        let offers = |word: &str| {
            lines
                .iter()
                .skip(1)
                .any(|l| l.split(' ').next() == Some(word))
        };
        assert_eq!(
            offers("STARTTLS"),
            !self.tls && self.setup.starttls,
            "{lines:?}"
        );
        assert_eq!(
            offers("AUTH"),
            self.tls || self.setup.plaintext,
            "{lines:?}"
        );
    }

    fn check_request(&self, request: &Request) {
        match request {
            Request::Authenticate(credentials) => {
                assert!(!self.authenticated, "a second AUTH reached the driver");
                if credentials.proof.is_clear_text() {
                    assert!(
                        self.tls || self.setup.plaintext,
                        "a clear-text password asked about outside TLS"
                    );
                } else {
                    assert!(self.setup.cram, "CRAM-MD5 when not offered");
                }
            }
            Request::CheckRecipient(address) => {
                // R16: the driver is only ever asked about a path without a route.
                let written = address.as_written();
                assert_eq!(
                    classify(&written),
                    ForwardPath::Checkable(address.clone()),
                    "{written:?}"
                );
                assert!(self.setup.listener == Listener::Relay || self.authenticated);
            }
            Request::OpenMessage(received) => {
                assert!(self.spool.is_none(), "a second spool file opened");
                assert!(self.setup.listener == Listener::Relay || self.authenticated);
                check_received(received);
            }
            Request::AppendMessage(piece) => {
                assert!(self.spool.is_some(), "a piece without a spool file");
                assert!(piece.len() <= PIECE + 1, "a piece of {}", piece.len());
            }
            Request::DiscardMessage => assert!(self.spool.is_some(), "nothing to discard"),
            Request::Deliver(delivery) => {
                let Some((spooled, failed)) = &self.spool else {
                    panic!("a delivery without a spool file")
                };
                assert!(!failed, "a message whose spooling failed was delivered");
                let message = [spooled.as_slice(), &delivery.tail].concat();
                assert!(self.setup.listener == Listener::Relay || self.authenticated);
                assert!(!delivery.recipients.is_empty(), "a delivery to nobody");
                assert!(delivery.recipients.len() <= MAX_RECIPIENTS);
                assert!(message.len() as u64 <= MAX_MESSAGE);
                assert!(only_crlf(&message), "a bare CR or LF reached the store (R19)");
                assert!(!message.contains(&0), "a NUL reached the store (R19)");
                for recipient in &delivery.recipients {
                    match &recipient.target {
                        Target::Relay => assert!(self.may_relay(), "relayed for a stranger (R16)"),
                        Target::Local { mailbox } => {
                            assert!(self.handed_out.contains(mailbox), "{mailbox:?}")
                        }
                    }
                }
            }
        }
    }

    fn response(&mut self, request: &Request, octet: u8) -> Response {
        match request {
            Request::Authenticate(_) => match octet % 3 {
                0 => {
                    self.authenticated = true;
                    Response::AuthOk {
                        identity: "user@example.jp".into(),
                        own_addresses: vec!["user@example.jp".into()],
                    }
                }
                1 => Response::BadCredentials,
                _ => Response::TempFail,
            },
            Request::CheckRecipient(_) => {
                let mailbox = format!("mbox{}", (octet >> 3) & 3);
                match octet % 5 {
                    0 => {
                        self.handed_out.insert(mailbox.clone());
                        Response::Local {
                            mailbox,
                            quota_left: None,
                        }
                    }
                    1 => {
                        self.handed_out.insert(mailbox.clone());
                        Response::Local {
                            mailbox,
                            quota_left: Some(u64::from(octet) * 8),
                        }
                    }
                    2 => Response::LocalUnknown,
                    3 => Response::NotLocal,
                    _ => Response::TempFail,
                }
            }
            Request::OpenMessage(_) => match octet % 3 {
                0 | 1 => {
                    self.spool = Some((Vec::new(), false));
                    Response::Opened
                }
                _ => {
                    if octet & 4 != 0 {
                        Response::DiskFull
                    } else {
                        Response::TempFail
                    }
                }
            },
            Request::AppendMessage(piece) => {
                let failure = match octet % 4 {
                    0 => Some(Response::DiskFull),
                    1 => Some(Response::TempFail),
                    _ => None,
                };
                if let Some((spooled, failed)) = &mut self.spool {
                    spooled.extend_from_slice(piece);
                    *failed |= failure.is_some();
                }
                failure.unwrap_or(Response::Appended)
            }
            Request::DiscardMessage => {
                self.spool = None;
                Response::Discarded
            }
            Request::Deliver(_) => {
                self.spool = None;
                match octet % 4 {
                    0 => Response::Delivered,
                    1 => Response::QuotaExceeded,
                    2 => Response::DiskFull,
                    _ => Response::TempFail,
                }
            }
        }
    }

    /// R19's timer half: a session left waiting for a command times out with `421`.
    fn fire_timeout(&mut self) {
        if self.closed {
            return;
        }
        let deadline = self
            .session
            .deadline()
            .expect("a session waiting for input has a deadline");
        self.session.timeout(deadline - Duration::from_millis(1));
        assert_eq!(self.session.poll(), None, "timed out early");
        self.session.timeout(deadline);
        match self.session.poll() {
            Some(Event::Reply(reply)) => {
                check_reply(&reply);
                assert_eq!(reply.code, 421);
            }
            other => panic!("the timeout said {other:?}"),
        }
        assert_eq!(self.session.poll(), Some(Event::Close));
        self.closed = true;
        self.feed(b"NOOP\r\n");
    }
}

/// An answer of the wrong kind for `request`.
fn wrong_response(request: &Request) -> Response {
    match request {
        Request::Authenticate(_) => Response::Delivered,
        Request::CheckRecipient(_) => Response::BadCredentials,
        Request::OpenMessage(_) | Request::DiscardMessage => Response::Delivered,
        Request::AppendMessage(_) | Request::Deliver(_) => Response::NotLocal,
    }
}

/// The `Received:` header is one header, CRLF only, and cannot end the header block.
fn check_received(received: &ReceivedHeader) {
    // `regressions/smtp_session/received-for-bare-cr`: a relayed recipient once put a bare CR
    // here.
    let header = received.render("Thu, 1 Jan 1970 00:00:00 +0000");
    assert!(
        header.ends_with("\r\n") && only_crlf(header.as_bytes()),
        "a bare CR or LF in the Received: header: {header:?}"
    );
    assert!(
        !header.contains("\r\n\r\n"),
        "the Received: header ends the header block: {header:?}"
    );
    assert!(
        header
            .split("\r\n")
            .skip(1)
            .all(|line| line.is_empty() || line.starts_with('\t')),
        "a header line injected into Received: {header:?}"
    );
}

/// RFC 5321 §4.2 and RFC 3463: `ddd-text` lines then one `ddd text` line, CRLF, one code;
/// the enhanced status, when present, is of the code's class.
pub fn check_reply(reply: &Reply) {
    assert!((200..=599).contains(&reply.code), "code {}", reply.code);
    if let Some(status) = reply.status {
        assert_eq!(u16::from(status.0), reply.code / 100, "{reply:?}");
    }
    let wire = reply.to_bytes();
    assert!(only_crlf(&wire) && wire.ends_with(b"\r\n"), "{wire:?}");
    let lines: Vec<&[u8]> = wire
        .strip_suffix(b"\r\n")
        .unwrap_or(&wire)
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .collect();
    let code = reply.code.to_string();
    for (i, line) in lines.iter().enumerate() {
        let sep = if i + 1 == lines.len() { b' ' } else { b'-' };
        assert!(line.starts_with(code.as_bytes()), "{wire:?}");
        assert_eq!(line.get(3), Some(&sep), "{wire:?}");
    }
}

/// The fuzz target's body.
pub fn run(data: &[u8]) {
    let mut header = Header::new(data);
    let setup = Setup::read(header.byte(), header.byte());
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
        // STARTTLS drops what follows it in the same read, so there the cut matters.
        if !cut.saw_starttls && !whole.saw_starttls {
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
