//! The shape of `gateway.yaml`, as written by users: plain serde types
//! that import nothing else of jwtgate, so every part of the gateway can
//! read them and none can be imported back. Every struct denies unknown
//! fields so a typo is an error, never a silently ignored setting.
//! Defaults live here, in each struct's `impl Default` (a struct whose
//! fields are all optional) or next to the field they belong to (a struct
//! with required fields), and are mirrored in the configuration reference.

mod issuers;
mod listen;
mod routes;
mod state;
mod upstreams;
mod written;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

pub use issuers::*;
pub use listen::*;
pub use routes::*;
pub use state::*;
pub use upstreams::*;
pub use written::AsWritten;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    #[serde(default)]
    pub listen: ListenConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub server: ServerConfig,
    /// A built-in echo upstream, for demos and first steps.
    pub echo: Option<EchoConfig>,
    #[serde(default)]
    pub tokens: TokenLimits,
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    /// Each boxed: compiling frees a route as soon as it is compiled,
    /// rather than one buffer of them all at the end.
    pub routes: Vec<Box<RouteConfig>>,
    /// Where upstream DNS names are resolved.
    #[serde(default)]
    pub dns: DnsConfig,
    /// Where the last good JWKS of each remote issuer is kept, so a restart
    /// during an identity-provider outage still has keys. Unset: not kept.
    pub keys_cache_dir: Option<PathBuf>,
    #[serde(default)]
    pub token_cache: TokenCacheConfig,
    #[serde(default)]
    pub paths: PathsConfig,
    #[serde(default)]
    pub limits: RequestLimitsConfig,
    pub revocation: Option<RevocationConfig>,
    /// Where rate-limit counters are kept. Restart-only.
    #[serde(default)]
    pub rate_limit: RateLimitStateConfig,
    /// The Redis server shared state goes through. Restart-only.
    pub redis: Option<RedisConfig>,
}

/// What to do with request paths a backend could read differently from
/// jwtgate. Each is refused (400) unless kept here.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PathsConfig {
    /// `%2F`; kept: not a separator for routing, forwarded encoded.
    #[serde(deserialize_with = "encoded_slash")]
    pub encoded_slash: Handling,
    /// `\` or `%5C`; kept: a plain character, forwarded as `%5C`.
    #[serde(deserialize_with = "backslash")]
    pub backslash: Handling,
    /// `;` parameters in a segment; kept: forwarded, not routed on.
    #[serde(deserialize_with = "semicolon")]
    pub semicolon: Handling,
    /// `%25` and two hex digits; kept: forwarded as is.
    #[serde(deserialize_with = "double_encoding")]
    pub double_encoding: Handling,
}

/// `reject` or `keep`; the error names the field, since serde's own for an
/// enum names only the value.
fn handling<'de, D: Deserializer<'de>>(deserializer: D, field: &str) -> Result<Handling, D::Error> {
    let text = String::deserialize(deserializer)?;
    match text.as_str() {
        "reject" => Ok(Handling::Reject),
        "keep" => Ok(Handling::Keep),
        _ => Err(serde::de::Error::custom(format!(
            "paths.{field}: {text:?} is neither reject nor keep"
        ))),
    }
}

fn encoded_slash<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Handling, D::Error> {
    handling(deserializer, "encoded_slash")
}

fn backslash<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Handling, D::Error> {
    handling(deserializer, "backslash")
}

fn semicolon<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Handling, D::Error> {
    handling(deserializer, "semicolon")
}

fn double_encoding<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Handling, D::Error> {
    handling(deserializer, "double_encoding")
}

impl Default for PathsConfig {
    fn default() -> Self {
        Self {
            encoded_slash: Handling::Reject,
            backslash: Handling::Reject,
            semicolon: Handling::Reject,
            double_encoding: Handling::Reject,
        }
    }
}

/// Caps on the request head, answered 414 / 431 before routing. The
/// defaults follow nginx's `large_client_header_buffers 4 8k`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequestLimitsConfig {
    /// Every header field counted as `name: value` plus its line end.
    pub max_header_bytes: usize,
    /// Header field lines, repeated names counted each time.
    pub max_headers: usize,
    /// The request-target as sent: path and query (or the absolute URL).
    pub max_uri_bytes: usize,
}

impl Default for RequestLimitsConfig {
    fn default() -> Self {
        Self {
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_uri_bytes: 8 * 1024,
        }
    }
}

/// The verified-token cache: a reused token skips the signature check (its
/// time claims and the route's rules are still checked on every request).
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenCacheConfig {
    pub enabled: bool,
    pub max_entries: u64,
    pub max_bytes: u64,
    /// Entries also expire with their token's `exp`, whichever comes first.
    #[serde(deserialize_with = "duration")]
    pub ttl: Duration,
}

impl Default for TokenCacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_entries: 100_000,
            max_bytes: 64 * 1024 * 1024,
            ttl: Duration::from_secs(5 * 60),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    pub addr: String,
    /// Issuers marked `required: false` hold `/readyz` back only this long.
    #[serde(deserialize_with = "duration")]
    pub startup_grace: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:9090".into(),
            startup_grace: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Worker threads for the proxy; default: the number of CPU cores.
    pub threads: Option<usize>,
    /// On SIGTERM, keep accepting for this long (lets a load balancer notice).
    #[serde(deserialize_with = "duration")]
    pub grace_period: Duration,
    /// Then give in-flight requests at most this long to finish.
    #[serde(deserialize_with = "duration")]
    pub graceful_shutdown_timeout: Duration,
    /// `realm` in `WWW-Authenticate` challenges.
    pub realm: String,
    /// Peers (CIDR ranges) whose forwarding headers are believed; any other
    /// peer's are replaced.
    pub trusted_proxies: Vec<String>,
    /// The longest a client may pause between two reads of its request
    /// body before it gets 408 (nginx's `client_body_timeout`).
    #[serde(deserialize_with = "duration")]
    pub client_body_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            threads: None,
            grace_period: Duration::from_secs(5),
            graceful_shutdown_timeout: Duration::from_secs(10),
            realm: "jwtgate".into(),
            trusted_proxies: Vec::new(),
            client_body_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EchoConfig {
    pub addr: String,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenLimits {
    /// Tokens longer than this are rejected before any decoding.
    pub max_bytes: usize,
}

impl Default for TokenLimits {
    fn default() -> Self {
        Self {
            max_bytes: 8 * 1024,
        }
    }
}

pub(crate) fn default_true() -> bool {
    true
}

pub(crate) fn optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    duration(deserializer).map(Some)
}

/// Durations are written the human way: `30s`, `5m`, `250ms`, `1h 30m`.
pub(crate) fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(|_| {
        serde::de::Error::custom(format!(
            "expected a duration (30s, 5m, 250ms, 1h 30m), got {text:?}"
        ))
    })
}

/// What to do with a path form that backends read in different ways.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// Answer 400.
    #[default]
    Reject,
    /// Let it through; see each rule for how it is routed and forwarded.
    Keep,
}
