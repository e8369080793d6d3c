//! A private Dovecot instance (fixtures/peers/dovecot): POP3, IMAP, their implicit-TLS ports
//! and LMTP on loopback, run in the foreground as our child, as shipped or tuned, with accounts
//! from a passwd-file or from Active Directory (auth_bind).

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::render;
use crate::process::{free_ports, tail, terminate, wait_listening};

const DOVECOT_CONF: &str = include_str!("../../../fixtures/peers/dovecot/dovecot.conf");
const TUNED_CONF: &str = include_str!("../../../fixtures/peers/dovecot/tuned.conf");
const PASSDB_FILE: &str = include_str!("../../../fixtures/peers/dovecot/passdb-file.conf");
const PASSDB_LDAP: &str = include_str!("../../../fixtures/peers/dovecot/passdb-ldap.conf");
const LDAP_CONF: &str = include_str!("../../../fixtures/peers/dovecot/dovecot-ldap.conf.ext");

/// The uid Dovecot's mail processes run as (`nobody`): it owns the mail directory.
const MAIL_UID: u32 = 65534;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tuning {
    /// As Debian ships it: a process per connection, and another after login.
    Default,
    /// PEERS.md's throughput settings (tuned.conf): the anchor of the comparison.
    Tuned,
}

impl Tuning {
    pub fn label(self) -> &'static str {
        match self {
            Tuning::Default => "Dovecot (default)",
            Tuning::Tuned => "Dovecot (tuned)",
        }
    }
}

/// Where the accounts come from.
#[derive(Debug, Clone)]
pub enum Accounts {
    /// (address, password) pairs, written to a passwd-file with argon2id hashes made exactly
    /// as dirmail makes its own.
    File(Vec<(String, String)>),
    /// Binds to an Active Directory DC as the user (auth_bind), over StartTLS.
    Ldap {
        uri: String,
        base_dn: String,
        ca_file: PathBuf,
    },
}

/// The listeners of a running instance.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub pop3: SocketAddr,
    pub pop3s: SocketAddr,
    pub imap: SocketAddr,
    pub imaps: SocketAddr,
    pub lmtp: SocketAddr,
}

/// A running Dovecot, stopped when dropped.
#[derive(Debug)]
pub struct Dovecot {
    child: Child,
    dir: PathBuf,
    pub ports: Ports,
    pub tuning: Tuning,
}

impl Dovecot {
    /// Writes the instance under `dir` (its mail under `dir/mail`, kept between instances
    /// started on the same `dir`) and starts it in the foreground.
    pub fn start(dir: &Path, tuning: Tuning, accounts: &Accounts) -> Result<Dovecot> {
        for sub in ["run", "state", "log", "tls", "mail"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        // The mail processes run as nobody and must reach their Maildirs.
        std::os::unix::fs::chown(dir.join("mail"), Some(MAIL_UID), Some(MAIL_UID))?;
        for path in [dir, &dir.join("mail")] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
        }
        write_certificate(&dir.join("tls"))?;
        let p = free_ports(5)?;
        let ports = Ports {
            pop3: SocketAddr::from(([127, 0, 0, 1], p[0])),
            pop3s: SocketAddr::from(([127, 0, 0, 1], p[1])),
            imap: SocketAddr::from(([127, 0, 0, 1], p[2])),
            imaps: SocketAddr::from(([127, 0, 0, 1], p[3])),
            lmtp: SocketAddr::from(([127, 0, 0, 1], p[4])),
        };
        let dir_text = dir.display().to_string();
        let (passdb, environment) = match accounts {
            Accounts::File(users) => {
                write_users(&dir.join("users"), dir, users)?;
                (render(PASSDB_FILE, &[("DIR", &dir_text)]), String::new())
            }
            Accounts::Ldap {
                uri,
                base_dn,
                ca_file,
            } => {
                let ldap = render(
                    LDAP_CONF,
                    &[("LDAP_URI", uri.as_str()), ("BASE_DN", base_dn.as_str())],
                );
                std::fs::write(dir.join("dovecot-ldap.conf.ext"), ldap)?;
                // OpenLDAP's client reads its CA from the environment; Dovecot passes on only
                // what import_environment names (and needs a full start to take it).
                let environment = format!(
                    "import_environment = TZ LDAPTLS_CACERT={} LDAPTLS_REQCERT=demand",
                    ca_file.display()
                );
                (render(PASSDB_LDAP, &[("DIR", &dir_text)]), environment)
            }
        };
        let tuning_text = match tuning {
            Tuning::Default => "",
            Tuning::Tuned => TUNED_CONF,
        };
        let id = format!("{}-{}", std::process::id(), p[0]);
        let conf = render(
            DOVECOT_CONF,
            &[
                ("DIR", &dir_text),
                ("ID", &id),
                ("POP3_PORT", &ports.pop3.port().to_string()),
                ("POP3S_PORT", &ports.pop3s.port().to_string()),
                ("IMAP_PORT", &ports.imap.port().to_string()),
                ("IMAPS_PORT", &ports.imaps.port().to_string()),
                ("LMTP_PORT", &ports.lmtp.port().to_string()),
                ("ENVIRONMENT", &environment),
                ("PASSDB", &passdb),
                ("TUNING", tuning_text),
            ],
        );
        let conf_path = dir.join("dovecot.conf");
        std::fs::write(&conf_path, conf)?;
        let out = std::fs::File::create(dir.join("log/stdout"))?;
        let child = Command::new("dovecot")
            .arg("-F")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("cannot start dovecot")?;
        crate::cleanup::add_pid(child.id());
        let mut dovecot = Dovecot {
            child,
            dir: dir.to_owned(),
            ports,
            tuning,
        };
        for addr in [ports.pop3, ports.lmtp] {
            if !wait_listening(addr, Duration::from_secs(15)) {
                let exited = dovecot.child.try_wait().ok().flatten();
                bail!(
                    "Dovecot did not listen on {addr} within 15 s ({}); it says:\n{}\n{}",
                    exited.map_or("still running".to_owned(), |s| s.to_string()),
                    tail(&dir.join("log/stdout"), 10),
                    tail(&dovecot.log(), 10)
                );
            }
        }
        Ok(dovecot)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("log/dovecot.log")
    }

    /// Errors and warnings Dovecot logged (a failed login would show here, with its penalty).
    pub fn logged_problems(&self) -> Vec<String> {
        std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("Error:") || l.contains("Warning:") || l.contains("Fatal:"))
            .map(str::to_owned)
            .collect()
    }

    /// The Maildir of `address` (what `mail_location` says).
    pub fn maildir(&self, address: &str) -> PathBuf {
        let (name, domain) = address.split_once('@').unwrap_or((address, ""));
        self.dir
            .join("mail")
            .join(domain)
            .join(name)
            .join("Maildir")
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(15));
        crate::cleanup::remove_pid(self.child.id());
    }
}

/// A passwd-file line per account: `{ARGON2ID}` with the PHC string dirmail's own hashing
/// (argon2 crate defaults: m=19456 KiB, t=2, p=1) would make, then uid, gid and home.
fn write_users(path: &Path, dir: &Path, users: &[(String, String)]) -> Result<()> {
    use argon2::password_hash::rand_core::OsRng;
    use argon2::password_hash::{PasswordHasher, SaltString};
    let mut text = String::new();
    for (address, password) in users {
        let salt = SaltString::generate(&mut OsRng);
        let hash = argon2::Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
        let (name, domain) = address.split_once('@').unwrap_or((address, ""));
        let home = dir.join("mail").join(domain).join(name);
        text.push_str(&format!(
            "{address}:{{ARGON2ID}}{hash}:{MAIL_UID}:{MAIL_UID}::{}::\n",
            home.display()
        ));
    }
    std::fs::write(path, text)?;
    // Dovecot's auth process runs as its own user and must read it.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// A self-signed ECDSA P-256 certificate, the kind dirmail makes for itself, so both servers'
/// TLS handshakes do the same work.
fn write_certificate(dir: &Path) -> Result<()> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec!["peer.example.jp".to_owned()])?;
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
    let cert = params.self_signed(&key)?;
    std::fs::write(dir.join("cert.pem"), cert.pem())?;
    std::fs::write(dir.join("key.pem"), key.serialize_pem())?;
    Ok(())
}
