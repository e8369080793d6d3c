//! DKIM signing keys (issue 12): one PEM file per selector, `<data_dir>/dkim/<domain>/<selector>.pem`,
//! mode 0600 in 0700 directories. Files rather than SQLite rows, like the mail secret's key
//! (`secrets.rs`): a key is read by the queue runner at signing time without a transaction, and
//! an administrator can back it up or replace it with the usual tools. What the key is (RSA or
//! Ed25519) is dirmail-outbound's business; this module only keeps the bytes.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{StoreError, io_context, private_dir};

const DIR: &str = "dkim";

/// A selector or domain usable as a file name: DNS letters, digits, `-` and `.` (not first),
/// at most 253 octets. Everything read from a message goes through this before it names a file.
fn safe(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && !name.starts_with('.')
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// Whether `selector` is a valid selector: one DNS label (at most 63 octets, no dot).
pub fn valid_selector(selector: &str) -> bool {
    safe(selector) && selector.len() <= 63 && !selector.contains('.')
}

fn domain_dir(data_dir: &Path, domain: &str) -> Option<PathBuf> {
    safe(domain).then(|| data_dir.join(DIR).join(domain))
}

/// The result of [`write`].
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    Written,
    /// The selector has a key and `force` was not given.
    Exists,
}

/// Writes the key of `selector` at `domain` (lower case), durably, replacing an existing one
/// only when `force` is set.
pub fn write(
    data_dir: &Path,
    domain: &str,
    selector: &str,
    pem: &str,
    force: bool,
) -> Result<Written, StoreError> {
    let invalid = || StoreError::Io {
        context: format!("cannot keep a DKIM key for {domain:?} / {selector:?}"),
        source: std::io::Error::other("not a valid domain or selector"),
    };
    if !valid_selector(selector) {
        return Err(invalid());
    }
    let dir = domain_dir(data_dir, domain).ok_or_else(invalid)?;
    private_dir(&data_dir.join(DIR))?;
    private_dir(&dir)?;
    let path = dir.join(format!("{selector}.pem"));
    if path.exists() && !force {
        return Ok(Written::Exists);
    }
    // Written beside, then renamed over: a crash leaves the old key or the new, never half.
    let tmp = dir.join(format!(".{selector}.pem.tmp"));
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_context(format!("cannot create {}", tmp.display())))?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_context(format!("cannot write {}", tmp.display())))?;
    fs::rename(&tmp, &path).map_err(io_context(format!("cannot write {}", path.display())))?;
    if let Ok(dir) = fs::File::open(&dir) {
        let _ = dir.sync_all();
    }
    Ok(Written::Written)
}

/// The keys of `domain` as (selector, PEM), by selector; none for a name that cannot be a domain.
pub fn keys(data_dir: &Path, domain: &str) -> Result<Vec<(String, String)>, StoreError> {
    let Some(dir) = domain_dir(data_dir, domain) else {
        return Ok(Vec::new());
    };
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_context(format!("cannot read {}", dir.display()))(e)),
    };
    let mut keys = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_context(format!("cannot read {}", dir.display())))?;
        let name = entry.file_name();
        let Some(selector) = name.to_str().and_then(|n| n.strip_suffix(".pem")) else {
            continue;
        };
        if !valid_selector(selector) {
            continue;
        }
        let path = entry.path();
        // A key is a few KiB; anything much bigger is not one of ours.
        let meta =
            fs::metadata(&path).map_err(io_context(format!("cannot read {}", path.display())))?;
        if meta.len() > 64 * 1024 {
            continue;
        }
        let pem = fs::read_to_string(&path)
            .map_err(io_context(format!("cannot read {}", path.display())))?;
        keys.push((selector.to_owned(), pem));
    }
    keys.sort();
    Ok(keys)
}

/// Deletes the key of `selector`, or every key of `domain`; how many were deleted.
pub fn delete(data_dir: &Path, domain: &str, selector: Option<&str>) -> Result<usize, StoreError> {
    let Some(dir) = domain_dir(data_dir, domain) else {
        return Ok(0);
    };
    let mut deleted = 0;
    for (name, _) in keys(data_dir, domain)? {
        if selector.is_some_and(|s| s != name) {
            continue;
        }
        let path = dir.join(format!("{name}.pem"));
        fs::remove_file(&path).map_err(io_context(format!("cannot remove {}", path.display())))?;
        deleted += 1;
    }
    if keys(data_dir, domain)?.is_empty() {
        let _ = fs::remove_dir(&dir);
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_are_private_and_not_overwritten_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        assert_eq!(
            write(data, "example.jp", "s1", "one", false).unwrap(),
            Written::Written
        );
        assert_eq!(
            write(data, "example.jp", "s1", "two", false).unwrap(),
            Written::Exists
        );
        assert_eq!(
            keys(data, "example.jp").unwrap(),
            vec![("s1".into(), "one".into())]
        );
        assert_eq!(
            write(data, "example.jp", "s1", "two", true).unwrap(),
            Written::Written
        );
        assert_eq!(
            keys(data, "example.jp").unwrap(),
            vec![("s1".into(), "two".into())]
        );
        let mode = fs::metadata(data.join("dkim/example.jp/s1.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(delete(data, "example.jp", Some("s2")).unwrap(), 0);
        assert_eq!(delete(data, "example.jp", None).unwrap(), 1);
        assert!(keys(data, "example.jp").unwrap().is_empty());
    }

    #[test]
    fn names_that_could_leave_the_directory_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        assert!(write(data, "../etc", "s1", "x", false).is_err());
        assert!(write(data, "example.jp", "a/b", "x", false).is_err());
        assert!(write(data, "example.jp", "a.b", "x", false).is_err());
        assert!(keys(data, "..").unwrap().is_empty());
        assert!(keys(data, "Example.JP/..").unwrap().is_empty());
    }
}
