//! The separate mail secret (docs/spec.md §10, E-Post's "authentication file"): what APOP and
//! CRAM-MD5 need, a secret the server can read. It is kept encrypted (ChaCha20-Poly1305) with a key
//! of the store's own (`<data_dir>/secret.key`, 0600, made on first use), so a copy of the database
//! alone reveals nothing.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rusqlite::{Connection, OptionalExtension, params};

use super::{StoreError, io_context};
use dirmail_proto::names::Secret;

const KEY_FILE: &str = "secret.key";

fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE)
}

fn crypto_error(what: &str) -> StoreError {
    StoreError::Io {
        context: format!("the mail secret could not be {what}"),
        source: std::io::Error::other("authenticated encryption failed"),
    }
}

/// The store's key, made (32 random bytes, mode 0600) when missing and `create` is set.
fn cipher(data_dir: &Path, create: bool) -> Result<Option<ChaCha20Poly1305>, StoreError> {
    let path = key_path(data_dir);
    let key = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            let mut bytes = vec![0u8; 32];
            OsRng.fill_bytes(&mut bytes);
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(io_context(format!("cannot create {}", path.display())))?;
            file.write_all(&bytes)
                .and_then(|()| file.sync_all())
                .map_err(io_context(format!("cannot write {}", path.display())))?;
            bytes
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_context(format!("cannot read {}", path.display()))(e)),
    };
    if key.len() != 32 {
        return Err(crypto_error("read: the key file is not 32 bytes"));
    }
    Ok(Some(ChaCha20Poly1305::new(Key::from_slice(&key))))
}

/// Sets (or replaces) a mailbox's mail secret.
pub fn set(
    conn: &Connection,
    data_dir: &Path,
    mailbox_id: i64,
    secret: &Secret,
) -> Result<(), StoreError> {
    let cipher = cipher(data_dir, true)?.ok_or_else(|| crypto_error("stored"))?;
    let mut nonce = [0u8; 12];
    OsRng.fill_bytes(&mut nonce);
    let ciphertext = cipher
        .encrypt(Nonce::from_slice(&nonce), secret.expose().as_bytes())
        .map_err(|_| crypto_error("encrypted"))?;
    conn.execute(
        "INSERT INTO mail_secrets(mailbox_id, nonce, ciphertext) VALUES (?1, ?2, ?3)
         ON CONFLICT(mailbox_id) DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext",
        params![mailbox_id, nonce.to_vec(), ciphertext],
    )?;
    Ok(())
}

/// Removes a mailbox's mail secret; true when it had one.
pub fn delete(conn: &Connection, mailbox_id: i64) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "DELETE FROM mail_secrets WHERE mailbox_id = ?1",
        [mailbox_id],
    )? > 0)
}

/// A mailbox's mail secret, decrypted, if it has one.
pub fn get(
    conn: &Connection,
    data_dir: &Path,
    mailbox_id: i64,
) -> Result<Option<Secret>, StoreError> {
    let row: Option<(Vec<u8>, Vec<u8>)> = conn
        .query_row(
            "SELECT nonce, ciphertext FROM mail_secrets WHERE mailbox_id = ?1",
            [mailbox_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((nonce, ciphertext)) = row else {
        return Ok(None);
    };
    let cipher =
        cipher(data_dir, false)?.ok_or_else(|| crypto_error("read: the key file is missing"))?;
    if nonce.len() != 12 {
        return Err(crypto_error("read: a damaged record"));
    }
    let plain = cipher
        .decrypt(Nonce::from_slice(&nonce), ciphertext.as_slice())
        .map_err(|_| crypto_error("decrypted (a different key?)"))?;
    String::from_utf8(plain)
        .map(|s| Some(Secret::new(s)))
        .map_err(|_| crypto_error("read: not text"))
}

/// Whether any mailbox has a mail secret: CRAM-MD5 is offered only then.
pub fn any(conn: &Connection) -> Result<bool, StoreError> {
    Ok(
        conn.query_row("SELECT EXISTS(SELECT 1 FROM mail_secrets)", [], |r| {
            r.get(0)
        })?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_nothing_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE mail_secrets (mailbox_id INTEGER PRIMARY KEY, nonce BLOB NOT NULL, ciphertext BLOB NOT NULL);",
        )
        .unwrap();
        assert!(!any(&conn).unwrap());
        set(&conn, dir.path(), 7, &Secret::new("tanstaaf")).unwrap();
        assert!(any(&conn).unwrap());
        assert_eq!(
            get(&conn, dir.path(), 7).unwrap().unwrap().expose(),
            "tanstaaf"
        );
        let raw: Vec<u8> = conn
            .query_row("SELECT ciphertext FROM mail_secrets", [], |r| r.get(0))
            .unwrap();
        assert!(!raw.windows(8).any(|w| w == b"tanstaaf"));
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(key_path(dir.path()))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert!(get(&conn, dir.path(), 8).unwrap().is_none());
        assert!(delete(&conn, 7).unwrap());
        assert!(get(&conn, dir.path(), 7).unwrap().is_none());
    }
}
