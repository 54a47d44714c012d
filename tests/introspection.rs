//! Opaque access tokens checked by the issuer's introspection endpoint
//! (RFC 7662) end to end: the real IdP (`tests/idp`, oidc-provider) issues
//! and introspects them, jwtgate in front of a recording upstream calls it
//! with each client authentication (client_secret_basic, client_secret_post,
//! private_key_jwt with every key type) and, asked to, verifies JWT answers
//! (RFC 9701). An active answer's members are the token's claims: forwarded
//! as identity headers, held to the route's scopes, revocable through
//! jwtgate's own `/revocations`, bound to a DPoP key by `cnf.jkt`. Answers
//! are cached (one call per token, even for a thousand concurrent requests),
//! inactive ones too; an IdP that fails jwtgate is a 503, never a 401, while
//! cached answers keep serving.
//!
//! Needs Node.js, `npm ci --prefix tests/idp` and openssl; without them
//! every test here fails with a message saying so.

mod common;
#[path = "common/idp.rs"]
mod idp;

use std::time::Duration;

use common::{Config, Gateway, Upstream, metric_value, poll};
use idp::{
    ClientKey, DPOP_CLIENT, DpopKey, INTROSPECTOR, INTROSPECTOR_JWT, Idp, IdpConfig, KeyKind,
    OPAQUE_RESOURCE, Proof, TokenRequest, access_token, client_secret,
};
use serde_json::json;

const SCOPE: &str = "orders:read";
/// The variable jwtgate reads its introspection client secret from.
const SECRET_ENV: &str = "INTROSPECTION_SECRET";
const ADMIN_TOKEN: &str = "introspection-admin-token-0123456789";
const ADMIN_ENV: &str = "JWTGATE_TEST_ADMIN";
const INTROSPECTIONS: &str = "jwtgate_introspection_requests_total";
const DURATIONS: &str = "jwtgate_introspection_duration_seconds_count";

/// How jwtgate authenticates to the introspection endpoint.
#[derive(Clone)]
enum Client {
    Basic,
    Post,
    PrivateKey(ClientKey),
}

/// The introspecting issuer `opaque` for the test IdP, and what the
/// gateway is started with beside it.
#[derive(Clone)]
struct Opaque {
    client: Client,
    /// The secret put in [`SECRET_ENV`] (secret methods).
    secret: String,
    /// Name the endpoint; else the discovery document's is used.
    endpoint: bool,
    jwt_response: bool,
    /// The issuer's key source, `key: value` lines (none by default).
    keys: Vec<String>,
    active_ttl: &'static str,
    inactive_ttl: &'static str,
    /// Top-level sections (e.g. `revocation`), as YAML.
    sections: String,
}

impl Opaque {
    fn new() -> Self {
        Self {
            client: Client::Basic,
            secret: client_secret(INTROSPECTOR),
            endpoint: true,
            jwt_response: false,
            keys: Vec::new(),
            active_ttl: "60s",
            inactive_ttl: "60s",
            sections: String::new(),
        }
    }

    fn client(mut self, client: Client) -> Self {
        self.client = client;
        self
    }

    /// The issuer's JWTs verified with the keys its discovery document
    /// names: what `jwt_response` verifies answers with.
    fn discovered_keys(mut self) -> Self {
        self.keys = vec![
            "discovery: true".into(),
            "algorithms: [RS256, ES256, PS256]".into(),
        ];
        self
    }

    /// The `opaque` issuer entry (a YAML list item).
    fn issuer(&self, idp: &Idp) -> String {
        let mut yaml = format!(
            "  - name: opaque\n    issuer: \"{}\"\n    audiences: [\"{OPAQUE_RESOURCE}\"]\n    fetch: {{ allow_http: true }}\n",
            idp.issuer()
        );
        for line in &self.keys {
            yaml.push_str(&format!("    {line}\n"));
        }
        yaml.push_str("    introspection:\n");
        let mut settings = vec![
            format!("active_ttl: {}", self.active_ttl),
            format!("inactive_ttl: {}", self.inactive_ttl),
            format!("jwt_response: {}", self.jwt_response),
        ];
        if self.endpoint {
            settings.push(format!("endpoint: \"{}\"", idp.introspection_url()));
        }
        settings.extend(match &self.client {
            Client::Basic | Client::Post => {
                let method = match self.client {
                    Client::Basic => "client_secret_basic",
                    _ => "client_secret_post",
                };
                vec![
                    format!("client_id: {INTROSPECTOR}"),
                    format!("client_auth: {method}"),
                    format!("client_secret_env: {SECRET_ENV}"),
                ]
            }
            Client::PrivateKey(key) => {
                let mut lines = vec![
                    format!("client_id: {INTROSPECTOR_JWT}"),
                    "client_auth: private_key_jwt".into(),
                    format!("private_key_file: \"{}\"", key.private_pem.display()),
                ];
                lines.extend(
                    key.kid
                        .iter()
                        .map(|kid| format!("private_key_kid: \"{kid}\"")),
                );
                lines
            }
        });
        for line in settings {
            yaml.push_str(&format!("      {line}\n"));
        }
        yaml
    }

    /// The gateway config: `opaque`, then `more` issuers, and `routes`.
    fn config(&self, idp: &Idp, more: &str, routes: &str) -> String {
        let mut config = Config::new().default_server();
        if !self.sections.is_empty() {
            config = config.section(&self.sections);
        }
        config = config.issuers(&self.issuer(idp));
        if !more.is_empty() {
            config = config.issuers(more);
        }
        config.routes(routes)
    }

    /// A gateway in front of `upstream` running [`Opaque::config`], ready
    /// (`/readyz`).
    async fn gateway(&self, idp: &Idp, upstream: &Upstream, more: &str, routes: &str) -> Gateway {
        let env = [(SECRET_ENV, self.secret.as_str()), (ADMIN_ENV, ADMIN_TOKEN)];
        let config = self.config(idp, more, routes);
        let gateway = Gateway::start_with_env(&config, upstream, &[], &env).await;
        if self.keys.is_empty() && more.is_empty() {
            // An issuer that only introspects has no keys to wait for.
            let ready = gateway.admin_get("/readyz").await;
            assert_eq!(ready.status(), 200, "{:?}", ready.text().await);
        } else {
            gateway.wait_ready().await;
        }
        gateway
    }

    /// The IdP (with `introspector-jwt` when this uses a private key), an
    /// upstream and a gateway with [`API`].
    async fn start(&self) -> (Idp, Upstream, Gateway) {
        self.start_with(IdpConfig::default()).await
    }

    async fn start_with(&self, mut idp_config: IdpConfig) -> (Idp, Upstream, Gateway) {
        if let Client::PrivateKey(key) = &self.client {
            idp_config.introspector_key = Some(key.clone());
        }
        let idp = Idp::start_with(idp_config).await;
        let upstream = Upstream::start();
        let gateway = self.gateway(&idp, &upstream, "", API).await;
        (idp, upstream, gateway)
    }
}

/// `/api` takes the opaque issuer's tokens with `orders:read` and forwards
/// who they are; `/audit` is the same in audit mode.
const API: &str = r#"
  - name: api
    match: { path_prefix: /api }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { issuers: [opaque], scopes: { all_of: [orders:read] } }
    forward: { claims: { sub: X-User-Id, client_id: X-Client-Id, scope: X-Scope } }
  - name: audit
    match: { path_prefix: /audit }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { mode: audit, issuers: [opaque], scopes: { all_of: [orders:read] } }
    forward: { claims: { sub: X-User-Id } }
"#;

/// Identity headers a client sends hoping they reach the upstream.
const FORGED: [(&str, &str); 3] = [
    ("x-user-id", "mallory"),
    ("x-client-id", "mallory-app"),
    ("x-scope", "orders:admin"),
];

/// `GET path` with `token` and the forged identity headers.
async fn get(gateway: &Gateway, path: &str, token: &str) -> reqwest::Response {
    gateway.get_with(path, Some(token), &FORGED).await
}

async fn status(gateway: &Gateway, token: &str) -> u16 {
    get(gateway, "/api/orders", token).await.status().as_u16()
}

/// The `WWW-Authenticate` challenge of `response` (empty without one).
fn challenge(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("a text challenge").to_string())
        .unwrap_or_default()
}

/// Neither `tokens`, the introspection secret nor a private key is in the
/// gateway's log.
fn assert_not_logged(gateway: &Gateway, tokens: &[&str]) {
    let log = gateway.log();
    assert!(!log.is_empty(), "the gateway logged nothing at all");
    for token in tokens {
        assert!(!log.contains(token), "a token reached the log:\n{log}");
    }
    let secret = client_secret(INTROSPECTOR);
    assert!(!log.contains(&secret), "the client secret reached the log");
    assert!(
        !log.contains("PRIVATE KEY"),
        "a private key reached the log"
    );
}

/// `token` gets a 503 with a `Retry-After` of at least a second.
async fn assert_unavailable(gateway: &Gateway, token: &str, what: &str) {
    let response = get(gateway, "/api/orders", token).await;
    assert_eq!(response.status(), 503, "{what}: {}", gateway.log());
    let retry_after = response
        .headers()
        .get("retry-after")
        .unwrap_or_else(|| panic!("{what}: no Retry-After"));
    let seconds: u64 = retry_after.to_str().unwrap().parse().expect("seconds");
    assert!(seconds >= 1, "{what}: Retry-After {seconds}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opaque_token_passes_with_its_identity_and_is_introspected_once() {
    let (idp, upstream, gateway) = Opaque::new().start().await;
    let token = idp.opaque_token(SCOPE).await;
    assert!(!token.contains('.'), "opaque: {token}");

    for round in 0..2 {
        let response = get(&gateway, "/api/orders", &token).await;
        assert_eq!(response.status(), 200, "round {round}: {}", gateway.log());
        let seen = upstream.last();
        assert_eq!(seen.header_all("x-user-id"), [idp::CLIENT_ID], "{seen:?}");
        assert_eq!(seen.header_all("x-client-id"), [idp::CLIENT_ID]);
        assert_eq!(seen.header_all("x-scope"), [SCOPE]);
    }
    assert_eq!(upstream.count(), 2);
    // The second request was answered from the cache.
    assert_eq!(idp.introspections().await, 1);
    gateway
        .expect_metric(
            INTROSPECTIONS,
            &[("issuer", "opaque"), ("result", "active")],
            1.0,
        )
        .await;
    assert_not_logged(&gateway, &[&token]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_route_takes_the_idps_jwts_and_its_opaque_tokens() {
    let idp = Idp::start().await;
    let upstream = Upstream::start();
    let jwt_issuer = idp::issuer_yaml(&idp.issuer(), "{ allow_http: true }", idp::RESOURCE, &[]);
    let routes = r#"
  - name: both
    match: { path_prefix: /api }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { issuers: [idp, opaque], scopes: { all_of: [orders:read] } }
    forward: { claims: { sub: X-User-Id, aud: X-Audience } }
"#;
    let gateway = Opaque::new()
        .gateway(&idp, &upstream, &jwt_issuer, routes)
        .await;

    let jwt = idp.token(SCOPE).await;
    assert_eq!(status(&gateway, &jwt).await, 200, "{}", gateway.log());
    assert_eq!(upstream.last().header("x-audience"), Some(idp::RESOURCE));
    assert_eq!(idp.introspections().await, 0, "a JWT is verified locally");

    let opaque = idp.opaque_token(SCOPE).await;
    assert_eq!(status(&gateway, &opaque).await, 200, "{}", gateway.log());
    let seen = upstream.last();
    assert_eq!(seen.header("x-audience"), Some(OPAQUE_RESOURCE));
    assert_eq!(seen.header("x-user-id"), Some(idp::CLIENT_ID));
    assert_eq!(idp.introspections().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_authentication_is_accepted_by_the_idp() {
    let mut clients = vec![
        ("client_secret_basic", Client::Basic),
        ("client_secret_post", Client::Post),
    ];
    for kind in KeyKind::ALL {
        // One key with a kid: the IdP then only takes assertions naming it.
        let kid = (kind == KeyKind::Rsa).then_some("gateway-key-1");
        clients.push((
            "private_key_jwt",
            Client::PrivateKey(ClientKey::generate(kind, kid)),
        ));
    }
    for (method, client) in clients {
        let (idp, _upstream, gateway) = Opaque::new().client(client.clone()).start().await;
        let token = idp.opaque_token(SCOPE).await;
        assert_eq!(
            status(&gateway, &token).await,
            200,
            "{method}: {}\nIdP:\n{}",
            gateway.log(),
            idp.stderr()
        );
        assert_eq!(idp.introspections().await, 1, "{method}");
        assert_eq!(idp.introspections_by(method).await, 1, "{method} was used");
        assert!(
            !idp.stderr().contains("introspection.error"),
            "{method}: {}",
            idp.stderr()
        );
    }
}

/// The IdP refusing jwtgate's own client is not the client's fault: a 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idp_refusing_the_gateways_client_is_a_503_not_a_401() {
    let wrong_secret = Opaque {
        secret: "not-the-secret".into(),
        ..Opaque::new().client(Client::Post)
    };
    // The IdP knows another key than the one jwtgate signs with.
    let registered = ClientKey::generate(KeyKind::P256, None);
    let unknown_key =
        Opaque::new().client(Client::PrivateKey(ClientKey::generate(KeyKind::P256, None)));
    let cases = [
        ("wrong secret", wrong_secret, None),
        ("unknown key", unknown_key, Some(registered)),
    ];
    for (what, opaque, idp_key) in cases {
        let idp = Idp::start_with(IdpConfig {
            introspector_key: idp_key,
            ..IdpConfig::default()
        })
        .await;
        let upstream = Upstream::start();
        let gateway = opaque.gateway(&idp, &upstream, "", API).await;
        let token = idp.opaque_token(SCOPE).await;
        assert_unavailable(&gateway, &token, what).await;
        assert!(
            idp.stderr().contains("invalid_client"),
            "{what}: the IdP refused the client:\n{}",
            idp.stderr()
        );
        assert_eq!(upstream.count(), 0, "{what}");
        gateway
            .expect_refusals("503", "introspection_unavailable", 1.0)
            .await;
        gateway
            .expect_metric(
                INTROSPECTIONS,
                &[("issuer", "opaque"), ("result", "http_status")],
                1.0,
            )
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_answers_are_verified_with_the_issuers_keys() {
    let signed = Opaque {
        jwt_response: true,
        ..Opaque::new().discovered_keys()
    };
    let (idp, upstream, gateway) = signed.start().await;
    let token = idp.opaque_token(SCOPE).await;
    assert_eq!(status(&gateway, &token).await, 200, "{}", gateway.log());
    assert_eq!(upstream.last().header("x-scope"), Some(SCOPE));
    assert_eq!(idp.introspections().await, 1);

    // The same answers, signed by the IdP, against keys that are not its own.
    let untrusted = Opaque {
        jwt_response: true,
        keys: vec![
            "algorithms: [RS256]".into(),
            "jwks_file: \"{FIXTURES}/jwks.json\"".into(),
        ],
        ..Opaque::new()
    };
    let upstream = Upstream::start();
    let gateway = untrusted.gateway(&idp, &upstream, "", API).await;
    assert_unavailable(&gateway, &token, "a signature by an unknown key").await;
    gateway
        .expect_metric(
            INTROSPECTIONS,
            &[("issuer", "opaque"), ("result", "invalid_response")],
            1.0,
        )
        .await;
    assert_eq!(upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_is_found_through_discovery() {
    let discovered = Opaque {
        endpoint: false,
        ..Opaque::new()
    };
    let (idp, _upstream, gateway) = discovered.start().await;
    let token = idp.opaque_token(SCOPE).await;
    assert_eq!(status(&gateway, &token).await, 200, "{}", gateway.log());
    assert_eq!(idp.introspections().await, 1);
    let (discovery, _, _) = idp.stats().await;
    assert!(discovery >= 1, "the discovery document was read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_with_one_new_token_make_one_call() {
    // Each call waits at the IdP, so the requests arrive while it is open.
    let idp_config = IdpConfig {
        env: vec![("IDP_INTROSPECTION_DELAY_MS".into(), "500".into())],
        ..IdpConfig::default()
    };
    let (idp, upstream, gateway) = Opaque::new().start_with(idp_config).await;
    let token = idp.opaque_token(SCOPE).await;

    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let request = gateway
            .client()
            .get(gateway.url("/api/orders"))
            .bearer_auth(&token);
        requests.spawn(async move { request.send().await.map(|r| r.status().as_u16()) });
    }
    let all = tokio::time::timeout(Duration::from_secs(120), requests.join_all())
        .await
        .expect("a thousand requests within two minutes");
    let ok = all
        .iter()
        .filter(|status| matches!(status, Ok(200)))
        .count();
    assert_eq!(ok, 1000, "{:?}", all.iter().find(|s| !matches!(s, Ok(200))));
    assert_eq!(upstream.count(), 1000);
    assert_eq!(
        idp.introspections().await,
        1,
        "single flight, then the cache"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_token_is_refused_and_its_answer_cached() {
    let (idp, upstream, gateway) = Opaque::new().start().await;
    let garbage = "never-issued-by-anyone-0123456789abcdef";
    for round in 0..2 {
        let response = get(&gateway, "/api/orders", garbage).await;
        assert_eq!(response.status(), 401, "round {round}");
        assert!(
            challenge(&response).contains("error=\"invalid_token\""),
            "{}",
            challenge(&response)
        );
    }
    assert_eq!(
        idp.introspections().await,
        1,
        "the second came from the cache"
    );
    assert_eq!(upstream.count(), 0);
    gateway.expect_refusals("401", "token_inactive", 2.0).await;
    gateway
        .expect_metric(
            INTROSPECTIONS,
            &[("issuer", "opaque"), ("result", "inactive")],
            1.0,
        )
        .await;
    assert_not_logged(&gateway, &[garbage]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_at_the_idp_is_refused_once_its_answer_expires() {
    let short = Opaque {
        active_ttl: "1s",
        ..Opaque::new()
    };
    let (idp, _upstream, gateway) = short.start().await;
    let token = idp.opaque_token(SCOPE).await;
    assert_eq!(status(&gateway, &token).await, 200);
    idp.revoke(&token).await;

    // Until the cached answer expires no call is made and the token still
    // passes; the next call learns it is revoked.
    poll(
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async {
            let calls = idp.introspections().await;
            let got = status(&gateway, &token).await;
            let now = idp.introspections().await;
            match (now == calls, got) {
                (true, 200) => Err(format!("still cached after 20s: {}", gateway.log())),
                (false, 401) => Ok(()),
                other => panic!("(served from the cache, status) = {other:?}"),
            }
        },
    )
    .await;
    assert_eq!(status(&gateway, &token).await, 401, "and stays refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_at_the_gateway_is_refused_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let with_admin = Opaque {
        sections: format!(
            "revocation:\n  dir: \"{}\"\n  admin_tokens: [{{ name: test-admin, env: {ADMIN_ENV} }}]\n",
            dir.path().display()
        ),
        ..Opaque::new()
    };
    let (idp, _upstream, gateway) = with_admin.start().await;
    let token = idp.opaque_token(SCOPE).await;
    assert_eq!(status(&gateway, &token).await, 200, "{}", gateway.log());

    // oidc-provider hides an opaque token's jti (it is the token), so by sub.
    let response = gateway
        .client()
        .post(gateway.admin_url("/revocations"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "issuer": "opaque", "sub": idp::CLIENT_ID }))
        .send()
        .await
        .expect("POST /revocations");
    assert_eq!(response.status(), 201, "{:?}", response.text().await);

    let refused = get(&gateway, "/api/orders", &token).await;
    assert_eq!(refused.status(), 401);
    assert!(challenge(&refused).contains("invalid_token"));
    assert_eq!(
        idp.introspections().await,
        1,
        "refused with the answer cached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routes_scope_rule_holds_for_opaque_tokens() {
    let (idp, upstream, gateway) = Opaque::new().start().await;
    let token = idp.opaque_token("orders:write").await;
    let response = get(&gateway, "/api/orders", &token).await;
    assert_eq!(response.status(), 403, "{}", gateway.log());
    assert!(
        challenge(&response).contains("error=\"insufficient_scope\""),
        "{}",
        challenge(&response)
    );
    assert_eq!(upstream.count(), 0);
    gateway
        .expect_refusals("403", "insufficient_scope", 1.0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_mode_forwards_an_inactive_token_as_would_deny() {
    let (idp, upstream, gateway) = Opaque::new().start().await;
    let inactive = "revoked-or-never-issued-0123456789";
    let mut headers = FORGED.to_vec();
    headers.push(("x-request-id", "audit-inactive"));
    let response = gateway
        .get_with("/audit/orders", Some(inactive), &headers)
        .await;
    assert_eq!(response.status(), 200, "{}", gateway.log());
    let seen = upstream.last();
    assert!(
        !seen.has_header("x-user-id"),
        "no identity, and the forged one is gone: {:?}",
        seen.headers
    );
    gateway
        .expect_decisions(
            &[
                ("route", "audit"),
                ("outcome", "would_deny"),
                ("reason", "token_inactive"),
            ],
            1.0,
        )
        .await;
    gateway
        .expect_access_line(
            "audit-inactive",
            &[
                "reason=\"token_inactive\"",
                "outcome=\"would_deny\"",
                "status=200",
            ],
        )
        .await;

    let active = idp.opaque_token(SCOPE).await;
    assert_eq!(get(&gateway, "/audit/orders", &active).await.status(), 200);
    assert_eq!(upstream.last().header("x-user-id"), Some(idp::CLIENT_ID));
    gateway
        .expect_decisions(&[("route", "audit"), ("outcome", "allow")], 1.0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_answers_serve_while_the_idp_is_down() {
    let (mut idp, upstream, gateway) = Opaque::new().start().await;
    let cached = idp.opaque_token(SCOPE).await;
    let uncached = idp.opaque_token(SCOPE).await;
    assert_eq!(status(&gateway, &cached).await, 200);

    idp.stop();
    assert_eq!(status(&gateway, &cached).await, 200, "{}", gateway.log());
    assert_unavailable(&gateway, &uncached, "a new token, the IdP down").await;
    // Within the backoff no call is tried: still a 503, not a 401.
    assert_unavailable(&gateway, &uncached, "again").await;
    assert_eq!(upstream.count(), 2);

    gateway
        .expect_refusals("503", "introspection_unavailable", 2.0)
        .await;
    let metrics = gateway.metrics().await;
    let active = metric_value(
        &metrics,
        INTROSPECTIONS,
        &[("issuer", "opaque"), ("result", "active")],
    );
    assert_eq!(active, 1.0, "{metrics}");
    let failed: f64 = ["network", "timeout"]
        .iter()
        .map(|result| {
            metric_value(
                &metrics,
                INTROSPECTIONS,
                &[("issuer", "opaque"), ("result", result)],
            )
        })
        .sum();
    assert!(failed >= 1.0, "a failed call is counted:\n{metrics}");
    let timed = metric_value(&metrics, DURATIONS, &[("issuer", "opaque")]);
    assert!(timed >= 1.0, "the calls are timed:\n{metrics}");
    assert_not_logged(&gateway, &[&cached, &uncached]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dpop_bound_opaque_token_needs_a_proof_of_its_key() {
    let (idp, upstream, gateway) = Opaque::new().start().await;
    let key = DpopKey::generate("ES256");
    let request = TokenRequest::new(DPOP_CLIENT, SCOPE)
        .resource(OPAQUE_RESOURCE)
        .dpop(&key);
    let token = access_token(&idp.issue(&request).await);
    assert_eq!(idp.introspect(&token).await["cnf"]["jkt"], key.jkt.as_str());

    let url = gateway.url("/api/orders");
    let proof = key.proof(&Proof::new("GET", &url).token(&token));
    let authorization = format!("DPoP {token}");
    let with_proof = gateway
        .get_with(
            "/api/orders",
            None,
            &[("authorization", &authorization), ("dpop", &proof)],
        )
        .await;
    assert_eq!(with_proof.status(), 200, "{}", gateway.log());
    assert_eq!(upstream.last().header("x-client-id"), Some(DPOP_CLIENT));

    let thief = DpopKey::generate("ES256");
    let stolen = thief.proof(&Proof::new("GET", &url).token(&token));
    let refusals = [
        vec![("authorization", authorization.as_str())],
        vec![
            ("authorization", authorization.as_str()),
            ("dpop", stolen.as_str()),
        ],
    ];
    for headers in refusals {
        let response = gateway.get_with("/api/orders", None, &headers).await;
        assert_eq!(response.status(), 401, "{headers:?}");
    }
    let bearer = get(&gateway, "/api/orders", &token).await;
    assert_eq!(bearer.status(), 401, "a bound token as a bearer token");
    assert_eq!(upstream.count(), 1, "nothing refused got through");
}
