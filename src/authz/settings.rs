//! `listen.authz` compiled: restart-only, like every listener.

use std::path::{Path, PathBuf};

use crate::config::schema::{AuthzConvention, AuthzListenConfig};
use crate::state::revocation::settings::sha256;

#[derive(Debug, thiserror::Error)]
pub enum AuthzSettingsError {
    #[error("listen.authz.path_prefix {0:?} must be empty or start with / and not end with /")]
    PathPrefix(String),
    #[error("listen.authz.path_prefix {0:?} is only read with convention: envoy")]
    PrefixWithoutEnvoy(String),
    #[error("listen.authz.shared_secret.header {0:?} is not a valid header name")]
    SecretHeader(String),
    #[error("listen.authz.shared_secret: give exactly one of env or file")]
    SecretSource,
    #[error("listen.authz.shared_secret.env: environment variable {0} is not set")]
    SecretEnv(String),
    #[error("listen.authz.shared_secret.file: cannot read {}: {source}", path.display())]
    SecretFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("listen.authz.shared_secret ({0}) is empty")]
    SecretEmpty(String),
    #[error("listen.authz.grpc_addr {0:?} must be an IP address and port, like 127.0.0.1:9002")]
    GrpcAddr(String),
    #[error("listen.authz.grpc_addr {0:?} is also listen.authz.addr")]
    GrpcAddrShared(String),
}

/// The authorization listener's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthzSettings {
    pub addr: String,
    pub convention: AuthzConvention,
    /// Empty, or `/prefix` without a trailing slash.
    pub path_prefix: String,
    pub secret: Option<SharedSecret>,
    /// Envoy's gRPC `Authorization/Check`, when served.
    pub grpc_addr: Option<std::net::SocketAddr>,
}

/// Kept as a SHA-256 digest: comparing digests of equal length in constant
/// time shows neither the secret's length nor where a guess went wrong.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedSecret {
    pub header: http::HeaderName,
    pub digest: [u8; 32],
}

impl std::fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSecret")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl AuthzSettings {
    /// For a refused reload: what changed, never the secret itself.
    pub fn describe(&self) -> String {
        let convention = self.convention.as_str();
        let mut text = format!("{} ({convention}", self.addr);
        if !self.path_prefix.is_empty() {
            text.push_str(&format!(", path_prefix {}", self.path_prefix));
        }
        if let Some(grpc) = &self.grpc_addr {
            text.push_str(&format!(", grpc {grpc}"));
        }
        if let Some(secret) = &self.secret {
            // A changed secret under the same header must still show as a
            // change; eight bits of its digest tell nothing about it.
            text.push_str(&format!(
                ", shared secret in {} #{:02x}",
                secret.header, secret.digest[0]
            ));
        }
        text.push(')');
        text
    }
}

pub fn compile(
    config: Option<&AuthzListenConfig>,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<AuthzSettings>, AuthzSettingsError> {
    let Some(config) = config else {
        return Ok(None);
    };
    let prefix = &config.path_prefix;
    if !prefix.is_empty() && (!prefix.starts_with('/') || prefix.ends_with('/')) {
        return Err(AuthzSettingsError::PathPrefix(prefix.clone()));
    }
    if !prefix.is_empty() && config.convention != AuthzConvention::Envoy {
        return Err(AuthzSettingsError::PrefixWithoutEnvoy(prefix.clone()));
    }
    let secret = config
        .shared_secret
        .as_ref()
        .map(|secret| {
            let header = http::HeaderName::from_bytes(secret.header.as_bytes())
                .map_err(|_| AuthzSettingsError::SecretHeader(secret.header.clone()))?;
            let (value, source) = match (&secret.env, &secret.file) {
                (Some(var), None) => (
                    env(var).ok_or_else(|| AuthzSettingsError::SecretEnv(var.clone()))?,
                    format!("env {var}"),
                ),
                (None, Some(file)) => {
                    let path = base_dir.join(file);
                    let text = std::fs::read_to_string(&path).map_err(|source| {
                        AuthzSettingsError::SecretFile {
                            path: path.clone(),
                            source,
                        }
                    })?;
                    (
                        text.trim_end_matches(['\r', '\n']).to_string(),
                        format!("file {}", path.display()),
                    )
                }
                _ => return Err(AuthzSettingsError::SecretSource),
            };
            if value.is_empty() {
                return Err(AuthzSettingsError::SecretEmpty(source));
            }
            Ok(SharedSecret {
                header,
                digest: sha256(value.as_bytes()),
            })
        })
        .transpose()?;
    let grpc_addr = config
        .grpc_addr
        .as_ref()
        .map(|addr| {
            let parsed: std::net::SocketAddr = addr
                .parse()
                .map_err(|_| AuthzSettingsError::GrpcAddr(addr.clone()))?;
            if config.addr.parse() == Ok(parsed) {
                return Err(AuthzSettingsError::GrpcAddrShared(addr.clone()));
            }
            Ok(parsed)
        })
        .transpose()?;
    Ok(Some(AuthzSettings {
        addr: config.addr.clone(),
        convention: config.convention,
        path_prefix: prefix.clone(),
        secret,
        grpc_addr,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_yaml(yaml: &str) -> Result<Option<AuthzSettings>, AuthzSettingsError> {
        let config: AuthzListenConfig = serde_saphyr::from_str(yaml).unwrap();
        compile(Some(&config), Path::new("."), &|var| {
            (var == "AUTHZ_SECRET").then(|| "s3cret".to_string())
        })
    }

    #[test]
    fn a_secret_comes_from_env_and_is_kept_as_a_digest() {
        let settings = compile_yaml("addr: 127.0.0.1:1\nshared_secret: { env: AUTHZ_SECRET }")
            .unwrap()
            .unwrap();
        let secret = settings.secret.unwrap();
        assert_eq!(secret.header.as_str(), "x-jwtgate-authz-secret");
        assert_eq!(secret.digest, sha256(b"s3cret"));
        assert!(!format!("{secret:?}").contains("s3cret"));
    }

    #[test]
    fn bad_settings_name_the_field() {
        let cases = [
            (
                "addr: a:1\nshared_secret: { env: NOPE }",
                "listen.authz.shared_secret.env: environment variable NOPE is not set",
            ),
            (
                "addr: a:1\nshared_secret: { env: AUTHZ_SECRET, file: x }",
                "listen.authz.shared_secret: give exactly one of env or file",
            ),
            (
                "addr: a:1\nshared_secret: { header: \"bad header\", env: AUTHZ_SECRET }",
                "listen.authz.shared_secret.header \"bad header\" is not a valid header name",
            ),
            (
                "addr: a:1\nconvention: envoy\npath_prefix: auth/",
                "listen.authz.path_prefix \"auth/\" must be empty or start with / and not end with /",
            ),
            (
                "addr: a:1\nconvention: nginx\npath_prefix: /auth",
                "listen.authz.path_prefix \"/auth\" is only read with convention: envoy",
            ),
            (
                "addr: a:1\ngrpc_addr: localhost:9002",
                "listen.authz.grpc_addr \"localhost:9002\" must be an IP address and port, like 127.0.0.1:9002",
            ),
            (
                "addr: 127.0.0.1:9001\ngrpc_addr: 127.0.0.1:9001",
                "listen.authz.grpc_addr \"127.0.0.1:9001\" is also listen.authz.addr",
            ),
        ];
        for (yaml, message) in cases {
            assert_eq!(
                compile_yaml(yaml).unwrap_err().to_string(),
                message,
                "{yaml}"
            );
        }
    }

    #[test]
    fn the_grpc_address_is_parsed_and_a_change_shows() {
        let without = compile_yaml("addr: 127.0.0.1:1").unwrap().unwrap();
        let with = compile_yaml("addr: 127.0.0.1:1\ngrpc_addr: \"[::1]:9002\"")
            .unwrap()
            .unwrap();
        assert_eq!(with.grpc_addr, Some("[::1]:9002".parse().unwrap()));
        assert_ne!(with, without);
        assert_eq!(with.describe(), "127.0.0.1:1 (forwarded, grpc [::1]:9002)");
    }

    #[test]
    fn a_changed_secret_shows_without_its_value() {
        let a = compile_yaml("addr: a:1\nshared_secret: { env: AUTHZ_SECRET }")
            .unwrap()
            .unwrap();
        let mut b = a.clone();
        b.secret.as_mut().unwrap().digest = sha256(b"other");
        assert_ne!(a.describe(), b.describe());
        assert!(!a.describe().contains("s3cret"));
    }
}
