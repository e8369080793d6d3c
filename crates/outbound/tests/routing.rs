//! Routing against a real DNS server: dnsmasq on loopback (the `dns-fixture` crate) serving MX,
//! A and AAAA records, a responder that answers SERVFAIL, and a port where nothing listens.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use dirmail_config::{OutboundConfig, RelayHost};
use dirmail_outbound::{Destination, DnsTimeouts, Hop, RouteError, Router, Status};
use dns_fixture::{DnsServer, ErrorServer, Records};

/// The receivers' port in these tests: not 25, so that nothing needs root.
const PORT: u16 = 2525;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn config(dns: SocketAddr) -> OutboundConfig {
    OutboundConfig {
        dns_servers: vec![dns],
        port: PORT,
        ..OutboundConfig::default()
    }
}

/// Short waits: a dead server's failure shows in a fraction of a second rather than ten.
fn router(config: &OutboundConfig) -> Router {
    Router::with_timeouts(
        config,
        DnsTimeouts {
            timeout: Duration::from_millis(500),
            attempts: 1,
        },
    )
    .unwrap()
}

async fn route(router: &Router, domain: &str) -> Result<Vec<Hop>, RouteError> {
    router.route(&Destination::parse(domain).unwrap()).await
}

fn seen(hops: &[Hop]) -> Vec<(String, String)> {
    hops.iter()
        .map(|h| (h.host.clone(), h.addr.to_string()))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(h, a)| (h.to_string(), a.to_string()))
        .collect()
}

/// The test zone: everything under `test` is answered by dnsmasq alone.
fn zone() -> Records {
    Records::new()
        .local_domain("test")
        // MX preference order, several addresses per host, an address shared by two hosts.
        .mx("pref.test", "mx-b.pref.test", 20)
        .mx("pref.test", "mx-a.pref.test", 10)
        .mx("pref.test", "mx-c.pref.test", 30)
        .mx("pref.test", "mx-d.pref.test", 40)
        .host("mx-a.pref.test", &[ip("127.0.0.2"), ip("::1")])
        .host("mx-b.pref.test", &[ip("127.0.0.3")])
        .host("mx-c.pref.test", &[ip("127.0.0.4"), ip("127.0.0.5")])
        .host("mx-d.pref.test", &[ip("127.0.0.3")])
        // Two hosts at one preference.
        .mx("equal.test", "one.equal.test", 10)
        .mx("equal.test", "two.equal.test", 10)
        .host("one.equal.test", &[ip("127.0.0.6")])
        .host("two.equal.test", &[ip("127.0.0.7")])
        // No MX: the domain itself.
        .host("implicit.test", &[ip("127.0.0.8")])
        // No MX and no address: only a TXT record.
        .txt("nothing.test", "v=spf1 -all")
        // RFC 7505.
        .null_mx("nullmx.test")
        // An MX naming a host that does not exist, beside one that does.
        .mx("halfgone.test", "gone.halfgone.test", 5)
        .mx("halfgone.test", "here.halfgone.test", 10)
        .host("here.halfgone.test", &[ip("127.0.0.9")])
        // Only MX hosts that do not exist, or are written as an address.
        .mx("allgone.test", "gone.allgone.test", 5)
        .mx("allgone.test", "192.0.2.1", 10)
        // The smarthost.
        .host("relay.test", &[ip("127.0.0.10")])
}

#[tokio::test]
async fn mx_hosts_by_preference_each_with_its_addresses() {
    let dns = DnsServer::start(&zone()).unwrap();
    let router = router(&config(dns.addr()));
    let hops = route(&router, "pref.test").await.unwrap();
    let mut got = seen(&hops);
    // One host's addresses of one family come in the DNS's order, which is not the records'
    // (dnsmasq reverses them, other servers rotate them): compare those as a set.
    got[3..].sort();
    assert_eq!(
        got,
        pairs(&[
            // IPv6 first.
            ("mx-a.pref.test", "[::1]:2525"),
            ("mx-a.pref.test", "127.0.0.2:2525"),
            ("mx-b.pref.test", "127.0.0.3:2525"),
            ("mx-c.pref.test", "127.0.0.4:2525"),
            ("mx-c.pref.test", "127.0.0.5:2525"),
            // mx-d's only address is mx-b's, already listed.
        ]),
        "{}",
        dns.log()
    );
    assert_eq!(
        hops.iter().map(|h| h.preference).collect::<Vec<_>>(),
        [10, 10, 20, 30, 30]
    );
    // Names are case-insensitive and may end in a dot.
    assert_eq!(route(&router, "PREF.test.").await.unwrap(), hops);
}

#[tokio::test]
async fn equal_preferences_are_tried_in_either_order() {
    let dns = DnsServer::start(&zone()).unwrap();
    let router = router(&config(dns.addr()));
    let mut first = BTreeSet::new();
    for _ in 0..40 {
        let hops = route(&router, "equal.test").await.unwrap();
        assert_eq!(hops.len(), 2);
        first.insert(hops[0].host.clone());
    }
    assert_eq!(
        first,
        BTreeSet::from(["one.equal.test".to_string(), "two.equal.test".to_string()])
    );
}

#[tokio::test]
async fn no_mx_means_the_domain_itself() {
    let dns = DnsServer::start(&zone()).unwrap();
    let router = router(&config(dns.addr()));
    let hops = route(&router, "implicit.test").await.unwrap();
    assert_eq!(
        seen(&hops),
        pairs(&[("implicit.test", "127.0.0.8:2525")]),
        "{}",
        dns.log()
    );
    assert_eq!(hops[0].preference, 0);
    // Without an address either, there is nowhere to go, for good.
    let e = route(&router, "nothing.test").await.unwrap_err();
    assert!(e.permanent, "{e}");
    assert_eq!(e.status, Status::UNROUTABLE, "{e}");
    assert!(e.reason.contains("nothing.test"), "{e}");
}

#[tokio::test]
async fn a_domain_that_does_not_exist_is_permanent() {
    let dns = DnsServer::start(&zone()).unwrap();
    let router = router(&config(dns.addr()));
    let e = route(&router, "no-such-domain.test").await.unwrap_err();
    assert!(e.permanent, "{e}");
    assert_eq!(e.status, Status::NO_SUCH_DOMAIN);
    assert!(e.reason.contains("does not exist"), "{e}");
}

#[tokio::test]
async fn a_null_mx_is_permanent_at_once() {
    let dns = DnsServer::start(&zone()).unwrap();
    let router = router(&config(dns.addr()));
    let e = route(&router, "nullmx.test").await.unwrap_err();
    assert!(e.permanent, "{e}");
    assert_eq!(e.status, Status::NULL_MX);
    // At once: no address of anything was asked for after the MX answer.
    let log = dns.log();
    assert!(log.contains("query[MX] nullmx.test"), "{log}");
    assert!(!log.contains("query[A] nullmx.test"), "{log}");
    assert!(!log.contains("query[AAAA] nullmx.test"), "{log}");
}

#[tokio::test]
async fn unusable_mx_hosts_are_skipped() {
    let dns = DnsServer::start(&zone()).unwrap();
    let router = router(&config(dns.addr()));
    let hops = route(&router, "halfgone.test").await.unwrap();
    assert_eq!(
        seen(&hops),
        pairs(&[("here.halfgone.test", "127.0.0.9:2525")])
    );
    let e = route(&router, "allgone.test").await.unwrap_err();
    assert!(e.permanent, "{e}");
    assert_eq!(e.status, Status::UNROUTABLE);
    assert!(e.reason.contains("gone.allgone.test"), "{e}");
}

#[tokio::test]
async fn servfail_is_temporary() {
    let servfail = ErrorServer::servfail().unwrap();
    let router = router(&config(servfail.addr()));
    let e = route(&router, "pref.test").await.unwrap_err();
    assert!(!e.permanent, "{e}");
    assert_eq!(e.status, Status::DNS_TEMPORARY);
    assert!(e.reason.contains("Server Failure"), "{e}");
}

#[tokio::test]
async fn an_mx_host_whose_lookup_fails_is_skipped_or_temporary() {
    let servfail = ErrorServer::servfail().unwrap();
    let dns = DnsServer::start(
        &zone()
            .forward("broken.test", servfail.addr())
            .mx("someok.test", "mx.broken.test", 5)
            .mx("someok.test", "mx.someok.test", 10)
            .host("mx.someok.test", &[ip("127.0.0.11")])
            .mx("allbroken.test", "mx.broken.test", 5),
    )
    .unwrap();
    let router = router(&config(dns.addr()));
    let hops = route(&router, "someok.test").await.unwrap();
    assert_eq!(
        seen(&hops),
        pairs(&[("mx.someok.test", "127.0.0.11:2525")]),
        "{}",
        dns.log()
    );
    let e = route(&router, "allbroken.test").await.unwrap_err();
    assert!(!e.permanent, "{e}");
    assert!(e.reason.contains("mx.broken.test"), "{e}");
}

#[tokio::test]
async fn a_dns_server_that_is_not_there_is_temporary() {
    // A port that was free a moment ago: nothing answers there.
    let dead = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let router = router(&config(dead));
    let e = route(&router, "pref.test").await.unwrap_err();
    assert!(!e.permanent, "{e}");
    assert_eq!(e.status, Status::DNS_TEMPORARY);
}

#[tokio::test]
async fn a_domain_the_server_will_not_answer_for_is_temporary() {
    // dnsmasq without an upstream answers REFUSED outside its local domains.
    let dns = DnsServer::start(&zone()).unwrap();
    let router = router(&config(dns.addr()));
    let e = route(&router, "example.org").await.unwrap_err();
    assert!(!e.permanent, "{e}");
}

#[tokio::test]
async fn a_smarthost_takes_every_destination() {
    let dns = DnsServer::start(&zone()).unwrap();
    let config = OutboundConfig {
        relay_host: Some(RelayHost {
            host: "relay.test".into(),
            port: 2526,
        }),
        ..config(dns.addr())
    };
    let router = router(&config);
    for destination in [
        "pref.test",
        "no-such-domain.test",
        "nullmx.test",
        "[192.0.2.1]",
    ] {
        let hops = route(&router, destination).await.unwrap();
        assert_eq!(
            seen(&hops),
            pairs(&[("relay.test", "127.0.0.10:2526")]),
            "{destination}"
        );
    }
    assert!(!dns.log().contains("query[MX]"), "{}", dns.log());
    // A smarthost given as an address needs no DNS.
    let literal = OutboundConfig {
        relay_host: Some(RelayHost {
            host: "127.0.0.12".into(),
            port: 587,
        }),
        ..config.clone()
    };
    let hops = route(&router_for(&literal), "pref.test").await.unwrap();
    assert_eq!(seen(&hops), pairs(&[("127.0.0.12", "127.0.0.12:587")]));
    // One that cannot be found is this server's problem, not the recipient's: temporary.
    let missing = OutboundConfig {
        relay_host: Some(RelayHost {
            host: "missing-relay.test".into(),
            port: 2526,
        }),
        ..config
    };
    let e = route(&router_for(&missing), "pref.test").await.unwrap_err();
    assert!(!e.permanent, "{e}");
    assert!(e.reason.contains("relay_host"), "{e}");
}

fn router_for(config: &OutboundConfig) -> Router {
    router(config)
}

#[tokio::test]
async fn a_domain_literal_goes_to_its_address_without_dns() {
    let dns = DnsServer::start(&zone()).unwrap();
    let router = router(&config(dns.addr()));
    let hops = route(&router, "[127.0.0.13]").await.unwrap();
    assert_eq!(seen(&hops), pairs(&[("[127.0.0.13]", "127.0.0.13:2525")]));
    let hops = route(&router, "[IPv6:::1]").await.unwrap();
    assert_eq!(seen(&hops), pairs(&[("[IPv6:::1]", "[::1]:2525")]));
    assert_eq!(questions(&dns), Vec::<String>::new());
}

/// The questions dnsmasq was asked, less the fixture's own readiness probe.
fn questions(dns: &DnsServer) -> Vec<String> {
    dns.log()
        .lines()
        .filter(|l| l.contains("query[") && !l.contains("fixture-ready"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_system_resolver_is_used_without_dns_servers() {
    // Only that it can be set up from /etc/resolv.conf: asking it would leave loopback. A
    // machine whose resolv.conf names no server cannot have one; the error must say so.
    let names_a_server = std::fs::read_to_string("/etc/resolv.conf").is_ok_and(|text| {
        text.lines()
            .any(|l| l.trim_start().starts_with("nameserver"))
    });
    match Router::new(&OutboundConfig::default()) {
        Ok(_) => {}
        Err(e) if !names_a_server => assert!(e.to_string().contains("DNS resolver"), "{e}"),
        Err(e) => panic!("{e}"),
    }
}
