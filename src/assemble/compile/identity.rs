//! `identity_tokens`: the signing key and the published ones, read (from
//! files or the environment) on every reload, so rotating is a reload.

use std::sync::Arc;

use crate::config::ConfigError;
use crate::config::schema::{IdentityKeyConfig, IdentityTokensConfig, PublishOn};
use crate::identity::IdentityTokens;
use crate::jose::KeyFamily;
use crate::mint::{Signer, default_algorithm, key_family};

use super::Context;

pub(super) fn compile(
    config: Option<&IdentityTokensConfig>,
    cx: &Context<'_>,
) -> Result<Option<Arc<IdentityTokens>>, ConfigError> {
    let Some(config) = config else {
        return Ok(None);
    };
    let compiled = tokens(config, cx)
        .map_err(|message| cx.error(None, format!("identity_tokens: {message}")))?;
    Ok(Some(Arc::new(compiled)))
}

fn tokens(config: &IdentityTokensConfig, cx: &Context<'_>) -> Result<IdentityTokens, String> {
    if config.issuer.is_empty() {
        return Err("issuer must not be empty".into());
    }
    if config.keys.is_empty() {
        return Err("keys must list at least one key (the first signs)".into());
    }
    let mut keys = Vec::with_capacity(config.keys.len());
    for key in &config.keys {
        if key.kid.is_empty() {
            return Err("every key needs a kid".into());
        }
        if keys.iter().any(|(kid, _)| kid == &key.kid) {
            return Err(format!("kid {:?} is given twice", key.kid));
        }
        let signer = signer(key, cx).map_err(|e| format!("key {:?}: {e}", key.kid))?;
        keys.push((key.kid.clone(), signer));
    }
    let on_proxy = config.publish_on == PublishOn::AdminAndProxy;
    IdentityTokens::published(config.issuer.clone(), keys, on_proxy)
}

/// A private key, signing with what its kind signs with: ES256 (P-256),
/// ES384 (P-384), EdDSA (Ed25519) or RS256.
fn signer(key: &IdentityKeyConfig, cx: &Context<'_>) -> Result<Signer, String> {
    let (bytes, from) = match (&key.file, &key.env) {
        (Some(file), None) => {
            let path = cx.file(file);
            let bytes = cx
                .sources
                .read(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            (bytes, path.display().to_string())
        }
        (None, Some(var)) => {
            let text = cx
                .sources
                .var(var)
                .ok_or_else(|| format!("environment variable {var} is not set"))?;
            (text.into_bytes(), format!("environment variable {var}"))
        }
        _ => return Err("give file or env, one of them".into()),
    };
    let family = key_family(&bytes).ok_or_else(|| {
        format!("{from} is not a PEM private key (EC P-256/P-384, Ed25519 or RSA)")
    })?;
    if family == KeyFamily::Hmac {
        return Err(format!("{from}: an HMAC secret can't be published"));
    }
    Signer::from_bytes(&bytes, default_algorithm(family))
        .map_err(|(family, detail)| format!("{from}: {family}: {detail}"))
}
