//! The SMTP client harness: a fuzzed *server* stream, cut into reads, fed to
//! [`Client::feed`]; the handshake and the body done (or failed) as the input says; every
//! event checked.
//!
//! Input: `flags` `split` `stream…` (see `fuzz/README.md`).
//!
//! Invariants checked:
//! - every write is CRLF lines only, one command per line, and one command per write except
//!   the pipelined MAIL+RCPT batch (only after the server offered PIPELINING);
//! - credentials go out only over TLS, and a write's `Debug` never shows them;
//! - with TLS required, MAIL is never sent in clear text;
//! - BODY=8BITMIME / SMTPUTF8 appear only when offered; a message over the offered SIZE is not
//!   sent;
//! - the body is asked for at most once, and only after `354`;
//! - a recipient is "delivered" only if the body was sent and a final reply came;
//! - input held stays within one reply (lines × line length);
//! - exactly one outcome, naming every recipient in order, once the connection ends; nothing
//!   is written after it but QUIT before it, and nothing at all after `Close`.

use dirmail_proto::names::Secret;
use dirmail_proto::smtp::client::{
    Client, Config, Disposition, Envelope, Event, Login, MAX_REPLY_LINE, MAX_REPLY_LINES, TlsPolicy,
};

use crate::{EVENT_BOUND, Header, chunks, only_crlf};

const PASSWORD: &str = "s3cret-pw";
/// base64 of `\0relay\0s3cret-pw` and of the password alone: neither may show in a `Debug`.
const SECRETS_B64: [&str; 2] = ["AHJlbGF5AHMzY3JldC1wdw==", "czNjcmV0LXB3"];
const RECIPIENTS: [&str; 3] = ["bob@example.org", "carol@example.org", "δοκιμή@example.gr"];

#[derive(Debug, Clone, Copy)]
struct Setup {
    implicit_tls: bool,
    required: bool,
    login: bool,
    eight_bit: bool,
    utf8_recipient: bool,
    handshake_fails: bool,
    end_by_timeout: bool,
    size: u64,
}

impl Setup {
    fn read(flags: u8) -> Setup {
        Setup {
            implicit_tls: flags & 1 != 0,
            required: flags & 2 != 0,
            login: flags & 4 != 0,
            eight_bit: flags & 8 != 0,
            utf8_recipient: flags & 0x10 != 0,
            handshake_fails: flags & 0x20 != 0,
            end_by_timeout: flags & 0x40 != 0,
            size: if flags & 0x80 != 0 { 5000 } else { 500 },
        }
    }

    fn client(&self) -> Client {
        let config = Config {
            hostname: "out.example.jp".into(),
            tls: if self.required {
                TlsPolicy::Required
            } else {
                TlsPolicy::Opportunistic
            },
            login: self.login.then(|| Login {
                user: "relay".into(),
                password: Secret::new(PASSWORD),
            }),
        };
        let count = if self.utf8_recipient { 3 } else { 2 };
        let envelope = Envelope {
            reverse_path: "alice@example.jp".into(),
            recipients: RECIPIENTS
                .iter()
                .take(count)
                .map(|r| (*r).to_owned())
                .collect(),
            size: self.size,
            eight_bit: self.eight_bit,
            utf8_headers: false,
        };
        Client::new(config, envelope, self.implicit_tls).expect("a valid envelope")
    }
}

struct Run {
    setup: Setup,
    client: Client,
    tls: bool,
    body_sent: bool,
    done: usize,
    closed: bool,
    recipients: usize,
}

impl Run {
    fn drain(&mut self) {
        for _ in 0..EVENT_BOUND {
            let Some(event) = self.client.poll() else {
                return;
            };
            assert!(!self.closed, "an event after Close: {event:?}");
            if let Event::Write(_) = &event {
                // (The outcome may quote the server, which can say anything.)
                let debug = format!("{event:?}");
                for secret in SECRETS_B64.iter().chain([&PASSWORD]) {
                    assert!(!debug.contains(secret), "credentials in a Debug: {debug}");
                }
            }
            match event {
                Event::Write(out) => self.check_write(out.bytes()),
                Event::StartTls => {
                    assert!(!self.tls, "STARTTLS inside TLS");
                    if self.setup.handshake_fails {
                        self.client.tls_failed();
                    } else {
                        self.client.tls_started();
                        self.tls = true;
                    }
                }
                Event::SendBody => {
                    assert!(!self.body_sent, "the body asked for twice");
                    if self.setup.required {
                        assert!(self.tls, "the body in clear text with TLS required");
                    }
                    self.body_sent = true;
                    self.client.body_sent();
                }
                Event::Done(outcome) => {
                    self.done += 1;
                    assert_eq!(self.done, 1, "a second outcome");
                    assert_eq!(outcome.recipients.len(), self.recipients);
                    for (r, expected) in outcome.recipients.iter().zip(RECIPIENTS) {
                        assert_eq!(r.address, expected, "outcomes out of order");
                        if r.verdict.disposition == Disposition::Delivered {
                            assert!(self.body_sent, "delivered without a body");
                            assert!(r.verdict.remote);
                            assert!((200..300).contains(&r.verdict.reply.code));
                        }
                        if !r.verdict.remote {
                            // Our own verdicts are well-formed replies too.
                            assert!((400..600).contains(&r.verdict.reply.code));
                        }
                    }
                }
                Event::Close => self.closed = true,
            }
        }
        panic!("the client did not settle");
    }

    fn check_write(&mut self, bytes: &[u8]) {
        assert!(only_crlf(bytes), "a bare CR or LF in {bytes:?}");
        assert!(bytes.ends_with(b"\r\n"), "an unended write");
        let text = String::from_utf8(bytes.to_vec()).expect("commands are UTF-8");
        let lines: Vec<&str> = text.split_terminator("\r\n").collect();
        if self.done > 0 {
            panic!("a write after the outcome: {text:?}");
        }
        let ext = self.client.extensions().clone();
        if lines.len() > 1 {
            assert!(ext.pipelining, "a batch without PIPELINING: {text:?}");
            assert!(lines[0].starts_with("MAIL FROM:"), "{text:?}");
            assert!(lines[1..].iter().all(|l| l.starts_with("RCPT TO:")));
        }
        for line in lines {
            if line.starts_with("AUTH ") || self.looks_like_credentials(line) {
                assert!(self.tls, "credentials in clear text: {line}");
            }
            if let Some(mail) = line.strip_prefix("MAIL FROM:") {
                if self.setup.required {
                    assert!(self.tls, "MAIL in clear text with TLS required");
                }
                if mail.contains("BODY=8BITMIME") {
                    assert!(ext.eight_bit_mime);
                }
                if mail.contains("SMTPUTF8") {
                    assert!(ext.smtputf8);
                }
                if self.setup.eight_bit {
                    assert!(mail.contains("BODY=8BITMIME"), "8-bit content undeclared");
                }
                if let Some(limit) = ext.size.filter(|&l| l > 0) {
                    assert!(self.setup.size <= limit, "MAIL for a message over SIZE");
                }
            }
            if let Some(rcpt) = line.strip_prefix("RCPT TO:") {
                if !rcpt.is_ascii() {
                    assert!(ext.smtputf8, "a UTF-8 recipient without SMTPUTF8");
                }
            }
        }
    }

    fn looks_like_credentials(&self, line: &str) -> bool {
        SECRETS_B64.contains(&line) || line == "cmVsYXk="
    }
}

pub fn run(data: &[u8]) {
    let mut header = Header::new(data);
    let setup = Setup::read(header.byte());
    let split = header.byte();
    let stream = header.rest();
    let mut run = Run {
        setup,
        client: setup.client(),
        tls: setup.implicit_tls,
        body_sent: false,
        done: 0,
        closed: false,
        recipients: if setup.utf8_recipient { 3 } else { 2 },
    };
    for chunk in chunks(stream, split) {
        run.client.feed(chunk);
        assert!(
            run.client.buffered() <= MAX_REPLY_LINES * (MAX_REPLY_LINE + 2) + 2,
            "{} octets held",
            run.client.buffered()
        );
        run.drain();
    }
    if setup.end_by_timeout {
        run.client.timed_out();
    } else {
        run.client.connection_closed();
    }
    run.drain();
    assert_eq!(run.done, 1, "no outcome");
    assert!(run.closed, "not closed at the end");
    assert!(run.client.is_closed());
    assert_eq!(run.client.current_timeout(), None);
}
