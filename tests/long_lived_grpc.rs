//! gRPC through the gateway, with real grpcio programs on both sides
//! (tests/grpc_streams, harness in tests/common/grpc.rs): unary,
//! server-streaming and bidi-streaming calls, over h2c (`listen.http.h2c`)
//! and TLS h2 (`listen.https`), to an upstream spoken to over TLS h2.

mod common;

use common::*;
use serde_json::json;

/// A gRPC upstream, and the gateway in front of it with an h2c listener
/// (the proxy port) and a TLS one (`https`).
struct Grpc {
    pki: GrpcPki,
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
        // No leeway, so a token ends when its `exp` says.
        let config = Config::new()
            .issuer_with("main", ISS, &["leeway: 0s"])
            .listen(&listen)
            .routes(ROUTES)
            .replace("{PKI}", &pki.dir().display().to_string());
        let gateway = Gateway::start_before(&config, upstream.addr(), &[], &[], &[]).await;
        wait_for_listener(https, &|| gateway.log());
        Self {
            pki,
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

fn alice() -> String {
    token(ISS, "alice", json!({}))
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
        let summary: Vec<(&str, u64)> =
            ends.iter().map(|e| (e.code.as_str(), e.received)).collect();
        assert_eq!(
            summary,
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
