//! Token verification, in the order DESIGN.md gives: parse, pick the issuer
//! (`iss` only selects among the route's issuers, it is never trusted on its
//! own), pick the key (`alg` must be allowed and fit the key), check the
//! signature, then validate the registered claims.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use super::claims;
use super::json::{JsonObject, JsonRef};
use super::registered::{Audience, Carrier, Window, validate_claims};
use super::token::{self, ParsedToken};
use super::{Reason, Rejection};
use crate::jose::{Algorithm, AlgorithmSet};
use crate::keys::{KeyChoice, KeyStore};

/// Names one compiled [`IssuerVerifier`] for the life of the process. A
/// cached verification records it: a reload that changes an issuer's rules
/// (audiences, leeway, token type...) compiles a new verifier with a new id,
/// so nothing verified under the old rules counts as a hit under the new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifierId(u64);

impl VerifierId {
    pub fn fresh() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// Everything needed to verify one issuer's tokens, compiled from config.
#[derive(Debug)]
pub struct IssuerVerifier {
    pub id: VerifierId,
    pub name: String,
    /// The exact `iss` value.
    pub issuer: String,
    pub algorithms: AlgorithmSet,
    /// `aud` must contain one of these, unless `check_audience` is false.
    pub audiences: Vec<String>,
    pub check_audience: bool,
    pub leeway_secs: i64,
    pub require_exp: bool,
    /// Longest accepted `exp - iat` (or `exp - now` without `iat`).
    pub max_lifetime_secs: Option<i64>,
    pub require_sub: bool,
    /// Refuse tokens without a `jti`, so each can be revoked by it.
    pub require_jti: bool,
    pub token_type: TokenTypeRule,
    pub scope_claim: Option<String>,
    pub keys: Arc<KeyStore>,
    /// `/readyz` waits for this issuer's keys; when false, only during the
    /// startup grace.
    pub required: bool,
}

impl IssuerVerifier {
    /// An issuer with the same defaults as an `issuers[]` entry in
    /// `gateway.yaml` (30 s leeway, `exp` required, audience checked, scopes
    /// from `scope`/`scp`/`scopes`); for code that builds verifiers directly
    /// (benches, fuzzing, tests). Adjust the public fields as needed.
    pub fn new(
        name: &str,
        issuer: &str,
        algorithms: AlgorithmSet,
        audiences: Vec<String>,
        keys: KeyStore,
    ) -> Self {
        Self {
            id: VerifierId::fresh(),
            name: name.into(),
            issuer: issuer.into(),
            algorithms,
            audiences,
            check_audience: true,
            leeway_secs: 30,
            require_exp: true,
            max_lifetime_secs: None,
            require_sub: false,
            require_jti: false,
            token_type: TokenTypeRule::default(),
            scope_claim: None,
            keys: Arc::new(keys),
            required: true,
        }
    }
}

/// What makes a token an access token for this issuer, so refresh and ID
/// tokens signed by the same keys can't pass as one (RFC 8725 §3.11,
/// RFC 9068 §2.1).
#[derive(Debug, Clone, Default)]
pub struct TokenTypeRule {
    /// Accepted `typ` header values, lower-case, without `application/`.
    pub typ: Vec<String>,
    /// A claim that must hold one of `claim_values`.
    pub claim: Option<String>,
    pub claim_values: Vec<Value>,
}

impl TokenTypeRule {
    /// `media_type` is the token's `typ`, normalized by the header parser.
    pub(crate) fn check(
        &self,
        media_type: Option<&str>,
        claims: &JsonObject,
    ) -> Result<(), Reason> {
        if !self.typ.is_empty() {
            let media_type = media_type.ok_or(Reason::WrongTokenType)?;
            if !self.typ.iter().any(|accepted| accepted == media_type) {
                return Err(Reason::WrongTokenType);
            }
        }
        self.check_claim(claims)
    }

    /// The claim rule alone: all an introspection answer, which has no
    /// `typ`, is held to.
    pub(crate) fn check_claim(&self, claims: &JsonObject) -> Result<(), Reason> {
        if let Some(name) = &self.claim {
            let value = claims::lookup(claims, name).ok_or(Reason::WrongTokenType)?;
            if !self.claim_values.iter().any(|v| claims::holds(value, v)) {
                return Err(Reason::WrongTokenType);
            }
        }
        Ok(())
    }
}

/// A token whose signature and registered claims checked out.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// Index of the issuer in the compiled issuer list.
    pub issuer: usize,
    /// The signature's algorithm; `None` for an introspected opaque token.
    pub algorithm: Option<Algorithm>,
    pub claims: JsonObject,
    /// The time claims, parsed once, for re-checks on cache hits.
    pub exp: Option<i64>,
    pub nbf: Option<i64>,
    pub iat: Option<i64>,
    /// The issuer's key-set generation the signature was checked against:
    /// once the keys change, a cached result no longer counts.
    pub key_generation: u64,
    /// The verifier whose rules it passed: once they change, neither.
    pub verifier: VerifierId,
    /// Whether it names a key or a certificate it is bound to (`cnf`,
    /// RFC 9449 and 8705): read once with the claims, so a plain bearer
    /// token's requests pay nothing for sender constraints.
    pub bound: bool,
}

impl VerifiedToken {
    /// What keeping this token costs in memory, for the cache's bound.
    pub fn memory_bytes(&self) -> usize {
        size_of::<Self>() + self.claims.heap_bytes()
    }

    pub fn subject(&self) -> Option<&str> {
        self.claims.get("sub").and_then(JsonRef::as_str)
    }
}

/// Receives each check that passed, for `jwtgate token verify`'s
/// explanations. The request path uses `()`, which compiles to nothing.
pub trait Explain {
    fn passed(&mut self, _check: &'static str, _detail: &dyn Fn() -> String) {}
    fn failed(&mut self, _check: &'static str, _reason: Reason) {}
    /// A fact of the decision a trace records.
    fn noted(&mut self, _note: Note<'_>) {}
}

/// What a decision learned on its way, for a trace's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note<'a> {
    /// Whether the token was in the verified-token cache.
    CacheHit(bool),
    /// The algorithm the token's signature is checked with.
    Algorithm(Algorithm),
    /// The `kid` of the key that verified the signature.
    Kid(&'a str),
    /// Whether the revocation list names the token.
    Revoked(bool),
}

/// Reports a failed check to `explain` on its way out.
pub(crate) fn checked<T>(
    explain: &mut impl Explain,
    check: &'static str,
    result: Result<T, Reason>,
) -> Result<T, Reason> {
    if let Err(reason) = &result {
        explain.failed(check, *reason);
    }
    result
}

impl Explain for () {}

/// What a verification needs beyond the token: which issuers the route
/// trusts and which audiences it additionally demands.
#[derive(Debug, Clone, Copy)]
pub struct VerifyRequest<'a> {
    pub issuers: &'a [usize],
    pub audiences: &'a [String],
    pub now: i64,
    pub max_token_bytes: usize,
}

/// Why authentication refused (or, in audit mode, would have refused): the
/// one refusal a decision carries, whoever asked.
#[derive(Debug, Clone)]
pub struct Failure {
    /// What the client is told, and the precise reason for metric and log.
    pub rejection: Rejection,
    /// The issuer the failure is attributed to, once one was identified
    /// (for the `issuer` metric label).
    pub issuer: Option<usize>,
    /// The check that failed, as `jwtgate token verify` names it: `token`
    /// (extraction), `structure`, `issuer`, `algorithm`, `key`, `signature`,
    /// `token type`, `exp`, `nbf`, `iat`, `lifetime`, `sub`, `aud`, `aud
    /// (route)`, `scopes`, `claim`, `revocation`. The pipeline names it from
    /// what the checks reported.
    pub check: &'static str,
    /// When the issuer's keys were consulted: their generation. Only a key
    /// set that has changed since can turn an unknown `kid` into a known one.
    pub keys_seen: Option<u64>,
    /// A token that verified but that the route's policy refused (403, or
    /// revoked): its identity is genuine, so the access log may name its
    /// `sub`. Never forwarded.
    pub refused: Option<Arc<VerifiedToken>>,
}

/// [`Failure::check`] before the pipeline has named it.
pub const UNNAMED_CHECK: &str = "verify";

impl Failure {
    fn token(reason: Reason, issuer: Option<usize>) -> Self {
        Self {
            rejection: Rejection::invalid_token(reason),
            issuer,
            check: UNNAMED_CHECK,
            keys_seen: None,
            refused: None,
        }
    }
}

pub fn verify(
    token: &str,
    issuers: &[Arc<IssuerVerifier>],
    request: VerifyRequest<'_>,
    explain: &mut impl Explain,
) -> Result<VerifiedToken, Failure> {
    let parsed = checked(
        explain,
        "structure",
        token::parse(token, request.max_token_bytes),
    )
    .map_err(|r| Failure::token(r, None))?;
    explain.passed("structure", &|| {
        format!(
            "{} bytes, three base64url segments, JSON header and claims",
            token.len()
        )
    });

    let index = checked(
        explain,
        "issuer",
        select_issuer(&parsed, issuers, request.issuers),
    )
    .map_err(|r| Failure::token(r, None))?;
    let issuer = &issuers[index];
    let fail = |reason| Failure::token(reason, Some(index));
    explain.passed("issuer", &|| format!("{} ({})", issuer.name, issuer.issuer));

    let alg = checked(explain, "algorithm", select_algorithm(&parsed, issuer)).map_err(fail)?;
    explain.passed("algorithm", &|| {
        format!("{alg} is in the issuer's allow-list")
    });
    explain.noted(Note::Algorithm(alg));

    let key_generation = issuer.keys.generation();
    let keys = issuer.keys.current();
    if keys.is_empty() {
        explain.failed("key", Reason::JwksUnavailable);
        return Err(Failure {
            rejection: Rejection::unavailable(),
            issuer: Some(index),
            check: UNNAMED_CHECK,
            keys_seen: Some(key_generation),
            refused: None,
        });
    }
    let candidates = match keys.select(parsed.header.kid(), alg) {
        KeyChoice::Candidates(candidates) => Ok(candidates),
        KeyChoice::UnknownKid => Err(Reason::UnknownKid),
        KeyChoice::AlgorithmMismatch => Err(Reason::AlgNotAllowed),
    };
    let candidates = checked(explain, "key", candidates).map_err(|reason| Failure {
        keys_seen: Some(key_generation),
        ..fail(reason)
    })?;
    explain.passed("key", &|| match parsed.header.kid() {
        Some(kid) => format!("kid {kid:?} found, usable with {alg}"),
        None => format!("no kid; {} key(s) usable with {alg}", candidates.len()),
    });
    let key = candidates
        .iter()
        .find(|key| key.verify(alg, parsed.signing_input, parsed.signature()))
        .ok_or(Reason::BadSignature);
    let key = checked(explain, "signature", key).map_err(fail)?;
    if let Some(kid) = &key.kid {
        explain.noted(Note::Kid(kid));
    }
    explain.passed("signature", &|| {
        let family = super::explain::family_name(key.family);
        match &key.kid {
            Some(kid) => format!("valid, key kid={kid:?} ({family})"),
            None => format!("valid, {family}"),
        }
    });

    let carrier = Carrier::Jws {
        media_type: parsed.header.media_type(),
    };
    let times =
        validate_claims(carrier, &parsed.claims, issuer, &request, explain).map_err(fail)?;
    let bound = parsed.claims.contains_key("cnf");
    Ok(VerifiedToken {
        issuer: index,
        algorithm: Some(alg),
        claims: parsed.claims,
        exp: times.exp,
        nbf: times.nbf,
        iat: times.iat,
        key_generation,
        verifier: issuer.id,
        bound,
    })
}

/// The checks that depend on the clock or the route, for a token verified
/// earlier (a cache hit): everything else about it cannot have changed. A
/// failure is reported to `explain` under the same check name a fresh
/// verification would give it.
pub fn revalidate(
    token: &VerifiedToken,
    issuers: &[Arc<IssuerVerifier>],
    request: VerifyRequest<'_>,
    explain: &mut impl Explain,
) -> Result<(), Failure> {
    let fail = |reason| Failure::token(reason, Some(token.issuer));
    if !request.issuers.contains(&token.issuer) {
        explain.failed("issuer", Reason::WrongIssuer);
        // As on a fresh verification: no issuer of this route was identified.
        return Err(Failure::token(Reason::WrongIssuer, None));
    }
    let window = Window {
        now: request.now,
        leeway: issuers[token.issuer].leeway_secs,
    };
    if token.exp.is_some_and(|exp| window.expired(exp)) {
        return checked(explain, "exp", Err(Reason::Expired)).map_err(fail);
    }
    if token.nbf.is_some_and(|nbf| window.not_yet(nbf)) {
        return checked(explain, "nbf", Err(Reason::NotYetValid)).map_err(fail);
    }
    if token.iat.is_some_and(|iat| window.not_yet(iat)) {
        return checked(explain, "iat", Err(Reason::IssuedInFuture)).map_err(fail);
    }
    if !request.audiences.is_empty() {
        let audience = checked(explain, "aud", Audience::of(&token.claims)).map_err(fail)?;
        checked(explain, "aud (route)", audience.check(request.audiences)).map_err(fail)?;
    }
    Ok(())
}

/// The audience checks of a token verified under an earlier config, by
/// `issuer` and a route's `audiences` as a reload left them. Its signature
/// and time claims are not checked again: the one was proven, the other is
/// its connection's timer's business.
pub fn audiences_hold(
    token: &VerifiedToken,
    issuer: &IssuerVerifier,
    audiences: &[String],
) -> Result<(), Reason> {
    if issuer.check_audience {
        Audience::of(&token.claims)?.check(&issuer.audiences)?;
    }
    if !audiences.is_empty() {
        Audience::of(&token.claims)?.check(audiences)?;
    }
    Ok(())
}

fn select_issuer(
    parsed: &ParsedToken<'_>,
    issuers: &[Arc<IssuerVerifier>],
    allowed: &[usize],
) -> Result<usize, Reason> {
    let iss = match parsed.claims.get("iss") {
        Some(JsonRef::String(iss)) => iss,
        Some(_) => return Err(Reason::Malformed),
        None => return Err(Reason::MissingClaim),
    };
    allowed
        .iter()
        .copied()
        .find(|&i| issuers[i].issuer == *iss)
        .ok_or(Reason::WrongIssuer)
}

/// `alg` must name an algorithm we implement (so never `none`) and be on
/// the issuer's allow-list.
fn select_algorithm(
    parsed: &ParsedToken<'_>,
    issuer: &IssuerVerifier,
) -> Result<Algorithm, Reason> {
    let alg = parsed.header.algorithm().ok_or(Reason::UnsupportedAlg)?;
    if !issuer.algorithms.contains(alg) {
        return Err(Reason::AlgNotAllowed);
    }
    Ok(alg)
}
