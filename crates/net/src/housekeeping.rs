//! Work the running server does on a clock rather than for a client: sweeping the files a crash
//! left in the Maildirs' `tmp/` (older than [`STALE_TMP_AGE`]), once at start and then daily.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;

use super::shared::stopped;
use dirmail_store::maildir::{STALE_TMP_AGE, Sweep, sweep_stale_tmp};

/// How often the sweep runs after the first one at start.
const SWEEP_EVERY: Duration = Duration::from_secs(24 * 60 * 60);

/// Sweeps `mailroot` now, then every day until the server stops. The sweep walks directories,
/// so it runs on a blocking thread.
pub fn spawn_tmp_sweeper(mailroot: PathBuf, stopping: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut stopping = stopping;
        loop {
            let root = mailroot.clone();
            match tokio::task::spawn_blocking(move || sweep_stale_tmp(&root, STALE_TMP_AGE)).await {
                Ok(sweep) => log_sweep(&mailroot, sweep),
                Err(e) => tracing::error!("the tmp/ sweep panicked: {e}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
                _ = stopped(&mut stopping) => return,
            }
        }
    });
}

fn log_sweep(mailroot: &std::path::Path, sweep: Sweep) {
    if sweep.removed > 0 {
        tracing::info!(
            mailroot = %mailroot.display(),
            files = sweep.removed,
            bytes = sweep.bytes,
            "removed files a crash left in Maildir tmp/ (older than 36 hours)"
        );
    }
    if sweep.failed > 0 {
        tracing::warn!(
            mailroot = %mailroot.display(),
            files = sweep.failed,
            "could not examine or remove some files in Maildir tmp/; the next sweep tries again"
        );
    }
}
