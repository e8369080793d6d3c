//! One enum over the account sources (docs/spec.md §2): the server's own account database
//! (`local`), the password record in each mailbox's directory (`passwd-file`), and later Active
//! Directory. Adding a source changes the matches in this file, not the callers.

pub mod ad;
pub mod cache;
mod ldap_pool;
pub mod local;
pub mod login;
pub mod passwd_file;
pub mod password;
pub mod timing;

use std::path::PathBuf;

use rusqlite::Connection;

pub use ad::AdError;
use ad::{AdDirectory, AdUser, BindVerdict, Lookup};
use dirmail_proto::names::{Address, Secret};
pub use dirmail_store::AuthMethod;
use dirmail_store::StoreError;

/// The outcome of a password check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    Refused(RefusalReason),
}

/// Why a login was refused, told apart for the log only (R27); the client hears one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    UnknownUser,
    /// R8: a bare name that names more than one mailbox.
    AmbiguousBareName,
    /// The mailbox exists but its account does not (deleted from the directory).
    NoAccount,
    BadPassword,
    /// R23: an AD user outside the mail group.
    NotInMailGroup,
    Disabled,
    /// docs/spec.md §10: a digest login (APOP, CRAM-MD5) for a mailbox without a mail secret.
    NoMailSecret,
    /// SPEC §7: a clear-text proof while `sparequired` is 1.
    SpaRequired,
    /// The client asked to act as an identity other than its own (PLAIN's authzid).
    OtherIdentity,
    LockedOut,
    PasswordExpired,
    MustChangePassword,
    AccountExpired,
}

impl RefusalReason {
    /// A short, stable name for the metrics page's `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            RefusalReason::UnknownUser => "unknown_user",
            RefusalReason::AmbiguousBareName => "ambiguous_bare_name",
            RefusalReason::NoAccount => "no_account",
            RefusalReason::BadPassword => "bad_password",
            RefusalReason::NotInMailGroup => "not_in_mail_group",
            RefusalReason::Disabled => "disabled",
            RefusalReason::NoMailSecret => "no_mail_secret",
            RefusalReason::SpaRequired => "spa_required",
            RefusalReason::OtherIdentity => "other_identity",
            RefusalReason::LockedOut => "locked_out",
            RefusalReason::PasswordExpired => "password_expired",
            RefusalReason::MustChangePassword => "must_change_password",
            RefusalReason::AccountExpired => "account_expired",
        }
    }

    /// R27: the words the log uses.
    pub fn describe(self) -> &'static str {
        match self {
            RefusalReason::UnknownUser => "unknown user",
            RefusalReason::AmbiguousBareName => {
                "the bare name names more than one mailbox; log in as name@domain"
            }
            RefusalReason::NoAccount => "the mailbox has no account",
            RefusalReason::BadPassword => "bad password",
            RefusalReason::NotInMailGroup => "not in the mail group",
            RefusalReason::Disabled => "account disabled",
            RefusalReason::NoMailSecret => "no mail secret for a digest login",
            RefusalReason::SpaRequired => "clear-text login while sparequired is 1",
            RefusalReason::OtherIdentity => "asked to act as another identity",
            RefusalReason::LockedOut => "account locked out",
            RefusalReason::PasswordExpired => "password expired",
            RefusalReason::MustChangePassword => "password must be changed",
            RefusalReason::AccountExpired => "account expired",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Ad(#[from] AdError),
    /// The store uses `ad` but `[directory]` is missing or unusable.
    #[error("Active Directory authentication needs [directory] configured in dirmail.toml")]
    AdNotConfigured,
}

/// An account source, opened for one operation. `Local` works inside the caller's transaction so
/// an account and its mailbox are made (or not) together.
pub enum Directory<'a> {
    Local(local::LocalAccounts<'a>),
    PasswdFile(passwd_file::PasswdFile),
    Ad(&'a AdDirectory),
}

impl<'a> Directory<'a> {
    /// `maildir` is where the mailbox in question lives (the password file's home); `ad` is the
    /// configured Active Directory, if any.
    pub fn open(
        method: AuthMethod,
        conn: &'a Connection,
        maildir: PathBuf,
        ad: Option<&'a AdDirectory>,
    ) -> Result<Directory<'a>, DirectoryError> {
        match method {
            AuthMethod::Local => Ok(Directory::Local(local::LocalAccounts::new(conn))),
            AuthMethod::PasswdFile => {
                Ok(Directory::PasswdFile(passwd_file::PasswdFile::new(maildir)))
            }
            AuthMethod::Ad => ad.map(Directory::Ad).ok_or(DirectoryError::AdNotConfigured),
        }
    }

    /// The AD user of a mailbox: the one whose UPN is its address.
    pub fn ad_user(ad: &AdDirectory, address: &Address) -> Result<Option<AdUser>, DirectoryError> {
        Ok(match ad.find_user(&address.to_string())? {
            Lookup::Found(user) => Some(user),
            Lookup::NotFound | Lookup::Ambiguous => None,
        })
    }

    pub fn account_exists(&self, address: &Address) -> Result<bool, DirectoryError> {
        Ok(match self {
            Directory::Local(db) => db.find(address.name.as_str())?.is_some(),
            Directory::PasswdFile(file) => file.exists(),
            Directory::Ad(ad) => Self::ad_user(ad, address)?.is_some(),
        })
    }

    /// Creates the account for a new mailbox (`add --create-user`); under `ad` in the shared
    /// layout it also joins `domain_group` (R26).
    pub fn create_account(
        &self,
        address: &Address,
        password: &Secret,
        domain_group: Option<&str>,
    ) -> Result<(), DirectoryError> {
        match self {
            Directory::Local(db) => db.create(
                address.name.as_str(),
                password,
                dirmail_rules::r7_groups_of_created_accounts(),
            )?,
            Directory::PasswdFile(file) => file.write(address, password)?,
            Directory::Ad(ad) => {
                ad.create_user(address, password, domain_group)?;
            }
        }
        Ok(())
    }

    pub fn delete_account(&self, address: &Address) -> Result<bool, DirectoryError> {
        Ok(match self {
            Directory::Local(db) => db.delete(address.name.as_str())?,
            Directory::PasswdFile(file) => file.remove()?,
            Directory::Ad(ad) => match Self::ad_user(ad, address)? {
                Some(user) => {
                    ad.delete_user(&user)?;
                    true
                }
                None => false,
            },
        })
    }

    pub fn change_password(
        &self,
        address: &Address,
        password: &Secret,
    ) -> Result<bool, DirectoryError> {
        Ok(match self {
            Directory::Local(db) => db.set_password(address.name.as_str(), password)?,
            Directory::PasswdFile(file) => {
                if !file.exists() {
                    return Ok(false);
                }
                file.write(address, password)?;
                true
            }
            Directory::Ad(ad) => match Self::ad_user(ad, address)? {
                Some(user) => {
                    ad.set_password(&user, password)?;
                    true
                }
                None => false,
            },
        })
    }

    pub fn verify(&self, address: &Address, password: &Secret) -> Result<Verdict, DirectoryError> {
        Ok(match self {
            Directory::Local(db) => db.verify(address.name.as_str(), password)?,
            Directory::PasswdFile(file) => file.verify(password)?,
            Directory::Ad(ad) => {
                let user = match ad.find_user(&address.to_string())? {
                    Lookup::Found(user) => user,
                    Lookup::NotFound => return Ok(Verdict::Refused(RefusalReason::NoAccount)),
                    // docs/spec.md §9: a search that matches more than one object refuses the
                    // login.
                    Lookup::Ambiguous => return Ok(Verdict::Refused(RefusalReason::UnknownUser)),
                };
                if !ad.r23_in_mail_group(&user.dn)? {
                    return Ok(Verdict::Refused(RefusalReason::NotInMailGroup));
                }
                match ad.bind_as(&user, password)? {
                    BindVerdict::Accepted => Verdict::Accepted,
                    BindVerdict::BadPassword => Verdict::Refused(RefusalReason::BadPassword),
                    BindVerdict::Disabled => Verdict::Refused(RefusalReason::Disabled),
                    BindVerdict::LockedOut => Verdict::Refused(RefusalReason::LockedOut),
                    BindVerdict::PasswordExpired => {
                        Verdict::Refused(RefusalReason::PasswordExpired)
                    }
                    BindVerdict::MustChangePassword => {
                        Verdict::Refused(RefusalReason::MustChangePassword)
                    }
                    BindVerdict::AccountExpired => Verdict::Refused(RefusalReason::AccountExpired),
                }
            }
        })
    }

    /// The account name for Secure Password Authentication, where SPA is offered (R6): the
    /// name under `local`, the pre-Windows-2000 name under `ad` (R4), none under `passwd-file`.
    pub fn spa_account_name(&self, address: &Address) -> Result<Option<String>, DirectoryError> {
        Ok(match self {
            Directory::Local(_) => Some(address.name.to_string()),
            Directory::PasswdFile(_) => None,
            Directory::Ad(ad) => Self::ad_user(ad, address)?.map(|u| u.sam_account_name),
        })
    }
}
