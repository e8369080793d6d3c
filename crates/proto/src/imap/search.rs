//! SEARCH: evaluating search keys against one message. Keys on flags, sizes, dates and numbers
//! need only the view; keys on addresses, subjects, headers and text need the message's bytes.
//! Text matches are case-insensitive substrings (RFC 3501 §6.4.4). Recursion is bounded by the
//! codec, which refuses keys nested deeper than nine levels.

use std::cell::OnceCell;

use imap_types::core::AString;
use imap_types::search::SearchKey;

use super::mime::Parsed;
use super::view::{View, has_keyword};
use crate::imap::mailbox::Flags;

/// Whether any key needs the message's bytes.
pub fn needs_content(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().any(needs_content),
        SearchKey::Not(key) => needs_content(key),
        SearchKey::Or(a, b) => needs_content(a) || needs_content(b),
        SearchKey::Bcc(_)
        | SearchKey::Body(_)
        | SearchKey::Cc(_)
        | SearchKey::From(_)
        | SearchKey::Header(..)
        | SearchKey::SentBefore(_)
        | SearchKey::SentOn(_)
        | SearchKey::SentSince(_)
        | SearchKey::Subject(_)
        | SearchKey::Text(_)
        | SearchKey::To(_) => true,
        _ => false,
    }
}

/// One message under test: where it is in the view, and its bytes when loaded.
pub struct Candidate<'v, 'a> {
    pub view: &'v View,
    pub index: usize,
    pub parsed: Option<&'v Parsed<'a>>,
    body: OnceCell<String>,
}

impl<'v, 'a> Candidate<'v, 'a> {
    pub fn new(view: &'v View, index: usize, parsed: Option<&'v Parsed<'a>>) -> Self {
        Candidate {
            view,
            index,
            parsed,
            body: OnceCell::new(),
        }
    }

    fn header_contains(&self, name: &str, needle: &AString<'_>) -> bool {
        let Some(parsed) = self.parsed else {
            return false;
        };
        let needle = lower(needle.as_ref());
        parsed
            .header_values(name)
            .iter()
            .any(|value| value.to_lowercase().contains(&needle))
    }

    fn body_contains(&self, needle: &AString<'_>) -> bool {
        let Some(parsed) = self.parsed else {
            return false;
        };
        let body = self.body.get_or_init(|| parsed.body_text().to_lowercase());
        body.contains(&lower(needle.as_ref()))
    }

    fn header_text_contains(&self, needle: &AString<'_>) -> bool {
        let Some(parsed) = self.parsed else {
            return false;
        };
        let header = super::mime::split_at_header_end(parsed.raw()).0;
        String::from_utf8_lossy(header)
            .to_lowercase()
            .contains(&lower(needle.as_ref()))
    }
}

fn lower(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_lowercase()
}

fn internal_day(secs: i64) -> Option<chrono::NaiveDate> {
    chrono::DateTime::from_timestamp(secs, 0).map(|d| d.date_naive())
}

/// Does the candidate match `key`?
pub fn matches(key: &SearchKey<'_>, c: &Candidate<'_, '_>) -> bool {
    let Some(message) = c.view.messages.get(c.index) else {
        return false;
    };
    let flags = message.flags;
    let day = || internal_day(message.internal_date);
    let sent = || c.parsed.and_then(|p| p.sent_date());
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().all(|k| matches(k, c)),
        SearchKey::Not(key) => !matches(key, c),
        SearchKey::Or(a, b) => matches(a, c) || matches(b, c),
        SearchKey::All => true,
        SearchKey::SequenceSet(set) => c.view.set_contains(set, false, c.index),
        SearchKey::Uid(set) => c.view.set_contains(set, true, c.index),
        SearchKey::Answered => flags.contains(Flags::ANSWERED),
        SearchKey::Unanswered => !flags.contains(Flags::ANSWERED),
        SearchKey::Deleted => flags.contains(Flags::DELETED),
        SearchKey::Undeleted => !flags.contains(Flags::DELETED),
        SearchKey::Draft => flags.contains(Flags::DRAFT),
        SearchKey::Undraft => !flags.contains(Flags::DRAFT),
        SearchKey::Flagged => flags.contains(Flags::FLAGGED),
        SearchKey::Unflagged => !flags.contains(Flags::FLAGGED),
        SearchKey::Seen => flags.contains(Flags::SEEN),
        SearchKey::Unseen => !flags.contains(Flags::SEEN),
        SearchKey::Recent => message.recent,
        SearchKey::Old => !message.recent,
        SearchKey::New => message.recent && !flags.contains(Flags::SEEN),
        // No keywords are kept: none is ever set.
        SearchKey::Keyword(k) => has_keyword(c.view, c.index, k.inner()),
        SearchKey::Unkeyword(k) => !has_keyword(c.view, c.index, k.inner()),
        SearchKey::Larger(n) => message.size > u64::from(*n),
        SearchKey::Smaller(n) => message.size < u64::from(*n),
        SearchKey::Before(date) => day().is_some_and(|d| d < *date.as_ref()),
        SearchKey::On(date) => day().is_some_and(|d| d == *date.as_ref()),
        SearchKey::Since(date) => day().is_some_and(|d| d >= *date.as_ref()),
        SearchKey::SentBefore(date) => sent().is_some_and(|d| d < *date.as_ref()),
        SearchKey::SentOn(date) => sent().is_some_and(|d| d == *date.as_ref()),
        SearchKey::SentSince(date) => sent().is_some_and(|d| d >= *date.as_ref()),
        SearchKey::From(s) => c.header_contains("From", s),
        SearchKey::To(s) => c.header_contains("To", s),
        SearchKey::Cc(s) => c.header_contains("Cc", s),
        SearchKey::Bcc(s) => c.header_contains("Bcc", s),
        SearchKey::Subject(s) => c.header_contains("Subject", s),
        SearchKey::Header(name, value) => {
            let name = String::from_utf8_lossy(name.as_ref()).into_owned();
            let Some(parsed) = c.parsed else {
                return false;
            };
            let values = parsed.header_values(&name);
            // An empty string matches every message that has the field (RFC 3501 §6.4.4).
            if value.as_ref().is_empty() {
                !values.is_empty()
            } else {
                c.header_contains(&name, value)
            }
        }
        SearchKey::Body(s) => c.body_contains(s),
        SearchKey::Text(s) => c.header_text_contains(s) || c.body_contains(s),
        #[allow(unreachable_patterns)]
        _ => false,
    }
}
