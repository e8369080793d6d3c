//! IMAP over the wire with async-imap (tokio, rustls trusting the store's certificate): IDLE
//! sees mail delivered over SMTP (lettre) and an expunge made by another session; FETCH
//! answers (ENVELOPE, BODYSTRUCTURE, sections) parse in a client that did not write them.

use std::sync::Arc;
use std::time::Duration;

use crate::common::{Scratch, Server};
use async_imap::extensions::idle::IdleResponse;
use async_imap::types::Fetch;
use futures::TryStreamExt;
use lettre::transport::smtp::client::Tls;
use lettre::{Message, SmtpTransport, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const CONFIG: &str = "[server]\nhostname = \"mail.example.jp\"\n\
[smtp]\nport = 0\nsubmission_port = 0\nsmtps_port = 0\n\
[pop3]\nport = 0\npop3s_port = 0\n\
[imap]\nport = 0\nimaps_port = 0\n";

type Session = async_imap::Session<TlsStream<TcpStream>>;

fn setup() -> (Scratch, Server) {
    let s = Scratch::new();
    std::fs::write(s.path().join("dirmail.toml"), CONFIG).expect("write dirmail.toml");
    s.expect(0, &["add", "example.jp"]);
    s.expect(0, &["add", "bob@example.jp", "--create-user", "Bob-pw1"]);
    let server = Server::start(s.path());
    (s, server)
}

/// `serve` prints `ready` before its first connection makes the self-signed certificate.
fn wait_for(path: &std::path::Path) {
    for _ in 0..200 {
        if path.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An IMAPS connection trusting only the store's self-signed certificate, logged in as bob.
async fn login(s: &Scratch, server: &Server) -> Session {
    let pem = s.path().join("dirmail-data/tls/cert.pem");
    wait_for(&pem);
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&pem).expect("the store's certificate") {
        roots
            .add(cert.expect("a certificate"))
            .expect("a usable certificate");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", server.port("imaps")))
        .await
        .expect("connect");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("a name"), tcp)
        .await
        .expect("TLS handshake");
    let mut client = async_imap::Client::new(tls);
    client
        .read_response()
        .await
        .expect("greeting")
        .expect("a greeting");
    client
        .login("bob@example.jp", "Bob-pw1")
        .await
        .map_err(|(e, _)| e)
        .expect("login")
}

/// Sends a message to bob over the SMTP relay port with lettre.
async fn deliver(server: &Server, subject: &str) {
    let port = server.port("smtp");
    let email = Message::builder()
        .from("Alice <alice@example.org>".parse().expect("from"))
        .to("Bob <bob@example.jp>".parse().expect("to"))
        .subject(subject)
        .body(String::from("Hello Bob.\n"))
        .expect("message");
    tokio::task::spawn_blocking(move || {
        SmtpTransport::builder_dangerous("127.0.0.1")
            .port(port)
            .tls(Tls::None)
            .build()
            .send(&email)
            .expect("lettre delivers")
    })
    .await
    .expect("the delivery task");
}

async fn fetch(session: &mut Session, set: &str, query: &str) -> Vec<Fetch> {
    session
        .fetch(set, query)
        .await
        .expect("fetch")
        .try_collect()
        .await
        .expect("fetch responses")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sees_new_mail_and_expunges_by_others() {
    let (s, server) = setup();
    let mut a = login(&s, &server).await;
    let inbox = a.select("INBOX").await.expect("select");
    assert_eq!(inbox.exists, 0);

    // IDLE, then mail arrives over SMTP: the idling session is told within seconds.
    let mut idle = a.idle();
    idle.init().await.expect("IDLE");
    let (wait, _stop) = idle.wait_with_timeout(Duration::from_secs(20));
    let delivery = deliver(&server, "While you were idling");
    let (response, ()) = tokio::join!(wait, delivery);
    match response.expect("idle wait") {
        IdleResponse::NewData(data) => {
            let text = format!("{:?}", data.parsed());
            assert!(text.contains("Exists(1)"), "{text}");
        }
        other => panic!("no news of the delivery: {other:?}"),
    }
    let mut a = idle.done().await.expect("DONE");
    let messages = fetch(&mut a, "1", "(UID ENVELOPE BODY.PEEK[TEXT])").await;
    let envelope = messages[0].envelope().expect("an envelope");
    assert_eq!(
        envelope.subject.as_deref(),
        Some(b"While you were idling".as_slice())
    );
    assert!(
        messages[0]
            .text()
            .is_some_and(|t| t.starts_with(b"Hello Bob.\r\n")),
        "{:?}",
        messages[0].text()
    );

    // Another session expunges it: the idling one hears at once, through the hub.
    let mut b = login(&s, &server).await;
    b.select("INBOX").await.expect("select");
    let mut idle = a.idle();
    idle.init().await.expect("IDLE");
    b.store("1", "+FLAGS (\\Deleted)")
        .await
        .expect("store")
        .try_collect::<Vec<_>>()
        .await
        .expect("store responses");
    let expunged: Vec<u32> = b
        .expunge()
        .await
        .expect("expunge")
        .try_collect()
        .await
        .expect("expunge responses");
    assert_eq!(expunged, [1]);
    // The flag change comes first, then the expunge.
    let mut heard = Vec::new();
    for _ in 0..4 {
        let (wait, _stop) = idle.wait_with_timeout(Duration::from_secs(10));
        match wait.await.expect("idle wait") {
            IdleResponse::NewData(data) => heard.push(format!("{:?}", data.parsed())),
            _ => break,
        }
        if heard.iter().any(|h| h.contains("Expunge(1)")) {
            break;
        }
    }
    assert!(
        heard.iter().any(|h| h.contains("Expunge(1)")),
        "no news of the expunge: {heard:?}"
    );
    let mut a = idle.done().await.expect("DONE");
    a.logout().await.expect("logout");
    b.logout().await.expect("logout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_store_search_copy_move_append() {
    let (s, server) = setup();
    deliver(&server, "First").await;
    deliver(&server, "Second").await;
    let mut session = login(&s, &server).await;
    let mailbox = session.select("INBOX").await.expect("select");
    assert_eq!(mailbox.exists, 2);
    assert!(mailbox.uid_validity.is_some());

    let messages = fetch(&mut session, "1:*", "(UID FLAGS RFC822.SIZE BODYSTRUCTURE)").await;
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1].uid, Some(2));
    assert!(
        messages[0].bodystructure().is_some(),
        "BODYSTRUCTURE parses"
    );
    assert!(messages[0].size.is_some_and(|n| n > 100));

    session
        .uid_store("2", "+FLAGS (\\Flagged)")
        .await
        .expect("store")
        .try_collect::<Vec<_>>()
        .await
        .expect("store responses");
    let flagged = session.uid_search("FLAGGED").await.expect("search");
    assert_eq!(flagged.into_iter().collect::<Vec<_>>(), [2]);
    let found = session.search("SUBJECT first").await.expect("search");
    assert_eq!(found.into_iter().collect::<Vec<_>>(), [1]);

    session.create("Archive").await.expect("create");
    session.uid_copy("1", "Archive").await.expect("copy");
    session.uid_mv("2", "Archive").await.expect("move");
    session
        .append(
            "Archive",
            Some("(\\Seen)"),
            None,
            b"Subject: appended\r\n\r\nbody\r\n",
        )
        .await
        .expect("append");
    let status = session
        .status("Archive", "(MESSAGES UIDNEXT)")
        .await
        .expect("status");
    assert_eq!((status.exists, status.uid_next), (3, Some(4)));
    let names: Vec<String> = session
        .list(Some(""), Some("*"))
        .await
        .expect("list")
        .try_collect::<Vec<_>>()
        .await
        .expect("names")
        .iter()
        .map(|n| n.name().to_owned())
        .collect();
    assert_eq!(names, ["INBOX", "Archive"]);
    session.select("Archive").await.expect("select");
    let flags = fetch(&mut session, "1:*", "(UID FLAGS)").await;
    assert_eq!(
        flags.iter().map(|f| f.uid).collect::<Vec<_>>(),
        [Some(1), Some(2), Some(3)]
    );
    session.logout().await.expect("logout");
}
