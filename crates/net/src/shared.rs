//! What every connection of a running server shares, and what kind of listener it came
//! through. Below the drivers and [`server`](super::server) alike, so neither reaches up.
//!
//! A connection takes the [`Shared`] in force when it is accepted and keeps it to the end: a
//! reload ([`reload`](super::reload)) makes a new one with the new settings for the
//! connections that come after, and the sessions in progress go on as they started.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::backend::Backend;
use super::budget::InputBudget;
use super::hub::Hub;
use super::metrics::Metrics;
use super::sessions::Sessions;
use super::throttle::Throttle;
use dirmail_config::Config;

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// SMTP relay/MX port (STARTTLS offered).
    Smtp,
    /// Submission (RFC 6409): AUTH required.
    Submission,
    /// Submission over implicit TLS (RFC 8314).
    Smtps,
    Pop3,
    /// POP3 over implicit TLS.
    Pop3s,
    /// IMAP (STARTTLS offered).
    Imap,
    /// IMAP over implicit TLS.
    Imaps,
}

impl Service {
    /// Every listener kind, in the order the server prints them.
    pub const ALL: [Service; 7] = [
        Service::Smtp,
        Service::Submission,
        Service::Smtps,
        Service::Pop3,
        Service::Pop3s,
        Service::Imap,
        Service::Imaps,
    ];

    /// The protocol spoken, whatever the port: `smtp`, `pop3` or `imap`.
    pub fn protocol(self) -> &'static str {
        match self {
            Service::Smtp | Service::Submission | Service::Smtps => "smtp",
            Service::Pop3 | Service::Pop3s => "pop3",
            Service::Imap | Service::Imaps => "imap",
        }
    }

    /// Its place in [`Service::ALL`], for counters kept per listener.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Service::Smtp => "smtp",
            Service::Submission => "submission",
            Service::Smtps => "smtps",
            Service::Pop3 => "pop3",
            Service::Pop3s => "pop3s",
            Service::Imap => "imap",
            Service::Imaps => "imaps",
        }
    }

    pub fn implicit_tls(self) -> bool {
        matches!(self, Service::Smtps | Service::Pop3s | Service::Imaps)
    }
}

/// What every connection of the server shares. `config` and `tls` are the settings in force
/// when the connection came; everything else is the one process-wide instance, the same
/// through every reload.
pub struct Shared {
    pub config: Arc<Config>,
    pub backend: Arc<Backend>,
    pub tls: TlsAcceptor,
    pub throttle: Arc<Throttle>,
    /// The input memory all sessions may hold together (`[limits] input_memory`).
    pub input_budget: Arc<InputBudget>,
    /// IMAP sessions waiting for news of the mailboxes they have open.
    pub imap: Arc<Hub>,
    /// Wakes the outbound queue runner when a message is queued.
    pub outbound: dirmail_outbound::QueueHandle,
    /// Becomes `true` when the server is stopping.
    pub stopping: watch::Receiver<bool>,
    /// The sessions open now, for `dirmail status` and the metrics page.
    pub sessions: Arc<Sessions>,
    /// The counters of the metrics page, kept whether or not it is served (a few atomics).
    pub metrics: Arc<Metrics>,
}

impl Shared {
    /// The same server with reloaded settings, for the connections still to come.
    pub fn with_settings(&self, config: Arc<Config>, tls: TlsAcceptor) -> Shared {
        Shared {
            config,
            tls,
            backend: Arc::clone(&self.backend),
            throttle: Arc::clone(&self.throttle),
            input_budget: Arc::clone(&self.input_budget),
            imap: Arc::clone(&self.imap),
            outbound: self.outbound.clone(),
            stopping: self.stopping.clone(),
            sessions: Arc::clone(&self.sessions),
            metrics: Arc::clone(&self.metrics),
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// Completes once the server is stopping (or the sender is gone, which means the same).
pub async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|s| *s).await;
}
