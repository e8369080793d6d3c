//! Command transcripts as an administrator sees them, kept as insta snapshots: a change to any
//! message of SPEC §5 shows up in review.

use crate::common::Scratch;

fn transcript(scratch: &Scratch, commands: &[&[&str]]) -> String {
    commands.iter().map(|args| scratch.shown(args)).collect()
}

#[test]
fn local_tour() {
    let s = Scratch::new();
    insta::assert_snapshot!(transcript(
        &s,
        &[
            &["get", "authentication"],
            &["add", "example.jp"],
            &["add", "example.com"],
            &[
                "add",
                "user05@example.jp",
                "/createuser",
                "MYSECRETPASSWORD"
            ],
            &["add", "user05@example.com", "--create-user", "Other-Pass1"],
            &["add", "nobody@example.jp"],
            &["list"],
            &["list", "example.jp"],
            &["set", "authentication", "passwd-file"],
            &["lock", "example.jp"],
            &["unlock", "user05@example.jp"],
            &["unlock", "example.jp"],
            &["quota", "user05@example.jp", "50MB"],
            &["createquotafile", "user05@example.jp", "/user:user05"],
            &["stat"],
            &["delete", "user05@example.jp", "/deleteuser"],
            &["account", "list"],
            &["delete", "example.jp"],
            &["delete", "example.com"],
            &["set", "authentication", "passwd-file"],
        ],
    ));
}

#[test]
fn passwd_file_tour() {
    let s = Scratch::new();
    insta::assert_snapshot!(transcript(
        &s,
        &[
            &["set", "authentication", "passwd-file"],
            &["set", "sparequired", "1"],
            &["add", "example.jp"],
            &["add", "example.com"],
            &["add", "user05@example.jp"],
            &["add", "user05@example.jp", "--create-user", "Pass-one1"],
            &["add", "user05@example.com", "--create-user", "Pass-two2"],
            &["auth", "test", "user05@example.com", "Pass-two2"],
            &["auth", "test", "user05", "Pass-two2"],
            &["account", "list"],
        ],
    ));
}

#[test]
fn json_answers() {
    let s = Scratch::new();
    insta::assert_snapshot!(transcript(
        &s,
        &[
            &["--json", "add", "example.jp"],
            &[
                "--json",
                "add",
                "a@example.jp",
                "--create-user",
                "Pass-word1"
            ],
            &["--json", "add", "bad_name@example.jp"],
            &["--json", "get", "mailbox-layout"],
            &["--json", "set", "mailbox-layout", "shared"],
            &["--json", "frobnicate"],
        ],
    ));
}
