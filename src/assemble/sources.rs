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
