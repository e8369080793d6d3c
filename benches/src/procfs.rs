//! What `/proc` says about the servers under load: CPU time (a process and its descendants,
//! so Dovecot's and Postfix's worker processes count), resident memory, and the load average.

use std::collections::HashMap;
use std::fs;
use std::time::Duration;

/// Clock ticks per second for `/proc/<pid>/stat` times.
fn ticks_per_second() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

/// One process's line of `/proc/<pid>/stat`, the fields we use.
#[derive(Debug, Clone, Copy)]
struct Stat {
    ppid: u32,
    /// utime + stime, in ticks.
    own: u64,
    /// cutime + cstime: children it has waited for.
    reaped: u64,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
    let num = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Some(Stat {
        ppid: num(1)? as u32,
        own: num(11)? + num(12)?,
        reaped: num(13)? + num(14)?,
    })
}

fn all_stats() -> HashMap<u32, Stat> {
    let mut out = HashMap::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            if let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok())
                && let Some(s) = stat(pid)
            {
                out.insert(pid, s);
            }
        }
    }
    out
}

/// `root` and every live descendant.
pub fn tree(root: u32) -> Vec<u32> {
    let stats = all_stats();
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, s) in &stats {
        children.entry(s.ppid).or_default().push(pid);
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        if stats.contains_key(&pid) {
            out.push(pid);
        }
        if let Some(kids) = children.get(&pid) {
            todo.extend(kids);
        }
    }
    out
}

/// CPU time used so far by the processes rooted at `roots`: their own, their live
/// descendants', and what the ones already gone left in their parents' accounts. Differences
/// between two readings are what a run cost; a process that ended but was not yet waited for
/// is missed, which only under-counts the peers (never dirmail, one process).
pub fn cpu(roots: &[u32]) -> Duration {
    let stats = all_stats();
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, s) in &stats {
        children.entry(s.ppid).or_default().push(pid);
    }
    let mut ticks = 0u64;
    let mut todo: Vec<u32> = roots.to_vec();
    let mut seen = std::collections::HashSet::new();
    while let Some(pid) = todo.pop() {
        if !seen.insert(pid) {
            continue;
        }
        if let Some(s) = stats.get(&pid) {
            ticks += s.own + s.reaped;
        }
        if let Some(kids) = children.get(&pid) {
            todo.extend(kids);
        }
    }
    Duration::from_secs_f64(ticks as f64 / ticks_per_second())
}

/// Resident memory of one process (`VmRSS`), in bytes.
pub fn rss(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:").map(|kib| kib * 1024)
}

/// Threads of one process.
pub fn threads(pid: u32) -> Option<u64> {
    status_kib(pid, "Threads:")
}

fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Proportional resident memory (`Pss`: shared pages split between their users) of a process
/// tree, summed: a fair total for a server of many processes such as Dovecot.
pub fn tree_pss(root: u32) -> u64 {
    tree(root)
        .into_iter()
        .filter_map(|pid| {
            let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
            let kib: u64 = text
                .lines()
                .find_map(|l| l.strip_prefix("Pss:"))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some(kib * 1024)
        })
        .sum()
}

/// The 1-, 5- and 15-minute load averages.
pub fn loadavg() -> [f64; 3] {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text.split_whitespace().map(|v| v.parse().unwrap_or(0.0));
    [
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
    ]
}

/// This process's own CPU time (the load generator's cost).
pub fn self_cpu() -> Duration {
    stat(std::process::id())
        .map(|s| Duration::from_secs_f64(s.own as f64 / ticks_per_second()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(rss(me).unwrap() > 0);
        assert!(threads(me).unwrap() >= 1);
        assert!(tree(me).contains(&me));
        assert!(tree_pss(me) > 0);
        let _ = cpu(&[me]);
        assert!(loadavg()[0] >= 0.0);
    }
}
