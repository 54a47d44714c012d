//! Shared Signals (SSF 1.0) through the real binary: a transmitter
//! (tests/ssf/transmitter.py, SETs signed by PyJWT and cryptography) serves
//! its configuration and JWKS on loopback; SETs are pushed with `curl`
//! (RFC 8935) or polled by jwtgate (RFC 8936). Session and subject events
//! end the matching tokens; forged or misaddressed SETs and a wrong push
//! secret change nothing; a replay is counted, not applied twice; two
//! replicas share what one received through a real `redis-server`; a
//! pushed `session-revoked` ends an open WebSocket of that session.

mod common;
#[path = "common/redis.rs"]
mod redis;
#[path = "common/websocket.rs"]
mod websocket;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use redis::Redis;
use serde_json::{Value, json};
use websocket::{ECHO_SERVER, Python, client, expect_ended, expect_revoked_at_once, unix_now};

const ISS: &str = "https://issuer.ssf.test";
const AUDIENCE: &str = "https://jwtgate.ssf.test";
const PUSH_SECRET: &str = "ssf-push-secret-0123456789";
const PUSH_ENV: (&str, &str) = ("JWTGATE_TEST_SSF_PUSH", PUSH_SECRET);
const POLL_TOKEN: &str = "ssf-poll-token-0123456789";
const POLL_ENV: (&str, &str) = ("JWTGATE_TEST_SSF_POLL", POLL_TOKEN);
const EVENTS: &str = "jwtgate_ssf_events_total";
const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type";
const RISC: &str = "https://schemas.openid.net/secevent/risc/event-type";

/// The transmitter process, killed on drop.
struct Transmitter {
    child: Child,
    base: String,
    client: reqwest::Client,
}

impl Transmitter {
    fn start() -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ssf/transmitter.py");
        let mut child = Command::new(venv_bin("python"))
            .args([script, POLL_TOKEN])
            .stdout(Stdio::piped())
            .spawn()
            .expect(
                "the tools virtualenv's python (scripts/setup installs PyJWT and cryptography)",
            );
        let mut port = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut port)
            .expect("the transmitter's port");
        let port: u16 = port.trim().parse().expect("a port number");
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            client: http_client(),
        }
    }

    /// A SET with these claims over the usual `iss`, `aud`, `iat`; signed
    /// by the published key unless `foreign`.
    async fn sign(&self, jti: &str, events: Value, extra: Value, foreign: bool) -> String {
        self.sign_typed(jti, events, extra, foreign, "secevent+jwt")
            .await
    }

    async fn sign_typed(
        &self,
        jti: &str,
        events: Value,
        extra: Value,
        foreign: bool,
        typ: &str,
    ) -> String {
        let claims = merge_claims(
            json!({ "iss": self.base, "aud": [AUDIENCE], "iat": now(), "jti": jti, "events": events }),
            extra,
        );
        self.control(
            "/control/sign",
            json!({ "claims": claims, "foreign": foreign, "typ": typ }),
        )
        .await
    }

    async fn control(&self, path: &str, body: Value) -> String {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("transmitter control");
        assert_eq!(response.status(), 200);
        response.text().await.expect("control body")
    }

    async fn polls(&self) -> Vec<Value> {
        let response = self
            .client
            .get(format!("{}/control/polls", self.base))
            .send()
            .await
            .expect("transmitter polls");
        response.json().await.expect("polls JSON")
    }
}

impl Drop for Transmitter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An `iss_sub` subject of the gateway's issuer.
fn user(sub: &str) -> Value {
    json!({ "format": "iss_sub", "iss": ISS, "sub": sub })
}

fn session_revoked(sub: &str, sid: &str) -> (Value, Value) {
    let events = json!({ format!("{CAEP}/session-revoked"): { "event_timestamp": now() } });
    let subject = json!({ "sub_id": { "format": "complex", "user": user(sub),
        "session": { "format": "opaque", "id": sid } } });
    (events, subject)
}

fn subject_event(uri: String, subject: Value) -> (Value, Value) {
    (
        json!({ uri: { "event_timestamp": now() } }),
        json!({ "sub_id": subject }),
    )
}

/// The gateway's config: issuer `main`, one route, a revocation list (kept
/// in `dir`, or shared through `redis`, when given) and the transmitter
/// `idp`.
fn config(transmitter: &Transmitter, delivery: &str, redis: Option<&str>) -> String {
    config_in(transmitter, delivery, redis, None, ROUTES)
}

fn config_in(
    transmitter: &Transmitter,
    delivery: &str,
    redis: Option<&str>,
    dir: Option<&std::path::Path>,
    routes: &str,
) -> String {
    let mut revocation = "revocation: {}\n".to_string();
    if let Some(dir) = dir {
        revocation = format!("revocation: {{ dir: \"{}\" }}\n", dir.display());
    }
    if let Some(url) = redis {
        revocation = format!(
            "revocation: {{ redis: {{ key_prefix: jwtgate-ssf, reconcile_interval: 2s }} }}\nredis: {{ url: \"{url}\" }}\n"
        );
    }
    let delivery = match delivery {
        "push" => format!(
            "delivery: push, push: {{ bearer_secret: {{ env: {} }} }}",
            PUSH_ENV.0
        ),
        "poll" => format!(
            "delivery: poll, poll: {{ auth: {{ env: {} }}, interval: 200ms }}",
            POLL_ENV.0
        ),
        // A poll endpoint that answers 404.
        broken => format!(
            "delivery: poll, poll: {{ auth: {{ env: {} }}, interval: 200ms, endpoint: \"{}{broken}\" }}",
            POLL_ENV.0, transmitter.base
        ),
    };
    format!(
        "{}{revocation}shared_signals:\n  transmitters:\n    - {{ name: idp, issuer: \"{}\", audience: \"{AUDIENCE}\", allow_http: true, {delivery} }}\n",
        Config::main(ISS).routes(routes),
        transmitter.base
    )
}

const ROUTES: &str = r#"
  - name: api
    match: { path_prefix: /api }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { issuers: [main] }
"#;

async fn gateway(upstream: &Upstream, yaml: &str) -> Gateway {
    let gateway = Gateway::start_with_env(yaml, upstream, &[], &[PUSH_ENV, POLL_ENV]).await;
    // The transmitter's keys are in before anything is pushed.
    let fetched = [("issuer", "ssf:idp"), ("result", "success")];
    gateway
        .expect_metric_at_least("jwtgate_jwks_fetch_total", &fetched, 1.0)
        .await;
    gateway
}

fn token(sub: &str, sid: &str) -> String {
    rs256(claims_with(
        ISS,
        sub,
        json!({ "iat": now() - 10, "sid": sid }),
    ))
}

/// Pushes `set` with curl as a transmitter would; the status and body.
fn push(gateway: &Gateway, set: &str, secret: &str) -> (u16, Value) {
    let output = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", "POST"])
        .args(["-H", "Content-Type: application/secevent+jwt"])
        .args(["-H", &format!("Authorization: Bearer {secret}")])
        .args(["--data-binary", set])
        .arg(gateway.admin_url("/ssf/events/idp"))
        .output()
        .expect("curl");
    assert!(output.status.success(), "curl: {output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    let body = serde_json::from_str(body).unwrap_or(Value::String(body.into()));
    (code.parse().unwrap(), body)
}

async fn counted(gateway: &Gateway, event_type: &str, result: &str) -> f64 {
    let labels = [
        ("transmitter", "idp"),
        ("event_type", event_type),
        ("result", result),
    ];
    gateway.metric(EVENTS, &labels).await
}

/// Polls until `gateway` answers `token` with `expected` (a bounded wait:
/// what is asserted is that it happens).
async fn until_status(gateway: &Gateway, token: &str, expected: u16, limit: Duration) {
    poll(limit, Duration::from_millis(20), || async {
        let got = gateway.status("/api/x", Some(token)).await;
        if got == expected {
            return Ok(());
        }
        Err(format!(
            "still {got}, expected {expected}; log:\n{}",
            gateway.log()
        ))
    })
    .await
}

#[tokio::test]
async fn pushed_events_revoke_sessions_and_subjects_and_bad_sets_change_nothing() {
    let transmitter = Transmitter::start();
    let upstream = Upstream::start();
    let gateway = gateway(&upstream, &config(&transmitter, "push", None)).await;
    let alice = token("alice", "s-1");
    let other_session = token("alice", "s-2");
    assert_eq!(gateway.status("/api/x", Some(&alice)).await, 200);

    // Forged, misaddressed and unauthenticated SETs: RFC 8935 errors.
    let (events, subject) = session_revoked("alice", "s-1");
    let mut no_iat = subject.clone();
    no_iat["iat"] = Value::Null;
    let cases = [
        ("forged", subject.clone(), true, PUSH_SECRET, "invalid_key"),
        (
            "wrong-iss",
            merge_claims(subject.clone(), json!({ "iss": "https://elsewhere" })),
            false,
            PUSH_SECRET,
            "invalid_issuer",
        ),
        (
            "wrong-aud",
            merge_claims(subject.clone(), json!({ "aud": "https://other" })),
            false,
            PUSH_SECRET,
            "invalid_audience",
        ),
        ("no-iat", no_iat, false, PUSH_SECRET, "invalid_request"),
        (
            "wrong-secret",
            subject.clone(),
            false,
            "not-the-push-secret-0123",
            "authentication_failed",
        ),
    ];
    for (jti, extra, foreign, secret, expected) in cases {
        let set = transmitter.sign(jti, events.clone(), extra, foreign).await;
        let (code, body) = push(&gateway, &set, secret);
        assert_eq!(
            (code, body["err"].as_str()),
            (400, Some(expected)),
            "{jti}: {body}"
        );
        assert!(body["description"].is_string(), "{body}");
    }
    // A JWT that is no SET, though signed by the transmitter.
    let plain_jwt = transmitter
        .sign_typed("typ", events.clone(), subject.clone(), false, "JWT")
        .await;
    let (code, body) = push(&gateway, &plain_jwt, PUSH_SECRET);
    assert_eq!(
        (code, body["err"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    assert_eq!(events_total(&gateway, "invalid").await, 6.0);
    assert_eq!(
        gateway.status("/api/x", Some(&alice)).await,
        200,
        "nothing revoked"
    );

    // session-revoked: that session only.
    let set = transmitter.sign("sr-1", events, subject, false).await;
    assert_eq!(push(&gateway, &set, PUSH_SECRET).0, 202);
    assert_eq!(gateway.status("/api/x", Some(&alice)).await, 401);
    assert_eq!(gateway.status("/api/x", Some(&other_session)).await, 200);
    gateway.expect_refusals("401", "revoked", 1.0).await;

    // The same SET again: acknowledged, counted, not applied twice.
    assert_eq!(push(&gateway, &set, PUSH_SECRET).0, 202);
    assert_eq!(counted(&gateway, "session_revoked", "applied").await, 1.0);
    assert_eq!(counted(&gateway, "session_revoked", "duplicate").await, 1.0);

    // credential-change and account-disabled: every token of the subject.
    let subjects = [
        (
            "bob",
            format!("{CAEP}/credential-change"),
            "credential_change",
        ),
        (
            "carol",
            format!("{RISC}/account-disabled"),
            "account_disabled",
        ),
    ];
    for (sub, uri, label) in subjects {
        let token = token(sub, "any");
        assert_eq!(gateway.status("/api/x", Some(&token)).await, 200);
        let (events, subject) = subject_event(uri, user(sub));
        let set = transmitter
            .sign(&format!("{sub}-1"), events, subject, false)
            .await;
        assert_eq!(push(&gateway, &set, PUSH_SECRET).0, 202);
        assert_eq!(gateway.status("/api/x", Some(&token)).await, 401, "{sub}");
        assert_eq!(counted(&gateway, label, "applied").await, 1.0);
    }

    // Subjects that name no issuer, or another one: acknowledged, ignored.
    let dave = token("dave", "d-1");
    let unmapped = [
        json!({ "format": "email", "email": "dave@example.com" }),
        json!({ "format": "iss_sub", "iss": "https://not-configured.test", "sub": "dave" }),
    ];
    for (index, subject) in unmapped.into_iter().enumerate() {
        let (events, subject) = subject_event(format!("{RISC}/account-purged"), subject);
        let set = transmitter
            .sign(&format!("dave-{index}"), events, subject, false)
            .await;
        assert_eq!(push(&gateway, &set, PUSH_SECRET).0, 202);
    }
    assert_eq!(counted(&gateway, "account_purged", "ignored").await, 2.0);
    assert_eq!(gateway.status("/api/x", Some(&dave)).await, 200);
    let log = gateway.log();
    assert!(!log.contains(&set), "a SET must never be logged");
    assert!(
        log.contains("revocation added from a shared signal"),
        "{log}"
    );
}

async fn events_total(gateway: &Gateway, result: &str) -> f64 {
    let labels = [("transmitter", "idp"), ("result", result)];
    gateway.metric(EVENTS, &labels).await
}

#[tokio::test]
async fn polled_events_are_applied_and_acknowledged() {
    let transmitter = Transmitter::start();
    let upstream = Upstream::start();
    let gateway = gateway(&upstream, &config(&transmitter, "poll", None)).await;
    let erin = token("erin", "e-1");
    assert_eq!(gateway.status("/api/x", Some(&erin)).await, 200);

    let (events, subject) = session_revoked("erin", "e-1");
    let set = transmitter.sign("poll-1", events, subject, false).await;
    let forged = transmitter
        .sign(
            "poll-forged",
            json!({ format!("{RISC}/account-disabled"): {} }),
            json!({ "sub_id": user("erin") }),
            true,
        )
        .await;
    transmitter
        .control("/control/queue", json!({ "jti": "poll-1", "set": set }))
        .await;
    transmitter
        .control(
            "/control/queue",
            json!({ "jti": "poll-forged", "set": forged }),
        )
        .await;
    until_status(&gateway, &erin, 401, Duration::from_secs(20)).await;

    // The next request acknowledges the applied SET and reports the forged one.
    let polls = poll(
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async {
            let polls = transmitter.polls().await;
            let acked = polls.iter().any(|p| p["ack"] == json!(["poll-1"]));
            let reported = polls
                .iter()
                .any(|p| p["setErrs"]["poll-forged"]["err"] == "invalid_key");
            if acked && reported {
                return Ok(polls);
            }
            Err(format!("no ack / setErrs yet: {polls:?}"))
        },
    )
    .await;
    let first = &polls[0];
    assert_eq!(first["returnImmediately"], json!(false), "{first}");
    assert_eq!(first["maxEvents"], json!(100), "{first}");
    assert_eq!(counted(&gateway, "session_revoked", "applied").await, 1.0);
    assert_eq!(counted(&gateway, "unverified", "invalid").await, 1.0);
}

#[tokio::test]
async fn a_set_pushed_to_one_replica_is_enforced_by_the_other() {
    let redis = Redis::start().await;
    let transmitter = Transmitter::start();
    let upstream = Upstream::start();
    let yaml = config(&transmitter, "push", Some(&redis.url()));
    let a = gateway(&upstream, &yaml).await;
    let b = gateway(&upstream, &yaml).await;
    for replica in [&a, &b] {
        replica
            .wait_for_log(|log| log.contains("in step with Redis"))
            .await;
    }
    let frank = token("frank", "f-1");
    assert_eq!(b.status("/api/x", Some(&frank)).await, 200);
    let (events, subject) = subject_event(format!("{RISC}/account-disabled"), user("frank"));
    let set = transmitter.sign("shared-1", events, subject, false).await;
    assert_eq!(push(&a, &set, PUSH_SECRET).0, 202);
    until_status(&b, &frank, 401, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_pushed_revocation_survives_a_restart_and_the_block_is_restart_only() {
    let transmitter = Transmitter::start();
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().expect("revocation dir");
    let yaml = config_in(&transmitter, "push", None, Some(dir.path()), ROUTES);
    let grace = token("grace", "g-1");
    let before = gateway(&upstream, &yaml).await;
    let (events, subject) = session_revoked("grace", "g-1");
    let set = transmitter.sign("restart-1", events, subject, false).await;
    assert_eq!(push(&before, &set, PUSH_SECRET).0, 202);
    assert_eq!(before.status("/api/x", Some(&grace)).await, 401);
    drop(before);
    let after = gateway(&upstream, &yaml).await;
    assert_eq!(
        after.status("/api/x", Some(&grace)).await,
        401,
        "from the journal"
    );
    // Restart-only: the same block reloads, a changed one is refused.
    assert_eq!(after.reload().await.0, 200);
    after.write_config(&yaml.replace(AUDIENCE, "https://other.test"), &upstream);
    let (code, body) = after.reload().await;
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("shared_signals"), "{body}");
}

#[tokio::test]
async fn a_failing_poll_endpoint_is_counted_and_retried() {
    let transmitter = Transmitter::start();
    let upstream = Upstream::start();
    let gateway = gateway(&upstream, &config(&transmitter, "/no-such-poll", None)).await;
    let labels = [("transmitter", "idp"), ("error", "http_status")];
    gateway
        .expect_metric_at_least("jwtgate_ssf_poll_errors_total", &labels, 2.0)
        .await;
    let network = [("transmitter", "idp"), ("error", "network")];
    assert_eq!(
        gateway
            .metric("jwtgate_ssf_poll_errors_total", &network)
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_session_revoked_ends_the_sessions_open_websocket_at_once() {
    let transmitter = Transmitter::start();
    let (echo, port) = Python::run(ECHO_SERVER, &[]).next_line().await;
    let upstream = Upstream::start();
    let routes = format!(
        "{ROUTES}  - name: ws\n    match: {{ path_prefix: /ws }}\n    upstream: {{ addrs: [\"127.0.0.1:{port}\"] }}\n    auth: {{ issuers: [main] }}\n"
    );
    let yaml = config_in(&transmitter, "push", None, None, &routes);
    let gateway = gateway(&upstream, &yaml).await;
    let ws = client(&gateway, "/ws", &token("heidi", "h-1"), 15).await;
    let open = [("route", "ws"), ("kind", "websocket")];
    gateway
        .expect_metric("jwtgate_long_lived_connections", &open, 1.0)
        .await;

    let (events, subject) = session_revoked("heidi", "h-1");
    let set = transmitter.sign("live-1", events, subject, false).await;
    let pushed_at = unix_now();
    assert_eq!(push(&gateway, &set, PUSH_SECRET).0, 202);

    expect_revoked_at_once(ws, echo, pushed_at).await;
    expect_ended(&gateway, "ws", "revoked").await;
}
