//! The conformance runner: replays the scenarios of `fixtures/scenarios/` against the real
//! `dirmail` binary, as an administrator would, and reports which SPEC.md rules hold.
//!
//! It talks to the server only through its command line (and, later, over the wire); it never
//! imports server internals, so it checks what users see rather than what the code believes.
//!
//! Map of the modules:
//! - [`scenario`]: the scenario file format, parsed and checked at load.
//! - [`run`]: one fresh directory per scenario, each step replayed, the first failure kept.
//! - [`text`] and [`json`]: how actual output is compared with what a step expects.
//! - [`report`]: the terminal table, `junit.xml` and `report.md`.
//! - [`cli`]: the `conformance` command.

pub mod cli;
pub mod json;
pub mod report;
pub mod run;
pub mod scenario;
pub mod text;
