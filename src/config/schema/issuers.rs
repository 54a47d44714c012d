//! `issuers`: who may sign tokens, where their keys are, and the rules
//! every token of theirs must pass.

use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

use super::json::DurationText;
use super::{default_true, duration, duration_text, optional_duration};

/// A token issuer. Exactly one key source per issuer: `jwks_file`, `jwks`,
/// `hmac_secret_env`, `hmac_secret_file`, `discovery` or `jwks_uri`; an
/// issuer with `introspection` may have none, and then takes only opaque
/// tokens.
/// Secrets are never written inline, and must be at least 32 bytes. From a
/// JWK Set, keys with `use` other than `sig`, unsupported `kty`/`crv`, RSA
/// moduli under 2048 bits, symmetric (`oct`) keys, and keys whose own `alg`
/// is not allowed are skipped (and listed by `jwtgate check`); a key's
/// `alg`, when present, is the only algorithm it verifies. A token without
/// `kid` is checked against every key usable with its `alg`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The name routes, metrics and logs use.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// The exact `iss` value of its tokens.
    pub issuer: String,
    /// Allow-list of `alg` values; tokens with any other are rejected. HMAC
    /// and public-key algorithms can't be mixed in one issuer. Required
    /// with a key source; an issuer that only introspects has none.
    #[serde(default)]
    pub algorithms: Vec<Algorithm>,
    /// `aud` must contain at least one of these; required unless
    /// `skip_audience_check`.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Explicitly accept any `aud` (RFC 7519 §4.1.3 says a recipient must
    /// check `aud`, so this is off by default).
    #[serde(default)]
    pub skip_audience_check: bool,
    /// Clock skew allowed for `exp`, `nbf`, `iat`.
    #[serde(
        default = "default_leeway",
        deserialize_with = "duration",
        serialize_with = "duration_text"
    )]
    #[schemars(with = "DurationText")]
    pub leeway: Duration,
    /// Reject tokens without `exp`.
    #[serde(default = "default_true")]
    pub require_exp: bool,
    /// Reject tokens living longer than this: `exp - iat`, or `exp - now`
    /// without `iat`; a token without `exp` exceeds any maximum. Absent: no
    /// maximum.
    #[serde(default, deserialize_with = "optional_duration")]
    #[schemars(with = "DurationText")]
    pub max_lifetime: Option<Duration>,
    /// Reject tokens without `sub` (a `sub` that isn't a non-empty string
    /// is always rejected).
    #[serde(default)]
    pub require_sub: bool,
    /// Reject tokens without a `jti` (`missing_claim`; a `jti` that isn't a
    /// non-empty string: `malformed`), so every accepted token can be
    /// revoked by it.
    #[serde(default)]
    pub require_jti: bool,
    /// What marks an access token of this issuer (refresh and ID tokens
    /// signed by the same keys must not pass as one).
    #[serde(default)]
    pub token_type: TokenTypeConfig,
    /// The claim (or dotted path) holding scopes: a space-delimited string
    /// or an array. Absent: `scope`, then `scp`, then `scopes`.
    pub scope_claim: Option<String>,
    // Key sources: exactly one of these.
    /// Key source: a JWK Set file.
    pub jwks_file: Option<PathBuf>,
    /// Key source: an inline JWK Set (`{keys: [...]}`).
    pub jwks: Option<serde_json::Value>,
    /// Key source: the HMAC secret, from this environment variable.
    pub hmac_secret_env: Option<String>,
    /// Key source: the HMAC secret, from this file (trailing line endings
    /// are ignored).
    pub hmac_secret_file: Option<PathBuf>,
    /// Key source: `true` reads `{issuer}/.well-known/openid-configuration`,
    /// checks its `issuer` equals ours exactly, and uses its `jwks_uri`.
    #[serde(default)]
    pub discovery: bool,
    /// Key source: fetch this JWK Set URL directly.
    pub jwks_uri: Option<String>,
    /// How remote keys (`discovery`, `jwks_uri`) are fetched.
    #[serde(default)]
    pub fetch: FetchConfig,
    /// How remote keys are kept fresh.
    #[serde(default)]
    pub refresh: RefreshConfig,
    /// `/readyz` waits for this issuer's keys; `false`: only during
    /// `admin.startup_grace`.
    #[serde(default = "default_true")]
    pub required: bool,
    /// Token Status Lists: `status.status_list` claims checked against the
    /// issuer's lists. Absent: the `status` claim is ignored.
    pub status_list: Option<super::StatusListConfig>,
    /// Opaque access tokens of this issuer, checked at its OAuth 2.0 Token
    /// Introspection endpoint (RFC 7662). JWTs are still verified with its
    /// keys.
    pub introspection: Option<super::IntrospectionConfig>,
}

/// What marks an access token of an issuer.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenTypeConfig {
    /// Accepted `typ` header values, e.g. `[at+jwt]` (RFC 9068);
    /// case-insensitive, `application/` optional. Empty: any.
    #[serde(default)]
    pub typ: Vec<String>,
    /// A claim (name or dotted path) that must hold one of `values`, e.g.
    /// `token_use` / `[access]` (Cognito) or `typ` / `[Bearer]` (Keycloak).
    pub claim: Option<String>,
    /// The values `claim` may hold.
    #[serde(default)]
    pub values: Vec<serde_json::Value>,
}

/// How an issuer's remote keys are fetched.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FetchConfig {
    /// TCP and TLS connect timeout.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    #[schemars(with = "DurationText")]
    pub connect_timeout: Duration,
    /// Timeout of a whole request, body included.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    #[schemars(with = "DurationText")]
    pub timeout: Duration,
    /// Larger discovery or JWKS responses are refused.
    pub max_bytes: usize,
    /// Allow `http://` discovery and JWKS URLs (loopback tests only; HTTPS
    /// otherwise).
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

/// How an issuer's remote keys are kept fresh: within bounds, the JWKS's
/// own `Cache-Control: max-age` says when to fetch it again.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RefreshConfig {
    /// Refresh no more often than this, whatever `Cache-Control` says.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    #[schemars(with = "DurationText")]
    pub min_refresh: Duration,
    /// And at least this often (10 min when the JWKS sends no `max-age`).
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    #[schemars(with = "DurationText")]
    pub max_refresh: Duration,
    /// When refreshes fail, keep serving the last good keys this long.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    #[schemars(with = "DurationText")]
    pub max_stale: Duration,
    /// A token with an unknown `kid` triggers a refetch at most this often.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    #[schemars(with = "DurationText")]
    pub unknown_kid_interval: Duration,
    /// How long such a request waits for that refetch.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    #[schemars(with = "DurationText")]
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

/// The names [`Algorithm`]'s deserializer accepts, exactly.
impl JsonSchema for Algorithm {
    fn schema_name() -> Cow<'static, str> {
        "Algorithm".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A JWS algorithm (RFC 7518, RFC 8037 for EdDSA); case-sensitive.",
            "enum": Algorithm::NAMES,
        })
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
