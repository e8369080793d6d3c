//! DKIM signing of outbound mail (RFC 6376, RFC 8463 for Ed25519) with Stalwart's mail-auth.
//! The keys are kept by `dirmail_store::dkim_keys`; this module makes them, prints their DNS
//! TXT record, and signs a queued message at attempt time for the domain of its header From
//! (the domain DMARC aligns with), with every key that domain has. The body is hashed as it
//! is read from the queue file, so a large message costs no more memory than its header.

use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::{RsaPrivateKey, RsaPublicKey};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// The selector `dkim generate` uses when none is given.
pub const DEFAULT_SELECTOR: &str = "dirmail";
/// RSA keys are made with this many bits (RFC 8301: at least 1024, 2048 recommended).
pub const RSA_BITS: usize = 2048;
/// The header fields signed when present (RFC 6376 §5.4.1's list, less the trace fields).
pub const SIGNED_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "Sender",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Id",
    "List-Unsubscribe",
];
/// The header section is read up to this size to find From; a bigger one is sent unsigned.
const MAX_HEADER: usize = 256 * 1024;
const CHUNK: usize = 64 * 1024;

/// The kind of key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Rsa,
    Ed25519,
}

impl Algorithm {
    /// The `k=` tag's value.
    pub fn tag(self) -> &'static str {
        match self {
            Algorithm::Rsa => "rsa",
            Algorithm::Ed25519 => "ed25519",
        }
    }
}

/// A new private key as PKCS#8 PEM.
pub fn generate(algorithm: Algorithm) -> Result<String, String> {
    match algorithm {
        Algorithm::Rsa => {
            let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, RSA_BITS)
                .map_err(|e| format!("cannot make an RSA key: {e}"))?;
            let pem = key
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| format!("cannot encode the RSA key: {e}"))?;
            Ok(pem.to_string())
        }
        Algorithm::Ed25519 => {
            let der = Ed25519Key::generate_pkcs8()
                .map_err(|e| format!("cannot make an Ed25519 key: {e}"))?;
            Ok(pem_encode("PRIVATE KEY", &der))
        }
    }
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let text = STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    let _ = writeln!(pem, "-----END {label}-----");
    pem
}

fn pem_decode(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----"))
        .collect();
    STANDARD.decode(body).ok()
}

/// A stored key, loaded for signing.
enum Key {
    Rsa(RsaKey<Sha256>),
    Ed25519(Ed25519Key),
}

fn load(pem: &str) -> Result<Key, String> {
    let der = pem_decode(pem).ok_or("not a PEM file")?;
    if RsaPrivateKey::from_pkcs8_pem(pem).is_ok() {
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der));
        return RsaKey::<Sha256>::from_key_der(der)
            .map(Key::Rsa)
            .map_err(|e| format!("unusable RSA key: {e}"));
    }
    Ed25519Key::from_pkcs8_der(&der)
        .map(Key::Ed25519)
        .map_err(|e| format!("neither an RSA nor an Ed25519 PKCS#8 key: {e}"))
}

/// The algorithm and `p=` value (base64 of the public key: SubjectPublicKeyInfo for RSA, the
/// raw 32 octets for Ed25519, as RFC 6376 and RFC 8463 say) of a stored key.
pub fn public_key(pem: &str) -> Result<(Algorithm, String), String> {
    if let Ok(key) = RsaPrivateKey::from_pkcs8_pem(pem) {
        let der = RsaPublicKey::from(&key)
            .to_public_key_der()
            .map_err(|e| format!("cannot encode the public key: {e}"))?;
        return Ok((Algorithm::Rsa, STANDARD.encode(der.as_bytes())));
    }
    match load(pem)? {
        Key::Ed25519(key) => Ok((Algorithm::Ed25519, STANDARD.encode(key.public_key()))),
        Key::Rsa(_) => Err("unreadable RSA key".into()),
    }
}

/// The DNS record to publish, as a zone file line: the value split into strings of at most
/// 255 octets (RFC 1035's limit for one character-string; the verifier joins them).
pub fn txt_record(domain: &str, selector: &str, pem: &str) -> Result<String, String> {
    let (algorithm, p) = public_key(pem)?;
    let value = txt_value(algorithm, &p);
    let strings: Vec<String> = value
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    Ok(format!(
        "{selector}._domainkey.{domain}. IN TXT {}",
        strings.join(" ")
    ))
}

/// The TXT record's value, unsplit.
pub fn txt_value(algorithm: Algorithm, p: &str) -> String {
    format!("v=DKIM1; k={}; p={p}", algorithm.tag())
}

/// The domain of the first From header field's address in `header` (the header section),
/// lower case; `None` when there is none or it cannot name a key.
pub fn from_domain(header: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(header);
    let mut value: Option<String> = None;
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            break;
        }
        match &mut value {
            Some(v) if line.starts_with([' ', '\t']) => v.push_str(line),
            Some(_) => break,
            None => {
                if let Some((name, rest)) = line.split_once(':')
                    && name.trim().eq_ignore_ascii_case("from")
                {
                    value = Some(rest.to_owned());
                }
            }
        }
    }
    let value = value?;
    let address = match value.rfind('<') {
        Some(start) => value.get(start + 1..)?.split('>').next()?,
        None => value.trim(),
    };
    let domain = address.rsplit_once('@')?.1.trim().trim_end_matches('.');
    (!domain.is_empty()).then(|| domain.to_ascii_lowercase())
}

/// DKIM-Signature header fields for a queued message, to be sent before it: one per key of
/// its From domain. Empty when that domain has no key. Blocking (reads the file).
pub fn sign_file(data_dir: &Path, path: &Path, queue_id: &str) -> Vec<u8> {
    match try_sign(data_dir, path) {
        Ok(Some((domain, selectors, header))) => {
            tracing::info!(queue_id, domain = %domain, selectors = %selectors.join(", "), "outbound: DKIM signed");
            header
        }
        Ok(None) => Vec::new(),
        Err(e) => {
            tracing::warn!(queue_id, "outbound: sent without a DKIM signature: {e}");
            Vec::new()
        }
    }
}

type Signed = (String, Vec<String>, Vec<u8>);

fn try_sign(data_dir: &Path, path: &Path) -> Result<Option<Signed>, String> {
    let mut file =
        std::fs::File::open(path).map_err(|e| format!("cannot read the message: {e}"))?;
    // The header section first, to know the domain.
    let mut head = Vec::new();
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut chunk).map_err(|e| e.to_string())?;
        head.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if n == 0 || head.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if head.len() > MAX_HEADER {
            return Err("the header section is too large to sign".into());
        }
    }
    let Some(domain) = from_domain(&head) else {
        return Ok(None);
    };
    let stored = dirmail_store::dkim_keys::keys(data_dir, &domain).map_err(|e| e.to_string())?;
    if stored.is_empty() {
        return Ok(None);
    }
    let mut rsa_signers = Vec::new();
    let mut ed_signers = Vec::new();
    let mut selectors = Vec::new();
    for (selector, pem) in stored {
        match load(&pem).map_err(|e| format!("key {selector} of {domain}: {e}"))? {
            Key::Rsa(key) => rsa_signers.push(
                DkimSigner::from_key(key)
                    .domain(domain.clone())
                    .selector(selector.clone())
                    .headers(SIGNED_HEADERS.iter().copied()),
            ),
            Key::Ed25519(key) => ed_signers.push(
                DkimSigner::from_key(key)
                    .domain(domain.clone())
                    .selector(selector.clone())
                    .headers(SIGNED_HEADERS.iter().copied()),
            ),
        }
        selectors.push(selector);
    }
    let mut rsa_streams: Vec<_> = rsa_signers.iter().map(|s| s.sign_streaming()).collect();
    let mut ed_streams: Vec<_> = ed_signers.iter().map(|s| s.sign_streaming()).collect();
    let mut feed = |bytes: &[u8]| {
        rsa_streams.iter_mut().for_each(|s| s.write(bytes));
        ed_streams.iter_mut().for_each(|s| s.write(bytes));
    };
    feed(&head);
    loop {
        let n = file.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        feed(chunk.get(..n).unwrap_or_default());
    }
    let mut header = Vec::new();
    for stream in rsa_streams {
        let signature = stream
            .finish()
            .map_err(|e| format!("signing failed: {e}"))?;
        header.extend_from_slice(signature.to_header().as_bytes());
    }
    for stream in ed_streams {
        let signature = stream
            .finish()
            .map_err(|e| format!("signing failed: {e}"))?;
        header.extend_from_slice(signature.to_header().as_bytes());
    }
    Ok(Some((domain, selectors, header)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_from_domain_is_the_addresses_domain() {
        let h =
            b"To: a@b.example\r\nFrom: \"Taro @ home\" <taro@Example.JP>\r\nSubject: x\r\n\r\nbody";
        assert_eq!(from_domain(h).as_deref(), Some("example.jp"));
        assert_eq!(
            from_domain(b"From:\r\n taro@example.jp\r\n\r\n").as_deref(),
            Some("example.jp")
        );
        assert_eq!(from_domain(b"Subject: x\r\n\r\nFrom: a@b.jp\r\n"), None);
    }

    #[test]
    fn ed25519_keys_make_a_record_and_a_signature() {
        let pem = generate(Algorithm::Ed25519).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let (algorithm, p) = public_key(&pem).unwrap();
        assert_eq!(algorithm, Algorithm::Ed25519);
        assert_eq!(STANDARD.decode(&p).unwrap().len(), 32);
        let record = txt_record("example.jp", "s1", &pem).unwrap();
        assert_eq!(
            record,
            format!("s1._domainkey.example.jp. IN TXT \"v=DKIM1; k=ed25519; p={p}\"")
        );

        let dir = tempfile::tempdir().unwrap();
        dirmail_store::dkim_keys::write(dir.path(), "example.jp", "s1", &pem, false).unwrap();
        let message = dir.path().join("m");
        std::fs::write(
            &message,
            b"From: taro@example.jp\r\nSubject: hi\r\n\r\nbody\r\n",
        )
        .unwrap();
        let header = String::from_utf8(sign_file(dir.path(), &message, "q")).unwrap();
        assert!(
            header.starts_with("DKIM-Signature: v=1; a=ed25519-sha256;"),
            "{header}"
        );
        assert!(
            header.contains("d=example.jp") && header.contains("s=s1"),
            "{header}"
        );
        assert!(header.ends_with("\r\n"), "{header}");
    }

    #[test]
    fn rsa_records_are_split_into_strings_of_255_octets() {
        let pem = generate(Algorithm::Rsa).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let record = txt_record("example.jp", "dirmail", &pem).unwrap();
        let (name, strings) = record.split_once(" IN TXT ").unwrap();
        assert_eq!(name, "dirmail._domainkey.example.jp.");
        let parts: Vec<&str> = strings.split("\" \"").collect();
        assert_eq!(parts.len(), 2, "{record}");
        assert_eq!(parts[0].len(), 1 + 255);
        assert!(parts[0].starts_with("\"v=DKIM1; k=rsa; p=MII"));

        let dir = tempfile::tempdir().unwrap();
        dirmail_store::dkim_keys::write(dir.path(), "example.jp", "dirmail", &pem, false).unwrap();
        let message = dir.path().join("m");
        std::fs::write(
            &message,
            b"From: <taro@example.jp>\r\nTo: a@b.example\r\n\r\nbody\r\n",
        )
        .unwrap();
        let header = String::from_utf8(sign_file(dir.path(), &message, "q")).unwrap();
        assert!(
            header.starts_with("DKIM-Signature: v=1; a=rsa-sha256;"),
            "{header}"
        );
        // Another domain's message is not signed.
        std::fs::write(&message, b"From: <taro@example.org>\r\n\r\nbody\r\n").unwrap();
        assert!(sign_file(dir.path(), &message, "q").is_empty());
    }
}
