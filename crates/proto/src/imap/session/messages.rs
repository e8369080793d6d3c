//! The messages of the selected folder: FETCH, SEARCH, STORE, COPY and MOVE, EXPUNGE and
//! CLOSE, each beside the continuation that takes the driver's answer. FETCH and SEARCH load
//! message bytes in batches (`Config::batch_messages`, `batch_bytes`), one request each.

use std::collections::HashSet;
use std::num::NonZeroU32;

use imap_types::core::{Atom, Charset, Tag, Vec1};
use imap_types::extensions::uidplus::{UidElement, UidSet};
use imap_types::fetch::MessageDataItemName;
use imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_types::mailbox::Mailbox;
use imap_types::response::{Code, Data, StatusKind};
use imap_types::search::SearchKey;
use imap_types::sequence::SequenceSet;

use super::mailboxes::folder_name;
use super::{Event, Failure, Request, Response, Session};
use crate::imap::fetch;
use crate::imap::mailbox::{FlagOp, Flags};
use crate::imap::mime::Parsed;
use crate::imap::reply::{Reply, code};
use crate::imap::search::{self, Candidate};
use crate::imap::view::{MessageMeta, flags_of, keywords_of};

#[derive(Debug)]
pub(super) struct FetchJob {
    tag: Tag<'static>,
    uid: bool,
    items: Vec<MessageDataItemName<'static>>,
    /// UIDs in sequence order.
    targets: Vec<u32>,
    next: usize,
    batch: usize,
    /// Messages whose `\Seen` this FETCH set: their FLAGS go out with them.
    seen_set: HashSet<u32>,
}

#[derive(Debug)]
pub(super) struct SearchJob {
    tag: Tag<'static>,
    uid: bool,
    key: SearchKey<'static>,
    targets: Vec<u32>,
    next: usize,
    batch: usize,
    found: Vec<u32>,
}

/// What a message command waits for.
#[derive(Debug)]
pub(super) enum Pending {
    /// FETCH of items that set `\Seen`: the flags first.
    FetchSeen(Box<FetchJob>),
    FetchLoad(Box<FetchJob>),
    SearchLoad(Box<SearchJob>),
    Store {
        tag: Tag<'static>,
        silent: bool,
        uid: bool,
    },
    /// EXPUNGE, or CLOSE (which expunges silently, then deselects).
    Expunge {
        tag: Tag<'static>,
        close: bool,
    },
    Copy {
        tag: Tag<'static>,
        remove: bool,
        to_selected: bool,
    },
}

impl Pending {
    /// Does `response` (not a failure) answer this?
    pub(super) fn fits(&self, response: &Response) -> bool {
        matches!(
            (self, response),
            (
                Pending::FetchSeen(_) | Pending::Store { .. },
                Response::Flags { .. }
            ) | (
                Pending::FetchLoad(_) | Pending::SearchLoad(_),
                Response::Messages(_)
            ) | (Pending::Expunge { .. }, Response::Expunged(_))
                | (Pending::Copy { .. }, Response::Copied { .. })
        )
    }
}

impl From<Pending> for super::Pending {
    fn from(pending: Pending) -> Self {
        super::Pending::Messages(pending)
    }
}

impl Session {
    pub(super) fn close(&mut self, tag: Tag<'static>) {
        let deleted = self.deleted_uids(None);
        match deleted {
            Some(uids) if !uids.is_empty() => self.ask(
                Pending::Expunge { tag, close: true },
                Request::Expunge { uids },
            ),
            _ => {
                self.view = None;
                self.ok(tag, None, "CLOSE completed");
            }
        }
    }

    /// The UIDs in `set` (all when `None`) that carry `\Deleted`; `None` when read-only.
    fn deleted_uids(&self, set: Option<&SequenceSet>) -> Option<Vec<u32>> {
        let view = self.view.as_ref()?;
        if view.read_only {
            return None;
        }
        let chosen: Option<HashSet<usize>> = match set {
            Some(set) => Some(view.resolve(set, true).ok()?.into_iter().collect()),
            None => None,
        };
        Some(
            view.messages
                .iter()
                .enumerate()
                .filter(|(i, m)| {
                    m.flags.contains(Flags::DELETED)
                        && chosen.as_ref().is_none_or(|c| c.contains(i))
                })
                .map(|(_, m)| m.uid)
                .collect(),
        )
    }

    pub(super) fn expunge(&mut self, tag: Tag<'static>, set: Option<SequenceSet>) {
        if self.view.as_ref().is_some_and(|v| v.read_only) {
            return self.no(tag, Some(Code::ReadOnly), "the mailbox is read-only");
        }
        match self.deleted_uids(set.as_ref()) {
            Some(uids) if !uids.is_empty() => self.ask(
                Pending::Expunge { tag, close: false },
                Request::Expunge { uids },
            ),
            _ => self.finish(tag, None, "EXPUNGE completed", true),
        }
    }

    /// The continuation of EXPUNGE and CLOSE.
    fn expunged(&mut self, tag: Tag<'static>, close: bool, uids: &[u32]) {
        if close {
            self.view = None;
            self.ok(tag, None, "CLOSE completed");
        } else {
            let replies = self
                .view
                .as_mut()
                .map(|v| v.expunge(uids))
                .unwrap_or_default();
            self.out.extend(replies.into_iter().map(Event::Reply));
            self.finish(tag, None, "EXPUNGE completed", true);
        }
    }

    /// UIDs named by `set`, in sequence order; `Err` for a message number past the end.
    fn targets(&self, set: &SequenceSet, uid: bool) -> Result<Vec<u32>, ()> {
        let Some(view) = &self.view else {
            return Err(());
        };
        let indexes = view.resolve(set, uid).map_err(|_| ())?;
        Ok(indexes
            .into_iter()
            .filter_map(|i| view.messages.get(i).map(|m| m.uid))
            .collect())
    }

    pub(super) fn fetch(
        &mut self,
        tag: Tag<'static>,
        set: &SequenceSet,
        names: imap_types::fetch::MacroOrMessageDataItemNames<'static>,
        uid: bool,
    ) {
        let Ok(targets) = self.targets(set, uid) else {
            return self.bad(tag, None, "invalid message sequence number");
        };
        let items = match fetch::items(names, uid) {
            Ok(items) => items,
            Err(why) => return self.bad(tag, None, why),
        };
        let mut job = Box::new(FetchJob {
            tag,
            uid,
            items,
            targets,
            next: 0,
            batch: 0,
            seen_set: HashSet::new(),
        });
        let read_only = self.view.as_ref().is_none_or(|v| v.read_only);
        if fetch::sets_seen(&job.items) && !read_only {
            let unseen: Vec<u32> = job
                .targets
                .iter()
                .copied()
                .filter(|&uid| {
                    self.meta(uid)
                        .is_some_and(|m| !m.flags.contains(Flags::SEEN))
                })
                .collect();
            if !unseen.is_empty() {
                job.seen_set = unseen.iter().copied().collect();
                return self.ask(
                    Pending::FetchSeen(job),
                    Request::Store {
                        uids: unseen,
                        op: FlagOp::Add,
                        flags: Flags::SEEN,
                        keywords: Vec::new(),
                    },
                );
            }
        }
        self.fetch_next(job);
    }

    fn meta(&self, uid: u32) -> Option<&MessageMeta> {
        let view = self.view.as_ref()?;
        view.messages.get(view.index_of(uid)?)
    }

    /// The next batch of targets: at most `batch_messages`, and about `batch_bytes`.
    fn batch(&self, targets: &[u32]) -> usize {
        let mut bytes = 0u64;
        let mut n = 0;
        for &uid in targets.iter().take(self.config.batch_messages.max(1)) {
            if n > 0 && bytes >= self.config.batch_bytes {
                break;
            }
            bytes = bytes.saturating_add(self.meta(uid).map_or(0, |m| m.size));
            n += 1;
        }
        n
    }

    fn fetch_next(&mut self, mut job: Box<FetchJob>) {
        if !fetch::needs_content(&job.items) {
            let replies: Vec<Reply> = job
                .targets
                .iter()
                .filter_map(|&uid| self.fetch_reply(&job, uid, None).ok().flatten())
                .collect();
            self.out.extend(replies.into_iter().map(Event::Reply));
            return self.finish(job.tag, None, "FETCH completed", job.uid);
        }
        let rest = job.targets.get(job.next..).unwrap_or_default();
        job.batch = self.batch(rest);
        if job.batch == 0 {
            return self.finish(job.tag, None, "FETCH completed", job.uid);
        }
        let uids = rest.get(..job.batch).unwrap_or_default().to_vec();
        self.ask(Pending::FetchLoad(job), Request::Load { uids });
    }

    fn fetch_reply(
        &self,
        job: &FetchJob,
        uid: u32,
        raw: Option<&[u8]>,
    ) -> Result<Option<Reply>, fetch::TooMuchData> {
        let Some(view) = self.view.as_ref() else {
            return Ok(None);
        };
        let Some((index, meta)) = view
            .index_of(uid)
            .and_then(|i| Some((i, view.messages.get(i)?)))
        else {
            return Ok(None);
        };
        let Ok(seq) = u32::try_from(index + 1) else {
            return Ok(None);
        };
        fetch::reply(
            &job.items,
            seq,
            meta,
            &view.keywords,
            raw,
            job.seen_set.contains(&uid),
        )
    }

    /// The continuation of FETCH: a batch of messages loaded, their replies, then the next.
    fn fetch_loaded(&mut self, mut job: Box<FetchJob>, messages: &[Option<Vec<u8>>]) {
        let batch: Vec<u32> = job
            .targets
            .get(job.next..job.next.saturating_add(job.batch))
            .unwrap_or_default()
            .to_vec();
        let mut replies = Vec::new();
        let mut too_much = false;
        for (&uid, bytes) in batch.iter().zip(messages) {
            let Some(bytes) = bytes.as_deref() else {
                continue;
            };
            match self.fetch_reply(&job, uid, Some(bytes)) {
                Ok(reply) => replies.extend(reply),
                Err(fetch::TooMuchData) => {
                    too_much = true;
                    break;
                }
            }
        }
        self.out.extend(replies.into_iter().map(Event::Reply));
        if too_much {
            return self.no(
                job.tag,
                Some(code("LIMIT")),
                "the FETCH asks for more of one message than the server sends at once",
            );
        }
        job.next = job.next.saturating_add(job.batch);
        self.fetch_next(job);
    }

    pub(super) fn search(
        &mut self,
        tag: Tag<'static>,
        charset: Option<Charset<'static>>,
        criteria: Vec1<SearchKey<'static>>,
        uid: bool,
    ) {
        if let Some(charset) = &charset {
            let name = match charset {
                Charset::Atom(atom) => atom.inner().to_owned(),
                Charset::Quoted(quoted) => quoted.inner().to_owned(),
            };
            if !name.eq_ignore_ascii_case("US-ASCII") && !name.eq_ignore_ascii_case("UTF-8") {
                let allowed = ["US-ASCII", "UTF-8"]
                    .into_iter()
                    .filter_map(|c| Atom::try_from(c).ok().map(Charset::Atom))
                    .collect();
                return self.no(
                    tag,
                    Some(Code::BadCharset { allowed }),
                    "unsupported charset",
                );
            }
        }
        let key = SearchKey::And(criteria);
        let targets: Vec<u32> = self
            .view
            .as_ref()
            .map(|v| v.messages.iter().map(|m| m.uid).collect())
            .unwrap_or_default();
        let job = Box::new(SearchJob {
            tag,
            uid,
            key,
            targets,
            next: 0,
            batch: 0,
            found: Vec::new(),
        });
        self.search_next(job);
    }

    fn search_next(&mut self, mut job: Box<SearchJob>) {
        let Some(view) = &self.view else {
            return self.ok(job.tag, None, "SEARCH completed");
        };
        if !search::needs_content(&job.key) {
            job.found = (0..view.messages.len())
                .filter(|&i| search::matches(&job.key, &Candidate::new(view, i, None)))
                .filter_map(|i| view.messages.get(i).map(|m| m.uid))
                .collect();
            return self.search_done(*job);
        }
        let rest = job.targets.get(job.next..).unwrap_or_default();
        job.batch = self.batch(rest);
        if job.batch == 0 {
            return self.search_done(*job);
        }
        let uids = rest.get(..job.batch).unwrap_or_default().to_vec();
        self.ask(Pending::SearchLoad(job), Request::Load { uids });
    }

    /// The continuation of SEARCH by content: a batch of messages loaded and matched.
    fn search_loaded(&mut self, mut job: Box<SearchJob>, messages: &[Option<Vec<u8>>]) {
        if let Some(view) = &self.view {
            let batch = job
                .targets
                .get(job.next..job.next.saturating_add(job.batch))
                .unwrap_or_default();
            let mut found = Vec::new();
            for (&uid, bytes) in batch.iter().zip(messages) {
                let (Some(index), Some(bytes)) = (view.index_of(uid), bytes) else {
                    continue;
                };
                let parsed = Parsed::new_lazy(bytes);
                if search::matches(&job.key, &Candidate::new(view, index, Some(&parsed))) {
                    found.push(uid);
                }
            }
            job.found.extend(found);
        }
        job.next = job.next.saturating_add(job.batch);
        self.search_next(job);
    }

    fn search_done(&mut self, job: SearchJob) {
        let Some(view) = &self.view else {
            return self.ok(job.tag, None, "SEARCH completed");
        };
        let mut numbers: Vec<NonZeroU32> = job
            .found
            .iter()
            .filter_map(|&uid| {
                if job.uid {
                    NonZeroU32::new(uid)
                } else {
                    view.index_of(uid)
                        .and_then(|i| u32::try_from(i + 1).ok())
                        .and_then(NonZeroU32::new)
                }
            })
            .collect();
        numbers.sort_unstable();
        self.reply(Reply::data(Data::Search(numbers)));
        self.finish(job.tag, None, "SEARCH completed", job.uid);
    }

    pub(super) fn store(
        &mut self,
        tag: Tag<'static>,
        set: &SequenceSet,
        kind: StoreType,
        response: StoreResponse,
        flags: &[Flag<'_>],
        uid: bool,
    ) {
        if self.view.as_ref().is_some_and(|v| v.read_only) {
            return self.no(tag, Some(Code::ReadOnly), "the mailbox is read-only");
        }
        let Ok(uids) = self.targets(set, uid) else {
            return self.bad(tag, None, "invalid message sequence number");
        };
        if uids.is_empty() {
            return self.finish(tag, None, "STORE completed", uid);
        }
        let op = match kind {
            StoreType::Add => FlagOp::Add,
            StoreType::Remove => FlagOp::Remove,
            StoreType::Replace => FlagOp::Replace,
        };
        self.ask(
            Pending::Store {
                tag,
                silent: matches!(response, StoreResponse::Silent),
                uid,
            },
            Request::Store {
                uids,
                op,
                flags: flags_of(flags),
                keywords: keywords_of(flags),
            },
        );
    }

    /// The continuation of STORE: the flags as they now are, told unless `.SILENT`.
    fn stored(&mut self, tag: Tag<'static>, silent: bool, uid: bool, changed: &[(u32, Flags)]) {
        if !silent && let Some(view) = &self.view {
            let replies: Vec<Reply> = changed
                .iter()
                .filter_map(|(u, _)| view.index_of(*u))
                .filter_map(|i| view.flags_reply(i, uid))
                .collect();
            self.out.extend(replies.into_iter().map(Event::Reply));
        }
        self.finish(tag, None, "STORE completed", uid);
    }

    pub(super) fn copy(
        &mut self,
        tag: Tag<'static>,
        set: &SequenceSet,
        mailbox: &Mailbox<'_>,
        uid: bool,
        remove: bool,
    ) {
        let to = match folder_name(mailbox) {
            Ok(to) => to,
            Err(why) => return self.no(tag, Some(code("CANNOT")), why),
        };
        if remove && self.view.as_ref().is_some_and(|v| v.read_only) {
            return self.no(tag, Some(Code::ReadOnly), "the mailbox is read-only");
        }
        let Ok(uids) = self.targets(set, uid) else {
            return self.bad(tag, None, "invalid message sequence number");
        };
        let done = if remove {
            "MOVE completed"
        } else {
            "COPY completed"
        };
        if uids.is_empty() {
            return self.finish(tag, None, done, true);
        }
        let to_selected = self.selected() == Some(to.as_str());
        self.ask(
            Pending::Copy {
                tag,
                remove,
                to_selected,
            },
            Request::Copy { uids, to, remove },
        );
    }

    /// The continuation of COPY and MOVE: `[COPYUID]`, and for MOVE the source's EXPUNGEs.
    fn copied(
        &mut self,
        tag: Tag<'static>,
        remove: bool,
        to_selected: bool,
        uidvalidity: u32,
        pairs: &[(u32, u32)],
    ) {
        let copyuid = copy_uid(uidvalidity, pairs);
        if to_selected && let Some(view) = &mut self.view {
            view.dirty = true;
        }
        if remove {
            if let Some(copyuid) = copyuid {
                self.reply(Reply::untagged(StatusKind::Ok, Some(copyuid), "moved"));
            }
            let moved: Vec<u32> = pairs.iter().map(|(from, _)| *from).collect();
            let replies = self
                .view
                .as_mut()
                .map(|v| v.expunge(&moved))
                .unwrap_or_default();
            self.out.extend(replies.into_iter().map(Event::Reply));
            self.finish(tag, None, "MOVE completed", true);
        } else {
            self.finish(tag, copyuid, "COPY completed", true);
        }
    }

    /// Takes the flags the driver reports, after the keyword table they refer to (a table
    /// that grew is told to the client first).
    fn apply_flags(&mut self, changed: &[(u32, Flags)], keywords: Vec<String>) {
        let Some(view) = &mut self.view else {
            return;
        };
        let replies = view.learn_keywords(keywords);
        self.out.extend(replies.into_iter().map(Event::Reply));
        let Some(view) = &mut self.view else {
            return;
        };
        for &(uid, flags) in changed {
            if let Some(i) = view.index_of(uid)
                && let Some(m) = view.messages.get_mut(i)
            {
                m.flags = flags;
            }
        }
    }

    /// The continuations of this group, each beside its command above; failures here.
    pub(super) fn messages_answered(&mut self, pending: Pending, response: Response) {
        match (pending, response) {
            (Pending::FetchSeen(job), Response::Flags { changed, keywords }) => {
                self.apply_flags(&changed, keywords);
                self.fetch_next(job);
            }
            (Pending::FetchLoad(job), Response::Messages(messages)) => {
                self.fetch_loaded(job, &messages)
            }
            (Pending::SearchLoad(job), Response::Messages(messages)) => {
                self.search_loaded(job, &messages)
            }
            (Pending::Store { tag, silent, uid }, Response::Flags { changed, keywords }) => {
                self.apply_flags(&changed, keywords);
                self.stored(tag, silent, uid, &changed)
            }
            (Pending::Expunge { tag, close }, Response::Expunged(uids)) => {
                self.expunged(tag, close, &uids)
            }
            (
                Pending::Copy {
                    tag,
                    remove,
                    to_selected,
                },
                Response::Copied { uidvalidity, pairs },
            ) => self.copied(tag, remove, to_selected, uidvalidity, &pairs),
            (Pending::Expunge { tag, close: true }, Response::Failed(failure)) => {
                self.view = None;
                self.failure(tag, failure, code("NONEXISTENT"));
            }
            (Pending::Copy { tag, .. }, Response::Failed(failure)) => {
                self.failure(tag, failure, Code::TryCreate)
            }
            (
                Pending::Store { tag, .. } | Pending::Expunge { tag, .. },
                Response::Failed(failure),
            ) => self.failure(tag, failure, code("NONEXISTENT")),
            (Pending::FetchSeen(job) | Pending::FetchLoad(job), _) => {
                self.failure(job.tag, Failure::Unavailable, code("UNAVAILABLE"))
            }
            (Pending::SearchLoad(job), _) => {
                self.failure(job.tag, Failure::Unavailable, code("UNAVAILABLE"))
            }
            // `Pending::fits` let nothing else through.
            (_, _) => {}
        }
    }
}

/// `[COPYUID v src dst]`, or `None` when nothing was copied.
fn copy_uid(uidvalidity: u32, pairs: &[(u32, u32)]) -> Option<Code<'static>> {
    let uid_validity = NonZeroU32::new(uidvalidity)?;
    let source = uid_set(pairs.iter().map(|p| p.0))?;
    let destination = uid_set(pairs.iter().map(|p| p.1))?;
    Some(Code::CopyUid {
        uid_validity,
        source,
        destination,
    })
}

/// UIDs in order as a set, runs of consecutive ones as ranges.
fn uid_set(uids: impl Iterator<Item = u32>) -> Option<UidSet> {
    let mut elements: Vec<(u32, u32)> = Vec::new();
    for uid in uids {
        match elements.last_mut() {
            Some((_, end)) if end.checked_add(1) == Some(uid) => *end = uid,
            _ => elements.push((uid, uid)),
        }
    }
    let elements: Vec<UidElement> = elements
        .into_iter()
        .filter_map(|(a, b)| {
            let (a, b) = (NonZeroU32::new(a)?, NonZeroU32::new(b)?);
            Some(if a == b {
                UidElement::Single(a)
            } else {
                UidElement::Range(a, b)
            })
        })
        .collect();
    Vec1::try_from(elements).ok().map(UidSet)
}
