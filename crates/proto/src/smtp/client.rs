//! The SMTP client core (RFC 5321 client side, docs/spec.md §11): the server's bytes in,
//! [`Event`]s out (bytes to write, "start TLS now", "send the body now", the outcome), for one
//! transaction on one connection. No socket, clock or DNS: the queue runner's driver connects,
//! keeps the RFC 5321 §4.5.3.2 timeouts ([`Client::current_timeout`]) and streams the body
//! through [`BodyEncoder`], so a message is never held whole in memory.
//!
//! What is temporary and what is permanent is decided here, once, so that every driver and
//! every bounce agrees (the list is in docs/spec.md §11).

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::reply::{Reply, Status};
use crate::names::Secret;
use crate::{InputBuffer, Line};

/// RFC 5321 §4.5.3.2.1: waiting for the `220` greeting.
pub const GREETING_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// RFC 5321 §4.5.3.2.2: the reply to `MAIL`.
pub const MAIL_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// RFC 5321 §4.5.3.2.3: the reply to each `RCPT`.
pub const RCPT_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// RFC 5321 §4.5.3.2.4: the `354` after `DATA`.
pub const DATA_INITIATION_TIMEOUT: Duration = Duration::from_secs(2 * 60);
/// RFC 5321 §4.5.3.2.5: each write of the body (a TCP SEND) must complete within this.
pub const DATA_BLOCK_TIMEOUT: Duration = Duration::from_secs(3 * 60);
/// RFC 5321 §4.5.3.2.6: the reply after the final `.`; the server may be delivering.
pub const DATA_TERMINATION_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// EHLO, HELO, STARTTLS, AUTH and QUIT have no RFC value; they get MAIL's.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Longest reply line kept, without CRLF. RFC 5321 §4.5.3.1.5 says 512 with CRLF; real servers
/// write longer texts, so four times that, and a longer line is a protocol violation.
pub const MAX_REPLY_LINE: usize = 2048;
/// Most lines in one reply (an EHLO list is a few dozen at most).
pub const MAX_REPLY_LINES: usize = 64;

/// What to do when the server does not offer STARTTLS (`[outbound] tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    /// STARTTLS whenever offered, clear text otherwise (RFC 7435).
    Opportunistic,
    /// No STARTTLS, or a refused one: a temporary failure (as MTA-STS, RFC 8461, treats it).
    Required,
}

/// Credentials for a smarthost: AUTH PLAIN or LOGIN, and only over TLS.
#[derive(Debug, Clone)]
pub struct Login {
    pub user: String,
    pub password: Secret,
}

/// The connection's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Our name, for EHLO/HELO.
    pub hostname: String,
    pub tls: TlsPolicy,
    pub login: Option<Login>,
}

/// One message's envelope, as the queue holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Without angle brackets; empty for the null reverse-path `<>` (bounces).
    pub reverse_path: String,
    /// Without angle brackets, in the order their outcomes are reported.
    pub recipients: Vec<String>,
    /// The message's size in octets, CRLF line endings (RFC 1870 `SIZE=`).
    pub size: u64,
    /// The message holds octets above 127 (needs `BODY=8BITMIME`, RFC 6152).
    pub eight_bit: bool,
    /// The header holds UTF-8 (RFC 6532: needs `SMTPUTF8`, as a non-ASCII address does).
    pub utf8_headers: bool,
}

/// [`Client::new`] refused the envelope or configuration: something that would put a line
/// break (or another control character) into a command, or nothing to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    #[error("the envelope has no recipient")]
    NoRecipients,
    #[error("a control character or angle bracket in {0}")]
    BadText(&'static str),
}

/// Bytes to write. Its `Debug` hides lines that carry credentials, so logging events is safe.
#[derive(Clone, PartialEq, Eq)]
pub struct Output {
    bytes: Vec<u8>,
    credentials: bool,
}

impl Output {
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.credentials {
            f.write_str("Output(<credentials>)")
        } else {
            write!(f, "Output({:?})", String::from_utf8_lossy(&self.bytes))
        }
    }
}

/// What the client wants done, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Write these bytes.
    Write(Output),
    /// Do the TLS handshake (nothing is pending), then call [`Client::tls_started`] or
    /// [`Client::tls_failed`].
    StartTls,
    /// Stream the message through a [`BodyEncoder`] (its `finish` writes the final `.`), then
    /// call [`Client::body_sent`].
    SendBody,
    /// The outcome, final; the client still reads the reply to QUIT, then says `Close`.
    Done(Outcome),
    /// Close the connection once what is pending is written.
    Close,
}

/// Delivered, or how it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Delivered,
    /// Retry later (4xx, a lost connection, TLS required and not offered, …).
    Temporary,
    /// Bounce (5xx, too big, content the server cannot take).
    Permanent,
}

/// A recipient's (or the session's) result and the reply it rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub disposition: Disposition,
    /// The remote server's reply, or, when `remote` is false, one we made to say why we did
    /// not send (it then reads as if a server had said it, for the log and the bounce).
    pub reply: Reply,
    pub remote: bool,
}

impl Verdict {
    fn remote(reply: Reply) -> Verdict {
        let disposition = match reply.code / 100 {
            2 => Disposition::Delivered,
            5 => Disposition::Permanent,
            _ => Disposition::Temporary,
        };
        Verdict {
            disposition,
            reply,
            remote: true,
        }
    }

    fn local(disposition: Disposition, code: u16, status: Status, text: &str) -> Verdict {
        Verdict {
            disposition,
            reply: Reply::new(code, Some(status), text),
            remote: false,
        }
    }

    /// The enhanced status for the log and the bounce: the reply's own when its class fits the
    /// disposition, else the class's generic one (`4.0.0`, `5.0.0`, `2.0.0`), or the reply's
    /// subject and detail under the disposition's class (a refused AUTH `5.7.8` is retried as
    /// `4.7.8`).
    pub fn status(&self) -> Status {
        let class = match self.disposition {
            Disposition::Delivered => 2,
            Disposition::Temporary => 4,
            Disposition::Permanent => 5,
        };
        match self.reply.status {
            Some(Status(_, subject, detail)) => Status(class, subject, detail),
            None => Status(class, 0, 0),
        }
    }
}

/// Why a whole session failed before its recipients were each answered. The queue runner
/// tries the next host of the destination on any of these (RFC 5321 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The greeting was not `220`.
    Greeting,
    /// EHLO and then HELO were refused.
    Hello,
    /// TLS is required and the server does not offer STARTTLS, or refused it.
    TlsUnavailable,
    /// The TLS handshake failed.
    TlsHandshake,
    /// AUTH is configured and could not be done (no TLS, no usable mechanism, refused).
    Auth,
    /// The server broke the protocol: garbage, an overlong line or reply, a reply to nothing.
    Protocol,
    /// The connection ended before the outcome was known.
    ConnectionLost,
    /// The driver's timer ran out ([`Client::current_timeout`]).
    Timeout,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionFailure {
    pub kind: FailureKind,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientOutcome {
    pub address: String,
    pub verdict: Verdict,
}

/// The end of a session: every recipient's verdict, in envelope order, and the session's
/// failure when that is what decided them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub recipients: Vec<RecipientOutcome>,
    pub session_failure: Option<SessionFailure>,
}

/// The extensions read from the EHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    pub pipelining: bool,
    /// RFC 1870: `Some(0)` offers SIZE without a limit.
    pub size: Option<u64>,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    pub starttls: bool,
    pub auth_plain: bool,
    pub auth_login: bool,
}

impl Extensions {
    /// Reads the EHLO reply's lines after the first (RFC 5321 §4.1.1.1: keyword, parameters).
    fn read(lines: &[String]) -> Extensions {
        let mut ext = Extensions::default();
        for line in lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => ext.pipelining = true,
                "SIZE" => ext.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "8BITMIME" => ext.eight_bit_mime = true,
                "SMTPUTF8" => ext.smtputf8 = true,
                "STARTTLS" => ext.starttls = true,
                "AUTH" => {
                    for mechanism in words {
                        match mechanism.to_ascii_uppercase().as_str() {
                            "PLAIN" => ext.auth_plain = true,
                            "LOGIN" => ext.auth_login = true,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        ext
    }
}

/// The reply each command written is waiting for, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    /// After `AUTH PLAIN <initial response>`, or the last step of LOGIN.
    AuthDone,
    AuthLoginUser,
    AuthLoginPassword,
    /// After `*`, which cancels an exchange the server wanted to continue.
    AuthCancel,
    Mail,
    Rcpt(usize),
    Data,
    Final,
    Quit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Commands and replies.
    Talking,
    /// The driver does the TLS handshake.
    Handshake,
    /// The driver streams the body.
    Body,
    /// The outcome is out; only QUIT's reply is awaited.
    Quitting,
    Closed,
}

/// A reply whose lines are still arriving.
#[derive(Debug, Default)]
struct PartialReply {
    code: Option<u16>,
    /// As received (each at most [`MAX_REPLY_LINE`] octets); made text once complete.
    lines: Vec<Vec<u8>>,
}

/// One SMTP client session: one transaction, then QUIT.
#[derive(Debug)]
pub struct Client {
    config: Config,
    envelope: Envelope,
    input: InputBuffer,
    out: VecDeque<Event>,
    expect: VecDeque<Wait>,
    phase: Phase,
    tls: bool,
    ext: Extensions,
    partial: PartialReply,
    /// One per envelope recipient; `None` until decided.
    verdicts: Vec<Option<Verdict>>,
    /// Recipients in the transaction (not refused before it), in the order RCPT is sent.
    sending: Vec<usize>,
    /// How many of `sending` have had RCPT written (without PIPELINING, one at a time).
    rcpt_written: usize,
    /// Recipients the server accepted with `250` to RCPT.
    accepted: Vec<usize>,
    /// MAIL was refused; under PIPELINING the RCPT replies are still read, then this decides.
    mail_refused: Option<Verdict>,
    session_failure: Option<SessionFailure>,
}

impl Client {
    /// A session that starts by reading the greeting. `tls` is true on an implicit-TLS
    /// connection (a smarthost on port 465).
    pub fn new(config: Config, envelope: Envelope, tls: bool) -> Result<Client, SetupError> {
        if envelope.recipients.is_empty() {
            return Err(SetupError::NoRecipients);
        }
        let bad = |text: &str| text.chars().any(|c| c.is_control() || c == '<' || c == '>');
        if bad(&config.hostname) || config.hostname.is_empty() || config.hostname.contains(' ') {
            return Err(SetupError::BadText("the host name"));
        }
        if bad(&envelope.reverse_path) {
            return Err(SetupError::BadText("the reverse-path"));
        }
        if envelope.recipients.iter().any(|r| bad(r) || r.is_empty()) {
            return Err(SetupError::BadText("a recipient"));
        }
        if let Some(login) = &config.login
            && (login.user.chars().any(char::is_control)
                || login.password.expose().chars().any(char::is_control))
        {
            return Err(SetupError::BadText("the login"));
        }
        let verdicts = vec![None; envelope.recipients.len()];
        Ok(Client {
            config,
            envelope,
            input: InputBuffer::new(MAX_REPLY_LINE),
            out: VecDeque::new(),
            expect: VecDeque::from([Wait::Greeting]),
            phase: Phase::Talking,
            tls,
            ext: Extensions::default(),
            partial: PartialReply::default(),
            verdicts,
            sending: Vec::new(),
            rcpt_written: 0,
            accepted: Vec::new(),
            mail_refused: None,
            session_failure: None,
        })
    }

    /// Bytes from the server.
    pub fn feed(&mut self, bytes: &[u8]) {
        match self.phase {
            Phase::Closed => return,
            Phase::Quitting => {
                // Whatever answers QUIT ends the session; the rest is not read.
                if bytes.contains(&b'\n') {
                    self.close();
                }
                return;
            }
            // The server spoke while it should have been waiting for us.
            Phase::Handshake | Phase::Body => {
                self.violation("the server wrote while it should have been reading");
                return;
            }
            Phase::Talking => {}
        }
        self.input.push(bytes);
        // Replies to the commands already on the wire; a command written while reading this
        // input was not, so a reply to it in the same input was sent before the command was
        // seen: a lying server, or an injection in front of STARTTLS.
        let mut answerable = self.expect.len();
        while self.phase == Phase::Talking {
            if answerable == 0 {
                if !self.input.is_empty() {
                    self.violation("the server replied to a command not sent");
                }
                return;
            }
            let Some(line) = self.input.next_line() else {
                return;
            };
            let Some(reply) = self.reply_line(line) else {
                continue;
            };
            answerable -= 1;
            self.handle(reply);
        }
        // Handling the last reply moved to the handshake or the body: nothing may follow it.
        if matches!(self.phase, Phase::Handshake | Phase::Body) && !self.input.is_empty() {
            self.violation("the server wrote while it should have been reading");
        }
    }

    /// The next thing to do, or `None` when the client needs input (or the driver's word).
    pub fn poll(&mut self) -> Option<Event> {
        self.out.pop_front()
    }

    /// The TLS handshake after [`Event::StartTls`] succeeded: EHLO again (RFC 3207 §4.2).
    pub fn tls_started(&mut self) {
        if self.phase != Phase::Handshake {
            return;
        }
        self.phase = Phase::Talking;
        self.tls = true;
        self.ext = Extensions::default();
        self.input.clear();
        self.send(Wait::Ehlo, format!("EHLO {}\r\n", self.config.hostname));
    }

    /// The TLS handshake failed; the connection is unusable.
    pub fn tls_failed(&mut self) {
        if self.phase != Phase::Handshake {
            return;
        }
        let verdict = Verdict::local(
            Disposition::Temporary,
            454,
            Status(4, 7, 5),
            "TLS handshake failed",
        );
        self.fail(FailureKind::TlsHandshake, verdict, false);
    }

    /// The body and its final `.` were written after [`Event::SendBody`].
    pub fn body_sent(&mut self) {
        if self.phase != Phase::Body {
            return;
        }
        self.phase = Phase::Talking;
        self.expect.push_back(Wait::Final);
    }

    /// The connection ended (EOF or an error) on the driver's side.
    pub fn connection_closed(&mut self) {
        match self.phase {
            Phase::Closed => {}
            Phase::Quitting => self.close(),
            _ => {
                // After the body, the server may have delivered already: retrying may send the
                // message twice (RFC 1047), which is better than losing it.
                let verdict = Verdict::local(
                    Disposition::Temporary,
                    421,
                    Status(4, 4, 2),
                    "Connection lost",
                );
                self.fail(FailureKind::ConnectionLost, verdict, false);
            }
        }
    }

    /// The driver's timer ([`Self::current_timeout`]) ran out.
    pub fn timed_out(&mut self) {
        match self.phase {
            Phase::Closed => {}
            Phase::Quitting => self.close(),
            _ => {
                let verdict = Verdict::local(
                    Disposition::Temporary,
                    421,
                    Status(4, 4, 2),
                    "Timed out waiting for the server",
                );
                self.fail(FailureKind::Timeout, verdict, false);
            }
        }
    }

    /// How long the driver may wait for what the client waits for now (RFC 5321 §4.5.3.2);
    /// while the body is written, the limit of each write. `None` during the handshake (the
    /// driver's own limit) and once closed.
    pub fn current_timeout(&self) -> Option<Duration> {
        match self.phase {
            Phase::Handshake | Phase::Closed => None,
            Phase::Body => Some(DATA_BLOCK_TIMEOUT),
            Phase::Quitting => Some(COMMAND_TIMEOUT),
            Phase::Talking => Some(match self.expect.front()? {
                Wait::Greeting => GREETING_TIMEOUT,
                Wait::Mail => MAIL_TIMEOUT,
                Wait::Rcpt(_) => RCPT_TIMEOUT,
                Wait::Data => DATA_INITIATION_TIMEOUT,
                Wait::Final => DATA_TERMINATION_TIMEOUT,
                _ => COMMAND_TIMEOUT,
            }),
        }
    }

    /// Octets of server input held: the lines of the reply being received, and at most one
    /// partial line.
    pub fn buffered(&self) -> usize {
        self.input.len() + self.partial.lines.iter().map(Vec::len).sum::<usize>()
    }

    /// The extensions of the last EHLO reply.
    pub fn extensions(&self) -> &Extensions {
        &self.ext
    }

    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Adds one line to the reply being received; returns the reply once its last line is in.
    fn reply_line(&mut self, line: Line) -> Option<Reply> {
        let Line::Text(text) = line else {
            self.violation("a reply line is too long");
            return None;
        };
        let Some((code, last, rest)) = parse_line(&text) else {
            self.violation("a reply line is not a reply");
            return None;
        };
        if self.partial.code.is_some_and(|first| first != code) {
            self.violation("the lines of one reply have different codes");
            return None;
        }
        if self.partial.lines.len() >= MAX_REPLY_LINES {
            self.violation("a reply has too many lines");
            return None;
        }
        self.partial.code = Some(code);
        self.partial.lines.push(rest.to_vec());
        if !last {
            return None;
        }
        let PartialReply { lines, .. } = std::mem::take(&mut self.partial);
        let lines = lines
            .iter()
            .map(|line| String::from_utf8_lossy(line).into_owned())
            .collect();
        Some(reply_from(code, lines))
    }

    fn handle(&mut self, reply: Reply) {
        let Some(wait) = self.expect.pop_front() else {
            self.violation("the server replied to a command not sent");
            return;
        };
        let class = reply.code / 100;
        match wait {
            Wait::Greeting => match class {
                2 => self.send(Wait::Ehlo, format!("EHLO {}\r\n", self.config.hostname)),
                4 | 5 => self.fail(FailureKind::Greeting, Verdict::remote(reply), true),
                _ => self.violation("the greeting is not 220"),
            },
            Wait::Ehlo => match class {
                2 => {
                    self.ext = Extensions::read(reply.lines());
                    self.after_hello();
                }
                // RFC 5321 §3.2: a server that does not know EHLO may know HELO.
                5 => self.send(Wait::Helo, format!("HELO {}\r\n", self.config.hostname)),
                4 => self.fail(FailureKind::Hello, Verdict::remote(reply), true),
                _ => self.violation("EHLO got a 3xx reply"),
            },
            Wait::Helo => match class {
                2 => {
                    self.ext = Extensions::default();
                    self.after_hello();
                }
                4 | 5 => self.fail(FailureKind::Hello, Verdict::remote(reply), true),
                _ => self.violation("HELO got a 3xx reply"),
            },
            Wait::StartTls => match class {
                2 => {
                    self.phase = Phase::Handshake;
                    self.out.push_back(Event::StartTls);
                }
                4 | 5 => match self.config.tls {
                    // RFC 3207 §4.1: the client may go on in clear text after a refusal.
                    TlsPolicy::Opportunistic => self.after_tls(),
                    TlsPolicy::Required => {
                        let verdict = Verdict {
                            disposition: Disposition::Temporary,
                            reply,
                            remote: true,
                        };
                        self.fail(FailureKind::TlsUnavailable, verdict, true);
                    }
                },
                _ => self.violation("STARTTLS got a 3xx reply"),
            },
            Wait::AuthLoginUser | Wait::AuthLoginPassword | Wait::AuthDone => {
                self.auth_reply(wait, reply)
            }
            Wait::AuthCancel => {
                // A wrong password in our configuration must not bounce the users' mail.
                let verdict = Verdict::local(
                    Disposition::Temporary,
                    454,
                    Status(4, 7, 0),
                    "The server wanted more of AUTH than PLAIN or LOGIN give",
                );
                self.fail(FailureKind::Auth, verdict, true);
            }
            Wait::Mail => self.mail_reply(reply),
            Wait::Rcpt(index) => self.rcpt_reply(index, reply),
            Wait::Data => match class {
                3 => {
                    self.phase = Phase::Body;
                    self.out.push_back(Event::SendBody);
                }
                4 | 5 => {
                    self.decide_accepted(Verdict::remote(reply));
                    self.quit();
                }
                _ => self.violation("DATA got a 2xx reply"),
            },
            Wait::Final => match class {
                2 | 4 | 5 => {
                    self.decide_accepted(Verdict::remote(reply));
                    self.quit();
                }
                _ => self.violation("the end of the data got a 3xx reply"),
            },
            // `feed` handles Quitting before any reply is read.
            Wait::Quit => self.close(),
        }
    }

    /// After EHLO or HELO: STARTTLS, AUTH, then the transaction.
    fn after_hello(&mut self) {
        if !self.tls && self.ext.starttls {
            self.send(Wait::StartTls, "STARTTLS\r\n".to_owned());
        } else if !self.tls && self.config.tls == TlsPolicy::Required {
            let verdict = Verdict::local(
                Disposition::Temporary,
                454,
                Status(4, 7, 4),
                "TLS is required, but the server does not offer STARTTLS",
            );
            self.fail(FailureKind::TlsUnavailable, verdict, true);
        } else {
            self.after_tls();
        }
    }

    fn after_tls(&mut self) {
        let Some(login) = &self.config.login else {
            self.transaction();
            return;
        };
        let refuse =
            |text: &str| Verdict::local(Disposition::Temporary, 454, Status(4, 7, 0), text);
        if !self.tls {
            let verdict = refuse("AUTH is configured, and credentials go only over TLS");
            self.fail(FailureKind::Auth, verdict, true);
        } else if self.ext.auth_plain {
            let token = format!("\0{}\0{}", login.user, login.password.expose());
            let line = format!("AUTH PLAIN {}\r\n", BASE64.encode(token));
            self.send_credentials(Wait::AuthDone, line);
        } else if self.ext.auth_login {
            self.send(Wait::AuthLoginUser, "AUTH LOGIN\r\n".to_owned());
        } else {
            let verdict =
                refuse("AUTH is configured, and the server offers neither PLAIN nor LOGIN");
            self.fail(FailureKind::Auth, verdict, true);
        }
    }

    fn auth_reply(&mut self, wait: Wait, reply: Reply) {
        let Some(login) = &self.config.login else {
            self.violation("an AUTH reply without AUTH");
            return;
        };
        match (wait, reply.code) {
            (Wait::AuthDone, 200..=299) => self.transaction(),
            (Wait::AuthLoginUser, 334) => {
                let line = format!("{}\r\n", BASE64.encode(&login.user));
                self.send_credentials(Wait::AuthLoginPassword, line);
            }
            (Wait::AuthLoginPassword, 334) => {
                let line = format!("{}\r\n", BASE64.encode(login.password.expose()));
                self.send_credentials(Wait::AuthDone, line);
            }
            // More challenges than the mechanism has: cancel (RFC 4954 §4), then give up.
            (_, 334) => self.send(Wait::AuthCancel, "*\r\n".to_owned()),
            (_, 400..=599) => {
                // RFC 4954's 535 is our configuration's fault, not the recipients': retried.
                let verdict = Verdict {
                    disposition: Disposition::Temporary,
                    reply,
                    remote: true,
                };
                self.fail(FailureKind::Auth, verdict, true);
            }
            _ => self.violation("an unexpected reply to AUTH"),
        }
    }

    /// Refuses before MAIL what the server cannot take (SIZE, 8BITMIME, SMTPUTF8), then sends
    /// MAIL and the RCPTs: all in one write under PIPELINING (RFC 2920), else one by one.
    fn transaction(&mut self) {
        let env = &self.envelope;
        let needs_utf8 = env.utf8_headers || !env.reverse_path.is_ascii();
        let whole = if needs_utf8 && !self.ext.smtputf8 {
            // RFC 6531 §3.2: no downgrade here, so the message cannot go to this server.
            let (status, text) = if env.utf8_headers {
                (
                    Status(5, 6, 9),
                    "The message has UTF-8 headers, and the server does not offer SMTPUTF8",
                )
            } else {
                (
                    Status(5, 6, 7),
                    "The sender's address is not ASCII, and the server does not offer SMTPUTF8",
                )
            };
            Some(Verdict::local(Disposition::Permanent, 553, status, text))
        } else if self
            .ext
            .size
            .is_some_and(|limit| limit > 0 && env.size > limit)
        {
            Some(Verdict::local(
                Disposition::Permanent,
                552,
                Status(5, 3, 4),
                "Message size exceeds the server's fixed maximum message size",
            ))
        } else if env.eight_bit && !self.ext.eight_bit_mime {
            // RFC 6152 §3: convert to 7 bit or treat as permanent; we do not convert.
            Some(Verdict::local(
                Disposition::Permanent,
                554,
                Status(5, 6, 3),
                "The message has 8-bit content, and the server does not offer 8BITMIME",
            ))
        } else {
            None
        };
        if let Some(verdict) = whole {
            self.decide_all(&verdict);
            self.quit();
            return;
        }
        let mut sending = Vec::new();
        for (index, address) in env.recipients.iter().enumerate() {
            if address.is_ascii() || self.ext.smtputf8 {
                sending.push(index);
            } else if let Some(slot) = self.verdicts.get_mut(index) {
                *slot = Some(Verdict::local(
                    Disposition::Permanent,
                    553,
                    Status(5, 6, 7),
                    "The recipient's address is not ASCII, and the server does not offer SMTPUTF8",
                ));
            }
        }
        if sending.is_empty() {
            self.quit();
            return;
        }
        let smtputf8 = self.ext.smtputf8
            && (needs_utf8
                || sending
                    .iter()
                    .filter_map(|&i| env.recipients.get(i))
                    .any(|r| !r.is_ascii()));
        let mut mail = format!("MAIL FROM:<{}>", env.reverse_path);
        if self.ext.size.is_some() {
            mail.push_str(&format!(" SIZE={}", env.size));
        }
        if (env.eight_bit || smtputf8) && self.ext.eight_bit_mime {
            mail.push_str(" BODY=8BITMIME");
        }
        if smtputf8 {
            mail.push_str(" SMTPUTF8");
        }
        mail.push_str("\r\n");
        self.sending = sending;
        self.expect.push_back(Wait::Mail);
        if self.ext.pipelining {
            let mut batch = mail;
            for &index in &self.sending {
                if let Some(address) = self.envelope.recipients.get(index) {
                    batch.push_str(&format!("RCPT TO:<{address}>\r\n"));
                    self.expect.push_back(Wait::Rcpt(index));
                }
            }
            self.rcpt_written = self.sending.len();
            self.write(batch, false);
        } else {
            self.write(mail, false);
        }
    }

    fn mail_reply(&mut self, reply: Reply) {
        match reply.code / 100 {
            2 => {
                if !self.ext.pipelining {
                    self.next_rcpt();
                }
            }
            4 | 5 => {
                let verdict = Verdict::remote(reply);
                if self.ext.pipelining {
                    // The RCPT replies are on their way; read them, then decide.
                    self.mail_refused = Some(verdict);
                } else {
                    self.decide_all(&verdict);
                    self.quit();
                }
            }
            _ => self.violation("MAIL got a 3xx reply"),
        }
    }

    fn rcpt_reply(&mut self, index: usize, reply: Reply) {
        let class = reply.code / 100;
        if !matches!(class, 2 | 4 | 5) {
            self.violation("RCPT got a 3xx reply");
            return;
        }
        if let Some(refused) = self.mail_refused.clone() {
            // Under PIPELINING, a RCPT after a refused MAIL only says "no transaction".
            if let Some(slot) = self.verdicts.get_mut(index) {
                *slot = Some(refused);
            }
        } else if class == 2 {
            self.accepted.push(index);
        } else if let Some(slot) = self.verdicts.get_mut(index) {
            *slot = Some(Verdict::remote(reply));
        }
        if self.rcpt_written < self.sending.len() {
            self.next_rcpt();
        } else if self.expect.is_empty() {
            self.after_rcpts();
        }
    }

    fn next_rcpt(&mut self) {
        let Some(&index) = self.sending.get(self.rcpt_written) else {
            self.after_rcpts();
            return;
        };
        self.rcpt_written += 1;
        let line = match self.envelope.recipients.get(index) {
            Some(address) => format!("RCPT TO:<{address}>\r\n"),
            None => return,
        };
        self.send(Wait::Rcpt(index), line);
    }

    fn after_rcpts(&mut self) {
        if self.accepted.is_empty() {
            self.quit();
        } else {
            self.send(Wait::Data, "DATA\r\n".to_owned());
        }
    }

    /// Gives the recipients the server accepted (and nothing else decided yet) `verdict`.
    fn decide_accepted(&mut self, verdict: Verdict) {
        for &index in &self.accepted {
            if let Some(slot) = self.verdicts.get_mut(index)
                && slot.is_none()
            {
                *slot = Some(verdict.clone());
            }
        }
    }

    /// Gives every recipient not yet decided `verdict`.
    fn decide_all(&mut self, verdict: &Verdict) {
        for slot in self.verdicts.iter_mut().filter(|slot| slot.is_none()) {
            *slot = Some(verdict.clone());
        }
    }

    /// The session failed. `in_step`: the server is still in step with us, so QUIT is polite;
    /// otherwise the connection is closed at once.
    fn fail(&mut self, kind: FailureKind, verdict: Verdict, in_step: bool) {
        self.decide_all(&verdict);
        self.session_failure = Some(SessionFailure { kind, verdict });
        if in_step {
            self.quit();
        } else {
            // Out of step: nothing pending is done (no handshake, no body), the line is closed.
            self.out.clear();
            self.expect.clear();
            self.input.clear();
            self.partial = PartialReply::default();
            self.out.push_back(Event::Done(self.outcome()));
            self.close();
        }
    }

    fn violation(&mut self, why: &str) {
        if matches!(self.phase, Phase::Quitting | Phase::Closed) {
            return;
        }
        let verdict = Verdict::local(
            Disposition::Temporary,
            421,
            Status(4, 5, 0),
            &format!("Protocol error: {why}"),
        );
        self.fail(FailureKind::Protocol, verdict, false);
    }

    /// QUIT, then the outcome; the reply to QUIT (or the end of the connection) closes.
    fn quit(&mut self) {
        self.send(Wait::Quit, "QUIT\r\n".to_owned());
        self.out.push_back(Event::Done(self.outcome()));
        self.phase = Phase::Quitting;
        self.input.clear();
    }

    fn close(&mut self) {
        self.phase = Phase::Closed;
        self.expect.clear();
        self.input.clear();
        self.out.push_back(Event::Close);
    }

    fn outcome(&self) -> Outcome {
        let undecided = Verdict::local(Disposition::Temporary, 451, Status(4, 3, 0), "No outcome");
        let recipients = self
            .envelope
            .recipients
            .iter()
            .zip(&self.verdicts)
            .map(|(address, verdict)| RecipientOutcome {
                address: address.clone(),
                verdict: verdict.clone().unwrap_or_else(|| undecided.clone()),
            })
            .collect();
        Outcome {
            recipients,
            session_failure: self.session_failure.clone(),
        }
    }

    fn send(&mut self, wait: Wait, line: String) {
        self.expect.push_back(wait);
        self.write(line, false);
    }

    fn send_credentials(&mut self, wait: Wait, line: String) {
        self.expect.push_back(wait);
        self.write(line, true);
    }

    fn write(&mut self, text: String, credentials: bool) {
        self.out.push_back(Event::Write(Output {
            bytes: text.into_bytes(),
            credentials,
        }));
    }
}

/// `ddd SP text`, `ddd-text` or a bare `ddd`: the code (2xx–5xx), whether it is the last line,
/// and the text.
fn parse_line(line: &[u8]) -> Option<(u16, bool, &[u8])> {
    let (digits, rest) = line.split_at_checked(3)?;
    let &[a, b, c] = digits else {
        return None;
    };
    if !(b'2'..=b'5').contains(&a) || !(b'0'..=b'5').contains(&b) || !c.is_ascii_digit() {
        return None;
    }
    let code = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
    match rest.split_first() {
        None => Some((code, true, rest)),
        Some((b' ', text)) => Some((code, true, text)),
        Some((b'-', text)) => Some((code, false, text)),
        Some(_) => None,
    }
}

/// A reply from its lines, the RFC 3463 status taken off the lines that start with it.
fn reply_from(code: u16, mut lines: Vec<String>) -> Reply {
    let status = lines.first().and_then(|first| parse_status(first, code));
    if let Some(status) = status {
        let prefix = status.to_string();
        for line in &mut lines {
            if let Some(rest) = line.strip_prefix(&prefix)
                && (rest.is_empty() || rest.starts_with(' '))
            {
                *line = rest.trim_start_matches(' ').to_owned();
            }
        }
    }
    Reply::multi(code, status, lines)
}

/// `class.subject.detail` at the start of `text`, its class the reply code's first digit.
fn parse_status(text: &str, code: u16) -> Option<Status> {
    let word = text.split(' ').next()?;
    let mut parts = word.split('.');
    let (class, subject, detail) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || subject.len() > 3 || detail.len() > 3 {
        return None;
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !(digits(class) && digits(subject) && digits(detail)) {
        return None;
    }
    let class: u8 = class.parse().ok()?;
    if u16::from(class) != code / 100 {
        return None;
    }
    Some(Status(class, subject.parse().ok()?, detail.parse().ok()?))
}

/// Turns a stored message into DATA's wire form as it streams: every line ending (CRLF, a bare
/// LF, a bare CR) becomes CRLF, a line starting with `.` gets another (RFC 5321 §4.5.2), and
/// [`Self::finish`] ends the last line and writes the final `.`. Its state is two flags, so
/// the message is never needed whole.
#[derive(Debug, Clone)]
pub struct BodyEncoder {
    at_line_start: bool,
    after_cr: bool,
}

impl Default for BodyEncoder {
    fn default() -> Self {
        BodyEncoder::new()
    }
}

impl BodyEncoder {
    pub fn new() -> Self {
        BodyEncoder {
            at_line_start: true,
            after_cr: false,
        }
    }

    /// Appends `chunk`'s wire form to `out` (at most twice its length).
    pub fn encode(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        out.reserve(chunk.len() + chunk.len() / 8 + 2);
        for &b in chunk {
            match b {
                b'\r' => {
                    if self.after_cr {
                        out.extend_from_slice(b"\r\n");
                        self.at_line_start = true;
                    }
                    self.after_cr = true;
                }
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    self.after_cr = false;
                    self.at_line_start = true;
                }
                other => {
                    if self.after_cr {
                        out.extend_from_slice(b"\r\n");
                        self.after_cr = false;
                        self.at_line_start = true;
                    }
                    if self.at_line_start && other == b'.' {
                        out.push(b'.');
                    }
                    out.push(other);
                    self.at_line_start = false;
                }
            }
        }
    }

    /// Ends the last line if it is open, then writes `.` CRLF.
    pub fn finish(self, out: &mut Vec<u8>) {
        if self.after_cr || !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests;
