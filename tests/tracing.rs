//! OpenTelemetry tracing (`telemetry.tracing`) end to end: the real
//! `jwtgate` binary exporting to a real OTLP receiver
//! (`tests/otlp/receiver.py`, the official protobuf definitions) over gRPC
//! and HTTP/protobuf, in front of the recording upstream, with tokens signed
//! by the fixture keys and a real OpenID provider for the fetch spans.
//!
//! What is checked is what an operator relies on: each request's server
//! span and its attributes, the client span and the `traceparent` the
//! upstream receives, whose context is continued (trusted peers only),
//! parent-based sampling, the access log's ids, the background fetch spans,
//! and that a collector that is down or slow never holds a request up and
//! its lost spans are counted. Waits are bounded polls; nothing is timed.

mod common;
#[path = "common/idp.rs"]
mod idp;
#[path = "common/otlp.rs"]
mod otlp;
#[path = "common/redis.rs"]
mod redis;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use otlp::{Behaviour, CLIENT, Receiver, SERVER, STATUS_ERROR, Span};
use serde_json::{Value, json};

const SERVICE: &str = "jwtgate-under-test";
const ENVIRONMENT: &str = "tracing-test";
/// The `headers` every export carries, as a collector's API key would be.
const EXPORT_HEADER: (&str, &str) = ("x-api-key", "tracing-test-export-key");
const EXPORTED: &str = "jwtgate_trace_spans_exported_total";
const DROPPED: &str = "jwtgate_trace_spans_dropped_total";
/// Clients on loopback are the trusted front proxies of these configs.
const TRUST_LOOPBACK: &str = r#"trusted_proxies: ["127.0.0.1/32"]"#;

const ROUTES: &str = r#"
  - name: api
    match: { path_prefix: /api }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { issuers: [main] }
    rate_limits: [{ name: per-client, rate: 1000/s, key: client_address }]
  - name: gone
    match: { path_prefix: /gone }
    upstream: { addrs: ["127.0.0.1:9"] }
    auth: { mode: off }
"#;

// ---------------------------------------------------------------------------
// Configs and gateways
// ---------------------------------------------------------------------------

/// The `telemetry.tracing` block for the collector at `endpoint`: the export
/// header, the service name and a resource attribute, short batches, and
/// `settings` (a `key: value` each) over that.
fn telemetry(endpoint: &str, settings: &[&str]) -> String {
    let (header, value) = EXPORT_HEADER;
    let mut yaml = format!(
        "telemetry:\n  tracing:\n    endpoint: \"{endpoint}\"\n    headers: {{ {header}: {value} }}\n    service_name: {SERVICE}\n    resource_attributes: {{ deployment.environment: {ENVIRONMENT} }}\n"
    );
    if !settings.iter().any(|s| s.starts_with("batch_interval:")) {
        yaml.push_str("    batch_interval: 100ms\n");
    }
    for setting in settings {
        yaml.push_str(&format!("    {setting}\n"));
    }
    yaml
}

/// A config with tracing to `endpoint`, the fixture-key issuer `main`, a
/// revocation list and the rate-limited route `api`; `server` settings
/// (such as [`TRUST_LOOPBACK`]) beside the test defaults.
fn config(endpoint: &str, settings: &[&str], server: Option<&str>) -> Config {
    let mut config = Config::main(ISS)
        .section(&telemetry(endpoint, settings))
        .section("revocation: {}");
    if let Some(server) = server {
        config = config.server(server);
    }
    config
}

/// A gateway logging JSON lines (so the access log's ids are read as
/// fields) in front of `upstream`.
async fn gateway(yaml: &str, upstream: &Upstream) -> Gateway {
    Gateway::start_with_args(yaml, upstream, &["--log-format", "json"]).await
}

/// A receiver, an upstream and a gateway exporting to the receiver over
/// gRPC with `settings`.
async fn traced(settings: &[&str], server: Option<&str>) -> (Receiver, Upstream, Gateway) {
    traced_at(Receiver::grpc_endpoint, settings, server).await
}

/// [`traced`], exporting to the receiver's `endpoint`.
async fn traced_at(
    endpoint: fn(&Receiver) -> String,
    settings: &[&str],
    server: Option<&str>,
) -> (Receiver, Upstream, Gateway) {
    let receiver = Receiver::start().await;
    let upstream = Upstream::start();
    let yaml = config(&endpoint(&receiver), settings, server).routes(ROUTES);
    let gateway = gateway(&yaml, &upstream).await;
    (receiver, upstream, gateway)
}

// ---------------------------------------------------------------------------
// Requests, and what the upstream and the access log saw of them
// ---------------------------------------------------------------------------

/// A token of `main` for `sub`, with a `jti` (revocable) and a claim that
/// must never reach a span.
fn token_of(sub: &str) -> String {
    token(
        ISS,
        sub,
        json!({ "jti": format!("{sub}-jti"), "email": format!("{sub}@mail.test") }),
    )
}

/// `GET path` tagged with `request_id` (X-Request-Id and the user agent),
/// with a bearer `token` if given and more `headers`; the status. Bounded,
/// so a gateway that held requests up would fail the test, not hang it.
async fn get(
    gateway: &Gateway,
    path: &str,
    request_id: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> u16 {
    let agent = format!("tracing-test/{request_id}");
    let mut all = vec![("x-request-id", request_id), ("user-agent", agent.as_str())];
    all.extend_from_slice(headers);
    let request = gateway.get_with(path, token, &all);
    tokio::time::timeout(Duration::from_secs(30), request)
        .await
        .unwrap_or_else(|_| panic!("GET {path} ({request_id}) got no answer"))
        .status()
        .as_u16()
}

/// The request the upstream received with `request_id`.
fn upstream_request(upstream: &Upstream, request_id: &str) -> Recorded {
    let requests = upstream.requests();
    requests
        .iter()
        .find(|request| request.header("x-request-id") == Some(request_id))
        .cloned()
        .unwrap_or_else(|| panic!("the upstream received no {request_id}: {requests:#?}"))
}

/// A W3C `traceparent` taken apart: (trace id, parent id, flags), after
/// checking its shape.
#[track_caller]
fn traceparent(value: &str) -> (String, String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |part: &str, len: usize| {
        part.len() == len && part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    assert!(
        parts.len() == 4
            && parts[0] == "00"
            && hex(parts[1], 32)
            && hex(parts[2], 16)
            && hex(parts[3], 2),
        "not a version-00 traceparent: {value:?}"
    );
    assert_ne!(parts[1], "0".repeat(32), "all-zero trace id: {value}");
    assert_ne!(parts[2], "0".repeat(16), "all-zero parent id: {value}");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

/// The `traceparent` the upstream received with `request_id`, taken apart.
fn upstream_traceparent(upstream: &Upstream, request_id: &str) -> (String, String, String) {
    let request = upstream_request(upstream, request_id);
    let values = request.header_all("traceparent");
    assert_eq!(values.len(), 1, "one traceparent upstream: {request:#?}");
    traceparent(values[0])
}

/// An allowed request `GET /api/{request_id}` with `token` and `headers`,
/// as [`get`] sends it: the `traceparent` the upstream received, taken
/// apart.
async fn proxied(
    gateway: &Gateway,
    upstream: &Upstream,
    request_id: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> (String, String, String) {
    let path = format!("/api/{request_id}");
    let status = get(gateway, &path, request_id, Some(token), headers).await;
    assert_eq!(status, 200, "{request_id}");
    upstream_traceparent(upstream, request_id)
}

/// The access-log line (JSON) of `request_id`, once it is written.
async fn access_line(gateway: &Gateway, request_id: &str) -> Value {
    let parse = |log: &str| -> Option<Value> {
        log.lines()
            .filter(|line| line.contains("jwtgate::access"))
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|line| line["request_id"] == request_id)
    };
    let log = gateway.wait_for_log(|log| parse(log).is_some()).await;
    parse(&log).unwrap_or_else(|| panic!("no access line for {request_id}; log:\n{log}"))
}

/// The access log's (`trace_id`, `span_id`) of `request_id`: 32 and 16
/// lowercase hex digits.
async fn logged_ids(gateway: &Gateway, request_id: &str) -> (String, String, Value) {
    let line = access_line(gateway, request_id).await;
    let field = |name: &str, len: usize| -> String {
        let value = line[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} in {line}"));
        let hex = value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        assert!(value.len() == len && hex, "{name} {value:?} in {line}");
        value.to_string()
    };
    (field("trace_id", 32), field("span_id", 16), line)
}

// ---------------------------------------------------------------------------
// Span lookups and checks
// ---------------------------------------------------------------------------

/// The server span of trace `trace_id`, once it has arrived.
async fn server_span(receiver: &Receiver, trace_id: &str) -> Span {
    receiver
        .wait_for_span(|span| span.trace_id == trace_id && span.kind == SERVER)
        .await
}

/// The span with exactly these ids, once it has arrived.
async fn span_with_ids(receiver: &Receiver, trace_id: &str, span_id: &str) -> Span {
    receiver
        .wait_for_span(|span| span.trace_id == trace_id && span.span_id == span_id)
        .await
}

/// The first CLIENT span called `name`, once it has arrived.
async fn client_span_named(receiver: &Receiver, name: &str) -> Span {
    receiver
        .wait_for_span(|span| span.name == name && span.kind == CLIENT)
        .await
}

/// The spans of trace `trace_id` among `spans`.
fn in_trace<'a>(spans: &'a [Span], trace_id: &str) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|span| span.trace_id == trace_id)
        .collect()
}

/// Each `(attribute, value)` is on `span`, with that exact JSON value.
#[track_caller]
fn assert_attributes(span: &Span, expected: &[(&str, Value)]) {
    for (name, value) in expected {
        assert_eq!(
            span.attr(name),
            Some(value),
            "attribute {name} of span {:?}: {span:#?}",
            span.name
        );
    }
}

/// `span`'s `name` attribute is the access log's `field`: absent where the
/// log has `null`.
#[track_caller]
fn assert_as_logged(span: &Span, name: &str, line: &Value, field: &str) {
    let logged = &line[field];
    let expected = (!logged.is_null()).then_some(logged);
    assert_eq!(
        span.attr(name),
        expected,
        "{name} against the access log's {field} ({line}): {span:#?}"
    );
}

/// Nothing of `token` (a whole segment of it) in any span.
#[track_caller]
fn assert_token_absent(spans: &[Span], token: &str) {
    let text = format!("{spans:?}");
    for segment in token.split('.') {
        assert!(
            !text.contains(segment),
            "a segment of the token is in the exported spans: {spans:#?}"
        );
    }
}

// ---------------------------------------------------------------------------
// A proxied request, over both protocols
// ---------------------------------------------------------------------------

/// A proxied, allowed request exported with `protocol` to the receiver's
/// `endpoint`: its server span with every attribute of the contract, its
/// client span, the `traceparent` upstream, the resource, the export
/// headers, and the access log's ids.
async fn a_proxied_request_is_traced(protocol: &str, endpoint: fn(&Receiver) -> String) {
    let protocol_setting = format!("protocol: {protocol}");
    let (receiver, upstream, gateway) = traced_at(endpoint, &[&protocol_setting], None).await;
    let alice = token_of("alice");

    let (trace_id, client_span_id, flags) =
        proxied(&gateway, &upstream, "first", &alice, &[]).await;
    assert_eq!(flags, "01", "sampled at the default ratio 1.0");
    assert!(
        !upstream_request(&upstream, "first").has_header("tracestate"),
        "no tracestate was accepted, none goes upstream"
    );

    let server = server_span(&receiver, &trace_id).await;
    let transport = if protocol == "grpc" { "grpc" } else { "http" };
    assert_eq!(server.transport, transport, "{server:#?}");
    assert_eq!(server.name, "GET api");
    assert!(server.is_root(), "no incoming context: {server:#?}");
    assert_ne!(server.status.code, STATUS_ERROR, "{server:#?}");
    assert_attributes(
        &server,
        &[
            ("http.request.method", json!("GET")),
            ("url.path", json!("/api/first")),
            ("url.scheme", json!("http")),
            ("http.response.status_code", json!(200)),
            ("network.protocol.version", json!("1.1")),
            ("client.address", json!("127.0.0.1")),
            ("user_agent.original", json!("tracing-test/first")),
            ("jwtgate.adapter", json!("proxy")),
            ("jwtgate.route", json!("api")),
            ("jwtgate.outcome", json!("allow")),
            ("jwtgate.issuer", json!("main")),
            ("jwtgate.token.alg", json!("RS256")),
            ("jwtgate.token.kid", json!("rsa-1")),
            ("jwtgate.token.cache_hit", json!(false)),
            ("jwtgate.keys.source", json!("local")),
            ("jwtgate.revocation", json!("not_revoked")),
            ("jwtgate.rate_limit", json!("allowed")),
            ("enduser.id", json!("alice")),
        ],
    );
    // The Host header's name and port, apart.
    assert_eq!(
        server.str_attr("server.address"),
        "127.0.0.1",
        "{server:#?}"
    );
    assert!(
        server.attr("server.port").is_some_and(|port| port.is_u64()),
        "{server:#?}"
    );
    for absent in ["jwtgate.reason", "error.type"] {
        assert!(server.attr(absent).is_none(), "{absent}: {server:#?}");
    }
    assert_eq!(server.resource["service.name"], SERVICE);
    assert_eq!(server.resource["deployment.environment"], ENVIRONMENT);

    let spans = receiver
        .wait_for_spans(|spans| in_trace(spans, &trace_id).len() >= 2)
        .await;
    let client = in_trace(&spans, &trace_id)
        .into_iter()
        .find(|span| span.kind == CLIENT)
        .unwrap_or_else(|| panic!("no client span in trace {trace_id}: {spans:#?}"));
    assert_eq!(client.name, "GET");
    assert!(client.is_child_of(&server), "{client:#?}\n{server:#?}");
    assert_eq!(
        client.span_id, client_span_id,
        "the upstream's traceparent names the client span"
    );
    assert_attributes(
        client,
        &[
            ("server.address", json!("127.0.0.1")),
            ("server.port", json!(upstream.addr().port())),
            ("network.peer.address", json!("127.0.0.1")),
            ("jwtgate.upstream.tls", json!(false)),
            ("http.response.status_code", json!(200)),
        ],
    );

    let (logged_trace, logged_span, _) = logged_ids(&gateway, "first").await;
    assert_eq!(
        (logged_trace, logged_span),
        (trace_id, server.span_id.clone())
    );

    // The same token again: verified from the cache this time.
    let (again, _, _) = proxied(&gateway, &upstream, "again", &alice, &[]).await;
    let server = server_span(&receiver, &again).await;
    assert_attributes(&server, &[("jwtgate.token.cache_hit", json!(true))]);

    let spans = receiver.spans().await;
    assert_token_absent(&spans, &alice);
    let text = format!("{spans:?}");
    assert!(
        !text.contains("alice@mail.test"),
        "a claim other than sub: {text}"
    );

    let exports = receiver
        .wait_for_exports(|exports| !exports.is_empty())
        .await;
    for export in &exports {
        let (name, value) = EXPORT_HEADER;
        assert_eq!(export.transport, transport, "{export:#?}");
        assert_eq!(export.headers.get(name).map(String::as_str), Some(value));
    }
    gateway.expect_metric_at_least(EXPORTED, &[], 2.0).await;
    assert_eq!(gateway.metric(DROPPED, &[]).await, 0.0);
}

#[tokio::test]
async fn a_proxied_request_is_traced_over_grpc() {
    a_proxied_request_is_traced("grpc", Receiver::grpc_endpoint).await;
}

/// A base URL: jwtgate appends `/v1/traces` (the receiver answers nothing
/// else).
#[tokio::test]
async fn a_proxied_request_is_traced_over_http_protobuf() {
    a_proxied_request_is_traced("http/protobuf", Receiver::http_endpoint).await;
}

// ---------------------------------------------------------------------------
// Incoming context
// ---------------------------------------------------------------------------

const CLIENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";
const CLIENT_STATE: &str = "vendor=opaque";
/// A trace a client did not sample.
const UNSAMPLED_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// An allowed request carrying the client's context: `traceparent` in
/// `trace_id` from [`CLIENT_SPAN`] with `flags`, and [`CLIENT_STATE`]. The
/// `traceparent` the upstream received, taken apart.
async fn proxied_in_context(
    gateway: &Gateway,
    upstream: &Upstream,
    request_id: &str,
    trace_id: &str,
    flags: &str,
) -> (String, String, String) {
    let parent = format!("00-{trace_id}-{CLIENT_SPAN}-{flags}");
    let headers = [
        ("traceparent", parent.as_str()),
        ("tracestate", CLIENT_STATE),
    ];
    proxied(gateway, upstream, request_id, &token_of("carol"), &headers).await
}

/// A trusted peer's context is continued: the server span is the client
/// span's child in the client's trace, the upstream gets that trace and the
/// client's `tracestate`. Trusted by `server.trusted_proxies` under the
/// default `incoming_context: trusted`, or by `incoming_context: always`.
#[tokio::test]
async fn a_trusted_client_context_is_continued() {
    let receiver = Receiver::start().await;
    let endpoint = receiver.grpc_endpoint();
    for (settings, server) in [
        (&[][..], Some(TRUST_LOOPBACK)),
        (&["incoming_context: always"][..], None),
    ] {
        let upstream = Upstream::start();
        let yaml = config(&endpoint, settings, server).routes(ROUTES);
        let gateway = gateway(&yaml, &upstream).await;
        let (trace_id, parent, flags) =
            proxied_in_context(&gateway, &upstream, "continued", CLIENT_TRACE, "01").await;
        assert_eq!((trace_id.as_str(), flags.as_str()), (CLIENT_TRACE, "01"));
        assert_ne!(parent, CLIENT_SPAN, "jwtgate's own span is the parent");
        let request = upstream_request(&upstream, "continued");
        assert_eq!(request.header_all("tracestate"), [CLIENT_STATE]);

        let (_, span_id, _) = logged_ids(&gateway, "continued").await;
        let server_span = span_with_ids(&receiver, CLIENT_TRACE, &span_id).await;
        assert_eq!(server_span.kind, SERVER, "{settings:?}");
        assert_eq!(server_span.parent_span_id, CLIENT_SPAN, "{settings:?}");
    }
}

/// An untrusted client's context is ignored: a new trace, a root server
/// span, and the upstream sees neither its `traceparent` nor its
/// `tracestate`. Untrusted under `incoming_context: never` even from a
/// trusted proxy, and under the default from a peer that is not one.
#[tokio::test]
async fn an_untrusted_client_context_is_ignored() {
    let receiver = Receiver::start().await;
    let endpoint = receiver.grpc_endpoint();
    for (settings, server) in [
        (&["incoming_context: never"][..], Some(TRUST_LOOPBACK)),
        (&[][..], None),
    ] {
        let upstream = Upstream::start();
        let yaml = config(&endpoint, settings, server).routes(ROUTES);
        let gateway = gateway(&yaml, &upstream).await;
        let (trace_id, parent, _) =
            proxied_in_context(&gateway, &upstream, "ignored", CLIENT_TRACE, "01").await;
        let request = upstream_request(&upstream, "ignored");
        assert_ne!(trace_id, CLIENT_TRACE, "{settings:?}: {request:#?}");
        assert_ne!(parent, CLIENT_SPAN, "{settings:?}: {request:#?}");
        assert!(
            !request.has_header("tracestate"),
            "{settings:?}: {request:#?}"
        );

        let server_span = server_span(&receiver, &trace_id).await;
        assert!(server_span.is_root(), "{settings:?}: {server_span:#?}");
        let (logged_trace, _, _) = logged_ids(&gateway, "ignored").await;
        assert_eq!(logged_trace, trace_id);
    }
}

// ---------------------------------------------------------------------------
// Sampling
// ---------------------------------------------------------------------------

/// `sampling_ratio: 0.0` samples nothing of its own, yet the upstream gets
/// a `traceparent` (flags `00`) and the access log its ids; a trusted
/// sampled parent is sampled all the same and an unsampled one is not
/// (parent-based). Exported over HTTP to an endpoint that already ends in
/// `/v1/traces`, which is taken as it is.
#[tokio::test]
async fn sampling_is_parent_based_under_the_ratio() {
    let endpoint = |receiver: &Receiver| format!("{}/v1/traces", receiver.http_endpoint());
    let settings = ["protocol: http/protobuf", "sampling_ratio: 0.0"];
    let (receiver, upstream, gateway) = traced_at(endpoint, &settings, Some(TRUST_LOOPBACK)).await;
    let token = token_of("dave");

    let (own_trace, _, flags) = proxied(&gateway, &upstream, "own", &token, &[]).await;
    assert_eq!(flags, "00", "not sampled, still propagated");
    let (logged_trace, _, _) = logged_ids(&gateway, "own").await;
    assert_eq!(logged_trace, own_trace);

    // Not sampled by its parent: propagated as such.
    let (trace_id, _, flags) =
        proxied_in_context(&gateway, &upstream, "unsampled", UNSAMPLED_TRACE, "00").await;
    assert_eq!((trace_id.as_str(), flags.as_str()), (UNSAMPLED_TRACE, "00"));
    // Its access line is written when its span ends: before the next
    // request's, so the next export would carry it if it were sampled.
    logged_ids(&gateway, "unsampled").await;
    logged_ids(&gateway, "own").await;

    let (trace_id, _, flags) =
        proxied_in_context(&gateway, &upstream, "sampled", CLIENT_TRACE, "01").await;
    assert_eq!((trace_id.as_str(), flags.as_str()), (CLIENT_TRACE, "01"));
    let spans = receiver
        .wait_for_spans(|spans| in_trace(spans, CLIENT_TRACE).len() >= 2)
        .await;
    let kinds: Vec<&str> = in_trace(&spans, CLIENT_TRACE)
        .iter()
        .map(|span| span.kind.as_str())
        .collect();
    assert!(
        kinds.contains(&SERVER) && kinds.contains(&CLIENT),
        "{spans:#?}"
    );
    for unsampled in [own_trace.as_str(), UNSAMPLED_TRACE] {
        assert!(
            in_trace(&spans, unsampled).is_empty(),
            "trace {unsampled} was not sampled: {spans:#?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Refused requests
// ---------------------------------------------------------------------------

/// Requests jwtgate answers itself, refused or failed upstream, get a
/// server span too, with the access log's outcome, reason and error (an
/// ERROR status for a 5xx), and the access log carries that span's ids; the
/// token, valid or forged, is in no span.
#[tokio::test]
async fn answers_of_jwtgate_itself_have_server_spans_and_logged_ids() {
    let (receiver, upstream, gateway) = traced(&[], None).await;
    let mut forged = token_of("mallory");
    forged.truncate(forged.len() - 4);
    forged.push_str("AAAA");

    // (request id, status, span name, outcome, reason)
    let cases = [
        (
            "no-token",
            401,
            "GET api",
            Some("deny"),
            Some("missing_token"),
        ),
        (
            "forged",
            401,
            "GET api",
            Some("deny"),
            Some("bad_signature"),
        ),
        ("no-route", 404, "GET", None, None),
        ("encoded-slash", 400, "GET", None, Some("encoded_slash")),
        // Nothing listens on the route's upstream.
        ("gone", 502, "GET gone", None, None),
    ];
    assert_eq!(get(&gateway, "/api/a", "no-token", None, &[]).await, 401);
    assert_eq!(
        get(&gateway, "/api/a", "forged", Some(&forged), &[]).await,
        401
    );
    assert_eq!(get(&gateway, "/nowhere", "no-route", None, &[]).await, 404);
    let head = "GET /api%2Fa HTTP/1.1\r\nHost: api.test\r\nX-Request-Id: encoded-slash";
    let response = raw_request(gateway.proxy_addr(), head).await;
    assert_eq!(response.status, 400, "{}", response.text());
    assert_eq!(get(&gateway, "/gone", "gone", None, &[]).await, 502);

    let mut traces = Vec::new();
    for (request_id, status, name, outcome, reason) in cases {
        let (trace_id, span_id, line) = logged_ids(&gateway, request_id).await;
        let span = span_with_ids(&receiver, &trace_id, &span_id).await;
        assert_eq!(span.kind, SERVER, "{request_id}: {span:#?}");
        assert_eq!(span.name, name, "{request_id}: {span:#?}");
        assert!(span.is_root(), "{request_id}: {span:#?}");
        assert_attributes(
            &span,
            &[
                ("http.response.status_code", json!(status)),
                ("jwtgate.adapter", json!("proxy")),
            ],
        );
        assert_eq!(line["outcome"], json!(outcome), "{line}");
        assert_eq!(line["reason"], json!(reason), "{line}");
        assert_as_logged(&span, "jwtgate.outcome", &line, "outcome");
        assert_as_logged(&span, "jwtgate.reason", &line, "reason");
        assert_as_logged(&span, "jwtgate.route", &line, "route");
        assert_as_logged(&span, "error.type", &line, "error");
        if status >= 500 {
            assert!(line["error"].is_string(), "{line}");
            assert_eq!(span.status.code, STATUS_ERROR, "{span:#?}");
        }
        traces.push(trace_id);
    }
    traces.sort();
    traces.dedup();
    assert_eq!(traces.len(), cases.len(), "a trace each");
    assert_eq!(upstream.count(), 0);
    assert_token_absent(&receiver.spans().await, &forged);
}

// ---------------------------------------------------------------------------
// Background fetches and the authorization listener
// ---------------------------------------------------------------------------

/// A remote issuer's discovery and JWKS download are spans of their own:
/// CLIENT, root spans in a trace each, naming the issuer, the URL and the
/// answer; a request verified with the fetched keys says where they came
/// from.
#[tokio::test]
async fn remote_key_fetches_are_root_spans() {
    let idp = idp::Idp::start().await;
    let receiver = Receiver::start().await;
    let upstream = Upstream::start();
    let yaml = Config::new()
        .section(&telemetry(&receiver.grpc_endpoint(), &[]))
        .issuers(&idp::issuer_yaml(
            &idp.issuer(),
            "{ allow_http: true }",
            idp::RESOURCE,
            &[],
        ))
        .routes(&idp::api_route("orders:read", "{ sub: X-User-Id }"));
    let gateway = gateway(&yaml, &upstream).await;

    let discovery = client_span_named(&receiver, "oidc discovery").await;
    let jwks = client_span_named(&receiver, "jwks fetch").await;
    for span in [&discovery, &jwks] {
        assert!(span.is_root(), "{span:#?}");
        assert_attributes(
            span,
            &[
                ("jwtgate.issuer", json!("idp")),
                ("http.response.status_code", json!(200)),
            ],
        );
        let url = span.str_attr("url.full");
        assert!(url.starts_with(&idp.issuer()), "{span:#?}");
        assert!(span.attr("error.type").is_none(), "{span:#?}");
    }
    assert_eq!(
        discovery.str_attr("url.full"),
        format!("{}/.well-known/openid-configuration", idp.issuer())
    );
    assert_ne!(discovery.trace_id, jwks.trace_id, "a trace each");

    let token = idp.token("orders:read").await;
    let (trace_id, _, _) = proxied(&gateway, &upstream, "remote", &token, &[]).await;
    let server = server_span(&receiver, &trace_id).await;
    assert_attributes(
        &server,
        &[
            ("jwtgate.issuer", json!("idp")),
            ("jwtgate.keys.source", json!("fresh")),
        ],
    );
}

/// A decision of the authorization listener is a server span of the
/// `authz` adapter, and nothing goes upstream.
#[tokio::test]
async fn the_authorization_listener_has_server_spans() {
    let receiver = Receiver::start().await;
    let upstream = Upstream::start();
    let port = free_port();
    let listen = format!(
        "\n  http: \"127.0.0.1:{{PROXY}}\"\n  authz: {{ addr: \"127.0.0.1:{port}\", convention: envoy }}"
    );
    let yaml = config(&receiver.grpc_endpoint(), &[], None)
        .listen(&listen)
        .routes(ROUTES);
    let gateway = gateway(&yaml, &upstream).await;
    let authz = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for_listener(authz, &|| gateway.log());

    let head = format!(
        "GET /api/orders HTTP/1.1\r\nHost: api.test\r\nX-Request-Id: decided\r\nAuthorization: Bearer {}",
        token_of("erin")
    );
    let response = raw_request(authz, &head).await;
    assert_eq!(response.status, 200, "{}", response.text());

    let (trace_id, span_id, _) = logged_ids(&gateway, "decided").await;
    let span = span_with_ids(&receiver, &trace_id, &span_id).await;
    assert_eq!(span.kind, SERVER);
    assert_eq!(span.name, "GET api");
    assert_attributes(
        &span,
        &[
            ("jwtgate.adapter", json!("authz")),
            ("jwtgate.route", json!("api")),
            ("jwtgate.outcome", json!("allow")),
            ("enduser.id", json!("erin")),
            ("http.response.status_code", json!(200)),
        ],
    );
    let spans = receiver.spans().await;
    assert!(
        in_trace(&spans, &trace_id).iter().all(|s| s.kind != CLIENT),
        "a decision never goes upstream: {spans:#?}"
    );
    assert_eq!(upstream.count(), 0);
}

// ---------------------------------------------------------------------------
// A collector that is down or slow
// ---------------------------------------------------------------------------

/// A gateway exporting to `endpoint` with `settings`: `requests` allowed
/// requests one after the other each succeed, their context propagated all
/// the same, and spans dropped for `reason` are counted.
async fn spans_not_requests(endpoint: &str, settings: &[&str], requests: usize, reason: &str) {
    let upstream = Upstream::start();
    let yaml = config(endpoint, settings, None).routes(ROUTES);
    let gateway = gateway(&yaml, &upstream).await;
    let token = token_of("frank");
    for i in 0..requests {
        proxied(&gateway, &upstream, &format!("burst-{i}"), &token, &[]).await;
    }
    assert_eq!(upstream.count(), requests);
    gateway
        .expect_metric_at_least(DROPPED, &[("reason", reason)], 1.0)
        .await;
}

/// An endpoint where nothing listens: requests are served as ever and the
/// spans that could not be exported are counted.
#[tokio::test]
async fn an_unreachable_collector_costs_spans_not_requests() {
    let endpoint = format!("http://{}", closed_addr());
    spans_not_requests(&endpoint, &["export_timeout: 1s"], 5, "export_failed").await;
}

/// A collector that refuses every export (HTTP 503): the same, and the
/// exports did reach it, with their headers.
#[tokio::test]
async fn a_refusing_collector_costs_spans_not_requests() {
    let receiver = Receiver::start_with(Behaviour {
        delay: None,
        fail: true,
    })
    .await;
    let settings = ["protocol: http/protobuf", "export_timeout: 1s"];
    let endpoint = receiver.http_endpoint();
    spans_not_requests(&endpoint, &settings, 3, "export_failed").await;
    let exports = receiver.exports().await;
    let (name, value) = EXPORT_HEADER;
    assert!(!exports.is_empty(), "the exports reached the receiver");
    for export in &exports {
        assert!(!export.accepted, "{export:#?}");
        assert_eq!(export.headers.get(name).map(String::as_str), Some(value));
    }
    assert!(receiver.spans().await.is_empty());
}

/// A collector that answers each export only after five seconds, and a
/// queue of four spans: the requests do not wait for it, and the spans
/// that found the queue full are counted.
#[tokio::test]
async fn a_slow_collector_costs_spans_not_requests() {
    let delay = Some(Duration::from_secs(5));
    let receiver = Receiver::start_with(Behaviour { delay, fail: false }).await;
    let settings = [
        "max_queue_spans: 4",
        "max_batch_spans: 2",
        "export_timeout: 30s",
    ];
    spans_not_requests(&receiver.grpc_endpoint(), &settings, 20, "queue_full").await;
}

/// With the revocation list shared through Redis, each reconcile is a root
/// span of its own, so a slow or failing Redis shows beside the requests.
#[tokio::test]
async fn a_revocation_reconcile_is_a_root_span() {
    let redis = redis::Redis::start().await;
    let receiver = Receiver::start().await;
    let upstream = Upstream::start();
    let shared = format!(
        "revocation:\n  redis: {{ key_prefix: jwtgate-trace, reconcile_interval: 1s }}\nredis: {{ url: \"{}\" }}\n",
        redis.url()
    );
    let yaml = Config::main(ISS)
        .section(&telemetry(&receiver.grpc_endpoint(), &[]))
        .section(&shared)
        .routes(ROUTES);
    let _gateway = gateway(&yaml, &upstream).await;

    let reconcile = client_span_named(&receiver, "revocation reconcile").await;
    assert!(reconcile.is_root(), "{reconcile:#?}");
    assert!(reconcile.attr("error.type").is_none(), "{reconcile:#?}");
}

/// Spans still waiting for their batch when SIGTERM comes are sent before
/// the process exits: with a batch that would fill in an hour, only the
/// flush at the stop can have sent the request's span.
#[tokio::test]
async fn the_last_spans_are_sent_before_the_process_exits() {
    let receiver = Receiver::start().await;
    let upstream = Upstream::start();
    let yaml = config(
        &receiver.grpc_endpoint(),
        &["batch_interval: 1h"],
        Some("grace_period: 0s"),
    )
    .routes(ROUTES);
    let mut gateway = gateway(&yaml, &upstream).await;
    let (trace_id, _, _) = proxied(&gateway, &upstream, "last", &token_of("alice"), &[]).await;

    gateway.signal("TERM");
    let status = gateway
        .wait_for_exit(Duration::from_secs(30))
        .await
        .expect("the gateway stops after its drain");
    assert!(status.success(), "{status}");
    let server = server_span(&receiver, &trace_id).await;
    assert_eq!(server.name, "GET api");
    let log = gateway.log();
    assert!(!log.contains("are dropped"), "every span was sent: {log}");
}
