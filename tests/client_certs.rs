//! Client certificates (RFC 8705 §3) against real TLS peers on loopback:
//! `listen.https.client_certs` in `required` and `optional` mode with curl
//! (`--cert`/`--key`, HTTP/1.1 and HTTP/2) and `openssl s_client`; the
//! `x5t#S256` thumbprint of the presented certificate on every request of
//! the connection, seen in the access log's `client_cert`; a reload that
//! turns client certificates on; `jwtgate check` on a bad CA file; and the
//! certificate a front proxy forwards (`server.client_cert_header`),
//! believed from trusted proxies only: NGINX over mutual TLS, the
//! authorization listener (HTTP and Envoy gRPC `attributes.source.certificate`).
//!
//! Certificate-bound tokens issued by the real IdP (`tests/idp`) pass only
//! on a connection presenting that certificate.
//!
//! Every certificate is made at test time with `openssl`; every thumbprint
//! the tests expect is computed by `openssl dgst`, not by jwtgate.

mod common;
#[path = "common/idp.rs"]
mod idp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use base64::Engine;
use common::{CA, Cert, Config, Daemon, Gateway, ISS, Upstream, check, free_port, nginx_conf};

/// Runs a tool the tests need; a missing tool fails the test, loudly.
fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {program} ({e}); scripts/test installs it (Debian package {program})"
            )
        })
}

fn ca(name: &'static str, cn: &'static str) -> Cert<'static> {
    Cert {
        key: leak(format!("{name}.key")),
        cert: leak(format!("{name}.crt")),
        cn,
        days: 30,
        extensions: CA,
    }
}

fn leak(text: String) -> &'static str {
    Box::leak(text.into_boxed_str())
}

/// The server's CA and its `api.test` certificate; the CA client
/// certificates must chain to and `alice`, a client it signed; another CA
/// and `mallory`, a client certificate it signed.
struct Pki(common::Pki);

impl Pki {
    fn new() -> Self {
        let pki = common::Pki::new();
        let server_ca = ca("server-ca", "jwtgate test server CA");
        let clients_ca = ca("clients-ca", "jwtgate test clients CA");
        let other_ca = ca("other-ca", "some other CA");
        for ca in [&server_ca, &clients_ca, &other_ca] {
            pki.self_signed(ca);
        }
        let server = [
            "subjectAltName=DNS:api.test",
            "basicConstraints=CA:FALSE",
            "extendedKeyUsage=serverAuth",
        ];
        let client = ["basicConstraints=CA:FALSE", "extendedKeyUsage=clientAuth"];
        for (name, extensions, signer) in [
            ("api", &server[..], &server_ca),
            ("alice", &client[..], &clients_ca),
            ("mallory", &client[..], &other_ca),
        ] {
            let leaf = Cert {
                key: leak(format!("{name}.key")),
                cert: leak(format!("{name}.crt")),
                cn: name,
                days: 30,
                extensions,
            };
            pki.signed(&leaf, signer, None);
        }
        Self(pki)
    }

    fn dir(&self) -> String {
        self.0.dir().display().to_string()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// The SHA-256 digest of `name.crt`'s DER, as openssl computes it.
    fn sha256(&self, name: &str) -> Vec<u8> {
        let (der, sha) = (format!("{name}.der"), format!("{name}.sha256"));
        let cert = format!("{name}.crt");
        self.0
            .openssl(&["x509", "-in", &cert, "-outform", "DER", "-out", &der]);
        self.0
            .openssl(&["dgst", "-sha256", "-binary", "-out", &sha, &der]);
        std::fs::read(self.path(&sha)).expect("the digest openssl wrote")
    }

    /// `x5t#S256` of `name.crt`: its SHA-256, base64url without padding.
    fn thumbprint(&self, name: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.sha256(name))
    }

    /// `name.crt` URL-encoded, as NGINX's `$ssl_client_escaped_cert` writes it.
    fn escaped(&self, name: &str) -> String {
        let pem = std::fs::read(self.path(&format!("{name}.crt"))).expect("read the certificate");
        form_urlencoded::byte_serialize(&pem)
            .collect::<String>()
            .replace('+', "%20")
    }
}

const ROUTES: &str = r#"
  - name: open
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { mode: off }
"#;

/// A TLS listener serving `api.test` with `client_certs` as given (none
/// when empty).
fn https_config(client_certs: &str) -> String {
    let settings: Vec<String> = if client_certs.is_empty() {
        Vec::new()
    } else {
        vec![format!("client_certs: {client_certs}")]
    };
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    Config::main(ISS)
        .https(
            &[r#"{ hosts: [api.test], cert: "{PKI}/api.crt", key: "{PKI}/api.key" }"#],
            &settings,
        )
        .routes(ROUTES)
}

fn required() -> String {
    https_config(r#"{ ca: "{PKI}/clients-ca.crt", mode: required }"#)
}

fn optional() -> String {
    https_config(r#"{ ca: "{PKI}/clients-ca.crt", mode: optional }"#)
}

/// The gateway running `template` with `{HTTPS}` and `{PKI}` filled in,
/// once its TLS listener accepts; and that listener's port.
async fn start(template: &str, pki: &Pki, upstream: &Upstream) -> (Gateway, u16) {
    let https = free_port();
    let config = template
        .replace("{HTTPS}", &https.to_string())
        .replace("{PKI}", &pki.dir());
    let gateway = Gateway::start(&config, upstream).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], https));
    common::wait_for_listener(addr, &|| gateway.log());
    (gateway, https)
}

/// curl to `https://api.test:port` for each of `paths`, on one connection,
/// every request with `X-Request-Id: id`, presenting `client` (`name.crt`
/// and `name.key`) when given; `extra` before the URLs.
fn curl(
    pki: &Pki,
    port: u16,
    client: Option<&str>,
    id: &str,
    extra: &[&str],
    paths: &[&str],
) -> Output {
    let resolve = format!("api.test:{port}:127.0.0.1");
    let (ca, request_id) = (pki.arg("server-ca.crt"), format!("X-Request-Id: {id}"));
    let mut args: Vec<String> = [
        "--silent",
        "--show-error",
        "--cacert",
        &ca,
        "--resolve",
        &resolve,
        "--header",
        &request_id,
        "--write-out",
        "%{http_code} %{http_version}\n",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(name) = client {
        args.extend(["--cert".into(), pki.arg(&format!("{name}.crt"))]);
        args.extend(["--key".into(), pki.arg(&format!("{name}.key"))]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    for path in paths {
        args.extend([
            format!("https://api.test:{port}{path}"),
            "--output".into(),
            "/dev/null".into(),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run("curl", &args)
}

/// The `status version` lines of a curl that succeeded.
fn served(output: &Output) -> Vec<String> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "curl failed: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout.lines().map(str::to_owned).collect()
}

/// Asserts that curl failed: the handshake was refused.
fn refused(output: &Output) {
    assert!(
        !output.status.success(),
        "curl was served: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// `openssl s_client` presenting `client` when given, until the server
/// closes the connection: everything it printed. With `request`, an
/// HTTP/1.1 request that asks the server to close after its answer; without,
/// nothing is sent, so a refusal (with TLS 1.3, an alert after the
/// client's Finished) is read rather than lost to a reset when the server
/// closes with the request unread.
fn s_client(pki: &Pki, port: u16, client: Option<&str>, request: bool) -> String {
    let connect = format!("127.0.0.1:{port}");
    let ca = pki.arg("server-ca.crt");
    let (cert, key) = client
        .map(|name| {
            (
                pki.arg(&format!("{name}.crt")),
                pki.arg(&format!("{name}.key")),
            )
        })
        .unzip();
    let mut args = vec![
        "s_client",
        "-connect",
        &connect,
        "-servername",
        "api.test",
        "-CAfile",
        &ca,
        "-ign_eof",
    ];
    if let (Some(cert), Some(key)) = (&cert, &key) {
        args.extend(["-cert", cert, "-key", key]);
    }
    let mut child = Command::new("openssl")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run openssl; scripts/test installs it (Debian package openssl)");
    let mut stdin = child.stdin.take().unwrap();
    if request {
        use std::io::Write;
        let head = b"GET /s_client HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n";
        stdin.write_all(head).expect("write the request");
    }
    drop(stdin);
    let output = child.wait_with_output().expect("openssl s_client");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

const FAILURES: &str = "jwtgate_tls_handshake_failures_total";

/// Every access-log line with `X-Request-Id: id`, once there are `count`.
async fn access_lines(gateway: &Gateway, id: &str, count: usize) -> Vec<String> {
    let needle = format!("request_id=\"{id}\"");
    let lines = |log: &str| -> Vec<String> {
        log.lines()
            .filter(|line| line.contains("jwtgate::access") && line.contains(&needle))
            .map(str::to_owned)
            .collect()
    };
    let log = gateway.wait_for_log(|log| lines(log).len() >= count).await;
    let found = lines(&log);
    assert_eq!(found.len(), count, "access lines for {id}:\n{log}");
    found
}

fn cert_field(thumbprint: &str) -> String {
    format!(" client_cert=\"{thumbprint}\" ")
}

const NO_CERT: &str = " client_cert=- ";

/// `mallory`'s certificate, signed by another CA, fails the handshake with
/// curl and with `openssl s_client` (alert 48, unknown CA), counted as
/// `client_cert_refused`.
async fn another_cas_certificate_is_refused(gateway: &Gateway, pki: &Pki, port: u16) {
    refused(&curl(pki, port, Some("mallory"), "mallory", &[], &["/"]));
    let said = s_client(pki, port, Some("mallory"), false);
    assert!(said.contains("alert unknown ca"), "{said}");
    gateway
        .expect_metric(FAILURES, &[("reason", "client_cert_refused")], 2.0)
        .await;
}

// ---------------------------------------------------------------------------
// The TLS listener
// ---------------------------------------------------------------------------

#[tokio::test]
async fn required_mode_refuses_a_client_without_a_certificate_or_with_another_cas() {
    let (pki, upstream) = (Pki::new(), Upstream::start());
    let (gateway, port) = start(&required(), &pki, &upstream).await;

    // curl's own words vary with the moment the alert reaches it.
    refused(&curl(&pki, port, None, "none", &[], &["/"]));
    let said = s_client(&pki, port, None, false);
    assert!(said.contains("alert certificate required"), "{said}");
    gateway
        .expect_metric(FAILURES, &[("reason", "client_cert_missing")], 2.0)
        .await;

    another_cas_certificate_is_refused(&gateway, &pki, port).await;
    assert_eq!(
        upstream.count(),
        0,
        "no refused client reached the upstream"
    );

    assert_eq!(
        served(&curl(&pki, port, Some("alice"), "alice", &[], &["/"])),
        ["200 2"]
    );
    let said = s_client(&pki, port, Some("alice"), true);
    assert!(said.contains("HTTP/1.1 200"), "{said}");
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn optional_mode_serves_clients_with_and_without_a_certificate_but_not_another_cas() {
    let (pki, upstream) = (Pki::new(), Upstream::start());
    let (gateway, port) = start(&optional(), &pki, &upstream).await;

    assert_eq!(
        served(&curl(&pki, port, None, "anonymous", &[], &["/"])),
        ["200 2"]
    );
    let line = &access_lines(&gateway, "anonymous", 1).await[0];
    assert!(line.contains(NO_CERT), "{line}");

    assert_eq!(
        served(&curl(&pki, port, Some("alice"), "alice", &[], &["/"])),
        ["200 2"]
    );
    let line = &access_lines(&gateway, "alice", 1).await[0];
    assert!(
        line.contains(&cert_field(&pki.thumbprint("alice"))),
        "{line}"
    );

    another_cas_certificate_is_refused(&gateway, &pki, port).await;
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn each_request_on_a_connection_carries_its_thumbprint_over_http1_http2_and_tls12() {
    let (pki, upstream) = (Pki::new(), Upstream::start());
    let (gateway, port) = start(&required(), &pki, &upstream).await;
    let expected = cert_field(&pki.thumbprint("alice"));

    // TLS 1.2 too: the client's signature over the handshake is checked
    // another way there.
    let tls12: &[&str] = &["--http1.1", "--tls-max", "1.2"];
    for (id, args, shown) in [
        ("h1", &["--http1.1"][..], "1.1"),
        ("h2", &["--http2"][..], "2"),
        ("tls12", tls12, "1.1"),
    ] {
        let lines = served(&curl(&pki, port, Some("alice"), id, args, &["/a", "/b"]));
        let wanted = format!("200 {shown}");
        assert_eq!(lines, [wanted.as_str(), wanted.as_str()]);
        for line in access_lines(&gateway, id, 2).await {
            assert!(line.contains(&expected), "{args:?}: {line}");
        }
    }
}

#[tokio::test]
async fn a_reload_turns_client_certificates_on_and_refuses_a_bad_ca_file() {
    let (pki, upstream) = (Pki::new(), Upstream::start());
    let (gateway, port) = start(&https_config(""), &pki, &upstream).await;
    assert_eq!(
        served(&curl(&pki, port, None, "before", &[], &["/"])),
        ["200 2"]
    );

    let config = required()
        .replace("{HTTPS}", &port.to_string())
        .replace("{PKI}", &pki.dir());
    gateway.write_config(&config, &upstream);
    let (status, body) = gateway.reload().await;
    assert_eq!(status, 200, "{body}");

    refused(&curl(&pki, port, None, "after", &[], &["/"]));
    let said = s_client(&pki, port, None, false);
    assert!(said.contains("alert certificate required"), "{said}");
    assert_eq!(
        served(&curl(&pki, port, Some("alice"), "alice", &[], &["/"])),
        ["200 2"]
    );

    // A CA file that holds no certificate fails the reload, naming it; the
    // running settings go on.
    std::fs::write(pki.path("not-a-ca.pem"), "hello\n").unwrap();
    gateway.write_config(&config.replace("clients-ca.crt", "not-a-ca.pem"), &upstream);
    let (status, body) = gateway.reload().await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("listen.https.client_certs.ca") && body.contains("holds no PEM certificate"),
        "{body}"
    );
    refused(&curl(&pki, port, None, "still", &[], &["/"]));
    assert_eq!(
        served(&curl(&pki, port, Some("alice"), "alice-again", &[], &["/"])),
        ["200 2"]
    );
}

#[test]
fn check_names_the_ca_file_that_holds_no_certificate_at_its_line() {
    let pki = Pki::new();
    std::fs::write(pki.path("not-a-ca.pem"), "hello\n").unwrap();
    let config = https_config(r#"{ ca: "{PKI}/not-a-ca.pem", mode: required }"#)
        .replace("{HTTPS}", "18443")
        .replace("{PKI}", &pki.dir());
    let line = config
        .lines()
        .position(|line| line.contains("client_certs:"))
        .expect("the client_certs line")
        + 1;
    let ran = check(&config);
    assert!(!ran.success, "{}", ran.text());
    let expected = format!("gateway.yaml:{line}:",);
    let text = ran.text();
    assert!(text.contains(&expected), "{expected} not in {text}");
    assert!(
        text.contains(&format!(
            "listen.https.client_certs.ca: {} holds no PEM certificate",
            pki.path("not-a-ca.pem").display()
        )),
        "{text}"
    );

    let config = config.replace("not-a-ca.pem", "clients-ca.crt");
    let ran = check(&config);
    assert!(ran.success, "{}", ran.text());
    assert!(
        ran.stdout
            .contains("client certificates: required, chaining to"),
        "{}",
        ran.stdout
    );
}

// ---------------------------------------------------------------------------
// Behind a TLS-terminating proxy
// ---------------------------------------------------------------------------

/// A clear-text gateway that believes `header` from `trusted`.
fn behind_proxy(trusted: &str, header: &str, format: &str) -> String {
    Config::main(ISS)
        .server(&format!(
            r#"trusted_proxies: ["{trusted}"], client_cert_header: {{ name: {header}, format: {format} }}"#
        ))
        .routes(ROUTES)
}

/// A request to the clear-text listener with `id` and `header: value`.
async fn send(gateway: &Gateway, id: &str, header: &str, value: &str) {
    let response = gateway
        .client()
        .get(gateway.url("/"))
        .header("x-request-id", id)
        .header(header, value)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_trusted_proxys_header_names_the_certificate_and_reaches_the_upstream() {
    let (pki, upstream) = (Pki::new(), Upstream::start());
    let expected = cert_field(&pki.thumbprint("alice"));

    let config = behind_proxy("127.0.0.1", "x-ssl-client-cert", "escaped_pem");
    let gateway = Gateway::start(&config, &upstream).await;
    let escaped = pki.escaped("alice");
    send(&gateway, "nginx-style", "x-ssl-client-cert", &escaped).await;
    let line = &access_lines(&gateway, "nginx-style", 1).await[0];
    assert!(line.contains(&expected), "{line}");
    assert_eq!(
        upstream.last().header("x-ssl-client-cert"),
        Some(escaped.as_str())
    );
    drop(gateway);

    let config = behind_proxy("127.0.0.1", "x-forwarded-client-cert", "xfcc");
    let gateway = Gateway::start(&config, &upstream).await;
    let hash: String = pki
        .sha256("alice")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let by_hash = format!("By=spiffe://cluster.local/ns/a/sa/gw;Hash={hash};Subject=\"CN=alice\"");
    let by_cert = format!("By=spiffe://gw;Cert=\"{escaped}\";Subject=\"CN=alice,O=x\"");
    for (id, value) in [("xfcc-hash", &by_hash), ("xfcc-cert", &by_cert)] {
        send(&gateway, id, "x-forwarded-client-cert", value).await;
        let line = &access_lines(&gateway, id, 1).await[0];
        assert!(line.contains(&expected), "{id}: {line}");
    }
}

#[tokio::test]
async fn an_untrusted_peers_header_is_ignored_and_removed() {
    let (pki, upstream) = (Pki::new(), Upstream::start());
    let config = behind_proxy("10.0.0.0/8", "x-ssl-client-cert", "escaped_pem");
    let gateway = Gateway::start(&config, &upstream).await;
    send(
        &gateway,
        "spoofed",
        "x-ssl-client-cert",
        &pki.escaped("alice"),
    )
    .await;
    let line = &access_lines(&gateway, "spoofed", 1).await[0];
    assert!(line.contains(NO_CERT), "{line}");
    let recorded = upstream.last();
    assert!(
        !recorded.has_header("x-ssl-client-cert"),
        "{:?}",
        recorded.headers
    );
}

#[tokio::test]
async fn nginx_terminating_mutual_tls_forwards_the_certificate_it_verified() {
    let (pki, upstream) = (Pki::new(), Upstream::start());
    let config = behind_proxy("127.0.0.1", "x-ssl-client-cert", "escaped_pem");
    let gateway = Gateway::start(&config, &upstream).await;

    let dir = tempfile::tempdir().expect("nginx tempdir");
    let port = free_port();
    let server = format!(
        r#"        listen 127.0.0.1:{port} ssl;
        server_name api.test;
        ssl_certificate {pki}/api.crt;
        ssl_certificate_key {pki}/api.key;
        ssl_client_certificate {pki}/clients-ca.crt;
        ssl_verify_client on;
        location / {{
            proxy_pass http://{proxy};
            proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;
            proxy_set_header X-Request-Id $http_x_request_id;
        }}"#,
        pki = pki.dir(),
        proxy = gateway.proxy_addr(),
    );
    let nginx = Daemon::nginx(&nginx_conf(dir.path(), &server), dir, port);
    common::wait_for_listener(SocketAddr::from(([127, 0, 0, 1], port)), &|| nginx.log());

    assert_eq!(
        served(&curl(
            &pki,
            port,
            Some("alice"),
            "via-nginx",
            &["--http1.1"],
            &["/"]
        )),
        ["200 1.1"]
    );
    let line = &access_lines(&gateway, "via-nginx", 1).await[0];
    assert!(
        line.contains(&cert_field(&pki.thumbprint("alice"))),
        "{line}"
    );
}

// ---------------------------------------------------------------------------
// The authorization listener
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_authorization_listener_reads_the_forwarded_certificate_from_trusted_proxies() {
    let (pki, upstream) = (Pki::new(), Upstream::start());
    let (http, grpc) = (free_port(), free_port());
    let authz = format!(
        "{{ addr: \"127.0.0.1:{http}\", grpc_addr: \"127.0.0.1:{grpc}\", convention: nginx }}"
    );
    let config = Config::main(ISS)
        .server(
            r#"trusted_proxies: ["127.0.0.1"], client_cert_header: { name: x-ssl-client-cert, format: escaped_pem }"#,
        )
        .listen(&format!("\n  http: \"127.0.0.1:{{PROXY}}\"\n  authz: {authz}"))
        .routes(ROUTES);
    let gateway = Gateway::start(&config, &upstream).await;
    let expected = cert_field(&pki.thumbprint("alice"));

    let http = SocketAddr::from(([127, 0, 0, 1], http));
    common::wait_for_listener(http, &|| gateway.log());
    let response = gateway
        .client()
        .get(format!("http://{http}/auth"))
        .header("x-request-id", "authz-http")
        .header("x-original-method", "GET")
        .header("x-original-uri", "/anything")
        .header("x-ssl-client-cert", pki.escaped("alice"))
        .send()
        .await
        .expect("decision request");
    assert_eq!(response.status(), 200);
    let line = &access_lines(&gateway, "authz-http", 1).await[0];
    assert!(
        line.contains(&expected) && line.contains("adapter=\"authz\""),
        "{line}"
    );

    let grpc = SocketAddr::from(([127, 0, 0, 1], grpc));
    common::wait_for_listener(grpc, &|| gateway.log());
    let check = [serde_json::json!({ "request": {
        "attributes": {
            "source": {
                "address": { "socket_address": { "address": "192.0.2.7", "port_value": 51000 } },
                "certificate": pki.escaped("alice"),
            },
            "request": { "http": {
                "id": "1", "method": "GET", "path": "/anything", "host": "api.test",
                "scheme": "https", "protocol": "HTTP/1.1",
                "headers": { "x-request-id": "authz-grpc" },
            } }
        }
    } })];
    let answers = common::check_grpc(grpc, &check);
    // Default values (code 0, OK) are left out of the JSON.
    let code = answers[0]["status"]["code"].as_i64().unwrap_or(0);
    assert!(
        code == 0 && answers[0].get("denied_response").is_none(),
        "{answers:?}"
    );
    let line = &access_lines(&gateway, "authz-grpc", 1).await[0];
    assert!(
        line.contains(&expected) && line.contains("adapter=\"authz_grpc\""),
        "{line}"
    );
}

/// The IdP as the only issuer, a TLS listener asking for client
/// certificates, a route taking any token and one taking only tokens bound
/// to the connection's certificate.
fn bound_config(issuer: &str) -> String {
    let routes = r#"
  - name: api
    match: { path_prefix: /api }
    upstream: { addrs: ["{UPSTREAM}"] }
  - name: mtls
    match: { path_prefix: /mtls }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { sender_constraint: mtls }
"#;
    Config::new()
        .default_server()
        .https(
            &[r#"{ hosts: [api.test], cert: "{PKI}/api.crt", key: "{PKI}/api.key" }"#],
            &[r#"client_certs: { ca: "{PKI}/clients-ca.crt", mode: optional }"#],
        )
        .issuers(&idp::issuer_yaml(
            issuer,
            "{ allow_http: true }",
            idp::RESOURCE,
            &[],
        ))
        .routes(routes)
}

/// RFC 8705 §3: the token's `cnf["x5t#S256"]` must be the certificate of
/// the connection it comes on; a stolen token is useless without the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_bound_token_passes_only_with_its_certificate() {
    let pki = Pki::new();
    let idp = idp::Idp::start().await;
    let upstream = Upstream::start();
    let (gateway, port) = start(&bound_config(&idp.issuer()), &pki, &upstream).await;
    let pem = |name: &str| std::fs::read_to_string(pki.path(name)).expect("a certificate");
    let alices = idp.cert_bound_token(&pem("alice.crt"), "orders:read").await;
    let mallorys = idp
        .cert_bound_token(&pem("mallory.crt"), "orders:read")
        .await;
    let bearer = idp.token("orders:read").await;
    let with = |token: &str| format!("Authorization: Bearer {token}");
    let ask = |client: Option<&str>, token: &str, path: &str| {
        let header = with(token);
        served(&curl(
            &pki,
            port,
            client,
            "bound",
            &["--header", &header],
            &[path],
        ))[0]
            .split(' ')
            .next()
            .unwrap()
            .to_string()
    };
    // Wait for the IdP's keys: until then every token is refused alike.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while ask(Some("alice"), &bearer, "/api/x") != "200" {
        assert!(std::time::Instant::now() < deadline, "{}", gateway.log());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(ask(Some("alice"), &alices, "/api/x"), "200");
    assert_eq!(ask(Some("alice"), &alices, "/mtls/x"), "200");
    // Without a certificate, or with another one than it is bound to.
    assert_eq!(ask(None, &alices, "/api/x"), "401");
    assert_eq!(ask(Some("alice"), &mallorys, "/api/x"), "401");
    gateway
        .expect_decisions(&[("route", "api"), ("reason", "certificate_mismatch")], 2.0)
        .await;
    // A plain bearer token where the route requires a bound one.
    assert_eq!(ask(Some("alice"), &bearer, "/mtls/x"), "401");
    gateway
        .expect_decisions(
            &[("route", "mtls"), ("reason", "sender_constraint_required")],
            1.0,
        )
        .await;
}
