//! Durability, not only atomicity (R18, issue 21): the server runs under `strace`, a real
//! client makes several deliveries, and the trace must show, for every acknowledged message,
//! that its file was fsynced before it was linked into `new/`, and `new/` fsynced after the
//! link, all before the `250` was written to that client's socket. SIGKILL keeps the page
//! cache, so `crash_safety` cannot see a missing fsync; the system calls can.
//!
//! The checker is a function of the trace text, tested below on traces made by hand, so that
//! a trace without the directory's fsync (or with the fsync after the reply) is shown to fail.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Scratch;
use crate::hostile_support::{Client, expect};

/// One system call in the trace, with the line numbers where it started and ended (the same
/// line unless another thread's call came between).
#[derive(Debug, Clone)]
struct Call {
    name: String,
    /// The arguments as strace printed them (`-yy`: each fd with its path or socket).
    args: String,
    start: usize,
    end: usize,
}

impl Call {
    /// The path or socket strace printed for the first argument, `12</a/b>` → `/a/b`.
    fn fd_path(&self) -> Option<&str> {
        let open = self.args.find('<')?;
        let rest = self.args.get(open + 1..)?;
        // A path may hold `>` only in odd names; the fd's annotation ends at `>,` or `>)`.
        let close = rest.find(">,").or_else(|| rest.rfind('>'))?;
        rest.get(..close)
    }

    /// The `n`th quoted string of the arguments.
    fn quoted(&self, n: usize) -> Option<&str> {
        self.args.split('"').nth(2 * n + 1)
    }

    fn is_write(&self) -> bool {
        matches!(
            self.name.as_str(),
            "write" | "writev" | "pwrite64" | "sendto" | "sendmsg" | "send"
        )
    }

    fn is_fsync(&self) -> bool {
        matches!(self.name.as_str(), "fsync" | "fdatasync")
    }
}

/// Parses `strace -f -tt -yy` output: `PID TIME name(args) = ret`, where a call interrupted by
/// another thread's is split into `name(args <unfinished ...>` and `<... name resumed>rest`.
fn parse(trace: &str) -> Vec<Call> {
    let mut calls = Vec::new();
    let mut unfinished: std::collections::HashMap<String, (String, String, usize)> =
        std::collections::HashMap::new();
    for (number, line) in trace.lines().enumerate() {
        let mut rest = line.trim_start();
        let mut pid = String::new();
        if let Some((first, after)) = rest.split_once(' ')
            && first.bytes().all(|b| b.is_ascii_digit())
        {
            pid = first.to_owned();
            rest = after.trim_start();
        }
        if let Some((time, after)) = rest.split_once(' ')
            && time.contains(':')
        {
            rest = after;
        }
        if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some((name, tail)) = resumed.split_once(" resumed>") else {
                continue;
            };
            if let Some((started_name, args, start)) = unfinished.remove(&pid)
                && started_name == name
            {
                calls.push(Call {
                    name: name.to_owned(),
                    args: format!("{args}{tail}"),
                    start,
                    end: number,
                });
            }
            continue;
        }
        let Some((name, args)) = rest.split_once('(') else {
            continue;
        };
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        if let Some(args) = args.strip_suffix(" <unfinished ...>") {
            unfinished.insert(pid, (name.to_owned(), args.to_owned(), number));
        } else {
            calls.push(Call {
                name: name.to_owned(),
                args: args.to_owned(),
                start: number,
                end: number,
            });
        }
    }
    calls
}

/// R18 for the message whose `Received:` header names `helo`, acknowledged on the connection
/// from `client_port`: the spool file fsynced before any link of it, each link's `new/`
/// fsynced after the link, and both before the `250` on that socket.
fn check_acknowledged(calls: &[Call], helo: &str, client_port: u16) -> Result<(), String> {
    let marker = format!("from {helo} ");
    let spool_write = calls
        .iter()
        .find(|c| {
            c.is_write()
                && c.fd_path().is_some_and(|p| p.contains("/.spool/"))
                && c.args.contains(&marker)
        })
        .ok_or_else(|| format!("{helo}: no spool file written with its Received: header"))?;
    let spool = spool_write.fd_path().unwrap_or_default();
    let spool_name = spool.rsplit('/').next().unwrap_or_default();
    let links: Vec<&Call> = calls
        .iter()
        .filter(|c| {
            matches!(c.name.as_str(), "link" | "linkat")
                && c.start > spool_write.end
                && c.quoted(0)
                    .is_some_and(|from| from.ends_with(&format!("/.spool/{spool_name}")))
        })
        .collect();
    let first_link = links
        .first()
        .ok_or_else(|| format!("{helo}: the spool file {spool} was never linked into new/"))?;
    let socket = format!(":{client_port}]");
    let reply = calls
        .iter()
        .find(|c| {
            c.is_write()
                && c.start > first_link.end
                && c.fd_path().is_some_and(|p| p.contains(&socket))
                && c.args.contains("250 2.0.0 Message accepted")
        })
        .ok_or_else(|| format!("{helo}: no 250 written to the client on port {client_port}"))?;
    calls
        .iter()
        .find(|c| c.is_fsync() && c.fd_path() == Some(spool) && c.end < first_link.start)
        .ok_or_else(|| format!("{helo}: {spool} was not fsynced before it was linked"))?;
    for link in &links {
        let target = link.quoted(1).unwrap_or_default();
        let dir = target.rsplit_once('/').map_or(target, |(dir, _)| dir);
        let dir = dir.trim_start_matches("./");
        calls
            .iter()
            .find(|c| {
                c.is_fsync()
                    && c.start > link.end
                    && c.end < reply.start
                    && c.fd_path().is_some_and(|p| p.ends_with(dir))
            })
            .ok_or_else(|| format!("{helo}: {dir} was not fsynced between the link and the 250"))?;
    }
    Ok(())
}

/// `dirmail serve` under strace; the server (strace's child) is stopped when dropped.
struct Traced {
    strace: Child,
    server_pid: Option<u32>,
}

impl Traced {
    fn start(dir: &Path, trace: &Path) -> (Traced, u16) {
        let mut strace = Command::new("strace")
            .args([
                "-f",
                "-qq",
                "-tt",
                "-yy",
                "-s",
                "96",
                "-e",
                "signal=none",
                "-e",
            ])
            .arg(
                "trace=openat,write,writev,pwrite64,sendto,sendmsg,fsync,fdatasync,\
                 link,linkat,rename,renameat,renameat2,unlink,unlinkat",
            )
            .arg("-o")
            .arg(trace)
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_dirmail"))
            .arg("serve")
            .current_dir(dir)
            .env_remove("DIRMAIL_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run strace (the gate installs it: ci/packages.txt)");
        let out = strace.stdout.take().expect("stdout");
        let mut traced = Traced {
            server_pid: None,
            strace,
        };
        let mut port = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        for line in BufReader::new(out).lines() {
            let line = line.expect("the server's stdout");
            let mut words = line.split_whitespace();
            if let (Some("smtp"), Some(addr)) = (words.next(), words.next()) {
                port = addr.parse::<std::net::SocketAddr>().ok().map(|a| a.port());
            }
            if line.starts_with("ready") || Instant::now() > deadline {
                break;
            }
        }
        // strace's one child is the server.
        let children =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", traced.strace.id()))
                .unwrap_or_default();
        traced.server_pid = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok());
        (
            traced,
            port.expect("the server printed its smtp port and ready"),
        )
    }

    fn stop(&mut self) {
        if let Some(pid) = self.server_pid.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let _ = self.strace.wait();
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn every_acknowledged_message_was_fsynced_with_its_directory_before_the_250() {
    let s = Scratch::new();
    s.config(
        "[server]\nhostname = \"mail.example.jp\"\nlogging = 1\n\
         [smtp]\nport = 0\nsubmission_port = false\nsmtps_port = false\nmax_message_size = \"1MB\"\n\
         [pop3]\nport = false\npop3s_port = false\n[imap]\nport = false\nimaps_port = false\n",
    );
    s.expect(0, &["add", "example.jp"]);
    s.expect(0, &["add", "bob@example.jp", "--create-user", "Bob-pw1"]);
    s.expect(
        0,
        &["add", "carol@example.jp", "--create-user", "Carol-pw2"],
    );
    let trace = s.path().join("trace.txt");
    let (mut traced, port) = Traced::start(s.path(), &trace);

    // Small and large (several pieces of the core's), one and two recipients.
    let mut acknowledged = Vec::new();
    for n in 0..4 {
        let helo = format!("strace-{n}.example");
        let mut c = Client::connect(port);
        let client_port = c.stream().local_addr().expect("local address").port();
        expect(&c.reply(), "220");
        expect(&c.cmd(&format!("EHLO {helo}")), "250");
        expect(&c.cmd("MAIL FROM:<a@client.example>"), "250");
        expect(&c.cmd("RCPT TO:<bob@example.jp>"), "250");
        if n == 3 {
            expect(&c.cmd("RCPT TO:<carol@example.jp>"), "250");
        }
        expect(&c.cmd("DATA"), "354");
        c.send(format!("Subject: durable {n}\r\n\r\n").as_bytes());
        let lines = if n % 2 == 1 { 3000 } else { 3 };
        for _ in 0..lines {
            c.send(&[b'd'; 98]);
            c.send(b"\r\n");
        }
        expect(&c.cmd("."), "250 2.0.0");
        expect(&c.cmd("QUIT"), "221");
        acknowledged.push((helo, client_port));
    }
    traced.stop();

    let text = std::fs::read_to_string(&trace).expect("the trace");
    let calls = parse(&text);
    for (helo, client_port) in &acknowledged {
        if let Err(why) = check_acknowledged(&calls, helo, *client_port) {
            panic!("{why}\n--- the trace's file calls:\n{}", relevant(&text));
        }
    }
    println!(
        "strace: {} acknowledged messages, each fsynced with its directory before its 250",
        acknowledged.len()
    );
}

/// The trace lines worth reading when the check fails.
fn relevant(text: &str) -> String {
    text.lines()
        .filter(|l| {
            ["fsync", "link", "/.spool/", "250 ", "rename", "unlink"]
                .iter()
                .any(|w| l.contains(w))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// ---- the checker on traces made by hand -----------------------------------------------------

const SPOOL_WRITE: &str = r#"100 10:00:00.000001 write(12</s/mail/.spool/S1>, "Received: from strace-0.example ([127.0.0.1])\r\n\tby"..., 90) = 90"#;
const FILE_FSYNC: &str = "100 10:00:00.000002 fsync(12</s/mail/.spool/S1>) = 0";
const LINK: &str = r#"100 10:00:00.000003 linkat(AT_FDCWD, "dirmail-data/mail/.spool/S1", AT_FDCWD, "dirmail-data/mail/example.jp/bob/new/N1,S=90", 0) = 0"#;
const DIR_FSYNC: &str =
    "100 10:00:00.000005 fsync(13</s/dirmail-data/mail/example.jp/bob/new>) = 0";
const REPLY: &str = r#"101 10:00:00.000006 sendto(9<TCP:[127.0.0.1:25->127.0.0.1:40000]>, "250 2.0.0 Message accepted for delivery\r\n", 41, MSG_NOSIGNAL, NULL, 0) = 41"#;

fn verdict(lines: &[&str]) -> Result<(), String> {
    check_acknowledged(&parse(&lines.join("\n")), "strace-0.example", 40000)
}

#[test]
fn the_checker_accepts_the_durable_order() {
    verdict(&[SPOOL_WRITE, FILE_FSYNC, LINK, DIR_FSYNC, REPLY]).unwrap();
    // Another thread's call in the middle of the directory's fsync.
    verdict(&[
        SPOOL_WRITE,
        FILE_FSYNC,
        LINK,
        "100 10:00:00.000004 fsync(13</s/dirmail-data/mail/example.jp/bob/new> <unfinished ...>",
        r#"102 10:00:00.000004 write(7</dev/null>, "x", 1) = 1"#,
        "100 10:00:00.000005 <... fsync resumed>) = 0",
        REPLY,
    ])
    .unwrap();
}

#[test]
fn the_checker_refuses_a_missing_or_late_fsync() {
    let no_dir = verdict(&[SPOOL_WRITE, FILE_FSYNC, LINK, REPLY]).unwrap_err();
    assert!(
        no_dir.contains("was not fsynced between the link and the 250"),
        "{no_dir}"
    );
    let late_dir = verdict(&[SPOOL_WRITE, FILE_FSYNC, LINK, REPLY, DIR_FSYNC]).unwrap_err();
    assert!(
        late_dir.contains("between the link and the 250"),
        "{late_dir}"
    );
    let no_file = verdict(&[SPOOL_WRITE, LINK, DIR_FSYNC, REPLY]).unwrap_err();
    assert!(
        no_file.contains("not fsynced before it was linked"),
        "{no_file}"
    );
    let file_after_link = verdict(&[SPOOL_WRITE, LINK, FILE_FSYNC, DIR_FSYNC, REPLY]).unwrap_err();
    assert!(
        file_after_link.contains("before it was linked"),
        "{file_after_link}"
    );
    // A fsync still under way when the reply is written does not count.
    let unfinished = verdict(&[
        SPOOL_WRITE,
        FILE_FSYNC,
        LINK,
        "100 10:00:00.000004 fsync(13</s/dirmail-data/mail/example.jp/bob/new> <unfinished ...>",
        REPLY,
        "100 10:00:00.000007 <... fsync resumed>) = 0",
    ])
    .unwrap_err();
    assert!(
        unfinished.contains("between the link and the 250"),
        "{unfinished}"
    );
    let no_reply = verdict(&[SPOOL_WRITE, FILE_FSYNC, LINK, DIR_FSYNC]).unwrap_err();
    assert!(no_reply.contains("no 250"), "{no_reply}");
}
