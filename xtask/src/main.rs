//! xtask: project automation.
fn main() {}
