//! A clear-text login, as every protocol and `dirmail auth test` check it: resolve the login
//! name to a mailbox (R8 for bare names), check the password where the account lives, then the
//! locks (R13, R14). The outcome keeps the reason apart so the log can say it (R27); what the
//! client is told is the protocol's business.

use std::path::Path;

use rusqlite::Connection;

pub use super::RefusalReason;
use super::{AdDirectory, Directory, DirectoryError, Verdict};
use dirmail_proto::names::{Address, MailboxName, Secret};
use dirmail_store as store;
use dirmail_store::MailboxRow;
use dirmail_store::rules::{r8_resolve_bare_login, r13_retrieval_lock};

#[derive(Debug)]
pub enum LoginOutcome {
    /// Right credentials and an unlocked mailbox.
    Accepted(MailboxRow),
    /// Right credentials, but retrieval is locked: `rule` is R13 (the mailbox) or R14 (its domain).
    Locked {
        mailbox: MailboxRow,
        rule: &'static str,
    },
    /// Wrong credentials, told apart for the log only.
    Refused(RefusalReason),
}

/// Resolves `login` (`name@domain`, or a bare name under R8) to its mailbox, if any.
pub fn resolve(
    conn: &Connection,
    login: &str,
) -> Result<Result<MailboxRow, RefusalReason>, DirectoryError> {
    let max = store::auth_method(conn)?.max_name_len();
    let found = if login.contains('@') {
        match Address::parse(login, max) {
            Ok(address) => store::find_mailbox(conn, &address)?,
            Err(_) => None,
        }
    } else {
        let Ok(name) = MailboxName::parse(login, max) else {
            return Ok(Err(RefusalReason::UnknownUser));
        };
        match r8_resolve_bare_login(store::mailboxes_named(conn, &name)?) {
            Some(row) => Some(row),
            None if store::mailboxes_named(conn, &name)?.len() > 1 => {
                return Ok(Err(RefusalReason::AmbiguousBareName));
            }
            None => None,
        }
    };
    Ok(found.ok_or(RefusalReason::UnknownUser))
}

/// Checks a clear-text login against the store whose mail root is `mailroot`, with `ad` the
/// configured Active Directory when there is one.
pub fn check(
    conn: &Connection,
    mailroot: &Path,
    ad: Option<&AdDirectory>,
    login: &str,
    password: &Secret,
) -> Result<LoginOutcome, DirectoryError> {
    let mailbox = match resolve(conn, login)? {
        Ok(row) => row,
        Err(reason) => return Ok(LoginOutcome::Refused(reason)),
    };
    let method = store::auth_method(conn)?;
    let dir = store::layout(conn)?.maildir(mailroot, &mailbox.address);
    match Directory::open(method, conn, dir, ad)?.verify(&mailbox.address, password)? {
        Verdict::Accepted => {}
        // The mailbox exists, so an account that does not is a missing account.
        Verdict::Refused(RefusalReason::UnknownUser) => {
            return Ok(LoginOutcome::Refused(RefusalReason::NoAccount));
        }
        Verdict::Refused(reason) => return Ok(LoginOutcome::Refused(reason)),
    }
    if let Some(rule) = r13_retrieval_lock(mailbox.locked, mailbox.domain_locked) {
        return Ok(LoginOutcome::Locked { mailbox, rule });
    }
    Ok(LoginOutcome::Accepted(mailbox))
}
