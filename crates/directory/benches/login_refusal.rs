//! How long the one login decision takes to refuse an unknown user and a known user with a
//! wrong password, on a real store in a temporary directory, under `local` and `passwd-file`.
//! The two must take the same time, or a refusal's timing tells which users exist (issue 21).
//! Before criterion's timings it prints the median of 50 refusals of each, side by side with
//! their ratio (the two interleaved, so the machine's other work falls on both).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod support;

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use dirmail_directory::login::{LoginError, RefusalReason, Service, decide};
use dirmail_proto::auth::{Credentials, Proof};
use dirmail_proto::names::Secret;
use dirmail_store::Store;

const SAMPLES: usize = 50;
const KNOWN: &str = "bob@example.jp";
const UNKNOWN: &str = "nosuch@example.jp";

/// A store with `example.jp` and `bob@` under `method_name` (see `support`).
fn store(root: &Path, method_name: &str) -> Store {
    support::store_with_bob(root, method_name, "Bob-pw1-secret")
}

/// One refused login of `user` with a wrong password; panics if it was not refused as `want`.
fn refuse(store: &Store, user: &str, want: RefusalReason) {
    let credentials = Credentials {
        authzid: None,
        username: user.to_owned(),
        proof: Proof::Password(Secret::new("Wrong-guess-1")),
    };
    match decide(store, None, None, Service::Pop3, black_box(&credentials)) {
        Err(LoginError::Refused(reason)) => assert_eq!(reason, want),
        other => panic!("{user}: {other:?}"),
    }
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn benches(c: &mut Criterion) {
    // Not `ad`: there the domain controller's bind is the check.
    for method in ["local", "passwd-file"] {
        let root = tempfile::tempdir().expect("temporary directory");
        let store = store(root.path(), method);
        // Warm up: the dummy record is made at the first unknown user.
        refuse(&store, UNKNOWN, RefusalReason::UnknownUser);
        refuse(&store, KNOWN, RefusalReason::BadPassword);
        let (mut unknown, mut known) = (Vec::new(), Vec::new());
        for _ in 0..SAMPLES {
            let started = Instant::now();
            refuse(&store, UNKNOWN, RefusalReason::UnknownUser);
            unknown.push(started.elapsed());
            let started = Instant::now();
            refuse(&store, KNOWN, RefusalReason::BadPassword);
            known.push(started.elapsed());
        }
        let (unknown, known) = (median(unknown), median(known));
        println!(
            "{method}: refusal, median of {SAMPLES}: unknown user {unknown:.2?}, known user \
             (wrong password) {known:.2?}, ratio unknown/known {:.3}",
            unknown.as_secs_f64() / known.as_secs_f64()
        );
        let mut group = c.benchmark_group(format!("login_refusal/{method}"));
        group.sample_size(SAMPLES);
        group.bench_function("unknown_user", |b| {
            b.iter(|| refuse(&store, UNKNOWN, RefusalReason::UnknownUser))
        });
        group.bench_function("known_user_wrong_password", |b| {
            b.iter(|| refuse(&store, KNOWN, RefusalReason::BadPassword))
        });
        group.finish();
    }
}

criterion_group!(login_refusal, benches);
criterion_main!(login_refusal);
