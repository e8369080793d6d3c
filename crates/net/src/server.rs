//! `dirmail serve`: binds the listeners, accepts connections under the connection limit and
//! each address's share of it ([`admission`](super::admission)), hands each to its protocol
//! driver, and stops gracefully: on Ctrl-C or SIGTERM the listeners close, idle sessions are
//! told goodbye, and in-flight deliveries finish before the process exits.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use super::admission::{Admission, Refusal};
use super::backend::Backend;
use super::budget::InputBudget;
use super::hub::Hub;
use super::shared::{Service, Shared, stopped};
use super::throttle::Throttle;
use super::tls::{self, CertPaths};
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
    let ports = [
        (Service::Smtp, config.smtp.port),
        (Service::Submission, config.smtp.submission_port),
        (Service::Smtps, config.smtp.smtps_port),
        (Service::Pop3, config.pop3.port),
        (Service::Pop3s, config.pop3.pop3s_port),
        (Service::Imap, config.imap.port),
        (Service::Imaps, config.imap.imaps_port),
    ];
    let mut bound = Vec::new();
    for (service, port) in ports {
        let Some(port) = port else { continue };
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

/// The TLS acceptor: the configured certificate, or the store's self-signed one.
pub fn tls_acceptor(config: &Config) -> Result<TlsAcceptor, ServeError> {
    let paths = match (&config.tls.cert_file, &config.tls.key_file) {
        (Some(cert), Some(key)) => CertPaths {
            cert: cert.clone(),
            key: key.clone(),
        },
        _ => {
            let paths = CertPaths::in_store(&config.store.data_dir);
            if tls::ensure_self_signed(&paths, &config.server.hostname)? {
                tracing::info!(cert = %paths.cert.display(), "made a self-signed certificate");
            }
            paths
        }
    };
    Ok(TlsAcceptor::from(tls::server_config(&paths)?))
}

/// How long in-flight sessions get to finish once the server is stopping.
const GRACE: Duration = Duration::from_secs(30);

/// Everything checked before the server says it is ready: the store, `[directory]` (R21),
/// the TLS certificate, and the bound listeners.
pub struct Prepared {
    pub backend: Backend,
    pub tls: TlsAcceptor,
    pub listeners: Vec<Bound>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}

pub async fn prepare(config: Arc<Config>) -> Result<Prepared, ServeError> {
    let backend = Backend::open(Arc::clone(&config)).map_err(ServeError::Start)?;
    let tls = tls_acceptor(&config)?;
    let listeners = bind(&config).await?;
    Ok(Prepared {
        backend,
        tls,
        listeners,
    })
}

/// Serves until `shutdown` completes, then stops gracefully.
pub async fn run(
    config: Arc<Config>,
    prepared: Prepared,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let Prepared {
        backend,
        tls,
        listeners,
    } = prepared;
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
        throttle: Throttle::default(),
        input_budget: InputBudget::new(
            usize::try_from(config.limits.input_memory).unwrap_or(usize::MAX),
        ),
        imap: Hub::default(),
        outbound,
        stopping,
    });
    super::housekeeping::spawn_tmp_sweeper(config.store.mailroot.clone(), shared.stopping.clone());
    let admission = Admission::new(config.limits.socket_max, config.limits.per_address_max);
    // Every session holds a sender; when all are dropped, `recv` returns None: all done.
    let (alive_tx, mut all_done) = mpsc::channel::<()>(1);
    let mut accept_loops = Vec::new();
    for bound in listeners {
        accept_loops.push(tokio::spawn(accept_loop(
            bound,
            Arc::clone(&shared),
            Arc::clone(&admission),
            alive_tx.clone(),
        )));
    }
    drop(alive_tx);
    shutdown.await;
    tracing::info!("stopping: listeners close, sessions finish");
    let _ = stop_tx.send(true);
    for handle in accept_loops {
        let _ = handle.await;
    }
    if tokio::time::timeout(GRACE, all_done.recv()).await.is_err() {
        tracing::warn!("some sessions did not finish within {GRACE:?}; stopping anyway");
    }
    let _ = runner.await;
    Ok(())
}

async fn accept_loop(
    bound: Bound,
    shared: Arc<Shared>,
    admission: Arc<Admission>,
    alive: mpsc::Sender<()>,
) {
    let mut stopping = shared.stopping.clone();
    loop {
        let accepted = tokio::select! {
            accepted = bound.listener.accept() => accepted,
            _ = stopped(&mut stopping) => return,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors and the like: wait a moment rather than spin.
                tracing::warn!(service = bound.service.name(), "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let ticket = admission.admit(peer.ip());
        let shared = Arc::clone(&shared);
        let alive = alive.clone();
        let service = bound.service;
        tokio::spawn(async move {
            let _alive = alive;
            match ticket {
                Ok(_ticket) => handle(service, tcp, peer, shared).await,
                Err(refusal) => {
                    tracing::debug!(service = service.name(), %peer, ?refusal, "connection refused: too many connections");
                    let write_timeout = shared.config.limits.write_timeout;
                    refuse_busy(service, tcp, refusal, write_timeout).await;
                }
            }
        });
    }
}

async fn handle(service: Service, tcp: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    tracing::debug!(service = service.name(), %peer, "connection");
    let result = match service {
        Service::Smtp | Service::Submission | Service::Smtps => {
            super::smtp::serve(service, tcp, peer, shared).await
        }
        Service::Pop3 | Service::Pop3s => super::pop3::serve(service, tcp, peer, shared).await,
        Service::Imap | Service::Imaps => super::imap::serve(service, tcp, peer, shared).await,
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
