//! Identity tokens signed, reused and published; verified here with the
//! published JWK Set through the gateway's own key parsing, and by a
//! verifier jwtgate does not use in tests/identity_token.rs.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::*;
use crate::auth::json::JsonObject;
use crate::auth::verify::VerifierId;
use crate::jose::{Algorithm, AlgorithmSet};
use crate::keys::{KeySet, KeyStore};

const NOW: i64 = 1_800_000_000;

fn pem(args: &[&str]) -> Vec<u8> {
    let output = std::process::Command::new("openssl")
        .args(["genpkey"])
        .args(args)
        .output()
        .expect("openssl on PATH");
    assert!(output.status.success(), "{output:?}");
    output.stdout
}

fn tokens() -> IdentityTokens {
    let ec = pem(&["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    let ed = pem(&["-algorithm", "ED25519"]);
    let keys = vec![
        (
            "one".to_string(),
            Signer::from_bytes(&ec, Algorithm::ES256).unwrap(),
        ),
        (
            "two".to_string(),
            Signer::from_bytes(&ed, Algorithm::EdDSA).unwrap(),
        ),
    ];
    IdentityTokens::new("https://gateway.test".into(), keys).unwrap()
}

fn issuer() -> IssuerVerifier {
    IssuerVerifier::new(
        "corp",
        "https://idp.test",
        AlgorithmSet::default(),
        vec![],
        KeyStore::fixed(KeySet::default()),
    )
}

fn verified(claims: Value) -> Arc<VerifiedToken> {
    let claims = JsonObject::parse(claims.to_string().as_bytes()).unwrap();
    Arc::new(VerifiedToken {
        issuer: 0,
        algorithm: Some(Algorithm::RS256),
        exp: claims
            .get("exp")
            .and_then(JsonRef::as_f64)
            .map(|e| e as i64),
        nbf: None,
        iat: None,
        claims,
        key_generation: 0,
        verifier: VerifierId::fresh(),
        bound: false,
    })
}

fn plan(audience: &str, ttl_secs: i64, claims: &[&str]) -> IdentityTokenPlan {
    IdentityTokenPlan {
        header: HeaderName::from_static("x-jwtgate-identity"),
        audience: audience.into(),
        ttl_secs,
        claims: claims.iter().map(|c| c.to_string()).collect(),
    }
}

/// The token's header and claims, after checking its signature against
/// the published JWK Set with jwtgate's own JWKS parsing.
fn open(tokens: &IdentityTokens, jwt: &HeaderValue) -> (Value, Value) {
    let jwt = jwt.to_str().unwrap();
    let jwks: Value = serde_json::from_slice(tokens.jwks()).unwrap();
    let algorithms: AlgorithmSet = [Algorithm::ES256, Algorithm::EdDSA].into_iter().collect();
    let keys = crate::keys::jwks::parse(&jwks, algorithms)
        .unwrap()
        .keys
        .keys;
    assert_eq!(keys.len(), 2, "both keys are published: {jwks}");
    let parts: Vec<&str> = jwt.split('.').collect();
    let decode = |part: &str| -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    };
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    let signed = format!("{}.{}", parts[0], parts[1]);
    assert!(
        keys.iter()
            .any(|key| key.verify(Algorithm::ES256, signed.as_bytes(), &signature)),
        "signed with the first key"
    );
    (decode(parts[0]), decode(parts[1]))
}

#[test]
fn an_identity_token_names_the_caller_for_the_backend() {
    let tokens = tokens();
    let incoming = verified(json!({
        "iss": "https://idp.test", "sub": "alice", "exp": NOW + 3600, "scope": "a b",
        "azp": "web-app", "email": "alice@example.com", "org": { "id": 7 }, "secret": "no",
    }));
    let plan = plan("orders", 60, &["email", "org.id"]);
    let jwt = tokens
        .header_value(&plan, 0, &incoming, &issuer(), NOW)
        .unwrap();
    let (header, claims) = open(&tokens, &jwt);
    assert_eq!(
        (header["alg"].as_str(), header["kid"].as_str()),
        (Some("ES256"), Some("one"))
    );
    assert_eq!(claims["iss"], "https://gateway.test");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["aud"], "orders");
    assert_eq!(
        (claims["iat"].as_i64(), claims["exp"].as_i64()),
        (Some(NOW), Some(NOW + 60))
    );
    assert_eq!(claims["scope"], "a b");
    assert_eq!(claims["client_id"], "web-app");
    assert_eq!(claims["original_iss"], "https://idp.test");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["org.id"], 7);
    assert!(claims.get("secret").is_none(), "only the claims asked for");
    assert_eq!(claims["jti"].as_str().map(str::len), Some(32));
}

#[test]
fn it_never_outlives_the_incoming_token() {
    let tokens = tokens();
    let incoming = verified(json!({ "sub": "bob", "exp": NOW + 20 }));
    let jwt = tokens
        .header_value(&plan("orders", 60, &[]), 0, &incoming, &issuer(), NOW)
        .unwrap();
    assert_eq!(open(&tokens, &jwt).1["exp"].as_i64(), Some(NOW + 20));
}

#[test]
fn one_is_reused_while_more_than_half_its_lifetime_is_left() {
    let tokens = tokens();
    let incoming = verified(json!({ "sub": "carol", "exp": NOW + 3600 }));
    let plan = plan("orders", 60, &[]);
    let first = tokens
        .header_value(&plan, 0, &incoming, &issuer(), NOW)
        .unwrap();
    let again = tokens
        .header_value(&plan, 0, &incoming, &issuer(), NOW + 29)
        .unwrap();
    assert_eq!(first, again, "reused");
    let other_route = tokens
        .header_value(&plan, 1, &incoming, &issuer(), NOW)
        .unwrap();
    assert_ne!(first, other_route, "each route has its own");
    let renewed = tokens
        .header_value(&plan, 0, &incoming, &issuer(), NOW + 30)
        .unwrap();
    assert_ne!(first, renewed, "signed anew at half its lifetime");
    assert_eq!(open(&tokens, &renewed).1["iat"].as_i64(), Some(NOW + 30));

    // Another token, even at a reused address, is never given carol's.
    drop(incoming);
    let dave = verified(json!({ "sub": "dave", "exp": NOW + 3600 }));
    let jwt = tokens
        .header_value(&plan, 0, &dave, &issuer(), NOW + 31)
        .unwrap();
    assert_eq!(open(&tokens, &jwt).1["sub"], "dave");
}

#[test]
fn the_discovery_document_points_at_the_jwks() {
    let document: Value = serde_json::from_slice(tokens().discovery()).unwrap();
    assert_eq!(document["issuer"], "https://gateway.test");
    assert_eq!(
        document["jwks_uri"],
        "https://gateway.test/.well-known/jwks.json"
    );
}
