//! The input memory budget (`[limits] input_memory`): logged-in sessions each in the middle of
//! a large APPEND hold, together, no more than the budget and one message, and every APPEND
//! still finishes (the session charged first always goes on, so the others are not starved for
//! ever).

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use crate::hostile_support::{Client, PASSWORD, Rig};

const SESSIONS: usize = 10;
const LITERAL: usize = 10_000_000;
/// Sent at once; the rest waits for the test's word.
const FIRST: usize = 9_000_000;

#[test]
fn large_appends_together_stay_within_the_budget_and_all_finish() {
    let rig = Rig::with_imap(
        "[smtp]\nmax_message_size = \"10MB\"\n[limits]\ninput_memory = \"12MB\"\nper_address_max = 20\n",
    );
    let port = rig.port("imap");
    let before = rig.server.rss_kib();
    let sent = Arc::new(AtomicUsize::new(0));
    let mut go = Vec::new();
    let mut writers = Vec::new();
    for n in 0..SESSIONS {
        let mut client = Client::connect(port);
        client.imap_response();
        let login = client.imap(&format!("a0 LOGIN bob@example.jp {PASSWORD}"));
        assert!(login.contains("a0 OK"), "{login}");
        client.send(format!("a1 APPEND INBOX {{{LITERAL}}}\r\n").as_bytes());
        let ready = client.imap_response();
        assert!(ready.starts_with("+ "), "{ready}");
        let (tx, rx) = mpsc::channel::<()>();
        go.push(tx);
        let sent = Arc::clone(&sent);
        writers.push(std::thread::spawn(move || {
            let mut stream = client.stream().try_clone().expect("clone the socket");
            let body = format!("Subject: part {n}\r\n\r\n").into_bytes();
            let mut message = body;
            message.resize(LITERAL, b'x');
            for piece in message[..FIRST].chunks(64 * 1024) {
                stream.write_all(piece).expect("write the literal");
                sent.fetch_add(piece.len(), Ordering::Relaxed);
            }
            rx.recv().expect("the word to finish");
            stream.write_all(&message[FIRST..]).expect("write the rest");
            stream.write_all(b"\r\n").expect("end the command");
            client.imap_until("a1")
        }));
    }
    // Wait until the writers stop making progress: the server no longer reads from some of them.
    let mut last = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        std::thread::sleep(Duration::from_millis(1500));
        let now = sent.load(Ordering::Relaxed);
        if now == last || now == SESSIONS * FIRST || Instant::now() > deadline {
            break;
        }
        last = now;
    }
    let grown_mib = rig.server.rss_kib().saturating_sub(before) / 1024;
    // Held by the server: at most 12 MB of budget, one 10 MB message past it (the session in
    // front), a small allowance per session, and what the allocator keeps of the buffers'
    // growth (measured: 33 MiB for 6 sessions). Without the budget, 6 sessions grew 71 MiB; 10
    // hold 90 MB of literals.
    assert!(
        grown_mib < 50,
        "the server grew by {grown_mib} MiB while {SESSIONS} APPENDs were part-sent ({} bytes sent)",
        sent.load(Ordering::Relaxed)
    );
    assert!(
        sent.load(Ordering::Relaxed) < SESSIONS * FIRST,
        "some writers must be held back by the budget"
    );
    for tx in go {
        tx.send(()).expect("a writer waits");
    }
    for writer in writers {
        let answer = writer.join().expect("a writer thread");
        assert!(answer.contains("a1 OK"), "{answer}");
    }
    // APPEND stores into `cur/` (the message is not new to the client that put it there).
    let cur = rig.dir.path().join("dirmail-data/mail/example.jp/bob/cur");
    let stored = std::fs::read_dir(&cur).expect("bob's cur/").count();
    assert_eq!(stored, SESSIONS);
    eprintln!("input budget: grew {grown_mib} MiB with {SESSIONS} APPENDs part-sent");
}
