//! The report: a Markdown table (operation, dirmail, peer, ratio, latencies, server CPU per
//! operation, the target), the machine's limits and the notes beside it, a JSON copy, and an
//! SVG chart of the ratios, all under `target/bench/`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::load::Outcome;
use crate::probe::{Fsync, Idle};

/// One server's result for one operation.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Cell {
    Measured(Measured),
    /// Not run, and why ("no IMAP yet", "not root").
    NotMeasured {
        reason: String,
    },
    /// Run, and it failed: the error.
    Failed {
        error: String,
    },
}

impl Cell {
    pub fn measured(&self) -> Option<&Measured> {
        match self {
            Cell::Measured(m) => Some(m),
            _ => None,
        }
    }

    pub fn not_measured(reason: impl Into<String>) -> Cell {
        Cell::NotMeasured {
            reason: reason.into(),
        }
    }

    pub fn failed(error: &anyhow::Error) -> Cell {
        Cell::Failed {
            error: format!("{error:#}"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    /// Operations per second.
    pub rate: f64,
    pub ops: usize,
    pub secs: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The server's CPU time per operation (its whole process tree), when known.
    pub server_cpu_ms: Option<f64>,
    /// The load generator's own CPU time per operation.
    pub client_cpu_ms: f64,
    /// The 1-minute load average when the run ended.
    pub loadavg: f64,
}

impl Measured {
    pub fn new(
        outcome: &Outcome,
        server_cpu: Option<Duration>,
        client_cpu: Duration,
        loadavg: f64,
    ) -> Measured {
        let per_op = |d: Duration| d.as_secs_f64() * 1000.0 / outcome.ops.max(1) as f64;
        Measured {
            rate: outcome.rate(),
            ops: outcome.ops,
            secs: outcome.elapsed.as_secs_f64(),
            p50_ms: outcome.quantile(0.50).as_secs_f64() * 1000.0,
            p99_ms: outcome.quantile(0.99).as_secs_f64() * 1000.0,
            server_cpu_ms: server_cpu.map(per_op),
            client_cpu_ms: per_op(client_cpu),
            loadavg,
        }
    }
}

/// What a row aims at (issue 6's targets).
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// dirmail's rate at least `ratio` × the peer's.
    Ratio { ratio: f64 },
    /// dirmail's rate at least the peer's, and its p99 no worse.
    RatioAndP99,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub operation: String,
    /// The operation and the peer in a few words, for the chart.
    pub short: String,
    /// What the rate counts: `msg/s`, `sessions/s`, `logins/s`.
    pub unit: String,
    pub dirmail: Cell,
    pub peer_name: String,
    pub peer: Cell,
    pub target: Option<Target>,
    /// Anything the numbers need beside them (Postfix's accepted rate, say).
    pub note: Option<String>,
}

impl Row {
    pub fn ratio(&self) -> Option<f64> {
        let (d, p) = (self.dirmail.measured()?, self.peer.measured()?);
        (p.rate > 0.0).then(|| d.rate / p.rate)
    }

    /// Whether the target is met (rate, and p99 where the target names it); `None` without a
    /// target or a pair of numbers.
    pub fn met(&self) -> Option<bool> {
        let target = self.target?;
        let ratio = self.ratio()?;
        let (d, p) = (self.dirmail.measured()?, self.peer.measured()?);
        Some(match target {
            Target::Ratio { ratio: want } => ratio >= want,
            Target::RatioAndP99 => ratio >= 1.0 && d.p99_ms <= p.p99_ms,
        })
    }

    /// `met`, or how far short, or nothing when there is no target or no pair of numbers.
    pub fn verdict(&self) -> Option<String> {
        let target = self.target?;
        let ratio = self.ratio()?;
        let (d, p) = (self.dirmail.measured()?, self.peer.measured()?);
        Some(match target {
            Target::Ratio { ratio: want } if ratio >= want => format!("≥{want}×: met"),
            Target::Ratio { ratio: want } => {
                format!("≥{want}×: short by {}", percent(1.0 - ratio / want))
            }
            Target::RatioAndP99 => {
                let rate = if ratio >= 1.0 {
                    "rate met".to_owned()
                } else {
                    format!("rate short by {}", percent(1.0 - ratio))
                };
                let p99 = if d.p99_ms <= p.p99_ms {
                    "p99 met".to_owned()
                } else {
                    format!("p99 {:.1}× worse", d.p99_ms / p.p99_ms)
                };
                format!("≥1× and p99: {rate}, {p99}")
            }
        })
    }
}

/// The outside check: Postfix's own load generator and ours, taking turns against one server
/// with the same load (one recipient, many messages per connection).
#[derive(Debug, Clone, Serialize)]
pub struct SmtpSource {
    pub server: String,
    pub messages: usize,
    pub sessions: usize,
    pub generator: Cell,
    pub smtp_source: Cell,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub kernel: String,
    pub cpu: String,
    pub loadavg_start: [f64; 3],
    pub loadavg_end: [f64; 3],
    pub versions: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: String,
    pub started: String,
    pub total_secs: f64,
    pub machine: Machine,
    pub rows: Vec<Row>,
    pub fsync: Option<Fsync>,
    pub idle: Vec<(String, Result<Idle, String>)>,
    pub smtp_source: Vec<SmtpSource>,
    /// The disk alone doing R18's delivery pattern, in turn with the SMTP rows: (threads, it).
    pub disk_in_turn: Vec<(usize, Cell)>,
    pub notes: Vec<String>,
}

impl Report {
    /// dirmail's measurements that failed (a row, or its idle connections), in words: a run
    /// with any fails, so the smoke run in the gate can fail.
    pub fn dirmail_failures(&self) -> Vec<String> {
        let rows = self.rows.iter().filter_map(|row| match &row.dirmail {
            Cell::Failed { error } => Some(format!("{}: {}", row.operation, first_line(error))),
            _ => None,
        });
        let idle = self.idle.iter().filter_map(|(server, idle)| match idle {
            Err(error) if server.starts_with("dirmail") => {
                Some(format!("idle connections, {server}: {}", first_line(error)))
            }
            _ => None,
        });
        rows.chain(idle).collect()
    }
}

fn cell_rate(cell: &Cell, unit: &str) -> String {
    match cell {
        Cell::Measured(m) => format!("{} {unit}", thousands(m.rate)),
        Cell::NotMeasured { reason } => format!("not measured: {reason}"),
        Cell::Failed { error } => format!("failed: {}", first_line(error)),
    }
}

fn cell_latency(cell: &Cell) -> String {
    match cell.measured() {
        Some(m) => format!("{} / {} ms", short(m.p50_ms), short(m.p99_ms)),
        None => "–".into(),
    }
}

fn cell_cpu(cell: &Cell) -> String {
    match cell.measured().and_then(|m| m.server_cpu_ms) {
        Some(ms) => format!("{} ms", short(ms)),
        None => "–".into(),
    }
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("");
    let line: String = line.chars().take(160).collect();
    line.replace('|', "\\|")
}

/// A shortfall as a percentage: one decimal when small, so 0.5% does not read as 0%.
fn percent(fraction: f64) -> String {
    let p = fraction * 100.0;
    if p < 10.0 {
        format!("{p:.1}%")
    } else {
        format!("{p:.0}%")
    }
}

/// A rate with a thousands separator and a sensible number of digits.
pub fn thousands(v: f64) -> String {
    if v >= 100.0 {
        let n = v.round() as u64;
        let s = n.to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn short(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.2}")
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let _ = writeln!(md, "# dirmail benchmark ({} run)\n", self.mode);
        let _ = writeln!(
            md,
            "Started {}, {:.0} s in all. {} cores ({}), Linux {}. Load average at the start \
             {:.2} / {:.2} / {:.2}, at the end {:.2} / {:.2} / {:.2} (1/5/15 min): the machine \
             was {}.\n",
            self.started,
            self.total_secs,
            m.cores,
            m.cpu,
            m.kernel,
            m.loadavg_start[0],
            m.loadavg_start[1],
            m.loadavg_start[2],
            m.loadavg_end[0],
            m.loadavg_end[1],
            m.loadavg_end[2],
            if m.loadavg_start[0] > 0.5 * m.cores as f64 {
                "shared with other work, so absolute numbers are low and noisy; the ratios, measured back to back, are the result"
            } else {
                "otherwise quiet"
            }
        );
        md.push_str(
            "| operation | peer | dirmail | peer's | ratio | dirmail p50 / p99 | peer p50 / p99 | server CPU per op (dirmail / peer) | target |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        for row in &self.rows {
            let ratio = row
                .ratio()
                .map(|r| format!("{r:.2}×"))
                .unwrap_or_else(|| "–".into());
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} / {} | {} |",
                row.operation,
                row.peer_name,
                cell_rate(&row.dirmail, &row.unit),
                cell_rate(&row.peer, &row.unit),
                ratio,
                cell_latency(&row.dirmail),
                cell_latency(&row.peer),
                cell_cpu(&row.dirmail),
                cell_cpu(&row.peer),
                row.verdict().unwrap_or_else(|| "–".into()),
            );
        }
        let notes: Vec<String> = self
            .rows
            .iter()
            .filter_map(|r| r.note.as_ref().map(|n| format!("- {}: {n}", r.operation)))
            .collect();
        if !notes.is_empty() {
            md.push('\n');
            md.push_str(&notes.join("\n"));
            md.push('\n');
        }
        md.push_str("\n## The machine's limits\n\n");
        match &self.fsync {
            Some(f) => {
                let _ = writeln!(
                    md,
                    "fsync probe on the store's disk ({}), 4 KiB files:\n\n\
                     | pattern | 1 thread | {} threads |\n|---|---|---|\n\
                     | create, write, fsync | {} /s | {} /s |\n\
                     | R18 Maildir delivery (write+fsync in tmp/, link into new/, fsync new/) | {} /s | {} /s |\n",
                    f.filesystem,
                    f.threads,
                    thousands(f.file_single),
                    thousands(f.file_parallel),
                    thousands(f.maildir_single),
                    thousands(f.maildir_parallel),
                );
            }
            None => md.push_str("fsync probe: not run.\n"),
        }
        if !self.disk_in_turn.is_empty() {
            md.push_str(
                "\nThe same R18 pattern on the disk alone, taking its turn with the SMTP rows \
                 (so it saw the disk they saw), one writer per connection: the most durable \
                 delivery without batching could do then.\n\n\
                 | writers | deliveries/s | p50 / p99 |\n|---|---|---|\n",
            );
            for (threads, cell) in &self.disk_in_turn {
                let _ = writeln!(
                    md,
                    "| {threads} | {} | {} |",
                    cell_rate(cell, "/s"),
                    cell_latency(cell)
                );
            }
        }
        if !self.idle.is_empty() {
            md.push_str(
                "\nIdle connections (target: dirmail holds 10,000 in under 200 MiB resident). dirmail: VmRSS of its one process; Dovecot: PSS summed over its processes.\n\n\
                 | server | connections | memory before | with them | per connection | threads |\n\
                 |---|---|---|---|---|---|\n",
            );
            for (server, result) in &self.idle {
                match result {
                    Ok(i) => {
                        let _ = writeln!(
                            md,
                            "| {server} | {} | {} | {} | {:.1} KiB | {} |",
                            thousands(i.connections as f64),
                            mib(i.rss_before),
                            mib(i.rss_with),
                            i.per_connection() / 1024.0,
                            i.threads_with.map_or("–".into(), |t| t.to_string()),
                        );
                    }
                    Err(e) => {
                        let _ = writeln!(md, "| {server} | failed: {} | | | | |", first_line(e));
                    }
                }
            }
        }
        if !self.smtp_source.is_empty() {
            md.push_str(
                "\n## Outside check: Postfix's smtp-source\n\n\
                 Postfix's own generator (`smtp-source -s 16 -d -l 4096`: 16 sessions, many \
                 messages each, all to one mailbox) and ours with the same load, taking turns \
                 against each server, so our numbers can be checked against a tool that is not \
                 ours. Postfix's are counted until the messages are in Dovecot's Maildir.\n\n\
                 | server | messages (each tool) | our generator | smtp-source | ours ÷ smtp-source |\n\
                 |---|---|---|---|---|\n",
            );
            for s in &self.smtp_source {
                let ratio = match (s.generator.measured(), s.smtp_source.measured()) {
                    (Some(g), Some(t)) if t.rate > 0.0 => format!("{:.2}", g.rate / t.rate),
                    _ => "–".into(),
                };
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {ratio} |",
                    s.server,
                    s.messages,
                    cell_rate(&s.generator, "msg/s"),
                    cell_rate(&s.smtp_source, "msg/s"),
                );
            }
        }
        if !self.notes.is_empty() {
            md.push_str("\n## Notes\n\n");
            for note in &self.notes {
                let _ = writeln!(md, "- {note}");
            }
        }
        if !m.versions.is_empty() {
            md.push_str("\nVersions: ");
            md.push_str(
                &m.versions
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            md.push_str(".\n");
        }
        md
    }

    /// Writes `report.md`, `report.json` and `chart.svg` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        std::fs::write(
            dir.join("report.json"),
            serde_json::to_string_pretty(self)? + "\n",
        )?;
        std::fs::write(dir.join("chart.svg"), crate::chart::svg(self))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(rate: f64, p99_ms: f64) -> Cell {
        Cell::Measured(Measured {
            rate,
            ops: 100,
            secs: 1.0,
            p50_ms: 1.0,
            p99_ms,
            server_cpu_ms: Some(0.5),
            client_cpu_ms: 0.1,
            loadavg: 1.0,
        })
    }

    fn row(d: Cell, p: Cell, target: Option<Target>) -> Row {
        Row {
            operation: "op".into(),
            short: "op".into(),
            unit: "ops/s".into(),
            dirmail: d,
            peer_name: "peer".into(),
            peer: p,
            target,
            note: None,
        }
    }

    #[test]
    fn verdicts() {
        let r = row(
            measured(300.0, 5.0),
            measured(100.0, 5.0),
            Some(Target::Ratio { ratio: 2.0 }),
        );
        assert_eq!(r.ratio(), Some(3.0));
        assert_eq!(r.verdict().unwrap(), "≥2×: met");
        assert_eq!(r.met(), Some(true));
        let r = row(
            measured(150.0, 5.0),
            measured(100.0, 5.0),
            Some(Target::Ratio { ratio: 2.0 }),
        );
        assert_eq!(r.verdict().unwrap(), "≥2×: short by 25%");
        let r = row(
            measured(99.5, 5.0),
            measured(100.0, 5.0),
            Some(Target::Ratio { ratio: 1.0 }),
        );
        assert_eq!(r.verdict().unwrap(), "≥1×: short by 0.5%");
        let r = row(
            measured(50.0, 20.0),
            measured(100.0, 10.0),
            Some(Target::RatioAndP99),
        );
        assert_eq!(
            r.verdict().unwrap(),
            "≥1× and p99: rate short by 50%, p99 2.0× worse"
        );
        assert_eq!(r.met(), Some(false));
        let r = row(
            Cell::not_measured("no IMAP yet"),
            measured(100.0, 10.0),
            Some(Target::RatioAndP99),
        );
        assert_eq!(r.verdict(), None);
    }

    #[test]
    fn numbers() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(123.4), "123");
        assert_eq!(thousands(12.34), "12.3");
        assert_eq!(thousands(1.234), "1.23");
    }
}
