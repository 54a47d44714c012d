//! Prometheus metrics, named as in DESIGN.md. Label values come only from
//! config names and fixed sets (status codes, rejection reasons, outcomes),
//! never from anything a client controls, so cardinality stays bounded.

use std::sync::OnceLock;

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
    pub upstream_healthy: IntGaugeVec,
    pub upstream_resolve_failures: IntCounterVec,
    pub jwks_keys: IntGaugeVec,
    pub jwks_fetches: IntCounterVec,
    pub jwks_age: IntGaugeVec,
    pub token_cache_hits: IntCounter,
    pub token_cache_misses: IntCounter,
    pub config_reloads: IntCounterVec,
    pub config_last_reload: IntGauge,
    pub tls_certificate_expiry: IntGaugeVec,
}

/// `listener` of `jwtgate_tls_certificate_expiry_timestamp_seconds`: the
/// config section the certificates belong to.
pub const HTTPS_LISTENER: &str = "https";

/// `result` label values of `jwtgate_config_reloads_total`.
pub const RELOAD_SUCCESS: &str = "success";
pub const RELOAD_ERROR: &str = "error";

/// `jwtgate_upstream_healthy{route,addr}` and
/// `jwtgate_upstream_resolve_failures_total{route}`: addresses are the
/// resolved endpoints of configured upstreams, never client input.
fn upstream_metrics() -> (IntGaugeVec, IntCounterVec) {
    let healthy = IntGaugeVec::new(
        Opts::new(
            "jwtgate_upstream_healthy",
            "Whether an upstream endpoint gets traffic (1) or not (0: failing its health checks, or set aside after a refused connection), by route and resolved address.",
        ),
        &["route", "addr"],
    )
    .expect("valid metric");
    let resolve_failures = IntCounterVec::new(
        Opts::new(
            "jwtgate_upstream_resolve_failures_total",
            "Resolutions of an upstream DNS name that failed (the last good addresses were kept), by route.",
        ),
        &["route"],
    )
    .expect("valid metric");
    (healthy, resolve_failures)
}

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
        let tls_certificate_expiry = IntGaugeVec::new(
            Opts::new(
                "jwtgate_tls_certificate_expiry_timestamp_seconds",
                "Unix time the certificate a listener serves for a host expires (its notAfter), as loaded at startup or the last successful reload.",
            ),
            &["listener", "host"],
        )
        .expect("valid metric");
        let (upstream_healthy, upstream_resolve_failures) = upstream_metrics();
        for collector in [
            Box::new(upstream_healthy.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(upstream_resolve_failures.clone()),
            Box::new(requests.clone()),
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
            Box::new(tls_certificate_expiry.clone()),
        ] {
            registry.register(collector).expect("unique metric names");
        }
        Self {
            registry,
            requests,
            auth_decisions,
            verify_duration,
            upstream_duration,
            upstream_healthy,
            upstream_resolve_failures,
            jwks_keys,
            jwks_fetches,
            jwks_age,
            token_cache_hits,
            token_cache_misses,
            config_reloads,
            config_last_reload,
            tls_certificate_expiry,
        }
    }

    /// Replaces every certificate expiry series of `listener` with
    /// `(host, notAfter)` pairs: a host a reload dropped leaves no series
    /// behind. Host names come from the config, never from a client's SNI.
    pub fn record_certificate_expiry<'a>(
        &self,
        listener: &str,
        hosts: impl IntoIterator<Item = (&'a str, i64)>,
    ) {
        self.tls_certificate_expiry.reset();
        for (host, not_after) in hosts {
            self.tls_certificate_expiry
                .with_label_values(&[listener, host])
                .set(not_after);
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
    /// Adds a collector owned elsewhere (runtime state with its own metrics).
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        self.registry
            .register(collector)
            .expect("unique metric names");
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec cannot fail");
        out
    }
}

/// The statuses nearly every response has. Their `jwtgate_requests_total`
/// series get a slot per route; any other status is looked up by label.
const COMMON_STATUSES: [u16; 14] = [
    200, 201, 204, 301, 302, 304, 400, 401, 403, 404, 500, 502, 503, 504,
];

/// One route's metric series, resolved on first use and then reused: a
/// label lookup hashes every label value and takes the vector's lock, per
/// request. Lives in the route of a config snapshot, so a reload starts
/// afresh; a slot resolves to the same series the labels name, and one is
/// only resolved when used, so the exposition is exactly what label lookups
/// give.
#[derive(Debug)]
pub struct RouteSeries {
    requests_by_status: [OnceLock<IntCounter>; COMMON_STATUSES.len()],
    upstream_duration: OnceLock<Histogram>,
    /// `jwtgate_auth_decisions_total{outcome="allow"}`, by issuer index.
    allowed_by_issuer: Box<[OnceLock<IntCounter>]>,
    anonymous: OnceLock<IntCounter>,
}

impl RouteSeries {
    pub fn new(issuers: usize) -> Self {
        Self {
            requests_by_status: Default::default(),
            upstream_duration: OnceLock::new(),
            allowed_by_issuer: (0..issuers).map(|_| OnceLock::new()).collect(),
            anonymous: OnceLock::new(),
        }
    }
}

impl Metrics {
    /// Counts a response in `jwtgate_requests_total{route, status}`.
    pub fn count_request(&self, route: &str, series: Option<&RouteSeries>, status: u16) {
        let slot = series.and_then(|series| {
            let i = COMMON_STATUSES.iter().position(|&s| s == status)?;
            Some(&series.requests_by_status[i])
        });
        // itoa formats on the stack: counting a request allocates nothing.
        let by_label = || {
            self.requests
                .with_label_values(&[route, itoa::Buffer::new().format(status)])
        };
        match slot {
            Some(slot) => slot.get_or_init(by_label).inc(),
            None => by_label().inc(),
        }
    }

    /// `jwtgate_upstream_duration_seconds{route}`.
    pub fn observe_upstream(&self, route: &str, series: &RouteSeries, seconds: f64) {
        series
            .upstream_duration
            .get_or_init(|| self.upstream_duration.with_label_values(&[route]))
            .observe(seconds);
    }

    /// [`Metrics::record_decision`] for a route whose series are at hand:
    /// the common outcomes (allow with its issuer, anonymous) from their
    /// slots, the rest by label.
    pub fn record_route_decision(
        &self,
        route: &str,
        series: &RouteSeries,
        issuer: Option<(usize, &str)>,
        outcome: &str,
        reason: Option<&'static str>,
    ) {
        let slot = match (outcome, issuer, reason) {
            (ALLOW, Some((i, _)), None) => series.allowed_by_issuer.get(i),
            (ANONYMOUS, None, None) => Some(&series.anonymous),
            _ => None,
        };
        let issuer = issuer.map_or(NO_ISSUER, |(_, name)| name);
        match slot {
            Some(slot) => slot
                .get_or_init(|| {
                    self.auth_decisions
                        .with_label_values(&[route, issuer, outcome, NO_REASON])
                })
                .inc(),
            None => self.record_decision(route, issuer, outcome, reason),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(metrics: &Metrics) -> String {
        String::from_utf8(metrics.render()).expect("text exposition is UTF-8")
    }

    fn series_lines<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|line| line.starts_with(name) && line[name.len()..].starts_with('{'))
            .collect()
    }

    #[test]
    fn route_series_count_the_series_label_lookups_name() {
        let metrics = Metrics::new();
        let series = RouteSeries::new(2);
        metrics.count_request("api", Some(&series), 200);
        metrics.count_request("api", Some(&series), 200);
        // Not among the common statuses: looked up by label.
        metrics.count_request("api", Some(&series), 418);
        metrics.count_request(NO_ROUTE, None, 404);
        metrics.observe_upstream("api", &series, 0.001);
        metrics.record_route_decision("api", &series, Some((1, "second")), ALLOW, None);
        metrics.record_route_decision("api", &series, None, ANONYMOUS, None);
        metrics.record_route_decision("api", &series, Some((0, "first")), DENY, Some("expired"));

        let text = exposition(&metrics);
        assert_eq!(
            series_lines(&text, "jwtgate_requests_total"),
            [
                r#"jwtgate_requests_total{route="_none",status="404"} 1"#,
                r#"jwtgate_requests_total{route="api",status="200"} 2"#,
                r#"jwtgate_requests_total{route="api",status="418"} 1"#,
            ]
        );
        assert_eq!(
            series_lines(&text, "jwtgate_auth_decisions_total"),
            [
                r#"jwtgate_auth_decisions_total{issuer="_none",outcome="anonymous",reason="none",route="api"} 1"#,
                r#"jwtgate_auth_decisions_total{issuer="first",outcome="deny",reason="expired",route="api"} 1"#,
                r#"jwtgate_auth_decisions_total{issuer="second",outcome="allow",reason="none",route="api"} 1"#,
            ]
        );
        assert!(text.contains(r#"jwtgate_upstream_duration_seconds_count{route="api"} 1"#));
    }

    /// A reload builds new routes with empty slots: they must add to the
    /// series already counted, not start new ones.
    #[test]
    fn a_new_snapshots_series_continue_the_old_counts() {
        let metrics = Metrics::new();
        for _ in 0..2 {
            let series = RouteSeries::new(1);
            metrics.count_request("api", Some(&series), 200);
            metrics.record_route_decision("api", &series, Some((0, "demo")), ALLOW, None);
        }
        let text = exposition(&metrics);
        assert!(text.contains(r#"jwtgate_requests_total{route="api",status="200"} 2"#));
        assert!(text.contains(
            r#"jwtgate_auth_decisions_total{issuer="demo",outcome="allow",reason="none",route="api"} 2"#
        ));
    }

    /// A slot resolves only when used: no zero-valued series appear for
    /// statuses or issuers a route never saw.
    #[test]
    fn unused_slots_add_no_series() {
        let metrics = Metrics::new();
        let series = RouteSeries::new(3);
        metrics.count_request("api", Some(&series), 204);
        let text = exposition(&metrics);
        assert_eq!(series_lines(&text, "jwtgate_requests_total").len(), 1);
        assert!(series_lines(&text, "jwtgate_auth_decisions_total").is_empty());
        assert!(!text.contains("jwtgate_upstream_duration_seconds_count"));
    }
}
