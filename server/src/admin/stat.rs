//! `stat [DOMAIN]`: per domain, mailboxes, messages and bytes; and the totals; then the
//! outbound queue, which belongs to the server rather than a domain (shown with either form).

use serde_json::json;

use super::{AdminError, Context, Outcome};
use dirmail_proto::names::DomainName;
use dirmail_store as store;
use dirmail_store::maildir;

pub fn run(ctx: &Context, domain: Option<&str>) -> Result<Outcome, AdminError> {
    let conn = ctx.store.conn();
    let layout = store::layout(conn)?;
    let domains = match domain {
        None => store::domains(conn)?,
        Some(name) => {
            let name = DomainName::parse(name)?;
            match store::find_domain(conn, &name)? {
                Some(d) => vec![d],
                None => {
                    return Err(AdminError::not_found(format!(
                        "The domain {name} does not exist."
                    )));
                }
            }
        }
    };
    let mut text = format!(
        "{:<40} {:>9} {:>9} {:>14}\n",
        "Domain", "Mailboxes", "Messages", "Bytes"
    );
    let mut rows = Vec::new();
    let (mut total_mailboxes, mut total) = (0usize, maildir::Usage::default());
    for d in &domains {
        let mailboxes = store::mailboxes_of(conn, d.id)?;
        let mut usage = maildir::Usage::default();
        for m in &mailboxes {
            usage += maildir::usage(&layout.maildir(&ctx.store.mailroot, &m.address))?;
        }
        text.push_str(&format!(
            "{:<40} {:>9} {:>9} {:>14}\n",
            d.name,
            mailboxes.len(),
            usage.messages,
            usage.bytes
        ));
        rows.push(json!({
            "domain": d.name.as_str(),
            "mailboxes": mailboxes.len(),
            "messages": usage.messages,
            "bytes": usage.bytes,
        }));
        total_mailboxes += mailboxes.len();
        total += usage;
    }
    text.push_str(&format!(
        "{:<40} {:>9} {:>9} {:>14}",
        "Total", total_mailboxes, total.messages, total.bytes
    ));
    let (entries, pending, unreadable) = super::queue::counts(&ctx.store.mailroot)?;
    text.push_str(&format!(
        "\nOutbound queue: {entries} message(s), {pending} recipient(s) pending"
    ));
    if unreadable > 0 {
        text.push_str(&format!(", {unreadable} envelope(s) cannot be read"));
    }
    Ok(Outcome::new(
        text,
        json!({
            "domains": rows,
            "total": { "mailboxes": total_mailboxes, "messages": total.messages, "bytes": total.bytes },
            "queue": { "entries": entries, "pending": pending, "unreadable": unreadable },
        }),
    ))
}
