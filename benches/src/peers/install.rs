//! Installing the peers from Debian's packages when they are missing, the way a fresh machine
//! needs it: Postfix preseeded so it configures no system mailer, and no package's service
//! started (a policy-rc.d says no for the duration), since the benchmark runs its own
//! instances on loopback ports.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::process::run;

/// Postfix (with `smtp-source`) and Dovecot with POP3, IMAP, LMTP and LDAP.
pub const PEERS: &[&str] = &[
    "postfix",
    "dovecot-core",
    "dovecot-pop3d",
    "dovecot-imapd",
    "dovecot-lmtpd",
    "dovecot-ldap",
];

/// What the `samba-dc` fixture needs (its `INSTALL_HINT`).
pub const SAMBA: &[&str] = &[
    "samba-ad-dc",
    "samba-ad-provision",
    "winbind",
    "krb5-user",
    "ldap-utils",
];

/// The packages of `wanted` that dpkg does not list as installed.
pub fn missing(wanted: &[&str]) -> Vec<String> {
    wanted
        .iter()
        .filter(|p| {
            let status = Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .stderr(Stdio::null())
                .output();
            !matches!(status, Ok(out) if out.stdout.ends_with(b"install ok installed"))
        })
        .map(|p| (*p).to_owned())
        .collect()
}

/// Installs what is missing of `wanted`; returns what it installed.
pub fn ensure(wanted: &[&str]) -> Result<Vec<String>> {
    let missing = missing(wanted);
    if missing.is_empty() {
        return Ok(missing);
    }
    if !rustix::process::geteuid().is_root() {
        bail!(
            "these packages are missing and only root can install them: {}",
            missing.join(" ")
        );
    }
    eprintln!("bench: installing {}", missing.join(" "));
    if missing.iter().any(|p| p == "postfix") {
        let mut debconf = Command::new("debconf-set-selections")
            .stdin(Stdio::piped())
            .spawn()
            .context("cannot run debconf-set-selections")?;
        debconf
            .stdin
            .take()
            .context("no stdin")?
            .write_all(b"postfix postfix/main_mailer_type select No configuration\n")?;
        if !debconf.wait()?.success() {
            bail!("debconf-set-selections failed");
        }
    }
    let _guard = NoServiceStarts::install()?;
    let install = || {
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    if install().is_err() {
        // A fresh machine may have no package lists yet.
        run(Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
        install()?;
    }
    Ok(missing)
}

const POLICY: &str = "/usr/sbin/policy-rc.d";

/// A `policy-rc.d` that forbids starting services while packages install, removed afterwards
/// unless one was there before (then it is left alone).
struct NoServiceStarts {
    ours: bool,
}

impl NoServiceStarts {
    fn install() -> Result<NoServiceStarts> {
        if Path::new(POLICY).exists() {
            return Ok(NoServiceStarts { ours: false });
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(
            POLICY,
            "#!/bin/sh\n# dirmail bench: no service starts while it installs the peers\nexit 101\n",
        )
        .with_context(|| format!("cannot write {POLICY}"))?;
        std::fs::set_permissions(POLICY, std::fs::Permissions::from_mode(0o755))?;
        Ok(NoServiceStarts { ours: true })
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if self.ours {
            let _ = std::fs::remove_file(POLICY);
        }
    }
}
