//! What the login cache saves: the one login decision for a right password, on a real store in
//! a temporary directory, under `local` and `passwd-file`, without the cache (an argon2id hash
//! every time) and with it (the hash's keyed MAC compared). Also a wrong password repeated,
//! which the cache refuses without a hash for `negative_ttl`. Before criterion's timings it
//! prints the medians of 50 of each, interleaved, and their ratio.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod support;

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use dirmail_directory::cache::{CacheSettings, CredentialCache};
use dirmail_directory::login::{LoginError, RefusalReason, Service, decide};
use dirmail_proto::auth::{Credentials, Proof};
use dirmail_proto::names::Secret;
use dirmail_store::Store;

const SAMPLES: usize = 50;
const USER: &str = "bob@example.jp";
const PASSWORD: &str = "Bob-pw1-secret";

/// A store with `example.jp` and `bob@` under `method_name` (see `support`).
fn store(root: &Path, method_name: &str) -> Store {
    support::store_with_bob(root, method_name, PASSWORD)
}

fn credentials(password: &str) -> Credentials {
    Credentials {
        authzid: None,
        username: USER.to_owned(),
        proof: Proof::Password(Secret::new(password)),
    }
}

/// One accepted login of bob; panics if it was not accepted.
fn accept(store: &Store, cache: Option<&CredentialCache>) {
    let right = credentials(PASSWORD);
    decide(store, None, cache, Service::Pop3, black_box(&right)).expect("accepted");
}

/// One refused login of bob with a wrong password; panics if it was not refused.
fn refuse(store: &Store, cache: Option<&CredentialCache>) {
    let wrong = credentials("Wrong-guess-1");
    match decide(store, None, cache, Service::Pop3, black_box(&wrong)) {
        Err(LoginError::Refused(RefusalReason::BadPassword)) => {}
        other => panic!("{other:?}"),
    }
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn timed(f: impl FnOnce()) -> Duration {
    let started = Instant::now();
    f();
    started.elapsed()
}

fn benches(c: &mut Criterion) {
    for method in ["local", "passwd-file"] {
        let root = tempfile::tempdir().expect("temporary directory");
        let store = store(root.path(), method);
        // A cache per store, as a server has: the generations of two stores do not compare.
        let cache = CredentialCache::new(CacheSettings {
            ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(30),
            size: 10_000,
        })
        .expect("a key")
        .expect("on");
        let cache = Some(&cache);
        // Warm up, and fill the cache.
        accept(&store, None);
        accept(&store, cache);
        refuse(&store, cache);
        let (mut uncached, mut cached, mut failure) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..SAMPLES {
            uncached.push(timed(|| accept(&store, None)));
            cached.push(timed(|| accept(&store, cache)));
            failure.push(timed(|| refuse(&store, cache)));
        }
        let (uncached, cached, failure) = (median(uncached), median(cached), median(failure));
        println!(
            "{method}: right password, median of {SAMPLES}: uncached {uncached:.2?}, cached \
             {cached:.2?} ({:.0}x); a wrong password repeated, cached: {failure:.2?}",
            uncached.as_secs_f64() / cached.as_secs_f64()
        );
        let mut group = c.benchmark_group(format!("login_cache/{method}"));
        group.sample_size(SAMPLES);
        group.bench_function("uncached", |b| b.iter(|| accept(&store, None)));
        group.bench_function("cached", |b| b.iter(|| accept(&store, cache)));
        group.bench_function("wrong_password_cached", |b| {
            b.iter(|| refuse(&store, cache))
        });
        group.finish();
    }
}

criterion_group!(login_cache, benches);
criterion_main!(login_cache);
