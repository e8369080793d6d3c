//! Replaying scenarios against the real `dirmail` binary.
//!
//! Each scenario gets a fresh temporary directory, which is the working directory of every
//! `dirmail` run, of the server and of every client program, so with no `config` the binary
//! keeps its store in `./dirmail-data` inside it. `DIRMAIL_*` variables of the caller's
//! environment are removed: a scenario sees only what it states. A scenario stops at its first
//! failing step; whatever happens, its connections are dropped and its server stopped before
//! the directory goes.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::background::Background;
use crate::process::{Output, execute};
use crate::scenario::{
    Again, DnsData, DnsRecord, ExecStep, Expect, FilesStep, LogCheck, PutStep, Replies, RunStep,
    Scenario, StartStep, Step, StopStep, WireAction, WireStep,
};
use crate::serve::{Server, Stopped};
use crate::wire::{self, Conn};
use crate::{json, text};

/// How long `log_contains` waits for a line to be logged.
const LOG_WAIT: Duration = Duration::from_secs(5);

/// How long a `stop` step lets the server finish (its own grace for sessions is 30 s).
const STOP_WITHIN: Duration = Duration::from_secs(40);

/// How many lines of the server's log a failure shows.
const LOG_TAIL: usize = 40;

/// How often a step with `within` looks again.
const AGAIN_EVERY: Duration = Duration::from_millis(100);

/// Numbers the scenarios of this process, so each gets loopback addresses of its own.
static SCENARIO_SERIAL: AtomicUsize = AtomicUsize::new(0);

/// The loopback addresses of scenario `serial` (`{addr:NAME}`): 127.X.Y.2, .3, … with X and
/// Y from the serial, away from 127.0.0.0/16 where the integration tests put theirs. All of
/// 127.0.0.0/8 reaches the loopback interface on Linux.
fn scenario_address(serial: usize, index: usize) -> Ipv4Addr {
    let serial = serial % (50 * 250);
    Ipv4Addr::new(
        127,
        200 + (serial / 250) as u8,
        (serial % 250) as u8 + 1,
        2 + (index % 250) as u8,
    )
}

/// How scenarios are run.
#[derive(Debug, Clone)]
pub struct Runner {
    /// The `dirmail` binary, absolute: runs happen in other directories.
    pub dirmail: PathBuf,
    /// The fixtures directory (the parent of the scenarios), for `{fixtures}`: client
    /// scripts live in its `clients/`.
    pub fixtures: PathBuf,
    /// A run still going after this long is killed and its step fails.
    pub timeout: Duration,
    /// The Samba AD domain controller shared by the scenarios that ask for one, started on
    /// first use.
    pub samba: crate::samba::SharedDc,
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
    /// What helps to see why, each under its name: a run's `stdout` and `stderr`, a
    /// connection's transcript, the server's log.
    pub outputs: Vec<(String, String)>,
}

impl Failure {
    fn setup(problem: String) -> Failure {
        Failure {
            step: 0,
            action: "set up the scenario directory".into(),
            problems: vec![problem],
            outputs: Vec::new(),
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
        for (name, output) in &self.outputs {
            if output.is_empty() {
                writeln!(f, "  --- {name}: (empty)")?;
            } else {
                writeln!(f, "  --- {name}:")?;
                for line in output.lines() {
                    writeln!(f, "  | {line}")?;
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
        let ad = if scenario.needs_samba {
            self.samba.facts().map_err(Failure::setup)?
        } else {
            Vec::new()
        };
        let mut ctx = Context {
            runner: self,
            dir: dir.path(),
            dir_text: dir.path().to_string_lossy().into_owned(),
            fixtures_text: self.fixtures.to_string_lossy().into_owned(),
            ad,
            serial: SCENARIO_SERIAL.fetch_add(1, Ordering::Relaxed),
            ports: BTreeMap::new(),
            free_ports: RefCell::new(BTreeMap::new()),
            addrs: RefCell::new(Vec::new()),
            vars: BTreeMap::new(),
            conns: BTreeMap::new(),
            server: None,
            background: BTreeMap::new(),
            dns: None,
        };
        if let Some(config) = &scenario.config {
            let path = dir.path().join("dirmail.toml");
            fs::write(&path, ctx.subst(config))
                .map_err(|e| Failure::setup(format!("cannot write {}: {e}", path.display())))?;
        }
        let result = scenario.steps.iter().enumerate().try_for_each(|(i, step)| {
            let action = ctx.describe(step);
            ctx.step(step).map_err(|problem| Failure {
                step: i + 1,
                action,
                problems: problem.problems,
                outputs: problem.outputs,
            })
        });
        // Connections first, so the server has no session to wait for; then the server,
        // before the directory it works in is removed.
        ctx.conns.clear();
        drop(ctx);
        result
    }
}

/// The scenario's directory and what is running in it.
struct Context<'a> {
    runner: &'a Runner,
    dir: &'a Path,
    dir_text: String,
    fixtures_text: String,
    /// `{ad:KEY}` → value, from the Samba DC, for scenarios with `directory = "samba"`.
    ad: Vec<(String, String)>,
    /// This scenario's number in the run, for its loopback addresses.
    serial: usize,
    /// Listener name to port, once the server has started.
    ports: BTreeMap<String, u16>,
    /// `{port:NAME}` for a name that is no listener: a port picked free on first use.
    free_ports: RefCell<BTreeMap<String, u16>>,
    /// `{addr:NAME}`, in order of first use: the scenario's loopback addresses.
    addrs: RefCell<Vec<String>>,
    /// `{var:NAME}`: values captured by `capture`.
    vars: BTreeMap<String, String>,
    /// Open connections by name. Declared before `server`, so they are dropped first.
    conns: BTreeMap<String, Conn>,
    /// The server last started, running or stopped (its log stays readable).
    server: Option<Server>,
    /// Programs started by `start` steps, by name.
    background: BTreeMap<String, Background>,
    /// The DNS server of the `dns` step, on `{port:dns}`.
    dns: Option<dns_fixture::DnsServer>,
}

/// What went wrong in a step, before it is numbered.
struct StepProblem {
    problems: Vec<String>,
    outputs: Vec<(String, String)>,
}

impl From<Vec<String>> for StepProblem {
    fn from(problems: Vec<String>) -> StepProblem {
        StepProblem {
            problems,
            outputs: Vec::new(),
        }
    }
}

impl From<String> for StepProblem {
    fn from(problem: String) -> StepProblem {
        vec![problem].into()
    }
}

/// The last `n` lines of `text`, saying how many were left out.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(n);
    let mut out = String::new();
    if skip > 0 {
        out.push_str(&format!("… {skip} earlier lines\n"));
    }
    for line in &lines[skip..] {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `{port:NAME}` left in `text` after substitution: a listener that is not running.
fn unresolved_port(text: &str) -> Option<&str> {
    placeholder(text, "port")
}

/// The first `{KIND:NAME}` in `text`: its NAME.
fn placeholder<'t>(text: &'t str, kind: &str) -> Option<&'t str> {
    let open = format!("{{{kind}:");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find('}')?;
    Some(&text[start..start + end])
}

/// A port of 127.0.0.1 free for UDP and TCP at this moment (a DNS server needs both; a
/// receiving server on the scenario's own addresses finds it free there too).
fn free_port() -> Result<u16, String> {
    dns_fixture::free_port(Ipv4Addr::LOCALHOST).map_err(|e| format!("no free port: {e}"))
}

impl Context<'_> {
    /// `{dir}`, `{fixtures}`, `{dirmail}`, `{ad:KEY}`, `{var:NAME}`, `{addr:NAME}`, and
    /// `{port:NAME}` of each running listener or, for a name that is no listener, a free port
    /// picked on first use.
    fn subst(&self, text: &str) -> String {
        let mut text = text
            .replace("{dir}", &self.dir_text)
            .replace("{fixtures}", &self.fixtures_text)
            .replace("{dirmail}", &self.runner.dirmail.to_string_lossy());
        if text.contains("{ad:") {
            for (key, value) in &self.ad {
                text = text.replace(&format!("{{ad:{key}}}"), value);
            }
        }
        if text.contains("{var:") {
            for (key, value) in &self.vars {
                text = text.replace(&format!("{{var:{key}}}"), value);
            }
        }
        while let Some(name) = placeholder(&text, "addr") {
            let name = name.to_owned();
            let mut addrs = self.addrs.borrow_mut();
            let index = match addrs.iter().position(|a| *a == name) {
                Some(index) => index,
                None => {
                    addrs.push(name.clone());
                    addrs.len() - 1
                }
            };
            let addr = scenario_address(self.serial, index);
            text = text.replace(&format!("{{addr:{name}}}"), &addr.to_string());
        }
        if text.contains("{port:") {
            for (name, port) in &self.ports {
                text = text.replace(&format!("{{port:{name}}}"), &port.to_string());
            }
            let mut from = 0;
            while let Some(name) = text.get(from..).and_then(|rest| unresolved_port(rest)) {
                let name = name.to_owned();
                if crate::scenario::listener(&name).is_some() {
                    // A listener of a server not started yet: left for subst_all to report.
                    from = text[from..]
                        .find("{port:")
                        .map_or(text.len(), |i| from + i + 1);
                    continue;
                }
                let mut free = self.free_ports.borrow_mut();
                let port = match free.get(&name) {
                    Some(port) => *port,
                    None => match free_port() {
                        Ok(port) => *free.entry(name.clone()).or_insert(port),
                        // Left as it is; subst_all reports it.
                        Err(_) => break,
                    },
                };
                text = text.replace(&format!("{{port:{name}}}"), &port.to_string());
            }
        }
        text
    }

    /// [`Context::subst`], refusing a `{port:NAME}` it cannot fill.
    fn subst_all<'t>(
        &self,
        texts: impl IntoIterator<Item = &'t String>,
    ) -> Result<Vec<String>, StepProblem> {
        texts
            .into_iter()
            .map(|text| {
                let done = self.subst(text);
                if let Some(name) = placeholder(&done, "var") {
                    return Err(format!(
                        "`{{var:{name}}}`: no earlier step captured `{name}`"
                    )
                    .into());
                }
                match unresolved_port(&done) {
                    Some(name) => Err(format!(
                        "`{{port:{name}}}`: no listener `{name}` is running (start the server with a `serve` step first)"
                    )
                    .into()),
                    None => Ok(done),
                }
            })
            .collect()
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

    /// What a step does, as a reader would retype it: `dirmail add 'a b@example.jp'`,
    /// `c1: send "EHLO x\r\n"`.
    fn describe(&self, step: &Step) -> String {
        let joined = |args: &[String]| {
            let args: Vec<String> = args.iter().map(|a| self.subst(a)).collect();
            shell_words::join(args)
        };
        match step {
            Step::Run(run) => format!("dirmail {}", joined(&run.args)),
            Step::Exec(exec) => joined(&exec.argv),
            Step::Files(_) => "check files".into(),
            Step::Put(put) => format!("put {}", put.path),
            Step::Serve => "dirmail serve".into(),
            Step::Stop(_) => "stop the server (SIGTERM)".into(),
            Step::Log(_) => "check the server log".into(),
            Step::Dns(records) => format!("serve {} DNS record(s)", records.len()),
            Step::Start(start) => format!("start {}: {}", start.name, joined(&start.argv)),
            Step::Kill(name) => format!("kill {name} (SIGKILL)"),
            Step::Wire(WireStep { conn, action }) => {
                let what = match action {
                    WireAction::Connect { listener, .. } => format!("connect to {listener}"),
                    WireAction::Send { bytes, .. } => format!("send {}", wire::shown(bytes)),
                    WireAction::StartTls { .. } => "TLS handshake".into(),
                    WireAction::Close => "drop the connection".into(),
                    WireAction::ExpectClosed { .. } => "wait for the server to close".into(),
                };
                format!("{conn}: {what}")
            }
        }
    }

    fn step(&mut self, step: &Step) -> Result<(), StepProblem> {
        match step {
            Step::Run(run) => self.run_step(run),
            Step::Exec(exec) => self.exec_step(exec),
            Step::Files(files) => self.files_step(files),
            Step::Put(put) => self.put_step(put),
            Step::Serve => self.serve_step(),
            Step::Stop(stop) => self.stop_step(stop),
            Step::Log(log) => self.log_step(log),
            Step::Wire(wire) => self.wire_step(wire),
            Step::Dns(records) => self.dns_step(records),
            Step::Start(start) => self.start_step(start),
            Step::Kill(name) => self.kill_step(name),
        }
    }

    /// A command in the scenario's directory, without the caller's `DIRMAIL_*` or `RUST_LOG`
    /// (which `serve` honours before the scenario's `logging`).
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.current_dir(self.dir).env_remove("RUST_LOG");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("DIRMAIL_") {
                command.env_remove(key);
            }
        }
        command
    }

    fn run_step(&mut self, run: &RunStep) -> Result<(), StepProblem> {
        let dirmail = self.runner.dirmail.to_string_lossy().into_owned();
        let args = self.subst_all(&run.args)?;
        let stdin = run.stdin.as_ref().map(|s| self.subst(s));
        let make = || {
            let mut command = self.command(&dirmail);
            command.args(&args);
            for (key, value) in &run.env {
                command.env(key, self.subst(value));
            }
            command
        };
        let stdout = self.finish(make, stdin, &run.expect, &run.again, self.runner.timeout)?;
        self.capture(&run.again, &stdout)
    }

    fn exec_step(&mut self, exec: &ExecStep) -> Result<(), StepProblem> {
        let argv = self.subst_all(&exec.argv)?;
        let mut env = Vec::new();
        for (key, value) in &exec.env {
            env.push((key, self.subst_all([value])?.remove(0)));
        }
        let stdin = match &exec.stdin {
            Some(text) => Some(self.subst_all([text])?.remove(0)),
            None => None,
        };
        let make = || {
            let mut command = self.command(&argv[0]);
            command.args(&argv[1..]);
            command.envs(env.iter().map(|(k, v)| (k, v)));
            command
        };
        let timeout = exec.timeout.unwrap_or(self.runner.timeout);
        let stdout = self.finish(make, stdin, &exec.expect, &exec.again, timeout)?;
        self.capture(&exec.again, &stdout)
    }

    /// Runs the command `make` builds and checks what it did against `expect`, again until it
    /// passes if the step has `within`; returns its standard output.
    fn finish(
        &self,
        make: impl Fn() -> Command,
        stdin: Option<String>,
        expect: &Expect,
        again: &Again,
        timeout: Duration,
    ) -> Result<String, StepProblem> {
        let deadline = again.within.map(|within| Instant::now() + within);
        loop {
            let command = make();
            let program = command.get_program().to_string_lossy().into_owned();
            let output = execute(command, stdin.clone(), timeout)
                .map_err(|e| StepProblem::from(format!("cannot start {program}: {e}")))?;
            let mut problems = check_output(&self.expect(expect), &output, timeout);
            if problems.is_empty() {
                return Ok(output.stdout);
            }
            if deadline.is_some_and(|d| Instant::now() < d) {
                thread::sleep(AGAIN_EVERY);
                continue;
            }
            if let Some(within) = again.within {
                problems.push(format!(
                    "(still so after {} s of retries)",
                    within.as_secs_f64()
                ));
            }
            let mut outputs = vec![
                ("stdout".to_owned(), output.stdout),
                ("stderr".to_owned(), output.stderr),
            ];
            outputs.extend(self.diagnostics());
            return Err(StepProblem { problems, outputs });
        }
    }

    /// `capture = { NAME = "/pointer" }`: values of the step's JSON output for `{var:NAME}`.
    fn capture(&mut self, again: &Again, stdout: &str) -> Result<(), StepProblem> {
        if again.capture.is_empty() {
            return Ok(());
        }
        let value: Value = serde_json::from_str(stdout)
            .map_err(|e| format!("`capture`: the output is not JSON ({e})"))?;
        for (name, pointer) in &again.capture {
            let found = value.pointer(pointer).ok_or_else(|| {
                format!("`capture`: the output has nothing at {pointer:?} for `{name}`")
            })?;
            let text = match found {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            self.vars.insert(name.clone(), text);
        }
        Ok(())
    }

    /// The tail of the server's log, when a server has run: it often says why.
    fn server_log(&self) -> Option<(String, String)> {
        let server = self.server.as_ref()?;
        Some(("server log".to_owned(), tail(&server.log(), LOG_TAIL)))
    }

    /// What helps to see why a step failed: the server's log and the output of every program
    /// running in the background.
    fn diagnostics(&self) -> Vec<(String, String)> {
        let mut outputs: Vec<(String, String)> = self.server_log().into_iter().collect();
        for (name, program) in &self.background {
            outputs.push((
                format!("output of {name}"),
                tail(&program.output(), LOG_TAIL),
            ));
        }
        if let Some(dns) = &self.dns {
            outputs.push(("DNS server log".to_owned(), tail(&dns.log(), LOG_TAIL)));
        }
        outputs
    }

    fn dns_step(&mut self, records: &[DnsRecord]) -> Result<(), StepProblem> {
        let mut set = dns_fixture::Records::new();
        let mut local = Vec::new();
        for record in records {
            let name = self.subst_all([&record.name])?.remove(0);
            if !local.contains(&name) {
                set = set.local_domain(&name);
                local.push(name.clone());
            }
            set = match &record.data {
                DnsData::Mx {
                    preference,
                    exchange,
                } => {
                    let exchange = self.subst_all([exchange])?.remove(0);
                    set.mx(&name, &exchange, *preference)
                }
                DnsData::Address(address) => {
                    let text = self.subst_all([address])?.remove(0);
                    let address: IpAddr = text
                        .parse()
                        .map_err(|_| format!("`dns`: {text:?} is not an IP address"))?;
                    set.host(&name, &[address])
                }
                DnsData::Txt(text) => set.txt(&name, &self.subst_all([text])?.remove(0)),
                DnsData::Local => set,
            };
        }
        let port: u16 = self
            .subst_all([&"{port:dns}".to_owned()])?
            .remove(0)
            .parse()
            .map_err(|_| "no port for the DNS server".to_owned())?;
        // A second `dns` step replaces the first server, on the same port.
        self.dns = None;
        let server = dns_fixture::DnsServer::start_on(&set, port)
            .map_err(|e| format!("the DNS server (dnsmasq) did not start: {e}"))?;
        self.dns = Some(server);
        Ok(())
    }

    fn start_step(&mut self, start: &StartStep) -> Result<(), StepProblem> {
        if self.background.contains_key(&start.name) {
            return Err(format!(
                "`{}` is already running; `kill` it first or name another with `as`",
                start.name
            )
            .into());
        }
        let argv = self.subst_all(&start.argv)?;
        let mut command = self.command(&argv[0]);
        command.args(&argv[1..]);
        for (key, value) in &start.env {
            command.env(key, self.subst_all([value])?.remove(0));
        }
        let ready = match &start.ready {
            Some(text) => Some(self.subst_all([text])?.remove(0)),
            None => None,
        };
        let program = Background::start(command, ready.as_deref()).map_err(|e| StepProblem {
            problems: vec![e],
            outputs: self.diagnostics(),
        })?;
        self.background.insert(start.name.clone(), program);
        Ok(())
    }

    fn kill_step(&mut self, name: &str) -> Result<(), StepProblem> {
        if name == "serve" {
            return match &mut self.server {
                Some(server) => {
                    if !server.is_running() {
                        return Err("the server is not running".to_owned().into());
                    }
                    server.kill();
                    Ok(())
                }
                None => Err("no server to kill: start it with a `serve` step"
                    .to_owned()
                    .into()),
            };
        }
        match self.background.get_mut(name) {
            Some(program) => {
                program.kill();
                // Its output stays for the reports, under a name that can be started again.
                if let Some(program) = self.background.remove(name) {
                    self.background.insert(format!("{name} (killed)"), program);
                }
                Ok(())
            }
            None => Err(format!("nothing named `{name}` was started").into()),
        }
    }

    fn files_step(&self, files: &FilesStep) -> Result<(), StepProblem> {
        let deadline = files.within.map(|within| Instant::now() + within);
        loop {
            let problems = self.file_problems(files);
            if problems.is_empty() {
                return Ok(());
            }
            if deadline.is_some_and(|d| Instant::now() < d) {
                thread::sleep(AGAIN_EVERY);
                continue;
            }
            return Err(StepProblem {
                problems,
                outputs: if files.within.is_some() {
                    self.diagnostics()
                } else {
                    Vec::new()
                },
            });
        }
    }

    fn file_problems(&self, files: &FilesStep) -> Vec<String> {
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
        for (path, want) in &files.count {
            match regular_files(&self.dir.join(path)) {
                Ok(found) if found.len() as u64 == *want => {}
                Ok(found) => {
                    let names: Vec<String> = found
                        .iter()
                        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
                        .collect();
                    problems.push(format!(
                        "{path} should hold {want} file(s), but holds {}: {names:?}",
                        found.len()
                    ));
                }
                Err(e) => problems.push(format!("{path} should hold {want} file(s), but {e}")),
            }
        }
        for (path, needles) in &files.file_contains {
            match texts_of(&self.dir.join(path)) {
                Ok(texts) => {
                    for needle in needles {
                        let needle = self.subst(needle);
                        if !texts.iter().any(|t| t.contains(&needle)) {
                            problems.push(format!(
                                "{path} should contain {needle:?}, but {}",
                                describe_texts(&texts)
                            ));
                        }
                    }
                }
                Err(e) => problems.push(format!("{path}: {e}")),
            }
        }
        for (path, needles) in &files.file_lacks {
            match texts_of(&self.dir.join(path)) {
                Ok(texts) => {
                    for needle in needles {
                        let needle = self.subst(needle);
                        if texts.iter().any(|t| t.contains(&needle)) {
                            problems
                                .push(format!("{path} should not contain {needle:?}, but does"));
                        }
                    }
                }
                Err(e) => problems.push(format!("{path}: {e}")),
            }
        }
        problems
    }

    fn put_step(&self, put: &PutStep) -> Result<(), StepProblem> {
        let text = self.subst_all([&put.text])?.remove(0);
        let path = self.dir.join(&put.path);
        let written = match path.parent() {
            Some(parent) => fs::create_dir_all(parent),
            None => Ok(()),
        }
        .and_then(|()| fs::write(&path, &text));
        written.map_err(|e| format!("cannot write {}: {e}", put.path).into())
    }

    fn serve_step(&mut self) -> Result<(), StepProblem> {
        if let Some(server) = &mut self.server
            && server.is_running()
        {
            return Err("the server is already running; `stop` it first"
                .to_owned()
                .into());
        }
        match Server::start(&self.runner.dirmail, self.dir) {
            Ok(server) => {
                self.ports = server.ports.clone();
                self.server = Some(server);
                Ok(())
            }
            Err(e) => Err(StepProblem {
                problems: vec![e.message],
                outputs: vec![("stdout".into(), e.stdout), ("server log".into(), e.stderr)],
            }),
        }
    }

    fn stop_step(&mut self, stop: &StopStep) -> Result<(), StepProblem> {
        let Some(server) = &mut self.server else {
            return Err("no server to stop: start it with a `serve` step"
                .to_owned()
                .into());
        };
        if !server.is_running() {
            return Err("the server is not running any more".to_owned().into());
        }
        let mut problems = Vec::new();
        match server.stop(STOP_WITHIN) {
            Stopped::Killed => problems.push(format!(
                "did not stop within {} s of SIGTERM and was killed",
                STOP_WITHIN.as_secs()
            )),
            Stopped::Exited(status) => match status.code() {
                Some(code) if code == stop.exit => {}
                Some(code) => {
                    problems.push(format!("exit code: expected {}, got {code}", stop.exit))
                }
                None => problems.push(format!(
                    "exit code: expected {}, but it was killed by signal {}",
                    stop.exit,
                    status.signal().unwrap_or(0)
                )),
            },
        }
        let rest = server.stdout_after_ready();
        for needle in &stop.stdout_contains {
            if !rest.contains(needle.as_str()) {
                problems.push(format!(
                    "stdout after `ready` should contain {needle:?}, but does not"
                ));
            }
        }
        problems.extend(self.log_problems(&stop.log));
        if problems.is_empty() {
            return Ok(());
        }
        let mut outputs = vec![("stdout after ready".to_owned(), rest)];
        outputs.extend(self.diagnostics());
        Err(StepProblem { problems, outputs })
    }

    fn log_step(&self, log: &LogCheck) -> Result<(), StepProblem> {
        if self.server.is_none() {
            return Err("no server has run: start it with a `serve` step"
                .to_owned()
                .into());
        }
        let problems = self.log_problems(log);
        if problems.is_empty() {
            return Ok(());
        }
        Err(StepProblem {
            problems,
            outputs: self.diagnostics(),
        })
    }

    /// `log_contains` waits a little (logs follow what happens); `log_lacks` looks once.
    fn log_problems(&self, log: &LogCheck) -> Vec<String> {
        let Some(server) = &self.server else {
            return Vec::new();
        };
        let deadline = Instant::now() + LOG_WAIT;
        let mut text = server.log();
        let wanted: Vec<String> = log.contains.iter().map(|s| self.subst(s)).collect();
        while wanted.iter().any(|w| !text.contains(w.as_str())) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
            text = server.log();
        }
        let mut problems = Vec::new();
        for needle in &wanted {
            if !text.contains(needle.as_str()) {
                problems.push(format!(
                    "the server log should contain {needle:?}, but does not"
                ));
            }
        }
        for needle in &log.lacks {
            let needle = self.subst(needle);
            if text.contains(&needle) {
                problems.push(format!(
                    "the server log should not contain {needle:?}, but does"
                ));
            }
        }
        problems
    }

    /// The store's certificate, the only root a TLS connection trusts.
    fn ca(&self) -> PathBuf {
        self.dir.join("dirmail-data/tls/cert.pem")
    }

    fn wire_step(&mut self, step: &WireStep) -> Result<(), StepProblem> {
        let name = &step.conn;
        if let WireAction::Connect { listener, greeting } = &step.action {
            if self.conns.contains_key(name) {
                return Err(format!(
                    "connection `{name}` is already open; `close` it first or name another with `as`"
                )
                .into());
            }
            let Some(&port) = self.ports.get(listener) else {
                return Err(format!(
                    "no `{listener}` listener is running (start the server with a `serve` step first)"
                )
                .into());
            };
            let (protocol, implicit_tls) = crate::scenario::listener(listener)
                .ok_or_else(|| format!("unknown listener {listener}"))?;
            let mut conn = Conn::open(listener, protocol, port, implicit_tls, &self.ca())
                .map_err(|e| self.wire_problem(None, vec![e]))?;
            let result = read_and_check(&mut conn, greeting);
            self.conns.insert(name.clone(), conn);
            return result.map_err(|problems| self.wire_problem(Some(name), problems));
        }
        let ca = self.ca();
        let Some(conn) = self.conns.get_mut(name) else {
            return Err(format!("no open connection `{name}`: open it with `connect`").into());
        };
        let result = act(conn, &step.action, &ca);
        let outcome = result.map_err(|problems| self.wire_problem(Some(name), problems));
        // Whatever came of it, a connection that was closed, or was to be, is gone.
        if matches!(
            step.action,
            WireAction::Close
                | WireAction::ExpectClosed { .. }
                | WireAction::Send { closed: true, .. }
        ) {
            self.conns.remove(name);
        }
        outcome
    }

    /// A failed wire step, with the connection's transcript and the server's log.
    fn wire_problem(&self, conn: Option<&String>, problems: Vec<String>) -> StepProblem {
        let mut outputs = Vec::new();
        if let Some(conn) = conn.and_then(|name| self.conns.get(name).map(|c| (name, c))) {
            outputs.push((format!("transcript of {}", conn.0), conn.1.transcript()));
        }
        outputs.extend(self.diagnostics());
        StepProblem { problems, outputs }
    }
}

/// One action on an open connection (`connect` is handled before, as it makes one).
fn act(conn: &mut Conn, action: &WireAction, ca: &Path) -> Result<(), Vec<String>> {
    let one = |e: String| vec![e];
    match action {
        WireAction::Connect { .. } | WireAction::Close => Ok(()),
        WireAction::Send {
            bytes,
            replies,
            closed,
            quiet,
        } => {
            conn.send(bytes.as_bytes()).map_err(one)?;
            if let Some(replies) = replies {
                read_and_check(conn, replies)?;
            }
            if *closed {
                let rest = conn.wait_closed().map_err(one)?;
                if !rest.is_empty() {
                    return Err(one(format!(
                        "after the replies, the server sent {} before closing",
                        wire::shown(&rest)
                    )));
                }
            }
            if *quiet {
                conn.expect_quiet(wire::QUIET_FOR).map_err(one)?;
            }
            Ok(())
        }
        WireAction::StartTls { quiet } => {
            conn.start_tls(ca).map_err(one)?;
            if *quiet {
                conn.expect_quiet(wire::QUIET_FOR).map_err(one)?;
            }
            Ok(())
        }
        WireAction::ExpectClosed { before } => {
            let text = conn.wait_closed().map_err(one)?;
            let problems = wire::check_text(before, &text, "what it sent before closing");
            if problems.is_empty() {
                Ok(())
            } else {
                Err(problems)
            }
        }
    }
}

/// Reads the replies `spec` asks for and checks them.
fn read_and_check(conn: &mut Conn, spec: &Replies) -> Result<(), Vec<String>> {
    let replies = conn.read_replies(spec).map_err(|e| vec![e])?;
    let problems = wire::check_replies(spec, &replies);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// The regular files directly in `dir`, sorted.
fn regular_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("cannot be listed: {e}"))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot be listed: {e}"))?;
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// The text of a file, or of every regular file directly in a directory.
fn texts_of(path: &Path) -> Result<Vec<String>, String> {
    let files = if path.is_dir() {
        regular_files(path)?
    } else {
        vec![path.to_owned()]
    };
    files
        .iter()
        .map(|file| {
            fs::read(file)
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .map_err(|e| format!("cannot read {}: {e}", file.display()))
        })
        .collect()
}

fn describe_texts(texts: &[String]) -> String {
    match texts {
        [] => "there is no file".into(),
        [one] => format!("it is {}", wire::shown(&tail(one, 20))),
        many => format!("none of its {} files does", many.len()),
    }
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
    use std::process::ExitStatus;

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
    fn each_scenario_has_loopback_addresses_of_its_own() {
        assert_eq!(scenario_address(0, 0), Ipv4Addr::new(127, 200, 1, 2));
        assert_eq!(scenario_address(0, 1), Ipv4Addr::new(127, 200, 1, 3));
        assert_eq!(scenario_address(251, 0), Ipv4Addr::new(127, 201, 2, 2));
        assert!(scenario_address(usize::MAX, usize::MAX).is_loopback());
        assert_ne!(scenario_address(1, 0), scenario_address(2, 0));
        assert_eq!(placeholder("a {addr:mx1} b", "addr"), Some("mx1"));
        assert_eq!(placeholder("a {addr:mx1 b", "addr"), None);
    }

    #[test]
    fn ports_are_substituted_and_missing_ones_named() {
        assert_eq!(unresolved_port("--port {port:pop3} x"), Some("pop3"));
        assert_eq!(unresolved_port("--port 1110"), None);
        assert_eq!(unresolved_port("{port:"), None);
        assert_eq!(tail("a\nb\nc\n", 2), "… 1 earlier lines\nb\nc\n");
        assert_eq!(tail("a\n", 2), "a\n");
    }
}
