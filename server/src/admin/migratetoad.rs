//! `migratetoad NAME@DOMAIN` (R22): creates or links a mailbox's Active Directory user. It needs
//! `[directory]` configured and the Active Directory account source, which arrive later; until
//! then it is refused with exit 3 and says what it needs.

use super::rules::r11_max_name_len;
use super::{AdminError, Context, Outcome};
use crate::names::Address;
use crate::store;

pub fn run(ctx: &Context, address: &str) -> Result<Outcome, AdminError> {
    let method = store::auth_method(ctx.store.conn())?;
    let address = Address::parse(address, r11_max_name_len(method))?;
    if store::find_mailbox(ctx.store.conn(), &address)?.is_none() {
        return Err(AdminError::state(format!(
            "The mailbox {address} does not exist."
        )));
    }
    Err(needs_directory(ctx, "migratetoad"))
}

/// The refusal of every Active Directory operation in this build.
pub fn needs_directory(ctx: &Context, what: &str) -> AdminError {
    if ctx.config.directory.is_none() {
        AdminError::state(format!(
            "{what} needs [directory] configured in dirmail.toml (the Active Directory to use)."
        ))
    } else {
        AdminError::state(format!(
            "{what} needs the Active Directory account source, which this build of dirmail does not have yet."
        ))
    }
}
