//! The log an administrator reads (issue 15): a message's every line found by its Message-ID,
//! each with the sender, the recipient, the size and the reply; protocol traces at
//! `logging = 3` that show the commands and replies but never a password in any form; the
//! JSON format; and `--log-level` and `RUST_LOG` before `logging`, a bad one refused at start.

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::common::{Scratch, Server};

const PASSWORD: &str = "Quokka-Trace-7731";

/// `send PORT MESSAGE_ID RECIPIENT…`: bob logs in (AUTH PLAIN) on submission and sends one
/// message with that Message-ID.
const SEND: &str = r#"
import smtplib, sys
port, message_id, recipients = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
message = ("From: bob@example.jp\r\nTo: alice@example.jp\r\nSubject: where did it go\r\n"
           "Message-ID: " + message_id + "\r\n\r\nA line of the body.\r\n")
with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
    s.login("bob@example.jp", "Quokka-Trace-7731")
    s.sendmail("bob@example.jp", recipients, message)
"#;

/// A loopback port nothing listens on: the outbound queue's smarthost, so an outside
/// recipient is queued and its attempts fail here, never reaching past loopback.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn scratch(server_section: &str) -> Scratch {
    let scratch = Scratch::new();
    scratch.config(&format!(
        "[server]\nhostname = \"mail.example.jp\"\n{server_section}\n\
         [smtp]\nport = false\nsubmission_port = 0\nsmtps_port = false\n\
         [pop3]\nport = 0\npop3s_port = false\n[imap]\nport = 0\nimaps_port = false\n\
         [tls]\nplaintext_auth = \"loopback\"\n\
         [outbound]\nrelay_host = \"127.0.0.1:{}\"\n",
        closed_port()
    ));
    scratch.expect(0, &["add", "example.jp"]);
    scratch.expect(0, &["add", "bob@example.jp", "--create-user", PASSWORD]);
    scratch.expect(
        0,
        &["add", "alice@example.jp", "--create-user", "Alice-pw-1"],
    );
    scratch.expect(0, &["alias", "add", "info@example.jp", "alice@example.jp"]);
    scratch
}

fn python(script: &str, args: &[String]) {
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn send(server: &Server, message_id: &str, recipients: &[&str]) {
    let mut args = vec![server.port("submission").to_string(), message_id.to_owned()];
    args.extend(recipients.iter().map(|r| (*r).to_owned()));
    python(SEND, &args);
}

/// Waits until the log has a line with all of `words`, and returns the log.
fn log_with(server: &Server, words: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = server.log();
        if log.lines().any(|l| words.iter().all(|w| l.contains(w))) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "no line with {words:?} in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The size of the one message in alice's Maildir, as stored.
fn stored_size(scratch: &Scratch) -> u64 {
    let new = scratch.mailroot().join("example.jp/alice/new");
    let files: Vec<_> = std::fs::read_dir(&new).unwrap().collect();
    assert_eq!(files.len(), 1, "one message for alice in {}", new.display());
    files[0].as_ref().unwrap().metadata().unwrap().len()
}

#[test]
fn every_line_of_a_message_is_found_by_its_message_id() {
    let scratch = scratch("logging = 2");
    let server = Server::start_logged(scratch.path());
    let message_id = "<where-did-it-go.4711@example.jp>";
    send(
        &server,
        message_id,
        &["info@example.jp", "carol@elsewhere.test"],
    );
    // The queue runner's first attempt at carol (the smarthost refuses the connection).
    let log = log_with(
        &server,
        &[message_id, "carol@elsewhere.test", "outbound: recorded"],
    );
    let size = stored_size(&scratch);
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(message_id)).collect();
    let find = |words: &[&str]| -> &str {
        lines
            .iter()
            .find(|l| words.iter().all(|w| l.contains(w)))
            .unwrap_or_else(|| panic!("no line with {words:?} among:\n{}", lines.join("\n")))
    };
    let accepted = find(&["accepted msg_id="]);
    let alias = find(&["recipient msg_id=", "recipient=info@example.jp"]);
    let relayed = find(&[
        "recipient msg_id=",
        "recipient=carol@elsewhere.test",
        "outcome=\"queued\"",
    ]);
    for line in [accepted, alias, relayed] {
        assert!(line.contains("bob@example.jp"), "no sender: {line}");
        assert!(
            line.contains(&format!("size={size}")),
            "no size {size}: {line}"
        );
        assert!(line.contains("250 2.0.0"), "no reply: {line}");
        assert!(line.contains("msg_id="), "no id: {line}");
    }
    assert!(accepted.contains("tls=\"no\""), "{accepted}");
    assert!(accepted.contains("auth=\"bob@example.jp\""), "{accepted}");
    assert!(accepted.contains("count=2"), "{accepted}");
    assert!(
        accepted.contains("info@example.jp") && accepted.contains("carol@elsewhere.test"),
        "{accepted}"
    );
    // The alias is logged with the mailbox it expanded to.
    assert!(alias.contains("mailbox=alice@example.jp"), "{alias}");
    assert!(alias.contains("outcome=\"delivered\""), "{alias}");
    // The queue id is the message's id, on its lines and on the runner's.
    let queue_id = relayed
        .split_whitespace()
        .find_map(|w| w.strip_prefix("queue_id="))
        .map(|id| id.trim_matches('"'))
        .unwrap();
    assert!(
        accepted.contains(&format!("msg_id=\"{queue_id}\"")),
        "{accepted}"
    );
    let attempt = find(&["outbound: recorded", "carol@elsewhere.test"]);
    assert!(attempt.contains(queue_id), "{attempt}");
    assert!(attempt.contains("outcome=\"deferred\""), "{attempt}");
    assert!(attempt.contains("reply="), "{attempt}");
    assert!(attempt.contains(&format!("size={size}")), "{attempt}");
    let log = server.log();
    assert!(!log.contains(PASSWORD), "{log}");
}

/// Logs in every way a password travels, with `PASSWORD`.
const LOGINS: &str = r#"
import base64, imaplib, poplib, smtplib, sys
smtp, pop3, imap = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
user, password = "bob@example.jp", "Quokka-Trace-7731"
plain = base64.b64encode(("\0" + user + "\0" + password).encode()).decode()
with smtplib.SMTP("127.0.0.1", smtp, timeout=60) as s:
    s.login(user, password)                      # AUTH PLAIN with the initial response
with smtplib.SMTP("127.0.0.1", smtp, timeout=60) as s:
    s.ehlo()
    assert s.docmd("AUTH", "PLAIN")[0] == 334
    assert s.docmd(plain)[0] == 235              # the two-step form
with smtplib.SMTP("127.0.0.1", smtp, timeout=60) as s:
    s.ehlo()
    assert s.docmd("AUTH", "LOGIN")[0] == 334
    assert s.docmd(base64.b64encode(user.encode()).decode())[0] == 334
    assert s.docmd(base64.b64encode(password.encode()).decode())[0] == 235
p = poplib.POP3("127.0.0.1", pop3, timeout=60)
p.user(user)
p.pass_(password)
p.quit()
p = poplib.POP3("127.0.0.1", pop3, timeout=60)
p._shortcmd("AUTH PLAIN " + plain)
p.quit()
i = imaplib.IMAP4("127.0.0.1", imap, timeout=60)
i.login(user, password)                          # quoted or atom, as imaplib writes it
i.logout()
i = imaplib.IMAP4("127.0.0.1", imap, timeout=60)
i._simple_command("LOGIN", '"' + user + '"', '"' + password + '"')
i.logout()
i = imaplib.IMAP4("127.0.0.1", imap, timeout=60)
i.literal = password.encode()                    # LOGIN user {17} then the literal
typ, _ = i._simple_command("LOGIN", user)
assert typ == "OK", typ
i.logout()
i = imaplib.IMAP4("127.0.0.1", imap, timeout=60)
i.authenticate("PLAIN", lambda _: "\0" + user + "\0" + password)
i.logout()
"#;

#[test]
fn traces_show_commands_and_replies_but_never_a_password() {
    let scratch = scratch("logging = 3");
    let server = Server::start_logged(scratch.path());
    let ports = ["submission", "pop3", "imap"].map(|p| server.port(p).to_string());
    python(LOGINS, &ports);
    let log = server.log();
    for shown in [
        "C: AUTH PLAIN ***",
        "C: AUTH PLAIN peer=",
        "C: AUTH LOGIN",
        "S: 334 ",
        "S: 235 2.7.0",
        "C: USER bob@example.jp",
        "C: PASS ***",
        "C: AUTH PLAIN ***",
        " LOGIN ***",
        " AUTHENTICATE PLAIN peer=",
        "OK [CAPABILITY",
    ] {
        assert!(log.contains(shown), "the trace lacks {shown:?}:\n{log}");
    }
    assert!(log.matches("C: ***").count() >= 4, "{log}");
    let plain = B64.encode(format!("\0bob@example.jp\0{PASSWORD}"));
    let alone = B64.encode(PASSWORD);
    for secret in [PASSWORD, &plain, &alone, alone.trim_end_matches('=')] {
        assert!(!log.contains(secret), "the log holds {secret:?}:\n{log}");
    }
    // A message's content is not traced line by line, only its size.
    send(&server, "<traced@example.jp>", &["alice@example.jp"]);
    let log = log_with(&server, &["C: [message of "]);
    assert!(!log.contains("A line of the body."), "{log}");
    assert!(
        log.to_lowercase().contains("c: data") && log.contains("S: 354"),
        "{log}"
    );
}

#[test]
fn the_json_format_writes_one_object_per_line() {
    let scratch = scratch("logging = 3\nlog_format = \"json\"");
    let server = Server::start_logged(scratch.path());
    send(&server, "<json@example.jp>", &["alice@example.jp"]);
    let log = log_with(&server, &["<json@example.jp>", "recipient"]);
    let mut accepted = None;
    for line in log.lines() {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"));
        assert!(value.is_object(), "{line}");
        if value["message"] == "accepted" {
            accepted = Some(value);
        }
    }
    let accepted = accepted.expect("an accepted line");
    assert_eq!(accepted["message_id"], "<json@example.jp>");
    assert_eq!(accepted["from"], "bob@example.jp");
    assert_eq!(accepted["size"], stored_size(&scratch));
    assert!(!log.contains(PASSWORD));
}

#[test]
fn the_flag_comes_before_rust_log_and_logging() {
    // logging = 0 logs nothing; RUST_LOG asks for the traces alone.
    let scratch = scratch("logging = 0");
    let server = Server::start_logged_with(
        scratch.path(),
        &[],
        &[("RUST_LOG", "dirmail_net::trace=debug")],
    );
    send(&server, "<env@example.jp>", &["alice@example.jp"]);
    let log = log_with(&server, &["C: QUIT"]);
    // Nothing but the traces: no `accepted` line, no login line.
    assert!(!log.contains(" INFO "), "{log}");
    drop(server);
    // The flag wins over a RUST_LOG that could not even be read.
    let _ = std::fs::remove_file(scratch.path().join("server.log"));
    let server = Server::start_logged_with(
        scratch.path(),
        &["--log-level", "dirmail=info"],
        &[("RUST_LOG", "dirmail=loud")],
    );
    send(&server, "<flag@example.jp>", &["alice@example.jp"]);
    let log = log_with(&server, &["<flag@example.jp>", "accepted"]);
    assert!(!log.contains("C: "), "{log}");
}

#[test]
fn a_log_level_that_cannot_be_read_stops_the_start() {
    let scratch = scratch("logging = 2");
    for (args, env, names) in [
        (&["--log-level", "debgu"][..], None, "--log-level \"debgu\""),
        (&["--log-level", "dirmail=loud"][..], None, "--log-level"),
        (&[][..], Some("dirmail_net=verbose"), "RUST_LOG"),
    ] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_dirmail"));
        command
            .arg("serve")
            .args(args)
            .current_dir(scratch.path())
            .env_remove("DIRMAIL_CONFIG")
            .env_remove("RUST_LOG");
        if let Some(env) = env {
            command.env("RUST_LOG", env);
        }
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        assert!(stderr.contains(names), "{stderr}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("ready"));
    }
}
