//! The `dirmail-uidlist` file of a folder (why a file per folder: see [`super`]): a header
//! `dirmail-uidlist v1 <uidvalidity> <uidnext> <first recent>`, then one line per message,
//! `<uid> <internal date> <size> <unique name>`. Read and written only under the folder's lock.
//!
//! `<first recent>` is the lowest UID still `\Recent`: the next session to SELECT the folder
//! sees the messages from there on as `\Recent` and moves it to UIDNEXT. Lists written before
//! it existed have no fourth number; then nothing already listed is `\Recent`.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;

use super::folder::Entry;
use super::lock::replace_file;

/// The per-folder UID list.
pub const UIDLIST: &str = "dirmail-uidlist";
const MAGIC: &str = "dirmail-uidlist v1";

/// The UID list as read from disk.
#[derive(Debug, Default)]
pub(super) struct UidList {
    pub(super) uidvalidity: u32,
    pub(super) uidnext: u32,
    /// The lowest UID not yet shown `\Recent` to a session that SELECTed the folder.
    pub(super) first_recent: u32,
    /// unique name → (uid, internal date, size)
    pub(super) known: HashMap<String, (u32, i64, u64)>,
}

/// The list of the folder in `dir`; `None` when there is none or its header is not one (the
/// folder then starts a new UIDVALIDITY). Lines that do not parse are skipped.
pub(super) fn read(dir: &Path) -> io::Result<Option<UidList>> {
    let text = match fs::read_to_string(dir.join(UIDLIST)) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Ok(None);
    };
    let Some(numbers) = header.strip_prefix(MAGIC) else {
        return Ok(None);
    };
    let mut numbers = numbers.split_whitespace().map(str::parse::<u32>);
    let (Some(Ok(uidvalidity)), Some(Ok(uidnext))) = (numbers.next(), numbers.next()) else {
        return Ok(None);
    };
    if uidvalidity == 0 || uidnext == 0 {
        return Ok(None);
    }
    let first_recent = match numbers.next() {
        Some(Ok(first)) => first,
        _ => uidnext,
    };
    let mut list = UidList {
        uidvalidity,
        uidnext,
        first_recent,
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

/// Replaces the list with `entries` (entries of vanished files are thereby pruned).
pub(super) fn write(
    dir: &Path,
    (uidvalidity, uidnext, first_recent): (u32, u32, u32),
    entries: &[Entry],
) -> io::Result<()> {
    let mut text = String::with_capacity(64 + entries.len() * 72);
    text.push_str(&format!("{MAGIC} {uidvalidity} {uidnext} {first_recent}\n"));
    for e in entries {
        text.push_str(&format!(
            "{} {} {} {}\n",
            e.uid, e.internal_date, e.size, e.unique
        ));
    }
    replace_file(dir, UIDLIST, text.as_bytes())
}
