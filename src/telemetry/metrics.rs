//! Prometheus metrics, named as in DESIGN.md. Label values come only from
//! config names and fixed sets (status codes, rejection reasons, outcomes),
//! never from anything a client controls, so cardinality stays bounded.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// `outcome` label values.
pub const ALLOW: &str = "allow";
pub const DENY: &str = "deny";
/// Optional route, no token sent: let through without identity.
pub const ANONYMOUS: &str = "anonymous";
/// Audit route: `required` would have refused; forwarded without identity.
pub const WOULD_DENY: &str = "would_deny";

/// `route` for requests that matched no route; `issuer` when none was
/// identified; `reason` for allowed requests.
pub const NO_ROUTE: &str = "_none";
pub const NO_ISSUER: &str = "_none";
pub const NO_REASON: &str = "none";

/// Verification takes microseconds; buckets from 5 µs to 100 ms.
const VERIFY_BUCKETS: [f64; 14] = [
    5e-6, 10e-6, 25e-6, 50e-6, 75e-6, 100e-6, 150e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3,
    100e-3,
];

const UPSTREAM_BUCKETS: [f64; 14] = [
    100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 1.0, 5.0, 30.0,
];

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub auth_decisions: IntCounterVec,
    pub verify_duration: Histogram,
    pub upstream_duration: HistogramVec,
    pub jwks_keys: IntGaugeVec,
    pub jwks_fetches: IntCounterVec,
    pub jwks_age: IntGaugeVec,
    pub token_cache_hits: IntCounter,
    pub token_cache_misses: IntCounter,
    pub config_reloads: IntCounterVec,
    pub config_last_reload: IntGauge,
}

/// `result` label values of `jwtgate_config_reloads_total`.
pub const RELOAD_SUCCESS: &str = "success";
pub const RELOAD_ERROR: &str = "error";

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "jwtgate_requests_total",
                "Requests handled, by route and response status.",
            ),
            &["route", "status"],
        )
        .expect("valid metric");
        let auth_decisions = IntCounterVec::new(
            Opts::new(
                "jwtgate_auth_decisions_total",
                "Authentication decisions, by route, issuer, outcome (allow, deny, anonymous, would_deny) and reason.",
            ),
            &["route", "issuer", "outcome", "reason"],
        )
        .expect("valid metric");
        let verify_duration = Histogram::with_opts(
            HistogramOpts::new(
                "jwtgate_verify_duration_seconds",
                "Time to verify a token and apply the route's policy.",
            )
            .buckets(VERIFY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "jwtgate_upstream_duration_seconds",
                "Time from choosing an upstream to the end of the response, by route.",
            )
            .buckets(UPSTREAM_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let jwks_keys = IntGaugeVec::new(
            Opts::new("jwtgate_jwks_keys", "Usable verification keys, by issuer."),
            &["issuer"],
        )
        .expect("valid metric");
        let jwks_fetches = IntCounterVec::new(
            Opts::new(
                "jwtgate_jwks_fetch_total",
                "JWKS fetch attempts for remote issuers, by result (success, network, http_status, too_large, invalid_json, invalid_discovery, issuer_mismatch, insecure, client, invalid_jwks).",
            ),
            &["issuer", "result"],
        )
        .expect("valid metric");
        let jwks_age = IntGaugeVec::new(
            Opts::new(
                "jwtgate_jwks_age_seconds",
                "Seconds since the last successful JWKS fetch of a remote issuer (-1: never).",
            ),
            &["issuer"],
        )
        .expect("valid metric");
        let token_cache_hits = IntCounter::new(
            "jwtgate_token_cache_hits_total",
            "Tokens found in the verified-token cache (signature check skipped).",
        )
        .expect("valid metric");
        let token_cache_misses = IntCounter::new(
            "jwtgate_token_cache_misses_total",
            "Tokens not in the verified-token cache (fully verified).",
        )
        .expect("valid metric");
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "jwtgate_config_reloads_total",
                "Config reloads (SIGHUP, POST /-/reload, --watch), by result (success, error).",
            ),
            &["result"],
        )
        .expect("valid metric");
        // Both series exist from the start, so a rate() over them works
        // before the first reload.
        for result in [RELOAD_SUCCESS, RELOAD_ERROR] {
            config_reloads.with_label_values(&[result]);
        }
        let config_last_reload = IntGauge::new(
            "jwtgate_config_last_reload_timestamp_seconds",
            "Unix time the config being served was loaded (at startup, then at each successful reload).",
        )
        .expect("valid metric");
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(auth_decisions.clone()),
            Box::new(verify_duration.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(jwks_keys.clone()),
            Box::new(jwks_fetches.clone()),
            Box::new(jwks_age.clone()),
            Box::new(token_cache_hits.clone()),
            Box::new(token_cache_misses.clone()),
            Box::new(config_reloads.clone()),
            Box::new(config_last_reload.clone()),
        ] {
            registry.register(collector).expect("unique metric names");
        }
        Self {
            registry,
            requests,
            auth_decisions,
            verify_duration,
            upstream_duration,
            jwks_keys,
            jwks_fetches,
            jwks_age,
            token_cache_hits,
            token_cache_misses,
            config_reloads,
            config_last_reload,
        }
    }

    /// `result` is `success` or a [`crate::keys::remote::RefreshError`]
    /// label.
    pub fn record_jwks_fetch(&self, issuer: &str, result: &'static str) {
        self.jwks_fetches.with_label_values(&[issuer, result]).inc();
    }

    /// `reason` is a rejection reason's label (`auth::Reason::as_str`): taken
    /// as a label, not the enum, so telemetry imports nothing it could be
    /// imported back from.
    pub fn record_decision(
        &self,
        route: &str,
        issuer: &str,
        outcome: &str,
        reason: Option<&'static str>,
    ) {
        self.auth_decisions
            .with_label_values(&[route, issuer, outcome, reason.unwrap_or(NO_REASON)])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
