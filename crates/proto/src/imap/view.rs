//! The selected mailbox as one session sees it: messages in UID order (message sequence number
//! = position + 1), sequence sets resolved against it, and the untagged replies (EXPUNGE,
//! EXISTS, RECENT, FETCH FLAGS) that bring the client from one snapshot to the next.

use std::num::NonZeroU32;

use imap_types::core::Atom;
use imap_types::fetch::MessageDataItem;
use imap_types::flag::{Flag, FlagFetch, FlagPerm};
use imap_types::response::{Code, Data, StatusKind};
use imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use super::reply::Reply;
use crate::imap::mailbox::{Flags, MAX_KEYWORDS, keyword_index};

/// One message as the driver reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageMeta {
    pub uid: u32,
    pub flags: Flags,
    /// RFC822.SIZE.
    pub size: u64,
    /// INTERNALDATE, seconds since the epoch.
    pub internal_date: i64,
    /// `\Recent` for this session.
    pub recent: bool,
}

/// A folder's state as the driver reads it (SELECT, and every re-scan after).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub uidvalidity: u32,
    pub uidnext: u32,
    /// In UID order.
    pub messages: Vec<MessageMeta>,
    /// The folder's keyword names; keyword bit `i` of a message's flags is `keywords[i]`.
    pub keywords: Vec<String>,
}

/// A message sequence set the client named past the end of the mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadSequence;

#[derive(Debug)]
pub struct View {
    pub folder: String,
    pub read_only: bool,
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub messages: Vec<MessageMeta>,
    /// The folder's keyword names, as in [`Snapshot::keywords`].
    pub keywords: Vec<String>,
    /// Something may have changed on disk since the last snapshot.
    pub dirty: bool,
}

impl View {
    pub fn new(folder: String, read_only: bool, snapshot: Snapshot) -> View {
        let mut messages = snapshot.messages;
        messages.sort_by_key(|m| m.uid);
        messages.dedup_by_key(|m| m.uid);
        View {
            folder,
            read_only,
            uidvalidity: snapshot.uidvalidity,
            uidnext: snapshot.uidnext,
            messages,
            keywords: snapshot.keywords,
            dirty: false,
        }
    }

    /// `* FLAGS (…)` and `* OK [PERMANENTFLAGS (…)]`: the system flags and the folder's
    /// keywords; `\*` while the folder has room for another keyword; nothing permanent when
    /// read-only.
    pub fn flag_replies(&self) -> Vec<Reply> {
        let mut flags = system_flags(
            Flags::SEEN
                .union(Flags::ANSWERED)
                .union(Flags::FLAGGED)
                .union(Flags::DELETED)
                .union(Flags::DRAFT),
        );
        flags.extend(self.keywords.iter().filter_map(|k| keyword_flag(k)));
        let permanent = if self.read_only {
            Vec::new()
        } else {
            let mut permanent: Vec<FlagPerm<'static>> =
                flags.iter().cloned().map(FlagPerm::Flag).collect();
            if self.keywords.len() < MAX_KEYWORDS {
                permanent.push(FlagPerm::Asterisk);
            }
            permanent
        };
        vec![
            Reply::data(Data::Flags(flags)),
            Reply::untagged(
                StatusKind::Ok,
                Some(Code::PermanentFlags(permanent)),
                "flags kept",
            ),
        ]
    }

    /// Takes the folder's keyword table as the driver last read it (names are only ever
    /// added); returns the FLAGS replies when it grew.
    pub fn learn_keywords(&mut self, keywords: Vec<String>) -> Vec<Reply> {
        if keywords.len() <= self.keywords.len() {
            return Vec::new();
        }
        self.keywords = keywords;
        self.flag_replies()
    }

    pub fn exists(&self) -> u32 {
        u32::try_from(self.messages.len()).unwrap_or(u32::MAX)
    }

    pub fn recent(&self) -> u32 {
        u32::try_from(self.messages.iter().filter(|m| m.recent).count()).unwrap_or(u32::MAX)
    }

    pub fn max_uid(&self) -> u32 {
        self.messages.last().map_or(0, |m| m.uid)
    }

    /// The position of `uid`.
    pub fn index_of(&self, uid: u32) -> Option<usize> {
        self.messages.binary_search_by_key(&uid, |m| m.uid).ok()
    }

    /// The first unseen message's sequence number (`[UNSEEN n]`).
    pub fn first_unseen(&self) -> Option<u32> {
        self.messages
            .iter()
            .position(|m| !m.flags.contains(Flags::SEEN))
            .and_then(|i| u32::try_from(i + 1).ok())
    }

    /// The positions `set` names, ascending and without repeats. A message number past the
    /// end (any number at all in an empty mailbox) is an error; a UID that does not exist is
    /// ignored (RFC 3501 §6.4.8).
    pub fn resolve(&self, set: &SequenceSet, uid: bool) -> Result<Vec<usize>, BadSequence> {
        if uid {
            let ranges = ranges(set, self.max_uid());
            return Ok(self
                .messages
                .iter()
                .enumerate()
                .filter(|(_, m)| in_ranges(&ranges, m.uid))
                .map(|(i, _)| i)
                .collect());
        }
        // RFC 3501 §9 (seq-number): a number past the end is an error, and so is `*` when
        // the mailbox is empty, since it names no message.
        if self.messages.is_empty() {
            return Err(BadSequence);
        }
        let ranges = ranges(set, self.exists());
        let mut out = Vec::new();
        for (lo, hi) in ranges {
            if hi > self.exists() {
                return Err(BadSequence);
            }
            out.extend((lo..=hi).filter_map(|n| usize::try_from(n).ok()?.checked_sub(1)));
        }
        Ok(out)
    }

    /// For SEARCH: does `set` name the message at `index`? (`*` is the last message.)
    pub fn set_contains(&self, set: &SequenceSet, uid: bool, index: usize) -> bool {
        let Some(message) = self.messages.get(index) else {
            return false;
        };
        if uid {
            in_ranges(&ranges(set, self.max_uid()), message.uid)
        } else {
            let seq = u32::try_from(index + 1).unwrap_or(u32::MAX);
            in_ranges(&ranges(set, self.exists()), seq)
        }
    }

    /// Drops `uids` from the view; returns the `EXPUNGE` replies, highest number first so each
    /// number is right when the client reads it.
    pub fn expunge(&mut self, uids: &[u32]) -> Vec<Reply> {
        let mut seqs: Vec<u32> = uids
            .iter()
            .filter_map(|&uid| self.index_of(uid))
            .filter_map(|i| u32::try_from(i + 1).ok())
            .collect();
        seqs.sort_unstable();
        seqs.dedup();
        let gone: std::collections::HashSet<u32> = uids.iter().copied().collect();
        self.messages.retain(|m| !gone.contains(&m.uid));
        seqs.into_iter()
            .rev()
            .filter_map(|seq| Data::expunge(seq).ok().map(Reply::data))
            .collect()
    }

    /// Moves to `snapshot`; returns the untagged replies that tell the client.
    pub fn update(&mut self, snapshot: Snapshot) -> Vec<Reply> {
        let mut fresh = snapshot.messages;
        fresh.sort_by_key(|m| m.uid);
        fresh.dedup_by_key(|m| m.uid);
        let old_exists = self.exists();
        let old_recent = self.recent();
        let max_old = self.max_uid();
        let flag_replies = self.learn_keywords(snapshot.keywords);
        let mut gone = Vec::new();
        let mut kept = Vec::with_capacity(fresh.len());
        let mut changed = Vec::new();
        let mut j = 0;
        for old in &self.messages {
            while fresh.get(j).is_some_and(|m| m.uid < old.uid) {
                j += 1;
            }
            match fresh.get(j) {
                Some(now) if now.uid == old.uid => {
                    let now = MessageMeta {
                        recent: old.recent || now.recent,
                        ..*now
                    };
                    if now.flags != old.flags {
                        changed.push(kept.len());
                    }
                    kept.push(now);
                    j += 1;
                }
                _ => gone.push(old.uid),
            }
        }
        let mut replies = flag_replies;
        replies.extend(self.expunge(&gone));
        // A message whose UID is below one the client already has cannot be shown without
        // renumbering; with UIDs only ever growing that never happens, so it is left out.
        let added: Vec<MessageMeta> = fresh.into_iter().filter(|m| m.uid > max_old).collect();
        kept.extend(added);
        self.messages = kept;
        self.uidnext = self.uidnext.max(snapshot.uidnext);
        if self.exists() != old_exists.saturating_sub(u32::try_from(gone.len()).unwrap_or(0)) {
            replies.push(Reply::data(Data::Exists(self.exists())));
        }
        if self.recent() != old_recent {
            replies.push(Reply::data(Data::Recent(self.recent())));
        }
        for i in changed {
            if let Some(reply) = self.flags_reply(i, true) {
                replies.push(reply);
            }
        }
        replies
    }

    /// `* n FETCH (FLAGS (…) [UID u])` for the message at `index`.
    pub fn flags_reply(&self, index: usize, with_uid: bool) -> Option<Reply> {
        let message = self.messages.get(index)?;
        let mut items = vec![MessageDataItem::Flags(flag_list(message, &self.keywords))];
        if with_uid {
            items.push(MessageDataItem::Uid(NonZeroU32::new(message.uid)?));
        }
        let seq = u32::try_from(index + 1).ok()?;
        Data::fetch(seq, items).ok().map(Reply::data)
    }
}

/// The flags of a message as FETCH FLAGS shows them: system flags, keywords (named by the
/// folder's table `keywords`), `\Recent`.
pub fn flag_list(message: &MessageMeta, keywords: &[String]) -> Vec<FlagFetch<'static>> {
    let mut out: Vec<FlagFetch<'static>> = system_flags(message.flags)
        .into_iter()
        .map(FlagFetch::Flag)
        .collect();
    out.extend(
        message
            .flags
            .keyword_indexes()
            .filter_map(|i| keyword_flag(keywords.get(i)?))
            .map(FlagFetch::Flag),
    );
    if message.recent {
        out.push(FlagFetch::Recent);
    }
    out
}

pub fn system_flags(flags: Flags) -> Vec<Flag<'static>> {
    let mut out = Vec::new();
    for (flag, imap) in [
        (Flags::SEEN, Flag::Seen),
        (Flags::ANSWERED, Flag::Answered),
        (Flags::FLAGGED, Flag::Flagged),
        (Flags::DELETED, Flag::Deleted),
        (Flags::DRAFT, Flag::Draft),
    ] {
        if flags.contains(flag) {
            out.push(imap);
        }
    }
    out
}

/// A keyword's name as a flag (`None` for a name that is not an atom, which no client can
/// have given).
fn keyword_flag(name: &str) -> Option<Flag<'static>> {
    Atom::try_from(name.to_owned()).ok().map(Flag::Keyword)
}

/// Does the message at `index` carry keyword `name`?
pub fn has_keyword(view: &View, index: usize, name: &str) -> bool {
    let Some(message) = view.messages.get(index) else {
        return false;
    };
    keyword_index(&view.keywords, name)
        .and_then(Flags::keyword)
        .is_some_and(|bit| message.flags.contains(bit))
}

/// The keywords among `flags`, each once (ignoring ASCII case). `\Recent` and unknown
/// `\Extension` flags are not kept.
pub fn keywords_of(flags: &[Flag<'_>]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for flag in flags {
        if let Flag::Keyword(atom) = flag
            && keyword_index(&out, atom.inner()).is_none()
        {
            out.push(atom.inner().to_owned());
        }
    }
    out
}

/// The system flags among `flags`; keywords go by name ([`keywords_of`]).
pub fn flags_of(flags: &[Flag<'_>]) -> Flags {
    flags.iter().fold(Flags::NONE, |acc, f| {
        acc.union(match f {
            Flag::Seen => Flags::SEEN,
            Flag::Answered => Flags::ANSWERED,
            Flag::Flagged => Flags::FLAGGED,
            Flag::Deleted => Flags::DELETED,
            Flag::Draft => Flags::DRAFT,
            _ => Flags::NONE,
        })
    })
}

/// The set as sorted, merged inclusive ranges, `*` standing for `star`.
fn ranges(set: &SequenceSet, star: u32) -> Vec<(u32, u32)> {
    let value = |v: &SeqOrUid| match v {
        SeqOrUid::Value(n) => n.get(),
        SeqOrUid::Asterisk => star,
    };
    let mut out: Vec<(u32, u32)> = set
        .0
        .as_ref()
        .iter()
        .map(|seq| match seq {
            Sequence::Single(v) => (value(v), value(v)),
            Sequence::Range(a, b) => {
                let (a, b) = (value(a), value(b));
                (a.min(b), a.max(b))
            }
        })
        .filter(|&(_, hi)| hi > 0)
        .map(|(lo, hi)| (lo.max(1), hi))
        .collect();
    out.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::with_capacity(out.len());
    for (lo, hi) in out {
        match merged.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    merged
}

fn in_ranges(ranges: &[(u32, u32)], n: u32) -> bool {
    match ranges.binary_search_by(|&(lo, _)| lo.cmp(&n)) {
        Ok(_) => true,
        Err(0) => false,
        Err(i) => ranges.get(i - 1).is_some_and(|&(_, hi)| n <= hi),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(uid: u32, flags: Flags) -> MessageMeta {
        MessageMeta {
            uid,
            flags,
            size: 10,
            internal_date: 0,
            recent: false,
        }
    }

    fn set(text: &str) -> SequenceSet {
        SequenceSet::try_from(text).unwrap()
    }

    fn view(uids: &[u32]) -> View {
        View::new(
            "INBOX".into(),
            false,
            Snapshot {
                uidvalidity: 7,
                uidnext: 100,
                messages: uids.iter().map(|&u| meta(u, Flags::NONE)).collect(),
                keywords: Vec::new(),
            },
        )
    }

    #[test]
    fn sequence_sets() {
        let v = view(&[3, 5, 9, 20]);
        assert_eq!(v.resolve(&set("1:*"), false), Ok(vec![0, 1, 2, 3]));
        assert_eq!(v.resolve(&set("*:3,1"), false), Ok(vec![0, 2, 3]));
        assert_eq!(v.resolve(&set("5"), false), Err(BadSequence));
        assert_eq!(v.resolve(&set("4:9"), true), Ok(vec![1, 2]));
        assert_eq!(
            v.resolve(&set("21:*"), true),
            Ok(vec![3]),
            "n:* names the last"
        );
        assert_eq!(v.resolve(&set("1,100"), true), Ok(vec![]));
        assert_eq!(view(&[]).resolve(&set("1"), false), Err(BadSequence));
        assert_eq!(view(&[]).resolve(&set("1:*"), false), Err(BadSequence));
        assert_eq!(
            view(&[]).resolve(&set("1:*"), true),
            Ok(vec![]),
            "UIDs may miss"
        );
        assert!(v.set_contains(&set("2:3"), false, 2));
        assert!(!v.set_contains(&set("2:3"), true, 1));
        assert!(v.set_contains(&set("*"), true, 3));
    }

    #[test]
    fn updates_tell_expunges_first_then_arrivals_then_flags() {
        let mut v = view(&[1, 2, 3]);
        let snapshot = Snapshot {
            uidvalidity: 7,
            uidnext: 6,
            messages: vec![
                meta(1, Flags::SEEN),
                meta(3, Flags::NONE),
                meta(4, Flags::NONE),
            ],
            keywords: Vec::new(),
        };
        let wire: Vec<String> = v
            .update(snapshot)
            .iter()
            .map(|r| String::from_utf8(r.to_bytes()).unwrap())
            .collect();
        assert_eq!(
            wire,
            [
                "* 2 EXPUNGE\r\n",
                "* 3 EXISTS\r\n",
                "* 1 FETCH (FLAGS (\\Seen) UID 1)\r\n"
            ]
        );
        assert_eq!(
            v.messages.iter().map(|m| m.uid).collect::<Vec<_>>(),
            [1, 3, 4]
        );
        assert_eq!(v.uidnext, 100, "never goes back");
        let wire: Vec<String> = v
            .expunge(&[1, 4])
            .iter()
            .map(|r| String::from_utf8(r.to_bytes()).unwrap())
            .collect();
        assert_eq!(wire, ["* 3 EXPUNGE\r\n", "* 1 EXPUNGE\r\n"]);
    }
}
