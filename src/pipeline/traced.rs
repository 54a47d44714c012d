//! A decision told to its request's trace: the same facts every adapter's
//! server span carries, gathered while deciding (a sampled request only)
//! and written once the decision is made.

use opentelemetry::Value;

use super::{Decision, Forwarded, Pipeline, RequestView, Snapshot};
use crate::auth::verify::{Explain, Note};
use crate::jose::Algorithm;
use crate::telemetry::traces::{RequestTrace, SpanName};

/// What a decision learned on its way that the decision itself doesn't
/// keep: whether the token was cached, its `kid`, whether the revocation
/// list was asked.
#[derive(Debug, Default)]
pub struct DecisionNotes {
    cache_hit: Option<bool>,
    algorithm: Option<Algorithm>,
    kid: Option<String>,
    revoked: Option<bool>,
}

impl Explain for DecisionNotes {
    fn noted(&mut self, note: Note<'_>) {
        match note {
            Note::CacheHit(hit) => self.cache_hit = Some(hit),
            Note::Algorithm(alg) => self.algorithm = Some(alg),
            Note::Kid(kid) => self.kid = Some(kid.to_owned()),
            Note::Revoked(revoked) => self.revoked = Some(revoked),
        }
    }
}

impl Decision<'_> {
    /// Writes the decision's attributes into `trace`: route, outcome,
    /// reason, issuer, the token's algorithm and `kid`, the cache, where the
    /// issuer's keys came from, revocation, rate limit and `sub`. Never a
    /// token, nor a claim beyond `sub`.
    pub fn trace(&self, snapshot: &Snapshot, notes: &DecisionNotes, trace: &mut RequestTrace) {
        if !trace.sampled() {
            return;
        }
        let route = self.route();
        trace.set_text("jwtgate.route", route.map(|r| r.name.as_str()));
        trace.set_text("jwtgate.outcome", self.outcome());
        trace.set_text("jwtgate.reason", self.reason());
        let identity = match self {
            Decision::Forward {
                auth: Forwarded::Identity(identity),
                ..
            } => Some(identity),
            _ => self.failure().and_then(|failure| failure.refused.as_ref()),
        };
        let issuer = identity
            .map(|i| i.issuer)
            .or_else(|| self.failure().and_then(|f| f.issuer))
            .and_then(|i| snapshot.issuers.get(i));
        if let Some(issuer) = issuer {
            trace.set_text("jwtgate.issuer", Some(&issuer.name));
            trace.set("jwtgate.keys.source", || {
                issuer.keys.source().as_str().into()
            });
        }
        let algorithm = identity.and_then(|i| i.algorithm).or(notes.algorithm);
        if let Some(algorithm) = algorithm {
            trace.set("jwtgate.token.alg", || Value::from(algorithm.to_string()));
        }
        trace.set_text("jwtgate.token.kid", notes.kid.as_deref());
        if let Some(hit) = notes.cache_hit {
            trace.set("jwtgate.token.cache_hit", || hit.into());
        }
        if let Some(revoked) = notes.revoked {
            let revocation = if revoked { "revoked" } else { "not_revoked" };
            trace.set("jwtgate.revocation", || revocation.into());
        }
        if route.is_some_and(|r| !r.rate_limits.is_empty()) {
            let limited = matches!(self, Decision::RateLimited { .. });
            let result = if limited { "limited" } else { "allowed" };
            trace.set("jwtgate.rate_limit", || result.into());
        }
        trace.set_text("enduser.id", identity.and_then(|i| i.subject()));
    }
}

impl Pipeline {
    /// [`Pipeline::decide`], telling a sampled request's trace what was
    /// decided and naming its span after the route; an unsampled or
    /// untraced request is decided exactly as by `decide`.
    pub async fn decide_traced<'s>(
        &self,
        snapshot: &'s Snapshot,
        view: &RequestView<'_>,
        trace: Option<&mut RequestTrace>,
    ) -> Decision<'s> {
        let Some(trace) = trace.filter(|trace| trace.sampled()) else {
            return self.decide(snapshot, view).await;
        };
        let mut notes = DecisionNotes::default();
        let decision = self.decide_explained(snapshot, view, &mut notes).await;
        decision.trace(snapshot, &notes, trace);
        trace.name(SpanName {
            method: view.method.as_str(),
            route: decision.route().map(|route| route.name.as_str()),
        });
        decision
    }
}
