//! Plain words for a failed check, with the values it compared: for
//! `jwtgate token verify`, where a developer needs "exp 1700000000 is 3600s
//! before now", not a reason label. Never on the request path: it parses the
//! token again and allocates freely.

use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use super::Reason;
use super::claims;
use super::dpop::DpopFailure;
use super::json::{JsonObject, JsonRef};
use super::policy::RoutePolicy;
use super::token::{self, ParsedToken};
use super::verify::IssuerVerifier;
use crate::jose::KeyFamily;

/// What a reason means, in a sentence fragment a user can act on.
pub fn summary(reason: Reason) -> &'static str {
    match reason {
        Reason::MissingToken => "no token was sent",
        Reason::Malformed => "the token is not a well-formed JWT",
        Reason::UnsupportedAlg => "the token's alg is not an algorithm jwtgate verifies",
        Reason::AlgNotAllowed => "the token's alg is not allowed here",
        Reason::UnknownKid => "no key of the issuer has the token's kid",
        Reason::BadSignature => "the signature does not verify",
        Reason::Expired => "the token has expired",
        Reason::NotYetValid => "the token is not valid yet (nbf)",
        Reason::IssuedInFuture => "the token was issued in the future (iat)",
        Reason::LifetimeTooLong => "the token lives longer than the issuer allows",
        Reason::WrongIssuer => "the token's issuer is not accepted on this route",
        Reason::WrongAudience => "the token is meant for another audience",
        Reason::WrongTokenType => "the token is not an access token of this issuer",
        Reason::MissingClaim => "a required claim is missing",
        Reason::ClaimMismatch => "a claim does not have a required value",
        Reason::InsufficientScope => "the token lacks a scope this route requires",
        Reason::Revoked => "the token was revoked",
        Reason::JwksUnavailable => "the issuer's keys are not available",
        Reason::TooLarge => "the token is larger than the configured maximum",
        Reason::AmbiguousToken => "a token was sent in more than one place",
        Reason::UnsupportedHeader => {
            "the token's header uses an extension jwtgate does not implement"
        }
        Reason::EncryptedToken => {
            "the token is encrypted (JWE); only signed tokens (JWS) are verified"
        }
        Reason::TokenInvalidated => "the issuer's status list marks the token invalid",
        Reason::TokenSuspended => "the issuer's status list marks the token suspended",
        Reason::TokenStatusUnknown => {
            "the issuer's status list gives the token a status jwtgate does not accept"
        }
        Reason::StatusListNotAllowed => {
            "the token names a status list outside the issuer's status_list.allowed_uris"
        }
        Reason::StatusListUnavailable => "the token's status list is not available",
        Reason::TokenInactive => "the issuer's introspection endpoint says the token is not active",
        Reason::IntrospectionUnavailable => {
            "the issuer's introspection endpoint could not be asked about the token"
        }
        Reason::Dpop(DpopFailure::MissingProof) => {
            "the token is bound to a key (cnf.jkt) and came without a DPoP proof of that key"
        }
        Reason::Dpop(DpopFailure::KeyMismatch) => {
            "the token is bound to another key than the DPoP proof's (or to none)"
        }
        Reason::Dpop(_) => "the DPoP proof sent with the token failed a check",
        Reason::CertificateMismatch => {
            "the token is bound to a client certificate this connection did not present"
        }
        Reason::SenderConstraintRequired => {
            "the route requires a token bound to a key or a client certificate"
        }
    }
}

/// Which part of a token that is no JWT is wrong, the first one found.
fn malformed(token: &str) -> String {
    const SHAPE: &str = "a JWT has three base64url segments separated by dots";
    let segments: Vec<&str> = token.split('.').collect();
    if segments.len() != 3 {
        let what = match token.trim() {
            "" => "this is empty".to_string(),
            _ if segments.len() == 1 => "this has no dot".to_string(),
            _ => format!("this has {}", segments.len()),
        };
        return format!("{SHAPE}; {what}");
    }
    let names = [
        "the first (the header)",
        "the second (the claims)",
        "the third (the signature)",
    ];
    for (index, (segment, name)) in segments.iter().zip(names).enumerate() {
        let decoded = Some(segment)
            .filter(|segment| !segment.is_empty())
            .and_then(|segment| URL_SAFE_NO_PAD.decode(segment).ok());
        let Some(bytes) = decoded else {
            let what = if segment.is_empty() {
                "is empty"
            } else if index < 2 {
                "is not base64url JSON"
            } else {
                "is not unpadded base64url"
            };
            return format!("{SHAPE}; {name} {what}");
        };
        if index < 2 && JsonObject::parse(&bytes).is_err() {
            let what = match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(_)) => "is a JSON object with a member name twice",
                Ok(_) => "is base64url JSON, but not an object",
                Err(_) => "is base64url, but not JSON",
            };
            return format!("{SHAPE}; {name} {what}");
        }
    }
    "the header has no alg, or an alg, kid or typ that is not a string".into()
}

/// A key type as people name it.
pub fn family_name(family: KeyFamily) -> &'static str {
    match family {
        KeyFamily::Hmac => "HMAC secret",
        KeyFamily::Rsa => "RSA key",
        KeyFamily::EcP256 => "EC P-256 key",
        KeyFamily::EcP384 => "EC P-384 key",
        KeyFamily::Ed25519 => "Ed25519 key",
    }
}

/// Describes failed checks of one token against one route.
pub struct FailureDetail<'a> {
    token: &'a str,
    issuers: &'a [Arc<IssuerVerifier>],
    policy: &'a RoutePolicy,
    now: i64,
    max_token_bytes: usize,
}

impl<'a> FailureDetail<'a> {
    pub fn new(
        token: &'a str,
        issuers: &'a [Arc<IssuerVerifier>],
        policy: &'a RoutePolicy,
        now: i64,
        max_token_bytes: usize,
    ) -> Self {
        Self {
            token,
            issuers,
            policy,
            now,
            max_token_bytes,
        }
    }

    /// The values behind `check` failing with `reason` (`check` as the
    /// verifier names it: "exp", "aud", "scopes", …), or `None` when the
    /// reason says it all.
    pub fn describe(&self, check: &str, reason: Reason) -> Option<String> {
        let parsed = match token::parse(self.token, self.max_token_bytes) {
            Ok(parsed) => parsed,
            Err(_) => return self.structure(reason),
        };
        let claims = &parsed.claims;
        let issuer = self.issuer_of(claims);
        match (check, reason) {
            ("issuer", Reason::WrongIssuer) => Some(self.wrong_issuer(claims)),
            ("issuer", Reason::MissingClaim) => Some("the token has no iss claim".into()),
            ("issuer", Reason::Malformed) => Some("the token's iss is not a string".into()),
            ("algorithm", Reason::UnsupportedAlg) => Some(unsupported_alg(parsed.header.alg())),
            ("algorithm", Reason::AlgNotAllowed) => issuer.map(|issuer| {
                let allowed: Vec<&str> = issuer.algorithms.iter().map(|a| a.as_str()).collect();
                format!(
                    "token alg {}; issuer {:?} allows {}",
                    parsed.header.alg(),
                    issuer.name,
                    allowed.join(", ")
                )
            }),
            ("key", _) => issuer.map(|issuer| key_detail(&parsed, issuer, reason)),
            ("signature", Reason::BadSignature) => Some(format!(
                "no key of issuer {} usable with {}{} verifies this signature: signed by another key, or altered",
                issuer.map_or("?", |i| i.name.as_str()),
                parsed.header.alg(),
                parsed
                    .header
                    .kid()
                    .map(|kid| format!(" with kid {kid:?}"))
                    .unwrap_or_default()
            )),
            ("token type", Reason::WrongTokenType) => issuer.map(|i| token_type(&parsed, i)),
            ("exp" | "nbf" | "iat", Reason::Malformed) => Some(format!(
                "{check} is {}, not a NumericDate (a non-negative number of seconds)",
                shown(claims.get(check))
            )),
            ("exp", Reason::MissingClaim) => Some(format!(
                "the token has no exp, and issuer {} requires one",
                issuer.map_or("?", |i| i.name.as_str())
            )),
            ("exp", Reason::Expired) => self.time("exp", claims, issuer),
            ("nbf", Reason::NotYetValid) => self.time("nbf", claims, issuer),
            ("iat", Reason::IssuedInFuture) => self.time("iat", claims, issuer),
            ("lifetime", Reason::LifetimeTooLong) => issuer.map(|i| self.lifetime(claims, i)),
            ("sub", Reason::Malformed) => Some(format!(
                "sub is {}; it must be a non-empty string",
                shown(claims.get("sub"))
            )),
            ("sub", Reason::MissingClaim) => {
                Some("the token has no sub, and the issuer requires one".into())
            }
            ("aud", _) => issuer.map(|i| {
                audience(
                    claims,
                    &i.audiences,
                    &format!("issuer {:?}", i.name),
                    reason,
                )
            }),
            ("aud (route)", _) => Some(audience(
                claims,
                &self.policy.audiences,
                "this route",
                reason,
            )),
            ("scopes", Reason::InsufficientScope) => {
                issuer.map(|i| self.scopes(claims, i.scope_claim.as_deref()))
            }
            ("claim", Reason::MissingClaim | Reason::ClaimMismatch) => self.claim_rule(claims),
            _ => None,
        }
    }

    fn structure(&self, reason: Reason) -> Option<String> {
        match reason {
            Reason::TooLarge => Some(format!(
                "the token is {} bytes; tokens.max_bytes is {}",
                self.token.len(),
                self.max_token_bytes
            )),
            Reason::EncryptedToken => Some(
                "five dot-separated segments: a JWE, which needs the recipient's private key to read".into(),
            ),
            Reason::Malformed => Some(malformed(self.token)),
            Reason::UnsupportedHeader => {
                Some("the header has crit, or b64: false (RFC 7797)".into())
            }
            _ => None,
        }
    }

    /// The route's issuer the token's `iss` selects, as verification does.
    fn issuer_of(&self, claims: &JsonObject) -> Option<&'a IssuerVerifier> {
        let iss = claims.get("iss")?.as_str()?;
        self.policy
            .issuers
            .iter()
            .map(|&i| self.issuers[i].as_ref())
            .find(|issuer| issuer.issuer == iss)
    }

    fn wrong_issuer(&self, claims: &JsonObject) -> String {
        let iss = claims.get("iss").and_then(JsonRef::as_str).unwrap_or("");
        let accepted: Vec<String> = self
            .policy
            .issuers
            .iter()
            .map(|&i| format!("{} ({})", self.issuers[i].name, self.issuers[i].issuer))
            .collect();
        let accepted = accepted.join(", ");
        match self.issuers.iter().find(|issuer| issuer.issuer == iss) {
            Some(known) => format!(
                "token iss {iss:?} is issuer {:?}, which is known but not allowed on this route; the route accepts {accepted}",
                known.name
            ),
            None => {
                format!("token iss {iss:?} is no configured issuer; the route accepts {accepted}")
            }
        }
    }

    /// `exp`, `nbf` or `iat` against now, both as numbers and dates.
    fn time(
        &self,
        name: &str,
        claims: &JsonObject,
        issuer: Option<&IssuerVerifier>,
    ) -> Option<String> {
        let at = claims.get(name)?.as_f64()? as i64;
        let leeway = issuer.map_or(0, |i| i.leeway_secs);
        let relation = if at <= self.now {
            format!("{}s before", self.now - at)
        } else {
            format!("{}s after", at - self.now)
        };
        Some(format!(
            "token {name} {at} ({}) is {relation} now {} ({}); leeway {leeway}s",
            date(at),
            self.now,
            date(self.now)
        ))
    }

    fn lifetime(&self, claims: &JsonObject, issuer: &IssuerVerifier) -> String {
        let max = issuer.max_lifetime_secs.unwrap_or_default();
        let number = |name| claims.get(name).and_then(JsonRef::as_f64).map(|n| n as i64);
        match (number("exp"), number("iat")) {
            (None, _) => {
                format!("the token has no exp, so it never expires; max_lifetime is {max}s")
            }
            (Some(exp), Some(iat)) => format!(
                "exp - iat = {}s ({exp} - {iat}); max_lifetime is {max}s",
                exp - iat
            ),
            (Some(exp), None) => format!(
                "no iat: exp - now = {}s; max_lifetime is {max}s",
                exp - self.now
            ),
        }
    }

    fn scopes(&self, claims: &JsonObject, scope_claim: Option<&str>) -> String {
        let granted: Vec<&str> = claims::scopes(claims, scope_claim).iter().collect();
        let has = |wanted: &&String| granted.contains(&wanted.as_str());
        let mut text = format!("granted {}; required", list(&granted));
        let policy = self.policy;
        if !policy.scopes_all_of.is_empty() {
            let _ = write!(text, " all of {}", list(&policy.scopes_all_of));
        }
        if !policy.scopes_any_of.is_empty() {
            if !policy.scopes_all_of.is_empty() {
                text.push_str(" and");
            }
            let _ = write!(text, " one of {}", list(&policy.scopes_any_of));
        }
        let missing: Vec<&String> = policy.scopes_all_of.iter().filter(|s| !has(s)).collect();
        if !missing.is_empty() {
            let _ = write!(text, "; missing {}", list(&missing));
        }
        text
    }

    /// The first claim rule the token fails, as the policy checks them.
    fn claim_rule(&self, claims: &JsonObject) -> Option<String> {
        self.policy.claims.iter().find_map(|rule| {
            let wanted = rule_text(&rule.any_of, &rule.all_of);
            let Some(value) = claims::lookup(claims, &rule.claim) else {
                return Some(format!(
                    "the token has no claim {:?}; the route requires it to hold {wanted}",
                    rule.claim
                ));
            };
            let all = rule.all_of.iter().all(|v| claims::holds(value, v));
            let any = rule.any_of.is_empty() || rule.any_of.iter().any(|v| claims::holds(value, v));
            (!(all && any)).then(|| {
                format!(
                    "claim {:?} is {}; the route requires it to hold {wanted}",
                    rule.claim,
                    value.to_value()
                )
            })
        })
    }
}

fn unsupported_alg(alg: &str) -> String {
    if alg.eq_ignore_ascii_case("none") {
        format!("token alg {alg:?}: an unsigned token, never accepted")
    } else {
        format!("token alg {alg:?} is not a signature algorithm jwtgate implements")
    }
}

fn key_detail(parsed: &ParsedToken<'_>, issuer: &IssuerVerifier, reason: Reason) -> String {
    let keys = issuer.keys.current();
    let kids: Vec<String> = keys
        .keys
        .iter()
        .map(|key| match &key.kid {
            Some(kid) => format!("{kid:?} ({})", family_name(key.family)),
            None => format!("no kid ({})", family_name(key.family)),
        })
        .collect();
    let alg = parsed.header.alg();
    match (reason, parsed.header.kid()) {
        (Reason::JwksUnavailable, _) => format!(
            "issuer {:?} has no keys (remote keys could not be fetched)",
            issuer.name
        ),
        (Reason::UnknownKid, Some(kid)) => format!(
            "token kid {kid:?}; issuer {:?} has {}",
            issuer.name,
            kids.join(", ")
        ),
        (Reason::UnknownKid, None) => format!(
            "the token has no kid, and no key of issuer {:?} can verify {alg}; keys: {}",
            issuer.name,
            kids.join(", ")
        ),
        (_, kid) => format!(
            "the key with kid {:?} cannot verify {alg} (its type, or the alg its JWK names, differs); keys: {}",
            kid.unwrap_or(""),
            kids.join(", ")
        ),
    }
}

fn token_type(parsed: &ParsedToken<'_>, issuer: &IssuerVerifier) -> String {
    let rule = &issuer.token_type;
    let mut text = format!("token typ {}", shown_str(parsed.header.typ()));
    if !rule.typ.is_empty() {
        let _ = write!(text, "; accepted typ {}", list(&rule.typ));
    }
    if let Some(claim) = &rule.claim {
        let value = claims::lookup(&parsed.claims, claim).map(JsonRef::to_value);
        let _ = write!(
            text,
            "; claim {claim:?} is {}, accepted {}",
            value.map_or("absent".into(), |v| v.to_string()),
            values(&rule.claim_values)
        );
    }
    text
}

fn audience(claims: &JsonObject, accepted: &[String], whose: &str, reason: Reason) -> String {
    match (reason, claims.get("aud")) {
        (_, None) => format!("the token has no aud; {whose} accepts {}", list(accepted)),
        (Reason::Malformed, Some(aud)) => format!(
            "token aud is {}: neither a string nor an array of strings",
            aud.to_value()
        ),
        (_, Some(aud)) => format!(
            "token aud {}; {whose} accepts {}",
            aud.to_value(),
            list(accepted)
        ),
    }
}

fn rule_text(any_of: &[Value], all_of: &[Value]) -> String {
    match (any_of.is_empty(), all_of.is_empty()) {
        (false, true) => format!("one of {}", values(any_of)),
        (true, false) => format!("all of {}", values(all_of)),
        (false, false) => format!("all of {} and one of {}", values(all_of), values(any_of)),
        (true, true) => "any value".into(),
    }
}

/// `[a, b]`, or `none` for an empty list.
fn list<T: AsRef<str>>(items: &[T]) -> String {
    if items.is_empty() {
        return "none".into();
    }
    let items: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    format!("[{}]", items.join(", "))
}

fn values(items: &[Value]) -> String {
    let items: Vec<String> = items.iter().map(Value::to_string).collect();
    format!("[{}]", items.join(", "))
}

fn shown(value: Option<JsonRef<'_>>) -> String {
    value.map_or("absent".into(), |v| v.to_value().to_string())
}

fn shown_str(value: Option<&str>) -> String {
    value.map_or("absent".into(), |v| format!("{v:?}"))
}

/// A NumericDate as an RFC 3339 date, UTC.
fn date(seconds: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(seconds.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}
