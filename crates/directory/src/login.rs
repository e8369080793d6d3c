//! The one login decision, for every proof a client can give and every service that asks:
//! the identity asked for (authzid), `sparequired` (SPEC §7), the login name resolved to a
//! mailbox (R8 for bare names), the proof checked where it can be (the account source for a
//! password, the mail secret for APOP and CRAM-MD5, SPEC §10), the Active Directory account
//! behind it (R23, R27), then the locks (R13, R14). Everything that fails says how, typed: a
//! refusal with its reason for the log (R27), a lock, the directory unreachable (R24), or a
//! store that failed. What the client is told is the protocol's business.
//!
//! With a [`CredentialCache`], a clear-text password found right a moment ago is not checked
//! again, and one found wrong a moment ago is refused without a check; everything else (the
//! policy, the mailbox, its locks) is read afresh every time. Digest proofs (APOP, CRAM-MD5)
//! carry a challenge of their own session, so they never repeat and are not cached; under `ad`
//! the AD user's standing behind them is.

use rusqlite::Connection;

pub use super::RefusalReason;
use super::cache::CredentialCache;
use super::local::LocalAccounts;
use super::passwd_file::PasswdFile;
use super::{AdDirectory, AdError, Directory, DirectoryError, Verdict};
use crate::ad::Lookup;
use dirmail_proto::auth::{Credentials, Proof};
use dirmail_proto::names::{Address, MailboxName, Secret};
use dirmail_store as store;
use dirmail_store::rules::{r8_resolve_bare_login, r13_retrieval_lock};
use dirmail_store::{MailboxRow, Store, StoreError, secrets};

/// Who asks for a login; it decides what right credentials must still pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// SMTP AUTH, to send: a locked mailbox may still send (R13), and `sparequired` refuses
    /// clear-text proofs here as for POP3.
    Smtp,
    /// POP3, to read: the locks apply, and so does `sparequired` (SPEC §7).
    Pop3,
    /// IMAP, to read: the locks apply. `sparequired` is the POP3 service's property (SPEC §5.3,
    /// §7) and SPEC §8 does not name it, so IMAP logins are not under it (as before).
    Imap,
    /// `dirmail auth test`: a clear-text check as a reading client would get it, locks
    /// included, `sparequired` not (the administrator asks about the account, not the policy).
    Admin,
}

impl Service {
    /// R13/R14 lock retrieval, not sending.
    fn locks_apply(self) -> bool {
        !matches!(self, Service::Smtp)
    }

    /// Whether `sparequired 1` refuses clear-text proofs for this service.
    fn under_spa_required(self) -> bool {
        matches!(self, Service::Smtp | Service::Pop3)
    }
}

/// Why a login did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Wrong credentials, or an account that may not log in; the reason is for the log only
    /// (R27), the client hears one answer.
    #[error("login refused: {}", .0.describe())]
    Refused(RefusalReason),
    /// Right credentials, but the mailbox may not be read: `rule` is R13 (the mailbox is
    /// locked) or R14 (its domain is).
    #[error("locked by the administrator ({rule})")]
    Locked {
        mailbox: Box<MailboxRow>,
        rule: &'static str,
    },
    /// R24: the directory could not be reached, even after the retries. Temporary, never a
    /// wrong password.
    #[error("{0}")]
    Unavailable(DirectoryError),
    /// The store failed, or the directory answered something unexpected. Temporary too.
    #[error("{0}")]
    Failed(DirectoryError),
}

impl From<DirectoryError> for LoginError {
    fn from(e: DirectoryError) -> Self {
        match e {
            DirectoryError::Ad(AdError::Unavailable(_)) => LoginError::Unavailable(e),
            other => LoginError::Failed(other),
        }
    }
}

impl From<StoreError> for LoginError {
    fn from(e: StoreError) -> Self {
        LoginError::Failed(e.into())
    }
}

impl From<AdError> for LoginError {
    fn from(e: AdError) -> Self {
        DirectoryError::from(e).into()
    }
}

/// Decides a login: `Ok` with the mailbox whose owner proved who they are and may go on, else
/// why not. `ad` is the configured Active Directory, when there is one; `cache`, the server's
/// verified-credential cache, when it keeps one.
pub fn decide(
    store: &Store,
    ad: Option<&AdDirectory>,
    cache: Option<&CredentialCache>,
    service: Service,
    credentials: &Credentials,
) -> Result<MailboxRow, LoginError> {
    let Credentials {
        authzid,
        username,
        proof,
    } = credentials;
    // Acting as someone else (PLAIN's authzid) is not offered to anyone.
    if authzid
        .as_deref()
        .is_some_and(|z| !z.eq_ignore_ascii_case(username))
    {
        return Err(LoginError::Refused(RefusalReason::OtherIdentity));
    }
    let conn = store.conn();
    if proof.is_clear_text() && clear_text_refused(conn, service)? {
        return Err(LoginError::Refused(RefusalReason::SpaRequired));
    }
    // Read before anything is checked: an entry made by this check belongs to the state it
    // began in, so a change committed meanwhile leaves it out.
    let cached = match cache {
        Some(cache) => Some((cache, store::credential_generation(conn)?)),
        None => None,
    };
    if let (Some((cache, generation)), Proof::Password(password)) = (cached, proof)
        && let Some(reason) = cache.recent_failure(generation, username, password)
    {
        // Before the lookup, so a known and an unknown user are answered alike.
        tracing::debug!(user = %username, "refused from the login cache (the same password failed a moment ago)");
        return Err(LoginError::Refused(reason));
    }
    let remember_failure = |reason: RefusalReason| {
        if let (Some((cache, generation)), Proof::Password(password)) = (cached, proof) {
            cache.remember_failure(generation, username, password, reason);
        }
        LoginError::Refused(reason)
    };
    let mailbox = match resolve(conn, username)? {
        Ok(mailbox) => mailbox,
        Err(reason) => {
            if let Proof::Password(password) = proof {
                pretend_to_check(store, password)?;
            }
            return Err(remember_failure(reason));
        }
    };
    let address = mailbox.address.to_string();
    match proof {
        Proof::Password(password) => {
            let known = cached.is_some_and(|(cache, generation)| {
                cache.password_verified(generation, mailbox.id, &address, password)
            });
            if known {
                tracing::debug!(mailbox = %address, "password answered from the login cache");
            } else {
                let method = store::auth_method(conn)?;
                let dir = store::layout(conn)?.maildir(&store.mailroot, &mailbox.address);
                match Directory::open(method, conn, dir, ad)?.verify(&mailbox.address, password)? {
                    Verdict::Accepted => {
                        if let Some((cache, generation)) = cached {
                            cache.remember_password(generation, mailbox.id, &address, password);
                            if method == store::AuthMethod::Ad {
                                // The bind found the user enabled and in the mail group.
                                cache.remember_standing(generation, mailbox.id);
                            }
                        }
                    }
                    // The mailbox exists, so an account that does not is a missing account.
                    Verdict::Refused(RefusalReason::UnknownUser) => {
                        return Err(remember_failure(RefusalReason::NoAccount));
                    }
                    Verdict::Refused(reason) => return Err(remember_failure(reason)),
                }
            }
        }
        // SPEC §10: APOP and CRAM-MD5 against the mailbox's mail secret; under `ad` the AD
        // user must still be there, enabled and a mail user, as a password login would find.
        Proof::CramMd5 { .. } | Proof::Apop { .. } => {
            let Some(secret) = secrets::get(conn, &store.data_dir, mailbox.id)? else {
                return Err(LoginError::Refused(RefusalReason::NoMailSecret));
            };
            if !proof.verify(&secret) {
                return Err(LoginError::Refused(RefusalReason::BadPassword));
            }
            if store::auth_method(conn)? == store::AuthMethod::Ad {
                let known = cached
                    .is_some_and(|(cache, generation)| cache.standing(generation, mailbox.id));
                if !known {
                    let ad = ad.ok_or(DirectoryError::AdNotConfigured)?;
                    ad_user_may_log_in(ad, &mailbox.address)?.map_err(LoginError::Refused)?;
                    if let Some((cache, generation)) = cached {
                        cache.remember_standing(generation, mailbox.id);
                    }
                }
            }
        }
    }
    if service.locks_apply()
        && let Some(rule) = retrieval_lock(&mailbox)
    {
        return Err(LoginError::Locked {
            mailbox: Box::new(mailbox),
            rule,
        });
    }
    Ok(mailbox)
}

/// For a login name without a mailbox: makes the lookups a known user's check makes and checks
/// the password against a dummy record
/// ([`check_against_dummy`](super::password::check_against_dummy)), where the check is a hash
/// of this server's own (`local`, `passwd-file`). The refusal then takes as long as a wrong
/// password for a user that exists, and its timing does not tell which users exist. Under `ad`
/// the domain controller's bind is the check and costs what it costs; nothing is pretended.
fn pretend_to_check(store: &Store, password: &Secret) -> Result<(), DirectoryError> {
    let conn = store.conn();
    store::layout(conn)?;
    match store::auth_method(conn)? {
        // No account has an empty name: the lookup finds nothing and checks the dummy.
        store::AuthMethod::Local => {
            LocalAccounts::new(conn).verify("", password)?;
        }
        // Nor is there a record here: the same.
        store::AuthMethod::PasswdFile => {
            PasswdFile::new(store.mailroot.join(".no-such-mailbox")).verify(password)?;
        }
        store::AuthMethod::Ad => {}
    }
    Ok(())
}

/// `sparequired 1` refuses clear-text proofs for `service`. The POP3 driver asks up front, so
/// its session does not offer what would be refused.
pub fn clear_text_refused(conn: &Connection, service: Service) -> Result<bool, StoreError> {
    Ok(service.under_spa_required() && store::spa_required(conn)?)
}

/// R13 (the mailbox) or R14 (its domain): which lock, if any, keeps a mailbox from being read.
/// The one place the login decision asks; the rule itself lives in dirmail-rules.
fn retrieval_lock(mailbox: &MailboxRow) -> Option<&'static str> {
    r13_retrieval_lock(mailbox.locked, mailbox.domain_locked)
}

/// For a proof checked without binding as the user: the AD user behind `address` exists, is
/// enabled, and is in the mail group (R23).
fn ad_user_may_log_in(
    ad: &AdDirectory,
    address: &Address,
) -> Result<Result<(), RefusalReason>, AdError> {
    Ok(match ad.find_user(&address.to_string())? {
        Lookup::Found(user) if user.disabled => Err(RefusalReason::Disabled),
        Lookup::Found(user) => {
            if ad.r23_in_mail_group(&user.dn)? {
                Ok(())
            } else {
                Err(RefusalReason::NotInMailGroup)
            }
        }
        Lookup::NotFound | Lookup::Ambiguous => Err(RefusalReason::NoAccount),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_stop_reading_not_sending() {
        assert!(!Service::Smtp.locks_apply());
        for reading in [Service::Pop3, Service::Imap, Service::Admin] {
            assert!(reading.locks_apply());
        }
    }

    #[test]
    fn sparequired_covers_smtp_and_pop3_only() {
        assert!(Service::Smtp.under_spa_required());
        assert!(Service::Pop3.under_spa_required());
        assert!(!Service::Imap.under_spa_required());
        assert!(!Service::Admin.under_spa_required());
    }

    #[test]
    fn an_unreachable_directory_is_unavailable_not_a_refusal() {
        let unreachable = LoginError::from(AdError::Unavailable("no answer".into()));
        assert!(matches!(unreachable, LoginError::Unavailable(_)));
        let odd = LoginError::from(AdError::Failed("odd answer".into()));
        assert!(matches!(odd, LoginError::Failed(_)));
        let unconfigured = LoginError::from(DirectoryError::AdNotConfigured);
        assert!(matches!(unconfigured, LoginError::Failed(_)));
    }
}
