//! The SASL stepper harness: one exchange of PLAIN, LOGIN or CRAM-MD5 fed fuzzed lines.
//!
//! Input: `flags` then lines separated by LF (a CR before the LF is dropped, as the cores'
//! line reader does); with the initial-response flag the first line is the initial response.
//!
//! Invariants checked:
//! - the first challenge is the mechanism's (empty, `Username:`, the CRAM-MD5 challenge), every
//!   challenge is base64, and no exchange asks more often than its mechanism does;
//! - `*` cancels a live exchange; once over, every further line is `Finished`;
//! - finished credentials have a user name and (for PLAIN and LOGIN) a password, no NUL in
//!   them, an authzid that is absent rather than empty, and come out the same when a client
//!   sends them again, encoded properly, to a fresh stepper;
//! - a CRAM-MD5 proof carries the challenge sent and 32 lower-case hex digits, and verifies
//!   exactly when it equals the HMAC of the secret; an APOP proof verifies whatever its case.

use base64::Engine as _;
use dirmail_proto::auth::{
    Credentials, Mechanism, Proof, Sasl, SaslError, Step, apop_digest, cram_md5_digest, encode,
};
use dirmail_proto::names::Secret;

const CHALLENGES: [&str; 2] = [
    "<1896.697170952@postoffice.reston.mci.net>",
    "<ünïcode.0@mx.example.jp>",
];

fn decodes(challenge: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(challenge)
        .unwrap_or_else(|e| panic!("challenge {challenge:?} is not base64: {e}"))
}

/// Feeds `lines` to a stepper started on `mechanism`, checking every step; returns the
/// credentials when the exchange finished with some.
fn exchange(
    mechanism: Mechanism,
    initial: Option<&str>,
    challenge: &str,
    lines: &[String],
) -> Option<Credentials> {
    let (mut sasl, mut step) = Sasl::start(mechanism, initial, challenge);
    let mut challenges = 0;
    let mut done = None;
    let mut over = false;
    if initial.is_none() {
        let Step::Challenge(first) = &step else {
            panic!("{mechanism:?} without an initial response must challenge: {step:?}");
        };
        let expected: &[u8] = match mechanism {
            Mechanism::Plain => b"",
            Mechanism::Login => b"Username:",
            Mechanism::CramMd5 => challenge.as_bytes(),
        };
        assert_eq!(decodes(first), expected);
    } else if mechanism == Mechanism::CramMd5 {
        assert!(
            matches!(step, Step::Failed(SaslError::Malformed(_))),
            "{step:?}"
        );
    }
    let mut lines = lines.iter();
    loop {
        match &step {
            Step::Challenge(text) => {
                assert!(!over);
                decodes(text);
                challenges += 1;
                let most = if mechanism == Mechanism::Login { 2 } else { 1 };
                assert!(challenges <= most, "{mechanism:?} asked {challenges} times");
            }
            Step::Done(credentials) => {
                assert!(!over);
                check_credentials(mechanism, challenge, credentials);
                done = Some(credentials.clone());
                over = true;
            }
            Step::Failed(error) => {
                assert_eq!(over, *error == SaslError::Finished, "{error:?}");
                over = true;
            }
        }
        let Some(line) = lines.next() else {
            return done;
        };
        step = sasl.step(line);
        if !over && line.trim() == "*" {
            assert_eq!(step, Step::Failed(SaslError::Cancelled));
        }
    }
}

fn check_credentials(mechanism: Mechanism, challenge: &str, credentials: &Credentials) {
    assert!(!credentials.username.is_empty());
    // RFC 4616: NUL separates PLAIN's fields, so none can hold one.
    assert!(mechanism != Mechanism::Plain || !credentials.username.contains('\0'));
    if let Some(authzid) = &credentials.authzid {
        assert!(!authzid.is_empty() && !authzid.contains('\0'));
        assert_eq!(mechanism, Mechanism::Plain, "only PLAIN carries an authzid");
    }
    assert_eq!(credentials.proof.is_clear_text(), mechanism.is_clear_text());
    match &credentials.proof {
        Proof::Password(password) => {
            assert!(mechanism != Mechanism::Plain || !password.expose().is_empty());
            assert!(mechanism != Mechanism::Plain || !password.expose().contains('\0'));
        }
        Proof::CramMd5 {
            challenge: sent,
            digest,
        } => {
            assert_eq!(sent, challenge);
            assert_eq!(digest.len(), 32);
            assert!(
                digest
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            );
            for secret in ["tanstaaftanstaaf", "", &credentials.username] {
                let secret = Secret::new(secret);
                let expected = cram_md5_digest(challenge, &secret);
                assert_eq!(credentials.proof.verify(&secret), expected == *digest);
            }
        }
        Proof::Apop { .. } => panic!("a SASL exchange gave an APOP proof"),
    }
}

/// The same credentials, sent again by a well-behaved client, must come out the same.
fn resend(mechanism: Mechanism, challenge: &str, credentials: &Credentials) {
    let again = match (&credentials.proof, mechanism) {
        (Proof::Password(password), Mechanism::Plain) => {
            let authzid = credentials.authzid.as_deref().unwrap_or("");
            let message = format!("{authzid}\0{}\0{}", credentials.username, password.expose());
            exchange(mechanism, Some(&encode(message)), challenge, &[])
        }
        (Proof::Password(password), Mechanism::Login) => exchange(
            mechanism,
            None,
            challenge,
            &[encode(&credentials.username), encode(password.expose())],
        ),
        (Proof::CramMd5 { digest, .. }, Mechanism::CramMd5) => exchange(
            mechanism,
            None,
            challenge,
            &[encode(format!("{} {digest}", credentials.username))],
        ),
        other => panic!("unexpected proof for the mechanism: {other:?}"),
    };
    assert_eq!(
        again.as_ref(),
        Some(credentials),
        "re-sent credentials differ"
    );
}

/// The fuzz target's body.
pub fn run(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mechanism = match flags % 3 {
        0 => Mechanism::Plain,
        1 => Mechanism::Login,
        _ => Mechanism::CramMd5,
    };
    let challenge = CHALLENGES[usize::from(flags >> 3 & 1)];
    let mut lines: Vec<String> = rest
        .split(|&b| b == b'\n')
        .map(|l| String::from_utf8_lossy(l.strip_suffix(b"\r").unwrap_or(l)).into_owned())
        .collect();
    let initial = (flags & 4 != 0 && !lines.is_empty()).then(|| lines.remove(0));
    if let Some(credentials) = exchange(mechanism, initial.as_deref(), challenge, &lines) {
        resend(mechanism, challenge, &credentials);
    }

    // APOP (RFC 1939 §7): the digest of any timestamp and secret, checked in either case.
    let text = String::from_utf8_lossy(rest);
    let (timestamp, secret) = text.split_once('\n').unwrap_or((&text, ""));
    let secret = Secret::new(secret);
    let digest = apop_digest(timestamp, &secret);
    assert_eq!(digest.len(), 32);
    for digest in [digest.clone(), digest.to_ascii_uppercase()] {
        let proof = Proof::Apop {
            timestamp: timestamp.to_owned(),
            digest,
        };
        assert!(proof.verify(&secret));
    }
}
