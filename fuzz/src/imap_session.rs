//! The IMAP session harness: a fuzzed client stream, cut into reads, fed to
//! [`Session::feed`] as `net::imap` does; every request answered by a small in-memory mail
//! store (folders, UIDs, flags, message bytes), with failures and the changes of another
//! session where the input says; every reply checked against the client's view of the
//! selected mailbox.
//!
//! Input: `flags` `size` `split` `n` `answers[n]` `stream…` (see `fuzz/README.md`).
//!
//! Invariants checked:
//! - every reply is well-formed IMAP (imap-codec decodes it whole, no remainder): a tagged
//!   `OK`/`NO`/`BAD`, an untagged `* …`, or a continuation `+ …`, CRLF-terminated;
//! - every tagged completion carries the tag of a command line of the stream, in stream
//!   order, at most one per line;
//! - nothing pipelined behind STARTTLS runs: after the handshake completions match only lines
//!   read after it, and nothing is emitted between `StartTls` and the next read;
//! - clear-text logins reach the driver only over TLS or when allowed; the capabilities say
//!   so (`LOGINDISABLED`, `AUTH=PLAIN`, `STARTTLS` exactly when they should); nothing but a
//!   login reaches the store before one succeeded, and no login after;
//! - a request is the last event until answered, a wrong answer is refused and changes
//!   nothing, an answer when nothing is asked is refused; while a request is out the core
//!   writes nothing, even when the driver reads on;
//! - input held stays bounded: while reading, at most one command (the largest message and
//!   64 KiB); a synchronizing literal over the limit is refused, never awaited; once the last
//!   command is completed, nothing at all is held;
//! - after `* BYE` at most the LOGOUT completion, then `Close`, then silence; a closed
//!   session has no deadline; a reading one has the login or the autologout deadline;
//! - the client's view of the mailbox stays consistent: `EXISTS` never shrinks it,
//!   `EXPUNGE` and `FETCH` name message numbers within it, `RECENT` is at most `EXISTS`,
//!   UIDs grow with the message number and belong to the folder, `SEARCH` results ascend;
//! - FETCH sends the stored bytes back: `BODY[]`, `RFC822` exactly, a partial a slice,
//!   `HEADER`/`TEXT` the two halves, `RFC822.SIZE` the length;
//! - requests name canonical folder names and only UIDs of the selected folder, once each;
//!   a read-only folder is never changed; loads come in the configured batches; an APPEND
//!   fits the size limit;
//! - after the stream, a session not closed still answers a NOOP (it is never stuck) unless
//!   it is reading a huge non-synchronizing literal;
//! - the replies and requests do not depend on how the stream was cut (without STARTTLS and
//!   without IDLE wake-ups between reads).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use dirmail_proto::imap::{
    AnswerError, Config, Event, Failure, MessageMeta, Reply, Request, Response, Session, Snapshot,
};
use dirmail_proto::imap::mailbox::{Flags, FolderStatus, INBOX, check_name, keyword_bits};
use imap_codec::decode::Decoder;
use imap_codec::{GreetingCodec, ResponseCodec};
use imap_types::auth::AuthMechanism;
use imap_types::core::{IString, NString};
use imap_types::fetch::{MessageDataItem, Section};
use imap_types::response::{
    Capability, Code, Data, Greeting, Response as Wire, Status, StatusKind,
};

use crate::{Answers, EVENT_BOUND, Header, chunks};

/// Folded into the fragmentizer's limit beside the largest message (`max_frame` of the core).
const FRAME_EXTRA: usize = 64 * 1024;
/// What the core may hold past one full command while the driver reads ahead.
const PENDING_EXTRA: usize = 64 * 1024;
/// The tag of the NOOP sent after the stream, to see the session is not stuck.
const PROBE_TAG: &str = "ZZ9";

/// The messages the store starts with and delivers: the awkward shapes for FETCH and SEARCH.
pub const MESSAGES: [&[u8]; 8] = [
    b"From: Alice <alice@example.jp>\r\nTo: bob@example.jp\r\nSubject: Lunch\r\nDate: Mon, 7 Feb 1994 21:52:25 -0800\r\n\r\nNoodles at noon?\r\n",
    b"Subject: =?UTF-8?B?5pel5pys?=\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nplain\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--b--\r\n",
    b"Subject: fwd\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\nFrom: x@y\r\n\r\ninner body\r\n",
    b"no header end\0with a NUL and \xff\xfe 8-bit",
    b"",
    b"Subject: lf only\n\n.\nbody\n",
    b"Content-Type: multipart/mixed; boundary=\"z\"\r\n\r\n--z\r\n\r\nno end boundary",
    b"\r\n\r\nonly a body",
];

#[derive(Debug, Clone, Copy)]
struct Setup {
    tls: bool,
    plaintext: bool,
    starttls: bool,
    lenient: bool,
    fire_timeout: bool,
    small_batches: bool,
    read_ahead: bool,
    poke_idle: bool,
    max_message_size: u32,
}

impl Setup {
    fn read(flags: u8, size: u8) -> Setup {
        Setup {
            tls: flags & 1 != 0,
            plaintext: flags & 2 != 0,
            starttls: flags & 4 == 0,
            lenient: flags & 8 != 0,
            fire_timeout: flags & 0x10 != 0,
            small_batches: flags & 0x20 != 0,
            read_ahead: flags & 0x40 != 0,
            poke_idle: flags & 0x80 != 0,
            max_message_size: 32 + 16 * u32::from(size),
        }
    }

    fn config(&self) -> Config {
        let mut config = Config::new("imap.example.jp");
        config.plaintext_allowed = self.plaintext;
        config.starttls_available = self.starttls;
        config.max_message_size = self.max_message_size;
        config.max_invalid_commands = if self.lenient { 10_000 } else { 6 };
        if self.small_batches {
            config.batch_messages = 2;
            config.batch_bytes = 100;
        }
        config
    }

    fn batch_messages(&self) -> usize {
        self.config().batch_messages
    }

    fn batch_bytes(&self) -> u64 {
        self.config().batch_bytes
    }

    fn max_frame(&self) -> usize {
        self.max_message_size as usize + FRAME_EXTRA
    }
}

#[derive(Debug, Clone)]
struct Stored {
    meta: MessageMeta,
    bytes: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Folder {
    uidvalidity: u32,
    uidnext: u32,
    messages: Vec<Stored>,
    keywords: Vec<String>,
}

impl Folder {
    fn new(uidvalidity: u32) -> Folder {
        Folder {
            uidvalidity,
            uidnext: 1,
            keywords: Vec::new(),
            messages: Vec::new(),
        }
    }

    fn add(&mut self, bytes: &[u8], flags: Flags, recent: bool) -> u32 {
        let uid = self.uidnext;
        self.uidnext += 1;
        self.messages.push(Stored {
            meta: MessageMeta {
                uid,
                flags,
                size: bytes.len() as u64,
                internal_date: 1_700_000_000 + i64::from(uid) * 3600,
                recent,
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

/// The driver's side: one mailbox's folders, as `store::folders` would answer.
#[derive(Debug)]
struct Store {
    folders: BTreeMap<String, Folder>,
    subscribed: BTreeSet<String>,
    selected: Option<String>,
}

impl Store {
    fn new() -> Store {
        let mut inbox = Folder::new(1000);
        let flags = [
            Flags::NONE,
            Flags::SEEN,
            Flags::FLAGGED.union(Flags::DELETED),
            Flags::DELETED,
            Flags::SEEN.union(Flags::ANSWERED),
            Flags::DRAFT,
        ];
        for (i, message) in MESSAGES.iter().enumerate().take(6) {
            inbox.add(message, flags[i % flags.len()], i % 2 == 0);
        }
        let mut dated = Folder::new(3000);
        dated.add(MESSAGES[2], Flags::SEEN, false);
        let mut folders = BTreeMap::new();
        folders.insert(INBOX.to_owned(), inbox);
        folders.insert("Archive".to_owned(), Folder::new(2000));
        folders.insert("Archive.2024".to_owned(), dated);
        Store {
            folders,
            subscribed: BTreeSet::new(),
            selected: None,
        }
    }

    fn selected(&self) -> Option<&Folder> {
        self.folders.get(self.selected.as_ref()?)
    }

    fn selected_mut(&mut self) -> Option<&mut Folder> {
        let name = self.selected.as_ref()?;
        self.folders.get_mut(name)
    }

    /// Another session or a delivery changes the selected folder behind this one's back.
    fn change_elsewhere(&mut self, octet: u8) {
        let Some(folder) = self.selected_mut() else {
            return;
        };
        folder.add(
            MESSAGES[usize::from(octet) % MESSAGES.len()],
            Flags::NONE,
            true,
        );
        if octet & 0x20 != 0 && !folder.messages.is_empty() {
            folder.messages.remove(0);
        }
        if octet & 0x10 != 0 {
            for m in &mut folder.messages {
                m.meta.flags = if m.meta.flags.contains(Flags::SEEN) {
                    m.meta.flags.minus(Flags::SEEN)
                } else {
                    m.meta.flags.union(Flags::SEEN)
                };
            }
        }
    }

    fn respond(&mut self, request: &Request) -> Response {
        match request {
            Request::Authenticate(_) => Response::LoggedIn,
            Request::ListFolders => Response::Folders {
                folders: self.folders.keys().cloned().collect(),
                subscribed: self.subscribed.iter().cloned().collect(),
            },
            Request::Create { folder } => {
                if self.folders.contains_key(folder) {
                    return Response::Failed(Failure::AlreadyExists);
                }
                let validity = 4000 + self.folders.len() as u32;
                self.folders.insert(folder.clone(), Folder::new(validity));
                Response::Done
            }
            Request::Delete { folder } => {
                if folder == INBOX {
                    return Response::Failed(Failure::Refused("INBOX stays".into()));
                }
                if self.folders.remove(folder).is_none() {
                    return Response::Failed(Failure::NoSuchFolder);
                }
                if self.selected.as_ref() == Some(folder) {
                    self.selected = None;
                }
                Response::Done
            }
            Request::Rename { from, to } => {
                if self.folders.contains_key(to) {
                    return Response::Failed(Failure::AlreadyExists);
                }
                let Some(moved) = self.folders.remove(from) else {
                    return Response::Failed(Failure::NoSuchFolder);
                };
                self.folders.insert(to.clone(), moved);
                if self.selected.as_ref() == Some(from) {
                    self.selected = Some(to.clone());
                }
                Response::Done
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
                Some(f) => {
                    let count = |flag: Flags| {
                        f.messages
                            .iter()
                            .filter(|m| m.meta.flags.contains(flag))
                            .count() as u32
                    };
                    Response::Status(FolderStatus {
                        messages: f.messages.len() as u32,
                        recent: f.messages.iter().filter(|m| m.meta.recent).count() as u32,
                        unseen: f.messages.len() as u32 - count(Flags::SEEN),
                        deleted: count(Flags::DELETED),
                        uidnext: f.uidnext,
                        uidvalidity: f.uidvalidity,
                        size: f.messages.iter().map(|m| m.meta.size).sum(),
                    })
                }
                None => Response::Failed(Failure::NoSuchFolder),
            },
            Request::Select { folder, .. } => match self.folders.get(folder) {
                Some(f) => {
                    let snapshot = f.snapshot();
                    self.selected = Some(folder.clone());
                    Response::Snapshot(snapshot)
                }
                None => {
                    self.selected = None;
                    Response::Failed(Failure::NoSuchFolder)
                }
            },
            Request::Refresh => match self.selected_mut() {
                Some(f) => Response::Snapshot(f.snapshot()),
                None => Response::Failed(Failure::NoSuchFolder),
            },
            Request::Load { uids } => match self.selected_mut() {
                Some(f) => Response::Messages(
                    uids.iter()
                        .map(|uid| {
                            f.messages
                                .iter()
                                .find(|m| m.meta.uid == *uid)
                                .map(|m| m.bytes.clone())
                        })
                        .collect(),
                ),
                None => Response::Failed(Failure::Unavailable),
            },
            Request::Store {
                uids,
                op,
                flags,
                keywords,
            } => match self.selected_mut() {
                Some(f) => {
                    let (bits, _) = keyword_bits(&mut f.keywords, keywords);
                    let changed = f
                        .messages
                        .iter_mut()
                        .filter(|m| uids.contains(&m.meta.uid))
                        .map(|m| {
                            m.meta.flags = op.apply(m.meta.flags, flags.union(bits));
                            (m.meta.uid, m.meta.flags)
                        })
                        .collect();
                    Response::Flags {
                        changed,
                        keywords: f.keywords.clone(),
                    }
                }
                None => Response::Failed(Failure::Unavailable),
            },
            Request::Expunge { uids } => match self.selected_mut() {
                Some(f) => {
                    let gone: Vec<u32> = f
                        .messages
                        .iter()
                        .filter(|m| {
                            uids.contains(&m.meta.uid) && m.meta.flags.contains(Flags::DELETED)
                        })
                        .map(|m| m.meta.uid)
                        .collect();
                    f.messages.retain(|m| !gone.contains(&m.meta.uid));
                    Response::Expunged(gone)
                }
                None => Response::Failed(Failure::Unavailable),
            },
            Request::Copy { uids, to, remove } => {
                let Some(from) = self.selected.clone() else {
                    return Response::Failed(Failure::Unavailable);
                };
                let Some(source) = self.folders.get(&from) else {
                    return Response::Failed(Failure::Unavailable);
                };
                let copies: Vec<Stored> = source
                    .messages
                    .iter()
                    .filter(|m| uids.contains(&m.meta.uid))
                    .cloned()
                    .collect();
                let Some(target) = self.folders.get_mut(to) else {
                    return Response::Failed(Failure::NoSuchFolder);
                };
                let pairs = copies
                    .iter()
                    .map(|m| (m.meta.uid, target.add(&m.bytes, m.meta.flags, true)))
                    .collect();
                let uidvalidity = target.uidvalidity;
                if *remove && let Some(source) = self.folders.get_mut(&from) {
                    source.messages.retain(|m| !uids.contains(&m.meta.uid));
                }
                Response::Copied { uidvalidity, pairs }
            }
            Request::Append {
                folder,
                flags,
                message,
                ..
            } => match self.folders.get_mut(folder) {
                Some(f) => Response::Appended {
                    uidvalidity: f.uidvalidity,
                    uid: f.add(message, *flags, true),
                },
                None => Response::Failed(Failure::NoSuchFolder),
            },
        }
    }
}

/// The selected mailbox as the client knows it from the replies.
#[derive(Debug)]
struct View {
    read_only: bool,
    /// One entry per message number: its UID, when the harness knows it.
    uids: Vec<Option<u32>>,
    /// Every message the store reported for this folder since SELECT, by UID.
    known: HashMap<u32, Vec<u8>>,
}

impl View {
    fn learn(&mut self, snapshot: &Snapshot, folder: Option<&Folder>) {
        for meta in &snapshot.messages {
            let bytes = folder
                .and_then(|f| f.messages.iter().find(|m| m.meta.uid == meta.uid))
                .map(|m| m.bytes.clone())
                .unwrap_or_default();
            self.known.entry(meta.uid).or_insert(bytes);
        }
    }

    fn count(&self) -> u32 {
        self.uids.len() as u32
    }

    /// RFC 3501 §2.3.1.1: UIDs ascend with the message number.
    fn check_order(&self) {
        let known: Vec<u32> = self.uids.iter().flatten().copied().collect();
        assert!(
            known.windows(2).all(|w| w[0] < w[1]),
            "UIDs out of order in the client's view: {:?}",
            self.uids
        );
    }
}

/// One session and what the harness knows about it.
struct Run<'a> {
    setup: Setup,
    session: Session,
    store: Store,
    answers: Answers<'a>,
    now: Instant,
    tls: bool,
    authenticated: bool,
    closed: bool,
    saw_bye: bool,
    completed_after_bye: bool,
    saw_starttls: bool,
    woke_idle: bool,
    /// A request the read-ahead driver has not answered yet.
    outstanding: Option<Request>,
    view: Option<View>,
    /// Everything fed, to find the command line of each tagged completion.
    fed: Vec<u8>,
    /// Where the next completion's command line may start at the earliest.
    next_line: usize,
    /// Offsets where the core starts framing afresh (after a TLS handshake).
    restarts: Vec<usize>,
    last_tag: Option<String>,
    transcript: Vec<u8>,
}

impl<'a> Run<'a> {
    fn new(setup: Setup, answers: Answers<'a>) -> Self {
        let now = Instant::now();
        let peer: IpAddr = "192.0.2.30".parse().expect("an address");
        let session = Session::new(setup.config(), peer, setup.tls, now);
        let run = Run {
            setup,
            session,
            store: Store::new(),
            answers,
            now,
            tls: setup.tls,
            authenticated: false,
            closed: false,
            saw_bye: false,
            completed_after_bye: false,
            saw_starttls: false,
            woke_idle: false,
            outstanding: None,
            view: None,
            fed: Vec::new(),
            next_line: 0,
            restarts: Vec::new(),
            last_tag: None,
            transcript: Vec::new(),
        };
        let greeting = run.session.greeting();
        check_wire(&greeting);
        match &greeting {
            Reply::Greeting(Greeting {
                code: Some(Code::Capability(caps)),
                ..
            }) => run.check_capabilities(caps.as_ref()),
            other => panic!("the greeting lists no capabilities: {other:?}"),
        }
        run
    }

    fn feed(&mut self, chunk: &[u8]) {
        self.fed.extend_from_slice(chunk);
        self.session.feed(chunk, self.now);
        if let Some(request) = self.outstanding.take() {
            // The core reads nothing while the store works; it only keeps what arrives.
            assert_eq!(self.session.poll(), None, "output while a request is out");
            if !self.session.is_closed() {
                let held = self.session.buffered();
                assert!(
                    held <= 2 * self.setup.max_frame() + PENDING_EXTRA,
                    "{held} octets held while waiting"
                );
                self.answer(request);
            }
        }
        self.drain();
        if self.setup.poke_idle && !self.closed && self.session.is_idle() {
            // Mail arrives while the client idles: the core re-scans at once. When that
            // happens depends on the reads, so the cut is no longer compared.
            self.woke_idle = true;
            self.store.change_elsewhere(self.answers.next());
            self.session.poke();
            self.drain();
        }
        self.check_settled();
    }

    /// The state between reads, once every event is handled.
    fn check_settled(&mut self) {
        if self.closed {
            assert!(self.session.is_closed());
            assert_eq!(
                self.session.deadline(),
                None,
                "a closed session has no deadline"
            );
        } else if self.outstanding.is_some() {
            assert!(!self.session.wants_input());
            assert_eq!(self.session.deadline(), None, "a deadline while waiting");
        } else {
            assert!(self.session.wants_input(), "every request was answered");
            let held = self.session.buffered();
            assert!(
                held <= self.setup.max_frame(),
                "{held} octets held while reading"
            );
            let timeout = if self.authenticated {
                self.setup.config().idle_timeout
            } else {
                self.setup.config().login_timeout
            };
            assert_eq!(self.session.deadline(), Some(self.now + timeout));
        }
        if self.outstanding.is_none() {
            assert_eq!(
                self.session.answer(Response::Done),
                Err(AnswerError::NothingAsked)
            );
        }
    }

    /// Answers what a read-ahead driver still owes.
    fn finish_reads(&mut self) {
        while let Some(request) = self.outstanding.take() {
            self.answer(request);
            self.drain();
            self.check_settled();
        }
    }

    fn drain(&mut self) {
        for _ in 0..EVENT_BOUND {
            let Some(event) = self.session.poll() else {
                return;
            };
            assert!(!self.closed, "an event after Close: {event:?}");
            match event {
                Event::Reply(reply) => self.reply(&reply),
                Event::Request(request) => {
                    assert_eq!(self.session.poll(), None, "a request is the last event");
                    assert!(!self.session.wants_input());
                    assert_eq!(self.session.deadline(), None);
                    assert!(!self.saw_bye, "a request after BYE: {request:?}");
                    self.check_request(&request);
                    self.transcript
                        .extend_from_slice(format!("{request:?}\n").as_bytes());
                    if self.setup.read_ahead {
                        // Answered after the next read, as a driver reading on would.
                        self.outstanding = Some(request);
                        return;
                    }
                    self.answer(request);
                }
                Event::StartTls => {
                    assert!(!self.tls, "STARTTLS inside TLS");
                    assert!(self.setup.starttls, "STARTTLS when not offered");
                    assert!(!self.authenticated, "STARTTLS after login");
                    assert!(!self.saw_bye);
                    // Whatever came behind STARTTLS is not acted on before the handshake.
                    assert_eq!(self.session.poll(), None, "pipelined plaintext ran");
                    self.session.tls_started(self.now);
                    assert_eq!(self.session.poll(), None, "plaintext ran after TLS");
                    self.saw_starttls = true;
                    self.tls = true;
                    // The rest of this read was sent in the clear: completions from now on
                    // match only lines read after the handshake.
                    self.restarts.push(self.fed.len());
                    self.next_line = self.next_line.max(self.fed.len());
                    self.transcript.extend_from_slice(b"<tls>\n");
                }
                Event::Close => {
                    assert!(self.saw_bye, "closed without BYE");
                    self.closed = true;
                    assert_eq!(self.session.poll(), None, "Close is the last event");
                }
            }
        }
        panic!("the session did not settle within {EVENT_BOUND} events");
    }

    fn answer(&mut self, request: Request) {
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
        if octet & 0x40 != 0 {
            // Before the answer, so that it does not depend on what was read meanwhile.
            self.store.change_elsewhere(octet);
            self.session.poke();
            assert_eq!(
                self.session.poll(),
                None,
                "a poke while waiting said something"
            );
        }
        let response = self.response(&request, octet);
        assert_eq!(self.session.answer(response), Ok(()));
    }

    fn response(&mut self, request: &Request, octet: u8) -> Response {
        if let Request::Authenticate(_) = request {
            return match octet & 3 {
                0 => {
                    self.authenticated = true;
                    Response::LoggedIn
                }
                1 => Response::BadCredentials,
                2 => Response::Locked,
                _ => Response::Failed(Failure::Unavailable),
            };
        }
        let response = if octet & 7 == 7 {
            Response::Failed(match (octet >> 3) & 3 {
                0 => Failure::Unavailable,
                1 => Failure::NoSuchFolder,
                2 => Failure::OverQuota,
                _ => Failure::Refused("refused\r\n* BYE injected".into()),
            })
        } else {
            self.store.respond(request)
        };
        match (request, &response) {
            (Request::Select { read_only, .. }, Response::Snapshot(snapshot)) => {
                let mut view = View {
                    read_only: *read_only,
                    uids: snapshot.messages.iter().map(|m| Some(m.uid)).collect(),
                    known: HashMap::new(),
                };
                view.learn(snapshot, self.store.selected());
                view.check_order();
                self.view = Some(view);
            }
            (Request::Select { .. }, _) => self.store.selected = None,
            (Request::Refresh, Response::Snapshot(snapshot)) => {
                if let Some(view) = &mut self.view {
                    view.learn(snapshot, self.store.selected());
                }
            }
            _ => {}
        }
        response
    }

    fn check_request(&mut self, request: &Request) {
        if let Request::Authenticate(credentials) = request {
            assert!(!self.authenticated, "a login after login");
            assert!(
                !credentials.proof.is_clear_text() || self.tls || self.setup.plaintext,
                "a clear-text password reached the driver without TLS"
            );
            return;
        }
        assert!(
            self.authenticated,
            "the store was asked before login: {request:?}"
        );
        let canonical = |name: &str| {
            assert_eq!(
                check_name(name).ok().as_deref(),
                Some(name),
                "not a canonical folder name"
            );
        };
        match request {
            Request::Create { folder }
            | Request::Delete { folder }
            | Request::Subscribe { folder, .. }
            | Request::Status { folder } => canonical(folder),
            Request::Select { folder, .. } => {
                canonical(folder);
                self.view = None;
            }
            Request::Rename { from, to } => {
                canonical(from);
                canonical(to);
            }
            Request::Append {
                folder, message, ..
            } => {
                canonical(folder);
                assert!(!message.is_empty(), "an empty APPEND");
                assert!(
                    message.len() <= self.setup.max_message_size as usize,
                    "an APPEND of {} octets over the limit",
                    message.len()
                );
            }
            Request::Copy { to, .. } => canonical(to),
            Request::ListFolders | Request::Refresh => {}
            Request::Load { .. } | Request::Store { .. } | Request::Expunge { .. } => {}
            Request::Authenticate(_) => {}
        }
        let uids = match request {
            Request::Load { uids }
            | Request::Store { uids, .. }
            | Request::Expunge { uids }
            | Request::Copy { uids, .. } => uids,
            Request::Refresh => {
                assert!(self.session.selected().is_some(), "a re-scan of nothing");
                return;
            }
            _ => return,
        };
        assert!(self.session.selected().is_some(), "{request:?} unselected");
        let view = self
            .view
            .as_ref()
            .expect("a message request without a SELECT");
        assert!(!uids.is_empty(), "{request:?} names no message");
        for (i, uid) in uids.iter().enumerate() {
            assert!(
                view.known.contains_key(uid),
                "UID {uid} is not the folder's"
            );
            assert!(!uids[..i].contains(uid), "UID {uid} named twice");
        }
        let changes = matches!(
            request,
            Request::Store { .. } | Request::Expunge { .. } | Request::Copy { remove: true, .. }
        );
        assert!(
            !(changes && view.read_only),
            "{request:?} in a read-only folder"
        );
        if let Request::Load { uids } = request {
            assert!(uids.len() <= self.setup.batch_messages().max(1));
            let sizes: Vec<u64> = uids
                .iter()
                .map(|u| view.known.get(u).map_or(0, |b| b.len() as u64))
                .collect();
            let before_last: u64 = sizes.iter().rev().skip(1).sum();
            assert!(
                before_last < self.setup.batch_bytes() || uids.len() == 1,
                "a load batch past its size: {sizes:?}"
            );
        }
    }

    fn reply(&mut self, reply: &Reply) {
        check_wire(reply);
        self.transcript.extend_from_slice(&reply.to_bytes());
        let Reply::Response(response) = reply else {
            panic!("a greeting in the middle of a session");
        };
        if self.saw_bye {
            // After BYE only LOGOUT's own completion may follow, once.
            assert!(
                reply.is_tagged_ok() && !self.completed_after_bye,
                "{reply:?} after BYE"
            );
            self.completed_after_bye = true;
        }
        match response {
            Wire::Status(Status::Tagged(tagged)) => {
                let tag = tagged.tag.inner().to_owned();
                self.match_command_line(&tag);
                if let Some(Code::Capability(caps)) = &tagged.body.code {
                    self.check_capabilities(caps.as_ref());
                }
                self.last_tag = Some(tag);
            }
            Wire::Status(Status::Untagged(body)) => {
                if let Some(Code::Capability(caps)) = &body.code {
                    self.check_capabilities(caps.as_ref());
                }
            }
            Wire::Status(Status::Bye(_)) => {
                assert!(!self.saw_bye, "BYE twice");
                self.saw_bye = true;
            }
            Wire::Data(data) => self.data(data),
            Wire::CommandContinuationRequest(_) => {}
        }
    }

    /// A tagged completion's tag opens a command line of the stream, after the last matched.
    fn match_command_line(&mut self, tag: &str) {
        let from = self.next_line;
        let found = (from..self.fed.len()).find(|&at| {
            let line_start =
                at == 0 || self.fed.get(at - 1) == Some(&b'\n') || self.restarts.contains(&at);
            line_start
                && self.fed.get(at..).is_some_and(|rest| {
                    rest.starts_with(tag.as_bytes()) && rest.get(tag.len()) == Some(&b' ')
                })
        });
        match found {
            Some(at) => self.next_line = at + 1,
            None => panic!(
                "completion for {tag:?} matches no command line after offset {from}: {:?}",
                String::from_utf8_lossy(self.fed.get(from..).unwrap_or_default())
            ),
        }
    }

    /// The capabilities offered now: STARTTLS before TLS and login, a login only where a
    /// clear-text password may go, LOGINDISABLED where it may not.
    fn check_capabilities(&self, caps: &[Capability<'_>]) {
        let has = |c: &Capability<'_>| caps.contains(c);
        let clear = self.tls || self.setup.plaintext;
        assert_eq!(
            has(&Capability::StartTls),
            !self.tls && self.setup.starttls && !self.authenticated,
            "{caps:?}"
        );
        assert_eq!(
            has(&Capability::LoginDisabled),
            !self.authenticated && !clear,
            "{caps:?}"
        );
        assert_eq!(
            has(&Capability::Auth(AuthMechanism::Plain)),
            !self.authenticated && clear,
            "{caps:?}"
        );
        assert!(has(&Capability::Imap4Rev1), "{caps:?}");
    }

    fn data(&mut self, data: &Data<'_>) {
        match data {
            Data::Capability(caps) => self.check_capabilities(caps.as_ref()),
            Data::Exists(n) => {
                let view = self.view.as_mut().expect("EXISTS with nothing selected");
                assert!(*n >= view.count(), "EXISTS {n} shrinks {}", view.count());
                view.uids.resize(*n as usize, None);
            }
            Data::Recent(n) => {
                let view = self.view.as_ref().expect("RECENT with nothing selected");
                assert!(*n <= view.count(), "RECENT {n} of {}", view.count());
            }
            Data::Expunge(n) => {
                let view = self.view.as_mut().expect("EXPUNGE with nothing selected");
                assert!(n.get() <= view.count(), "EXPUNGE {n} of {}", view.count());
                view.uids.remove(n.get() as usize - 1);
            }
            Data::Search(numbers, ..) => {
                assert!(
                    numbers.windows(2).all(|w| w[0] < w[1]),
                    "SEARCH {numbers:?}"
                );
                let view = self.view.as_ref().expect("SEARCH with nothing selected");
                for n in numbers {
                    assert!(
                        n.get() <= view.count() || view.known.contains_key(&n.get()),
                        "SEARCH names {n}, neither a message number nor a UID"
                    );
                }
            }
            Data::Fetch { seq, items } => self.fetch(seq.get(), items.as_ref()),
            _ => {}
        }
    }

    fn fetch(&mut self, seq: u32, items: &[MessageDataItem<'_>]) {
        let view = self.view.as_mut().expect("FETCH with nothing selected");
        assert!(seq <= view.count(), "FETCH {seq} of {}", view.count());
        let slot = seq as usize - 1;
        for item in items {
            if let MessageDataItem::Uid(uid) = item {
                let uid = uid.get();
                assert!(
                    view.known.contains_key(&uid),
                    "UID {uid} is not the folder's"
                );
                match view.uids.get(slot).copied().flatten() {
                    Some(known) => assert_eq!(known, uid, "message {seq} changed its UID"),
                    None => {
                        view.uids[slot] = Some(uid);
                        view.check_order();
                    }
                }
            }
        }
        let Some(stored) = view.uids[slot].and_then(|uid| view.known.get(&uid)) else {
            return;
        };
        // Literals cannot hold NUL; the core sends 0x80 instead.
        let wire: Vec<u8> = stored
            .iter()
            .map(|&b| if b == 0 { 0x80 } else { b })
            .collect();
        let bytes = |n: &NString<'_>| n.0.as_ref().map(|s: &IString<'_>| s.as_ref().to_vec());
        for item in items {
            match item {
                MessageDataItem::Rfc822Size(size) => {
                    assert_eq!(*size as usize, stored.len(), "RFC822.SIZE")
                }
                MessageDataItem::Rfc822(data)
                | MessageDataItem::BodyExt {
                    section: None,
                    origin: None,
                    data,
                } => assert_eq!(bytes(data).as_ref(), Some(&wire), "BODY[] changed"),
                MessageDataItem::BodyExt {
                    section: None,
                    origin: Some(origin),
                    data,
                } => {
                    let got = bytes(data).unwrap_or_default();
                    let start = (*origin as usize).min(wire.len());
                    assert!(
                        wire.get(start..).is_some_and(|w| w.starts_with(&got)),
                        "BODY[]<{origin}> is not a slice"
                    );
                }
                MessageDataItem::Rfc822Header(data)
                | MessageDataItem::BodyExt {
                    section: Some(Section::Header(None)),
                    origin: None,
                    data,
                } => {
                    let got = bytes(data).unwrap_or_default();
                    assert!(wire.starts_with(&got), "HEADER is not the start");
                }
                MessageDataItem::Rfc822Text(data)
                | MessageDataItem::BodyExt {
                    section: Some(Section::Text(None)),
                    origin: None,
                    data,
                } => {
                    let got = bytes(data).unwrap_or_default();
                    assert!(wire.ends_with(&got), "TEXT is not the end");
                }
                _ => {}
            }
        }
    }

    /// RFC 3501 §5.4: a session left waiting for a command is logged out with `* BYE`.
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
                check_wire(&reply);
                assert!(
                    matches!(reply, Reply::Response(Wire::Status(Status::Bye(_)))),
                    "{reply:?}"
                );
            }
            other => panic!("the autologout said {other:?}"),
        }
        assert_eq!(self.session.poll(), Some(Event::Close));
        self.closed = true;
        self.session.feed(b"a NOOP\r\n", self.now);
        assert_eq!(self.session.poll(), None, "a closed session answered");
    }

    /// After the stream: a session still open answers a NOOP. The filler ends whatever the
    /// stream left open (a literal of at most the size limit, a SASL exchange, IDLE, a line)
    /// without itself being a command, a literal or a valid SASL answer.
    fn probe(&mut self) {
        if self.closed || self.fed.windows(2).any(|w| w == b"+}") {
            return;
        }
        let mut probe = vec![b'*'; self.setup.max_message_size as usize + 2];
        probe.extend_from_slice(format!("\r\n{PROBE_TAG} NOOP\r\n").as_bytes());
        self.feed(&probe);
        self.finish_reads();
        if !self.closed {
            assert_eq!(
                self.last_tag.as_deref(),
                Some(PROBE_TAG),
                "the session is stuck"
            );
            assert_eq!(
                self.session.buffered(),
                0,
                "input held after the last reply"
            );
        }
    }
}

/// The wire form: the first line opens as the kind of reply says, and the whole decodes as
/// one greeting or response, CRLF-terminated, with nothing left over.
fn check_wire(reply: &Reply) {
    let wire = reply.to_bytes();
    let text = String::from_utf8_lossy(&wire);
    assert!(wire.ends_with(b"\r\n"), "{text:?}");
    let opens = match reply {
        Reply::Greeting(_) => "* OK ".to_owned(),
        Reply::Response(Wire::Status(Status::Tagged(tagged))) => {
            let kind = match tagged.body.kind {
                StatusKind::Ok => "OK",
                StatusKind::No => "NO",
                StatusKind::Bad => "BAD",
            };
            format!("{} {kind} ", tagged.tag.inner())
        }
        Reply::Response(Wire::Status(Status::Bye(_))) => "* BYE ".to_owned(),
        Reply::Response(Wire::Status(Status::Untagged(_)) | Wire::Data(_)) => "* ".to_owned(),
        Reply::Response(Wire::CommandContinuationRequest(_)) => "+ ".to_owned(),
    };
    assert!(
        text.starts_with(&opens),
        "{text:?} does not open with {opens:?}"
    );
    let rest = match reply {
        Reply::Greeting(_) => GreetingCodec::default()
            .decode(&wire)
            .map(|(rest, _)| rest)
            .map_err(|e| format!("{e:?}")),
        Reply::Response(_) => ResponseCodec::default()
            .decode(&wire)
            .map(|(rest, _)| rest)
            .map_err(|e| format!("{e:?}")),
    };
    match rest {
        Ok(rest) => assert!(rest.is_empty(), "{text:?} leaves {rest:?}"),
        Err(e) => panic!("{text:?} does not decode: {e}"),
    }
}

/// An answer of the wrong kind for `request`.
fn wrong_response(request: &Request) -> Response {
    match request {
        Request::Create { .. }
        | Request::Delete { .. }
        | Request::Rename { .. }
        | Request::Subscribe { .. } => Response::LoggedIn,
        _ => Response::Done,
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
    cut.finish_reads();
    if split != 0 {
        let mut whole = Run::new(setup, answers);
        whole.feed(stream);
        whole.finish_reads();
        // STARTTLS drops what follows it in the same read, and mail arriving during IDLE
        // is told when it arrives: there the cut matters.
        let comparable =
            !cut.saw_starttls && !whole.saw_starttls && !cut.woke_idle && !whole.woke_idle;
        if comparable {
            assert!(
                cut.transcript == whole.transcript,
                "cutting the stream changed the session:\n--- cut\n{}\n--- whole\n{}",
                String::from_utf8_lossy(&cut.transcript),
                String::from_utf8_lossy(&whole.transcript)
            );
        }
    }
    cut.probe();
    if setup.fire_timeout {
        cut.fire_timeout();
    }
}
