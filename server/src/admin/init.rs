//! `init`: writes a commented `dirmail.toml` and creates an empty store beside it.

use std::path::Path;

use serde_json::json;

use super::{AdminError, Outcome};
use dirmail_config::{Config, TEMPLATE};
use dirmail_store::Store;

pub fn run(explicit: Option<&Path>, force: bool) -> Result<Outcome, AdminError> {
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
    std::fs::write(&path, TEMPLATE)
        .map_err(|e| AdminError::Failed(format!("cannot write {}: {e}", path.display())))?;
    let config = Config::load(&path)?;
    Store::open(&config.store)?;
    Ok(Outcome::new(
        format!(
            "Wrote {} and created the store in {}.",
            path.display(),
            config.store.data_dir.display()
        ),
        json!({
            "config": path.display().to_string(),
            "data_dir": config.store.data_dir.display().to_string(),
            "mailroot": config.store.mailroot.display().to_string(),
        }),
    ))
}
