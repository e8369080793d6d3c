//! The client side of a connection: plain TCP or implicit TLS, read a line at a time.
//!
//! The benchmark's clients check every reply they need to (a server that answers `-ERR` to a
//! login must not look fast), but do no more parsing than that, so the generator's own cost per
//! operation stays small beside the server's.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Any byte stream a client can speak over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How to reach a listener.
#[derive(Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// Implicit TLS: the handshake comes first.
    pub tls: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Endpoint {
    pub fn plain(addr: SocketAddr) -> Endpoint {
        Endpoint { addr, tls: None }
    }

    pub fn tls(addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr,
            tls: Some(insecure_client_config()),
        }
    }

    pub async fn connect(&self) -> Result<Conn> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("cannot connect to {}", self.addr))?;
        tcp.set_nodelay(true)?;
        let io: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = ServerName::IpAddress(self.addr.ip().into());
                let tls = TlsConnector::from(Arc::clone(config))
                    .connect(name, tcp)
                    .await
                    .with_context(|| format!("TLS handshake with {}", self.addr))?;
                Box::new(tls)
            }
        };
        Ok(Conn {
            io: BufReader::with_capacity(16 * 1024, io),
            line: Vec::with_capacity(256),
        })
    }
}

/// A connection with a read buffer and the last line read.
pub struct Conn {
    io: BufReader<Box<dyn Io>>,
    line: Vec<u8>,
}

impl Conn {
    /// Reads one line (with its CRLF); the connection closing first is an error.
    pub async fn read_line(&mut self) -> Result<&[u8]> {
        self.line.clear();
        let n = self.io.read_until(b'\n', &mut self.line).await?;
        if n == 0 || !self.line.ends_with(b"\n") {
            bail!("the server closed the connection");
        }
        Ok(&self.line)
    }

    /// Reads exactly `n` bytes (an IMAP literal) and drops them.
    pub async fn skip_exact(&mut self, mut n: usize) -> Result<()> {
        let mut sink = [0u8; 4096];
        while n > 0 {
            let take = n.min(sink.len());
            self.io.read_exact(&mut sink[..take]).await?;
            n -= take;
        }
        Ok(())
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let stream = self.io.get_mut();
        stream.write_all(bytes).await?;
        stream.flush().await?;
        Ok(())
    }

    /// Sends two buffers as one write where the stream allows (a message and its final dot).
    pub async fn send_parts(&mut self, first: &[u8], second: &[u8]) -> Result<()> {
        let stream = self.io.get_mut();
        stream.write_all(first).await?;
        stream.write_all(second).await?;
        stream.flush().await?;
        Ok(())
    }

    pub async fn shutdown(mut self) {
        let _ = self.io.get_mut().shutdown().await;
    }
}

/// The line as text for an error message, without its line end.
pub fn shown(line: &[u8]) -> String {
    String::from_utf8_lossy(line).trim_end().to_owned()
}

/// A TLS client that accepts any certificate. The benchmark measures the cost of TLS on
/// loopback against servers it started itself with self-signed certificates; verifying them
/// would add nothing but set-up.
// The expect: ring, the provider given on the line before it, supports the default versions;
// only a mistake in this file could fail it.
#[allow(clippy::expect_used)]
pub fn insecure_client_config() -> Arc<ClientConfig> {
    use std::sync::OnceLock;
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        Arc::new(config)
    }))
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    // The handshake signatures are still checked, so the TLS work is the real one.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
