//! Outbound delivery into a real Postfix (Debian's `postfix`, installed by ci/install-deps): a
//! private instance of the test's own (configuration, queue, data and mail under a temporary
//! directory, smtpd on 127.0.40.2 only, on a port the test picks) delivers `pf.test` into a
//! virtual Maildir; a dnsmasq of the test's own (the `dns-fixture` crate) gives `pf.test` its
//! MX there; the message goes in through dirmail's submission port with AUTH (Python's
//! smtplib), and what Postfix wrote is compared with what was sent.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dns_fixture::{DnsServer, Records};

use crate::common::{Scratch, Server};

const PASSWORD: &str = "Outbound-Passw0rd";
/// How long the message may take to arrive (a bound for a failure, not a measurement).
const ARRIVE_WITHIN: Duration = Duration::from_secs(60);
/// The receiving Postfix's address: its own, so port 25-style sharing never meets another test.
const POSTFIX_ADDR: &str = "127.0.40.2";
/// What Postfix's virtual delivery agent runs as (`nobody`): it refuses uids below 100.
const MAIL_UID: u32 = 65534;

/// A private Postfix accepting `domain`'s `users` into Maildirs, stopped (by its master's pid)
/// when dropped.
struct Postfix {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    domain: String,
}

impl Postfix {
    fn start(domain: &str, users: &[&str]) -> Postfix {
        assert!(
            Path::new("/usr/sbin/postfix").exists(),
            "Postfix is not installed (ci/install-deps installs Debian's `postfix`)"
        );
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // The virtual agent runs as MAIL_UID and must reach the Maildirs under the tempdir.
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
        for sub in ["etc", "queue", "data", "log", "mail"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        chown(&root.join("data"), "postfix");
        std::os::unix::fs::chown(root.join("mail"), Some(MAIL_UID), Some(MAIL_UID)).unwrap();
        let port = free_port(POSTFIX_ADDR);
        let d = root.display();
        let main_cf = format!(
            "compatibility_level = 3.6\n\
             config_directory = {d}/etc\nqueue_directory = {d}/queue\ndata_directory = {d}/data\n\
             mail_owner = postfix\nsetgid_group = postdrop\n\
             myhostname = mx.{domain}\nmydomain = {domain}\n\
             inet_interfaces = all\ninet_protocols = ipv4\nmynetworks = 127.0.0.0/8\n\
             mydestination =\nlocal_recipient_maps =\nalias_maps =\nalias_database =\nrelayhost =\n\
             smtpd_banner = $myhostname ESMTP Postfix\nbiff = no\n\
             virtual_mailbox_domains = {domain}\n\
             virtual_mailbox_base = {d}/mail\n\
             virtual_mailbox_maps = texthash:{d}/etc/vmailbox\n\
             virtual_uid_maps = static:{MAIL_UID}\nvirtual_gid_maps = static:{MAIL_UID}\n\
             virtual_transport = virtual\n\
             smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n\
             maillog_file = {d}/log/maillog\nmaillog_file_prefixes = {d}\n"
        );
        // Debian's master.cf without chroot, smtpd on the test's address and port only: the
        // address is in the service name, since `inet_interfaces` accepts only addresses an
        // interface has (lo has 127.0.0.1 alone; the rest of 127/8 is routed to it).
        let master_cf = format!(
            "{POSTFIX_ADDR}:{port} inet n - n - - smtpd\n\
             pickup unix n - n 60 1 pickup\n\
             cleanup unix n - n - 0 cleanup\n\
             qmgr unix n - n 300 1 qmgr\n\
             rewrite unix - - n - - trivial-rewrite\n\
             bounce unix - - n - 0 bounce\n\
             defer unix - - n - 0 bounce\n\
             trace unix - - n - 0 bounce\n\
             verify unix - - n - 1 verify\n\
             proxymap unix - - n - - proxymap\n\
             smtp unix - - n - - smtp\n\
             relay unix - - n - - smtp\n\
             showq unix n - n - - showq\n\
             error unix - - n - - error\n\
             retry unix - - n - - error\n\
             discard unix - - n - - discard\n\
             virtual unix - n n - - virtual\n\
             anvil unix - - n - 1 anvil\n\
             scache unix - - n - 1 scache\n\
             postlog unix-dgram n - n - 1 postlogd\n"
        );
        std::fs::write(root.join("etc/main.cf"), main_cf).unwrap();
        std::fs::write(root.join("etc/master.cf"), master_cf).unwrap();
        // A trailing slash makes the mailbox a Maildir.
        let map: String = users
            .iter()
            .map(|u| format!("{u}@{domain} {domain}/{u}/\n"))
            .collect();
        std::fs::write(root.join("etc/vmailbox"), map).unwrap();
        let postfix = Postfix {
            dir,
            addr: format!("{POSTFIX_ADDR}:{port}").parse().unwrap(),
            domain: domain.to_owned(),
        };
        // `postfix start` says nothing and does nothing without a terminal: give it one.
        let out = postfix.control("start");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(postfix.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "Postfix did not listen on {}: {out}\n{}",
                postfix.addr,
                postfix.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        postfix
    }

    fn control(&self, command: &str) -> String {
        let out = Command::new("script")
            .args([
                "-qec",
                &format!("postfix -c {}/etc {command}", self.dir.path().display()),
                "/dev/null",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log/maillog")).unwrap_or_default()
    }

    fn master_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.path().join("queue/pid/master.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn inbox(&self, user: &str) -> PathBuf {
        self.dir
            .path()
            .join("mail")
            .join(&self.domain)
            .join(user)
            .join("new")
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let master = self.master_pid();
        self.control("stop");
        let Some(pid) = master else { return };
        let deadline = Instant::now() + Duration::from_secs(10);
        // Signal 0 asks whether the master (ours, by its pid file) is still there.
        while Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            if Instant::now() > deadline {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn chown(path: &Path, user: &str) {
    let out = Command::new("chown")
        .args([user, &path.display().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "chown {user}: {out:?}");
}

/// A port free on `addr` now (the system's pick), for a server that must be told its port.
fn free_port(addr: &str) -> u16 {
    TcpListener::bind((addr, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    found.sort();
    found
}

#[test]
fn a_message_sent_through_submission_arrives_intact_in_a_real_postfix() {
    let postfix = Postfix::start("pf.test", &["alice"]);
    let dns = DnsServer::start(
        &Records::new()
            .local_domain("test")
            .mx("pf.test", "mx.pf.test", 10)
            .host("mx.pf.test", &["127.0.40.2".parse().unwrap()]),
    )
    .unwrap();
    let store = Scratch::new();
    store.config(&format!(
        "[server]\nhostname = \"mail.example.jp\"\n\
         [smtp]\nport = 0\nsubmission_port = 0\nsmtps_port = false\n\
         [pop3]\nport = false\npop3s_port = false\n[imap]\nport = false\nimaps_port = false\n\
         [tls]\nplaintext_auth = \"loopback\"\n\
         [outbound]\ndns_servers = [\"{}\"]\nport = {}\n\
         [queue]\nretry = [\"1s\"]\n",
        dns.addr(),
        postfix.addr.port()
    ));
    store.expect(0, &["add", "example.jp"]);
    store.expect(0, &["add", "bob@example.jp", "--create-user", PASSWORD]);
    let server = Server::start_logged(store.path());

    // A body with a line that starts with a dot (stuffed on the wire both times), a long line
    // and a header folded over two lines: all must come out as they went in.
    let script = r#"
import smtplib, sys
port, password = int(sys.argv[1]), sys.argv[2]
body = ("Hello Postfix.\r\n.a line that starts with a dot\r\n..two dots\r\n"
        + "x" * 900 + "\r\nEND\r\n")
msg = ("From: Bob <bob@example.jp>\r\nTo: alice@pf.test\r\nSubject: to a real postfix\r\n"
       "X-Folded: first part\r\n second part\r\nMessage-ID: <pf-1@example.jp>\r\n\r\n" + body)
with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
    s.ehlo("client.example.jp")
    s.login("bob@example.jp", password)
    refused = s.sendmail("bob@example.jp", ["alice@pf.test"], msg)
    assert not refused, refused
"#;
    let out = Command::new("python3")
        .args([
            "-c",
            script,
            &server.port("submission").to_string(),
            PASSWORD,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "smtplib: {}\nlog:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );

    let deadline = Instant::now() + ARRIVE_WITHIN;
    let got = loop {
        if let Some(file) = files(&postfix.inbox("alice")).first() {
            break String::from_utf8(std::fs::read(file).unwrap()).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "nothing arrived in Postfix within {ARRIVE_WITHIN:?}\ndirmail's log:\n{}\nPostfix's log:\n{}",
            server.log(),
            postfix.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // Postfix stores Maildir files with bare LF line ends.
    let (headers, body) = got.split_once("\n\n").expect("a header/body split");
    assert_eq!(
        body,
        format!(
            "Hello Postfix.\n.a line that starts with a dot\n..two dots\n{}\nEND\n",
            "x".repeat(900)
        ),
        "the body as sent"
    );
    for header in [
        "From: Bob <bob@example.jp>\n",
        "To: alice@pf.test\n",
        "Subject: to a real postfix\n",
        "X-Folded: first part\n second part\n",
        "Message-ID: <pf-1@example.jp>\n",
        "Return-Path: <bob@example.jp>\n",
        "Delivered-To: alice@pf.test\n",
    ] {
        assert!(headers.contains(header), "{header:?} in:\n{headers}");
    }
    // Postfix's trace header names dirmail's EHLO; ours is below it.
    assert!(headers.contains("by mx.pf.test (Postfix)"), "{headers}");
    assert!(
        headers.contains("by mail.example.jp (dirmail)"),
        "{headers}"
    );

    // The queue entry goes once Postfix said 250; the attempt is logged with Postfix's reply.
    let queue = store.mailroot().join(".queue/env");
    while !files(&queue).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the queue entry stayed:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = server.log();
    assert!(log.contains("mx.pf.test [127.0.40.2:"), "{log}");
    assert!(
        postfix.log().contains("status=sent (delivered to maildir)"),
        "{}",
        postfix.log()
    );
}
