//! `identity_tokens` and a route's `forward.identity_token`: a token
//! jwtgate signs for the backend, so it can verify who the caller is
//! instead of trusting plain headers.

use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::json::DurationText;
use super::{duration, duration_text};

/// The keys identity tokens are signed with and the issuer they name.
/// Their public keys are served as a JWK Set at
/// `/.well-known/jwks.json` on the admin listener, with a minimal
/// discovery document at `/.well-known/openid-configuration`. Reloadable:
/// rotate by putting the new key first and keeping the old one listed
/// until the tokens it signed have expired.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityTokensConfig {
    /// The `iss` of every identity token (a URL whose
    /// `/.well-known/jwks.json` reaches the admin listener, for backends
    /// that discover keys).
    pub issuer: String,
    /// Private keys: the first signs, every one is published. PKCS#8 PEM
    /// (or SEC1/PKCS#1): EC P-256 signs ES256, Ed25519 EdDSA, RSA RS256.
    pub keys: Vec<IdentityKeyConfig>,
    /// Where the JWK Set and the discovery document are served: on the
    /// admin listener, or also on the proxy's listeners (clear text and
    /// TLS), ahead of every route.
    #[serde(default)]
    pub publish_on: PublishOn,
}

/// The listeners `/.well-known/jwks.json` is served on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PublishOn {
    /// The admin listener only.
    #[default]
    Admin,
    /// The admin listener and the proxy's.
    AdminAndProxy,
}

/// One signing key, from a file (a mounted Kubernetes Secret) or an
/// environment variable holding the PEM.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityKeyConfig {
    /// Its `kid`, unique among the keys.
    pub kid: String,
    /// The PEM file.
    pub file: Option<PathBuf>,
    /// The environment variable holding the PEM.
    pub env: Option<String>,
}

/// `forward.identity_token`: a token signed by jwtgate, sent to the
/// backend in `header` for every request with a verified token (none for
/// anonymous or audited-but-refused requests; a client's copy of the
/// header is always removed).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityTokenConfig {
    /// The request header that carries it.
    #[serde(default = "default_header")]
    pub header: String,
    /// Its `aud`: the backend.
    pub audience: String,
    /// How long it is valid; never past the incoming token's `exp`.
    #[serde(
        default = "default_ttl",
        deserialize_with = "duration",
        serialize_with = "duration_text"
    )]
    #[schemars(with = "DurationText")]
    pub ttl: Duration,
    /// Claims (names or dotted paths) copied from the incoming token,
    /// beside `sub`, `scope`, `client_id` and `original_iss`, which are
    /// always carried when the incoming token has them.
    #[serde(default)]
    pub claims: Vec<String>,
}

fn default_header() -> String {
    "x-jwtgate-identity".into()
}

fn default_ttl() -> Duration {
    Duration::from_secs(60)
}
