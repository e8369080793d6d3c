//! The driver side of the protocol cores' requests: logins, recipient lookups, delivery and
//! mailbox access, answered from the store. Everything here blocks (SQLite, argon2, fsync), so
//! the drivers call it through `spawn_blocking`.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use dirmail_config::Config;
use dirmail_directory::AuthMethod;
use dirmail_directory::ad::{AdDirectory, AdError, Lookup};
use dirmail_directory::cache::{CacheSettings, CredentialCache};
use dirmail_directory::login::{self, LoginError, Service};
use dirmail_outbound::LocalDelivery;
use dirmail_proto::auth::Credentials;
use dirmail_proto::names::DomainName;
use dirmail_store as store;
use dirmail_store::queue::{Entry, Queue};
use dirmail_store::rules::alias::ExpandError;
use dirmail_store::rules::r15_quota_admits;
use dirmail_store::spool::{self, SpoolFile};
use dirmail_store::{MailboxRow, Store, StoreError, aliases, maildir, secrets};

/// Shared by every connection of a running server.
pub struct Backend {
    pub config: Arc<Config>,
    /// Open stores to reuse; SQLite connections are cheap but not free to open.
    pool: Mutex<Vec<Store>>,
    /// R20: mailboxes (by id) held by a POP3 session.
    pop3_holders: Mutex<HashSet<i64>>,
    /// The configured Active Directory, checked at start (R21).
    ad: Option<AdDirectory>,
    /// The verified-credential cache (`[auth]`), unless `cache_ttl` is 0.
    credentials: Option<CredentialCache>,
    /// The outbound queue, for recipients outside the local domains.
    pub queue: Queue,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").finish_non_exhaustive()
    }
}

/// What a recipient address is to this server.
#[derive(Debug, Clone)]
pub enum RecipientVerdict {
    /// A local address: the mailboxes its mail goes to (one, unless it is an alias) and the
    /// outside addresses an alias sends it on to (R28).
    Local(Destinations),
    /// A local domain without that address (R17).
    LocalUnknown,
    /// R28: the address's aliases loop or nest too deep (the store was changed behind the
    /// administration tool's back); the words are for the log.
    AliasLoop(String),
    /// Not one of our domains.
    NotLocal,
}

/// Where a local address's mail goes.
#[derive(Debug, Clone, Default)]
pub struct Destinations {
    /// Each final mailbox once.
    pub mailboxes: Vec<LocalTarget>,
    /// Outside addresses an alias points at: through the outbound queue.
    pub outside: Vec<String>,
    /// Whether an alias was followed (false: the address is a mailbox itself).
    pub through_alias: bool,
    /// Alias targets that name nothing any more (skipped; for the log).
    pub dangling: Vec<String>,
}

impl Destinations {
    /// The least room any of the mailboxes has left (R15), when one has a quota.
    pub fn quota_left(&self) -> Option<u64> {
        self.mailboxes.iter().filter_map(|t| t.quota_left).min()
    }
}

/// One local mailbox a recipient reaches.
#[derive(Debug, Clone)]
pub struct LocalTarget {
    pub mailbox: MailboxRow,
    pub maildir: PathBuf,
    /// What its quota leaves (R15), when it has one.
    pub quota_left: Option<u64>,
}

/// Why a recipient could not be looked up: the store, or the directory (R24).
#[derive(Debug, thiserror::Error)]
pub enum RecipientError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Directory(#[from] AdError),
}

/// How one delivery went (R15, R18).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Delivered,
    /// A recipient's quota cannot take the message whole: nothing was delivered.
    QuotaExceeded(String),
    /// The disk is full: nothing was delivered.
    DiskFull,
    Failed(String),
}

impl Backend {
    /// Opens the store and checks `[directory]` (R21: settings that would send a password
    /// in clear are refused here, at start).
    pub fn open(config: Arc<Config>) -> Result<Backend, String> {
        let store = Store::open(&config.store).map_err(|e| e.to_string())?;
        let ad = match &config.directory {
            Some(settings) => Some(AdDirectory::new(settings).map_err(|e| e.to_string())?),
            None => None,
        };
        if ad.is_none()
            && store::auth_method(store.conn()).map_err(|e| e.to_string())? == AuthMethod::Ad
        {
            return Err("the store uses Active Directory authentication, and dirmail.toml has no [directory]".into());
        }
        // What a crash left in the spool: older than any DATA a live session may still send.
        let stale_after = config.limits.smtp_data_timeout + std::time::Duration::from_secs(60);
        let removed =
            spool::prepare(&config.store.mailroot, stale_after).map_err(|e| e.to_string())?;
        if removed > 0 {
            tracing::info!(removed, "removed spool files left by an earlier run");
        }
        let queue = Queue::open(&config.store.mailroot).map_err(|e| e.to_string())?;
        let credentials = CredentialCache::new(CacheSettings {
            ttl: config.auth.cache_ttl,
            negative_ttl: config.auth.negative_ttl,
            size: config.auth.cache_size,
        })
        .map_err(|e| e.to_string())?;
        Ok(Backend {
            config,
            pool: Mutex::new(vec![store]),
            pop3_holders: Mutex::new(HashSet::new()),
            ad,
            credentials,
            queue,
        })
    }

    fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> T) -> Result<T, StoreError> {
        let pooled = self.pool.lock().map(|mut p| p.pop()).unwrap_or(None);
        let mut store = match pooled {
            Some(store) => store,
            None => Store::open(&self.config.store)?,
        };
        let value = f(&mut store);
        if let Ok(mut pool) = self.pool.lock()
            && pool.len() < 8
        {
            pool.push(store);
        }
        Ok(value)
    }

    /// The one login decision ([`login::decide`]), on a pooled store, with the server's
    /// credential cache.
    pub fn log_in(
        &self,
        service: Service,
        credentials: &Credentials,
    ) -> Result<MailboxRow, LoginError> {
        self.with_store(|store| {
            login::decide(
                store,
                self.ad.as_ref(),
                self.credentials.as_ref(),
                service,
                credentials,
            )
        })?
    }

    /// Whether `sparequired` refuses clear-text logins for `service` (SPEC §7), so a session
    /// need not offer them.
    pub fn clear_text_refused(&self, service: Service) -> Result<bool, StoreError> {
        self.with_store(|store| login::clear_text_refused(store.conn(), service))?
    }

    /// Whether any mailbox has a mail secret: CRAM-MD5 is offered only then (SPEC §10).
    pub fn any_mail_secrets(&self) -> bool {
        self.with_store(|store| secrets::any(store.conn()).unwrap_or(false))
            .unwrap_or(false)
    }

    /// The addresses an authenticated mailbox may send as (its own; aliases arrive later).
    pub fn own_addresses(&self, mailbox: &MailboxRow) -> Vec<String> {
        vec![mailbox.address.to_string()]
    }

    /// Looks a recipient up: a local address (a mailbox, or an alias expanded to its mailboxes
    /// and outside addresses, R28), a local domain without it, or elsewhere. R12:
    /// `postmaster@<local domain>` (and a bare `postmaster`) always resolve.
    pub fn check_recipient(
        &self,
        local_part: &str,
        domain: Option<&str>,
    ) -> Result<RecipientVerdict, RecipientError> {
        self.with_store(|store| -> Result<RecipientVerdict, RecipientError> {
            let conn = store.conn();
            let method = store::auth_method(conn)?;
            let layout = store::layout(conn)?;
            let domain_row = match domain {
                Some(d) => match DomainName::parse(d) {
                    Ok(name) => match store::find_domain(conn, &name)? {
                        Some(row) => row,
                        None => return Ok(RecipientVerdict::NotLocal),
                    },
                    Err(_) => return Ok(RecipientVerdict::NotLocal),
                },
                None if local_part.eq_ignore_ascii_case("postmaster") => {
                    match self.own_domain(conn)? {
                        Some(row) => row,
                        None => return Ok(RecipientVerdict::LocalUnknown),
                    }
                }
                None => return Ok(RecipientVerdict::NotLocal),
            };
            let address = format!("{local_part}@{}", domain_row.name);
            let expansion = match aliases::expand(conn, &address) {
                Ok(expansion) => expansion,
                Err(ExpandError::Lookup(e)) => return Err(e.into()),
                Err(e) => return Ok(RecipientVerdict::AliasLoop(e.to_string())),
            };
            let mut destinations = Destinations {
                mailboxes: Vec::new(),
                outside: expansion.outside,
                through_alias: expansion.through_alias,
                dangling: expansion.dangling,
            };
            for mailbox in expansion.mailboxes {
                // R23: under ad, only a member of the mail group receives mail.
                if method == AuthMethod::Ad && !self.gets_mail(&mailbox)? {
                    destinations.dangling.push(mailbox.address.to_string());
                    continue;
                }
                let maildir = layout.maildir(&store.mailroot, &mailbox.address);
                let quota_left = match mailbox.quota_bytes {
                    Some(limit) => Some(limit.saturating_sub(maildir::usage(&maildir)?.bytes)),
                    None => None,
                };
                destinations.mailboxes.push(LocalTarget {
                    mailbox,
                    maildir,
                    quota_left,
                });
            }
            if destinations.mailboxes.is_empty() && destinations.outside.is_empty() {
                return Ok(RecipientVerdict::LocalUnknown);
            }
            Ok(RecipientVerdict::Local(destinations))
        })?
    }

    /// The server's own domain, for a bare `<postmaster>` (RFC 5321 §4.5.1): the local domain
    /// the host name belongs to (`mail.example.jp` → `example.jp`), else the first domain made.
    fn own_domain(
        &self,
        conn: &rusqlite::Connection,
    ) -> Result<Option<store::DomainRow>, StoreError> {
        let hostname = self.config.server.hostname.to_ascii_lowercase();
        let domains = store::domains(conn)?;
        let mine = domains
            .iter()
            .filter(|d| {
                let name = d.name.as_str();
                hostname == name || hostname.ends_with(&format!(".{name}"))
            })
            .max_by_key(|d| d.name.as_str().len());
        Ok(match mine {
            Some(d) => Some(d.clone()),
            None => domains.into_iter().min_by_key(|d| d.id),
        })
    }

    /// Under `ad`, a mailbox receives mail only while its AD user exists and is in the mail
    /// group (R23). An unreachable directory is an error (R24: `451 4.4.3` at RCPT).
    fn gets_mail(&self, mailbox: &MailboxRow) -> Result<bool, RecipientError> {
        let Some(ad) = &self.ad else {
            return Ok(false);
        };
        match ad.find_user(&mailbox.address.to_string())? {
            Lookup::Found(user) => Ok(ad.r23_in_mail_group(&user.dn)?),
            Lookup::NotFound | Lookup::Ambiguous => Ok(false),
        }
    }

    /// A new spool file for a message coming in, holding `header` (its trace header) so far.
    pub fn open_spool(&self, header: &[u8]) -> std::io::Result<SpoolFile> {
        let mut spool =
            SpoolFile::create(&self.config.store.mailroot, &self.config.server.hostname)?;
        spool.append(header)?;
        Ok(spool)
    }

    /// R15 then R18 for a spooled message: checks every recipient's quota against the whole
    /// message (the spool file's size) first, so nothing is delivered in part; then links one
    /// durable copy into each recipient's Maildir. The spool file itself is the caller's to
    /// drop, which removes it.
    pub fn deliver(
        &self,
        recipients: &[(MailboxRow, PathBuf)],
        spool: &SpoolFile,
    ) -> DeliveryOutcome {
        for (mailbox, dir) in recipients {
            if mailbox.quota_bytes.is_none() {
                continue;
            }
            let used = match maildir::usage(dir) {
                Ok(u) => u.bytes,
                Err(e) => return DeliveryOutcome::Failed(e.to_string()),
            };
            if !r15_quota_admits(mailbox.quota_bytes, used, spool.size()) {
                return DeliveryOutcome::QuotaExceeded(mailbox.address.to_string());
            }
        }
        let maildirs: Vec<&std::path::Path> =
            recipients.iter().map(|(_, dir)| dir.as_path()).collect();
        match maildir::deliver_spooled(spool, &maildirs, &self.config.server.hostname) {
            Ok(_) => DeliveryOutcome::Delivered,
            Err(e) if is_disk_full(&e) => DeliveryOutcome::DiskFull,
            Err(e) => DeliveryOutcome::Failed(e.to_string()),
        }
    }

    /// Queues the spooled message for the remote `recipients`, durably (R18's guarantee for
    /// the queue: fsynced before the `250`).
    pub fn enqueue(
        &self,
        spool: &SpoolFile,
        reverse_path: &str,
        recipients: &[String],
    ) -> std::io::Result<Entry> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        self.queue.enqueue(
            spool,
            reverse_path,
            recipients,
            &self.config.server.hostname,
            now,
        )
    }

    /// R20: takes the mailbox for one POP3 session; `None` when another session holds it.
    pub fn r20_hold_pop3(self: &Arc<Self>, mailbox_id: i64) -> Option<Pop3Hold> {
        let mut holders = self.pop3_holders.lock().ok()?;
        if !holders.insert(mailbox_id) {
            return None;
        }
        Some(Pop3Hold {
            backend: Arc::clone(self),
            mailbox_id,
        })
    }

    /// Where a mailbox's Maildir is.
    pub fn maildir_of(&self, mailbox: &MailboxRow) -> Result<PathBuf, StoreError> {
        self.with_store(|store| {
            store::layout(store.conn())
                .map(|layout| layout.maildir(&store.mailroot, &mailbox.address))
        })?
    }
}

/// The queue runner's way into the local mailboxes (a bounce to a local sender, mostly): the
/// same lookup as RCPT and the same durable delivery (R15, R18) as SMTP's.
impl dirmail_outbound::Mailboxes for Backend {
    fn deliver_local(
        &self,
        address: &str,
        reverse_path: &str,
        message: &std::path::Path,
    ) -> LocalDelivery {
        let Some((local_part, domain)) = address.rsplit_once('@') else {
            return LocalDelivery::NotLocal;
        };
        let destinations = match self.check_recipient(local_part, Some(domain)) {
            Ok(RecipientVerdict::NotLocal) => return LocalDelivery::NotLocal,
            Ok(RecipientVerdict::LocalUnknown) => {
                return LocalDelivery::Refused("550 5.1.1 No such mailbox here".into());
            }
            Ok(RecipientVerdict::AliasLoop(why)) => {
                tracing::warn!(address, "alias loop refused: {why}");
                return LocalDelivery::Refused(
                    "550 5.4.6 Alias loop: mail to this address cannot be delivered".into(),
                );
            }
            Ok(RecipientVerdict::Local(destinations)) => destinations,
            Err(e) => return LocalDelivery::Failed(format!("451 4.4.3 {e}")),
        };
        // A copy in the spool, streamed, so the delivery is the one SMTP uses.
        let spooled = (|| -> std::io::Result<SpoolFile> {
            let mut spool =
                SpoolFile::create(&self.config.store.mailroot, &self.config.server.hostname)?;
            let mut file = std::fs::File::open(message)?;
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                let n = std::io::Read::read(&mut file, &mut chunk)?;
                if n == 0 {
                    return Ok(spool);
                }
                spool.append(chunk.get(..n).unwrap_or_default())?;
            }
        })();
        let spool = match spooled {
            Ok(spool) => spool,
            Err(e) => return LocalDelivery::Failed(format!("451 4.3.0 {e}")),
        };
        if destinations.through_alias {
            tracing::info!(
                address,
                mailboxes = ?destinations.mailboxes.iter().map(|t| t.mailbox.address.to_string()).collect::<Vec<_>>(),
                outside = ?destinations.outside,
                "alias expanded"
            );
        }
        if !destinations.outside.is_empty() {
            // A new entry; the nudge has the runner read the queue within a second (it is
            // the runner that called, so it cannot be told through its own channel here).
            if let Err(e) = self.enqueue(&spool, reverse_path, &destinations.outside) {
                return LocalDelivery::Failed(format!("451 4.3.0 {e}"));
            }
            self.queue.nudge();
        }
        if destinations.mailboxes.is_empty() {
            return LocalDelivery::Delivered;
        }
        let targets: Vec<(MailboxRow, PathBuf)> = destinations
            .mailboxes
            .into_iter()
            .map(|t| (t.mailbox, t.maildir))
            .collect();
        match self.deliver(&targets, &spool) {
            DeliveryOutcome::Delivered => LocalDelivery::Delivered,
            DeliveryOutcome::QuotaExceeded(who) => {
                LocalDelivery::Failed(format!("452 4.2.2 The mailbox {who} is full"))
            }
            DeliveryOutcome::DiskFull => LocalDelivery::Failed("452 4.3.1 The disk is full".into()),
            DeliveryOutcome::Failed(e) => LocalDelivery::Failed(format!("451 4.3.0 {e}")),
        }
    }
}

/// ENOSPC, however the platform spells it.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(28)
}

/// A POP3 session's hold on a mailbox (R20), released when dropped, so a dropped connection
/// frees it too.
pub struct Pop3Hold {
    backend: Arc<Backend>,
    mailbox_id: i64,
}

impl std::fmt::Debug for Pop3Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pop3Hold")
            .field("mailbox_id", &self.mailbox_id)
            .finish()
    }
}

impl Drop for Pop3Hold {
    fn drop(&mut self) {
        if let Ok(mut holders) = self.backend.pop3_holders.lock() {
            holders.remove(&self.mailbox_id);
        }
    }
}
