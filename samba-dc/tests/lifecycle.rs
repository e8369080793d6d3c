//! DCs of their own: two side by side, the fault hooks of R24 (pause/resume, stop/restart),
//! the password policy, and cleaning up after a drop.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::Path;
use std::time::{Duration, Instant};

use ldap3::{LdapConn, LdapError};
use samba_dc::{Dc, Error, NewUser, PasswordPolicy};

const PASSWORD: &str = "Corr3ct-Horse";

fn start() -> Dc {
    let dc = Dc::start().expect("a DC starts");
    eprintln!(
        "DC at {} ({}): {:?}",
        dc.ldaps_url(),
        dc.dir().display(),
        dc.timings()
    );
    dc
}

/// Processes whose working directory is inside `dir` (the fixture's own definition).
fn processes_in(dir: &Path) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(dir))
        })
        .count()
}

#[test]
fn two_dcs_side_by_side() {
    let a = start();
    let b = start();
    assert_ne!(a.address(), b.address());
    assert_ne!(a.dir(), b.dir());
    a.admin()
        .unwrap()
        .create_user(&NewUser::new("only-in-a", PASSWORD))
        .unwrap();
    a.bind("only-in-a@dirmail.test", PASSWORD).unwrap();
    let err = b.bind("only-in-a@dirmail.test", PASSWORD).unwrap_err();
    assert_eq!(
        err.ad_subcode(),
        Some(samba_dc::bind_errors::WRONG_PASSWORD),
        "{err}"
    );
    // Each DC's certificate names its own address: b's CA does not verify a.
    let settings = b.ldap_settings();
    assert!(LdapConn::with_settings(settings, &a.ldaps_url()).is_err());

    let a_dir = a.dir().to_owned();
    assert!(
        processes_in(&a_dir) >= 3,
        "samba, smbd and winbindd at least"
    );
    drop(a);
    assert!(!a_dir.exists(), "the directory goes with the DC");
    assert_eq!(processes_in(&a_dir), 0, "no process is left");
    b.bind(&b.admin_upn(), b.admin_password()).unwrap();
}

#[test]
fn pause_and_resume() {
    let dc = start();
    dc.pause().unwrap();
    // The kernel still accepts the connection; nothing answers the TLS handshake.
    let started = Instant::now();
    let settings = dc.ldap_settings().set_conn_timeout(Duration::from_secs(1));
    let Err(err) = LdapConn::with_settings(settings, &dc.ldaps_url()) else {
        panic!("a paused DC answered");
    };
    assert!(matches!(err, LdapError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(dc.is_running(), "paused is not stopped");
    dc.resume().unwrap();
    dc.bind(&dc.admin_upn(), dc.admin_password()).unwrap();
}

#[test]
fn stop_and_restart_keep_the_data() {
    let dc = start();
    dc.admin()
        .unwrap()
        .create_user(&NewUser::new("survivor", PASSWORD))
        .unwrap();
    let pid = dc.samba_pid().unwrap();
    dc.stop().unwrap();
    assert!(!dc.is_running());
    assert_eq!(processes_in(dc.dir()), 0);
    let Err(err) = dc.connect() else {
        panic!("a stopped DC answered")
    };
    assert!(
        matches!(&err, Error::Ldap { source, .. } if matches!(**source, LdapError::Io { .. })),
        "{err}"
    );
    assert!(matches!(dc.pause(), Err(Error::Invalid(_))));

    let took = dc.restart().unwrap();
    eprintln!("restart took {took:?}");
    assert_ne!(dc.samba_pid(), Some(pid));
    dc.bind("survivor@dirmail.test", PASSWORD).unwrap();
    // Restarting a running DC stops it first.
    dc.restart().unwrap();
    dc.bind("survivor@dirmail.test", PASSWORD).unwrap();
}

#[test]
fn password_policy_round_trip() {
    let dc = start();
    let mut admin = dc.admin().unwrap();
    let before = admin.password_policy().unwrap();
    eprintln!("default policy: {before:?}");
    assert_eq!(before.min_length, Some(7));
    assert_eq!(before.complexity, Some(true));
    assert_eq!(before.lockout_threshold, Some(0));

    let wanted = PasswordPolicy {
        min_length: Some(12),
        complexity: Some(false),
        history_length: Some(0),
        min_age: Some(Duration::ZERO),
        max_age: Some(Duration::from_secs(90 * 86400)),
        lockout_threshold: Some(3),
        lockout_duration: Some(Duration::from_secs(600)),
        lockout_window: Some(Duration::from_secs(300)),
    };
    admin.set_password_policy(&wanted).unwrap();
    assert_eq!(admin.password_policy().unwrap(), wanted);

    let err = admin
        .create_user(&NewUser::new("too-short", "Elev3n-char"))
        .unwrap_err();
    assert!(err.to_string().contains("too short"), "{err}");
    // Complexity off: twelve lower-case letters will do.
    admin
        .create_user(&NewUser::new("simple", "justlowercase"))
        .unwrap();
    dc.bind("simple@dirmail.test", "justlowercase").unwrap();
}
