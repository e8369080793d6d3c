//! Each rule on its facts alone: no store, no directory.

use super::*;

fn address(s: &str) -> Address {
    match Address::parse(s, 64) {
        Ok(a) => a,
        Err(e) => panic!("{s}: {e:?}"),
    }
}

#[test]
fn r1_local_and_per_domain() {
    assert_eq!(
        r1_initial_settings(),
        (AuthMethod::Local, Layout::PerDomain)
    );
}

#[test]
fn r2_counts_the_domains() {
    assert!(r2_change_only_without_domains(0, "mailbox layout").is_ok());
    let one = r2_change_only_without_domains(1, "mailbox layout").unwrap_err();
    assert_eq!(one.rule, "R2");
    assert_eq!(
        one.message,
        "The mailbox layout can be changed only when no e-mail domains exist (1 exists). Delete every domain first."
    );
    let two = r2_change_only_without_domains(2, "authentication method").unwrap_err();
    assert!(two.message.contains("(2 exist)"), "{}", two.message);
}

#[test]
fn r22_refuses_under_its_own_number_until_every_mailbox_moved() {
    assert!(r22_switch_to_ad_allowed(0, 0).is_ok());
    assert!(r22_switch_to_ad_allowed(3, 0).is_ok());
    let refusal = r22_switch_to_ad_allowed(1, 2).unwrap_err();
    assert_eq!(refusal.rule, "R22");
    assert!(refusal.message.contains("(2 still to go)"));
    assert!(refusal.message.contains("(1 exists)"));
}

#[test]
fn r3_and_r9_name_the_existing_mailbox() {
    let new = address("user@example.com");
    let old = address("user@example.jp");
    assert!(r3_local_name_unique(AuthMethod::Local, &new, None).is_ok());
    assert!(r3_local_name_unique(AuthMethod::Ad, &new, Some(&old)).is_ok());
    assert!(r3_local_name_unique(AuthMethod::PasswdFile, &new, Some(&old)).is_ok());
    let r3 = r3_local_name_unique(AuthMethod::Local, &new, Some(&old)).unwrap_err();
    assert_eq!(r3.rule, "R3");
    assert!(r3.message.contains("user@example.jp"));

    assert!(r9_shared_layout_name_unique(Layout::PerDomain, &new, Some(&old)).is_ok());
    assert!(r9_shared_layout_name_unique(Layout::Shared, &new, None).is_ok());
    let r9 = r9_shared_layout_name_unique(Layout::Shared, &new, Some(&old)).unwrap_err();
    assert_eq!(r9.rule, "R9");
    assert!(r9.message.contains("user@example.jp"));
}

#[test]
fn r5_passwd_file_accounts_come_with_their_mailbox() {
    assert!(r5_passwd_file_needs_create_user(AuthMethod::PasswdFile, true).is_ok());
    assert!(r5_passwd_file_needs_create_user(AuthMethod::Local, false).is_ok());
    assert_eq!(
        r5_passwd_file_needs_create_user(AuthMethod::PasswdFile, false)
            .unwrap_err()
            .rule,
        "R5"
    );
    let dir = Path::new("/mail/example.jp/user");
    assert!(password_record(dir).starts_with(dir));
}

#[test]
fn r6_and_r11_per_method() {
    assert!(AuthMethod::Local.offers_spa());
    assert!(AuthMethod::Ad.offers_spa());
    assert!(!AuthMethod::PasswdFile.offers_spa());
    assert!(r6_spa_required_allowed(AuthMethod::PasswdFile, false).is_ok());
    assert!(r6_spa_required_allowed(AuthMethod::Local, true).is_ok());
    assert_eq!(
        r6_spa_required_allowed(AuthMethod::PasswdFile, true)
            .unwrap_err()
            .rule,
        "R6"
    );
    assert_eq!(AuthMethod::Local.max_name_len(), 20);
    assert_eq!(AuthMethod::Ad.max_name_len(), 64);
    assert_eq!(AuthMethod::PasswdFile.max_name_len(), 64);
}

#[test]
fn r7_pop3_users_only() {
    assert_eq!(r7_groups_of_created_accounts(), ["POP3 Users"]);
}

#[test]
fn r8_exactly_one() {
    assert_eq!(r8_resolve_bare_login::<u8>(vec![]), None);
    assert_eq!(r8_resolve_bare_login(vec![7]), Some(7));
    assert_eq!(r8_resolve_bare_login(vec![7, 8]), None);
}

#[test]
fn r12_admin_mailbox_first() {
    assert_eq!(r12_postmaster(Some(1), Some(2)), Some(1));
    assert_eq!(r12_postmaster(None, Some(2)), Some(2));
    assert_eq!(r12_postmaster::<u8>(None, None), None);
}

#[test]
fn r13_and_r14_locks() {
    assert_eq!(r13_retrieval_lock(false, false), None);
    assert_eq!(r13_retrieval_lock(true, false), Some("R13"));
    assert_eq!(r13_retrieval_lock(true, true), Some("R13"));
    assert_eq!(r13_retrieval_lock(false, true), Some("R14"));

    let mailbox = address("user@example.jp");
    assert!(r14_unlock_inside_locked_domain(&mailbox, false).is_ok());
    let refusal = r14_unlock_inside_locked_domain(&mailbox, true).unwrap_err();
    assert_eq!(refusal.rule, "R14");
    assert!(refusal.message.contains("Unlock the domain first."));
}

#[test]
fn r15_edges() {
    assert!(r15_quota_admits(None, u64::MAX, u64::MAX));
    assert!(r15_quota_admits(Some(100), 60, 40));
    assert!(!r15_quota_admits(Some(100), 60, 41));
    assert!(!r15_quota_admits(Some(100), u64::MAX, 1));
}

#[test]
fn r15_quota_owner() {
    let mailbox = address("user@example.jp");
    assert_eq!(
        quota_owner(AuthMethod::Local, &mailbox, None, None).ok(),
        Some("user".into())
    );
    assert_eq!(
        quota_owner(AuthMethod::Ad, &mailbox, None, None).ok(),
        Some("user@example.jp".into())
    );
    assert_eq!(
        quota_owner(
            AuthMethod::Local,
            &mailbox,
            Some("Boss"),
            Some("boss".into())
        )
        .ok(),
        Some("boss".into())
    );
    let refusal = quota_owner(AuthMethod::Local, &mailbox, Some("nobody"), None).unwrap_err();
    assert_eq!(refusal.rule, "R15");
    assert!(refusal.message.contains("\"nobody\""));
}

#[test]
fn r21_refuses_unencrypted_urls_whatever_the_case() {
    assert_eq!(r21_encrypted_transport("ldaps://dc.example.jp"), Ok(false));
    assert_eq!(r21_encrypted_transport("LDAPS://dc.example.jp"), Ok(false));
    assert_eq!(r21_encrypted_transport("ldap://dc.example.jp"), Ok(true));
    assert_eq!(r21_encrypted_transport("LDAP://dc.example.jp"), Ok(true));
    for bad in [
        "ldapi:///var/run/ldapi",
        "dc.example.jp",
        "ldap:/dc",
        "",
        "é",
    ] {
        let refusal = r21_encrypted_transport(bad).unwrap_err();
        assert_eq!(refusal.rule, "R21");
        assert!(refusal.message.contains("(R21)"));
    }
}
