//! Who vouches for a token: its signature, for a compact JWS (with the
//! bounded refetch of a remote issuer's keys on an unknown `kid`), or its
//! issuer's introspection endpoint (RFC 7662), for anything else on a
//! route that trusts an introspecting issuer. Either way the route's
//! rules, revocation and status lists follow, the same for both.

use std::sync::Arc;
use std::time::Instant;

use super::{CompiledRoute, Pipeline, STATUS_CHECK, Snapshot};
use crate::auth::verify::{Explain, Failure, Note, UNNAMED_CHECK};
use crate::auth::{Reason, Rejection, VerifiedToken};
use crate::introspection::Refusal;
use crate::keys::KeyStore;
use crate::telemetry::Exemplar;

/// The check an introspecting issuer's answer failed.
pub const INTROSPECTION_CHECK: &str = "introspection";

/// Whether `token` goes to the route's introspecting issuers: it is not a
/// compact JWS (three segments), and the route trusts one. Configs without
/// introspection pay one branch.
pub(super) fn introspected(snapshot: &Snapshot, route: &CompiledRoute, token: &str) -> bool {
    if !snapshot.introspects {
        return false;
    }
    let introspecting = route
        .policy
        .issuers
        .iter()
        .any(|&index| matches!(snapshot.introspectors.get(index), Some(Some(_))));
    introspecting && token.bytes().filter(|&b| b == b'.').count() != 2
}

impl Pipeline {
    /// A JWS's verdict: verified (or found in the cache), refetching a
    /// remote issuer's keys once when it names a `kid` they lack.
    pub(super) async fn verify_jws(
        &self,
        snapshot: &Snapshot,
        route: &CompiledRoute,
        token: &str,
        exemplar: Option<Exemplar>,
        explain: &mut (impl Explain + Send),
    ) -> Result<Arc<VerifiedToken>, Failure> {
        let mut outcome = self.authorize(snapshot, route, token, exemplar, explain);
        if let Err(failure) = &outcome
            && self.refetch
            && let Some((keys, seen)) = refetchable(snapshot, failure)
        {
            // Whether or not this request triggered the refetch (it may be
            // rate-limited, or another request's refetch may have brought
            // the key), only a changed key set can change the answer.
            keys.refetch().await;
            if keys.generation() != seen {
                outcome = self.authorize(snapshot, route, token, exemplar, explain);
            }
        }
        outcome
    }

    /// An opaque token's verdict: the first of the route's introspecting
    /// issuers (in config order) that says it is active vouches for it.
    pub(super) async fn introspect(
        &self,
        snapshot: &Snapshot,
        route: &CompiledRoute,
        token: &str,
        exemplar: Option<Exemplar>,
        explain: &mut (impl Explain + Send),
    ) -> Result<Arc<VerifiedToken>, Failure> {
        let started = Instant::now();
        // As for a JWS: an oversized token is refused before anyone is
        // asked about it.
        if token.len() > snapshot.max_token_bytes {
            explain.failed("structure", Reason::TooLarge);
            return Err(Failure {
                rejection: Rejection::invalid_token(Reason::TooLarge),
                issuer: None,
                check: "structure",
                keys_seen: None,
                refused: None,
            });
        }
        let outcome = match self.ask_issuers(snapshot, route, token, explain).await {
            Ok(vouched) => {
                let now = self.clock.now_unix();
                route
                    .policy
                    .authorize_vouched(vouched, &snapshot.issuers, now, explain)
                    .and_then(|verified| self.not_revoked(snapshot, verified, explain))
                    .and_then(|verified| self.status_valid(snapshot, verified, explain))
            }
            Err(failure) => Err(failure),
        };
        if let Some(histogram) = &self.verify_duration {
            histogram.observe(started.elapsed().as_secs_f64(), exemplar);
        }
        outcome
    }

    /// The route's introspecting issuers, asked in turn. When none says
    /// active, the refusal that knows most wins: an active token that
    /// fails its issuer's rules, then an issuer that could not answer
    /// (503: it might have said active), then inactive.
    async fn ask_issuers(
        &self,
        snapshot: &Snapshot,
        route: &CompiledRoute,
        token: &str,
        explain: &mut (impl Explain + Send),
    ) -> Result<Arc<VerifiedToken>, Failure> {
        let mut refused: Option<(usize, Refusal)> = None;
        for &index in &route.policy.issuers {
            let Some(Some(introspector)) = snapshot.introspectors.get(index) else {
                continue;
            };
            let verdict = introspector
                .check(
                    token,
                    &snapshot.issuers,
                    index,
                    &*self.clock,
                    &self.introspection_metrics,
                )
                .await;
            match verdict {
                Ok(vouched) => {
                    explain.passed(INTROSPECTION_CHECK, &|| {
                        format!("active at {}", snapshot.issuers[index].name)
                    });
                    return Ok(vouched);
                }
                Err(refusal) => {
                    if refused.is_none_or(|(_, known)| weight(refusal) > weight(known)) {
                        refused = Some((index, refusal));
                    }
                }
            }
        }
        let (index, refusal) = refused.unwrap_or((route.policy.issuers[0], Refusal::Inactive));
        let rejection = match refusal {
            Refusal::Inactive => Rejection::invalid_token(Reason::TokenInactive),
            Refusal::Invalid(reason) => Rejection::invalid_token(reason),
            Refusal::Unavailable => Rejection::introspection_unavailable(),
        };
        explain.failed(INTROSPECTION_CHECK, rejection.reason);
        Err(Failure {
            rejection,
            issuer: Some(index),
            check: INTROSPECTION_CHECK,
            keys_seen: None,
            refused: None,
        })
    }

    fn authorize(
        &self,
        snapshot: &Snapshot,
        route: &CompiledRoute,
        token: &str,
        exemplar: Option<Exemplar>,
        explain: &mut impl Explain,
    ) -> Result<Arc<VerifiedToken>, Failure> {
        let started = Instant::now();
        let outcome = route.policy.authorize(
            token,
            &snapshot.issuers,
            self.clock.now_unix(),
            snapshot.max_token_bytes,
            self.cache.as_ref(),
            explain,
        );
        let outcome = outcome
            .and_then(|verified| self.not_revoked(snapshot, verified, explain))
            .and_then(|verified| self.status_valid(snapshot, verified, explain));
        if let Some(histogram) = &self.verify_duration {
            histogram.observe(started.elapsed().as_secs_f64(), exemplar);
        }
        outcome
    }

    /// After the route's policy, as DESIGN's pipeline orders it: a token
    /// the route would refuse anyway is refused for that (403) first.
    fn not_revoked(
        &self,
        snapshot: &Snapshot,
        verified: Arc<VerifiedToken>,
        explain: &mut impl Explain,
    ) -> Result<Arc<VerifiedToken>, Failure> {
        let Some(list) = &self.revocations else {
            return Ok(verified);
        };
        let iss = &snapshot.issuers[verified.issuer].issuer;
        match list.check(iss, &verified) {
            None => {
                explain.noted(Note::Revoked(false));
                explain.passed("revocation", &|| "not revoked".into());
                Ok(verified)
            }
            Some(_) => {
                explain.noted(Note::Revoked(true));
                explain.failed("revocation", Reason::Revoked);
                Err(Failure {
                    rejection: Rejection::invalid_token(Reason::Revoked),
                    issuer: Some(verified.issuer),
                    check: UNNAMED_CHECK,
                    keys_seen: None,
                    refused: Some(verified),
                })
            }
        }
    }

    /// The token's entry in its issuer's status list, when it names one
    /// and the issuer checks them.
    fn status_valid(
        &self,
        snapshot: &Snapshot,
        verified: Arc<VerifiedToken>,
        explain: &mut impl Explain,
    ) -> Result<Arc<VerifiedToken>, Failure> {
        let Some(Some(lists)) = snapshot.status_lists.get(verified.issuer) else {
            return Ok(verified);
        };
        match lists.check(&verified.claims, self.clock.now_unix()) {
            Ok(()) => {
                explain.passed(STATUS_CHECK, &|| "status list".into());
                Ok(verified)
            }
            Err(rejection) => {
                explain.failed(STATUS_CHECK, rejection.reason);
                Err(Failure {
                    rejection,
                    issuer: Some(verified.issuer),
                    check: STATUS_CHECK,
                    keys_seen: None,
                    refused: Some(verified),
                })
            }
        }
    }
}

/// How much a refusal knows of the token, for choosing among issuers'.
fn weight(refusal: Refusal) -> u8 {
    match refusal {
        Refusal::Inactive => 0,
        Refusal::Unavailable => 1,
        Refusal::Invalid(_) => 2,
    }
}

/// The key store worth refetching for this failure: a remote issuer's, when
/// the token named a `kid` we don't have (keys may have rotated) or there
/// are no keys yet, with the key-set generation the failure was decided
/// against. The store itself bounds and rate-limits the refetch.
fn refetchable<'a>(snapshot: &'a Snapshot, failure: &Failure) -> Option<(&'a KeyStore, u64)> {
    let reason = failure.rejection.reason;
    if reason != Reason::UnknownKid && reason != Reason::JwksUnavailable {
        return None;
    }
    let keys = &snapshot.issuers[failure.issuer?].keys;
    keys.is_remote()
        .then_some((keys.as_ref(), failure.keys_seen?))
}
