//! `add DOMAIN` and `add NAME@DOMAIN [--create-user PASS]` (winpop ADD).

use serde_json::json;

use super::{AdminError, Context, Outcome, Target, parse_target, password_arg};
use dirmail_directory::{AuthMethod, Directory, DirectoryError};
use dirmail_proto::names::{Address, DomainName};
use dirmail_rules::{
    r3_local_name_unique, r5_passwd_file_needs_create_user, r9_shared_layout_name_unique,
};
use dirmail_store as store;
use dirmail_store::{Layout, maildir};

pub fn run(
    ctx: &mut Context,
    target: &str,
    create_user: Option<String>,
) -> Result<Outcome, AdminError> {
    let method = store::auth_method(ctx.store.conn())?;
    match parse_target(target, method.max_name_len())? {
        Target::Domain(domain) => {
            if create_user.is_some() {
                return Err(AdminError::Usage(
                    "--create-user applies to a mailbox (NAME@DOMAIN), not to a domain".into(),
                ));
            }
            add_domain(ctx, &domain)
        }
        Target::Mailbox(address) => {
            let password = create_user
                .map(|p| password_arg(p, "the password of --create-user"))
                .transpose()?;
            add_mailbox(ctx, &address, password)
        }
    }
}

fn add_domain(ctx: &mut Context, domain: &DomainName) -> Result<Outcome, AdminError> {
    let ad = super::ad_of(&ctx.ad)?;
    let group_made = ctx.store.write(|tx| {
        if store::find_domain(tx, domain)?.is_some() {
            return Err(AdminError::state(format!(
                "The domain {domain} already exists."
            )));
        }
        store::insert_domain(tx, domain)?;
        // R26: under ad in the shared layout, a domain is an AD security group of its name.
        if store::auth_method(tx)? == AuthMethod::Ad && store::layout(tx)? == Layout::Shared {
            let ad = ad.ok_or(DirectoryError::AdNotConfigured)?;
            return Ok(ad
                .ensure_domain_group(domain.as_str())
                .map_err(DirectoryError::from)?);
        }
        Ok(false)
    })?;
    let mut text = String::from("Domain successfully added.");
    if group_made {
        text.push_str(&format!(
            "\nCreated the Active Directory group {domain} (R26)."
        ));
    }
    Ok(Outcome::new(
        text,
        json!({ "domain": domain.as_str(), "ad_group_created": group_made }),
    ))
}

fn add_mailbox(
    ctx: &mut Context,
    address: &Address,
    password: Option<dirmail_proto::names::Secret>,
) -> Result<Outcome, AdminError> {
    let mailroot = ctx.store.mailroot.clone();
    let ad = super::ad_of(&ctx.ad)?;
    // The Maildir is made inside the transaction; if anything after fails (the account, the
    // commit), it goes again, so a refusal leaves nothing behind.
    let mut made_dir = None;
    let result = ctx.store.write(|tx| {
        let method = store::auth_method(tx)?;
        let layout = store::layout(tx)?;
        let Some(domain) = store::find_domain(tx, &address.domain)? else {
            return Err(AdminError::not_found(format!(
                "The domain {} does not exist. Add it first with `dirmail add {}`.",
                address.domain, address.domain
            )));
        };
        if store::find_mailbox(tx, address)?.is_some() {
            return Err(AdminError::state(format!("The mailbox {address} already exists.")));
        }
        // R28: an address is a mailbox or an alias, never both.
        if store::aliases::find(tx, domain.id, address.name.as_str())?.is_some() {
            return Err(AdminError::state(format!(
                "{address} is an alias (`dirmail alias list {}`). Delete the alias first to make a mailbox of that name.",
                address.domain
            )));
        }
        let namesake = store::mailbox_in_other_domain(tx, address)?;
        r3_local_name_unique(method, address, namesake.as_ref())?;
        r9_shared_layout_name_unique(layout, address, namesake.as_ref())?;
        r5_passwd_file_needs_create_user(method, password.is_some())?;

        let dir = layout.maildir(&mailroot, address);
        let directory = Directory::open(method, tx, dir.clone(), ad)?;
        match &password {
            Some(_) if directory.account_exists(address)? => {
                return Err(AdminError::state(format!(
                    "An account named {} already exists. Add the mailbox without --create-user to use it.",
                    address.name
                )));
            }
            None if !directory.account_exists(address)? => {
                return Err(AdminError::not_found(format!(
                    "There is no account named {name}. Add the mailbox with --create-user PASSWORD, or create the account first with `dirmail account add {name} PASSWORD`.",
                    name = address.name
                )));
            }
            _ => {}
        }
        if dir.exists() {
            // Left behind by something outside dirmail: never hand old mail to a new user.
            return Err(AdminError::Failed(format!(
                "The directory {} already exists. Move it away, then add the mailbox again.",
                dir.display()
            )));
        }
        store::insert_mailbox(tx, domain.id, &address.name)?;
        made_dir = Some(dir.clone());
        maildir::create(&dir)?;
        if let Some(password) = &password {
            // R26: under ad in the shared layout, the user joins its domain's group.
            let group = (method == AuthMethod::Ad && layout == Layout::Shared)
                .then(|| address.domain.to_string());
            directory.create_account(address, password, group.as_deref())?;
        }
        // R6: the directory gives an SPA account name only where SPA is offered.
        Ok(directory.spa_account_name(address)?)
    });
    let spa_name = match result {
        Ok(name) => name,
        Err(e) => {
            if let Some(dir) = made_dir {
                let _ = maildir::remove(&dir);
            }
            return Err(e);
        }
    };
    let hostname = ctx.config.server.hostname.clone();
    let mut text = format!(
        "Mailbox successfully added.\n\
         Logon information for the new mailbox. Users should enter the matching account name in their mail client:\n  \
         Clear text authentication:\n    \
         Account name: {address}\n    \
         Mail server:  {hostname}"
    );
    if let Some(spa) = &spa_name {
        text.push_str(&format!(
            "\n  Secure Password Authentication:\n    Account name: {spa}\n    Mail server:  {hostname}"
        ));
    }
    Ok(Outcome::new(
        text,
        json!({
            "mailbox": address.to_string(),
            "account_created": password.is_some(),
            "logon": {
                "clear_text": { "account": address.to_string(), "server": hostname },
                "spa": spa_name.map(|name| json!({ "account": name, "server": hostname })),
            },
        }),
    ))
}
