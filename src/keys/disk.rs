//! The last good JWKS of each remote issuer, kept on disk so a gateway that
//! restarts while its identity provider is down still has keys. Files are
//! written atomically (temporary file, fsync, rename) and private (0600 in a
//! 0700 directory): whoever can write this directory can choose our keys.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Serialize, Deserialize)]
pub struct CachedJwks {
    /// The configured `iss`, so a file can't be reused for another issuer.
    pub issuer: String,
    pub jwks_uri: String,
    /// Unix seconds of the successful fetch.
    pub fetched_at: i64,
    pub jwks: Value,
}

#[derive(Debug, Clone)]
pub struct DiskCache {
    dir: PathBuf,
}

impl DiskCache {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn path(&self, issuer_name: &str) -> PathBuf {
        self.dir
            .join(format!("{}.jwks.json", file_safe(issuer_name)))
    }

    /// The directory the copies are kept in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cached copy for an issuer, if there is one and it belongs to it.
    pub fn load(&self, issuer_name: &str, issuer: &str) -> Result<Option<CachedJwks>, String> {
        let path = self.path(issuer_name);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let cached: CachedJwks = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a jwtgate key cache: {e}", path.display()))?;
        if cached.issuer != issuer {
            return Err(format!(
                "{} belongs to issuer {:?}, not {issuer:?}; ignored",
                path.display(),
                cached.issuer
            ));
        }
        Ok(Some(cached))
    }

    pub fn store(&self, issuer_name: &str, entry: &CachedJwks) -> Result<(), String> {
        let bytes = serde_json::to_vec_pretty(entry).expect("JSON values serialize");
        self.write(&self.path(issuer_name), &bytes)
    }

    /// Writes `bytes` to `path` (in this cache's directory) atomically and
    /// privately.
    pub fn write(&self, path: &Path, bytes: &[u8]) -> Result<(), String> {
        create_private_dir(&self.dir)?;
        let temporary = path.with_extension(format!("tmp.{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut file = private_file(&temporary)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            std::fs::rename(&temporary, path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&temporary);
            format!("cannot write {}: {e}", path.display())
        })
    }
}

/// A config name as a boring file name.
pub fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

#[cfg(unix)]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::create(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_and_refuses_another_issuers_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::new(dir.path().join("keys"));
        assert!(cache.load("corp", "https://a").unwrap().is_none());
        let entry = CachedJwks {
            issuer: "https://a".into(),
            jwks_uri: "https://a/jwks".into(),
            fetched_at: 42,
            jwks: json!({"keys": []}),
        };
        cache.store("corp", &entry).unwrap();
        let loaded = cache.load("corp", "https://a").unwrap().unwrap();
        assert_eq!(loaded.fetched_at, 42);
        assert!(cache.load("corp", "https://b").is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("keys/corp.jwks.json"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("keys"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains("tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
