//! The outbound queue (issue 12): messages accepted for recipients outside the local domains,
//! kept on disk until each recipient is delivered, bounced or expired.
//!
//! The queue is `.queue/` in the mail root (on the Maildirs' filesystem, like the spool; no
//! domain begins with a dot, R10), with two directories:
//! - `msg/<id>`: the message, a hard link of its spool file, so queueing copies nothing;
//! - `env/<id>`: its envelope and each recipient's state, as JSON, replaced whole (written
//!   aside, fsynced, renamed over, directory fsynced) at every change.
//!
//! The envelope is written last and removed first, so it is what makes an entry exist: a
//! crash between the two steps leaves a message file with no envelope, which
//! [`Queue::open`] removes (it was never acknowledged, or its entry was already finished).
//! Listing reads only the small envelope files, so a long queue costs the server little
//! memory: the runner keeps ids and times, and loads one entry when it works on it.
//!
//! Two writers change envelopes: the server's runner (an attempt's outcome, finishing an
//! entry) and the administrator (`dirmail queue retry | bounce | delete`). Each replaces the
//! whole file, so a change made from a copy loaded earlier would silently undo the other's.
//! Every change to an existing entry therefore runs under one exclusive advisory lock of the
//! queue (`.queue/lock`, [`Queue::lock`]), re-loading the entry inside it: [`Queue::update`]
//! does load-change-save in one go. The lock is held for a file write, never across a
//! network exchange: the runner talks to the remote server unlocked, then records what the
//! attempt changed (its recipients' states, attempts, replies) into a fresh load under the
//! lock, so an administrator's bounce or retry made meanwhile stays, and an entry deleted
//! meanwhile stays deleted ([`QueueError::NotFound`]). One lock for the whole queue rather
//! than one per entry: the lock file is never removed (so two writers always lock the same
//! inode), and each hold is one small fsynced write.
//!
//! [`Queue::open`] cleans up after a crash and is for the server at start; a tool beside a
//! running server uses [`Queue::attach`], which changes nothing on disk, since what `open`
//! removes may be an entry the server is writing at that moment.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::spool::SpoolFile;
use super::{StoreError, io_context, private_dir};

/// The queue's directory in the mail root.
pub const QUEUE_DIR: &str = ".queue";

/// The queue's lock file, in [`QUEUE_DIR`] (not in `env/`, whose dot files `open` removes).
const LOCK_FILE: &str = "lock";

/// Touched by the administration tool after it changed an entry (see [`Queue::nudge`]).
const NUDGE_FILE: &str = "nudge";

/// Opens `path` for writing, made empty and private (0600) when missing, kept as it is
/// otherwise: the lock and nudge files, which are never removed.
fn open_or_make(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

/// The queue's exclusive lock, held until dropped (see [`Queue::lock`]).
#[derive(Debug)]
pub struct QueueLock {
    _file: fs::File,
}

/// Where a recipient of a queued message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecipientState {
    /// Still to be delivered; tried again at `next_attempt`.
    Pending,
    /// The remote server accepted it (`250`).
    Delivered,
    /// Given up: a permanent refusal, a null MX, or expiry. A notification goes to the sender.
    Failed,
}

/// One recipient of a queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedRecipient {
    /// The forward-path as the client wrote it.
    pub address: String,
    pub state: RecipientState,
    /// Attempts made so far.
    pub attempts: u32,
    /// When to try next (seconds since the epoch); meaningful while pending.
    pub next_attempt: i64,
    /// The last answer: the remote reply, or why no server could be reached.
    pub last_reply: Option<String>,
    /// The host (and address) of the last attempt.
    pub last_host: Option<String>,
}

/// A queued message's envelope and state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    /// The reverse-path; empty for the null sender `<>` (a bounce, which never gets one).
    pub reverse_path: String,
    /// When it was accepted (seconds since the epoch).
    pub arrived: i64,
    /// The message's size in octets.
    pub size: u64,
    pub recipients: Vec<QueuedRecipient>,
    /// A "still trying" notice has gone to the sender.
    pub delay_notice_sent: bool,
}

impl Entry {
    /// Every recipient delivered or given up: the entry can go.
    pub fn is_finished(&self) -> bool {
        self.recipients
            .iter()
            .all(|r| r.state != RecipientState::Pending)
    }

    /// The earliest time a pending recipient is due, if any is pending.
    pub fn next_due(&self) -> Option<i64> {
        self.recipients
            .iter()
            .filter(|r| r.state == RecipientState::Pending)
            .map(|r| r.next_attempt)
            .min()
    }
}

/// The queue at a glance ([`Queue::summary`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Entries (messages) in the queue, finished or not.
    pub messages: usize,
    /// Pending recipients whose next attempt is due now.
    pub due: usize,
    /// Pending recipients waiting for a later attempt.
    pub deferred: usize,
    /// Envelopes that cannot be read.
    pub unreadable: usize,
}

/// Why an entry could not be found or read.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("{0:?} is not a queue id")]
    BadId(String),
    #[error("no queued message {0}")]
    NotFound(String),
    #[error("the envelope of {id} cannot be read: {why}")]
    Corrupt { id: String, why: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

/// The queue of one mail root.
#[derive(Debug, Clone)]
pub struct Queue {
    root: PathBuf,
}

impl Queue {
    /// Opens (making when missing) the queue under `mailroot`, and removes what a crash left:
    /// message files without an envelope and envelopes half written.
    pub fn open(mailroot: &Path) -> Result<Queue, StoreError> {
        let queue = Queue {
            root: mailroot.join(QUEUE_DIR),
        };
        private_dir(&queue.root)?;
        private_dir(&queue.msg_dir())?;
        private_dir(&queue.env_dir())?;
        let read = |dir: PathBuf| -> Result<Vec<fs::DirEntry>, StoreError> {
            let entries =
                fs::read_dir(&dir).map_err(io_context(format!("cannot read {}", dir.display())))?;
            Ok(entries.flatten().collect())
        };
        for entry in read(queue.env_dir())? {
            if entry.file_name().to_string_lossy().starts_with('.') {
                let _ = fs::remove_file(entry.path());
            }
        }
        for entry in read(queue.msg_dir())? {
            let name = entry.file_name();
            if !queue.env_dir().join(&name).exists() {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(queue)
    }

    /// The queue under `mailroot` as it is, without making or cleaning anything (see the
    /// module's docs): for the administration tool, which may run beside the server. A queue
    /// that was never made lists as empty.
    pub fn attach(mailroot: &Path) -> Queue {
        Queue {
            root: mailroot.join(QUEUE_DIR),
        }
    }

    /// Takes the queue's exclusive lock (blocking until it is free); released when dropped.
    /// Every change to an existing entry is made under it, re-loading the entry first.
    pub fn lock(&self) -> Result<QueueLock, QueueError> {
        let path = self.root.join(LOCK_FILE);
        let file = open_or_make(&path)
            .and_then(|file| file.lock().map(|()| file))
            .map_err(|source| QueueError::Io {
                context: format!("cannot lock {}", path.display()),
                source,
            })?;
        Ok(QueueLock { _file: file })
    }

    /// Tells a running server that another process changed the queue (`dirmail queue retry`,
    /// `bounce`, `delete`), so it reads the queue again within a second instead of at its
    /// next periodic rescan: the file's modification time is set to now. Best effort: a
    /// queue that was never made is left alone, and the periodic rescan still comes.
    pub fn nudge(&self) {
        if !self.root.is_dir() {
            return;
        }
        let path = self.root.join(NUDGE_FILE);
        let touched =
            open_or_make(&path).and_then(|file| file.set_modified(std::time::SystemTime::now()));
        if let Err(e) = touched {
            tracing::debug!("cannot touch {}: {e}", path.display());
        }
    }

    /// When [`Queue::nudge`] was last called, if ever: the server compares it with what it
    /// saw before.
    pub fn nudged_at(&self) -> Option<std::time::SystemTime> {
        fs::metadata(self.root.join(NUDGE_FILE))
            .and_then(|m| m.modified())
            .ok()
    }

    /// Loads the entry `id`, lets `change` change it, and saves it, all under the queue's
    /// lock, so no other writer's change made in between is lost.
    pub fn update<T>(
        &self,
        id: &str,
        change: impl FnOnce(&mut Entry) -> T,
    ) -> Result<T, QueueError> {
        check_id(id)?;
        if !self.env_dir().is_dir() {
            return Err(QueueError::NotFound(id.to_owned()));
        }
        let _lock = self.lock()?;
        let mut entry = self.load(id)?;
        let result = change(&mut entry);
        self.save(&entry).map_err(|source| QueueError::Io {
            context: format!("cannot save the envelope of {id}"),
            source,
        })?;
        Ok(result)
    }

    fn msg_dir(&self) -> PathBuf {
        self.root.join("msg")
    }

    fn env_dir(&self) -> PathBuf {
        self.root.join("env")
    }

    /// Where a queued message's content is.
    pub fn message_path(&self, id: &str) -> Result<PathBuf, QueueError> {
        check_id(id)?;
        Ok(self.msg_dir().join(id))
    }

    /// Queues the spooled message for `recipients`, durably: once this returns, a crash loses
    /// nothing (the message file and its envelope are fsynced, and their directories).
    /// Returns the new entry.
    pub fn enqueue(
        &self,
        spool: &SpoolFile,
        reverse_path: &str,
        recipients: &[String],
        hostname: &str,
        now: i64,
    ) -> std::io::Result<Entry> {
        spool.sync()?;
        // A host name could hold what an id may not (see `check_id`).
        let id: String = crate::maildir::unique_name(hostname)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let msg = self.msg_dir().join(&id);
        fs::hard_link(spool.path(), &msg)?;
        let entry = Entry {
            id,
            reverse_path: reverse_path.to_owned(),
            arrived: now,
            size: spool.size(),
            recipients: recipients
                .iter()
                .map(|address| QueuedRecipient {
                    address: address.clone(),
                    state: RecipientState::Pending,
                    attempts: 0,
                    next_attempt: now,
                    last_reply: None,
                    last_host: None,
                })
                .collect(),
            delay_notice_sent: false,
        };
        let written = fs::File::open(self.msg_dir())
            .and_then(|dir| dir.sync_all())
            .and_then(|()| self.save(&entry));
        if let Err(e) = written {
            let _ = fs::remove_file(&msg);
            return Err(e);
        }
        Ok(entry)
    }

    /// Replaces an entry's envelope with `entry`, durably.
    pub fn save(&self, entry: &Entry) -> std::io::Result<()> {
        check_id(&entry.id).map_err(std::io::Error::other)?;
        let json = serde_json::to_vec_pretty(entry).map_err(std::io::Error::other)?;
        let aside = self.env_dir().join(format!(".{}.new", entry.id));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&aside)?;
        file.write_all(&json)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&aside, self.env_dir().join(&entry.id))?;
        fs::File::open(self.env_dir())?.sync_all()
    }

    /// The entry `id`.
    pub fn load(&self, id: &str) -> Result<Entry, QueueError> {
        check_id(id)?;
        let path = self.env_dir().join(id);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(QueueError::NotFound(id.to_owned()));
            }
            Err(source) => {
                return Err(QueueError::Io {
                    context: format!("cannot read {}", path.display()),
                    source,
                });
            }
        };
        serde_json::from_slice(&bytes).map_err(|e| QueueError::Corrupt {
            id: id.to_owned(),
            why: e.to_string(),
        })
    }

    /// Every entry, oldest first; an envelope that cannot be read is reported beside them.
    pub fn list(&self) -> Result<(Vec<Entry>, Vec<QueueError>), QueueError> {
        let dir = self.env_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            // Never made (see `attach`): nothing queued.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Vec::new(), Vec::new()));
            }
            Err(source) => {
                return Err(QueueError::Io {
                    context: format!("cannot read {}", dir.display()),
                    source,
                });
            }
        };
        let mut ids: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| !name.starts_with('.'))
            .collect();
        // Unique names begin with the arrival second and microsecond, so this is arrival order.
        ids.sort();
        let (mut found, mut unreadable) = (Vec::new(), Vec::new());
        for id in ids {
            match self.load(&id) {
                Ok(entry) => found.push(entry),
                // Finished and removed since the directory was read.
                Err(QueueError::NotFound(_)) => {}
                Err(e) => unreadable.push(e),
            }
        }
        Ok((found, unreadable))
    }

    /// How much is waiting, counted at `now` (seconds since the epoch): for the metrics page
    /// and `dirmail status`.
    pub fn summary(&self, now: i64) -> Result<Summary, QueueError> {
        let (entries, unreadable) = self.list()?;
        let mut summary = Summary {
            messages: entries.len(),
            unreadable: unreadable.len(),
            ..Summary::default()
        };
        for recipient in entries.iter().flat_map(|e| &e.recipients) {
            if recipient.state == RecipientState::Pending {
                if recipient.next_attempt <= now {
                    summary.due += 1;
                } else {
                    summary.deferred += 1;
                }
            }
        }
        Ok(summary)
    }

    /// Removes an entry: its envelope first (from then on it does not exist), then its message.
    pub fn remove(&self, id: &str) -> Result<(), QueueError> {
        check_id(id)?;
        let io = |context: String| move |source| QueueError::Io { context, source };
        match fs::remove_file(self.env_dir().join(id)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(QueueError::NotFound(id.to_owned()));
            }
            Err(e) => return Err(io(format!("cannot remove the envelope of {id}"))(e)),
        }
        fs::File::open(self.env_dir())
            .and_then(|dir| dir.sync_all())
            .map_err(io("cannot sync the queue".into()))?;
        match fs::remove_file(self.msg_dir().join(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(format!("cannot remove the message of {id}"))(e)),
        }
    }
}

/// An id names a file in the queue's directories and nothing else: what
/// [`crate::maildir::unique_name`] makes (letters, digits, `.`, `_`, `-`), not beginning with a
/// dot, so `dirmail queue show ../../etc/passwd` is refused.
fn check_id(id: &str) -> Result<(), QueueError> {
    let fits = !id.is_empty()
        && id.len() <= 255
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if fits {
        Ok(())
    } else {
        Err(QueueError::BadId(id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spooled(mailroot: &Path, text: &[u8]) -> SpoolFile {
        crate::spool::prepare(mailroot, std::time::Duration::from_secs(60)).unwrap();
        let mut spool = SpoolFile::create(mailroot, "mx.example.jp").unwrap();
        spool.append(text).unwrap();
        spool
    }

    #[test]
    fn enqueue_list_update_remove() {
        let root = tempfile::tempdir().unwrap();
        let mailroot = root.path().join("mail");
        let queue = Queue::open(&mailroot).unwrap();
        let spool = spooled(&mailroot, b"Subject: out\r\n\r\nhello\r\n");
        let rcpts = vec!["a@example.org".to_owned(), "b@example.net".to_owned()];
        let mut entry = queue
            .enqueue(&spool, "bob@example.jp", &rcpts, "mx.example.jp", 1000)
            .unwrap();
        drop(spool);
        // The queue holds its own link: the spool file going away loses nothing.
        let path = queue.message_path(&entry.id).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"Subject: out\r\n\r\nhello\r\n");
        assert_eq!(entry.size, 23);
        assert_eq!(entry.next_due(), Some(1000));
        let (listed, bad) = queue.list().unwrap();
        assert!(bad.is_empty());
        assert_eq!(listed, vec![entry.clone()]);

        entry.recipients[0].state = RecipientState::Delivered;
        entry.recipients[1].attempts = 1;
        entry.recipients[1].next_attempt = 1120;
        entry.recipients[1].last_reply = Some("451 4.7.1 try later".into());
        queue.save(&entry).unwrap();
        assert_eq!(queue.load(&entry.id).unwrap(), entry);
        assert_eq!(entry.next_due(), Some(1120));
        assert!(!entry.is_finished());
        let at = |now| queue.summary(now).unwrap();
        assert_eq!(
            (at(1119).messages, at(1119).due, at(1119).deferred),
            (1, 0, 1),
            "the delivered recipient counts in neither"
        );
        assert_eq!((at(1120).due, at(1120).deferred), (1, 0));
        entry.recipients[1].state = RecipientState::Failed;
        assert!(entry.is_finished() && entry.next_due().is_none());

        queue.remove(&entry.id).unwrap();
        assert!(matches!(
            queue.load(&entry.id),
            Err(QueueError::NotFound(_))
        ));
        assert!(!path.exists());
        assert!(queue.list().unwrap().0.is_empty());
    }

    #[test]
    fn open_removes_what_a_crash_left() {
        let root = tempfile::tempdir().unwrap();
        let mailroot = root.path().join("mail");
        let queue = Queue::open(&mailroot).unwrap();
        let spool = spooled(&mailroot, b"x\r\n");
        let kept = queue
            .enqueue(&spool, "", &["a@example.org".into()], "mx", 1)
            .unwrap();
        // A message linked whose envelope was never written, and an envelope half written.
        let orphan = mailroot.join(QUEUE_DIR).join("msg").join("123.M1P1Q1.mx");
        fs::write(&orphan, b"x").unwrap();
        let half = mailroot
            .join(QUEUE_DIR)
            .join("env")
            .join(".123.M1P1Q1.mx.new");
        fs::write(&half, b"{").unwrap();
        let queue = Queue::open(&mailroot).unwrap();
        assert!(!orphan.exists() && !half.exists());
        assert_eq!(queue.list().unwrap().0, vec![kept]);
    }

    #[test]
    fn ids_name_queue_files_only() {
        let root = tempfile::tempdir().unwrap();
        let queue = Queue::open(&root.path().join("mail")).unwrap();
        for bad in ["", "../env/x", ".hidden", "a/b", "a b", "x\0"] {
            assert!(
                matches!(queue.load(bad), Err(QueueError::BadId(_))),
                "{bad:?}"
            );
            assert!(matches!(queue.remove(bad), Err(QueueError::BadId(_))));
        }
        assert!(matches!(
            queue.load("1700000000.M000001P1Q1.mx.example.jp"),
            Err(QueueError::NotFound(_))
        ));
    }

    #[test]
    fn attach_changes_nothing_and_update_keeps_other_changes() {
        let root = tempfile::tempdir().unwrap();
        let mailroot = root.path().join("mail");
        let attached = Queue::attach(&mailroot);
        assert!(attached.list().unwrap().0.is_empty(), "never made: empty");
        assert!(!mailroot.join(QUEUE_DIR).exists());
        assert!(matches!(
            attached.update("1.M1P1Q1.mx", |_| ()),
            Err(QueueError::NotFound(_))
        ));
        assert!(matches!(
            attached.update("../x", |_| ()),
            Err(QueueError::BadId(_))
        ));

        let queue = Queue::open(&mailroot).unwrap();
        let spool = spooled(&mailroot, b"x\r\n");
        let rcpts = vec!["a@example.org".to_owned(), "b@example.net".to_owned()];
        let entry = queue
            .enqueue(&spool, "s@example.jp", &rcpts, "mx", 1)
            .unwrap();
        // A half-written envelope of the server's is not attach's to remove.
        let aside = mailroot.join(QUEUE_DIR).join("env").join(".x.new");
        fs::write(&aside, b"{").unwrap();
        let attached = Queue::attach(&mailroot);
        assert!(aside.exists());
        // Two writers, each through update: both changes stay.
        attached
            .update(&entry.id, |e| {
                e.recipients[0].state = RecipientState::Failed
            })
            .unwrap();
        queue
            .update(&entry.id, |e| e.recipients[1].attempts = 3)
            .unwrap();
        let now = attached.load(&entry.id).unwrap();
        assert_eq!(now.recipients[0].state, RecipientState::Failed);
        assert_eq!(now.recipients[1].attempts, 3);
        // The lock is released when dropped, and taken again.
        drop(queue.lock().unwrap());
        let _held = attached.lock().unwrap();
    }

    #[test]
    fn a_nudge_is_seen_by_its_modification_time() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let never_made = Queue::attach(dir.path());
        never_made.nudge();
        assert_eq!(
            never_made.nudged_at(),
            None,
            "a queue never made is left alone"
        );
        let queue = Queue::open(dir.path()).unwrap();
        assert_eq!(queue.nudged_at(), None);
        Queue::attach(dir.path()).nudge();
        let first = queue.nudged_at().expect("nudged");
        // Set back an hour, so the next nudge must be a different time on any filesystem.
        fs::File::options()
            .write(true)
            .open(queue.root.join(NUDGE_FILE))
            .unwrap()
            .set_modified(first - std::time::Duration::from_secs(3600))
            .unwrap();
        Queue::attach(dir.path()).nudge();
        assert_ne!(
            queue.nudged_at(),
            Some(first - std::time::Duration::from_secs(3600))
        );
        assert_eq!(
            fs::metadata(queue.root.join(NUDGE_FILE))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }

    #[test]
    fn an_unreadable_envelope_is_reported_not_fatal() {
        let root = tempfile::tempdir().unwrap();
        let mailroot = root.path().join("mail");
        let queue = Queue::open(&mailroot).unwrap();
        fs::write(
            mailroot.join(QUEUE_DIR).join("env").join("1.M1P1Q1.mx"),
            b"not json",
        )
        .unwrap();
        let (found, bad) = queue.list().unwrap();
        assert!(found.is_empty());
        assert!(matches!(bad.as_slice(), [QueueError::Corrupt { .. }]));
    }
}
