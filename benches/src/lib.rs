//! Shared helpers for the benches (the load generator arrives with the benchmark issue).
