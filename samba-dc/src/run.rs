//! Running Samba's programs and the few system tools the fixture needs, with their output kept
//! for the error message.

use std::env;
use std::path::PathBuf;
use std::process::Command;

use crate::error::{Error, Result};

/// Where `program` is: on `PATH`, or in `/usr/sbin` and `/usr/bin` (a `PATH` without the
/// `sbin` directories is common for non-login shells, and `samba` lives in `/usr/sbin`).
pub(crate) fn find(program: &'static str) -> Result<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or(Error::NotInstalled { program })
}

/// Runs `command` to completion; its standard output on success, otherwise an error with the
/// command line, the exit status and everything it printed.
pub(crate) fn output(command: &mut Command) -> Result<String> {
    let line = describe(command);
    let out = command
        .output()
        .map_err(Error::io(format!("run `{line}`")))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(Error::Command {
        command: line,
        status: out.status.to_string(),
        output: format!("{stdout}{stderr}").trim_end().to_owned(),
    })
}

/// The command line, for messages. Passwords given as `--adminpass=` or `-U user%pass` are
/// masked.
fn describe(command: &Command) -> String {
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    for arg in command.get_args() {
        let arg = arg.to_string_lossy();
        let masked = if let Some((key, _)) = arg.split_once("pass=") {
            format!("{key}pass=…")
        } else if let Some((user, _)) = arg.split_once('%') {
            format!("{user}%…")
        } else {
            arg.into_owned()
        };
        words.push(masked);
    }
    words.join(" ")
}
