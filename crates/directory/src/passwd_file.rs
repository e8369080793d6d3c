//! `passwd-file`: the password record lives inside the mailbox's own directory (R5), so deleting
//! the mailbox deletes the account with it. The record is one line: `name@domain:<argon2 hash>`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use super::{RefusalReason, Verdict, password};
use dirmail_proto::names::{Address, Secret};
use dirmail_rules::password_record;
use dirmail_store::{StoreError, io_context};

pub struct PasswdFile {
    record: PathBuf,
}

impl PasswdFile {
    pub fn new(maildir: PathBuf) -> Self {
        PasswdFile {
            record: password_record(&maildir),
        }
    }

    pub fn exists(&self) -> bool {
        self.record.is_file()
    }

    /// Writes the record atomically (a temporary file, fsynced, renamed over), mode 0600.
    pub fn write(&self, address: &Address, pass: &Secret) -> Result<(), StoreError> {
        let hash = password::hash(pass).map_err(|message| StoreError::Io {
            context: message,
            source: std::io::Error::other("password hashing failed"),
        })?;
        let tmp = self.record.with_extension("tmp");
        let context = format!("cannot write the password record {}", self.record.display());
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_context(context.clone()))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))
            .map_err(io_context(context.clone()))?;
        writeln!(file, "{address}:{hash}").map_err(io_context(context.clone()))?;
        file.sync_all().map_err(io_context(context.clone()))?;
        fs::rename(&tmp, &self.record).map_err(io_context(context))?;
        Ok(())
    }

    pub fn remove(&self) -> Result<bool, StoreError> {
        match fs::remove_file(&self.record) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_context(format!(
                "cannot remove {}",
                self.record.display()
            ))(e)),
        }
    }

    pub fn verify(&self, pass: &Secret) -> Result<Verdict, StoreError> {
        let text = match fs::read_to_string(&self.record) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // As long as a wrong password for an account that exists.
                password::check_against_dummy(pass);
                return Ok(Verdict::Refused(RefusalReason::UnknownUser));
            }
            Err(e) => {
                return Err(io_context(format!("cannot read {}", self.record.display()))(e));
            }
        };
        let hash = text
            .lines()
            .next()
            .and_then(|line| line.rsplit_once(':'))
            .map(|(_, h)| h.trim())
            .unwrap_or("");
        Ok(if password::verify(pass, hash) {
            Verdict::Accepted
        } else {
            Verdict::Refused(RefusalReason::BadPassword)
        })
    }
}
