//! `auth test LOGIN [PASSWORD]`: checks a clear-text login as the server does (R8 bare names,
//! the account source, R13/R14 locks), so an administrator can answer "why can't she log in?"
//! without a mail client. The password is read from standard input when not given.

use std::io::BufRead;

use serde_json::json;

use super::cli::AuthCommand;
use super::{AdminError, Context, Outcome, password_arg};
use dirmail_directory::login::{self, LoginError, RefusalReason, Service};
use dirmail_proto::auth::{Credentials, Proof};

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
    let credentials = Credentials {
        authzid: None,
        username: login.clone(),
        proof: Proof::Password(password),
    };
    match login::decide(
        &ctx.store,
        super::ad_of(&ctx.ad)?,
        // The administrator asks about the account as it is now: no cache.
        None,
        Service::Admin,
        &credentials,
    ) {
        Ok(mailbox) => Ok(Outcome::new(
            format!(
                "Login accepted: {login} is the mailbox {}.",
                mailbox.address
            ),
            json!({ "login": login, "mailbox": mailbox.address.to_string() }),
        )),
        Err(LoginError::Locked { rule, mailbox }) => {
            let what = if rule == "R13" {
                format!("the mailbox {}", mailbox.address)
            } else {
                format!("the domain {}", mailbox.address.domain)
            };
            Err(AdminError::refused(
                rule,
                format!(
                    "Login refused for {login:?}: the credentials are right, but {what} is locked by the administrator (mail is still received)."
                ),
            ))
        }
        Err(LoginError::Refused(RefusalReason::AmbiguousBareName)) => Err(AdminError::refused(
            "R8",
            format!(
                "Login refused for {login:?}: {}.",
                RefusalReason::AmbiguousBareName.describe()
            ),
        )),
        // R27 tells the refusals apart; the reason is the answer the administrator asked for.
        Err(LoginError::Refused(reason)) => Err(AdminError::refused(
            "R27",
            format!("Login refused for {login:?}: {}.", reason.describe()),
        )),
        Err(LoginError::Unavailable(e) | LoginError::Failed(e)) => Err(e.into()),
    }
}
