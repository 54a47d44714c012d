//! DPoP (RFC 9449): what a route accepts as proofs (`auth.dpop`), and the
//! replay cache shared by every route (`dpop_replay`).

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::json::DurationText;
use super::{Algorithm, SecretConfig, duration, duration_text};

/// A route's DPoP proofs (RFC 9449): the algorithms a proof may be signed
/// with, how far its `iat` may be from now, and server nonces.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DpopConfig {
    /// The algorithms a proof may be signed with: any of `ES256`, `EdDSA`,
    /// `PS256`, `RS256` (`none`, HMAC and others are refused).
    #[schemars(with = "Vec<String>")]
    pub algorithms: Vec<Algorithm>,
    /// How far a proof's `iat` may be from now.
    pub iat_window: IatWindowConfig,
    /// Server nonces (RFC 9449 §8); absent: none asked for.
    pub nonce: Option<DpopNonceConfig>,
}

impl Default for DpopConfig {
    fn default() -> Self {
        Self {
            algorithms: vec![
                Algorithm::ES256,
                Algorithm::EdDSA,
                Algorithm::PS256,
                Algorithm::RS256,
            ],
            iat_window: IatWindowConfig::default(),
            nonce: None,
        }
    }
}

/// `dpop.iat_window`: a proof is accepted from `past` after its `iat`
/// (so its `jti` is remembered that long) and from `future` before it
/// (the clients' clock skew).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct IatWindowConfig {
    /// How long a proof stays usable after its `iat`; at least `1s`.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    #[schemars(with = "DurationText")]
    pub past: Duration,
    /// How far ahead of the gateway's clock a client's may be.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    #[schemars(with = "DurationText")]
    pub future: Duration,
}

impl Default for IatWindowConfig {
    fn default() -> Self {
        Self {
            past: Duration::from_secs(60),
            future: Duration::from_secs(10),
        }
    }
}

/// `dpop.nonce`: a proof must carry a nonce the gateway issued (RFC 9449
/// §8): one without a current one gets `401` with `error="use_dpop_nonce"`
/// and the nonce to use in a `DPoP-Nonce` header.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DpopNonceConfig {
    /// How often a new nonce is issued; the previous one is still
    /// accepted for one more period. At least `1s`.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    #[schemars(with = "DurationText")]
    pub rotate_every: Duration,
    /// The secret nonces are made with (at least 16 bytes), the same on
    /// every replica, so a nonce one replica issued is good on the others.
    /// Absent: a random one per process, which behind a load balancer
    /// without affinity sends clients back for a new nonce whenever they
    /// reach another replica; a reload also starts a new one.
    pub secret: Option<SecretConfig>,
}

impl Default for DpopNonceConfig {
    fn default() -> Self {
        Self {
            rotate_every: Duration::from_secs(5 * 60),
            secret: None,
        }
    }
}

/// `dpop_replay`: the proofs seen within their `iat` window, so each is
/// accepted once. Restart-only.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DpopReplayConfig {
    /// How many proofs this replica remembers: 24 to 48 bytes each. When
    /// full of proofs still within their window, new proofs are refused
    /// (503) rather than an old one forgotten; size it for the proof rate
    /// times `iat_window.past`.
    pub max_entries: usize,
    /// Share the proofs seen with other replicas through the gateway's
    /// Redis (the top-level `redis` block, required); `{}` takes the
    /// defaults.
    pub redis: Option<DpopReplayRedisConfig>,
}

impl Default for DpopReplayConfig {
    fn default() -> Self {
        Self {
            max_entries: 1 << 20,
            redis: None,
        }
    }
}

/// `dpop_replay.redis`: one `SET NX` per proof, after this replica's own
/// check.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DpopReplayRedisConfig {
    /// Prefix of jwtgate's keys; replicas that share proofs use the same
    /// one.
    pub key_prefix: String,
    /// How long a request waits for Redis's answer.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    #[schemars(with = "DurationText")]
    pub budget: Duration,
    /// What a Redis that doesn't answer within `budget` means for a proof.
    pub on_error: OnRedisError,
}

impl Default for DpopReplayRedisConfig {
    fn default() -> Self {
        Self {
            key_prefix: "jwtgate:dpop".into(),
            budget: Duration::from_millis(20),
            on_error: OnRedisError::default(),
        }
    }
}

/// What a shared check does when Redis is slow or away.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisError {
    /// Refuse the proof (503): a replica alone can't tell a proof replayed
    /// on another one, so none passes while Redis is away.
    #[default]
    FailClosed,
    /// Accept what this replica's own table accepts: a proof replayed on
    /// another replica passes while Redis is away.
    LocalOnly,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_what_a_user_writes() {
        let empty: DpopConfig = serde_saphyr::from_str("{}").unwrap();
        assert_eq!(empty.algorithms.len(), 4);
        assert_eq!(empty.iat_window.past, Duration::from_secs(60));
        assert!(empty.nonce.is_none());
        let written: DpopConfig = serde_saphyr::from_str(
            "algorithms: [ES256]\niat_window: { past: 30s, future: 2s }\nnonce: { rotate_every: 1m }\n",
        )
        .unwrap();
        assert_eq!(written.algorithms, [Algorithm::ES256]);
        assert_eq!(written.iat_window.future, Duration::from_secs(2));
        let nonce = written.nonce.unwrap();
        assert!(nonce.secret.is_none());
        assert_eq!(nonce.rotate_every, Duration::from_secs(60));

        let replay: DpopReplayConfig =
            serde_saphyr::from_str("max_entries: 1000\nredis: { on_error: local_only }\n").unwrap();
        assert_eq!(replay.max_entries, 1000);
        let redis = replay.redis.unwrap();
        assert_eq!(redis.on_error, OnRedisError::LocalOnly);
        assert_eq!(redis.budget, Duration::from_millis(20));
        let default: DpopReplayRedisConfig = serde_saphyr::from_str("{}").unwrap();
        assert_eq!(default.on_error, OnRedisError::FailClosed);
        assert!(serde_saphyr::from_str::<DpopConfig>("algoritms: [ES256]\n").is_err());
        assert!(serde_saphyr::from_str::<DpopReplayRedisConfig>("on_error: open\n").is_err());
    }

    #[test]
    fn the_types_have_a_json_schema_with_descriptions() {
        let schema = serde_json::to_value(schemars::schema_for!(DpopReplayConfig)).unwrap();
        let text = schema.to_string();
        assert!(
            text.contains("fail_closed") && text.contains("local_only"),
            "{text}"
        );
        assert!(text.contains("24 to 48 bytes"), "{text}");
        let route = serde_json::to_value(schemars::schema_for!(DpopConfig)).unwrap();
        assert!(route.to_string().contains("use_dpop_nonce"), "{route}");
    }
}
