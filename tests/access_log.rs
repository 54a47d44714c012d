//! The access log, read from the real binary's stderr: every field in text
//! and in JSON (`--log-format json`), empty fields as `-` and `null`, no
//! ANSI colour codes when stderr is a file, long paths and user agents cut,
//! and the `sub` of a token the route's policy refused.

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::{Value, json};

const ROUTES: &str = r#"
  - name: reader
    match: { path_prefix: /read }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { issuers: [main], scopes: { all_of: [read] } }
  - name: public
    match: { path_prefix: /public }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { mode: off }
"#;

fn config() -> String {
    Config::main(ISS).routes(ROUTES)
}

/// Every field of an access-log line, in both formats.
const FIELDS: [&str; 21] = [
    "request_id",
    "method",
    "path",
    "route",
    "status",
    "sub",
    "issuer",
    "outcome",
    "reason",
    "client",
    "client_cert",
    "user_agent",
    "bytes_in",
    "bytes_out",
    "upstream",
    "latency_ms",
    "error",
    "ended",
    "would_end",
    "adapter",
    "message",
];

fn token_of(sub: &str, scope: &str) -> String {
    token(ISS, sub, json!({ "scope": scope }))
}

/// A gateway logging JSON lines.
async fn start_json() -> (Upstream, Gateway) {
    let upstream = Upstream::start();
    let gateway = Gateway::start_with_args(&config(), &upstream, &["--log-format", "json"]).await;
    (upstream, gateway)
}

/// Sends a request tagged with `request_id` and waits for its access line.
struct Logged<'a> {
    gateway: &'a Gateway,
}

impl Logged<'_> {
    async fn line(&self, request_id: &str) -> String {
        let tag = format!("\"{request_id}\"");
        let log = self
            .gateway
            .wait_for_log(|log| access_lines(log).any(|l| l.contains(&tag)))
            .await;
        access_lines(&log)
            .find(|l| l.contains(&tag))
            .unwrap_or_else(|| panic!("no access line for {request_id}; log:\n{log}"))
            .to_string()
    }
}

fn access_lines(log: &str) -> impl Iterator<Item = &str> {
    log.lines().filter(|l| l.contains("jwtgate::access"))
}

/// `name=value` pairs of a text line: `"…"` values unescaped, bare ones as
/// they are.
fn text_fields(line: &str) -> BTreeMap<String, String> {
    let (_, rest) = line
        .split_once("jwtgate::access: ")
        .unwrap_or_else(|| panic!("not an access line: {line}"));
    let mut fields = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    let message: String = chars.by_ref().take_while(|c| *c != ' ').collect();
    fields.insert("message".to_string(), message);
    while chars.peek().is_some() {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some('t') => value.push('\t'),
                        Some(other) => value.push(other),
                        None => break,
                    },
                    '"' => break,
                    c => value.push(c),
                }
            }
            chars.next(); // the space after the closing quote
        } else {
            value = chars.by_ref().take_while(|c| *c != ' ').collect();
        }
        fields.insert(name, value);
    }
    fields
}

#[track_caller]
fn assert_no_ansi(log: &str) {
    assert!(
        !log.contains('\u{1b}'),
        "stderr is a file: no ANSI escape codes expected; log:\n{log:?}"
    );
}

#[track_caller]
fn assert_latency_rounded(latency: &str) {
    let value: f64 = latency.parse().expect("latency_ms is a number");
    assert!(value >= 0.0, "{latency}");
    let decimals = latency.split_once('.').map_or(0, |(_, d)| d.len());
    assert!(
        decimals <= 3,
        "latency_ms {latency} has more than 3 decimals"
    );
}

#[tokio::test]
async fn text_lines_carry_every_field_with_dashes_for_absent_ones() {
    let (upstream, gateway) = start(&config()).await;
    let logged = Logged { gateway: &gateway };
    let body = "twelve bytes";
    let response = gateway
        .client()
        .post(gateway.url("/read/items?access_token=not-for-the-log"))
        .bearer_auth(token_of("alice", "read"))
        .header("x-request-id", "text-allowed")
        .header("user-agent", "probe/1.0 (tab\there)")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer = response.bytes().await.unwrap();

    let line = logged.line("text-allowed").await;
    let fields = text_fields(&line);
    for name in FIELDS {
        assert!(fields.contains_key(name), "no {name} in {line}");
    }
    assert_eq!(fields["message"], "request", "{line}");
    assert_eq!(fields["method"], "POST", "{line}");
    assert_eq!(
        fields["path"], "/read/items",
        "the query is never logged: {line}"
    );
    assert_eq!(fields["route"], "reader", "{line}");
    assert_eq!(fields["status"], "200", "{line}");
    assert_eq!(fields["sub"], "alice", "{line}");
    assert_eq!(fields["issuer"], "main", "{line}");
    assert_eq!(fields["outcome"], "allow", "{line}");
    assert_eq!(fields["reason"], "-", "{line}");
    assert_eq!(fields["error"], "-", "{line}");
    assert_eq!(fields["adapter"], "proxy", "{line}");
    assert_eq!(fields["client"], "127.0.0.1", "{line}");
    assert_eq!(fields["user_agent"], "probe/1.0 (tab\there)", "{line}");
    assert!(
        line.contains(r#"user_agent="probe/1.0 (tab\there)""#),
        "the tab is escaped, not written raw: {line}"
    );
    assert_eq!(fields["bytes_in"], body.len().to_string(), "{line}");
    assert_eq!(fields["bytes_out"], answer.len().to_string(), "{line}");
    assert_eq!(fields["upstream"], upstream.addr().to_string(), "{line}");
    assert_latency_rounded(&fields["latency_ms"]);

    // A request without a token: no identity, no upstream.
    let response = gateway
        .get_with("/read/items", None, &[("x-request-id", "text-missing")])
        .await;
    assert_eq!(response.status(), 401);
    let line = logged.line("text-missing").await;
    let fields = text_fields(&line);
    for absent in ["sub", "issuer", "upstream"] {
        assert_eq!(fields[absent], "-", "{absent} in {line}");
    }
    assert_eq!(fields["outcome"], "deny", "{line}");
    assert_eq!(fields["reason"], "missing_token", "{line}");
    assert_eq!(fields["bytes_in"], "0", "{line}");
    assert_no_ansi(&gateway.log());
}

#[tokio::test]
async fn json_lines_carry_every_field_with_null_for_absent_ones() {
    let (upstream, gateway) = start_json().await;
    let logged = Logged { gateway: &gateway };
    let headers = [
        ("x-request-id", "json-allowed"),
        ("user-agent", "probe/2.0"),
    ];
    let bob = token_of("bob", "read");
    let response = gateway.get_with("/read/a?q=1", Some(&bob), &headers).await;
    assert_eq!(response.status(), 200);
    let answer = response.bytes().await.unwrap();

    let parse = |line: String| -> Value {
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    };
    let line = parse(logged.line("json-allowed").await);
    for name in FIELDS {
        assert!(line.get(name).is_some(), "no {name} in {line}");
    }
    assert_eq!(line["target"], "jwtgate::access");
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["path"], "/read/a", "{line}");
    assert_eq!(line["route"], "reader", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["sub"], "bob", "{line}");
    assert_eq!(line["issuer"], "main", "{line}");
    assert_eq!(line["client"], "127.0.0.1", "{line}");
    assert_eq!(line["user_agent"], "probe/2.0", "{line}");
    assert_eq!(line["bytes_in"], 0, "{line}");
    assert_eq!(line["bytes_out"], answer.len(), "{line}");
    assert_eq!(line["upstream"], upstream.addr().to_string(), "{line}");
    assert_eq!(line["reason"], Value::Null, "{line}");
    assert_eq!(line["error"], Value::Null, "{line}");
    let latency = &line["latency_ms"];
    assert!(latency.is_number(), "{line}");
    assert_latency_rounded(&latency.to_string());

    // No route, no token, no user agent: each of those is null, not "-".
    let response = raw_request(
        gateway.proxy_addr(),
        "GET /nowhere HTTP/1.1\r\nHost: x\r\nX-Request-Id: json-unrouted",
    )
    .await;
    assert_eq!(response.status, 404);
    let line = parse(logged.line("json-unrouted").await);
    for absent in [
        "route",
        "sub",
        "issuer",
        "upstream",
        "user_agent",
        "outcome",
        "reason",
    ] {
        assert_eq!(line[absent], Value::Null, "{absent} in {line}");
    }
    assert_eq!(line["status"], 404, "{line}");

    let log = gateway.log();
    for line in access_lines(&log) {
        assert!(!line.contains("\"-\""), "null, not \"-\": {line}");
    }
    assert_no_ansi(&log);
}

#[tokio::test]
async fn a_request_refused_by_the_route_policy_logs_its_subject() {
    let (upstream, gateway) = start_json().await;
    let logged = Logged { gateway: &gateway };
    let carol = token_of("carol", "write");
    let response = gateway
        .get_with(
            "/read/x",
            Some(&carol),
            &[("x-request-id", "json-forbidden")],
        )
        .await;
    assert_eq!(response.status(), 403);
    let line: Value = serde_json::from_str(&logged.line("json-forbidden").await).unwrap();
    assert_eq!(line["status"], 403, "{line}");
    assert_eq!(line["reason"], "insufficient_scope", "{line}");
    assert_eq!(line["sub"], "carol", "the token verified: its sub is known");
    assert_eq!(line["issuer"], "main", "{line}");
    assert_eq!(line["upstream"], Value::Null, "never sent upstream: {line}");

    // An invalid token's claims are not trusted: no sub.
    let mut forged = token_of("mallory", "read");
    forged.truncate(forged.len() - 4);
    forged.push_str("AAAA");
    let response = gateway
        .get_with("/read/x", Some(&forged), &[("x-request-id", "json-forged")])
        .await;
    assert_eq!(response.status(), 401);
    let line: Value = serde_json::from_str(&logged.line("json-forged").await).unwrap();
    assert_eq!(line["reason"], "bad_signature", "{line}");
    assert_eq!(line["sub"], Value::Null, "{line}");
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn long_paths_and_user_agents_are_cut() {
    let (_upstream, gateway) = start(&config()).await;
    let logged = Logged { gateway: &gateway };
    let path = format!("/public/{}", "p".repeat(2000));
    let agent = format!("agent-{}", "u".repeat(1000));
    let headers = [
        ("x-request-id", "text-long"),
        ("user-agent", agent.as_str()),
    ];
    let response = gateway.get_with(&path, None, &headers).await;
    assert_eq!(response.status(), 200);
    let line = logged.line("text-long").await;
    let fields = text_fields(&line);

    let logged_path = &fields["path"];
    let (kept, marker) = logged_path
        .split_once('…')
        .unwrap_or_else(|| panic!("no truncation marker in {line}"));
    assert_eq!(marker, format!("[{} bytes]", path.len()), "{line}");
    assert_eq!(kept.len(), 256, "{line}");
    assert!(path.starts_with(kept), "{line}");

    let (kept, marker) = fields["user_agent"]
        .split_once('…')
        .unwrap_or_else(|| panic!("no truncation marker in {line}"));
    assert_eq!(marker, format!("[{} bytes]", agent.len()), "{line}");
    assert!(agent.starts_with(kept) && kept.len() == 256, "{line}");
    assert!(line.len() < 1024, "one bounded line: {} bytes", line.len());
}
