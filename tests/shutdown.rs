//! Shutdown and signals, end to end: the real `jwtgate` binary, a recording
//! upstream, and an upstream that holds each request until the test lets it
//! answer, so a request is in flight for exactly as long as a test needs.
//! Nothing here measures time: each test orders events (a request arrives,
//! a signal is sent, a log line appears) and every wait is a generous bound.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

/// A bound on waits for things that happen within moments on an idle
/// machine; generous because the machine may be far from idle.
const PATIENCE: Duration = Duration::from_secs(60);

/// Long enough that a test reaching the end of it has gone wrong.
const FOREVER: &str = "1h";

/// A route to the held upstream and one to the recording upstream.
const ROUTES: &str = r#"
  - name: held
    match: { path_prefix: /held }
    upstream: { addrs: ["{HELD}"] }
    auth: { mode: off }
  - name: fast
    match: { path_prefix: /fast }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { mode: off }
"#;

fn config(held: &HeldUpstream, grace: &str, timeout: &str) -> String {
    Config::main(ISS)
        .server(&format!(
            "grace_period: {grace}, graceful_shutdown_timeout: {timeout}"
        ))
        .routes(&ROUTES.replace("{HELD}", &held.addr().to_string()))
}

/// A held upstream, and a gateway in front of it and of a recording
/// upstream, with the given `grace_period` and `graceful_shutdown_timeout`.
async fn start_held(grace: &str, timeout: &str) -> (HeldUpstream, Upstream, Gateway) {
    let held = HeldUpstream::start();
    let (upstream, gateway) = start(&config(&held, grace, timeout)).await;
    (held, upstream, gateway)
}

/// A new connection to the proxy listener.
async fn connect(gateway: &Gateway) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(gateway.proxy_addr())
        .await
        .expect("connect")
}

// ---------------------------------------------------------------------------
// SIGTERM
// ---------------------------------------------------------------------------

#[tokio::test]
async fn during_the_grace_period_readyz_fails_and_new_connections_are_served() {
    let (held, _upstream, mut gateway) = start_held(FOREVER, FOREVER).await;
    let in_flight = tokio::spawn(exchange(gateway.proxy_addr(), "GET /held HTTP/1.1"));
    held.wait_for_arrival().await;

    gateway.signal("TERM");
    wait_for_line(&gateway, "SIGTERM received: draining").await;

    let readyz = gateway.admin_get("/readyz").await;
    assert_eq!(readyz.status(), 503);
    let body = readyz.text().await.expect("readyz body");
    assert!(body.contains("draining"), "{body}");
    assert_eq!(gateway.admin_get("/healthz").await.status(), 200);

    // A new connection, on a request that asks for keep-alive: served, and
    // closed after the response so the client reconnects elsewhere.
    let mut fresh = tokio::net::TcpStream::connect(gateway.proxy_addr())
        .await
        .expect("connect during the grace period");
    let answer = exchange_on(&mut fresh, "GET /fast/new HTTP/1.1")
        .await
        .expect("a new connection during the grace period is served");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.header("connection"), Some("close"), "{answer:?}");
    assert!(closed_by_server(&mut fresh).await);

    held.release();
    let answered = in_flight
        .await
        .expect("request task")
        .expect("in-flight exchange");
    assert_eq!(answered.status, 200, "{answered:?}");
    assert_eq!(answered.body, b"held");

    assert!(
        gateway.wait_for_exit(Duration::ZERO).await.is_none(),
        "jwtgate stopped during its grace period; log:\n{}",
        gateway.log()
    );
    // SIGINT cuts a drain short.
    gateway.signal("INT");
    let status = exit_status(&mut gateway).await;
    assert!(status.success(), "{status}");
    assert!(gateway.log().contains("SIGINT received while draining"));
}

#[tokio::test]
async fn after_the_grace_period_only_requests_in_flight_finish_then_it_exits_0() {
    // The timeout is an hour: exiting within PATIENCE means jwtgate left as
    // soon as the last request was done.
    let (held, _upstream, mut gateway) = start_held("1s", FOREVER).await;

    let mut idle = connect(&gateway).await;
    let first = exchange_on(&mut idle, "GET /fast/keepalive HTTP/1.1").await;
    let first = first.expect("keep-alive request");
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.header("connection"), Some("keep-alive"), "{first:?}");

    let in_flight = tokio::spawn(exchange(gateway.proxy_addr(), "GET /held HTTP/1.1"));
    held.wait_for_arrival().await;

    gateway.signal("TERM");
    wait_for_line(&gateway, "grace period over").await;

    let refused = tokio::net::TcpStream::connect(gateway.proxy_addr()).await;
    assert_eq!(
        refused
            .expect_err("connected after the grace period")
            .kind(),
        std::io::ErrorKind::ConnectionRefused
    );
    // The idle keep-alive connection is closed, not left to its timeout.
    assert!(
        closed_by_server(&mut idle).await,
        "idle connection left open"
    );
    // The admin listener still answers until the process exits.
    assert_eq!(gateway.admin_get("/readyz").await.status(), 503);
    assert!(gateway.wait_for_exit(Duration::ZERO).await.is_none());

    held.release();
    let answered = in_flight
        .await
        .expect("request task")
        .expect("in-flight exchange");
    assert_eq!(answered.status, 200, "{answered:?}");
    assert_eq!(answered.body, b"held");

    let status = exit_status(&mut gateway).await;
    assert!(status.success(), "{status}");
    let log = gateway.log();
    assert!(log.contains("every connection finished: stopping"), "{log}");
}

#[tokio::test]
async fn a_request_outlasting_graceful_shutdown_timeout_is_cut_and_it_exits_0() {
    let (held, _upstream, mut gateway) = start_held("0s", "1s").await;
    let in_flight = tokio::spawn(exchange(gateway.proxy_addr(), "GET /held HTTP/1.1"));
    held.wait_for_arrival().await;

    gateway.signal("TERM");
    let status = exit_status(&mut gateway).await;
    assert!(status.success(), "{status}");

    let cut = in_flight.await.expect("request task");
    assert!(cut.is_err(), "the held request was answered: {cut:?}");
    let log = gateway.log();
    assert!(
        log.contains("graceful_shutdown_timeout passed with 1 connections still open"),
        "{log}"
    );
}

// ---------------------------------------------------------------------------
// Keep-alive connections (served one request at a time, idle between them)
// ---------------------------------------------------------------------------

#[tokio::test]
async fn one_connection_carries_request_after_request() {
    let (_held, upstream, gateway) = start_held("1s", "1s").await;
    let mut connection = connect(&gateway).await;
    for n in 0..3 {
        let answer = exchange_on(&mut connection, &format!("GET /fast/{n} HTTP/1.1"))
            .await
            .expect("keep-alive exchange");
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(
            answer.header("connection"),
            Some("keep-alive"),
            "{answer:?}"
        );
    }
    let paths: Vec<String> = upstream.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/fast/0", "/fast/1", "/fast/2"]);
}

#[tokio::test]
async fn a_request_arriving_in_pieces_on_an_idle_connection_is_served() {
    let (_held, upstream, gateway) = start_held("1s", "1s").await;
    let mut connection = connect(&gateway).await;
    // The gateway waits for a request's first byte by reading it and
    // handing it back to the request parser: the byte must not be lost,
    // on a fresh connection or on a kept-alive one.
    for path in ["/fast/first", "/fast/second"] {
        connection.write_all(b"G").await.expect("first byte");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let rest = format!("ET {path} HTTP/1.1");
        let answer = exchange_on(&mut connection, &rest).await.expect("exchange");
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(upstream.last().path, path);
    }
}

#[tokio::test]
async fn connections_the_client_closed_do_not_hold_up_the_drain() {
    // The timeout is an hour: exiting within PATIENCE means no closed
    // connection was still counted as open.
    let (_held, _upstream, mut gateway) = start_held("0s", FOREVER).await;
    let mut used = connect(&gateway).await;
    let answer = exchange_on(&mut used, "GET /fast/once HTTP/1.1").await;
    assert_eq!(answer.expect("exchange").status, 200);
    let silent = connect(&gateway).await;
    drop(used);
    drop(silent);

    gateway.signal("TERM");
    let status = exit_status(&mut gateway).await;
    assert!(status.success(), "{status}");
    let log = gateway.log();
    assert!(log.contains("every connection finished: stopping"), "{log}");
}

// ---------------------------------------------------------------------------
// SIGINT
// ---------------------------------------------------------------------------

#[tokio::test]
async fn sigint_stops_at_once_without_draining() {
    let (held, _upstream, mut gateway) = start_held(FOREVER, FOREVER).await;
    let in_flight = tokio::spawn(exchange(gateway.proxy_addr(), "GET /held HTTP/1.1"));
    held.wait_for_arrival().await;

    gateway.signal("INT");
    // Both phases last an hour: exiting at all means no drain took place.
    let status = exit_status(&mut gateway).await;
    assert!(status.success(), "{status}");
    let cut = in_flight.await.expect("request task");
    assert!(cut.is_err(), "the held request was answered: {cut:?}");
    let log = gateway.log();
    assert!(log.contains("SIGINT received: stopping now"), "{log}");
    assert!(!log.contains("draining"), "{log}");
}

// ---------------------------------------------------------------------------
// SIGHUP
// ---------------------------------------------------------------------------

#[tokio::test]
async fn sighup_reloads_and_keeps_serving() {
    let (_held, _upstream, mut gateway) = start_held(FOREVER, FOREVER).await;
    let line = "config reloaded from";

    for sent in 1..=2 {
        gateway.signal("HUP");
        let log = gateway
            .wait_for_log(|log| log.matches(line).count() == sent)
            .await;
        assert_eq!(log.matches(line).count(), sent, "{log}");
    }

    assert!(
        gateway.wait_for_exit(Duration::ZERO).await.is_none(),
        "SIGHUP stopped jwtgate; log:\n{}",
        gateway.log()
    );
    let response = gateway.get("/fast/after-hup", None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(gateway.admin_get("/readyz").await.status(), 200);
}

/// The config file is a FIFO: opening it for writing returns only once
/// jwtgate has opened it for reading, so the SIGHUP lands while jwtgate is
/// still reading its config, before any listener exists.
#[tokio::test]
async fn a_sighup_during_startup_does_not_kill_it() {
    let held = HeldUpstream::start();
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("gateway.yaml");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo failed: {made}");
    let (proxy, admin) = (free_port(), free_port());
    let yaml = fill(
        &config(&held, FOREVER, FOREVER),
        proxy,
        admin,
        upstream.addr(),
    );
    let mut process = Process::spawn(&fifo, dir.path());

    let writer_path = fifo.clone();
    let opened = tokio::time::timeout(
        PATIENCE,
        tokio::task::spawn_blocking(move || {
            std::fs::OpenOptions::new().write(true).open(writer_path)
        }),
    )
    .await;
    let mut writer = match opened {
        Ok(Ok(Ok(writer))) => writer,
        other => panic!(
            "jwtgate never opened its config: {other:?}; log:\n{}",
            process.log()
        ),
    };
    send_signal(process.pid(), "HUP");
    std::io::Write::write_all(&mut writer, yaml.as_bytes()).unwrap_or_else(|e| {
        panic!(
            "jwtgate stopped reading its config ({e}); log:\n{}",
            process.log()
        )
    });
    drop(writer);

    let admin_url = format!("http://127.0.0.1:{admin}/healthz");
    let deadline = Instant::now() + PATIENCE;
    let client = http_client();
    loop {
        if let Some(status) = process.child.try_wait().expect("query jwtgate") {
            panic!(
                "jwtgate exited ({status}) after a SIGHUP during startup; log:\n{}",
                process.log()
            );
        }
        let healthy = client.get(&admin_url).send().await;
        if healthy.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "jwtgate did not start; log:\n{}",
            process.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let proxy_addr = SocketAddr::from(([127, 0, 0, 1], proxy));
    let served = exchange(
        proxy_addr,
        "GET /fast/after-startup HTTP/1.1\r\nConnection: close",
    )
    .await
    .expect("request after startup");
    assert_eq!(served.status, 200, "{served:?}");
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

async fn wait_for_line(gateway: &Gateway, needle: &str) {
    poll(PATIENCE, Duration::from_millis(50), || async {
        let log = gateway.log();
        match log.contains(needle) {
            true => Ok(()),
            false => Err(format!("no {needle:?} in the log:\n{log}")),
        }
    })
    .await
}

async fn exit_status(gateway: &mut Gateway) -> ExitStatus {
    match gateway.wait_for_exit(PATIENCE).await {
        Some(status) => status,
        None => panic!("jwtgate did not exit; log:\n{}", gateway.log()),
    }
}

/// One request on a new connection. `Err` when the connection ends without
/// a complete response.
async fn exchange(addr: SocketAddr, head: &str) -> Result<RawResponse, String> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    exchange_on(&mut stream, head).await
}

/// Sends `head` (no `Connection` header unless it has one) and reads one
/// response, by its `Content-Length`.
async fn exchange_on(
    stream: &mut tokio::net::TcpStream,
    head: &str,
) -> Result<RawResponse, String> {
    let request = format!("{head}\r\nHost: gateway.test\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut bytes = Vec::new();
    let read = async {
        loop {
            if let Some(answer) = parse_head(&bytes).filter(complete) {
                return Ok(answer);
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) => return Err(format!("connection closed after {bytes:?}")),
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("read: {e} after {bytes:?}")),
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .map_err(|_| "no complete response, and the connection stayed open".to_string())?
}

/// Whether the server closes `stream` (rather than keep it open for a next
/// request) within [`PATIENCE`].
async fn closed_by_server(stream: &mut tokio::net::TcpStream) -> bool {
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(PATIENCE, stream.read(&mut byte)).await;
    matches!(read, Ok(Ok(0)) | Ok(Err(_)))
}

/// Every response in these tests has a `Content-Length`.
fn complete(answer: &RawResponse) -> bool {
    answer
        .header("content-length")
        .and_then(|n| n.parse::<usize>().ok())
        .is_some_and(|n| answer.body.len() == n)
}

/// An upstream that tells the test when a request arrives and answers
/// `200 held` only once the test releases it.
struct HeldUpstream {
    server: TcpServer,
    arrivals: tokio::sync::Mutex<mpsc::UnboundedReceiver<()>>,
    release: Arc<watch::Sender<bool>>,
}

impl HeldUpstream {
    fn start() -> Self {
        let (arrived, arrivals) = mpsc::unbounded_channel();
        let release = Arc::new(watch::channel(false).0);
        let server_release = release.clone();
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let server = TcpServer::start("held-upstream", loopback, move |mut stream| {
            let arrived = arrived.clone();
            let mut released = server_release.subscribe();
            async move {
                let mut head = Vec::new();
                let mut chunk = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = arrived.send(());
                if released.wait_for(|released| *released).await.is_err() {
                    return;
                }
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\
                          connection: close\r\n\r\nheld",
                    )
                    .await;
            }
        });
        Self {
            server,
            arrivals: tokio::sync::Mutex::new(arrivals),
            release,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Returns once a request has reached this upstream through the gateway.
    async fn wait_for_arrival(&self) {
        let mut arrivals = self.arrivals.lock().await;
        tokio::time::timeout(PATIENCE, arrivals.recv())
            .await
            .expect("no request reached the held upstream")
            .expect("held upstream stopped");
    }

    /// Lets every held request, and every later one, be answered.
    fn release(&self) {
        self.release.send_replace(true);
    }
}

/// `jwtgate run -c config`, stopped when dropped.
struct Process {
    child: Child,
    log: std::path::PathBuf,
}

impl Process {
    fn spawn(config: &Path, dir: &Path) -> Self {
        let log = dir.join("stderr.log");
        let stderr = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_jwtgate"))
            .arg("run")
            .arg("-c")
            .arg(config)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn jwtgate");
        Self { child, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// The demo's ports and commands, as documented
// ---------------------------------------------------------------------------

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn repo_file(name: &str) -> String {
    std::fs::read_to_string(Path::new(REPO).join(name))
        .unwrap_or_else(|e| panic!("read {name}: {e}"))
}

/// The text of README's "Run it" section.
fn readme_run_it() -> String {
    let readme = repo_file("README.md");
    let start = readme
        .find("## Run it")
        .expect("README has a Run it section");
    let rest = &readme[start + 2..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    rest[..end].to_string()
}

/// Shell commands, each on one line: backslash continuations joined and
/// runs of whitespace collapsed.
fn commands(lines: impl Iterator<Item = String>) -> Vec<String> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in lines {
        let line = line.trim();
        if let Some(continued) = line.strip_suffix('\\') {
            current.push_str(continued);
            current.push(' ');
        } else {
            current.push_str(line);
            let command = current.split_whitespace().collect::<Vec<_>>().join(" ");
            if !command.is_empty() {
                joined.push(command);
            }
            current.clear();
        }
    }
    joined
}

#[test]
fn readme_run_it_lists_every_listener_of_the_demo_config() {
    let config = repo_file("gateway.yaml");
    let run_it = readme_run_it();
    let header: String = config.lines().take_while(|l| l.starts_with('#')).collect();
    let mut listeners = Vec::new();
    for variable in ["JWTGATE_LISTEN", "JWTGATE_ADMIN", "JWTGATE_ECHO"] {
        let pattern = format!("${{{variable}:-");
        let start = config
            .find(&pattern)
            .unwrap_or_else(|| panic!("gateway.yaml does not read {variable}"))
            + pattern.len();
        let addr = &config[start..start + config[start..].find('}').expect("closing brace")];
        assert!(
            run_it.contains(&format!("`{addr}`")),
            "README's Run it does not list {addr} ({variable}):\n{run_it}"
        );
        assert!(
            run_it.contains(variable),
            "README's Run it does not name {variable}"
        );
        assert!(
            header.contains(addr),
            "gateway.yaml's header does not list {addr}"
        );
        listeners.push(addr.to_string());
    }
    assert_eq!(listeners.len(), 3, "{listeners:?}");
}

#[test]
fn gateway_yaml_header_uses_the_readme_commands() {
    let run_it = readme_run_it();
    let mut in_block = false;
    let readme_lines = run_it.lines().filter_map(|line| {
        if line.starts_with("```") {
            in_block = !in_block;
            return None;
        }
        in_block.then(|| line.to_string())
    });
    let readme_commands = commands(readme_lines);
    assert!(
        readme_commands.len() >= 3,
        "README's Run it has no commands: {readme_commands:?}"
    );

    let config = repo_file("gateway.yaml");
    // Commands are the comment lines indented by three spaces.
    let header_lines = config
        .lines()
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("#   "))
        .map(str::to_string);
    let header_commands = commands(header_lines);
    assert_eq!(header_commands, readme_commands);
}
