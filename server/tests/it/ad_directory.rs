//! Active Directory integrated authentication (SPEC §9) against a real Samba AD domain
//! controller started by the `samba-dc` fixture: the administration tool's side (R4, R22,
//! R23, R25, R27) and logins through `dirmail auth test`. Tests share one DC, so each uses its
//! own domains, names and mail group.

use crate::common::{Scratch, directory_section};
use samba_dc::{GroupKind, GroupScope, NewUser};

fn dc() -> &'static samba_dc::Dc {
    samba_dc::shared()
        .expect("the Samba AD DC starts (apt-get install -y samba-ad-dc samba-ad-provision)")
}

/// A store set to `ad` with its own mail group, and one domain.
fn ad_store(group: &str, domain: &str) -> Scratch {
    let s = Scratch::new();
    s.config(&format!(
        "[server]\nhostname = \"mail.example.jp\"\n{}",
        directory_section(dc(), group, &dc().ldaps_url())
    ));
    let text = s.text(0, &["set", "authentication", "ad"]);
    assert!(
        text.contains(&format!("Created the mail group {group}")),
        "{text}"
    );
    s.expect(0, &["add", domain]);
    s
}

fn upn_exists(upn: &str) -> bool {
    let mut admin = dc().admin().expect("admin");
    !admin
        .search(&format!("(userPrincipalName={upn})"), &["dn"])
        .expect("search")
        .is_empty()
}

#[test]
fn create_user_log_in_change_password_delete() {
    let s = ad_store("MailUsers-t1", "t1.example");
    s.expect(0, &["add", "t1b.example"]);
    // R4: the SPA name is the name itself when free…
    let text = s.text(
        0,
        &["add", "carol@t1.example", "--create-user", "Carol-Passw0rd"],
    );
    assert!(
        text.contains("Secure Password Authentication:\n    Account name: carol\n"),
        "{text}"
    );
    // …and derived when taken (the same name in a second domain is allowed under ad, R4).
    let text = s.text(
        0,
        &[
            "add",
            "carol@t1b.example",
            "--create-user",
            "Carol-Passw0rd2",
        ],
    );
    assert!(text.contains("Account name: carol-t1b\n"), "{text}");
    assert!(upn_exists("carol@t1.example") && upn_exists("carol@t1b.example"));

    s.expect(0, &["auth", "test", "carol@t1.example", "Carol-Passw0rd"]);
    assert!(
        s.text(3, &["auth", "test", "carol@t1.example", "Wrong-Passw0rd"])
            .contains("bad password")
    );
    // The password lives in AD: changepwd changes it there.
    // (AD may keep accepting the old password for a while — Samba's "old password allowed
    // period" — so only the new one is checked.)
    s.expect(
        0,
        &["changepwd", "carol@t1.example", "Carol-Newer-Passw0rd"],
    );
    s.expect(
        0,
        &["auth", "test", "carol@t1.example", "Carol-Newer-Passw0rd"],
    );
    dc().bind("carol@t1.example", "Carol-Newer-Passw0rd")
        .expect("AD itself takes it");

    s.expect(0, &["delete", "carol@t1b.example", "--delete-user"]);
    assert!(
        !upn_exists("carol@t1b.example"),
        "--delete-user removes the AD user"
    );
    s.expect(0, &["delete", "carol@t1.example"]);
    assert!(
        upn_exists("carol@t1.example"),
        "without --delete-user the AD user stays"
    );
}

#[test]
fn r25_a_refused_password_leaves_nothing_behind() {
    let s = ad_store("MailUsers-t2", "t2.example");
    let text = s.text(3, &["add", "weak@t2.example", "--create-user", "abc"]);
    assert!(text.contains("refused by R25"), "{text}");
    assert!(text.contains("password policy"), "{text}");
    assert!(
        !upn_exists("weak@t2.example"),
        "no AD user without a password"
    );
    assert!(
        !s.mailroot().join("t2.example/weak").exists(),
        "no mailbox without a user"
    );
    let listed = s.text(0, &["list", "t2.example"]);
    assert!(listed.contains("0 mailbox(es)"), "{listed}");
    // And a good password then works.
    s.expect(
        0,
        &[
            "add",
            "weak@t2.example",
            "--create-user",
            "Str0nger-Passw0rd",
        ],
    );
}

#[test]
fn r23_r27_refusals_are_told_apart() {
    let s = ad_store("MailUsers-t3", "t3.example");
    let mut admin = dc().admin().expect("admin");
    // Users an AD administrator made, outside dirmail.
    let mk = |admin: &mut samba_dc::Admin<'_>, sam: &str, user: NewUser| {
        admin
            .create_user(&user.upn(&format!("{sam}@t3.example")))
            .expect("create user")
    };
    let outsider = mk(&mut admin, "t3out", NewUser::new("t3out", "Outs1der-Pass"));
    let nested = mk(&mut admin, "t3nest", NewUser::new("t3nest", "Nest3d-Pass"));
    let disabled = mk(&mut admin, "t3dis", NewUser::new("t3dis", "Disabl3d-Pass"));
    let must = mk(
        &mut admin,
        "t3must",
        NewUser::new("t3must", "Mustch4nge-Pass"),
    );
    // R23: membership through a nested group counts.
    let team = admin
        .create_group("t3-team", GroupScope::Global, GroupKind::Security)
        .expect("group");
    admin.add_members(&team, &[&nested]).expect("nest");
    let mail_group = admin
        .resolve("MailUsers-t3")
        .expect("the mail group exists");
    admin
        .add_members(&mail_group, &[&team, &disabled, &must])
        .expect("members");
    admin.disable_user(&disabled).expect("disable");
    admin.require_password_change(&must).expect("must change");
    let _ = outsider;
    for name in ["t3out", "t3nest", "t3dis", "t3must"] {
        // A mailbox for an existing AD user: no --create-user.
        s.expect(0, &["add", &format!("{name}@t3.example")]);
    }
    s.expect(0, &["auth", "test", "t3nest@t3.example", "Nest3d-Pass"]);
    let refusal = |login: &str, password: &str| s.text(3, &["auth", "test", login, password]);
    assert!(refusal("t3out@t3.example", "Outs1der-Pass").contains("not in the mail group"));
    assert!(refusal("t3dis@t3.example", "Disabl3d-Pass").contains("account disabled"));
    assert!(refusal("t3must@t3.example", "Mustch4nge-Pass").contains("password must be changed"));
    assert!(refusal("t3nest@t3.example", "Wrong-Pass1").contains("bad password"));
    // A mailbox whose AD user does not exist cannot be added without --create-user.
    assert!(
        s.text(4, &["add", "ghost@t3.example"])
            .contains("no account named ghost")
    );
}

#[test]
fn r22_migrate_a_local_server_without_losing_mail() {
    let s = Scratch::new();
    s.config(&format!(
        "[server]\nhostname = \"mail.example.jp\"\n{}",
        directory_section(dc(), "MailUsers-t4", &dc().ldap_url())
    ));
    s.expect(0, &["add", "t4.example"]);
    s.expect(0, &["add", "dave@t4.example", "--create-user", "local-pw"]);
    s.expect(0, &["add", "erin@t4.example", "--create-user", "local-pw"]);
    std::fs::write(
        s.mailroot().join("t4.example/dave/new/1.test"),
        "Subject: keep me\r\n\r\nhi\r\n",
    )
    .expect("mail for dave");
    // The seeds' order: without migrating, R2 refuses.
    let text = s.text(3, &["set", "authentication", "ad"]);
    assert!(
        text.contains("refused by R2") && text.contains("migratetoad"),
        "{text}"
    );
    // ldap:// with StartTLS (R21) is as good as ldaps://.
    let text = s.text(3, &["migratetoad", "dave@t4.example"]);
    assert!(text.contains("--password"), "{text}");
    let text = s.text(
        0,
        &[
            "migratetoad",
            "dave@t4.example",
            "--password",
            "Dave-Passw0rd",
        ],
    );
    assert!(text.contains("1 mailbox(es) still to migrate"), "{text}");
    s.expect(3, &["set", "authentication", "ad"]);
    let text = s.text(
        0,
        &[
            "migratetoad",
            "erin@t4.example",
            "--password",
            "Erin-Passw0rd",
        ],
    );
    assert!(text.contains("Every mailbox is migrated"), "{text}");
    let text = s.text(0, &["set", "authentication", "ad"]);
    assert!(text.contains("Property successfully set."), "{text}");
    // The mail is still there, and the AD password now opens the mailbox.
    assert!(s.mailroot().join("t4.example/dave/new/1.test").exists());
    s.expect(0, &["auth", "test", "dave@t4.example", "Dave-Passw0rd"]);
    assert!(
        s.text(3, &["auth", "test", "dave@t4.example", "local-pw"])
            .contains("bad password")
    );
}

#[test]
fn r21_a_configuration_that_would_send_passwords_in_clear_is_refused() {
    let s = Scratch::new();
    s.config(&format!(
        "[server]\nhostname = \"mail.example.jp\"\n{}",
        directory_section(dc(), "MailUsers-t5", &format!("ldapi://{}", dc().address()))
    ));
    let text = s.text(2, &["set", "authentication", "ad"]);
    assert!(text.contains("R21"), "{text}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dirmail"))
        .arg("serve")
        .current_dir(s.path())
        .output()
        .expect("serve");
    assert_eq!(out.status.code(), Some(2), "serve refuses to start");
    assert!(String::from_utf8_lossy(&out.stderr).contains("R21"));
}

#[test]
fn r26_domain_groups_in_the_shared_layout() {
    let s = Scratch::new();
    s.config(&format!(
        "[server]\nhostname = \"mail.example.jp\"\n{}",
        directory_section(dc(), "MailUsers-t6", &dc().ldaps_url())
    ));
    s.expect(0, &["set", "mailbox-layout", "shared"]);
    s.expect(0, &["set", "authentication", "ad"]);
    // `add DOMAIN` makes the AD group named after the domain.
    let text = s.text(0, &["add", "t6a.example"]);
    assert!(
        text.contains("Created the Active Directory group t6a.example (R26)"),
        "{text}"
    );
    s.expect(0, &["add", "t6b.example"]);
    s.expect(
        0,
        &["add", "gina@t6a.example", "--create-user", "Gina-Passw0rd"],
    );
    s.expect(
        0,
        &["add", "hank@t6a.example", "--create-user", "Hank-Passw0rd"],
    );
    s.expect(
        0,
        &["add", "ivy@t6b.example", "--create-user", "Ivy-Passw0rd1"],
    );
    // R9 still holds in the shared layout.
    assert!(
        s.text(
            3,
            &["add", "gina@t6b.example", "--create-user", "Gina-Passw0rd"]
        )
        .contains("R9")
    );

    let mut admin = dc().admin().expect("admin");
    let hank = admin.resolve("hank").expect("hank");
    let ivy = admin.resolve("ivy").expect("ivy");
    let group_a = admin.resolve("t6a.example").expect("group t6a.example");
    // hank loses his domain group; ivy is put in a second one.
    admin.remove_members(&group_a, &[&hank]).expect("remove");
    admin.add_members(&group_a, &[&ivy]).expect("add");

    let text = s.text(0, &["list", "t6a.example"]);
    assert!(
        text.contains("gina@t6a.example") && text.contains("AD domain: t6a.example"),
        "{text}"
    );
    assert!(
        text.contains("AD domain: (none)"),
        "hank has no domain group: {text}"
    );
    let text = s.text(0, &["list", "t6b.example"]);
    assert!(
        text.contains("AD domain: conflict (t6a.example, t6b.example)"),
        "{text}"
    );
}

/// Connections to the DC are kept between operations (a login should not pay for a TLS
/// handshake), and a kept connection never lends one user's bind to another check: after a
/// right password on a kept connection, a wrong one is still wrong, and the other way round.
#[test]
fn kept_connections_serve_the_next_lookup_and_bind_and_judge_each_password_afresh() {
    use dirmail_directory::ad::{AdDirectory, BindVerdict, Lookup};
    use dirmail_proto::names::Secret;

    let s = ad_store("MailUsers-pool", "pool.example");
    for (user, password) in [
        ("gina@pool.example", "Gina-Passw0rd"),
        ("hugo@pool.example", "Hugo-Passw0rd"),
    ] {
        s.expect(0, &["add", user, "--create-user", password]);
    }
    let config = dirmail_config::Config::load(&s.path().join("dirmail.toml")).expect("config");
    let ad = AdDirectory::new(config.directory.as_ref().expect("[directory]")).expect("ad");
    let user = |login: &str| match ad.find_user(login).expect("lookup") {
        Lookup::Found(user) => user,
        other => panic!("{login}: {other:?}"),
    };
    let (gina, hugo) = (user("gina@pool.example"), user("hugo@pool.example"));
    assert_eq!(ad.kept_connections(), (1, 0), "one lookup connection, kept");
    let check = |who, password: &str| ad.bind_as(who, &Secret::new(password)).expect("bind");
    for _ in 0..2 {
        assert_eq!(check(&gina, "Gina-Passw0rd"), BindVerdict::Accepted);
        assert_eq!(check(&gina, "Hugo-Passw0rd"), BindVerdict::BadPassword);
        assert_eq!(check(&hugo, "Gina-Passw0rd"), BindVerdict::BadPassword);
        assert_eq!(check(&hugo, "Hugo-Passw0rd"), BindVerdict::Accepted);
        assert_eq!(check(&gina, "Gina-Passw0rd"), BindVerdict::Accepted);
        assert_eq!(check(&gina, ""), BindVerdict::BadPassword);
    }
    assert!(ad.r23_in_mail_group(&gina.dn).expect("membership"));
    assert_eq!(
        ad.kept_connections(),
        (1, 1),
        "every check reused one connection"
    );
}

/// docs/spec.md §2.1 under `ad`: the login cache answers a password the DC accepted a moment
/// ago without a bind, never a wrong one; a password changed in AD itself (not through
/// dirmail, so the store's generation does not move) is accepted at its first use, checked by
/// the DC; a user taken out of the mail group in AD keeps logging in from the cache within
/// `cache_ttl` (the documented caveat), and at once is refused after a dirmail change (here
/// `lock`/`unlock`) empties the cache.
#[test]
fn the_login_cache_under_ad_sees_a_password_changed_in_ad_at_once() {
    use std::time::Duration;

    use dirmail_directory::ad::AdDirectory;
    use dirmail_directory::cache::{CacheSettings, CredentialCache};
    use dirmail_directory::login::{LoginError, RefusalReason, Service, decide};
    use dirmail_proto::auth::{Credentials, Proof};
    use dirmail_proto::names::Secret;

    let s = ad_store("MailUsers-cache", "cache.example");
    s.expect(
        0,
        &["add", "ivy@cache.example", "--create-user", "Ivy-Passw0rd"],
    );
    let config = dirmail_config::Config::load(&s.path().join("dirmail.toml")).expect("config");
    let ad = AdDirectory::new(config.directory.as_ref().expect("[directory]")).expect("ad");
    let store = dirmail_store::Store::open(&config.store).expect("store");
    let cache = CredentialCache::new(CacheSettings {
        ttl: Duration::from_secs(3600),
        negative_ttl: Duration::from_secs(30),
        size: 100,
    })
    .expect("a key")
    .expect("on");
    let log_in = |password: &str| {
        let credentials = Credentials {
            authzid: None,
            username: "ivy@cache.example".into(),
            proof: Proof::Password(Secret::new(password)),
        };
        decide(&store, Some(&ad), Some(&cache), Service::Pop3, &credentials)
    };
    let refused = |result: Result<_, LoginError>| match result {
        Err(LoginError::Refused(reason)) => reason,
        other => panic!("{other:?}"),
    };
    log_in("Ivy-Passw0rd").expect("the DC accepts it");
    assert_eq!(cache.len().0, 1, "remembered");
    log_in("Ivy-Passw0rd").expect("from the cache");
    assert_eq!(
        refused(log_in("Ivy-Wrong-Passw0rd")),
        RefusalReason::BadPassword,
        "a wrong password right after the right one"
    );

    // Changed in AD itself, not through dirmail.
    let mut admin = dc().admin().expect("admin");
    let user = admin
        .search("(userPrincipalName=ivy@cache.example)", &["dn"])
        .expect("search")
        .first()
        .expect("the user")
        .dn
        .clone();
    admin
        .set_password(&user, "Ivy-Newer-Passw0rd")
        .expect("AD takes the new password");
    log_in("Ivy-Newer-Passw0rd").expect("the new password works at once");

    // Taken out of the mail group in AD: the cache still answers within cache_ttl…
    let group = admin.resolve("MailUsers-cache").expect("the mail group");
    admin
        .remove_members(&group, &[user.as_str()])
        .expect("out of the group");
    log_in("Ivy-Newer-Passw0rd").expect("within cache_ttl, from the cache");
    // …until anything dirmail changes empties it: then R23 refuses at once.
    s.expect(0, &["lock", "ivy@cache.example"]);
    s.expect(0, &["unlock", "ivy@cache.example"]);
    assert_eq!(
        refused(log_in("Ivy-Newer-Passw0rd")),
        RefusalReason::NotInMailGroup
    );
}
