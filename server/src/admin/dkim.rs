//! `dkim generate DOMAIN [--selector S] [--algorithm rsa|ed25519] [--force]`, `dkim show DOMAIN`
//! and `dkim delete DOMAIN [--selector S]` (issue 12): the keys outbound mail from a local
//! domain is signed with, and the DNS TXT records to publish for them.

use serde_json::json;

use super::cli::{DkimAlgorithm, DkimCommand};
use super::{AdminError, Context, Outcome};
use dirmail_outbound::dkim::{self, Algorithm};
use dirmail_proto::names::DomainName;
use dirmail_store as store;
use dirmail_store::dkim_keys::{self, Written};

pub fn run(ctx: &Context, command: DkimCommand) -> Result<Outcome, AdminError> {
    let data_dir = ctx.store.data_dir.clone();
    match command {
        DkimCommand::Generate {
            domain,
            selector,
            algorithm,
            force,
        } => {
            let domain = local_domain(ctx, &domain)?;
            if !dkim_keys::valid_selector(&selector) {
                return Err(AdminError::Usage(format!(
                    "The selector {selector:?} is not one DNS label of lower-case letters, digits and '-'."
                )));
            }
            let algorithm = match algorithm {
                DkimAlgorithm::Rsa => Algorithm::Rsa,
                DkimAlgorithm::Ed25519 => Algorithm::Ed25519,
            };
            let pem = dkim::generate(algorithm).map_err(AdminError::Failed)?;
            let record = dkim::txt_record(&domain, &selector, &pem).map_err(AdminError::Failed)?;
            let (_, public) = dkim::public_key(&pem).map_err(AdminError::Failed)?;
            let value = dkim::txt_value(algorithm, &public);
            match dkim_keys::write(&data_dir, &domain, &selector, &pem, force)? {
                Written::Written => {}
                Written::Exists => {
                    return Err(AdminError::state(format!(
                        "The domain {domain} already has a DKIM key with the selector {selector}; give --force to replace it (and publish the new record before mail is signed with it)."
                    )));
                }
            }
            Ok(Outcome::new(
                format!(
                    "DKIM key made for {domain} (selector {selector}, {}); mail from {domain} is signed with it from now on. Publish this record:\n{record}",
                    algorithm.tag()
                ),
                json!({ "domain": domain, "selector": selector, "algorithm": algorithm.tag(), "record": record, "name": format!("{selector}._domainkey.{domain}"), "value": value }),
            ))
        }
        DkimCommand::Show { domain } => {
            let domain = local_domain(ctx, &domain)?;
            let keys = dkim_keys::keys(&data_dir, &domain)?;
            if keys.is_empty() {
                return Err(AdminError::not_found(format!(
                    "The domain {domain} has no DKIM key; make one with: dirmail dkim generate {domain}"
                )));
            }
            let mut text = String::new();
            let mut rows = Vec::new();
            for (selector, pem) in keys {
                let record = dkim::txt_record(&domain, &selector, &pem).map_err(|e| {
                    AdminError::Failed(format!("the key {selector} of {domain}: {e}"))
                })?;
                text.push_str(&record);
                text.push('\n');
                rows.push(json!({ "selector": selector, "record": record }));
            }
            Ok(Outcome::new(
                text.trim_end().to_owned(),
                json!({ "domain": domain, "keys": rows }),
            ))
        }
        DkimCommand::Delete { domain, selector } => {
            let domain = local_domain(ctx, &domain)?;
            let deleted = dkim_keys::delete(&data_dir, &domain, selector.as_deref())?;
            if deleted == 0 {
                return Err(AdminError::not_found(match selector {
                    Some(s) => {
                        format!("The domain {domain} has no DKIM key with the selector {s}.")
                    }
                    None => format!("The domain {domain} has no DKIM key."),
                }));
            }
            Ok(Outcome::new(
                format!(
                    "{deleted} DKIM key(s) of {domain} deleted; its mail is no longer signed with them."
                ),
                json!({ "domain": domain, "deleted": deleted }),
            ))
        }
    }
}

/// The domain, lower case, if it is one of the store's.
fn local_domain(ctx: &Context, text: &str) -> Result<String, AdminError> {
    let name = DomainName::parse(text)?;
    if store::find_domain(ctx.store.conn(), &name)?.is_none() {
        return Err(AdminError::not_found(format!(
            "The domain {name} does not exist here; DKIM keys are for local domains (add it with: dirmail add {name})."
        )));
    }
    Ok(name.as_str().to_ascii_lowercase())
}
