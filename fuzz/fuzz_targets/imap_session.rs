//! Fuzz target: the IMAP session command stream; the harness and its invariants are in `src/imap_session.rs`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dirmail_fuzz::imap_session::run(data));
