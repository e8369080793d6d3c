//! Hostile clients over the wire against the real IMAP listener: one address cannot take
//! every connection.

mod hostile_support;

use std::net::Ipv4Addr;

use hostile_support::{Client, Rig};

const IMAP_ON: &str = "[imap]\nport = 0\n";

#[track_caller]
fn starts(line: &str, prefix: &str) {
    assert!(
        line.starts_with(prefix),
        "expected {prefix:?}, got {line:?}"
    );
}

#[test]
fn one_address_gets_its_share_of_the_connections_and_another_still_gets_in() {
    let rig = Rig::start(&format!(
        "{IMAP_ON}[limits]\nsocket_max = 4\nper_address_max = 2\nsocket_min = 1\n"
    ));
    let port = rig.port("imap");
    let held: Vec<Client> = (0..2)
        .map(|_| {
            let mut c = Client::connect(port);
            starts(&c.line(), "* OK");
            c
        })
        .collect();
    let mut extra = Client::connect(port);
    starts(
        &extra.line(),
        "* BYE [UNAVAILABLE] Too many connections from your address",
    );
    assert!(extra.closes());
    let mut other = Client::connect_from(Ipv4Addr::new(127, 0, 0, 2), port);
    starts(&other.line(), "* OK");
    drop(held);
}
