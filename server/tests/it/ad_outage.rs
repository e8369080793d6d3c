//! Logins over POP3 and SMTP under Active Directory, and R24: while the domain controller
//! cannot be reached, a login fails as *temporary* (`-ERR [SYS/TEMP]`, `454 4.7.0`), never as a
//! wrong password, and works again once the DC is back. One test per fault, so the first to
//! fail does not hide the others.
//!
//! The faults pause and stop a DC, so these tests have a DC of their own (not
//! `samba_dc::shared()`, which `ad_directory` expects up), shared between them. A test that
//! changes whether the DC answers holds [`FAULTS`] for writing; a test that needs it answering
//! holds it for reading. Each test has its own store, server, mail group, domain and user, so
//! the only thing they share is the DC's availability, and [`Fault`] brings that back even
//! when a test fails halfway.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{OnceLock, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use base64::Engine;

use crate::common::{Scratch, Server, directory_section};

/// Held for writing while a test pauses or stops the DC, for reading while a test needs it up.
static FAULTS: RwLock<()> = RwLock::new(());

/// The DC of these tests, started by the first that needs it.
fn dc() -> &'static samba_dc::Dc {
    static DC: OnceLock<Result<samba_dc::Dc, String>> = OnceLock::new();
    DC.get_or_init(|| samba_dc::Dc::start().map_err(|e| e.to_string()))
        .as_ref()
        .unwrap_or_else(|e| panic!("a Samba AD DC for the outage tests: {e}"))
}

/// The DC answering, for as long as this is held. (A test that failed while holding a lock
/// poisons it, but [`Fault`] has already brought the DC back, so the poison is ignored.)
fn dc_up() -> RwLockReadGuard<'static, ()> {
    FAULTS.read().unwrap_or_else(PoisonError::into_inner)
}

/// Exclusive use of the DC for a fault; dropping it (also when the test panics) resumes a
/// paused DC and restarts a stopped one, so the next test finds it answering.
struct Fault {
    _exclusive: std::sync::RwLockWriteGuard<'static, ()>,
}

impl Fault {
    fn begin() -> Fault {
        Fault {
            _exclusive: FAULTS.write().unwrap_or_else(PoisonError::into_inner),
        }
    }
}

impl Drop for Fault {
    fn drop(&mut self) {
        let dc = dc();
        if dc.is_running() {
            // SIGCONT to a DC that is not paused does nothing.
            let _ = dc.resume();
        } else if let Err(e) = dc.restart() {
            eprintln!("ad_outage: the DC did not come back after a fault: {e}");
        }
    }
}

struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        // Longer than the server's retries against a DC that does not answer.
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let writer = stream.try_clone().expect("clone");
        let mut client = Client {
            reader: BufReader::new(stream),
            writer,
        };
        client.line();
        client
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read a reply");
        line
    }

    /// Sends a command; returns the (last line of the) reply.
    fn cmd(&mut self, command: &str) -> String {
        self.writer
            .write_all(format!("{command}\r\n").as_bytes())
            .expect("write");
        loop {
            let line = self.line();
            // SMTP continuation lines are `ddd-`; everything else is one line.
            if !(line.len() > 3 && line.as_bytes()[3] == b'-') {
                return line;
            }
        }
    }
}

/// A store under `ad` on the outage DC with the mail group `IMSUsers-<name>`, the domain
/// `<name>.outage.example` and the user `<name>@` that domain, served over plain SMTP,
/// submission and POP3.
struct Site {
    user: String,
    password: &'static str,
    /// Stopped before the store it runs in is removed (fields drop in this order).
    server: Server,
    _store: Scratch,
}

impl Site {
    fn new(name: &str) -> Site {
        Site::with_auth(name, "cache_ttl = \"0\"")
    }

    /// `auth` is the `[auth]` table's body.
    fn with_auth(name: &str, auth: &str) -> Site {
        let s = Scratch::new();
        // Clear-text logins over plain TCP keep these tests' client small; TLS is covered
        // elsewhere. No login cache: these tests are about what the DC answers, which the
        // cache would stand in for after the first login (docs/spec.md §2.1).
        s.config(&format!(
            "[server]\nhostname = \"mail.example.jp\"\n[tls]\nplaintext_auth = \"loopback\"\n\
             [auth]\n{auth}\n\
             [smtp]\nport = 0\nsubmission_port = 0\nsmtps_port = false\n\
             [pop3]\nport = 0\npop3s_port = false\n[imap]\nport = false\nimaps_port = false\n{}",
            directory_section(dc(), &format!("IMSUsers-{name}"), &dc().ldaps_url()),
        ));
        let domain = format!("{name}.outage.example");
        let user = format!("{name}@{domain}");
        let password = "Outage-Passw0rd";
        s.expect(0, &["set", "authentication", "ad"]);
        s.expect(0, &["add", &domain]);
        s.expect(0, &["add", &user, "--create-user", password]);
        let server = Server::start(s.path());
        Site {
            user,
            password,
            server,
            _store: s,
        }
    }

    fn pop3_login(&self, password: &str) -> String {
        let mut c = Client::connect(self.server.port("pop3"));
        c.cmd(&format!("USER {}", self.user));
        let answer = c.cmd(&format!("PASS {password}"));
        c.cmd("QUIT");
        answer
    }

    fn smtp_auth(&self, password: &str) -> String {
        let mut c = Client::connect(self.server.port("submission"));
        c.cmd("EHLO outage.test");
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("\0{}\0{password}", self.user));
        let answer = c.cmd(&format!("AUTH PLAIN {token}"));
        c.cmd("QUIT");
        answer
    }

    fn rcpt(&self) -> String {
        let mut c = Client::connect(self.server.port("smtp"));
        c.cmd("EHLO outage.test");
        c.cmd("MAIL FROM:<someone@elsewhere.example>");
        let answer = c.cmd(&format!("RCPT TO:<{}>", self.user));
        c.cmd("QUIT");
        answer
    }

    /// Before a fault: the right password opens the mailbox, so what the fault changes is
    /// the fault's doing.
    #[track_caller]
    fn assert_logs_in(&self) {
        let answer = self.pop3_login(self.password);
        assert!(answer.starts_with("+OK"), "{answer}");
    }
}

#[test]
fn with_the_dc_up_logins_work_and_a_wrong_password_is_refused() {
    let _up = dc_up();
    let site = Site::new("steady");
    let answer = site.rcpt();
    assert!(answer.starts_with("250"), "{answer}");
    site.assert_logs_in();
    let answer = site.smtp_auth(site.password);
    assert!(answer.starts_with("235"), "{answer}");
    let wrong = site.pop3_login("Wrong-Passw0rd");
    assert!(wrong.starts_with("-ERR [AUTH]"), "{wrong}");
}

#[test]
fn r24_a_paused_dc_is_a_temporary_failure() {
    let _fault = Fault::begin();
    let site = Site::new("paused");
    site.assert_logs_in();

    // Paused: connections hang; after the retries the answer is temporary.
    dc().pause().expect("pause the DC");
    let answer = site.pop3_login(site.password);
    assert!(answer.starts_with("-ERR [SYS/TEMP]"), "{answer}");
    let answer = site.smtp_auth(site.password);
    assert!(answer.starts_with("454 4.7.0"), "{answer}");
    let answer = site.rcpt();
    assert!(answer.starts_with("451 4.4.3"), "{answer}");
    dc().resume().expect("resume the DC");
    site.assert_logs_in();
}

#[test]
fn r24_a_stopped_dc_is_a_temporary_failure() {
    let _fault = Fault::begin();
    let site = Site::new("stopped");
    site.assert_logs_in();

    // Stopped: connections are refused; the same, then back after a restart.
    dc().stop().expect("stop the DC");
    let answer = site.pop3_login(site.password);
    assert!(answer.starts_with("-ERR [SYS/TEMP]"), "{answer}");
    let answer = site.smtp_auth(site.password);
    assert!(answer.starts_with("454 4.7.0"), "{answer}");
    let answer = site.rcpt();
    assert!(answer.starts_with("451 4.4.3"), "{answer}");
    dc().restart().expect("restart the DC");
    site.assert_logs_in();
}

#[test]
fn r23_a_user_taken_out_of_the_mail_group_can_neither_log_in_nor_get_mail() {
    let _up = dc_up();
    let site = Site::new("ousted");
    site.assert_logs_in();
    let mut admin = dc().admin().expect("admin");
    let user = admin
        .resolve("ousted")
        .expect("the user's DN (sAMAccountName ousted, R4)");
    let group = admin.resolve("IMSUsers-ousted").expect("the mail group");
    admin
        .remove_members(&group, &[&user])
        .expect("remove from the group");
    let answer = site.pop3_login(site.password);
    assert!(answer.starts_with("-ERR [AUTH]"), "{answer}");
    let answer = site.rcpt();
    assert!(answer.starts_with("550 5.1.1"), "{answer}");
}

/// docs/spec.md §2.1: with the login cache on, a password the DC accepted a moment ago still
/// logs in while the DC is down (the cache does not ask it); any other password must reach the
/// DC, and fails as R24 says, never as a wrong password.
#[test]
fn a_login_answered_from_the_cache_needs_no_dc() {
    let _fault = Fault::begin();
    let site = Site::with_auth("cached", "cache_ttl = \"1h\"");
    site.assert_logs_in();
    dc().stop().expect("stop the DC");
    let answer = site.pop3_login(site.password);
    let wrong = site.pop3_login("Other-Passw0rd");
    dc().restart().expect("restart the DC");
    assert!(answer.starts_with("+OK"), "{answer}");
    assert!(wrong.starts_with("-ERR [SYS/TEMP]"), "{wrong}");
    site.assert_logs_in();
}
