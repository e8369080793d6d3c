//! Fuzz target: the SMTP session command stream; the harness and its invariants are in `src/smtp.rs`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dirmail_fuzz::smtp::run(data));
