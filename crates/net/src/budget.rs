//! The memory all sessions together may hold of their clients' input. Each session keeps a
//! small allowance of its own (a command, a chunk of DATA on its way to disk); only what it
//! holds beyond that (an IMAP APPEND gathering its message) is charged to one budget shared by
//! the server (`[limits] input_memory`). A session that would go over waits before reading
//! more, so the whole server's input stays within (sessions × allowance) + budget + one
//! message, whatever the clients send.
//!
//! Waiting alone could deadlock: sessions each half way through a large APPEND, the budget
//! full, none able to finish. So the session that was charged first always goes on reading; it
//! finishes, gives its memory back, and the next in line goes on. That one may pass the budget
//! by at most its own command (bounded by the largest message), hence the "+ one message".

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// What a session may hold without asking the budget: a full command line or SASL response,
/// the read buffer, and the SMTP core's chunk of DATA before it is written out.
pub const ALLOWANCE: usize = 96 * 1024;

/// How much one read may add; the budget must have that much room before a read.
pub const READ_CHUNK: usize = 16 * 1024;

#[derive(Debug)]
pub struct InputBudget {
    max: usize,
    charged: AtomicUsize,
    released: Notify,
    /// The shares charged now, by the order in which they were first charged.
    queue: Mutex<BTreeSet<u64>>,
    next_ticket: AtomicU64,
}

impl InputBudget {
    pub fn new(max: usize) -> Arc<InputBudget> {
        Arc::new(InputBudget {
            max,
            charged: AtomicUsize::new(0),
            released: Notify::new(),
            queue: Mutex::new(BTreeSet::new()),
            next_ticket: AtomicU64::new(0),
        })
    }

    /// A session's account, charged nothing yet.
    pub fn share(self: &Arc<Self>) -> Share {
        Share {
            budget: Arc::clone(self),
            charged: 0,
            ticket: None,
        }
    }

    pub fn charged(&self) -> usize {
        self.charged.load(Ordering::Relaxed)
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
        // The set holds plain numbers; a panic while it was locked left it usable.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Completes when some session gave memory back, or after a short while anyway (a release
    /// between a session's check and its wait would otherwise be missed).
    pub async fn released(&self) {
        let _ = tokio::time::timeout(Duration::from_millis(100), self.released.notified()).await;
    }
}

/// One session's part of the budget; gives it back when dropped.
#[derive(Debug)]
pub struct Share {
    budget: Arc<InputBudget>,
    charged: usize,
    /// Its place in the queue while it is charged.
    ticket: Option<u64>,
}

impl Share {
    /// The session now holds `bytes` of input.
    pub fn holds(&mut self, bytes: usize) {
        let charge = bytes.saturating_sub(ALLOWANCE);
        if charge > self.charged {
            self.budget
                .charged
                .fetch_add(charge - self.charged, Ordering::Relaxed);
        } else if charge < self.charged {
            self.budget
                .charged
                .fetch_sub(self.charged - charge, Ordering::Relaxed);
            self.budget.released.notify_waiters();
        }
        self.charged = charge;
        match (charge > 0, self.ticket) {
            (true, None) => {
                let ticket = self.budget.next_ticket.fetch_add(1, Ordering::Relaxed);
                self.budget.queue().insert(ticket);
                self.ticket = Some(ticket);
            }
            (false, Some(ticket)) => {
                self.budget.queue().remove(&ticket);
                self.ticket = None;
            }
            _ => {}
        }
    }

    /// May the session read more, holding `bytes` now? Within its allowance always; beyond it
    /// only while the budget has room for one more read. Sessions racing past the check each
    /// add at most one read, so the overshoot is bounded too.
    /// And always for the session charged first, so someone always finishes.
    pub fn may_read(&self, bytes: usize) -> bool {
        bytes.saturating_add(READ_CHUNK) <= ALLOWANCE
            || self.budget.charged().saturating_add(READ_CHUNK) <= self.budget.max
            || self
                .ticket
                .is_some_and(|mine| self.budget.queue().first() == Some(&mine))
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.holds(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_is_past_the_allowance_is_charged_and_all_is_given_back() {
        let budget = InputBudget::new(100 * 1024);
        let mut a = budget.share();
        let mut b = budget.share();
        a.holds(ALLOWANCE);
        assert_eq!(budget.charged(), 0);
        assert!(a.may_read(ALLOWANCE - READ_CHUNK));
        a.holds(ALLOWANCE + 60 * 1024);
        b.holds(ALLOWANCE + 30 * 1024);
        assert_eq!(budget.charged(), 90 * 1024);
        // 90 KiB charged of 100: no room for another 16 KiB read past an allowance…
        // …except the first charged, so that someone always finishes…
        assert!(a.may_read(ALLOWANCE + 60 * 1024));
        assert!(!b.may_read(ALLOWANCE + 30 * 1024));
        // …but a session within its allowance still reads (a login, a command).
        let c = budget.share();
        assert!(c.may_read(1024));
        a.holds(10);
        assert_eq!(budget.charged(), 30 * 1024);
        assert!(b.may_read(ALLOWANCE + 30 * 1024));
        // …and once a has let go, b is first in line.
        b.holds(ALLOWANCE + 100 * 1024);
        assert!(b.may_read(ALLOWANCE + 100 * 1024));
        a.holds(ALLOWANCE + 1024);
        assert!(!a.may_read(ALLOWANCE + 1024), "a is now behind b");
        drop(b);
        drop(a);
        assert_eq!(budget.charged(), 0);
    }
}
