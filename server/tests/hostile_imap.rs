//! Hostile clients over the wire against the real IMAP listener: one that goes silent is
//! logged out after the configured `imap_idle_timeout` with `* BYE`, before and after login,
//! and one address cannot take every connection.

mod hostile_support;

use std::net::Ipv4Addr;

use hostile_support::{Client, PASSWORD, Rig};

const IMAP_ON: &str = "[imap]\nport = 0\n";

#[track_caller]
fn starts(line: &str, prefix: &str) {
    assert!(
        line.starts_with(prefix),
        "expected {prefix:?}, got {line:?}"
    );
}

#[test]
fn a_silent_client_is_logged_out_with_bye_after_the_configured_timeout() {
    let rig = Rig::start(&format!("{IMAP_ON}[limits]\nimap_idle_timeout = \"3s\"\n"));
    let port = rig.port("imap");
    // Before login the leash is 3 minutes, or the idle timeout when shorter.
    let mut anonymous = Client::connect(port);
    starts(&anonymous.line(), "* OK");
    let mut logged_in = Client::connect(port);
    starts(&logged_in.line(), "* OK");
    logged_in.send(format!("a1 LOGIN bob@example.jp {PASSWORD}\r\n").as_bytes());
    let mut reply = logged_in.line();
    while reply.starts_with("* ") {
        reply = logged_in.line();
    }
    starts(&reply, "a1 OK");
    logged_in.send(b"a2 SELECT INBOX\r\n");
    loop {
        let line = logged_in.line();
        if line.starts_with("a2 ") {
            starts(&line, "a2 OK");
            break;
        }
        assert!(!line.is_empty(), "the server closed during SELECT");
    }
    // Half a command, then nothing.
    logged_in.send(b"a3 NO");
    for c in [&mut anonymous, &mut logged_in] {
        starts(&c.line(), "* BYE");
        assert!(c.closes(), "the connection stays open after BYE");
    }
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
