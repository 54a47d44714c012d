//! `telemetry`: where jwtgate sends traces (OpenTelemetry, OTLP).

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::json::DurationText;
use super::{duration, duration_text};

/// Traces, sent over OTLP to an OpenTelemetry collector. Restart-only.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OpenTelemetry traces: a server span per request (proxy and
    /// authorization listeners), a client span per upstream call, and a
    /// span per key fetch. Absent: no traces, and `traceparent` passes
    /// through untouched.
    pub tracing: Option<TracingConfig>,
}

/// `telemetry.tracing`: the OTLP exporter, the sampler and whose trace
/// context is continued.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// The collector: `http://host:4317` for `grpc`; for `http/protobuf` a
    /// base URL (`http://host:4318`) gets `/v1/traces` appended unless its
    /// path already ends with it. `https` for TLS.
    pub endpoint: String,
    /// `grpc` (default) or `http/protobuf`.
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// Sent with every export (gRPC metadata or HTTP headers), e.g. a
    /// collector's API key: `{x-api-key: "${OTLP_KEY}"}`. Never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The `service.name` resource attribute.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// More resource attributes: `{deployment.environment: production}`.
    #[serde(default)]
    pub resource_attributes: BTreeMap<String, String>,
    /// The share of traces sampled where no sampled parent decides, from
    /// `0.0` to `1.0`. Parent-based: a request whose accepted
    /// `traceparent` is sampled is sampled, one whose parent is not is not.
    #[serde(default = "default_sampling_ratio")]
    pub sampling_ratio: f64,
    /// Whose `traceparent`/`tracestate` is continued: `trusted` (default)
    /// only from `server.trusted_proxies`, `always`, or `never`. An
    /// ignored one starts a new trace and is not forwarded.
    #[serde(default)]
    pub incoming_context: IncomingContext,
    /// The most finished spans waiting for export; past it, spans are
    /// dropped and counted (`jwtgate_trace_spans_dropped_total`), so a slow
    /// or absent collector never holds a request or grows memory.
    #[serde(default = "default_max_queue_spans")]
    pub max_queue_spans: usize,
    /// The most spans in one export.
    #[serde(default = "default_max_batch_spans")]
    pub max_batch_spans: usize,
    /// The longest a finished span waits for its batch to fill.
    #[serde(
        default = "default_batch_interval",
        deserialize_with = "duration",
        serialize_with = "duration_text"
    )]
    #[schemars(with = "DurationText")]
    pub batch_interval: Duration,
    /// The longest one export may take; its spans are then dropped.
    #[serde(
        default = "default_export_timeout",
        deserialize_with = "duration",
        serialize_with = "duration_text"
    )]
    #[schemars(with = "DurationText")]
    pub export_timeout: Duration,
}

fn default_service_name() -> String {
    "jwtgate".into()
}

fn default_sampling_ratio() -> f64 {
    1.0
}

fn default_max_queue_spans() -> usize {
    2048
}

fn default_max_batch_spans() -> usize {
    512
}

fn default_batch_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_export_timeout() -> Duration {
    Duration::from_secs(10)
}

/// How spans reach the collector.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum OtlpProtocol {
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// Whose W3C trace context (`traceparent`, `tracestate`) is continued.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IncomingContext {
    /// From peers in `server.trusted_proxies` only.
    #[default]
    Trusted,
    /// From every client.
    Always,
    /// From none: every request starts a trace.
    Never,
}
