//! TLS to the upstream against a real TLS server: nginx from the
//! distribution, with a CA and certificates `openssl` makes for each test.
//! nginx passes each request on to a recording upstream and adds what it saw
//! of the TLS connection (SNI, protocol, client certificate) as headers, so
//! the tests read both that a request got through and how.

mod common;

use std::net::TcpListener as StdTcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

/// A CA, and leaf certificates it signs, as PEM files in a directory of
/// their own: `{name}.pem` and its key `{name}.key`. Keys are P-256,
/// certificates valid for two days.
struct Pki(common::Pki);

/// The file names of the certificate `name`: key, certificate.
fn files(name: &str) -> (String, String) {
    (format!("{name}.key"), format!("{name}.pem"))
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.0.path(name)
    }

    fn dir(&self) -> &Path {
        self.0.dir()
    }

    /// A self-signed CA `{name}.pem` with its key `{name}.key`.
    fn ca(&self, name: &str) {
        let (key, cert) = files(name);
        self.0.self_signed(&Cert {
            key: &key,
            cert: &cert,
            cn: name,
            days: 2,
            extensions: CA,
        });
    }

    /// A leaf `{name}.pem` / `{name}.key` signed by the CA `ca`, with the
    /// given subjectAltName and extendedKeyUsage.
    fn leaf(&self, name: &str, ca: &str, san: &str, usage: &str) {
        let (key, cert) = files(name);
        let (ca_key, ca_cert) = files(ca);
        let usage = format!("extendedKeyUsage={usage}");
        let san = format!("subjectAltName={san}");
        let leaf = Cert {
            key: &key,
            cert: &cert,
            cn: name,
            days: 2,
            extensions: &[
                "basicConstraints=critical,CA:FALSE",
                "keyUsage=critical,digitalSignature",
                &usage,
                &san,
            ],
        };
        let issuer = Cert {
            key: &ca_key,
            cert: &ca_cert,
            ..leaf
        };
        let serial = format!("{:x}", rand_serial());
        self.0.signed(&leaf, &issuer, Some(&serial));
    }

    /// A self-signed server certificate `{name}.pem` / `{name}.key`.
    fn self_signed(&self, name: &str, san: &str) {
        let (key, cert) = files(name);
        let san = format!("subjectAltName={san}");
        self.0.self_signed(&Cert {
            key: &key,
            cert: &cert,
            cn: name,
            days: 2,
            extensions: &[&san],
        });
    }
}

/// Distinct serials, so Pingora's pool (keyed by the client certificate's
/// serial) never confuses two certificates of one test run.
fn rand_serial() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    nanos ^ (NEXT.fetch_add(1, Ordering::Relaxed) << 48) ^ u64::from(std::process::id())
}

/// The usual set: a CA `ca`, a server certificate for `localhost`,
/// `api.test` and 127.0.0.1 (and ::1), a client CA `client-ca` with a client
/// certificate `client`, and a CA `other-ca` that signed nothing here.
fn pki() -> Pki {
    let pki = Pki(common::Pki::new());
    pki.ca("ca");
    pki.leaf(
        "server",
        "ca",
        "DNS:localhost,DNS:api.test,IP:127.0.0.1,IP:::1",
        "serverAuth",
    );
    pki.ca("client-ca");
    pki.leaf("client", "client-ca", "DNS:jwtgate.test", "clientAuth");
    pki.ca("other-ca");
    pki
}

// ---------------------------------------------------------------------------
// nginx
// ---------------------------------------------------------------------------

/// How the test's nginx serves TLS.
#[derive(Default)]
struct NginxTls {
    /// Require a client certificate signed by `client-ca`.
    mtls: bool,
    /// Serve this certificate instead of `server`.
    certificate: Option<&'static str>,
}

impl NginxTls {
    const MTLS: Self = Self {
        mtls: true,
        certificate: None,
    };
}

/// nginx terminating TLS on a free loopback port and passing requests to
/// `upstream` with what it saw of the connection as `X-Tls-*` headers.
fn start_nginx(pki: &Pki, upstream: &Upstream, tls: NginxTls) -> Daemon {
    for _ in 0..3 {
        if let Some(nginx) = try_start_nginx(pki, upstream, &tls) {
            return nginx;
        }
    }
    panic!("nginx did not start after 3 attempts (ports in use)");
}

/// The usual PKI, a recording upstream, and nginx serving TLS as `tls`
/// says in front of it.
fn behind_nginx(tls: NginxTls) -> (Pki, Upstream, Daemon) {
    let pki = pki();
    let upstream = Upstream::start();
    let nginx = start_nginx(&pki, &upstream, tls);
    (pki, upstream, nginx)
}

/// Whether the IPv6 loopback exists here: nginx listens on it too when it
/// does, since `localhost` may resolve to ::1 first.
fn ipv6_loopback() -> bool {
    StdTcpListener::bind("[::1]:0").is_ok()
}

/// `None` when the port was taken before nginx bound it.
fn try_start_nginx(pki: &Pki, upstream: &Upstream, tls: &NginxTls) -> Option<Daemon> {
    let dir = tempfile::tempdir().expect("nginx tempdir");
    let port = free_port();
    let certificate = tls.certificate.unwrap_or("server");
    let mut listen = format!("        listen 127.0.0.1:{port} ssl http2;\n");
    if ipv6_loopback() {
        listen.push_str(&format!("        listen [::1]:{port} ssl http2;\n"));
    }
    let client_auth = if tls.mtls {
        format!(
            "        ssl_client_certificate {};\n        ssl_verify_client on;\n        # Refuse in the handshake, not with nginx's HTTP 400.\n        ssl_conf_command VerifyMode Require;\n",
            pki.path("client-ca.pem").display()
        )
    } else {
        String::new()
    };
    let server = format!(
        r#"{listen}        ssl_certificate {cert};
        ssl_certificate_key {key};
{client_auth}        location / {{
            proxy_pass http://{upstream};
            proxy_set_header X-Tls-Sni "$ssl_server_name";
            proxy_set_header X-Tls-Protocol "$server_protocol";
            proxy_set_header X-Tls-Client-Verify "$ssl_client_verify";
            proxy_set_header X-Tls-Client-Subject "$ssl_client_s_dn";
        }}"#,
        cert = pki.path(&format!("{certificate}.pem")).display(),
        key = pki.path(&format!("{certificate}.key")).display(),
        upstream = upstream.addr(),
    );
    let conf = nginx_conf(dir.path(), &server);
    let mut nginx = Daemon::nginx(&conf, dir, port);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = nginx.child.try_wait() {
            let log = nginx.log();
            if log.contains("Address already in use") {
                return None;
            }
            panic!("nginx exited during startup ({status}):\n{log}");
        }
        if std::net::TcpStream::connect(nginx.addr()).is_ok() {
            return Some(nginx);
        }
        assert!(
            Instant::now() < deadline,
            "nginx did not listen within 20s:\n{}",
            nginx.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// The gateway
// ---------------------------------------------------------------------------

/// One public route to `addr` with `tls` as its `upstream.tls` block.
fn config(addr: &str, tls: &str) -> String {
    let backend = format!(
        "  - name: backend\n    upstream:\n      addrs: [\"{addr}\"]\n      tls: {tls}\n    auth: {{ mode: off }}"
    );
    Config::new().default_server().routes(&backend)
}

/// A gateway in front of `nginx`, by the name `localhost`, with `tls` as
/// the route's `upstream.tls` block.
async fn gateway_to(nginx: &Daemon, tls: &str, upstream: &Upstream) -> Gateway {
    let addr = format!("localhost:{}", nginx.port());
    Gateway::start(&config(&addr, tls), upstream).await
}

/// `tls` with `{PKI}` standing for the certificates' directory.
fn tls_block(pki: &Pki, tls: &str) -> String {
    tls.replace("{PKI}", &pki.dir().display().to_string())
}

/// What a request got, and the gateway's log once its access line is in.
struct Outcome {
    status: u16,
    body: String,
    access_line: String,
}

async fn request(gateway: &Gateway, path: &str) -> Outcome {
    let response = gateway.get(path, None).await;
    let status = response.status().as_u16();
    let request_id = response
        .headers()
        .get("x-request-id")
        .expect("every answer has an X-Request-Id")
        .to_str()
        .expect("ASCII request id")
        .to_string();
    let body = response.text().await.expect("body");
    let access_line = gateway.access_line(&request_id).await;
    Outcome {
        status,
        body,
        access_line,
    }
}

/// No private key, nor a piece of one, in what the gateway wrote.
fn assert_no_key_material(log: &str, pki: &Pki) {
    assert!(!log.contains("PRIVATE KEY"), "{log}");
    for key in ["client.key", "server.key"] {
        let text = std::fs::read_to_string(pki.path(key)).expect("key file");
        for line in text.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!log.contains(line), "the log holds a line of {key}:\n{log}");
        }
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_verified_upstream_gets_the_request_with_its_host_name_as_sni() {
    let (pki, upstream, nginx) = behind_nginx(NginxTls::default());
    let tls = tls_block(&pki, r#"{ ca_file: "{PKI}/ca.pem" }"#);
    let gateway = gateway_to(&nginx, &tls, &upstream).await;

    let outcome = request(&gateway, "/hello?x=1").await;
    assert_eq!(outcome.status, 200, "{}\n{}", outcome.body, nginx.log());
    let seen = upstream.last();
    assert_eq!(seen.path, "/hello?x=1");
    assert_eq!(seen.header("x-tls-sni"), Some("localhost"));
    assert_eq!(seen.header("x-tls-protocol"), Some("HTTP/1.1"));
    assert!(
        outcome.access_line.contains("status=200"),
        "{}",
        outcome.access_line
    );
}

#[tokio::test]
async fn an_ip_address_is_verified_without_sni_unless_sni_is_set() {
    let (pki, upstream, nginx) = behind_nginx(NginxTls::default());
    let addr = nginx.addr().to_string();

    let tls = tls_block(&pki, r#"{ ca_file: "{PKI}/ca.pem" }"#);
    let gateway = Gateway::start(&config(&addr, &tls), &upstream).await;
    let outcome = request(&gateway, "/by-ip").await;
    assert_eq!(outcome.status, 200, "{}", outcome.body);
    // The certificate was checked against 127.0.0.1, and no SNI was sent
    // (nginx leaves out a header whose value is empty).
    assert_eq!(upstream.last().header("x-tls-sni"), None);
    drop(gateway);

    let tls = tls_block(&pki, r#"{ ca_file: "{PKI}/ca.pem", sni: api.test }"#);
    let gateway = Gateway::start(&config(&addr, &tls), &upstream).await;
    let outcome = request(&gateway, "/by-name").await;
    assert_eq!(outcome.status, 200, "{}", outcome.body);
    assert_eq!(upstream.last().header("x-tls-sni"), Some("api.test"));
}

#[tokio::test]
async fn an_upstream_signed_by_another_ca_gets_nothing_and_the_client_a_502() {
    let (pki, upstream, nginx) = behind_nginx(NginxTls::default());
    let tls = tls_block(&pki, r#"{ ca_file: "{PKI}/other-ca.pem" }"#);
    let gateway = gateway_to(&nginx, &tls, &upstream).await;

    let outcome = request(&gateway, "/wrong-ca").await;
    assert_eq!(outcome.status, 502, "{}", outcome.body);
    let body: serde_json::Value = serde_json::from_str(&outcome.body).expect("JSON body");
    assert_eq!(body["error"], "bad_gateway");
    assert_eq!(upstream.count(), 0, "the upstream must see nothing");
    assert!(
        outcome
            .access_line
            .contains("error=\"upstream_tls_failed\""),
        "{}",
        outcome.access_line
    );
    let line = gateway
        .log_line("TLS handshake with the upstream failed")
        .await;
    for field in [
        "reason=certificate verify failed: unknown issuer",
        "route=backend",
        "server_name=localhost",
    ] {
        assert!(line.contains(field), "{field} not in {line}");
    }
    // The client's body says nothing about certificates.
    assert!(!outcome.body.contains("certificate"), "{}", outcome.body);
    assert_no_key_material(&gateway.log(), &pki);
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    let (pki, upstream, nginx) = behind_nginx(NginxTls::default());
    let tls = tls_block(&pki, r#"{ ca_file: "{PKI}/ca.pem", sni: billing.test }"#);
    let gateway = Gateway::start(&config(&nginx.addr().to_string(), &tls), &upstream).await;

    let outcome = request(&gateway, "/other-name").await;
    assert_eq!(outcome.status, 502, "{}", outcome.body);
    assert_eq!(upstream.count(), 0);
    let log = gateway
        .wait_for_log(|log| log.contains("TLS handshake with the upstream failed"))
        .await;
    assert!(
        log.contains("certificate verify failed: certificate not valid for name \"billing.test\""),
        "{log}"
    );
}

#[tokio::test]
async fn mtls_presents_the_configured_client_certificate() {
    let (pki, upstream, nginx) = behind_nginx(NginxTls::MTLS);
    let tls = tls_block(
        &pki,
        r#"{ ca_file: "{PKI}/ca.pem", client_cert: "{PKI}/client.pem", client_key: "{PKI}/client.key" }"#,
    );
    let gateway = gateway_to(&nginx, &tls, &upstream).await;

    let outcome = request(&gateway, "/mtls").await;
    assert_eq!(outcome.status, 200, "{}\n{}", outcome.body, nginx.log());
    let seen = upstream.last();
    assert_eq!(seen.header("x-tls-client-verify"), Some("SUCCESS"));
    assert_eq!(seen.header("x-tls-client-subject"), Some("CN=client"));
    assert_no_key_material(&gateway.log(), &pki);
}

#[tokio::test]
async fn an_upstream_requiring_a_client_certificate_refuses_a_gateway_without_one() {
    let (pki, upstream, nginx) = behind_nginx(NginxTls::MTLS);
    let tls = tls_block(&pki, r#"{ ca_file: "{PKI}/ca.pem" }"#);
    let gateway = gateway_to(&nginx, &tls, &upstream).await;

    let outcome = request(&gateway, "/no-client-cert").await;
    assert_eq!(outcome.status, 502, "{}\n{}", outcome.body, gateway.log());
    assert_eq!(upstream.count(), 0);
    let expected = "reason=the upstream refused the handshake: handshake failure alert; no client certificate was presented (upstream.tls.client_cert)";
    let log = gateway.wait_for_log(|log| log.contains(expected)).await;
    assert!(log.contains(expected), "{log}");
}

#[tokio::test]
async fn verify_false_reaches_a_self_signed_upstream_and_is_warned_about() {
    let pki = pki();
    pki.self_signed("self-signed", "DNS:localhost,IP:127.0.0.1");
    let upstream = Upstream::start();
    let nginx = start_nginx(
        &pki,
        &upstream,
        NginxTls {
            certificate: Some("self-signed"),
            ..NginxTls::default()
        },
    );
    let gateway = gateway_to(&nginx, "{ verify: false }", &upstream).await;

    let outcome = request(&gateway, "/unverified").await;
    assert_eq!(outcome.status, 200, "{}", outcome.body);
    assert_eq!(upstream.count(), 1);
    let log = gateway.log();
    let warning = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("upstream.tls.verify is false"))
        .unwrap_or_else(|| panic!("no startup warning for verify: false:\n{log}"));
    assert!(warning.contains("route \"backend\""), "{warning}");

    // With verification on (system roots), the same upstream is refused.
    let verified = gateway_to(&nginx, "{}", &upstream).await;
    assert_eq!(request(&verified, "/verified").await.status, 502);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn h2_is_spoken_to_the_upstream_only_when_asked() {
    let (pki, upstream, nginx) = behind_nginx(NginxTls::default());

    let tls = tls_block(&pki, r#"{ ca_file: "{PKI}/ca.pem", h2: true }"#);
    let gateway = gateway_to(&nginx, &tls, &upstream).await;
    for path in ["/h2/one", "/h2/two"] {
        let outcome = request(&gateway, path).await;
        assert_eq!(outcome.status, 200, "{}", outcome.body);
        let seen = upstream.last();
        assert_eq!(seen.path, path);
        assert_eq!(seen.header("x-tls-protocol"), Some("HTTP/2.0"));
    }
    drop(gateway);

    let tls = tls_block(&pki, r#"{ ca_file: "{PKI}/ca.pem", h2: false }"#);
    let gateway = gateway_to(&nginx, &tls, &upstream).await;
    assert_eq!(request(&gateway, "/h1").await.status, 200);
    assert_eq!(upstream.last().header("x-tls-protocol"), Some("HTTP/1.1"));
}

#[tokio::test]
async fn a_reload_reads_the_ca_file_again_and_leaves_pooled_connections_behind() {
    let (pki, upstream, nginx) = behind_nginx(NginxTls::default());
    let trusted = pki.path("trusted.pem");
    std::fs::copy(pki.path("ca.pem"), &trusted).expect("copy CA");
    let tls = tls_block(&pki, r#"{ ca_file: "{PKI}/trusted.pem" }"#);
    let gateway = gateway_to(&nginx, &tls, &upstream).await;
    // A kept-alive connection, verified against the first CA, is now pooled.
    assert_eq!(request(&gateway, "/before").await.status, 200);

    // The CA file is replaced by one that did not sign the upstream.
    std::fs::copy(pki.path("other-ca.pem"), &trusted).expect("replace CA");
    let (status, body) = gateway.reload().await;
    assert_eq!(status, 200, "{body}");

    let outcome = request(&gateway, "/after").await;
    assert_eq!(outcome.status, 502, "{}", outcome.body);
    assert_eq!(upstream.count(), 1, "only the request before the reload");
}

#[tokio::test]
async fn enabled_false_keeps_the_block_and_speaks_clear_text() {
    let (upstream, gateway) = start(&config("{UPSTREAM}", "{ enabled: false, h2: true }")).await;
    let outcome = request(&gateway, "/plain").await;
    assert_eq!(outcome.status, 200, "{}", outcome.body);
    assert_eq!(upstream.last().path, "/plain");
}

#[tokio::test]
async fn a_reload_presents_a_rotated_client_certificate() {
    let pki = pki();
    // A client certificate from a CA nginx does not trust.
    pki.leaf("stranger", "other-ca", "DNS:jwtgate.test", "clientAuth");
    let upstream = Upstream::start();
    let nginx = start_nginx(&pki, &upstream, NginxTls::MTLS);
    let (cert, key) = (pki.path("current.pem"), pki.path("current.key"));
    std::fs::copy(pki.path("stranger.pem"), &cert).expect("copy certificate");
    std::fs::copy(pki.path("stranger.key"), &key).expect("copy key");
    let tls = tls_block(
        &pki,
        r#"{ ca_file: "{PKI}/ca.pem", client_cert: "{PKI}/current.pem", client_key: "{PKI}/current.key" }"#,
    );
    let gateway = gateway_to(&nginx, &tls, &upstream).await;
    // nginx completes the handshake with a certificate it can't verify and
    // answers 400 itself; jwtgate passes that answer on.
    assert_eq!(request(&gateway, "/stranger").await.status, 400);
    assert_eq!(upstream.count(), 0);

    std::fs::copy(pki.path("client.pem"), &cert).expect("rotate certificate");
    std::fs::copy(pki.path("client.key"), &key).expect("rotate key");
    let (status, body) = gateway.reload().await;
    assert_eq!(status, 200, "{body}");

    let outcome = request(&gateway, "/rotated").await;
    assert_eq!(outcome.status, 200, "{}", outcome.body);
    assert_eq!(
        upstream.last().header("x-tls-client-subject"),
        Some("CN=client")
    );
}

// ---------------------------------------------------------------------------
// Config errors, through `jwtgate check`
// ---------------------------------------------------------------------------

#[test]
fn check_refuses_unusable_tls_files_naming_the_field_and_file() {
    let pki = pki();
    pki.leaf("other-client", "client-ca", "DNS:other.test", "clientAuth");
    std::fs::write(pki.path("garbage.pem"), "not a certificate\n").expect("write");
    let cases = [
        (
            r#"{ ca_file: "{PKI}/missing.pem" }"#,
            "upstream.tls.ca_file: cannot read",
        ),
        (
            r#"{ ca_file: "{PKI}/garbage.pem" }"#,
            "upstream.tls.ca_file: {PKI}/garbage.pem holds no CERTIFICATE block",
        ),
        (
            r#"{ ca_file: "{PKI}/ca.key" }"#,
            "upstream.tls.ca_file: {PKI}/ca.key holds no CERTIFICATE block",
        ),
        (
            r#"{ client_cert: "{PKI}/client.pem" }"#,
            "upstream.tls.client_cert and upstream.tls.client_key go together",
        ),
        (
            r#"{ client_cert: "{PKI}/client.pem", client_key: "{PKI}/client.pem" }"#,
            "upstream.tls.client_key: {PKI}/client.pem holds no private key",
        ),
        (
            r#"{ client_cert: "{PKI}/other-client.pem", client_key: "{PKI}/client.key" }"#,
            "upstream.tls.client_key: {PKI}/client.key does not match the certificate in upstream.tls.client_cert {PKI}/other-client.pem",
        ),
        (
            r#"{ sni: "not a name" }"#,
            "upstream.tls.sni: \"not a name\" is not a DNS name or IP address",
        ),
        (r#"{ versify: true }"#, "unknown field"),
    ];
    for (tls, expected) in cases {
        let config = config("127.0.0.1:8443", &tls_block(&pki, tls));
        let out = check(&config);
        let (ok, output) = (out.success, out.text());
        let expected = tls_block(&pki, expected);
        assert!(!ok, "check accepted {tls}:\n{output}");
        assert!(
            output.contains(&expected),
            "{tls}: expected {expected:?} in:\n{output}"
        );
        if !expected.contains("unknown field") {
            assert!(output.contains("route \"backend\""), "{output}");
        }
        assert_no_key_material(&output, &pki);
    }

    let tls = tls_block(
        &pki,
        r#"{ ca_file: "{PKI}/ca.pem", client_cert: "{PKI}/client.pem", client_key: "{PKI}/client.key", h2: true }"#,
    );
    let out = check(&config("127.0.0.1:8443", &tls));
    assert!(out.success, "{}", out.text());
    let out = check(&config("127.0.0.1:8443", "{ verify: false }"));
    assert!(out.success, "{}", out.text());
    assert!(
        out.text().contains("upstream.tls.verify is false"),
        "{}",
        out.text()
    );
}

/// `jwtgate_upstream_healthy` of `route`'s endpoint `addr`, once it reads
/// `expected`; panics with the metrics after ten seconds.
async fn wait_for_health(gateway: &Gateway, addr: &str, expected: f64) {
    poll(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let text = gateway.metrics().await;
            let value = text
                .lines()
                .filter_map(parse_sample)
                .find(|(name, labels, _)| {
                    name == "jwtgate_upstream_healthy"
                        && labels.get("addr").map(String::as_str) == Some(addr)
                })
                .map(|(_, _, value)| value);
            if value == Some(expected) {
                return Ok(());
            }
            Err(format!(
                "{addr} health is {value:?}, expected {expected}:\n{}",
                relevant_lines(&text)
            ))
        },
    )
    .await
}

#[tokio::test]
async fn an_http_health_check_of_a_tls_upstream_connects_as_the_proxy_does() {
    let (pki, upstream, nginx) = behind_nginx(NginxTls::default());
    let checked = |ca: &str| {
        let tls = format!("{{ ca_file: \"{}/{ca}.pem\" }}", pki.dir().display());
        let backend = format!(
            "  - name: backend\n    upstream:\n      addrs: [\"localhost:{}\"]\n      tls: {tls}\n      health_check: {{ protocol: http, path: /healthz, interval: 100ms, unhealthy_threshold: 1 }}\n    auth: {{ mode: off }}",
            nginx.port()
        );
        Config::new().default_server().routes(&backend)
    };
    let endpoint = format!("127.0.0.1:{}", nginx.port());

    let gateway = Gateway::start(&checked("ca"), &upstream).await;
    let check = poll(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let requests = upstream.requests();
            match requests.into_iter().find(|r| r.path == "/healthz") {
                Some(check) => Ok(check),
                None => Err(format!(
                    "no health check went through nginx:\n{}",
                    gateway.log()
                )),
            }
        },
    )
    .await;
    wait_for_health(&gateway, &endpoint, 1.0).await;
    // Over TLS, with the configured host as SNI (a clear-text check would
    // get nginx's 400 and fail).
    assert_eq!(check.header("x-tls-sni"), Some("localhost"));
    drop(gateway);

    // Checked against a CA that did not sign the upstream: the handshake
    // fails, so does the check.
    let gateway = Gateway::start(&checked("other-ca"), &upstream).await;
    wait_for_health(&gateway, &endpoint, 0.0).await;
}
