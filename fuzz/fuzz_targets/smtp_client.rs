//! Fuzz target: the outbound SMTP client against a fuzzed server; the harness and its invariants are in `src/smtp_client.rs`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dirmail_fuzz::smtp_client::run(data));
