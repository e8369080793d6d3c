//! `dirmail.toml`: typed, checked once at load. A wrong key is an error naming the key and file.
//!
//! Found through `--config`, then `DIRMAIL_CONFIG`, then `./dirmail.toml`; with none, built-in
//! defaults put the store in `./dirmail-data`. Relative paths in a file are relative to the
//! file's own directory, so a configuration means the same whatever the working directory.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use dirmail_proto::names::Secret;

/// Where the configuration came from; `set` edits this file in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Defaults,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub source: Source,
    pub store: StoreConfig,
    pub server: ServerConfig,
    pub smtp: SmtpConfig,
    pub pop3: Pop3Config,
    pub imap: ImapConfig,
    pub tls: TlsConfig,
    pub limits: Limits,
    pub quota: QuotaConfig,
    /// `[outbound]`: where mail for other domains goes (docs/spec.md §11).
    pub outbound: OutboundConfig,
    /// `[queue]`: how long and how often outbound mail is retried (docs/spec.md, the queue).
    pub queue: QueueConfig,
    /// `[directory]`: Active Directory (docs/spec.md §9). Present only when configured.
    pub directory: Option<DirectoryConfig>,
    /// `[auth]`: the login cache (docs/spec.md, "The login cache").
    pub auth: AuthConfig,
    /// `[metrics]`: the Prometheus page of a running server.
    pub metrics: MetricsConfig,
}

/// `[metrics]`: where a running server serves its Prometheus metrics page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricsConfig {
    /// `listen`: the address of `GET /metrics` (port 0: the system chooses, printed at start).
    /// `None`: no metrics listener.
    pub listen: Option<SocketAddr>,
}

/// `[auth]`: the verified-credential cache, typed and bounded at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthConfig {
    /// How long a password found right is trusted without a check (and, under `ad`, the
    /// user's standing: enabled, in the mail group). Zero: no cache at all.
    pub cache_ttl: Duration,
    /// The most accounts (and, apart, recent failures) the cache holds; the oldest goes first.
    pub cache_size: usize,
    /// How long a password found wrong is refused again without a check. Zero: never.
    pub negative_ttl: Duration,
}

pub const DEFAULT_AUTH: AuthConfig = AuthConfig {
    cache_ttl: Duration::from_secs(60 * 60),
    cache_size: 10_000,
    negative_ttl: Duration::from_secs(30),
};
/// `auth.cache_size` at most: a million accounts, about a hundred bytes each per table.
pub const MAX_AUTH_CACHE_SIZE: usize = 1_000_000;
/// `auth.negative_ttl` at most: a failure remembered longer would be a lockout in all but name.
pub const MAX_NEGATIVE_TTL: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Holds `dirmail.db` (and by default the mail root).
    pub data_dir: PathBuf,
    /// The Maildirs; default `<data_dir>/mail`.
    pub mailroot: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The name users put in their mail client ("Mail server:" in `add`'s logon information)
    /// and the SMTP greeting. Default: this machine's host name.
    pub hostname: String,
    /// 0 none, 1 errors, 2 sessions, 3 protocol traces (`serve --log-level` and `RUST_LOG`
    /// come before it).
    pub logging: u8,
    /// How each log line is written.
    pub log_format: LogFormat,
    /// Worker threads; 0 = as many as cores.
    pub threadcount: u32,
    /// The address every listener binds to (loopback unless the administrator opens it).
    pub listen_address: IpAddr,
    /// The account to run as once the listeners are bound (`[server] user`): the standard
    /// ports below 1024 need root to bind, and nothing after that does.
    pub user: Option<String>,
    /// Its group; `None`: the user's primary group.
    pub group: Option<String>,
}

/// A listener's port: 0 lets the system choose (the chosen one is printed at start); `None`
/// turns the listener off.
pub type Port = Option<u16>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpConfig {
    /// Relay/MX port (RFC 5321).
    pub port: Port,
    /// Submission (RFC 6409): AUTH required.
    pub submission_port: Port,
    /// Implicit TLS submission (RFC 8314).
    pub smtps_port: Port,
    /// R16: client networks allowed to relay without AUTH. Empty by default.
    pub relay_networks: Vec<IpNet>,
    pub max_message_size: u64,
    /// An authenticated sender may use only its own addresses in MAIL FROM.
    pub require_own_sender: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pop3Config {
    pub port: Port,
    /// Implicit TLS POP3 (RFC 8314).
    pub pop3s_port: Port,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapConfig {
    /// IMAP with STARTTLS.
    pub port: Port,
    /// Implicit TLS IMAP (RFC 8314).
    pub imaps_port: Port,
}

/// How `serve` writes its log (standard error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// One line of text per event, for people (the default).
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Where a clear-text password may cross the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlaintextAuth {
    /// Only inside TLS (the default).
    Tls,
    /// Inside TLS, or from a loopback client (labs, local scripts).
    Loopback,
    /// Everywhere: for labs only.
    Always,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// A PEM certificate chain and key; with neither, a self-signed certificate is made.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub plaintext_auth: PlaintextAuth,
}

/// `[limits]`: the winpop socket settings (connection limits of the listeners), each client
/// address's share of them, and how long a session may keep a connection without progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub socket_backlog: u32,
    /// Connections of all listeners together.
    pub socket_max: u32,
    pub socket_min: u32,
    pub socket_threshold: u32,
    /// Connections one client address may hold of `socket_max`, so that one address cannot
    /// take every slot. IPv6 addresses count by their /64 (see `net::admission`).
    pub per_address_max: u32,
    /// How long output may make no progress (and a TLS handshake may take) before the
    /// connection is dropped: a client that stops reading would otherwise keep its slot, and a
    /// POP3 session its mailbox (R20), for as long as TCP keeps retrying.
    pub write_timeout: Duration,
    /// RFC 5321 §4.5.3.2: waiting for a command (5 minutes).
    pub smtp_command_timeout: Duration,
    /// RFC 5321 §4.5.3.2: waiting inside DATA (3 minutes per block, 10 for the end).
    pub smtp_data_timeout: Duration,
    /// RFC 1939 §3: the POP3 autologout timer (at least 10 minutes).
    pub pop3_idle_timeout: Duration,
    /// RFC 9051 §5.4: the IMAP autologout timer once logged in, IDLE included (at least 30
    /// minutes). Before login the leash is 3 minutes, or this when shorter.
    pub imap_idle_timeout: Duration,
    /// What all sessions together may hold of their clients' input beyond each one's small
    /// allowance (an IMAP APPEND gathering its message; `net::budget`). At least the largest
    /// message, so one APPEND always fits.
    pub input_memory: u64,
    /// How long a session that has not logged in may wait for its client (POP3, IMAP,
    /// submission; the SMTP relay port only when the connection cap is near, and never inside
    /// DATA), so idle strangers cannot keep the slots for the longer timeouts above.
    pub prelogin_timeout: Duration,
    /// Slots kept for sessions that have logged in: connections that have not may hold at most
    /// `socket_max - reserved_for_authenticated` (see `net::admission`).
    pub reserved_for_authenticated: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaConfig {
    /// The limit `createquotafile` gives a mailbox, in bytes.
    pub default_limit: u64,
}

/// `[outbound]`: mail for other domains, read by `dirmail-outbound` (routing and delivery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundConfig {
    /// The DNS servers asked for MX and A/AAAA records, over UDP and TCP. Empty: the system's
    /// resolver (`/etc/resolv.conf`).
    pub dns_servers: Vec<SocketAddr>,
    /// A smarthost: when set, all outbound mail goes there instead of to the MX hosts.
    pub relay_host: Option<RelayHost>,
    /// The smarthost's account (AUTH PLAIN or LOGIN, only over TLS); only with `relay_host`.
    pub relay_user: Option<String>,
    /// Its password, a [`Secret`] so no `Debug` of the configuration can print it.
    pub relay_password: Option<Secret>,
    pub tls: OutboundTls,
    /// The port of the receiving servers (25; the tests use another).
    pub port: u16,
}

/// `[queue]`: the retry schedule of outbound mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// The waits after the first, second, … failed attempt; the last repeats.
    pub retry: Vec<Duration>,
    /// A recipient still not delivered this long after arrival is given up (`4.4.7`).
    pub max_age: Duration,
    /// After this long undelivered, the sender is told once that the server is still trying;
    /// `None` (`delay_notice = false`): never.
    pub delay_notice: Option<Duration>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(60 * m);
        QueueConfig {
            retry: [2, 5, 10, 30, 60, 120, 240, 480].map(minutes).to_vec(),
            max_age: Duration::from_secs(5 * 24 * 3600),
            delay_notice: Some(minutes(240)),
        }
    }
}

/// The longest `[queue] max_age`: past a month a message is no use to anyone.
pub const MAX_QUEUE_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Most steps in `[queue] retry`.
pub const MAX_RETRY_STEPS: usize = 32;

/// `[outbound] relay_host`: a host name or IP address, and the port to use there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayHost {
    /// A DNS name, or an IP address (written `[2001:db8::1]:587` with a port).
    pub host: String,
    pub port: u16,
}

/// `[outbound] tls`: when the client must have STARTTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutboundTls {
    /// STARTTLS whenever the receiver offers it; plain text otherwise (the default).
    Opportunistic,
    /// Never send without TLS: a receiver that offers no STARTTLS is a temporary failure.
    Required,
}

/// The port of the receiving servers (RFC 5321 §4.5.4's well-known SMTP port).
pub const DEFAULT_OUTBOUND_PORT: u16 = 25;
/// The port of a DNS server written without one.
pub const DEFAULT_DNS_PORT: u16 = 53;
/// More DNS servers than this is a mistake: each is tried in turn before a lookup fails.
pub const MAX_DNS_SERVERS: usize = 8;

/// `[directory]`: Active Directory (docs/spec.md §9), typed and bounded once at load. The
/// service account's password is a [`Secret`], so no `Debug` of the configuration can print it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryConfig {
    pub url: String,
    pub ca_file: Option<PathBuf>,
    pub base_dn: String,
    pub netbios_domain: String,
    pub bind_dn: Option<String>,
    pub bind_password: Option<Secret>,
    pub users_container: Option<String>,
    pub mail_group: String,
    /// R24: how long to wait before trying an unreachable directory again (seed 002's
    /// `ADRetryMSec`).
    pub retry_interval: Duration,
    /// R24: how many times to try again before the failure is reported as temporary (seed
    /// 002's `ADRetryTime`).
    pub retry_count: u32,
}

/// The default R24 wait between tries (seed 002: `ADRetryMSec` 1000).
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// The default R24 number of further tries (seed 002: `ADRetryTime` 10).
pub const DEFAULT_RETRY_COUNT: u32 = 10;
/// Bounds of `retry_interval`: short enough for tests, never a busy loop, and never so long
/// that a client gives up on the server long before the server gives up on the directory.
pub const RETRY_INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_millis(10), Duration::from_secs(60));
/// The most further tries: with the longest interval, an hour of waiting for one login.
pub const MAX_RETRY_COUNT: u32 = 60;

pub const DEFAULT_DATA_DIR: &str = "dirmail-data";
pub const DEFAULT_POP3_PORT: u16 = 1110;
pub const DEFAULT_POP3S_PORT: u16 = 1995;
pub const DEFAULT_IMAP_PORT: u16 = 1143;
pub const DEFAULT_IMAPS_PORT: u16 = 1993;
pub const DEFAULT_SMTP_PORT: u16 = 2525;
pub const DEFAULT_SUBMISSION_PORT: u16 = 2587;
pub const DEFAULT_SMTPS_PORT: u16 = 2465;
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 25 * 1024 * 1024;
pub const DEFAULT_QUOTA: u64 = 100 * 1024 * 1024;
pub const DEFAULT_LIMITS: Limits = Limits {
    socket_backlog: 128,
    socket_max: 1000,
    socket_min: 16,
    socket_threshold: 64,
    per_address_max: default_per_address_max(1000),
    write_timeout: Duration::from_secs(60),
    smtp_command_timeout: Duration::from_secs(5 * 60),
    smtp_data_timeout: Duration::from_secs(10 * 60),
    pop3_idle_timeout: Duration::from_secs(10 * 60),
    imap_idle_timeout: Duration::from_secs(30 * 60),
    input_memory: 256 * 1024 * 1024,
    prelogin_timeout: Duration::from_secs(30),
    reserved_for_authenticated: default_reserved_for_authenticated(1000),
};
/// The longest timeout `[limits]` accepts; longer would be no timeout at all.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// `per_address_max` when the file does not give it: a tenth of `socket_max`, but at least 10
/// (a mail client may hold several connections, and an office behind one NAT address has
/// several clients), and never more than `socket_max` (so a small lab limit stays the one
/// limit, as it was before the share existed).
pub const fn default_per_address_max(socket_max: u32) -> u32 {
    let tenth = socket_max / 10;
    let share = if tenth > 10 { tenth } else { 10 };
    if share < socket_max {
        share
    } else {
        socket_max
    }
}

/// `reserved_for_authenticated` when the file does not give it: a tenth of `socket_max`
/// (none below 10, so a small lab limit stays the one limit).
pub const fn default_reserved_for_authenticated(socket_max: u32) -> u32 {
    socket_max / 10
}

// The file's shape. Every table refuses unknown keys, so a typo is reported, not ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    smtp: RawSmtp,
    #[serde(default)]
    pop3: RawPop3,
    #[serde(default)]
    imap: RawImap,
    #[serde(default)]
    tls: RawTls,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    quota: RawQuota,
    #[serde(default)]
    outbound: RawOutbound,
    #[serde(default)]
    queue: RawQueue,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    metrics: RawMetrics,
    directory: Option<RawDirectory>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
}

impl RawMetrics {
    fn check(self) -> Result<MetricsConfig, String> {
        let Some(text) = self.listen else {
            return Ok(MetricsConfig::default());
        };
        let listen = text.trim().parse::<SocketAddr>().map_err(|_| {
            format!(
                "metrics.listen: {text:?} is not an address and port such as \"127.0.0.1:9187\" (IPv6: \"[::1]:9187\")"
            )
        })?;
        Ok(MetricsConfig {
            listen: Some(listen),
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    cache_ttl: Option<String>,
    cache_size: Option<usize>,
    negative_ttl: Option<String>,
}

impl RawAuth {
    fn check(self) -> Result<AuthConfig, String> {
        let cache_ttl = match self.cache_ttl {
            Some(text) => parse_ttl(&text).map_err(|e| format!("auth.cache_ttl: {e}"))?,
            None => DEFAULT_AUTH.cache_ttl,
        };
        let negative_ttl = match self.negative_ttl {
            Some(text) => parse_ttl(&text).map_err(|e| format!("auth.negative_ttl: {e}"))?,
            None => DEFAULT_AUTH.negative_ttl,
        };
        if negative_ttl > MAX_NEGATIVE_TTL {
            return Err(format!(
                "auth.negative_ttl is longer than {}s; a failed password is remembered at most 5m",
                MAX_NEGATIVE_TTL.as_secs()
            ));
        }
        let cache_size = self.cache_size.unwrap_or(DEFAULT_AUTH.cache_size);
        if !(1..=MAX_AUTH_CACHE_SIZE).contains(&cache_size) {
            return Err(format!(
                "auth.cache_size is {cache_size}; it must be 1 to {MAX_AUTH_CACHE_SIZE} (cache_ttl = \"0\" turns the cache off)"
            ));
        }
        Ok(AuthConfig {
            cache_ttl,
            cache_size,
            negative_ttl,
        })
    }
}

/// A cache lifetime: `"0"` (off), or a timeout as [`parse_timeout`] reads it.
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let number = text
        .trim()
        .trim_end_matches(|c: char| c.is_ascii_alphabetic());
    if !number.is_empty() && number.parse::<f64>().is_ok_and(|n| n == 0.0) {
        return Ok(Duration::ZERO);
    }
    parse_timeout(text)
}

/// `[directory]` as written. `retry_interval` takes a unit (`"1s"`, `"500ms"`); the older
/// `retry_interval_ms` (the seed's `ADRetryMSec`) is still read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirectory {
    url: String,
    ca_file: Option<PathBuf>,
    base_dn: String,
    netbios_domain: String,
    bind_dn: Option<String>,
    bind_password: Option<String>,
    users_container: Option<String>,
    mail_group: Option<String>,
    retry_interval: Option<String>,
    retry_interval_ms: Option<u64>,
    retry_count: Option<u32>,
}

/// By hand, so the service account's password, still a plain string here, is never printed.
impl std::fmt::Debug for RawDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawDirectory")
            .field("url", &self.url)
            .field("bind_dn", &self.bind_dn)
            .finish_non_exhaustive()
    }
}

impl RawDirectory {
    fn check(self, base: &Path) -> Result<DirectoryConfig, String> {
        for (key, value) in [
            ("url", &self.url),
            ("base_dn", &self.base_dn),
            ("netbios_domain", &self.netbios_domain),
        ] {
            if value.trim().is_empty() {
                return Err(format!("directory.{key} cannot be empty"));
            }
        }
        if self.bind_dn.is_some() != self.bind_password.is_some() {
            return Err(
                "directory.bind_dn and directory.bind_password go together: give both or neither"
                    .into(),
            );
        }
        let retry_interval = match (self.retry_interval, self.retry_interval_ms) {
            (Some(_), Some(_)) => {
                return Err(
                    "give directory.retry_interval or the older directory.retry_interval_ms, not both"
                        .into(),
                );
            }
            (Some(text), None) => {
                parse_timeout(&text).map_err(|e| format!("directory.retry_interval: {e}"))?
            }
            (None, Some(ms)) => Duration::from_millis(ms),
            (None, None) => DEFAULT_RETRY_INTERVAL,
        };
        let (shortest, longest) = RETRY_INTERVAL_RANGE;
        if retry_interval < shortest || retry_interval > longest {
            return Err(format!(
                "directory.retry_interval must be from {} ms to {} s",
                shortest.as_millis(),
                longest.as_secs()
            ));
        }
        let retry_count = self.retry_count.unwrap_or(DEFAULT_RETRY_COUNT);
        if retry_count > MAX_RETRY_COUNT {
            return Err(format!(
                "directory.retry_count {retry_count} is more than {MAX_RETRY_COUNT}"
            ));
        }
        Ok(DirectoryConfig {
            url: self.url,
            ca_file: self.ca_file.map(|p| base.join(p)),
            base_dn: self.base_dn,
            netbios_domain: self.netbios_domain,
            bind_dn: self.bind_dn,
            bind_password: self.bind_password.map(Secret::new),
            users_container: self.users_container,
            mail_group: self.mail_group.unwrap_or_else(|| "IMSUsers".into()),
            retry_interval,
            retry_count,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    data_dir: Option<PathBuf>,
    mailroot: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    hostname: Option<String>,
    logging: Option<u8>,
    log_format: Option<LogFormat>,
    threadcount: Option<u32>,
    listen_address: Option<IpAddr>,
    user: Option<String>,
    group: Option<String>,
}

/// A port in the file: a number (0: the system chooses) or `false` (the listener is off).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
enum RawPort {
    Number(u16),
    Enabled(bool),
}

fn port(raw: Option<RawPort>, default: u16) -> Port {
    match raw {
        None | Some(RawPort::Enabled(true)) => Some(default),
        Some(RawPort::Number(n)) => Some(n),
        Some(RawPort::Enabled(false)) => None,
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    port: Option<RawPort>,
    submission_port: Option<RawPort>,
    smtps_port: Option<RawPort>,
    relay_networks: Option<Vec<String>>,
    max_message_size: Option<String>,
    require_own_sender: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPop3 {
    port: Option<RawPort>,
    pop3s_port: Option<RawPort>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImap {
    port: Option<RawPort>,
    imaps_port: Option<RawPort>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    plaintext_auth: Option<PlaintextAuth>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    socket_backlog: Option<u32>,
    socket_max: Option<u32>,
    socket_min: Option<u32>,
    socket_threshold: Option<u32>,
    per_address_max: Option<u32>,
    write_timeout: Option<String>,
    smtp_command_timeout: Option<String>,
    smtp_data_timeout: Option<String>,
    pop3_idle_timeout: Option<String>,
    imap_idle_timeout: Option<String>,
    input_memory: Option<String>,
    prelogin_timeout: Option<String>,
    reserved_for_authenticated: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuota {
    default_limit: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutbound {
    dns_servers: Option<Vec<String>>,
    relay_host: Option<String>,
    relay_user: Option<String>,
    relay_password: Option<String>,
    tls: Option<OutboundTls>,
    port: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    retry: Option<Vec<String>>,
    max_age: Option<String>,
    delay_notice: Option<TimeOrOff>,
}

/// A duration, or `false` to switch the thing off.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TimeOrOff {
    Off(bool),
    Time(String),
}

impl RawQueue {
    fn check(self) -> Result<QueueConfig, String> {
        let defaults = QueueConfig::default();
        let retry = match self.retry {
            None => defaults.retry,
            Some(texts) => {
                if texts.is_empty() || texts.len() > MAX_RETRY_STEPS {
                    return Err(format!(
                        "queue.retry needs 1 to {MAX_RETRY_STEPS} intervals, not {}",
                        texts.len()
                    ));
                }
                texts
                    .iter()
                    .map(|t| parse_timeout(t).map_err(|e| format!("queue.retry: {e}")))
                    .collect::<Result<_, _>>()?
            }
        };
        let max_age = match self.max_age {
            None => defaults.max_age,
            Some(text) => parse_age(&text).map_err(|e| format!("queue.max_age: {e}"))?,
        };
        let delay_notice = match self.delay_notice {
            None => defaults.delay_notice,
            Some(TimeOrOff::Off(false)) => None,
            Some(TimeOrOff::Off(true)) => {
                return Err("queue.delay_notice: give a time such as \"4h\", or false".into());
            }
            Some(TimeOrOff::Time(text)) => {
                Some(parse_age(&text).map_err(|e| format!("queue.delay_notice: {e}"))?)
            }
        };
        Ok(QueueConfig {
            retry,
            max_age,
            delay_notice,
        })
    }
}

/// An age such as `5d`, `36h`, `90m` or `30s`, up to [`MAX_QUEUE_AGE`].
fn parse_age(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit_seconds: f64 = match unit.trim() {
        "d" => 86_400.0,
        "h" => 3600.0,
        "m" => 60.0,
        "s" | "" => 1.0,
        _ => return Err(format!("{text:?} is not a time such as 5d, 4h or 30m")),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a time such as 5d, 4h or 30m"))?;
    let seconds = value * unit_seconds;
    if !seconds.is_finite() || seconds < 1.0 || seconds > MAX_QUEUE_AGE.as_secs_f64() {
        return Err(format!("{text:?} must be at least 1s and at most 30 days"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

impl RawOutbound {
    fn check(self) -> Result<OutboundConfig, String> {
        let texts = self.dns_servers.unwrap_or_default();
        if texts.len() > MAX_DNS_SERVERS {
            return Err(format!(
                "outbound.dns_servers lists {} servers; at most {MAX_DNS_SERVERS}",
                texts.len()
            ));
        }
        let mut dns_servers = Vec::with_capacity(texts.len());
        for text in &texts {
            let server = parse_dns_server(text)
                .map_err(|e| format!("outbound.dns_servers: {text:?} {e}"))?;
            if !dns_servers.contains(&server) {
                dns_servers.push(server);
            }
        }
        let port = self.port.unwrap_or(DEFAULT_OUTBOUND_PORT);
        if port == 0 {
            return Err("outbound.port cannot be 0".into());
        }
        let relay_host = self
            .relay_host
            .map(|text| {
                parse_relay_host(&text).map_err(|e| format!("outbound.relay_host: {text:?} {e}"))
            })
            .transpose()?;
        match (&self.relay_user, &self.relay_password) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(
                    "outbound.relay_user and outbound.relay_password go together: give both or neither"
                        .into(),
                );
            }
            (Some(_), Some(_)) if relay_host.is_none() => {
                return Err("outbound.relay_user needs outbound.relay_host: credentials are only for a smarthost".into());
            }
            _ => {}
        }
        if let Some(user) = &self.relay_user
            && (user.is_empty() || user.chars().any(char::is_control))
        {
            return Err(
                "outbound.relay_user must be a non-empty name without control characters".into(),
            );
        }
        if self
            .relay_password
            .as_deref()
            .is_some_and(|p| p.is_empty() || p.chars().any(char::is_control))
        {
            return Err(
                "outbound.relay_password must be non-empty, without control characters".into(),
            );
        }
        Ok(OutboundConfig {
            dns_servers,
            relay_host,
            relay_user: self.relay_user,
            relay_password: self.relay_password.map(Secret::new),
            tls: self.tls.unwrap_or(OutboundTls::Opportunistic),
            port,
        })
    }
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            dns_servers: Vec::new(),
            relay_host: None,
            relay_user: None,
            relay_password: None,
            tls: OutboundTls::Opportunistic,
            port: DEFAULT_OUTBOUND_PORT,
        }
    }
}

/// A DNS server: an IP address with an optional port (`192.0.2.53`, `192.0.2.53:5353`, `::1`,
/// `[::1]:5353`). A name is refused: the resolver cannot be found through itself.
fn parse_dns_server(text: &str) -> Result<SocketAddr, String> {
    let t = text.trim();
    let address = match t.parse::<SocketAddr>() {
        Ok(address) => address,
        Err(_) => match t
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .unwrap_or(t)
            .parse::<IpAddr>()
        {
            Ok(ip) => SocketAddr::new(ip, DEFAULT_DNS_PORT),
            Err(_) => {
                return Err(
                    "is not an IP address with an optional port, such as 192.0.2.53,                      127.0.0.1:5353 or [2001:db8::53]:53"
                        .into(),
                );
            }
        },
    };
    if address.port() == 0 {
        return Err("has port 0".into());
    }
    if address.ip().is_unspecified() || address.ip().is_multicast() {
        return Err("is not the address of one server".into());
    }
    Ok(address)
}

/// A smarthost: `host`, `host:port`, `192.0.2.1:587`, `[2001:db8::1]:587`; the port defaults
/// to 25.
fn parse_relay_host(text: &str) -> Result<RelayHost, String> {
    let t = text.trim();
    let bad = || {
        "is not a host with an optional port, such as smtp.example.net:587 or [2001:db8::1]:25"
            .to_string()
    };
    let (host, port) = if let Some(rest) = t.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or_else(bad)?;
        inside.parse::<IpAddr>().map_err(|_| bad())?;
        match after {
            "" => (inside, None),
            _ => (inside, Some(after.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else if t.parse::<IpAddr>().is_ok() {
        // A bare IPv6 address: its colons are not a port.
        (t, None)
    } else {
        match t.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (t, None),
        }
    };
    let port = match port {
        None => DEFAULT_OUTBOUND_PORT,
        Some(text) => match text.parse::<u16>() {
            Ok(0) => return Err("has port 0".into()),
            Ok(port) => port,
            Err(_) => return Err(bad()),
        },
    };
    let host = host.trim_end_matches('.');
    let is_name = host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !is_name && host.parse::<IpAddr>().is_err() {
        return Err(bad());
    }
    Ok(RelayHost {
        host: host.to_owned(),
        port,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    /// Finds and loads the configuration: `explicit` (from `--config`), then `DIRMAIL_CONFIG`,
    /// then `./dirmail.toml`; otherwise the built-in defaults.
    pub fn discover(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        if let Some(path) = explicit {
            return Config::load(path);
        }
        if let Some(path) = std::env::var_os("DIRMAIL_CONFIG").filter(|p| !p.is_empty()) {
            return Config::load(Path::new(&path));
        }
        let local = Path::new("dirmail.toml");
        if local.exists() {
            return Config::load(local);
        }
        Config::from_raw(RawConfig::default(), Source::Defaults, Path::new("."))
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses `text` as if read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| invalid(one_line(&e)))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Config::from_raw(raw, Source::File(path.to_owned()), base)
    }

    fn from_raw(raw: RawConfig, source: Source, base: &Path) -> Result<Config, ConfigError> {
        let path_for_errors = match &source {
            Source::File(p) => p.clone(),
            Source::Defaults => PathBuf::from("(built-in defaults)"),
        };
        let invalid = |message: String| ConfigError::Invalid {
            path: path_for_errors.clone(),
            message,
        };
        let data_dir = base.join(raw.store.data_dir.unwrap_or(DEFAULT_DATA_DIR.into()));
        let mailroot = match raw.store.mailroot {
            Some(p) => base.join(p),
            None => data_dir.join("mail"),
        };
        let logging = raw.server.logging.unwrap_or(2);
        if logging > 3 {
            return Err(invalid(format!(
                "server.logging is {logging}; it must be 0 (none), 1 (errors), 2 (sessions) or 3 (protocol traces)"
            )));
        }
        let hostname = match raw.server.hostname {
            Some(h) if h.trim().is_empty() => {
                return Err(invalid("server.hostname is empty".into()));
            }
            Some(h) => h,
            None => system_hostname(),
        };
        let account = |key: &str, name: Option<String>| match name {
            Some(n) if n.trim().is_empty() || n.contains(['\0', ':', '/']) => Err(invalid(
                format!("server.{key} is {n:?}, which cannot be an account name"),
            )),
            other => Ok(other),
        };
        let user = account("user", raw.server.user)?;
        let group = account("group", raw.server.group)?;
        if group.is_some() && user.is_none() {
            return Err(invalid(
                "server.group is set without server.user: name the user to run as too".into(),
            ));
        }
        let socket_max = raw.limits.socket_max.unwrap_or(DEFAULT_LIMITS.socket_max);
        let timeout = |key: &str, text: Option<String>, default: Duration| match text {
            Some(text) => parse_timeout(&text).map_err(|e| invalid(format!("limits.{key}: {e}"))),
            None => Ok(default),
        };
        let limits = Limits {
            socket_backlog: raw
                .limits
                .socket_backlog
                .unwrap_or(DEFAULT_LIMITS.socket_backlog),
            socket_max,
            socket_min: raw.limits.socket_min.unwrap_or(DEFAULT_LIMITS.socket_min),
            socket_threshold: raw
                .limits
                .socket_threshold
                .unwrap_or(DEFAULT_LIMITS.socket_threshold),
            per_address_max: raw
                .limits
                .per_address_max
                .unwrap_or(default_per_address_max(socket_max)),
            write_timeout: timeout(
                "write_timeout",
                raw.limits.write_timeout,
                DEFAULT_LIMITS.write_timeout,
            )?,
            smtp_command_timeout: timeout(
                "smtp_command_timeout",
                raw.limits.smtp_command_timeout,
                DEFAULT_LIMITS.smtp_command_timeout,
            )?,
            smtp_data_timeout: timeout(
                "smtp_data_timeout",
                raw.limits.smtp_data_timeout,
                DEFAULT_LIMITS.smtp_data_timeout,
            )?,
            pop3_idle_timeout: timeout(
                "pop3_idle_timeout",
                raw.limits.pop3_idle_timeout,
                DEFAULT_LIMITS.pop3_idle_timeout,
            )?,
            imap_idle_timeout: timeout(
                "imap_idle_timeout",
                raw.limits.imap_idle_timeout,
                DEFAULT_LIMITS.imap_idle_timeout,
            )?,
            input_memory: match raw.limits.input_memory {
                Some(text) => {
                    parse_size(&text).map_err(|e| invalid(format!("limits.input_memory: {e}")))?
                }
                None => DEFAULT_LIMITS.input_memory,
            },
            prelogin_timeout: timeout(
                "prelogin_timeout",
                raw.limits.prelogin_timeout,
                DEFAULT_LIMITS.prelogin_timeout,
            )?,
            reserved_for_authenticated: raw
                .limits
                .reserved_for_authenticated
                .unwrap_or(default_reserved_for_authenticated(socket_max)),
        };
        check_limits(&limits).map_err(&invalid)?;
        let default_limit = match raw.quota.default_limit {
            Some(text) => {
                parse_size(&text).map_err(|e| invalid(format!("quota.default_limit: {e}")))?
            }
            None => DEFAULT_QUOTA,
        };
        let mut relay_networks = Vec::new();
        for text in raw.smtp.relay_networks.unwrap_or_default() {
            let net = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    invalid(format!(
                        "smtp.relay_networks: {text:?} is not a network such as 192.0.2.0/24"
                    ))
                })?;
            relay_networks.push(net);
        }
        let max_message_size = match raw.smtp.max_message_size {
            Some(text) => {
                parse_size(&text).map_err(|e| invalid(format!("smtp.max_message_size: {e}")))?
            }
            None => DEFAULT_MAX_MESSAGE_SIZE,
        };
        if limits.input_memory < max_message_size {
            return Err(invalid(format!(
                "limits.input_memory ({} bytes) is smaller than smtp.max_message_size ({} bytes): \
                 one IMAP APPEND of the largest message could never be read; raise input_memory",
                limits.input_memory, max_message_size
            )));
        }
        let smtp = SmtpConfig {
            port: port(raw.smtp.port, DEFAULT_SMTP_PORT),
            submission_port: port(raw.smtp.submission_port, DEFAULT_SUBMISSION_PORT),
            smtps_port: port(raw.smtp.smtps_port, DEFAULT_SMTPS_PORT),
            relay_networks,
            max_message_size,
            require_own_sender: raw.smtp.require_own_sender.unwrap_or(true),
        };
        let pop3 = Pop3Config {
            port: port(raw.pop3.port, DEFAULT_POP3_PORT),
            pop3s_port: port(raw.pop3.pop3s_port, DEFAULT_POP3S_PORT),
        };
        let imap = ImapConfig {
            port: port(raw.imap.port, DEFAULT_IMAP_PORT),
            imaps_port: port(raw.imap.imaps_port, DEFAULT_IMAPS_PORT),
        };
        if raw.tls.cert_file.is_some() != raw.tls.key_file.is_some() {
            return Err(invalid(
                "tls.cert_file and tls.key_file go together: give both or neither".into(),
            ));
        }
        let tls = TlsConfig {
            cert_file: raw.tls.cert_file.map(|p| base.join(p)),
            key_file: raw.tls.key_file.map(|p| base.join(p)),
            plaintext_auth: raw.tls.plaintext_auth.unwrap_or(PlaintextAuth::Tls),
        };
        let outbound = raw.outbound.check().map_err(&invalid)?;
        let queue = raw.queue.check().map_err(&invalid)?;
        let auth = raw.auth.check().map_err(&invalid)?;
        let metrics = raw.metrics.check().map_err(&invalid)?;
        if let Some(dir) = &raw.directory {
            // R21 is refused here, at start, before anything could bind.
            dirmail_rules::r21_encrypted_transport(&dir.url).map_err(|r| invalid(r.message))?;
        }
        Ok(Config {
            source,
            store: StoreConfig { data_dir, mailroot },
            server: ServerConfig {
                hostname,
                logging,
                log_format: raw.server.log_format.unwrap_or(LogFormat::Text),
                threadcount: raw.server.threadcount.unwrap_or(0),
                listen_address: raw
                    .server
                    .listen_address
                    .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
                user,
                group,
            },
            smtp,
            pop3,
            imap,
            tls,
            limits,
            quota: QuotaConfig { default_limit },
            outbound,
            queue,
            auth,
            metrics,
            directory: raw
                .directory
                .map(|d| d.check(base))
                .transpose()
                .map_err(invalid)?,
        })
    }
}

/// The socket settings must make sense together.
pub fn check_limits(limits: &Limits) -> Result<(), String> {
    if limits.socket_min > limits.socket_max {
        return Err(format!(
            "limits.socket_min ({}) is larger than limits.socket_max ({})",
            limits.socket_min, limits.socket_max
        ));
    }
    if limits.socket_max == 0 || limits.socket_backlog == 0 {
        return Err("limits.socket_max and limits.socket_backlog must be at least 1".into());
    }
    if limits.per_address_max == 0 {
        return Err("limits.per_address_max must be at least 1".into());
    }
    if limits.per_address_max > limits.socket_max {
        return Err(format!(
            "limits.per_address_max ({}) is larger than limits.socket_max ({}); one address can hold at most every connection",
            limits.per_address_max, limits.socket_max
        ));
    }
    if limits.reserved_for_authenticated >= limits.socket_max {
        return Err(format!(
            "limits.reserved_for_authenticated ({}) must be below limits.socket_max ({}); otherwise no client could connect to log in",
            limits.reserved_for_authenticated, limits.socket_max
        ));
    }
    Ok(())
}

fn one_line(e: &toml::de::Error) -> String {
    // toml's message spans several lines with a caret drawing; keep it, but start with the gist.
    e.to_string().trim_end().to_owned()
}

/// This machine's host name, for the logon information and the greetings.
pub fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Parses a size such as `50MB`, `1.5GB`, `512KB`, `1000` (bytes). Units are powers of 1024,
/// as Windows shows them.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    if number.is_empty() {
        return Err(format!("{text:?} is not a size such as 50MB"));
    }
    let unit_factor: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        other => {
            return Err(format!(
                "{text:?} has an unknown unit {other:?}; use B, KB, MB, GB or TB"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 50MB"))?;
    let bytes = value * unit_factor as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 / 2.0 {
        return Err(format!("{text:?} is not a usable size"));
    }
    Ok(bytes as u64)
}

/// Parses a timeout such as `5m`, `30s`, `1h`, `1.5m`, `250ms`, or `300` (seconds). It must be
/// above zero and at most a day ([`MAX_TIMEOUT`]).
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let not_a_timeout = || format!("{text:?} is not a timeout such as 5m, 30s or 1h");
    if number.is_empty() {
        return Err(not_a_timeout());
    }
    let unit_seconds: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "ms" => 0.001,
        "" | "s" | "sec" | "secs" => 1.0,
        "m" | "min" | "mins" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "{text:?} has an unknown unit {other:?}; use ms, s, m or h"
            ));
        }
    };
    let value: f64 = number.parse().map_err(|_| not_a_timeout())?;
    let seconds = value * unit_seconds;
    if !seconds.is_finite() || seconds < 0.001 {
        return Err(format!(
            "{text:?} is no time at all; a timeout must be above 0"
        ));
    }
    let timeout = Duration::from_secs_f64(seconds);
    if timeout > MAX_TIMEOUT {
        return Err(format!(
            "{text:?} is longer than a day, the longest timeout"
        ));
    }
    Ok(timeout)
}

/// Shows a byte count the way `parse_size` reads it back.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TB", 1 << 40),
        ("GB", 1 << 30),
        ("MB", 1 << 20),
        ("KB", 1 << 10),
    ];
    for (name, factor) in UNITS {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{}{name}", bytes / factor);
        }
    }
    format!("{bytes}B")
}

/// The commented `dirmail.toml` that `dirmail init` writes.
pub const TEMPLATE: &str = r#"# dirmail.toml: the deployment settings of a dirmail server.
# Administrative state (domains, mailboxes, the authentication method, the mailbox layout)
# lives in the store, not here; change it with the dirmail administration commands.
# Relative paths are relative to this file's directory.

[store]
# Holds dirmail.db, the database of administrative state.
data_dir = "dirmail-data"
# Where the Maildirs live (winpop's "mailroot"). Default: <data_dir>/mail
# mailroot = "dirmail-data/mail"

[server]
# The name users enter as "Mail server" in their mail client; used in greetings too.
# Default: this machine's host name.
# hostname = "mail.example.jp"
# 0 none, 1 errors, 2 sessions (logins, and a line per accepted message and per recipient,
# with the Message-ID: grep it to follow a message), 3 protocol traces (every line in and out;
# passwords and SASL payloads shown as ***, message content as its size). Passwords are never
# logged. `dirmail serve --log-level LEVEL|FILTER` (e.g. debug, or dirmail_net=trace,info)
# and then the RUST_LOG environment variable come before this.
logging = 2
# "text" (one line per event) or "json" (one JSON object per line).
log_format = "text"
# Worker threads; 0 = as many as cores.
threadcount = 0

# Every listener binds to this address. Keep loopback until the server is meant to be reached.
# listen_address = "127.0.0.1"

# Started as root (to bind the standard ports below 1024), the server binds every listener,
# then runs as this account, and refuses to go on as root. The store (data_dir, mailroot), this
# file and the TLS key must be readable and the store writable by it:
# chown -R dirmail: /var/lib/dirmail. Started as another user, it must be this one.
# user = "dirmail"
# The group to run as; default: the user's primary group. The user's other groups are kept.
# group = "dirmail"

[smtp]
# A port of 0 lets the system choose (printed at start); false turns the listener off.
port = 2525               # relay/MX (RFC 5321)
submission_port = 2587    # submission, AUTH required (RFC 6409)
smtps_port = 2465         # submission over implicit TLS (RFC 8314)
# Client networks allowed to relay without AUTH (R16). Empty: only authenticated users relay.
relay_networks = []
max_message_size = "25MB"
# An authenticated sender may use only its own address in MAIL FROM.
require_own_sender = true

[pop3]
port = 1110
pop3s_port = 1995         # implicit TLS (RFC 8314)

[imap]
port = 1143               # STARTTLS
imaps_port = 1993         # implicit TLS (RFC 8314)

[tls]
# A PEM certificate chain and its key. With neither, a self-signed certificate is made at
# first start and kept in <data_dir>/tls/.
# cert_file = "/etc/dirmail/cert.pem"
# key_file = "/etc/dirmail/key.pem"
# Where clear-text passwords may be sent: "tls" (only inside TLS), "loopback" (also from
# this machine), "always" (labs only).
plaintext_auth = "tls"

[limits]
# Connection limits of the listeners (winpop's socket settings). socket_max counts the
# connections of every listener together.
socket_backlog = 128
socket_max = 1000
socket_min = 16
socket_threshold = 64
# The most connections one client address may hold, so one address cannot take every slot;
# one over its share is told "too many connections" and closed. An IPv6 client counts by its
# /64 (one host usually has the whole /64); an IPv4-mapped IPv6 address counts as the IPv4
# one. Loopback is not exempt. At least 1, at most socket_max.
# Default: a tenth of socket_max, at least 10 (never more than socket_max).
# per_address_max = 100
#
# Timeouts: a number with a unit, ms, s, m or h ("90s", "5m"); at most "24h". Values below
# the RFC minimums noted here are accepted (tests and hostile networks want short ones), but
# they may cut off slow, legitimate clients.
# Output that makes no progress for this long (a client that stops reading), or a TLS
# handshake that takes longer, drops the connection; a POP3 session's mailbox is released
# without deleting anything (R20).
write_timeout = "1m"
# SMTP, waiting for a command: RFC 5321 section 4.5.3.2 asks for at least 5 minutes.
smtp_command_timeout = "5m"
# SMTP, waiting inside DATA: RFC 5321 asks for at least 3 minutes a block, 10 at the end.
smtp_data_timeout = "10m"
# POP3 autologout: RFC 1939 section 3 asks for at least 10 minutes.
pop3_idle_timeout = "10m"
# IMAP autologout once logged in, IDLE included: RFC 9051 section 5.4 asks for at least 30
# minutes. Before login the limit is 3 minutes, or this when shorter.
imap_idle_timeout = "30m"
# Memory all sessions together may hold of their clients' input beyond a small allowance each
# (an IMAP APPEND gathers its message in memory; SMTP DATA goes to disk as it arrives). A
# session that would go over waits. At least smtp.max_message_size.
input_memory = "256MB"
# Before login (POP3, IMAP, submission) a session may wait this long for its client; on the
# SMTP relay port only while connections that have not logged in fill three quarters of
# their slots (RFC 5321's 5 minutes otherwise), and never inside DATA.
prelogin_timeout = "30s"
# Slots kept for sessions that have logged in: the others may hold at most socket_max minus
# this. When those are full, a new connection closes the one that has waited longest for its
# client without logging in, and is refused only if none waits. Below socket_max.
# Default: a tenth of socket_max.
# reserved_for_authenticated = 100

[quota]
# The limit `dirmail createquotafile` gives a mailbox.
default_limit = "100MB"

[outbound]
# Mail to other domains. The DNS servers asked for MX and A/AAAA records (over UDP and TCP),
# each "address" or "address:port" (port 53 when not given; IPv6 as "[2001:db8::53]:53").
# Empty: the system's resolver (/etc/resolv.conf).
dns_servers = []
# A smarthost: send all outbound mail to this "host:port" (port 25 when not given) instead of
# the recipients' MX hosts.
# relay_host = "smtp.provider.example:587"
# Its account, if it asks for one (AUTH PLAIN or LOGIN, never before TLS). Keep this file
# private (chmod 600) when it holds the password.
# relay_user = "mailer@provider.example"
# relay_password = "…"
# "opportunistic": STARTTLS whenever the receiver offers it; "required": never without TLS.
tls = "opportunistic"
# The port of the receiving servers (25).
port = 25

[queue]
# Outbound mail that could not be delivered yet is tried again after these waits (the last
# repeats), until max_age after it arrived; then it is returned to the sender as undeliverable.
retry = ["2m", "5m", "10m", "30m", "1h", "2h", "4h", "8h"]
max_age = "5d"
# The sender is told once that the server is still trying after this long; false: never.
delay_notice = "4h"

[auth]
# The login cache: a password found right is not checked again (no argon2 hash, no AD bind)
# for cache_ttl, while nothing changes. Held in memory only, as a keyed hash, never the
# password. changepwd, lock, delete, secret, migratetoad and set authentication empty it at
# once, even while the server runs; a change made in Active Directory itself is seen within
# cache_ttl. "0" turns the cache off.
cache_ttl = "1h"
# The most accounts it holds (1 to 1000000); the oldest entry makes room for a new one.
cache_size = 10000
# A password found wrong is refused again without a check for this long ("0": never; at most
# "5m"). Failed logins still count for the throttle, and the right password is never refused.
negative_ttl = "30s"

[metrics]
# A Prometheus metrics page (text format 0.0.4) at http://<listen>/metrics: connections,
# sessions, logins by outcome and reason, messages, directory and login latencies, the
# outbound queue. Off unless listen is set. It has no password: keep it on loopback or a
# network only the monitoring system reaches. Port 0 lets the system choose (printed at start).
# listen = "127.0.0.1:9187"

# Active Directory (docs/spec.md §9). Needed for `set authentication ad` and `migratetoad`.
# [directory]
# url = "ldaps://dc1.example.jp"
# ca_file = "/etc/dirmail/ad-ca.pem"
# base_dn = "DC=example,DC=jp"
# netbios_domain = "EXAMPLE"
# bind_dn = "CN=dirmail,CN=Users,DC=example,DC=jp"
# bind_password = "..."
# users_container = "CN=Users,DC=example,DC=jp"
# mail_group = "IMSUsers"
# retry_interval = "1s"     # R24: an unreachable directory is tried again after this…
# retry_count = 10          # …this many times, then the login fails as temporary
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_cache_settings_are_bounded() {
        let parse = |text: &str| Config::parse(text, Path::new("/x/dirmail.toml"));
        let auth = parse("").unwrap().auth;
        assert_eq!(auth, DEFAULT_AUTH);
        assert_eq!(parse(TEMPLATE_AUTH_CHECK).unwrap().auth, DEFAULT_AUTH);
        let off = parse("[auth]\ncache_ttl = \"0\"\nnegative_ttl = \"0s\"\n")
            .unwrap()
            .auth;
        assert_eq!(
            (off.cache_ttl, off.negative_ttl),
            (Duration::ZERO, Duration::ZERO)
        );
        let set = parse("[auth]\ncache_ttl = \"10m\"\ncache_size = 5\nnegative_ttl = \"5m\"\n")
            .unwrap()
            .auth;
        assert_eq!(
            set,
            AuthConfig {
                cache_ttl: Duration::from_secs(600),
                cache_size: 5,
                negative_ttl: Duration::from_secs(300),
            }
        );
        for (text, says) in [
            ("[auth]\ncache_size = 0\n", "auth.cache_size is 0"),
            (
                "[auth]\ncache_size = 1000001\n",
                "auth.cache_size is 1000001",
            ),
            (
                "[auth]\nnegative_ttl = \"6m\"\n",
                "auth.negative_ttl is longer",
            ),
            ("[auth]\ncache_ttl = \"25h\"\n", "auth.cache_ttl"),
            ("[auth]\ncache_ttl = \"soon\"\n", "auth.cache_ttl"),
            ("[auth]\ncache_ttl = \"-1s\"\n", "auth.cache_ttl"),
            ("[auth]\ncache = 1\n", "unknown field"),
        ] {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(says), "{text}: {error}");
        }
    }

    /// The `[auth]` table as the template writes it.
    const TEMPLATE_AUTH_CHECK: &str =
        "[auth]\ncache_ttl = \"1h\"\ncache_size = 10000\nnegative_ttl = \"30s\"\n";

    #[test]
    fn metrics_listen_is_an_address_or_absent() {
        let parse = |text: &str| Config::parse(text, Path::new("/x/dirmail.toml"));
        assert_eq!(parse("").unwrap().metrics.listen, None);
        assert_eq!(
            parse("[metrics]\nlisten = \"127.0.0.1:9187\"\n")
                .unwrap()
                .metrics
                .listen,
            Some("127.0.0.1:9187".parse().unwrap())
        );
        assert_eq!(
            parse("[metrics]\nlisten = \"[::1]:0\"\n")
                .unwrap()
                .metrics
                .listen,
            Some("[::1]:0".parse().unwrap())
        );
        for (text, says) in [
            ("[metrics]\nlisten = \"9187\"\n", "metrics.listen"),
            ("[metrics]\nlisten = \"localhost:9187\"\n", "metrics.listen"),
            ("[metrics]\nport = 9187\n", "unknown field"),
        ] {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn template_parses() {
        let c = Config::parse(TEMPLATE, Path::new("/etc/dirmail/dirmail.toml")).unwrap();
        assert_eq!(c.metrics.listen, None);
        assert_eq!(c.auth, DEFAULT_AUTH);
        assert_eq!(c.store.data_dir, Path::new("/etc/dirmail/dirmail-data"));
        assert_eq!(
            c.store.mailroot,
            Path::new("/etc/dirmail/dirmail-data/mail")
        );
        assert_eq!(c.pop3.port, Some(1110));
        assert_eq!((c.imap.port, c.imap.imaps_port), (Some(1143), Some(1993)));
        assert_eq!(c.smtp.port, Some(2525));
        assert_eq!(c.tls.plaintext_auth, PlaintextAuth::Tls);
        assert_eq!(c.quota.default_limit, 100 << 20);
        assert!(c.directory.is_none());
        assert_eq!(c.limits, DEFAULT_LIMITS);
        assert_eq!(c.outbound, OutboundConfig::default());
        assert_eq!(c.queue, QueueConfig::default());
    }

    #[test]
    fn unknown_key_is_named_with_the_file() {
        let err = Config::parse(
            "[server]\nhostnme = \"x\"\n",
            Path::new("conf/dirmail.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("conf/dirmail.toml"), "{err}");
        assert!(err.contains("hostnme"), "{err}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("50MB").unwrap(), 50 << 20);
        assert_eq!(parse_size("1.5 GB").unwrap(), 3 << 29);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("").is_err());
        assert_eq!(format_size(50 << 20), "50MB");
        assert_eq!(format_size(1000), "1000B");
    }

    fn limits(text: &str) -> Result<Limits, String> {
        Config::parse(&format!("[limits]\n{text}"), Path::new("d/dirmail.toml"))
            .map(|c| c.limits)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn input_memory_holds_at_least_one_message() {
        assert_eq!(limits("").unwrap().input_memory, 256 << 20);
        assert_eq!(
            limits("input_memory = \"1GB\"").unwrap().input_memory,
            1 << 30
        );
        let too_small = limits("input_memory = \"1MB\"").unwrap_err();
        assert!(
            too_small.contains("limits.input_memory") && too_small.contains("max_message_size"),
            "{too_small}"
        );
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_timeout("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_timeout("300").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_timeout("1.5 m").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_timeout("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_timeout("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_timeout("24h").unwrap(), MAX_TIMEOUT);
        for bad in [
            "",
            "m",
            "5 fortnights",
            "0",
            "0s",
            "0.0001s",
            "25h",
            "-5m",
            "5m30s",
        ] {
            assert!(parse_timeout(bad).is_err(), "{bad:?} was taken");
        }
    }

    #[test]
    fn timeouts_in_the_file_are_read_and_a_bad_one_is_named() {
        let l = limits(
            "write_timeout = \"2s\"\nsmtp_command_timeout = \"3s\"\nsmtp_data_timeout = \"4s\"\n\
             pop3_idle_timeout = \"5s\"\nimap_idle_timeout = \"6s\"\n",
        )
        .unwrap();
        let secs = Duration::from_secs;
        assert_eq!(
            (
                l.write_timeout,
                l.smtp_command_timeout,
                l.smtp_data_timeout,
                l.pop3_idle_timeout,
                l.imap_idle_timeout
            ),
            (secs(2), secs(3), secs(4), secs(5), secs(6))
        );
        let err = limits("pop3_idle_timeout = \"soon\"\n").unwrap_err();
        assert!(err.contains("d/dirmail.toml"), "{err}");
        assert!(err.contains("limits.pop3_idle_timeout"), "{err}");
        assert!(err.contains("\"soon\""), "{err}");
        let err = limits("smtp_data_timeout = 600\n").unwrap_err();
        assert!(err.contains("smtp_data_timeout"), "{err}");
    }

    #[test]
    fn the_per_address_share_defaults_from_socket_max_and_is_checked() {
        assert_eq!(DEFAULT_LIMITS.per_address_max, 100);
        assert_eq!(limits("").unwrap().per_address_max, 100);
        assert_eq!(
            limits("socket_max = 12000\n").unwrap().per_address_max,
            1200
        );
        assert_eq!(limits("socket_max = 50\n").unwrap().per_address_max, 10);
        assert_eq!(
            limits("socket_max = 2\nsocket_min = 1\n")
                .unwrap()
                .per_address_max,
            2
        );
        assert_eq!(
            limits("socket_max = 8\nper_address_max = 3\nsocket_min = 1\n")
                .unwrap()
                .per_address_max,
            3
        );
        let err = limits("socket_max = 8\nper_address_max = 9\nsocket_min = 1\n").unwrap_err();
        assert!(err.contains("limits.per_address_max (9)"), "{err}");
        assert!(err.contains("limits.socket_max (8)"), "{err}");
        let err = limits("per_address_max = 0\n").unwrap_err();
        assert!(
            err.contains("limits.per_address_max must be at least 1"),
            "{err}"
        );
    }

    #[test]
    fn queue_values_and_refusals() {
        let queue = |text: &str| {
            Config::parse(&format!("[queue]\n{text}"), Path::new("d/dirmail.toml"))
                .map(|c| c.queue)
                .map_err(|e| e.to_string())
        };
        assert_eq!(queue("").unwrap(), QueueConfig::default());
        let q =
            queue("retry = [\"1s\", \"2m\"]\nmax_age = \"36h\"\ndelay_notice = false\n").unwrap();
        assert_eq!(q.retry, [Duration::from_secs(1), Duration::from_secs(120)]);
        assert_eq!(q.max_age, Duration::from_secs(36 * 3600));
        assert_eq!(q.delay_notice, None);
        assert_eq!(
            queue("max_age = \"2d\"\ndelay_notice = \"1d\"")
                .unwrap()
                .delay_notice,
            Some(Duration::from_secs(86_400))
        );
        for bad in [
            "retry = []",
            "retry = [\"0s\"]",
            "max_age = \"31d\"",
            "max_age = \"soon\"",
            "delay_notice = true",
            "retries = [\"1m\"]",
        ] {
            assert!(queue(bad).is_err(), "{bad}");
        }
    }

    fn outbound(text: &str) -> Result<OutboundConfig, String> {
        Config::parse(&format!("[outbound]\n{text}"), Path::new("d/dirmail.toml"))
            .map(|c| c.outbound)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn outbound_defaults_and_values() {
        assert_eq!(outbound("").unwrap(), OutboundConfig::default());
        let o = outbound(
            "dns_servers = [\"127.0.0.1:5353\", \"192.0.2.53\", \"::1\", \"[2001:db8::53]:5300\", \"127.0.0.1:5353\"]\n\
             relay_host = \"smtp.example.net:587\"\ntls = \"required\"\nport = 2525\n",
        )
        .unwrap();
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            o.dns_servers,
            [
                addr("127.0.0.1:5353"),
                addr("192.0.2.53:53"),
                addr("[::1]:53"),
                addr("[2001:db8::53]:5300")
            ]
        );
        let relay = |host: &str, port| {
            Some(RelayHost {
                host: host.into(),
                port,
            })
        };
        assert_eq!(o.relay_host, relay("smtp.example.net", 587));
        assert_eq!((o.tls, o.port), (OutboundTls::Required, 2525));
        for (text, expected) in [
            ("smarthost.example", relay("smarthost.example", 25)),
            ("192.0.2.1:2525", relay("192.0.2.1", 2525)),
            ("[2001:db8::1]:587", relay("2001:db8::1", 587)),
            ("[2001:db8::1]", relay("2001:db8::1", 25)),
            ("2001:db8::1", relay("2001:db8::1", 25)),
        ] {
            let o = outbound(&format!("relay_host = \"{text}\"")).unwrap();
            assert_eq!(o.relay_host, expected, "{text}");
        }
    }

    #[test]
    fn the_smarthost_password_is_a_secret() {
        let o = outbound(
            "relay_host = \"h.example:587\"\nrelay_user = \"u@h.example\"\nrelay_password = \"S3cret-relay\"",
        )
        .unwrap();
        assert_eq!(o.relay_user.as_deref(), Some("u@h.example"));
        assert_eq!(
            o.relay_password.as_ref().map(Secret::expose),
            Some("S3cret-relay")
        );
        assert!(!format!("{o:?}").contains("S3cret-relay"));
    }

    #[test]
    fn outbound_mistakes_are_named() {
        for (text, words) in [
            (
                "dns_servers = [\"dns.example\"]",
                "outbound.dns_servers: \"dns.example\" is not an IP address",
            ),
            ("dns_servers = [\"127.0.0.1:0\"]", "port 0"),
            (
                "dns_servers = [\"127.0.0.1:99999\"]",
                "is not an IP address",
            ),
            (
                "dns_servers = [\"0.0.0.0\"]",
                "not the address of one server",
            ),
            ("dns_servers = \"127.0.0.1\"", "dns_servers"),
            (
                "dns_servers = [\"::1\", \"::2\", \"::3\", \"::4\", \"::5\", \"::6\", \"::7\", \"::8\", \"::9\"]",
                "at most 8",
            ),
            (
                "relay_host = \"smtp.example.net:smtp\"",
                "outbound.relay_host: \"smtp.example.net:smtp\"",
            ),
            (
                "relay_host = \"[smtp.example.net]:25\"",
                "outbound.relay_host",
            ),
            ("relay_host = \"smtp example:25\"", "outbound.relay_host"),
            ("relay_host = \"smtp.example.net:0\"", "port 0"),
            ("relay_host = \"\"", "outbound.relay_host"),
            ("tls = \"maybe\"", "maybe"),
            ("port = 0", "outbound.port cannot be 0"),
            (
                "relay_host = \"h.example\"\nrelay_user = \"u\"",
                "go together",
            ),
            (
                "relay_user = \"u\"\nrelay_password = \"p\"",
                "needs outbound.relay_host",
            ),
            (
                "relay_host = \"h.example\"\nrelay_user = \"u\"\nrelay_password = \"\"",
                "outbound.relay_password",
            ),
            ("prot = 25", "prot"),
        ] {
            let error = outbound(text).expect_err(text);
            assert!(error.contains(words), "{text:?}: {error}");
            assert!(error.contains("d/dirmail.toml"), "{text:?}: {error}");
        }
    }

    #[test]
    fn the_slots_kept_for_logged_in_sessions_default_from_socket_max_and_are_checked() {
        let l = limits("").unwrap();
        assert_eq!(
            (l.reserved_for_authenticated, l.prelogin_timeout),
            (100, Duration::from_secs(30))
        );
        assert_eq!(
            limits(
                "socket_max = 6
socket_min = 1
"
            )
            .unwrap()
            .reserved_for_authenticated,
            0
        );
        let l = limits(
            "reserved_for_authenticated = 999
prelogin_timeout = \"5s\"
",
        )
        .unwrap();
        assert_eq!(
            (l.reserved_for_authenticated, l.prelogin_timeout),
            (999, Duration::from_secs(5))
        );
        let err = limits(
            "reserved_for_authenticated = 1000
",
        )
        .unwrap_err();
        assert!(
            err.contains(
                "limits.reserved_for_authenticated (1000) must be below limits.socket_max (1000)"
            ),
            "{err}"
        );
        let err = limits(
            "prelogin_timeout = \"0s\"
",
        )
        .unwrap_err();
        assert!(err.contains("limits.prelogin_timeout"), "{err}");
    }

    fn directory(extra: &str) -> Result<DirectoryConfig, ConfigError> {
        let text = format!(
            "[directory]\nurl = \"ldaps://dc1.example.jp\"\nbase_dn = \"DC=example,DC=jp\"\n\
             netbios_domain = \"EXAMPLE\"\nbind_dn = \"CN=svc\"\nbind_password = \"hunter2-secret\"\n{extra}"
        );
        Config::parse(&text, Path::new("/etc/dirmail/dirmail.toml"))
            .map(|c| c.directory.expect("a [directory] section"))
    }

    #[test]
    fn directory_retry_takes_a_unit_or_the_old_milliseconds() {
        let d = directory("").unwrap();
        assert_eq!(d.retry_interval, DEFAULT_RETRY_INTERVAL);
        assert_eq!(d.retry_count, DEFAULT_RETRY_COUNT);
        assert_eq!(d.mail_group, "IMSUsers");
        let d = directory("retry_interval = \"250ms\"\nretry_count = 3").unwrap();
        assert_eq!(d.retry_interval, Duration::from_millis(250));
        assert_eq!(d.retry_count, 3);
        let d = directory("retry_interval_ms = 200").unwrap();
        assert_eq!(d.retry_interval, Duration::from_millis(200));
        let d = directory("ca_file = \"ad-ca.pem\"").unwrap();
        assert_eq!(d.ca_file.unwrap(), Path::new("/etc/dirmail/ad-ca.pem"));
    }

    #[test]
    fn directory_values_out_of_bounds_are_named() {
        for (extra, words) in [
            (
                "retry_interval = \"1s\"\nretry_interval_ms = 1000",
                "not both",
            ),
            (
                "retry_interval = \"1ms\"",
                "directory.retry_interval must be",
            ),
            (
                "retry_interval = \"2m\"",
                "directory.retry_interval must be",
            ),
            ("retry_interval = \"soon\"", "directory.retry_interval"),
            ("retry_count = 1000", "directory.retry_count"),
            ("retry_count = -1", "retry_count"),
            ("colour = \"blue\"", "colour"),
        ] {
            let error = directory(extra).expect_err(extra).to_string();
            assert!(error.contains(words), "{extra:?}: {error}");
            assert!(error.contains("dirmail.toml"), "{extra:?}: {error}");
        }
    }

    #[test]
    fn directory_password_never_printed() {
        let d = directory("").unwrap();
        assert_eq!(
            d.bind_password.as_ref().map(Secret::expose),
            Some("hunter2-secret")
        );
        let shown = format!("{d:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let raw: RawConfig = toml::from_str(
            "[directory]\nurl = \"ldaps://dc\"\nbase_dn = \"DC=x\"\nnetbios_domain = \"X\"\nbind_password = \"hunter2-secret\"\n",
        )
        .unwrap();
        assert!(!format!("{raw:?}").contains("hunter2"));
    }
}
