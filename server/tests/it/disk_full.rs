//! A full disk: with the mail root on a small tmpfs, a delivery that does not fit gets
//! `452 4.3.1`, nothing half-written stays behind, everything accepted before is intact, and
//! once room is made the server delivers again. Needs root (it mounts a tmpfs), as CI runs.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use crate::common::{Scratch, Server};

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn reply(reader: &mut BufReader<TcpStream>) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return all;
        }
        all.push_str(&line);
        if line.len() >= 4 && line.as_bytes()[3] == b' ' {
            return all;
        }
    }
}

/// Sends one message of `size` bytes and returns the reply to its end of DATA.
fn send(port: u16, n: usize, size: usize) -> String {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut w = stream.try_clone().expect("clone");
    let mut r = BufReader::new(stream);
    reply(&mut r);
    for line in [
        "EHLO full.test\r\n",
        "MAIL FROM:<a@example.jp>\r\n",
        "RCPT TO:<bob@example.jp>\r\n",
        "DATA\r\n",
    ] {
        w.write_all(line.as_bytes()).expect("write");
        reply(&mut r);
    }
    let mut body = format!("Subject: message {n}\r\n\r\n");
    while body.len() < size {
        body.push_str("0123456789012345678901234567890123456789012345678901234567890123456789\r\n");
    }
    body.push_str(".\r\n");
    w.write_all(body.as_bytes()).expect("write the message");
    let answer = reply(&mut r);
    let _ = w.write_all(b"QUIT\r\n");
    answer
}

#[test]
fn a_full_disk_gives_452_and_loses_nothing_accepted() {
    let s = Scratch::new();
    let mailroot = s.path().join("mailroot");
    std::fs::create_dir_all(&mailroot).expect("mkdir");
    let mounted = Command::new("mount")
        // A new tmpfs is 1777 unless told otherwise, and the store refuses a shared directory.
        .args(["-t", "tmpfs", "-o", "size=300k,mode=0700", "tmpfs"])
        .arg(&mailroot)
        .status()
        .expect("run mount");
    assert!(
        mounted.success(),
        "this test mounts a tmpfs and needs root, as CI has"
    );
    let _mount = Mount(mailroot.clone());
    std::fs::write(
        s.path().join("dirmail.toml"),
        format!(
            "[store]\nmailroot = \"{}\"\n[server]\nhostname = \"mail.example.jp\"\nlogging = 1\n\
             [smtp]\nport = 0\nsubmission_port = false\nsmtps_port = false\n\
             [pop3]\nport = false\npop3s_port = false\n[imap]\nport = false\nimaps_port = false\n",
            mailroot.display()
        ),
    )
    .expect("config");
    s.expect(0, &["add", "example.jp"]);
    s.expect(0, &["add", "bob@example.jp", "--create-user", "Bob-pw1"]);
    let server = Server::start(s.path());
    let port = server.port("smtp");

    let mut accepted = 0;
    let mut full = None;
    for n in 0..20 {
        let answer = send(port, n, 40_000);
        if answer.starts_with("250") {
            accepted += 1;
        } else {
            full = Some(answer);
            break;
        }
    }
    let full = full.expect("the 300 KiB tmpfs fills up within 20 messages of 40 KB");
    assert!(full.starts_with("452 4.3.1"), "{full}");
    assert!(accepted >= 3, "some messages fit first ({accepted})");

    let maildir = mailroot.join("example.jp/bob");
    let files: Vec<_> = std::fs::read_dir(maildir.join("new"))
        .expect("new/")
        .flatten()
        .collect();
    assert_eq!(
        files.len(),
        accepted,
        "exactly the accepted messages, nothing half-written"
    );
    for f in &files {
        let text = std::fs::read_to_string(f.path()).expect("read");
        assert!(
            text.ends_with("0123456789\r\n"),
            "whole: {}",
            f.path().display()
        );
    }
    assert_eq!(
        std::fs::read_dir(maildir.join("tmp"))
            .expect("tmp/")
            .count(),
        0,
        "tmp/ cleaned"
    );

    // Make room: the server delivers again without a restart.
    std::fs::remove_file(files[0].path()).expect("remove one");
    std::fs::remove_file(files[1].path()).expect("remove another");
    assert!(send(port, 99, 10_000).starts_with("250"));
}
