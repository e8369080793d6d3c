//! The login cache (docs/spec.md, "The login cache") with real clients (Python's poplib and
//! imaplib) against a running `dirmail serve`: a password found right is answered from the
//! cache (the server's debug log says so), a wrong one never is, and the administration tool,
//! another process, changing the password, locking or deleting the mailbox or setting its mail
//! secret takes effect at the very next login.

use std::process::Command;

use crate::common::{Scratch, Server};

/// `login PROTOCOL PORT USER PASSWORD SOURCE` → `ok`, or `refused …`; the connection comes
/// from the loopback address SOURCE.
const CLIENT: &str = r#"
import imaplib, poplib, socket, sys
protocol, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
source = sys.argv[5]
connect = socket.create_connection
socket.create_connection = lambda address, timeout, *rest: connect(address, timeout, (source, 0))
if protocol == "pop3":
    p = poplib.POP3("127.0.0.1", port, timeout=60)
    try:
        p.user(user)
        p.pass_(password)
        p.quit()
        print("ok")
    except poplib.error_proto as e:
        print("refused " + e.args[0].decode())
else:
    i = imaplib.IMAP4("127.0.0.1", port, timeout=60)
    try:
        i.login(user, password)
        i.logout()
        print("ok")
    except imaplib.IMAP4.error as e:
        print("refused " + str(e))
"#;

struct Rig {
    scratch: Scratch,
    server: Server,
    /// The last byte of the next client's loopback address.
    source: std::cell::Cell<u8>,
    /// Each login from an address of its own, so the throttle's waits after the failures
    /// this test makes on purpose do not add up; false: all from 127.0.0.1.
    fresh_sources: bool,
}

impl Rig {
    fn start(auth: &str) -> Rig {
        let scratch = Scratch::new();
        scratch.config(&format!(
            "[server]\nhostname = \"mail.example.jp\"\nlogging = 3\n\
             [smtp]\nport = false\nsubmission_port = false\nsmtps_port = false\n\
             [pop3]\nport = 0\npop3s_port = false\n[imap]\nport = 0\nimaps_port = false\n\
             [tls]\nplaintext_auth = \"loopback\"\n{auth}"
        ));
        scratch.expect(0, &["add", "example.jp"]);
        scratch.expect(0, &["add", "bob@example.jp", "--create-user", "Bob-pw1"]);
        let server = Server::start_logged(scratch.path());
        Rig {
            scratch,
            server,
            source: std::cell::Cell::new(10),
            fresh_sources: true,
        }
    }

    /// One login by a real client; `ok` or `refused …`.
    fn login(&self, protocol: &str, user: &str, password: &str) -> String {
        let source = if self.fresh_sources {
            let n = self.source.get();
            self.source
                .set(n.checked_add(1).expect("fewer than 245 logins"));
            format!("127.0.0.{n}")
        } else {
            "127.0.0.1".to_owned()
        };
        let out = Command::new("/usr/bin/python3")
            .args(["-c", CLIENT, protocol])
            .arg(self.server.port(protocol).to_string())
            .args([user, password, &source])
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn count(&self, words: &str) -> usize {
        self.server.log().matches(words).count()
    }

    fn hits(&self) -> usize {
        self.count("password answered from the login cache")
    }

    fn failures_from_cache(&self) -> usize {
        self.count("refused from the login cache")
    }
}

fn ok(answer: &str) {
    assert_eq!(answer, "ok");
}

fn refused(answer: &str) {
    assert!(answer.starts_with("refused"), "{answer}");
}

#[test]
fn a_cached_login_is_refused_at_once_after_changepwd_lock_and_delete() {
    let rig = Rig::start("");
    ok(&rig.login("pop3", "bob@example.jp", "Bob-pw1"));
    assert_eq!(rig.hits(), 0, "the first login is checked");
    ok(&rig.login("pop3", "bob@example.jp", "Bob-pw1"));
    // Any protocol, and the bare name R8 resolves, share the entry.
    ok(&rig.login("imap", "bob", "Bob-pw1"));
    assert_eq!(rig.hits(), 2, "{}", rig.server.log());

    // A wrong password right after the right one: refused, never from the positive entry.
    refused(&rig.login("pop3", "bob@example.jp", "Bob-pw2"));
    refused(&rig.login("imap", "bob@example.jp", "bob-pw1"));
    assert_eq!(rig.hits(), 2);
    // And the right one still works.
    ok(&rig.login("pop3", "bob@example.jp", "Bob-pw1"));
    assert_eq!(rig.hits(), 3);

    // The administration tool, another process, changes the password while serve runs.
    rig.scratch
        .expect(0, &["changepwd", "bob@example.jp", "New-pw2"]);
    refused(&rig.login("pop3", "bob@example.jp", "Bob-pw1"));
    refused(&rig.login("imap", "bob@example.jp", "Bob-pw1"));
    ok(&rig.login("imap", "bob@example.jp", "New-pw2"));
    ok(&rig.login("pop3", "bob@example.jp", "New-pw2"));
    assert_eq!(rig.hits(), 4, "the new password is cached in turn");

    // Locked: refused at the next login, cached or not.
    rig.scratch.expect(0, &["lock", "bob@example.jp"]);
    refused(&rig.login("pop3", "bob@example.jp", "New-pw2"));
    rig.scratch.expect(0, &["unlock", "bob@example.jp"]);
    ok(&rig.login("pop3", "bob@example.jp", "New-pw2"));
    ok(&rig.login("pop3", "bob@example.jp", "New-pw2"));
    let hits = rig.hits();

    // A mail secret set empties the cache too: the next login is checked again.
    rig.scratch
        .expect(0, &["secret", "set", "bob@example.jp", "tanstaaf"]);
    ok(&rig.login("pop3", "bob@example.jp", "New-pw2"));
    assert_eq!(rig.hits(), hits, "checked again after `secret set`");

    // Deleted with its account: gone at once.
    ok(&rig.login("pop3", "bob@example.jp", "New-pw2"));
    rig.scratch
        .expect(0, &["delete", "bob@example.jp", "--delete-user", "--force"]);
    refused(&rig.login("pop3", "bob@example.jp", "New-pw2"));
    // A new bob with the old password is a new account: checked, not answered from the cache.
    rig.scratch
        .expect(0, &["add", "bob@example.jp", "--create-user", "Other-pw3"]);
    let hits = rig.hits();
    refused(&rig.login("pop3", "bob@example.jp", "New-pw2"));
    ok(&rig.login("pop3", "bob@example.jp", "Other-pw3"));
    assert_eq!(rig.hits(), hits);
    // No password in the log.
    let log = rig.server.log();
    for password in ["Bob-pw1", "Bob-pw2", "New-pw2", "Other-pw3", "tanstaaf"] {
        assert!(!log.contains(password), "{password} in the log");
    }
}

#[test]
fn a_failure_is_remembered_briefly_still_counts_and_never_keeps_the_right_password_out() {
    let mut rig = Rig::start("");
    rig.fresh_sources = false;
    refused(&rig.login("pop3", "bob@example.jp", "Guess-1"));
    assert_eq!(rig.failures_from_cache(), 0);
    refused(&rig.login("pop3", "bob@example.jp", "Guess-1"));
    assert_eq!(rig.failures_from_cache(), 1, "{}", rig.server.log());
    // An unknown user's repeated guess is answered the same way, so timing tells nothing.
    refused(&rig.login("pop3", "nobody@example.jp", "Guess-1"));
    refused(&rig.login("pop3", "nobody@example.jp", "Guess-1"));
    assert_eq!(rig.failures_from_cache(), 2);
    // The throttle counted every one of the four, the cached ones too: each waited its delay.
    let log = rig.server.log();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("login refused"))
        .collect();
    assert_eq!(refusals.len(), 4, "{log}");
    assert!(
        refusals.iter().all(|l| !l.contains("delay_ms=0")),
        "{refusals:#?}"
    );
    // The right password is not kept out by the remembered failure.
    ok(&rig.login("pop3", "bob@example.jp", "Bob-pw1"));
    // A password changed to one that failed a moment ago works at once.
    rig.scratch
        .expect(0, &["changepwd", "bob@example.jp", "Guess-1"]);
    ok(&rig.login("pop3", "bob@example.jp", "Guess-1"));
}

#[test]
fn a_zero_cache_ttl_turns_the_cache_off() {
    let rig = Rig::start("[auth]\ncache_ttl = \"0\"\n");
    for _ in 0..2 {
        ok(&rig.login("pop3", "bob@example.jp", "Bob-pw1"));
        refused(&rig.login("pop3", "bob@example.jp", "Wrong-1"));
    }
    assert_eq!((rig.hits(), rig.failures_from_cache()), (0, 0));
}
