//! `issuers[].introspection`: opaque access tokens checked by the issuer's
//! OAuth 2.0 Token Introspection endpoint (RFC 7662).

use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::json::DurationText;
use super::{duration, duration_text};

/// How an issuer's opaque tokens are introspected. A token that is not a
/// compact JWS, on a route trusting this issuer, is sent to the issuer's
/// introspection endpoint; an `active` answer's members (`exp`, `aud`,
/// `scope`, `sub`, `client_id`, `cnf`...) are the token's claims, checked
/// and forwarded as a JWT's are. Answers are cached by a hash of the
/// token: a token revoked at the issuer is refused once its cached answer
/// expires, so `active_ttl` is how late a revocation can come.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {
    /// The introspection endpoint. Absent: `introspection_endpoint` of
    /// the issuer's discovery document
    /// (`{issuer}/.well-known/openid-configuration`, whose `issuer` must
    /// equal this issuer's), read on first use.
    pub endpoint: Option<String>,
    /// jwtgate's client id at the issuer (a resource server's client).
    pub client_id: String,
    /// How jwtgate authenticates to the endpoint.
    #[serde(default)]
    pub client_auth: ClientAuthMethod,
    /// The client secret (`client_secret_basic`, `client_secret_post`),
    /// from this environment variable.
    pub client_secret_env: Option<String>,
    /// The client secret, from this file (trailing line endings are
    /// ignored).
    pub client_secret_file: Option<PathBuf>,
    /// `private_key_jwt`: the PKCS#8 PEM private key client assertions are
    /// signed with (RSA: RS256, EC P-256: ES256, P-384: ES384, Ed25519:
    /// EdDSA); the issuer knows its public key.
    pub private_key_file: Option<PathBuf>,
    /// `private_key_jwt`: the `kid` put in each assertion's header.
    pub private_key_kid: Option<String>,
    /// Ask for JWT-secured answers (RFC 9701,
    /// `application/token-introspection+jwt`) and verify them with this
    /// issuer's keys (its key source and `algorithms`); an unsigned answer
    /// is then refused.
    #[serde(default)]
    pub jwt_response: bool,
    /// An active answer is cached until the earlier of its `exp` and this.
    #[serde(
        default = "default_active_ttl",
        deserialize_with = "duration",
        serialize_with = "duration_text"
    )]
    #[schemars(with = "DurationText")]
    pub active_ttl: Duration,
    /// An inactive answer is cached this long, so a replayed bad token
    /// costs one call per period.
    #[serde(
        default = "default_inactive_ttl",
        deserialize_with = "duration",
        serialize_with = "duration_text"
    )]
    #[schemars(with = "DurationText")]
    pub inactive_ttl: Duration,
    /// The most answers cached for this issuer; the least used go first.
    #[serde(default = "default_max_entries")]
    pub max_entries: u64,
    /// The most memory the cached answers take, in bytes (each counts at
    /// least `max_cache_bytes / max_entries`).
    #[serde(default = "default_max_cache_bytes")]
    pub max_cache_bytes: u64,
    /// One introspection call, connection and answer included. A request
    /// waits at most this long; a call that fails is not tried again for
    /// a backoff (250 ms, doubling to 5 s), and uncached tokens get `503`
    /// with `Retry-After` meanwhile.
    #[serde(
        default = "default_timeout",
        deserialize_with = "duration",
        serialize_with = "duration_text"
    )]
    #[schemars(with = "DurationText")]
    pub timeout: Duration,
    /// Larger answers are refused.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
}

/// How jwtgate authenticates to the introspection endpoint (RFC 7591's
/// `token_endpoint_auth_method` names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    /// HTTP Basic with the client id and secret (RFC 6749 §2.3.1).
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// A signed client assertion (RFC 7523), one per call.
    PrivateKeyJwt,
}

fn default_active_ttl() -> Duration {
    Duration::from_secs(60)
}

fn default_inactive_ttl() -> Duration {
    Duration::from_secs(10)
}

fn default_max_entries() -> u64 {
    100_000
}

fn default_max_cache_bytes() -> u64 {
    32 * 1024 * 1024
}

fn default_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_max_bytes() -> usize {
    64 * 1024
}
