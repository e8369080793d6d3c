//! criterion benches of the SMTP and POP3 session cores in memory: whole sessions driven
//! through `feed`/`poll`/`answer`, with the driver's answers given at once, so what is
//! measured is the protocol work alone (parsing, state, dot-stuffing), not I/O.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dirmail_proto::{pop3, smtp};

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A 4 KiB message body of 76-column lines, as the load generator sends.
fn message_4k() -> Vec<u8> {
    let mut body = b"From: a@example.jp\r\nTo: b@example.jp\r\nSubject: bench\r\n\r\n".to_vec();
    while body.len() < 4096 - 80 {
        body.extend_from_slice(&[b'x'; 76]);
        body.extend_from_slice(b"\r\n");
    }
    body
}

/// Drains the core's events, answering requests as a driver would, and returns the bytes it
/// would have written.
fn drain_smtp(session: &mut smtp::Session, out: &mut usize) {
    while let Some(event) = session.poll() {
        match event {
            smtp::Event::Reply(reply) => *out += reply.to_bytes().len(),
            smtp::Event::Request(smtp::session::Request::CheckRecipient(_)) => {
                let _ = session.answer(smtp::session::Response::Local {
                    mailbox: "1".into(),
                    quota_left: None,
                });
            }
            smtp::Event::Request(smtp::session::Request::OpenMessage(received)) => {
                black_box(received);
                let _ = session.answer(smtp::session::Response::Opened);
            }
            smtp::Event::Request(smtp::session::Request::AppendMessage(piece)) => {
                black_box(piece.len());
                let _ = session.answer(smtp::session::Response::Appended);
            }
            smtp::Event::Request(smtp::session::Request::Deliver(delivery)) => {
                black_box(delivery.tail.len());
                let _ = session.answer(smtp::session::Response::Delivered);
            }
            smtp::Event::Request(_) => {
                let _ = session.answer(smtp::session::Response::TempFail);
            }
            smtp::Event::StartTls | smtp::Event::Close => {}
        }
    }
}

fn smtp_delivery(c: &mut Criterion) {
    let message = message_4k();
    let mut script = b"EHLO client.example\r\nMAIL FROM:<a@example.jp> SIZE=4096\r\nRCPT TO:<b@example.jp>\r\nDATA\r\n".to_vec();
    script.extend_from_slice(&message);
    script.extend_from_slice(b".\r\nQUIT\r\n");
    let mut group = c.benchmark_group("smtp_core");
    group.throughput(Throughput::Bytes(script.len() as u64));
    group.bench_function("session_4k_message", |b| {
        b.iter(|| {
            let now = Instant::now();
            let mut session =
                smtp::Session::new(smtp::Config::new("mail.example.jp"), PEER, true, now);
            let mut out = session.greeting().to_bytes().len();
            // Fed in 1 KiB reads, as a socket would hand it over.
            for chunk in script.chunks(1024) {
                session.feed(chunk, now);
                drain_smtp(&mut session, &mut out);
            }
            black_box(out)
        })
    });
    group.finish();
}

fn pop3_retr_ten(c: &mut Criterion) {
    let message = message_4k();
    let script = b"USER bob@example.jp\r\nPASS secret\r\nSTAT\r\nRETR 1\r\nRETR 2\r\nRETR 3\r\nRETR 4\r\nRETR 5\r\nRETR 6\r\nRETR 7\r\nRETR 8\r\nRETR 9\r\nRETR 10\r\nQUIT\r\n";
    let infos: Vec<pop3::MessageInfo> = (0..10)
        .map(|i| pop3::MessageInfo {
            uid: format!("uid{i}"),
            size: message.len() as u64,
        })
        .collect();
    let mut group = c.benchmark_group("pop3_core");
    group.throughput(Throughput::Bytes((message.len() * 10) as u64));
    group.bench_function("login_stat_retr10_quit", |b| {
        b.iter(|| {
            let now = Instant::now();
            let mut config = pop3::Config::new("mail.example.jp", "<1.2@mail.example.jp>");
            config.plaintext_allowed = true;
            let mut session = pop3::Session::new(config, PEER, true, now);
            let mut out = session.greeting().to_bytes().len();
            session.feed(script, now);
            while let Some(event) = session.poll() {
                match event {
                    pop3::Event::Reply(reply) => out += reply.to_bytes().len(),
                    pop3::Event::Request(pop3::Request::Authenticate(_)) => {
                        let _ = session.answer(pop3::Response::Ok {
                            mailbox: "1".into(),
                        });
                    }
                    pop3::Event::Request(pop3::Request::OpenMailbox { .. }) => {
                        let _ = session.answer(pop3::Response::Opened(infos.clone()));
                    }
                    pop3::Event::Request(pop3::Request::Retrieve { .. }) => {
                        let _ = session.answer(pop3::Response::Message(message.clone()));
                    }
                    pop3::Event::Request(pop3::Request::Commit { .. }) => {
                        let _ = session.answer(pop3::Response::Committed);
                    }
                    pop3::Event::StartTls | pop3::Event::Close => {}
                }
            }
            black_box(out)
        })
    });
    group.finish();
}

criterion_group!(benches, smtp_delivery, pop3_retr_ten);
criterion_main!(benches);
