//! The public key a proof carries in its header (`jwk`), and its RFC 7638
//! thumbprint, the value a bound token's `cnf.jkt` names.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use super::DpopFailure;
use crate::auth::json::{JsonObject, JsonRef, Members};
use crate::digest::sha256;
use crate::jose::{Algorithm, KeyFamily};
use crate::keys::VerifyingKey;
use crate::keys::jwks::{PublicJwk, verifying_key};

/// JWK members that only a private (or symmetric) key has (RFC 7518 §6.2.2,
/// §6.3.2, §6.4.1; RFC 8037 §2): a proof that sends one has leaked its key.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// A proof's key, ready to verify its signature, and its thumbprint.
pub(super) struct ProofKey {
    pub verifier: VerifyingKey,
    pub thumbprint: String,
}

impl ProofKey {
    /// The header's `jwk`: present, public, of the family `alg` signs with.
    pub fn from_header(header: &JsonObject, alg: Algorithm) -> Result<Self, DpopFailure> {
        let jwk = header
            .get("jwk")
            .and_then(JsonRef::as_object)
            .ok_or(DpopFailure::BadKey)?;
        if PRIVATE_MEMBERS.iter().any(|name| jwk.get(name).is_some()) {
            return Err(DpopFailure::PrivateKey);
        }
        let member = |name| match jwk.get(name) {
            None => Ok(None),
            Some(JsonRef::String(value)) => Ok(Some(value)),
            Some(_) => Err(DpopFailure::BadKey),
        };
        let family = match (member("kty")?, member("crv")?) {
            (Some("EC"), Some("P-256")) => KeyFamily::EcP256,
            (Some("OKP"), Some("Ed25519")) => KeyFamily::Ed25519,
            (Some("RSA"), None) => KeyFamily::Rsa,
            (Some("oct"), _) => return Err(DpopFailure::PrivateKey),
            _ => return Err(DpopFailure::BadKey),
        };
        if family != alg.family() {
            return Err(DpopFailure::BadKey);
        }
        let public = PublicJwk {
            family,
            n: member("n")?,
            e: member("e")?,
            x: member("x")?,
            y: member("y")?,
        };
        let verifier = verifying_key(&public, None, [alg].into_iter().collect())
            .map_err(|_| DpopFailure::BadKey)?;
        let thumbprint = thumbprint(|name| jwk_member(jwk, name)).ok_or(DpopFailure::BadKey)?;
        Ok(Self {
            verifier,
            thumbprint,
        })
    }
}

fn jwk_member<'a>(jwk: Members<'a>, name: &str) -> Option<&'a str> {
    jwk.get(name).and_then(JsonRef::as_str)
}

/// The RFC 7638 thumbprint of a public JWK (SHA-256, base64url), as a
/// token's `cnf.jkt` states it; `None` for a JWK that isn't an RSA, EC or
/// OKP key with its required members as strings.
pub fn jwk_thumbprint(jwk: &Value) -> Option<String> {
    let jwk = jwk.as_object()?;
    thumbprint(|name| jwk.get(name).and_then(Value::as_str))
}

/// RFC 7638 §3: the required members only, in lexicographic order, as
/// JSON without whitespace, hashed.
fn thumbprint<'a>(member: impl Fn(&str) -> Option<&'a str>) -> Option<String> {
    let required: &[&str] = match member("kty")? {
        "EC" => &["crv", "kty", "x", "y"],
        "OKP" => &["crv", "kty", "x"],
        "RSA" => &["e", "kty", "n"],
        _ => return None,
    };
    let mut json = String::with_capacity(512);
    json.push('{');
    for (i, name) in required.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push('"');
        json.push_str(name);
        json.push_str("\":");
        // A string member as JSON, escaped as any JSON encoder would.
        json.push_str(&Value::from(member(name)?).to_string());
    }
    json.push('}');
    Some(URL_SAFE_NO_PAD.encode(sha256(json.as_bytes())))
}
