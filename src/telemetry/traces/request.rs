//! One request's spans: the server span every adapter opens, and the
//! client span of its upstream call. Attributes are only built for a
//! sampled request: an unsampled one costs its ids and nothing else.

use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use http::HeaderValue;
use http::uri::Authority;
use opentelemetry::trace::{
    Span as _, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId, Tracer as _,
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

/// A request's trace: for a sampled request its server span and its
/// upstream call's client span; for any other only the ids it carries on,
/// so an unsampled request costs two random numbers and no span.
pub struct RequestTrace(Kind);

enum Kind {
    Sampled(Box<Spans>),
    Unsampled {
        trace_id: TraceId,
        span_id: SpanId,
        /// The accepted parent's `tracestate`, forwarded as it came.
        state: Option<HeaderValue>,
    },
}

/// A sampled request's spans, and the tracer its client span comes from.
struct Spans {
    server: Span,
    client: Option<Span>,
    tracer: SdkTracer,
}

impl RequestTrace {
    pub(super) fn sampled_with(server: Span, tracer: &SdkTracer) -> Self {
        Self(Kind::Sampled(Box::new(Spans {
            server,
            client: None,
            tracer: tracer.clone(),
        })))
    }

    pub(super) fn unsampled(
        trace_id: TraceId,
        span_id: SpanId,
        state: Option<HeaderValue>,
    ) -> Self {
        Self(Kind::Unsampled {
            trace_id,
            span_id,
            state,
        })
    }

    fn spans(&mut self) -> Option<&mut Spans> {
        match &mut self.0 {
            Kind::Sampled(spans) => Some(spans),
            Kind::Unsampled { .. } => None,
        }
    }

    /// Whether the span is exported: attributes are worth building.
    pub fn sampled(&self) -> bool {
        matches!(self.0, Kind::Sampled(_))
    }

    /// The server span's ids.
    pub fn ids(&self) -> TraceIds {
        match &self.0 {
            Kind::Sampled(spans) => {
                let context = spans.server.span_context();
                TraceIds {
                    trace_id: context.trace_id(),
                    span_id: context.span_id(),
                    sampled: true,
                }
            }
            Kind::Unsampled {
                trace_id, span_id, ..
            } => TraceIds {
                trace_id: *trace_id,
                span_id: *span_id,
                sampled: false,
            },
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
        if let Some(spans) = self.spans() {
            spans.server.set_attribute(KeyValue::new(key, value()));
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
        let Some(spans) = self.spans() else {
            return;
        };
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
        spans.server.set_attributes(attributes);
    }

    /// Opens the client span of the upstream call to `peer`.
    /// `host`: the name it was reached by, if not only its address.
    pub fn upstream_call(&mut self, method: &str, peer: SocketAddr, host: Option<&str>, tls: bool) {
        let Some(spans) = self.spans() else {
            return;
        };
        let parent = Context::new().with_remote_span_context(spans.server.span_context().clone());
        let builder = spans
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
        let client = spans.tracer.build_with_context(builder, &parent);
        if let Some(mut earlier) = spans.client.replace(client) {
            earlier.set_status(Status::error("connect failed; retried"));
            earlier.end();
        }
    }

    /// The status the upstream answered.
    pub fn upstream_status(&mut self, status: u16) {
        if let Some(client) = self.spans().and_then(|spans| spans.client.as_mut()) {
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
        let (trace_id, span_id, flags) = match &self.0 {
            Kind::Sampled(spans) => {
                let span = spans.client.as_ref().unwrap_or(&spans.server);
                let context = span.span_context();
                (context.trace_id(), context.span_id(), context.trace_flags())
            }
            Kind::Unsampled {
                trace_id, span_id, ..
            } => (*trace_id, *span_id, TraceFlags::NOT_SAMPLED),
        };
        traceparent(trace_id, span_id, flags)
    }

    /// The `tracestate` continued from the client, if any.
    pub fn tracestate(&self) -> Option<HeaderValue> {
        match &self.0 {
            Kind::Sampled(spans) => {
                let state = spans.server.span_context().trace_state().header();
                (!state.is_empty())
                    .then(|| HeaderValue::try_from(state).ok())
                    .flatten()
            }
            Kind::Unsampled { state, .. } => state.clone(),
        }
    }

    /// Names the server span (`GET route`), once the route is known.
    pub fn name(&mut self, name: SpanName<'_>) {
        if let Some(spans) = self.spans() {
            spans.server.update_name(name.to_string());
        }
    }

    /// Ends the spans: `status` is what the client was answered (`None`:
    /// nothing was), `error` how the request failed (the access log's
    /// `error`).
    pub fn finish(self, status: Option<u16>, error: Option<&'static str>) {
        let Kind::Sampled(spans) = self.0 else {
            return;
        };
        let Spans {
            mut server, client, ..
        } = *spans;
        if let Some(mut client) = client {
            if let Some(error) = error {
                client.set_attribute(KeyValue::new("error.type", error));
                client.set_status(Status::error(error));
            }
            client.end();
        }
        if let Some(status) = status {
            server.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        let failed = error.or_else(|| status.filter(|s| *s >= 500).map(|_| "server_error"));
        if let Some(error) = error {
            server.set_attribute(KeyValue::new("error.type", error));
        }
        if let Some(failed) = failed {
            server.set_status(Status::error(failed));
        }
        server.end_with_timestamp(SystemTime::now());
    }
}

/// `00-<trace id>-<span id>-<flags>`, written on the stack: every traced
/// request sends one upstream, sampled or not.
fn traceparent(trace_id: TraceId, span_id: SpanId, flags: TraceFlags) -> HeaderValue {
    let ids = Exemplar {
        trace_id: trace_id.to_bytes(),
        span_id: span_id.to_bytes(),
    };
    let flags = if flags.is_sampled() { b"01" } else { b"00" };
    let mut value = [0u8; 55];
    value[..3].copy_from_slice(b"00-");
    value[3..35].copy_from_slice(ids.trace_id_hex().as_str().as_bytes());
    value[35] = b'-';
    value[36..52].copy_from_slice(ids.span_id_hex().as_str().as_bytes());
    value[52] = b'-';
    value[53..].copy_from_slice(flags);
    HeaderValue::from_bytes(&value).expect("hex digits and dashes")
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
        let ids = self.ids();
        f.debug_struct("RequestTrace")
            .field("trace_id", &ids.trace_id)
            .field("span_id", &ids.span_id)
            .field("sampled", &ids.sampled)
            .finish()
    }
}
