//! HTTP/2 client connections, each served by a loop of jwtgate's own.
//!
//! Pingora serves an HTTP/2 connection inside the future of its
//! `process_new`, boxed apart from the task and holding, beside `h2`'s
//! connection, room for its h2c preface peek and an idle timer jwtgate
//! never sets. An edge keeps thousands of HTTP/2 connections open with
//! nothing in flight, so the loop here holds `h2`'s connection and the
//! wait for its next stream, the drain or the idle timeout, in the
//! connection's own task.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use pingora::apps::HttpServerApp;
use pingora::protocols::Digest;
use pingora::protocols::Stream;
use pingora::protocols::http::ServerSession;
use pingora::protocols::http::v2::server::{self, H2Accept, HttpSession};
use pingora::server::ShutdownWatch;
use tokio::time::{Duration, Instant};

/// Streams refused as malformed (a forbidden byte in the target, an
/// ambiguous `Content-Length` or authority) before the connection is cut,
/// as Pingora's own loop counts them: each costs the gateway a response
/// and nothing of the client's.
const MAX_REFUSED_STREAMS: usize = 32;

/// How long a connection closed for idling waits for the client to close
/// it after `GOAWAY`, so that a client that never answers can't hold it.
const GOAWAY_GRACE: Duration = Duration::from_secs(5);

/// The streams of one connection still being served, and when the last
/// one ended: what tells an idle connection from a busy one.
struct Streams {
    open: AtomicUsize,
    /// Milliseconds from `since` to the end of the last stream.
    last_end_ms: AtomicU64,
    since: Instant,
}

impl Streams {
    fn new() -> Self {
        Self {
            open: AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(0),
            since: Instant::now(),
        }
    }

    /// Counts a stream open until the guard drops, however its task ends.
    fn open(self: &Arc<Self>) -> OpenStream {
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenStream(Arc::clone(self))
    }

    /// When the connection went idle; `None` while a stream is open.
    fn idle_since(&self) -> Option<Instant> {
        // Acquire: a stream that ended on another thread has stored its
        // end before it stopped counting itself open.
        (self.open.load(Ordering::Acquire) == 0)
            .then(|| self.since + Duration::from_millis(self.last_end_ms.load(Ordering::Relaxed)))
    }
}

struct OpenStream(Arc<Streams>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        let streams = &self.0;
        let ended = streams.since.elapsed().as_millis();
        streams
            .last_end_ms
            .store(u64::try_from(ended).unwrap_or(u64::MAX), Ordering::Relaxed);
        streams.open.fetch_sub(1, Ordering::Release);
    }
}

/// Serves `stream` as HTTP/2 (its preface not read yet), each stream a
/// task of its own handed to `app`, until the client closes it; once
/// `draining` fires, until the streams in flight end (`GOAWAY` first);
/// and once no stream has been open for `idle_timeout`, as HTTP/1's
/// keep-alive wait, after `GOAWAY` and at most [`GOAWAY_GRACE`] more.
pub async fn serve<A>(
    app: &Arc<A>,
    stream: Stream,
    mut draining: ShutdownWatch,
    idle_timeout: Duration,
) where
    A: HttpServerApp + Send + Sync + 'static,
{
    let digest = Arc::new(Digest {
        ssl_digest: stream.get_ssl_digest(),
        timing_digest: stream.get_timing_digest(),
        proxy_digest: stream.get_proxy_digest(),
        socket_digest: stream.get_socket_digest(),
    });
    let mut connection = match server::handshake(stream, app.h2_options()).await {
        Ok(connection) => connection,
        Err(error) => {
            tracing::debug!(%error, "HTTP/2 connection ended in its handshake");
            return;
        }
    };
    let streams = Arc::new(Streams::new());
    // One timer for the connection's life, re-armed only when it fires.
    let mut idle = pin!(tokio::time::sleep(idle_timeout));
    let mut refused = 0;
    let mut drain_heard = false;
    let mut idled_out = false;
    loop {
        let accepted = tokio::select! {
            // The drain first, so that a connection busy with new streams
            // still hears it.
            biased;
            _ = draining.changed(), if !drain_heard => {
                // Streams already open or arriving below the last id the
                // GOAWAY names are still served.
                connection.graceful_shutdown();
                drain_heard = true;
                continue;
            }
            () = idle.as_mut() => {
                match streams.idle_since() {
                    // A client that neither closes nor answers the GOAWAY's
                    // PING is not waited for.
                    Some(_) if idled_out => return,
                    None if idled_out => idle.as_mut().reset(Instant::now() + GOAWAY_GRACE),
                    Some(since) if since.elapsed() >= idle_timeout => {
                        // As for the drain, a request crossing the GOAWAY
                        // on the wire is still served.
                        connection.graceful_shutdown();
                        idled_out = true;
                        idle.as_mut().reset(Instant::now() + GOAWAY_GRACE);
                    }
                    Some(since) => idle.as_mut().reset(since + idle_timeout),
                    None => idle.as_mut().reset(Instant::now() + idle_timeout),
                }
                continue;
            }
            accepted = HttpSession::from_h2_conn(&mut connection, Arc::clone(&digest)) => accepted,
        };
        match accepted {
            Ok(Some(H2Accept::Session(session))) => {
                let app = Arc::clone(app);
                let draining = draining.clone();
                let open = streams.open();
                tokio::spawn(async move {
                    app.process_new_http(ServerSession::new_http2(session), &draining)
                        .await;
                    drop(open);
                });
            }
            Ok(Some(H2Accept::Rejected)) => {
                refused += 1;
                if refused >= MAX_REFUSED_STREAMS {
                    tracing::warn!(
                        refused,
                        "HTTP/2 connection cut after too many malformed requests"
                    );
                    return;
                }
            }
            // The client closed the connection, cleanly (`None`) or not.
            Ok(None) => return,
            Err(error) => {
                tracing::debug!(%error, "HTTP/2 connection ended");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use async_trait::async_trait;
    use bytes::Bytes;
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use pingora::apps::ReusedHttpStream;
    use pingora::http::ResponseHeader;
    use pingora::protocols::l4::stream::Stream as TcpStream;
    use tokio::net::{TcpListener, TcpStream as TokioTcp};
    use tokio::sync::watch;

    /// Not the default, so that a loop that ignored its setting would
    /// fail.
    const IDLE_TIMEOUT: Duration = Duration::from_secs(45);

    /// How long `/slow` takes to answer: longer than the idle timeout.
    const SLOW: Duration = Duration::from_secs(90);

    /// Answers `200`, at once or, on `/slow`, after [`SLOW`].
    struct Answer;

    #[async_trait]
    impl HttpServerApp for Answer {
        async fn process_new_http(
            self: &Arc<Self>,
            mut session: ServerSession,
            _shutdown: &ShutdownWatch,
        ) -> Option<ReusedHttpStream> {
            session.read_request().await.ok()?;
            if session.req_header().uri.path() == "/slow" {
                tokio::time::sleep(SLOW).await;
            }
            let head = ResponseHeader::build(200, None).ok()?;
            session.write_response_header(Box::new(head)).await.ok()?;
            session.write_response_body(Bytes::new(), true).await.ok()?;
            session.finish().await.ok()?;
            None
        }
    }

    /// A loopback connection whose far end [`serve`] serves in a task of
    /// its own (which ends with the connection), and the drain's sender.
    async fn served_connection() -> (TokioTcp, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TokioTcp::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (drain, draining) = watch::channel(false);
        let served: Stream = Box::new(TcpStream::from(server));
        tokio::spawn(async move { serve(&Arc::new(Answer), served, draining, IDLE_TIMEOUT).await });
        (client, drain)
    }

    /// A hyper HTTP/2 client on a [`served_connection`], whose connection
    /// task, what a test waits on, ends when the gateway closes it.
    async fn connection() -> (
        hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
        tokio::task::JoinHandle<()>,
        watch::Sender<bool>,
    ) {
        let (client, drain) = served_connection().await;
        let (sender, client) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client))
                .await
                .unwrap();
        let client = tokio::spawn(async move {
            client.await.unwrap();
        });
        (sender, client, drain)
    }

    /// Waits for the gateway to close the client's connection; fails a
    /// test whose connection would otherwise stay open for ever.
    async fn closed(client: tokio::task::JoinHandle<()>) {
        tokio::time::timeout(IDLE_TIMEOUT * 5, client)
            .await
            .expect("the gateway closes the connection")
            .unwrap();
    }

    async fn get(
        sender: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
        path: &str,
    ) -> u16 {
        let request = hyper::Request::get(format!("http://h2.test{path}"))
            .body(Empty::new())
            .unwrap();
        sender
            .send_request(request)
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed_after_the_idle_timeout() {
        let (mut sender, client, _drain) = connection().await;
        assert_eq!(get(&mut sender, "/").await, 200);
        let idle_since = Instant::now();
        closed(client).await;
        assert_eq!(idle_since.elapsed().as_secs(), IDLE_TIMEOUT.as_secs());
    }

    /// A stream open for longer than the idle timeout keeps its connection,
    /// and the idle time counts from the end of the last stream: were the
    /// open stream ignored, the `GOAWAY` at [`IDLE_TIMEOUT`] would close the
    /// connection as the stream ends.
    #[tokio::test(start_paused = true)]
    async fn the_idle_time_counts_from_the_end_of_the_last_stream() {
        let (mut sender, client, _drain) = connection().await;
        let start = Instant::now();
        assert_eq!(get(&mut sender, "/slow").await, 200);
        assert_eq!(start.elapsed().as_secs(), SLOW.as_secs());
        let idle_since = Instant::now();
        closed(client).await;
        assert_eq!(idle_since.elapsed().as_secs(), IDLE_TIMEOUT.as_secs());
    }

    /// The drain's `GOAWAY` ends an idle connection without waiting for
    /// the idle timeout.
    #[tokio::test(start_paused = true)]
    async fn the_drain_closes_an_idle_connection_at_once() {
        let (mut sender, client, drain) = connection().await;
        assert_eq!(get(&mut sender, "/").await, 200);
        let start = Instant::now();
        drain.send(true).unwrap();
        closed(client).await;
        assert!(start.elapsed() < IDLE_TIMEOUT);
    }

    const GOAWAY: u8 = 0x7;

    /// The type of each frame in `bytes`, read from the 9-byte headers.
    fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
        let mut types = Vec::new();
        while bytes.len() >= 9 {
            let length =
                usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
            types.push(bytes[3]);
            bytes = &bytes[(9 + length).min(bytes.len())..];
        }
        types
    }

    /// A client that never answers the `GOAWAY`'s `PING` nor closes is
    /// closed [`GOAWAY_GRACE`] after it.
    #[tokio::test(start_paused = true)]
    async fn a_client_that_ignores_the_goaway_is_not_waited_for() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, _drain) = served_connection().await;
        let start = Instant::now();
        // The preface and an empty SETTINGS frame; nothing is ever answered.
        client
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        let mut received = Vec::new();
        tokio::time::timeout(IDLE_TIMEOUT * 5, client.read_to_end(&mut received))
            .await
            .expect("the gateway closes the connection")
            .unwrap();
        assert_eq!(start.elapsed(), IDLE_TIMEOUT + GOAWAY_GRACE);
        assert!(frame_types(&received).contains(&GOAWAY), "{received:?}");
    }
}
