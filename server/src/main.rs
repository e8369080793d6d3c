//! The `dirmail` binary: parse the command line and hand over to [`dirmail::admin`].

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    std::process::exit(dirmail::admin::main(args));
}
