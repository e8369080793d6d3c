//! The SMTP client against scripted servers: transcripts of what the server says and what the
//! client must write back, with the driver's part (TLS, the body) played in memory.

use proptest::prelude::*;

use super::*;
use crate::smtp::data::{DataOutcome, DataReader};

const BODY: &[u8] = b"Subject: hi\r\n\r\n.leading dot\r\nbye\r\n";

fn config() -> Config {
    Config {
        hostname: "out.example.jp".into(),
        tls: TlsPolicy::Opportunistic,
        login: None,
    }
}

fn envelope(recipients: &[&str]) -> Envelope {
    Envelope {
        reverse_path: "alice@example.jp".into(),
        recipients: recipients.iter().map(|r| (*r).to_owned()).collect(),
        size: 100,
        eight_bit: false,
        utf8_headers: false,
    }
}

fn client(recipients: &[&str]) -> Client {
    Client::new(config(), envelope(recipients), false).unwrap()
}

/// Plays the driver: feeds the server's bytes, collects what the client writes, does the TLS
/// handshake (`<TLS>`) and streams [`BODY`] (`<BODY>`) when asked, and keeps the outcome.
#[derive(Debug, Default)]
struct Driver {
    outcome: Option<Outcome>,
    dones: usize,
    closed: bool,
}

impl Driver {
    fn drain(&mut self, client: &mut Client) -> String {
        let mut wrote = String::new();
        while let Some(event) = client.poll() {
            assert!(!self.closed, "an event after Close: {event:?}");
            match event {
                Event::Write(out) => wrote.push_str(&String::from_utf8_lossy(out.bytes())),
                Event::StartTls => {
                    wrote.push_str("<TLS>");
                    client.tls_started();
                }
                Event::SendBody => {
                    let mut encoder = BodyEncoder::new();
                    let mut wire = Vec::new();
                    encoder.encode(BODY, &mut wire);
                    encoder.finish(&mut wire);
                    assert_eq!(wire, b"Subject: hi\r\n\r\n..leading dot\r\nbye\r\n.\r\n");
                    wrote.push_str("<BODY>");
                    client.body_sent();
                }
                Event::Done(outcome) => {
                    self.dones += 1;
                    self.outcome = Some(outcome);
                    wrote.push_str("<DONE>");
                }
                Event::Close => {
                    self.closed = true;
                    wrote.push_str("<CLOSE>");
                }
            }
        }
        wrote
    }
}

/// Runs `script`, pairs of (server says, client writes), each server part fed in two pieces
/// cut at `cut` (clamped), and returns the outcome.
fn converse_cut(mut client: Client, script: &[(&str, &str)], cut: usize) -> Outcome {
    let mut driver = Driver::default();
    for (i, (server, expected)) in script.iter().enumerate() {
        let (a, b) = server.as_bytes().split_at(cut.min(server.len()));
        client.feed(a);
        let mut wrote = driver.drain(&mut client);
        client.feed(b);
        wrote.push_str(&driver.drain(&mut client));
        assert_eq!(
            &wrote, expected,
            "step {i} (cut at {cut}), server said {server:?}"
        );
    }
    assert_eq!(driver.dones, 1, "one outcome");
    driver.outcome.unwrap()
}

fn converse(client: Client, script: &[(&str, &str)]) -> Outcome {
    converse_cut(client, script, usize::MAX)
}

fn verdicts(outcome: &Outcome) -> Vec<(String, Disposition, String)> {
    outcome
        .recipients
        .iter()
        .map(|r| {
            (
                r.address.clone(),
                r.verdict.disposition,
                r.verdict.status().to_string(),
            )
        })
        .collect()
}

const EHLO: &str = "EHLO out.example.jp\r\n";
const GREETING: &str = "220 mx.example.org ESMTP\r\n";
const EHLO_PIPELINING: &str = "250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n";

/// A pipelined transaction: MAIL and both RCPTs in one write, their replies in order.
fn pipelined_script() -> Vec<(&'static str, &'static str)> {
    vec![
        (GREETING, EHLO),
        (
            EHLO_PIPELINING,
            "MAIL FROM:<alice@example.jp> SIZE=100\r\nRCPT TO:<bob@example.org>\r\nRCPT TO:<nobody@example.org>\r\n",
        ),
        (
            "250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n550-5.1.1 No such user\r\n550 5.1.1 here\r\n",
            "DATA\r\n",
        ),
        ("354 Go ahead\r\n", "<BODY>"),
        ("250 2.0.0 Queued as 1234\r\n", "QUIT\r\n<DONE>"),
        ("221 2.0.0 Bye\r\n", "<CLOSE>"),
    ]
}

#[test]
fn pipelining_sends_mail_and_rcpts_in_one_batch() {
    let outcome = converse(
        client(&["bob@example.org", "nobody@example.org"]),
        &pipelined_script(),
    );
    assert_eq!(
        verdicts(&outcome),
        [
            (
                "bob@example.org".into(),
                Disposition::Delivered,
                "2.0.0".into()
            ),
            (
                "nobody@example.org".into(),
                Disposition::Permanent,
                "5.1.1".into()
            ),
        ]
    );
    let refused = &outcome.recipients[1].verdict;
    assert!(refused.remote);
    assert_eq!(refused.reply.code, 550);
    assert_eq!(refused.reply.lines(), ["No such user", "here"]);
    assert_eq!(
        outcome.recipients[0].verdict.reply.lines(),
        ["Queued as 1234"]
    );
    assert_eq!(outcome.session_failure, None);
}

#[test]
fn every_cut_of_every_server_reply_gives_the_same_transcript() {
    let script = pipelined_script();
    let longest = script.iter().map(|(s, _)| s.len()).max().unwrap();
    let whole = converse(client(&["bob@example.org", "nobody@example.org"]), &script);
    for cut in 0..=longest {
        let outcome = converse_cut(
            client(&["bob@example.org", "nobody@example.org"]),
            &script,
            cut,
        );
        assert_eq!(outcome, whole, "cut at {cut}");
    }
    // And one byte at a time.
    let mut c = client(&["bob@example.org", "nobody@example.org"]);
    let mut driver = Driver::default();
    let mut wrote = String::new();
    for (server, _) in &script {
        for byte in server.as_bytes() {
            c.feed(std::slice::from_ref(byte));
            wrote.push_str(&driver.drain(&mut c));
        }
    }
    let expected: String = script.iter().map(|(_, c)| *c).collect();
    assert_eq!(wrote, expected);
    assert_eq!(driver.outcome, Some(whole));
}

#[test]
fn without_pipelining_one_command_at_a_time() {
    let outcome = converse(
        client(&["bob@example.org", "carol@example.org"]),
        &[
            (GREETING, EHLO),
            (
                "250-mx\r\n250 8BITMIME\r\n",
                "MAIL FROM:<alice@example.jp>\r\n",
            ),
            ("250 OK\r\n", "RCPT TO:<bob@example.org>\r\n"),
            ("250 OK\r\n", "RCPT TO:<carol@example.org>\r\n"),
            ("451 4.3.0 Try later\r\n", "DATA\r\n"),
            ("354 Go\r\n", "<BODY>"),
            ("554 5.7.1 Spam\r\n", "QUIT\r\n<DONE>"),
            ("221 Bye\r\n", "<CLOSE>"),
        ],
    );
    assert_eq!(
        verdicts(&outcome),
        [
            (
                "bob@example.org".into(),
                Disposition::Permanent,
                "5.7.1".into()
            ),
            (
                "carol@example.org".into(),
                Disposition::Temporary,
                "4.3.0".into()
            ),
        ]
    );
}

#[test]
fn a_refused_mail_decides_every_recipient() {
    // One by one: no RCPT is sent.
    let outcome = converse(
        client(&["bob@example.org", "carol@example.org"]),
        &[
            (GREETING, EHLO),
            ("250 mx\r\n", "MAIL FROM:<alice@example.jp>\r\n"),
            ("451 4.7.1 Greylisted\r\n", "QUIT\r\n<DONE>"),
            ("221 Bye\r\n", "<CLOSE>"),
        ],
    );
    assert!(
        verdicts(&outcome)
            .iter()
            .all(|(_, d, s)| *d == Disposition::Temporary && s == "4.7.1")
    );
    // Pipelined: the RCPTs' 503s are read, and MAIL's reply is what counts.
    let outcome = converse(
        client(&["bob@example.org", "carol@example.org"]),
        &[
            (GREETING, EHLO),
            (
                "250-mx\r\n250 PIPELINING\r\n",
                "MAIL FROM:<alice@example.jp>\r\nRCPT TO:<bob@example.org>\r\nRCPT TO:<carol@example.org>\r\n",
            ),
            (
                "550 5.7.1 Sender refused\r\n503 5.5.1 No MAIL\r\n503 5.5.1 No MAIL\r\n",
                "QUIT\r\n<DONE>",
            ),
            ("221 Bye\r\n", "<CLOSE>"),
        ],
    );
    assert!(
        verdicts(&outcome)
            .iter()
            .all(|(_, d, s)| *d == Disposition::Permanent && s == "5.7.1")
    );
}

#[test]
fn no_recipient_accepted_means_no_data() {
    let outcome = converse(
        client(&["nobody@example.org"]),
        &[
            (GREETING, EHLO),
            (
                "250-mx\r\n250 PIPELINING\r\n",
                "MAIL FROM:<alice@example.jp>\r\nRCPT TO:<nobody@example.org>\r\n",
            ),
            ("250 OK\r\n550 No such user\r\n", "QUIT\r\n<DONE>"),
            ("221 Bye\r\n", "<CLOSE>"),
        ],
    );
    // No enhanced status from the server: the class's own.
    assert_eq!(
        verdicts(&outcome),
        [(
            "nobody@example.org".into(),
            Disposition::Permanent,
            "5.0.0".into()
        )]
    );
}

#[test]
fn starttls_then_ehlo_again_then_auth_plain() {
    let mut config = config();
    config.login = Some(Login {
        user: "relay".into(),
        password: Secret::new("s3cret"),
    });
    let client = Client::new(config, envelope(&["bob@example.org"]), false).unwrap();
    let outcome = converse(
        client,
        &[
            (GREETING, EHLO),
            (
                "250-mx\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n",
                "STARTTLS\r\n",
            ),
            ("220 2.0.0 Ready\r\n", "<TLS>EHLO out.example.jp\r\n"),
            (
                "250-mx\r\n250 AUTH LOGIN PLAIN\r\n",
                // base64("\0relay\0s3cret")
                "AUTH PLAIN AHJlbGF5AHMzY3JldA==\r\n",
            ),
            (
                "235 2.7.0 Authenticated\r\n",
                "MAIL FROM:<alice@example.jp>\r\n",
            ),
            ("250 OK\r\n", "RCPT TO:<bob@example.org>\r\n"),
            ("250 OK\r\n", "DATA\r\n"),
            ("354 Go\r\n", "<BODY>"),
            ("250 OK\r\n", "QUIT\r\n<DONE>"),
            ("221 Bye\r\n", "<CLOSE>"),
        ],
    );
    assert_eq!(
        outcome.recipients[0].verdict.disposition,
        Disposition::Delivered
    );
}

#[test]
fn auth_login_and_a_refused_password_is_temporary() {
    let mut config = config();
    config.login = Some(Login {
        user: "relay".into(),
        password: Secret::new("wrong"),
    });
    let client = Client::new(config, envelope(&["bob@example.org"]), true).unwrap();
    let outcome = converse(
        client,
        &[
            (GREETING, EHLO),
            ("250-mx\r\n250 AUTH LOGIN\r\n", "AUTH LOGIN\r\n"),
            ("334 VXNlcm5hbWU6\r\n", "cmVsYXk=\r\n"),
            ("334 UGFzc3dvcmQ6\r\n", "d3Jvbmc=\r\n"),
            (
                "535 5.7.8 Authentication credentials invalid\r\n",
                "QUIT\r\n<DONE>",
            ),
            ("221 Bye\r\n", "<CLOSE>"),
        ],
    );
    assert_eq!(
        verdicts(&outcome),
        [(
            "bob@example.org".into(),
            Disposition::Temporary,
            "4.7.8".into()
        )]
    );
    assert_eq!(outcome.session_failure.unwrap().kind, FailureKind::Auth);
}

#[test]
fn credentials_never_go_in_clear_text_nor_into_debug() {
    let mut config = config();
    config.login = Some(Login {
        user: "relay".into(),
        password: Secret::new("s3cret"),
    });
    // No STARTTLS offered: opportunistic would go on in clear, but not with credentials.
    let client = Client::new(config.clone(), envelope(&["bob@example.org"]), false).unwrap();
    let outcome = converse(
        client,
        &[
            (GREETING, EHLO),
            ("250-mx\r\n250 AUTH PLAIN\r\n", "QUIT\r\n<DONE>"),
            ("221 Bye\r\n", "<CLOSE>"),
        ],
    );
    assert_eq!(outcome.session_failure.unwrap().kind, FailureKind::Auth);
    assert_eq!(
        outcome.recipients[0].verdict.disposition,
        Disposition::Temporary
    );

    let mut c = Client::new(config, envelope(&["bob@example.org"]), true).unwrap();
    c.feed(GREETING.as_bytes());
    let _ = c.poll();
    c.feed(b"250-mx\r\n250 AUTH PLAIN\r\n");
    let event = c.poll().unwrap();
    let Event::Write(out) = &event else {
        panic!("{event:?}")
    };
    assert!(out.bytes().starts_with(b"AUTH PLAIN "));
    let debug = format!("{event:?} {c:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
    assert!(!debug.contains("AHMzY3JldA"), "{debug}");
}

#[test]
fn tls_required_and_not_offered_is_temporary() {
    let mut config = config();
    config.tls = TlsPolicy::Required;
    let client = Client::new(config.clone(), envelope(&["bob@example.org"]), false).unwrap();
    let outcome = converse(
        client,
        &[
            (GREETING, EHLO),
            ("250-mx\r\n250 PIPELINING\r\n", "QUIT\r\n<DONE>"),
            ("221 Bye\r\n", "<CLOSE>"),
        ],
    );
    assert_eq!(
        verdicts(&outcome),
        [(
            "bob@example.org".into(),
            Disposition::Temporary,
            "4.7.4".into()
        )]
    );
    assert_eq!(
        outcome.session_failure.unwrap().kind,
        FailureKind::TlsUnavailable
    );
    // Offered and then refused: also temporary, even with a 5xx.
    let client = Client::new(config, envelope(&["bob@example.org"]), false).unwrap();
    let outcome = converse(
        client,
        &[
            (GREETING, EHLO),
            ("250-mx\r\n250 STARTTLS\r\n", "STARTTLS\r\n"),
            ("554 5.7.0 No TLS for you\r\n", "QUIT\r\n<DONE>"),
            ("221 Bye\r\n", "<CLOSE>"),
        ],
    );
    assert_eq!(
        outcome.recipients[0].verdict.disposition,
        Disposition::Temporary
    );
}

#[test]
fn opportunistic_goes_on_in_clear_after_a_refused_starttls() {
    let outcome = converse(
        client(&["bob@example.org"]),
        &[
            (GREETING, EHLO),
            ("250-mx\r\n250 STARTTLS\r\n", "STARTTLS\r\n"),
            (
                "454 4.7.0 TLS not available\r\n",
                "MAIL FROM:<alice@example.jp>\r\n",
            ),
            ("250 OK\r\n", "RCPT TO:<bob@example.org>\r\n"),
            ("250 OK\r\n", "DATA\r\n"),
            ("354 Go\r\n", "<BODY>"),
            ("250 OK\r\n", "QUIT\r\n<DONE>"),
            ("221 Bye\r\n", "<CLOSE>"),
        ],
    );
    assert_eq!(
        outcome.recipients[0].verdict.disposition,
        Disposition::Delivered
    );
}

#[test]
fn a_failed_handshake_closes_at_once() {
    let mut c = client(&["bob@example.org"]);
    let mut driver = Driver::default();
    c.feed(GREETING.as_bytes());
    driver.drain(&mut c);
    c.feed(b"250-mx\r\n250 STARTTLS\r\n");
    driver.drain(&mut c);
    c.feed(b"220 Ready\r\n");
    assert_eq!(c.poll(), Some(Event::StartTls));
    assert_eq!(c.current_timeout(), None);
    c.tls_failed();
    assert_eq!(driver.drain(&mut c), "<DONE><CLOSE>");
    let failure = driver.outcome.unwrap().session_failure.unwrap();
    assert_eq!(failure.kind, FailureKind::TlsHandshake);
    assert_eq!(failure.verdict.disposition, Disposition::Temporary);
}

#[test]
fn ehlo_refused_falls_back_to_helo() {
    let mut env = envelope(&["bob@example.org"]);
    env.eight_bit = true;
    let eight_bit = Client::new(config(), env, false).unwrap();
    // HELO has no 8BITMIME: an 8-bit message cannot go (RFC 6152), permanently.
    let outcome = converse(
        eight_bit,
        &[
            (GREETING, EHLO),
            ("502 5.5.1 What?\r\n", "HELO out.example.jp\r\n"),
            ("250 mx\r\n", "QUIT\r\n<DONE>"),
            ("221 Bye\r\n", "<CLOSE>"),
        ],
    );
    assert_eq!(
        verdicts(&outcome),
        [(
            "bob@example.org".into(),
            Disposition::Permanent,
            "5.6.3".into()
        )]
    );
    assert_eq!(outcome.session_failure, None);
    // Both refused: the host would not talk.
    let outcome = converse(
        client(&["bob@example.org"]),
        &[
            (GREETING, EHLO),
            ("500 No\r\n", "HELO out.example.jp\r\n"),
            ("550 Go away\r\n", "QUIT\r\n<DONE>"),
            ("221 Bye\r\n", "<CLOSE>"),
        ],
    );
    let failure = outcome.session_failure.unwrap();
    assert_eq!(failure.kind, FailureKind::Hello);
    assert_eq!(failure.verdict.disposition, Disposition::Permanent);
}

#[test]
fn a_refusing_greeting() {
    for (greeting, disposition) in [
        ("554 5.3.2 No SMTP service here\r\n", Disposition::Permanent),
        ("421 4.3.2 Busy\r\n", Disposition::Temporary),
    ] {
        let outcome = converse(
            client(&["bob@example.org"]),
            &[(greeting, "QUIT\r\n<DONE>"), ("221 Bye\r\n", "<CLOSE>")],
        );
        let failure = outcome.session_failure.unwrap();
        assert_eq!(failure.kind, FailureKind::Greeting);
        assert_eq!(failure.verdict.disposition, disposition);
        assert_eq!(outcome.recipients[0].verdict.disposition, disposition);
    }
}

#[test]
fn size_8bitmime_and_smtputf8_are_respected() {
    // Over the server's SIZE: refused before MAIL.
    let mut env = envelope(&["bob@example.org"]);
    env.size = 1001;
    let outcome = converse(
        Client::new(config(), env, false).unwrap(),
        &[
            (GREETING, EHLO),
            (EHLO_PIPELINING, "QUIT\r\n<DONE>"),
            ("221 Bye\r\n", "<CLOSE>"),
        ],
    );
    assert_eq!(
        verdicts(&outcome),
        [(
            "bob@example.org".into(),
            Disposition::Permanent,
            "5.3.4".into()
        )]
    );

    // A non-ASCII recipient without SMTPUTF8 fails alone; the others go, 8-bit declared.
    let mut env = envelope(&["bob@example.org", "δοκιμή@example.gr"]);
    env.eight_bit = true;
    let outcome = converse(
        Client::new(config(), env.clone(), false).unwrap(),
        &[
            (GREETING, EHLO),
            (
                EHLO_PIPELINING,
                "MAIL FROM:<alice@example.jp> SIZE=100 BODY=8BITMIME\r\nRCPT TO:<bob@example.org>\r\n",
            ),
            ("250 OK\r\n250 OK\r\n", "DATA\r\n"),
            ("354 Go\r\n", "<BODY>"),
            ("250 OK\r\n", "QUIT\r\n<DONE>"),
            ("221 Bye\r\n", "<CLOSE>"),
        ],
    );
    assert_eq!(
        verdicts(&outcome),
        [
            (
                "bob@example.org".into(),
                Disposition::Delivered,
                "2.0.0".into()
            ),
            (
                "δοκιμή@example.gr".into(),
                Disposition::Permanent,
                "5.6.7".into()
            ),
        ]
    );

    // With SMTPUTF8 both go, and MAIL says so.
    let outcome = converse(
        Client::new(config(), env, false).unwrap(),
        &[
            (GREETING, EHLO),
            (
                "250-mx\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
                "MAIL FROM:<alice@example.jp> BODY=8BITMIME SMTPUTF8\r\n",
            ),
            ("250 OK\r\n", "RCPT TO:<bob@example.org>\r\n"),
            ("250 OK\r\n", "RCPT TO:<δοκιμή@example.gr>\r\n"),
            ("250 OK\r\n", "DATA\r\n"),
            ("354 Go\r\n", "<BODY>"),
            ("250 OK\r\n", "QUIT\r\n<DONE>"),
            ("221 Bye\r\n", "<CLOSE>"),
        ],
    );
    assert!(
        outcome
            .recipients
            .iter()
            .all(|r| r.verdict.disposition == Disposition::Delivered)
    );

    // UTF-8 headers need SMTPUTF8 for everyone.
    let mut env = envelope(&["bob@example.org"]);
    env.utf8_headers = true;
    let outcome = converse(
        Client::new(config(), env, false).unwrap(),
        &[
            (GREETING, EHLO),
            (EHLO_PIPELINING, "QUIT\r\n<DONE>"),
            ("221 Bye\r\n", "<CLOSE>"),
        ],
    );
    assert_eq!(
        verdicts(&outcome),
        [(
            "bob@example.org".into(),
            Disposition::Permanent,
            "5.6.9".into()
        )]
    );
}

/// A server that lies: each of these ends the session at once with a temporary protocol
/// failure, without QUIT (the server is out of step).
#[test]
fn a_lying_server_is_a_temporary_protocol_failure() {
    let overlong = format!("250 {}\r\n", "x".repeat(MAX_REPLY_LINE));
    let many = format!("{}250 mx\r\n", "250-LINE\r\n".repeat(MAX_REPLY_LINES));
    let cases: Vec<(&str, Vec<&str>)> = vec![
        // A reply to EHLO before EHLO was sent.
        ("reply ahead", vec!["220 mx\r\n250 mx\r\n"]),
        // One reply more than the pipelined batch asked for.
        (
            "extra reply",
            vec![
                GREETING,
                "250-mx\r\n250 PIPELINING\r\n",
                "250 OK\r\n250 OK\r\n250 OK\r\n",
            ],
        ),
        // STARTTLS response injection: anything after 220 before the handshake.
        (
            "starttls injection",
            vec![
                GREETING,
                "250-mx\r\n250 STARTTLS\r\n",
                "220 Go\r\n250-mx\r\n250 AUTH PLAIN\r\n",
            ],
        ),
        ("garbage", vec!["hello there\r\n"]),
        ("a 1xx code", vec!["199 what\r\n"]),
        ("no separator", vec!["220mx\r\n"]),
        ("mixed codes", vec!["220-mx\r\n250 mx\r\n"]),
        ("overlong line", vec![overlong.as_str()]),
        ("too many lines", vec![GREETING, many.as_str()]),
        ("3xx to MAIL", vec![GREETING, "250 mx\r\n", "354 what\r\n"]),
        (
            "2xx to DATA",
            vec![
                GREETING,
                "250 mx\r\n",
                "250 OK\r\n",
                "250 OK\r\n",
                "250 OK\r\n",
            ],
        ),
        (
            "talking during the body",
            vec![
                GREETING,
                "250 mx\r\n",
                "250 OK\r\n",
                "250 OK\r\n",
                "354 Go\r\n550 no\r\n",
            ],
        ),
    ];
    for (name, steps) in cases {
        let mut c = client(&["bob@example.org"]);
        let mut driver = Driver::default();
        let mut wrote = String::new();
        for step in steps {
            c.feed(step.as_bytes());
            wrote.push_str(&driver.drain(&mut c));
        }
        assert!(wrote.ends_with("<DONE><CLOSE>"), "{name}: {wrote}");
        assert!(!wrote.contains("QUIT"), "{name}: {wrote}");
        assert!(!wrote.contains("AUTH"), "{name}: {wrote}");
        assert!(!wrote.contains("<BODY>"), "{name}: {wrote}");
        let outcome = driver.outcome.unwrap();
        let failure = outcome.session_failure.unwrap();
        assert_eq!(failure.kind, FailureKind::Protocol, "{name}");
        assert_eq!(
            failure.verdict.disposition,
            Disposition::Temporary,
            "{name}"
        );
        assert!(!failure.verdict.remote);
        assert_eq!(
            outcome.recipients[0].verdict.disposition,
            Disposition::Temporary
        );
        // Closed: nothing more comes out, whatever the server says.
        c.feed(b"250 OK\r\n");
        c.connection_closed();
        c.timed_out();
        assert_eq!(c.poll(), None, "{name}");
        assert!(c.is_closed());
    }
}

#[test]
fn a_connection_lost_after_the_body_is_temporary() {
    let mut c = client(&["bob@example.org"]);
    let mut driver = Driver::default();
    for step in [
        GREETING,
        "250 mx\r\n",
        "250 OK\r\n",
        "250 OK\r\n",
        "354 Go\r\n",
    ] {
        c.feed(step.as_bytes());
        driver.drain(&mut c);
    }
    assert_eq!(c.current_timeout(), Some(DATA_TERMINATION_TIMEOUT));
    // Half a final reply, then nothing.
    c.feed(b"250 2.0.0 Que");
    c.connection_closed();
    assert_eq!(driver.drain(&mut c), "<DONE><CLOSE>");
    let outcome = driver.outcome.unwrap();
    assert_eq!(
        outcome.session_failure.clone().unwrap().kind,
        FailureKind::ConnectionLost
    );
    assert_eq!(
        verdicts(&outcome),
        [(
            "bob@example.org".into(),
            Disposition::Temporary,
            "4.4.2".into()
        )]
    );
}

#[test]
fn the_timeouts_follow_rfc_5321() {
    let mut c = client(&["bob@example.org"]);
    let mut driver = Driver::default();
    assert_eq!(c.current_timeout(), Some(GREETING_TIMEOUT));
    let steps = [
        (GREETING, COMMAND_TIMEOUT),
        ("250 mx\r\n", MAIL_TIMEOUT),
        ("250 OK\r\n", RCPT_TIMEOUT),
        ("250 OK\r\n", DATA_INITIATION_TIMEOUT),
        ("354 Go\r\n", DATA_TERMINATION_TIMEOUT),
    ];
    for (step, timeout) in steps {
        c.feed(step.as_bytes());
        driver.drain(&mut c);
        assert_eq!(c.current_timeout(), Some(timeout), "after {step:?}");
    }
    c.timed_out();
    assert_eq!(driver.drain(&mut c), "<DONE><CLOSE>");
    assert_eq!(c.current_timeout(), None);
    let failure = driver.outcome.unwrap().session_failure.unwrap();
    assert_eq!(failure.kind, FailureKind::Timeout);
    // The body's writes have their own limit.
    let mut c = client(&["bob@example.org"]);
    for step in [
        GREETING,
        "250 mx\r\n",
        "250 OK\r\n",
        "250 OK\r\n",
        "354 Go\r\n",
    ] {
        c.feed(step.as_bytes());
        while let Some(event) = c.poll() {
            if event == Event::SendBody {
                assert_eq!(c.current_timeout(), Some(DATA_BLOCK_TIMEOUT));
            }
        }
    }
}

#[test]
fn the_envelope_cannot_inject_commands() {
    let mut env = envelope(&["bob@example.org\r\nRCPT TO:<evil@example.org>"]);
    assert_eq!(
        Client::new(config(), env.clone(), false).unwrap_err(),
        SetupError::BadText("a recipient")
    );
    env.recipients = vec![];
    assert_eq!(
        Client::new(config(), env, false).unwrap_err(),
        SetupError::NoRecipients
    );
    let mut env = envelope(&["bob@example.org"]);
    env.reverse_path = "a>@b".into();
    assert!(Client::new(config(), env, false).is_err());
}

#[test]
fn extensions_are_read_case_blind() {
    let lines: Vec<String> = [
        "mx.example.org hello",
        "pipelining",
        "Size",
        "auth=login",
        "AUTH cram-md5 login",
        "8bitmime",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let ext = Extensions::read(&lines);
    assert_eq!(
        ext,
        Extensions {
            pipelining: true,
            size: Some(0),
            eight_bit_mime: true,
            smtputf8: false,
            starttls: false,
            auth_plain: false,
            auth_login: true,
        }
    );
}

#[test]
fn reply_lines_and_statuses() {
    assert_eq!(parse_line(b"250 OK"), Some((250, true, &b"OK"[..])));
    assert_eq!(parse_line(b"250-OK"), Some((250, false, &b"OK"[..])));
    assert_eq!(parse_line(b"250"), Some((250, true, &b""[..])));
    assert_eq!(parse_line(b"25"), None);
    assert_eq!(parse_line(b"600 x"), None);
    assert_eq!(parse_line(b"2a0 x"), None);
    assert_eq!(parse_status("5.1.1 No", 550), Some(Status(5, 1, 1)));
    assert_eq!(
        parse_status("4.1.1 No", 550),
        None,
        "class must match the code"
    );
    assert_eq!(parse_status("5.1.1234 No", 550), None);
    assert_eq!(parse_status("5.1 No", 550), None);
    let reply = reply_from(550, vec!["5.1.1 a".into(), "5.1.1 b".into(), "c".into()]);
    assert_eq!(reply.status, Some(Status(5, 1, 1)));
    assert_eq!(reply.lines(), ["a", "b", "c"]);
    // Control characters a server sends are not kept.
    let reply = reply_from(550, vec!["bad\u{1b}[31m".into()]);
    assert_eq!(reply.lines(), ["bad?[31m"]);
}

#[test]
fn the_body_is_stuffed_and_normalised_as_it_streams() {
    let encode = |chunks: &[&[u8]]| {
        let mut encoder = BodyEncoder::new();
        let mut out = Vec::new();
        for chunk in chunks {
            encoder.encode(chunk, &mut out);
        }
        encoder.finish(&mut out);
        String::from_utf8(out).unwrap()
    };
    assert_eq!(encode(&[]), ".\r\n");
    assert_eq!(encode(&[b"a"]), "a\r\n.\r\n");
    assert_eq!(encode(&[b".\r\n"]), "..\r\n.\r\n");
    assert_eq!(encode(&[b"a\n.b\n"]), "a\r\n..b\r\n.\r\n");
    assert_eq!(encode(&[b"a\r", b"\n.", b"b\r"]), "a\r\n..b\r\n.\r\n");
    assert_eq!(encode(&[b"a\rb\r\r\n"]), "a\r\nb\r\n\r\n.\r\n");
    assert_eq!(encode(&[b"a.b\r\n..c"]), "a.b\r\n...c\r\n.\r\n");
}

/// Decodes DATA's wire form as the server core does.
fn unstuff(wire: &[u8]) -> Option<Vec<u8>> {
    let mut reader = DataReader::new(u64::MAX);
    let used = reader.ingest(wire);
    if used != wire.len() || !reader.is_done() {
        return None;
    }
    match reader.finish() {
        DataOutcome::Message(message) => Some(message),
        _ => None,
    }
}

/// A scripted server that answers everything well, for the proptests.
fn good_server() -> Vec<&'static str> {
    vec![
        GREETING,
        EHLO_PIPELINING,
        "250 OK\r\n250 OK\r\n250 OK\r\n",
        "354 Go\r\n",
        "250 OK\r\n",
        "221 Bye\r\n",
    ]
}

proptest! {
    /// However the message is cut into chunks, the wire form is the same; it has only CRLF
    /// line endings; the server core reads it back as the message with its line endings made
    /// CRLF; and the state between chunks is two flags.
    #[test]
    fn body_encoding_round_trips(
        message in proptest::collection::vec(
            prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a')], 0..64),
        cuts in proptest::collection::vec(0usize..64, 0..4),
    ) {
        let mut whole = Vec::new();
        let mut encoder = BodyEncoder::new();
        encoder.encode(&message, &mut whole);
        encoder.finish(&mut whole);

        let mut cuts = cuts;
        cuts.push(message.len());
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut encoder = BodyEncoder::new();
        let mut start = 0;
        for cut in cuts {
            let cut = cut.min(message.len()).max(start);
            encoder.encode(&message[start..cut], &mut pieces);
            start = cut;
        }
        encoder.finish(&mut pieces);
        prop_assert_eq!(&pieces, &whole);

        for (i, &b) in whole.iter().enumerate() {
            if b == b'\r' { prop_assert_eq!(whole.get(i + 1), Some(&b'\n')); }
            if b == b'\n' { prop_assert_eq!(i.checked_sub(1).and_then(|p| whole.get(p)), Some(&b'\r')); }
        }
        let decoded = unstuff(&whole);
        prop_assert!(decoded.is_some(), "the server core did not read it back");
        // The message with each line ending (CRLF, LF or CR) made CRLF, the last line ended.
        let mut normal = Vec::new();
        let mut i = 0;
        while let Some(&b) = message.get(i) {
            match b {
                b'\r' => {
                    normal.extend_from_slice(b"\r\n");
                    if message.get(i + 1) == Some(&b'\n') { i += 1; }
                }
                b'\n' => normal.extend_from_slice(b"\r\n"),
                other => normal.push(other),
            }
            i += 1;
        }
        if !normal.is_empty() && !normal.ends_with(b"\r\n") {
            normal.extend_from_slice(b"\r\n");
        }
        prop_assert_eq!(decoded.unwrap(), normal);
    }

    /// Arbitrary server bytes, cut anywhere, between good replies or instead of them: the
    /// client never panics, holds at most one reply's worth of input, gives exactly one
    /// outcome naming every recipient, and is silent after Close.
    #[test]
    fn arbitrary_server_bytes_never_panic(
        steps in proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..300),
                proptest::collection::vec(
                    prop_oneof![Just(b'2'), Just(b'5'), Just(b'0'), Just(b'-'), Just(b' '),
                                Just(b'\r'), Just(b'\n'), Just(b'3'), Just(b'4')], 0..40),
                (0usize..6).prop_map(|i| good_server()[i].as_bytes().to_vec()),
            ],
            0..12),
        pipelining_off in any::<bool>(),
    ) {
        let mut c = client(&["bob@example.org", "carol@example.org"]);
        let mut dones = 0;
        let mut closed = false;
        for step in &steps {
            let step: Vec<u8> = if pipelining_off {
                step.iter().copied().filter(|&b| b != b'P').collect()
            } else {
                step.clone()
            };
            for piece in step.chunks(7) {
                c.feed(piece);
                prop_assert!(c.buffered() <= MAX_REPLY_LINES * (MAX_REPLY_LINE + 1) + 8);
                while let Some(event) = c.poll() {
                    prop_assert!(!closed, "an event after Close");
                    match event {
                        Event::StartTls => c.tls_started(),
                        Event::SendBody => c.body_sent(),
                        Event::Done(outcome) => {
                            dones += 1;
                            prop_assert_eq!(outcome.recipients.len(), 2);
                        }
                        Event::Close => closed = true,
                        Event::Write(out) => {
                            prop_assert!(out.bytes().ends_with(b"\r\n"));
                        }
                    }
                }
            }
        }
        c.connection_closed();
        while let Some(event) = c.poll() {
            prop_assert!(!closed, "an event after Close");
            match event {
                Event::Done(_) => dones += 1,
                Event::Close => closed = true,
                _ => {}
            }
        }
        prop_assert!(closed);
        prop_assert_eq!(dones, 1);
        prop_assert!(c.is_closed());
    }
}
