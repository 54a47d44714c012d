//! `listen.authz` compiled: the front proxies' listener, its convention
//! and shared secret (kept as a digest).

use std::path::{Path, PathBuf};

use crate::assemble::sources::{SecretError, SecretSource, Sources};
use crate::authz::settings::{AuthzSettings, SharedSecret};
use crate::config::schema::{AuthzConvention, AuthzListenConfig};
use crate::digest::sha256;

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

pub(super) fn compile(
    config: Option<&AuthzListenConfig>,
    base_dir: &Path,
    sources: &dyn Sources,
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
            let source = match (&secret.env, &secret.file) {
                (Some(var), None) => SecretSource::Env(var),
                (None, Some(file)) => SecretSource::File(base_dir.join(file)),
                _ => return Err(AuthzSettingsError::SecretSource),
            };
            let value = sources.secret(&source).map_err(|e| match e {
                SecretError::Unset(var) => AuthzSettingsError::SecretEnv(var),
                SecretError::Unreadable { path, source } => {
                    AuthzSettingsError::SecretFile { path, source }
                }
            })?;
            let source = source.describe();
            if value.is_empty() {
                return Err(AuthzSettingsError::SecretEmpty(source));
            }
            Ok(SharedSecret {
                header,
                digest: sha256(&value),
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
    use crate::assemble::sources::Fixed;

    fn compile_yaml(yaml: &str) -> Result<Option<AuthzSettings>, AuthzSettingsError> {
        let config: AuthzListenConfig = serde_saphyr::from_str(yaml).unwrap();
        compile(
            Some(&config),
            Path::new("."),
            &Fixed::default().var("AUTHZ_SECRET", "s3cret"),
        )
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
