//! `dirmail.toml`: typed, checked once at load. A wrong key is an error naming the key and file.
//!
//! Found through `--config`, then `DIRMAIL_CONFIG`, then `./dirmail.toml`; with none, built-in
//! defaults put the store in `./dirmail-data`. Relative paths in a file are relative to the
//! file's own directory, so a configuration means the same whatever the working directory.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

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
    /// `[directory]`: Active Directory (SPEC §9). Present only when configured.
    pub directory: Option<DirectoryConfig>,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Holds `dirmail.db` (and by default the mail root).
    pub data_dir: PathBuf,
    /// The Maildirs; default `<data_dir>/mail`.
    pub mailroot: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The name users put in their mail client ("Mail server:" in `add`'s logon information)
    /// and the SMTP greeting. Default: this machine's host name.
    pub hostname: String,
    /// 0 none, 1 errors, 2 sessions, 3 protocol traces.
    pub logging: u8,
    /// Worker threads; 0 = as many as cores.
    pub threadcount: u32,
    /// The address every listener binds to (loopback unless the administrator opens it).
    pub listen_address: IpAddr,
}

/// A listener's port: 0 lets the system choose (the chosen one is printed at start); `None`
/// turns the listener off.
pub type Port = Option<u16>;

#[derive(Debug, Clone)]
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

#[derive(Debug, Clone)]
pub struct Pop3Config {
    pub port: Port,
    /// Implicit TLS POP3 (RFC 8314).
    pub pop3s_port: Port,
}

#[derive(Debug, Clone)]
pub struct ImapConfig {
    /// IMAP with STARTTLS.
    pub port: Port,
    /// Implicit TLS IMAP (RFC 8314).
    pub imaps_port: Port,
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

#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// A PEM certificate chain and key; with neither, a self-signed certificate is made.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub plaintext_auth: PlaintextAuth,
}

/// The winpop socket settings: connection limits of the listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub socket_backlog: u32,
    pub socket_max: u32,
    pub socket_min: u32,
    pub socket_threshold: u32,
}

#[derive(Debug, Clone)]
pub struct QuotaConfig {
    /// The limit `createquotafile` gives a mailbox, in bytes.
    pub default_limit: u64,
}

/// SPEC §9, with exactly the keys it names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    pub url: String,
    pub ca_file: Option<PathBuf>,
    pub base_dn: String,
    pub netbios_domain: String,
    pub bind_dn: Option<String>,
    pub bind_password: Option<String>,
    pub users_container: Option<String>,
    #[serde(default = "default_mail_group")]
    pub mail_group: String,
    #[serde(default = "default_retry_interval_ms")]
    pub retry_interval_ms: u64,
    #[serde(default = "default_retry_count")]
    pub retry_count: u32,
}

fn default_mail_group() -> String {
    "IMSUsers".into()
}
fn default_retry_interval_ms() -> u64 {
    1000
}
fn default_retry_count() -> u32 {
    10
}

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
};

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
    directory: Option<DirectoryConfig>,
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
    threadcount: Option<u32>,
    listen_address: Option<IpAddr>,
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuota {
    default_limit: Option<String>,
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
        let limits = Limits {
            socket_backlog: raw
                .limits
                .socket_backlog
                .unwrap_or(DEFAULT_LIMITS.socket_backlog),
            socket_max: raw.limits.socket_max.unwrap_or(DEFAULT_LIMITS.socket_max),
            socket_min: raw.limits.socket_min.unwrap_or(DEFAULT_LIMITS.socket_min),
            socket_threshold: raw
                .limits
                .socket_threshold
                .unwrap_or(DEFAULT_LIMITS.socket_threshold),
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
        if let Some(dir) = &raw.directory
            && !(dir.url.starts_with("ldaps://") || dir.url.starts_with("ldap://"))
        {
            return Err(invalid(format!(
                "directory.url {:?} must start with ldaps:// or ldap:// (always with StartTLS), so no password crosses the network in clear (R21)",
                dir.url
            )));
        }
        Ok(Config {
            source,
            store: StoreConfig { data_dir, mailroot },
            server: ServerConfig {
                hostname,
                logging,
                threadcount: raw.server.threadcount.unwrap_or(0),
                listen_address: raw
                    .server
                    .listen_address
                    .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            },
            smtp,
            pop3,
            imap,
            tls,
            limits,
            quota: QuotaConfig { default_limit },
            directory: raw.directory,
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
# 0 none, 1 errors, 2 sessions, 3 protocol traces (passwords are never logged).
logging = 2
# Worker threads; 0 = as many as cores.
threadcount = 0

# Every listener binds to this address. Keep loopback until the server is meant to be reached.
# listen_address = "127.0.0.1"

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
# Connection limits of the listeners (winpop's socket settings).
socket_backlog = 128
socket_max = 1000
socket_min = 16
socket_threshold = 64

[quota]
# The limit `dirmail createquotafile` gives a mailbox.
default_limit = "100MB"

# Active Directory (SPEC §9). Needed for `set authentication ad` and `migratetoad`.
# [directory]
# url = "ldaps://dc1.example.jp"
# ca_file = "/etc/dirmail/ad-ca.pem"
# base_dn = "DC=example,DC=jp"
# netbios_domain = "EXAMPLE"
# bind_dn = "CN=dirmail,CN=Users,DC=example,DC=jp"
# bind_password = "..."
# users_container = "CN=Users,DC=example,DC=jp"
# mail_group = "IMSUsers"
# retry_interval_ms = 1000
# retry_count = 10
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_parses() {
        let c = Config::parse(TEMPLATE, Path::new("/etc/dirmail/dirmail.toml")).unwrap();
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
}
