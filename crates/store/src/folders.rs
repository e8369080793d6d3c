//! IMAP's view of a mailbox's Maildir: Maildir++ folders (`.Sent`, `.Archive.2024`), flags in
//! the file names (`:2,FRS`), and UIDs that survive restarts and are shared by every session.
//!
//! **Where UIDs live, and why there.** Each folder holds a `dirmail-uidlist` file (in the spirit
//! of Dovecot's `dovecot-uidlist`): a header with UIDVALIDITY, UIDNEXT and the first UID still
//! `\Recent`, then one line per message, `<uid> <internal date> <size> <unique name>`. It is
//! changed only under an exclusive lock on `dirmail-uidlist.lock` and replaced whole (written
//! aside, fsynced, renamed over).
//! A file per folder rather than a table in the SQLite store because:
//! - the Maildir stays self-describing: a backup, a restore or a move of one mailbox directory
//!   keeps its UIDs, and other Maildir tools can go on reading the messages and flags;
//! - sessions on different mailboxes never contend for one database writer lock, and a mailbox
//!   of 10,000 messages costs one sequential read, not 10,000 rows;
//! - deleting a mailbox or a folder (one directory) deletes its UIDs with it.
//!
//! Every scan, flag change, expunge, copy and append of a folder runs under that lock, so
//! concurrent sessions (and concurrent servers on the same mail root) never give one message two
//! UIDs, and a file caught mid-rename is never mistaken for an expunged one. Deliveries (SMTP)
//! and POP3 deletions do not take it: a delivery only adds a file to `new/`, a deletion only
//! removes one, and both are seen at the next scan.
//!
//! The unique name (the file name up to `:`) never changes once delivered: moving a message from
//! `new/` to `cur/` and changing its flags only rename it, so POP3's UIDL stays stable.
//!
//! Keywords (`$Junk`, a client's tags) are letters `a`–`z` in the file name too, each naming a
//! line of the folder's `dirmail-keywords` (see `keywords.rs` for why that is crash-safe).
//!
//! The module's files: `mailstore.rs` (the folders of a mailbox: list, create, delete, rename,
//! subscriptions, status), `folder.rs` (one open folder: scan, read, flags, expunge, append,
//! copy), `uidlist.rs` (the `dirmail-uidlist` format), `keywords.rs` (the `dirmail-keywords`
//! format) and `lock.rs` (the lock file and the durable replacement of a file, which they
//! share).

use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

pub use dirmail_proto::imap::mailbox::{
    DELIMITER, FlagOp, Flags, FolderStatus, INBOX, InvalidName, MAX_KEYWORDS, MAX_NAME_LEN,
    check_name,
};

mod folder;
mod keywords;
mod lock;
mod mailstore;
mod uidlist;

pub use folder::{Entry, Folder, change_stamp};
pub use keywords::KEYWORDS;
pub use mailstore::Mailstore;
pub use uidlist::UIDLIST;

#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error("no folder named {0:?}")]
    NoSuchFolder(String),
    #[error("a folder named {0:?} already exists")]
    AlreadyExists(String),
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    #[error("{0}")]
    Refused(&'static str),
    #[error(transparent)]
    Io(#[from] io::Error),
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
