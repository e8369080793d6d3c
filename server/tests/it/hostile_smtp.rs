//! Hostile input over the wire against the real SMTP listener (issue 7): overlong lines, a
//! DATA stream with no end, NUL (refused, R19) and invalid UTF-8, broken and cancelled AUTH, commands out of
//! order, huge pipelined bursts, a client that reads nothing, slow-drip clients, connection
//! floods (the whole limit and one address's share of it), clients that go silent (the
//! configured command and DATA timeouts) and password guessing. Each case expects a clear reply and a server that still
//! serves a fresh, well-behaved client afterwards. (Smuggling, relay and STARTTLS injection
//! are replayed as conformance scenarios, not here.)

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::hostile_support::{Client, PASSWORD, Rig, eventually, expect, smtp_still_serves};
use base64::Engine as _;

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A client that said EHLO on the MX port.
fn hello(port: u16) -> Client {
    let mut c = Client::connect(port);
    expect(&c.reply(), "220");
    expect(&c.cmd("EHLO hostile.example"), "250");
    c
}

#[test]
fn overlong_command_lines_are_refused_and_the_session_stays_in_step() {
    let mut rig = Rig::start("");
    let port = rig.port("smtp");
    let mut c = hello(port);
    expect(
        &c.cmd(&format!("NOOP {}", "x".repeat(100_000))),
        "500 5.5.6",
    );
    expect(&c.cmd("NOOP"), "250");
    // Eight megabytes without a line end: dropped as they arrive, one refusal at the end.
    let before = rig.server.rss_kib();
    let mega = vec![b'A'; 1 << 20];
    for _ in 0..8 {
        c.send(&mega);
    }
    expect(&c.cmd(""), "500 5.5.6");
    let grown = rig.server.rss_kib().saturating_sub(before);
    println!("an 8 MB line: the server's RSS grew {grown} KiB");
    assert!(
        grown < 16 * 1024,
        "an 8 MB line grew the server by {grown} KiB"
    );
    expect(&c.cmd("MAIL FROM:<a@client.example>"), "250");
    let long_rcpt = format!("RCPT TO:<{}@example.jp>", "b".repeat(5000));
    expect(&c.cmd(&long_rcpt), "500 5.5.6");
    expect(&c.cmd("RCPT TO:<bob@example.jp>"), "250");
    expect(&c.cmd("QUIT"), "221");
    rig.server.assert_alive();
    smtp_still_serves(port);
}

#[test]
fn overlong_header_lines_are_kept_whole_or_refused_by_size() {
    let rig = Rig::start("");
    let port = rig.port("smtp");
    let mut c = hello(port);
    // 20 000 octets on one header line: under the 64 KB limit, so delivered untouched.
    let long_value = "v".repeat(20_000);
    expect(&c.cmd("MAIL FROM:<a@client.example>"), "250");
    expect(&c.cmd("RCPT TO:<bob@example.jp>"), "250");
    expect(&c.cmd("DATA"), "354");
    expect(
        &c.cmd(&format!(
            "X-Long: {long_value}\r\nSubject: long\r\n\r\nbody\r\n."
        )),
        "250 2.0.0",
    );
    let stored = rig.delivered("bob");
    assert_eq!(stored.len(), 1);
    let text = String::from_utf8_lossy(&stored[0]);
    assert!(text.contains(&format!("X-Long: {long_value}\r\nSubject: long\r\n")));
    // One megabyte on one header line: over the limit, refused, and nothing stored.
    expect(&c.cmd("MAIL FROM:<a@client.example>"), "250");
    expect(&c.cmd("RCPT TO:<bob@example.jp>"), "250");
    expect(&c.cmd("DATA"), "354");
    let huge = format!("X-Huge: {}\r\n\r\nbody\r\n.", "h".repeat(1 << 20));
    expect(&c.cmd(&huge), "552 5.3.4");
    assert_eq!(rig.delivered("bob").len(), 1);
    expect(&c.cmd("NOOP"), "250");
    smtp_still_serves(port);
}

#[test]
fn a_data_stream_without_end_costs_bounded_memory_and_delivers_nothing() {
    let mut rig = Rig::start("");
    let port = rig.port("smtp");
    let before = rig.server.rss_kib();
    let chunk = "0123456789abcdef".repeat(4096) + "\r\n";

    // 16 MB (256 times the limit), then the end: refused as too big, the session goes on.
    let mut c = hello(port);
    expect(&c.cmd("MAIL FROM:<a@client.example>"), "250");
    expect(&c.cmd("RCPT TO:<bob@example.jp>"), "250");
    expect(&c.cmd("DATA"), "354");
    for _ in 0..256 {
        c.send(chunk.as_bytes());
    }
    let during = rig.server.rss_kib();
    expect(&c.cmd("."), "552 5.3.4");
    let grown = during.max(rig.server.rss_kib()).saturating_sub(before);
    println!("16 MB of DATA: the server's RSS grew {grown} KiB");
    assert!(
        grown < 24 * 1024,
        "16 MB of DATA grew the server by {grown} KiB"
    );
    expect(&c.cmd("NOOP"), "250");

    // The same without an end, then the client goes away: nothing is delivered.
    let mut gone = hello(port);
    expect(&gone.cmd("MAIL FROM:<a@client.example>"), "250");
    expect(&gone.cmd("RCPT TO:<bob@example.jp>"), "250");
    expect(&gone.cmd("DATA"), "354");
    for _ in 0..64 {
        gone.send(chunk.as_bytes());
    }
    gone.send(b"no end in sight\r\n");
    drop(gone);
    rig.server.assert_alive();
    smtp_still_serves(port);
    assert_eq!(
        rig.delivered("bob").len(),
        1,
        "only the fresh client's message"
    );
}

#[test]
fn nul_bytes_and_invalid_utf8_get_replies_nul_is_refused_the_rest_arrives_untouched() {
    let mut rig = Rig::start("");
    let port = rig.port("smtp");
    let mut c = Client::connect(port);
    expect(&c.reply(), "220");
    for line in [
        &b"EHLO nul\0byte.example\r\n"[..],
        b"NO\0OP\r\n",
        b"\xff\xfe\xfd\r\n",
        b"MAIL FROM:<\xff\xfe@client.example>\r\n",
        b"\0\0\0\0\r\n",
    ] {
        c.send(line);
        let reply = c.reply();
        assert!(!reply.is_empty(), "the server closed after {line:?}");
    }
    expect(&c.cmd("EHLO clean.example"), "250");
    expect(&c.cmd("MAIL FROM:<a@client.example>"), "250");
    expect(&c.cmd("RCPT TO:<bob@example.jp>"), "250");
    expect(&c.cmd("DATA"), "354");
    // R19 (issue 21): a NUL is refused like a bare CR or LF; nothing is stored.
    c.send(b"Subject: binary\r\n\r\nnul \0 here\r\n");
    expect(&c.cmd("."), "550 5.6.0");
    assert!(rig.delivered("bob").is_empty());
    expect(&c.cmd("MAIL FROM:<a@client.example>"), "250");
    expect(&c.cmd("RCPT TO:<bob@example.jp>"), "250");
    expect(&c.cmd("DATA"), "354");
    let body = b"Subject: binary\r\n\r\ninvalid \xff\xfe utf-8, \xe3\x81\x82 valid\r\n";
    c.send(body);
    expect(&c.cmd("."), "250 2.0.0");
    let stored = rig.delivered("bob");
    assert!(
        stored[0].ends_with(body),
        "stored differently: {:?}",
        String::from_utf8_lossy(&stored[0])
    );
    rig.server.assert_alive();
    smtp_still_serves(port);
}

#[test]
fn invalid_base64_in_auth_is_refused_and_auth_still_works() {
    let rig = Rig::start("");
    let port = rig.port("submission");
    let mut c = hello(port);
    expect(&c.cmd("AUTH PLAIN @@@not-base64@@@"), "501 5.5.2");
    expect(&c.cmd("AUTH LOGIN"), "334");
    expect(&c.cmd("!!!!"), "501 5.5.2");
    expect(&c.cmd("AUTH PLAIN"), "334");
    expect(&c.cmd("dGlt$$$"), "501 5.5.2");
    expect(&c.cmd("NOOP"), "250");
    let plain = b64(&format!("\0bob@example.jp\0{PASSWORD}"));
    expect(&c.cmd(&format!("AUTH PLAIN {plain}")), "235 2.7.0");
    expect(&c.cmd("MAIL FROM:<bob@example.jp>"), "250");
    smtp_still_serves(rig.port("smtp"));
}

#[test]
fn a_sasl_exchange_cancelled_with_a_star_ends_cleanly() {
    let rig = Rig::start("");
    let port = rig.port("submission");
    let mut c = hello(port);
    expect(&c.cmd("AUTH LOGIN"), "334");
    expect(&c.cmd("*"), "501 5.0.0");
    expect(&c.cmd("AUTH LOGIN"), "334");
    expect(&c.cmd(&b64("bob@example.jp")), "334");
    expect(&c.cmd("*"), "501 5.0.0");
    expect(&c.cmd("AUTH PLAIN"), "334");
    expect(&c.cmd("*"), "501 5.0.0");
    // Not logged in: submission still wants AUTH.
    expect(&c.cmd("MAIL FROM:<bob@example.jp>"), "530 5.7.0");
    expect(&c.cmd("AUTH LOGIN"), "334");
    expect(&c.cmd(&b64("bob@example.jp")), "334");
    expect(&c.cmd(&b64(PASSWORD)), "235 2.7.0");
    smtp_still_serves(rig.port("smtp"));
}

#[test]
fn commands_out_of_order_are_refused_then_too_many_errors_close() {
    let rig = Rig::start("");
    let port = rig.port("smtp");
    let mut c = Client::connect(port);
    expect(&c.reply(), "220");
    expect(&c.cmd("MAIL FROM:<a@client.example>"), "503 5.5.1");
    expect(&c.cmd("RCPT TO:<bob@example.jp>"), "503 5.5.1");
    expect(&c.cmd("DATA"), "503 5.5.1");
    expect(&c.cmd("HELO old.example"), "250");
    expect(&c.cmd("AUTH PLAIN"), "503 5.5.1");
    expect(&c.cmd("EHLO new.example"), "250");
    expect(&c.cmd("MAIL FROM:<a@client.example>"), "250");
    expect(&c.cmd("MAIL FROM:<b@client.example>"), "503 5.5.1");
    expect(&c.cmd("AUTH PLAIN"), "503 5.5.1");
    expect(&c.cmd("DATA"), "554 5.5.1");
    expect(&c.cmd("BDAT 10 LAST"), "502 5.5.1");
    expect(&c.cmd("RSET"), "250");
    expect(&c.cmd("NOOP"), "250");
    // Keep refusing: the session is cut off with 421 once the errors pile up (the 421
    // comes in the same write as the last refusal).
    let mut last = String::new();
    for _ in 0..30 {
        last = c.cmd("DATA");
        if !last.starts_with("421") && c.has_more() {
            last = c.reply();
        }
        if last.starts_with("421") {
            break;
        }
    }
    expect(&last, "421 4.7.0");
    assert!(c.closes(), "the connection stays open after 421");
    smtp_still_serves(port);
}

#[test]
fn a_huge_pipelined_burst_gets_one_reply_per_command_in_order() {
    let rig = Rig::start("");
    let port = rig.port("smtp");
    let mut c = hello(port);
    const ROUNDS: usize = 1_000;
    let mut burst = String::new();
    for i in 0..ROUNDS {
        burst.push_str(&format!(
            "MAIL FROM:<s{i}@client.example>\r\nRCPT TO:<bob@example.jp>\r\nRCPT TO:<carol@example.jp>\r\nNOOP\r\nRSET\r\n"
        ));
    }
    burst.push_str("MAIL FROM:<last@client.example>\r\nRCPT TO:<bob@example.jp>\r\nDATA\r\n");
    let bytes = burst.into_bytes();
    let writer = c.stream().try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        let mut writer = writer;
        std::io::Write::write_all(&mut writer, &bytes).expect("send the burst");
    });
    for i in 0..ROUNDS {
        for expected in [
            "250 2.1.0",
            "250 2.1.5",
            "250 2.1.5",
            "250 2.0.0",
            "250 2.0.0",
        ] {
            let reply = c.reply();
            assert!(
                reply.starts_with(expected),
                "round {i}: expected {expected:?}, got {reply:?}"
            );
        }
    }
    sender.join().expect("the sender");
    expect(&c.reply(), "250");
    expect(&c.reply(), "250");
    expect(&c.reply(), "354");
    expect(
        &c.cmd("Subject: after the burst\r\n\r\nx\r\n."),
        "250 2.0.0",
    );
    assert_eq!(rig.delivered("bob").len(), 1);
    smtp_still_serves(port);
}

#[test]
fn a_client_that_reads_nothing_is_not_buffered_without_bound() {
    let mut rig = Rig::start("");
    let port = rig.port("smtp");
    smtp_still_serves(port);
    let before = rig.server.rss_kib();
    let mut deaf = hello(port);
    // Each HELP asks for ~100 octets of reply; the client never reads them.
    let chunk = "HELP\r\n".repeat(10_000);
    let limit = 256 << 20;
    let sent = deaf.push_until_blocked(chunk.as_bytes(), limit, Duration::from_secs(2));
    assert!(
        sent < limit,
        "the server took {sent} octets of commands without its replies being read"
    );
    let grown = rig.server.rss_kib().saturating_sub(before);
    println!("the server stopped reading after {sent} octets; its RSS grew {grown} KiB");
    assert!(
        grown < 48 * 1024,
        "a client that reads nothing grew the server by {grown} KiB after {sent} octets"
    );
    // Others are served while it sits there.
    smtp_still_serves(port);
    drop(deaf);
    rig.server.assert_alive();
    smtp_still_serves(port);
}

#[test]
fn slow_drip_clients_are_answered_and_do_not_hold_up_others() {
    let rig = Rig::start("");
    let port = rig.port("smtp");
    let mut slow = Client::connect(port);
    expect(&slow.reply(), "220");
    let drip = |client: &mut Client, text: &str| {
        for byte in text.as_bytes() {
            client.send(std::slice::from_ref(byte));
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    drip(&mut slow, "EHLO slow.example\r\n");
    expect(&slow.reply(), "250");
    drip(&mut slow, "MAIL FROM:<slow@client.example>\r\n");
    expect(&slow.reply(), "250");
    // A whole delivery by someone else while the slow one is mid-conversation.
    smtp_still_serves(port);
    drip(&mut slow, "RCPT TO:<bob@example.jp>\r\nDATA\r\n");
    expect(&slow.reply(), "250");
    expect(&slow.reply(), "354");
    drip(&mut slow, "Subject: drip\r\n\r\nslowly\r\n.\r\n");
    expect(&slow.reply(), "250 2.0.0");
    let stored = rig.delivered("bob");
    assert_eq!(stored.len(), 2);
    assert!(
        stored
            .iter()
            .any(|m| m.ends_with(b"Subject: drip\r\n\r\nslowly\r\n"))
    );
}

/// Six connections in all, three of them from any one address.
const LIMITED: &str =
    "[limits]\nsocket_max = 6\nper_address_max = 3\nsocket_min = 1\nsocket_threshold = 1\n";
/// Six connections in all, and one address may take every one: the whole limit alone.
const LIMITED_WHOLE: &str =
    "[limits]\nsocket_max = 6\nper_address_max = 6\nsocket_min = 1\nsocket_threshold = 1\n";

/// Opens connections until `n` have their greeting.
fn flood(port: u16, n: usize) -> Vec<Client> {
    flood_from(Ipv4Addr::LOCALHOST, port, n)
}

fn flood_from(source: Ipv4Addr, port: u16, n: usize) -> Vec<Client> {
    (0..n)
        .map(|_| {
            let mut c = Client::connect_from(source, port);
            expect(&c.reply(), "220");
            c
        })
        .collect()
}

#[test]
fn many_connections_from_one_address_hit_the_limit_with_421_then_clear() {
    let mut rig = Rig::start(LIMITED_WHOLE);
    let port = rig.port("smtp");
    let held = flood(port, 6);
    for _ in 0..3 {
        let mut extra = Client::connect(port);
        expect(
            &extra.reply(),
            "421 4.7.0 Too many connections, try again later",
        );
        assert!(extra.closes());
    }
    // The limit counts every listener.
    let mut pop = Client::connect(rig.port("pop3"));
    assert!(pop.pop_line().starts_with("-ERR [SYS/TEMP]"));
    drop(held);
    eventually("a greeting once the flood is gone", || {
        let mut c = Client::connect(port);
        c.reply().starts_with("220")
    });
    rig.server.assert_alive();
    smtp_still_serves(port);
}

#[test]
fn another_address_still_gets_in_while_one_address_holds_every_slot() {
    let rig = Rig::start(LIMITED);
    let port = rig.port("smtp");
    // 127.0.0.1 tries to take all six slots and gets its share, three.
    let held = flood(port, 3);
    for _ in 0..3 {
        let mut extra = Client::connect(port);
        expect(
            &extra.reply(),
            "421 4.7.0 Too many connections from your address",
        );
        assert!(extra.closes());
    }
    // The share counts every listener.
    let mut pop = Client::connect(rig.port("pop3"));
    let refused = pop.pop_line();
    assert!(
        refused.starts_with("-ERR [SYS/TEMP] Too many connections from your address"),
        "{refused:?}"
    );
    // Another address gets in, and is served, while 127.0.0.1 holds its share…
    let mut other = Client::connect_from(Ipv4Addr::new(127, 0, 0, 2), port);
    expect(&other.reply(), "220");
    expect(&other.cmd("EHLO other.example"), "250");
    // …and the whole limit still holds: 127.0.0.2 takes the last two slots, then 127.0.0.3
    // gets in only by closing the connection that has waited longest without a word,
    // 127.0.0.1's first.
    let more = flood_from(Ipv4Addr::new(127, 0, 0, 2), port, 2);
    let mut third = Client::connect_from(Ipv4Addr::new(127, 0, 0, 3), port);
    expect(&third.reply(), "220");
    let mut held = held;
    expect(
        &held[0].reply(),
        "421 4.7.0 Too many connections; closing an idle connection that has not logged in",
    );
    assert!(held[0].closes());
    expect(&third.cmd("EHLO third.example"), "250");
    drop((held, more));
}

#[test]
fn an_idle_client_is_told_421_after_the_configured_command_timeout() {
    let rig = Rig::start("[limits]\nsmtp_command_timeout = \"2s\"\n");
    let port = rig.port("smtp");
    // Silent after the greeting; and silent half-way through a command.
    let mut silent = Client::connect(port);
    expect(&silent.reply(), "220");
    let mut halfway = hello(port);
    halfway.send(b"MAIL FROM:<slow@cli");
    for c in [&mut silent, &mut halfway] {
        expect(&c.reply(), "421 4.4.2");
        assert!(c.closes(), "the connection stays open after 421");
    }
    smtp_still_serves(port);
}

#[test]
fn a_client_that_stops_inside_data_is_told_421_after_the_configured_data_timeout() {
    // Commands may wait an hour; only the DATA timeout can end this session in time.
    let rig = Rig::start("[limits]\nsmtp_command_timeout = \"1h\"\nsmtp_data_timeout = \"2s\"\n");
    let port = rig.port("smtp");
    let mut c = hello(port);
    expect(&c.cmd("MAIL FROM:<a@client.example>"), "250");
    expect(&c.cmd("RCPT TO:<bob@example.jp>"), "250");
    expect(&c.cmd("DATA"), "354");
    c.send(b"Subject: cut off\r\n\r\nhalf a mess");
    expect(&c.reply(), "421 4.4.2");
    assert!(c.closes(), "the connection stays open after 421");
    assert!(
        rig.delivered("bob").is_empty(),
        "a cut-off message was delivered"
    );
    smtp_still_serves(port);
}

#[test]
fn password_guessing_slows_that_address_down_and_not_others() {
    let rig = Rig::start("[server]\nlogging = 3\n");
    let port = rig.port("submission");
    let wrong = |n: usize| format!("Wrong-guess-{n}");
    // Each refusal from 127.0.0.1 waits at least the throttle's delay: 250 ms, doubling.
    let mut waits = Vec::new();
    for n in 1..=4 {
        let mut c = hello(port);
        let user = if n == 1 {
            "nosuch@example.jp"
        } else {
            "bob@example.jp"
        };
        let started = Instant::now();
        let reply = c.cmd(&format!(
            "AUTH PLAIN {}",
            b64(&format!("\0{user}\0{}", wrong(n)))
        ));
        waits.push(started.elapsed());
        expect(&reply, "535 5.7.8");
    }
    println!("refusals from one address waited {waits:?}");
    for (i, wait) in waits.iter().enumerate() {
        let least = Duration::from_millis(250) * (1 << i);
        assert!(
            *wait >= least,
            "refusal {}: answered after {wait:?}, before {least:?}",
            i + 1
        );
    }
    // The fifth guess (held for 4 s) and a login from another address at the same time: the
    // other address is answered while the guess is still held.
    let mut guesser = hello(port);
    guesser.send(
        format!(
            "AUTH PLAIN {}\r\n",
            b64(&format!("\0bob@example.jp\0{}", wrong(5)))
        )
        .as_bytes(),
    );
    let started = Instant::now();
    let mut other = Client::connect_from(Ipv4Addr::new(127, 0, 0, 2), port);
    expect(&other.reply(), "220");
    expect(&other.cmd("EHLO other.example"), "250");
    let plain = b64(&format!("\0bob@example.jp\0{PASSWORD}"));
    expect(&other.cmd(&format!("AUTH PLAIN {plain}")), "235 2.7.0");
    let other_done = started.elapsed();
    expect(&guesser.reply(), "535 5.7.8");
    let guess_done = started.elapsed();
    println!(
        "another address logged in after {other_done:?}; the guess was answered after {guess_done:?}"
    );
    assert!(
        other_done < guess_done,
        "the other address waited {other_done:?}, the guesser {guess_done:?}"
    );
    // The log names what happened, never a password (not even encoded).
    let log = rig.server.log();
    assert!(log.contains("smtp login refused"), "{log}");
    assert!(log.contains("unknown user"), "{log}");
    assert!(log.contains("bad password"), "{log}");
    let mut secrets: Vec<String> = (1..=5).map(wrong).collect();
    secrets.push(PASSWORD.to_owned());
    secrets.push(plain);
    for secret in secrets {
        assert!(!log.contains(&secret), "the log holds {secret:?}:\n{log}");
    }
}
