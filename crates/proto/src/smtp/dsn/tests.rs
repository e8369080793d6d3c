//! Notifications parsed back with mail-parser, field by field.

use mail_parser::{MessageParser, MimeHeaders, PartType};
use proptest::prelude::*;

use super::*;

const HEADERS: &[u8] = b"From: Alice <alice@example.jp>\r\nTo: bob@example.org\r\nSubject: Quarterly figures\r\nMessage-ID: <orig.1@example.jp>\r\n\r\nThe body, which is never quoted back.\r\n";

fn failed() -> Recipient {
    Recipient {
        address: "bob@example.org".into(),
        action: Action::Failed,
        status: Status(5, 1, 1),
        remote_mta: Some("mx.example.org".into()),
        diagnostic: Some(Reply::multi(
            550,
            Some(Status(5, 1, 1)),
            vec!["No such user".into(), "here".into()],
        )),
        last_attempt: Some("Tue, 3 Jun 2025 10:05:00 +0000".into()),
        will_retry_until: None,
    }
}

fn delayed() -> Recipient {
    Recipient {
        address: "carol@example.net".into(),
        action: Action::Delayed,
        status: Status(4, 4, 1),
        remote_mta: None,
        diagnostic: None,
        last_attempt: None,
        will_retry_until: Some("Sun, 8 Jun 2025 10:00:00 +0000".into()),
    }
}

fn notice<'a>(recipients: &'a [Recipient], headers: &'a [u8]) -> Notice<'a> {
    Notice {
        hostname: "mail.example.jp",
        reverse_path: "alice@example.jp",
        arrival_date: "Tue, 3 Jun 2025 10:00:00 +0000",
        date: "Tue, 3 Jun 2025 10:06:00 +0000",
        queue_id: "Q1234",
        unique: "1749,abc.def",
        recipients,
        original_headers: headers,
    }
}

/// Every line ends CRLF and is at most 998 octets.
fn assert_wire_form(message: &[u8]) {
    for (i, &b) in message.iter().enumerate() {
        if b == b'\r' {
            assert_eq!(message.get(i + 1), Some(&b'\n'), "bare CR at {i}");
        }
        if b == b'\n' {
            assert_eq!(
                message.get(i.wrapping_sub(1)),
                Some(&b'\r'),
                "bare LF at {i}"
            );
        }
    }
    for line in message.split(|&b| b == b'\n') {
        assert!(line.len() <= 999, "a line of {} octets", line.len());
    }
}

#[test]
fn a_bounce_parses_back_with_every_field() {
    let recipients = [failed(), delayed()];
    let dsn = build(&notice(&recipients, HEADERS)).unwrap();
    assert_eq!(dsn.to, "alice@example.jp");
    assert!(!dsn.eight_bit);
    assert!(!dsn.utf8_headers);
    assert_wire_form(&dsn.message);

    let parsed = MessageParser::default().parse(&dsn.message).unwrap();
    let from = parsed.from().unwrap().first().unwrap();
    assert_eq!(from.address(), Some("MAILER-DAEMON@mail.example.jp"));
    assert_eq!(
        parsed.to().unwrap().first().unwrap().address(),
        Some("alice@example.jp")
    );
    assert_eq!(
        parsed.subject(),
        Some("Undelivered Mail Returned to Sender")
    );
    assert_eq!(parsed.message_id(), Some("dsn.1749abcdef@mail.example.jp"));
    assert_eq!(
        parsed.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-replied")
    );
    let ct = parsed.content_type().unwrap();
    assert_eq!(ct.ctype(), "multipart");
    assert_eq!(ct.subtype(), Some("report"));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));

    // The root, then the three parts.
    assert_eq!(parsed.parts.len(), 4);
    let kinds: Vec<String> = parsed.parts[1..]
        .iter()
        .map(|p| {
            let ct = p.content_type().unwrap();
            format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default())
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers"
        ]
    );

    let readable = parsed.body_text(0).unwrap();
    assert!(readable.contains("could not be delivered"), "{readable}");
    assert!(
        readable.contains("<bob@example.org>: mx.example.org said: 550 5.1.1 No such user here"),
        "{readable}"
    );
    assert!(
        readable.contains("<carol@example.net>: status 4.4.1"),
        "{readable}"
    );

    let report = String::from_utf8(parsed.parts[2].contents().to_vec()).unwrap();
    let blocks: Vec<&str> = report.split("\r\n\r\n").collect();
    assert_eq!(blocks.len(), 3, "{report}");
    assert_eq!(
        blocks[0],
        "Reporting-MTA: dns; mail.example.jp\r\nX-Dirmail-Queue-ID: Q1234\r\nArrival-Date: Tue, 3 Jun 2025 10:00:00 +0000"
    );
    assert_eq!(
        blocks[1],
        "Final-Recipient: rfc822; bob@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n\
         Remote-MTA: dns; mx.example.org\r\nDiagnostic-Code: smtp; 550 5.1.1 No such user here\r\n\
         Last-Attempt-Date: Tue, 3 Jun 2025 10:05:00 +0000"
    );
    assert_eq!(
        blocks[2].trim_end(),
        "Final-Recipient: rfc822; carol@example.net\r\nAction: delayed\r\nStatus: 4.4.1\r\n\
         Will-Retry-Until: Sun, 8 Jun 2025 10:00:00 +0000"
    );

    // The original headers, and not its body.
    let quoted = String::from_utf8(parsed.parts[3].contents().to_vec()).unwrap();
    assert!(
        quoted.starts_with("From: Alice <alice@example.jp>\r\n"),
        "{quoted}"
    );
    assert!(quoted.contains("Subject: Quarterly figures\r\n"));
    assert!(!String::from_utf8_lossy(&dsn.message).contains("never quoted"));
}

#[test]
fn a_delay_notice_says_so() {
    let dsn = build(&notice(&[delayed()], HEADERS)).unwrap();
    let parsed = MessageParser::default().parse(&dsn.message).unwrap();
    assert_eq!(parsed.subject(), Some("Delayed Mail (still being retried)"));
    assert!(parsed.body_text(0).unwrap().contains("keeps trying"));
}

#[test]
fn never_for_a_null_reverse_path() {
    let recipients = [failed()];
    let mut n = notice(&recipients, HEADERS);
    n.reverse_path = "";
    assert_eq!(build(&n), Err(DsnError::NullReversePath));
    let n = notice(&[], HEADERS);
    assert_eq!(build(&n), Err(DsnError::NoRecipients));
    let mut n = notice(&recipients, HEADERS);
    n.reverse_path = "alice@example.jp>\r\nBcc: everyone@example.org";
    assert_eq!(build(&n), Err(DsnError::BadText("the reverse-path")));
}

#[test]
fn long_and_hostile_replies_stay_within_the_line_limit() {
    let mut r = failed();
    r.diagnostic = Some(Reply::multi(
        550,
        Some(Status(5, 7, 1)),
        vec![
            "non-ASCII é and \u{1b}[31m escapes".into(),
            "x".repeat(3000),
            "words ".repeat(300),
        ],
    ));
    let recipients = [r];
    let mut headers = b"Subject: ".to_vec();
    headers.extend(std::iter::repeat_n(b'y', 5000));
    headers.extend_from_slice(b"\nX-Lf-Only: yes\n\n");
    let dsn = build(&notice(&recipients, &headers)).unwrap();
    assert_wire_form(&dsn.message);
    assert!(!dsn.eight_bit, "the remote's words are made ASCII");
    let parsed = MessageParser::default().parse(&dsn.message).unwrap();
    assert_eq!(parsed.parts.len(), 4);
    let report = String::from_utf8(parsed.parts[2].contents().to_vec()).unwrap();
    // Folded at spaces (a continuation line starts with one), so unfold to read it.
    let report = report.replace("\r\n ", " ");
    assert!(report.contains("Diagnostic-Code: smtp; 550 5.7.1 non-ASCII ? and ?[31m escapes xxxx"));
    // At most MAX_DIAGNOSTIC characters of it.
    assert!(report.contains("words words"));
    assert!(!report.contains(&"words ".repeat(300)));
    let quoted = String::from_utf8(parsed.parts[3].contents().to_vec()).unwrap();
    assert!(quoted.contains("\r\nX-Lf-Only: yes\r\n"), "{quoted}");
}

#[test]
fn the_original_headers_are_bounded() {
    let mut headers = Vec::new();
    for i in 0..10_000 {
        headers.extend_from_slice(format!("X-Filler-{i}: some value\r\n").as_bytes());
    }
    let recipients = [failed()];
    let dsn = build(&notice(&recipients, &headers)).unwrap();
    assert!(dsn.message.len() < MAX_ORIGINAL_HEADERS + 4096);
    let parsed = MessageParser::default().parse(&dsn.message).unwrap();
    let quoted = parsed.parts[3].contents();
    assert!(quoted.len() <= MAX_ORIGINAL_HEADERS + 2);
    assert!(quoted.ends_with(b"some value\r\n") || quoted.ends_with(b"some value"));
}

#[test]
fn the_boundary_is_in_no_part() {
    // The original headers hold the first boundary the builder would try.
    let headers = b"Subject: --=_dirmail_1749abcdef_0 and =_dirmail_1749abcdef_1\r\n\r\n";
    let recipients = [failed()];
    let dsn = build(&notice(&recipients, headers)).unwrap();
    let text = String::from_utf8(dsn.message).unwrap();
    assert!(
        text.contains("boundary=\"=_dirmail_1749abcdef_2\""),
        "{text}"
    );
    let parsed = MessageParser::default().parse(text.as_bytes()).unwrap();
    assert_eq!(parsed.parts.len(), 4);
}

#[test]
fn utf8_addresses_make_a_global_report() {
    let mut r = failed();
    r.address = "δοκιμή@example.gr".into();
    let recipients = [r];
    let mut n = notice(&recipients, HEADERS);
    n.reverse_path = "アリス@example.jp";
    let dsn = build(&n).unwrap();
    assert!(dsn.eight_bit);
    assert!(dsn.utf8_headers);
    let parsed = MessageParser::default().parse(&dsn.message).unwrap();
    let ct = parsed.parts[2].content_type().unwrap();
    assert_eq!(ct.subtype(), Some("global-delivery-status"));
    let report = String::from_utf8(parsed.parts[2].contents().to_vec()).unwrap();
    assert!(report.contains("Final-Recipient: utf-8; δοκιμή@example.gr"));
    assert!(matches!(parsed.parts[1].body, PartType::Text(_)));
}

proptest! {
    /// Whatever the remote said and whatever the original headers hold, the notification is
    /// CRLF with lines ≤ 998 octets, parses into its three parts, and is bounded in size.
    #[test]
    fn any_input_makes_a_well_formed_notification(
        lines in proptest::collection::vec(".{0,300}", 0..5),
        headers in proptest::collection::vec(any::<u8>(), 0..3000),
        code in 400u16..600,
    ) {
        let mut r = failed();
        r.diagnostic = Some(Reply::multi(code, None, lines));
        let recipients = [r, delayed()];
        let dsn = build(&notice(&recipients, &headers)).unwrap();
        for (i, &b) in dsn.message.iter().enumerate() {
            if b == b'\r' { prop_assert_eq!(dsn.message.get(i + 1), Some(&b'\n')); }
            if b == b'\n' { prop_assert_eq!(dsn.message.get(i.wrapping_sub(1)), Some(&b'\r')); }
        }
        for line in dsn.message.split(|&b| b == b'\n') {
            prop_assert!(line.len() <= 999);
        }
        prop_assert!(dsn.message.len() < 32 * 1024);
        let parsed = MessageParser::default().parse(&dsn.message).unwrap();
        prop_assert_eq!(parsed.parts.len(), 4);
    }
}
