//! STARTTLS for outbound delivery: a rustls client whose certificate check depends on
//! `[outbound] tls` (docs/spec.md §11.3).
//!
//! The receiver's certificate is checked against the Web PKI roots (webpki-roots) and the MX
//! host's name. With `tls = "required"` a certificate that does not verify fails the
//! handshake (a temporary failure; the next host is tried). With `"opportunistic"` it is used
//! anyway, unverified, as Postfix's `may` level does (RFC 7435): most MX hosts have no
//! certificate for their MX name, and refusing them would only send the mail in clear text,
//! which an eavesdropper can read, instead of encrypted to a server an active attacker might
//! impersonate. The log says whether the certificate verified.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Makes the TLS settings of one connection.
#[derive(Debug, Clone)]
pub struct TlsSetup {
    webpki: Arc<WebPkiServerVerifier>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    /// Use a certificate that does not verify (`tls = "opportunistic"`).
    accept_unverified: bool,
}

/// Whether the certificate of the connection verified; set during the handshake.
#[derive(Debug, Clone, Default)]
pub struct Verified(Arc<AtomicBool>);

impl Verified {
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl TlsSetup {
    pub fn new(accept_unverified: bool) -> Result<TlsSetup, String> {
        static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
        let roots = ROOTS.get_or_init(|| {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            Arc::new(roots)
        });
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::clone(roots), Arc::clone(&provider))
                .build()
                .map_err(|e| e.to_string())?;
        Ok(TlsSetup {
            webpki,
            provider,
            accept_unverified,
        })
    }

    /// A client configuration for one connection, and where it says whether the certificate
    /// verified.
    pub fn client_config(&self) -> Result<(Arc<ClientConfig>, Verified), String> {
        let verified = Verified::default();
        let verifier = Arc::new(Checker {
            webpki: Arc::clone(&self.webpki),
            accept_unverified: self.accept_unverified,
            verified: verified.clone(),
        });
        let config = ClientConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok((Arc::new(config), verified))
    }
}

/// The name the certificate is checked against: the MX host, or the address of a literal.
pub fn server_name(host: &str, addr: std::net::IpAddr) -> ServerName<'static> {
    ServerName::try_from(host.to_owned()).unwrap_or_else(|_| ServerName::IpAddress(addr.into()))
}

#[derive(Debug)]
struct Checker {
    webpki: Arc<WebPkiServerVerifier>,
    accept_unverified: bool,
    verified: Verified,
}

impl ServerCertVerifier for Checker {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(ok) => {
                self.verified.0.store(true, Ordering::Relaxed);
                Ok(ok)
            }
            Err(_) if self.accept_unverified => Ok(ServerCertVerified::assertion()),
            Err(e) => Err(e),
        }
    }

    // The handshake's signatures are always checked: an unverified certificate still proves
    // that the peer holds its key, so the session is encrypted to that peer.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
