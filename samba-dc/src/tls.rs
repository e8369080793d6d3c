//! A small CA and a server certificate for each DC, so that clients verify Samba instead of
//! turning verification off.
//!
//! The server certificate names the DC's address (an IP SAN: `ldaps://127.77.0.1` verifies)
//! and its DNS name (`dc1.dirmail.test`). Samba reads them through `tls certfile`, `tls keyfile`
//! (which it refuses unless the mode is 0600) and `tls cafile`.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use crate::error::{Error, Result};

/// The PEM files of one DC.
#[derive(Clone, Debug)]
pub(crate) struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca_der: CertificateDer<'static>,
}

/// Makes the CA and the server certificate in `dir` (created if missing).
pub(crate) fn make(dir: &Path, addr: Ipv4Addr, dns_name: &str) -> Result<TlsFiles> {
    fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(
        DnType::CommonName,
        format!("samba-dc fixture CA for {addr}"),
    );
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![dns_name.to_owned(), addr.to_string()])?;
    params.distinguished_name.push(DnType::CommonName, dns_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer)?;

    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server-key.pem"),
        ca_der: ca_cert.der().clone(),
    };
    write(&files.ca, ca_cert.pem().as_bytes(), 0o644)?;
    write(&files.cert, cert.pem().as_bytes(), 0o644)?;
    write(&files.key, key.serialize_pem().as_bytes(), 0o600)?;
    Ok(files)
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(Error::io(format!("create {}", path.display())))?;
    file.write_all(bytes)
        .map_err(Error::io(format!("write {}", path.display())))
}

/// A rustls client configuration (ring provider) that trusts only `ca`.
pub(crate) fn client_config(ca: &CertificateDer<'static>) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
