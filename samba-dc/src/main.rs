//! `samba-dc start [--json]`: a DC for another process. Prints what a client needs (one JSON
//! line with `--json`), keeps the DC up until standard input closes or a `SIGTERM`, `SIGINT` or
//! `SIGHUP` comes, then cleans up. See the library's documentation.

use std::io::Write;
use std::process::ExitCode;

use samba_dc::{Builder, Dc, Domain};

const USAGE: &str = "\
usage: samba-dc start [--json] [--realm REALM] [--netbios NAME] [--host NAME]
                      [--admin-password PASSWORD] [--fresh] [--fsync] [--until-signal]

Starts a Samba AD DC on a loopback address of its own and keeps it up until standard input
closes (or, with --until-signal, until SIGTERM/SIGINT/SIGHUP; those also end it otherwise).
--json prints one line of JSON once the DC answers LDAPS; without it, `key: value` lines.
--fresh provisions anew instead of copying the cached template of the domain.
--fsync lets Samba sync its databases (off by default: the DC is thrown away).";

struct Args {
    json: bool,
    until_signal: bool,
    builder: Builder,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    if args.next().as_deref() != Some("start") {
        return Err(USAGE.into());
    }
    let mut domain = Domain::default();
    let (mut json, mut until_signal, mut fresh, mut fsync) = (false, false, false, false);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--json" => json = true,
            "--until-signal" => until_signal = true,
            "--fresh" => fresh = true,
            "--fsync" => fsync = true,
            "--realm" => domain.realm = value("--realm")?.to_ascii_uppercase(),
            "--netbios" => domain.netbios = value("--netbios")?.to_ascii_uppercase(),
            "--host" => domain.host = value("--host")?.to_ascii_uppercase(),
            "--admin-password" => domain.admin_password = value("--admin-password")?,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    let mut builder = Dc::builder().domain(domain);
    if fresh {
        builder = builder.fresh_provision();
    }
    if fsync {
        builder = builder.fsync();
    }
    Ok(Args {
        json,
        until_signal,
        builder,
    })
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let dc = match args.builder.start() {
        Ok(dc) => dc,
        Err(e) => {
            eprintln!("samba-dc: {e}");
            return ExitCode::FAILURE;
        }
    };
    let info = dc.info();
    let mut out = std::io::stdout().lock();
    let printed = if args.json {
        serde_json::to_string(&info)
            .map_err(std::io::Error::other)
            .and_then(|line| writeln!(out, "{line}"))
    } else {
        let value = serde_json::to_value(&info).unwrap_or_default();
        let mut result = Ok(());
        if let Some(map) = value.as_object() {
            for (key, v) in map {
                let text = v
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string());
                result = result.and_then(|()| writeln!(out, "{key}: {text}"));
            }
        }
        result
    }
    .and_then(|()| out.flush());
    drop(out);
    if let Err(e) = printed {
        eprintln!("samba-dc: writing to standard output: {e}");
        return ExitCode::FAILURE;
    }
    if let Err(e) = wait_for_the_end(args.until_signal) {
        eprintln!("samba-dc: {e}");
    }
    drop(dc);
    ExitCode::SUCCESS
}

/// Returns when a terminating signal comes or, unless `until_signal`, standard input reaches
/// its end.
fn wait_for_the_end(until_signal: bool) -> std::io::Result<()> {
    use std::io::Read;
    use tokio::signal::unix::{SignalKind, signal};

    // A thread of its own: a read blocked in tokio's stdin would keep the runtime from
    // shutting down after a signal.
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    if !until_signal {
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 256];
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            let _ = closed_tx.send(());
        });
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = hup.recv() => {}
            // With --until-signal the sender is dropped at once: that is no reason to stop.
            Ok(()) = closed_rx => {}
        }
        Ok(())
    })
}
