//! gRPC through the gateway, with real grpcio programs on both sides
//! (tests/grpc_streams, harness in tests/common/grpc.rs): unary,
//! server-streaming and bidi-streaming calls, over h2c (`listen.http.h2c`)
//! and TLS h2 (`listen.https`), to an upstream spoken to over TLS h2. A
//! stream ends with its token: UNAUTHENTICATED trailers while data flows,
//! CANCELLED (`RST_STREAM`) when idle, at expiry or on revocation through
//! the admin API; other calls on the same connection go on.

mod common;

use common::*;
use serde_json::json;

/// A gRPC upstream, and the gateway in front of it with an h2c listener
/// (the proxy port) and a TLS one (`https`).
struct Grpc {
    pki: GrpcPki,
    _revocations: tempfile::TempDir,
    upstream: GrpcUpstream,
    gateway: Gateway,
    https: std::net::SocketAddr,
}

const ROUTES: &str = r#"
  - name: streams
    match: { path_prefix: /jwtgate.test.Streams/ }
    upstream: { addrs: ["{UPSTREAM}"], tls: { ca_file: "{PKI}/ca.crt", h2: true } }
"#;

impl Grpc {
    async fn start() -> Self {
        let pki = GrpcPki::new();
        let upstream = GrpcUpstream::start(&pki).await;
        let https = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
        let listen = format!(
            concat!(
                "\n  http: {{ addr: \"127.0.0.1:{{PROXY}}\", h2c: true }}\n",
                "  https:\n    addr: \"{https}\"\n    certificates:\n",
                "      - {{ hosts: [{host}], cert: \"{{PKI}}/gateway.crt\", key: \"{{PKI}}/gateway.key\" }}\n",
            ),
            https = https,
            host = GRPC_HOST,
        );
        let revocations = tempfile::tempdir().expect("revocation dir");
        let revocation = format!(
            "revocation:\n  dir: \"{}\"\n  admin_tokens: [{{ name: test-admin, env: {} }}]\n",
            revocations.path().display(),
            ADMIN_ENV.0
        );
        // No leeway, so a token ends when its `exp` says.
        let config = Config::new()
            .issuer_with("main", ISS, &["leeway: 0s"])
            .listen(&listen)
            .section(&revocation)
            .routes(ROUTES)
            .replace("{PKI}", &pki.dir().display().to_string());
        let gateway = Gateway::start_before(&config, upstream.addr(), &[], &[], &[ADMIN_ENV]).await;
        wait_for_listener(https, &|| gateway.log());
        Self {
            pki,
            _revocations: revocations,
            upstream,
            gateway,
            https,
        }
    }

    /// The gateway's listeners as the client reaches them.
    fn targets(&self) -> [GrpcTarget<'_>; 2] {
        [
            GrpcTarget::H2c(self.gateway.proxy_addr()),
            GrpcTarget::Tls(self.https, &self.pki),
        ]
    }
}

const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
const ADMIN_ENV: (&str, &str) = ("JWTGATE_TEST_ADMIN", ADMIN_TOKEN);

fn alice() -> String {
    token(ISS, "alice", json!({}))
}

/// A token of `sub` with `jti`, expiring `seconds` from now; and its `exp`.
fn expiring(sub: &str, jti: &str, seconds: i64) -> (String, i64) {
    let exp = now() + seconds;
    (token(ISS, sub, json!({ "jti": jti, "exp": exp })), exp)
}

/// Each call's status code and how many messages it got.
fn summary(ends: &[CallEnd]) -> Vec<(&str, u64)> {
    ends.iter().map(|e| (e.code.as_str(), e.received)).collect()
}

/// Counts the upstream's calls of `method` that ended `how`.
fn upstream_ends(upstream: &GrpcUpstream, method: &str, how: &str) -> usize {
    upstream
        .events()
        .iter()
        .filter(|e| e["event"] == "end" && e["method"] == method && e["how"] == how)
        .count()
}

/// Waits until the upstream counts `count` calls of `method` that ended
/// `how`: the upstream hears of a reset after the client does.
async fn expect_upstream_ends(upstream: &GrpcUpstream, method: &str, how: &str, count: usize) {
    poll(
        std::time::Duration::from_secs(10),
        std::time::Duration::from_millis(20),
        || async {
            let seen = upstream_ends(upstream, method, how);
            if seen == count {
                return Ok(());
            }
            Err(format!(
                "{method} {how}: {seen}, expected {count}; {:?}",
                upstream.events()
            ))
        },
    )
    .await;
}

#[tokio::test]
async fn unary_server_streaming_and_bidi_calls_pass_over_h2c_and_tls_h2() {
    let grpc = Grpc::start().await;
    let token = alice();
    for target in grpc.targets() {
        let calls = [
            GrpcCall::unary().token(&token),
            GrpcCall::ticks(5, 100).token(&token),
            GrpcCall::echo(4, 100).token(&token),
            GrpcCall::ticks(5, 100),
        ];
        let ends = GrpcClient::start(&target, &calls).finish().await;
        let name = target.name();
        assert_eq!(
            summary(&ends),
            [("OK", 1), ("OK", 5), ("OK", 4), ("UNAUTHENTICATED", 0)],
            "over {name}: {ends:?}\n{}",
            grpc.gateway.log()
        );
    }
    // Each allowed call reached the upstream with its token; the refused
    // one never did.
    let events = grpc.upstream.events();
    let started = |method: &str| {
        events
            .iter()
            .filter(|e| e["event"] == "start" && e["method"] == method)
            .count()
    };
    assert_eq!(
        (started("Unary"), started("Ticks"), started("Echo")),
        (2, 2, 2),
        "{events:?}"
    );
}

/// Messages a busy stream would carry if nothing ended it: far more than
/// fit before its token expires.
const NATURAL_END: u32 = 50;

#[tokio::test]
async fn busy_streams_end_unauthenticated_when_the_token_expires() {
    let grpc = Grpc::start().await;
    let lasting = alice();
    for (i, target) in grpc.targets().into_iter().enumerate() {
        let (short, exp) = expiring("bob", &format!("busy-{i}"), 2);
        let calls = [
            GrpcCall::ticks(NATURAL_END, 200).token(&short),
            GrpcCall::echo(NATURAL_END, 200).token(&short),
            GrpcCall::unary().token(&short),
            // The same connection, a token that outlives the others.
            GrpcCall::ticks(20, 200).token(&lasting),
        ];
        let ends = GrpcClient::start(&target, &calls).finish().await;
        let name = target.name();
        for end in &ends[..2] {
            assert_eq!(end.code, "UNAUTHENTICATED", "over {name}: {ends:?}");
            assert_eq!(end.details, "token expired", "over {name}: {ends:?}");
            assert!(
                end.received < u64::from(NATURAL_END),
                "over {name}: {end:?}"
            );
            assert!(end.at >= exp as f64, "ended before exp {exp}: {end:?}");
        }
        assert_eq!((ends[2].code.as_str(), ends[2].received), ("OK", 1));
        assert_eq!((ends[3].code.as_str(), ends[3].received), ("OK", 20));
        // The upstream's side of each ended stream was reset too.
        expect_upstream_ends(&grpc.upstream, "Ticks", "cancelled", i + 1).await;
        expect_upstream_ends(&grpc.upstream, "Echo", "cancelled", i + 1).await;
    }
    let labels = [("route", "streams"), ("reason", "expired")];
    grpc.gateway
        .expect_metric("jwtgate_connections_ended_total", &labels, 4.0)
        .await;
    // Ended with trailers, each stream's line says so beside its 200.
    let ended = |line: &&str| {
        line.contains("ended=\"expired\"")
            && line.contains("status=200")
            && line.contains("sub=\"bob\"")
    };
    let log = grpc
        .gateway
        .wait_for_log(|log| log.lines().filter(ended).count() == 4)
        .await;
    assert_eq!(log.lines().filter(ended).count(), 4, "{log}");
}

#[tokio::test]
async fn idle_streams_are_reset_cancelled_when_the_token_expires() {
    let grpc = Grpc::start().await;
    for (i, target) in grpc.targets().into_iter().enumerate() {
        let (short, exp) = expiring("carol", &format!("idle-{i}"), 2);
        let calls = [
            // The first tick would come long after the token ends.
            GrpcCall::ticks(2, 30_000).token(&short),
            GrpcCall::echo(1, 0).idle().token(&short),
        ];
        let ends = GrpcClient::start(&target, &calls).finish().await;
        let name = target.name();
        assert_eq!(
            summary(&ends),
            [("CANCELLED", 0), ("CANCELLED", 1)],
            "over {name}: {ends:?}"
        );
        for end in &ends {
            assert!(end.at >= exp as f64, "ended before exp {exp}: {end:?}");
        }
    }
    // The upstream's side of each dropped stream was reset too.
    expect_upstream_ends(&grpc.upstream, "Ticks", "cancelled", 2).await;
    expect_upstream_ends(&grpc.upstream, "Echo", "cancelled", 2).await;
    let labels = [("route", "streams"), ("reason", "expired")];
    grpc.gateway
        .expect_metric("jwtgate_connections_ended_total", &labels, 4.0)
        .await;
    // Dropped, each stream left the table of open ones.
    grpc.gateway
        .expect_metric(
            "jwtgate_long_lived_connections",
            &[("route", "streams")],
            0.0,
        )
        .await;
    // Pingora never logs a dropped stream: jwtgate writes its line.
    let line = grpc.gateway.log_line("ended=\"expired\"").await;
    for field in ["route=\"streams\"", "sub=\"carol\""] {
        assert!(line.contains(field), "{field} not in {line}");
    }
}

#[tokio::test]
async fn a_revoked_token_ends_its_streams_within_a_second() {
    let grpc = Grpc::start().await;
    let (revoked, _) = expiring("dave", "grpc-revoked", 300);
    let (kept, _) = expiring("erin", "grpc-kept", 300);
    let target = GrpcTarget::H2c(grpc.gateway.proxy_addr());
    let calls = [
        GrpcCall::ticks(NATURAL_END, 200).token(&revoked),
        GrpcCall::echo(1, 0).idle().token(&revoked),
        GrpcCall::ticks(15, 200).token(&kept),
    ];
    let client = GrpcClient::start(&target, &calls);
    client.received(0, 2).await;
    client.received(1, 1).await;
    client.received(2, 1).await;
    let open = [("route", "streams"), ("kind", "stream")];
    grpc.gateway
        .expect_metric("jwtgate_long_lived_connections", &open, 3.0)
        .await;
    let sent = unix_now();
    let response = grpc
        .gateway
        .client()
        .post(grpc.gateway.admin_url("/revocations"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "jti": "grpc-revoked", "issuer": "main", "exp": now() + 300 }))
        .send()
        .await
        .expect("revoke");
    assert_eq!(response.status(), 201);
    let ends = client.finish().await;
    assert_eq!(ends[0].code, "UNAUTHENTICATED", "{ends:?}");
    assert_eq!(ends[0].details, "token revoked", "{ends:?}");
    assert_eq!(ends[1].code, "CANCELLED", "{ends:?}");
    for end in &ends[..2] {
        assert!(
            end.at - sent < 1.0,
            "ended {}s after the revocation",
            end.at - sent
        );
    }
    assert_eq!((ends[2].code.as_str(), ends[2].received), ("OK", 15));
    let labels = [("route", "streams"), ("reason", "revoked")];
    grpc.gateway
        .expect_metric("jwtgate_connections_ended_total", &labels, 2.0)
        .await;
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}
