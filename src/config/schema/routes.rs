//! `routes`: what a request is matched by, the authentication it needs
//! and what is forwarded.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{UpstreamConfig, duration};

/// A route's answer to a request that came in clear text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpsOnly {
    /// 308 to the same path and query over HTTPS.
    Redirect,
    /// 403, JSON body.
    Forbid,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: Spanned<String>,
    #[serde(rename = "match", default)]
    pub matcher: MatchConfig,
    /// Absent: the route answers only the authorization listener's
    /// decision requests (needs `listen.authz`); the proxy answers 404.
    /// Boxed, as `cors`, so that a parsed route stays small: a reload holds
    /// every parsed route beside two compiled configs.
    pub upstream: Option<Box<UpstreamConfig>>,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub forward: ForwardConfig,
    /// Cross-origin browser access; absent: jwtgate adds no CORS headers and
    /// preflights are routed like any other request.
    pub cors: Option<Box<CorsConfig>>,
    /// Request rate limits; empty: none, and nothing spent on them.
    #[serde(default)]
    pub rate_limits: Vec<RateLimitConfig>,
}

/// One rate limit of a route: `rate` requests per period, up to `burst` at
/// once, counted per `key`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// The limit's name in the metric label and the `RateLimit` headers.
    pub name: String,
    /// `100/s`, `10/m`, `1000/h`, `5/10s`, `20000/d`.
    pub rate: String,
    /// Requests allowed at once; absent: the rate's count.
    pub burst: Option<u64>,
    /// `route`, `client_address`, `header:<name>` or `claim:<dotted path>`.
    #[serde(default = "default_rate_key")]
    pub key: String,
}

fn default_rate_key() -> String {
    "route".into()
}

/// A route's CORS policy: jwtgate answers its preflights and adds the CORS
/// headers to its responses.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Exact origins (`scheme://host[:port]`), or `["*"]` for any origin
    /// (never with credentials).
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    /// Request headers a page may send; on routes that read tokens,
    /// `Authorization` and `auth.token_header` are always allowed.
    pub allowed_headers: Vec<String>,
    /// Response headers a page may read besides the CORS-safelisted ones.
    pub exposed_headers: Vec<String>,
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight's answer.
    #[serde(deserialize_with = "duration")]
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

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatchConfig {
    /// Exact host (case-insensitive, port ignored); absent: any host.
    pub host: Option<String>,
    pub path_prefix: String,
    /// Absent: any method.
    pub methods: Option<Vec<String>>,
    /// Requests over clear text never reach the upstream: `redirect` (308
    /// to HTTPS) or `forbid` (403). Absent: both schemes are served.
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

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub mode: AuthMode,
    /// Issuers whose tokens this route accepts; empty: every configured issuer.
    #[serde(default)]
    pub issuers: Vec<Spanned<String>>,
    /// Additionally to the issuer's audiences, `aud` must contain one of these.
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default)]
    pub scopes: ScopeRule,
    #[serde(default)]
    pub claims: Vec<ClaimRule>,
    /// A header that carries the raw token, besides `Authorization: Bearer`.
    pub token_header: Option<String>,
    /// A cookie that carries the raw token.
    pub token_cookie: Option<String>,
    /// A query parameter that carries the raw token. Off by default: URLs
    /// end up in logs, histories and Referer headers (RFC 6750 §5.3).
    pub token_query: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeRule {
    #[serde(default)]
    pub all_of: Vec<String>,
    #[serde(default)]
    pub any_of: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRule {
    /// Claim name, or a dotted path into nested objects (`realm_access.roles`).
    pub claim: String,
    #[serde(default)]
    pub any_of: Vec<serde_json::Value>,
    #[serde(default)]
    pub all_of: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardConfig {
    /// Claim (name or dotted path) → header sent to the upstream.
    pub claims: BTreeMap<String, String>,
    pub strip_authorization: bool,
    /// Client-sent headers starting with this prefix are always removed.
    pub reserved_prefix: String,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            claims: BTreeMap::new(),
            strip_authorization: false,
            reserved_prefix: "x-jwt-".into(),
        }
    }
}
