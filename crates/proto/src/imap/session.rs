//! The IMAP session core (SPEC §8): bytes in, [`Event`]s out, no socket, clock or store.
//!
//! Input is framed by imap-codec's `Fragmentizer` (lines and literals, bounded by the largest
//! message an APPEND may carry) and decoded by its `CommandCodec`; replies are imap-types values
//! encoded by its `ResponseCodec`. Everything that needs the store is a [`Request`]; the session
//! reads no further input until the driver [`answer`](Session::answer)s it.

use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use imap_codec::CommandCodec;
use imap_codec::fragmentizer::{
    DecodeMessageError, FragmentInfo, Fragmentizer, LiteralAnnouncement,
};
use imap_types::IntoStatic;
use imap_types::auth::AuthMechanism;
use imap_types::command::{Command, CommandBody};
use imap_types::core::{Atom, Charset, LiteralMode, NString, QuotedChar, Tag, Vec1};
use imap_types::extensions::binary::LiteralOrLiteral8;
use imap_types::extensions::namespace::Namespace;
use imap_types::extensions::uidplus::{UidElement, UidSet};
use imap_types::fetch::MessageDataItemName;
use imap_types::flag::{Flag, FlagNameAttribute, FlagPerm, StoreResponse, StoreType};
use imap_types::mailbox::{ListMailbox, Mailbox};
use imap_types::response::{Capability, Code, Data, StatusKind};
use imap_types::search::SearchKey;
use imap_types::sequence::SequenceSet;
use imap_types::status::{StatusDataItem, StatusDataItemName};

use super::fetch;
use super::mime::Parsed;
use super::reply::{Reply, code, istring};
use super::search::{self, Candidate};
use super::view::{MessageMeta, Snapshot, View, flags_of, system_flags};
use crate::auth::{Credentials, Mechanism, Proof, Sasl, SaslError, Step, encode};
use crate::imap::mailbox::{DELIMITER, FlagOp, Flags, FolderStatus, INBOX, check_name};
use crate::names::Secret;

/// What a session needs to know; built by the driver per connection.
#[derive(Debug, Clone)]
pub struct Config {
    pub hostname: String,
    /// Clear-text logins (LOGIN, AUTHENTICATE PLAIN/LOGIN) without TLS (`[tls] plaintext_auth`).
    pub plaintext_allowed: bool,
    /// A certificate is loaded, so STARTTLS can be offered.
    pub starttls_available: bool,
    /// The largest command with its literals, which bounds APPEND.
    pub max_message_size: u32,
    /// Refused commands before the session is closed.
    pub max_invalid_commands: u32,
    /// RFC 3501 §5.4: the autologout timer once logged in, at least 30 minutes (IDLE too; the
    /// driver sets `[limits] imap_idle_timeout`).
    pub idle_timeout: Duration,
    /// Before login, a shorter leash.
    pub login_timeout: Duration,
    /// FETCH and SEARCH load message bytes in batches of at most this many octets…
    pub batch_bytes: u64,
    /// …and this many messages.
    pub batch_messages: usize,
}

impl Config {
    pub fn new(hostname: impl Into<String>) -> Self {
        Config {
            hostname: hostname.into(),
            plaintext_allowed: false,
            starttls_available: true,
            max_message_size: 25 * 1024 * 1024,
            max_invalid_commands: 20,
            idle_timeout: Duration::from_secs(30 * 60),
            login_timeout: Duration::from_secs(3 * 60),
            batch_bytes: 4 * 1024 * 1024,
            batch_messages: 256,
        }
    }
}

/// What the core wants done, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Write [`Reply::to_bytes`].
    Reply(Reply),
    /// Do this and call [`Session::answer`]; no input is read until then.
    Request(Request),
    /// Write the replies before it, do the TLS handshake, then call [`Session::tls_started`].
    StartTls,
    /// Close the connection once the replies before it are written.
    Close,
}

/// What the core asks of the driver. Folder names are checked and canonical (`INBOX`);
/// requests about messages concern the folder of the last successful `Select`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// → `LoggedIn`, `BadCredentials`, `Locked` or `Failed(Unavailable)`.
    Authenticate(Credentials),
    /// Every folder and every subscription → `Folders`.
    ListFolders,
    /// → `Done` or `Failed`.
    Create { folder: String },
    /// → `Done` or `Failed`.
    Delete { folder: String },
    /// → `Done` or `Failed`.
    Rename { from: String, to: String },
    /// → `Done` or `Failed`.
    Subscribe { folder: String, subscribe: bool },
    /// → `Status` or `Failed`.
    Status { folder: String },
    /// Open the folder for this session → `Snapshot` or `Failed`.
    Select { folder: String, read_only: bool },
    /// Re-scan the selected folder → `Snapshot` or `Failed`.
    Refresh,
    /// The bytes of these messages of the selected folder, in this order (`None` for one that
    /// is gone) → `Messages` or `Failed`.
    Load { uids: Vec<u32> },
    /// Change flags → `Flags` (the resulting flags of those still there) or `Failed`.
    Store {
        uids: Vec<u32>,
        op: FlagOp,
        flags: Flags,
    },
    /// Remove these if they still carry `\Deleted` → `Expunged` or `Failed`.
    Expunge { uids: Vec<u32> },
    /// COPY, or MOVE with `remove` → `Copied` or `Failed`.
    Copy {
        uids: Vec<u32>,
        to: String,
        remove: bool,
    },
    /// → `Appended` or `Failed`.
    Append {
        folder: String,
        flags: Flags,
        date: Option<i64>,
        message: Vec<u8>,
    },
}

/// The driver's answer to the outstanding [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    LoggedIn,
    BadCredentials,
    /// R13/R14: locked by the administrator.
    Locked,
    Done,
    Folders {
        folders: Vec<String>,
        subscribed: Vec<String>,
    },
    Status(FolderStatus),
    Snapshot(Snapshot),
    Messages(Vec<Option<Vec<u8>>>),
    Flags(Vec<(u32, Flags)>),
    Expunged(Vec<u32>),
    Copied {
        uidvalidity: u32,
        pairs: Vec<(u32, u32)>,
    },
    Appended {
        uidvalidity: u32,
        uid: u32,
    },
    Failed(Failure),
}

/// Why a request did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    NoSuchFolder,
    AlreadyExists,
    /// Refused for a reason the user can read (a bad name, INBOX cannot be deleted, …).
    Refused(String),
    /// R15: the mailbox's quota cannot take it.
    OverQuota,
    /// The directory or the store is unavailable right now.
    Unavailable,
}

/// `answer` was called when it should not have been; the session is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("no request is outstanding")]
    NothingAsked,
    #[error("this answer does not fit the outstanding request")]
    Mismatch,
}

/// Input beyond one full message buffered while the core waits for the driver.
const MAX_PENDING_EXTRA: usize = 64 * 1024;
/// A LIST pattern longer than this is refused (matching costs its length times the name's).
const MAX_PATTERN: usize = 1024;

#[derive(Debug)]
struct Completion {
    tag: Tag<'static>,
    code: Option<Code<'static>>,
    text: &'static str,
}

/// What to do once a re-scan is answered.
#[derive(Debug)]
enum Then {
    Complete(Completion),
    EnterIdle(Tag<'static>),
    Idle(Tag<'static>),
}

#[derive(Debug)]
struct FetchJob {
    tag: Tag<'static>,
    uid: bool,
    items: Vec<MessageDataItemName<'static>>,
    /// UIDs in sequence order.
    targets: Vec<u32>,
    next: usize,
    batch: usize,
    /// Messages whose `\Seen` this FETCH set: their FLAGS go out with them.
    seen_set: HashSet<u32>,
}

#[derive(Debug)]
struct SearchJob {
    tag: Tag<'static>,
    uid: bool,
    key: SearchKey<'static>,
    targets: Vec<u32>,
    next: usize,
    batch: usize,
    found: Vec<u32>,
}

#[derive(Debug)]
enum Pending {
    Login(Tag<'static>),
    Select {
        tag: Tag<'static>,
        folder: String,
        read_only: bool,
    },
    Refresh(Then),
    List {
        tag: Tag<'static>,
        lsub: bool,
        pattern: String,
    },
    Simple(Tag<'static>, &'static str),
    Status {
        tag: Tag<'static>,
        folder: String,
        items: Vec<StatusDataItemName>,
    },
    FetchSeen(Box<FetchJob>),
    FetchLoad(Box<FetchJob>),
    SearchLoad(Box<SearchJob>),
    Store {
        tag: Tag<'static>,
        silent: bool,
        uid: bool,
    },
    Expunge {
        tag: Tag<'static>,
        close: bool,
    },
    Copy {
        tag: Tag<'static>,
        remove: bool,
        uid: bool,
        to_selected: bool,
    },
    Append {
        tag: Tag<'static>,
        to_selected: bool,
    },
}

#[derive(Debug)]
enum State {
    NotAuthenticated,
    /// Logged in; a mailbox is selected when `Session::view` is `Some`.
    Authenticated,
    Sasl {
        tag: Tag<'static>,
        sasl: Sasl,
    },
    Waiting(Pending),
    /// RFC 2177: waiting for `DONE`.
    Idle(Tag<'static>),
    AwaitingTls,
    Closed,
}

/// One IMAP connection's protocol state.
#[derive(Debug)]
pub struct Session {
    config: Config,
    tls: bool,
    frag: Fragmentizer,
    /// Bytes received and not yet handed to `frag`, from `unread[handed..]`. The framer is given
    /// one line at a time and only once it has used up the last, so input read ahead while
    /// the core waits for the driver stays here, where it is counted and bounded.
    unread: Vec<u8>,
    handed: usize,
    out: VecDeque<Event>,
    state: State,
    authenticated: bool,
    view: Option<View>,
    errors: u32,
    last_input: Instant,
}

impl Session {
    /// `tls` is true on the implicit-TLS port (993). The peer address is the driver's to log.
    pub fn new(config: Config, _peer: IpAddr, tls: bool, now: Instant) -> Self {
        let frag = Fragmentizer::new(max_frame(&config));
        Session {
            config,
            tls,
            frag,
            unread: Vec::new(),
            handed: 0,
            out: VecDeque::new(),
            state: State::NotAuthenticated,
            authenticated: false,
            view: None,
            errors: 0,
            last_input: now,
        }
    }

    /// `* OK [CAPABILITY …] <hostname> IMAP4rev1 ready`.
    pub fn greeting(&self) -> Reply {
        Reply::greeting(
            Some(Code::Capability(self.capabilities())),
            format!("{} dirmail IMAP4rev1 server ready", self.config.hostname),
        )
    }

    /// Bytes from the client. Partial lines and literals wait for more.
    pub fn feed(&mut self, bytes: &[u8], now: Instant) {
        if matches!(self.state, State::Closed | State::AwaitingTls) {
            // After STARTTLS, plaintext sent before the handshake is never read (RFC 3501 §6.2.1).
            return;
        }
        self.last_input = now;
        self.unread.drain(..self.handed);
        self.handed = 0;
        self.unread.extend_from_slice(bytes);
        self.process();
        if self.pending() > max_frame(&self.config) as usize + MAX_PENDING_EXTRA {
            self.drop_input();
            self.close_with(Reply::bye(None, "too much pipelined input"));
        }
    }

    /// Octets of client input the core holds: read ahead and not yet framed, plus the command
    /// being framed (at most the largest message and 64 KiB). While the core reads, that is
    /// only the command; while it waits for the driver, what was fed meanwhile is held too, up
    /// to 64 KiB past one full command, and then the session is closed.
    pub fn buffered(&self) -> usize {
        self.pending() + self.frag.message_bytes().len()
    }

    fn pending(&self) -> usize {
        self.unread.len().saturating_sub(self.handed)
    }

    /// Forgets everything read and not framed yet, and the command being framed.
    fn drop_input(&mut self) {
        self.frag = Fragmentizer::new(max_frame(&self.config));
        self.unread.clear();
        self.handed = 0;
    }

    /// The next thing to do, or `None` when the core needs input (or an answer).
    pub fn poll(&mut self) -> Option<Event> {
        self.out.pop_front()
    }

    /// The driver's answer to the outstanding request.
    pub fn answer(&mut self, response: Response) -> Result<(), AnswerError> {
        let State::Waiting(pending) = &self.state else {
            return Err(AnswerError::NothingAsked);
        };
        if !fits(pending, &response) {
            return Err(AnswerError::Mismatch);
        }
        let State::Waiting(pending) = std::mem::replace(&mut self.state, State::Closed) else {
            return Err(AnswerError::NothingAsked);
        };
        self.state = self.ready_state();
        self.answered(pending, response);
        self.process();
        Ok(())
    }

    /// The TLS handshake after STARTTLS is done.
    pub fn tls_started(&mut self, now: Instant) {
        self.drop_input();
        self.tls = true;
        self.last_input = now;
        if matches!(self.state, State::AwaitingTls) {
            self.state = State::NotAuthenticated;
        }
    }

    /// When the driver should call [`Self::timeout`]; `None` while the driver is busy for the
    /// core or the session is over.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Waiting(_) | State::AwaitingTls | State::Closed => None,
            State::NotAuthenticated | State::Sasl { .. } => {
                self.last_input.checked_add(self.config.login_timeout)
            }
            State::Authenticated | State::Idle(_) => {
                self.last_input.checked_add(self.config.idle_timeout)
            }
        }
    }

    /// RFC 3501 §5.4 autologout once the deadline passed.
    pub fn timeout(&mut self, now: Instant) {
        if self.deadline().is_some_and(|deadline| now >= deadline) {
            self.close_with(Reply::bye(None, "autologout; idle for too long"));
        }
    }

    /// The selected folder may have changed (another session, a delivery). While idling the
    /// session re-scans at once; otherwise at the next command that may report it.
    pub fn poke(&mut self) {
        let Some(view) = &mut self.view else {
            return;
        };
        view.dirty = true;
        if let State::Idle(_) = self.state {
            let State::Idle(tag) = std::mem::replace(&mut self.state, State::Closed) else {
                return;
            };
            self.ask(Pending::Refresh(Then::Idle(tag)), Request::Refresh);
        }
    }

    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle(_))
    }

    /// The selected folder, if any.
    pub fn selected(&self) -> Option<&str> {
        self.view.as_ref().map(|v| v.folder.as_str())
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// True when the core will read input now (no request outstanding, not closed).
    pub fn wants_input(&self) -> bool {
        matches!(
            self.state,
            State::NotAuthenticated | State::Authenticated | State::Sasl { .. } | State::Idle(_)
        )
    }

    fn ready_state(&self) -> State {
        if self.authenticated {
            State::Authenticated
        } else {
            State::NotAuthenticated
        }
    }

    // ---- input ------------------------------------------------------------------------

    fn process(&mut self) {
        loop {
            if !self.wants_input() {
                return;
            }
            let Some(info) = self.frag.progress() else {
                if self.hand_over() {
                    continue;
                }
                return;
            };
            let line_mode = matches!(self.state, State::Sasl { .. } | State::Idle(_));
            match info {
                FragmentInfo::Literal { .. } => {}
                FragmentInfo::Line {
                    announcement: Some(announcement),
                    ..
                } if !line_mode => self.literal_announced(announcement),
                FragmentInfo::Line { announcement, .. } => {
                    if !line_mode
                        && announcement.is_none()
                        && uncountable_literal(self.frag.fragment_bytes(info))
                    {
                        self.uncountable_literal();
                        return;
                    }
                    if line_mode {
                        let line = trim_line_end(self.frag.fragment_bytes(info)).to_vec();
                        if announcement.is_some() {
                            // No literal is expected here: whatever follows is a new line.
                            self.frag.skip_message();
                        }
                        self.line(line);
                    } else {
                        self.message();
                    }
                }
            }
        }
    }

    /// Gives the framer the input up to and including the next LF (all of it when there is
    /// none); false when nothing is left. Called only once the framer has consumed everything
    /// it was given, so it never holds input beyond the line it is on: a command that makes the
    /// core wait for the driver ends at a line end, and what follows stays in `unread`.
    fn hand_over(&mut self) -> bool {
        let rest = self.unread.get(self.handed..).unwrap_or_default();
        if rest.is_empty() {
            return false;
        }
        let len = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |lf| lf + 1);
        self.frag.enqueue_bytes(rest.get(..len).unwrap_or_default());
        self.handed += len;
        true
    }

    /// A line ended in `{n}` or `{n+}`: agree to a synchronizing literal (RFC 3501 §7.5) or
    /// refuse one that is too big (RFC 7888 §4); a non-synchronizing one is read anyway and
    /// the command fails if it was too big, unless it is so big (up to 4 GiB) that reading it
    /// through is not worth it: then the command is refused and the connection closed.
    fn literal_announced(&mut self, announcement: LiteralAnnouncement) {
        if announcement.mode != LiteralMode::Sync {
            let limit = self.config.max_message_size;
            if u64::from(announcement.length) > 2 * u64::from(limit) {
                let tag = self.frag.decode_tag().map(IntoStatic::into_static);
                let text = "the literal is larger than the server accepts";
                match tag {
                    Some(tag) => {
                        self.reply(Reply::tagged(tag, StatusKind::No, Some(Code::TooBig), text))
                    }
                    None => self.reply(Reply::untagged(StatusKind::Bad, Some(Code::TooBig), text)),
                }
                self.close_with(Reply::bye(None, "not reading a literal that large"));
            } else if announcement.length > limit {
                // Read through it, then refuse the command.
                self.frag.poison_message();
            }
            return;
        }
        if announcement.length > self.config.max_message_size {
            let tag = self.frag.decode_tag().map(IntoStatic::into_static);
            self.frag.skip_message();
            let text = "the literal is larger than the server accepts";
            match tag {
                Some(tag) => {
                    self.reply(Reply::tagged(tag, StatusKind::No, Some(Code::TooBig), text))
                }
                None => self.reply(Reply::untagged(StatusKind::Bad, None, text)),
            }
        } else {
            self.reply(Reply::continuation("Ready for literal data"));
        }
    }

    /// A line ended in `{n+}` with more than 32 bits of digits: the client sends a literal
    /// nobody can count, so where the next command starts is unknown. Nothing after it may be
    /// read as a command: refused, and the connection closed.
    fn uncountable_literal(&mut self) {
        let text = "the literal's size does not fit 32 bits";
        match self.frag.decode_tag().map(IntoStatic::into_static) {
            Some(tag) => self.reply(Reply::tagged(tag, StatusKind::Bad, None, text)),
            None => self.reply(Reply::untagged(StatusKind::Bad, None, text)),
        }
        self.close_with(Reply::bye(None, "lost track of the command stream"));
    }

    /// A complete command (its line and literals) arrived.
    fn message(&mut self) {
        if self
            .frag
            .message_bytes()
            .iter()
            .all(|b| b.is_ascii_whitespace())
        {
            // Empty lines between commands are ignored.
            return;
        }
        let decoded = match self.frag.decode_message(&CommandCodec::default()) {
            Ok(command) => Ok(command.into_static()),
            Err(
                DecodeMessageError::MessageTooLong { .. }
                | DecodeMessageError::MessagePoisoned { .. },
            ) => Err(true),
            Err(_) => Err(false),
        };
        match decoded {
            Ok(command) => self.command(command),
            Err(too_long) => {
                let tag = self.frag.decode_tag().map(IntoStatic::into_static);
                let (code, text) = if too_long {
                    (
                        Some(Code::TooBig),
                        "the command is larger than the server accepts",
                    )
                } else {
                    (None, "syntax error in the command")
                };
                match tag {
                    Some(tag) if too_long => self.no(tag, code, text),
                    Some(tag) => self.bad(tag, code, text),
                    None => {
                        self.reply(Reply::untagged(StatusKind::Bad, code, text));
                        self.count_error();
                    }
                }
            }
        }
    }

    /// A line while authenticating (SASL) or idling.
    fn line(&mut self, line: Vec<u8>) {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Sasl { tag, mut sasl } => {
                let step = sasl.step(&String::from_utf8_lossy(&line));
                self.state = State::NotAuthenticated;
                self.sasl_step(tag, sasl, step);
            }
            State::Idle(tag) => {
                self.state = self.ready_state();
                if line.eq_ignore_ascii_case(b"DONE") {
                    self.finish(tag, None, "IDLE terminated", true);
                } else {
                    self.bad(tag, None, "expected DONE; IDLE terminated");
                }
            }
            other => self.state = other,
        }
    }

    // ---- output -----------------------------------------------------------------------

    fn reply(&mut self, reply: Reply) {
        self.out.push_back(Event::Reply(reply));
    }

    fn ok(&mut self, tag: Tag<'static>, code: Option<Code<'static>>, text: &str) {
        self.reply(Reply::tagged(tag, StatusKind::Ok, code, text));
    }

    fn no(&mut self, tag: Tag<'static>, code: Option<Code<'static>>, text: impl Into<String>) {
        self.reply(Reply::tagged(tag, StatusKind::No, code, text));
    }

    fn bad(&mut self, tag: Tag<'static>, code: Option<Code<'static>>, text: impl Into<String>) {
        self.reply(Reply::tagged(tag, StatusKind::Bad, code, text));
        self.count_error();
    }

    fn count_error(&mut self) {
        self.errors = self.errors.saturating_add(1);
        if self.errors >= self.config.max_invalid_commands {
            self.close_with(Reply::bye(None, "too many errors"));
        }
    }

    fn close_with(&mut self, reply: Reply) {
        self.reply(reply);
        self.out.push_back(Event::Close);
        self.state = State::Closed;
        self.view = None;
    }

    fn ask(&mut self, pending: Pending, request: Request) {
        self.out.push_back(Event::Request(request));
        self.state = State::Waiting(pending);
    }

    /// Completes a command with `OK`, first telling the client what changed in the selected
    /// folder when that may be told now (`may_expunge`: not during FETCH, STORE or SEARCH by
    /// sequence numbers, RFC 3501 §7.4.1).
    fn finish(
        &mut self,
        tag: Tag<'static>,
        code: Option<Code<'static>>,
        text: &'static str,
        may_expunge: bool,
    ) {
        if may_expunge && self.view.as_ref().is_some_and(|v| v.dirty) {
            self.ask(
                Pending::Refresh(Then::Complete(Completion { tag, code, text })),
                Request::Refresh,
            );
        } else {
            self.ok(tag, code, text);
        }
    }

    fn failure(&mut self, tag: Tag<'static>, failure: Failure, missing: Code<'static>) {
        let (code, text) = match failure {
            Failure::NoSuchFolder => (missing, "no such mailbox".to_owned()),
            Failure::AlreadyExists => (code("ALREADYEXISTS"), "the mailbox already exists".into()),
            Failure::Refused(why) => (code("CANNOT"), why),
            Failure::OverQuota => (Code::OverQuota, "the mailbox is over its quota".into()),
            Failure::Unavailable => (
                code("UNAVAILABLE"),
                "the mail store is unavailable, try again later".into(),
            ),
        };
        self.no(tag, Some(code), text);
    }

    // ---- capabilities and login ---------------------------------------------------------

    fn clear_text_allowed(&self) -> bool {
        self.tls || self.config.plaintext_allowed
    }

    fn capabilities(&self) -> Vec1<Capability<'static>> {
        let mut caps = vec![
            Capability::Imap4Rev1,
            Capability::SaslIr,
            Capability::LiteralPlus,
            Capability::Id,
            Capability::Idle,
            Capability::Namespace,
            Capability::UidPlus,
            Capability::Move,
            Capability::Unselect,
        ];
        if let Ok(children) = Atom::try_from("CHILDREN") {
            caps.push(Capability::from(children));
        }
        if !self.authenticated {
            if !self.tls && self.config.starttls_available {
                caps.push(Capability::StartTls);
            }
            if self.clear_text_allowed() {
                caps.push(Capability::Auth(AuthMechanism::Plain));
                caps.push(Capability::Auth(AuthMechanism::Login));
            } else {
                caps.push(Capability::LoginDisabled);
            }
        }
        Vec1::try_from(caps).unwrap_or_else(|_| Vec1::from(Capability::Imap4Rev1))
    }

    fn sasl_step(&mut self, tag: Tag<'static>, sasl: Sasl, step: Step) {
        match step {
            Step::Challenge(challenge) => {
                self.reply(Reply::challenge(&challenge));
                self.state = State::Sasl { tag, sasl };
            }
            Step::Done(credentials) => {
                self.ask(Pending::Login(tag), Request::Authenticate(credentials))
            }
            Step::Failed(SaslError::Cancelled | SaslError::Finished) => {
                self.bad(tag, None, "AUTHENTICATE cancelled")
            }
            Step::Failed(SaslError::InvalidBase64) => self.bad(tag, None, "invalid base64 data"),
            Step::Failed(SaslError::Malformed(why)) => self.no(
                tag,
                Some(code("AUTHENTICATIONFAILED")),
                format!("malformed response: {why}"),
            ),
        }
    }

    fn privacy_required(&mut self, tag: Tag<'static>) {
        self.no(
            tag,
            Some(code("PRIVACYREQUIRED")),
            "clear-text login refused without TLS; use STARTTLS first",
        );
        self.count_error();
    }

    // ---- commands -----------------------------------------------------------------------

    fn command(&mut self, command: Command<'static>) {
        let Command { tag, body } = command;
        match body {
            CommandBody::Capability => {
                self.reply(Reply::data(Data::Capability(self.capabilities())));
                self.ok(tag, None, "CAPABILITY completed");
            }
            CommandBody::Noop => self.noop(tag, "NOOP completed"),
            CommandBody::Logout => {
                self.reply(Reply::bye(None, "dirmail IMAP server logging out"));
                self.ok(tag, None, "LOGOUT completed");
                self.out.push_back(Event::Close);
                self.state = State::Closed;
                self.view = None;
            }
            CommandBody::Id { .. } => {
                let parameters = vec![
                    (
                        istring(b"name".to_vec()),
                        NString(Some(istring(b"dirmail".to_vec()))),
                    ),
                    (
                        istring(b"version".to_vec()),
                        NString(Some(istring(env!("CARGO_PKG_VERSION").as_bytes().to_vec()))),
                    ),
                ];
                self.reply(Reply::data(Data::Id {
                    parameters: Some(parameters),
                }));
                self.ok(tag, None, "ID completed");
            }
            CommandBody::StartTLS => {
                if self.tls {
                    self.bad(tag, None, "TLS is already active");
                } else if self.authenticated {
                    self.bad(tag, None, "STARTTLS is only allowed before login");
                } else if !self.config.starttls_available {
                    self.no(tag, None, "STARTTLS is not available");
                } else {
                    self.ok(tag, None, "begin TLS negotiation now");
                    self.out.push_back(Event::StartTls);
                    // Anything pipelined behind STARTTLS was sent in the clear: dropped.
                    self.drop_input();
                    self.state = State::AwaitingTls;
                }
            }
            CommandBody::Login { username, password } => {
                if self.authenticated {
                    self.bad(tag, None, "already logged in");
                } else if !self.clear_text_allowed() {
                    self.privacy_required(tag);
                } else {
                    let credentials = Credentials {
                        authzid: None,
                        username: String::from_utf8_lossy(username.as_ref()).into_owned(),
                        proof: Proof::Password(Secret::new(String::from_utf8_lossy(
                            password.declassify().as_ref(),
                        ))),
                    };
                    self.ask(Pending::Login(tag), Request::Authenticate(credentials));
                }
            }
            CommandBody::Authenticate {
                mechanism,
                initial_response,
            } => self.authenticate(
                tag,
                mechanism,
                initial_response.map(|r| r.declassify().to_vec()),
            ),
            _ if !self.authenticated => self.bad(tag, None, "log in first"),
            CommandBody::Enable { .. } => {
                self.reply(Reply::data(Data::Enabled {
                    capabilities: Vec::new(),
                }));
                self.ok(tag, None, "ENABLE completed");
            }
            CommandBody::Namespace => {
                let personal = vec![Namespace::new(
                    istring(Vec::new()),
                    QuotedChar::try_from(DELIMITER).ok(),
                )];
                self.reply(Reply::data(Data::Namespace {
                    personal,
                    other: Vec::new(),
                    shared: Vec::new(),
                }));
                self.ok(tag, None, "NAMESPACE completed");
            }
            CommandBody::Select { mailbox, .. } => self.select(tag, &mailbox, false),
            CommandBody::Examine { mailbox, .. } => self.select(tag, &mailbox, true),
            CommandBody::Create { mailbox } => {
                self.simple(tag, &mailbox, "CREATE completed", |folder| {
                    Request::Create { folder }
                })
            }
            CommandBody::Delete { mailbox } => {
                if self.selected() == folder_name(&mailbox).ok().as_deref() {
                    // Deleting the selected folder leaves nothing selected.
                    self.view = None;
                }
                self.simple(tag, &mailbox, "DELETE completed", |folder| {
                    Request::Delete { folder }
                })
            }
            CommandBody::Rename { from, to } => match (folder_name(&from), folder_name(&to)) {
                (Ok(from), Ok(to)) => self.ask(
                    Pending::Simple(tag, "RENAME completed"),
                    Request::Rename { from, to },
                ),
                (Err(why), _) | (_, Err(why)) => self.no(tag, Some(code("CANNOT")), why),
            },
            CommandBody::Subscribe { mailbox } => {
                self.simple(tag, &mailbox, "SUBSCRIBE completed", |folder| {
                    Request::Subscribe {
                        folder,
                        subscribe: true,
                    }
                })
            }
            CommandBody::Unsubscribe { mailbox } => {
                self.simple(tag, &mailbox, "UNSUBSCRIBE completed", |folder| {
                    Request::Subscribe {
                        folder,
                        subscribe: false,
                    }
                })
            }
            CommandBody::List {
                reference,
                mailbox_wildcard,
            } => self.list(tag, &reference, &mailbox_wildcard, false),
            CommandBody::Lsub {
                reference,
                mailbox_wildcard,
            } => self.list(tag, &reference, &mailbox_wildcard, true),
            CommandBody::Status {
                mailbox,
                item_names,
            } => match folder_name(&mailbox) {
                Ok(folder) => self.ask(
                    Pending::Status {
                        tag,
                        folder: folder.clone(),
                        items: item_names.into_owned(),
                    },
                    Request::Status { folder },
                ),
                Err(why) => self.no(tag, Some(code("CANNOT")), why),
            },
            CommandBody::Append {
                mailbox,
                flags,
                date,
                message,
            } => self.append(
                tag,
                &mailbox,
                &flags,
                date.map(|d| d.as_ref().timestamp()),
                message,
            ),
            CommandBody::Idle => {
                if self.view.is_some() {
                    self.ask(Pending::Refresh(Then::EnterIdle(tag)), Request::Refresh);
                } else {
                    self.enter_idle(tag);
                }
            }
            _ if self.view.is_none() => self.bad(tag, None, "select a mailbox first"),
            CommandBody::Check => self.noop(tag, "CHECK completed"),
            CommandBody::Close => {
                let deleted = self.deleted_uids(None);
                match deleted {
                    Some(uids) if !uids.is_empty() => self.ask(
                        Pending::Expunge { tag, close: true },
                        Request::Expunge { uids },
                    ),
                    _ => {
                        self.view = None;
                        self.ok(tag, None, "CLOSE completed");
                    }
                }
            }
            CommandBody::Unselect => {
                self.view = None;
                self.ok(tag, None, "UNSELECT completed");
            }
            CommandBody::Expunge => self.expunge(tag, None),
            CommandBody::ExpungeUid { sequence_set } => self.expunge(tag, Some(sequence_set)),
            CommandBody::Search {
                charset,
                criteria,
                uid,
            } => self.search(tag, charset, criteria, uid),
            CommandBody::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
                ..
            } => self.fetch(tag, &sequence_set, macro_or_item_names, uid),
            CommandBody::Store {
                sequence_set,
                kind,
                response,
                flags,
                uid,
                ..
            } => self.store(tag, &sequence_set, kind, response, &flags, uid),
            CommandBody::Copy {
                sequence_set,
                mailbox,
                uid,
            } => self.copy(tag, &sequence_set, &mailbox, uid, false),
            CommandBody::Move {
                sequence_set,
                mailbox,
                uid,
            } => self.copy(tag, &sequence_set, &mailbox, uid, true),
            _ => self.bad(tag, None, "command not supported"),
        }
    }

    fn authenticate(
        &mut self,
        tag: Tag<'static>,
        mechanism: AuthMechanism<'static>,
        initial: Option<Vec<u8>>,
    ) {
        if self.authenticated {
            return self.bad(tag, None, "already logged in");
        }
        let mechanism = match mechanism {
            AuthMechanism::Plain => Mechanism::Plain,
            AuthMechanism::Login => Mechanism::Login,
            _ => return self.no(tag, None, "unsupported authentication mechanism"),
        };
        if !self.clear_text_allowed() {
            return self.privacy_required(tag);
        }
        // The codec has decoded the initial response; the stepper wants its base64 (`=` when
        // empty, RFC 4959).
        let initial = initial.map(|bytes| {
            if bytes.is_empty() {
                "=".to_owned()
            } else {
                encode(bytes)
            }
        });
        let (sasl, step) = Sasl::start(mechanism, initial.as_deref(), "");
        self.sasl_step(tag, sasl, step);
    }

    fn noop(&mut self, tag: Tag<'static>, text: &'static str) {
        if self.view.is_some() {
            self.ask(
                Pending::Refresh(Then::Complete(Completion {
                    tag,
                    code: None,
                    text,
                })),
                Request::Refresh,
            );
        } else {
            self.ok(tag, None, text);
        }
    }

    fn enter_idle(&mut self, tag: Tag<'static>) {
        self.reply(Reply::continuation("idling"));
        self.state = State::Idle(tag);
    }

    fn simple(
        &mut self,
        tag: Tag<'static>,
        mailbox: &Mailbox<'_>,
        done: &'static str,
        request: impl FnOnce(String) -> Request,
    ) {
        match folder_name(mailbox) {
            Ok(folder) => self.ask(Pending::Simple(tag, done), request(folder)),
            Err(why) => self.no(tag, Some(code("CANNOT")), why),
        }
    }

    fn select(&mut self, tag: Tag<'static>, mailbox: &Mailbox<'_>, read_only: bool) {
        // RFC 3501 §6.3.1: SELECT first deselects; if it fails, nothing is selected.
        self.view = None;
        match folder_name(mailbox) {
            Ok(folder) => self.ask(
                Pending::Select {
                    tag,
                    folder: folder.clone(),
                    read_only,
                },
                Request::Select { folder, read_only },
            ),
            Err(why) => self.no(tag, Some(code("CANNOT")), why),
        }
    }

    fn list(
        &mut self,
        tag: Tag<'static>,
        reference: &Mailbox<'_>,
        wildcard: &ListMailbox<'_>,
        lsub: bool,
    ) {
        let reference = match reference {
            Mailbox::Inbox => INBOX.to_owned(),
            Mailbox::Other(other) => String::from_utf8_lossy(other.as_ref()).into_owned(),
        };
        let wildcard = match wildcard {
            ListMailbox::Token(token) => String::from_utf8_lossy(token.as_ref()).into_owned(),
            ListMailbox::String(string) => String::from_utf8_lossy(string.as_ref()).into_owned(),
        };
        if wildcard.is_empty() && !lsub {
            // RFC 3501 §6.3.8: the hierarchy delimiter and root.
            if let Ok(root) = Mailbox::try_from(String::new()) {
                self.reply(Reply::data(Data::List {
                    items: vec![FlagNameAttribute::Noselect],
                    delimiter: QuotedChar::try_from(DELIMITER).ok(),
                    mailbox: root,
                }));
            }
            return self.ok(tag, None, "LIST completed");
        }
        let pattern = format!("{reference}{wildcard}");
        if pattern.len() > MAX_PATTERN {
            return self.bad(tag, None, "the pattern is too long");
        }
        self.ask(
            Pending::List {
                tag,
                lsub,
                pattern: canonical_pattern(&pattern),
            },
            Request::ListFolders,
        );
    }

    fn append(
        &mut self,
        tag: Tag<'static>,
        mailbox: &Mailbox<'_>,
        flags: &[Flag<'_>],
        date: Option<i64>,
        message: LiteralOrLiteral8<'static>,
    ) {
        let folder = match folder_name(mailbox) {
            Ok(folder) => folder,
            Err(why) => return self.no(tag, Some(code("CANNOT")), why),
        };
        let message = match message {
            LiteralOrLiteral8::Literal(literal) => literal.into_inner().into_owned(),
            LiteralOrLiteral8::Literal8(literal) => literal.data.into_owned(),
        };
        if message.is_empty() {
            return self.no(tag, None, "an empty message cannot be appended");
        }
        let to_selected = self.selected() == Some(folder.as_str());
        self.ask(
            Pending::Append { tag, to_selected },
            Request::Append {
                folder,
                flags: flags_of(flags),
                date,
                message,
            },
        );
    }

    /// The UIDs in `set` (all when `None`) that carry `\Deleted`; `None` when read-only.
    fn deleted_uids(&self, set: Option<&SequenceSet>) -> Option<Vec<u32>> {
        let view = self.view.as_ref()?;
        if view.read_only {
            return None;
        }
        let chosen: Option<HashSet<usize>> = match set {
            Some(set) => Some(view.resolve(set, true).ok()?.into_iter().collect()),
            None => None,
        };
        Some(
            view.messages
                .iter()
                .enumerate()
                .filter(|(i, m)| {
                    m.flags.contains(Flags::DELETED)
                        && chosen.as_ref().is_none_or(|c| c.contains(i))
                })
                .map(|(_, m)| m.uid)
                .collect(),
        )
    }

    fn expunge(&mut self, tag: Tag<'static>, set: Option<SequenceSet>) {
        if self.view.as_ref().is_some_and(|v| v.read_only) {
            return self.no(tag, Some(Code::ReadOnly), "the mailbox is read-only");
        }
        let uid = set.is_some();
        match self.deleted_uids(set.as_ref()) {
            Some(uids) if !uids.is_empty() => self.ask(
                Pending::Expunge { tag, close: false },
                Request::Expunge { uids },
            ),
            _ => {
                let _ = uid;
                self.finish(tag, None, "EXPUNGE completed", true)
            }
        }
    }

    /// UIDs named by `set`, in sequence order; `Err` for a message number past the end.
    fn targets(&self, set: &SequenceSet, uid: bool) -> Result<Vec<u32>, ()> {
        let Some(view) = &self.view else {
            return Err(());
        };
        let indexes = view.resolve(set, uid).map_err(|_| ())?;
        Ok(indexes
            .into_iter()
            .filter_map(|i| view.messages.get(i).map(|m| m.uid))
            .collect())
    }

    fn fetch(
        &mut self,
        tag: Tag<'static>,
        set: &SequenceSet,
        names: imap_types::fetch::MacroOrMessageDataItemNames<'static>,
        uid: bool,
    ) {
        let Ok(targets) = self.targets(set, uid) else {
            return self.bad(tag, None, "invalid message sequence number");
        };
        let items = match fetch::items(names, uid) {
            Ok(items) => items,
            Err(why) => return self.bad(tag, None, why),
        };
        let mut job = Box::new(FetchJob {
            tag,
            uid,
            items,
            targets,
            next: 0,
            batch: 0,
            seen_set: HashSet::new(),
        });
        let read_only = self.view.as_ref().is_none_or(|v| v.read_only);
        if fetch::sets_seen(&job.items) && !read_only {
            let unseen: Vec<u32> = job
                .targets
                .iter()
                .copied()
                .filter(|&uid| {
                    self.meta(uid)
                        .is_some_and(|m| !m.flags.contains(Flags::SEEN))
                })
                .collect();
            if !unseen.is_empty() {
                job.seen_set = unseen.iter().copied().collect();
                return self.ask(
                    Pending::FetchSeen(job),
                    Request::Store {
                        uids: unseen,
                        op: FlagOp::Add,
                        flags: Flags::SEEN,
                    },
                );
            }
        }
        self.fetch_next(job);
    }

    fn meta(&self, uid: u32) -> Option<&MessageMeta> {
        let view = self.view.as_ref()?;
        view.messages.get(view.index_of(uid)?)
    }

    /// The next batch of targets: at most `batch_messages`, and about `batch_bytes`.
    fn batch(&self, targets: &[u32]) -> usize {
        let mut bytes = 0u64;
        let mut n = 0;
        for &uid in targets.iter().take(self.config.batch_messages.max(1)) {
            if n > 0 && bytes >= self.config.batch_bytes {
                break;
            }
            bytes = bytes.saturating_add(self.meta(uid).map_or(0, |m| m.size));
            n += 1;
        }
        n
    }

    fn fetch_next(&mut self, mut job: Box<FetchJob>) {
        if !fetch::needs_content(&job.items) {
            let replies: Vec<Reply> = job
                .targets
                .iter()
                .filter_map(|&uid| self.fetch_reply(&job, uid, None).ok().flatten())
                .collect();
            self.out.extend(replies.into_iter().map(Event::Reply));
            return self.finish(job.tag, None, "FETCH completed", job.uid);
        }
        let rest = job.targets.get(job.next..).unwrap_or_default();
        job.batch = self.batch(rest);
        if job.batch == 0 {
            return self.finish(job.tag, None, "FETCH completed", job.uid);
        }
        let uids = rest.get(..job.batch).unwrap_or_default().to_vec();
        self.ask(Pending::FetchLoad(job), Request::Load { uids });
    }

    fn fetch_reply(
        &self,
        job: &FetchJob,
        uid: u32,
        raw: Option<&[u8]>,
    ) -> Result<Option<Reply>, fetch::TooMuchData> {
        let Some(view) = self.view.as_ref() else {
            return Ok(None);
        };
        let Some((index, meta)) = view
            .index_of(uid)
            .and_then(|i| Some((i, view.messages.get(i)?)))
        else {
            return Ok(None);
        };
        let Ok(seq) = u32::try_from(index + 1) else {
            return Ok(None);
        };
        fetch::reply(&job.items, seq, meta, raw, job.seen_set.contains(&uid))
    }

    fn search(
        &mut self,
        tag: Tag<'static>,
        charset: Option<Charset<'static>>,
        criteria: Vec1<SearchKey<'static>>,
        uid: bool,
    ) {
        if let Some(charset) = &charset {
            let name = match charset {
                Charset::Atom(atom) => atom.inner().to_owned(),
                Charset::Quoted(quoted) => quoted.inner().to_owned(),
            };
            if !name.eq_ignore_ascii_case("US-ASCII") && !name.eq_ignore_ascii_case("UTF-8") {
                let allowed = ["US-ASCII", "UTF-8"]
                    .into_iter()
                    .filter_map(|c| Atom::try_from(c).ok().map(Charset::Atom))
                    .collect();
                return self.no(
                    tag,
                    Some(Code::BadCharset { allowed }),
                    "unsupported charset",
                );
            }
        }
        let key = SearchKey::And(criteria);
        let targets: Vec<u32> = self
            .view
            .as_ref()
            .map(|v| v.messages.iter().map(|m| m.uid).collect())
            .unwrap_or_default();
        let job = Box::new(SearchJob {
            tag,
            uid,
            key,
            targets,
            next: 0,
            batch: 0,
            found: Vec::new(),
        });
        self.search_next(job);
    }

    fn search_next(&mut self, mut job: Box<SearchJob>) {
        let Some(view) = &self.view else {
            return self.ok(job.tag, None, "SEARCH completed");
        };
        if !search::needs_content(&job.key) {
            job.found = (0..view.messages.len())
                .filter(|&i| search::matches(&job.key, &Candidate::new(view, i, None)))
                .filter_map(|i| view.messages.get(i).map(|m| m.uid))
                .collect();
            return self.search_done(*job);
        }
        let rest = job.targets.get(job.next..).unwrap_or_default();
        job.batch = self.batch(rest);
        if job.batch == 0 {
            return self.search_done(*job);
        }
        let uids = rest.get(..job.batch).unwrap_or_default().to_vec();
        self.ask(Pending::SearchLoad(job), Request::Load { uids });
    }

    fn search_done(&mut self, job: SearchJob) {
        let Some(view) = &self.view else {
            return self.ok(job.tag, None, "SEARCH completed");
        };
        let mut numbers: Vec<NonZeroU32> = job
            .found
            .iter()
            .filter_map(|&uid| {
                if job.uid {
                    NonZeroU32::new(uid)
                } else {
                    view.index_of(uid)
                        .and_then(|i| u32::try_from(i + 1).ok())
                        .and_then(NonZeroU32::new)
                }
            })
            .collect();
        numbers.sort_unstable();
        self.reply(Reply::data(Data::Search(numbers)));
        self.finish(job.tag, None, "SEARCH completed", job.uid);
    }

    fn store(
        &mut self,
        tag: Tag<'static>,
        set: &SequenceSet,
        kind: StoreType,
        response: StoreResponse,
        flags: &[Flag<'_>],
        uid: bool,
    ) {
        if self.view.as_ref().is_some_and(|v| v.read_only) {
            return self.no(tag, Some(Code::ReadOnly), "the mailbox is read-only");
        }
        let Ok(uids) = self.targets(set, uid) else {
            return self.bad(tag, None, "invalid message sequence number");
        };
        if uids.is_empty() {
            return self.finish(tag, None, "STORE completed", uid);
        }
        let op = match kind {
            StoreType::Add => FlagOp::Add,
            StoreType::Remove => FlagOp::Remove,
            StoreType::Replace => FlagOp::Replace,
        };
        self.ask(
            Pending::Store {
                tag,
                silent: matches!(response, StoreResponse::Silent),
                uid,
            },
            Request::Store {
                uids,
                op,
                flags: flags_of(flags),
            },
        );
    }

    fn copy(
        &mut self,
        tag: Tag<'static>,
        set: &SequenceSet,
        mailbox: &Mailbox<'_>,
        uid: bool,
        remove: bool,
    ) {
        let to = match folder_name(mailbox) {
            Ok(to) => to,
            Err(why) => return self.no(tag, Some(code("CANNOT")), why),
        };
        if remove && self.view.as_ref().is_some_and(|v| v.read_only) {
            return self.no(tag, Some(Code::ReadOnly), "the mailbox is read-only");
        }
        let Ok(uids) = self.targets(set, uid) else {
            return self.bad(tag, None, "invalid message sequence number");
        };
        let done = if remove {
            "MOVE completed"
        } else {
            "COPY completed"
        };
        if uids.is_empty() {
            return self.finish(tag, None, done, true);
        }
        let to_selected = self.selected() == Some(to.as_str());
        self.ask(
            Pending::Copy {
                tag,
                remove,
                uid,
                to_selected,
            },
            Request::Copy { uids, to, remove },
        );
    }

    // ---- answers ------------------------------------------------------------------------

    fn answered(&mut self, pending: Pending, response: Response) {
        match (pending, response) {
            (Pending::Login(tag), response) => self.logged_in(tag, response),
            (
                Pending::Select {
                    tag,
                    folder,
                    read_only,
                },
                Response::Snapshot(snapshot),
            ) => self.selected_folder(tag, folder, read_only, snapshot),
            (Pending::Select { tag, .. }, Response::Failed(failure)) => {
                self.failure(tag, failure, code("NONEXISTENT"))
            }
            (Pending::Refresh(then), response) => {
                if let (Some(view), Response::Snapshot(snapshot)) = (&mut self.view, response) {
                    view.dirty = false;
                    let replies = view.update(snapshot);
                    self.out.extend(replies.into_iter().map(Event::Reply));
                }
                match then {
                    Then::Complete(Completion { tag, code, text }) => self.ok(tag, code, text),
                    Then::EnterIdle(tag) => self.enter_idle(tag),
                    // Back to idling, without asking again: a refresh that failed (the
                    // folder was renamed away or deleted) would fail the same way at once,
                    // a loop without end. `dirty` stays set, so the next poke or command
                    // tries again.
                    Then::Idle(tag) => self.state = State::Idle(tag),
                }
            }
            (
                Pending::List { tag, lsub, pattern },
                Response::Folders {
                    folders,
                    subscribed,
                },
            ) => self.listed(tag, lsub, &pattern, &folders, &subscribed),
            (Pending::Simple(tag, done), Response::Done) => self.finish(tag, None, done, true),
            (Pending::Status { tag, folder, items }, Response::Status(status)) => {
                self.status(tag, &folder, &items, status)
            }
            (Pending::FetchSeen(job), Response::Flags(changed)) => {
                self.apply_flags(&changed);
                self.fetch_next(job);
            }
            (Pending::FetchLoad(mut job), Response::Messages(messages)) => {
                let batch: Vec<u32> = job
                    .targets
                    .get(job.next..job.next.saturating_add(job.batch))
                    .unwrap_or_default()
                    .to_vec();
                let mut replies = Vec::new();
                let mut too_much = false;
                for (&uid, bytes) in batch.iter().zip(messages.iter()) {
                    let Some(bytes) = bytes.as_deref() else {
                        continue;
                    };
                    match self.fetch_reply(&job, uid, Some(bytes)) {
                        Ok(reply) => replies.extend(reply),
                        Err(fetch::TooMuchData) => {
                            too_much = true;
                            break;
                        }
                    }
                }
                self.out.extend(replies.into_iter().map(Event::Reply));
                if too_much {
                    return self.no(
                        job.tag,
                        Some(code("LIMIT")),
                        "the FETCH asks for more of one message than the server sends at once",
                    );
                }
                job.next = job.next.saturating_add(job.batch);
                self.fetch_next(job);
            }
            (Pending::SearchLoad(mut job), Response::Messages(messages)) => {
                if let Some(view) = &self.view {
                    let batch = job
                        .targets
                        .get(job.next..job.next.saturating_add(job.batch))
                        .unwrap_or_default();
                    let mut found = Vec::new();
                    for (&uid, bytes) in batch.iter().zip(messages.iter()) {
                        let (Some(index), Some(bytes)) = (view.index_of(uid), bytes) else {
                            continue;
                        };
                        let parsed = Parsed::new_lazy(bytes);
                        if search::matches(&job.key, &Candidate::new(view, index, Some(&parsed))) {
                            found.push(uid);
                        }
                    }
                    job.found.extend(found);
                }
                job.next = job.next.saturating_add(job.batch);
                self.search_next(job);
            }
            (Pending::Store { tag, silent, uid }, Response::Flags(changed)) => {
                self.apply_flags(&changed);
                if !silent && let Some(view) = &self.view {
                    let replies: Vec<Reply> = changed
                        .iter()
                        .filter_map(|(u, _)| view.index_of(*u))
                        .filter_map(|i| view.flags_reply(i, uid))
                        .collect();
                    self.out.extend(replies.into_iter().map(Event::Reply));
                }
                self.finish(tag, None, "STORE completed", uid);
            }
            (Pending::Expunge { tag, close }, Response::Expunged(uids)) => {
                if close {
                    self.view = None;
                    self.ok(tag, None, "CLOSE completed");
                } else {
                    let replies = self
                        .view
                        .as_mut()
                        .map(|v| v.expunge(&uids))
                        .unwrap_or_default();
                    self.out.extend(replies.into_iter().map(Event::Reply));
                    self.finish(tag, None, "EXPUNGE completed", true);
                }
            }
            (Pending::Expunge { tag, close: true }, Response::Failed(failure)) => {
                self.view = None;
                self.failure(tag, failure, code("NONEXISTENT"));
            }
            (
                Pending::Copy {
                    tag,
                    remove,
                    uid,
                    to_selected,
                },
                Response::Copied { uidvalidity, pairs },
            ) => {
                let copyuid = copy_uid(uidvalidity, &pairs);
                if to_selected && let Some(view) = &mut self.view {
                    view.dirty = true;
                }
                if remove {
                    if let Some(copyuid) = copyuid {
                        self.reply(Reply::untagged(StatusKind::Ok, Some(copyuid), "moved"));
                    }
                    let moved: Vec<u32> = pairs.iter().map(|(from, _)| *from).collect();
                    let replies = self
                        .view
                        .as_mut()
                        .map(|v| v.expunge(&moved))
                        .unwrap_or_default();
                    self.out.extend(replies.into_iter().map(Event::Reply));
                    self.finish(tag, None, "MOVE completed", true);
                } else {
                    let _ = uid;
                    self.finish(tag, copyuid, "COPY completed", true);
                }
            }
            (Pending::Append { tag, to_selected }, Response::Appended { uidvalidity, uid }) => {
                if to_selected && let Some(view) = &mut self.view {
                    view.dirty = true;
                }
                let code = match (NonZeroU32::new(uidvalidity), NonZeroU32::new(uid)) {
                    (Some(uid_validity), Some(uid)) => Some(Code::AppendUid { uid_validity, uid }),
                    _ => None,
                };
                self.finish(tag, code, "APPEND completed", true);
            }
            (
                Pending::Copy { tag, .. } | Pending::Append { tag, .. },
                Response::Failed(failure),
            ) => self.failure(tag, failure, Code::TryCreate),
            (
                Pending::Simple(tag, _)
                | Pending::Status { tag, .. }
                | Pending::List { tag, .. }
                | Pending::Store { tag, .. }
                | Pending::Expunge { tag, .. },
                Response::Failed(failure),
            ) => self.failure(tag, failure, code("NONEXISTENT")),
            (Pending::FetchSeen(job) | Pending::FetchLoad(job), _) => {
                self.failure(job.tag, Failure::Unavailable, code("UNAVAILABLE"))
            }
            (Pending::SearchLoad(job), _) => {
                self.failure(job.tag, Failure::Unavailable, code("UNAVAILABLE"))
            }
            // `fits` let nothing else through.
            (_, _) => {}
        }
    }

    fn logged_in(&mut self, tag: Tag<'static>, response: Response) {
        match response {
            Response::LoggedIn => {
                self.authenticated = true;
                self.state = State::Authenticated;
                let capabilities = Code::Capability(self.capabilities());
                self.ok(tag, Some(capabilities), "logged in");
            }
            Response::BadCredentials => {
                self.no(
                    tag,
                    Some(code("AUTHENTICATIONFAILED")),
                    "invalid user name or password",
                );
                self.count_error();
            }
            Response::Locked => self.no(
                tag,
                Some(code("CONTACTADMIN")),
                "mailbox locked by the administrator",
            ),
            _ => self.no(
                tag,
                Some(code("UNAVAILABLE")),
                "the account directory is unavailable, try again later",
            ),
        }
    }

    fn selected_folder(
        &mut self,
        tag: Tag<'static>,
        folder: String,
        read_only: bool,
        snapshot: Snapshot,
    ) {
        let view = View::new(folder, read_only, snapshot);
        let flags: Vec<Flag<'static>> = system_flags(
            Flags::SEEN
                .union(Flags::ANSWERED)
                .union(Flags::FLAGGED)
                .union(Flags::DELETED)
                .union(Flags::DRAFT),
        );
        self.reply(Reply::data(Data::Flags(flags.clone())));
        let permanent = if read_only {
            Vec::new()
        } else {
            flags.into_iter().map(FlagPerm::Flag).collect()
        };
        self.reply(Reply::untagged(
            StatusKind::Ok,
            Some(Code::PermanentFlags(permanent)),
            "flags kept",
        ));
        self.reply(Reply::data(Data::Exists(view.exists())));
        self.reply(Reply::data(Data::Recent(view.recent())));
        if let Some(unseen) = view.first_unseen().and_then(NonZeroU32::new) {
            self.reply(Reply::untagged(
                StatusKind::Ok,
                Some(Code::Unseen(unseen)),
                "first unseen",
            ));
        }
        if let Some(validity) = NonZeroU32::new(view.uidvalidity) {
            self.reply(Reply::untagged(
                StatusKind::Ok,
                Some(Code::UidValidity(validity)),
                "UIDs valid",
            ));
        }
        let uidnext = view.uidnext.max(view.max_uid().saturating_add(1));
        if let Some(next) = NonZeroU32::new(uidnext) {
            self.reply(Reply::untagged(
                StatusKind::Ok,
                Some(Code::UidNext(next)),
                "predicted next UID",
            ));
        }
        let (code, text) = if read_only {
            (Code::ReadOnly, "EXAMINE completed")
        } else {
            (Code::ReadWrite, "SELECT completed")
        };
        self.view = Some(view);
        self.ok(tag, Some(code), text);
    }

    fn apply_flags(&mut self, changed: &[(u32, Flags)]) {
        let Some(view) = &mut self.view else {
            return;
        };
        for &(uid, flags) in changed {
            if let Some(i) = view.index_of(uid)
                && let Some(m) = view.messages.get_mut(i)
            {
                m.flags = flags;
            }
        }
    }

    fn listed(
        &mut self,
        tag: Tag<'static>,
        lsub: bool,
        pattern: &str,
        folders: &[String],
        subscribed: &[String],
    ) {
        let existing: HashSet<&str> = folders.iter().map(String::as_str).collect();
        let has_children = |name: &str| {
            let prefix = format!("{name}{DELIMITER}");
            folders.iter().any(|f| f.starts_with(&prefix))
        };
        // Parents of existing folders that do not exist themselves are shown \Noselect.
        let mut names: Vec<String> = if lsub {
            subscribed.to_vec()
        } else {
            let mut all: Vec<String> = folders.to_vec();
            for f in folders {
                let mut parent = f.as_str();
                while let Some((p, _)) = parent.rsplit_once(DELIMITER) {
                    if !existing.contains(p) {
                        all.push(p.to_owned());
                    }
                    parent = p;
                }
            }
            all
        };
        names.sort();
        names.dedup();
        if let Some(pos) = names.iter().position(|n| n == INBOX) {
            let inbox = names.remove(pos);
            names.insert(0, inbox);
        }
        for name in names.iter().filter(|n| wildcard_match(pattern, n)) {
            let mut items = Vec::new();
            if !existing.contains(name.as_str()) {
                items.push(FlagNameAttribute::Noselect);
            }
            let children = if has_children(name) {
                "HasChildren"
            } else {
                "HasNoChildren"
            };
            if let Ok(atom) = Atom::try_from(children) {
                items.push(FlagNameAttribute::from(atom));
            }
            let Ok(mailbox) = Mailbox::try_from(name.clone()) else {
                continue;
            };
            let delimiter = QuotedChar::try_from(DELIMITER).ok();
            self.reply(Reply::data(if lsub {
                Data::Lsub {
                    items,
                    delimiter,
                    mailbox,
                }
            } else {
                Data::List {
                    items,
                    delimiter,
                    mailbox,
                }
            }));
        }
        self.finish(
            tag,
            None,
            if lsub {
                "LSUB completed"
            } else {
                "LIST completed"
            },
            true,
        );
    }

    fn status(
        &mut self,
        tag: Tag<'static>,
        folder: &str,
        items: &[StatusDataItemName],
        status: FolderStatus,
    ) {
        let mut out = Vec::new();
        for item in items {
            out.push(match item {
                StatusDataItemName::Messages => StatusDataItem::Messages(status.messages),
                StatusDataItemName::Recent => StatusDataItem::Recent(status.recent),
                StatusDataItemName::Unseen => StatusDataItem::Unseen(status.unseen),
                StatusDataItemName::Deleted => StatusDataItem::Deleted(status.deleted),
                StatusDataItemName::UidNext => match NonZeroU32::new(status.uidnext) {
                    Some(n) => StatusDataItem::UidNext(n),
                    None => continue,
                },
                StatusDataItemName::UidValidity => match NonZeroU32::new(status.uidvalidity) {
                    Some(n) => StatusDataItem::UidValidity(n),
                    None => continue,
                },
                _ => continue,
            });
        }
        if let Ok(mailbox) = Mailbox::try_from(folder.to_owned()) {
            self.reply(Reply::data(Data::Status {
                mailbox,
                items: out.into(),
            }));
        }
        self.finish(tag, None, "STATUS completed", true);
    }
}

fn max_frame(config: &Config) -> u32 {
    config.max_message_size.saturating_add(64 * 1024)
}

/// The line ends in `{digits+}` although the fragmentizer announced no literal: the count did
/// not fit 32 bits.
fn uncountable_literal(line: &[u8]) -> bool {
    let Some(head) = trim_line_end(line).strip_suffix(b"+}") else {
        return false;
    };
    let digits = head.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    digits > 0 && head.len() > digits && head.get(head.len() - digits - 1) == Some(&b'{')
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A folder name from the wire: printable ASCII (modified UTF-7), then checked by the store's
/// rules so it names exactly one directory.
fn folder_name(mailbox: &Mailbox<'_>) -> Result<String, String> {
    let bytes: &[u8] = match mailbox {
        Mailbox::Inbox => return Ok(INBOX.to_owned()),
        Mailbox::Other(other) => other.as_ref(),
    };
    if !bytes.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Err("a mailbox name is modified UTF-7: printable ASCII only".into());
    }
    let name = String::from_utf8_lossy(bytes);
    check_name(&name).map_err(|e| e.to_string())
}

/// `inbox` at the start of a pattern means INBOX whatever its case.
fn canonical_pattern(pattern: &str) -> String {
    match pattern.get(..5) {
        Some(head)
            if head.eq_ignore_ascii_case(INBOX)
                && matches!(pattern.as_bytes().get(5), None | Some(b'.')) =>
        {
            format!("{INBOX}{}", pattern.get(5..).unwrap_or_default())
        }
        _ => pattern.to_owned(),
    }
}

/// LIST matching: `*` matches anything, `%` anything but the hierarchy delimiter. A dynamic
/// programme over (pattern so far, name prefix): time is their product, bounded by
/// [`MAX_PATTERN`] and the longest folder name.
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    let name: Vec<char> = name.chars().collect();
    // `row` holds, for each prefix length of the name, whether the pattern so far matches it.
    let mut row: Vec<bool> = std::iter::once(true)
        .chain(std::iter::repeat_n(false, name.len()))
        .collect();
    for pc in pattern.chars() {
        let next: Vec<bool> = match pc {
            '*' | '%' => {
                let mut reachable = false;
                row.iter()
                    .enumerate()
                    .map(|(j, &matched)| {
                        reachable |= matched;
                        let here = reachable;
                        if pc == '%' && name.get(j) == Some(&DELIMITER) {
                            reachable = false;
                        }
                        here
                    })
                    .collect()
            }
            c => std::iter::once(false)
                .chain(
                    row.iter()
                        .zip(name.iter())
                        .map(|(&matched, &nc)| matched && nc == c),
                )
                .collect(),
        };
        row = next;
    }
    row.last().copied().unwrap_or(false)
}

/// `[COPYUID v src dst]`, or `None` when nothing was copied.
fn copy_uid(uidvalidity: u32, pairs: &[(u32, u32)]) -> Option<Code<'static>> {
    let uid_validity = NonZeroU32::new(uidvalidity)?;
    let source = uid_set(pairs.iter().map(|p| p.0))?;
    let destination = uid_set(pairs.iter().map(|p| p.1))?;
    Some(Code::CopyUid {
        uid_validity,
        source,
        destination,
    })
}

/// UIDs in order as a set, runs of consecutive ones as ranges.
fn uid_set(uids: impl Iterator<Item = u32>) -> Option<UidSet> {
    let mut elements: Vec<(u32, u32)> = Vec::new();
    for uid in uids {
        match elements.last_mut() {
            Some((_, end)) if end.checked_add(1) == Some(uid) => *end = uid,
            _ => elements.push((uid, uid)),
        }
    }
    let elements: Vec<UidElement> = elements
        .into_iter()
        .filter_map(|(a, b)| {
            let (a, b) = (NonZeroU32::new(a)?, NonZeroU32::new(b)?);
            Some(if a == b {
                UidElement::Single(a)
            } else {
                UidElement::Range(a, b)
            })
        })
        .collect();
    Vec1::try_from(elements).ok().map(UidSet)
}

/// Does `response` answer `pending`? (Failures answer anything.)
fn fits(pending: &Pending, response: &Response) -> bool {
    if matches!(response, Response::Failed(_)) {
        return true;
    }
    matches!(
        (pending, response),
        (
            Pending::Login(_),
            Response::LoggedIn | Response::BadCredentials | Response::Locked
        ) | (
            Pending::Select { .. } | Pending::Refresh(_),
            Response::Snapshot(_)
        ) | (Pending::List { .. }, Response::Folders { .. })
            | (Pending::Simple(..), Response::Done)
            | (Pending::Status { .. }, Response::Status(_))
            | (
                Pending::FetchSeen(_) | Pending::Store { .. },
                Response::Flags(_)
            )
            | (
                Pending::FetchLoad(_) | Pending::SearchLoad(_),
                Response::Messages(_)
            )
            | (Pending::Expunge { .. }, Response::Expunged(_))
            | (Pending::Copy { .. }, Response::Copied { .. })
            | (Pending::Append { .. }, Response::Appended { .. })
    )
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*", "Archive.2024"));
        assert!(!wildcard_match("%", "Archive.2024"));
        assert!(wildcard_match("%", "Archive"));
        assert!(wildcard_match("Archive.%", "Archive.2024"));
        assert!(wildcard_match("A*4", "Archive.2024"));
        assert!(!wildcard_match("A%4", "Archive.2024"));
        assert!(wildcard_match("INBOX", "INBOX"));
        assert!(!wildcard_match("Sent", "sent"));
        assert_eq!(canonical_pattern("inbox.%"), "INBOX.%");
        assert_eq!(canonical_pattern("inboxes"), "inboxes");
    }
}
