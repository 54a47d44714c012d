//! Request limits through the real binary, with raw requests sized to the
//! byte: each cap admits a request exactly at it and refuses one byte (or one
//! header) more with jwtgate's own 414 / 431, before routing and auth.

mod common;

use common::*;

/// Small caps, so requests at the edge are easy to build. The protected
/// route shows the limits come before authentication: no token is sent.
fn small() -> String {
    Config::main(ISS)
        .section("limits: { max_uri_bytes: 64, max_headers: 8, max_header_bytes: 400 }")
        .routes(&format!("{OPEN_ROUTE}{PROTECTED}"))
}

const PROTECTED: &str = r#"
  - name: protected
    match: { path_prefix: /protected }
    upstream: { addrs: ["{UPSTREAM}"] }
"#;

/// No `limits` block: the defaults.
fn defaults() -> String {
    Config::new().routes(OPEN_ROUTE)
}

/// `raw_request` adds `Connection: close`: one more field, counted as
/// `connection: close` plus its line end.
const CONNECTION_FIELD_BYTES: usize = "connection".len() + "close".len() + 4;

/// A request head: `GET target`, then `fields`, each sent as `name: value`.
struct Head {
    target: String,
    fields: Vec<(String, String)>,
}

impl Head {
    fn new(target: impl Into<String>, request_id: &str) -> Self {
        Self {
            target: target.into(),
            fields: vec![
                ("Host".into(), "app.example".into()),
                ("X-Request-Id".into(), request_id.into()),
            ],
        }
    }

    fn field(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.fields.push((name.into(), value.into()));
        self
    }

    /// Filler fields `x-fill-N: v` until the request carries `count` fields,
    /// `Connection: close` included.
    fn with_field_count(mut self, count: usize) -> Self {
        let mut n = 0;
        while self.fields.len() + 1 < count {
            self = self.field(format!("x-fill-{n}"), "v");
            n += 1;
        }
        assert_eq!(self.fields.len() + 1, count);
        self
    }

    /// One filler field sized so the header fields, `Connection: close`
    /// included, count exactly `total` bytes.
    fn with_header_bytes(self, total: usize) -> Self {
        let name = "x-padding";
        let used = self.header_bytes() + name.len() + 4;
        assert!(total > used, "{total} is too small for the fixed fields");
        self.field(name, "p".repeat(total - used))
    }

    fn header_bytes(&self) -> usize {
        self.fields
            .iter()
            .map(|(name, value)| name.len() + value.len() + 4)
            .sum::<usize>()
            + CONNECTION_FIELD_BYTES
    }

    fn text(&self) -> String {
        let mut text = format!("GET {} HTTP/1.1", self.target);
        for (name, value) in &self.fields {
            text.push_str(&format!("\n{name}: {value}"));
        }
        text
    }

    async fn send(&self, gateway: &Gateway) -> RawResponse {
        raw_request(gateway.proxy_addr(), &self.text()).await
    }
}

/// A target of exactly `len` bytes, query included.
fn target(prefix: &str, len: usize) -> String {
    let head = format!("{prefix}?q=");
    assert!(len > head.len());
    format!("{head}{}", "a".repeat(len - head.len()))
}

/// A request the limits let through reaches the route (200 from the open
/// upstream, 401 on the protected route: routing and auth ran).
#[track_caller]
fn assert_admitted(response: &RawResponse, expected: u16) {
    assert_eq!(
        response.status,
        expected,
        "{:?} {}",
        response.header("x-request-id"),
        response.text()
    );
}

/// jwtgate's refusal: status, JSON body in the usual shape, request id.
#[track_caller]
fn assert_refused(response: &RawResponse, status: u16, error: &str, request_id: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.header("x-request-id"), Some(request_id));
    let body = response.json();
    assert_eq!(body["error"], error, "{body}");
    assert!(body["error_description"].is_string(), "{body}");
    assert_eq!(body["request_id"], request_id, "{body}");
    assert!(
        response.header("www-authenticate").is_none(),
        "a limit is not an authentication challenge"
    );
}

#[tokio::test]
async fn the_request_target_is_capped_at_max_uri_bytes() {
    let (upstream, gateway) = start(&small()).await;

    let at_cap = Head::new(target("/x", 64), "uri-at-cap");
    assert_admitted(&at_cap.send(&gateway).await, 200);
    assert_eq!(upstream.last().path.len(), 64);

    let over = Head::new(target("/x", 65), "uri-over");
    assert_refused(&over.send(&gateway).await, 414, "uri_too_long", "uri-over");
    // Before auth: a protected route without a token is refused for its
    // length, not for the missing token.
    let protected = Head::new(target("/protected", 65), "uri-over-protected");
    assert_refused(
        &protected.send(&gateway).await,
        414,
        "uri_too_long",
        "uri-over-protected",
    );
    assert_eq!(upstream.count(), 1, "refused requests reached the upstream");

    gateway
        .expect_access_line(
            "uri-over",
            &["status=414", "uri_too_long", "client=\"127.0.0.1\""],
        )
        .await;
    gateway.expect_requests("_none", "414", 2.0).await;
    gateway.expect_refusals("414", "uri_too_long", 2.0).await;
}

#[tokio::test]
async fn header_fields_are_capped_at_max_headers() {
    let (upstream, gateway) = start(&small()).await;

    let at_cap = Head::new("/x", "count-at-cap").with_field_count(8);
    assert_admitted(&at_cap.send(&gateway).await, 200);
    let at_cap_protected = Head::new("/protected", "count-at-cap-protected").with_field_count(8);
    assert_admitted(&at_cap_protected.send(&gateway).await, 401);

    // Repeated names are separate fields.
    let over = Head::new("/x", "count-over")
        .with_field_count(8)
        .field("x-fill-0", "again");
    assert_refused(
        &over.send(&gateway).await,
        431,
        "request_header_fields_too_large",
        "count-over",
    );
    assert_eq!(
        upstream.count(),
        1,
        "a refused request reached the upstream"
    );

    gateway
        .expect_access_line("count-over", &["status=431", "too_many_headers"])
        .await;
    gateway.expect_requests("_none", "431", 1.0).await;
}

#[tokio::test]
async fn header_bytes_are_capped_at_max_header_bytes() {
    let (upstream, gateway) = start(&small()).await;

    let at_cap = Head::new("/x", "bytes-at-cap").with_header_bytes(400);
    assert_eq!(at_cap.header_bytes(), 400);
    assert_admitted(&at_cap.send(&gateway).await, 200);

    let over = Head::new("/x", "bytes-over").with_header_bytes(401);
    assert_refused(
        &over.send(&gateway).await,
        431,
        "request_header_fields_too_large",
        "bytes-over",
    );
    let over_protected = Head::new("/protected", "bytes-over-protected")
        .field("Authorization", "Bearer not-even-looked-at")
        .with_header_bytes(401);
    assert_refused(
        &over_protected.send(&gateway).await,
        431,
        "request_header_fields_too_large",
        "bytes-over-protected",
    );
    assert_eq!(
        upstream.count(),
        1,
        "a refused request reached the upstream"
    );

    gateway
        .expect_access_line("bytes-over", &["status=431", "headers_too_large"])
        .await;
    // Refused before any token was looked at: no auth decision was counted.
    assert_eq!(gateway.metric(DECISIONS, &[]).await, 0.0);
    gateway.expect_requests("_none", "431", 2.0).await;
}

/// The defaults (nginx's `large_client_header_buffers 4 8k`: 8 KiB target,
/// 32 KiB of headers; 100 fields) are ours to answer: Pingora's own limits
/// (256 fields, about 1 MiB of request head, a 65534-byte target) lie above.
#[tokio::test]
async fn the_defaults_answer_below_pingoras_own_limits() {
    let (upstream, gateway) = start(&defaults()).await;

    let cases = [
        (Head::new(target("/x", 8192), "d-uri-at"), 200, ""),
        (
            Head::new(target("/x", 8193), "d-uri-over"),
            414,
            "uri_too_long",
        ),
        (Head::new("/x", "d-count-at").with_field_count(100), 200, ""),
        (
            Head::new("/x", "d-count-over").with_field_count(101),
            431,
            "request_header_fields_too_large",
        ),
        (
            Head::new("/x", "d-bytes-at").with_header_bytes(32768),
            200,
            "",
        ),
        (
            Head::new("/x", "d-bytes-over").with_header_bytes(32769),
            431,
            "request_header_fields_too_large",
        ),
    ];
    for (head, status, error) in &cases {
        let response = head.send(&gateway).await;
        let request_id = &head.fields[1].1;
        if *status == 200 {
            assert_admitted(&response, 200);
        } else {
            assert_refused(&response, *status, error, request_id);
        }
    }
    assert_eq!(upstream.count(), 3);
}

/// Above Pingora's own limits its HTTP parser answers first: a bare 400,
/// before jwtgate sees the request (docs/guides/request-limits.md says so).
#[tokio::test]
async fn above_pingoras_limits_its_parser_refuses_first() {
    let (upstream, gateway) = start(&defaults()).await;
    let too_many = Head::new("/x", "p-count").with_field_count(257);
    assert_eq!(too_many.send(&gateway).await.status, 400);
    let too_long = Head::new(target("/x", 65535), "p-uri");
    assert_eq!(too_long.send(&gateway).await.status, 400);
    assert_eq!(upstream.count(), 0);
}

#[test]
fn limits_above_pingoras_or_zero_are_config_errors_naming_them() {
    for (limits, message) in [
        (
            "{ max_headers: 257 }",
            "limits.max_headers is 257: it must be between 1 and 256",
        ),
        (
            "{ max_uri_bytes: 65535 }",
            "limits.max_uri_bytes is 65535: it must be between 1 and 65534",
        ),
        (
            "{ max_header_bytes: 0 }",
            "limits.max_header_bytes is 0: it must be between 1 and 524288",
        ),
        ("{ max_body_bytes: 10 }", "unknown field `max_body_bytes`"),
    ] {
        let out = check(&format!(
            "limits: {limits}\nroutes:\n  - name: open\n    upstream: {{ addrs: [\"127.0.0.1:9\"] }}\n    auth: {{ mode: off }}\n"
        ));
        assert_eq!(out.code, Some(1), "{limits}: {}", out.stderr);
        assert!(out.stderr.contains(message), "{limits}: {}", out.stderr);
    }
}
