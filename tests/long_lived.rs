//! Connections that outlive their request, through the real binary: a
//! WebSocket between a Python `websockets` client and a `websockets` echo
//! server ends with close 1008 at its token's expiry and at once when the
//! token is revoked through the admin API; a server-sent events stream read
//! by curl is cut at expiry, and an upload still going then gets `401`; an
//! ordinary request on the same route arms nothing; a route with
//! `end_with_token: false` keeps its WebSocket; a revocation made on another
//! replica ends it through a real `redis-server`; a reload after which its
//! route requires a scope the token lacks ends it, unless the route opts
//! out, and an `audit` route only counts `would_end`.

mod common;
#[path = "common/redis.rs"]
mod redis;
#[path = "common/websocket.rs"]
mod websocket;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use websocket::{
    ECHO_SERVER, Python, client, expect_ended, expect_revoked_at_once, outcome, unix_now,
};

const ISS: &str = "https://issuer.live.test";
const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
const ADMIN_ENV: (&str, &str) = ("JWTGATE_TEST_ADMIN", ADMIN_TOKEN);

/// An upstream serving `/events` as server-sent events, one every 200 ms
/// for 30 s, taking `POST /upload` bodies without ever answering, and
/// anything else as a small JSON body with a length.
fn events_upstream() -> TcpServer {
    TcpServer::start(
        "events",
        "127.0.0.1:0".parse().unwrap(),
        |mut stream| async move {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                    return;
                }
                head.push(byte[0]);
            }
            if head.starts_with(b"POST /upload") {
                // Takes the body in and never answers: the upload is still
                // going when its token ends.
                let mut sink = [0u8; 1024];
                while stream.read(&mut sink).await.unwrap_or(0) > 0 {}
                return;
            }
            if !head.starts_with(b"GET /events") {
                let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
                .await;
                let _ = stream.read(&mut byte).await;
                return;
            }
            let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await;
            for _ in 0..150 {
                if stream.write_all(b"c\r\ndata: tick\n\n\r\n").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        },
    )
}

fn token_until(exp: i64, jti: &str) -> String {
    token(
        ISS,
        "alice",
        json!({ "exp": exp, "iat": now() - 1, "jti": jti }),
    )
}

/// A gateway in front of the echo server (routes `ws` and `keep`) and the
/// events upstream (`events`), with a revocation list shared through the
/// Redis at `redis` when given, its clear-text listener also serving h2c
/// when `h2c`.
async fn start(echo: u16, events: &TcpServer, redis: Option<&str>, h2c: bool) -> Gateway {
    let dir = tempfile::tempdir().unwrap().keep();
    let routes = format!(
        r#"
  - name: ws
    match: {{ path_prefix: /ws }}
    upstream: {{ addrs: ["127.0.0.1:{echo}"] }}
  - name: keep
    match: {{ path_prefix: /keep }}
    upstream: {{ addrs: ["127.0.0.1:{echo}"] }}
    auth: {{ long_lived: {{ end_with_token: false }} }}
  - name: events
    match: {{ path_prefix: / }}
    upstream: {{ addrs: ["{}"] }}
"#,
        events.addr()
    );
    let mut config = Config::new().issuer_with("main", ISS, &["leeway: 0s"]);
    if h2c {
        config = config.listen("{ http: { addr: \"127.0.0.1:{PROXY}\", h2c: true } }");
    }
    let mut yaml = format!(
        "{}revocation:\n  dir: \"{}\"\n  admin_tokens: [{{ name: test-admin, env: {} }}]\n",
        config.routes(&routes),
        dir.display(),
        ADMIN_ENV.0
    );
    if let Some(url) = redis {
        yaml.push_str(&format!(
            "  redis: {{ key_prefix: jwtgate-live, reconcile_interval: 2s }}\nredis: {{ url: \"{url}\" }}\n"
        ));
    }
    Gateway::start_with_env(&yaml, &Upstream::start(), &[], &[ADMIN_ENV]).await
}

/// The echo server, the events upstream and a gateway in front of both.
async fn setup() -> (Python, TcpServer, Gateway) {
    setup_with(None, false).await
}

/// [`setup`], sharing revocations through the Redis at `redis`, with h2c
/// on the clear-text listener when `h2c`.
async fn setup_with(redis: Option<&str>, h2c: bool) -> (Python, TcpServer, Gateway) {
    let (echo, port) = Python::run(ECHO_SERVER, &[]).next_line().await;
    let events = events_upstream();
    let gateway = start(
        port.parse().expect("the echo server's port"),
        &events,
        redis,
        h2c,
    )
    .await;
    (echo, events, gateway)
}

/// Revokes through `gateway`'s admin API.
async fn revoke(gateway: &Gateway, entry: Value) {
    let response = gateway
        .client()
        .post(gateway.admin_url("/revocations"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&entry)
        .send()
        .await
        .expect("revoke");
    assert_eq!(response.status().as_u16(), 201, "{entry}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_ends_with_1008_at_expiry_unless_its_route_keeps_it() {
    let (echo, _events, gateway) = setup().await;
    let exp = now() + 2;
    let ending = client(&gateway, "/ws", &token_until(exp, "ws-1"), 15).await;
    let kept = client(&gateway, "/keep", &token_until(exp, "ws-2"), 5).await;

    let ended = outcome(ending).await;
    assert_eq!(ended["ended"], true, "{ended}");
    assert_eq!(ended["code"], 1008, "{ended}");
    assert_eq!(ended["reason"], "token expired", "{ended}");
    assert!(
        ended["at"].as_f64().unwrap() >= exp as f64,
        "not before exp: {ended}"
    );
    let (_echo, upstream_saw) = echo.next_line().await;
    assert_eq!(upstream_saw, "closed 1008 token expired");

    let kept = outcome(kept).await;
    assert_eq!(kept["ended"], false, "past its token's exp: {kept}");

    expect_ended(&gateway, "ws", "expired").await;
    gateway
        .expect_metric(
            "jwtgate_long_lived_connections",
            &[("route", "ws"), ("kind", "websocket")],
            0.0,
        )
        .await;
    gateway.log_line("ended=\"expired\"").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_ends_its_websocket_at_once() {
    let (echo, _events, gateway) = setup().await;
    a_revoked_token_ends_the_websocket(echo, gateway).await;
}

/// On a listener that also takes HTTP/2 with prior knowledge, HTTP/1
/// connections (a WebSocket's) are still served, and ended, by jwtgate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_ends_its_websocket_on_an_h2c_listener() {
    let (echo, _events, gateway) = setup_with(None, true).await;
    a_revoked_token_ends_the_websocket(echo, gateway).await;
}

async fn a_revoked_token_ends_the_websocket(echo: Python, gateway: Gateway) {
    let ws = client(
        &gateway,
        "/ws",
        &token_until(now() + 3600, "ws-revoked"),
        15,
    )
    .await;
    gateway
        .expect_metric(
            "jwtgate_long_lived_connections",
            &[("route", "ws"), ("kind", "websocket")],
            1.0,
        )
        .await;

    let revoked_at = unix_now();
    revoke(
        &gateway,
        json!({ "jti": "ws-revoked", "issuer": "main", "exp": now() + 3600 }),
    )
    .await;

    expect_revoked_at_once(ws, echo, revoked_at).await;
    expect_ended(&gateway, "ws", "revoked").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_is_cut_at_expiry_and_ordinary_requests_arm_nothing() {
    let (_echo, _events, gateway) = setup().await;

    // Ordinary requests on the route a stream is armed on.
    let plain = token_until(now() + 3600, "plain");
    for _ in 0..3 {
        assert_eq!(gateway.status("/plain", Some(&plain)).await, 200);
    }
    let metrics = gateway.metrics().await;
    assert!(
        !metrics.contains("jwtgate_long_lived_connections{"),
        "an ordinary request was armed:\n{metrics}"
    );

    let exp = now() + 2;
    let token = token_until(exp, "sse");
    let url = gateway.url("/events");
    let curl = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-sS", "-N", "--max-time", "20", "-H"])
            .arg(format!("Authorization: Bearer {token}"))
            .args(["-H", "X-Request-Id: sse-expiry"])
            .arg(url)
            .output()
            .expect("run curl (scripts/test installs it)")
    })
    .await
    .expect("curl thread");
    let body = String::from_utf8_lossy(&curl.stdout);
    assert!(body.contains("data: tick"), "the stream began: {body}");
    // 18: the chunked body ended without its last chunk; 28 would be
    // curl's own time limit, long after the token's exp.
    assert_eq!(curl.status.code(), Some(18), "{curl:?}");
    assert!(now() < exp + 15, "cut at expiry, not by curl's time limit");
    gateway
        .expect_access_line(
            "sse-expiry",
            &["route=\"events\"", "ended=\"expired\"", "error=-"],
        )
        .await;
    expect_ended(&gateway, "events", "expired").await;
    // The connection of the ordinary requests is still served.
    assert_eq!(gateway.status("/plain", Some(&plain)).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_still_going_at_expiry_gets_401() {
    let (_echo, _events, gateway) = setup().await;
    let token = token_until(now() + 2, "upload");
    let mut client = tokio::net::TcpStream::connect(gateway.proxy_addr())
        .await
        .unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nX-Request-Id: upload-expiry\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    );
    client.write_all(head.as_bytes()).await.unwrap();
    // Nothing more is sent: the body is still coming when the token ends.
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), client.read_to_end(&mut answer))
        .await
        .expect("answered and closed before the bound")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("error=\"invalid_token\""), "{answer}");
    gateway
        .expect_access_line("upload-expiry", &["status=401", "ended=\"expired\""])
        .await;
    expect_ended(&gateway, "events", "expired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_another_replica_ends_the_websocket_through_redis() {
    let redis = redis::Redis::start().await;
    let (echo, events, b) = setup_with(Some(&redis.url()), false).await;
    // A only takes the revocation: its WebSocket routes lead nowhere.
    let a = start(0, &events, Some(&redis.url()), false).await;
    for gateway in [&a, &b] {
        gateway
            .wait_for_log(|log| log.contains("in step with Redis"))
            .await;
    }
    let ws = client(&b, "/ws", &token_until(now() + 3600, "ws-elsewhere"), 15).await;

    // A cut-off for the subject, made on the other replica.
    revoke(&a, json!({ "sub": "alice", "issuer": "main" })).await;
    let ended = outcome(ws).await;
    assert_eq!(ended["code"], 1008, "{ended}");
    assert_eq!(ended["reason"], "token revoked", "{ended}");
    let (_echo, upstream_saw) = echo.next_line().await;
    assert_eq!(upstream_saw, "closed 1008 token revoked");
    expect_ended(&b, "ws", "revoked").await;
}

/// Routes to the echo server on `echo`, each requiring `scope`: `ws`,
/// `optout` (which keeps its connections across reloads) and `watch` (in
/// `audit` mode); then `extra`.
fn scoped_config(echo: u16, scope: &str, extra: &str) -> String {
    let route = |name: &str, auth: &str| {
        format!(
            "  - name: {name}\n    match: {{ path_prefix: /{name} }}\n    upstream: {{ addrs: [\"127.0.0.1:{echo}\"] }}\n    auth: {{ scopes: {{ all_of: [{scope}] }}{auth} }}\n"
        )
    };
    let routes = [
        route("ws", ""),
        route("optout", ", long_lived: { end_on_reload: false }"),
        route("watch", ", mode: audit"),
        extra.to_string(),
    ]
    .concat();
    Config::new()
        .issuer_with("main", ISS, &["leeway: 0s"])
        .routes(&routes)
}

/// Writes `template` as `gateway`'s config and reloads it through the admin
/// API: the answer's `connections` (ended, would_end).
async fn reload_with(gateway: &Gateway, upstream: &Upstream, template: &str) -> (u64, u64) {
    gateway.write_config(template, upstream);
    let (status, body) = gateway.reload_json().await;
    assert_eq!(status, 200, "{body}");
    let count = |field: &str| body["connections"][field].as_u64().expect("a count");
    (count("ended"), count("would_end"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_ends_the_websockets_its_routes_now_refuse() {
    let (echo, port) = Python::run(ECHO_SERVER, &[]).next_line().await;
    let echo_port: u16 = port.parse().expect("the echo server's port");
    let upstream = Upstream::start();
    let gateway = Gateway::start(&scoped_config(echo_port, "a", ""), &upstream).await;
    let token = token(
        ISS,
        "alice",
        json!({ "scope": "a", "exp": now() + 3600, "jti": "reloaded" }),
    );
    let ws = client(&gateway, "/ws", &token, 30).await;
    let kept = client(&gateway, "/optout", &token, 10).await;
    let watched = client(&gateway, "/watch", &token, 10).await;

    // A route added, the scope unchanged: nothing to end.
    let unrelated = "  - name: other\n    match: { path_prefix: /other }\n    upstream: { addrs: [\"{UPSTREAM}\"] }\n    auth: { mode: off }\n";
    let unchanged = scoped_config(echo_port, "a", unrelated);
    assert_eq!(reload_with(&gateway, &upstream, &unchanged).await, (0, 0));

    // Every route now requires scope b, which the token lacks.
    let stricter = scoped_config(echo_port, "b", unrelated);
    assert_eq!(reload_with(&gateway, &upstream, &stricter).await, (1, 1));
    let ended = outcome(ws).await;
    assert_eq!(ended["ended"], true, "{ended}");
    assert_eq!(ended["code"], 1008, "{ended}");
    assert_eq!(ended["reason"], "token no longer accepted", "{ended}");
    let (_echo, upstream_saw) = echo.next_line().await;
    assert_eq!(upstream_saw, "closed 1008 token no longer accepted");
    expect_ended(&gateway, "ws", "reload").await;
    // The opted-out and the audit route's connections are still open
    // after the reload, and then end on their own.
    for route in ["optout", "watch"] {
        // Counted once it has lasted the registration wait.
        gateway
            .expect_metric(
                "jwtgate_long_lived_connections",
                &[("route", route), ("kind", "websocket")],
                1.0,
            )
            .await;
    }
    for client in [kept, watched] {
        let outcome = outcome(client).await;
        assert_eq!(outcome["ended"], false, "{outcome}");
    }
    gateway
        .expect_metric(
            "jwtgate_connections_would_end_total",
            &[("route", "watch"), ("reason", "reload")],
            1.0,
        )
        .await;
    let metrics = gateway.metrics().await;
    for route in ["optout", "watch"] {
        assert!(
            !metrics.contains(&format!(
                "jwtgate_connections_ended_total{{reason=\"reload\",route=\"{route}\"}}"
            )),
            "{route} ended nothing:\n{metrics}"
        );
    }
    gateway.log_line("ended=\"reload\"").await;
    gateway.log_line("would_end=\"reload\"").await;
}
