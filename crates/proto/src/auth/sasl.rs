//! The SASL stepper: one exchange of PLAIN (RFC 4616), LOGIN or CRAM-MD5 (RFC 2195).
//!
//! The protocol core frames the challenges (`334 …` in SMTP, `+ …` in POP3); the stepper
//! deals only in the base64 text of each line.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use super::{Credentials, Proof};
use crate::names::Secret;

/// Standard alphabet; padding accepted but not required, since clients differ.
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The mechanisms dirmail speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
    CramMd5,
}

impl Mechanism {
    /// Case-insensitive, as RFC 4422 names are.
    pub fn parse(name: &str) -> Option<Self> {
        if name.eq_ignore_ascii_case("PLAIN") {
            Some(Mechanism::Plain)
        } else if name.eq_ignore_ascii_case("LOGIN") {
            Some(Mechanism::Login)
        } else if name.eq_ignore_ascii_case("CRAM-MD5") {
            Some(Mechanism::CramMd5)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::CramMd5 => "CRAM-MD5",
        }
    }

    /// PLAIN and LOGIN carry the password itself.
    pub fn is_clear_text(self) -> bool {
        !matches!(self, Mechanism::CramMd5)
    }
}

/// Why an exchange ended without credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("authentication cancelled by the client")]
    Cancelled,
    #[error("the response is not valid base64")]
    InvalidBase64,
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    #[error("the exchange is already over")]
    Finished,
}

/// What to do after a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this challenge, already base64-encoded (may be empty), and feed the next line.
    Challenge(String),
    /// The exchange is over; hand these to the driver.
    Done(Credentials),
    /// The exchange is over without credentials.
    Failed(SaslError),
}

#[derive(Debug)]
enum State {
    Plain,
    LoginUsername,
    LoginPassword { username: String },
    CramMd5 { challenge: String },
    Over,
}

/// One SASL exchange in progress.
#[derive(Debug)]
pub struct Sasl {
    state: State,
}

impl Sasl {
    /// Starts `mechanism`. `initial` is the initial response as the client sent it (base64,
    /// `=` meaning empty), if any. `cram_challenge` is the `<random.timestamp@hostname>`
    /// string CRAM-MD5 sends; the caller makes it unique.
    pub fn start(
        mechanism: Mechanism,
        initial: Option<&str>,
        cram_challenge: &str,
    ) -> (Sasl, Step) {
        let mut sasl = Sasl {
            state: match mechanism {
                Mechanism::Plain => State::Plain,
                Mechanism::Login => State::LoginUsername,
                Mechanism::CramMd5 => State::CramMd5 {
                    challenge: cram_challenge.to_owned(),
                },
            },
        };
        let step = match (mechanism, initial) {
            (Mechanism::CramMd5, Some(_)) => {
                sasl.state = State::Over;
                Step::Failed(SaslError::Malformed(
                    "CRAM-MD5 does not take an initial response",
                ))
            }
            (_, Some(initial)) => sasl.step(initial),
            (Mechanism::Plain, None) => Step::Challenge(String::new()),
            (Mechanism::Login, None) => Step::Challenge(B64.encode("Username:")),
            (Mechanism::CramMd5, None) => Step::Challenge(B64.encode(cram_challenge)),
        };
        (sasl, step)
    }

    /// Feeds one client line (base64, without its line ending). `*` cancels (RFC 4954 §4).
    pub fn step(&mut self, line: &str) -> Step {
        let line = line.trim();
        let state = std::mem::replace(&mut self.state, State::Over);
        if matches!(state, State::Over) {
            return Step::Failed(SaslError::Finished);
        }
        if line == "*" {
            return Step::Failed(SaslError::Cancelled);
        }
        let decoded = match decode(line) {
            Ok(decoded) => decoded,
            Err(error) => return Step::Failed(error),
        };
        let outcome = match state {
            State::Plain => plain(&decoded),
            State::LoginUsername => match text(decoded, "the user name is not UTF-8") {
                Ok(username) if !username.is_empty() => {
                    self.state = State::LoginPassword { username };
                    return Step::Challenge(B64.encode("Password:"));
                }
                Ok(_) => Err(SaslError::Malformed("empty user name")),
                Err(error) => Err(error),
            },
            State::LoginPassword { username } => {
                text(decoded, "the password is not UTF-8").map(|password| Credentials {
                    authzid: None,
                    username,
                    proof: Proof::Password(Secret::new(password)),
                })
            }
            State::CramMd5 { challenge } => cram_md5(decoded, challenge),
            State::Over => Err(SaslError::Finished),
        };
        match outcome {
            Ok(credentials) => Step::Done(credentials),
            Err(error) => Step::Failed(error),
        }
    }
}

fn decode(line: &str) -> Result<Vec<u8>, SaslError> {
    // RFC 4954: a lone `=` is an empty initial response.
    if line == "=" {
        return Ok(Vec::new());
    }
    B64.decode(line).map_err(|_| SaslError::InvalidBase64)
}

fn text(bytes: Vec<u8>, what: &'static str) -> Result<String, SaslError> {
    String::from_utf8(bytes).map_err(|_| SaslError::Malformed(what))
}

/// RFC 4616: `[authzid] NUL authcid NUL passwd`.
fn plain(decoded: &[u8]) -> Result<Credentials, SaslError> {
    let mut parts = decoded.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed(
            "PLAIN needs authzid, user name and password separated by NUL",
        ));
    };
    let utf8 = |bytes: &[u8], what| {
        String::from_utf8(bytes.to_vec()).map_err(|_| SaslError::Malformed(what))
    };
    let authzid = utf8(authzid, "the authorisation identity is not UTF-8")?;
    let username = utf8(authcid, "the user name is not UTF-8")?;
    let password = utf8(password, "the password is not UTF-8")?;
    if username.is_empty() {
        return Err(SaslError::Malformed("empty user name"));
    }
    if password.is_empty() {
        return Err(SaslError::Malformed("empty password"));
    }
    Ok(Credentials {
        authzid: (!authzid.is_empty()).then_some(authzid),
        username,
        proof: Proof::Password(Secret::new(password)),
    })
}

/// RFC 2195: `username SP digest`, the digest 32 hex digits.
fn cram_md5(decoded: Vec<u8>, challenge: String) -> Result<Credentials, SaslError> {
    let response = text(decoded, "the response is not UTF-8")?;
    let Some((username, digest)) = response.rsplit_once(' ') else {
        return Err(SaslError::Malformed(
            "CRAM-MD5 needs a user name, a space and a digest",
        ));
    };
    if username.is_empty() {
        return Err(SaslError::Malformed("empty user name"));
    }
    if digest.len() != 32 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SaslError::Malformed(
            "the digest must be 32 hexadecimal digits",
        ));
    }
    Ok(Credentials {
        authzid: None,
        username: username.to_owned(),
        proof: Proof::CramMd5 {
            challenge,
            digest: digest.to_ascii_lowercase(),
        },
    })
}

/// Base64 for challenges and for tests that play the client.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    B64.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn password(step: &Step) -> Option<(&str, &str)> {
        match step {
            Step::Done(Credentials {
                username,
                proof: Proof::Password(secret),
                ..
            }) => Some((username.as_str(), secret.expose())),
            _ => None,
        }
    }

    #[test]
    fn plain_with_initial_response() {
        let initial = encode("\0tim\0tanstaaf");
        let (_, step) = Sasl::start(Mechanism::Plain, Some(&initial), "");
        assert_eq!(password(&step), Some(("tim", "tanstaaf")));
    }

    #[test]
    fn plain_rfc4616_examples() {
        // RFC 4616 §4: authzid empty, and with an authzid.
        let (_, step) = Sasl::start(
            Mechanism::Plain,
            Some(&encode("\0tim\0tanstaaftanstaaf")),
            "",
        );
        assert_eq!(password(&step), Some(("tim", "tanstaaftanstaaf")));
        let (_, step) = Sasl::start(
            Mechanism::Plain,
            Some(&encode("Ursel\0Kurt\0xipj3plmq")),
            "",
        );
        let Step::Done(credentials) = step else {
            panic!("{step:?}")
        };
        assert_eq!(credentials.authzid.as_deref(), Some("Ursel"));
        assert_eq!(credentials.username, "Kurt");
    }

    #[test]
    fn plain_without_initial_response() {
        let (mut sasl, step) = Sasl::start(Mechanism::Plain, None, "");
        assert_eq!(step, Step::Challenge(String::new()));
        let step = sasl.step(&encode("\0u@example.jp\0pw"));
        assert_eq!(password(&step), Some(("u@example.jp", "pw")));
        assert_eq!(sasl.step("AA=="), Step::Failed(SaslError::Finished));
    }

    #[test]
    fn plain_refusals() {
        for bad in ["\0tim", "tim\0pw", "\0\0pw", "\0tim\0", "a\0b\0c\0d"] {
            let (_, step) = Sasl::start(Mechanism::Plain, Some(&encode(bad)), "");
            assert!(
                matches!(step, Step::Failed(SaslError::Malformed(_))),
                "{bad:?}: {step:?}"
            );
        }
        let (_, step) = Sasl::start(Mechanism::Plain, Some("="), "");
        assert!(matches!(step, Step::Failed(SaslError::Malformed(_))));
        let (_, step) = Sasl::start(Mechanism::Plain, Some("not base64!"), "");
        assert_eq!(step, Step::Failed(SaslError::InvalidBase64));
        let (_, step) = Sasl::start(Mechanism::Plain, Some(&encode(b"\0\xff\0pw")), "");
        assert!(matches!(step, Step::Failed(SaslError::Malformed(_))));
    }

    #[test]
    fn login_exchange() {
        let (mut sasl, step) = Sasl::start(Mechanism::Login, None, "");
        assert_eq!(step, Step::Challenge("VXNlcm5hbWU6".into()));
        assert_eq!(
            sasl.step(&encode("tim")),
            Step::Challenge("UGFzc3dvcmQ6".into())
        );
        assert_eq!(
            password(&sasl.step(&encode("tanstaaf"))),
            Some(("tim", "tanstaaf"))
        );
    }

    #[test]
    fn login_with_initial_username() {
        let (mut sasl, step) = Sasl::start(Mechanism::Login, Some(&encode("tim")), "");
        assert_eq!(step, Step::Challenge("UGFzc3dvcmQ6".into()));
        assert_eq!(password(&sasl.step(&encode("pw"))), Some(("tim", "pw")));
    }

    #[test]
    fn cancel_and_bad_base64_at_every_step() {
        let (mut sasl, _) = Sasl::start(Mechanism::Login, None, "");
        assert_eq!(sasl.step("*"), Step::Failed(SaslError::Cancelled));
        let (mut sasl, _) = Sasl::start(Mechanism::Login, None, "");
        let _ = sasl.step(&encode("tim"));
        assert_eq!(sasl.step(" * "), Step::Failed(SaslError::Cancelled));
        let (mut sasl, _) = Sasl::start(Mechanism::Login, None, "");
        assert_eq!(sasl.step("@@@"), Step::Failed(SaslError::InvalidBase64));
        let (mut sasl, _) = Sasl::start(Mechanism::CramMd5, None, "<1.2@h>");
        assert_eq!(sasl.step("*"), Step::Failed(SaslError::Cancelled));
        let (mut sasl, _) = Sasl::start(Mechanism::Plain, None, "");
        assert_eq!(sasl.step("dGlt$"), Step::Failed(SaslError::InvalidBase64));
    }

    #[test]
    fn cram_md5_rfc2195_exchange() {
        let challenge = "<1896.697170952@postoffice.reston.mci.net>";
        let (mut sasl, step) = Sasl::start(Mechanism::CramMd5, None, challenge);
        assert_eq!(
            step,
            Step::Challenge("PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+".into())
        );
        let step = sasl.step("dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw");
        let Step::Done(credentials) = step else {
            panic!("{step:?}")
        };
        assert_eq!(credentials.username, "tim");
        assert!(credentials.proof.verify(&Secret::new("tanstaaftanstaaf")));
        assert!(!credentials.proof.is_clear_text());
    }

    #[test]
    fn cram_md5_refusals() {
        let (_, step) = Sasl::start(Mechanism::CramMd5, Some("dGlt"), "<1@h>");
        assert!(matches!(step, Step::Failed(SaslError::Malformed(_))));
        for bad in [
            "tim",
            "tim xyz",
            " b913a602c7eda7a495b4e6e7334d3890",
            "tim b913a602c7eda7a495b4e6e7334d389z",
        ] {
            let (mut sasl, _) = Sasl::start(Mechanism::CramMd5, None, "<1@h>");
            let step = sasl.step(&encode(bad));
            assert!(
                matches!(step, Step::Failed(SaslError::Malformed(_))),
                "{bad:?}: {step:?}"
            );
        }
    }

    #[test]
    fn mechanism_names() {
        assert_eq!(Mechanism::parse("cram-md5"), Some(Mechanism::CramMd5));
        assert_eq!(Mechanism::parse("Plain"), Some(Mechanism::Plain));
        assert_eq!(Mechanism::parse("NTLM"), None);
        assert!(Mechanism::Login.is_clear_text());
    }
}
