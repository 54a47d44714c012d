//! The pipeline's answer for one request, and the one place that turns it
//! into the `jwtgate_auth_decisions_total` sample and the access log's
//! `outcome` and `reason`, so every adapter counts a decision the same way.

use std::sync::Arc;

use super::canonical::TargetError;
use super::cors::CorsPolicy;
use super::limits::LimitExceeded;
use crate::auth::Reason;
use crate::auth::VerifiedToken;
use crate::auth::verify::Failure;
use crate::config::schema::AuthMode;
use crate::pipeline::{CompiledRoute, Snapshot};
use crate::state::rate_limit::Limited;
use crate::telemetry::metrics::RequestMetrics;
use crate::telemetry::metrics::{ALLOW, ANONYMOUS, DENY, WOULD_DENY};

/// What to do with a request. `'s` is the config snapshot it was decided
/// against: routes and prebuilt header values are borrowed from it.
#[derive(Debug)]
pub enum Decision<'s> {
    /// Forward to the route's upstream, as authentication allows.
    Forward {
        route: &'s Arc<CompiledRoute>,
        upstream: UpstreamRewrite,
        auth: Forwarded,
    },
    /// Refused by the route's authentication (400, 401, 403 or 503).
    Deny {
        route: &'s Arc<CompiledRoute>,
        failure: Failure,
    },
    /// A CORS preflight for a route with a CORS policy: jwtgate answers it,
    /// without a token.
    Preflight {
        route: &'s Arc<CompiledRoute>,
        policy: &'s CorsPolicy,
    },
    /// Refused before any route was chosen.
    Refuse(Refusal<'s>),
    /// A clear-text request where only HTTPS is served (the listener's
    /// `redirect` mode, or the route's `https_only`): a 308 to `location`,
    /// or 403 without one. It never reaches the upstream.
    HttpsRequired {
        route: Option<&'s Arc<CompiledRoute>>,
        location: Option<Vec<u8>>,
    },
    /// Over one of the route's rate limits: 429, never forwarded.
    RateLimited {
        route: &'s Arc<CompiledRoute>,
        limited: Limited<'s>,
    },
    /// No route matches: 404.
    NoRoute,
}

/// What a forwarded request carries.
#[derive(Debug)]
pub enum Forwarded {
    /// The identity headers of a token that passed every check.
    Identity(Arc<VerifiedToken>),
    /// No identity: an `off` route, or an `optional` route without a token.
    Anonymous,
    /// An `audit` route: `required` would have refused, but the request is
    /// forwarded, without identity headers. It carries the failure
    /// `required` would have reported.
    WouldDeny(Failure),
}

/// The access log's `reason` for a request refused by a rate limit.
pub const RATE_LIMITED: &str = "rate_limited";

/// The access log's `reason` for a clear-text request answered with a
/// redirect or a refusal instead of being served.
pub const HTTPS_REQUIRED: &str = "https_required";

/// The access log's `reason` for a method the matching routes don't serve.
pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";

/// Every [`Decision::refusal`] there is: the closed set of the `reason`
/// label of `jwtgate_requests_total` (besides `none`).
pub fn refusal_reasons() -> impl Iterator<Item = &'static str> {
    let auth = Reason::ALL.into_iter().chain(Reason::sender_reasons());
    LimitExceeded::ALL
        .map(LimitExceeded::as_str)
        .into_iter()
        .chain(TargetError::ALL.map(TargetError::reason))
        .chain([METHOD_NOT_ALLOWED, HTTPS_REQUIRED, RATE_LIMITED])
        .chain(auth.map(Reason::as_str))
}

/// The check name of a failure to find a usable token in the request.
pub const TOKEN_CHECK: &str = "token";

/// What jwtgate answers itself before routing completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal<'s> {
    /// The request head is over a configured limit: 414 or 431.
    Limit(LimitExceeded),
    /// The request-target can't be routed safely: 400.
    Target(TargetError),
    /// The longest matching prefix has no route for this method: 405, with
    /// the `Allow` value prebuilt in the snapshot.
    MethodNotAllowed { allow: &'s str },
}

impl Refusal<'_> {
    /// The access log's `reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Limit(exceeded) => exceeded.as_str(),
            Refusal::Target(error) => error.reason(),
            Refusal::MethodNotAllowed { .. } => METHOD_NOT_ALLOWED,
        }
    }
}

/// How the upstream request differs from the client's, decided while
/// routing. Both are `None` in the common case, and then cost nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamRewrite {
    /// The origin-form target to send when it differs from the client's (a
    /// canonicalized path, an absolute-form request).
    pub target: Option<Vec<u8>>,
    /// The `Host` to send: an absolute-form request's authority.
    pub host: Option<Vec<u8>>,
}

impl<'s> Decision<'s> {
    /// The route the request was attributed to, if any.
    pub fn route(&self) -> Option<&'s Arc<CompiledRoute>> {
        match self {
            Decision::Forward { route, .. }
            | Decision::Deny { route, .. }
            | Decision::Preflight { route, .. }
            | Decision::RateLimited { route, .. } => Some(route),
            Decision::HttpsRequired { route, .. } => *route,
            Decision::Refuse(_) | Decision::NoRoute => None,
        }
    }

    /// The `outcome` of an authentication decision; `None` when none was
    /// made (an `off` route, a preflight, a refusal before routing).
    pub fn outcome(&self) -> Option<&'static str> {
        match self {
            Decision::Forward {
                auth: Forwarded::Identity(_),
                ..
            } => Some(ALLOW),
            Decision::Forward {
                route,
                auth: Forwarded::Anonymous,
                ..
            } if route.mode != AuthMode::Off => Some(ANONYMOUS),
            Decision::Forward {
                auth: Forwarded::WouldDeny(_),
                ..
            } => Some(WOULD_DENY),
            Decision::Deny { .. } => Some(DENY),
            _ => None,
        }
    }

    /// Why jwtgate refused, or in audit mode would have refused: the access
    /// log's `reason`.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Decision::Forward {
                auth: Forwarded::WouldDeny(failure),
                ..
            }
            | Decision::Deny { failure, .. } => Some(failure.rejection.reason.as_str()),
            Decision::Refuse(refusal) => Some(refusal.as_str()),
            Decision::HttpsRequired { .. } => Some(HTTPS_REQUIRED),
            Decision::RateLimited { .. } => Some(RATE_LIMITED),
            _ => None,
        }
    }

    /// Why jwtgate answered the request itself instead of serving it: the
    /// `reason` of `jwtgate_requests_total`. Unlike [`Self::reason`], not
    /// an audit route's would-be refusal, which was served.
    pub fn refusal(&self) -> Option<&'static str> {
        match self {
            Decision::Forward { .. } => None,
            _ => self.reason(),
        }
    }

    /// Why authentication refused, or would have on an audit route.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Decision::Forward {
                auth: Forwarded::WouldDeny(failure),
                ..
            }
            | Decision::Deny { failure, .. } => Some(failure),
            _ => None,
        }
    }

    /// Counts the decision in `jwtgate_auth_decisions_total`. Every adapter
    /// calls this, so a reason is labelled the same whoever asked.
    pub fn record(&self, snapshot: &Snapshot, metrics: &RequestMetrics) {
        let (Some(route), Some(outcome)) = (self.route(), self.outcome()) else {
            return;
        };
        let issuer = match self {
            Decision::Forward {
                auth: Forwarded::Identity(identity),
                ..
            } => Some(identity.issuer),
            _ => self.failure().and_then(|failure| failure.issuer),
        };
        let issuer = issuer.map(|i| (i, snapshot.issuers[i].name.as_str()));
        let reason = self
            .failure()
            .map(|failure| failure.rejection.reason.as_str());
        metrics.record_route_decision(&route.name, &route.series, issuer, outcome, reason);
    }
}
