//! The router and the upstream agree on what a request names: the real
//! binary in front of a recording upstream, sent byte-exact requests whose
//! paths and hosts a lenient backend would read as a protected resource.
//! With `/` public and `/admin` protected, each trick is either refused
//! (400) or routed to the protected route (401), never forwarded through the
//! public one.

mod common;

use common::*;
use serde_json::json;

const ROUTES: &str = r#"
  - name: admin-host
    match: { host: Admin.Example, path_prefix: / }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { issuers: [main] }
    forward: { claims: { sub: X-User-Id } }
  - name: admin
    match: { path_prefix: /admin, methods: [GET, POST] }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { issuers: [main] }
    forward: { claims: { sub: X-User-Id } }
  - name: reports-read
    match: { path_prefix: /reports, methods: [GET] }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { mode: off }
  - name: reports-write
    match: { path_prefix: /reports, methods: [POST, PUT, GET] }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { issuers: [main] }
  - name: public
    match: { path_prefix: / }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { mode: off }
"#;

fn config() -> String {
    Config::main(ISS).routes(ROUTES)
}

/// `METHOD target HTTP/1.1` with `headers` (each `Name: value`), verbatim.
async fn send(gateway: &Gateway, method: &str, target: &str, headers: &[&str]) -> RawResponse {
    let mut head = format!("{method} {target} HTTP/1.1");
    for header in headers {
        head.push_str("\r\n");
        head.push_str(header);
    }
    raw_request(gateway.proxy_addr(), &head).await
}

/// A jwtgate 400 for a request target: JSON body, its request id in the
/// body and the header, no challenge (it is not about a token).
fn assert_bad_target(response: &RawResponse, context: &str) {
    assert_eq!(response.status, 400, "{context}: {}", response.text());
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{context}"
    );
    let body = response.json();
    assert_eq!(body["error"], "bad_request", "{context}");
    let request_id = response.header("x-request-id").expect("X-Request-Id");
    assert_eq!(body["request_id"], request_id, "{context}");
    assert!(response.header("www-authenticate").is_none(), "{context}");
}

#[tokio::test]
async fn path_tricks_are_refused_or_reach_the_protected_route() {
    let (upstream, gateway) = start(&config()).await;
    // (request-target, the access-log reason of a 400, or None for a 401 on
    // the protected route)
    let cases: &[(&str, Option<&str>)] = &[
        ("/%61dmin", None),
        ("/%61%64%6D%69%6E/users", None),
        ("/public/../admin", None),
        ("/x/%2e%2E/admin", None),
        ("//admin", None),
        ("/./admin/", None),
        ("/admin%2fusers", Some("encoded_slash")),
        ("/admin%2Fusers", Some("encoded_slash")),
        ("/x/..%2fadmin", Some("encoded_slash")),
        ("/x/..;/admin", Some("path_parameter")),
        ("/admin;jsessionid=1", Some("path_parameter")),
        ("/admin%3bjsessionid=1", Some("path_parameter")),
        ("/admin\\users", Some("backslash")),
        ("/x/..\\admin", Some("backslash")),
        ("/x/..%5cadmin", Some("backslash")),
        ("/x/%252e%252e/admin", Some("double_encoding")),
        ("/%2561dmin", Some("double_encoding")),
        ("/x/..%252fadmin", Some("double_encoding")),
        ("/admin%00", Some("control_character")),
        ("/admin\0", Some("control_character")),
        ("/x%0d%0aX-Injected:%201", Some("control_character")),
        ("/caf%C3%28", Some("invalid_utf8")),
        ("/%C0%AE%C0%AE/admin", Some("invalid_utf8")),
        ("/caf\u{e9}", Some("invalid_target")),
        ("/a{b}", Some("invalid_target")),
        ("/a|b", Some("invalid_target")),
        ("/a^b", Some("invalid_target")),
        ("/a%zz", Some("invalid_target")),
        ("/a%2", Some("invalid_target")),
        ("*", Some("invalid_target")),
    ];
    let mut refused = 0;
    for (i, (target, reason)) in cases.iter().enumerate() {
        let request_id = format!("path-trick-{i}");
        let response = send(
            &gateway,
            "GET",
            target,
            &["Host: gateway.test", &format!("X-Request-Id: {request_id}")],
        )
        .await;
        let context = format!("GET {target:?}");
        match reason {
            None => {
                assert_eq!(response.status, 401, "{context}: {}", response.text());
                assert_eq!(
                    response.header("www-authenticate"),
                    Some("Bearer realm=\"jwtgate\""),
                    "{context}"
                );
                let line = gateway.access_line(&request_id).await;
                assert!(
                    line.contains("route=\"admin\"") || line.contains("route=admin"),
                    "{context}: {line}"
                );
            }
            Some(reason) => {
                refused += 1;
                assert_bad_target(&response, &context);
                let line = gateway.access_line(&request_id).await;
                assert!(line.contains(reason), "{context}: {line}");
                assert!(line.contains("status=400"), "{context}: {line}");
            }
        }
        assert_eq!(upstream.count(), 0, "{context} reached the upstream");
    }
    gateway
        .expect_requests("_none", "400", refused as f64)
        .await;
    // Each under its reason, as the access log has it.
    let mut by_reason = std::collections::BTreeMap::<&str, f64>::new();
    for reason in cases.iter().filter_map(|(_, reason)| *reason) {
        *by_reason.entry(reason).or_default() += 1.0;
    }
    assert!(by_reason["encoded_slash"] >= 3.0, "{by_reason:?}");
    for (reason, count) in by_reason {
        gateway.expect_refusals("400", reason, count).await;
    }
}

#[tokio::test]
async fn the_upstream_receives_the_canonical_path_and_the_original_query() {
    let (upstream, gateway) = start(&config()).await;
    let token = token(ISS, "alice", json!({}));
    let bearer = format!("Authorization: Bearer {token}");
    for (target, auth, forwarded) in [
        (
            "/%61dmin/./x//y/%7euser/?q=%2F&z=%2561#frag",
            true,
            "/admin/x/y/~user/?q=%2F&z=%2561",
        ),
        ("/docs/%c3%a9t%c3%a9?x", false, "/docs/%C3%A9t%C3%A9?x"),
        ("/docs/a/../b/.", false, "/docs/b/"),
        // Already canonical: forwarded byte for byte, query untouched.
        (
            "/docs/a:b@c!$&'()*+,=/?q=%2f%zz&&",
            false,
            "/docs/a:b@c!$&'()*+,=/?q=%2f%zz&&",
        ),
        ("/docs/100%25", false, "/docs/100%25"),
    ] {
        let mut headers = vec!["Host: gateway.test"];
        if auth {
            headers.push(&bearer);
        }
        let response = send(&gateway, "GET", target, &headers).await;
        assert_eq!(response.status, 200, "{target}: {}", response.text());
        assert_eq!(upstream.last().path, forwarded, "{target}");
    }
    assert_eq!(upstream.last().header("x-user-id"), None);
    assert_eq!(upstream.requests()[0].header("x-user-id"), Some("alice"));
}

#[tokio::test]
async fn hosts_match_without_case_port_or_trailing_dot() {
    let (upstream, gateway) = start(&config()).await;
    for host in [
        "admin.example",
        "admin.example.",
        "ADMIN.Example.",
        "admin.example:8443",
        "Admin.Example.:8443",
    ] {
        let response = send(&gateway, "GET", "/x", &[&format!("Host: {host}")]).await;
        assert_eq!(
            response.status,
            401,
            "Host {host:?} skipped the admin.example route: {}",
            response.text()
        );
    }
    assert_eq!(upstream.count(), 0);

    let token = token(ISS, "alice", json!({}));
    let response = send(
        &gateway,
        "GET",
        "/x",
        &[
            "Host: admin.example.",
            &format!("Authorization: Bearer {token}"),
        ],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(upstream.last().header("x-user-id"), Some("alice"));

    // Another host is not the admin host; a host with an empty label is no host.
    let response = send(&gateway, "GET", "/x", &["Host: admin.example.org"]).await;
    assert_eq!(response.status, 200);
    assert_eq!(upstream.count(), 2);
    for host in ["admin.example..", "admin..example", "admin example"] {
        let response = send(&gateway, "GET", "/x", &[&format!("Host: {host}")]).await;
        assert_bad_target(&response, host);
    }
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn absolute_form_is_routed_by_its_own_authority() {
    let (upstream, gateway) = start(&config()).await;
    // No Host header: the authority in the request line decides.
    for target in [
        "http://admin.example/x",
        "http://Admin.Example./x",
        "http://admin.example:8080/x",
        "HTTP://admin.example",
    ] {
        let response = send(&gateway, "GET", target, &[]).await;
        assert_eq!(response.status, 401, "{target}: {}", response.text());
    }
    // A Host equal to the authority changes nothing.
    let response = send(
        &gateway,
        "GET",
        "http://admin.example/x",
        &["Host: admin.example"],
    )
    .await;
    assert_eq!(response.status, 401, "{}", response.text());
    assert_eq!(upstream.count(), 0);

    // Upstream: origin form, the canonical path and query, Host = authority.
    let token = token(ISS, "alice", json!({}));
    let response = send(
        &gateway,
        "GET",
        "http://Admin.Example.:8080/a/../%62?q=1",
        &[&format!("Authorization: Bearer {token}")],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = upstream.last();
    assert_eq!(seen.path, "/b?q=1");
    assert_eq!(seen.header_all("host"), ["Admin.Example.:8080"]);
    assert_eq!(seen.header("x-user-id"), Some("alice"));

    let response = send(&gateway, "GET", "http://other.example?q=2", &[]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = upstream.last();
    assert_eq!(seen.path, "/?q=2");
    assert_eq!(seen.header_all("host"), ["other.example"]);

    // The authority's path is canonicalized like any other.
    let response = send(&gateway, "GET", "http://other.example/%61dmin", &[]).await;
    assert_eq!(response.status, 401, "{}", response.text());
    let response = send(&gateway, "GET", "http://other.example/admin%2f", &[]).await;
    assert_bad_target(&response, "absolute form with %2F");
    // Only http and https name a resource here.
    let response = send(&gateway, "GET", "ftp://other.example/x", &[]).await;
    assert_eq!(response.status, 400, "{}", response.text());
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn a_host_that_disagrees_or_repeats_is_refused() {
    let (upstream, gateway) = start(&config()).await;
    for headers in [
        &["Host: other.example", "Host: admin.example"][..],
        &["Host: admin.example", "Host: admin.example"][..],
        &["Host: admin.example", "host: other.example"][..],
    ] {
        let response = send(&gateway, "GET", "/x", headers).await;
        assert_eq!(response.status, 400, "{headers:?}: {}", response.text());
    }
    // Absolute form with a Host naming another host (RFC 9112 §3.2.2).
    let response = send(
        &gateway,
        "GET",
        "http://other.example/x",
        &["Host: admin.example"],
    )
    .await;
    assert_eq!(response.status, 400, "{}", response.text());
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn a_method_the_route_lacks_is_405_with_allow() {
    let (upstream, gateway) = start(&config()).await;
    // `/admin` admits GET and POST; `/` would admit DELETE, but the longest
    // prefix decides.
    for (method, target, allow) in [
        ("DELETE", "/admin", "GET, POST"),
        ("PUT", "/admin/users/1", "GET, POST"),
        ("DELETE", "/%61dmin", "GET, POST"),
        ("PATCH", "/reports/q3", "GET, POST, PUT"),
    ] {
        let request_id = format!("405-{method}-{}", target.len());
        let response = send(
            &gateway,
            method,
            target,
            &["Host: gateway.test", &format!("X-Request-Id: {request_id}")],
        )
        .await;
        let context = format!("{method} {target}");
        assert_eq!(response.status, 405, "{context}: {}", response.text());
        assert_eq!(response.header("allow"), Some(allow), "{context}");
        let body = response.json();
        assert_eq!(body["error"], "method_not_allowed", "{context}");
        assert_eq!(body["request_id"], request_id.as_str(), "{context}");
        assert_eq!(response.header("x-request-id"), Some(request_id.as_str()));
        let line = gateway.access_line(&request_id).await;
        assert!(line.contains("method_not_allowed"), "{context}: {line}");
    }
    assert_eq!(upstream.count(), 0);
    gateway.expect_requests("_none", "405", 4.0).await;
    gateway
        .expect_refusals("405", "method_not_allowed", 4.0)
        .await;

    // Among the routes of one prefix, the first admitting the method wins.
    let response = send(&gateway, "GET", "/reports/q3", &["Host: gateway.test"]).await;
    assert_eq!(response.status, 200);
    let response = send(
        &gateway,
        "POST",
        "/reports/q3",
        &["Host: gateway.test", "Content-Length: 0"],
    )
    .await;
    assert_eq!(response.status, 401);
    assert_eq!(upstream.count(), 1);
}

const KEEP: &str = r#"
paths:
  encoded_slash: keep
  backslash: keep
  semicolon: keep
  double_encoding: keep
"#;

#[tokio::test]
async fn kept_forms_are_routed_and_forwarded_as_documented() {
    let (upstream, gateway) = start(&format!("{}{KEEP}", config())).await;
    // Kept escapes are no separators: routed as a name under `/`.
    for (target, forwarded) in [
        ("/admin%2fusers", "/admin%2Fusers"),
        ("/a\\b", "/a%5Cb"),
        ("/a%5cb", "/a%5Cb"),
        ("/x/%252e%252e/admin", "/x/%252e%252e/admin"),
    ] {
        let response = send(&gateway, "GET", target, &["Host: gateway.test"]).await;
        assert_eq!(response.status, 200, "{target}: {}", response.text());
        assert_eq!(upstream.last().path, forwarded, "{target}");
    }
    // Parameters are forwarded but not routed on: this is /admin.
    let response = send(
        &gateway,
        "GET",
        "/admin;jsessionid=1",
        &["Host: gateway.test"],
    )
    .await;
    assert_eq!(response.status, 401, "{}", response.text());
    let token = token(ISS, "alice", json!({}));
    let response = send(
        &gateway,
        "GET",
        "/admin;jsessionid=1/x?y",
        &[
            "Host: gateway.test",
            &format!("Authorization: Bearer {token}"),
        ],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(upstream.last().path, "/admin;jsessionid=1/x?y");
    assert_eq!(upstream.last().header("x-user-id"), Some("alice"));
    // What no backend reads one way is refused whatever the rules.
    for (target, reason) in [
        ("/x/..;/admin", "path_parameter"),
        ("/a%00", "control_character"),
        ("/%FF", "invalid_utf8"),
    ] {
        let response = send(&gateway, "GET", target, &["Host: gateway.test"]).await;
        assert_bad_target(&response, target);
        let request_id = response.header("x-request-id").unwrap().to_string();
        assert!(gateway.access_line(&request_id).await.contains(reason));
    }
    assert_eq!(upstream.count(), 5);
}

fn checked(yaml: &str) -> (bool, String) {
    let out = check(yaml);
    (out.success, out.text())
}

#[test]
fn bad_paths_and_host_settings_are_config_errors() {
    let (ok, out) = checked(&format!("{}{KEEP}", config()));
    assert!(ok, "{out}");
    let (ok, out) = checked(&format!(
        "{}\npaths: {{ encoded_slash: decode }}\n",
        config()
    ));
    assert!(!ok);
    assert!(
        out.contains("paths.encoded_slash: \"decode\" is neither reject nor keep"),
        "{out}"
    );
    let (ok, out) = checked(&format!("{}\npaths: {{ slashes: keep }}\n", config()));
    assert!(!ok);
    assert!(out.contains("slashes"), "{out}");
    let (ok, out) = checked(&config().replace("host: Admin.Example", "host: \"admin example\""));
    assert!(!ok);
    assert!(
        out.contains("match.host") && out.contains("admin example"),
        "{out}"
    );
}
