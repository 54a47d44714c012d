//! The authorization listener (`listen.authz`) behind real front proxies on
//! loopback: nginx with `auth_request` and Caddy with `forward_auth` (both
//! from Debian, installed by scripts/test), each in front of a recording
//! upstream, and Envoy's HTTP `ext_authz` contract spoken byte for byte.
//! Allowed, refused (401 and 403 with their challenge), identity headers
//! arriving through the front proxy, client-spoofed ones not arriving, keys
//! unavailable; metrics and the access log as for proxied requests.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;

const ROUTES: &str = r#"
  - name: reader
    match: { path_prefix: /read }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { issuers: [main], scopes: { all_of: [read] } }
    forward: { claims: { sub: X-User-Id } }
  - name: public
    match: { path_prefix: /public }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { mode: off }
  - name: unavailable
    match: { path_prefix: /down }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { issuers: [down] }
  - name: audited
    match: { path_prefix: /audited }
    auth: { mode: audit, issuers: [main], scopes: { all_of: [read] } }
    forward: { claims: { sub: X-User-Id } }
  - name: browser
    match: { path_prefix: /browser }
    auth: { issuers: [main] }
    forward: { claims: { sub: X-User-Id } }
    cors: { allowed_origins: ["https://app.example"], allowed_methods: [PUT] }
  - name: decided-only
    match: { path_prefix: /only }
    auth: { issuers: [main] }
    forward: { claims: { sub: X-User-Id } }
  - name: writer
    match: { path_prefix: /write, methods: [POST] }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { mode: off }
  - name: limited
    match: { path_prefix: /limited }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { mode: off }
    rate_limits: [{ name: per-client, rate: 1/h, key: client_address }]
"#;

/// The authorization listener is `{AUTHZ}`; nginx and Caddy on loopback are
/// the trusted front proxies.
fn config() -> Config {
    Config::main(ISS)
        .server(r#"trusted_proxies: ["127.0.0.1"]"#)
        .listen("\n  http: \"127.0.0.1:{PROXY}\"\n  authz: {AUTHZ}")
        .issuers(DOWN_ISSUER)
}

fn token_of(sub: &str, scope: &str) -> String {
    token(ISS, sub, json!({ "scope": scope }))
}

fn down_token() -> String {
    token("https://down.test", "dave", json!({}))
}

/// A gateway whose authorization listener is set up by `authz` (a YAML
/// flow map without `addr`), and that listener's address.
async fn gateway(upstream: &Upstream, authz: &str, env: &[(&str, &str)]) -> (Gateway, SocketAddr) {
    gateway_with(&config().routes(ROUTES), upstream, authz, env).await
}

async fn gateway_with(
    template: &str,
    upstream: &Upstream,
    authz: &str,
    env: &[(&str, &str)],
) -> (Gateway, SocketAddr) {
    let port = free_port();
    let authz = format!("{{ addr: \"127.0.0.1:{port}\", {authz} }}");
    let config = template.replace("{AUTHZ}", &authz);
    let gateway = Gateway::start_with_env(&config, upstream, &[], env).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for_listener(addr, &|| gateway.log());
    (gateway, addr)
}

/// A front proxy, once it listens.
fn listening(front: Daemon) -> Daemon {
    wait_for_listener(front.addr(), &|| front.log());
    front
}

/// The page that documents each front proxy's configuration.
const AUTHZ_DOC: &str = "docs/guides/auth-server.md";

/// The fenced `lang` block that follows `heading` in [`AUTHZ_DOC`]: the
/// front proxies here run the configuration the page gives, not a copy
/// that could drift from it.
fn documented(heading: &str, lang: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(AUTHZ_DOC);
    let doc = std::fs::read_to_string(&path).expect("read the authz page");
    let section = &doc[doc
        .find(heading)
        .unwrap_or_else(|| panic!("{AUTHZ_DOC} has no {heading:?}"))..];
    let fence = format!("```{lang}\n");
    let start = section
        .find(&fence)
        .unwrap_or_else(|| panic!("no {lang} block under {heading:?}"))
        + fence.len();
    let end = start + section[start..].find("```").expect("a closed block");
    section[start..end].to_string()
}

/// `text` with `from`, which the documented block must contain, replaced.
fn swap(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} is not in:\n{text}");
    text.replace(from, to)
}

fn start_nginx(authz: SocketAddr, upstream: &Upstream) -> Daemon {
    let dir = tempfile::tempdir().expect("nginx tempdir");
    let port = free_port();
    let locations = documented("## NGINX `auth_request`", "nginx");
    let locations = swap(&locations, "jwtgate-authz:9191", &authz.to_string());
    let locations = swap(
        &locations,
        "http://backend;",
        &format!("http://{};", upstream.addr()),
    );
    let server = format!("listen 127.0.0.1:{port};\n{locations}");
    listening(Daemon::nginx(&nginx_conf(dir.path(), &server), dir, port))
}

/// The Caddyfile docs/guides/auth-server.md gives, on a loopback port without HTTPS.
/// Debian 12's Caddy (2.6) has `forward_auth`, but its `copy_headers` sends
/// the placeholder's own text upstream when jwtgate's answer lacks the
/// header, which is why the page spells out what `forward_auth` expands to.
fn caddyfile(port: u16, authz: SocketAddr, upstream: SocketAddr) -> String {
    let site = documented("## Caddy `forward_auth`", "caddyfile");
    let site = swap(
        &site,
        "api.example.com {",
        &format!("http://:{port} {{\n    bind 127.0.0.1"),
    );
    let site = swap(&site, "jwtgate-authz:9191", &authz.to_string());
    let site = swap(&site, "backend:8080", &upstream.to_string());
    format!("{{\n    admin off\n    auto_https off\n}}\n{site}")
}

fn start_caddy(authz: SocketAddr, upstream: &Upstream) -> Daemon {
    let dir = tempfile::tempdir().expect("caddy tempdir");
    let port = free_port();
    let path = dir.path().join("Caddyfile");
    std::fs::write(&path, caddyfile(port, authz, upstream.addr())).expect("write Caddyfile");
    let mut command = Command::new(sbin("caddy", "caddy"));
    command
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&path)
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path());
    listening(Daemon::spawn(command, dir, port))
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: api.test\r\nX-User-Id: mallory{extra}")
}

fn bearer(token: &str) -> String {
    format!("\r\nAuthorization: Bearer {token}")
}

/// What every front proxy must show: allowed with identity, spoofing
/// stripped, 401 and 403 with their challenges, 503 when keys are out.
async fn front_proxy_contract(front: SocketAddr, upstream: &Upstream, bodies_pass: bool) {
    let response = raw_request(
        front,
        &get("/read/report", &bearer(&token_of("alice", "read"))),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(upstream.count(), 1, "{response:?}");
    let seen = upstream.last();
    assert_eq!(seen.path, "/read/report");
    assert_eq!(seen.header_all("x-user-id"), ["alice"], "{seen:?}");
    assert!(
        !seen.has_header("authorization"),
        "the token reached the backend: {seen:?}"
    );

    let response = raw_request(front, &get("/public/page", "")).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = upstream.last();
    assert_eq!(seen.path, "/public/page");
    assert!(
        !seen.has_header("x-user-id"),
        "spoofed identity arrived: {seen:?}"
    );

    let before = upstream.count();
    let response = raw_request(front, &get("/read/report", "")).await;
    assert_eq!(response.status, 401, "{}", response.text());
    assert_eq!(
        response.header("www-authenticate"),
        Some("Bearer realm=\"jwtgate\"")
    );

    // A client naming another request in the convention headers: the front
    // proxy overwrites them, so /read is still what is decided.
    let spoofed = "\r\nX-Original-URI: /public/x\r\nX-Original-Method: GET\r\nX-Forwarded-Uri: /public/x\r\nX-Forwarded-Method: GET";
    let response = raw_request(front, &get("/read/report", spoofed)).await;
    assert_eq!(response.status, 401, "{}", response.text());

    let response = raw_request(
        front,
        &get("/read/report", &bearer(&token_of("bob", "write"))),
    )
    .await;
    assert_eq!(response.status, 403, "{}", response.text());
    let challenge = response.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.contains("error=\"insufficient_scope\"") && challenge.contains("scope=\"read\""),
        "{challenge}"
    );
    if bodies_pass {
        assert_eq!(response.json()["error"], "insufficient_scope");
    }

    let response = raw_request(front, &get("/down/x", &bearer(&down_token()))).await;
    assert_eq!(response.status, 503, "{}", response.text());
    assert_eq!(response.header("retry-after"), Some("10"));
    assert_eq!(response.header("allow"), None);
    assert_eq!(
        upstream.count(),
        before,
        "a refused request reached the upstream"
    );
    refusals_keep_their_status(front, upstream).await;
}

/// jwtgate's other refusals reach the client with jwtgate's status, not
/// the front proxy's own error, and with `Allow` and `Retry-After` only
/// when jwtgate sent them.
async fn refusals_keep_their_status(front: SocketAddr, upstream: &Upstream) {
    let response = raw_request(front, &get("/limited/x", "")).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let before = upstream.count();
    let cases = [
        ("/read/a%2Fb", 400, None),
        ("/nowhere", 404, None),
        ("/write/x", 405, Some("POST")),
    ];
    for (path, status, allow) in cases {
        let response = raw_request(front, &get(path, "")).await;
        assert_eq!(response.status, status, "{path}: {}", response.text());
        assert_eq!(response.header("allow"), allow, "{path}: {response:?}");
        assert_eq!(response.header("retry-after"), None, "{path}: {response:?}");
    }
    let response = raw_request(front, &get("/limited/x", "")).await;
    assert_eq!(response.status, 429, "{}", response.text());
    let retry_after: u64 = response
        .header("retry-after")
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After in seconds: {response:?}"));
    assert!(retry_after > 0, "{response:?}");
    assert_eq!(response.header("allow"), None);
    assert_eq!(
        upstream.count(),
        before,
        "a refused request reached the upstream"
    );
}

#[tokio::test]
async fn nginx_auth_request_in_front_of_a_recording_upstream() {
    let upstream = Upstream::start();
    let (gateway, authz) = gateway(&upstream, "convention: nginx", &[]).await;
    let nginx = start_nginx(authz, &upstream);
    front_proxy_contract(nginx.addr(), &upstream, false).await;
    drop(nginx);
    gateway
        .expect_decisions(&[("route", "reader"), ("outcome", "allow")], 1.0)
        .await;
}

#[tokio::test]
async fn caddy_forward_auth_in_front_of_a_recording_upstream() {
    let upstream = Upstream::start();
    let (gateway, authz) = gateway(&upstream, "convention: forwarded", &[]).await;
    let caddy = start_caddy(authz, &upstream);
    front_proxy_contract(caddy.addr(), &upstream, true).await;
    gateway
        .expect_decisions(
            &[
                ("route", "reader"),
                ("outcome", "deny"),
                ("reason", "insufficient_scope"),
            ],
            1.0,
        )
        .await;
}

/// Envoy's HTTP `ext_authz` check request: the original method and path
/// under `path_prefix`, the original headers (Host, Authorization) as they
/// came, no body.
#[tokio::test]
async fn envoy_http_ext_authz_contract() {
    let upstream = Upstream::start();
    let (gateway, authz) = gateway(
        &upstream,
        "convention: envoy, path_prefix: /ext_authz, shared_secret: { header: x-authz-secret, env: AUTHZ_SECRET }",
        &[("AUTHZ_SECRET", "between-proxies")],
    )
    .await;
    let check = |method: &str, path: &str, extra: &str| {
        format!(
            "{method} /ext_authz{path} HTTP/1.1\r\nHost: api.test\r\nX-Forwarded-Proto: https\r\nX-Request-Id: envoy-{method}-{}\r\nContent-Length: 0{extra}",
            path.len()
        )
    };
    let secret = "\r\nX-Authz-Secret: between-proxies";

    let allowed = format!("{secret}{}", bearer(&token_of("alice", "read")));
    let response = raw_request(authz, &check("POST", "/read/orders?page=02", &allowed)).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("x-user-id"), Some("alice"));
    assert_eq!(response.header("x-request-id"), Some("envoy-POST-20"));

    let response = raw_request(authz, &check("GET", "/read/orders", secret)).await;
    assert_eq!(response.status, 401);
    assert_eq!(
        response.header("www-authenticate"),
        Some("Bearer realm=\"jwtgate\"")
    );
    let body = response.json();
    assert_eq!(body["error"], "unauthorized");
    assert_eq!(body["request_id"], "envoy-GET-12");
    let line = gateway.access_line("envoy-GET-12").await;
    let bytes_out = format!("bytes_out={}", response.body.len());
    assert!(line.contains(&bytes_out), "{bytes_out} not in {line}");

    // A route without an upstream: decided here, unknown to the proxy.
    let allowed = format!("{secret}{}", bearer(&token_of("carol", "")));
    let response = raw_request(authz, &check("GET", "/only/x", &allowed)).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("x-user-id"), Some("carol"));
    let response = gateway.get("/only/x", Some(&token_of("carol", ""))).await;
    assert_eq!(response.status(), 404);
    assert_eq!(upstream.count(), 0);

    // Routed on the original path with the prefix stripped: no route.
    let response = raw_request(authz, &check("GET", "/elsewhere", secret)).await;
    assert_eq!(response.status, 404);

    // Without the shared secret, or with a wrong one: refused before any
    // decision, whatever the token.
    for extra in ["", "\r\nX-Authz-Secret: between-proxie"] {
        let extra = format!("{extra}{}", bearer(&token_of("alice", "read")));
        let response = raw_request(authz, &check("GET", "/read/orders", &extra)).await;
        assert_eq!(response.status, 403, "{}", response.text());
        assert_eq!(response.json()["error"], "forbidden");
        assert!(response.header("x-user-id").is_none());
    }

    let line = gateway
        .expect_access_line(
            "envoy-POST-20",
            &[
                "adapter=\"authz\"",
                "method=\"POST\"",
                "path=\"/read/orders\"",
                "route=\"reader\"",
                "status=200",
                "sub=\"alice\"",
                "outcome=\"allow\"",
            ],
        )
        .await;
    assert!(
        !line.contains("page=2"),
        "the query is never logged: {line}"
    );
    gateway.expect_requests("reader", "401", 1.0).await;
    // Counted under the authorization listener, apart from proxied
    // traffic, refusals with their reasons.
    gateway
        .expect_adapter_requests("authz", ["reader", "401", "missing_token"], 1.0)
        .await;
    let no_secret = ["_none", "403", "authz_secret_mismatch"];
    gateway
        .expect_adapter_requests("authz", no_secret, 2.0)
        .await;
    let proxied = [("adapter", "proxy"), ("status", "404")];
    gateway.expect_metric(REQUESTS, &proxied, 1.0).await;
    assert_eq!(gateway.metric(REQUESTS, &[("adapter", "proxy")]).await, 1.0);
}

/// The conventions are not mixed: a listener set up for Traefik and Caddy
/// ignores NGINX's headers a client could add, and the other way round.
#[tokio::test]
async fn only_the_configured_convention_is_read() {
    let upstream = Upstream::start();
    let (_gateway, authz) = gateway(&upstream, "convention: forwarded", &[]).await;
    let response = raw_request(
        authz,
        "GET / HTTP/1.1\r\nHost: api.test\r\nX-Original-URI: /public/x\r\nX-Original-Method: GET",
    )
    .await;
    assert_eq!(response.status, 400, "{}", response.text());
    let response = raw_request(
        authz,
        "GET / HTTP/1.1\r\nHost: auth.internal\r\nX-Forwarded-Method: GET\r\nX-Forwarded-Uri: /public/x\r\nX-Forwarded-Host: api.test",
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
}

/// A route without an upstream is a config error unless the authorization
/// listener is set: nothing else could ever serve it.
#[test]
fn a_route_without_upstream_needs_the_authz_listener() {
    let out = check(
        "routes:\n  - name: orphan\n    match: { path_prefix: /x }\n    auth: { mode: off }\n",
    );
    assert!(!out.success);
    assert!(
        out.stderr.contains("route \"orphan\" has no upstream")
            && out.stderr.contains("listen.authz is not set"),
        "{}",
        out.stderr
    );
}

/// `listen.authz` is restart-only, like every listener: a reload that
/// changes it is refused whole, and the listener keeps its convention.
#[tokio::test]
async fn a_reload_that_changes_the_authz_listener_is_refused() {
    let upstream = Upstream::start();
    let (gateway, authz) = gateway(&upstream, "convention: forwarded", &[]).await;
    let config = std::fs::read_to_string(gateway.config_path()).unwrap();
    std::fs::write(
        gateway.config_path(),
        config.replace("convention: forwarded", "convention: nginx"),
    )
    .unwrap();
    let (status, error) = gateway.reload().await;
    assert_eq!(status, 409);
    assert!(
        error.contains("listen.authz")
            && error.contains("(forwarded)")
            && error.contains("(nginx)"),
        "{error}"
    );
    let response = raw_request(
        authz,
        "GET / HTTP/1.1\r\nHost: api.test\r\nX-Forwarded-Method: GET\r\nX-Forwarded-Uri: /public/x",
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
}

/// ingress-nginx names the original request only in `X-Original-URL`; the
/// check request's own `Host` is the auth service's.
#[tokio::test]
async fn ingress_nginx_original_url() {
    let upstream = Upstream::start();
    let (_gateway, authz) = gateway(&upstream, "convention: ingress_nginx", &[]).await;
    let request = |url: &str, extra: &str| {
        format!(
            "GET /authz HTTP/1.1\r\nHost: jwtgate-authz.jwtgate.svc\r\nX-Original-Method: GET\r\nX-Original-URL: {url}{extra}"
        )
    };
    let allowed = bearer(&token_of("alice", "read"));
    let response = raw_request(authz, &request("https://api.test/read/x?y=1", &allowed)).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("x-user-id"), Some("alice"));
    // A client's X-Original-URI, passed through by the subrequest, is not read.
    let spoofed = "\r\nX-Original-URI: /public/x";
    let response = raw_request(authz, &request("http://api.test/read/x", spoofed)).await;
    assert_eq!(response.status, 401, "{}", response.text());
}

/// `jwtgate check` names the listener, and never the secret.
#[test]
fn check_prints_the_authz_listener() {
    let out = jwtgate_on(
        "listen:\n  authz: { addr: \"127.0.0.1:9191\", convention: envoy, shared_secret: { env: CHECK_SECRET } }\nroutes:\n  - name: only\n    auth: { mode: off }\n",
        &["check"],
        &[],
        &[("CHECK_SECRET", "do-not-print")],
    );
    assert!(out.success, "{}", out.text());
    let stdout = &out.stdout;
    assert!(
        stdout.contains("authz 127.0.0.1:9191 (envoy, shared secret required)"),
        "{stdout}"
    );
    assert!(stdout.contains("(none: listen.authz only)"), "{stdout}");
    assert!(!stdout.contains("do-not-print"), "{stdout}");
}

/// What is let through without identity: an audit route's would-be
/// refusal and a CORS preflight are `200` with no identity header; the
/// decision is counted and logged as on the proxy, with the client named
/// by the trusted front proxy's X-Forwarded-For; and a token the proxy
/// verified is a cache hit here (one cache for both listeners).
#[tokio::test]
async fn let_through_without_identity_counted_and_cached_as_on_the_proxy() {
    let upstream = Upstream::start();
    let (gateway, authz) = gateway(&upstream, "convention: forwarded", &[]).await;
    let ask = |method: &str, uri: &str, extra: &str| {
        format!(
            "GET / HTTP/1.1\r\nHost: jwtgate-authz\r\nX-Forwarded-Host: api.test\r\nX-Forwarded-Method: {method}\r\nX-Forwarded-Uri: {uri}\r\nX-Forwarded-For: 203.0.113.7{extra}"
        )
    };

    let wrong_scope = bearer(&token_of("bob", "write"));
    let extra = format!("\r\nX-Request-Id: audited-1{wrong_scope}");
    let response = raw_request(authz, &ask("GET", "/audited/x", &extra)).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(response.header("x-user-id").is_none(), "{response:?}");
    gateway
        .expect_access_line(
            "audited-1",
            &[
                "outcome=\"would_deny\"",
                "reason=\"insufficient_scope\"",
                "client=\"203.0.113.7\"",
                "adapter=\"authz\"",
            ],
        )
        .await;

    let preflight = "\r\nOrigin: https://app.example\r\nAccess-Control-Request-Method: PUT";
    let response = raw_request(authz, &ask("OPTIONS", "/browser/x", preflight)).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(response.header("x-user-id").is_none(), "{response:?}");

    let shared = token_of("erin", "read");
    let response = gateway.get("/read/x", Some(&shared)).await;
    assert_eq!(response.status(), 200);
    let hits = gateway.metric("jwtgate_token_cache_hits_total", &[]).await;
    let response = raw_request(authz, &ask("GET", "/read/x", &bearer(&shared))).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("x-user-id"), Some("erin"));
    gateway
        .expect_metric("jwtgate_token_cache_hits_total", &[], hits + 1.0)
        .await;
}

/// During SIGTERM's drain the proxy stops taking new work, but the front
/// proxy's requests still need their answers: the listener keeps deciding.
#[tokio::test]
async fn the_listener_answers_while_the_proxy_drains() {
    let upstream = Upstream::start();
    let config = config().server("grace_period: 1h").routes(ROUTES);
    let (mut gateway, authz) = gateway_with(&config, &upstream, "convention: forwarded", &[]).await;
    gateway.signal("TERM");
    gateway
        .wait_for_log(|log| log.contains("SIGTERM received: draining"))
        .await;
    let response = raw_request(
        authz,
        &format!(
            "GET / HTTP/1.1\r\nHost: api.test\r\nX-Forwarded-Method: GET\r\nX-Forwarded-Uri: /read/x{}",
            bearer(&token_of("alice", "read"))
        ),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("x-user-id"), Some("alice"));
    gateway.signal("INT");
    let status = gateway.wait_for_exit(Duration::from_secs(60)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

/// A gateway that only decides: no clear-text or TLS proxy listener, the
/// authorization listener and the admin one.
#[tokio::test]
async fn a_gateway_with_only_the_authz_listener_decides() {
    let upstream = Upstream::start();
    // The harness waits for {PROXY}: here it is the authorization listener.
    let config = Config::main(ISS)
        .listen(
            "\n  http: { addr: \"127.0.0.1:1\", mode: off }\n  authz: { addr: \"127.0.0.1:{PROXY}\", convention: forwarded }",
        )
        .routes(
            "\n  - name: decided-only\n    auth: { issuers: [main] }\n    forward: { claims: { sub: X-User-Id } }\n",
        );
    let gateway = Gateway::start(&config, &upstream).await;
    let listening = listening_ports(gateway.pid());
    let expected = [gateway.admin_addr().port(), gateway.proxy_addr().port()];
    assert_eq!(
        listening,
        expected.into_iter().collect(),
        "{}",
        gateway.log()
    );
    let ask = |extra: &str| {
        format!(
            "GET / HTTP/1.1\r\nHost: jwtgate-authz\r\nX-Forwarded-Host: api.test\r\nX-Forwarded-Method: GET\r\nX-Forwarded-Uri: /x{extra}"
        )
    };
    let authz = gateway.proxy_addr();
    let response = raw_request(authz, &ask(&bearer(&token_of("alice", "")))).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("x-user-id"), Some("alice"));
    let response = raw_request(authz, &ask("")).await;
    assert_eq!(response.status, 401, "{}", response.text());
}
