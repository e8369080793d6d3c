//! `auth test LOGIN [PASSWORD]`: checks a clear-text login as the server does (R8 bare names,
//! the account source, R13/R14 locks), so an administrator can answer "why can't she log in?"
//! without a mail client. The password is read from standard input when not given.

use std::io::BufRead;

use serde_json::json;

use super::cli::AuthCommand;
use super::rules::{r8_resolve_bare_login, r11_max_name_len};
use super::{AdminError, Context, Outcome, password_arg};
use crate::directory::{Directory, Verdict};
use crate::names::{Address, MailboxName};
use crate::store;

pub fn run(ctx: &Context, command: AuthCommand) -> Result<Outcome, AdminError> {
    let AuthCommand::Test { login, password } = command;
    let password = match password {
        Some(p) => p,
        None => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| AdminError::Failed(format!("cannot read the password: {e}")))?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    let password = password_arg(password, "the password")?;
    let conn = ctx.store.conn();
    let method = store::auth_method(conn)?;
    let max = r11_max_name_len(method);
    let refused =
        |reason: &str| AdminError::state(format!("Login refused for {login:?}: {reason}."));
    let mailbox = if login.contains('@') {
        let address = Address::parse(&login, max).map_err(|_| refused("unknown user"))?;
        store::find_mailbox(conn, &address)?
    } else {
        let name = MailboxName::parse(&login, max).map_err(|_| refused("unknown user"))?;
        let found = r8_resolve_bare_login(conn, &name)?;
        if found.is_none() && store::mailboxes_named(conn, &name)?.len() > 1 {
            return Err(AdminError::refused(
                "R8",
                format!(
                    "Login refused for {login:?}: the bare name names more than one mailbox; log in as name@domain."
                ),
            ));
        }
        found
    };
    let Some(mailbox) = mailbox else {
        return Err(refused("unknown user"));
    };
    let dir = store::layout(conn)?.maildir(&ctx.store.mailroot, &mailbox.address);
    match Directory::open(method, conn, dir)?.verify(&mailbox.address, &password)? {
        Verdict::Accepted => {}
        Verdict::UnknownUser => return Err(refused("the mailbox has no account")),
        Verdict::BadPassword => return Err(refused("bad password")),
    }
    if mailbox.retrieval_locked() {
        let (rule, by) = if mailbox.locked {
            ("R13", "mailbox")
        } else {
            ("R14", "domain")
        };
        return Err(AdminError::refused(
            rule,
            format!(
                "Login refused for {login:?}: the credentials are right, but the {by} is locked by the administrator (mail is still received)."
            ),
        ));
    }
    Ok(Outcome::new(
        format!(
            "Login accepted: {login} is the mailbox {}.",
            mailbox.address
        ),
        json!({ "login": login, "mailbox": mailbox.address.to_string() }),
    ))
}
