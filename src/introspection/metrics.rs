//! `jwtgate_introspection_requests_total{issuer,result}` and
//! `jwtgate_introspection_duration_seconds{issuer}`: every call made, by
//! the issuer's configured name and a closed set of results.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec};

use crate::telemetry::metrics::counter_vec;

const BUCKETS: [f64; 12] = [
    1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1.0, 2.5, 5.0,
];

/// The results a call is counted under.
pub const RESULTS: [&str; 9] = [
    "active",
    "inactive",
    "network",
    "timeout",
    "http_status",
    "too_large",
    "invalid_response",
    "discovery",
    "client",
];

/// A clone counts into the same series.
#[derive(Clone)]
pub struct IntrospectionMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl IntrospectionMetrics {
    /// Counters of their own: [`IntrospectionMetrics::register`] shows
    /// them on `/metrics`.
    pub fn new() -> Self {
        let requests = counter_vec(
            "jwtgate_introspection_requests_total",
            &format!(
                "Token introspection calls, by issuer and result ({}).",
                RESULTS.join(", ")
            ),
            &["issuer", "result"],
        );
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "jwtgate_introspection_duration_seconds",
                "How long token introspection calls took, answered or not, by issuer.",
            )
            .buckets(BUCKETS.to_vec()),
            &["issuer"],
        )
        .expect("valid metric");
        Self { requests, duration }
    }

    /// New counters, shown on `/metrics` with the rest of `metrics`.
    pub fn registered(metrics: &crate::telemetry::Metrics) -> Self {
        let this = Self::new();
        metrics.register(Box::new(this.requests.clone()));
        metrics.register(Box::new(this.duration.clone()));
        this
    }

    pub fn observe(&self, issuer: &str, result: &'static str, took: Duration) {
        self.requests.with_label_values(&[issuer, result]).inc();
        self.duration
            .with_label_values(&[issuer])
            .observe(took.as_secs_f64());
    }

    pub fn count(&self, issuer: &str, result: &str) -> u64 {
        self.requests.with_label_values(&[issuer, result]).get()
    }
}

impl Default for IntrospectionMetrics {
    fn default() -> Self {
        Self::new()
    }
}
