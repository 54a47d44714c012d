//! Prometheus metrics, named as in DESIGN.md. Label values come only from
//! config names and fixed sets (status codes, rejection reasons, outcomes),
//! never from anything a client controls, so cardinality stays bounded.

use std::sync::OnceLock;

use super::client_errors::ClientErrorCounters;
use super::exemplar::{Exemplar, ExemplarHistogram, ExemplarHistogramVec};
use prometheus::{
    Encoder, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// `outcome` label values.
pub const ALLOW: &str = "allow";
pub const DENY: &str = "deny";
/// Optional route, no token sent: let through without identity.
pub const ANONYMOUS: &str = "anonymous";
/// Audit route: `required` would have refused; forwarded without identity.
pub const WOULD_DENY: &str = "would_deny";

/// `route` for requests that matched no route; `issuer` when none was
/// identified; `reason` for allowed requests, and `reason` and `error` of
/// `jwtgate_requests_total` for requests answered without either.
pub const NO_ROUTE: &str = "_none";
pub const NO_ISSUER: &str = "_none";
pub const NO_REASON: &str = "none";

/// `adapter` of `jwtgate_requests_total`: the listener that took the
/// request (`pipeline::Adapter::as_str` of each adapter that counts them).
pub const ADAPTERS: [&str; 3] = ["proxy", "authz", "authz_grpc"];

/// Whether `name` may name something in a metric label or a log line:
/// 1-64 ASCII letters, digits, `-`, `_` or `.` (rate limits, admin tokens).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Whether `label` is a snake_case word, as every value of a closed label
/// set is: what the label-set tests of each vocabulary check.
#[cfg(test)]
pub fn is_snake_case(label: &str) -> bool {
    label.starts_with(|c: char| c.is_ascii_lowercase())
        && !label.ends_with('_')
        && !label.contains("__")
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Verification takes microseconds; buckets from 5 µs to 100 ms.
const VERIFY_BUCKETS: [f64; 14] = [
    5e-6, 10e-6, 25e-6, 50e-6, 75e-6, 100e-6, 150e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3,
    100e-3,
];

const UPSTREAM_BUCKETS: [f64; 14] = [
    100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 1.0, 5.0, 30.0,
];

/// Every metric the process exposes: the registry `/metrics` renders, and
/// the narrow handle each consumer is given (state with metrics of its own,
/// the revocation list and the rate-limit counters, registers them here).
pub struct Metrics {
    registry: Registry,
    /// What the adapters and the pipeline record per request.
    pub requests: RequestMetrics,
    /// Remote issuers' key sets, for the refreshers and `/metrics`.
    pub keys: KeyMetrics,
    /// Upstream endpoints, for the pools.
    pub upstreams: UpstreamMetrics,
    pub token_cache: CacheMetrics,
    /// Reloads and the certificates they load.
    pub config: ConfigMetrics,
    /// Token Status Lists, for their refreshers and the pipeline.
    pub status_lists: StatusListMetrics,
}

/// `jwtgate_status_list_fetch_total`, `jwtgate_status_lists`,
/// `jwtgate_status_list_bytes`, `jwtgate_status_list_unchecked_total`:
/// by issuer only, never by list URI (those come from tokens).
#[derive(Clone)]
pub struct StatusListMetrics {
    pub fetches: IntCounterVec,
    pub lists: IntGaugeVec,
    pub bytes: IntGaugeVec,
    pub unchecked: IntCounterVec,
}

/// `jwtgate_requests_total`, `jwtgate_auth_decisions_total`,
/// `jwtgate_verify_duration_seconds`, `jwtgate_upstream_duration_seconds`.
/// The two histograms keep exemplars for the OpenMetrics exposition.
#[derive(Clone)]
pub struct RequestMetrics {
    requests: IntCounterVec,
    auth_decisions: IntCounterVec,
    /// The pipeline's (`Pipeline::timed`).
    pub verify_duration: ExemplarHistogram,
    verify_family: ExemplarHistogramVec,
    upstream_duration: ExemplarHistogramVec,
}

/// `jwtgate_jwks_keys`, `jwtgate_jwks_fetch_total`, `jwtgate_jwks_age_seconds`.
#[derive(Clone)]
pub struct KeyMetrics {
    pub keys: IntGaugeVec,
    pub fetches: IntCounterVec,
    pub age: IntGaugeVec,
}

/// `jwtgate_upstream_healthy{route,addr}` and
/// `jwtgate_upstream_resolve_failures_total{route}`: addresses are the
/// resolved endpoints of configured upstreams, never client input.
#[derive(Clone)]
pub struct UpstreamMetrics {
    pub healthy: IntGaugeVec,
    pub resolve_failures: IntCounterVec,
}

/// `jwtgate_token_cache_hits_total`, `jwtgate_token_cache_misses_total`.
#[derive(Clone)]
pub struct CacheMetrics {
    pub hits: IntCounter,
    pub misses: IntCounter,
}

/// `jwtgate_config_reloads_total`, `jwtgate_config_last_reload_timestamp_seconds`,
/// `jwtgate_tls_certificate_expiry_timestamp_seconds`.
#[derive(Clone)]
pub struct ConfigMetrics {
    pub reloads: IntCounterVec,
    pub last_reload: IntGauge,
    certificate_expiry: IntGaugeVec,
}

/// `listener` of `jwtgate_tls_certificate_expiry_timestamp_seconds`: the
/// config section the certificates belong to.
pub const HTTPS_LISTENER: &str = "https";

/// `result` label values of `jwtgate_config_reloads_total`.
pub const RELOAD_SUCCESS: &str = "success";
pub const RELOAD_ERROR: &str = "error";

/// A new counter, gauge or vector of them: every name and help text here
/// is a constant, so building one cannot fail.
pub fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("valid metric")
}

pub fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect("valid metric")
}

pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

pub fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn registered<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: M,
) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric names");
    metric
}

fn counters(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(registry, counter_vec(name, help, labels))
}

fn gauges(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    registered(registry, gauge_vec(name, help, labels))
}

fn histograms(registry: &Registry, opts: HistogramOpts, labels: &[&str]) -> ExemplarHistogramVec {
    let family = ExemplarHistogramVec::new(opts, labels).expect("valid metric");
    registry
        .register(family.collector())
        .expect("unique metric names");
    family
}

impl RequestMetrics {
    fn new(registry: &Registry) -> Self {
        let verify_duration = HistogramOpts::new(
            "jwtgate_verify_duration_seconds",
            "Time to verify a token and apply the route's policy.",
        )
        .buckets(VERIFY_BUCKETS.to_vec());
        let upstream_duration = HistogramOpts::new(
            "jwtgate_upstream_duration_seconds",
            "Time from choosing an upstream to the end of the response, by route.",
        )
        .buckets(UPSTREAM_BUCKETS.to_vec());
        // A family without labels: its one series exists from the start,
        // zeros included, as a plain histogram's would.
        let verify_family = histograms(registry, verify_duration, &[]);
        Self {
            requests: counters(
                registry,
                "jwtgate_requests_total",
                "Requests handled, by adapter (proxy, authz, authz_grpc), route, response status, why jwtgate refused (reason) and how it failed on the way through (error); none for neither.",
                &["adapter", "route", "status", "reason", "error"],
            ),
            auth_decisions: counters(
                registry,
                "jwtgate_auth_decisions_total",
                "Authentication decisions, by route, issuer, outcome (allow, deny, anonymous, would_deny) and reason.",
                &["route", "issuer", "outcome", "reason"],
            ),
            verify_duration: verify_family.with_label_values(&[]),
            verify_family,
            upstream_duration: histograms(registry, upstream_duration, &["route"]),
        }
    }
}

impl KeyMetrics {
    fn new(registry: &Registry) -> Self {
        Self {
            keys: gauges(
                registry,
                "jwtgate_jwks_keys",
                "Usable verification keys, by issuer.",
                &["issuer"],
            ),
            fetches: counters(
                registry,
                "jwtgate_jwks_fetch_total",
                "JWKS fetch attempts for remote issuers, by result (success, network, http_status, too_large, invalid_json, invalid_discovery, issuer_mismatch, insecure, client, invalid_jwks).",
                &["issuer", "result"],
            ),
            age: gauges(
                registry,
                "jwtgate_jwks_age_seconds",
                "Seconds since the last successful JWKS fetch of a remote issuer (-1: never).",
                &["issuer"],
            ),
        }
    }

    /// `result` is `success` or a refresh error's label.
    pub fn record_fetch(&self, issuer: &str, result: &'static str) {
        self.fetches.with_label_values(&[issuer, result]).inc();
    }

    /// An issuer the config no longer has would otherwise report its last
    /// values forever.
    pub fn forget(&self, issuer: &str) {
        let _ = self.keys.remove_label_values(&[issuer]);
        let _ = self.age.remove_label_values(&[issuer]);
    }
}

impl StatusListMetrics {
    fn new(registry: &Registry) -> Self {
        Self {
            fetches: counters(
                registry,
                "jwtgate_status_list_fetch_total",
                "Status List Token fetches, by issuer and result (success, network, http_status, too_large, insecure, client, invalid_token, wrong_type, bad_signature, no_key, wrong_subject, expired, invalid_list, inflated_too_large).",
                &["issuer", "result"],
            ),
            lists: gauges(
                registry,
                "jwtgate_status_lists",
                "Status lists an issuer's tokens named and jwtgate keeps, by issuer.",
                &["issuer"],
            ),
            bytes: gauges(
                registry,
                "jwtgate_status_list_bytes",
                "Heap bytes of an issuer's decoded status lists.",
                &["issuer"],
            ),
            unchecked: counters(
                registry,
                "jwtgate_status_list_unchecked_total",
                "Tokens accepted under status_list.mode optional without their list (not fetched yet, or past max_age), by issuer.",
                &["issuer"],
            ),
        }
    }
}

impl UpstreamMetrics {
    fn new(registry: &Registry) -> Self {
        Self {
            healthy: gauges(
                registry,
                "jwtgate_upstream_healthy",
                "Whether an upstream endpoint gets traffic (1) or not (0: failing its health checks, or set aside after a refused connection), by route and resolved address.",
                &["route", "addr"],
            ),
            resolve_failures: counters(
                registry,
                "jwtgate_upstream_resolve_failures_total",
                "Resolutions of an upstream DNS name that failed (the last good addresses were kept), by route.",
                &["route"],
            ),
        }
    }
}

impl CacheMetrics {
    fn new(registry: &Registry) -> Self {
        Self {
            hits: registered(
                registry,
                counter(
                    "jwtgate_token_cache_hits_total",
                    "Tokens found in the verified-token cache (signature check skipped).",
                ),
            ),
            misses: registered(
                registry,
                counter(
                    "jwtgate_token_cache_misses_total",
                    "Tokens not in the verified-token cache (fully verified).",
                ),
            ),
        }
    }
}

impl ConfigMetrics {
    fn new(registry: &Registry) -> Self {
        let reloads = counters(
            registry,
            "jwtgate_config_reloads_total",
            "Config reloads (SIGHUP, POST /-/reload, --watch), by result (success, error).",
            &["result"],
        );
        // Both series exist from the start, so a rate() over them works
        // before the first reload.
        for result in [RELOAD_SUCCESS, RELOAD_ERROR] {
            reloads.with_label_values(&[result]);
        }
        let last_reload = gauge(
            "jwtgate_config_last_reload_timestamp_seconds",
            "Unix time the config being served was loaded (at startup, then at each successful reload).",
        );
        Self {
            reloads,
            last_reload: registered(registry, last_reload),
            certificate_expiry: gauges(
                registry,
                "jwtgate_tls_certificate_expiry_timestamp_seconds",
                "Unix time the certificate a listener serves for a host expires (its notAfter), as loaded at startup or the last successful reload.",
                &["listener", "host"],
            ),
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
        self.certificate_expiry.reset();
        for (host, not_after) in hosts {
            self.certificate_expiry
                .with_label_values(&[listener, host])
                .set(not_after);
        }
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let metrics = Self {
            requests: RequestMetrics::new(&registry),
            keys: KeyMetrics::new(&registry),
            upstreams: UpstreamMetrics::new(&registry),
            token_cache: CacheMetrics::new(&registry),
            config: ConfigMetrics::new(&registry),
            status_lists: StatusListMetrics::new(&registry),
            registry,
        };
        // Counted by the log layer, which is the process's, not a registry's.
        for collector in ClientErrorCounters::global().collectors() {
            metrics.register(collector);
        }
        metrics
    }

    /// Adds a collector owned elsewhere (runtime state with its own metrics).
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        self.registry
            .register(collector)
            .expect("unique metric names");
    }

    /// The Prometheus text exposition (0.0.4) of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec cannot fail");
        out
    }

    /// The OpenMetrics 1.0.0 exposition of every metric, the latency
    /// histograms' exemplars included.
    pub fn render_openmetrics(&self) -> Vec<u8> {
        // Exemplars first: each was recorded after its observation was
        // counted, so the counts gathered next include it.
        let exemplars = [
            self.requests.verify_family.snapshot(),
            self.requests.upstream_duration.snapshot(),
        ];
        super::openmetrics::encode(&self.registry.gather(), &exemplars).into_bytes()
    }
}

/// The statuses nearly every response has. Their `jwtgate_requests_total`
/// series get a slot per route; any other status is looked up by label.
const COMMON_STATUSES: [u16; 14] = [
    200, 201, 204, 301, 302, 304, 400, 401, 403, 404, 500, 502, 503, 504,
];

type StatusSlots = [OnceLock<IntCounter>; COMMON_STATUSES.len()];

/// The labels of a request besides its route: which adapter took it, the
/// status it was answered, why jwtgate refused it (`reason`: the access
/// log's, for refusals before routing, by authentication, by a rate limit
/// or for clear text) and how it failed on its way through (`error`: the
/// access log's, for upstream and client failures). Every value is a
/// `&'static str` of a closed set: `adapter` one of [`ADAPTERS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLabels {
    pub adapter: &'static str,
    pub status: u16,
    pub reason: Option<&'static str>,
    pub error: Option<&'static str>,
}

/// One route's metric series, resolved on first use and then reused: a
/// label lookup hashes every label value and takes the vector's lock, per
/// request. Lives in the route of a config snapshot, so a reload starts
/// afresh; a slot resolves to the same series the labels name, and one is
/// only resolved when used, so the exposition is exactly what label lookups
/// give.
#[derive(Debug)]
pub struct RouteSeries {
    /// Per adapter of [`ADAPTERS`], the answered requests (no reason, no
    /// error) of each common status: allocated when the adapter first
    /// counts one, as most configs serve a route through one adapter.
    requests_by_status: [OnceLock<Box<StatusSlots>>; ADAPTERS.len()],
    upstream_duration: OnceLock<ExemplarHistogram>,
    /// `jwtgate_auth_decisions_total{outcome="allow"}` of each issuer the
    /// route accepts: their indices, and a slot each. A slot per issuer of
    /// the config would cost every route of a 100-issuer config 1.6 KB.
    issuers: Box<[usize]>,
    allowed_by_issuer: Box<[OnceLock<IntCounter>]>,
    anonymous: OnceLock<IntCounter>,
}

impl RouteSeries {
    /// The series of a route that accepts tokens of `issuers` (indices in
    /// the config's issuer list).
    pub fn new(issuers: &[usize]) -> Self {
        Self {
            requests_by_status: Default::default(),
            upstream_duration: OnceLock::new(),
            issuers: issuers.into(),
            allowed_by_issuer: issuers.iter().map(|_| OnceLock::new()).collect(),
            anonymous: OnceLock::new(),
        }
    }

    /// The allow slot of the issuer at `index` of the config's list.
    fn allowed(&self, index: usize) -> Option<&OnceLock<IntCounter>> {
        // A route of every issuer lists them in order: no search.
        let position = match self.issuers.get(index) {
            Some(&at) if at == index => index,
            _ => self.issuers.iter().position(|&i| i == index)?,
        };
        self.allowed_by_issuer.get(position)
    }
}

impl RequestMetrics {
    /// Counts a response in `jwtgate_requests_total`. An answered request
    /// of a common status comes from the route's slot; a refusal or a
    /// failure is looked up by label, as is any request without a route.
    pub fn count_request(&self, route: &str, series: Option<&RouteSeries>, labels: RequestLabels) {
        let RequestLabels {
            adapter,
            status,
            reason,
            error,
        } = labels;
        let slot = series
            .filter(|_| reason.is_none() && error.is_none())
            .and_then(|series| {
                let a = ADAPTERS.iter().position(|&known| known == adapter)?;
                let i = COMMON_STATUSES.iter().position(|&s| s == status)?;
                let slots = series.requests_by_status[a].get_or_init(Default::default);
                Some(&slots[i])
            });
        // itoa formats on the stack: counting a request allocates nothing.
        let by_label = || {
            self.requests.with_label_values(&[
                adapter,
                route,
                itoa::Buffer::new().format(status),
                reason.unwrap_or(NO_REASON),
                error.unwrap_or(NO_REASON),
            ])
        };
        match slot {
            Some(slot) => slot.get_or_init(by_label).inc(),
            None => by_label().inc(),
        }
    }

    /// `jwtgate_upstream_duration_seconds{route}`, with the request's
    /// trace as its bucket's exemplar when it has one.
    pub fn observe_upstream(
        &self,
        route: &str,
        series: &RouteSeries,
        seconds: f64,
        exemplar: Option<Exemplar>,
    ) {
        series
            .upstream_duration
            .get_or_init(|| self.upstream_duration.with_label_values(&[route]))
            .observe(seconds, exemplar);
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

    /// The decisions counted so far with exactly these labels.
    pub fn decisions(&self, labels: &[&str]) -> u64 {
        self.auth_decisions.with_label_values(labels).get()
    }

    /// [`RequestMetrics::record_decision`] for a route whose series are at hand:
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
            (ALLOW, Some((i, _)), None) => series.allowed(i),
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

    /// A proxied request answered with `status`.
    fn answered(status: u16) -> RequestLabels {
        RequestLabels {
            adapter: "proxy",
            status,
            reason: None,
            error: None,
        }
    }

    /// The `jwtgate_requests_total` lines of the exposition.
    fn request_series(metrics: &Metrics) -> Vec<String> {
        let text = exposition(metrics);
        let lines = series_lines(&text, "jwtgate_requests_total");
        lines.into_iter().map(str::to_owned).collect()
    }

    fn series_lines<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|line| line.starts_with(name) && line[name.len()..].starts_with('{'))
            .collect()
    }

    #[test]
    fn route_series_count_the_series_label_lookups_name() {
        let metrics = Metrics::new();
        let series = RouteSeries::new(&[0, 1]);
        metrics
            .requests
            .count_request("api", Some(&series), answered(200));
        metrics
            .requests
            .count_request("api", Some(&series), answered(200));
        // Not among the common statuses: looked up by label.
        metrics
            .requests
            .count_request("api", Some(&series), answered(418));
        metrics
            .requests
            .count_request(NO_ROUTE, None, answered(404));
        metrics
            .requests
            .observe_upstream("api", &series, 0.001, None);
        metrics
            .requests
            .record_route_decision("api", &series, Some((1, "second")), ALLOW, None);
        metrics
            .requests
            .record_route_decision("api", &series, None, ANONYMOUS, None);
        metrics.requests.record_route_decision(
            "api",
            &series,
            Some((0, "first")),
            DENY,
            Some("expired"),
        );

        let text = exposition(&metrics);
        assert_eq!(
            series_lines(&text, "jwtgate_requests_total"),
            [
                r#"jwtgate_requests_total{adapter="proxy",error="none",reason="none",route="_none",status="404"} 1"#,
                r#"jwtgate_requests_total{adapter="proxy",error="none",reason="none",route="api",status="200"} 2"#,
                r#"jwtgate_requests_total{adapter="proxy",error="none",reason="none",route="api",status="418"} 1"#,
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
            let series = RouteSeries::new(&[0]);
            metrics
                .requests
                .count_request("api", Some(&series), answered(200));
            metrics
                .requests
                .record_route_decision("api", &series, Some((0, "demo")), ALLOW, None);
        }
        let text = exposition(&metrics);
        assert!(text.contains(
            r#"jwtgate_requests_total{adapter="proxy",error="none",reason="none",route="api",status="200"} 2"#
        ));
        assert!(text.contains(
            r#"jwtgate_auth_decisions_total{issuer="demo",outcome="allow",reason="none",route="api"} 2"#
        ));
    }

    /// A slot resolves only when used: no zero-valued series appear for
    /// statuses or issuers a route never saw.
    #[test]
    fn unused_slots_add_no_series() {
        let metrics = Metrics::new();
        let series = RouteSeries::new(&[0, 1, 2]);
        metrics
            .requests
            .count_request("api", Some(&series), answered(204));
        let text = exposition(&metrics);
        assert_eq!(series_lines(&text, "jwtgate_requests_total").len(), 1);
        assert!(series_lines(&text, "jwtgate_auth_decisions_total").is_empty());
        assert!(!text.contains("jwtgate_upstream_duration_seconds_count"));
    }

    /// Each adapter has slots of its own, and a refusal or a failure of a
    /// common status is not counted in the answered requests' slot.
    #[test]
    fn adapters_reasons_and_errors_count_apart() {
        let metrics = Metrics::new();
        let series = RouteSeries::new(&[0]);
        let count = |labels| metrics.requests.count_request("api", Some(&series), labels);
        count(answered(200));
        count(RequestLabels {
            adapter: "authz",
            ..answered(200)
        });
        count(RequestLabels {
            adapter: "authz_grpc",
            ..answered(200)
        });
        count(RequestLabels {
            reason: Some("expired"),
            ..answered(401)
        });
        count(answered(401));
        count(RequestLabels {
            error: Some("upstream_refused"),
            ..answered(502)
        });
        // An adapter without slots (the CLI counts nothing, but would
        // count by label).
        count(RequestLabels {
            adapter: "other",
            ..answered(200)
        });
        assert_eq!(
            request_series(&metrics),
            [
                r#"jwtgate_requests_total{adapter="authz",error="none",reason="none",route="api",status="200"} 1"#,
                r#"jwtgate_requests_total{adapter="authz_grpc",error="none",reason="none",route="api",status="200"} 1"#,
                r#"jwtgate_requests_total{adapter="other",error="none",reason="none",route="api",status="200"} 1"#,
                r#"jwtgate_requests_total{adapter="proxy",error="none",reason="expired",route="api",status="401"} 1"#,
                r#"jwtgate_requests_total{adapter="proxy",error="none",reason="none",route="api",status="200"} 1"#,
                r#"jwtgate_requests_total{adapter="proxy",error="none",reason="none",route="api",status="401"} 1"#,
                r#"jwtgate_requests_total{adapter="proxy",error="upstream_refused",reason="none",route="api",status="502"} 1"#,
            ]
        );
    }

    #[test]
    fn adapter_labels_are_unique_snake_case() {
        let unique: std::collections::BTreeSet<_> = ADAPTERS.iter().collect();
        assert_eq!(unique.len(), ADAPTERS.len());
        for adapter in ADAPTERS {
            assert!(valid_name(adapter) && is_snake_case(adapter), "{adapter}");
        }
    }
}
