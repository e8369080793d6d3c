//! The names and the administrator password a DC is provisioned with.

use std::fmt;

use crate::error::{Error, Result};

/// An AD domain as `samba-tool domain provision` creates it.
#[derive(Clone, PartialEq, Eq)]
pub struct Domain {
    /// Kerberos realm, upper case: `DIRMAIL.TEST`. Its lower-case form is the DNS domain.
    pub realm: String,
    /// Pre-Windows-2000 (NetBIOS) domain name, at most 15 characters: `DIRMAIL`.
    pub netbios: String,
    /// The DC's own NetBIOS host name: `DC1`.
    pub host: String,
    /// The password of `Administrator`. It must satisfy the default policy: at least 7
    /// characters from three of upper case, lower case, digits and symbols.
    pub admin_password: String,
}

impl Default for Domain {
    fn default() -> Domain {
        Domain {
            realm: "DIRMAIL.TEST".into(),
            netbios: "DIRMAIL".into(),
            host: "DC1".into(),
            admin_password: "Dirmail-Adm1n!".into(),
        }
    }
}

impl fmt::Debug for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Domain")
            .field("realm", &self.realm)
            .field("netbios", &self.netbios)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl Domain {
    /// A domain with the default host name and password.
    pub fn new(realm: &str, netbios: &str) -> Domain {
        Domain {
            realm: realm.to_ascii_uppercase(),
            netbios: netbios.to_ascii_uppercase(),
            ..Domain::default()
        }
    }

    /// `dirmail.test`
    pub fn dns_domain(&self) -> String {
        self.realm.to_ascii_lowercase()
    }

    /// `DC=dirmail,DC=test`
    pub fn base_dn(&self) -> String {
        let parts: Vec<String> = self
            .dns_domain()
            .split('.')
            .map(|p| format!("DC={p}"))
            .collect();
        parts.join(",")
    }

    /// `dc1.dirmail.test`
    pub fn host_dns_name(&self) -> String {
        format!("{}.{}", self.host.to_ascii_lowercase(), self.dns_domain())
    }

    /// Refuses names that `samba-tool` would refuse, or that would not be safe in a file name
    /// and in `smb.conf`.
    pub(crate) fn check(&self) -> Result<()> {
        let label =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !self.realm.contains('.') || !self.realm.split('.').all(label) {
            return Err(Error::Invalid(format!(
                "realm {:?}: want dotted labels of letters, digits and hyphens",
                self.realm
            )));
        }
        for (what, name) in [("NetBIOS domain", &self.netbios), ("host name", &self.host)] {
            if !label(name) || name.len() > 15 {
                return Err(Error::Invalid(format!(
                    "{what} {name:?}: want 1 to 15 letters, digits and hyphens"
                )));
            }
        }
        if self.netbios.eq_ignore_ascii_case(&self.host) {
            return Err(Error::Invalid(
                "the host name must differ from the NetBIOS domain".into(),
            ));
        }
        if self.admin_password.contains(['\n', '\0']) {
            return Err(Error::Invalid(
                "the administrator password has a line break".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let d = Domain::new("corp.example.test", "corp");
        assert_eq!(d.realm, "CORP.EXAMPLE.TEST");
        assert_eq!(d.base_dn(), "DC=corp,DC=example,DC=test");
        assert_eq!(d.host_dns_name(), "dc1.corp.example.test");
        assert!(d.check().is_ok());
        assert!(Domain::new("nodots", "X").check().is_err());
        assert!(Domain::new("a.test", "WAY-TOO-LONG-NAME").check().is_err());
        assert!(Domain::new("a.test", "dc1").check().is_err());
    }
}
