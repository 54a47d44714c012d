//! The shape of `gateway.yaml`, as written by users: plain serde types
//! that import nothing else of jwtgate, so every part of the gateway can
//! read them and none can be imported back. Every struct denies unknown
//! fields so a typo is an error, never a silently ignored setting.
//! Defaults live here, in each struct's `impl Default` (a struct whose
//! fields are all optional) or next to the field they belong to (a struct
//! with required fields). The `///` comments of fields are what users read:
//! they become the JSON Schema's descriptions (`json.rs`) and the
//! configuration reference rendered from it, so notes for the code go in
//! `//` comments.

mod dpop;
mod identity;
mod introspection;
mod issuers;
mod json;
mod listen;
mod routes;
mod signals;
mod state;
mod status_list;
mod telemetry;
mod upstreams;
mod written;

use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use dpop::*;
pub use identity::*;
pub use introspection::*;
pub use issuers::*;
pub use json::json_schema;
pub use listen::*;
pub use routes::*;
pub use signals::*;
pub use state::*;
pub use status_list::*;
pub use telemetry::*;
pub use upstreams::*;
pub use written::AsWritten;

use json::DurationText;

/// A jwtgate configuration file (`gateway.yaml`). `${NAME}` is replaced by
/// the environment variable `NAME` (an error if unset), `${NAME:-default}`
/// falls back to `default`, `$${` is a literal `${`; comments are not
/// interpolated. Relative paths are relative to the config file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// The proxy's listeners: clear text, TLS, and the authorization
    /// listener.
    #[serde(default)]
    pub listen: ListenConfig,
    /// The admin listener: `/metrics`, `/healthz`, `/readyz`.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Threads, shutdown, the challenge realm and trusted proxies.
    #[serde(default)]
    pub server: ServerConfig,
    /// Starts the built-in echo upstream (it answers with the request it
    /// received, as JSON), for demos and first steps.
    pub echo: Option<EchoConfig>,
    /// Limits on tokens before any decoding.
    #[serde(default)]
    pub tokens: TokenLimits,
    /// Token issuers: who may sign tokens, where their keys are, and the
    /// rules every token of theirs must pass.
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    /// Routes, at least one: what a request is matched by, the
    /// authentication it needs and where it is forwarded.
    // Each boxed: compiling frees a route as soon as it is compiled,
    // rather than one buffer of them all at the end.
    pub routes: Vec<Box<RouteConfig>>,
    /// Where upstream DNS names are resolved; default: the system resolver.
    #[serde(default)]
    pub dns: DnsConfig,
    /// Where the last good JWKS of each remote issuer is kept, so a restart
    /// during an identity-provider outage still has keys; set it in
    /// production. Unset: not kept.
    pub keys_cache_dir: Option<PathBuf>,
    /// The verified-token cache: a reused token skips the signature check.
    #[serde(default)]
    pub token_cache: TokenCacheConfig,
    /// Ambiguous request paths: each form is refused (400) unless kept.
    #[serde(default)]
    pub paths: PathsConfig,
    /// Caps on the request head, answered 414 / 431 before routing.
    #[serde(default)]
    pub limits: RequestLimitsConfig,
    /// The revocation list; without it nothing can be revoked.
    /// Restart-only.
    pub revocation: Option<RevocationConfig>,
    /// Security Event Tokens from OpenID Shared Signals (SSF) transmitters,
    /// applied to the revocation list (which they need). Restart-only.
    pub shared_signals: Option<SharedSignalsConfig>,
    /// Where the counters of every route's `rate_limits` live; default: in
    /// memory, per replica. Restart-only.
    #[serde(default)]
    pub rate_limit: RateLimitStateConfig,
    /// The one Redis server shared state goes through: the revocation list
    /// (`revocation.redis`) and rate-limit budgets (`rate_limit.redis`)
    /// share one connection setting. A single Redis 6.2 or later, not a
    /// cluster (one script touches many keys). Restart-only.
    pub redis: Option<RedisConfig>,
    /// The DPoP proofs seen, so each is accepted once: this replica's
    /// bound, and whether they are shared with other replicas through
    /// `redis`. Restart-only.
    #[serde(default)]
    pub dpop_replay: DpopReplayConfig,
    /// Traces over OTLP. Restart-only.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// The keys and issuer of the identity tokens routes send their
    /// backends (`forward.identity_token`). Reloadable.
    pub identity_tokens: Option<IdentityTokensConfig>,
}

/// Forms of a request path that backends read in different ways. Each is
/// refused with `400` (reason in the access log) unless set to `keep`, for
/// a backend that needs it and reads it the one way described here.
/// Control characters, escapes that aren't UTF-8 and characters outside
/// the request-line grammar are always refused.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PathsConfig {
    /// `%2F` in the path. `keep`: it is no separator for routing (`/a%2Fb`
    /// is one segment) and is forwarded as `%2F`; only for a backend that
    /// doesn't decode it either.
    #[serde(deserialize_with = "encoded_slash")]
    pub encoded_slash: Handling,
    /// `\` or `%5C`. `keep`: a plain character, no separator, forwarded as
    /// `%5C`; only for a backend that doesn't read it as `/`.
    #[serde(deserialize_with = "backslash")]
    pub backslash: Handling,
    /// `;` (or `%3B`) parameters in a segment (`/a;jsessionid=1`). `keep`:
    /// forwarded as sent, and routed on the path without them, as servlet
    /// containers read it (`/admin;x=1` is `/admin`); a dot segment with
    /// parameters (`/..;/`) is still refused.
    #[serde(deserialize_with = "semicolon")]
    pub semicolon: Handling,
    /// `%25` followed by two hex digits (`%252e`). `keep`: forwarded as is
    /// and routed as it stands (`/x/%252e` has a segment `%252e`, not a
    /// dot); only for a backend that decodes at most once.
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
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RequestLimitsConfig {
    /// Most header bytes, each field counted as `name: value` plus its line
    /// end; more: `431`. At most `524288`.
    pub max_header_bytes: usize,
    /// Most header fields (a repeated name counts each time); more: `431`.
    /// At most `256`.
    pub max_headers: usize,
    /// Longest request-target (path and query as sent, or the whole URL in
    /// absolute form); longer: `414`. At most `65534`.
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

/// The verified-token cache: a reused token skips parsing and the signature
/// check (its time claims, issuer, audiences and the route's rules are still
/// checked on every request).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TokenCacheConfig {
    /// Whether verified tokens are cached at all.
    pub enabled: bool,
    /// At most this many cached tokens.
    pub max_entries: u64,
    /// And at most about this much memory, in bytes, counted from each
    /// entry's parsed claims as held in memory.
    pub max_bytes: u64,
    /// An entry lives at most this long, and never past its token's `exp`.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    #[schemars(with = "DurationText")]
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

/// The admin listener: `/metrics`, `/healthz`, `/readyz`, `POST /-/reload`
/// and, with `revocation.admin_tokens`, `/revocations`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Its address, `host:port`.
    pub addr: String,
    /// Issuers marked `required: false` hold `/readyz` back only this long.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    #[schemars(with = "DurationText")]
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

/// How the proxy runs and stops, and whom it believes.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Proxy worker threads; default: the number of CPU cores.
    pub threads: Option<usize>,
    /// On SIGTERM, `/readyz` fails and the proxy still accepts and serves
    /// new connections this long, so load balancers notice.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    #[schemars(with = "DurationText")]
    pub grace_period: Duration,
    /// Then the proxy stops accepting and waits at most this long for open
    /// connections to finish their requests.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    #[schemars(with = "DurationText")]
    pub graceful_shutdown_timeout: Duration,
    /// `realm` in `WWW-Authenticate` challenges.
    pub realm: String,
    /// Peers whose forwarding headers (`X-Forwarded-For` and friends) are
    /// believed; any other peer's are replaced. CIDR ranges or single
    /// addresses, IPv4 or IPv6 (`[10.0.0.0/8, "fd00::/8", 192.0.2.7]`); a
    /// range with bits set past its prefix (`10.0.0.1/8`) is an error, and
    /// `jwtgate check` warns about a `/0` range (every peer trusted).
    pub trusted_proxies: Vec<String>,
    /// The header a TLS-terminating front proxy puts the client's
    /// certificate in, believed only from `trusted_proxies` (from any other
    /// peer it is ignored and removed before the upstream); from a trusted
    /// proxy it stands for the certificate of the TLS connection. Absent:
    /// only certificates presented to `listen.https` count. Reloadable.
    pub client_cert_header: Option<ClientCertHeaderConfig>,
    /// The longest a client may pause between two reads of its request
    /// body (HTTP/1) before it gets `408` and the access log says
    /// `client_timeout`, as nginx's `client_body_timeout`; positive.
    /// Reloadable.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    #[schemars(with = "DurationText")]
    pub client_body_timeout: Duration,
    /// How long a client connection may wait for its first request, or
    /// for its next one on a kept-alive HTTP/1 connection, and how long an
    /// HTTP/2 connection may have no request open before it is sent
    /// `GOAWAY`; as nginx's `keepalive_timeout`. Whole seconds, at least
    /// `1s`. Restart only.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    #[schemars(with = "DurationText")]
    pub keepalive_timeout: Duration,
    /// Idle upstream connections kept open for reuse, per worker thread,
    /// across every upstream; as nginx's `keepalive` in an `upstream`
    /// block. The least recently used is closed when a new one would not
    /// fit. At least 1. Restart only.
    pub upstream_keepalive: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            threads: None,
            grace_period: Duration::from_secs(5),
            graceful_shutdown_timeout: Duration::from_secs(10),
            realm: "jwtgate".into(),
            trusted_proxies: Vec::new(),
            client_cert_header: None,
            client_body_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(60),
            upstream_keepalive: 128,
        }
    }
}

/// `server.client_cert_header`: where a front proxy writes the client
/// certificate it saw.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientCertHeaderConfig {
    /// The header's name (`x-forwarded-client-cert` for Envoy; for NGINX,
    /// the one its `proxy_set_header` names, such as `x-ssl-client-cert`).
    pub name: String,
    /// How the header writes the certificate.
    pub format: ClientCertHeaderFormat,
}

/// How a front proxy writes a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientCertHeaderFormat {
    /// Envoy's `x-forwarded-client-cert`: the `Hash=` (hex SHA-256) or
    /// `Cert=` (URL-encoded PEM) of the last element, the one the proxy
    /// next to jwtgate appended.
    Xfcc,
    /// A URL-encoded PEM certificate, as NGINX's
    /// `$ssl_client_escaped_cert` writes it.
    EscapedPem,
}

/// The built-in echo upstream.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EchoConfig {
    /// The address it listens on, `host:port`.
    pub addr: String,
}

/// Limits on tokens, checked before any decoding.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TokenLimits {
    /// Longer tokens are rejected (`too_large`) before any decoding.
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
/// What this accepts, [`json::DurationText`]'s pattern accepts.
pub(crate) fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(|_| {
        serde::de::Error::custom(format!(
            "expected a duration (30s, 5m, 250ms, 1h 30m), got {text:?}"
        ))
    })
}

/// A default duration as a user would write it, for the schema's `default`
/// (the types are only ever read, so this is the one use of serializing).
pub(crate) fn duration_text<S: Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&AsWritten(*duration))
}

/// What to do with a path form that backends read in different ways.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Handling {
    // Each field of `PathsConfig` says what both values mean for its form.
    // Answer 400.
    #[default]
    Reject,
    // Let it through; see each rule for how it is routed and forwarded.
    Keep,
}
