//! `init`: writes a commented `dirmail.toml` and creates an empty store beside it (or keeps
//! the store that is already there, and says so).

use std::path::Path;

use serde_json::json;

use super::{AdminError, Outcome};
use dirmail_config::{Config, TEMPLATE};
use dirmail_store::Store;

pub fn run(
    explicit: Option<&Path>,
    force: bool,
    hostname: Option<&str>,
) -> Result<Outcome, AdminError> {
    let env = std::env::var_os("DIRMAIL_CONFIG").filter(|p| !p.is_empty());
    let path = explicit
        .map(Path::to_path_buf)
        .or(env.map(Into::into))
        .unwrap_or_else(|| "dirmail.toml".into());
    if path.exists() && !force {
        return Err(AdminError::state(format!(
            "{} already exists; use --force to overwrite it.",
            path.display()
        )));
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| AdminError::Failed(format!("cannot create {}: {e}", parent.display())))?;
    }
    let text = match hostname {
        Some(name) => with_hostname(name)?,
        None => TEMPLATE.to_owned(),
    };
    // Checked before anything is written, so a bad name leaves no file behind.
    let config = Config::parse(&text, &path)?;
    let store_existed = config.store.data_dir.join(dirmail_store::DB_FILE).exists();
    std::fs::write(&path, &text)
        .map_err(|e| AdminError::Failed(format!("cannot write {}: {e}", path.display())))?;
    let config = Config::load(&path)?;
    Store::open(&config.store)?;
    let store = if store_existed {
        format!(
            "kept the store already in {} as it was",
            config.store.data_dir.display()
        )
    } else {
        format!("created the store in {}", config.store.data_dir.display())
    };
    Ok(Outcome::new(
        format!("Wrote {} and {store}.", path.display()),
        json!({
            "config": path.display().to_string(),
            "data_dir": config.store.data_dir.display().to_string(),
            "mailroot": config.store.mailroot.display().to_string(),
            "hostname": config.server.hostname,
            "store_created": !store_existed,
        }),
    ))
}

/// The template with `hostname` set: its commented example line becomes the setting.
fn with_hostname(name: &str) -> Result<String, AdminError> {
    const EXAMPLE: &str = "# hostname = \"mail.example.jp\"";
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    {
        return Err(AdminError::Usage(format!(
            "--hostname {name:?}: a host name is letters, digits, '-' and '.'"
        )));
    }
    debug_assert!(TEMPLATE.contains(EXAMPLE), "the template's hostname line");
    Ok(TEMPLATE.replacen(EXAMPLE, &format!("hostname = \"{name}\""), 1))
}
