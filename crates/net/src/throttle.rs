//! Failed logins slow down: each failure from a client address adds to the delay before that
//! address's next refusal is answered, so guessing passwords gets slow while other clients are
//! not held up. The table is bounded; old entries are forgotten.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const FIRST_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(8);
/// A quiet address is forgiven after this long.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
const MAX_ENTRIES: usize = 65_536;

#[derive(Debug, Default)]
pub struct Throttle {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Throttle {
    /// Records a failure from `addr` and returns how long to wait before answering it.
    pub fn failed(&self, addr: IpAddr, now: Instant) -> Duration {
        let Ok(mut table) = self.failures.lock() else {
            return MAX_DELAY;
        };
        if table.len() >= MAX_ENTRIES {
            table.retain(|_, (_, last)| now.duration_since(*last) < FORGET_AFTER);
            if table.len() >= MAX_ENTRIES {
                // Still full: everyone pays the highest price rather than the table growing.
                return MAX_DELAY;
            }
        }
        let entry = table.entry(addr).or_insert((0, now));
        if now.duration_since(entry.1) >= FORGET_AFTER {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        delay_for(entry.0)
    }

    /// A successful login clears the address's record.
    pub fn succeeded(&self, addr: IpAddr) {
        if let Ok(mut table) = self.failures.lock() {
            table.remove(&addr);
        }
    }
}

/// 250 ms, 500 ms, 1 s, … doubling up to 8 s.
pub fn delay_for(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(10);
    FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_grows_per_address_and_resets() {
        let t = Throttle::default();
        let now = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(t.failed(a, now), Duration::from_millis(250));
        assert_eq!(t.failed(a, now), Duration::from_millis(500));
        assert_eq!(t.failed(a, now), Duration::from_secs(1));
        assert_eq!(
            t.failed(b, now),
            Duration::from_millis(250),
            "others are not slowed"
        );
        for _ in 0..20 {
            t.failed(a, now);
        }
        assert_eq!(t.failed(a, now), MAX_DELAY);
        t.succeeded(a);
        assert_eq!(t.failed(a, now), Duration::from_millis(250));
        assert_eq!(
            t.failed(b, now + FORGET_AFTER),
            Duration::from_millis(250),
            "forgiven"
        );
    }
}
