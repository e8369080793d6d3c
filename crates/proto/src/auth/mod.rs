//! SASL mechanisms as pure steppers (PLAIN, LOGIN, CRAM-MD5) and the APOP digest.
//!
//! Nothing here touches a socket or the directory: a protocol core feeds the client's lines
//! into a [`Sasl`] stepper and gets back either a challenge to send or the finished
//! [`Credentials`], which the driver then checks against the account source. Digest proofs
//! (CRAM-MD5, APOP) are checked with [`Proof::verify`] once the driver has the stored secret.

mod digest;
mod sasl;

pub use digest::{apop_digest, cram_md5_digest};
pub use sasl::{Mechanism, Sasl, SaslError, Step, encode};

use crate::names::Secret;

/// What a client proved about itself. The driver checks it; the cores only carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The identity to act as, when the client asked for one different from `username`
    /// (PLAIN's authzid). `None` when absent or empty.
    pub authzid: Option<String>,
    /// The authentication identity, exactly as the client sent it.
    pub username: String,
    pub proof: Proof,
}

/// How the client proved it knows the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// A clear-text password (PLAIN, LOGIN, POP3 USER/PASS).
    Password(Secret),
    /// RFC 2195: `digest` is the lower-case hex HMAC-MD5 of `challenge` keyed by the secret.
    CramMd5 { challenge: String, digest: String },
    /// RFC 1939: `digest` is the lower-case hex MD5 of `timestamp` followed by the secret.
    Apop { timestamp: String, digest: String },
}

impl Proof {
    /// True when this proof matches `stored`, the secret the server can read (docs/spec.md §10).
    /// Every comparison takes the same time whatever the inputs' common prefix.
    pub fn verify(&self, stored: &Secret) -> bool {
        match self {
            Proof::Password(given) => {
                digest::constant_time_eq(given.expose().as_bytes(), stored.expose().as_bytes())
            }
            Proof::CramMd5 { challenge, digest } => {
                let expected = cram_md5_digest(challenge, stored);
                digest::constant_time_eq(
                    expected.as_bytes(),
                    digest.to_ascii_lowercase().as_bytes(),
                )
            }
            Proof::Apop { timestamp, digest } => {
                let expected = apop_digest(timestamp, stored);
                digest::constant_time_eq(
                    expected.as_bytes(),
                    digest.to_ascii_lowercase().as_bytes(),
                )
            }
        }
    }

    /// True for proofs that carry the password itself, which docs/spec.md §7 `sparequired` refuses
    /// and which should only cross an encrypted connection.
    pub fn is_clear_text(&self) -> bool {
        matches!(self, Proof::Password(_))
    }
}
