use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::*;
use crate::auth::json::JsonObject;

const NOW: i64 = 1_700_000_000;
const HTU: &str = "https://api.example.com/orders";
const TOKEN: &str = "an-access-token";
const WINDOW: IatWindow = IatWindow {
    past_secs: 60,
    future_secs: 5,
};

/// RFC 9449 §4.1, figure 2: a proof for a token request.
const RFC_TOKEN_REQUEST_PROOF: &str = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ.2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg";

/// RFC 9449 §7.1, figure 13: a proof for a protected resource, with `ath`.
const RFC_RESOURCE_PROOF: &str = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiJlMWozVl9iS2ljOC1MQUVCIiwiaHRtIjoiR0VUIiwiaHR1IjoiaHR0cHM6Ly9yZXNvdXJjZS5leGFtcGxlLm9yZy9wcm90ZWN0ZWRyZXNvdXJjZSIsImlhdCI6MTU2MjI2MjYxOCwiYXRoIjoiZlVIeU8ycjJaM0RaNTNFc05yV0JiMHhXWG9hTnk1OUlpS0NBcWtzbVFFbyJ9.2oW9RP35yRqzhrtNP86L-Ey71EOptxRimPPToA1plemAgR6pxHF8y6-yqyVnmcw6Fy1dqd-jfxSYoMxhAJpLjA";
const RFC_ACCESS_TOKEN: &str = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU";
/// RFC 9449 §6.1: the thumbprint of the examples' key.
const RFC_JKT: &str = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";

fn all_proof_algorithms() -> AlgorithmSet {
    PROOF_ALGORITHMS.into_iter().collect()
}

fn expect<'a>(method: &'a str, htu: &'a str, token: Option<&'a str>) -> ProofExpectations<'a> {
    ProofExpectations {
        method,
        htu,
        access_token: token,
        algorithms: all_proof_algorithms(),
        iat_window: WINDOW,
        nonces: None,
        max_bytes: DEFAULT_MAX_PROOF_BYTES,
    }
}

fn request() -> ProofExpectations<'static> {
    expect("GET", HTU, Some(TOKEN))
}

/// A client's key pair: a fixture private key and its public JWK.
#[derive(Clone)]
struct Client {
    pem: &'static str,
    alg: Algorithm,
    jwk: Value,
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn client(pem: &'static str, kid: &str, alg: Algorithm) -> Client {
    let jwks: Value = serde_json::from_str(&fixture("jwks.json")).unwrap();
    let mut jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .unwrap()
        .clone();
    // A client's key has no kid or use of the issuer's.
    let object = jwk.as_object_mut().unwrap();
    object.remove("kid");
    object.remove("use");
    Client { pem, alg, jwk }
}

fn es256() -> Client {
    client("ec256.pem", "ec256-1", Algorithm::ES256)
}

fn every_client() -> [Client; 4] {
    [
        es256(),
        client("ed25519.pem", "ed25519-1", Algorithm::EdDSA),
        client("rsa.pem", "rsa-1", Algorithm::PS256),
        client("rsa.pem", "rsa-1", Algorithm::RS256),
    ]
}

fn claims() -> Value {
    json!({
        "jti": "a-fresh-jti-0001",
        "htm": "GET",
        "htu": HTU,
        "iat": NOW,
        "ath": access_token_hash(TOKEN),
    })
}

fn header(client: &Client) -> Value {
    json!({"typ": "dpop+jwt", "alg": client.alg.as_str(), "jwk": client.jwk})
}

/// Signs with jsonwebtoken (the signer jwtgate's `token mint` uses, not
/// the verifier under test), over exactly the header and claims given.
fn sign_with(pem: &str, alg: Algorithm, header: &Value, claims: &Value) -> String {
    use jsonwebtoken::{Algorithm as J, EncodingKey};
    let pem = fixture(pem);
    let (key, alg) = match alg {
        Algorithm::ES256 => (EncodingKey::from_ec_pem(pem.as_bytes()), J::ES256),
        Algorithm::EdDSA => (EncodingKey::from_ed_pem(pem.as_bytes()), J::EdDSA),
        Algorithm::PS256 => (EncodingKey::from_rsa_pem(pem.as_bytes()), J::PS256),
        _ => (EncodingKey::from_rsa_pem(pem.as_bytes()), J::RS256),
    };
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &key.unwrap(), alg).unwrap();
    format!("{input}.{signature}")
}

fn proof(client: &Client, header: &Value, claims: &Value) -> String {
    sign_with(client.pem, client.alg, header, claims)
}

fn with(mut value: Value, name: &str, member: Value) -> Value {
    if member.is_null() {
        value.as_object_mut().unwrap().remove(name);
    } else {
        value[name] = member;
    }
    value
}

fn refused(proof: &str, expect: &ProofExpectations<'_>) -> DpopFailure {
    verify_proof(proof, expect, NOW).unwrap_err()
}

#[test]
fn the_rfc_token_request_example_verifies_with_the_rfc_thumbprint() {
    let verified = verify_proof(
        RFC_TOKEN_REQUEST_PROOF,
        &ProofExpectations {
            algorithms: [Algorithm::ES256].into_iter().collect(),
            ..expect("POST", "https://server.example.com/token", None)
        },
        1_562_262_616,
    )
    .unwrap();
    assert_eq!(verified.jkt, RFC_JKT);
    assert_eq!(verified.jti, "-BwC3ESc6acc2lTc");
    assert_eq!(verified.iat, 1_562_262_616);
    assert_eq!(verified.algorithm, Algorithm::ES256);
    let rfc_jwk = json!({
        "kty": "EC",
        "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
        "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
        "crv": "P-256",
    });
    assert_eq!(jwk_thumbprint(&rfc_jwk).as_deref(), Some(RFC_JKT));
    // The same proof sent elsewhere, or too late, is refused.
    let at =
        |method, htu, now| verify_proof(RFC_TOKEN_REQUEST_PROOF, &expect(method, htu, None), now);
    assert_eq!(
        at("GET", "https://server.example.com/token", 1_562_262_616),
        Err(DpopFailure::WrongMethod)
    );
    assert_eq!(
        at(
            "POST",
            "https://server.example.com/token",
            1_562_262_616 + 61
        ),
        Err(DpopFailure::IatOutOfWindow)
    );
}

#[test]
fn the_rfc_resource_example_verifies_with_its_ath() {
    assert_eq!(
        access_token_hash(RFC_ACCESS_TOKEN),
        "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    );
    let htu = "https://resource.example.org/protectedresource";
    let verified = verify_proof(
        RFC_RESOURCE_PROOF,
        &expect("GET", htu, Some(RFC_ACCESS_TOKEN)),
        1_562_262_618,
    )
    .unwrap();
    assert_eq!(verified.jkt, RFC_JKT);
    assert_eq!(verified.jti, "e1j3V_bKic8-LAEB");
    assert_eq!(
        verify_proof(
            RFC_RESOURCE_PROOF,
            &expect("GET", htu, Some("another-token")),
            1_562_262_618
        ),
        Err(DpopFailure::WrongAth)
    );
}

#[test]
fn thumbprints_match_rfc_7638_and_rfc_8037() {
    let rsa = json!({
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    });
    assert_eq!(
        jwk_thumbprint(&rsa).as_deref(),
        Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
    );
    let okp =
        json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
    assert_eq!(
        jwk_thumbprint(&okp).as_deref(),
        Some("kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k")
    );
    for not_a_key in [
        json!({"kty": "oct", "k": "c2VjcmV0"}),
        json!({"kty": "EC", "crv": "P-256", "x": "AA"}),
        json!({"kty": "RSA", "n": 1, "e": "AQAB"}),
        json!("RSA"),
    ] {
        assert_eq!(jwk_thumbprint(&not_a_key), None, "{not_a_key}");
    }
}

#[test]
fn a_proof_of_each_algorithm_verifies_and_names_its_key() {
    for client in every_client() {
        let verified = verify_proof(
            &proof(&client, &header(&client), &claims()),
            &request(),
            NOW,
        )
        .unwrap_or_else(|failure| panic!("{}: {failure}", client.alg));
        assert_eq!(verified.algorithm, client.alg);
        assert_eq!(Some(verified.jkt), jwk_thumbprint(&client.jwk));
        assert_eq!(verified.jti, "a-fresh-jti-0001");
        assert_eq!(verified.iat, NOW);
    }
}

#[test]
fn structure_and_size_are_checked_first() {
    for garbage in ["", "a.b", "a.b.c", "x.y.z.w.v"] {
        assert_eq!(
            refused(garbage, &request()),
            DpopFailure::Malformed,
            "{garbage}"
        );
    }
    let client = es256();
    let long = with(claims(), "pad", json!("x".repeat(DEFAULT_MAX_PROOF_BYTES)));
    assert_eq!(
        refused(&proof(&client, &header(&client), &long), &request()),
        DpopFailure::TooLarge
    );
    let crit = with(header(&client), "crit", json!(["exp"]));
    assert_eq!(
        refused(&proof(&client, &crit, &claims()), &request()),
        DpopFailure::Malformed
    );
}

#[test]
fn typ_must_be_exactly_dpop_jwt() {
    let client = es256();
    for typ in [
        json!("JWT"),
        json!("DPoP+JWT"),
        json!("application/dpop+jwt"),
        Value::Null,
    ] {
        let header = with(header(&client), "typ", typ.clone());
        assert_eq!(
            refused(&proof(&client, &header, &claims()), &request()),
            DpopFailure::BadTyp,
            "{typ}"
        );
    }
}

#[test]
fn none_hmac_and_algorithms_off_the_list_are_refused() {
    let client = es256();
    let unsigned = format!(
        "{}.{}.c2ln",
        URL_SAFE_NO_PAD.encode(with(header(&client), "alg", json!("none")).to_string()),
        URL_SAFE_NO_PAD.encode(claims().to_string())
    );
    assert_eq!(refused(&unsigned, &request()), DpopFailure::AlgNotAllowed);
    // As RFC 7515 writes one: with an empty signature.
    let (input, _) = unsigned.rsplit_once('.').unwrap();
    assert_eq!(
        refused(&format!("{input}."), &request()),
        DpopFailure::AlgNotAllowed
    );

    let secret = fixture("hs256.secret");
    let hmac_header = json!({"typ": "dpop+jwt", "alg": "HS256",
        "jwk": {"kty": "oct", "k": URL_SAFE_NO_PAD.encode(secret.trim())}});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(hmac_header.to_string()),
        URL_SAFE_NO_PAD.encode(claims().to_string())
    );
    let key = jsonwebtoken::EncodingKey::from_secret(secret.trim().as_bytes());
    let signature =
        jsonwebtoken::crypto::sign(input.as_bytes(), &key, jsonwebtoken::Algorithm::HS256).unwrap();
    let hs256 = format!("{input}.{signature}");
    assert_eq!(refused(&hs256, &request()), DpopFailure::AlgNotAllowed);
    // Even a route that lists it can't allow one.
    let careless = ProofExpectations {
        algorithms: Algorithm::ALL.into_iter().collect(),
        ..request()
    };
    assert_eq!(refused(&hs256, &careless), DpopFailure::AlgNotAllowed);

    // A route's subset: ES256 only refuses an RS256 proof that verifies.
    let rsa = client_rs256();
    let es256_only = ProofExpectations {
        algorithms: [Algorithm::ES256].into_iter().collect(),
        ..request()
    };
    let rs256 = proof(&rsa, &header(&rsa), &claims());
    assert_eq!(refused(&rs256, &es256_only), DpopFailure::AlgNotAllowed);
    assert!(verify_proof(&rs256, &request(), NOW).is_ok());
}

#[test]
fn a_routes_algorithms_are_proof_algorithms() {
    let set = proof_algorithms(&[Algorithm::ES256, Algorithm::EdDSA]).unwrap();
    assert!(set.contains(Algorithm::ES256) && !set.contains(Algorithm::RS256));
    assert_eq!(
        proof_algorithms(&[Algorithm::ES256, Algorithm::HS256]),
        Err(Algorithm::HS256)
    );
    assert_eq!(proof_algorithms(&[Algorithm::ES384]), Err(Algorithm::ES384));
}

fn client_rs256() -> Client {
    client("rsa.pem", "rsa-1", Algorithm::RS256)
}

#[test]
fn the_header_key_must_be_a_public_key_of_the_algorithms_family() {
    let client = es256();
    let rsa_jwk = client_rs256().jwk;
    let cases = [
        Value::Null,
        json!("a string"),
        rsa_jwk,
        with(client.jwk.clone(), "crv", json!("P-384")),
        with(client.jwk.clone(), "x", json!("AAAA")),
        with(client.jwk.clone(), "y", json!(7)),
        with(client.jwk.clone(), "kty", Value::Null),
    ];
    for jwk in cases {
        let header = with(header(&client), "jwk", jwk.clone());
        assert_eq!(
            refused(&proof(&client, &header, &claims()), &request()),
            DpopFailure::BadKey,
            "{jwk}"
        );
    }
}

#[test]
fn a_private_key_in_the_header_is_refused() {
    let client = es256();
    for member in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
        let jwk = with(client.jwk.clone(), member, json!("AQAB"));
        let header = with(header(&client), "jwk", jwk);
        assert_eq!(
            refused(&proof(&client, &header, &claims()), &request()),
            DpopFailure::PrivateKey,
            "{member}"
        );
    }
}

#[test]
fn a_proof_signed_by_another_key_than_its_header_names_is_refused() {
    let rsa = client_rs256();
    let impostor = sign_with(
        "rsa-impostor.pem",
        Algorithm::RS256,
        &header(&rsa),
        &claims(),
    );
    assert_eq!(refused(&impostor, &request()), DpopFailure::BadSignature);
    // The thief's own key in the header, the victim's proof's signature.
    let victim = proof(&es256(), &header(&es256()), &claims());
    let rfc_key_header = RFC_TOKEN_REQUEST_PROOF.split('.').next().unwrap();
    let mut parts = victim.split('.');
    parts.next();
    let spliced = format!("{rfc_key_header}.{}", parts.collect::<Vec<_>>().join("."));
    assert_eq!(refused(&spliced, &request()), DpopFailure::BadSignature);
}

#[test]
fn jti_must_be_a_bounded_non_empty_string() {
    let client = es256();
    for jti in [
        Value::Null,
        json!(""),
        json!(42),
        json!("j".repeat(MAX_JTI_BYTES + 1)),
    ] {
        let claims = with(claims(), "jti", jti.clone());
        assert_eq!(
            refused(&proof(&client, &header(&client), &claims), &request()),
            DpopFailure::BadJti,
            "{jti}"
        );
    }
    let longest = with(claims(), "jti", json!("j".repeat(MAX_JTI_BYTES)));
    assert!(verify_proof(&proof(&client, &header(&client), &longest), &request(), NOW).is_ok());
}

#[test]
fn htm_must_be_the_requests_method() {
    let client = es256();
    let made = proof(&client, &header(&client), &claims());
    for method in ["POST", "get", "HEAD"] {
        assert_eq!(
            refused(&made, &expect(method, HTU, Some(TOKEN))),
            DpopFailure::WrongMethod,
            "{method}"
        );
    }
    let no_htm = with(claims(), "htm", Value::Null);
    assert_eq!(
        refused(&proof(&client, &header(&client), &no_htm), &request()),
        DpopFailure::Malformed
    );
}

#[test]
fn htu_must_be_the_requests_uri_after_normalization() {
    let client = es256();
    let made = |htu: &str| {
        proof(
            &client,
            &header(&client),
            &with(claims(), "htu", json!(htu)),
        )
    };
    for other in [
        "https://api.example.com/orders/1",
        "https://api.example.com/order",
        "http://api.example.com/orders",
        "https://api.example.com:8443/orders",
        "https://evil.example.com/orders",
        "https://user@api.example.com/orders",
        "/orders",
        "https://api.example.com/%2forders",
    ] {
        assert_eq!(
            refused(&made(other), &request()),
            DpopFailure::WrongUri,
            "{other}"
        );
    }
    // RFC 9449 §4.3: query and fragment are ignored; RFC 3986 §6.2.2-3
    // normalization applies to both sides.
    for same in [
        "HTTPS://API.Example.COM:443/orders",
        "https://api.example.com/orders?page=2",
        "https://api.example.com/orders#top",
        "https://api.example.com/./v1/../orders",
        "https://api.example.com/%6Frders",
    ] {
        assert!(verify_proof(&made(same), &request(), NOW).is_ok(), "{same}");
    }
    let htu_number = with(claims(), "htu", json!(1));
    assert_eq!(
        refused(&proof(&client, &header(&client), &htu_number), &request()),
        DpopFailure::Malformed
    );
}

#[test]
fn htu_normalization() {
    let cases = [
        ("HTTP://Host:80", Some("http://host/")),
        ("https://host:443/a/b/", Some("https://host/a/b/")),
        ("https://host:0443/", Some("https://host/")),
        ("https://host:/x", Some("https://host/x")),
        ("https://host:8443/x?q#f", Some("https://host:8443/x")),
        ("https://[::1]:8443/x", Some("https://[::1]:8443/x")),
        ("https://[::1]/x", Some("https://[::1]/x")),
        (
            "https://h/a/%7e%2f%41/./b/../c/.",
            Some("https://h/a/~%2FA/c/"),
        ),
        ("https://h/a/..", Some("https://h/")),
        ("https://h/%zz", None),
        ("https://h/%4", None),
        ("ftp://h/", None),
        ("https:///x", None),
        ("https://h:99999/", None),
        ("https://h:-1/", None),
        ("https://u:p@h/", None),
        ("https://a:b:80/", None),
        ("https://[::1/", None),
        ("https://a]:80/", None),
    ];
    for (uri, normalized) in cases {
        assert_eq!(normalize_htu(uri).as_deref(), normalized, "{uri}");
    }
}

#[test]
fn iat_must_be_within_the_window() {
    let client = es256();
    let at = |iat: i64| {
        proof(
            &client,
            &header(&client),
            &with(claims(), "iat", json!(iat)),
        )
    };
    for iat in [NOW - 60, NOW, NOW + 5] {
        assert!(verify_proof(&at(iat), &request(), NOW).is_ok(), "{iat}");
    }
    for iat in [NOW - 61, NOW + 6, 0] {
        assert_eq!(
            refused(&at(iat), &request()),
            DpopFailure::IatOutOfWindow,
            "{iat}"
        );
    }
    for iat in [Value::Null, json!("1700000000"), json!(-1)] {
        let claims = with(claims(), "iat", iat.clone());
        assert_eq!(
            refused(&proof(&client, &header(&client), &claims), &request()),
            DpopFailure::Malformed,
            "{iat}"
        );
    }
    assert_eq!(WINDOW.last_accepted(NOW), NOW + 60);
}

#[test]
fn ath_must_hash_the_access_token_sent_with_the_proof() {
    let client = es256();
    let without = proof(
        &client,
        &header(&client),
        &with(claims(), "ath", Value::Null),
    );
    assert_eq!(refused(&without, &request()), DpopFailure::MissingAth);
    // Without an access token (a token endpoint) no ath is needed.
    assert!(verify_proof(&without, &expect("GET", HTU, None), NOW).is_ok());
    let other = proof(
        &client,
        &header(&client),
        &with(claims(), "ath", json!(access_token_hash("a-stolen-token"))),
    );
    assert_eq!(refused(&other, &request()), DpopFailure::WrongAth);
    let padded = proof(
        &client,
        &header(&client),
        &with(
            claims(),
            "ath",
            json!(format!("{}=", access_token_hash(TOKEN))),
        ),
    );
    assert_eq!(refused(&padded, &request()), DpopFailure::WrongAth);
}

#[test]
fn a_route_requiring_nonces_takes_only_current_ones() {
    let nonces = NonceSource::new(Duration::from_secs(300));
    let route = ProofExpectations {
        nonces: Some(&nonces),
        ..request()
    };
    let client = es256();
    let with_nonce = |nonce: &str| {
        proof(
            &client,
            &header(&client),
            &with(claims(), "nonce", json!(nonce)),
        )
    };
    assert_eq!(
        refused(&proof(&client, &header(&client), &claims()), &route),
        DpopFailure::NonceRequired
    );
    assert!(verify_proof(&with_nonce(&nonces.current(NOW)), &route, NOW).is_ok());
    let elsewhere = NonceSource::new(Duration::from_secs(300));
    assert_eq!(
        refused(&with_nonce(&elsewhere.current(NOW)), &route),
        DpopFailure::BadNonce
    );
    assert_eq!(
        refused(&with_nonce("made-up"), &route),
        DpopFailure::BadNonce
    );
}

#[test]
fn nonces_rotate_and_the_previous_one_stays_good() {
    let mut now = NOW - NOW % 300;
    let nonces = NonceSource::new(Duration::from_secs(300));
    let first = nonces.current(now);
    assert!(nonces.accepts(&first, now));
    now += 299;
    assert_eq!(nonces.current(now), first, "one nonce per period");
    now += 1;
    let second = nonces.current(now);
    assert_ne!(second, first);
    assert!(
        nonces.accepts(&first, now),
        "the previous period's is accepted"
    );
    assert!(nonces.accepts(&second, now));
    now += 300;
    assert!(!nonces.accepts(&first, now), "two periods back is refused");
    assert!(nonces.accepts(&second, now));

    // A nonce from the future, or tampered with, is refused.
    let mut future = URL_SAFE_NO_PAD.decode(nonces.current(now)).unwrap();
    future[7] += 1;
    assert!(!nonces.accepts(&URL_SAFE_NO_PAD.encode(&future), now));
    let mut tampered = URL_SAFE_NO_PAD.decode(nonces.current(now)).unwrap();
    tampered[20] ^= 1;
    assert!(!nonces.accepts(&URL_SAFE_NO_PAD.encode(&tampered), now));
    for garbage in ["", "AAAA", &"A".repeat(32), &"!".repeat(32)] {
        assert!(!nonces.accepts(garbage, now), "{garbage}");
    }

    // Replicas sharing a secret accept each other's nonces.
    let a = NonceSource::with_secret(b"a shared secret", Duration::from_secs(60));
    let b = NonceSource::with_secret(b"a shared secret", Duration::from_secs(60));
    assert!(b.accepts(&a.current(now), now));
    assert!(!format!("{a:?}").contains("secret"));
}

#[test]
fn a_token_bound_to_a_key_needs_a_proof_of_that_key() {
    let client = es256();
    let proof = verify_proof(
        &proof(&client, &header(&client), &claims()),
        &request(),
        NOW,
    )
    .unwrap();
    let token = |claims: Value| JsonObject::parse(claims.to_string().as_bytes()).unwrap();
    let bound = token(json!({"sub": "a", "cnf": {"jkt": proof.jkt}}));
    let bound_elsewhere = token(json!({"cnf": {"jkt": RFC_JKT}}));
    let unbound = token(json!({"sub": "a"}));
    let certificate_bound =
        token(json!({"cnf": {"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}}));
    assert_eq!(check_binding(&bound, Some(&proof)), Ok(()));
    assert_eq!(check_binding(&bound, None), Err(DpopFailure::MissingProof));
    assert_eq!(
        check_binding(&bound_elsewhere, Some(&proof)),
        Err(DpopFailure::KeyMismatch),
        "a stolen token with the thief's own proof"
    );
    assert_eq!(check_binding(&unbound, None), Ok(()));
    assert_eq!(
        check_binding(&unbound, Some(&proof)),
        Err(DpopFailure::KeyMismatch)
    );
    assert_eq!(check_binding(&certificate_bound, None), Ok(()));
    assert_eq!(
        check_binding(&certificate_bound, Some(&proof)),
        Err(DpopFailure::KeyMismatch)
    );
    let odd = token(json!({"cnf": {"jkt": 7}}));
    assert_eq!(check_binding(&odd, None), Err(DpopFailure::MissingProof));
    assert_eq!(
        check_binding(&odd, Some(&proof)),
        Err(DpopFailure::KeyMismatch)
    );
}

#[test]
fn each_failure_has_its_own_snake_case_label() {
    let mut seen = std::collections::HashSet::new();
    for (i, failure) in DpopFailure::ALL.into_iter().enumerate() {
        assert_eq!(failure as usize, i, "ALL is in the order of the variants");
        let label = failure.as_str();
        assert!(seen.insert(label), "duplicate label {label}");
        assert!(label.starts_with("dpop_"), "{label}");
        assert!(label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
    }
    assert_eq!(DpopFailure::Replayed.to_string(), "dpop_replayed");
    assert_eq!(
        DpopFailure::NonceRequired.error_code(),
        Some("use_dpop_nonce")
    );
    assert_eq!(
        DpopFailure::BadSignature.error_code(),
        Some("invalid_dpop_proof")
    );
    assert_eq!(DpopFailure::ReplayUnavailable.status(), 503);
    assert_eq!(DpopFailure::MultipleProofs.status(), 400);
    assert_eq!(DpopFailure::WrongAth.status(), 401);
}

proptest::proptest! {
    /// Normalizing is idempotent, and a query or fragment never matters:
    /// what is compared is a fixed point, whatever the client wrote.
    #[test]
    fn htu_normalization_is_a_fixed_point(
        scheme in "(?i:https?)",
        host in "[A-Za-z0-9.:\\[\\]-]{0,12}",
        port in proptest::option::of("[0-9]{0,6}"),
        path in "(/([A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2}|%|\\.|\\.\\.){0,4}){0,5}",
        tail in "([?#][ -~]{0,8})?",
    ) {
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        let uri = format!("{scheme}://{host}{port}{path}");
        let normalized = normalize_htu(&uri);
        if let Some(once) = &normalized {
            let twice = normalize_htu(once);
            proptest::prop_assert_eq!(twice.as_ref(), Some(once), "{}", uri);
        }
        proptest::prop_assert_eq!(normalize_htu(&format!("{uri}{tail}")), normalized);
    }
}
