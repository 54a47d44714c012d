//! `rate_limit` compiled, and sharing rate-limit budgets through Redis.
//!
//! Requests never wait on Redis: each replica enforces its limits from its
//! own counters. Every `sync_interval` it settles with Redis: one script
//! call adds what it allowed since the last sync to each key's shared TAT
//! (`P:tat:<digest hex>`, microseconds, expiring when the TAT passes) and
//! returns the new TATs, which the replica adopts and publishes on
//! `P:tats`; the other replicas adopt them from there. So a key's budget is
//! shared: what any replica spent is, within about one sync interval,
//! spent for all of them. Until then each replica may allow up to the
//! limit's burst for a key on its own, so across `N` replicas a key can get
//! at most `(N - 1) × burst` requests more than its budget per sync
//! interval. When Redis is away, each replica keeps enforcing the full
//! limit on its own (`jwtgate_rate_limit_redis_errors_total` counts the
//! failures); what it allowed meanwhile is not reported later.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use redis::AsyncConnectionConfig;

use super::rate_limit::{Digest, RateLimits};
use super::revocation::settings::{
    RedisConnection, RedisConnectionConfig, SettingsError, redis_connection,
};
use crate::clock::SharedClock;
use crate::config::schema::RateLimitStateConfig;

const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Keys per script call.
const BATCH: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum RateLimitSettingsError {
    #[error("rate_limit.max_keys: {0} must be at least 64")]
    MaxKeys(usize),
    #[error("rate_limit.redis.sync_interval: {0} must be at least 10ms")]
    SyncInterval(String),
    #[error(transparent)]
    Redis(#[from] SettingsError),
}

/// `rate_limit` compiled. Restart-only: the counters live as long as the
/// process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSettings {
    pub max_keys: usize,
    pub redis: Option<SharedBudgets>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedBudgets {
    pub connection: RedisConnection,
    pub sync_interval: Duration,
}

impl RateLimitSettings {
    /// The settings in words, without secrets, for the reload comparison.
    pub fn describe(&self) -> String {
        match &self.redis {
            None => format!("max_keys {} no redis", self.max_keys),
            Some(shared) => format!(
                "max_keys {} {:?} sync {}",
                self.max_keys,
                shared.connection,
                humantime::format_duration(shared.sync_interval)
            ),
        }
    }

    /// The counters these settings ask for.
    pub fn counters(&self) -> RateLimits {
        if self.redis.is_some() {
            RateLimits::shared(self.max_keys)
        } else {
            RateLimits::new(self.max_keys)
        }
    }
}

pub fn compile(
    config: RateLimitStateConfig,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<RateLimitSettings, RateLimitSettingsError> {
    if config.max_keys < 64 {
        return Err(RateLimitSettingsError::MaxKeys(config.max_keys));
    }
    let redis = match config.redis {
        None => None,
        Some(redis) => {
            if redis.sync_interval < Duration::from_millis(10) {
                return Err(RateLimitSettingsError::SyncInterval(
                    humantime::format_duration(redis.sync_interval).to_string(),
                ));
            }
            let connection = RedisConnectionConfig {
                url: redis.url,
                username: redis.username,
                password_env: redis.password_env,
                password_file: redis.password_file,
                key_prefix: redis.key_prefix,
                timeout: redis.timeout,
            };
            Some(SharedBudgets {
                connection: redis_connection("rate_limit.redis", connection, base_dir, env)?,
                sync_interval: redis.sync_interval,
            })
        }
    };
    Ok(RateLimitSettings {
        max_keys: config.max_keys,
        redis,
    })
}

/// Adds each key's spending to its shared TAT (microseconds; a key past
/// its TAT counts from now) and returns the new TATs. Numbers are
/// formatted with `%.0f`: Lua's own conversion would round them.
const SETTLE: &str = r"
local now = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  tat = tat + tonumber(ARGV[i + 1])
  local text = string.format('%.0f', tat)
  redis.call('SET', key, text, 'PXAT', string.format('%.0f', math.ceil(tat / 1000)))
  out[i] = text
end
return out
";

/// Runs the sync on Pingora's background runtime for the life of the
/// process.
pub struct SyncService {
    pub limits: Arc<RateLimits>,
    pub settings: SharedBudgets,
    pub clock: SharedClock,
}

#[async_trait]
impl BackgroundService for SyncService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let sync = tokio::spawn(run(
            self.limits.clone(),
            self.settings.clone(),
            self.clock.clone(),
        ));
        let _ = shutdown.changed().await;
        sync.abort();
    }
}

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the subscription ended")]
    SubscriptionEnded,
}

/// Keeps `limits` in step with Redis until aborted.
pub async fn run(limits: Arc<RateLimits>, settings: SharedBudgets, clock: SharedClock) {
    // rustls is built with two providers here; `rediss://` needs one chosen.
    pingora::tls::install_default_crypto_provider();
    let client = match crate::state::redis::client(&settings.connection) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!("rate limits: cannot use rate_limit.redis.url: {error}");
            return;
        }
    };
    let sync = Sync {
        limits,
        channel: format!("{}:tats", settings.connection.key_prefix),
        origin: origin(),
        settings,
        clock,
        client,
    };
    let mut backoff = MIN_BACKOFF;
    let mut warned = false;
    loop {
        let mut established = false;
        let error = sync.connected(&mut established).await;
        sync.limits.connected.set(0);
        sync.limits.sync_errors.inc();
        // What was allowed while Redis was away stays local.
        drop(sync.limits.take_spent());
        if established {
            backoff = MIN_BACKOFF;
            warned = false;
        }
        if !warned {
            tracing::warn!(
                "rate limits: Redis unreachable ({error}); each replica enforces its limits on its own, retrying"
            );
            warned = true;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn origin() -> String {
    let mut bytes = [0u8; 8];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    hex(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

fn unhex(text: &str) -> Option<Digest> {
    let mut digest = [0u8; 16];
    if text.len() != 32 {
        return None;
    }
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(digest)
}

struct Sync {
    limits: Arc<RateLimits>,
    channel: String,
    origin: String,
    settings: SharedBudgets,
    clock: SharedClock,
    client: redis::Client,
}

impl Sync {
    async fn timed<T>(
        &self,
        future: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, SyncError> {
        let timeout = self.settings.connection.timeout;
        match tokio::time::timeout(timeout, future).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(SyncError::Timeout(timeout)),
        }
    }

    /// One connection's life; returns why it ended.
    async fn connected(&self, established: &mut bool) -> SyncError {
        match self.connected_inner(established).await {
            Ok(never) => match never {},
            Err(error) => error,
        }
    }

    async fn connected_inner(
        &self,
        established: &mut bool,
    ) -> Result<std::convert::Infallible, SyncError> {
        let timeout = self.settings.connection.timeout;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let mut connection = self
            .timed(
                self.client
                    .get_multiplexed_async_connection_with_config(&config),
            )
            .await?;
        let mut pubsub = self.timed(self.client.get_async_pubsub()).await?;
        self.timed(pubsub.subscribe(&self.channel)).await?;
        let mut messages = pubsub.into_on_message();
        // Spending from before this connection was never reported.
        drop(self.limits.take_spent());
        self.limits.connected.set(1);
        *established = true;
        tracing::info!(
            url = %self.settings.connection.url,
            "rate limits: sharing budgets through Redis"
        );
        let mut every = tokio::time::interval(self.settings.sync_interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = messages.next() => {
                    let message = message.ok_or(SyncError::SubscriptionEnded)?;
                    self.receive(&message);
                }
                _ = every.tick() => self.settle(&mut connection).await?,
            }
        }
    }

    /// Reports what this replica allowed, adopts the shared TATs, and
    /// publishes them for the others.
    async fn settle(
        &self,
        connection: &mut redis::aio::MultiplexedConnection,
    ) -> Result<(), SyncError> {
        let spent = self.limits.take_spent();
        if spent.is_empty() {
            // Doubles as the heartbeat that notices Redis going away.
            let _: String = self
                .timed(redis::cmd("PING").query_async(connection))
                .await?;
            return Ok(());
        }
        let mut by_key: HashMap<Digest, u64> = HashMap::with_capacity(spent.len());
        for entry in spent {
            *by_key.entry(entry.digest).or_default() += entry.spent;
        }
        let keys: Vec<(Digest, u64)> = by_key.into_iter().collect();
        let prefix = &self.settings.connection.key_prefix;
        for batch in keys.chunks(BATCH) {
            let now_micros = self.clock.now_nanos() / 1000;
            // EVAL rather than EVALSHA: the script is small, and a Redis
            // that restarted empty needs no reloading.
            let mut eval = redis::cmd("EVAL");
            eval.arg(SETTLE).arg(batch.len());
            for (digest, _) in batch {
                eval.arg(format!("{prefix}:tat:{}", hex(digest)));
            }
            eval.arg(now_micros);
            for (_, spent) in batch {
                eval.arg(spent.div_ceil(1000));
            }
            let tats: Vec<String> = self.timed(eval.query_async(connection)).await?;
            let now = self.clock.now_nanos();
            let mut message = self.origin.clone();
            for ((digest, _), tat) in batch.iter().zip(&tats) {
                let Ok(micros) = tat.parse::<u64>() else {
                    continue;
                };
                self.limits.adopt(*digest, micros.saturating_mul(1000), now);
                let _ = write!(message, " {}:{micros}", hex(digest));
            }
            let _: i64 = self
                .timed(
                    redis::cmd("PUBLISH")
                        .arg(&self.channel)
                        .arg(&message)
                        .query_async(connection),
                )
                .await?;
        }
        Ok(())
    }

    /// Another replica's settled TATs: `origin digest:micros ...`.
    fn receive(&self, message: &redis::Msg) {
        let Ok(payload) = message.get_payload::<String>() else {
            return;
        };
        let mut parts = payload.split(' ');
        if parts.next() == Some(self.origin.as_str()) {
            return;
        }
        let now = self.clock.now_nanos();
        for part in parts {
            let Some((digest, micros)) = part.split_once(':') else {
                continue;
            };
            let (Some(digest), Ok(micros)) = (unhex(digest), micros.parse::<u64>()) else {
                continue;
            };
            self.limits.adopt(digest, micros.saturating_mul(1000), now);
            self.limits.adopted.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_yaml(yaml: &str) -> Result<RateLimitSettings, String> {
        let config: RateLimitStateConfig =
            serde_saphyr::from_str(yaml).map_err(|e| e.to_string())?;
        compile(config, Path::new("/etc/jwtgate"), &|_| None).map_err(|e| e.to_string())
    }

    #[test]
    fn settings_are_checked_naming_the_field() {
        let settings = compile_yaml("redis: { url: 'redis://cache:6379' }").unwrap();
        let shared = settings.redis.as_ref().unwrap();
        assert_eq!(shared.sync_interval, Duration::from_millis(200));
        assert_eq!(shared.connection.key_prefix, "jwtgate:ratelimit");
        assert_eq!(settings.max_keys, 1 << 20);
        let cases = [
            ("max_keys: 3", "rate_limit.max_keys: 3 must be at least 64"),
            (
                "redis: { url: 'redis://x', sync_interval: 1ms }",
                "rate_limit.redis.sync_interval: 1ms must be at least 10ms",
            ),
            (
                "redis: { url: 'http://x' }",
                "rate_limit.redis.url: \"http://x\" must start with redis://",
            ),
            (
                "redis: { url: 'redis://x', password_env: NOPE }",
                "rate_limit.redis.password_env: environment variable NOPE is not set",
            ),
            (
                "redis: { url: 'redis://x', timeout: 1ms }",
                "rate_limit.redis.timeout: 1ms must be at least 100ms",
            ),
            ("redis: { url: 'redis://x', nope: 1 }", "unknown field"),
        ];
        for (yaml, expected) in cases {
            let error = compile_yaml(yaml).unwrap_err();
            assert!(error.contains(expected), "{yaml}: {error}");
        }
    }

    #[test]
    fn digests_survive_the_trip_through_text() {
        let digest: Digest = *b"0123456789abcdef";
        assert_eq!(unhex(&hex(&digest)), Some(digest));
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn adopted_budgets_refuse_what_other_replicas_spent() {
        use crate::config::schema::{AuthMode, RateLimitConfig};
        use crate::state::rate_limit::RouteRateLimits;
        let limits = RouteRateLimits::compile(
            "r",
            AuthMode::Off,
            &[RateLimitConfig {
                name: "l".into(),
                rate: "2/h".into(),
                burst: None,
                key: "route".into(),
            }],
        )
        .unwrap();
        let limit = &limits.before_auth[0];
        let (a, b) = (RateLimits::shared(1024), RateLimits::shared(1024));
        let now = 1_800_000_000 * 1_000_000_000u64;
        assert!(a.check(limit, Some(b""), now).is_ok());
        assert!(a.check(limit, Some(b""), now).is_ok());
        // What replica A reports: two intervals of the same key.
        let spent = a.take_spent();
        assert_eq!(spent.len(), 2);
        assert_eq!(spent[0].digest, spent[1].digest);
        let tat = now + spent.iter().map(|s| s.spent).sum::<u64>();
        b.adopt(spent[0].digest, tat, now);
        assert!(b.check(limit, Some(b""), now).is_err());
        assert!(a.take_spent().is_empty());
    }
}
