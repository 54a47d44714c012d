//! `issuers`: who may sign tokens, where their keys are, and the rules
//! every token of theirs must pass.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

use super::{default_true, duration, optional_duration};

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
    pub scope_claim: Option<String>,
    // Key sources: exactly one of these.
    pub jwks_file: Option<PathBuf>,
    pub jwks: Option<serde_json::Value>,
    pub hmac_secret_env: Option<String>,
    pub hmac_secret_file: Option<PathBuf>,
    /// Find the JWKS through `{issuer}/.well-known/openid-configuration`.
    #[serde(default)]
    pub discovery: bool,
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

/// A JWS algorithm jwtgate verifies (RFC 7518 §3, RFC 8037 for EdDSA): what
/// `issuers[].algorithms` lists. What each one needs to verify is
/// [`crate::jose`]'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Algorithm {
    pub const ALL: [Algorithm; 12] = [
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    /// The names in the order of the variants (and of [`Self::ALL`]).
    const NAMES: [&'static str; 12] = [
        "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
        "ES384", "EdDSA",
    ];

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `alg` value is not one jwtgate implements (this includes `none`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedAlgorithm;

impl FromStr for Algorithm {
    type Err = UnsupportedAlgorithm;

    /// Exact, case-sensitive match: JOSE algorithm names are case-sensitive
    /// (RFC 7515 §4.1.1), so `rs256` or `None` are simply not algorithms.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or(UnsupportedAlgorithm)
    }
}

impl<'de> Deserialize<'de> for Algorithm {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(|_| {
            let known: Vec<&str> = Algorithm::ALL.iter().map(|a| a.as_str()).collect();
            serde::de::Error::custom(format!(
                "unsupported algorithm {name:?}; expected one of {}",
                known.join(", ")
            ))
        })
    }
}
