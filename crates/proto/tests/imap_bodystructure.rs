//! ENVELOPE and BODYSTRUCTURE of real-world-shaped MIME messages (`fixtures/messages/`), as
//! the IMAP core sends them, kept as insta snapshots: a change in the MIME mapping shows up
//! as a reviewed diff.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::PathBuf;

use dirmail_proto::imap::mailbox::Flags;
use dirmail_proto::imap::{MessageMeta, fetch};
use imap_types::fetch::MessageDataItemName;

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/messages")
        .join(name);
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // Stored with LF; on the wire and in the Maildir they have CRLF.
    let mut out = Vec::with_capacity(text.len() + text.len() / 16);
    for &b in &text {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// `* 1 FETCH (ENVELOPE … BODYSTRUCTURE …)` for the fixture, one item per line.
fn fetched(name: &str) -> String {
    let raw = fixture(name);
    let meta = MessageMeta {
        uid: 1,
        flags: Flags::NONE,
        size: raw.len() as u64,
        internal_date: 0,
        recent: false,
    };
    let items = [
        MessageDataItemName::Envelope,
        MessageDataItemName::BodyStructure,
    ];
    let reply = fetch::reply(&items, 1, &meta, &[], Some(&raw), false)
        .ok()
        .flatten()
        .expect("a FETCH reply");
    let wire = String::from_utf8_lossy(&reply.to_bytes()).into_owned();
    wire.replace(" BODYSTRUCTURE ", "\nBODYSTRUCTURE ")
}

#[test]
fn alternative() {
    insta::assert_snapshot!(fetched("alternative.eml"));
}

#[test]
fn attachment() {
    insta::assert_snapshot!(fetched("attachment.eml"));
}

#[test]
fn forwarded() {
    insta::assert_snapshot!(fetched("forwarded.eml"));
}

#[test]
fn related() {
    insta::assert_snapshot!(fetched("related.eml"));
}

#[test]
fn japanese() {
    insta::assert_snapshot!(fetched("japanese.eml"));
}

#[test]
fn raw_8bit() {
    insta::assert_snapshot!(fetched("raw-8bit.eml"));
}
