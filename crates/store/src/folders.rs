//! IMAP's view of a mailbox's Maildir: Maildir++ folders (`.Sent`, `.Archive.2024`), flags in
//! the file names (`:2,FRS`), and UIDs that survive restarts and are shared by every session.
//!
//! **Where UIDs live, and why there.** Each folder holds a `dirmail-uidlist` file (in the spirit
//! of Dovecot's `dovecot-uidlist`): a header with UIDVALIDITY and UIDNEXT, then one line per
//! message, `<uid> <internal date> <size> <unique name>`. It is changed only under an exclusive
//! lock on `dirmail-uidlist.lock` and replaced whole (written aside, fsynced, renamed over).
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

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::maildir::{arrival_key, unique_name};

pub use dirmail_proto::imap::mailbox::{
    DELIMITER, FlagOp, Flags, FolderStatus, INBOX, InvalidName, MAX_NAME_LEN, check_name,
};

/// The per-folder UID list.
pub const UIDLIST: &str = "dirmail-uidlist";
const UIDLIST_LOCK: &str = "dirmail-uidlist.lock";
const UIDLIST_TMP: &str = "dirmail-uidlist.tmp";
const UIDLIST_MAGIC: &str = "dirmail-uidlist v1";
/// The last UIDVALIDITY handed out in this mailbox, so a folder deleted and made again within
/// the same second still gets a new one.
const UIDVALIDITY_FILE: &str = "dirmail-uidvalidity";
const SUBSCRIPTIONS: &str = "dirmail-subscriptions";
/// Courier's marker of a Maildir++ sub-folder; other tools look for it.
const FOLDER_MARKER: &str = "maildirfolder";
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

/// One message of a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub uid: u32,
    pub flags: Flags,
    /// Octets of the file (RFC822.SIZE).
    pub size: u64,
    /// INTERNALDATE, seconds since the epoch: the delivery (or APPEND) time.
    pub internal_date: i64,
    /// This `Folder` value moved it out of `new/`: it is `\Recent` for this session only.
    pub recent: bool,
    unique: String,
    /// Where it was last seen, relative to the folder (`cur/…`).
    file: String,
}

impl Entry {
    pub fn unique(&self) -> &str {
        &self.unique
    }
}

/// The mailbox's Maildir, seen as IMAP folders.
#[derive(Debug, Clone)]
pub struct Mailstore {
    root: PathBuf,
    /// Goes into the unique names of messages made here (APPEND, COPY).
    hostname: String,
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

    fn exists(&self, name: &str) -> bool {
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
        let lock = lock_file(&self.root.join(UIDLIST_LOCK))?;
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

    /// STATUS counts; `new/` is counted as recent and left where it is.
    pub fn status(&self, name: &str) -> Result<FolderStatus, FolderError> {
        let name = check_name(name)?;
        let folder = Folder::open(self, &name, false)?;
        let mut status = FolderStatus {
            uidnext: folder.uidnext,
            uidvalidity: folder.uidvalidity,
            ..FolderStatus::default()
        };
        for entry in &folder.entries {
            status.messages += 1;
            status.size = status.size.saturating_add(entry.size);
            if !entry.flags.contains(Flags::SEEN) {
                status.unseen += 1;
            }
            if entry.flags.contains(Flags::DELETED) {
                status.deleted += 1;
            }
            if entry.file.starts_with("new/") {
                status.recent += 1;
            }
        }
        Ok(status)
    }

    /// A UIDVALIDITY never given before in this mailbox: the time, or one more than the last.
    fn next_uidvalidity(&self) -> io::Result<u32> {
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

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn make_folder(dir: &Path) -> Result<(), FolderError> {
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e.into()),
    }
    for sub in ["cur", "new", "tmp"] {
        super::private_dir(&dir.join(sub)).map_err(|e| io::Error::other(e.to_string()))?;
    }
    super::private_dir(dir).map_err(|e| io::Error::other(e.to_string()))?;
    private()
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(FOLDER_MARKER))?;
    Ok(())
}

/// Options for a file only the server may read (0600), like the rest of the store.
fn private() -> fs::OpenOptions {
    let mut options = fs::OpenOptions::new();
    options.mode(0o600);
    options
}

fn lock_file(path: &Path) -> io::Result<fs::File> {
    let file = private()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    // Released when the file is closed (dropped).
    file.lock()?;
    Ok(file)
}

/// Replaces `dir/name` with `bytes` durably: written aside, fsynced, renamed over, and the
/// directory fsynced, so a crash leaves the old file or the new one.
fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
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

/// One file found in `new/` or `cur/`.
#[derive(Debug)]
struct Found {
    unique: String,
    /// `new/NAME` or `cur/NAME`.
    file: String,
    info: String,
}

fn split_name(name: &str) -> (&str, &str) {
    match name.split_once(':') {
        Some((unique, info)) => (unique, info.strip_prefix("2,").unwrap_or("")),
        None => (name, ""),
    }
}

fn list_files(dir: &Path) -> io::Result<Vec<Found>> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        let entries = match fs::read_dir(dir.join(sub)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') || name.contains(char::is_whitespace) {
                continue;
            }
            let (unique, info) = split_name(&name);
            out.push(Found {
                unique: unique.to_owned(),
                info: info.to_owned(),
                file: format!("{sub}/{name}"),
            });
        }
    }
    Ok(out)
}

/// The UID list as read from disk.
#[derive(Debug, Default)]
struct UidList {
    uidvalidity: u32,
    uidnext: u32,
    /// unique name → (uid, internal date, size)
    known: HashMap<String, (u32, i64, u64)>,
}

fn read_uidlist(dir: &Path) -> io::Result<Option<UidList>> {
    let text = match fs::read_to_string(dir.join(UIDLIST)) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Ok(None);
    };
    let Some(numbers) = header.strip_prefix(UIDLIST_MAGIC) else {
        return Ok(None);
    };
    let mut numbers = numbers.split_whitespace().map(str::parse::<u32>);
    let (Some(Ok(uidvalidity)), Some(Ok(uidnext))) = (numbers.next(), numbers.next()) else {
        return Ok(None);
    };
    if uidvalidity == 0 || uidnext == 0 {
        return Ok(None);
    }
    let mut list = UidList {
        uidvalidity,
        uidnext,
        known: HashMap::new(),
    };
    for line in lines {
        let mut fields = line.splitn(4, ' ');
        let (Some(uid), Some(date), Some(size), Some(unique)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (Ok(uid), Ok(date), Ok(size)) = (uid.parse::<u32>(), date.parse(), size.parse()) else {
            continue;
        };
        if uid == 0 {
            continue;
        }
        list.uidnext = list.uidnext.max(uid.saturating_add(1));
        list.known.insert(unique.to_owned(), (uid, date, size));
    }
    Ok(Some(list))
}

/// An open folder: its messages in UID order, as of the last scan.
#[derive(Debug)]
pub struct Folder {
    name: String,
    dir: PathBuf,
    hostname: String,
    uidvalidity: u32,
    uidnext: u32,
    entries: Vec<Entry>,
    /// Unique name → index in `entries`.
    index: HashMap<String, usize>,
    /// Lets `Mailstore` hand out UIDVALIDITY values when the list is made.
    store: Mailstore,
}

impl Folder {
    /// Opens and scans folder `name`. With `take_new`, messages in `new/` move to `cur/` and are
    /// `\Recent` for this value (SELECT, EXAMINE); without, they are left there (STATUS).
    pub fn open(store: &Mailstore, name: &str, take_new: bool) -> Result<Folder, FolderError> {
        let name = check_name(name)?;
        let dir = store.dir_of(&name);
        if !dir.join("cur").is_dir() {
            if name == INBOX {
                make_folder(&dir)?;
            } else {
                return Err(FolderError::NoSuchFolder(name));
            }
        }
        let mut folder = Folder {
            name,
            dir,
            hostname: store.hostname.clone(),
            uidvalidity: 0,
            uidnext: 1,
            entries: Vec::new(),
            index: HashMap::new(),
            store: store.clone(),
        };
        folder.scan(take_new)?;
        Ok(folder)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn uidvalidity(&self) -> u32 {
        self.uidvalidity
    }

    pub fn uidnext(&self) -> u32 {
        self.uidnext
    }

    /// The messages in UID order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    fn lock(&self) -> io::Result<fs::File> {
        lock_file(&self.dir.join(UIDLIST_LOCK))
    }

    /// Brings the view up to date with the directory: new files get UIDs (persisted before
    /// they are shown), vanished ones drop out, renamed ones get their new flags.
    pub fn scan(&mut self, take_new: bool) -> io::Result<()> {
        let _lock = self.lock()?;
        self.scan_locked(take_new, false)
    }

    /// The scan, under the lock. `reload` reads the UID list even when every file is known, so
    /// that UIDNEXT is the one on disk before new UIDs are given (APPEND, COPY).
    fn scan_locked(&mut self, take_new: bool, reload: bool) -> io::Result<()> {
        let mut found = list_files(&self.dir)?;
        let mut moved = std::collections::HashSet::new();
        if take_new {
            for f in found.iter_mut().filter(|f| f.file.starts_with("new/")) {
                let target = format!("cur/{}:2,{}", f.unique, f.info);
                match fs::rename(self.dir.join(&f.file), self.dir.join(&target)) {
                    Ok(()) => {
                        f.file = target;
                        moved.insert(f.unique.clone());
                    }
                    // Gone meanwhile (a POP3 QUIT); dropped below.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => f.file.clear(),
                    Err(e) => return Err(e),
                }
            }
            found.retain(|f| !f.file.is_empty());
        }
        // A file seen in both (moved while listed) counts once, in `cur/`.
        found.sort_by(|a, b| a.unique.cmp(&b.unique).then(b.file.cmp(&a.file)));
        found.dedup_by(|later, first| later.unique == first.unique);
        // New messages get their UIDs in arrival order, as POP3 numbers them: by the numbers
        // in the name, since older names (and other tools') do not pad the microseconds.
        found.sort_by_cached_key(|f| arrival_key(&f.unique));

        let unknown = found.iter().any(|f| !self.index.contains_key(&f.unique));
        let mut list = if unknown || reload || self.uidvalidity == 0 {
            Some(match read_uidlist(&self.dir)? {
                Some(list) => list,
                None => UidList {
                    uidvalidity: self.store.next_uidvalidity()?,
                    uidnext: 1,
                    known: HashMap::new(),
                },
            })
        } else {
            None
        };
        let mut changed = false;
        let mut previous: HashMap<String, Entry> = std::mem::take(&mut self.entries)
            .into_iter()
            .map(|e| (e.unique.clone(), e))
            .collect();
        let mut entries = Vec::with_capacity(found.len());
        for f in found {
            let recent = moved.contains(&f.unique);
            if let Some(old) = previous.remove(&f.unique) {
                entries.push(Entry {
                    flags: Flags::from_info(&f.info),
                    recent: old.recent || recent,
                    file: f.file,
                    ..old
                });
                continue;
            }
            let Some(list) = list.as_mut() else { continue };
            let (uid, internal_date, size) = match list.known.get(&f.unique) {
                Some(known) => *known,
                None => {
                    let meta = match fs::metadata(self.dir.join(&f.file)) {
                        Ok(meta) => meta,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e),
                    };
                    let date = meta
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map(|d| d.as_secs() as i64)
                        .unwrap_or_else(now_secs);
                    let uid = list.uidnext;
                    list.uidnext = list.uidnext.saturating_add(1);
                    list.known.insert(f.unique.clone(), (uid, date, meta.len()));
                    changed = true;
                    (uid, date, meta.len())
                }
            };
            entries.push(Entry {
                uid,
                flags: Flags::from_info(&f.info),
                size,
                internal_date,
                recent,
                unique: f.unique,
                file: f.file,
            });
        }
        entries.sort_by_key(|e| e.uid);
        if let Some(list) = &list {
            self.uidvalidity = list.uidvalidity;
            self.uidnext = self.uidnext.max(list.uidnext);
            // Entries of vanished files are pruned when the list is written anyway.
            changed |= list.known.len() != entries.len();
        }
        self.entries = entries;
        self.reindex();
        if changed {
            self.write_uidlist()?;
        }
        Ok(())
    }

    fn reindex(&mut self) {
        self.index = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.unique.clone(), i))
            .collect();
    }

    /// Writes the list of the current entries (vanished ones are pruned). Under the lock.
    fn write_uidlist(&self) -> io::Result<()> {
        let mut text = String::with_capacity(64 + self.entries.len() * 72);
        text.push_str(&format!(
            "{UIDLIST_MAGIC} {} {}\n",
            self.uidvalidity, self.uidnext
        ));
        for e in &self.entries {
            text.push_str(&format!(
                "{} {} {} {}\n",
                e.uid, e.internal_date, e.size, e.unique
            ));
        }
        let tmp = self.dir.join(UIDLIST_TMP);
        let mut file = private()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, self.dir.join(UIDLIST))?;
        fs::File::open(&self.dir)?.sync_all()
    }

    fn position(&self, uid: u32) -> Option<usize> {
        self.entries.binary_search_by_key(&uid, |e| e.uid).ok()
    }

    /// The current file of entry `i`, following a rename by another session; `None` if gone.
    fn locate(&mut self, i: usize) -> io::Result<Option<PathBuf>> {
        let Some(entry) = self.entries.get(i) else {
            return Ok(None);
        };
        if entry.file.is_empty() {
            return Ok(None);
        }
        let path = self.dir.join(&entry.file);
        if path.exists() {
            return Ok(Some(path));
        }
        self.relist()?;
        Ok(self
            .entries
            .get(i)
            .filter(|e| !e.file.is_empty())
            .map(|e| self.dir.join(&e.file)))
    }

    /// One listing brings every entry's file name and flags up to date (an entry whose file is
    /// gone gets an empty name until the next scan drops it), so many stale entries cost one
    /// listing, not one each.
    fn relist(&mut self) -> io::Result<()> {
        let found: HashMap<String, (String, String)> = list_files(&self.dir)?
            .into_iter()
            .map(|f| (f.unique, (f.file, f.info)))
            .collect();
        for entry in &mut self.entries {
            match found.get(&entry.unique) {
                Some((file, info)) => {
                    entry.file.clone_from(file);
                    entry.flags = Flags::from_info(info);
                }
                None => entry.file.clear(),
            }
        }
        Ok(())
    }

    /// The message's bytes; `None` when it is gone (expunged by another session, or a POP3
    /// QUIT).
    pub fn read(&mut self, uid: u32) -> io::Result<Option<Vec<u8>>> {
        let Some(i) = self.position(uid) else {
            return Ok(None);
        };
        for _ in 0..3 {
            let Some(path) = self.locate(i)? else {
                return Ok(None);
            };
            match fs::read(&path) {
                Ok(bytes) => return Ok(Some(bytes)),
                // Renamed between locating and reading: look again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// STORE: changes the flags of `uids` on disk, starting from each file's current flags (so
    /// concurrent changes by others are kept), and returns the resulting flags of those still
    /// there.
    pub fn store(
        &mut self,
        uids: &[u32],
        op: FlagOp,
        flags: Flags,
    ) -> io::Result<Vec<(u32, Flags)>> {
        let _lock = self.lock()?;
        let mut out = Vec::with_capacity(uids.len());
        for &uid in uids {
            let Some(i) = self.position(uid) else {
                continue;
            };
            let Some(path) = self.locate(i)? else {
                continue;
            };
            let Some(entry) = self.entries.get_mut(i) else {
                continue;
            };
            let name = entry.file.rsplit('/').next().unwrap_or_default().to_owned();
            let (_, info) = split_name(&name);
            let current = Flags::from_info(info);
            let wanted = op.apply(current, flags);
            if wanted != current || entry.file.starts_with("new/") {
                let target = format!("cur/{}:2,{}", entry.unique, wanted.apply_to_info(info));
                match fs::rename(&path, self.dir.join(&target)) {
                    Ok(()) => entry.file = target,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
            }
            entry.flags = wanted;
            out.push((uid, wanted));
        }
        Ok(out)
    }

    /// EXPUNGE: removes those of `uids` whose file still carries `\Deleted` (another session
    /// may have taken it off). Returns the UIDs now gone, including any already gone.
    pub fn expunge(&mut self, uids: &[u32]) -> io::Result<Vec<u32>> {
        let _lock = self.lock()?;
        self.remove_locked(uids, true)
    }

    fn remove_locked(&mut self, uids: &[u32], only_deleted: bool) -> io::Result<Vec<u32>> {
        let mut gone = Vec::new();
        for &uid in uids {
            let Some(i) = self.position(uid) else {
                continue;
            };
            match self.locate(i)? {
                None => gone.push(uid),
                Some(path) => {
                    let still_deleted = self
                        .entries
                        .get(i)
                        .is_some_and(|e| e.flags.contains(Flags::DELETED));
                    if only_deleted && !still_deleted {
                        continue;
                    }
                    match fs::remove_file(&path) {
                        Ok(()) => gone.push(uid),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => gone.push(uid),
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        if !gone.is_empty() {
            for sub in ["cur", "new"] {
                fs::File::open(self.dir.join(sub))?.sync_all()?;
            }
            let gone_set: std::collections::HashSet<u32> = gone.iter().copied().collect();
            self.entries.retain(|e| !gone_set.contains(&e.uid));
            self.reindex();
            self.write_uidlist()?;
        }
        Ok(gone)
    }

    /// APPEND: a durable new message in `cur/` with `flags` and INTERNALDATE `date` (now when
    /// `None`). Returns its UID.
    pub fn append(&mut self, message: &[u8], flags: Flags, date: Option<i64>) -> io::Result<u32> {
        let unique = format!("{},S={}", unique_name(&self.hostname), message.len());
        let tmp = self.dir.join("tmp").join(&unique);
        let date = date.unwrap_or_else(now_secs);
        let result = (|| {
            let mut file = private().write(true).create_new(true).open(&tmp)?;
            file.write_all(message)?;
            if let Ok(secs) = u64::try_from(date) {
                file.set_modified(UNIX_EPOCH + Duration::from_secs(secs))?;
            }
            file.sync_all()?;
            drop(file);
            let _lock = self.lock()?;
            self.scan_locked(false, true)?;
            let file = format!("cur/{unique}:2,{}", flags.apply_to_info(""));
            fs::hard_link(&tmp, self.dir.join(&file))?;
            fs::File::open(self.dir.join("cur"))?.sync_all()?;
            let uid = self.uidnext;
            self.uidnext = self.uidnext.saturating_add(1);
            self.entries.push(Entry {
                uid,
                flags,
                size: message.len() as u64,
                internal_date: date,
                recent: true,
                unique: unique.clone(),
                file,
            });
            self.reindex();
            self.write_uidlist()?;
            Ok(uid)
        })();
        let _ = fs::remove_file(&tmp);
        result
    }

    /// COPY (or MOVE, with `remove`): the messages of `uids` that still exist go into `target`
    /// with their flags and dates. Returns (source UID, new UID) pairs.
    pub fn copy_to(
        &mut self,
        uids: &[u32],
        target: &mut Folder,
        remove: bool,
    ) -> io::Result<Vec<(u32, u32)>> {
        // Two locks, always taken in path order, so two sessions copying in opposite
        // directions cannot deadlock.
        let (_first, _second) = if self.dir <= target.dir {
            let a = self.lock()?;
            (a, target.lock()?)
        } else {
            let b = target.lock()?;
            (self.lock()?, b)
        };
        target.scan_locked(false, true)?;
        let pairs = self.link_into(uids, target)?;
        if remove {
            let moved: Vec<u32> = pairs.iter().map(|(from, _)| *from).collect();
            self.remove_locked(&moved, false)?;
        }
        Ok(pairs)
    }

    /// COPY into the same folder: new UIDs for copies of the messages.
    pub fn copy_here(&mut self, uids: &[u32], remove: bool) -> io::Result<Vec<(u32, u32)>> {
        let _lock = self.lock()?;
        self.scan_locked(false, true)?;
        let mut pairs = Vec::new();
        let mut made = Vec::new();
        for &uid in uids {
            let Some(i) = self.position(uid) else {
                continue;
            };
            let Some(path) = self.locate(i)? else {
                continue;
            };
            let Some(entry) = self.entries.get(i).cloned() else {
                continue;
            };
            let new = self.link_one(&path, &entry, &self.dir.clone(), self.uidnext)?;
            self.uidnext = self.uidnext.saturating_add(1);
            pairs.push((uid, new.uid));
            made.push(new);
        }
        self.entries.extend(made);
        self.reindex();
        self.write_uidlist()?;
        if remove {
            let moved: Vec<u32> = pairs.iter().map(|(from, _)| *from).collect();
            self.remove_locked(&moved, false)?;
        }
        Ok(pairs)
    }

    fn link_into(&mut self, uids: &[u32], target: &mut Folder) -> io::Result<Vec<(u32, u32)>> {
        let mut pairs = Vec::new();
        for &uid in uids {
            let Some(i) = self.position(uid) else {
                continue;
            };
            let Some(path) = self.locate(i)? else {
                continue;
            };
            let Some(entry) = self.entries.get(i).cloned() else {
                continue;
            };
            let new = self.link_one(&path, &entry, &target.dir, target.uidnext)?;
            target.uidnext = target.uidnext.saturating_add(1);
            pairs.push((uid, new.uid));
            target.entries.push(new);
        }
        if !pairs.is_empty() {
            fs::File::open(target.dir.join("cur"))?.sync_all()?;
            target.reindex();
            target.write_uidlist()?;
        }
        Ok(pairs)
    }

    /// Links (or, across file systems, copies) one message into `dir/cur/` under a new unique
    /// name.
    fn link_one(&self, path: &Path, entry: &Entry, dir: &Path, uid: u32) -> io::Result<Entry> {
        let unique = format!("{},S={}", unique_name(&self.hostname), entry.size);
        let file = format!("cur/{unique}:2,{}", entry.flags.apply_to_info(""));
        let dest = dir.join(&file);
        if let Err(e) = fs::hard_link(path, &dest) {
            if e.kind() == io::ErrorKind::AlreadyExists {
                return Err(e);
            }
            fs::copy(path, &dest)?;
            fs::File::open(&dest)?.sync_all()?;
        }
        Ok(Entry {
            uid,
            flags: entry.flags,
            size: entry.size,
            internal_date: entry.internal_date,
            recent: true,
            unique,
            file,
        })
    }
}

/// Cheap evidence that a folder changed: the modification times of `new/` and `cur/`, which
/// move whenever a message arrives, leaves or is renamed. A session waiting in IDLE compares
/// these rather than scanning.
pub fn change_stamp(dir: &Path) -> Option<(SystemTime, SystemTime)> {
    let new = fs::metadata(dir.join("new"))
        .and_then(|m| m.modified())
        .ok()?;
    let cur = fs::metadata(dir.join("cur"))
        .and_then(|m| m.modified())
        .ok()?;
    Some((new, cur))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailstore() -> (tempfile::TempDir, Mailstore) {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("box");
        super::super::maildir::create(&dir).unwrap();
        (root, Mailstore::new(dir, "mail.example.jp"))
    }

    fn deliver(store: &Mailstore, text: &str) -> PathBuf {
        super::super::maildir::deliver(store.root(), "mail.example.jp", text.as_bytes()).unwrap()
    }

    #[test]
    fn flags_round_trip_through_names() {
        let f = Flags::SEEN.union(Flags::FLAGGED);
        assert_eq!(f.apply_to_info("Pa"), "FPSa");
        assert_eq!(Flags::from_info("FPSa"), f);
        assert_eq!(Flags::NONE.apply_to_info("ST"), "");
        assert_eq!(FlagOp::Remove.apply(f, Flags::SEEN), Flags::FLAGGED);
    }

    #[test]
    fn names_map_into_the_maildir_only() {
        assert_eq!(check_name("inbox").unwrap(), "INBOX");
        assert_eq!(check_name("Inbox.Sub").unwrap(), "INBOX.Sub");
        assert_eq!(check_name("Archive.2024").unwrap(), "Archive.2024");
        for bad in ["", ".x", "x.", "a..b", "a/b", "..", "x\ny"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn uids_are_given_once_and_kept() {
        let (_root, store) = mailstore();
        deliver(&store, "Subject: 1\r\n\r\none\r\n");
        deliver(&store, "Subject: 2\r\n\r\ntwo\r\n");
        let mut a = Folder::open(&store, "INBOX", true).unwrap();
        let uids: Vec<u32> = a.entries().iter().map(|e| e.uid).collect();
        assert_eq!(uids, [1, 2]);
        assert!(
            a.entries()
                .iter()
                .all(|e| e.recent && e.file.starts_with("cur/"))
        );
        let mode = |name: &str| {
            use std::os::unix::fs::PermissionsExt;
            fs::metadata(store.root().join(name))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(UIDLIST), 0o600, "private like the rest of the store");
        assert_eq!(mode(UIDLIST_LOCK), 0o600);
        // Another session sees the same UIDs, none of them recent for it.
        let b = Folder::open(&store, "INBOX", true).unwrap();
        assert_eq!(
            b.entries().iter().map(|e| e.uid).collect::<Vec<_>>(),
            [1, 2]
        );
        assert!(b.entries().iter().all(|e| !e.recent));
        assert_eq!(a.uidvalidity(), b.uidvalidity());
        // New mail gets the next UID, in whichever session sees it first.
        deliver(&store, "Subject: 3\r\n\r\nthree\r\n");
        let c = Folder::open(&store, "INBOX", false).unwrap();
        assert_eq!(c.entries().last().map(|e| e.uid), Some(3));
        a.scan(true).unwrap();
        assert_eq!(a.entries().last().map(|e| e.uid), Some(3));
        assert_eq!(a.uidnext(), 4);
    }

    #[test]
    fn new_messages_are_numbered_in_arrival_order() {
        let (_root, store) = mailstore();
        // Older names, unpadded: as text, M1000 sorts before M999.
        for name in ["1700000000.M1000P1I1.h,S=3", "1700000000.M999P1I0.h,S=3"] {
            fs::write(store.root().join("new").join(name), "one").unwrap();
        }
        deliver(&store, "Subject: 3\r\n\r\nthree\r\n");
        let folder = Folder::open(&store, "INBOX", true).unwrap();
        let order: Vec<(u32, &str)> = folder
            .entries()
            .iter()
            .map(|e| (e.uid, e.unique().split(".h").next().unwrap_or("")))
            .collect();
        assert_eq!(order[0], (1, "1700000000.M999P1I0"));
        assert_eq!(order[1], (2, "1700000000.M1000P1I1"));
        assert_eq!(order[2].0, 3, "delivered now, after both");
    }

    #[test]
    fn store_expunge_and_the_next_uid() {
        let (_root, store) = mailstore();
        deliver(&store, "Subject: 1\r\n\r\none\r\n");
        deliver(&store, "Subject: 2\r\n\r\ntwo\r\n");
        let mut a = Folder::open(&store, "INBOX", true).unwrap();
        let mut b = Folder::open(&store, "INBOX", true).unwrap();
        let changed = a
            .store(&[2], FlagOp::Add, Flags::DELETED.union(Flags::SEEN))
            .unwrap();
        assert_eq!(changed, [(2, Flags::DELETED.union(Flags::SEEN))]);
        // b still has the old name; it follows the rename.
        assert!(b.read(2).unwrap().is_some());
        b.store(&[2], FlagOp::Add, Flags::FLAGGED).unwrap();
        a.scan(true).unwrap();
        assert_eq!(
            a.entries()[1].flags,
            Flags::DELETED.union(Flags::SEEN).union(Flags::FLAGGED)
        );
        assert_eq!(
            a.expunge(&[1, 2]).unwrap(),
            [2],
            "only \\Deleted messages go"
        );
        b.scan(true).unwrap();
        assert_eq!(b.entries().len(), 1);
        assert_eq!(b.read(2).unwrap(), None);
        // The UID of an expunged message is never given again.
        deliver(&store, "Subject: 3\r\n\r\nthree\r\n");
        b.scan(true).unwrap();
        assert_eq!(b.entries().last().map(|e| e.uid), Some(3));
    }

    #[test]
    fn folders_append_copy_move_rename_delete() {
        let (_root, store) = mailstore();
        store.create("Archive.2024").unwrap();
        assert_eq!(store.list().unwrap(), ["INBOX", "Archive", "Archive.2024"]);
        assert!(
            matches!(store.create("archive.2024"), Ok(())),
            "names are case-sensitive"
        );
        assert!(matches!(
            store.create("Archive"),
            Err(FolderError::AlreadyExists(_))
        ));
        assert!(store.root().join(".Archive.2024/maildirfolder").exists());

        let mut inbox = Folder::open(&store, "INBOX", true).unwrap();
        let uid = inbox
            .append(b"Subject: a\r\n\r\nx\r\n", Flags::SEEN, Some(1_000_000_000))
            .unwrap();
        assert_eq!(uid, 1);
        assert_eq!(inbox.entries()[0].internal_date, 1_000_000_000);
        let mut archive = Folder::open(&store, "Archive", true).unwrap();
        let pairs = inbox.copy_to(&[1], &mut archive, false).unwrap();
        assert_eq!(pairs, [(1, 1)]);
        let pairs = inbox.copy_to(&[1], &mut archive, true).unwrap();
        assert_eq!(pairs, [(1, 2)]);
        assert!(inbox.entries().is_empty());
        let status = store.status("Archive").unwrap();
        assert_eq!((status.messages, status.unseen, status.uidnext), (2, 0, 3));
        assert_eq!(archive.copy_here(&[2], false).unwrap(), [(2, 3)]);

        store.rename("Archive", "Old").unwrap();
        assert_eq!(
            store.list().unwrap(),
            ["INBOX", "Old", "Old.2024", "archive", "archive.2024"]
        );
        let old = Folder::open(&store, "Old", false).unwrap();
        assert_eq!(
            old.entries().len(),
            3,
            "messages and UIDs go with the folder"
        );
        assert_eq!(old.uidvalidity(), archive.uidvalidity());
        store.delete("Old").unwrap();
        assert_eq!(
            store.list().unwrap(),
            ["INBOX", "Old.2024", "archive", "archive.2024"]
        );
        assert!(matches!(
            store.delete("INBOX"),
            Err(FolderError::Refused(_))
        ));
        assert!(matches!(
            Folder::open(&store, "Old", false),
            Err(FolderError::NoSuchFolder(_))
        ));

        // A folder made again gets a new UIDVALIDITY.
        store.create("Old").unwrap();
        assert_ne!(
            Folder::open(&store, "Old", false).unwrap().uidvalidity(),
            old.uidvalidity()
        );
    }

    #[test]
    fn renaming_inbox_moves_its_messages() {
        let (_root, store) = mailstore();
        deliver(&store, "Subject: 1\r\n\r\none\r\n");
        store.rename("INBOX", "Saved").unwrap();
        assert_eq!(
            Folder::open(&store, "INBOX", false)
                .unwrap()
                .entries()
                .len(),
            0
        );
        assert_eq!(
            Folder::open(&store, "Saved", false)
                .unwrap()
                .entries()
                .len(),
            1
        );
    }

    #[test]
    fn subscriptions_and_status_leave_new_alone() {
        let (_root, store) = mailstore();
        store.set_subscribed("Sent", true).unwrap();
        store.set_subscribed("inbox", true).unwrap();
        assert_eq!(store.subscriptions().unwrap(), ["INBOX", "Sent"]);
        store.set_subscribed("Sent", false).unwrap();
        assert_eq!(store.subscriptions().unwrap(), ["INBOX"]);
        let path = deliver(&store, "Subject: 1\r\n\r\none\r\n");
        let status = store.status("INBOX").unwrap();
        assert_eq!((status.messages, status.recent, status.unseen), (1, 1, 1));
        assert!(path.exists(), "STATUS does not move new/ to cur/");
    }

    #[test]
    fn a_lost_uidlist_starts_a_new_uidvalidity() {
        let (_root, store) = mailstore();
        deliver(&store, "Subject: 1\r\n\r\none\r\n");
        let a = Folder::open(&store, "INBOX", true).unwrap();
        fs::write(store.root().join(UIDLIST), "garbage").unwrap();
        let b = Folder::open(&store, "INBOX", true).unwrap();
        assert_ne!(a.uidvalidity(), b.uidvalidity());
        assert_eq!(b.entries().len(), 1);
    }
}
