//! A real Samba Active Directory domain controller for tests, conformance runs and
//! benchmarks — Debian's `samba-ad-dc`, never a mock — on a loopback address of its own.
//!
//! ```no_run
//! use samba_dc::{Dc, GroupKind, GroupScope, NewUser};
//!
//! let dc = Dc::start()?; // DIRMAIL.TEST at 127.77.0.1, or the next free address
//! let mut admin = dc.admin()?; // LDAPS as Administrator, verified against the fixture's CA
//! let alice = admin.create_user(&NewUser::new("alice", "Al1ce-Passw0rd").upn("alice@example.jp"))?;
//! let mail = admin.create_group("IMSUsers", GroupScope::DomainLocal, GroupKind::Security)?;
//! admin.add_members(&mail, &[&alice])?;
//! dc.bind("alice@example.jp", "Al1ce-Passw0rd")?;
//! // dc.ldaps_url(), dc.ca_file(), dc.base_dn(), dc.netbios_domain() go into dirmail.toml.
//! # Ok::<(), samba_dc::Error>(())
//! ```
//!
//! # What a DC is
//!
//! - A directory `ROOT/dcs/ADDR-PID-N` (`ROOT` is `$SAMBA_DC_ROOT` or `/tmp/samba-dc`) holding
//!   the provisioned domain, its own `etc/smb.conf` (every path of Samba's points inside the
//!   directory: private, state, cache, lock, pid, ncalrpc and winbindd socket directories, the
//!   log), a CA and a server certificate made with rcgen whose SANs are the address and
//!   `dc1.<domain>` (`tls/`), and Samba's output (`log/samba.out`).
//! - An address of its own, the first free one of 127.77.0.1, 127.77.0.5, … (AD's ports are
//!   fixed, so DCs side by side need different addresses; nothing is added to `lo`, see
//!   `addr.rs`). Ports taken on every address by a system Samba make the fixture leave out the
//!   services that need them (it prints which); only LDAP's are indispensable.
//! - `samba -s CONF -i -M single`, started in that directory, ready once an LDAPS simple bind
//!   as `Administrator` succeeds (verified with rustls, not skipped).
//!
//! Provisioning costs about 5 s of CPU, so each [`Domain`] is provisioned once per machine
//! into `ROOT/templates/` and copied for each DC ([`Builder::fresh_provision`] skips the
//! cache). Dropping a [`Dc`] ends every process it started (`smbd` and `winbindd` leave
//! Samba's process group: they are found by their working directory) and removes the
//! directory. If the owning process dies without dropping it, Samba ends itself (its standard
//! input closes) and a small watcher process removes the directory; the next start also
//! sweeps anything left.
//!
//! # Faults (R24)
//!
//! [`Dc::pause`] / [`Dc::resume`] (`SIGSTOP` / `SIGCONT`: connections hang), [`Dc::stop`] /
//! [`Dc::restart`] (connections are refused, then the same data comes back).
//!
//! # Preparing the directory
//!
//! [`Admin`] (from [`Dc::admin`]) creates users (enabled or not, UPN, `sAMAccountName`,
//! must-change) and groups (domain-local, global, universal), nests them, disables users,
//! expires passwords and accounts, locks accounts out by failing binds, and sets the password
//! and lockout policy. [`Dc::samba_tool`] runs any other `samba-tool` command against the DC.
//! What Samba answers to refused binds, sub-code by sub-code, is in [`bind_errors`].
//!
//! # From another process: `samba-dc start --json`
//!
//! Tests in other crates and the conformance runner need not link this crate:
//!
//! ```text
//! $ cargo run -q -p samba-dc -- start --json [--realm R --netbios N --admin-password P] [--fresh]
//! {"url":"ldaps://127.77.0.1","ldap_url":"ldap://127.77.0.1","address":"127.77.0.1",
//!  "base_dn":"DC=dirmail,DC=test","users_dn":"CN=Users,DC=dirmail,DC=test",
//!  "realm":"DIRMAIL.TEST","dns_domain":"dirmail.test","netbios":"DIRMAIL","host":"DC1",
//!  "admin_dn":"CN=Administrator,CN=Users,DC=dirmail,DC=test",
//!  "admin_upn":"Administrator@dirmail.test","admin_password":"Dirmail-Adm1n!",
//!  "ca_file":"/tmp/samba-dc/dcs/127.77.0.1-4242-0/tls/ca.pem",
//!  "conf":"/tmp/samba-dc/dcs/127.77.0.1-4242-0/etc/smb.conf", "dir":"…", "log_file":"…",
//!  "services":["ldap","cldap","kdc","rpc","winbindd","s3fs"],
//!  "samba_pid":4250,"controller_pid":4242,
//!  "timings":{"provision_ms":null,"copy_ms":96,"ready_ms":880,"total_ms":1020}}
//! ```
//!
//! It prints that one line once the DC answers, then keeps the DC up until its standard input
//! closes or it gets `SIGTERM`/`SIGINT`/`SIGHUP` (`--until-signal` ignores standard input, for
//! shells whose input is `/dev/null`), then cleans up and exits 0. So: spawn it with a piped
//! standard input, read one line, and close the pipe (or kill it) when done. Prepare the
//! directory with `samba-tool … --configfile=<conf>` (directly on the DC's database, or
//! `-H ldap://<address> -UAdministrator%<password>`, which Samba signs and seals; Samba 4.17's
//! `samba-tool` cannot use `ldaps://` here: its TLS client verifies no IP address, and it then
//! asks for SASL sealing inside TLS, which the server refuses) or with `ldapmodify`
//! (`LDAPTLS_CACERT=<ca_file>`).
//!
//! # Requirements
//!
//! Root (Samba's DC runs as root), and the Debian packages of [`error::INSTALL_HINT`]; without
//! them [`Dc::start`] fails with [`Error::NotInstalled`] saying what to install.

mod addr;
mod admin;
pub mod bind_errors;
mod dc;
mod domain;
pub mod error;
mod procs;
mod provision;
mod run;
mod tls;

use std::sync::OnceLock;

pub use admin::{Admin, Entry, GroupKind, GroupScope, NewUser, PasswordPolicy};
pub use dc::{Builder, Dc, Info, Timings, root};
pub use domain::Domain;
pub use error::{Error, Result};

/// One DC of the default domain for the whole process, started on first use: for tests that
/// only read, or that create objects of their own names. Tests that pause, stop or change the
/// domain's policy should start their own [`Dc`]. It is never dropped; when the process exits
/// Samba ends itself and the watcher removes its directory.
pub fn shared() -> Result<&'static Dc> {
    static SHARED: OnceLock<std::result::Result<Dc, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| Dc::start().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Error::Invalid(format!("the shared DC did not start: {e}")))
}
