//! Conventions checked by an ordinary test, so `cargo test` keeps them without a reviewer:
//! every Rust file opens with a `//!` doc, no placeholder macro is left in the code, and the
//! gate's scripts stay executable.

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
