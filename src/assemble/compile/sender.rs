//! `auth.sender_constraint` and `auth.dpop` compiled into a route's
//! [`SenderPolicy`]; the nonce secret is read here and kept only inside
//! the nonce source.

use std::path::Path;
use std::time::Duration;

use crate::assemble::sources::{SecretSource, Sources};
use crate::auth::dpop::{self, IatWindow, NonceSource};
use crate::config::schema::{AuthConfig, DpopNonceConfig};
use crate::pipeline::sender::SenderPolicy;

/// The shortest secret nonces may be made with.
const MIN_NONCE_SECRET_BYTES: usize = 16;

pub(super) fn compile(
    auth: &AuthConfig,
    base_dir: &Path,
    sources: &dyn Sources,
) -> Result<SenderPolicy, String> {
    let config = &auth.dpop;
    let algorithms = dpop::proof_algorithms(&config.algorithms).map_err(|refused| {
        format!(
            "auth.dpop.algorithms: {refused:?} can't sign a DPoP proof; use ES256, EdDSA, PS256 or RS256"
        )
    })?;
    if config.algorithms.is_empty() {
        return Err("auth.dpop.algorithms: list at least one algorithm".into());
    }
    let window = &config.iat_window;
    if window.past < Duration::from_secs(1) {
        return Err("auth.dpop.iat_window.past must be at least 1s".into());
    }
    let window = IatWindow {
        past_secs: seconds(window.past),
        future_secs: seconds(window.future),
    };
    let nonces = config
        .nonce
        .as_ref()
        .map(|nonce| nonce_source(nonce, base_dir, sources))
        .transpose()?;
    let names: Vec<String> = config
        .algorithms
        .iter()
        .map(|alg| format!("{alg:?}"))
        .collect();
    Ok(SenderPolicy {
        constraint: auth.sender_constraint,
        algorithms,
        window,
        nonces,
        algs: format!("algs=\"{}\"", names.join(" ")),
    })
}

fn nonce_source(
    config: &DpopNonceConfig,
    base_dir: &Path,
    sources: &dyn Sources,
) -> Result<NonceSource, String> {
    if config.rotate_every < Duration::from_secs(1) {
        return Err("auth.dpop.nonce.rotate_every must be at least 1s".into());
    }
    let Some(secret) = &config.secret else {
        return Ok(NonceSource::new(config.rotate_every));
    };
    let source = match (&secret.env, &secret.file) {
        (Some(var), None) => SecretSource::Env(var),
        (None, Some(file)) => SecretSource::File(base_dir.join(file)),
        _ => return Err("auth.dpop.nonce.secret: give exactly one of env or file".into()),
    };
    let value = sources
        .secret(&source)
        .map_err(|e| format!("auth.dpop.nonce.secret: {e}"))?;
    if value.len() < MIN_NONCE_SECRET_BYTES {
        return Err(format!(
            "auth.dpop.nonce.secret: it is {} bytes; use at least {MIN_NONCE_SECRET_BYTES}",
            value.len()
        ));
    }
    Ok(NonceSource::with_secret(&value, config.rotate_every))
}

fn seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}
