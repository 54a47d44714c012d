//! DPoP-bound tokens (RFC 9449) end to end: the real IdP (`tests/idp`,
//! oidc-provider) issues a token bound to a client key, the client's proofs
//! are made by npm `jose` (a library jwtgate doesn't use), and jwtgate in
//! front of a recording upstream lets the token through only with a fresh
//! proof of that key for this request. Each attack is refused with its
//! own reason: a replayed proof, another method or URI, a stolen token with
//! the thief's own proof, a private key in `jwk`, `none` and HMAC, a proof
//! signed by another key than it names, an old or future `iat`, a missing
//! or wrong `ath`, two `DPoP` headers, a bound token sent as `Bearer`.
//! Server nonces: `401 use_dpop_nonce` with `DPoP-Nonce`, then accepted.
//! Two replicas sharing proofs through a real `redis-server` refuse on one
//! a proof used on the other. The authorization listener checks proofs
//! against the original request a front proxy describes.
//!
//! Needs Node.js and `npm ci --prefix tests/idp`; without them every test
//! here fails with a message saying so.

mod common;
#[path = "common/idp.rs"]
mod idp;
#[path = "common/redis.rs"]
mod redis;

use std::time::{Duration, Instant};

use common::{Config, Gateway, Upstream, free_port, wait_for_listener};
use idp::{DpopKey, Idp, Proof, Tamper};

const SCOPE: &str = "orders:read";

fn config(issuer: &str) -> String {
    config_listening(issuer, Config::new())
}

/// [`config`] on the listeners `listening` sets.
fn config_listening(issuer: &str, listening: Config) -> String {
    let routes = r#"
  - name: api
    match: { path_prefix: /api }
    upstream: { addrs: ["{UPSTREAM}"] }
  - name: bound
    match: { path_prefix: /bound }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { sender_constraint: dpop, dpop: { algorithms: [ES256, EdDSA] } }
  - name: nonce
    match: { path_prefix: /nonce }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { sender_constraint: dpop, dpop: { nonce: { rotate_every: 5m } } }
"#;
    listening
        .default_server()
        .issuers(&idp::issuer_yaml(
            issuer,
            "{ allow_http: true }",
            idp::RESOURCE,
            &[],
        ))
        .routes(routes)
}

/// The IdP, an upstream and a gateway in front of it, ready.
async fn start() -> (Idp, Upstream, Gateway) {
    let idp = Idp::start().await;
    let upstream = Upstream::start();
    let gateway = ready(&config(&idp.issuer()), &upstream).await;
    (idp, upstream, gateway)
}

async fn ready(config: &str, upstream: &Upstream) -> Gateway {
    let gateway = Gateway::start(config, upstream).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while gateway.admin_get("/readyz").await.status() != 200 {
        assert!(Instant::now() < deadline, "not ready:\n{}", gateway.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gateway
}

/// What `GET path` with `authorization` and the `proofs` gets: the status,
/// every `WWW-Authenticate` challenge and the `DPoP-Nonce` header.
async fn get(
    gateway: &Gateway,
    path: &str,
    authorization: &str,
    proofs: &[&str],
) -> (u16, Vec<String>, Option<String>) {
    let mut request = gateway
        .client()
        .get(gateway.url(path))
        .header("authorization", authorization);
    for proof in proofs {
        request = request.header("dpop", *proof);
    }
    let response = request.send().await.expect("the request");
    let headers = response.headers();
    let challenges = headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let nonce = headers
        .get("dpop-nonce")
        .map(|v| v.to_str().unwrap().to_string());
    (response.status().as_u16(), challenges, nonce)
}

async fn expect_refusals(gateway: &Gateway, route: &str, reason: &str, count: f64) {
    gateway
        .expect_decisions(
            &[("route", route), ("outcome", "deny"), ("reason", reason)],
            count,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_token_passes_once_per_proof_of_its_key() {
    let (idp, upstream, gateway) = start().await;
    let key = DpopKey::generate("ES256");
    let token = idp.dpop_bound_token(&key, SCOPE).await;
    let url = gateway.url("/api/orders");
    let dpop = format!("DPoP {token}");
    let proofs = key.proofs(&[
        Proof::new("GET", &url).token(&token),
        Proof::new("GET", &url).token(&token),
    ]);

    let (status, _, _) = get(&gateway, "/api/orders", &dpop, &[&proofs[0]]).await;
    assert_eq!(status, 200, "{}", gateway.log());
    assert_eq!(upstream.requests().len(), 1);
    // A second request needs a proof of its own.
    let (status, challenges, _) = get(&gateway, "/api/orders", &dpop, &[&proofs[0]]).await;
    assert_eq!(status, 401);
    assert!(
        challenges
            .iter()
            .any(|c| c.starts_with("DPoP ") && c.contains("error=\"invalid_dpop_proof\"")),
        "{challenges:?}"
    );
    expect_refusals(&gateway, "api", "dpop_replayed", 1.0).await;
    let (status, _, _) = get(&gateway, "/api/orders", &dpop, &[&proofs[1]]).await;
    assert_eq!(status, 200);

    // The bound token as a bearer token is refused on every route.
    let bearer = format!("Bearer {token}");
    for path in ["/api/orders", "/bound/orders"] {
        let (status, _, _) = get(&gateway, path, &bearer, &[]).await;
        assert_eq!(status, 401, "{path}");
    }
    expect_refusals(&gateway, "api", "dpop_missing_proof", 1.0).await;
    expect_refusals(&gateway, "bound", "dpop_missing_proof", 1.0).await;
    assert_eq!(upstream.requests().len(), 2, "nothing refused got through");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_forged_or_misused_proof_is_refused_with_its_reason() {
    let (idp, upstream, gateway) = start().await;
    let key = DpopKey::generate("ES256");
    let thief = DpopKey::generate("ES256");
    let token = idp.dpop_bound_token(&key, SCOPE).await;
    let other_token = idp.dpop_bound_token(&key, SCOPE).await;
    let url = gateway.url("/api/orders");
    let proof = || Proof::new("GET", &url).token(&token);
    let cases: Vec<(&str, Proof)> = vec![
        ("dpop_wrong_method", Proof::new("POST", &url).token(&token)),
        (
            "dpop_wrong_uri",
            Proof::new("GET", &gateway.url("/api/other")).token(&token),
        ),
        ("dpop_private_key", proof().tamper(Tamper::PrivateJwk)),
        ("dpop_alg_not_allowed", proof().tamper(Tamper::AlgNone)),
        ("dpop_alg_not_allowed", proof().tamper(Tamper::Hs256)),
        ("dpop_bad_signature", proof().tamper(Tamper::OtherKey)),
        ("dpop_bad_typ", proof().tamper(Tamper::WrongTyp)),
        ("dpop_missing_ath", proof().tamper(Tamper::NoAth)),
        (
            "dpop_wrong_ath",
            Proof::new("GET", &url).token(&other_token),
        ),
        ("dpop_iat_out_of_window", proof().iat_offset(-600)),
        ("dpop_iat_out_of_window", proof().iat_offset(600)),
    ];
    let specs: Vec<Proof> = cases.iter().map(|(_, p)| p.clone()).collect();
    let proofs = key.proofs(&specs);
    let dpop = format!("DPoP {token}");
    for ((reason, _), proof) in cases.iter().zip(&proofs) {
        let (status, _, _) = get(&gateway, "/api/orders", &dpop, &[proof]).await;
        assert_eq!(status, 401, "{reason}");
    }
    let mut expected = std::collections::BTreeMap::new();
    for (reason, _) in &cases {
        *expected.entry(*reason).or_insert(0.0) += 1.0;
    }
    for (reason, count) in expected {
        expect_refusals(&gateway, "api", reason, count).await;
    }

    // A stolen token with the thief's own, otherwise perfect, proof.
    let stolen = thief.proof(&proof());
    let (status, challenges, _) = get(&gateway, "/api/orders", &dpop, &[&stolen]).await;
    assert_eq!(status, 401);
    assert!(
        challenges.iter().any(|c| c.contains("invalid_token")),
        "{challenges:?}"
    );
    expect_refusals(&gateway, "api", "dpop_key_mismatch", 1.0).await;

    // Two DPoP headers: which one is meant is unknown.
    let two = key.proofs(&[proof(), proof()]);
    let (status, _, _) = get(&gateway, "/api/orders", &dpop, &[&two[0], &two[1]]).await;
    assert_eq!(status, 400);
    expect_refusals(&gateway, "api", "dpop_multiple_proofs", 1.0).await;
    assert!(
        upstream.requests().is_empty(),
        "no refused request got through"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_requiring_dpop_challenge_with_their_algorithms_and_nonces() {
    let (idp, upstream, gateway) = start().await;
    // A plain bearer token where DPoP is required.
    let bearer = format!("Bearer {}", idp.token(SCOPE).await);
    let (status, challenges, _) = get(&gateway, "/bound/orders", &bearer, &[]).await;
    assert_eq!(status, 401);
    assert_eq!(
        challenges,
        [
            "DPoP realm=\"jwtgate\", algs=\"ES256 EdDSA\", error=\"invalid_token\", error_description=\"sender-constrained token required\""
        ]
    );
    expect_refusals(&gateway, "bound", "sender_constraint_required", 1.0).await;
    // A proof signed with an algorithm the route doesn't list.
    let rsa = DpopKey::generate("PS256");
    let token = idp.dpop_bound_token(&rsa, SCOPE).await;
    let url = gateway.url("/bound/orders");
    let proof = rsa.proof(&Proof::new("GET", &url).token(&token));
    let (status, _, _) = get(
        &gateway,
        "/bound/orders",
        &format!("DPoP {token}"),
        &[&proof],
    )
    .await;
    assert_eq!(status, 401);
    expect_refusals(&gateway, "bound", "dpop_alg_not_allowed", 1.0).await;

    // A route with nonces: the first proof has none and gets one to use.
    let key = DpopKey::generate("EdDSA");
    let token = idp.dpop_bound_token(&key, SCOPE).await;
    let dpop = format!("DPoP {token}");
    let url = gateway.url("/nonce/orders");
    let first = key.proof(&Proof::new("GET", &url).token(&token));
    let (status, challenges, nonce) = get(&gateway, "/nonce/orders", &dpop, &[&first]).await;
    assert_eq!(status, 401);
    assert!(
        challenges[0].contains("error=\"use_dpop_nonce\""),
        "{challenges:?}"
    );
    let nonce = nonce.expect("a DPoP-Nonce header");
    expect_refusals(&gateway, "nonce", "dpop_nonce_required", 1.0).await;
    let proofs = key.proofs(&[
        Proof::new("GET", &url).token(&token).nonce(&nonce),
        Proof::new("GET", &url)
            .token(&token)
            .nonce("not-a-nonce-of-ours"),
    ]);
    let (status, _, _) = get(&gateway, "/nonce/orders", &dpop, &[&proofs[0]]).await;
    assert_eq!(status, 200, "{}", gateway.log());
    let (status, _, again) = get(&gateway, "/nonce/orders", &dpop, &[&proofs[1]]).await;
    assert_eq!((status, again.as_deref()), (401, Some(nonce.as_str())));
    expect_refusals(&gateway, "nonce", "dpop_bad_nonce", 1.0).await;
    assert_eq!(upstream.requests().len(), 1);
}

/// Replicas behind one load balancer share the proofs they saw through
/// Redis: a proof used on one is a replay on the other. The htu names the
/// address the client used, so both replicas sit behind the same name: the
/// proof is made for a host the test sends as `Host`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_redis_refuse_a_proof_used_on_another() {
    let redis = redis::Redis::start().await;
    let idp = Idp::start().await;
    let upstream = Upstream::start();
    let shared = format!(
        "{}dpop_replay: {{ redis: {{ key_prefix: jwtgate-dpop-test }} }}\nredis: {{ url: \"{}\" }}\n",
        config(&idp.issuer()),
        redis.url()
    );
    let a = ready(&shared, &upstream).await;
    let b = ready(&shared, &upstream).await;
    let key = DpopKey::generate("ES256");
    let token = idp.dpop_bound_token(&key, SCOPE).await;
    let proof = key.proof(&Proof::new("GET", "http://api.test/api/orders").token(&token));
    let send = |gateway: &Gateway| {
        gateway
            .client()
            .get(gateway.url("/api/orders"))
            .header("host", "api.test")
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", &proof)
            .send()
    };
    assert_eq!(send(&a).await.unwrap().status(), 200, "{}", a.log());
    assert_eq!(send(&b).await.unwrap().status(), 401, "{}", b.log());
    expect_refusals(&b, "api", "dpop_replayed", 1.0).await;
    assert_eq!(upstream.requests().len(), 1);
}

/// Forward auth (Traefik, Caddy): the proof names the URI the client used
/// at the front proxy, which the proxy describes in `X-Forwarded-*`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorization_listener_checks_proofs_against_the_original_request() {
    let idp = Idp::start().await;
    let upstream = Upstream::start();
    let port = free_port();
    let listening = Config::new().listen(&format!(
        "\n  http: \"127.0.0.1:{{PROXY}}\"\n  authz: {{ addr: \"127.0.0.1:{port}\" }}"
    ));
    let template = config_listening(&idp.issuer(), listening);
    let gateway = ready(&template, &upstream).await;
    let authz = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    wait_for_listener(authz, &|| gateway.log());
    let key = DpopKey::generate("ES256");
    let token = idp.dpop_bound_token(&key, SCOPE).await;
    let proofs = key.proofs(&[
        Proof::new("GET", "https://api.test/api/orders").token(&token),
        Proof::new("GET", "http://127.0.0.1/api/orders").token(&token),
    ]);
    let check = |proof: &str| {
        gateway
            .client()
            .get(format!("http://{authz}/"))
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "api.test")
            .header("x-forwarded-uri", "/api/orders?page=2")
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", proof)
            .send()
    };
    assert_eq!(
        check(&proofs[0]).await.unwrap().status(),
        200,
        "{}",
        gateway.log()
    );
    assert_eq!(check(&proofs[0]).await.unwrap().status(), 401, "a replay");
    assert_eq!(
        check(&proofs[1]).await.unwrap().status(),
        401,
        "another URI"
    );
    expect_refusals(&gateway, "api", "dpop_replayed", 1.0).await;
    expect_refusals(&gateway, "api", "dpop_wrong_uri", 1.0).await;
    assert!(
        upstream.requests().is_empty(),
        "the front proxy forwards, not jwtgate"
    );
}
