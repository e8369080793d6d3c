//! The `conformance` command: choose scenarios, run them, print and write the reports.
//!
//! Exit status: 0 when nothing failed, 1 when a scenario failed or passed against its `xfail`,
//! 2 when the run could not start (bad arguments, a malformed scenario file, no binary, or a
//! filter that selects nothing — a typo must not look like a green run).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::report::{self, Counts};
use crate::run::Runner;
use crate::scenario;

const USAGE: &str = "\
usage: conformance --dirmail PATH [--samba-dc PATH] [--fixtures DIR] [--out DIR] [--jobs N] [--timeout SECS] [FILTER]

Replays the scenarios under DIR (default fixtures/scenarios of the workspace) against the
dirmail binary at PATH. FILTER keeps the scenarios whose id contains it, or that cover the
rule it names (R3). Reports go to DIR/junit.xml and DIR/report.md (default
target/conformance of the workspace). Scenarios with `directory = \"samba\"` need --samba-dc, the
fixture's binary, which starts one real Samba AD domain controller for the whole run.";

/// The command line, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub dirmail: PathBuf,
    pub samba_dc: Option<PathBuf>,
    pub fixtures: PathBuf,
    pub out: PathBuf,
    pub jobs: usize,
    pub timeout: Duration,
    pub filter: Option<String>,
}

/// The workspace this crate belongs to, for the default paths.
fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_owned()
}

impl Options {
    /// Parses the arguments after the program's name. `Err(None)` asks for the usage text.
    pub fn parse(args: &[String]) -> Result<Options, Option<String>> {
        let root = workspace_root();
        let mut dirmail = None;
        let mut samba_dc = None;
        let mut fixtures = root.join("fixtures/scenarios");
        let mut out = root.join("target/conformance");
        let mut jobs = 4;
        let mut timeout = Duration::from_secs(60);
        let mut filter = None;
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_owned())),
                _ => (arg.as_str(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| args.next().cloned())
                    .ok_or_else(|| Some(format!("{flag} needs a value")))
            };
            match flag {
                "-h" | "--help" => return Err(None),
                "--dirmail" => dirmail = Some(PathBuf::from(value()?)),
                "--fixtures" => fixtures = PathBuf::from(value()?),
                "--out" => out = PathBuf::from(value()?),
                "--jobs" | "-j" => {
                    jobs = value()?
                        .parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| Some("--jobs needs a positive number".to_owned()))?;
                }
                "--samba-dc" => samba_dc = Some(PathBuf::from(value()?)),
                "--timeout" => {
                    let secs: f64 = value()?
                        .parse()
                        .ok()
                        .filter(|&s: &f64| s > 0.0 && s.is_finite())
                        .ok_or_else(|| {
                            Some("--timeout needs a positive number of seconds".to_owned())
                        })?;
                    timeout = Duration::from_secs_f64(secs);
                }
                _ if flag.starts_with('-') && flag.len() > 1 => {
                    return Err(Some(format!("unknown option {flag}")));
                }
                _ if filter.is_some() => return Err(Some(format!("more than one FILTER: {arg}"))),
                _ => filter = Some(arg.clone()),
            }
        }
        let dirmail = dirmail.ok_or_else(|| Some("--dirmail PATH is required".to_owned()))?;
        Ok(Options {
            dirmail,
            samba_dc,
            fixtures,
            out,
            jobs,
            timeout,
            filter,
        })
    }
}

/// Runs the command; returns the exit status.
pub fn main(args: Vec<String>) -> i32 {
    let options = match Options::parse(&args) {
        Ok(options) => options,
        Err(None) => {
            println!("{USAGE}");
            return 0;
        }
        Err(Some(message)) => {
            eprintln!("conformance: {message}\n{USAGE}");
            return 2;
        }
    };
    match run(&options) {
        Ok(status) => status,
        Err(message) => {
            eprintln!("conformance: {message}");
            2
        }
    }
}

fn run(options: &Options) -> Result<i32, String> {
    // Runs happen in each scenario's own directory: the binary's path must not depend on ours.
    let dirmail = fs::canonicalize(&options.dirmail)
        .ok()
        .filter(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "no dirmail binary at {} (build it with `cargo build -p dirmail`)",
                options.dirmail.display()
            )
        })?;
    let scenarios = scenario::load_dir(&options.fixtures).map_err(|errors| {
        let list: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        format!(
            "{} malformed scenario file(s):\n{}",
            errors.len(),
            list.join("\n")
        )
    })?;
    let selected: Vec<_> = scenarios
        .into_iter()
        .filter(|s| options.filter.as_deref().is_none_or(|f| s.matches(f)))
        .collect();
    if selected.is_empty() {
        return Err(match &options.filter {
            Some(filter) => format!("no scenario matches {filter:?}"),
            None => format!("no scenario under {}", options.fixtures.display()),
        });
    }

    // Client scripts are named from the fixtures directory, the parent of the scenarios.
    let fixtures = fs::canonicalize(&options.fixtures)
        .ok()
        .and_then(|scenarios| scenarios.parent().map(Path::to_owned))
        .ok_or_else(|| format!("no scenarios directory at {}", options.fixtures.display()))?;
    let runner = Runner {
        dirmail,
        fixtures,
        timeout: options.timeout,
        samba: crate::samba::SharedDc::new(options.samba_dc.clone()),
    };
    let outcomes = runner.run_all(&selected, options.jobs);

    print!("{}", report::table(&outcomes));
    for outcome in outcomes.iter().filter(|o| o.verdict.is_failure()) {
        println!("\n{} {}", outcome.verdict.as_str(), outcome.id);
        match &outcome.failure {
            Some(failure) => print!("{failure}"),
            None => println!("  {}", report::reason(outcome)),
        }
    }
    let written = fs::create_dir_all(&options.out)
        .and_then(|()| fs::write(options.out.join("junit.xml"), report::junit(&outcomes)))
        .and_then(|()| fs::write(options.out.join("report.md"), report::markdown(&outcomes)));
    let counts = Counts::of(&outcomes);
    println!();
    match written {
        Ok(()) => println!(
            "reports: {} and report.md",
            options.out.join("junit.xml").display()
        ),
        Err(e) => eprintln!(
            "conformance: cannot write the reports to {}: {e}",
            options.out.display()
        ),
    }
    println!("{}", counts.xfail_line());
    println!("{}", counts.summary_line());
    Ok(if counts.failed > 0 { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, Option<String>> {
        Options::parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn arguments() {
        let o = parse(&["--dirmail", "bin/dirmail", "R3"]).unwrap();
        assert_eq!(o.dirmail, PathBuf::from("bin/dirmail"));
        assert_eq!(o.filter.as_deref(), Some("R3"));
        assert!(o.fixtures.ends_with("fixtures/scenarios"));
        assert!(o.out.ends_with("target/conformance"));
        assert_eq!(o.jobs, 4);

        let o = parse(&[
            "--out=/tmp/o",
            "--jobs",
            "2",
            "--timeout",
            "0.5",
            "--dirmail=d",
        ])
        .unwrap();
        assert_eq!(o.out, PathBuf::from("/tmp/o"));
        assert_eq!(o.jobs, 2);
        assert_eq!(o.timeout, Duration::from_millis(500));
        assert_eq!(o.filter, None);

        assert_eq!(parse(&["--help"]).unwrap_err(), None);
        assert!(parse(&["R3"]).unwrap_err().unwrap().contains("--dirmail"));
        assert!(
            parse(&["--dirmail"])
                .unwrap_err()
                .unwrap()
                .contains("needs a value")
        );
        assert!(parse(&["--dirmail", "d", "--jobs", "0"]).is_err());
        assert!(parse(&["--dirmail", "d", "--bogus"]).is_err());
        assert!(parse(&["--dirmail", "d", "a", "b"]).is_err());
    }
}
