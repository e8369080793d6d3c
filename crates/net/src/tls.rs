//! TLS for every listener: rustls (ring). With no certificate configured, a self-signed one is
//! made with rcgen at first start and kept in the store (`<data_dir>/tls/`), so clients that
//! pin it keep working across restarts.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dirmail_config::Config;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(String),
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(String),
}

/// Where the certificate chain and key are: configured, or the store's own.
#[derive(Debug, Clone)]
pub struct CertPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertPaths {
    pub fn in_store(data_dir: &Path) -> CertPaths {
        let dir = data_dir.join("tls");
        CertPaths {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }
}

/// Makes a self-signed certificate for `hostname` (plus `localhost` and the loopback addresses)
/// unless one is already there. Returns true when it made one.
pub fn ensure_self_signed(paths: &CertPaths, hostname: &str) -> Result<bool, TlsError> {
    if paths.cert.exists() && paths.key.exists() {
        return Ok(false);
    }
    let mut names = vec![hostname.to_owned(), "localhost".into()];
    names.dedup();
    let mut params =
        rcgen::CertificateParams::new(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    params.subject_alt_names.push(rcgen::SanType::IpAddress(
        "127.0.0.1"
            .parse()
            .map_err(|_| TlsError::Generate("address".into()))?,
    ));
    params.subject_alt_names.push(rcgen::SanType::IpAddress(
        "::1"
            .parse()
            .map_err(|_| TlsError::Generate("address".into()))?,
    ));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, hostname);
    let key = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    if let Some(dir) = paths.cert.parent() {
        dirmail_store::private_dir(dir).map_err(|e| TlsError::Write {
            path: dir.to_owned(),
            source: std::io::Error::other(e.to_string()),
        })?;
    }
    write_private(&paths.key, key.serialize_pem().as_bytes())?;
    write_private(&paths.cert, cert.pem().as_bytes())?;
    Ok(true)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    let fail = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)
}

/// The TLS acceptor of `config`: the configured certificate, or the store's self-signed one
/// (made when missing). The files are read each time, so a reload picks up a certificate
/// renewed in place.
pub fn acceptor(config: &Config) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    Ok(tokio_rustls::TlsAcceptor::from(server_config(
        &cert_paths(config)?,
    )?))
}

/// Where `config`'s certificate and key are; for the store's own, makes them first if missing.
pub fn cert_paths(config: &Config) -> Result<CertPaths, TlsError> {
    match (&config.tls.cert_file, &config.tls.key_file) {
        (Some(cert), Some(key)) => Ok(CertPaths {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => {
            let paths = CertPaths::in_store(&config.store.data_dir);
            if ensure_self_signed(&paths, &config.server.hostname)? {
                tracing::info!(cert = %paths.cert.display(), "made a self-signed certificate");
            }
            Ok(paths)
        }
    }
}

/// Loads the chain and key into a rustls server configuration.
pub fn server_config(paths: &CertPaths) -> Result<Arc<ServerConfig>, TlsError> {
    let read_err = |path: &Path, e: &dyn std::fmt::Display| TlsError::Read {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&paths.cert)
        .map_err(|e| read_err(&paths.cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| read_err(&paths.cert, &e))?;
    if chain.is_empty() {
        return Err(read_err(&paths.cert, &"no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(&paths.key).map_err(|e| read_err(&paths.key, &e))?;
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_made_once_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let paths = CertPaths::in_store(dir.path());
        assert!(ensure_self_signed(&paths, "mail.example.jp").unwrap());
        let first = fs::read(&paths.cert).unwrap();
        assert!(!ensure_self_signed(&paths, "mail.example.jp").unwrap());
        assert_eq!(first, fs::read(&paths.cert).unwrap());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&paths.key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        server_config(&paths).unwrap();
    }
}
