//! Envelope addresses as the client wrote them, and the relay rule R16.
//!
//! `smtp-proto` validates the command, but it normalises paths (it drops source routes and
//! quotes, and turns `<postmaster>` into the empty path), and R16 forbids rewriting. So the
//! path text is taken verbatim from the line ([`raw_path`]) and classified here.

use super::session::RecipientLookup;

/// A recipient the core may ask the driver about: it names no route of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptAddress {
    /// `<postmaster>` with no domain (RFC 5321 §4.5.1, R12); the driver resolves it.
    Postmaster,
    /// `local@domain`; the domain is a host name (not an address literal), the local part
    /// holds no `%`, `!` or quoted `@`. Both kept exactly as written (quotes included).
    Mailbox { local_part: String, domain: String },
}

impl RcptAddress {
    /// The address as the client wrote it.
    pub fn as_written(&self) -> String {
        match self {
            RcptAddress::Postmaster => "postmaster".into(),
            RcptAddress::Mailbox { local_part, domain } => format!("{local_part}@{domain}"),
        }
    }
}

/// How a forward-path tries to name a route (R16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteForm {
    /// `@a,@b:user@c`
    SourceRoute,
    /// `user%final@relay`
    PercentHack,
    /// `host!user`, `host!user@relay`
    BangPath,
    /// `"user@final"@relay`, a quoted local part holding `@`, `%` or `!`
    QuotedRoute,
    /// `user@[192.0.2.1]`
    AddressLiteral,
    /// `user@final@relay`: more than one unquoted `@`
    ExtraAt,
}

/// A forward-path, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardPath {
    Checkable(RcptAddress),
    /// R16: never rewritten, never looked up, always treated as outside the local domains.
    Routed {
        raw: String,
        form: RouteForm,
    },
    /// Not an address at all (empty, no domain, stray characters).
    Invalid,
}

/// The text between `<` and the matching `>` of a `MAIL FROM:` or `RCPT TO:` line, quotes
/// respected, or `None` when there is no such pair.
pub fn raw_path(line: &str) -> Option<&str> {
    let start = line.find('<')? + 1;
    let rest = line.get(start..)?;
    let mut in_quote = false;
    let mut escaped = false;
    for (i, c) in rest.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quote => escaped = true,
            '"' => in_quote = !in_quote,
            '>' if !in_quote => return rest.get(..i),
            _ => {}
        }
    }
    None
}

/// R16: classifies a forward-path without changing it.
pub fn classify(raw: &str) -> ForwardPath {
    let routed = |form| ForwardPath::Routed {
        raw: raw.to_owned(),
        form,
    };
    if raw.starts_with('@') {
        return routed(RouteForm::SourceRoute);
    }
    let (local_part, rest) = match split_local_part(raw) {
        Some(split) => split,
        None => return ForwardPath::Invalid,
    };
    let quoted = local_part.starts_with('"');
    if quoted && local_part.contains(['@', '%', '!']) {
        return routed(RouteForm::QuotedRoute);
    }
    if local_part.contains('!') {
        return routed(RouteForm::BangPath);
    }
    if local_part.contains('%') {
        return routed(RouteForm::PercentHack);
    }
    let Some(domain) = rest.strip_prefix('@') else {
        return if rest.is_empty() && local_part.eq_ignore_ascii_case("postmaster") {
            ForwardPath::Checkable(RcptAddress::Postmaster)
        } else {
            ForwardPath::Invalid
        };
    };
    if domain.contains('@') {
        return routed(RouteForm::ExtraAt);
    }
    if domain.starts_with('[') {
        return routed(RouteForm::AddressLiteral);
    }
    if domain.contains(['!', '%', ':']) {
        return routed(RouteForm::BangPath);
    }
    if local_part.is_empty() || !(quoted || is_dot_atom(local_part)) || !is_host_name(domain) {
        return ForwardPath::Invalid;
    }
    ForwardPath::Checkable(RcptAddress::Mailbox {
        local_part: local_part.to_owned(),
        domain: domain.to_owned(),
    })
}

/// Splits at the end of the local part: after a closing quote, or at the first `@`.
fn split_local_part(raw: &str) -> Option<(&str, &str)> {
    if let Some(inner) = raw.strip_prefix('"') {
        let mut escaped = false;
        for (i, c) in inner.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                // `i + 2` spans the opening and closing quotes.
                '"' => return raw.split_at_checked(i + 2),
                _ => {}
            }
        }
        return None;
    }
    Some(raw.split_at(raw.find('@').unwrap_or(raw.len())))
}

/// RFC 5321 `Dot-string`: atext (any script, for SMTPUTF8) separated by single dots.
fn is_dot_atom(local_part: &str) -> bool {
    local_part.split('.').all(|atom| {
        !atom.is_empty()
            && atom
                .chars()
                .all(|c| c.is_alphanumeric() || "#$&'*+-/=?^_`{|}~".contains(c))
    })
}

/// Letters (any script, for SMTPUTF8), digits, `-` and `.`, not empty, no empty label.
fn is_host_name(domain: &str) -> bool {
    !domain.is_empty()
        && domain.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
}

/// What the core does with one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptDecision {
    /// Deliver to this local mailbox (the driver's opaque key).
    AcceptLocal { mailbox: String },
    /// Accept for relaying: the client may relay.
    AcceptRelay,
    /// R17: a local domain without such a mailbox.
    RefuseUnknown,
    /// R28: the address's aliases loop.
    RefuseLoop,
    /// R16: `550 5.7.1 Unable to relay`.
    RefuseRelay,
    /// R15: the declared SIZE does not fit the quota.
    RefuseQuota,
    /// The directory could not be asked.
    TempFail,
}

/// Decides on a recipient from the driver's lookup (a [`ForwardPath::Routed`] path counts as
/// [`RecipientLookup::NotLocal`] without a lookup): a local one by R17 (and R15); one outside
/// the local domains is accepted only when `relay_permitted` (R16: the peer is in the allow
/// list, or the session authenticated).
pub fn decide_recipient(
    lookup: &RecipientLookup,
    relay_permitted: bool,
    declared_size: Option<u64>,
) -> RcptDecision {
    match lookup {
        RecipientLookup::Local {
            mailbox,
            quota_left,
        } => r17_local_recipient(Some((mailbox, *quota_left)), declared_size),
        RecipientLookup::LocalUnknown => r17_local_recipient(None, declared_size),
        RecipientLookup::AliasLoop => RcptDecision::RefuseLoop,
        RecipientLookup::NotLocal if relay_permitted => RcptDecision::AcceptRelay,
        RecipientLookup::NotLocal => RcptDecision::RefuseRelay,
        RecipientLookup::TempFail => RcptDecision::TempFail,
    }
}

/// R17: a recipient in a local domain is accepted only when the lookup found its mailbox
/// (`found`: the driver's key and what is left of its quota). One with no mailbox, alias or
/// list is refused at RCPT (`550 5.1.1`), never accepted and then dropped as Windows Server 2003
/// did. A mailbox that is found may still be too full (R15).
fn r17_local_recipient(
    found: Option<(&String, Option<u64>)>,
    declared_size: Option<u64>,
) -> RcptDecision {
    let Some((mailbox, quota_left)) = found else {
        return RcptDecision::RefuseUnknown;
    };
    match (declared_size, quota_left) {
        // R15: a full mailbox takes nothing, whatever the size; refusing it here keeps the
        // other recipients of the message (only the full ones are refused).
        (_, Some(0)) => RcptDecision::RefuseQuota,
        (Some(size), Some(left)) if size > left => RcptDecision::RefuseQuota,
        _ => RcptDecision::AcceptLocal {
            mailbox: mailbox.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn form(raw: &str) -> Option<RouteForm> {
        match classify(raw) {
            ForwardPath::Routed { raw: kept, form } => {
                assert_eq!(kept, raw, "never rewritten");
                Some(form)
            }
            _ => None,
        }
    }

    #[test]
    fn every_smuggling_form_is_routed() {
        use RouteForm::*;
        let cases = [
            ("to%dom@[192.0.2.1]", PercentHack),
            ("to%dom@srv.example.jp", PercentHack),
            ("\"to@dom\"", QuotedRoute),
            ("\"to%dom\"", QuotedRoute),
            ("\"to!dom\"@example.jp", QuotedRoute),
            ("\"to@dom\"@[192.0.2.1]", QuotedRoute),
            ("to@dom@[192.0.2.1]", ExtraAt),
            ("to@dom.example@srv.example.jp", ExtraAt),
            ("@[192.0.2.1]:to@dom", SourceRoute),
            ("@srv.example.jp:to@dom", SourceRoute),
            ("@a,@b:to@dom", SourceRoute),
            ("dom!to", BangPath),
            ("dom!to@[192.0.2.1]", BangPath),
            ("dom!to@srv.example.jp", BangPath),
            ("to@[192.0.2.1]", AddressLiteral),
            ("to@[IPv6:2001:db8::1]", AddressLiteral),
        ];
        for (raw, expected) in cases {
            assert_eq!(form(raw), Some(expected), "{raw}");
        }
    }

    #[test]
    fn plain_addresses_and_postmaster() {
        assert_eq!(
            classify("User@Example.JP"),
            ForwardPath::Checkable(RcptAddress::Mailbox {
                local_part: "User".into(),
                domain: "Example.JP".into()
            })
        );
        assert_eq!(
            classify("PostMaster"),
            ForwardPath::Checkable(RcptAddress::Postmaster)
        );
        assert_eq!(
            classify("postmaster@example.jp"),
            ForwardPath::Checkable(RcptAddress::Mailbox {
                local_part: "postmaster".into(),
                domain: "example.jp".into()
            })
        );
        assert!(matches!(
            classify("\"john doe\"@example.jp"),
            ForwardPath::Checkable(RcptAddress::Mailbox { .. })
        ));
        for bad in [
            "",
            "user",
            "@",
            "user@",
            "@example.jp",
            "us er@x.jp",
            "u@x..jp",
            "\"open@x",
        ] {
            let class = classify(bad);
            assert!(
                matches!(class, ForwardPath::Invalid | ForwardPath::Routed { .. }),
                "{bad:?}: {class:?}"
            );
        }
    }

    #[test]
    fn raw_path_keeps_quotes() {
        assert_eq!(
            raw_path("TO:<\"a>b\"@x.jp> NOTIFY=NEVER"),
            Some("\"a>b\"@x.jp")
        );
        assert_eq!(raw_path("TO:<@a:b@c>"), Some("@a:b@c"));
        assert_eq!(raw_path("TO:<postmaster>"), Some("postmaster"));
        assert_eq!(raw_path("TO:<>"), Some(""));
        assert_eq!(raw_path("TO:<a@b"), None);
        assert_eq!(raw_path("TO:a@b"), None);
    }

    fn lookup() -> impl Strategy<Value = RecipientLookup> {
        prop_oneof![
            (any::<Option<u64>>()).prop_map(|quota_left| RecipientLookup::Local {
                mailbox: "m".into(),
                quota_left
            }),
            Just(RecipientLookup::LocalUnknown),
            Just(RecipientLookup::NotLocal),
            Just(RecipientLookup::TempFail),
        ]
    }

    proptest! {
        /// R16: nothing outside the local domains is accepted unless relaying is permitted;
        /// R15: a local recipient is refused exactly when its mailbox is full or the declared
        /// size exceeds what is left.
        #[test]
        fn relay_needs_permission(lookup in lookup(), permitted: bool, size: Option<u64>) {
            let decision = decide_recipient(&lookup, permitted, size);
            if decision == RcptDecision::AcceptRelay {
                prop_assert!(permitted);
                prop_assert_eq!(&lookup, &RecipientLookup::NotLocal);
            }
            if lookup == RecipientLookup::NotLocal {
                prop_assert_eq!(decision == RcptDecision::RefuseRelay, !permitted);
            }
            if let RecipientLookup::Local { quota_left, .. } = &lookup {
                let over = matches!((size, quota_left), (_, Some(0)))
                    || matches!((size, quota_left), (Some(s), Some(q)) if s > *q);
                prop_assert_eq!(decision == RcptDecision::RefuseQuota, over);
            }
        }

        /// Any path holding a routing character outside a plain `local@host` is never
        /// checkable, and classification never panics.
        #[test]
        fn routing_characters_are_never_checkable(raw in "[a-z\"@%!:\\[\\].,]{0,16}") {
            if let ForwardPath::Checkable(RcptAddress::Mailbox { local_part, domain }) = classify(&raw) {
                prop_assert!(!local_part.contains(['%', '!', '@']));
                prop_assert!(!domain.contains(['%', '!', '@', '[', ':']));
            }
        }
    }
}
