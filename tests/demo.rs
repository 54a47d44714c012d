//! The repository's own `gateway.yaml` works out of the box: the README's
//! three lines (run, mint a demo token, curl it) against the real binary and
//! its built-in echo upstream, plus JSON logs that never contain the token.

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
        let log = tempfile::NamedTempFile::new().unwrap();
        let proxy = format!("127.0.0.1:{}", free_port());
        let admin = format!("127.0.0.1:{}", free_port());
        let echo = format!("127.0.0.1:{}", free_port());
        let child = Command::new(BIN)
            .args(["--log-format", "json", "run", "-c", "gateway.yaml"])
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

fn mint(args: &[&str]) -> String {
    let output = Command::new(BIN)
        .args(["token", "mint"])
        .args(args)
        .current_dir(REPO)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
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
