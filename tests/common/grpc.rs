//! gRPC through the gateway with real grpcio programs on both sides (the
//! Python scripts in tests/grpc_streams, stubs compiled from its proto at
//! test time): an upstream serving unary, server-streaming and
//! bidi-streaming methods over TLS with HTTP/2, and a client making calls
//! through the gateway over h2c or TLS h2. Both write what happens as JSON
//! lines, read here as they come, so a test can act while a stream is open.
//! grpcio and grpcio-tools are required (scripts/test installs them into
//! the tools virtualenv): without them a test fails, it never skips.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::{CA, Cert, Pki, poll, venv_bin};

/// The virtualenv's python, once it is known to import grpcio and
/// grpcio-tools.
pub fn grpc_python() -> PathBuf {
    let python = venv_bin("python");
    let probe = Command::new(&python)
        .args(["-c", "import grpc, grpc_tools"])
        .output();
    match probe {
        Ok(output) if output.status.success() => python,
        _ => panic!(
            "{} with grpcio and grpcio-tools is required (scripts/test installs them)",
            python.display()
        ),
    }
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/grpc_streams")
        .join(name)
}

/// How long a test waits for something a gRPC program is to report.
const EVENT_LIMIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);

/// A child process writing a JSON value per line on stdout, collected by a
/// thread as they come; killed on drop.
struct JsonLines {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
    stderr: tempfile::NamedTempFile,
}

impl JsonLines {
    fn spawn(mut command: Command, stdin: Option<&Value>) -> Self {
        let stderr = tempfile::NamedTempFile::new().expect("stderr file");
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr.reopen().expect("reopen stderr")))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        let mut input = child.stdin.take().expect("stdin");
        if let Some(value) = stdin {
            input
                .write_all(value.to_string().as_bytes())
                .expect("write the plan");
        }
        drop(input);
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout");
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value =
                    serde_json::from_str(&line).unwrap_or_else(|_| json!({ "unparsed": line }));
                sink.lock().unwrap().push(value);
            }
        });
        Self {
            child,
            lines,
            stderr,
        }
    }

    fn lines(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }

    /// The first line `wanted` holds for, once there is one.
    async fn wait_for(&self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        poll(EVENT_LIMIT, POLL, || async {
            let lines = self.lines();
            match lines.iter().find(|line| wanted(line)) {
                Some(line) => Ok(line.clone()),
                None => Err(format!(
                    "no {what} within {EVENT_LIMIT:?}; lines: {lines:?}\nstderr:\n{}",
                    self.stderr()
                )),
            }
        })
        .await
    }
}

impl Drop for JsonLines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The certificates of a gRPC test: a CA (`ca.crt`), the upstream's
/// certificate for 127.0.0.1 (`upstream.crt`, `upstream.key`) and the
/// gateway's TLS listener's for `api.test` (`gateway.crt`, `gateway.key`).
pub struct GrpcPki(Pki);

/// The host name the gateway's TLS listener has a certificate for.
pub const GRPC_HOST: &str = "api.test";

const GRPC_CA: Cert = Cert {
    key: "ca.key",
    cert: "ca.crt",
    cn: "jwtgate gRPC test CA",
    days: 2,
    extensions: CA,
};

impl GrpcPki {
    pub fn new() -> Self {
        let pki = Pki::new();
        pki.self_signed(&GRPC_CA);
        for (name, san) in [("upstream", "IP:127.0.0.1"), ("gateway", "DNS:api.test")] {
            let (key, cert) = (format!("{name}.key"), format!("{name}.crt"));
            let san = format!("subjectAltName={san}");
            let leaf = Cert {
                key: &key,
                cert: &cert,
                cn: name,
                days: 2,
                extensions: &[
                    &san,
                    "basicConstraints=CA:FALSE",
                    "keyUsage=digitalSignature",
                    "extendedKeyUsage=serverAuth",
                ],
            };
            pki.signed(&leaf, &GRPC_CA, None);
        }
        Self(pki)
    }

    pub fn dir(&self) -> &Path {
        self.0.dir()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.path(name)
    }
}

impl Default for GrpcPki {
    fn default() -> Self {
        Self::new()
    }
}

/// tests/grpc_streams/server.py: `jwtgate.test.Streams` over TLS (the
/// certificate `upstream.crt` of a [`GrpcPki`]) on a port the OS picked.
pub struct GrpcUpstream {
    process: JsonLines,
    addr: SocketAddr,
}

impl GrpcUpstream {
    pub async fn start(pki: &GrpcPki) -> Self {
        let mut command = Command::new(grpc_python());
        command
            .arg(script("server.py"))
            .arg(pki.path("upstream.crt"))
            .arg(pki.path("upstream.key"));
        let process = JsonLines::spawn(command, None);
        let listening = process
            .wait_for("listening gRPC upstream", |line| {
                line["event"] == "listening"
            })
            .await;
        let port = listening["port"].as_u64().expect("a port") as u16;
        Self {
            process,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it reported so far: `start` and `end` of each call (see
    /// server.py).
    pub fn events(&self) -> Vec<Value> {
        self.process.lines()
    }

    /// How the upstream's call of `method` ended (`completed` or
    /// `cancelled`), once one has; for a test that makes one call of it.
    pub async fn ended(&self, method: &str) -> String {
        let end = self
            .process
            .wait_for(&format!("end of {method} upstream"), |line| {
                line["event"] == "end" && line["method"] == method
            })
            .await;
        end["how"].as_str().unwrap_or_default().to_string()
    }
}

/// One call the client makes (see client.py).
#[derive(Clone)]
pub struct GrpcCall(Value);

impl GrpcCall {
    /// `Unary`: one note there and back.
    pub fn unary() -> Self {
        Self(json!({ "method": "unary", "count": 1, "interval_ms": 0 }))
    }

    /// `Ticks`: `count` messages from the server, one every `interval_ms`.
    pub fn ticks(count: u32, interval_ms: u32) -> Self {
        Self(json!({ "method": "ticks", "count": count, "interval_ms": interval_ms }))
    }

    /// `Echo`: `count` notes from the client, one every `interval_ms`, each
    /// sent back; the request stream then ends.
    pub fn echo(count: u32, interval_ms: u32) -> Self {
        Self(json!({ "method": "echo", "count": count, "interval_ms": interval_ms }))
    }

    /// For `Echo`: after the last note, the request stream stays open with
    /// nothing more sent, until the call ends.
    pub fn idle(mut self) -> Self {
        self.0["idle"] = json!(true);
        self
    }

    /// Sent with `authorization: Bearer token`.
    pub fn token(mut self, token: &str) -> Self {
        self.0["token"] = json!(token);
        self
    }

    /// The client's own deadline for the call, in seconds.
    pub fn timeout(mut self, seconds: f64) -> Self {
        self.0["timeout"] = json!(seconds);
        self
    }
}

/// Where the client connects: h2c (prior knowledge), or TLS with ALPN h2
/// checking the gateway's certificate for [`GRPC_HOST`].
pub enum GrpcTarget<'a> {
    H2c(SocketAddr),
    Tls(SocketAddr, &'a GrpcPki),
}

impl GrpcTarget<'_> {
    fn plan(&self, calls: &[GrpcCall]) -> Value {
        let calls: Vec<&Value> = calls.iter().map(|call| &call.0).collect();
        match self {
            Self::H2c(addr) => json!({ "target": addr.to_string(), "ca": null, "calls": calls }),
            Self::Tls(addr, pki) => json!({
                "target": addr.to_string(),
                "ca": pki.path("ca.crt"),
                "server_name": GRPC_HOST,
                "calls": calls,
            }),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::H2c(_) => "h2c",
            Self::Tls(..) => "TLS h2",
        }
    }
}

/// How a call ended, as the client saw it.
#[derive(Debug, Clone)]
pub struct CallEnd {
    /// The status code's name: `OK`, `UNAUTHENTICATED`, `CANCELLED`...
    pub code: String,
    pub details: String,
    pub trailers: serde_json::Map<String, Value>,
    /// Messages received before the end.
    pub received: u64,
    /// When it ended, Unix seconds.
    pub at: f64,
}

/// tests/grpc_streams/client.py running `calls` at once on one connection.
pub struct GrpcClient {
    process: JsonLines,
    calls: usize,
}

impl GrpcClient {
    pub fn start(target: &GrpcTarget, calls: &[GrpcCall]) -> Self {
        let mut command = Command::new(grpc_python());
        command.arg(script("client.py"));
        let process = JsonLines::spawn(command, Some(&target.plan(calls)));
        Self {
            process,
            calls: calls.len(),
        }
    }

    /// Waits until call `index` has received `n` messages.
    pub async fn received(&self, index: usize, n: u64) {
        self.process
            .wait_for(&format!("message {n} of call {index}"), |line| {
                line["call"] == index && line["event"] == "message" && line["n"] == n
            })
            .await;
    }

    /// How call `index` ended, once it has.
    pub async fn ended(&self, index: usize) -> CallEnd {
        let end = self
            .process
            .wait_for(&format!("end of call {index}"), |line| {
                line["call"] == index && line["event"] == "end"
            })
            .await;
        CallEnd {
            code: end["code"].as_str().unwrap_or_default().to_string(),
            details: end["details"].as_str().unwrap_or_default().to_string(),
            trailers: end["trailers"].as_object().cloned().unwrap_or_default(),
            received: end["received"].as_u64().unwrap_or_default(),
            at: end["at"].as_f64().unwrap_or_default(),
        }
    }

    /// How every call ended, in the order given.
    pub async fn finish(self) -> Vec<CallEnd> {
        let mut ends = Vec::with_capacity(self.calls);
        for index in 0..self.calls {
            ends.push(self.ended(index).await);
        }
        ends
    }
}

/// A real gRPC client's answers to `calls` (see tests/authz_grpc/check.py:
/// Envoy's `Authorization/Check`, each answer as JSON), one per call.
pub fn check_grpc(addr: SocketAddr, calls: &[Value]) -> Vec<Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/authz_grpc");
    let mut child = Command::new(grpc_python())
        .arg(dir.join("check.py"))
        .arg(dir.join("proto"))
        .arg(addr.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the gRPC client");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(calls).unwrap().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "gRPC client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answers: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answers.len(), calls.len());
    answers
}
