//! State shared across replicas, compiled: the `redis` connection, and
//! `revocation` and `rate_limit` with how each is shared through it. Admin
//! tokens and the Redis password are read here, and kept only as a digest
//! or inside the connection settings, never in a description.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::assemble::sources::{SecretSource, Sources};
use crate::config::schema::{
    AdminTokenConfig, AsWritten, DpopReplayConfig, RateLimitStateConfig, RedisConfig,
    RedisTlsConfig, RevocationConfig, SecretConfig,
};
use crate::digest::sha256;
use crate::state::dpop_replay::SharedReplay;
use crate::state::rate_limit::budget_sync::{RateLimitSettings, SharedBudgets};
use crate::state::redis::{RedisSettings, RedisTls};
use crate::state::revocation::tokens::AdminToken;
use crate::state::revocation::{RevocationSettings, RevocationSharing};
use crate::telemetry::metrics::valid_name;

/// The settings of state shared across replicas; a message naming the
/// field when one is wrong.
pub(super) struct Shared {
    pub redis: Option<RedisSettings>,
    pub revocation: Option<RevocationSettings>,
    pub rate_limit: RateLimitSettings,
    pub dpop_replay: DpopReplaySettings,
}

/// `dpop_replay` compiled: the bound of this replica's table, and how
/// proofs are shared through Redis, if they are.
#[derive(Debug, Clone)]
pub struct DpopReplaySettings {
    pub max_entries: usize,
    pub shared: Option<SharedReplay>,
}

impl DpopReplaySettings {
    pub fn describe(&self) -> String {
        let shared = self.shared.as_ref().map_or_else(
            || "not shared".to_string(),
            |shared| {
                format!(
                    "shared (key_prefix {}, budget {}, on_error {:?})",
                    shared.key_prefix,
                    AsWritten(shared.budget),
                    shared.on_error
                )
            },
        );
        format!("max_entries {} {shared}", self.max_entries)
    }
}

pub(super) fn compile(
    redis: Option<&RedisConfig>,
    revocation: Option<&RevocationConfig>,
    rate_limit: &RateLimitStateConfig,
    dpop_replay: &DpopReplayConfig,
    base_dir: &Path,
    sources: &dyn Sources,
) -> Result<Shared, String> {
    let redis = redis
        .map(|config| connection(config, base_dir, sources))
        .transpose()?;
    let revocation = revocation
        .map(|config| revocation_settings(config, base_dir, sources))
        .transpose()?;
    let rate_limit = rate_limit_settings(rate_limit)?;
    let dpop_replay = dpop_replay_settings(dpop_replay)?;
    let sharing = [
        (
            "revocation.redis",
            revocation.as_ref().is_some_and(|r| r.redis.is_some()),
        ),
        ("rate_limit.redis", rate_limit.redis.is_some()),
        ("dpop_replay.redis", dpop_replay.shared.is_some()),
    ];
    if redis.is_none()
        && let Some((field, _)) = sharing.iter().find(|(_, shared)| *shared)
    {
        return Err(format!(
            "{field} shares through Redis, but there is no top-level redis block: add redis: {{ url: redis://HOST:6379 }}"
        ));
    }
    Ok(Shared {
        redis,
        revocation,
        rate_limit,
        dpop_replay,
    })
}

fn dpop_replay_settings(config: &DpopReplayConfig) -> Result<DpopReplaySettings, String> {
    if config.max_entries < 64 {
        return Err(format!(
            "dpop_replay.max_entries: {} is too few to remember proofs by; use at least 64",
            config.max_entries
        ));
    }
    let shared = config
        .redis
        .as_ref()
        .map(|redis| {
            if redis.budget.is_zero() {
                return Err("dpop_replay.redis.budget must be longer than 0s".to_string());
            }
            sharing("dpop_replay.redis", &redis.key_prefix, &[])?;
            Ok(SharedReplay {
                key_prefix: redis.key_prefix.clone(),
                budget: redis.budget,
                on_error: redis.on_error,
            })
        })
        .transpose()?;
    Ok(DpopReplaySettings {
        max_entries: config.max_entries,
        shared,
    })
}

fn revocation_settings(
    config: &RevocationConfig,
    base_dir: &Path,
    sources: &dyn Sources,
) -> Result<RevocationSettings, String> {
    let mut admin_tokens: Vec<AdminToken> = Vec::new();
    for (index, token) in config.admin_tokens.iter().enumerate() {
        let token = admin_token(index, token, base_dir, sources)?;
        if admin_tokens.iter().any(|t| t.name == token.name) {
            return Err(format!(
                "revocation.admin_tokens: the name {:?} is used twice",
                token.name
            ));
        }
        admin_tokens.push(token);
    }
    let redis = config
        .redis
        .as_ref()
        .map(|redis| {
            let mut intervals = vec![("reconcile_interval", redis.reconcile_interval, 1000)];
            intervals.extend(redis.max_staleness.map(|max| ("max_staleness", max, 1000)));
            sharing("revocation.redis", &redis.key_prefix, &intervals)?;
            Ok::<_, String>(RevocationSharing {
                key_prefix: redis.key_prefix.clone(),
                reconcile_interval: redis.reconcile_interval,
                max_staleness: redis.max_staleness,
            })
        })
        .transpose()?;
    Ok(RevocationSettings {
        dir: config.dir.as_ref().map(|dir| base_dir.join(dir)),
        admin_tokens,
        redis,
    })
}

fn admin_token(
    index: usize,
    config: &AdminTokenConfig,
    base_dir: &Path,
    sources: &dyn Sources,
) -> Result<AdminToken, String> {
    let name = &config.name;
    let field = format!("revocation.admin_tokens[{index}]");
    if !valid_name(name) {
        return Err(format!(
            "{field}: name {name:?} must be 1-64 letters, digits, '-', '_' or '.'"
        ));
    }
    let source = match (&config.env, &config.file) {
        (Some(var), None) => SecretSource::Env(var),
        (None, Some(file)) => SecretSource::File(base_dir.join(file)),
        _ => {
            return Err(format!(
                "{field} ({name:?}): give exactly one of env or file"
            ));
        }
    };
    let value = sources
        .secret(&source)
        .map_err(|e| format!("{field} ({name:?}): {e}"))?;
    if value.len() < 16 {
        return Err(format!(
            "{field} ({name:?}): the token is {} bytes; use at least 16",
            value.len()
        ));
    }
    Ok(AdminToken {
        name: name.clone(),
        digest: sha256(&value),
        source: source.describe(),
    })
}

fn rate_limit_settings(config: &RateLimitStateConfig) -> Result<RateLimitSettings, String> {
    if config.max_keys < 64 {
        return Err(format!(
            "rate_limit.max_keys: {} must be at least 64",
            config.max_keys
        ));
    }
    let redis = config
        .redis
        .as_ref()
        .map(|redis| {
            let interval = ("sync_interval", redis.sync_interval, 10);
            sharing("rate_limit.redis", &redis.key_prefix, &[interval])?;
            Ok::<_, String>(SharedBudgets {
                key_prefix: redis.key_prefix.clone(),
                sync_interval: redis.sync_interval,
            })
        })
        .transpose()?;
    Ok(RateLimitSettings {
        max_keys: config.max_keys,
        redis,
    })
}

/// The top-level `redis` block: the one connection every shared state uses.
fn connection(
    config: &RedisConfig,
    base_dir: &Path,
    sources: &dyn Sources,
) -> Result<RedisSettings, String> {
    let tls = redis_url(&config.url)?;
    let (password, password_source) = match &config.password {
        None => (None, None),
        Some(secret) => {
            let source = secret_source("redis.password", secret, base_dir)?;
            let password = sources
                .secret_text(&source)
                .map_err(|e| format!("redis.password: {e}"))?;
            (Some(password), Some(source.describe()))
        }
    };
    let tls = match (&config.tls, tls) {
        (Some(_), false) => {
            return Err(
                "redis.tls is set but redis.url starts with redis://: use rediss:// for TLS".into(),
            );
        }
        (tls, true) => Some(redis_tls(tls.as_ref(), base_dir, sources)?),
        (None, false) => None,
    };
    at_least("redis", "timeout", config.timeout, 100)?;
    Ok(RedisSettings {
        url: config.url.clone(),
        username: config.username.clone(),
        password,
        password_source,
        tls,
        timeout: config.timeout,
    })
}

/// Checks `redis.url`; `Ok(true)` for TLS (`rediss://`).
fn redis_url(url: &str) -> Result<bool, String> {
    let problem = |problem: &str| format!("redis.url: {url:?} {problem}");
    let (rest, tls) = match (url.strip_prefix("redis://"), url.strip_prefix("rediss://")) {
        (Some(rest), _) => (rest, false),
        (None, Some(rest)) => (rest, true),
        (None, None) => return Err(problem("must start with redis:// or rediss://")),
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err(problem(
            "holds credentials: put the user in username and the password in password: { env: NAME } or { file: PATH }",
        ));
    }
    if authority.is_empty() {
        return Err(problem("names no host"));
    }
    let url = redis::parse_redis_url(url).ok_or_else(|| problem("is not a valid URL"))?;
    redis::IntoConnectionInfo::into_connection_info(url)
        .map_err(|_| problem("is not a Redis URL (host, port, /database number)"))?;
    Ok(tls)
}

/// `redis.tls`'s files, read now; without the block, the system's roots.
fn redis_tls(
    config: Option<&RedisTlsConfig>,
    base_dir: &Path,
    sources: &dyn Sources,
) -> Result<RedisTls, String> {
    let mut files = Vec::new();
    let mut read = |field: &str, file: &PathBuf| {
        let path = base_dir.join(file);
        files.push(path.display().to_string());
        sources
            .read(&path)
            .map_err(|e| format!("redis.tls.{field}: cannot read {}: {e}", path.display()))
    };
    let Some(config) = config else {
        return Ok(RedisTls {
            ca: None,
            client: None,
            files,
        });
    };
    let ca = config
        .ca_file
        .as_ref()
        .map(|file| read("ca_file", file))
        .transpose()?;
    let client = match (&config.client_cert, &config.client_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some((read("client_cert", cert)?, read("client_key", key)?)),
        _ => {
            return Err(
                "redis.tls.client_cert and redis.tls.client_key go together: give both or neither"
                    .into(),
            );
        }
    };
    Ok(RedisTls { ca, client, files })
}

pub(super) fn secret_source<'a>(
    field: &str,
    secret: &'a SecretConfig,
    base_dir: &Path,
) -> Result<SecretSource<'a>, String> {
    match (&secret.env, &secret.file) {
        (Some(var), None) => Ok(SecretSource::Env(var)),
        (None, Some(file)) => Ok(SecretSource::File(base_dir.join(file))),
        _ => Err(format!("{field}: give exactly one of env or file")),
    }
}

/// How a piece of state is shared through Redis: its key prefix, and each
/// interval with its least value in milliseconds.
fn sharing(section: &str, prefix: &str, intervals: &[(&str, Duration, u64)]) -> Result<(), String> {
    if prefix.is_empty() || prefix.len() > 128 || !prefix.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{section}.key_prefix: {prefix:?} must be 1-128 printable characters without spaces"
        ));
    }
    for (field, value, min_ms) in intervals {
        at_least(section, field, *value, *min_ms)?;
    }
    Ok(())
}

fn at_least(section: &str, field: &str, value: Duration, min_ms: u64) -> Result<(), String> {
    let min = Duration::from_millis(min_ms);
    if value < min {
        return Err(format!(
            "{section}.{field}: {} must be at least {}",
            AsWritten(value),
            AsWritten(min)
        ));
    }
    Ok(())
}
