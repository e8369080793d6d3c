//! IMAP replies: owned imap-types values, encoded for the wire by imap-codec, and the helpers
//! that build the strings and codes inside them from untrusted bytes without ever panicking.

use std::borrow::Cow;

use imap_codec::encode::Encoder;
use imap_codec::{GreetingCodec, ResponseCodec};
use imap_types::IntoStatic;
use imap_types::core::{IString, Literal, NString, Quoted, Tag, Text};
use imap_types::response::{
    Code, CodeOther, CommandContinuationRequest, Data, Greeting, GreetingKind, Response, Status,
    StatusBody, StatusKind, Tagged,
};

/// One thing to write to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Greeting(Greeting<'static>),
    Response(Response<'static>),
}

impl Reply {
    /// The reply as it goes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }

    /// Appends the wire form to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let encoded = match self {
            Reply::Greeting(greeting) => GreetingCodec::default().encode(greeting),
            Reply::Response(response) => ResponseCodec::default().encode(response),
        };
        for fragment in encoded {
            match fragment {
                imap_codec::encode::Fragment::Line { data }
                | imap_codec::encode::Fragment::Literal { data, .. } => {
                    out.extend_from_slice(&data)
                }
            }
        }
        if self.lists_capabilities() {
            respell_imap4rev1(out.get_mut(start..).unwrap_or_default());
        }
    }

    /// True for a reply that carries a capability list, as data or as a response code.
    fn lists_capabilities(&self) -> bool {
        let code = match self {
            Reply::Greeting(greeting) => greeting.code.as_ref(),
            Reply::Response(Response::Data(data)) => {
                return matches!(data, Data::Capability(_));
            }
            Reply::Response(Response::Status(status)) => match status {
                Status::Untagged(body) | Status::Tagged(Tagged { body, .. }) => body.code.as_ref(),
                Status::Bye(bye) => bye.code.as_ref(),
            },
            Reply::Response(_) => None,
        };
        matches!(code, Some(Code::Capability(_)))
    }

    pub fn data(data: Data<'static>) -> Reply {
        Reply::Response(Response::Data(data))
    }

    /// `tag OK|NO|BAD [code] text`.
    pub fn tagged(
        tag: Tag<'static>,
        kind: StatusKind,
        code: Option<Code<'static>>,
        text: impl Into<String>,
    ) -> Reply {
        Reply::Response(Response::Status(Status::Tagged(Tagged {
            tag,
            body: StatusBody {
                kind,
                code,
                text: text_of(text.into()),
            },
        })))
    }

    /// `* OK|NO|BAD [code] text`.
    pub fn untagged(
        kind: StatusKind,
        code: Option<Code<'static>>,
        text: impl Into<String>,
    ) -> Reply {
        Reply::Response(Response::Status(Status::Untagged(StatusBody {
            kind,
            code,
            text: text_of(text.into()),
        })))
    }

    /// `* BYE text`.
    pub fn bye(code: Option<Code<'static>>, text: impl Into<String>) -> Reply {
        Reply::Response(Response::Status(Status::Bye(imap_types::response::Bye {
            code,
            text: text_of(text.into()),
        })))
    }

    /// `* BYE [UNAVAILABLE]`: the server is stopping.
    pub fn shutting_down() -> Reply {
        Reply::bye(Some(code("UNAVAILABLE")), "Server shutting down")
    }

    /// `* BYE [UNAVAILABLE] why`: refused before the session starts, by the server's
    /// connection limits.
    pub fn too_busy(why: &str) -> Reply {
        Reply::bye(Some(code("UNAVAILABLE")), why)
    }

    /// `+ text`.
    pub fn continuation(text: &str) -> Reply {
        let request = CommandContinuationRequest::basic(None, text.to_owned())
            .unwrap_or_else(|_| CommandContinuationRequest::base64(Vec::new()));
        Reply::Response(Response::CommandContinuationRequest(request))
    }

    /// `+ <base64>`: a SASL challenge, already base64 (possibly empty).
    pub fn challenge(base64: &str) -> Reply {
        // The codec base64-encodes the bytes it is given; hand it the decoded challenge.
        let bytes = base64_decode(base64);
        Reply::Response(Response::CommandContinuationRequest(
            CommandContinuationRequest::base64(bytes),
        ))
    }

    pub fn greeting(code: Option<Code<'static>>, text: impl Into<String>) -> Reply {
        Reply::Greeting(Greeting {
            kind: GreetingKind::Ok,
            code,
            text: text_of(text.into()),
        })
    }

    /// True for a tagged `OK`.
    pub fn is_tagged_ok(&self) -> bool {
        matches!(
            self,
            Reply::Response(Response::Status(Status::Tagged(Tagged {
                body: StatusBody {
                    kind: StatusKind::Ok,
                    ..
                },
                ..
            })))
        )
    }
}

/// RFC 3501 spells the capability `IMAP4rev1`; imap-types prints every capability in upper
/// case, and clients and scanners that compare it case-sensitively do not recognise the
/// server. The list always starts with it (`Session::capabilities`), so it is the word right
/// after the first `CAPABILITY ` (the code or data comes before any text); a tag cannot hold
/// a space, so a tag spelled `CAPABILITY` is not followed by it.
fn respell_imap4rev1(wire: &mut [u8]) {
    const UPPER: &[u8] = b"CAPABILITY IMAP4REV1";
    let Some(at) = wire.windows(UPPER.len()).position(|w| w == UPPER) else {
        return;
    };
    let end = at + UPPER.len();
    if !matches!(wire.get(end), Some(b' ' | b']' | b'\r')) {
        return;
    }
    if let Some(word) = wire.get_mut(end - "IMAP4REV1".len()..end) {
        word.copy_from_slice(b"IMAP4rev1");
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_default()
}

/// Human-readable text: never empty, never a line break (some of it echoes client input).
pub fn text_of(text: String) -> Text<'static> {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    let clean = if clean.trim().is_empty() {
        "done".to_owned()
    } else {
        clean
    };
    Text::try_from(clean).unwrap_or_else(|_| Text::unvalidated("done"))
}

/// A response code the codec has no variant for (RFC 5530 and friends): an atom we spell.
pub fn code(name: &'static str) -> Code<'static> {
    Code::Other(CodeOther::unvalidated(name.as_bytes()))
}

/// An IMAP string of arbitrary bytes: quoted when it can be, else a literal. NUL, which no IMAP
/// string may hold, becomes 0x80 (as Dovecot does).
pub fn istring(bytes: impl Into<Vec<u8>>) -> IString<'static> {
    let mut bytes: Vec<u8> = bytes.into();
    if let Ok(quoted) = Quoted::try_from(bytes.as_slice()) {
        return IString::Quoted(quoted.into_static());
    }
    for b in bytes.iter_mut() {
        if *b == 0 {
            *b = 0x80;
        }
    }
    match Literal::try_from(bytes) {
        Ok(literal) => IString::Literal(literal),
        Err(_) => IString::Quoted(Quoted::unvalidated(Cow::Borrowed(""))),
    }
}

pub fn nstring(bytes: Option<impl Into<Vec<u8>>>) -> NString<'static> {
    NString(bytes.map(istring))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(reply: Reply) -> String {
        String::from_utf8(reply.to_bytes()).unwrap()
    }

    #[test]
    fn wire_forms() {
        let tag = Tag::try_from("a1").unwrap();
        assert_eq!(
            wire(Reply::tagged(
                tag,
                StatusKind::No,
                Some(code("CONTACTADMIN")),
                "locked\r\n* OK"
            )),
            "a1 NO [CONTACTADMIN] locked??* OK\r\n"
        );
        assert_eq!(wire(Reply::continuation("Ready")), "+ Ready\r\n");
        assert_eq!(wire(Reply::challenge("")), "+ \r\n");
        assert_eq!(wire(Reply::challenge("VXNlcm5hbWU6")), "+ VXNlcm5hbWU6\r\n");
        assert_eq!(wire(Reply::bye(None, "")), "* BYE done\r\n");
    }

    #[test]
    fn imap4rev1_spelled_as_in_rfc_3501() {
        use imap_types::core::Vec1;
        use imap_types::response::Capability;
        let caps = || Vec1::try_from(vec![Capability::Imap4Rev1, Capability::Idle]).unwrap();
        assert_eq!(
            wire(Reply::data(Data::Capability(caps()))),
            "* CAPABILITY IMAP4rev1 IDLE\r\n"
        );
        assert_eq!(
            wire(Reply::greeting(
                Some(Code::Capability(caps())),
                "CAPABILITY IMAP4REV1 ready"
            )),
            "* OK [CAPABILITY IMAP4rev1 IDLE] CAPABILITY IMAP4REV1 ready\r\n"
        );
        let tag = Tag::try_from("CAPABILITY").unwrap();
        assert_eq!(
            wire(Reply::tagged(
                tag,
                StatusKind::Ok,
                Some(Code::Capability(Vec1::from(Capability::Imap4Rev1))),
                "done"
            )),
            "CAPABILITY OK [CAPABILITY IMAP4rev1] done\r\n"
        );
        // Only replies that list capabilities: text is left as it is.
        assert_eq!(
            wire(Reply::untagged(
                StatusKind::Ok,
                None,
                "CAPABILITY IMAP4REV1 "
            )),
            "* OK CAPABILITY IMAP4REV1 \r\n"
        );
    }

    #[test]
    fn strings_of_any_bytes() {
        assert_eq!(
            istring(b"plain".to_vec()),
            IString::try_from("plain").unwrap()
        );
        assert!(matches!(
            istring(b"two\r\nlines".to_vec()),
            IString::Literal(_)
        ));
        assert!(matches!(
            istring("日本".as_bytes().to_vec()),
            IString::Literal(_)
        ));
        match istring(b"nul\0byte".to_vec()) {
            IString::Literal(l) => assert_eq!(l.data(), b"nul\x80byte"),
            other => panic!("{other:?}"),
        }
    }
}
