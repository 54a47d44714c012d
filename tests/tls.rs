//! The TLS listener against real TLS peers on loopback: curl over HTTP/1.1
//! and HTTP/2, `openssl s_client` for protocol versions, certificates chosen
//! by SNI, the clear-text listener's redirect and h2c, routes that require
//! HTTPS, HSTS, and certificates replaced under load (files rewritten, and a
//! Kubernetes Secret's `..data` symlink swap) with no failed request.
//!
//! Every certificate is made at test time with `openssl`: a test CA and
//! leaves for the test's host names, in the test's own temporary directory.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{CA, Cert, Config, Gateway, ISS, Upstream, check, free_port, raw_request};
use serde_json::Value;

const EXPIRY: &str = "jwtgate_tls_certificate_expiry_timestamp_seconds";

// ---------------------------------------------------------------------------
// A test PKI made with openssl
// ---------------------------------------------------------------------------

/// Runs a tool the tests need; a missing tool fails the test, loudly.
fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {program} ({e}); scripts/test installs it (Debian package {program})"
            )
        })
}

/// The CA of every test here: `ca.crt` and `ca.key`.
const TEST_CA: Cert = Cert {
    key: "ca.key",
    cert: "ca.crt",
    cn: "jwtgate test CA",
    days: 30,
    extensions: CA,
};

/// A CA and the leaf certificates it signs, in a temporary directory.
struct Pki(common::Pki);

/// A leaf certificate's files.
#[derive(Clone)]
struct Leaf {
    cert: PathBuf,
    key: PathBuf,
    serial: String,
}

impl Pki {
    fn new() -> Self {
        let pki = common::Pki::new();
        pki.self_signed(&TEST_CA);
        Self(pki)
    }

    fn dir(&self) -> String {
        self.0.dir().display().to_string()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path(name)
    }

    fn ca(&self) -> PathBuf {
        self.path("ca.crt")
    }

    fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.ca()).expect("read the CA")
    }

    /// `name.crt` and `name.key`: a P-256 leaf for `dns_names`, valid for
    /// `days`, with serial number `serial` (hex).
    fn leaf(&self, name: &str, dns_names: &[&str], days: u32, serial: &str) -> Leaf {
        let sans: Vec<String> = dns_names.iter().map(|n| format!("DNS:{n}")).collect();
        let san = format!("subjectAltName={}", sans.join(","));
        let (key, cert) = (format!("{name}.key"), format!("{name}.crt"));
        let extensions = [
            san.as_str(),
            "basicConstraints=CA:FALSE",
            "keyUsage=digitalSignature",
            "extendedKeyUsage=serverAuth",
        ];
        let leaf = Cert {
            key: &key,
            cert: &cert,
            cn: dns_names[0],
            days,
            extensions: &extensions,
        };
        self.0.signed(&leaf, &TEST_CA, Some(serial));
        Leaf {
            cert: self.path(&cert),
            key: self.path(&key),
            serial: serial.to_string(),
        }
    }
}

/// The leaf's notAfter as Unix seconds, as openssl reads it.
fn not_after(cert: &Path) -> i64 {
    let output = run(
        "openssl",
        &[
            "x509",
            "-noout",
            "-enddate",
            "-dateopt",
            "iso_8601",
            "-in",
            cert.to_str().unwrap(),
        ],
    );
    let text = String::from_utf8(output.stdout).expect("utf-8");
    // notAfter=2026-12-29 11:06:35Z
    let date = text
        .trim()
        .trim_start_matches("notAfter=")
        .replace(' ', "T");
    humantime::parse_rfc3339(&date)
        .unwrap_or_else(|e| panic!("{text:?}: {e}"))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

// ---------------------------------------------------------------------------
// The gateway with a TLS listener
// ---------------------------------------------------------------------------

/// A gateway whose config has `{HTTPS}` (the TLS listener's port) and
/// `{CA_DIR}` filled in besides what [`Gateway::start`] fills.
async fn start(template: &str, upstream: &Upstream, pki: &Pki) -> (Gateway, u16) {
    start_with_run_args(template, upstream, pki, &[]).await
}

async fn start_with_run_args(
    template: &str,
    upstream: &Upstream,
    pki: &Pki,
    run_args: &[&str],
) -> (Gateway, u16) {
    start_with_env(template, upstream, pki, run_args, &[]).await
}

/// [`start_with_run_args`] with extra environment variables.
async fn start_with_env(
    template: &str,
    upstream: &Upstream,
    pki: &Pki,
    run_args: &[&str],
    env: &[(&str, &str)],
) -> (Gateway, u16) {
    let https = free_port();
    let config = template
        .replace("{HTTPS}", &https.to_string())
        .replace("{PKI}", &pki.dir());
    let gateway = Gateway::start_full(&config, upstream, &[], run_args, env).await;
    wait_for_port(https).await;
    (gateway, https)
}

/// The proxy service opens its listeners together, but the harness only
/// waits for the clear-text one.
async fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "port {port} never opened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two hosts with their own certificate, a wildcard on the second, a public
/// route and one that needs a token.
fn two_hosts() -> String {
    two_hosts_config().routes(PRIVATE_AND_PUBLIC)
}

/// [`two_hosts`] before its routes, for a test to add settings to.
fn two_hosts_config() -> Config {
    Config::main(ISS).default_server().https(
        &[
            r#"{ hosts: [a.test], cert: "{PKI}/a.crt", key: "{PKI}/a.key" }"#,
            r#"{ hosts: [b.test, "*.b.test"], cert: "{PKI}/b.crt", key: "{PKI}/b.key" }"#,
        ],
        &[],
    )
}

/// [`two_hosts`] with `settings` on its clear-text listener.
fn two_hosts_with_http(settings: &str) -> String {
    two_hosts().replace(
        "  http: \"127.0.0.1:{PROXY}\"\n",
        &format!("  http: {{ addr: \"127.0.0.1:{{PROXY}}\", {settings} }}\n"),
    )
}

const PRIVATE_AND_PUBLIC: &str = r#"
  - name: private
    match: { path_prefix: /private }
    upstream: { addrs: ["{UPSTREAM}"] }
  - name: public
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { mode: off }
"#;

fn two_host_pki() -> (Pki, Leaf, Leaf) {
    let pki = Pki::new();
    let a = pki.leaf("a", &["a.test"], 90, "0a01");
    let b = pki.leaf("b", &["b.test", "*.b.test"], 90, "0b01");
    (pki, a, b)
}

/// A gateway running `config` (made of [`two_hosts`]) with the two hosts'
/// certificates, in front of a new recording upstream; and the TLS port.
async fn start_two_hosts(config: &str) -> (Pki, Upstream, Gateway, u16) {
    let (pki, _, _) = two_host_pki();
    let upstream = Upstream::start();
    let (gateway, https) = start(config, &upstream, &pki).await;
    (pki, upstream, gateway, https)
}

/// curl through the TLS listener, with the test CA and `host` resolved to
/// loopback; returns (status, HTTP version, response headers).
fn curl(pki: &Pki, host: &str, port: u16, path: &str, extra: &[&str]) -> (u16, String, String) {
    let url = format!("https://{host}:{port}{path}");
    let resolve = format!("{host}:{port}:127.0.0.1");
    let ca = pki.ca();
    let mut args = vec![
        "--silent",
        "--show-error",
        "--cacert",
        ca.to_str().unwrap(),
        "--resolve",
        &resolve,
        "--dump-header",
        "-",
        "--output",
        "/dev/null",
        "--write-out",
        "\n%{http_code} %{http_version}",
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    let output = run("curl", &args);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "curl {url} failed: {}{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (headers, last) = text.trim_end().rsplit_once('\n').expect("write-out line");
    let (status, version) = last.split_once(' ').expect("status and version");
    (
        status.parse().expect("status"),
        version.to_string(),
        headers.to_ascii_lowercase(),
    )
}

/// A client that trusts only the test CA, resolves `hosts` to the TLS
/// listener and makes a new connection per request with a full handshake:
/// no session resumption, which would skip choosing a certificate.
fn tls_client(pki: &Pki, hosts: &[&str], port: u16) -> reqwest::Client {
    let tls = rustls_config(pki);
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .tls_backend_preconfigured(tls)
        .tls_info(true)
        .pool_max_idle_per_host(0);
    for host in hosts {
        builder = builder.resolve(host, SocketAddr::from(([127, 0, 0, 1], port)));
    }
    builder.build().expect("TLS client")
}

/// A rustls client trusting only the test CA, without session resumption,
/// offering the key exchange `groups` in this order (aws-lc-rs's defaults:
/// the post-quantum hybrid first, as browsers do).
fn rustls_config_with(
    pki: &Pki,
    groups: &[&'static dyn rustls::crypto::SupportedKxGroup],
) -> rustls::ClientConfig {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_slice(&pki.ca_pem()).expect("CA PEM");
    roots.add(ca).expect("CA certificate");
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = groups.to_vec();
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.resumption = rustls::client::Resumption::disabled();
    tls
}

fn rustls_config(pki: &Pki) -> rustls::ClientConfig {
    rustls_config_with(pki, rustls::crypto::aws_lc_rs::DEFAULT_KX_GROUPS)
}

/// The key exchange group of a full handshake with `host` on the TLS
/// listener at `port`, by a client offering `groups` in this order.
fn negotiated_group(
    pki: &Pki,
    host: &str,
    port: u16,
    groups: &[&'static dyn rustls::crypto::SupportedKxGroup],
) -> rustls::NamedGroup {
    let config = Arc::new(rustls_config_with(pki, groups));
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).expect("a server name");
    let mut connection = rustls::ClientConnection::new(config, name).expect("a client");
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("a read timeout");
    while connection.is_handshaking() {
        connection.complete_io(&mut tcp).expect("the handshake");
    }
    connection
        .negotiated_key_exchange_group()
        .expect("a key exchange group")
        .name()
}

/// The serial number (hex, lower case) of the certificate the server
/// presented.
fn served_serial(response: &reqwest::Response) -> String {
    let info = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .expect("tls_info is on");
    let der = info.peer_certificate().expect("a server certificate");
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("a certificate");
    cert.raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .trim_start_matches('0')
        .to_string()
}

fn serial_hex(serial: &str) -> String {
    serial.trim_start_matches('0').to_string()
}

// ---------------------------------------------------------------------------
// HTTP/1.1 and HTTP/2 over TLS, versions, SNI
// ---------------------------------------------------------------------------

/// `server.keepalive_timeout` holds over TLS too, where Pingora's HTTP/1
/// parser waits for the next request itself: a kept-alive connection is
/// closed after 1 s, well before the 60 s default.
#[tokio::test]
async fn an_idle_tls_http1_connection_is_closed_after_server_keepalive_timeout() {
    let (pki, _, _) = two_host_pki();
    let upstream = Upstream::start();
    let config = two_hosts_config()
        .server("keepalive_timeout: 1s")
        .routes(PRIVATE_AND_PUBLIC);
    let (_gateway, https) = start(&config, &upstream, &pki).await;
    let (head, closed) = tokio::task::spawn_blocking(move || {
        let config = Arc::new(rustls_config(&pki));
        let name = rustls::pki_types::ServerName::try_from("a.test").expect("a server name");
        let mut connection = rustls::ClientConnection::new(config, name).expect("a client");
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", https)).expect("connect");
        // Past the timeout under test, well short of the default.
        tcp.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("a read timeout");
        let mut tls = rustls::Stream::new(&mut connection, &mut tcp);
        std::io::Write::write_all(&mut tls, b"GET /kept HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .expect("send the request");
        let mut received = Vec::new();
        let mut chunk = [0u8; 4096];
        let closed = loop {
            match std::io::Read::read(&mut tls, &mut chunk) {
                Ok(0) => break true,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
                Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => break true,
                Err(_) => break false,
            }
        };
        (String::from_utf8_lossy(&received).into_owned(), closed)
    })
    .await
    .expect("the client ran");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "kept alive: {head}"
    );
    assert!(closed, "the gateway closes the idle connection: {head}");
    assert_eq!(upstream.last().path, "/kept");
}

/// The listener's crypto is aws-lc-rs: a client offering the post-quantum
/// hybrid key exchange beside X25519, with a key share for each as current
/// browsers send them, gets the hybrid (rustls's `ring` provider, Pingora's
/// default, has no ML-KEM and would take X25519), and one offering only
/// classical groups still connects.
#[tokio::test]
async fn post_quantum_key_exchange_is_preferred_when_offered() {
    use rustls::crypto::aws_lc_rs::kx_group::{SECP256R1, X25519, X25519MLKEM768};
    let (pki, _upstream, _gateway, https) = start_two_hosts(&two_hosts()).await;
    let groups = tokio::task::spawn_blocking(move || {
        [
            negotiated_group(&pki, "a.test", https, &[X25519MLKEM768, X25519]),
            negotiated_group(&pki, "a.test", https, &[X25519, SECP256R1]),
        ]
    })
    .await
    .expect("the handshakes ran");
    assert_eq!(
        groups,
        [
            rustls::NamedGroup::X25519MLKEM768,
            rustls::NamedGroup::X25519
        ]
    );
}

#[tokio::test]
async fn curl_gets_http2_and_http1_over_tls_and_the_upstream_hears_https() {
    let (pki, upstream, gateway, https) = start_two_hosts(&two_hosts()).await;

    let (status, version, _) = curl(&pki, "a.test", https, "/h2", &[]);
    assert_eq!((status, version.as_str()), (200, "2"), "ALPN h2 by default");
    assert_eq!(upstream.last().path, "/h2");
    assert_eq!(upstream.last().header("x-forwarded-proto"), Some("https"));

    let (status, version, _) = curl(&pki, "a.test", https, "/h1", &["--http1.1"]);
    assert_eq!((status, version.as_str()), (200, "1.1"));
    assert_eq!(upstream.last().header("x-forwarded-proto"), Some("https"));

    // The RFC 6750 challenge is the same over TLS and HTTP/2.
    let (status, _, headers) = curl(&pki, "a.test", https, "/private/x", &[]);
    assert_eq!(status, 401);
    assert!(
        headers.contains("www-authenticate: bearer realm=\"jwtgate\""),
        "{headers}"
    );

    // Clear text still says http.
    gateway.get("/plain", None).await;
    assert_eq!(upstream.last().header("x-forwarded-proto"), Some("http"));
}

#[tokio::test]
async fn h2_false_offers_only_http1_in_alpn() {
    let config = two_hosts().replace(
        "    addr: \"127.0.0.1:{HTTPS}\"\n",
        "    addr: \"127.0.0.1:{HTTPS}\"\n    h2: false\n",
    );
    let (pki, _upstream, _gateway, https) = start_two_hosts(&config).await;
    let (status, version, _) = curl(&pki, "a.test", https, "/", &["--http2"]);
    assert_eq!((status, version.as_str()), (200, "1.1"));
}

/// `openssl s_client` with one protocol version: the handshake's success
/// and what it printed.
fn s_client(port: u16, version: &str) -> (bool, String) {
    let output = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "a.test",
            version,
            // OpenSSL 3 will not even offer TLS 1.0/1.1 at its default
            // security level; level 0 makes the client offer them, so a
            // refusal is the server's.
            "-cipher",
            "DEFAULT@SECLEVEL=0",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("cannot run openssl; scripts/test installs it (Debian package openssl)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test]
async fn tls_1_0_and_1_1_are_refused_and_1_2_and_1_3_accepted() {
    let (_pki, _upstream, _gateway, https) = start_two_hosts(&two_hosts()).await;

    for (version, name) in [("-tls1", "TLSv1"), ("-tls1_1", "TLSv1.1")] {
        let (ok, text) = s_client(https, version);
        assert!(!ok, "{version} was accepted:\n{text}");
        // The client offered the version, and the server's alert ended it.
        assert!(text.contains(&format!("Protocol  : {name}\n")), "{text}");
        assert!(
            text.contains("alert"),
            "{version}: no alert from the server:\n{text}"
        );
        assert!(text.contains("Cipher is (NONE)"), "{text}");
    }
    for (version, name) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let (ok, text) = s_client(https, version);
        assert!(ok, "{version} was refused:\n{text}");
        assert!(text.contains(&format!("New, {name}, Cipher is")), "{text}");
    }
}

#[tokio::test]
async fn sni_picks_each_hosts_certificate_and_the_first_for_any_other_name() {
    let (pki, a, b) = two_host_pki();
    let upstream = Upstream::start();
    let (_gateway, https) = start(&two_hosts(), &upstream, &pki).await;
    let client = tls_client(&pki, &["a.test", "b.test", "x.b.test"], https);

    for (host, leaf) in [("a.test", &a), ("b.test", &b), ("x.b.test", &b)] {
        let response = client
            .get(format!("https://{host}:{https}/"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{host}: {e:?}"));
        assert_eq!(response.status(), 200, "{host}");
        assert_eq!(served_serial(&response), serial_hex(&leaf.serial), "{host}");
    }

    // No SNI (an IP address) and an unknown name: the first certificate.
    for servername in [None, Some("unknown.test"), Some("y.x.b.test")] {
        let mut args = vec![
            "s_client".to_string(),
            "-connect".into(),
            format!("127.0.0.1:{https}"),
        ];
        match servername {
            Some(name) => args.extend(["-servername".into(), name.into()]),
            None => args.push("-noservername".into()),
        }
        let output = Command::new("openssl")
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            text.contains("subject=CN = a.test"),
            "{servername:?} got another certificate:\n{text}"
        );
    }
}

// ---------------------------------------------------------------------------
// Clients that would flood the log
// ---------------------------------------------------------------------------

/// Connections of each kind in the flood test.
const FLOOD: usize = 300;

/// `openssl s_client` connecting by address and naming it in SNI, as wrk
/// and many HTTP libraries do; it completes the handshake (rustls ignores
/// the SNI and serves the first certificate), sends nothing and closes.
fn s_client_with_ip_sni(port: u16) {
    let output = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", "127.0.0.1"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("cannot run openssl; scripts/test installs it (Debian package openssl)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && text.contains("subject=CN = a.test"),
        "the handshake with an IP address as SNI failed:\n{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The start of a TLS record holding a ClientHello, then the connection
/// closed: a client dropping mid-handshake.
fn partial_client_hello(port: u16) {
    use std::io::Write as _;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
}

/// Runs `connect` `FLOOD` times, from a few threads at once.
fn flood(port: u16, connect: fn(u16)) {
    const THREADS: usize = 4;
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(move || (0..FLOOD / THREADS).for_each(|_| connect(port)));
        }
    });
}

/// The WARN and ERROR lines the gateway wrote once it was listening (the
/// test issuer's key set has keys it warns of at startup).
fn loud_lines(log: &str) -> Vec<&str> {
    log.lines()
        .skip_while(|line| !line.contains("jwtgate listening"))
        .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
        .collect()
}

#[tokio::test]
async fn clients_that_fail_tls_are_counted_and_summed_up_not_logged_each() {
    let (pki, _, _) = two_host_pki();
    let upstream = Upstream::start();
    // The debug lines shown, to see that every event was kept, only quieter.
    let env = [("RUST_LOG", "info,jwtgate::client_errors=debug")];
    let (gateway, https) = start_with_env(&two_hosts(), &upstream, &pki, &[], &env).await;
    let ignored_sni = ("jwtgate_tls_ignored_sni_total", [("reason", "ip_address")]);
    let dropped = (
        "jwtgate_tls_handshake_failures_total",
        [("reason", "peer_closed")],
    );
    // Waiting for the port was one connection closed before its handshake.
    let dropped_before = 1.0;
    gateway
        .expect_metric(dropped.0, &dropped.1, dropped_before)
        .await;
    tokio::task::spawn_blocking(move || {
        flood(https, s_client_with_ip_sni);
        flood(https, partial_client_hello);
    })
    .await
    .unwrap();
    gateway
        .expect_metric(ignored_sni.0, &ignored_sni.1, FLOOD as f64)
        .await;
    let dropped_after = dropped_before + FLOOD as f64;
    gateway
        .expect_metric(dropped.0, &dropped.1, dropped_after)
        .await;

    let log = gateway.log();
    let debug = |needle: &str| {
        log.lines()
            .filter(|line| line.contains("DEBUG jwtgate::client_errors") && line.contains(needle))
            .count()
    };
    assert_eq!(debug("Illegal SNI extension: ignoring IP address"), FLOOD);
    assert_eq!(debug("tls handshake eof"), dropped_after as usize);
    let loud = loud_lines(&log);
    // The first failure's summary at once; the rest wait for the minute.
    assert!(
        !loud.is_empty() && loud.len() <= 3,
        "{} WARN/ERROR lines:\n{}",
        loud.len(),
        loud.join("\n")
    );
    assert!(
        loud.iter()
            .all(|line| line.contains("WARN jwtgate::client_errors") && line.contains("counts=")),
        "{}",
        loud.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Clear text: redirect, h2c, https_only, HSTS
// ---------------------------------------------------------------------------

#[tokio::test]
async fn redirect_mode_answers_clear_text_with_308_to_the_same_path_over_https() {
    let config = two_hosts_with_http("mode: redirect");
    let (pki, upstream, gateway, https) = start_two_hosts(&config).await;

    let response = raw_request(
        gateway.proxy_addr(),
        "POST /orders/7?expand=items&x=%41 HTTP/1.1\r\nHost: API.b.test:8080\r\nContent-Length: 0",
    )
    .await;
    assert_eq!(response.status, 308, "{}", response.text());
    assert_eq!(
        response.header("location"),
        Some(format!("https://api.b.test:{https}/orders/7?expand=items&x=%41").as_str())
    );
    assert_eq!(response.json()["error"], "https_required");
    assert_eq!(response.header("strict-transport-security"), None);
    assert_eq!(
        upstream.count(),
        0,
        "a redirected request reached the upstream"
    );

    // No host to redirect to: refused instead.
    let response = raw_request(gateway.proxy_addr(), "GET / HTTP/1.0").await;
    assert_eq!(response.status, 403, "{}", response.text());
    assert_eq!(response.json()["error"], "https_required");
    gateway.expect_refusals("308", "https_required", 1.0).await;
    gateway.expect_refusals("403", "https_required", 1.0).await;

    // Over TLS the same request is served.
    let (status, _, _) = curl(&pki, "a.test", https, "/orders/7", &[]);
    assert_eq!(status, 200);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn off_mode_opens_no_clear_text_listener() {
    let (pki, _, _) = two_host_pki();
    let upstream = Upstream::start();
    let off = free_port();
    // The harness waits for {PROXY}: here it is the TLS listener.
    let config = two_hosts()
        .replace(
            "  http: \"127.0.0.1:{PROXY}\"\n",
            &format!("  http: {{ addr: \"127.0.0.1:{off}\", mode: off }}\n"),
        )
        .replace("127.0.0.1:{HTTPS}", "127.0.0.1:{PROXY}")
        .replace("{PKI}", &pki.dir());
    let gateway = Gateway::start(&config, &upstream).await;
    let (status, _, _) = curl(&pki, "a.test", gateway.proxy_addr().port(), "/", &[]);
    assert_eq!(status, 200);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", off)).is_err(),
        "something listens on the clear-text address"
    );
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served_only_when_turned_on() {
    let config = two_hosts_with_http("h2c: true");
    let (pki, upstream, gateway, _) = start_two_hosts(&config).await;
    let h2c = |gateway: &Gateway| {
        run(
            "curl",
            &[
                "--silent",
                "--http2-prior-knowledge",
                "--output",
                "/dev/null",
                "--write-out",
                "%{http_code} %{http_version}",
                &gateway.url("/grpc.Service/Method"),
            ],
        )
    };
    let output = h2c(&gateway);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "200 2");
    assert_eq!(upstream.last().path, "/grpc.Service/Method");
    assert_eq!(upstream.last().header("x-forwarded-proto"), Some("http"));
    // HTTP/1 clients are still served on the same listener.
    assert_eq!(gateway.get("/h1", None).await.status(), 200);

    let upstream = Upstream::start();
    let (gateway, _) = start(&two_hosts(), &upstream, &pki).await;
    let output = h2c(&gateway);
    assert_ne!(
        String::from_utf8_lossy(&output.stdout),
        "200 2",
        "h2c answered without h2c: true"
    );
}

fn https_only() -> String {
    Config::new()
        .default_server()
        .https(
            &[r#"{ hosts: [a.test], cert: "{PKI}/a.crt", key: "{PKI}/a.key" }"#],
            &[
                "hsts: { max_age: 180d, include_subdomains: true }",
                // Clients come in through 443 (a load balancer's port).
                "redirect_port: 443",
            ],
        )
        .routes(HTTPS_ONLY_ROUTES)
}

const HTTPS_ONLY_ROUTES: &str = r#"
  - name: login
    match: { path_prefix: /login, https_only: redirect }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { mode: off }
  - name: api
    match: { path_prefix: /api, https_only: forbid }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { mode: off }
    cors: { allowed_origins: ["https://app.test"] }
  - name: public
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { mode: off }
"#;

#[tokio::test]
async fn https_only_routes_redirect_or_forbid_clear_text_and_serve_tls() {
    let pki = Pki::new();
    pki.leaf("a", &["a.test"], 90, "0a02");
    let upstream = Upstream::start();
    let (gateway, https) = start(&https_only(), &upstream, &pki).await;

    let response = raw_request(
        gateway.proxy_addr(),
        "GET /login?next=%2Fhome HTTP/1.1\r\nHost: a.test",
    )
    .await;
    assert_eq!(response.status, 308);
    assert_eq!(
        response.header("location"),
        Some("https://a.test/login?next=%2Fhome")
    );

    let response = raw_request(gateway.proxy_addr(), "GET /api/x HTTP/1.1\r\nHost: a.test").await;
    assert_eq!(response.status, 403);
    let body: Value = response.json();
    assert_eq!(body["error"], "https_required");
    assert!(body["request_id"].is_string());
    // A preflight for a forbidden route is refused too, not answered.
    let response = raw_request(
        gateway.proxy_addr(),
        "OPTIONS /api/x HTTP/1.1\r\nHost: a.test\r\nOrigin: https://app.test\r\nAccess-Control-Request-Method: GET",
    )
    .await;
    assert_eq!(response.status, 403);
    assert_eq!(
        upstream.count(),
        0,
        "clear text reached an https_only route"
    );

    // Other routes are served in clear text, without HSTS (RFC 6797 §7.2).
    let response = raw_request(gateway.proxy_addr(), "GET /other HTTP/1.1\r\nHost: a.test").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("strict-transport-security"), None);

    // Over TLS: through, with HSTS on upstream answers and on jwtgate's own.
    for path in ["/login", "/api/x"] {
        let (status, _, headers) = curl(&pki, "a.test", https, path, &[]);
        assert_eq!(status, 200, "{path}");
        assert!(
            headers.contains("strict-transport-security: max-age=15552000; includesubdomains"),
            "{path}: {headers}"
        );
        assert_eq!(upstream.last().header("x-forwarded-proto"), Some("https"));
    }
    assert_eq!(
        upstream.count(),
        3,
        "/other, then /login and /api/x over TLS"
    );
    // jwtgate's own answers carry it too: an encoded slash is refused.
    let (status, _, headers) = curl(&pki, "a.test", https, "/api/a%2Fb", &[]);
    assert_eq!(status, 400);
    assert!(headers.contains("strict-transport-security"), "{headers}");

    // The access log names why.
    let log = gateway
        .wait_for_log(|log| log.contains("reason=\"https_required\""))
        .await;
    assert!(log.contains("reason=\"https_required\""), "{log}");
}

// ---------------------------------------------------------------------------
// Certificates reloaded
// ---------------------------------------------------------------------------

/// The serial of the certificate a new connection to `a.test` gets.
async fn current_serial(client: &reqwest::Client, https: u16) -> String {
    let response = client
        .get(format!("https://a.test:{https}/serial"))
        .send()
        .await
        .expect("GET over TLS");
    served_serial(&response)
}

/// Requests, each on a new connection (a new handshake), until `stop` is
/// set and `after_stop` more have been made, or `max` in all. Returns
/// (requests, failures as text, requests made after `stop`).
fn load(
    client: reqwest::Client,
    https: u16,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<(usize, Vec<String>, usize)> {
    const MAX: usize = 2_000;
    const AFTER_STOP: usize = 50;
    tokio::spawn(async move {
        let mut failures = Vec::new();
        let mut after = 0;
        let mut n = 0;
        while n < MAX && after < AFTER_STOP {
            if stop.load(Ordering::SeqCst) {
                after += 1;
            }
            n += 1;
            match client
                .get(format!("https://a.test:{https}/load/{n}"))
                .send()
                .await
            {
                Ok(response) if response.status() == 200 => {}
                Ok(response) => failures.push(format!("request {n}: {}", response.status())),
                Err(e) => failures.push(format!("request {n}: {e:?}")),
            }
            done.fetch_add(1, Ordering::SeqCst);
        }
        (n, failures, after)
    })
}

async fn wait_for_requests(done: &AtomicUsize, at_least: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while done.load(Ordering::SeqCst) < at_least {
        assert!(Instant::now() < deadline, "the load made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn one_host() -> String {
    Config::new()
        .default_server()
        .https(
            &[r#"{ hosts: [a.test], cert: "{PKI}/live/tls.crt", key: "{PKI}/live/tls.key" }"#],
            &[],
        )
        .routes(PUBLIC)
}

const PUBLIC: &str = r#"
  - name: public
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { mode: off }
"#;

/// Puts `leaf` in place as `live/tls.crt` and `live/tls.key`, each by a
/// rename, key first: a reload between the two reads a mismatched pair,
/// which it must refuse while the old pair keeps serving.
fn install(pki: &Pki, leaf: &Leaf) {
    let live = pki.path("live");
    std::fs::create_dir_all(&live).expect("live dir");
    for (from, name) in [(&leaf.key, "tls.key"), (&leaf.cert, "tls.crt")] {
        let temporary = live.join(format!(".{name}.new"));
        std::fs::copy(from, &temporary).expect("copy");
        std::fs::rename(&temporary, live.join(name)).expect("rename");
    }
}

#[tokio::test]
async fn rewritten_certificate_files_are_served_after_a_reload_with_no_failed_request() {
    let pki = Pki::new();
    let old = pki.leaf("old", &["a.test"], 90, "01d1");
    let new = pki.leaf("new", &["a.test"], 60, "02e2");
    install(&pki, &old);
    let upstream = Upstream::start();
    let (gateway, https) = start(&one_host(), &upstream, &pki).await;
    let client = tls_client(&pki, &["a.test"], https);
    assert_eq!(
        current_serial(&client, https).await,
        serial_hex(&old.serial)
    );
    gateway
        .expect_metric(
            EXPIRY,
            &[("listener", "https"), ("host", "a.test")],
            not_after(&old.cert) as f64,
        )
        .await;

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let loader = load(client.clone(), https, stop.clone(), done.clone());
    wait_for_requests(&done, 20).await;
    install(&pki, &new);
    let (status, body) = gateway.reload_json().await;
    assert_eq!(status, 200, "{body}");
    stop.store(true, Ordering::SeqCst);
    let (requests, failures, after) = loader.await.expect("load task");
    assert!(
        failures.is_empty(),
        "{} of {requests} failed: {failures:#?}",
        failures.len()
    );
    assert_eq!(after, 50, "the load stopped before the reload was over");

    assert_eq!(
        current_serial(&client, https).await,
        serial_hex(&new.serial)
    );
    gateway
        .expect_metric(
            EXPIRY,
            &[("listener", "https"), ("host", "a.test")],
            not_after(&new.cert) as f64,
        )
        .await;
}

/// A Kubernetes Secret volume: `tls.crt` → `..data/tls.crt`, `..data` →
/// a timestamped directory; an update writes a new directory and renames a
/// new `..data` symlink over the old one.
struct SecretVolume {
    dir: PathBuf,
    version: usize,
}

impl SecretVolume {
    fn new(dir: PathBuf, leaf: &Leaf) -> Self {
        std::fs::create_dir_all(&dir).expect("secret dir");
        let mut volume = Self { dir, version: 0 };
        volume.update(leaf);
        for name in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(Path::new("..data").join(name), volume.dir.join(name))
                .expect("file symlink");
        }
        volume
    }

    fn update(&mut self, leaf: &Leaf) {
        self.version += 1;
        let version = format!("..2026_11_29_00_00_0{}", self.version);
        let target = self.dir.join(&version);
        std::fs::create_dir(&target).expect("version dir");
        std::fs::copy(&leaf.cert, target.join("tls.crt")).expect("copy cert");
        std::fs::copy(&leaf.key, target.join("tls.key")).expect("copy key");
        let temporary = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &temporary).expect("data symlink");
        std::fs::rename(&temporary, self.dir.join("..data")).expect("swap ..data");
    }
}

#[tokio::test]
async fn a_secrets_data_symlink_swap_is_picked_up_by_the_watcher_under_load() {
    let pki = Pki::new();
    let old = pki.leaf("old", &["a.test"], 90, "03f3");
    let new = pki.leaf("new", &["a.test"], 90, "04a4");
    let mut secret = SecretVolume::new(pki.path("secret"), &old);
    let config = one_host().replace("{PKI}/live/", "{PKI}/secret/");
    let upstream = Upstream::start();
    let (gateway, https) = start_with_run_args(&config, &upstream, &pki, &["--watch"]).await;
    let client = tls_client(&pki, &["a.test"], https);
    assert_eq!(
        current_serial(&client, https).await,
        serial_hex(&old.serial)
    );

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let loader = load(client.clone(), https, stop.clone(), done.clone());
    wait_for_requests(&done, 20).await;
    secret.update(&new);
    let deadline = Instant::now() + Duration::from_secs(20);
    while gateway
        .metric("jwtgate_config_reloads_total", &[("result", "success")])
        .await
        < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "the watcher did not reload:\n{}",
            gateway.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let (requests, failures, after) = loader.await.expect("load task");
    assert!(
        failures.is_empty(),
        "{} of {requests} failed: {failures:#?}",
        failures.len()
    );
    assert_eq!(after, 50);
    assert_eq!(
        current_serial(&client, https).await,
        serial_hex(&new.serial)
    );
    assert!(
        gateway.log().contains("trigger=\"watched file change\""),
        "{}",
        gateway.log()
    );
}

#[tokio::test]
async fn a_bad_pair_fails_the_reload_and_the_old_certificate_keeps_serving() {
    let pki = Pki::new();
    let old = pki.leaf("old", &["a.test"], 90, "05b5");
    let other = pki.leaf("other", &["a.test"], 90, "06c6");
    install(&pki, &old);
    let upstream = Upstream::start();
    let (gateway, https) = start(&one_host(), &upstream, &pki).await;
    let client = tls_client(&pki, &["a.test"], https);

    // The new certificate with the old key.
    std::fs::copy(&other.cert, pki.path("live/tls.crt")).expect("copy");
    let (status, body) = gateway.reload_json().await;
    assert_eq!(status, 500, "{body}");
    let error = body["error"].as_str().expect("error text");
    assert!(
        error.contains("listen.https.certificates[0]")
            && error.contains("live/tls.key is not the private key of the certificate in")
            && error.contains("live/tls.crt"),
        "{error}"
    );
    assert!(
        !error.contains("PRIVATE KEY"),
        "key material in an error: {error}"
    );
    assert_eq!(
        current_serial(&client, https).await,
        serial_hex(&old.serial)
    );

    // A key file that is not there.
    std::fs::copy(&old.cert, pki.path("live/tls.crt")).expect("copy");
    std::fs::remove_file(pki.path("live/tls.key")).expect("remove");
    let (status, body) = gateway.reload_json().await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("cannot read"),
        "{body}"
    );
    assert_eq!(
        current_serial(&client, https).await,
        serial_hex(&old.serial)
    );
    gateway
        .expect_metric("jwtgate_config_reloads_total", &[("result", "error")], 2.0)
        .await;

    // An expired pair is only a warning: the reload takes it, and logs why.
    let expired = pki.leaf("expired", &["a.test"], 0, "0e0e");
    install(&pki, &expired);
    let (status, body) = gateway.reload_json().await;
    assert_eq!(status, 200, "{body}");
    let log = gateway
        .wait_for_log(|log| log.contains("(hosts a.test) expired at"))
        .await;
    assert!(
        log.contains("live/tls.crt (hosts a.test) expired at"),
        "{log}"
    );
}

// ---------------------------------------------------------------------------
// jwtgate check, and config errors
// ---------------------------------------------------------------------------

/// `jwtgate check` on `config` (with `{PKI}` and `{HTTPS}` filled in):
/// success, and stdout and stderr together.
fn checked(pki: &Pki, config: &str) -> (bool, String) {
    let out = check(
        &config
            .replace("{PKI}", &pki.dir())
            .replace("{HTTPS}", "18443"),
    );
    (out.success, out.text())
}

#[test]
fn check_lists_certificates_and_warns_only_within_30_days_of_expiry() {
    let pki = Pki::new();
    let soon = pki.leaf("soon", &["a.test"], 10, "07d7");
    let later = pki.leaf("later", &["a.test"], 90, "08e8");

    install(&pki, &later);
    let (ok, text) = checked(&pki, &one_host());
    assert!(ok, "{text}");
    assert!(text.contains("certificates (1):"), "{text}");
    assert!(
        text.contains("[a.test]") && text.contains("· default"),
        "{text}"
    );
    assert!(!text.contains("warning"), "{text}");

    // A host the certificate does not name: a warning, not an error.
    let (ok, text) = checked(
        &pki,
        &one_host().replace("hosts: [a.test]", "hosts: [a.test, c.test]"),
    );
    assert!(ok, "{text}");
    assert!(
        text.contains(
            "warning: listen.https.certificates[0]: \"c.test\" is not among the names of the certificate in"
        ) && text.contains("live/tls.crt (a.test): clients will refuse it for that host"),
        "{text}"
    );
    assert!(!text.contains("\"a.test\" is not among"), "{text}");

    install(&pki, &soon);
    let (ok, text) = checked(&pki, &one_host());
    assert!(ok, "an expiring certificate is no error: {text}");
    assert!(
        text.contains("warning: the certificate in")
            && text.contains("live/tls.crt (hosts a.test) expires at"),
        "{text}"
    );

    // Valid for no time at all: expired as soon as it exists.
    let expired = pki.leaf("expired", &["a.test"], 0, "0d0d");
    install(&pki, &expired);
    let (ok, text) = checked(&pki, &one_host());
    assert!(ok, "an expired certificate is no error: {text}");
    assert!(
        text.contains("live/tls.crt (hosts a.test) expired at")
            && text.contains("clients will refuse it"),
        "{text}"
    );
}

#[test]
fn check_refuses_a_key_that_is_not_the_certificates() {
    let pki = Pki::new();
    let a = pki.leaf("a", &["a.test"], 90, "09f9");
    let b = pki.leaf("b", &["a.test"], 90, "0a0a");
    install(&pki, &a);
    std::fs::copy(&b.key, pki.path("live/tls.key")).unwrap();
    let (ok, text) = checked(&pki, &one_host());
    assert!(!ok, "{text}");
    assert!(
        text.contains("listen.https.certificates[0]: ")
            && text.contains("tls.key is not the private key of the certificate in"),
        "{text}"
    );
}

#[test]
fn config_errors_name_the_field_and_value() {
    let pki = Pki::new();
    pki.leaf("a", &["a.test"], 90, "0b0b");
    let with_a = |listen: &str| {
        format!(
            "listen:\n{listen}admin: {{ addr: \"127.0.0.1:{{ADMIN}}\" }}\nroutes:\n  - name: r\n    upstream: {{ addrs: [\"127.0.0.1:1\"] }}\n    auth: {{ mode: off }}\n"
        )
    };
    let https = "  https:\n    addr: \"127.0.0.1:{HTTPS}\"\n    certificates:\n      - { hosts: [HOSTS], cert: \"{PKI}/a.crt\", key: \"{PKI}/a.key\" }\n";
    let cases = [
        (
            with_a("  http: { addr: \"127.0.0.1:{PROXY}\", mode: redirect }\n"),
            "listen.http.mode is redirect but listen.https is not set",
        ),
        (
            with_a("  http: { addr: \"127.0.0.1:{PROXY}\", mode: off }\n"),
            "listen.http.mode is off and listen.https is not set",
        ),
        (
            with_a("  http: { addr: \"127.0.0.1:{PROXY}\", mode: sometimes }\n"),
            "sometimes",
        ),
        (
            with_a("  http: { addr: \"127.0.0.1:{PROXY}\", h2: true }\n"),
            "unknown field `h2`",
        ),
        (
            with_a(&https.replace("HOSTS", "\"a.*.test\"")),
            "listen.https.certificates[0]: hosts: \"a.*.test\": a wildcard is only allowed as the whole first label",
        ),
        (
            with_a(&https.replace("HOSTS", "a.test").replace("a.key", "missing.key")),
            "listen.https.certificates[0]: cannot read",
        ),
        (
            with_a(&format!(
                "{}    hsts: {{ preload: true }}\n",
                https.replace("HOSTS", "a.test")
            )),
            "listen.https.hsts.preload needs include_subdomains: true",
        ),
        (
            "admin: { addr: \"127.0.0.1:{ADMIN}\" }\nroutes:\n  - name: r\n    match: { https_only: redirect }\n    upstream: { addrs: [\"127.0.0.1:1\"] }\n    auth: { mode: off }\n".to_string(),
            "match.https_only is redirect but listen.https is not set",
        ),
    ];
    for (config, expected) in cases {
        let (ok, text) = checked(&pki, &config);
        assert!(!ok, "accepted:\n{config}");
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
    // The plain string form of listen.http still works beside listen.https.
    let (ok, text) = checked(
        &pki,
        &with_a(&format!(
            "  http: \"127.0.0.1:{{PROXY}}\"\n{}",
            https.replace("HOSTS", "a.test")
        )),
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("listen 127.0.0.1:18080 · https 127.0.0.1:18443"),
        "{text}"
    );
}

#[tokio::test]
async fn serve_and_redirect_switch_on_reload_while_listeners_need_a_restart() {
    let pki = Pki::new();
    let leaf = pki.leaf("a", &["a.test"], 90, "0c0c");
    install(&pki, &leaf);
    let upstream = Upstream::start();
    let (gateway, https) = start(&one_host(), &upstream, &pki).await;
    let render = |listen_http: &str, https_port: u16| {
        gateway
            .render(&one_host(), &upstream)
            .replace("  http: \"127.0.0.1:", "  http: { addr: \"127.0.0.1:")
            .replace(
                &format!("{}\"\n", gateway.proxy_addr().port()),
                &format!("{}\"{listen_http} }}\n", gateway.proxy_addr().port()),
            )
            .replace("{HTTPS}", &https_port.to_string())
            .replace("{PKI}", &pki.dir())
    };
    let write = |text: String| {
        let temporary = gateway.config_path().with_extension("tmp");
        std::fs::write(&temporary, text).expect("write config");
        std::fs::rename(&temporary, gateway.config_path()).expect("rename config");
    };
    let clear_text = || raw_request(gateway.proxy_addr(), "GET /x HTTP/1.1\r\nHost: a.test");
    assert_eq!(clear_text().await.status, 200);

    write(render(", mode: redirect", https));
    let (status, body) = gateway.reload_json().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(clear_text().await.status, 308);

    write(render(", mode: off", https));
    let (status, body) = gateway.reload_json().await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains(&format!(
            "listen.http: 127.0.0.1:{} → (off)",
            gateway.proxy_addr().port()
        )),
        "{body}"
    );

    write(render("", free_port()));
    let (status, body) = gateway.reload_json().await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("listen.https.addr: "),
        "{body}"
    );
    // Still redirecting: nothing of a refused reload applies.
    assert_eq!(clear_text().await.status, 308);
}
