//! Property tests for envelope addresses (issue 7), end to end through the SMTP core:
//! - relay decisions: no generated address outside the local domains, in any of R16's
//!   smuggling forms, is accepted from a client that neither authenticated nor is in the allow
//!   list (the unit property in `proto/smtp/address.rs` covers `decide_recipient` alone; this
//!   one goes through the command parser, the classification and the session);
//! - address parsing: whatever parses prints back the same, on its own and inside
//!   `RCPT TO:<…>` and `MAIL FROM:<…>`.

use std::net::IpAddr;
use std::time::Instant;

use dirmail_proto::smtp::address::{ForwardPath, RcptAddress, classify};
use dirmail_proto::smtp::command::{self, Command};
use dirmail_proto::smtp::{Config, Event, ReceivedHeader, Reply, Request, Response, Session};
use proptest::prelude::*;

const LOCAL_DOMAIN: &str = "example.jp";

/// What one RCPT got: the reply, and whether the driver was asked about the address.
#[derive(Debug)]
struct Outcome {
    reply: Reply,
    looked_up: bool,
}

/// A session on the MX port from `peer`, relaying for `allow`; after EHLO and MAIL, one RCPT
/// for `raw`. The driver plays a directory whose only local domain is `example.jp`, where
/// every local part is a mailbox: the most generous answer a lookup can give.
fn rcpt(raw: &str, peer: IpAddr, allow: &[&str], authenticated: bool) -> Outcome {
    let mut config = Config::new("mx.example.jp");
    config.relay_allow = allow
        .iter()
        .map(|n| n.parse().expect("a network"))
        .collect();
    config.plaintext_auth_without_tls = true;
    let now = Instant::now();
    let mut session = Session::new(config, peer, false, now);
    let mut script = String::from("EHLO client.example\r\n");
    if authenticated {
        script.push_str("AUTH PLAIN AHVzZXJAZXhhbXBsZS5qcABzZWNyZXQ=\r\n");
    }
    script.push_str("MAIL FROM:<>\r\n");
    session.feed(script.as_bytes(), now);
    let (replies, _, _) = drain(&mut session);
    let codes: Vec<u16> = replies.iter().map(|r| r.code).collect();
    let expected: &[u16] = if authenticated {
        &[250, 235, 250]
    } else {
        &[250, 250]
    };
    assert_eq!(codes, expected, "{replies:?}");
    session.feed(format!("RCPT TO:<{raw}>\r\n").as_bytes(), now);
    let (mut replies, looked_up, _) = drain(&mut session);
    assert_eq!(replies.len(), 1, "one reply to one RCPT: {replies:?}");
    Outcome {
        reply: replies.remove(0),
        looked_up,
    }
}

/// Plays the driver until the session waits for input: replies, whether a recipient was
/// looked up, and the deliveries asked for (by the trace header their spool file began with).
fn drain(session: &mut Session) -> (Vec<Reply>, bool, Vec<ReceivedHeader>) {
    let mut replies = Vec::new();
    let mut looked_up = false;
    let mut deliveries = Vec::new();
    let mut spooled = None;
    for _ in 0..1_000 {
        let Some(event) = session.poll() else {
            return (replies, looked_up, deliveries);
        };
        match event {
            Event::Reply(reply) => replies.push(reply),
            Event::Request(request) => {
                let response = match request {
                    Request::Authenticate(_) => Response::AuthOk {
                        identity: "user@example.jp".into(),
                        own_addresses: vec![String::new()],
                    },
                    Request::CheckRecipient(address) => {
                        looked_up = true;
                        match address {
                            RcptAddress::Mailbox { domain, .. }
                                if domain.eq_ignore_ascii_case(LOCAL_DOMAIN) =>
                            {
                                Response::Local {
                                    mailbox: "m".into(),
                                    quota_left: None,
                                }
                            }
                            RcptAddress::Mailbox { .. } => Response::NotLocal,
                            RcptAddress::Postmaster => Response::Local {
                                mailbox: "postmaster".into(),
                                quota_left: None,
                            },
                        }
                    }
                    Request::OpenMessage(received) => {
                        spooled = Some(received);
                        Response::Opened
                    }
                    Request::AppendMessage(_) => Response::Appended,
                    Request::DiscardMessage => Response::Discarded,
                    Request::Deliver(_) => {
                        deliveries.extend(spooled.take());
                        Response::Delivered
                    }
                };
                session.answer(response).expect("an answer that fits");
            }
            Event::StartTls | Event::Close => {}
        }
    }
    panic!("the session did not settle");
}

fn stranger() -> IpAddr {
    "203.0.113.9".parse().expect("an address")
}

/// Allow lists that do not hold the stranger (including none at all).
const ALLOW_LISTS: [&[&str]; 3] = [
    &[],
    &["192.0.2.0/24", "2001:db8::/32"],
    &["203.0.113.10/32", "198.51.100.0/24"],
];

// --- generators -------------------------------------------------------------------------

fn atom() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9#$&'*+/=?^_`{|}~-]{1,8}"
}

fn dot_atom() -> impl Strategy<Value = String> {
    prop::collection::vec(atom(), 1..4).prop_map(|atoms| atoms.join("."))
}

/// A quoted local part, with escapes and the characters that matter to routing.
fn quoted(inner: &'static str) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => inner.prop_map(|s: String| s),
            1 => prop_oneof![Just("\\\"".to_owned()), Just("\\\\".to_owned())],
        ],
        0..6,
    )
    .prop_map(|parts| format!("\"{}\"", parts.concat()))
}

fn local_part() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => dot_atom(),
        1 => quoted("[a-zA-Z0-9 .,;]{1,4}"),
        1 => "[a-zéüあ日本]{1,6}",
    ]
}

fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?",
        1 => "[a-zéü日本]{1,5}",
    ]
}

fn host() -> impl Strategy<Value = String> {
    prop::collection::vec(label(), 1..4).prop_map(|labels| labels.join("."))
}

/// A host that is not the local domain, including names built to look like it.
fn foreign_host() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => host().prop_filter("not the local domain", |h| !h.eq_ignore_ascii_case(LOCAL_DOMAIN)),
        1 => Just("example.jp.evil.example".to_owned()),
        1 => Just("evil-example.jp".to_owned()),
        1 => Just("EXAMPLE.JP.".to_owned()),
        1 => Just("example.jp.".to_owned()),
        1 => Just("xn--example-jp.example".to_owned()),
    ]
}

fn literal() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|[a, b, c, d]| format!("[{a}.{b}.{c}.{d}]")),
        any::<[u16; 8]>().prop_map(|g| {
            let groups: Vec<String> = g.iter().map(|x| format!("{x:x}")).collect();
            format!("[IPv6:{}]", groups.join(":"))
        }),
    ]
}

/// The final host of a route: the local domain itself, a literal, or a stranger.
fn any_relay_host() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(LOCAL_DOMAIN.to_owned()),
        Just("EXAMPLE.jp".to_owned()),
        literal(),
        foreign_host(),
    ]
}

/// Addresses whose mail would leave the local domains, in every form R16 names: the plain
/// foreign address, the percent hack, quoted routes, extra `@`, source routes, bang paths
/// and address literals, each also aimed through the local domain.
fn outside_address() -> impl Strategy<Value = String> {
    let l = local_part;
    prop_oneof![
        (l(), foreign_host()).prop_map(|(l, h)| format!("{l}@{h}")),
        (l(), foreign_host(), any_relay_host()).prop_map(|(l, f, r)| format!("{l}%{f}@{r}")),
        (l(), foreign_host(), prop::option::of(any_relay_host())).prop_map(|(l, f, r)| {
            let inner = l.trim_matches('"');
            match r {
                Some(r) => format!("\"{inner}@{f}\"@{r}"),
                None => format!("\"{inner}@{f}\""),
            }
        }),
        (l(), foreign_host(), prop::option::of(any_relay_host())).prop_map(|(l, f, r)| {
            let inner = l.trim_matches('"');
            match r {
                Some(r) => format!("\"{inner}%{f}\"@{r}"),
                None => format!("\"{inner}%{f}\""),
            }
        }),
        (l(), foreign_host(), any_relay_host()).prop_map(|(l, f, r)| format!("{l}@{f}@{r}")),
        (
            prop::collection::vec(any_relay_host(), 1..3),
            l(),
            foreign_host()
        )
            .prop_map(|(hops, l, f)| {
                let hops: Vec<String> = hops.iter().map(|h| format!("@{h}")).collect();
                format!("{}:{l}@{f}", hops.join(","))
            }),
        (foreign_host(), l(), prop::option::of(any_relay_host())).prop_map(|(f, l, r)| match r {
            Some(r) => format!("{f}!{l}@{r}"),
            None => format!("{f}!{l}"),
        }),
        (l(), literal()).prop_map(|(l, lit)| format!("{l}@{lit}")),
        (l(), any_relay_host(), "[:!%]", foreign_host())
            .prop_map(|(l, r, sep, f)| format!("{l}@{r}{sep}{f}")),
    ]
}

/// Plausible paths of every shape, and some that are not paths at all.
fn any_path() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (local_part(), host()).prop_map(|(l, h)| format!("{l}@{h}")),
        2 => outside_address(),
        1 => quoted("[a-zA-Z0-9 @%!:<>\\[\\],.]{1,4}")
            .prop_flat_map(|q| (Just(q), host()))
            .prop_map(|(q, h)| format!("{q}@{h}")),
        1 => Just("postmaster".to_owned()),
        1 => Just("PostMaster".to_owned()),
        1 => "[ -=?-~]{0,24}",
    ]
}

// --- properties ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// R16: a client that did not authenticate and is not in the allow list gets no `2xx`
    /// for any address outside the local domains, whatever form it takes; a routed form is
    /// refused without a lookup.
    #[test]
    fn no_outside_address_is_accepted_without_auth_or_allow_list(
        raw in outside_address(),
        allow in 0..ALLOW_LISTS.len(),
        peer in prop_oneof![
            Just(stranger()),
            Just("::ffff:203.0.113.9".parse::<IpAddr>().expect("an address")),
            Just("2001:db9::9".parse::<IpAddr>().expect("an address")),
        ],
    ) {
        let outcome = rcpt(&raw, peer, ALLOW_LISTS[allow], false);
        prop_assert!(
            !(200..300).contains(&outcome.reply.code),
            "R16: {raw:?} accepted: {}", outcome.reply
        );
        if let ForwardPath::Routed { .. } = classify(&raw) {
            prop_assert!(!outcome.looked_up, "R16: the routed {raw:?} was looked up");
            let text = outcome.reply.to_string();
            prop_assert!(text.starts_with("550 5.7.1"), "{raw:?}: {text}");
        }
    }

    /// Whatever parses prints back the same: a classified path keeps the client's text
    /// exactly, and so do `RCPT TO:<…>` and `MAIL FROM:<…>` around it.
    #[test]
    fn whatever_parses_prints_back_the_same(raw in any_path()) {
        match classify(&raw) {
            ForwardPath::Checkable(RcptAddress::Mailbox { local_part, domain }) => {
                prop_assert_eq!(format!("{local_part}@{domain}"), raw.clone());
                let address = RcptAddress::Mailbox { local_part, domain };
                prop_assert_eq!(address.as_written(), raw.clone());
            }
            ForwardPath::Checkable(RcptAddress::Postmaster) => {
                prop_assert!(raw.eq_ignore_ascii_case("postmaster"));
            }
            ForwardPath::Routed { raw: kept, .. } => prop_assert_eq!(kept, raw.clone()),
            ForwardPath::Invalid => {}
        }
        if let Ok(Command::Rcpt { path, .. }) = command::parse(format!("RCPT TO:<{raw}>").as_bytes()) {
            match path {
                // `postmaster` is case-insensitive (RFC 5321 §4.5.1) and has one spelling.
                ForwardPath::Checkable(RcptAddress::Postmaster) => {
                    prop_assert!(raw.eq_ignore_ascii_case("postmaster"))
                }
                ForwardPath::Checkable(address) => {
                    prop_assert_eq!(address.as_written(), raw.clone())
                }
                ForwardPath::Routed { raw: kept, .. } => prop_assert_eq!(kept, raw.clone()),
                ForwardPath::Invalid => {}
            }
        }
        if let Ok(Command::Mail { from, .. }) = command::parse(format!("MAIL FROM:<{raw}>").as_bytes()) {
            prop_assert_eq!(from, raw);
        }
    }
}

// --- the controls that keep the properties honest -----------------------------------------

#[test]
fn local_recipients_are_accepted_so_the_refusals_mean_something() {
    for raw in [
        "bob@example.jp",
        "Bob.Smith@EXAMPLE.JP",
        "\"bob smith\"@example.jp",
        "postmaster",
    ] {
        let outcome = rcpt(raw, stranger(), &[], false);
        assert_eq!(outcome.reply.code, 250, "{raw}: {}", outcome.reply);
        assert!(outcome.looked_up);
    }
}

#[test]
fn the_allow_list_and_auth_do_open_the_relay() {
    let foreign = "friend@elsewhere.example";
    let allowed = rcpt(foreign, stranger(), &["203.0.113.0/24"], false);
    assert_eq!(allowed.reply.code, 250, "{}", allowed.reply);
    let mapped: IpAddr = "::ffff:203.0.113.9".parse().expect("an address");
    assert_eq!(
        rcpt(foreign, mapped, &["203.0.113.0/24"], false).reply.code,
        250
    );
    assert_eq!(rcpt(foreign, stranger(), &[], true).reply.code, 250);
    let routed = rcpt("to%dom.example@example.jp", stranger(), &[], true);
    assert_eq!(
        routed.reply.code, 250,
        "relayed verbatim once authenticated"
    );
    assert!(!routed.looked_up);
}

/// Found by `fuzz/smtp_session` (`fuzz/regressions/smtp_session/received-for-bare-cr`).
#[test]
fn received_for_recipient_is_cleaned() {
    let mut config = Config::new("mx.example.jp");
    config.relay_allow = vec!["203.0.113.0/24".parse().expect("a network")];
    let now = Instant::now();
    let mut session = Session::new(config, stranger(), false, now);
    session.feed(
        b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<\"a\rb\"@elsewhere.example>\r\nDATA\r\nx\r\n.\r\n",
        now,
    );
    let (replies, _, deliveries) = drain(&mut session);
    assert_eq!(deliveries.len(), 1, "{replies:?}");
    let header = deliveries[0].render("Thu, 1 Jan 1970 00:00:00 +0000");
    let bare_cr = header
        .as_bytes()
        .windows(2)
        .any(|w| w[0] == b'\r' && w[1] != b'\n');
    assert!(!bare_cr, "a bare CR in {header:?}");
}
