//! `list [DOMAIN]`: the domains, or the mailboxes of one domain, with their lock state.

use serde_json::json;

use super::{AdminError, Context, Outcome};
use dirmail_config::format_size;
use dirmail_directory::{AuthMethod, Directory, DirectoryError};
use dirmail_proto::names::DomainName;
use dirmail_store as store;
use dirmail_store::Layout;

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
                return Err(AdminError::not_found(format!(
                    "The domain {name} does not exist."
                )));
            };
            let mailboxes = store::mailboxes_of(conn, d.id)?;
            // R26: under ad in the shared layout, each account's domain is its AD group.
            let ad = super::ad_of(&ctx.ad)?.filter(|_| {
                matches!(store::auth_method(conn), Ok(AuthMethod::Ad))
                    && matches!(store::layout(conn), Ok(Layout::Shared))
            });
            let all_domains: Vec<String> = store::domains(conn)?
                .into_iter()
                .map(|d| d.name.to_string())
                .collect();
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
                let mut line = format!("  {:<40} {state:<16} quota {quota}", m.address.to_string());
                let mut row = json!({
                    "mailbox": m.address.to_string(),
                    "locked": m.locked,
                    "domain_locked": m.domain_locked,
                    "quota_bytes": m.quota_bytes,
                });
                if let Some(ad) = ad {
                    let groups = match Directory::ad_user(ad, &m.address)? {
                        Some(user) => ad
                            .r26_domain_groups(&user, &all_domains)
                            .map_err(DirectoryError::from)?,
                        None => Vec::new(),
                    };
                    line.push_str(&match groups.as_slice() {
                        [] => "  AD domain: (none)".to_owned(),
                        [one] => format!("  AD domain: {one}"),
                        many => format!("  AD domain: conflict ({})", many.join(", ")),
                    });
                    row["ad_domains"] = json!(groups);
                    row["ad_domain_conflict"] = json!(groups.len() > 1);
                }
                text.push_str(&line);
                text.push('\n');
                rows.push(row);
            }
            text.push_str(&format!("{} mailbox(es)", mailboxes.len()));
            Ok(Outcome::new(
                text,
                json!({ "domain": d.name.as_str(), "locked": d.locked, "mailboxes": rows }),
            ))
        }
    }
}
