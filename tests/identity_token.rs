//! Identity tokens through the real binary, checked by a verifier jwtgate
//! does not use: tests/identity/verify.py (PyJWT's PyJWKClient against the
//! JWK Set on jwtgate's admin listener). Keys are made with openssl at test
//! time. What a backend receives verifies; a tampered token or one for
//! another backend does not; a client's forged header never arrives; a
//! rotation by reload keeps tokens signed before it verifiable.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use serde_json::{Value, json};

const ISS: &str = "https://issuer.test";
const GATEWAY_ISS: &str = "https://gateway.test";
const HEADER: &str = "x-jwtgate-identity";

/// A private key made by `openssl genpkey` with `args`, written to `dir/name`.
fn key(dir: &Path, name: &str, args: &[&str]) {
    let output = Command::new("openssl")
        .arg("genpkey")
        .args(args)
        .args(["-out", &dir.join(name).display().to_string()])
        .output()
        .expect("openssl on PATH");
    assert!(output.status.success(), "openssl genpkey: {output:?}");
}

fn keys_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a key dir");
    key(
        dir.path(),
        "p256.pem",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    key(dir.path(), "ed25519.pem", &["-algorithm", "ED25519"]);
    key(
        dir.path(),
        "rsa.pem",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    dir
}

/// `keys` (`kid` → file in `dir`), the first signing; three routes sending
/// identity tokens to the backend `orders`: required, optional and audit.
fn config(dir: &Path, keys: &[(&str, &str)]) -> String {
    let mut block = format!("identity_tokens:\n  issuer: {GATEWAY_ISS}\n  keys:\n");
    for (kid, file) in keys {
        block.push_str(&format!(
            "    - {{ kid: {kid}, file: \"{}\" }}\n",
            dir.join(file).display()
        ));
    }
    let token = "{ audience: orders, ttl: 2m, claims: [email] }";
    Config::main(ISS).section(&block).routes(&format!(
        r#"
  - name: api
    match: {{ path_prefix: /api }}
    upstream: {{ addrs: ["{{UPSTREAM}}"] }}
    forward: {{ identity_token: {token} }}
  - name: optional
    match: {{ path_prefix: /optional }}
    upstream: {{ addrs: ["{{UPSTREAM}}"] }}
    auth: {{ mode: optional }}
    forward: {{ identity_token: {token} }}
  - name: audit
    match: {{ path_prefix: /audit }}
    upstream: {{ addrs: ["{{UPSTREAM}}"] }}
    auth: {{ mode: audit }}
    forward: {{ identity_token: {token} }}
"#
    ))
}

/// What tests/identity/verify.py makes of each of `tokens`, verified for
/// `audience` against the JWK Set the gateway serves now.
fn verify(gateway: &Gateway, audience: &str, tokens: &[&str]) -> Vec<Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/identity/verify.py");
    let jwks = gateway.admin_url("/.well-known/jwks.json");
    let mut child = Command::new(venv_bin("python"))
        .args([script, &jwks, audience, GATEWAY_ISS])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the tools virtualenv's python (scripts/setup installs PyJWT and cryptography)");
    let mut stdin = child.stdin.take().expect("stdin");
    for token in tokens {
        writeln!(stdin, "{token}").expect("write a token");
    }
    drop(stdin);
    let output = child.wait_with_output().expect("verify.py ran");
    assert!(output.status.success(), "verify.py: {output:?}");
    let results: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(results.len(), tokens.len(), "{output:?}");
    results
}

/// The identity token the upstream received with the last request.
fn received(upstream: &Upstream) -> Option<String> {
    upstream.last().header(HEADER).map(str::to_owned)
}

fn caller() -> String {
    token(
        ISS,
        "alice",
        json!({ "email": "alice@example.com", "scope": "orders:read", "azp": "web", "exp": now() + 300 }),
    )
}

#[tokio::test]
async fn a_backend_verifies_the_identity_token_with_pyjwt() {
    let dir = keys_dir();
    let config = config(dir.path(), &[("p256", "p256.pem"), ("ed", "ed25519.pem")]);
    let (upstream, gateway) = start(&config).await;
    let response = gateway
        .get_with("/api/orders", Some(&caller()), &[(HEADER, "forged")])
        .await;
    assert_eq!(response.status(), 200);
    let sent = upstream.last();
    assert_eq!(
        sent.header_all(HEADER).len(),
        1,
        "one identity token, the client's is gone"
    );
    let jwt = received(&upstream).expect("an identity token");
    assert_ne!(jwt, "forged");

    let mut tampered = jwt.clone().into_bytes();
    let middle = jwt.find('.').expect("a JWS") + 5;
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let results = verify(&gateway, "orders", &[&jwt, &tampered]);
    let claims = &results[0]["claims"];
    assert_eq!(claims["iss"], GATEWAY_ISS, "{results:?}");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["aud"], "orders");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["scope"], "orders:read");
    assert_eq!(claims["client_id"], "web");
    assert_eq!(claims["original_iss"], ISS);
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert!(
        (1..=120).contains(&lifetime),
        "within the route's ttl: {claims}"
    );
    assert!(results[1]["error"].is_string(), "tampered: {results:?}");
    let other_backend = verify(&gateway, "billing", &[&jwt]);
    assert_eq!(other_backend[0]["error"], "InvalidAudienceError");

    // `jwtgate check` says what signs, what is published and what each route sends.
    let check = Command::new(env!("CARGO_BIN_EXE_jwtgate"))
        .args(["check", "--config"])
        .arg(gateway.config_path())
        .output()
        .expect("jwtgate check");
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{check:?}");
    assert!(
        said.contains(&format!(
            "identity tokens: iss={GATEWAY_ISS} signs with kid=p256 (ES256) · publishes [p256, ed]"
        )),
        "{said}"
    );
    assert!(
        said.contains("identity token for orders in x-jwtgate-identity, 120s"),
        "{said}"
    );
    let discovery: Value = gateway
        .admin_get("/.well-known/openid-configuration")
        .await
        .json()
        .await
        .expect("a discovery document");
    assert_eq!(discovery["issuer"], GATEWAY_ISS);
    assert_eq!(
        discovery["jwks_uri"],
        format!("{GATEWAY_ISS}/.well-known/jwks.json")
    );
}

#[tokio::test]
async fn without_a_verified_token_no_identity_token_is_sent() {
    let dir = keys_dir();
    let (upstream, gateway) = start(&config(dir.path(), &[("p256", "p256.pem")])).await;
    let forged = [(HEADER, "forged")];
    let optional = gateway.get_with("/optional/x", None, &forged).await;
    assert_eq!(optional.status(), 200);
    assert_eq!(received(&upstream), None, "optional route, no token");
    let bad = token(ISS, "mallory", json!({ "aud": "elsewhere" }));
    let audited = gateway.get_with("/audit/x", Some(&bad), &forged).await;
    assert_eq!(audited.status(), 200, "audit forwards what it would refuse");
    assert_eq!(received(&upstream), None, "audit route, refused token");
    let allowed = gateway
        .get_with("/optional/x", Some(&caller()), &forged)
        .await;
    assert_eq!(allowed.status(), 200);
    let jwt = received(&upstream).expect("a verified token on an optional route");
    assert_eq!(
        verify(&gateway, "orders", &[&jwt])[0]["claims"]["sub"],
        "alice"
    );
}

#[tokio::test]
async fn a_rotation_by_reload_keeps_earlier_tokens_verifiable_until_the_key_goes() {
    let dir = keys_dir();
    let (upstream, gateway) = start(&config(dir.path(), &[("old", "p256.pem")])).await;
    gateway.get("/api/x", Some(&caller())).await;
    let before = received(&upstream).expect("signed with the old key");

    // The new key signs; the old one stays published.
    let rotated = config(dir.path(), &[("new", "rsa.pem"), ("old", "p256.pem")]);
    gateway.write_config(&rotated, &upstream);
    assert_eq!(gateway.reload().await.0, 200);
    gateway.get("/api/x", Some(&caller())).await;
    let after = received(&upstream).expect("signed with the new key");
    assert_ne!(before, after);
    let results = verify(&gateway, "orders", &[&before, &after]);
    assert_eq!(results[0]["claims"]["sub"], "alice", "{results:?}");
    assert_eq!(results[1]["claims"]["sub"], "alice", "{results:?}");
    let jwks: Value = gateway
        .admin_get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .expect("a JWK Set");
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, ["new", "old"]);

    // Once the old key is withdrawn, what it signed no longer verifies.
    gateway.write_config(&config(dir.path(), &[("new", "rsa.pem")]), &upstream);
    assert_eq!(gateway.reload().await.0, 200);
    let results = verify(&gateway, "orders", &[&before, &after]);
    assert!(results[0]["error"].is_string(), "{results:?}");
    assert_eq!(results[1]["claims"]["sub"], "alice");
}

#[tokio::test]
async fn a_config_with_a_bad_key_is_refused_by_check_and_by_reload() {
    let dir = keys_dir();
    std::fs::write(dir.path().join("junk.pem"), "not a key").unwrap();
    let (upstream, gateway) = start(&config(dir.path(), &[("p256", "p256.pem")])).await;
    gateway.write_config(&config(dir.path(), &[("junk", "junk.pem")]), &upstream);
    let (status, body) = gateway.reload().await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("not a PEM private key"), "{body}");
    let check = Command::new(env!("CARGO_BIN_EXE_jwtgate"))
        .args(["check", "--config"])
        .arg(gateway.config_path())
        .output()
        .expect("jwtgate check");
    assert!(!check.status.success());
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(stderr.contains("identity_tokens: key \"junk\""), "{stderr}");
    // The running config still signs.
    gateway.get("/api/x", Some(&caller())).await;
    assert!(received(&upstream).is_some());
}

#[tokio::test]
async fn the_keys_are_published_on_the_proxy_when_asked() {
    let dir = keys_dir();
    let admin_only = config(dir.path(), &[("p256", "p256.pem")]);
    let (upstream, gateway) = start(&admin_only).await;
    assert_eq!(
        gateway.status("/.well-known/jwks.json", None).await,
        404,
        "no route"
    );
    let both = admin_only.replace("  keys:\n", "  publish_on: admin_and_proxy\n  keys:\n");
    gateway.write_config(&both, &upstream);
    assert_eq!(gateway.reload().await.0, 200);
    let response = gateway.get("/.well-known/jwks.json", None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/jwk-set+json"
    );
    let served: Value = response.json().await.expect("a JWK Set");
    let admin: Value = gateway
        .admin_get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .expect("a JWK Set");
    assert_eq!(served, admin);
    assert_eq!(served["keys"][0]["kid"], "p256");
    assert_eq!(upstream.count(), 0, "answered by jwtgate, not a route");
}

#[tokio::test]
async fn the_authorization_listener_answers_with_the_identity_token_too() {
    let dir = keys_dir();
    let port = free_port();
    let listen = format!(
        "\n  http: \"127.0.0.1:{{PROXY}}\"\n  authz: {{ addr: \"127.0.0.1:{port}\", convention: envoy }}"
    );
    let template = config(dir.path(), &[("p256", "p256.pem")]).replacen(
        "listen: { http: \"127.0.0.1:{PROXY}\" }",
        &format!("listen:{listen}"),
        1,
    );
    assert!(template.contains("authz:"), "{template}");
    let (_upstream, gateway) = start(&template).await;
    let authz = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    wait_for_listener(authz, &|| gateway.log());
    let head = format!(
        "GET /api/orders HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer {}\r\nContent-Length: 0",
        caller()
    );
    let response = raw_request(authz, &head).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let jwt = response
        .header(HEADER)
        .expect("the identity token in the answer");
    let results = verify(&gateway, "orders", &[jwt]);
    assert_eq!(results[0]["claims"]["sub"], "alice", "{results:?}");
}
