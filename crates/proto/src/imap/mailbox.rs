//! IMAP's value types for a mailbox's folders: the system flags, how STORE changes them, the
//! STATUS counts, and the checked folder name. The store keeps them in a Maildir; the IMAP core
//! only reasons about them, so they live here, beside the core, free of any IO.

use std::collections::BTreeSet;

/// The IMAP name of the Maildir itself.
pub const INBOX: &str = "INBOX";
/// Maildir++ puts a folder `a.b` in the directory `.a.b`; IMAP sees the same `.` as the
/// hierarchy delimiter.
pub const DELIMITER: char = '.';
/// Longest folder name: a directory name is at most 255 octets, one of them the leading dot.
pub const MAX_NAME_LEN: usize = 200;

/// Why a folder name was refused, in words a client can be shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidName(pub &'static str);

/// The IMAP system flags kept in a Maildir file name (`D F R S T`). Other letters of the name
/// (`P`, keywords `a`–`z`) are left as they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags(u8);

impl Flags {
    pub const SEEN: Flags = Flags(1);
    pub const ANSWERED: Flags = Flags(2);
    pub const FLAGGED: Flags = Flags(4);
    pub const DELETED: Flags = Flags(8);
    pub const DRAFT: Flags = Flags(16);
    pub const NONE: Flags = Flags(0);

    /// Each flag with its Maildir letter, in the order the letters must appear.
    const LETTERS: [(char, Flags); 5] = [
        ('D', Flags::DRAFT),
        ('F', Flags::FLAGGED),
        ('R', Flags::ANSWERED),
        ('S', Flags::SEEN),
        ('T', Flags::DELETED),
    ];

    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn intersects(self, other: Flags) -> bool {
        self.0 & other.0 != 0
    }

    pub fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    pub fn minus(self, other: Flags) -> Flags {
        Flags(self.0 & !other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The flags named by the letters after `:2,`.
    pub fn from_info(info: &str) -> Flags {
        let mut flags = Flags::NONE;
        for c in info.chars() {
            if let Some((_, f)) = Flags::LETTERS.iter().find(|(l, _)| *l == c) {
                flags = flags.union(*f);
            }
        }
        flags
    }

    /// `info` with the system letters replaced by `self`, others kept, all in ASCII order (the
    /// Maildir convention).
    pub fn apply_to_info(self, info: &str) -> String {
        let mut letters: BTreeSet<char> = info
            .chars()
            .filter(|c| c.is_ascii_alphabetic() && !Flags::LETTERS.iter().any(|(l, _)| l == c))
            .collect();
        for (letter, flag) in Flags::LETTERS {
            if self.contains(flag) {
                letters.insert(letter);
            }
        }
        letters.into_iter().collect()
    }
}

/// How STORE changes flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOp {
    Add,
    Remove,
    Replace,
}

impl FlagOp {
    pub fn apply(self, current: Flags, given: Flags) -> Flags {
        match self {
            FlagOp::Add => current.union(given),
            FlagOp::Remove => current.minus(given),
            FlagOp::Replace => given,
        }
    }
}

/// A folder name as IMAP gives it (modified UTF-7, `.` between levels), checked so it maps to
/// exactly one directory of the Maildir and never outside it. `INBOX` in any case is the Maildir
/// itself.
pub fn check_name(name: &str) -> Result<String, InvalidName> {
    if name.eq_ignore_ascii_case(INBOX) {
        return Ok(INBOX.into());
    }
    if name.is_empty() {
        return Err(InvalidName("a folder name cannot be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(InvalidName("the folder name is too long"));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == '\\' || c.is_control())
    {
        return Err(InvalidName(
            "a folder name cannot hold '/', '\\' or control characters",
        ));
    }
    if name.split(DELIMITER).any(str::is_empty) {
        return Err(InvalidName(
            "a folder name cannot start or end with '.', or hold '..'",
        ));
    }
    // INBOX is case-insensitive in the first level too (`inbox.Sub` is `INBOX.Sub`).
    Ok(match name.split_once(DELIMITER) {
        Some((first, rest)) if first.eq_ignore_ascii_case(INBOX) => format!("{INBOX}.{rest}"),
        _ => name.to_owned(),
    })
}

/// Counts for STATUS, taken without touching `new/`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FolderStatus {
    pub messages: u32,
    pub recent: u32,
    pub unseen: u32,
    pub deleted: u32,
    pub uidnext: u32,
    pub uidvalidity: u32,
    pub size: u64,
}
