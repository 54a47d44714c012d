//! `issuers[].introspection`: each introspecting issuer's client, checked
//! and with its secret or key read. A reload that leaves an issuer's
//! introspection settings the same keeps the running introspector, and
//! with it the cached answers.

use std::sync::Arc;

use crate::config::ConfigError;
use crate::config::schema::{ClientAuthMethod, IntrospectionConfig, IssuerConfig};
use crate::introspection::{ClientCredential, IntrospectionSettings, Introspector};
use crate::keys::fetch::{FetchSettings, scheme_allowed};
use crate::mint::{Signer, default_algorithm, key_family};

use super::Context;
use crate::assemble::sources::{SecretError, SecretSource};

/// Each issuer's introspector, by the issuer's place in `issuers`; `None`:
/// its opaque tokens are not introspected.
pub(super) fn compile(
    configs: &[IssuerConfig],
    cx: &mut Context<'_>,
) -> Result<Vec<Option<Arc<Introspector>>>, ConfigError> {
    let mut introspectors = Vec::with_capacity(configs.len());
    for (index, issuer) in configs.iter().enumerate() {
        let Some(config) = &issuer.introspection else {
            introspectors.push(None);
            continue;
        };
        let error = |message: String| {
            let name = &issuer.name;
            cx.error_in(
                &format!("issuers[{index}].introspection"),
                name,
                &message,
                format!("issuer {:?}: introspection: {message}", name.value),
            )
        };
        let settings = settings(issuer, config, cx).map_err(error)?;
        let compiled = Introspector::new(settings).map_err(|e| error(e.to_string()))?;
        let kept = cx.running.introspector(&compiled);
        introspectors.push(Some(kept.unwrap_or_else(|| Arc::new(compiled))));
    }
    Ok(introspectors)
}

fn settings(
    issuer: &IssuerConfig,
    config: &IntrospectionConfig,
    cx: &Context<'_>,
) -> Result<IntrospectionSettings, String> {
    let allow_http = issuer.fetch.allow_http;
    let endpoint = config.endpoint.as_deref().unwrap_or(&issuer.issuer);
    if !scheme_allowed(endpoint, allow_http) {
        return Err(format!(
            "{endpoint:?} must be an https:// URL (fetch.allow_http: true permits http:// for loopback tests)"
        ));
    }
    if config.client_id.is_empty() {
        return Err("client_id must not be empty".into());
    }
    if config.active_ttl.is_zero() || config.timeout.is_zero() || config.max_entries == 0 {
        return Err("active_ttl, timeout and max_entries must be more than zero".into());
    }
    if config.max_bytes < 1024 {
        return Err(format!(
            "max_bytes is {}; it must be at least 1024",
            config.max_bytes
        ));
    }
    Ok(IntrospectionSettings {
        issuer: issuer.issuer.clone(),
        endpoint: config.endpoint.clone(),
        client_id: config.client_id.clone(),
        credential: credential(config, cx)?,
        jwt_response: config.jwt_response,
        active_ttl: config.active_ttl,
        inactive_ttl: config.inactive_ttl,
        max_entries: config.max_entries,
        max_cache_bytes: config.max_cache_bytes,
        fetch: FetchSettings {
            connect_timeout: issuer.fetch.connect_timeout.min(config.timeout),
            timeout: config.timeout,
            max_bytes: config.max_bytes,
            allow_http,
        },
    })
}

/// The secret or the private key `client_auth` needs, read now (and again
/// on every reload, so a rotated one is picked up).
fn credential(config: &IntrospectionConfig, cx: &Context<'_>) -> Result<ClientCredential, String> {
    let secret = match (&config.client_secret_env, &config.client_secret_file) {
        (Some(var), None) => Some(SecretSource::Env(var)),
        (None, Some(file)) => Some(SecretSource::File(cx.file(file))),
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err("give client_secret_env or client_secret_file, not both".into());
        }
    };
    let key = config.private_key_file.as_ref();
    match (config.client_auth, secret, key) {
        (ClientAuthMethod::PrivateKeyJwt, None, Some(file)) => {
            private_key(cx, &cx.file(file), config.private_key_kid.clone())
        }
        (ClientAuthMethod::PrivateKeyJwt, _, _) => Err(
            "client_auth private_key_jwt signs with private_key_file, and takes no client secret"
                .into(),
        ),
        (method, Some(source), None) => {
            let secret = cx.sources.secret(&source).map_err(|e| match e {
                SecretError::Unset(var) => {
                    format!("environment variable {var} (client_secret_env) is not set")
                }
                SecretError::Unreadable { path, source } => {
                    format!("cannot read client_secret_file {}: {source}", path.display())
                }
            })?;
            if secret.is_empty() {
                return Err(format!("the client secret from {} is empty", source.describe()));
            }
            let secret = crate::introspection::Secret(secret);
            Ok(match method {
                ClientAuthMethod::ClientSecretPost => ClientCredential::Post(secret),
                _ => ClientCredential::Basic(secret),
            })
        }
        (_, _, Some(_)) => Err(
            "private_key_file is for client_auth: private_key_jwt; a client secret method takes client_secret_env or client_secret_file"
                .into(),
        ),
        (_, None, None) => Err(
            "the client authenticates with a secret: give client_secret_env or client_secret_file (or client_auth: private_key_jwt with private_key_file)"
                .into(),
        ),
    }
}

/// A PEM private key, signing with the algorithm its kind does.
fn private_key(
    cx: &Context<'_>,
    path: &std::path::Path,
    kid: Option<String>,
) -> Result<ClientCredential, String> {
    let bytes = cx
        .sources
        .read(path)
        .map_err(|e| format!("cannot read private_key_file {}: {e}", path.display()))?;
    let family = key_family(&bytes).ok_or_else(|| {
        format!(
            "private_key_file {} is not a PEM private key (RSA, EC P-256/P-384 or Ed25519)",
            path.display()
        )
    })?;
    let signer =
        Signer::from_bytes(&bytes, default_algorithm(family)).map_err(|(family, detail)| {
            format!("private_key_file {}: {family}: {detail}", path.display())
        })?;
    Ok(ClientCredential::PrivateKey {
        signer: Arc::new(signer),
        kid,
        key_digest: crate::digest::sha256(&bytes),
    })
}
