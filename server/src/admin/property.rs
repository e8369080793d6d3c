//! `get PROPERTY` / `set PROPERTY VALUE` (docs/spec.md §5.3). Each property has one home:
//! administrative state in the store, deployment settings in `dirmail.toml` (edited in place,
//! comments kept).

use std::path::Path;

use serde_json::{Value, json};
use toml_edit::DocumentMut;

use super::{AdminError, Context, Outcome};
use dirmail_config::{Config, Source};
use dirmail_directory::{AuthMethod, DirectoryError};
use dirmail_rules::{
    r2_change_only_without_domains, r6_spa_required_allowed, r22_switch_to_ad_allowed,
};
use dirmail_store as store;
use dirmail_store::Layout;

/// Where a property lives: the store, or a `[table] key` of dirmail.toml.
enum Home {
    Store,
    File {
        table: &'static str,
        key: &'static str,
    },
}

struct Property {
    name: &'static str,
    /// The server reads the store as it goes but dirmail.toml only at start, so a change of a
    /// file property needs a restart.
    home: Home,
}

const PROPERTIES: &[Property] = &[
    Property {
        name: "authentication",
        home: Home::Store,
    },
    Property {
        name: "mailbox-layout",
        home: Home::Store,
    },
    Property {
        name: "sparequired",
        home: Home::Store,
    },
    Property {
        name: "mailroot",
        home: Home::File {
            table: "store",
            key: "mailroot",
        },
    },
    Property {
        name: "port",
        home: Home::File {
            table: "pop3",
            key: "port",
        },
    },
    Property {
        name: "logging",
        home: Home::File {
            table: "server",
            key: "logging",
        },
    },
    Property {
        name: "socketbacklog",
        home: Home::File {
            table: "limits",
            key: "socket_backlog",
        },
    },
    Property {
        name: "socketmax",
        home: Home::File {
            table: "limits",
            key: "socket_max",
        },
    },
    Property {
        name: "socketmin",
        home: Home::File {
            table: "limits",
            key: "socket_min",
        },
    },
    Property {
        name: "socketthreshold",
        home: Home::File {
            table: "limits",
            key: "socket_threshold",
        },
    },
    Property {
        name: "threadcount",
        home: Home::File {
            table: "server",
            key: "threadcount",
        },
    },
];

/// `socket` sets the four socket properties at once, in winpop's order.
const SOCKET_PARTS: [&str; 4] = ["socketbacklog", "socketmax", "socketmin", "socketthreshold"];

fn lookup(name: &str) -> Result<&'static Property, AdminError> {
    let lower = name.to_ascii_lowercase();
    PROPERTIES.iter().find(|p| p.name == lower).ok_or_else(|| {
        let names: Vec<&str> = PROPERTIES.iter().map(|p| p.name).collect();
        AdminError::Usage(format!(
            "unknown property {name:?}; the properties are: {}, socket",
            names.join(", ")
        ))
    })
}

fn current(ctx: &Context, name: &str) -> Result<Value, AdminError> {
    let conn = ctx.store.conn();
    let c = &ctx.config;
    Ok(match name {
        "authentication" => json!(store::auth_method(conn)?.as_str()),
        "mailbox-layout" => json!(store::layout(conn)?.as_str()),
        "sparequired" => json!(u8::from(store::spa_required(conn)?)),
        "mailroot" => json!(c.store.mailroot.display().to_string()),
        "port" => json!(c.pop3.port),
        "logging" => json!(c.server.logging),
        "socketbacklog" => json!(c.limits.socket_backlog),
        "socketmax" => json!(c.limits.socket_max),
        "socketmin" => json!(c.limits.socket_min),
        "socketthreshold" => json!(c.limits.socket_threshold),
        "threadcount" => json!(c.server.threadcount),
        _ => Value::Null,
    })
}

fn show(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn get(ctx: &Context, name: Option<&str>) -> Result<Outcome, AdminError> {
    match name {
        Some(name) if name.eq_ignore_ascii_case("socket") => {
            let mut text = Vec::new();
            let mut object = serde_json::Map::new();
            for part in SOCKET_PARTS {
                let value = current(ctx, part)?;
                text.push(format!("{part} = {}", show(&value)));
                object.insert(part.into(), value);
            }
            Ok(Outcome::new(
                text.join("\n"),
                json!({ "property": "socket", "value": object }),
            ))
        }
        Some(name) => {
            let property = lookup(name)?;
            let value = current(ctx, property.name)?;
            Ok(Outcome::new(
                show(&value),
                json!({ "property": property.name, "value": value }),
            ))
        }
        None => {
            let mut text = Vec::new();
            let mut object = serde_json::Map::new();
            for property in PROPERTIES {
                let value = current(ctx, property.name)?;
                text.push(format!("{} = {}", property.name, show(&value)));
                object.insert(property.name.into(), value);
            }
            Ok(Outcome::new(
                text.join("\n"),
                json!({ "properties": object }),
            ))
        }
    }
}

pub fn set(ctx: &mut Context, name: &str, values: &[String]) -> Result<Outcome, AdminError> {
    if name.eq_ignore_ascii_case("socket") {
        if values.len() != SOCKET_PARTS.len() {
            return Err(AdminError::Usage(
                "set socket takes four values: BACKLOG MAX MIN THRESHOLD".into(),
            ));
        }
        let pairs: Vec<(&str, &str)> = SOCKET_PARTS
            .iter()
            .copied()
            .zip(values.iter().map(String::as_str))
            .collect();
        return set_in_file(ctx, "socket", &pairs);
    }
    let property = lookup(name)?;
    let [value] = values else {
        return Err(AdminError::Usage(format!(
            "set {} takes one value",
            property.name
        )));
    };
    match property.home {
        Home::Store => set_in_store(ctx, property.name, value),
        Home::File { .. } => set_in_file(ctx, property.name, &[(property.name, value.as_str())]),
    }
}

fn set_in_store(ctx: &mut Context, name: &'static str, value: &str) -> Result<Outcome, AdminError> {
    let ad = super::ad_of(&ctx.ad)?;
    let mut notes = Vec::new();
    let outcome_value = ctx.store.write(|tx| match name {
        "authentication" => {
            let method = AuthMethod::parse(value).ok_or_else(|| {
                AdminError::Usage(format!(
                    "{value:?} is not an authentication method; use local, ad or passwd-file"
                ))
            })?;
            if method == store::auth_method(tx)? {
                return Ok(json!(method.as_str()));
            }
            if method == AuthMethod::Ad {
                // R22 (R2 with its way through) first: it holds whatever the directory.
                let waiting = store::mailboxes_not_ad_linked(tx)?;
                r22_switch_to_ad_allowed(store::domain_count(tx)?, waiting)?;
                let Some(ad) = ad else {
                    return Err(AdminError::Usage(
                        "set authentication ad needs [directory] configured in dirmail.toml (the Active Directory to use).".into(),
                    ));
                };
                ad.check_reachable().map_err(DirectoryError::from)?;
                if ad.ensure_mail_group().map_err(DirectoryError::from)? {
                    notes.push(format!(
                        "Created the mail group {} in Active Directory (R23).",
                        ad.config().mail_group
                    ));
                }
            } else {
                r2_change_only_without_domains(store::domain_count(tx)?, "authentication method")?;
            }
            r6_spa_required_allowed(method, store::spa_required(tx)?).map_err(|_| {
                AdminError::refused(
                    "R6",
                    format!(
                        "Secure Password Authentication is required (sparequired 1) and is not offered with {} authentication. Set sparequired 0 first.",
                        method.as_str()
                    ),
                )
            })?;
            store::set_setting(tx, "authentication", method.as_str())?;
            Ok(json!(method.as_str()))
        }
        "mailbox-layout" => {
            let layout = Layout::parse(value).ok_or_else(|| {
                AdminError::Usage(format!("{value:?} is not a mailbox layout; use per-domain or shared"))
            })?;
            if layout == store::layout(tx)? {
                return Ok(json!(layout.as_str()));
            }
            r2_change_only_without_domains(store::domain_count(tx)?, "mailbox layout")?;
            store::set_setting(tx, "mailbox-layout", layout.as_str())?;
            Ok(json!(layout.as_str()))
        }
        "sparequired" => {
            let required = match value {
                "0" => false,
                "1" => true,
                _ => return Err(AdminError::Usage(format!("sparequired is 0 or 1, not {value:?}"))),
            };
            r6_spa_required_allowed(store::auth_method(tx)?, required)?;
            store::set_setting(tx, "sparequired", if required { "1" } else { "0" })?;
            Ok(json!(u8::from(required)))
        }
        _ => Err(AdminError::Usage(format!("{name} is not kept in the store"))),
    })?;
    let mut text = String::from("Property successfully set.");
    for note in &notes {
        text.push('\n');
        text.push_str(note);
    }
    Ok(Outcome::new(
        text,
        json!({ "property": name, "value": outcome_value, "restart_needed": false }),
    ))
}

/// Edits dirmail.toml in place (comments kept), checks the result loads, then writes it
/// atomically.
fn set_in_file(ctx: &Context, shown: &str, pairs: &[(&str, &str)]) -> Result<Outcome, AdminError> {
    let Source::File(path) = &ctx.config.source else {
        return Err(AdminError::Usage(format!(
            "{shown} is kept in dirmail.toml, and no configuration file is in use. Run `dirmail init` to write one, then set it again."
        )));
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| AdminError::Failed(format!("cannot read {}: {e}", path.display())))?;
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e| AdminError::Usage(format!("{}: {e}", path.display())))?;
    for (name, value) in pairs {
        let property = lookup(name)?;
        let Home::File { table, key } = property.home else {
            return Err(AdminError::Usage(format!(
                "{name} is not kept in dirmail.toml"
            )));
        };
        let item = match property.name {
            "mailroot" => {
                if store::mailbox_count(ctx.store.conn())? > 0 {
                    return Err(AdminError::state(
                        "The mail root can be changed only while no mailbox exists: move the mail first.",
                    ));
                }
                toml_edit::value(*value)
            }
            _ => {
                let number: i64 = value.parse().map_err(|_| {
                    AdminError::Usage(format!("{name} takes a whole number, not {value:?}"))
                })?;
                toml_edit::value(number)
            }
        };
        let entry = doc.entry(table).or_insert_with(toml_edit::table);
        let Some(table_like) = entry.as_table_like_mut() else {
            return Err(AdminError::Usage(format!(
                "{}: [{table}] is not a table",
                path.display()
            )));
        };
        table_like.insert(key, item);
    }
    let new_text = doc.to_string();
    // Refuse an edit that would leave a file the server cannot load (a port of 70000, say).
    Config::parse(&new_text, path)
        .map_err(|e| AdminError::Usage(format!("the new value is not valid: {e}")))?;
    write_atomically(path, &new_text)?;
    let mut values = serde_json::Map::new();
    for (name, value) in pairs {
        values.insert((*name).into(), json!(value));
    }
    // socketmin and socketthreshold are winpop's, kept for `get` and read by no server; every
    // other file property shapes what `serve` builds at start (a reload keeps its old value).
    let restart_needed = pairs
        .iter()
        .any(|(name, _)| !matches!(*name, "socketmin" | "socketthreshold"));
    let text = if restart_needed {
        "Property successfully set. The server must be restarted for the change to take effect (a reload, SIGHUP, keeps the running value)."
    } else {
        "Property successfully set."
    };
    Ok(Outcome::new(
        text,
        json!({ "property": shown, "value": values, "restart_needed": restart_needed }),
    ))
}

fn write_atomically(path: &Path, text: &str) -> Result<(), AdminError> {
    let tmp = path.with_extension("toml.tmp");
    let fail =
        |e: std::io::Error| AdminError::Failed(format!("cannot write {}: {e}", path.display()));
    std::fs::write(&tmp, text).map_err(fail)?;
    if let Ok(meta) = std::fs::metadata(path) {
        std::fs::set_permissions(&tmp, meta.permissions()).map_err(fail)?;
    }
    std::fs::rename(&tmp, path).map_err(fail)
}
