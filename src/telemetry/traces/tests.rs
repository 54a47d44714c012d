use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use opentelemetry::trace::{SpanId, Status, TraceId};
use opentelemetry::{Context, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};

use super::export::{EXPORT_FAILED, QUEUE_FULL};
use super::*;

/// Keeps every finished span, as a collector would receive it.
#[derive(Debug, Clone, Default)]
struct Collected(Arc<Mutex<Vec<SpanData>>>);

impl SpanProcessor for Collected {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}
    fn on_end(&self, span: SpanData) {
        self.0.lock().unwrap().push(span);
    }
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }
    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

impl Collected {
    fn spans(&self) -> Vec<SpanData> {
        self.0.lock().unwrap().clone()
    }
}

const PARENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

fn with_parent(flags: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let parent = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-{flags}");
    headers.insert(TRACEPARENT, HeaderValue::try_from(parent).unwrap());
    headers.insert(TRACESTATE, HeaderValue::from_static("vendor=abc"));
    headers
}

fn attribute(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

fn finished(trace: RequestTrace, status: u16, error: Option<&'static str>) {
    trace.finish(Some(status), error);
}

#[test]
fn a_trusted_parent_is_continued_and_carried_upstream() {
    let collected = Collected::default();
    let tracing = Tracing::detached(Incoming::Trusted, 1.0, collected.clone());
    let mut trace = tracing.request(&with_parent("01"), true, "proxy");
    assert_eq!(
        trace.ids().trace_id,
        TraceId::from_hex(PARENT_TRACE).unwrap()
    );
    assert!(trace.sampled());
    trace.upstream_call("GET", "127.0.0.1:8080".parse().unwrap(), None, false);
    let upstream = trace.traceparent();
    let upstream = upstream.to_str().unwrap();
    assert!(
        upstream.starts_with(&format!("00-{PARENT_TRACE}-")),
        "{upstream}"
    );
    assert!(upstream.ends_with("-01"), "{upstream}");
    assert_eq!(trace.tracestate().unwrap(), "vendor=abc");
    let server_span = trace.ids().span_id;
    finished(*trace, 200, None);

    let spans = collected.spans();
    let server = spans
        .iter()
        .find(|s| s.span_context.span_id() == server_span)
        .unwrap();
    assert_eq!(
        server.parent_span_id,
        SpanId::from_hex(PARENT_SPAN).unwrap()
    );
    let client = spans
        .iter()
        .find(|s| s.span_context.span_id() != server_span)
        .unwrap();
    assert_eq!(
        client.parent_span_id, server_span,
        "the client span is the server span's child"
    );
    assert!(
        upstream.contains(&client.span_context.span_id().to_string()),
        "the upstream's parent is the client span"
    );
    assert_eq!(
        attribute(server, "http.response.status_code"),
        Some(Value::I64(200))
    );
}

#[test]
fn an_untrusted_or_refused_parent_starts_a_new_trace() {
    let parent = TraceId::from_hex(PARENT_TRACE).unwrap();
    for (incoming, trusted_peer) in [(Incoming::Trusted, false), (Incoming::Never, true)] {
        let tracing = Tracing::detached(incoming, 1.0, Collected::default());
        let trace = tracing.request(&with_parent("01"), trusted_peer, "proxy");
        assert_ne!(trace.ids().trace_id, parent, "{incoming:?}");
        assert_eq!(
            trace.tracestate(),
            None,
            "the client's tracestate is not forwarded"
        );
    }
    let tracing = Tracing::detached(Incoming::Always, 1.0, Collected::default());
    let trace = tracing.request(&with_parent("01"), false, "proxy");
    assert_eq!(trace.ids().trace_id, parent);
}

#[test]
fn an_unsampled_parent_is_followed_and_nothing_is_exported() {
    let collected = Collected::default();
    let tracing = Tracing::detached(Incoming::Always, 1.0, collected.clone());
    let mut trace = tracing.request(&with_parent("00"), false, "proxy");
    assert!(!trace.sampled());
    trace.set("jwtgate.route", || {
        panic!("no attribute is built for an unsampled span")
    });
    trace.upstream_call("GET", "127.0.0.1:8080".parse().unwrap(), None, false);
    let upstream = trace.traceparent();
    assert!(upstream.to_str().unwrap().ends_with("-00"));
    assert!(upstream.to_str().unwrap().contains(PARENT_TRACE));
    finished(*trace, 200, None);
    assert!(collected.spans().is_empty());
}

#[test]
fn a_failed_request_is_an_error_span_named_after_its_route() {
    let collected = Collected::default();
    let tracing = Tracing::detached(Incoming::Never, 1.0, collected.clone());
    let mut trace = tracing.request(&HeaderMap::new(), false, "proxy");
    trace.name(SpanName {
        method: "POST",
        route: Some("orders"),
    });
    finished(*trace, 502, Some("upstream_refused"));
    let spans = collected.spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].name, "POST orders");
    assert_eq!(
        attribute(&spans[0], "error.type"),
        Some(Value::from("upstream_refused"))
    );
    assert!(matches!(spans[0].status, Status::Error { .. }));
}

fn settings(endpoint: &str, max_queue_spans: usize) -> TraceSettings {
    TraceSettings {
        endpoint: endpoint.into(),
        protocol: Protocol::Grpc,
        headers: Default::default(),
        service_name: "jwtgate".into(),
        resource_attributes: Default::default(),
        sampling_ratio: 1.0,
        incoming: Incoming::Never,
        max_queue_spans,
        max_batch_spans: 1,
        batch_interval: Duration::from_millis(10),
        export_timeout: Duration::from_secs(5),
    }
}

/// Spans ended into `settings`' queue, with nothing taking them out.
fn tracer_with_queue(settings: &TraceSettings) -> (Tracing, Exporting) {
    let (queue, exporting) = export::queue(settings, Resource::builder_empty().build());
    (Tracing::detached(Incoming::Never, 1.0, queue), exporting)
}

#[test]
fn a_full_queue_drops_and_counts_instead_of_waiting() {
    let (tracing, exporting) = tracer_with_queue(&settings("http://127.0.0.1:9", 2));
    for _ in 0..5 {
        finished(
            *tracing.request(&HeaderMap::new(), false, "proxy"),
            200,
            None,
        );
    }
    let dropped = exporting.metrics().dropped.with_label_values(&[QUEUE_FULL]);
    assert_eq!(dropped.get(), 3, "two spans fit the queue");
}

#[tokio::test]
async fn an_unreachable_collector_costs_the_spans_and_says_so() {
    // Port 9 (discard) on loopback: nothing listens, connections are refused.
    let (tracing, exporting) = tracer_with_queue(&settings("http://127.0.0.1:9", 16));
    let failed = exporting
        .metrics()
        .dropped
        .with_label_values(&[EXPORT_FAILED]);
    let exported = exporting.metrics().exported.clone();
    let running = tokio::spawn(exporting.run());
    finished(
        *tracing.request(&HeaderMap::new(), false, "proxy"),
        200,
        None,
    );
    for _ in 0..500 {
        if failed.get() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.abort();
    assert_eq!(failed.get(), 1);
    assert_eq!(exported.get(), 0);
}

/// Spans waiting for a batch that would fill in an hour are sent at once
/// by the flush, and the loop ends: none is lost with the process.
#[tokio::test]
async fn the_flush_sends_what_waits_and_ends_the_loop() {
    let mut slow_batches = settings("http://127.0.0.1:9", 16);
    slow_batches.max_batch_spans = 100;
    slow_batches.batch_interval = Duration::from_secs(3600);
    let (tracing, exporting) = tracer_with_queue(&slow_batches);
    let failed = exporting
        .metrics()
        .dropped
        .with_label_values(&[EXPORT_FAILED]);
    let refused = exporting.metrics().dropped.with_label_values(&[QUEUE_FULL]);
    let flush = exporting.flush();
    let running = tokio::spawn(exporting.run());
    for _ in 0..3 {
        finished(
            *tracing.request(&HeaderMap::new(), false, "proxy"),
            200,
            None,
        );
    }
    // The collector refuses: the three spans were tried, and counted.
    assert!(flush.run().await, "the loop ended within export_timeout");
    assert_eq!(failed.get(), 3);
    running.await.expect("the export loop ended on its own");
    // A span finished after the flush is refused by the closed queue.
    finished(
        *tracing.request(&HeaderMap::new(), false, "proxy"),
        200,
        None,
    );
    assert_eq!(refused.get(), 1);
}

#[tokio::test]
async fn an_https_collector_is_reached_over_tls_with_the_system_roots() {
    let mut https = settings("https://collector.invalid:4317", 4);
    assert!(export::exporter(&https).is_ok());
    https.protocol = Protocol::HttpProtobuf;
    assert!(export::exporter(&https).is_ok());
}

#[test]
fn client_chosen_text_is_bounded_in_a_span() {
    let collected = Collected::default();
    let tracing = Tracing::detached(Incoming::Never, 1.0, collected.clone());
    let mut trace = tracing.request(&HeaderMap::new(), false, "proxy");
    let long = vec![b'a'; 10_000];
    trace.request_head(RequestHead {
        method: "GET",
        path: &long,
        https: false,
        http2: false,
        client: None,
        user_agent: Some(&long),
        host: Some(b"gateway.test:8443"),
    });
    finished(*trace, 200, None);
    let span = &collected.spans()[0];
    for key in ["url.path", "user_agent.original"] {
        let value = attribute(span, key).unwrap().as_str().into_owned();
        assert!(
            value.len() < 300 && value.ends_with("[10000 bytes]"),
            "{key}: {value}"
        );
    }
    assert_eq!(
        attribute(span, "server.address"),
        Some(Value::from("gateway.test"))
    );
    assert_eq!(attribute(span, "server.port"), Some(Value::I64(8443)));
}

#[test]
fn without_a_parent_the_ratio_decides_and_an_unsampled_request_has_no_span() {
    let collected = Collected::default();
    let never = Tracing::detached(Incoming::Never, 0.0, collected.clone());
    let trace = never.request(&HeaderMap::new(), false, "proxy");
    assert!(!trace.sampled());
    let upstream = trace.traceparent();
    let upstream = upstream.to_str().unwrap();
    assert_eq!(upstream.len(), 55);
    assert!(upstream.starts_with(&format!(
        "00-{}-{}-",
        trace.ids().trace_id,
        trace.ids().span_id
    )));
    assert!(upstream.ends_with("-00"), "{upstream}");
    assert_ne!(trace.ids().trace_id, TraceId::INVALID);
    finished(*trace, 200, None);
    assert!(collected.spans().is_empty());

    // A ratio of one half samples about half of 2 000 roots.
    let half = Tracing::detached(Incoming::Never, 0.5, Collected::default());
    let sampled = (0..2000)
        .filter(|_| half.request(&HeaderMap::new(), false, "proxy").sampled())
        .count();
    assert!((800..1200).contains(&sampled), "{sampled} of 2000");
}

#[test]
fn an_unsampled_continued_parent_keeps_its_trace_and_tracestate() {
    let tracing = Tracing::detached(Incoming::Always, 1.0, Collected::default());
    let trace = tracing.request(&with_parent("00"), false, "proxy");
    assert!(
        !trace.sampled(),
        "the parent's decision stands over the ratio"
    );
    assert_eq!(
        trace.ids().trace_id,
        TraceId::from_hex(PARENT_TRACE).unwrap()
    );
    assert_ne!(trace.ids().span_id, SpanId::from_hex(PARENT_SPAN).unwrap());
    assert_eq!(trace.tracestate().unwrap(), "vendor=abc");
}
