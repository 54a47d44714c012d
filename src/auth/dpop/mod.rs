//! DPoP proofs (RFC 9449): a JWT the client signs with a key of its own for
//! each request, carrying that public key in its header, so a token bound
//! to the key (`cnf.jkt`) is useless to whoever holds only the token.
//!
//! [`verify_proof`] runs the checks of RFC 9449 §4.3 on one proof, in the
//! RFC's order, against what the caller knows of the request
//! ([`ProofExpectations`]); each check that fails has its own
//! [`DpopFailure`]. What it cannot know alone is left to the caller: that
//! the request carried exactly one `DPoP` header, that the proof's `jti`
//! is new (the replay cache in `state::dpop_replay`), and that the token's
//! `cnf.jkt` is [`VerifiedProof::jkt`] ([`check_binding`]).

mod htu;
mod jwk;
mod nonce;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::Reason;
use super::json::{JsonObject, JsonRef};
use super::registered::numeric_date;
use super::token::{self, decode_segment};
use crate::digest::sha256;
use crate::jose::{Algorithm, AlgorithmSet};

pub use htu::normalize_htu;
pub use jwk::jwk_thumbprint;
pub use nonce::NonceSource;

/// The algorithms a proof may be signed with, whatever a route allows:
/// asymmetric only (a proof's key is public, so `none` and HMAC can prove
/// nothing), each with a key family a JWK names unambiguously.
pub const PROOF_ALGORITHMS: [Algorithm; 4] = [
    Algorithm::ES256,
    Algorithm::EdDSA,
    Algorithm::PS256,
    Algorithm::RS256,
];

/// A route's configured proof algorithms as a set; the first one that
/// isn't in [`PROOF_ALGORITHMS`] is the error.
pub fn proof_algorithms(configured: &[Algorithm]) -> Result<AlgorithmSet, Algorithm> {
    match configured
        .iter()
        .find(|alg| !PROOF_ALGORITHMS.contains(alg))
    {
        Some(refused) => Err(*refused),
        None => Ok(configured.iter().copied().collect()),
    }
}

/// A proof longer than this is refused before it is decoded: the largest
/// honest one, an RS256 proof with a 4096-bit key, an `ath` and a nonce, is
/// under 2 KiB.
pub const DEFAULT_MAX_PROOF_BYTES: usize = 4096;

/// The longest `jti` kept: 96 bits of randomness (RFC 9449 §11.1) take 16
/// characters, a UUID 36. A longer one is refused rather than remembered.
pub const MAX_JTI_BYTES: usize = 256;

/// Why a DPoP proof, or a request's use of one, was refused: the `reason`
/// label of metrics and logs. Each check has its own; none names a value
/// the proof carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DpopFailure {
    /// Not a compact JWS of JSON objects, or a required claim (`htm`,
    /// `htu`, `iat`) absent or of the wrong type.
    Malformed,
    /// Longer than the proof size cap.
    TooLarge,
    /// The header's `typ` is not exactly `dpop+jwt`.
    BadTyp,
    /// `alg` is not on the route's proof allow-list (never `none`, never HMAC).
    AlgNotAllowed,
    /// The header's `jwk` is absent, not a public key of `alg`'s family,
    /// or not a valid key.
    BadKey,
    /// The header's `jwk` carries private key members.
    PrivateKey,
    /// The signature doesn't verify with the header's `jwk`.
    BadSignature,
    /// `jti` absent, empty, not a string or longer than [`MAX_JTI_BYTES`].
    BadJti,
    /// `htm` is not the request's method.
    WrongMethod,
    /// `htu` is not the request's URI.
    WrongUri,
    /// `iat` is outside the accepted window around now.
    IatOutOfWindow,
    /// An access token came with the proof, but the proof has no `ath`.
    MissingAth,
    /// `ath` is not the hash of the access token sent with it.
    WrongAth,
    /// The route requires a server nonce and the proof has none.
    NonceRequired,
    /// The proof's `nonce` is not one the server currently accepts.
    BadNonce,
    /// The proof's `jti` was seen before within its window.
    Replayed,
    /// The replay cache is full of proofs still within their window.
    ReplayCacheFull,
    /// The shared replay cache (Redis) didn't answer in time, and
    /// `on_error` is `fail_closed`.
    ReplayUnavailable,
    /// The token's `cnf.jkt` is not the thumbprint of the proof's key.
    KeyMismatch,
    /// More than one `DPoP` header.
    MultipleProofs,
    /// A token bound to a key (`cnf.jkt`) came without a proof.
    MissingProof,
}

impl DpopFailure {
    pub const ALL: [DpopFailure; 21] = [
        DpopFailure::Malformed,
        DpopFailure::TooLarge,
        DpopFailure::BadTyp,
        DpopFailure::AlgNotAllowed,
        DpopFailure::BadKey,
        DpopFailure::PrivateKey,
        DpopFailure::BadSignature,
        DpopFailure::BadJti,
        DpopFailure::WrongMethod,
        DpopFailure::WrongUri,
        DpopFailure::IatOutOfWindow,
        DpopFailure::MissingAth,
        DpopFailure::WrongAth,
        DpopFailure::NonceRequired,
        DpopFailure::BadNonce,
        DpopFailure::Replayed,
        DpopFailure::ReplayCacheFull,
        DpopFailure::ReplayUnavailable,
        DpopFailure::KeyMismatch,
        DpopFailure::MultipleProofs,
        DpopFailure::MissingProof,
    ];

    /// The labels in the order of the variants (and of [`Self::ALL`]).
    const LABELS: [&'static str; 21] = [
        "dpop_malformed",
        "dpop_too_large",
        "dpop_bad_typ",
        "dpop_alg_not_allowed",
        "dpop_bad_key",
        "dpop_private_key",
        "dpop_bad_signature",
        "dpop_bad_jti",
        "dpop_wrong_method",
        "dpop_wrong_uri",
        "dpop_iat_out_of_window",
        "dpop_missing_ath",
        "dpop_wrong_ath",
        "dpop_nonce_required",
        "dpop_bad_nonce",
        "dpop_replayed",
        "dpop_replay_cache_full",
        "dpop_replay_unavailable",
        "dpop_key_mismatch",
        "dpop_multiple_proofs",
        "dpop_missing_proof",
    ];

    pub fn as_str(self) -> &'static str {
        Self::LABELS[self as usize]
    }

    /// The `error` of the `WWW-Authenticate: DPoP` challenge (RFC 9449
    /// §7.1, §8, §12.2), or `None` for a 503 that is no client's fault.
    pub fn error_code(self) -> Option<&'static str> {
        match self {
            Self::NonceRequired | Self::BadNonce => Some("use_dpop_nonce"),
            Self::ReplayCacheFull | Self::ReplayUnavailable => None,
            Self::MultipleProofs => Some("invalid_request"),
            Self::KeyMismatch | Self::MissingProof => Some("invalid_token"),
            _ => Some("invalid_dpop_proof"),
        }
    }

    /// The status the refusal is answered with.
    pub fn status(self) -> u16 {
        match self {
            Self::ReplayCacheFull | Self::ReplayUnavailable => 503,
            Self::MultipleProofs => 400,
            _ => 401,
        }
    }
}

impl std::fmt::Display for DpopFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How far a proof's `iat` may be from now: `past_secs` back (how long a
/// proof stays usable, so how long its `jti` is remembered), `future_secs`
/// ahead (the clients' clock skew).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IatWindow {
    pub past_secs: i64,
    pub future_secs: i64,
}

impl IatWindow {
    pub fn contains(self, iat: i64, now: i64) -> bool {
        iat >= now.saturating_sub(self.past_secs) && iat <= now.saturating_add(self.future_secs)
    }

    /// The last second at which a proof issued at `iat` is accepted: until
    /// then its `jti` must be remembered.
    pub fn last_accepted(self, iat: i64) -> i64 {
        iat.saturating_add(self.past_secs)
    }
}

/// What the request says a proof must match.
#[derive(Debug, Clone, Copy)]
pub struct ProofExpectations<'a> {
    /// The request's method, exactly as sent (`htm` is case-sensitive).
    pub method: &'a str,
    /// The URI the client sent the request to, `scheme://host[:port]/path`
    /// without query or fragment; normalized again here like the proof's.
    pub htu: &'a str,
    /// The access token the proof came with: its hash must be the proof's
    /// `ath`. `None` at a token endpoint, where there is none yet.
    pub access_token: Option<&'a str>,
    /// The route's proof algorithms, a subset of [`PROOF_ALGORITHMS`]
    /// (others are refused whatever this says).
    pub algorithms: AlgorithmSet,
    pub iat_window: IatWindow,
    /// Set when the route requires server nonces: the proof's `nonce` must
    /// be one this source accepts now.
    pub nonces: Option<&'a NonceSource>,
    pub max_bytes: usize,
}

/// A proof that passed every check [`verify_proof`] makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    /// The RFC 7638 SHA-256 thumbprint of the proof's key, base64url: what
    /// a bound token's `cnf.jkt` must equal.
    pub jkt: String,
    pub jti: String,
    pub iat: i64,
    pub algorithm: Algorithm,
}

/// Verifies one DPoP proof (RFC 9449 §4.3, checks 2 to 11 and 12's
/// `ath`; the caller checks that there was one `DPoP` header, the replay
/// cache, and `cnf.jkt`).
pub fn verify_proof(
    proof: &str,
    expect: &ProofExpectations<'_>,
    now_unix: i64,
) -> Result<VerifiedProof, DpopFailure> {
    let parsed = token::parse(proof, expect.max_bytes).map_err(|reason| match reason {
        Reason::TooLarge => DpopFailure::TooLarge,
        _ if unsecured(proof) => DpopFailure::AlgNotAllowed,
        _ => DpopFailure::Malformed,
    })?;
    if parsed.header.typ() != Some("dpop+jwt") {
        return Err(DpopFailure::BadTyp);
    }
    let algorithm = parsed
        .header
        .algorithm()
        .filter(|alg| PROOF_ALGORITHMS.contains(alg) && expect.algorithms.contains(*alg))
        .ok_or(DpopFailure::AlgNotAllowed)?;
    // The header is parsed again for its `jwk`, which the token header
    // deliberately never keeps (an access token may not choose its key).
    let header_segment = proof.split('.').next().unwrap_or_default();
    let mut header_json = Vec::new();
    decode_segment(header_segment, &mut header_json).map_err(|_| DpopFailure::Malformed)?;
    let header = JsonObject::parse(&header_json).map_err(|_| DpopFailure::Malformed)?;
    let key = jwk::ProofKey::from_header(&header, algorithm)?;
    if !key
        .verifier
        .verify(algorithm, parsed.signing_input, parsed.signature())
    {
        return Err(DpopFailure::BadSignature);
    }
    let (jti, iat) = check_claims(&parsed.claims, expect, now_unix)?;
    Ok(VerifiedProof {
        jkt: key.thumbprint,
        jti,
        iat,
        algorithm,
    })
}

/// Whether `proof` is an unsecured JWS (RFC 7515 appendix A.5: `alg:
/// none` and an empty signature), which the strict parser refuses as
/// malformed before its `alg` is read: it is refused for its algorithm.
fn unsecured(proof: &str) -> bool {
    let Some(header) = proof
        .strip_suffix('.')
        .and_then(|rest| rest.split('.').next())
    else {
        return false;
    };
    let mut json = Vec::new();
    decode_segment(header, &mut json).is_ok()
        && JsonObject::parse(&json)
            .is_ok_and(|header| matches!(header.get("alg"), Some(JsonRef::String("none"))))
}

/// The claims of a proof whose signature verified; its `jti` and `iat`.
fn check_claims(
    claims: &JsonObject,
    expect: &ProofExpectations<'_>,
    now: i64,
) -> Result<(String, i64), DpopFailure> {
    let string = |name| match claims.get(name) {
        Some(JsonRef::String(value)) => Ok(Some(value)),
        None => Ok(None),
        Some(_) => Err(DpopFailure::Malformed),
    };
    let jti = match claims.get("jti") {
        Some(JsonRef::String(jti)) if !jti.is_empty() && jti.len() <= MAX_JTI_BYTES => jti,
        _ => return Err(DpopFailure::BadJti),
    };
    let htm = string("htm")?.ok_or(DpopFailure::Malformed)?;
    if htm != expect.method {
        return Err(DpopFailure::WrongMethod);
    }
    let htu = string("htu")?.ok_or(DpopFailure::Malformed)?;
    match (normalize_htu(htu), normalize_htu(expect.htu)) {
        (Some(claimed), Some(expected)) if claimed == expected => {}
        _ => return Err(DpopFailure::WrongUri),
    }
    let iat = numeric_date(claims, "iat")
        .map_err(|_| DpopFailure::Malformed)?
        .ok_or(DpopFailure::Malformed)?;
    if !expect.iat_window.contains(iat, now) {
        return Err(DpopFailure::IatOutOfWindow);
    }
    if let Some(nonces) = expect.nonces {
        let nonce = string("nonce")?.ok_or(DpopFailure::NonceRequired)?;
        if !nonces.accepts(nonce, now) {
            return Err(DpopFailure::BadNonce);
        }
    }
    if let Some(token) = expect.access_token {
        let ath = string("ath")?.ok_or(DpopFailure::MissingAth)?;
        if ath != access_token_hash(token) {
            return Err(DpopFailure::WrongAth);
        }
    }
    Ok((jti.to_owned(), iat))
}

/// A verified token's key binding (`cnf.jkt`, RFC 9449 §6.1) against the
/// proof it came with, if any: a bound token needs a proof of its key, and
/// a proof (sent only with the `DPoP` scheme) needs a token bound to its
/// key. A token bound otherwise (a certificate's `x5t#S256`) isn't judged
/// here.
pub fn check_binding(
    claims: &JsonObject,
    proof: Option<&VerifiedProof>,
) -> Result<(), DpopFailure> {
    let jkt = claims
        .get("cnf")
        .and_then(JsonRef::as_object)
        .and_then(|cnf| cnf.get("jkt"));
    match (jkt, proof) {
        (None, None) => Ok(()),
        (Some(_), None) => Err(DpopFailure::MissingProof),
        (Some(JsonRef::String(jkt)), Some(proof)) if jkt == proof.jkt => Ok(()),
        (_, Some(_)) => Err(DpopFailure::KeyMismatch),
    }
}

/// `ath`: the base64url SHA-256 of the access token's ASCII (RFC 9449 §4.2).
pub fn access_token_hash(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(sha256(access_token.as_bytes()))
}

#[cfg(test)]
mod tests;
