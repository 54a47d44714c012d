//! HTTP/2 client connections as a whole, with Python's `h2` as the client
//! (tests/http2/), not jwtgate's own HTTP/2 stack.
//!
//! Connections that go idle between requests, over h2c and TLS h2
//! (sequential.py): an idle connection gives back its read and write
//! buffers and its streams' storage (the patched `h2` in `vendor/`), and
//! takes them again with the next request: bodies larger than those
//! buffers and than the flow-control windows, in both directions, must
//! arrive whole on a connection that idled between every request.
//!
//! The loop that serves each connection (connection.py): the drain sends
//! `GOAWAY`, and a client that keeps sending malformed requests is cut off.

mod common;

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Lines};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// What `/big` answers: more than h2's 16 KiB write buffer and its 64 KiB
/// stream window, so the response needs many frames and window updates.
const BIG: usize = 1 << 20;
/// What each POST sends, for the same reason on the read side.
const UPLOAD: usize = 300 * 1024;

const HOST: &str = "h2.test";

/// An HTTP/1.1 upstream: `POST` answers with the body it got, `GET /big`
/// with [`BIG`] bytes of [`pattern`].
fn echo_upstream() -> TcpServer {
    TcpServer::start(
        "echo",
        SocketAddr::from(([127, 0, 0, 1], 0)),
        |stream| async move {
            let service = service_fn(|request: Request<Incoming>| async move {
                let body = if request.method() == hyper::Method::POST {
                    request
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default()
                } else {
                    Bytes::from(pattern(BIG))
                };
                Ok::<_, Infallible>(Response::new(Full::new(body)))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        },
    )
}

/// Bytes that differ from one position to the next, so a lost, repeated
/// or reordered frame shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ (i >> 8) as u8).collect()
}

/// A CA, and a certificate of [`HOST`] signed by it.
fn certificates() -> Pki {
    let pki = Pki::new();
    let ca = Cert {
        key: "ca.key",
        cert: "ca.crt",
        cn: "jwtgate test CA",
        days: 1,
        extensions: CA,
    };
    pki.self_signed(&ca);
    let leaf = Cert {
        key: "gateway.key",
        cert: "gateway.crt",
        cn: HOST,
        days: 1,
        extensions: &["subjectAltName=DNS:h2.test"],
    };
    pki.signed(&leaf, &ca, None);
    pki
}

/// Four requests on one connection, a quarter of a second apart so the
/// connection idles between them: upload, download, upload, download.
/// `tls` is the CA file and the server name to verify, or `None` for h2c.
/// Returns `status length` per response.
fn four_requests(addr: SocketAddr, tls: Option<(&Path, &str)>, dir: &Path) -> Vec<String> {
    let upload = dir.join("upload");
    std::fs::write(&upload, pattern(UPLOAD)).expect("write the upload");
    let post = format!("POST /echo {}", upload.display());
    let mut command = Command::new(venv_bin("python"));
    command.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/http2/sequential.py"));
    if let Some((ca, server_name)) = tls {
        command.arg("--tls").arg(ca).arg(server_name);
    }
    let output = command
        .arg(addr.to_string())
        .arg("0.25")
        .arg(dir)
        .args([post.as_str(), "GET /big", post.as_str(), "GET /big"])
        .output()
        .expect("run the Python HTTP/2 client (scripts/test installs h2)");
    assert!(
        output.status.success(),
        "the HTTP/2 client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let answer: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            format!("{} {}", answer["status"], answer["length"])
        })
        .collect()
}

/// Every response arrived, and whole: the client ends at the first
/// connection error, so all four came over the one connection.
fn assert_served_whole(lines: &[String], dir: &Path) {
    let expected: Vec<String> = [UPLOAD, BIG, UPLOAD, BIG]
        .iter()
        .map(|len| format!("200 {len}"))
        .collect();
    assert_eq!(lines, expected);
    for (i, expected) in [UPLOAD, BIG, UPLOAD, BIG].into_iter().enumerate() {
        let got = std::fs::read(dir.join(format!("response-{i}"))).expect("a response body");
        assert!(
            got == pattern(expected),
            "response {i}: {} bytes, but not the {expected} bytes of the pattern",
            got.len()
        );
    }
}

#[tokio::test]
async fn bodies_arrive_whole_on_connections_that_idle_between_requests() {
    let pki = certificates();
    let upstream = echo_upstream();
    let https = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let listen = format!(
        concat!(
            "\n  http: {{ addr: \"127.0.0.1:{{PROXY}}\", h2c: true }}\n",
            "  https:\n    addr: \"{https}\"\n    certificates:\n",
            "      - {{ hosts: [{host}], cert: \"{dir}/gateway.crt\", key: \"{dir}/gateway.key\" }}\n",
        ),
        https = https,
        host = HOST,
        dir = pki.dir().display(),
    );
    let config = Config::new().listen(&listen).routes(OPEN_ROUTE);
    let gateway = Gateway::start_before(&config, upstream.addr(), &[], &[], &[]).await;
    wait_for_listener(https, &|| gateway.log());

    let h2c = tempfile::tempdir().expect("a directory for h2c");
    let lines = four_requests(gateway.proxy_addr(), None, h2c.path());
    assert_served_whole(&lines, h2c.path());

    let tls = tempfile::tempdir().expect("a directory for TLS");
    let ca = pki.path("ca.crt");
    let lines = four_requests(https, Some((&ca, HOST)), tls.path());
    assert_served_whole(&lines, tls.path());
}

/// The Python client for a connection's life (tests/http2/connection.py),
/// and its output, read a JSON line at a time.
fn connection_client(args: &[&str]) -> (Child, Lines<BufReader<ChildStdout>>) {
    let mut child = Command::new(venv_bin("python"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/http2/connection.py"))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the Python HTTP/2 client (scripts/test installs h2)");
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

/// The client's next JSON line; `None` once it exited.
async fn next_event(lines: &mut Lines<BufReader<ChildStdout>>) -> Option<serde_json::Value> {
    tokio::task::block_in_place(|| lines.next())
        .map(|line| serde_json::from_str(&line.expect("the client's output")).expect("a JSON line"))
}

async fn h2c_gateway() -> (Upstream, Gateway) {
    let upstream = Upstream::start();
    let config = Config::new()
        .listen("{ http: { addr: \"127.0.0.1:{PROXY}\", h2c: true } }")
        .routes(OPEN_ROUTE);
    let gateway = Gateway::start(&config, &upstream).await;
    (upstream, gateway)
}

/// Every event of a client run to its end.
async fn events(args: &[&str]) -> Vec<serde_json::Value> {
    let (mut child, mut lines) = connection_client(args);
    let mut events = Vec::new();
    while let Some(event) = next_event(&mut lines).await {
        events.push(event);
    }
    assert!(child.wait().unwrap().success(), "{events:?}");
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_sends_goaway_to_idle_http2_connections() {
    let (_upstream, gateway) = h2c_gateway().await;
    let addr = gateway.proxy_addr().to_string();
    let (mut child, mut lines) = connection_client(&["drain", &addr, "/before-the-drain"]);
    let answered = next_event(&mut lines).await.expect("the first answer");
    assert_eq!(answered["status"], 200, "{answered}");

    gateway.signal("TERM");
    let ended = next_event(&mut lines)
        .await
        .expect("how the connection ended");
    // NO_ERROR: the server is going away, nothing went wrong.
    assert_eq!(ended["goaway"], 0, "{ended}");
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_sending_malformed_requests_is_cut_after_32() {
    let (_upstream, gateway) = h2c_gateway().await;
    let addr = gateway.proxy_addr().to_string();
    let answers = events(&["malformed", &addr, "/", "40"]).await;
    assert_eq!(answers[0]["status"], 200, "the valid request first");
    let refused = answers[1..]
        .iter()
        .take_while(|answer| answer["status"] == 400)
        .count();
    // The 32nd is refused as the connection is cut: its answer may not
    // leave before the close.
    assert!((31..=32).contains(&refused), "{answers:?}");
    let last = answers.last().unwrap();
    assert!(
        last["closed"] == true || last.get("goaway").is_some(),
        "the connection was not cut: {answers:?}"
    );

    // Other connections are served as before.
    let fresh = events(&["malformed", &addr, "/", "0"]).await;
    assert_eq!(fresh.len(), 1, "{fresh:?}");
    assert_eq!(fresh[0]["status"], 200, "{fresh:?}");
}

/// A request id is unique to its response: HPACK indexing it would fill
/// the connection's table, and the client's, with values never sent
/// again, pushing out the headers that repeat. It goes as never indexed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_never_indexed_by_hpack() {
    let (_upstream, gateway) = h2c_gateway().await;
    let addr = gateway.proxy_addr().to_string();
    let answers = events(&["requests", &addr, "/", "3"]).await;
    assert_eq!(answers.len(), 3, "{answers:?}");
    let mut ids = Vec::new();
    for answer in &answers {
        assert_eq!(answer["status"], 200, "{answer:?}");
        let id = answer["headers"]["x-request-id"]
            .as_str()
            .expect("a request id");
        ids.push(id.to_owned());
        let never_indexed = answer["never_indexed"].as_array().unwrap();
        assert!(
            never_indexed.contains(&serde_json::json!("x-request-id")),
            "{answer:?}"
        );
    }
    ids.dedup();
    assert_eq!(ids.len(), 3, "each response has its own id: {answers:?}");
}
