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
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::{Digest, RateLimits, Spent};
use crate::clock::SharedClock;
use crate::digest::hex;
use crate::state::redis::{Link, Redis, RedisFailure, Session, next_message, origin};
use crate::telemetry::traces;

/// Keys per script call.
const BATCH: usize = 500;

/// The `operation` of every failure: the sync has one counter.
const SYNC: &str = "sync";

/// `rate_limit` compiled. Restart-only: the counters live as long as the
/// process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSettings {
    pub max_keys: usize,
    /// `None`: each replica counts on its own.
    pub redis: Option<SharedBudgets>,
}

/// `rate_limit.redis`: how budgets are shared through the gateway's Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedBudgets {
    pub key_prefix: String,
    pub sync_interval: Duration,
}

impl RateLimitSettings {
    /// The counters these settings ask for.
    pub fn counters(&self) -> RateLimits {
        if self.redis.is_some() {
            RateLimits::shared(self.max_keys)
        } else {
            RateLimits::new(self.max_keys)
        }
    }
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

/// Keeps `limits` in step with Redis until the task is aborted.
pub async fn run(
    limits: Arc<RateLimits>,
    shared: SharedBudgets,
    redis: Arc<Redis>,
    clock: SharedClock,
) {
    let sync = Sync {
        limits,
        channel: format!("{}:tats", shared.key_prefix),
        origin: hex(&origin().to_le_bytes()),
        shared,
        clock,
    };
    redis.keep_connected(&sync).await;
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
    shared: SharedBudgets,
    clock: SharedClock,
}

impl Session for Sync {
    const NAME: &'static str = "rate limits";
    const MEANWHILE: &'static str = "each replica enforces its limits on its own";
    const CONNECT: &'static str = SYNC;

    fn channel(&self) -> &str {
        &self.channel
    }

    /// Settles every sync interval and adopts what the others settled,
    /// until the connection fails.
    async fn run(
        &self,
        mut link: Link<'_>,
        established: &mut bool,
    ) -> Result<Infallible, RedisFailure> {
        // Spending from before this connection was never reported.
        drop(self.limits.take_spent());
        self.limits.connected.set(1);
        *established = true;
        tracing::info!(
            url = %link.redis.settings().url,
            "rate limits: sharing budgets through Redis"
        );
        let mut every = tokio::time::interval(self.shared.sync_interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = next_message(&mut link.messages, SYNC) => self.receive(&message?),
                _ = every.tick() => self.settle(link.redis, &mut link.connection).await?,
            }
        }
    }

    fn failed(&self, _: &RedisFailure) {
        self.limits.connected.set(0);
        self.limits.sync_errors.inc();
        // What was allowed while Redis was away stays local.
        drop(self.limits.take_spent());
    }
}

impl Sync {
    /// Reports what this replica allowed, adopts the shared TATs, and
    /// publishes them for the others.
    async fn settle(
        &self,
        redis: &Redis,
        connection: &mut MultiplexedConnection,
    ) -> Result<(), RedisFailure> {
        let spent = self.limits.take_spent();
        if spent.is_empty() {
            // Doubles as the heartbeat that notices Redis going away.
            let _: String = redis
                .timed(SYNC, redis::cmd("PING").query_async(connection))
                .await?;
            return Ok(());
        }
        let settled = self.settle_spent(spent, redis, connection);
        traces::traced(
            "rate_limit settle",
            &[],
            RedisFailure::operation,
            |_| None,
            settled,
        )
        .await
    }

    /// Settles what was spent since the last interval, key by key.
    async fn settle_spent(
        &self,
        spent: Vec<Spent>,
        redis: &Redis,
        connection: &mut MultiplexedConnection,
    ) -> Result<(), RedisFailure> {
        let mut by_key: HashMap<Digest, u64> = HashMap::with_capacity(spent.len());
        for entry in spent {
            *by_key.entry(entry.digest).or_default() += entry.spent;
        }
        let keys: Vec<(Digest, u64)> = by_key.into_iter().collect();
        let prefix = &self.shared.key_prefix;
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
            let tats: Vec<String> = redis.timed(SYNC, eval.query_async(connection)).await?;
            let now = self.clock.now_nanos();
            let mut message = self.origin.clone();
            for ((digest, _), tat) in batch.iter().zip(&tats) {
                let Ok(micros) = tat.parse::<u64>() else {
                    continue;
                };
                self.limits.adopt(*digest, micros.saturating_mul(1000), now);
                let _ = write!(message, " {}:{micros}", hex(digest));
            }
            let _: i64 = redis
                .timed(
                    SYNC,
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
