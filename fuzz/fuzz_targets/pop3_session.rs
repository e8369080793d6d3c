//! Fuzz target: the POP3 session stream; the harness and its invariants are in `src/pop3.rs`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dirmail_fuzz::pop3::run(data));
