//! App secrets (PROTOCOL.md §9), distinct from the token secret: the key of private-channel
//! signatures and of webhook signatures.
//!
//! Each app's secret lives in the data directory, `app-secrets/<app>` (mode 0600, 32 random
//! bytes as hex; an app id with characters other than `A-Z a-z 0-9 _ -` is stored as `%<hex of
//! the id>`), created on first use: `herald serve` creates `default`'s at start, and
//! `herald secret show --app X` any other's. A server reads them all when it starts, so a
//! rotated secret takes effect at the next start. `--app-secret-file` / `HERALD_APP_SECRET`
//! instead give one secret for every app, so several nodes share it without a shared disk.
//! The key is the secret's text (trimmed) as UTF-8 bytes, as `herald secret show` prints it.

use crate::auth::{load_or_create_secret_at, secret_text};
use herald_engine::AppSecrets;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The directory of the app secrets inside a data directory.
pub fn dir(data: &Path) -> PathBuf {
    data.join("app-secrets")
}

/// The file name of `app`'s secret: the id itself when it is made of safe characters, else
/// `%` and its hex (`%` is not a safe character, so the two forms never collide).
pub fn file_name(app: &str) -> String {
    let safe = !app.is_empty() && app.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if safe { app.to_owned() } else { format!("%{}", hex::encode(app)) }
}

fn app_of(file_name: &str) -> Option<String> {
    match file_name.strip_prefix('%') {
        Some(h) => hex::decode(h).ok().and_then(|b| String::from_utf8(b).ok()),
        None => Some(file_name.to_owned()),
    }
}

/// The path of `app`'s secret.
pub fn path(data: &Path, app: &str) -> PathBuf {
    dir(data).join(file_name(app))
}

/// `app`'s secret from the data directory, created on first use.
pub fn load_or_create(data: &Path, app: &str) -> std::io::Result<Vec<u8>> {
    std::fs::create_dir_all(dir(data))?;
    load_or_create_secret_at(&path(data, app))
}

/// Replaces `app`'s secret with a fresh one (temporary file, fsync, rename) and returns it.
pub fn rotate(data: &Path, app: &str) -> std::io::Result<Vec<u8>> {
    std::fs::create_dir_all(dir(data))?;
    let target = path(data, app);
    let tmp = dir(data).join(format!(".{}.new", file_name(app)));
    let mut bytes = [0u8; 32];
    rand::Rng::fill(&mut rand::rngs::OsRng, &mut bytes);
    let text = hex::encode(bytes);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &target)?;
    if let Ok(d) = std::fs::File::open(dir(data)) {
        let _ = d.sync_all();
    }
    Ok(text.into_bytes())
}

/// The secret of `app` as a node would use it: `secret` (HERALD_APP_SECRET), else the file
/// `secret_file`, else the data directory's (created on first use). What `herald secret show`
/// prints.
pub fn resolve_one(
    secret: Option<&str>,
    secret_file: Option<&Path>,
    data: &Path,
    app: &str,
) -> std::io::Result<Vec<u8>> {
    match (secret, secret_file) {
        (Some(text), _) => secret_text(text, &"HERALD_APP_SECRET"),
        (None, Some(path)) => crate::auth::read_secret_file(path),
        (None, None) => load_or_create(data, app),
    }
}

/// Every app secret a node starts with: one for every app from `secret` or `secret_file`, or
/// else each file of the data directory's `app-secrets/` (the `default` app's created first).
pub fn resolve_all(
    secret: Option<&str>,
    secret_file: Option<&Path>,
    data: &Path,
) -> std::io::Result<AppSecrets> {
    if secret.is_some() || secret_file.is_some() {
        return resolve_one(secret, secret_file, data, "default").map(AppSecrets::for_every_app);
    }
    let mut map = HashMap::new();
    map.insert("default".to_owned(), load_or_create(data, "default")?);
    for entry in std::fs::read_dir(dir(data))? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || name == "default" {
            continue;
        }
        let Some(app) = app_of(name) else { continue };
        map.insert(app, crate::auth::read_secret_file(&entry.path())?);
    }
    Ok(AppSecrets::new(map))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn created_once_0600_rotated_and_loaded_per_app() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path(), "default").unwrap();
        assert_eq!(a, load_or_create(dir.path(), "default").unwrap());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path(dir.path(), "default")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let other = load_or_create(dir.path(), "acme corp").unwrap();
        assert_ne!(a, other);
        let all = resolve_all(None, None, dir.path()).unwrap();
        assert_eq!(all.get("default"), Some(&a[..]));
        assert_eq!(all.get("acme corp"), Some(&other[..]));
        assert_eq!(all.get("nobody"), None);
        let b = rotate(dir.path(), "default").unwrap();
        assert_ne!(a, b);
        assert_eq!(load_or_create(dir.path(), "default").unwrap(), b);
        // The token secret is another file entirely.
        assert_ne!(crate::auth::load_or_create_secret(dir.path()).unwrap(), b);
        let shared = resolve_all(Some("0123456789abcdef0123456789abcdef"), None, dir.path()).unwrap();
        assert_eq!(shared.get("anything"), Some(&b"0123456789abcdef0123456789abcdef"[..]));
        assert!(resolve_all(Some("short"), None, dir.path()).is_err());
    }
}
