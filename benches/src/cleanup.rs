//! What to stop if the bench is interrupted: every server it started is registered here while
//! it runs, so Ctrl-C (or SIGTERM) stops them instead of leaving a Postfix daemon behind.
//! Normal exits stop them through their `Drop`s.

use std::path::PathBuf;
use std::sync::Mutex;

use rustix::process::Signal;

#[derive(Debug, Default)]
struct Running {
    /// Children we spawned (dirmail serve, Dovecot in the foreground).
    pids: Vec<u32>,
    /// Postfix instances (their configuration directories), stopped with `postfix stop`.
    postfix: Vec<PathBuf>,
}

static RUNNING: Mutex<Running> = Mutex::new(Running {
    pids: Vec::new(),
    postfix: Vec::new(),
});

pub fn add_pid(pid: u32) {
    if let Ok(mut r) = RUNNING.lock() {
        r.pids.push(pid);
    }
}

pub fn remove_pid(pid: u32) {
    if let Ok(mut r) = RUNNING.lock() {
        r.pids.retain(|&p| p != pid);
    }
}

pub fn add_postfix(config_dir: PathBuf) {
    if let Ok(mut r) = RUNNING.lock() {
        r.postfix.push(config_dir);
    }
}

pub fn remove_postfix(config_dir: &std::path::Path) {
    if let Ok(mut r) = RUNNING.lock() {
        r.postfix.retain(|p| p != config_dir);
    }
}

/// Starts a thread that waits for SIGINT or SIGTERM, stops what is registered, and exits 130.
pub fn on_interrupt() {
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!("\nbench: interrupted; stopping the servers it started");
            let running = RUNNING.lock().map(|r| (r.pids.clone(), r.postfix.clone()));
            if let Ok((pids, postfix)) = running {
                for pid in pids {
                    crate::process::signal(pid, Signal::TERM);
                }
                for dir in postfix {
                    let _ = std::process::Command::new("script")
                        .args([
                            "-qec",
                            &format!("postfix -c {} stop", dir.display()),
                            "/dev/null",
                        ])
                        .output();
                }
            }
            std::process::exit(130);
        });
    });
}
