//! State that outlives a config: the revocation list and the rate-limit
//! counters, and the Redis they are shared through.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::{duration, optional_duration};

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
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

/// `revocation.redis`: share the list with the other replicas through the
/// gateway's Redis (the top-level `redis` block).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationRedisConfig {
    /// Prefix of every key and of the channel the list uses.
    #[serde(default = "default_redis_prefix")]
    pub key_prefix: String,
    /// How often the whole list is compared with Redis (repairs a missed
    /// message).
    #[serde(default = "default_reconcile_interval", deserialize_with = "duration")]
    pub reconcile_interval: Duration,
    /// `/readyz` fails once the list has not been in step with Redis for
    /// longer than this; unset: Redis never affects readiness.
    #[serde(default, deserialize_with = "optional_duration")]
    pub max_staleness: Option<Duration>,
    /// The connection's old place: an error that says where it went.
    #[serde(default, rename = "url", alias = "username", alias = "password_env")]
    #[serde(alias = "password_file", alias = "timeout", deserialize_with = "moved")]
    #[allow(dead_code, reason = "never read: its deserializer always fails")]
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

/// `rate_limit.redis`: share each limit's budget with the other replicas
/// through the gateway's Redis (the top-level `redis` block).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRedisConfig {
    /// Prefix of every key and of the channel the budgets use.
    #[serde(default = "default_rate_limit_prefix")]
    pub key_prefix: String,
    /// How often a replica reports what it allowed and learns what the
    /// others did: the window within which replicas may overshoot.
    #[serde(default = "default_sync_interval", deserialize_with = "duration")]
    pub sync_interval: Duration,
    /// The connection's old place: an error that says where it went.
    #[serde(default, rename = "url", alias = "username", alias = "password_env")]
    #[serde(alias = "password_file", alias = "timeout", deserialize_with = "moved")]
    #[allow(dead_code, reason = "never read: its deserializer always fails")]
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
/// rate-limit budgets with `rate_limit.redis`). Restart-only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db`, or `rediss://` for TLS; no credentials in it.
    pub url: String,
    pub username: Option<String>,
    /// Where the password is read: `{ env: NAME }` or `{ file: PATH }`,
    /// never the password itself.
    pub password: Option<SecretConfig>,
    /// For `rediss://`: the CA the server's certificate is checked against
    /// (default: the system's roots), and a client certificate for servers
    /// that ask for one.
    pub tls: Option<RedisTlsConfig>,
    /// Connect and command timeout.
    #[serde(default = "default_redis_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
}

/// A secret read from exactly one of an environment variable or a file.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecretConfig {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

/// `redis.tls`: PEM files, read when the config is loaded.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisTlsConfig {
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
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
