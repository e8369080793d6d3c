//! Preparing the directory as an AD administrator would: users, groups, membership, account
//! states and the password policy, over LDAPS as `Administrator`.
//!
//! Everything goes through the DC's LDAP server, as a management console would, except
//! [`Admin::expire_password`]: no LDAP client may set `pwdLastSet` to anything but 0 or -1, so
//! an expired password (`data 532`) is made by back-dating `pwdLastSet` in the DC's database
//! with Samba's own Python bindings.
//!
//! Users and groups are named either by DN (anything containing `=`) or by `sAMAccountName`.

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::Duration;

use ldap3::{LdapConn, Mod, Scope, SearchEntry, ldap_escape};

use crate::bind_errors;
use crate::dc::Dc;
use crate::error::{Error, Result};
use crate::run;

/// `userAccountControl` bits used here.
const ACCOUNTDISABLE: u32 = 0x2;
const NORMAL_ACCOUNT: u32 = 0x200;
/// `msDS-User-Account-Control-Computed`: the password has expired.
const UF_PASSWORD_EXPIRED: u32 = 0x80_0000;

/// An AD interval meaning "never" (`maxPwdAge`, `lockoutDuration`).
const NEVER: i64 = i64::MIN;

/// A user to create. `NewUser::new("alice", "Passw0rd!")` is an enabled user in `CN=Users`
/// whose UPN is `alice@<dns domain>`.
#[derive(Clone)]
pub struct NewUser {
    pub sam_account_name: String,
    pub password: String,
    /// `None`: `sam_account_name@<dns domain>`.
    pub upn: Option<String>,
    /// `None`: the `sAMAccountName`.
    pub cn: Option<String>,
    /// `None`: `CN=Users,<base>`.
    pub container: Option<String>,
    pub enabled: bool,
    /// `pwdLastSet` = 0: the next bind is refused with `data 773`.
    pub must_change_password: bool,
    /// Extra attributes, e.g. `("mail", "alice@example.jp")`.
    pub attributes: Vec<(String, String)>,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("sam_account_name", &self.sam_account_name)
            .field("upn", &self.upn)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl NewUser {
    pub fn new(sam_account_name: &str, password: &str) -> NewUser {
        NewUser {
            sam_account_name: sam_account_name.into(),
            password: password.into(),
            upn: None,
            cn: None,
            container: None,
            enabled: true,
            must_change_password: false,
            attributes: Vec::new(),
        }
    }

    pub fn upn(mut self, upn: &str) -> NewUser {
        self.upn = Some(upn.into());
        self
    }

    pub fn cn(mut self, cn: &str) -> NewUser {
        self.cn = Some(cn.into());
        self
    }

    pub fn container(mut self, dn: &str) -> NewUser {
        self.container = Some(dn.into());
        self
    }

    pub fn disabled(mut self) -> NewUser {
        self.enabled = false;
        self
    }

    pub fn must_change_password(mut self) -> NewUser {
        self.must_change_password = true;
        self
    }

    pub fn attribute(mut self, name: &str, value: &str) -> NewUser {
        self.attributes.push((name.into(), value.into()));
        self
    }
}

/// The scope of a group (`groupType` bits 0x2, 0x4, 0x8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupScope {
    /// Members from anywhere, usable in its own domain only. R23's mail group is one.
    DomainLocal,
    /// Members from its own domain, usable anywhere.
    Global,
    Universal,
}

/// Security groups grant access and nest; distribution groups are mailing lists only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupKind {
    Security,
    Distribution,
}

impl GroupScope {
    /// The `groupType` value, as the signed 32-bit integer AD stores.
    pub fn group_type(self, kind: GroupKind) -> i32 {
        let scope: u32 = match self {
            GroupScope::Global => 0x2,
            GroupScope::DomainLocal => 0x4,
            GroupScope::Universal => 0x8,
        };
        let security: u32 = match kind {
            GroupKind::Security => 0x8000_0000,
            GroupKind::Distribution => 0,
        };
        (scope | security) as i32
    }
}

/// The domain's password and lockout policy (attributes of the domain object). On writing,
/// `None` leaves a setting as it is; a zero duration means "never" for the ages and for the
/// lockout duration (locked until an administrator unlocks).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PasswordPolicy {
    pub min_length: Option<u32>,
    pub complexity: Option<bool>,
    pub history_length: Option<u32>,
    pub min_age: Option<Duration>,
    pub max_age: Option<Duration>,
    /// Failed binds before the account locks; 0 never locks.
    pub lockout_threshold: Option<u32>,
    pub lockout_duration: Option<Duration>,
    /// How long failed binds are remembered (`lockOutObservationWindow`); at most the
    /// lockout duration.
    pub lockout_window: Option<Duration>,
}

/// An entry read back: its DN and its attributes (values as text; binary ones are left out).
#[derive(Clone, Debug)]
pub struct Entry {
    pub dn: String,
    pub attrs: HashMap<String, Vec<String>>,
}

impl Entry {
    /// The first value of `attr` (case-insensitive name).
    pub fn first(&self, attr: &str) -> Option<&str> {
        self.all(attr).first().map(String::as_str)
    }

    /// Every value of `attr` (case-insensitive name).
    pub fn all(&self, attr: &str) -> &[String] {
        self.attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(attr))
            .map(|(_, v)| v.as_slice())
            .unwrap_or(&[])
    }
}

/// An LDAPS connection bound as the domain's `Administrator`.
pub struct Admin<'a> {
    dc: &'a Dc,
    conn: LdapConn,
}

impl std::fmt::Debug for Admin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("dc", &self.dc.ldaps_url())
            .finish_non_exhaustive()
    }
}

/// `Ok(())` for LDAP success, else [`Error::Refused`] naming the operation.
fn check(op: impl Into<String>, result: ldap3::LdapResult) -> Result<()> {
    if result.rc == 0 {
        Ok(())
    } else {
        Err(Error::Refused {
            operation: op.into(),
            rc: result.rc,
            text: result.text,
        })
    }
}

fn set(values: &[&str]) -> HashSet<Vec<u8>> {
    values.iter().map(|v| v.as_bytes().to_vec()).collect()
}

/// `unicodePwd`'s value: the password in double quotes, UTF-16LE.
fn unicode_pwd(password: &str) -> Vec<u8> {
    format!("\"{password}\"")
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// A duration as an AD interval: negative, in 100 ns units; zero means never.
fn interval(d: Duration) -> i64 {
    if d.is_zero() {
        NEVER
    } else {
        -((d.as_nanos() / 100) as i64)
    }
}

fn from_interval(value: Option<&str>) -> Option<Duration> {
    let v: i64 = value?.parse().ok()?;
    Some(if v == NEVER || v == 0 {
        Duration::ZERO
    } else {
        Duration::from_nanos(v.unsigned_abs() * 100)
    })
}

impl<'a> Admin<'a> {
    pub(crate) fn new(dc: &'a Dc) -> Result<Admin<'a>> {
        let mut conn = dc.connect()?;
        let who = dc.admin_upn();
        let result = conn
            .simple_bind(&who, dc.admin_password())
            .map_err(Error::ldap(format!("bind as {who}")))?;
        check(format!("bind as {who}"), result)?;
        Ok(Admin { dc, conn })
    }

    /// The underlying connection, for whatever the helpers do not cover.
    pub fn conn(&mut self) -> &mut LdapConn {
        &mut self.conn
    }

    /// Subtree search under the base DN; continuation references are left out.
    pub fn search(&mut self, filter: &str, attrs: &[&str]) -> Result<Vec<Entry>> {
        self.search_under(&self.dc.base_dn(), Scope::Subtree, filter, attrs)
    }

    pub fn search_under(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
    ) -> Result<Vec<Entry>> {
        let op = format!("search {filter} under {base}");
        let result = self
            .conn
            .search(base, scope, filter, attrs.to_vec())
            .map_err(Error::ldap(op.clone()))?;
        let entries = result.0;
        check(op, result.1)?;
        Ok(entries
            .into_iter()
            .filter(|e| !e.is_ref() && !e.is_intermediate())
            .map(|e| {
                let e = SearchEntry::construct(e);
                Entry {
                    dn: e.dn,
                    attrs: e.attrs,
                }
            })
            .collect())
    }

    /// The DN of `name`: itself if it is a DN, else the one entry with that `sAMAccountName`.
    pub fn resolve(&mut self, name: &str) -> Result<String> {
        if name.contains('=') {
            return Ok(name.to_owned());
        }
        let filter = format!("(sAMAccountName={})", ldap_escape(name));
        let found = self.search(&filter, &["1.1"])?;
        match found.as_slice() {
            [one] => Ok(one.dn.clone()),
            [] => Err(Error::Lookup(format!(
                "no entry has sAMAccountName {name:?}"
            ))),
            _ => Err(Error::Lookup(format!(
                "{} entries have sAMAccountName {name:?}",
                found.len()
            ))),
        }
    }

    /// One entry, with the attributes asked for (`["*", "+"]` for all).
    pub fn entry(&mut self, name: &str, attrs: &[&str]) -> Result<Entry> {
        let dn = self.resolve(name)?;
        self.search_under(&dn, Scope::Base, "(objectClass=*)", attrs)?
            .pop()
            .ok_or_else(|| Error::Lookup(format!("no entry {dn}")))
    }

    /// Creates a user with its password in one LDAP add (so a password the policy refuses
    /// leaves nothing behind: the error is result 19 with Samba's reason). Returns its DN.
    pub fn create_user(&mut self, user: &NewUser) -> Result<String> {
        let cn = user.cn.as_deref().unwrap_or(&user.sam_account_name);
        let container = user.container.clone().unwrap_or_else(|| self.dc.users_dn());
        let dn = format!("CN={},{container}", ldap3::dn_escape(cn));
        let upn = user.upn.clone().unwrap_or_else(|| {
            format!(
                "{}@{}",
                user.sam_account_name,
                self.dc.domain().dns_domain()
            )
        });
        let uac = NORMAL_ACCOUNT | if user.enabled { 0 } else { ACCOUNTDISABLE };
        let mut attrs: Vec<(Vec<u8>, HashSet<Vec<u8>>)> = vec![
            (
                b"objectClass".to_vec(),
                set(&["top", "person", "organizationalPerson", "user"]),
            ),
            (b"cn".to_vec(), set(&[cn])),
            (b"sAMAccountName".to_vec(), set(&[&user.sam_account_name])),
            (b"userPrincipalName".to_vec(), set(&[&upn])),
            (b"userAccountControl".to_vec(), set(&[&uac.to_string()])),
            (
                b"unicodePwd".to_vec(),
                HashSet::from([unicode_pwd(&user.password)]),
            ),
        ];
        if user.must_change_password {
            attrs.push((b"pwdLastSet".to_vec(), set(&["0"])));
        }
        for (name, value) in &user.attributes {
            attrs.push((name.as_bytes().to_vec(), set(&[value])));
        }
        let op = format!("add user {dn}");
        let result = self.conn.add(&dn, attrs).map_err(Error::ldap(op.clone()))?;
        check(op, result)?;
        Ok(dn)
    }

    /// Creates a group in `CN=Users` (its `sAMAccountName` is `name` too). Returns its DN.
    pub fn create_group(
        &mut self,
        name: &str,
        scope: GroupScope,
        kind: GroupKind,
    ) -> Result<String> {
        let dn = format!("CN={},{}", ldap3::dn_escape(name), self.dc.users_dn());
        let attrs: Vec<(Vec<u8>, HashSet<Vec<u8>>)> = vec![
            (b"objectClass".to_vec(), set(&["top", "group"])),
            (b"cn".to_vec(), set(&[name])),
            (b"sAMAccountName".to_vec(), set(&[name])),
            (
                b"groupType".to_vec(),
                set(&[&scope.group_type(kind).to_string()]),
            ),
        ];
        let op = format!("add group {dn}");
        let result = self.conn.add(&dn, attrs).map_err(Error::ldap(op.clone()))?;
        check(op, result)?;
        Ok(dn)
    }

    /// Adds users or groups (nesting) to `group`.
    pub fn add_members(&mut self, group: &str, members: &[&str]) -> Result<()> {
        self.change_members(group, members, true)
    }

    pub fn remove_members(&mut self, group: &str, members: &[&str]) -> Result<()> {
        self.change_members(group, members, false)
    }

    fn change_members(&mut self, group: &str, members: &[&str], add: bool) -> Result<()> {
        let group = self.resolve(group)?;
        let mut dns = Vec::new();
        for m in members {
            dns.push(self.resolve(m)?);
        }
        let values: HashSet<Vec<u8>> = dns.iter().map(|d| d.as_bytes().to_vec()).collect();
        let change = if add {
            Mod::Add(b"member".to_vec(), values)
        } else {
            Mod::Delete(b"member".to_vec(), values)
        };
        self.modify(
            &group,
            vec![change],
            if add {
                "add members to"
            } else {
                "remove members from"
            },
        )
    }

    /// Every user and group inside `group`, however deeply nested
    /// (`LDAP_MATCHING_RULE_IN_CHAIN`, 1.2.840.113556.1.4.1941).
    pub fn members_in_chain(&mut self, group: &str) -> Result<Vec<String>> {
        let group = self.resolve(group)?;
        let filter = format!(
            "(memberOf:1.2.840.113556.1.4.1941:={})",
            ldap_escape(&group)
        );
        Ok(self
            .search(&filter, &["1.1"])?
            .into_iter()
            .map(|e| e.dn)
            .collect())
    }

    /// Deletes an entry (a user, a group).
    pub fn delete(&mut self, name: &str) -> Result<()> {
        let dn = self.resolve(name)?;
        let op = format!("delete {dn}");
        let result = self.conn.delete(&dn).map_err(Error::ldap(op.clone()))?;
        check(op, result)
    }

    fn modify(&mut self, dn: &str, mods: Vec<Mod<Vec<u8>>>, what: &str) -> Result<()> {
        let op = format!("{what} {dn}");
        let result = self
            .conn
            .modify(dn, mods)
            .map_err(Error::ldap(op.clone()))?;
        check(op, result)
    }

    fn replace(&mut self, name: &str, attr: &str, value: &str) -> Result<()> {
        let dn = self.resolve(name)?;
        let change = Mod::Replace(attr.as_bytes().to_vec(), set(&[value]));
        self.modify(&dn, vec![change], &format!("set {attr} of"))
    }

    pub fn set_upn(&mut self, user: &str, upn: &str) -> Result<()> {
        self.replace(user, "userPrincipalName", upn)
    }

    /// Renames the pre-Windows-2000 logon name (at most 20 characters, unique in the domain).
    pub fn set_sam_account_name(&mut self, user: &str, sam: &str) -> Result<()> {
        self.replace(user, "sAMAccountName", sam)
    }

    /// An administrator's password reset (no old password needed). Subject to the policy.
    pub fn set_password(&mut self, user: &str, password: &str) -> Result<()> {
        let dn = self.resolve(user)?;
        let change = Mod::Replace(
            b"unicodePwd".to_vec(),
            HashSet::from([unicode_pwd(password)]),
        );
        self.modify(&dn, vec![change], "set the password of")
    }

    fn user_account_control(&mut self, dn: &str) -> Result<u32> {
        let entry = self.entry(dn, &["userAccountControl"])?;
        entry
            .first("userAccountControl")
            .and_then(|v| v.parse::<i64>().ok())
            .map(|v| v as u32)
            .ok_or_else(|| Error::Lookup(format!("{dn} has no userAccountControl")))
    }

    fn set_disabled(&mut self, user: &str, disabled: bool) -> Result<()> {
        let dn = self.resolve(user)?;
        let uac = self.user_account_control(&dn)?;
        let uac = if disabled {
            uac | ACCOUNTDISABLE
        } else {
            uac & !ACCOUNTDISABLE
        };
        self.replace(&dn, "userAccountControl", &uac.to_string())
    }

    /// Binds are then refused with `data 533`.
    pub fn disable_user(&mut self, user: &str) -> Result<()> {
        self.set_disabled(user, true)
    }

    pub fn enable_user(&mut self, user: &str) -> Result<()> {
        self.set_disabled(user, false)
    }

    /// `pwdLastSet` = 0: binds are then refused with `data 773`.
    pub fn require_password_change(&mut self, user: &str) -> Result<()> {
        self.replace(user, "pwdLastSet", "0")
    }

    /// `accountExpires` in the past: binds are then refused with `data 701`.
    pub fn expire_account(&mut self, user: &str) -> Result<()> {
        // 1 is 100 ns after 1601-01-01; 0 would mean "never".
        self.replace(user, "accountExpires", "1")
    }

    /// Makes the password older than the maximum password age, so that binds are refused with
    /// `data 532`. Back-dates `pwdLastSet` by ten years in the DC's database (no LDAP client
    /// may), through Samba's Python bindings. Refused when passwords never expire for this
    /// user (the domain's `maxPwdAge`, or `DONT_EXPIRE_PASSWORD`).
    pub fn expire_password(&mut self, user: &str) -> Result<()> {
        let dn = self.resolve(user)?;
        run::output(
            Command::new("/usr/bin/python3")
                .arg("-c")
                .arg(BACKDATE_PY)
                .arg(self.dc.conf())
                .arg(&dn)
                .arg((10 * 365).to_string()),
        )?;
        let entry = self.entry(&dn, &["msDS-User-Account-Control-Computed"])?;
        let computed: u32 = entry
            .first("msDS-User-Account-Control-Computed")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if computed & UF_PASSWORD_EXPIRED == 0 {
            return Err(Error::Invalid(format!(
                "{dn}: pwdLastSet is ten years old and the password has still not expired: \
                 passwords never expire for this user (maxPwdAge or DONT_EXPIRE_PASSWORD)"
            )));
        }
        Ok(())
    }

    /// Locks the account the way users do: as many binds with a wrong password as the
    /// lockout threshold. Binds are then refused with `data 775`, whatever the password.
    /// Needs a threshold: set one with [`Admin::set_password_policy`] first.
    pub fn lock_out(&mut self, user: &str) -> Result<()> {
        let dn = self.resolve(user)?;
        let threshold = self.password_policy()?.lockout_threshold.unwrap_or(0);
        if threshold == 0 {
            return Err(Error::Invalid(
                "the lockout threshold is 0 (accounts never lock): set one first, e.g. \
                 PasswordPolicy { lockout_threshold: Some(3), ..Default::default() }"
                    .into(),
            ));
        }
        for _ in 0..threshold {
            match self
                .dc
                .bind(&dn, "not the password, to lock the account out")
            {
                Err(Error::Refused { .. }) => {}
                Ok(()) => {
                    return Err(Error::Invalid(format!(
                        "{dn}: a wrong password was accepted"
                    )));
                }
                Err(e) => return Err(e),
            }
        }
        match self.dc.bind(&dn, "not the password, to check the lockout") {
            Err(e) if e.ad_subcode() == Some(bind_errors::ACCOUNT_LOCKED_OUT) => Ok(()),
            Err(e) => Err(Error::Invalid(format!(
                "{dn} is not locked out after {threshold} bad binds: {e}"
            ))),
            Ok(()) => Err(Error::Invalid(format!(
                "{dn}: a wrong password was accepted"
            ))),
        }
    }

    /// Clears a lockout (`lockoutTime` = 0).
    pub fn unlock(&mut self, user: &str) -> Result<()> {
        self.replace(user, "lockoutTime", "0")
    }

    /// The domain's current policy, every field `Some`.
    pub fn password_policy(&mut self) -> Result<PasswordPolicy> {
        let base = self.dc.base_dn();
        let attrs = [
            "minPwdLength",
            "pwdProperties",
            "pwdHistoryLength",
            "minPwdAge",
            "maxPwdAge",
            "lockoutThreshold",
            "lockoutDuration",
            "lockOutObservationWindow",
        ];
        let e = self.entry(&base, &attrs)?;
        let num = |a: &str| e.first(a).and_then(|v| v.parse::<u32>().ok());
        Ok(PasswordPolicy {
            min_length: num("minPwdLength"),
            complexity: num("pwdProperties").map(|p| p & 1 == 1),
            history_length: num("pwdHistoryLength"),
            min_age: from_interval(e.first("minPwdAge")),
            max_age: from_interval(e.first("maxPwdAge")),
            lockout_threshold: num("lockoutThreshold"),
            lockout_duration: from_interval(e.first("lockoutDuration")),
            lockout_window: from_interval(e.first("lockOutObservationWindow")),
        })
    }

    /// Changes the settings that are `Some`, in one modify of the domain object.
    pub fn set_password_policy(&mut self, policy: &PasswordPolicy) -> Result<()> {
        let base = self.dc.base_dn();
        let mut mods: Vec<Mod<Vec<u8>>> = Vec::new();
        let mut put = |attr: &str, value: String| {
            mods.push(Mod::Replace(
                attr.as_bytes().to_vec(),
                HashSet::from([value.into_bytes()]),
            ));
        };
        if let Some(v) = policy.min_length {
            put("minPwdLength", v.to_string());
        }
        if let Some(v) = policy.history_length {
            put("pwdHistoryLength", v.to_string());
        }
        if let Some(v) = policy.min_age {
            // A minimum age of "never" makes no sense: zero means none.
            put(
                "minPwdAge",
                if v.is_zero() {
                    "0".into()
                } else {
                    interval(v).to_string()
                },
            );
        }
        if let Some(v) = policy.max_age {
            put("maxPwdAge", interval(v).to_string());
        }
        if let Some(v) = policy.lockout_threshold {
            put("lockoutThreshold", v.to_string());
        }
        if let Some(v) = policy.lockout_duration {
            put("lockoutDuration", interval(v).to_string());
        }
        if let Some(v) = policy.lockout_window {
            put("lockOutObservationWindow", interval(v).to_string());
        }
        if let Some(complexity) = policy.complexity {
            let current = self.password_policy_properties(&base)?;
            let props = if complexity {
                current | 1
            } else {
                current & !1
            };
            mods.push(Mod::Replace(
                b"pwdProperties".to_vec(),
                HashSet::from([props.to_string().into_bytes()]),
            ));
        }
        if mods.is_empty() {
            return Ok(());
        }
        self.modify(&base, mods, "set the password policy of")
    }

    fn password_policy_properties(&mut self, base: &str) -> Result<u32> {
        let e = self.entry(base, &["pwdProperties"])?;
        Ok(e.first("pwdProperties")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }
}

/// Back-dates `pwdLastSet` of one user (argv: smb.conf, DN, days) in the DC's sam.ldb.
/// `DSDB_CONTROL_BYPASS_PASSWORD_HASH_OID` keeps the password_hash module, which allows only
/// 0 and -1, out of the way.
const BACKDATE_PY: &str = r#"
import sys, time, ldb
from samba import dsdb
from samba.auth import system_session
from samba.param import LoadParm
from samba.samdb import SamDB
conf, dn, days = sys.argv[1], sys.argv[2], float(sys.argv[3])
lp = LoadParm()
lp.load(conf)
db = SamDB(url=lp.private_path("sam.ldb"), session_info=system_session(), lp=lp)
when = int((time.time() - days * 86400) * 10**7) + 116444736000000000
m = ldb.Message()
m.dn = ldb.Dn(db, dn)
m["pwdLastSet"] = ldb.MessageElement(str(when), ldb.FLAG_MOD_REPLACE, "pwdLastSet")
db.modify(m, controls=["local_oid:%s:0" % dsdb.DSDB_CONTROL_BYPASS_PASSWORD_HASH_OID])
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_types() {
        assert_eq!(
            GroupScope::DomainLocal.group_type(GroupKind::Security),
            -2147483644
        );
        assert_eq!(
            GroupScope::Global.group_type(GroupKind::Security),
            -2147483646
        );
        assert_eq!(GroupScope::Universal.group_type(GroupKind::Distribution), 8);
    }

    #[test]
    fn intervals() {
        assert_eq!(interval(Duration::from_secs(1800)), -18_000_000_000);
        assert_eq!(interval(Duration::ZERO), NEVER);
        assert_eq!(
            from_interval(Some("-18000000000")),
            Some(Duration::from_secs(1800))
        );
        assert_eq!(
            from_interval(Some("-9223372036854775808")),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn unicode_pwd_is_quoted_utf16le() {
        assert_eq!(unicode_pwd("ab"), vec![b'"', 0, b'a', 0, b'b', 0, b'"', 0]);
    }
}
