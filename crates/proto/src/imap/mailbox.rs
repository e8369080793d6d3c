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

/// Most keywords one folder can name: a keyword is a lower-case letter in the Maildir file
/// name (`a` is the folder's first keyword, `z` its 26th), as Dovecot does.
pub const MAX_KEYWORDS: usize = 26;

/// A message's flags as kept in a Maildir file name: the IMAP system flags (`D F R S T`) and
/// the keywords (`a`–`z`), each keyword a bit that indexes its folder's table of keyword names
/// (see [`keyword_bits`]). Other letters of the name (`P`) are left as they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags {
    system: u8,
    keywords: u32,
}

impl Flags {
    pub const SEEN: Flags = Flags::system_flag(1);
    pub const ANSWERED: Flags = Flags::system_flag(2);
    pub const FLAGGED: Flags = Flags::system_flag(4);
    pub const DELETED: Flags = Flags::system_flag(8);
    pub const DRAFT: Flags = Flags::system_flag(16);
    pub const NONE: Flags = Flags::system_flag(0);

    const fn system_flag(bit: u8) -> Flags {
        Flags {
            system: bit,
            keywords: 0,
        }
    }

    /// Keyword number `index` of the folder's table (`None` past [`MAX_KEYWORDS`]).
    pub fn keyword(index: usize) -> Option<Flags> {
        (index < MAX_KEYWORDS).then(|| Flags {
            system: 0,
            keywords: 1 << index,
        })
    }

    /// The table indexes of the keywords set, ascending.
    pub fn keyword_indexes(self) -> impl Iterator<Item = usize> {
        (0..MAX_KEYWORDS).filter(move |i| self.keywords & (1 << i) != 0)
    }

    /// Only the system flags.
    pub fn system(self) -> Flags {
        Flags {
            system: self.system,
            keywords: 0,
        }
    }

    /// Each flag with its Maildir letter, in the order the letters must appear.
    const LETTERS: [(char, Flags); 5] = [
        ('D', Flags::DRAFT),
        ('F', Flags::FLAGGED),
        ('R', Flags::ANSWERED),
        ('S', Flags::SEEN),
        ('T', Flags::DELETED),
    ];

    pub fn contains(self, other: Flags) -> bool {
        self.system & other.system == other.system
            && self.keywords & other.keywords == other.keywords
    }

    pub fn intersects(self, other: Flags) -> bool {
        self.system & other.system != 0 || self.keywords & other.keywords != 0
    }

    pub fn union(self, other: Flags) -> Flags {
        Flags {
            system: self.system | other.system,
            keywords: self.keywords | other.keywords,
        }
    }

    pub fn minus(self, other: Flags) -> Flags {
        Flags {
            system: self.system & !other.system,
            keywords: self.keywords & !other.keywords,
        }
    }

    pub fn is_empty(self) -> bool {
        self.system == 0 && self.keywords == 0
    }

    /// The flags named by the letters after `:2,`.
    pub fn from_info(info: &str) -> Flags {
        let mut flags = Flags::NONE;
        for c in info.chars() {
            if let Some((_, f)) = Flags::LETTERS.iter().find(|(l, _)| *l == c) {
                flags = flags.union(*f);
            } else if c.is_ascii_lowercase()
                && let Some(keyword) = Flags::keyword(usize::from(c as u8 - b'a'))
            {
                flags = flags.union(keyword);
            }
        }
        flags
    }

    /// `info` with the system and keyword letters replaced by `self`, others kept, all in
    /// ASCII order (the Maildir convention).
    pub fn apply_to_info(self, info: &str) -> String {
        let mut letters: BTreeSet<char> = info
            .chars()
            .filter(|c| c.is_ascii_uppercase() && !Flags::LETTERS.iter().any(|(l, _)| l == c))
            .collect();
        for (letter, flag) in Flags::LETTERS {
            if self.contains(flag) {
                letters.insert(letter);
            }
        }
        for i in self.keyword_indexes() {
            // `i` < 26, so this is a lower-case letter.
            letters.insert(char::from(b'a' + i as u8));
        }
        letters.into_iter().collect()
    }

    /// The same keywords, as bits of the table `to` instead of `from` (names are added to `to`
    /// while it has room; a keyword that cannot be added is dropped).
    pub fn remap(self, from: &[String], to: &mut Vec<String>) -> Flags {
        let names: Vec<String> = self
            .keyword_indexes()
            .filter_map(|i| from.get(i).cloned())
            .collect();
        let (bits, _) = keyword_bits(to, &names);
        self.system().union(bits)
    }
}

/// The keyword names of a folder, a name's position its bit in [`Flags`]. Names only ever
/// get added, so a bit never changes meaning. Keywords compare without regard to ASCII case.
pub fn keyword_index(table: &[String], name: &str) -> Option<usize> {
    table.iter().position(|k| k.eq_ignore_ascii_case(name))
}

/// The bits of keywords `names` in `table`, adding the names it lacks while it has room.
/// Returns the bits and whether every name found a place.
pub fn keyword_bits(table: &mut Vec<String>, names: &[String]) -> (Flags, bool) {
    let mut bits = Flags::NONE;
    let mut all = true;
    for name in names {
        let index = match keyword_index(table, name) {
            Some(index) => index,
            None if table.len() < MAX_KEYWORDS => {
                table.push(name.clone());
                table.len() - 1
            }
            None => {
                all = false;
                continue;
            }
        };
        if let Some(bit) = Flags::keyword(index) {
            bits = bits.union(bit);
        }
    }
    (bits, all)
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
