//! One enum over the account sources (SPEC §2): the server's own account database (`local`),
//! the password record in each mailbox's directory (`passwd-file`), and later Active Directory.
//! Adding a source changes the matches in this file, not the callers.

pub mod local;
pub mod login;
pub mod passwd_file;
pub mod password;

use std::path::PathBuf;

use rusqlite::Connection;

use crate::names::{Address, Secret};
use crate::store::StoreError;

/// The authentication method of a store (seed names: Local Windows accounts, Active Directory
/// integrated, Encrypted password file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Local,
    Ad,
    PasswdFile,
}

impl AuthMethod {
    pub fn parse(s: &str) -> Option<AuthMethod> {
        match s {
            "local" => Some(AuthMethod::Local),
            "ad" => Some(AuthMethod::Ad),
            "passwd-file" => Some(AuthMethod::PasswdFile),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Local => "local",
            AuthMethod::Ad => "ad",
            AuthMethod::PasswdFile => "passwd-file",
        }
    }
}

/// The outcome of a password check. Kept apart so the log can tell them apart (R27).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    UnknownUser,
    BadPassword,
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "Active Directory needs [directory] configured in dirmail.toml, and this build does not speak to it yet"
    )]
    AdNotAvailable,
}

/// An account source, opened for one operation. `Local` works inside the caller's transaction so
/// an account and its mailbox are made (or not) together.
pub enum Directory<'a> {
    Local(local::LocalAccounts<'a>),
    PasswdFile(passwd_file::PasswdFile),
}

impl<'a> Directory<'a> {
    /// `maildir` is where the mailbox in question lives (the password file's home).
    pub fn open(
        method: AuthMethod,
        conn: &'a Connection,
        maildir: PathBuf,
    ) -> Result<Directory<'a>, DirectoryError> {
        match method {
            AuthMethod::Local => Ok(Directory::Local(local::LocalAccounts::new(conn))),
            AuthMethod::PasswdFile => {
                Ok(Directory::PasswdFile(passwd_file::PasswdFile::new(maildir)))
            }
            AuthMethod::Ad => Err(DirectoryError::AdNotAvailable),
        }
    }

    pub fn account_exists(&self, address: &Address) -> Result<bool, DirectoryError> {
        Ok(match self {
            Directory::Local(db) => db.find(address.name.as_str())?.is_some(),
            Directory::PasswdFile(file) => file.exists(),
        })
    }

    /// Creates the account for a new mailbox (`add --create-user`).
    pub fn create_account(
        &self,
        address: &Address,
        password: &Secret,
    ) -> Result<(), DirectoryError> {
        match self {
            Directory::Local(db) => db.create(
                address.name.as_str(),
                password,
                crate::admin::rules::r7_groups_of_created_accounts(),
            )?,
            Directory::PasswdFile(file) => file.write(address, password)?,
        }
        Ok(())
    }

    pub fn delete_account(&self, address: &Address) -> Result<bool, DirectoryError> {
        Ok(match self {
            Directory::Local(db) => db.delete(address.name.as_str())?,
            Directory::PasswdFile(file) => file.remove()?,
        })
    }

    pub fn change_password(
        &self,
        address: &Address,
        password: &Secret,
    ) -> Result<bool, DirectoryError> {
        Ok(match self {
            Directory::Local(db) => db.set_password(address.name.as_str(), password)?,
            Directory::PasswdFile(file) => {
                if !file.exists() {
                    return Ok(false);
                }
                file.write(address, password)?;
                true
            }
        })
    }

    pub fn verify(&self, address: &Address, password: &Secret) -> Result<Verdict, DirectoryError> {
        Ok(match self {
            Directory::Local(db) => db.verify(address.name.as_str(), password)?,
            Directory::PasswdFile(file) => file.verify(password)?,
        })
    }

    /// The account name for Secure Password Authentication, where SPA is offered (R6).
    pub fn spa_account_name(&self, address: &Address) -> Option<String> {
        match self {
            Directory::Local(_) => Some(address.name.to_string()),
            Directory::PasswdFile(_) => None,
        }
    }
}
