//! What compiling a config reads besides the config text: files (keys,
//! certificates, secrets), environment variables and host names. It is
//! passed in, so compiling can be tested against a made-up machine, and
//! nothing under the assembler reads files or the environment on its own.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

pub use crate::config::resolve_path;

pub trait Sources {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    fn var(&self, name: &str) -> Option<String>;
    /// `host:port` to addresses, as a listener binding it resolves it.
    fn resolve(&self, addr: &str) -> io::Result<Vec<SocketAddr>>;
}

/// The machine jwtgate runs on.
pub struct System;

impl Sources for System {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn resolve(&self, addr: &str) -> io::Result<Vec<SocketAddr>> {
        addr.to_socket_addrs().map(Iterator::collect)
    }
}

/// This machine, with the files of another one laid out under `root`: the
/// absolute paths a config names (where a pod mounts its Secrets and
/// certificates) are read under `root`, while the config file and the files
/// it names relative to itself (`config_dir`) are read where they are. So a
/// config rendered from a ConfigMap is checked on a laptop against copies of
/// the files its pod would see.
pub struct Rooted {
    pub root: PathBuf,
    pub config_dir: PathBuf,
}

impl Rooted {
    /// Where `path` is read from. A config given by a relative path makes
    /// its relative names relative too; by an absolute one, they become
    /// absolute under `config_dir` and stay there.
    pub fn locate(&self, path: &Path) -> PathBuf {
        let beside_config = self.config_dir.is_absolute() && path.starts_with(&self.config_dir);
        match path.strip_prefix("/") {
            Ok(inside) if !beside_config => self.root.join(inside),
            _ => path.to_path_buf(),
        }
    }
}

impl Sources for Rooted {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let located = self.locate(path);
        std::fs::read(&located).map_err(|e| {
            if located == path {
                e
            } else {
                io::Error::new(e.kind(), format!("{} under --root: {e}", located.display()))
            }
        })
    }

    fn var(&self, name: &str) -> Option<String> {
        System.var(name)
    }

    fn resolve(&self, addr: &str) -> io::Result<Vec<SocketAddr>> {
        System.resolve(addr)
    }
}

/// A made-up machine: the files and variables given, and host names that
/// are IP addresses or `localhost`.
#[derive(Debug, Default, Clone)]
pub struct Fixed {
    pub files: HashMap<PathBuf, Vec<u8>>,
    pub vars: HashMap<String, String>,
}

impl Fixed {
    pub fn file(mut self, path: impl Into<PathBuf>, contents: impl Into<Vec<u8>>) -> Self {
        self.files.insert(path.into(), contents.into());
        self
    }

    pub fn var(mut self, name: &str, value: &str) -> Self {
        self.vars.insert(name.into(), value.into());
        self
    }
}

impl Sources for Fixed {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }

    fn resolve(&self, addr: &str) -> io::Result<Vec<SocketAddr>> {
        let localhost = addr
            .strip_prefix("localhost:")
            .map(|port| format!("127.0.0.1:{port}"));
        localhost
            .as_deref()
            .unwrap_or(addr)
            .parse()
            .map(|addr| vec![addr])
            .map_err(|_| io::Error::new(io::ErrorKind::NotFound, "unknown host"))
    }
}

/// A secret named by an environment variable or a file, never written in
/// the config itself (where it would end up in version control). Trailing
/// line endings in a file are not part of the secret.
pub enum SecretSource<'a> {
    Env(&'a str),
    File(PathBuf),
}

impl SecretSource<'_> {
    /// Where the secret comes from, in words: what a description of the
    /// settings may show instead of the secret.
    pub fn describe(&self) -> String {
        match self {
            Self::Env(var) => format!("env {var}"),
            Self::File(path) => format!("file {}", path.display()),
        }
    }
}

/// Why a secret could not be read; the caller names the setting.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    Unset(String),
    #[error("cannot read {}: {source}", path.display())]
    Unreadable { path: PathBuf, source: io::Error },
}

impl dyn Sources + '_ {
    /// The secret's bytes, from its variable or file.
    pub fn secret(&self, source: &SecretSource<'_>) -> Result<Vec<u8>, SecretError> {
        match source {
            SecretSource::Env(var) => self
                .var(var)
                .map(String::into_bytes)
                .ok_or_else(|| SecretError::Unset(var.to_string())),
            SecretSource::File(path) => {
                let bytes = self.read(path).map_err(|source| SecretError::Unreadable {
                    path: path.clone(),
                    source,
                })?;
                Ok(crate::keys::secret_file_bytes(&bytes).to_vec())
            }
        }
    }

    /// [`Self::secret`] as text, for secrets that are passwords or tokens.
    pub fn secret_text(&self, source: &SecretSource<'_>) -> Result<String, SecretError> {
        let bytes = self.secret(source)?;
        String::from_utf8(bytes).map_err(|_| match source {
            SecretSource::Env(var) => SecretError::Unset(var.to_string()),
            SecretSource::File(path) => SecretError::Unreadable {
                path: path.clone(),
                source: io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooted_reads_absolute_names_under_the_root_and_the_config_dir_in_place() {
        let rooted = |config_dir: &str| Rooted {
            root: PathBuf::from("/tmp/pod"),
            config_dir: PathBuf::from(config_dir),
        };
        for config_dir in ["", "rendered", "/home/me/rendered"] {
            assert_eq!(
                rooted(config_dir).locate(Path::new("/etc/jwtgate/secrets/hs256.secret")),
                Path::new("/tmp/pod/etc/jwtgate/secrets/hs256.secret"),
                "config in {config_dir:?}"
            );
        }
        assert_eq!(
            rooted("rendered").locate(Path::new("rendered/jwks.json")),
            Path::new("rendered/jwks.json")
        );
        assert_eq!(
            rooted("/home/me/rendered").locate(Path::new("/home/me/rendered/jwks.json")),
            Path::new("/home/me/rendered/jwks.json")
        );
    }
}
