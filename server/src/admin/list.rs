//! `list [DOMAIN]`: the domains, or the mailboxes of one domain, with their lock state.

use serde_json::json;

use super::{AdminError, Context, Outcome};
use crate::config::format_size;
use crate::names::DomainName;
use crate::store;

pub fn run(ctx: &Context, domain: Option<&str>) -> Result<Outcome, AdminError> {
    let conn = ctx.store.conn();
    match domain {
        None => {
            let domains = store::domains(conn)?;
            let mut text = String::new();
            let mut rows = Vec::new();
            for d in &domains {
                let count = store::mailboxes_of(conn, d.id)?.len();
                let state = if d.locked { "locked" } else { "unlocked" };
                text.push_str(&format!("{:<40} {count:>6} mailbox(es)  {state}\n", d.name));
                rows.push(
                    json!({ "domain": d.name.as_str(), "mailboxes": count, "locked": d.locked }),
                );
            }
            text.push_str(&format!("{} domain(s)", domains.len()));
            Ok(Outcome::new(text, json!({ "domains": rows })))
        }
        Some(name) => {
            let name = DomainName::parse(name)?;
            let Some(d) = store::find_domain(conn, &name)? else {
                return Err(AdminError::state(format!(
                    "The domain {name} does not exist."
                )));
            };
            let mailboxes = store::mailboxes_of(conn, d.id)?;
            let mut text = format!(
                "Mailboxes in {}{}:\n",
                d.name,
                if d.locked { " (domain locked)" } else { "" }
            );
            let mut rows = Vec::new();
            for m in &mailboxes {
                let state = match (m.locked, m.domain_locked) {
                    (true, _) => "locked",
                    (false, true) => "locked (domain)",
                    (false, false) => "unlocked",
                };
                let quota = m.quota_bytes.map(format_size).unwrap_or_else(|| "-".into());
                text.push_str(&format!(
                    "  {:<40} {state:<16} quota {quota}\n",
                    m.address.to_string()
                ));
                rows.push(json!({
                    "mailbox": m.address.to_string(),
                    "locked": m.locked,
                    "domain_locked": m.domain_locked,
                    "quota_bytes": m.quota_bytes,
                }));
            }
            text.push_str(&format!("{} mailbox(es)", mailboxes.len()));
            Ok(Outcome::new(
                text,
                json!({ "domain": d.name.as_str(), "locked": d.locked, "mailboxes": rows }),
            ))
        }
    }
}
