//! FETCH: which items a request names, whether they need the message's bytes or set `\Seen`,
//! and the `* n FETCH (…)` reply for one message.

use std::borrow::Cow;
use std::collections::HashSet;
use std::num::NonZeroU32;

use imap_types::core::{IString, Literal, NString};
use imap_types::datetime::DateTime;
use imap_types::fetch::{
    Macro, MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName, Section,
};
use imap_types::response::Data;

use super::mime::Parsed;
use super::reply::Reply;
use super::view::{MessageMeta, flag_list};

/// The items of a FETCH, macros expanded, each once; `UID` added for UID FETCH (RFC 3501
/// §6.4.8).
pub fn items(
    names: MacroOrMessageDataItemNames<'static>,
    uid: bool,
) -> Result<Vec<MessageDataItemName<'static>>, &'static str> {
    let mut items = match names {
        MacroOrMessageDataItemNames::Macro(m) => {
            let mut items = vec![
                MessageDataItemName::Flags,
                MessageDataItemName::InternalDate,
                MessageDataItemName::Rfc822Size,
            ];
            if matches!(m, Macro::All | Macro::Full) {
                items.push(MessageDataItemName::Envelope);
            }
            if matches!(m, Macro::Full) {
                items.push(MessageDataItemName::Body);
            }
            items
        }
        MacroOrMessageDataItemNames::MessageDataItemNames(items) => items,
    };
    // `BODY[] BODY[] …` thousands of times is one BODY[].
    let mut seen = HashSet::new();
    items.retain(|item| seen.insert(item.clone()));
    if items.iter().any(|i| {
        matches!(
            i,
            MessageDataItemName::Binary { .. } | MessageDataItemName::BinarySize { .. }
        )
    }) {
        return Err("BINARY is not supported");
    }
    if uid && !items.contains(&MessageDataItemName::Uid) {
        items.insert(0, MessageDataItemName::Uid);
    }
    Ok(items)
}

/// Items that need the message's bytes.
pub fn needs_content(items: &[MessageDataItemName<'_>]) -> bool {
    items.iter().any(|i| {
        !matches!(
            i,
            MessageDataItemName::Flags
                | MessageDataItemName::Uid
                | MessageDataItemName::InternalDate
                | MessageDataItemName::Rfc822Size
        )
    })
}

/// Items that set `\Seen` (RFC 3501 §6.4.5): BODY[…] without PEEK, RFC822, RFC822.TEXT.
pub fn sets_seen(items: &[MessageDataItemName<'_>]) -> bool {
    items.iter().any(|i| {
        matches!(
            i,
            MessageDataItemName::BodyExt { peek: false, .. }
                | MessageDataItemName::Rfc822
                | MessageDataItemName::Rfc822Text
        )
    })
}

fn needs_parse(items: &[MessageDataItemName<'_>]) -> bool {
    items.iter().any(|i| match i {
        MessageDataItemName::Envelope
        | MessageDataItemName::Body
        | MessageDataItemName::BodyStructure => true,
        MessageDataItemName::BodyExt { section, .. } => matches!(
            section,
            Some(
                Section::Part(_)
                    | Section::Mime(_)
                    | Section::Header(Some(_))
                    | Section::Text(Some(_))
                    | Section::HeaderFields(Some(_), _)
                    | Section::HeaderFieldsNot(Some(_), _)
            )
        ),
        _ => false,
    })
}

/// Message bytes as an IMAP literal (NUL shown as 0x80, as no literal may hold it).
fn literal(bytes: Cow<'_, [u8]>) -> NString<'static> {
    let mut bytes = bytes.into_owned();
    for b in bytes.iter_mut() {
        if *b == 0 {
            *b = 0x80;
        }
    }
    match Literal::try_from(bytes) {
        Ok(literal) => NString(Some(IString::Literal(literal))),
        Err(_) => NString::NIL,
    }
}

pub fn internal_date(secs: i64) -> Option<DateTime> {
    let utc = chrono::DateTime::from_timestamp(secs, 0)?;
    DateTime::try_from(utc.fixed_offset()).ok()
}

/// One message's FETCH reply would carry more section data than [`data_budget`] allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooMuchData;

/// The section data (BODY[…], RFC822…) one message's FETCH reply may carry: a few copies of
/// the message. Naming the same bytes over and over (`BODY[]<0.n> BODY[]<1.n> …`) cannot make
/// the server build a reply hundreds of times the message's size.
pub fn data_budget(size: usize) -> usize {
    size.saturating_mul(4).saturating_add(64 * 1024)
}

/// The `* seq FETCH (…)` reply for one message (`None` when it cannot be made); `raw` is its
/// bytes when the items need them.
pub fn reply(
    items: &[MessageDataItemName<'static>],
    seq: u32,
    meta: &MessageMeta,
    keywords: &[String],
    raw: Option<&[u8]>,
    with_flags: bool,
) -> Result<Option<Reply>, TooMuchData> {
    let mut left = raw.map_or(0, |raw| data_budget(raw.len()));
    let mut over = false;
    let reply = build(items, seq, meta, keywords, raw, with_flags, &mut |octets| {
        match left.checked_sub(octets) {
            Some(rest) => left = rest,
            None => over = true,
        }
        !over
    });
    if over { Err(TooMuchData) } else { Ok(reply) }
}

/// [`reply`], each item's section data `charge`d first (which says whether it still fits).
fn build(
    items: &[MessageDataItemName<'static>],
    seq: u32,
    meta: &MessageMeta,
    keywords: &[String],
    raw: Option<&[u8]>,
    with_flags: bool,
    charge: &mut dyn FnMut(usize) -> bool,
) -> Option<Reply> {
    let parsed = raw.map(|raw| {
        let parsed = Parsed::new_lazy(raw);
        if needs_parse(items) {
            parsed.parse();
        }
        parsed
    });
    let mut out = Vec::with_capacity(items.len() + 1);
    for item in items {
        let value = match item {
            MessageDataItemName::Flags => MessageDataItem::Flags(flag_list(meta, keywords)),
            MessageDataItemName::Uid => MessageDataItem::Uid(NonZeroU32::new(meta.uid)?),
            MessageDataItemName::InternalDate => MessageDataItem::InternalDate(
                internal_date(meta.internal_date).or_else(|| internal_date(0))?,
            ),
            MessageDataItemName::Rfc822Size => {
                MessageDataItem::Rfc822Size(u32::try_from(meta.size).unwrap_or(u32::MAX))
            }
            MessageDataItemName::Envelope => MessageDataItem::Envelope(parsed.as_ref()?.envelope()),
            MessageDataItemName::BodyStructure => {
                MessageDataItem::BodyStructure(parsed.as_ref()?.body_structure(true))
            }
            MessageDataItemName::Body => {
                MessageDataItem::Body(parsed.as_ref()?.body_structure(false))
            }
            MessageDataItemName::BodyExt {
                section, partial, ..
            } => {
                let data = parsed.as_ref()?.section(section.as_ref());
                let data = match (data, partial) {
                    (Some(data), Some((origin, length))) => {
                        let start = usize::try_from(*origin)
                            .unwrap_or(usize::MAX)
                            .min(data.len());
                        let end = start
                            .saturating_add(usize::try_from(length.get()).unwrap_or(usize::MAX))
                            .min(data.len());
                        Some(Cow::Owned(
                            data.get(start..end).unwrap_or_default().to_vec(),
                        ))
                    }
                    (data, _) => data,
                };
                if !charge(data.as_ref().map_or(0, |d| d.len())) {
                    return None;
                }
                MessageDataItem::BodyExt {
                    section: section.clone(),
                    origin: partial.map(|(origin, _)| origin),
                    data: data.map(literal).unwrap_or(NString::NIL),
                }
            }
            MessageDataItemName::Rfc822 => {
                let raw = parsed.as_ref()?.raw();
                if !charge(raw.len()) {
                    return None;
                }
                MessageDataItem::Rfc822(literal(Cow::Borrowed(raw)))
            }
            MessageDataItemName::Rfc822Header => {
                let header = parsed.as_ref()?.section(Some(&Section::Header(None)))?;
                if !charge(header.len()) {
                    return None;
                }
                MessageDataItem::Rfc822Header(literal(header))
            }
            MessageDataItemName::Rfc822Text => {
                let text = parsed.as_ref()?.section(Some(&Section::Text(None)))?;
                if !charge(text.len()) {
                    return None;
                }
                MessageDataItem::Rfc822Text(literal(text))
            }
            MessageDataItemName::Binary { .. } | MessageDataItemName::BinarySize { .. } => continue,
        };
        out.push(value);
    }
    if with_flags && !items.contains(&MessageDataItemName::Flags) {
        out.push(MessageDataItem::Flags(flag_list(meta, keywords)));
    }
    Data::fetch(seq, out).ok().map(Reply::data)
}
