//! `issuers[].status_list`: checking tokens against the issuer's Token
//! Status Lists (draft-ietf-oauth-status-list).

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::json::DurationText;
use super::{duration, duration_text};

/// How an issuer's tokens carrying `status.status_list` are checked: the
/// Status List Token at its `uri` is fetched in the background (only from
/// `allowed_uris`), verified with this issuer's keys, and the token's
/// entry looked up in it. Tokens without a `status` claim are unaffected.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct StatusListConfig {
    /// `required`: a token whose list is not available (never fetched, or
    /// older than `max_age`) is refused with 503; `optional`: it is
    /// accepted and counted; `off`: the `status` claim is ignored.
    pub mode: StatusListMode,
    /// URI prefixes lists may be fetched from, e.g.
    /// `https://idp.example/statuslists/`. A token naming any other URI is
    /// refused (`status_list_not_allowed`) and nothing is fetched.
    pub allowed_uris: Vec<String>,
    /// Lists fetched at startup, before any token names them; each must
    /// match `allowed_uris`.
    pub prefetch: Vec<String>,
    /// The most lists kept for this issuer; a token naming a further one
    /// is treated as if its list were unavailable.
    pub max_lists: usize,
    /// A list not refreshed for this long is no longer used
    /// (stale-if-error up to here).
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    #[schemars(with = "DurationText")]
    pub max_age: Duration,
    /// Refresh no more often than this, whatever the list's `ttl` or
    /// `Cache-Control: max-age` say.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    #[schemars(with = "DurationText")]
    pub min_refresh: Duration,
    /// And at least this often.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    #[schemars(with = "DurationText")]
    pub max_refresh: Duration,
    /// Larger Status List Token responses are refused.
    pub max_bytes: usize,
    /// A list whose status bytes inflate to more than this is refused (a
    /// compression bomb).
    pub max_decompressed_bytes: usize,
    /// Allow `http://` list URIs (loopback tests only; HTTPS otherwise).
    pub allow_http: bool,
}

impl Default for StatusListConfig {
    fn default() -> Self {
        Self {
            mode: StatusListMode::Required,
            allowed_uris: Vec::new(),
            prefetch: Vec::new(),
            max_lists: 16,
            max_age: Duration::from_secs(24 * 60 * 60),
            min_refresh: Duration::from_secs(60),
            max_refresh: Duration::from_secs(60 * 60),
            max_bytes: 1024 * 1024,
            max_decompressed_bytes: 16 * 1024 * 1024,
            allow_http: false,
        }
    }
}

/// What becomes of a token whose status list is not available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatusListMode {
    /// Refused with 503 until the list is fetched.
    #[default]
    Required,
    /// Accepted, and counted on `jwtgate_status_list_unchecked_total`.
    Optional,
    /// The `status` claim is not looked at.
    Off,
}
