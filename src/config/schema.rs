//! The shape of `gateway.yaml`, as written by users. Every struct denies
//! unknown fields so a typo is an error, never a silently ignored setting.
//! Defaults live here, in each struct's `impl Default` (a struct whose
//! fields are all optional) or next to the field they belong to (a struct
//! with required fields), and are mirrored in the README's configuration
//! reference.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

use crate::jose::Algorithm;
pub use crate::pipeline::canonical::Handling;

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
    #[serde(default)]
    pub echo: Option<EchoConfig>,
    #[serde(default)]
    pub tokens: TokenLimits,
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    pub routes: Vec<RouteConfig>,
    /// Where upstream DNS names are resolved.
    #[serde(default)]
    pub dns: DnsConfig,
    /// Where the last good JWKS of each remote issuer is kept, so a restart
    /// during an identity-provider outage still has keys. Unset: not kept.
    #[serde(default)]
    pub keys_cache_dir: Option<PathBuf>,
    #[serde(default)]
    pub token_cache: TokenCacheConfig,
    #[serde(default)]
    pub paths: PathsConfig,
    #[serde(default)]
    pub limits: RequestLimitsConfig,
    #[serde(default)]
    pub revocation: Option<RevocationConfig>,
    /// Where rate-limit counters are kept. Restart-only.
    #[serde(default)]
    pub rate_limit: RateLimitStateConfig,
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

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenConfig {
    /// The clear-text listener: `host:port`, or a map with `addr`, `mode`
    /// and `h2c`.
    #[serde(deserialize_with = "http_listener")]
    pub http: HttpListenConfig,
    /// The TLS listener; absent: none.
    pub https: Option<HttpsListenConfig>,
    /// The authorization listener front proxies ask; absent: none.
    pub authz: Option<AuthzListenConfig>,
}

/// `listen.authz`: answers NGINX `auth_request`, Traefik and Caddy forward
/// auth, or Envoy's HTTP `ext_authz` with the proxy's own decision. It
/// believes the request headers that describe the original request, so it
/// belongs on an address only the front proxy reaches.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzListenConfig {
    pub addr: String,
    /// Where the original request's method and target are read from.
    #[serde(default)]
    pub convention: AuthzConvention,
    /// `envoy`: the prefix Envoy's `path_prefix` adds before the original
    /// path, stripped before routing; empty: none.
    #[serde(default)]
    pub path_prefix: String,
    /// A header every decision request must carry with this secret value;
    /// absent: none is asked for.
    #[serde(default)]
    pub shared_secret: Option<SharedSecretConfig>,
    /// Where Envoy's gRPC `ext_authz` (`Authorization/Check`) is served,
    /// as an IP address and port; absent: not served.
    #[serde(default)]
    pub grpc_addr: Option<String>,
}

/// How a front proxy describes the request it asks about.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthzConvention {
    /// `X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri` (Traefik, Caddy).
    #[default]
    Forwarded,
    /// `X-Original-Method`, `X-Original-URI` and `Host` (NGINX
    /// `auth_request`).
    Nginx,
    /// `X-Original-Method` and `X-Original-URL` (ingress-nginx's
    /// `auth-url`, which sends the auth service's own `Host`).
    IngressNginx,
    /// The check request's own method and path, below `path_prefix`
    /// (Envoy and Istio HTTP `ext_authz`).
    Envoy,
}

impl AuthzConvention {
    /// As written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Forwarded => "forwarded",
            Self::Nginx => "nginx",
            Self::IngressNginx => "ingress_nginx",
            Self::Envoy => "envoy",
        }
    }
}

/// The shared secret, read from exactly one of an environment variable or
/// a file (never written in the config itself).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedSecretConfig {
    #[serde(default = "default_secret_header")]
    pub header: String,
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub file: Option<PathBuf>,
}

fn default_secret_header() -> String {
    "x-jwtgate-authz-secret".into()
}

/// `listen.http`. The plain `host:port` form configs have always used is
/// the map form with only `addr`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpListenConfig {
    pub addr: String,
    pub mode: ClearTextMode,
    /// HTTP/2 with prior knowledge (h2c), as gRPC clients inside a cluster
    /// speak it; HTTP/1 clients are served as before.
    pub h2c: bool,
}

impl Default for HttpListenConfig {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:8080".into(),
            mode: ClearTextMode::Serve,
            h2c: false,
        }
    }
}

/// What the clear-text listener does with requests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClearTextMode {
    /// Route them like any other.
    #[default]
    Serve,
    /// Answer each with a 308 to the same path and query over HTTPS.
    Redirect,
    /// No clear-text listener at all.
    Off,
}

/// `listen.http` as a string or a map; serde's untagged enums would hide
/// the map's own errors (an unknown field, a wrong mode) behind "did not
/// match any variant".
fn http_listener<'de, D: Deserializer<'de>>(deserializer: D) -> Result<HttpListenConfig, D::Error> {
    struct Form;
    impl<'de> serde::de::Visitor<'de> for Form {
        type Value = HttpListenConfig;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a host:port address or a map with addr, mode and h2c")
        }
        fn visit_str<E: serde::de::Error>(self, addr: &str) -> Result<Self::Value, E> {
            Ok(HttpListenConfig {
                addr: addr.to_string(),
                ..HttpListenConfig::default()
            })
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            HttpListenConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    deserializer.deserialize_any(Form)
}

/// `listen.https`: TLS 1.2 and 1.3, certificates chosen by SNI.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpsListenConfig {
    pub addr: String,
    /// One entry per certificate; the first is also served to clients that
    /// send no SNI or a name no entry lists.
    pub certificates: Vec<CertificateConfig>,
    /// `Strict-Transport-Security` on every response over TLS; absent: not
    /// sent.
    #[serde(default)]
    pub hsts: Option<HstsConfig>,
    /// Offer HTTP/2 in ALPN (`h2`, then `http/1.1`); false: HTTP/1.1 only.
    #[serde(default = "default_true")]
    pub h2: bool,
    /// The port redirects to HTTPS name, when clients reach this listener
    /// through another one (a container port mapping, a load balancer);
    /// absent: the port of `addr`.
    #[serde(default)]
    pub redirect_port: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// The SNI names it serves: exact names, or `*.example.com` for any one
    /// label below `example.com`.
    pub hosts: Vec<String>,
    /// PEM: the certificate, then its intermediates.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HstsConfig {
    #[serde(deserialize_with = "duration")]
    pub max_age: Duration,
    pub include_subdomains: bool,
    pub preload: bool,
}

impl Default for HstsConfig {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(365 * 24 * 60 * 60),
            include_subdomains: false,
            preload: false,
        }
    }
}

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
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            threads: None,
            grace_period: Duration::from_secs(5),
            graceful_shutdown_timeout: Duration::from_secs(10),
            realm: "jwtgate".into(),
            trusted_proxies: Vec::new(),
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    pub name: Spanned<String>,
    /// The exact `iss` value this issuer puts in its tokens.
    pub issuer: String,
    /// Required allow-list; tokens with any other `alg` are rejected.
    pub algorithms: Vec<Algorithm>,
    /// `aud` must contain at least one of these.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Explicit opt-out from audience checking (RFC 7519 §4.1.3 says a
    /// recipient must check `aud`, so this is off by default).
    #[serde(default)]
    pub skip_audience_check: bool,
    #[serde(default = "default_leeway", deserialize_with = "duration")]
    pub leeway: Duration,
    /// Tokens without `exp` are rejected unless this is false.
    #[serde(default = "default_true")]
    pub require_exp: bool,
    /// Longest accepted token lifetime: `exp - iat` (`exp - now` without `iat`).
    #[serde(default, deserialize_with = "optional_duration")]
    pub max_lifetime: Option<Duration>,
    /// Reject tokens without a `sub`.
    #[serde(default)]
    pub require_sub: bool,
    /// Reject tokens without a `jti`, so each can be revoked by it.
    #[serde(default)]
    pub require_jti: bool,
    /// What marks an access token of this issuer (refresh and ID tokens
    /// signed by the same keys must not pass as one).
    #[serde(default)]
    pub token_type: TokenTypeConfig,
    /// Where scopes are read from; default: `scope`, then `scp`, then `scopes`.
    #[serde(default)]
    pub scope_claim: Option<String>,
    // Key sources: exactly one of these.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    #[serde(default)]
    pub hmac_secret_env: Option<String>,
    #[serde(default)]
    pub hmac_secret_file: Option<PathBuf>,
    /// Find the JWKS through `{issuer}/.well-known/openid-configuration`.
    #[serde(default)]
    pub discovery: bool,
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// How remote keys are fetched (discovery, jwks_uri).
    #[serde(default)]
    pub fetch: FetchConfig,
    /// How remote keys are kept fresh.
    #[serde(default)]
    pub refresh: RefreshConfig,
    /// `/readyz` waits for this issuer's keys; when false, only during
    /// `admin.startup_grace`.
    #[serde(default = "default_true")]
    pub required: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenTypeConfig {
    /// Accepted `typ` header values, e.g. `[at+jwt]` (RFC 9068).
    #[serde(default)]
    pub typ: Vec<String>,
    /// A claim (name or dotted path) that must hold one of `values`,
    /// e.g. `token_use` / `[access]` (Cognito) or `typ` / `[Bearer]` (Keycloak).
    #[serde(default)]
    pub claim: Option<String>,
    #[serde(default)]
    pub values: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FetchConfig {
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// For a whole request, body included.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    pub max_bytes: usize,
    /// Plain-HTTP discovery and JWKS URLs; for loopback tests only.
    pub allow_http: bool,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
            max_bytes: 512 * 1024,
            allow_http: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RefreshConfig {
    /// Bounds on the JWKS's own Cache-Control max-age (10m when absent).
    #[serde(deserialize_with = "duration")]
    pub min_refresh: Duration,
    #[serde(deserialize_with = "duration")]
    pub max_refresh: Duration,
    /// When refreshes fail, keep serving the last good keys this long.
    #[serde(deserialize_with = "duration")]
    pub max_stale: Duration,
    /// A token with an unknown `kid` triggers a refetch at most this often.
    #[serde(deserialize_with = "duration")]
    pub unknown_kid_interval: Duration,
    /// How long such a request waits for that refetch.
    #[serde(deserialize_with = "duration")]
    pub unknown_kid_wait: Duration,
}

impl Default for RefreshConfig {
    fn default() -> Self {
        Self {
            min_refresh: Duration::from_secs(60),
            max_refresh: Duration::from_secs(60 * 60),
            max_stale: Duration::from_secs(24 * 60 * 60),
            unknown_kid_interval: Duration::from_secs(30),
            unknown_kid_wait: Duration::from_secs(1),
        }
    }
}

fn default_leeway() -> Duration {
    Duration::from_secs(30)
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: Spanned<String>,
    #[serde(rename = "match", default)]
    pub matcher: MatchConfig,
    /// Absent: the route answers only the authorization listener's
    /// decision requests (needs `listen.authz`); the proxy answers 404.
    #[serde(default)]
    pub upstream: Option<UpstreamConfig>,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub forward: ForwardConfig,
    /// Cross-origin browser access; absent: jwtgate adds no CORS headers and
    /// preflights are routed like any other request.
    #[serde(default)]
    pub cors: Option<CorsConfig>,
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
    #[serde(default)]
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// One or more `host:port` (IP address or DNS name), used round robin
    /// across every address they resolve to.
    pub addrs: Vec<String>,
    #[serde(default = "default_connect_timeout", deserialize_with = "duration")]
    pub connect_timeout: Duration,
    #[serde(default = "default_read_timeout", deserialize_with = "duration")]
    pub read_timeout: Duration,
    #[serde(default = "default_read_timeout", deserialize_with = "duration")]
    pub write_timeout: Duration,
    /// TLS to the upstream; absent: clear text.
    #[serde(default)]
    pub tls: Option<UpstreamTlsConfig>,
    /// How often DNS names in `addrs` are resolved again, in the background.
    #[serde(default = "default_resolve_interval", deserialize_with = "duration")]
    pub resolve_interval: Duration,
    /// How long an endpoint that refused a connection gets no traffic;
    /// `0s`: never set aside.
    #[serde(default = "default_eject_for", deserialize_with = "duration")]
    pub eject_for: Duration,
    /// Active health checks; absent: none (connection failures still set an
    /// endpoint aside, see `eject_for`).
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
}

fn default_resolve_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_eject_for() -> Duration {
    Duration::from_secs(10)
}

/// How each endpoint of an upstream is probed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// `tcp`: a connection is accepted; `http`: `GET path` answers
    /// `expected_status` (over TLS when the upstream has `tls`).
    pub protocol: HealthCheckProtocol,
    pub path: String,
    pub expected_status: u16,
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
    /// For the connection and, with `http`, the response.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Consecutive passed checks that make an unhealthy endpoint healthy.
    pub healthy_threshold: usize,
    /// Consecutive failed checks that make a healthy endpoint unhealthy.
    pub unhealthy_threshold: usize,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            protocol: HealthCheckProtocol::Tcp,
            path: "/".into(),
            expected_status: 200,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            healthy_threshold: 1,
            unhealthy_threshold: 3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckProtocol {
    Tcp,
    Http,
}

/// Where upstream names are resolved.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// Name servers as `ip` or `ip:port` (UDP, then TCP for a truncated
    /// answer); empty: the system resolver (`/etc/hosts`,
    /// `/etc/resolv.conf` and its search domains).
    pub servers: Vec<String>,
    /// One resolution of one name, all servers and attempts included.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            timeout: Duration::from_secs(2),
        }
    }
}

/// How jwtgate speaks TLS to a route's upstream. The files are read when
/// the config is loaded, so a reload picks up rotated ones.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// `false` keeps the block but speaks clear text.
    pub enabled: bool,
    /// The name the upstream's certificate must be valid for, sent as SNI;
    /// default: the host of each address (an IP address is checked against
    /// the certificate's IP addresses and sends no SNI).
    pub sni: Option<String>,
    /// Check the upstream's certificate chain and name. Turning it off is
    /// explicit and warned about at startup and on every reload.
    pub verify: bool,
    /// PEM bundle of the CAs to trust; absent: the system roots.
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain (leaf first) presented to an upstream that
    /// requires mTLS; goes with `client_key`.
    pub client_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// Offer HTTP/2 by ALPN (`h2`, then `http/1.1`); the upstream chooses.
    pub h2: bool,
}

impl Default for UpstreamTlsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            sni: None,
            verify: true,
            ca_file: None,
            client_cert: None,
            client_key: None,
            h2: false,
        }
    }
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_read_timeout() -> Duration {
    Duration::from_secs(30)
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
    #[serde(default)]
    pub token_header: Option<String>,
    /// A cookie that carries the raw token.
    #[serde(default)]
    pub token_cookie: Option<String>,
    /// A query parameter that carries the raw token. Off by default: URLs
    /// end up in logs, histories and Referer headers (RFC 6750 §5.3).
    #[serde(default)]
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

fn optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    duration(deserializer).map(Some)
}

/// Durations are written the human way: `30s`, `5m`, `250ms`, `1h 30m`.
fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text)
        .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
}

/// The revocation list: where it is kept, who may change it, and the Redis
/// it is shared through. Restart-only.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RevocationConfig {
    /// The directory the list is kept in across restarts; unset: memory
    /// only (a restart forgets it unless Redis has it).
    pub dir: Option<PathBuf>,
    /// Bearer tokens for the admin listener's `/revocations`; with none,
    /// those endpoints are off.
    pub admin_tokens: Vec<AdminTokenConfig>,
    /// Share the list with other replicas through Redis.
    pub redis: Option<RevocationRedisConfig>,
}

/// One admin token, named for the audit log, read from exactly one of an
/// environment variable or a file (never written in the config itself).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTokenConfig {
    pub name: String,
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationRedisConfig {
    /// `redis://host:port/db` or `rediss://` (TLS); no password in it.
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Prefix of every key and of the channel jwtgate uses.
    #[serde(default = "default_redis_prefix")]
    pub key_prefix: String,
    /// How often the whole list is compared with Redis (repairs a missed
    /// message).
    #[serde(default = "default_reconcile_interval", deserialize_with = "duration")]
    pub reconcile_interval: Duration,
    /// Connect and command timeout.
    #[serde(default = "default_redis_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// `/readyz` fails once the list has not been in step with Redis for
    /// longer than this; unset: Redis never affects readiness.
    #[serde(default, deserialize_with = "optional_duration")]
    pub max_staleness: Option<Duration>,
}

fn default_redis_prefix() -> String {
    "jwtgate:revocation".into()
}

fn default_reconcile_interval() -> Duration {
    Duration::from_secs(30)
}

fn default_redis_timeout() -> Duration {
    Duration::from_secs(2)
}

/// The counters behind every route's `rate_limits`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitStateConfig {
    /// How many keys all limits together remember (memory bound).
    pub max_keys: usize,
    /// Share each limit's budget with other replicas through Redis.
    pub redis: Option<RateLimitRedisConfig>,
}

impl Default for RateLimitStateConfig {
    fn default() -> Self {
        Self {
            max_keys: 1 << 20,
            redis: None,
        }
    }
}

/// The same connection settings as `revocation.redis`, plus how often
/// each replica settles its spending with Redis.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRedisConfig {
    /// `redis://host:port/db` or `rediss://` (TLS); no password in it.
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Prefix of every key and of the channel jwtgate uses.
    #[serde(default = "default_rate_limit_prefix")]
    pub key_prefix: String,
    /// Connect and command timeout.
    #[serde(default = "default_redis_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// How often a replica reports what it allowed and learns what the
    /// others did: the window within which replicas may overshoot.
    #[serde(default = "default_sync_interval", deserialize_with = "duration")]
    pub sync_interval: Duration,
}

fn default_rate_limit_prefix() -> String {
    "jwtgate:ratelimit".into()
}

fn default_sync_interval() -> Duration {
    Duration::from_millis(200)
}
