//! The peers the benchmark compares against, from Debian's packages: Postfix (delivering over
//! LMTP to Dovecot) and Dovecot (POP3/IMAP), each a private instance under the bench's
//! temporary directory, on loopback ports, started and stopped by the bench as root without
//! systemd. Their configuration templates live in `fixtures/peers/`.

pub mod dovecot;
pub mod install;
pub mod postfix;

/// Fills `@NAME@` placeholders of a template.
pub fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut text = template.to_owned();
    for (name, value) in vars {
        text = text.replace(&format!("@{name}@"), value);
    }
    text
}

/// A package's version as dpkg knows it, for the report.
pub fn version(package: &str) -> Option<String> {
    let out = std::process::Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", package])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_leave_no_placeholder_unfilled() {
        let filled = render("a @X@ b @Y@ @X@", &[("X", "1"), ("Y", "2")]);
        assert_eq!(filled, "a 1 b 2 1");
        // Every placeholder the fixtures use is one the code fills.
        let templates = [
            include_str!("../../../fixtures/peers/postfix/main.cf"),
            include_str!("../../../fixtures/peers/postfix/master.cf"),
            include_str!("../../../fixtures/peers/dovecot/dovecot.conf"),
            include_str!("../../../fixtures/peers/dovecot/passdb-file.conf"),
            include_str!("../../../fixtures/peers/dovecot/passdb-ldap.conf"),
            include_str!("../../../fixtures/peers/dovecot/dovecot-ldap.conf.ext"),
        ];
        let known = [
            "DIR",
            "DOMAIN",
            "LMTP_PORT",
            "SMTP_PORT",
            "ID",
            "POP3_PORT",
            "POP3S_PORT",
            "IMAP_PORT",
            "IMAPS_PORT",
            "ENVIRONMENT",
            "PASSDB",
            "TUNING",
            "LDAP_URI",
            "BASE_DN",
        ];
        for template in templates {
            let vars: Vec<(&str, &str)> = known.iter().map(|k| (*k, "v")).collect();
            let filled = render(template, &vars);
            assert!(
                !filled.contains('@'),
                "an unknown placeholder is left in:\n{filled}"
            );
        }
    }
}
