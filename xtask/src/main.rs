//! xtask: project automation, run as `cargo xtask <task>` (the alias is in `.cargo/config.toml`).
//!
//! - `conformance [ARGS…]`: build `dirmail`, then replay `fixtures/scenarios/` against it.
//! - `ci`: the gate `.ci/run` ends in: fmt, clippy, tests, conformance, a bench smoke run,
//!   fuzz, in that order, stopping at the first failure.
//! - `tidy`: the conventions test, `xtask/tests/tidy.rs`.
//! - `fuzz [--seconds N] [TARGET…]`: replay `fuzz/regressions/`, then run the cargo-fuzz
//!   targets (`fuzz.rs`).
//! - `bench [--quick]`: the load generator against dirmail and its peers (`bench.rs`).
//!
//! Every task runs cargo from the workspace root, so it works from any directory.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};

mod bench;
mod fuzz;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  conformance [FILTER] [ARGS…]  build dirmail and run the conformance scenarios
                                (ARGS go to the runner: --jobs N, --timeout SECS, …)
  ci                            fmt, clippy, tests, conformance, bench --smoke, 45 s of
                                fuzz per target: what .ci/run checks
  tidy                          the conventions test (//! docs, no todo!)
  fuzz [--seconds N] [TARGET…]  replay fuzz/regressions, then fuzz each target N s (default 30)
  bench [--quick] [ARGS…]       load-test dirmail beside Postfix and Dovecot (root; installs
                                them); report in <target>/bench/ (ARGS: --smoke (seconds,
                                debug build, dirmail alone), --no-peers, --no-ad,
                                --only local|ad, --keep)
";

fn main() -> ExitCode {
    let args: Vec<OsString> = env::args_os().skip(1).collect();
    let task = args.first().and_then(|a| a.to_str()).unwrap_or("help");
    let result = match task {
        "conformance" => Workspace::locate().and_then(|ws| ws.conformance(&args[1..])),
        "ci" => Workspace::locate().and_then(|ws| ws.ci()),
        "fuzz" => Workspace::locate().and_then(|ws| ws.fuzz(&args[1..])),
        "bench" => Workspace::locate().and_then(|ws| ws.bench(&args[1..])),
        "tidy" => {
            Workspace::locate().and_then(|ws| ws.cargo(&["test", "-p", "xtask", "--test", "tidy"]))
        }
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => {
            eprintln!("xtask: unknown task {other:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(Status(0)) => ExitCode::SUCCESS,
        Ok(Status(code)) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Seconds of new inputs per fuzz target in the gate, after the replay of `fuzz/regressions/`
/// and the seeds. The fuzz crate used to compile all of dirmail's dependencies, about five
/// minutes cold on a two-core machine, and got 10 s per target. It now depends on
/// dirmail-proto alone: a cold build of the five targets took 82 s of a busy two-core machine
/// (load 3 to 6), and the whole step with 1 s per target 93 s. The time saved goes to
/// fuzzing: 5 × 45 s, so the step (about 5.5 minutes) still costs less than the old one.
const CI_FUZZ_SECONDS: &str = "45";

/// The exit code of a task, passed on as ours so callers see what the tool said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Status(i32);

impl Status {
    fn ok(self) -> bool {
        self.0 == 0
    }
}

/// Where the workspace and its build output are.
struct Workspace {
    root: PathBuf,
    /// `CARGO_TARGET_DIR` made absolute, else `<root>/target`.
    target: PathBuf,
    /// The cargo that started us, so a toolchain chosen by rustup stays chosen.
    cargo: OsString,
}

impl Workspace {
    fn locate() -> Result<Workspace> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("xtask is not inside a workspace")?
            .to_owned();
        let target = match env::var_os("CARGO_TARGET_DIR") {
            // Cargo reads a relative CARGO_TARGET_DIR from its working directory; ours may
            // differ from the root the tasks run in, so pin it down once.
            Some(dir) => env::current_dir()
                .context("cannot read the current directory")?
                .join(dir),
            None => root.join("target"),
        };
        let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        Ok(Workspace {
            root,
            target,
            cargo,
        })
    }

    /// Runs `cargo ARGS` in the workspace root.
    fn cargo<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Result<Status> {
        let mut command = Command::new(&self.cargo);
        command
            .args(args)
            .current_dir(&self.root)
            .env("CARGO_TARGET_DIR", &self.target);
        let status = command
            .status()
            .with_context(|| format!("cannot run {}", self.cargo.to_string_lossy()))?;
        // A signal has no code: report it as a plain failure.
        Ok(Status(status.code().unwrap_or(1)))
    }

    /// `cargo build -p dirmail`, then the runner on that binary.
    fn conformance(&self, runner_args: &[OsString]) -> Result<Status> {
        // The Samba AD fixture's binary too: scenarios with `directory = "samba"` use it.
        let built = self.cargo(&["build", "-p", "dirmail", "-p", "samba-dc"])?;
        if !built.ok() {
            return Ok(built);
        }
        let dirmail = self.target.join("debug").join("dirmail");
        let samba_dc = self.target.join("debug").join("samba-dc");
        if !dirmail.is_file() {
            bail!("cargo built dirmail, but there is no {}", dirmail.display());
        }
        let mut args: Vec<OsString> = ["run", "-q", "-p", "conformance", "--", "--dirmail"]
            .map(OsString::from)
            .into();
        args.push(dirmail.into());
        args.push("--samba-dc".into());
        args.push(samba_dc.into());
        args.push("--out".into());
        args.push(self.target.join("conformance").into());
        args.extend(runner_args.iter().cloned());
        self.cargo(&args)
    }

    /// The gate. One step after another, each announced, stopping at the first failure.
    fn ci(&self) -> Result<Status> {
        let start = Instant::now();
        type Task<'a> = Box<dyn Fn() -> Result<Status> + 'a>;
        let fuzz_title = format!("cargo xtask fuzz --seconds {CI_FUZZ_SECONDS}");
        let steps: [(&str, Task); 6] = [
            (
                "cargo fmt --all -- --check",
                Box::new(|| self.cargo(&["fmt", "--all", "--", "--check"])),
            ),
            (
                "cargo clippy --workspace --all-targets -- -D warnings",
                Box::new(|| {
                    self.cargo(&[
                        "clippy",
                        "--workspace",
                        "--all-targets",
                        "--",
                        "-D",
                        "warnings",
                    ])
                }),
            ),
            (
                "cargo test --workspace",
                Box::new(|| self.cargo(&["test", "--workspace"])),
            ),
            (
                "cargo xtask conformance",
                Box::new(|| self.conformance(&[])),
            ),
            (
                "cargo xtask bench --smoke (debug build, dirmail alone)",
                Box::new(|| self.bench_smoke()),
            ),
            (
                &fuzz_title,
                Box::new(|| self.fuzz(&["--seconds".into(), CI_FUZZ_SECONDS.into()])),
            ),
        ];
        for (i, (title, step)) in steps.iter().enumerate() {
            println!("\n==> [{}/{}] {title}", i + 1, steps.len());
            let status = step()?;
            if !status.ok() {
                eprintln!(
                    "\nci: FAILED at `{title}` (exit {}) after {:.1} s",
                    status.0,
                    start.elapsed().as_secs_f64()
                );
                return Ok(status);
            }
        }
        println!(
            "\nci: all {} steps passed in {:.1} s",
            steps.len(),
            start.elapsed().as_secs_f64()
        );
        Ok(Status(0))
    }
}
