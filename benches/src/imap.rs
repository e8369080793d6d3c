//! The IMAP session of the benchmark (issue 6, item 3): LOGIN, SELECT INBOX, FETCH 1:*
//! (FLAGS), FETCH 1 BODY[], LOGOUT, on a new connection each time.

use anyhow::{Result, bail};

use crate::wire::{Conn, Endpoint, shown};

pub async fn session(endpoint: &Endpoint, user: &str, password: &str) -> Result<()> {
    let mut conn = endpoint.connect().await?;
    let greeting = conn.read_line().await?;
    if !greeting.starts_with(b"* OK") {
        bail!("greeting: {}", shown(greeting));
    }
    let steps = [
        format!("a1 LOGIN {} {}\r\n", quoted(user), quoted(password)),
        "a2 SELECT INBOX\r\n".to_owned(),
        "a3 FETCH 1:* (FLAGS)\r\n".to_owned(),
        "a4 FETCH 1 BODY[]\r\n".to_owned(),
        "a5 LOGOUT\r\n".to_owned(),
    ];
    for (n, command) in steps.iter().enumerate() {
        conn.send(command.as_bytes()).await?;
        tagged_ok(&mut conn, &format!("a{} ", n + 1)).await?;
    }
    conn.shutdown().await;
    Ok(())
}

/// Reads untagged responses (skipping literals) up to the tagged one, which must be OK.
async fn tagged_ok(conn: &mut Conn, tag: &str) -> Result<()> {
    loop {
        let line = conn.read_line().await?;
        if let Some(n) = literal_length(line) {
            conn.skip_exact(n).await?;
            continue;
        }
        if line.starts_with(tag.as_bytes()) {
            if line[tag.len()..].starts_with(b"OK") {
                return Ok(());
            }
            bail!("{}", shown(line));
        }
    }
}

/// `{123}` at the end of a line announces a literal of 123 bytes.
fn literal_length(line: &[u8]) -> Option<usize> {
    let line = line.strip_suffix(b"\r\n")?.strip_suffix(b"}")?;
    let open = line.iter().rposition(|&b| b == b'{')?;
    std::str::from_utf8(&line[open + 1..]).ok()?.parse().ok()
}

fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals() {
        assert_eq!(literal_length(b"* 1 FETCH (BODY[] {4096}\r\n"), Some(4096));
        assert_eq!(literal_length(b"* 1 FETCH (FLAGS ())\r\n"), None);
        assert_eq!(literal_length(b"a1 OK done\r\n"), None);
    }
}
