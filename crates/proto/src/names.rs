//! Names that cannot hold a bad value: [`DomainName`] (R10), [`MailboxName`] (R11),
//! [`Address`], and [`Secret`] for passwords (its `Debug` prints nothing).

use std::fmt;

/// Why a name was refused. `rule` is the rule of docs/spec.md it broke, `reason` says how, in
/// words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{rule}: {reason}")]
pub struct NameError {
    pub rule: &'static str,
    pub reason: String,
}

fn refuse(rule: &'static str, reason: String) -> NameError {
    NameError { rule, reason }
}

/// Longest whole domain name (RFC 1035 presentation form without the final dot).
pub const DOMAIN_MAX: usize = 253;
/// Longest label of a domain name.
pub const LABEL_MAX: usize = 63;

/// A mail domain: a fully qualified name stored lower-case, as its A-label when it was Unicode.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainName(String);

impl DomainName {
    pub fn parse(input: &str) -> Result<Self, NameError> {
        r10_domain_name(input)
    }

    /// The door for values read back from the store, which were checked when written.
    pub fn unvalidated(stored: String) -> Self {
        DomainName(stored)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// R10: at least two labels; each label 1–63 of `a-z 0-9 -`, not starting or ending with
/// `-`; the whole name at most 253; stored lower-case; a Unicode name becomes its A-label.
pub fn r10_domain_name(input: &str) -> Result<DomainName, NameError> {
    let shown = input;
    if shown.is_empty() {
        return Err(refuse("R10", "the domain name is empty".into()));
    }
    let ascii = if shown.is_ascii() {
        shown.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(shown).map_err(|_| {
            refuse(
                "R10",
                format!("the domain name {shown:?} is not a valid internationalised name"),
            )
        })?
    };
    if ascii.len() > DOMAIN_MAX {
        return Err(refuse(
            "R10",
            format!(
                "the domain name is {} characters long; at most {DOMAIN_MAX} are allowed",
                ascii.len()
            ),
        ));
    }
    let labels: Vec<&str> = ascii.split('.').collect();
    if labels.len() < 2 {
        return Err(refuse(
            "R10",
            format!("the domain name {shown:?} needs at least two labels (like example.jp)"),
        ));
    }
    for label in &labels {
        check_label(shown, label)?;
    }
    // RFC 3696 §2: a top-level domain is never all digits, so `127.0.0.1` is an address
    // written as a name, which mail must reach as a literal (`[127.0.0.1]`), never as a domain.
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(refuse(
            "R10",
            format!(
                "{shown:?} is an IP address, not a domain name (the last label cannot be all digits)"
            ),
        ));
    }
    if !shown.is_ascii() {
        check_scripts(shown, &ascii)?;
    }
    Ok(DomainName(ascii))
}

/// UTS #39 "highly restrictive": each label of an internationalised name keeps to one script,
/// or to one of the mixes a language writes (Japanese, Chinese, Korean with Latin), so a name
/// that borrows a look-alike letter from another script (a Cyrillic `а` in `exаmple`) cannot
/// pass for the domain it imitates.
fn check_scripts(shown: &str, ascii: &str) -> Result<(), NameError> {
    use unicode_security::{RestrictionLevel, RestrictionLevelDetection};
    let (unicode, _) = idna::domain_to_unicode(ascii);
    for label in unicode.split('.').filter(|l| !l.is_ascii()) {
        if !label.check_restriction_level(RestrictionLevel::HighlyRestrictive) {
            return Err(refuse(
                "R10",
                format!(
                    "the label {label:?} of {shown:?} mixes scripts in a way no language writes (a look-alike of another name); write each label in one script"
                ),
            ));
        }
    }
    Ok(())
}

fn check_label(shown: &str, label: &str) -> Result<(), NameError> {
    if label.is_empty() {
        return Err(refuse(
            "R10",
            format!(
                "the domain name {shown:?} has an empty label (two dots in a row, or a dot at an end)"
            ),
        ));
    }
    if label.len() > LABEL_MAX {
        return Err(refuse(
            "R10",
            format!(
                "the label {label:?} is {} characters long; a label has at most {LABEL_MAX}",
                label.len()
            ),
        ));
    }
    if let Some(bad) = label
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(refuse(
            "R10",
            format!("the domain name {shown:?} contains {bad:?}; labels hold only a-z, 0-9 and -"),
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(refuse(
            "R10",
            format!("the label {label:?} starts or ends with -"),
        ));
    }
    Ok(())
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// A mailbox name (the part before `@`), stored lower-case: names compare case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MailboxName(String);

impl MailboxName {
    pub fn parse(input: &str, max_len: usize) -> Result<Self, NameError> {
        r11_mailbox_name(input, max_len)
    }

    /// The door for values read back from the store, which were checked when written.
    pub fn unvalidated(stored: String) -> Self {
        MailboxName(stored)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// R11: letters, digits, `-` and `.`; not starting or ending with `.`; no two `.` in a row;
/// length 1..=`max_len` (20 under `local`, 64 under `ad` and `passwd-file`).
pub fn r11_mailbox_name(input: &str, max_len: usize) -> Result<MailboxName, NameError> {
    if input.is_empty() {
        return Err(refuse("R11", "the mailbox name is empty".into()));
    }
    if let Some(bad) = input
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.'))
    {
        return Err(refuse(
            "R11",
            format!(
                "the mailbox name {input:?} contains {bad:?}; only letters, digits, - and . are allowed"
            ),
        ));
    }
    if input.len() > max_len {
        return Err(refuse(
            "R11",
            format!(
                "the mailbox name {input:?} is {} characters long; at most {max_len} are allowed with this authentication method",
                input.len()
            ),
        ));
    }
    if input.starts_with('.') || input.ends_with('.') {
        return Err(refuse(
            "R11",
            format!("the mailbox name {input:?} starts or ends with ."),
        ));
    }
    // A name such as `-rf` would read as an option to every tool that is handed the mailbox's
    // directory or address on a command line.
    if input.starts_with('-') {
        return Err(refuse(
            "R11",
            format!("the mailbox name {input:?} starts with -"),
        ));
    }
    if input.contains("..") {
        return Err(refuse(
            "R11",
            format!("the mailbox name {input:?} has two . in a row"),
        ));
    }
    Ok(MailboxName(input.to_ascii_lowercase()))
}

impl fmt::Display for MailboxName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// `name@domain`, both parts validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    pub name: MailboxName,
    pub domain: DomainName,
}

impl Address {
    /// Splits at the last `@` and validates both halves (R11 with `max_len`, then R10).
    pub fn parse(input: &str, max_len: usize) -> Result<Self, NameError> {
        let Some((name, domain)) = input.rsplit_once('@') else {
            return Err(refuse(
                "R11",
                format!("{input:?} is not an address of the form name@domain"),
            ));
        };
        Ok(Address {
            name: MailboxName::parse(name, max_len)?,
            domain: DomainName::parse(domain)?,
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&format!("{}@{}", self.name, self.domain))
    }
}

/// A password or other secret. Its `Debug` and `Display` never show the value, so it cannot
/// reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The only way to read the value; grep for it to audit where passwords go.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn domain_edges() {
        assert_eq!(
            DomainName::parse("Example.JP").unwrap().as_str(),
            "example.jp"
        );
        let label63 = "a".repeat(63);
        assert!(DomainName::parse(&format!("{label63}.jp")).is_ok());
        assert!(DomainName::parse(&format!("a{label63}.jp")).is_err());
        // 253 exactly: four labels of 63 with dots = 255, so build it up.
        let name253 = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61)
        );
        assert_eq!(name253.len(), 253);
        assert!(DomainName::parse(&name253).is_ok());
        let name254 = format!("{name253}x");
        assert!(DomainName::parse(&name254).is_err());
        assert_eq!(
            DomainName::parse("bücher.example").unwrap().as_str(),
            "xn--bcher-kva.example"
        );
        for bad in [
            "jp", "-a.jp", "a-.jp", "a..jp", "a_b.jp", ".a.jp", "a.jp.", "",
        ] {
            let err = DomainName::parse(bad).unwrap_err();
            assert_eq!(err.rule, "R10", "{bad}");
        }
    }

    #[test]
    fn address_literals_and_look_alikes_are_not_domains() {
        for bad in ["127.0.0.1", "10.1.2.3", "example.123", "::1", "[127.0.0.1]"] {
            assert_eq!(DomainName::parse(bad).unwrap_err().rule, "R10", "{bad}");
        }
        // A digit-only label inside the name is fine; only the top-level one is refused.
        assert!(DomainName::parse("123.example.jp").is_ok());
        assert!(DomainName::parse("mail.3com.jp").is_ok());
        // One script per label, or the mixes a language writes (Japanese, Chinese with Latin).
        assert!(DomainName::parse("日本語.jp").is_ok());
        assert!(DomainName::parse("ひらがなカタカナ漢字.jp").is_ok());
        assert!(DomainName::parse("пример.рф").is_ok());
        assert!(DomainName::parse("bücher.example").is_ok());
        // A Cyrillic "а" in a Latin word, a Greek "ο" in a Latin word: refused.
        for bad in [
            "ex\u{0430}mple.jp",
            "g\u{03bf}\u{03bf}gle.com",
            "paypa\u{04cf}.com",
        ] {
            let err = DomainName::parse(bad).unwrap_err();
            assert_eq!(err.rule, "R10", "{bad}");
            assert!(err.reason.contains("scripts"), "{bad}: {}", err.reason);
        }
    }

    #[test]
    fn mailbox_names_cannot_look_like_options() {
        for bad in ["-rf", "-", "--help"] {
            assert_eq!(
                MailboxName::parse(bad, 64).unwrap_err().rule,
                "R11",
                "{bad}"
            );
        }
        assert!(MailboxName::parse("a-b", 64).is_ok());
        assert!(MailboxName::parse("ab-", 64).is_ok());
    }

    #[test]
    fn mailbox_edges() {
        assert!(MailboxName::parse(&"a".repeat(20), 20).is_ok());
        assert!(MailboxName::parse(&"a".repeat(21), 20).is_err());
        assert!(MailboxName::parse(&"a".repeat(64), 64).is_ok());
        assert!(MailboxName::parse(&"a".repeat(65), 64).is_err());
        assert_eq!(
            MailboxName::parse("User.One", 20).unwrap().as_str(),
            "user.one"
        );
        for bad in ["", ".a", "a.", "a..b", "a b", "a@b", "a_b", "日本"] {
            assert_eq!(
                MailboxName::parse(bad, 20).unwrap_err().rule,
                "R11",
                "{bad}"
            );
        }
    }

    #[test]
    fn secret_debug_hides_value() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(…)");
    }

    fn label() -> impl Strategy<Value = String> {
        "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?"
    }

    proptest! {
        #[test]
        fn valid_domains_round_trip(
            labels in proptest::collection::vec(label(), 1..4),
            tld in "[a-z]([a-z0-9-]{0,8}[a-z0-9])?",
        ) {
            let name = format!("{}.{tld}", labels.join("."));
            let parsed = DomainName::parse(&name).unwrap();
            prop_assert_eq!(parsed.as_str(), name.as_str());
            prop_assert_eq!(DomainName::parse(parsed.as_str()).unwrap(), parsed);
        }

        #[test]
        fn valid_mailboxes_round_trip(name in "[A-Za-z0-9][A-Za-z0-9-]{0,4}(\\.[A-Za-z0-9-]{1,5}){0,2}") {
            let parsed = MailboxName::parse(&name, 20).unwrap();
            prop_assert_eq!(parsed.as_str(), name.to_ascii_lowercase());
            prop_assert_eq!(MailboxName::parse(parsed.as_str(), 20).unwrap(), parsed);
        }

        #[test]
        fn names_with_a_bad_character_are_refused_under_r11(
            prefix in "[a-z]{0,5}", bad in "[^A-Za-z0-9.-]", suffix in "[a-z]{0,5}"
        ) {
            let name = format!("{prefix}{bad}{suffix}");
            let err = MailboxName::parse(&name, 64).unwrap_err();
            prop_assert_eq!(err.rule, "R11");
        }

        #[test]
        fn domains_with_a_bad_label_are_refused_under_r10(
            good in label(), bad in "[a-z]{0,3}[_ !@#$%^&*()+=]{1}[a-z]{0,3}"
        ) {
            let err = DomainName::parse(&format!("{bad}.{good}")).unwrap_err();
            prop_assert_eq!(err.rule, "R10");
        }

        #[test]
        fn any_input_never_panics(s in ".{0,300}") {
            let _ = DomainName::parse(&s);
            let _ = MailboxName::parse(&s, 64);
            let _ = Address::parse(&s, 64);
        }
    }
}
