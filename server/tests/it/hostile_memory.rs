//! Memory under unfinished DATA (issue 21): a message streams to a spool file in the store as
//! it arrives, so two hundred unauthenticated sessions each sending 24 MB to `postmaster@` and
//! never finishing cost the server a bounded amount each, not the message. Also: a message
//! larger than the core's piece arrives byte for byte, and a refused message or a dropped
//! connection leaves nothing in the spool.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use crate::hostile_support::{Client, Rig, eventually, expect, smtp_still_serves};

/// The default message size limit (25 MB), so 24 MB is a message the server must take, and
/// room for 200 sessions from one address.
const ROOMY: &str = "[smtp]\nmax_message_size = \"25MB\"\n[limits]\nper_address_max = 250\n";

const SESSIONS: usize = 200;
const MESSAGE: usize = 24 * 1000 * 1000;

/// Where DATA in progress is spooled: `.spool/` in the mail root.
fn spool(rig: &Rig) -> PathBuf {
    rig.dir.path().join("dirmail-data/mail/.spool")
}

fn spooled_files(rig: &Rig) -> usize {
    std::fs::read_dir(spool(rig)).map_or(0, |entries| entries.count())
}

/// A session inside DATA to postmaster@, from one of a few loopback addresses.
fn in_data(port: u16, n: usize) -> Client {
    let source = Ipv4Addr::new(127, 0, 0, 2 + (n % 4) as u8);
    let mut c = Client::connect_from(source, port);
    expect(&c.reply(), "220");
    expect(&c.cmd("EHLO flood.example"), "250");
    expect(&c.cmd("MAIL FROM:<flood@client.example>"), "250");
    expect(&c.cmd("RCPT TO:<postmaster@example.jp>"), "250");
    expect(&c.cmd("DATA"), "354");
    c
}

#[test]
fn two_hundred_unfinished_24_mb_messages_leave_the_rss_under_200_mib() {
    let mut rig = Rig::start(ROOMY);
    let port = rig.port("smtp");
    let before = rig.server.rss_kib();
    let line = "0123456789abcdef".repeat(4095) + "0123456789abcd\r\n";
    assert_eq!(line.len(), 65_536);
    let lines = MESSAGE / line.len();
    // Eight threads of 25 sessions each; every socket stays open until the measure is taken.
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let line = line.clone();
            std::thread::spawn(move || {
                (0..SESSIONS / 8)
                    .map(|i| {
                        let mut c = in_data(port, w * (SESSIONS / 8) + i);
                        for _ in 0..lines {
                            c.send(line.as_bytes());
                        }
                        c
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let clients: Vec<Client> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("a flooding thread"))
        .collect();
    assert_eq!(clients.len(), SESSIONS);
    // Every write has returned, so the server has read all but what the socket buffers hold.
    let during = rig.server.rss_kib();
    println!(
        "{SESSIONS} sessions × 24 MB of unfinished DATA: RSS {before} KiB before, {during} KiB during"
    );
    assert!(
        during < 200 * 1024,
        "{SESSIONS} unfinished 24 MB messages took the server to {during} KiB (from {before} KiB)"
    );
    rig.server.assert_alive();
    drop(clients);
    eventually("the dropped sessions' spool files are removed", || {
        spooled_files(&rig) == 0
    });
    smtp_still_serves(port);
    assert_eq!(
        rig.delivered("bob").len(),
        1,
        "only the fresh client's message"
    );
}

#[test]
fn a_message_many_pieces_long_arrives_byte_for_byte_through_smtplib() {
    let rig = Rig::start(ROOMY);
    let port = rig.port("smtp");
    // 3 MB of varied lines (dots at the start of some, long and short, 8-bit), far more than
    // the core's piece.
    let script = r#"
import smtplib, sys, random
port = int(sys.argv[1])
rnd = random.Random(21)
lines = []
size = 0
while size < 3_000_000:
    n = rnd.choice([0, 1, 5, 77, 998, 4000])
    body = bytes(rnd.choice(b"abc.xyz \t\x80\xe3") for _ in range(n))
    if rnd.random() < 0.1:
        body = b"." + body
    lines.append(body)
    size += n + 2
msg = b"Subject: pieces\r\n\r\n" + b"\r\n".join(lines) + b"\r\n"
with smtplib.SMTP("127.0.0.1", port) as s:
    s.ehlo("pieces.example")
    s.sendmail("a@client.example", ["bob@example.jp"], msg)
sys.stdout.buffer.write(msg)
"#;
    let out = Command::new("python3")
        .args(["-c", script, &port.to_string()])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "smtplib: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent = out.stdout;
    let stored = rig.delivered("bob");
    assert_eq!(stored.len(), 1);
    let stored = &stored[0];
    assert!(stored.starts_with(b"Received: from pieces.example"));
    let at = stored
        .windows(b"Subject: pieces".len())
        .position(|w| w == b"Subject: pieces")
        .expect("the message after the trace header");
    assert_eq!(stored.len() - at, sent.len());
    assert!(
        stored[at..] == sent[..],
        "the stored message differs from the sent one"
    );
    assert_eq!(spooled_files(&rig), 0, "the spool is left empty");
}

#[test]
fn refused_and_dropped_messages_leave_nothing_in_the_spool() {
    let rig = Rig::start("");
    let port = rig.port("smtp");
    let mut c = Client::connect(port);
    expect(&c.reply(), "220");
    expect(&c.cmd("EHLO refused.example"), "250");
    // Too big (the rig's limit is 64 KB), bare LF, and NUL: each refused, nothing kept.
    let cases: [(&[u8], &str); 3] = [
        (&vec![b'x'; 200_000][..], "552 5.3.4"),
        (b"bare\nLF", "554 5.6.0"),
        (b"a NUL \0 here", "550 5.6.0"),
    ];
    for (body, code) in cases {
        expect(&c.cmd("MAIL FROM:<a@client.example>"), "250");
        expect(&c.cmd("RCPT TO:<bob@example.jp>"), "250");
        expect(&c.cmd("DATA"), "354");
        c.send(body);
        expect(&c.cmd("\r\n."), code);
        assert_eq!(spooled_files(&rig), 0, "{code}: the spool is left empty");
    }
    assert!(rig.delivered("bob").is_empty());
    // A connection dropped in the middle of DATA, past the first piece.
    expect(&c.cmd("MAIL FROM:<a@client.example>"), "250");
    expect(&c.cmd("RCPT TO:<bob@example.jp>"), "250");
    expect(&c.cmd("DATA"), "354");
    c.send(&vec![b'y'; 40_000]);
    c.send(b"\r\n");
    c.send(&vec![b'z'; 10_000]);
    drop(c);
    eventually("the dropped session's spool file is removed", || {
        spooled_files(&rig) == 0
    });
    assert!(rig.delivered("bob").is_empty());
    smtp_still_serves(port);
}
