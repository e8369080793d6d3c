//! `createquotafile NAME@DOMAIN [--user NAME]` and `quota NAME@DOMAIN LIMIT|none` (SPEC §5.2).

use serde_json::json;

use super::{AdminError, Context, Outcome};
use dirmail_config::{format_size, parse_size};
use dirmail_directory::local::LocalAccounts;
use dirmail_proto::names::Address;
use dirmail_store as store;
use dirmail_store::MailboxRow;
use dirmail_store::rules::{r11_max_name_len, r15_quota_owner};

fn find(tx: &rusqlite::Connection, address: &str) -> Result<MailboxRow, AdminError> {
    let method = store::auth_method(tx)?;
    let address = Address::parse(address, r11_max_name_len(method))?;
    store::find_mailbox(tx, &address)?
        .ok_or_else(|| AdminError::state(format!("The mailbox {address} does not exist.")))
}

/// Gives the mailbox the server's default limit, charged to `user` or to the mailbox's own
/// account (R15's bookkeeping).
pub fn create_quota_file(
    ctx: &mut Context,
    address: &str,
    user: Option<&str>,
) -> Result<Outcome, AdminError> {
    let limit = ctx.config.quota.default_limit;
    ctx.store.write(|tx| {
        let mailbox = find(tx, address)?;
        let owner = r15_quota_owner(tx, store::auth_method(tx)?, &mailbox, user, |name| {
            Ok(LocalAccounts::new(tx).find(name)?.is_some())
        })?;
        store::set_mailbox_quota(tx, mailbox.id, Some(limit), Some(&owner))?;
        Ok(Outcome::new(
            format!(
                "Quota successfully created for {}: {}, charged to {owner}.",
                mailbox.address,
                format_size(limit)
            ),
            json!({ "mailbox": mailbox.address.to_string(), "quota_bytes": limit, "charged_to": owner }),
        ))
    })
}

pub fn set_limit(ctx: &mut Context, address: &str, limit: &str) -> Result<Outcome, AdminError> {
    let limit = if limit.eq_ignore_ascii_case("none") {
        None
    } else {
        Some(parse_size(limit).map_err(AdminError::Usage)?)
    };
    ctx.store.write(|tx| {
        let mailbox = find(tx, address)?;
        let owner = match (&mailbox.quota_owner, limit) {
            (_, None) => None,
            (Some(owner), Some(_)) => Some(owner.clone()),
            (None, Some(_)) => Some(r15_quota_owner(tx, store::auth_method(tx)?, &mailbox, None, |_| Ok(false))?),
        };
        store::set_mailbox_quota(tx, mailbox.id, limit, owner.as_deref())?;
        let text = match limit {
            Some(l) => format!("Quota of {} successfully set to {}.", mailbox.address, format_size(l)),
            None => format!("Quota of {} successfully removed.", mailbox.address),
        };
        Ok(Outcome::new(
            text,
            json!({ "mailbox": mailbox.address.to_string(), "quota_bytes": limit, "charged_to": owner }),
        ))
    })
}
