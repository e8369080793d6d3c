//! The store: one SQLite database of administrative state plus the mail root of Maildirs.
//!
//! Every rule check runs in the same `BEGIN IMMEDIATE` transaction as the change it guards, so
//! two administrators racing cannot both slip past a rule (R2, R3, R9).

pub mod aliases;
pub mod dkim_keys;
pub mod folders;
pub mod maildir;
pub mod queue;
pub mod schema;
pub mod secrets;
pub mod spool;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use dirmail_config::StoreConfig;
use dirmail_proto::names::{Address, DomainName, MailboxName};
/// The numbered rules, reached through the store as before the rules had a crate of their own.
pub use dirmail_rules as rules;
pub use dirmail_rules::{AuthMethod, Layout};

pub const DB_FILE: &str = "dirmail.db";

/// An open store. Cheap to open; the administration tool opens one per command.
pub struct Store {
    conn: Connection,
    pub mailroot: PathBuf,
    pub data_dir: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("data_dir", &self.data_dir)
            .field("mailroot", &self.mailroot)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

pub fn io_context(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

/// Creates `dir` (and parents) and makes it private to the server's user (0700). A directory
/// others may write to (`/tmp`, say, as a mistaken `mailroot`) is refused, not made private:
/// that would lock every other user of the machine out of it.
pub fn private_dir(dir: &Path) -> Result<(), StoreError> {
    if let Ok(meta) = fs::metadata(dir)
        && meta.is_dir()
        && meta.permissions().mode() & 0o1002 != 0
    {
        return Err(StoreError::Io {
            context: format!(
                "{} is shared (others may write to it, mode {:o}); give the store a directory of its own, or make this one private (chmod 700) if it is",
                dir.display(),
                meta.permissions().mode() & 0o7777
            ),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        });
    }
    fs::create_dir_all(dir).map_err(io_context(format!("cannot create {}", dir.display())))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_context(format!(
        "cannot set permissions on {}",
        dir.display()
    )))
}

impl Store {
    /// Opens the store, creating it on first use (R1: a new store starts `local`, `per-domain`).
    pub fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        private_dir(&config.data_dir)?;
        private_dir(&config.mailroot)?;
        let db_path = config.data_dir.join(DB_FILE);
        let mut conn = Connection::open(&db_path)?;
        // SQLite gives the -wal and -shm files the database file's mode, so 0600 here covers all.
        fs::set_permissions(&db_path, fs::Permissions::from_mode(0o600)).map_err(io_context(
            format!("cannot set permissions on {}", db_path.display()),
        ))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
        Ok(Store {
            conn,
            mailroot: config.mailroot.clone(),
            data_dir: config.data_dir.clone(),
        })
    }

    /// Runs `f` in a write transaction taken at once (`BEGIN IMMEDIATE`): the checks inside see
    /// the state their change will be applied to. Commits when `f` returns `Ok`.
    pub fn write<T, E>(&mut self, f: impl FnOnce(&Transaction<'_>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        let value = f(&tx)?;
        tx.commit().map_err(StoreError::from)?;
        Ok(value)
    }

    /// Read-only access for queries that guard nothing.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let applied: usize = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (index, sql) in schema::MIGRATIONS.iter().enumerate().skip(applied) {
        tx.execute_batch(sql)?;
        if index == 0 {
            let (method, layout) = dirmail_rules::r1_initial_settings();
            set_setting(&tx, "authentication", method.as_str())?;
            set_setting(&tx, "mailbox-layout", layout.as_str())?;
            set_setting(&tx, "sparequired", "0")?;
        }
        tx.pragma_update(None, "user_version", index + 1)?;
    }
    tx.commit()?;
    Ok(())
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

// ---- settings --------------------------------------------------------------------------

pub fn setting(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .optional()?)
}

pub fn set_setting(conn: &Connection, key: &str, value: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO settings(key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// The login cache's generation: a counter that every change able to make a remembered login
/// wrong increases (triggers of schema migration 5, and [`credentials_changed`]). A server
/// compares it with the one its cache was filled under before answering from the cache.
pub fn credential_generation(conn: &Connection) -> Result<u64, StoreError> {
    let value: i64 = conn.query_row(
        "SELECT value FROM credential_generation WHERE only = 1",
        [],
        |r| r.get(0),
    )?;
    // Never negative: it starts at 0 and only grows.
    Ok(value.unsigned_abs())
}

/// Bumps the login cache's generation for a change the database cannot see itself: a
/// `passwd-file` record or an Active Directory password. Call it in the transaction that
/// commits after the change, so a server that reads the new generation sees the new state.
pub fn credentials_changed(conn: &Connection) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE credential_generation SET value = value + 1 WHERE only = 1",
        [],
    )?;
    Ok(())
}

pub fn auth_method(conn: &Connection) -> Result<AuthMethod, StoreError> {
    let value = setting(conn, "authentication")?.unwrap_or_default();
    Ok(AuthMethod::parse(&value).unwrap_or(AuthMethod::Local))
}

pub fn layout(conn: &Connection) -> Result<Layout, StoreError> {
    let value = setting(conn, "mailbox-layout")?.unwrap_or_default();
    Ok(Layout::parse(&value).unwrap_or(Layout::PerDomain))
}

pub fn spa_required(conn: &Connection) -> Result<bool, StoreError> {
    Ok(setting(conn, "sparequired")?.as_deref() == Some("1"))
}

// ---- domains ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct DomainRow {
    pub id: i64,
    pub name: DomainName,
    pub locked: bool,
    pub admin_mailbox: Option<String>,
}

pub fn domain_count(conn: &Connection) -> Result<u64, StoreError> {
    Ok(conn.query_row("SELECT count(*) FROM domains", [], |r| r.get(0))?)
}

pub fn find_domain(conn: &Connection, name: &DomainName) -> Result<Option<DomainRow>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT id, name, locked, admin_mailbox FROM domains WHERE name = ?1",
            [name.as_str()],
            domain_row,
        )
        .optional()?)
}

pub fn domains(conn: &Connection) -> Result<Vec<DomainRow>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT id, name, locked, admin_mailbox FROM domains ORDER BY name")?;
    let rows = stmt.query_map([], domain_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn domain_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DomainRow> {
    Ok(DomainRow {
        id: r.get(0)?,
        name: DomainName::unvalidated(r.get(1)?),
        locked: r.get(2)?,
        admin_mailbox: r.get(3)?,
    })
}

pub fn insert_domain(conn: &Connection, name: &DomainName) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO domains(name, created_at) VALUES (?1, ?2)",
        params![name.as_str(), now_unix()],
    )?;
    Ok(())
}

pub fn delete_domain(conn: &Connection, id: i64) -> Result<(), StoreError> {
    conn.execute("DELETE FROM mailboxes WHERE domain_id = ?1", [id])?;
    conn.execute("DELETE FROM domains WHERE id = ?1", [id])?;
    Ok(())
}

pub fn set_domain_locked(conn: &Connection, id: i64, locked: bool) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE domains SET locked = ?2 WHERE id = ?1",
        params![id, locked],
    )?;
    Ok(())
}

// ---- mailboxes -------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct MailboxRow {
    pub id: i64,
    pub address: Address,
    /// The mailbox's own lock flag.
    pub locked: bool,
    /// Its domain's lock flag (R14: a locked domain locks retrieval for all its mailboxes).
    pub domain_locked: bool,
    pub quota_bytes: Option<u64>,
    pub quota_owner: Option<String>,
}

const MAILBOX_SELECT: &str =
    "SELECT m.id, m.name, d.name, m.locked, d.locked, m.quota_bytes, m.quota_owner
     FROM mailboxes m JOIN domains d ON d.id = m.domain_id";

fn mailbox_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MailboxRow> {
    Ok(MailboxRow {
        id: r.get(0)?,
        address: Address {
            name: MailboxName::unvalidated(r.get(1)?),
            domain: DomainName::unvalidated(r.get(2)?),
        },
        locked: r.get(3)?,
        domain_locked: r.get(4)?,
        quota_bytes: r.get::<_, Option<i64>>(5)?.map(|q| q as u64),
        quota_owner: r.get(6)?,
    })
}

pub fn find_mailbox(
    conn: &Connection,
    address: &Address,
) -> Result<Option<MailboxRow>, StoreError> {
    Ok(conn
        .query_row(
            &format!("{MAILBOX_SELECT} WHERE m.name = ?1 AND d.name = ?2"),
            [address.name.as_str(), address.domain.as_str()],
            mailbox_row,
        )
        .optional()?)
}

/// Every mailbox with this name, in any domain (R3, R8, R9).
pub fn mailboxes_named(
    conn: &Connection,
    name: &MailboxName,
) -> Result<Vec<MailboxRow>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "{MAILBOX_SELECT} WHERE m.name = ?1 ORDER BY d.name"
    ))?;
    let rows = stmt.query_map([name.as_str()], mailbox_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A mailbox of another domain with `address`'s name: the fact R3 and R9 decide on.
pub fn mailbox_in_other_domain(
    conn: &Connection,
    address: &Address,
) -> Result<Option<Address>, StoreError> {
    Ok(mailboxes_named(conn, &address.name)?
        .into_iter()
        .find(|m| m.address.domain != address.domain)
        .map(|m| m.address))
}

pub fn mailboxes_of(conn: &Connection, domain_id: i64) -> Result<Vec<MailboxRow>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "{MAILBOX_SELECT} WHERE m.domain_id = ?1 ORDER BY m.name"
    ))?;
    let rows = stmt.query_map([domain_id], mailbox_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn mailbox_count(conn: &Connection) -> Result<u64, StoreError> {
    Ok(conn.query_row("SELECT count(*) FROM mailboxes", [], |r| r.get(0))?)
}

pub fn insert_mailbox(
    conn: &Connection,
    domain_id: i64,
    name: &MailboxName,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO mailboxes(domain_id, name, created_at) VALUES (?1, ?2, ?3)",
        params![domain_id, name.as_str(), now_unix()],
    )?;
    Ok(())
}

pub fn delete_mailbox(conn: &Connection, id: i64) -> Result<(), StoreError> {
    conn.execute("DELETE FROM mailboxes WHERE id = ?1", [id])?;
    Ok(())
}

pub fn set_mailbox_locked(conn: &Connection, id: i64, locked: bool) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE mailboxes SET locked = ?2 WHERE id = ?1",
        params![id, locked],
    )?;
    Ok(())
}

pub fn set_mailbox_quota(
    conn: &Connection,
    id: i64,
    limit: Option<u64>,
    owner: Option<&str>,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE mailboxes SET quota_bytes = ?2, quota_owner = ?3 WHERE id = ?1",
        params![id, limit.map(|l| l as i64), owner],
    )?;
    Ok(())
}

/// The mailbox with the lowest id in a domain: the first one created (R12's fallback).
pub fn first_mailbox_of(
    conn: &Connection,
    domain_id: i64,
) -> Result<Option<MailboxRow>, StoreError> {
    Ok(conn
        .query_row(
            &format!("{MAILBOX_SELECT} WHERE m.domain_id = ?1 ORDER BY m.id LIMIT 1"),
            [domain_id],
            mailbox_row,
        )
        .optional()?)
}

/// R22: marks a mailbox as having its Active Directory user.
pub fn set_mailbox_ad_linked(conn: &Connection, id: i64) -> Result<(), StoreError> {
    conn.execute("UPDATE mailboxes SET ad_linked = 1 WHERE id = ?1", [id])?;
    Ok(())
}

/// R22: mailboxes without their Active Directory user yet.
pub fn mailboxes_not_ad_linked(conn: &Connection) -> Result<u64, StoreError> {
    Ok(conn.query_row(
        "SELECT count(*) FROM mailboxes WHERE ad_linked = 0",
        [],
        |r| r.get(0),
    )?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is a failed test

    use super::*;
    use dirmail_proto::names::Secret;

    /// Every change that can make a remembered login wrong moves the login cache's generation,
    /// whichever connection (process) makes it; the others do not.
    #[test]
    fn changes_to_credentials_move_the_generation_and_others_do_not() {
        let root = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            data_dir: root.path().join("data"),
            mailroot: root.path().join("data/mail"),
        };
        let store = Store::open(&config).unwrap();
        // Another connection, as the administration tool would have.
        let admin = Store::open(&config).unwrap();
        let conn = admin.conn();
        let generation = || credential_generation(store.conn()).unwrap();
        let moves = |what: &str, change: &dyn Fn()| {
            let before = generation();
            change();
            assert!(generation() > before, "{what} did not move the generation");
        };
        let stays = |what: &str, change: &dyn Fn()| {
            let before = generation();
            change();
            assert_eq!(generation(), before, "{what} moved the generation");
        };
        let domain = DomainName::parse("example.jp").unwrap();
        stays("adding a domain", &|| insert_domain(conn, &domain).unwrap());
        let domain_id = find_domain(conn, &domain).unwrap().unwrap().id;
        let bob = MailboxName::parse("bob", 64).unwrap();
        moves("adding a mailbox", &|| {
            insert_mailbox(conn, domain_id, &bob).unwrap()
        });
        let address = Address::parse("bob@example.jp", 64).unwrap();
        let id = find_mailbox(conn, &address).unwrap().unwrap().id;
        stays("a quota", &|| {
            set_mailbox_quota(conn, id, Some(1000), None).unwrap()
        });
        moves("locking a mailbox", &|| {
            set_mailbox_locked(conn, id, true).unwrap()
        });
        moves("unlocking it", &|| {
            set_mailbox_locked(conn, id, false).unwrap()
        });
        moves("locking a domain", &|| {
            set_domain_locked(conn, domain_id, true).unwrap()
        });
        moves("linking to AD", &|| {
            set_mailbox_ad_linked(conn, id).unwrap()
        });
        let secret = Secret::new("tanstaaf");
        moves("a mail secret set", &|| {
            secrets::set(conn, &config.data_dir, id, &secret).unwrap()
        });
        moves("a mail secret replaced", &|| {
            secrets::set(conn, &config.data_dir, id, &secret).unwrap()
        });
        moves("a mail secret deleted", &|| {
            assert!(secrets::delete(conn, id).unwrap());
        });
        moves("the authentication method", &|| {
            set_setting(conn, "authentication", "passwd-file").unwrap()
        });
        moves("a local account added", &|| {
            conn.execute(
                "INSERT INTO local_accounts(name, password_hash, groups, created_at) VALUES ('bob', 'x', '', 0)",
                [],
            )
            .unwrap();
        });
        moves("a local password changed", &|| {
            conn.execute("UPDATE local_accounts SET password_hash = 'y'", [])
                .unwrap();
        });
        moves("a local account deleted", &|| {
            conn.execute("DELETE FROM local_accounts", []).unwrap();
        });
        moves("a change outside the database", &|| {
            credentials_changed(conn).unwrap()
        });
        moves("deleting a mailbox", &|| delete_mailbox(conn, id).unwrap());
        moves("deleting a domain", &|| {
            delete_domain(conn, domain_id).unwrap()
        });
    }
}
