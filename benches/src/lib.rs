//! The benchmarks of dirmail: criterion benches of the session cores in memory
//! (`benches/session_cores.rs`, `cargo bench`), and the load generator behind
//! `cargo xtask bench`, which drives the real server and its peers over loopback.
//!
//! The load generator talks to every server only as a mail client does, and to dirmail also
//! through the `dirmail` command; it links none of the server's code.
//!
//! - `plan`: the run: stages, rows, sizes (`--quick`, `--smoke`, full).
//! - `load`: N concurrent clients sharing a fixed number of timed operations, a progress bar.
//! - `measure`: servers taking turns in rounds, each metered for CPU; rounds tallied to a cell.
//! - `wire`, `smtp`, `pop3`, `imap`: just enough client for each protocol (TLS by rustls).
//! - `dirmail`: a store administered with `dirmail …` and served by `dirmail serve`.
//! - `peers`: Postfix and Dovecot from Debian's packages, installed when missing, configured
//!   from `fixtures/peers/` under a temporary directory, started and stopped by the bench.
//! - `probe`: the disk's fsyncs per second, and memory with many idle connections.
//! - `procfs`: CPU time of a process tree, resident memory, the load average.
//! - `report`, `chart`: `report.md`, `report.json` and `chart.svg` under `target/bench/`.
//! - `process`, `cleanup`: stopping what we started, also on Ctrl-C.

pub mod chart;
pub mod cleanup;
pub mod dirmail;
pub mod imap;
pub mod load;
pub mod measure;
pub mod peers;
pub mod plan;
pub mod pop3;
pub mod probe;
pub mod process;
pub mod procfs;
pub mod report;
pub mod smtp;
pub mod wire;
