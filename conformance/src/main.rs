//! The `conformance` binary: see [`conformance::cli`].

fn main() {
    std::process::exit(conformance::cli::main(std::env::args().skip(1).collect()));
}
