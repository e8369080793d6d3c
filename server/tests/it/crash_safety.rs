//! R18 under fire: several clients deliver over SMTP while the server is killed with SIGKILL at
//! random moments, again and again. Afterwards every message that got `250` is in its mailbox
//! exactly once and whole, nothing half-written is visible in `new/` or `cur/`, and the store
//! still opens. The seed is printed so a failure can be replayed (`CRASH_SEED=…`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{Scratch, Server};

const ROUNDS: usize = 6;
const CLIENTS: usize = 4;

/// A small deterministic generator, so a run can be replayed from its seed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

/// One SMTP reply: its code, after reading every line of it.
fn reply(reader: &mut BufReader<TcpStream>) -> std::io::Result<u16> {
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line.len() >= 4 && line.as_bytes()[3] == b' ' {
            return line[..3]
                .parse()
                .map_err(|_| std::io::ErrorKind::InvalidData.into());
        }
    }
}

/// The message body for `id`: long enough to take a few writes, with a trailer that proves it
/// arrived whole.
fn body(id: &str) -> String {
    let mut text =
        format!("From: sender@example.jp\r\nTo: bob@example.jp\r\nSubject: {id}\r\n\r\n");
    for i in 0..200 {
        text.push_str(&format!(
            "line {i:04} of {id} .........................................\r\n"
        ));
    }
    text.push_str(&format!("END-{id}\r\n"));
    text
}

/// Sends one message; `Ok(true)` when the server said 250 after DATA.
fn send(port: u16, id: &str) -> std::io::Result<bool> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut step = |line: &str, reader: &mut BufReader<TcpStream>| -> std::io::Result<u16> {
        writer.write_all(line.as_bytes())?;
        reply(reader)
    };
    if reply(&mut reader)? != 220 {
        return Ok(false);
    }
    step("EHLO crash.test\r\n", &mut reader)?;
    step("MAIL FROM:<sender@example.jp>\r\n", &mut reader)?;
    step("RCPT TO:<bob@example.jp>\r\n", &mut reader)?;
    if step("DATA\r\n", &mut reader)? != 354 {
        return Ok(false);
    }
    let accepted = step(&format!("{}.\r\n", body(id)), &mut reader)? == 250;
    let _ = step("QUIT\r\n", &mut reader);
    Ok(accepted)
}

#[test]
fn acknowledged_mail_survives_sigkill() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("crash_safety seed: CRASH_SEED={seed}");
    let mut rng = Lcg(seed);
    let s = Scratch::new();
    std::fs::write(
        s.path().join("dirmail.toml"),
        "[server]\nhostname = \"mail.example.jp\"\nlogging = 1\n\
         [smtp]\nport = 0\nsubmission_port = false\nsmtps_port = false\n\
         [pop3]\nport = false\npop3s_port = false\n[imap]\nport = false\nimaps_port = false\n",
    )
    .expect("config");
    s.expect(0, &["add", "example.jp"]);
    s.expect(0, &["add", "bob@example.jp", "--create-user", "Bob-pw1"]);

    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    for round in 0..ROUNDS {
        let mut server = Server::start(s.path());
        let port = server.port("smtp");
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let stop = Arc::clone(&stop);
                let acknowledged = Arc::clone(&acknowledged);
                std::thread::spawn(move || {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let id = format!("r{round}-c{client}-m{n}");
                        n += 1;
                        match send(port, &id) {
                            Ok(true) => acknowledged.lock().expect("lock").push(id),
                            Ok(false) => {}
                            Err(_) => break,
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(80 + rng.next(400)));
        let _ = Command::new("kill")
            .args(["-KILL", &server.child.id().to_string()])
            .status();
        let _ = server.child.wait();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            let _ = c.join();
        }
    }

    // What is in the mailbox: subject id → how many whole copies.
    let maildir = s.mailroot().join("example.jp/bob");
    let mut copies: HashMap<String, usize> = HashMap::new();
    for sub in ["new", "cur"] {
        for entry in std::fs::read_dir(maildir.join(sub)).expect("read the maildir") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("a message is text");
            let id = text
                .lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap_or_else(|| {
                    panic!(
                        "{} has no Subject: half-written (seed {seed})",
                        path.display()
                    )
                })
                .to_owned();
            assert_eq!(
                text,
                format!("{}{}", &text[..text.find("From: ").unwrap_or(0)], body(&id)),
                "{} is not whole (seed {seed})",
                path.display()
            );
            *copies.entry(id).or_default() += 1;
        }
    }
    let acknowledged = acknowledged.lock().expect("lock");
    assert!(
        acknowledged.len() > ROUNDS,
        "the clients got some mail through ({})",
        acknowledged.len()
    );
    for id in acknowledged.iter() {
        assert_eq!(
            copies.get(id),
            Some(&1),
            "{id} was acknowledged: exactly one copy (seed {seed})"
        );
    }
    for (id, n) in &copies {
        assert_eq!(*n, 1, "{id} is there {n} times (seed {seed})");
    }
    // The store opens cleanly and counts what is there.
    let out = s.expect(0, &["--json", "stat"]);
    let stat: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        stat["total"]["messages"].as_u64(),
        Some(copies.len() as u64)
    );
    eprintln!(
        "crash_safety: {} rounds, {} acknowledged, {} in the mailbox (unacknowledged but whole: {})",
        ROUNDS,
        acknowledged.len(),
        copies.len(),
        copies.len() - acknowledged.len()
    );
}
