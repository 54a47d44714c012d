//! Revocation through the real binary: the admin API and `jwtgate revoke`,
//! enforcement after verification and after a cache hit, the disk copy
//! across restarts, and two replicas sharing one real `redis-server`
//! (started here on a free loopback port with its own directory, stopped
//! and restarted to play an outage).

mod common;
#[path = "common/redis.rs"]
mod redis;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use redis::Redis;
use serde_json::{Value, json};

const ISS: &str = "https://issuer.revoke.test";
const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
const ADMIN_ENV: (&str, &str) = ("JWTGATE_TEST_ADMIN", ADMIN_TOKEN);

/// `main` and `strict` (which needs `jti`), and one route trusting both.
fn base() -> String {
    Config::new()
        .issuer_with("main", ISS, &["leeway: 0s"])
        .issuer_with(
            "strict",
            "https://strict.revoke.test",
            &["require_jti: true"],
        )
        .routes(ROUTES)
}

const ROUTES: &str = r#"
  - name: api
    match: { path_prefix: /api }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { issuers: [main, strict] }
"#;

/// [`base`] plus a `revocation` block: the list kept in `dir`, the admin
/// token from the environment, and when given, the gateway's `redis`
/// connection and how the list is shared through it (`revocation.redis`).
fn config(dir: &Path, redis: Option<(&str, &str)>) -> String {
    let mut yaml = format!(
        "{}revocation:\n  dir: \"{}\"\n  admin_tokens: [{{ name: test-admin, env: {} }}]\n",
        base(),
        dir.display(),
        ADMIN_ENV.0
    );
    if let Some((connection, sharing)) = redis {
        yaml.push_str(&format!("  redis: {sharing}\nredis: {connection}\n"));
    }
    yaml
}

async fn gateway(upstream: &Upstream, yaml: &str) -> Gateway {
    Gateway::start_with_env(yaml, upstream, &[], &[ADMIN_ENV]).await
}

/// Alice's token from `iss`, with `extra` set over it: issued ten seconds
/// ago, `jti` `jti-default`.
fn token_from(iss: &str, extra: Value) -> String {
    let alice = claims_with(
        iss,
        "alice",
        json!({ "iat": now() - 10, "jti": "jti-default" }),
    );
    rs256(merge_claims(alice, extra))
}

async fn status(gateway: &Gateway, token: &str) -> u16 {
    gateway.get("/api/x", Some(token)).await.status().as_u16()
}

/// Polls until `gateway` answers `token` with `expected`; panics after a
/// generous bound (propagation is asserted, never its speed). Returns how
/// long it took, for the test's output.
async fn until_status(gateway: &Gateway, token: &str, expected: u16, what: &str) -> Duration {
    let started = Instant::now();
    poll(
        Duration::from_secs(20),
        Duration::from_millis(20),
        || async {
            let got = status(gateway, token).await;
            if got == expected {
                return Ok(started.elapsed());
            }
            Err(format!(
                "{what}: still {got}, expected {expected}; log:\n{}",
                gateway.log()
            ))
        },
    )
    .await
}

async fn api(
    gateway: &Gateway,
    method: reqwest::Method,
    query: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (u16, Value) {
    let mut request = gateway
        .client()
        .request(method, gateway.admin_url(&format!("/revocations{query}")));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("admin request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("admin body");
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

async fn revoke(gateway: &Gateway, body: Value) -> (u16, Value) {
    api(
        gateway,
        reqwest::Method::POST,
        "",
        Some(body),
        Some(ADMIN_TOKEN),
    )
    .await
}

/// Runs `jwtgate revoke ARGS` against `gateway`'s admin listener.
fn cli(gateway: &Gateway, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_jwtgate"))
        .arg("revoke")
        .arg("--admin")
        .arg(gateway.admin_url(""))
        .args(args)
        .env("JWTGATE_REVOKE_TOKEN", ADMIN_TOKEN)
        .env_remove("JWTGATE_ADMIN_TOKEN")
        .output()
        .expect("run jwtgate revoke");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------
// State directories (redis-server: tests/common/redis.rs)
// ---------------------------------------------------------------------------

fn state_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("state dir");
    let path = dir.path().join("revocations");
    (dir, path)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_token_is_refused_right_after_revocation_and_after_a_restart() {
    let (_keep, dir) = state_dir();
    let upstream = Upstream::start();
    let yaml = config(&dir, None);
    let gateway = gateway(&upstream, &yaml).await;
    let revoked = token_from(ISS, json!({ "jti": "t-1" }));
    let other = token_from(ISS, json!({ "jti": "t-2" }));

    assert_eq!(status(&gateway, &revoked).await, 200);
    assert_eq!(status(&gateway, &revoked).await, 200);
    assert!(
        gateway.metric("jwtgate_token_cache_hits_total", &[]).await >= 1.0,
        "the second request was a cache hit"
    );
    // Read once: a second boundary between two reads would fail the check.
    let expires_at = now() + 300;
    let (code, body) = revoke(
        &gateway,
        json!({ "jti": "t-1", "issuer": "main", "exp": expires_at }),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["entry"]["expires_at"], json!(expires_at));

    // At once: the list is checked after the cache as after verification.
    let response = gateway.get("/api/x", Some(&revoked)).await;
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(!response.text().await.unwrap().contains("revoked"));
    assert_eq!(status(&gateway, &other).await, 200);
    gateway
        .expect_decisions(&[("outcome", "deny"), ("reason", "revoked")], 1.0)
        .await;
    gateway
        .expect_metric("jwtgate_revocation_entries", &[("kind", "jti")], 1.0)
        .await;

    // The issuer by its exact `iss` works as well as by name.
    let (code, body) = api(
        &gateway,
        reqwest::Method::GET,
        &format!("?jti=t-1&issuer={ISS}"),
        None,
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!((code, &body["revoked"]), (200, &json!(true)), "{body}");

    // The audit log names the admin token, never its value.
    let line = gateway.log_line("revocation added").await;
    assert!(
        line.contains("test-admin") && line.contains("t-1"),
        "{line}"
    );
    let log = gateway.log();
    assert!(!log.contains(ADMIN_TOKEN), "{log}");

    // A single instance keeps the list across a restart.
    drop(gateway);
    let gateway = self::gateway(&upstream, &yaml).await;
    assert_eq!(status(&gateway, &revoked).await, 401);
    assert_eq!(status(&gateway, &other).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_and_session_cut_offs_spare_later_logins_and_can_be_lifted() {
    let (_keep, dir) = state_dir();
    let upstream = Upstream::start();
    let gateway = gateway(&upstream, &config(&dir, None)).await;
    let now = now();
    let old = token_from(ISS, json!({ "jti": "a", "iat": now - 100 }));
    let fresh = token_from(ISS, json!({ "jti": "b", "iat": now }));
    let no_iat = token_from(ISS, json!({ "jti": "c", "iat": null }));
    let bob = token_from(ISS, json!({ "jti": "d", "sub": "bob", "iat": now - 100 }));

    let cut_off = (now - 50).to_string();
    let (ok, stdout, stderr) = cli(
        &gateway,
        &["sub", "alice", "--issuer", "main", "--not-before", &cut_off],
    );
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("\"revoked\""), "{stdout}");
    assert_eq!(status(&gateway, &old).await, 401);
    assert_eq!(status(&gateway, &fresh).await, 200, "a later login passes");
    assert_eq!(
        status(&gateway, &no_iat).await,
        401,
        "without iat a token can't show it is newer"
    );
    assert_eq!(status(&gateway, &bob).await, 200);

    let (ok, stdout, _) = cli(&gateway, &["show", "sub", "alice", "--issuer", "main"]);
    assert!(ok && stdout.contains(&cut_off), "{stdout}");
    let (ok, stdout, _) = cli(&gateway, &["show"]);
    assert!(ok && stdout.contains("\"sub\": 1"), "{stdout}");

    let (ok, stdout, stderr) = cli(&gateway, &["lift", "sub", "alice", "--issuer", "main"]);
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(status(&gateway, &old).await, 200);
    let (ok, _, stderr) = cli(&gateway, &["lift", "sub", "alice", "--issuer", "main"]);
    assert!(!ok && stderr.starts_with("404"), "{stderr}");

    // A session: only that session's tokens.
    let session = token_from(ISS, json!({ "jti": "e", "sid": "s-1" }));
    let other_session = token_from(ISS, json!({ "jti": "f", "sid": "s-2" }));
    let (code, body) = revoke(&gateway, json!({ "sid": "s-1", "issuer": "main" })).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(status(&gateway, &session).await, 401);
    assert_eq!(status(&gateway, &other_session).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_a_token_and_explains_bad_requests() {
    let (_keep, dir) = state_dir();
    let upstream = Upstream::start();
    let gateway = gateway(&upstream, &config(&dir, None)).await;
    let get = reqwest::Method::GET;
    let (code, body) = api(&gateway, get.clone(), "", None, None).await;
    assert_eq!((code, body["error"].as_str()), (401, Some("unauthorized")));
    let (code, _) = api(
        &gateway,
        get.clone(),
        "",
        None,
        Some("wrong-token-0123456789"),
    )
    .await;
    assert_eq!(code, 401);
    let (code, body) = api(&gateway, get.clone(), "", None, Some(ADMIN_TOKEN)).await;
    assert_eq!(code, 200);
    assert_eq!(body["entries"], json!({ "jti": 0, "sub": 0, "sid": 0 }));

    let cases = [
        (
            json!({ "jti": "x", "issuer": "main" }),
            "needs the token's exp",
        ),
        (
            json!({ "jti": "x", "issuer": "nope", "exp": now() + 60 }),
            "issuer \"nope\" is not configured",
        ),
        (
            json!({ "jti": "x", "sub": "y", "issuer": "main", "exp": now() + 60 }),
            "exactly one of jti, sub or sid",
        ),
        (
            json!({ "sub": "y", "issuer": "main", "not_before": now() * 1000 }),
            "in the future",
        ),
        (
            json!({ "sub": "y", "issuer": "main", "color": "red" }),
            "unknown field `color`",
        ),
    ];
    for (request, expected) in cases {
        let (code, body) = revoke(&gateway, request.clone()).await;
        assert_eq!(code, 400, "{request}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(expected),
            "{request}: {body}"
        );
    }
    let (code, body) = api(
        &gateway,
        reqwest::Method::DELETE,
        "?jti=x&issuer=main",
        None,
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(code, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("lapses by itself")
    );
    let (code, body) = revoke(
        &gateway,
        json!({ "jti": "old", "issuer": "main", "exp": now() - 5 }),
    )
    .await;
    assert_eq!(
        (code, body["result"].as_str()),
        (200, Some("already_expired"))
    );

    // An issuer with require_jti refuses tokens it could not revoke.
    let without = token_from("https://strict.revoke.test", json!({ "jti": null }));
    assert_eq!(status(&gateway, &without).await, 401);
    gateway
        .expect_decisions(&[("reason", "missing_claim")], 1.0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_admin_tokens_the_api_is_off() {
    let upstream = Upstream::start();
    let yaml = format!("{}revocation: {{}}\n", base());
    let gateway = gateway(&upstream, &yaml).await;
    let (code, body) = api(&gateway, reqwest::Method::GET, "", None, Some(ADMIN_TOKEN)).await;
    assert_eq!(code, 404, "{body}");
    assert!(body["message"].as_str().unwrap().contains("admin_tokens"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_revocations_through_redis_and_survive_its_outage() {
    let mut redis = Redis::start().await;
    let connection = format!("{{ url: \"{}\" }}", redis.url());
    let redis_block = (
        connection.as_str(),
        "{ key_prefix: jwtgate-test, reconcile_interval: 2s }",
    );
    let upstream = Upstream::start();
    let (_keep_a, dir_a) = state_dir();
    let (_keep_b, dir_b) = state_dir();
    let yaml_b = config(&dir_b, Some(redis_block));
    let a = gateway(&upstream, &config(&dir_a, Some(redis_block))).await;
    let mut b = gateway(&upstream, &yaml_b).await;
    let first = token_from(ISS, json!({ "jti": "shared-1" }));
    for gateway in [&a, &b] {
        assert_eq!(status(gateway, &first).await, 200);
    }
    // Both replicas are in step with Redis before anything is revoked.
    for gateway in [&a, &b] {
        gateway
            .wait_for_log(|log| log.contains("in step with Redis"))
            .await;
    }

    // Revoke on A, refused on B (whose cache holds the token).
    let (code, body) = revoke(
        &a,
        json!({ "jti": "shared-1", "issuer": "main", "exp": now() + 300 }),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["shared"], json!(true));
    let took = until_status(&b, &first, 401, "B refuses what A revoked").await;
    eprintln!("revoked on A, refused on B after {took:?}");

    // Restart B with Redis down: its disk copy is enforced.
    drop(b);
    redis.stop();
    b = gateway(&upstream, &yaml_b).await;
    assert_eq!(status(&b, &first).await, 401);
    let ready = b.admin_get("/readyz").await;
    assert_eq!(
        ready.status(),
        200,
        "no max_staleness: Redis never holds readiness back"
    );

    // Revoke through A while Redis is down: kept locally, pushed later.
    let second = token_from(ISS, json!({ "jti": "shared-2" }));
    let (code, body) = revoke(
        &a,
        json!({ "jti": "shared-2", "issuer": "main", "exp": now() + 300 }),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(status(&a, &second).await, 401);
    a.expect_metric("jwtgate_revocation_pending", &[], 1.0)
        .await;
    assert_eq!(status(&b, &second).await, 200, "B can't know yet");
    assert!(b.metric("jwtgate_revocation_sync_errors_total", &[]).await >= 1.0);

    // Redis comes back empty: A pushes its queue, the list is written
    // back, and B converges without forgetting the first entry.
    redis.restart().await;
    let took = until_status(&b, &second, 401, "B converges once Redis is back").await;
    eprintln!("B converged {took:?} after Redis came back");
    assert_eq!(status(&b, &first).await, 401);
    a.expect_metric("jwtgate_revocation_pending", &[], 0.0)
        .await;
    let keys = redis.cli(&["--scan", "--pattern", "jwtgate-test:entry:jti:*"]);
    assert_eq!(keys.lines().count(), 2, "{keys}");

    // A lifted cut-off is lifted everywhere.
    let old = token_from(
        ISS,
        json!({ "jti": "x", "sub": "carol", "iat": now() - 100 }),
    );
    let (code, _) = revoke(&a, json!({ "sub": "carol", "issuer": "main" })).await;
    assert_eq!(code, 201);
    until_status(&b, &old, 401, "B applies a cut-off made on A").await;
    let (code, _) = api(
        &b,
        reqwest::Method::DELETE,
        "?sub=carol&issuer=main",
        None,
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(code, 200);
    until_status(&a, &old, 200, "A applies a lift made on B").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_jti_entries_disappear_from_memory_disk_and_redis() {
    let redis = Redis::start().await;
    let connection = format!("{{ url: \"{}\" }}", redis.url());
    let redis_block = (connection.as_str(), "{ key_prefix: jwtgate-expiry }");
    let upstream = Upstream::start();
    let (_keep, dir) = state_dir();
    let gateway = gateway(&upstream, &config(&dir, Some(redis_block))).await;
    gateway
        .wait_for_log(|log| log.contains("in step with Redis"))
        .await;
    let exp = now() + 3;
    let (code, body) = revoke(
        &gateway,
        json!({ "jti": "short-lived", "issuer": "main", "exp": exp }),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let (code, _) = revoke(
        &gateway,
        json!({ "jti": "long-lived", "issuer": "main", "exp": now() + 3600 }),
    )
    .await;
    assert_eq!(code, 201);
    let log_file = dir.join("revocations.jsonl");
    let on_disk = || std::fs::read_to_string(&log_file).unwrap_or_default();
    assert!(on_disk().contains("short-lived"));
    let in_redis = || redis.cli(&["--scan", "--pattern", "jwtgate-expiry:entry:jti:*"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while in_redis().lines().count() < 2 {
        assert!(Instant::now() < deadline, "pushed to Redis: {}", in_redis());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The key carries the entry's expiry as its TTL.
    let ttls: Vec<i64> = in_redis()
        .lines()
        .map(|key| redis.cli(&["TTL", key]).trim().parse().unwrap())
        .collect();
    assert!(ttls.iter().all(|ttl| *ttl > 0), "{ttls:?}");

    let lookup = || {
        api(
            &gateway,
            reqwest::Method::GET,
            "?jti=short-lived&issuer=main",
            None,
            Some(ADMIN_TOKEN),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, _) = lookup().await;
        let disk = on_disk();
        let keys = in_redis().lines().count();
        if code == 404 && !disk.contains("short-lived") && keys == 1 {
            assert!(disk.contains("long-lived"), "{disk}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "memory {code}, disk {disk:?}, redis keys {keys}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gateway
        .expect_metric("jwtgate_revocation_entries", &[("kind", "jti")], 1.0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_staleness_fails_readiness_while_redis_is_away() {
    let mut redis = Redis::start().await;
    let connection = format!("{{ url: \"{}\", timeout: 200ms }}", redis.url());
    let redis_block = (
        connection.as_str(),
        "{ key_prefix: jwtgate-stale, max_staleness: 1s }",
    );
    let upstream = Upstream::start();
    let (_keep, dir) = state_dir();
    let gateway = gateway(&upstream, &config(&dir, Some(redis_block))).await;
    let until_ready = |want: u16| {
        let gateway = &gateway;
        poll(
            Duration::from_secs(30),
            Duration::from_millis(50),
            move || async move {
                let response = gateway.admin_get("/readyz").await;
                let code = response.status().as_u16();
                let body = response.text().await.unwrap();
                if code == want {
                    return Ok(body);
                }
                Err(format!("/readyz {code}: {body}"))
            },
        )
    };
    until_ready(200).await;
    redis.stop();
    let body = until_ready(503).await;
    assert!(body.contains("out of step with Redis"), "{body}");
    assert!(
        gateway
            .metric("jwtgate_revocation_sync_age_seconds", &[])
            .await
            > 1.0
    );
    assert!(
        gateway
            .metric("jwtgate_revocation_sync_errors_total", &[])
            .await
            >= 1.0
    );
    redis.restart().await;
    until_ready(200).await;
}

/// The CA that signs redis-server's certificate.
const REDIS_CA: Cert = Cert {
    key: "ca.key",
    cert: "ca.pem",
    cn: "revocation test CA",
    days: 2,
    extensions: &[],
};

/// A CA, a `localhost` server certificate and the gateway's client
/// certificate, made by `openssl`.
fn tls_files() -> Pki {
    let pki = Pki::new();
    pki.self_signed(&REDIS_CA);
    let server = Cert {
        key: "redis.key",
        cert: "redis.pem",
        cn: "localhost",
        days: 2,
        extensions: &["subjectAltName=DNS:localhost"],
    };
    pki.signed(&server, &REDIS_CA, None);
    // An extension makes it X.509 v3, the only version rustls accepts.
    let client = Cert {
        key: "client.key",
        cert: "client.pem",
        cn: "jwtgate",
        days: 2,
        extensions: &["extendedKeyUsage=clientAuth"],
    };
    pki.signed(&client, &REDIS_CA, None);
    pki
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_through_redis_over_mutual_tls_with_a_password() {
    let certs = tls_files();
    let port = free_port();
    let password = "redis-password-0123456789";
    let file = |name: &str| certs.path(name).display().to_string();
    let mut server = Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
        ])
        .args([
            "--tls-cert-file",
            &file("redis.pem"),
            "--tls-key-file",
            &file("redis.key"),
        ])
        .args([
            "--tls-ca-cert-file",
            &file("ca.pem"),
            "--tls-auth-clients",
            "yes",
        ])
        .args([
            "--requirepass",
            password,
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(certs.dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (Debian package redis-server)");
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(&mut server);

    // The server checks the gateway's client certificate, the gateway the
    // server's against the test CA: both from `redis.tls`.
    let connection = format!(
        "{{ url: \"rediss://localhost:{port}\", password: {{ env: JWTGATE_TEST_REDIS_PASSWORD }}, tls: {{ ca_file: \"{}\", client_cert: \"{}\", client_key: \"{}\" }} }}",
        file("ca.pem"),
        file("client.pem"),
        file("client.key")
    );
    let redis_block = (connection.as_str(), "{ key_prefix: tls }");
    let upstream = Upstream::start();
    let (_keep_a, dir_a) = state_dir();
    let (_keep_b, dir_b) = state_dir();
    let env = [ADMIN_ENV, ("JWTGATE_TEST_REDIS_PASSWORD", password)];
    let a = Gateway::start_with_env(&config(&dir_a, Some(redis_block)), &upstream, &[], &env).await;
    let b = Gateway::start_with_env(&config(&dir_b, Some(redis_block)), &upstream, &[], &env).await;
    for gateway in [&a, &b] {
        let log = gateway
            .wait_for_log(|log| log.contains("in step with Redis"))
            .await;
        assert!(log.contains("in step with Redis"), "{log}");
    }
    let revoked = token_from(ISS, json!({ "jti": "over-tls" }));
    assert_eq!(status(&b, &revoked).await, 200);
    let (code, body) = revoke(
        &a,
        json!({ "jti": "over-tls", "issuer": "main", "exp": now() + 300 }),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    until_status(&b, &revoked, 401, "B refuses what A revoked, over TLS").await;
    for gateway in [&a, &b] {
        assert!(!gateway.log().contains(password));
    }
}
