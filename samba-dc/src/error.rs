//! The one error type of the fixture. Every variant carries what a person needs to act on it:
//! the command and its output, the LDAP result code and Samba's diagnostic text, the tail of
//! the DC's log.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// What the Debian packages are called; the message of [`Error::NotInstalled`] quotes it.
pub const INSTALL_HINT: &str =
    "apt-get install -y samba-ad-dc samba-ad-provision winbind krb5-user ldap-utils";

/// Everything that can go wrong while starting, driving or preparing a DC.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Samba program is missing from this machine.
    #[error("`{program}` not found: install Samba's AD DC with `{}`", INSTALL_HINT)]
    NotInstalled { program: &'static str },

    /// A file-system or process operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },

    /// An external command (`samba-tool`, `cp`, `python3`, `ip`) exited with an error.
    #[error("`{command}` failed ({status}):\n{output}")]
    Command {
        command: String,
        status: String,
        output: String,
    },

    /// No loopback address had the ports an AD DC needs.
    #[error("no loopback address for a DC: {0}")]
    NoAddress(String),

    /// Samba exited or did not answer an LDAPS bind in time.
    #[error("samba did not become ready after {waited:?}: {reason}\n--- end of {log} ---\n{tail}")]
    NotReady {
        waited: Duration,
        reason: String,
        log: PathBuf,
        tail: String,
    },

    /// The LDAP client failed before the server answered (connection, TLS, timeout).
    #[error("LDAP {operation}: {source}")]
    Ldap {
        operation: String,
        #[source]
        source: Box<ldap3::LdapError>,
    },

    /// The server answered an LDAP operation with an error result.
    #[error("LDAP {operation}: result {rc}: {text}")]
    Refused {
        operation: String,
        /// The LDAP result code (49 is invalidCredentials, 19 constraintViolation, …).
        rc: u32,
        /// Samba's diagnostic message, e.g. `80090308: LdapErr: … data 52e, v1db1`.
        text: String,
    },

    /// No directory entry matched a name, or more than one did.
    #[error("{0}")]
    Lookup(String),

    /// The request does not make sense in the DC's current state or with these arguments.
    #[error("{0}")]
    Invalid(String),

    /// Making the CA or the server certificate failed.
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),

    /// Building the rustls client configuration failed.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }

    pub(crate) fn ldap(operation: impl Into<String>) -> impl FnOnce(ldap3::LdapError) -> Error {
        let operation = operation.into();
        move |source| Error::Ldap {
            operation,
            source: Box::new(source),
        }
    }

    /// The Active Directory sub-code of a refused bind (`0x52e`, `0x533`, …), parsed from the
    /// `data NNN` part of Samba's diagnostic message; see [`crate::bind_errors`].
    pub fn ad_subcode(&self) -> Option<u32> {
        match self {
            Error::Refused { text, .. } => crate::bind_errors::subcode(text),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
