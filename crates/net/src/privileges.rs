//! Running as a service user: `[server] user` (and `group`). Started as root, the server binds
//! its listeners (the standard ports below 1024 need root), then takes the user's groups, gid
//! and uid, checks that root cannot be had back, and only then opens the store and reads the
//! TLS key: whatever it creates belongs to the user, and whatever a reload will read again is
//! read at start with the same rights, so a start that works means reloads that work.
//!
//! glibc's `setuid`/`setgid`/`setgroups` (through nix) change every thread of the process,
//! which matters here: the runtime's threads already run when the listeners are bound.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use nix::unistd::{AccessFlags, Gid, Group, Uid, User};

use dirmail_config::Config;

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("server.user: there is no user {0:?} on this system (add it: useradd --system {0})")]
    NoSuchUser(String),
    #[error("server.group: there is no group {0:?} on this system")]
    NoSuchGroup(String),
    #[error("cannot look up {what} {name:?}: {source}")]
    Lookup {
        what: &'static str,
        name: String,
        source: nix::Error,
    },
    #[error(
        "server.user is {name:?}, but the server runs as uid {uid}: only root can become another user; start it as root or as {name}"
    )]
    NotRoot { name: String, uid: u32 },
    #[error("cannot become {name} ({step}): {source}")]
    Drop {
        name: String,
        step: &'static str,
        source: nix::Error,
    },
    #[error("still able to become root after dropping to {0}: refusing to run")]
    RootRegained(String),
    #[error(
        "{path} is not readable by {user}, who reads it again on a reload (SIGHUP): {source}; let it: chown root:{user} and chmod 0640 it"
    )]
    Config {
        user: String,
        path: PathBuf,
        source: nix::Error,
    },
    #[error(
        "the store is not usable by {user}: {path}: {source}; give it to that user: chown -R {user}: {data_dir}"
    )]
    Store {
        user: String,
        path: PathBuf,
        data_dir: PathBuf,
        source: nix::Error,
    },
}

/// The account `[server] user` and `group` name, looked up.
#[derive(Debug, Clone)]
pub struct ServiceUser {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
}

/// Looks `[server] user` and `group` up; `None` when no user is set. Done before binding, so a
/// misspelt name fails before anything is open.
pub fn service_user(config: &Config) -> Result<Option<ServiceUser>, PrivilegeError> {
    let Some(name) = &config.server.user else {
        return Ok(None);
    };
    let user = User::from_name(name)
        .map_err(|source| PrivilegeError::Lookup {
            what: "user",
            name: name.clone(),
            source,
        })?
        .ok_or_else(|| PrivilegeError::NoSuchUser(name.clone()))?;
    let gid = match &config.server.group {
        None => user.gid,
        Some(group) => {
            Group::from_name(group)
                .map_err(|source| PrivilegeError::Lookup {
                    what: "group",
                    name: group.clone(),
                    source,
                })?
                .ok_or_else(|| PrivilegeError::NoSuchGroup(group.clone()))?
                .gid
        }
    };
    Ok(Some(ServiceUser {
        name: name.clone(),
        uid: user.uid,
        gid,
    }))
}

/// Becomes `user` (when root), or checks that the server already runs as it. Without a user,
/// running as root is allowed but warned about.
pub fn become_user(user: Option<&ServiceUser>) -> Result<(), PrivilegeError> {
    let euid = Uid::effective();
    let Some(user) = user else {
        if euid.is_root() {
            tracing::warn!(
                "running as root: a service should drop its privileges once the ports are bound; set [server] user"
            );
        }
        return Ok(());
    };
    if !euid.is_root() {
        if euid == user.uid {
            return Ok(());
        }
        return Err(PrivilegeError::NotRoot {
            name: user.name.clone(),
            uid: euid.as_raw(),
        });
    }
    let fail = |step: &'static str| {
        move |source| PrivilegeError::Drop {
            name: user.name.clone(),
            step,
            source,
        }
    };
    let c_name = CString::new(user.name.as_bytes()).map_err(|_| PrivilegeError::Drop {
        name: user.name.clone(),
        step: "the name",
        source: nix::Error::EINVAL,
    })?;
    // Groups first: once the uid is not root, they can no longer be changed.
    nix::unistd::initgroups(&c_name, user.gid).map_err(fail("supplementary groups"))?;
    nix::unistd::setgid(user.gid).map_err(fail("group id"))?;
    nix::unistd::setuid(user.uid).map_err(fail("user id"))?;
    // setuid as root sets the real, effective and saved ids alike; make sure of it.
    let regained = nix::unistd::setuid(Uid::from_raw(0)).is_ok()
        || Uid::current().is_root()
        || Uid::effective().is_root()
        || Gid::current() != user.gid
        || Gid::effective() != user.gid;
    if regained {
        return Err(PrivilegeError::RootRegained(user.name.clone()));
    }
    tracing::info!(
        user = %user.name,
        uid = user.uid.as_raw(),
        gid = user.gid.as_raw(),
        "listeners bound; running as {}",
        user.name
    );
    Ok(())
}

/// Checks, as the user the server now runs as, that the configuration file can be read again
/// (a reload does), and that the store can be used: its directories entered and written, its
/// database written. A Maildir deep inside is not walked; these are the places the server
/// writes to first, and what a root-owned store fails on at once.
pub fn check_access(config: &Config, user: &ServiceUser) -> Result<(), PrivilegeError> {
    if let dirmail_config::Source::File(path) = &config.source {
        nix::unistd::access(path, AccessFlags::R_OK).map_err(|source| PrivilegeError::Config {
            user: user.name.clone(),
            path: path.clone(),
            source,
        })?;
    }
    let data_dir = &config.store.data_dir;
    let mailroot = &config.store.mailroot;
    let db = data_dir.join(dirmail_store::DB_FILE);
    let mut checks: Vec<(PathBuf, AccessFlags)> = vec![
        (data_dir.clone(), AccessFlags::W_OK | AccessFlags::X_OK),
        (mailroot.clone(), AccessFlags::W_OK | AccessFlags::X_OK),
        (
            mailroot.join(".spool"),
            AccessFlags::W_OK | AccessFlags::X_OK,
        ),
        (
            mailroot.join(".queue"),
            AccessFlags::W_OK | AccessFlags::X_OK,
        ),
        (data_dir.join("tls"), AccessFlags::R_OK | AccessFlags::X_OK),
        (db.clone(), AccessFlags::R_OK | AccessFlags::W_OK),
    ];
    for suffix in ["-wal", "-shm"] {
        let mut name = db.clone().into_os_string();
        name.push(suffix);
        checks.push((PathBuf::from(name), AccessFlags::R_OK | AccessFlags::W_OK));
    }
    for (path, access) in checks {
        // What is not there yet, the user will make: its nearest existing directory must let it.
        let (target, access) = if path.exists() {
            (path, access)
        } else {
            (
                existing_parent(&path),
                AccessFlags::W_OK | AccessFlags::X_OK,
            )
        };
        nix::unistd::access(&target, access).map_err(|source| PrivilegeError::Store {
            user: user.name.clone(),
            path: target.clone(),
            data_dir: data_dir.clone(),
            source,
        })?;
    }
    Ok(())
}

/// The nearest ancestor of `path` that exists.
fn existing_parent(path: &Path) -> PathBuf {
    path.ancestors()
        .find(|p| !p.as_os_str().is_empty() && p.exists())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}
