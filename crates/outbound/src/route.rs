//! Where mail for a destination goes, without DNS: the destination's parsing, the MX order
//! (RFC 5321 §5.1), the null MX (RFC 7505), and the bounded, duplicate-free list of hops.
//!
//! `dns.rs` asks the questions and hands the answers here, so every decision about order and
//! failure is a plain function the unit tests can reach without a DNS server.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use rand::Rng;
use rand::seq::SliceRandom;

/// The most MX hosts tried for one domain: a long list is a mistake or an attack, and each
/// host may cost a DNS lookup and a connection timeout.
pub const MAX_HOSTS: usize = 10;
/// The most addresses tried for one domain, over all its hosts.
pub const MAX_ADDRESSES: usize = 20;
/// The longest domain name (RFC 1035 §2.3.4: 255 octets on the wire, 253 written out).
const MAX_NAME_LEN: usize = 253;

/// What the domain part of a recipient address names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A domain, in ASCII (A-labels), lower case, without a final dot.
    Domain(String),
    /// A domain literal (`user@[192.0.2.1]`, `user@[IPv6:2001:db8::1]`): that address, no DNS.
    Literal(IpAddr),
}

impl Destination {
    /// Reads the part after the `@`. A name must have the shape of a DNS name (the SMTP core
    /// has already checked the address; this is the last check before DNS sees it).
    pub fn parse(domain: &str) -> Result<Destination, RouteError> {
        let text = domain.trim();
        if let Some(inside) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            let ip = match inside.get(..5) {
                Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => inside[5..]
                    .parse::<Ipv6Addr>()
                    .map(IpAddr::V6)
                    .map_err(|_| ()),
                // RFC 5321 §4.1.3: an IPv4 literal is dotted digits only.
                _ if inside.bytes().all(|b| b.is_ascii_digit() || b == b'.') => {
                    inside.parse::<IpAddr>().map_err(|_| ())
                }
                _ => Err(()),
            };
            return ip.map(Destination::Literal).map_err(|()| {
                RouteError::permanent(
                    Status::BAD_SYNTAX,
                    format!("{text:?} is not an address literal this server can reach"),
                )
            });
        }
        let name = text.trim_end_matches('.');
        // A UTF-8 domain (an SMTPUTF8 recipient) is asked for by its A-labels (`xn--…`).
        let name = if name.is_ascii() {
            name.to_ascii_lowercase()
        } else {
            idna::domain_to_ascii(name).map_err(|_| {
                RouteError::permanent(
                    Status::BAD_SYNTAX,
                    format!("{text:?} is not an internationalized domain name"),
                )
            })?
        };
        let is_name = !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
            // An all-digit last label is an IP address written without brackets.
            && !name
                .rsplit('.')
                .next()
                .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()));
        if !is_name {
            return Err(RouteError::permanent(
                Status::BAD_SYNTAX,
                format!("{text:?} is not a domain name"),
            ));
        }
        Ok(Destination::Domain(name))
    }
}

/// One place to try: a host (for the log, the greeting check and TLS's name check) and one of
/// its addresses with the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// The MX host's name, the smarthost's, the domain itself for an implicit MX, or
    /// `[address]` for a domain literal; without a final dot.
    pub host: String,
    pub addr: SocketAddr,
    /// The MX preference (0 for an implicit MX, a smarthost or a literal).
    pub preference: u16,
}

/// An RFC 3463 enhanced status code, for the bounce or the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub &'static str);

impl Status {
    /// X.1.2: the destination domain does not exist.
    pub const NO_SUCH_DOMAIN: Status = Status("5.1.2");
    /// X.1.3: the address cannot be a destination at all.
    pub const BAD_SYNTAX: Status = Status("5.1.3");
    /// X.1.10 (RFC 7505 §4.2): the domain says it accepts no mail.
    pub const NULL_MX: Status = Status("5.1.10");
    /// X.4.4: no MX host (or the domain itself) has an address to deliver to.
    pub const UNROUTABLE: Status = Status("5.4.4");
    /// X.4.3: the DNS did not answer, or answered with an error; try again later.
    pub const DNS_TEMPORARY: Status = Status("4.4.3");
}

/// Why there is nowhere to send: permanent failures become bounces, temporary ones retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} {reason}", status.0)]
pub struct RouteError {
    pub permanent: bool,
    pub status: Status,
    /// In words, for the log and the bounce; names the domain or host concerned.
    pub reason: String,
}

impl RouteError {
    pub fn permanent(status: Status, reason: String) -> RouteError {
        RouteError {
            permanent: true,
            status,
            reason,
        }
    }

    pub fn temporary(reason: String) -> RouteError {
        RouteError {
            permanent: false,
            status: Status::DNS_TEMPORARY,
            reason,
        }
    }
}

/// An MX record as the DNS gave it: the exchange is written out (`mx1.example.net.`, or `.`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxRecord {
    pub preference: u16,
    pub exchange: String,
}

/// An MX host worth resolving, in the order to try it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// Without a final dot, lower case.
    pub host: String,
    pub preference: u16,
}

/// The MX records of `domain`, in the order to try them: by preference, equal preferences
/// shuffled (RFC 5321 §5.1, so the load spreads), each host once (at its best preference),
/// at most [`MAX_HOSTS`].
///
/// A single record whose exchange is the root (`.`) is a null MX (RFC 7505): the domain
/// accepts no mail, a permanent failure at once. A root exchange beside other records is not a
/// null MX by RFC 7505 §3's definition, only an unusable record, and is skipped like an
/// exchange written as an IP address (RFC 5321 §5.1 forbids those; they cannot be resolved as
/// names). When every record is skipped the failure is permanent: the domain's own records
/// say there is nowhere to go.
pub fn order_exchanges(
    domain: &str,
    mut records: Vec<MxRecord>,
    rng: &mut impl Rng,
) -> Result<Vec<Exchange>, RouteError> {
    if let [only] = records.as_slice()
        && is_root(&only.exchange)
    {
        return Err(RouteError::permanent(
            Status::NULL_MX,
            format!("{domain} does not accept mail (null MX, RFC 7505)"),
        ));
    }
    // Shuffle first, then a stable sort by preference: equal preferences keep the random order.
    records.shuffle(rng);
    records.sort_by_key(|r| r.preference);
    let mut exchanges: Vec<Exchange> = Vec::new();
    for record in records {
        if is_root(&record.exchange) || names_an_address(&record.exchange) {
            continue;
        }
        let host = record.exchange.trim_end_matches('.').to_ascii_lowercase();
        if exchanges.iter().any(|e| e.host == host) {
            continue;
        }
        exchanges.push(Exchange {
            host,
            preference: record.preference,
        });
        if exchanges.len() == MAX_HOSTS {
            break;
        }
    }
    if exchanges.is_empty() {
        return Err(RouteError::permanent(
            Status::UNROUTABLE,
            format!("no MX record of {domain} names a host (IP addresses or the root only)"),
        ));
    }
    Ok(exchanges)
}

fn is_root(exchange: &str) -> bool {
    exchange.is_empty() || exchange == "."
}

/// `192.0.2.1.`, `[192.0.2.1]`, `2001:db8::1`: an address where RFC 5321 §5.1 wants a name.
fn names_an_address(exchange: &str) -> bool {
    let text = exchange.trim_end_matches('.');
    let text = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    text.parse::<IpAddr>().is_ok()
        || text
            .get(..5)
            .is_some_and(|tag| tag.eq_ignore_ascii_case("IPv6:"))
}

/// What the DNS said about one host's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostAddresses {
    /// IPv6 first, then IPv4 (each family in the DNS's order). A loopback or unspecified
    /// address is kept: the tests deliver to loopback; a later `[outbound]` switch may refuse
    /// them (a hostile DNS could point an MX at this server's own loopback services).
    Found(Vec<IpAddr>),
    /// NXDOMAIN, or no A and no AAAA record: the host has no address.
    Absent(String),
    /// The DNS failed (SERVFAIL, REFUSED, a timeout) for both families, or for one while the
    /// other had no record.
    Failed(String),
}

/// The hops to try, in order: each host's addresses in turn, an address already listed for an
/// earlier host skipped, at most [`MAX_ADDRESSES`].
///
/// With no address at all: temporary when any lookup failed (the DNS may answer later),
/// permanent when every host is known to have no address (RFC 5321 §5.1: "MUST be reported
/// as an error"; a domain whose MX hosts do not exist is not going to start accepting mail
/// during the retry schedule often enough to hold the sender's message for days).
pub fn assemble(
    domain: &str,
    hosts: Vec<(Exchange, HostAddresses)>,
    port: u16,
) -> Result<Vec<Hop>, RouteError> {
    let mut hops: Vec<Hop> = Vec::new();
    let mut temporary: Option<String> = None;
    let mut absent: Vec<String> = Vec::new();
    'hosts: for (exchange, addresses) in hosts {
        match addresses {
            HostAddresses::Found(ips) => {
                for ip in ips {
                    let addr = SocketAddr::new(ip, port);
                    if hops.iter().any(|h| h.addr == addr) {
                        continue;
                    }
                    hops.push(Hop {
                        host: exchange.host.clone(),
                        addr,
                        preference: exchange.preference,
                    });
                    if hops.len() == MAX_ADDRESSES {
                        break 'hosts;
                    }
                }
            }
            HostAddresses::Absent(why) => absent.push(why),
            HostAddresses::Failed(why) => {
                temporary.get_or_insert(why);
            }
        }
    }
    if !hops.is_empty() {
        return Ok(hops);
    }
    match temporary {
        Some(why) => Err(RouteError::temporary(format!(
            "no address for the mail hosts of {domain} yet: {why}"
        ))),
        None => Err(RouteError::permanent(
            Status::UNROUTABLE,
            format!(
                "no mail host of {domain} has an address: {}",
                absent.join("; ")
            ),
        )),
    }
}

/// Puts one host's two answers together: IPv6 first, then IPv4.
pub fn join_families(
    host: &str,
    v6: Result<Vec<IpAddr>, LookupFailure>,
    v4: Result<Vec<IpAddr>, LookupFailure>,
) -> HostAddresses {
    let mut found = Vec::new();
    let mut failed = None;
    for answer in [v6, v4] {
        match answer {
            Ok(ips) => found.extend(ips),
            Err(LookupFailure::Absent) => {}
            Err(LookupFailure::Failed(why)) => {
                failed.get_or_insert(why);
            }
        }
    }
    match (found.is_empty(), failed) {
        (false, _) => HostAddresses::Found(found),
        (true, Some(why)) => HostAddresses::Failed(format!("{host}: {why}")),
        (true, None) => HostAddresses::Absent(format!("{host} has no A or AAAA record")),
    }
}

/// Why one DNS question got no records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupFailure {
    /// NXDOMAIN, or NOERROR with no record of that type (NODATA).
    Absent,
    /// Anything else: SERVFAIL, REFUSED, a timeout, no server reachable.
    Failed(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn mx(preference: u16, exchange: &str) -> MxRecord {
        MxRecord {
            preference,
            exchange: exchange.into(),
        }
    }

    fn hosts(list: &[Exchange]) -> Vec<(&str, u16)> {
        list.iter()
            .map(|e| (e.host.as_str(), e.preference))
            .collect()
    }

    #[test]
    fn exchanges_go_by_preference_and_each_host_once() {
        let mut rng = StdRng::seed_from_u64(1);
        let ordered = order_exchanges(
            "example.net",
            vec![
                mx(30, "c.example.net."),
                mx(10, "A.example.net."),
                mx(20, "b.example.net."),
                mx(40, "a.example.net."),
            ],
            &mut rng,
        )
        .unwrap();
        assert_eq!(
            hosts(&ordered),
            [
                ("a.example.net", 10),
                ("b.example.net", 20),
                ("c.example.net", 30)
            ]
        );
    }

    #[test]
    fn equal_preferences_come_in_both_orders() {
        let records = vec![
            mx(5, "first.example.net."),
            mx(10, "x.example.net."),
            mx(10, "y.example.net."),
        ];
        let mut seen = std::collections::BTreeSet::new();
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..64 {
            let ordered = order_exchanges("example.net", records.clone(), &mut rng).unwrap();
            assert_eq!(ordered[0].host, "first.example.net");
            seen.insert(ordered[1].host.clone());
        }
        assert_eq!(seen.len(), 2, "x and y should each come first sometimes");
    }

    #[test]
    fn a_lone_root_exchange_is_a_null_mx() {
        let mut rng = StdRng::seed_from_u64(1);
        for exchange in [".", ""] {
            let e = order_exchanges("nomail.example", vec![mx(0, exchange)], &mut rng).unwrap_err();
            assert!(e.permanent);
            assert_eq!(e.status, Status::NULL_MX);
            assert!(e.reason.contains("nomail.example"), "{e}");
        }
        // Beside other records it is only an unusable one.
        let ordered = order_exchanges(
            "mixed.example",
            vec![mx(0, "."), mx(10, "mx.mixed.example.")],
            &mut rng,
        )
        .unwrap();
        assert_eq!(hosts(&ordered), [("mx.mixed.example", 10)]);
    }

    #[test]
    fn address_exchanges_are_skipped_and_nothing_left_is_permanent() {
        let mut rng = StdRng::seed_from_u64(1);
        let ordered = order_exchanges(
            "odd.example",
            vec![
                mx(1, "192.0.2.1."),
                mx(2, "[192.0.2.2]"),
                mx(3, "2001:db8::1"),
                mx(4, "IPv6:2001:db8::2"),
                mx(5, "mx.odd.example."),
            ],
            &mut rng,
        )
        .unwrap();
        assert_eq!(hosts(&ordered), [("mx.odd.example", 5)]);
        let e = order_exchanges("odd.example", vec![mx(1, "192.0.2.1.")], &mut rng).unwrap_err();
        assert!(e.permanent);
        assert_eq!(e.status, Status::UNROUTABLE);
    }

    #[test]
    fn at_most_ten_hosts() {
        let mut rng = StdRng::seed_from_u64(1);
        let records = (0..50u16)
            .map(|i| mx(i, &format!("mx{i}.example.net.")))
            .collect();
        let ordered = order_exchanges("example.net", records, &mut rng).unwrap();
        assert_eq!(ordered.len(), MAX_HOSTS);
        assert_eq!(ordered[9].host, "mx9.example.net");
    }

    fn exchange(host: &str, preference: u16) -> Exchange {
        Exchange {
            host: host.into(),
            preference,
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn hops_follow_the_hosts_without_repeating_an_address() {
        let hops = assemble(
            "example.net",
            vec![
                (
                    exchange("a.example.net", 10),
                    HostAddresses::Found(vec![ip("2001:db8::1"), ip("192.0.2.1")]),
                ),
                (
                    exchange("b.example.net", 20),
                    HostAddresses::Absent("b has none".into()),
                ),
                (
                    exchange("c.example.net", 30),
                    HostAddresses::Found(vec![ip("192.0.2.1"), ip("192.0.2.3")]),
                ),
            ],
            25,
        )
        .unwrap();
        let seen: Vec<(&str, String)> = hops
            .iter()
            .map(|h| (h.host.as_str(), h.addr.to_string()))
            .collect();
        assert_eq!(
            seen,
            [
                ("a.example.net", "[2001:db8::1]:25".to_string()),
                ("a.example.net", "192.0.2.1:25".to_string()),
                ("c.example.net", "192.0.2.3:25".to_string()),
            ]
        );
        assert_eq!(hops[2].preference, 30);
    }

    #[test]
    fn at_most_twenty_addresses() {
        let many = |base: u8| {
            HostAddresses::Found(
                (1..=15)
                    .map(|i| IpAddr::from([192, 0, base, i]))
                    .collect::<Vec<_>>(),
            )
        };
        let hops = assemble(
            "example.net",
            vec![
                (exchange("a.example.net", 1), many(2)),
                (exchange("b.example.net", 2), many(3)),
            ],
            25,
        )
        .unwrap();
        assert_eq!(hops.len(), MAX_ADDRESSES);
        assert_eq!(hops[19].host, "b.example.net");
    }

    #[test]
    fn nothing_to_try_is_temporary_only_when_the_dns_failed() {
        let absent = (
            exchange("a.example.net", 1),
            HostAddresses::Absent("a.example.net has no A or AAAA record".into()),
        );
        let e = assemble("example.net", vec![absent.clone()], 25).unwrap_err();
        assert!(e.permanent);
        assert_eq!(e.status, Status::UNROUTABLE);
        assert!(e.reason.contains("a.example.net has no A"), "{e}");
        let failed = (
            exchange("b.example.net", 2),
            HostAddresses::Failed("SERVFAIL".into()),
        );
        let e = assemble("example.net", vec![absent, failed], 25).unwrap_err();
        assert!(!e.permanent);
        assert_eq!(e.status, Status::DNS_TEMPORARY);
        assert!(e.reason.contains("SERVFAIL"), "{e}");
    }

    #[test]
    fn families_join_ipv6_first_and_a_failure_counts_only_without_addresses() {
        let fail = || Err(LookupFailure::Failed("timed out".into()));
        assert_eq!(
            join_families("h", Ok(vec![ip("::1")]), Ok(vec![ip("127.0.0.1")])),
            HostAddresses::Found(vec![ip("::1"), ip("127.0.0.1")])
        );
        assert_eq!(
            join_families("h", fail(), Ok(vec![ip("127.0.0.1")])),
            HostAddresses::Found(vec![ip("127.0.0.1")])
        );
        assert_eq!(
            join_families("h", Err(LookupFailure::Absent), fail()),
            HostAddresses::Failed("h: timed out".into())
        );
        assert_eq!(
            join_families("h", Err(LookupFailure::Absent), Err(LookupFailure::Absent)),
            HostAddresses::Absent("h has no A or AAAA record".into())
        );
    }

    #[test]
    fn destinations() {
        assert_eq!(
            Destination::parse("Example.NET.").unwrap(),
            Destination::Domain("example.net".into())
        );
        assert_eq!(
            Destination::parse("[192.0.2.1]").unwrap(),
            Destination::Literal(ip("192.0.2.1"))
        );
        assert_eq!(
            Destination::parse("[IPv6:2001:db8::1]").unwrap(),
            Destination::Literal(ip("2001:db8::1"))
        );
        assert_eq!(
            Destination::parse("[ipv6:::1]").unwrap(),
            Destination::Literal(ip("::1"))
        );
        assert_eq!(
            Destination::parse("例え.テスト").unwrap(),
            Destination::Domain("xn--r8jz45g.xn--zckzah".into())
        );
        for bad in [
            "",
            ".",
            "a\u{0}b.example",
            "-bad.例え",
            "a..b",
            "-a.example",
            "192.0.2.1",
            "[2001:db8::1]",
            "[x-tag:stuff]",
            "[192.0.2.300]",
            "white space.example",
            &"a".repeat(64),
            &format!("{}.example", "a.".repeat(130)),
        ] {
            let e = Destination::parse(bad).unwrap_err();
            assert!(
                e.permanent && e.status == Status::BAD_SYNTAX,
                "{bad:?}: {e}"
            );
        }
    }
}
