//! Scenario files: the TOML format of `fixtures/scenarios/`, parsed and checked at load.
//!
//! Each step is read as a TOML table first: its keys decide which kind of step it is, and a
//! key that belongs to another kind is refused with the kind it belongs to. The table is then
//! read into a permissive `RawStep` (every key optional, unknown keys refused) and turned into
//! [`Step`], which cannot hold a malformed case: rule names are well-formed, paths stay inside
//! the scenario's directory, a reply check has something to check. The format itself is
//! documented for authors in `fixtures/scenarios/README.md`.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

/// One scenario file, checked.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Path relative to the scenarios root, without `.toml`, always with `/` separators.
    pub id: String,
    /// The file it came from, for messages.
    pub path: PathBuf,
    pub title: String,
    /// docs/spec.md rules covered, each `R<number>` or a section `§<n>[.<n>…]`.
    pub rules: Vec<String>,
    /// The seed passage the scenario replays.
    pub seed: String,
    /// When set, the scenario is expected to fail, for this reason.
    pub xfail: Option<String>,
    /// `directory = "samba"`: the scenario needs the run's Samba AD domain controller, whose
    /// facts fill `{ad:…}` placeholders.
    pub needs_samba: bool,
    /// Written as `dirmail.toml` in the scenario's directory before the first step. In a
    /// scenario that starts the server it is already merged with the runner's defaults
    /// ([`crate::serve::merged_config`]).
    pub config: Option<String>,
    pub steps: Vec<Step>,
}

/// One step. Which kind it is follows from the keys that are present.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// `run = …`: one invocation of the `dirmail` binary.
    Run(RunStep),
    /// `exec = [program, args…]`: one invocation of another program, a real mail client.
    Exec(ExecStep),
    /// `exists`, `absent`, `mode`, `count`, `file_contains`, `file_lacks`: file-system checks.
    Files(FilesStep),
    /// `put = { path, text }`: write a file.
    Put(PutStep),
    /// `serve = true`: start `dirmail serve` and wait until it is ready.
    Serve,
    /// `stop = true`: SIGTERM to the server, then what it printed and how it ended.
    Stop(StopStep),
    /// `log_contains`, `log_lacks` alone: the server's log (its standard error) so far.
    Log(LogCheck),
    /// `connect`, `send`, `starttls`, `close`, `expect_closed`: one action on a connection.
    Wire(WireStep),
    /// `dns = [records…]`: (re)start the scenario's DNS server on `127.0.0.1:{port:dns}`.
    Dns(Vec<DnsRecord>),
    /// `start = [program, args…]`: a program kept running in the background (a receiving
    /// mail server), named with `as`, until it is killed or the scenario ends.
    Start(StartStep),
    /// `kill = "NAME"`: SIGKILL to a background program, or to the server (`"serve"`).
    Kill(String),
}

/// One record of a `dns` step, `NAME TYPE VALUE`; placeholders in it are filled at run time.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsRecord {
    pub name: String,
    pub data: DnsData,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DnsData {
    /// `example.org MX 10 mx1.example.org`; a null MX is `MX 0 .`.
    Mx { preference: u16, exchange: String },
    /// `mx1.example.org A 127.0.0.2` (or `AAAA`), the address usually `{addr:NAME}`.
    Address(String),
    /// `s1._domainkey.example.jp TXT v=DKIM1; …`: the rest of the line.
    Txt(String),
    /// `nothing.example LOCAL`: no records; the name is answered NXDOMAIN, not REFUSED.
    Local,
}

/// The record types a `dns` step knows, for messages.
pub const DNS_TYPES: &str = "MX, A, AAAA, TXT, LOCAL";

impl DnsRecord {
    pub fn parse(line: &str) -> Result<DnsRecord, String> {
        let line = line.trim();
        let mut words = line.splitn(3, char::is_whitespace);
        let name = words.next().unwrap_or("").to_owned();
        let kind = words.next().unwrap_or("").to_ascii_uppercase();
        let rest = words.next().unwrap_or("").trim().to_owned();
        let bad = |why: &str| format!("`dns` record {line:?}: {why}");
        if name.is_empty() || kind.is_empty() {
            return Err(bad(&format!("write it `NAME TYPE VALUE` ({DNS_TYPES})")));
        }
        let data = match kind.as_str() {
            "MX" => {
                let mut parts = rest.split_whitespace();
                let (Some(pref), Some(exchange), None) = (parts.next(), parts.next(), parts.next())
                else {
                    return Err(bad("an MX record is `NAME MX PREFERENCE EXCHANGE`"));
                };
                let preference = pref
                    .parse()
                    .map_err(|_| bad("the preference is a number from 0 to 65535"))?;
                DnsData::Mx {
                    preference,
                    exchange: exchange.to_owned(),
                }
            }
            "A" | "AAAA" if !rest.is_empty() && !rest.contains(char::is_whitespace) => {
                DnsData::Address(rest)
            }
            "A" | "AAAA" => return Err(bad("an address record is `NAME A ADDRESS`")),
            "TXT" if !rest.is_empty() => DnsData::Txt(rest),
            "TXT" => return Err(bad("a TXT record needs its text")),
            "LOCAL" if rest.is_empty() => DnsData::Local,
            "LOCAL" => return Err(bad("`NAME LOCAL` takes no value")),
            other => return Err(bad(&format!("unknown type {other}; known: {DNS_TYPES}"))),
        };
        Ok(DnsRecord { name, data })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StartStep {
    /// The name `kill` and failure reports use (`as`).
    pub name: String,
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Text the program prints (standard output or error) once it is ready; the step waits
    /// for it. Without it, the step returns once the program has started.
    pub ready: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunStep {
    /// Arguments after the binary's name.
    pub args: Vec<String>,
    pub stdin: Option<String>,
    /// Extra environment for this run only.
    pub env: BTreeMap<String, String>,
    pub expect: Expect,
    pub again: Again,
}

/// What a `run` or `exec` step keeps and repeats: values captured from its JSON output for
/// `{var:NAME}` in later steps, and how long it is run again until its checks pass.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Again {
    /// `capture = { NAME = "/json/pointer" }`.
    pub capture: BTreeMap<String, String>,
    /// `within = SECONDS`: repeated until it passes or this long has gone by.
    pub within: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExecStep {
    /// The program (an absolute path, or a name looked up in `PATH`) and its arguments.
    pub argv: Vec<String>,
    pub stdin: Option<String>,
    pub env: BTreeMap<String, String>,
    /// Overrides the runner's `--timeout` for this program.
    pub timeout: Option<Duration>,
    pub expect: Expect,
    pub again: Again,
}

/// What a run must produce. Unset fields are not checked, except the exit code (default 0).
#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    pub exit: i32,
    pub stdout: Option<String>,
    pub stdout_contains: Vec<String>,
    pub stderr: Option<String>,
    pub stderr_contains: Vec<String>,
    /// stdout parsed as JSON must contain this (see [`crate::json::contains`]).
    pub json: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct FilesStep {
    pub exists: Vec<String>,
    pub absent: Vec<String>,
    /// Path to the permission bits it must have (`0o600`).
    pub mode: BTreeMap<String, u32>,
    /// Directory to the number of regular files directly in it.
    pub count: BTreeMap<String, u64>,
    /// File (or directory: any file directly in it) to texts it must contain.
    pub file_contains: BTreeMap<String, Vec<String>>,
    /// File (or directory: every file directly in it) to texts it must not contain.
    pub file_lacks: BTreeMap<String, Vec<String>>,
    /// `within = SECONDS`: checked again until they hold or this long has gone by (what a
    /// server delivers in the background arrives a little later).
    pub within: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PutStep {
    pub path: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StopStep {
    /// The server's exit code; default 0.
    pub exit: i32,
    /// Texts the rest of its standard output (after `ready`) must contain.
    pub stdout_contains: Vec<String>,
    pub log: LogCheck,
}

/// Checks of the server's log (its standard error).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogCheck {
    /// Each must appear; the runner waits a little for it, as logs are written as things happen.
    pub contains: Vec<String>,
    /// None may appear in what has been logged so far.
    pub lacks: Vec<String>,
}

/// One action on a named connection.
#[derive(Debug, Clone, PartialEq)]
pub struct WireStep {
    /// The connection's name (`as`), `main` by default.
    pub conn: String,
    pub action: WireAction,
}

#[derive(Debug, Clone, PartialEq)]
pub enum WireAction {
    /// Open a connection to a listener (TLS at once for implicit-TLS ones) and read the
    /// greeting.
    Connect { listener: String, greeting: Replies },
    /// Send these bytes exactly; then read replies unless `replies` is `None` (`read = false`).
    Send {
        bytes: String,
        replies: Option<Replies>,
        /// Then the server must close the connection.
        closed: bool,
        /// Then nothing more may arrive for a moment.
        quiet: bool,
    },
    /// The TLS handshake, after the server agreed to STARTTLS or STLS.
    StartTls { quiet: bool },
    /// Drop the connection without a word.
    Close,
    /// The server closes the connection; what it sends before must match `before`.
    ExpectClosed { before: ReplyChecks },
}

/// Which replies to read, and what they must be.
#[derive(Debug, Clone, PartialEq)]
pub struct Replies {
    /// How many replies to read (pipelined commands), at least 1.
    pub count: usize,
    /// POP3: a `+OK` reply goes on to the line `.` (LIST, RETR, CAPA, …).
    pub multiline: bool,
    /// Each reply must begin with the matching prefix, in order (`expect_all`).
    pub each: Vec<String>,
    /// The last reply must begin with this (`expect`).
    pub last: Option<String>,
    pub checks: ReplyChecks,
}

/// Substring checks over the text of every reply a step read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReplyChecks {
    pub contains: Vec<String>,
    pub lacks: Vec<String>,
}

/// The listeners `dirmail serve` prints: what each speaks, and whether it starts with TLS.
pub const LISTENERS: [(&str, Protocol, bool); 5] = [
    ("smtp", Protocol::Smtp, false),
    ("submission", Protocol::Smtp, false),
    ("smtps", Protocol::Smtp, true),
    ("pop3", Protocol::Pop3, false),
    ("pop3s", Protocol::Pop3, true),
];

/// How replies are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Smtp,
    Pop3,
}

/// The protocol of a listener, and whether it starts with TLS.
pub fn listener(name: &str) -> Option<(Protocol, bool)> {
    LISTENERS
        .iter()
        .find(|(n, ..)| *n == name)
        .map(|&(_, protocol, tls)| (protocol, tls))
}

/// A scenario file that could not be read or is malformed.
#[derive(Debug, Clone)]
pub struct LoadError {
    pub path: PathBuf,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for LoadError {}

impl Scenario {
    /// Reads and checks one scenario file; `root` is the scenarios directory it is named from.
    pub fn load(root: &Path, path: &Path) -> Result<Scenario, LoadError> {
        let error = |message: String| LoadError {
            path: path.to_owned(),
            message,
        };
        let text = fs::read_to_string(path).map_err(|e| error(format!("cannot read: {e}")))?;
        let id = scenario_id(root, path).ok_or_else(|| {
            error(format!(
                "not a .toml file under the scenarios directory {}",
                root.display()
            ))
        })?;
        let mut scenario = Scenario::parse(&id, &text).map_err(error)?;
        scenario.path = path.to_owned();
        Ok(scenario)
    }

    /// Parses and checks scenario text. `path` is set to the id; [`Scenario::load`] sets the
    /// real one.
    pub fn parse(id: &str, text: &str) -> Result<Scenario, String> {
        let raw: RawScenario = toml::from_str(text).map_err(|e| e.to_string())?;
        let title = non_empty("title", raw.title)?;
        let seed = non_empty("seed", raw.seed)?;
        if raw.rules.is_empty() {
            return Err(
                "`rules` must name at least one rule of docs/spec.md, e.g. [\"R3\"]".into(),
            );
        }
        for rule in &raw.rules {
            check_rule(rule)?;
        }
        let xfail = match raw.xfail {
            Some(reason) => Some(non_empty("xfail", reason)?),
            None => None,
        };
        if raw.steps.is_empty() {
            return Err("a scenario needs at least one [[step]]".into());
        }
        let needs_samba = match raw.directory.as_deref() {
            None => false,
            Some("samba") => true,
            Some(other) => {
                return Err(format!(
                    "directory = {other:?}: the only directory a scenario can ask for is \"samba\""
                ));
            }
        };
        let steps = raw
            .steps
            .into_iter()
            .enumerate()
            .map(|(i, step)| check_step(step).map_err(|e| format!("step {}: {e}", i + 1)))
            .collect::<Result<Vec<_>, _>>()?;
        let config = if steps.iter().any(|s| matches!(s, Step::Serve)) {
            Some(crate::serve::merged_config(raw.config.as_deref())?)
        } else {
            raw.config
        };
        Ok(Scenario {
            id: id.to_owned(),
            path: PathBuf::from(id),
            title,
            rules: raw.rules,
            seed,
            xfail,
            needs_samba,
            config,
            steps,
        })
    }

    /// The command-line filter: a substring of the id, or a rule the scenario covers
    /// (whole name, any case, so `R1` does not also select `R10`).
    pub fn matches(&self, filter: &str) -> bool {
        self.id.contains(filter) || self.rules.iter().any(|r| r.eq_ignore_ascii_case(filter))
    }
}

/// Loads every `*.toml` under `root` (recursively), sorted by id. All malformed files are
/// reported, not just the first.
pub fn load_dir(root: &Path) -> Result<Vec<Scenario>, Vec<LoadError>> {
    let mut files = Vec::new();
    if let Err(e) = collect_toml(root, &mut files) {
        return Err(vec![LoadError {
            path: root.to_owned(),
            message: format!("cannot list scenarios: {e}"),
        }]);
    }
    let mut scenarios = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        match Scenario::load(root, &file) {
            Ok(s) => scenarios.push(s),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    scenarios.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(scenarios)
}

fn collect_toml(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect_toml(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "toml") {
            out.push(path);
        }
    }
    Ok(())
}

/// `root/admin/r3-x.toml` → `admin/r3-x`.
fn scenario_id(root: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(root).ok()?.with_extension("");
    let parts = relative
        .components()
        .map(|c| match c {
            Component::Normal(part) => part.to_str(),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    (!parts.is_empty()).then(|| parts.join("/"))
}

fn non_empty(key: &str, value: String) -> Result<String, String> {
    if value.trim().is_empty() {
        Err(format!("`{key}` must not be empty"))
    } else {
        Ok(value)
    }
}

/// A numbered rule, `R` then a number without leading zeros (`R3`, `R27`), or, for behaviour
/// docs/spec.md states without a number, its section (`§5`, `§5.3`).
fn check_rule(rule: &str) -> Result<(), String> {
    let number =
        |n: &str| !n.is_empty() && !n.starts_with('0') && n.bytes().all(|b| b.is_ascii_digit());
    let well_formed = match (rule.strip_prefix('R'), rule.strip_prefix('§')) {
        (Some(n), _) => number(n),
        (_, Some(section)) => section.split('.').all(number),
        _ => false,
    };
    if well_formed {
        Ok(())
    } else {
        Err(format!(
            "rule `{rule}` is neither R<number> (R3) nor a section of docs/spec.md (§5.3)"
        ))
    }
}

/// A path a step may touch: relative, and never climbing out of the scenario's directory,
/// so a scenario cannot disturb the machine it runs on.
fn check_relative_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("empty path".into());
    }
    let escapes = Path::new(path)
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if escapes {
        Err(format!(
            "path `{path}` must be relative to the scenario directory, without `..`"
        ))
    } else {
        Ok(())
    }
}

/// A TOML table or array is the expected value itself; a TOML string is JSON text, which is
/// how a scenario states what TOML cannot spell, such as `null`.
fn json_expectation(value: Value) -> Result<Value, String> {
    match value {
        Value::String(text) => serde_json::from_str(&text)
            .map_err(|e| format!("`json` is a string, so it must be JSON text, but: {e}")),
        other => Ok(other),
    }
}

/// Octal permission bits as written in a scenario: `"600"`, `"0700"`, `"2755"`.
fn parse_mode(text: &str) -> Result<u32, String> {
    let valid = (3..=4).contains(&text.len()) && text.bytes().all(|b| (b'0'..=b'7').contains(&b));
    if !valid {
        return Err(format!(
            "mode `{text}` is not 3 or 4 octal digits, e.g. \"600\""
        ));
    }
    u32::from_str_radix(text, 8).map_err(|e| format!("mode `{text}`: {e}"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    title: String,
    rules: Vec<String>,
    seed: String,
    xfail: Option<String>,
    directory: Option<String>,
    config: Option<String>,
    #[serde(default, rename = "step")]
    steps: Vec<toml::Table>,
}

/// The kinds of step, each with the keys that make a step that kind (`primary`) and every key
/// it accepts. `expect_closed` and the `log_*` keys make a kind only when no other kind's key
/// is present, since `send` and `stop` accept them too.
struct Kind {
    name: &'static str,
    primary: &'static [&'static str],
    keys: &'static [&'static str],
}

const RUN_KEYS: &[&str] = &[
    "stdin",
    "env",
    "exit",
    "stdout",
    "stdout_contains",
    "stderr",
    "stderr_contains",
    "json",
    "capture",
    "within",
];

const KINDS: &[Kind] = &[
    Kind {
        name: "run",
        primary: &["run"],
        keys: RUN_KEYS,
    },
    Kind {
        name: "exec",
        primary: &["exec"],
        keys: &[
            "stdin",
            "env",
            "exit",
            "stdout",
            "stdout_contains",
            "stderr",
            "stderr_contains",
            "json",
            "timeout",
            "capture",
            "within",
        ],
    },
    Kind {
        name: "files",
        primary: &[
            "exists",
            "absent",
            "mode",
            "count",
            "file_contains",
            "file_lacks",
        ],
        keys: &["within"],
    },
    Kind {
        name: "put",
        primary: &["put"],
        keys: &[],
    },
    Kind {
        name: "serve",
        primary: &["serve"],
        keys: &[],
    },
    Kind {
        name: "stop",
        primary: &["stop"],
        keys: &["exit", "stdout_contains", "log_contains", "log_lacks"],
    },
    Kind {
        name: "connect",
        primary: &["connect"],
        keys: &["as", "expect", "expect_contains", "expect_lacks"],
    },
    Kind {
        name: "send",
        primary: &["send"],
        keys: &[
            "as",
            "read",
            "replies",
            "multiline",
            "expect",
            "expect_all",
            "expect_contains",
            "expect_lacks",
            "expect_closed",
            "expect_quiet",
        ],
    },
    Kind {
        name: "starttls",
        primary: &["starttls"],
        keys: &["as", "expect_quiet"],
    },
    Kind {
        name: "close",
        primary: &["close"],
        keys: &["as"],
    },
    Kind {
        name: "dns",
        primary: &["dns"],
        keys: &[],
    },
    Kind {
        name: "start",
        primary: &["start"],
        keys: &["as", "env", "ready"],
    },
    Kind {
        name: "kill",
        primary: &["kill"],
        keys: &[],
    },
];

/// Kinds made by keys that other kinds accept as well.
const WEAK_KINDS: &[Kind] = &[
    Kind {
        name: "expect_closed",
        primary: &["expect_closed"],
        keys: &["as", "expect_contains", "expect_lacks"],
    },
    Kind {
        name: "log",
        primary: &["log_contains", "log_lacks"],
        keys: &[],
    },
];

impl Kind {
    fn accepts(&self, key: &str) -> bool {
        self.primary.contains(&key) || self.keys.contains(&key)
    }
}

/// Which kind a step is, from its keys; every key must belong to that kind.
fn kind_of(table: &toml::Table) -> Result<&'static Kind, String> {
    let has = |kind: &Kind| kind.primary.iter().any(|k| table.contains_key(*k));
    let strong: Vec<&Kind> = KINDS.iter().filter(|k| has(k)).collect();
    let kind = match strong.as_slice() {
        [kind] => *kind,
        [] => match WEAK_KINDS.iter().find(|k| has(k)) {
            Some(kind) => kind,
            None => {
                let names: Vec<&str> = KINDS
                    .iter()
                    .chain(WEAK_KINDS)
                    .map(|k| k.primary[0])
                    .collect();
                return Err(format!(
                    "a step needs one of `{}` (or another file check)",
                    names.join("`, `")
                ));
            }
        },
        several => {
            let names: Vec<&str> = several.iter().map(|k| k.name).collect();
            return Err(format!(
                "a step is one kind only, but this one has {}; split it into several [[step]]s",
                names.join(" and ")
            ));
        }
    };
    for key in table.keys() {
        if kind.accepts(key) {
            continue;
        }
        let owners: Vec<String> = KINDS
            .iter()
            .chain(WEAK_KINDS)
            .filter(|k| k.accepts(key))
            .map(|k| format!("`{}`", k.name))
            .collect();
        return Err(if owners.is_empty() {
            format!("unknown key `{key}` in a `{}` step", kind.name)
        } else {
            format!(
                "`{key}` belongs to a {} step, not to a `{}` step",
                owners.join(" or "),
                kind.name
            )
        });
    }
    Ok(kind)
}

/// The union of every step kind's keys; [`check_step`] sorts out which kind it is.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    run: Option<RawCommand>,
    exec: Option<Vec<String>>,
    stdin: Option<String>,
    env: Option<BTreeMap<String, String>>,
    exit: Option<i32>,
    stdout: Option<String>,
    stdout_contains: Option<Vec<String>>,
    stderr: Option<String>,
    stderr_contains: Option<Vec<String>>,
    json: Option<Value>,
    timeout: Option<f64>,
    capture: Option<BTreeMap<String, String>>,
    within: Option<f64>,

    exists: Option<Vec<String>>,
    absent: Option<Vec<String>>,
    mode: Option<BTreeMap<String, String>>,
    count: Option<BTreeMap<String, u64>>,
    file_contains: Option<BTreeMap<String, Vec<String>>>,
    file_lacks: Option<BTreeMap<String, Vec<String>>>,

    put: Option<RawPut>,

    serve: Option<bool>,
    stop: Option<bool>,
    log_contains: Option<Vec<String>>,
    log_lacks: Option<Vec<String>>,

    #[serde(rename = "as")]
    conn: Option<String>,
    connect: Option<String>,
    send: Option<String>,
    starttls: Option<bool>,
    close: Option<bool>,
    expect_closed: Option<bool>,
    read: Option<bool>,
    replies: Option<usize>,
    multiline: Option<bool>,
    expect: Option<String>,
    expect_all: Option<Vec<String>>,
    expect_contains: Option<Vec<String>>,
    expect_lacks: Option<Vec<String>>,
    expect_quiet: Option<bool>,

    dns: Option<Vec<String>>,
    start: Option<Vec<String>>,
    ready: Option<String>,
    kill: Option<String>,
}

/// `run = "add example.jp"` or `run = ["add", "example.jp"]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawCommand {
    Line(String),
    Args(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPut {
    path: String,
    text: String,
}

fn check_step(table: toml::Table) -> Result<Step, String> {
    let kind = kind_of(&table)?.name;
    let raw: RawStep = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| e.to_string().trim().replace('\n', " "))?;
    raw.check(kind)
}

/// `KEY = SECONDS`, a positive number.
fn seconds(key: &str, value: Option<f64>) -> Result<Option<Duration>, String> {
    match value {
        Some(secs) if secs > 0.0 && secs.is_finite() && secs < 86_400.0 => {
            Ok(Some(Duration::from_secs_f64(secs)))
        }
        Some(secs) => Err(format!(
            "`{key} = {secs}` is not a positive number of seconds"
        )),
        None => Ok(None),
    }
}

/// A switch such as `serve = true`: only `true` means anything.
fn switch(key: &str, value: Option<bool>) -> Result<bool, String> {
    match value {
        Some(false) => Err(format!(
            "`{key} = false` means nothing; leave the key out or write `{key} = true`"
        )),
        Some(true) => Ok(true),
        None => Ok(false),
    }
}

impl RawStep {
    fn check(self, kind: &str) -> Result<Step, String> {
        match kind {
            "run" => self.run_step(),
            "exec" => self.exec_step(),
            "files" => self.files_step(),
            "put" => {
                let put = self.put.ok_or("`put` is missing")?;
                check_relative_path(&put.path)?;
                Ok(Step::Put(PutStep {
                    path: put.path,
                    text: put.text,
                }))
            }
            "serve" => {
                switch("serve", self.serve)?;
                Ok(Step::Serve)
            }
            "stop" => {
                switch("stop", self.stop)?;
                Ok(Step::Stop(StopStep {
                    exit: self.exit.unwrap_or(0),
                    stdout_contains: self.stdout_contains.unwrap_or_default(),
                    log: LogCheck {
                        contains: self.log_contains.unwrap_or_default(),
                        lacks: self.log_lacks.unwrap_or_default(),
                    },
                }))
            }
            "log" => {
                let log = LogCheck {
                    contains: self.log_contains.unwrap_or_default(),
                    lacks: self.log_lacks.unwrap_or_default(),
                };
                if log.contains.is_empty() && log.lacks.is_empty() {
                    return Err("the log checks of this step are all empty".into());
                }
                Ok(Step::Log(log))
            }
            "dns" => {
                let lines = self.dns.unwrap_or_default();
                if lines.is_empty() {
                    return Err("`dns` lists no records".into());
                }
                let records = lines
                    .iter()
                    .map(|line| DnsRecord::parse(line))
                    .collect::<Result<_, _>>()?;
                Ok(Step::Dns(records))
            }
            "start" => {
                let argv = self.start.unwrap_or_default();
                if argv.first().is_none_or(|program| program.is_empty()) {
                    return Err("`start` needs a program: start = [\"python3\", \"…\"]".into());
                }
                let name = self.conn.unwrap_or_default();
                if name.is_empty() || name == "serve" {
                    return Err(
                        "`start` needs a name with `as` (not \"serve\", the server's)".into(),
                    );
                }
                Ok(Step::Start(StartStep {
                    name,
                    argv,
                    env: self.env.unwrap_or_default(),
                    ready: self.ready,
                }))
            }
            "kill" => match self.kill {
                Some(name) if !name.is_empty() => Ok(Step::Kill(name)),
                _ => Err("`kill` names a started program, or \"serve\"".into()),
            },
            _ => self.wire_step(),
        }
    }

    fn again(&mut self) -> Result<Again, String> {
        let capture = self.capture.take().unwrap_or_default();
        for (name, pointer) in &capture {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!(
                    "`capture`: {name:?} is not a name (letters, digits, _)"
                ));
            }
            if !pointer.is_empty() && !pointer.starts_with('/') {
                return Err(format!(
                    "`capture`: {pointer:?} is not a JSON pointer (\"/entries/0/id\")"
                ));
            }
        }
        Ok(Again {
            capture,
            within: seconds("within", self.within.take())?,
        })
    }

    fn expect(&mut self) -> Result<Expect, String> {
        Ok(Expect {
            exit: self.exit.unwrap_or(0),
            stdout: self.stdout.take(),
            stdout_contains: self.stdout_contains.take().unwrap_or_default(),
            stderr: self.stderr.take(),
            stderr_contains: self.stderr_contains.take().unwrap_or_default(),
            json: self.json.take().map(json_expectation).transpose()?,
        })
    }

    fn run_step(mut self) -> Result<Step, String> {
        let args = match self.run.take() {
            Some(RawCommand::Line(line)) => shell_words::split(&line)
                .map_err(|e| format!("`run = {line:?}` cannot be split: {e}"))?,
            Some(RawCommand::Args(args)) => args,
            None => Vec::new(),
        };
        if args.is_empty() {
            return Err("`run` is empty".into());
        }
        Ok(Step::Run(RunStep {
            args,
            stdin: self.stdin.take(),
            env: self.env.take().unwrap_or_default(),
            expect: self.expect()?,
            again: self.again()?,
        }))
    }

    fn exec_step(mut self) -> Result<Step, String> {
        let argv = self.exec.take().unwrap_or_default();
        if argv.first().is_none_or(|program| program.is_empty()) {
            return Err("`exec` needs a program: exec = [\"/usr/bin/python3\", \"…\"]".into());
        }
        let timeout = seconds("timeout", self.timeout.take())?;
        Ok(Step::Exec(ExecStep {
            argv,
            stdin: self.stdin.take(),
            env: self.env.take().unwrap_or_default(),
            timeout,
            expect: self.expect()?,
            again: self.again()?,
        }))
    }

    fn files_step(self) -> Result<Step, String> {
        let mut files = FilesStep {
            exists: self.exists.unwrap_or_default(),
            absent: self.absent.unwrap_or_default(),
            count: self.count.unwrap_or_default(),
            file_contains: self.file_contains.unwrap_or_default(),
            file_lacks: self.file_lacks.unwrap_or_default(),
            within: seconds("within", self.within)?,
            ..FilesStep::default()
        };
        for (path, bits) in self.mode.unwrap_or_default() {
            check_relative_path(&path)?;
            files.mode.insert(path, parse_mode(&bits)?);
        }
        let paths = files
            .exists
            .iter()
            .chain(&files.absent)
            .chain(files.count.keys())
            .chain(files.file_contains.keys())
            .chain(files.file_lacks.keys());
        for path in paths {
            check_relative_path(path)?;
        }
        let empty = files.exists.is_empty()
            && files.absent.is_empty()
            && files.mode.is_empty()
            && files.count.is_empty()
            && files.file_contains.is_empty()
            && files.file_lacks.is_empty();
        if empty {
            return Err("the file checks of this step are all empty".into());
        }
        Ok(Step::Files(files))
    }

    fn reply_checks(&mut self) -> ReplyChecks {
        ReplyChecks {
            contains: self.expect_contains.take().unwrap_or_default(),
            lacks: self.expect_lacks.take().unwrap_or_default(),
        }
    }

    fn wire_step(mut self) -> Result<Step, String> {
        let conn = self.conn.take().unwrap_or_else(|| "main".to_owned());
        if conn.is_empty() {
            return Err("`as` must name the connection".into());
        }
        let action = if let Some(name) = self.connect.take() {
            if listener(&name).is_none() {
                let names: Vec<&str> = LISTENERS.iter().map(|l| l.0).collect();
                return Err(format!(
                    "`connect = {name:?}`: no such listener; dirmail serve has {}",
                    names.join(", ")
                ));
            }
            WireAction::Connect {
                listener: name,
                greeting: Replies {
                    count: 1,
                    multiline: false,
                    each: Vec::new(),
                    last: self.expect.take(),
                    checks: self.reply_checks(),
                },
            }
        } else if let Some(bytes) = self.send.take() {
            self.send_action(bytes)?
        } else if switch("starttls", self.starttls)? {
            WireAction::StartTls {
                quiet: switch("expect_quiet", self.expect_quiet)?,
            }
        } else if switch("close", self.close)? {
            WireAction::Close
        } else {
            switch("expect_closed", self.expect_closed)?;
            WireAction::ExpectClosed {
                before: self.reply_checks(),
            }
        };
        Ok(Step::Wire(WireStep { conn, action }))
    }

    fn send_action(&mut self, bytes: String) -> Result<WireAction, String> {
        if bytes.is_empty() {
            return Err("`send` is empty".into());
        }
        let each = self.expect_all.take().unwrap_or_default();
        let count = match (self.replies, each.len()) {
            (Some(0), _) => return Err("`replies` must be at least 1".into()),
            (Some(n), 0) => n,
            (Some(n), m) if n != m => {
                return Err(format!(
                    "`replies = {n}` but `expect_all` lists {m} replies"
                ));
            }
            (_, 0) => 1,
            (_, m) => m,
        };
        let last = self.expect.take();
        let checks = self.reply_checks();
        let multiline = switch("multiline", self.multiline)?;
        let checked = last.is_some()
            || !each.is_empty()
            || !checks.contains.is_empty()
            || !checks.lacks.is_empty()
            || self.replies.is_some()
            || multiline;
        let replies = match self.read {
            Some(false) if checked => {
                return Err(
                    "`read = false` sends without reading, so it takes no reply checks".into(),
                );
            }
            Some(false) => None,
            _ => Some(Replies {
                count,
                multiline,
                each,
                last,
                checks,
            }),
        };
        Ok(WireAction::Send {
            bytes,
            replies,
            closed: switch("expect_closed", self.expect_closed)?,
            quiet: switch("expect_quiet", self.expect_quiet)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HEADER: &str = r#"
title = "t"
rules = ["R1", "R27"]
seed = "004 §2.1"
"#;

    fn parse(steps: &str) -> Result<Scenario, String> {
        Scenario::parse("x/y", &format!("{HEADER}{steps}"))
    }

    #[test]
    fn a_full_scenario_parses() {
        let s = parse(
            r#"
xfail = "not yet"
config = """
[server]
hostname = "mail.example.jp"
"""

[[step]]
run = "add 'a b@example.jp' --create-user pw"
stdin = "in"
exit = 3
stdout = "out"
stdout_contains = ["o"]
stderr = "err"
stderr_contains = ["e"]
json = { ok = false, rule = "R3" }
env = { LANG = "C" }

[[step]]
run = ["get", "authentication"]

[[step]]
exists = ["dirmail-data/mail"]
absent = ["dirmail-data/mail/x"]
mode = { "dirmail-data/dirmail.db" = "600" }

[[step]]
put = { path = "a/b/1.test", text = "Subject: x\r\n\r\nhi\r\n" }
"#,
        )
        .unwrap();
        assert_eq!(s.id, "x/y");
        assert_eq!(s.rules, ["R1", "R27"]);
        assert_eq!(s.xfail.as_deref(), Some("not yet"));
        assert!(s.config.unwrap().starts_with("[server]\n"));
        let Step::Run(run) = &s.steps[0] else {
            panic!("not a run step: {:?}", s.steps[0]);
        };
        assert_eq!(run.args, ["add", "a b@example.jp", "--create-user", "pw"]);
        assert_eq!(run.expect.exit, 3);
        assert_eq!(run.expect.json, Some(json!({"ok": false, "rule": "R3"})));
        assert_eq!(run.env["LANG"], "C");
        let Step::Run(run) = &s.steps[1] else {
            panic!("not a run step");
        };
        assert_eq!(run.args, ["get", "authentication"]);
        assert_eq!(run.expect.exit, 0);
        assert_eq!(run.stdin, None);
        assert_eq!(
            s.steps[2],
            Step::Files(FilesStep {
                exists: vec!["dirmail-data/mail".into()],
                absent: vec!["dirmail-data/mail/x".into()],
                mode: BTreeMap::from([("dirmail-data/dirmail.db".into(), 0o600)]),
                ..FilesStep::default()
            })
        );
        assert_eq!(
            s.steps[3],
            Step::Put(PutStep {
                path: "a/b/1.test".into(),
                text: "Subject: x\r\n\r\nhi\r\n".into(),
            })
        );
    }

    #[test]
    fn run_lines_split_like_a_shell() {
        let split = |line: &str| match parse(&format!("[[step]]\nrun = {line:?}\n")) {
            Ok(s) => match &s.steps[0] {
                Step::Run(run) => Ok(run.args.clone()),
                other => panic!("not a run step: {other:?}"),
            },
            Err(e) => Err(e),
        };
        assert_eq!(split("add example.jp").unwrap(), ["add", "example.jp"]);
        assert_eq!(
            split(r#"changepwd "user 1@example.jp" 'p"w d'"#).unwrap(),
            ["changepwd", "user 1@example.jp", "p\"w d"]
        );
        assert_eq!(split(r"add a\ b").unwrap(), ["add", "a b"]);
        assert_eq!(
            split("add /createuser:x  /user:y").unwrap(),
            ["add", "/createuser:x", "/user:y"]
        );
        assert!(
            split("add 'unterminated")
                .unwrap_err()
                .contains("cannot be split")
        );
        assert!(split("   ").unwrap_err().contains("empty"));
    }

    #[test]
    fn json_may_be_written_as_json_text() {
        let s = parse("[[step]]\nrun = \"x\"\njson = '{\"ok\": false, \"rule\": null}'\n").unwrap();
        let Step::Run(run) = &s.steps[0] else {
            panic!("not a run step");
        };
        assert_eq!(run.expect.json, Some(json!({"ok": false, "rule": null})));
        let err = parse("[[step]]\nrun = \"x\"\njson = '{ok = true}'\n").unwrap_err();
        assert!(err.contains("JSON text"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = parse("[[step]]\nrun = \"x\"\nstdot = \"typo\"\n").unwrap_err();
        assert!(err.contains("stdot"), "{err}");
        let err = Scenario::parse("x", &format!("{HEADER}colour = 1\n[[step]]\nrun = \"x\"\n"))
            .unwrap_err();
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn header_is_checked() {
        let steps = "[[step]]\nrun = \"x\"\n";
        let with = |header: &str| Scenario::parse("x", &format!("{header}{steps}"));
        assert!(
            with("title = \"t\"\nrules = []\nseed = \"s\"\n")
                .unwrap_err()
                .contains("rules")
        );
        for good in ["R3", "R27", "§5", "§5.3"] {
            assert!(
                with(&format!(
                    "title = \"t\"\nrules = [\"{good}\"]\nseed = \"s\"\n"
                ))
                .is_ok()
            );
        }
        for bad in ["r3", "R", "R03", "R3a", "3", "§", "§5.", "§05", "§a"] {
            let err = with(&format!(
                "title = \"t\"\nrules = [\"{bad}\"]\nseed = \"s\"\n"
            ))
            .unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
        assert!(
            with("title = \"t\"\nrules = [\"R1\"]\nseed = \" \"\n")
                .unwrap_err()
                .contains("seed")
        );
        assert!(
            with("title = \"t\"\nrules = [\"R1\"]\n")
                .unwrap_err()
                .contains("seed")
        );
        assert!(
            with("title = \"\"\nrules = [\"R1\"]\nseed = \"s\"\n")
                .unwrap_err()
                .contains("title")
        );
        assert!(
            Scenario::parse("x", HEADER)
                .unwrap_err()
                .contains("at least one")
        );
    }

    #[test]
    fn a_step_is_exactly_one_kind() {
        let err = parse("[[step]]\nrun = \"x\"\nexists = [\"a\"]\n").unwrap_err();
        assert!(
            err.starts_with("step 1:") && err.contains("run and files"),
            "{err}"
        );
        let err = parse("[[step]]\nrun = \"x\"\n[[step]]\nexit = 1\n").unwrap_err();
        assert!(err.starts_with("step 2:"), "{err}");
        let err = parse("[[step]]\nexists = [\"a\"]\nstdout = \"x\"\n").unwrap_err();
        assert!(
            err.contains("`stdout` belongs to a `run` or `exec` step, not to a `files` step"),
            "{err}"
        );
        let err = parse("[[step]]\nexists = []\n").unwrap_err();
        assert!(err.contains("empty"), "{err}");
    }

    #[test]
    fn paths_and_modes_are_checked() {
        for bad in ["/etc/passwd", "../x", "a/../../x", ""] {
            let err = parse(&format!("[[step]]\nexists = [{bad:?}]\n")).unwrap_err();
            assert!(err.contains("path"), "{bad}: {err}");
            let err = parse(&format!(
                "[[step]]\nput = {{ path = {bad:?}, text = \"\" }}\n"
            ))
            .unwrap_err();
            assert!(err.contains("path"), "{bad}: {err}");
        }
        for bad in ["60", "800", "12345", "rw-"] {
            let err = parse(&format!("[[step]]\nmode = {{ a = {bad:?} }}\n")).unwrap_err();
            assert!(err.contains("mode"), "{bad}: {err}");
        }
        let s = parse("[[step]]\nmode = { \"./a\" = \"0755\", b = \"2700\" }\n").unwrap();
        let Step::Files(files) = &s.steps[0] else {
            panic!("not a files step");
        };
        assert_eq!(files.mode["./a"], 0o755);
        for bad in [
            "count = { \"../x\" = 1 }",
            "file_contains = { \"/x\" = [\"a\"] }",
        ] {
            let err = parse(&format!("[[step]]\n{bad}\n")).unwrap_err();
            assert!(err.contains("path"), "{bad}: {err}");
        }
        assert_eq!(files.mode["b"], 0o2700);
    }

    #[test]
    fn filters_match_ids_and_whole_rules() {
        let s = parse("[[step]]\nrun = \"x\"\n").unwrap();
        assert!(s.matches("x/"));
        assert!(s.matches("R1"));
        assert!(s.matches("r27"));
        assert!(!s.matches("R2"));
        assert!(!s.matches("R10"));
    }

    #[test]
    fn ids_come_from_the_relative_path() {
        let root = Path::new("/f/scenarios");
        assert_eq!(
            scenario_id(root, Path::new("/f/scenarios/admin/r3-x.toml")).as_deref(),
            Some("admin/r3-x")
        );
        assert_eq!(scenario_id(root, Path::new("/elsewhere/a.toml")), None);
    }

    fn step(text: &str) -> Result<Step, String> {
        parse(&format!("[[step]]\n{text}\n")).map(|s| s.steps[0].clone())
    }

    fn wire(text: &str) -> WireStep {
        match step(text) {
            Ok(Step::Wire(wire)) => wire,
            other => panic!("not a wire step: {other:?}"),
        }
    }

    #[test]
    fn server_steps_parse() {
        assert_eq!(step("serve = true").unwrap(), Step::Serve);
        assert!(step("serve = false").unwrap_err().contains("means nothing"));
        assert_eq!(
            step("stop = true\nexit = 0\nstdout_contains = [\"stopped\"]\nlog_lacks = [\"pw\"]")
                .unwrap(),
            Step::Stop(StopStep {
                exit: 0,
                stdout_contains: vec!["stopped".into()],
                log: LogCheck {
                    contains: vec![],
                    lacks: vec!["pw".into()],
                },
            })
        );
        assert_eq!(
            step("log_contains = [\"pop3 login\"]").unwrap(),
            Step::Log(LogCheck {
                contains: vec!["pop3 login".into()],
                lacks: vec![],
            })
        );
        assert!(step("log_lacks = []").unwrap_err().contains("empty"));
        let err = step("serve = true\nexit = 1").unwrap_err();
        assert!(
            err.contains("`exit` belongs to a `run` or `exec` or `stop` step"),
            "{err}"
        );
    }

    #[test]
    fn exec_steps_parse() {
        let Step::Exec(exec) = step(
            "exec = [\"/usr/bin/python3\", \"{fixtures}/clients/x.py\", \"{port:pop3}\"]\n\
             stdin = \"in\"\ntimeout = 5\nexit = 1\nstdout_contains = [\"ok\"]\nenv = { HOME = \"{dir}\" }",
        )
        .unwrap() else {
            panic!("not an exec step");
        };
        assert_eq!(exec.argv[2], "{port:pop3}");
        assert_eq!(exec.timeout, Some(Duration::from_secs(5)));
        assert_eq!(exec.expect.exit, 1);
        assert_eq!(exec.env["HOME"], "{dir}");
        assert!(step("exec = []").unwrap_err().contains("needs a program"));
        assert!(
            step("exec = [\"x\"]\ntimeout = 0")
                .unwrap_err()
                .contains("timeout")
        );
        assert!(
            step("run = \"x\"\ntimeout = 3")
                .unwrap_err()
                .contains("`exec` step")
        );
    }

    #[test]
    fn outbound_steps_parse() {
        let Step::Dns(records) = step(
            "dns = [\"example.org MX 10 mx.example.org\", \"mx.example.org A {addr:mx}\", \
             \"nomail.example mx 0 .\", \"s._domainkey.example.jp TXT v=DKIM1; p=abc\", \
             \"gone.example LOCAL\"]",
        )
        .unwrap() else {
            panic!("not a dns step");
        };
        assert_eq!(
            records[0].data,
            DnsData::Mx {
                preference: 10,
                exchange: "mx.example.org".into()
            }
        );
        assert_eq!(records[1].data, DnsData::Address("{addr:mx}".into()));
        assert_eq!(records[3].data, DnsData::Txt("v=DKIM1; p=abc".into()));
        assert_eq!(records[4].data, DnsData::Local);
        for (bad, why) in [
            ("dns = []", "no records"),
            ("dns = [\"example.org\"]", "NAME TYPE VALUE"),
            ("dns = [\"example.org MX ten mx\"]", "preference"),
            ("dns = [\"example.org MX 10\"]", "PREFERENCE EXCHANGE"),
            ("dns = [\"example.org SRV 1 2 3 x\"]", "unknown type SRV"),
            ("dns = [\"example.org TXT\"]", "needs its text"),
        ] {
            assert!(step(bad).unwrap_err().contains(why), "{bad}");
        }

        let Step::Start(start) =
            step("start = [\"python3\", \"r.py\"]\nas = \"mx\"\nready = \"ready\"").unwrap()
        else {
            panic!("not a start step");
        };
        assert_eq!(
            (start.name.as_str(), start.ready.as_deref()),
            ("mx", Some("ready"))
        );
        assert!(step("start = [\"x\"]").unwrap_err().contains("`as`"));
        assert!(
            step("start = [\"x\"]\nas = \"serve\"")
                .unwrap_err()
                .contains("`as`")
        );
        assert_eq!(
            step("kill = \"serve\"").unwrap(),
            Step::Kill("serve".into())
        );
        assert!(step("kill = \"\"").is_err());

        let Step::Run(run) =
            step("run = \"queue list --json\"\ncapture = { id = \"/entries/0/id\" }\nwithin = 2.5")
                .unwrap()
        else {
            panic!("not a run step");
        };
        assert_eq!(run.again.capture["id"], "/entries/0/id");
        assert_eq!(run.again.within, Some(Duration::from_millis(2500)));
        assert!(
            step("run = \"x\"\ncapture = { id = \"entries\" }")
                .unwrap_err()
                .contains("JSON pointer")
        );
        assert!(
            step("run = \"x\"\ncapture = { \"a b\" = \"/x\" }")
                .unwrap_err()
                .contains("not a name")
        );
        assert!(
            step("run = \"x\"\nwithin = -1")
                .unwrap_err()
                .contains("within")
        );
        let Step::Files(files) = step("count = { \"a\" = 1 }\nwithin = 3").unwrap() else {
            panic!("not a files step");
        };
        assert_eq!(files.within, Some(Duration::from_secs(3)));
    }

    #[test]
    fn count_and_file_contents_parse() {
        let Step::Files(files) = step(
            "count = { \"d/new\" = 2 }\nfile_contains = { \"d/new\" = [\"Subject: x\"] }\n\
             file_lacks = { \"f\" = [\"MAIL FROM\"] }",
        )
        .unwrap() else {
            panic!("not a files step");
        };
        assert_eq!(files.count["d/new"], 2);
        assert_eq!(files.file_contains["d/new"], ["Subject: x"]);
        assert_eq!(files.file_lacks["f"], ["MAIL FROM"]);
    }

    #[test]
    fn connection_steps_parse() {
        assert_eq!(
            wire("connect = \"smtp\"\nexpect = \"220\""),
            WireStep {
                conn: "main".into(),
                action: WireAction::Connect {
                    listener: "smtp".into(),
                    greeting: Replies {
                        count: 1,
                        multiline: false,
                        each: vec![],
                        last: Some("220".into()),
                        checks: ReplyChecks::default(),
                    },
                },
            }
        );
        let err = step("connect = \"imap\"").unwrap_err();
        assert!(
            err.contains("no such listener") && err.contains("pop3s"),
            "{err}"
        );

        let send = wire(
            "send = \"EHLO x\\r\\nMAIL FROM:<a@x>\\r\\n\"\nas = \"c1\"\nexpect_all = [\"250\", \"250\"]\n\
             expect_contains = [\"PIPELINING\"]\nexpect_lacks = [\"AUTH\"]",
        );
        assert_eq!(send.conn, "c1");
        let WireAction::Send {
            bytes,
            replies: Some(replies),
            closed: false,
            quiet: false,
        } = send.action
        else {
            panic!("not a send that reads: {:?}", send.action);
        };
        assert_eq!(bytes, "EHLO x\r\nMAIL FROM:<a@x>\r\n");
        assert_eq!(replies.count, 2);
        assert_eq!(replies.each, ["250", "250"]);
        assert_eq!(replies.checks.contains, ["PIPELINING"]);

        let send = wire("send = \"LIST\\r\\n\"\nmultiline = true\nexpect = \"+OK\"\nreplies = 1");
        let WireAction::Send {
            replies: Some(replies),
            ..
        } = send.action
        else {
            panic!("not a send that reads");
        };
        assert!(replies.multiline);
        assert_eq!(replies.last.as_deref(), Some("+OK"));

        let send = wire("send = \"x\\r\\n\"\nread = false");
        assert!(matches!(
            send.action,
            WireAction::Send { replies: None, .. }
        ));
        // With no check at all, one reply is still read: it must come.
        let send = wire("send = \"NOOP\\r\\n\"");
        assert!(matches!(
            send.action,
            WireAction::Send {
                replies: Some(Replies { count: 1, .. }),
                ..
            }
        ));

        let err = step("send = \"x\\r\\n\"\nread = false\nexpect = \"250\"").unwrap_err();
        assert!(err.contains("read = false"), "{err}");
        let err = step("send = \"x\"\nreplies = 3\nexpect_all = [\"250\"]").unwrap_err();
        assert!(err.contains("expect_all"), "{err}");
        assert!(
            step("send = \"x\"\nreplies = 0")
                .unwrap_err()
                .contains("at least 1")
        );
        assert!(step("send = \"\"").unwrap_err().contains("empty"));

        assert_eq!(
            wire("starttls = true\nexpect_quiet = true\nas = \"c2\""),
            WireStep {
                conn: "c2".into(),
                action: WireAction::StartTls { quiet: true },
            }
        );
        assert_eq!(wire("close = true").action, WireAction::Close);
        assert_eq!(
            wire("expect_closed = true\nexpect_contains = [\"421\"]").action,
            WireAction::ExpectClosed {
                before: ReplyChecks {
                    contains: vec!["421".into()],
                    lacks: vec![],
                },
            }
        );
        let WireAction::Send { closed, .. } =
            wire("send = \"QUIT\\r\\n\"\nexpect = \"221\"\nexpect_closed = true").action
        else {
            panic!("not a send");
        };
        assert!(closed);
        let err = step("starttls = true\nexpect = \"220\"").unwrap_err();
        assert!(err.contains("not to a `starttls` step"), "{err}");
        let err = step("connect = \"smtp\"\nsend = \"x\"").unwrap_err();
        assert!(err.contains("connect and send"), "{err}");
        let err = step("close = true\nmultiline = true").unwrap_err();
        assert!(
            err.contains("`multiline` belongs to a `send` step"),
            "{err}"
        );
    }

    #[test]
    fn a_serve_scenario_gets_the_merged_config() {
        let s = parse("[[step]]\nserve = true\n").unwrap();
        let config = s.config.unwrap();
        let table: toml::Table = toml::from_str(&config).unwrap();
        assert_eq!(table["smtp"]["port"].as_integer(), Some(0));
        assert_eq!(
            table["server"]["hostname"].as_str(),
            Some("mail.example.jp")
        );
        let admin = parse("[[step]]\nrun = \"x\"\n").unwrap();
        assert_eq!(admin.config, None);
        let err = Scenario::parse(
            "x",
            &format!("{HEADER}config = \"[smtp\"\n[[step]]\nserve = true\n"),
        )
        .unwrap_err();
        assert!(err.contains("config"), "{err}");
    }
}
