//! The folders of the mailbox: SELECT and EXAMINE, CREATE, DELETE, RENAME, SUBSCRIBE and
//! UNSUBSCRIBE, LIST and LSUB, STATUS, NAMESPACE and APPEND, each beside the continuation that
//! takes the driver's answer; and the checks of folder names and LIST patterns.

use std::collections::HashSet;
use std::num::NonZeroU32;

use imap_types::core::{Atom, QuotedChar, Tag};
use imap_types::extensions::binary::LiteralOrLiteral8;
use imap_types::extensions::namespace::Namespace;
use imap_types::flag::{Flag, FlagNameAttribute};
use imap_types::mailbox::{ListMailbox, Mailbox};
use imap_types::response::{Code, Data, StatusKind};
use imap_types::status::{StatusDataItem, StatusDataItemName};

use super::{Request, Response, Session};
use crate::imap::mailbox::{DELIMITER, FolderStatus, INBOX, check_name};
use crate::imap::reply::{Reply, code, istring};
use crate::imap::view::{Snapshot, View, flags_of, keywords_of};

/// A LIST pattern longer than this is refused (matching costs its length times the name's).
const MAX_PATTERN: usize = 1024;

/// What a folder command waits for.
#[derive(Debug)]
pub(super) enum Pending {
    Select {
        tag: Tag<'static>,
        folder: String,
        read_only: bool,
    },
    List {
        tag: Tag<'static>,
        lsub: bool,
        pattern: String,
    },
    /// CREATE, DELETE, RENAME, (UN)SUBSCRIBE: done, or not.
    Simple(Tag<'static>, &'static str),
    Status {
        tag: Tag<'static>,
        folder: String,
        items: Vec<StatusDataItemName>,
    },
    Append {
        tag: Tag<'static>,
        to_selected: bool,
    },
}

impl Pending {
    /// Does `response` (not a failure) answer this?
    pub(super) fn fits(&self, response: &Response) -> bool {
        matches!(
            (self, response),
            (Pending::Select { .. }, Response::Snapshot(_))
                | (Pending::List { .. }, Response::Folders { .. })
                | (Pending::Simple(..), Response::Done)
                | (Pending::Status { .. }, Response::Status(_))
                | (Pending::Append { .. }, Response::Appended { .. })
        )
    }
}

impl From<Pending> for super::Pending {
    fn from(pending: Pending) -> Self {
        super::Pending::Mailboxes(pending)
    }
}

impl Session {
    pub(super) fn namespace(&mut self, tag: Tag<'static>) {
        let personal = vec![Namespace::new(
            istring(Vec::new()),
            QuotedChar::try_from(DELIMITER).ok(),
        )];
        self.reply(Reply::data(Data::Namespace {
            personal,
            other: Vec::new(),
            shared: Vec::new(),
        }));
        self.ok(tag, None, "NAMESPACE completed");
    }

    pub(super) fn select(&mut self, tag: Tag<'static>, mailbox: &Mailbox<'_>, read_only: bool) {
        // RFC 3501 §6.3.1: SELECT first deselects; if it fails, nothing is selected.
        self.view = None;
        match folder_name(mailbox) {
            Ok(folder) => self.ask(
                Pending::Select {
                    tag,
                    folder: folder.clone(),
                    read_only,
                },
                Request::Select { folder, read_only },
            ),
            Err(why) => self.no(tag, Some(code("CANNOT")), why),
        }
    }

    /// The continuation of SELECT and EXAMINE: the folder's state, then the view replaces
    /// the last one.
    fn selected_folder(
        &mut self,
        tag: Tag<'static>,
        folder: String,
        read_only: bool,
        snapshot: Snapshot,
    ) {
        let view = View::new(folder, read_only, snapshot);
        for reply in view.flag_replies() {
            self.reply(reply);
        }
        self.reply(Reply::data(Data::Exists(view.exists())));
        self.reply(Reply::data(Data::Recent(view.recent())));
        if let Some(unseen) = view.first_unseen().and_then(NonZeroU32::new) {
            self.reply(Reply::untagged(
                StatusKind::Ok,
                Some(Code::Unseen(unseen)),
                "first unseen",
            ));
        }
        if let Some(validity) = NonZeroU32::new(view.uidvalidity) {
            self.reply(Reply::untagged(
                StatusKind::Ok,
                Some(Code::UidValidity(validity)),
                "UIDs valid",
            ));
        }
        let uidnext = view.uidnext.max(view.max_uid().saturating_add(1));
        if let Some(next) = NonZeroU32::new(uidnext) {
            self.reply(Reply::untagged(
                StatusKind::Ok,
                Some(Code::UidNext(next)),
                "predicted next UID",
            ));
        }
        let (code, text) = if read_only {
            (Code::ReadOnly, "EXAMINE completed")
        } else {
            (Code::ReadWrite, "SELECT completed")
        };
        self.view = Some(view);
        self.ok(tag, Some(code), text);
    }

    pub(super) fn create(&mut self, tag: Tag<'static>, mailbox: &Mailbox<'_>) {
        // RFC 3501 §6.3.3: a trailing delimiter declares that names will be made under this
        // one. Any folder here can have sub-folders, so the declaration is dropped.
        let declared = match mailbox {
            Mailbox::Other(other) => other
                .as_ref()
                .strip_suffix(&[DELIMITER as u8])
                .filter(|name| !name.is_empty())
                .and_then(|name| Mailbox::try_from(name.to_vec()).ok()),
            Mailbox::Inbox => None,
        };
        let mailbox = declared.as_ref().unwrap_or(mailbox);
        self.simple(tag, mailbox, "CREATE completed", |folder| Request::Create {
            folder,
        })
    }

    pub(super) fn delete(&mut self, tag: Tag<'static>, mailbox: &Mailbox<'_>) {
        if self.selected() == folder_name(mailbox).ok().as_deref() {
            // Deleting the selected folder leaves nothing selected.
            self.view = None;
        }
        self.simple(tag, mailbox, "DELETE completed", |folder| Request::Delete {
            folder,
        })
    }

    pub(super) fn rename(&mut self, tag: Tag<'static>, from: &Mailbox<'_>, to: &Mailbox<'_>) {
        match (folder_name(from), folder_name(to)) {
            (Ok(from), Ok(to)) => self.ask(
                Pending::Simple(tag, "RENAME completed"),
                Request::Rename { from, to },
            ),
            (Err(why), _) | (_, Err(why)) => self.no(tag, Some(code("CANNOT")), why),
        }
    }

    pub(super) fn subscribe(&mut self, tag: Tag<'static>, mailbox: &Mailbox<'_>, subscribe: bool) {
        let done = if subscribe {
            "SUBSCRIBE completed"
        } else {
            "UNSUBSCRIBE completed"
        };
        self.simple(tag, mailbox, done, |folder| Request::Subscribe {
            folder,
            subscribe,
        })
    }

    fn simple(
        &mut self,
        tag: Tag<'static>,
        mailbox: &Mailbox<'_>,
        done: &'static str,
        request: impl FnOnce(String) -> Request,
    ) {
        match folder_name(mailbox) {
            Ok(folder) => self.ask(Pending::Simple(tag, done), request(folder)),
            Err(why) => self.no(tag, Some(code("CANNOT")), why),
        }
    }

    pub(super) fn list(
        &mut self,
        tag: Tag<'static>,
        reference: &Mailbox<'_>,
        wildcard: &ListMailbox<'_>,
        lsub: bool,
    ) {
        let reference = match reference {
            Mailbox::Inbox => INBOX.to_owned(),
            Mailbox::Other(other) => String::from_utf8_lossy(other.as_ref()).into_owned(),
        };
        let wildcard = match wildcard {
            ListMailbox::Token(token) => String::from_utf8_lossy(token.as_ref()).into_owned(),
            ListMailbox::String(string) => String::from_utf8_lossy(string.as_ref()).into_owned(),
        };
        if wildcard.is_empty() && !lsub {
            // RFC 3501 §6.3.8: the hierarchy delimiter and root.
            if let Ok(root) = Mailbox::try_from(String::new()) {
                self.reply(Reply::data(Data::List {
                    items: vec![FlagNameAttribute::Noselect],
                    delimiter: QuotedChar::try_from(DELIMITER).ok(),
                    mailbox: root,
                }));
            }
            return self.ok(tag, None, "LIST completed");
        }
        let pattern = format!("{reference}{wildcard}");
        if pattern.len() > MAX_PATTERN {
            return self.bad(tag, None, "the pattern is too long");
        }
        self.ask(
            Pending::List {
                tag,
                lsub,
                pattern: canonical_pattern(&pattern),
            },
            Request::ListFolders,
        );
    }

    /// The continuation of LIST and LSUB: the names that match, with their attributes.
    fn listed(
        &mut self,
        tag: Tag<'static>,
        lsub: bool,
        pattern: &str,
        folders: &[String],
        subscribed: &[String],
    ) {
        let existing: HashSet<&str> = folders.iter().map(String::as_str).collect();
        let has_children = |name: &str| {
            let prefix = format!("{name}{DELIMITER}");
            folders.iter().any(|f| f.starts_with(&prefix))
        };
        // RFC 3501 §6.3.9: when `%` stops short of a subscribed name, LSUB shows the level it
        // stops at, \Noselect, even though that level is not subscribed.
        let mut unsubscribed_parents: HashSet<String> = HashSet::new();
        if lsub {
            let chosen: HashSet<&str> = subscribed.iter().map(String::as_str).collect();
            for name in subscribed.iter().filter(|n| !wildcard_match(pattern, n)) {
                let mut parent = name.as_str();
                while let Some((p, _)) = parent.rsplit_once(DELIMITER) {
                    if !chosen.contains(p) && wildcard_match(pattern, p) {
                        unsubscribed_parents.insert(p.to_owned());
                    }
                    parent = p;
                }
            }
        }
        // Parents of existing folders that do not exist themselves are shown \Noselect.
        let mut names: Vec<String> = if lsub {
            subscribed
                .iter()
                .cloned()
                .chain(unsubscribed_parents.iter().cloned())
                .collect()
        } else {
            let mut all: Vec<String> = folders.to_vec();
            for f in folders {
                let mut parent = f.as_str();
                while let Some((p, _)) = parent.rsplit_once(DELIMITER) {
                    if !existing.contains(p) {
                        all.push(p.to_owned());
                    }
                    parent = p;
                }
            }
            all
        };
        names.sort();
        names.dedup();
        if let Some(pos) = names.iter().position(|n| n == INBOX) {
            let inbox = names.remove(pos);
            names.insert(0, inbox);
        }
        for name in names.iter().filter(|n| wildcard_match(pattern, n)) {
            let mut items = Vec::new();
            if !existing.contains(name.as_str()) || unsubscribed_parents.contains(name) {
                items.push(FlagNameAttribute::Noselect);
            }
            let children = if has_children(name) {
                "HasChildren"
            } else {
                "HasNoChildren"
            };
            if let Ok(atom) = Atom::try_from(children) {
                items.push(FlagNameAttribute::from(atom));
            }
            let Ok(mailbox) = Mailbox::try_from(name.clone()) else {
                continue;
            };
            let delimiter = QuotedChar::try_from(DELIMITER).ok();
            self.reply(Reply::data(if lsub {
                Data::Lsub {
                    items,
                    delimiter,
                    mailbox,
                }
            } else {
                Data::List {
                    items,
                    delimiter,
                    mailbox,
                }
            }));
        }
        self.finish(
            tag,
            None,
            if lsub {
                "LSUB completed"
            } else {
                "LIST completed"
            },
            true,
        );
    }

    pub(super) fn status(
        &mut self,
        tag: Tag<'static>,
        mailbox: &Mailbox<'_>,
        items: Vec<StatusDataItemName>,
    ) {
        match folder_name(mailbox) {
            Ok(folder) => self.ask(
                Pending::Status {
                    tag,
                    folder: folder.clone(),
                    items,
                },
                Request::Status { folder },
            ),
            Err(why) => self.no(tag, Some(code("CANNOT")), why),
        }
    }

    /// The continuation of STATUS: the items asked for.
    fn status_data(
        &mut self,
        tag: Tag<'static>,
        folder: &str,
        items: &[StatusDataItemName],
        status: FolderStatus,
    ) {
        let mut out = Vec::new();
        for item in items {
            out.push(match item {
                StatusDataItemName::Messages => StatusDataItem::Messages(status.messages),
                StatusDataItemName::Recent => StatusDataItem::Recent(status.recent),
                StatusDataItemName::Unseen => StatusDataItem::Unseen(status.unseen),
                StatusDataItemName::Deleted => StatusDataItem::Deleted(status.deleted),
                StatusDataItemName::UidNext => match NonZeroU32::new(status.uidnext) {
                    Some(n) => StatusDataItem::UidNext(n),
                    None => continue,
                },
                StatusDataItemName::UidValidity => match NonZeroU32::new(status.uidvalidity) {
                    Some(n) => StatusDataItem::UidValidity(n),
                    None => continue,
                },
                _ => continue,
            });
        }
        if let Ok(mailbox) = Mailbox::try_from(folder.to_owned()) {
            self.reply(Reply::data(Data::Status {
                mailbox,
                items: out.into(),
            }));
        }
        self.finish(tag, None, "STATUS completed", true);
    }

    pub(super) fn append(
        &mut self,
        tag: Tag<'static>,
        mailbox: &Mailbox<'_>,
        flags: &[Flag<'_>],
        date: Option<i64>,
        message: LiteralOrLiteral8<'static>,
    ) {
        let folder = match folder_name(mailbox) {
            Ok(folder) => folder,
            Err(why) => return self.no(tag, Some(code("CANNOT")), why),
        };
        let message = match message {
            LiteralOrLiteral8::Literal(literal) => literal.into_inner().into_owned(),
            LiteralOrLiteral8::Literal8(literal) => literal.data.into_owned(),
        };
        if message.is_empty() {
            return self.no(tag, None, "an empty message cannot be appended");
        }
        let to_selected = self.selected() == Some(folder.as_str());
        self.ask(
            Pending::Append { tag, to_selected },
            Request::Append {
                folder,
                flags: flags_of(flags),
                keywords: keywords_of(flags),
                date,
                message,
            },
        );
    }

    /// The continuation of APPEND: `[APPENDUID]`; the selected folder is re-scanned before the
    /// completion when the message went there.
    fn appended(&mut self, tag: Tag<'static>, to_selected: bool, uidvalidity: u32, uid: u32) {
        if to_selected && let Some(view) = &mut self.view {
            view.dirty = true;
        }
        let code = match (NonZeroU32::new(uidvalidity), NonZeroU32::new(uid)) {
            (Some(uid_validity), Some(uid)) => Some(Code::AppendUid { uid_validity, uid }),
            _ => None,
        };
        self.finish(tag, code, "APPEND completed", true);
    }

    /// The continuations of this group, each beside its command above; failures here.
    pub(super) fn mailboxes_answered(&mut self, pending: Pending, response: Response) {
        match (pending, response) {
            (
                Pending::Select {
                    tag,
                    folder,
                    read_only,
                },
                Response::Snapshot(snapshot),
            ) => self.selected_folder(tag, folder, read_only, snapshot),
            (
                Pending::List { tag, lsub, pattern },
                Response::Folders {
                    folders,
                    subscribed,
                },
            ) => self.listed(tag, lsub, &pattern, &folders, &subscribed),
            (Pending::Simple(tag, done), Response::Done) => self.finish(tag, None, done, true),
            (Pending::Status { tag, folder, items }, Response::Status(status)) => {
                self.status_data(tag, &folder, &items, status)
            }
            (Pending::Append { tag, to_selected }, Response::Appended { uidvalidity, uid }) => {
                self.appended(tag, to_selected, uidvalidity, uid)
            }
            (Pending::Append { tag, .. }, Response::Failed(failure)) => {
                self.failure(tag, failure, Code::TryCreate)
            }
            (
                Pending::Select { tag, .. }
                | Pending::Simple(tag, _)
                | Pending::Status { tag, .. }
                | Pending::List { tag, .. },
                Response::Failed(failure),
            ) => self.failure(tag, failure, code("NONEXISTENT")),
            // `Pending::fits` let nothing else through.
            (_, _) => {}
        }
    }
}

/// A folder name from the wire: printable ASCII (modified UTF-7), then checked by the store's
/// rules so it names exactly one directory.
pub(super) fn folder_name(mailbox: &Mailbox<'_>) -> Result<String, String> {
    let bytes: &[u8] = match mailbox {
        Mailbox::Inbox => return Ok(INBOX.to_owned()),
        Mailbox::Other(other) => other.as_ref(),
    };
    if !bytes.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Err("a mailbox name is modified UTF-7: printable ASCII only".into());
    }
    let name = String::from_utf8_lossy(bytes);
    check_name(&name).map_err(|e| e.to_string())
}

/// `inbox` at the start of a pattern means INBOX whatever its case.
fn canonical_pattern(pattern: &str) -> String {
    match pattern.get(..5) {
        Some(head)
            if head.eq_ignore_ascii_case(INBOX)
                && matches!(pattern.as_bytes().get(5), None | Some(b'.')) =>
        {
            format!("{INBOX}{}", pattern.get(5..).unwrap_or_default())
        }
        _ => pattern.to_owned(),
    }
}

/// LIST matching: `*` matches anything, `%` anything but the hierarchy delimiter. A dynamic
/// programme over (pattern so far, name prefix): time is their product, bounded by
/// [`MAX_PATTERN`] and the longest folder name.
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    let name: Vec<char> = name.chars().collect();
    // `row` holds, for each prefix length of the name, whether the pattern so far matches it.
    let mut row: Vec<bool> = std::iter::once(true)
        .chain(std::iter::repeat_n(false, name.len()))
        .collect();
    for pc in pattern.chars() {
        let next: Vec<bool> = match pc {
            '*' | '%' => {
                let mut reachable = false;
                row.iter()
                    .enumerate()
                    .map(|(j, &matched)| {
                        reachable |= matched;
                        let here = reachable;
                        if pc == '%' && name.get(j) == Some(&DELIMITER) {
                            reachable = false;
                        }
                        here
                    })
                    .collect()
            }
            c => std::iter::once(false)
                .chain(
                    row.iter()
                        .zip(name.iter())
                        .map(|(&matched, &nc)| matched && nc == c),
                )
                .collect(),
        };
        row = next;
    }
    row.last().copied().unwrap_or(false)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*", "Archive.2024"));
        assert!(!wildcard_match("%", "Archive.2024"));
        assert!(wildcard_match("%", "Archive"));
        assert!(wildcard_match("Archive.%", "Archive.2024"));
        assert!(wildcard_match("A*4", "Archive.2024"));
        assert!(!wildcard_match("A%4", "Archive.2024"));
        assert!(wildcard_match("INBOX", "INBOX"));
        assert!(!wildcard_match("Sent", "sent"));
        assert_eq!(canonical_pattern("inbox.%"), "INBOX.%");
        assert_eq!(canonical_pattern("inboxes"), "inboxes");
    }
}
