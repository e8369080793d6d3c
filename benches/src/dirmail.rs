//! dirmail as the benchmark runs it: a store in a directory of its own, administered through
//! the `dirmail` command and served by `dirmail serve` on ports the system picks.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::process::terminate;

/// The settings every benchmark store starts from: every listener on a port the system picks,
/// clear-text logins from loopback (so TLS cost is measured only where a row says TLS), and
/// room for the idle-connection test, whose connections all come from one address (so its
/// share, `per_address_max`, is the whole limit). `logging` stays at its default (sessions),
/// as the peers keep theirs.
pub fn base_config() -> String {
    String::from(
        "[server]\nhostname = \"mail.example.jp\"\n\
         [smtp]\nport = 0\nsubmission_port = false\nsmtps_port = false\n\
         [pop3]\nport = 0\npop3s_port = 0\n\
         [tls]\nplaintext_auth = \"loopback\"\n\
         [imap]\nport = 0\nimaps_port = false\n\
         [limits]\nsocket_max = 12000\nsocket_backlog = 4096\nper_address_max = 12000\n",
    )
}

/// A store directory with its `dirmail.toml`.
#[derive(Debug)]
pub struct Store {
    binary: PathBuf,
    pub dir: PathBuf,
}

impl Store {
    /// Makes `dir` with `config` as its `dirmail.toml`.
    pub fn create(binary: &Path, dir: &Path, extra: &str) -> Result<Store> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let store = Store {
            binary: binary.to_owned(),
            dir: dir.to_owned(),
        };
        store.write_config(&format!("{}{extra}", base_config()))?;
        Ok(store)
    }

    fn write_config(&self, text: &str) -> Result<()> {
        let path = self.dir.join("dirmail.toml");
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    }

    fn run(&self, args: &[&str]) -> Result<std::process::Output> {
        Command::new(&self.binary)
            .args(args)
            .current_dir(&self.dir)
            .env_remove("DIRMAIL_CONFIG")
            .output()
            .with_context(|| format!("cannot run {}", self.binary.display()))
    }

    /// Runs `dirmail ARGS` and insists on success.
    pub fn admin(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args)?;
        if !out.status.success() {
            bail!(
                "dirmail {} failed ({}): {}{}",
                args.iter()
                    .map(|a| if a.contains("ssw") { "…" } else { a })
                    .collect::<Vec<_>>()
                    .join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Where a mailbox's Maildir is (the per-domain layout, docs/spec.md §3).
    pub fn maildir(&self, address: &str) -> PathBuf {
        let (name, domain) = address.split_once('@').unwrap_or((address, ""));
        self.dir.join("dirmail-data/mail").join(domain).join(name)
    }

    /// `dirmail serve`, once it has printed `ready`.
    pub fn serve(&self) -> Result<Server> {
        let log_path = self.dir.join("serve.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut child = Command::new(&self.binary)
            .arg("serve")
            .current_dir(&self.dir)
            .env_remove("DIRMAIL_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {} serve", self.binary.display()))?;
        crate::cleanup::add_pid(child.id());
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server {
            child,
            listeners: BTreeMap::new(),
            log: log_path,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                bail!(
                    "dirmail serve did not say `ready` within 30 s: {}",
                    server.log_tail()
                );
            };
            if line.starts_with("ready") {
                break;
            }
            // `  smtp        127.0.0.1:34789`
            let mut words = line.split_whitespace();
            if let (Some(name), Some(addr)) = (words.next(), words.next())
                && let Ok(addr) = addr.parse::<SocketAddr>()
            {
                server.listeners.insert(name.to_owned(), addr);
            }
        }
        Ok(server)
    }
}

/// A running `dirmail serve`, stopped (SIGTERM, then waited for) when dropped.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// Listener name (`smtp`, `pop3`, `pop3s`, `imap`…) to its address.
    pub listeners: BTreeMap<String, SocketAddr>,
    log: PathBuf,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn addr(&self, name: &str) -> Result<SocketAddr> {
        self.listeners
            .get(name)
            .copied()
            .with_context(|| format!("dirmail serve has no {name} listener"))
    }

    pub fn has(&self, name: &str) -> bool {
        self.listeners.contains_key(name)
    }

    fn log_tail(&self) -> String {
        crate::process::tail(&self.log, 10)
    }

    /// Counts the log lines at or above WARN, for the report (a fast server that logs errors
    /// is not fast).
    pub fn logged_problems(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(40));
        crate::cleanup::remove_pid(self.child.id());
    }
}
