//! What FETCH and SEARCH need from a message's bytes: the header/text split, header fields
//! picked or dropped, MIME parts addressed by section numbers (RFC 3501 §6.4.5), ENVELOPE and
//! BODYSTRUCTURE. The MIME parsing is mail-parser's; this module maps it onto IMAP's shapes.
//!
//! Every walk is bounded: part paths by their length, nesting by [`MAX_DEPTH`], and header
//! scans by the header's size.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::num::NonZeroU32;
use std::sync::LazyLock;

use imap_types::body::{
    BasicFields, Body, BodyStructure, Disposition, Language, Location, MultiPartExtensionData,
    SinglePartExtensionData, SpecificFields,
};
use imap_types::core::{IString, NString, Vec1};
use imap_types::envelope::{Address as ImapAddress, Envelope};
use imap_types::fetch::{Part, Section};
use mail_parser::{
    Address, HeaderValue, Message, MessageParser, MessagePart, MimeHeaders, PartType,
};

use super::reply::{istring, nstring};

/// Deeper nesting than this is shown as an opaque part rather than walked.
pub const MAX_DEPTH: usize = 32;

static PARSER: LazyLock<MessageParser> = LazyLock::new(MessageParser::default);

/// A message as FETCH and SEARCH see it: its bytes and, parsed on first need, its MIME
/// structure.
pub struct Parsed<'a> {
    raw: &'a [u8],
    message: OnceCell<Option<Message<'a>>>,
}

impl std::fmt::Debug for Parsed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parsed")
            .field("len", &self.raw.len())
            .finish()
    }
}

impl<'a> Parsed<'a> {
    /// Parses `raw` at once.
    pub fn new(raw: &'a [u8]) -> Self {
        let parsed = Parsed::new_lazy(raw);
        parsed.parse();
        parsed
    }

    /// Parses `raw` only when something needs its structure.
    pub fn new_lazy(raw: &'a [u8]) -> Self {
        Parsed {
            raw,
            message: OnceCell::new(),
        }
    }

    pub fn parse(&self) {
        let _ = self.message();
    }

    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    pub fn message(&self) -> Option<&Message<'a>> {
        self.message.get_or_init(|| PARSER.parse(self.raw)).as_ref()
    }

    fn root(&self) -> Option<Node<'_, 'a>> {
        self.message().map(|msg| Node { msg, part: 0 })
    }

    pub fn envelope(&self) -> Envelope<'static> {
        match self.root() {
            Some(node) => envelope(node),
            None => empty_envelope(),
        }
    }

    /// BODYSTRUCTURE (`extended`) or BODY.
    pub fn body_structure(&self, extended: bool) -> BodyStructure<'static> {
        match self.root() {
            Some(node) => structure(node, extended, 0),
            None => plain_text(self.raw, extended),
        }
    }

    /// The bytes of `BODY[section]`; `None` when the section does not exist (sent as NIL).
    pub fn section(&self, section: Option<&Section<'_>>) -> Option<Cow<'a, [u8]>> {
        let Some(section) = section else {
            return Some(Cow::Borrowed(self.raw));
        };
        let (header, body) = split_at_header_end(self.raw);
        // The top-level header and text need no MIME parsing.
        match section {
            Section::Header(None) => return Some(Cow::Borrowed(header)),
            Section::Text(None) => return Some(Cow::Borrowed(body)),
            Section::HeaderFields(None, names) => {
                return Some(Cow::Owned(pick_fields(header, names.as_ref(), false)));
            }
            Section::HeaderFieldsNot(None, names) => {
                return Some(Cow::Owned(pick_fields(header, names.as_ref(), true)));
            }
            _ => {}
        }
        let root = self.root()?;
        match section {
            Section::Part(part) => {
                let node = root.walk(part.0.as_ref())?;
                Some(Cow::Owned(node.body()?.to_vec()))
            }
            Section::Mime(part) => {
                let node = root.walk(part.0.as_ref())?;
                Some(Cow::Owned(node.header()?.to_vec()))
            }
            Section::Header(part) => {
                let (header, _) = attached(root, part.as_ref()?)?;
                Some(Cow::Owned(header.to_vec()))
            }
            Section::Text(part) => {
                let (_, body) = attached(root, part.as_ref()?)?;
                Some(Cow::Owned(body.to_vec()))
            }
            Section::HeaderFields(part, names) => {
                let (header, _) = attached(root, part.as_ref()?)?;
                Some(Cow::Owned(pick_fields(header, names.as_ref(), false)))
            }
            Section::HeaderFieldsNot(part, names) => {
                let (header, _) = attached(root, part.as_ref()?)?;
                Some(Cow::Owned(pick_fields(header, names.as_ref(), true)))
            }
        }
    }

    /// The decoded text of the body parts, for SEARCH BODY/TEXT.
    pub fn body_text(&self) -> String {
        let mut out = String::new();
        if let Some(message) = self.message() {
            collect_text(message, &mut out, 0);
        } else {
            out.push_str(&String::from_utf8_lossy(split_at_header_end(self.raw).1));
        }
        out
    }

    /// The values of the top-level header fields named `name`, decoded where mail-parser
    /// understands them (encoded words, addresses), else as raw text.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        let Some(root) = self.root() else {
            return out;
        };
        let Some(part) = root.part() else {
            return out;
        };
        for header in part
            .headers
            .iter()
            .filter(|h| h.name.as_str().eq_ignore_ascii_case(name))
        {
            let raw = root
                .slice(header.offset_start, header.offset_end)
                .map(unfold)
                .unwrap_or_default();
            let raw = String::from_utf8_lossy(&raw).into_owned();
            let decoded = match &header.value {
                HeaderValue::Text(text) => Some(text.to_string()),
                HeaderValue::TextList(list) => Some(list.join(" ")),
                HeaderValue::Address(address) => Some(address_text(address)),
                _ => None,
            };
            out.push(match decoded {
                Some(decoded) if decoded != raw => format!("{decoded} {raw}"),
                _ => raw,
            });
        }
        out
    }

    /// The Date header's calendar date (SENTBEFORE, SENTON, SENTSINCE).
    pub fn sent_date(&self) -> Option<chrono::NaiveDate> {
        let date = self.message()?.date()?;
        chrono::NaiveDate::from_ymd_opt(
            i32::from(date.year),
            u32::from(date.month),
            u32::from(date.day),
        )
    }
}

fn collect_text(message: &Message<'_>, out: &mut String, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    for part in &message.parts {
        match &part.body {
            PartType::Text(text) | PartType::Html(text) => {
                out.push_str(text);
                out.push('\n');
            }
            PartType::Message(inner) => collect_text(inner, out, depth + 1),
            _ => {}
        }
    }
}

fn address_text(address: &Address<'_>) -> String {
    let mut words = Vec::new();
    for addr in address.iter() {
        if let Some(name) = &addr.name {
            words.push(name.to_string());
        }
        if let Some(email) = &addr.address {
            words.push(format!("<{email}>"));
        }
    }
    words.join(" ")
}

/// A part of a (possibly nested) message. mail-parser gives a nested message the buffer its
/// offsets point into: the outer message's for an inline message/rfc822, the decoded bytes for
/// a base64 one.
/// The header and text of the attached message that part `part` is (`None` unless it is a
/// `message/rfc822`), split from the part's own bytes, so `n.HEADER` and `n.TEXT` always
/// add up to `BODY[n]`.
fn attached<'p>(root: Node<'p, '_>, part: &Part) -> Option<(&'p [u8], &'p [u8])> {
    let node = root.walk(part.0.as_ref())?;
    node.encapsulated()?;
    Some(split_at_header_end(node.body()?))
}

#[derive(Clone, Copy)]
struct Node<'p, 'a> {
    msg: &'p Message<'a>,
    part: usize,
}

impl<'p, 'a> Node<'p, 'a> {
    fn part(&self) -> Option<&'p MessagePart<'a>> {
        self.msg.parts.get(self.part)
    }

    fn slice(&self, from: u32, to: u32) -> Option<&'p [u8]> {
        let from = usize::try_from(from).ok()?;
        let to = usize::try_from(to).ok()?;
        self.msg.raw_message.get(from..to)
    }

    fn header(&self) -> Option<&'p [u8]> {
        let part = self.part()?;
        self.slice(part.offset_header, part.offset_body)
    }

    fn body(&self) -> Option<&'p [u8]> {
        let part = self.part()?;
        self.slice(part.offset_body, part.offset_end)
    }

    /// The message inside a message/rfc822 part.
    fn encapsulated(&self) -> Option<Node<'p, 'a>> {
        match &self.part()?.body {
            PartType::Message(inner) => Some(Node {
                msg: inner,
                part: 0,
            }),
            _ => None,
        }
    }

    /// Follows section numbers (`1.2.3`) from this node, a message's root. The first number
    /// counts the message's parts: part 1 of a message that is not multipart is its body,
    /// whatever its type, so with a top-level `message/rfc822` `1` is the attached message
    /// and `1.1` the first part of that (RFC 3501 §6.4.5).
    fn walk(self, path: &[NonZeroU32]) -> Option<Node<'p, 'a>> {
        let mut node = self;
        for (step, &n) in path.iter().enumerate() {
            let index = usize::try_from(n.get()).ok()?.checked_sub(1)?;
            node = if step == 0 {
                node.child_of_root(index)?
            } else {
                node.child(index)?
            };
        }
        Some(node)
    }

    fn child(self, index: usize) -> Option<Node<'p, 'a>> {
        match &self.part()?.body {
            PartType::Multipart(children) => {
                let id = usize::try_from(*children.get(index)?).ok()?;
                Some(Node {
                    msg: self.msg,
                    part: id,
                })
            }
            // Inside a message/rfc822 part, numbers count the parts of the inner message.
            PartType::Message(inner) => Node {
                msg: inner,
                part: 0,
            }
            .child_of_root(index),
            _ => None,
        }
    }

    /// Part `index` of the message whose root this is: of a multipart, its child; of any
    /// other, part 1 is the root itself (its body).
    fn child_of_root(self, index: usize) -> Option<Node<'p, 'a>> {
        match &self.part()?.body {
            PartType::Multipart(_) => self.child(index),
            _ if index == 0 => Some(self),
            _ => None,
        }
    }
}

/// Splits at the end of the header (after its blank line). A message with no blank line is
/// all header.
pub fn split_at_header_end(raw: &[u8]) -> (&[u8], &[u8]) {
    let mut line_start = 0;
    while line_start < raw.len() {
        let rest = raw.get(line_start..).unwrap_or_default();
        let line_end = match rest.iter().position(|&b| b == b'\n') {
            Some(lf) => line_start + lf + 1,
            None => raw.len(),
        };
        let line = raw.get(line_start..line_end).unwrap_or_default();
        if line == b"\r\n" || line == b"\n" {
            return raw.split_at(line_end);
        }
        line_start = line_end;
    }
    (raw, &[])
}

/// The header fields of `header`, each with its continuation lines, by name.
fn fields(header: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut out: Vec<(&[u8], &[u8])> = Vec::new();
    let mut start = 0;
    let mut current: Option<usize> = None;
    while start < header.len() {
        let rest = header.get(start..).unwrap_or_default();
        let end = match rest.iter().position(|&b| b == b'\n') {
            Some(lf) => start + lf + 1,
            None => header.len(),
        };
        let line = header.get(start..end).unwrap_or_default();
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        match (continuation, current) {
            (true, Some(field_start)) => {
                if let Some(last) = out.last_mut() {
                    last.1 = header.get(field_start..end).unwrap_or_default();
                }
            }
            _ => {
                let name_end = line.iter().position(|&b| b == b':').unwrap_or(line.len());
                let name = line.get(..name_end).unwrap_or_default();
                out.push((trim(name), line));
                current = Some(start);
            }
        }
        start = end;
    }
    out
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    bytes.get(start..end).unwrap_or_default()
}

/// `HEADER.FIELDS (names)` or, with `not`, `HEADER.FIELDS.NOT (names)`: the chosen fields and
/// the blank line after them.
pub fn pick_fields<N: AsRef<[u8]>>(header: &[u8], names: &[N], not: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, field) in fields(header) {
        let listed = names.iter().any(|n| n.as_ref().eq_ignore_ascii_case(name));
        if listed != not {
            out.extend_from_slice(field);
            if !field.ends_with(b"\n") {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A header value on one line: folding removed, outer blanks trimmed.
fn unfold(raw: &[u8]) -> Vec<u8> {
    let joined: Vec<u8> = raw
        .iter()
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .collect();
    trim(&joined).to_vec()
}

/// An RFC 2047 encoded word for text that is not ASCII (IMAP4rev1 strings carry no UTF-8).
fn encoded_word(text: &str) -> String {
    use base64::Engine as _;
    format!(
        "=?UTF-8?B?{}?=",
        base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
    )
}

fn ascii_or_encoded(bytes: Vec<u8>) -> Vec<u8> {
    if bytes.is_ascii() {
        bytes
    } else {
        encoded_word(&String::from_utf8_lossy(&bytes)).into_bytes()
    }
}

/// The raw (unfolded) value of the first field `name` of the node's header.
fn raw_field(node: Node<'_, '_>, name: &str) -> Option<Vec<u8>> {
    let part = node.part()?;
    let header = part
        .headers
        .iter()
        .find(|h| h.name.as_str().eq_ignore_ascii_case(name))?;
    node.slice(header.offset_start, header.offset_end)
        .map(unfold)
}

fn raw_nstring(node: Node<'_, '_>, name: &str) -> NString<'static> {
    nstring(raw_field(node, name).map(ascii_or_encoded))
}

fn empty_envelope() -> Envelope<'static> {
    Envelope {
        date: NString::NIL,
        subject: NString::NIL,
        from: Vec::new(),
        sender: Vec::new(),
        reply_to: Vec::new(),
        to: Vec::new(),
        cc: Vec::new(),
        bcc: Vec::new(),
        in_reply_to: NString::NIL,
        message_id: NString::NIL,
    }
}

fn envelope(node: Node<'_, '_>) -> Envelope<'static> {
    let list = |name: &str| -> Vec<ImapAddress<'static>> {
        node.part()
            .and_then(|part| {
                part.headers
                    .iter()
                    .find(|h| h.name.as_str().eq_ignore_ascii_case(name))
            })
            .and_then(|h| h.value.as_address())
            .map(addresses)
            .unwrap_or_default()
    };
    let from = list("From");
    let sender = list("Sender");
    let reply_to = list("Reply-To");
    Envelope {
        date: raw_nstring(node, "Date"),
        subject: raw_nstring(node, "Subject"),
        // RFC 3501 §7.4.2: Sender and Reply-To default to From.
        sender: if sender.is_empty() {
            from.clone()
        } else {
            sender
        },
        reply_to: if reply_to.is_empty() {
            from.clone()
        } else {
            reply_to
        },
        from,
        to: list("To"),
        cc: list("Cc"),
        bcc: list("Bcc"),
        in_reply_to: raw_nstring(node, "In-Reply-To"),
        message_id: raw_nstring(node, "Message-ID"),
    }
}

fn addresses(address: &Address<'_>) -> Vec<ImapAddress<'static>> {
    let one = |name: Option<&str>, email: Option<&str>| -> ImapAddress<'static> {
        let (mailbox, host) = match email {
            Some(email) => match email.rsplit_once('@') {
                Some((local, domain)) => (Some(local.to_owned()), Some(domain.to_owned())),
                None => (Some(email.to_owned()), Some(String::new())),
            },
            None => (None, Some(String::new())),
        };
        // An obsolete source route (`<@relay.example:user@host>`) is the envelope's adl, not
        // part of the mailbox name (RFC 3501 §7.4.2).
        let (adl, mailbox) = match mailbox {
            Some(m) if m.starts_with('@') => match m.split_once(':') {
                Some((route, local)) => (Some(route.to_owned()), Some(local.to_owned())),
                None => (None, Some(m)),
            },
            other => (None, other),
        };
        ImapAddress {
            name: nstring(name.map(|n| ascii_or_encoded(n.as_bytes().to_vec()))),
            adl: nstring(adl.map(String::into_bytes)),
            mailbox: nstring(mailbox.map(|m| ascii_or_encoded(m.into_bytes()))),
            host: nstring(host.map(|h| ascii_or_encoded(h.into_bytes()))),
        }
    };
    let mut out = Vec::new();
    match address {
        Address::List(list) => {
            for addr in list {
                out.push(one(addr.name.as_deref(), addr.address.as_deref()));
            }
        }
        Address::Group(groups) => {
            for group in groups {
                // RFC 3501 §7.4.2: a group is framed by a start (host NIL, mailbox the name)
                // and an end (everything NIL).
                if let Some(name) = &group.name {
                    out.push(ImapAddress {
                        name: NString::NIL,
                        adl: NString::NIL,
                        mailbox: nstring(Some(ascii_or_encoded(name.as_bytes().to_vec()))),
                        host: NString::NIL,
                    });
                }
                for addr in &group.addresses {
                    out.push(one(addr.name.as_deref(), addr.address.as_deref()));
                }
                if group.name.is_some() {
                    out.push(ImapAddress {
                        name: NString::NIL,
                        adl: NString::NIL,
                        mailbox: NString::NIL,
                        host: NString::NIL,
                    });
                }
            }
        }
    }
    out
}

fn lines(body: &[u8]) -> u32 {
    let mut n = body.iter().filter(|&&b| b == b'\n').count();
    if body.last().is_some_and(|&b| b != b'\n') {
        n += 1;
    }
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn size(body: &[u8]) -> u32 {
    u32::try_from(body.len()).unwrap_or(u32::MAX)
}

fn upper(text: &str) -> IString<'static> {
    istring(text.to_ascii_uppercase().into_bytes())
}

/// A parameter for BODYSTRUCTURE: mail-parser has decoded RFC 2231 and encoded words, so a
/// value that is not ASCII goes back out in RFC 2231 form (`name*` = `utf-8''%E6…`).
fn parameter(name: &str, value: &str) -> (IString<'static>, IString<'static>) {
    if value.is_ascii() {
        return (upper(name), istring(value.as_bytes().to_vec()));
    }
    let mut encoded = String::from("utf-8''");
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    (upper(&format!("{name}*")), istring(encoded.into_bytes()))
}

fn parameters(part: &MessagePart<'_>) -> Vec<(IString<'static>, IString<'static>)> {
    part.content_type()
        .and_then(|ct| ct.attributes())
        .map(|attrs| attrs.iter().map(|a| parameter(&a.name, &a.value)).collect())
        .unwrap_or_default()
}

fn disposition(node: Node<'_, '_>) -> Disposition<'static> {
    let part = node.part();
    let disposition = part.and_then(|p| p.content_disposition()).map(|cd| {
        let params = cd
            .attributes()
            .map(|attrs| attrs.iter().map(|a| parameter(&a.name, &a.value)).collect())
            .unwrap_or_default();
        (upper(cd.ctype()), params)
    });
    let language = match part.map(|p| p.content_language()) {
        Some(HeaderValue::Text(text)) => vec![istring(text.as_bytes().to_vec())],
        Some(HeaderValue::TextList(list)) => list
            .iter()
            .map(|t| istring(t.as_bytes().to_vec()))
            .collect(),
        _ => Vec::new(),
    };
    Disposition {
        disposition,
        tail: Some(Language {
            language,
            tail: Some(Location {
                location: raw_nstring(node, "Content-Location"),
                extensions: Vec::new(),
            }),
        }),
    }
}

fn plain_text(raw: &[u8], extended: bool) -> BodyStructure<'static> {
    let body = split_at_header_end(raw).1;
    BodyStructure::Single {
        body: Body {
            basic: BasicFields {
                parameter_list: vec![(upper("charset"), istring(b"us-ascii".to_vec()))],
                id: NString::NIL,
                description: NString::NIL,
                content_transfer_encoding: upper("7bit"),
                size: size(body),
            },
            specific: SpecificFields::Text {
                subtype: upper("plain"),
                number_of_lines: lines(body),
            },
        },
        extension_data: extended.then_some(SinglePartExtensionData {
            md5: NString::NIL,
            tail: None,
        }),
    }
}

fn structure(node: Node<'_, '_>, extended: bool, depth: usize) -> BodyStructure<'static> {
    let Some(part) = node.part() else {
        return plain_text(b"", extended);
    };
    if let PartType::Multipart(children) = &part.body
        && depth < MAX_DEPTH
    {
        let bodies: Vec<BodyStructure<'static>> = children
            .iter()
            .filter_map(|&id| usize::try_from(id).ok())
            .filter(|&id| id != node.part)
            .map(|id| {
                structure(
                    Node {
                        msg: node.msg,
                        part: id,
                    },
                    extended,
                    depth + 1,
                )
            })
            .collect();
        if let Ok(bodies) = Vec1::try_from(bodies) {
            let subtype = part
                .content_type()
                .and_then(|ct| ct.subtype())
                .unwrap_or("mixed");
            return BodyStructure::Multi {
                bodies,
                subtype: upper(subtype),
                extension_data: extended.then(|| MultiPartExtensionData {
                    parameter_list: parameters(part),
                    tail: Some(disposition(node)),
                }),
            };
        }
    }
    single(node, part, extended, depth)
}

fn single(
    node: Node<'_, '_>,
    part: &MessagePart<'_>,
    extended: bool,
    depth: usize,
) -> BodyStructure<'static> {
    let body = node.body().unwrap_or_default();
    let content_type = part.content_type();
    let (mut kind, mut subtype) = match content_type {
        Some(ct) => (
            ct.ctype().to_owned(),
            ct.subtype().unwrap_or("octet-stream").to_owned(),
        ),
        None => ("text".to_owned(), "plain".to_owned()),
    };
    let mut parameter_list = parameters(part);
    if content_type.is_none() {
        parameter_list.push((upper("charset"), istring(b"us-ascii".to_vec())));
    }
    let is_text = kind.eq_ignore_ascii_case("text");
    let is_message = kind.eq_ignore_ascii_case("message")
        && (subtype.eq_ignore_ascii_case("rfc822") || subtype.eq_ignore_ascii_case("global"));
    let specific = match &part.body {
        PartType::Message(inner) if is_message && depth < MAX_DEPTH => {
            let inner = Node {
                msg: inner,
                part: 0,
            };
            SpecificFields::Message {
                envelope: Box::new(envelope(inner)),
                body_structure: Box::new(structure(inner, extended, depth + 1)),
                number_of_lines: lines(body),
            }
        }
        _ if is_text => SpecificFields::Text {
            subtype: upper(&subtype),
            number_of_lines: lines(body),
        },
        _ => {
            if is_message {
                // Not parsed (too deep): an opaque part, since message/rfc822 promises an
                // envelope that is not there.
                kind = "application".into();
                subtype = "octet-stream".into();
            }
            SpecificFields::Basic {
                r#type: upper(&kind),
                subtype: upper(&subtype),
            }
        }
    };
    let encoding = raw_field(node, "Content-Transfer-Encoding")
        .filter(|e| !e.is_empty())
        .map(|e| String::from_utf8_lossy(&e).into_owned())
        .unwrap_or_else(|| "7bit".into());
    BodyStructure::Single {
        body: Body {
            basic: BasicFields {
                parameter_list,
                id: raw_nstring(node, "Content-ID"),
                description: raw_nstring(node, "Content-Description"),
                content_transfer_encoding: upper(&encoding),
                size: size(body),
            },
            specific,
        },
        extension_data: extended.then(|| SinglePartExtensionData {
            md5: raw_nstring(node, "Content-MD5"),
            tail: Some(disposition(node)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_types::fetch::Part;

    const NESTED: &[u8] = b"From: a@b\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\npreamble\r\n--XX\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XX\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n--XX--\r\nepilogue\r\n";

    fn part(path: &[u32]) -> Part {
        Part(
            Vec1::try_from(
                path.iter()
                    .map(|&n| NonZeroU32::new(n).unwrap())
                    .collect::<Vec<_>>(),
            )
            .unwrap(),
        )
    }

    fn text(bytes: Option<Cow<'_, [u8]>>) -> Option<String> {
        bytes.map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// The ENVELOPE address list of header `To`, written as on the wire.
    fn envelope_to(to: &str) -> String {
        let raw = format!("From: f@g.example\r\nTo: {to}\r\n\r\nbody\r\n");
        let envelope = Parsed::new(raw.as_bytes()).envelope();
        let field = |n: &NString<'_>| match &n.0 {
            Some(s) => format!("\"{}\"", String::from_utf8_lossy(s.as_ref())),
            None => "NIL".to_owned(),
        };
        let mut out = String::from("(");
        for a in &envelope.to {
            out.push_str(&format!(
                "({} {} {} {})",
                field(&a.name),
                field(&a.adl),
                field(&a.mailbox),
                field(&a.host)
            ));
        }
        out.push(')');
        out
    }

    #[test]
    fn envelope_of_groups_and_routes() {
        assert_eq!(
            envelope_to("group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;, user@domain"),
            "((NIL NIL \"group\" NIL)(NIL NIL \"g1\" \"d1.org\")(NIL NIL \"g2\" \"d2.org\")\
             (NIL NIL NIL NIL)(NIL NIL \"group2\" NIL)(NIL NIL \"g3\" \"d3.org\")(NIL NIL NIL NIL)\
             (NIL NIL \"user\" \"domain\"))"
        );
        assert_eq!(
            envelope_to("undisclosed-recipients:;"),
            "((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL))"
        );
        assert_eq!(
            envelope_to("Bob <@relay.example:bob@example.jp>"),
            "((\"Bob\" \"@relay.example\" \"bob\" \"example.jp\"))"
        );
    }

    #[test]
    fn sections_of_a_nested_message() {
        let parsed = Parsed::new(NESTED);
        assert_eq!(
            text(parsed.section(Some(&Section::Part(part(&[1]))))).as_deref(),
            Some("hello")
        );
        assert_eq!(
            text(parsed.section(Some(&Section::Mime(part(&[1]))))).as_deref(),
            Some("Content-Type: text/plain\r\n\r\n")
        );
        assert_eq!(
            text(parsed.section(Some(&Section::Part(part(&[2]))))).as_deref(),
            Some("Subject: inner\r\n\r\ninner body")
        );
        assert_eq!(
            text(parsed.section(Some(&Section::Header(Some(part(&[2])))))).as_deref(),
            Some("Subject: inner\r\n\r\n")
        );
        assert_eq!(
            text(parsed.section(Some(&Section::Text(Some(part(&[2])))))).as_deref(),
            Some("inner body")
        );
        assert_eq!(
            text(parsed.section(Some(&Section::Part(part(&[2, 1]))))).as_deref(),
            Some("inner body")
        );
        assert_eq!(text(parsed.section(Some(&Section::Part(part(&[3]))))), None);
        assert_eq!(
            text(parsed.section(Some(&Section::Part(part(&[1, 1]))))),
            None
        );
        assert_eq!(
            text(parsed.section(Some(&Section::Header(Some(part(&[1])))))),
            None
        );
        assert!(
            text(parsed.section(Some(&Section::Text(None))))
                .unwrap()
                .starts_with("preamble")
        );
    }

    #[test]
    fn parts_of_a_top_level_attached_message() {
        const ROOT: &[u8] = b"From: a@b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\nContent-Type: multipart/mixed; boundary=YY\r\n\r\n--YY\r\nContent-Type: text/plain\r\n\r\ninner one\r\n--YY\r\nContent-Type: text/plain\r\n\r\ninner two\r\n--YY--\r\n";
        let parsed = Parsed::new(ROOT);
        let inner = "Subject: inner\r\nContent-Type: multipart/mixed; boundary=YY\r\n\r\n";
        let body = "--YY\r\nContent-Type: text/plain\r\n\r\ninner one\r\n--YY\r\nContent-Type: text/plain\r\n\r\ninner two\r\n--YY--\r\n";
        let section = |s: Section<'static>| text(parsed.section(Some(&s)));
        assert_eq!(
            section(Section::Part(part(&[1]))),
            Some(format!("{inner}{body}")),
            "BODY[1] is the attached message"
        );
        assert_eq!(
            section(Section::Header(Some(part(&[1])))).as_deref(),
            Some(inner)
        );
        assert_eq!(
            section(Section::Text(Some(part(&[1])))).as_deref(),
            Some(body)
        );
        assert_eq!(
            section(Section::Mime(part(&[1]))).as_deref(),
            Some("From: a@b\r\nContent-Type: message/rfc822\r\n\r\n")
        );
        assert_eq!(
            section(Section::Part(part(&[1, 1]))).as_deref(),
            Some("inner one")
        );
        assert_eq!(
            section(Section::Part(part(&[1, 2]))).as_deref(),
            Some("inner two")
        );
        assert_eq!(
            section(Section::Mime(part(&[1, 2]))).as_deref(),
            Some("Content-Type: text/plain\r\n\r\n")
        );
        assert_eq!(section(Section::Part(part(&[1, 3]))), None);
        assert_eq!(section(Section::Part(part(&[2]))), None);
        // A text body has no part 1.1.
        let plain = Parsed::new(b"Subject: x\r\n\r\nbody\r\n");
        assert_eq!(
            text(plain.section(Some(&Section::Part(part(&[1, 1]))))),
            None
        );
    }

    #[test]
    fn single_part_one_is_the_body() {
        let parsed = Parsed::new(b"Subject: x\r\n\r\nbody\r\n");
        assert_eq!(
            text(parsed.section(Some(&Section::Part(part(&[1]))))).as_deref(),
            Some("body\r\n")
        );
        let parsed = Parsed::new(b"");
        assert_eq!(text(parsed.section(None)).as_deref(), Some(""));
        assert_eq!(text(parsed.section(Some(&Section::Part(part(&[1]))))), None);
    }

    #[test]
    fn header_fields_keep_continuations() {
        let header = b"Subject: one\r\n two\r\nFrom: a@b\r\nX-Other: z\r\n\r\n";
        assert_eq!(
            pick_fields(header, &[b"subject".as_slice()], false),
            b"Subject: one\r\n two\r\n\r\n"
        );
        assert_eq!(
            pick_fields(
                header,
                &[b"subject".as_slice(), b"x-other".as_slice()],
                true
            ),
            b"From: a@b\r\n\r\n"
        );
        assert_eq!(split_at_header_end(b"A: b\n\nbody").1, b"body");
        assert_eq!(split_at_header_end(b"A: b\r\n").1, b"");
    }
}
