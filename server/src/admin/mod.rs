//! The administration tool: one file per winpop verb, dispatched from one enum ([`cli::Command`]).
//! The numbered rules the verbs check live in [`dirmail_store::rules`].
//!
//! Every verb returns an [`Outcome`] (text for people, JSON for scripts) or an [`AdminError`]
//! whose kind fixes the exit code: 1 failed, 2 usage or configuration, 3 refused (by a
//! numbered rule, which the message names, or by the store's state), 4 not found.

pub mod account;
pub mod add;
pub mod alias;
pub mod auth_test;
pub mod changepwd;
pub mod cli;
pub mod delete;
pub mod dkim;
pub mod init;
pub mod list;
pub mod lock;
pub mod migratetoad;
pub mod property;
pub mod queue;
pub mod quota;
pub mod secret;
pub mod stat;
pub mod status;

use std::ffi::OsString;
use std::io::Write;

use clap::Parser;
use serde_json::{Value, json};

use cli::{Cli, Command};
use dirmail_config::{Config, ConfigError};
use dirmail_directory::ad::AdDirectory;
use dirmail_directory::{AdError, DirectoryError};
use dirmail_proto::names::NameError;
use dirmail_rules::Refusal;
use dirmail_store::{Store, StoreError};

/// Why a command did not do what was asked.
#[derive(Debug)]
pub enum AdminError {
    /// Exit 1: something broke (I/O, the database, the directory unreachable).
    Failed(String),
    /// Exit 2: the command line or the configuration is wrong (or missing).
    Usage(String),
    /// Exit 3: a rule of docs/spec.md (named when it has a number) or the store's state refuses
    /// it (already exists, still in use, mail would be lost without --force).
    Refused {
        rule: Option<&'static str>,
        message: String,
    },
    /// Exit 4: what the command names (a domain, mailbox, account, alias, key, queued message)
    /// does not exist. Apart from 3 so a script can tell "not there" from "not allowed".
    NotFound(String),
}

impl AdminError {
    pub fn refused(rule: &'static str, message: impl Into<String>) -> Self {
        AdminError::Refused {
            rule: Some(rule),
            message: message.into(),
        }
    }

    /// Refused by the state of the store (already exists, does not exist, mail would be lost).
    pub fn state(message: impl Into<String>) -> Self {
        AdminError::Refused {
            rule: None,
            message: message.into(),
        }
    }

    /// What the command names does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        AdminError::NotFound(message.into())
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            AdminError::Failed(_) => 1,
            AdminError::Usage(_) => 2,
            AdminError::Refused { .. } => 3,
            AdminError::NotFound(_) => 4,
        }
    }

    fn rule(&self) -> Option<&'static str> {
        match self {
            AdminError::Refused { rule, .. } => *rule,
            _ => None,
        }
    }

    fn message(&self) -> &str {
        match self {
            AdminError::Failed(m) | AdminError::Usage(m) | AdminError::NotFound(m) => m,
            AdminError::Refused { message, .. } => message,
        }
    }
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.rule() {
            Some(rule) => write!(f, "refused by {rule}: {}", self.message()),
            None => f.write_str(self.message()),
        }
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        AdminError::Failed(e.to_string())
    }
}

impl From<NameError> for AdminError {
    fn from(e: NameError) -> Self {
        AdminError::refused(e.rule, e.reason)
    }
}

impl From<Refusal> for AdminError {
    fn from(e: Refusal) -> Self {
        AdminError::refused(e.rule, e.message)
    }
}

impl From<DirectoryError> for AdminError {
    fn from(e: DirectoryError) -> Self {
        match e {
            DirectoryError::Store(s) => s.into(),
            DirectoryError::AdNotConfigured => AdminError::Usage(e.to_string()),
            DirectoryError::Ad(AdError::Refused { message }) => AdminError::refused("R25", message),
            DirectoryError::Ad(e @ AdError::Config(_)) => AdminError::Usage(e.to_string()),
            DirectoryError::Ad(e) => AdminError::Failed(e.to_string()),
        }
    }
}

impl From<ConfigError> for AdminError {
    fn from(e: ConfigError) -> Self {
        AdminError::Usage(e.to_string())
    }
}

/// What a command did: `text` for people, `json` (an object) for scripts.
#[derive(Debug)]
pub struct Outcome {
    pub text: String,
    pub json: Value,
}

impl Outcome {
    pub fn new(text: impl Into<String>, json: Value) -> Self {
        Outcome {
            text: text.into(),
            json,
        }
    }
}

/// What every verb gets: the configuration, the open store, and the Active Directory when
/// `[directory]` is configured (its settings checked, not yet contacted).
#[derive(Debug)]
pub struct Context {
    pub config: Config,
    pub store: Store,
    pub ad: Option<Result<AdDirectory, String>>,
}

/// The configured Active Directory: `None` when `[directory]` is absent, an error (exit 2)
/// when its settings cannot work. A free function over the field, so a verb can hold it while
/// it writes to the store.
pub fn ad_of(ad: &Option<Result<AdDirectory, String>>) -> Result<Option<&AdDirectory>, AdminError> {
    match ad {
        None => Ok(None),
        Some(Ok(ad)) => Ok(Some(ad)),
        Some(Err(e)) => Err(AdminError::Usage(e.clone())),
    }
}

/// Runs the tool with `args` (the program name first) and returns the exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let args = cli::translate_winpop(args);
    let wants_json = args.iter().any(|a| a == "--json");
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = e.exit_code();
            if wants_json && code != 0 {
                print_json_error(&AdminError::Usage(e.to_string().trim_end().to_owned()));
            } else {
                let _ = e.print();
            }
            return code;
        }
    };
    if let Command::Serve { log_level } = &cli.command {
        if cli.json {
            // The server's output is a running log, not one answer: refuse rather than ignore.
            eprintln!(
                "dirmail: serve has no JSON output (--json is for the administrative commands; the log is JSON with [server] log_format = \"json\")"
            );
            return 2;
        }
        return match Config::discover(cli.config.as_deref()) {
            Ok(config) => dirmail_net::serve_main(config, log_level.as_deref()),
            Err(e) => {
                eprintln!("dirmail: {e}");
                2
            }
        };
    }
    let json = cli.json;
    match run(cli) {
        Ok(outcome) => {
            let mut stdout = std::io::stdout().lock();
            if json {
                let mut object = match outcome.json {
                    Value::Object(map) => map,
                    other => {
                        let mut map = serde_json::Map::new();
                        map.insert("result".into(), other);
                        map
                    }
                };
                object.insert("ok".into(), Value::Bool(true));
                object.insert("message".into(), Value::String(outcome.text));
                let _ = writeln!(stdout, "{}", Value::Object(object));
            } else if !outcome.text.is_empty() {
                let _ = writeln!(stdout, "{}", outcome.text);
            }
            0
        }
        Err(error) => {
            if json {
                print_json_error(&error);
            } else {
                eprintln!("dirmail: {error}");
            }
            error.exit_code()
        }
    }
}

fn print_json_error(error: &AdminError) {
    println!(
        "{}",
        json!({
            "ok": false,
            "exit": error.exit_code(),
            "rule": error.rule(),
            "error": error.message(),
        })
    );
}

fn run(cli: Cli) -> Result<Outcome, AdminError> {
    if let Command::Init { force, hostname } = cli.command {
        return init::run(cli.config.as_deref(), force, hostname.as_deref());
    }
    let config = Config::discover(cli.config.as_deref())?;
    if let Command::Status = cli.command {
        // The server's business: the store is not opened (nor migrated) for it.
        return status::run(&config);
    }
    let store = Store::open(&config.store)?;
    let ad = config
        .directory
        .as_ref()
        .map(|d| AdDirectory::new(d).map_err(|e| e.to_string()));
    let mut ctx = Context { config, store, ad };
    match cli.command {
        Command::Add {
            target,
            create_user,
        } => add::run(&mut ctx, &target, create_user),
        Command::Delete {
            target,
            delete_user,
            force,
        } => delete::run(&mut ctx, &target, delete_user, force),
        Command::List { domain } => list::run(&ctx, domain.as_deref()),
        Command::Lock { target } => lock::run(&mut ctx, &target, true),
        Command::Unlock { target } => lock::run(&mut ctx, &target, false),
        Command::Stat { domain } => stat::run(&ctx, domain.as_deref()),
        Command::Changepwd { address, password } => changepwd::run(&mut ctx, &address, password),
        Command::Createquotafile { address, user } => {
            quota::create_quota_file(&mut ctx, &address, user.as_deref())
        }
        Command::Quota { address, limit } => quota::set_limit(&mut ctx, &address, &limit),
        Command::Migratetoad { address, password } => {
            migratetoad::run(&mut ctx, &address, password)
        }
        Command::Get { property } => property::get(&ctx, property.as_deref()),
        Command::Set { property, values } => property::set(&mut ctx, &property, &values),
        Command::Account { command } => account::run(&mut ctx, command),
        Command::Auth { command } => auth_test::run(&ctx, command),
        Command::Secret { command } => secret::run(&mut ctx, command),
        Command::Queue { command } => queue::run(&ctx, command),
        Command::Dkim { command } => dkim::run(&ctx, command),
        Command::Alias { command } => alias::run(&mut ctx, command),
        // Both are handled before a store is opened for an administrative command.
        Command::Init { .. } | Command::Serve { .. } | Command::Status => Err(AdminError::Usage(
            "init, serve and status do not run as administrative commands".into(),
        )),
    }
}

/// Parses `DOMAIN` or `NAME@DOMAIN` as the verbs that take either do.
pub enum Target {
    Domain(dirmail_proto::names::DomainName),
    Mailbox(dirmail_proto::names::Address),
}

pub fn parse_target(text: &str, max_name_len: usize) -> Result<Target, AdminError> {
    if text.contains('@') {
        Ok(Target::Mailbox(dirmail_proto::names::Address::parse(
            text,
            max_name_len,
        )?))
    } else {
        Ok(Target::Domain(dirmail_proto::names::DomainName::parse(
            text,
        )?))
    }
}

/// A password given on the command line: empty is a usage error.
pub fn password_arg(text: String, what: &str) -> Result<dirmail_proto::names::Secret, AdminError> {
    if text.is_empty() {
        return Err(AdminError::Usage(format!("{what} is empty")));
    }
    if text.len() > 1024 {
        return Err(AdminError::Usage(format!(
            "{what} is longer than 1024 bytes"
        )));
    }
    // A NUL ends the string in the C side of every client library, and CR or LF end the line
    // of every mail protocol: a password holding one could be stored but never typed.
    if text.chars().any(char::is_control) {
        return Err(AdminError::Usage(format!(
            "{what} contains a control character (such as NUL, a tab or a line break), which no mail client can send"
        )));
    }
    Ok(dirmail_proto::names::Secret::new(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_with_control_characters_are_refused() {
        for bad in [
            "a\0b",
            "line\nbreak",
            "tab\there",
            "cr\r",
            "\u{7f}del",
            "\u{85}nel",
        ] {
            let error = password_arg(bad.into(), "the mail secret").unwrap_err();
            assert_eq!(error.exit_code(), 2, "{bad:?}");
            assert!(
                !error.to_string().contains(bad),
                "the value is never echoed"
            );
        }
        assert!(password_arg("ordinary päss wörd!".into(), "the password").is_ok());
        assert!(password_arg(String::new(), "the password").is_err());
    }
}
