//! `dirmail serve`: binds the listeners, becomes the service user if one is set
//! ([`privileges`](super::privileges)), accepts connections under the connection limit and
//! each address's share of it ([`admission`](super::admission)), hands each to its protocol
//! driver, and stops gracefully: on Ctrl-C or SIGTERM the listeners close, idle sessions are
//! told goodbye, and in-flight deliveries finish before the process exits. On a reload request
//! (SIGHUP) the settings are read again ([`reload`](super::reload)) and the connections
//! accepted after it get the new ones; none in progress is touched.
//!
//! Every connection is an open file, so at start the soft open-file limit is raised to the hard
//! one and a `socket_max` that cannot fit under it is refused ([`fit_open_files`]). Should
//! `accept` still run out of descriptors (or memory), the accept loop pauses a little longer
//! each time, up to a second, and logs the failures once per interval with their count
//! ([`AcceptFailures`]) rather than once per attempt: a flood must not fill the log.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use super::admission::{Admission, Refusal};
use super::backend::Backend;
use super::budget::InputBudget;
use super::control::{self, ControlSocket};
use super::driver::Accepted;
use super::hub::Hub;
use super::metrics::Metrics;
use super::notify::{self, State};
use super::privileges::{self, PrivilegeError};
use super::reload;
use super::sessions::Sessions;
use super::shared::{Service, Shared, stopped};
use super::throttle::Throttle;
use super::tls;
use dirmail_config::Config;
use dirmail_proto::session::{Busy, Session};
use dirmail_proto::{imap, pop3, smtp};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Store(#[from] dirmail_store::StoreError),
    #[error("{0}")]
    Start(String),
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
    #[error("{0}")]
    Privileges(#[from] PrivilegeError),
    #[error(
        "limits.socket_max ({socket_max}) does not fit the open-file limit ({limit}): the server needs {needed} descriptors (socket_max, {listeners} listeners, and {DESCRIPTOR_MARGIN} for the store, the log and deliveries in flight). Lower limits.socket_max to at most {fits}, or raise the limit (ulimit -n; LimitNOFILE= in a systemd unit)"
    )]
    OpenFiles {
        socket_max: u32,
        limit: u64,
        needed: u64,
        listeners: usize,
        fits: u64,
    },
    #[error("cannot listen on {addr} for {service}: {source}")]
    Bind {
        service: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A bound listener, before the server runs.
#[derive(Debug)]
pub struct Bound {
    pub service: Service,
    pub listener: TcpListener,
}

/// Binds every enabled listener. Split from [`run`] so the caller can print the addresses
/// (port 0 picks a free one) before serving.
pub async fn bind(config: &Config) -> Result<Vec<Bound>, ServeError> {
    let mut bound = Vec::new();
    for (service, port) in listener_ports(config) {
        let addr = SocketAddr::new(config.server.listen_address, port);
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        };
        let listener = socket
            .and_then(|s| {
                s.set_reuseaddr(true)?;
                s.bind(addr)?;
                s.listen(config.limits.socket_backlog)
            })
            .map_err(|source| ServeError::Bind {
                service: service.name(),
                addr,
                source,
            })?;
        bound.push(Bound { service, listener });
    }
    Ok(bound)
}

/// The enabled listeners and their ports.
fn listener_ports(config: &Config) -> Vec<(Service, u16)> {
    [
        (Service::Smtp, config.smtp.port),
        (Service::Submission, config.smtp.submission_port),
        (Service::Smtps, config.smtp.smtps_port),
        (Service::Pop3, config.pop3.port),
        (Service::Pop3s, config.pop3.pop3s_port),
        (Service::Imap, config.imap.port),
        (Service::Imaps, config.imap.imaps_port),
    ]
    .into_iter()
    .filter_map(|(service, port)| Some((service, port?)))
    .collect()
}

/// Descriptors the server needs besides one per connection and one per listener: standard
/// input, output and error, the runtime's own (epoll, wake-ups), the store's database and its
/// journal, and the files and directories of deliveries and folder scans in flight.
pub const DESCRIPTOR_MARGIN: u64 = 64;

/// Raises the soft open-file limit (`RLIMIT_NOFILE`) to the hard one, then checks that
/// `socket_max` connections fit under it with the listeners and [`DESCRIPTOR_MARGIN`]. Returns
/// the limit now in force. Where the platform reports no limit, there is nothing to check.
pub fn fit_open_files(config: &Config) -> Result<Option<u64>, ServeError> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let before = getrlimit(Resource::Nofile);
    let mut limit = before.current;
    if let (Some(soft), Some(hard)) = (before.current, before.maximum)
        && soft < hard
    {
        let raised = Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {
                tracing::info!("open-file limit raised from {soft} to {hard}");
                limit = Some(hard);
            }
            Err(e) => tracing::warn!("cannot raise the open-file limit from {soft}: {e}"),
        }
    }
    let Some(limit) = limit else {
        return Ok(None);
    };
    let listeners = listener_ports(config).len();
    let socket_max = config.limits.socket_max;
    let overhead = listeners as u64 + DESCRIPTOR_MARGIN;
    let needed = u64::from(socket_max) + overhead;
    if needed > limit {
        return Err(ServeError::OpenFiles {
            socket_max,
            limit,
            needed,
            listeners,
            fits: limit.saturating_sub(overhead),
        });
    }
    Ok(Some(limit))
}

/// The TLS acceptor: the configured certificate, or the store's self-signed one.
pub fn tls_acceptor(config: &Config) -> Result<TlsAcceptor, ServeError> {
    Ok(tls::acceptor(config)?)
}

/// How long in-flight sessions get to finish once the server is stopping.
const GRACE: Duration = Duration::from_secs(30);

/// Everything checked before the server says it is ready: the bound listeners, the service
/// user, the control socket, the store, `[directory]` (R21) and the TLS certificate.
pub struct Prepared {
    pub backend: Backend,
    pub tls: TlsAcceptor,
    pub listeners: Vec<Bound>,
    /// The metrics page's listener, when `[metrics] listen` is set.
    pub metrics: Option<TcpListener>,
    /// `None` only when the store's path is too long for a socket address.
    pub control: Option<ControlSocket>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}

/// Binding comes first and is the only thing done as root when a service user is set: the
/// store is opened and the certificate read as that user, so that what the server makes is
/// the user's, and what a reload reads again is readable by it.
pub async fn prepare(config: Arc<Config>) -> Result<Prepared, ServeError> {
    fit_open_files(&config)?;
    let user = privileges::service_user(&config)?;
    let listeners = bind(&config).await?;
    let metrics = match config.metrics.listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind {
                    service: "metrics",
                    addr,
                    source,
                })?,
        ),
        None => None,
    };
    privileges::become_user(user.as_ref())?;
    if let Some(user) = &user {
        privileges::check_access(&config, user)?;
    }
    // Before the store is opened: a second server on this store is refused here, since opening
    // the store sweeps the spool and the queue of what a crash left (the first server's
    // messages in flight, here). After the privilege drop, so the socket is the service user's
    // and `dirmail status` run as that user can connect.
    dirmail_store::private_dir(&config.store.data_dir)?;
    let control = control::bind(&config.store.data_dir).map_err(ServeError::Start)?;
    let backend = Backend::open(Arc::clone(&config)).map_err(ServeError::Start)?;
    let tls = tls_acceptor(&config)?;
    Ok(Prepared {
        backend,
        tls,
        listeners,
        metrics,
        control,
    })
}

/// Serves until `shutdown` completes, then stops gracefully. Each message on `reloads` reads
/// the settings again; when its senders are gone, only `shutdown` is waited for.
pub async fn run(
    config: Arc<Config>,
    prepared: Prepared,
    shutdown: impl Future<Output = ()>,
    mut reloads: mpsc::Receiver<()>,
) -> Result<(), ServeError> {
    let Prepared {
        backend,
        tls,
        listeners,
        metrics,
        control: control_socket,
    } = prepared;
    let mut bound_at: Vec<(&'static str, SocketAddr)> = listeners
        .iter()
        .filter_map(|b| Some((b.service.name(), b.listener.local_addr().ok()?)))
        .collect();
    if let Some(addr) = metrics.as_ref().and_then(|m| m.local_addr().ok()) {
        bound_at.push(("metrics", addr));
    }
    let backend = Arc::new(backend);
    let (stop_tx, stopping) = watch::channel(false);
    let (outbound, runner) = dirmail_outbound::runner::start(
        &config,
        backend.queue.clone(),
        Arc::clone(&backend) as Arc<dyn dirmail_outbound::Mailboxes>,
        stopping.clone(),
    )
    .map_err(ServeError::Start)?;
    let shared = Arc::new(Shared {
        config: Arc::clone(&config),
        backend,
        tls,
        throttle: Arc::new(Throttle::default()),
        input_budget: InputBudget::new(
            usize::try_from(config.limits.input_memory).unwrap_or(usize::MAX),
        ),
        imap: Arc::new(Hub::default()),
        outbound,
        stopping,
        sessions: Arc::new(Sessions::default()),
        metrics: Arc::new(Metrics::new(listeners.iter().map(|b| b.service).collect())),
    });
    let facts = Arc::new(control::Facts {
        listeners: bound_at,
    });
    let control = control_socket
        .map(|socket| tokio::spawn(control::serve(socket, Arc::clone(&shared), facts)));
    if let Some(listener) = metrics {
        tokio::spawn(super::metrics::serve(listener, Arc::clone(&shared)));
    }
    super::housekeeping::spawn_tmp_sweeper(config.store.mailroot.clone(), shared.stopping.clone());
    let stopping = shared.stopping.clone();
    // What new connections get; a reload replaces it.
    let (current_tx, current) = watch::channel(shared);
    let admission = Admission::new(
        config.limits.socket_max,
        config.limits.per_address_max,
        config.limits.reserved_for_authenticated,
    );
    // Every session holds a sender; when all are dropped, `recv` returns None: all done.
    let (alive_tx, mut all_done) = mpsc::channel::<()>(1);
    // Out of descriptors is the whole process's trouble: one pause and one log for every
    // listener.
    let failures = Arc::new(std::sync::Mutex::new(AcceptFailures::default()));
    let mut accept_loops = Vec::new();
    for bound in listeners {
        accept_loops.push(tokio::spawn(accept_loop(
            bound,
            current.clone(),
            stopping.clone(),
            Arc::clone(&admission),
            Arc::clone(&failures),
            alive_tx.clone(),
        )));
    }
    drop(alive_tx);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            request = reloads.recv() => match request {
                Some(()) => reload_settings(&current_tx).await,
                None => {
                    (&mut shutdown).await;
                    break;
                }
            },
        }
    }
    notify::notify(State::Stopping);
    tracing::info!("stopping: listeners close, sessions finish");
    let _ = stop_tx.send(true);
    for handle in accept_loops {
        let _ = handle.await;
    }
    if tokio::time::timeout(GRACE, all_done.recv()).await.is_err() {
        tracing::warn!("some sessions did not finish within {GRACE:?}; stopping anyway");
    }
    let _ = runner.await;
    // Its socket file goes with it.
    if let Some(control) = control {
        let _ = control.await;
    }
    Ok(())
}

/// Reads the settings again and, if they pass, makes them the ones new connections get. The
/// log says what changed, what needs a restart, or why nothing did.
async fn reload_settings(current: &watch::Sender<Arc<Shared>>) {
    notify::notify(State::Reloading);
    let running = Arc::clone(&current.borrow());
    let config = Arc::clone(&running.config);
    let file = match &config.source {
        dirmail_config::Source::File(path) => path.display().to_string(),
        dirmail_config::Source::Defaults => "the built-in defaults".to_owned(),
    };
    // Reading files (and perhaps making the self-signed certificate): off the async threads.
    let outcome = tokio::task::spawn_blocking(move || reload::reload(&config)).await;
    match outcome {
        Ok(Ok(reloaded)) => {
            if !reloaded.need_restart.is_empty() {
                tracing::warn!(
                    "reload: {} changed in {file} but take effect only at a restart; the running values stay",
                    reloaded.need_restart.join(", ")
                );
            }
            if reloaded.changed.is_empty() {
                tracing::info!("reloaded {file}: no setting for new connections changed");
            } else {
                tracing::info!(
                    "reloaded {file}: {} changed for new connections",
                    reloaded.changed.join(", ")
                );
            }
            tracing::info!("reloaded the TLS certificate and key");
            let next = running.with_settings(Arc::new(reloaded.config), reloaded.tls);
            current.send_replace(Arc::new(next));
        }
        Ok(Err(why)) => {
            tracing::error!("reload refused: {why}; the running settings stay");
        }
        Err(e) => tracing::error!("reload refused: {e}; the running settings stay"),
    }
    notify::notify(State::Ready);
}

async fn accept_loop(
    bound: Bound,
    current: watch::Receiver<Arc<Shared>>,
    mut stopping: watch::Receiver<bool>,
    admission: Arc<Admission>,
    failures: Arc<std::sync::Mutex<AcceptFailures>>,
    alive: mpsc::Sender<()>,
) {
    // Whether this loop's last accept failed, so a success takes the lock only then.
    let mut recovering = false;
    loop {
        let accepted = tokio::select! {
            accepted = bound.listener.accept() => accepted,
            _ = stopped(&mut stopping) => return,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                recovering = true;
                let pause = lock_failures(&failures).failed(&e, Instant::now(), bound.service);
                if !pause.is_zero() {
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = stopped(&mut stopping) => return,
                    }
                }
                continue;
            }
        };
        if recovering {
            recovering = false;
            lock_failures(&failures).succeeded(Instant::now(), bound.service);
        }
        let _ = tcp.set_nodelay(true);
        let ticket = admission.admit(peer.ip());
        // The settings in force now stay this connection's to its end.
        let shared = Arc::clone(&current.borrow());
        match ticket {
            Ok(_) => shared.metrics.connection_accepted(bound.service),
            Err(_) => shared.metrics.connection_refused(bound.service),
        }
        let alive = alive.clone();
        let service = bound.service;
        tokio::spawn(async move {
            let _alive = alive;
            match ticket {
                Ok(ticket) => handle(service, Accepted { tcp, ticket }, peer, shared).await,
                Err(refusal) => {
                    tracing::debug!(service = service.name(), %peer, ?refusal, "connection refused: too many connections");
                    let write_timeout = shared.config.limits.write_timeout;
                    refuse_busy(service, tcp, refusal, write_timeout).await;
                }
            }
        });
    }
}

async fn handle(service: Service, accepted: Accepted, peer: SocketAddr, shared: Arc<Shared>) {
    tracing::debug!(service = service.name(), %peer, "connection");
    // Listed for `dirmail status` until this returns, however the session ends.
    let session = shared.sessions.register(service, peer);
    let result = match service {
        Service::Smtp | Service::Submission | Service::Smtps => {
            super::smtp::serve(service, accepted, peer, shared, session).await
        }
        Service::Pop3 | Service::Pop3s => {
            super::pop3::serve(service, accepted, peer, shared, session).await
        }
        Service::Imap | Service::Imaps => {
            super::imap::serve(service, accepted, peer, shared, session).await
        }
    };
    match result {
        // `Conn` gave up on a client that stopped reading, or on a TLS handshake.
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            tracing::info!(service = service.name(), %peer, "connection dropped: {e}");
        }
        Err(e) => tracing::debug!(service = service.name(), %peer, "connection ended: {e}"),
        Ok(()) => {}
    }
}

/// Over the connection limit or the address's share: say so in the protocol's words, then
/// close. A client that reads nothing gets `write_timeout`, as in a session.
async fn refuse_busy(
    service: Service,
    mut tcp: TcpStream,
    refusal: Refusal,
    write_timeout: Duration,
) {
    use tokio::io::AsyncWriteExt;
    let why = match refusal {
        Refusal::Full => Busy::Full,
        Refusal::AddressShare => Busy::AddressShare,
    };
    let mut line = Vec::new();
    match service {
        Service::Smtp | Service::Submission => smtp::Session::write_busy(why, &mut line),
        Service::Pop3 => pop3::Session::write_busy(why, &mut line),
        Service::Imap => imap::Session::write_busy(why, &mut line),
        // Implicit TLS: nothing can be said before the handshake.
        Service::Smtps | Service::Pop3s | Service::Imaps => {}
    }
    let _ = tokio::time::timeout(write_timeout, async {
        tcp.write_all(&line).await?;
        tcp.shutdown().await
    })
    .await;
}

/// How often the accept loops may log their failures.
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// The first pause after a shortage of descriptors or memory, and the longest.
const SHORTAGE_PAUSE: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// The accept loops' failures, shared by all listeners: how long to pause after each, and
/// when to log them. A shortage
/// (EMFILE, ENFILE, ENOBUFS, ENOMEM) does not pass by itself in a moment: accepting again at
/// once fails again, so each one in a row doubles the pause, up to a second; a success resets
/// it. Other failures (a client gone before it was accepted) need no pause. Either way the log
/// gets at most one line per [`ACCEPT_LOG_INTERVAL`], with the count since the last one.
#[derive(Debug, Default)]
struct AcceptFailures {
    /// Failures not yet in the log.
    unlogged: u64,
    last_error: String,
    logged_at: Option<Instant>,
    /// Lines logged so far.
    reports: u64,
    pause: Duration,
}

impl AcceptFailures {
    /// Counts a failure; returns how long to wait before accepting again.
    fn failed(&mut self, error: &std::io::Error, now: Instant, service: Service) -> Duration {
        self.unlogged += 1;
        self.last_error = error.to_string();
        self.log_if_due(now, service);
        if is_shortage(error) {
            self.pause = (self.pause * 2).clamp(SHORTAGE_PAUSE.0, SHORTAGE_PAUSE.1);
            self.pause
        } else {
            Duration::ZERO
        }
    }

    fn succeeded(&mut self, now: Instant, service: Service) {
        self.pause = Duration::ZERO;
        if self.unlogged > 0 {
            self.log_if_due(now, service);
        }
    }

    fn log_if_due(&mut self, now: Instant, service: Service) {
        let due = self
            .logged_at
            .is_none_or(|at| now.saturating_duration_since(at) >= ACCEPT_LOG_INTERVAL);
        if !due {
            return;
        }
        tracing::warn!(
            service = service.name(),
            "accept failed {} time(s) since the last report; the last: {}",
            self.unlogged,
            self.last_error
        );
        self.unlogged = 0;
        self.logged_at = Some(now);
        self.reports += 1;
    }
}

fn lock_failures(
    failures: &std::sync::Mutex<AcceptFailures>,
) -> std::sync::MutexGuard<'_, AcceptFailures> {
    // A poisoned lock means a panic while counting; the counts are still usable.
    failures.lock().unwrap_or_else(|e| e.into_inner())
}

/// Out of descriptors or memory: accepting again at once would fail again.
fn is_shortage(error: &std::io::Error) -> bool {
    use rustix::io::Errno;
    let Some(code) = error.raw_os_error() else {
        return false;
    };
    [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::NOMEM]
        .iter()
        .any(|errno| errno.raw_os_error() == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emfile() -> std::io::Error {
        std::io::Error::from_raw_os_error(rustix::io::Errno::MFILE.raw_os_error())
    }

    #[test]
    fn a_flood_of_accept_failures_costs_one_line_per_interval_and_a_growing_pause() {
        let mut failures = AcceptFailures::default();
        let start = Instant::now();
        let mut pauses = Vec::new();
        // 10,000 failures in 35 seconds (the issue saw 8,624 in a few).
        for i in 0..10_000u32 {
            let now = start + Duration::from_micros(u64::from(i) * 3_500);
            pauses.push(failures.failed(&emfile(), now, Service::Pop3));
        }
        assert_eq!(failures.reports, 4, "at 0, 10, 20 and 30 seconds");
        assert_eq!(pauses.first(), Some(&SHORTAGE_PAUSE.0));
        assert_eq!(pauses.get(1), Some(&(SHORTAGE_PAUSE.0 * 2)));
        assert_eq!(pauses.last(), Some(&SHORTAGE_PAUSE.1));
        // A success ends the pause; what was not yet reported is, once the interval is over.
        failures.succeeded(start + Duration::from_secs(36), Service::Pop3);
        assert_eq!((failures.pause, failures.reports), (Duration::ZERO, 4));
        failures.succeeded(start + Duration::from_secs(41), Service::Pop3);
        assert_eq!((failures.reports, failures.unlogged), (5, 0));
    }

    #[test]
    fn only_a_shortage_pauses_the_accept_loop() {
        let aborted = std::io::Error::from(std::io::ErrorKind::ConnectionAborted);
        assert!(is_shortage(&emfile()));
        assert!(!is_shortage(&aborted));
        let mut failures = AcceptFailures::default();
        assert_eq!(
            failures.failed(&aborted, Instant::now(), Service::Imap),
            Duration::ZERO
        );
    }
}
