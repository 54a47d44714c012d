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

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::{ALPN, Stream};
use pingora::server::ShutdownWatch;
use socket2::SockRef;
use tokio::sync::watch;

use crate::memory;
use crate::shutdown::Drain;

/// How long a connection may sit idle before its first or next request:
/// Pingora's own keep-alive default, and nginx's `client_header_timeout`.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// `app` with its client connections counted by the drain, and HTTP/1
/// connections served one request at a time by a task of their own, with
/// the wait between requests done here. HTTP/2 (negotiated or prior
/// knowledge) goes to `app` unchanged.
pub struct KeepAlive<A> {
    app: Arc<A>,
    drain: Drain,
    /// Set once the listener has closed: idle connections then end.
    closing: watch::Sender<bool>,
}

impl<A> KeepAlive<A> {
    pub fn new(app: A, drain: Drain) -> Self {
        Self {
            app: Arc::new(app),
            drain,
            closing: watch::channel(false).0,
        }
    }
}

/// What the wait for a request's first byte found.
#[derive(Debug, PartialEq, Eq)]
enum NextRequest {
    Arriving,
    /// The client closed, the wait timed out, or the listener closed.
    None,
}

#[async_trait]
impl<A> ServerApp for KeepAlive<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        _listener_shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let open = self.drain.open_connection();
        let draining = self.drain.draining_watch();
        if is_http2(&stream, self.app.server_options()) {
            let _open = open;
            let reused = ServerApp::process_new(&self.app, stream, &draining).await;
            memory::connection_closed();
            return reused;
        }
        // Pingora's task for this connection was sized for its TLS handshake
        // (about 9 KiB, whatever the listener); ending it here and carrying
        // on in a task sized for this loop keeps that off idle connections.
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let _open = open;
            this.serve_http1(stream, draining).await;
            memory::connection_closed();
        });
        None
    }

    async fn cleanup(&self) {
        self.closing.send_replace(true);
        self.app.http_cleanup().await;
    }
}

impl<A> KeepAlive<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn serve_http1(&self, mut stream: Stream, draining: ShutdownWatch) {
        loop {
            if self.next_request(&mut stream).await == NextRequest::None {
                return;
            }
            let mut session = ServerSession::new_http1(stream);
            // As Pingora does: no keep-alive once the drain has begun, so
            // the client reconnects elsewhere.
            let keepalive = (!*draining.borrow()).then_some(IDLE_TIMEOUT.as_secs());
            session.set_keepalive(keepalive);
            let Some(reused) = self.app.process_new_http(session, &draining).await else {
                return;
            };
            stream = reused.consume().0;
        }
    }

    async fn next_request(&self, stream: &mut Stream) -> NextRequest {
        let Some(tcp) = stream.as_any().downcast_ref::<TcpStream>() else {
            // A TLS stream cannot be asked without reading through it; the
            // request parser's own keep-alive wait applies.
            return NextRequest::Arriving;
        };
        match bytes_waiting(tcp) {
            Waiting::Bytes => return NextRequest::Arriving,
            Waiting::Closed => return NextRequest::None,
            Waiting::Nothing => {}
        }
        let mut closing = self.closing.subscribe();
        let mut first = [0u8; 1];
        tokio::select! {
            // Reads the first byte and puts it back for the request parser:
            // the only way through Pingora's stream to wait for readability.
            peeked = tokio::time::timeout(IDLE_TIMEOUT, stream.try_peek(&mut first)) => {
                match peeked {
                    Ok(Ok(true)) => NextRequest::Arriving,
                    _ => NextRequest::None,
                }
            }
            _ = closing.wait_for(|closing| *closing) => NextRequest::None,
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

enum Waiting {
    Bytes,
    Nothing,
    Closed,
}

/// Whether a request's bytes are already in the socket, without reading
/// them. Under load the next request usually is, and this one system call
/// is all the wait costs.
fn bytes_waiting(tcp: &TcpStream) -> Waiting {
    // SAFETY: the descriptor belongs to `tcp`, which outlives this borrow;
    // it is only peeked at, never closed or handed on.
    let fd = unsafe { BorrowedFd::borrow_raw(tcp.as_raw_fd()) };
    let mut byte = [MaybeUninit::<u8>::uninit(); 1];
    match SockRef::from(&fd).peek(&mut byte) {
        Ok(0) => Waiting::Closed,
        Ok(_) => Waiting::Bytes,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Waiting::Nothing,
        Err(_) => Waiting::Closed,
    }
}
