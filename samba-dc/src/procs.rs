//! Finding and signalling the processes of one DC.
//!
//! `samba` renames itself (`samba: root process`), its `smbd` and `winbindd` children leave its
//! process group and session, and `winbindd`'s domain children overwrite their command line
//! (and with it the environment block). What they all keep is the working directory they were
//! started in: the fixture starts `samba` inside the DC's own directory and none of them
//! changes it. So "the processes of this DC" are the processes whose working directory is that
//! directory or below it. Nothing else has a reason to sit there.

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

/// Process ids whose working directory is `dir` or inside it, other than this process.
pub(crate) fn under(dir: &Path) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            // Zombies and processes of other users have no readable cwd: they are skipped.
            fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(dir))
        })
        .collect()
}

/// Sends `signal` to each process; ones that are already gone are ignored.
pub(crate) fn signal(pids: &[i32], signal: Signal) {
    for &pid in pids {
        if let Some(pid) = Pid::from_raw(pid) {
            let _ = kill_process(pid, signal);
        }
    }
}

/// Stops (`SIGSTOP`) or continues (`SIGCONT`) every process of the DC. Twice, so that a child
/// forked while the first round ran is caught too.
pub(crate) fn signal_all(dir: &Path, sig: Signal) {
    for _ in 0..2 {
        signal(&under(dir), sig);
    }
}

/// Ends every process of the DC: `SIGTERM` (with `SIGCONT`, in case they are paused), then
/// `SIGKILL` to whatever is left after `grace`. Returns once none is left, or after a bound.
pub(crate) fn end_all(dir: &Path, grace: Duration) {
    let start = Instant::now();
    let mut told: Vec<i32> = Vec::new();
    loop {
        let pids = under(dir);
        if pids.is_empty() {
            return;
        }
        if start.elapsed() > grace + Duration::from_secs(5) {
            return;
        }
        if start.elapsed() > grace {
            signal(&pids, Signal::KILL);
        } else {
            // A child forked during shutdown gets its own SIGTERM; the others are not told twice.
            let new: Vec<i32> = pids.into_iter().filter(|p| !told.contains(p)).collect();
            signal(&new, Signal::TERM);
            signal(&new, Signal::CONT);
            told.extend(new);
        }
        thread::sleep(Duration::from_millis(20));
    }
}
