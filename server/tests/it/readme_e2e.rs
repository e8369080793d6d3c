//! The README, followed as a new user would: `dirmail serve` on the embedded defaults (no
//! configuration file, the documented ports), a domain and two mailboxes added with the
//! administration tool, a message sent from one to the other over submission with STARTTLS
//! and AUTH (lettre), then read over POP3 with STLS (Python's poplib and curl), and a graceful
//! stop. And the README's outbound tour, its commands taken from the README itself and run as
//! written: a dnsmasq, a second dirmail as example.org's server, a message sent there. And
//! the five-minute administration tour, each command run as written and checked against the
//! lines the README shows under it.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::common::{Scratch, Server};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};

/// Both tours use the README's fixed ports on 127.0.0.1: one at a time.
static README_PORTS: Mutex<()> = Mutex::new(());

#[test]
fn readme_tour_sends_and_reads_mail() {
    let _ports = README_PORTS.lock().unwrap_or_else(|p| p.into_inner());
    // No dirmail.toml: the embedded defaults, as the README's first command runs.
    let s = Scratch::new();
    std::fs::remove_file(s.path().join("dirmail.toml")).expect("remove the scratch config");
    let mut server = Server::start(s.path());
    assert_eq!(server.port("submission"), 2587, "the README's ports");
    assert_eq!(server.port("pop3"), 1110);

    s.expect(0, &["add", "example.jp"]);
    s.expect(
        0,
        &["add", "alice@example.jp", "--create-user", "Alice-pw1"],
    );
    s.expect(0, &["add", "bob@example.jp", "--create-user", "Bob-pw1"]);

    let cert_path = s.path().join("dirmail-data/tls/cert.pem");
    let cert = Certificate::from_pem(&std::fs::read(&cert_path).expect("the store's certificate"))
        .expect("a PEM certificate");
    let tls = TlsParameters::builder("localhost".into())
        .add_root_certificate(cert)
        .build_rustls()
        .expect("TLS parameters");
    let mailer = SmtpTransport::builder_dangerous("127.0.0.1")
        .port(server.port("submission"))
        .tls(Tls::Required(tls))
        .credentials(Credentials::new(
            "alice@example.jp".into(),
            "Alice-pw1".into(),
        ))
        .build();
    let email = Message::builder()
        .from("Alice <alice@example.jp>".parse::<Mailbox>().expect("from"))
        .to("Bob <bob@example.jp>".parse::<Mailbox>().expect("to"))
        .subject("Lunch")
        .body(String::from(
            "Noodles at noon?\n.\nA line that was a lone dot.\n",
        ))
        .expect("message");
    mailer
        .send(&email)
        .expect("lettre sends with STARTTLS and AUTH");

    // Python's poplib: STLS, USER/PASS, STAT, RETR, then QUIT without deleting.
    let script = r#"
import poplib, ssl, sys
port, cafile = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=cafile)
p = poplib.POP3("127.0.0.1", port, timeout=20)
p.stls(context=ctx)
p.user("bob@example.jp"); p.pass_("Bob-pw1")
count, size = p.stat()
resp, lines, octets = p.retr(1)
print(count)
print("\n".join(l.decode() for l in lines))
p.quit()
"#;
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script, &server.port("pop3").to_string()])
        .arg(&cert_path)
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "poplib: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("1\n"), "one message: {text}");
    assert!(text.contains("Subject: Lunch"), "{text}");
    assert!(
        text.contains("Noodles at noon?\n.\nA line that was a lone dot."),
        "{text}"
    );
    assert!(text.contains("with ESMTPSA"), "{text}");

    // curl over POP3 with STLS required: list, then the message itself.
    let curl = |path: &str| {
        Command::new("curl")
            .args(["-s", "--ssl-reqd", "--cacert"])
            .arg(&cert_path)
            .args(["-u", "bob@example.jp:Bob-pw1"])
            .arg(format!("pop3://127.0.0.1:{}/{path}", server.port("pop3")))
            .output()
            .expect("curl runs")
    };
    let listed = curl("");
    assert!(listed.status.success(), "curl LIST: {listed:?}");
    assert!(String::from_utf8_lossy(&listed.stdout).starts_with("1 "));
    let message = curl("1");
    assert!(String::from_utf8_lossy(&message.stdout).contains("Subject: Lunch"));

    assert_eq!(server.stop(), Some(0), "a graceful stop");
    let rest: Vec<String> = server.stdout.try_iter().collect();
    assert!(rest.iter().any(|l| l == "stopped"), "{rest:?}");
}

/// The heading of the README's outbound tour; its first `console` block is what runs.
const OUTBOUND_TOUR: &str =
    "#### A tour on loopback: sending to an outside domain through a test DNS";

/// The commands (`$ …`, with `\` continuations) of the first `console` block after `heading`,
/// and the output lines it shows.
fn console_block(readme: &str, heading: &str) -> (Vec<String>, Vec<String>) {
    let block = console_text(readme, heading);
    let (mut commands, mut outputs) = (Vec::new(), Vec::new());
    let mut continuing = false;
    for line in block.lines() {
        if continuing {
            let last: &mut String = commands.last_mut().expect("a command to continue");
            last.push('\n');
            last.push_str(line);
        } else if let Some(command) = line.strip_prefix("$ ") {
            commands.push(command.to_owned());
        } else {
            outputs.push(line.to_owned());
            continue;
        }
        continuing = line.ends_with('\\');
    }
    (commands, outputs)
}

/// The text of the first `console` block after `heading`.
fn console_text<'a>(readme: &'a str, heading: &str) -> &'a str {
    readme
        .split_once(heading)
        .unwrap_or_else(|| panic!("README.md has no heading {heading:?}"))
        .1
        .split_once("```console\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .expect("a console block after the heading")
        .0
}

/// Kills the tour's process group (its servers and dnsmasq) whatever happens.
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        // The shell's own `kill`, which takes `-GROUP` (procps' kill reads it as a signal).
        let _ = Command::new("sh")
            .args(["-c", "kill -KILL -\"$1\"", "sh", &self.0.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn readme_outbound_tour_runs_as_written() {
    let _ports = README_PORTS.lock().unwrap_or_else(|p| p.into_inner());
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let (commands, outputs) = console_block(&readme, OUTBOUND_TOUR);
    assert!(commands.len() > 5, "the tour's commands: {commands:?}");

    let dir = tempfile::tempdir().expect("a directory for the tour");
    let bin = Path::new(env!("CARGO_BIN_EXE_dirmail"))
        .parent()
        .expect("the binary's directory");
    // `set -e`: a command that fails ends the tour there, as a reader would stop.
    let script = format!(
        "set -e\nexport PATH=\"{}:/usr/sbin:$PATH\"\n{}\n",
        bin.display(),
        commands.join("\n")
    );
    let stdout = std::fs::File::create(dir.path().join("tour.out")).expect("tour.out");
    let stderr = std::fs::File::create(dir.path().join("tour.err")).expect("tour.err");
    let mut command = Command::new("sh");
    command
        .args(["-c", &script])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("DIRMAIL_") {
            command.env_remove(key);
        }
    }
    let mut child = command.spawn().expect("sh runs");
    let _group = Group(child.id());
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for sh") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the tour did not finish in 120 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    let (out, err) = (read("tour.out"), read("tour.err"));
    assert!(
        status.success(),
        "the tour failed ({status}):\n{out}\n--- stderr:\n{err}"
    );
    for line in outputs.iter().filter(|l| !l.trim().is_empty()) {
        assert!(
            out.contains(line.as_str()),
            "the README shows {line:?}, the tour printed:\n{out}\n--- stderr:\n{err}"
        );
    }
    let inbox = dir
        .path()
        .join("example.org/dirmail-data/mail/example.org/alice/new");
    let arrived: Vec<_> = std::fs::read_dir(&inbox)
        .map(|e| e.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert_eq!(
        arrived.len(),
        1,
        "one message in {}:\n{err}",
        inbox.display()
    );
    let message = std::fs::read_to_string(&arrived[0]).expect("the message");
    assert!(message.contains("Subject: hello, outside"), "{message}");
    assert!(
        message.contains("by mail.example.jp") || message.contains("Received: from"),
        "{message}"
    );
    assert!(
        err.contains("outbound: attempt") && err.contains("mx.example.org [127.0.0.2:2525]"),
        "the attempt as the README describes it:\n{err}"
    );
    assert!(
        !err.contains("Bob-pw1") && !err.contains("Alice-pw1"),
        "no password logged"
    );
}

/// The heading of the README's administration tour.
const ADMIN_TOUR: &str = "## A five-minute tour";

/// One command of a console block and the lines the README shows it printing.
#[derive(Debug)]
struct Shown {
    command: String,
    lines: Vec<String>,
}

/// Each command of the first `console` block after `heading` with the lines shown under it.
fn console_steps(readme: &str, heading: &str) -> Vec<Shown> {
    let block = console_text(readme, heading);
    let mut steps: Vec<Shown> = Vec::new();
    for line in block.lines() {
        if let Some(command) = line.strip_prefix("$ ") {
            steps.push(Shown {
                command: command.to_owned(),
                lines: Vec::new(),
            });
        } else if let Some(step) = steps.last_mut() {
            step.lines.push(line.to_owned());
        }
    }
    steps
}

/// Whether `printed` holds `shown`: a shown line ending in `…` stands for every line that
/// begins with what comes before it.
fn printed_holds(printed: &str, shown: &str) -> bool {
    match shown.strip_suffix('…') {
        Some(start) => printed.lines().any(|l| l.starts_with(start.trim_end())),
        None => printed.lines().any(|l| l == shown),
    }
}

#[test]
fn readme_admin_tour_runs_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let steps = console_steps(&readme, ADMIN_TOUR);
    assert!(steps.len() > 8, "the tour's commands: {steps:?}");
    let dir = tempfile::tempdir().expect("a directory for the tour");
    let bin = Path::new(env!("CARGO_BIN_EXE_dirmail"))
        .parent()
        .expect("the binary's directory");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for step in &steps {
        let mut command = Command::new("sh");
        command
            .args(["-c", &step.command])
            .current_dir(dir.path())
            .env("PATH", &path)
            .stdin(Stdio::null());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("DIRMAIL_") {
                command.env_remove(key);
            }
        }
        let out = command.output().expect("sh runs");
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The README shows a refusal as the tool's error line: then, and only then, the
        // command fails.
        let refused = step.lines.iter().any(|l| l.starts_with("dirmail: "));
        assert_eq!(
            out.status.success(),
            !refused,
            "$ {} ended with {} and printed:\n{printed}",
            step.command,
            out.status
        );
        for line in step.lines.iter().filter(|l| !l.trim().is_empty()) {
            assert!(
                printed_holds(&printed, line),
                "$ {}: the README shows {line:?}, the command printed:\n{printed}",
                step.command
            );
        }
    }
}
