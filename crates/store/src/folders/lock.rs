//! The lock file every change of a folder runs under, and the durable replacement of a whole
//! file that the UID list and the subscriptions share.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// In each folder's directory; INBOX's (the mailbox root) also guards the subscriptions.
pub(super) const LOCK_FILE: &str = "dirmail-uidlist.lock";

/// Options for a file only the server may read (0600), like the rest of the store.
pub(super) fn private() -> fs::OpenOptions {
    let mut options = fs::OpenOptions::new();
    options.mode(0o600);
    options
}

/// Takes the exclusive lock of the folder in `dir`; released when the file is dropped.
pub(super) fn lock_folder(dir: &Path) -> io::Result<fs::File> {
    let file = private()
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(LOCK_FILE))?;
    file.lock()?;
    Ok(file)
}

/// Replaces `dir/name` with `bytes` durably: written aside, fsynced, renamed over, and the
/// directory fsynced, so a crash leaves the old file or the new one.
pub(super) fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = private()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, dir.join(name))?;
    fs::File::open(dir)?.sync_all()
}
