//! The load itself: N concurrent clients share a fixed number of operations, each timed, with a
//! progress bar while they run.
//!
//! A worker takes tickets until none are left; each ticket is one operation (a message, a
//! session, a login) whose latency it records. The run's rate is operations over the wall time
//! from the first connection to the last reply, so connection set-up counts against the server.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::runtime::Runtime;

/// The longest a single operation may take before the run is called failed.
pub const OP_TIMEOUT: Duration = Duration::from_secs(60);

/// What to run.
#[derive(Debug, Clone)]
pub struct Spec {
    pub label: String,
    pub concurrency: usize,
    pub ops: usize,
}

/// How a run went.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub ops: usize,
    pub elapsed: Duration,
    /// Every operation's latency, sorted.
    pub latencies: Vec<Duration>,
}

impl Outcome {
    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    /// The `q` quantile (0.5, 0.99) of the latencies, nearest rank.
    pub fn quantile(&self, q: f64) -> Duration {
        quantile(&self.latencies, q)
    }
}

pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// What the workers of one run share.
struct Pool {
    next: AtomicUsize,
    total: usize,
    /// Set when a worker fails, so the others stop taking tickets.
    failed: AtomicBool,
    bar: ProgressBar,
}

/// A worker's handle on the run: take a ticket, do the operation, record how long it took.
pub struct Tickets {
    pool: Arc<Pool>,
    latencies: Vec<Duration>,
}

impl Tickets {
    /// The next operation's number, or `None` when all are taken (or another worker failed).
    pub fn take(&mut self) -> Option<usize> {
        if self.pool.failed.load(Ordering::Relaxed) {
            return None;
        }
        let n = self.pool.next.fetch_add(1, Ordering::Relaxed);
        (n < self.pool.total).then_some(n)
    }

    /// Records one finished operation that started at `started`.
    pub fn done(&mut self, started: Instant) {
        self.latencies.push(started.elapsed());
        self.pool.bar.inc(1);
    }
}

/// Runs `spec.ops` operations over `spec.concurrency` workers. `worker(i, tickets)` is worker
/// `i`'s whole life: it connects as it needs to, loops on [`Tickets::take`], and hands the
/// tickets back when done.
pub fn run<W, F>(rt: &Runtime, spec: &Spec, worker: W) -> Result<Outcome>
where
    W: Fn(usize, Tickets) -> F,
    F: Future<Output = Result<Tickets>> + Send + 'static,
{
    let bar = ProgressBar::new(spec.ops as u64);
    // A template that does not parse keeps the default style: a progress bar is not worth a panic.
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:.bold} [{bar:32}] {pos}/{len} {per_sec} (eta {eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(spec.label.clone());
    let pool = Arc::new(Pool {
        next: AtomicUsize::new(0),
        total: spec.ops,
        failed: AtomicBool::new(false),
        bar: bar.clone(),
    });
    let started = Instant::now();
    let results: Vec<Result<Tickets>> = rt.block_on(async {
        let mut handles = Vec::new();
        for i in 0..spec.concurrency {
            let tickets = Tickets {
                pool: Arc::clone(&pool),
                latencies: Vec::with_capacity(spec.ops / spec.concurrency.max(1) + 1),
            };
            let pool = Arc::clone(&pool);
            let work = worker(i, tickets);
            handles.push(tokio::spawn(async move {
                let result = work.await;
                if result.is_err() {
                    pool.failed.store(true, Ordering::Relaxed);
                }
                result
            }));
        }
        let mut results = Vec::new();
        for handle in handles {
            results.push(
                handle
                    .await
                    .unwrap_or_else(|e| Err(anyhow!("worker panicked: {e}"))),
            );
        }
        results
    });
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let mut latencies = Vec::with_capacity(spec.ops);
    let mut first_error = None;
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(tickets) => latencies.extend(tickets.latencies),
            Err(e) if first_error.is_none() => first_error = Some(e.context(format!("client {i}"))),
            Err(_) => {}
        }
    }
    if let Some(e) = first_error {
        return Err(e.context(format!(
            "{} failed after {} of {} operations",
            spec.label,
            latencies.len(),
            spec.ops
        )));
    }
    latencies.sort_unstable();
    Ok(Outcome {
        ops: latencies.len(),
        elapsed,
        latencies,
    })
}

/// Runs independent operations (a session each): `op(worker, n)` for every ticket `n`.
pub fn sessions<O, F>(rt: &Runtime, spec: &Spec, op: O) -> Result<Outcome>
where
    O: Fn(usize, usize) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<()>> + Send + 'static,
{
    run(rt, spec, move |worker, mut tickets| {
        let op = op.clone();
        async move {
            while let Some(n) = tickets.take() {
                let started = Instant::now();
                tokio::time::timeout(OP_TIMEOUT, op(worker, n))
                    .await
                    .context("an operation took longer than a minute")??;
                tickets.done(started);
            }
            Ok(tickets)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn nearest_rank_quantiles() {
        let sorted = ms(&(1..=100).collect::<Vec<_>>());
        assert_eq!(quantile(&sorted, 0.5), Duration::from_millis(50));
        assert_eq!(quantile(&sorted, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&ms(&[7]), 0.99), Duration::from_millis(7));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn every_ticket_is_taken_once() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let spec = Spec {
            label: "test".into(),
            concurrency: 7,
            ops: 100,
        };
        let outcome = sessions(&rt, &spec, |_, _| async { Ok(()) }).unwrap();
        assert_eq!(outcome.ops, 100);
        assert_eq!(outcome.latencies.len(), 100);
    }

    #[test]
    fn a_failing_worker_fails_the_run() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let spec = Spec {
            label: "test".into(),
            concurrency: 3,
            ops: 50,
        };
        let err = sessions(&rt, &spec, |_, n| async move {
            anyhow::ensure!(n != 10, "ticket ten");
            Ok(())
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("ticket ten"), "{err:#}");
    }
}
