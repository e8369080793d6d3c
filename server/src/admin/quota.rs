//! `createquotafile NAME@DOMAIN [--user NAME]` and `quota NAME@DOMAIN LIMIT|none`
//! (docs/spec.md §5.2).

use serde_json::json;

use super::{AdminError, Context, Outcome};
use dirmail_config::{format_size, parse_size};
use dirmail_directory::local::LocalAccounts;
use dirmail_proto::names::{Address, MailboxName};
use dirmail_rules::{AuthMethod, quota_owner, r8_resolve_bare_login};
use dirmail_store as store;
use dirmail_store::MailboxRow;

fn find(tx: &rusqlite::Connection, address: &str) -> Result<MailboxRow, AdminError> {
    let method = store::auth_method(tx)?;
    let address = Address::parse(address, method.max_name_len())?;
    store::find_mailbox(tx, &address)?
        .ok_or_else(|| AdminError::not_found(format!("The mailbox {address} does not exist.")))
}

/// The account `user` names, as the method knows accounts: a `local` account by name (given
/// back lower-case); under the other methods an account is a mailbox, named as name@domain or
/// by its bare name when that names exactly one mailbox (as R8 resolves logins). Read inside
/// the caller's transaction: the fact [`quota_owner`] decides on.
fn account_named(
    tx: &rusqlite::Connection,
    method: AuthMethod,
    user: &str,
) -> Result<Option<String>, AdminError> {
    if method == AuthMethod::Local {
        let name = user.to_ascii_lowercase();
        return Ok(LocalAccounts::new(tx).find(&name)?.map(|_| name));
    }
    let max = method.max_name_len();
    let found = if user.contains('@') {
        match Address::parse(user, max) {
            Ok(address) => store::find_mailbox(tx, &address)?,
            Err(_) => None,
        }
    } else {
        match MailboxName::parse(user, max) {
            Ok(name) => r8_resolve_bare_login(store::mailboxes_named(tx, &name)?),
            Err(_) => None,
        }
    };
    Ok(found.map(|m| m.address.to_string()))
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
        let method = store::auth_method(tx)?;
        let found = match user {
            Some(user) => account_named(tx, method, user)?,
            None => None,
        };
        let owner = quota_owner(method, &mailbox.address, user, found)?;
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
            (None, Some(_)) => Some(quota_owner(store::auth_method(tx)?, &mailbox.address, None, None)?),
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
