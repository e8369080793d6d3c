//! The server under test: `dirmail serve` started in a scenario's directory, its listeners'
//! ports read from what it prints, its log (standard error) kept for the checks, and a stop
//! that cannot hang.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use toml_edit::DocumentMut;

use crate::process::{Capture, kill_group, signal};

/// How long `serve` may take to print `ready`.
pub const START_WITHIN: Duration = Duration::from_secs(30);

/// How long a stop at the end of a scenario waits after SIGTERM before SIGKILL. Sessions are
/// closed by the runner first, so a server that needs longer is stuck.
pub const CLEANUP_WITHIN: Duration = Duration::from_secs(10);

/// The keys a scenario that starts the server gets unless it sets them: every listener on a
/// port the system chooses (scenarios run in parallel), and a fixed host name.
const DEFAULTS: [(&str, &str, Fill); 8] = [
    ("server", "hostname", Fill::Text("mail.example.jp")),
    ("smtp", "port", Fill::Port),
    ("smtp", "submission_port", Fill::Port),
    ("smtp", "smtps_port", Fill::Port),
    ("pop3", "port", Fill::Port),
    ("pop3", "pop3s_port", Fill::Port),
    ("imap", "port", Fill::Port),
    ("imap", "imaps_port", Fill::Port),
];

#[derive(Clone, Copy)]
enum Fill {
    Text(&'static str),
    Port,
}

/// The scenario's `config` with the runner's defaults filled in where it says nothing; its
/// own keys, comments and layout are kept.
pub fn merged_config(config: Option<&str>) -> Result<String, String> {
    // `{port:NAME}` may stand where TOML wants a number (`port = {port:mx}`), which is not
    // TOML until it is filled in at run time: each is masked as a number no port can be for
    // the merge, and put back after.
    let mut masked = config.unwrap_or("").to_owned();
    let mut placeholders = Vec::new();
    while let Some(start) = masked.find("{port:") {
        let Some(len) = masked[start..].find('}') else {
            break;
        };
        let placeholder = masked[start..=start + len].to_owned();
        let mask = format!("{}", PORT_MASK + placeholders.len() as u64);
        masked = masked.replace(&placeholder, &mask);
        placeholders.push((mask, placeholder));
    }
    let merged = merge_defaults(&masked)?;
    Ok(placeholders
        .iter()
        .fold(merged, |text, (mask, placeholder)| {
            text.replace(mask.as_str(), placeholder)
        }))
}

/// The first of the numbers that stand for `{port:NAME}` during a merge.
const PORT_MASK: u64 = 4_000_000_000;

fn merge_defaults(config: &str) -> Result<String, String> {
    let mut doc: DocumentMut = config
        .parse()
        .map_err(|e| format!("`config` is not TOML: {e}"))?;
    for (table, key, default) in DEFAULTS {
        let item = doc
            .as_table_mut()
            .entry(table)
            .or_insert_with(toml_edit::table);
        let table_like = item
            .as_table_like_mut()
            .ok_or_else(|| format!("`config`: `{table}` is not a table"))?;
        if table_like.get(key).is_none() {
            let value = match default {
                Fill::Text(text) => toml_edit::value(text),
                Fill::Port => toml_edit::value(0),
            };
            table_like.insert(key, value);
        }
    }
    Ok(doc.to_string())
}

/// A running (or stopped) `dirmail serve`.
pub struct Server {
    child: Child,
    stdout: Capture,
    stderr: Capture,
    /// One message per output pipe that reached its end.
    pipes_closed: mpsc::Receiver<()>,
    /// Listener name to port, from the lines before `ready`.
    pub ports: BTreeMap<String, u16>,
    /// Bytes of standard output up to and including the `ready` line.
    ready_at: usize,
    /// Set once it has exited.
    status: Option<ExitStatus>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("pid", &self.child.id())
            .field("ports", &self.ports)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// Why the server did not start; with what it printed.
#[derive(Debug)]
pub struct StartError {
    pub message: String,
    pub stdout: String,
    pub stderr: String,
}

/// How a stop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It exited on its own after SIGTERM (or before it).
    Exited(ExitStatus),
    /// It was still running when the bound passed, and was killed.
    Killed,
}

impl Server {
    /// Starts `dirmail serve` in `dir` (in a process group of its own) and waits for `ready`.
    pub fn start(dirmail: &Path, dir: &Path) -> Result<Server, StartError> {
        let mut command = Command::new(dirmail);
        command
            .arg("serve")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("DIRMAIL_") {
                command.env_remove(key);
            }
        }
        let mut child = command.spawn().map_err(|e| StartError {
            message: format!("cannot start {} serve: {e}", dirmail.display()),
            stdout: String::new(),
            stderr: String::new(),
        })?;
        let (done, pipes_closed) = mpsc::channel();
        let stdout = Capture::start(child.stdout.take(), done.clone());
        let stderr = Capture::start(child.stderr.take(), done);
        let mut server = Server {
            child,
            stdout,
            stderr,
            pipes_closed,
            ports: BTreeMap::new(),
            ready_at: 0,
            status: None,
        };
        let deadline = Instant::now() + START_WITHIN;
        loop {
            let printed = server.stdout.text();
            if let Some((ports, ready_at)) = parse_ready(&printed) {
                server.ports = ports;
                server.ready_at = ready_at;
                return Ok(server);
            }
            let failed = match server.child.try_wait() {
                Ok(Some(status)) => {
                    server.status = Some(status);
                    server.drain();
                    Some(format!("dirmail serve exited before `ready`: {status}"))
                }
                Ok(None) if Instant::now() >= deadline => Some(format!(
                    "dirmail serve did not print `ready` within {} s",
                    START_WITHIN.as_secs()
                )),
                Ok(None) => None,
                Err(e) => Some(format!("cannot wait for dirmail serve: {e}")),
            };
            if let Some(message) = failed {
                server.stop(Duration::ZERO);
                return Err(StartError {
                    message,
                    stdout: server.stdout.text(),
                    stderr: server.log(),
                });
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything it has logged so far.
    pub fn log(&self) -> String {
        self.stderr.text()
    }

    /// What it printed on standard output after `ready`.
    pub fn stdout_after_ready(&self) -> String {
        let text = self.stdout.text();
        text.get(self.ready_at..).unwrap_or("").to_owned()
    }

    pub fn is_running(&mut self) -> bool {
        if self.status.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.status = Some(status);
        }
        self.status.is_none()
    }

    /// SIGTERM, then waits up to `within` for it to exit; SIGKILL to its whole group after.
    pub fn stop(&mut self, within: Duration) -> Stopped {
        if let Some(status) = self.status {
            return Stopped::Exited(status);
        }
        let pid = self.child.id();
        signal(&pid.to_string(), "TERM");
        let deadline = Instant::now() + within;
        let outcome = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.status = Some(status);
                    break Stopped::Exited(status);
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => {
                    kill_group(pid);
                    let _ = self.child.kill();
                    self.status = self.child.wait().ok();
                    break Stopped::Killed;
                }
            }
        };
        // Anything it started goes with it, so no process outlives the scenario.
        kill_group(pid);
        self.drain();
        outcome
    }

    /// SIGKILL to its process group at once, as a crash would end it (`kill = "serve"`).
    pub fn kill(&mut self) {
        if self.status.is_some() {
            return;
        }
        kill_group(self.child.id());
        let _ = self.child.kill();
        self.status = self.child.wait().ok();
        self.drain();
    }

    /// Waits a moment for the output pipes to reach their end, so the last lines are kept.
    fn drain(&self) {
        let until = Instant::now() + Duration::from_secs(2);
        for _ in 0..2 {
            let left = until.saturating_duration_since(Instant::now());
            if self.pipes_closed.recv_timeout(left).is_err() {
                break;
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop(CLEANUP_WITHIN);
    }
}

/// The listeners printed before the `ready` line (`  smtp        127.0.0.1:2525`), and where
/// the text after that line begins; `None` until `ready` has been printed.
pub fn parse_ready(stdout: &str) -> Option<(BTreeMap<String, u16>, usize)> {
    let mut ports = BTreeMap::new();
    let mut offset = 0;
    for line in stdout.split_inclusive('\n') {
        offset += line.len();
        if !line.ends_with('\n') {
            return None;
        }
        if line.starts_with("ready") {
            return Some((ports, offset));
        }
        let mut words = line.split_whitespace();
        if let (Some(name), Some(addr)) = (words.next(), words.next())
            && let Ok(addr) = addr.parse::<SocketAddr>()
        {
            ports.insert(name.to_owned(), addr.port());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_placeholders_survive_the_merge_where_numbers_go() {
        let merged = merged_config(Some(
            "[outbound]\nport = {port:mx}\ndns = \"x:{port:dns}\"\n",
        ))
        .unwrap();
        assert!(merged.contains("port = {port:mx}"), "{merged}");
        assert!(merged.contains("\"x:{port:dns}\""), "{merged}");
        assert!(merged.contains("[smtp]"), "{merged}");
    }

    #[test]
    fn defaults_fill_only_what_is_missing() {
        let merged = merged_config(Some(
            "# the lab\n[smtp]\nport = 2525 # fixed\nrelay_networks = [\"127.0.0.0/8\"]\n\n[tls]\nplaintext_auth = \"loopback\"\n",
        ))
        .unwrap();
        assert!(
            merged.starts_with("# the lab\n[smtp]\nport = 2525 # fixed\n"),
            "{merged}"
        );
        let table: toml::Table = toml::from_str(&merged).unwrap();
        assert_eq!(table["smtp"]["port"].as_integer(), Some(2525));
        assert_eq!(table["smtp"]["submission_port"].as_integer(), Some(0));
        assert_eq!(table["smtp"]["smtps_port"].as_integer(), Some(0));
        assert_eq!(table["pop3"]["port"].as_integer(), Some(0));
        assert_eq!(table["pop3"]["pop3s_port"].as_integer(), Some(0));
        assert_eq!(
            table["server"]["hostname"].as_str(),
            Some("mail.example.jp")
        );
        assert_eq!(table["tls"]["plaintext_auth"].as_str(), Some("loopback"));

        // A listener turned off stays off; a host name given is kept.
        let merged = merged_config(Some(
            "[pop3]\npop3s_port = false\n[server]\nhostname = \"mx.test\"\n",
        ))
        .unwrap();
        let table: toml::Table = toml::from_str(&merged).unwrap();
        assert_eq!(table["pop3"]["pop3s_port"].as_bool(), Some(false));
        assert_eq!(table["server"]["hostname"].as_str(), Some("mx.test"));

        let table: toml::Table = toml::from_str(&merged_config(None).unwrap()).unwrap();
        assert_eq!(table["smtp"]["port"].as_integer(), Some(0));

        assert!(
            merged_config(Some("smtp = 3\n"))
                .unwrap_err()
                .contains("`smtp` is not a table")
        );
        assert!(
            merged_config(Some("[smtp\n"))
                .unwrap_err()
                .contains("not TOML")
        );
    }

    #[test]
    fn ports_come_from_the_lines_before_ready() {
        let printed = "dirmail 0.1.0 serving the store in ./dirmail-data as mail.example.jp\n  \
                       smtp        127.0.0.1:33993\n  pop3s       [::1]:995\nready (Ctrl-C stops)\nstopped\n";
        let (ports, at) = parse_ready(printed).unwrap();
        assert_eq!(ports["smtp"], 33993);
        assert_eq!(ports["pop3s"], 995);
        assert_eq!(ports.len(), 2);
        assert_eq!(&printed[at..], "stopped\n");
        assert_eq!(parse_ready("  smtp  127.0.0.1:1\n"), None);
        assert_eq!(parse_ready("  smtp  127.0.0.1:1\nrea"), None);
    }
}
