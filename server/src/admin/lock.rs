//! `lock` / `unlock DOMAIN | NAME@DOMAIN` (docs/spec.md §5.1). A locked mailbox still receives mail
//! (R13); a locked domain locks retrieval for all its mailboxes (R14).

use serde_json::json;

use super::{AdminError, Context, Outcome, Target, parse_target};
use dirmail_rules::r14_unlock_inside_locked_domain;
use dirmail_store as store;

pub fn run(ctx: &mut Context, target: &str, lock: bool) -> Result<Outcome, AdminError> {
    let method = store::auth_method(ctx.store.conn())?;
    let target = parse_target(target, method.max_name_len())?;
    let verb = if lock { "locked" } else { "unlocked" };
    ctx.store.write(|tx| match &target {
        Target::Domain(domain) => {
            let Some(row) = store::find_domain(tx, domain)? else {
                return Err(AdminError::not_found(format!(
                    "The domain {domain} does not exist."
                )));
            };
            store::set_domain_locked(tx, row.id, lock)?;
            Ok(Outcome::new(
                format!("Domain successfully {verb}."),
                json!({ "domain": domain.as_str(), "locked": lock }),
            ))
        }
        Target::Mailbox(address) => {
            let Some(row) = store::find_mailbox(tx, address)? else {
                return Err(AdminError::not_found(format!(
                    "The mailbox {address} does not exist."
                )));
            };
            if !lock {
                r14_unlock_inside_locked_domain(&row.address, row.domain_locked)?;
            }
            store::set_mailbox_locked(tx, row.id, lock)?;
            Ok(Outcome::new(
                format!("Mailbox successfully {verb}."),
                json!({ "mailbox": address.to_string(), "locked": lock }),
            ))
        }
    })
}
