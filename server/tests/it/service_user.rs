//! `[server] user` (issue 15): started as root, the server binds ports below 1024, then runs as
//! the service user (`nobody` here, which every Debian system has) and still delivers and
//! serves mail from a store that user owns; a missing user, or a store the user cannot write,
//! stops the start with a clear error. The tests that need root say so and skip without it.

use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::common::{Server, dirmail};
use crate::hostile_support::{Client, PASSWORD};

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `n` ports below 1024 that are free on 127.0.0.1 now (bound and let go; as root).
fn free_low_ports(n: usize) -> Vec<u16> {
    let ports: Vec<u16> = (600..1000)
        .filter(|&port| TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok())
        .take(n)
        .collect();
    assert_eq!(ports.len(), n, "not enough free ports below 1024");
    ports
}

/// A scratch directory anyone may pass through (temporary directories are 0700, and the
/// server will look into it as `nobody`), with a store holding `bob@example.jp`, and a
/// `dirmail.toml` of `config`.
fn scratch(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.path().join("dirmail.toml"), config).unwrap();
    for args in [
        &["add", "example.jp"][..],
        &["add", "bob@example.jp", "--create-user", PASSWORD],
    ] {
        let out = dirmail(dir.path(), args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir
}

fn give_to_nobody(path: &Path) {
    let status = Command::new("chown")
        .args(["-R", "nobody:"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// The ids on the `Uid:` or `Gid:` line of `/proc/<pid>/status`: real, effective, saved, fs.
fn ids(pid: u32, line: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(line))
        .unwrap_or_else(|| panic!("no {line} in /proc/{pid}/status"))
        .split_whitespace()
        .map(|id| id.parse().unwrap())
        .collect()
}

fn id_of(flag: &str) -> u32 {
    let out = Command::new("id").args([flag, "nobody"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn binds_ports_below_1024_as_root_then_serves_as_nobody() {
    if !is_root() {
        eprintln!("skipped: binding ports below 1024 and dropping to nobody needs root");
        return;
    }
    let ports = free_low_ports(2);
    let dir = scratch(&format!(
        "[server]\nhostname = \"mail.example.jp\"\nuser = \"nobody\"\n\
         [smtp]\nport = {}\nsubmission_port = false\nsmtps_port = false\n\
         [pop3]\nport = {}\npop3s_port = false\n[imap]\nport = false\nimaps_port = false\n\
         [tls]\nplaintext_auth = \"loopback\"\n",
        ports[0], ports[1]
    ));
    give_to_nobody(&dir.path().join("dirmail-data"));
    let mut server = Server::start_logged(dir.path());
    assert_eq!(
        (server.port("smtp"), server.port("pop3")),
        (ports[0], ports[1])
    );
    let (uid, gid) = (id_of("-u"), id_of("-g"));
    assert_ne!(uid, 0);
    assert_eq!(ids(server.pid(), "Uid:"), [uid; 4], "{}", server.log());
    assert_eq!(ids(server.pid(), "Gid:"), [gid; 4]);
    assert!(
        server.log().contains("running as nobody"),
        "{}",
        server.log()
    );

    // The store is the user's to write: a message is delivered over SMTP and read over POP3.
    let mut smtp = Client::connect(server.port("smtp"));
    assert!(smtp.reply().starts_with("220"));
    assert!(smtp.cmd("EHLO client.example").starts_with("250"));
    assert!(smtp.cmd("MAIL FROM:<alice@example.org>").starts_with("250"));
    assert!(smtp.cmd("RCPT TO:<bob@example.jp>").starts_with("250"));
    assert!(smtp.cmd("DATA").starts_with("354"));
    let sent = smtp.cmd("Subject: below 1024\r\n\r\nDelivered by nobody.\r\n.");
    assert!(sent.starts_with("250"), "{sent}\n{}", server.log());
    smtp.cmd("QUIT");
    let mut pop = Client::connect(server.port("pop3"));
    assert!(pop.pop_line().starts_with("+OK"));
    assert!(pop.pop("USER bob@example.jp").starts_with("+OK"));
    assert!(pop.pop(&format!("PASS {PASSWORD}")).starts_with("+OK"));
    assert!(pop.pop("RETR 1").starts_with("+OK"));
    assert!(pop.pop_body().contains("Delivered by nobody."));
    pop.pop("QUIT");
    let new = dir.path().join("dirmail-data/mail/example.jp/bob/new");
    let delivered = std::fs::read_dir(&new).unwrap().next().unwrap().unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(delivered.metadata().unwrap().uid(), uid);
    server.assert_alive();
    assert_eq!(server.stop(), Some(0));
}

#[test]
fn a_store_or_a_file_the_service_user_cannot_use_stops_the_start() {
    if !is_root() {
        eprintln!("skipped: becoming another user needs root");
        return;
    }
    // The store stays root's: the server must refuse rather than fail on the first delivery.
    let dir = scratch(
        "[server]\nhostname = \"mail.example.jp\"\nuser = \"nobody\"\n\
         [smtp]\nport = 0\nsubmission_port = false\nsmtps_port = false\n\
         [pop3]\nport = false\npop3s_port = false\n[imap]\nport = false\nimaps_port = false\n",
    );
    let out = serve(dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("not usable by nobody") && stderr.contains("chown -R nobody:"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ready"));

    // The store is nobody's now, but the file a reload reads again is root's alone.
    give_to_nobody(&dir.path().join("dirmail-data"));
    let config = dir.path().join("dirmail.toml");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = serve(dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("dirmail.toml is not readable by nobody"),
        "{stderr}"
    );
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut server = Server::start_logged(dir.path());
    server.assert_alive();
    assert_eq!(server.stop(), Some(0));
}

#[test]
fn a_service_user_that_does_not_exist_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("dirmail.toml"),
        "[server]\nuser = \"no-such-dirmail-user\"\n[smtp]\nport = 0\n",
    )
    .unwrap();
    let out = serve(dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("there is no user \"no-such-dirmail-user\""),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ready"));
}

/// `dirmail serve` in `dir`, expected to stop by itself.
fn serve(dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dirmail"))
        .arg("serve")
        .current_dir(dir)
        .env_remove("DIRMAIL_CONFIG")
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap()
}

/// `dist/dirmail.service` as `systemd-analyze verify` sees it, with `ExecStart` pointed at the
/// binary under test (verify checks that the program exists). Any warning fails the test: an
/// unknown or misspelt key is only a warning to systemd, and a hardening line it ignores is
/// no hardening at all.
#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dist/dirmail.service"
    ))
    .unwrap();
    assert!(
        unit.contains("\nType=notify\n") && unit.contains("ExecReload=/bin/kill -HUP $MAINPID")
    );
    let verify = Path::new("/usr/bin/systemd-analyze");
    if !verify.exists() {
        eprintln!("skipped: systemd-analyze is not installed (Debian package systemd)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = unit.replace("/usr/local/bin/dirmail", env!("CARGO_BIN_EXE_dirmail"));
    let path = dir.path().join("dirmail.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new(verify)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}
