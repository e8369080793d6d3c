//! Small process helpers: stopping a child we started, free loopback ports, waiting for a
//! listener, the descriptor limit, and running a command whose output matters only on failure.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustix::process::{Pid, Resource, Rlimit, Signal};

/// SIGTERM, then up to `grace` for the child to exit, then SIGKILL. Only ever our own child,
/// by its pid.
pub fn terminate(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    signal(child.id(), Signal::TERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends `signal` to one process we started (a child, or a daemon whose pid file we wrote).
pub fn signal(pid: u32, signal: Signal) {
    if let Some(pid) = Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// Whether a process with this pid exists.
pub fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// `n` loopback ports free right now (held together while chosen, so they differ).
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()
        .context("cannot find free loopback ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// Waits until something accepts connections at `addr`.
pub fn wait_listening(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Raises this process's descriptor limit (inherited by the servers it starts) as far as it
/// will go, for the idle-connection test. Returns the soft limit now in force.
pub fn raise_nofile(wanted: u64) -> u64 {
    let current = rustix::process::getrlimit(Resource::Nofile);
    let hard = current.maximum.unwrap_or(wanted);
    // Root may raise the hard limit too; anyone may raise the soft one up to the hard one.
    for (soft, hard) in [(wanted, wanted.max(hard)), (wanted.min(hard), hard)] {
        let limit = Rlimit {
            current: Some(soft),
            maximum: Some(hard),
        };
        if rustix::process::setrlimit(Resource::Nofile, limit).is_ok() {
            return soft;
        }
    }
    current.current.unwrap_or(1024)
}

/// Runs a command to completion; a failure carries what it printed.
pub fn run(command: &mut Command) -> Result<Output> {
    let shown = format!("{command:?}");
    let out = command
        .output()
        .with_context(|| format!("cannot run {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// The uid and gid of a system user, from `/etc/passwd`.
pub fn user_ids(name: &str) -> Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("cannot read /etc/passwd")?;
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&name) && fields.len() > 3)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
        .with_context(|| format!("there is no user {name} in /etc/passwd"))
}

/// The last `n` lines of a log file, for an error message.
pub fn tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
