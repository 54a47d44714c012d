//! `issuers[].status_list`: each issuer's Token Status Lists, checked
//! with its own key store. A reload that leaves an issuer's lists the same
//! keeps those already fetched.

use std::sync::Arc;

use crate::auth::IssuerVerifier;
use crate::config::ConfigError;
use crate::config::schema::{AsWritten, IssuerConfig, StatusListConfig, StatusListMode};
use crate::keys::fetch::{FetchSettings, scheme_allowed};
use crate::state::status_list::{StatusListSettings, StatusLists};

use super::Context;

/// Each issuer's lists, by the issuer's place in `issuers`; `None`: its
/// tokens' `status` claims are not looked at.
pub(super) fn compile(
    configs: &[IssuerConfig],
    issuers: &[Arc<IssuerVerifier>],
    cx: &mut Context<'_>,
) -> Result<Vec<Option<Arc<StatusLists>>>, ConfigError> {
    let mut lists = Vec::with_capacity(configs.len());
    for (index, (config, verifier)) in configs.iter().zip(issuers).enumerate() {
        let Some(status_list) = &config.status_list else {
            lists.push(None);
            continue;
        };
        if status_list.mode == StatusListMode::Off {
            lists.push(None);
            continue;
        }
        let settings = settings(config, status_list).map_err(|message| {
            let name = &config.name;
            cx.error_in(
                &format!("issuers[{index}].status_list"),
                name,
                &message,
                format!("issuer {:?}: status_list: {message}", name.value),
            )
        })?;
        let compiled = StatusLists::new(
            verifier.name.clone(),
            verifier.issuer.clone(),
            verifier.algorithms,
            verifier.keys.clone(),
            settings,
        );
        let kept = cx.running.status_lists(&compiled);
        lists.push(Some(kept.unwrap_or_else(|| Arc::new(compiled))));
    }
    Ok(lists)
}

fn settings(
    issuer: &IssuerConfig,
    config: &StatusListConfig,
) -> Result<StatusListSettings, String> {
    if config.allowed_uris.is_empty() {
        return Err("allowed_uris must list the URI prefixes lists may be fetched from".into());
    }
    for uri in &config.allowed_uris {
        if !scheme_allowed(uri, config.allow_http) {
            return Err(format!(
                "allowed_uris: {uri:?} must be an https:// URL (allow_http: true permits http:// for loopback tests)"
            ));
        }
    }
    if config.min_refresh > config.max_refresh {
        return Err(format!(
            "min_refresh ({}) must not exceed max_refresh ({})",
            AsWritten(config.min_refresh),
            AsWritten(config.max_refresh)
        ));
    }
    if config.max_lists == 0 || config.max_bytes < 1024 || config.max_decompressed_bytes == 0 {
        return Err(
            "max_lists and max_decompressed_bytes must be positive, max_bytes at least 1024".into(),
        );
    }
    let settings = StatusListSettings {
        mode: config.mode,
        allowed_uris: config.allowed_uris.clone(),
        prefetch: config.prefetch.clone(),
        max_lists: config.max_lists,
        max_age: config.max_age,
        min_refresh: config.min_refresh,
        max_refresh: config.max_refresh,
        max_decompressed_bytes: config.max_decompressed_bytes,
        fetch: FetchSettings {
            connect_timeout: issuer.fetch.connect_timeout,
            timeout: issuer.fetch.timeout,
            max_bytes: config.max_bytes,
            allow_http: config.allow_http,
        },
    };
    if let Some(uri) = config.prefetch.iter().find(|uri| !settings.allows(uri)) {
        return Err(format!("prefetch: {uri:?} is not under allowed_uris"));
    }
    if config.prefetch.len() > config.max_lists {
        return Err("prefetch lists more URIs than max_lists".into());
    }
    Ok(settings)
}
