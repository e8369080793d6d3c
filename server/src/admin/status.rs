//! `status`: asks the running server of this store over its control socket
//! (`<data_dir>/control.sock`, see `dirmail_net::control`) for its uptime, listeners, open
//! sessions and outbound queue, and shows them as a table (or, with `--json`, the server's
//! answer). The store itself is not opened: everything comes from the server.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::Value;

use super::{AdminError, Outcome};
use dirmail_config::Config;
use dirmail_net::control::{MAX_SOCKET_PATH, socket_path};

/// How long the server may take to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(15);
/// The longest answer read (a server with many thousand sessions still fits).
const MAX_ANSWER: u64 = 64 * 1024 * 1024;

pub fn run(config: &Config) -> Result<Outcome, AdminError> {
    let reply = ask(config)?;
    if reply.get("ok").and_then(Value::as_bool) != Some(true) {
        let why = reply
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no reason given");
        return Err(AdminError::Failed(format!(
            "the server refused the status request: {why}"
        )));
    }
    let text = render(&reply);
    let mut json = reply;
    if let Value::Object(map) = &mut json {
        map.remove("ok");
    }
    Ok(Outcome::new(text, json))
}

/// One request line, one reply line.
fn ask(config: &Config) -> Result<Value, AdminError> {
    let path = socket_path(&config.store.data_dir);
    // Said in full, so the administrator knows which store was asked about.
    let path = std::path::absolute(&path).unwrap_or(path);
    if socket_path(&config.store.data_dir).as_os_str().len() > MAX_SOCKET_PATH {
        return Err(AdminError::Failed(format!(
            "the store's path is too long for a control socket ({} is over {MAX_SOCKET_PATH} bytes); a server on this store runs without one",
            path.display()
        )));
    }
    let mut stream = UnixStream::connect(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => AdminError::Failed(format!(
            "no dirmail server is running for this store (no control socket at {})",
            path.display()
        )),
        std::io::ErrorKind::ConnectionRefused => AdminError::Failed(format!(
            "no dirmail server is running for this store (the control socket at {} does not answer; a server that did not stop cleanly left it)",
            path.display()
        )),
        _ => AdminError::Failed(format!(
            "cannot reach the server's control socket at {}: {e} (run status as the user the server runs as)",
            path.display()
        )),
    })?;
    let failed = |e: std::io::Error| {
        AdminError::Failed(format!(
            "the server did not answer on {}: {e}",
            path.display()
        ))
    };
    stream
        .set_read_timeout(Some(ANSWER_WITHIN))
        .and_then(|()| stream.set_write_timeout(Some(ANSWER_WITHIN)))
        .map_err(failed)?;
    stream
        .write_all(b"{\"command\":\"status\"}\n")
        .map_err(failed)?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_ANSWER))
        .read_line(&mut line)
        .map_err(failed)?;
    serde_json::from_str(&line).map_err(|e| {
        AdminError::Failed(format!(
            "the server's answer on {} is not JSON: {e}",
            path.display()
        ))
    })
}

/// The answer for people.
fn render(reply: &Value) -> String {
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
    let number = |v: &Value, key: &str| v.get(key).and_then(Value::as_u64).unwrap_or(0);
    let mut out = format!(
        "dirmail {} on {}, pid {}, up {}\n",
        text(reply, "version"),
        text(reply, "hostname"),
        number(reply, "pid"),
        age(number(reply, "uptime_seconds"))
    );
    out.push_str("Listeners:\n");
    for listener in reply
        .get("listeners")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.push_str(&format!(
            "  {:<11} {}\n",
            text(listener, "service"),
            text(listener, "address")
        ));
    }
    let sessions: &[Value] = reply
        .get("sessions")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    if sessions.is_empty() {
        out.push_str("Sessions: none\n");
    } else {
        out.push_str(&format!("Sessions ({}):\n", sessions.len()));
        out.push_str(&format!(
            "  {:<8} {:<11} {:<40} {:<32} {:>8}\n",
            "Protocol", "Listener", "Client", "User", "Age"
        ));
        for s in sessions {
            let user = s.get("user").and_then(Value::as_str).unwrap_or("-");
            out.push_str(&format!(
                "  {:<8} {:<11} {:<40} {:<32} {:>8}\n",
                text(s, "protocol"),
                text(s, "service"),
                text(s, "client"),
                user,
                age(number(s, "age_seconds"))
            ));
        }
    }
    let queue = reply.get("queue").cloned().unwrap_or(Value::Null);
    match queue.get("error").and_then(Value::as_str) {
        Some(error) => out.push_str(&format!("Outbound queue: cannot be read: {error}")),
        None => {
            out.push_str(&format!(
                "Outbound queue: {} message(s); pending recipients: {} due, {} deferred",
                number(&queue, "messages"),
                number(&queue, "due"),
                number(&queue, "deferred")
            ));
            let unreadable = number(&queue, "unreadable");
            if unreadable > 0 {
                out.push_str(&format!(", {unreadable} envelope(s) cannot be read"));
            }
        }
    }
    out
}

/// `3d 4h`, `2h 05m`, `7m 03s`, `12s`.
fn age(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3_600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(age(0), "0s");
        assert_eq!(age(59), "59s");
        assert_eq!(age(61), "1m 01s");
        assert_eq!(age(3_600 + 300), "1h 05m");
        assert_eq!(age(3 * 86_400 + 4 * 3_600 + 59), "3d 4h");
    }

    #[test]
    fn the_table_shows_each_session_with_its_user_or_a_dash() {
        let reply = serde_json::json!({
            "ok": true, "version": "0.1.0", "hostname": "mail.example.jp", "pid": 7,
            "uptime_seconds": 65,
            "listeners": [{ "service": "imap", "address": "127.0.0.1:1143" }],
            "sessions": [
                { "service": "imap", "protocol": "imap", "client": "127.0.0.1:5000",
                  "user": "bob@example.jp", "age_seconds": 3 },
                { "service": "smtp", "protocol": "smtp", "client": "127.0.0.1:5001",
                  "user": null, "age_seconds": 1 },
            ],
            "queue": { "messages": 1, "due": 2, "deferred": 0, "unreadable": 0 },
        });
        let text = render(&reply);
        assert!(text.starts_with("dirmail 0.1.0 on mail.example.jp, pid 7, up 1m 05s\n"));
        assert!(text.contains("  imap        127.0.0.1:1143\n"), "{text}");
        let bob = text.lines().find(|l| l.contains("bob@example.jp")).unwrap();
        assert!(bob.contains("127.0.0.1:5000") && bob.trim_start().starts_with("imap"));
        let smtp = text.lines().find(|l| l.contains("127.0.0.1:5001")).unwrap();
        assert!(smtp.contains(" - "), "{smtp}");
        assert!(text.ends_with("1 message(s); pending recipients: 2 due, 0 deferred"));
    }
}
