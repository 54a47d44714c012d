//! An introspection answer (RFC 7662 §2.2) judged as a token: `active`
//! must be `true`, and its members are the token's claims, held to the
//! issuer's rules on the registered claims exactly as a JWT's are. What
//! comes out is a [`VerifiedToken`], so the route's policy, revocation,
//! rate limits, identity headers and logs treat an opaque token and a JWT
//! alike.

use std::sync::Arc;

use super::Reason;
use super::json::{JsonObject, JsonRef};
use super::registered::{Carrier, Times, validate_claims};
use super::signed::{self, SignedError};
use super::verify::{Explain, IssuerVerifier, VerifiedToken, VerifyRequest, checked};

/// The `typ` of a JWT-secured introspection answer (RFC 9701 §5).
pub const ANSWER_TYP: &str = "token-introspection+jwt";

/// The verdict on an answer from the issuer at `index`, at `now`. The
/// route's own audiences are not checked here: they are the route's, and
/// a cached answer serves every route. A refused answer comes back with
/// its reason, to be judged again under other rules.
pub fn judge(
    answer: JsonObject,
    issuers: &[Arc<IssuerVerifier>],
    index: usize,
    now: i64,
    explain: &mut impl Explain,
) -> Result<VerifiedToken, (Reason, JsonObject)> {
    let issuer = &issuers[index];
    let times = match registered_times(&answer, issuer, index, now, explain) {
        Ok(times) => times,
        Err(reason) => return Err((reason, answer)),
    };
    let bound = answer.contains_key("cnf");
    Ok(VerifiedToken {
        issuer: index,
        algorithm: None,
        claims: answer,
        exp: times.exp,
        nbf: times.nbf,
        iat: times.iat,
        key_generation: 0,
        verifier: issuer.id,
        bound,
    })
}

/// `active`, `iss`, then the issuer's rules on the registered claims.
fn registered_times(
    answer: &JsonObject,
    issuer: &IssuerVerifier,
    index: usize,
    now: i64,
    explain: &mut impl Explain,
) -> Result<Times, Reason> {
    if !matches!(answer.get("active"), Some(JsonRef::Bool(true))) {
        return checked(explain, "active", Err(Reason::TokenInactive));
    }
    explain.passed("active", &|| {
        format!("the issuer {} says active", issuer.name)
    });
    // `iss` is optional in an answer; when present it must be this issuer.
    match answer.get("iss") {
        None => {}
        Some(JsonRef::String(iss)) if iss == issuer.issuer => {}
        Some(_) => return checked(explain, "issuer", Err(Reason::WrongIssuer)),
    }
    let request = VerifyRequest {
        issuers: &[index],
        audiences: &[],
        now,
        max_token_bytes: usize::MAX,
    };
    validate_claims(Carrier::Introspection, answer, issuer, &request, explain)
}

/// Why a JWT-secured answer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerError {
    Signature(SignedError),
    /// `iss` is not the issuer, or `aud` does not name jwtgate's client.
    WrongParty,
    /// No `token_introspection` object.
    NoAnswer,
}

/// The answer inside a JWT-secured introspection response (RFC 9701 §5):
/// signed by the issuer, from the issuer (`iss`), for jwtgate's client
/// (`aud`).
pub fn unwrap_signed(
    jwt: &str,
    issuer: &IssuerVerifier,
    client_id: &str,
    max_bytes: usize,
) -> Result<JsonObject, AnswerError> {
    let parsed = signed::verify(jwt, max_bytes, ANSWER_TYP, issuer.algorithms, &issuer.keys)
        .map_err(AnswerError::Signature)?;
    let claims = &parsed.claims;
    if claims.get("iss").and_then(JsonRef::as_str) != Some(issuer.issuer.as_str()) {
        return Err(AnswerError::WrongParty);
    }
    let for_us = match claims.get("aud") {
        Some(JsonRef::String(aud)) => aud == client_id,
        Some(JsonRef::Array(items)) => items.iter().any(|aud| aud.as_str() == Some(client_id)),
        _ => false,
    };
    if !for_us {
        return Err(AnswerError::WrongParty);
    }
    let answer = claims
        .get("token_introspection")
        .filter(|answer| answer.as_object().is_some())
        .ok_or(AnswerError::NoAnswer)?;
    // Off the request path (a cache miss): re-encoding the nested object
    // is simpler than a second kind of tree.
    let bytes = serde_json::to_vec(&answer.to_value()).map_err(|_| AnswerError::NoAnswer)?;
    JsonObject::parse(&bytes).map_err(|_| AnswerError::NoAnswer)
}
