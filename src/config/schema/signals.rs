//! `shared_signals`: the OpenID Shared Signals Framework (SSF 1.0)
//! transmitters whose events (CAEP session and credential changes, RISC
//! account events) become entries of the revocation list.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::json::DurationText;
use super::{SecretConfig, duration, duration_text};

/// Security Event Tokens received from SSF transmitters, applied to the
/// revocation list (the `revocation` block is required). Restart-only.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SharedSignalsConfig {
    /// The transmitters (identity providers) events are taken from.
    pub transmitters: Vec<TransmitterConfig>,
}

/// One SSF transmitter and the stream jwtgate receives from it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransmitterConfig {
    /// The transmitter's name in metrics, logs and the push path
    /// (`/ssf/events/{name}` on the admin listener): letters, digits,
    /// `-_.`.
    pub name: String,
    /// The transmitter's issuer: its `/.well-known/ssf-configuration` is
    /// read from here, must name this issuer, and every SET's `iss` must
    /// equal it.
    pub issuer: String,
    /// The audience jwtgate's stream was created with: every SET's `aud`
    /// must contain it.
    pub audience: String,
    /// How events arrive: `push` (RFC 8935, the transmitter POSTs to
    /// jwtgate) or `poll` (RFC 8936, jwtgate asks the transmitter).
    pub delivery: Delivery,
    /// Push delivery's settings; required with `delivery: push`.
    pub push: Option<PushConfig>,
    /// Poll delivery's settings; required with `delivery: poll`.
    pub poll: Option<PollConfig>,
    /// Plain HTTP to the transmitter (configuration, JWKS, poll
    /// endpoint): loopback tests only.
    #[serde(default)]
    pub allow_http: bool,
}

/// How a transmitter's events arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    Push,
    Poll,
}

/// `push`: what a pushing transmitter must present.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// The bearer token the transmitter sends in `Authorization`: `{ env:
    /// NAME }` or `{ file: PATH }`, at least 16 bytes; kept as a digest.
    pub bearer_secret: SecretConfig,
}

/// `poll`: where and how often events are asked for.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PollConfig {
    /// The stream's poll URL. Absent: the `delivery.endpoint_url` of the
    /// poll stream the transmitter's `configuration_endpoint` returns.
    pub endpoint: Option<String>,
    /// The bearer token sent to the transmitter: `{ env: NAME }` or `{
    /// file: PATH }`.
    pub auth: SecretConfig,
    /// `maxEvents` of each request: at most this many SETs per answer;
    /// 1 to 1000.
    #[serde(default = "default_max_events")]
    pub max_events: u32,
    /// The wait between two requests that brought nothing; at least
    /// `100ms`. Errors back off from here, doubling up to 5 minutes.
    #[serde(
        default = "default_poll_interval",
        deserialize_with = "duration",
        serialize_with = "duration_text"
    )]
    #[schemars(with = "DurationText")]
    pub interval: Duration,
}

fn default_max_events() -> u32 {
    100
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(5)
}
