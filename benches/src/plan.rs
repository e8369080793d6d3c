//! The run: which loads, against which server, in which order, and how big.
//!
//! dirmail first (local accounts), then Dovecot as shipped, then Dovecot tuned with Postfix in
//! front of it, then Active Directory logins against one Samba DC for both. Each stage starts
//! its servers and stops them before the next, so no two servers compete for the two cores. A
//! failure fails its row (the report says why), never the whole run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::runtime::Runtime;

use crate::dirmail::Store;
use crate::load::{self, Spec};
use crate::measure::{Clock, Contestant, Part, Tally, compare, metered};
use crate::peers::dovecot::{Accounts, Dovecot, Tuning};
use crate::peers::postfix::Postfix;
use crate::peers::{self, install};
use crate::probe;
use crate::process::free_ports;
use crate::procfs;
use crate::report::{Cell, Machine, Report, Row, SmtpSource, Target};
use crate::smtp::{self, Dialect};
use crate::wire::Endpoint;
use crate::{imap, pop3};

/// How long a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A few seconds, dirmail only: that the generator still works (a CI smoke test).
    Smoke,
    /// Well under two minutes of load: `cargo xtask bench --quick`.
    Quick,
    Full,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Smoke => "smoke",
            Mode::Quick => "quick",
            Mode::Full => "full",
        }
    }
}

/// Operations per row.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    smtp_one: usize,
    smtp_many: usize,
    pop3: usize,
    pop3s: usize,
    imap: usize,
    ad: usize,
    idle: usize,
    smtp_source: usize,
    /// Messages through the outbound queue into smtp-sink (dirmail, then Postfix relaying).
    queue: usize,
    /// Messages already in the mailbox for the large-mailbox check, and deliveries into it.
    big_mailbox: (usize, usize),
    fsync_each: Duration,
}

impl Sizes {
    fn of(mode: Mode) -> Sizes {
        match mode {
            Mode::Smoke => Sizes {
                smtp_one: 10,
                smtp_many: 64,
                pop3: 32,
                pop3s: 16,
                imap: 32,
                ad: 0,
                idle: 100,
                smtp_source: 0,
                queue: 8,
                big_mailbox: (0, 0),
                fsync_each: Duration::from_millis(200),
            },
            Mode::Quick => Sizes {
                smtp_one: 300,
                smtp_many: 2000,
                pop3: 320,
                pop3s: 160,
                imap: 320,
                ad: 320,
                idle: 10_000,
                smtp_source: 500,
                queue: 1000,
                big_mailbox: (10_000, 100),
                fsync_each: Duration::from_secs(1),
            },
            Mode::Full => Sizes {
                smtp_one: 1000,
                smtp_many: 8000,
                pop3: 2000,
                pop3s: 1000,
                imap: 2000,
                ad: 2000,
                idle: 10_000,
                smtp_source: 4000,
                queue: 4000,
                big_mailbox: (10_000, 500),
                fsync_each: Duration::from_secs(3),
            },
        }
    }
}

/// What the command line asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub dirmail: PathBuf,
    pub out: PathBuf,
    pub mode: Mode,
    pub peers: bool,
    pub ad: bool,
    /// Keep the temporary directory (stores, peer logs) for a look afterwards.
    pub keep: bool,
    /// Run the local-accounts stage (SMTP, POP3, IMAP, idle connections).
    pub local: bool,
    /// Run the outbound queue stage (dirmail and Postfix into smtp-sink).
    pub queue: bool,
}

const DOMAIN: &str = "example.jp";
/// Concurrent clients of the many-client rows.
const CLIENTS: usize = 16;
/// Messages each POP3 reader retrieves (and each mailbox holds).
const RETR: u32 = 10;
const MESSAGE_SIZE: usize = 4096;
const FROM: &str = "bench@example.org";

fn sink(i: usize) -> String {
    format!("sink{}@{DOMAIN}", i % CLIENTS)
}
fn reader(i: usize) -> String {
    format!("pop{}@{DOMAIN}", i % CLIENTS)
}
fn password(address: &str) -> String {
    // AD's default policy wants seven characters of three kinds.
    let name = address.split('@').next().unwrap_or(address);
    format!("Bench-{name}-Passw0rd")
}
const SOURCE: &str = "source@example.jp";
/// Who submits the queue row's messages, and the outside domain they go to.
const SUBMITTER: &str = "submitter@example.jp";
const REMOTE: &str = "remote.test";
const SMTP_SINK: &str = "/usr/sbin/smtp-sink";
/// smtp-sink's own loopback address (its MX in the test DNS, Postfix's relayhost).
const SINK_IP: [u8; 4] = [127, 0, 41, 2];
const BIG: &str = "big@example.jp";

/// The rows of the table, filled in stage by stage.
struct Rows {
    smtp_one: Row,
    smtp_many: Row,
    pop3_default: Row,
    pop3_tuned: Row,
    pop3s: Row,
    imap: Row,
    ad: Row,
    queue: Row,
}

impl Rows {
    fn new() -> Rows {
        let pending = || Cell::not_measured("not run");
        let row = |operation: &str, short: &str, unit: &str, peer: &str, target| Row {
            operation: operation.into(),
            short: short.into(),
            unit: unit.into(),
            dirmail: pending(),
            peer_name: peer.into(),
            peer: pending(),
            target,
            note: None,
        };
        let postfix = "Postfix → LMTP → Dovecot (tuned)";
        Rows {
            smtp_one: row(
                "SMTP delivery, 4 KiB, 1 connection (durable)",
                "SMTP ×1 vs Postfix+Dovecot",
                "msg/s",
                postfix,
                None,
            ),
            smtp_many: row(
                "SMTP delivery, 4 KiB, 16 connections (durable)",
                "SMTP ×16 vs Postfix+Dovecot",
                "msg/s",
                postfix,
                Some(Target::Ratio { ratio: 2.0 }),
            ),
            pop3_default: row(
                "POP3 session (USER/PASS, STAT, RETR ×10, QUIT), 16 clients",
                "POP3 vs Dovecot (default)",
                "sessions/s",
                Tuning::Default.label(),
                None,
            ),
            pop3_tuned: row(
                "POP3 session (USER/PASS, STAT, RETR ×10, QUIT), 16 clients",
                "POP3 vs Dovecot (tuned)",
                "sessions/s",
                Tuning::Tuned.label(),
                Some(Target::RatioAndP99),
            ),
            pop3s: row(
                "POP3 session over implicit TLS (pop3s), 16 clients",
                "POP3S vs Dovecot (tuned)",
                "sessions/s",
                Tuning::Tuned.label(),
                None,
            ),
            imap: row(
                "IMAP session (LOGIN, SELECT, FETCH 1:* FLAGS, FETCH 1 BODY[], LOGOUT), 16 clients",
                "IMAP vs Dovecot (tuned)",
                "sessions/s",
                Tuning::Tuned.label(),
                Some(Target::RatioAndP99),
            ),
            ad: row(
                "AD login (POP3 USER/PASS, QUIT) against one Samba DC, 16 clients",
                "AD login vs Dovecot auth_bind",
                "logins/s",
                "Dovecot (tuned), LDAP auth_bind",
                Some(Target::Ratio { ratio: 1.0 }),
            ),
            queue: row(
                "Queue throughput: submission (AUTH) → queue → MX (smtp-sink), 4 KiB, 16 connections",
                "Queue → smtp-sink vs Postfix relay",
                "msg/s",
                "Postfix relayhost → the same smtp-sink",
                None,
            ),
        }
    }

    /// The rows of the local-accounts stage (all but AD).
    fn local_stage(&mut self) -> [&mut Row; 6] {
        [
            &mut self.smtp_one,
            &mut self.smtp_many,
            &mut self.pop3_default,
            &mut self.pop3_tuned,
            &mut self.pop3s,
            &mut self.imap,
        ]
    }

    fn into_vec(self) -> Vec<Row> {
        vec![
            self.smtp_one,
            self.smtp_many,
            self.pop3_default,
            self.pop3_tuned,
            self.pop3s,
            self.imap,
            self.ad,
            self.queue,
        ]
    }
}

struct Bench {
    opts: Options,
    sizes: Sizes,
    rt: Runtime,
    work: PathBuf,
    rows: Rows,
    notes: Vec<String>,
    idle: Vec<(String, Result<probe::Idle, String>)>,
    smtp_source: Vec<SmtpSource>,
    /// The disk alone doing R18's pattern, in turn with each SMTP row: (threads, result).
    disk_in_turn: Vec<(usize, Cell)>,
    message: Arc<Vec<u8>>,
}

/// The peers of the local-accounts stage, all running side by side with dirmail. Fields drop
/// in order: Postfix stops before the Dovecot it delivers to.
struct Peers {
    postfix: Postfix,
    tuned: Dovecot,
    default: Dovecot,
}

/// A cell its stage never reached becomes that stage's error.
fn fail_unrun(cell: &mut Cell, error: &anyhow::Error) {
    if matches!(cell, Cell::NotMeasured { .. }) {
        *cell = Cell::Failed {
            error: format!("the stage stopped early: {error:#}"),
        };
    }
}

pub fn run(opts: Options) -> Result<Report> {
    crate::cleanup::on_interrupt();
    let started = Instant::now();
    let started_at = now_text();
    let loadavg_start = procfs::loadavg();
    let mut opts = opts;
    let mut notes = Vec::new();
    if opts.mode == Mode::Smoke {
        opts.peers = false;
        opts.ad = false;
    }
    let root = rustix::process::geteuid().is_root();
    if !root && (opts.peers || opts.ad) {
        notes
            .push("Not root: the peers and the Samba DC were not started (they need root).".into());
        opts.peers = false;
        opts.ad = false;
    }
    let mut wanted: Vec<&str> = Vec::new();
    if opts.peers && !opts.local && !opts.ad {
        // The queue stage alone needs Postfix (and its smtp-sink) only.
        wanted.push("postfix");
    } else if opts.peers || opts.ad {
        // Dovecot's auth_bind row needs Dovecot even without the other peer rows.
        wanted.extend(install::PEERS);
    }
    if opts.ad {
        wanted.extend(install::SAMBA);
    }
    if !wanted.is_empty() {
        match install::ensure(&wanted) {
            Ok(installed) if !installed.is_empty() => {
                notes.push(format!("Installed for this run: {}.", installed.join(", ")))
            }
            Ok(_) => {}
            Err(e) => {
                notes.push(format!(
                    "The peers could not be installed, so they were not measured: {e:#}"
                ));
                opts.peers = false;
                opts.ad = false;
            }
        }
    }
    let nofile = process_limit(&mut notes);
    let work = tempfile::Builder::new()
        .prefix("dirmail-bench-")
        .tempdir()
        .context("cannot make a temporary directory")?;
    // The peers' mail processes run as nobody and must traverse it.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut bench = Bench {
        sizes: Sizes::of(opts.mode),
        opts,
        rt,
        work: work.path().to_owned(),
        rows: Rows::new(),
        notes,
        idle: Vec::new(),
        smtp_source: Vec::new(),
        disk_in_turn: Vec::new(),
        message: Arc::new(smtp::message(MESSAGE_SIZE)),
    };
    if nofile < bench.sizes.idle as u64 + 512 {
        bench.sizes.idle = (nofile as usize).saturating_sub(512).max(100);
        bench.notes.push(format!(
            "The descriptor limit is {nofile}: the idle test opened {} connections only.",
            bench.sizes.idle
        ));
    }
    eprintln!("bench: fsync probe");
    let fsync = match probe::fsync(
        &bench.work.join("fsync-probe"),
        bench.sizes.fsync_each,
        CLIENTS,
    ) {
        Ok(f) => Some(f),
        Err(e) => {
            bench.notes.push(format!("The fsync probe failed: {e:#}"));
            None
        }
    };
    if !bench.opts.local {
        bench.peers_not_measured("not run (--only)");
        for row in bench.rows.local_stage() {
            row.dirmail = Cell::not_measured("not run (--only)");
        }
    } else if let Err(e) = bench.local_accounts() {
        bench
            .notes
            .push(format!("The local-accounts stage stopped early: {e:#}"));
        // What the stage did not get to is a failure of dirmail's, not a row left out.
        for row in bench.rows.local_stage() {
            fail_unrun(&mut row.dirmail, &e);
        }
    }
    if bench.opts.queue {
        if let Err(e) = bench.queue_throughput() {
            bench
                .notes
                .push(format!("The queue stage stopped early: {e:#}"));
            fail_unrun(&mut bench.rows.queue.dirmail, &e);
        }
    } else {
        let why = Cell::not_measured("not run (--only)");
        bench.rows.queue.dirmail = why.clone();
        bench.rows.queue.peer = why;
    }
    if bench.opts.ad && bench.sizes.ad > 0 {
        if let Err(e) = bench.active_directory() {
            bench
                .notes
                .push(format!("The Active Directory stage stopped early: {e:#}"));
            fail_unrun(&mut bench.rows.ad.dirmail, &e);
        }
    } else {
        let why = Cell::not_measured("not run (--no-ad, --only, smoke run, or not root)");
        bench.rows.ad.dirmail = why.clone();
        bench.rows.ad.peer = why;
    }
    bench.standing_notes();
    let report = Report {
        mode: bench.opts.mode.name().into(),
        started: started_at,
        total_secs: started.elapsed().as_secs_f64(),
        machine: machine(loadavg_start),
        rows: bench.rows.into_vec(),
        fsync,
        idle: bench.idle,
        smtp_source: bench.smtp_source,
        disk_in_turn: bench.disk_in_turn,
        notes: bench.notes,
    };
    if bench.opts.keep {
        let kept = work.keep();
        eprintln!("bench: kept {}", kept.display());
    }
    Ok(report)
}

impl Bench {
    /// Rounds of the rows bound by the disk (SMTP): shorter turns, since fsync latency on a
    /// shared disk swings within seconds with other programs' writes.
    fn disk_rounds(&self) -> usize {
        3 * self.rounds()
    }

    /// Rounds per row: servers take turns this many times.
    fn rounds(&self) -> usize {
        match self.opts.mode {
            Mode::Smoke => 1,
            Mode::Quick => 2,
            Mode::Full => 4,
        }
    }

    /// dirmail with its own account database beside Dovecot (as shipped and tuned) and
    /// Postfix: SMTP, POP3 (plain and TLS), IMAP, smtp-source, a large mailbox, then idle
    /// connections.
    fn local_accounts(&mut self) -> Result<()> {
        eprintln!("bench: dirmail with local accounts");
        let store = Store::create(&self.opts.dirmail, &self.work.join("dirmail"), "")?;
        store.admin(&["add", DOMAIN])?;
        let mut mailboxes: Vec<String> = (0..CLIENTS).flat_map(|i| [sink(i), reader(i)]).collect();
        mailboxes.push(SOURCE.into());
        mailboxes.push(BIG.into());
        // argon2id makes each of these cost a few tens of milliseconds.
        for address in &mailboxes {
            store.admin(&["add", address, "--create-user", &password(address)])?;
        }
        let server = store.serve()?;
        let smtp = Endpoint::plain(server.addr("smtp")?);
        self.fill_readers(&smtp, Dialect::Smtp)?;
        let peers = if self.opts.peers {
            match self.start_peers() {
                Ok(peers) => Some(peers),
                Err(e) => {
                    self.notes.push(format!(
                        "The peers did not start, so they were not measured: {e:#}"
                    ));
                    self.peers_not_measured("did not start (see the notes)");
                    None
                }
            }
        } else {
            self.peers_not_measured("not run (--no-peers, smoke run, or not root)");
            None
        };
        let pid = server.pid();
        let dirmail_cpu = move || Some(procfs::cpu(&[pid]));
        let dirmail_sinks = || -> usize {
            (0..CLIENTS)
                .map(|i| count_messages(&store.maildir(&sink(i))))
                .sum()
        };
        let peer_cpu = {
            let pids = peers.as_ref().map(|p| {
                (
                    p.default.pid(),
                    p.tuned.pid(),
                    p.postfix.master_pid().unwrap_or(0),
                )
            });
            move |which: usize| -> Option<Duration> {
                let (default, tuned, postfix) = pids?;
                Some(match which {
                    0 => procfs::cpu(&[default]),
                    1 => procfs::cpu(&[tuned]),
                    _ => procfs::cpu(&[postfix, tuned]),
                })
            }
        };
        let default_cpu = || peer_cpu(0);
        let tuned_cpu = || peer_cpu(1);
        let postfix_cpu = || peer_cpu(2);
        let peer_sinks = || -> usize {
            peers.as_ref().map_or(0, |p| {
                (0..CLIENTS)
                    .map(|i| count_messages(&p.tuned.maildir(&sink(i))))
                    .sum()
            })
        };

        // SMTP delivery, one connection and sixteen.
        for clients in [1, CLIENTS] {
            let ops = if clients == 1 {
                self.sizes.smtp_one
            } else {
                self.sizes.smtp_many
            };
            let mut ours = |n| {
                self.smtp_round(
                    "dirmail",
                    &smtp,
                    clients,
                    n,
                    None,
                    &dirmail_sinks,
                    false,
                    &dirmail_cpu,
                )
            };
            // The disk's ceiling for the same pattern, taking its turn with the servers.
            let disk_dir = self.work.join("disk-in-turn");
            let no_cpu = || None;
            let mut disk = |n| {
                eprintln!("  (the disk alone: R18's pattern, {clients} writers)");
                metered(&no_cpu, None, || probe::maildir_ops(&disk_dir, clients, n))
            };
            let mut tallies = match &peers {
                Some(p) => {
                    let postfix = Endpoint::plain(p.postfix.smtp);
                    let mut theirs = |n| {
                        self.smtp_round(
                            "Postfix",
                            &postfix,
                            clients,
                            n,
                            None,
                            &peer_sinks,
                            true,
                            &postfix_cpu,
                        )
                    };
                    compare(
                        ops,
                        2 * clients,
                        self.disk_rounds(),
                        &mut [&mut ours, &mut theirs, &mut disk],
                    )
                }
                None => compare(
                    ops,
                    2 * clients,
                    self.disk_rounds(),
                    &mut [&mut ours, &mut disk],
                ),
            };
            if let Some(disk) = tallies.pop() {
                self.disk_in_turn.push((clients, disk.cell()));
            }
            let row = if clients == 1 {
                &mut self.rows.smtp_one
            } else {
                &mut self.rows.smtp_many
            };
            fill(row, tallies);
        }
        if peers.is_some() {
            self.notes.push(
                "SMTP rows: Postfix's rate and CPU count until the last message is in Dovecot's \
                 Maildir (its 250 means queued and fsynced; dirmail's means in the Maildir and \
                 fsynced, R18); the latencies are to the 250."
                    .into(),
            );
        }

        // POP3, plain: dirmail against Dovecot as shipped and tuned, in turn.
        {
            let pop3 = Endpoint::plain(server.addr("pop3")?);
            let mut ours = |n| self.pop3_round("dirmail", &pop3, n, &dirmail_cpu);
            let tallies = match &peers {
                Some(p) => {
                    let (d, t) = (
                        Endpoint::plain(p.default.ports.pop3),
                        Endpoint::plain(p.tuned.ports.pop3),
                    );
                    let mut default = |n| self.pop3_round("Dovecot (default)", &d, n, &default_cpu);
                    let mut tuned = |n| self.pop3_round("Dovecot (tuned)", &t, n, &tuned_cpu);
                    compare(
                        self.sizes.pop3,
                        CLIENTS,
                        self.rounds(),
                        &mut [&mut ours, &mut default, &mut tuned],
                    )
                }
                None => compare(self.sizes.pop3, CLIENTS, self.rounds(), &mut [&mut ours]),
            };
            let mut it = tallies.into_iter();
            let ours = it.next().map(|t| t.cell());
            let default = it.next().map(|t| t.cell());
            let tuned = it.next().map(|t| t.cell());
            if let Some(cell) = ours {
                self.rows.pop3_default.dirmail = cell.clone();
                self.rows.pop3_tuned.dirmail = cell;
            }
            if let Some(cell) = default {
                self.rows.pop3_default.peer = cell;
            }
            if let Some(cell) = tuned {
                self.rows.pop3_tuned.peer = cell;
            }
        }

        // POP3 over implicit TLS.
        {
            let pop3s = Endpoint::tls(server.addr("pop3s")?);
            let mut ours = |n| self.pop3_round("dirmail", &pop3s, n, &dirmail_cpu);
            let tallies = match &peers {
                Some(p) => {
                    let t = Endpoint::tls(p.tuned.ports.pop3s);
                    let mut tuned = |n| self.pop3_round("Dovecot (tuned)", &t, n, &tuned_cpu);
                    compare(
                        self.sizes.pop3s,
                        CLIENTS,
                        self.rounds(),
                        &mut [&mut ours, &mut tuned],
                    )
                }
                None => compare(self.sizes.pop3s, CLIENTS, self.rounds(), &mut [&mut ours]),
            };
            fill(&mut self.rows.pop3s, tallies);
        }

        // IMAP: dirmail and Dovecot.
        {
            let ours_endpoint = server.addr("imap").ok().map(Endpoint::plain);
            let mut ours = |n| match &ours_endpoint {
                Some(e) => self.imap_round("dirmail", e, n, &dirmail_cpu),
                None => bail!("no imap listener"),
            };
            let peer_endpoint = peers.as_ref().map(|p| Endpoint::plain(p.tuned.ports.imap));
            let mut tuned = |n| match &peer_endpoint {
                Some(e) => self.imap_round("Dovecot (tuned)", e, n, &tuned_cpu),
                None => bail!("no peer"),
            };
            let mut contestants: Vec<Contestant<'_>> = Vec::new();
            if ours_endpoint.is_some() {
                contestants.push(&mut ours);
            }
            if peer_endpoint.is_some() {
                contestants.push(&mut tuned);
            }
            let mut tallies =
                compare(self.sizes.imap, CLIENTS, self.rounds(), &mut contestants).into_iter();
            if ours_endpoint.is_some() {
                self.rows.imap.dirmail = tallies
                    .next()
                    .map_or_else(|| Cell::not_measured("not run"), Tally::cell);
            } else {
                self.rows.imap.dirmail = Cell::Failed {
                    error: "dirmail serve printed no imap listener".into(),
                };
            }
            if peer_endpoint.is_some() {
                self.rows.imap.peer = tallies
                    .next()
                    .map_or_else(|| Cell::not_measured("not run"), Tally::cell);
            }
        }

        if self.sizes.smtp_source > 0 {
            if Command::new("smtp-source").arg("-h").output().is_err() {
                self.notes.push(
                    "smtp-source is not installed (it comes with the postfix package): no outside check."
                        .into(),
                );
            } else {
                eprintln!("bench: the outside check, smtp-source beside the generator");
                let ours = || count_messages(&store.maildir(SOURCE));
                let check = self.outside_check("dirmail", smtp.addr, &ours, false, &dirmail_cpu);
                self.smtp_source.push(check);
                if let Some(p) = &peers {
                    let theirs = || count_messages(&p.tuned.maildir(SOURCE));
                    let check = self.outside_check(
                        "Postfix → LMTP → Dovecot (tuned)",
                        p.postfix.smtp,
                        &theirs,
                        true,
                        &postfix_cpu,
                    );
                    self.smtp_source.push(check);
                }
            }
        }
        if self.sizes.big_mailbox.1 > 0
            && let Err(e) = self.big_mailbox(&store, &smtp)
        {
            self.notes
                .push(format!("The large-mailbox check failed: {e:#}"));
        }
        let problems = server.logged_problems();
        if !problems.is_empty() {
            self.notes.push(format!(
                "dirmail logged {} warnings or errors during the run; the first: {}",
                problems.len(),
                problems[0]
            ));
        }
        drop(server);

        // Idle connections, one server at a time.
        let tuned = match peers {
            Some(Peers {
                postfix,
                tuned,
                default,
            }) => {
                if postfix.deferred() > 0 {
                    self.notes.push(format!(
                        "Postfix deferred {} messages (see its log): its rows under-count.",
                        postfix.deferred()
                    ));
                }
                drop(postfix);
                self.peer_problems(&default);
                drop(default);
                Some(tuned)
            }
            None => None,
        };
        for listener in ["pop3", "smtp", "imap"] {
            let server = store.serve()?;
            let pid = server.pid();
            let result = probe::idle(
                &self.rt,
                &Endpoint::plain(server.addr(listener)?),
                self.sizes.idle,
                || procfs::rss(pid).unwrap_or(0),
                || procfs::threads(pid),
            );
            self.idle.push((
                format!("dirmail, {listener}"),
                result.map_err(|e| format!("{e:#}")),
            ));
        }
        if let Some(tuned) = tuned {
            let pid = tuned.pid();
            let result = probe::idle(
                &self.rt,
                &Endpoint::plain(tuned.ports.pop3),
                self.sizes.idle,
                || procfs::tree_pss(pid),
                || None,
            );
            self.idle.push((
                "Dovecot (tuned), pop3: PSS of all its processes, summed".into(),
                result.map_err(|e| format!("{e:#}")),
            ));
            self.peer_problems(&tuned);
        }
        Ok(())
    }

    /// Dovecot as shipped and tuned (each with its own mail), and Postfix delivering to the
    /// tuned one; the readers' mailboxes filled over LMTP.
    fn start_peers(&self) -> Result<Peers> {
        eprintln!("bench: starting Dovecot (as shipped and tuned) and Postfix");
        let mut users: Vec<(String, String)> = (0..CLIENTS)
            .flat_map(|i| [sink(i), reader(i)])
            .map(|a| {
                let p = password(&a);
                (a, p)
            })
            .collect();
        users.push((SOURCE.into(), password(SOURCE)));
        let accounts = Accounts::File(users.clone());
        let default = Dovecot::start(
            &self.work.join("dovecot-default"),
            Tuning::Default,
            &accounts,
        )?;
        let tuned = Dovecot::start(&self.work.join("dovecot-tuned"), Tuning::Tuned, &accounts)?;
        for dovecot in [&default, &tuned] {
            self.fill_readers(&Endpoint::plain(dovecot.ports.lmtp), Dialect::Lmtp)
                .context("filling Dovecot's mailboxes over LMTP")?;
        }
        let recipients: Vec<String> = users.into_iter().map(|(a, _)| a).collect();
        let postfix = Postfix::start(
            &self.work.join("postfix"),
            crate::process::free_ports(1)?[0],
            tuned.ports.lmtp.port(),
            DOMAIN,
            &recipients,
        )?;
        Ok(Peers {
            postfix,
            tuned,
            default,
        })
    }

    /// Ten messages in each reader's mailbox, so every POP3/IMAP session finds the same.
    fn fill_readers(&self, endpoint: &Endpoint, dialect: Dialect) -> Result<()> {
        let message = Arc::clone(&self.message);
        self.rt.block_on(async {
            let mut client = smtp::Client::connect(endpoint, dialect).await?;
            for i in 0..CLIENTS {
                for _ in 0..RETR {
                    client.send(FROM, &reader(i), &message).await?;
                }
            }
            client.quit().await
        })
    }

    /// One round of deliveries: `clients` connections, each sending to the sinks in turn (or
    /// all to `to`). `count` reads how many messages the recipients hold. With `wait` (Postfix, whose 250 means
    /// queued), the round lasts until they all arrived; without (dirmail, whose 250 means
    /// delivered, R18), they must all be there already.
    #[allow(clippy::too_many_arguments)]
    fn smtp_round(
        &self,
        server: &str,
        endpoint: &Endpoint,
        clients: usize,
        ops: usize,
        to: Option<&'static str>,
        count: &dyn Fn() -> usize,
        wait: bool,
        cpu: Clock<'_>,
    ) -> Result<Part> {
        let before = count();
        let part = metered(cpu, None, || {
            let spec = Spec {
                label: format!("{server}: SMTP ×{clients}"),
                concurrency: clients,
                ops,
            };
            let message = Arc::clone(&self.message);
            let mut outcome = load::run(&self.rt, &spec, |worker, mut tickets| {
                let endpoint = endpoint.clone();
                let message = Arc::clone(&message);
                async move {
                    let mut client = smtp::Client::connect(&endpoint, Dialect::Smtp).await?;
                    while let Some(n) = tickets.take() {
                        let started = Instant::now();
                        tokio::time::timeout(
                            load::OP_TIMEOUT,
                            client.send(
                                FROM,
                                &to.map_or_else(|| sink(worker + n), str::to_owned),
                                &message,
                            ),
                        )
                        .await
                        .context("a delivery took longer than a minute")??;
                        tickets.done(started);
                    }
                    client.quit().await?;
                    Ok(tickets)
                }
            })?;
            if wait {
                // The round's wall time becomes first connection → last delivery.
                outcome.elapsed += wait_for_count(count, before + ops, Duration::from_secs(300))
                    .context("waiting for the messages to reach the Maildirs")?;
            }
            Ok(outcome)
        })?;
        if !wait {
            let now = count();
            if now != before + ops {
                bail!(
                    "{server} acknowledged {ops} messages and the Maildirs gained {}",
                    now as i64 - before as i64
                );
            }
        }
        Ok(part)
    }

    fn pop3_round(
        &self,
        server: &str,
        endpoint: &Endpoint,
        ops: usize,
        cpu: Clock<'_>,
    ) -> Result<Part> {
        let tls = if endpoint.tls.is_some() { "S" } else { "" };
        let endpoint = endpoint.clone();
        self.sessions_round(
            &format!("{server}: POP3{tls} ×{CLIENTS}"),
            ops,
            cpu,
            None,
            move |worker, _| {
                let endpoint = endpoint.clone();
                async move {
                    let user = reader(worker);
                    pop3::session(
                        &endpoint,
                        &user,
                        &password(&user),
                        pop3::Session::Read { messages: RETR },
                    )
                    .await
                }
            },
        )
    }

    fn imap_round(
        &self,
        server: &str,
        endpoint: &Endpoint,
        ops: usize,
        cpu: Clock<'_>,
    ) -> Result<Part> {
        let endpoint = endpoint.clone();
        self.sessions_round(
            &format!("{server}: IMAP ×{CLIENTS}"),
            ops,
            cpu,
            None,
            move |worker, _| {
                let endpoint = endpoint.clone();
                async move {
                    let user = reader(worker);
                    imap::session(&endpoint, &user, &password(&user)).await
                }
            },
        )
    }

    fn login_round(
        &self,
        server: &str,
        endpoint: &Endpoint,
        ops: usize,
        cpu: Clock<'_>,
        samba: Clock<'_>,
    ) -> Result<Part> {
        let endpoint = endpoint.clone();
        self.sessions_round(
            &format!("{server}: AD logins ×{CLIENTS}"),
            ops,
            cpu,
            Some(samba),
            move |worker, _| {
                let endpoint = endpoint.clone();
                async move {
                    let user = ad_user(worker);
                    pop3::session(&endpoint, &user, &password(&user), pop3::Session::LoginOnly)
                        .await
                }
            },
        )
    }

    fn sessions_round<O, F>(
        &self,
        label: &str,
        ops: usize,
        cpu: Clock<'_>,
        backend: Option<Clock<'_>>,
        op: O,
    ) -> Result<Part>
    where
        O: Fn(usize, usize) -> F + Clone + Send + Sync + 'static,
        F: std::future::Future<Output = Result<()>> + Send + 'static,
    {
        let spec = Spec {
            label: label.to_owned(),
            concurrency: CLIENTS,
            ops,
        };
        metered(cpu, backend, || load::sessions(&self.rt, &spec, op))
    }

    /// The outside check: Postfix's smtp-source and our generator against one server, taking
    /// turns, with the same load (16 sessions, many messages per connection, one recipient).
    fn outside_check(
        &self,
        server: &str,
        addr: SocketAddr,
        count: &dyn Fn() -> usize,
        wait: bool,
        cpu: Clock<'_>,
    ) -> SmtpSource {
        let endpoint = Endpoint::plain(addr);
        let mut ours = |n| {
            self.smtp_round(
                server,
                &endpoint,
                CLIENTS,
                n,
                Some(SOURCE),
                count,
                wait,
                cpu,
            )
        };
        let mut theirs = |n| self.smtp_source_round(server, addr, n, count, wait, cpu);
        let mut tallies = compare(
            self.sizes.smtp_source,
            CLIENTS,
            self.disk_rounds(),
            &mut [&mut ours, &mut theirs],
        )
        .into_iter();
        SmtpSource {
            server: server.into(),
            messages: self.sizes.smtp_source,
            sessions: CLIENTS,
            generator: tallies
                .next()
                .map_or_else(|| Cell::not_measured("not run"), Tally::cell),
            smtp_source: tallies
                .next()
                .map_or_else(|| Cell::not_measured("not run"), Tally::cell),
        }
    }

    /// One run of smtp-source: `-s 16 -m N -l 4096 -d` to the one recipient, timed from
    /// outside (and, with `wait`, until the messages are in the Maildir).
    fn smtp_source_round(
        &self,
        server: &str,
        addr: SocketAddr,
        messages: usize,
        count: &dyn Fn() -> usize,
        wait: bool,
        cpu: Clock<'_>,
    ) -> Result<Part> {
        let before = count();
        eprintln!("  smtp-source: {messages} messages in {CLIENTS} sessions → {server}");
        let part = metered(cpu, None, || {
            let started = Instant::now();
            crate::process::run(Command::new("smtp-source").args([
                "-s",
                &CLIENTS.to_string(),
                "-m",
                &messages.to_string(),
                "-l",
                &MESSAGE_SIZE.to_string(),
                "-d",
                "-f",
                FROM,
                "-t",
                SOURCE,
                &addr.to_string(),
            ]))?;
            if wait {
                wait_for_count(count, before + messages, Duration::from_secs(300))?;
            }
            Ok(load::Outcome {
                ops: messages,
                elapsed: started.elapsed(),
                latencies: Vec::new(),
            })
        })?;
        if !wait && count() != before + messages {
            bail!(
                "{server} acknowledged {messages} messages from smtp-source and the Maildir gained {}",
                count() as i64 - before as i64
            );
        }
        Ok(part)
    }

    /// R15/R18 delivery checks the recipient's usage first: how it fares when the mailbox is
    /// already large. Messages are written straight into `new/`, then delivered one at a time,
    /// alternating with deliveries into a small mailbox.
    fn big_mailbox(&mut self, store: &Store, smtp: &Endpoint) -> Result<()> {
        let (held, deliveries) = self.sizes.big_mailbox;
        // With a quota, so every delivery adds up what the mailbox holds (R15).
        for mailbox in [BIG, SMALL] {
            store.admin(&["quota", mailbox, "1GB"])?;
        }
        let dir = store.maildir(BIG).join("new");
        for i in 0..held {
            std::fs::write(
                dir.join(format!("1700000000.M{i}P1Q{i}.bench,S={MESSAGE_SIZE}")),
                &*self.message,
            )?;
        }
        let none = || None;
        let one = |to: &'static str, n: usize| -> Result<Part> {
            let spec = Spec {
                label: format!("dirmail: SMTP ×1 → {to}"),
                concurrency: 1,
                ops: n,
            };
            let message = Arc::clone(&self.message);
            metered(&none, None, || {
                load::run(&self.rt, &spec, |_, mut tickets| {
                    let endpoint = smtp.clone();
                    let message = Arc::clone(&message);
                    async move {
                        let mut client = smtp::Client::connect(&endpoint, Dialect::Smtp).await?;
                        while tickets.take().is_some() {
                            let started = Instant::now();
                            client.send(FROM, to, &message).await?;
                            tickets.done(started);
                        }
                        client.quit().await?;
                        Ok(tickets)
                    }
                })
            })
        };
        let mut big = |n| one(BIG, n);
        let mut small = |n| one(SMALL, n);
        let tallies = compare(deliveries, 0, self.rounds(), &mut [&mut big, &mut small]);
        let cells: Vec<Cell> = tallies.into_iter().map(Tally::cell).collect();
        let (Some(big), Some(small)) = (cells[0].measured(), cells[1].measured()) else {
            bail!("a delivery failed");
        };
        self.notes.push(format!(
            "Delivery into a mailbox with a quota already holding {held} messages, 1 connection: \
             {:.0} msg/s, p50 {:.1} ms; into a small mailbox with a quota, in turn with it: \
             {:.0} msg/s, p50 {:.1} ms. To check the quota (R15) dirmail lists the whole Maildir \
             on every delivery (the sizes come from the names, `,S=`, without a stat per \
             message), so delivery slows as a mailbox grows; without a quota it lists nothing.",
            big.rate, big.p50_ms, small.rate, small.p50_ms
        ));
        Ok(())
    }

    fn peer_problems(&mut self, dovecot: &Dovecot) {
        let problems = dovecot.logged_problems();
        if !problems.is_empty() {
            self.notes.push(format!(
                "{} logged {} errors or warnings; the first: {}",
                dovecot.tuning.label(),
                problems.len(),
                problems[0]
            ));
        }
    }

    /// Outbound queue throughput: N messages submitted to dirmail (AUTH) for an outside domain
    /// whose MX (the test DNS, dnsmasq) is Postfix's `smtp-sink` on a loopback address of its
    /// own, timed from the first connection until the sink has them all; then the same load
    /// into a Postfix that relays everything to the same sink (`relayhost`), timed the same
    /// way. Without smtp-sink (no Postfix package: a smoke run on a bare machine) the row says
    /// so and is not a failure.
    fn queue_throughput(&mut self) -> Result<()> {
        if !Path::new(SMTP_SINK).exists() {
            let why = Cell::not_measured("smtp-sink is not installed (Debian's postfix)");
            self.rows.queue.dirmail = why.clone();
            self.rows.queue.peer = why;
            return Ok(());
        }
        eprintln!("bench: the outbound queue into smtp-sink");
        let dir = self.work.join("queue");
        let sink = Sink::start(&dir.join("sink"))?;
        let dns = dns_fixture::DnsServer::start(
            &dns_fixture::Records::new()
                .local_domain("test")
                .mx(REMOTE, &format!("mx.{REMOTE}"), 10)
                .host(&format!("mx.{REMOTE}"), &[sink.addr.ip()]),
        )
        .context("the test DNS (dnsmasq) did not start")?;
        let store = Store::create(
            &self.opts.dirmail,
            &dir.join("dirmail"),
            &format!(
                "[outbound]\ndns_servers = [\"{}\"]\nport = {}\n[queue]\nretry = [\"1s\"]\n",
                dns.addr(),
                sink.addr.port()
            ),
        )?;
        store.admin(&["add", DOMAIN])?;
        store.admin(&["add", SUBMITTER, "--create-user", &password(SUBMITTER)])?;
        let server = store.serve()?;
        let smtp = Endpoint::plain(server.addr("smtp")?);
        let pid = server.pid();
        let dirmail_cpu = move || Some(procfs::cpu(&[pid]));
        let count = || sink.received();
        let postfix = if self.opts.peers {
            let started = free_ports(1).and_then(|ports| {
                Postfix::start_with(
                    &dir.join("postfix"),
                    ports[0],
                    // No LMTP here: everything goes to the relay host.
                    ports[0],
                    DOMAIN,
                    &[],
                    &format!(
                        "virtual_mailbox_domains =\nrelayhost = [{}]:{}\n",
                        sink.addr.ip(),
                        sink.addr.port()
                    ),
                )
            });
            match started {
                Ok(p) => Some(p),
                Err(e) => {
                    self.rows.queue.peer = Cell::failed(&e);
                    None
                }
            }
        } else {
            self.rows.queue.peer =
                Cell::not_measured("not run (--no-peers, smoke run, or not root)");
            None
        };
        let ops = self.sizes.queue;
        // One message per connection for the warm-up (their logins), no more than the load.
        let warm = CLIENTS.min(ops);
        let mut ours = |n| self.queue_round("dirmail", &smtp, true, n, &count, &dirmail_cpu);
        let tallies = match &postfix {
            Some(p) => {
                let endpoint = Endpoint::plain(p.smtp);
                let master = p.master_pid().unwrap_or(0);
                let postfix_cpu = move || Some(procfs::cpu(&[master]));
                let mut theirs =
                    |n| self.queue_round("Postfix", &endpoint, false, n, &count, &postfix_cpu);
                compare(ops, warm, self.rounds(), &mut [&mut ours, &mut theirs])
            }
            None => compare(ops, warm, self.rounds(), &mut [&mut ours]),
        };
        let mut it = tallies.into_iter();
        if let Some(t) = it.next() {
            self.rows.queue.dirmail = t.cell();
        }
        if let Some(t) = it.next() {
            self.rows.queue.peer = t.cell();
        }
        self.rows.queue.note = Some(format!(
            "Timed from the first connection until smtp-sink ({}) held every message; dirmail \
             finds it through MX records of a dnsmasq, Postfix through `relayhost`.",
            sink.addr
        ));
        Ok(())
    }

    /// One round of the queue row: `ops` messages to `REMOTE` over 16 connections (logged in
    /// with AUTH PLAIN when `login`), then the wait until the sink has them all.
    fn queue_round(
        &self,
        server: &str,
        endpoint: &Endpoint,
        login: bool,
        ops: usize,
        count: &dyn Fn() -> usize,
        cpu: Clock<'_>,
    ) -> Result<Part> {
        let before = count();
        metered(cpu, None, || {
            let spec = Spec {
                label: format!("{server}: queue → smtp-sink"),
                concurrency: CLIENTS,
                ops,
            };
            let message = Arc::clone(&self.message);
            let mut outcome = load::run(&self.rt, &spec, |worker, mut tickets| {
                let endpoint = endpoint.clone();
                let message = Arc::clone(&message);
                async move {
                    let mut client = smtp::Client::connect(&endpoint, Dialect::Smtp).await?;
                    if login {
                        client.login(SUBMITTER, &password(SUBMITTER)).await?;
                    }
                    while let Some(n) = tickets.take() {
                        let started = Instant::now();
                        let to = format!("r{}@{REMOTE}", (worker + n) % CLIENTS);
                        tokio::time::timeout(
                            load::OP_TIMEOUT,
                            client.send(SUBMITTER, &to, &message),
                        )
                        .await
                        .context("a submission took longer than a minute")??;
                        tickets.done(started);
                    }
                    client.quit().await?;
                    Ok(tickets)
                }
            })?;
            outcome.elapsed += wait_for_count(count, before + ops, Duration::from_secs(300))
                .with_context(|| format!("waiting for {server}'s messages to reach smtp-sink"))?;
            Ok(outcome)
        })
    }

    fn peers_not_measured(&mut self, why: &str) {
        for row in self.rows.local_stage() {
            row.peer = Cell::not_measured(why);
        }
    }

    /// One Samba AD DC; dirmail under `authentication ad` and Dovecot with auth_bind side by
    /// side, the same users, the same POP3 login loop, in turn. Samba's CPU per login is
    /// noted for both.
    fn active_directory(&mut self) -> Result<()> {
        eprintln!("bench: starting a Samba AD DC");
        let dc = samba_dc::Dc::start().context("the Samba AD DC did not start")?;
        let samba = dc.samba_pid();
        let samba_cpu = move || samba.map(|p| procfs::cpu(&[p]));
        // StartTLS, as Dovecot connects.
        let section = format!(
            "[directory]\nurl = \"{}\"\nca_file = \"{}\"\nbase_dn = \"{}\"\nnetbios_domain = \"{}\"\n\
             bind_dn = \"{}\"\nbind_password = \"{}\"\nmail_group = \"IMSUsers\"\n",
            dc.ldap_url(),
            dc.ca_file().display(),
            dc.base_dn(),
            dc.netbios_domain(),
            dc.admin_dn(),
            dc.admin_password()
        );
        eprintln!("bench: dirmail with authentication ad, and Dovecot (tuned) with auth_bind");
        let store = Store::create(&self.opts.dirmail, &self.work.join("dirmail-ad"), &section)?;
        store.admin(&["set", "authentication", "ad"])?;
        store.admin(&["add", DOMAIN])?;
        for i in 0..CLIENTS {
            let user = ad_user(i);
            store.admin(&["add", &user, "--create-user", &password(&user)])?;
        }
        let server = store.serve()?;
        let accounts = Accounts::Ldap {
            uri: dc.ldap_url(),
            base_dn: dc.base_dn(),
            ca_file: dc.ca_file().to_owned(),
        };
        let dovecot = Dovecot::start(&self.work.join("dovecot-ad"), Tuning::Tuned, &accounts)?;
        let (dirmail_pid, dovecot_pid) = (server.pid(), dovecot.pid());
        let dirmail_cpu = move || Some(procfs::cpu(&[dirmail_pid]));
        let dovecot_cpu = move || Some(procfs::cpu(&[dovecot_pid]));
        let ours_endpoint = Endpoint::plain(server.addr("pop3")?);
        let theirs_endpoint = Endpoint::plain(dovecot.ports.pop3);
        let mut ours = |n| self.login_round("dirmail", &ours_endpoint, n, &dirmail_cpu, &samba_cpu);
        let mut theirs = |n| {
            self.login_round(
                "Dovecot (tuned)",
                &theirs_endpoint,
                n,
                &dovecot_cpu,
                &samba_cpu,
            )
        };
        let tallies = compare(
            self.sizes.ad,
            CLIENTS,
            self.rounds(),
            &mut [&mut ours, &mut theirs],
        );
        if let (Some(d), Some(p)) = (
            tallies[0].backend_ms_per_op(),
            tallies[1].backend_ms_per_op(),
        ) {
            self.rows.ad.note = Some(format!(
                "Samba's own CPU per login: {d:.2} ms behind dirmail, {p:.2} ms behind Dovecot \
                 (samba -M single: one process, at most one core)."
            ));
        }
        fill(&mut self.rows.ad, tallies);
        let problems = server.logged_problems();
        if !problems.is_empty() {
            self.notes.push(format!(
                "dirmail (ad) logged {} warnings or errors; the first: {}",
                problems.len(),
                problems[0]
            ));
        }
        self.peer_problems(&dovecot);
        Ok(())
    }

    fn standing_notes(&mut self) {
        self.notes.push(
            "Logins cost the same on both sides: dirmail's accounts and Dovecot's passwd-file \
             hold argon2id hashes with the same parameters (m=19456 KiB, t=2, p=1), and neither \
             caches a login. That hash is most of a POP3 session's CPU."
                .into(),
        );
        self.notes.push(
            "Clear-text logins over loopback (dirmail `plaintext_auth = \"loopback\"`, Dovecot \
             `disable_plaintext_auth = no`), so only the pop3s row pays for TLS."
                .into(),
        );
        self.notes.push(format!(
            "Every server of a row runs during the whole row and they take turns ({} rounds \
             each, {} for the SMTP rows, after an unmeasured warm-up), so load from other work \
             on the machine falls on all of them; still, a shared disk's fsync latency can swing \
             tenfold within seconds, so the one-connection SMTP row (one fsync wait after \
             another) is the noisiest. The load generator is one tokio thread on the same cores; its own \
             CPU per operation is in report.json (`client_cpu_ms`). {CLIENTS} clients; each \
             reads its own mailbox ({RETR} messages of {MESSAGE_SIZE} bytes), since POP3 holds \
             a mailbox for one session at a time (R20).",
            self.rounds(),
            self.disk_rounds()
        ));
    }
}

/// Puts a comparison's two tallies (dirmail's, then the peer's, when there is one) in a row.
fn fill(row: &mut Row, tallies: Vec<Tally>) {
    let mut it = tallies.into_iter();
    if let Some(t) = it.next() {
        row.dirmail = t.cell();
    }
    if let Some(t) = it.next() {
        row.peer = t.cell();
    }
}

/// The small mailbox the large one is compared with.
const SMALL: &str = "sink0@example.jp";

fn ad_user(i: usize) -> String {
    format!("ad{}@{DOMAIN}", i % CLIENTS)
}

/// Messages in a Maildir's `new/` and `cur/`.
pub fn count_messages(maildir: &Path) -> usize {
    ["new", "cur"]
        .iter()
        .map(|sub| {
            std::fs::read_dir(maildir.join(sub))
                .map(|entries| entries.count())
                .unwrap_or(0)
        })
        .sum()
}

/// Waits until `count()` reaches `target`; returns how long that took from the call.
fn wait_for_count(count: &dyn Fn() -> usize, target: usize, timeout: Duration) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let now = count();
        if now >= target {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            bail!("{now} of {target} messages arrived within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Descriptors for the idle test: raised as far as allowed; returns the limit in force.
fn process_limit(notes: &mut Vec<String>) -> u64 {
    let limit = crate::process::raise_nofile(32_768);
    if limit < 20_000 {
        notes.push(format!(
            "RLIMIT_NOFILE is {limit} for the bench and its servers."
        ));
    }
    limit
}

fn machine(loadavg_start: [f64; 3]) -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let versions = ["postfix", "dovecot-core", "samba"]
        .iter()
        .filter_map(|p| peers::version(p).map(|v| ((*p).to_owned(), v)))
        .collect();
    Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        kernel,
        cpu,
        loadavg_start,
        loadavg_end: procfs::loadavg(),
        versions,
    }
}

/// The current time in UTC, `YYYY-MM-DD HH:MM:SS UTC`.
fn now_text() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Postfix's `smtp-sink` on `SINK_IP`, writing each message it accepts to a file of its own
/// (`-d`), so that what arrived can be counted; stopped (by its pid) when dropped.
struct Sink {
    child: std::process::Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Sink {
    fn start(dir: &Path) -> Result<Sink> {
        std::fs::create_dir_all(dir)?;
        let port = free_ports(1)?[0];
        let addr = SocketAddr::from((SINK_IP, port));
        let mut command = Command::new(SMTP_SINK);
        if rustix::process::geteuid().is_root() {
            // As root it must drop to a user, who then writes the files.
            let (uid, gid) = crate::process::user_ids("postfix")?;
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
            command.args(["-u", "postfix"]);
        }
        // `-d TEMPLATE`: one file per message, named by the template and a random suffix.
        let child = command
            .arg("-d")
            .arg(format!("{}/m.", dir.display()))
            .arg(addr.to_string())
            .arg("1024")
            .stdout(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("cannot run {SMTP_SINK}"))?;
        let sink = Sink {
            child,
            dir: dir.to_owned(),
            addr,
        };
        if !crate::process::wait_listening(addr, Duration::from_secs(10)) {
            bail!("smtp-sink did not listen on {addr} within 10 s");
        }
        Ok(sink)
    }

    /// Messages written so far.
    fn received(&self) -> usize {
        std::fs::read_dir(&self.dir).map_or(0, |entries| entries.count())
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        crate::process::terminate(&mut self.child, Duration::from_secs(5));
    }
}
