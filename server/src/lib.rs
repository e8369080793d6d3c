//! dirmail: a reference mail server whose accounts come from a directory.
//!
//! Map of the modules:
//! - [`names`]: validated domain and mailbox names (R10, R11) and the `Secret` password wrapper.
//! - [`config`]: `dirmail.toml`, typed and checked once at load.
//! - [`store`]: the SQLite database of administrative state and the Maildir mail root.
//! - [`directory`]: one enum over the account sources (`local`, `passwd-file`, later `ad`).
//! - [`admin`]: the administration tool, one file per winpop verb; `admin::rules` holds the
//!   numbered rules of SPEC.md.
//! - [`proto`]: sans-IO protocol cores (SMTP, POP3, IMAP).
//! - [`auth`]: SASL mechanisms as pure steppers.

pub mod admin;
pub mod auth;
pub mod config;
pub mod directory;
pub mod names;
pub mod net;
pub mod proto;
pub mod store;
