//! In-memory SMTP sessions: a scripted driver answers the core's requests; no sockets.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::auth::{Credentials, Proof, encode};
use crate::names::Secret;

const DOMAIN: &str = "example.jp";

/// Plays the driver: a directory with `user@example.jp` (password `secret`), `full@` (100
/// octets of quota left), `temp@` (directory down), a spool file kept in memory, and a store
/// that fails on request.
#[derive(Debug, Default)]
struct Driver {
    requests: Vec<Request>,
    deliveries: Vec<Stored>,
    /// The spool file of the message coming in: its trace header and what was appended.
    spool: Option<(ReceivedHeader, Vec<u8>)>,
    /// The answer to `OpenMessage` and to `AppendMessage` when not the usual one.
    open_fails: Option<Response>,
    append_fails: Option<Response>,
    discards: usize,
}

/// A message as the driver stored it.
#[derive(Debug, Clone)]
struct Stored {
    envelope_from: String,
    recipients: Vec<Recipient>,
    received: ReceivedHeader,
    message: Vec<u8>,
}

impl Driver {
    fn respond(&mut self, request: &Request) -> Response {
        self.requests.push(request.clone());
        match request {
            Request::Authenticate(Credentials {
                username, proof, ..
            }) => {
                if username == "temp" {
                    return Response::TempFail;
                }
                if username == "user@example.jp" && proof.verify(&Secret::new("secret")) {
                    Response::AuthOk {
                        identity: username.clone(),
                        own_addresses: vec!["user@example.jp".into(), "alias@example.jp".into()],
                    }
                } else {
                    Response::BadCredentials
                }
            }
            Request::CheckRecipient(RcptAddress::Postmaster) => Response::Local {
                mailbox: "admin@example.jp".into(),
                quota_left: None,
            },
            Request::CheckRecipient(RcptAddress::Mailbox { local_part, domain }) => {
                if !domain.eq_ignore_ascii_case(DOMAIN) {
                    return Response::NotLocal;
                }
                match local_part.to_ascii_lowercase().as_str() {
                    "user" | "postmaster" => Response::Local {
                        mailbox: "user@example.jp".into(),
                        quota_left: None,
                    },
                    "other" => Response::Local {
                        mailbox: "other@example.jp".into(),
                        quota_left: None,
                    },
                    "full" => Response::Local {
                        mailbox: "full@example.jp".into(),
                        quota_left: Some(100),
                    },
                    "temp" => Response::TempFail,
                    "looping" => Response::AliasLoop,
                    _ => Response::LocalUnknown,
                }
            }
            Request::OpenMessage(received) => {
                assert!(self.spool.is_none(), "a spool file was left behind");
                if let Some(failure) = &self.open_fails {
                    return failure.clone();
                }
                self.spool = Some((received.clone(), Vec::new()));
                Response::Opened
            }
            Request::AppendMessage(piece) => {
                assert!(piece.len() <= data::PIECE + 1, "a piece of {}", piece.len());
                if let Some(failure) = &self.append_fails {
                    return failure.clone();
                }
                let (_, spooled) = self.spool.as_mut().expect("a spool file");
                spooled.extend_from_slice(piece);
                Response::Appended
            }
            Request::DiscardMessage => {
                self.spool.take().expect("a spool file to discard");
                self.discards += 1;
                Response::Discarded
            }
            Request::Deliver(delivery) => {
                let (received, mut message) = self.spool.take().expect("a spool file");
                message.extend_from_slice(&delivery.tail);
                let text = String::from_utf8_lossy(&message).into_owned();
                self.deliveries.push(Stored {
                    envelope_from: delivery.envelope_from.clone(),
                    recipients: delivery.recipients.clone(),
                    received,
                    message,
                });
                if text.contains("DISKFULL") {
                    Response::DiskFull
                } else if text.contains("OVERQUOTA") {
                    Response::QuotaExceeded
                } else if text.contains("STOREDOWN") {
                    Response::TempFail
                } else {
                    Response::Delivered
                }
            }
        }
    }
}

struct Harness {
    session: Session,
    driver: Driver,
    now: Instant,
    closed: bool,
    tls_handshakes: usize,
}

/// The text written since the last command, checked fluently.
#[derive(Debug)]
struct Written(String);

impl Written {
    /// The last reply line starts with `prefix`.
    #[track_caller]
    fn expect(self, prefix: &str) -> Self {
        let last = self.0.lines().last().unwrap_or_default();
        assert!(
            last.starts_with(prefix),
            "expected {prefix:?}, got {:?}",
            self.0
        );
        self
    }
    #[track_caller]
    fn contains(self, needle: &str) -> Self {
        assert!(
            self.0.contains(needle),
            "expected {needle:?} in {:?}",
            self.0
        );
        self
    }
    #[track_caller]
    fn lacks(self, needle: &str) -> Self {
        assert!(
            !self.0.contains(needle),
            "did not expect {needle:?} in {:?}",
            self.0
        );
        self
    }
    #[track_caller]
    fn empty(self) -> Self {
        assert_eq!(self.0, "");
        self
    }
}

fn config() -> Config {
    let mut config = Config::new("mx.example.jp");
    config.cram_challenge = "<1896.697170952@mx.example.jp>".into();
    config.max_message_size = 1000;
    config
}

fn peer() -> IpAddr {
    "192.0.2.10".parse().unwrap()
}

impl Harness {
    fn new(config: Config) -> Self {
        Harness::with(config, peer(), false)
    }

    fn with(config: Config, peer: IpAddr, tls: bool) -> Self {
        let now = Instant::now();
        Harness {
            session: Session::new(config, peer, tls, now),
            driver: Driver::default(),
            now,
            closed: false,
            tls_handshakes: 0,
        }
    }

    /// A session on TLS that has said EHLO.
    fn ready(config: Config) -> Self {
        let mut h = Harness::with(config, peer(), true);
        h.cmd("EHLO client.example").expect("250 ");
        h
    }

    fn authed(config: Config) -> Self {
        let mut h = Harness::ready(config);
        h.cmd(&format!(
            "AUTH PLAIN {}",
            encode("\0user@example.jp\0secret")
        ))
        .expect("235 2.7.0");
        h
    }

    fn send(&mut self, bytes: &[u8]) -> Written {
        self.session.feed(bytes, self.now);
        Written(self.drain())
    }

    fn drain(&mut self) -> String {
        let mut written = String::new();
        // Bounded like quinn's test pairs: a livelock fails instead of hanging.
        for _ in 0..10_000 {
            let Some(event) = self.session.poll() else {
                return written;
            };
            match event {
                Event::Reply(reply) => written.push_str(&reply.to_string()),
                Event::Request(request) => {
                    let response = self.driver.respond(&request);
                    self.session.answer(response).unwrap();
                }
                Event::StartTls => {
                    self.tls_handshakes += 1;
                    self.session.tls_started(self.now);
                }
                Event::Close => self.closed = true,
            }
        }
        panic!("the session did not settle");
    }

    fn cmd(&mut self, line: &str) -> Written {
        self.send(format!("{line}\r\n").as_bytes())
    }

    fn checked_recipients(&self) -> usize {
        self.driver
            .requests
            .iter()
            .filter(|r| matches!(r, Request::CheckRecipient(_)))
            .count()
    }
}

#[test]
fn greeting_and_ehlo_before_tls() {
    let h = Harness::new(config());
    assert_eq!(
        h.session.greeting().to_string(),
        "220 mx.example.jp ESMTP dirmail ready\r\n"
    );
    let mut h = h;
    h.cmd("EHLO client.example")
        .expect("250 HELP")
        .contains("250-mx.example.jp greets client.example\r\n")
        .contains("250-PIPELINING\r\n")
        .contains("250-SIZE 1000\r\n")
        .contains("250-8BITMIME\r\n")
        .contains("250-ENHANCEDSTATUSCODES\r\n")
        .contains("250-SMTPUTF8\r\n")
        .contains("250-STARTTLS\r\n")
        .lacks("AUTH");
}

#[test]
fn ehlo_after_tls_offers_auth_not_starttls() {
    let mut h = Harness::with(config(), peer(), true);
    h.cmd("EHLO c")
        .contains("250-AUTH PLAIN LOGIN\r\n")
        .lacks("STARTTLS")
        .lacks("CRAM-MD5");
    let mut cram = config();
    cram.offer_cram_md5 = true;
    let mut h = Harness::with(cram, peer(), true);
    h.cmd("EHLO c")
        .contains("250-AUTH PLAIN LOGIN CRAM-MD5\r\n");
    let mut plain = config();
    plain.plaintext_auth_without_tls = true;
    let mut h = Harness::new(plain);
    h.cmd("EHLO c")
        .contains("STARTTLS")
        .contains("AUTH PLAIN LOGIN");
    let mut no_cert = config();
    no_cert.starttls_available = false;
    let mut h = Harness::new(no_cert);
    h.cmd("EHLO c").lacks("STARTTLS");
    h.cmd("STARTTLS").expect("502 5.5.1");
}

#[test]
fn helo_and_a_plain_delivery() {
    let mut h = Harness::new(config());
    h.cmd("MAIL FROM:<a@b.example>").expect("503 5.5.1");
    h.cmd("HELO client.example").expect("250 mx.example.jp");
    h.cmd("MAIL FROM:<a@b.example>").expect("250 2.1.0");
    h.cmd("RCPT TO:<user@example.jp>").expect("250 2.1.5");
    h.cmd("DATA").expect("354 ");
    h.send(b"Subject: hi\r\n\r\n..dot\r\nbody\r\n").empty();
    h.send(b".\r\n").expect("250 2.0.0");
    let [delivery] = h.driver.deliveries.as_slice() else {
        panic!()
    };
    assert_eq!(delivery.envelope_from, "a@b.example");
    assert_eq!(delivery.message, b"Subject: hi\r\n\r\n.dot\r\nbody\r\n");
    assert_eq!(
        delivery.recipients,
        vec![Recipient {
            address: "user@example.jp".into(),
            target: Target::Local {
                mailbox: "user@example.jp".into()
            }
        }]
    );
    assert_eq!(
        delivery.received.render("Mon, 1 Jan 2024 00:00:00 +0000"),
        "Received: from client.example ([192.0.2.10])\r\n\tby mx.example.jp (dirmail) with SMTP\r\n\tfor <user@example.jp>; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    );
    // The transaction is over; the session goes on.
    h.cmd("RCPT TO:<user@example.jp>").expect("503 5.5.1");
}

#[test]
fn received_names_the_protocol_rfc3848() {
    let run = |mut h: Harness| {
        h.cmd("MAIL FROM:<user@example.jp>").expect("250");
        h.cmd("RCPT TO:<user@example.jp>").expect("250");
        h.cmd("RCPT TO:<other@example.jp>").expect("250");
        h.cmd("DATA").expect("354");
        h.send(b"x\r\n.\r\n").expect("250");
        h.driver.deliveries.pop().unwrap().received
    };
    let mut plain = Harness::new(config());
    plain.cmd("EHLO c").expect("250");
    let received = run(plain);
    assert_eq!(received.protocol, "ESMTP");
    assert_eq!(received.for_recipient, None, "two recipients: no `for`");
    assert_eq!(run(Harness::ready(config())).protocol, "ESMTPS");
    assert_eq!(run(Harness::authed(config())).protocol, "ESMTPSA");
    let mut v6 = Harness::with(config(), "2001:db8::1".parse().unwrap(), false);
    v6.cmd("EHLO c").expect("250");
    assert!(run(v6).render("D").contains("([IPv6:2001:db8::1])"));
}

#[test]
fn recipients_local_unknown_and_temporary() {
    let mut h = Harness::ready(config());
    h.cmd("MAIL FROM:<a@b.example> BODY=8BITMIME SMTPUTF8")
        .expect("250 2.1.0");
    h.cmd("RCPT TO:<nobody@example.jp>").expect("550 5.1.1");
    h.cmd("RCPT TO:<temp@example.jp>").expect("451 4.4.3");
    h.cmd("RCPT TO:<User@Example.JP>").expect("250 2.1.5");
    h.cmd("RCPT TO:<user@example.jp>").expect("250 2.1.5");
    h.cmd("DATA").expect("354");
    h.send(b"x\r\n.\r\n").expect("250");
    assert_eq!(
        h.driver.deliveries[0].recipients.len(),
        1,
        "one copy per mailbox"
    );
}

#[test]
fn an_alias_loop_is_refused_at_rcpt_and_the_transaction_goes_on_r28() {
    let mut h = Harness::ready(config());
    h.cmd("MAIL FROM:<a@b.example>").expect("250");
    h.cmd("RCPT TO:<looping@example.jp>").expect("550 5.4.6");
    h.cmd("RCPT TO:<user@example.jp>").expect("250 2.1.5");
    h.cmd("DATA").expect("354");
}

#[test]
fn postmaster_without_domain_is_asked_r12() {
    let mut h = Harness::ready(config());
    h.cmd("MAIL FROM:<>").expect("250");
    h.cmd("RCPT TO:<Postmaster>").expect("250 2.1.5");
    assert_eq!(
        h.driver.requests.last(),
        Some(&Request::CheckRecipient(RcptAddress::Postmaster))
    );
    h.cmd("RCPT TO:<>").expect("501 5.1.3");
}

#[test]
fn relay_denied_unless_allowed_or_authenticated_r16() {
    let mut h = Harness::ready(config());
    h.cmd("MAIL FROM:<a@b.example>").expect("250");
    h.cmd("RCPT TO:<x@elsewhere.example>")
        .expect("550 5.7.1 Unable to relay for <x@elsewhere.example>");

    let mut allowed = config();
    allowed.relay_allow = vec!["192.0.2.0/24".parse().unwrap()];
    let mut h = Harness::ready(allowed.clone());
    h.cmd("MAIL FROM:<a@b.example>").expect("250");
    h.cmd("RCPT TO:<x@elsewhere.example>").expect("250 2.1.5");
    // An IPv4-mapped IPv6 peer is the same peer.
    let mut h = Harness::with(allowed, "::ffff:192.0.2.10".parse().unwrap(), true);
    h.cmd("EHLO c").expect("250");
    h.cmd("MAIL FROM:<a@b.example>").expect("250");
    h.cmd("RCPT TO:<x@elsewhere.example>").expect("250 2.1.5");

    let mut h = Harness::authed(config());
    h.cmd("MAIL FROM:<user@example.jp>").expect("250");
    h.cmd("RCPT TO:<x@elsewhere.example>").expect("250 2.1.5");
    h.cmd("DATA").expect("354");
    h.send(b"x\r\n.\r\n").expect("250");
    assert_eq!(h.driver.deliveries[0].recipients[0].target, Target::Relay);
}

const SMUGGLED: [&str; 12] = [
    "to%dom@[192.0.2.1]",
    "to%dom@srv.example.jp",
    "\"to@dom\"",
    "\"to%dom\"",
    "\"to@dom\"@[192.0.2.1]",
    "to@dom@[192.0.2.1]",
    "@[192.0.2.1]:to@dom",
    "@srv.example.jp:to@example.jp",
    "dom!to",
    "dom!to@[192.0.2.1]",
    "dom!to@example.jp",
    "to@[192.0.2.1]",
];

#[test]
fn every_route_smuggling_form_is_refused_without_a_lookup_r16() {
    let mut h = Harness::ready(config());
    h.cmd("MAIL FROM:<a@b.example>").expect("250");
    for raw in SMUGGLED {
        h.cmd(&format!("RCPT TO:<{raw}>"))
            .expect("550 5.7.1")
            .contains(&format!("Unable to relay for <{raw}>"));
    }
    assert_eq!(
        h.checked_recipients(),
        0,
        "routed paths are never looked up"
    );
    assert!(!h.closed);
}

#[test]
fn route_smuggling_forms_are_relayed_verbatim_when_relay_is_permitted() {
    let mut h = Harness::authed(config());
    h.cmd("MAIL FROM:<user@example.jp>").expect("250");
    h.cmd("RCPT TO:<dom!to@example.jp>").expect("250 2.1.5");
    h.cmd("RCPT TO:<@srv.example.jp:to@example.jp>")
        .expect("250 2.1.5");
    h.cmd("DATA").expect("354");
    h.send(b"x\r\n.\r\n").expect("250");
    let addresses: Vec<_> = h.driver.deliveries[0]
        .recipients
        .iter()
        .map(|r| (r.address.as_str(), r.target.clone()))
        .collect();
    assert_eq!(
        addresses,
        [
            ("dom!to@example.jp", Target::Relay),
            ("@srv.example.jp:to@example.jp", Target::Relay)
        ]
    );
    assert_eq!(h.checked_recipients(), 0);
}

#[test]
fn sizes_and_quotas_r15() {
    let mut h = Harness::ready(config());
    h.cmd("MAIL FROM:<a@b.example> SIZE=1001")
        .expect("552 5.3.4");
    h.cmd("MAIL FROM:<a@b.example> SIZE=200").expect("250");
    h.cmd("RCPT TO:<full@example.jp>").expect("552 5.2.2");
    h.cmd("RCPT TO:<user@example.jp>").expect("250");
    h.cmd("RSET").expect("250 2.0.0");
    h.cmd("MAIL FROM:<a@b.example> SIZE=100").expect("250");
    h.cmd("RCPT TO:<full@example.jp>").expect("250 2.1.5");
    h.cmd("DATA").expect("354");
    h.send(b"OVERQUOTA\r\n.\r\n").expect("552 5.2.2");
    // Too big without a declared SIZE: read to the end, then refuse; nothing delivered.
    h.cmd("MAIL FROM:<a@b.example>").expect("250");
    h.cmd("RCPT TO:<user@example.jp>").expect("250");
    h.cmd("DATA").expect("354");
    for _ in 0..20 {
        h.send(&[b'x'; 100]).empty();
        h.send(b"\r\n").empty();
    }
    let deliveries = h.driver.deliveries.len();
    h.send(b".\r\n").expect("552 5.3.4");
    assert_eq!(h.driver.deliveries.len(), deliveries);
    h.cmd("NOOP").expect("250 2.0.0");
}

#[test]
fn store_failures() {
    for (body, code) in [("DISKFULL", "452 4.3.1"), ("STOREDOWN", "451 4.3.0")] {
        let mut h = Harness::ready(config());
        h.cmd("MAIL FROM:<a@b.example>").expect("250");
        h.cmd("RCPT TO:<user@example.jp>").expect("250");
        h.cmd("DATA").expect("354");
        h.send(format!("{body}\r\n.\r\n").as_bytes()).expect(code);
    }
}

#[test]
fn smuggled_ends_of_data_never_end_it_r19() {
    for fake in ["\n.\n", "\r.\r", "\n.\r\n", "\r\n.\n", "\r\n.\r"] {
        let mut h = Harness::ready(config());
        h.cmd("MAIL FROM:<a@b.example>").expect("250");
        h.cmd("RCPT TO:<user@example.jp>").expect("250");
        h.cmd("DATA").expect("354");
        let smuggle = format!(
            "Subject: x\r\n\r\nhello{fake}MAIL FROM:<evil@b.example>\r\nRCPT TO:<other@example.jp>\r\nDATA\r\n"
        );
        h.send(smuggle.as_bytes()).empty();
        h.send(b"evil\r\n").empty();
        h.send(b".\r\n")
            .expect("554 5.6.0")
            .contains("bare CR or LF");
        assert!(
            h.driver.deliveries.is_empty(),
            "{fake:?}: nothing delivered"
        );
        assert_eq!(
            h.checked_recipients(),
            1,
            "{fake:?}: the smuggled RCPT was never a command"
        );
        h.cmd("NOOP").expect("250 2.0.0");
    }
}

#[test]
fn starttls_discards_pipelined_plaintext_r19() {
    let mut h = Harness::new(config());
    h.cmd("EHLO c").expect("250");
    h.send(b"STARTTLS\r\nMAIL FROM:<evil@b.example>\r\nRCPT TO:<user@example.jp>\r\n")
        .expect("220 2.0.0");
    assert_eq!(h.tls_handshakes, 1);
    assert!(h.driver.requests.is_empty());
    // The session starts over: the injected MAIL left no transaction, and EHLO is needed.
    h.cmd("RCPT TO:<user@example.jp>").expect("503 5.5.1");
    h.cmd("MAIL FROM:<a@b.example>").expect("503 5.5.1");
    h.cmd("EHLO c").lacks("STARTTLS").contains("AUTH");
    h.cmd("STARTTLS").expect("503 5.5.1");
}

#[test]
fn bytes_fed_while_the_handshake_is_pending_are_dropped() {
    let mut h = Harness::new(config());
    h.cmd("EHLO c").expect("250");
    h.session.feed(b"STARTTLS\r\n", h.now);
    assert!(matches!(h.session.poll(), Some(Event::Reply(_))));
    assert_eq!(h.session.poll(), Some(Event::StartTls));
    assert_eq!(h.session.deadline(), None);
    h.session.feed(b"MAIL FROM:<evil@b.example>\r\n", h.now);
    assert_eq!(h.session.poll(), None);
    h.session.tls_started(h.now);
    h.cmd("MAIL FROM:<a@b.example>").expect("503 5.5.1");
}

#[test]
fn auth_plain_login_and_their_failures() {
    let mut h = Harness::ready(config());
    h.cmd("AUTH PLAIN").expect("334 ");
    h.cmd(&encode("\0user@example.jp\0wrong"))
        .expect("535 5.7.8");
    h.cmd("AUTH PLAIN =").expect("501 5.5.2");
    h.cmd("AUTH PLAIN !!!").expect("501 5.5.2 Invalid base64");
    h.cmd("AUTH LOGIN").expect("334 VXNlcm5hbWU6");
    h.cmd("*").expect("501 5.0.0");
    h.cmd("AUTH LOGIN").expect("334 VXNlcm5hbWU6");
    h.cmd(&encode("user@example.jp")).expect("334 UGFzc3dvcmQ6");
    h.cmd("%%%").expect("501 5.5.2");
    h.cmd(&format!("AUTH PLAIN {}", encode("\0temp\0x")))
        .expect("454 4.7.0");
    h.cmd("AUTH NTLM").expect("504 5.5.4");
    h.cmd("AUTH CRAM-MD5").expect("504 5.5.4");
    h.cmd("AUTH LOGIN").expect("334");
    h.cmd(&encode("user@example.jp")).expect("334");
    h.cmd(&encode("secret")).expect("235 2.7.0");
    h.cmd("AUTH PLAIN").expect("503 5.5.1");
    let Some(Request::Authenticate(credentials)) = h.driver.requests.last() else {
        panic!()
    };
    assert!(
        !format!("{credentials:?}").contains("secret"),
        "Debug hides the password"
    );
}

#[test]
fn auth_cram_md5_rfc2195() {
    let mut cram = config();
    cram.offer_cram_md5 = true;
    let mut h = Harness::ready(cram);
    h.cmd("AUTH CRAM-MD5")
        .expect(&format!("334 {}", encode("<1896.697170952@mx.example.jp>")));
    let digest =
        crate::auth::cram_md5_digest("<1896.697170952@mx.example.jp>", &Secret::new("secret"));
    h.cmd(&encode(format!("user@example.jp {digest}")))
        .expect("235 2.7.0");
    let Some(Request::Authenticate(Credentials { proof, .. })) = h.driver.requests.last() else {
        panic!()
    };
    assert!(matches!(proof, Proof::CramMd5 { .. }));
}

#[test]
fn auth_refused_before_tls_and_in_the_wrong_place() {
    let mut h = Harness::new(config());
    h.cmd("AUTH PLAIN").expect("503 5.5.1");
    h.cmd("HELO c").expect("250");
    h.cmd("AUTH PLAIN").expect("503 5.5.1");
    h.cmd("EHLO c").expect("250");
    h.cmd(&format!(
        "AUTH PLAIN {}",
        encode("\0user@example.jp\0secret")
    ))
    .expect("538 5.7.11");
    let mut h = Harness::ready(config());
    h.cmd("MAIL FROM:<a@b.example>").expect("250");
    h.cmd("AUTH PLAIN").expect("503 5.5.1");
}

#[test]
fn submission_requires_auth_and_own_sender() {
    let mut sub = config();
    sub.listener = Listener::Submission;
    let mut h = Harness::ready(sub.clone());
    h.cmd("MAIL FROM:<user@example.jp>").expect("530 5.7.0");
    let mut h = Harness::authed(sub.clone());
    h.cmd("MAIL FROM:<someone@example.jp>").expect("553 5.7.1");
    h.cmd("MAIL FROM:<>").expect("553 5.7.1");
    h.cmd("MAIL FROM:<Alias@example.jp>").expect("250 2.1.0");
    sub.require_own_sender = false;
    let mut h = Harness::authed(sub);
    h.cmd("MAIL FROM:<someone@example.jp>").expect("250 2.1.0");
}

#[test]
fn simple_commands() {
    let mut h = Harness::ready(config());
    h.cmd("NOOP").expect("250 2.0.0");
    h.cmd("VRFY user").expect("252 2.5.0");
    h.cmd("HELP").expect("214 2.0.0");
    h.cmd("EXPN list").expect("502 5.5.1");
    h.cmd("MAIL FROM:<a@b.example>").expect("250");
    h.cmd("MAIL FROM:<a@b.example>").expect("503 5.5.1");
    h.cmd("RSET").expect("250 2.0.0");
    h.cmd("DATA").expect("503 5.5.1");
    h.cmd("MAIL FROM:<a@b.example>").expect("250");
    h.cmd("DATA").expect("554 5.5.1");
    h.cmd("FOO").expect("500 5.5.2");
    h.cmd("MAIL FROM:<a@b.example> NOTAPARAM=1")
        .expect("555 5.5.4");
    assert!(!h.closed);
    h.cmd("QUIT").expect("221 2.0.0");
    assert!(h.closed);
    assert!(h.session.is_closed());
    h.cmd("NOOP").empty();
}

#[test]
fn too_many_recipients() {
    let mut few = config();
    few.max_recipients = 2;
    let mut h = Harness::ready(few);
    h.cmd("MAIL FROM:<a@b.example>").expect("250");
    h.cmd("RCPT TO:<user@example.jp>").expect("250");
    h.cmd("RCPT TO:<other@example.jp>").expect("250");
    h.cmd("RCPT TO:<full@example.jp>").expect("452 4.5.3");
}

#[test]
fn long_lines_and_too_many_errors() {
    let mut h = Harness::ready(config());
    let long = format!("NOOP {}", "x".repeat(5000));
    h.cmd(&long).expect("500 5.5.6");
    h.cmd("NOOP").expect("250");
    let mut strict = config();
    strict.max_invalid_commands = 3;
    let mut h = Harness::ready(strict);
    h.cmd("FOO").expect("500");
    h.cmd("BAR").expect("500");
    h.cmd("BAZ").expect("421 4.7.0");
    assert!(h.closed);
}

#[test]
fn idle_timeout() {
    let mut h = Harness::ready(config());
    let deadline = h.session.deadline().unwrap();
    assert_eq!(deadline, h.now + Duration::from_secs(300));
    h.session.timeout(deadline - Duration::from_secs(1));
    assert_eq!(h.session.poll(), None);
    h.cmd("MAIL FROM:<a@b.example>").expect("250");
    h.cmd("RCPT TO:<user@example.jp>").expect("250");
    h.cmd("DATA").expect("354");
    assert_eq!(h.session.deadline(), Some(h.now + Duration::from_secs(600)));
    h.session.timeout(h.now + Duration::from_secs(600));
    assert!(matches!(h.session.poll(), Some(Event::Reply(r)) if r.code == 421));
    assert_eq!(h.session.poll(), Some(Event::Close));
    assert_eq!(h.session.deadline(), None);
}

#[test]
fn answers_must_fit_the_request() {
    let mut h = Harness::ready(config());
    assert_eq!(
        h.session.answer(Response::Delivered),
        Err(AnswerError::NothingAsked)
    );
    h.session.feed(
        b"MAIL FROM:<a@b.example>\r\nRCPT TO:<user@example.jp>\r\nNOOP\r\n",
        h.now,
    );
    assert!(matches!(h.session.poll(), Some(Event::Reply(_))));
    assert!(matches!(
        h.session.poll(),
        Some(Event::Request(Request::CheckRecipient(_)))
    ));
    assert_eq!(h.session.poll(), None, "NOOP waits for the answer");
    assert!(!h.session.wants_input());
    assert_eq!(
        h.session.answer(Response::Delivered),
        Err(AnswerError::Mismatch)
    );
    h.session.answer(Response::NotLocal).unwrap();
    assert!(matches!(h.session.poll(), Some(Event::Reply(r)) if r.code == 550));
    assert!(matches!(h.session.poll(), Some(Event::Reply(r)) if r.code == 250));
}

#[test]
fn pipelined_input_is_cut_off_when_it_piles_up() {
    let mut h = Harness::ready(config());
    h.session.feed(
        b"MAIL FROM:<a@b.example>\r\nRCPT TO:<user@example.jp>\r\n",
        h.now,
    );
    let filler = vec![b'N'; 300 * 1024];
    h.session.feed(&filler, h.now);
    let events: Vec<_> = std::iter::from_fn(|| h.session.poll()).collect();
    assert_eq!(events.last(), Some(&Event::Close));
    assert!(h.session.buffered() <= 4096);
}

/// A whole pipelined conversation, without STARTTLS (whose effect depends on timing).
const SCRIPT: &[u8] = b"EHLO client.example\r\nAUTH PLAIN AHVzZXJAZXhhbXBsZS5qcABzZWNyZXQ=\r\n\
MAIL FROM:<user@example.jp> SIZE=20\r\nRCPT TO:<user@example.jp>\r\nRCPT TO:<nobody@example.jp>\r\n\
RCPT TO:<dom!to@srv.example>\r\nDATA\r\nSubject: x\r\n\r\n..a\r\n.\r\nMAIL FROM:<user@example.jp>\r\n\
RCPT TO:<Postmaster>\r\nDATA\r\nbare\nlf\r\n.\r\nAUTH LOGIN\r\nNOOP\r\nBOGUS\r\nQUIT\r\n";

fn transcript(chunks: &[&[u8]]) -> (String, usize) {
    let mut plain = config();
    plain.plaintext_auth_without_tls = true;
    let mut h = Harness::new(plain);
    let mut all = String::new();
    for chunk in chunks {
        all.push_str(&h.send(chunk).0);
    }
    (all, h.driver.deliveries.len())
}

#[test]
fn every_single_split_gives_the_same_replies() {
    let whole = transcript(&[SCRIPT]);
    assert!(
        whole
            .0
            .ends_with("221 2.0.0 mx.example.jp closing connection\r\n"),
        "{}",
        whole.0
    );
    assert_eq!(whole.1, 1);
    for at in 0..=SCRIPT.len() {
        let (a, b) = SCRIPT.split_at(at);
        assert_eq!(transcript(&[a, b]), whole, "split at {at}");
    }
}

proptest! {
    /// Pipelined input split at any set of boundaries gives the same replies.
    #[test]
    fn any_splits_give_the_same_replies(mut cuts in proptest::collection::vec(0..SCRIPT.len(), 0..12)) {
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for cut in cuts {
            chunks.push(&SCRIPT[start..cut]);
            start = cut;
        }
        chunks.push(&SCRIPT[start..]);
        prop_assert_eq!(transcript(&chunks), transcript(&[SCRIPT]));
    }

    /// Arbitrary input never panics, and what the core holds stays bounded.
    #[test]
    fn arbitrary_input_is_survived(chunks in proptest::collection::vec(
        proptest::collection::vec(prop_oneof![
            4 => any::<u8>(),
            2 => Just(b'\r'),
            2 => Just(b'\n'),
            1 => Just(b'.'),
            1 => Just(b'<'),
            1 => Just(b'>'),
            1 => Just(b'@'),
        ], 0..300), 0..12),
        prefix in prop_oneof![
            Just(&b""[..]),
            Just(&b"EHLO x\r\n"[..]),
            Just(&b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<user@example.jp>\r\nDATA\r\n"[..]),
            Just(&b"EHLO x\r\nAUTH LOGIN\r\n"[..]),
            Just(&b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<"[..]),
        ])
    {
        let mut small = config();
        small.max_line_length = 64;
        small.max_invalid_commands = 1000;
        small.plaintext_auth_without_tls = true;
        let mut h = Harness::new(small);
        h.send(prefix);
        for chunk in &chunks {
            h.send(chunk);
            prop_assert!(h.session.buffered() <= 64 + 1);
        }
    }
}

#[test]
fn implicit_tls_port_requires_auth() {
    let mut port465 = config();
    port465.listener = Listener::ImplicitTls;
    let mut h = Harness::with(port465, peer(), true);
    h.cmd("EHLO c")
        .contains("AUTH PLAIN LOGIN")
        .lacks("STARTTLS");
    h.cmd("MAIL FROM:<user@example.jp>").expect("530 5.7.0");
    h.cmd("AUTH LOGIN").expect("334");
    h.cmd(&"A".repeat(5000)).expect("500 5.5.6");
    h.cmd(&format!(
        "AUTH PLAIN {}",
        encode("\0user@example.jp\0secret")
    ))
    .expect("235 2.7.0");
    h.cmd("MAIL FROM:<user@example.jp>").expect("250 2.1.0");
    h.cmd("RCPT TO:<x@elsewhere.example>").expect("250 2.1.5");
    h.cmd("DATA").expect("354");
    h.send(b"Subject: out\r\n\r\nhi\r\n.\r\n")
        .expect("250 2.0.0");
    assert_eq!(h.driver.deliveries[0].received.protocol, "ESMTPSA");
}

/// A session inside DATA to user@.
fn in_data(h: &mut Harness) {
    h.cmd("MAIL FROM:<a@b.example>").expect("250");
    h.cmd("RCPT TO:<user@example.jp>").expect("250");
    h.cmd("DATA").expect("354");
}

#[test]
fn data_opens_the_spool_file_before_354() {
    let mut h = Harness::ready(config());
    h.cmd("MAIL FROM:<a@b.example>").expect("250");
    h.cmd("RCPT TO:<user@example.jp>").expect("250");
    h.cmd("DATA").expect("354");
    assert!(matches!(
        h.driver.requests.last(),
        Some(Request::OpenMessage(received)) if received.for_recipient.as_deref() == Some("user@example.jp")
    ));
    h.send(b"hi\r\n.\r\n").expect("250 2.0.0");
    // A store that cannot take a message says so instead of 354; the transaction stays.
    for (failure, code) in [
        (Response::DiskFull, "452 4.3.1"),
        (Response::TempFail, "451 4.3.0"),
    ] {
        let mut h = Harness::ready(config());
        h.driver.open_fails = Some(failure);
        h.cmd("MAIL FROM:<a@b.example>").expect("250");
        h.cmd("RCPT TO:<user@example.jp>").expect("250");
        // What the client pipelined behind DATA is read as commands, never as a message.
        h.send(b"DATA\r\nRCPT TO:<other@example.jp>\r\n")
            .contains(code)
            .expect("250 2.1.5");
        h.driver.open_fails = None;
        h.cmd("DATA").expect("354");
        h.send(b"again\r\n.\r\n").expect("250 2.0.0");
        assert_eq!(h.driver.deliveries[0].recipients.len(), 2);
    }
}

#[test]
fn a_long_message_goes_to_the_spool_in_pieces() {
    let mut big = config();
    big.max_message_size = 10 * 1024 * 1024;
    let mut h = Harness::ready(big);
    in_data(&mut h);
    let mut message = Vec::new();
    while message.len() < 5 * data::PIECE {
        message.extend_from_slice(&[b'm'; 900]);
        message.extend_from_slice(b"\r\n..stuffed\r\n");
    }
    let mut wire = message.clone();
    wire.extend_from_slice(b".\r\n");
    for chunk in wire.chunks(16 * 1024) {
        h.send(chunk);
        assert!(h.session.buffered() <= 16 * 1024);
    }
    let pieces = h
        .driver
        .requests
        .iter()
        .filter(|r| matches!(r, Request::AppendMessage(_)))
        .count();
    assert!(pieces >= 4, "{pieces} pieces");
    let unstuffed: Vec<u8> = String::from_utf8(message)
        .unwrap()
        .replace("\r\n..", "\r\n.")
        .into_bytes();
    assert_eq!(h.driver.deliveries.len(), 1);
    assert!(h.driver.deliveries[0].message == unstuffed);
}

#[test]
fn a_spool_failure_reads_to_the_end_then_refuses_and_discards() {
    for (failure, code) in [
        (Response::DiskFull, "452 4.3.1"),
        (Response::TempFail, "451 4.3.0"),
    ] {
        let mut big = config();
        big.max_message_size = 10 * 1024 * 1024;
        let mut h = Harness::ready(big);
        h.driver.append_fails = Some(failure);
        in_data(&mut h);
        h.send(&[b'x'; 3 * data::PIECE]).empty();
        // A command inside the data is data, not a command.
        h.send(b"\r\nRCPT TO:<other@example.jp>\r\n").empty();
        h.send(b".\r\n").expect(code);
        assert!(h.driver.deliveries.is_empty());
        assert_eq!(h.driver.discards, 1);
        assert!(h.driver.spool.is_none());
        assert_eq!(h.checked_recipients(), 1);
        h.cmd("NOOP").expect("250 2.0.0");
    }
}

#[test]
fn nul_in_data_is_refused_like_a_bare_line_ending_r19() {
    let mut h = Harness::ready(config());
    in_data(&mut h);
    h.send(b"Subject: x\r\n\r\nnul \0 here\r\n").empty();
    h.send(b".\r\n")
        .expect("550 5.6.0")
        .contains("NUL octets are not accepted");
    assert!(h.driver.deliveries.is_empty());
    assert_eq!(h.driver.discards, 1);
    h.cmd("NOOP").expect("250 2.0.0");
    // Every refusal at the end of DATA removes the spool file.
    in_data(&mut h);
    h.send(b"bare\nLF\r\n.\r\n").expect("554 5.6.0");
    in_data(&mut h);
    h.send(&[b'y'; 2000]).empty();
    h.send(b"\r\n.\r\n").expect("552 5.3.4");
    assert_eq!(h.driver.discards, 3);
    assert!(h.driver.spool.is_none() && h.driver.deliveries.is_empty());
}
