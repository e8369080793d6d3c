//! The address harness: a fuzzed forward-path, classified on its own, parsed inside `RCPT TO`
//! and `MAIL FROM` lines, and offered to a session whose client may not relay (R16).
//!
//! Input: the path's text (invalid UTF-8 is replaced, as the core does).
//!
//! Invariants checked:
//! - a classified path prints back exactly as written (never rewritten, R16), and its parts
//!   hold what their kind says;
//! - anything with a route in it (`%`, `!`, a leading `@`, two `@`, a literal or `:` after the
//!   last `@`) is never `Checkable`, so never looked up as local;
//! - the command parser classifies the path of `RCPT TO:<…>` as [`classify`] does, and keeps
//!   `MAIL FROM:<…>` verbatim;
//! - in a session that may not relay, a recipient gets `250` only when the driver said it is
//!   local, never for a routed path (`550 5.7.1` without a lookup) nor a foreign one.

use std::net::IpAddr;
use std::time::Instant;

use dirmail_proto::smtp::address::{ForwardPath, RcptAddress, RouteForm, classify, raw_path};
use dirmail_proto::smtp::command::{self, Command};
use dirmail_proto::smtp::{Config, Event, Request, Response, Session};

use crate::EVENT_BOUND;

pub const LOCAL_DOMAIN: &str = "example.jp";

/// The parts after the local part can only be judged when it is known where it ends.
fn domain_part(raw: &str) -> &str {
    raw.rsplit_once('@').map_or("", |(_, domain)| domain)
}

/// A route by any of R16's forms, judged on the text alone.
pub fn looks_routed(raw: &str) -> bool {
    raw.starts_with('@')
        || raw.contains(['%', '!'])
        || raw.matches('@').count() >= 2
        || domain_part(raw).starts_with('[')
        || domain_part(raw).contains(':')
}

fn check_classification(raw: &str) {
    let class = classify(raw);
    match &class {
        ForwardPath::Routed { raw: kept, form } => {
            assert_eq!(kept, raw, "a routed path was rewritten");
            let fits = match form {
                RouteForm::SourceRoute => raw.starts_with('@'),
                RouteForm::PercentHack => raw.contains('%'),
                RouteForm::BangPath => raw.contains(['!', '%', ':']),
                RouteForm::QuotedRoute => raw.starts_with('"'),
                RouteForm::AddressLiteral => domain_part(raw).starts_with('['),
                RouteForm::ExtraAt => raw.matches('@').count() >= 2,
            };
            assert!(fits, "{raw:?} is not a {form:?}");
        }
        ForwardPath::Checkable(RcptAddress::Mailbox { local_part, domain }) => {
            assert_eq!(
                format!("{local_part}@{domain}"),
                raw,
                "printed back differently"
            );
            assert!(!local_part.is_empty() && !domain.is_empty());
            assert!(
                !domain.contains(['@', '[', ']', '%', '!', ':', '"', ' ']),
                "{domain:?}"
            );
            assert!(!local_part.contains(['@', '%', '!']), "{local_part:?}");
            if local_part.starts_with('"') {
                assert!(local_part.len() >= 2 && local_part.ends_with('"'));
            } else {
                assert!(!local_part.contains(['"', ' ', '\\']), "{local_part:?}");
            }
        }
        ForwardPath::Checkable(RcptAddress::Postmaster) => {
            assert!(raw.eq_ignore_ascii_case("postmaster"), "{raw:?}");
        }
        ForwardPath::Invalid => {}
    }
    if looks_routed(raw) {
        assert!(
            !matches!(class, ForwardPath::Checkable(_)),
            "R16: {raw:?} is checkable"
        );
    }
}

fn check_command_lines(raw: &str) {
    let rcpt = format!("RCPT TO:<{raw}>");
    let plain = !raw.contains(['>', '"', '\\']);
    let path = raw_path(&rcpt);
    if plain {
        assert_eq!(path, Some(raw));
    }
    if let Ok(Command::Rcpt { path: parsed, .. }) = command::parse(rcpt.as_bytes()) {
        assert_eq!(
            parsed,
            path.map_or(ForwardPath::Invalid, classify),
            "{rcpt:?}"
        );
    }
    let mail = format!("MAIL FROM:<{raw}>");
    if let Ok(Command::Mail { from, .. }) = command::parse(mail.as_bytes())
        && plain
    {
        assert_eq!(from, raw, "the reverse-path was rewritten");
    }
}

/// R16 end to end: a client outside the allow list, not authenticated.
fn check_session(raw: &str) {
    let peer: IpAddr = "198.51.100.7".parse().expect("an address");
    let config = Config::new("mx.example.jp");
    let max_line = config.max_line_length;
    let mut session = Session::new(config, peer, true, Instant::now());
    let now = Instant::now();
    session.feed(b"EHLO client.example\r\nMAIL FROM:<>\r\n", now);
    let mut replies = Vec::new();
    let mut asked: Option<Response> = None;
    let mut drain = |session: &mut Session, replies: &mut Vec<(u16, String)>| {
        for _ in 0..EVENT_BOUND {
            match session.poll() {
                None => return,
                Some(Event::Reply(reply)) => {
                    let status = reply.status.map(|s| s.to_string()).unwrap_or_default();
                    replies.push((reply.code, status));
                }
                Some(Event::Request(Request::CheckRecipient(address))) => {
                    let written = address.as_written();
                    assert!(
                        matches!(classify(&written), ForwardPath::Checkable(_)),
                        "R16: {written:?} was looked up"
                    );
                    let response = match &address {
                        RcptAddress::Postmaster => Response::Local {
                            mailbox: "postmaster".into(),
                            quota_left: None,
                        },
                        RcptAddress::Mailbox { domain, .. }
                            if domain.eq_ignore_ascii_case(LOCAL_DOMAIN) =>
                        {
                            Response::Local {
                                mailbox: "local".into(),
                                quota_left: None,
                            }
                        }
                        RcptAddress::Mailbox { .. } => Response::NotLocal,
                    };
                    asked = Some(response.clone());
                    assert_eq!(session.answer(response), Ok(()));
                }
                Some(other) => panic!("unexpected {other:?}"),
            }
        }
        panic!("the session did not settle");
    };
    drain(&mut session, &mut replies);
    assert_eq!(
        replies.iter().map(|r| r.0).collect::<Vec<_>>(),
        [250, 250],
        "EHLO and MAIL"
    );
    replies.clear();
    let line = format!("RCPT TO:<{raw}>\r\n");
    session.feed(line.as_bytes(), now);
    drain(&mut session, &mut replies);
    let Some((code, status)) = replies.first().cloned() else {
        panic!("no reply to {line:?}");
    };
    let was_local = matches!(asked, Some(Response::Local { .. }));
    if (200..300).contains(&code) {
        assert!(was_local, "R16: {raw:?} accepted without being local");
    }
    if asked == Some(Response::NotLocal) {
        assert_eq!((code, status.as_str()), (550, "5.7.1"), "{raw:?}");
    }
    // A line over the limit is refused as too long before it is parsed.
    let command = line.trim_end();
    if command.len() > max_line {
        assert_eq!((code, status.as_str()), (500, "5.5.6"), "{raw:?}");
    } else if let Ok(Command::Rcpt {
        path: ForwardPath::Routed { .. },
        ..
    }) = command::parse(command.as_bytes())
    {
        assert_eq!(asked, None, "R16: a routed path was looked up");
        assert_eq!((code, status.as_str()), (550, "5.7.1"), "{raw:?}");
    }
}

/// The fuzz target's body.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    check_classification(&text);
    if !text.contains(['\r', '\n']) {
        check_command_lines(&text);
        check_session(&text);
    }
}
