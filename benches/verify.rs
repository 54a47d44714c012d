//! What authentication costs per request, against the physical floor.
//!
//! `cargo bench --bench verify` measures:
//! - `verify/full/<alg>`: the whole request-path decision (parse, issuer and
//!   key selection, signature, claims, route policy), no cache;
//! - `verify/raw/<alg>`: the bare aws-lc signature check of the same bytes
//!   with a pre-parsed key: the floor;
//! - `cache/hit`: a verified-token cache hit, policy included;
//! - `route/lookup/<n>`: route lookup among 1, 100 and 10 000 routes;
//! - `headers/rewrite`: the upstream header rewrite of a typical request;
//! - `pipeline/decide`: the whole decision for a typical request whose
//!   token is in the cache (limits, canonical target, route, extraction,
//!   cache hit, policy), as the proxy asks for it.
//!
//! - `dpop/proof/ES256`: verifying one DPoP proof (RFC 9449: header, the
//!   `jwk` made into a key and its thumbprint, the signature, the claims
//!   against the request, `ath`); `dpop/key/ES256`: the `jwk` part alone;
//!   `dpop/replay/insert`: remembering a new proof in the replay cache,
//!   into a table filling up to the default bound;
//! - `pipeline/decide/dpop`: `pipeline/decide` for a request with a
//!   DPoP-bound token (a cache hit) and a fresh ES256 proof;
//! - `dpop/interleaved/ES256`, `pipeline/decide/dpop/interleaved`: the
//!   proof, and the whole DPoP decision, interleaved with the bare ES256
//!   check of the proof's signature (below).
//!
//! - `verify/interleaved/<alg>`: full and raw alternating in batches of 16
//!   within each sample, so that the machine's drift (other tenants, clock
//!   changes) hits both alike; each sample yields one full/raw ratio.
//!
//! After the run it prints each algorithm's full/raw ratio two ways: from
//! criterion's separate `full` and `raw` estimates, and the median and
//! quartiles of the interleaved samples, which is the figure that holds
//! still on a shared machine; then the DPoP proof's and the DPoP
//! decision's interleaved ratios to the ES256 check of the proof's
//! signature, and the parts of a DPoP request from criterion's estimates.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::{hmac, signature};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion};
use pingora::http::RequestHeader;
use serde_json::{Value, json};

use jwtgate::auth::IssuerVerifier;
use jwtgate::auth::dpop::{
    self, DEFAULT_MAX_PROOF_BYTES, IatWindow, PROOF_ALGORITHMS, ProofExpectations,
};
use jwtgate::auth::policy::RoutePolicy;
use jwtgate::auth::token_cache::{CacheSettings, TokenCache};
use jwtgate::jose::{Algorithm, KeyFamily};
use jwtgate::keys::jwks::PublicJwk;
use jwtgate::keys::{KeySet, KeyStore, VerifyingKey, jwks};
use jwtgate::mint::Signer;
use jwtgate::pipeline::canonical::{PathRules, RequestTarget};
use jwtgate::pipeline::client::ClientAddress;
use jwtgate::pipeline::router::Router;
use jwtgate::pipeline::{Pipeline, Scheme, Snapshot};
use jwtgate::proxy::headers::{self, Forwarding};
use jwtgate::state::dpop_replay::{DEFAULT_MAX_ENTRIES, DpopReplay};

#[path = "support/interleave.rs"]
mod interleave;
#[path = "support/pipeline.rs"]
mod pipeline;

use interleave::{Samples as Ratios, estimate, interleave, quantile};
use pipeline::{
    compiled, decide, fixtures, forwarded, now, pipeline_headers, ready, typical_claims,
};

const ISS: &str = "https://issuer.bench";
const HMAC_SECRET: &[u8] = b"bench-secret-bench-secret-bench-secret!!";
const ALGORITHMS: [Algorithm; 5] = [
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
    Algorithm::HS256,
];

fn jwks_document() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("jwks.json")).unwrap()).unwrap()
}

fn jwk(kid: &str) -> Value {
    jwks_document()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .unwrap()
        .clone()
}

fn b64(value: &Value, member: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(value[member].as_str().unwrap())
        .unwrap()
}

/// One issuer with every benchmarked algorithm: the fixture JWKS for the
/// public-key ones, a separate HMAC issuer for HS256.
fn issuers() -> Vec<Arc<IssuerVerifier>> {
    let public: Vec<Algorithm> = ALGORITHMS
        .into_iter()
        .filter(|a| *a != Algorithm::HS256)
        .collect();
    let parsed = jwks::parse(&jwks_document(), public.iter().copied().collect()).unwrap();
    let hmac_key =
        VerifyingKey::hmac(HMAC_SECRET, [Algorithm::HS256].into_iter().collect()).unwrap();
    vec![
        issuer(ISS, &public, parsed.keys),
        issuer(
            "https://hmac.bench",
            &[Algorithm::HS256],
            KeySet {
                keys: vec![hmac_key],
            },
        ),
    ]
}

fn issuer(iss: &str, algorithms: &[Algorithm], keys: KeySet) -> Arc<IssuerVerifier> {
    Arc::new(IssuerVerifier::new(
        iss,
        iss,
        algorithms.iter().copied().collect(),
        vec!["api".into()],
        KeyStore::fixed(keys),
    ))
}

/// A typical access token: a dozen claims, a few scopes.
fn token(alg: Algorithm) -> String {
    token_with(alg, json!({}))
}

/// [`token`] with `extra` claims, such as a DPoP key binding (`cnf`).
fn token_with(alg: Algorithm, extra: Value) -> String {
    let (key, kid, iss) = match alg {
        Algorithm::ES256 => ("ec256.pem", "ec256-1", ISS),
        Algorithm::EdDSA => ("ed25519.pem", "ed25519-1", ISS),
        Algorithm::HS256 => ("", "", "https://hmac.bench"),
        _ => ("rsa.pem", "rsa-1", ISS),
    };
    let mut claims = typical_claims(iss);
    claims.extend(extra.as_object().unwrap().clone());
    let signer = if alg == Algorithm::HS256 {
        Signer::from_bytes(HMAC_SECRET, alg).ok().unwrap()
    } else {
        Signer::from_file(&fixtures().join(key), alg).unwrap()
    };
    signer
        .sign(&claims, (!kid.is_empty()).then_some(kid), Some("JWT"))
        .unwrap()
}

fn policy() -> RoutePolicy {
    RoutePolicy::new(
        vec![0, 1],
        vec![],
        vec!["orders:read".into()],
        vec![],
        vec![],
    )
}

/// Checks a signature over a message.
type RawVerifier = Box<dyn Fn(&[u8], &[u8]) -> bool>;

/// The floor: aws-lc verifying the token's signature with a key parsed
/// once, the signature already decoded.
fn raw_verifier(alg: Algorithm) -> RawVerifier {
    match alg {
        Algorithm::HS256 => {
            let key = hmac::Key::new(hmac::HMAC_SHA256, HMAC_SECRET);
            Box::new(move |m, s| hmac::verify(&key, m, s).is_ok())
        }
        Algorithm::ES256 => {
            let jwk = jwk("ec256-1");
            let mut point = vec![0x04];
            point.extend(b64(&jwk, "x"));
            point.extend(b64(&jwk, "y"));
            let key = signature::ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .unwrap();
            Box::new(move |m, s| key.verify_sig(m, s).is_ok())
        }
        Algorithm::EdDSA => {
            let key =
                signature::ParsedPublicKey::new(&signature::ED25519, b64(&jwk("ed25519-1"), "x"))
                    .unwrap();
            Box::new(move |m, s| key.verify_sig(m, s).is_ok())
        }
        rsa => {
            let jwk = jwk("rsa-1");
            let params = if rsa == Algorithm::PS256 {
                &signature::RSA_PSS_2048_8192_SHA256
            } else {
                &signature::RSA_PKCS1_2048_8192_SHA256
            };
            let (n, e) = (b64(&jwk, "n"), b64(&jwk, "e"));
            let key = signature::RsaPublicKeyComponents {
                n: &n[..],
                e: &e[..],
            }
            .to_parsed_public_key(params)
            .unwrap();
            Box::new(move |m, s| key.verify_sig(m, s).is_ok())
        }
    }
}

fn bench_verify(c: &mut Criterion, ratios: &Ratios) {
    let issuers = issuers();
    let policy = policy();
    let mut group = c.benchmark_group("verify");
    for alg in ALGORITHMS {
        let token = token(alg);
        let now = now();
        assert!(
            policy
                .authorize(&token, &issuers, now, 8192, None, &mut ())
                .is_ok()
        );
        group.bench_function(BenchmarkId::new("full", alg), |b| {
            b.iter(|| {
                policy
                    .authorize(black_box(&token), &issuers, now, 8192, None, &mut ())
                    .unwrap()
            })
        });
        let (message, signature_b64) = token.rsplit_once('.').unwrap();
        let signature = URL_SAFE_NO_PAD.decode(signature_b64).unwrap();
        let raw = raw_verifier(alg);
        assert!(raw(message.as_bytes(), &signature));
        group.bench_function(BenchmarkId::new("raw", alg), |b| {
            b.iter(|| assert!(raw(black_box(message.as_bytes()), black_box(&signature))))
        });
        group.bench_function(BenchmarkId::new("interleaved", alg), |b| {
            b.iter_custom(|iters| {
                interleave(
                    iters,
                    ratios,
                    &alg.to_string(),
                    || {
                        black_box(
                            policy
                                .authorize(black_box(&token), &issuers, now, 8192, None, &mut ())
                                .unwrap(),
                        );
                    },
                    || assert!(raw(black_box(message.as_bytes()), black_box(&signature))),
                )
            })
        });
    }
    group.finish();
}

/// The parser alone (size cap, base64url, strict JSON): the bulk of what
/// verification adds to the signature check.
fn bench_parse(c: &mut Criterion) {
    let token = token(Algorithm::RS256);
    c.bench_function("parse/typical", |b| {
        b.iter(|| jwtgate::auth::token::parse(black_box(&token), 8192).unwrap())
    });
}

fn bench_cache_hit(c: &mut Criterion) {
    let issuers = issuers();
    let policy = policy();
    let registry_free = |name: &str| prometheus::IntCounter::new(name, name).unwrap();
    let cache = TokenCache::new(
        &CacheSettings {
            max_entries: 100_000,
            max_bytes: 64 << 20,
            ttl: Duration::from_secs(300),
        },
        registry_free("hits"),
        registry_free("misses"),
    );
    let token = token(Algorithm::RS256);
    let now = now();
    policy
        .authorize(&token, &issuers, now, 8192, Some(&cache), &mut ())
        .unwrap();
    c.bench_function("cache/hit", |b| {
        b.iter(|| {
            policy
                .authorize(
                    black_box(&token),
                    &issuers,
                    now,
                    8192,
                    Some(&cache),
                    &mut (),
                )
                .unwrap()
        })
    });
}

/// The pipeline and snapshot `pipeline/decide` runs: one route requiring a
/// scope of the fixture issuer's tokens, the token cache on (the default),
/// DPoP proofs accepted (as on every route) with the default window.
fn pipeline_fixture() -> (Pipeline, Snapshot) {
    const CONFIG: &str = r#"
issuers:
  - name: main
    issuer: https://issuer.bench
    algorithms: [RS256]
    audiences: [api]
    jwks_file: jwks.json
routes:
  - name: api
    match: { path_prefix: /api }
    upstream: { addrs: ["127.0.0.1:9"] }
    auth: { issuers: [main], audiences: [api], scopes: { all_of: ["orders:read"] } }
"#;
    compiled(&fixtures().join("bench.yaml"), CONFIG)
}

/// The `htu` of a proof for [`pipeline::PIPELINE_TARGET`] with [`pipeline_headers`]:
/// the Host header's authority and the path, without the query.
const PIPELINE_HTU: &str = "http://api.example.com/api/orders/42";

fn bench_pipeline(c: &mut Criterion) {
    let (pipeline, snapshot) = pipeline_fixture();
    let headers = pipeline_headers(&format!("Bearer {}", token(Algorithm::RS256)));
    let decide = || decide(&pipeline, &snapshot, &headers);
    assert!(forwarded(&decide()));
    c.bench_function("pipeline/decide", |b| b.iter(decide));
}

/// A DPoP client: the ES256 fixture key, and its public JWK as a proof's
/// header carries it.
struct DpopClient {
    key: jsonwebtoken::EncodingKey,
    /// The proof header, base64url: the same for every proof of this key.
    header: String,
    jwk: Value,
    jkt: String,
}

fn dpop_client() -> DpopClient {
    let mut jwk = jwk("ec256-1");
    let members = jwk.as_object_mut().unwrap();
    members.remove("kid");
    members.remove("use");
    let jkt = dpop::jwk_thumbprint(&jwk).unwrap();
    let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk});
    let pem = std::fs::read(fixtures().join("ec256.pem")).unwrap();
    DpopClient {
        key: jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap(),
        header: URL_SAFE_NO_PAD.encode(header.to_string()),
        jwk,
        jkt,
    }
}

impl DpopClient {
    /// A proof for `GET htu` with `token`, issued now, whose 22-character
    /// `jti` is numbered `n`.
    fn proof(&self, htu: &str, token: &str, n: u64) -> String {
        let claims = json!({
            "jti": format!("bench-{n:016}"), "htm": "GET", "htu": htu, "iat": now(),
            "ath": dpop::access_token_hash(token),
        });
        let input = format!(
            "{}.{}",
            self.header,
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature =
            jsonwebtoken::crypto::sign(input.as_bytes(), &self.key, jsonwebtoken::Algorithm::ES256)
                .unwrap();
        format!("{input}.{signature}")
    }
}

/// How many proofs a replay table takes before the bench starts a new one:
/// the default bound, so the table fills as a busy replica's does.
const REPLAY_FILL: usize = DEFAULT_MAX_ENTRIES;

/// What a DPoP request costs beyond the token: the proof, the part of it
/// that makes the header's `jwk` into a key (done for every proof, never
/// cached), the replay cache, and the whole decision.
fn bench_dpop(c: &mut Criterion, ratios: &Ratios) {
    let client = dpop_client();
    let token = token_with(Algorithm::RS256, json!({"cnf": {"jkt": client.jkt}}));
    let window = IatWindow {
        past_secs: 60,
        future_secs: 10,
    };
    let expect = ProofExpectations {
        method: "GET",
        htu: "https://api.example.com/api/orders/42",
        access_token: Some(&token),
        algorithms: PROOF_ALGORITHMS.into_iter().collect(),
        iat_window: window,
        nonces: None,
        max_bytes: DEFAULT_MAX_PROOF_BYTES,
    };
    let proof = client.proof(expect.htu, &token, 0);
    let now = now();
    let verified = dpop::verify_proof(&proof, &expect, now).unwrap();
    assert_eq!(verified.jkt, client.jkt);
    let mut group = c.benchmark_group("dpop");
    group.bench_function(BenchmarkId::new("proof", "ES256"), |b| {
        b.iter(|| dpop::verify_proof(black_box(&proof), &expect, now).unwrap())
    });
    // The client's key is the fixture's ES256 key: raw_verifier checks the
    // proof's signature as the floor.
    let raw = raw_verifier(Algorithm::ES256);
    let (message, signature_b64) = proof.rsplit_once('.').unwrap();
    let signature = URL_SAFE_NO_PAD.decode(signature_b64).unwrap();
    assert!(raw(message.as_bytes(), &signature));
    let raw_check = || assert!(raw(black_box(message.as_bytes()), black_box(&signature)));
    group.bench_function(BenchmarkId::new("interleaved", "ES256"), |b| {
        b.iter_custom(|iters| {
            interleave(
                iters,
                ratios,
                "DPoP proof ES256",
                || {
                    black_box(dpop::verify_proof(black_box(&proof), &expect, now).unwrap());
                },
                raw_check,
            )
        })
    });
    let public = PublicJwk {
        family: KeyFamily::EcP256,
        n: None,
        e: None,
        x: client.jwk["x"].as_str(),
        y: client.jwk["y"].as_str(),
    };
    let es256 = [Algorithm::ES256].into_iter().collect();
    group.bench_function(BenchmarkId::new("key", "ES256"), |b| {
        b.iter(|| {
            (
                jwks::verifying_key(black_box(&public), None, es256).unwrap(),
                dpop::jwk_thumbprint(black_box(&client.jwk)).unwrap(),
            )
        })
    });
    let jtis: Vec<String> = (0..REPLAY_FILL as u64)
        .map(|n| format!("bench-{n:016}"))
        .collect();
    let last_accepted = window.last_accepted(now);
    group.bench_function(BenchmarkId::new("replay", "insert"), |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                let batch = left.min(REPLAY_FILL);
                // Room for twice the fill, so no shard is ever full: each
                // insert is a new proof accepted.
                let replay = DpopReplay::local(2 * REPLAY_FILL);
                let start = Instant::now();
                for jti in &jtis[..batch] {
                    let remembered = replay.check(&client.jkt, black_box(jti), last_accepted, now);
                    assert!(ready(remembered).is_ok());
                }
                spent += start.elapsed();
                left -= batch;
            }
            spent
        })
    });
    group.finish();

    let (pipeline, snapshot) = pipeline_fixture();
    let authorization = format!("DPoP {token}");
    let with_proof = |n| {
        let mut headers = pipeline_headers(&authorization);
        let proof = client.proof(PIPELINE_HTU, &token, n);
        headers.insert("dpop", proof.parse().unwrap());
        headers
    };
    let first = with_proof(0);
    assert!(forwarded(&decide(&pipeline, &snapshot, &first)));
    // The replay cache is on the path measured: a proof passes once.
    assert!(!forwarded(&decide(&pipeline, &snapshot, &first)));
    let mut n = 0;
    let mut fresh = |count: u64| -> Vec<http::HeaderMap> {
        (0..count)
            .map(|_| {
                n += 1;
                with_proof(n)
            })
            .collect()
    };
    c.bench_function("pipeline/decide/dpop", |b| {
        b.iter_batched_ref(
            || fresh(1).pop().unwrap(),
            |headers| assert!(forwarded(&decide(&pipeline, &snapshot, headers))),
            criterion::BatchSize::SmallInput,
        )
    });
    // The whole DPoP decision against the proof's bare signature check.
    c.bench_function("pipeline/decide/dpop/interleaved", |b| {
        b.iter_custom(|iters| {
            let requests = fresh(iters);
            let mut next = requests.iter();
            interleave(
                iters,
                ratios,
                "DPoP decision",
                || {
                    let headers = next.next().unwrap();
                    assert!(forwarded(&decide(&pipeline, &snapshot, headers)));
                },
                raw_check,
            )
        })
    });
}

fn bench_route_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route/lookup");
    let method = http::Method::GET;
    for count in [1usize, 100, 10_000] {
        let mut router = Router::default();
        for i in 0..count - 1 {
            router.add(None, &format!("/service-{i}/api"), None, i);
        }
        router.add(None, "/orders/api", Some(vec![http::Method::GET]), count);
        let path = "/orders/api/v2/items/42";
        assert_eq!(
            router.find(Some("api.example.com"), path, &method),
            Some(&count)
        );
        group.bench_function(BenchmarkId::from_parameter(count), |b| {
            b.iter(|| router.find(black_box(Some("api.example.com")), black_box(path), &method))
        });
    }
    group.finish();
}

/// The canonical request target every request computes before routing: an
/// already canonical path (the common case, which borrows everything) and
/// one that needs decoding and dot-segment resolution.
fn bench_canonical_target(c: &mut Criterion) {
    let mut group = c.benchmark_group("request/canonical");
    let rules = PathRules::default();
    let hosts: [&[u8]; 1] = [b"api.example.com"];
    for (name, target) in [
        ("canonical", &b"/orders/api/v2/items/42?expand=lines"[..]),
        (
            "rewritten",
            &b"/orders/./api//v2/%69tems/x/../42?expand=lines"[..],
        ),
    ] {
        let canonical = RequestTarget::new(None, target, hosts.iter().copied(), &rules)
            .expect("a valid target");
        assert_eq!(canonical.route_path(), "/orders/api/v2/items/42");
        group.bench_function(name, |b| {
            b.iter(|| {
                RequestTarget::new(None, black_box(target), hosts.iter().copied(), &rules)
                    .map(|t| t.upstream_target())
            })
        });
    }
    group.finish();
}

fn bench_header_rewrite(c: &mut Criterion) {
    let yaml = format!(
        r#"
issuers:
  - name: main
    issuer: {ISS}
    algorithms: [RS256]
    audiences: [api]
    jwks_file: {jwks}
routes:
  - name: api
    match: {{ path_prefix: /api }}
    upstream: {{ addrs: ["127.0.0.1:9"] }}
    forward:
      claims: {{ sub: X-User-Id, scope: X-User-Scopes, email: X-User-Email, realm_access.roles: X-User-Roles }}
      strip_authorization: true
"#,
        jwks = fixtures().join("jwks.json").display()
    );
    let path = Path::new("bench.yaml");
    let config = jwtgate::config::parse(path, &yaml, &|_| None).unwrap();
    let snapshot = jwtgate::assemble::compile(path, config).unwrap();
    let route = snapshot.routes[0].clone();
    let token = token(Algorithm::RS256);
    let identity = route
        .policy
        .authorize(&token, &snapshot.issuers, now(), 8192, None, &mut ())
        .unwrap();
    let mut request = RequestHeader::build("GET", b"/api/orders?page=2", None).unwrap();
    for (name, value) in [
        ("host", "api.example.com"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) bench"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, br"),
        ("authorization", &format!("Bearer {token}")),
        ("x-user-id", "spoofed"),
        ("cookie", "session=abc; theme=dark"),
    ] {
        request.append_header(name, value).unwrap();
    }
    let client = Some(ClientAddress::direct("192.0.2.10".parse().unwrap()));
    c.bench_function("headers/rewrite", |b| {
        b.iter_batched_ref(
            || request.clone(),
            |request| {
                headers::rewrite(
                    request,
                    &Forwarding {
                        route: &route,
                        identity_headers: &snapshot.identity_headers,
                        identity: Some(&identity),
                        request_id: &http::HeaderValue::from_static(
                            "0f8e2b6c-1d2a-4c1e-9a7b-5d3c2b1a0f9e",
                        ),
                        client,
                        scheme: Scheme::Http,
                        client_cert_header: None,
                        replaces_trace_context: false,
                    },
                )
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

fn print_ratios(ratios: &Ratios) {
    println!("\nfull verification / raw signature check, interleaved samples:");
    for (alg, samples) in ratios.borrow_mut().iter_mut() {
        samples.sort_by(f64::total_cmp);
        println!(
            "  {alg:<6} median {:.3}   quartiles {:.3}–{:.3}   ({} samples)",
            quantile(samples, 0.5),
            quantile(samples, 0.25),
            quantile(samples, 0.75),
            samples.len()
        );
    }
    println!("\nfull verification / raw signature check (separate means):");
    for alg in ALGORITHMS {
        if let (Some(full), Some(raw)) = (
            estimate(&format!("verify/full/{alg}")),
            estimate(&format!("verify/raw/{alg}")),
        ) {
            println!(
                "  {alg:<6} full {:>9.2} µs   raw {:>9.2} µs   ratio {:.3}",
                full / 1000.0,
                raw / 1000.0,
                full / raw
            );
        }
    }
    // criterion names the directory of group "route/lookup" route_lookup.
    let lookups = (estimate("route_lookup/1"), estimate("route_lookup/10000"));
    if let (Some(one), Some(many)) = lookups {
        println!("route lookup: 10 000 routes / 1 route = {:.2}", many / one);
    }
    print_dpop();
}

/// What a DPoP request adds, and its parts.
fn print_dpop() {
    let us = |id: &str| estimate(id).map(|ns| ns / 1000.0);
    let parts = (
        us("dpop/proof/ES256"),
        us("verify/raw/ES256"),
        us("dpop/key/ES256"),
        us("dpop/replay/insert"),
    );
    if let (Some(proof), Some(raw), Some(key), Some(replay)) = parts {
        println!(
            "\nDPoP proof (ES256): {proof:.2} µs, of which the signature check {raw:.2} µs \
             and the jwk made into a key with its thumbprint {key:.2} µs; \
             the replay cache {replay:.3} µs"
        );
    }
    if let (Some(bearer), Some(dpop)) = (us("pipeline_decide"), us("pipeline_decide_dpop")) {
        println!(
            "pipeline/decide: {bearer:.2} µs bearer, {dpop:.2} µs DPoP: +{:.2} µs",
            dpop - bearer
        );
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    let ratios = Ratios::default();
    bench_verify(&mut criterion, &ratios);
    bench_parse(&mut criterion);
    bench_cache_hit(&mut criterion);
    bench_route_lookup(&mut criterion);
    bench_canonical_target(&mut criterion);
    bench_header_rewrite(&mut criterion);
    bench_pipeline(&mut criterion);
    bench_dpop(&mut criterion, &ratios);
    criterion.final_summary();
    print_ratios(&ratios);
}
