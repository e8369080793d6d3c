//! The metrics page (`[metrics] listen`): after a known number of connections, logins (good
//! and bad, over POP3 and IMAP) and messages made with Python's smtplib, poplib and imaplib,
//! the page is fetched with urllib and read by a real Prometheus text parser
//! (`prometheus_client.parser`, Debian's python3-prometheus-client), and its counts are the
//! ones the clients made. The bytes received are compared with what landed in the Maildir.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::hostile_support::{PASSWORD, Rig};

/// `clients SMTP POP3 IMAP METRICS PASSWORD` makes the traffic, then prints the parsed page
/// as one JSON object: the families (name → type, help) and every sample.
const CLIENTS: &str = r#"
import imaplib, json, poplib, smtplib, socket, sys, urllib.error, urllib.request
from prometheus_client.parser import text_string_to_metric_families

smtp_port, pop3_port, imap_port, metrics_port = (int(a) for a in sys.argv[1:5])
password = sys.argv[5]

# Every client from a loopback address of its own, so the throttle's waits after the bad
# logins below do not slow the good ones (they still count; nothing here measures time).
source = [20]
connect = socket.create_connection
def from_fresh_address(address, timeout=None, *rest):
    source[0] += 1
    return connect(address, timeout, ("127.0.0.%d" % source[0], 0))
socket.create_connection = from_fresh_address

# Three messages for bob, one connection each; the third also names an unknown recipient.
for n in range(3):
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as s:
        s.ehlo("client.example")
        s.mail("sender@example.org")
        code, _ = s.rcpt("bob@example.jp")
        assert code == 250, code
        if n == 2:
            code, _ = s.rcpt("nobody@example.jp")
            assert code == 550, code
        s.data("Subject: message %d\r\n\r\nbody of message %d\r\n" % (n, n))

def pop3_login(user, pw):
    p = poplib.POP3("127.0.0.1", pop3_port, timeout=60)
    try:
        p.user(user)
        p.pass_(pw)
        return "ok"
    except poplib.error_proto:
        return "refused"
    finally:
        try:
            p.quit()
        except Exception:
            pass

def imap_login(user, pw):
    i = imaplib.IMAP4("127.0.0.1", imap_port, timeout=60)
    try:
        i.login(user, pw)
        i.logout()
        return "ok"
    except imaplib.IMAP4.error:
        i.logout()
        return "refused"

answers = [
    pop3_login("bob@example.jp", password),
    pop3_login("bob@example.jp", password),
    pop3_login("bob@example.jp", "wrong-" + password),
    imap_login("bob@example.jp", password),
    imap_login("bob@example.jp", "wrong-" + password),
    imap_login("nobody@example.jp", password),
]
assert answers == ["ok", "ok", "refused", "ok", "refused", "refused"], answers

socket.create_connection = connect
base = "http://127.0.0.1:%d" % metrics_port
with urllib.request.urlopen(base + "/metrics", timeout=30) as r:
    content_type = r.headers["Content-Type"]
    page = r.read().decode()
statuses = {}
for path, method in [("/", "GET"), ("/metrics", "POST")]:
    try:
        urllib.request.urlopen(urllib.request.Request(base + path, method=method, data=b"" if method == "POST" else None), timeout=30)
        statuses[method + " " + path] = 200
    except urllib.error.HTTPError as e:
        statuses[method + " " + path] = e.code

families, samples = {}, []
for family in text_string_to_metric_families(page):
    families[family.name] = {"type": family.type, "help": family.documentation}
    for sample in family.samples:
        samples.append({"name": sample.name, "labels": sample.labels, "value": sample.value})
print(json.dumps({"content_type": content_type, "statuses": statuses, "families": families, "samples": samples}))
"#;

struct Scrape {
    json: Value,
}

impl Scrape {
    /// The value of the sample `name` whose labels include all of `labels`; the sum if several.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let matching: Vec<f64> = self.json["samples"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["name"] == name)
            .filter(|s| labels.iter().all(|(k, v)| s["labels"][*k] == *v))
            .map(|s| s["value"].as_f64().unwrap())
            .collect();
        assert!(
            !matching.is_empty(),
            "no sample {name} {labels:?} in {}",
            self.json["samples"]
        );
        matching.iter().sum()
    }

    /// The samples of `name`, each as its labels and value.
    fn all(&self, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        self.json["samples"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["name"] == name)
            .map(|s| {
                let labels = s["labels"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                    .collect();
                (labels, s["value"].as_f64().unwrap())
            })
            .collect()
    }
}

/// The octets of every message file in the Maildirs under `mailroot`.
fn maildir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            total += maildir_bytes(&path);
        } else if kind.is_file()
            && path
                .parent()
                .and_then(Path::file_name)
                .is_some_and(|d| d == "new" || d == "cur")
        {
            total += entry.metadata().unwrap().len();
        }
    }
    total
}

#[test]
fn the_metrics_page_counts_the_logins_and_messages_real_clients_made() {
    let rig = Rig::with_imap("[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let out = Command::new("/usr/bin/python3")
        .args(["-c", CLIENTS])
        .args(["smtp", "pop3", "imap", "metrics"].map(|s| rig.port(s).to_string()))
        .arg(PASSWORD)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the clients failed: {}\nlog:\n{}",
        String::from_utf8_lossy(&out.stderr),
        rig.server.log()
    );
    let scrape = Scrape {
        json: serde_json::from_slice(&out.stdout).expect("the script prints JSON"),
    };
    let json = &scrape.json;
    assert_eq!(
        json["content_type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(json["statuses"]["GET /"], 404);
    assert_eq!(json["statuses"]["POST /metrics"], 405);

    // Every family has a help text and a type, and is dirmail's.
    let families = json["families"].as_object().unwrap();
    assert!(families.len() >= 15, "{families:?}");
    for (name, family) in families {
        assert!(name.starts_with("dirmail_"), "{name}");
        assert!(
            !family["help"].as_str().unwrap().is_empty(),
            "{name} has no HELP"
        );
        assert!(
            ["counter", "gauge", "histogram"].contains(&family["type"].as_str().unwrap()),
            "{name}: {family}"
        );
    }

    // Connections: three SMTP, three POP3, three IMAP (the scrape is not a session).
    for listener in ["smtp", "pop3", "imap"] {
        assert_eq!(
            scrape.value(
                "dirmail_connections_accepted_total",
                &[("listener", listener)]
            ),
            3.0,
            "{listener}"
        );
    }
    assert_eq!(scrape.value("dirmail_connections_refused_total", &[]), 0.0);

    // Logins by protocol, outcome and R27 reason.
    let logins = |protocol: &str, outcome: &str, reason: Option<&str>| {
        let mut labels = vec![("protocol", protocol), ("outcome", outcome)];
        if let Some(reason) = reason {
            labels.push(("reason", reason));
        }
        scrape.value("dirmail_logins_total", &labels)
    };
    assert_eq!(logins("pop3", "accepted", None), 2.0);
    assert_eq!(logins("pop3", "refused", Some("bad_password")), 1.0);
    assert_eq!(logins("imap", "accepted", None), 1.0);
    assert_eq!(logins("imap", "refused", Some("bad_password")), 1.0);
    assert_eq!(logins("imap", "refused", Some("unknown_user")), 1.0);
    let all_logins: f64 = scrape
        .all("dirmail_logins_total")
        .iter()
        .map(|(_, v)| v)
        .sum();
    assert_eq!(all_logins, 6.0, "{:?}", scrape.all("dirmail_logins_total"));
    assert_eq!(
        scrape.value("dirmail_login_duration_seconds_count", &[]),
        6.0
    );
    assert_eq!(
        scrape.value("dirmail_login_duration_seconds_bucket", &[("le", "+Inf")]),
        6.0
    );
    // The local accounts' hashes went through the gate: at least the first good password,
    // the first wrong one (the second may come from the login cache's failures) and the
    // unknown user's check against the dummy record.
    assert!(scrape.value("dirmail_password_hash_wait_seconds_count", &[]) >= 3.0);
    // No Active Directory here: its histograms are present and empty.
    assert_eq!(
        scrape.value("dirmail_directory_bind_duration_seconds_count", &[]),
        0.0
    );

    // Messages: three received and delivered to bob, none queued, one recipient unknown.
    assert_eq!(scrape.value("dirmail_messages_received_total", &[]), 3.0);
    assert_eq!(scrape.value("dirmail_mailbox_deliveries_total", &[]), 3.0);
    assert_eq!(scrape.value("dirmail_messages_queued_total", &[]), 0.0);
    assert_eq!(
        scrape.value("dirmail_recipients_refused_total", &[("reason", "unknown")]),
        1.0
    );
    assert!(scrape.all("dirmail_messages_refused_total").is_empty());
    let stored = maildir_bytes(&rig.dir.path().join("dirmail-data/mail"));
    assert!(stored > 0);
    assert_eq!(
        scrape.value("dirmail_received_bytes_total", &[]),
        stored as f64,
        "the octets received are the octets stored"
    );
    // Nothing left for another server: no outbound attempt of any result.
    for result in ["delivered", "deferred", "failed"] {
        assert_eq!(
            scrape.value("dirmail_outbound_attempts_total", &[("result", result)]),
            0.0
        );
    }
    assert_eq!(scrape.value("dirmail_queue_messages", &[]), 0.0);
    assert_eq!(
        scrape.value("dirmail_queue_recipients", &[("state", "due")]),
        0.0
    );
    assert_eq!(
        scrape.value("dirmail_build_info", &[]),
        1.0,
        "the version is a label"
    );
}

#[test]
fn a_busy_metrics_port_is_a_clear_start_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let scratch = crate::common::Scratch::new();
    scratch.config(&format!(
        "[server]\nhostname = \"mail.example.jp\"\n\
         [smtp]\nport = 0\nsubmission_port = false\nsmtps_port = false\n\
         [pop3]\nport = false\npop3s_port = false\n[imap]\nport = false\nimaps_port = false\n\
         [metrics]\nlisten = \"127.0.0.1:{port}\"\n"
    ));
    let out = scratch.run(&["serve"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port} for metrics")),
        "{stderr}"
    );
    // Nothing was left behind that would stop the next start.
    assert!(!scratch.path().join("dirmail-data/control.sock").exists());
}
