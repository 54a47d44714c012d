//! `shared_signals` compiled: each transmitter's names checked, its push
//! secret read and kept as a digest, its poll token read. Events become
//! revocations, so the block needs `revocation`.

use std::path::Path;
use std::time::Duration;

use super::shared::secret_source;
use crate::assemble::sources::Sources;
use crate::config::schema::{Delivery, SharedSignalsConfig, TransmitterConfig};
use crate::digest::sha256;
use crate::keys::fetch::{FetchSettings, scheme_allowed};
use crate::ssf::{
    DeliverySettings, PollSettings, PushSettings, SignalsSettings, TransmitterSettings,
};
use crate::telemetry::metrics::valid_name;

/// Shortest push secret accepted, as for admin tokens.
const MIN_SECRET_BYTES: usize = 16;

pub(super) fn compile(
    config: Option<&SharedSignalsConfig>,
    has_revocation: bool,
    base_dir: &Path,
    sources: &dyn Sources,
) -> Result<Option<SignalsSettings>, String> {
    let Some(config) = config else {
        return Ok(None);
    };
    if !has_revocation {
        return Err(
            "shared_signals: events are applied to the revocation list, and there is no revocation block: add revocation: {} (with dir: to keep them across restarts)".into(),
        );
    }
    let mut transmitters: Vec<TransmitterSettings> = Vec::new();
    for (index, transmitter) in config.transmitters.iter().enumerate() {
        let field = format!("shared_signals.transmitters[{index}]");
        let compiled = transmitter_settings(&field, transmitter, base_dir, sources)?;
        if transmitters.iter().any(|t| t.name == compiled.name) {
            return Err(format!(
                "{field}: the name {:?} is used twice",
                compiled.name
            ));
        }
        transmitters.push(compiled);
    }
    Ok(Some(SignalsSettings { transmitters }))
}

fn transmitter_settings(
    field: &str,
    config: &TransmitterConfig,
    base_dir: &Path,
    sources: &dyn Sources,
) -> Result<TransmitterSettings, String> {
    let name = &config.name;
    if !valid_name(name) {
        return Err(format!(
            "{field}: name {name:?} must be 1-64 letters, digits, '-', '_' or '.'"
        ));
    }
    if !scheme_allowed(&config.issuer, config.allow_http) {
        return Err(format!(
            "{field}.issuer: {:?} must be an https:// URL (allow_http: true for loopback tests only)",
            config.issuer
        ));
    }
    if config.audience.is_empty() {
        return Err(format!("{field}.audience must not be empty"));
    }
    let delivery = match (config.delivery, &config.push, &config.poll) {
        (Delivery::Push, Some(push), None) => {
            let source = secret_source(
                &format!("{field}.push.bearer_secret"),
                &push.bearer_secret,
                base_dir,
            )?;
            let secret = sources
                .secret(&source)
                .map_err(|e| format!("{field}.push.bearer_secret: {e}"))?;
            if secret.len() < MIN_SECRET_BYTES {
                return Err(format!(
                    "{field}.push.bearer_secret is {} bytes; use at least {MIN_SECRET_BYTES}",
                    secret.len()
                ));
            }
            DeliverySettings::Push(PushSettings {
                digest: sha256(&secret),
                source: source.describe(),
            })
        }
        (Delivery::Poll, None, Some(poll)) => {
            let source = secret_source(&format!("{field}.poll.auth"), &poll.auth, base_dir)?;
            let token = sources
                .secret_text(&source)
                .map_err(|e| format!("{field}.poll.auth: {e}"))?;
            if let Some(endpoint) = &poll.endpoint
                && !scheme_allowed(endpoint, config.allow_http)
            {
                return Err(format!(
                    "{field}.poll.endpoint: {endpoint:?} must be an https:// URL"
                ));
            }
            if !(1..=1000).contains(&poll.max_events) {
                return Err(format!("{field}.poll.max_events must be 1 to 1000"));
            }
            if poll.interval < Duration::from_millis(100) {
                return Err(format!("{field}.poll.interval must be at least 100ms"));
            }
            DeliverySettings::Poll(PollSettings {
                endpoint: poll.endpoint.clone(),
                token,
                token_source: source.describe(),
                max_events: poll.max_events,
                interval: poll.interval,
            })
        }
        (Delivery::Push, _, _) => {
            return Err(format!(
                "{field}: delivery: push takes a push block (push: {{ bearer_secret: {{ env: NAME }} }}) and no poll block"
            ));
        }
        (Delivery::Poll, _, _) => {
            return Err(format!(
                "{field}: delivery: poll takes a poll block (poll: {{ auth: {{ env: NAME }} }}) and no push block"
            ));
        }
    };
    Ok(TransmitterSettings {
        name: name.clone(),
        issuer: config.issuer.clone(),
        audience: config.audience.clone(),
        delivery,
        fetch: FetchSettings {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            max_bytes: 512 * 1024,
            allow_http: config.allow_http,
        },
    })
}

#[cfg(test)]
#[path = "signals_tests.rs"]
mod tests;
