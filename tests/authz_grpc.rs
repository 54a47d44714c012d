//! Envoy's gRPC `ext_authz` (`envoy.service.auth.v3.Authorization/Check`
//! on `listen.authz.grpc_addr`) called by a real gRPC client: Python's
//! grpcio, with stubs compiled at test time by grpcio-tools from the
//! test-only subset of Envoy's protos in tests/authz_grpc/proto (Envoy's
//! packages, names and field numbers). scripts/test installs both into
//! the tools virtualenv. Allowed (identity headers in `ok_response`, spoofable ones
//! removed), refused (401 and 403 with their challenge in
//! `denied_response`), keys unavailable, the shared secret as call
//! metadata; metrics and the access log as for the HTTP listener.

mod common;
#[path = "common/otlp.rs"]
mod otlp;

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const ROUTES: &str = r#"
  - name: reader
    match: { path_prefix: /read }
    auth: { issuers: [main], scopes: { all_of: [read] } }
    forward: { claims: { sub: X-User-Id, email: X-User-Email } }
  - name: public
    match: { path_prefix: /public }
    auth: { mode: off }
  - name: unavailable
    match: { path_prefix: /down }
    auth: { issuers: [down] }
"#;

fn token_of(sub: &str, scope: &str) -> String {
    token(ISS, sub, json!({ "scope": scope }))
}

fn down_token() -> String {
    token("https://down.test", "dave", json!({}))
}

/// A gateway with the gRPC listener on a free port (and `extra` in
/// `listen.authz`), and that listener's address.
async fn gateway(extra: &str, env: &[(&str, &str)]) -> (Gateway, SocketAddr) {
    gateway_with(extra, env, "").await
}

/// [`gateway`] with `section` (a top-level block) in its config.
async fn gateway_with(extra: &str, env: &[(&str, &str)], section: &str) -> (Gateway, SocketAddr) {
    let (http, grpc) = (free_port(), free_port());
    let authz = format!("{{ addr: \"127.0.0.1:{http}\", grpc_addr: \"127.0.0.1:{grpc}\"{extra} }}");
    let config = Config::main(ISS)
        .server(r#"trusted_proxies: ["10.0.0.0/8"]"#)
        .listen(&format!(
            "\n  http: \"127.0.0.1:{{PROXY}}\"\n  authz: {authz}"
        ))
        .section(section)
        .issuers(DOWN_ISSUER)
        .routes(ROUTES);
    let gateway = Gateway::start_with_env(&config, &Upstream::start(), &[], env).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], grpc));
    wait_for_listener(addr, &|| gateway.log());
    (gateway, addr)
}

/// A `CheckRequest` as Envoy's filter fills it in.
fn request(id: &str, method: &str, path: &str, headers: Value) -> Value {
    json!({
        "attributes": {
            "source": { "address": { "socket_address": { "address": "192.0.2.7", "port_value": 51000 } } },
            "request": { "http": {
                "id": id,
                "method": method,
                "path": path,
                "host": "api.test",
                "scheme": "https",
                "protocol": "HTTP/1.1",
                "headers": headers,
            } }
        }
    })
}

fn call(request: Value) -> Value {
    json!({ "request": request })
}

/// The `HeaderValueOption`s of a response as (key, value, append_action).
fn options(list: &Value) -> Vec<(String, String, i64)> {
    list.as_array()
        .map(|items| {
            items
                .iter()
                .map(|o| {
                    (
                        o["header"]["key"].as_str().unwrap().to_string(),
                        o["header"]["value"].as_str().unwrap_or("").to_string(),
                        o["append_action"].as_i64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn header<'a>(options: &'a [(String, String, i64)], name: &str) -> Option<&'a str> {
    options
        .iter()
        .find(|(key, _, _)| key == name)
        .map(|(_, value, _)| value.as_str())
}

/// gRPC status codes (google.rpc.Code).
const OK: i64 = 0;
const PERMISSION_DENIED: i64 = 7;
const UNAVAILABLE: i64 = 14;
const UNAUTHENTICATED: i64 = 16;

fn status(answer: &Value) -> i64 {
    // proto3 JSON leaves a zero code out.
    answer["status"]["code"].as_i64().unwrap_or(OK)
}

#[tokio::test]
async fn check_allows_and_refuses_as_the_http_listener() {
    let (gateway, addr) = gateway("", &[]).await;
    let alice = format!("Bearer {}", token_of("alice", "read"));
    let bob = format!("Bearer {}", token_of("bob", "write"));
    let answers = check_grpc(
        addr,
        &[
            call(request(
                "grpc-allow",
                "GET",
                "/read/orders?page=2",
                json!({ "authorization": alice, "x-user-id": "mallory", "x-user-email": "spoofed" }),
            )),
            call(request("grpc-401", "GET", "/read/orders", json!({}))),
            call(request(
                "grpc-403",
                "GET",
                "/read/orders",
                json!({ "authorization": bob }),
            )),
            call(request(
                "grpc-503",
                "GET",
                "/down/x",
                json!({ "authorization": format!("Bearer {}", down_token()) }),
            )),
            call(request(
                "grpc-public",
                "GET",
                "/public/x",
                json!({ "x-user-id": "mallory" }),
            )),
        ],
    );

    // Allowed: the identity header set over the client's, the claim the
    // token lacks removed, so neither spoofed value reaches the upstream.
    let allow = &answers[0];
    assert_eq!(status(allow), OK, "{allow}");
    assert!(allow.get("denied_response").is_none(), "{allow}");
    let ok = &allow["ok_response"];
    assert_eq!(
        options(&ok["headers"]),
        [("x-user-id".to_string(), "alice".to_string(), 2)],
        "{allow}"
    );
    assert_eq!(ok["headers_to_remove"], json!(["x-user-email"]), "{allow}");

    // 401 without a token: the challenge and the JSON body, for Envoy to
    // send to the client.
    let unauthenticated = &answers[1];
    assert_eq!(
        status(unauthenticated),
        UNAUTHENTICATED,
        "{unauthenticated}"
    );
    let denied = &unauthenticated["denied_response"];
    assert_eq!(denied["status"]["code"], 401, "{unauthenticated}");
    let headers = options(&denied["headers"]);
    let challenge = header(&headers, "www-authenticate").expect("a challenge");
    assert!(challenge.starts_with("Bearer realm="), "{challenge}");
    assert!(!challenge.contains("error="), "{challenge}");
    assert_eq!(header(&headers, "x-request-id"), Some("grpc-401"));
    assert_eq!(
        header(&headers, "content-length"),
        None,
        "{unauthenticated}"
    );
    let body: Value = serde_json::from_str(denied["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["error"], "unauthorized", "{body}");
    assert_eq!(body["request_id"], "grpc-401");

    // 403 with the scope it lacks.
    let forbidden = &answers[2];
    assert_eq!(status(forbidden), PERMISSION_DENIED, "{forbidden}");
    let denied = &forbidden["denied_response"];
    assert_eq!(denied["status"]["code"], 403, "{forbidden}");
    let challenge = header(&options(&denied["headers"]), "www-authenticate")
        .unwrap()
        .to_string();
    assert!(
        challenge.contains("error=\"insufficient_scope\"") && challenge.contains("scope=\"read\""),
        "{challenge}"
    );
    let body: Value = serde_json::from_str(denied["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["error"], "insufficient_scope", "{body}");

    // Keys unavailable: a denial (never a failed call, which Envoy's
    // failure_mode_allow would let through), 503 with Retry-After.
    let unavailable = &answers[3];
    assert_eq!(status(unavailable), UNAVAILABLE, "{unavailable}");
    let denied = &unavailable["denied_response"];
    assert_eq!(denied["status"]["code"], 503, "{unavailable}");
    assert!(header(&options(&denied["headers"]), "retry-after").is_some());

    // Anonymous on a route without auth: allowed, spoofable identity
    // headers removed.
    let public = &answers[4];
    assert_eq!(status(public), OK, "{public}");
    assert!(public["ok_response"].get("headers").is_none(), "{public}");
    let mut removed: Vec<&str> = public["ok_response"]["headers_to_remove"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    removed.sort_unstable();
    assert_eq!(removed, ["x-user-email", "x-user-id"], "{public}");

    // Counted and logged as the HTTP listener's decisions, the adapter
    // named, the client the source address Envoy reported.
    let line = gateway
        .expect_access_line(
            "grpc-allow",
            &[
                "adapter=\"authz_grpc\"",
                "method=\"GET\"",
                "path=\"/read/orders\"",
                "route=\"reader\"",
                "status=200",
                "outcome=\"allow\"",
                "client=\"192.0.2.7\"",
                "sub=\"alice\"",
            ],
        )
        .await;
    assert!(!line.contains(&alice[7..]), "{line}");
    gateway
        .expect_access_line("grpc-403", &["reason=\"insufficient_scope\""])
        .await;
    gateway
        .expect_decisions(&[("route", "reader"), ("outcome", "allow")], 1.0)
        .await;
    gateway.expect_requests("unavailable", "503", 1.0).await;
    // Under their adapter, refusals with their reasons; nothing was proxied.
    for counted in [
        ["reader", "200", "none"],
        ["reader", "401", "missing_token"],
        ["reader", "403", "insufficient_scope"],
        ["unavailable", "503", "jwks_unavailable"],
    ] {
        gateway
            .expect_adapter_requests("authz_grpc", counted, 1.0)
            .await;
    }
    let proxied = gateway.metric(REQUESTS, &[("adapter", "proxy")]).await;
    assert_eq!(proxied, 0.0);
}

/// A trusted source's X-Forwarded-For names the client, as on the HTTP
/// listener; raw headers (`encode_raw_headers`) are read; a request the
/// message does not describe is refused, not guessed.
#[tokio::test]
async fn raw_headers_forwarded_for_and_a_missing_request() {
    let (gateway, addr) = gateway("", &[]).await;
    let alice = format!("Bearer {}", token_of("alice", "read"));
    let mut raw = request("grpc-raw", "GET", "/read/x", json!({}));
    let http = &mut raw["attributes"]["request"]["http"];
    http.as_object_mut().unwrap().remove("headers");
    http["header_map"] = json!({ "headers": [
        { "key": "authorization", "raw_value": base64(alice.as_bytes()) },
        { "key": "x-forwarded-for", "raw_value": base64(b"203.0.113.9, 10.1.1.1") },
    ] });
    raw["attributes"]["source"]["address"]["socket_address"]["address"] = json!("10.2.2.2");
    let answers = check_grpc(
        addr,
        &[call(raw), call(json!({ "attributes": { "request": {} } }))],
    );
    assert_eq!(status(&answers[0]), OK, "{}", answers[0]);
    assert_eq!(
        header(&options(&answers[0]["ok_response"]["headers"]), "x-user-id"),
        Some("alice")
    );
    gateway
        .expect_access_line("grpc-raw", &["client=\"203.0.113.9\""])
        .await;

    let missing = &answers[1];
    assert_eq!(status(missing), 3, "{missing}");
    assert_eq!(missing["denied_response"]["status"]["code"], 400);
    let log = gateway
        .wait_for_log(|log| log.contains("authz_original_request_missing"))
        .await;
    assert!(
        log.lines()
            .any(|l| l.contains("authz_original_request_missing")
                && l.contains("adapter=\"authz_grpc\"")),
        "{}",
        relevant_lines(&log)
    );
    let missing = ["_none", "400", "authz_original_request_missing"];
    gateway
        .expect_adapter_requests("authz_grpc", missing, 1.0)
        .await;
}

/// The shared secret travels as call metadata (Envoy's
/// `grpc_service.initial_metadata`); a method other than `Check` is
/// `UNIMPLEMENTED`.
#[tokio::test]
async fn the_shared_secret_is_call_metadata() {
    let (_gateway, addr) = gateway(
        ", shared_secret: { header: x-authz-secret, env: GRPC_SECRET }",
        &[("GRPC_SECRET", "s3cret")],
    )
    .await;
    let public = request("grpc-secret", "GET", "/public/x", json!({}));
    let answers = check_grpc(
        addr,
        &[
            call(public.clone()),
            json!({ "metadata": [["x-authz-secret", "wrong"]], "request": public }),
            json!({ "metadata": [["x-authz-secret", "s3cret"]], "request": public }),
            json!({
                "metadata": [["x-authz-secret", "s3cret"]],
                "request": public,
                "method": "/envoy.service.auth.v3.Authorization/CheckAll",
            }),
        ],
    );
    assert_eq!(answers[3], json!({ "rpc_error": "UNIMPLEMENTED" }));
    for refused in &answers[..2] {
        assert_eq!(status(refused), PERMISSION_DENIED, "{refused}");
        assert_eq!(refused["denied_response"]["status"]["code"], 403);
        assert!(!refused.to_string().contains("s3cret"));
    }
    assert_eq!(status(&answers[2]), OK, "{}", answers[2]);
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `jwtgate check` names the gRPC listener.
#[test]
fn check_prints_the_grpc_listener() {
    let out = common::check(
        "listen:\n  authz: { addr: \"127.0.0.1:9191\", grpc_addr: \"127.0.0.1:9192\" }\nroutes:\n  - name: only\n    auth: { mode: off }\n",
    );
    assert!(out.success, "{}", out.stdout);
    assert!(
        out.stdout
            .contains("authz grpc 127.0.0.1:9192 (Envoy Authorization/Check)"),
        "{}",
        out.stdout
    );
}

/// SIGTERM stops the gRPC listener with the rest, even with a connection
/// (as Envoy keeps one) still open on it.
#[tokio::test]
async fn sigterm_stops_with_a_connection_open() {
    let (mut gateway, addr) = gateway("", &[]).await;
    let answers = check_grpc(
        addr,
        &[call(request(
            "grpc-before-stop",
            "GET",
            "/public/x",
            json!({}),
        ))],
    );
    assert_eq!(status(&answers[0]), OK, "{}", answers[0]);
    let mut held = std::net::TcpStream::connect(addr).unwrap();
    held.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    gateway.signal("TERM");
    match gateway.wait_for_exit(Duration::from_secs(60)).await {
        Some(status) => assert!(status.success(), "{status}; log:\n{}", gateway.log()),
        None => panic!("jwtgate did not exit; log:\n{}", gateway.log()),
    }
    assert!(
        gateway.log().contains("jwtgate stopped"),
        "{}",
        gateway.log()
    );
    drop(held);
}

/// With tracing on, each `Check` is a server span of the `authz_grpc`
/// adapter, continuing the trace Envoy's request carries when Envoy is a
/// trusted proxy (the call's source, 192.0.2.7, is not: a new trace).
#[tokio::test]
async fn each_check_is_a_server_span_of_its_own_adapter() {
    let receiver = otlp::Receiver::start().await;
    let tracing = format!(
        "telemetry:\n  tracing: {{ endpoint: \"{}\", batch_interval: 100ms }}\n",
        receiver.grpc_endpoint()
    );
    let (_gateway, addr) = gateway_with("", &[], &tracing).await;
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let alice = format!("Bearer {}", token_of("alice", "read"));
    let headers = json!({ "authorization": alice, "traceparent": parent });
    let answers = check_grpc(
        addr,
        &[call(request("grpc-traced", "GET", "/read/x", headers))],
    );
    assert_eq!(status(&answers[0]), OK, "{}", answers[0]);

    let span = receiver
        .wait_for_span(|span| span.kind == otlp::SERVER && span.name == "GET reader")
        .await;
    assert_eq!(span.str_attr("jwtgate.adapter"), "authz_grpc", "{span:#?}");
    assert_eq!(span.str_attr("jwtgate.outcome"), "allow", "{span:#?}");
    assert_eq!(span.str_attr("url.path"), "/read/x", "{span:#?}");
    assert_ne!(
        span.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736",
        "an untrusted parent"
    );
}

/// A route sending an identity token, and the P-256 key that signs it,
/// made by openssl in `dir`.
fn identity_config(dir: &std::path::Path, grpc: u16) -> String {
    let key = dir.join("identity.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&key)
        .output()
        .expect("openssl on PATH");
    assert!(made.status.success(), "{made:?}");
    let http = free_port();
    let authz = format!("{{ addr: \"127.0.0.1:{http}\", grpc_addr: \"127.0.0.1:{grpc}\" }}");
    Config::main(ISS)
        .listen(&format!("\n  http: \"127.0.0.1:{{PROXY}}\"\n  authz: {authz}"))
        .section(&format!(
            "identity_tokens:\n  issuer: https://gateway.test\n  keys: [{{ kid: k1, file: \"{}\" }}]\n",
            key.display()
        ))
        .routes(
            r#"
  - name: signed
    match: { path_prefix: /signed }
    auth: { issuers: [main] }
    forward: { identity_token: { audience: orders } }
  - name: plain
    match: { path_prefix: /plain }
    auth: { issuers: [main] }
"#,
        )
}

#[tokio::test]
async fn an_allowed_check_carries_the_identity_token() {
    let dir = tempfile::tempdir().expect("a key dir");
    let grpc = free_port();
    let config = identity_config(dir.path(), grpc);
    let gateway = Gateway::start(&config, &Upstream::start()).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], grpc));
    wait_for_listener(addr, &|| gateway.log());
    let alice = format!("Bearer {}", token_of("alice", ""));
    let headers = json!({ "authorization": alice, "x-jwtgate-identity": "forged" });
    let answers = check_grpc(
        addr,
        &[
            call(request("signed", "GET", "/signed/x", headers.clone())),
            call(request("plain", "GET", "/plain/x", headers)),
        ],
    );
    let signed = &answers[0]["ok_response"];
    let options = options(&signed["headers"]);
    let jwt = header(&options, "x-jwtgate-identity").expect("an identity token");
    let payload = jwt.split('.').nth(1).expect("a JWS");
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .expect("base64url"),
    )
    .expect("JSON claims");
    assert_eq!(
        (claims["sub"].as_str(), claims["aud"].as_str()),
        (Some("alice"), Some("orders"))
    );
    // A route without one still has the client's copy removed.
    let plain = &answers[1]["ok_response"];
    assert_eq!(
        plain["headers_to_remove"],
        json!(["x-jwtgate-identity"]),
        "{plain}"
    );
}
