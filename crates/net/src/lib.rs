//! Listeners and the one driver that joins any protocol core to a tokio socket.
//!
//! From the top: `server` (listeners, admission, graceful stop) hands each connection to its
//! protocol's module (`smtp`, `pop3`, `imap`), which builds the session and runs it on
//! `driver` with a handler that answers its requests. Below them: `login` (the one login
//! decision, logged and throttled), `backend` (blocking answers from the store), `hub`
//! (news between IMAP sessions), `shared` (what every connection shares), `conn` (a socket
//! that may turn TLS, with write timeouts), `admission`, `budget` (the input memory of all sessions), `throttle` and `tls`; `housekeeping` (sweeps on a clock). Beside the
//! sessions: `sessions` (who is connected, for `dirmail status`), `metrics` (the counters and
//! the Prometheus page) and `control` (the control socket `dirmail status` asks). Beside the
//! server: `reload` (SIGHUP: the settings read again), `privileges` (the service user) and
//! `notify` (systemd's readiness messages). Nothing below reaches up, and no protocol text is
//! written here: the cores own their replies.

pub mod admission;
pub mod backend;
pub mod budget;
pub mod conn;
pub mod control;
pub mod driver;
pub mod housekeeping;
pub mod hub;
pub mod imap;
pub mod login;
pub mod metrics;
pub mod notify;
pub mod pop3;
pub mod privileges;
pub mod reload;
pub mod server;
pub mod sessions;
pub mod shared;
pub mod smtp;
pub mod throttle;
pub mod tls;

use std::sync::Arc;

use dirmail_config::{Config, LogFormat};
use tokio::signal::unix::{Signal, SignalKind, signal};

/// `dirmail serve`: runs the server on `config` until SIGINT (Ctrl-C) or SIGTERM; SIGHUP reads
/// the configuration and the TLS certificate again. Prints each listener's address, then
/// `ready`, on standard output (and tells systemd, under `Type=notify`). `log_level` is
/// `--log-level`'s level or filter. Returns the process exit code (2 for a log level that
/// cannot be read).
pub fn serve_main(config: Config, log_level: Option<&str>) -> i32 {
    let rust_log = std::env::var("RUST_LOG").ok();
    if let Err(e) = init_logging(&config, log_level, rust_log.as_deref()) {
        eprintln!("dirmail: {e}");
        return 2;
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if config.server.threadcount > 0 {
        runtime.worker_threads(config.server.threadcount as usize);
    }
    let runtime = match runtime.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dirmail: cannot start the runtime: {e}");
            return 1;
        }
    };
    let config = Arc::new(config);
    runtime.block_on(async move {
        // Before anything else, so that no signal that arrives while starting kills the server.
        let signals = match Signals::install() {
            Ok(signals) => signals,
            Err(e) => {
                eprintln!("dirmail: cannot handle signals: {e}");
                return 1;
            }
        };
        let prepared = match server::prepare(Arc::clone(&config)).await {
            Ok(prepared) => prepared,
            Err(e) => {
                eprintln!("dirmail: {e}");
                return 1;
            }
        };
        println!(
            "dirmail {} serving the store in {} as {}",
            env!("CARGO_PKG_VERSION"),
            config.store.data_dir.display(),
            config.server.hostname
        );
        for b in &prepared.listeners {
            if let Ok(addr) = b.listener.local_addr() {
                println!("  {:<11} {addr}", b.service.name());
            }
        }
        if let Some(addr) = prepared.metrics.as_ref().and_then(|m| m.local_addr().ok()) {
            println!("  {:<11} {addr}", "metrics");
        }
        println!("ready (Ctrl-C stops)");
        notify::notify(notify::State::Ready);
        // One pending reload is enough: SIGHUPs that come while one waits ask for the same.
        let (reload_tx, reloads) = tokio::sync::mpsc::channel(1);
        let (stop_tx, stop) = tokio::sync::oneshot::channel();
        tokio::spawn(signals.forward(reload_tx, stop_tx));
        let shutdown = async {
            let _ = stop.await;
        };
        match server::run(Arc::clone(&config), prepared, shutdown, reloads).await {
            Ok(()) => {
                println!("stopped");
                0
            }
            Err(e) => {
                eprintln!("dirmail: {e}");
                1
            }
        }
    })
}

/// The signals a running server answers. Each one handled here no longer has its default
/// action (for SIGHUP, SIGUSR1 and SIGUSR2: ending the process), which is the point: a stray
/// `kill -USR1` or a closed terminal must not take the mail server down.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
    user1: Signal,
    user2: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
            user1: signal(SignalKind::user_defined1())?,
            user2: signal(SignalKind::user_defined2())?,
        })
    }

    /// SIGHUP asks for a reload; SIGINT or SIGTERM for the stop, after which this ends; SIGUSR1
    /// and SIGUSR2 are noted and ignored. (SIGPIPE is ignored by the Rust runtime already.)
    async fn forward(
        mut self,
        reload: tokio::sync::mpsc::Sender<()>,
        stop: tokio::sync::oneshot::Sender<()>,
    ) {
        loop {
            tokio::select! {
                _ = self.interrupt.recv() => break,
                _ = self.terminate.recv() => break,
                _ = self.hangup.recv() => {
                    tracing::info!("SIGHUP: reading the configuration and the TLS certificate again");
                    // Full: a reload is already waiting, and it will read the same files.
                    let _ = reload.try_send(());
                }
                _ = self.user1.recv() => tracing::info!("SIGUSR1 ignored"),
                _ = self.user2.recv() => tracing::info!("SIGUSR2 ignored"),
            }
        }
        let _ = stop.send(());
    }
}

/// The log's filter: `--log-level` if given, else `RUST_LOG` if set, else `[server] logging`
/// (0 none, 1 errors, 2 sessions, 3 protocol traces). Logs go to standard error, as text or
/// JSON (`[server] log_format`).
fn init_logging(config: &Config, flag: Option<&str>, rust_log: Option<&str>) -> Result<(), String> {
    let filter = log_filter(config.server.logging, flag, rust_log)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A logger set already (a test harness) is kept.
    let _ = match config.server.log_format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_ansi(false)
            .try_init(),
    };
    Ok(())
}

/// The filter of [`init_logging`], checked: a bad one is an error naming where it came from.
fn log_filter(
    logging: u8,
    flag: Option<&str>,
    rust_log: Option<&str>,
) -> Result<tracing_subscriber::EnvFilter, String> {
    let (source, text) = match (flag, rust_log.filter(|v| !v.trim().is_empty())) {
        (Some(flag), _) => ("--log-level", flag.to_owned()),
        (None, Some(env)) => ("RUST_LOG", env.to_owned()),
        (None, None) => {
            let level = match logging {
                0 => "off",
                1 => "error",
                2 => "info",
                _ => "debug",
            };
            ("[server] logging", format!("dirmail={level}"))
        }
    };
    let bad = |why: &str| {
        format!(
            "{source} {text:?} cannot be read: {why}; give a level (error, warn, info, debug, \
             trace) or a filter such as dirmail_net=trace,info"
        )
    };
    if text.trim().is_empty() {
        return Err(bad("it is empty"));
    }
    // A bare word would name a target, not a level, and quietly log nothing of dirmail:
    // `debgu` is far more likely a typo than a crate's name.
    for directive in text.split(',').map(str::trim) {
        if !directive.contains('=')
            && !directive.contains('[')
            && directive
                .parse::<tracing::level_filters::LevelFilter>()
                .is_err()
        {
            return Err(bad(&format!(
                "{directive:?} is not a level (name a target with a level: {directive}=debug)"
            )));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(&text)
        .map_err(|e| bad(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_comes_before_rust_log_before_logging() {
        let shown = |f: Result<tracing_subscriber::EnvFilter, String>| {
            f.map(|f| f.to_string()).unwrap_or_else(|e| e)
        };
        assert_eq!(shown(log_filter(2, None, None)), "dirmail=info");
        assert_eq!(shown(log_filter(3, None, Some(" "))), "dirmail=debug");
        assert_eq!(shown(log_filter(0, None, Some("warn"))), "warn");
        let both = shown(log_filter(0, Some("dirmail_net=trace,info"), Some("warn")));
        assert!(
            both.contains("dirmail_net=trace") && !both.contains("warn"),
            "{both}"
        );
    }

    #[test]
    fn bad_filters_are_errors_naming_their_source() {
        for (flag, env, source) in [
            (Some("debgu"), None, "--log-level"),
            (Some("dirmail=loud"), None, "--log-level"),
            (Some(""), None, "--log-level"),
            (None, Some("dirmail_net=verbose"), "RUST_LOG"),
        ] {
            let e = log_filter(2, flag, env).map(|_| ()).unwrap_err();
            assert!(e.starts_with(source), "{e}");
            assert!(e.contains("give a level"), "{e}");
        }
    }
}
