//! `issuers`: each one's verifier (names resolved, keys parsed into
//! ready-to-verify form), and for remote issuers how their keys are
//! fetched and kept fresh.

use std::sync::Arc;

use crate::auth::IssuerVerifier;
use crate::auth::header::normalize_typ;
use crate::auth::verify::{TokenTypeRule, VerifierId};
use crate::config::ConfigError;
use crate::config::schema::{AsWritten, IssuerConfig};
use crate::jose::{AlgorithmSet, KeyFamily};
use crate::keys::fetch::{FetchSettings, Locator, scheme_allowed};
use crate::keys::remote::{RefreshPolicy, RemoteIdentity, RemoteSource};
use crate::keys::{self, KeySet, KeyStore, VerifyingKey};

use super::Context;
use crate::assemble::sources::SecretSource;

/// Every issuer's verifier, in config order, and the remote ones' sources.
pub(super) fn compile(
    configs: &[IssuerConfig],
    cx: &mut Context<'_>,
) -> Result<(Vec<Arc<IssuerVerifier>>, Vec<RemoteSource>), ConfigError> {
    let mut issuers = Vec::with_capacity(configs.len());
    let mut remote = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (index, issuer) in configs.iter().enumerate() {
        let name = issuer.name.value.as_str();
        if !names.insert(name) {
            return Err(cx.error(
                Some(&issuer.name),
                format!("issuer {name:?} is defined twice"),
            ));
        }
        let (verifier, source) = compile_issuer(issuer, cx).map_err(|message| {
            cx.error_in(
                &format!("issuers[{index}]"),
                &issuer.name,
                &message,
                format!("issuer {name:?}: {message}"),
            )
        })?;
        remote.extend(source);
        issuers.push(verifier);
    }
    Ok((issuers, remote))
}

/// One issuer: its verifier, and for a remote issuer how its keys are
/// fetched.
fn compile_issuer(
    issuer: &IssuerConfig,
    cx: &mut Context<'_>,
) -> Result<(Arc<IssuerVerifier>, Option<RemoteSource>), String> {
    let algorithms = check(issuer)?;
    let locator = match (&issuer.jwks_uri, issuer.discovery) {
        (Some(uri), _) => Some(Locator::JwksUri(uri.clone())),
        (None, true) => Some(Locator::Discovery {
            issuer: issuer.issuer.clone(),
        }),
        (None, false) => None,
    };
    if let Some(locator) = locator {
        let (fetch, refresh) = remote_settings(issuer, &locator)?;
        let refetch = (
            issuer.refresh.unknown_kid_interval,
            issuer.refresh.unknown_kid_wait,
        );
        let identity = RemoteIdentity {
            name: issuer.name.value.clone(),
            issuer: issuer.issuer.clone(),
            algorithms,
            locator,
            fetch,
            refresh,
            refetch: Some(refetch),
        };
        let keys = cx
            .running
            .key_store(&identity)
            .unwrap_or_else(|| Arc::new(KeyStore::remote(refetch.0, refetch.1)));
        let verifier = Arc::new(verifier(issuer, algorithms, keys.clone()));
        let source = RemoteSource {
            name: identity.name,
            issuer: identity.issuer,
            algorithms,
            keys,
            locator: identity.locator,
            fetch: identity.fetch,
            refresh: identity.refresh,
        };
        return Ok((verifier, Some(source)));
    }

    // An issuer that only introspects verifies no JWT: an empty key set,
    // and no algorithm a JWT could select it by.
    let keys = if algorithms.is_empty() {
        KeySet::default()
    } else {
        local_keys(issuer, algorithms, cx)?
    };
    let verifier = verifier(issuer, algorithms, Arc::new(KeyStore::fixed(keys)));
    Ok((Arc::new(verifier), None))
}

/// The keys of an issuer whose keys are in the config or beside it: read
/// afresh on every reload, so a rotated key file is picked up.
fn local_keys(
    issuer: &IssuerConfig,
    algorithms: AlgorithmSet,
    cx: &mut Context<'_>,
) -> Result<KeySet, String> {
    if issuer.hmac_secret_env.is_some() || issuer.hmac_secret_file.is_some() {
        let secret = read_secret(issuer, cx)?;
        let key = VerifyingKey::hmac(&secret, algorithms).map_err(|e| e.0)?;
        return Ok(KeySet { keys: vec![key] });
    }
    let document = match (&issuer.jwks_file, &issuer.jwks) {
        (Some(file), _) => {
            let file = cx.file(file);
            let text = cx
                .sources
                .read(&file)
                .map_err(|e| format!("cannot read jwks_file {}: {e}", file.display()))?;
            serde_json::from_slice(&text)
                .map_err(|e| format!("jwks_file {} is not JSON: {e}", file.display()))?
        }
        (None, Some(inline)) => inline.clone(),
        (None, None) => unreachable!("one key source is present"),
    };
    let parsed = keys::jwks::parse(&document, algorithms).map_err(|e| e.0)?;
    // A local key set is the operator's own: unacceptable key material in
    // it is a mistake to fix, not something to skip quietly.
    if let Some(refused) = parsed.skipped.iter().find(|s| s.refused) {
        return Err(format!(
            "key {} refused: {}",
            refused.kid.as_deref().unwrap_or("(no kid)"),
            refused.why
        ));
    }
    for skipped in &parsed.skipped {
        cx.warnings.push(format!(
            "issuer {:?}: key {} skipped: {}",
            issuer.name.value,
            skipped
                .kid
                .as_deref()
                .map_or("(no kid)".into(), |k| format!("{k:?}")),
            skipped.why
        ));
    }
    if parsed.keys.is_empty() {
        let reasons: Vec<String> = parsed
            .skipped
            .iter()
            .map(|s| format!("{}: {}", s.kid.as_deref().unwrap_or("(no kid)"), s.why))
            .collect();
        return Err(if reasons.is_empty() {
            "the JWKS has no keys".into()
        } else {
            format!("the JWKS has no usable key ({})", reasons.join("; "))
        });
    }
    Ok(parsed.keys)
}

/// The issuer's algorithms, once its settings are known to fit together.
fn check(issuer: &IssuerConfig) -> Result<AlgorithmSet, String> {
    if issuer.issuer.is_empty() {
        return Err("issuer (the exact iss value) must not be empty".into());
    }
    let algorithms: AlgorithmSet = issuer.algorithms.iter().copied().collect();
    if issuer.audiences.is_empty() && !issuer.skip_audience_check {
        return Err(
            "audiences is empty: list the audiences this gateway accepts, or set skip_audience_check: true to accept any"
                .into(),
        );
    }

    let sources = [
        issuer.jwks_file.is_some(),
        issuer.jwks.is_some(),
        issuer.hmac_secret_env.is_some(),
        issuer.hmac_secret_file.is_some(),
        issuer.discovery,
        issuer.jwks_uri.is_some(),
    ];
    match (
        sources.iter().filter(|s| **s).count(),
        &issuer.introspection,
    ) {
        (1, _) if algorithms.is_empty() => {
            return Err("algorithms must list at least one algorithm".into());
        }
        (1, _) => {}
        (0, Some(introspection)) if introspection.jwt_response => {
            return Err(
                "introspection.jwt_response: the issuer's signed answers are verified with its keys; give a key source (discovery: true, jwks_uri, ...) and algorithms"
                    .into(),
            );
        }
        (0, Some(_)) if !algorithms.is_empty() => {
            return Err(
                "algorithms are listed, but no key source: give one (discovery: true, jwks_uri, ...), or drop algorithms for an issuer that only introspects"
                    .into(),
            );
        }
        (0, Some(_)) => {}
        _ => {
            return Err(
                "give exactly one key source: discovery: true, jwks_uri, jwks_file, jwks, hmac_secret_env or hmac_secret_file (an issuer with introspection may have none)"
                    .into(),
            );
        }
    }
    let token_type = &issuer.token_type;
    if token_type.claim.is_some() == token_type.values.is_empty() {
        return Err(format!(
            "token_type.claim and token_type.values go together; claim is {}, values has {}",
            token_type
                .claim
                .as_deref()
                .map_or_else(|| "not set".to_string(), |c| format!("{c:?}")),
            token_type.values.len()
        ));
    }
    if token_type.typ.iter().any(|t| t.trim().is_empty()) {
        return Err("token_type.typ values must not be empty".into());
    }
    let uses_hmac = issuer.hmac_secret_env.is_some() || issuer.hmac_secret_file.is_some();
    // An allow-list mixing secret and public-key algorithms is how
    // algorithm-confusion attacks start; refuse it outright.
    for alg in algorithms.iter() {
        if (alg.family() == KeyFamily::Hmac) != uses_hmac {
            return Err(if uses_hmac {
                format!(
                    "{alg} cannot be verified with an HMAC secret; list only HS256, HS384 or HS512"
                )
            } else {
                format!(
                    "{alg} needs an HMAC secret (hmac_secret_env or hmac_secret_file), not a JWKS"
                )
            });
        }
    }
    Ok(algorithms)
}

fn verifier(
    issuer: &IssuerConfig,
    algorithms: AlgorithmSet,
    keys: Arc<KeyStore>,
) -> IssuerVerifier {
    IssuerVerifier {
        id: VerifierId::fresh(),
        name: issuer.name.value.clone(),
        issuer: issuer.issuer.clone(),
        algorithms,
        audiences: issuer.audiences.clone(),
        check_audience: !issuer.skip_audience_check,
        leeway_secs: issuer.leeway.as_secs() as i64,
        require_exp: issuer.require_exp,
        max_lifetime_secs: issuer.max_lifetime.map(|d| d.as_secs() as i64),
        require_sub: issuer.require_sub,
        require_jti: issuer.require_jti,
        token_type: TokenTypeRule {
            typ: issuer
                .token_type
                .typ
                .iter()
                .map(|t| normalize_typ(t))
                .collect(),
            claim: issuer.token_type.claim.clone(),
            claim_values: issuer.token_type.values.clone(),
        },
        scope_claim: issuer.scope_claim.clone(),
        keys,
        // Without a key source there are no keys to wait for.
        required: issuer.required && !algorithms.is_empty(),
    }
}

/// How a remote issuer's keys are fetched and kept fresh, checked.
fn remote_settings(
    issuer: &IssuerConfig,
    locator: &Locator,
) -> Result<(FetchSettings, RefreshPolicy), String> {
    let fetch = &issuer.fetch;
    let url = match locator {
        Locator::JwksUri(uri) => uri.as_str(),
        Locator::Discovery { issuer } => issuer.as_str(),
    };
    if !scheme_allowed(url, fetch.allow_http) {
        return Err(format!(
            "{url:?} must be an https:// URL (fetch.allow_http: true permits http:// for loopback tests)"
        ));
    }
    let refresh = &issuer.refresh;
    if refresh.min_refresh > refresh.max_refresh {
        return Err(format!(
            "refresh.min_refresh ({}) must not exceed refresh.max_refresh ({})",
            AsWritten(refresh.min_refresh),
            AsWritten(refresh.max_refresh)
        ));
    }
    if fetch.max_bytes < 1024 {
        return Err(format!(
            "fetch.max_bytes is {}; it must be at least 1024",
            fetch.max_bytes
        ));
    }
    Ok((
        FetchSettings {
            connect_timeout: fetch.connect_timeout,
            timeout: fetch.timeout,
            max_bytes: fetch.max_bytes,
            allow_http: fetch.allow_http,
        },
        RefreshPolicy {
            min_refresh: refresh.min_refresh,
            max_refresh: refresh.max_refresh,
            max_stale: refresh.max_stale,
        },
    ))
}

/// An HMAC secret, from the environment or a file, never inline in YAML
/// (where it would end up in version control).
fn read_secret(issuer: &IssuerConfig, cx: &Context<'_>) -> Result<Vec<u8>, String> {
    let source = match (&issuer.hmac_secret_env, &issuer.hmac_secret_file) {
        (Some(var), _) => SecretSource::Env(var),
        (None, Some(file)) => SecretSource::File(cx.file(file)),
        (None, None) => unreachable!("checked: one key source is present"),
    };
    cx.sources.secret(&source).map_err(|e| match e {
        crate::assemble::sources::SecretError::Unset(var) => {
            format!("environment variable {var} (hmac_secret_env) is not set")
        }
        crate::assemble::sources::SecretError::Unreadable { path, source } => {
            format!("cannot read hmac_secret_file {}: {source}", path.display())
        }
    })
}
