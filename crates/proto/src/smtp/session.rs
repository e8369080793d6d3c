//! The SMTP session core (docs/spec.md §6): bytes in, [`Event`]s out, no socket, clock or
//! directory.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::address::{ForwardPath, RcptAddress, RcptDecision, decide_recipient};
use super::command::{self, Command};
use super::data::{DataOutcome, DataReader};
use super::reply::Reply;
use crate::auth::{Credentials, Mechanism, Sasl, SaslError, Step};
use crate::{InputBuffer, Line};

/// Which port the session arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The MX port (25): mail from anywhere to the local domains; AUTH optional.
    Relay,
    /// RFC 6409 submission (587): AUTH required before MAIL.
    Submission,
    /// RFC 8314 submission over implicit TLS (465): AUTH required before MAIL.
    ImplicitTls,
}

/// What a session needs to know; built by the driver per connection.
#[derive(Debug, Clone)]
pub struct Config {
    /// This server's name, in the greeting, EHLO and `Received:`.
    pub hostname: String,
    pub listener: Listener,
    /// RFC 1870 `SIZE`: larger messages are refused (552 5.3.4).
    pub max_message_size: u64,
    /// Longest command line (RFC 5321 says 512; AUTH responses need more, RFC 4954: 12288).
    pub max_line_length: usize,
    /// A certificate is loaded, so STARTTLS can be offered.
    pub starttls_available: bool,
    /// Offer AUTH before TLS (only for test rigs or trusted networks).
    pub plaintext_auth_without_tls: bool,
    /// Offer CRAM-MD5: some accounts have a readable mail secret (docs/spec.md §10).
    pub offer_cram_md5: bool,
    /// The CRAM-MD5 challenge `<random.timestamp@hostname>`, made unique by the driver.
    pub cram_challenge: String,
    /// R16: peers allowed to relay without authenticating.
    pub relay_allow: Vec<IpNet>,
    /// An authenticated sender may use only its own addresses in `MAIL FROM`.
    pub require_own_sender: bool,
    pub max_recipients: usize,
    /// Refusals (5xx for client mistakes, failed AUTH, refused recipients) before `421`.
    pub max_invalid_commands: u32,
    /// Idle time allowed while waiting for a command (RFC 5321 §4.5.3.2: 5 minutes; the
    /// driver sets `[limits] smtp_command_timeout`).
    pub command_timeout: Duration,
    /// Idle time allowed inside DATA (RFC 5321: 3 minutes per block, 10 for the end; the
    /// driver sets `[limits] smtp_data_timeout`).
    pub data_timeout: Duration,
}

impl Config {
    /// Defaults for the MX port.
    pub fn new(hostname: impl Into<String>) -> Self {
        Config {
            hostname: hostname.into(),
            listener: Listener::Relay,
            max_message_size: 25 * 1024 * 1024,
            max_line_length: 4096,
            starttls_available: true,
            plaintext_auth_without_tls: false,
            offer_cram_md5: false,
            cram_challenge: String::new(),
            relay_allow: Vec::new(),
            require_own_sender: true,
            max_recipients: 100,
            max_invalid_commands: 20,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
        }
    }
}

/// What the core wants done, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Write these bytes ([`Reply::to_bytes`]).
    Reply(Reply),
    /// Do this and call [`Session::answer`]; no input is read until then.
    Request(Request),
    /// Write the replies before it, do the TLS handshake, then call [`Session::tls_started`].
    StartTls,
    /// Close the connection once the replies before it are written.
    Close,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Check these credentials → [`Response::AuthOk`], [`Response::BadCredentials`] or
    /// [`Response::TempFail`].
    Authenticate(Credentials),
    /// Is this a local recipient? → [`Response::Local`], [`Response::LocalUnknown`],
    /// [`Response::AliasLoop`], [`Response::NotLocal`] or [`Response::TempFail`]. Never asked for a routed path (R16).
    CheckRecipient(RcptAddress),
    /// DATA may start: make a spool file in the store for the message and write this trace
    /// header at its head, dated by the driver → [`Response::Opened`] (then `354`),
    /// [`Response::DiskFull`] or [`Response::TempFail`]. The message arrives in pieces after it,
    /// so a session holds at most one piece ([`super::data::PIECE`]) whatever the size.
    OpenMessage(ReceivedHeader),
    /// The next piece of the message (CRLF line endings, dots un-stuffed), to append to the
    /// spool file → [`Response::Appended`], [`Response::DiskFull`] or [`Response::TempFail`].
    /// After a failure the core reads to the end of the data, asks [`Request::DiscardMessage`]
    /// and gives the failure's reply.
    AppendMessage(Vec<u8>),
    /// Append the last piece and store the spooled message (R15 on its whole size, then R18)
    /// → [`Response::Delivered`], [`Response::QuotaExceeded`], [`Response::DiskFull`] or
    /// [`Response::TempFail`]. Whatever the answer, the spool file is then gone.
    Deliver(Delivery),
    /// Remove the spool file: the message is refused (R19, too big) or could not be spooled
    /// → [`Response::Discarded`]. A connection that drops mid-DATA asks nothing; the driver
    /// removes the file itself.
    DiscardMessage,
}

/// One accepted message, whose content is in the spool file (with its trace header) but for
/// `tail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The reverse-path as written; empty for the null sender `<>`.
    pub envelope_from: String,
    pub recipients: Vec<Recipient>,
    /// The last piece of the content: CRLF line endings, dots un-stuffed, without the final
    /// `.` line.
    pub tail: Vec<u8>,
}

/// An accepted recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The forward-path as written.
    pub address: String,
    pub target: Target,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The driver's opaque key from [`Response::Local`].
    Local { mailbox: String },
    /// Outside the local domains, accepted because the client may relay (R16).
    Relay,
}

/// The `Received:` trace header (RFC 5321 §4.4), less its date, which the core cannot know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedHeader {
    pub helo: String,
    pub peer: IpAddr,
    pub hostname: String,
    /// RFC 3848: `SMTP`, `ESMTP`, `ESMTPS`, `ESMTPA` or `ESMTPSA`.
    pub protocol: &'static str,
    /// The recipient, named only when there is exactly one.
    pub for_recipient: Option<String>,
    /// The connection is encrypted (`protocol` says so only after EHLO), for the log.
    pub tls: bool,
}

impl ReceivedHeader {
    /// The header with its CRLF, folded.
    pub fn render(&self, date: &str) -> String {
        let peer = match self.peer {
            IpAddr::V4(v4) => format!("[{v4}]"),
            IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
        };
        // Nothing the client wrote may bring a control character into the header.
        let clean = |text: &str| -> String {
            text.chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect()
        };
        let helo = clean(&self.helo);
        let mut header = format!(
            "Received: from {helo} ({peer})\r\n\tby {} (dirmail) with {}",
            self.hostname, self.protocol
        );
        if let Some(rcpt) = &self.for_recipient {
            header.push_str(&format!("\r\n\tfor <{}>", clean(rcpt)));
        }
        header.push_str(&format!("; {date}\r\n"));
        header
    }
}

/// The driver's answer to the outstanding [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Authenticated as `identity`, who may send as `own_addresses`.
    AuthOk {
        identity: String,
        own_addresses: Vec<String>,
    },
    BadCredentials,
    /// A local recipient; `quota_left` is the room left in octets, when the mailbox has a quota.
    Local {
        mailbox: String,
        quota_left: Option<u64>,
    },
    /// R17: a local domain, no such mailbox.
    LocalUnknown,
    /// R28: a local address whose aliases loop (or nest too deep): refused, never retried.
    AliasLoop,
    NotLocal,
    /// The spool file is made and holds the trace header.
    Opened,
    /// The piece is in the spool file.
    Appended,
    /// The spool file is removed.
    Discarded,
    Delivered,
    QuotaExceeded,
    DiskFull,
    /// The directory or store is unavailable right now (any request).
    TempFail,
}

/// The lookup result R16 decides on (see [`decide_recipient`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientLookup {
    Local {
        mailbox: String,
        quota_left: Option<u64>,
    },
    LocalUnknown,
    AliasLoop,
    NotLocal,
    TempFail,
}

/// The reply to the end of DATA for the driver's answer to [`Request::Deliver`]; the driver
/// logs it beside each recipient's outcome.
pub fn delivery_reply(response: &Response) -> Reply {
    match response {
        Response::Delivered => Reply::delivered(),
        Response::QuotaExceeded => Reply::quota_exceeded(),
        Response::DiskFull => Reply::disk_full(),
        _ => Reply::delivery_temp_fail(),
    }
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
const MAX_PENDING_INPUT: usize = 256 * 1024;

#[derive(Debug)]
enum Pending {
    Auth,
    Recipient {
        address: String,
    },
    /// The spool file for DATA.
    Open,
    /// A piece of the message being written to the spool file.
    Append(Incoming),
    Deliver,
    /// The spool file being removed; then this reply.
    Discard(Reply),
}

/// A message coming in: the DATA reader, and the reply to give at its end when the spool
/// failed on the way (the message is then read to its end and dropped).
#[derive(Debug)]
struct Incoming {
    reader: DataReader,
    failure: Option<Reply>,
}

#[derive(Debug)]
enum State {
    Command,
    Sasl(Sasl),
    Data(Incoming),
    Waiting(Pending),
    AwaitingTls,
    Closed,
}

#[derive(Debug)]
struct Helo {
    name: String,
    esmtp: bool,
}

#[derive(Debug)]
struct Authenticated {
    own_addresses: Vec<String>,
}

#[derive(Debug)]
struct Transaction {
    from: String,
    size: Option<u64>,
    recipients: Vec<Recipient>,
}

/// One SMTP connection's protocol state.
#[derive(Debug)]
pub struct Session {
    config: Config,
    peer: IpAddr,
    tls: bool,
    input: InputBuffer,
    out: VecDeque<Event>,
    state: State,
    helo: Option<Helo>,
    auth: Option<Authenticated>,
    tx: Option<Transaction>,
    errors: u32,
    last_input: Instant,
}

impl Session {
    /// `tls` is true when the connection is already encrypted (implicit TLS).
    pub fn new(config: Config, peer: IpAddr, tls: bool, now: Instant) -> Self {
        let input = InputBuffer::new(config.max_line_length);
        Session {
            config,
            peer: peer.to_canonical(),
            tls,
            input,
            out: VecDeque::new(),
            state: State::Command,
            helo: None,
            auth: None,
            tx: None,
            errors: 0,
            last_input: now,
        }
    }

    pub fn greeting(&self) -> Reply {
        Reply::greeting(&self.config.hostname)
    }

    /// Bytes from the client. Partial lines wait for more.
    pub fn feed(&mut self, bytes: &[u8], now: Instant) {
        match self.state {
            State::Closed => return,
            // R19: plaintext sent after STARTTLS, before the handshake, is never read.
            State::AwaitingTls => return,
            _ => {}
        }
        self.last_input = now;
        self.input.push(bytes);
        self.process();
        if self.input.len() > MAX_PENDING_INPUT.max(self.config.max_line_length) {
            self.input.clear();
            self.close_with(Reply::input_overrun(&self.config.hostname));
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
                Response::AuthOk { .. } | Response::BadCredentials | Response::TempFail
            ) | (
                Pending::Recipient { .. },
                Response::Local { .. }
                    | Response::LocalUnknown
                    | Response::AliasLoop
                    | Response::NotLocal
                    | Response::TempFail
            ) | (
                Pending::Open,
                Response::Opened | Response::DiskFull | Response::TempFail
            ) | (
                Pending::Append(_),
                Response::Appended | Response::DiskFull | Response::TempFail
            ) | (Pending::Discard(_), Response::Discarded)
                | (
                    Pending::Deliver,
                    Response::Delivered
                        | Response::QuotaExceeded
                        | Response::DiskFull
                        | Response::TempFail
                )
        );
        if !fits {
            return Err(AnswerError::Mismatch);
        }
        let State::Waiting(pending) = std::mem::replace(&mut self.state, State::Command) else {
            return Err(AnswerError::NothingAsked);
        };
        match pending {
            Pending::Auth => self.auth_answer(response),
            Pending::Recipient { address } => self.recipient_answer(address, response),
            Pending::Open => self.open_answer(response),
            Pending::Append(incoming) => self.append_answer(incoming, response),
            Pending::Deliver => self.deliver_answer(response),
            Pending::Discard(reply) => self.reply(reply),
        }
        self.process();
        Ok(())
    }

    /// The TLS handshake after [`Event::StartTls`] is done. RFC 3207 §4.2: the session starts
    /// over (no EHLO, no AUTH), and nothing received before the handshake is used (R19).
    pub fn tls_started(&mut self, now: Instant) {
        self.input.clear();
        self.tls = true;
        self.helo = None;
        self.auth = None;
        self.tx = None;
        self.last_input = now;
        if matches!(self.state, State::AwaitingTls) {
            self.state = State::Command;
        }
    }

    /// When the driver should call [`Self::timeout`]; `None` while the driver is busy for the
    /// core (a request, the TLS handshake) or the session is over.
    pub fn deadline(&self) -> Option<Instant> {
        let idle = match self.state {
            State::Command | State::Sasl(_) => self.config.command_timeout,
            State::Data(_) => self.config.data_timeout,
            State::Waiting(_) | State::AwaitingTls | State::Closed => return None,
        };
        self.last_input.checked_add(idle)
    }

    /// Closes the session with `421` when its deadline has passed.
    pub fn timeout(&mut self, now: Instant) {
        if self.deadline().is_some_and(|deadline| now >= deadline) {
            self.close_with(Reply::timeout(&self.config.hostname));
        }
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// True when the core will read input now (no request outstanding, not closed).
    pub fn wants_input(&self) -> bool {
        matches!(self.state, State::Command | State::Sasl(_) | State::Data(_))
    }

    /// True once AUTH succeeded.
    pub fn is_authenticated(&self) -> bool {
        self.auth.is_some()
    }

    /// True while the client sends a message (inside DATA), where only the DATA timeout applies.
    pub fn in_data(&self) -> bool {
        matches!(self.state, State::Data(_))
    }

    /// Octets received and not yet processed.
    pub fn buffered(&self) -> usize {
        self.input.len()
    }

    fn process(&mut self) {
        loop {
            match std::mem::replace(&mut self.state, State::Command) {
                State::Data(mut incoming) => {
                    let used = incoming.reader.ingest(self.input.unread());
                    self.input.consume(used);
                    if incoming.reader.is_done() {
                        self.end_of_data(incoming);
                    } else if incoming.reader.piece_full() {
                        let piece = incoming.reader.take_piece();
                        self.ask(Pending::Append(incoming), Request::AppendMessage(piece));
                    } else {
                        self.state = State::Data(incoming);
                        return;
                    }
                }
                State::Command => match self.input.next_line() {
                    None => return,
                    Some(Line::TooLong) => self.refuse(Reply::line_too_long()),
                    Some(Line::Text(line)) => match command::parse(&line) {
                        Ok(command) => self.command(command),
                        Err(reply) => self.refuse(reply),
                    },
                },
                State::Sasl(mut sasl) => match self.input.next_line() {
                    None => {
                        self.state = State::Sasl(sasl);
                        return;
                    }
                    Some(Line::TooLong) => self.refuse(Reply::line_too_long()),
                    Some(Line::Text(line)) => {
                        let step = sasl.step(&String::from_utf8_lossy(&line));
                        self.sasl_step(sasl, step);
                    }
                },
                other @ (State::Waiting(_) | State::AwaitingTls | State::Closed) => {
                    self.state = other;
                    return;
                }
            }
        }
    }

    fn reply(&mut self, reply: Reply) {
        self.out.push_back(Event::Reply(reply));
    }

    /// A refusal that counts towards `max_invalid_commands`.
    fn refuse(&mut self, reply: Reply) {
        self.reply(reply);
        self.errors = self.errors.saturating_add(1);
        if self.errors >= self.config.max_invalid_commands {
            self.close_with(Reply::too_many_errors(&self.config.hostname));
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

    fn auth_offered(&self) -> bool {
        self.tls || self.config.plaintext_auth_without_tls
    }

    /// R16: may this client send to addresses outside the local domains (where every routed
    /// path counts)? Only when it has authenticated, or its address is in the relay allow list.
    fn r16_relay_permitted(&self) -> bool {
        self.auth.is_some()
            || self
                .config
                .relay_allow
                .iter()
                .any(|net| net.contains(&self.peer))
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Ehlo(name) => {
                self.tx = None;
                self.helo = Some(Helo { name, esmtp: true });
                let reply = self.ehlo_reply();
                self.reply(reply);
            }
            Command::Helo(name) => {
                self.tx = None;
                self.helo = Some(Helo { name, esmtp: false });
                self.reply(Reply::helo(&self.config.hostname));
            }
            Command::Mail { from, size } => self.mail(from, size),
            Command::Rcpt { path, well_formed } => self.rcpt(path, well_formed),
            Command::Data => match &self.tx {
                None => self.refuse(Reply::bad_sequence("Need MAIL command first")),
                Some(tx) if tx.recipients.is_empty() => self.refuse(Reply::no_valid_recipients()),
                Some(tx) => {
                    // The spool file first: a store that cannot take the message says so
                    // before the client sends it.
                    let received = self.received_header(tx);
                    self.ask(Pending::Open, Request::OpenMessage(received));
                }
            },
            Command::Rset => {
                self.tx = None;
                self.reply(Reply::reset());
            }
            Command::Noop => self.reply(Reply::ok()),
            Command::Quit => self.close_with(Reply::bye(&self.config.hostname)),
            Command::Vrfy => self.reply(Reply::vrfy()),
            Command::Help => self.reply(Reply::help()),
            Command::StartTls => {
                if self.tls {
                    self.refuse(Reply::bad_sequence("TLS already active"));
                } else if !self.config.starttls_available {
                    self.refuse(Reply::not_implemented());
                } else {
                    self.tx = None;
                    self.reply(Reply::ready_for_tls());
                    self.out.push_back(Event::StartTls);
                    // R19 (CVE-2011-0411): whatever was pipelined behind STARTTLS is dropped.
                    self.input.clear();
                    self.state = State::AwaitingTls;
                }
            }
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial),
            Command::NotImplemented => self.refuse(Reply::not_implemented()),
        }
    }

    fn ehlo_reply(&self) -> Reply {
        let helo = self.helo.as_ref().map_or("", |h| h.name.as_str());
        let mut lines = vec![
            format!("{} greets {helo}", self.config.hostname),
            "PIPELINING".into(),
            format!("SIZE {}", self.config.max_message_size),
            "8BITMIME".into(),
            "ENHANCEDSTATUSCODES".into(),
            "SMTPUTF8".into(),
        ];
        if !self.tls && self.config.starttls_available {
            lines.push("STARTTLS".into());
        }
        if self.auth_offered() {
            let mut auth = String::from("AUTH PLAIN LOGIN");
            if self.config.offer_cram_md5 {
                auth.push_str(" CRAM-MD5");
            }
            lines.push(auth);
        }
        lines.push("HELP".into());
        Reply::multi(250, None, lines)
    }

    fn mail(&mut self, from: String, size: Option<u64>) {
        if self.helo.is_none() {
            return self.refuse(Reply::bad_sequence("Send EHLO or HELO first"));
        }
        if self.tx.is_some() {
            return self.refuse(Reply::bad_sequence("Sender already specified"));
        }
        if self.config.listener != Listener::Relay && self.auth.is_none() {
            return self.refuse(Reply::auth_required());
        }
        if size.is_some_and(|size| size > self.config.max_message_size) {
            return self.reply(Reply::too_big());
        }
        if self.config.require_own_sender
            && let Some(auth) = &self.auth
            && !auth
                .own_addresses
                .iter()
                .any(|own| own.eq_ignore_ascii_case(&from))
        {
            return self.refuse(Reply::sender_not_owned());
        }
        self.tx = Some(Transaction {
            from,
            size,
            recipients: Vec::new(),
        });
        self.reply(Reply::sender_ok());
    }

    fn rcpt(&mut self, path: ForwardPath, well_formed: bool) {
        let Some(tx) = &self.tx else {
            return self.refuse(Reply::bad_sequence("Need MAIL command first"));
        };
        if tx.recipients.len() >= self.config.max_recipients {
            return self.reply(Reply::too_many_recipients());
        }
        match path {
            // R16: a routed path is decided here, without asking the driver.
            ForwardPath::Routed { raw, .. } => {
                if !self.r16_relay_permitted() {
                    self.refuse(Reply::relay_denied(&raw));
                } else if !well_formed {
                    self.refuse(Reply::bad_recipient_syntax());
                } else {
                    self.recipient_answer(raw, Response::NotLocal);
                }
            }
            ForwardPath::Invalid => self.refuse(Reply::bad_recipient_syntax()),
            ForwardPath::Checkable(_) if !well_formed => self.refuse(Reply::bad_recipient_syntax()),
            ForwardPath::Checkable(address) => {
                let written = address.as_written();
                self.ask(
                    Pending::Recipient { address: written },
                    Request::CheckRecipient(address),
                );
            }
        }
    }

    fn recipient_answer(&mut self, address: String, response: Response) {
        let lookup = match response {
            Response::Local {
                mailbox,
                quota_left,
            } => RecipientLookup::Local {
                mailbox,
                quota_left,
            },
            Response::LocalUnknown => RecipientLookup::LocalUnknown,
            Response::AliasLoop => RecipientLookup::AliasLoop,
            Response::NotLocal => RecipientLookup::NotLocal,
            _ => RecipientLookup::TempFail,
        };
        let permitted = self.r16_relay_permitted();
        let Some(tx) = &mut self.tx else {
            return self.refuse(Reply::bad_sequence("Need MAIL command first"));
        };
        let target = match decide_recipient(&lookup, permitted, tx.size) {
            RcptDecision::AcceptLocal { mailbox } => Target::Local { mailbox },
            RcptDecision::AcceptRelay => Target::Relay,
            RcptDecision::RefuseUnknown => return self.refuse(Reply::no_such_mailbox()),
            RcptDecision::RefuseLoop => return self.refuse(Reply::alias_loop()),
            RcptDecision::RefuseRelay => return self.refuse(Reply::relay_denied(&address)),
            RcptDecision::RefuseQuota => return self.reply(Reply::quota_exceeded()),
            RcptDecision::TempFail => return self.reply(Reply::lookup_temp_fail()),
        };
        // The same mailbox named twice (or postmaster and its owner) gets one copy.
        let duplicate = tx.recipients.iter().any(|r| match (&r.target, &target) {
            (Target::Local { mailbox: a }, Target::Local { mailbox: b }) => a == b,
            (Target::Relay, Target::Relay) => r.address.eq_ignore_ascii_case(&address),
            _ => false,
        });
        if !duplicate {
            tx.recipients.push(Recipient { address, target });
        }
        self.reply(Reply::recipient_ok());
    }

    fn auth(&mut self, mechanism: Option<Mechanism>, initial: Option<String>) {
        if !self.helo.as_ref().is_some_and(|h| h.esmtp) {
            return self.refuse(Reply::bad_sequence("Send EHLO first"));
        }
        if self.auth.is_some() {
            return self.refuse(Reply::bad_sequence("Already authenticated"));
        }
        if self.tx.is_some() {
            return self.refuse(Reply::bad_sequence(
                "AUTH not allowed during a mail transaction",
            ));
        }
        if !self.auth_offered() {
            return self.refuse(Reply::encryption_required());
        }
        let mechanism = match mechanism {
            Some(Mechanism::CramMd5) if !self.config.offer_cram_md5 => None,
            other => other,
        };
        let Some(mechanism) = mechanism else {
            return self.refuse(Reply::unknown_mechanism());
        };
        let (sasl, step) = Sasl::start(mechanism, initial.as_deref(), &self.config.cram_challenge);
        self.sasl_step(sasl, step);
    }

    fn sasl_step(&mut self, sasl: Sasl, step: Step) {
        match step {
            Step::Challenge(challenge) => {
                self.reply(Reply::auth_challenge(&challenge));
                self.state = State::Sasl(sasl);
            }
            Step::Done(credentials) => {
                self.ask(Pending::Auth, Request::Authenticate(credentials));
            }
            Step::Failed(SaslError::InvalidBase64) => self.refuse(Reply::auth_bad_base64()),
            Step::Failed(SaslError::Malformed(why)) => self.refuse(Reply::auth_malformed(why)),
            Step::Failed(SaslError::Cancelled | SaslError::Finished) => {
                self.refuse(Reply::auth_cancelled())
            }
        }
    }

    fn auth_answer(&mut self, response: Response) {
        match response {
            Response::AuthOk { own_addresses, .. } => {
                self.auth = Some(Authenticated { own_addresses });
                self.reply(Reply::auth_ok());
            }
            Response::BadCredentials => self.refuse(Reply::bad_credentials()),
            _ => self.reply(Reply::auth_temp_fail()),
        }
    }

    fn open_answer(&mut self, response: Response) {
        match response {
            Response::Opened => {
                self.reply(Reply::start_data());
                self.state = State::Data(Incoming {
                    reader: DataReader::new(self.config.max_message_size),
                    failure: None,
                });
            }
            // The transaction stays: the client may try DATA again, or RSET.
            Response::DiskFull => self.reply(Reply::disk_full()),
            _ => self.reply(Reply::delivery_temp_fail()),
        }
    }

    fn append_answer(&mut self, mut incoming: Incoming, response: Response) {
        if response != Response::Appended {
            // Read on to the end of the data (the client is still sending), keep nothing,
            // then say why.
            incoming.failure = Some(match response {
                Response::DiskFull => Reply::disk_full(),
                _ => Reply::delivery_temp_fail(),
            });
            incoming.reader.discard();
        }
        self.state = State::Data(incoming);
    }

    /// The end of the data: a good message is delivered from the spool; a refused one (R19,
    /// too big) or one the spool could not take is discarded, then refused.
    fn end_of_data(&mut self, incoming: Incoming) {
        let Incoming { reader, failure } = incoming;
        let tx = self.tx.take();
        let refusal = match reader.finish() {
            DataOutcome::BareLineEnding => Reply::bare_line_ending(),
            DataOutcome::Nul => Reply::nul_octets(),
            DataOutcome::TooBig => Reply::too_big(),
            DataOutcome::Message(tail) => match (failure, tx) {
                (Some(failure), _) => failure,
                (None, None) => Reply::bad_sequence("Need MAIL command first"),
                (None, Some(tx)) => {
                    let delivery = Delivery {
                        envelope_from: tx.from,
                        recipients: tx.recipients,
                        tail,
                    };
                    return self.ask(Pending::Deliver, Request::Deliver(delivery));
                }
            },
        };
        self.ask(Pending::Discard(refusal), Request::DiscardMessage);
    }

    fn received_header(&self, tx: &Transaction) -> ReceivedHeader {
        let esmtp = self.helo.as_ref().is_some_and(|h| h.esmtp);
        let protocol = match (esmtp, self.tls, self.auth.is_some()) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        };
        ReceivedHeader {
            helo: self
                .helo
                .as_ref()
                .map(|h| h.name.clone())
                .unwrap_or_default(),
            peer: self.peer,
            hostname: self.config.hostname.clone(),
            protocol,
            for_recipient: match tx.recipients.as_slice() {
                [only] => Some(only.address.clone()),
                _ => None,
            },
            tls: self.tls,
        }
    }

    fn deliver_answer(&mut self, response: Response) {
        self.reply(delivery_reply(&response));
    }

    /// The server is stopping: `421`, then close. The driver calls it only while the session
    /// waits for the client, so a delivery under way has finished first.
    pub fn stop(&mut self) {
        if !self.is_closed() {
            self.close_with(Reply::shutting_down(&self.config.hostname));
        }
    }
}
