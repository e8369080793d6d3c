//! Conventions checked by an ordinary test, so `cargo test` keeps them without a reviewer:
//! every Rust file opens with a `//!` doc, no placeholder macro is left in the code, the
//! gate's scripts stay executable, and the spec's rules, the code and the scenarios name the
//! same rules (`spec_rules_functions_and_scenarios_pair_up`), and ARCHITECTURE.md's code map
//! names the crates and root modules that exist.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_owned()
}

/// Every `.rs` file of the workspace, skipping build output and hidden directories
/// (`.git`, `.cargo`).
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.expect("a directory entry");
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let file_type = entry.file_type().expect("a file type");
        if file_type.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if file_type.is_file() && name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<(String, String)> {
    let root = workspace_root();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files.sort();
    assert!(!files.is_empty(), "no Rust file under {}", root.display());
    files
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            let name = path
                .strip_prefix(&root)
                .unwrap_or(&path)
                .display()
                .to_string();
            (name, text)
        })
        .collect()
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let undocumented: Vec<String> = sources()
        .into_iter()
        .filter(|(_, text)| {
            let first = text.lines().find(|line| !line.trim().is_empty());
            !first.is_some_and(|line| line.trim_start().starts_with("//!"))
        })
        .map(|(name, _)| name)
        .collect();
    assert!(
        undocumented.is_empty(),
        "these files do not start with a `//!` line saying what the module is for:\n  {}",
        undocumented.join("\n  ")
    );
}

#[test]
fn no_placeholder_macros() {
    // Spelled in two halves so this file does not find itself.
    let placeholders = [concat!("todo", "!("), concat!("unimplemented", "!(")];
    let mut found = Vec::new();
    for (name, text) in sources() {
        for (number, line) in text.lines().enumerate() {
            if placeholders.iter().any(|p| line.contains(p)) {
                found.push(format!("{name}:{}: {}", number + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "placeholders left in the code (say what is missing in an error instead):\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn gate_scripts_are_executable() {
    let root = workspace_root();
    for script in [".ci/run", "ci/install-deps"] {
        let path = root.join(script);
        let mode = fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{script}: {e}"))
            .permissions()
            .mode();
        assert!(
            mode & 0o111 != 0,
            "{script} is not executable (chmod +x, and commit the mode)"
        );
    }
}

/// One numbered rule as `docs/spec.md` states it.
#[derive(Debug, Default)]
struct SpecRule {
    /// Whether a `Seed:` line says where the rule comes from.
    seed: bool,
    /// The test named on a `Tested instead by:` line, when no scenario can replay the rule.
    tested_instead_by: Option<String>,
}

/// The rules of `docs/spec.md`: each starts on a line `- **R<n>** …`; the indented lines after it
/// belong to it (`Seed: …`, and maybe ``Tested instead by: `test_fn` in server/tests (why)``).
fn spec_rules(spec: &str) -> BTreeMap<u32, SpecRule> {
    let mut rules = BTreeMap::new();
    let mut current: Option<u32> = None;
    for line in spec.lines() {
        if let Some(rest) = line.strip_prefix("- **R") {
            let number = rest
                .split("**")
                .next()
                .and_then(|n| n.parse::<u32>().ok())
                .unwrap_or_else(|| panic!("docs/spec.md: cannot read the rule number of {line:?}"));
            assert!(
                rules.insert(number, SpecRule::default()).is_none(),
                "docs/spec.md states R{number} twice"
            );
            current = Some(number);
        } else if line.starts_with("  ") && !line.trim().is_empty() {
            let Some(rule) = current.and_then(|n| rules.get_mut(&n)) else {
                continue;
            };
            let text = line.trim();
            if text.starts_with("Seed:") {
                rule.seed = true;
            } else if let Some(rest) = text.strip_prefix("Tested instead by:") {
                let name = rest.split('`').nth(1).unwrap_or_default();
                rule.tested_instead_by = Some(name.to_owned());
            }
        } else {
            current = None;
        }
    }
    rules
}

/// The rule number an identifier names: `r12_postmaster` → 12.
fn rule_of(ident: &str) -> Option<u32> {
    let digits: String = ident
        .strip_prefix('r')?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let after = ident.get(1 + digits.len()..)?;
    if digits.is_empty() || !after.starts_with('_') {
        return None;
    }
    digits.parse().ok()
}

/// Whether a file holds only tests: under a `tests/` directory, or a `tests.rs` module.
fn is_test_file(name: &str) -> bool {
    let path = Path::new(name);
    path.components().any(|c| c.as_os_str() == "tests")
        || path.file_name().is_some_and(|f| f == "tests.rs")
}

/// A function defined on this line, if any: the identifier after `fn `.
fn fn_name(line: &str) -> Option<&str> {
    let code = line.split("//").next()?;
    let at = code.find("fn ")?;
    if at > 0 && !code[..at].ends_with(' ') {
        return None;
    }
    let rest = &code[at + 3..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// The first line of the doc comment above line `index`, skipping attributes in between.
fn doc_above(lines: &[&str], index: usize) -> Option<String> {
    let mut first = None;
    for line in lines[..index].iter().rev() {
        let line = line.trim();
        if line.starts_with("///") {
            first = Some(line.to_owned());
        } else if line.starts_with("#[") {
            if first.is_some() {
                break;
            }
        } else {
            break;
        }
    }
    first
}

/// Every non-test `fn rN_…` of the workspace: (rule, `file:line fn name`, its doc's first line).
/// Test code is skipped: files under `tests/`, `tests.rs` modules, and everything after a
/// `#[cfg(test)]` line of a file (the project keeps test modules last).
fn rule_functions() -> Vec<(u32, String, Option<String>)> {
    let mut found = Vec::new();
    for (name, text) in sources() {
        if is_test_file(&name) {
            continue;
        }
        let lines: Vec<&str> = text.lines().collect();
        for (index, line) in lines.iter().enumerate() {
            if line.trim() == "#[cfg(test)]" {
                break;
            }
            let Some(ident) = fn_name(line) else { continue };
            let Some(rule) = rule_of(ident) else { continue };
            found.push((
                rule,
                format!("{name}:{} fn {ident}", index + 1),
                doc_above(&lines, index),
            ));
        }
    }
    found
}

/// The rules each scenario names in its `rules = [...]` line, by file.
fn scenario_rules() -> BTreeMap<String, BTreeSet<u32>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let entries =
            fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "toml") {
                out.push(path);
            }
        }
    }
    let root = workspace_root().join("fixtures/scenarios");
    let mut files = Vec::new();
    walk(&root, &mut files);
    assert!(!files.is_empty(), "no scenario under {}", root.display());
    let mut named = BTreeMap::new();
    for path in files {
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let Some(start) = text
            .find("\nrules = [")
            .or_else(|| text.starts_with("rules = [").then_some(0))
        else {
            panic!("{}: no `rules = [...]` line", path.display());
        };
        let list = &text[start..];
        let list = &list[..list.find(']').unwrap_or(list.len())];
        let rules = list
            .split('"')
            .filter_map(|item| item.strip_prefix('R')?.parse::<u32>().ok())
            .collect();
        let name = path
            .strip_prefix(&root)
            .unwrap_or(&path)
            .display()
            .to_string();
        named.insert(name, rules);
    }
    named
}

/// Style item 15, pairing names across files: the rules of `docs/spec.md`, the functions that
/// decide them and the scenarios that replay them must agree.
///
/// - Each rule of the spec (a line `- **R<n>** …`) has a `Seed:` line.
/// - Each rule is decided in exactly one non-test function named `r<n>_…`, whose doc comment
///   begins `/// R<n>:`; no such function names a rule the spec lacks.
/// - Each rule is named by at least one scenario's `rules = [...]`, or, when no scenario can
///   replay it, the spec says what tests it instead on a line under the rule,
///   ``Tested instead by: `test_fn` in server/tests (why)``, and a test file (any file under a
///   `tests/` directory) defines `fn test_fn`. Naming the function rather than its file keeps the
///   pairing when test files move.
/// - No scenario names a rule the spec lacks.
#[test]
fn spec_rules_functions_and_scenarios_pair_up() {
    let spec_path = workspace_root().join("docs/spec.md");
    let spec = fs::read_to_string(&spec_path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", spec_path.display()));
    let rules = spec_rules(&spec);
    assert!(
        !rules.is_empty(),
        "docs/spec.md states no rule (`- **R<n>** …` lines)"
    );
    let mut problems = Vec::new();

    for (number, rule) in &rules {
        if !rule.seed {
            problems.push(format!("docs/spec.md: R{number} has no `Seed:` line"));
        }
    }

    let functions = rule_functions();
    for number in rules.keys() {
        let deciding: Vec<_> = functions.iter().filter(|(n, ..)| n == number).collect();
        match deciding.as_slice() {
            [] => problems.push(format!(
                "R{number} is decided by no function: name the one that decides it `r{number}_…`, with a doc comment beginning `/// R{number}:`"
            )),
            [(_, place, doc)] => {
                let prefix = format!("/// R{number}:");
                if !doc.as_deref().is_some_and(|d| d.starts_with(&prefix)) {
                    problems.push(format!(
                        "{place}: its doc comment must begin `{prefix}` (it is {doc:?})"
                    ));
                }
            }
            several => problems.push(format!(
                "R{number} has {} functions named after it; keep one `r{number}_…` and give the helpers plain names:\n      {}",
                several.len(),
                several
                    .iter()
                    .map(|(_, place, _)| place.as_str())
                    .collect::<Vec<_>>()
                    .join("\n      ")
            )),
        }
    }
    for (number, place, _) in &functions {
        if !rules.contains_key(number) {
            problems.push(format!(
                "{place}: names R{number}, which docs/spec.md does not state"
            ));
        }
    }

    let scenarios = scenario_rules();
    let test_sources: Vec<String> = sources()
        .into_iter()
        .filter(|(name, _)| {
            Path::new(name)
                .components()
                .any(|c| c.as_os_str() == "tests")
        })
        .map(|(_, text)| text)
        .collect();
    for (number, rule) in &rules {
        if scenarios.values().any(|named| named.contains(number)) {
            continue;
        }
        match &rule.tested_instead_by {
            None => problems.push(format!(
                "R{number} is replayed by no scenario: add one to fixtures/scenarios/ with `rules = [\"R{number}\"]`, or write under the rule in docs/spec.md ``Tested instead by: `test_fn` in server/tests (why)``"
            )),
            Some(test) => {
                let defined = !test.is_empty()
                    && test_sources
                        .iter()
                        .any(|text| text.lines().any(|l| fn_name(l) == Some(test.as_str())));
                if !defined {
                    problems.push(format!(
                        "docs/spec.md: R{number} is tested instead by `{test}`, but no test file defines `fn {test}`"
                    ));
                }
            }
        }
    }
    for (file, named) in &scenarios {
        for number in named {
            if !rules.contains_key(number) {
                problems.push(format!(
                    "fixtures/scenarios/{file}: names R{number}, which docs/spec.md does not state"
                ));
            }
        }
    }

    assert!(
        problems.is_empty(),
        "docs/spec.md, the `fn rN_…` functions and the scenarios disagree:\n  {}",
        problems.join("\n  ")
    );
}

/// The `mod` declarations of a module file, test modules left out.
fn declared_modules(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut after_cfg_test = false;
    for line in text.lines() {
        let line = line.trim();
        if line == "#[cfg(test)]" {
            after_cfg_test = true;
            continue;
        }
        let declaration = line
            .strip_prefix("pub mod ")
            .or_else(|| line.strip_prefix("pub(crate) mod "))
            .or_else(|| line.strip_prefix("mod "));
        if let Some(name) = declaration.and_then(|rest| rest.strip_suffix(';'))
            && !after_cfg_test
        {
            names.push(name.to_owned());
        }
        after_cfg_test = false;
    }
    names
}

/// ARCHITECTURE.md's code map names every crate of the workspace and every module its crates
/// declare at their roots (`mod x;` in a `lib.rs`), so a new floor or room cannot land unmapped;
/// and every `crates/…/` it names exists.
#[test]
fn architecture_maps_the_crates_and_modules_that_exist() {
    let root = workspace_root();
    let map = fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let words: BTreeSet<&str> = map
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .filter(|w| !w.is_empty())
        .collect();
    let mut missing = Vec::new();
    let mut crate_dirs: Vec<PathBuf> = fs::read_dir(root.join("crates"))
        .expect("crates/")
        .map(|e| e.expect("an entry").path())
        .collect();
    crate_dirs.push(root.join("server"));
    crate_dirs.sort();
    for dir in &crate_dirs {
        let name = dir.strip_prefix(&root).unwrap_or(dir).display().to_string();
        if !map.contains(&format!("{name}/")) {
            missing.push(format!("the crate {name}/"));
        }
        let lib = dir.join("src/lib.rs");
        let text = fs::read_to_string(&lib).unwrap_or_default();
        for module in declared_modules(&text) {
            if !words.contains(module.as_str()) {
                missing.push(format!("the module `{module}` of {name}/src/lib.rs"));
            }
        }
    }
    let mut stale = Vec::new();
    for part in map.split("`crates/").skip(1) {
        let crate_name: String = part
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        if !root.join("crates").join(&crate_name).is_dir() {
            stale.push(format!("crates/{crate_name}/"));
        }
    }
    assert!(
        missing.is_empty() && stale.is_empty(),
        "ARCHITECTURE.md's code map is out of date:\n  not named: {}\n  named but gone: {}",
        missing.join(", "),
        stale.join(", ")
    );
}
