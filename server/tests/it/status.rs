//! `dirmail status` against a running server: with an IMAP and a POP3 session logged in (by
//! Python's imaplib and poplib) and an SMTP connection that has not, the sessions are listed
//! with their client addresses and users, in the table and in the JSON; the control socket is
//! the owner's alone (0600); a second server on the same store refuses to start; and once the
//! server has stopped, `status` says no server is running and exits 1.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::dirmail;
use crate::hostile_support::{PASSWORD, Rig};

/// `sessions SMTP POP3 IMAP PASSWORD`: opens the three sessions, prints their local addresses
/// as one JSON line, waits for a line on standard input, then ends them.
const SESSIONS: &str = r#"
import imaplib, json, poplib, socket, sys
smtp_port, pop3_port, imap_port = (int(a) for a in sys.argv[1:4])
password = sys.argv[4]
i = imaplib.IMAP4("127.0.0.1", imap_port, timeout=60)
i.login("bob@example.jp", password)
p = poplib.POP3("127.0.0.1", pop3_port, timeout=60)
p.user("carol@example.jp")
p.pass_(sys.argv[5])
s = socket.create_connection(("127.0.0.1", smtp_port), timeout=60)
banner = s.recv(1000)
assert banner.startswith(b"220"), banner
def name(sock):
    host, port = sock.getsockname()[:2]
    return "%s:%d" % (host, port)
print(json.dumps({"imap": name(i.sock), "pop3": name(p.sock), "smtp": name(s)}), flush=True)
sys.stdin.readline()
i.logout()
p.quit()
s.close()
"#;

#[test]
fn status_lists_the_open_sessions_with_their_users_and_addresses() {
    let rig = Rig::with_imap("");
    let dir = rig.dir.path();
    let socket = dir.join("dirmail-data/control.sock");
    let meta = std::fs::metadata(&socket).expect("the control socket exists while serving");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let mut clients = Command::new("/usr/bin/python3")
        .args(["-c", SESSIONS])
        .args(["smtp", "pop3", "imap"].map(|s| rig.port(s).to_string()))
        .args([PASSWORD, crate::hostile_support::CAROL_PASSWORD])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    BufReader::new(clients.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addresses: Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("the clients say where they are ({e}): {line:?}"));

    let out = dirmail(dir, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let status: Value = serde_json::from_slice(&out.stdout).expect("status --json is JSON");
    assert_eq!(status["ok"], true);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["pid"], rig.server.pid());
    assert!(status["uptime_seconds"].is_u64());
    let listeners: Vec<(String, String)> = status["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["service"].as_str().unwrap().to_owned(),
                l["address"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for service in ["smtp", "submission", "pop3", "imap"] {
        let address = format!("127.0.0.1:{}", rig.port(service));
        assert!(
            listeners.contains(&(service.to_owned(), address)),
            "{service} in {listeners:?}"
        );
    }
    let sessions = status["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 3, "{sessions:?}");
    let find = |protocol: &str| {
        sessions
            .iter()
            .find(|s| s["protocol"] == protocol)
            .unwrap_or_else(|| panic!("a {protocol} session in {sessions:?}"))
    };
    let imap = find("imap");
    assert_eq!(imap["client"], addresses["imap"]);
    assert_eq!(imap["user"], "bob@example.jp");
    assert_eq!(imap["service"], "imap");
    let pop3 = find("pop3");
    assert_eq!(pop3["client"], addresses["pop3"]);
    assert_eq!(pop3["user"], "carol@example.jp");
    let smtp = find("smtp");
    assert_eq!(smtp["client"], addresses["smtp"]);
    assert!(smtp["user"].is_null(), "not logged in: {smtp}");
    assert!(status["queue"]["messages"].is_u64(), "{status}");

    // The table shows the same, one line per session.
    let out = dirmail(dir, &["status"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("Sessions (3):"), "{table}");
    let row = |client: &Value| {
        table
            .lines()
            .find(|l| l.contains(client.as_str().unwrap()))
            .unwrap_or_else(|| panic!("a row for {client} in\n{table}"))
            .to_owned()
    };
    assert!(row(&addresses["imap"]).contains("bob@example.jp"));
    assert!(row(&addresses["pop3"]).contains("carol@example.jp"));
    assert!(table.contains("Outbound queue: 0 message(s)"), "{table}");

    clients
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"done\n")
        .unwrap();
    assert!(clients.wait().unwrap().success());
}

#[test]
fn a_second_server_on_the_store_refuses_and_status_without_a_server_exits_1() {
    let mut rig = Rig::start("");
    let dir = rig.dir.path().to_owned();
    // Every listener of the second one is on port 0, so only the store can be in the way.
    let mut second = Command::new(env!("CARGO_BIN_EXE_dirmail"))
        .arg("serve")
        .current_dir(&dir)
        .env_remove("DIRMAIL_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let exited = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let Some(exited) = exited else {
        let _ = second.kill();
        panic!("a second server on the same store kept running");
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(second.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(exited.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("another dirmail server is running on this store"),
        "{stderr}"
    );
    // The first server still answers.
    assert_eq!(dirmail(&dir, &["status"]).status.code(), Some(0));

    assert_eq!(rig.server.stop(), Some(0));
    let socket = dir.join("dirmail-data/control.sock");
    assert!(!socket.exists(), "the socket goes when the server stops");
    let out = dirmail(&dir, &["status"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no dirmail server is running for this store (no control socket at /")
            && stderr.contains("dirmail-data/control.sock)"),
        "{stderr}"
    );
    let out = dirmail(&dir, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let error: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["ok"], false);
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .starts_with("no dirmail server is running"),
        "{error}"
    );
}

#[test]
fn a_store_path_too_long_for_a_socket_serves_without_one_and_status_says_why() {
    let scratch = crate::common::Scratch::new();
    let data_dir = "d".repeat(120);
    scratch.config(&format!(
        "[store]\ndata_dir = \"{data_dir}\"\n[server]\nhostname = \"mail.example.jp\"\n\
         [smtp]\nport = 0\nsubmission_port = false\nsmtps_port = false\n\
         [pop3]\nport = false\npop3s_port = false\n[imap]\nport = false\nimaps_port = false\n"
    ));
    let server = crate::common::Server::start_logged(scratch.path());
    assert!(
        server.log().contains("too long for a control socket"),
        "{}",
        server.log()
    );
    let out = scratch.run(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the store's path is too long for a control socket"),
        "{stderr}"
    );
}
