//! `alias add ALIAS@DOMAIN TARGET…`, `alias delete ALIAS@DOMAIN [TARGET…]` and `alias list
//! [DOMAIN]`: addresses that are not mailboxes (R28), a domain's catch-all (`@DOMAIN`), and
//! where `postmaster@` goes (R12). Every check runs in the transaction of the change it guards,
//! and a new alias is expanded there with the walk the RCPT lookup uses, so a loop is refused
//! before anything is written.

use serde_json::{Value, json};

use super::cli::AliasCommand;
use super::{AdminError, Context, Outcome};
use dirmail_proto::names::{Address, DomainName, MailboxName};
use dirmail_proto::smtp::address::{ForwardPath, RcptAddress, classify};
use dirmail_rules::alias::{ExpandError, Node};
use dirmail_store as store;
use dirmail_store::aliases::{self, MAX_ALIAS_NAME};

pub fn run(ctx: &mut Context, command: AliasCommand) -> Result<Outcome, AdminError> {
    match command {
        AliasCommand::Add { alias, targets } => add(ctx, &alias, &targets),
        AliasCommand::Delete { alias, targets } => delete(ctx, &alias, &targets),
        AliasCommand::List { domain } => list(ctx, domain.as_deref()),
    }
}

/// `name@domain`, or `@domain` (the catch-all, `name` empty).
struct AliasName {
    name: String,
    domain: DomainName,
}

impl AliasName {
    fn parse(text: &str) -> Result<AliasName, AdminError> {
        let Some((local, domain)) = text.rsplit_once('@') else {
            return Err(AdminError::Usage(format!(
                "{text:?} is not an alias: write NAME@DOMAIN, or @DOMAIN for the domain's catch-all"
            )));
        };
        let domain = DomainName::parse(domain)?;
        let name = if local.is_empty() {
            String::new()
        } else {
            MailboxName::parse(local, MAX_ALIAS_NAME)?
                .as_str()
                .to_owned()
        };
        Ok(AliasName { name, domain })
    }

    fn is_postmaster(&self) -> bool {
        self.name == "postmaster"
    }
}

impl std::fmt::Display for AliasName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.domain)
    }
}

/// A target as written on the command line, in the form it is stored in: a local address in
/// lower case, an outside one with its local part as written and its domain canonical (R10).
fn canonical_target(text: &str) -> Result<(String, String, DomainName), AdminError> {
    let not_an_address = || {
        AdminError::Usage(format!(
            "the target {text:?} is not an address: write NAME@DOMAIN (a mailbox, an alias, or an address outside)"
        ))
    };
    if text.len() > 254 {
        return Err(not_an_address());
    }
    // The SMTP core's reading of a forward-path: anything that hides a route (R16) or is not a
    // plain `local@domain` is refused, so a target is never an open door to relaying.
    let ForwardPath::Checkable(RcptAddress::Mailbox { local_part, domain }) = classify(text) else {
        return Err(not_an_address());
    };
    if local_part.starts_with('"') || local_part.len() > 64 {
        return Err(not_an_address());
    }
    let domain = DomainName::parse(&domain)?;
    Ok((
        format!("{local_part}@{domain}"),
        local_part.to_owned(),
        domain,
    ))
}

/// Checks each target and returns them as stored: a local one must be a mailbox, an alias or
/// `postmaster` of its domain (the catch-all does not count, or a typo would vanish into it).
fn checked_targets(
    tx: &rusqlite::Connection,
    targets: &[String],
) -> Result<Vec<String>, AdminError> {
    let mut out: Vec<String> = Vec::new();
    for text in targets {
        let (outside, local_part, domain) = canonical_target(text)?;
        let stored = match store::find_domain(tx, &domain)? {
            None => outside,
            Some(row) => {
                let name = MailboxName::parse(&local_part, MAX_ALIAS_NAME)?;
                if !aliases::known_without_catch_all(tx, &row, &name)? {
                    return Err(AdminError::not_found(format!(
                        "The target {name}@{domain} is neither a mailbox nor an alias of {domain}. Add it first."
                    )));
                }
                format!("{name}@{domain}")
            }
        };
        if !out.iter().any(|t| t.eq_ignore_ascii_case(&stored)) {
            out.push(stored);
        }
    }
    Ok(out)
}

fn add(ctx: &mut Context, alias: &str, targets: &[String]) -> Result<Outcome, AdminError> {
    let alias = AliasName::parse(alias)?;
    ctx.store.write(|tx| {
        let Some(domain) = store::find_domain(tx, &alias.domain)? else {
            return Err(AdminError::not_found(format!(
                "The domain {} does not exist here: an alias belongs to a local domain. Add it first with `dirmail add {}`.",
                alias.domain, alias.domain
            )));
        };
        if !alias.name.is_empty()
            && let Ok(name) = MailboxName::parse(&alias.name, MAX_ALIAS_NAME)
            && store::find_mailbox(
                tx,
                &Address {
                    name,
                    domain: domain.name.clone(),
                },
            )?
            .is_some()
        {
            return Err(AdminError::state(format!(
                "{alias} is a mailbox: an alias cannot take its address."
            )));
        }
        let targets = checked_targets(tx, targets)?;
        let (row_id, made) = match aliases::find(tx, domain.id, &alias.name)? {
            Some(row) => (row.id, false),
            None => (aliases::insert(tx, domain.id, &alias.name)?, true),
        };
        let added = aliases::add_targets(tx, row_id, &targets)?;
        // R28: the walk RCPT takes, on the store as it would be; a loop undoes everything.
        let expansion = aliases::expand(tx, &alias.to_string()).map_err(refusal)?;
        let row = aliases::find(tx, domain.id, &alias.name)?
            .ok_or_else(|| AdminError::Failed(format!("the alias {alias} vanished")))?;
        let text = format!(
            "Alias successfully {}: {} → {}{}",
            if made { "added" } else { "changed" },
            row.address(),
            row.targets.join(", "),
            if added < targets.len() {
                "\n(some targets were there already)"
            } else {
                ""
            }
        );
        Ok(Outcome::new(
            text,
            json!({
                "alias": row.address(),
                "catch_all": row.is_catch_all(),
                "created": made,
                "targets": row.targets,
                "mailboxes": expansion.mailboxes.iter().map(|m| m.address.to_string()).collect::<Vec<_>>(),
                "outside": expansion.outside,
            }),
        ))
    })
}

/// R28's refusals, in words; a store failure stays a failure.
fn refusal(e: ExpandError<store::StoreError>) -> AdminError {
    match e {
        ExpandError::Lookup(e) => e.into(),
        ExpandError::Loop(path) => AdminError::refused(
            "R28",
            format!(
                "that would make a loop: {}. Nothing was changed.",
                path.join(" → ")
            ),
        ),
        e @ (ExpandError::TooDeep(_) | ExpandError::TooMany) => {
            AdminError::refused("R28", format!("{e}. Nothing was changed."))
        }
    }
}

fn delete(ctx: &mut Context, alias: &str, targets: &[String]) -> Result<Outcome, AdminError> {
    let alias = AliasName::parse(alias)?;
    ctx.store.write(|tx| {
        let Some(domain) = store::find_domain(tx, &alias.domain)? else {
            return Err(AdminError::not_found(format!(
                "The domain {} does not exist.",
                alias.domain
            )));
        };
        let Some(row) = aliases::find(tx, domain.id, &alias.name)? else {
            if alias.is_postmaster() {
                return Err(AdminError::refused(
                    "R12",
                    format!(
                        "{alias} cannot be deleted: every domain has a postmaster. It goes to its default (the domain's first mailbox) already."
                    ),
                ));
            }
            return Err(AdminError::not_found(format!("The alias {alias} does not exist.")));
        };
        let mut removed_all = targets.is_empty();
        if !targets.is_empty() {
            let mut wanted = Vec::new();
            for text in targets {
                let (outside, local_part, target_domain) = canonical_target(text)?;
                wanted.push(match store::find_domain(tx, &target_domain)? {
                    Some(_) => format!("{}@{target_domain}", local_part.to_lowercase()),
                    None => outside,
                });
            }
            let missing = aliases::remove_targets(tx, row.id, &wanted)?;
            if !missing.is_empty() {
                return Err(AdminError::not_found(format!(
                    "{} is not a target of {}. Nothing was changed.",
                    missing.join(", "),
                    row.address()
                )));
            }
            removed_all = aliases::find(tx, domain.id, &alias.name)?
                .is_none_or(|r| r.targets.is_empty());
        }
        if removed_all {
            // postmaster is always there, so aliases pointing at it stay good.
            let pointing: Vec<String> = if alias.is_postmaster() || row.is_catch_all() {
                Vec::new()
            } else {
                aliases::targeting(tx, &row.address())?
                    .into_iter()
                    .filter(|a| *a != row.address())
                    .collect()
            };
            if !pointing.is_empty() {
                return Err(AdminError::state(format!(
                    "{} is a target of {}: remove it from there first (`dirmail alias delete {} {}`). Nothing was changed.",
                    row.address(),
                    pointing.join(", "),
                    pointing.first().map(String::as_str).unwrap_or_default(),
                    row.address()
                )));
            }
            aliases::delete(tx, row.id)?;
        }
        let now = aliases::find(tx, domain.id, &alias.name)?;
        let mut text = match &now {
            Some(r) => format!(
                "Alias successfully changed: {} → {}",
                r.address(),
                r.targets.join(", ")
            ),
            None => "Alias successfully deleted.".to_owned(),
        };
        if now.is_none() && alias.is_postmaster() {
            let default = postmaster_default(tx, &domain)?;
            text.push_str(&format!(
                "\n{alias} goes to its default again: {} (R12).",
                default.as_deref().unwrap_or("the domain's first mailbox, when there is one")
            ));
        }
        Ok(Outcome::new(
            text,
            json!({
                "alias": row.address(),
                "deleted": now.is_none(),
                "targets": now.map(|r| r.targets).unwrap_or_default(),
            }),
        ))
    })
}

/// Where postmaster goes when nobody pointed it (R12), once its alias is gone.
fn postmaster_default(
    tx: &rusqlite::Connection,
    domain: &store::DomainRow,
) -> Result<Option<String>, AdminError> {
    Ok(
        match aliases::resolve(tx, &format!("postmaster@{}", domain.name))? {
            Node::Mailbox(m) => Some(m.address.to_string()),
            _ => None,
        },
    )
}

fn list(ctx: &Context, domain: Option<&str>) -> Result<Outcome, AdminError> {
    let conn = ctx.store.conn();
    let domains = match domain {
        Some(name) => {
            let name = DomainName::parse(name)?;
            let Some(row) = store::find_domain(conn, &name)? else {
                return Err(AdminError::not_found(format!(
                    "The domain {name} does not exist."
                )));
            };
            vec![row]
        }
        None => store::domains(conn)?,
    };
    let mut text = String::new();
    let mut rows: Vec<Value> = Vec::new();
    for d in &domains {
        let stored = aliases::of_domain(conn, d.id)?;
        let mut entries: Vec<(String, Vec<String>, &str)> = Vec::new();
        // R12: postmaster first, whatever it is.
        let postmaster = format!("postmaster@{}", d.name);
        match stored.iter().find(|a| a.name == "postmaster") {
            Some(a) => entries.push((postmaster, a.targets.clone(), "alias")),
            None => {
                let (targets, kind) = match aliases::resolve(conn, &postmaster)? {
                    Node::Mailbox(m) if m.address.name.as_str() == "postmaster" => {
                        (vec![m.address.to_string()], "mailbox")
                    }
                    Node::Mailbox(m) => (vec![m.address.to_string()], "default"),
                    // No mailbox yet: the catch-all, when there is one, takes it.
                    _ => (Vec::new(), "default"),
                };
                entries.push((postmaster, targets, kind));
            }
        }
        for a in stored.iter().filter(|a| a.name != "postmaster") {
            let kind = if a.is_catch_all() {
                "catch-all"
            } else {
                "alias"
            };
            entries.push((a.address(), a.targets.clone(), kind));
        }
        for (address, targets, kind) in entries {
            let shown = if targets.is_empty() {
                "(nowhere yet: the domain has no mailbox)".to_owned()
            } else {
                targets.join(", ")
            };
            let note = match kind {
                "default" => "  (default: the first mailbox, R12)",
                "mailbox" => "  (a mailbox of that name)",
                "catch-all" => "  (catch-all)",
                _ => "",
            };
            text.push_str(&format!("{address:<40} → {shown}{note}\n"));
            rows.push(json!({
                "alias": address,
                "targets": targets,
                "kind": kind,
                "catch_all": kind == "catch-all",
            }));
        }
    }
    text.push_str(&format!("{} address(es)", rows.len()));
    Ok(Outcome::new(text, json!({ "aliases": rows })))
}
