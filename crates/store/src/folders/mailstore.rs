//! The folders of one mailbox's Maildir, Maildir++ style (`.Archive.2024/` beside INBOX's
//! `cur/`, `new/`, `tmp/`): list, create, delete, rename, subscriptions, status, and the
//! UIDVALIDITY values handed out to new UID lists.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::lock::{lock_folder, private, replace_file};
use super::{DELIMITER, Flags, Folder, FolderError, FolderStatus, INBOX, check_name, now_secs};

/// The last UIDVALIDITY handed out in this mailbox, so a folder deleted and made again within
/// the same second still gets a new one.
const UIDVALIDITY_FILE: &str = "dirmail-uidvalidity";
const SUBSCRIPTIONS: &str = "dirmail-subscriptions";
/// Courier's marker of a Maildir++ sub-folder; other tools look for it.
const FOLDER_MARKER: &str = "maildirfolder";

/// Tells apart the directories of folders being deleted at once by this process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The mailbox's Maildir, seen as IMAP folders.
#[derive(Debug, Clone)]
pub struct Mailstore {
    root: PathBuf,
    /// Goes into the unique names of messages made here (APPEND, COPY).
    pub(super) hostname: String,
}

impl Mailstore {
    pub fn new(root: impl Into<PathBuf>, hostname: impl Into<String>) -> Self {
        Mailstore {
            root: root.into(),
            hostname: hostname.into(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of folder `name` (already checked with [`check_name`]).
    pub fn dir_of(&self, name: &str) -> PathBuf {
        if name == INBOX {
            self.root.clone()
        } else {
            self.root.join(format!(".{name}"))
        }
    }

    pub(super) fn exists(&self, name: &str) -> bool {
        self.dir_of(name).join("cur").is_dir()
    }

    /// Every folder, INBOX first, the rest sorted.
    pub fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![INBOX.into()]),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Some(folder) = name.strip_prefix('.') else {
                continue;
            };
            if check_name(folder).ok().as_deref() != Some(folder) || folder == INBOX {
                continue;
            }
            if entry.path().join("cur").is_dir() {
                names.push(folder.to_owned());
            }
        }
        names.sort();
        names.insert(0, INBOX.into());
        Ok(names)
    }

    /// CREATE: the folder and any missing parents (RFC 3501 §6.3.3).
    pub fn create(&self, name: &str) -> Result<(), FolderError> {
        let name = check_name(name)?;
        if name == INBOX || self.exists(&name) {
            return Err(FolderError::AlreadyExists(name));
        }
        let levels: Vec<&str> = name.split(DELIMITER).collect();
        for depth in 1..=levels.len() {
            let partial = levels.get(..depth).unwrap_or_default().join(".");
            if partial.eq_ignore_ascii_case(INBOX) || self.exists(&partial) {
                continue;
            }
            make_folder(&self.dir_of(&partial))?;
        }
        Ok(())
    }

    /// DELETE: the folder and its messages. Its sub-folders stay (RFC 3501 §6.3.4).
    pub fn delete(&self, name: &str) -> Result<(), FolderError> {
        let name = check_name(name)?;
        if name == INBOX {
            return Err(FolderError::Refused("INBOX cannot be deleted"));
        }
        if !self.exists(&name) {
            return Err(FolderError::NoSuchFolder(name));
        }
        // One rename takes it out of sight (no leading dot: not a folder, not counted), then
        // the removal can take its time.
        let aside = self.root.join(format!(
            "dirmail-deleting-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::rename(self.dir_of(&name), &aside)?;
        fs::remove_dir_all(&aside)?;
        Ok(())
    }

    /// RENAME, with its sub-folders. Renaming INBOX moves its messages into a new folder and
    /// leaves INBOX empty (RFC 3501 §6.3.5).
    pub fn rename(&self, from: &str, to: &str) -> Result<(), FolderError> {
        let from = check_name(from)?;
        let to = check_name(to)?;
        if to == INBOX || self.exists(&to) {
            return Err(FolderError::AlreadyExists(to));
        }
        if !self.exists(&from) {
            return Err(FolderError::NoSuchFolder(from));
        }
        if from == INBOX {
            self.create(&to)?;
            let mut inbox = Folder::open(self, INBOX, true)?;
            let mut target = Folder::open(self, &to, false)?;
            let uids: Vec<u32> = inbox.entries().iter().map(|e| e.uid).collect();
            inbox.copy_to(&uids, &mut target, true)?;
            return Ok(());
        }
        let prefix = format!("{from}.");
        let children: Vec<String> = self
            .list()?
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect();
        if let Some((parent, _)) = to.rsplit_once(DELIMITER)
            && !self.exists(parent)
            && parent != INBOX
        {
            self.create(parent)?;
        }
        fs::rename(self.dir_of(&from), self.dir_of(&to))?;
        for child in children {
            let rest = child.get(prefix.len()..).unwrap_or_default();
            let target = format!("{to}.{rest}");
            if !self.exists(&target) {
                fs::rename(self.dir_of(&child), self.dir_of(&target))?;
            }
        }
        Ok(())
    }

    /// The subscribed folder names (LSUB).
    pub fn subscriptions(&self) -> io::Result<Vec<String>> {
        match fs::read_to_string(self.root.join(SUBSCRIPTIONS)) {
            Ok(text) => Ok(text
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// SUBSCRIBE / UNSUBSCRIBE. A name may be subscribed whether or not it exists.
    pub fn set_subscribed(&self, name: &str, subscribed: bool) -> Result<(), FolderError> {
        let name = check_name(name)?;
        let lock = lock_folder(&self.root)?;
        let mut names: BTreeSet<String> = self.subscriptions()?.into_iter().collect();
        let changed = if subscribed {
            names.insert(name)
        } else {
            names.remove(&name)
        };
        if changed {
            let mut text = String::new();
            for n in &names {
                text.push_str(n);
                text.push('\n');
            }
            replace_file(&self.root, SUBSCRIPTIONS, text.as_bytes())?;
        }
        drop(lock);
        Ok(())
    }

    /// STATUS counts; RECENT is what no SELECT has seen yet, and `new/` is left where it is.
    pub fn status(&self, name: &str) -> Result<FolderStatus, FolderError> {
        let name = check_name(name)?;
        let folder = Folder::open(self, &name, false)?;
        let mut status = FolderStatus {
            uidnext: folder.uidnext(),
            uidvalidity: folder.uidvalidity(),
            recent: folder.unclaimed_recent(),
            ..FolderStatus::default()
        };
        for entry in folder.entries() {
            status.messages += 1;
            status.size = status.size.saturating_add(entry.size);
            if !entry.flags.contains(Flags::SEEN) {
                status.unseen += 1;
            }
            if entry.flags.contains(Flags::DELETED) {
                status.deleted += 1;
            }
        }
        Ok(status)
    }

    /// A UIDVALIDITY never given before in this mailbox: the time, or one more than the last.
    pub(super) fn next_uidvalidity(&self) -> io::Result<u32> {
        let path = self.root.join(UIDVALIDITY_FILE);
        let mut file = private()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        file.lock()?;
        let last: u32 = io::read_to_string(&mut file)?.trim().parse().unwrap_or(0);
        let now = u32::try_from(now_secs()).unwrap_or(u32::MAX);
        let next = now.max(last.saturating_add(1)).max(1);
        file.set_len(0)?;
        io::Seek::seek(&mut file, io::SeekFrom::Start(0))?;
        file.write_all(format!("{next}\n").as_bytes())?;
        file.sync_all()?;
        Ok(next)
    }
}

/// Makes the directories of a folder (INBOX's too, when missing), private like the rest of
/// the store.
pub(super) fn make_folder(dir: &Path) -> Result<(), FolderError> {
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e.into()),
    }
    for sub in ["cur", "new", "tmp"] {
        crate::private_dir(&dir.join(sub)).map_err(|e| io::Error::other(e.to_string()))?;
    }
    crate::private_dir(dir).map_err(|e| io::Error::other(e.to_string()))?;
    private()
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(FOLDER_MARKER))?;
    Ok(())
}
