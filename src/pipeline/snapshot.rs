//! What a decision is made against: the compiled, immutable config
//! snapshot (routes, issuers, the router, header plans), built by
//! [`crate::assemble::compile`] and swapped whole by a reload.

use crate::identity::{IdentityTokenPlan, IdentityTokens};
use crate::introspection::Introspector;
use std::sync::Arc;
use std::time::Duration;

use super::canonical::PathRules;
use super::client::{ClientCertHeader, TrustedProxies};
use super::cors::CorsPolicy;
use super::limits::RequestLimits;
use super::router::Router;
use super::sender::SenderPolicy;
use crate::auth::claims;
use crate::auth::extract::TokenSources;
use crate::auth::policy::RoutePolicy;
use crate::auth::{IssuerVerifier, VerifiedToken};
use crate::certificates::Certificates;
use crate::client_certs::ClientCertAuthority;
use crate::config::schema::{AuthMode, HttpsOnly};
use crate::keys::remote::RemoteSource;
use crate::state::rate_limit::RouteRateLimits;
use crate::state::status_list::StatusLists;
use crate::telemetry::metrics::RouteSeries;

/// Everything the gateway serves from, immutable once built; a reload
/// compiles a new one and swaps it in whole.
#[derive(Debug)]
pub struct Snapshot {
    pub realm: String,
    pub max_token_bytes: usize,
    pub issuers: Vec<Arc<IssuerVerifier>>,
    /// Each issuer's Token Status Lists, by its place in `issuers`.
    pub status_lists: Vec<Option<Arc<StatusLists>>>,
    /// Each issuer's introspector, by its place in `issuers`: `Some` for
    /// an issuer whose opaque tokens are introspected.
    pub introspectors: Vec<Option<Arc<Introspector>>>,
    /// Whether any issuer introspects: without one, a request never looks
    /// at the token's shape to decide.
    pub introspects: bool,
    /// `identity_tokens`: what routes' `forward.identity_token` are signed
    /// with, and the JWK Set the admin listener publishes.
    pub identity_tokens: Option<Arc<IdentityTokens>>,
    pub startup_grace: Duration,
    /// Issuers whose keys are fetched, and how.
    pub remote: Vec<RemoteSource>,
    pub routes: Vec<Arc<CompiledRoute>>,
    pub router: Router<Arc<CompiledRoute>>,
    /// How ambiguous request paths are handled.
    pub paths: PathRules,
    /// Lower-case names of every header any route fills from claims: removed
    /// from client requests on every route, authenticated or not, so a
    /// backend can trust them wherever they appear.
    pub identity_headers: Vec<http::HeaderName>,
    /// Things that work but deserve a look (`jwtgate check` prints them).
    pub warnings: Vec<String>,
    pub trusted_proxies: TrustedProxies,
    /// `server.client_cert_header`, believed from `trusted_proxies` only.
    pub client_cert_header: Option<ClientCertHeader>,
    /// `server.client_body_timeout`: the proxy's longest wait between two
    /// reads of a request body.
    pub client_body_timeout: Duration,
    pub limits: RequestLimits,
    /// The TLS listener's certificates and headers; `None` without
    /// `listen.https`.
    pub https: Option<HttpsState>,
    /// `listen.http.mode: redirect`: every clear-text request gets a 308 to
    /// HTTPS.
    pub redirect_clear_text: bool,
}

/// What the TLS listener serves with, read again on every reload.
#[derive(Debug)]
pub struct HttpsState {
    pub certificates: Certificates,
    /// The `Strict-Transport-Security` value, built once; `None`: not sent.
    pub hsts: Option<http::HeaderValue>,
    /// What follows the host in a redirect's `https://` URL: `:port`, or
    /// nothing for 443.
    pub redirect_port: String,
    /// `listen.https.client_certs`: the CAs client certificates are
    /// checked against, and whether one is required.
    pub client_certs: Option<ClientCertAuthority>,
}

#[derive(Debug)]
pub struct CompiledRoute {
    pub name: String,
    /// Its place in [`Snapshot::routes`]: adapters keep what they need per
    /// route (the proxy its upstream) in tables of the same order.
    pub index: usize,
    pub mode: AuthMode,
    pub policy: RoutePolicy,
    pub sources: TokenSources,
    pub forward: ForwardPlan,
    /// `None`: no CORS handling, and nothing spent on it per request.
    /// Boxed: most routes have none, and the policy would weigh on each.
    pub cors: Option<Box<CorsPolicy>>,
    /// This route's metric series, resolved once per snapshot.
    pub series: RouteSeries,
    /// What a clear-text request gets instead of the upstream.
    pub https_only: Option<HttpsOnly>,
    pub rate_limits: RouteRateLimits,
    /// No upstream: decided only for the authorization listener; the
    /// proxy answers 404 as if the route did not exist.
    pub authz_only: bool,
    /// When a connection that outlives its request is ended.
    pub long_lived: LongLived,
    /// Which proofs of possession the route takes and requires.
    pub sender: SenderPolicy,
}

/// `auth.long_lived` compiled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LongLived {
    /// End at the token's expiry and on its revocation.
    pub end_with_token: bool,
    /// End when a reload makes the route refuse the token.
    pub end_on_reload: bool,
    /// `false` on an `audit` route: what would end a connection for its
    /// token is only counted (`would_end`).
    pub enforce: bool,
    pub max_lifetime: Option<Duration>,
}

impl LongLived {
    /// Whether anything could end such a connection; when not, none is
    /// armed and the route's requests cost nothing more.
    pub fn arms(&self) -> bool {
        self.end_with_token || self.end_on_reload || self.max_lifetime.is_some()
    }
}

#[derive(Debug)]
pub struct ForwardPlan {
    /// Claim path → header to set on the upstream request.
    pub claims: Vec<ClaimHeader>,
    pub strip_authorization: bool,
    /// Lower-case; client headers starting with it are removed.
    pub reserved_prefix: String,
    /// A token signed by jwtgate for the backend.
    pub identity_token: Option<IdentityTokenPlan>,
}

impl ForwardPlan {
    /// The identity headers a verified token gives the upstream: each claim
    /// the route forwards that the token has, rendered as a header value
    /// (anything that can't be one is left out).
    pub fn identity_values<'a>(
        &'a self,
        identity: &'a VerifiedToken,
    ) -> impl Iterator<Item = (&'a ClaimHeader, String)> + 'a {
        self.claims.iter().filter_map(move |header| {
            let value =
                claims::lookup(&identity.claims, &header.claim).and_then(claims::header_value)?;
            Some((header, value))
        })
    }
}

/// A claim forwarded as a header.
#[derive(Debug, Clone)]
pub struct ClaimHeader {
    pub claim: String,
    pub name: http::HeaderName,
    /// The name as it goes on the wire (lower case, as HTTP/2 requires):
    /// built once, so each request shares these bytes rather than
    /// spelling the name afresh.
    pub sent_as: bytes::Bytes,
}
