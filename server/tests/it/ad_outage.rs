//! Logins over POP3 and SMTP under Active Directory, and R24: while the domain controller
//! cannot be reached, a login fails as *temporary* (`-ERR [SYS/TEMP]`, `454 4.7.0`), never as a
//! wrong password, and works again once the DC is back. This test has a DC of its own, since
//! it pauses and stops it.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::{Scratch, Server, directory_section};
use base64::Engine;

struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
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

fn pop3_login(port: u16, user: &str, password: &str) -> String {
    let mut c = Client::connect(port);
    c.cmd(&format!("USER {user}"));
    let answer = c.cmd(&format!("PASS {password}"));
    c.cmd("QUIT");
    answer
}

fn smtp_auth(port: u16, user: &str, password: &str) -> String {
    let mut c = Client::connect(port);
    c.cmd("EHLO outage.test");
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
    let answer = c.cmd(&format!("AUTH PLAIN {token}"));
    c.cmd("QUIT");
    answer
}

#[test]
fn r24_an_unreachable_directory_is_a_temporary_failure() {
    let dc = samba_dc::Dc::start().expect("a Samba AD DC of this test's own");
    let s = Scratch::new();
    // Clear-text logins over plain TCP keep this test's client small; TLS is covered elsewhere.
    s.config(&format!(
        "[server]\nhostname = \"mail.example.jp\"\n[tls]\nplaintext_auth = \"loopback\"\n\
         [smtp]\nport = 0\nsubmission_port = 0\nsmtps_port = false\n\
         [pop3]\nport = 0\npop3s_port = false\n[imap]\nport = false\nimaps_port = false\n{}",
        directory_section(&dc, "IMSUsers", &dc.ldaps_url())
    ));
    s.expect(0, &["set", "authentication", "ad"]);
    s.expect(0, &["add", "outage.example"]);
    s.expect(
        0,
        &[
            "add",
            "frank@outage.example",
            "--create-user",
            "Frank-Passw0rd",
        ],
    );
    let server = Server::start(s.path());
    let (pop3, submission) = (server.port("pop3"), server.port("submission"));
    let rcpt = |to: &str| {
        let mut c = Client::connect(server.port("smtp"));
        c.cmd("EHLO outage.test");
        c.cmd("MAIL FROM:<someone@elsewhere.example>");
        let answer = c.cmd(&format!("RCPT TO:<{to}>"));
        c.cmd("QUIT");
        answer
    };
    assert!(rcpt("frank@outage.example").starts_with("250"));

    assert!(pop3_login(pop3, "frank@outage.example", "Frank-Passw0rd").starts_with("+OK"));
    assert!(smtp_auth(submission, "frank@outage.example", "Frank-Passw0rd").starts_with("235"));
    let wrong = pop3_login(pop3, "frank@outage.example", "Wrong-Passw0rd");
    assert!(wrong.starts_with("-ERR [AUTH]"), "{wrong}");

    // Paused: connections hang; after the retries the answer is temporary.
    dc.pause().expect("pause the DC");
    let answer = pop3_login(pop3, "frank@outage.example", "Frank-Passw0rd");
    assert!(answer.starts_with("-ERR [SYS/TEMP]"), "{answer}");
    let answer = smtp_auth(submission, "frank@outage.example", "Frank-Passw0rd");
    assert!(answer.starts_with("454 4.7.0"), "{answer}");
    let answer = rcpt("frank@outage.example");
    assert!(answer.starts_with("451 4.4.3"), "{answer}");
    dc.resume().expect("resume the DC");
    assert!(pop3_login(pop3, "frank@outage.example", "Frank-Passw0rd").starts_with("+OK"));

    // Stopped: connections are refused; the same, then back after a restart.
    dc.stop().expect("stop the DC");
    let answer = pop3_login(pop3, "frank@outage.example", "Frank-Passw0rd");
    assert!(answer.starts_with("-ERR [SYS/TEMP]"), "{answer}");
    dc.restart().expect("restart the DC");
    assert!(pop3_login(pop3, "frank@outage.example", "Frank-Passw0rd").starts_with("+OK"));

    // R23: taken out of the mail group, the user can neither log in nor get mail.
    let mut admin = dc.admin().expect("admin");
    let frank = admin
        .resolve("frank")
        .expect("frank's DN (sAMAccountName frank, R4)");
    let group = admin.resolve("IMSUsers").expect("the mail group");
    admin
        .remove_members(&group, &[&frank])
        .expect("remove from the group");
    let answer = pop3_login(pop3, "frank@outage.example", "Frank-Passw0rd");
    assert!(answer.starts_with("-ERR [AUTH]"), "{answer}");
    let answer = rcpt("frank@outage.example");
    assert!(answer.starts_with("550 5.1.1"), "{answer}");
}
