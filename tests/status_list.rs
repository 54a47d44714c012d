//! Token Status Lists (draft-ietf-oauth-status-list) against a real list
//! server: lists made by npm `@sd-jwt/jwt-status-list` and signed with the
//! fixture keys (tests/idp/status_lists.mjs), fetched by the real binary.
//! Entries of every width, lists refused (foreign key, wrong `sub`, too
//! large, a compression bomb), a URI off the allow-list (never fetched),
//! the disk copy at a cold start with the list server down, and stale lists.
//!
//! Needs Node.js and `npm ci --prefix tests/idp`; without them every test
//! here fails with a message saying so. Waits are bounded polling loops;
//! nothing asserts how fast.

mod common;
#[path = "common/idp.rs"]
mod idp;
#[path = "common/status_lists.rs"]
mod status_lists;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::json;
use status_lists::ListServer;

const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);
const FETCHES: &str = "jwtgate_status_list_fetch_total";
const ROUTE: &str = r#"
  - name: api
    match: { path_prefix: / }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { issuers: [main] }
"#;

/// The fixture issuer checking lists under `server`'s prefix; `settings`
/// are more `status_list` flow-mapping entries.
fn config(server: &ListServer, settings: &str, keys_cache_dir: Option<&Path>) -> String {
    let mut config = Config::new();
    if let Some(dir) = keys_cache_dir {
        config = config.section(&format!("keys_cache_dir: \"{}\"", dir.display()));
    }
    let status_list = format!(
        "status_list: {{ allowed_uris: [\"{}\"], allow_http: true, min_refresh: 1s{settings} }}",
        server.prefix()
    );
    config
        .issuer_with("main", ISS, &[&status_list])
        .routes(ROUTE)
}

/// A token of the fixture issuer whose status is entry `idx` of `uri`.
fn token_at(uri: &str, idx: u64) -> String {
    token(
        ISS,
        "alice",
        json!({ "status": { "status_list": { "idx": idx, "uri": uri } } }),
    )
}

/// Waits until `token` gets `status`.
async fn expect_status(gateway: &Gateway, token: &str, status: u16) {
    poll(DEADLINE, POLL, || async {
        let found = gateway.status("/", Some(token)).await;
        if found == status {
            Ok(())
        } else {
            Err(format!("expected {status}, still {found}"))
        }
    })
    .await;
}

/// The reason a refusal of `token` carries in its access-log line.
async fn refused(gateway: &Gateway, token: &str) -> (u16, String) {
    let response = gateway.get("/", Some(token)).await;
    let status = response.status().as_u16();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let line = gateway.access_line(&id).await;
    let reason = line
        .split("reason=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no reason in {line}"));
    (status, reason.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn entries_of_every_width_decide_the_token() {
    let server = ListServer::start(0);
    // Statuses 0 valid, 1 invalid, 2 suspended, 3 application-specific.
    server
        .put(
            "b1",
            json!({ "bits": 1, "statuses": [0, 1, 0, 0, 0, 0, 0, 0] }),
        )
        .await;
    for bits in [2, 4, 8] {
        let statuses = json!([0, 1, 2, 3, 0, 0, 0, 0]);
        server
            .put(
                &format!("b{bits}"),
                json!({ "bits": bits, "statuses": statuses }),
            )
            .await;
    }
    let (_upstream, gateway) = start(&config(&server, "", None)).await;

    let plain = token(ISS, "alice", json!({}));
    assert_eq!(
        gateway.status("/", Some(&plain)).await,
        200,
        "no status claim: unaffected"
    );

    let first = token_at(&server.uri("b1"), 0);
    // Named for the first time: registered, fetched in the background.
    expect_status(&gateway, &first, 200).await;
    let (status, reason) = refused(&gateway, &token_at(&server.uri("b1"), 1)).await;
    assert_eq!((status, reason.as_str()), (401, "token_invalidated"));

    for bits in [2, 4, 8] {
        let uri = server.uri(&format!("b{bits}"));
        expect_status(&gateway, &token_at(&uri, 0), 200).await;
        let cases = [
            (1, "token_invalidated"),
            (2, "token_suspended"),
            (3, "token_status_unknown"),
        ];
        for (idx, expected) in cases {
            let (status, reason) = refused(&gateway, &token_at(&uri, idx)).await;
            assert_eq!(
                (status, reason.as_str()),
                (401, expected),
                "bits {bits}, idx {idx}"
            );
        }
        let (status, reason) = refused(&gateway, &token_at(&uri, 10_000)).await;
        assert_eq!(
            (status, reason.as_str()),
            (401, "token_status_unknown"),
            "past the end"
        );
    }
    let challenge = gateway
        .get("/", Some(&token_at(&server.uri("b2"), 2)))
        .await;
    let header = challenge.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(header.contains("invalid_token"), "{header}");
    gateway.expect_refusals("401", "token_suspended", 4.0).await;
    gateway
        .expect_metric("jwtgate_status_lists", &[("issuer", "main")], 4.0)
        .await;
    assert!(
        gateway
            .metric("jwtgate_status_list_bytes", &[("issuer", "main")])
            .await
            > 0.0
    );
    assert_eq!(
        server.requests("/lists/b1").await,
        1,
        "never fetched per request"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_uri_off_the_allow_list_is_refused_and_never_fetched() {
    let server = ListServer::start(0);
    server.put("ok", json!({ "statuses": [0] })).await;
    let (_upstream, gateway) = start(&config(&server, "", None)).await;
    let elsewhere = format!("http://127.0.0.1:{}/elsewhere/ok", server.port);
    let (status, reason) = refused(&gateway, &token_at(&elsewhere, 0)).await;
    assert_eq!((status, reason.as_str()), (401, "status_list_not_allowed"));
    // The server is reachable: an allowed list is fetched.
    expect_status(&gateway, &token_at(&server.uri("ok"), 0), 200).await;
    let (status, _) = refused(&gateway, &token_at(&elsewhere, 0)).await;
    assert_eq!(status, 401);
    assert_eq!(server.requests("/elsewhere/ok").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_that_fail_a_check_are_refused() {
    let server = ListServer::start(0);
    let statuses = json!([0]);
    server
        .put(
            "foreign",
            json!({ "statuses": statuses, "key": "rsa-impostor.pem" }),
        )
        .await;
    server
        .put(
            "moved",
            json!({ "statuses": statuses, "sub": "https://elsewhere.example/l" }),
        )
        .await;
    server
        .put("expired", json!({ "statuses": statuses, "exp_in": -60 }))
        .await;
    server
        .put("huge", json!({ "statuses": statuses, "pad": 8192 }))
        .await;
    server
        .put(
            "bomb",
            json!({ "bits": 8, "statuses": statuses, "bomb_bytes": 1 << 20 }),
        )
        .await;
    let settings = ", max_bytes: 4096, max_decompressed_bytes: 65536";
    let (_upstream, gateway) = start(&config(&server, settings, None)).await;
    let cases = [
        ("foreign", "bad_signature"),
        ("moved", "wrong_subject"),
        ("expired", "expired"),
        ("huge", "too_large"),
        ("bomb", "inflated_too_large"),
    ];
    for (name, result) in cases {
        let token = token_at(&server.uri(name), 0);
        assert_eq!(
            gateway.status("/", Some(&token)).await,
            503,
            "{name}: not fetched yet"
        );
        let labels = [("issuer", "main"), ("result", result)];
        gateway.expect_metric_at_least(FETCHES, &labels, 1.0).await;
        let (status, reason) = refused(&gateway, &token).await;
        assert_eq!(
            (status, reason.as_str()),
            (503, "status_list_unavailable"),
            "{name}"
        );
    }
    assert_eq!(gateway.metric(FETCHES, &[("result", "success")]).await, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cold_start_with_the_list_server_down_uses_the_disk_copy() {
    let cache = tempfile::tempdir().unwrap();
    let mut server = ListServer::start(0);
    server.put("l", json!({ "statuses": [0, 1] })).await;
    let valid = token_at(&server.uri("l"), 0);
    let invalid = token_at(&server.uri("l"), 1);
    let with_cache = config(&server, "", Some(cache.path()));
    {
        let (_upstream, gateway) = start(&with_cache).await;
        expect_status(&gateway, &valid, 200).await;
    }
    server.stop();

    // Down at startup: the copy on disk is used at once.
    let (_upstream, gateway) = start(&with_cache).await;
    assert_eq!(gateway.status("/", Some(&valid)).await, 200);
    assert_eq!(
        refused(&gateway, &invalid).await,
        (401, "token_invalidated".into())
    );
    drop(gateway);

    // No copy: required refuses with 503, optional lets the token through.
    let (_upstream, required) = start(&config(&server, "", None)).await;
    let (status, reason) = refused(&required, &valid).await;
    assert_eq!((status, reason.as_str()), (503, "status_list_unavailable"));
    let optional = config(&server, ", mode: optional", None);
    let (_upstream, optional) = start(&optional).await;
    assert_eq!(optional.status("/", Some(&invalid)).await, 200);
    let unchecked = "jwtgate_status_list_unchecked_total";
    optional
        .expect_metric(unchecked, &[("issuer", "main")], 1.0)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_list_serves_until_max_age() {
    let server = ListServer::start(0);
    // ttl 1: refreshed about every second (min_refresh 1s).
    let spec = json!({ "statuses": [0, 1], "ttl": 1 });
    server.put("kept", spec.clone()).await;
    server.put("aged", spec).await;
    let (_upstream, gateway) = start(&config(&server, "", None)).await;
    let kept = token_at(&server.uri("kept"), 0);
    expect_status(&gateway, &kept, 200).await;
    server.fail("kept").await;
    let failed = [("issuer", "main"), ("result", "http_status")];
    gateway.expect_metric_at_least(FETCHES, &failed, 1.0).await;
    assert_eq!(
        gateway.status("/", Some(&kept)).await,
        200,
        "within max_age (24h)"
    );
    let invalid = token_at(&server.uri("kept"), 1);
    assert_eq!(
        gateway.status("/", Some(&invalid)).await,
        401,
        "still the last good list"
    );
    drop(gateway);

    let short = config(&server, ", max_age: 2s", None);
    let (_upstream, gateway) = start(&short).await;
    let aged = token_at(&server.uri("aged"), 0);
    expect_status(&gateway, &aged, 200).await;
    server.fail("aged").await;
    // Past max_age without a good fetch: no longer used.
    expect_status(&gateway, &aged, 503).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_keeps_the_lists_with_the_issuers_new_keys() {
    let mut server = ListServer::start(0);
    server.put("l", json!({ "statuses": [0, 1] })).await;
    let (_upstream, gateway) = start(&config(&server, "", None)).await;
    let valid = token_at(&server.uri("l"), 0);
    expect_status(&gateway, &valid, 200).await;
    server.stop();
    // The issuer's keys are read from its file again: a new key store,
    // which the lists are verified with again rather than fetched.
    let (status, body) = gateway.reload().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(gateway.status("/", Some(&valid)).await, 200);
    let invalid = token_at(&server.uri("l"), 1);
    assert_eq!(
        refused(&gateway, &invalid).await,
        (401, "token_invalidated".into())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn token_verify_fetches_the_list_the_token_names() {
    let server = ListServer::start(0);
    server.put("l", json!({ "statuses": [0, 1] })).await;
    let yaml = config(&server, "", None);
    let verify = |token: String| {
        let yaml = yaml.clone();
        std::thread::spawn(move || {
            jwtgate_on(
                &yaml,
                &["token", "verify"],
                &["--route", "api", &token],
                &[],
            )
        })
        .join()
        .unwrap()
    };
    let accepted = verify(token_at(&server.uri("l"), 0));
    assert!(accepted.success, "{}", accepted.text());
    assert!(
        accepted
            .stdout
            .contains("status list: issuer \"main\": fetched"),
        "{}",
        accepted.text()
    );
    let refused = verify(token_at(&server.uri("l"), 1));
    assert!(!refused.success, "{}", refused.text());
    assert!(
        refused
            .text()
            .contains("status list marks the token invalid"),
        "{}",
        refused.text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prefetched_list_is_ready_before_any_token_names_it() {
    let server = ListServer::start(0);
    server.put("early", json!({ "statuses": [0, 1] })).await;
    let settings = format!(", prefetch: [\"{}\"]", server.uri("early"));
    let (_upstream, gateway) = start(&config(&server, &settings, None)).await;
    let fetched = [("issuer", "main"), ("result", "success")];
    gateway.expect_metric_at_least(FETCHES, &fetched, 1.0).await;
    // The first token naming it is decided at once, not answered 503.
    let invalid = token_at(&server.uri("early"), 1);
    assert_eq!(
        refused(&gateway, &invalid).await,
        (401, "token_invalidated".into())
    );
    assert_eq!(
        gateway
            .status("/", Some(&token_at(&server.uri("early"), 0)))
            .await,
        200
    );
}
