//! Verifying one Security Event Token (RFC 8417) from a transmitter: the
//! strict compact-JWS parse the request path uses, `typ: secevent+jwt`,
//! the signature against the transmitter's keys (an unknown `kid` asks its
//! refresher for a bounded refetch), then `iss`, `aud`, `iat`, `jti` and
//! `events`. Each refusal carries RFC 8935's error code.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::auth::header::normalize_typ;
use crate::auth::token;
use crate::jose::KeyFamily;
use crate::keys::{KeyChoice, KeyStore};

/// Longest SET accepted: events are small, and this bounds the work an
/// unauthenticated body can cause.
pub const MAX_SET_BYTES: usize = 64 * 1024;

/// RFC 8935 §2.4's error codes (RFC 8936 uses the same in `setErrs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetErrorCode {
    InvalidRequest,
    InvalidKey,
    InvalidIssuer,
    InvalidAudience,
    AuthenticationFailed,
    AccessDenied,
}

impl SetErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidKey => "invalid_key",
            Self::InvalidIssuer => "invalid_issuer",
            Self::InvalidAudience => "invalid_audience",
            Self::AuthenticationFailed => "authentication_failed",
            Self::AccessDenied => "access_denied",
        }
    }
}

/// Why a SET (or its delivery) was refused: a code and words that name
/// the problem, never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {description}", code.as_str())]
pub struct SetError {
    pub code: SetErrorCode,
    pub description: String,
}

impl SetError {
    pub fn new(code: SetErrorCode, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
        }
    }

    fn request(description: impl Into<String>) -> Self {
        Self::new(SetErrorCode::InvalidRequest, description)
    }
}

/// A SET whose signature and registered claims passed.
#[derive(Debug, Clone)]
pub struct VerifiedSet {
    pub jti: String,
    pub iat: i64,
    /// The SET's `sub_id` (SSF 1.0 puts the subject here), if any.
    pub sub_id: Option<Value>,
    /// Event type URI → event payload.
    pub events: Map<String, Value>,
}

/// What a SET must match.
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    pub keys: &'a KeyStore,
}

pub async fn verify(set: &str, expected: &Expected<'_>) -> Result<VerifiedSet, SetError> {
    if let Some(verified) = check(set, expected)? {
        return Ok(verified);
    }
    // A key the transmitter rotated in since the last refresh.
    expected.keys.refetch().await;
    check(set, expected)?.ok_or_else(|| {
        SetError::new(
            SetErrorCode::InvalidKey,
            "the SET's kid is not among the transmitter's keys",
        )
    })
}

/// The SET verified; `None` when its `kid` is unknown. Synchronous: the
/// parsed token stays on this thread.
fn check(set: &str, expected: &Expected<'_>) -> Result<Option<VerifiedSet>, SetError> {
    let set = set.trim();
    let parsed = token::parse(set, MAX_SET_BYTES)
        .map_err(|reason| SetError::request(format!("not a compact JWS: {}", reason.as_str())))?;
    let header = &parsed.header;
    if header.typ().map(normalize_typ).as_deref() != Some("secevent+jwt") {
        return Err(SetError::request(
            "the JOSE header's typ must be secevent+jwt",
        ));
    }
    let alg = header
        .algorithm()
        .filter(|alg| alg.family() != KeyFamily::Hmac)
        .ok_or_else(|| {
            SetError::new(
                SetErrorCode::InvalidKey,
                format!("alg {:?} is not a public-key algorithm", header.alg()),
            )
        })?;
    let valid = match expected.keys.current().select(header.kid(), alg) {
        KeyChoice::Candidates(keys) => keys
            .iter()
            .any(|key| key.verify(alg, parsed.signing_input, parsed.signature())),
        KeyChoice::UnknownKid => return Ok(None),
        KeyChoice::AlgorithmMismatch => false,
    };
    if !valid {
        return Err(SetError::new(
            SetErrorCode::InvalidKey,
            "the signature does not verify with any of the transmitter's keys",
        ));
    }
    let payload = set.split('.').nth(1).unwrap_or_default();
    let claims: Map<String, Value> = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| SetError::request("the payload is not a JSON object"))?;
    claims_match(claims, expected).map(Some)
}

fn claims_match(
    mut claims: Map<String, Value>,
    expected: &Expected<'_>,
) -> Result<VerifiedSet, SetError> {
    if claims.get("iss").and_then(Value::as_str) != Some(expected.issuer) {
        return Err(SetError::new(
            SetErrorCode::InvalidIssuer,
            "iss is not the transmitter's issuer",
        ));
    }
    let audience_matches = match claims.get("aud") {
        Some(Value::String(aud)) => aud == expected.audience,
        Some(Value::Array(auds)) => auds
            .iter()
            .any(|aud| aud.as_str() == Some(expected.audience)),
        _ => false,
    };
    if !audience_matches {
        return Err(SetError::new(
            SetErrorCode::InvalidAudience,
            "aud does not contain this receiver's audience",
        ));
    }
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or_else(|| SetError::request("iat is missing or not a number"))?;
    let jti = match claims.get("jti") {
        Some(Value::String(jti)) if !jti.is_empty() && jti.len() <= 256 => jti.clone(),
        _ => return Err(SetError::request("jti is missing or not 1 to 256 bytes")),
    };
    let events = match claims.remove("events") {
        Some(Value::Object(events)) if !events.is_empty() => events,
        _ => return Err(SetError::request("events is missing or empty")),
    };
    Ok(VerifiedSet {
        jti,
        iat,
        sub_id: claims.remove("sub_id"),
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(claims: Value) -> Result<VerifiedSet, SetErrorCode> {
        let keys = KeyStore::fixed(Default::default());
        let expected = Expected {
            issuer: "https://tx",
            audience: "https://rx",
            keys: &keys,
        };
        let Value::Object(claims) = claims else {
            unreachable!()
        };
        claims_match(claims, &expected).map_err(|e| e.code)
    }

    #[test]
    fn registered_claims_each_have_their_error() {
        let events = json!({"https://e": {}});
        let good = json!({"iss": "https://tx", "aud": ["x", "https://rx"], "iat": 1, "jti": "j", "events": events});
        assert_eq!(check(good.clone()).unwrap().jti, "j");
        let with = |name: &str, value: Value| {
            let mut claims = good.clone();
            claims[name] = value;
            check(claims).unwrap_err()
        };
        assert_eq!(
            with("iss", json!("https://other")),
            SetErrorCode::InvalidIssuer
        );
        assert_eq!(
            with("aud", json!("https://other")),
            SetErrorCode::InvalidAudience
        );
        assert_eq!(with("iat", json!("soon")), SetErrorCode::InvalidRequest);
        assert_eq!(with("jti", json!("")), SetErrorCode::InvalidRequest);
        assert_eq!(with("events", json!({})), SetErrorCode::InvalidRequest);
    }
}
