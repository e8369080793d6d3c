//! Failed logins slow down, counted per client address and per account and shared by every
//! connection and protocol, so that opening more connections does not guess faster.
//!
//! Addresses are grouped as the connection limits group them
//! ([`address_key`](super::admission::address_key): IPv4 as itself, IPv6 by its /64). Each
//! group's failures set a delay (250 ms, doubling to 8 s), and the delay is taken *before* the
//! password is checked: every attempt reserves its address's next turn, `start = max(now,
//! next)`, and pushes `next` on by the delay it would earn if it failed too (failures plus the
//! attempts still in flight). Parallel attempts therefore queue behind each other, and a
//! hundred connections get the turns one connection would. An address with no failures is not
//! delayed, but may have only [`FREE_IN_FLIGHT`] checks running at once, so a crowd's first
//! burst is small. A refused connection still waits its address's delay before it hears the
//! answer, as before.
//!
//! An account is slowed the same way by failures from any address, but its queue applies only
//! to attempts from addresses with failures of their own: its owner, from an address that has
//! not failed, gets in whatever the account's count. A success clears that account's count;
//! the address's count stays (the attacker's own account must not wipe its slate).
//!
//! Both tables are bounded; a quiet record is forgotten after [`FORGET_AFTER`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::admission::address_key;

const FIRST_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(8);
/// A quiet record is forgiven after this long.
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// How many logins an address without failures may have checked at once: a mail client opening
/// a few connections is not held up, and a crowd's first burst is this small.
pub const FREE_IN_FLIGHT: u32 = 4;
const MAX_ADDRESSES: usize = 65_536;
const MAX_ACCOUNTS: usize = 16_384;
/// Login names are kept to this many bytes (an address is at most 320): the account table's
/// memory stays bounded whatever a client sends.
const MAX_ACCOUNT_KEY: usize = 320;

/// The throttle every connection of a server shares.
#[derive(Debug, Default)]
pub struct Throttle {
    tables: Mutex<Tables>,
    /// Woken whenever an attempt settles, for attempts waiting for a free check.
    settled: Notify,
}

#[derive(Debug, Default)]
struct Tables {
    addresses: HashMap<IpAddr, Record>,
    accounts: HashMap<String, Record>,
}

/// What is known of one address group, or one account.
#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    /// Attempts admitted and not yet settled.
    in_flight: u32,
    /// The earliest time the next attempt may be checked.
    next: Instant,
    /// The last failure, for forgetting.
    last_failure: Instant,
}

impl Record {
    fn new(now: Instant) -> Record {
        Record {
            failures: 0,
            in_flight: 0,
            next: now,
            last_failure: now,
        }
    }

    /// Forgets failures older than [`FORGET_AFTER`].
    fn refresh(&mut self, now: Instant) {
        if self.failures > 0 && now.duration_since(self.last_failure) >= FORGET_AFTER {
            self.failures = 0;
            self.next = now;
        }
    }

    fn idle(&self) -> bool {
        self.failures == 0 && self.in_flight == 0
    }

    /// Reserves one attempt's turn: it may be checked at the returned time, and the next one
    /// after it only once the delay it would earn by failing has passed.
    fn reserve(&mut self, now: Instant) -> Instant {
        self.in_flight = self.in_flight.saturating_add(1);
        let start = self.next.max(now);
        self.next = start + delay_for(self.failures.saturating_add(self.in_flight));
        start
    }

    fn fail(&mut self, now: Instant) {
        self.refresh(now);
        self.failures = self.failures.saturating_add(1);
        self.last_failure = now;
        self.next = self.next.max(now + delay_for(self.failures));
    }
}

/// One login attempt's place in the throttle, from before its check until it is settled. Drop
/// it unsettled (the connection went away, the directory could not answer) and it counts as
/// neither a success nor a failure.
#[derive(Debug)]
pub struct Attempt<'a> {
    throttle: &'a Throttle,
    /// `None` when the address table was full and the attempt is not tracked.
    address: Option<IpAddr>,
    account: String,
    /// Whether the attempt holds a place in the account's queue.
    in_account_queue: bool,
    admitted: Instant,
    start: Instant,
    settled: bool,
}

impl Throttle {
    /// Waits until `peer` may have one more login checked at once, then reserves the attempt's
    /// turn (see [`Attempt::start`]) for the login name `account`.
    pub async fn admit(&self, peer: IpAddr, account: &str) -> Attempt<'_> {
        loop {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            // Registered before looking, so a settlement in between is not missed.
            notified.as_mut().enable();
            if let Some(attempt) = self.try_admit(peer, account, Instant::now()) {
                return attempt;
            }
            notified.await;
        }
    }

    /// [`Throttle::admit`] without the waiting: `None` while `peer` has no failures and
    /// [`FREE_IN_FLIGHT`] checks running.
    pub fn try_admit(&self, peer: IpAddr, account: &str, now: Instant) -> Option<Attempt<'_>> {
        let key = address_key(peer);
        let account = account_key(account);
        let (address, start, in_account_queue) = self.reserve(key, &account, now)?;
        // Made after the lock is let go: an attempt dropped under it would wait for it.
        Some(Attempt {
            throttle: self,
            address,
            account,
            in_account_queue,
            admitted: now,
            start,
            settled: false,
        })
    }

    /// [`Throttle::try_admit`]'s bookkeeping: the address tracked (if there was room), when the
    /// attempt may start, and whether it holds a place in the account's queue.
    fn reserve(
        &self,
        key: IpAddr,
        account: &str,
        now: Instant,
    ) -> Option<(Option<IpAddr>, Instant, bool)> {
        let mut tables = self.lock();
        let Tables {
            addresses,
            accounts,
        } = &mut *tables;
        if !addresses.contains_key(&key) && !make_room(addresses, MAX_ADDRESSES, now) {
            // Full of recent failures: this attempt goes untracked (its failure pays the most).
            return Some((None, now, false));
        }
        let address = addresses.entry(key).or_insert_with(|| Record::new(now));
        address.refresh(now);
        if address.failures == 0 {
            if address.in_flight >= FREE_IN_FLIGHT {
                return None;
            }
            address.in_flight += 1;
            return Some((Some(key), now, false));
        }
        let mut start = address.reserve(now);
        let mut in_account_queue = false;
        // The account's queue, for addresses that have failed.
        if accounts.contains_key(account) || make_room(accounts, MAX_ACCOUNTS, now) {
            let record = accounts
                .entry(account.to_owned())
                .or_insert_with(|| Record::new(now));
            record.refresh(now);
            if record.failures > 0 {
                start = start.max(record.reserve(start));
                in_account_queue = true;
            } else if record.idle() {
                accounts.remove(account);
            }
        }
        Some((Some(key), start, in_account_queue))
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        // A poisoned lock means a panic while counting; the counts are still usable integers.
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn settle(&self, attempt: &Attempt<'_>, outcome: Outcome, now: Instant) -> Duration {
        let mut tables = self.lock();
        let mut delay = Duration::ZERO;
        if let Some(key) = attempt.address {
            if let Some(record) = tables.addresses.get_mut(&key) {
                record.in_flight = record.in_flight.saturating_sub(1);
                if outcome == Outcome::Failed {
                    record.fail(now);
                    delay = delay_for(record.failures);
                }
                if record.idle() {
                    tables.addresses.remove(&key);
                }
            }
        } else if outcome == Outcome::Failed {
            delay = MAX_DELAY;
        }
        let accounts = &mut tables.accounts;
        let room =
            accounts.contains_key(&attempt.account) || make_room(accounts, MAX_ACCOUNTS, now);
        if room {
            let record = accounts
                .entry(attempt.account.clone())
                .or_insert_with(|| Record::new(now));
            if attempt.in_account_queue {
                record.in_flight = record.in_flight.saturating_sub(1);
            }
            match outcome {
                Outcome::Failed => record.fail(now),
                Outcome::Succeeded => {
                    record.failures = 0;
                    record.next = now;
                }
                Outcome::Abandoned => {}
            }
            if record.idle() {
                accounts.remove(&attempt.account);
            }
        }
        drop(tables);
        self.settled.notify_waiters();
        delay
    }

    #[cfg(test)]
    fn failures(&self, peer: IpAddr) -> u32 {
        self.lock()
            .addresses
            .get(&address_key(peer))
            .map_or(0, |r| r.failures)
    }

    #[cfg(test)]
    fn account_failures(&self, account: &str) -> u32 {
        self.lock()
            .accounts
            .get(&account_key(account))
            .map_or(0, |r| r.failures)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Failed,
    Abandoned,
}

impl Attempt<'_> {
    /// When the password may be checked: wait until then.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// The turn the throttle gave the attempt: from its admission to its start (0 for an
    /// address and account without failures).
    pub fn queued(&self) -> Duration {
        self.start.saturating_duration_since(self.admitted)
    }

    /// The credentials were right (even if a lock then keeps the mailbox closed): the
    /// account's count is cleared, the address's stays.
    pub fn succeeded(mut self) {
        self.settled = true;
        self.throttle
            .settle(&self, Outcome::Succeeded, Instant::now());
    }

    /// The credentials were refused: counts the failure for the address and the account, and
    /// returns how long to hold the answer (the address's delay).
    pub fn failed(mut self, now: Instant) -> Duration {
        self.settled = true;
        self.throttle.settle(&self, Outcome::Failed, now)
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.throttle
                .settle(self, Outcome::Abandoned, Instant::now());
        }
    }
}

/// Makes room for one more record in a full table by forgetting quiet ones; false when it is
/// still full.
fn make_room<K>(table: &mut HashMap<K, Record>, max: usize, now: Instant) -> bool {
    if table.len() < max {
        return true;
    }
    table.retain(|_, r| {
        r.refresh(now);
        !r.idle()
    });
    table.len() < max
}

/// The account a login name counts for: without case, and bounded in length.
fn account_key(login: &str) -> String {
    let mut key = login.trim().to_lowercase();
    if key.len() > MAX_ACCOUNT_KEY {
        let mut end = MAX_ACCOUNT_KEY;
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        key.truncate(end);
    }
    key
}

/// 0 without failures; then 250 ms, 500 ms, 1 s, … doubling up to 8 s.
pub fn delay_for(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let doublings = failures.saturating_sub(1).min(10);
    FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn fail(t: &Throttle, peer: IpAddr, account: &str, now: Instant) -> Duration {
        t.try_admit(peer, account, now).unwrap().failed(now)
    }

    #[test]
    fn delay_grows_per_address_and_others_are_not_slowed() {
        let t = Throttle::default();
        let now = Instant::now();
        let a = ip("192.0.2.1");
        let b = ip("192.0.2.2");
        assert_eq!(fail(&t, a, "x", now), Duration::from_millis(250));
        assert_eq!(fail(&t, a, "y", now), Duration::from_millis(500));
        assert_eq!(fail(&t, a, "z", now), Duration::from_secs(1));
        assert_eq!(
            fail(&t, b, "x", now),
            Duration::from_millis(250),
            "others are not slowed"
        );
        for _ in 0..20 {
            fail(&t, a, "x", now);
        }
        assert_eq!(fail(&t, a, "x", now), MAX_DELAY);
        let later = now + FORGET_AFTER + MAX_DELAY * 30;
        assert_eq!(
            fail(&t, a, "w", later),
            Duration::from_millis(250),
            "forgiven"
        );
    }

    #[test]
    fn the_wait_comes_before_the_check_and_parallel_attempts_queue() {
        let t = Throttle::default();
        let now = Instant::now();
        let a = ip("198.51.100.7");
        fail(&t, a, "bob", now);
        // One failure: the next attempt waits 250 ms; the ones beside it queue behind it, each
        // charged as if those in flight had failed (500 ms, 1 s, …).
        let attempts: Vec<Attempt<'_>> = (0..4)
            .map(|_| t.try_admit(a, "carol", now).unwrap())
            .collect();
        let starts: Vec<u128> = attempts
            .iter()
            .map(|x| x.start().duration_since(now).as_millis())
            .collect();
        assert_eq!(starts, [250, 750, 1750, 3750]);
        drop(attempts);
        // A connection that goes away leaves the count as it was.
        assert_eq!(t.failures(a), 1);
    }

    #[test]
    fn an_address_without_failures_has_a_few_checks_at_once_and_no_wait() {
        let t = Throttle::default();
        let now = Instant::now();
        let a = ip("203.0.113.9");
        let free: Vec<Attempt<'_>> = (0..FREE_IN_FLIGHT)
            .map(|_| t.try_admit(a, "bob", now).unwrap())
            .collect();
        assert!(free.iter().all(|x| x.start() == now));
        assert!(t.try_admit(a, "bob", now).is_none(), "one too many at once");
        assert!(t.try_admit(ip("203.0.113.10"), "bob", now).is_some());
        let mut free = free.into_iter();
        free.next().unwrap().succeeded();
        assert!(t.try_admit(a, "bob", now).is_some(), "a check was freed");
    }

    #[test]
    fn a_success_clears_the_accounts_count_not_the_addresses() {
        let t = Throttle::default();
        let now = Instant::now();
        let attacker = ip("192.0.2.10");
        fail(&t, attacker, "bob@example.jp", now);
        t.try_admit(attacker, "Carol@Example.jp", now)
            .unwrap()
            .succeeded();
        assert_eq!(t.failures(attacker), 1, "the address's count stays");
        assert_eq!(t.account_failures("bob@example.jp"), 1, "bob's stays");
        let later = now + Duration::from_secs(1);
        assert_eq!(
            fail(&t, attacker, "bob@example.jp", later),
            Duration::from_millis(500)
        );
        assert_eq!(t.account_failures("BOB@example.jp"), 2);
        // Bob's own success clears bob's count.
        t.try_admit(ip("192.0.2.11"), "bob@example.jp", later)
            .unwrap()
            .succeeded();
        assert_eq!(t.account_failures("bob@example.jp"), 0);
    }

    #[test]
    fn an_account_under_attack_slows_failing_addresses_not_its_owner() {
        let t = Throttle::default();
        let now = Instant::now();
        // Ten addresses fail once each on bob.
        for n in 0..10 {
            fail(&t, ip(&format!("192.0.2.{n}")), "bob", now);
        }
        assert_eq!(t.account_failures("bob"), 10);
        // An address with one failure of its own now waits for bob's queue, well past its
        // own 250 ms.
        let attacker = t.try_admit(ip("192.0.2.1"), "bob", now).unwrap();
        assert!(
            attacker.start() >= now + MAX_DELAY,
            "{:?}",
            attacker.start()
        );
        // Bob's owner, from an address that has not failed, is not made to wait.
        let owner = t.try_admit(ip("198.51.100.1"), "bob", now).unwrap();
        assert_eq!(owner.start(), now);
        // Nor is the account's queue used for a clean address's other accounts.
        let other = t.try_admit(ip("192.0.2.2"), "carol", now).unwrap();
        assert_eq!(other.start(), now + Duration::from_millis(250));
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let t = Throttle::default();
        let now = Instant::now();
        fail(&t, ip("2001:db8:1:2::1"), "bob", now);
        // Another address of the same /64 (a privacy address) is the same client.
        assert_eq!(
            fail(&t, ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "bob", now),
            Duration::from_millis(500)
        );
        assert_eq!(t.failures(ip("2001:db8:1:2:ffff::9")), 2);
        // The next /64 is another client.
        assert_eq!(
            fail(&t, ip("2001:db8:1:3::1"), "bob", now),
            Duration::from_millis(250)
        );
        fail(&t, ip("192.0.2.1"), "bob", now);
        assert_eq!(t.failures(ip("::ffff:192.0.2.1")), 1);
    }

    #[test]
    fn the_tables_stay_bounded() {
        let t = Throttle::default();
        let now = Instant::now();
        for n in 0..(MAX_ACCOUNTS + 10) {
            let peer = IpAddr::from([10, (n >> 16) as u8, (n >> 8) as u8, n as u8]);
            fail(&t, peer, &format!("user{n}"), now);
        }
        let tables = t.lock();
        assert!(tables.accounts.len() <= MAX_ACCOUNTS);
        assert!(tables.addresses.len() <= MAX_ADDRESSES);
        drop(tables);
        // Once quiet for long enough, records make room again.
        let later = now + FORGET_AFTER;
        fail(&t, ip("192.0.2.200"), "newcomer", later);
        assert_eq!(t.account_failures("newcomer"), 1);
        assert_eq!(account_key(&"é".repeat(400)).len(), MAX_ACCOUNT_KEY);
    }
}
