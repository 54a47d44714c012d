//! The repository's own `gateway.yaml` works out of the box: the README's
//! three lines (run, mint a demo token, curl it) against the real binary and
//! its built-in echo upstream, plus JSON logs that never contain the token;
//! and `scripts/run --https`, its certificate and the README's curl over
//! HTTPS.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{demo_token_args, free_port, http_client};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_jwtgate");
const REPO: &str = env!("CARGO_MANIFEST_DIR");

struct Demo {
    child: Child,
    log: tempfile::NamedTempFile,
    proxy: String,
    admin: String,
}

impl Demo {
    /// Starts `jwtgate --log-format json run -c gateway.yaml` with its three
    /// listeners moved to free ports through the file's `${VAR:-default}`s.
    fn start() -> Demo {
        let mut command = Command::new(BIN);
        command.args(["--log-format", "json", "run", "-c", "gateway.yaml"]);
        Demo::spawn(command)
    }

    /// `scripts/run --https` on the debug binary (`JWTGATE_BIN`), its
    /// certificate made in `tls_dir`, HTTPS on `https`.
    fn start_https(tls_dir: &Path, https: &str) -> Demo {
        let mut command = Command::new("scripts/run");
        command
            .arg("--https")
            .env("JWTGATE_BIN", BIN)
            .env("JWTGATE_DEMO_TLS", tls_dir)
            .env("JWTGATE_HTTPS_LISTEN", https);
        let demo = Demo::spawn(command);
        let https: std::net::SocketAddr = https.parse().unwrap();
        common::wait_for_listener(https, &|| demo.log());
        demo
    }

    fn spawn(mut command: Command) -> Demo {
        let log = tempfile::NamedTempFile::new().unwrap();
        let proxy = format!("127.0.0.1:{}", free_port());
        let admin = format!("127.0.0.1:{}", free_port());
        let echo = format!("127.0.0.1:{}", free_port());
        let child = command
            .current_dir(REPO)
            .env("JWTGATE_LISTEN", &proxy)
            .env("JWTGATE_ADMIN", &admin)
            .env("JWTGATE_ECHO", &echo)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let demo = Demo {
            child,
            log,
            proxy,
            admin,
        };
        demo.wait_ready();
        demo
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = http_client();
        let runtime = runtime();
        while Instant::now() < deadline {
            let ready = runtime.block_on(async {
                client
                    .get(format!("http://{}/readyz", self.admin))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            });
            if ready {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("jwtgate did not become ready:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `command` in the repository; it must succeed: what it printed.
fn stdout_of(command: &mut Command) -> String {
    let output = command.current_dir(REPO).output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

fn mint(args: &[&str]) -> String {
    stdout_of(Command::new(BIN).args(["token", "mint"]).args(args))
}

fn demo_token(scope: &str) -> String {
    mint(&demo_token_args("deploy/dev-keys/rs256.pem", scope))
}

async fn get(url: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let client = http_client();
    let mut request = client.get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

#[test]
fn readme_demo_works_with_the_shipped_config() {
    let demo = Demo::start();
    let token = demo_token("echo:read");
    let bearer = format!("Bearer {token}");
    let rt = runtime();

    let (status, echoed) = rt.block_on(get(
        &format!("http://{}/echo/hello?x=1", demo.proxy),
        &[("authorization", &bearer), ("X-User-Id", "mallory")],
    ));
    assert_eq!(status, 200, "{echoed}");
    assert_eq!(echoed["method"], "GET");
    assert_eq!(echoed["path"], "/echo/hello");
    assert_eq!(echoed["query"], "x=1");
    let headers = &echoed["headers"];
    assert_eq!(headers["x-user-id"], serde_json::json!(["alice"]));
    assert_eq!(headers["x-user-scopes"], serde_json::json!(["echo:read"]));
    assert!(
        headers.get("authorization").is_none(),
        "the demo route strips Authorization: {headers}"
    );

    let (status, body) = rt.block_on(get(&format!("http://{}/echo", demo.proxy), &[]));
    assert_eq!(status, 401);
    assert_eq!(body["error"], "unauthorized");

    let (status, body) = rt.block_on(get(
        &format!("http://{}/echo/admin", demo.proxy),
        &[("authorization", &bearer)],
    ));
    assert_eq!(status, 403);
    assert_eq!(body["error"], "insufficient_scope");

    let (status, echoed) = rt.block_on(get(
        &format!("http://{}/public/page", demo.proxy),
        &[("x-user-id", "mallory")],
    ));
    assert_eq!(status, 200);
    assert!(echoed["headers"].get("x-user-id").is_none(), "{echoed}");

    // The HMAC demo issuer works too.
    let hs = mint(&[
        "--key",
        "deploy/dev-keys/hs256.secret",
        "--alg",
        "HS256",
        "--iss",
        "https://hmac.jwtgate.example",
        "--aud",
        "echo-api",
        "--sub",
        "bob",
        "--scope",
        "echo:read",
    ]);
    let (status, echoed) = rt.block_on(get(
        &format!("http://{}/echo", demo.proxy),
        &[("authorization", &format!("Bearer {hs}"))],
    ));
    assert_eq!(status, 200);
    assert_eq!(echoed["headers"]["x-user-id"], serde_json::json!(["bob"]));

    // JSON logs: one access line per request, never the token.
    let deadline = Instant::now() + Duration::from_secs(10);
    let access_lines = loop {
        let lines: Vec<Value> = demo
            .log()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["target"] == "jwtgate::access")
            .collect();
        if lines.len() >= 5 || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(access_lines.len(), 5, "{}", demo.log());
    let first = &access_lines[0];
    assert_eq!(first["route"], "echo");
    assert_eq!(first["status"], 200);
    assert_eq!(first["sub"], "alice");
    assert_eq!(first["path"], "/echo/hello", "the query is not logged");
    assert_eq!(access_lines[1]["reason"], "missing_token");
    assert_eq!(access_lines[2]["reason"], "insufficient_scope");
    let log = demo.log();
    for secret in [&token, &hs] {
        assert!(!log.contains(secret.as_str()), "a token reached the log");
        let signature = secret.rsplit('.').next().unwrap();
        assert!(!log.contains(signature), "a signature reached the log");
    }
}

#[test]
fn a_taken_port_is_a_clear_startup_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = Command::new(BIN)
        .args(["run", "-c", "gateway.yaml"])
        .current_dir(Path::new(REPO))
        .env("JWTGATE_LISTEN", &addr)
        .env("JWTGATE_ADMIN", format!("127.0.0.1:{}", free_port()))
        .env("JWTGATE_ECHO", format!("127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr} (listen.http)")),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------
// HTTPS in one command
// ---------------------------------------------------------------------------

fn repo_file(name: &str) -> String {
    std::fs::read_to_string(Path::new(REPO).join(name))
        .unwrap_or_else(|e| panic!("read {name}: {e}"))
}

/// The default of `${variable:-default}` in `text`.
fn default_of<'a>(text: &'a str, variable: &str) -> &'a str {
    let pattern = format!("${{{variable}:-");
    let start = text
        .find(&pattern)
        .unwrap_or_else(|| panic!("{variable} has no default"))
        + pattern.len();
    &text[start..start + text[start..].find('}').expect("closing brace")]
}

/// `scripts/demo-cert` with its certificates in `dir`: the CA's path it
/// printed.
fn demo_cert(dir: &Path) -> String {
    stdout_of(Command::new("scripts/demo-cert").env("JWTGATE_DEMO_TLS", dir))
}

/// curl over HTTPS as the README has it, trusting `ca`, with `localhost`
/// on loopback: (HTTP version, response headers, body).
fn curl_https(ca: &str, port: &str, token: &str) -> (String, String, Value) {
    let resolve = format!("localhost:{port}:127.0.0.1");
    let url = format!("https://localhost:{port}/echo");
    let bearer = format!("Authorization: Bearer {token}");
    let body = tempfile::NamedTempFile::new().unwrap();
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--http2", "--cacert", ca])
        .args(["--resolve", &resolve, "-H", &bearer, "--dump-header", "-"])
        .args(["--output", body.path().to_str().unwrap()])
        .args(["--write-out", "%{http_version}", &url])
        .output()
        .expect("cannot run curl; scripts/test installs it (Debian package curl)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "curl {url} failed: {}{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (headers, version) = text
        .rsplit_once("\r\n\r\n")
        .expect("headers, then the version");
    let body = serde_json::from_slice(&std::fs::read(body.path()).unwrap()).unwrap();
    (version.to_string(), headers.to_ascii_lowercase(), body)
}

#[test]
fn scripts_run_https_serves_the_demo_over_http2_with_hsts() {
    let tls = tempfile::tempdir().unwrap();
    let https = format!("127.0.0.1:{}", free_port());
    let demo = Demo::start_https(tls.path(), &https);
    let ca = tls.path().join("ca.crt").display().to_string();
    assert!(
        demo.log().contains(&format!("--cacert {ca}")),
        "scripts/run does not say which CA to trust:\n{}",
        demo.log()
    );

    let token = demo_token("echo:read");
    let port = https.rsplit_once(':').unwrap().1;
    let (version, headers, echoed) = curl_https(&ca, port, &token);
    assert_eq!(version, "2", "{headers}");
    assert!(headers.starts_with("http/2 200"), "{headers}");
    assert!(
        headers.contains("\r\nstrict-transport-security: max-age="),
        "{headers}"
    );
    assert_eq!(echoed["headers"]["x-user-id"], serde_json::json!(["alice"]));
    assert_eq!(
        echoed["headers"]["x-forwarded-proto"],
        serde_json::json!(["https"])
    );

    // Run again, the certificate is kept: a client trusting the CA still does.
    let leaf = std::fs::read(tls.path().join("localhost.crt")).unwrap();
    assert_eq!(demo_cert(tls.path()), ca);
    assert_eq!(
        std::fs::read(tls.path().join("localhost.crt")).unwrap(),
        leaf
    );
    let (version, _, _) = curl_https(&ca, port, &token);
    assert_eq!(version, "2");
}

#[test]
fn the_readmes_https_curl_matches_what_scripts_run_https_makes() {
    let config = repo_file("gateway-https.yaml");
    let dir = default_of(&config, "JWTGATE_DEMO_TLS");
    assert_eq!(
        dir,
        default_of(&repo_file("scripts/demo-cert"), "JWTGATE_DEMO_TLS"),
        "gateway-https.yaml and scripts/demo-cert look for the certificate in different places"
    );
    let addr = default_of(&config, "JWTGATE_HTTPS_LISTEN");
    assert_eq!(
        addr,
        default_of(&repo_file("scripts/run"), "JWTGATE_HTTPS_LISTEN")
    );
    let port = addr.rsplit_once(':').unwrap().1;
    let readme = repo_file("README.md");
    let run_it = &readme[readme
        .find("## Run it")
        .expect("README has a Run it section")..];
    let run_it = &run_it[..run_it[3..]
        .find("\n## ")
        .map_or(run_it.len(), |end| end + 3)];
    assert!(
        run_it.contains("\nscripts/run --https\n"),
        "README's Run it does not show scripts/run --https:\n{run_it}"
    );
    let curl = format!(
        "\ncurl --cacert {dir}/ca.crt -H \"Authorization: Bearer $TOKEN\" https://localhost:{port}/echo\n"
    );
    assert!(
        run_it.contains(&curl),
        "README's Run it lacks{curl}(gateway-https.yaml's defaults):\n{run_it}"
    );
}

/// A config's text below its header comment.
fn body(config: &str) -> &str {
    let start = config.find("\nlisten:\n").expect("a listen section");
    &config[start + 1..]
}

#[test]
fn the_https_demo_config_is_the_demo_config_with_an_https_listener() {
    let https = repo_file("gateway-https.yaml");
    let mut in_listener = false;
    let without: String = https
        .split_inclusive('\n')
        .filter(|line| {
            in_listener = *line == "  https:\n" || (in_listener && line.starts_with("    "));
            !in_listener
        })
        .collect();
    assert_eq!(
        body(&without),
        body(&repo_file("gateway.yaml")),
        "gateway-https.yaml differs from gateway.yaml beyond listen.https: copy gateway.yaml's change"
    );
}
