//! `revocation` compiled: paths resolved, admin tokens read and reduced to
//! their SHA-256, the Redis URL checked and its password read. Secrets
//! never appear in `Debug` output or in the description a reload compares.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_lc_rs::digest;

use crate::config::schema::{AdminTokenConfig, RevocationConfig, RevocationRedisConfig};

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("revocation.admin_tokens[{index}] ({name:?}): give exactly one of env or file")]
    TokenSource { index: usize, name: String },
    #[error(
        "revocation.admin_tokens[{index}]: name {name:?} must be 1-64 letters, digits, '-', '_' or '.'"
    )]
    TokenName { index: usize, name: String },
    #[error("revocation.admin_tokens: the name {0:?} is used twice")]
    DuplicateName(String),
    #[error("revocation.admin_tokens[{index}] ({name:?}): environment variable {var} is not set")]
    MissingEnv {
        index: usize,
        name: String,
        var: String,
    },
    #[error("revocation.admin_tokens[{index}] ({name:?}): cannot read {}: {source}", path.display())]
    File {
        index: usize,
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "revocation.admin_tokens[{index}] ({name:?}): the token is {len} bytes; use at least 16"
    )]
    WeakToken {
        index: usize,
        name: String,
        len: usize,
    },
    // `section`: the Redis block's place in the config (`revocation.redis`,
    // `rate_limit.redis`), which share these settings.
    #[error("{section}.url: {url:?} {problem}")]
    RedisUrl {
        section: &'static str,
        url: String,
        problem: &'static str,
    },
    #[error("{0}: give at most one of password_env or password_file")]
    PasswordSource(&'static str),
    #[error("{0}.password_env: environment variable {1} is not set")]
    PasswordEnv(&'static str, String),
    #[error("{section}.password_file: cannot read {}: {source}", path.display())]
    PasswordFile {
        section: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}.key_prefix: {1:?} must be 1-128 printable characters without spaces")]
    KeyPrefix(&'static str, String),
    #[error("{section}.{field}: {value} must be at least {min}")]
    TooShort {
        section: &'static str,
        field: &'static str,
        value: String,
        min: &'static str,
    },
}

/// An admin token: its name and the SHA-256 of its value.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken {
    pub name: String,
    pub digest: [u8; 32],
    /// Where it was read from, for the reload comparison.
    source: String,
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminToken")
            .field("name", &self.name)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// A Redis connection as compiled from a `redis` block, shared by
/// `revocation.redis` and `rate_limit.redis`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConnection {
    /// As configured (it holds no password).
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    password_source: Option<String>,
    pub key_prefix: String,
    pub timeout: Duration,
}

/// What a log line may show of the connection: never the password, only
/// where it comes from.
impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "redis {} user {:?} password from {} prefix {:?} timeout {}",
            self.url,
            self.username,
            self.password_source.as_deref().unwrap_or("(none)"),
            self.key_prefix,
            humantime::format_duration(self.timeout),
        )
    }
}

/// `revocation.redis`: the connection, and how the list keeps in step.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    pub connection: RedisConnection,
    pub reconcile_interval: Duration,
    pub max_staleness: Option<Duration>,
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} reconcile {} max_staleness ",
            self.connection,
            humantime::format_duration(self.reconcile_interval),
        )?;
        match self.max_staleness {
            Some(d) => write!(f, "{}", humantime::format_duration(d)),
            None => f.write_str("(none)"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationSettings {
    pub dir: Option<PathBuf>,
    pub admin_tokens: Vec<AdminToken>,
    pub redis: Option<RedisSettings>,
}

impl RevocationSettings {
    /// The settings in words, without secrets: a reload that changes this
    /// is refused (the list, its files and its Redis connection live as
    /// long as the process).
    pub fn describe(&self) -> String {
        let tokens: Vec<String> = self
            .admin_tokens
            .iter()
            .map(|t| format!("{} from {}", t.name, t.source))
            .collect();
        format!(
            "dir {} tokens [{}] {}",
            self.dir
                .as_ref()
                .map_or_else(|| "(none)".into(), |d| d.display().to_string()),
            tokens.join(", "),
            self.redis
                .as_ref()
                .map_or_else(|| "no redis".into(), |redis| format!("{redis:?}"))
        )
    }
}

/// Compiles `revocation`, resolving relative paths against `base_dir`.
pub fn compile(
    config: Option<RevocationConfig>,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<RevocationSettings>, SettingsError> {
    let Some(config) = config else {
        return Ok(None);
    };
    let mut admin_tokens: Vec<AdminToken> = Vec::new();
    for (index, token) in config.admin_tokens.iter().enumerate() {
        let token = admin_token(index, token, base_dir, env)?;
        if admin_tokens.iter().any(|t| t.name == token.name) {
            return Err(SettingsError::DuplicateName(token.name));
        }
        admin_tokens.push(token);
    }
    let redis = config
        .redis
        .map(|redis| revocation_redis(redis, base_dir, env))
        .transpose()?;
    Ok(Some(RevocationSettings {
        dir: config.dir.map(|dir| base_dir.join(dir)),
        admin_tokens,
        redis,
    }))
}

/// Trailing line endings are dropped, as for HMAC secret files.
fn trim_line_end(text: &str) -> &str {
    text.trim_end_matches(['\r', '\n'])
}

fn admin_token(
    index: usize,
    config: &AdminTokenConfig,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<AdminToken, SettingsError> {
    let name = config.name.clone();
    let valid_name = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !valid_name {
        return Err(SettingsError::TokenName { index, name });
    }
    let (value, source) = match (&config.env, &config.file) {
        (Some(var), None) => {
            let value = env(var).ok_or_else(|| SettingsError::MissingEnv {
                index,
                name: name.clone(),
                var: var.clone(),
            })?;
            (value, format!("env {var}"))
        }
        (None, Some(file)) => {
            let path = base_dir.join(file);
            let text = std::fs::read_to_string(&path).map_err(|source| SettingsError::File {
                index,
                name: name.clone(),
                path: path.clone(),
                source,
            })?;
            (
                trim_line_end(&text).to_string(),
                format!("file {}", path.display()),
            )
        }
        _ => return Err(SettingsError::TokenSource { index, name }),
    };
    if value.len() < 16 {
        return Err(SettingsError::WeakToken {
            index,
            name,
            len: value.len(),
        });
    }
    Ok(AdminToken {
        name,
        digest: sha256(value.as_bytes()),
        source,
    })
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    digest::digest(&digest::SHA256, bytes)
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// The connection part of a `redis` block, as written: what
/// `revocation.redis` and `rate_limit.redis` have in common.
pub struct RedisConnectionConfig {
    pub url: String,
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    pub key_prefix: String,
    pub timeout: Duration,
}

/// `revocation.redis` compiled.
fn revocation_redis(
    config: RevocationRedisConfig,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<RedisSettings, SettingsError> {
    const SECTION: &str = "revocation.redis";
    at_least(
        SECTION,
        "reconcile_interval",
        config.reconcile_interval,
        Duration::from_secs(1),
        "1s",
    )?;
    if let Some(max) = config.max_staleness {
        at_least(SECTION, "max_staleness", max, Duration::from_secs(1), "1s")?;
    }
    let connection = RedisConnectionConfig {
        url: config.url,
        username: config.username,
        password_env: config.password_env,
        password_file: config.password_file,
        key_prefix: config.key_prefix,
        timeout: config.timeout,
    };
    Ok(RedisSettings {
        connection: redis_connection(SECTION, connection, base_dir, env)?,
        reconcile_interval: config.reconcile_interval,
        max_staleness: config.max_staleness,
    })
}

fn at_least(
    section: &'static str,
    field: &'static str,
    value: Duration,
    min: Duration,
    min_text: &'static str,
) -> Result<(), SettingsError> {
    if value < min {
        Err(SettingsError::TooShort {
            section,
            field,
            value: humantime::format_duration(value).to_string(),
            min: min_text,
        })
    } else {
        Ok(())
    }
}

/// A Redis connection compiled; `section` names it in errors.
pub fn redis_connection(
    section: &'static str,
    config: RedisConnectionConfig,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<RedisConnection, SettingsError> {
    let url_error = |problem| SettingsError::RedisUrl {
        section,
        url: config.url.clone(),
        problem,
    };
    let rest = config
        .url
        .strip_prefix("redis://")
        .or_else(|| config.url.strip_prefix("rediss://"))
        .ok_or_else(|| url_error("must start with redis:// or rediss://"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err(url_error(
            "holds credentials: put the user in username and the password in password_env or password_file",
        ));
    }
    if authority.is_empty() {
        return Err(url_error("names no host"));
    }
    redis::parse_redis_url(&config.url)
        .ok_or_else(|| url_error("is not a valid URL"))
        .and_then(|url| {
            redis::IntoConnectionInfo::into_connection_info(url)
                .map(drop)
                .map_err(|_| url_error("is not a Redis URL (host, port, /database number)"))
        })?;
    let (password, password_source) = match (&config.password_env, &config.password_file) {
        (None, None) => (None, None),
        (Some(var), None) => (
            Some(env(var).ok_or_else(|| SettingsError::PasswordEnv(section, var.clone()))?),
            Some(format!("env {var}")),
        ),
        (None, Some(file)) => {
            let path = base_dir.join(file);
            let text =
                std::fs::read_to_string(&path).map_err(|source| SettingsError::PasswordFile {
                    section,
                    path: path.clone(),
                    source,
                })?;
            (
                Some(trim_line_end(&text).to_string()),
                Some(format!("file {}", path.display())),
            )
        }
        (Some(_), Some(_)) => return Err(SettingsError::PasswordSource(section)),
    };
    let prefix = &config.key_prefix;
    if prefix.is_empty() || prefix.len() > 128 || !prefix.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SettingsError::KeyPrefix(section, prefix.clone()));
    }
    at_least(
        section,
        "timeout",
        config.timeout,
        Duration::from_millis(100),
        "100ms",
    )?;
    Ok(RedisConnection {
        url: config.url,
        username: config.username,
        password,
        password_source,
        key_prefix: config.key_prefix,
        timeout: config.timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_yaml(yaml: &str, env: &[(&str, &str)]) -> Result<RevocationSettings, String> {
        let config: RevocationConfig = serde_saphyr::from_str(yaml).map_err(|e| e.to_string())?;
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        compile(Some(config), Path::new("/etc/jwtgate"), &lookup)
            .map(Option::unwrap)
            .map_err(|e| e.to_string())
    }

    const TOKEN: (&str, &str) = ("ADMIN", "0123456789abcdef-long-enough");

    #[test]
    fn tokens_come_from_env_or_file_and_are_kept_as_digests() {
        let settings = compile_yaml(
            "admin_tokens: [{ name: idp-logout, env: ADMIN }]\ndir: state\n",
            &[TOKEN],
        )
        .unwrap();
        assert_eq!(settings.admin_tokens[0].name, "idp-logout");
        assert_eq!(settings.admin_tokens[0].digest, sha256(TOKEN.1.as_bytes()));
        assert_eq!(settings.dir.unwrap(), Path::new("/etc/jwtgate/state"));
        let shown = format!("{:?} {}", settings.admin_tokens, TOKEN.1);
        assert_eq!(shown.matches(TOKEN.1).count(), 1, "never in Debug: {shown}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, format!("{}\n", TOKEN.1)).unwrap();
        let yaml = format!("admin_tokens: [{{ name: ops, file: {} }}]", file.display());
        let settings = compile_yaml(&yaml, &[]).unwrap();
        assert_eq!(settings.admin_tokens[0].digest, sha256(TOKEN.1.as_bytes()));
    }

    #[test]
    fn bad_settings_are_refused_with_the_field_and_value() {
        let cases: &[(&str, &str)] = &[
            (
                "admin_tokens: [{ name: a, env: ADMIN, file: x }]",
                "revocation.admin_tokens[0] (\"a\"): give exactly one of env or file",
            ),
            (
                "admin_tokens: [{ name: a, env: NOPE }]",
                "environment variable NOPE is not set",
            ),
            (
                "admin_tokens: [{ name: 'a b', env: ADMIN }]",
                "name \"a b\" must be",
            ),
            (
                "admin_tokens: [{ name: a, env: ADMIN }, { name: a, env: ADMIN }]",
                "the name \"a\" is used twice",
            ),
            (
                "admin_tokens: [{ name: a, env: SHORT }]",
                "the token is 5 bytes",
            ),
            (
                "redis: { url: 'http://x:6379' }",
                "\"http://x:6379\" must start with redis://",
            ),
            (
                "redis: { url: 'redis://:secret@x:6379' }",
                "holds credentials",
            ),
            (
                "redis: { url: 'redis://x', password_env: NOPE }",
                "password_env: environment variable NOPE is not set",
            ),
            (
                "redis: { url: 'redis://x', reconcile_interval: 10ms }",
                "revocation.redis.reconcile_interval: 10ms must be at least 1s",
            ),
            (
                "redis: { url: 'redis://x', key_prefix: 'a b' }",
                "key_prefix: \"a b\"",
            ),
            ("redis: { url: 'redis://x', nope: 1 }", "unknown field"),
        ];
        for (yaml, expected) in cases {
            let error = compile_yaml(yaml, &[TOKEN, ("SHORT", "short")]).unwrap_err();
            assert!(error.contains(expected), "{yaml}: {error}");
        }
    }

    #[test]
    fn redis_settings_keep_the_password_out_of_descriptions() {
        let settings = compile_yaml(
            "redis: { url: 'rediss://cache:6380/2', password_env: PW, max_staleness: 30s }",
            &[("PW", "hunter2-password")],
        )
        .unwrap();
        let redis = settings.redis.as_ref().unwrap();
        assert_eq!(
            redis.connection.password.as_deref(),
            Some("hunter2-password")
        );
        assert_eq!(redis.reconcile_interval, Duration::from_secs(30));
        let described = format!("{} {:?}", settings.describe(), settings);
        assert!(!described.contains("hunter2"), "{described}");
        assert!(described.contains("env PW"), "{described}");
    }
}
