//! The DNS side of routing: hickory's resolver, built from `[outbound]`, asks for MX and
//! A/AAAA records and sorts each answer into found, absent or failed; `route.rs` decides.
//!
//! With `dns_servers` the resolver asks those (UDP, then TCP) and nothing else; without, the
//! system's (`/etc/resolv.conf`). Never `/etc/hosts`: mail routing is the DNS's, as in other
//! MTAs, so a test's records come from the test's DNS server alone. Every name is asked fully
//! qualified, so no search domain is ever tried.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData};
use hickory_resolver::{Resolver, TokioResolver};

use dirmail_config::{OutboundConfig, RelayHost};

use crate::route::{
    self, Destination, Exchange, Hop, HostAddresses, LookupFailure, MxRecord, RouteError,
};

/// How long one DNS question waits, and how often it is asked, unless the caller says
/// otherwise (tests do, to see a dead server's failure sooner).
#[derive(Debug, Clone, Copy)]
pub struct DnsTimeouts {
    pub timeout: Duration,
    pub attempts: usize,
}

impl Default for DnsTimeouts {
    fn default() -> Self {
        DnsTimeouts {
            timeout: Duration::from_secs(5),
            attempts: 2,
        }
    }
}

/// Turns destinations into hops. One per server: the resolver inside caches answers (positive
/// and negative, by their TTLs) for every delivery.
pub struct Router {
    resolver: TokioResolver,
    relay_host: Option<RelayHost>,
    port: u16,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("relay_host", &self.relay_host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// The resolver could not be set up: `/etc/resolv.conf` unreadable or without a server.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the DNS resolver for outbound mail: {0}")]
pub struct SetupError(String);

impl Router {
    /// Must be called inside a tokio runtime.
    pub fn new(config: &OutboundConfig) -> Result<Router, SetupError> {
        Router::with_timeouts(config, DnsTimeouts::default())
    }

    pub fn with_timeouts(
        config: &OutboundConfig,
        timeouts: DnsTimeouts,
    ) -> Result<Router, SetupError> {
        let mut builder = if config.dns_servers.is_empty() {
            TokioResolver::builder_tokio().map_err(|e| SetupError(e.to_string()))?
        } else {
            let servers = config.dns_servers.iter().map(name_server).collect();
            Resolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], servers),
                TokioRuntimeProvider::default(),
            )
        };
        let options: &mut ResolverOpts = builder.options_mut();
        options.use_hosts_file = ResolveHosts::Never;
        options.timeout = timeouts.timeout;
        options.attempts = timeouts.attempts;
        let resolver = builder.build().map_err(|e| SetupError(e.to_string()))?;
        Ok(Router {
            resolver,
            relay_host: config.relay_host.clone(),
            port: config.port,
        })
    }

    /// Where mail for `destination` goes, in the order to try. A smarthost takes everything;
    /// otherwise a domain literal is its address, and a domain goes through its MX records
    /// (RFC 5321 §5.1), or itself as an implicit MX when it has none.
    pub async fn route(&self, destination: &Destination) -> Result<Vec<Hop>, RouteError> {
        if let Some(relay) = &self.relay_host {
            return self.smarthost(relay).await;
        }
        match destination {
            Destination::Literal(ip) => Ok(vec![Hop {
                host: match ip {
                    IpAddr::V4(v4) => format!("[{v4}]"),
                    IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
                },
                addr: SocketAddr::new(*ip, self.port),
                preference: 0,
            }]),
            Destination::Domain(domain) => self.by_mx(domain).await,
        }
    }

    /// The smarthost's own addresses, MX ignored. Any failure is temporary: a smarthost that
    /// cannot be found is this server's configuration, not the recipient's fault, and must
    /// not bounce every message.
    async fn smarthost(&self, relay: &RelayHost) -> Result<Vec<Hop>, RouteError> {
        if let Ok(ip) = relay.host.parse::<IpAddr>() {
            return Ok(vec![Hop {
                host: relay.host.clone(),
                addr: SocketAddr::new(ip, relay.port),
                preference: 0,
            }]);
        }
        let exchange = Exchange {
            host: relay.host.to_ascii_lowercase(),
            preference: 0,
        };
        let addresses = self.addresses(&exchange.host).await;
        route::assemble(&relay.host, vec![(exchange, addresses)], relay.port)
            .map_err(|e| RouteError::temporary(format!("the smarthost (relay_host): {}", e.reason)))
    }

    async fn by_mx(&self, domain: &str) -> Result<Vec<Hop>, RouteError> {
        let name = fqdn(domain)?;
        let exchanges = match self.resolver.mx_lookup(name).await {
            Ok(lookup) => {
                let records: Vec<MxRecord> = lookup
                    .answers()
                    .iter()
                    .filter_map(|record| match &record.data {
                        RData::MX(mx) => Some(MxRecord {
                            preference: mx.preference,
                            exchange: mx.exchange.to_ascii(),
                        }),
                        _ => None,
                    })
                    .collect();
                if records.is_empty() {
                    implicit_mx(domain)
                } else {
                    route::order_exchanges(domain, records, &mut rand::rng())?
                }
            }
            Err(e) if e.is_nx_domain() => {
                return Err(RouteError::permanent(
                    route::Status::NO_SUCH_DOMAIN,
                    format!("the domain {domain} does not exist (NXDOMAIN)"),
                ));
            }
            Err(e) if e.is_no_records_found() => implicit_mx(domain),
            Err(e) => {
                return Err(RouteError::temporary(format!(
                    "the MX lookup for {domain} failed: {}",
                    describe(&e)
                )));
            }
        };
        let mut hosts = Vec::with_capacity(exchanges.len());
        for exchange in exchanges {
            let addresses = self.addresses(&exchange.host).await;
            hosts.push((exchange, addresses));
        }
        route::assemble(domain, hosts, self.port)
    }

    /// A host's AAAA and A records, asked together.
    async fn addresses(&self, host: &str) -> HostAddresses {
        let name = match fqdn(host) {
            Ok(name) => name,
            Err(e) => return HostAddresses::Absent(e.reason),
        };
        let (v6, v4) = tokio::join!(
            self.resolver.ipv6_lookup(name.clone()),
            self.resolver.ipv4_lookup(name)
        );
        let v6 = v6
            .map(|lookup| {
                lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                        _ => None,
                    })
                    .collect()
            })
            .map_err(|e| failure(&e));
        let v4 = v4
            .map(|lookup| {
                lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        _ => None,
                    })
                    .collect()
            })
            .map_err(|e| failure(&e));
        route::join_families(host, v6, v4)
    }
}

/// RFC 5321 §5.1: no MX records, so the domain itself is the one host, at preference 0.
fn implicit_mx(domain: &str) -> Vec<Exchange> {
    vec![Exchange {
        host: domain.to_owned(),
        preference: 0,
    }]
}

fn name_server(addr: &SocketAddr) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    // Trusting NXDOMAIN: the configured servers are the authority this server was told to use.
    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
}

/// The name, fully qualified so that no search domain is appended.
fn fqdn(host: &str) -> Result<Name, RouteError> {
    let mut name = Name::from_ascii(host).map_err(|e| {
        RouteError::permanent(
            route::Status::BAD_SYNTAX,
            format!("{host:?} is not a DNS name: {e}"),
        )
    })?;
    name.set_fqdn(true);
    Ok(name)
}

fn failure(error: &NetError) -> LookupFailure {
    if error.is_nx_domain() || error.is_no_records_found() {
        LookupFailure::Absent
    } else {
        LookupFailure::Failed(describe(error))
    }
}

/// hickory's error in one line (its texts are short: "request timed out", "error response:
/// SERVFAIL"…).
fn describe(error: &NetError) -> String {
    error
        .to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}
