//! Who may connect: the connection limit of all listeners together (`[limits] socket_max`),
//! each client address's share of it (`per_address_max`), so that one address holding every
//! slot cannot lock the others out, and the slots kept for clients that have logged in
//! (`reserved_for_authenticated`), so that a few addresses cannot lock everyone out either.
//!
//! Postfix's stress mode is the model for the last. Connections that have not logged in may
//! hold at most `socket_max - reserved_for_authenticated`; a session that logs in moves to the
//! authenticated count ([`Ticket::logged_in`]). When the slots for strangers are full, a
//! newcomer does not simply get "too many connections": the stranger that has waited longest
//! for its client without a word is closed for it ([`Ticket::evicted`] wakes its driver, which
//! says the protocol's busy line), and only when every stranger is busy is the newcomer
//! refused. A flood of idle connections thus churns among itself, while people who have
//! logged in keep their sessions and a new client still gets in to log in.
//!
//! Addresses are grouped as a client controls them. An IPv4-mapped IPv6 address
//! (`::ffff:192.0.2.1`, what a dual-stack listener sees) is the IPv4 address. An IPv6 address
//! counts by its /64: one host or one home usually gets a whole /64 and can pick any address in
//! it (SLAAC privacy addresses), so counting single IPv6 addresses would be no limit at all.
//! Loopback is not exempt: a local process can flood as well as a remote one.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;

/// The counts, shared by every listener of the server.
#[derive(Debug)]
pub struct Admission {
    max: u32,
    per_address_max: u32,
    /// The most connections that have not logged in: `max` less the reserved slots.
    strangers_max: u32,
    /// What the idle-since times of the slots count from (an `Instant` does not fit an atomic).
    epoch: Instant,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: u32,
    /// Connections that have not logged in (and were not closed for a newcomer).
    strangers: u32,
    /// Only addresses that hold a connection, so the table stays as small as the load.
    by_address: HashMap<IpAddr, u32>,
    /// The connections that have not logged in, by ticket number: where a newcomer looks for
    /// the one to close.
    waiting_room: HashMap<u64, Arc<Slot>>,
    next_ticket: u64,
}

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every slot of the server is taken (or every slot for clients that have not logged in,
    /// and none of them is idle).
    Full,
    /// The client's address (or its IPv6 /64) holds its whole share.
    AddressShare,
}

/// Where a connection's driver is, as the admission sees it. Only an idle stranger may be
/// closed for a newcomer, and the move from idle to busy or to evicted is one atomic step, so a
/// driver never works for a connection whose slot was given away.
const BUSY: u8 = 0;
const IDLE: u8 = 1;
const EVICTED: u8 = 2;
const AUTHENTICATED: u8 = 3;

/// What the admission and a connection's driver share about the connection.
#[derive(Debug)]
struct Slot {
    /// The client's address group, whose share the connection holds.
    key: IpAddr,
    state: AtomicU8,
    /// Nanoseconds from [`Admission::epoch`] to the client's last input, while idle.
    idle_since: AtomicU64,
    evicted: Notify,
}

/// A connection's place in the counts, given back when dropped.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    number: u64,
    slot: Arc<Slot>,
}

impl Admission {
    /// `reserved` slots are kept for sessions that have logged in (`reserved < max`, checked
    /// with the configuration; a larger value leaves one slot for strangers).
    pub fn new(max: u32, per_address_max: u32, reserved: u32) -> Arc<Admission> {
        Arc::new(Admission {
            max,
            per_address_max,
            strangers_max: max.saturating_sub(reserved).max(1),
            epoch: Instant::now(),
            counts: Mutex::new(Counts::default()),
        })
    }

    /// Takes a slot for a connection from `peer`, closing the longest-idle stranger for it if
    /// the strangers' slots are full, or says why not. The new connection counts as a stranger
    /// waiting for its client from now.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Ticket, Refusal> {
        let key = address_key(peer);
        let mut counts = self.counts();
        let held = counts.by_address.get(&key).copied().unwrap_or(0);
        if held >= self.per_address_max {
            // Never close another's connection for an address that already has its share.
            return Err(if counts.total >= self.max {
                Refusal::Full
            } else {
                Refusal::AddressShare
            });
        }
        if (counts.total >= self.max || counts.strangers >= self.strangers_max)
            && !self.evict_longest_idle(&mut counts)
        {
            return Err(Refusal::Full);
        }
        *counts.by_address.entry(key).or_insert(0) += 1;
        counts.total += 1;
        counts.strangers += 1;
        let number = counts.next_ticket;
        counts.next_ticket += 1;
        let slot = Arc::new(Slot {
            key,
            state: AtomicU8::new(IDLE),
            idle_since: AtomicU64::new(self.since_epoch(Instant::now())),
            evicted: Notify::new(),
        });
        counts.waiting_room.insert(number, Arc::clone(&slot));
        Ok(Ticket {
            admission: Arc::clone(self),
            number,
            slot,
        })
    }

    /// Closes the stranger that has been idle longest, giving its place back at once (its
    /// driver says goodbye and drops the connection). False when every stranger is busy.
    fn evict_longest_idle(&self, counts: &mut Counts) -> bool {
        let mut idle: Vec<(u64, u64)> = counts
            .waiting_room
            .iter()
            .filter(|(_, slot)| slot.state.load(Ordering::Acquire) == IDLE)
            .map(|(&number, slot)| (slot.idle_since.load(Ordering::Acquire), number))
            .collect();
        idle.sort_unstable();
        for (_, number) in idle {
            let Some(slot) = counts.waiting_room.get(&number).cloned() else {
                continue;
            };
            // The driver may have just turned busy; then try the next one.
            if slot
                .state
                .compare_exchange(IDLE, EVICTED, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            counts.waiting_room.remove(&number);
            counts.strangers = counts.strangers.saturating_sub(1);
            counts.give_back(slot.key);
            slot.evicted.notify_one();
            return true;
        }
        false
    }

    /// True when strangers hold three quarters of their slots or more: then the SMTP relay
    /// port, too, gets the short pre-login wait.
    pub fn under_pressure(&self) -> bool {
        let counts = self.counts();
        u64::from(counts.strangers) * 4 >= u64::from(self.strangers_max) * 3
    }

    fn since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        // A poisoned lock means a panic while counting; the counts are still usable integers.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn held(&self) -> (u32, usize) {
        let counts = self.counts();
        (counts.total, counts.by_address.len())
    }

    #[cfg(test)]
    fn strangers(&self) -> u32 {
        self.counts().strangers
    }
}

impl Counts {
    /// One connection of `key` fewer in the whole count and the address's share.
    fn give_back(&mut self, key: IpAddr) {
        self.total = self.total.saturating_sub(1);
        if let Some(held) = self.by_address.get_mut(&key) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                self.by_address.remove(&key);
            }
        }
    }
}

impl Ticket {
    /// The driver waits for the client, whose last input came at `since`: from now on the
    /// connection may be closed for a newcomer (unless it has logged in).
    pub fn waiting(&self, since: Instant) {
        self.slot
            .idle_since
            .store(self.admission.since_epoch(since), Ordering::Release);
        let _ = self
            .slot
            .state
            .compare_exchange(BUSY, IDLE, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The driver has work for the connection (input came). False when the connection was
    /// closed for a newcomer meanwhile: then the driver must only say goodbye.
    pub fn busy(&self) -> bool {
        match self
            .slot
            .state
            .compare_exchange(IDLE, BUSY, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(state) => state != EVICTED,
        }
    }

    /// Completes once the connection has been closed for a newcomer (its place is already
    /// given back).
    pub async fn evicted(&self) {
        while self.slot.state.load(Ordering::Acquire) != EVICTED {
            self.slot.evicted.notified().await;
        }
    }

    /// The session has logged in: it moves from the strangers to the authenticated count and
    /// can no longer be closed for a newcomer. Once is enough; later calls change nothing.
    pub fn logged_in(&self) {
        let mut counts = self.admission.counts();
        let was = self.slot.state.load(Ordering::Acquire);
        if was == EVICTED || was == AUTHENTICATED {
            return;
        }
        // Under the lock no newcomer can evict it between the load and the store.
        self.slot.state.store(AUTHENTICATED, Ordering::Release);
        counts.waiting_room.remove(&self.number);
        counts.strangers = counts.strangers.saturating_sub(1);
    }

    /// See [`Admission::under_pressure`].
    pub fn under_pressure(&self) -> bool {
        self.admission.under_pressure()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut counts = self.admission.counts();
        match self.slot.state.load(Ordering::Acquire) {
            // Its place was given back when it was closed for a newcomer.
            EVICTED => {}
            AUTHENTICATED => counts.give_back(self.slot.key),
            _ => {
                counts.waiting_room.remove(&self.number);
                counts.strangers = counts.strangers.saturating_sub(1);
                counts.give_back(self.slot.key);
            }
        }
    }
}

/// The group an address counts in: IPv4 as itself (mapped IPv6 included), IPv6 by its /64.
pub fn address_key(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let [a, b, c, d, ..] = v6.segments();
            IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn one_address_gets_its_share_and_others_still_get_in() {
        let a = Admission::new(6, 3, 0);
        let held: Vec<Ticket> = (0..3).map(|_| a.admit(ip("127.0.0.1")).unwrap()).collect();
        assert_eq!(a.admit(ip("127.0.0.1")).unwrap_err(), Refusal::AddressShare);
        let other = a.admit(ip("127.0.0.2")).unwrap();
        drop(held);
        assert!(a.admit(ip("127.0.0.1")).is_ok());
        drop(other);
        assert_eq!(a.held(), (0, 0), "every slot is given back");
    }

    #[test]
    fn the_whole_limit_still_holds_when_every_stranger_is_busy() {
        let a = Admission::new(4, 2, 0);
        let held: Vec<Ticket> = ["192.0.2.1", "192.0.2.1", "192.0.2.2", "192.0.2.2"]
            .into_iter()
            .map(|p| a.admit(ip(p)).unwrap())
            .collect();
        assert!(held.iter().all(Ticket::busy));
        assert_eq!(a.admit(ip("192.0.2.3")).unwrap_err(), Refusal::Full);
        assert_eq!(a.held(), (4, 2));
    }

    #[test]
    fn a_newcomer_closes_the_stranger_idle_longest_and_takes_its_place() {
        let a = Admission::new(3, 3, 0);
        let start = Instant::now();
        let held: Vec<Ticket> = ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
            .into_iter()
            .map(|p| a.admit(ip(p)).unwrap())
            .collect();
        // The second has waited longest (its last input is the oldest); the third is busy.
        for (ticket, ms) in held.iter().zip([20, 10, 0]) {
            ticket.waiting(start + Duration::from_millis(ms));
        }
        assert!(held[2].busy());
        let newcomer = a.admit(ip("192.0.2.9")).unwrap();
        assert!(!held[1].busy(), "the longest idle was not closed");
        assert!(held[0].busy() && held[2].busy());
        assert_eq!(a.held(), (3, 3), "192.0.2.2's place went to 192.0.2.9");
        // The evicted driver hears of it at once.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), held[1].evicted())
                .await
                .expect("the eviction signal")
        });
        // Once every stranger is busy, the next newcomer is refused.
        assert!(newcomer.busy());
        assert_eq!(a.admit(ip("192.0.2.10")).unwrap_err(), Refusal::Full);
        drop(held);
        drop(newcomer);
        assert_eq!(a.held(), (0, 0), "an evicted place is not given back twice");
        assert_eq!(a.strangers(), 0);
    }

    #[test]
    fn an_address_at_its_share_closes_nobody_else() {
        let a = Admission::new(2, 1, 0);
        let _one = a.admit(ip("192.0.2.1")).unwrap();
        let _two = a.admit(ip("192.0.2.2")).unwrap();
        assert_eq!(a.admit(ip("192.0.2.1")).unwrap_err(), Refusal::Full);
        assert_eq!(a.held(), (2, 2));
    }

    #[test]
    fn slots_are_kept_for_sessions_that_logged_in_and_those_are_never_closed() {
        let a = Admission::new(4, 4, 2);
        let one = a.admit(ip("192.0.2.1")).unwrap();
        let two = a.admit(ip("192.0.2.1")).unwrap();
        assert!(one.busy() && two.busy());
        // Two strangers fill the strangers' slots, though the server has four.
        assert_eq!(a.admit(ip("192.0.2.2")).unwrap_err(), Refusal::Full);
        one.logged_in();
        one.logged_in();
        assert_eq!(a.strangers(), 1);
        let three = a.admit(ip("192.0.2.2")).unwrap();
        assert!(three.busy());
        // Every slot for strangers is busy again, the logged-in session idles: not closed.
        one.waiting(Instant::now());
        assert_eq!(a.admit(ip("192.0.2.3")).unwrap_err(), Refusal::Full);
        assert!(one.busy());
        // It logs in too; the server's last slot is still there for a stranger.
        two.logged_in();
        let four = a.admit(ip("192.0.2.3")).unwrap();
        assert_eq!(a.held(), (4, 3));
        drop((one, two, three, four));
        assert_eq!((a.held(), a.strangers()), ((0, 0), 0));
    }

    #[test]
    fn pressure_is_three_quarters_of_the_strangers_slots() {
        let a = Admission::new(10, 10, 2);
        let mut held: Vec<Ticket> = (0..5).map(|_| a.admit(ip("192.0.2.1")).unwrap()).collect();
        assert!(!a.under_pressure());
        held.push(a.admit(ip("192.0.2.1")).unwrap());
        assert!(a.under_pressure(), "6 of 8");
        held[0].logged_in();
        assert!(!a.under_pressure(), "5 of 8");
    }

    #[test]
    fn a_mapped_ipv4_address_is_the_ipv4_address() {
        let a = Admission::new(10, 1, 0);
        let _v4 = a.admit(ip("192.0.2.7")).unwrap();
        assert_eq!(
            a.admit(ip("::ffff:192.0.2.7")).unwrap_err(),
            Refusal::AddressShare
        );
    }

    #[test]
    fn ipv6_counts_by_its_64() {
        let a = Admission::new(10, 2, 0);
        let _one = a.admit(ip("2001:db8:1:2::1")).unwrap();
        let _two = a.admit(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")).unwrap();
        assert_eq!(
            a.admit(ip("2001:db8:1:2:ffff::9")).unwrap_err(),
            Refusal::AddressShare
        );
        // The next /64 is another client.
        assert!(a.admit(ip("2001:db8:1:3::1")).is_ok());
    }
}
