//! How long the directory's work takes: Active Directory lookups and binds, and the wait for a
//! turn at the password-hash gate, kept in process-wide latency histograms that the server's
//! metrics page reads (`[metrics]`).
//!
//! Process-wide because the work happens deep inside blocking calls that know nothing of the
//! server around them (the administration tool's calls count too, in its own process, and
//! nobody reads them); a histogram is a few atomics, so recording costs next to nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds: from a cached answer (a millisecond) to a DC that
/// times out (R24's retries take seconds).
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram of fixed buckets ([`BUCKETS`]), updated without a lock.
#[derive(Debug)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last slot is above every bound (+Inf).
    counts: [AtomicU64; BUCKETS.len() + 1],
    /// The sum of all observations, in microseconds.
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub const fn new() -> Histogram {
        Histogram {
            counts: [const { AtomicU64::new(0) }; BUCKETS.len() + 1],
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        if let Some(count) = self.counts.get(slot) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The histogram as Prometheus shows one: cumulative counts per bound, then the total.
    pub fn snapshot(&self) -> Snapshot {
        let mut running = 0u64;
        let mut cumulative = Vec::with_capacity(BUCKETS.len());
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            running += count.load(Ordering::Relaxed);
            cumulative.push((*bound, running));
        }
        let above = self.counts.last().map_or(0, |c| c.load(Ordering::Relaxed));
        Snapshot {
            cumulative,
            count: running + above,
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// A histogram read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// (upper bound in seconds, observations at or below it).
    pub cumulative: Vec<(f64, u64)>,
    /// All observations (the `+Inf` bucket).
    pub count: u64,
    pub sum_seconds: f64,
}

static AD_LOOKUPS: Histogram = Histogram::new();
static AD_BINDS: Histogram = Histogram::new();
static HASH_GATE_WAITS: Histogram = Histogram::new();

/// Active Directory operations run as the service account (user searches, the mail group),
/// from the first attempt to the answer, R24's retries included.
pub fn ad_lookups() -> &'static Histogram {
    &AD_LOOKUPS
}

/// Password checks by binding as the user, from the first attempt to the answer.
pub fn ad_binds() -> &'static Histogram {
    &AD_BINDS
}

/// How long an argon2 hash waited for its turn at the gate ([`crate::password`]).
pub fn hash_gate_waits() -> &'static Histogram {
    &HASH_GATE_WAITS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_cumulative_buckets() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        let at = |bound: f64| {
            s.cumulative
                .iter()
                .find(|(b, _)| *b == bound)
                .map(|(_, c)| *c)
        };
        assert_eq!(at(0.0005), Some(1));
        assert_eq!(at(0.0025), Some(1));
        assert_eq!(at(0.005), Some(3));
        assert_eq!(at(10.0), Some(3), "a minute is only in +Inf");
        assert!((s.sum_seconds - 60.0063).abs() < 1e-9, "{}", s.sum_seconds);
    }
}
