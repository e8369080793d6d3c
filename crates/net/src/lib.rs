//! Listeners and the one driver that joins any protocol core to a tokio socket.
//!
//! From the top: `server` (listeners, admission, graceful stop) hands each connection to its
//! protocol's module (`smtp`, `pop3`, `imap`), which builds the session and runs it on
//! `driver` with a handler that answers its requests. Below them: `login` (the one login
//! decision, logged and throttled), `backend` (blocking answers from the store), `hub`
//! (news between IMAP sessions), `shared` (what every connection shares), `conn` (a socket
//! that may turn TLS, with write timeouts), `admission`, `budget` (the input memory of all sessions), `throttle` and `tls`; `housekeeping` (sweeps on a clock). Beside the sessions:
//! `sessions` (who is connected, for `dirmail status`), `metrics` (the counters and the
//! Prometheus page) and `control` (the control socket `dirmail status` asks). Nothing below
//! reaches up, and no protocol text is written here: the cores own their replies.

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
pub mod pop3;
pub mod server;
pub mod sessions;
pub mod shared;
pub mod smtp;
pub mod throttle;
pub mod tls;

use std::sync::Arc;

use dirmail_config::Config;

/// `dirmail serve`: runs the server on `config` until Ctrl-C or SIGTERM. Prints each listener's
/// address, then `ready`, on standard output. Returns the process exit code.
pub fn serve_main(config: Config) -> i32 {
    init_logging(config.server.logging);
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
        match server::run(Arc::clone(&config), prepared, stop_signal()).await {
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

/// Completes on Ctrl-C (SIGINT) or SIGTERM.
async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// `logging`: 0 none, 1 errors, 2 sessions, 3 protocol traces. Logs go to standard error.
fn init_logging(level: u8) {
    let filter = match level {
        0 => "off",
        1 => "error",
        2 => "info",
        _ => "debug",
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(format!(
            "dirmail={filter}"
        )))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
