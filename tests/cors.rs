//! CORS end to end: the real `jwtgate` binary on loopback, asked by curl
//! (preflights and actual requests, header by header) and by headless
//! Chromium making a real cross-origin `fetch` with a bearer token from a
//! page served on another loopback port.
//!
//! curl and chromium are required: a missing one fails the test (scripts/test
//! installs both).

mod common;

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

const APP: &str = "https://app.example";

/// `{ORIGIN}` is a second allowed origin: the test page's, for Chromium.
const ROUTES: &str = r#"
  - name: api
    match: { path_prefix: /api }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { issuers: [main], scopes: { any_of: [read] } }
    forward:
      claims: { sub: X-User-Id, scope: X-User-Scopes }
      strip_authorization: true
    cors:
      allowed_origins: ["HTTPS://App.Example:443", "{ORIGIN}"]
      allowed_methods: [GET, POST, put]
      allowed_headers: [Content-Type, X-Trace]
      exposed_headers: [WWW-Authenticate, X-Request-Id]
      allow_credentials: true
      max_age: 5m
  - name: orders-write
    match: { path_prefix: /orders, methods: [PUT] }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { issuers: [main] }
    cors: { allowed_origins: ["https://app.example"], allowed_methods: [PUT] }
  - name: open
    match: { path_prefix: /open }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { mode: off }
    cors: { allowed_origins: ["*"] }
  - name: plain
    match: { path_prefix: /plain }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { mode: off }
"#;

fn config(origin: &str) -> String {
    Config::main(ISS).routes(&ROUTES.replace("{ORIGIN}", origin))
}

fn token_of(scope: &str) -> String {
    token(ISS, "alice", json!({ "scope": scope }))
}

// ---------------------------------------------------------------------------
// curl
// ---------------------------------------------------------------------------

/// What curl received.
struct Curl {
    status: u16,
    /// Lower-case names, in order, repeated names kept.
    headers: Vec<(String, String)>,
    body: String,
}

impl Curl {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn cors_headers(&self) -> Vec<&(String, String)> {
        self.headers
            .iter()
            .filter(|(n, _)| n.starts_with("access-control-"))
            .collect()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

/// `curl -X method url -H header...`, run for real.
fn curl(method: &str, url: &str, headers: &[(&str, &str)]) -> Curl {
    let mut command = Command::new("curl");
    command.args([
        "--silent",
        "--show-error",
        "--include",
        "--noproxy",
        "*",
        // A guard against a hung connection, not a latency assertion.
        "--max-time",
        "20",
        "--request",
        method,
    ]);
    for (name, value) in headers {
        command.arg("--header").arg(format!("{name}: {value}"));
    }
    command.arg(url);
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl ({e}); scripts/test installs it"));
    assert!(
        output.status.success(),
        "curl {method} {url} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse_curl(&output.stdout)
}

fn parse_curl(stdout: &[u8]) -> Curl {
    let text = String::from_utf8_lossy(stdout);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in curl output: {text}"));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in curl output: {text}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Curl {
        status,
        headers,
        body: body.to_string(),
    }
}

fn preflight(gateway: &Gateway, path: &str, origin: &str, method: &str, headers: &str) -> Curl {
    let mut request = vec![
        ("Origin", origin),
        ("Access-Control-Request-Method", method),
    ];
    if !headers.is_empty() {
        request.push(("Access-Control-Request-Headers", headers));
    }
    curl("OPTIONS", &gateway.url(path), &request)
}

// ---------------------------------------------------------------------------
// Preflights
// ---------------------------------------------------------------------------

#[tokio::test]
async fn allowed_preflight_is_answered_without_a_token_and_never_forwarded() {
    let (upstream, gateway) = start(&config("http://127.0.0.1:1")).await;

    let answer = preflight(
        &gateway,
        "/api/orders",
        APP,
        "PUT",
        "authorization,content-type",
    );
    assert_eq!(answer.status, 204, "{:?}", answer.headers);
    assert_eq!(answer.header("access-control-allow-origin"), Some(APP));
    assert_eq!(
        answer.header("access-control-allow-methods"),
        Some("GET, POST, PUT")
    );
    assert_eq!(
        answer.header("access-control-allow-headers"),
        Some("authorization,content-type")
    );
    assert_eq!(
        answer.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(answer.header("access-control-max-age"), Some("300"));
    assert_eq!(
        answer.header("vary"),
        Some("Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
    );
    assert!(answer.header("www-authenticate").is_none());
    assert!(answer.header("x-request-id").is_some());
    assert_eq!(answer.body, "");

    // Headers the route doesn't allow are left out; the browser then refuses.
    let partial = preflight(
        &gateway,
        "/api/orders",
        APP,
        "GET",
        "x-secret, Authorization, x-trace",
    );
    assert_eq!(partial.status, 204);
    assert_eq!(
        partial.header("access-control-allow-headers"),
        Some("Authorization, x-trace")
    );
    // No requested headers, no Allow-Headers.
    let bare = preflight(&gateway, "/api/orders", APP, "POST", "");
    assert_eq!(bare.status, 204);
    assert_eq!(bare.header("access-control-allow-headers"), None);

    assert_eq!(upstream.count(), 0, "a preflight reached the upstream");
    gateway.expect_requests("api", "204", 3.0).await;
}

#[tokio::test]
async fn disallowed_origin_or_method_gets_403_without_cors_headers() {
    let (upstream, gateway) = start(&config("http://127.0.0.1:1")).await;

    for (origin, method, description) in [
        (
            "https://evil.example",
            "GET",
            "this origin may not call this route",
        ),
        // The port is part of the origin.
        (
            "https://app.example:8443",
            "GET",
            "this origin may not call this route",
        ),
        ("null", "GET", "this origin may not call this route"),
        (
            APP,
            "DELETE",
            "this method is not allowed for cross-origin requests on this route",
        ),
        (
            APP,
            "put",
            "this method is not allowed for cross-origin requests on this route",
        ),
    ] {
        let answer = preflight(&gateway, "/api/orders", origin, method, "authorization");
        assert_eq!(answer.status, 403, "{origin} {method}");
        assert!(
            answer.cors_headers().is_empty(),
            "{origin} {method}: {:?}",
            answer.cors_headers()
        );
        let body = answer.json();
        assert_eq!(body["error"], "cors_preflight_refused");
        assert_eq!(body["error_description"], description);
        assert_eq!(
            answer.header("x-request-id"),
            body["request_id"].as_str(),
            "the body names the request"
        );
    }
    assert_eq!(
        upstream.count(),
        0,
        "a refused preflight reached the upstream"
    );
}

#[tokio::test]
async fn preflights_are_routed_by_the_method_they_ask_about() {
    let (upstream, gateway) = start(&config("http://127.0.0.1:1")).await;

    // `orders-write` admits only PUT, yet its preflight (an OPTIONS) is answered.
    let answer = preflight(&gateway, "/orders/7", APP, "PUT", "authorization");
    assert_eq!(answer.status, 204);
    assert_eq!(answer.header("access-control-allow-methods"), Some("PUT"));
    assert_eq!(
        answer.header("access-control-allow-headers"),
        Some("authorization")
    );
    // Without credentials configured, none are announced.
    assert_eq!(answer.header("access-control-allow-credentials"), None);
    // The default max_age.
    assert_eq!(answer.header("access-control-max-age"), Some("600"));

    // A plain OPTIONS (no Access-Control-Request-Method) is not a preflight:
    // it is routed by its own method, which the route at that prefix lacks.
    let plain = curl("OPTIONS", &gateway.url("/orders/7"), &[("Origin", APP)]);
    assert_eq!(plain.status, 405);
    assert!(plain.cors_headers().is_empty());

    // A preflight for a route without cors is routed like any request: the
    // public `plain` route forwards it, and the upstream answers it.
    let forwarded = preflight(&gateway, "/plain/x", APP, "PUT", "");
    assert_eq!(forwarded.status, 200);
    assert!(forwarded.cors_headers().is_empty());
    assert_eq!(upstream.count(), 1);
    assert_eq!(upstream.last().method, "OPTIONS");
}

#[tokio::test]
async fn plain_options_goes_through_authentication() {
    let (upstream, gateway) = start(&config("http://127.0.0.1:1")).await;

    let refused = curl("OPTIONS", &gateway.url("/api/orders"), &[("Origin", APP)]);
    assert_eq!(refused.status, 401);
    assert_eq!(refused.header("access-control-allow-origin"), Some(APP));
    assert_eq!(upstream.count(), 0);

    let token = token_of("read");
    let bearer = format!("Bearer {token}");
    let admitted = curl(
        "OPTIONS",
        &gateway.url("/api/orders"),
        &[("Origin", APP), ("Authorization", &bearer)],
    );
    assert_eq!(admitted.status, 200);
    assert_eq!(upstream.last().method, "OPTIONS");
    assert_eq!(upstream.last().header("x-user-id"), Some("alice"));
}

// ---------------------------------------------------------------------------
// Actual responses
// ---------------------------------------------------------------------------

#[tokio::test]
async fn actual_responses_carry_cors_headers_for_allowed_origins_only() {
    let (upstream, gateway) = start(&config("http://127.0.0.1:1")).await;
    let token = token_of("read");
    let bearer = format!("Bearer {token}");

    let allowed = curl(
        "GET",
        &gateway.url("/api/orders"),
        &[("Origin", APP), ("Authorization", &bearer)],
    );
    assert_eq!(allowed.status, 200);
    assert_eq!(allowed.header("access-control-allow-origin"), Some(APP));
    assert_eq!(
        allowed.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(
        allowed.header("access-control-expose-headers"),
        Some("www-authenticate, x-request-id")
    );
    assert_eq!(allowed.all("vary"), vec!["Origin"]);
    // Preflight-only headers stay on preflights.
    assert_eq!(allowed.header("access-control-allow-methods"), None);
    assert_eq!(upstream.last().header("x-user-id"), Some("alice"));

    let no_origin = curl(
        "GET",
        &gateway.url("/api/orders"),
        &[("Authorization", &bearer)],
    );
    assert_eq!(no_origin.status, 200);
    assert!(
        no_origin.cors_headers().is_empty(),
        "{:?}",
        no_origin.headers
    );
    // Caches must not hand this response to a cross-origin request.
    assert_eq!(no_origin.all("vary"), vec!["Origin"]);

    let other = curl(
        "GET",
        &gateway.url("/api/orders"),
        &[
            ("Origin", "https://evil.example"),
            ("Authorization", &bearer),
        ],
    );
    // CORS is enforced by the browser: the request is served, unreadable.
    assert_eq!(other.status, 200);
    assert!(other.cors_headers().is_empty(), "{:?}", other.headers);
    assert_eq!(other.all("vary"), vec!["Origin"]);

    // A route without cors gets no CORS headers and no Vary.
    let plain = curl("GET", &gateway.url("/plain"), &[("Origin", APP)]);
    assert_eq!(plain.status, 200);
    assert!(plain.cors_headers().is_empty());
    assert!(plain.header("vary").is_none());

    // Any origin: a literal `*`, whatever Origin says or whether it is sent.
    for origin in [Some("https://anyone.example"), None] {
        let headers: Vec<(&str, &str)> = origin.into_iter().map(|o| ("Origin", o)).collect();
        let open = curl("GET", &gateway.url("/open"), &headers);
        assert_eq!(open.status, 200);
        assert_eq!(open.header("access-control-allow-origin"), Some("*"));
        assert_eq!(open.header("access-control-allow-credentials"), None);
        assert!(open.header("vary").is_none());
    }
}

#[tokio::test]
async fn jwtgate_rejections_on_a_cors_route_are_readable_cross_origin() {
    let (upstream, gateway) = start(&config("http://127.0.0.1:1")).await;

    // 401: no token.
    let missing = curl("GET", &gateway.url("/api/orders"), &[("Origin", APP)]);
    assert_eq!(missing.status, 401);
    assert_eq!(missing.header("access-control-allow-origin"), Some(APP));
    assert_eq!(
        missing.header("access-control-expose-headers"),
        Some("www-authenticate, x-request-id")
    );
    assert_eq!(
        missing.header("www-authenticate"),
        Some("Bearer realm=\"jwtgate\"")
    );
    assert_eq!(missing.all("vary"), vec!["Origin"]);
    assert_eq!(missing.json()["error"], "unauthorized");

    // 401: a bad token.
    let invalid = curl(
        "GET",
        &gateway.url("/api/orders"),
        &[("Origin", APP), ("Authorization", "Bearer x.y.z")],
    );
    assert_eq!(invalid.status, 401);
    assert_eq!(invalid.header("access-control-allow-origin"), Some(APP));
    assert_eq!(invalid.json()["error"], "invalid_token");

    // 403: valid token, missing scope.
    let bearer = format!("Bearer {}", token_of("write"));
    let forbidden = curl(
        "GET",
        &gateway.url("/api/orders"),
        &[("Origin", APP), ("Authorization", &bearer)],
    );
    assert_eq!(forbidden.status, 403);
    assert_eq!(forbidden.header("access-control-allow-origin"), Some(APP));
    assert_eq!(forbidden.json()["error"], "insufficient_scope");

    // A disallowed origin gets the rejection without CORS headers.
    let other = curl(
        "GET",
        &gateway.url("/api/orders"),
        &[("Origin", "https://evil.example")],
    );
    assert_eq!(other.status, 401);
    assert!(other.cors_headers().is_empty());

    // 404 belongs to no route, so to no CORS policy.
    let lost = curl("GET", &gateway.url("/nowhere"), &[("Origin", APP)]);
    assert_eq!(lost.status, 404);
    assert!(lost.cors_headers().is_empty());
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn a_failed_upstream_answer_is_readable_cross_origin() {
    let closed = closed_addr();
    let open_route = "match: { path_prefix: /open }\n    upstream: { addrs: [\"{UPSTREAM}\"] }";
    assert!(ROUTES.contains(open_route));
    let config = config("http://127.0.0.1:1").replace(
        open_route,
        &format!("match: {{ path_prefix: /open }}\n    upstream: {{ addrs: [\"{closed}\"] }}"),
    );
    let (_upstream, gateway) = start(&config).await;

    let answer = curl(
        "GET",
        &gateway.url("/open/x"),
        &[("Origin", "https://anywhere.example")],
    );
    assert_eq!(answer.status, 502, "{}", answer.body);
    assert_eq!(answer.header("access-control-allow-origin"), Some("*"));
    let body: Value = serde_json::from_str(&answer.body).expect("JSON body");
    assert_eq!(body["error"], "bad_gateway");
}

/// An upstream that answers with its own CORS headers and a `Vary`, as
/// backends written for direct browser access do.
async fn start_cors_aware_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("upstream addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|_request: Request<Incoming>| async {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("access-control-allow-origin", "*")
                            .header("access-control-allow-credentials", "false")
                            .header("vary", "Accept-Encoding")
                            .header("vary", "Accept-Language")
                            .body(Full::new(Bytes::from_static(b"{}")))
                            .expect("valid response"),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

// Two workers: curl blocks one while the other runs the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_cors_headers_are_replaced_and_vary_is_merged() {
    let upstream = Upstream::start();
    let cors_aware = start_cors_aware_upstream().await;
    let template = config("http://127.0.0.1:1").replace("{UPSTREAM}", &cors_aware.to_string());
    let gateway = Gateway::start(&template, &upstream).await;
    let bearer = format!("Bearer {}", token_of("read"));

    let response = curl(
        "GET",
        &gateway.url("/api/orders"),
        &[("Origin", APP), ("Authorization", &bearer)],
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.all("access-control-allow-origin"), vec![APP]);
    assert_eq!(
        response.all("access-control-allow-credentials"),
        vec!["true"]
    );
    assert_eq!(
        response.all("vary"),
        vec!["Accept-Encoding, Accept-Language, Origin"]
    );

    let other = curl(
        "GET",
        &gateway.url("/api/orders"),
        &[
            ("Origin", "https://evil.example"),
            ("Authorization", &bearer),
        ],
    );
    assert_eq!(other.status, 200);
    assert!(other.cors_headers().is_empty(), "{:?}", other.headers);
}

// ---------------------------------------------------------------------------
// Config errors
// ---------------------------------------------------------------------------

#[test]
fn bad_cors_blocks_are_refused_at_load_naming_field_and_value() {
    let route = |cors: &str| {
        format!(
            "routes:\n  - name: api\n    upstream: {{ addrs: [\"127.0.0.1:9\"] }}\n    auth: {{ mode: off }}\n    cors: {cors}\n"
        )
    };
    for (cors, expected) in [
        (
            "{ allowed_origins: [\"*\"], allow_credentials: true }",
            "cors.allowed_origins \"*\" cannot go with cors.allow_credentials: true",
        ),
        (
            "{ allowed_origins: [\"https://app.example/\"] }",
            "cors.allowed_origins: \"https://app.example/\" is not an origin",
        ),
        (
            "{ allowed_origins: [\"https://app.example\"], allowed_headers: [\"x y\"] }",
            "cors.allowed_headers: \"x y\" is not a header name",
        ),
        (
            "{ allowed_origins: [\"https://app.example\"], allowed_methods: [\"GE T\"] }",
            "cors.allowed_methods: \"GE T\" is not an HTTP method",
        ),
        (
            "{ allowed_origins: [] }",
            "cors.allowed_origins must list at least one origin",
        ),
        (
            "{ allowed_origins: [\"https://app.example\"], max_age: 3d }",
            "cors.max_age: 3d is longer than 24h",
        ),
        (
            "{ allowed_origins: [\"https://app.example\"], allow_origins: [] }",
            "unknown field `allow_origins`",
        ),
    ] {
        let out = check(&route(cors));
        let stderr = &out.stderr;
        assert!(!out.success, "{cors} was accepted");
        assert!(stderr.contains(expected), "{cors}: {stderr}");
        assert!(
            expected.starts_with("unknown") || stderr.contains("route \"api\""),
            "{stderr}"
        );
    }
}

// ---------------------------------------------------------------------------
// Headless Chromium
// ---------------------------------------------------------------------------

/// A page server on its own loopback port (its own origin): serves `page`
/// at `/`. The listener is bound before the gateway starts, so the gateway's
/// config can name the page's origin.
struct PageServer {
    listener: Option<StdTcpListener>,
    addr: SocketAddr,
}

impl PageServer {
    fn bind() -> Self {
        let listener = StdTcpListener::bind("127.0.0.1:0").expect("bind page server");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("page server addr");
        Self {
            listener: Some(listener),
            addr,
        }
    }

    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves `page` on the test's runtime until the test ends.
    fn serve(&mut self, page: String) {
        let listener =
            tokio::net::TcpListener::from_std(self.listener.take().expect("served once"))
                .expect("tokio listener");
        let page = Bytes::from(page);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let page = page.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let page = page.clone();
                        async move {
                            let response = if request.uri().path() == "/" {
                                Response::builder()
                                    .header("content-type", "text/html; charset=utf-8")
                                    .body(Full::new(page))
                            } else {
                                Response::builder()
                                    .status(404)
                                    .body(Full::new(Bytes::new()))
                            };
                            Ok::<_, Infallible>(response.expect("valid response"))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    }
}

/// A page whose script calls the gateway with `fetch` twice, once with
/// `token` and once with a broken token (both carry `Authorization`, so the
/// browser sends a preflight first), then writes what JavaScript could see
/// into `#result`, base64-encoded JSON.
fn page(gateway: &Gateway, token: &str) -> String {
    format!(
        r#"<!doctype html>
<html><body><pre id="result">pending</pre>
<script>
const gateway = "{url}";
async function call(token) {{
  try {{
    const response = await fetch(gateway, {{ headers: {{ "Authorization": "Bearer " + token }} }});
    return {{
      status: response.status,
      body: await response.text(),
      www_authenticate: response.headers.get("www-authenticate"),
      request_id: response.headers.get("x-request-id"),
    }};
  }} catch (error) {{
    return {{ error: String(error) }};
  }}
}}
(async () => {{
  const result = {{ valid: await call("{token}"), invalid: await call("x.y.z") }};
  document.getElementById("result").textContent = btoa(JSON.stringify(result));
}})();
</script></body></html>
"#,
        url = gateway.url("/api/orders")
    )
}

/// Loads `url` in headless Chromium and returns what the page wrote into
/// `#result`. `--dump-dom` prints the DOM once the page is done, and virtual
/// time does not advance while fetches are pending, so the result is there
/// when Chromium exits.
async fn chromium_result(url: String) -> Value {
    let profile = tempfile::tempdir().expect("chromium profile dir");
    let profile_arg = format!("--user-data-dir={}", profile.path().display());
    let output = tokio::task::spawn_blocking(move || {
        // `timeout` bounds a hung browser; the verdict never depends on time.
        Command::new("timeout")
            .args(["--kill-after=10s", "120s", "chromium"])
            .args([
                "--headless",
                // A container's root user can't use Chromium's sandbox.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--no-proxy-server",
                "--virtual-time-budget=10000",
                &profile_arg,
                "--dump-dom",
                &url,
            ])
            .output()
    })
    .await
    .expect("chromium task")
    .unwrap_or_else(|e| panic!("cannot run timeout/chromium ({e})"));
    drop(profile);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "chromium failed ({}); it must be installed (scripts/test installs the Debian package `chromium`); stderr:\n{stderr}",
        output.status
    );
    let encoded = stdout
        .split_once(r#"<pre id="result">"#)
        .and_then(|(_, rest)| rest.split_once("</pre>"))
        .map(|(inner, _)| inner.trim())
        .unwrap_or_else(|| panic!("no #result in the page:\n{stdout}\nstderr:\n{stderr}"));
    let decoded = STANDARD
        .decode(encoded)
        .unwrap_or_else(|e| panic!("#result is {encoded:?}, not a finished result ({e})"));
    serde_json::from_slice(&decoded).expect("#result is JSON")
}

#[tokio::test]
async fn chromium_fetch_with_a_bearer_token_from_an_allowed_origin() {
    let mut page_server = PageServer::bind();
    let (upstream, gateway) = start(&config(&page_server.origin())).await;
    let token = token_of("read");
    page_server.serve(page(&gateway, &token));

    let result = chromium_result(format!("{}/", page_server.origin())).await;

    let valid = &result["valid"];
    assert_eq!(valid["status"], 200, "{result}");
    let body: Value = serde_json::from_str(valid["body"].as_str().expect("body")).expect("JSON");
    assert_eq!(body["upstream"], "ok");
    assert!(
        valid["request_id"].is_string(),
        "X-Request-Id exposed: {result}"
    );

    // The browser could read jwtgate's own 401: body and exposed challenge.
    let invalid = &result["invalid"];
    assert_eq!(invalid["status"], 401, "{result}");
    let body: Value = serde_json::from_str(invalid["body"].as_str().expect("body")).expect("JSON");
    assert_eq!(body["error"], "invalid_token");
    assert!(
        invalid["www_authenticate"]
            .as_str()
            .is_some_and(|w| w.starts_with("Bearer realm=\"jwtgate\", error=\"invalid_token\"")),
        "{result}"
    );

    // The upstream saw the one authenticated request, never a preflight,
    // with the identity jwtgate verified and without the token.
    let requests = upstream.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let request = &requests[0];
    assert_eq!(request.method, "GET");
    assert_eq!(request.header("x-user-id"), Some("alice"));
    assert_eq!(request.header("x-user-scopes"), Some("read"));
    assert!(!request.has_header("authorization"));
    assert_eq!(
        request.header("origin"),
        Some(page_server.origin().as_str())
    );
    // Chromium caches the preflight answer (max_age), so the second call may
    // not need one; the first always does.
    let preflights = metric_value(
        &gateway.metrics().await,
        REQUESTS,
        &[("route", "api"), ("status", "204")],
    );
    assert!(preflights >= 1.0, "no preflight was answered");
}

#[tokio::test]
async fn chromium_fetch_from_a_disallowed_origin_fails_in_the_browser() {
    let allowed = PageServer::bind();
    let mut other = PageServer::bind();
    let (upstream, gateway) = start(&config(&allowed.origin())).await;
    other.serve(page(&gateway, &token_of("read")));

    let result = chromium_result(format!("{}/", other.origin())).await;

    for call in ["valid", "invalid"] {
        let error = result[call]["error"].as_str().unwrap_or_default();
        assert!(error.contains("Failed to fetch"), "{call}: {result}");
    }
    assert_eq!(
        upstream.count(),
        0,
        "the browser's request reached the upstream"
    );
    gateway.expect_requests("api", "403", 2.0).await;
}
