//! A real OpenTelemetry trace receiver for the tracing tests:
//! `tests/otlp/receiver.py`, which decodes OTLP over gRPC and over
//! HTTP/protobuf with the official protobuf definitions
//! (opentelemetry-proto), started on loopback ports the OS picks and killed
//! when its [`Receiver`] is dropped, also when a test panics.
//!
//! The tools virtualenv's python with grpcio and opentelemetry-proto is
//! required (scripts/test installs both): without it a test fails, it never
//! skips.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::common::{http_client, poll, venv_bin};

const STARTUP_LIMIT: Duration = Duration::from_secs(20);
/// How long a test waits for spans: batches leave on the configured
/// `batch_interval`, and an export may be retried.
const SPAN_LIMIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);
const SETUP_HINT: &str = "the tracing tests need the tools virtualenv's python with grpcio \
     and opentelemetry-proto: run scripts/test (or `scripts/setup \
     pymod:opentelemetry.proto=opentelemetry-proto==1.45.2`) from the repository root";

/// One span as the receiver decoded it.
#[derive(Debug, Clone, Deserialize)]
pub struct Span {
    /// `grpc` or `http`: the export that brought it.
    pub transport: String,
    /// Its resource's attributes (`service.name`, ...).
    pub resource: Map<String, Value>,
    pub scope: Scope,
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// 16 lowercase hex digits, or empty for a root span.
    pub parent_span_id: String,
    pub trace_state: String,
    pub name: String,
    /// The protobuf name: `SPAN_KIND_SERVER`, `SPAN_KIND_CLIENT`, ...
    pub kind: String,
    /// Attribute name → plain JSON value (string, bool, integer, double,
    /// array, object).
    pub attributes: Map<String, Value>,
    pub status: Status,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Scope {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Status {
    /// `STATUS_CODE_UNSET`, `STATUS_CODE_OK` or `STATUS_CODE_ERROR`.
    pub code: String,
    pub message: String,
}

pub const SERVER: &str = "SPAN_KIND_SERVER";
pub const CLIENT: &str = "SPAN_KIND_CLIENT";
pub const STATUS_ERROR: &str = "STATUS_CODE_ERROR";

impl Span {
    /// An attribute's value, if the span has it.
    pub fn attr(&self, name: &str) -> Option<&Value> {
        self.attributes.get(name)
    }

    /// A string attribute; panics, naming the span, when it is absent or
    /// not a string.
    #[track_caller]
    pub fn str_attr(&self, name: &str) -> &str {
        self.attr(name)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no string attribute {name:?} in {self:#?}"))
    }

    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_empty()
    }

    /// Whether `other` is this span's parent (same trace, parent id).
    pub fn is_child_of(&self, other: &Span) -> bool {
        self.trace_id == other.trace_id && self.parent_span_id == other.span_id
    }
}

/// One export request as the receiver saw it, refused ones too.
#[derive(Debug, Clone, Deserialize)]
pub struct Export {
    pub transport: String,
    /// Lowercase header or gRPC metadata name → value.
    pub headers: BTreeMap<String, String>,
    /// How many spans it carried.
    pub spans: usize,
    /// `false` when the receiver refused it (`--fail`).
    pub accepted: bool,
}

#[derive(Debug, Clone, Deserialize)]
struct Received {
    spans: Vec<Span>,
    exports: Vec<Export>,
}

/// How the receiver answers exports.
#[derive(Debug, Clone, Copy, Default)]
pub struct Behaviour {
    /// Each export is answered only after this long: a slow collector.
    pub delay: Option<Duration>,
    /// Each export is refused: UNAVAILABLE over gRPC, 503 over HTTP.
    pub fail: bool,
}

/// A running `tests/otlp/receiver.py`.
pub struct Receiver {
    child: Child,
    grpc: SocketAddr,
    http: SocketAddr,
    query: SocketAddr,
    stderr: tempfile::NamedTempFile,
    client: reqwest::Client,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/otlp/receiver.py")
}

/// The virtualenv's python, once it is known to import what the receiver
/// needs; panics with how to install it otherwise.
pub fn otlp_python() -> PathBuf {
    let python = venv_bin("python");
    let probe = Command::new(&python)
        .args([
            "-c",
            "import grpc\nfrom opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc",
        ])
        .output();
    match probe {
        Ok(output) if output.status.success() => python,
        Ok(output) => panic!(
            "{} cannot import the OTLP definitions: {}\n{SETUP_HINT}",
            python.display(),
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(e) => panic!("cannot run {}: {e}\n{SETUP_HINT}", python.display()),
    }
}

impl Receiver {
    /// A receiver that accepts every export at once.
    pub async fn start() -> Self {
        Self::start_with(Behaviour::default()).await
    }

    /// Starts the receiver and waits for the line with its ports.
    pub async fn start_with(behaviour: Behaviour) -> Self {
        let stderr = tempfile::NamedTempFile::new().expect("receiver stderr file");
        let mut command = Command::new(otlp_python());
        command.arg(script());
        if let Some(delay) = behaviour.delay {
            command.args(["--delay", &delay.as_secs_f64().to_string()]);
        }
        if behaviour.fail {
            command.arg("--fail");
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr.reopen().expect("reopen stderr")))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}\n{SETUP_HINT}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines, received) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        // Owned from here on, so a panic below still kills the process.
        let mut receiver = Self {
            child,
            grpc: SocketAddr::from(([127, 0, 0, 1], 0)),
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            query: SocketAddr::from(([127, 0, 0, 1], 0)),
            stderr,
            client: http_client(),
        };
        let listening = receiver.wait_for_ports(&received).await;
        let port = |name: &str| -> SocketAddr {
            let port = listening[name]
                .as_u64()
                .and_then(|port| u16::try_from(port).ok())
                .unwrap_or_else(|| panic!("no {name} port in {listening}"));
            SocketAddr::from(([127, 0, 0, 1], port))
        };
        receiver.grpc = port("grpc");
        receiver.http = port("http");
        receiver.query = port("query");
        receiver
    }

    async fn wait_for_ports(&mut self, received: &mpsc::Receiver<String>) -> Value {
        let deadline = Instant::now() + STARTUP_LIMIT;
        loop {
            if let Ok(line) = received.try_recv() {
                let value: Value = serde_json::from_str(&line).unwrap_or_default();
                if value["event"] == "listening" {
                    return value;
                }
                continue;
            }
            if let Some(status) = self.child.try_wait().expect("query the receiver") {
                panic!(
                    "the OTLP receiver exited during startup ({status}); stderr:\n{}\n{SETUP_HINT}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the OTLP receiver printed no ports within {STARTUP_LIMIT:?}; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The OTLP/gRPC endpoint, as `telemetry.tracing.endpoint` takes it.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// The OTLP/HTTP base URL (jwtgate appends `/v1/traces`).
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }

    async fn received(&self) -> Received {
        let url = format!("http://{}/spans", self.query);
        let response = self
            .client
            .get(&url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}; stderr:\n{}", self.stderr()));
        assert_eq!(response.status(), 200, "GET {url}");
        response
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: not the expected JSON: {e}"))
    }

    /// Every span received so far, in arrival order.
    pub async fn spans(&self) -> Vec<Span> {
        self.received().await.spans
    }

    /// Every export request received so far, refused ones too.
    pub async fn exports(&self) -> Vec<Export> {
        self.received().await.exports
    }

    /// The spans, once `done` holds for them; after a generous bound, fails
    /// with every span received.
    pub async fn wait_for_spans(&self, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        self.wait_until("spans", |received| received.spans, done)
            .await
    }

    /// The first span `wanted` holds for, once one has arrived.
    pub async fn wait_for_span(&self, wanted: impl Fn(&Span) -> bool) -> Span {
        let spans = self.wait_for_spans(|spans| spans.iter().any(&wanted)).await;
        spans
            .into_iter()
            .find(|span| wanted(span))
            .expect("just found")
    }

    /// The exports, once `done` holds for them, as [`Receiver::wait_for_spans`].
    pub async fn wait_for_exports(&self, done: impl Fn(&[Export]) -> bool) -> Vec<Export> {
        self.wait_until("exports", |received| received.exports, done)
            .await
    }

    /// Polls what was received until `done` holds for the part `pick`
    /// takes out of it; panics with that part after [`SPAN_LIMIT`].
    async fn wait_until<T: std::fmt::Debug>(
        &self,
        what: &str,
        pick: fn(Received) -> Vec<T>,
        done: impl Fn(&[T]) -> bool,
    ) -> Vec<T> {
        poll(SPAN_LIMIT, POLL, || async {
            let items = pick(self.received().await);
            if done(&items) {
                return Ok(items);
            }
            Err(format!(
                "the {what} received did not become what the test waits for within \
                 {SPAN_LIMIT:?}; received {} {what}:\n{items:#?}\nreceiver stderr:\n{}",
                items.len(),
                self.stderr()
            ))
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
