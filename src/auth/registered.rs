//! The registered claims (RFC 7519 §4.1) and an issuer's rules on them:
//! the checks a verified JWS and an introspection answer (RFC 7662) both
//! pass, so an opaque token is held to exactly what a JWT is.

use super::Reason;
use super::json::{Items, JsonObject, JsonRef};
use super::verify::{Explain, IssuerVerifier, VerifyRequest, checked};

/// "Now" give or take the issuer's leeway: the one definition of the time
/// checks, shared by full verification and cache hits.
pub(crate) struct Window {
    pub now: i64,
    pub leeway: i64,
}

impl Window {
    /// `exp` has passed (RFC 7519 §4.1.4: now must be before it).
    pub fn expired(&self, exp: i64) -> bool {
        self.now >= exp + self.leeway
    }

    /// An `nbf` or `iat` still in the future.
    pub fn not_yet(&self, at: i64) -> bool {
        at > self.now + self.leeway
    }
}

/// The time claims, which a cache hit must check again.
pub(crate) struct Times {
    pub exp: Option<i64>,
    pub nbf: Option<i64>,
    pub iat: Option<i64>,
}

/// What carried the claims: a JWS, with the `typ` of its header, or an
/// introspection answer, which has no header (only the token type's
/// claim rule applies to it).
#[derive(Clone, Copy)]
pub(crate) enum Carrier<'a> {
    Jws { media_type: Option<&'a str> },
    Introspection,
}

/// The issuer's rules on the registered claims, and the route's
/// audiences.
pub(crate) fn validate_claims(
    carrier: Carrier<'_>,
    claims: &JsonObject,
    issuer: &IssuerVerifier,
    request: &VerifyRequest<'_>,
    explain: &mut impl Explain,
) -> Result<Times, Reason> {
    let now = request.now;
    let leeway = issuer.leeway_secs;
    let window = Window { now, leeway };

    checked(
        explain,
        "token type",
        match carrier {
            Carrier::Jws { media_type } => issuer.token_type.check(media_type, claims),
            Carrier::Introspection => issuer.token_type.check_claim(claims),
        },
    )?;
    if !issuer.token_type.typ.is_empty() || issuer.token_type.claim.is_some() {
        explain.passed("token type", &|| "an access token for this issuer".into());
    }

    let exp = checked(explain, "exp", numeric_date(claims, "exp"))?;
    match exp {
        Some(exp) if window.expired(exp) => return checked(explain, "exp", Err(Reason::Expired)),
        Some(exp) => explain.passed("exp", &|| {
            format!("expires in {}s (leeway {leeway}s)", exp - now)
        }),
        None if issuer.require_exp => return checked(explain, "exp", Err(Reason::MissingClaim)),
        None => explain.passed("exp", &|| "absent; not required by this issuer".into()),
    }
    let nbf = checked(explain, "nbf", numeric_date(claims, "nbf"))?;
    if let Some(nbf) = nbf {
        if window.not_yet(nbf) {
            return checked(explain, "nbf", Err(Reason::NotYetValid));
        }
        explain.passed("nbf", &|| format!("valid since {}s ago", now - nbf));
    }
    let iat = checked(explain, "iat", numeric_date(claims, "iat"))?;
    if let Some(iat) = iat {
        if window.not_yet(iat) {
            return checked(explain, "iat", Err(Reason::IssuedInFuture));
        }
        explain.passed("iat", &|| format!("issued {}s ago", now - iat));
    }
    if let Some(max) = issuer.max_lifetime_secs {
        // Without exp a token never expires: longer than any maximum.
        let lifetime = exp.map(|exp| exp - iat.unwrap_or(now));
        if lifetime.is_none_or(|lifetime| lifetime > max) {
            return checked(explain, "lifetime", Err(Reason::LifetimeTooLong));
        }
        explain.passed("lifetime", &|| {
            format!("{}s, within {max}s", lifetime.unwrap_or_default())
        });
    }

    // `sub` is forwarded as the identity: it must be a string when present.
    match claims.get("sub") {
        Some(JsonRef::String(sub)) if !sub.is_empty() => {}
        Some(_) => return checked(explain, "sub", Err(Reason::Malformed)),
        None if issuer.require_sub => return checked(explain, "sub", Err(Reason::MissingClaim)),
        None => {}
    }
    check_jti(claims, issuer, explain)?;

    let audience = checked(explain, "aud", Audience::of(claims))?;
    if issuer.check_audience {
        checked(explain, "aud", audience.check(&issuer.audiences))?;
        explain.passed("aud", &|| {
            format!(
                "contains one of the issuer's audiences {:?}",
                issuer.audiences
            )
        });
    }
    if !request.audiences.is_empty() {
        checked(explain, "aud (route)", audience.check(request.audiences))?;
        explain.passed("aud (route)", &|| {
            format!(
                "contains one of the route's audiences {:?}",
                request.audiences
            )
        });
    }
    Ok(Times { exp, nbf, iat })
}

/// `jti` is what a token is revoked by: with `require_jti`, a token without
/// one (or with one that is not a non-empty string) could never be.
pub(crate) fn check_jti(
    claims: &JsonObject,
    issuer: &IssuerVerifier,
    explain: &mut impl Explain,
) -> Result<(), Reason> {
    if !issuer.require_jti {
        return Ok(());
    }
    match claims.get("jti") {
        Some(JsonRef::String(jti)) if !jti.is_empty() => {
            explain.passed("jti", &|| "present, so the token can be revoked".into());
            Ok(())
        }
        Some(_) => checked(explain, "jti", Err(Reason::Malformed)),
        None => checked(explain, "jti", Err(Reason::MissingClaim)),
    }
}

/// `aud` as the token states it: a string or an array of strings
/// (RFC 7519 §4.1.3); any other type makes the token malformed rather than
/// merely "for someone else".
pub(crate) enum Audience<'a> {
    Absent,
    One(&'a str),
    /// Every item checked to be a string.
    Many(Items<'a>),
}

impl<'a> Audience<'a> {
    pub fn of(claims: &'a JsonObject) -> Result<Self, Reason> {
        match claims.get("aud") {
            None => Ok(Self::Absent),
            Some(JsonRef::String(aud)) => Ok(Self::One(aud)),
            Some(JsonRef::Array(items)) if items.iter().all(|item| item.as_str().is_some()) => {
                Ok(Self::Many(items))
            }
            Some(_) => Err(Reason::Malformed),
        }
    }

    /// One of the token's audiences must be among `accepted`.
    pub fn check(&self, accepted: &[String]) -> Result<(), Reason> {
        let accepts = |aud: &str| accepted.iter().any(|a| a == aud);
        let found = match self {
            Self::Absent => return Err(Reason::MissingClaim),
            Self::One(aud) => accepts(aud),
            Self::Many(items) => items.iter().filter_map(JsonRef::as_str).any(accepts),
        };
        if found {
            Ok(())
        } else {
            Err(Reason::WrongAudience)
        }
    }
}

/// A NumericDate (RFC 7519 §2): a non-negative, finite JSON number of
/// seconds. Fractions are truncated; strings, NaN and negatives are malformed.
pub(crate) fn numeric_date(claims: &JsonObject, name: &str) -> Result<Option<i64>, Reason> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let seconds = value.as_f64().ok_or(Reason::Malformed)?;
    // Beyond year 10000 a date is an attack on our arithmetic, not a date.
    const MAX_SECONDS: f64 = 253_402_300_799.0;
    if !seconds.is_finite() || !(0.0..=MAX_SECONDS).contains(&seconds) {
        return Err(Reason::Malformed);
    }
    Ok(Some(seconds as i64))
}
