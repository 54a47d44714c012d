//! One request's spans: the server span every adapter opens, and the
//! client span of its upstream call. Attributes are only built for a
//! sampled request: an unsampled one costs its ids and nothing else.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use http::HeaderValue;
use http::uri::Authority;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceId, Tracer as _,
};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_sdk::trace::{SdkTracer, Span};

use crate::telemetry::Exemplar;
use crate::telemetry::logging::Truncated;

/// The ids a log line and an exemplar name a request by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceIds {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

/// A request's server span, and its upstream call's client span.
pub struct RequestTrace {
    server: Span,
    client: Option<Span>,
    tracer: SdkTracer,
}

impl RequestTrace {
    pub(super) fn new(server: Span, tracer: &SdkTracer) -> Self {
        Self {
            server,
            client: None,
            tracer: tracer.clone(),
        }
    }

    /// Whether the span is exported: attributes are worth building.
    pub fn sampled(&self) -> bool {
        self.server.is_recording()
    }

    /// The server span's ids.
    pub fn ids(&self) -> TraceIds {
        let context = self.server.span_context();
        TraceIds {
            trace_id: context.trace_id(),
            span_id: context.span_id(),
            sampled: context.is_sampled(),
        }
    }

    /// The exemplar a latency histogram keeps of this request: only of a
    /// sampled one, whose trace the collector has.
    pub fn exemplar(&self) -> Option<Exemplar> {
        let ids = self.ids();
        ids.sampled.then(|| Exemplar {
            trace_id: ids.trace_id.to_bytes(),
            span_id: ids.span_id.to_bytes(),
        })
    }

    /// Sets an attribute, built only if the span is sampled.
    pub fn set(&mut self, key: &'static str, value: impl FnOnce() -> Value) {
        if self.server.is_recording() {
            self.server.set_attribute(KeyValue::new(key, value()));
        }
    }

    /// Sets a text attribute; `None` sets nothing.
    pub fn set_text(&mut self, key: &'static str, value: Option<&str>) {
        if let Some(value) = value {
            self.set(key, || value.to_owned().into());
        }
    }

    /// The request's semantic-convention attributes, from its head.
    pub fn request_head(&mut self, head: RequestHead<'_>) {
        if !self.sampled() {
            return;
        }
        let version = if head.http2 { "2" } else { "1.1" };
        let mut attributes = vec![
            KeyValue::new("http.request.method", head.method.to_owned()),
            KeyValue::new("url.path", bounded(head.path)),
            KeyValue::new("url.scheme", if head.https { "https" } else { "http" }),
            KeyValue::new("network.protocol.version", version),
        ];
        if let Some(client) = head.client {
            attributes.push(KeyValue::new("client.address", client.to_string()));
        }
        if let Some(agent) = head.user_agent {
            attributes.push(KeyValue::new("user_agent.original", bounded(agent)));
        }
        // `Host` is `name[:port]`: the convention has them apart.
        if let Some(host) = head.host.and_then(|h| Authority::try_from(h).ok()) {
            attributes.push(KeyValue::new("server.address", host.host().to_owned()));
            if let Some(port) = host.port_u16() {
                attributes.push(KeyValue::new("server.port", i64::from(port)));
            }
        }
        self.server.set_attributes(attributes);
    }

    /// Opens the client span of the upstream call to `peer`.
    /// `host`: the name it was reached by, if not only its address.
    pub fn upstream_call(&mut self, method: &str, peer: SocketAddr, host: Option<&str>, tls: bool) {
        if !self.sampled() {
            return;
        }
        let parent = Context::new().with_remote_span_context(self.server.span_context().clone());
        let builder = self
            .tracer
            .span_builder(method.to_owned())
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new(
                    "server.address",
                    host.map_or_else(|| peer.ip().to_string(), str::to_owned),
                ),
                KeyValue::new("server.port", i64::from(peer.port())),
                KeyValue::new("network.peer.address", peer.ip().to_string()),
                KeyValue::new("jwtgate.upstream.tls", tls),
            ]);
        // A retry to the next address replaces the attempt before it.
        if let Some(mut earlier) = self
            .client
            .replace(self.tracer.build_with_context(builder, &parent))
        {
            earlier.set_status(Status::error("connect failed; retried"));
            earlier.end();
        }
    }

    /// The status the upstream answered.
    pub fn upstream_status(&mut self, status: u16) {
        if let Some(client) = &mut self.client {
            client.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
    }

    /// `traceparent` for the upstream request: the client span's id when
    /// there is one, the server span's otherwise (an unsampled request
    /// still carries its trace on, flagged unsampled).
    pub fn traceparent(&self) -> HeaderValue {
        let context = match &self.client {
            Some(client) => client.span_context(),
            None => self.server.span_context(),
        };
        let mut text = String::with_capacity(55);
        let _ = write!(
            text,
            "00-{}-{}-{:02x}",
            context.trace_id(),
            context.span_id(),
            context.trace_flags().to_u8()
        );
        HeaderValue::try_from(text).expect("hex digits and dashes")
    }

    /// The `tracestate` continued from the client, if any.
    pub fn tracestate(&self) -> Option<HeaderValue> {
        let state = self.server.span_context().trace_state().header();
        (!state.is_empty())
            .then(|| HeaderValue::try_from(state).ok())
            .flatten()
    }

    /// Names the server span (`GET route`), once the route is known.
    pub fn name(&mut self, name: SpanName<'_>) {
        if self.sampled() {
            self.server.update_name(name.to_string());
        }
    }

    /// Ends the spans: `status` is what the client was answered (`None`:
    /// nothing was), `error` how the request failed (the access log's
    /// `error`).
    pub fn finish(mut self, status: Option<u16>, error: Option<&'static str>) {
        if let Some(mut client) = self.client.take() {
            if let Some(error) = error {
                client.set_attribute(KeyValue::new("error.type", error));
                client.set_status(Status::error(error));
            }
            client.end();
        }
        if !self.sampled() {
            return;
        }
        if let Some(status) = status {
            self.server.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        let failed = error.or_else(|| status.filter(|s| *s >= 500).map(|_| "server_error"));
        if let Some(error) = error {
            self.server
                .set_attribute(KeyValue::new("error.type", error));
        }
        if let Some(failed) = failed {
            self.server.set_status(Status::error(failed));
        }
        self.server.end_with_timestamp(SystemTime::now());
    }
}

/// The longest client-chosen text a span carries, as in the access log:
/// a queue of spans with 64 KiB paths would be a queue of megabytes.
const SPAN_TEXT_BYTES: usize = 256;

fn bounded(text: &[u8]) -> String {
    Truncated::new(&String::from_utf8_lossy(text), SPAN_TEXT_BYTES).to_string()
}

/// What a server span is named: `GET route`, or `GET` without one.
pub struct SpanName<'a> {
    pub method: &'a str,
    pub route: Option<&'a str>,
}

impl std::fmt::Display for SpanName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.route {
            Some(route) => write!(f, "{} {route}", self.method),
            None => f.write_str(self.method),
        }
    }
}

/// The parts of a request head its server span describes.
pub struct RequestHead<'a> {
    pub method: &'a str,
    /// Never the query: a route may take its token there.
    pub path: &'a [u8],
    pub https: bool,
    pub http2: bool,
    pub client: Option<IpAddr>,
    pub user_agent: Option<&'a [u8]>,
    pub host: Option<&'a [u8]>,
}

impl std::fmt::Debug for RequestTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let context: &SpanContext = self.server.span_context();
        f.debug_struct("RequestTrace")
            .field("trace_id", &context.trace_id())
            .field("span_id", &context.span_id())
            .finish()
    }
}
