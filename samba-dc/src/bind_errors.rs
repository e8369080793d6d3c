//! What Samba answers to a simple bind that it refuses, recorded from Samba 4.17 (Debian
//! bookworm's `samba-ad-dc`) by this crate's tests. These are the facts the server maps to the
//! R27 reasons.
//!
//! Every refused credential is LDAP result 49 (`invalidCredentials`) with the same text as
//! Windows, only the `data` sub-code differing:
//!
//! ```text
//! 80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 52e, v1db1
//! ```
//!
//! | situation | result | `data` | constant |
//! |---|---|---|---|
//! | wrong password, and also an unknown user | 49 | `52e` | [`WRONG_PASSWORD`] |
//! | account disabled (`userAccountControl` bit 2) | 49 | `533` | [`ACCOUNT_DISABLED`] |
//! | must change at next logon (`pwdLastSet` = 0) | 49 | `773` | [`MUST_CHANGE_PASSWORD`] |
//! | password older than `maxPwdAge` | 49 | `532` | [`PASSWORD_EXPIRED`] |
//! | account expired (`accountExpires` in the past) | 49 | `701` | [`ACCOUNT_EXPIRED`] |
//! | locked out (`badPwdCount` reached `lockoutThreshold`) | 49 | `775` | [`ACCOUNT_LOCKED_OUT`] |
//!
//! Samba checks the password first: a disabled, expired or locked-out account given a wrong
//! password answers `52e`, except that a locked-out account answers `775` whatever the
//! password. An unknown user is indistinguishable from a wrong password (`52e`).
//!
//! A simple bind over a connection without TLS is refused before the credentials are looked
//! at, with result 8 (`strongerAuthRequired`) and the text
//! `BindSimple: Transport encryption required.` ([`TRANSPORT_ENCRYPTION_REQUIRED`]).

/// Wrong password, or no such user.
pub const WRONG_PASSWORD: u32 = 0x52e;
/// The account is disabled.
pub const ACCOUNT_DISABLED: u32 = 0x533;
/// The password has expired (older than the domain's or the PSO's maximum age).
pub const PASSWORD_EXPIRED: u32 = 0x532;
/// The password must be changed before the next logon.
pub const MUST_CHANGE_PASSWORD: u32 = 0x773;
/// The account itself has expired.
pub const ACCOUNT_EXPIRED: u32 = 0x701;
/// The account is locked out.
pub const ACCOUNT_LOCKED_OUT: u32 = 0x775;

/// LDAP result code of every refused credential.
pub const INVALID_CREDENTIALS: u32 = 49;
/// LDAP result code of a simple bind without TLS.
pub const STRONGER_AUTH_REQUIRED: u32 = 8;
/// The diagnostic text that goes with [`STRONGER_AUTH_REQUIRED`].
pub const TRANSPORT_ENCRYPTION_REQUIRED: &str = "BindSimple: Transport encryption required.";

/// The hexadecimal sub-code after `data ` in an AD bind diagnostic, if there is one.
pub fn subcode(text: &str) -> Option<u32> {
    let rest = &text[text.find("data ")? + "data ".len()..];
    let hex: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
    u32::from_str_radix(&hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_data_field() {
        let text = "80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 775, v1db1";
        assert_eq!(subcode(text), Some(ACCOUNT_LOCKED_OUT));
        assert_eq!(subcode(TRANSPORT_ENCRYPTION_REQUIRED), None);
        assert_eq!(subcode("data "), None);
    }
}
