//! The restart-only settings: listeners, threads, the drain, where keys are
//! kept on disk, the token cache, and the state shared across replicas. A
//! reload that changes any of them is refused and names each change.

use std::path::PathBuf;
use std::time::Duration;

use super::{Context, authz, shared, signals, telemetry};
use crate::auth::token_cache::CacheSettings;
use crate::authz::settings::AuthzSettings;
use crate::config::ConfigError;
use crate::config::schema::{AsWritten, ClearTextMode, GatewayConfig};
use crate::keys::remote::RemoteSource;
use crate::ssf::SignalsSettings;
use crate::state::rate_limit::budget_sync::RateLimitSettings;
use crate::state::redis::RedisSettings;
use crate::state::revocation::RevocationSettings;
use crate::telemetry::traces::TraceSettings;
use shared::DpopReplaySettings;

/// The settings read once at startup. A reload that changes any of them is
/// refused (see [`Bootstrap::changes`]).
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// `None`: `listen.http.mode: off`.
    pub listen_http: Option<String>,
    /// HTTP/2 with prior knowledge on the clear-text listener.
    pub h2c: bool,
    pub listen_https: Option<String>,
    /// ALPN offers `h2` on the TLS listener.
    pub https_h2: bool,
    pub admin_addr: String,
    pub echo_addr: Option<String>,
    pub threads: Option<usize>,
    pub grace_period: Duration,
    pub graceful_shutdown_timeout: Duration,
    /// How long a client connection may wait for a request.
    pub keepalive_timeout: Duration,
    /// Idle upstream connections kept for reuse, per worker thread.
    pub upstream_keepalive: usize,
    pub keys_cache_dir: Option<PathBuf>,
    /// `None`: the verified-token cache is off.
    pub token_cache: Option<CacheSettings>,
    /// `None`: no Redis; state is each replica's own.
    pub redis: Option<RedisSettings>,
    /// `None`: no `revocation` block, nothing is ever revoked.
    pub revocation: Option<RevocationSettings>,
    /// `None`: no `shared_signals` block.
    pub shared_signals: Option<SignalsSettings>,
    pub rate_limit: RateLimitSettings,
    pub dpop_replay: DpopReplaySettings,
    /// `None`: no authorization listener.
    pub authz: Option<AuthzSettings>,
    /// `None`: no traces.
    pub tracing: Option<TraceSettings>,
}

impl Bootstrap {
    /// Each restart-only setting that differs in `new`, as
    /// `field: old → new`, in config order.
    pub fn changes(&self, new: &Bootstrap) -> Vec<String> {
        let new = new.settings();
        self.settings()
            .into_iter()
            .filter_map(|(field, old)| {
                // A setting only one side has (a cache's size while the
                // other has it off) is covered by the one that switches it.
                let (_, new) = new.iter().find(|(name, _)| *name == field)?;
                (old != *new).then(|| format!("{field}: {old} → {new}"))
            })
            .collect()
    }

    /// Every restart-only setting, named as in the config, with its value
    /// in words: never a secret, only where one comes from.
    fn settings(&self) -> Vec<(&'static str, String)> {
        fn or(value: &Option<impl ToString>, none: &str) -> String {
            value
                .as_ref()
                .map_or_else(|| none.to_string(), ToString::to_string)
        }
        let duration = |d: Duration| AsWritten(d).to_string();
        let mut settings = vec![
            ("listen.http", or(&self.listen_http, "(off)")),
            ("listen.http.h2c", self.h2c.to_string()),
            ("listen.https.addr", or(&self.listen_https, "(none)")),
            ("listen.https.h2", self.https_h2.to_string()),
            ("admin.addr", self.admin_addr.clone()),
            ("echo.addr", or(&self.echo_addr, "(none)")),
            ("server.threads", or(&self.threads, "(one per core)")),
            ("server.grace_period", duration(self.grace_period)),
            (
                "server.graceful_shutdown_timeout",
                duration(self.graceful_shutdown_timeout),
            ),
            ("server.keepalive_timeout", duration(self.keepalive_timeout)),
            (
                "server.upstream_keepalive",
                self.upstream_keepalive.to_string(),
            ),
            (
                "keys_cache_dir",
                or(&self.keys_cache_dir.as_ref().map(|d| d.display()), "(none)"),
            ),
            (
                "token_cache.enabled",
                self.token_cache.is_some().to_string(),
            ),
        ];
        if let Some(cache) = &self.token_cache {
            settings.extend([
                ("token_cache.max_entries", cache.max_entries.to_string()),
                ("token_cache.max_bytes", cache.max_bytes.to_string()),
                ("token_cache.ttl", duration(cache.ttl)),
            ]);
        }
        settings.extend([
            (
                "redis",
                or(&self.redis.as_ref().map(|r| format!("{r:?}")), "(none)"),
            ),
            (
                "revocation",
                or(&self.revocation.as_ref().map(describe_revocation), "(none)"),
            ),
            (
                "shared_signals",
                or(
                    &self.shared_signals.as_ref().map(|s| format!("{s:?}")),
                    "(none)",
                ),
            ),
            ("rate_limit", describe_rate_limit(&self.rate_limit)),
            ("dpop_replay", self.dpop_replay.describe()),
            (
                "listen.authz",
                or(&self.authz.as_ref().map(AuthzSettings::describe), "(off)"),
            ),
            (
                "telemetry.tracing",
                or(&self.tracing.as_ref().map(telemetry::describe), "(off)"),
            ),
        ]);
        settings
    }
}

/// The revocation settings in words: admin tokens by name and source.
fn describe_revocation(settings: &RevocationSettings) -> String {
    let tokens: Vec<String> = settings
        .admin_tokens
        .iter()
        .map(|t| format!("{} from {}", t.name, t.source))
        .collect();
    let dir = settings
        .dir
        .as_ref()
        .map_or_else(|| "(none)".into(), |d| d.display().to_string());
    let shared = settings.redis.as_ref().map_or_else(
        || "not shared".to_string(),
        |redis| {
            let staleness = redis
                .max_staleness
                .map_or_else(|| "(none)".into(), |d| AsWritten(d).to_string());
            format!(
                "shared (key_prefix {}, reconcile_interval {}, max_staleness {staleness})",
                redis.key_prefix,
                AsWritten(redis.reconcile_interval)
            )
        },
    );
    format!("dir {dir} tokens [{}] {shared}", tokens.join(", "))
}

fn describe_rate_limit(settings: &RateLimitSettings) -> String {
    let shared = settings.redis.as_ref().map_or_else(
        || "not shared".to_string(),
        |redis| {
            format!(
                "shared (key_prefix {}, sync_interval {})",
                redis.key_prefix,
                AsWritten(redis.sync_interval)
            )
        },
    );
    format!("max_keys {} {shared}", settings.max_keys)
}

pub(super) fn compile(
    config: &GatewayConfig,
    remote: &[RemoteSource],
    cx: &mut Context<'_>,
) -> Result<Bootstrap, ConfigError> {
    let cache = &config.token_cache;
    if cache.enabled && (cache.max_entries == 0 || cache.max_bytes == 0 || cache.ttl.is_zero()) {
        return Err(cx.error(
            None,
            format!(
                "token_cache: max_entries, max_bytes and ttl must be positive (or set enabled: false); max_entries is {}, max_bytes {}, ttl {}",
                cache.max_entries,
                cache.max_bytes,
                AsWritten(cache.ttl)
            ),
        ));
    }
    let keys_cache_dir = config.keys_cache_dir.as_ref().map(|dir| cx.file(dir));
    if !remote.is_empty() && keys_cache_dir.is_none() {
        cx.warnings.push(
            "keys_cache_dir is not set: after a restart during an identity-provider outage, remote issuers will have no keys".into(),
        );
    }
    let shared = shared::compile(
        config.redis.as_ref(),
        config.revocation.as_ref(),
        &config.rate_limit,
        &config.dpop_replay,
        cx.base_dir,
        cx.sources,
    )
    .map_err(|message| cx.error(None, message))?;
    let shared_signals = signals::compile(
        config.shared_signals.as_ref(),
        shared.revocation.is_some(),
        cx.base_dir,
        cx.sources,
    )
    .map_err(|message| cx.error(None, message))?;
    let authz = authz::compile(config.listen.authz.as_ref(), cx.base_dir, cx.sources)
        .map_err(|error| cx.error(None, error.to_string()))?;
    let tracing = telemetry::compile(&config.telemetry)
        .map_err(|message| cx.error_at_field("telemetry.tracing", message))?;
    let keepalive_timeout = config.server.keepalive_timeout;
    if keepalive_timeout.subsec_nanos() != 0 || keepalive_timeout.is_zero() {
        // Pingora's HTTP/1 parser takes the keep-alive wait in whole
        // seconds, and reads 0 as no limit at all.
        return Err(cx.error_at_field(
            "server",
            format!(
                "server.keepalive_timeout is {}; it must be whole seconds, at least 1s",
                AsWritten(keepalive_timeout)
            ),
        ));
    }
    if config.server.upstream_keepalive == 0 {
        return Err(cx.error_at_field(
            "server",
            "server.upstream_keepalive must be at least 1".into(),
        ));
    }
    let http_off = config.listen.http.mode == ClearTextMode::Off;
    let https = config.listen.https.as_ref();
    Ok(Bootstrap {
        listen_http: (!http_off).then(|| config.listen.http.addr.clone()),
        h2c: config.listen.http.h2c,
        listen_https: https.map(|h| h.addr.clone()),
        https_h2: https.is_some_and(|h| h.h2),
        admin_addr: config.admin.addr.clone(),
        echo_addr: config.echo.as_ref().map(|e| e.addr.clone()),
        threads: config.server.threads,
        grace_period: config.server.grace_period,
        graceful_shutdown_timeout: config.server.graceful_shutdown_timeout,
        keepalive_timeout,
        upstream_keepalive: config.server.upstream_keepalive,
        keys_cache_dir,
        token_cache: cache.enabled.then_some(CacheSettings {
            max_entries: cache.max_entries,
            max_bytes: cache.max_bytes,
            ttl: cache.ttl,
        }),
        redis: shared.redis,
        revocation: shared.revocation,
        shared_signals,
        rate_limit: shared.rate_limit,
        dpop_replay: shared.dpop_replay,
        authz,
        tracing,
    })
}
