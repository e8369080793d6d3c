//! `changepwd NAME@DOMAIN NEWPASS`: changes the password where the account lives.

use serde_json::json;

use super::{AdminError, Context, Outcome, password_arg};
use dirmail_directory::Directory;
use dirmail_proto::names::Address;
use dirmail_store as store;

pub fn run(ctx: &mut Context, address: &str, password: String) -> Result<Outcome, AdminError> {
    let password = password_arg(password, "the new password")?;
    let mailroot = ctx.store.mailroot.clone();
    let ad = super::ad_of(&ctx.ad)?;
    ctx.store.write(|tx| {
        let method = store::auth_method(tx)?;
        let address = Address::parse(address, method.max_name_len())?;
        if store::find_mailbox(tx, &address)?.is_none() {
            return Err(AdminError::not_found(format!(
                "The mailbox {address} does not exist."
            )));
        }
        let dir = store::layout(tx)?.maildir(&mailroot, &address);
        let changed = Directory::open(method, tx, dir, ad)?.change_password(&address, &password)?;
        if !changed {
            return Err(AdminError::state(format!(
                "The mailbox {address} has no account to change the password of."
            )));
        }
        // A passwd-file record or an AD password is not in the database: tell a running
        // server's login cache here, in the transaction that commits after the change.
        store::credentials_changed(tx)?;
        Ok(Outcome::new(
            "Password successfully changed.",
            json!({ "mailbox": address.to_string() }),
        ))
    })
}
