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

/// A running `dirmail serve`, stopped (SIGTERM, then waited for) when dropped.
pub struct Server {
    pub child: std::process::Child,
    /// Listener name (`smtp`, `submission`, `smtps`, `pop3`, `pop3s`) to its port.
    pub ports: std::collections::HashMap<String, u16>,
    pub stdout: std::sync::mpsc::Receiver<String>,
}

impl Server {
    /// Starts `dirmail serve` in `dir` and waits for its `ready` line.
    pub fn start(dir: &Path) -> Server {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_dirmail"))
            .arg("serve")
            .current_dir(dir)
            .env_remove("DIRMAIL_CONFIG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start dirmail serve");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut ports = std::collections::HashMap::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("dirmail serve printed `ready` in time");
            if line.starts_with("ready") {
                break;
            }
            let mut words = line.split_whitespace();
            if let (Some(name), Some(addr)) = (words.next(), words.next())
                && let Ok(addr) = addr.parse::<std::net::SocketAddr>()
            {
                ports.insert(name.to_owned(), addr.port());
            }
        }
        Server {
            child,
            ports,
            stdout: rx,
        }
    }

    pub fn port(&self, name: &str) -> u16 {
        *self
            .ports
            .get(name)
            .unwrap_or_else(|| panic!("no {name} listener in {:?}", self.ports))
    }

    /// Sends SIGTERM and waits; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// A `[directory]` section for a Samba DC started by the `samba-dc` fixture, with the mail
/// group `mail_group` (tests sharing one DC use their own groups).
pub fn directory_section(dc: &samba_dc::Dc, mail_group: &str, url: &str) -> String {
    format!(
        "[directory]\nurl = \"{url}\"\nca_file = \"{}\"\nbase_dn = \"{}\"\nnetbios_domain = \"{}\"\n\
         bind_dn = \"{}\"\nbind_password = \"{}\"\nmail_group = \"{mail_group}\"\n\
         retry_interval_ms = 200\nretry_count = 2\n",
        dc.ca_file().display(),
        dc.base_dn(),
        dc.netbios_domain(),
        dc.admin_dn(),
        dc.admin_password()
    )
}

impl Scratch {
    /// Replaces dirmail.toml with `text`.
    pub fn config(&self, text: &str) {
        std::fs::write(self.path().join("dirmail.toml"), text).expect("write dirmail.toml");
    }

    /// Runs `args` insisting on `code`, and returns stdout and stderr together.
    pub fn text(&self, code: i32, args: &[&str]) -> String {
        let out = self.expect(code, args);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}
