//! The numbered rules of `docs/spec.md` that are decided from plain facts, one function each,
//! named after its number (`r2_…`). A rule that needs the store's state takes it as arguments:
//! the caller reads the facts inside the same `BEGIN IMMEDIATE` transaction as the change the
//! rule guards (`Store::write`), so two administrators racing still cannot both slip past it,
//! and the rule itself is tested here without a database.
//!
//! The other rules live beside what they guard: R10 and R11 in `dirmail_proto::names`, the wire
//! rules (R16, R19) in the SMTP core, R18 in the store's Maildir delivery, R20 where the POP3
//! hold is taken, and the Active Directory rules in `dirmail_directory::ad`. The tidy test
//! (`xtask/tests/tidy.rs`) checks that every rule has exactly one such function.

pub mod alias;

use std::path::{Path, PathBuf};

use dirmail_proto::names::Address;

/// A rule refused what was asked: the rule's number and the words for the administrator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused by {rule}: {message}")]
pub struct Refusal {
    pub rule: &'static str,
    pub message: String,
}

fn refuse(rule: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        rule,
        message: message.into(),
    }
}

/// The authentication method of a store (seed names: Local Windows accounts, Active Directory
/// integrated, Encrypted password file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Local,
    Ad,
    PasswdFile,
}

impl AuthMethod {
    pub fn parse(s: &str) -> Option<AuthMethod> {
        match s {
            "local" => Some(AuthMethod::Local),
            "ad" => Some(AuthMethod::Ad),
            "passwd-file" => Some(AuthMethod::PasswdFile),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Local => "local",
            AuthMethod::Ad => "ad",
            AuthMethod::PasswdFile => "passwd-file",
        }
    }

    /// The longest mailbox name the method allows, which R11
    /// ([`dirmail_proto::names::r11_mailbox_name`]) is given: 20 for `local` (a Windows account
    /// name), 64 otherwise.
    pub fn max_name_len(self) -> usize {
        match self {
            AuthMethod::Local => 20,
            AuthMethod::Ad | AuthMethod::PasswdFile => 64,
        }
    }

    /// Whether Secure Password Authentication exists with this method: only `local` and `ad`
    /// have an account SPA can check (R6, decided by [`r6_spa_required_allowed`]).
    pub fn offers_spa(self) -> bool {
        matches!(self, AuthMethod::Local | AuthMethod::Ad)
    }
}

/// The mailbox layout (E-Post "per domain" vs "common box").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `<mailroot>/<domain>/<name>/`
    PerDomain,
    /// `<mailroot>/inbox/<name>/`: one namespace of names for all domains (R9).
    Shared,
}

impl Layout {
    pub fn parse(s: &str) -> Option<Layout> {
        match s {
            "per-domain" => Some(Layout::PerDomain),
            "shared" => Some(Layout::Shared),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Layout::PerDomain => "per-domain",
            Layout::Shared => "shared",
        }
    }

    /// The Maildir of `address` under `mailroot`. Only computes the path; the store makes it.
    pub fn maildir(self, mailroot: &Path, address: &Address) -> PathBuf {
        match self {
            Layout::PerDomain => mailroot
                .join(address.domain.as_str())
                .join(address.name.as_str()),
            Layout::Shared => mailroot.join("inbox").join(address.name.as_str()),
        }
    }
}

/// Where a `passwd-file` account's password record is: inside the mailbox's own directory, so
/// it is made with the mailbox and deleted with it (R5).
pub fn password_record(maildir: &Path) -> PathBuf {
    maildir.join("dirmail-passwd")
}

/// R1: a new store starts with method `local` and layout `per-domain`.
pub fn r1_initial_settings() -> (AuthMethod, Layout) {
    (AuthMethod::Local, Layout::PerDomain)
}

/// R2: the authentication method and the mailbox layout change only while no domain exists.
/// `what` is the property's description as the message shows it; `domains` how many exist.
pub fn r2_change_only_without_domains(domains: u64, what: &str) -> Result<(), Refusal> {
    if domains > 0 {
        return Err(refuse(
            "R2",
            format!(
                "The {what} can be changed only when no e-mail domains exist ({domains} {}). Delete every domain first.",
                exist(domains)
            ),
        ));
    }
    Ok(())
}

fn exist(count: u64) -> &'static str {
    if count == 1 { "exists" } else { "exist" }
}

/// R22: going further than the seeds, `set authentication ad` is allowed with domains present
/// once every mailbox has its Active Directory user (`migratetoad`), and keeps all mail.
/// `domains` is how many domains exist, `waiting` how many mailboxes have no AD user yet.
pub fn r22_switch_to_ad_allowed(domains: u64, waiting: u64) -> Result<(), Refusal> {
    if domains == 0 || waiting == 0 {
        return Ok(());
    }
    Err(refuse(
        "R22",
        format!(
            "The authentication method can be changed only when no e-mail domains exist ({domains} {}). Delete every domain first, or move every mailbox to Active Directory with `dirmail migratetoad NAME@DOMAIN` ({waiting} still to go) (R22).",
            exist(domains)
        ),
    ))
}

/// R3: under `local`, a mailbox name is unique across all domains. `existing` is a mailbox of
/// another domain with the same name, if the store has one.
pub fn r3_local_name_unique(
    method: AuthMethod,
    address: &Address,
    existing: Option<&Address>,
) -> Result<(), Refusal> {
    match existing {
        Some(existing) if method == AuthMethod::Local => Err(refuse(
            "R3",
            format!(
                "The mailbox {existing} already uses the name {}. With local authentication a mailbox name must be unique across all domains.",
                address.name
            ),
        )),
        _ => Ok(()),
    }
}

/// R5: under `passwd-file` an account exists only as the password record in its mailbox's
/// directory ([`password_record`]), made with the mailbox and deleted with it; so
/// `add NAME@DOMAIN` without `--create-user` has nothing to attach to.
pub fn r5_passwd_file_needs_create_user(
    method: AuthMethod,
    create_user: bool,
) -> Result<(), Refusal> {
    if method == AuthMethod::PasswdFile && !create_user {
        return Err(refuse(
            "R5",
            "With passwd-file authentication the password record is created with the mailbox: use --create-user PASSWORD.",
        ));
    }
    Ok(())
}

/// R6: SPA is offered only with `local` and `ad` ([`AuthMethod::offers_spa`]), so
/// `sparequired 1` is refused where it is not offered.
pub fn r6_spa_required_allowed(method: AuthMethod, required: bool) -> Result<(), Refusal> {
    if required && !method.offers_spa() {
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
/// otherwise the login fails like a wrong password (so `None`). `found` is every mailbox of
/// that name.
pub fn r8_resolve_bare_login<T>(mut found: Vec<T>) -> Option<T> {
    if found.len() == 1 { found.pop() } else { None }
}

/// R9: in the `shared` layout all domains share one namespace of names, whatever the method.
/// `existing` is a mailbox of another domain with the same name, if the store has one.
pub fn r9_shared_layout_name_unique(
    layout: Layout,
    address: &Address,
    existing: Option<&Address>,
) -> Result<(), Refusal> {
    match existing {
        Some(existing) if layout == Layout::Shared => Err(refuse(
            "R9",
            format!(
                "The mailbox {existing} already uses the name {}. In the shared mailbox layout a name can exist in only one domain.",
                address.name
            ),
        )),
        _ => Ok(()),
    }
}

/// R12: where `postmaster@` a domain goes: where the administrator pointed it (`dirmail alias
/// add postmaster@DOMAIN …`, or the old administrator mailbox) when set, else the first mailbox
/// created in the domain. A mailbox named `postmaster` is found before this is asked.
pub fn r12_postmaster<T>(pointed: Option<T>, first: Option<T>) -> Option<T> {
    pointed.or(first)
}

/// R13: a locked mailbox still receives mail, but its user cannot log in to read it. R14
/// extends this to domains: a locked domain locks retrieval for all its mailboxes. Returns the
/// rule that refuses retrieval, if any: the mailbox's own lock first.
pub fn r13_retrieval_lock(mailbox_locked: bool, domain_locked: bool) -> Option<&'static str> {
    if mailbox_locked {
        Some("R13")
    } else if domain_locked {
        Some("R14")
    } else {
        None
    }
}

/// R14: while a domain is locked, a single mailbox of it cannot be unlocked.
pub fn r14_unlock_inside_locked_domain(
    mailbox: &Address,
    domain_locked: bool,
) -> Result<(), Refusal> {
    if domain_locked {
        return Err(refuse(
            "R14",
            format!(
                "The domain {} is locked, so the mailbox {mailbox} cannot be unlocked on its own. Unlock the domain first.",
                mailbox.domain
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

/// The account a mailbox's quota is charged to (R15's bookkeeping): the one named by `--user`,
/// which must exist, or the mailbox's own. `found` is the account `user` names, as the caller
/// looked it up for the method (a `local` account, else a mailbox by address or bare name).
pub fn quota_owner(
    method: AuthMethod,
    mailbox: &Address,
    user: Option<&str>,
    found: Option<String>,
) -> Result<String, Refusal> {
    let Some(user) = user else {
        return Ok(match method {
            AuthMethod::Local => mailbox.name.to_string(),
            _ => mailbox.to_string(),
        });
    };
    found.ok_or_else(|| {
        refuse(
            "R15",
            format!("The quota cannot be charged to {user:?}: there is no such account."),
        )
    })
}

/// R21: a password never crosses an unencrypted connection. `ldaps://` is TLS from the first
/// byte; `ldap://` is always upgraded with StartTLS before any bind; anything else
/// (`ldapi://`, a typo) is refused. The scheme is compared without regard to case, as URLs
/// are. Returns whether StartTLS is needed.
pub fn r21_encrypted_transport(url: &str) -> Result<bool, Refusal> {
    let scheme_is = |scheme: &str| {
        url.get(..scheme.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
    };
    if scheme_is("ldaps://") {
        Ok(false)
    } else if scheme_is("ldap://") {
        Ok(true)
    } else {
        Err(refuse(
            "R21",
            format!(
                "directory.url {url:?} must start with ldaps:// or ldap:// (always with StartTLS), so no password crosses the network in clear (R21)"
            ),
        ))
    }
}

#[cfg(test)]
mod tests;
