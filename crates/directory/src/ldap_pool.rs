//! Connections to the directory kept between operations, so a login does not pay for a TCP
//! connection, a TLS handshake and a service bind every time (the DC's CPU mostly goes there).
//!
//! Kept connections are few ([`KEEP_AT_MOST`]) and young ([`KEEP_FOR`]): a DC drops idle
//! connections after a while (AD's MaxConnIdleTime is 900 s), and one that restarts drops them
//! all, so the caller treats a failure on a kept connection as a reason to start afresh.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ldap3::LdapConn;

/// Each connection serves one operation at a time, so the pool must hold as many as there are
/// logins at once, or every login past it pays for a handshake and its connection is thrown
/// away (with 8 kept, 16 clients saw p99 at 417 ms against 149 ms for Dovecot's auth_bind).
const KEEP_AT_MOST: usize = 32;
/// Well under the idle limits of AD and Samba.
const KEEP_FOR: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct LdapPool {
    idle: Mutex<Vec<(LdapConn, Instant)>>,
}

impl LdapPool {
    /// The most recently used connection still young enough, if any.
    pub fn take(&self) -> Option<LdapConn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // Old ones go first in the list, so everything before the first young one is stale.
        let stale = idle
            .iter()
            .position(|(_, since)| now.duration_since(*since) < KEEP_FOR)
            .unwrap_or(idle.len());
        let dropped: Vec<_> = idle.drain(..stale).collect();
        let taken = idle.pop().map(|(conn, _)| conn);
        drop(idle);
        drop(dropped);
        taken
    }

    /// Keeps `conn` for the next operation, or closes it when enough are kept.
    pub fn give(&self, conn: LdapConn) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < KEEP_AT_MOST {
            idle.push((conn, Instant::now()));
        }
    }

    /// Forgets every kept connection: one failed, so the others are likely dead too.
    pub fn clear(&self) {
        let dropped = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        drop(dropped);
    }

    pub fn len(&self) -> usize {
        self.idle.lock().map_or(0, |idle| idle.len())
    }
}

impl Drop for LdapPool {
    /// Each `LdapConn` owns a tokio runtime, which must not be dropped inside another runtime's
    /// task (tokio panics); the server's last reference may go there, so they go elsewhere.
    fn drop(&mut self) {
        let idle = std::mem::take(self.idle.get_mut().unwrap_or_else(|e| e.into_inner()));
        if !idle.is_empty() {
            let _ = std::thread::Builder::new()
                .name("ldap-pool-drop".into())
                .spawn(move || drop(idle));
        }
    }
}
