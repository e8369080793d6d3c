//! The IMAP core on a 10,000-message mailbox, in memory: SELECT (the core building its view
//! from the driver's snapshot), then `FETCH 1:* (FLAGS UID)` from the core to wire bytes.
//! Before the timings it prints the resident memory the core's view of one selected mailbox of
//! that size costs. The store's half of a SELECT, scanning a real Maildir, is timed in
//! `crates/store/benches/folder_scan.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use dirmail_proto::imap::mailbox::Flags;
use dirmail_proto::imap::{Config, Event, MessageMeta, Request, Response, Session, Snapshot};

const MESSAGES: u32 = 10_000;

fn snapshot() -> Snapshot {
    Snapshot {
        uidvalidity: 1_700_000_000,
        uidnext: MESSAGES + 1,
        messages: (1..=MESSAGES)
            .map(|uid| MessageMeta {
                uid,
                flags: if uid % 3 == 0 {
                    Flags::SEEN
                } else {
                    Flags::NONE
                },
                size: 2_000 + u64::from(uid % 500),
                internal_date: 1_700_000_000 + i64::from(uid) * 60,
                recent: false,
            })
            .collect(),
        keywords: Vec::new(),
    }
}

/// Runs the session until it needs input; requests are answered by `respond`. Returns the
/// bytes it wrote.
fn drive(session: &mut Session, respond: &mut dyn FnMut(Request) -> Response) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(event) = session.poll() {
        match event {
            Event::Reply(reply) => reply.write_to(&mut out),
            Event::Request(request) => {
                let response = respond(request);
                if session.answer(response).is_err() {
                    break;
                }
            }
            Event::StartTls | Event::Close => break,
        }
    }
    out
}

fn logged_in() -> Session {
    let now = Instant::now();
    let mut session = Session::new(
        Config::new("mail.example.jp"),
        IpAddr::from([127, 0, 0, 1]),
        true,
        now,
    );
    session.feed(b"a LOGIN user@example.jp secret\r\n", now);
    drive(&mut session, &mut |_| Response::LoggedIn);
    session
}

fn selected(snapshot: &Snapshot) -> (Session, usize) {
    let mut session = logged_in();
    session.feed(b"s SELECT INBOX\r\n", Instant::now());
    let out = drive(&mut session, &mut |_| Response::Snapshot(snapshot.clone()));
    (session, out.len())
}

fn resident_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4
}

fn report_memory(snapshot: &Snapshot) {
    let before = resident_kib();
    let (session, _) = selected(snapshot);
    let with_view = resident_kib();
    println!(
        "resident memory for one selected {MESSAGES}-message mailbox: core view {} KiB \
         (process RSS {} KiB)",
        with_view.saturating_sub(before),
        with_view
    );
    drop(session);
}

fn benches(c: &mut Criterion) {
    let snapshot = snapshot();
    report_memory(&snapshot);

    let mut group = c.benchmark_group("imap_10k");
    group.sample_size(20);
    group.bench_function("select/core", |b| {
        b.iter(|| black_box(selected(&snapshot).1));
    });
    group.bench_function("fetch_1:*_flags_uid/core", |b| {
        let (mut session, _) = selected(&snapshot);
        b.iter(|| {
            session.feed(b"f FETCH 1:* (FLAGS UID)\r\n", Instant::now());
            let out = drive(&mut session, &mut |_| Response::Done);
            assert!(out.ends_with(b"f OK FETCH completed\r\n"));
            black_box(out.len())
        });
    });
    group.finish();
}

criterion_group!(imap_core, benches);
criterion_main!(imap_core);
