//! POP3 replies: `+OK`, `-ERR` with RFC 2449/3206 response codes, multi-line bodies with
//! byte-stuffing, and SASL continuations (`+ …`, RFC 5034).

use std::fmt;

/// RFC 2449 §8 / RFC 3206 extended response codes, in brackets after `-ERR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespCode {
    /// The credentials (or the way they were sent) are refused.
    Auth,
    /// A temporary problem: the directory or the store is unavailable.
    SysTemp,
    /// A lasting problem the user cannot fix: the mailbox is locked by the administrator.
    SysPerm,
    /// Another session holds the mailbox (R20).
    InUse,
}

impl fmt::Display for RespCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RespCode::Auth => "[AUTH]",
            RespCode::SysTemp => "[SYS/TEMP]",
            RespCode::SysPerm => "[SYS/PERM]",
            RespCode::InUse => "[IN-USE]",
        })
    }
}

/// One POP3 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok(String),
    Err(Option<RespCode>, String),
    /// `+OK first` then `lines`, each byte-stuffed, then `.`.
    Lines {
        first: String,
        lines: Vec<String>,
    },
    /// `+OK first` then a message body already in wire form (see [`wire_body`]).
    Message {
        first: String,
        body: Vec<u8>,
    },
    /// A SASL challenge, base64 (may be empty).
    Challenge(String),
}

impl Reply {
    pub fn ok(text: impl Into<String>) -> Self {
        Reply::Ok(clean(text.into()))
    }

    pub fn err(text: impl Into<String>) -> Self {
        Reply::Err(None, clean(text.into()))
    }

    pub fn err_code(code: RespCode, text: impl Into<String>) -> Self {
        Reply::Err(Some(code), clean(text.into()))
    }

    /// The server is stopping. Deletions happen only at QUIT (R20), so none happened.
    pub fn shutting_down() -> Self {
        Reply::err_code(
            RespCode::SysTemp,
            "Server shutting down; nothing was deleted",
        )
    }

    /// Refused before the session starts: the server's connection limits (`why` says which).
    pub fn too_busy(why: &str) -> Self {
        Reply::err_code(RespCode::SysTemp, why)
    }

    pub fn is_ok(&self) -> bool {
        !matches!(self, Reply::Err(..))
    }

    /// The reply as it goes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Reply::Ok(text) if text.is_empty() => b"+OK\r\n".to_vec(),
            Reply::Ok(text) => format!("+OK {text}\r\n").into_bytes(),
            Reply::Err(None, text) => format!("-ERR {text}\r\n").into_bytes(),
            Reply::Err(Some(code), text) => format!("-ERR {code} {text}\r\n").into_bytes(),
            Reply::Challenge(base64) => format!("+ {base64}\r\n").into_bytes(),
            Reply::Lines { first, lines } => {
                let mut out = format!("+OK {first}\r\n");
                for line in lines {
                    if line.starts_with('.') {
                        out.push('.');
                    }
                    out.push_str(line);
                    out.push_str("\r\n");
                }
                out.push_str(".\r\n");
                out.into_bytes()
            }
            Reply::Message { first, body } => {
                let mut out = format!("+OK {first}\r\n").into_bytes();
                out.extend_from_slice(body);
                out
            }
        }
    }
}

/// Replies never carry a line ending of their own (some echo client input).
fn clean(text: String) -> String {
    if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect()
    } else {
        text
    }
}

/// A stored message in multi-line wire form (RFC 1939 §3): every line ends in CRLF (a lone
/// LF in the store counts as a line end), a line starting with `.` gets another `.`, and
/// `.` CRLF ends it. With `top_lines`, only the header, the blank line and that many body
/// lines are sent (TOP).
pub fn wire_body(message: &[u8], top_lines: Option<u32>) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 32 + 8);
    let mut lines: Vec<&[u8]> = message.split(|&b| b == b'\n').collect();
    // A final line end leaves an empty piece behind, which is not a line.
    if lines.last().is_some_and(|last| last.is_empty()) {
        lines.pop();
    }
    let mut in_header = true;
    let mut body_left = top_lines;
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !in_header {
            match &mut body_left {
                Some(0) => break,
                Some(left) => *left -= 1,
                None => {}
            }
        }
        if in_header && line.is_empty() {
            in_header = false;
        }
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms() {
        assert_eq!(Reply::ok("hi").to_bytes(), b"+OK hi\r\n");
        assert_eq!(
            Reply::err_code(RespCode::InUse, "busy\r\n+OK").to_bytes(),
            b"-ERR [IN-USE] busy??+OK\r\n"
        );
        let lines = Reply::Lines {
            first: "list".into(),
            lines: vec!["1 10".into(), ".x".into()],
        };
        assert_eq!(lines.to_bytes(), b"+OK list\r\n1 10\r\n..x\r\n.\r\n");
    }

    #[test]
    fn bodies_are_stuffed_and_terminated() {
        assert_eq!(
            wire_body(b"A: b\r\n\r\n.\r\n..x\r\n", None),
            b"A: b\r\n\r\n..\r\n...x\r\n.\r\n"
        );
        assert_eq!(
            wire_body(b"A: b\n\nlf only", None),
            b"A: b\r\n\r\nlf only\r\n.\r\n"
        );
        assert_eq!(wire_body(b"", None), b".\r\n");
    }

    #[test]
    fn top_sends_header_and_n_lines() {
        let message = b"A: 1\r\nB: 2\r\n\r\none\r\n.two\r\nthree\r\n";
        assert_eq!(wire_body(message, Some(0)), b"A: 1\r\nB: 2\r\n\r\n.\r\n");
        assert_eq!(
            wire_body(message, Some(2)),
            b"A: 1\r\nB: 2\r\n\r\none\r\n..two\r\n.\r\n"
        );
        assert_eq!(wire_body(message, Some(99)), wire_body(message, None));
        // No body at all: the header is the whole message.
        assert_eq!(wire_body(b"A: 1\r\n", Some(5)), b"A: 1\r\n.\r\n");
    }
}
