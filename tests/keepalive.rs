//! How long connections are kept with nothing on them, on both sides of the
//! gateway: `server.keepalive_timeout` for clients (HTTP/1 and HTTP/2),
//! `upstream.keepalive_timeout` and `server.upstream_keepalive` for the
//! pool of upstream connections.
//!
//! The settings here are far below their defaults (60 s, and 128 per
//! worker), and every wait is bounded well below the defaults, so a
//! gateway that ignored a setting fails the test instead of passing late.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Barrier, mpsc};

/// Well under the 60 s defaults: a connection still open this long after
/// its timeout of 1 s was not closed by that timeout.
const BOUND: Duration = Duration::from_secs(30);

/// What the upstream answers to every request.
const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// An upstream that answers every request on a connection until the
/// gateway closes it, and reports each connection's opening and closing.
/// The first `hold` connections each wait, before their first answer,
/// until all of them are open: the gateway then holds that many at once.
struct CountingUpstream {
    addr: SocketAddr,
    events: mpsc::UnboundedReceiver<Event>,
    _server: TcpServer,
}

#[derive(Debug, PartialEq)]
enum Event {
    Opened,
    /// The gateway closed a connection, after this many requests on it.
    Closed(usize),
}

impl CountingUpstream {
    fn start(hold: usize) -> Self {
        let (sender, events) = mpsc::unbounded_channel();
        let barrier = Arc::new(Barrier::new(hold.max(1)));
        let held = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let server = TcpServer::start("counting-upstream", loopback, move |stream| {
            let sender = sender.clone();
            let barrier = Arc::clone(&barrier);
            let wait = held.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < hold;
            async move {
                let _ = sender.send(Event::Opened);
                let served = serve(stream, wait.then_some(barrier)).await;
                let _ = sender.send(Event::Closed(served));
            }
        });
        Self {
            addr: server.addr(),
            events,
            _server: server,
        }
    }

    async fn next(&mut self) -> Event {
        tokio::time::timeout(BOUND, self.events.recv())
            .await
            .expect("the upstream hears of a connection within the bound")
            .expect("the upstream is running")
    }
}

/// Answers each request head on `stream` until the peer closes; how many
/// it answered.
async fn serve(mut stream: TcpStream, barrier: Option<Arc<Barrier>>) -> usize {
    let mut served = 0;
    let mut pending = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            pending.drain(..end + 4);
            if served == 0
                && let Some(barrier) = &barrier
            {
                barrier.wait().await;
            }
            if stream.write_all(ANSWER).await.is_err() {
                return served;
            }
            served += 1;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return served,
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
        }
    }
}

fn route_to(upstream: SocketAddr, options: &str) -> String {
    format!(
        r#"
  - name: counted
    upstream: {{ addrs: ["{upstream}"]{options} }}
    auth: {{ mode: off }}
"#
    )
}

/// Reads one response (head and a `content-length` body) off `stream`,
/// leaving the connection open.
async fn read_response(stream: &mut TcpStream) -> RawResponse {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(response) = parse_head(&received) {
            let length = response
                .header("content-length")
                .map_or(0, |v| v.parse().unwrap());
            if response.body.len() >= length {
                return response;
            }
        }
        let n = stream.read(&mut chunk).await.expect("read the response");
        assert!(n > 0, "the connection closed mid-response");
        received.extend_from_slice(&chunk[..n]);
    }
}

/// Waits for the gateway to close `stream`, within [`BOUND`].
async fn closed_by_gateway(stream: &mut TcpStream) {
    let mut rest = Vec::new();
    tokio::time::timeout(BOUND, stream.read_to_end(&mut rest))
        .await
        .expect("the gateway closes the idle connection")
        .expect("read to the end");
    assert!(rest.is_empty(), "nothing more was sent: {rest:?}");
}

#[tokio::test]
async fn an_idle_http1_client_is_closed_after_server_keepalive_timeout() {
    let upstream = Upstream::start();
    let config = Config::new()
        .server("keepalive_timeout: 1s")
        .routes(OPEN_ROUTE);
    let gateway = Gateway::start(&config, &upstream).await;
    let mut client = TcpStream::connect(gateway.proxy_addr()).await.unwrap();
    client
        .write_all(b"GET /first HTTP/1.1\r\nHost: keepalive.test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut client).await.status, 200);
    closed_by_gateway(&mut client).await;

    // A connection that never sends a request gets the same wait.
    let mut silent = TcpStream::connect(gateway.proxy_addr()).await.unwrap();
    closed_by_gateway(&mut silent).await;
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn an_idle_http2_client_is_sent_goaway_after_server_keepalive_timeout() {
    let upstream = Upstream::start();
    let config = Config::new()
        .server("keepalive_timeout: 1s")
        .listen(r#"{ http: { addr: "127.0.0.1:{PROXY}", h2c: true } }"#)
        .routes(OPEN_ROUTE);
    let gateway = Gateway::start(&config, &upstream).await;
    let tcp = TcpStream::connect(gateway.proxy_addr()).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("an HTTP/2 connection with prior knowledge");
    let connection = tokio::spawn(connection);
    let request = hyper::Request::get("http://keepalive.test/h2")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.expect("a response");
    assert_eq!(response.status(), 200);
    drop(response);
    tokio::time::timeout(BOUND, connection)
        .await
        .expect("the gateway ends the idle HTTP/2 connection")
        .unwrap()
        .expect("ended with GOAWAY, not an error");
    assert_eq!(upstream.last().path, "/h2");
}

#[tokio::test]
async fn an_unused_upstream_connection_is_closed_after_upstream_keepalive_timeout() {
    let mut upstream = CountingUpstream::start(0);
    let routes = route_to(upstream.addr, ", keepalive_timeout: 1s");
    let gateway = Gateway::start(&Config::new().routes(&routes), &Upstream::start()).await;
    // Two requests in a row share one upstream connection...
    assert_eq!(gateway.status("/one", None).await, 200);
    assert_eq!(gateway.status("/two", None).await, 200);
    assert_eq!(upstream.next().await, Event::Opened);
    // ...which the gateway closes once it has sat unused for 1 s.
    assert_eq!(upstream.next().await, Event::Closed(2));
    // The next request opens a new one instead of reusing the closed one.
    assert_eq!(gateway.status("/three", None).await, 200);
    assert_eq!(upstream.next().await, Event::Opened);
}

#[tokio::test]
async fn the_upstream_pool_keeps_at_most_server_upstream_keepalive_connections() {
    // Two requests held at the upstream until both are there: two
    // connections, only one of which the pool may keep.
    let mut upstream = CountingUpstream::start(2);
    let config = Config::new()
        .default_server()
        .server("threads: 1, upstream_keepalive: 1")
        .routes(&route_to(upstream.addr, ""));
    let gateway = Gateway::start(&config, &Upstream::start()).await;
    let (first, second) = tokio::join!(gateway.status("/a", None), gateway.status("/b", None));
    assert_eq!((first, second), (200, 200));
    assert_eq!(upstream.next().await, Event::Opened);
    assert_eq!(upstream.next().await, Event::Opened);
    // One is closed as soon as it is put back, long before the 60 s
    // keep-alive timeout; the other stays and serves the next request.
    assert_eq!(upstream.next().await, Event::Closed(1));
    assert_eq!(gateway.status("/c", None).await, 200);
    assert_eq!(gateway.status("/d", None).await, 200);
    drop(gateway);
    assert_eq!(upstream.next().await, Event::Closed(3));
}
