//! The POP3 session core (docs/spec.md §7): bytes in, [`Event`]s out, no socket, clock or store.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::command::{self, Command, MessageNumber, Refusal};
use super::reply::{Reply, RespCode, wire_body};
use crate::auth::{Credentials, Mechanism, Proof, Sasl, SaslError, Step};
use crate::{InputBuffer, Line};

/// What a session needs to know; built by the driver per connection.
#[derive(Debug, Clone)]
pub struct Config {
    pub hostname: String,
    /// The APOP timestamp `<random.time@hostname>` for the greeting, unique per session
    /// (RFC 1939 §7); CRAM-MD5 uses it as its challenge too.
    pub apop_timestamp: String,
    /// Clear-text logins (USER/PASS, AUTH PLAIN/LOGIN) without TLS.
    pub plaintext_allowed: bool,
    /// docs/spec.md §7 `sparequired 1`: clear-text logins are refused even over TLS.
    pub spa_required: bool,
    /// A certificate is loaded, so STLS can be offered.
    pub starttls_available: bool,
    /// Offer SASL CRAM-MD5: some accounts have a readable mail secret (docs/spec.md §10).
    pub offer_cram_md5: bool,
    /// RFC 2449 allows 255 octets; dirmail is lenient up to this many, then answers `-ERR`.
    pub max_line_length: usize,
    /// Refused commands before the session is closed.
    pub max_invalid_commands: u32,
    /// RFC 1939 §3: the autologout timer, at least 10 minutes (the driver sets
    /// `[limits] pop3_idle_timeout`).
    pub idle_timeout: Duration,
}

impl Config {
    pub fn new(hostname: impl Into<String>, apop_timestamp: impl Into<String>) -> Self {
        Config {
            hostname: hostname.into(),
            apop_timestamp: apop_timestamp.into(),
            plaintext_allowed: false,
            spa_required: false,
            starttls_available: true,
            offer_cram_md5: false,
            max_line_length: 1000,
            max_invalid_commands: 20,
            idle_timeout: Duration::from_secs(600),
        }
    }
}

/// One message of the maildrop snapshot taken at login (R20).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// Stable across sessions (UIDL).
    pub uid: String,
    /// Octets as sent by RETR (CRLF line endings).
    pub size: u64,
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
    /// Close the connection once the replies before it are written. Unless a `Commit` came
    /// first, nothing is deleted (R20); the driver releases the mailbox.
    Close,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// → [`Response::Ok`], [`Response::BadCredentials`], [`Response::Locked`] or
    /// [`Response::TempFail`].
    Authenticate(Credentials),
    /// Take the mailbox for this session and snapshot it → [`Response::Opened`],
    /// [`Response::InUse`] or [`Response::TempFail`].
    OpenMailbox { mailbox: String },
    /// Read one message of the snapshot → [`Response::Message`] or [`Response::TempFail`].
    /// `index` is its 0-based position in the `Opened` list. The core does the TOP cut and
    /// the byte-stuffing.
    Retrieve {
        index: usize,
        uid: String,
        top_lines: Option<u32>,
    },
    /// QUIT in TRANSACTION: delete these and release the mailbox → [`Response::Committed`]
    /// or [`Response::TempFail`].
    Commit { delete: Vec<String> },
}

/// The driver's answer to the outstanding [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// The credentials are good; this is the mailbox to open.
    Ok {
        mailbox: String,
    },
    BadCredentials,
    /// R13/R14: locked by the administrator.
    Locked,
    Opened(Vec<MessageInfo>),
    /// R20: another session holds the mailbox.
    InUse,
    Message(Vec<u8>),
    Committed,
    /// The directory or the store is unavailable right now (any request).
    TempFail,
}

/// `answer` was called when it should not have been; the session is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("no request is outstanding")]
    NothingAsked,
    #[error("this answer does not fit the outstanding request")]
    Mismatch,
}

/// Input buffered while the core waits for the driver, beyond which the client is cut off.
const MAX_PENDING_INPUT: usize = 64 * 1024;

#[derive(Debug)]
enum Pending {
    Auth,
    Open,
    Retrieve { top_lines: Option<u32>, size: u64 },
    Commit { left: usize },
}

#[derive(Debug)]
enum State {
    /// RFC 1939 AUTHORIZATION; `user` after a USER command.
    Authorization {
        user: Option<String>,
    },
    Sasl(Sasl),
    Waiting(Pending),
    AwaitingTls,
    Transaction,
    Closed,
}

/// The maildrop as seen by this session: a snapshot (R20) and the deletion marks.
#[derive(Debug)]
struct Maildrop {
    messages: Vec<MessageInfo>,
    deleted: Vec<bool>,
}

impl Maildrop {
    fn live(&self) -> impl Iterator<Item = (usize, &MessageInfo)> {
        self.messages
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.deleted.get(*i).copied().unwrap_or(true))
    }

    fn totals(&self) -> (usize, u64) {
        self.live().fold((0, 0), |(n, octets), (_, m)| {
            (n + 1, octets.saturating_add(m.size))
        })
    }

    /// The 0-based index of message `number`, or the reply refusing it.
    fn find(&self, number: MessageNumber) -> Result<usize, Reply> {
        let index = usize::try_from(number)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .filter(|&i| i < self.messages.len())
            .ok_or_else(|| Reply::err("no such message"))?;
        if self.deleted.get(index).copied().unwrap_or(true) {
            return Err(Reply::err(format!("message {number} already deleted")));
        }
        Ok(index)
    }
}

/// One POP3 connection's protocol state.
#[derive(Debug)]
pub struct Session {
    config: Config,
    tls: bool,
    input: InputBuffer,
    out: VecDeque<Event>,
    state: State,
    maildrop: Option<Maildrop>,
    errors: u32,
    last_input: Instant,
}

impl Session {
    /// `tls` is true on the implicit-TLS port (995). The peer address is not used by POP3
    /// itself; the driver logs it.
    pub fn new(config: Config, _peer: IpAddr, tls: bool, now: Instant) -> Self {
        let input = InputBuffer::new(config.max_line_length);
        Session {
            config,
            tls,
            input,
            out: VecDeque::new(),
            state: State::Authorization { user: None },
            maildrop: None,
            errors: 0,
            last_input: now,
        }
    }

    /// `+OK <hostname> ready <timestamp>`: the timestamp makes APOP possible.
    pub fn greeting(&self) -> Reply {
        Reply::ok(format!(
            "{} POP3 server ready {}",
            self.config.hostname, self.config.apop_timestamp
        ))
    }

    /// Bytes from the client. Partial lines wait for more.
    pub fn feed(&mut self, bytes: &[u8], now: Instant) {
        if matches!(self.state, State::Closed | State::AwaitingTls) {
            // After STLS, plaintext sent before the handshake is never read (RFC 2595 §4).
            return;
        }
        self.last_input = now;
        self.input.push(bytes);
        self.process();
        if self.input.len() > MAX_PENDING_INPUT.max(self.config.max_line_length) {
            self.input.clear();
            self.close_with(Reply::err("too much pipelined input, closing connection"));
        }
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
        let fits = matches!(
            (pending, &response),
            (
                Pending::Auth,
                Response::Ok { .. }
                    | Response::BadCredentials
                    | Response::Locked
                    | Response::TempFail
            ) | (
                Pending::Open,
                Response::Opened(_) | Response::InUse | Response::TempFail
            ) | (
                Pending::Retrieve { .. },
                Response::Message(_) | Response::TempFail
            ) | (
                Pending::Commit { .. },
                Response::Committed | Response::TempFail
            )
        );
        if !fits {
            return Err(AnswerError::Mismatch);
        }
        let State::Waiting(pending) = std::mem::replace(&mut self.state, State::Transaction) else {
            return Err(AnswerError::NothingAsked);
        };
        match pending {
            Pending::Auth => self.auth_answer(response),
            Pending::Open => self.open_answer(response),
            Pending::Retrieve { top_lines, size } => {
                self.state = State::Transaction;
                match response {
                    Response::Message(message) => {
                        let first = if top_lines.is_some() {
                            "top of message follows".to_owned()
                        } else {
                            format!("{size} octets")
                        };
                        self.reply(Reply::Message {
                            first,
                            body: wire_body(&message, top_lines),
                        });
                    }
                    _ => self.reply(Reply::err_code(
                        RespCode::SysTemp,
                        "the message cannot be read now, try again later",
                    )),
                }
            }
            Pending::Commit { left } => {
                let reply = match response {
                    Response::Committed => Reply::ok(format!(
                        "{} POP3 server signing off ({left} messages left)",
                        self.config.hostname
                    )),
                    _ => {
                        Reply::err_code(RespCode::SysTemp, "some deleted messages were not removed")
                    }
                };
                self.close_with(reply);
            }
        }
        self.process();
        Ok(())
    }

    /// The TLS handshake after [`Event::StartTls`] is done: back to AUTHORIZATION, with
    /// nothing received before the handshake used.
    pub fn tls_started(&mut self, now: Instant) {
        self.input.clear();
        self.tls = true;
        self.last_input = now;
        if matches!(self.state, State::AwaitingTls) {
            self.state = State::Authorization { user: None };
        }
    }

    /// When the driver should call [`Self::timeout`]; `None` while the driver is busy for the
    /// core or the session is over.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Waiting(_) | State::AwaitingTls | State::Closed => None,
            _ => self.last_input.checked_add(self.config.idle_timeout),
        }
    }

    /// RFC 1939 autologout: closes the session (deleting nothing) once the deadline passed.
    pub fn timeout(&mut self, now: Instant) {
        if self.deadline().is_some_and(|deadline| now >= deadline) {
            self.close_with(Reply::err("autologout: idle for too long"));
        }
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// True once a login opened the maildrop (the TRANSACTION state).
    pub fn is_authenticated(&self) -> bool {
        self.maildrop.is_some()
    }

    /// True when the core will read input now (no request outstanding, not closed).
    pub fn wants_input(&self) -> bool {
        matches!(
            self.state,
            State::Authorization { .. } | State::Sasl(_) | State::Transaction
        )
    }

    /// Octets received and not yet processed.
    pub fn buffered(&self) -> usize {
        self.input.len()
    }

    fn process(&mut self) {
        loop {
            if !self.wants_input() {
                return;
            }
            let Some(line) = self.input.next_line() else {
                return;
            };
            let line = match line {
                Line::Text(line) => line,
                Line::TooLong => {
                    if let State::Sasl(_) = self.state {
                        self.state = State::Authorization { user: None };
                    }
                    self.refuse(Reply::err("line too long"));
                    continue;
                }
            };
            match std::mem::replace(&mut self.state, State::Closed) {
                State::Sasl(mut sasl) => {
                    let step = sasl.step(&String::from_utf8_lossy(&line));
                    self.sasl_step(sasl, step);
                }
                State::Authorization { user } => {
                    self.state = State::Authorization { user: None };
                    match command::parse(&line) {
                        Ok(command) => self.authorization(command, user),
                        Err(refusal) => self.refuse_parse(refusal),
                    }
                }
                State::Transaction => {
                    self.state = State::Transaction;
                    match command::parse(&line) {
                        Ok(command) => self.transaction(command),
                        Err(refusal) => self.refuse_parse(refusal),
                    }
                }
                other => self.state = other,
            }
        }
    }

    fn reply(&mut self, reply: Reply) {
        self.out.push_back(Event::Reply(reply));
    }

    fn refuse(&mut self, reply: Reply) {
        self.reply(reply);
        self.errors = self.errors.saturating_add(1);
        if self.errors >= self.config.max_invalid_commands {
            self.close_with(Reply::err("too many errors, closing connection"));
        }
    }

    fn refuse_parse(&mut self, refusal: Refusal) {
        match refusal {
            Refusal::Unknown => self.refuse(Reply::err("unknown command")),
            Refusal::Syntax(usage) => self.refuse(Reply::err(format!("syntax: {usage}"))),
        }
    }

    fn close_with(&mut self, reply: Reply) {
        self.reply(reply);
        self.out.push_back(Event::Close);
        self.state = State::Closed;
    }

    fn ask(&mut self, pending: Pending, request: Request) {
        self.out.push_back(Event::Request(request));
        self.state = State::Waiting(pending);
    }

    /// May a password cross this connection? (TLS, or configured; never with `sparequired`.)
    fn clear_text_refusal(&self) -> Option<Reply> {
        if self.config.spa_required {
            Some(Reply::err_code(
                RespCode::Auth,
                "clear-text login refused: Secure Password Authentication is required",
            ))
        } else if !self.tls && !self.config.plaintext_allowed {
            Some(Reply::err_code(
                RespCode::Auth,
                "clear-text login refused without TLS; use STLS first",
            ))
        } else {
            None
        }
    }

    fn mechanisms(&self) -> Vec<Mechanism> {
        let mut offered = Vec::new();
        if self.clear_text_refusal().is_none() {
            offered.extend([Mechanism::Plain, Mechanism::Login]);
        }
        if self.config.offer_cram_md5 {
            offered.push(Mechanism::CramMd5);
        }
        offered
    }

    fn capabilities(&self, authorization: bool) -> Reply {
        let mut lines: Vec<String> = vec!["TOP".into()];
        if self.clear_text_refusal().is_none() {
            lines.push("USER".into());
        }
        lines.extend(["UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"].map(String::from));
        let mechanisms = self.mechanisms();
        if !mechanisms.is_empty() {
            let names: Vec<&str> = mechanisms.iter().map(|m| m.name()).collect();
            lines.push(format!("SASL {}", names.join(" ")));
        }
        if authorization && !self.tls && self.config.starttls_available {
            lines.push("STLS".into());
        }
        lines.push("IMPLEMENTATION dirmail".into());
        Reply::Lines {
            first: "capability list follows".into(),
            lines,
        }
    }

    fn authorization(&mut self, command: Command, user: Option<String>) {
        match command {
            Command::Capa => self.reply(self.capabilities(true)),
            Command::Noop => self.reply(Reply::ok("")),
            Command::Quit => self.close_with(Reply::ok(format!(
                "{} POP3 server signing off",
                self.config.hostname
            ))),
            Command::Stls => {
                if self.tls {
                    self.refuse(Reply::err("TLS already active"));
                } else if !self.config.starttls_available {
                    self.refuse(Reply::err("STLS not available"));
                } else {
                    self.reply(Reply::ok("begin TLS negotiation"));
                    self.out.push_back(Event::StartTls);
                    self.input.clear();
                    self.state = State::AwaitingTls;
                }
            }
            Command::User(name) => match self.clear_text_refusal() {
                Some(refusal) => self.refuse(refusal),
                None => {
                    self.state = State::Authorization { user: Some(name) };
                    self.reply(Reply::ok("send PASS"));
                }
            },
            Command::Pass(password) => match (user, self.clear_text_refusal()) {
                (_, Some(refusal)) => self.refuse(refusal),
                (None, None) => self.refuse(Reply::err("send USER first")),
                (Some(username), None) => self.ask(
                    Pending::Auth,
                    Request::Authenticate(Credentials {
                        authzid: None,
                        username,
                        proof: Proof::Password(password),
                    }),
                ),
            },
            Command::Apop { name, digest } => self.ask(
                Pending::Auth,
                Request::Authenticate(Credentials {
                    authzid: None,
                    username: name,
                    proof: Proof::Apop {
                        timestamp: self.config.apop_timestamp.clone(),
                        digest,
                    },
                }),
            ),
            Command::Auth {
                mechanism: None, ..
            } => {
                let lines = self
                    .mechanisms()
                    .iter()
                    .map(|m| m.name().to_owned())
                    .collect();
                self.reply(Reply::Lines {
                    first: "SASL mechanisms follow".into(),
                    lines,
                });
            }
            Command::Auth {
                mechanism: Some(name),
                initial,
            } => match Mechanism::parse(&name) {
                Some(mechanism) if self.mechanisms().contains(&mechanism) => {
                    let (sasl, step) =
                        Sasl::start(mechanism, initial.as_deref(), &self.config.apop_timestamp);
                    self.sasl_step(sasl, step);
                }
                Some(mechanism) if mechanism.is_clear_text() => {
                    let refusal = self
                        .clear_text_refusal()
                        .unwrap_or_else(|| Reply::err("unsupported mechanism"));
                    self.refuse(refusal);
                }
                _ => self.refuse(Reply::err("unsupported mechanism")),
            },
            Command::Stat
            | Command::List(_)
            | Command::Uidl(_)
            | Command::Retr(_)
            | Command::Top(..)
            | Command::Dele(_)
            | Command::Rset => self.refuse(Reply::err("log in first")),
        }
    }

    fn sasl_step(&mut self, sasl: Sasl, step: Step) {
        match step {
            Step::Challenge(challenge) => {
                self.reply(Reply::Challenge(challenge));
                self.state = State::Sasl(sasl);
            }
            Step::Done(credentials) => self.ask(Pending::Auth, Request::Authenticate(credentials)),
            Step::Failed(error) => {
                self.state = State::Authorization { user: None };
                let text = match error {
                    SaslError::Cancelled | SaslError::Finished => "authentication cancelled".into(),
                    SaslError::InvalidBase64 => "invalid base64 data".into(),
                    SaslError::Malformed(why) => format!("malformed response: {why}"),
                };
                self.refuse(Reply::err(text));
            }
        }
    }

    fn auth_answer(&mut self, response: Response) {
        self.state = State::Authorization { user: None };
        match response {
            Response::Ok { mailbox } => {
                self.ask(Pending::Open, Request::OpenMailbox { mailbox });
            }
            Response::BadCredentials => self.refuse(Reply::err_code(
                RespCode::Auth,
                "invalid user name or password",
            )),
            Response::Locked => self.reply(Reply::err_code(
                RespCode::SysPerm,
                "mailbox locked by the administrator",
            )),
            _ => self.reply(Reply::err_code(
                RespCode::SysTemp,
                "the account directory is unavailable, try again later",
            )),
        }
    }

    fn open_answer(&mut self, response: Response) {
        match response {
            Response::Opened(messages) => {
                let deleted = vec![false; messages.len()];
                let maildrop = Maildrop { messages, deleted };
                let (n, octets) = maildrop.totals();
                self.maildrop = Some(maildrop);
                self.state = State::Transaction;
                self.reply(Reply::ok(format!(
                    "maildrop has {n} messages ({octets} octets)"
                )));
            }
            Response::InUse => {
                self.state = State::Authorization { user: None };
                self.reply(Reply::err_code(
                    RespCode::InUse,
                    "the mailbox is in use by another session",
                ));
            }
            _ => {
                self.state = State::Authorization { user: None };
                self.reply(Reply::err_code(
                    RespCode::SysTemp,
                    "the mailbox cannot be opened now, try again later",
                ));
            }
        }
    }

    fn transaction(&mut self, command: Command) {
        let Some(maildrop) = &mut self.maildrop else {
            return self.close_with(Reply::err_code(RespCode::SysTemp, "no maildrop"));
        };
        let reply = match command {
            Command::Capa => self.capabilities(false),
            Command::Noop => Reply::ok(""),
            Command::Stat => {
                let (n, octets) = maildrop.totals();
                Reply::ok(format!("{n} {octets}"))
            }
            Command::List(None) => {
                let (n, octets) = maildrop.totals();
                Reply::Lines {
                    first: format!("{n} messages ({octets} octets)"),
                    lines: maildrop
                        .live()
                        .map(|(i, m)| format!("{} {}", i + 1, m.size))
                        .collect(),
                }
            }
            Command::Uidl(None) => Reply::Lines {
                first: "unique-id listing follows".into(),
                lines: maildrop
                    .live()
                    .map(|(i, m)| format!("{} {}", i + 1, m.uid))
                    .collect(),
            },
            Command::List(Some(n)) | Command::Uidl(Some(n)) => {
                let uidl = matches!(command, Command::Uidl(_));
                match maildrop.find(n) {
                    Ok(index) => match maildrop.messages.get(index) {
                        Some(m) if uidl => Reply::ok(format!("{n} {}", m.uid)),
                        Some(m) => Reply::ok(format!("{n} {}", m.size)),
                        None => Reply::err("no such message"),
                    },
                    Err(refusal) => refusal,
                }
            }
            Command::Retr(n) | Command::Top(n, _) => {
                let top_lines = match command {
                    Command::Top(_, lines) => Some(lines),
                    _ => None,
                };
                match maildrop.find(n) {
                    Ok(index) => {
                        let Some(message) = maildrop.messages.get(index) else {
                            return self.reply(Reply::err("no such message"));
                        };
                        let pending = Pending::Retrieve {
                            top_lines,
                            size: message.size,
                        };
                        let request = Request::Retrieve {
                            index,
                            uid: message.uid.clone(),
                            top_lines,
                        };
                        return self.ask(pending, request);
                    }
                    Err(refusal) => refusal,
                }
            }
            Command::Dele(n) => match maildrop.find(n) {
                Ok(index) => {
                    if let Some(mark) = maildrop.deleted.get_mut(index) {
                        *mark = true;
                    }
                    Reply::ok(format!("message {n} deleted"))
                }
                Err(refusal) => refusal,
            },
            Command::Rset => {
                maildrop.deleted.iter_mut().for_each(|mark| *mark = false);
                let (n, octets) = maildrop.totals();
                Reply::ok(format!("maildrop has {n} messages ({octets} octets)"))
            }
            Command::Quit => {
                let delete = maildrop
                    .messages
                    .iter()
                    .zip(&maildrop.deleted)
                    .filter(|(_, deleted)| **deleted)
                    .map(|(m, _)| m.uid.clone())
                    .collect();
                let left = maildrop.totals().0;
                return self.ask(Pending::Commit { left }, Request::Commit { delete });
            }
            Command::User(_)
            | Command::Pass(_)
            | Command::Apop { .. }
            | Command::Auth { .. }
            | Command::Stls => return self.refuse(Reply::err("already logged in")),
        };
        if reply.is_ok() {
            self.reply(reply);
        } else {
            self.refuse(reply);
        }
    }

    /// The server is stopping: `-ERR [SYS/TEMP]`, then close, deleting nothing (R20).
    pub fn stop(&mut self) {
        if !self.is_closed() {
            self.close_with(Reply::shutting_down());
        }
    }
}
