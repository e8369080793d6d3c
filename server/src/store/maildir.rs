//! The mail root: where each mailbox's Maildir lives (SPEC §3), creating and removing them, and
//! counting what they hold. Delivery arrives with the SMTP issue.

use std::fs;
use std::path::{Path, PathBuf};

use super::{StoreError, io_context, private_dir};
use crate::names::Address;

/// The mailbox layout (E-Post "per domain" vs "common box").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `<mailroot>/<domain>/<name>/`
    PerDomain,
    /// `<mailroot>/inbox/<name>/`: one namespace of names for all domains (R9).
    Shared,
}

impl Layout {
    pub fn parse(s: &str) -> Option<Layout> {
        match s {
            "per-domain" => Some(Layout::PerDomain),
            "shared" => Some(Layout::Shared),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Layout::PerDomain => "per-domain",
            Layout::Shared => "shared",
        }
    }

    /// The Maildir of `address` under `mailroot`.
    pub fn maildir(self, mailroot: &Path, address: &Address) -> PathBuf {
        match self {
            Layout::PerDomain => mailroot
                .join(address.domain.as_str())
                .join(address.name.as_str()),
            Layout::Shared => mailroot.join("inbox").join(address.name.as_str()),
        }
    }
}

/// Creates the Maildir (`cur/ new/ tmp/`), private to the server.
pub fn create(dir: &Path) -> Result<(), StoreError> {
    // The domain's (or `inbox`'s) directory too, or it would get the default mode.
    if let Some(parent) = dir.parent() {
        private_dir(parent)?;
    }
    for sub in ["cur", "new", "tmp"] {
        private_dir(&dir.join(sub))?;
    }
    private_dir(dir)
}

/// Moves a Maildir out of the way in one rename, so a failed transaction can put it back and a
/// committed one can remove it at leisure. Returns where it went, or `None` if it did not exist.
pub fn set_aside(dir: &Path) -> Result<Option<PathBuf>, StoreError> {
    if !dir.exists() {
        return Ok(None);
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let aside = dir.with_file_name(format!(
        ".deleting-{name}-{}-{}",
        std::process::id(),
        super::now_unix()
    ));
    fs::rename(dir, &aside).map_err(io_context(format!("cannot move {} aside", dir.display())))?;
    Ok(Some(aside))
}

pub fn remove(dir: &Path) -> Result<(), StoreError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_context(format!("cannot remove {}", dir.display()))(e)),
    }
}

/// Messages and bytes held in a Maildir: `new/` and `cur/` of the inbox and of every
/// Maildir++ sub-folder (`.Name/`). `tmp/` holds nothing delivered yet, so it is not counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub messages: u64,
    pub bytes: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Usage) {
        self.messages += other.messages;
        self.bytes += other.bytes;
    }
}

pub fn usage(dir: &Path) -> Result<Usage, StoreError> {
    let mut total = folder_usage(dir)?;
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(total),
        Err(e) => return Err(io_context(format!("cannot read {}", dir.display()))(e)),
    };
    for entry in entries.flatten() {
        let is_folder = entry.file_name().to_string_lossy().starts_with('.')
            && entry.file_type().map(|t| t.is_dir()).unwrap_or(false)
            && entry.path().join("cur").is_dir();
        if is_folder {
            total += folder_usage(&entry.path())?;
        }
    }
    Ok(total)
}

fn folder_usage(dir: &Path) -> Result<Usage, StoreError> {
    let mut total = Usage::default();
    for sub in ["new", "cur"] {
        let path = dir.join(sub);
        let entries = match fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_context(format!("cannot read {}", path.display()))(e)),
        };
        for entry in entries.flatten() {
            if let Ok(meta) = entry.metadata() {
                if meta.is_file() && !entry.file_name().to_string_lossy().starts_with('.') {
                    total.messages += 1;
                    total.bytes += meta.len();
                }
            }
        }
    }
    Ok(total)
}
