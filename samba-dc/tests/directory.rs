//! Against one DC shared by the tests of this file: TLS that verifies, StartTLS, plain binds
//! refused, users and nested groups read back, what Samba answers to each kind of refused bind
//! (the facts behind R27, recorded in `samba_dc::bind_errors`), and `samba-tool` against it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::sync::Arc;
use std::time::Duration;

use ldap3::{LdapConn, LdapConnSettings, Scope, SearchEntry};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use samba_dc::bind_errors::{
    ACCOUNT_DISABLED, ACCOUNT_EXPIRED, ACCOUNT_LOCKED_OUT, INVALID_CREDENTIALS,
    MUST_CHANGE_PASSWORD, PASSWORD_EXPIRED, STRONGER_AUTH_REQUIRED, TRANSPORT_ENCRYPTION_REQUIRED,
    WRONG_PASSWORD,
};
use samba_dc::{Dc, Error, GroupKind, GroupScope, NewUser, PasswordPolicy};

/// Every password here satisfies Samba's default policy (7 characters, 3 classes).
const PASSWORD: &str = "Corr3ct-Horse";

fn dc() -> &'static Dc {
    let dc = samba_dc::shared().expect("the shared DC starts");
    eprintln!("shared DC at {}: {:?}", dc.ldaps_url(), dc.timings());
    dc
}

fn rustls_config(roots: &[CertificateDer<'static>]) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(store)
            .with_no_client_auth(),
    )
}

/// Binds as `who` and returns the refusal, failing the test if the bind succeeds.
fn refusal(dc: &Dc, who: &str, password: &str) -> (u32, String, Option<u32>) {
    match dc.bind(who, password) {
        Err(e @ Error::Refused { .. }) => {
            let subcode = e.ad_subcode();
            let Error::Refused { rc, text, .. } = e else {
                unreachable!()
            };
            eprintln!("bind as {who}: result {rc}: {text}");
            (rc, text, subcode)
        }
        Err(e) => panic!("bind as {who} failed without an answer: {e}"),
        Ok(()) => panic!("bind as {who} succeeded"),
    }
}

fn create(dc: &Dc, user: NewUser) -> String {
    dc.admin().unwrap().create_user(&user).unwrap()
}

#[test]
fn ldaps_bind_verifies_against_the_ca_file() {
    let dc = dc();
    // The CA is read from the file handed out, as a client in another process would.
    let ca = CertificateDer::from_pem_file(dc.ca_file()).unwrap();
    let settings = LdapConnSettings::new().set_config(rustls_config(&[ca]));
    let mut conn = LdapConn::with_settings(settings, &dc.ldaps_url()).unwrap();
    let result = conn
        .simple_bind(&dc.admin_dn(), dc.admin_password())
        .unwrap();
    assert_eq!(result.rc, 0, "{}", result.text);
    let (entries, _) = conn
        .search(&dc.base_dn(), Scope::Base, "(objectClass=*)", vec!["dc"])
        .unwrap()
        .success()
        .unwrap();
    assert_eq!(entries.len(), 1);
    assert!(dc.bind(&dc.admin_upn(), dc.admin_password()).is_ok());
    assert!(
        dc.bind(
            &format!("{}\\Administrator", dc.netbios_domain()),
            dc.admin_password()
        )
        .is_ok()
    );
}

#[test]
fn a_client_that_does_not_trust_the_ca_is_turned_away() {
    let dc = dc();
    let other = rcgen::generate_simple_self_signed(vec!["other.test".to_owned()]).unwrap();
    let settings = LdapConnSettings::new()
        .set_config(rustls_config(&[other.cert.der().clone()]))
        .set_conn_timeout(Duration::from_secs(5));
    let Err(err) = LdapConn::with_settings(settings, &dc.ldaps_url()) else {
        panic!("the handshake succeeded with a CA that did not sign the certificate");
    };
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[test]
fn starttls_on_ldap_works() {
    let dc = dc();
    let mut conn = dc.connect_starttls().unwrap();
    let result = conn
        .simple_bind(&dc.admin_upn(), dc.admin_password())
        .unwrap();
    assert_eq!(result.rc, 0, "{}", result.text);
}

#[test]
fn a_simple_bind_without_tls_is_refused() {
    let dc = dc();
    let mut conn = LdapConn::new(&dc.ldap_url()).unwrap();
    let result = conn
        .simple_bind(&dc.admin_upn(), dc.admin_password())
        .unwrap();
    eprintln!("plain bind: result {}: {}", result.rc, result.text);
    assert_eq!(result.rc, STRONGER_AUTH_REQUIRED);
    assert_eq!(result.text, TRANSPORT_ENCRYPTION_REQUIRED);
}

#[test]
fn users_and_nested_groups_read_back() {
    let dc = dc();
    let mut admin = dc.admin().unwrap();
    let user = admin
        .create_user(
            &NewUser::new("nest-user", PASSWORD)
                .upn("nest-user@example.jp")
                .attribute("mail", "nest-user@example.jp"),
        )
        .unwrap();
    let inner = admin
        .create_group("nest-inner", GroupScope::Global, GroupKind::Security)
        .unwrap();
    let outer = admin
        .create_group("nest-mail", GroupScope::DomainLocal, GroupKind::Security)
        .unwrap();
    admin.add_members(&outer, &["nest-inner"]).unwrap();
    admin.add_members("nest-inner", &[&user]).unwrap();

    let entry = admin
        .entry(
            "nest-user",
            &[
                "memberOf",
                "userPrincipalName",
                "mail",
                "userAccountControl",
            ],
        )
        .unwrap();
    assert_eq!(entry.dn, user);
    // memberOf is direct membership only.
    assert_eq!(entry.all("memberOf"), std::slice::from_ref(&inner));
    assert_eq!(
        entry.first("userPrincipalName"),
        Some("nest-user@example.jp")
    );
    assert_eq!(entry.first("mail"), Some("nest-user@example.jp"));
    assert_eq!(entry.first("userAccountControl"), Some("512"));
    let group = admin.entry(&outer, &["groupType", "member"]).unwrap();
    assert_eq!(group.first("groupType"), Some("-2147483644"));
    assert_eq!(group.all("member"), std::slice::from_ref(&inner));

    // The matching rule in chain sees through the nesting, as R23 needs.
    let in_chain = admin.members_in_chain(&outer).unwrap();
    assert!(
        in_chain.contains(&user) && in_chain.contains(&inner),
        "{in_chain:?}"
    );
    let filter = format!(
        "(&(userPrincipalName=nest-user@example.jp)(memberOf:1.2.840.113556.1.4.1941:={outer}))"
    );
    let (found, _) = admin
        .conn()
        .search(
            &dc.base_dn(),
            Scope::Subtree,
            &filter,
            vec!["sAMAccountName"],
        )
        .unwrap()
        .success()
        .unwrap();
    let found: Vec<SearchEntry> = found
        .into_iter()
        .filter(|e| !e.is_ref())
        .map(SearchEntry::construct)
        .collect();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].dn, user);

    admin.remove_members(&outer, &["nest-inner"]).unwrap();
    assert!(!admin.members_in_chain(&outer).unwrap().contains(&user));

    // The user binds by UPN, by DOMAIN\sAMAccountName and by DN.
    dc.bind("nest-user@example.jp", PASSWORD).unwrap();
    dc.bind(&format!("{}\\nest-user", dc.netbios_domain()), PASSWORD)
        .unwrap();
    dc.bind(&user, PASSWORD).unwrap();
}

#[test]
fn upn_and_sam_account_name_can_be_changed() {
    let dc = dc();
    let mut admin = dc.admin().unwrap();
    let dn = admin
        .create_user(&NewUser::new("rename-me", PASSWORD))
        .unwrap();
    admin.set_upn(&dn, "renamed@example.com").unwrap();
    admin.set_sam_account_name(&dn, "renamed-sam").unwrap();
    dc.bind("renamed@example.com", PASSWORD).unwrap();
    dc.bind(&format!("{}\\renamed-sam", dc.netbios_domain()), PASSWORD)
        .unwrap();
    assert_eq!(admin.resolve("renamed-sam").unwrap(), dn);
    assert!(matches!(admin.resolve("rename-me"), Err(Error::Lookup(_))));
    admin
        .set_password("renamed-sam", "An0ther-Passw0rd")
        .unwrap();
    dc.bind("renamed@example.com", "An0ther-Passw0rd").unwrap();
    admin.delete(&dn).unwrap();
    let (rc, _, sub) = refusal(dc, "renamed@example.com", "An0ther-Passw0rd");
    assert_eq!((rc, sub), (INVALID_CREDENTIALS, Some(WRONG_PASSWORD)));
}

#[test]
fn a_password_the_policy_refuses_leaves_no_user() {
    let dc = dc();
    let mut admin = dc.admin().unwrap();
    let err = admin
        .create_user(&NewUser::new("short-pw", "Ab1!"))
        .unwrap_err();
    eprintln!("short password: {err}");
    let Error::Refused { rc, text, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(*rc, 19, "constraintViolation");
    assert!(text.contains("password is too short"), "{text}");
    assert!(matches!(admin.resolve("short-pw"), Err(Error::Lookup(_))));
}

#[test]
fn wrong_password_and_unknown_user_are_52e() {
    let dc = dc();
    create(dc, NewUser::new("wrong-pw", PASSWORD));
    let (rc, text, sub) = refusal(dc, "wrong-pw@dirmail.test", "Not-The-Passw0rd");
    assert_eq!((rc, sub), (INVALID_CREDENTIALS, Some(WRONG_PASSWORD)));
    assert_eq!(
        text,
        "80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 52e, v1db1"
    );
    let (rc, _, sub) = refusal(dc, "nobody-at-all@dirmail.test", PASSWORD);
    assert_eq!((rc, sub), (INVALID_CREDENTIALS, Some(WRONG_PASSWORD)));
}

#[test]
fn a_disabled_user_is_533() {
    let dc = dc();
    create(dc, NewUser::new("born-disabled", PASSWORD).disabled());
    let (rc, text, sub) = refusal(dc, "born-disabled@dirmail.test", PASSWORD);
    assert_eq!((rc, sub), (INVALID_CREDENTIALS, Some(ACCOUNT_DISABLED)));
    assert!(text.contains("data 533"), "{text}");

    create(dc, NewUser::new("disabled-later", PASSWORD));
    dc.bind("disabled-later@dirmail.test", PASSWORD).unwrap();
    let mut admin = dc.admin().unwrap();
    admin.disable_user("disabled-later").unwrap();
    let (_, _, sub) = refusal(dc, "disabled-later@dirmail.test", PASSWORD);
    assert_eq!(sub, Some(ACCOUNT_DISABLED));
    // A wrong password on a disabled account is a wrong password.
    let (_, _, sub) = refusal(dc, "disabled-later@dirmail.test", "Not-The-Passw0rd");
    assert_eq!(sub, Some(WRONG_PASSWORD));
    admin.enable_user("disabled-later").unwrap();
    dc.bind("disabled-later@dirmail.test", PASSWORD).unwrap();
}

#[test]
fn must_change_password_is_773() {
    let dc = dc();
    create(
        dc,
        NewUser::new("must-change", PASSWORD).must_change_password(),
    );
    let (rc, text, sub) = refusal(dc, "must-change@dirmail.test", PASSWORD);
    assert_eq!((rc, sub), (INVALID_CREDENTIALS, Some(MUST_CHANGE_PASSWORD)));
    assert!(text.contains("data 773"), "{text}");

    create(dc, NewUser::new("change-later", PASSWORD));
    dc.admin()
        .unwrap()
        .require_password_change("change-later")
        .unwrap();
    let (_, _, sub) = refusal(dc, "change-later@dirmail.test", PASSWORD);
    assert_eq!(sub, Some(MUST_CHANGE_PASSWORD));
}

#[test]
fn an_expired_password_is_532() {
    let dc = dc();
    create(dc, NewUser::new("old-password", PASSWORD));
    dc.admin().unwrap().expire_password("old-password").unwrap();
    let (rc, text, sub) = refusal(dc, "old-password@dirmail.test", PASSWORD);
    assert_eq!((rc, sub), (INVALID_CREDENTIALS, Some(PASSWORD_EXPIRED)));
    assert!(text.contains("data 532"), "{text}");
}

#[test]
fn an_expired_account_is_701() {
    let dc = dc();
    create(dc, NewUser::new("old-account", PASSWORD));
    dc.admin().unwrap().expire_account("old-account").unwrap();
    let (rc, text, sub) = refusal(dc, "old-account@dirmail.test", PASSWORD);
    assert_eq!((rc, sub), (INVALID_CREDENTIALS, Some(ACCOUNT_EXPIRED)));
    assert!(text.contains("data 701"), "{text}");
}

#[test]
fn a_locked_out_user_is_775_whatever_the_password() {
    let dc = dc();
    let mut admin = dc.admin().unwrap();
    create(dc, NewUser::new("locked-out", PASSWORD));
    // Only a lockout threshold is set: the other tests of this file never fail three binds
    // on one user.
    admin
        .set_password_policy(&PasswordPolicy {
            lockout_threshold: Some(3),
            ..Default::default()
        })
        .unwrap();
    admin.lock_out("locked-out").unwrap();
    let (rc, text, sub) = refusal(dc, "locked-out@dirmail.test", PASSWORD);
    assert_eq!((rc, sub), (INVALID_CREDENTIALS, Some(ACCOUNT_LOCKED_OUT)));
    assert!(text.contains("data 775"), "{text}");
    let (_, _, sub) = refusal(dc, "locked-out@dirmail.test", "Not-The-Passw0rd");
    assert_eq!(sub, Some(ACCOUNT_LOCKED_OUT));
    admin.unlock("locked-out").unwrap();
    dc.bind("locked-out@dirmail.test", PASSWORD).unwrap();
}

#[test]
fn samba_tool_runs_against_the_dc() {
    let dc = dc();
    let out = dc
        .samba_tool(&["user", "create", "from-samba-tool", PASSWORD])
        .unwrap();
    assert!(out.contains("added successfully"), "{out}");
    dc.bind("from-samba-tool@dirmail.test", PASSWORD).unwrap();
    // Over the network too (-H ldap:// signs and seals with SASL).
    let remote = format!("--password={}", dc.admin_password());
    let out = dc
        .samba_tool(&[
            "user",
            "list",
            "-H",
            &dc.ldap_url(),
            "-U",
            "Administrator",
            &remote,
        ])
        .unwrap();
    assert!(out.lines().any(|l| l == "from-samba-tool"), "{out}");
    let err = dc
        .samba_tool(&["user", "create", "from-samba-tool", PASSWORD])
        .unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
}
