//! The IMAP session core (SPEC §8): bytes in, [`Event`]s out, no socket, clock or store.
//!
//! Input is framed by imap-codec's `Fragmentizer` (lines and literals, bounded by the largest
//! message an APPEND may carry) and decoded by its `CommandCodec`; replies are imap-types values
//! encoded by its `ResponseCodec`. Everything that needs the store is a [`Request`]; the session
//! reads no further input until the driver [`answer`](Session::answer)s it.
//!
//! This file holds the state machine, the framing, the dispatch of commands and of answers,
//! and the replies every command shares. Each group of commands keeps its start and its
//! continuation (what it does with the driver's answer) side by side in a file of its own:
//! `auth.rs` (CAPABILITY, STARTTLS, LOGIN, AUTHENTICATE), `mailboxes.rs` (SELECT, EXAMINE,
//! CREATE, DELETE, RENAME, SUBSCRIBE, LIST, LSUB, STATUS, NAMESPACE, APPEND), `messages.rs`
//! (FETCH, SEARCH, STORE, COPY, MOVE, EXPUNGE, CLOSE, UNSELECT) and `idle.rs` (IDLE, NOOP,
//! CHECK: the re-scans of the selected folder).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use imap_codec::CommandCodec;
use imap_codec::fragmentizer::{
    DecodeMessageError, FragmentInfo, Fragmentizer, LiteralAnnouncement,
};
use imap_types::IntoStatic;
use imap_types::command::{Command, CommandBody};
use imap_types::core::{LiteralMode, NString, Tag};
use imap_types::response::{Code, Data, StatusKind};

use super::reply::{Reply, code, istring};
use super::view::{Snapshot, View};
use crate::auth::{Credentials, Sasl};
use crate::imap::mailbox::{FlagOp, Flags, FolderStatus};

mod auth;
mod idle;
mod mailboxes;
mod messages;

pub use mailboxes::wildcard_match;

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
    /// Change the system `flags` and the keywords named `keywords` (names the folder lacks are
    /// added to its table) → `Flags` (the resulting flags of those still there) or `Failed`
    /// (`Refused` when the folder has no room for another keyword).
    Store {
        uids: Vec<u32>,
        op: FlagOp,
        flags: Flags,
        keywords: Vec<String>,
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
        /// Keyword names, as for `Store`.
        keywords: Vec<String>,
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
    /// The flags of the messages changed, and the folder's keyword table they refer to.
    Flags {
        changed: Vec<(u32, Flags)>,
        keywords: Vec<String>,
    },
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

/// What the core waits for the driver to answer, by command group; each group's own enum
/// lives beside the commands that ask and the continuation that takes the answer.
#[derive(Debug)]
enum Pending {
    /// LOGIN or AUTHENTICATE: the credentials are being checked.
    Login(Tag<'static>),
    /// A re-scan of the selected folder, and what to do after it.
    Refresh(idle::Then),
    Mailboxes(mailboxes::Pending),
    Messages(messages::Pending),
}

impl Pending {
    /// Does `response` answer this? (Failures answer anything.)
    fn fits(&self, response: &Response) -> bool {
        if matches!(response, Response::Failed(_)) {
            return true;
        }
        match self {
            Pending::Login(_) => matches!(
                response,
                Response::LoggedIn | Response::BadCredentials | Response::Locked
            ),
            Pending::Refresh(_) => matches!(response, Response::Snapshot(_)),
            Pending::Mailboxes(pending) => pending.fits(response),
            Pending::Messages(pending) => pending.fits(response),
        }
    }
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
        // Not logged in yet: only the small frame a login needs.
        let frag = Fragmentizer::new(frame_bound(&config, false));
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
        if self.pending() > self.max_frame() as usize + MAX_PENDING_EXTRA {
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
        self.frag = Fragmentizer::new(self.max_frame());
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
        if !pending.fits(&response) {
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
            self.ask(Pending::Refresh(idle::Then::Idle(tag)), Request::Refresh);
        }
    }

    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle(_))
    }

    /// True once LOGIN or AUTHENTICATE succeeded.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
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
            let limit = self.max_literal();
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
        if announcement.length > self.max_literal() {
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

    /// Hands `request` to the driver; `pending` is what to do with the answer.
    fn ask(&mut self, pending: impl Into<Pending>, request: Request) {
        self.out.push_back(Event::Request(request));
        self.state = State::Waiting(pending.into());
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
                Pending::Refresh(idle::Then::Complete(idle::Completion { tag, code, text })),
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

    // ---- commands and answers -----------------------------------------------------------

    /// One command, by the state it needs: any state, then logged in, then a folder selected.
    /// Each is started in the file of its group.
    fn command(&mut self, command: Command<'static>) {
        let Command { tag, body } = command;
        match body {
            CommandBody::Capability => self.capability(tag),
            CommandBody::Noop => self.noop(tag, "NOOP completed"),
            CommandBody::Logout => {
                self.reply(Reply::bye(None, "dirmail IMAP server logging out"));
                self.ok(tag, None, "LOGOUT completed");
                self.out.push_back(Event::Close);
                self.state = State::Closed;
                self.view = None;
            }
            CommandBody::Id { .. } => self.id(tag),
            CommandBody::StartTLS => self.starttls(tag),
            CommandBody::Login { username, password } => self.login(tag, &username, &password),
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
            CommandBody::Namespace => self.namespace(tag),
            CommandBody::Select { mailbox, .. } => self.select(tag, &mailbox, false),
            CommandBody::Examine { mailbox, .. } => self.select(tag, &mailbox, true),
            CommandBody::Create { mailbox } => self.create(tag, &mailbox),
            CommandBody::Delete { mailbox } => self.delete(tag, &mailbox),
            CommandBody::Rename { from, to } => self.rename(tag, &from, &to),
            CommandBody::Subscribe { mailbox } => self.subscribe(tag, &mailbox, true),
            CommandBody::Unsubscribe { mailbox } => self.subscribe(tag, &mailbox, false),
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
            } => self.status(tag, &mailbox, item_names.into_owned()),
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
            CommandBody::Idle => self.idle(tag),
            _ if self.view.is_none() => self.bad(tag, None, "select a mailbox first"),
            CommandBody::Check => self.noop(tag, "CHECK completed"),
            CommandBody::Close => self.close(tag),
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

    /// The driver's answer to what `pending` asked (`Pending::fits` checked it), handed to the
    /// group that asked.
    fn answered(&mut self, pending: Pending, response: Response) {
        match pending {
            Pending::Login(tag) => self.logged_in(tag, response),
            Pending::Refresh(then) => self.refreshed(then, response),
            Pending::Mailboxes(pending) => self.mailboxes_answered(pending, response),
            Pending::Messages(pending) => self.messages_answered(pending, response),
        }
    }

    /// ID (RFC 2971): the server's name and version, whatever the client says about itself.
    fn id(&mut self, tag: Tag<'static>) {
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

    /// The server is stopping: `* BYE [UNAVAILABLE]`, then close.
    pub fn stop(&mut self) {
        if !self.is_closed() {
            self.close_with(Reply::shutting_down());
        }
    }
}

/// The largest command before login, literals included: a user name and a password (or the
/// first line of AUTHENTICATE) need far less. Without it a client that never logs in could make
/// the server hold a whole message's worth (`max_message_size`) per connection.
pub const PRE_LOGIN_MAX_FRAME: u32 = 16 * 1024;

/// The largest command the framer holds under `config`, before login or after it.
fn frame_bound(config: &Config, logged_in: bool) -> u32 {
    let after = config.max_message_size.saturating_add(64 * 1024);
    if logged_in {
        after
    } else {
        after.min(PRE_LOGIN_MAX_FRAME)
    }
}

impl Session {
    /// The largest command the framer holds: one login before login, then APPEND's message and
    /// room for the command around it.
    fn max_frame(&self) -> u32 {
        frame_bound(&self.config, self.authenticated)
    }

    /// The largest literal agreed to now: never more before login than after it.
    fn max_literal(&self) -> u32 {
        if self.authenticated {
            self.config.max_message_size
        } else {
            self.config.max_message_size.min(PRE_LOGIN_MAX_FRAME)
        }
    }
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
