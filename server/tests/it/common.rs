//! Helpers shared by the integration tests: run the real `dirmail` binary in a scratch store,
//! and `dirmail serve` there.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Runs the administration tool in `dir`, on the `dirmail.toml` there (never one named by the
/// environment of whoever runs the tests).
pub fn dirmail(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dirmail"))
        .args(args)
        .current_dir(dir)
        .env_remove("DIRMAIL_CONFIG")
        .output()
        .expect("run dirmail")
}

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
        dirmail(self.path(), args)
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

/// How long `dirmail serve` may take to print `ready`.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A running `dirmail serve`, stopped (SIGTERM, then waited for) when dropped.
pub struct Server {
    pub child: Child,
    /// Listener name (`smtp`, `submission`, `smtps`, `pop3`, `pop3s`, …) to its port.
    pub ports: HashMap<String, u16>,
    /// Standard error in a file rather than the test's own, for tests that read the log.
    log: Option<PathBuf>,
    /// What the server prints after `ready` (`stopped`, …), line by line.
    pub stdout: mpsc::Receiver<String>,
}

impl Server {
    /// Starts `dirmail serve` in `dir` and waits for its `ready` line; its log goes to the
    /// test's standard error.
    pub fn start(dir: &Path) -> Server {
        Server::spawn(dir, None, &[], &[], &[])
    }

    /// Like [`Server::start`], with the log kept in `dir/server.log` for [`Server::log`].
    pub fn start_logged(dir: &Path) -> Server {
        Server::spawn(dir, Some(dir.join("server.log")), &[], &[], &[])
    }

    /// Like [`Server::start_logged`], with more arguments after `serve` and environment
    /// variables (`RUST_LOG`).
    pub fn start_logged_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let env: Vec<(&str, &std::ffi::OsStr)> = env
            .iter()
            .map(|(key, value)| (*key, std::ffi::OsStr::new(*value)))
            .collect();
        Server::spawn(dir, Some(dir.join("server.log")), &[], args, &env)
    }

    /// Like [`Server::start_logged`], started through `wrapper` (e.g. `prlimit --nofile=…`),
    /// which runs the server in its own process.
    pub fn start_logged_under(dir: &Path, wrapper: &[&str]) -> Server {
        Server::spawn(dir, Some(dir.join("server.log")), wrapper, &[], &[])
    }

    /// Like [`Server::start_logged`], with `env` added to the server's environment.
    pub fn start_with_env(dir: &Path, env: &[(&str, &std::ffi::OsStr)]) -> Server {
        Server::spawn(dir, Some(dir.join("server.log")), &[], &[], env)
    }

    fn spawn(
        dir: &Path,
        log: Option<PathBuf>,
        wrapper: &[&str],
        args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Server {
        let stderr = match &log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("create the log")),
            None => Stdio::inherit(),
        };
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(env!("CARGO_BIN_EXE_dirmail"));
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_dirmail")),
        };
        // Whoever runs the tests may have a RUST_LOG, which `serve` would honour.
        command.env_remove("RUST_LOG");
        let mut child = command
            .arg("serve")
            .args(args)
            .current_dir(dir)
            .env_remove("DIRMAIL_CONFIG")
            .env_remove("NOTIFY_SOCKET")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start dirmail serve");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server {
            child,
            ports: HashMap::new(),
            log,
            stdout: rx,
        };
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = server.stdout.recv_timeout(left) else {
                panic!(
                    "dirmail serve did not print `ready` within {READY_WITHIN:?}; log:\n{}",
                    server.log()
                )
            };
            if line.starts_with("ready") {
                return server;
            }
            let mut words = line.split_whitespace();
            if let (Some(name), Some(addr)) = (words.next(), words.next())
                && let Ok(addr) = addr.parse::<std::net::SocketAddr>()
            {
                server.ports.insert(name.to_owned(), addr.port());
            }
        }
    }

    pub fn port(&self, name: &str) -> u16 {
        *self
            .ports
            .get(name)
            .unwrap_or_else(|| panic!("no {name} listener in {:?}", self.ports))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's log so far (empty unless started with [`Server::start_logged`]).
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .unwrap_or_default()
    }

    /// The server is still running (it did not crash on what a test sent).
    pub fn assert_alive(&mut self) {
        assert!(
            matches!(self.child.try_wait(), Ok(None)),
            "the server exited; log:\n{}",
            self.log()
        );
    }

    /// Resident memory of the server process, in KiB (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
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
