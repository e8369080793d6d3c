//! The conformance runner: replays the scenarios of `fixtures/scenarios/` against the real
//! `dirmail` binary, as an administrator would, and reports which docs/spec.md rules hold.
//!
//! It talks to the server only as its users do, through its command line and over the wire
//! (and through real mail clients); it never imports server internals, so it checks what users
//! see rather than what the code believes.
//!
//! Map of the modules:
//! - [`scenario`]: the scenario file format, parsed and checked at load.
//! - [`run`]: one fresh directory per scenario, each step replayed, the first failure kept.
//! - [`serve`]: the server under test, started and stopped by a scenario.
//! - [`wire`]: connections to it: TLS, raw bytes, replies framed per protocol.
//! - [`process`]: child processes with deadlines, their output captured.
//! - [`background`]: programs kept running beside the server (receiving mail servers), and
//!   the scenario's DNS server through the `dns-fixture` crate (in [`run`]).
//! - [`samba`]: the run's Samba AD domain controller, for scenarios that need one.
//! - [`text`] and [`json`]: how actual output is compared with what a step expects.
//! - [`report`]: the terminal table, `junit.xml` and `report.md`.
//! - [`cli`]: the `conformance` command.

pub mod background;
pub mod cli;
pub mod json;
pub mod process;
pub mod report;
pub mod run;
pub mod samba;
pub mod scenario;
pub mod serve;
pub mod text;
pub mod wire;
