//! One running domain controller: starting it, the fault hooks, and cleaning up.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};
use std::{env, fmt};

use ldap3::{LdapConn, LdapConnSettings};
use rustix::process::Signal;
use rustls::ClientConfig;
use serde::Serialize;

use crate::addr::{self, Lease};
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::tls::{self, TlsFiles};
use crate::{procs, provision, run};

/// Where the fixture keeps its templates, locks and DC directories: `$SAMBA_DC_ROOT`, or
/// `samba-dc` in the system's temporary directory.
pub fn root() -> PathBuf {
    env::var_os("SAMBA_DC_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| env::temp_dir().join("samba-dc"))
}

/// How long a DC took to come up (in JSON: milliseconds, `null` for what did not happen).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Timings {
    /// `samba-tool domain provision`, when this start had to run it.
    #[serde(rename = "provision_ms", serialize_with = "opt_ms")]
    pub provision: Option<Duration>,
    /// Copying the template, when one was used.
    #[serde(rename = "copy_ms", serialize_with = "opt_ms")]
    pub copy: Option<Duration>,
    /// From spawning `samba` to the first successful LDAPS bind.
    #[serde(rename = "ready_ms", serialize_with = "ms")]
    pub ready: Duration,
    /// The whole of [`Builder::start`].
    #[serde(rename = "total_ms", serialize_with = "ms")]
    pub total: Duration,
}

fn ms<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

fn opt_ms<S: serde::Serializer>(
    d: &Option<Duration>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match d {
        Some(d) => ms(d, s),
        None => s.serialize_none(),
    }
}

/// Options for [`Dc`]; [`Dc::start`] is `Dc::builder().start()`.
#[derive(Clone, Debug)]
pub struct Builder {
    domain: Domain,
    template: bool,
    ready_timeout: Duration,
    fsync: bool,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder {
            domain: Domain::default(),
            template: true,
            ready_timeout: Duration::from_secs(60),
            fsync: false,
        }
    }
}

impl Builder {
    /// Realm, NetBIOS names and administrator password ([`Domain::default`] otherwise).
    pub fn domain(mut self, domain: Domain) -> Builder {
        self.domain = domain;
        self
    }

    /// Provision this DC's directory itself instead of copying the cached template of its
    /// domain. Slower by the whole provisioning; gives a fresh domain SID.
    pub fn fresh_provision(mut self) -> Builder {
        self.template = false;
        self
    }

    /// Let Samba `fsync` its databases. By default the DC runs with `TDB_NO_FSYNC=1`: its
    /// directory is thrown away, and without the syncs creating a user and a successful bind
    /// (which writes the logon time) take about half as long. A benchmark that wants a DC's
    /// real write latency turns them back on.
    pub fn fsync(mut self) -> Builder {
        self.fsync = true;
        self
    }

    /// How long to wait for the first successful LDAPS bind (60 s unless set).
    pub fn ready_timeout(mut self, timeout: Duration) -> Builder {
        self.ready_timeout = timeout;
        self
    }

    /// Provisions (or copies), configures and starts the DC, and waits until an LDAPS bind as
    /// the administrator succeeds.
    pub fn start(self) -> Result<Dc> {
        let begin = Instant::now();
        self.domain.check()?;
        run::find("samba-tool")?;
        let samba = run::find("samba")?;
        let root = root();
        sweep(&root);
        let lease = addr::lease(&root)?;
        for note in &lease.notes {
            eprintln!("{note}");
        }
        let dir = new_dir_name(&root, lease.addr);
        let parent = root.join("dcs");
        fs::create_dir_all(&parent).map_err(Error::io(format!("create {}", parent.display())))?;
        let watcher = Watcher::spawn(&dir, lease.added_to_lo.then_some(lease.addr))?;
        let mut timings = Timings::default();
        if self.template {
            let (template, took) = provision::template(&root, &self.domain)?;
            timings.provision = took;
            timings.copy = Some(provision::copy(&template, &dir)?);
        } else {
            timings.provision = Some(provision::provision(&dir, &self.domain)?);
        }
        let tls = tls::make(&dir.join("tls"), lease.addr, &self.domain.host_dns_name())?;
        let conf = provision::write_conf(&dir, &self.domain, lease.addr, &lease.services, &tls)?;
        let client = tls::client_config(&tls.ca_der)?;
        let dc = Dc {
            domain: self.domain,
            addr: lease.addr,
            dir,
            conf,
            samba,
            client,
            tls,
            ready_timeout: self.ready_timeout,
            fsync: self.fsync,
            timings: Mutex::new(timings),
            samba_child: Mutex::new(None),
            watcher: Mutex::new(Some(watcher)),
            lease,
        };
        let ready = dc.spawn_and_wait(&mut dc.child())?;
        let mut timings = dc.timings.lock().unwrap_or_else(|e| e.into_inner());
        timings.ready = ready;
        timings.total = begin.elapsed();
        drop(timings);
        Ok(dc)
    }
}

/// A running Samba AD DC on a loopback address of its own. Dropping it stops every process it
/// started and removes its directory (and the address, if one had to be added to `lo`).
///
/// The methods take `&self`, so one DC can be shared between threads (and kept in a static:
/// see [`crate::shared`]).
pub struct Dc {
    domain: Domain,
    addr: Ipv4Addr,
    /// `ROOT/dcs/ADDR-PID-N`: provisioned data, `etc/smb.conf`, `tls/`, `log/`, sockets.
    dir: PathBuf,
    conf: PathBuf,
    samba: PathBuf,
    tls: TlsFiles,
    client: Arc<ClientConfig>,
    ready_timeout: Duration,
    fsync: bool,
    timings: Mutex<Timings>,
    /// The `samba` root process while it runs. Its standard input is a pipe this process holds:
    /// Samba (`-i`) ends itself, and its children, when the pipe closes, that is when this
    /// process dies without dropping the DC.
    samba_child: Mutex<Option<Child>>,
    /// Removes the directory if this process dies without dropping the DC; see [`Watcher`].
    watcher: Mutex<Option<Watcher>>,
    /// Holds the address; dropped last.
    lease: Lease,
}

impl fmt::Debug for Dc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dc")
            .field("url", &self.ldaps_url())
            .field("domain", &self.domain)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// What a client needs to know about a DC; printed by `samba-dc start --json`.
#[derive(Clone, Debug, Serialize)]
pub struct Info {
    /// `ldaps://127.77.0.1`
    pub url: String,
    /// `ldap://127.77.0.1`: StartTLS only; simple binds without TLS are refused.
    pub ldap_url: String,
    pub address: Ipv4Addr,
    pub base_dn: String,
    pub users_dn: String,
    pub realm: String,
    pub dns_domain: String,
    pub netbios: String,
    pub host: String,
    pub admin_dn: String,
    pub admin_upn: String,
    pub admin_password: String,
    /// The CA that signed the DC's certificate (PEM).
    pub ca_file: PathBuf,
    /// The DC's `smb.conf`: give it to `samba-tool … --configfile=`.
    pub conf: PathBuf,
    pub dir: PathBuf,
    /// Samba's own output (`-i` logs to standard output).
    pub log_file: PathBuf,
    /// The Samba services running (some are left out when their ports are taken).
    pub services: Vec<String>,
    /// The `samba` root process, while it runs.
    pub samba_pid: Option<u32>,
    /// The process that owns the DC: when it exits, the DC goes.
    pub controller_pid: u32,
    pub timings: Timings,
}

impl Dc {
    /// A DC of the default [`Domain`], from the cached template.
    pub fn start() -> Result<Dc> {
        Builder::default().start()
    }

    pub fn builder() -> Builder {
        Builder::default()
    }

    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    pub fn address(&self) -> Ipv4Addr {
        self.addr
    }

    /// `ldaps://ADDR`
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://{}", self.addr)
    }

    /// `ldap://ADDR`, for StartTLS.
    pub fn ldap_url(&self) -> String {
        format!("ldap://{}", self.addr)
    }

    pub fn base_dn(&self) -> String {
        self.domain.base_dn()
    }

    /// `CN=Users,BASE`: where users and groups are created unless told otherwise.
    pub fn users_dn(&self) -> String {
        format!("CN=Users,{}", self.base_dn())
    }

    pub fn realm(&self) -> &str {
        &self.domain.realm
    }

    pub fn netbios_domain(&self) -> &str {
        &self.domain.netbios
    }

    pub fn admin_dn(&self) -> String {
        format!("CN=Administrator,{}", self.users_dn())
    }

    /// `Administrator@dirmail.test`
    pub fn admin_upn(&self) -> String {
        format!("Administrator@{}", self.domain.dns_domain())
    }

    pub fn admin_password(&self) -> &str {
        &self.domain.admin_password
    }

    /// The CA certificate (PEM) that verifies the DC.
    pub fn ca_file(&self) -> &Path {
        &self.tls.ca
    }

    /// The DC's `smb.conf`.
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Samba's output: look here when something fails.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("log/samba.out")
    }

    /// The Samba services this DC runs.
    pub fn services(&self) -> &[&'static str] {
        &self.lease.services
    }

    pub fn timings(&self) -> Timings {
        *self.timings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `samba` root process, while it runs.
    pub fn samba_pid(&self) -> Option<u32> {
        self.child().as_ref().map(Child::id)
    }

    pub fn info(&self) -> Info {
        Info {
            url: self.ldaps_url(),
            ldap_url: self.ldap_url(),
            address: self.addr,
            base_dn: self.base_dn(),
            users_dn: self.users_dn(),
            realm: self.domain.realm.clone(),
            dns_domain: self.domain.dns_domain(),
            netbios: self.domain.netbios.clone(),
            host: self.domain.host.clone(),
            admin_dn: self.admin_dn(),
            admin_upn: self.admin_upn(),
            admin_password: self.domain.admin_password.clone(),
            ca_file: self.tls.ca.clone(),
            conf: self.conf.clone(),
            dir: self.dir.clone(),
            log_file: self.log_file(),
            services: self.lease.services.iter().map(|s| s.to_string()).collect(),
            samba_pid: self.samba_pid(),
            controller_pid: std::process::id(),
            timings: self.timings(),
        }
    }

    /// A rustls configuration (ring) that trusts the DC's CA and nothing else.
    pub fn tls_config(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }

    /// ldap3 settings that verify the DC with [`Dc::tls_config`], with a 5 s connect timeout.
    pub fn ldap_settings(&self) -> LdapConnSettings {
        LdapConnSettings::new()
            .set_config(self.client.clone())
            .set_conn_timeout(Duration::from_secs(5))
    }

    /// An LDAPS connection, verified, not bound.
    pub fn connect(&self) -> Result<LdapConn> {
        LdapConn::with_settings(self.ldap_settings(), &self.ldaps_url())
            .map_err(Error::ldap(format!("connect to {}", self.ldaps_url())))
    }

    /// An `ldap://` connection upgraded with StartTLS, verified, not bound.
    pub fn connect_starttls(&self) -> Result<LdapConn> {
        LdapConn::with_settings(self.ldap_settings().set_starttls(true), &self.ldap_url())
            .map_err(Error::ldap(format!("StartTLS to {}", self.ldap_url())))
    }

    /// A simple bind over LDAPS as `who` (a DN, `user@realm` or `NETBIOS\user`). A refusal is
    /// [`Error::Refused`]; its [`Error::ad_subcode`] tells why (see [`crate::bind_errors`]).
    pub fn bind(&self, who: &str, password: &str) -> Result<()> {
        let mut conn = self.connect()?;
        let op = format!("bind as {who}");
        let result = conn
            .with_timeout(Duration::from_secs(10))
            .simple_bind(who, password)
            .map_err(Error::ldap(op.clone()))?;
        let _ = conn.unbind();
        if result.rc == 0 {
            Ok(())
        } else {
            Err(Error::Refused {
                operation: op,
                rc: result.rc,
                text: result.text,
            })
        }
    }

    /// An administrator's connection, for preparing the directory.
    pub fn admin(&self) -> Result<crate::Admin<'_>> {
        crate::Admin::new(self)
    }

    /// Runs `samba-tool ARGS --configfile=CONF` (against the DC's database directly unless the
    /// arguments say `-H ldap://…`; then add `-UAdministrator%PASSWORD`). Its output, or an
    /// error holding all it printed.
    pub fn samba_tool<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Result<String> {
        run::output(
            Command::new(run::find("samba-tool")?)
                .args(args)
                .arg(format!("--configfile={}", self.conf.display())),
        )
    }

    /// Whether `samba` is running (it may be paused).
    pub fn is_running(&self) -> bool {
        self.child()
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Freezes every process of the DC (`SIGSTOP`): connections are accepted by the kernel
    /// but nothing answers. For R24 (the directory cannot be reached).
    pub fn pause(&self) -> Result<()> {
        self.require_running()?;
        procs::signal_all(&self.dir, Signal::STOP);
        Ok(())
    }

    /// Undoes [`Dc::pause`] (`SIGCONT`).
    pub fn resume(&self) -> Result<()> {
        self.require_running()?;
        procs::signal_all(&self.dir, Signal::CONT);
        Ok(())
    }

    /// Stops Samba (`SIGTERM` to each of its processes, `SIGKILL` after 10 s); connections are
    /// refused until [`Dc::restart`]. The data stays. Stopping a stopped DC does nothing.
    pub fn stop(&self) -> Result<()> {
        let mut child = self.child();
        self.stop_locked(&mut child);
        Ok(())
    }

    /// Stops Samba if it runs, starts it again on the same address and data, and waits until
    /// it answers; returns how long that took.
    pub fn restart(&self) -> Result<Duration> {
        let mut child = self.child();
        self.stop_locked(&mut child);
        self.spawn_and_wait(&mut child)
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.samba_child.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn require_running(&self) -> Result<()> {
        if self.is_running() {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "the DC at {} is not running",
                self.addr
            )))
        }
    }

    fn stop_locked(&self, child: &mut Option<Child>) {
        procs::end_all(&self.dir, Duration::from_secs(10));
        if let Some(mut c) = child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn spawn_and_wait(&self, slot: &mut Option<Child>) -> Result<Duration> {
        let log_path = self.log_file();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(Error::io(format!("open {}", log_path.display())))?;
        let log_err = log.try_clone().map_err(Error::io("dup the log file"))?;
        let start = Instant::now();
        let mut command = Command::new(&self.samba);
        command
            .arg("-s")
            .arg(&self.conf)
            .args(["-i", "-M", "single"])
            .current_dir(&self.dir)
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(log_err);
        if !self.fsync {
            command.env("TDB_NO_FSYNC", "1");
        }
        let child = command
            .spawn()
            .map_err(Error::io(format!("start {}", self.samba.display())))?;
        let child = slot.insert(child);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(self.not_ready(start, format!("samba exited: {status}")));
            }
            let last = match self.bind(&self.admin_upn(), &self.domain.admin_password) {
                Ok(()) => return Ok(start.elapsed()),
                Err(e) => e,
            };
            if start.elapsed() > self.ready_timeout {
                return Err(self.not_ready(start, last.to_string()));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn not_ready(&self, start: Instant, reason: String) -> Error {
        let log = self.log_file();
        Error::NotReady {
            waited: start.elapsed(),
            reason,
            tail: tail(&log, 40),
            log,
        }
    }
}

impl Drop for Dc {
    fn drop(&mut self) {
        let mut child = self.child();
        self.stop_locked(&mut child);
        drop(child);
        let _ = fs::remove_dir_all(&self.dir);
        if self.lease.added_to_lo {
            addr::del_from_lo(self.addr);
        }
        if let Some(watcher) = self
            .watcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            watcher.dismiss();
        }
    }
}

/// The last `lines` lines of a log file.
fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::from("(no log)");
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn new_dir_name(root: &Path, addr: Ipv4Addr) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    root.join("dcs")
        .join(format!("{addr}-{}-{n}", std::process::id()))
}

/// Clears what dead owners left behind: for each `ROOT/dcs/ADDR-…` directory whose address
/// lock nobody holds, ends its processes and removes it.
fn sweep(root: &Path) {
    let Ok(entries) = fs::read_dir(root.join("dcs")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(addr) = name
            .to_str()
            .and_then(|n| n.split('-').next()?.parse::<Ipv4Addr>().ok())
        else {
            continue;
        };
        if let Ok(Some(_lock)) = addr::try_lock(root, addr) {
            procs::end_all(&entry.path(), Duration::from_secs(2));
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A `sh` process that outlives its owner just long enough to clean up after it.
///
/// It reads its standard input, a pipe only the owner holds, until end of file, which comes
/// when the owner dismisses it or dies in any way (panic with `abort`, a test harness killing
/// it, `SIGKILL`). Then it ends the processes under the DC's directory (Samba has usually gone
/// already: it ends itself when its own standard input closes), removes the directory, and
/// removes the address from `lo` if one was added. It ignores `SIGINT`, `SIGTERM` and `SIGHUP`,
/// so a Ctrl-C that kills the owner's process group does not kill the cleaner too.
struct Watcher {
    child: Child,
    stdin: Option<ChildStdin>,
}

const WATCHER_SCRIPT: &str = r#"
trap '' INT TERM HUP
cat >/dev/null 2>&1
dir=$1
n=0
while [ -d "$dir" ] && [ $n -lt 100 ]; do
    pids=
    for p in /proc/[0-9]*; do
        case "$(readlink "$p/cwd" 2>/dev/null)" in
            "$dir"|"$dir"/*) pids="$pids ${p#/proc/}" ;;
        esac
    done
    [ -n "$pids" ] || break
    if [ $n -lt 50 ]; then
        kill -CONT $pids 2>/dev/null
        kill -TERM $pids 2>/dev/null
    else
        kill -KILL $pids 2>/dev/null
    fi
    n=$((n + 1))
    sleep 0.1
done
rm -rf "$dir"
[ -z "$2" ] || ip addr del "$2/32" dev lo 2>/dev/null
exit 0
"#;

impl Watcher {
    fn spawn(dir: &Path, added: Option<Ipv4Addr>) -> Result<Watcher> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHER_SCRIPT)
            .arg("samba-dc-watcher")
            .arg(dir)
            .arg(added.map(|a| a.to_string()).unwrap_or_default())
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(Error::io("start the clean-up watcher (sh)"))?;
        let stdin = child.stdin.take();
        Ok(Watcher { child, stdin })
    }

    /// The owner has cleaned up: let the watcher go (it finds nothing left to do).
    fn dismiss(mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
