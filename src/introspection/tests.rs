//! Introspectors against an introspection endpoint on loopback that
//! answers as told and records what it was asked; time is the manual
//! clock's. The real identity provider's endpoint: tests/introspection.rs.

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::{HeaderMap, Method};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::auth::VerifiedToken;
use crate::clock::ManualClock;
use crate::jose::{Algorithm, AlgorithmSet};
use crate::keys::{KeySet, KeyStore};
use crate::mint::Signer;
use crate::pipeline::{Adapter, Decision, Pipeline, RequestView, Scheme, TargetForm};

const NOW: i64 = 1_800_000_000;
const ISSUER: &str = "https://idp.test";

/// What the endpoint was asked: each request's head and body.
#[derive(Clone, Default)]
struct Asked(Arc<Mutex<Vec<String>>>);

impl Asked {
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    fn last(&self) -> String {
        self.0.lock().unwrap().last().cloned().unwrap_or_default()
    }
}

/// An endpoint answering each request with `answer(body)`: a status line's
/// code, a content type and a body; `delay_ms` before answering.
async fn endpoint(
    answer: impl Fn(&str) -> (u16, &'static str, String) + Send + Sync + 'static,
    delay_ms: u64,
) -> (String, Asked) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/introspect", listener.local_addr().unwrap());
    let asked = Asked::default();
    let record = asked.clone();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let record = record.clone();
            let answer = answer.clone();
            tokio::spawn(async move {
                let request = read_request(&mut stream).await;
                record.0.lock().unwrap().push(request.clone());
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                let body = request.split("\r\n\r\n").nth(1).unwrap_or_default();
                let (status, content_type, body) = answer(body);
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    (url, asked)
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> String {
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let read = stream.read(&mut buffer).await.unwrap_or(0);
        bytes.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&bytes).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|n| n.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
        if read == 0 {
            return text;
        }
    }
}

fn active(sub: &str, exp: i64) -> (u16, &'static str, String) {
    let answer = json!({
        "active": true, "iss": ISSUER, "sub": sub, "aud": "api", "exp": exp, "iat": NOW,
        "scope": "orders:read", "client_id": "app",
    });
    (200, "application/json", answer.to_string())
}

fn settings(url: &str, credential: ClientCredential) -> IntrospectionSettings {
    IntrospectionSettings {
        issuer: ISSUER.into(),
        endpoint: Some(url.into()),
        client_id: "gateway".into(),
        credential,
        jwt_response: false,
        active_ttl: Duration::from_secs(60),
        inactive_ttl: Duration::from_secs(10),
        max_entries: 1000,
        max_cache_bytes: 1 << 20,
        fetch: crate::keys::fetch::FetchSettings {
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            max_bytes: 64 * 1024,
            allow_http: true,
        },
    }
}

fn basic() -> ClientCredential {
    ClientCredential::Basic(Secret(b"s3cret".to_vec()))
}

fn issuers(keys: KeyStore, algorithms: AlgorithmSet) -> Vec<Arc<IssuerVerifier>> {
    vec![Arc::new(IssuerVerifier::new(
        "idp",
        ISSUER,
        algorithms,
        vec!["api".into()],
        keys,
    ))]
}

fn plain_issuers() -> Vec<Arc<IssuerVerifier>> {
    issuers(KeyStore::fixed(KeySet::default()), AlgorithmSet::default())
}

async fn check(
    introspector: &Introspector,
    token: &str,
    issuers: &[Arc<IssuerVerifier>],
    clock: &ManualClock,
) -> Result<Arc<VerifiedToken>, Refusal> {
    let metrics = IntrospectionMetrics::new();
    introspector.check(token, issuers, 0, clock, &metrics).await
}

#[tokio::test]
async fn an_active_answer_is_the_tokens_claims_until_active_ttl() {
    let (url, asked) = endpoint(|_| active("alice", NOW + 3600), 0).await;
    let introspector = Introspector::new(settings(&url, basic())).unwrap();
    let clock = ManualClock::at(NOW);
    let issuers = plain_issuers();
    let token = check(&introspector, "opaque-1", &issuers, &clock)
        .await
        .unwrap();
    assert_eq!(token.subject(), Some("alice"));
    assert_eq!((token.algorithm, token.exp), (None, Some(NOW + 3600)));
    check(&introspector, "opaque-1", &issuers, &clock)
        .await
        .unwrap();
    assert_eq!(
        asked.count(),
        1,
        "the second check is answered by the cache"
    );
    assert!(
        asked
            .last()
            .contains("token=opaque-1&token_type_hint=access_token")
    );

    clock.advance(61);
    check(&introspector, "opaque-1", &issuers, &clock)
        .await
        .unwrap();
    assert_eq!(
        asked.count(),
        2,
        "past active_ttl the endpoint is asked again"
    );
}

#[tokio::test]
async fn an_answer_serves_no_longer_than_the_tokens_exp() {
    let (url, asked) = endpoint(|_| active("alice", NOW + 5), 0).await;
    let introspector = Introspector::new(settings(&url, basic())).unwrap();
    let clock = ManualClock::at(NOW);
    let issuers = plain_issuers();
    check(&introspector, "short", &issuers, &clock)
        .await
        .unwrap();
    // The issuer's leeway (30 s) after exp, as every check of exp.
    clock.advance(34);
    check(&introspector, "short", &issuers, &clock)
        .await
        .unwrap();
    assert_eq!(asked.count(), 1);
    clock.advance(1);
    let refused = check(&introspector, "short", &issuers, &clock).await;
    assert_eq!(asked.count(), 2, "the answer ended with the token's exp");
    assert_eq!(refused.unwrap_err(), Refusal::Invalid(Reason::Expired));
}

#[tokio::test]
async fn an_inactive_answer_is_cached_for_inactive_ttl() {
    let (url, asked) = endpoint(
        |_| (200, "application/json", r#"{"active":false}"#.into()),
        0,
    )
    .await;
    let introspector = Introspector::new(settings(&url, basic())).unwrap();
    let clock = ManualClock::at(NOW);
    let issuers = plain_issuers();
    for _ in 0..3 {
        let refused = check(&introspector, "revoked", &issuers, &clock).await;
        assert_eq!(refused.unwrap_err(), Refusal::Inactive);
    }
    assert_eq!(asked.count(), 1);
    clock.advance(11);
    check(&introspector, "revoked", &issuers, &clock)
        .await
        .unwrap_err();
    assert_eq!(asked.count(), 2);
}

#[tokio::test]
async fn an_active_answer_failing_the_issuers_rules_is_refused_with_its_reason() {
    let (url, _) = endpoint(
        |_| {
            let answer = json!({"active": true, "aud": "billing", "exp": NOW + 60});
            (200, "application/json", answer.to_string())
        },
        0,
    )
    .await;
    let introspector = Introspector::new(settings(&url, basic())).unwrap();
    let clock = ManualClock::at(NOW);
    let refused = check(&introspector, "other-api", &plain_issuers(), &clock).await;
    assert_eq!(
        refused.unwrap_err(),
        Refusal::Invalid(Reason::WrongAudience)
    );

    // A reload with rules this answer passes judges the cached answer again.
    let mut relaxed = IssuerVerifier::new(
        "idp",
        ISSUER,
        AlgorithmSet::default(),
        vec![],
        KeyStore::fixed(KeySet::default()),
    );
    relaxed.check_audience = false;
    let relaxed = vec![Arc::new(relaxed)];
    assert!(
        check(&introspector, "other-api", &relaxed, &clock)
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checks_of_one_token_share_one_call() {
    let (url, asked) = endpoint(|_| active("alice", NOW + 3600), 200).await;
    let introspector = Arc::new(Introspector::new(settings(&url, basic())).unwrap());
    let clock = ManualClock::at(NOW);
    let issuers = Arc::new(plain_issuers());
    let mut checks = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let (introspector, clock, issuers) = (introspector.clone(), clock.clone(), issuers.clone());
        checks.spawn(async move {
            check(&introspector, "shared", &issuers, &clock)
                .await
                .is_ok()
        });
    }
    while let Some(passed) = checks.join_next().await {
        assert!(passed.unwrap());
    }
    assert_eq!(asked.count(), 1);
}

#[tokio::test]
async fn a_failed_call_is_unavailable_and_backs_off() {
    let failing = Arc::new(AtomicUsize::new(1));
    let fails = failing.clone();
    let (url, asked) = endpoint(
        move |_| match fails.load(Ordering::Relaxed) {
            0 => active("alice", NOW + 3600),
            _ => (500, "text/plain", "down".into()),
        },
        0,
    )
    .await;
    let introspector = Introspector::new(settings(&url, basic())).unwrap();
    let clock = ManualClock::at(NOW);
    let issuers = plain_issuers();
    let metrics = IntrospectionMetrics::new();
    let refused = introspector
        .check("t", &issuers, 0, &*clock, &metrics)
        .await;
    assert_eq!(refused.unwrap_err(), Refusal::Unavailable);
    assert_eq!(metrics.count("idp", "http_status"), 1);
    // Within the backoff nobody calls: the answer is at once.
    let refused = introspector
        .check("t", &issuers, 0, &*clock, &metrics)
        .await;
    assert_eq!(refused.unwrap_err(), Refusal::Unavailable);
    assert_eq!(asked.count(), 1);

    failing.store(0, Ordering::Relaxed);
    clock.advance_millis(300);
    introspector
        .check("t", &issuers, 0, &*clock, &metrics)
        .await
        .unwrap();
    assert_eq!((asked.count(), metrics.count("idp", "active")), (2, 1));
}

#[test]
fn backoff_doubles_to_its_bound_and_resets() {
    let backoff = Backoff::default();
    let ms = 1_000_000;
    assert_eq!(backoff.failed(0), 1);
    assert!(backoff.holds(249 * ms) && !backoff.holds(250 * ms));
    backoff.failed(0);
    assert!(backoff.holds(499 * ms) && !backoff.holds(500 * ms));
    for _ in 0..10 {
        backoff.failed(0);
    }
    assert!(backoff.holds(4_999 * ms) && !backoff.holds(5_000 * ms));
    backoff.reset();
    assert!(!backoff.holds(0));
}

#[tokio::test]
async fn unreachable_and_nonsense_endpoints_are_unavailable() {
    let clock = ManualClock::at(NOW);
    let issuers = plain_issuers();
    let metrics = IntrospectionMetrics::new();
    let closed = Introspector::new(settings("http://127.0.0.1:1/introspect", basic())).unwrap();
    let refused = closed.check("t", &issuers, 0, &*clock, &metrics).await;
    assert_eq!(refused.unwrap_err(), Refusal::Unavailable);
    assert_eq!(metrics.count("idp", "network"), 1);

    let (url, _) = endpoint(|_| (200, "application/json", "[1, 2]".into()), 0).await;
    let nonsense = Introspector::new(settings(&url, basic())).unwrap();
    nonsense
        .check("t", &issuers, 0, &*clock, &metrics)
        .await
        .unwrap_err();
    assert_eq!(metrics.count("idp", "invalid_response"), 1);
}

#[tokio::test]
async fn client_secrets_go_in_basic_or_in_the_form() {
    let (url, asked) = endpoint(|_| active("alice", NOW + 60), 0).await;
    let clock = ManualClock::at(NOW);
    let issuers = plain_issuers();
    let basic = Introspector::new(settings(&url, basic())).unwrap();
    check(&basic, "a", &issuers, &clock).await.unwrap();
    let expected = format!("authorization: Basic {}", STANDARD.encode("gateway:s3cret"));
    assert!(
        asked
            .last()
            .to_ascii_lowercase()
            .contains(&expected.to_ascii_lowercase()),
        "{}",
        asked.last()
    );

    let post = ClientCredential::Post(Secret(b"s3 cret&".to_vec()));
    let post = Introspector::new(settings(&url, post)).unwrap();
    check(&post, "b", &issuers, &clock).await.unwrap();
    let last = asked.last();
    assert!(
        last.contains("client_id=gateway&client_secret=s3+cret%26"),
        "{last}"
    );
    assert!(
        !last.to_ascii_lowercase().contains("authorization:"),
        "{last}"
    );
}

/// An ES256 key pair: the PKCS#8 PEM and the public key's bytes.
fn ec_key() -> (Vec<u8>, Vec<u8>) {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        STANDARD.encode(pkcs8.as_ref())
    );
    (pem.into_bytes(), pair.public_key().as_ref().to_vec())
}

fn form_value(body: &str, name: &str) -> String {
    form_urlencoded::parse(body.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_private_key_jwt_assertion_is_signed_for_the_issuer_per_call() {
    let (url, asked) = endpoint(|_| active("alice", NOW + 60), 0).await;
    let (pem, public) = ec_key();
    let credential = ClientCredential::PrivateKey {
        signer: Arc::new(Signer::from_bytes(&pem, Algorithm::ES256).unwrap()),
        kid: Some("gw-1".into()),
        key_digest: [0; 32],
    };
    let introspector = Introspector::new(settings(&url, credential)).unwrap();
    let clock = ManualClock::at(NOW);
    let issuers = plain_issuers();
    check(&introspector, "c", &issuers, &clock).await.unwrap();
    check(&introspector, "d", &issuers, &clock).await.unwrap();
    let body = asked.last();
    let body = body.split("\r\n\r\n").nth(1).unwrap();
    assert_eq!(
        form_value(body, "client_assertion_type"),
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    let assertion = form_value(body, "client_assertion");
    let parts: Vec<&str> = assertion.split('.').collect();
    let decode = |part: &str| -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    };
    let (header, claims) = (decode(parts[0]), decode(parts[1]));
    assert_eq!(
        (header["alg"].as_str(), header["kid"].as_str()),
        (Some("ES256"), Some("gw-1"))
    );
    assert_eq!(claims["iss"], "gateway");
    assert_eq!(claims["sub"], "gateway");
    assert_eq!(claims["aud"], ISSUER);
    assert_eq!(claims["exp"], NOW + 60);
    let signed = format!("{}.{}", parts[0], parts[1]);
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
        &public,
    )
    .verify(signed.as_bytes(), &signature)
    .expect("signed with the configured key");
    let first = asked.0.lock().unwrap()[0].clone();
    assert_ne!(
        form_value(first.split("\r\n\r\n").nth(1).unwrap(), "client_assertion"),
        assertion,
        "one assertion per call"
    );
}

/// The issuer's signing key as a one-key store, and a signer with it.
fn signing_issuer() -> (Vec<Arc<IssuerVerifier>>, Signer) {
    let (pem, public) = ec_key();
    let signer = Signer::from_bytes(&pem, Algorithm::ES256).unwrap();
    // An uncompressed point: 0x04, then x and y.
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "kid": "k", "alg": "ES256", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(&public[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&public[33..65]),
    });
    let algorithms: AlgorithmSet = [Algorithm::ES256].into_iter().collect();
    let parsed = crate::keys::jwks::parse(&json!({ "keys": [jwk] }), algorithms).unwrap();
    (issuers(KeyStore::fixed(parsed.keys), algorithms), signer)
}

#[tokio::test]
async fn jwt_secured_answers_are_verified_with_the_issuers_keys() {
    let (issuers, signer) = signing_issuer();
    let signer = Arc::new(signer);
    let sign = signer.clone();
    let (url, asked) = endpoint(
        move |body| {
            let aud = if form_value(body, "token") == "for-another" { "someone" } else { "gateway" };
            let claims = json!({
                "iss": ISSUER, "aud": aud, "iat": NOW,
                "token_introspection": { "active": true, "aud": "api", "exp": NOW + 60, "sub": "bob" },
            });
            let jwt = sign.sign(claims.as_object().unwrap(), Some("k"), Some("token-introspection+jwt")).unwrap();
            (200, "application/token-introspection+jwt", jwt)
        },
        0,
    )
    .await;
    let mut wanted = settings(&url, basic());
    wanted.jwt_response = true;
    let introspector = Introspector::new(wanted).unwrap();
    let clock = ManualClock::at(NOW);
    let token = check(&introspector, "signed", &issuers, &clock)
        .await
        .unwrap();
    assert_eq!(token.subject(), Some("bob"));
    assert!(
        asked
            .last()
            .to_ascii_lowercase()
            .contains("accept: application/token-introspection+jwt")
    );
    let refused = check(&introspector, "for-another", &issuers, &clock).await;
    assert_eq!(
        refused.unwrap_err(),
        Refusal::Unavailable,
        "an answer for another client is no answer"
    );
}

/// One route trusting one introspecting issuer, whose endpoint is `url`.
fn snapshot(url: &str, dir: &std::path::Path) -> crate::pipeline::Snapshot {
    snapshot_with(url, dir, "")
}

/// [`snapshot`], with `route` (`key: value` lines) added to the route.
fn snapshot_with(url: &str, dir: &std::path::Path, route: &str) -> crate::pipeline::Snapshot {
    std::fs::write(dir.join("secret"), "s3cret").unwrap();
    let yaml = format!(
        r#"
listen: {{ http: "127.0.0.1:0" }}
admin: {{ addr: "127.0.0.1:1" }}
issuers:
  - name: idp
    issuer: "{ISSUER}"
    audiences: [api]
    fetch: {{ allow_http: true }}
    introspection: {{ endpoint: "{url}", client_id: gateway, client_secret_file: secret }}
routes:
  - name: api
    match: {{ path_prefix: / }}
    upstream: {{ addrs: ["127.0.0.1:9"] }}
{route}"#
    );
    let path = dir.join("gateway.yaml");
    let config = crate::config::parse(&path, &yaml, &|_| None).unwrap();
    crate::assemble::compile(&path, config).unwrap()
}

/// `GET /` with `headers`, as the proxy asks.
fn view(headers: &HeaderMap) -> RequestView<'_> {
    RequestView {
        method: &Method::GET,
        raw_target: b"/",
        target: TargetForm::Origin {
            path_and_query: b"/",
        },
        headers,
        client: None,
        scheme: Scheme::Http,
        client_cert_thumbprint: None,
        adapter: Adapter::Proxy,
        exemplar: None,
    }
}

/// The decision's failure, which must be a refusal.
fn denied<'d>(decision: &'d Decision<'_>) -> &'d crate::auth::verify::Failure {
    match decision {
        Decision::Deny { failure, .. } => failure,
        other => panic!("refused: {other:?}"),
    }
}

#[tokio::test]
async fn the_pipeline_names_introspection_refusals_and_their_check() {
    let dir = tempfile::tempdir().unwrap();
    let inactive = |_: &str| (200, "application/json", r#"{"active":false}"#.to_string());
    let (url, asked) = endpoint(inactive, 0).await;
    let cases = [
        (snapshot(&url, dir.path()), Reason::TokenInactive, 401),
        (
            snapshot("http://127.0.0.1:1/x", dir.path()),
            Reason::IntrospectionUnavailable,
            503,
        ),
    ];
    let pipeline = Pipeline::new(ManualClock::at(NOW), None);
    let mut headers = HeaderMap::new();
    headers.insert("authorization", "Bearer not-a-jws".parse().unwrap());
    for (snapshot, reason, status) in &cases {
        let decision = pipeline.decide(snapshot, &view(&headers)).await;
        let failure = denied(&decision);
        assert_eq!(
            (failure.rejection.reason, failure.check),
            (*reason, "introspection")
        );
        assert_eq!(failure.rejection.status(), *status);
        assert_eq!(failure.issuer, Some(0));
    }

    // Over tokens.max_bytes: refused as a JWS would be, and nobody asked.
    let calls = asked.count();
    let long = format!("Bearer {}", "x".repeat(10_000));
    headers.insert("authorization", long.parse().unwrap());
    let decision = pipeline.decide(&cases[0].0, &view(&headers)).await;
    let failure = denied(&decision);
    assert_eq!(
        (failure.rejection.reason, failure.check),
        (Reason::TooLarge, "structure")
    );
    assert_eq!(asked.count(), calls);
}

#[tokio::test]
async fn an_opaque_tokens_claims_key_the_routes_rate_limits() {
    let dir = tempfile::tempdir().unwrap();
    let (url, asked) = endpoint(|body| active(&form_value(body, "token"), NOW + 3600), 0).await;
    let limit = "    rate_limits:\n      - { name: per-user, rate: 1/m, key: \"claim:sub\" }\n";
    let snapshot = snapshot_with(&url, dir.path(), limit);
    let pipeline = Pipeline::new(ManualClock::at(NOW), None);
    let bearer = |token: &str| {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
        headers
    };
    let alice = bearer("alice");
    assert!(matches!(
        pipeline.decide(&snapshot, &view(&alice)).await,
        Decision::Forward { .. }
    ));
    let again = pipeline.decide(&snapshot, &view(&alice)).await;
    assert!(matches!(again, Decision::RateLimited { .. }), "{again:?}");
    // Another subject has a budget of its own.
    let bob = bearer("bob");
    assert!(matches!(
        pipeline.decide(&snapshot, &view(&bob)).await,
        Decision::Forward { .. }
    ));
    assert_eq!(asked.count(), 2, "each token asked about once");
}

#[tokio::test]
async fn the_cache_keeps_within_its_bound() {
    let (url, asked) = endpoint(|body| active(&form_value(body, "token"), NOW + 3600), 0).await;
    let mut bounded = settings(&url, basic());
    bounded.max_entries = 8;
    bounded.max_cache_bytes = 8 * 4096;
    let introspector = Introspector::new(bounded).unwrap();
    let clock = ManualClock::at(NOW);
    let issuers = plain_issuers();
    for n in 0..100 {
        check(&introspector, &format!("token-{n}"), &issuers, &clock)
            .await
            .unwrap();
    }
    assert_eq!(asked.count(), 100);
    let cached = introspector.cached().await;
    assert!((1..=8).contains(&cached), "{cached} answers cached");
}

#[tokio::test]
async fn a_slow_endpoint_times_out_as_unavailable() {
    let (url, _) = endpoint(|_| active("alice", NOW + 60), 1_000).await;
    let mut impatient = settings(&url, basic());
    impatient.fetch.timeout = Duration::from_millis(100);
    let introspector = Introspector::new(impatient).unwrap();
    let clock = ManualClock::at(NOW);
    let metrics = IntrospectionMetrics::new();
    let refused = introspector
        .check("slow", &plain_issuers(), 0, &*clock, &metrics)
        .await;
    assert_eq!(refused.unwrap_err(), Refusal::Unavailable);
    assert_eq!(metrics.count("idp", "timeout"), 1);
}
