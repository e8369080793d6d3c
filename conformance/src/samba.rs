//! The run's Samba AD domain controller, for scenarios with `directory = "samba"`: one real DC
//! (Debian's `samba-ad-dc`, through the `samba-dc` fixture's binary) started on first use and
//! shared by every such scenario, each of which uses its own domains, names and mail group.
//! The DC stops when the run ends: the fixture keeps it up only while its standard input is
//! open.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// How long the fixture may take to provision (first run on a machine) and start the DC.
const START_WITHIN: Duration = Duration::from_secs(180);

#[derive(Clone)]
pub struct SharedDc {
    inner: Arc<Inner>,
}

struct Inner {
    binary: Option<PathBuf>,
    state: Mutex<Option<Result<Started, String>>>,
}

struct Started {
    child: Child,
    /// Closing it tells the fixture to stop the DC.
    stdin: Option<ChildStdin>,
    facts: Vec<(String, String)>,
}

impl std::fmt::Debug for SharedDc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedDc")
            .field("binary", &self.inner.binary)
            .finish_non_exhaustive()
    }
}

impl SharedDc {
    /// `binary` is the fixture's `samba-dc`; without it, scenarios that need a DC fail with a
    /// reason.
    pub fn new(binary: Option<PathBuf>) -> SharedDc {
        SharedDc {
            inner: Arc::new(Inner {
                binary,
                state: Mutex::new(None),
            }),
        }
    }

    /// The DC's facts for `{ad:KEY}` (`url`, `ldap_url`, `address`, `base_dn`, `users_dn`,
    /// `realm`, `netbios`, `admin_dn`, `admin_upn`, `admin_password`, `ca_file`, `conf`, …),
    /// starting it on first use.
    pub fn facts(&self) -> Result<Vec<(String, String)>, String> {
        let mut state = self
            .inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.is_none() {
            *state = Some(start(self.inner.binary.as_ref()));
        }
        match state.as_ref() {
            Some(Ok(started)) => Ok(started.facts.clone()),
            Some(Err(e)) => Err(e.clone()),
            None => Err("the Samba DC was not started".into()),
        }
    }
}

fn start(binary: Option<&PathBuf>) -> Result<Started, String> {
    let binary = binary.ok_or(
        "this scenario needs a Samba AD DC: run it through `cargo xtask conformance`, or pass --samba-dc PATH",
    )?;
    let mut child = Command::new(binary)
        .args(["start", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let stdin = child.stdin.take();
    let stdout = child
        .stdout
        .take()
        .ok_or("the fixture has no standard output")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = match rx.recv_timeout(START_WITHIN) {
        Ok(line) if !line.trim().is_empty() => line,
        Ok(_) => {
            let _ = child.wait();
            return Err("the Samba DC fixture stopped without starting a DC (see its output above; apt-get install -y samba-ad-dc samba-ad-provision)".into());
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "the Samba DC did not start within {START_WITHIN:?}"
            ));
        }
    };
    let info: serde_json::Value =
        serde_json::from_str(&line).map_err(|e| format!("the fixture printed {line:?}: {e}"))?;
    let facts = info
        .as_object()
        .ok_or("the fixture's JSON is not an object")?
        .iter()
        .filter_map(|(key, value)| match value {
            serde_json::Value::String(s) => Some((key.clone(), s.clone())),
            serde_json::Value::Number(n) => Some((key.clone(), n.to_string())),
            _ => None,
        })
        .collect();
    Ok(Started {
        child,
        stdin,
        facts,
    })
}

impl Drop for Inner {
    fn drop(&mut self) {
        let state = self
            .state
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(Ok(started)) = state.as_mut() {
            // Closing its input tells the fixture to stop the DC and clean up.
            drop(started.stdin.take());
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                match started.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if std::time::Instant::now() >= deadline => {
                        let _ = started.child.kill();
                        let _ = started.child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }
}
