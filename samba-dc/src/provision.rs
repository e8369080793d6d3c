//! Provisioning a domain, the template cache, and the `smb.conf` of each DC.
//!
//! `samba-tool domain provision` costs about 5 s of CPU (10–13 s on a busy 2-core machine),
//! while copying its 33 MB result takes a tenth of a second. A provisioned directory holds no
//! address and only one absolute path, in `etc/smb.conf`, which the fixture writes anew for
//! every DC anyway. So the fixture provisions each [`Domain`] once per machine into
//! `ROOT/templates/KEY` (the key covers the names, a hash of the password, Samba's version and
//! this crate's layout version) and copies it for each DC. Creation is serialized by a lock
//! file and published by a rename, so concurrent test binaries provision once between them.
//! Copies of one template share the domain SID and the host name; they are still independent
//! DCs that know nothing of each other.

use std::collections::hash_map::DefaultHasher;
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::run;
use crate::tls::TlsFiles;

/// Bumped when what a template holds changes.
const LAYOUT: u32 = 1;

/// `samba-tool domain provision` into `target` (created if missing).
pub(crate) fn provision(target: &Path, domain: &Domain) -> Result<Duration> {
    let start = Instant::now();
    fs::create_dir_all(target).map_err(Error::io(format!("create {}", target.display())))?;
    let out = run::output(
        Command::new(run::find("samba-tool")?)
            .args(["domain", "provision"])
            // Not /etc/samba/smb.conf: its shares and settings would be copied in.
            .arg("--configfile=/dev/null")
            .arg(format!("--targetdir={}", target.display()))
            .arg(format!("--realm={}", domain.realm))
            .arg(format!("--domain={}", domain.netbios))
            .arg(format!("--host-name={}", domain.host))
            .arg(format!("--adminpass={}", domain.admin_password))
            .args(["--server-role=dc", "--dns-backend=NONE"])
            // Provisioning writes tens of thousands of records; nothing is lost without fsync
            // but time.
            .env("TDB_NO_FSYNC", "1"),
    );
    if let Err(Error::Command { output, .. }) = &out
        && output.contains("samba-ad-provision")
    {
        return Err(Error::NotInstalled {
            program: "samba-ad-provision's schema files",
        });
    }
    out?;
    Ok(start.elapsed())
}

/// The template directory for `domain`, provisioned now if it is not there yet (then with how
/// long that took).
pub(crate) fn template(root: &Path, domain: &Domain) -> Result<(PathBuf, Option<Duration>)> {
    let dir = root.join("templates");
    fs::create_dir_all(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
    let key = template_key(domain)?;
    let path = dir.join(&key);
    let lock_path = dir.join(format!("{key}.lock"));
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(Error::io(format!("open {}", lock_path.display())))?;
    lock.lock()
        .map_err(Error::io(format!("lock {}", lock_path.display())))?;
    if path.join(".complete").is_file() {
        return Ok((path, None));
    }
    let partial = dir.join(format!("{key}.partial"));
    let _ = fs::remove_dir_all(&partial);
    let _ = fs::remove_dir_all(&path);
    let took = provision(&partial, domain)?;
    fs::write(partial.join(".complete"), b"")
        .map_err(Error::io(format!("write {}", partial.display())))?;
    fs::rename(&partial, &path).map_err(Error::io(format!("rename {}", partial.display())))?;
    Ok((path, Some(took)))
}

fn template_key(domain: &Domain) -> Result<String> {
    let mut hasher = DefaultHasher::new();
    domain.admin_password.hash(&mut hasher);
    Ok(format!(
        "{}-{}-{}-{:016x}-samba{}-v{LAYOUT}",
        domain.realm,
        domain.netbios,
        domain.host,
        hasher.finish(),
        samba_version()?
    ))
}

/// `4.17.12-Debian`, from `samba -V`; asked once per process.
fn samba_version() -> Result<String> {
    static VERSION: OnceLock<String> = OnceLock::new();
    if let Some(v) = VERSION.get() {
        return Ok(v.clone());
    }
    let out = run::output(Command::new(run::find("samba")?).arg("-V"))?;
    let version: String = out
        .trim()
        .trim_start_matches("Version ")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || ".-+".contains(*c))
        .collect();
    Ok(VERSION.get_or_init(|| version).clone())
}

/// Copies `template` into `target` (which must not exist yet), keeping modes and extended
/// attributes (sysvol's ACLs).
pub(crate) fn copy(template: &Path, target: &Path) -> Result<Duration> {
    let start = Instant::now();
    run::output(
        Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(template)
            .arg(target),
    )?;
    let _ = fs::remove_file(target.join(".complete"));
    Ok(start.elapsed())
}

/// Writes `DIR/etc/smb.conf` for a DC at `addr` and creates the directories it names.
pub(crate) fn write_conf(
    dir: &Path,
    domain: &Domain,
    addr: Ipv4Addr,
    services: &[&str],
    tls: &TlsFiles,
) -> Result<PathBuf> {
    let d = dir.display();
    for sub in ["etc", "run", "log", "cache", "state", "private", "bind-dns"] {
        let path = dir.join(sub);
        fs::create_dir_all(&path).map_err(Error::io(format!("create {}", path.display())))?;
    }
    let mut conf = String::from(
        "# Written by the samba-dc test fixture for one DC; removed with it.\n[global]\n",
    );
    let mut line = |key: &str, value: &dyn std::fmt::Display| {
        let _ = writeln!(conf, "\t{key} = {value}");
    };
    line("netbios name", &domain.host);
    line("realm", &domain.realm);
    line("workgroup", &domain.netbios);
    line("server role", &"active directory domain controller");
    line("server services", &services.join(", "));
    // /30, not /32: see addr.rs.
    line("interfaces", &format!("{addr}/30"));
    line("bind interfaces only", &"yes");
    // Every path inside the directory, so that DCs never share a file or a socket.
    line("private dir", &format!("{d}/private"));
    line("binddns dir", &format!("{d}/bind-dns"));
    line("state directory", &format!("{d}/state"));
    line("cache directory", &format!("{d}/cache"));
    line("lock directory", &d);
    line("pid directory", &format!("{d}/run"));
    line("ncalrpc dir", &format!("{d}/run/ncalrpc"));
    line("winbindd socket directory", &format!("{d}/run/winbindd"));
    line("ntp signd socket directory", &format!("{d}/run/ntp_signd"));
    line("usershare path", &format!("{d}/state/usershares"));
    line("smb passwd file", &format!("{d}/private/smbpasswd"));
    line("log file", &format!("{d}/log/samba.log"));
    line("max log size", &0);
    line("panic action", &"");
    line("load printers", &"no");
    line("printcap name", &"/dev/null");
    line("disable spoolss", &"yes");
    line("tls enabled", &"yes");
    line("tls keyfile", &tls.key.display());
    line("tls certfile", &tls.cert.display());
    line("tls cafile", &tls.ca.display());
    let dns = domain.dns_domain();
    let _ = write!(
        conf,
        "\n[sysvol]\n\tpath = {d}/state/sysvol\n\tread only = no\n\
         \n[netlogon]\n\tpath = {d}/state/sysvol/{dns}/scripts\n\tread only = no\n"
    );
    let path = dir.join("etc/smb.conf");
    fs::write(&path, conf).map_err(Error::io(format!("write {}", path.display())))?;
    Ok(path)
}
