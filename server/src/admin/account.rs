//! `account add|delete|list`: the server's own accounts (method `local`) on their own (R7), so
//! a mailbox can later be added for an existing account without `--create-user`.

use serde_json::json;

use super::cli::AccountCommand;
use super::{AdminError, Context, Outcome, password_arg};
use dirmail_directory::AuthMethod;
use dirmail_directory::local::LocalAccounts;
use dirmail_proto::names::MailboxName;
use dirmail_store as store;

pub fn run(ctx: &mut Context, command: AccountCommand) -> Result<Outcome, AdminError> {
    ctx.store.write(|tx| {
        let method = store::auth_method(tx)?;
        if method != AuthMethod::Local {
            return Err(AdminError::state(format!(
                "The account commands manage the server's own accounts, used by local authentication; this store uses {} authentication.",
                method.as_str()
            )));
        }
        let accounts = LocalAccounts::new(tx);
        match command {
            AccountCommand::Add { name, password, groups } => {
                let name = MailboxName::parse(&name, method.max_name_len())?;
                let password = password_arg(password, "the password")?;
                if accounts.find(name.as_str())?.is_some() {
                    return Err(AdminError::state(format!("The account {name} already exists.")));
                }
                if let Some(bad) = groups.iter().find(|g| g.is_empty() || g.contains(',')) {
                    return Err(AdminError::Usage(format!("{bad:?} is not a group name")));
                }
                let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
                accounts.create(name.as_str(), &password, &groups)?;
                Ok(Outcome::new(
                    "Account successfully added.",
                    json!({ "account": name.as_str(), "groups": groups }),
                ))
            }
            AccountCommand::Delete { name } => {
                let name = MailboxName::parse(&name, method.max_name_len())?;
                if let Some(used) = store::mailboxes_named(tx, &name)?.first() {
                    return Err(AdminError::state(format!(
                        "The account {name} is used by the mailbox {}. Delete the mailbox first (delete {} --delete-user removes both).",
                        used.address, used.address
                    )));
                }
                if !accounts.delete(name.as_str())? {
                    return Err(AdminError::not_found(format!("The account {name} does not exist.")));
                }
                Ok(Outcome::new("Account successfully deleted.", json!({ "account": name.as_str() })))
            }
            AccountCommand::List => {
                let list = accounts.list()?;
                let mut text: Vec<String> = list
                    .iter()
                    .map(|a| format!("{:<20} {}", a.name, a.groups.join(", ")))
                    .collect();
                text.push(format!("{} account(s)", list.len()));
                Ok(Outcome::new(text.join("\n"), json!({ "accounts": list })))
            }
        }
    })
}
