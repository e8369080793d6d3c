//! Programs a scenario keeps running beside the server (`start` steps): receiving mail
//! servers for outbound delivery, mostly. Each runs in a process group of its own, its output
//! kept for failure reports, and is killed with its group when killed or dropped.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::process::{Capture, kill_group};

/// How long a started program may take to print its `ready` text.
pub const READY_WITHIN: Duration = Duration::from_secs(30);

/// A program running in the background.
pub struct Background {
    child: Child,
    stdout: Capture,
    stderr: Capture,
    /// Set once it has ended (or been killed).
    ended: bool,
}

impl Background {
    /// Starts `command` (stdin closed) and waits, if `ready` is given, until it prints that
    /// text on either output. A program that exits first, or stays silent too long, is an
    /// error with what it printed.
    pub fn start(mut command: Command, ready: Option<&str>) -> Result<Background, String> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let program = command.get_program().to_string_lossy().into_owned();
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        // Nobody waits for the pipes' end: the output is read while it runs, and whatever was
        // read is what a report shows.
        let (done, _ignored) = mpsc::channel();
        let stdout = Capture::start(child.stdout.take(), done.clone());
        let stderr = Capture::start(child.stderr.take(), done);
        let mut program_run = Background {
            child,
            stdout,
            stderr,
            ended: false,
        };
        let Some(ready) = ready else {
            return Ok(program_run);
        };
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if program_run.output().contains(ready) {
                return Ok(program_run);
            }
            if let Ok(Some(status)) = program_run.child.try_wait() {
                // A last look: it may have printed the text just before it ended.
                thread::sleep(Duration::from_millis(50));
                program_run.ended = true;
                return Err(format!(
                    "{program} exited ({status}) before printing {ready:?}; it printed:\n{}",
                    program_run.output()
                ));
            }
            if Instant::now() >= deadline {
                let output = program_run.output();
                program_run.kill();
                return Err(format!(
                    "{program} did not print {ready:?} within {} s; it printed:\n{output}",
                    READY_WITHIN.as_secs()
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// What it printed so far: standard output, then standard error.
    pub fn output(&self) -> String {
        let (out, err) = (self.stdout.text(), self.stderr.text());
        match (out.is_empty(), err.is_empty()) {
            (_, true) => out,
            (true, false) => err,
            (false, false) => format!("{out}--- stderr:\n{err}"),
        }
    }

    /// SIGKILL to its process group (whatever it started goes too), then reaps it.
    pub fn kill(&mut self) {
        if self.ended {
            return;
        }
        kill_group(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.ended = true;
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill();
    }
}
