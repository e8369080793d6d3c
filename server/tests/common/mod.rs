//! Helpers shared by the integration tests: run the real `dirmail` binary in a scratch store.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    /// A fresh directory with a `dirmail.toml` naming a fixed host, so output is the same on
    /// every machine.
    pub fn new() -> Scratch {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(
            dir.path().join("dirmail.toml"),
            "[server]\nhostname = \"mail.example.jp\"\n",
        )
        .expect("write dirmail.toml");
        Scratch { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn mailroot(&self) -> PathBuf {
        self.path().join("dirmail-data/mail")
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_dirmail"))
            .args(args)
            .current_dir(self.path())
            .env_remove("DIRMAIL_CONFIG")
            .output()
            .expect("run dirmail")
    }

    /// Runs `args` and renders what an administrator would see, for a transcript.
    pub fn shown(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let mut text = format!("$ dirmail {}\n", args.join(" "));
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("[exit {}]\n", out.status.code().unwrap_or(-1)));
        text
    }

    /// Runs `args`, insisting on exit code `code`.
    pub fn expect(&self, code: i32, args: &[&str]) -> Output {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "dirmail {args:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}
