//! The decision pipeline: a [`RequestView`] in, a [`Decision`] out.
//! Request limits, the canonical target, routing (host, longest prefix,
//! method), CORS preflights, token extraction, the verified-token cache,
//! verification, the bounded unknown-`kid` refetch (the only await), the
//! route's policy and its mode are all decided here, and nowhere else.
//!
//! Nothing in here knows Pingora or any HTTP server: adapters (the proxy,
//! `jwtgate token verify`) translate their request into a view and the
//! decision into their own answer, and count it with [`Decision::record`].
//! The modules the pipeline routes with live here too, so config
//! compilation, which builds them, never depends on an adapter.

pub mod canonical;
pub mod client;
pub mod cors;
mod decision;
pub mod limits;
pub mod reconsider;
pub mod router;
pub mod sender;
mod snapshot;
mod traced;
mod view;
mod vouch;

use std::sync::Arc;

pub use decision::{
    Decision, Forwarded, HTTPS_REQUIRED, METHOD_NOT_ALLOWED, RATE_LIMITED, Refusal, TOKEN_CHECK,
    UpstreamRewrite, refusal_reasons,
};
pub use snapshot::{ClaimHeader, CompiledRoute, ForwardPlan, HttpsState, LongLived, Snapshot};
pub use traced::DecisionNotes;
pub use view::{Adapter, RequestView, Scheme, TargetForm};

use self::canonical::{RequestTarget, TargetError};
use self::router::Lookup;
use self::view::Headers;
use crate::auth::extract;
use crate::auth::token_cache::TokenCache;
use crate::auth::verify::{Explain, Failure, Note, UNNAMED_CHECK};
use crate::auth::{Reason, Rejection, VerifiedToken};
use crate::clock::SharedClock;
use crate::config::schema::{AuthMode, HttpsOnly};
use crate::introspection::IntrospectionMetrics;
use crate::state::dpop_replay::{DEFAULT_MAX_ENTRIES, DpopReplay};
use crate::state::rate_limit::{self, Limited, RateKey, RateLimits};
use crate::state::revocation::RevocationList;
use crate::telemetry::exemplar::ExemplarHistogram;

/// What outlives a config snapshot and every request: the clock, the
/// verified-token cache, and the verification timer.
pub struct Pipeline {
    clock: SharedClock,
    cache: Option<TokenCache>,
    verify_duration: Option<ExemplarHistogram>,
    refetch: bool,
    revocations: Option<Arc<RevocationList>>,
    rate_limits: Arc<RateLimits>,
    /// The DPoP proofs seen within their window, so each is accepted once.
    dpop_replay: Arc<DpopReplay>,
    /// Where introspection calls are counted.
    introspection_metrics: IntrospectionMetrics,
}

impl Pipeline {
    /// A pipeline that refetches a remote issuer's keys on an unknown `kid`
    /// and records no timings.
    pub fn new(clock: SharedClock, cache: Option<TokenCache>) -> Self {
        Self {
            clock,
            cache,
            verify_duration: None,
            refetch: true,
            revocations: None,
            rate_limits: Arc::default(),
            dpop_replay: Arc::new(DpopReplay::local(DEFAULT_MAX_ENTRIES)),
            introspection_metrics: IntrospectionMetrics::new(),
        }
    }

    /// Counts introspection calls in `metrics` (by default, in counters no
    /// registry shows).
    pub fn with_introspection_metrics(mut self, metrics: IntrospectionMetrics) -> Self {
        self.introspection_metrics = metrics;
        self
    }

    /// Remembers DPoP proofs in `replay` (by default each pipeline has a
    /// table of its own with the default bound).
    pub fn with_dpop_replay(mut self, replay: Arc<DpopReplay>) -> Self {
        self.dpop_replay = replay;
        self
    }

    /// Counts rate limits in `limits` (by default each pipeline has its
    /// own): adapters that share them share one budget.
    pub fn with_rate_limits(mut self, limits: Arc<RateLimits>) -> Self {
        self.rate_limits = limits;
        self
    }

    /// The identity token `route` sends its backend for `identity`, and
    /// the header it goes in; `None` when the route sends none. The clock
    /// is read only for a route that does.
    pub fn identity_token<'r>(
        &self,
        snapshot: &Snapshot,
        route: &'r CompiledRoute,
        identity: &Arc<VerifiedToken>,
    ) -> Option<(&'r http::HeaderName, http::HeaderValue)> {
        let plan = route.forward.identity_token.as_ref()?;
        let tokens = snapshot.identity_tokens.as_ref()?;
        let issuer = snapshot.issuers.get(identity.issuer)?;
        let now = self.clock.now_unix();
        let value = tokens.header_value(plan, route.index, identity, issuer, now)?;
        Some((&plan.header, value))
    }

    /// The rate-limit counters, and with them `jwtgate_rate_limited_total`.
    pub fn rate_limits(&self) -> &Arc<RateLimits> {
        &self.rate_limits
    }

    /// Refuses tokens `list` revokes, whether verified now or found in the
    /// cache.
    pub fn with_revocations(mut self, list: Option<Arc<RevocationList>>) -> Self {
        self.revocations = list;
        self
    }

    /// Observes each verification (and policy check) into `histogram`.
    pub fn timed(mut self, histogram: ExemplarHistogram) -> Self {
        self.verify_duration = Some(histogram);
        self
    }

    /// Never waits for a refetch: for callers with no refresher running
    /// (the CLI fetches keys itself, once), where a wait could only time out.
    pub fn without_refetch(mut self) -> Self {
        self.refetch = false;
        self
    }

    pub async fn decide<'s>(&self, snapshot: &'s Snapshot, view: &RequestView<'_>) -> Decision<'s> {
        self.decide_explained(snapshot, view, &mut ()).await
    }

    /// [`Pipeline::decide`], reporting every verification check to
    /// `explain` (`()` on the request path, where it compiles to nothing).
    pub async fn decide_explained<'s>(
        &self,
        snapshot: &'s Snapshot,
        view: &RequestView<'_>,
        explain: &mut (impl Explain + Send),
    ) -> Decision<'s> {
        if let Err(exceeded) = snapshot.limits.check(view.raw_target, view.headers) {
            return Decision::Refuse(Refusal::Limit(exceeded));
        }
        let target = match canonical_target(snapshot, view) {
            Ok(target) => target,
            Err(error) => return Decision::Refuse(Refusal::Target(error)),
        };
        let host = target.host.as_deref();
        let path = target.route_path();
        if view.scheme == Scheme::Http && snapshot.redirect_clear_text {
            return https_required(snapshot, None, HttpsOnly::Redirect, host, view);
        }
        if let Some((route, policy)) =
            cors::preflight_route(&snapshot.router, host, path, view.method, view.headers)
        {
            if route.authz_only && view.adapter.forwards() {
                return Decision::NoRoute;
            }
            if let Some(required) = route_https_only(snapshot, route, host, view) {
                return required;
            }
            return Decision::Preflight { route, policy };
        }
        let route = match snapshot.router.lookup(host, path, view.method) {
            // A route without an upstream is the authorization listeners'
            // only: to the proxy it does not exist.
            Lookup::Route(route) if route.authz_only && view.adapter.forwards() => {
                return Decision::NoRoute;
            }
            Lookup::Route(route) => route,
            Lookup::MethodNotAllowed { allow } => {
                return Decision::Refuse(Refusal::MethodNotAllowed { allow });
            }
            Lookup::NoRoute => return Decision::NoRoute,
        };
        if let Some(required) = route_https_only(snapshot, route, host, view) {
            return required;
        }
        if let Err(limited) = self.limit(route, Known::Request(view)) {
            return Decision::RateLimited { route, limited };
        }
        let upstream = || UpstreamRewrite {
            target: target.upstream_target(),
            host: target.authority.map(<[u8]>::to_vec),
        };
        if route.mode == AuthMode::Off {
            return Decision::Forward {
                route,
                upstream: upstream(),
                auth: Forwarded::Anonymous,
            };
        }
        match self
            .authenticate(snapshot, route, view, &target, explain)
            .await
        {
            Ok(Some(identity)) => match self.limit(route, Known::Identity(&identity)) {
                Ok(()) => Decision::Forward {
                    route,
                    upstream: upstream(),
                    auth: Forwarded::Identity(identity),
                },
                Err(limited) => Decision::RateLimited { route, limited },
            },
            Ok(None) => Decision::Forward {
                route,
                upstream: upstream(),
                auth: Forwarded::Anonymous,
            },
            // Audit decides exactly as `required`, then lets it through.
            Err(failure) if route.mode == AuthMode::Audit => Decision::Forward {
                route,
                upstream: upstream(),
                auth: Forwarded::WouldDeny(failure),
            },
            Err(failure) => Decision::Deny { route, failure },
        }
    }

    /// Takes from the route's limits that `known` can key. Before
    /// authentication (client address, a header, the route), so a flood is
    /// refused before any signature is checked, in every auth mode; after
    /// it, those keyed by a claim of the verified token.
    fn limit<'s>(&self, route: &'s CompiledRoute, known: Known<'_>) -> Result<(), Limited<'s>> {
        let limits = match known {
            Known::Request(_) => &route.rate_limits.before_auth,
            Known::Identity(_) => &route.rate_limits.after_auth,
        };
        if limits.is_empty() {
            return Ok(());
        }
        let now = self.clock.now_nanos();
        for limit in limits {
            let client;
            let claim;
            let key = match (&limit.key, &known) {
                (RateKey::Route, Known::Request(_)) => Some(&[][..]),
                (RateKey::ClientAddress, Known::Request(view)) => match view.client {
                    Some(address) => {
                        client = client_key(address.client);
                        Some(&client.0[..client.1])
                    }
                    None => None,
                },
                (RateKey::Header(name), Known::Request(view)) => {
                    view.headers.get(name).map(|value| value.as_bytes())
                }
                (RateKey::Claim(path), Known::Identity(identity)) => {
                    claim = rate_limit::claim_key(&identity.claims, path);
                    claim.as_ref().map(|key| key.as_bytes())
                }
                _ => continue,
            };
            self.rate_limits
                .check(limit, key, now)
                .inspect_err(|_| self.rate_limits.count_limited(&route.name, limit))?;
        }
        Ok(())
    }

    /// The route's verdict on the request's token. `Ok(None)`: an
    /// `optional` route and no token.
    async fn authenticate(
        &self,
        snapshot: &Snapshot,
        route: &CompiledRoute,
        view: &RequestView<'_>,
        target: &RequestTarget<'_>,
        explain: &mut (impl Explain + Send),
    ) -> Result<Option<Arc<VerifiedToken>>, Failure> {
        let headers = Headers(view.headers);
        let query = target.query.and_then(|q| std::str::from_utf8(q).ok());
        let credential = match extract::extract(&headers, query, &route.sources) {
            Ok(Some(credential)) => credential,
            Ok(None) if route.mode == AuthMode::Optional => return Ok(None),
            Ok(None) => return Err(unauthenticated(Rejection::no_token(), explain)),
            Err(reason) => {
                return Err(unauthenticated(Rejection::invalid_request(reason), explain));
            }
        };
        let mut checks = FailedCheck {
            inner: explain,
            failed: None,
        };
        let token = credential.token;
        let exemplar = view.exemplar;
        let outcome = if vouch::introspected(snapshot, route, token) {
            self.introspect(snapshot, route, token, exemplar, &mut checks)
                .await
        } else {
            self.verify_jws(snapshot, route, token, exemplar, &mut checks)
                .await
        };
        let verified = outcome.map_err(|failure| {
            debug_assert!(checks.failed.is_some(), "a check failed silently");
            Failure {
                // Every failing check reports itself (the unit tests hold each
                // to it); the fallback keeps one that forgets from panicking a
                // request in a release build.
                check: checks.failed.unwrap_or(UNNAMED_CHECK),
                ..failure
            }
        })?;
        self.check_sender(route, view, target, credential, verified, explain)
            .await
            .map(Some)
    }

    /// The proof of possession a bound token needs, and the route's sender
    /// constraint; a DPoP proof that passes is remembered, so it passes
    /// once.
    async fn check_sender(
        &self,
        route: &CompiledRoute,
        view: &RequestView<'_>,
        target: &RequestTarget<'_>,
        credential: extract::Credential<'_>,
        verified: Arc<VerifiedToken>,
        explain: &mut (impl Explain + Send),
    ) -> Result<Arc<VerifiedToken>, Failure> {
        let now = self.clock.now_unix();
        let policy = &route.sender;
        let checked = sender::check(policy, view, target, credential, &verified, now);
        let remembered = match checked {
            Ok(Some(proof)) => self
                .dpop_replay
                .check_proof(&proof, policy.window, now)
                .await
                .map_err(|failure| Rejection::dpop(failure, None)),
            Ok(None) => Ok(()),
            Err(rejection) => Err(rejection),
        };
        match remembered {
            Ok(()) => {
                explain.passed(SENDER_CHECK, &|| "proof of possession".into());
                Ok(verified)
            }
            Err(rejection) => {
                explain.failed(SENDER_CHECK, rejection.reason);
                Err(Failure {
                    rejection,
                    issuer: Some(verified.issuer),
                    check: SENDER_CHECK,
                    keys_seen: None,
                    refused: Some(verified),
                })
            }
        }
    }
}

/// The check a token's status list entry failed.
pub const STATUS_CHECK: &str = "status";

/// The check a proof of possession (DPoP, a client certificate) or the
/// route's sender constraint failed.
pub const SENDER_CHECK: &str = "sender";

/// A refusal before any token was verified: none sent, or not usable.
fn unauthenticated(rejection: Rejection, explain: &mut impl Explain) -> Failure {
    explain.failed(TOKEN_CHECK, rejection.reason);
    Failure {
        rejection,
        issuer: None,
        check: TOKEN_CHECK,
        keys_seen: None,
        refused: None,
    }
}

/// Remembers which check failed, passing everything on.
struct FailedCheck<'e, E> {
    inner: &'e mut E,
    failed: Option<&'static str>,
}

impl<E: Explain> Explain for FailedCheck<'_, E> {
    fn passed(&mut self, check: &'static str, detail: &dyn Fn() -> String) {
        self.inner.passed(check, detail);
    }

    fn failed(&mut self, check: &'static str, reason: Reason) {
        self.failed = Some(check);
        self.inner.failed(check, reason);
    }

    fn noted(&mut self, note: Note<'_>) {
        self.inner.noted(note);
    }
}

/// A clear-text request to a route that is served over HTTPS only; `None`
/// for every other request, at the cost of one comparison over TLS.
fn route_https_only<'s>(
    snapshot: &'s Snapshot,
    route: &'s Arc<CompiledRoute>,
    host: Option<&str>,
    view: &RequestView<'_>,
) -> Option<Decision<'s>> {
    if view.scheme != Scheme::Http {
        return None;
    }
    let answer = route.https_only?;
    Some(https_required(snapshot, Some(route), answer, host, view))
}

/// A 308 to `https://host[:port]` and the request's own path and query, or
/// a 403 when asked to forbid, or when the request names no host to
/// redirect to.
fn https_required<'s>(
    snapshot: &'s Snapshot,
    route: Option<&'s Arc<CompiledRoute>>,
    answer: HttpsOnly,
    host: Option<&str>,
    view: &RequestView<'_>,
) -> Decision<'s> {
    let path_and_query = match view.target {
        TargetForm::Origin { path_and_query } | TargetForm::Absolute { path_and_query, .. } => {
            path_and_query
        }
        TargetForm::Unsupported => b"/",
    };
    let location = match (answer, host, &snapshot.https) {
        (HttpsOnly::Redirect, Some(host), Some(https)) => {
            let mut location = Vec::with_capacity(
                "https://".len() + host.len() + https.redirect_port.len() + path_and_query.len(),
            );
            location.extend_from_slice(b"https://");
            location.extend_from_slice(host.as_bytes());
            location.extend_from_slice(https.redirect_port.as_bytes());
            location.extend_from_slice(path_and_query);
            Some(location)
        }
        _ => None,
    };
    Decision::HttpsRequired { route, location }
}

/// What a rate limit's key can be read from: the request, before
/// authentication, or the token it verified.
enum Known<'a> {
    Request(&'a RequestView<'a>),
    Identity(&'a VerifiedToken),
}

/// An address as key bytes, on the stack: IPv4 (and IPv4-mapped IPv6) as
/// 4 bytes, IPv6 as 16.
fn client_key(ip: std::net::IpAddr) -> ([u8; 16], usize) {
    let mut bytes = [0u8; 16];
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => {
            bytes[..4].copy_from_slice(&v4.octets());
            (bytes, 4)
        }
        std::net::IpAddr::V6(v6) => (v6.octets(), 16),
    }
}

/// The request's target in canonical form, with its routing host.
fn canonical_target<'a>(
    snapshot: &Snapshot,
    view: &RequestView<'a>,
) -> Result<RequestTarget<'a>, TargetError> {
    let (authority, path_and_query) = match view.target {
        TargetForm::Origin { path_and_query } => (None, path_and_query),
        TargetForm::Absolute {
            authority,
            path_and_query,
        } => (Some(authority), path_and_query),
        TargetForm::Unsupported => return Err(TargetError::InvalidTarget),
    };
    let hosts = view
        .headers
        .get_all(http::header::HOST)
        .iter()
        .map(|host| host.as_bytes());
    RequestTarget::new(authority, path_and_query, hosts, &snapshot.paths)
}

#[cfg(test)]
mod rate_limit_tests;
#[cfg(test)]
mod sender_tests;
#[cfg(test)]
mod support_tests;
#[cfg(test)]
mod tests;
