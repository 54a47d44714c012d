//! State that outlives a config: the revocation list and the rate-limit
//! counters, and the Redis they are shared through.

use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};

use super::json::DurationText;
use super::{duration, duration_text, optional_duration};

/// The revocation list: where it is kept, who may change it, and the Redis
/// it is shared through. Restart-only.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RevocationConfig {
    /// The directory the list is kept in across restarts (created 0700;
    /// files 0600); unset: memory only (a restart forgets it unless Redis
    /// has it). No default path, so a read-only root filesystem needs
    /// nothing but a writable volume here.
    pub dir: Option<PathBuf>,
    /// Bearer tokens for the admin listener's `/revocations`, each `{name,
    /// env}` or `{name, file}`. None: those endpoints answer 404.
    pub admin_tokens: Vec<AdminTokenConfig>,
    /// Share the list with other replicas through the gateway's Redis (the
    /// top-level `redis` block, required); `{}` takes the defaults.
    pub redis: Option<RevocationRedisConfig>,
}

/// One admin token, named for the audit log, read from exactly one of an
/// environment variable or a file (never written in the config itself; at
/// least 16 bytes).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminTokenConfig {
    /// The token's name in the audit log: letters, digits, `-_.`.
    pub name: String,
    /// Read the token from this environment variable.
    pub env: Option<String>,
    /// Read the token from this file (trailing line ends dropped).
    pub file: Option<PathBuf>,
}

/// `revocation.redis`: share the list with the other replicas through the
/// gateway's Redis (the top-level `redis` block).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RevocationRedisConfig {
    /// Prefix of jwtgate's keys and channel; replicas that share a list use
    /// the same one.
    #[serde(default = "default_redis_prefix")]
    pub key_prefix: String,
    /// How often the whole list is read back from Redis (repairs a missed
    /// message); at least `1s`.
    #[serde(
        default = "default_reconcile_interval",
        deserialize_with = "duration",
        serialize_with = "duration_text"
    )]
    #[schemars(with = "DurationText")]
    pub reconcile_interval: Duration,
    /// `/readyz` fails once the list has been out of step with Redis longer
    /// than this; unset: Redis never affects readiness.
    #[serde(default, deserialize_with = "optional_duration")]
    #[schemars(with = "DurationText")]
    pub max_staleness: Option<Duration>,
    // The connection's old place: an error that says where it went. Not in
    // the schema, which refuses the field as unknown.
    #[serde(default, rename = "url", alias = "username", alias = "password_env")]
    #[serde(alias = "password_file", alias = "timeout", deserialize_with = "moved")]
    #[allow(dead_code, reason = "never read: its deserializer always fails")]
    #[schemars(skip)]
    moved_connection: Moved,
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

/// The counters behind every route's `rate_limits`. Restart-only.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitStateConfig {
    /// How many keys all limits together remember, about 36 bytes each
    /// (about 60 with `redis`); at least `64`. Keys whose budget is back
    /// are forgotten first.
    pub max_keys: usize,
    /// Share each limit's budget with other replicas through the gateway's
    /// Redis (the top-level `redis` block, required); `{}` takes the
    /// defaults.
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

/// `rate_limit.redis`: share each limit's budget with the other replicas
/// through the gateway's Redis (the top-level `redis` block).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRedisConfig {
    /// Prefix of jwtgate's keys and channel; replicas that share budgets
    /// use the same one.
    #[serde(default = "default_rate_limit_prefix")]
    pub key_prefix: String,
    /// How often each replica reports what it allowed and learns what the
    /// others did: the window in which replicas can overshoot a budget; at
    /// least `10ms`.
    #[serde(
        default = "default_sync_interval",
        deserialize_with = "duration",
        serialize_with = "duration_text"
    )]
    #[schemars(with = "DurationText")]
    pub sync_interval: Duration,
    // See `RevocationRedisConfig::moved_connection`.
    #[serde(default, rename = "url", alias = "username", alias = "password_env")]
    #[serde(alias = "password_file", alias = "timeout", deserialize_with = "moved")]
    #[allow(dead_code, reason = "never read: its deserializer always fails")]
    #[schemars(skip)]
    moved_connection: Moved,
}

fn default_rate_limit_prefix() -> String {
    "jwtgate:ratelimit".into()
}

fn default_sync_interval() -> Duration {
    Duration::from_millis(200)
}

/// `redis`: the Redis server jwtgate shares state through, one connection
/// setting for every use (the revocation list with `revocation.redis`,
/// rate-limit budgets with `rate_limit.redis`). Restart-only. A config
/// from before this block (`url`, `username`, `password_env`,
/// `password_file` or `timeout` under `revocation.redis` or
/// `rate_limit.redis`) is refused at that line with what to write instead.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db`, or `rediss://…` for TLS; credentials in the
    /// URL are refused.
    pub url: String,
    /// ACL user name.
    pub username: Option<String>,
    /// Where the password is read: `{ env: NAME }` or `{ file: PATH }`,
    /// never the password itself (trailing line ends of a file are
    /// dropped).
    pub password: Option<SecretConfig>,
    /// With `rediss://` only: the CA the server's certificate is checked
    /// against, and a client certificate for a server that asks for one.
    /// Absent: the system's roots.
    pub tls: Option<RedisTlsConfig>,
    /// Connect and command timeout; at least `100ms`.
    #[serde(
        default = "default_redis_timeout",
        deserialize_with = "duration",
        serialize_with = "duration_text"
    )]
    #[schemars(with = "DurationText")]
    pub timeout: Duration,
}

/// A secret read from exactly one of an environment variable or a file.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SecretConfig {
    /// The environment variable the secret is read from.
    pub env: Option<String>,
    /// The file the secret is read from.
    pub file: Option<PathBuf>,
}

/// `redis.tls`: PEM files, read when the config is loaded.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RedisTlsConfig {
    /// The CA the server's certificate is checked against; absent: the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// A client certificate, for a server that asks for one
    /// (`tls-auth-clients yes`); goes with `client_key`.
    pub client_cert: Option<PathBuf>,
    /// The private key of `client_cert`.
    pub client_key: Option<PathBuf>,
}

/// `revocation.redis` and `rate_limit.redis` used to hold the connection
/// settings, before the top-level `redis` block held them for both: a
/// config that still has one gets told where it went, at its line.
/// What a moved field would hold, were it ever read.
#[derive(Debug, Default)]
struct Moved;

fn moved<'de, D: Deserializer<'de>>(_: D) -> Result<Moved, D::Error> {
    Err(serde::de::Error::custom(
        "the Redis connection (url, username, password, timeout) is now the top-level `redis:` block, shared by revocation and rate limits: move it there (password_env: NAME becomes password: { env: NAME }, password_file: PATH becomes password: { file: PATH }) and keep only key_prefix and the intervals here",
    ))
}
