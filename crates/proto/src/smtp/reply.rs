//! SMTP replies: a code, an RFC 3463 enhanced status, and text, written as RFC 5321 lines.
//!
//! Every reply the core sends is built by one of the named constructors below, so the codes
//! of docs/spec.md §6 can be read (and grepped) in one place.

use std::fmt;

/// An RFC 3463 enhanced status code, `class.subject.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u8, pub u16, pub u16);

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// One SMTP reply, possibly several lines long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Absent in the greeting, the EHLO list and `354`, where RFC 2034 does not use one.
    pub status: Option<Status>,
    /// At least one line; none contains CR or LF.
    lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, status: Option<Status>, text: impl Into<String>) -> Self {
        Reply::multi(code, status, vec![text.into()])
    }

    /// A multi-line reply. Control characters (anything a client could use to end a line
    /// early, since some text echoes client input) are replaced by `?`.
    pub fn multi(code: u16, status: Option<Status>, lines: Vec<String>) -> Self {
        let mut lines: Vec<String> = lines
            .into_iter()
            .map(|line| {
                line.chars()
                    .map(|c| if c.is_control() { '?' } else { c })
                    .collect()
            })
            .collect();
        if lines.is_empty() {
            lines.push(String::new());
        }
        Reply {
            code,
            status,
            lines,
        }
    }

    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// True for 4xx and 5xx: the command failed.
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// The reply as it goes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            write!(f, "{}{sep}", self.code)?;
            if let Some(status) = self.status {
                write!(f, "{status} ")?;
            }
            write!(f, "{line}\r\n")?;
        }
        Ok(())
    }
}

fn r(code: u16, status: (u8, u16, u16), text: impl Into<String>) -> Reply {
    Reply::new(code, Some(Status(status.0, status.1, status.2)), text)
}

// The replies of docs/spec.md §6, by the situation they answer.
impl Reply {
    pub fn greeting(hostname: &str) -> Reply {
        Reply::new(220, None, format!("{hostname} ESMTP dirmail ready"))
    }
    pub fn helo(hostname: &str) -> Reply {
        Reply::new(250, None, hostname.to_owned())
    }
    pub fn ok() -> Reply {
        r(250, (2, 0, 0), "OK")
    }
    pub fn reset() -> Reply {
        r(250, (2, 0, 0), "Reset")
    }
    pub fn bye(hostname: &str) -> Reply {
        r(221, (2, 0, 0), format!("{hostname} closing connection"))
    }
    pub fn help() -> Reply {
        r(
            214,
            (2, 0, 0),
            "See RFC 5321; commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS AUTH",
        )
    }
    pub fn vrfy() -> Reply {
        r(
            252,
            (2, 5, 0),
            "Cannot VRFY user, but will accept the message and attempt delivery",
        )
    }
    pub fn ready_for_tls() -> Reply {
        r(220, (2, 0, 0), "Ready to start TLS")
    }
    pub fn sender_ok() -> Reply {
        r(250, (2, 1, 0), "Sender OK")
    }
    pub fn recipient_ok() -> Reply {
        r(250, (2, 1, 5), "Recipient OK")
    }
    pub fn start_data() -> Reply {
        Reply::new(354, None, "Start mail input; end with <CRLF>.<CRLF>")
    }
    pub fn delivered() -> Reply {
        r(250, (2, 0, 0), "Message accepted for delivery")
    }
    pub fn auth_challenge(base64: &str) -> Reply {
        Reply::new(334, None, base64.to_owned())
    }
    pub fn auth_ok() -> Reply {
        r(235, (2, 7, 0), "Authentication successful")
    }

    // 4xx: try again later.
    pub fn too_many_errors(hostname: &str) -> Reply {
        r(
            421,
            (4, 7, 0),
            format!("{hostname} Too many errors, closing connection"),
        )
    }
    pub fn timeout(hostname: &str) -> Reply {
        r(
            421,
            (4, 4, 2),
            format!("{hostname} Timeout, closing connection"),
        )
    }
    pub fn input_overrun(hostname: &str) -> Reply {
        r(
            421,
            (4, 7, 0),
            format!("{hostname} Too much pipelined input, closing connection"),
        )
    }
    /// The server is stopping; a delivery under way has finished first.
    pub fn shutting_down(hostname: &str) -> Reply {
        r(421, (4, 3, 2), format!("{hostname} Service shutting down"))
    }
    /// Refused before the session starts: the server's connection limits (`why` says which).
    pub fn too_busy(why: &str) -> Reply {
        r(421, (4, 7, 0), why.to_owned())
    }
    pub fn too_many_recipients() -> Reply {
        r(452, (4, 5, 3), "Too many recipients")
    }
    pub fn auth_temp_fail() -> Reply {
        r(
            454,
            (4, 7, 0),
            "Temporary authentication failure, try again later",
        )
    }
    pub fn lookup_temp_fail() -> Reply {
        r(451, (4, 4, 3), "Directory unavailable, try again later")
    }
    pub fn disk_full() -> Reply {
        r(452, (4, 3, 1), "Insufficient system storage")
    }
    pub fn delivery_temp_fail() -> Reply {
        r(451, (4, 3, 0), "Local error in processing, try again later")
    }

    // 5xx: refused.
    pub fn unrecognized() -> Reply {
        r(500, (5, 5, 2), "Command unrecognized")
    }
    pub fn line_too_long() -> Reply {
        r(500, (5, 5, 6), "Line too long")
    }
    pub fn syntax(text: impl Into<String>) -> Reply {
        r(501, (5, 5, 4), text)
    }
    pub fn bad_sender_syntax() -> Reply {
        r(501, (5, 1, 7), "Bad sender address syntax")
    }
    pub fn bad_recipient_syntax() -> Reply {
        r(501, (5, 1, 3), "Bad recipient address syntax")
    }
    pub fn auth_cancelled() -> Reply {
        r(501, (5, 0, 0), "Authentication cancelled")
    }
    pub fn auth_bad_base64() -> Reply {
        r(501, (5, 5, 2), "Invalid base64 data")
    }
    pub fn auth_malformed(why: &str) -> Reply {
        r(
            501,
            (5, 5, 2),
            format!("Malformed authentication response: {why}"),
        )
    }
    pub fn not_implemented() -> Reply {
        r(502, (5, 5, 1), "Command not implemented")
    }
    pub fn bad_sequence(text: &str) -> Reply {
        r(503, (5, 5, 1), text.to_owned())
    }
    pub fn unknown_mechanism() -> Reply {
        r(504, (5, 5, 4), "Unrecognized authentication type")
    }
    pub fn auth_required() -> Reply {
        r(530, (5, 7, 0), "Authentication required")
    }
    pub fn bad_credentials() -> Reply {
        r(535, (5, 7, 8), "Authentication credentials invalid")
    }
    pub fn encryption_required() -> Reply {
        r(
            538,
            (5, 7, 11),
            "Encryption required for requested authentication mechanism",
        )
    }
    /// R17.
    pub fn no_such_mailbox() -> Reply {
        r(550, (5, 1, 1), "Mailbox unavailable: no such user here")
    }
    /// R28: RFC 3463's "routing loop detected".
    pub fn alias_loop() -> Reply {
        r(
            550,
            (5, 4, 6),
            "Alias loop: mail to this address cannot be delivered",
        )
    }
    /// R16.
    pub fn relay_denied(address: &str) -> Reply {
        r(550, (5, 7, 1), format!("Unable to relay for <{address}>"))
    }
    /// R15.
    pub fn quota_exceeded() -> Reply {
        r(
            552,
            (5, 2, 2),
            "Mailbox full: the message would exceed the quota",
        )
    }
    pub fn too_big() -> Reply {
        r(
            552,
            (5, 3, 4),
            "Message size exceeds fixed maximum message size",
        )
    }
    pub fn sender_not_owned() -> Reply {
        r(
            553,
            (5, 7, 1),
            "Sender address not owned by the authenticated user",
        )
    }
    /// R19. The content (not a command) is refused, so 554 "transaction failed" with the
    /// media-error class 5.6.0; the text names the reason for the client's bounce.
    pub fn bare_line_ending() -> Reply {
        r(
            554,
            (5, 6, 0),
            "Message refused: bare CR or LF in the data; lines must end with CRLF",
        )
    }
    pub fn nul_octets() -> Reply {
        r(
            550,
            (5, 6, 0),
            "Message refused: NUL octets are not accepted",
        )
    }
    pub fn no_valid_recipients() -> Reply {
        r(554, (5, 5, 1), "No valid recipients")
    }
    pub fn unsupported_parameter(param: &str) -> Reply {
        r(555, (5, 5, 4), format!("Unsupported parameter {param}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form() {
        assert_eq!(Reply::ok().to_string(), "250 2.0.0 OK\r\n");
        let ehlo = Reply::multi(250, None, vec!["mx".into(), "PIPELINING".into()]);
        assert_eq!(ehlo.to_string(), "250-mx\r\n250 PIPELINING\r\n");
        assert_eq!(
            Reply::relay_denied("a@b\r\n250 injected").to_string(),
            "550 5.7.1 Unable to relay for <a@b??250 injected>\r\n"
        );
    }
}
