//! Fuzz target: the SASL steppers (PLAIN, LOGIN, CRAM-MD5); the harness and its invariants are in `src/sasl.rs`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dirmail_fuzz::sasl::run(data));
