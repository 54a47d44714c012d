//! Idle HTTP/1 keep-alive connections that cost a few KiB instead of a
//! whole request's state.
//!
//! Pingora waits for the next request on a kept-alive connection inside the
//! future of `process_new_http`, which is boxed and sized for the deepest
//! point of proxying a request (about 14 KiB), and allocates its 4 KiB header
//! buffer before the first byte arrives. An edge holds thousands of idle
//! client connections, so jwtgate waits for the first byte of each request
//! itself, in a small future, and starts Pingora's request handling only
//! once there is something to read. HTTP/2 connections, negotiated by ALPN
//! or seen by their preface on an h2c listener, go to a loop of jwtgate's
//! own ([`super::http2`]) in a task of their own.

use std::future::{Future, poll_fn};
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::{ALPN, Stream};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::deadline_io::DeadlineIo;
use super::http2;
use crate::memory;
use crate::shutdown::{Drain, OpenConnection};

/// How long a connection may sit idle before its first or next request,
/// unless `server.keepalive_timeout` says otherwise: Pingora's own
/// keep-alive default, and nginx's `client_header_timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The first bytes of an HTTP/2 connection with prior knowledge (h2c).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// `app` with its client connections counted by the drain, and HTTP/1
/// connections served one request at a time by a task of their own, with
/// the wait between requests done here. HTTP/2 (negotiated, or prior
/// knowledge on a listener with `h2c`) goes to `h2`: `app` itself, or
/// `app` wrapped for what only HTTP/2 streams need, so HTTP/1 requests
/// don't pay for the wrapper.
pub struct KeepAlive<A, H = A> {
    app: Arc<A>,
    h2: Arc<H>,
    drain: Drain,
    /// The longest wait for a request: HTTP/1's first or next, or an
    /// HTTP/2 stream.
    idle_timeout: Duration,
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
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            closing: watch::channel(false).0,
        }
    }

    /// Connections wait at most `timeout` for a request.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
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
        // Pingora's task for this connection was sized for its TLS handshake
        // (about 9 KiB, whatever the listener); ending it here and carrying
        // on in a task sized for what follows keeps that off idle
        // connections. One task per protocol, not one with a branch for
        // each: a task is as large as its largest branch, and HTTP/2's would
        // carry HTTP/1's wait state for nothing.
        let this = Arc::clone(self);
        if stream.selected_alpn_proto() == Some(ALPN::H2) {
            this.spawn_http2(stream, draining, open);
        } else {
            // Anything else is HTTP/1: jwtgate's listeners offer no other
            // protocol by ALPN. On an h2c listener, the first bytes tell.
            let prior_knowledge = stream.get_ssl_digest().is_none()
                && self.app.server_options().is_some_and(|o| o.h2c);
            tokio::spawn(async move {
                match this.serve_http1(stream, draining, prior_knowledge).await {
                    Some((h2c, draining)) => this.spawn_http2(h2c, draining, open),
                    None => this.closed(open),
                }
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
    H: HttpServerApp + Send + Sync + 'static,
{
    fn spawn_http2(self: Arc<Self>, stream: Stream, draining: ShutdownWatch, open: OpenConnection) {
        tokio::spawn(async move {
            http2::serve(&self.h2, stream, draining, self.idle_timeout).await;
            self.closed(open);
        });
    }

    fn closed(&self, open: OpenConnection) {
        drop(open);
        memory::connection_closed(self.drain.open_connections());
    }

    /// Serves HTTP/1 requests on `stream` until it closes or idles out.
    /// With `prior_knowledge`, a connection opening with HTTP/2's preface
    /// is handed back instead, untouched, for HTTP/2.
    async fn serve_http1(
        &self,
        stream: Stream,
        draining: ShutdownWatch,
        mut prior_knowledge: bool,
    ) -> Option<(Stream, ShutdownWatch)> {
        // One idle timer and one subscription to the listener's closing for
        // the whole connection, not one of each per request: registering a
        // timer and a waiter costs every request, and a kept-alive
        // connection carries thousands of them.
        let mut closing = self.closing.subscribe();
        let mut listener_closed = pin!(closing.wait_for(|closing| *closing));
        let mut idle = pin!(tokio::time::sleep(self.idle_timeout));
        let mut idle_since = Instant::now();
        // Wrapped once per connection, so a long-lived request on it can be
        // ended while idle (`DeadlineIo`).
        let mut io = DeadlineIo::new(stream);
        loop {
            io.release_write_buffer();
            let waiting = Waiting {
                idle: idle.as_mut(),
                timeout: self.idle_timeout,
                idle_since,
                listener_closed: listener_closed.as_mut(),
            };
            match next_request(&mut io, waiting, prior_knowledge).await {
                Arrival::Http1 => {}
                Arrival::Http2 => return Some((io.into_stream(), draining)),
                Arrival::None => return None,
            }
            // Only a connection's first bytes can be HTTP/2's preface.
            prior_knowledge = false;
            let mut session = ServerSession::new_http1(io);
            // As Pingora does: no keep-alive once the drain has begun, so
            // the client reconnects elsewhere.
            let keepalive = (!*draining.borrow()).then_some(self.idle_timeout.as_secs());
            session.set_keepalive(keepalive);
            let reused = self.app.process_new_http(session, &draining).await?;
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
    /// Armed for `timeout` after some earlier point of the connection;
    /// re-armed from `idle_since` when it fires early.
    idle: Pin<&'a mut Sleep>,
    timeout: Duration,
    idle_since: Instant,
    listener_closed: Pin<&'a mut C>,
}

/// What the wait for the next request ended with.
#[derive(Debug, PartialEq)]
enum Arrival {
    Http1,
    /// HTTP/2's preface, where it was looked for.
    Http2,
    /// Nothing will come: the client closed, the connection sat idle for
    /// its idle timeout, or the listener closed.
    None,
}

/// Whether a request is arriving on `io`, and with `prior_knowledge`,
/// whether it is HTTP/2's preface.
async fn next_request<C: Future>(
    io: &mut DeadlineIo,
    mut waiting: Waiting<'_, C>,
    prior_knowledge: bool,
) -> Arrival {
    let Some(tcp) = io.tcp() else {
        // A TLS stream cannot be read ahead of the request parser; the
        // parser's own keep-alive wait applies.
        return Arrival::Http1;
    };
    let deadline = waiting.idle_since + waiting.timeout;
    loop {
        tokio::select! {
            // The request first: a connection that has one is not idle.
            biased;
            arriving = poll_fn(|cx| read_ahead(tcp, cx, prior_knowledge)) => return arriving,
            () = waiting.idle.as_mut() => {
                // The timer was armed at an earlier request: the idle time
                // counts from the end of the last one.
                if Instant::now() >= deadline {
                    return Arrival::None;
                }
                waiting.idle.as_mut().reset(deadline);
            }
            _ = waiting.listener_closed.as_mut() => return Arrival::None,
        }
    }
}

/// Reads what the socket holds of the next request and hands it back to
/// the stream for the request parser (or HTTP/2's), once a request is
/// arriving; [`Arrival::None`] when the client closed. The buffer lives on the stack for the
/// length of one poll, never in the waiting future, so an idle connection
/// holds nothing for it, and a request costs the one read the parser would
/// have made itself.
fn read_ahead(tcp: &mut TcpStream, cx: &mut Context<'_>, prior_knowledge: bool) -> Poll<Arrival> {
    // Most request heads fit; the parser reads the rest of a larger one.
    // Left uninitialized: the wait polls this at least twice per request,
    // and zeroing 4 KiB each time is most of what the wait would cost.
    let mut head = [MaybeUninit::<u8>::uninit(); 4096];
    let mut read = ReadBuf::uninit(&mut head);
    match Pin::new(&mut *tcp).poll_read(cx, &mut read) {
        Poll::Pending => Poll::Pending,
        Poll::Ready(Ok(())) if read.filled().is_empty() => Poll::Ready(Arrival::None),
        Poll::Ready(Ok(())) => {
            let head = read.filled();
            tcp.rewind(head);
            Poll::Ready(if prior_knowledge && opens_http2(head) {
                Arrival::Http2
            } else {
                Arrival::Http1
            })
        }
        Poll::Ready(Err(_)) => Poll::Ready(Arrival::None),
    }
}

/// Whether `head`, a connection's first bytes, is HTTP/2's preface or the
/// start of it. Four bytes tell it from any HTTP/1 method (`PRI ` is the
/// preface's, reserved for it); a client that sent fewer in its first
/// segment is taken for HTTP/1, as Pingora does.
fn opens_http2(head: &[u8]) -> bool {
    head.len() >= 4 && H2_PREFACE.starts_with(&head[..head.len().min(H2_PREFACE.len())])
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream as TokioTcp};

    /// Not the default, so that a wait that ignored its setting would fail.
    const IDLE_TIMEOUT: Duration = Duration::from_secs(7);

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
        let (arrival, io) = arrive(stream, armed_at, idle_since, listener_closed, false).await;
        (arrival == Arrival::Http1).then_some(io)
    }

    async fn arrive(
        stream: Stream,
        armed_at: Instant,
        idle_since: Instant,
        listener_closed: impl Future<Output = ()>,
        prior_knowledge: bool,
    ) -> (Arrival, Box<DeadlineIo>) {
        let idle = pin!(tokio::time::sleep_until(armed_at + IDLE_TIMEOUT));
        let closed = pin!(listener_closed);
        let mut io = DeadlineIo::new(stream);
        let waiting = Waiting {
            idle,
            timeout: IDLE_TIMEOUT,
            idle_since,
            listener_closed: closed,
        };
        let arrival = next_request(&mut io, waiting, prior_knowledge).await;
        (arrival, io)
    }

    /// On an h2c listener the preface is told from an HTTP/1 request, and
    /// either stays readable for the parser that takes the connection.
    #[tokio::test(start_paused = true)]
    async fn the_first_bytes_tell_http2_with_prior_knowledge_from_http1() {
        for (sent, prior_knowledge, expected) in [
            (H2_PREFACE, true, Arrival::Http2),
            (H2_PREFACE, false, Arrival::Http1),
            (b"PRI * HTTP/2.0\r\n".as_slice(), true, Arrival::Http2),
            (b"POST / HTTP/1.1\r\n".as_slice(), true, Arrival::Http1),
            (b"PUT / HTTP/1.1\r\n".as_slice(), true, Arrival::Http1),
            (b"PR".as_slice(), true, Arrival::Http1),
        ] {
            let (stream, mut client) = connection().await;
            client.write_all(sent).await.unwrap();
            let start = Instant::now();
            let (arrival, io) = arrive(
                stream,
                start,
                start,
                std::future::pending(),
                prior_knowledge,
            )
            .await;
            assert_eq!(arrival, expected, "{:?}", String::from_utf8_lossy(sent));
            let mut stream = io.into_stream();
            let mut head = vec![0u8; sent.len()];
            stream.read_exact(&mut head).await.unwrap();
            assert_eq!(head, sent);
        }
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
