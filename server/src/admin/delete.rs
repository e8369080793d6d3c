//! `delete DOMAIN [--force]` and `delete NAME@DOMAIN [--delete-user] [--force]` (winpop DEL).
//! Without `--force`, nothing that holds mail is deleted: the refusal counts what would be lost.

use std::path::PathBuf;

use serde_json::json;

use super::{AdminError, Context, Outcome, Target, parse_target};
use dirmail_directory::{AuthMethod, Directory};
use dirmail_proto::names::{Address, DomainName};
use dirmail_store as store;
use dirmail_store::{StoreError, maildir};

pub fn run(
    ctx: &mut Context,
    target: &str,
    delete_user: bool,
    force: bool,
) -> Result<Outcome, AdminError> {
    let method = store::auth_method(ctx.store.conn())?;
    match parse_target(target, method.max_name_len())? {
        Target::Domain(domain) => {
            if delete_user {
                return Err(AdminError::Usage(
                    "--delete-user applies to a mailbox (NAME@DOMAIN), not to a domain".into(),
                ));
            }
            delete_domain(ctx, &domain, force)
        }
        Target::Mailbox(address) => delete_mailbox(ctx, &address, delete_user, force),
    }
}

/// Directories moved aside inside the transaction: put back if it fails, removed once it commits.
struct SetAside(Vec<(PathBuf, PathBuf)>);

impl SetAside {
    fn push(&mut self, dir: PathBuf) -> Result<(), StoreError> {
        if let Some(aside) = maildir::set_aside(&dir)? {
            self.0.push((dir, aside));
        }
        Ok(())
    }

    fn restore(&self) {
        for (dir, aside) in self.0.iter().rev() {
            let _ = std::fs::rename(aside, dir);
        }
    }

    fn remove(&self) -> Result<(), StoreError> {
        for (_, aside) in &self.0 {
            maildir::remove(aside)?;
        }
        Ok(())
    }
}

fn delete_domain(
    ctx: &mut Context,
    domain: &DomainName,
    force: bool,
) -> Result<Outcome, AdminError> {
    let mailroot = ctx.store.mailroot.clone();
    let mut aside = SetAside(Vec::new());
    let result = ctx.store.write(|tx| {
        let Some(row) = store::find_domain(tx, domain)? else {
            return Err(AdminError::not_found(format!("The domain {domain} does not exist.")));
        };
        // Its own aliases go with it; another domain's aliases pointing into it would dangle.
        let pointing = store::aliases::targeting_domain(tx, domain)?;
        if !pointing.is_empty() {
            let shown: Vec<String> = pointing.iter().map(|(a, t)| format!("{a} → {t}")).collect();
            return Err(AdminError::state(format!(
                "Aliases of other domains point into {domain}: {}. Change them first (`dirmail alias delete ALIAS TARGET`).",
                shown.join(", ")
            )));
        }
        let layout = store::layout(tx)?;
        let mailboxes = store::mailboxes_of(tx, row.id)?;
        let mut holding = 0u64;
        let mut total = maildir::Usage::default();
        for m in &mailboxes {
            let usage = maildir::usage(&layout.maildir(&mailroot, &m.address))?;
            if usage.messages > 0 {
                holding += 1;
            }
            total += usage;
        }
        if total.messages > 0 && !force {
            return Err(AdminError::state(format!(
                "The domain {domain} has {holding} mailbox(es) holding {} message(s) ({} bytes). Use --force to delete them with their mail.",
                total.messages, total.bytes
            )));
        }
        for m in &mailboxes {
            aside.push(layout.maildir(&mailroot, &m.address))?;
        }
        if layout == store::Layout::PerDomain {
            aside.push(mailroot.join(domain.as_str()))?;
        }
        store::delete_domain(tx, row.id)?;
        Ok((mailboxes.len(), total))
    });
    let (mailboxes, total) = match result {
        Ok(v) => v,
        Err(e) => {
            aside.restore();
            return Err(e);
        }
    };
    aside.remove()?;
    Ok(Outcome::new(
        "Domain successfully deleted.",
        json!({
            "domain": domain.as_str(),
            "mailboxes_deleted": mailboxes,
            "messages_deleted": total.messages,
            "bytes_deleted": total.bytes,
        }),
    ))
}

fn delete_mailbox(
    ctx: &mut Context,
    address: &Address,
    delete_user: bool,
    force: bool,
) -> Result<Outcome, AdminError> {
    let mailroot = ctx.store.mailroot.clone();
    let ad = super::ad_of(&ctx.ad)?;
    let mut aside = SetAside(Vec::new());
    let result = ctx.store.write(|tx| {
        let Some(row) = store::find_mailbox(tx, address)? else {
            return Err(AdminError::not_found(format!("The mailbox {address} does not exist.")));
        };
        // postmaster always resolves (R12), so only another name's aliases would dangle.
        let pointing = if address.name.as_str() == "postmaster" {
            Vec::new()
        } else {
            store::aliases::targeting(tx, &address.to_string())?
        };
        if !pointing.is_empty() {
            return Err(AdminError::state(format!(
                "The mailbox {address} is a target of {}: remove it from there first (`dirmail alias delete {} {address}`).",
                pointing.join(", "),
                pointing.first().map(String::as_str).unwrap_or_default()
            )));
        }
        let method = store::auth_method(tx)?;
        let dir = store::layout(tx)?.maildir(&mailroot, address);
        let usage = maildir::usage(&dir)?;
        if usage.messages > 0 && !force {
            return Err(AdminError::state(format!(
                "The mailbox {address} holds {} message(s) ({} bytes). Use --force to delete it with its mail.",
                usage.messages, usage.bytes
            )));
        }
        let account_deleted = match method {
            // R5: the password record lives in the directory that is about to go.
            AuthMethod::PasswdFile => true,
            _ if delete_user => Directory::open(method, tx, dir.clone(), ad)?.delete_account(address)?,
            _ => false,
        };
        aside.push(dir)?;
        store::delete_mailbox(tx, row.id)?;
        Ok((usage, account_deleted))
    });
    let (usage, account_deleted) = match result {
        Ok(v) => v,
        Err(e) => {
            aside.restore();
            return Err(e);
        }
    };
    aside.remove()?;
    let mut text = String::from("Mailbox successfully deleted.");
    if account_deleted {
        text.push_str("\nAccount successfully deleted.");
    }
    Ok(Outcome::new(
        text,
        json!({
            "mailbox": address.to_string(),
            "account_deleted": account_deleted,
            "messages_deleted": usage.messages,
            "bytes_deleted": usage.bytes,
        }),
    ))
}
