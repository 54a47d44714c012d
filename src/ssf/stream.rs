//! A transmitter's stream settings and keys: its
//! `/.well-known/ssf-configuration` (whose `issuer` must be the configured
//! one) names the JWKS, which the issuers' refresher keeps fresh in the
//! transmitter's key store; a polled stream then runs its poll loop.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{DeliverySettings, Receiver, Transmitter, poll};
use crate::clock::SharedClock;
use crate::jose::{Algorithm, AlgorithmSet, KeyFamily};
use crate::keys::fetch::{Fetcher, Locator};
use crate::keys::remote::{RefreshPolicy, Refresher, RemoteSource};
use crate::telemetry::metrics::KeyMetrics;

/// RFC 8935 and RFC 8936's delivery method URNs.
pub const PUSH_METHOD: &str = "urn:ietf:rfc:8935";
pub const POLL_METHOD: &str = "urn:ietf:rfc:8936";

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);

/// What the transmitter's configuration says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    pub jwks_uri: String,
    pub configuration_endpoint: Option<String>,
    pub delivery_methods: Vec<String>,
}

/// `/.well-known/ssf-configuration` inserted between the host and the
/// path of the issuer (SSF 1.0 §7.2.1), like RFC 8414.
pub fn configuration_url(issuer: &str) -> String {
    let issuer = issuer.trim_end_matches('/');
    let start = issuer.find("://").map_or(0, |i| i + 3);
    match issuer[start..].find('/') {
        Some(slash) => {
            let (host, path) = issuer.split_at(start + slash);
            format!("{host}/.well-known/ssf-configuration{path}")
        }
        None => format!("{issuer}/.well-known/ssf-configuration"),
    }
}

/// Reads the transmitter's configuration: its `issuer` must be the
/// configured one, so another document can't point at foreign keys.
pub async fn discover(fetcher: &Fetcher, issuer: &str) -> Result<Discovered, String> {
    let url = configuration_url(issuer);
    let document = fetcher
        .get_json(&url)
        .await
        .map_err(|e| e.to_string())?
        .document;
    let text = |name: &str| {
        document
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    if text("issuer").as_deref() != Some(issuer) {
        return Err(format!("{url}: issuer is not {issuer:?}"));
    }
    let jwks_uri = text("jwks_uri").ok_or_else(|| format!("{url}: no jwks_uri"))?;
    let delivery_methods = document
        .get("delivery_methods_supported")
        .and_then(Value::as_array)
        .map(|methods| {
            methods
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Ok(Discovered {
        jwks_uri,
        configuration_endpoint: text("configuration_endpoint"),
        delivery_methods,
    })
}

/// Every public-key algorithm: the transmitter's JWKS says which key is
/// for which.
fn public_key_algorithms() -> AlgorithmSet {
    Algorithm::ALL
        .into_iter()
        .filter(|alg| alg.family() != KeyFamily::Hmac)
        .collect()
}

/// The transmitter's stream for as long as the calling task lives: the
/// configuration read (again after a backoff until it can be), then its
/// keys kept fresh and, for a polled stream, its poll loop.
pub async fn run(
    receiver: Arc<Receiver>,
    transmitter: Arc<Transmitter>,
    key_metrics: KeyMetrics,
    clock: SharedClock,
) {
    let settings = &transmitter.settings;
    let name = settings.name.as_str();
    let fetcher = match Fetcher::new(settings.fetch.clone()) {
        Ok(fetcher) => fetcher,
        Err(error) => {
            tracing::error!(transmitter = name, "shared signals: {error}");
            return;
        }
    };
    let mut backoff = FIRST_BACKOFF;
    let discovered = loop {
        match discover(&fetcher, &settings.issuer).await {
            Ok(discovered) => break discovered,
            Err(error) => {
                tracing::warn!(
                    transmitter = name,
                    "shared signals: cannot read the transmitter's configuration: {error}"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    };
    let method = match settings.delivery {
        DeliverySettings::Push(_) => PUSH_METHOD,
        DeliverySettings::Poll(_) => POLL_METHOD,
    };
    if !discovered.delivery_methods.is_empty()
        && !discovered.delivery_methods.iter().any(|m| m == method)
    {
        tracing::warn!(
            transmitter = name,
            method,
            "shared signals: the transmitter does not list this delivery method"
        );
    }
    let source = RemoteSource {
        name: format!("ssf:{name}"),
        issuer: settings.issuer.clone(),
        algorithms: public_key_algorithms(),
        keys: transmitter.keys.clone(),
        locator: Locator::JwksUri(discovered.jwks_uri.clone()),
        fetch: settings.fetch.clone(),
        refresh: RefreshPolicy {
            min_refresh: Duration::from_secs(60),
            max_refresh: Duration::from_secs(24 * 3600),
            max_stale: Duration::from_secs(7 * 24 * 3600),
        },
    };
    let refresher = match Refresher::new(source, None, key_metrics, clock) {
        Ok(refresher) => refresher,
        Err(error) => {
            tracing::error!(transmitter = name, "shared signals: {error}");
            return;
        }
    };
    match &settings.delivery {
        DeliverySettings::Push(_) => refresher.run().await,
        DeliverySettings::Poll(poll) => {
            let polling = poll::run(receiver.clone(), transmitter.clone(), poll, &discovered);
            tokio::join!(refresher.run(), polling);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_well_known_path_goes_before_the_issuer_path() {
        assert_eq!(
            configuration_url("https://tx.example/"),
            "https://tx.example/.well-known/ssf-configuration"
        );
        assert_eq!(
            configuration_url("https://tx.example/tenant/1"),
            "https://tx.example/.well-known/ssf-configuration/tenant/1"
        );
    }
}
