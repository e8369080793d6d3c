//! The command line: clap definitions, and the translation of winpop spellings (`ADD`,
//! `/createuser PASS`, `/user:NAME`) into the modern ones, so a winpop script runs unchanged
//! but for the program's name.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "dirmail",
    version,
    about = "Administer a dirmail store: domains, mailboxes, accounts, locks, quotas, properties and the outbound queue",
    after_help = "Exit codes: 0 done; 1 failed (I/O, the database, the directory unreachable); 2 usage or configuration; 3 refused, by a numbered rule of docs/spec.md (the message names it: `refused by R3: …`) or by the store's state (already exists, still in use, mail would be lost); 4 not found (the domain, mailbox, account, alias, key or queued message named does not exist)."
)]
pub struct Cli {
    /// The configuration file (else $DIRMAIL_CONFIG, else ./dirmail.toml, else built-in defaults).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print one JSON object on standard output instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add a domain (DOMAIN) or a mailbox (NAME@DOMAIN).
    Add {
        #[arg(value_name = "DOMAIN | NAME@DOMAIN")]
        target: String,
        /// Create the account too, with this password (winpop: /createuser PASSWORD).
        #[arg(long = "create-user", value_name = "PASSWORD")]
        create_user: Option<String>,
    },
    /// Delete a domain or a mailbox, with its mail.
    #[command(visible_alias = "del")]
    Delete {
        #[arg(value_name = "DOMAIN | NAME@DOMAIN")]
        target: String,
        /// Delete the mailbox's account too (winpop: /deleteuser).
        #[arg(long = "delete-user")]
        delete_user: bool,
        /// Delete even when mail would be lost.
        #[arg(long)]
        force: bool,
    },
    /// List the domains, or the mailboxes of one domain, with their lock state.
    List { domain: Option<String> },
    /// Lock a domain or a mailbox: mail is still received, but cannot be read (R13, R14).
    Lock {
        #[arg(value_name = "DOMAIN | NAME@DOMAIN")]
        target: String,
    },
    /// Unlock a domain or a mailbox.
    Unlock {
        #[arg(value_name = "DOMAIN | NAME@DOMAIN")]
        target: String,
    },
    /// Mailboxes, messages and bytes per domain, and the totals.
    Stat { domain: Option<String> },
    /// Change the password of a mailbox's account where it lives.
    Changepwd {
        #[arg(value_name = "NAME@DOMAIN")]
        address: String,
        #[arg(value_name = "NEW_PASSWORD")]
        password: String,
    },
    /// Give a mailbox the server's default size limit, charged to an account (R15).
    Createquotafile {
        #[arg(value_name = "NAME@DOMAIN")]
        address: String,
        /// The account the quota is charged to (winpop: /user:NAME); default the mailbox's own.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
    /// Set a mailbox's size limit (`50MB`, `1GB`, …) or remove it (`none`).
    Quota {
        #[arg(value_name = "NAME@DOMAIN")]
        address: String,
        #[arg(value_name = "LIMIT | none")]
        limit: String,
    },
    /// Create or link the Active Directory user of one mailbox (R22).
    Migratetoad {
        #[arg(value_name = "NAME@DOMAIN")]
        address: String,
        #[arg(long, value_name = "PASSWORD")]
        password: Option<String>,
    },
    /// Show one property, or all of them.
    #[command(after_help = PROPERTIES_HELP)]
    Get { property: Option<String> },
    /// Set a property (see the list below).
    #[command(after_help = PROPERTIES_HELP)]
    Set {
        property: String,
        #[arg(required = true, num_args = 1..)]
        values: Vec<String>,
    },
    /// The server's own accounts (method `local`), on their own (R7).
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// The separate mail secret for APOP and CRAM-MD5 (docs/spec.md §10).
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Check a login as the server would, without a mail client.
    Auth {
        #[command(subcommand)]
        command: AuthCommand,
    },
    /// The outbound queue: list, show, retry, delete or bounce the messages waiting to be sent.
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// DKIM keys for signing outbound mail of a local domain, and their DNS records.
    Dkim {
        #[command(subcommand)]
        command: DkimCommand,
    },
    /// Addresses that are not mailboxes: aliases, a domain's catch-all (@DOMAIN), and where
    /// postmaster@DOMAIN goes.
    Alias {
        #[command(subcommand)]
        command: AliasCommand,
    },
    /// Run the mail server (SMTP, submission, POP3 and IMAP, with TLS) until Ctrl-C or SIGTERM;
    /// SIGHUP reloads dirmail.toml and the TLS certificate.
    Serve {
        /// What to log: a level (`error`, `warn`, `info`, `debug`, `trace`) or a filter
        /// (`dirmail_net=trace,info`). Before `RUST_LOG` and `[server] logging`. `debug`
        /// includes protocol traces (passwords shown as ***).
        #[arg(long, value_name = "LEVEL|FILTER")]
        log_level: Option<String>,
    },
    /// Ask the running server of this store: uptime, listeners, the sessions open now (client
    /// address, user, age) and the outbound queue. Asks over <data_dir>/control.sock; exit 1
    /// when no server runs.
    Status,
    /// Write a commented dirmail.toml and create an empty store.
    Init {
        /// Overwrite an existing dirmail.toml (an existing store is kept as it is).
        #[arg(long)]
        force: bool,
        /// The server's host name, written into dirmail.toml (default: this machine's name).
        #[arg(long, value_name = "NAME")]
        hostname: Option<String>,
    },
}

/// The properties of `get` and `set`, with their values: the store's own (read by a running
/// server at once) and dirmail.toml's (read at start).
const PROPERTIES_HELP: &str = "\
Properties kept in the store (a running server sees a change at once):
  authentication   local | passwd-file | ad     (only while no domain exists, R2; ad needs [directory])
  mailbox-layout   per-domain | shared          (only while no domain exists, R2)
  sparequired      0 | 1                        (1: clear-text logins refused where SPA is offered, R6)
Properties kept in dirmail.toml (a running server needs a restart, except for socketmin and
socketthreshold, which no server reads):
  mailroot         PATH                         (only while no mailbox exists)
  port             N                            (the POP3 port)
  logging          0 | 1 | 2 | 3                (none, errors, sessions, protocol traces)
  socketbacklog    N
  socketmax        N
  socketmin        N
  socketthreshold  N
  socket           BACKLOG MAX MIN THRESHOLD    (the four socket properties at once, winpop's order)
  threadcount      N                            (worker threads; 0: one per core)";

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Create an account (no mailbox).
    Add {
        name: String,
        password: String,
        /// Groups of the account (repeatable); default none.
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
    },
    /// Delete an account; refused while a mailbox uses it.
    #[command(visible_alias = "del")]
    Delete { name: String },
    /// List the accounts and their groups.
    List,
}

#[derive(Debug, Subcommand)]
pub enum AliasCommand {
    /// Make ALIAS@DOMAIN (or the catch-all @DOMAIN) deliver to each TARGET: a local mailbox,
    /// another alias, or an address outside (sent through the outbound queue). An existing alias
    /// gets the targets added; `postmaster@DOMAIN` given targets no longer goes to its default.
    Add {
        #[arg(value_name = "ALIAS@DOMAIN | @DOMAIN")]
        alias: String,
        #[arg(required = true, num_args = 1.., value_name = "TARGET")]
        targets: Vec<String>,
    },
    /// Delete an alias, or only the TARGETs named (an alias left with none goes too);
    /// `postmaster@DOMAIN` goes back to its default and is never gone.
    #[command(visible_alias = "del")]
    Delete {
        #[arg(value_name = "ALIAS@DOMAIN | @DOMAIN")]
        alias: String,
        #[arg(value_name = "TARGET")]
        targets: Vec<String>,
    },
    /// The aliases of every domain, or of DOMAIN, each domain's postmaster first.
    List { domain: Option<String> },
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Set a mailbox's mail secret (read from standard input when omitted).
    Set {
        #[arg(value_name = "NAME@DOMAIN")]
        address: String,
        secret: Option<String>,
    },
    /// Remove a mailbox's mail secret.
    #[command(visible_alias = "del")]
    Delete {
        #[arg(value_name = "NAME@DOMAIN")]
        address: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// One line per queued message, oldest first: age, size, sender, recipients' states, the
    /// next attempt and the last reply.
    List,
    /// A queued message's envelope, every recipient's state, attempts, next attempt, last host
    /// and reply, and the message's header section (at most its first 64 KiB).
    Show {
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Make the pending recipients of ID (or of every queued message) due now; a running server
    /// sends them at its next scan of the queue.
    Retry {
        #[arg(value_name = "ID")]
        id: Option<String>,
    },
    /// Remove a message from the queue without notifying its sender.
    #[command(visible_alias = "del")]
    Delete {
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Give up a message's pending recipients ("bounced by the administrator"): a running server
    /// sends the sender a notification and removes the entry at its next scan of the queue.
    Bounce {
        #[arg(value_name = "ID")]
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DkimCommand {
    /// Make a key for DOMAIN (a local domain) and print the TXT record to publish; mail whose
    /// From is at DOMAIN is signed with it from then on.
    Generate {
        domain: String,
        /// The record's name is SELECTOR._domainkey.DOMAIN.
        #[arg(long, default_value = dirmail_outbound::dkim::DEFAULT_SELECTOR)]
        selector: String,
        /// rsa (2048 bits, what every verifier knows) or ed25519 (RFC 8463, not yet verified
        /// everywhere: make both, under two selectors, to sign with both).
        #[arg(long, value_enum, default_value = "rsa")]
        algorithm: DkimAlgorithm,
        /// Replace an existing key of the same selector.
        #[arg(long)]
        force: bool,
    },
    /// Print the TXT records of DOMAIN's keys.
    Show { domain: String },
    /// Delete DOMAIN's key of SELECTOR, or all of them.
    #[command(visible_alias = "del")]
    Delete {
        domain: String,
        #[arg(long)]
        selector: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DkimAlgorithm {
    Rsa,
    Ed25519,
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Check LOGIN (name@domain, or a bare name, R8) and PASSWORD (read from standard input when
    /// omitted, so it stays out of the process list).
    Test {
        login: String,
        password: Option<String>,
    },
}

const VERBS: &[&str] = &[
    "add",
    "delete",
    "del",
    "list",
    "lock",
    "unlock",
    "stat",
    "changepwd",
    "createquotafile",
    "quota",
    "migratetoad",
    "get",
    "set",
    "account",
    "auth",
    "secret",
    "queue",
    "dkim",
    "alias",
    "init",
    "serve",
    "status",
];

/// Rewrites winpop spellings into the modern ones. Only the switches winpop knows are touched,
/// so any other argument (a password, a path) goes through as it is.
pub fn translate_winpop(args: Vec<OsString>) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut seen_verb = false;
    let mut skip_value = false;
    for (i, arg) in args.into_iter().enumerate() {
        if i == 0 || skip_value {
            skip_value = false;
            out.push(arg);
            continue;
        }
        let Some(text) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if !seen_verb {
            if text == "--config" {
                skip_value = true;
                out.push(arg);
                continue;
            }
            if !text.starts_with('-') {
                seen_verb = true;
                let lower = text.to_ascii_lowercase();
                if VERBS.contains(&lower.as_str()) {
                    out.push(lower.into());
                    continue;
                }
            }
            out.push(arg);
            continue;
        }
        let lower = text.to_ascii_lowercase();
        let translated: Option<String> = match lower.as_str() {
            "/createuser" => Some("--create-user".into()),
            "/deleteuser" => Some("--delete-user".into()),
            "/force" => Some("--force".into()),
            "/user" => Some("--user".into()),
            "/password" => Some("--password".into()),
            _ => ["/user:", "/password:", "/createuser:"]
                .iter()
                .find(|p| lower.starts_with(*p))
                .map(|p| {
                    let flag = match *p {
                        "/user:" => "--user",
                        "/password:" => "--password",
                        _ => "--create-user",
                    };
                    format!("{flag}={}", &text[p.len()..])
                }),
        };
        let flag = translated.as_deref().unwrap_or(text);
        // The next argument is this switch's value (a password may look like a switch).
        skip_value = matches!(flag, "--create-user" | "--user" | "--password");
        match translated {
            Some(t) => out.push(t.into()),
            None => out.push(arg),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(args: &[&str]) -> Vec<String> {
        translate_winpop(args.iter().map(OsString::from).collect())
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn winpop_spellings() {
        assert_eq!(
            t(&[
                "dirmail",
                "ADD",
                "user05@example.jp",
                "/CREATEUSER",
                "MYSECRETPASSWORD"
            ]),
            [
                "dirmail",
                "add",
                "user05@example.jp",
                "--create-user",
                "MYSECRETPASSWORD"
            ]
        );
        assert_eq!(
            t(&["dirmail", "createquotafile", "a@example.jp", "/user:bob"]),
            ["dirmail", "createquotafile", "a@example.jp", "--user=bob"]
        );
        assert_eq!(
            t(&[
                "dirmail",
                "--config",
                "/etc/x.toml",
                "DEL",
                "a@b.jp",
                "/deleteuser"
            ]),
            [
                "dirmail",
                "--config",
                "/etc/x.toml",
                "del",
                "a@b.jp",
                "--delete-user"
            ]
        );
        assert_eq!(
            t(&["dirmail", "add", "a@b.jp", "/createuser", "/force"]),
            ["dirmail", "add", "a@b.jp", "--create-user", "/force"]
        );
        // A password that looks like a path is left alone.
        assert_eq!(
            t(&["dirmail", "changepwd", "a@b.jp", "/etc/passwd"]),
            ["dirmail", "changepwd", "a@b.jp", "/etc/passwd"]
        );
    }
}
