//! SIGHUP: `dirmail.toml` and the TLS certificate read again while the server runs.
//!
//! The file the server started from is read and checked as fully as at start; a file that
//! fails refuses the whole reload and the running settings stay. Of a good file, the keys
//! that only shape new sessions (relay networks, timeouts, the TLS files, …) apply to the
//! connections accepted from then on; sessions in progress keep what they started with. The
//! keys that shape what was built at start (the store, the listeners, the directory, the
//! outbound runner, the connection limits, the log) keep their running values, and the log
//! says that they need a restart: a reload never drops a session. The certificate and key are
//! read again even when their paths did not change, since they are usually renewed in place.

use dirmail_config::{Config, Source};
use tokio_rustls::TlsAcceptor;

use super::tls;

/// What a reload makes of a good file.
pub struct Reloaded {
    /// The settings for new connections: the file's, less the keys that need a restart.
    pub config: Config,
    pub tls: TlsAcceptor,
    /// Keys whose new value is now in force.
    pub changed: Vec<&'static str>,
    /// Keys changed in the file whose running value stays until a restart.
    pub need_restart: Vec<&'static str>,
}

impl std::fmt::Debug for Reloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloaded")
            .field("changed", &self.changed)
            .field("need_restart", &self.need_restart)
            .finish_non_exhaustive()
    }
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{0}")]
    Config(#[from] dirmail_config::ConfigError),
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
    #[error("{0}")]
    Settings(String),
}

/// A key of `dirmail.toml` (or a whole table), whether a running server can take a new value,
/// how to tell that it changed, and how to keep the running value when it cannot.
struct Key {
    name: &'static str,
    live: bool,
    same: fn(&Config, &Config) -> bool,
    keep: fn(&mut Config, &Config),
}

/// `key!(live, smtp, relay_networks)` for one key, `key!(restart, outbound)` for a table.
macro_rules! key {
    ($when:ident, $table:ident, $field:ident) => {
        Key {
            name: concat!(stringify!($table), ".", stringify!($field)),
            live: key!(@ $when),
            same: |a, b| a.$table.$field == b.$table.$field,
            keep: |new, old| new.$table.$field = old.$table.$field.clone(),
        }
    };
    ($when:ident, $table:ident) => {
        Key {
            name: concat!("[", stringify!($table), "]"),
            live: key!(@ $when),
            same: |a, b| a.$table == b.$table,
            keep: |new, old| new.$table = old.$table.clone(),
        }
    };
    (@ live) => {
        true
    };
    (@ restart) => {
        false
    };
}

/// Every key of the file. The live ones are read when a connection starts (see each
/// protocol's session settings and the driver); the others were used to build something at
/// start that a reload does not rebuild.
const KEYS: &[Key] = &[
    key!(restart, store),
    // The host name is in the store's file names and the queue's EHLO as well as greetings.
    key!(restart, server, hostname),
    key!(restart, server, logging),
    // The log's subscriber is made once, at start.
    key!(restart, server, log_format),
    key!(restart, server, threadcount),
    key!(restart, server, listen_address),
    key!(restart, server, user),
    key!(restart, server, group),
    key!(restart, smtp, port),
    key!(restart, smtp, submission_port),
    key!(restart, smtp, smtps_port),
    key!(live, smtp, relay_networks),
    key!(live, smtp, max_message_size),
    key!(live, smtp, require_own_sender),
    key!(restart, pop3),
    key!(restart, imap),
    key!(live, tls, cert_file),
    key!(live, tls, key_file),
    key!(live, tls, plaintext_auth),
    key!(restart, limits, socket_backlog),
    key!(restart, limits, socket_max),
    key!(restart, limits, per_address_max),
    key!(restart, limits, reserved_for_authenticated),
    key!(restart, limits, input_memory),
    // Read by the administration tool only.
    key!(live, limits, socket_min),
    key!(live, limits, socket_threshold),
    key!(live, limits, write_timeout),
    key!(live, limits, smtp_command_timeout),
    key!(live, limits, smtp_data_timeout),
    key!(live, limits, pop3_idle_timeout),
    key!(live, limits, imap_idle_timeout),
    key!(live, limits, prelogin_timeout),
    // Read by `createquotafile`, never by the server.
    key!(live, quota),
    key!(restart, outbound),
    key!(restart, queue),
    key!(restart, auth),
    key!(restart, directory),
    // The metrics page's listener is bound at start, like the others.
    key!(restart, metrics),
];

/// Reads the file `running` came from and the TLS certificate again. Nothing is applied
/// here: the caller swaps the result in.
pub fn reload(running: &Config) -> Result<Reloaded, Refused> {
    let file = match &running.source {
        Source::File(path) => Config::load(path)?,
        // Started on the built-in defaults: no file to read, only the certificate.
        Source::Defaults => running.clone(),
    };
    let (config, changed, need_restart) = merge(running, file);
    // Checked at load between keys that may now come from different files.
    if config.limits.input_memory < config.smtp.max_message_size {
        return Err(Refused::Settings(format!(
            "smtp.max_message_size ({} bytes) is larger than the running limits.input_memory ({} bytes), which changes only at a restart",
            config.smtp.max_message_size, config.limits.input_memory
        )));
    }
    let tls = tls::acceptor(&config)?;
    Ok(Reloaded {
        config,
        tls,
        changed,
        need_restart,
    })
}

/// `file` with the running value of every key that cannot change while running, and the
/// names of the changed keys: applied, and left for a restart.
fn merge(running: &Config, file: Config) -> (Config, Vec<&'static str>, Vec<&'static str>) {
    let mut merged = file;
    let (mut changed, mut need_restart) = (Vec::new(), Vec::new());
    for key in KEYS {
        if (key.same)(running, &merged) {
            continue;
        }
        if key.live {
            changed.push(key.name);
        } else {
            need_restart.push(key.name);
            (key.keep)(&mut merged, running);
        }
    }
    (merged, changed, need_restart)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Config {
        Config::parse(text, Path::new("/srv/dirmail.toml")).unwrap()
    }

    #[test]
    fn live_keys_apply_and_the_others_keep_their_running_value() {
        let running = parse("[smtp]\nport = 2525\n[limits]\nsocket_max = 100\n");
        let file = parse(
            "[smtp]\nport = 25\nrelay_networks = [\"192.0.2.0/24\"]\n\
             [limits]\nsocket_max = 200\nprelogin_timeout = \"5s\"\n\
             [directory]\nurl = \"ldaps://dc.example.jp\"\nbase_dn = \"DC=example,DC=jp\"\n\
             netbios_domain = \"EXAMPLE\"\nmail_group = \"IMSUsers\"\n",
        );
        let (merged, changed, need_restart) = merge(&running, file);
        assert_eq!(changed, ["smtp.relay_networks", "limits.prelogin_timeout"]);
        // The two defaults that follow socket_max moved with it.
        assert_eq!(
            need_restart,
            [
                "smtp.port",
                "limits.socket_max",
                "limits.per_address_max",
                "limits.reserved_for_authenticated",
                "[directory]"
            ]
        );
        assert_eq!(merged.smtp.port, Some(2525));
        assert_eq!(merged.limits.socket_max, 100);
        assert!(merged.directory.is_none());
        assert_eq!(merged.smtp.relay_networks.len(), 1);
        assert_eq!(merged.limits.prelogin_timeout.as_secs(), 5);
        // Nothing left over: merging again finds no difference.
        let (_, changed, need_restart) = merge(&merged, merged.clone());
        assert!(changed.is_empty() && need_restart.is_empty());
    }

    /// Does not build when a key is added to the configuration: give it a line in KEYS
    /// (live or restart), then add it here.
    #[test]
    fn every_key_has_a_line() {
        use dirmail_config::{Limits, ServerConfig, SmtpConfig, TlsConfig};
        let Config {
            source: _,
            store: _,
            server:
                ServerConfig {
                    hostname: _,
                    logging: _,
                    log_format: _,
                    threadcount: _,
                    listen_address: _,
                    user: _,
                    group: _,
                },
            smtp:
                SmtpConfig {
                    port: _,
                    submission_port: _,
                    smtps_port: _,
                    relay_networks: _,
                    max_message_size: _,
                    require_own_sender: _,
                },
            pop3: _,
            imap: _,
            tls:
                TlsConfig {
                    cert_file: _,
                    key_file: _,
                    plaintext_auth: _,
                },
            limits:
                Limits {
                    socket_backlog: _,
                    socket_max: _,
                    socket_min: _,
                    socket_threshold: _,
                    per_address_max: _,
                    write_timeout: _,
                    smtp_command_timeout: _,
                    smtp_data_timeout: _,
                    pop3_idle_timeout: _,
                    imap_idle_timeout: _,
                    input_memory: _,
                    prelogin_timeout: _,
                    reserved_for_authenticated: _,
                },
            quota: _,
            outbound: _,
            queue: _,
            directory: _,
            auth: _,
            metrics: _,
        } = parse("");
    }
}
