//! OpenTelemetry traces: the process's tracer, the W3C trace context a
//! request brings and carries on, and the export queue.
//!
//! Installed once at startup (tracing is restart-only), so the request
//! path and the key refreshers reach it without threading it through every
//! constructor. With tracing off nothing here runs: [`installed`] is
//! `None` and every adapter skips its span.

mod export;
mod request;

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use http::HeaderMap;
use http::HeaderValue;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt as _, TraceId, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    IdGenerator as _, RandomIdGenerator, Sampler, SdkTracer, SdkTracerProvider, Span,
};

pub use export::{Exporting, Flush, TraceMetrics};
pub use request::{RequestHead, RequestTrace, SpanName, TraceIds};

/// How spans reach the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// Whose incoming `traceparent` is continued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// From trusted proxies only.
    Trusted,
    Always,
    Never,
}

/// `telemetry.tracing`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    /// For `HttpProtobuf`, the full URL (`…/v1/traces`).
    pub endpoint: String,
    pub protocol: Protocol,
    /// Names and values already checked as valid HTTP headers.
    pub headers: BTreeMap<String, String>,
    pub service_name: String,
    pub resource_attributes: BTreeMap<String, String>,
    pub sampling_ratio: f64,
    pub incoming: Incoming,
    pub max_queue_spans: usize,
    pub max_batch_spans: usize,
    pub batch_interval: Duration,
    pub export_timeout: Duration,
}

/// The process's tracer, what it was told to trust, and how often it
/// starts a sampled trace.
pub struct Tracing {
    tracer: SdkTracer,
    incoming: Incoming,
    ratio: Ratio,
    // Owns the span processor: spans end into its queue while it lives.
    _provider: SdkTracerProvider,
}

static INSTALLED: OnceLock<Tracing> = OnceLock::new();

/// The tracer, once [`install`] ran; `None`: tracing is off.
pub fn installed() -> Option<&'static Tracing> {
    INSTALLED.get()
}

/// Installs the tracer for `settings` and returns the export loop, which
/// the caller runs in the background. `None` if one was installed already
/// (a second server in one process keeps the first's).
pub fn install(settings: &TraceSettings) -> Option<Exporting> {
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attributes(
            settings
                .resource_attributes
                .iter()
                .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
        )
        .build();
    let (queue, exporting) = export::queue(settings, resource.clone());
    // Sampling is decided before the SDK is asked for a span (see
    // `Tracing::request`): it only ever makes sampled ones.
    let provider = SdkTracerProvider::builder()
        .with_span_processor(queue)
        .with_sampler(Sampler::AlwaysOn)
        .with_resource(resource)
        .build();
    let tracing = Tracing {
        tracer: provider.tracer("jwtgate"),
        incoming: settings.incoming,
        ratio: Ratio::new(settings.sampling_ratio),
        _provider: provider,
    };
    INSTALLED.set(tracing).ok()?;
    Some(exporting)
}

impl Tracing {
    /// A tracer that exports nowhere, for unit tests of what spans carry.
    #[cfg(test)]
    fn detached(
        incoming: Incoming,
        ratio: f64,
        processor: impl opentelemetry_sdk::trace::SpanProcessor + 'static,
    ) -> Self {
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::AlwaysOn)
            .build();
        Self {
            tracer: provider.tracer("jwtgate"),
            incoming,
            ratio: Ratio::new(ratio),
            _provider: provider,
        }
    }

    /// The trace of a request whose headers are `headers`, from a peer
    /// that is (`trusted_peer`) or isn't one of the trusted proxies, taken
    /// by `adapter` (`proxy`, `authz`, `authz_grpc`). Parent-based: an
    /// accepted parent's decision stands; without one, the ratio decides.
    /// Only a sampled request gets a span from the SDK.
    pub fn request(
        &self,
        headers: &HeaderMap,
        trusted_peer: bool,
        adapter: &'static str,
    ) -> Box<RequestTrace> {
        let continued = match self.incoming {
            Incoming::Always => true,
            Incoming::Trusted => trusted_peer,
            Incoming::Never => false,
        };
        let parent = continued
            .then(|| headers.get(TRACEPARENT).is_some())
            .filter(|&sent| sent)
            .map(|_| TraceContextPropagator::new().extract(&Headers(headers)))
            .filter(|parent| parent.span().span_context().is_valid());
        let sampled = match &parent {
            Some(parent) => parent.span().span_context().is_sampled(),
            None => self
                .ratio
                .samples(RandomIdGenerator::default().new_trace_id()),
        };
        if !sampled {
            let ids = RandomIdGenerator::default();
            let trace = match &parent {
                Some(parent) => {
                    let span = parent.span();
                    let context = span.span_context();
                    let state = context.trace_state().header();
                    let state = (!state.is_empty())
                        .then(|| HeaderValue::try_from(state).ok())
                        .flatten();
                    RequestTrace::unsampled(context.trace_id(), ids.new_span_id(), state)
                }
                None => RequestTrace::unsampled(ids.new_trace_id(), ids.new_span_id(), None),
            };
            return Box::new(trace);
        }
        let builder = self
            .tracer
            .span_builder("request")
            .with_kind(SpanKind::Server)
            .with_attributes([KeyValue::new("jwtgate.adapter", adapter)]);
        let parent = parent.unwrap_or_default();
        let server = self.tracer.build_with_context(builder, &parent);
        Box::new(RequestTrace::sampled_with(server, &self.tracer))
    }

    /// A span of a task of jwtgate's own (a key fetch): the root of a
    /// trace of its own, sampled by the ratio like a request without a
    /// parent.
    pub fn background(
        &self,
        name: &'static str,
        attributes: Vec<KeyValue>,
    ) -> Option<BackgroundSpan> {
        if !self
            .ratio
            .samples(RandomIdGenerator::default().new_trace_id())
        {
            return None;
        }
        let builder = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_attributes(attributes);
        Some(BackgroundSpan(
            self.tracer.build_with_context(builder, &Context::new()),
        ))
    }
}

/// `sampling_ratio` as OpenTelemetry's `TraceIdRatioBased` applies it to
/// a random trace id: one whose lower 63 bits fall under the bound is
/// sampled.
#[derive(Debug, Clone, Copy)]
struct Ratio {
    bound: Option<u64>,
}

impl Ratio {
    fn new(ratio: f64) -> Self {
        let bound = (ratio < 1.0).then(|| (ratio.max(0.0) * (1u64 << 63) as f64) as u64);
        Self { bound }
    }

    fn samples(self, trace_id: TraceId) -> bool {
        let Some(bound) = self.bound else {
            return true;
        };
        let low = u64::from_be_bytes(trace_id.to_bytes()[8..].try_into().expect("8 bytes"));
        (low >> 1) < bound
    }
}

/// A background task's span; ends when finished (or dropped).
pub struct BackgroundSpan(Span);

impl BackgroundSpan {
    /// The span of `name` with `attributes`, when tracing is on.
    pub fn start(name: &'static str, attributes: &[(&'static str, &str)]) -> Option<Self> {
        let tracing = installed()?;
        let attributes = attributes
            .iter()
            .map(|(key, value)| KeyValue::new(*key, value.to_string()))
            .collect();
        tracing.background(name, attributes)
    }

    pub fn status_code(&mut self, status: u16) {
        self.0.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
    }

    /// Ends the span; `error`: how the task failed (`error.type`), and in
    /// words (the status description).
    pub fn finish(mut self, error: Option<(&'static str, String)>) {
        if let Some((kind, description)) = error {
            self.0.set_attribute(KeyValue::new("error.type", kind));
            self.0.set_status(Status::error(description));
        }
        self.0.end();
    }
}

/// Runs `task` in a span `name` of a trace of its own, when tracing is
/// on: a background sync or fetch. `status` is the HTTP status its result
/// came with, if any; a failure sets `error.type` to `kind(error)` and the
/// span's status to the error's text.
pub async fn traced<T, E: std::fmt::Display>(
    name: &'static str,
    attributes: &[(&'static str, &str)],
    kind: impl FnOnce(&E) -> &'static str,
    status: impl FnOnce(&Result<T, E>) -> Option<u16>,
    task: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let span = BackgroundSpan::start(name, attributes);
    let result = task.await;
    if let Some(mut span) = span {
        if let Some(status) = status(&result) {
            span.status_code(status);
        }
        span.finish(result.as_ref().err().map(|e| (kind(e), e.to_string())));
    }
    result
}

/// The W3C trace-context headers.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// A request's headers as the propagator reads them.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests;
