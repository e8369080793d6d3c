//! The integration tests, one binary for all of them: they run the real `dirmail` binary, real
//! clients and a real Samba AD DC. One test binary means one link of the server's dependencies
//! instead of one per file, and one `cargo test` run in which every test shares the test
//! threads instead of each file waiting for the one before.
//!
//! Tests run on parallel threads of one process, so nothing here may change what the process
//! shares: no `std::env::set_var`, no `set_current_dir`, no umask. Each test works in a
//! temporary directory of its own, passed to the processes it starts (`current_dir`), and
//! starts its own `dirmail serve` on ports the system picks (only `readme_e2e` uses the
//! documented fixed ports, and no other test does). The Samba DCs are the only shared things:
//! `ad_directory` uses the process-wide `samba_dc::shared()` DC with names of its own per test,
//! and `ad_outage`, which pauses and stops its DC, has a DC of its own whose faults it
//! serializes (see there). `disk_full` mounts a tmpfs on its own scratch directory;
//! `crash_safety` kills only the server it started.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;
mod hostile_support;

mod ad_directory;
mod ad_outage;
mod crash_safety;
mod disk_full;
mod dkim;
mod durability_strace;
mod hostile_connections;
mod hostile_imap;
mod hostile_memory;
mod hostile_pop3;
mod hostile_properties;
mod hostile_smtp;
mod hostile_throttle;
mod imap_async;
mod imap_corners;
mod imap_imaplib;
mod input_budget;
mod login_cache;
mod logs;
mod mail_secret;
mod metrics;
mod outbound;
mod outbound_postfix;
mod queue_admin;
mod races;
mod readme_e2e;
mod service_user;
mod signals;
mod status;
mod store_files;
mod transcripts;
