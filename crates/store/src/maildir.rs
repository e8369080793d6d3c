//! The mail root: where each mailbox's Maildir lives (docs/spec.md §3), creating and removing them,
//! counting what they hold, durable delivery (R18) from memory or from a spool file, and
//! sweeping what a crash left in `tmp/`.

use std::fs;
use std::path::{Path, PathBuf};

use super::{StoreError, io_context, private_dir};

pub use dirmail_rules::Layout;

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
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            // The size in the name (`,S=`) spares a stat per message: a delivery into a big
            // mailbox with a quota reads the whole listing (R15).
            let size = match size_in_name(&name) {
                Some(size) => size,
                None => match entry.metadata() {
                    Ok(meta) => meta.len(),
                    Err(_) => continue,
                },
            };
            total.messages += 1;
            total.bytes += size;
        }
    }
    Ok(total)
}

/// The size a Maildir++ name carries (`…,S=4096:2,S`), as dirmail and most servers write it.
pub fn size_in_name(name: &str) -> Option<u64> {
    let base = name.split(":2,").next().unwrap_or(name);
    let (_, rest) = base.rsplit_once(",S=")?;
    let digits = rest.split(',').next().unwrap_or(rest);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

// ---- delivery and reading (R18, R20) ----------------------------------------------------

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use super::spool::SpoolFile;

static UNIQUE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name unique on this host for this process: `secs.M<micros>P<pid>Q<n>.<host>` (the
/// Maildir convention), so concurrent deliveries never collide. Every message the server
/// makes is named here: SMTP delivery, and APPEND and COPY into IMAP folders (which once had
/// a copy of their own writing `I<n>` and unpadded microseconds; [`arrival_key`] still reads
/// those).
pub(crate) fn unique_name(hostname: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let n = UNIQUE_COUNTER.fetch_add(1, Ordering::Relaxed);
    let host: String = hostname
        .chars()
        .map(|c| if c == '/' || c == ':' { '_' } else { c })
        .collect();
    // Microseconds zero-padded, so names sort in arrival order even compared as text (POP3
    // numbers by it, IMAP gives new messages their UIDs in it).
    format!(
        "{}.M{:06}P{}Q{n}.{host}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id()
    )
}

/// Delivers `message` into `maildir` under a fresh unique name, durably (R18, decided by
/// [`r18_link_durably`]): written in `tmp/` and fsynced first. Returns the path in `new/`.
pub fn deliver(maildir: &Path, hostname: &str, message: &[u8]) -> std::io::Result<PathBuf> {
    let name = format!("{},S={}", unique_name(hostname), message.len());
    let tmp = maildir.join("tmp").join(&name);
    let result = write_synced(&tmp, message).and_then(|()| r18_link_durably(&tmp, maildir, &name));
    // Once linked (or failed), the name in `tmp/` has served its purpose either way.
    let _ = fs::remove_file(&tmp);
    result
}

fn write_synced(path: &Path, message: &[u8]) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    file.write_all(message)?;
    file.sync_all()
}

/// Delivers a spooled message to each Maildir of `maildirs`, one hard link each (R18, decided
/// by [`r18_link_durably`]): the spool file is fsynced once, then each link and its `new/`.
/// All or nothing: on an error the links already made are taken back. Returns the paths.
pub fn deliver_spooled(
    spool: &SpoolFile,
    maildirs: &[&Path],
    hostname: &str,
) -> std::io::Result<Vec<PathBuf>> {
    spool.sync()?;
    let mut made = Vec::with_capacity(maildirs.len());
    for maildir in maildirs {
        let name = format!("{},S={}", unique_name(hostname), spool.size());
        match r18_link_durably(spool.path(), maildir, &name) {
            Ok(path) => made.push(path),
            Err(e) => {
                for path in &made {
                    let _ = fs::remove_file(path);
                }
                return Err(e);
            }
        }
    }
    Ok(made)
}

/// R18: links `synced`, a message file whose content is already fsynced, into `maildir`'s
/// `new/` as `name`, then fsyncs `new/`, so once this returns the message survives a crash;
/// before it returns nothing is visible in `new/` that a crash could leave half written.
fn r18_link_durably(synced: &Path, maildir: &Path, name: &str) -> std::io::Result<PathBuf> {
    let new = maildir.join("new").join(name);
    // A hard link never replaces an existing file, unlike rename.
    fs::hard_link(synced, &new)?;
    fs::File::open(maildir.join("new"))?.sync_all()?;
    Ok(new)
}

/// One message as a POP3 session sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageFile {
    /// Stable across sessions: the file name up to the `:2,` flags (the Maildir unique name).
    pub uid: String,
    pub path: PathBuf,
    pub size: u64,
}

/// The messages of the inbox (`new/` then `cur/`), oldest first by name.
pub fn list_inbox(maildir: &Path) -> std::io::Result<Vec<MessageFile>> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        let entries = match fs::read_dir(maildir.join(sub)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let meta = entry.metadata()?;
            if !meta.is_file() {
                continue;
            }
            let uid = name.split(':').next().unwrap_or(&name).to_owned();
            out.push(MessageFile {
                uid,
                path: entry.path(),
                size: meta.len(),
            });
        }
    }
    out.sort_by_cached_key(|f| arrival_key(&f.uid));
    Ok(out)
}

/// Sorts Maildir unique names in arrival order: `<secs>.M<micros>…` by the numbers (other
/// tools, and dirmail before it padded them, write the microseconds unpadded), then by name.
pub(crate) fn arrival_key(uid: &str) -> (u64, u64, String) {
    let mut parts = uid.splitn(2, '.');
    let secs = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX);
    let micros = parts
        .next()
        .and_then(|rest| rest.strip_prefix('M'))
        .map(|rest| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(0);
    (secs, micros, uid.to_owned())
}

/// Where a listed message is now: IMAP moves messages from `new/` to `cur/` and renames them
/// when their flags change, keeping the unique name (`uid`). `None` when it is gone.
pub fn current_path(file: &MessageFile) -> Option<PathBuf> {
    if file.path.exists() {
        return Some(file.path.clone());
    }
    let maildir = file.path.parent()?.parent()?;
    // The usual case costs one look: moved from `new/` to `cur/` with no flag yet.
    let moved = maildir.join("cur").join(format!("{}:2,", file.uid));
    if moved.exists() {
        return Some(moved);
    }
    ["cur", "new"].into_iter().find_map(|sub| {
        fs::read_dir(maildir.join(sub))
            .ok()?
            .flatten()
            .find_map(|entry| {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                (name.split(':').next() == Some(file.uid.as_str())).then(|| entry.path())
            })
    })
}

/// Removes messages; one already gone (another reader removed it) is not an error.
pub fn delete_messages(files: &[&MessageFile]) -> std::io::Result<()> {
    let mut dirs = std::collections::BTreeSet::new();
    for file in files {
        let path = current_path(file).unwrap_or_else(|| file.path.clone());
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if let Some(dir) = file.path.parent() {
            dirs.insert(dir.to_owned());
        }
    }
    for dir in dirs {
        fs::File::open(&dir)?.sync_all()?;
    }
    Ok(())
}

/// How long a file may sit in a Maildir's `tmp/` before it is taken for a crash's leftover:
/// the Maildir convention (a delivery in progress never takes this long; a file this old was
/// left by a process that died between writing it and linking it into `new/`).
pub const STALE_TMP_AGE: std::time::Duration = std::time::Duration::from_secs(36 * 60 * 60);

/// Maildirs sit at most this deep under the mail root: `domain/mailbox/.Folder/tmp`.
const SWEEP_DEPTH: usize = 4;

/// What a sweep of `tmp/` directories did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    pub removed: u64,
    pub bytes: u64,
    /// Files that could not be examined or removed (logged by the caller, retried next sweep).
    pub failed: u64,
}

/// Removes files older than `older_than` from the `tmp/` of every Maildir and Maildir++ folder
/// under `mailroot` (a directory holding `cur/`, `new/` and `tmp/`). Symbolic links are not
/// followed, and nothing outside a `tmp/` is touched. A file younger than `older_than` may be a
/// delivery in progress, so it stays.
pub fn sweep_stale_tmp(mailroot: &Path, older_than: std::time::Duration) -> Sweep {
    let mut sweep = Sweep::default();
    let now = std::time::SystemTime::now();
    sweep_dir(mailroot, 0, now, older_than, &mut sweep);
    sweep
}

fn sweep_dir(
    dir: &Path,
    depth: usize,
    now: std::time::SystemTime,
    older_than: std::time::Duration,
    sweep: &mut Sweep,
) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let is_maildir = dir.join("cur").is_dir() && dir.join("new").is_dir();
    for entry in entries.flatten() {
        // `file_type` does not follow symbolic links: a link is neither a directory nor swept.
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if !kind.is_dir() {
            continue;
        }
        let path = entry.path();
        if is_maildir && entry.file_name() == "tmp" {
            remove_old_files(&path, now, older_than, sweep);
        } else if depth < SWEEP_DEPTH {
            sweep_dir(&path, depth + 1, now, older_than, sweep);
        }
    }
}

fn remove_old_files(
    tmp: &Path,
    now: std::time::SystemTime,
    older_than: std::time::Duration,
    sweep: &mut Sweep,
) {
    let Ok(entries) = fs::read_dir(tmp) else {
        sweep.failed += 1;
        return;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else {
            sweep.failed += 1;
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let age = meta
            .modified()
            .ok()
            .and_then(|modified| now.duration_since(modified).ok());
        if age.is_none_or(|age| age < older_than) {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => {
                sweep.removed += 1;
                sweep.bytes += meta.len();
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => sweep.failed += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliver_then_list_then_delete() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("box");
        create(&dir).unwrap();
        let a = deliver(&dir, "mail.example.jp", b"Subject: a\r\n\r\n1\r\n").unwrap();
        let b = deliver(&dir, "mail.example.jp", b"Subject: b\r\n\r\n22\r\n").unwrap();
        assert!(a.starts_with(dir.join("new")) && b.exists());
        assert_eq!(
            fs::read_dir(dir.join("tmp")).unwrap().count(),
            0,
            "tmp/ is left empty"
        );
        let list = list_inbox(&dir).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].size, 17);
        assert_ne!(list[0].uid, list[1].uid);
        assert_eq!(
            usage(&dir).unwrap(),
            Usage {
                messages: 2,
                bytes: 35
            }
        );
        delete_messages(&[&list[0]]).unwrap();
        assert_eq!(list_inbox(&dir).unwrap().len(), 1);
        // Deleting what is already gone is fine.
        delete_messages(&[&list[0]]).unwrap();
    }

    #[test]
    fn a_spooled_message_is_linked_into_each_maildir() {
        let root = tempfile::tempdir().unwrap();
        let mailroot = root.path().join("mail");
        let (a, b) = (mailroot.join("example.jp/a"), mailroot.join("example.jp/b"));
        create(&a).unwrap();
        create(&b).unwrap();
        crate::spool::prepare(&mailroot, std::time::Duration::from_secs(60)).unwrap();
        let mut spool = SpoolFile::create(&mailroot, "mx").unwrap();
        spool.append(b"Subject: s\r\n\r\n").unwrap();
        spool.append(b"spooled\r\n").unwrap();
        let paths = deliver_spooled(&spool, &[a.as_path(), b.as_path()], "mx").unwrap();
        drop(spool);
        assert_eq!(paths.len(), 2);
        for (path, dir) in paths.iter().zip([&a, &b]) {
            assert!(path.starts_with(dir.join("new")));
            assert_eq!(fs::read(path).unwrap(), b"Subject: s\r\n\r\nspooled\r\n");
            assert_eq!(
                usage(dir).unwrap(),
                Usage {
                    messages: 1,
                    bytes: 23
                }
            );
        }
        assert_eq!(
            fs::read_dir(crate::spool::dir(&mailroot)).unwrap().count(),
            0
        );
        // A Maildir that is not there: nothing is delivered to the others either.
        let spool = SpoolFile::create(&mailroot, "mx").unwrap();
        let gone = mailroot.join("example.jp/gone");
        assert!(deliver_spooled(&spool, &[a.as_path(), gone.as_path()], "mx").is_err());
        assert_eq!(usage(&a).unwrap().messages, 1);
    }

    #[test]
    fn sizes_in_names() {
        assert_eq!(size_in_name("1.M2P3Q4.host,S=4096"), Some(4096));
        assert_eq!(size_in_name("1.M2P3Q4.host,S=4096:2,RS"), Some(4096));
        assert_eq!(size_in_name("1.M2P3Q4.host,S=12,W=14:2,"), Some(12));
        assert_eq!(size_in_name("1.M2P3Q4.host:2,S"), None);
        assert_eq!(size_in_name("1.M2P3Q4.host,S=:2,"), None);
        assert_eq!(size_in_name("1.M2P3Q4.host,S=12x"), None);
        assert_eq!(
            size_in_name("1.M2P3Q4.host,S=99999999999999999999999"),
            None
        );
    }

    #[test]
    fn usage_counts_names_with_and_without_sizes() {
        // `create` makes the parent (the domain's directory) private too, so not the temporary
        // directory's parent, /tmp.
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("example.jp/a");
        create(&dir).unwrap();
        deliver(&dir, "h", &[b'x'; 100]).unwrap();
        // A file from elsewhere, without S=, and one whose flags moved it to cur/.
        fs::write(dir.join("new/1.foreign"), [b'y'; 30]).unwrap();
        fs::write(dir.join("cur/2.M1.h,S=7:2,S"), [b'z'; 7]).unwrap();
        assert_eq!(
            usage(&dir).unwrap(),
            Usage {
                messages: 3,
                bytes: 137
            }
        );
    }

    #[test]
    fn unique_names_pad_the_microseconds() {
        let name = unique_name("mx/1:a");
        let (secs, rest) = name.split_once(".M").unwrap();
        assert!(secs.parse::<u64>().is_ok(), "{name}");
        let micros: String = rest.chars().take_while(char::is_ascii_digit).collect();
        assert_eq!(micros.len(), 6, "{name}");
        assert!(name.ends_with(".mx_1_a"), "{name}");
        assert_ne!(unique_name("h"), unique_name("h"));
    }

    #[test]
    fn arrival_order_reads_the_numbers() {
        let mut names = vec![
            "1700000001.M5P1Q0.h",
            "1700000000.M1000P1Q1.h",
            "1700000000.M999P1Q0.h",
            "odd-name",
        ];
        names.sort_by_cached_key(|n| arrival_key(n));
        assert_eq!(
            names,
            [
                "1700000000.M999P1Q0.h",
                "1700000000.M1000P1Q1.h",
                "1700000001.M5P1Q0.h",
                "odd-name"
            ]
        );
    }

    #[test]
    fn sweep_removes_only_old_files_in_tmp() {
        let root = tempfile::tempdir().unwrap();
        let mailroot = root.path().join("mail");
        let inbox = mailroot.join("example.jp").join("user");
        let folder = inbox.join(".Sent");
        create(&inbox).unwrap();
        for sub in ["cur", "new", "tmp"] {
            fs::create_dir_all(folder.join(sub)).unwrap();
        }
        let old = std::time::SystemTime::now() - STALE_TMP_AGE - std::time::Duration::from_secs(60);
        let write = |path: PathBuf, aged: bool| {
            fs::write(&path, b"x".repeat(10)).unwrap();
            if aged {
                fs::File::options()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_modified(old)
                    .unwrap();
            }
            path
        };
        let left_by_crash = write(inbox.join("tmp").join("crashed"), true);
        let in_folder = write(folder.join("tmp").join("crashed"), true);
        let in_progress = write(inbox.join("tmp").join("writing"), false);
        let delivered_long_ago = write(inbox.join("cur").join("old:2,S"), true);
        // A `tmp` that is not a Maildir's is not ours to sweep.
        let elsewhere = mailroot.join("notes").join("tmp");
        fs::create_dir_all(&elsewhere).unwrap();
        let unrelated = write(elsewhere.join("keep"), true);

        let sweep = sweep_stale_tmp(&mailroot, STALE_TMP_AGE);
        assert_eq!((sweep.removed, sweep.bytes, sweep.failed), (2, 20, 0));
        assert!(!left_by_crash.exists() && !in_folder.exists());
        assert!(in_progress.exists() && delivered_long_ago.exists() && unrelated.exists());
        assert_eq!(sweep_stale_tmp(&mailroot, STALE_TMP_AGE), Sweep::default());
    }
}
