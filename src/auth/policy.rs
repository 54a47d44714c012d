//! A route's rules for a verified token: which issuers and audiences it
//! trusts, which scopes and claim values it demands. Failing these is a 403:
//! the token is fine, the route just doesn't admit it.

use std::sync::Arc;

use serde_json::Value;

use super::claims;
use super::token_cache::TokenCache;
use super::verify::{
    self, Explain, Failure, IssuerVerifier, Note, UNNAMED_CHECK, VerifiedToken, VerifyRequest,
};
use super::{Reason, Rejection};

#[derive(Debug, Clone)]
pub struct ClaimRequirement {
    pub claim: String,
    pub any_of: Vec<Value>,
    pub all_of: Vec<Value>,
}

#[derive(Debug, Clone, Default)]
pub struct RoutePolicy {
    /// Indices into the compiled issuer list.
    pub issuers: Vec<usize>,
    pub audiences: Vec<String>,
    pub scopes_all_of: Vec<String>,
    pub scopes_any_of: Vec<String>,
    pub claims: Vec<ClaimRequirement>,
    /// The `scope="…"` value for 403 challenges, precomputed.
    pub required_scope: Option<String>,
}

impl RoutePolicy {
    pub fn new(
        issuers: Vec<usize>,
        audiences: Vec<String>,
        scopes_all_of: Vec<String>,
        scopes_any_of: Vec<String>,
        claims: Vec<ClaimRequirement>,
    ) -> Self {
        let mut wanted: Vec<&str> = scopes_all_of.iter().map(String::as_str).collect();
        wanted.extend(scopes_any_of.iter().map(String::as_str));
        let required_scope = (!wanted.is_empty()).then(|| wanted.join(" "));
        Self {
            issuers,
            audiences,
            scopes_all_of,
            scopes_any_of,
            claims,
            required_scope,
        }
    }

    /// Verifies `token` (or finds it in `cache` and re-checks what time
    /// and this route could change) and applies this route's rules to it.
    pub fn authorize(
        &self,
        token: &str,
        issuers: &[Arc<IssuerVerifier>],
        now: i64,
        max_token_bytes: usize,
        cache: Option<&TokenCache>,
        explain: &mut impl Explain,
    ) -> Result<Arc<VerifiedToken>, Failure> {
        let request = self.verify_request(now, max_token_bytes);
        // A token over the size cap can't have been cached: don't hash it.
        let cache = cache
            .filter(|_| token.len() <= max_token_bytes)
            .map(|cache| (cache, TokenCache::key(token)));
        // A result from before the issuer's keys or rules changed no longer
        // counts: the key that verified it may be gone, and a reload may have
        // moved issuers to other indices.
        let cached = cache.as_ref().and_then(|(cache, key)| {
            cache.get(key, |hit| {
                issuers.get(hit.issuer).is_some_and(|issuer| {
                    issuer.id == hit.verifier && issuer.keys.generation() == hit.key_generation
                })
            })
        });
        if cache.is_some() {
            explain.noted(Note::CacheHit(cached.is_some()));
        }
        let verified = match cached {
            Some(hit) => {
                verify::revalidate(&hit, issuers, request, explain)?;
                hit
            }
            None => {
                let verified = Arc::new(verify::verify(token, issuers, request, explain)?);
                if let Some((cache, key)) = cache {
                    cache.insert(key, verified.clone(), now);
                }
                verified
            }
        };
        self.admitted(verified, issuers, explain)
    }

    /// A token vouched for elsewhere (an introspection answer, judged by
    /// its issuer's rules): what a cache hit is checked for (the time
    /// claims, this route's issuers and audiences), then this route's
    /// rules.
    pub fn authorize_vouched(
        &self,
        vouched: Arc<VerifiedToken>,
        issuers: &[Arc<IssuerVerifier>],
        now: i64,
        explain: &mut impl Explain,
    ) -> Result<Arc<VerifiedToken>, Failure> {
        let request = self.verify_request(now, usize::MAX);
        verify::revalidate(&vouched, issuers, request, explain)?;
        self.admitted(vouched, issuers, explain)
    }

    /// What verifying for this route asks beyond the issuer's rules.
    fn verify_request(&self, now: i64, max_token_bytes: usize) -> VerifyRequest<'_> {
        VerifyRequest {
            issuers: &self.issuers,
            audiences: &self.audiences,
            now,
            max_token_bytes,
        }
    }

    /// This route's scope and claim rules on a token that passed its
    /// issuer's: refused, it is still named in the failure (403).
    fn admitted(
        &self,
        verified: Arc<VerifiedToken>,
        issuers: &[Arc<IssuerVerifier>],
        explain: &mut impl Explain,
    ) -> Result<Arc<VerifiedToken>, Failure> {
        self.admit(&verified, &issuers[verified.issuer], explain)
            .map_err(|rejection| Failure {
                rejection,
                issuer: Some(verified.issuer),
                check: UNNAMED_CHECK,
                keys_seen: None,
                refused: Some(verified.clone()),
            })?;
        Ok(verified)
    }

    /// Whether this route, as a reload left it, still admits `token`,
    /// verified under an earlier config by the issuer whose `iss` is `iss`:
    /// that issuer must still be one of the route's, and what a config can
    /// change (audiences, scopes, claim rules) must still pass. The
    /// signature is not checked again (a key rotation is no reason to end
    /// a connection), nor the time claims (its timer ends it at expiry).
    pub fn readmit(
        &self,
        token: &VerifiedToken,
        iss: &str,
        issuers: &[Arc<IssuerVerifier>],
    ) -> Result<(), Rejection> {
        let issuer = self
            .issuers
            .iter()
            .filter_map(|&i| issuers.get(i))
            .find(|issuer| issuer.issuer == iss)
            .ok_or(Rejection::invalid_token(Reason::WrongIssuer))?;
        verify::audiences_hold(token, issuer, &self.audiences).map_err(Rejection::invalid_token)?;
        self.admit(token, issuer, &mut ())
    }

    fn admit(
        &self,
        token: &VerifiedToken,
        issuer: &IssuerVerifier,
        explain: &mut impl Explain,
    ) -> Result<(), Rejection> {
        if !self.scopes_all_of.is_empty() || !self.scopes_any_of.is_empty() {
            let granted = claims::scopes(&token.claims, issuer.scope_claim.as_deref());
            let has = |wanted: &String| granted.contains(wanted);
            let all = self.scopes_all_of.iter().all(has);
            let any = self.scopes_any_of.is_empty() || self.scopes_any_of.iter().any(has);
            if !(all && any) {
                explain.failed("scopes", Reason::InsufficientScope);
                return Err(self.forbidden(Reason::InsufficientScope));
            }
            explain.passed("scopes", &|| {
                format!(
                    "granted {:?} satisfy all_of {:?} any_of {:?}",
                    granted.iter().collect::<Vec<_>>(),
                    self.scopes_all_of,
                    self.scopes_any_of
                )
            });
        }
        for rule in &self.claims {
            let Some(value) = claims::lookup(&token.claims, &rule.claim) else {
                explain.failed("claim", Reason::MissingClaim);
                return Err(self.forbidden(Reason::MissingClaim));
            };
            let all = rule.all_of.iter().all(|v| claims::holds(value, v));
            let any = rule.any_of.is_empty() || rule.any_of.iter().any(|v| claims::holds(value, v));
            if !(all && any) {
                explain.failed("claim", Reason::ClaimMismatch);
                return Err(self.forbidden(Reason::ClaimMismatch));
            }
            explain.passed("claim", &|| {
                format!("{} satisfies the route's rule", rule.claim)
            });
        }
        Ok(())
    }

    fn forbidden(&self, reason: Reason) -> Rejection {
        Rejection::forbidden(reason, self.required_scope.clone())
    }
}
