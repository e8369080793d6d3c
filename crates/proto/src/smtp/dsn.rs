//! Delivery status notifications (docs/spec.md §11): the bounce and the delay notice, built as
//! RFC 3464 `multipart/report; report-type=delivery-status` (RFC 6522): a readable part, the
//! `message/delivery-status` part, then the original header section as `text/rfc822-headers`.
//!
//! The caller brings the dates (this crate has no clock) and a unique token. A notification is
//! never made for a null reverse-path, and is itself sent from `<>` (RFC 5321 §4.5.5), so a
//! bounce can never bounce back: no loops.

use std::fmt::Write as _;

use super::reply::{Reply, Status};

/// Most octets of the original header section quoted back; the rest is cut at a line end.
pub const MAX_ORIGINAL_HEADERS: usize = 64 * 1024;
/// Most characters of a remote reply quoted in a notification.
const MAX_DIAGNOSTIC: usize = 4096;
/// RFC 5322 §2.1.1: lines of at most 998 octets; we cut long words well before that.
const MAX_PIECE: usize = 900;
/// Where a folded field or wrapped text line breaks when it can (RFC 5322's 78).
const FOLD_AT: usize = 78;

/// What happened to a recipient (RFC 3464 §2.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// It will not be delivered (5xx, expired, a null MX).
    Failed,
    /// Not yet delivered, still being retried.
    Delayed,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
        }
    }
}

/// One recipient the notification is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The forward-path, without angle brackets.
    pub address: String,
    pub action: Action,
    /// e.g. `5.1.1`; from the remote reply, or ours (`4.4.7` expired, `5.1.10` null MX).
    pub status: Status,
    /// The host that gave the reply, when one did.
    pub remote_mta: Option<String>,
    /// The remote reply (or the one the client made, see `client::Verdict`).
    pub diagnostic: Option<Reply>,
    /// RFC 5322 date of the last attempt.
    pub last_attempt: Option<String>,
    /// RFC 5322 date after which a delayed recipient is given up.
    pub will_retry_until: Option<String>,
}

/// Everything a notification says, from the queue.
#[derive(Debug, Clone, Copy)]
pub struct Notice<'a> {
    /// Our host name: `Reporting-MTA`, `MAILER-DAEMON@`, the Message-ID.
    pub hostname: &'a str,
    /// The original message's reverse-path, without angle brackets; the notification goes
    /// there. Empty (`<>`): no notification.
    pub reverse_path: &'a str,
    /// RFC 5322 date the original message was accepted.
    pub arrival_date: &'a str,
    /// RFC 5322 date of this notification.
    pub date: &'a str,
    /// The original message's queue id (`X-Dirmail-Queue-ID`).
    pub queue_id: &'a str,
    /// Unique per notification (a delay notice and the later bounce differ): the Message-ID
    /// and the MIME boundary are made from it.
    pub unique: &'a str,
    pub recipients: &'a [Recipient],
    /// The original message's header section; anything after its first empty line is not
    /// used, nor more than [`MAX_ORIGINAL_HEADERS`].
    pub original_headers: &'a [u8],
}

/// A notification ready to queue: sent from the null reverse-path `<>` to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The recipient: the original reverse-path.
    pub to: String,
    /// The whole message, CRLF line endings, no line over 998 octets.
    pub message: Vec<u8>,
    /// It holds octets above 127 (UTF-8 addresses, or 8-bit original headers).
    pub eight_bit: bool,
    /// An address in its header is UTF-8 (needs SMTPUTF8 to go out).
    pub utf8_headers: bool,
}

/// Why no notification is made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DsnError {
    /// The original came from `<>`: a notification about a notification is never sent.
    #[error("the reverse-path is null: no notification for a notification")]
    NullReversePath,
    #[error("no recipient to report on")]
    NoRecipients,
    #[error("a control character in {0}")]
    BadText(&'static str),
}

/// Builds the notification for `notice`. One notification may report failed and delayed
/// recipients together (RFC 3464 allows it); its subject says "returned" if any failed.
pub fn build(notice: &Notice<'_>) -> Result<Notification, DsnError> {
    if notice.reverse_path.is_empty() {
        return Err(DsnError::NullReversePath);
    }
    if notice.recipients.is_empty() {
        return Err(DsnError::NoRecipients);
    }
    let has_control = |text: &str| text.chars().any(char::is_control);
    for (text, what) in [
        (notice.hostname, "the host name"),
        (notice.reverse_path, "the reverse-path"),
        (notice.arrival_date, "the arrival date"),
        (notice.date, "the date"),
        (notice.queue_id, "the queue id"),
    ] {
        if has_control(text) {
            return Err(DsnError::BadText(what));
        }
    }
    for r in notice.recipients {
        let dates = [&r.last_attempt, &r.will_retry_until, &r.remote_mta];
        if has_control(&r.address) || dates.iter().any(|d| d.as_deref().is_some_and(has_control)) {
            return Err(DsnError::BadText("a recipient"));
        }
    }

    let utf8 =
        !notice.reverse_path.is_ascii() || notice.recipients.iter().any(|r| !r.address.is_ascii());
    let readable = readable_part(notice);
    let report = report_part(notice, utf8);
    let headers = original_header_section(notice.original_headers);
    let headers_8bit = !headers.is_ascii();

    let token: String = notice
        .unique
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(40)
        .collect();
    let parts = [readable.as_bytes(), report.as_bytes(), headers.as_slice()];
    // A boundary that no part contains (RFC 2046 §5.1.1); the counter always finds one.
    let boundary = (0u64..)
        .map(|n| format!("=_dirmail_{token}_{n}"))
        .find(|b| !parts.iter().any(|part| contains(part, b.as_bytes())))
        .unwrap_or_default();

    let any_failed = notice.recipients.iter().any(|r| r.action == Action::Failed);
    let subject = if any_failed {
        "Undelivered Mail Returned to Sender"
    } else {
        "Delayed Mail (still being retried)"
    };
    let mut m = String::new();
    // Writing to a String cannot fail.
    let _ = write!(
        m,
        "From: Mail Delivery System <MAILER-DAEMON@{host}>\r\n\
         To: <{to}>\r\n\
         Subject: {subject}\r\n\
         Date: {date}\r\n\
         Message-ID: <dsn.{token}@{host}>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\
         \tboundary=\"{boundary}\"\r\n\
         \r\n\
         This is a MIME-encapsulated message.\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Description: Notification\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: {cte1}\r\n\
         \r\n",
        host = notice.hostname,
        to = notice.reverse_path,
        date = notice.date,
        cte1 = if readable.is_ascii() { "7bit" } else { "8bit" },
    );
    let mut message = m.into_bytes();
    message.extend_from_slice(readable.as_bytes());
    let status_type = if utf8 {
        // RFC 6533: UTF-8 addresses go in the global report.
        "message/global-delivery-status"
    } else {
        "message/delivery-status"
    };
    message.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\n\
             Content-Description: Delivery report\r\n\
             Content-Type: {status_type}\r\n\
             Content-Transfer-Encoding: {cte}\r\n\
             \r\n",
            cte = if report.is_ascii() { "7bit" } else { "8bit" },
        )
        .as_bytes(),
    );
    message.extend_from_slice(report.as_bytes());
    message.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\n\
             Content-Description: Undelivered Message Headers\r\n\
             Content-Type: text/rfc822-headers\r\n\
             Content-Transfer-Encoding: {cte}\r\n\
             \r\n",
            cte = if headers_8bit { "8bit" } else { "7bit" },
        )
        .as_bytes(),
    );
    message.extend_from_slice(&headers);
    message.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Ok(Notification {
        to: notice.reverse_path.to_owned(),
        eight_bit: !message.is_ascii(),
        utf8_headers: !notice.reverse_path.is_ascii(),
        message,
    })
}

/// The part a person reads: which recipients, and what their servers said.
fn readable_part(notice: &Notice<'_>) -> String {
    let mut text = format!("This is the mail server at {}.\r\n", notice.hostname);
    for (action, intro) in [
        (
            Action::Failed,
            "Your message could not be delivered to the recipients below. It will not be \
             tried again.",
        ),
        (
            Action::Delayed,
            "Your message has not been delivered yet to the recipients below. Nothing needs \
             to be done: the server keeps trying, and will write again if it gives up.",
        ),
    ] {
        let mut listed = notice
            .recipients
            .iter()
            .filter(|r| r.action == action)
            .peekable();
        if listed.peek().is_none() {
            continue;
        }
        text.push_str("\r\n");
        wrap(&mut text, "", intro);
        for r in listed {
            text.push_str("\r\n");
            let mut said = format!("<{}>:", r.address);
            match (&r.remote_mta, &r.diagnostic) {
                (Some(host), Some(reply)) => {
                    let _ = write!(said, " {host} said: {}", diagnostic(reply));
                }
                (None, Some(reply)) => {
                    let _ = write!(said, " {}", diagnostic(reply));
                }
                (_, None) => {
                    let _ = write!(said, " status {}", r.status);
                }
            }
            if let Some(until) = &r.will_retry_until {
                let _ = write!(said, " (tried until {until})");
            }
            wrap(&mut text, "  ", &said);
        }
    }
    text.push_str("\r\n");
    wrap(
        &mut text,
        "",
        "The delivery report and the header of your message are attached.",
    );
    text
}

/// The `message/delivery-status` body: per-message fields, then a block per recipient.
fn report_part(notice: &Notice<'_>, utf8: bool) -> String {
    let mut report = String::new();
    field(
        &mut report,
        "Reporting-MTA",
        &format!("dns; {}", notice.hostname),
    );
    field(&mut report, "X-Dirmail-Queue-ID", notice.queue_id);
    field(&mut report, "Arrival-Date", notice.arrival_date);
    let address_type = if utf8 { "utf-8" } else { "rfc822" };
    for r in notice.recipients {
        report.push_str("\r\n");
        field(
            &mut report,
            "Final-Recipient",
            &format!("{address_type}; {}", r.address),
        );
        field(&mut report, "Action", r.action.as_str());
        field(&mut report, "Status", &r.status.to_string());
        if let Some(host) = &r.remote_mta {
            field(&mut report, "Remote-MTA", &format!("dns; {host}"));
        }
        if let Some(reply) = &r.diagnostic {
            field(
                &mut report,
                "Diagnostic-Code",
                &format!("smtp; {}", diagnostic(reply)),
            );
        }
        if let Some(date) = &r.last_attempt {
            field(&mut report, "Last-Attempt-Date", date);
        }
        if let Some(date) = &r.will_retry_until {
            field(&mut report, "Will-Retry-Until", date);
        }
    }
    report
}

/// A reply on one line, ASCII only (a server's words are not trusted to be anything else),
/// at most [`MAX_DIAGNOSTIC`] characters.
fn diagnostic(reply: &Reply) -> String {
    let mut text = reply.code.to_string();
    if let Some(status) = reply.status {
        let _ = write!(text, " {status}");
    }
    for line in reply.lines() {
        text.push(' ');
        text.push_str(line);
    }
    text.chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .take(MAX_DIAGNOSTIC)
        .collect()
}

/// `name: value` folded at spaces near [`FOLD_AT`]; a word longer than [`MAX_PIECE`] is cut.
fn field(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push(':');
    let mut column = name.len() + 1;
    for piece in pieces(value) {
        if column + 1 + piece.len() > FOLD_AT && column > name.len() + 1 {
            out.push_str("\r\n");
            column = 0;
        }
        out.push(' ');
        out.push_str(piece);
        column += 1 + piece.len();
    }
    out.push_str("\r\n");
}

/// `text` as lines near [`FOLD_AT`] wide, each starting with `indent`.
fn wrap(out: &mut String, indent: &str, text: &str) {
    let mut column = 0;
    for piece in pieces(text) {
        if column > 0 && column + 1 + piece.len() > FOLD_AT {
            out.push_str("\r\n");
            column = 0;
        }
        if column == 0 {
            out.push_str(indent);
            column = indent.len();
        } else {
            out.push(' ');
            column += 1;
        }
        out.push_str(piece);
        column += piece.len();
    }
    out.push_str("\r\n");
}

/// The words of `text`, each cut into pieces of at most [`MAX_PIECE`] octets.
fn pieces(text: &str) -> impl Iterator<Item = &str> {
    text.split_whitespace().flat_map(|word| {
        let mut rest = word;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let mut end = rest.len().min(MAX_PIECE);
            while !rest.is_char_boundary(end) {
                end -= 1;
            }
            let (piece, tail) = rest.split_at(end);
            rest = tail;
            Some(piece)
        })
    })
}

/// The original header section: up to its first empty line, at most
/// [`MAX_ORIGINAL_HEADERS`] octets cut at a line end, each line ending CRLF, a line over 998
/// octets folded.
fn original_header_section(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in raw.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        // A lone CR inside a line would end it for some readers.
        let line: Vec<u8> = line
            .iter()
            .map(|&b| if b == b'\r' || b == 0 { b' ' } else { b })
            .collect();
        let mut folded = Vec::with_capacity(line.len() + 8);
        for (i, piece) in line.chunks(MAX_PIECE).enumerate() {
            if i > 0 {
                folded.extend_from_slice(b"\r\n ");
            }
            folded.extend_from_slice(piece);
        }
        folded.extend_from_slice(b"\r\n");
        if out.len() + folded.len() > MAX_ORIGINAL_HEADERS {
            break;
        }
        out.extend_from_slice(&folded);
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests;
