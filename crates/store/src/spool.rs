//! The spool: messages in the making. SMTP DATA is written to a file here as it arrives, so a
//! session holds a piece of a message in memory, never the message (issue 21). The spool is
//! `.spool/` in the mail root, on the Maildirs' filesystem, so a finished message is delivered
//! by hard links ([`crate::maildir::deliver_spooled`], R18) and an outbound queue can later take
//! one by a rename. A [`SpoolFile`] removes its file when dropped: a refused message, a failed
//! write and a dropped connection leave nothing behind.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{StoreError, private_dir};

/// The spool's directory in the mail root. No domain begins with a dot (R10), so no Maildir
/// can take the name.
pub const SPOOL_DIR: &str = ".spool";

pub fn dir(mailroot: &Path) -> PathBuf {
    mailroot.join(SPOOL_DIR)
}

/// Makes the spool (private, like the rest of the store) and removes what a server that
/// crashed left there: files untouched for longer than `stale_after`, which no live session
/// can still be writing (the caller passes more than the DATA timeout). Returns how many it
/// removed.
pub fn prepare(mailroot: &Path, stale_after: Duration) -> Result<usize, StoreError> {
    let spool = dir(mailroot);
    private_dir(&spool)?;
    let now = SystemTime::now();
    let mut removed = 0;
    let entries = fs::read_dir(&spool).map_err(super::io_context(format!(
        "cannot read {}",
        spool.display()
    )))?;
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .and_then(|meta| meta.modified())
            .is_ok_and(|modified| {
                now.duration_since(modified)
                    .is_ok_and(|age| age > stale_after)
            });
        if stale && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// One message being received, in its spool file; the file is removed when this is dropped.
#[derive(Debug)]
pub struct SpoolFile {
    path: PathBuf,
    file: fs::File,
    size: u64,
}

impl SpoolFile {
    /// A new, empty spool file (0600) under a unique name.
    pub fn create(mailroot: &Path, hostname: &str) -> std::io::Result<SpoolFile> {
        let path = dir(mailroot).join(crate::maildir::unique_name(hostname));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        Ok(SpoolFile {
            path,
            file,
            size: 0,
        })
    }

    /// Appends `bytes`. A failed write leaves the file unfit for delivery; drop it.
    pub fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)?;
        self.size = self.size.saturating_add(bytes.len() as u64);
        Ok(())
    }

    /// Octets written so far: the whole message's size once the last piece is in (R15).
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Puts the content on disk (fsync), before the file is linked anywhere (R18).
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_all()
    }
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        // Delivered copies are links of their own; this name only ever held the message in
        // the making.
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_spool_file_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let mailroot = root.path().join("mail");
        assert_eq!(prepare(&mailroot, Duration::from_secs(60)).unwrap(), 0);
        let mut spool = SpoolFile::create(&mailroot, "mx").unwrap();
        spool.append(b"Received: x\r\n").unwrap();
        spool.append(b"body\r\n").unwrap();
        assert_eq!(spool.size(), 19);
        assert_eq!(fs::read(spool.path()).unwrap(), b"Received: x\r\nbody\r\n");
        drop(spool);
        assert_eq!(fs::read_dir(dir(&mailroot)).unwrap().count(), 0);
    }

    #[test]
    fn prepare_removes_only_stale_files() {
        let root = tempfile::tempdir().unwrap();
        let mailroot = root.path().join("mail");
        prepare(&mailroot, Duration::from_secs(60)).unwrap();
        let left = dir(&mailroot).join("left-by-a-crash");
        fs::write(&left, b"half a message").unwrap();
        let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
        fs::File::options()
            .write(true)
            .open(&left)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
        let fresh = SpoolFile::create(&mailroot, "mx").unwrap();
        assert_eq!(prepare(&mailroot, Duration::from_secs(3600)).unwrap(), 1);
        assert!(!left.exists() && fresh.path().exists());
    }
}
