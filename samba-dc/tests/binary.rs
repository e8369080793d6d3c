//! `samba-dc start --json` as another process uses it: read one line, use the DC, close the
//! pipe, and find everything gone.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ldap3::{LdapConn, LdapConnSettings};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

#[test]
fn start_json_then_close_stdin() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_samba-dc"))
        .args(["start", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    eprintln!("{line}");
    let info: serde_json::Value = serde_json::from_str(&line).expect("one line of JSON");
    let text = |key: &str| {
        info[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} in {line}"))
            .to_owned()
    };

    assert_eq!(info["controller_pid"].as_u64(), Some(u64::from(child.id())));
    let samba_pid = info["samba_pid"].as_u64().unwrap();
    assert!(Path::new(&format!("/proc/{samba_pid}")).exists());
    assert!(text("url").starts_with("ldaps://127.77."));
    assert!(text("ldap_url").starts_with("ldap://127.77."));
    assert_eq!(text("base_dn"), "DC=dirmail,DC=test");
    assert_eq!(text("netbios"), "DIRMAIL");
    assert_eq!(text("realm"), "DIRMAIL.TEST");
    assert!(Path::new(&text("conf")).is_file());

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(text("ca_file")).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let settings = LdapConnSettings::new().set_config(Arc::new(config));
    let mut conn = LdapConn::with_settings(settings, &text("url")).unwrap();
    let result = conn
        .simple_bind(&text("admin_dn"), &text("admin_password"))
        .unwrap();
    assert_eq!(result.rc, 0, "{}", result.text);
    let _ = conn.unbind();

    drop(child.stdin.take());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "samba-dc did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("stopped in {:?}", start.elapsed());
    assert!(status.success(), "{status}");
    assert!(!Path::new(&text("dir")).exists());
    assert!(!Path::new(&format!("/proc/{samba_pid}")).exists());
}
