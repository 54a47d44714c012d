//! Test harness for the integration tests: a recording upstream, the real
//! `jwtgate` binary started on OS-chosen loopback ports, token builders, a
//! raw HTTP/1.1 client (for request lines reqwest would normalize) and a
//! Prometheus text reader.
//!
//! Every test gets its own upstream and gateway process, so tests can run in
//! parallel without sharing ports, metrics or request logs.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::fs::File;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use jwtgate::jose::Algorithm;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The realm every challenge carries with the default config.
pub const REALM: &str = "jwtgate";

/// Absolute path of the test-only key fixtures.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys")
}

/// A program in the virtualenv scripts/setup fills from PyPI: under
/// `$JWTGATE_TOOLS` when set (CI gives it a folder of its own), else the
/// repository's `.tools`.
pub fn venv_bin(name: &str) -> PathBuf {
    let tools = std::env::var_os("JWTGATE_TOOLS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools"),
        PathBuf::from,
    );
    tools.join("venv/bin").join(name)
}

// ---------------------------------------------------------------------------
// Recording upstream
// ---------------------------------------------------------------------------

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query, exactly as received.
    pub path: String,
    /// Lower-case header name → every value, in arrival order.
    pub headers: BTreeMap<String, Vec<String>>,
}

impl Recorded {
    /// The first value of a header (name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .and_then(|values| values.first())
            .map(String::as_str)
    }

    /// Every value of a header (name in any case).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(|values| values.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.headers.contains_key(&name.to_ascii_lowercase())
    }
}

/// A real HTTP/1.1 server on 127.0.0.1 that records every request and
/// answers 200 with a small JSON body. It runs on its own thread and
/// runtime, so it keeps serving whatever the test's runtime is doing.
pub struct Upstream {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Recorded>>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    pub fn start() -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// [`Upstream::start`] on a chosen address (another loopback IP, or the
    /// port of an upstream that was stopped).
    pub fn start_on(addr: SocketAddr) -> Self {
        let listener = StdTcpListener::bind(addr).expect("bind upstream");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("upstream addr");
        let log: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let (shutdown, mut stop) = tokio::sync::oneshot::channel::<()>();
        let thread_log = log.clone();
        let thread = std::thread::Builder::new()
            .name(format!("upstream-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("upstream runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    loop {
                        let stream = tokio::select! {
                            _ = &mut stop => break,
                            accepted = listener.accept() => match accepted {
                                Ok((stream, _)) => stream,
                                Err(_) => continue,
                            },
                        };
                        let log = thread_log.clone();
                        tokio::spawn(async move {
                            let service = service_fn(move |request: Request<Incoming>| {
                                let log = log.clone();
                                async move { Ok::<_, Infallible>(record(&log, request)) }
                            });
                            // hyper's own cap (100 fields) is below what
                            // jwtgate forwards at its limit plus what it adds.
                            let _ = hyper::server::conn::http1::Builder::new()
                                .max_headers(256)
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                });
            })
            .expect("spawn upstream thread");
        Self {
            addr,
            log,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A copy of every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// The most recent request; panics when there was none.
    pub fn last(&self) -> Recorded {
        self.log
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the upstream received no request")
    }
}

fn record(log: &Mutex<Vec<Recorded>>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in request.headers() {
        headers
            .entry(name.as_str().to_ascii_lowercase())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let path = request
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| request.uri().path().to_string());
    let recorded = Recorded {
        method: request.method().to_string(),
        path: path.clone(),
        headers,
    };
    log.lock().unwrap().push(recorded);
    let body = serde_json::json!({ "upstream": "ok", "path": path }).to_string();
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("x-upstream", "recording")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Gateway process
// ---------------------------------------------------------------------------

/// A loopback port the OS considers free right now. Pingora binds its own
/// sockets, so the port is read back and released; a per-process set makes
/// sure two gateways of this test binary never get the same one.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let listener = StdTcpListener::bind("127.0.0.1:0").expect("bind for a free port");
        let port = listener.local_addr().expect("local addr").port();
        drop(listener);
        if HANDED_OUT.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// A fresh recording upstream and a gateway running `config` in front of it.
pub async fn start(config: &str) -> (Upstream, Gateway) {
    let upstream = Upstream::start();
    let gateway = Gateway::start(config, &upstream).await;
    (upstream, gateway)
}

/// The real `jwtgate` binary running `jwtgate run -c <tmp>/gateway.yaml`.
pub struct Gateway {
    child: Child,
    dir: tempfile::TempDir,
    proxy: SocketAddr,
    admin: SocketAddr,
    client: reqwest::Client,
}

const STARTUP_LIMIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);
const START_ATTEMPTS: usize = 3;

impl Gateway {
    /// Starts the gateway with `template`, after replacing `{PROXY}`,
    /// `{ADMIN}`, `{UPSTREAM}` and `{FIXTURES}`, and waits until both the
    /// admin and the proxy listener accept. Retries with new ports when a
    /// port was taken between choosing it and Pingora binding it.
    pub async fn start(template: &str, upstream: &Upstream) -> Self {
        Self::start_with_args(template, upstream, &[]).await
    }

    /// [`Gateway::start`] with extra arguments before `run`, such as
    /// `--log-format json`.
    pub async fn start_with_args(template: &str, upstream: &Upstream, args: &[&str]) -> Self {
        Self::start_with_env(template, upstream, args, &[]).await
    }

    /// Like [`Gateway::start_with_args`], with extra environment variables.
    pub async fn start_with_env(
        template: &str,
        upstream: &Upstream,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_full(template, upstream, args, &[], env).await
    }

    /// Like [`Gateway::start`], with arguments after `run`, such as `--watch`.
    pub async fn start_with_run_args(
        template: &str,
        upstream: &Upstream,
        run_args: &[&str],
    ) -> Self {
        Self::start_full(template, upstream, &[], run_args, &[]).await
    }

    async fn start_full(
        template: &str,
        upstream: &Upstream,
        args: &[&str],
        run_args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(template, upstream.addr(), args, run_args, env).await {
                Ok(gateway) => return gateway,
                Err(log) => last_log = log,
            }
        }
        panic!(
            "jwtgate did not start after {START_ATTEMPTS} attempts (ports in use); log:\n{last_log}"
        );
    }

    /// `Err(log)` only for a port conflict; any other failure panics.
    async fn try_start(
        template: &str,
        upstream: SocketAddr,
        args: &[&str],
        run_args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        let proxy_port = free_port();
        let admin_port = free_port();
        let yaml = fill(template, proxy_port, admin_port, upstream);
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("gateway.yaml");
        std::fs::write(&config, &yaml).expect("write config");
        let stderr = File::create(dir.path().join("stderr.log")).expect("stderr file");
        let stdout = File::create(dir.path().join("stdout.log")).expect("stdout file");
        let child = Command::new(env!("CARGO_BIN_EXE_jwtgate"))
            .args(args)
            .arg("run")
            .args(run_args)
            .arg("-c")
            .arg(&config)
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn jwtgate");
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("http client");
        let mut gateway = Self {
            child,
            dir,
            proxy: SocketAddr::from(([127, 0, 0, 1], proxy_port)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
            client,
        };

        let deadline = Instant::now() + STARTUP_LIMIT;
        let mut healthy = false;
        loop {
            let log = gateway.log();
            if log.contains("Address already in use") || log.contains("AddrInUse") {
                return Err(log);
            }
            if let Ok(Some(status)) = gateway.child.try_wait() {
                panic!("jwtgate exited during startup ({status}); config:\n{yaml}\nlog:\n{log}");
            }
            if !healthy {
                let response = gateway
                    .client
                    .get(gateway.admin_url("/healthz"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await;
                healthy = matches!(response, Ok(r) if r.status() == 200);
            }
            // The admin and proxy services start independently: wait for both.
            if healthy && tokio::net::TcpStream::connect(gateway.proxy).await.is_ok() {
                return Ok(gateway);
            }
            if Instant::now() > deadline {
                panic!(
                    "jwtgate was not ready within {STARTUP_LIMIT:?}; config:\n{yaml}\nlog:\n{log}"
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy
    }

    /// The config file the gateway runs with (rewrite it, then reload).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("gateway.yaml")
    }

    /// `template` filled in as [`Gateway::start`] does, with this gateway's
    /// ports: a config the running gateway can reload.
    pub fn render(&self, template: &str, upstream: &Upstream) -> String {
        fill(
            template,
            self.proxy.port(),
            self.admin.port(),
            upstream.addr(),
        )
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// `GET path` on the proxy, with `Authorization: Bearer token` if given.
    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self.client.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request to the gateway")
    }

    /// The Prometheus text from the admin `/metrics`.
    pub async fn metrics(&self) -> String {
        let response = self
            .client
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(response.status(), 200, "/metrics status");
        response.text().await.expect("metrics body")
    }

    /// Sum of every series of `name` whose labels include all of `labels`.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics().await, name, labels)
    }

    /// Waits until the metric reads exactly `expected`: some counters (the
    /// per-status request count) are updated in the logging phase, after
    /// the response was sent. Panics with the metrics text when it does not
    /// get there.
    pub async fn expect_metric(&self, name: &str, labels: &[(&str, &str)], expected: f64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.metrics().await;
            let value = metric_value(&text, name, labels);
            if value == expected {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{name}{labels:?} is {value}, expected {expected}; metrics:\n{}",
                    relevant_lines(&text)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Everything the process wrote to stderr and stdout so far.
    pub fn log(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("stdout.log"))
    }

    /// The access-log line (target `jwtgate::access`) of the request whose
    /// `X-Request-Id` was `request_id`, once it is written. Logs carry no
    /// colour codes: stderr is a file here, not a terminal.
    pub async fn access_line(&self, request_id: &str) -> String {
        let needle = format!("request_id=\"{request_id}\"");
        let find = |log: &str| {
            log.lines()
                .find(|line| line.contains("jwtgate::access") && line.contains(&needle))
                .map(str::to_owned)
        };
        let log = self.wait_for_log(|log| find(log).is_some()).await;
        find(&log).unwrap_or_else(|| panic!("no access-log line for {request_id}:\n{log}"))
    }

    /// Polls [`Gateway::log`] until `done` holds for it or ten seconds pass,
    /// and returns the log as last read (the access log is written after the
    /// response). Never fails itself: the caller asserts on what it got.
    pub async fn wait_for_log(&self, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if done(&log) || Instant::now() > deadline {
                return log;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Gateway {
    /// The process id, to send it signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `limit` for the process to exit; `None` if it still runs.
    pub async fn wait_for_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("query the jwtgate process") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

fn fill(template: &str, proxy_port: u16, admin_port: u16, upstream: SocketAddr) -> String {
    template
        .replace("{PROXY}", &proxy_port.to_string())
        .replace("{ADMIN}", &admin_port.to_string())
        .replace("{UPSTREAM}", &upstream.to_string())
        .replace("{FIXTURES}", &fixtures().display().to_string())
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// Prometheus text
// ---------------------------------------------------------------------------

/// One sample line: metric name, labels, value.
pub fn parse_sample(line: &str) -> Option<(String, BTreeMap<String, String>, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}')?;
            (
                &line[..open],
                parse_labels(&line[open + 1..close])?,
                &line[close + 1..],
            )
        }
        None => {
            let (name, rest) = line.split_once(' ')?;
            (name, BTreeMap::new(), rest)
        }
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((name.to_string(), labels, value))
}

fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(labels);
        }
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break,
                other => value.push(other),
            }
        }
        labels.insert(name.trim().to_string(), value);
    }
}

/// Sum of every series of `name` whose labels include all of `wanted`.
pub fn metric_value(text: &str, name: &str, wanted: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter_map(parse_sample)
        .filter(|(n, labels, _)| {
            n == name
                && wanted
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, value)| value)
        .sum()
}

/// The jwtgate request and decision counters, for failure messages.
pub fn relevant_lines(text: &str) -> String {
    text.lines()
        .filter(|l| {
            l.starts_with("jwtgate_auth_decisions_total") || l.starts_with("jwtgate_requests_total")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------
// Raw HTTP/1.1
// ---------------------------------------------------------------------------

/// A response read off the wire by [`raw_request`].
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Lower-case names, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
}

/// Sends `head` (request line and headers, without the final blank line)
/// verbatim, so request targets like `/public/../admin` arrive unchanged,
/// which an URL-normalizing client would not allow. Adds
/// `Connection: close` and reads the response to EOF.
pub async fn raw_request(addr: SocketAddr, head: &str) -> RawResponse {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect for a raw request");
        let mut request = head.trim_end_matches("\r\n").replace("\r\n", "\n");
        request = request.replace('\n', "\r\n");
        request.push_str("\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("write raw request");
        let mut bytes = Vec::new();
        stream
            .read_to_end(&mut bytes)
            .await
            .expect("read raw response");
        bytes
    };
    // A guard against a hung connection, not a latency assertion.
    let bytes = tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect("raw request did not complete");
    parse_response(&bytes)
}

fn parse_response(bytes: &[u8]) -> RawResponse {
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(bytes)));
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let raw_body = &bytes[split + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        dechunk(raw_body)
    } else {
        raw_body.to_vec()
    };
    RawResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim().to_string();
        let size = usize::from_str_radix(&size_text, 16).unwrap_or(0);
        data = &data[line_end + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        body.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    body
}

// ---------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Signs `claims` with a fixture key (file name under tests/fixtures/keys,
/// or an absolute path), putting `kid` and `typ: JWT` in the header.
pub fn sign(alg: Algorithm, key_file: &str, kid: &str, claims: Value) -> String {
    let path = fixtures().join(key_file);
    let map = claims.as_object().expect("claims are an object").clone();
    jwtgate::mint::Signer::from_file(&path, alg)
        .unwrap_or_else(|e| panic!("signer for {alg} from {key_file}: {e}"))
        .sign(&map, Some(kid), Some("JWT"))
        .unwrap_or_else(|e| panic!("signing with {alg}: {e}"))
}

/// `base` with every member of `extra` set over it; a `null` in `extra`
/// removes that claim instead.
pub fn merge_claims(mut base: Value, extra: Value) -> Value {
    let map = base.as_object_mut().expect("base claims are an object");
    for (name, value) in extra.as_object().expect("extra claims are an object") {
        if value.is_null() {
            map.remove(name);
        } else {
            map.insert(name.clone(), value.clone());
        }
    }
    base
}

/// The fixture key file and JWKS `kid` that sign `alg` for the test issuers.
pub fn key_for(alg: Algorithm) -> (&'static str, &'static str) {
    use Algorithm::*;
    match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => ("rsa.pem", "rsa-1"),
        ES256 => ("ec256.pem", "ec256-1"),
        ES384 => ("ec384.pem", "ec384-1"),
        EdDSA => ("ed25519.pem", "ed25519-1"),
        HS256 | HS384 | HS512 => ("hs256.secret", "hmac"),
    }
}

/// A compact JWS from arbitrary parts, for hand-built hostile tokens:
/// each part is base64url-encoded without padding, nothing is checked.
pub fn raw_token(header_json: &str, claims_json: &str, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header_json),
        URL_SAFE_NO_PAD.encode(claims_json),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// HMAC-SHA256 of `msg`, for algorithm-confusion tokens.
pub fn hmac_sha256(secret: &[u8], msg: &[u8]) -> Vec<u8> {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    aws_lc_rs::hmac::sign(&key, msg).as_ref().to_vec()
}

/// An HS256 token over `header_json` and `claims_json`, MACed with `secret`.
pub fn hs256_token(header_json: &str, claims_json: &str, secret: &[u8]) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header_json),
        URL_SAFE_NO_PAD.encode(claims_json)
    );
    let mac = hmac_sha256(secret, signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(mac))
}

/// The bytes of a fixture file.
pub fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap_or_else(|e| panic!("read fixture {name}: {e}"))
}

/// The DER inside a PEM file (the first block).
pub fn pem_der(name: &str) -> Vec<u8> {
    let text = String::from_utf8(fixture_bytes(name)).expect("PEM is text");
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    STANDARD.decode(body.trim()).expect("PEM base64")
}

/// `der` as PEM text under `label`, 64 base64 characters a line.
pub fn to_pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

/// The public half of `rsa.pem` as PKCS#1 `RSAPublicKey` DER.
pub fn rsa_public_pkcs1_der() -> Vec<u8> {
    use aws_lc_rs::signature::KeyPair;
    let pair = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(&pem_der("rsa.pem"))
        .expect("rsa.pem is PKCS#8");
    pair.public_key().as_ref().to_vec()
}

/// The modulus `n` of the `rsa-1` key: its base64url text in jwks.json and
/// its bytes.
pub fn rsa_modulus() -> (String, Vec<u8>) {
    let jwks: Value = serde_json::from_slice(&fixture_bytes("jwks.json")).expect("jwks.json");
    let n = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == "rsa-1")
        .expect("rsa-1 in jwks.json")["n"]
        .as_str()
        .expect("n")
        .to_string();
    let bytes = URL_SAFE_NO_PAD.decode(&n).expect("n is base64url");
    (n, bytes)
}
