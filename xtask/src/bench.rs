//! `cargo xtask bench [--quick | --smoke] [ARGS…]`: builds dirmail and the load generator in
//! release mode, then runs the generator against that binary and its peers (Postfix, Dovecot,
//! a Samba AD DC), writing `report.md`, `report.json` and `chart.svg` to `<target>/bench/`.
//!
//! It needs root for the peers (it installs the Debian packages it lacks) and takes the
//! machine for a while, so `ci` runs only [`Workspace::bench_smoke`]: a few seconds of load on
//! the debug build, dirmail alone, which fails when any of its measurements fails.

use std::ffi::OsString;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{Status, Workspace};

impl Workspace {
    /// `--smoke` runs on the debug build: the one the tests already built, and a smoke run's
    /// numbers do not matter.
    pub(crate) fn bench(&self, args: &[OsString]) -> Result<Status> {
        let smoke = args.iter().any(|a| a == "--smoke");
        self.run_loadgen(if smoke { "debug" } else { "release" }, args)
    }

    /// The gate's smoke run: that the load generator and the server still work together.
    pub(crate) fn bench_smoke(&self) -> Result<Status> {
        let out = self.target.join("bench-smoke");
        self.bench(&["--smoke".into(), "--out".into(), out.into_os_string()])
    }

    fn run_loadgen(&self, profile: &str, args: &[OsString]) -> Result<Status> {
        let mut build = vec!["build"];
        if profile == "release" {
            build.push("--release");
        }
        build.extend(["-p", "dirmail", "-p", "dirmail-benches"]);
        build.extend(["--bin", "dirmail", "--bin", "loadgen"]);
        let built = self.cargo(&build)?;
        if !built.ok() {
            return Ok(built);
        }
        let dir = self.target.join(profile);
        let (dirmail, loadgen) = (dir.join("dirmail"), dir.join("loadgen"));
        for binary in [&dirmail, &loadgen] {
            if !binary.is_file() {
                bail!("cargo built it, but there is no {}", binary.display());
            }
        }
        // Run directly rather than through `cargo run`, so the progress bars own the terminal.
        // The server's path goes in the environment: see `--dirmail` in benches/src/main.rs.
        let mut command = Command::new(&loadgen);
        command.env("BENCH_DIRMAIL", &dirmail);
        if !args.iter().any(|a| a == "--out") {
            command.arg("--out").arg(self.target.join("bench"));
        }
        let status = command
            .args(args)
            .current_dir(&self.root)
            .status()
            .with_context(|| format!("cannot run {}", loadgen.display()))?;
        Ok(Status(status.code().unwrap_or(1)))
    }
}
