//! What an identity token costs per request.
//!
//! `cargo bench --bench identity` measures, for a verified token and a
//! route sending `forward.identity_token`:
//! - `identity/reused`: the token signed for it earlier, found again (what
//!   every request after the first pays while the token lives);
//! - `identity/sign/<alg>`: a new one signed with an ES256, EdDSA or RS256
//!   key (what the first request of each token and route pays, and each
//!   renewal at half its lifetime).

use std::hint::black_box;
use std::process::Command;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion};
use http::HeaderName;
use jwtgate::auth::json::JsonObject;
use jwtgate::auth::verify::VerifierId;
use jwtgate::auth::{IssuerVerifier, VerifiedToken};
use jwtgate::identity::{IdentityTokenPlan, IdentityTokens};
use jwtgate::jose::{Algorithm, AlgorithmSet};
use jwtgate::keys::{KeySet, KeyStore};
use jwtgate::mint::Signer;

const NOW: i64 = 1_800_000_000;

fn key(args: &[&str]) -> Vec<u8> {
    let output = Command::new("openssl")
        .arg("genpkey")
        .args(args)
        .output()
        .expect("openssl on PATH");
    assert!(output.status.success(), "{output:?}");
    output.stdout
}

fn tokens(pem: &[u8], algorithm: Algorithm) -> IdentityTokens {
    let signer = Signer::from_bytes(pem, algorithm).expect("a signing key");
    IdentityTokens::new("https://gateway.bench".into(), vec![("k".into(), signer)]).unwrap()
}

fn caller() -> Arc<VerifiedToken> {
    let claims = serde_json::json!({
        "iss": "https://issuer.bench", "sub": "alice", "aud": "api", "exp": NOW + 3600,
        "scope": "orders:read orders:write", "azp": "web", "email": "alice@example.com",
    });
    Arc::new(VerifiedToken {
        issuer: 0,
        algorithm: Some(Algorithm::RS256),
        claims: JsonObject::parse(claims.to_string().as_bytes()).unwrap(),
        exp: Some(NOW + 3600),
        nbf: None,
        iat: None,
        key_generation: 0,
        verifier: VerifierId::fresh(),
        bound: false,
    })
}

fn bench(c: &mut Criterion) {
    let issuer = IssuerVerifier::new(
        "corp",
        "https://issuer.bench",
        AlgorithmSet::default(),
        vec![],
        KeyStore::fixed(KeySet::default()),
    );
    let plan = IdentityTokenPlan {
        header: HeaderName::from_static("x-jwtgate-identity"),
        audience: "orders".into(),
        ttl_secs: 60,
        claims: vec!["email".into()],
    };
    let caller = caller();
    let mut group = c.benchmark_group("identity");
    let p256 = tokens(
        &key(&["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]),
        Algorithm::ES256,
    );
    let first = p256.header_value(&plan, 0, &caller, &issuer, NOW).unwrap();
    group.bench_function("reused", |b| {
        b.iter(|| {
            let value = p256.header_value(&plan, black_box(0), black_box(&caller), &issuer, NOW);
            debug_assert_eq!(value.as_ref(), Some(&first));
            value
        })
    });
    let ed = tokens(&key(&["-algorithm", "ED25519"]), Algorithm::EdDSA);
    let rsa = tokens(
        &key(&["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
        Algorithm::RS256,
    );
    for (name, tokens) in [("ES256", &p256), ("EdDSA", &ed), ("RS256", &rsa)] {
        // A new route each time: never reused, always signed.
        let mut route = 1;
        group.bench_function(BenchmarkId::new("sign", name), |b| {
            b.iter(|| {
                route += 1;
                tokens.header_value(&plan, route, &caller, &issuer, NOW)
            })
        });
    }
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
}
