//! Scenario files: the TOML format of `fixtures/scenarios/`, parsed and checked at load.
//!
//! A file is read into a permissive `Raw*` shape first (every key optional, unknown keys
//! refused), then turned into [`Scenario`] and [`Step`], which cannot hold a malformed case:
//! a step is exactly one kind, rule names are well-formed, paths stay inside the scenario's
//! directory. The format itself is documented for authors in `fixtures/scenarios/README.md`.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Component, Path, PathBuf};

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
    /// SPEC.md rules covered, each `R<number>` or a section `§<n>[.<n>…]`.
    pub rules: Vec<String>,
    /// The seed passage the scenario replays.
    pub seed: String,
    /// When set, the scenario is expected to fail, for this reason.
    pub xfail: Option<String>,
    /// Written as `dirmail.toml` in the scenario's directory before the first step.
    pub config: Option<String>,
    pub steps: Vec<Step>,
}

/// One step. Which kind it is follows from the key that is present.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// `run = …`: one invocation of the `dirmail` binary.
    Run(RunStep),
    /// `exists`, `absent`, `mode`: file-system checks.
    Files(FilesStep),
    /// `put = { path, text }`: write a file.
    Put(PutStep),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunStep {
    /// Arguments after the binary's name.
    pub args: Vec<String>,
    pub stdin: Option<String>,
    /// Extra environment for this run only.
    pub env: BTreeMap<String, String>,
    pub expect: Expect,
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

#[derive(Debug, Clone, PartialEq)]
pub struct FilesStep {
    pub exists: Vec<String>,
    pub absent: Vec<String>,
    /// Path to the permission bits it must have (`0o600`).
    pub mode: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PutStep {
    pub path: String,
    pub text: String,
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
            return Err("`rules` must name at least one SPEC rule, e.g. [\"R3\"]".into());
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
        let steps = raw
            .steps
            .into_iter()
            .enumerate()
            .map(|(i, step)| step.check().map_err(|e| format!("step {}: {e}", i + 1)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Scenario {
            id: id.to_owned(),
            path: PathBuf::from(id),
            title,
            rules: raw.rules,
            seed,
            xfail,
            config: raw.config,
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
/// SPEC.md states without a number, its section (`§5`, `§5.3`).
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
            "rule `{rule}` is neither R<number> (R3) nor a SPEC section (§5.3)"
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
    config: Option<String>,
    #[serde(default, rename = "step")]
    steps: Vec<RawStep>,
}

/// The union of every step kind's keys; [`RawStep::check`] sorts out which kind it is.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    run: Option<RawCommand>,
    stdin: Option<String>,
    env: Option<BTreeMap<String, String>>,
    exit: Option<i32>,
    stdout: Option<String>,
    stdout_contains: Option<Vec<String>>,
    stderr: Option<String>,
    stderr_contains: Option<Vec<String>>,
    json: Option<Value>,

    exists: Option<Vec<String>>,
    absent: Option<Vec<String>>,
    mode: Option<BTreeMap<String, String>>,

    put: Option<RawPut>,
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

impl RawStep {
    fn check(self) -> Result<Step, String> {
        let run_only = [
            ("stdin", self.stdin.is_some()),
            ("env", self.env.is_some()),
            ("exit", self.exit.is_some()),
            ("stdout", self.stdout.is_some()),
            ("stdout_contains", self.stdout_contains.is_some()),
            ("stderr", self.stderr.is_some()),
            ("stderr_contains", self.stderr_contains.is_some()),
            ("json", self.json.is_some()),
        ];
        let is_files = self.exists.is_some() || self.absent.is_some() || self.mode.is_some();
        let kinds = [
            ("run", self.run.is_some()),
            ("exists/absent/mode", is_files),
            ("put", self.put.is_some()),
        ];
        let present: Vec<&str> = kinds.iter().filter(|k| k.1).map(|k| k.0).collect();
        match present.as_slice() {
            [_] => {}
            [] => {
                return Err("a step needs one of `run`, `exists`/`absent`/`mode`, or `put`".into());
            }
            several => {
                return Err(format!(
                    "a step is one kind only, but this one has {}; split it into several [[step]]s",
                    several.join(" and ")
                ));
            }
        }
        if let Some(command) = self.run {
            let args = match command {
                RawCommand::Line(line) => shell_words::split(&line)
                    .map_err(|e| format!("`run = {line:?}` cannot be split: {e}"))?,
                RawCommand::Args(args) => args,
            };
            if args.is_empty() {
                return Err("`run` is empty".into());
            }
            return Ok(Step::Run(RunStep {
                args,
                stdin: self.stdin,
                env: self.env.unwrap_or_default(),
                expect: Expect {
                    exit: self.exit.unwrap_or(0),
                    stdout: self.stdout,
                    stdout_contains: self.stdout_contains.unwrap_or_default(),
                    stderr: self.stderr,
                    stderr_contains: self.stderr_contains.unwrap_or_default(),
                    json: self.json.map(json_expectation).transpose()?,
                },
            }));
        }
        if let Some((key, _)) = run_only.iter().find(|k| k.1) {
            return Err(format!("`{key}` belongs to a `run` step"));
        }
        if let Some(put) = self.put {
            check_relative_path(&put.path)?;
            return Ok(Step::Put(PutStep {
                path: put.path,
                text: put.text,
            }));
        }
        let exists = self.exists.unwrap_or_default();
        let absent = self.absent.unwrap_or_default();
        let mut mode = BTreeMap::new();
        for (path, bits) in self.mode.unwrap_or_default() {
            check_relative_path(&path)?;
            mode.insert(path, parse_mode(&bits)?);
        }
        for path in exists.iter().chain(&absent) {
            check_relative_path(path)?;
        }
        if exists.is_empty() && absent.is_empty() && mode.is_empty() {
            return Err("the file checks of this step are all empty".into());
        }
        Ok(Step::Files(FilesStep {
            exists,
            absent,
            mode,
        }))
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
            err.starts_with("step 1:") && err.contains("run and exists"),
            "{err}"
        );
        let err = parse("[[step]]\nrun = \"x\"\n[[step]]\nexit = 1\n").unwrap_err();
        assert!(err.starts_with("step 2:"), "{err}");
        let err = parse("[[step]]\nexists = [\"a\"]\nstdout = \"x\"\n").unwrap_err();
        assert!(err.contains("`stdout` belongs to a `run` step"), "{err}");
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
}
