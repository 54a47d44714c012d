//! `routes`: what a request is matched by, the authentication it needs
//! and what is forwarded.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::json::DurationText;
use super::{DpopConfig, UpstreamConfig, duration, duration_text, optional_duration};

/// A route's answer to a request that came in clear text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HttpsOnly {
    /// `308` to the same host, path and query over HTTPS.
    Redirect,
    /// `403` (error `https_required`), JSON body.
    Forbid,
}

/// A route: what a request is matched by, the authentication it needs and
/// where it goes. Every header named in any route's `forward.claims` is
/// removed from client requests on every route, public ones included, so
/// a backend can trust it wherever it appears.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Used by metrics, logs and `token verify --route`.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// Which requests the route takes.
    #[serde(rename = "match", default)]
    pub matcher: MatchConfig,
    /// Where the proxy sends the route's requests; required unless
    /// `listen.authz` is set. A route without one is decided only on the
    /// authorization listener; the proxy answers its requests `404` (a
    /// shorter prefix's route is not used instead).
    // Boxed, as `cors`, so that a parsed route stays small: a reload holds
    // every parsed route beside two compiled configs.
    pub upstream: Option<Box<UpstreamConfig>>,
    /// The token the route needs and the checks it must pass.
    #[serde(default)]
    pub auth: AuthConfig,
    /// What is sent to the upstream besides the request.
    #[serde(default)]
    pub forward: ForwardConfig,
    /// Cross-origin browser access; absent: jwtgate adds no CORS headers and
    /// routes preflights like any other request.
    pub cors: Option<Box<CorsConfig>>,
    /// Request rate limits; a request over any of them gets `429`. Empty:
    /// none, and nothing spent on them.
    #[serde(default)]
    pub rate_limits: Vec<RateLimitConfig>,
}

/// One rate limit of a route: `rate` requests per period, up to `burst` at
/// once, counted per `key`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// 1-64 letters, digits, `-_.`, unique on the route: the `limit` label
    /// of `jwtgate_rate_limited_total` and the name in the `RateLimit`
    /// headers.
    pub name: String,
    /// Requests per period: `100/s`, `10/m`, `1000/h`, `20000/d`, or a
    /// multiple of the unit, `5/10s` (1 to 1 000 000 000 requests, a period
    /// up to 366 days).
    pub rate: String,
    /// Requests allowed at once after a quiet spell; at least `1`. Absent:
    /// the rate's count.
    pub burst: Option<u64>,
    /// What is counted separately: `route` (the route as a whole),
    /// `client_address` (the client address, never a raw header),
    /// `header:<name>` (a request header's value; requests without it share
    /// one budget), `claim:<dotted path>` (a claim of the verified token,
    /// e.g. `claim:sub`, `claim:client_id`; tokens without it share one
    /// budget). A `claim:` key on an `auth.mode: off` route is a config
    /// error.
    #[serde(default = "default_rate_key")]
    pub key: String,
}

fn default_rate_key() -> String {
    "route".into()
}

/// A route's CORS policy: jwtgate answers its preflights (which never need
/// a token nor reach the upstream) and adds the CORS headers to its
/// responses.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Required in a `cors` block: exact origins, `scheme://host[:port]`
    /// without a path; or `["*"]` for any origin (answered `*`, never with
    /// `allow_credentials`). `null` is refused.
    pub allowed_origins: Vec<String>,
    /// Methods a preflight may ask for; upper-cased, compared
    /// case-sensitively as browsers do.
    pub allowed_methods: Vec<String>,
    /// Request headers a page may send; on a route whose `auth.mode` isn't
    /// `off`, `Authorization` and `auth.token_header` are always allowed.
    pub allowed_headers: Vec<String>,
    /// Response headers a page may read besides the CORS-safelisted ones
    /// (`Access-Control-Expose-Headers`), e.g. `[WWW-Authenticate,
    /// X-Request-Id]`.
    pub exposed_headers: Vec<String>,
    /// Send `Access-Control-Allow-Credentials: true`, so pages may send
    /// cookies (needed for `token_cookie` across origins).
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight's answer; whole seconds, at
    /// most `24h` (Chromium caps at 2h).
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    #[schemars(with = "DurationText")]
    pub max_age: Duration,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            allowed_methods: vec!["GET".into(), "HEAD".into(), "POST".into()],
            allowed_headers: Vec::new(),
            exposed_headers: Vec::new(),
            allow_credentials: false,
            max_age: Duration::from_secs(10 * 60),
        }
    }
}

/// Which requests a route takes: the longest matching prefix wins, host
/// routes before host-less ones.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MatchConfig {
    /// Exact host, compared case-insensitively without port or trailing
    /// dot (on both sides: `Admin.Example.:8443` is `admin.example`); a
    /// request in absolute form is matched by its own authority. Host
    /// routes win over host-less ones. Not a host name or address: config
    /// error. Absent: any host.
    pub host: Option<String>,
    /// The longest matching prefix wins, on `/` boundaries.
    pub path_prefix: String,
    /// E.g. `[GET, POST]`; among routes of equal prefix, the first
    /// admitting the method wins. When the longest matching prefix has
    /// routes but none admits the method, the answer is `405` with `Allow`
    /// listing their methods: a shorter prefix's route is never used
    /// instead. Absent: any method.
    pub methods: Option<Vec<String>>,
    /// A request that came in clear text never reaches the upstream; needs
    /// `listen.https`. Absent: both schemes are served.
    pub https_only: Option<HttpsOnly>,
}

impl Default for MatchConfig {
    fn default() -> Self {
        Self {
            host: None,
            path_prefix: "/".into(),
            methods: None,
            https_only: None,
        }
    }
}

/// How a route treats tokens.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// A token is required and must pass every check.
    #[default]
    Required,
    /// Verified when present (and rejected when invalid); absent is allowed.
    Optional,
    /// No verification at all: a public route.
    Off,
    /// Verified and judged exactly as `required`, but never refused: what
    /// `required` would refuse is forwarded without identity and counted as
    /// `would_deny`, to roll auth onto a backend before enforcing it.
    Audit,
}

/// The token a route needs and the checks it must pass.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// How the route treats tokens; a route without `auth` is `required`.
    #[serde(default)]
    pub mode: AuthMode,
    /// Issuers whose tokens the route accepts; empty: every issuer.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub issuers: Vec<Spanned<String>>,
    /// Additionally to the issuer's audiences, `aud` must contain one of
    /// these.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Scopes the token must have.
    #[serde(default)]
    pub scopes: ScopeRule,
    /// Rules on claims, e.g. `{claim: realm_access.roles, any_of: [admin]}`.
    #[serde(default)]
    pub claims: Vec<ClaimRule>,
    /// A header carrying the raw token, besides `Authorization: Bearer`.
    pub token_header: Option<String>,
    /// A cookie carrying the raw token.
    pub token_cookie: Option<String>,
    /// A query parameter carrying the raw token. Off by default because
    /// URLs end up in logs, histories and `Referer` headers (RFC 6750
    /// §5.3); enabling it logs a warning at startup.
    pub token_query: Option<String>,
    /// What ends a connection that outlives its request (a WebSocket after
    /// its `101`, a streamed response such as server-sent events, a
    /// streamed upload, a gRPC stream) once the token that opened it no
    /// longer holds.
    #[serde(default)]
    pub long_lived: LongLivedConfig,
    /// Whether a token must be bound to its sender. `none`: a bearer token
    /// is enough, though a token bound to a key (`cnf.jkt`) or a client
    /// certificate (`cnf["x5t#S256"]`) still needs its proof, on every
    /// route. `dpop`: only a token bound to the key of the request's DPoP
    /// proof (RFC 9449). `mtls`: only a token bound to the client
    /// certificate of the connection (RFC 8705). `any`: either.
    #[serde(default)]
    pub sender_constraint: SenderConstraint,
    /// What this route accepts as DPoP proofs (`Authorization: DPoP` with
    /// a `DPoP` header): their algorithms, how old their `iat` may be, and
    /// server nonces.
    #[serde(default)]
    pub dpop: DpopConfig,
}

/// `auth.sender_constraint`: which proof of possession a route requires.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SenderConstraint {
    /// A bearer token is enough; a bound token still needs its proof.
    #[default]
    None,
    /// A token bound to a DPoP key, with a proof of that key.
    Dpop,
    /// A token bound to the client certificate of the connection.
    Mtls,
    /// A token bound either way, with its proof.
    Any,
}

/// When jwtgate ends a connection that outlives its request. Ordinary
/// requests are not affected: they were checked when they arrived.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LongLivedConfig {
    /// End the connection or HTTP/2 stream when its token expires (its
    /// `exp` plus the issuer's leeway) or when its `jti`, `sub` or `sid` is
    /// revoked: a WebSocket gets a close frame `1008` ("token expired" /
    /// "token revoked"), a stream is cut and its connection closed, an
    /// upload not yet answered gets `401`, a gRPC stream ends with
    /// `grpc-status: 16` (UNAUTHENTICATED), or is reset (CANCELLED) when
    /// nothing flows. Absent: on for `required` routes, off for
    /// the others (on for `audit` routes, which never end a connection for
    /// its token but count `would_end`); `true` on an `off` route is a
    /// config error.
    pub end_with_token: Option<bool>,
    /// End the connection or HTTP/2 stream, as a revocation does (reason
    /// "token no longer accepted"), when a reload leaves its route
    /// refusing its token: the route removed, the token's issuer no longer
    /// one of the route's, a scope, claim rule or audience it now fails,
    /// or a token now required where it had none. Its signature and `exp`
    /// are not checked again. Absent: `true` on every route with auth;
    /// `true` on an `off` route is a config error.
    pub end_on_reload: Option<bool>,
    /// The longest such a connection may stay open, whatever its token,
    /// e.g. `1h`. Absent: no limit but the token's.
    #[serde(deserialize_with = "optional_duration")]
    #[schemars(with = "DurationText")]
    pub max_lifetime: Option<Duration>,
}

/// Scopes a token must have.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopeRule {
    /// Every one of these.
    #[serde(default)]
    pub all_of: Vec<String>,
    /// At least one of these.
    #[serde(default)]
    pub any_of: Vec<String>,
}

/// A rule on one claim; without values it asks only that the claim is
/// present. An array claim holds each of its elements.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRule {
    /// Claim name, or a dotted path into nested objects (`realm_access.roles`).
    pub claim: String,
    /// The claim holds at least one of these.
    #[serde(default)]
    pub any_of: Vec<serde_json::Value>,
    /// The claim holds every one of these.
    #[serde(default)]
    pub all_of: Vec<serde_json::Value>,
}

/// What is forwarded to the upstream besides the request.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardConfig {
    /// Claim (name or dotted path) → header sent to the upstream; arrays
    /// are joined with a space, objects sent as JSON. A claim that is
    /// absent, or whose value can't be a header value, sets no header.
    pub claims: BTreeMap<String, String>,
    /// Remove the token before forwarding: `Authorization`,
    /// `token_header`, the `token_cookie` cookie and the `token_query`
    /// parameter (other cookies and parameters stay).
    pub strip_authorization: bool,
    /// Client-sent headers starting with this prefix are always removed.
    pub reserved_prefix: String,
    /// A token signed by jwtgate (see `identity_tokens`) that the backend
    /// can verify, instead of or beside the plain identity headers.
    pub identity_token: Option<super::IdentityTokenConfig>,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            claims: BTreeMap::new(),
            strip_authorization: false,
            reserved_prefix: "x-jwt-".into(),
            identity_token: None,
        }
    }
}
