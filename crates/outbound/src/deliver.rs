//! One delivery attempt for the recipients of one message at one domain: route, then try each
//! (host, address) in order, driving the sans-IO SMTP client over a TCP stream, until every
//! recipient is decided or the list is exhausted (RFC 5321 §5.1). A session that fails as a
//! whole (no connection, a refused greeting, a lost connection, a timeout, a broken protocol,
//! a failed TLS handshake) moves on to the next address; a recipient the server answered is
//! decided there.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use dirmail_proto::smtp::client::{
    self, BodyEncoder, Client, Disposition, Envelope, Event, Outcome, TlsPolicy, Verdict,
};
use dirmail_proto::smtp::reply::Reply;

use crate::dns::Router;
use crate::route::{Destination, Hop, RouteError};
use crate::tls::{TlsSetup, server_name};

/// How long a TCP connection may take to open (RFC 5321 leaves it to the client; Postfix
/// waits 30 s).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a TLS handshake may take after `220` to STARTTLS.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// The body is read from the queue and written in pieces of this size.
const BODY_CHUNK: usize = 64 * 1024;

/// What is known of the message to send.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    pub queue_id: &'a str,
    /// The message's Message-ID (`-` without one), so its lines can be found by it.
    pub message_id: &'a str,
    pub path: &'a Path,
    pub reverse_path: &'a str,
    /// The message's size as queued, without `prefix`.
    pub size: u64,
    /// Header fields sent before the queued file: the DKIM signatures (`dkim.rs`), made once
    /// per attempt.
    pub prefix: &'a [u8],
    pub eight_bit: bool,
    pub utf8_headers: bool,
}

/// The settings every attempt shares.
#[derive(Debug)]
pub struct Settings {
    pub hostname: String,
    pub tls: TlsPolicy,
    pub tls_setup: TlsSetup,
    /// The smarthost's account (`[outbound] relay_user`/`relay_password`).
    pub login: Option<client::Login>,
}

/// One recipient's result of an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub address: String,
    pub disposition: Disposition,
    /// `code status text`, as the log and the bounce show it.
    pub reply: String,
    /// `host [address]` of the server that decided, if one was reached or tried.
    pub host: Option<String>,
}

/// Tries to deliver `message` to `recipients`, all at `domain`.
pub async fn deliver_domain(
    router: Option<&Router>,
    settings: &Settings,
    message: &Message<'_>,
    domain: &str,
    recipients: Vec<String>,
) -> Vec<Attempt> {
    let all = |disposition, reply: String, host: Option<String>| -> Vec<Attempt> {
        recipients
            .iter()
            .map(|address| Attempt {
                address: address.clone(),
                disposition,
                reply: reply.clone(),
                host: host.clone(),
            })
            .collect()
    };
    let Some(router) = router else {
        return all(
            Disposition::Temporary,
            "451 4.4.3 No DNS resolver is set up for outbound mail".into(),
            None,
        );
    };
    let hops = match Destination::parse(domain) {
        Ok(destination) => router.route(&destination).await,
        Err(e) => Err(e),
    };
    let hops = match hops {
        Ok(hops) => hops,
        Err(e) => {
            let (disposition, reply) = route_reply(&e);
            tracing::info!(
                queue_id = message.queue_id,
                    message_id = message.message_id,
                recipients = %recipients.join(", "),
                reply = %reply,
                "outbound: no route"
            );
            return all(disposition, reply, None);
        }
    };
    let mut remaining = recipients.clone();
    let mut decided: Vec<Attempt> = Vec::new();
    let mut last_failure = (
        "451 4.4.4 No mail server could be tried".to_owned(),
        Disposition::Temporary,
        None,
    );
    for hop in &hops {
        if remaining.is_empty() {
            break;
        }
        let host = format!("{} [{}]", hop.host, hop.addr);
        let outcome = attempt(settings, message, hop, remaining.clone()).await;
        match outcome {
            Err(reply) => {
                tracing::info!(
                    queue_id = message.queue_id,
                    message_id = message.message_id,
                    recipients = %remaining.join(", "),
                    host = %host,
                    reply = %reply,
                    "outbound: attempt failed"
                );
                last_failure = (reply, Disposition::Temporary, Some(host));
            }
            Ok((outcome, tls)) => {
                let session = outcome.session_failure.as_ref().map(|f| f.verdict.clone());
                let mut next = Vec::new();
                for r in outcome.recipients {
                    let reply = reply_text(&r.verdict);
                    tracing::info!(
                        queue_id = message.queue_id,
                    message_id = message.message_id,
                        recipient = %r.address,
                        host = %host,
                        tls = %tls,
                        reply = %reply,
                        "outbound: attempt"
                    );
                    // Decided by the session's failure: the next host may do better.
                    if session.as_ref() == Some(&r.verdict) {
                        next.push(r.address);
                        continue;
                    }
                    decided.push(Attempt {
                        address: r.address,
                        disposition: r.verdict.disposition,
                        reply,
                        host: Some(host.clone()),
                    });
                }
                if let Some(verdict) = session {
                    last_failure = (reply_text(&verdict), verdict.disposition, Some(host));
                }
                remaining = next;
            }
        }
    }
    let (reply, disposition, host) = last_failure;
    decided.extend(remaining.into_iter().map(|address| Attempt {
        address,
        disposition,
        reply: reply.clone(),
        host: host.clone(),
    }));
    decided
}

/// A routing failure as the reply a server would have given (`556 5.1.10` for a null MX).
fn route_reply(e: &RouteError) -> (Disposition, String) {
    let status = e.status.0;
    if e.permanent {
        let code = if status == crate::route::Status::NULL_MX.0 {
            556
        } else {
            550
        };
        (
            Disposition::Permanent,
            format!("{code} {status} {}", e.reason),
        )
    } else {
        (Disposition::Temporary, format!("451 {status} {}", e.reason))
    }
}

/// `code status text` on one line.
pub fn reply_text(verdict: &Verdict) -> String {
    let text = verdict.reply.lines().join(" ");
    format!("{} {} {}", verdict.reply.code, verdict.status(), text)
}

/// Reads back what [`reply_text`] wrote, for the bounce.
pub fn parse_reply(text: &str) -> Option<Reply> {
    let mut words = text.splitn(3, ' ');
    let code: u16 = words.next()?.parse().ok()?;
    let status = words.next()?;
    let mut parts = status.split('.').map(|p| p.parse::<u16>().ok());
    let (class, subject, detail) = (parts.next()??, parts.next()??, parts.next()??);
    let class = u8::try_from(class).ok()?;
    let status = dirmail_proto::smtp::Status(class, subject, detail);
    Some(Reply::new(code, Some(status), words.next().unwrap_or("")))
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One connection to one address. `Err` is a connection that could not be opened; otherwise
/// the client's outcome, and how TLS went (`none`, `verified`, `unverified`).
async fn attempt(
    settings: &Settings,
    message: &Message<'_>,
    hop: &Hop,
    recipients: Vec<String>,
) -> Result<(Outcome, &'static str), String> {
    let config = client::Config {
        hostname: settings.hostname.clone(),
        tls: settings.tls,
        login: settings.login.clone(),
    };
    let envelope = Envelope {
        reverse_path: message.reverse_path.to_owned(),
        recipients,
        size: message.size + message.prefix.len() as u64,
        eight_bit: message.eight_bit,
        utf8_headers: message.utf8_headers,
    };
    let mut client = match Client::new(config, envelope, false) {
        Ok(client) => client,
        // Only a control character in an address or name can get here; the message is
        // unsendable as it is.
        Err(e) => return Err(format!("554 5.1.3 Cannot send: {e}")),
    };
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(hop.addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(format!("421 4.4.1 Cannot connect: {e}")),
        Err(_) => return Err("421 4.4.1 Cannot connect: timed out".into()),
    };
    let _ = tcp.set_nodelay(true);
    let mut io: Option<Box<dyn Io>> = Some(Box::new(tcp));
    let mut tls = "none";
    let mut outcome = None;
    let mut buf = vec![0u8; 4096];
    loop {
        while let Some(event) = client.poll() {
            match event {
                Event::Write(out) => {
                    if write(&mut io, out.bytes(), client::COMMAND_TIMEOUT)
                        .await
                        .is_err()
                    {
                        client.connection_closed();
                    }
                }
                Event::StartTls => match handshake(settings, hop, io.take()).await {
                    Ok((stream, verified)) => {
                        io = Some(stream);
                        tls = if verified { "verified" } else { "unverified" };
                        client.tls_started();
                    }
                    Err(e) => {
                        tracing::info!(queue_id = message.queue_id,
                    message_id = message.message_id, host = %hop.host, addr = %hop.addr, "outbound: TLS handshake failed: {e}");
                        client.tls_failed();
                    }
                },
                Event::SendBody => match send_body(&mut io, message.prefix, message.path).await {
                    Ok(()) => client.body_sent(),
                    Err(e) => {
                        tracing::info!(
                            queue_id = message.queue_id,
                            message_id = message.message_id,
                            "outbound: sending the body failed: {e}"
                        );
                        client.connection_closed();
                    }
                },
                Event::Done(done) => outcome = Some(done),
                Event::Close => {
                    if let Some(mut stream) = io.take() {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(5), stream.shutdown()).await;
                    }
                }
            }
        }
        if client.is_closed() {
            break;
        }
        let Some(stream) = io.as_mut() else {
            client.connection_closed();
            continue;
        };
        let wait = client.current_timeout().unwrap_or(client::COMMAND_TIMEOUT);
        match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Err(_) => client.timed_out(),
            Ok(Ok(0)) | Ok(Err(_)) => client.connection_closed(),
            Ok(Ok(n)) => client.feed(buf.get(..n).unwrap_or_default()),
        }
    }
    match outcome {
        Some(outcome) => Ok((outcome, tls)),
        None => Err("451 4.3.0 The session ended without an outcome".into()),
    }
}

async fn write(io: &mut Option<Box<dyn Io>>, bytes: &[u8], limit: Duration) -> std::io::Result<()> {
    let Some(stream) = io.as_mut() else {
        return Err(std::io::ErrorKind::NotConnected.into());
    };
    match tokio::time::timeout(limit, async {
        stream.write_all(bytes).await?;
        stream.flush().await
    })
    .await
    {
        Ok(result) => result,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

async fn handshake(
    settings: &Settings,
    hop: &Hop,
    io: Option<Box<dyn Io>>,
) -> Result<(Box<dyn Io>, bool), String> {
    let io = io.ok_or("no connection")?;
    let (config, verified) = settings.tls_setup.client_config()?;
    let connector = TlsConnector::from(config);
    let name = server_name(hop.host.trim_matches(['[', ']']), hop.addr.ip());
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, io)).await {
        Ok(Ok(stream)) => Ok((Box::new(stream), verified.get())),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// Streams `prefix` and the queued message through the dot-stuffing encoder, then the final `.`.
async fn send_body(
    io: &mut Option<Box<dyn Io>>,
    prefix: &[u8],
    path: &Path,
) -> std::io::Result<()> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut encoder = BodyEncoder::new();
    let mut chunk = vec![0u8; BODY_CHUNK];
    let mut out = Vec::with_capacity(BODY_CHUNK + BODY_CHUNK / 8 + 8);
    if !prefix.is_empty() {
        encoder.encode(prefix, &mut out);
        write(io, &out, client::DATA_BLOCK_TIMEOUT).await?;
    }
    loop {
        let n = file.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        out.clear();
        encoder.encode(chunk.get(..n).unwrap_or_default(), &mut out);
        write(io, &out, client::DATA_BLOCK_TIMEOUT).await?;
    }
    out.clear();
    encoder.finish(&mut out);
    write(io, &out, client::DATA_BLOCK_TIMEOUT).await
}
