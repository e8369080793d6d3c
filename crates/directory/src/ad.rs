//! `ad`: Active Directory over LDAP (docs/spec.md §9), with ldap3 and rustls.
//!
//! Lookups run as the service account (`bind_dn`); a password is checked by binding as the user.
//! Every connection is encrypted (R21): `ldaps://`, or `ldap://` with StartTLS, and the DC's
//! certificate is verified against `ca_file` (or the system roots). A DC that cannot be reached
//! is retried every `retry_interval`, at most `retry_count` times (R24), and then reported as
//! [`AdError::Unavailable`] — never as a wrong password.
//!
//! Connections are kept between operations in two pools: one bound as the service account for
//! lookups and changes, one for users' binds (whose identity changes with every login).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ldap3::{LdapConn, LdapConnSettings, LdapError, Mod, Scope, SearchEntry, ldap_escape};
use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::ldap_pool::LdapPool;
use dirmail_config::DirectoryConfig;
use dirmail_proto::names::{Address, Secret};
use dirmail_rules::r21_encrypted_transport;

/// `userAccountControl`: a normal account; with 0x2 it is disabled.
const UAC_NORMAL_ACCOUNT: u32 = 0x200;
const UAC_ACCOUNTDISABLE: u32 = 0x2;
/// `groupType` of a domain-local security group (R23: the mail group).
const GROUP_DOMAIN_LOCAL_SECURITY: i32 = 0x8000_0004_u32 as i32;
/// LDAP_MATCHING_RULE_IN_CHAIN: membership through nested groups counts (R23).
const IN_CHAIN: &str = "1.2.840.113556.1.4.1941";
/// The longest pre-Windows-2000 logon name (R4).
const SAM_MAX: usize = 20;

/// The AD bind sub-codes (the `data` field of result 49), as Samba and Windows send them.
const DATA_WRONG_PASSWORD: u32 = 0x52e;
const DATA_PASSWORD_EXPIRED: u32 = 0x532;
const DATA_ACCOUNT_DISABLED: u32 = 0x533;
const DATA_ACCOUNT_EXPIRED: u32 = 0x701;
const DATA_MUST_CHANGE: u32 = 0x773;
const DATA_LOCKED_OUT: u32 = 0x775;

#[derive(Debug, thiserror::Error)]
pub enum AdError {
    /// R24: the directory could not be reached, even after the retries. Temporary.
    #[error("Active Directory is unavailable: {0}")]
    Unavailable(String),
    /// R21 and other settings that cannot work; found at start.
    #[error("the [directory] settings cannot work: {0}")]
    Config(String),
    /// AD refused an operation (R25: a password policy, say); `message` says why in words.
    #[error("{message}")]
    Refused { message: String },
    /// The directory answered something unexpected.
    #[error("Active Directory: {0}")]
    Failed(String),
}

/// Why AD refused a user's password or account (R27), or that it accepted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindVerdict {
    Accepted,
    BadPassword,
    Disabled,
    LockedOut,
    PasswordExpired,
    MustChangePassword,
    AccountExpired,
}

/// A user as the mail server needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdUser {
    pub dn: String,
    pub upn: Option<String>,
    pub sam_account_name: String,
    pub disabled: bool,
}

/// The result of looking a login name up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(AdUser),
    NotFound,
    /// More than one object matched: the login is refused (docs/spec.md §9).
    Ambiguous,
}

/// An Active Directory, as `[directory]` describes it.
pub struct AdDirectory {
    config: DirectoryConfig,
    tls: Arc<ClientConfig>,
    starttls: bool,
    /// Connections bound as the service account.
    lookups: LdapPool,
    /// Connections last bound as some user, for checking passwords.
    user_binds: LdapPool,
    /// The mail group's DN as last found, and when: every login asks (R23), and it rarely moves.
    mail_group: Mutex<Option<(String, Instant)>>,
}

/// How long a found mail group DN is trusted before it is looked up again.
const MAIL_GROUP_FOR: Duration = Duration::from_secs(60);

/// Which connections an operation runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// Bound as the service account before the operation.
    Lookup,
    /// The operation binds as a user itself.
    UserBind,
}

impl std::fmt::Debug for AdDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdDirectory")
            .field("url", &self.config.url)
            .field("base_dn", &self.config.base_dn)
            .finish_non_exhaustive()
    }
}

impl AdDirectory {
    /// Checks the settings (R21, the CA, the service account) without contacting the DC.
    pub fn new(config: &DirectoryConfig) -> Result<AdDirectory, AdError> {
        let starttls =
            r21_encrypted_transport(&config.url).map_err(|r| AdError::Config(r.message))?;
        if config.bind_dn.is_none() || config.bind_password.is_none() {
            return Err(AdError::Config(
                "directory.bind_dn and directory.bind_password (a service account) are needed to look users up".into(),
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        match &config.ca_file {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path).map_err(|e| {
                    AdError::Config(format!("directory.ca_file {}: {e}", path.display()))
                })?;
                for cert in certs {
                    let cert = cert.map_err(|e| {
                        AdError::Config(format!("directory.ca_file {}: {e}", path.display()))
                    })?;
                    roots.add(cert).map_err(|e| {
                        AdError::Config(format!("directory.ca_file {}: {e}", path.display()))
                    })?;
                }
            }
            None => {
                return Err(AdError::Config(
                    "directory.ca_file is needed to verify the domain controller's certificate"
                        .into(),
                ));
            }
        }
        let tls = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| AdError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(AdDirectory {
            config: config.clone(),
            tls: Arc::new(tls),
            starttls,
            lookups: LdapPool::default(),
            user_binds: LdapPool::default(),
            mail_group: Mutex::new(None),
        })
    }

    pub fn config(&self) -> &DirectoryConfig {
        &self.config
    }

    fn attempt_timeout(&self) -> Duration {
        self.config
            .retry_interval
            .clamp(Duration::from_secs(1), Duration::from_secs(10))
    }

    fn connect(&self) -> Result<LdapConn, LdapError> {
        let settings = LdapConnSettings::new()
            .set_conn_timeout(self.attempt_timeout())
            .set_starttls(self.starttls)
            .set_config(Arc::clone(&self.tls));
        LdapConn::with_settings(settings, &self.config.url)
    }

    /// R24: runs `op` bound as the service account, retrying every `retry_interval` at
    /// most `retry_count` times while the directory cannot be reached. An answer from the
    /// directory (even a refusal) is not retried.
    pub fn r24_with_retries<T>(
        &self,
        op: impl FnMut(&mut LdapConn) -> Result<T, LdapError>,
    ) -> Result<T, AdError> {
        self.with_retries_on(Purpose::Lookup, op)
    }

    fn pool(&self, purpose: Purpose) -> &LdapPool {
        match purpose {
            Purpose::Lookup => &self.lookups,
            Purpose::UserBind => &self.user_binds,
        }
    }

    /// Runs `op` on a kept connection when there is one, else on new ones under R24; how long
    /// it took, retries included, goes to the purpose's histogram ([`crate::timing`]).
    fn with_retries_on<T>(
        &self,
        purpose: Purpose,
        op: impl FnMut(&mut LdapConn) -> Result<T, LdapError>,
    ) -> Result<T, AdError> {
        let started = Instant::now();
        let result = self.with_retries_untimed(purpose, op);
        let histogram = match purpose {
            Purpose::Lookup => crate::timing::ad_lookups(),
            Purpose::UserBind => crate::timing::ad_binds(),
        };
        histogram.observe(started.elapsed());
        result
    }

    fn with_retries_untimed<T>(
        &self,
        purpose: Purpose,
        mut op: impl FnMut(&mut LdapConn) -> Result<T, LdapError>,
    ) -> Result<T, AdError> {
        let pool = self.pool(purpose);
        if let Some(mut ldap) = pool.take() {
            match op(&mut ldap) {
                Ok(value) => {
                    pool.give(ldap);
                    return Ok(value);
                }
                // A kept connection the DC has dropped (idle, or a restart): start afresh at
                // once, and do not count it as one of R24's attempts.
                Err(e) if is_transient(&e) => {
                    tracing::debug!("a kept directory connection failed: {e}");
                    pool.clear();
                }
                Err(e) => {
                    pool.give(ldap);
                    return Err(answer_error(e));
                }
            }
        }
        let mut last = String::new();
        for attempt in 0..=self.config.retry_count {
            if attempt > 0 {
                std::thread::sleep(self.config.retry_interval);
            }
            let result = self.connect().and_then(|mut ldap| {
                if purpose == Purpose::Lookup {
                    self.service_bind(&mut ldap)?;
                }
                match op(&mut ldap) {
                    Ok(value) => Ok((value, ldap)),
                    Err(e) => {
                        let _ = ldap.unbind();
                        Err(e)
                    }
                }
            });
            match result {
                Ok((value, ldap)) => {
                    pool.give(ldap);
                    return Ok(value);
                }
                Err(e) if is_transient(&e) => {
                    tracing::debug!(attempt, "directory unreachable: {e}");
                    last = e.to_string();
                }
                Err(e) => return Err(answer_error(e)),
            }
        }
        Err(AdError::Unavailable(format!(
            "{} did not answer after {} attempts: {last}",
            self.config.url,
            self.config.retry_count + 1
        )))
    }

    /// Connections kept for lookups and for users' binds (for tests and the log).
    pub fn kept_connections(&self) -> (usize, usize) {
        (self.lookups.len(), self.user_binds.len())
    }

    /// Binds as the service account; every lookup starts here.
    fn service_bind(&self, ldap: &mut LdapConn) -> Result<(), LdapError> {
        let dn = self.config.bind_dn.as_deref().unwrap_or_default();
        let password = self
            .config
            .bind_password
            .as_ref()
            .map(Secret::expose)
            .unwrap_or_default();
        ldap.with_timeout(self.attempt_timeout())
            .simple_bind(dn, password)?
            .success()?;
        Ok(())
    }

    fn users_container(&self) -> String {
        self.config
            .users_container
            .clone()
            .unwrap_or_else(|| format!("CN=Users,{}", self.config.base_dn))
    }

    /// Finds the user whose UPN or pre-Windows-2000 name is `login`. Values are escaped (RFC
    /// 4515); more than one match is [`Lookup::Ambiguous`].
    pub fn find_user(&self, login: &str) -> Result<Lookup, AdError> {
        let filter = user_filter(login);
        self.r24_with_retries(|ldap| {
            let (entries, _) = ldap
                .with_timeout(self.attempt_timeout())
                .search(
                    &self.config.base_dn,
                    Scope::Subtree,
                    &filter,
                    vec!["userPrincipalName", "sAMAccountName", "userAccountControl"],
                )?
                .success()?;
            let mut entries = entries.into_iter();
            Ok(match (entries.next(), entries.next()) {
                (None, _) => Lookup::NotFound,
                (Some(entry), None) => Lookup::Found(user_from(SearchEntry::construct(entry))),
                (Some(_), Some(_)) => Lookup::Ambiguous,
            })
        })
    }

    /// The mail group's DN, if the group exists.
    fn mail_group_dn(&self, ldap: &mut LdapConn) -> Result<Option<String>, LdapError> {
        let filter = format!(
            "(&(objectClass=group)(|(sAMAccountName={0})(cn={0})))",
            ldap_escape(self.config.mail_group.as_str())
        );
        let (entries, _) = ldap
            .with_timeout(self.attempt_timeout())
            .search(&self.config.base_dn, Scope::Subtree, &filter, vec!["dn"])?
            .success()?;
        Ok(entries
            .into_iter()
            .next()
            .map(|e| SearchEntry::construct(e).dn))
    }

    /// [`Self::mail_group_dn`], as found within [`MAIL_GROUP_FOR`]. A missing group is looked up
    /// every time, so one made meanwhile counts at once.
    fn mail_group_dn_recent(&self, ldap: &mut LdapConn) -> Result<Option<String>, LdapError> {
        let lock = || self.mail_group.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((dn, since)) = &*lock()
            && since.elapsed() < MAIL_GROUP_FOR
        {
            return Ok(Some(dn.clone()));
        }
        // Not under the lock: a DC that hangs must not make every login wait in line.
        let found = self.mail_group_dn(ldap)?;
        *lock() = found.clone().map(|dn| (dn, Instant::now()));
        Ok(found)
    }

    /// `set authentication ad` creates the mail group (a domain-local security group) in the
    /// users container when it is missing (R23). Returns true when it made it.
    pub fn ensure_mail_group(&self) -> Result<bool, AdError> {
        self.r24_with_retries(|ldap| {
            if self.mail_group_dn(ldap)?.is_some() {
                return Ok(false);
            }
            let name = self.config.mail_group.as_str();
            self.add_group(ldap, name)
        })
    }

    /// R23: only members of the mail group, directly or through nested groups, are mail users.
    pub fn r23_in_mail_group(&self, user_dn: &str) -> Result<bool, AdError> {
        self.r24_with_retries(|ldap| {
            let Some(group) = self.mail_group_dn_recent(ldap)? else {
                return Ok(false);
            };
            let filter = format!("(memberOf:{IN_CHAIN}:={})", ldap_escape(group.as_str()));
            let (entries, _) = ldap
                .with_timeout(self.attempt_timeout())
                .search(user_dn, Scope::Base, &filter, vec!["dn"])?
                .success()?;
            Ok(!entries.is_empty())
        })
    }

    /// Checks a password by binding as the user; AD's sub-codes become R27 reasons.
    pub fn bind_as(&self, user: &AdUser, password: &Secret) -> Result<BindVerdict, AdError> {
        if password.expose().is_empty() {
            // An empty password would be an unauthenticated bind, which "succeeds".
            return Ok(BindVerdict::BadPassword);
        }
        self.with_retries_on(Purpose::UserBind, |ldap| {
            let result = ldap
                .with_timeout(self.attempt_timeout())
                .simple_bind(&user.dn, password.expose())?;
            if result.rc == 0 {
                return Ok(BindVerdict::Accepted);
            }
            if result.rc != 49 {
                return Err(LdapError::LdapResult { result });
            }
            Ok(r27_bind_refusal(data_subcode(&result.text)))
        })
    }

    /// R4: the pre-Windows-2000 name for `address`: the name itself when free, else
    /// `name-<first label of the domain>`, else that with a number, all cut to 20 characters.
    pub fn r4_sam_account_name(&self, address: &Address) -> Result<String, AdError> {
        let base: String = address.name.as_str().chars().take(SAM_MAX).collect();
        let label = address.domain.as_str().split('.').next().unwrap_or("");
        let mut candidates = vec![base.clone()];
        let with_domain: String = format!("{}-{label}", address.name)
            .chars()
            .take(SAM_MAX)
            .collect();
        candidates.push(with_domain.clone());
        for n in 2..1000 {
            let suffix = n.to_string();
            let keep = SAM_MAX.saturating_sub(suffix.len());
            candidates.push(format!(
                "{}{suffix}",
                with_domain.chars().take(keep).collect::<String>()
            ));
        }
        self.r24_with_retries(|ldap| {
            for candidate in &candidates {
                let filter = format!("(sAMAccountName={})", ldap_escape(candidate.as_str()));
                let (entries, _) = ldap
                    .with_timeout(self.attempt_timeout())
                    .search(&self.config.base_dn, Scope::Subtree, &filter, vec!["dn"])?
                    .success()?;
                if entries.is_empty() {
                    return Ok(Some(candidate.clone()));
                }
            }
            Ok(None)
        })?
        .ok_or_else(|| AdError::Refused {
            message: format!("no free pre-Windows-2000 logon name for {address}"),
        })
    }

    /// `add NAME@DOMAIN --create-user`: the AD user with UPN `name@domain`, a sAMAccountName
    /// per R4, the password (over TLS), enabled, in the mail group (and in `domain_group` under
    /// R26). All or nothing (R25): a password AD refuses leaves no user behind.
    pub fn create_user(
        &self,
        address: &Address,
        password: &Secret,
        domain_group: Option<&str>,
    ) -> Result<AdUser, AdError> {
        let sam = self.r4_sam_account_name(address)?;
        let upn = address.to_string();
        let dn = format!(
            "CN={},{}",
            ldap3::dn_escape(upn.as_str()),
            self.users_container()
        );
        let quoted: Vec<u8> = format!("\"{}\"", password.expose())
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let uac = UAC_NORMAL_ACCOUNT.to_string();
        let outcome = self.r24_with_retries(|ldap| {
            // One add with the password, so AD's policy check happens before anything exists.
            let attrs: Vec<(Vec<u8>, HashSet<Vec<u8>>)> = vec![
                (
                    b"objectClass".to_vec(),
                    HashSet::from([
                        b"top".to_vec(),
                        b"person".to_vec(),
                        b"organizationalPerson".to_vec(),
                        b"user".to_vec(),
                    ]),
                ),
                (b"cn".to_vec(), HashSet::from([upn.as_bytes().to_vec()])),
                (
                    b"sAMAccountName".to_vec(),
                    HashSet::from([sam.as_bytes().to_vec()]),
                ),
                (
                    b"userPrincipalName".to_vec(),
                    HashSet::from([upn.as_bytes().to_vec()]),
                ),
                (b"unicodePwd".to_vec(), HashSet::from([quoted.clone()])),
                (
                    b"userAccountControl".to_vec(),
                    HashSet::from([uac.as_bytes().to_vec()]),
                ),
            ];
            ldap.with_timeout(self.attempt_timeout())
                .add(&dn, attrs)?
                .success()?;
            let mut groups = vec![
                self.mail_group_dn(ldap)?
                    .ok_or_else(|| missing_group(&self.config.mail_group))?,
            ];
            if let Some(name) = domain_group {
                groups.push(
                    self.group_dn(ldap, name)?
                        .ok_or_else(|| missing_group(name))?,
                );
            }
            for group in groups {
                let added = ldap
                    .with_timeout(self.attempt_timeout())
                    .modify(
                        &group,
                        vec![Mod::Add("member", HashSet::from([dn.as_str()]))],
                    )
                    .and_then(|r| r.success());
                if let Err(e) = added {
                    // All or nothing: take the half-made user back.
                    let _ = ldap.delete(&dn);
                    return Err(e);
                }
            }
            Ok(())
        });
        match outcome {
            Ok(()) => Ok(AdUser {
                dn,
                upn: Some(upn),
                sam_account_name: sam,
                disabled: false,
            }),
            Err(e) => Err(r25_password_policy(e, "Nothing was created.")),
        }
    }

    fn group_dn(&self, ldap: &mut LdapConn, name: &str) -> Result<Option<String>, LdapError> {
        let filter = format!(
            "(&(objectClass=group)(|(sAMAccountName={0})(cn={0})))",
            ldap_escape(name)
        );
        let (entries, _) = ldap
            .with_timeout(self.attempt_timeout())
            .search(&self.config.base_dn, Scope::Subtree, &filter, vec!["dn"])?
            .success()?;
        Ok(entries
            .into_iter()
            .next()
            .map(|e| SearchEntry::construct(e).dn))
    }

    /// The security group named after a domain, made by `add DOMAIN` under the shared layout
    /// (R26). Returns true when it made it.
    pub fn ensure_domain_group(&self, name: &str) -> Result<bool, AdError> {
        self.r24_with_retries(|ldap| {
            if self.group_dn(ldap, name)?.is_some() {
                return Ok(false);
            }
            self.add_group(ldap, name)
        })
    }

    /// Makes the domain-local security group `name` in the users container; false when another
    /// administrator made it in the meantime (entryAlreadyExists), which is as good.
    fn add_group(&self, ldap: &mut LdapConn, name: &str) -> Result<bool, LdapError> {
        let dn = format!("CN={},{}", ldap3::dn_escape(name), self.users_container());
        let group_type = GROUP_DOMAIN_LOCAL_SECURITY.to_string();
        let made = ldap.with_timeout(self.attempt_timeout()).add(
            &dn,
            vec![
                ("objectClass", HashSet::from(["top", "group"])),
                ("cn", HashSet::from([name])),
                ("sAMAccountName", HashSet::from([name])),
                ("groupType", HashSet::from([group_type.as_str()])),
            ],
        )?;
        if made.rc == 68 {
            return Ok(false);
        }
        made.success()?;
        Ok(true)
    }

    /// R26: in the `shared` layout, an account's domain is the security group named after the
    /// domain. Returns the names among `domains` whose group has `user` as a (direct) member:
    /// none means the account has no domain, two or more are a conflict.
    pub fn r26_domain_groups(
        &self,
        user: &AdUser,
        domains: &[String],
    ) -> Result<Vec<String>, AdError> {
        self.r24_with_retries(|ldap| {
            let (entries, _) = ldap
                .with_timeout(self.attempt_timeout())
                .search(&user.dn, Scope::Base, "(objectClass=*)", vec!["memberOf"])?
                .success()?;
            let member_of: Vec<String> = entries
                .into_iter()
                .next()
                .map(|e| {
                    SearchEntry::construct(e)
                        .attrs
                        .remove("memberOf")
                        .unwrap_or_default()
                })
                .unwrap_or_default();
            let mut found = Vec::new();
            for domain in domains {
                if let Some(dn) = self.group_dn(ldap, domain)?
                    && member_of.iter().any(|m| m.eq_ignore_ascii_case(&dn))
                {
                    found.push(domain.clone());
                }
            }
            Ok(found)
        })
    }

    /// An administrator's password reset (`changepwd`); AD's policy still applies (R25).
    pub fn set_password(&self, user: &AdUser, password: &Secret) -> Result<(), AdError> {
        let quoted: Vec<u8> = format!("\"{}\"", password.expose())
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let result = self.r24_with_retries(|ldap| {
            ldap.with_timeout(self.attempt_timeout())
                .modify(
                    &user.dn,
                    vec![Mod::Replace(
                        b"unicodePwd".to_vec(),
                        HashSet::from([quoted.clone()]),
                    )],
                )?
                .success()?;
            Ok(())
        });
        result.map_err(|e| r25_password_policy(e, "The old password still applies."))
    }

    /// `delete NAME@DOMAIN --delete-user`.
    pub fn delete_user(&self, user: &AdUser) -> Result<(), AdError> {
        self.r24_with_retries(|ldap| {
            ldap.with_timeout(self.attempt_timeout())
                .delete(&user.dn)?
                .success()?;
            Ok(())
        })
    }

    /// R23: puts an existing user in the mail group (`migratetoad` linking a user). Returns
    /// true when it was not a member yet.
    pub fn add_to_mail_group(&self, user: &AdUser) -> Result<bool, AdError> {
        if self.r23_in_mail_group(&user.dn)? {
            return Ok(false);
        }
        self.r24_with_retries(|ldap| {
            let group = self
                .mail_group_dn(ldap)?
                .ok_or_else(|| missing_group(&self.config.mail_group))?;
            ldap.with_timeout(self.attempt_timeout())
                .modify(
                    &group,
                    vec![Mod::Add("member", HashSet::from([user.dn.as_str()]))],
                )?
                .success()?;
            Ok(true)
        })
    }

    /// Connects and binds as the service account: `set authentication ad` checks this first.
    pub fn check_reachable(&self) -> Result<(), AdError> {
        self.r24_with_retries(|ldap| self.service_bind(ldap))
    }
}

/// The search filter for a login name: its UPN or its pre-Windows-2000 name, users only. The
/// value is escaped (RFC 4515), so no login can change the filter's structure.
pub fn user_filter(login: &str) -> String {
    let value = ldap_escape(login);
    format!(
        "(&(objectCategory=person)(objectClass=user)(|(userPrincipalName={value})(sAMAccountName={value})))"
    )
}

fn user_from(entry: SearchEntry) -> AdUser {
    let first = |name: &str| entry.attrs.get(name).and_then(|v| v.first()).cloned();
    let uac: u32 = first("userAccountControl")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    AdUser {
        upn: first("userPrincipalName"),
        sam_account_name: first("sAMAccountName").unwrap_or_default(),
        disabled: uac & UAC_ACCOUNTDISABLE != 0,
        dn: entry.dn,
    }
}

fn missing_group(name: &str) -> LdapError {
    LdapError::LdapResult {
        result: ldap3::LdapResult {
            rc: 32,
            matched: String::new(),
            text: format!("the group {name} does not exist in Active Directory"),
            refs: Vec::new(),
            ctrls: Vec::new(),
        },
    }
}

/// The hexadecimal sub-code after `data ` in an AD bind diagnostic.
pub fn data_subcode(text: &str) -> Option<u32> {
    let start = text.find("data ")? + "data ".len();
    let hex: String = text[start..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    u32::from_str_radix(&hex, 16).ok()
}

/// A connection-level failure: worth retrying (R24). An LDAP answer is not, except "busy" and
/// "unavailable".
fn is_transient(e: &LdapError) -> bool {
    match e {
        LdapError::LdapResult { result } => matches!(result.rc, 51 | 52),
        _ => true,
    }
}

fn answer_error(e: LdapError) -> AdError {
    match e {
        LdapError::LdapResult { result } => AdError::Failed(format!(
            "result {}: {}",
            result.rc,
            result.text.trim_end_matches('\0')
        )),
        other => AdError::Failed(other.to_string()),
    }
}

/// R25: when AD refuses a password for its policy (length, complexity, history), the command
/// fails with a refusal that says so in words and what was left as it was (`kept`: the callers
/// undo or never make anything half-made). Any other error stays as it is.
fn r25_password_policy(error: AdError, kept: &str) -> AdError {
    match error {
        AdError::Failed(text) if is_policy_refusal(&text) => AdError::Refused {
            message: format!(
                "Active Directory refused the password: it does not meet the domain's password policy (length, complexity or history). {kept} ({text})"
            ),
        },
        other => other,
    }
}

/// R27: why AD refused a user's bind (LDAP result 49), from the `data` sub-code of its text,
/// so the log tells the reasons apart. Disabled, expired and locked-out accounts cannot log in;
/// an unknown sub-code counts as a wrong password.
fn r27_bind_refusal(subcode: Option<u32>) -> BindVerdict {
    match subcode {
        Some(DATA_ACCOUNT_DISABLED) => BindVerdict::Disabled,
        Some(DATA_LOCKED_OUT) => BindVerdict::LockedOut,
        Some(DATA_PASSWORD_EXPIRED) => BindVerdict::PasswordExpired,
        Some(DATA_MUST_CHANGE) => BindVerdict::MustChangePassword,
        Some(DATA_ACCOUNT_EXPIRED) => BindVerdict::AccountExpired,
        Some(DATA_WRONG_PASSWORD) | Some(_) | None => BindVerdict::BadPassword,
    }
}

/// AD's answers to a password that breaks the policy: constraint violation (19) or unwilling
/// to perform (53), with `0000052D` in the text.
fn is_policy_refusal(text: &str) -> bool {
    text.starts_with("result 19:") || text.starts_with("result 53:") || text.contains("0000052D")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bind_subcodes() {
        let text = "80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 775, v1db1";
        assert_eq!(data_subcode(text), Some(DATA_LOCKED_OUT));
        assert_eq!(data_subcode("no data here"), None);
    }

    #[test]
    fn r27_reasons_told_apart() {
        assert_eq!(
            r27_bind_refusal(Some(DATA_ACCOUNT_DISABLED)),
            BindVerdict::Disabled
        );
        assert_eq!(
            r27_bind_refusal(Some(DATA_LOCKED_OUT)),
            BindVerdict::LockedOut
        );
        assert_eq!(
            r27_bind_refusal(Some(DATA_PASSWORD_EXPIRED)),
            BindVerdict::PasswordExpired
        );
        assert_eq!(
            r27_bind_refusal(Some(DATA_MUST_CHANGE)),
            BindVerdict::MustChangePassword
        );
        assert_eq!(
            r27_bind_refusal(Some(DATA_ACCOUNT_EXPIRED)),
            BindVerdict::AccountExpired
        );
        assert_eq!(
            r27_bind_refusal(Some(DATA_WRONG_PASSWORD)),
            BindVerdict::BadPassword
        );
        assert_eq!(r27_bind_refusal(Some(0x1234)), BindVerdict::BadPassword);
        assert_eq!(r27_bind_refusal(None), BindVerdict::BadPassword);
    }

    #[test]
    fn r25_policy_refusals_say_so() {
        let refused = r25_password_policy(
            AdError::Failed("result 19: 0000052D: Constraint violation".into()),
            "Nothing was created.",
        );
        match refused {
            AdError::Refused { message } => {
                assert!(message.contains("password policy"));
                assert!(message.contains("Nothing was created."));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            r25_password_policy(AdError::Failed("result 32: no such object".into()), "x"),
            AdError::Failed(_)
        ));
        assert!(matches!(
            r25_password_policy(AdError::Unavailable("down".into()), "x"),
            AdError::Unavailable(_)
        ));
    }

    /// Strips the escaped value back out of a filter built by `user_filter`.
    fn structure(filter: &str) -> String {
        // The structure is everything but the two values: replace each `=value)` by `=?)`.
        let mut out = String::new();
        let mut chars = filter.chars().peekable();
        while let Some(c) = chars.next() {
            out.push(c);
            if c == '=' {
                for v in chars.by_ref() {
                    if v == ')' {
                        out.push_str("?)");
                        break;
                    }
                }
            }
        }
        out
    }

    proptest! {
        #[test]
        fn no_login_changes_the_filter_structure(login in "\\PC{0,40}") {
            let filter = user_filter(&login);
            prop_assert_eq!(
                structure(&filter),
                "(&(objectCategory=?)(objectClass=?)(|(userPrincipalName=?)(sAMAccountName=?)))"
            );
            // The escaped value holds no filter metacharacter in clear.
            let escaped = ldap_escape(login.as_str());
            prop_assert!(!escaped.contains(['(', ')', '*', '\0']));
        }
    }
}
