//! Aliases, the catch-all and a postmaster pointed elsewhere (R12, R28): their rows, and the
//! lookup that tells what an address is, which R28's walk
//! ([`dirmail_rules::alias::r28_expand`]) follows. The administration tool and the RCPT lookup
//! both expand through [`expand`], so a loop is refused the same way when an alias is made and
//! when the store was changed behind the tool's back.

use rusqlite::{Connection, OptionalExtension, params};

use dirmail_proto::names::{Address, DomainName, MailboxName};
use dirmail_rules::alias::{ExpandError, Expansion, Node, r28_expand};

use crate::{
    DomainRow, MailboxRow, StoreError, find_domain, find_mailbox, first_mailbox_of, now_unix,
};

/// The local part of an alias name may be this long (RFC 5321 §4.5.3.1.1), whatever the
/// method's limit on mailbox names: an alias is not an account.
pub const MAX_ALIAS_NAME: usize = 64;

/// One alias: `name@domain`, or the domain's catch-all when `name` is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasRow {
    pub id: i64,
    pub domain: DomainName,
    pub name: String,
    pub targets: Vec<String>,
}

impl AliasRow {
    /// `name@domain`, or `@domain` for the catch-all.
    pub fn address(&self) -> String {
        format!("{}@{}", self.name, self.domain)
    }

    pub fn is_catch_all(&self) -> bool {
        self.name.is_empty()
    }
}

fn targets_of(conn: &Connection, alias_id: i64) -> Result<Vec<String>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT target FROM alias_targets WHERE alias_id = ?1 ORDER BY position")?;
    let rows = stmt.query_map([alias_id], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The alias `name` (lower case; '' for the catch-all) of the domain `domain_id`.
pub fn find(conn: &Connection, domain_id: i64, name: &str) -> Result<Option<AliasRow>, StoreError> {
    let row = conn
        .query_row(
            "SELECT a.id, d.name FROM aliases a JOIN domains d ON d.id = a.domain_id
             WHERE a.domain_id = ?1 AND a.name = ?2",
            params![domain_id, name],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
        )
        .optional()?;
    let Some((id, domain)) = row else {
        return Ok(None);
    };
    Ok(Some(AliasRow {
        id,
        domain: DomainName::unvalidated(domain),
        name: name.to_owned(),
        targets: targets_of(conn, id)?,
    }))
}

/// Every alias of a domain, by name (the catch-all, named '', first).
pub fn of_domain(conn: &Connection, domain_id: i64) -> Result<Vec<AliasRow>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT a.id, d.name, a.name FROM aliases a JOIN domains d ON d.id = a.domain_id
         WHERE a.domain_id = ?1 ORDER BY a.name",
    )?;
    let rows: Vec<(i64, String, String)> = stmt
        .query_map([domain_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    rows.into_iter()
        .map(|(id, domain, name)| {
            Ok(AliasRow {
                id,
                domain: DomainName::unvalidated(domain),
                name,
                targets: targets_of(conn, id)?,
            })
        })
        .collect()
}

/// Makes an alias without targets; returns its id.
pub fn insert(conn: &Connection, domain_id: i64, name: &str) -> Result<i64, StoreError> {
    conn.execute(
        "INSERT INTO aliases(domain_id, name, created_at) VALUES (?1, ?2, ?3)",
        params![domain_id, name, now_unix()],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Adds targets after the alias's others; one it already has is left where it is. Returns how
/// many were new.
pub fn add_targets(
    conn: &Connection,
    alias_id: i64,
    targets: &[String],
) -> Result<usize, StoreError> {
    let mut next: i64 = conn.query_row(
        "SELECT coalesce(max(position), -1) + 1 FROM alias_targets WHERE alias_id = ?1",
        [alias_id],
        |r| r.get(0),
    )?;
    let mut added = 0;
    for target in targets {
        // Addresses compare without regard to case, as the expansion compares them.
        let there: bool = conn.query_row(
            "SELECT count(*) > 0 FROM alias_targets WHERE alias_id = ?1 AND lower(target) = lower(?2)",
            params![alias_id, target],
            |r| r.get(0),
        )?;
        if there {
            continue;
        }
        added += conn.execute(
            "INSERT INTO alias_targets(alias_id, position, target) VALUES (?1, ?2, ?3)",
            params![alias_id, next, target],
        )?;
        next += 1;
    }
    Ok(added)
}

/// Removes these targets from an alias (compared without regard to case); returns those it
/// did not have.
pub fn remove_targets(
    conn: &Connection,
    alias_id: i64,
    targets: &[String],
) -> Result<Vec<String>, StoreError> {
    let mut missing = Vec::new();
    for target in targets {
        let removed = conn.execute(
            "DELETE FROM alias_targets WHERE alias_id = ?1 AND lower(target) = lower(?2)",
            params![alias_id, target],
        )?;
        if removed == 0 {
            missing.push(target.clone());
        }
    }
    Ok(missing)
}

pub fn delete(conn: &Connection, alias_id: i64) -> Result<(), StoreError> {
    conn.execute("DELETE FROM aliases WHERE id = ?1", [alias_id])?;
    Ok(())
}

/// The aliases (as addresses) that have `target` (lower case) among their targets.
pub fn targeting(conn: &Connection, target: &str) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT a.name || '@' || d.name FROM alias_targets t
         JOIN aliases a ON a.id = t.alias_id JOIN domains d ON d.id = a.domain_id
         WHERE lower(t.target) = lower(?1) ORDER BY 1",
    )?;
    let rows = stmt.query_map([target], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Aliases of other domains with a target in `domain`: `(alias, target)`, which deleting the
/// domain would leave pointing at nothing.
pub fn targeting_domain(
    conn: &Connection,
    domain: &DomainName,
) -> Result<Vec<(String, String)>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT a.name || '@' || d.name, t.target FROM alias_targets t
         JOIN aliases a ON a.id = t.alias_id JOIN domains d ON d.id = a.domain_id
         WHERE d.name <> ?1 AND lower(t.target) LIKE '%@' || ?1 ORDER BY 1, 2",
    )?;
    let rows = stmt.query_map([domain.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Whether `name` in a local domain is something mail can be addressed to without the
/// catch-all: a mailbox, an alias, or `postmaster` (R12: always there).
pub fn known_without_catch_all(
    conn: &Connection,
    domain: &DomainRow,
    name: &MailboxName,
) -> Result<bool, StoreError> {
    if name.as_str() == "postmaster" || find(conn, domain.id, name.as_str())?.is_some() {
        return Ok(true);
    }
    let address = Address {
        name: name.clone(),
        domain: domain.name.clone(),
    };
    Ok(find_mailbox(conn, &address)?.is_some())
}

/// What one address is to this server, the step R28's walk takes: a mailbox, then an alias, then
/// `postmaster` (R12: pointed somewhere, else the domain's first mailbox), then the domain's
/// catch-all; an address of another domain is outside. `@domain` names the catch-all itself.
pub fn resolve(conn: &Connection, address: &str) -> Result<Node<MailboxRow>, StoreError> {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Ok(Node::Unknown);
    };
    let Ok(domain) = DomainName::parse(domain) else {
        return Ok(Node::Outside);
    };
    let Some(domain) = find_domain(conn, &domain)? else {
        return Ok(Node::Outside);
    };
    let catch_all = || -> Result<Node<MailboxRow>, StoreError> {
        Ok(match find(conn, domain.id, "")? {
            Some(alias) => Node::Alias(alias.targets),
            None => Node::Unknown,
        })
    };
    if local.is_empty() {
        return catch_all();
    }
    // A local part R11 refuses can be neither a mailbox nor an alias: only the catch-all.
    let Ok(name) = MailboxName::parse(local, MAX_ALIAS_NAME) else {
        return catch_all();
    };
    let name_text = name.as_str().to_owned();
    let address = Address {
        name,
        domain: domain.name.clone(),
    };
    if let Some(mailbox) = find_mailbox(conn, &address)? {
        return Ok(Node::Mailbox(mailbox));
    }
    let alias = find(conn, domain.id, &name_text)?.map(|a| Node::Alias(a.targets));
    if name_text == "postmaster" {
        // The administrator mailbox of the first schema, when one was set, counts as pointed.
        let admin = match &domain.admin_mailbox {
            Some(admin) => find_mailbox(
                conn,
                &Address {
                    name: MailboxName::unvalidated(admin.clone()),
                    domain: domain.name.clone(),
                },
            )?
            .map(Node::Mailbox),
            None => None,
        };
        let first = first_mailbox_of(conn, domain.id)?.map(Node::Mailbox);
        if let Some(node) = dirmail_rules::r12_postmaster(alias.or(admin), first) {
            return Ok(node);
        }
        return catch_all();
    }
    match alias {
        Some(node) => Ok(node),
        None => catch_all(),
    }
}

/// Expands `address` (R28) over the store: the mailboxes (each once) and outside addresses its
/// mail goes to.
pub fn expand(
    conn: &Connection,
    address: &str,
) -> Result<Expansion<MailboxRow>, ExpandError<StoreError>> {
    r28_expand(address, |a| resolve(conn, a), |a, b| a.id == b.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Store, insert_domain, insert_mailbox, schema};
    use dirmail_config::StoreConfig;

    /// A node in words, since a mailbox row has no equality.
    fn shown(node: Node<MailboxRow>) -> String {
        match node {
            Node::Mailbox(m) => format!("mailbox {}", m.address),
            Node::Alias(targets) => format!("alias {}", targets.join(",")),
            Node::Outside => "outside".into(),
            Node::Unknown => "unknown".into(),
        }
    }

    fn config(dir: &std::path::Path) -> StoreConfig {
        StoreConfig {
            data_dir: dir.join("data"),
            mailroot: dir.join("data/mail"),
        }
    }

    #[test]
    fn a_store_made_before_aliases_gets_them_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        std::fs::create_dir_all(&config.data_dir).unwrap();
        // A store as the release before aliases left it: the first three migrations, a domain.
        {
            let conn = Connection::open(config.data_dir.join(crate::DB_FILE)).unwrap();
            for sql in &schema::MIGRATIONS[..3] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 3).unwrap();
            conn.execute(
                "INSERT INTO domains(name, created_at) VALUES ('example.jp', 0)",
                [],
            )
            .unwrap();
        }
        let store = Store::open(&config).unwrap();
        let version: usize = store
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, schema::MIGRATIONS.len());
        let domain = find_domain(store.conn(), &DomainName::parse("example.jp").unwrap())
            .unwrap()
            .unwrap();
        let id = insert(store.conn(), domain.id, "info").unwrap();
        add_targets(store.conn(), id, &["someone@outside.example".into()]).unwrap();
        assert_eq!(
            expand(store.conn(), "INFO@example.jp").unwrap().outside,
            ["someone@outside.example"]
        );
    }

    #[test]
    fn resolve_order_mailbox_alias_postmaster_catch_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&config(dir.path())).unwrap();
        let conn = store.conn();
        let name = DomainName::parse("example.jp").unwrap();
        insert_domain(conn, &name).unwrap();
        let domain = find_domain(conn, &name).unwrap().unwrap();
        // No mailbox yet: postmaster has nowhere to go, and nothing else exists.
        assert_eq!(
            shown(resolve(conn, "postmaster@example.jp").unwrap()),
            "unknown"
        );
        insert_mailbox(conn, domain.id, &MailboxName::parse("alice", 20).unwrap()).unwrap();
        insert_mailbox(conn, domain.id, &MailboxName::parse("bob", 20).unwrap()).unwrap();
        assert_eq!(
            shown(resolve(conn, "PostMaster@example.jp").unwrap()),
            "mailbox alice@example.jp"
        );
        assert_eq!(
            shown(resolve(conn, "nobody@example.jp").unwrap()),
            "unknown"
        );
        assert_eq!(
            shown(resolve(conn, "x@outside.example").unwrap()),
            "outside"
        );
        let pm = insert(conn, domain.id, "postmaster").unwrap();
        add_targets(conn, pm, &["bob@example.jp".into()]).unwrap();
        assert_eq!(
            shown(resolve(conn, "postmaster@example.jp").unwrap()),
            "alias bob@example.jp"
        );
        let all = insert(conn, domain.id, "").unwrap();
        add_targets(conn, all, &["alice@example.jp".into()]).unwrap();
        assert_eq!(
            shown(resolve(conn, "nobody@example.jp").unwrap()),
            "alias alice@example.jp"
        );
        // A local part R11 refuses reaches only the catch-all.
        assert_eq!(
            shown(resolve(conn, "no_body@example.jp").unwrap()),
            "alias alice@example.jp"
        );
        assert_eq!(
            shown(resolve(conn, "BOB@example.jp").unwrap()),
            "mailbox bob@example.jp"
        );
        // The catch-all pointing at an address that is gone loops back to itself: refused.
        add_targets(conn, all, &["gone@example.jp".into()]).unwrap();
        assert!(matches!(
            expand(conn, "other@example.jp"),
            Err(ExpandError::Loop(_))
        ));
    }
}
