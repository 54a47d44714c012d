//! The DPoP replay cache shared through a real `redis-server` (started
//! here on a free loopback port, paused and stopped to play a slow and a
//! lost Redis): a proof is accepted once across replicas, and what each
//! `on_error` policy does while Redis can't answer.

mod common;
#[path = "common/redis.rs"]
mod redis_server;

use std::time::Duration;

use common::poll;
use jwtgate::auth::dpop::{DpopFailure, IatWindow, VerifiedProof};
use jwtgate::jose::Algorithm;
use jwtgate::state::dpop_replay::{DpopReplay, OnRedisError, SharedReplay};
use jwtgate::state::redis::{Redis, RedisSettings};
use redis_server::Redis as RedisServer;

const NOW: i64 = 1_700_000_000;
const UNTIL: i64 = NOW + 60;
const JKT: &str = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";

async fn replica(server: &RedisServer, on_error: OnRedisError) -> DpopReplay {
    let replay = unconnected(server, on_error);
    assert!(replay.connect().await, "connects to {}", server.url());
    replay
}

fn unconnected(server: &RedisServer, on_error: OnRedisError) -> DpopReplay {
    let redis = Redis::new(RedisSettings {
        url: server.url(),
        username: None,
        password: None,
        password_source: None,
        tls: None,
        timeout: Duration::from_secs(2),
    })
    .unwrap();
    DpopReplay::shared(
        1000,
        redis,
        SharedReplay {
            key_prefix: "jwtgate:dpop".into(),
            // Generous, so a loaded test machine never turns an answer
            // into a timeout; the paused server never answers in time.
            budget: Duration::from_millis(500),
            on_error,
        },
    )
}

#[tokio::test]
async fn a_proof_is_accepted_once_across_replicas() {
    let server = RedisServer::start().await;
    let a = replica(&server, OnRedisError::FailClosed).await;
    let b = replica(&server, OnRedisError::FailClosed).await;

    assert_eq!(a.check(JKT, "jti-1", UNTIL, NOW).await, Ok(()));
    assert_eq!(
        a.check(JKT, "jti-1", UNTIL, NOW + 1).await,
        Err(DpopFailure::Replayed)
    );
    assert_eq!(
        b.check(JKT, "jti-1", UNTIL, NOW + 1).await,
        Err(DpopFailure::Replayed),
        "the other replica saw it through Redis"
    );
    assert_eq!(b.check(JKT, "jti-2", UNTIL, NOW).await, Ok(()));
    assert_eq!(
        a.check(JKT, "jti-2", UNTIL, NOW).await,
        Err(DpopFailure::Replayed)
    );
    assert_eq!(b.check("another-key", "jti-1", UNTIL, NOW).await, Ok(()));
    let proof = VerifiedProof {
        jkt: JKT.into(),
        jti: "jti-1".into(),
        iat: NOW,
        algorithm: Algorithm::ES256,
    };
    let window = IatWindow {
        past_secs: 60,
        future_secs: 5,
    };
    assert_eq!(
        b.check_proof(&proof, window, NOW + 1).await,
        Err(DpopFailure::Replayed)
    );

    // Redis holds digests that expire with the window, never a jti.
    let keys = server.cli(&["KEYS", "jwtgate:dpop:*"]);
    let keys: Vec<&str> = keys.lines().collect();
    assert_eq!(keys.len(), 3, "{keys:?}");
    for key in &keys {
        assert!(!key.contains("jti"), "{key}");
        assert_eq!(key.len(), "jwtgate:dpop:".len() + 32, "{key}");
        let ttl: i64 = server.cli(&["PTTL", key]).trim().parse().unwrap();
        assert!((1..=61_000).contains(&ttl), "{key}: {ttl} ms");
    }
}

#[tokio::test]
async fn a_slow_redis_fails_closed_by_default_and_open_when_told() {
    let server = RedisServer::start().await;
    let closed = replica(&server, OnRedisError::FailClosed).await;
    let local = replica(&server, OnRedisError::LocalOnly).await;
    // Writes wait on the server for 3 s, far beyond either budget.
    assert_eq!(
        server.cli(&["CLIENT", "PAUSE", "3000", "WRITE"]).trim(),
        "OK"
    );
    assert_eq!(
        closed.check(JKT, "slow-1", UNTIL, NOW).await,
        Err(DpopFailure::ReplayUnavailable)
    );
    assert_eq!(local.check(JKT, "slow-2", UNTIL, NOW).await, Ok(()));
    // The local table still refuses a replay on the same replica.
    assert_eq!(
        local.check(JKT, "slow-2", UNTIL, NOW).await,
        Err(DpopFailure::Replayed)
    );
    server.cli(&["CLIENT", "UNPAUSE"]);
    assert_eq!(closed.check(JKT, "fast-1", UNTIL, NOW).await, Ok(()));
}

#[tokio::test]
async fn a_lost_redis_follows_the_policy_until_it_is_back() {
    let mut server = RedisServer::start().await;
    let closed = replica(&server, OnRedisError::FailClosed).await;
    let local = replica(&server, OnRedisError::LocalOnly).await;
    assert_eq!(closed.check(JKT, "before", UNTIL, NOW).await, Ok(()));
    server.stop();

    for i in 0..3 {
        let jti = format!("down-{i}");
        assert_eq!(
            closed.check(JKT, &jti, UNTIL, NOW).await,
            Err(DpopFailure::ReplayUnavailable),
            "{jti}"
        );
        assert_eq!(local.check(JKT, &jti, UNTIL, NOW).await, Ok(()), "{jti}");
        assert_eq!(
            local.check(JKT, &jti, UNTIL, NOW).await,
            Err(DpopFailure::Replayed),
            "{jti}"
        );
    }

    // Back (empty: no persistence): both reconnect in the background and
    // share proofs again.
    server.run().await;
    shared_again(&closed, &local).await;
}

#[tokio::test]
async fn a_redis_down_at_start_is_connected_to_once_it_is_up() {
    let mut server = RedisServer::start().await;
    server.stop();
    let closed = unconnected(&server, OnRedisError::FailClosed);
    let local = unconnected(&server, OnRedisError::LocalOnly);
    assert!(!closed.connect().await);
    assert!(!local.connect().await);
    assert_eq!(
        closed.check(JKT, "early", UNTIL, NOW).await,
        Err(DpopFailure::ReplayUnavailable)
    );
    assert_eq!(local.check(JKT, "early", UNTIL, NOW).await, Ok(()));
    server.run().await;
    shared_again(&closed, &local).await;
}

/// Waits until a proof `closed` accepts is refused by `local` through Redis.
async fn shared_again(closed: &DpopReplay, local: &DpopReplay) {
    let mut attempt = 0;
    poll(Duration::from_secs(20), Duration::from_millis(100), || {
        attempt += 1;
        let jti = format!("after-{attempt}");
        async move {
            closed
                .check(JKT, &jti, UNTIL, NOW)
                .await
                .map_err(|e| e.to_string())?;
            match local.check(JKT, &jti, UNTIL, NOW).await {
                Err(DpopFailure::Replayed) => Ok(()),
                other => Err(format!("the other replica answered {other:?}")),
            }
        }
    })
    .await;
}
