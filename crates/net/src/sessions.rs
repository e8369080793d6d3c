//! The sessions open now: each connection is registered when it is accepted (its listener and
//! client address), names its user once it logs in, and leaves when its [`Registration`] is
//! dropped, however the session ends. `dirmail status` lists them through the control socket
//! ([`control`](super::control)); the metrics page counts them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::shared::Service;

/// One open session as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub service: Service,
    pub client: SocketAddr,
    /// The mailbox it logged in as, if it has.
    pub user: Option<String>,
    pub since: Instant,
}

impl SessionInfo {
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.since)
    }
}

/// Every open session, by a number given at accept.
#[derive(Debug, Default)]
pub struct Sessions {
    next_id: AtomicU64,
    // A BTreeMap: ids grow with time, so a listing comes oldest first.
    open: Mutex<BTreeMap<u64, SessionInfo>>,
}

impl Sessions {
    /// Registers a session that has just been accepted; it stays listed until the returned
    /// registration is dropped.
    pub fn register(self: &Arc<Self>, service: Service, client: SocketAddr) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            id,
            SessionInfo {
                service,
                client,
                user: None,
                since: Instant::now(),
            },
        );
        Registration {
            sessions: Arc::clone(self),
            id,
        }
    }

    /// The open sessions, oldest first.
    pub fn list(&self) -> Vec<SessionInfo> {
        self.lock().values().cloned().collect()
    }

    /// Open sessions per listener, in [`Service::ALL`]'s order.
    pub fn count_by_service(&self) -> [usize; Service::ALL.len()] {
        let mut counts = [0; Service::ALL.len()];
        for info in self.lock().values() {
            if let Some(count) = counts.get_mut(info.service.index()) {
                *count += 1;
            }
        }
        counts
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, SessionInfo>> {
        // A panic while holding the lock cannot leave the map half changed: every change is
        // one insert, update or remove.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A session's place in [`Sessions`]; dropping it takes the session off the list.
#[derive(Debug)]
pub struct Registration {
    sessions: Arc<Sessions>,
    id: u64,
}

impl Registration {
    /// The session has logged in as `user` (a mailbox address).
    pub fn logged_in(&self, user: &str) {
        if let Some(info) = self.sessions.lock().get_mut(&self.id) {
            info.user = Some(user.to_owned());
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_listed_from_accept_to_drop_with_its_user_once_logged_in() {
        let sessions = Arc::new(Sessions::default());
        let client: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let imap = sessions.register(Service::Imap, client);
        let pop3 = sessions.register(Service::Pop3s, client);
        imap.logged_in("bob@example.jp");
        let listed = sessions.list();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].service, Service::Imap);
        assert_eq!(listed[0].user.as_deref(), Some("bob@example.jp"));
        assert_eq!(listed[1].user, None);
        let counts = sessions.count_by_service();
        assert_eq!(counts[Service::Imap.index()], 1);
        assert_eq!(counts[Service::Pop3s.index()], 1);
        assert_eq!(counts.iter().sum::<usize>(), 2);
        drop(imap);
        assert_eq!(sessions.list().len(), 1);
        drop(pop3);
        assert!(sessions.list().is_empty());
    }
}
