//! `migratetoad NAME@DOMAIN [--password PASS]` (R22): gives one mailbox its Active Directory
//! user while the server is still `local` or `passwd-file` — linking the user whose UPN is the
//! address when there is one, else creating it with the password given. Once every mailbox is
//! migrated, `set authentication ad` is allowed with domains present and keeps all mail.

use serde_json::json;

use super::{AdminError, Context, Outcome, ad_of, password_arg};
use dirmail_directory::ad::Lookup;
use dirmail_directory::{AuthMethod, DirectoryError};
use dirmail_proto::names::Address;
use dirmail_store as store;

pub fn run(
    ctx: &mut Context,
    address: &str,
    password: Option<String>,
) -> Result<Outcome, AdminError> {
    let Some(ad) = ad_of(&ctx.ad)? else {
        return Err(AdminError::Usage(
            "migratetoad needs [directory] configured in dirmail.toml (the Active Directory to use).".into(),
        ));
    };
    let password = password
        .map(|p| password_arg(p, "the password"))
        .transpose()?;
    ctx.store.write(|tx| {
        let method = store::auth_method(tx)?;
        if method == AuthMethod::Ad {
            return Err(AdminError::state(
                "This store already uses Active Directory authentication: there is nothing to migrate.",
            ));
        }
        // Names may be up to 64 characters in AD, but the mailbox exists under today's rules.
        let address = Address::parse(address, method.max_name_len())?;
        let Some(mailbox) = store::find_mailbox(tx, &address)? else {
            return Err(AdminError::not_found(format!("The mailbox {address} does not exist.")));
        };
        // R23: the migrated users go into the mail group, which may not exist yet.
        ad.ensure_mail_group().map_err(DirectoryError::from)?;
        let (user, created) = match ad.find_user(&address.to_string()).map_err(DirectoryError::from)? {
            Lookup::Found(user) => {
                ad.add_to_mail_group(&user).map_err(DirectoryError::from)?;
                (user, false)
            }
            Lookup::Ambiguous => {
                return Err(AdminError::state(format!(
                    "More than one Active Directory object answers to {address}; resolve that in AD first."
                )));
            }
            Lookup::NotFound => {
                let Some(password) = &password else {
                    return Err(AdminError::state(format!(
                        "Active Directory has no user {address}: give --password PASSWORD to create it (its local password cannot be carried over)."
                    )));
                };
                (ad.create_user(&address, password, None).map_err(DirectoryError::from)?, true)
            }
        };
        store::set_mailbox_ad_linked(tx, mailbox.id)?;
        let left = store::mailboxes_not_ad_linked(tx)?;
        let mut text = format!(
            "Mailbox {address} {} the Active Directory user {} (pre-Windows 2000 name {}).",
            if created { "now has" } else { "is linked to" },
            user.dn,
            user.sam_account_name
        );
        if left == 0 {
            text.push_str("\nEvery mailbox is migrated: `dirmail set authentication ad` now keeps all mail (R22).");
        } else {
            text.push_str(&format!("\n{left} mailbox(es) still to migrate."));
        }
        Ok(Outcome::new(
            text,
            json!({
                "mailbox": address.to_string(),
                "ad_dn": user.dn,
                "sam_account_name": user.sam_account_name,
                "created": created,
                "mailboxes_left": left,
            }),
        ))
    })
}
