//! The numbered rules of the spec that the administration tool checks, one function each, named
//! after its number. Scenarios in `fixtures/scenarios/` name the same numbers.
//! R10 and R11 live beside the types they guard: [`dirmail_proto::names::r10_domain_name`] and
//! [`dirmail_proto::names::r11_mailbox_name`].

use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate as store;
use crate::{AuthMethod, Layout, MailboxRow, StoreError};
use dirmail_proto::names::{Address, MailboxName};

/// A rule refused what was asked: the rule's number and the words for the administrator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused by {rule}: {message}")]
pub struct Refusal {
    pub rule: &'static str,
    pub message: String,
}

fn refuse(rule: &'static str, message: impl Into<String>) -> RuleError {
    RuleError::Refused(Refusal {
        rule,
        message: message.into(),
    })
}

/// A rule that reads the store either refuses or could not read it.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// R1: a new store starts with method `local` and layout `per-domain`.
pub fn r1_initial_settings(conn: &Connection) -> Result<(), StoreError> {
    store::set_setting(conn, "authentication", AuthMethod::Local.as_str())?;
    store::set_setting(conn, "mailbox-layout", Layout::PerDomain.as_str())?;
    store::set_setting(conn, "sparequired", "0")
}

/// R2: the authentication method and the mailbox layout change only while no domain exists.
/// `what` is the property's description as the message shows it.
pub fn r2_change_only_without_domains(conn: &Connection, what: &str) -> Result<(), RuleError> {
    let domains = store::domain_count(conn)?;
    if domains > 0 {
        let verb = if domains == 1 { "exists" } else { "exist" };
        return Err(refuse(
            "R2",
            format!(
                "The {what} can be changed only when no e-mail domains exist ({domains} {verb}). Delete every domain first."
            ),
        ));
    }
    Ok(())
}

/// R22: going further than the seeds, `set authentication ad` is allowed with domains present
/// once every mailbox has its Active Directory user (`migratetoad`), and keeps all mail.
/// Otherwise R2 holds.
pub fn r22_switch_to_ad_allowed(conn: &Connection) -> Result<(), RuleError> {
    let domains = store::domain_count(conn)?;
    if domains == 0 {
        return Ok(());
    }
    let waiting = store::mailboxes_not_ad_linked(conn)?;
    if waiting == 0 {
        return Ok(());
    }
    let verb = if domains == 1 { "exists" } else { "exist" };
    Err(refuse(
        "R2",
        format!(
            "The authentication method can be changed only when no e-mail domains exist ({domains} {verb}). Delete every domain first, or move every mailbox to Active Directory with `dirmail migratetoad NAME@DOMAIN` ({waiting} still to go) (R22)."
        ),
    ))
}

/// R3: under `local`, a mailbox name is unique across all domains.
pub fn r3_local_name_unique(
    conn: &Connection,
    method: AuthMethod,
    address: &Address,
) -> Result<(), RuleError> {
    if method != AuthMethod::Local {
        return Ok(());
    }
    if let Some(existing) = other_domain_with_name(conn, address)? {
        return Err(refuse(
            "R3",
            format!(
                "The mailbox {existing} already uses the name {}. With local authentication a mailbox name must be unique across all domains.",
                address.name
            ),
        ));
    }
    Ok(())
}

/// R5: under `passwd-file`, the password record sits in the mailbox's own directory, so it is
/// made with the mailbox and deleted with it. This is where it is.
pub fn r5_password_record(maildir: &Path) -> PathBuf {
    maildir.join("dirmail-passwd")
}

/// R5 (and SPEC §2's table): `passwd-file` accounts exist only as part of their mailbox, so
/// `add NAME@DOMAIN` without `--create-user` has nothing to attach to.
pub fn r5_passwd_file_needs_create_user(
    method: AuthMethod,
    create_user: bool,
) -> Result<(), RuleError> {
    if method == AuthMethod::PasswdFile && !create_user {
        return Err(refuse(
            "R5",
            "With passwd-file authentication the password record is created with the mailbox: use --create-user PASSWORD.",
        ));
    }
    Ok(())
}

/// R6: Secure Password Authentication is offered only with `local` and `ad`.
pub fn r6_spa_offered(method: AuthMethod) -> bool {
    matches!(method, AuthMethod::Local | AuthMethod::Ad)
}

/// R6: `sparequired 1` is refused where SPA is not offered.
pub fn r6_spa_required_allowed(method: AuthMethod, required: bool) -> Result<(), RuleError> {
    if required && !r6_spa_offered(method) {
        return Err(refuse(
            "R6",
            format!(
                "Secure Password Authentication is not offered with {} authentication, so it cannot be required.",
                method.as_str()
            ),
        ));
    }
    Ok(())
}

/// R7: `local` accounts created by `add --create-user` belong to `POP3 Users` only: they may
/// use mail and nothing else the server offers.
pub fn r7_groups_of_created_accounts() -> &'static [&'static str] {
    &["POP3 Users"]
}

/// R8: a bare `name` in a clear-text login is accepted only when it names exactly one mailbox;
/// otherwise the login fails like a wrong password (so `None`).
pub fn r8_resolve_bare_login(
    conn: &Connection,
    name: &MailboxName,
) -> Result<Option<MailboxRow>, StoreError> {
    let mut found = store::mailboxes_named(conn, name)?;
    Ok(if found.len() == 1 { found.pop() } else { None })
}

/// R9: in the `shared` layout all domains share one namespace of names, whatever the method.
pub fn r9_shared_layout_name_unique(
    conn: &Connection,
    layout: Layout,
    address: &Address,
) -> Result<(), RuleError> {
    if layout != Layout::Shared {
        return Ok(());
    }
    if let Some(existing) = other_domain_with_name(conn, address)? {
        return Err(refuse(
            "R9",
            format!(
                "The mailbox {existing} already uses the name {}. In the shared mailbox layout a name can exist in only one domain.",
                address.name
            ),
        ));
    }
    Ok(())
}

/// R11: the longest mailbox name the method allows (20 for `local`, 64 otherwise).
pub fn r11_max_name_len(method: AuthMethod) -> usize {
    match method {
        AuthMethod::Local => 20,
        AuthMethod::Ad | AuthMethod::PasswdFile => 64,
    }
}

/// R12: the mailbox that receives `postmaster@` a domain: its administrator mailbox when one is
/// set, else the first mailbox created in it.
pub fn r12_postmaster(
    conn: &Connection,
    domain: &store::DomainRow,
) -> Result<Option<MailboxRow>, StoreError> {
    if let Some(admin) = &domain.admin_mailbox {
        let address = Address {
            name: MailboxName::unvalidated(admin.clone()),
            domain: domain.name.clone(),
        };
        if let Some(row) = store::find_mailbox(conn, &address)? {
            return Ok(Some(row));
        }
    }
    store::first_mailbox_of(conn, domain.id)
}

/// R14: while a domain is locked, a single mailbox of it cannot be unlocked.
pub fn r14_unlock_inside_locked_domain(mailbox: &MailboxRow) -> Result<(), RuleError> {
    if mailbox.domain_locked {
        return Err(refuse(
            "R14",
            format!(
                "The domain {} is locked, so the mailbox {} cannot be unlocked on its own. Unlock the domain first.",
                mailbox.address.domain, mailbox.address
            ),
        ));
    }
    Ok(())
}

/// R15: a message is admitted when the mailbox has no limit, or when it fits whole in what is
/// left; nothing is ever delivered in part.
pub fn r15_quota_admits(limit: Option<u64>, used: u64, incoming: u64) -> bool {
    match limit {
        None => true,
        Some(limit) => used.saturating_add(incoming) <= limit,
    }
}

/// R15: the account a mailbox's quota is charged to: the one named by `--user`, which must
/// exist, or the mailbox's own.
pub fn r15_quota_owner(
    conn: &Connection,
    method: AuthMethod,
    mailbox: &MailboxRow,
    user: Option<&str>,
    local_account_exists: impl FnOnce(&str) -> Result<bool, StoreError>,
) -> Result<String, RuleError> {
    let Some(user) = user else {
        return Ok(match method {
            AuthMethod::Local => mailbox.address.name.to_string(),
            _ => mailbox.address.to_string(),
        });
    };
    let exists = match method {
        AuthMethod::Local => local_account_exists(&user.to_ascii_lowercase())?,
        // Under the other methods an account is a mailbox: name it as name@domain, or by its
        // bare name when that names exactly one mailbox (as R8 resolves logins).
        _ => {
            let named = if user.contains('@') {
                Address::parse(user, r11_max_name_len(method))
                    .ok()
                    .map(|a| store::find_mailbox(conn, &a))
                    .transpose()?
                    .flatten()
            } else {
                MailboxName::parse(user, r11_max_name_len(method))
                    .ok()
                    .map(|n| r8_resolve_bare_login(conn, &n))
                    .transpose()?
                    .flatten()
            };
            return named.map(|m| m.address.to_string()).ok_or_else(|| {
                refuse(
                    "R15",
                    format!("The quota cannot be charged to {user:?}: there is no such account."),
                )
            });
        }
    };
    if !exists {
        return Err(refuse(
            "R15",
            format!("The quota cannot be charged to {user:?}: there is no such account."),
        ));
    }
    Ok(user.to_ascii_lowercase())
}

fn other_domain_with_name(
    conn: &Connection,
    address: &Address,
) -> Result<Option<Address>, StoreError> {
    Ok(store::mailboxes_named(conn, &address.name)?
        .into_iter()
        .find(|m| m.address.domain != address.domain)
        .map(|m| m.address))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r15_edges() {
        assert!(r15_quota_admits(None, u64::MAX, u64::MAX));
        assert!(r15_quota_admits(Some(100), 60, 40));
        assert!(!r15_quota_admits(Some(100), 60, 41));
        assert!(!r15_quota_admits(Some(100), u64::MAX, 1));
    }

    #[test]
    fn r6_and_r11_per_method() {
        assert!(r6_spa_offered(AuthMethod::Local));
        assert!(r6_spa_offered(AuthMethod::Ad));
        assert!(!r6_spa_offered(AuthMethod::PasswdFile));
        assert!(r6_spa_required_allowed(AuthMethod::PasswdFile, false).is_ok());
        assert!(r6_spa_required_allowed(AuthMethod::PasswdFile, true).is_err());
        assert_eq!(r11_max_name_len(AuthMethod::Local), 20);
        assert_eq!(r11_max_name_len(AuthMethod::Ad), 64);
        assert_eq!(r11_max_name_len(AuthMethod::PasswdFile), 64);
    }
}
