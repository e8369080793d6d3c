//! Who may connect: the connection limit of all listeners together (`[limits] socket_max`) and
//! each client address's share of it (`per_address_max`), so that one address holding every
//! slot cannot lock the others out.
//!
//! Addresses are grouped as a client controls them. An IPv4-mapped IPv6 address
//! (`::ffff:192.0.2.1`, what a dual-stack listener sees) is the IPv4 address. An IPv6 address
//! counts by its /64: one host or one home usually gets a whole /64 and can pick any address in
//! it (SLAAC privacy addresses), so counting single IPv6 addresses would be no limit at all.
//! Loopback is not exempt: a local process can flood as well as a remote one.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

/// The counts, shared by every listener of the server.
#[derive(Debug)]
pub struct Admission {
    max: u32,
    per_address_max: u32,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: u32,
    /// Only addresses that hold a connection, so the table stays as small as the load.
    by_address: HashMap<IpAddr, u32>,
}

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every slot of the server is taken.
    Full,
    /// The client's address (or its IPv6 /64) holds its whole share.
    AddressShare,
}

/// A connection's place in the counts, given back when dropped.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    key: IpAddr,
}

impl Admission {
    pub fn new(max: u32, per_address_max: u32) -> Arc<Admission> {
        Arc::new(Admission {
            max,
            per_address_max,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// Takes a slot for a connection from `peer`, or says why not.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Ticket, Refusal> {
        let key = address_key(peer);
        // A poisoned lock means a panic while counting; the counts are still usable integers.
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.total >= self.max {
            return Err(Refusal::Full);
        }
        let held = counts.by_address.get(&key).copied().unwrap_or(0);
        if held >= self.per_address_max {
            return Err(Refusal::AddressShare);
        }
        counts.by_address.insert(key, held + 1);
        counts.total += 1;
        Ok(Ticket {
            admission: Arc::clone(self),
            key,
        })
    }

    #[cfg(test)]
    fn held(&self) -> (u32, usize) {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        (counts.total, counts.by_address.len())
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut counts = self
            .admission
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(held) = counts.by_address.get_mut(&self.key) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                counts.by_address.remove(&self.key);
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
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn one_address_gets_its_share_and_others_still_get_in() {
        let a = Admission::new(6, 3);
        let held: Vec<Ticket> = (0..3).map(|_| a.admit(ip("127.0.0.1")).unwrap()).collect();
        assert_eq!(a.admit(ip("127.0.0.1")).unwrap_err(), Refusal::AddressShare);
        let other = a.admit(ip("127.0.0.2")).unwrap();
        drop(held);
        assert!(a.admit(ip("127.0.0.1")).is_ok());
        drop(other);
        assert_eq!(a.held(), (0, 0), "every slot is given back");
    }

    #[test]
    fn the_whole_limit_still_holds_across_addresses() {
        let a = Admission::new(4, 2);
        let _held: Vec<Ticket> = ["192.0.2.1", "192.0.2.1", "192.0.2.2", "192.0.2.2"]
            .into_iter()
            .map(|p| a.admit(ip(p)).unwrap())
            .collect();
        assert_eq!(a.admit(ip("192.0.2.3")).unwrap_err(), Refusal::Full);
        assert_eq!(a.held(), (4, 2));
    }

    #[test]
    fn a_mapped_ipv4_address_is_the_ipv4_address() {
        let a = Admission::new(10, 1);
        let _v4 = a.admit(ip("192.0.2.7")).unwrap();
        assert_eq!(
            a.admit(ip("::ffff:192.0.2.7")).unwrap_err(),
            Refusal::AddressShare
        );
    }

    #[test]
    fn ipv6_counts_by_its_64() {
        let a = Admission::new(10, 2);
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
