//! `loadgen`: the load generator behind `cargo xtask bench` (which builds dirmail in release
//! mode and passes its path). Writes `report.md`, `report.json` and `chart.svg` into `--out`
//! and prints the report; exits with 1 when any of dirmail's measurements failed.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use dirmail_benches::plan::{self, Mode, Options};

/// Load-test dirmail side by side with Postfix and Dovecot on this machine.
#[derive(Debug, Parser)]
#[command(name = "loadgen")]
struct Args {
    /// The dirmail binary to benchmark (a release build). `cargo xtask bench` passes it in the
    /// environment, so this process's command line does not say "dirmail" and a
    /// `pkill -f dirmail` elsewhere on a shared machine does not end the run.
    #[arg(long, env = "BENCH_DIRMAIL")]
    dirmail: PathBuf,
    /// Where the report goes.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// A short run: well under two minutes of load.
    #[arg(long, conflicts_with = "smoke")]
    quick: bool,
    /// A few seconds, dirmail only: that the generator works.
    #[arg(long)]
    smoke: bool,
    /// Leave out Postfix and Dovecot.
    #[arg(long)]
    no_peers: bool,
    /// Leave out the Active Directory logins (and the Samba DC).
    #[arg(long)]
    no_ad: bool,
    /// Keep the temporary directory (stores, logs of every server).
    #[arg(long)]
    keep: bool,
    /// Run one stage only: `local` (SMTP, POP3, IMAP, idle connections), `queue` (the
    /// outbound queue into smtp-sink, beside Postfix relaying) or `ad`.
    #[arg(long, value_parser = ["local", "queue", "ad"])]
    only: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mode = if args.smoke {
        Mode::Smoke
    } else if args.quick {
        Mode::Quick
    } else {
        Mode::Full
    };
    // The servers run in directories of their own, so a relative path would name nothing there.
    let dirmail = match std::path::absolute(&args.dirmail) {
        Ok(path) => path,
        Err(e) => {
            eprintln!("loadgen: {}: {e}", args.dirmail.display());
            return ExitCode::FAILURE;
        }
    };
    let options = Options {
        dirmail,
        out: args.out.clone(),
        mode,
        peers: !args.no_peers,
        ad: !args.no_ad && matches!(args.only.as_deref(), None | Some("ad")),
        keep: args.keep,
        local: matches!(args.only.as_deref(), None | Some("local")),
        queue: matches!(args.only.as_deref(), None | Some("queue")),
    };
    match plan::run(options).and_then(|report| {
        report.write(&args.out)?;
        Ok(report)
    }) {
        Ok(report) => {
            println!("{}", report.markdown());
            println!(
                "Written: {0}/report.md, {0}/report.json, {0}/chart.svg",
                args.out.display()
            );
            let failures = report.dirmail_failures();
            if failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                for failure in &failures {
                    eprintln!("loadgen: dirmail failed: {failure}");
                }
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}
