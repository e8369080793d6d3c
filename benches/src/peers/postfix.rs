//! A private Postfix instance (fixtures/peers/postfix): its own configuration, queue and data
//! directories under the bench's temporary directory, smtpd on a loopback port, and every
//! accepted message handed to Dovecot over LMTP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustix::process::Signal;

use super::render;
use crate::process::{alive, run, signal, tail, user_ids, wait_listening};

const MAIN_CF: &str = include_str!("../../../fixtures/peers/postfix/main.cf");
const MASTER_CF: &str = include_str!("../../../fixtures/peers/postfix/master.cf");

/// A running Postfix, stopped when dropped.
#[derive(Debug)]
pub struct Postfix {
    dir: PathBuf,
    pub smtp: SocketAddr,
}

impl Postfix {
    /// Writes the instance under `dir` and starts it. `recipients` are the addresses it
    /// accepts (a `texthash:` map), `lmtp_port` Dovecot's LMTP listener.
    pub fn start(
        dir: &Path,
        smtp_port: u16,
        lmtp_port: u16,
        domain: &str,
        recipients: &[String],
    ) -> Result<Postfix> {
        Postfix::start_with(dir, smtp_port, lmtp_port, domain, recipients, "")
    }

    /// The same, with `extra` appended to main.cf (a later line overrides an earlier one):
    /// `relayhost = [addr]:port` makes it relay everything from loopback there.
    pub fn start_with(
        dir: &Path,
        smtp_port: u16,
        lmtp_port: u16,
        domain: &str,
        recipients: &[String],
        extra: &str,
    ) -> Result<Postfix> {
        for sub in ["etc", "queue", "data", "log"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        // Postfix insists that its data directory belongs to mail_owner.
        let (uid, gid) = user_ids("postfix")?;
        std::os::unix::fs::chown(dir.join("data"), Some(uid), Some(gid))?;
        let dir_text = dir.display().to_string();
        let vars = [
            ("DIR", dir_text.as_str()),
            ("DOMAIN", domain),
            ("LMTP_PORT", &lmtp_port.to_string()),
            ("SMTP_PORT", &smtp_port.to_string()),
        ];
        std::fs::write(
            dir.join("etc/main.cf"),
            format!("{}{extra}", render(MAIN_CF, &vars)),
        )?;
        std::fs::write(dir.join("etc/master.cf"), render(MASTER_CF, &vars))?;
        let map: String = recipients.iter().map(|r| format!("{r} ok\n")).collect();
        std::fs::write(dir.join("etc/vmailbox"), map)?;
        let postfix = Postfix {
            dir: dir.to_owned(),
            smtp: SocketAddr::from(([127, 0, 0, 1], smtp_port)),
        };
        crate::cleanup::add_postfix(dir.join("etc"));
        // `postfix start` says nothing and does nothing without a terminal: give it one.
        run(Command::new("script").args([
            "-qec",
            &format!("postfix -c {}/etc start", dir.display()),
            "/dev/null",
        ]))
        .context("postfix start")?;
        if !wait_listening(postfix.smtp, Duration::from_secs(15)) {
            bail!(
                "Postfix did not listen on {} within 15 s; its log says:\n{}",
                postfix.smtp,
                tail(&postfix.log(), 15)
            );
        }
        Ok(postfix)
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("log/maillog")
    }

    /// The master daemon's pid (its pid file), for CPU accounting of the whole instance.
    pub fn master_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("queue/pid/master.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Messages still in the queue (not yet handed to Dovecot).
    pub fn queued(&self) -> usize {
        ["incoming", "active", "deferred", "maildrop"]
            .iter()
            .map(|q| count_files(&self.dir.join("queue").join(q)))
            .sum()
    }

    /// Deferred messages: a delivery to Dovecot failed (the report says so).
    pub fn deferred(&self) -> usize {
        count_files(&self.dir.join("queue/deferred"))
    }

    fn stop(&mut self) {
        let master = self.master_pid();
        let _ = run(Command::new("script").args([
            "-qec",
            &format!("postfix -c {}/etc stop", self.dir.display()),
            "/dev/null",
        ]));
        let Some(pid) = master else { return };
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive(pid) {
            signal(pid, Signal::KILL);
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        self.stop();
        crate::cleanup::remove_postfix(&self.dir.join("etc"));
    }
}

/// Files under `dir`, recursively (the queue directories hash into subdirectories).
fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            Ok(_) => 1,
            Err(_) => 0,
        })
        .sum()
}
