//! What the store looks like on disk: permissions, Maildirs made and removed with mailboxes,
//! the password record of `passwd-file` (R5), and a domain that holds mail needing `--force`.

use std::os::unix::fs::PermissionsExt;

use crate::common::{Scratch, Server};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn permissions_and_maildirs() {
    let s = Scratch::new();
    s.expect(0, &["add", "example.jp"]);
    s.expect(0, &["add", "a@example.jp", "--create-user", "Pass-word1"]);
    let db = s.path().join("dirmail-data/dirmail.db");
    assert_eq!(mode(&db), 0o600);
    assert_eq!(mode(&s.mailroot()), 0o700);
    let maildir = s.mailroot().join("example.jp/a");
    for sub in ["cur", "new", "tmp"] {
        assert_eq!(mode(&maildir.join(sub)), 0o700, "{sub}");
    }
    assert_eq!(mode(&s.mailroot().join("example.jp")), 0o700);

    // Mail in the mailbox: deleting needs --force, and the refusal counts it.
    std::fs::write(maildir.join("new/1.test"), "Subject: hi\r\n\r\nhello\r\n").expect("write");
    let out = s.expect(3, &["delete", "a@example.jp"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 message(s)"));
    let out = s.expect(3, &["delete", "example.jp"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 mailbox(es) holding 1 message(s)"));
    assert!(
        maildir.join("new/1.test").exists(),
        "a refusal changes nothing"
    );
    s.expect(0, &["delete", "example.jp", "--force"]);
    assert!(!s.mailroot().join("example.jp").exists());
    // The local account outlives its mailbox unless --delete-user was given.
    let out = s.expect(0, &["account", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("POP3 Users"));
}

#[test]
fn passwd_file_record_lives_and_dies_with_the_mailbox() {
    let s = Scratch::new();
    s.expect(0, &["set", "authentication", "passwd-file"]);
    s.expect(0, &["set", "mailbox-layout", "shared"]);
    s.expect(0, &["add", "example.jp"]);
    s.expect(0, &["add", "a@example.jp", "--create-user", "Pass-word1"]);
    let record = s.mailroot().join("inbox/a/dirmail-passwd");
    assert_eq!(mode(&record), 0o600);
    let text = std::fs::read_to_string(&record).expect("record");
    assert!(text.starts_with("a@example.jp:$argon2id$"), "{text}");
    assert!(!text.contains("Pass-word1"));
    s.expect(0, &["auth", "test", "a@example.jp", "Pass-word1"]);
    s.expect(3, &["auth", "test", "a@example.jp", "wrong"]);
    s.expect(0, &["changepwd", "a@example.jp", "New-pass2"]);
    s.expect(3, &["auth", "test", "a", "Pass-word1"]);
    s.expect(0, &["auth", "test", "a", "New-pass2"]);
    s.expect(0, &["delete", "a@example.jp"]);
    assert!(!record.exists());
    assert!(!s.mailroot().join("inbox/a").exists());
}

#[test]
fn set_edits_the_file_in_place_keeping_comments() {
    let s = Scratch::new();
    s.expect(0, &["init", "--force"]);
    s.expect(0, &["set", "port", "1995"]);
    s.expect(0, &["set", "socket", "64", "500", "8", "32"]);
    let text = std::fs::read_to_string(s.path().join("dirmail.toml")).expect("read");
    assert!(text.contains("# dirmail.toml: the deployment settings"));
    assert!(text.contains("port = 1995"));
    assert!(text.contains("socket_max = 500"));
    s.expect(2, &["set", "port", "70000"]);
    s.expect(2, &["set", "socket", "64", "5", "8", "32"]);
    let after = std::fs::read_to_string(s.path().join("dirmail.toml")).expect("read");
    assert_eq!(text, after, "a refused edit leaves the file as it was");
    let out = s.expect(0, &["get", "port"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1995");
}

#[test]
fn a_wrong_key_names_the_key_and_the_file() {
    let s = Scratch::new();
    std::fs::write(s.path().join("dirmail.toml"), "[server]\nhostnme = \"x\"\n").expect("write");
    let out = s.expect(2, &["list"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("hostnme") && err.contains("dirmail.toml"),
        "{err}"
    );
}

/// A `mailroot` others may write to (a mistaken `/tmp`, say) is refused with its reason, and
/// its mode is left alone: making it private would lock everyone else out of it.
#[test]
fn a_shared_directory_is_not_taken_over_as_the_mail_root() {
    let s = Scratch::new();
    let shared = s.path().join("shared");
    std::fs::create_dir(&shared).expect("mkdir");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    s.config(&format!(
        "[server]\nhostname = \"mail.example.jp\"\n[store]\nmailroot = \"{}\"\n",
        shared.display()
    ));
    let out = s.run(&["add", "example.jp"]);
    assert!(!out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("is shared"), "{said}");
    let meta = std::fs::metadata(&shared).expect("metadata");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o1777);
}

/// A crash between writing a message into `tmp/` and linking it into `new/` leaves the file
/// behind; `serve` removes such files once they are 36 hours old (at start, then daily), and
/// leaves younger ones, which may be deliveries in progress, and everything outside `tmp/`.
#[test]
fn serve_sweeps_crash_leftovers_from_tmp() {
    let s = Scratch::new();
    std::fs::write(
        s.path().join("dirmail.toml"),
        "[server]\nhostname = \"mail.example.jp\"\nlogging = 2\n\
         [smtp]\nport = 0\nsubmission_port = false\nsmtps_port = false\n\
         [pop3]\nport = false\npop3s_port = false\n[imap]\nport = false\nimaps_port = false\n",
    )
    .expect("config");
    s.expect(0, &["add", "example.jp"]);
    s.expect(0, &["add", "a@example.jp", "--create-user", "Pass-word1"]);
    let maildir = s.mailroot().join("example.jp/a");
    let aged = |path: std::path::PathBuf, hours: u64| {
        std::fs::write(&path, "Subject: left behind\r\n\r\n").expect("write");
        let when = std::time::SystemTime::now() - std::time::Duration::from_secs(hours * 3600);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(when))
            .expect("age the file");
        path
    };
    let stale = aged(maildir.join("tmp/1700000000.M1P1.crashed"), 37);
    let young = aged(maildir.join("tmp/1700000000.M2P1.writing"), 35);
    let delivered = aged(maildir.join("cur/1700000000.M3P1.old:2,S"), 400);

    let mut server = Server::start_logged(s.path());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while stale.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!stale.exists(), "the 37-hour-old file in tmp/ is swept");
    assert!(young.exists(), "a 35-hour-old file may be in progress");
    assert!(delivered.exists(), "only tmp/ is swept");
    assert!(
        server
            .log()
            .contains("removed files a crash left in Maildir tmp/"),
        "the sweep says what it did:\n{}",
        server.log()
    );
    server.stop();
}
