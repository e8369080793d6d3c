//! The `dirmail-keywords` file of a folder: the names of its IMAP keywords (`$Junk`,
//! `$Forwarded`, a client's tags), one a line as `<index> <name>`, in Dovecot's
//! `dovecot-keywords` format. A message carries keyword `index` as the letter `a` + index in
//! its file name (`:2,Sb` is `\Seen` and keyword 1), so a folder names at most 26.
//!
//! Names are only ever added, never renumbered, and always under the folder's lock; the file is
//! replaced durably *before* any message file is renamed to carry a new letter, so after a
//! crash a letter on disk always has its name (at worst a name is listed that no message has).

use std::fs;
use std::io;
use std::path::Path;

use super::MAX_KEYWORDS;
use super::lock::replace_file;

pub const KEYWORDS: &str = "dirmail-keywords";

/// The table of the folder in `dir`: empty when there is none. Lines that do not parse, and
/// indexes past the 26th, are skipped; a missing index leaves an unnamed gap.
pub(super) fn read(dir: &Path) -> io::Result<Vec<String>> {
    let text = match fs::read_to_string(dir.join(KEYWORDS)) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut table: Vec<String> = Vec::new();
    for line in text.lines() {
        let Some((index, name)) = line.split_once(' ') else {
            continue;
        };
        let Ok(index) = index.parse::<usize>() else {
            continue;
        };
        if index >= MAX_KEYWORDS || name.is_empty() || name.contains(char::is_whitespace) {
            continue;
        }
        if table.len() <= index {
            table.resize(index + 1, String::new());
        }
        if let Some(slot) = table.get_mut(index) {
            *slot = name.to_owned();
        }
    }
    Ok(table)
}

/// Replaces the table (under the folder's lock).
pub(super) fn write(dir: &Path, table: &[String]) -> io::Result<()> {
    let mut text = String::new();
    for (index, name) in table.iter().enumerate() {
        if !name.is_empty() {
            text.push_str(&format!("{index} {name}\n"));
        }
    }
    replace_file(dir, KEYWORDS, text.as_bytes())
}
