//! Fuzz target: SMTP forward-paths and the relay decision (R16); the harness and its invariants are in `src/address.rs`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dirmail_fuzz::address::run(data));
