//! Replaying scenarios against the real `dirmail` binary.
//!
//! Each scenario gets a fresh temporary directory, which is the working directory of every
//! `dirmail` run, so with no `config` the binary keeps its store in `./dirmail-data` inside it.
//! `DIRMAIL_*` variables of the caller's environment are removed: a scenario sees only what it
//! states. A scenario stops at its first failing step.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::scenario::{Expect, FilesStep, PutStep, RunStep, Scenario, Step};
use crate::{json, text};

/// How scenarios are run.
#[derive(Debug, Clone)]
pub struct Runner {
    /// The `dirmail` binary, absolute: runs happen in other directories.
    pub dirmail: PathBuf,
    /// A run still going after this long is killed and its step fails.
    pub timeout: Duration,
}

/// What became of one scenario.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: String,
    pub rules: Vec<String>,
    pub verdict: Verdict,
    pub elapsed: Duration,
    /// Why it failed: set for `Fail` and `XFail`.
    pub failure: Option<Failure>,
    /// The scenario's `xfail` reason.
    pub xfail: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// Failed, as its `xfail` said it would.
    XFail,
    /// Passed although marked `xfail`: counted as a failure, so the mark gets removed.
    XPass,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::XFail => "XFAIL",
            Verdict::XPass => "XPASS",
        }
    }

    pub fn is_failure(self) -> bool {
        matches!(self, Verdict::Fail | Verdict::XPass)
    }
}

/// The first failing step of a scenario.
#[derive(Debug, Clone)]
pub struct Failure {
    /// 1-based; 0 when the scenario could not even be set up.
    pub step: usize,
    /// What the step did: the command line, or the kind of check.
    pub action: String,
    /// Each expectation that was not met, expected against actual.
    pub problems: Vec<String>,
    /// The full output of a failing run.
    pub stdout: Option<String>,
    pub stderr: Option<String>,
}

impl Failure {
    fn setup(problem: String) -> Failure {
        Failure {
            step: 0,
            action: "set up the scenario directory".into(),
            problems: vec![problem],
            stdout: None,
            stderr: None,
        }
    }

    /// One line, for the JUnit `message` attribute and the Markdown report.
    pub fn summary(&self) -> String {
        let first = self
            .problems
            .first()
            .map_or("", |p| p.lines().next().unwrap_or(""));
        format!("step {}: {}: {first}", self.step, self.action)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "step {}: {}", self.step, self.action)?;
        for problem in &self.problems {
            for (i, line) in problem.lines().enumerate() {
                let bullet = if i == 0 { "- " } else { "  " };
                writeln!(f, "  {bullet}{line}")?;
            }
        }
        for (name, output) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            if let Some(output) = output {
                if output.is_empty() {
                    writeln!(f, "  --- {name}: (empty)")?;
                } else {
                    writeln!(f, "  --- {name}:")?;
                    for line in output.lines() {
                        writeln!(f, "  | {line}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl Runner {
    /// Runs `scenarios` on `jobs` threads (they mostly wait on processes); outcomes sorted by id.
    pub fn run_all(&self, scenarios: &[Scenario], jobs: usize) -> Vec<Outcome> {
        let next = AtomicUsize::new(0);
        let outcomes = Mutex::new(Vec::with_capacity(scenarios.len()));
        thread::scope(|scope| {
            for _ in 0..jobs.clamp(1, scenarios.len().max(1)) {
                scope.spawn(|| {
                    while let Some(scenario) = scenarios.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let outcome = self.run(scenario);
                        outcomes
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .push(outcome);
                    }
                });
            }
        });
        let mut outcomes = outcomes
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        outcomes.sort_by(|a, b| a.id.cmp(&b.id));
        outcomes
    }

    /// Runs one scenario in a fresh directory.
    pub fn run(&self, scenario: &Scenario) -> Outcome {
        let start = Instant::now();
        let failure = self.replay(scenario).err();
        let verdict = match (&failure, &scenario.xfail) {
            (None, None) => Verdict::Pass,
            (Some(_), None) => Verdict::Fail,
            (Some(_), Some(_)) => Verdict::XFail,
            (None, Some(_)) => Verdict::XPass,
        };
        Outcome {
            id: scenario.id.clone(),
            rules: scenario.rules.clone(),
            verdict,
            elapsed: start.elapsed(),
            failure,
            xfail: scenario.xfail.clone(),
        }
    }

    fn replay(&self, scenario: &Scenario) -> Result<(), Failure> {
        let dir = tempfile::Builder::new()
            .prefix("dirmail-conformance-")
            .tempdir()
            .map_err(|e| Failure::setup(format!("cannot create a temporary directory: {e}")))?;
        let ctx = Context {
            dir: dir.path(),
            dir_text: dir.path().to_string_lossy().into_owned(),
        };
        if let Some(config) = &scenario.config {
            let path = dir.path().join("dirmail.toml");
            fs::write(&path, ctx.subst(config))
                .map_err(|e| Failure::setup(format!("cannot write {}: {e}", path.display())))?;
        }
        for (i, step) in scenario.steps.iter().enumerate() {
            let (action, result) = match step {
                Step::Run(run) => (ctx.describe(run), self.run_step(&ctx, run)),
                Step::Files(files) => ("check files".to_owned(), ctx.files_step(files)),
                Step::Put(put) => (format!("put {}", put.path), ctx.put_step(put)),
            };
            result.map_err(|problem| Failure {
                step: i + 1,
                action,
                problems: problem.problems,
                stdout: problem.stdout,
                stderr: problem.stderr,
            })?;
        }
        Ok(())
    }

    fn run_step(&self, ctx: &Context, run: &RunStep) -> Result<(), StepProblem> {
        let mut command = Command::new(&self.dirmail);
        command
            .args(run.args.iter().map(|a| ctx.subst(a)))
            .current_dir(ctx.dir);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("DIRMAIL_") {
                command.env_remove(key);
            }
        }
        for (key, value) in &run.env {
            command.env(key, ctx.subst(value));
        }
        let stdin = run.stdin.as_ref().map(|s| ctx.subst(s));
        let output = execute(command, stdin, self.timeout).map_err(|e| StepProblem {
            problems: vec![format!("cannot start {}: {e}", self.dirmail.display())],
            stdout: None,
            stderr: None,
        })?;
        let problems = check_output(&ctx.expect(&run.expect), &output, self.timeout);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(StepProblem {
                problems,
                stdout: Some(output.stdout),
                stderr: Some(output.stderr),
            })
        }
    }
}

/// The scenario's directory, and its text for `{dir}`.
struct Context<'a> {
    dir: &'a Path,
    dir_text: String,
}

/// What went wrong in a step, before it is numbered.
struct StepProblem {
    problems: Vec<String>,
    stdout: Option<String>,
    stderr: Option<String>,
}

impl From<Vec<String>> for StepProblem {
    fn from(problems: Vec<String>) -> StepProblem {
        StepProblem {
            problems,
            stdout: None,
            stderr: None,
        }
    }
}

impl Context<'_> {
    fn subst(&self, text: &str) -> String {
        text.replace("{dir}", &self.dir_text)
    }

    fn subst_json(&self, value: &Value) -> Value {
        match value {
            Value::String(s) => Value::String(self.subst(s)),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.subst_json(v)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (self.subst(k), self.subst_json(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    fn expect(&self, expect: &Expect) -> Expect {
        Expect {
            exit: expect.exit,
            stdout: expect.stdout.as_deref().map(|s| self.subst(s)),
            stdout_contains: expect
                .stdout_contains
                .iter()
                .map(|s| self.subst(s))
                .collect(),
            stderr: expect.stderr.as_deref().map(|s| self.subst(s)),
            stderr_contains: expect
                .stderr_contains
                .iter()
                .map(|s| self.subst(s))
                .collect(),
            json: expect.json.as_ref().map(|v| self.subst_json(v)),
        }
    }

    /// `dirmail add 'a b@example.jp'`, as a reader would retype it.
    fn describe(&self, run: &RunStep) -> String {
        let args: Vec<String> = run.args.iter().map(|a| self.subst(a)).collect();
        format!("dirmail {}", shell_words::join(args))
    }

    fn files_step(&self, files: &FilesStep) -> Result<(), StepProblem> {
        let mut problems = Vec::new();
        for path in &files.exists {
            if fs::symlink_metadata(self.dir.join(path)).is_err() {
                problems.push(format!("{path} should exist, but does not"));
            }
        }
        for path in &files.absent {
            if fs::symlink_metadata(self.dir.join(path)).is_ok() {
                problems.push(format!("{path} should not exist, but does"));
            }
        }
        for (path, want) in &files.mode {
            match fs::metadata(self.dir.join(path)) {
                Ok(meta) => {
                    let have = meta.permissions().mode() & 0o7777;
                    if have != *want {
                        problems.push(format!("mode of {path}: expected {want:o}, got {have:o}"));
                    }
                }
                Err(e) => problems.push(format!("mode of {path}: expected {want:o}, but {e}")),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.into())
        }
    }

    fn put_step(&self, put: &PutStep) -> Result<(), StepProblem> {
        let path = self.dir.join(&put.path);
        let written = match path.parent() {
            Some(parent) => fs::create_dir_all(parent),
            None => Ok(()),
        }
        .and_then(|()| fs::write(&path, self.subst(&put.text)));
        written.map_err(|e| vec![format!("cannot write {}: {e}", put.path)].into())
    }
}

/// What a finished (or killed) run produced.
#[derive(Debug)]
struct Output {
    /// `None` when it was killed for taking too long.
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
    /// It left processes behind that kept its output open; they were killed.
    stray: bool,
}

/// Runs `command` with `stdin` (or none), collecting its output; kills it after `timeout`.
///
/// The command runs in a process group of its own, so that whatever it starts can be killed
/// with it: a background process holding the output pipes would otherwise hang the runner.
fn execute(mut command: Command, stdin: Option<String>, timeout: Duration) -> io::Result<Output> {
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
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn start(pipe: Option<impl Read + Send + 'static>, done: mpsc::Sender<()>) -> Capture {
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

    fn text(&self) -> String {
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
fn wait_until(child: &mut Child, group: u32, deadline: Instant) -> io::Result<Option<ExitStatus>> {
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

/// Sends SIGKILL to every process of `group`. Through `sh`'s `kill`, since std has no safe way
/// to signal a process group and this crate has no `unsafe`.
fn kill_group(group: u32) {
    let _ = Command::new("sh")
        .args([
            "-c",
            "kill -KILL \"-$1\" 2>/dev/null",
            "sh",
            &group.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Every expectation of `expect` that `output` does not meet.
fn check_output(expect: &Expect, output: &Output, timeout: Duration) -> Vec<String> {
    let mut problems = Vec::new();
    if output.stray {
        problems.push("left processes running that held its output open; they were killed".into());
    }
    let Some(status) = output.status else {
        problems.push(format!(
            "did not finish within {} s and was killed",
            timeout.as_secs_f64()
        ));
        return problems;
    };
    match status.code() {
        Some(code) if code == expect.exit => {}
        Some(code) => problems.push(format!("exit code: expected {}, got {code}", expect.exit)),
        None => problems.push(format!(
            "exit code: expected {}, but it was killed by signal {}",
            expect.exit,
            status.signal().unwrap_or(0)
        )),
    }
    let streams = [
        (
            "stdout",
            &expect.stdout,
            &expect.stdout_contains,
            &output.stdout,
        ),
        (
            "stderr",
            &expect.stderr,
            &expect.stderr_contains,
            &output.stderr,
        ),
    ];
    for (name, exact, needles, actual) in streams {
        if let Some(exact) = exact
            && let Some(difference) = text::first_difference(exact, actual)
        {
            problems.push(format!("{name}: {difference}"));
        }
        for needle in needles {
            if !actual.contains(needle.as_str()) {
                problems.push(format!("{name} should contain {needle:?}, but does not"));
            }
        }
    }
    if let Some(expected) = &expect.json {
        match serde_json::from_str::<Value>(output.stdout.trim()) {
            Ok(actual) => {
                if let Err(difference) = json::contains(&actual, expected) {
                    problems.push(format!("json: {difference}"));
                }
            }
            Err(e) => problems.push(format!("json: stdout is not one JSON value: {e}")),
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(code: i32, stdout: &str, stderr: &str) -> Output {
        Output {
            status: Some(ExitStatus::from_raw(code << 8)),
            stdout: stdout.into(),
            stderr: stderr.into(),
            stray: false,
        }
    }

    fn expect() -> Expect {
        Expect {
            exit: 0,
            stdout: None,
            stdout_contains: vec![],
            stderr: None,
            stderr_contains: vec![],
            json: None,
        }
    }

    const TIMEOUT: Duration = Duration::from_secs(60);

    #[test]
    fn every_unmet_expectation_is_listed() {
        let want = Expect {
            exit: 3,
            stdout: Some("local\n".into()),
            stderr_contains: vec!["R2".into()],
            ..expect()
        };
        assert!(
            check_output(
                &want,
                &output(3, "local  \n", "dirmail: refused by R2: x"),
                TIMEOUT
            )
            .is_empty()
        );
        let problems = check_output(&want, &output(0, "ad\n", "oops"), TIMEOUT);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert_eq!(problems[0], "exit code: expected 3, got 0");
        assert!(problems[1].starts_with("stdout: line 1 differs"));
        assert_eq!(problems[2], "stderr should contain \"R2\", but does not");
    }

    #[test]
    fn json_expectations_parse_stdout() {
        let want = Expect {
            json: Some(serde_json::json!({"ok": true, "value": "local"})),
            ..expect()
        };
        let answer = r#"{"ok": true, "property": "authentication", "value": "local"}"#;
        assert!(check_output(&want, &output(0, answer, ""), TIMEOUT).is_empty());
        let problems = check_output(&want, &output(0, "local\n", ""), TIMEOUT);
        assert!(
            problems[0].starts_with("json: stdout is not one JSON value"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_killed_run_says_so() {
        let killed = Output {
            status: None,
            stdout: String::new(),
            stderr: String::new(),
            stray: false,
        };
        assert_eq!(
            check_output(&expect(), &killed, Duration::from_secs(1)),
            ["did not finish within 1 s and was killed"]
        );
    }

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
}
