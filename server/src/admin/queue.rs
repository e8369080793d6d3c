//! `queue list | show ID | retry [ID] | delete ID | bounce ID`: the administrator's view of
//! the outbound queue (issue 12), which the server's runner delivers from.
//!
//! The tool may run beside a running server, so it opens the queue with `Queue::attach`
//! (which cleans nothing up: what a crash would leave may be an entry the server is writing)
//! and makes every change under the queue's lock, re-loading the entry first
//! (`Queue::update`, `Queue::lock`; the store's `queue.rs` says why). The runner keeps only
//! each entry's next due time in memory: a `retry` or `bounce` takes effect when the runner
//! next scans the queue (or, with no server running, when one starts), which is what the
//! commands say.
//!
//! Everything read from an envelope or a message (addresses, remote replies, headers) came
//! from outside; the text output replaces control characters, so a hostile header cannot
//! drive the administrator's terminal. `--json` carries the values as they are (JSON escapes).

use std::io::Read;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::cli::QueueCommand;
use super::{AdminError, Context, Outcome};
use dirmail_store::queue::{Entry, Queue, QueueError, QueuedRecipient, RecipientState};

/// What a bounced recipient's last reply becomes: the notification quotes it, and its
/// enhanced status (5.0.0, "other undefined status") says no remote server refused it.
pub const BOUNCE_REPLY: &str = "550 5.0.0 bounced by the administrator";

/// Most octets of a message read to show its header section.
const HEADER_LIMIT: usize = 64 * 1024;

/// What "at its next scan" means, said once.
const NEXT_SCAN: &str = "A running server acts on it at its next scan of the queue; with no server running, when one starts.";

impl From<QueueError> for AdminError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::BadId(_) => AdminError::Usage(format!(
                "{e} (an id is as `dirmail queue list` shows it: letters, digits, '.', '_' and '-')"
            )),
            QueueError::NotFound(_) => AdminError::NotFound(format!(
                "{e} (delivered, bounced or deleted already? `dirmail queue list` shows what is queued)"
            )),
            QueueError::Corrupt { .. } | QueueError::Io { .. } => AdminError::Failed(e.to_string()),
        }
    }
}

pub fn run(ctx: &Context, command: QueueCommand) -> Result<Outcome, AdminError> {
    let queue = Queue::attach(&ctx.store.mailroot);
    let now = now();
    let changed = match command {
        QueueCommand::List => return list(&queue, now),
        QueueCommand::Show { id } => return show(&queue, &id, now),
        QueueCommand::Retry { id } => retry(&queue, id.as_deref(), now),
        QueueCommand::Delete { id } => delete(&queue, &id),
        QueueCommand::Bounce { id } => bounce(&queue, &id),
    };
    // A running server acts on the change within a second, not at its next rescan.
    queue.nudge();
    changed
}

/// The queue's size for `stat`: entries, pending recipients, unreadable envelopes.
pub fn counts(mailroot: &std::path::Path) -> Result<(usize, usize, usize), AdminError> {
    let (entries, unreadable) = Queue::attach(mailroot).list()?;
    let pending = entries.iter().map(|e| tally(e).pending).sum();
    Ok((entries.len(), pending, unreadable.len()))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[derive(Default)]
struct Tally {
    pending: usize,
    delivered: usize,
    failed: usize,
}

fn tally(entry: &Entry) -> Tally {
    let mut t = Tally::default();
    for r in &entry.recipients {
        match r.state {
            RecipientState::Pending => t.pending += 1,
            RecipientState::Delivered => t.delivered += 1,
            RecipientState::Failed => t.failed += 1,
        }
    }
    t
}

/// The reply most worth showing on one line: a pending recipient's, else any.
fn last_reply(entry: &Entry) -> Option<&str> {
    let with_reply = |r: &&QueuedRecipient| r.last_reply.is_some();
    entry
        .recipients
        .iter()
        .filter(|r| r.state == RecipientState::Pending)
        .find(with_reply)
        .or_else(|| entry.recipients.iter().find(with_reply))
        .and_then(|r| r.last_reply.as_deref())
}

/// A span of seconds, coarse enough to read at a glance: `45s`, `12m`, `3h05m`, `2d04h`.
fn span(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn when_next(next: Option<i64>, now: i64) -> String {
    match next {
        None => "none (nothing pending: the server finishes the entry at its next scan)".into(),
        Some(at) if at <= now => "due now".into(),
        Some(at) => format!("in {}", span(at - now)),
    }
}

fn date(at: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(u64::try_from(at).unwrap_or(0));
    dirmail_net::smtp::rfc5322_date(at)
}

/// `text` for a terminal: line ends kept, every other control character shown as `?`.
fn printable(text: &str) -> String {
    text.replace("\r\n", "\n")
        .chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '?'
            } else {
                c
            }
        })
        .collect()
}

/// `<address>`, the null sender as `<>`.
fn angle(address: &str) -> String {
    format!("<{}>", printable(address))
}

fn summary_json(entry: &Entry, now: i64) -> Value {
    let t = tally(entry);
    json!({
        "id": entry.id,
        "reverse_path": entry.reverse_path,
        "arrived": entry.arrived,
        "age_seconds": (now - entry.arrived).max(0),
        "size": entry.size,
        "recipients": entry.recipients.len(),
        "pending": t.pending,
        "delivered": t.delivered,
        "failed": t.failed,
        "next_attempt": entry.next_due(),
        "last_reply": last_reply(entry),
    })
}

fn unreadable_json(error: &QueueError) -> Value {
    let id = match error {
        QueueError::Corrupt { id, .. } => Some(id.as_str()),
        _ => None,
    };
    json!({ "id": id, "error": error.to_string() })
}

fn list(queue: &Queue, now: i64) -> Result<Outcome, AdminError> {
    let (entries, unreadable) = queue.list()?;
    let mut lines = Vec::new();
    for e in &entries {
        let t = tally(e);
        let mut line = format!(
            "{}  {} old  {} bytes  from {}  {} pending, {} delivered, {} failed  {}",
            e.id,
            span(now - e.arrived),
            e.size,
            angle(&e.reverse_path),
            t.pending,
            t.delivered,
            t.failed,
            match e.next_due() {
                None => "finished".to_owned(),
                next => format!("next {}", when_next(next, now)),
            },
        );
        if let Some(reply) = last_reply(e) {
            line.push_str(&format!("  last: {}", printable(reply)));
        }
        lines.push(line);
    }
    for bad in &unreadable {
        lines.push(format!("unreadable: {}", printable(&bad.to_string())));
    }
    lines.push(if entries.is_empty() && unreadable.is_empty() {
        "The outbound queue is empty.".to_owned()
    } else if unreadable.is_empty() {
        format!("{} message(s) queued", entries.len())
    } else {
        format!(
            "{} message(s) queued, {} envelope(s) cannot be read",
            entries.len(),
            unreadable.len()
        )
    });
    Ok(Outcome::new(
        lines.join("\n"),
        json!({
            "entries": entries.iter().map(|e| summary_json(e, now)).collect::<Vec<_>>(),
            "unreadable": unreadable.iter().map(unreadable_json).collect::<Vec<_>>(),
        }),
    ))
}

/// The message's header section, read at most [`HEADER_LIMIT`] octets; `true` when it was cut.
fn header_section(queue: &Queue, id: &str) -> Result<(String, bool), AdminError> {
    let path = queue.message_path(id)?;
    let mut bytes = Vec::new();
    std::fs::File::open(&path)
        .and_then(|file| {
            file.take(HEADER_LIMIT as u64 + 1)
                .read_to_end(&mut bytes)
                .map(drop)
        })
        .map_err(|e| match e.kind() {
            // Finished and removed by the runner since its envelope was read.
            std::io::ErrorKind::NotFound => QueueError::NotFound(id.to_owned()).into(),
            _ => AdminError::Failed(format!("cannot read {}: {e}", path.display())),
        })?;
    let end = |pattern: &[u8]| {
        bytes
            .windows(pattern.len())
            .position(|w| w == pattern)
            .map(|at| at + pattern.len() / 2)
    };
    let blank = if bytes.starts_with(b"\r\n") || bytes.starts_with(b"\n") {
        Some(0)
    } else {
        [end(b"\r\n\r\n"), end(b"\n\n")].into_iter().flatten().min()
    };
    let (cut, truncated) = match blank {
        Some(at) if at <= HEADER_LIMIT => (at, false),
        _ if bytes.len() <= HEADER_LIMIT => (bytes.len(), false),
        // Longer than the limit: up to the last whole line within it.
        _ => (
            bytes[..HEADER_LIMIT]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(HEADER_LIMIT, |at| at + 1),
            true,
        ),
    };
    Ok((
        String::from_utf8_lossy(&bytes[..cut]).into_owned(),
        truncated,
    ))
}

fn show(queue: &Queue, id: &str, now: i64) -> Result<Outcome, AdminError> {
    let entry = queue.load(id)?;
    let (headers, truncated) = header_section(queue, id)?;
    let t = tally(&entry);
    let mut text = format!(
        "Queue id:   {}\nFrom:       {}\nArrived:    {} ({} ago)\nSize:       {} bytes\nNext:       {}\nDelay notice sent: {}\nRecipients: {} ({} pending, {} delivered, {} failed)\n",
        entry.id,
        angle(&entry.reverse_path),
        date(entry.arrived),
        span(now - entry.arrived),
        entry.size,
        when_next(entry.next_due(), now),
        if entry.delay_notice_sent { "yes" } else { "no" },
        entry.recipients.len(),
        t.pending,
        t.delivered,
        t.failed,
    );
    for r in &entry.recipients {
        let state = match r.state {
            RecipientState::Pending => "pending",
            RecipientState::Delivered => "delivered",
            RecipientState::Failed => "failed",
        };
        text.push_str(&format!(
            "  {}  {state}, {} attempt(s)",
            angle(&r.address),
            r.attempts
        ));
        if r.state == RecipientState::Pending {
            text.push_str(&format!(
                ", next {} ({})",
                when_next(Some(r.next_attempt), now),
                date(r.next_attempt)
            ));
        }
        text.push('\n');
        if let Some(host) = &r.last_host {
            text.push_str(&format!("      last host:  {}\n", printable(host)));
        }
        if let Some(reply) = &r.last_reply {
            text.push_str(&format!("      last reply: {}\n", printable(reply)));
        }
    }
    text.push_str("Header section");
    if truncated {
        text.push_str(&format!(" (its first {} KiB)", HEADER_LIMIT / 1024));
    }
    text.push_str(":\n");
    text.push_str(printable(&headers).trim_end_matches('\n'));
    let mut json = serde_json::to_value(&entry)
        .map_err(|e| AdminError::Failed(format!("cannot render the entry: {e}")))?;
    json["age_seconds"] = json!((now - entry.arrived).max(0));
    json["next_attempt"] = json!(entry.next_due());
    json["headers"] = json!(headers);
    json["headers_truncated"] = json!(truncated);
    Ok(Outcome::new(text, json!({ "entry": json })))
}

fn retry(queue: &Queue, id: Option<&str>, now: i64) -> Result<Outcome, AdminError> {
    let ids: Vec<String> = match id {
        Some(id) => vec![id.to_owned()],
        None => queue.list()?.0.into_iter().map(|e| e.id).collect(),
    };
    let mut retried = Vec::new();
    for each in &ids {
        let made_due = queue.update(each, |entry| {
            let mut count = 0usize;
            for r in &mut entry.recipients {
                if r.state == RecipientState::Pending {
                    r.next_attempt = r.next_attempt.min(now);
                    count += 1;
                }
            }
            count
        });
        match made_due {
            Ok(0) => {}
            Ok(count) => retried.push((each.clone(), count)),
            // Finished and removed by the runner since the listing: nothing left to retry.
            Err(QueueError::NotFound(_)) if id.is_none() => {}
            Err(e) => return Err(e.into()),
        }
    }
    let recipients: usize = retried.iter().map(|(_, n)| n).sum();
    let text = match (id, recipients) {
        (Some(id), 0) => format!("{id} has no pending recipient: nothing to retry."),
        (None, 0) => "No pending recipient in the queue: nothing to retry.".to_owned(),
        _ => format!(
            "{recipients} pending recipient(s) of {} message(s) made due now. {NEXT_SCAN}",
            retried.len()
        ),
    };
    Ok(Outcome::new(
        text,
        json!({
            "retried": retried
                .iter()
                .map(|(id, n)| json!({ "id": id, "recipients": n }))
                .collect::<Vec<_>>(),
            "recipients": recipients,
            "due": now,
        }),
    ))
}

fn delete(queue: &Queue, id: &str) -> Result<Outcome, AdminError> {
    // Checks the id and that the entry exists before the queue's lock file is touched.
    queue.load(id)?;
    let entry = {
        let _lock = queue.lock()?;
        let entry = queue.load(id)?;
        queue.remove(id)?;
        entry
    };
    let t = tally(&entry);
    let to: Vec<String> = entry.recipients.iter().map(|r| angle(&r.address)).collect();
    let text = format!(
        "Deleted {} from {} ({} bytes) to {} ({} pending, {} delivered, {} failed). No notification was sent.",
        entry.id,
        angle(&entry.reverse_path),
        entry.size,
        to.join(", "),
        t.pending,
        t.delivered,
        t.failed,
    );
    Ok(Outcome::new(text, json!({ "deleted": entry })))
}

fn bounce(queue: &Queue, id: &str) -> Result<Outcome, AdminError> {
    let (entry, bounced) = queue.update(id, |entry| {
        let mut bounced = Vec::new();
        for r in &mut entry.recipients {
            if r.state == RecipientState::Pending {
                r.state = RecipientState::Failed;
                r.last_reply = Some(BOUNCE_REPLY.to_owned());
                // No remote host gave this reply.
                r.last_host = None;
                bounced.push(r.address.clone());
            }
        }
        (entry.clone(), bounced)
    })?;
    let text = if bounced.is_empty() {
        format!("{id} has no pending recipient: nothing to bounce.")
    } else {
        let notice = if entry.reverse_path.is_empty() {
            "No notification is sent (the sender is <>); the entry is removed.".to_owned()
        } else {
            format!(
                "The notification goes to {}, then the entry is removed.",
                angle(&entry.reverse_path)
            )
        };
        format!(
            "Marked {} recipient(s) of {id} failed ({BOUNCE_REPLY}). {notice} {NEXT_SCAN}",
            bounced.len()
        )
    };
    Ok(Outcome::new(
        text,
        json!({
            "id": id,
            "bounced": bounced,
            "reply": BOUNCE_REPLY,
            "notify": (!bounced.is_empty() && !entry.reverse_path.is_empty())
                .then_some(&entry.reverse_path),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_printable() {
        assert_eq!(span(-5), "0s");
        assert_eq!(span(59), "59s");
        assert_eq!(span(61), "1m");
        assert_eq!(span(3600 + 5 * 60 + 9), "1h05m");
        assert_eq!(span(2 * 86_400 + 4 * 3600), "2d04h");
        assert_eq!(printable("a\x1b[31mb\r\nc\td\0"), "a?[31mb\nc\td?");
        assert_eq!(angle(""), "<>");
    }
}
