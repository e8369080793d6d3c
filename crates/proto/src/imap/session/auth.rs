//! CAPABILITY, STARTTLS, LOGIN and AUTHENTICATE, and the continuation of a login: what the
//! session offers before and after login, and the clear-text rules (no password without TLS
//! unless the configuration allows it).

use imap_types::auth::AuthMechanism;
use imap_types::core::{AString, Atom, Tag, Vec1};
use imap_types::response::{Capability, Code, Data};
use imap_types::secret::Secret as WireSecret;

use imap_codec::fragmentizer::Fragmentizer;

use super::{Event, Pending, Request, Response, Session, State};
use crate::auth::{Credentials, Mechanism, Proof, Sasl, SaslError, Step, encode};
use crate::imap::reply::{Reply, code};
use crate::names::Secret;

impl Session {
    fn clear_text_allowed(&self) -> bool {
        self.tls || self.config.plaintext_allowed
    }

    pub(super) fn capabilities(&self) -> Vec1<Capability<'static>> {
        let mut caps = vec![
            Capability::Imap4Rev1,
            Capability::SaslIr,
            Capability::LiteralPlus,
            Capability::Id,
            Capability::Idle,
            Capability::Namespace,
            Capability::UidPlus,
            Capability::Move,
            Capability::Unselect,
        ];
        if let Ok(children) = Atom::try_from("CHILDREN") {
            caps.push(Capability::from(children));
        }
        if !self.authenticated {
            if !self.tls && self.config.starttls_available {
                caps.push(Capability::StartTls);
            }
            if self.clear_text_allowed() {
                caps.push(Capability::Auth(AuthMechanism::Plain));
                caps.push(Capability::Auth(AuthMechanism::Login));
            } else {
                caps.push(Capability::LoginDisabled);
            }
        }
        Vec1::try_from(caps).unwrap_or_else(|_| Vec1::from(Capability::Imap4Rev1))
    }

    pub(super) fn capability(&mut self, tag: Tag<'static>) {
        self.reply(Reply::data(Data::Capability(self.capabilities())));
        self.ok(tag, None, "CAPABILITY completed");
    }

    pub(super) fn starttls(&mut self, tag: Tag<'static>) {
        if self.tls {
            self.bad(tag, None, "TLS is already active");
        } else if self.authenticated {
            self.bad(tag, None, "STARTTLS is only allowed before login");
        } else if !self.config.starttls_available {
            self.no(tag, None, "STARTTLS is not available");
        } else {
            self.ok(tag, None, "begin TLS negotiation now");
            self.out.push_back(Event::StartTls);
            // Anything pipelined behind STARTTLS was sent in the clear: dropped.
            self.drop_input();
            self.state = State::AwaitingTls;
        }
    }

    pub(super) fn login(
        &mut self,
        tag: Tag<'static>,
        username: &AString<'_>,
        password: &WireSecret<AString<'_>>,
    ) {
        if self.authenticated {
            self.bad(tag, None, "already logged in");
        } else if !self.clear_text_allowed() {
            self.privacy_required(tag);
        } else {
            let credentials = Credentials {
                authzid: None,
                username: String::from_utf8_lossy(username.as_ref()).into_owned(),
                proof: Proof::Password(Secret::new(String::from_utf8_lossy(
                    password.declassify().as_ref(),
                ))),
            };
            self.ask(Pending::Login(tag), Request::Authenticate(credentials));
        }
    }

    pub(super) fn authenticate(
        &mut self,
        tag: Tag<'static>,
        mechanism: AuthMechanism<'static>,
        initial: Option<Vec<u8>>,
    ) {
        if self.authenticated {
            return self.bad(tag, None, "already logged in");
        }
        let mechanism = match mechanism {
            AuthMechanism::Plain => Mechanism::Plain,
            AuthMechanism::Login => Mechanism::Login,
            _ => return self.no(tag, None, "unsupported authentication mechanism"),
        };
        if !self.clear_text_allowed() {
            return self.privacy_required(tag);
        }
        // The codec has decoded the initial response; the stepper wants its base64 (`=` when
        // empty, RFC 4959).
        let initial = initial.map(|bytes| {
            if bytes.is_empty() {
                "=".to_owned()
            } else {
                encode(bytes)
            }
        });
        let (sasl, step) = Sasl::start(mechanism, initial.as_deref(), "");
        self.sasl_step(tag, sasl, step);
    }

    pub(super) fn sasl_step(&mut self, tag: Tag<'static>, sasl: Sasl, step: Step) {
        match step {
            Step::Challenge(challenge) => {
                self.reply(Reply::challenge(&challenge));
                self.state = State::Sasl { tag, sasl };
            }
            Step::Done(credentials) => {
                self.ask(Pending::Login(tag), Request::Authenticate(credentials))
            }
            Step::Failed(SaslError::Cancelled | SaslError::Finished) => {
                self.bad(tag, None, "AUTHENTICATE cancelled")
            }
            Step::Failed(SaslError::InvalidBase64) => self.bad(tag, None, "invalid base64 data"),
            Step::Failed(SaslError::Malformed(why)) => self.no(
                tag,
                Some(code("AUTHENTICATIONFAILED")),
                format!("malformed response: {why}"),
            ),
        }
    }

    fn privacy_required(&mut self, tag: Tag<'static>) {
        self.no(
            tag,
            Some(code("PRIVACYREQUIRED")),
            "clear-text login refused without TLS; use STARTTLS first",
        );
        self.count_error();
    }

    /// The continuation of LOGIN and AUTHENTICATE.
    pub(super) fn logged_in(&mut self, tag: Tag<'static>, response: Response) {
        match response {
            Response::LoggedIn => {
                self.authenticated = true;
                self.state = State::Authenticated;
                // Logged in, APPEND may bring a message: the framer gets the larger bound. The
                // LOGIN command was its last and it holds nothing after it (the core hands it
                // one line at a time), so nothing is lost by starting a new one.
                self.frag = Fragmentizer::new(self.max_frame());
                let capabilities = Code::Capability(self.capabilities());
                self.ok(tag, Some(capabilities), "logged in");
            }
            Response::BadCredentials => {
                self.no(
                    tag,
                    Some(code("AUTHENTICATIONFAILED")),
                    "invalid user name or password",
                );
                self.count_error();
            }
            Response::Locked => self.no(
                tag,
                Some(code("CONTACTADMIN")),
                "mailbox locked by the administrator",
            ),
            _ => self.no(
                tag,
                Some(code("UNAVAILABLE")),
                "the account directory is unavailable, try again later",
            ),
        }
    }
}
