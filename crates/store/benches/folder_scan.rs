//! The store's half of an IMAP SELECT on a 10,000-message mailbox: opening the folder scans a
//! real Maildir and reads its UID list. (The protocol core's half, building its view from the
//! snapshot, is timed in memory by `benches/benches/imap_core.rs`.) Before the timing it
//! prints the resident memory one open folder of that size costs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use dirmail_store::folders::{Folder, Mailstore};

const MESSAGES: u32 = 10_000;

/// A real Maildir of `MESSAGES` small messages in `cur/`, a third of them seen, with its UID
/// list written by a first scan.
fn maildir(root: &Path) -> Mailstore {
    let dir = root.join("box");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(dir.join(sub)).expect("maildir");
    }
    for i in 0..MESSAGES {
        let body = format!("Subject: message {i}\r\nFrom: a@example.jp\r\n\r\nbody {i}\r\n");
        let info = if i % 3 == 0 { "S" } else { "" };
        let name = format!(
            "{}.M{i}P1Q{i}.bench,S={}:2,{info}",
            1_700_000_000 + i,
            body.len()
        );
        std::fs::write(dir.join("cur").join(name), body).expect("message");
    }
    let store = Mailstore::new(dir, "bench.example.jp");
    Folder::open(&store, "INBOX", true).expect("first scan writes the UID list");
    store
}

/// This process's resident memory in KiB (`/proc/self/statm`, 4 KiB pages).
fn resident_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4
}

fn benches(c: &mut Criterion) {
    let root = tempfile::tempdir().expect("temporary directory");
    let store = maildir(root.path());

    let before = resident_kib();
    let folder = Folder::open(&store, "INBOX", true).expect("open");
    let with_folder = resident_kib();
    println!(
        "resident memory for one open {MESSAGES}-message folder: {} KiB (process RSS {} KiB)",
        with_folder.saturating_sub(before),
        with_folder
    );
    drop(folder);

    // The group and name the timing had beside the core's, so earlier criterion baselines
    // still compare.
    let mut group = c.benchmark_group("imap_10k");
    group.sample_size(20);
    group.bench_function("select/store_scan", |b| {
        b.iter(|| {
            black_box(
                Folder::open(&store, "INBOX", true)
                    .expect("open")
                    .entries()
                    .len(),
            )
        });
    });
    group.finish();
}

criterion_group!(folder_scan, benches);
criterion_main!(folder_scan);
