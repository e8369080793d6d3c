//! One open folder, as a session sees it: its messages in UID order as of the last scan, and
//! the operations on them (read, STORE, EXPUNGE, APPEND, COPY, MOVE), each under the folder's
//! lock.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::lock::{lock_folder, private};
use super::mailstore::make_folder;
use super::uidlist::{self, UidList};
use super::{FlagOp, Flags, FolderError, INBOX, Mailstore, check_name, keywords, now_secs};
use crate::maildir::{arrival_key, unique_name};
use dirmail_proto::imap::mailbox::keyword_bits;

/// One message of a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub uid: u32,
    pub flags: Flags,
    /// Octets of the file (RFC822.SIZE).
    pub size: u64,
    /// INTERNALDATE, seconds since the epoch: the delivery (or APPEND) time.
    pub internal_date: i64,
    /// `\Recent`: this `Folder` value (a SELECT) is the first to see it, or (EXAMINE,
    /// STATUS) no SELECT has seen it yet.
    pub recent: bool,
    pub(super) unique: String,
    /// Where it was last seen, relative to the folder (`cur/…`).
    pub(super) file: String,
}

impl Entry {
    pub fn unique(&self) -> &str {
        &self.unique
    }
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
    /// The folder's keyword names as of the last scan (see `keywords.rs`).
    keywords: Vec<String>,
    /// The lowest UID no SELECT has seen yet (see `uidlist.rs`).
    first_recent: u32,
    /// Opened by SELECT: messages new to the folder are `\Recent` here, and for no one after.
    claims: bool,
    /// Lets `Mailstore` hand out UIDVALIDITY values when the list is made.
    store: Mailstore,
}

impl Folder {
    /// Opens and scans folder `name`. With `take_new` (SELECT), messages in `new/` move to
    /// `cur/`, and those no SELECT has seen yet are `\Recent` for this value and, from now on,
    /// for no other; without (EXAMINE, STATUS, the target of COPY), `new/` is left alone and
    /// `\Recent` only looked at.
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
            keywords: Vec::new(),
            first_recent: 1,
            claims: take_new,
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

    /// Was this opened by SELECT (see [`Self::open`])? Its re-scans claim `\Recent` too.
    pub fn claims_recent(&self) -> bool {
        self.claims
    }

    /// How many messages no SELECT has seen yet (STATUS RECENT).
    pub fn unclaimed_recent(&self) -> u32 {
        let first = self.first_recent;
        u32::try_from(self.entries.iter().filter(|e| e.uid >= first).count()).unwrap_or(u32::MAX)
    }

    /// The messages in UID order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The folder's keyword names: keyword bit `i` of an entry's flags is `keywords()[i]`.
    pub fn keywords(&self) -> &[String] {
        &self.keywords
    }

    /// Gives keywords `names` their bits, adding names the folder lacks to its table (written
    /// durably before any file is renamed to carry them). Under the lock. `Err` names the
    /// keywords that found no room when `all` is asked for.
    fn keyword_bits_locked(&mut self, names: &[String], all: bool) -> Result<Flags, FolderError> {
        if names.is_empty() {
            return Ok(Flags::NONE);
        }
        let mut table = keywords::read(&self.dir)?;
        let before = table.len();
        let (bits, placed) = keyword_bits(&mut table, names);
        if all && !placed {
            return Err(FolderError::Refused(
                "a folder holds at most 26 keywords, and this one has no room for another",
            ));
        }
        if table.len() != before {
            keywords::write(&self.dir, &table)?;
        }
        self.keywords = table;
        Ok(bits)
    }

    fn lock(&self) -> io::Result<fs::File> {
        lock_folder(&self.dir)
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
        // A SELECTed folder claims what arrives in any of its scans (APPEND and COPY re-scan
        // too), so nothing it gave a UID stays unclaimed.
        let take_new = take_new || self.claims;
        self.keywords = keywords::read(&self.dir)?;
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
        // A list made here is written even when the folder is empty: its UIDVALIDITY must be
        // the one every later SELECT, STATUS and COPYUID sees.
        let mut changed = false;
        let mut list = if unknown || reload || self.uidvalidity == 0 {
            Some(match uidlist::read(&self.dir)? {
                Some(list) => list,
                None => {
                    changed = true;
                    UidList {
                        uidvalidity: self.store.next_uidvalidity()?,
                        uidnext: 1,
                        first_recent: 1,
                        known: HashMap::new(),
                    }
                }
            })
        } else {
            None
        };
        let first_recent = list.as_ref().map_or(self.first_recent, |l| l.first_recent);
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
                recent: recent || uid >= first_recent,
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
        self.first_recent = first_recent;
        if take_new && self.first_recent != self.uidnext {
            self.first_recent = self.uidnext;
            changed = true;
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
        uidlist::write(
            &self.dir,
            (self.uidvalidity, self.uidnext, self.first_recent),
            &self.entries,
        )
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

    /// STORE: changes the system `flags` and the keywords `names` of `uids` on disk, starting
    /// from each file's current flags (so concurrent changes by others are kept), and returns
    /// the resulting flags of those still there (their keyword bits index [`Self::keywords`]).
    /// Refused, changing nothing, when a new keyword finds no room in the folder's table.
    pub fn store(
        &mut self,
        uids: &[u32],
        op: FlagOp,
        flags: Flags,
        names: &[String],
    ) -> Result<Vec<(u32, Flags)>, FolderError> {
        let _lock = self.lock()?;
        self.keywords = keywords::read(&self.dir)?;
        let flags = flags.system().union(self.keyword_bits_locked(names, true)?);
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
                    Err(e) => return Err(e.into()),
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
            // This view may be older than the list on disk (another session appended since
            // our last scan): merge with it first, or writing our view would drop those
            // messages' UIDs and a later scan would number them again.
            self.scan_locked(false, true)?;
            self.write_uidlist()?;
        }
        Ok(gone)
    }

    /// APPEND: a durable new message in `cur/` with the system `flags`, the keywords `names`
    /// (those the folder has no room for are dropped) and INTERNALDATE `date` (now when
    /// `None`). Returns its UID.
    pub fn append(
        &mut self,
        message: &[u8],
        flags: Flags,
        names: &[String],
        date: Option<i64>,
    ) -> Result<u32, FolderError> {
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
            let flags = flags
                .system()
                .union(self.keyword_bits_locked(names, false)?);
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
            if self.claims {
                self.first_recent = self.uidnext;
            }
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
        self.keywords = keywords::read(&self.dir)?;
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
            let new = self.link_one(&path, &entry, entry.flags, &self.dir.clone(), self.uidnext)?;
            self.uidnext = self.uidnext.saturating_add(1);
            pairs.push((uid, new.uid));
            made.push(new);
        }
        if self.claims {
            self.first_recent = self.uidnext;
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
        // The keywords go by name: the target's table gets the names first (written before any
        // file carries their letters); one that finds no room there is dropped.
        let mut table = target.keywords.clone();
        let mut flags = HashMap::new();
        for &uid in uids {
            if let Some(entry) = self.position(uid).and_then(|i| self.entries.get(i)) {
                flags.insert(uid, entry.flags.remap(&self.keywords, &mut table));
            }
        }
        if table.len() != target.keywords.len() {
            keywords::write(&target.dir, &table)?;
            target.keywords = table;
        }
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
            let flags = flags.get(&uid).copied().unwrap_or(entry.flags.system());
            let new = self.link_one(&path, &entry, flags, &target.dir, target.uidnext)?;
            target.uidnext = target.uidnext.saturating_add(1);
            pairs.push((uid, new.uid));
            target.entries.push(new);
        }
        if target.claims {
            target.first_recent = target.uidnext;
        }
        if !pairs.is_empty() {
            fs::File::open(target.dir.join("cur"))?.sync_all()?;
            target.reindex();
            target.write_uidlist()?;
        }
        Ok(pairs)
    }

    /// Links (or, across file systems, copies) one message into `dir/cur/` under a new unique
    /// name, with `flags`.
    fn link_one(
        &self,
        path: &Path,
        entry: &Entry,
        flags: Flags,
        dir: &Path,
        uid: u32,
    ) -> io::Result<Entry> {
        let unique = format!("{},S={}", unique_name(&self.hostname), entry.size);
        let file = format!("cur/{unique}:2,{}", flags.apply_to_info(""));
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
            flags,
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
