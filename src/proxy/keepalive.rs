//! Idle HTTP/1 keep-alive connections that cost a few KiB instead of a
//! whole request's state.
//!
//! Pingora waits for the next request on a kept-alive connection inside the
//! future of `process_new_http`, which is boxed and sized for the deepest
//! point of proxying a request (about 14 KiB), and allocates its 4 KiB header
//! buffer before the first byte arrives. An edge holds thousands of idle
//! client connections, so jwtgate waits for the first byte of each request
//! itself, in a small future, and starts Pingora's request handling only
//! once there is something to read.

use std::future::{Future, poll_fn};
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::{ALPN, Stream};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::deadline_io::DeadlineIo;
use crate::memory;
use crate::shutdown::Drain;

/// How long a connection may sit idle before its first or next request:
/// Pingora's own keep-alive default, and nginx's `client_header_timeout`.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// `app` with its client connections counted by the drain, and HTTP/1
/// connections served one request at a time by a task of their own, with
/// the wait between requests done here. HTTP/2 (negotiated or prior
/// knowledge) goes to `h2`: `app` itself, or `app` wrapped for what only
/// HTTP/2 streams need, so HTTP/1 requests don't pay for the wrapper.
pub struct KeepAlive<A, H = A> {
    app: Arc<A>,
    h2: Arc<H>,
    drain: Drain,
    /// Set once the listener has closed: idle connections then end.
    closing: watch::Sender<bool>,
}

impl<A> KeepAlive<A> {
    pub fn new(app: A, drain: Drain) -> Self {
        let app = Arc::new(app);
        Self::with_h2(Arc::clone(&app), app, drain)
    }
}

impl<A, H> KeepAlive<A, H> {
    /// HTTP/1 connections to `app`, HTTP/2 ones to `h2`.
    pub fn with_h2(app: Arc<A>, h2: Arc<H>, drain: Drain) -> Self {
        Self {
            app,
            h2,
            drain,
            closing: watch::channel(false).0,
        }
    }
}

#[async_trait]
impl<A, H> ServerApp for KeepAlive<A, H>
where
    A: HttpServerApp + Send + Sync + 'static,
    H: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        _listener_shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let open = self.drain.open_connection();
        let draining = self.drain.draining_watch();
        let http2 = is_http2(&stream, self.app.server_options());
        // Pingora's task for this connection was sized for its TLS handshake
        // (about 9 KiB, whatever the listener); ending it here and carrying
        // on in a task sized for what follows keeps that off idle
        // connections. One task per protocol, not one with a branch for
        // each: a task is as large as its largest branch, and HTTP/2's would
        // carry HTTP/1's wait state for nothing.
        let this = Arc::clone(self);
        if http2 {
            tokio::spawn(async move {
                let _open = open;
                // Pingora serves an HTTP/2 connection to its end and hands
                // nothing back for reuse (only a custom protocol would, and
                // jwtgate's listeners offer none).
                ServerApp::process_new(&this.h2, stream, &draining).await;
                memory::connection_closed();
            });
        } else {
            tokio::spawn(async move {
                let _open = open;
                this.serve_http1(stream, draining).await;
                memory::connection_closed();
            });
        }
        None
    }

    async fn cleanup(&self) {
        self.closing.send_replace(true);
        self.app.http_cleanup().await;
    }
}

impl<A, H> KeepAlive<A, H>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn serve_http1(&self, stream: Stream, draining: ShutdownWatch) {
        // One idle timer and one subscription to the listener's closing for
        // the whole connection, not one of each per request: registering a
        // timer and a waiter costs every request, and a kept-alive
        // connection carries thousands of them.
        let mut closing = self.closing.subscribe();
        let mut listener_closed = pin!(closing.wait_for(|closing| *closing));
        let mut idle = pin!(tokio::time::sleep(IDLE_TIMEOUT));
        let mut idle_since = Instant::now();
        // Wrapped once per connection, so a long-lived request on it can be
        // ended while idle (`DeadlineIo`).
        let mut io = DeadlineIo::new(stream);
        loop {
            io.release_write_buffer();
            let waiting = Waiting {
                idle: idle.as_mut(),
                idle_since,
                listener_closed: listener_closed.as_mut(),
            };
            if !next_request(&mut io, waiting).await {
                return;
            }
            let mut session = ServerSession::new_http1(io);
            // As Pingora does: no keep-alive once the drain has begun, so
            // the client reconnects elsewhere.
            let keepalive = (!*draining.borrow()).then_some(IDLE_TIMEOUT.as_secs());
            session.set_keepalive(keepalive);
            let Some(reused) = self.app.process_new_http(session, &draining).await else {
                return;
            };
            io = match DeadlineIo::of(reused.consume().0) {
                Ok(io) => io,
                Err(_) => unreachable!("Pingora hands back the stream it was given"),
            };
            idle_since = Instant::now();
        }
    }
}

/// What ends a wait for the next request besides the request itself.
struct Waiting<'a, C> {
    /// Armed for [`IDLE_TIMEOUT`] after some earlier point of the
    /// connection; re-armed from `idle_since` when it fires early.
    idle: Pin<&'a mut Sleep>,
    idle_since: Instant,
    listener_closed: Pin<&'a mut C>,
}

/// Whether a request is arriving on `io`; false when the client closed,
/// the connection sat idle for [`IDLE_TIMEOUT`], or the listener closed.
async fn next_request<C: Future>(io: &mut DeadlineIo, mut waiting: Waiting<'_, C>) -> bool {
    let Some(tcp) = io.tcp() else {
        // A TLS stream cannot be read ahead of the request parser; the
        // parser's own keep-alive wait applies.
        return true;
    };
    let deadline = waiting.idle_since + IDLE_TIMEOUT;
    loop {
        tokio::select! {
            // The request first: a connection that has one is not idle.
            biased;
            arriving = poll_fn(|cx| read_ahead(tcp, cx)) => return arriving,
            () = waiting.idle.as_mut() => {
                // The timer was armed at an earlier request: the idle time
                // counts from the end of the last one.
                if Instant::now() >= deadline {
                    return false;
                }
                waiting.idle.as_mut().reset(deadline);
            }
            _ = waiting.listener_closed.as_mut() => return false,
        }
    }
}

/// HTTP/2 by ALPN or by prior knowledge (h2c), or a custom protocol: all
/// of which Pingora's own connection handling serves.
fn is_http2(stream: &Stream, options: Option<&HttpServerOptions>) -> bool {
    let prior_knowledge = options.is_some_and(|o| o.h2c || o.force_custom);
    prior_knowledge
        || matches!(
            stream.selected_alpn_proto(),
            Some(ALPN::H2) | Some(ALPN::Custom(_))
        )
}

/// Reads what the socket holds of the next request and hands it back to
/// the stream for the request parser: true once a request is arriving,
/// false when the client closed. The buffer lives on the stack for the
/// length of one poll, never in the waiting future, so an idle connection
/// holds nothing for it, and a request costs the one read the parser would
/// have made itself.
fn read_ahead(tcp: &mut TcpStream, cx: &mut Context<'_>) -> Poll<bool> {
    // Most request heads fit; the parser reads the rest of a larger one.
    // Left uninitialized: the wait polls this at least twice per request,
    // and zeroing 4 KiB each time is most of what the wait would cost.
    let mut head = [MaybeUninit::<u8>::uninit(); 4096];
    let mut read = ReadBuf::uninit(&mut head);
    match Pin::new(&mut *tcp).poll_read(cx, &mut read) {
        Poll::Pending => Poll::Pending,
        Poll::Ready(Ok(())) if read.filled().is_empty() => Poll::Ready(false),
        Poll::Ready(Ok(())) => {
            tcp.rewind(read.filled());
            Poll::Ready(true)
        }
        Poll::Ready(Err(_)) => Poll::Ready(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream as TokioTcp};

    /// A connected pair on loopback: jwtgate's side as Pingora's stream,
    /// and the client's.
    async fn connection() -> (Stream, TokioTcp) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TokioTcp::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Box::new(TcpStream::from(server)), client)
    }

    /// Waits as a connection does between requests, with its idle timer
    /// armed at `armed_at` and its last request ended at `idle_since`.
    async fn wait(
        stream: Stream,
        armed_at: Instant,
        idle_since: Instant,
        listener_closed: impl Future<Output = ()>,
    ) -> Option<Box<DeadlineIo>> {
        let idle = pin!(tokio::time::sleep_until(armed_at + IDLE_TIMEOUT));
        let closed = pin!(listener_closed);
        let mut io = DeadlineIo::new(stream);
        next_request(
            &mut io,
            Waiting {
                idle,
                idle_since,
                listener_closed: closed,
            },
        )
        .await
        .then_some(io)
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_ends_after_the_idle_timeout() {
        let (stream, _client) = connection().await;
        let start = Instant::now();
        let outcome = wait(stream, start, start, std::future::pending()).await;
        assert!(outcome.is_none());
        assert_eq!(start.elapsed().as_secs(), IDLE_TIMEOUT.as_secs());
    }

    /// The timer is armed once per connection: when it fires after a later
    /// request, the wait goes on until the idle time since that request.
    #[tokio::test(start_paused = true)]
    async fn the_idle_time_counts_from_the_end_of_the_last_request() {
        let (stream, _client) = connection().await;
        let armed_at = Instant::now();
        tokio::time::advance(Duration::from_secs(40)).await;
        let idle_since = Instant::now();
        let outcome = wait(stream, armed_at, idle_since, std::future::pending()).await;
        assert!(outcome.is_none());
        assert_eq!(idle_since.elapsed().as_secs(), IDLE_TIMEOUT.as_secs());
        assert_eq!(armed_at.elapsed().as_secs(), 40 + IDLE_TIMEOUT.as_secs());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_ends_the_wait_and_its_bytes_stay_readable() {
        let (stream, mut client) = connection().await;
        let start = Instant::now();
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut stream = wait(stream, start, start, std::future::pending())
            .await
            .expect("a request is arriving");
        let mut head = [0u8; 16];
        stream.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_closes_ends_the_wait_at_once() {
        let (stream, client) = connection().await;
        drop(client);
        let start = Instant::now();
        assert!(
            wait(stream, start, start, std::future::pending())
                .await
                .is_none()
        );
        assert!(start.elapsed() < IDLE_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn the_listener_closing_ends_the_wait() {
        let (stream, _client) = connection().await;
        let start = Instant::now();
        let outcome = wait(stream, start, start, std::future::ready(())).await;
        assert!(outcome.is_none());
        assert!(start.elapsed() < IDLE_TIMEOUT);
    }
}
