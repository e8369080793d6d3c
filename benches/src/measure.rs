//! Measuring one load against several servers fairly on a shared machine: each server's share
//! is split into rounds taken in turn (dirmail, peer, dirmail, peer…), so a burst of someone
//! else's work lands on both, and each round is metered for the CPU it cost the server (and
//! the directory behind it) and the generator.

use std::time::Duration;

use anyhow::Result;

use crate::load::Outcome;
use crate::procfs;
use crate::report::{Cell, Measured};

/// Reads a CPU clock (a server's process tree, say); `None` when it cannot be read.
pub type Clock<'a> = &'a dyn Fn() -> Option<Duration>;

/// One round against one server.
#[derive(Debug)]
pub struct Part {
    pub outcome: Outcome,
    pub server_cpu: Option<Duration>,
    /// The directory behind the server (Samba), when metered.
    pub backend_cpu: Option<Duration>,
    pub client_cpu: Duration,
}

/// Runs `load`, reading the clocks before and after.
pub fn metered(
    server: Clock<'_>,
    backend: Option<Clock<'_>>,
    load: impl FnOnce() -> Result<Outcome>,
) -> Result<Part> {
    let before = (server(), backend.and_then(|b| b()), procfs::self_cpu());
    let outcome = load()?;
    let after = (server(), backend.and_then(|b| b()), procfs::self_cpu());
    let diff = |a: Option<Duration>, b: Option<Duration>| Some(b?.saturating_sub(a?));
    Ok(Part {
        outcome,
        server_cpu: diff(before.0, after.0),
        backend_cpu: diff(before.1, after.1),
        client_cpu: after.2.saturating_sub(before.2),
    })
}

/// The rounds of one server in one row.
#[derive(Debug, Default)]
pub struct Tally {
    parts: Vec<Part>,
    error: Option<anyhow::Error>,
}

impl Tally {
    pub fn add(&mut self, part: Result<Part>) {
        match part {
            Ok(part) => self.parts.push(part),
            Err(e) => {
                eprintln!("  failed: {e:#}");
                self.error.get_or_insert(e);
            }
        }
    }

    pub fn failed(&self) -> bool {
        self.error.is_some()
    }

    fn ops(&self) -> usize {
        self.parts.iter().map(|p| p.outcome.ops).sum()
    }

    /// The directory's CPU per operation, in milliseconds.
    pub fn backend_ms_per_op(&self) -> Option<f64> {
        let total: Option<Duration> = self.parts.iter().map(|p| p.backend_cpu).sum();
        Some(total?.as_secs_f64() * 1000.0 / self.ops().max(1) as f64)
    }

    /// All rounds as one measurement: operations over the summed wall time, every latency.
    pub fn cell(self) -> Cell {
        if let Some(e) = &self.error {
            return Cell::failed(e);
        }
        if self.parts.is_empty() {
            return Cell::not_measured("not run");
        }
        let mut latencies: Vec<Duration> = self
            .parts
            .iter()
            .flat_map(|p| p.outcome.latencies.iter().copied())
            .collect();
        latencies.sort_unstable();
        let outcome = Outcome {
            ops: self.ops(),
            elapsed: self.parts.iter().map(|p| p.outcome.elapsed).sum(),
            latencies,
        };
        let server: Option<Duration> = self.parts.iter().map(|p| p.server_cpu).sum();
        let client: Duration = self.parts.iter().map(|p| p.client_cpu).sum();
        let measured = Measured::new(&outcome, server, client, procfs::loadavg()[0]);
        Cell::Measured(measured)
    }
}

/// One server in a comparison: a round of `n` operations.
pub type Contestant<'a> = &'a mut dyn FnMut(usize) -> Result<Part>;

/// A warm-up of `warm` operations each (unmeasured), then `ops` operations each in `rounds`
/// rounds, the servers taking turns. A server that fails stops there; the others go on.
pub fn compare(
    ops: usize,
    warm: usize,
    rounds: usize,
    contestants: &mut [Contestant<'_>],
) -> Vec<Tally> {
    let mut tallies: Vec<Tally> = contestants.iter().map(|_| Tally::default()).collect();
    for (tally, run) in tallies.iter_mut().zip(contestants.iter_mut()) {
        if warm > 0
            && let Err(e) = run(warm)
        {
            tally.add(Err(e.context("warm-up")));
        }
    }
    let rounds = rounds.clamp(1, ops.max(1));
    for round in 0..rounds {
        // The last round takes the remainder.
        let n = if round + 1 == rounds {
            ops - ops / rounds * (rounds - 1)
        } else {
            ops / rounds
        };
        for (tally, run) in tallies.iter_mut().zip(contestants.iter_mut()) {
            if !tally.failed() {
                let part = run(n);
                if let Ok(p) = &part {
                    let latency = if p.outcome.latencies.is_empty() {
                        String::new()
                    } else {
                        format!(
                            ", p50 {:.2} ms, p99 {:.2} ms",
                            p.outcome.quantile(0.5).as_secs_f64() * 1000.0,
                            p.outcome.quantile(0.99).as_secs_f64() * 1000.0
                        )
                    };
                    eprintln!(
                        "  {:.1} /s{latency}{}",
                        p.outcome.rate(),
                        p.server_cpu.map_or(String::new(), |c| format!(
                            ", server CPU {:.2} ms/op",
                            c.as_secs_f64() * 1000.0 / p.outcome.ops.max(1) as f64
                        ))
                    );
                }
                tally.add(part);
            }
        }
    }
    tallies
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(ops: usize, ms: u64) -> Result<Part> {
        Ok(Part {
            outcome: Outcome {
                ops,
                elapsed: Duration::from_millis(ms),
                latencies: vec![Duration::from_millis(1); ops],
            },
            server_cpu: Some(Duration::from_millis(ops as u64)),
            backend_cpu: None,
            client_cpu: Duration::ZERO,
        })
    }

    #[test]
    fn rounds_take_turns_and_add_up() {
        let mut order = Vec::new();
        let (mut a_ops, mut b_ops) = (0, 0);
        {
            let order_a = std::cell::RefCell::new(&mut order);
            let mut a = |n: usize| {
                order_a.borrow_mut().push('a');
                a_ops += n;
                part(n, 100)
            };
            let mut b = |n: usize| {
                order_a.borrow_mut().push('b');
                b_ops += n;
                part(n, 200)
            };
            let tallies = compare(101, 5, 2, &mut [&mut a, &mut b]);
            let Cell::Measured(m) = tallies.into_iter().next().unwrap().cell() else {
                panic!("measured");
            };
            assert_eq!(m.ops, 101);
            assert!((m.rate - 101.0 / 0.2).abs() < 1e-6);
            assert_eq!(m.server_cpu_ms, Some(1.0));
        }
        assert_eq!(order, ['a', 'b', 'a', 'b', 'a', 'b']);
        assert_eq!((a_ops, b_ops), (106, 106));
    }

    #[test]
    fn a_failing_server_stops_alone() {
        let mut calls = 0;
        let mut bad = |_: usize| -> Result<Part> {
            calls += 1;
            anyhow::bail!("refused")
        };
        let mut good = |n: usize| part(n, 10);
        let tallies = compare(10, 0, 3, &mut [&mut bad, &mut good]);
        let cells: Vec<Cell> = tallies.into_iter().map(Tally::cell).collect();
        assert!(matches!(cells[0], Cell::Failed { .. }));
        assert!(matches!(cells[1], Cell::Measured(_)));
        assert_eq!(calls, 1);
    }
}
