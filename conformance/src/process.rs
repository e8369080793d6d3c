//! Child processes: run one with a deadline and collect its output, or keep one running (the
//! server) while its output is captured; kill what it leaves behind.

use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// What a finished (or killed) run produced.
#[derive(Debug)]
pub struct Output {
    /// `None` when it was killed for taking too long.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    /// It left processes behind that kept its output open; they were killed.
    pub stray: bool,
}

/// Runs `command` with `stdin` (or none), collecting its output; kills it after `timeout`.
///
/// The command runs in a process group of its own, so that whatever it starts can be killed
/// with it: a background process holding the output pipes would otherwise hang the runner.
pub fn execute(
    mut command: Command,
    stdin: Option<String>,
    timeout: Duration,
) -> io::Result<Output> {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let deadline = Instant::now() + timeout;
    let mut child = command.spawn()?;
    let group = child.id();
    // Writer and readers on their own threads, so a child that fills one pipe while we
    // wait on another cannot deadlock the run. The writer is never joined: a child that
    // exits without reading its input is judged on its output, and the write then fails.
    if let Some((mut pipe, data)) = child.stdin.take().zip(stdin) {
        thread::spawn(move || pipe.write_all(data.as_bytes()));
    }
    let (done, finished) = mpsc::channel();
    let stdout = Capture::start(child.stdout.take(), done.clone());
    let stderr = Capture::start(child.stderr.take(), done);
    let status = wait_until(&mut child, group, deadline)?;

    // The pipes close when every process holding them has gone. Give stragglers a moment,
    // then kill the group and take what was read.
    let mut open = 2;
    let mut wait_for_pipes = |until: Instant| {
        while open > 0 {
            let left = until.saturating_duration_since(Instant::now());
            match finished.recv_timeout(left) {
                Ok(()) => open -= 1,
                Err(_) => break,
            }
        }
        open
    };
    let grace = Duration::from_secs(1);
    let stray = wait_for_pipes(Instant::now() + grace) > 0;
    if stray {
        kill_group(group);
        wait_for_pipes(Instant::now() + grace);
    }
    Ok(Output {
        status,
        stdout: stdout.text(),
        stderr: stderr.text(),
        stray,
    })
}

/// One output pipe, read to its end on a thread of its own; what was read so far stays
/// available even if the end never comes.
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    pub fn start(pipe: Option<impl Read + Send + 'static>, done: mpsc::Sender<()>) -> Capture {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&bytes);
        thread::spawn(move || {
            if let Some(mut pipe) = pipe {
                let mut chunk = [0; 8192];
                while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                    lock(&sink).extend_from_slice(&chunk[..n]);
                }
            }
            let _ = done.send(());
        });
        Capture(bytes)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&lock(&self.0)).into_owned()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Waits for `child`, polling so the deadline can be kept; when it passes, kills the child's
/// whole process group.
pub fn wait_until(
    child: &mut Child,
    group: u32,
    deadline: Instant,
) -> io::Result<Option<ExitStatus>> {
    // Most administration commands finish in milliseconds: poll often at first.
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            kill_group(group);
            // In case `sh` could not do it.
            let _ = child.kill();
            child.wait()?;
            return Ok(None);
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Sends SIGKILL to every process of `group`.
pub fn kill_group(group: u32) {
    signal(&format!("-{group}"), "KILL");
}

/// Sends `SIG` (`TERM`, `KILL`) to `target`: a process id, or `-GROUP` for a process group.
/// Through `sh`'s `kill`, since std has no safe way to signal a process group and this crate
/// has no `unsafe`.
pub fn signal(target: &str, sig: &str) {
    let _ = Command::new("sh")
        .args(["-c", "kill -\"$1\" \"$2\" 2>/dev/null", "sh", sig, target])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    const TIMEOUT: Duration = Duration::from_secs(60);

    #[test]
    fn execute_feeds_stdin_and_enforces_the_timeout() {
        let mut cat = Command::new("sh");
        cat.args(["-c", "cat; echo err >&2; exit 4"]);
        let out = execute(cat, Some("hello\n".into()), TIMEOUT).unwrap();
        assert_eq!(out.status.and_then(|s| s.code()), Some(4));
        assert_eq!(out.stdout, "hello\n");
        assert_eq!(out.stderr, "err\n");

        let mut sleeper = Command::new("sleep");
        sleeper.arg("30");
        let start = Instant::now();
        let out = execute(sleeper, None, Duration::from_millis(200)).unwrap();
        assert!(out.status.is_none());
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn processes_left_behind_are_killed() {
        // A shell that hangs in a child: the timeout must take the child too.
        let mut hang = Command::new("sh");
        hang.args(["-c", "echo started; sleep 30; echo never"]);
        let start = Instant::now();
        let out = execute(hang, None, Duration::from_millis(300)).unwrap();
        assert!(out.status.is_none());
        assert_eq!(out.stdout, "started\n");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );

        // A command that exits but leaves a process holding its output.
        let mut leak = Command::new("sh");
        leak.args(["-c", "sleep 30 & echo done"]);
        let start = Instant::now();
        let out = execute(leak, None, Duration::from_millis(300)).unwrap();
        assert_eq!(out.status.and_then(|s| s.code()), Some(0));
        assert_eq!(out.stdout, "done\n");
        assert!(out.stray);
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn signals_reach_a_process_and_a_group() {
        let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
        signal(&sleeper.id().to_string(), "TERM");
        let status = sleeper.wait().unwrap();
        assert_eq!(status.signal(), Some(15), "{status:?}");

        let mut group = Command::new("sh");
        group.args(["-c", "sleep 30 & wait"]).process_group(0);
        let mut leader = group.spawn().unwrap();
        kill_group(leader.id());
        let status = leader.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "{status:?}");
    }
}
