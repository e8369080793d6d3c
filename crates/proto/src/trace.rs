//! Protocol traces that never show a secret: a [`Tracer`] reads both directions of one
//! connection's bytes and gives back the lines a trace shows, with passwords and SASL payloads
//! replaced by `***` and message content (SMTP DATA, POP3 RETR/TOP, IMAP literals) replaced by
//! its size.
//!
//! It follows the conversation on its own rather than asking the core, because the driver
//! reads input in chunks: a chunk can hold `AUTH LOGIN` and the client's next, secret line
//! before the core has answered either. So the tracer errs on the side of hiding: after a
//! command that starts a SASL exchange, every client line is `***` until the server gives a
//! reply that ends the exchange; after `DATA`, every line is counted, not shown, until the
//! lone dot (or a refusal of `DATA`). Literal bytes are skipped as they arrive and never held.

use std::collections::VecDeque;

/// Which protocol a [`Tracer`] follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Smtp,
    Pop3,
    Imap,
}

/// What stands for a secret in a trace.
pub const HIDDEN: &str = "***";

/// Characters of one line a trace shows; the rest is cut (and said so).
const SHOWN: usize = 300;

/// Octets of one line held while its end has not come; beyond, they are dropped as they come.
const HELD: usize = 4096;

/// Octets kept of a line's end, to find an IMAP literal's `{n}` after a line too long to hold.
const ENDING: usize = 32;

/// POP3 commands remembered while their replies have not come (a client may pipeline).
const MAX_PENDING: usize = 1024;

/// One connection's trace, both directions.
#[derive(Debug)]
pub struct Tracer {
    protocol: Protocol,
    client: Framer,
    server: Framer,
    /// The client is inside a SASL exchange: its lines are secrets.
    sasl: bool,
    /// SMTP: the client is sending a message (after `DATA`): octets so far.
    data: Option<u64>,
    /// IMAP: the client command under way (continued after a literal) is a secret one.
    secret_command: bool,
    /// IMAP: a client command continues after its literal.
    continued: bool,
    /// IMAP: the tag of the client command under way, whose tagged reply ends it.
    tag: Vec<u8>,
    /// POP3: for each command whose status line has not come, whether it is RETR or TOP.
    pending: VecDeque<bool>,
    /// SMTP: the commands whose replies have not come (a client may pipeline).
    smtp_pending: VecDeque<SmtpCommand>,
    /// POP3: the server is sending a message (after `+OK` to RETR/TOP): octets so far.
    content: Option<u64>,
}

impl Tracer {
    pub fn new(protocol: Protocol) -> Tracer {
        Tracer {
            protocol,
            client: Framer::default(),
            server: Framer::default(),
            sasl: false,
            data: None,
            secret_command: false,
            continued: false,
            tag: Vec::new(),
            pending: VecDeque::new(),
            smtp_pending: VecDeque::new(),
            content: None,
        }
    }

    /// Bytes from the client, before the core reads them: the lines to show, in order.
    pub fn client(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut shown = Vec::new();
        let mut rest = bytes;
        while let Some(piece) = self.client.next(&mut rest) {
            match piece {
                Piece::Literal(n) => {
                    shown.push(if self.secret_command {
                        HIDDEN.to_owned()
                    } else {
                        format!("[literal of {n} octets]")
                    });
                }
                Piece::Line(line) => {
                    if let Some(text) = self.client_line(&line) {
                        shown.push(text);
                    }
                }
            }
        }
        shown
    }

    /// Bytes the server writes: the lines to show, in order.
    pub fn server(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut shown = Vec::new();
        let mut rest = bytes;
        while let Some(piece) = self.server.next(&mut rest) {
            match piece {
                Piece::Literal(n) => shown.push(format!("[literal of {n} octets]")),
                Piece::Line(line) => {
                    if let Some(text) = self.server_line(&line) {
                        shown.push(text);
                    }
                }
            }
        }
        shown
    }

    fn client_line(&mut self, line: &FramedLine) -> Option<String> {
        match self.protocol {
            Protocol::Smtp => self.smtp_client(line),
            Protocol::Pop3 => Some(self.pop3_client(line)),
            Protocol::Imap => Some(self.imap_client(line)),
        }
    }

    fn server_line(&mut self, line: &FramedLine) -> Option<String> {
        match self.protocol {
            Protocol::Smtp => Some(self.smtp_server(line)),
            Protocol::Pop3 => self.pop3_server(line),
            Protocol::Imap => {
                if !line.text.starts_with(b"+") {
                    self.sasl = false;
                }
                // The command's tagged reply ends it, even when the server refused a
                // literal the client then never sent.
                if !self.tag.is_empty()
                    && line
                        .text
                        .strip_prefix(self.tag.as_slice())
                        .is_some_and(|rest| rest.starts_with(b" "))
                {
                    self.tag.clear();
                    self.continued = false;
                    self.secret_command = false;
                    self.client.forget_unstarted_literal();
                }
                if let Some(n) = literal_at_end(line) {
                    self.server.expect_literal(n);
                }
                Some(show(line))
            }
        }
    }

    fn smtp_client(&mut self, line: &FramedLine) -> Option<String> {
        if let Some(octets) = &mut self.data {
            if line.text == b"." {
                let total = *octets;
                self.data = None;
                // The message's own reply comes for it.
                self.smtp_expects(SmtpCommand::Other);
                return Some(format!("[message of {total} octets]"));
            }
            *octets = octets.saturating_add(line.len);
            return None;
        }
        if self.sasl {
            return Some(HIDDEN.to_owned());
        }
        let words = words(&line.text);
        let verb = words.first().map(|w| w.to_ascii_uppercase());
        match verb.as_deref() {
            Some(b"AUTH") => {
                self.smtp_expects(SmtpCommand::Other);
                Some(self.start_sasl(&words, 1))
            }
            Some(b"DATA") if words.len() == 1 => {
                // What follows is content until the lone dot, or until DATA is refused.
                self.smtp_expects(SmtpCommand::Data);
                self.data = Some(0);
                Some(show(line))
            }
            Some(b"STARTTLS") => {
                self.smtp_expects(SmtpCommand::StartTls);
                Some(show(line))
            }
            _ => {
                self.smtp_expects(SmtpCommand::Other);
                Some(show(line))
            }
        }
    }

    fn smtp_expects(&mut self, command: SmtpCommand) {
        if self.smtp_pending.len() < MAX_PENDING {
            self.smtp_pending.push_back(command);
        }
    }

    fn smtp_server(&mut self, line: &FramedLine) -> String {
        let code = line.text.get(..3).unwrap_or_default();
        // Only a reply's last line (`250 ok`, not `250-…`) ends it.
        if line.text.get(3) == Some(&b'-') {
            return show(line);
        }
        // A SASL challenge continues the exchange; any other reply ends it.
        if code == b"334" {
            return show(line);
        }
        self.sasl = false;
        match self.smtp_pending.pop_front() {
            Some(SmtpCommand::Data) if code != b"354" => {
                if let Some(octets) = self.data.take()
                    && octets > 0
                {
                    return format!(
                        "{} [{octets} octets the client sent after DATA not shown]",
                        show(line)
                    );
                }
            }
            // RFC 3207: what the client sent after STARTTLS is never answered.
            Some(SmtpCommand::StartTls) if code == b"220" => self.smtp_pending.clear(),
            _ => {}
        }
        show(line)
    }

    /// A command that starts a SASL exchange, its mechanism the word at `at`: shown with an
    /// initial response hidden; without one, the lines after it are the exchange.
    fn start_sasl(&mut self, words: &[&[u8]], at: usize) -> String {
        let head = words.get(..=at).unwrap_or(words);
        let mut text = lossy(&head.join(&b' '));
        if words.len() > at + 1 {
            text.push(' ');
            text.push_str(HIDDEN);
        } else if words.len() == at + 1 {
            self.sasl = true;
        }
        cut(text)
    }

    fn pop3_client(&mut self, line: &FramedLine) -> String {
        if self.sasl {
            return HIDDEN.to_owned();
        }
        let words = words(&line.text);
        let verb = words.first().map(|w| w.to_ascii_uppercase());
        if self.pending.len() < MAX_PENDING {
            self.pending
                .push_back(matches!(verb.as_deref(), Some(b"RETR" | b"TOP")));
        }
        match verb.as_deref() {
            Some(b"PASS") => format!("{} {HIDDEN}", lossy(words.first().unwrap_or(&&b""[..]))),
            Some(b"APOP") => {
                let head = words.get(..2).unwrap_or(&words);
                cut(format!("{} {HIDDEN}", lossy(&head.join(&b' '))))
            }
            Some(b"AUTH") if words.len() > 1 => self.start_sasl(&words, 1),
            _ => show(line),
        }
    }

    fn pop3_server(&mut self, line: &FramedLine) -> Option<String> {
        if let Some(octets) = &mut self.content {
            if line.text == b"." {
                let total = *octets;
                self.content = None;
                return Some(format!("[message of {total} octets]"));
            }
            *octets = octets.saturating_add(line.len);
            return None;
        }
        let ok = line.text.starts_with(b"+OK");
        if ok || line.text.starts_with(b"-ERR") {
            // A status line answers the oldest command (the greeting answers none) and ends a
            // SASL exchange; a `+ ` continuation does neither.
            self.sasl = false;
            if self.pending.pop_front() == Some(true) && ok {
                self.content = Some(0);
            }
        }
        Some(show(line))
    }

    fn imap_client(&mut self, line: &FramedLine) -> String {
        let literal = literal_at_end(line);
        let shown = if self.continued {
            if self.secret_command {
                HIDDEN.to_owned()
            } else {
                show(line)
            }
        } else if self.sasl {
            HIDDEN.to_owned()
        } else {
            let words = words(&line.text);
            self.secret_command = false;
            self.tag = words.first().map(|t| t.to_vec()).unwrap_or_default();
            match words.get(1).map(|w| w.to_ascii_uppercase()).as_deref() {
                Some(b"LOGIN") => {
                    self.secret_command = true;
                    let head = words.get(..2).unwrap_or(&words);
                    cut(format!("{} {HIDDEN}", lossy(&head.join(&b' '))))
                }
                Some(b"AUTHENTICATE") => {
                    // A literal here would carry the initial response: hide it too.
                    self.secret_command = literal.is_some();
                    self.start_sasl(&words, 2)
                }
                _ => show(line),
            }
        };
        self.continued = literal.is_some();
        if let Some(n) = literal {
            self.client.expect_literal(n);
        } else {
            self.secret_command = false;
        }
        shown
    }
}

/// An SMTP command waiting for its reply, as far as the trace cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SmtpCommand {
    Data,
    StartTls,
    Other,
}

/// A line as framed: its first octets (at most [`HELD`]), its last few, and its length with
/// its ending.
#[derive(Debug)]
struct FramedLine {
    text: Vec<u8>,
    ending: Vec<u8>,
    len: u64,
}

#[derive(Debug)]
enum Piece {
    Line(FramedLine),
    /// An IMAP literal of this many octets went by, unread.
    Literal(u64),
}

/// Cuts one direction's bytes into lines (and IMAP literals), holding at most [`HELD`] octets.
#[derive(Debug, Default)]
struct Framer {
    held: Vec<u8>,
    ending: Vec<u8>,
    len: u64,
    literal: u64,
    literal_left: u64,
}

impl Framer {
    /// The next `n` octets are a literal: skipped, not held.
    fn expect_literal(&mut self, n: u64) {
        self.literal = n;
        self.literal_left = n;
    }

    /// A literal none of whose octets came is not coming (the server refused it).
    fn forget_unstarted_literal(&mut self) {
        if self.literal_left == self.literal {
            self.literal_left = 0;
        }
    }

    /// The next piece out of `input` (advanced past it), or `None` once `input` is used up.
    fn next(&mut self, input: &mut &[u8]) -> Option<Piece> {
        if self.literal_left > 0 {
            let n = usize::try_from(self.literal_left)
                .unwrap_or(usize::MAX)
                .min(input.len());
            *input = input.get(n..).unwrap_or_default();
            self.literal_left -= n as u64;
            return (self.literal_left == 0).then_some(Piece::Literal(self.literal));
        }
        if input.is_empty() {
            return None;
        }
        let (part, rest, complete) = match input.iter().position(|&b| b == b'\n') {
            Some(lf) => (
                input.get(..=lf).unwrap_or_default(),
                input.get(lf + 1..).unwrap_or_default(),
                true,
            ),
            None => (*input, &[][..], false),
        };
        *input = rest;
        self.len = self.len.saturating_add(part.len() as u64);
        let room = HELD.saturating_sub(self.held.len());
        self.held
            .extend_from_slice(part.get(..room.min(part.len())).unwrap_or_default());
        self.ending.extend_from_slice(
            part.get(part.len().saturating_sub(ENDING)..)
                .unwrap_or_default(),
        );
        let drop = self.ending.len().saturating_sub(ENDING);
        self.ending.drain(..drop);
        if !complete {
            return None;
        }
        let strip = |bytes: &mut Vec<u8>| {
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
            }
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        };
        let mut text = std::mem::take(&mut self.held);
        let mut ending = std::mem::take(&mut self.ending);
        strip(&mut text);
        strip(&mut ending);
        let len = std::mem::take(&mut self.len);
        Some(Piece::Line(FramedLine { text, ending, len }))
    }
}

/// The `n` of a line ending in an IMAP literal's `{n}` or `{n+}`.
fn literal_at_end(line: &FramedLine) -> Option<u64> {
    let inner = line.ending.strip_suffix(b"}")?;
    let inner = inner.strip_suffix(b"+").unwrap_or(inner);
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let digits = inner.get(open + 1..)?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn words(line: &[u8]) -> Vec<&[u8]> {
    line.split(|&b| b == b' ')
        .filter(|w| !w.is_empty())
        .collect()
}

/// Text for the log: invalid UTF-8 replaced, control characters escaped (so a client cannot
/// forge log lines), cut at [`SHOWN`] characters.
fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

fn cut(text: String) -> String {
    if text.chars().count() <= SHOWN {
        return text;
    }
    let mut shown: String = text.chars().take(SHOWN).collect();
    shown.push_str("…[cut]");
    shown
}

fn show(line: &FramedLine) -> String {
    let text = cut(lossy(&line.text));
    if line.text.len() as u64 + 2 < line.len && line.text.len() >= HELD {
        format!("{text} [line of {} octets]", line.len)
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Just;

    /// Feeds a conversation, `C:` lines from the client and `S:` lines from the server, each
    /// step as one chunk, and returns everything the trace shows.
    fn trace(protocol: Protocol, steps: &[(&str, &[u8])]) -> String {
        let mut tracer = Tracer::new(protocol);
        let mut shown = Vec::new();
        for (side, bytes) in steps {
            let lines = if *side == "C" {
                tracer.client(bytes)
            } else {
                tracer.server(bytes)
            };
            shown.extend(lines.into_iter().map(|l| format!("{side}: {l}")));
        }
        shown.join("\n")
    }

    const SECRET: &str = "Hunter2-secret";
    /// base64 of "\0bob\0Hunter2-secret" and of "Hunter2-secret".
    const PLAIN: &str = "AGJvYgBIdW50ZXIyLXNlY3JldA==";
    const LOGIN_PW: &str = "SHVudGVyMi1zZWNyZXQ=";

    fn assert_hidden(shown: &str) {
        for secret in [SECRET, PLAIN, LOGIN_PW, "SHVudGVyMi1zZWNyZXQ", "YgBIdW50"] {
            assert!(!shown.contains(secret), "{secret} shown in:\n{shown}");
        }
    }

    #[test]
    fn smtp_auth_plain_initial_response_is_hidden() {
        let shown = trace(
            Protocol::Smtp,
            &[
                ("C", format!("EHLO x\r\nAUTH PLAIN {PLAIN}\r\n").as_bytes()),
                ("S", b"250 ok\r\n235 2.7.0 Authentication successful\r\n"),
            ],
        );
        assert_hidden(&shown);
        assert!(shown.contains("C: AUTH PLAIN ***"), "{shown}");
        assert!(shown.contains("S: 235 2.7.0"), "{shown}");
    }

    #[test]
    fn smtp_sasl_lines_are_hidden_even_in_the_same_chunk_as_auth() {
        let shown = trace(
            Protocol::Smtp,
            &[
                (
                    "C",
                    format!("AUTH LOGIN\r\nYm9i\r\n{LOGIN_PW}\r\n").as_bytes(),
                ),
                ("S", b"334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n"),
                ("C", format!("{LOGIN_PW}\r\n").as_bytes()),
                ("S", b"235 2.7.0 ok\r\n"),
                ("C", b"MAIL FROM:<a@b>\r\n"),
            ],
        );
        assert_hidden(&shown);
        assert_eq!(
            shown,
            "C: AUTH LOGIN\nC: ***\nC: ***\nS: 334 VXNlcm5hbWU6\nS: 334 UGFzc3dvcmQ6\nC: ***\n\
             S: 235 2.7.0 ok\nC: MAIL FROM:<a@b>"
        );
    }

    #[test]
    fn smtp_a_refused_auth_ends_the_hiding() {
        let shown = trace(
            Protocol::Smtp,
            &[
                ("C", b"AUTH NONSUCH\r\n"),
                ("S", b"504 5.5.4 Unrecognized authentication type\r\n"),
                ("C", b"NOOP\r\n"),
            ],
        );
        assert!(shown.ends_with("C: NOOP"), "{shown}");
    }

    #[test]
    fn smtp_message_content_is_counted_not_shown() {
        let shown = trace(
            Protocol::Smtp,
            &[
                ("C", b"DATA\r\n"),
                ("S", b"354 go ahead\r\n"),
                (
                    "C",
                    b"Subject: private\r\n\r\nbody\r\n..dot\r\n.\r\nQUIT\r\n",
                ),
                ("S", b"250 2.0.0 accepted\r\n"),
            ],
        );
        assert!(
            !shown.contains("private") && !shown.contains("body"),
            "{shown}"
        );
        assert!(
            shown.contains("C: [message of 33 octets]\nC: QUIT"),
            "{shown}"
        );
        assert!(shown.contains("C: QUIT") && shown.contains("S: 250 2.0.0 accepted"));
    }

    #[test]
    fn smtp_pipelined_replies_before_354_do_not_end_the_message() {
        let shown = trace(
            Protocol::Smtp,
            &[
                ("S", b"220 hi\r\n"),
                ("C", b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"),
                ("S", b"250 ok\r\n250 ok\r\n354 go\r\n"),
                ("C", b"secret body\r\n.\r\n"),
                ("S", b"250 accepted\r\n"),
                ("C", b"MAIL FROM:<a@b>\r\nRCPT TO:<nobody@d>\r\nDATA\r\n"),
                ("S", b"250 ok\r\n550 no\r\n554 no valid recipients\r\n"),
                ("C", b"QUIT\r\n"),
            ],
        );
        assert!(!shown.contains("secret body"), "{shown}");
        assert!(
            shown.contains("C: [message of 13 octets]\nS: 250 accepted"),
            "{shown}"
        );
        assert!(
            shown.ends_with("S: 554 no valid recipients\nC: QUIT"),
            "{shown}"
        );
    }

    #[test]
    fn smtp_a_refused_data_returns_to_commands() {
        let shown = trace(
            Protocol::Smtp,
            &[
                ("C", b"DATA\r\n"),
                ("S", b"554 5.5.1 No valid recipients\r\n"),
                ("C", b"QUIT\r\n"),
            ],
        );
        assert!(shown.ends_with("C: QUIT"), "{shown}");
    }

    #[test]
    fn pop3_pass_apop_and_auth_are_hidden() {
        let shown = trace(
            Protocol::Pop3,
            &[
                ("S", b"+OK ready <1@x>\r\n"),
                ("C", format!("USER bob\r\nPASS {SECRET}\r\n").as_bytes()),
                ("S", b"+OK\r\n-ERR [AUTH] no\r\n"),
                ("C", b"APOP bob 0123456789abcdef0123456789abcdef\r\n"),
                ("S", b"-ERR [AUTH] no\r\n"),
                (
                    "C",
                    format!("AUTH PLAIN {PLAIN}\r\nAUTH PLAIN\r\n{PLAIN}\r\n").as_bytes(),
                ),
                ("S", b"-ERR no\r\n+ \r\n+OK in\r\n"),
                ("C", b"STAT\r\n"),
            ],
        );
        assert_hidden(&shown);
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("C: PASS ***") && shown.contains("C: APOP bob ***"));
        assert!(
            shown.contains("C: AUTH PLAIN ***\nC: AUTH PLAIN\nC: ***"),
            "{shown}"
        );
        assert!(shown.ends_with("C: STAT"), "{shown}");
    }

    #[test]
    fn pop3_retrieved_messages_are_counted_not_shown() {
        let shown = trace(
            Protocol::Pop3,
            &[
                ("S", b"+OK ready\r\n"),
                ("C", b"LIST\r\nRETR 1\r\nRETR 9\r\nNOOP\r\n"),
                (
                    "S",
                    b"+OK 1 message\r\n1 20\r\n.\r\n+OK 20 octets\r\nSubject: x\r\n\r\nhi\r\n.\r\n\
                      -ERR no such message\r\n+OK\r\n",
                ),
            ],
        );
        assert!(!shown.contains("Subject"), "{shown}");
        assert!(shown.contains("S: 1 20\nS: .\n"), "{shown}");
        assert!(shown.contains("[message of 18 octets]"), "{shown}");
        assert!(
            shown.ends_with("S: -ERR no such message\nS: +OK"),
            "{shown}"
        );
    }

    #[test]
    fn imap_login_quoted_and_literal_are_hidden() {
        let shown = trace(
            Protocol::Imap,
            &[
                ("C", format!("a1 LOGIN \"bob\" \"{SECRET}\"\r\n").as_bytes()),
                ("S", b"a1 NO [AUTHENTICATIONFAILED] no\r\n"),
                ("C", b"a2 login {3}\r\n"),
                ("S", b"+ go on\r\n"),
                ("C", b"bob {14}\r\n"),
                ("S", b"+ go on\r\n"),
                ("C", SECRET.as_bytes()),
                ("C", b"\r\na3 NOOP\r\n"),
                (
                    "C",
                    format!("a4 LOGIN {{3+}}\r\nbob {{14+}}\r\n{SECRET}\r\n").as_bytes(),
                ),
            ],
        );
        assert_hidden(&shown);
        assert!(!shown.contains("bob {14}"), "{shown}");
        assert!(shown.contains("C: a1 LOGIN ***"), "{shown}");
        assert!(
            shown.contains("C: a2 login ***\nS: + go on\nC: ***\nC: ***"),
            "{shown}"
        );
        assert!(shown.contains("C: a3 NOOP"), "{shown}");
        assert!(
            shown.ends_with("C: a4 LOGIN ***\nC: ***\nC: ***\nC: ***\nC: ***"),
            "{shown}"
        );
    }

    #[test]
    fn imap_a_refused_literal_is_not_waited_for() {
        let shown = trace(
            Protocol::Imap,
            &[
                ("C", b"a1 LOGIN {3}\r\n"),
                ("S", b"a1 NO [PRIVACYREQUIRED] no\r\n"),
                ("C", b"a2 NOOP\r\n"),
            ],
        );
        assert_eq!(
            shown,
            "C: a1 LOGIN ***\nS: a1 NO [PRIVACYREQUIRED] no\nC: a2 NOOP"
        );
    }

    #[test]
    fn imap_authenticate_and_literals_of_messages() {
        let shown = trace(
            Protocol::Imap,
            &[
                ("C", format!("a1 AUTHENTICATE PLAIN {PLAIN}\r\n").as_bytes()),
                ("S", b"a1 NO no\r\n"),
                ("C", b"a2 AUTHENTICATE PLAIN\r\n"),
                ("S", b"+ \r\n"),
                ("C", format!("{PLAIN}\r\n").as_bytes()),
                ("S", b"a2 OK in\r\n"),
                ("C", b"a3 APPEND INBOX {11}\r\nhello world)\r\n"),
                ("S", b"* 1 FETCH (BODY[] {5}\r\nhello)\r\na4 OK\r\n"),
            ],
        );
        assert_hidden(&shown);
        assert!(!shown.contains("hello"), "{shown}");
        assert!(shown.contains("C: a1 AUTHENTICATE PLAIN ***"), "{shown}");
        assert!(
            shown.contains("C: a2 AUTHENTICATE PLAIN\nS: + \nC: ***\nS: a2 OK in"),
            "{shown}"
        );
        assert!(
            shown.contains("C: a3 APPEND INBOX {11}\nC: [literal of 11 octets]\nC: )"),
            "{shown}"
        );
        assert!(
            shown.contains("S: [literal of 5 octets]\nS: )\nS: a4 OK"),
            "{shown}"
        );
    }

    #[test]
    fn control_characters_are_escaped_and_long_lines_cut() {
        let mut tracer = Tracer::new(Protocol::Smtp);
        let shown = tracer.client(b"NOOP \x1b[31mred\r\n");
        assert_eq!(shown, vec!["NOOP \\u{1b}[31mred".to_owned()]);
        let mut long = vec![b'x'; 100_000];
        long.extend_from_slice(b"\r\n");
        let shown = tracer.client(&long);
        assert_eq!(shown.len(), 1);
        assert!(shown[0].len() < 400 && shown[0].ends_with("…[cut] [line of 100002 octets]"));
        assert!(tracer.client.held.capacity() <= 2 * HELD);
    }

    /// A client line the trace shows, with its longest marker after the cut.
    const LONGEST_SHOWN: usize = SHOWN * 4 + 100;

    proptest::proptest! {
        /// Whatever either side sends, in whatever chunks, the tracer does not panic, holds at
        /// most about [`HELD`] octets per direction and a bounded queue of pending commands,
        /// and shows no line longer than [`SHOWN`] characters plus its marker.
        #[test]
        fn any_conversation_is_traced_within_bounds(
            protocol in proptest::sample::select(vec![Protocol::Smtp, Protocol::Pop3, Protocol::Imap]),
            chunks in proptest::collection::vec(
                (proptest::bool::ANY, proptest::collection::vec(
                    proptest::prop_oneof![
                        Just(b'\r'), Just(b'\n'), Just(b'{'), Just(b'}'), Just(b' '), Just(b'+'),
                        Just(b'"'), b'0'..=b'9', b'A'..=b'Z', proptest::num::u8::ANY,
                    ],
                    0..600,
                )),
                0..40,
            ),
        ) {
            let mut tracer = Tracer::new(protocol);
            for (from_client, bytes) in &chunks {
                let shown = if *from_client { tracer.client(bytes) } else { tracer.server(bytes) };
                for line in shown {
                    proptest::prop_assert!(line.len() <= LONGEST_SHOWN, "{} octets", line.len());
                }
                proptest::prop_assert!(tracer.client.held.len() <= 2 * HELD);
                proptest::prop_assert!(tracer.server.held.len() <= 2 * HELD);
                proptest::prop_assert!(tracer.pending.len() <= MAX_PENDING);
                proptest::prop_assert!(tracer.smtp_pending.len() <= MAX_PENDING);
            }
        }
    }
}
