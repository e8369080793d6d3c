//! Two administrators racing cannot both slip past a rule: every check runs in the same
//! `BEGIN IMMEDIATE` transaction as the change it guards.

use std::process::Command;

use crate::common::Scratch;

/// R3: many processes add `user@<domain N>` at once under `local`; exactly one may win.
#[test]
fn r3_holds_under_concurrent_adds() {
    let s = Scratch::new();
    let domains: Vec<String> = (0..8).map(|i| format!("d{i}.example")).collect();
    for d in &domains {
        s.expect(0, &["add", d]);
    }
    let children: Vec<_> = domains
        .iter()
        .map(|d| {
            Command::new(env!("CARGO_BIN_EXE_dirmail"))
                .args(["add", &format!("user@{d}"), "--create-user", "Pass-word1"])
                .current_dir(s.path())
                .env_remove("DIRMAIL_CONFIG")
                .output()
        })
        .collect();
    let codes: Vec<i32> = children
        .into_iter()
        .map(|c| c.expect("run dirmail").status.code().unwrap_or(-1))
        .collect();
    assert_eq!(
        codes.iter().filter(|c| **c == 0).count(),
        1,
        "exit codes {codes:?}"
    );
    assert!(
        codes.iter().all(|c| *c == 0 || *c == 3),
        "exit codes {codes:?}"
    );
}

/// R2: an `add DOMAIN` racing `set authentication` never leaves a domain under a method that
/// changed after it existed.
#[test]
fn r2_holds_under_concurrent_domain_add_and_method_change() {
    for _ in 0..3 {
        let s = Scratch::new();
        let spawn = |args: &[&str]| {
            Command::new(env!("CARGO_BIN_EXE_dirmail"))
                .args(args)
                .current_dir(s.path())
                .env_remove("DIRMAIL_CONFIG")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn dirmail")
        };
        // Make the store first so both children race on rules, not on creating it.
        s.expect(0, &["get", "authentication"]);
        let mut a = spawn(&["add", "example.jp"]);
        let mut b = spawn(&["set", "authentication", "passwd-file"]);
        let (ca, cb) = (a.wait().expect("wait"), b.wait().expect("wait"));
        let method = String::from_utf8_lossy(&s.expect(0, &["get", "authentication"]).stdout)
            .trim()
            .to_owned();
        let domains = String::from_utf8_lossy(&s.expect(0, &["list"]).stdout).into_owned();
        assert!(ca.success(), "add DOMAIN always succeeds");
        // Either the method changed before the domain existed, or it was refused by R2.
        if cb.success() {
            assert_eq!(method, "passwd-file");
        } else {
            assert_eq!(cb.code(), Some(3));
            assert_eq!(method, "local");
        }
        assert!(domains.contains("example.jp"));
    }
}

/// R28: `a → b` and `b → a` added at once by two administrators: whichever commits second sees
/// the first and refuses the loop, so the store never holds one.
#[test]
fn r28_a_loop_cannot_be_made_by_two_racing_administrators() {
    for _ in 0..3 {
        let s = Scratch::new();
        s.expect(0, &["add", "example.jp"]);
        s.expect(
            0,
            &["add", "alice@example.jp", "--create-user", "Pass-word1"],
        );
        s.expect(0, &["alias", "add", "a@example.jp", "alice@example.jp"]);
        s.expect(0, &["alias", "add", "b@example.jp", "alice@example.jp"]);
        let spawn = |args: &[&str]| {
            Command::new(env!("CARGO_BIN_EXE_dirmail"))
                .args(args)
                .current_dir(s.path())
                .env_remove("DIRMAIL_CONFIG")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn dirmail")
        };
        let mut one = spawn(&["alias", "add", "a@example.jp", "b@example.jp"]);
        let mut two = spawn(&["alias", "add", "b@example.jp", "a@example.jp"]);
        let codes = [
            one.wait().expect("wait").code(),
            two.wait().expect("wait").code(),
        ];
        let mut sorted = codes;
        sorted.sort();
        assert_eq!(sorted, [Some(0), Some(3)], "exit codes {codes:?}");
        // Had a loop got in, expanding through it would be refused.
        s.expect(
            0,
            &[
                "alias",
                "add",
                "c@example.jp",
                "a@example.jp",
                "b@example.jp",
            ],
        );
    }
}
