//! SMTP commands: `smtp-proto` parses the line; the envelope paths are re-read verbatim
//! (see `address.rs`) because R16 forbids the rewriting `smtp-proto` does.

use std::borrow::Cow;

use smtp_proto::{AUTH_CRAM_MD5, AUTH_LOGIN, AUTH_PLAIN, Error as ParseError, Request};

use super::address::{ForwardPath, classify, raw_path};
use super::reply::Reply;
use crate::auth::Mechanism;

/// One command line, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    Mail {
        /// The reverse-path exactly as written (empty for `<>`).
        from: String,
        /// The `SIZE=` parameter (RFC 1870), when given.
        size: Option<u64>,
    },
    Rcpt {
        path: ForwardPath,
        /// False when `smtp-proto` refused the line; a routed path is still refused as a
        /// relay attempt first (R16), so every smuggling form gets the same answer.
        well_formed: bool,
    },
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
    StartTls,
    Auth {
        /// `None` for a mechanism dirmail does not speak.
        mechanism: Option<Mechanism>,
        /// The initial response, base64 (`=` for empty), when given.
        initial: Option<String>,
    },
    /// Commands RFC 5321 knows and dirmail does not offer (EXPN, BDAT, ETRN, ATRN, BURL, LHLO).
    NotImplemented,
}

/// Parses one line (without its line ending).
pub fn parse(line: &[u8]) -> Result<Command, Reply> {
    let mut framed = Vec::with_capacity(line.len() + 2);
    framed.extend_from_slice(line);
    framed.extend_from_slice(b"\r\n");
    let text = String::from_utf8_lossy(line);
    match Request::parse(&mut framed.iter()) {
        Ok(request) => Ok(from_request(request, &text)),
        Err(ParseError::InvalidRecipientAddress) if is_verb(line, b"RCPT") => {
            Ok(rcpt(&text, false))
        }
        Err(ParseError::SyntaxError { .. })
            if is_verb(line, b"RCPT") && raw_path(&text).is_some() =>
        {
            Ok(rcpt(&text, false))
        }
        Err(error) => Err(refusal(error)),
    }
}

fn from_request(request: Request<Cow<'_, str>>, text: &str) -> Command {
    match request {
        Request::Ehlo { host } => Command::Ehlo(host.into_owned()),
        Request::Helo { host } => Command::Helo(host.into_owned()),
        Request::Mail { from } => Command::Mail {
            from: raw_path(text).unwrap_or_default().to_owned(),
            size: (from.size > 0).then_some(from.size as u64),
        },
        Request::Rcpt { .. } => rcpt(text, true),
        Request::Data => Command::Data,
        Request::Rset => Command::Rset,
        Request::Noop { .. } => Command::Noop,
        Request::Quit => Command::Quit,
        Request::Vrfy { .. } => Command::Vrfy,
        Request::Help { .. } => Command::Help,
        Request::StartTls => Command::StartTls,
        Request::Auth {
            mechanism,
            initial_response,
        } => Command::Auth {
            mechanism: match mechanism {
                AUTH_PLAIN => Some(Mechanism::Plain),
                AUTH_LOGIN => Some(Mechanism::Login),
                AUTH_CRAM_MD5 => Some(Mechanism::CramMd5),
                _ => None,
            },
            initial: (!initial_response.is_empty()).then(|| initial_response.into_owned()),
        },
        Request::Lhlo { .. }
        | Request::Bdat { .. }
        | Request::Expn { .. }
        | Request::Etrn { .. }
        | Request::Atrn { .. }
        | Request::Burl { .. } => Command::NotImplemented,
    }
}

fn rcpt(text: &str, well_formed: bool) -> Command {
    Command::Rcpt {
        path: raw_path(text).map_or(ForwardPath::Invalid, classify),
        well_formed,
    }
}

fn is_verb(line: &[u8], verb: &[u8]) -> bool {
    line.get(..verb.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(verb))
}

fn refusal(error: ParseError) -> Reply {
    match error {
        ParseError::InvalidSenderAddress => Reply::bad_sender_syntax(),
        ParseError::InvalidRecipientAddress => Reply::bad_recipient_syntax(),
        ParseError::SyntaxError { syntax } => Reply::syntax(format!("Syntax: {syntax}")),
        ParseError::InvalidParameter { param } => {
            Reply::syntax(format!("Invalid parameter {param}"))
        }
        ParseError::UnsupportedParameter { param } => Reply::unsupported_parameter(&param),
        ParseError::UnknownCommand
        | ParseError::NeedsMoreData { .. }
        | ParseError::ResponseTooLong
        | ParseError::InvalidResponse { .. } => Reply::unrecognized(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::address::{RcptAddress, RouteForm};

    #[test]
    fn commands() {
        assert_eq!(
            parse(b"ehlo client.example"),
            Ok(Command::Ehlo("client.example".into()))
        );
        assert_eq!(
            parse(b"MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME SMTPUTF8"),
            Ok(Command::Mail {
                from: "a@b.example".into(),
                size: Some(1000)
            })
        );
        assert_eq!(
            parse(b"MAIL FROM:<>"),
            Ok(Command::Mail {
                from: String::new(),
                size: None
            })
        );
        assert_eq!(
            parse(b"RCPT TO:<Postmaster>"),
            Ok(Command::Rcpt {
                path: ForwardPath::Checkable(RcptAddress::Postmaster),
                well_formed: true
            })
        );
        assert_eq!(
            parse(b"AUTH plain AHUAcA=="),
            Ok(Command::Auth {
                mechanism: Some(Mechanism::Plain),
                initial: Some("AHUAcA==".into())
            })
        );
        assert_eq!(
            parse(b"AUTH NTLM"),
            Ok(Command::Auth {
                mechanism: None,
                initial: None
            })
        );
        assert_eq!(parse(b"EXPN list"), Ok(Command::NotImplemented));
        assert_eq!(parse(b"FOO bar").map_err(|r| r.code), Err(500));
        assert_eq!(
            parse(b"MAIL FROM:<a@b> FOO=1").map_err(|r| r.code),
            Err(555)
        );
        assert_eq!(parse(b"MAIL TO:<a@b>").map_err(|r| r.code), Err(501));
    }

    #[test]
    fn routed_rcpt_survives_the_parser() {
        let Ok(Command::Rcpt { path, .. }) = parse(b"RCPT TO:<to@dom@[192.0.2.1]>") else {
            panic!()
        };
        assert!(matches!(
            path,
            ForwardPath::Routed {
                form: RouteForm::ExtraAt,
                ..
            }
        ));
        let Ok(Command::Rcpt { path, .. }) = parse(b"RCPT TO:<@srv.example:to@dom.example>") else {
            panic!()
        };
        assert_eq!(
            path,
            ForwardPath::Routed {
                raw: "@srv.example:to@dom.example".into(),
                form: RouteForm::SourceRoute
            }
        );
    }
}
