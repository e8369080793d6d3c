//! How long the one login decision takes to refuse an unknown user and a known user with a
//! wrong password, on a real store in a temporary directory, under `local` and `passwd-file`.
//! The two must take the same time, or a refusal's timing tells which users exist (issue 21).
//! Before criterion's timings it prints the median of 50 refusals of each, side by side with
//! their ratio (the two interleaved, so the machine's other work falls on both).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use dirmail_config::StoreConfig;
use dirmail_directory::login::{LoginError, RefusalReason, Service, decide};
use dirmail_directory::passwd_file::PasswdFile;
use dirmail_directory::{AuthMethod, local::LocalAccounts};
use dirmail_proto::auth::{Credentials, Proof};
use dirmail_proto::names::{Address, DomainName, MailboxName, Secret};
use dirmail_store::{Store, find_domain, insert_domain, insert_mailbox, layout, set_setting};

const SAMPLES: usize = 50;
const KNOWN: &str = "bob@example.jp";
const UNKNOWN: &str = "nosuch@example.jp";

/// A store with `example.jp` and `bob@` (password `Bob-pw1-secret`) under `method_name`.
fn store(root: &Path, method_name: &str) -> Store {
    let config = StoreConfig {
        data_dir: root.join("data"),
        mailroot: root.join("data/mail"),
    };
    let store = Store::open(&config).expect("store");
    let conn = store.conn();
    set_setting(conn, "authentication", method_name).expect("authentication");
    let domain = DomainName::parse("example.jp").expect("domain");
    insert_domain(conn, &domain).expect("domain");
    let id = find_domain(conn, &domain).expect("query").expect("made").id;
    let name = MailboxName::parse("bob", 64).expect("name");
    insert_mailbox(conn, id, &name).expect("mailbox");
    let address = Address::parse(KNOWN, 64).expect("address");
    let password = Secret::new("Bob-pw1-secret");
    match AuthMethod::parse(method_name).expect("a method") {
        AuthMethod::Local => LocalAccounts::new(conn)
            .create("bob", &password, &[])
            .expect("account"),
        _ => {
            let dir = layout(conn)
                .expect("layout")
                .maildir(&config.mailroot, &address);
            std::fs::create_dir_all(&dir).expect("maildir");
            PasswdFile::new(dir)
                .write(&address, &password)
                .expect("record");
        }
    }
    store
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
