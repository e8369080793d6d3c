//! `secret set NAME@DOMAIN [SECRET]` and `secret delete NAME@DOMAIN` (docs/spec.md §10): the
//! separate mail secret that APOP and CRAM-MD5 need, since no directory gives out passwords. Read
//! from standard input when not given, so it stays out of the process list.

use std::io::BufRead;

use serde_json::json;

use super::cli::SecretCommand;
use super::{AdminError, Context, Outcome, password_arg};
use dirmail_proto::names::Address;
use dirmail_store as store;
use dirmail_store::secrets;

pub fn run(ctx: &mut Context, command: SecretCommand) -> Result<Outcome, AdminError> {
    let data_dir = ctx.store.data_dir.clone();
    match command {
        SecretCommand::Set { address, secret } => {
            let secret = match secret {
                Some(s) => s,
                None => {
                    let mut line = String::new();
                    std::io::stdin()
                        .lock()
                        .read_line(&mut line)
                        .map_err(|e| AdminError::Failed(format!("cannot read the secret: {e}")))?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            let secret = password_arg(secret, "the mail secret")?;
            ctx.store.write(|tx| {
                let mailbox = find(tx, &address)?;
                secrets::set(tx, &data_dir, mailbox.id, &secret)?;
                Ok(Outcome::new(
                    format!(
                        "Mail secret successfully set for {}: APOP and CRAM-MD5 now work for it.",
                        mailbox.address
                    ),
                    json!({ "mailbox": mailbox.address.to_string() }),
                ))
            })
        }
        SecretCommand::Delete { address } => ctx.store.write(|tx| {
            let mailbox = find(tx, &address)?;
            if !secrets::delete(tx, mailbox.id)? {
                return Err(AdminError::not_found(format!(
                    "The mailbox {} has no mail secret.",
                    mailbox.address
                )));
            }
            Ok(Outcome::new(
                "Mail secret successfully deleted.",
                json!({ "mailbox": mailbox.address.to_string() }),
            ))
        }),
    }
}

fn find(tx: &rusqlite::Connection, address: &str) -> Result<store::MailboxRow, AdminError> {
    let method = store::auth_method(tx)?;
    let address = Address::parse(address, method.max_name_len())?;
    store::find_mailbox(tx, &address)?
        .ok_or_else(|| AdminError::not_found(format!("The mailbox {address} does not exist.")))
}
