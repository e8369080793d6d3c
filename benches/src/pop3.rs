//! The POP3 sessions of the benchmark: a reader's (USER/PASS, STAT, RETR ten, QUIT) and a
//! login alone (USER/PASS, QUIT), which measures the account source.

use anyhow::{Result, bail};

use crate::wire::{Conn, Endpoint, shown};

/// How much of a session to run after logging in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// STAT, then RETR 1..=n, then QUIT (nothing is deleted, so the mailbox stays the same).
    Read { messages: u32 },
    /// QUIT right after the login.
    LoginOnly,
}

/// One whole session on a new connection.
pub async fn session(endpoint: &Endpoint, user: &str, password: &str, what: Session) -> Result<()> {
    let mut conn = endpoint.connect().await?;
    ok(&mut conn, "greeting").await?;
    conn.send(format!("USER {user}\r\n").as_bytes()).await?;
    ok(&mut conn, "USER").await?;
    conn.send(format!("PASS {password}\r\n").as_bytes()).await?;
    ok(&mut conn, "PASS").await?;
    if let Session::Read { messages } = what {
        conn.send(b"STAT\r\n").await?;
        let stat = ok(&mut conn, "STAT").await?;
        let count: u32 = stat
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if count < messages {
            bail!("STAT says {count} messages for {user}; the benchmark needs {messages}");
        }
        for n in 1..=messages {
            conn.send(format!("RETR {n}\r\n").as_bytes()).await?;
            ok(&mut conn, "RETR").await?;
            // The message, byte-stuffed, up to the line holding a single dot.
            while conn.read_line().await? != b".\r\n" {}
        }
    }
    conn.send(b"QUIT\r\n").await?;
    ok(&mut conn, "QUIT").await?;
    conn.shutdown().await;
    Ok(())
}

/// Reads a status line and insists on `+OK`; returns it as text.
async fn ok(conn: &mut Conn, what: &str) -> Result<String> {
    let line = conn.read_line().await?;
    if !line.starts_with(b"+OK") {
        bail!("{what}: {}", shown(line));
    }
    Ok(shown(line))
}
