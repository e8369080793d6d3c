//! The two digest proofs that need a readable secret: CRAM-MD5 (RFC 2195) and APOP (RFC 1939).

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

use crate::names::Secret;

/// RFC 2195: lower-case hex of HMAC-MD5(key = secret, text = challenge).
pub fn cram_md5_digest(challenge: &str, secret: &Secret) -> String {
    // HMAC accepts a key of any length, so `new_from_slice` cannot fail; the fallback keeps
    // the function total without a panic path.
    match Hmac::<Md5>::new_from_slice(secret.expose().as_bytes()) {
        Ok(mut mac) => {
            mac.update(challenge.as_bytes());
            hex(&mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// RFC 1939 APOP: lower-case hex of MD5(timestamp || secret). `timestamp` includes its
/// angle brackets, as it appeared in the greeting.
pub fn apop_digest(timestamp: &str, secret: &Secret) -> String {
    let mut md5 = Md5::new();
    md5.update(timestamp.as_bytes());
    md5.update(secret.expose().as_bytes());
    hex(&md5.finalize())
}

/// Compares without an early exit, so timing does not tell how much of a guess was right.
/// Lengths are not secret (digests have a fixed length).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Proof;

    #[test]
    fn rfc2195_example() {
        let secret = Secret::new("tanstaaftanstaaf");
        let challenge = "<1896.697170952@postoffice.reston.mci.net>";
        assert_eq!(
            cram_md5_digest(challenge, &secret),
            "b913a602c7eda7a495b4e6e7334d3890"
        );
    }

    #[test]
    fn rfc1939_apop_example() {
        let secret = Secret::new("tanstaaf");
        let timestamp = "<1896.697170952@dbc.mtview.ca.us>";
        assert_eq!(
            apop_digest(timestamp, &secret),
            "c4c9334bac560ecc979e58001b3e22fb"
        );
    }

    #[test]
    fn proofs_verify_against_the_stored_secret() {
        let secret = Secret::new("tanstaaf");
        let apop = Proof::Apop {
            timestamp: "<1896.697170952@dbc.mtview.ca.us>".into(),
            digest: "C4C9334BAC560ECC979E58001B3E22FB".into(),
        };
        assert!(apop.verify(&secret));
        assert!(!apop.verify(&Secret::new("tanstaag")));
        let cram = Proof::CramMd5 {
            challenge: "<1896.697170952@postoffice.reston.mci.net>".into(),
            digest: "b913a602c7eda7a495b4e6e7334d3890".into(),
        };
        assert!(cram.verify(&Secret::new("tanstaaftanstaaf")));
        assert!(!cram.verify(&secret));
        let short = Proof::CramMd5 {
            challenge: "<x@y>".into(),
            digest: "b913".into(),
        };
        assert!(!short.verify(&secret));
        assert!(Proof::Password(Secret::new("pw")).verify(&Secret::new("pw")));
        assert!(!Proof::Password(Secret::new("pw")).verify(&Secret::new("pw2")));
    }
}
