//! `cargo xtask fuzz [--seconds N] [TARGET…]`: the cargo-fuzz targets of `fuzz/`.
//!
//! For each target (all of them when none is named): replay every input of
//! `fuzz/regressions/<target>/` (inputs that once found a bug) and `fuzz/seeds/<target>/`,
//! then fuzz for N seconds (default 30), starting from the seeds and the corpus kept in
//! `<target-dir>/fuzz/corpus/<target>/`. Any crash fails the task; the input that caused it is
//! left in `<target-dir>/fuzz/artifacts/<target>/`, to be copied into `fuzz/regressions/`
//! once the bug is fixed.
//!
//! cargo-fuzz needs nightly: the task runs it as `rustup run nightly cargo fuzz`, installing
//! the nightly toolchain and cargo-fuzz first when they are missing.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{Status, Workspace};

pub const TARGETS: [&str; 6] = [
    "smtp_session",
    "smtp_client",
    "pop3_session",
    "imap_session",
    "sasl",
    "smtp_address",
];
const DEFAULT_SECONDS: u64 = 30;

/// libFuzzer settings for every run. Sessions of a few kilobytes reach every state of the
/// cores, and short inputs keep the runs fast; a single input that takes ten seconds is a
/// hang, reported like a crash.
const LIBFUZZER_ARGS: [&str; 3] = ["-max_len=4096", "-timeout=10", "-print_final_stats=1"];

/// How the targets are built. The cores are safe Rust (`unsafe_code` is denied), so no
/// sanitizer: panics, overflow checks and debug assertions are what find the bugs, and the
/// runs go two to three times faster. (More codegen units cost more CPU in all, and two
/// cores are already busy with several crates at once.)
const BUILD_ARGS: [&str; 2] = ["--sanitizer", "none"];

#[derive(Debug)]
struct Options {
    seconds: u64,
    targets: Vec<String>,
}

fn parse(args: &[OsString]) -> Result<Options> {
    let mut seconds = DEFAULT_SECONDS;
    let mut targets = Vec::new();
    let mut args = args.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                let value = args.next().context("--seconds needs a number")?;
                seconds = value
                    .parse()
                    .with_context(|| format!("--seconds {value:?} is not a number"))?;
            }
            name if TARGETS.contains(&name) => targets.push(name.to_owned()),
            other => bail!(
                "unknown fuzz argument {other:?}; targets are {}",
                TARGETS.join(", ")
            ),
        }
    }
    if targets.is_empty() {
        targets = TARGETS.map(String::from).into();
    }
    Ok(Options { seconds, targets })
}

/// What one target did, for the summary.
struct Row {
    target: String,
    replayed: usize,
    runs: Option<u64>,
    corpus: usize,
    result: &'static str,
}

impl Workspace {
    pub(crate) fn fuzz(&self, args: &[OsString]) -> Result<Status> {
        let options = parse(args)?;
        let started = Instant::now();
        self.fuzz_tools()?;
        let dir = self.target.join("fuzz");
        let built = self.cargo_fuzz(&dir, &["build".into()])?;
        if !built.ok() {
            return Ok(built);
        }
        println!("fuzz: built in {:.0} s", started.elapsed().as_secs_f64());
        let mut rows = Vec::new();
        let mut failed = None;
        for target in &options.targets {
            let (row, status) = self.fuzz_one(&dir, target, options.seconds)?;
            rows.push(row);
            if !status.ok() {
                failed = Some(status);
                break;
            }
        }
        println!(
            "\nfuzz: {:<14} {:>8} {:>10} {:>7}  result",
            "target", "replayed", "runs", "corpus"
        );
        for row in &rows {
            let runs = row.runs.map_or("-".to_owned(), |n| n.to_string());
            println!(
                "      {:<14} {:>8} {:>10} {:>7}  {}",
                row.target, row.replayed, runs, row.corpus, row.result
            );
        }
        println!(
            "fuzz: {} s per target, {:.0} s in all",
            options.seconds,
            started.elapsed().as_secs_f64()
        );
        Ok(failed.unwrap_or(Status(0)))
    }

    fn fuzz_one(&self, dir: &Path, target: &str, seconds: u64) -> Result<(Row, Status)> {
        let fuzz = self.root.join("fuzz");
        let mut inputs = files(&fuzz.join("regressions").join(target))?;
        inputs.extend(files(&fuzz.join("seeds").join(target))?);
        let mut row = Row {
            target: target.to_owned(),
            replayed: inputs.len(),
            runs: None,
            corpus: 0,
            result: "ok",
        };
        println!(
            "\n==> fuzz {target}: replaying {} regression and seed inputs",
            inputs.len()
        );
        if !inputs.is_empty() {
            let mut args: Vec<OsString> = vec!["run".into(), target.into()];
            args.extend(inputs.into_iter().map(OsString::from));
            let replay = self.cargo_fuzz(dir, &args)?;
            if !replay.ok() {
                row.result = "FAILED replaying fuzz/regressions or fuzz/seeds";
                return Ok((row, replay));
            }
        }
        println!("==> fuzz {target}: {seconds} s");
        let corpus = dir.join("corpus").join(target);
        let artifacts = dir.join("artifacts").join(target);
        for d in [&corpus, &artifacts] {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        let mut args: Vec<OsString> = vec![
            "run".into(),
            target.into(),
            corpus.clone().into(),
            fuzz.join("seeds").join(target).into(),
            "--".into(),
            format!("-max_total_time={seconds}").into(),
            format!("-artifact_prefix={}/", artifacts.display()).into(),
        ];
        args.extend(LIBFUZZER_ARGS.map(OsString::from));
        let (status, runs) = self.cargo_fuzz_counted(dir, &args)?;
        row.runs = runs;
        row.corpus = files(&corpus)?.len();
        if !status.ok() {
            row.result = "CRASHED (input in the artifacts directory above)";
            eprintln!(
                "\nfuzz: {target} found a bug. Reproduce with\n  rustup run nightly cargo fuzz run {} --target-dir {} {target} <artifact>\n\
                 and once fixed, keep the input in fuzz/regressions/{target}/.",
                BUILD_ARGS.join(" "),
                dir.join("build").display()
            );
        }
        Ok((row, status))
    }

    /// `rustup run nightly cargo fuzz SUB … <build args> -- …`, in the workspace root.
    fn cargo_fuzz_command(&self, dir: &Path, args: &[OsString]) -> Command {
        let mut command = Command::new("rustup");
        command.args(["run", "nightly", "cargo", "fuzz"]);
        let (sub, rest) = args
            .split_first()
            .map_or((None, &[][..]), |(s, r)| (Some(s), r));
        command.args(sub);
        command.args(BUILD_ARGS);
        command.arg("--target-dir").arg(dir.join("build"));
        command.args(rest);
        command.current_dir(&self.root);
        // The stable toolchain that runs xtask must not leak into the nightly build.
        for var in [
            "RUSTUP_TOOLCHAIN",
            "CARGO",
            "RUSTC",
            "RUSTDOC",
            "CARGO_TARGET_DIR",
        ] {
            command.env_remove(var);
        }
        command
    }

    fn cargo_fuzz(&self, dir: &Path, args: &[OsString]) -> Result<Status> {
        let status = self
            .cargo_fuzz_command(dir, args)
            .status()
            .context("cannot run `rustup run nightly cargo fuzz`")?;
        Ok(Status(status.code().unwrap_or(1)))
    }

    /// Like [`Self::cargo_fuzz`], but reads libFuzzer's report to count the runs. Progress
    /// lines are left out; everything else is passed on.
    fn cargo_fuzz_counted(&self, dir: &Path, args: &[OsString]) -> Result<(Status, Option<u64>)> {
        let mut child = self
            .cargo_fuzz_command(dir, args)
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run `rustup run nightly cargo fuzz`")?;
        let mut runs = None;
        if let Some(stderr) = child.stderr.take() {
            for line in BufReader::new(stderr).lines() {
                let line = line.context("reading cargo fuzz's output")?;
                if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
                    runs = n.trim().parse().ok();
                }
                // Progress (`#123 NEW …`) and the recommended dictionary (`"\x01…" # Uses`).
                if !line.starts_with('#') && !line.starts_with('"') {
                    eprintln!("{line}");
                }
            }
        }
        let status = child.wait().context("waiting for cargo fuzz")?;
        Ok((Status(status.code().unwrap_or(1)), runs))
    }

    /// Installs what cargo-fuzz needs when it is missing: a nightly toolchain, cargo-fuzz.
    fn fuzz_tools(&self) -> Result<()> {
        let works = |args: &[&str]| {
            Command::new("rustup")
                .args(args)
                .env_remove("RUSTUP_TOOLCHAIN")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !works(&["--version"]) {
            bail!("cargo xtask fuzz needs rustup (cargo-fuzz runs on a nightly toolchain)");
        }
        if !works(&["run", "nightly", "rustc", "--version"]) {
            println!("==> fuzz: installing the nightly toolchain");
            let status = Command::new("rustup")
                .args(["toolchain", "install", "nightly", "--profile", "minimal"])
                .status()
                .context("cannot run rustup")?;
            if !status.success() {
                bail!("rustup could not install the nightly toolchain");
            }
        }
        if !works(&["run", "nightly", "cargo", "fuzz", "--version"]) {
            println!("==> fuzz: installing cargo-fuzz");
            let installed = self.cargo(&["install", "cargo-fuzz", "--locked"])?;
            if !installed.ok() {
                bail!("cargo install cargo-fuzz failed");
            }
        }
        Ok(())
    }
}

/// The files of `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
