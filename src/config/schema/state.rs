//! State that outlives a config: the revocation list and the rate-limit
//! counters, and the Redis they are shared through.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

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
