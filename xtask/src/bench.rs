//! `cargo xtask bench [--quick | --smoke] [ARGS…]`: builds dirmail and the load generator in
//! release mode, then runs the generator against that binary and its peers (Postfix, Dovecot,
//! a Samba AD DC), writing `report.md`, `report.json` and `chart.svg` to `<target>/bench/`.
//!
//! It needs root for the peers (it installs the Debian packages it lacks) and takes the
//! machine for a while, so it is not part of `ci`.

use std::ffi::OsString;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{Status, Workspace};

impl Workspace {
    pub(crate) fn bench(&self, args: &[OsString]) -> Result<Status> {
        let built = self.cargo(&[
            "build",
            "--release",
            "-p",
            "dirmail",
            "-p",
            "dirmail-benches",
            "--bin",
            "dirmail",
            "--bin",
            "loadgen",
        ])?;
        if !built.ok() {
            return Ok(built);
        }
        let release = self.target.join("release");
        let (dirmail, loadgen) = (release.join("dirmail"), release.join("loadgen"));
        for binary in [&dirmail, &loadgen] {
            if !binary.is_file() {
                bail!("cargo built it, but there is no {}", binary.display());
            }
        }
        // Run directly rather than through `cargo run`, so the progress bars own the terminal.
        // The server's path goes in the environment: see `--dirmail` in benches/src/main.rs.
        let status = Command::new(&loadgen)
            .env("BENCH_DIRMAIL", &dirmail)
            .arg("--out")
            .arg(self.target.join("bench"))
            .args(args)
            .current_dir(&self.root)
            .status()
            .with_context(|| format!("cannot run {}", loadgen.display()))?;
        Ok(Status(status.code().unwrap_or(1)))
    }
}
