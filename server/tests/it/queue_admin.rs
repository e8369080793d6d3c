//! `dirmail queue …` and the queue line of `stat`, run as the real binary on a store whose
//! queue entries are made through the store's own `Queue::enqueue`: listing, showing (the
//! header section bounded, control characters defused), retry, bounce and delete, `--json`,
//! bad and unknown ids, and a change waiting for the queue's lock instead of undoing another.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dirmail_store::queue::{Entry, Queue, RecipientState};
use dirmail_store::spool::{self, SpoolFile};
use serde_json::Value;

use crate::common::Scratch;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Queues `message` from `sender` to `recipients`, arrived at `arrived`, as the server would.
fn enqueue(
    mailroot: &Path,
    message: &[u8],
    sender: &str,
    recipients: &[&str],
    arrived: i64,
) -> Entry {
    spool::prepare(mailroot, Duration::from_secs(3600)).unwrap();
    let queue = Queue::open(mailroot).unwrap();
    let mut file = SpoolFile::create(mailroot, "mail.example.jp").unwrap();
    file.append(message).unwrap();
    let recipients: Vec<String> = recipients.iter().map(|r| (*r).to_owned()).collect();
    queue
        .enqueue(&file, sender, &recipients, "mail.example.jp", arrived)
        .unwrap()
}

/// A store (made by a first command) with two entries: `a`, an hour old, one recipient
/// greylisted and one delivered; `b`, a bounce-like message from `<>`, due now.
fn two_entries(s: &Scratch) -> (Entry, Entry, i64) {
    s.expect(0, &["list"]);
    let now = now();
    let mut a = enqueue(
        &s.mailroot(),
        b"From: bob@example.jp\r\nTo: x@example.org\r\nSubject: hi \x1b[2J there\r\n\r\nthe body, not shown\r\n",
        "bob@example.jp",
        &["x@example.org", "y@example.net"],
        now - 3600,
    );
    a.recipients[0].attempts = 2;
    a.recipients[0].next_attempt = now + 3630;
    a.recipients[0].last_reply = Some("451 4.7.1 greylisted, try later".into());
    a.recipients[0].last_host = Some("mx.example.org [192.0.2.1]".into());
    a.recipients[1].state = RecipientState::Delivered;
    a.recipients[1].attempts = 1;
    a.recipients[1].last_reply = Some("250 2.0.0 ok".into());
    Queue::attach(&s.mailroot()).save(&a).unwrap();
    let b = enqueue(
        &s.mailroot(),
        b"Subject: report\r\n\r\n",
        "",
        &["z@example.com"],
        now - 120,
    );
    (a, b, now)
}

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The transcript with what changes from run to run (ids, dates) replaced by names.
fn redacted(text: String, entries: &[(&Entry, &str)], times: &[i64]) -> String {
    let mut text = text;
    for (entry, name) in entries {
        text = text.replace(&entry.id, name);
    }
    for at in times {
        let at = UNIX_EPOCH + Duration::from_secs(*at as u64);
        text = text.replace(&dirmail_net::smtp::rfc5322_date(at), "<date>");
    }
    text
}

#[test]
fn transcript() {
    let s = Scratch::new();
    let out = s.expect(0, &["queue", "list"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "The outbound queue is empty."
    );
    let (a, b, now) = two_entries(&s);
    let commands: &[&[&str]] = &[
        &["queue", "list"],
        &["queue", "show", &a.id],
        &["stat"],
        &["queue", "retry", &a.id],
        &["queue", "bounce", &b.id],
        &["queue", "bounce", &b.id],
        &["queue", "list"],
        &["queue", "delete", &a.id],
        &["queue", "show", &a.id],
        &["queue", "show", "../../etc/passwd"],
        &["queue", "list"],
    ];
    let text: String = commands.iter().map(|args| s.shown(args)).collect();
    insta::assert_snapshot!(redacted(
        text,
        &[(&a, "<A>"), (&b, "<B>")],
        &[now - 3600, now + 3630]
    ));
}

#[test]
fn json_answers() {
    let s = Scratch::new();
    let (a, b, now) = two_entries(&s);

    let list = json_of(&s.expect(0, &["--json", "queue", "list"]));
    assert_eq!(list["ok"], true);
    let entries = list["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["id"], a.id.as_str(), "oldest first");
    assert_eq!(entries[0]["pending"], 1);
    assert_eq!(entries[0]["delivered"], 1);
    assert_eq!(entries[0]["next_attempt"], now + 3630);
    assert_eq!(entries[0]["last_reply"], "451 4.7.1 greylisted, try later");
    assert_eq!(entries[1]["reverse_path"], "");
    assert!(list["unreadable"].as_array().unwrap().is_empty());

    let show = json_of(&s.expect(0, &["--json", "queue", "show", &a.id]));
    let entry = &show["entry"];
    assert_eq!(entry["recipients"][0]["attempts"], 2);
    assert_eq!(
        entry["recipients"][0]["last_host"],
        "mx.example.org [192.0.2.1]"
    );
    assert_eq!(entry["recipients"][1]["state"], "delivered");
    let headers = entry["headers"].as_str().unwrap();
    assert!(headers.starts_with("From: bob@example.jp\r\n"), "{headers}");
    assert!(
        headers.contains("\x1b[2J"),
        "JSON carries the value as it is"
    );
    assert!(!headers.contains("the body"), "{headers}");
    assert_eq!(entry["headers_truncated"], false);

    let stat = json_of(&s.expect(0, &["--json", "stat"]));
    assert_eq!(stat["queue"]["entries"], 2);
    assert_eq!(stat["queue"]["pending"], 2);

    // Retry every entry: each pending recipient due now, nothing else touched.
    let retry = json_of(&s.expect(0, &["--json", "queue", "retry"]));
    assert_eq!(retry["recipients"], 2);
    let queue = Queue::attach(&s.mailroot());
    let after = queue.load(&a.id).unwrap();
    assert!(after.recipients[0].next_attempt <= self::now());
    assert_eq!(after.recipients[0].attempts, 2);
    assert_eq!(after.recipients[1], a.recipients[1]);

    let bounce = json_of(&s.expect(0, &["--json", "queue", "bounce", &a.id]));
    assert_eq!(bounce["bounced"], serde_json::json!(["x@example.org"]));
    assert_eq!(bounce["notify"], "bob@example.jp");
    let after = queue.load(&a.id).unwrap();
    assert_eq!(after.recipients[0].state, RecipientState::Failed);
    assert_eq!(
        after.recipients[0].last_reply.as_deref(),
        Some("550 5.0.0 bounced by the administrator")
    );
    assert_eq!(after.recipients[0].last_host, None);
    assert_eq!(after.recipients[1].state, RecipientState::Delivered);
    assert!(
        after.is_finished(),
        "the runner finishes it: notify, remove"
    );
    let bounce = json_of(&s.expect(0, &["--json", "queue", "bounce", &b.id]));
    assert_eq!(bounce["notify"], Value::Null, "never a notification to <>");

    let message = queue.message_path(&b.id).unwrap();
    let deleted = json_of(&s.expect(0, &["--json", "queue", "delete", &b.id]));
    assert_eq!(deleted["deleted"]["id"], b.id.as_str());
    assert!(!message.exists(), "the message goes with its envelope");
    assert!(matches!(
        queue.load(&b.id),
        Err(dirmail_store::queue::QueueError::NotFound(_))
    ));

    // Errors: a bad id is a usage error (2), an unknown one not found (4).
    for verb in ["show", "retry", "delete", "bounce"] {
        let bad = json_of(&s.expect(2, &["--json", "queue", verb, "../env/x"]));
        assert_eq!(bad["ok"], false);
        let missing = json_of(&s.expect(4, &["--json", "queue", verb, &b.id]));
        assert!(
            missing["error"]
                .as_str()
                .unwrap()
                .contains(&format!("no queued message {}", b.id)),
            "{missing}"
        );
    }
    // Nothing outside the queue was touched by the bad ids.
    assert!(s.mailroot().join(".queue/env").is_dir());
}

#[test]
fn a_long_header_section_is_cut_and_unreadable_envelopes_are_listed() {
    let s = Scratch::new();
    s.expect(0, &["stat"]);
    let mut message = Vec::new();
    for i in 0..5000 {
        message.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(40)).as_bytes());
    }
    let long = enqueue(
        &s.mailroot(),
        &message,
        "bob@example.jp",
        &["x@example.org"],
        now(),
    );
    std::fs::write(
        s.mailroot().join(".queue/env/1.M1P1Q1.mail.example.jp"),
        b"{ not json",
    )
    .unwrap();

    let show = json_of(&s.expect(0, &["--json", "queue", "show", &long.id]));
    let headers = show["entry"]["headers"].as_str().unwrap();
    assert_eq!(show["entry"]["headers_truncated"], true);
    assert!(headers.len() <= 64 * 1024 && headers.len() > 60 * 1024);
    assert!(headers.ends_with("\r\n"), "cut at a line end");
    let text = String::from_utf8(s.expect(0, &["queue", "show", &long.id]).stdout).unwrap();
    assert!(
        text.contains("Header section (its first 64 KiB):"),
        "{text}"
    );

    let out = s.expect(0, &["queue", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("unreadable: the envelope of 1.M1P1Q1.mail.example.jp cannot be read"),
        "{text}"
    );
    assert!(
        text.contains("1 message(s) queued, 1 envelope(s) cannot be read"),
        "{text}"
    );
    let list = json_of(&s.expect(0, &["--json", "queue", "list"]));
    assert_eq!(list["unreadable"][0]["id"], "1.M1P1Q1.mail.example.jp");
    let stat = json_of(&s.expect(0, &["--json", "stat"]));
    assert_eq!(stat["queue"]["unreadable"], 1);
    // Retrying everything skips what cannot be read.
    s.expect(0, &["queue", "retry"]);
}

/// A change waits for the queue's lock, and re-loads inside it: a writer holding the lock
/// (as the runner does while it records an attempt) loses nothing to a `retry` started
/// meanwhile, and the retry is not lost either.
#[test]
fn retry_waits_for_the_lock_and_keeps_the_other_change() {
    let s = Scratch::new();
    s.expect(0, &["stat"]);
    let mut entry = enqueue(
        &s.mailroot(),
        b"Subject: x\r\n\r\n",
        "bob@example.jp",
        &["x@example.org"],
        now(),
    );
    let queue = Queue::attach(&s.mailroot());
    entry.recipients[0].next_attempt = now() + 86_400;
    queue.save(&entry).unwrap();

    let held = queue.lock().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dirmail"))
        .args(["queue", "retry", &entry.id])
        .current_dir(s.path())
        .env_remove("DIRMAIL_CONFIG")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the tool has the lock file open (it is then waiting for the lock).
    let lock_file = s.mailroot().join(".queue/lock").canonicalize().unwrap();
    let fds = format!("/proc/{}/fd", child.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let opened = std::fs::read_dir(&fds)
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == lock_file));
        if opened {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the tool finished without taking the queue's lock"
        );
        assert!(Instant::now() < deadline, "the tool never opened the lock");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The other writer records an attempt while it holds the lock.
    let mut recorded = queue.load(&entry.id).unwrap();
    recorded.recipients[0].attempts = 5;
    recorded.recipients[0].last_reply = Some("421 4.4.2 timeout".into());
    queue.save(&recorded).unwrap();
    drop(held);
    assert!(child.wait().unwrap().success());

    let after = queue.load(&entry.id).unwrap();
    assert_eq!(after.recipients[0].attempts, 5, "the attempt is kept");
    assert!(
        after.recipients[0].next_attempt <= now(),
        "the retry is kept"
    );
}
