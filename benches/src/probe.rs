//! The machine's own limits beside the servers: how many fsyncs per second the store's disk
//! takes (durable delivery cannot beat it without batching), and how much memory a server
//! holds for many idle connections.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;

use crate::wire::Endpoint;

/// Operations per second of the disk under the store, one writer and many.
#[derive(Debug, Clone, Serialize)]
pub struct Fsync {
    /// The file system and device holding the probe's directory.
    pub filesystem: String,
    pub threads: usize,
    /// Create, write 4 KiB, fsync the file: per second, one thread.
    pub file_single: f64,
    /// The same from `threads` threads at once (the journal may commit them together).
    pub file_parallel: f64,
    /// R18's delivery pattern, one thread: write and fsync in `tmp/`, link into `new/`, fsync
    /// `new/`, unlink the temporary name. The most a one-at-a-time durable Maildir delivery can
    /// do on this disk.
    pub maildir_single: f64,
    /// The pattern from `threads` threads, each into its own Maildir.
    pub maildir_parallel: f64,
}

/// Each pattern runs for `each` in all, in four slices taken in turn, so a burst of someone
/// else's disk writes (which an ext4 fsync must wait for) lands on all of them alike.
pub fn fsync(dir: &Path, each: Duration, threads: usize) -> Result<Fsync> {
    const SLICES: u32 = 4;
    fs::create_dir_all(dir)?;
    let filesystem = filesystem_of(dir);
    let kinds = [
        (1, Pattern::File),
        (threads, Pattern::File),
        (1, Pattern::Maildir),
        (threads, Pattern::Maildir),
    ];
    let mut totals = [(0u64, Duration::ZERO); 4];
    for _ in 0..SLICES {
        for (total, &(threads, pattern)) in totals.iter_mut().zip(&kinds) {
            let (n, took) = count(dir, each / SLICES, threads, pattern)?;
            total.0 += n;
            total.1 += took;
        }
    }
    let _ = fs::remove_dir_all(dir);
    let rate = |(n, took): (u64, Duration)| n as f64 / took.as_secs_f64().max(1e-9);
    Ok(Fsync {
        filesystem,
        threads,
        file_single: rate(totals[0]),
        file_parallel: rate(totals[1]),
        maildir_single: rate(totals[2]),
        maildir_parallel: rate(totals[3]),
    })
}

#[derive(Debug, Clone, Copy)]
enum Pattern {
    File,
    Maildir,
}

/// Operations done by `threads` writers in about `each`, and the time they took.
fn count(dir: &Path, each: Duration, threads: usize, pattern: Pattern) -> Result<(u64, Duration)> {
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let dir = dir.join(format!("t{t}"));
            std::thread::spawn(move || writer(&dir, each, pattern))
        })
        .collect();
    let mut total = 0u64;
    for handle in handles {
        total += handle
            .join()
            .map_err(|_| anyhow::anyhow!("a probe thread panicked"))??;
    }
    Ok((total, started.elapsed()))
}

fn writer(dir: &Path, each: Duration, pattern: Pattern) -> Result<u64> {
    let (tmp, new) = (dir.join("tmp"), dir.join("new"));
    fs::create_dir_all(&tmp)?;
    fs::create_dir_all(&new)?;
    let block = [b'x'; 4096];
    let deadline = Instant::now() + each;
    let mut n = 0u64;
    while Instant::now() < deadline {
        let name = format!("m{n}");
        let path = tmp.join(&name);
        let mut file = fs::File::create(&path)?;
        file.write_all(&block)?;
        file.sync_all()?;
        drop(file);
        match pattern {
            Pattern::File => fs::remove_file(&path)?,
            Pattern::Maildir => {
                let delivered: PathBuf = new.join(&name);
                fs::hard_link(&path, &delivered)?;
                fs::File::open(&new)?.sync_all()?;
                fs::remove_file(&path)?;
            }
        }
        n += 1;
    }
    fs::remove_dir_all(dir)?;
    Ok(n)
}

/// R18's delivery pattern (see [`Fsync::maildir_single`]) `ops` times from `threads` threads,
/// each op timed: the disk's ceiling for durable delivery, measured as a load so it can take
/// turns with the SMTP rows and see the same disk.
pub fn maildir_ops(dir: &Path, threads: usize, ops: usize) -> Result<crate::load::Outcome> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let dir = dir.join(format!("turn{t}"));
            let next = Arc::clone(&next);
            std::thread::spawn(move || -> Result<Vec<Duration>> {
                let (tmp, new) = (dir.join("tmp"), dir.join("new"));
                fs::create_dir_all(&tmp)?;
                fs::create_dir_all(&new)?;
                let block = [b'x'; 4096];
                let mut latencies = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < ops {
                    let op = Instant::now();
                    let name = format!("m{}", latencies.len());
                    let path = tmp.join(&name);
                    let mut file = fs::File::create(&path)?;
                    file.write_all(&block)?;
                    file.sync_all()?;
                    drop(file);
                    fs::hard_link(&path, new.join(&name))?;
                    fs::File::open(&new)?.sync_all()?;
                    fs::remove_file(&path)?;
                    latencies.push(op.elapsed());
                }
                fs::remove_dir_all(&dir)?;
                Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(ops);
    for handle in handles {
        latencies.extend(
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("a probe thread panicked"))??,
        );
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok(crate::load::Outcome {
        ops: latencies.len(),
        elapsed,
        latencies,
    })
}

/// `fstype on device` for the mount holding `path`.
fn filesystem_of(path: &Path) -> String {
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && path.starts_with(f[1]))
                .then(|| (f[1].len(), format!("{} on {}", f[2], f[0])))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, s)| s)
        .unwrap_or_else(|| "unknown".into())
}

/// A server's memory with many idle connections open.
#[derive(Debug, Clone, Serialize)]
pub struct Idle {
    pub connections: usize,
    /// Resident memory before any connection, and with all of them open (bytes).
    pub rss_before: u64,
    pub rss_with: u64,
    /// Threads of the server (dirmail: tokio's workers plus its blocking pool).
    pub threads_with: Option<u64>,
    pub open_secs: f64,
}

impl Idle {
    pub fn per_connection(&self) -> f64 {
        self.rss_with.saturating_sub(self.rss_before) as f64 / self.connections.max(1) as f64
    }
}

/// Opens `count` connections to `endpoint`, reads each greeting, waits a moment for the
/// server to settle, and reads `rss()` (the server's resident memory) before and after.
pub fn idle(
    rt: &Runtime,
    endpoint: &Endpoint,
    count: usize,
    rss: impl Fn() -> u64,
    threads: impl Fn() -> Option<u64>,
) -> Result<Idle> {
    let rss_before = rss();
    let started = Instant::now();
    let bar = indicatif::ProgressBar::new(count as u64);
    // A template that does not parse keeps the default style: a progress bar is not worth a panic.
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{prefix:.bold} [{bar:32}] {pos}/{len}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(format!("{count} idle connections"));
    let conns = rt.block_on(async {
        // Connecting all at once would overflow the listen backlog: a few hundred at a time.
        let gate = Arc::new(Semaphore::new(256));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..count {
            let permit = Arc::clone(&gate).acquire_owned().await?;
            let endpoint = endpoint.clone();
            let bar = bar.clone();
            tasks.spawn(async move {
                let mut conn = endpoint.connect().await?;
                let greeting = conn.read_line().await?;
                if greeting.starts_with(b"-ERR") || greeting.starts_with(b"4") {
                    bail!("refused: {}", crate::wire::shown(greeting));
                }
                drop(permit);
                bar.inc(1);
                Ok::<_, anyhow::Error>(conn)
            });
        }
        let mut conns = Vec::with_capacity(count);
        while let Some(joined) = tasks.join_next().await {
            conns.push(joined.context("a connection task panicked")??);
        }
        Ok::<_, anyhow::Error>(conns)
    })?;
    bar.finish_and_clear();
    let open_secs = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let idle = Idle {
        connections: conns.len(),
        rss_before,
        rss_with: rss(),
        threads_with: threads(),
        open_secs,
    };
    drop(conns);
    Ok(idle)
}
