//! `local`: the server's own account database, like the SAM of a Windows server. Accounts are
//! keyed by name alone, since under `local` a name is unique across domains (R3).

use rusqlite::{Connection, OptionalExtension, params};

use super::{RefusalReason, Verdict, password};
use dirmail_proto::names::Secret;
use dirmail_store::{StoreError, now_unix};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LocalAccount {
    pub name: String,
    pub groups: Vec<String>,
}

pub struct LocalAccounts<'a> {
    conn: &'a Connection,
}

fn hash_error(message: String) -> StoreError {
    StoreError::Io {
        context: message,
        source: std::io::Error::other("password hashing failed"),
    }
}

impl<'a> LocalAccounts<'a> {
    pub fn new(conn: &'a Connection) -> Self {
        LocalAccounts { conn }
    }

    pub fn find(&self, name: &str) -> Result<Option<LocalAccount>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT name, groups FROM local_accounts WHERE name = ?1",
                [name],
                |r| {
                    Ok(LocalAccount {
                        name: r.get(0)?,
                        groups: split_groups(&r.get::<_, String>(1)?),
                    })
                },
            )
            .optional()?)
    }

    pub fn list(&self) -> Result<Vec<LocalAccount>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, groups FROM local_accounts ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok(LocalAccount {
                name: r.get(0)?,
                groups: split_groups(&r.get::<_, String>(1)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn create(&self, name: &str, pass: &Secret, groups: &[&str]) -> Result<(), StoreError> {
        let hash = password::hash(pass).map_err(hash_error)?;
        self.conn.execute(
            "INSERT INTO local_accounts(name, password_hash, groups, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![name, hash, groups.join(","), now_unix()],
        )?;
        Ok(())
    }

    pub fn delete(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM local_accounts WHERE name = ?1", [name])?
            > 0)
    }

    pub fn set_password(&self, name: &str, pass: &Secret) -> Result<bool, StoreError> {
        let hash = password::hash(pass).map_err(hash_error)?;
        Ok(self.conn.execute(
            "UPDATE local_accounts SET password_hash = ?2 WHERE name = ?1",
            params![name, hash],
        )? > 0)
    }

    pub fn verify(&self, name: &str, pass: &Secret) -> Result<Verdict, StoreError> {
        let stored: Option<String> = self
            .conn
            .query_row(
                "SELECT password_hash FROM local_accounts WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        Ok(match stored {
            None => {
                // As long as a wrong password for an account that exists.
                password::check_against_dummy(pass);
                Verdict::Refused(RefusalReason::UnknownUser)
            }
            Some(hash) if password::verify(pass, &hash) => Verdict::Accepted,
            Some(_) => Verdict::Refused(RefusalReason::BadPassword),
        })
    }
}

fn split_groups(text: &str) -> Vec<String> {
    text.split(',')
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
        .collect()
}
