//! JWK Set parsing (RFC 7517), into [`VerifyingKey`]s restricted to the
//! issuer's algorithm allow-list. Keys that cannot be used are skipped with a
//! stated reason rather than failing the whole set, because identity
//! providers routinely publish encryption keys and algorithms we don't use.

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaParameters, RsaPublicKeyComponents};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::Value;

use super::{KeyError, KeySet, MIN_RSA_MODULUS_BITS, VerifyingKey};
use crate::jose::{Algorithm, AlgorithmSet, KeyFamily};

/// A key that was left out, and why (for logs and `jwtgate check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    pub kid: Option<String>,
    pub why: String,
    /// The key material itself is unacceptable (weak, unsupported, secret),
    /// as opposed to a key simply not meant for this issuer's tokens.
    pub refused: bool,
}

#[derive(Debug)]
pub struct ParsedJwks {
    pub keys: KeySet,
    pub skipped: Vec<SkippedKey>,
}

/// The members of a JWK that matter for verification. Private members (`d`,
/// `p`, ...) are deliberately not read: a JWKS is public by definition.
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

/// Parses a JWK Set document. Fails only when the document itself is not a
/// JWK Set; individual unusable keys land in `skipped`.
pub fn parse(document: &Value, allowed: AlgorithmSet) -> Result<ParsedJwks, KeyError> {
    let Some(entries) = document.get("keys").and_then(Value::as_array) else {
        return Err(KeyError(
            "not a JWK Set: expected an object with a \"keys\" array".into(),
        ));
    };
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for entry in entries {
        let kid = entry.get("kid").and_then(Value::as_str).map(str::to_owned);
        let outcome = Jwk::deserialize(entry)
            .map_err(|e| Skip::Refused(format!("not a valid JWK: {e}")))
            .and_then(|jwk| to_key(jwk, allowed));
        match outcome {
            Ok(key) => keys.push(key),
            Err(Skip::Inapplicable(why)) => skipped.push(SkippedKey {
                kid,
                why,
                refused: false,
            }),
            Err(Skip::Refused(why)) => skipped.push(SkippedKey {
                kid,
                why,
                refused: true,
            }),
        }
    }
    Ok(ParsedJwks {
        keys: KeySet { keys },
        skipped,
    })
}

fn to_key(jwk: Jwk, allowed: AlgorithmSet) -> Result<VerifyingKey, Skip> {
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return Err(Skip::Inapplicable(format!(
            "use {:?} is not \"sig\"",
            jwk.use_.unwrap_or_default()
        )));
    }
    let family = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("RSA", _) => KeyFamily::Rsa,
        ("EC", Some("P-256")) => KeyFamily::EcP256,
        ("EC", Some("P-384")) => KeyFamily::EcP384,
        ("OKP", Some("Ed25519")) => KeyFamily::Ed25519,
        ("oct", _) => {
            return Err(Skip::Refused(
                "symmetric (oct) keys are not accepted from a JWKS; configure hmac_secret_env or hmac_secret_file".into(),
            ));
        }
        (kty, crv) => {
            return Err(Skip::Refused(format!(
                "unsupported key type kty={kty:?} crv={:?}",
                crv.unwrap_or("")
            )));
        }
    };
    let algorithms = usable_algorithms(family, jwk.alg.as_deref(), allowed)?;
    let members = PublicJwk {
        family,
        n: jwk.n.as_deref(),
        e: jwk.e.as_deref(),
        x: jwk.x.as_deref(),
        y: jwk.y.as_deref(),
    };
    public_key(&members, jwk.kid, algorithms)
}

/// The public members of a JWK of a known family, as the JWK spells them.
#[derive(Debug, Clone, Copy)]
pub struct PublicJwk<'a> {
    pub family: KeyFamily,
    pub n: Option<&'a str>,
    pub e: Option<&'a str>,
    pub x: Option<&'a str>,
    pub y: Option<&'a str>,
}

/// A verifying key for `algorithms` (all of `jwk.family`) from a JWK's
/// public members: the same checks (RSA modulus size, EC coordinate
/// lengths, point on the curve) whether the JWK came from an issuer's JWKS
/// or a DPoP proof's header.
pub fn verifying_key(
    jwk: &PublicJwk<'_>,
    kid: Option<String>,
    algorithms: AlgorithmSet,
) -> Result<VerifyingKey, KeyError> {
    public_key(jwk, kid, algorithms).map_err(|skip| match skip {
        Skip::Inapplicable(why) | Skip::Refused(why) => KeyError(why),
    })
}

fn public_key(
    jwk: &PublicJwk<'_>,
    kid: Option<String>,
    algorithms: AlgorithmSet,
) -> Result<VerifyingKey, Skip> {
    let family = jwk.family;
    let key = match family {
        KeyFamily::Rsa => {
            let n = decode(jwk.n, "n")?;
            let e = decode(jwk.e, "e")?;
            let n = strip_leading_zeros(&n);
            let bits = n.len() * 8 - n.first().map_or(0, |b| b.leading_zeros() as usize);
            if bits < MIN_RSA_MODULUS_BITS {
                return Err(Skip::Refused(format!(
                    "RSA modulus is {bits} bits; at least {MIN_RSA_MODULUS_BITS} are required"
                )));
            }
            let components = RsaPublicKeyComponents { n, e: &e[..] };
            VerifyingKey::public(kid, family, algorithms, |alg| {
                components
                    .to_parsed_public_key(rsa_parameters(alg))
                    .map_err(|e| KeyError(format!("invalid RSA key: {e}")))
            })
        }
        KeyFamily::EcP256 | KeyFamily::EcP384 => {
            let coordinate_len = if family == KeyFamily::EcP256 { 32 } else { 48 };
            let x = decode(jwk.x, "x")?;
            let y = decode(jwk.y, "y")?;
            if x.len() != coordinate_len || y.len() != coordinate_len {
                return Err(Skip::Refused(format!(
                    "EC coordinates must be {coordinate_len} bytes each"
                )));
            }
            // SEC 1 uncompressed point: 0x04 || x || y.
            let mut point = Vec::with_capacity(1 + 2 * coordinate_len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            VerifyingKey::public(kid, family, algorithms, |alg| {
                let params = if alg == Algorithm::ES256 {
                    &signature::ECDSA_P256_SHA256_FIXED
                } else {
                    &signature::ECDSA_P384_SHA384_FIXED
                };
                ParsedPublicKey::new(params, &point)
                    .map_err(|e| KeyError(format!("invalid EC key: {e}")))
            })
        }
        KeyFamily::Ed25519 => {
            let x = decode(jwk.x, "x")?;
            VerifyingKey::public(kid, family, algorithms, |_| {
                ParsedPublicKey::new(&signature::ED25519, &x)
                    .map_err(|e| KeyError(format!("invalid Ed25519 key: {e}")))
            })
        }
        KeyFamily::Hmac => return Err(Skip::Refused("not a public key".into())),
    };
    key.map_err(Skip::from)
}

/// Why a key was left out: it isn't meant for us (an encryption key, an
/// algorithm this issuer doesn't use), or its material is unacceptable.
enum Skip {
    Inapplicable(String),
    Refused(String),
}

impl From<KeyError> for Skip {
    fn from(error: KeyError) -> Self {
        Skip::Refused(error.0)
    }
}

/// The algorithms a key may verify: its own `alg` when it names one (which
/// must fit the key type and be allowed), else every allowed algorithm of its
/// family.
fn usable_algorithms(
    family: KeyFamily,
    own_alg: Option<&str>,
    allowed: AlgorithmSet,
) -> Result<AlgorithmSet, Skip> {
    let set: AlgorithmSet = match own_alg {
        Some(name) => {
            let alg: Algorithm = name
                .parse()
                .map_err(|_| Skip::Refused(format!("unsupported alg {name:?}")))?;
            if alg.family() != family {
                return Err(Skip::Refused(format!(
                    "alg {alg} does not fit the key type"
                )));
            }
            if !allowed.contains(alg) {
                return Err(Skip::Inapplicable(format!(
                    "alg {alg} is not in the issuer's algorithms"
                )));
            }
            [alg].into_iter().collect()
        }
        None => allowed.iter().filter(|a| a.family() == family).collect(),
    };
    if set.is_empty() {
        return Err(Skip::Inapplicable(
            "none of the issuer's algorithms can use this key type".into(),
        ));
    }
    Ok(set)
}

fn rsa_parameters(alg: Algorithm) -> &'static RsaParameters {
    match alg {
        Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
        other => unreachable!("{other} is not an RSA algorithm"),
    }
}

fn decode(value: Option<&str>, member: &str) -> Result<Vec<u8>, Skip> {
    let value = value.ok_or_else(|| Skip::Refused(format!("missing member {member:?}")))?;
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| Skip::Refused(format!("member {member:?} is not base64url")))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixture_keys() -> Vec<Value> {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/keys/jwks.json"
        ))
        .unwrap();
        let document: Value = serde_json::from_str(&text).unwrap();
        document["keys"].as_array().unwrap().clone()
    }

    fn key(kid: &str) -> Value {
        fixture_keys()
            .into_iter()
            .find(|k| k["kid"] == kid)
            .unwrap()
    }

    fn all() -> AlgorithmSet {
        Algorithm::ALL.into_iter().collect()
    }

    #[test]
    fn skips_what_cannot_verify_and_says_why() {
        let mut enc = key("rsa-1");
        enc["use"] = json!("enc");
        enc["kid"] = json!("enc-1");
        let document = json!({"keys": [
            enc,
            {"kty": "oct", "k": "c2VjcmV0", "kid": "oct-1"},
            {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA", "kid": "p521"},
            {"kty": "OKP", "crv": "X25519", "x": "AA", "kid": "x25519"},
            key("ec256-1"),
        ]});
        let parsed = parse(&document, all()).unwrap();
        assert_eq!(parsed.keys.len(), 1);
        let why: Vec<(&str, &str)> = parsed
            .skipped
            .iter()
            .map(|s| (s.kid.as_deref().unwrap(), s.why.as_str()))
            .collect();
        assert_eq!(why.len(), 4);
        assert!(why[0].1.contains("\"enc\""), "{why:?}");
        assert!(why[1].1.contains("oct"), "{why:?}");
        assert!(why[2].1.contains("P-521"), "{why:?}");
        assert!(why[3].1.contains("X25519"), "{why:?}");
    }

    #[test]
    fn a_keys_own_alg_limits_it_and_must_be_allowed() {
        let mut es = key("ec256-1");
        es["alg"] = json!("ES256");
        let parsed = parse(&json!({"keys": [es.clone()]}), all()).unwrap();
        let only: Vec<Algorithm> = parsed.keys.keys[0].algorithms().iter().collect();
        assert_eq!(only, [Algorithm::ES256]);

        let rs_only: AlgorithmSet = [Algorithm::RS256].into_iter().collect();
        let parsed = parse(&json!({"keys": [es.clone()]}), rs_only).unwrap();
        assert!(parsed.keys.is_empty());

        es["alg"] = json!("RS256");
        let parsed = parse(&json!({"keys": [es]}), all()).unwrap();
        assert!(
            parsed.skipped[0].why.contains("does not fit"),
            "{:?}",
            parsed.skipped
        );
    }

    #[test]
    fn rsa_keys_verify_only_the_allowed_rsa_algorithms() {
        let allowed: AlgorithmSet = [Algorithm::RS256, Algorithm::PS384, Algorithm::ES256]
            .into_iter()
            .collect();
        let parsed = parse(&json!({"keys": [key("rsa-1")]}), allowed).unwrap();
        let algorithms: Vec<Algorithm> = parsed.keys.keys[0].algorithms().iter().collect();
        assert_eq!(algorithms, [Algorithm::RS256, Algorithm::PS384]);
    }

    #[test]
    fn duplicate_kids_keep_document_order() {
        let mut second = key("ec256-1");
        second["kid"] = json!("rsa-1");
        let parsed = parse(&json!({"keys": [key("rsa-1"), second]}), all()).unwrap();
        let families: Vec<KeyFamily> = parsed.keys.keys.iter().map(|k| k.family).collect();
        assert_eq!(families, [KeyFamily::Rsa, KeyFamily::EcP256]);
        match parsed.keys.select(Some("rsa-1"), Algorithm::ES256) {
            crate::keys::KeyChoice::Candidates(keys) => {
                let keys: Vec<_> = keys.iter().collect();
                assert_eq!(keys.len(), 1);
                assert_eq!(keys[0].family, KeyFamily::EcP256);
            }
            _ => panic!("the EC key with the duplicate kid should be selected"),
        }
    }

    #[test]
    fn not_a_jwk_set() {
        assert!(parse(&json!({"kty": "RSA"}), all()).is_err());
        assert!(parse(&json!([1, 2]), all()).is_err());
    }
}
