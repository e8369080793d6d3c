//! dirmail: the top floor, the `dirmail` binary's library: the administration tool
//! ([`admin`], one file per winpop verb) and the hand-over to `dirmail serve`
//! ([`dirmail_net::serve_main`]). The floors below are crates of their own:
//! `dirmail-proto` (names, SASL, the sans-IO cores), `dirmail-config`, `dirmail-store`,
//! `dirmail-directory` and `dirmail-net`; ARCHITECTURE.md draws the ladder.

pub mod admin;
