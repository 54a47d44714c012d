//! What a client gets when the request fails on its way through: upstreams
//! that refuse, reset, hang up, answer garbage or never answer, and clients
//! that send what Pingora can't parse. Every upstream here is a real socket
//! on loopback that misbehaves on purpose.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A public route to a healthy upstream and one to the address under test.
fn config(failing: SocketAddr, upstream_options: &str) -> String {
    let routes = ROUTES
        .replace("{FAILING}", &failing.to_string())
        .replace("{OPTIONS}", upstream_options);
    Config::new().default_server().routes(&routes)
}

const ROUTES: &str = r#"
  - name: ok
    match: { path_prefix: /ok }
    upstream: { addrs: ["{UPSTREAM}"] }
    auth: { mode: off }
  - name: failing
    match: { path_prefix: /failing }
    upstream: { addrs: ["{FAILING}"]{OPTIONS} }
    auth: { mode: off }
"#;

async fn gateway_in_front_of(failing: SocketAddr, upstream_options: &str) -> (Upstream, Gateway) {
    let healthy = Upstream::start();
    let gateway = Gateway::start(&config(failing, upstream_options), &healthy).await;
    (healthy, gateway)
}

/// What an upstream does once it has read a request head.
#[derive(Clone, Copy)]
enum Misbehaviour {
    /// Close with a TCP reset (SO_LINGER 0).
    Reset,
    /// Close normally, without a word.
    HangUp,
    /// Send these bytes, then wait for the gateway to close.
    Answer(&'static [u8]),
    /// Send these bytes, then close.
    AnswerAndHangUp(&'static [u8]),
    /// Say nothing until the gateway closes.
    Silence,
}

/// A TCP server on 127.0.0.1 that misbehaves the same way on every
/// connection.
struct RawUpstream {
    addr: SocketAddr,
    _server: TcpServer,
}

impl RawUpstream {
    fn start(misbehaviour: Misbehaviour) -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let server = TcpServer::start("raw-upstream", loopback, move |stream| {
            misbehave(stream, misbehaviour)
        });
        Self {
            addr: server.addr(),
            _server: server,
        }
    }
}

async fn misbehave(mut stream: TcpStream, misbehaviour: Misbehaviour) {
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    match misbehaviour {
        Misbehaviour::Reset => {
            stream.set_zero_linger().expect("SO_LINGER 0");
            drop(stream);
        }
        Misbehaviour::HangUp => drop(stream),
        Misbehaviour::Answer(bytes) => {
            let _ = stream.write_all(bytes).await;
            drain(&mut stream).await;
        }
        Misbehaviour::AnswerAndHangUp(bytes) => {
            let _ = stream.write_all(bytes).await;
            let _ = stream.shutdown().await;
        }
        Misbehaviour::Silence => drain(&mut stream).await,
    }
}

/// Reads until the peer closes.
async fn drain(stream: &mut TcpStream) {
    let mut chunk = [0u8; 4096];
    while matches!(stream.read(&mut chunk).await, Ok(n) if n > 0) {}
}

/// Sends `GET path` with our own request id and checks everything a
/// failed request must carry: `status`, the JSON body with `error`, the id
/// in the body and header, `no-store`, an access-log line naming `kind`,
/// and the status counted.
async fn assert_failure(gateway: &Gateway, request_id: &str, status: u16, error: &str, kind: &str) {
    let response = gateway
        .get_with("/failing/resource", None, &[("x-request-id", request_id)])
        .await;
    assert_eq!(response.status(), status);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(header("x-request-id").as_deref(), Some(request_id));
    assert_eq!(header("content-type").as_deref(), Some("application/json"));
    assert_eq!(header("cache-control").as_deref(), Some("no-store"));
    let text = response.text().await.expect("body");
    let body: serde_json::Value = serde_json::from_str(&text).expect("a JSON body");
    assert_eq!(body["error"], error, "{text}");
    assert_eq!(body["request_id"], request_id, "{text}");
    let description = body["error_description"].as_str().expect("a description");
    assert!(!description.is_empty());
    // Generic: the kind of failure and the upstream stay in the log.
    assert!(
        !text.contains(kind) && !text.contains("127.0.0.1"),
        "{text}"
    );

    gateway
        .expect_access_line(
            request_id,
            &[
                &format!("status={status}"),
                &format!("error=\"{kind}\""),
                "route=\"failing\"",
            ],
        )
        .await;
    // Counted under the failure's kind, not as a refusal.
    let status = status.to_string();
    let labels = [
        ("adapter", "proxy"),
        ("route", "failing"),
        ("status", status.as_str()),
        ("reason", "none"),
        ("error", kind),
    ];
    gateway.expect_metric(REQUESTS, &labels, 1.0).await;
}

#[tokio::test]
async fn a_refused_connection_answers_502() {
    let (_healthy, gateway) = gateway_in_front_of(closed_addr(), "").await;
    assert_failure(
        &gateway,
        "refused-1",
        502,
        "bad_gateway",
        "upstream_refused",
    )
    .await;
}

#[tokio::test]
async fn every_address_refusing_answers_502() {
    let both = format!("\"{}\", \"{}\"", closed_addr(), closed_addr());
    let failing = "  - name: failing\n    match: { path_prefix: /failing }\n    upstream: { addrs: [BOTH] }\n    auth: { mode: off }";
    let template = Config::new()
        .default_server()
        .routes(&failing.replace("BOTH", &both));
    let gateway = Gateway::start(&template, &Upstream::start()).await;
    assert_failure(
        &gateway,
        "refused-2",
        502,
        "bad_gateway",
        "upstream_refused",
    )
    .await;
    // Both addresses were tried before giving up.
    let log = gateway.wait_for_log(|log| log.contains("tries: 2")).await;
    assert!(log.contains("tries: 2"), "{log}");
}

#[tokio::test]
async fn a_generated_request_id_is_in_the_header_and_the_body() {
    let (_healthy, gateway) = gateway_in_front_of(closed_addr(), "").await;
    let response = gateway.get("/failing/x", None).await;
    assert_eq!(response.status(), 502);
    let id = response
        .headers()
        .get("x-request-id")
        .expect("an X-Request-Id")
        .to_str()
        .unwrap()
        .to_owned();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["request_id"], id.as_str());
    gateway
        .expect_access_line(&id, &["error=\"upstream_refused\""])
        .await;
}

#[tokio::test]
async fn an_upstream_reset_answers_502() {
    let upstream = RawUpstream::start(Misbehaviour::Reset);
    let (_healthy, gateway) = gateway_in_front_of(upstream.addr, "").await;
    assert_failure(&gateway, "reset-1", 502, "bad_gateway", "upstream_reset").await;
}

#[tokio::test]
async fn an_upstream_hanging_up_without_answering_answers_502() {
    let upstream = RawUpstream::start(Misbehaviour::HangUp);
    let (_healthy, gateway) = gateway_in_front_of(upstream.addr, "").await;
    assert_failure(&gateway, "hangup-1", 502, "bad_gateway", "upstream_reset").await;
}

#[tokio::test]
async fn an_upstream_answering_garbage_answers_502() {
    let upstream = RawUpstream::start(Misbehaviour::Answer(
        b"SSH-2.0-OpenSSH_9.2 not http at all\r\n\r\n",
    ));
    let (_healthy, gateway) = gateway_in_front_of(upstream.addr, "").await;
    assert_failure(
        &gateway,
        "garbage-1",
        502,
        "bad_gateway",
        "upstream_bad_response",
    )
    .await;
}

#[tokio::test]
async fn an_upstream_sending_a_malformed_header_answers_502() {
    let upstream = RawUpstream::start(Misbehaviour::Answer(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nno colon here\r\n\r\nok",
    ));
    let (_healthy, gateway) = gateway_in_front_of(upstream.addr, "").await;
    assert_failure(
        &gateway,
        "malformed-1",
        502,
        "bad_gateway",
        "upstream_bad_response",
    )
    .await;
}

#[tokio::test]
async fn an_upstream_that_never_answers_times_out_with_504() {
    let upstream = RawUpstream::start(Misbehaviour::Silence);
    let (_healthy, gateway) = gateway_in_front_of(upstream.addr, ", read_timeout: 1s").await;
    assert_failure(
        &gateway,
        "silent-1",
        504,
        "gateway_timeout",
        "upstream_timeout",
    )
    .await;
}

/// A listener whose accept queue is full drops new SYNs (Linux), so a
/// connect to it neither succeeds nor fails: it times out, on loopback.
#[tokio::test]
async fn a_connect_that_hangs_times_out_with_504() {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().unwrap())
        .expect("bind the full listener");
    let listener = socket.listen(0).expect("listen with no backlog");
    let addr = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    loop {
        // Half a second to answer a loopback SYN is plenty: a connect that
        // takes longer was dropped, which means the queue is full.
        match tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await {
            Ok(stream) => queued.push(stream.expect("connect to fill the queue")),
            Err(_) => break,
        }
        assert!(queued.len() < 64, "the accept queue never filled up");
    }

    let (_healthy, gateway) = gateway_in_front_of(addr, ", connect_timeout: 1s").await;
    assert_failure(
        &gateway,
        "connect-timeout-1",
        504,
        "gateway_timeout",
        "upstream_connect_timeout",
    )
    .await;
    drop(listener);
}

#[tokio::test]
async fn an_upstream_failing_mid_response_closes_the_client_connection() {
    let upstream = RawUpstream::start(Misbehaviour::AnswerAndHangUp(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part",
    ));
    let (_healthy, gateway) = gateway_in_front_of(upstream.addr, "").await;
    let response = raw_request(
        gateway.proxy_addr(),
        "GET /failing/x HTTP/1.1\r\nHost: test\r\nX-Request-Id: midway-1",
    )
    .await;
    // The status line was already sent: all the client can be told is that
    // the body ends early.
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-length"), Some("100"));
    assert!(response.body.len() < 100, "{}", response.text());

    gateway
        .expect_access_line("midway-1", &["status=200", "error=\"upstream_reset\""])
        .await;
    let log = gateway.log();
    assert!(
        log.lines().any(|l| l.contains("midway-1")
            && l.contains("after its response had started")
            && l.contains("WARN")),
        "{log}"
    );
}

/// Pingora reads and parses the request head before any jwtgate code runs,
/// and answers what it can't parse itself: a bare 400 without our body or
/// request id, and no access-log line. Documented in docs/SECURITY.md.
#[tokio::test]
async fn an_unparsable_request_leaks_no_token_even_at_debug_level() {
    let upstream = Upstream::start();
    let gateway = Gateway::start_with_env(
        &config(closed_addr(), ""),
        &upstream,
        &[],
        &[("RUST_LOG", "debug")],
    )
    .await;
    let response = raw_request(
        gateway.proxy_addr(),
        "GET /ok/x HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer leaked-token-value\r\nBad Header: no",
    )
    .await;
    assert_eq!(response.status, 400);
    // Once a later request's access line is written, the refused one's
    // lines would be there too.
    raw_request(
        gateway.proxy_addr(),
        "GET /ok/x HTTP/1.1\r\nHost: test\r\nX-Request-Id: after-bad-head",
    )
    .await;
    gateway.access_line("after-bad-head").await;
    let log = gateway.log();
    assert!(log.contains(" DEBUG "), "debug logging is on: {log}");
    assert!(!log.contains("leaked-token-value"), "{log}");
}

#[tokio::test]
async fn requests_pingora_cannot_parse_get_its_bare_400() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&config(closed_addr(), ""), &upstream).await;
    // Pingora parses at most 256 headers.
    let too_many_headers: String = (0..300).map(|i| format!("\r\nX-H{i}: v")).collect();
    for head in [
        "GET /ok/x HTTP/9.9\r\nHost: test".to_owned(),
        "GET\r\nHost: test".to_owned(),
        "GET /ok/x HTTP/1.1\r\nHost: test\r\nBad Header: no".to_owned(),
        format!("GET /ok/x HTTP/1.1\r\nHost: test{too_many_headers}"),
        "GET /ok/x HTTP/1.1\r\nHost: a.test\r\nHost: b.test".to_owned(),
        "GET http://a.test/ok/x HTTP/1.1\r\nHost: b.test".to_owned(),
        "POST /ok/x HTTP/1.1\r\nHost: test\r\nContent-Length: 1\r\nContent-Length: 2".to_owned(),
        "POST /ok/x HTTP/1.0\r\nHost: test\r\nTransfer-Encoding: chunked".to_owned(),
        "POST /ok/x HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: gzip".to_owned(),
        "GET /ok/x HTTP/1.1\r\nHost: test\r\nX-Nul: a\0b".to_owned(),
    ] {
        let response = raw_request(gateway.proxy_addr(), &head).await;
        assert_eq!(response.status, 400, "{head:?}");
        assert!(response.body.is_empty(), "{head:?}: {}", response.text());
        assert_eq!(response.header("content-length"), Some("0"), "{head:?}");
        assert_eq!(response.header("server"), Some("Pingora"), "{head:?}");
        assert_eq!(response.header("x-request-id"), None, "{head:?}");
    }
    assert_eq!(upstream.count(), 0);

    // The 400s were written before this request was sent: had they been
    // logged or counted, their lines would be there by the time this one is.
    let response = raw_request(
        gateway.proxy_addr(),
        "GET /ok/x HTTP/1.1\r\nHost: test\r\nX-Request-Id: after-400",
    )
    .await;
    assert_eq!(response.status, 200);
    gateway.access_line("after-400").await;
    let log = gateway.log();
    let access_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("jwtgate::access"))
        .collect();
    assert_eq!(access_lines.len(), 1, "{log}");
    gateway
        .expect_metric(REQUESTS, &[("status", "200")], 1.0)
        .await;
    assert_eq!(gateway.metric(REQUESTS, &[("status", "400")]).await, 0.0);
}

/// Writes `request` on a fresh connection, half-closes it if asked, and
/// reads whatever comes back until the gateway closes. The upstreams of
/// these tests never answer, so whatever comes back is about the client.
async fn exchange(gateway: &Gateway, request: &[u8], half_close: bool) -> Vec<u8> {
    let mut stream = TcpStream::connect(gateway.proxy_addr())
        .await
        .expect("connect to the gateway");
    stream.write_all(request).await.expect("write the request");
    if half_close {
        stream.shutdown().await.expect("half-close");
    }
    let mut answer = Vec::new();
    // A guard against a hung connection, not a latency assertion.
    tokio::time::timeout(Duration::from_secs(90), stream.read_to_end(&mut answer))
        .await
        .expect("the gateway closes the connection")
        .unwrap_or_default();
    answer
}

fn json_body(answer: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(answer);
    let (_, body) = text.split_once("\r\n\r\n").expect("a complete response");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test]
async fn a_malformed_request_body_answers_400_with_our_body() {
    let upstream = RawUpstream::start(Misbehaviour::Silence);
    let (_healthy, gateway) = gateway_in_front_of(upstream.addr, "").await;
    let answer = exchange(
        &gateway,
        b"POST /failing/x HTTP/1.1\r\nHost: test\r\nX-Request-Id: chunks-1\r\n\
          Transfer-Encoding: chunked\r\n\r\nnot-a-chunk-size\r\n",
        false,
    )
    .await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("x-request-id: chunks-1"),
        "{text}"
    );
    let body = json_body(&answer);
    assert_eq!(body["error"], "bad_request", "{text}");
    assert_eq!(body["request_id"], "chunks-1", "{text}");
    gateway
        .expect_access_line("chunks-1", &["status=400", "error=\"client_bad_request\""])
        .await;
    assert_no_error_line(&gateway);
}

#[tokio::test]
async fn a_client_leaving_mid_body_is_logged_without_an_answer() {
    let upstream = RawUpstream::start(Misbehaviour::Silence);
    let (_healthy, gateway) = gateway_in_front_of(upstream.addr, "").await;
    let answer = exchange(
        &gateway,
        b"POST /failing/x HTTP/1.1\r\nHost: test\r\nX-Request-Id: gone-1\r\n\
          Content-Length: 100\r\n\r\nten bytes.",
        true,
    )
    .await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    gateway
        .expect_access_line("gone-1", &["status=- ", "error=\"client_disconnected\""])
        .await;
    // No status was sent: counted as 0, with who failed.
    let labels = [("status", "0"), ("error", "client_disconnected")];
    gateway.expect_metric(REQUESTS, &labels, 1.0).await;
    assert_no_error_line(&gateway);
}

/// What a client did wrong is in its access-log line; an ERROR line per
/// request besides would let any client write them at will.
fn assert_no_error_line(gateway: &Gateway) {
    let log = gateway.log();
    assert!(
        !log.lines().any(|line| line.contains("Fail to proxy")),
        "{log}"
    );
}

/// `server.client_body_timeout` bounds a client's pause between two reads
/// of its request body (Pingora's own default is 60 seconds).
#[tokio::test]
async fn a_client_stalling_its_body_gets_408() {
    let upstream = RawUpstream::start(Misbehaviour::Silence);
    // The upstream waits longer than the client is given.
    let routes = ROUTES
        .replace("{FAILING}", &upstream.addr.to_string())
        .replace("{OPTIONS}", ", read_timeout: 120s");
    let config = Config::new()
        .server("client_body_timeout: 1s")
        .routes(&routes);
    let healthy = Upstream::start();
    let gateway = Gateway::start(&config, &healthy).await;
    let answer = exchange(
        &gateway,
        b"POST /failing/x HTTP/1.1\r\nHost: test\r\nX-Request-Id: stall-1\r\n\
          Content-Length: 100\r\n\r\nten bytes.",
        false,
    )
    .await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert_eq!(json_body(&answer)["error"], "request_timeout", "{text}");
    gateway
        .expect_access_line("stall-1", &["error=\"client_timeout\""])
        .await;
    assert_no_error_line(&gateway);
}

/// Pingora stops reading a request head past 1 MiB. The head here is never
/// finished, and exactly one byte too long, so Pingora has read all of it
/// when it answers and the answer can't be lost to a reset.
#[tokio::test]
async fn an_oversized_request_head_gets_pingoras_bare_400() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&config(closed_addr(), ""), &upstream).await;
    let mut head = b"GET /ok/x HTTP/1.1\r\nHost: test\r\nX-Big: ".to_vec();
    head.resize(1024 * 1024, b'a');
    let answer = exchange(&gateway, &head, false).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    assert!(text.contains("Content-Length: 0\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\n"), "an empty body: {text}");
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn connect_gets_pingoras_bare_405() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&config(closed_addr(), ""), &upstream).await;
    let response = raw_request(
        gateway.proxy_addr(),
        "CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443",
    )
    .await;
    assert_eq!(response.status, 405);
    assert!(response.body.is_empty(), "{}", response.text());
    assert_eq!(response.header("x-request-id"), None);
    assert_eq!(upstream.count(), 0);
}

/// Any client can do this on every connection: counted, and summed up in
/// the log rather than written there each time.
#[tokio::test]
async fn a_client_leaving_mid_head_gets_no_answer_and_is_counted() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&config(closed_addr(), ""), &upstream).await;
    let answer = exchange(&gateway, b"GET /ok/x HTTP/1.1\r\nHost: te", true).await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    gateway
        .expect_metric(
            "jwtgate_client_connection_errors_total",
            &[("reason", "peer_closed")],
            1.0,
        )
        .await;
    let summary = gateway
        .log_line("connection_broke_before_request: peer_closed=1")
        .await;
    assert!(
        summary.contains(" WARN jwtgate::client_errors:"),
        "{summary}"
    );
    let log = gateway.log();
    assert!(!log.contains("while reading request headers"), "{log}");
    assert!(!log.contains("jwtgate::access"), "{log}");
}

/// A `100 Continue` passed on is not an answer: the failure after it still
/// gets one.
#[tokio::test]
async fn an_upstream_failing_after_100_continue_still_gets_an_answer() {
    let upstream = RawUpstream::start(Misbehaviour::AnswerAndHangUp(
        b"HTTP/1.1 100 Continue\r\n\r\n",
    ));
    let (_healthy, gateway) = gateway_in_front_of(upstream.addr, "").await;
    let answer = exchange(
        &gateway,
        b"POST /failing/x HTTP/1.1\r\nHost: test\r\nX-Request-Id: continue-1\r\n\
          Expect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        false,
    )
    .await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (interim, final_answer) = text.split_once("\r\n\r\n").expect("two responses");
    assert!(interim.starts_with("HTTP/1.1 100 "), "{text:?}");
    assert!(final_answer.starts_with("HTTP/1.1 502 "), "{text:?}");
    assert_eq!(
        json_body(final_answer.as_bytes())["request_id"],
        "continue-1"
    );
    gateway
        .expect_access_line("continue-1", &["status=502", "error=\"upstream_reset\""])
        .await;
}
