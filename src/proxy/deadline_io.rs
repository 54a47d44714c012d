//! The HTTP/1 client stream, wrapped so that a long-lived connection can be
//! ended while nothing flows on it.
//!
//! Pingora's proxy loop runs no hook while a WebSocket or a stream is idle:
//! nothing of jwtgate's is polled until a byte moves. But it polls the
//! client read whenever it waits, so the stream itself is where a deadline
//! can wake it. Unarmed, each poll costs one atomic load. Armed, a read or
//! write that would wait also polls the connection's [`KillSwitch`]; once
//! it fired, a read ends: with EOF after an upgrade (so Pingora calls
//! `request_body_filter` with the end of the stream, where the WebSocket
//! close frames are sent), with an error otherwise (the response is cut,
//! or an upload not yet answered gets `401`); and a blocked write fails.
//!
//! It also gathers each response's writes into one send ([`WriteBuffer`]).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use async_trait::async_trait;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, IO, Peek, Shutdown, SocketDigest, Ssl,
    Stream, TimingDigest, UniqueID, UniqueIDType,
};
use pingora::proxy::Session;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::write_buffer::WriteBuffer;
use crate::state::live::KillSwitch;

/// The client's stream: kept as a TCP stream when it is one, so the wait
/// between requests can read ahead on it.
// The wrapper is boxed once per connection; boxing the TCP stream inside it
// as well would cost a second allocation and a pointer chase per poll.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Inner {
    Tcp(TcpStream),
    Other(Stream),
}

#[derive(Debug)]
pub struct DeadlineIo {
    inner: Inner,
    armed: AtomicBool,
    /// Whether a fired switch ends reads with EOF (an upgraded connection)
    /// rather than an error.
    eof: AtomicBool,
    switch: Mutex<Option<Arc<KillSwitch>>>,
    writes: WriteBuffer,
}

impl DeadlineIo {
    pub fn new(stream: Stream) -> Box<Self> {
        let inner = if stream.as_any().is::<TcpStream>() {
            match stream.into_any().downcast::<TcpStream>() {
                Ok(tcp) => Inner::Tcp(*tcp),
                Err(_) => unreachable!("checked to be a TCP stream above"),
            }
        } else {
            Inner::Other(stream)
        };
        Box::new(Self {
            inner,
            armed: AtomicBool::new(false),
            eof: AtomicBool::new(false),
            switch: Mutex::new(None),
            writes: WriteBuffer::default(),
        })
    }

    /// The stream it wraps, for a connection that turned out to be HTTP/2:
    /// nothing was written to it yet.
    pub fn into_stream(self: Box<Self>) -> Stream {
        match self.inner {
            Inner::Tcp(tcp) => Box::new(tcp),
            Inner::Other(stream) => stream,
        }
    }

    /// The connection waits for its next request: the response's write
    /// buffer is freed until the next one.
    pub fn release_write_buffer(&mut self) {
        self.writes.release();
    }

    /// The wrapper around a stream Pingora hands back after a request.
    pub fn of(stream: Stream) -> Result<Box<Self>, Stream> {
        if stream.as_any().is::<Self>() {
            match stream.into_any().downcast::<Self>() {
                Ok(io) => Ok(io),
                Err(_) => unreachable!("checked to be a DeadlineIo above"),
            }
        } else {
            Err(stream)
        }
    }

    /// The wrapper under a request's session, when it has one (HTTP/1).
    pub fn in_session(session: &Session) -> Option<&Self> {
        let stream = session.as_downstream().stream()?;
        (**stream).as_any().downcast_ref::<Self>()
    }

    /// The TCP stream, for reading ahead of the request parser.
    pub fn tcp(&mut self) -> Option<&mut TcpStream> {
        match &mut self.inner {
            Inner::Tcp(tcp) => Some(tcp),
            Inner::Other(_) => None,
        }
    }

    /// From now on, `switch` firing ends the connection; `upgraded`: with
    /// EOF on the read side, so the WebSocket can be closed cleanly.
    pub fn arm(&self, switch: Arc<KillSwitch>, upgraded: bool) {
        *self.lock() = Some(switch);
        self.eof.store(upgraded, Ordering::Relaxed);
        self.armed.store(true, Ordering::Release);
    }

    pub fn disarm(&self) {
        self.armed.store(false, Ordering::Release);
        self.lock().take();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<KillSwitch>>> {
        self.switch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn switch(&self) -> Option<Arc<KillSwitch>> {
        // The only cost on an unarmed connection.
        if !self.armed.load(Ordering::Acquire) {
            return None;
        }
        self.lock().clone()
    }

    fn killed_read(&self) -> Poll<io::Result<()>> {
        if self.eof.load(Ordering::Relaxed) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Ready(Err(ended()))
        }
    }

    fn get(&self) -> &dyn IO {
        match &self.inner {
            Inner::Tcp(tcp) => tcp,
            Inner::Other(stream) => &**stream,
        }
    }

    /// `poll` of the write buffer over the inner stream, or the error a
    /// fired switch turns a wait into.
    fn write_or_end<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut WriteBuffer, Pin<&mut dyn IO>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let polled = poll(&mut self.writes, self.inner.pinned(), cx);
        if polled.is_pending()
            && let Some(switch) = self.switch()
            && switch.poll_fired(cx).is_ready()
        {
            return Poll::Ready(Err(ended()));
        }
        polled
    }
}

impl Inner {
    fn pinned(&mut self) -> Pin<&mut dyn IO> {
        match self {
            Inner::Tcp(tcp) => Pin::new(tcp),
            Inner::Other(stream) => Pin::new(&mut **stream),
        }
    }
}

fn ended() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "long-lived connection ended")
}

impl AsyncRead for DeadlineIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(switch) = this.switch() else {
            return this.inner.pinned().poll_read(cx, buf);
        };
        if switch.fired().is_some() {
            return this.killed_read();
        }
        match this.inner.pinned().poll_read(cx, buf) {
            Poll::Pending if switch.poll_fired(cx).is_ready() => this.killed_read(),
            polled => polled,
        }
    }
}

impl AsyncWrite for DeadlineIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .write_or_end(cx, |writes, inner, cx| writes.poll_write(inner, cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .write_or_end(cx, |writes, inner, cx| writes.poll_flush(inner, cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.writes.poll_shutdown(this.inner.pinned(), cx)
    }
}

#[async_trait]
impl Shutdown for DeadlineIo {
    async fn shutdown(&mut self) {
        // What the response left unsent goes before the close, as it did
        // from the buffer Pingora's listener kept below the stream.
        let unsent = std::future::poll_fn(|cx| self.writes.poll_send(self.inner.pinned(), cx));
        if unsent.await.is_err() {
            return;
        }
        match &mut self.inner {
            Inner::Tcp(tcp) => Shutdown::shutdown(tcp).await,
            Inner::Other(stream) => Shutdown::shutdown(&mut **stream).await,
        }
    }
}

#[async_trait]
impl Peek for DeadlineIo {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        match &mut self.inner {
            Inner::Tcp(tcp) => tcp.try_peek(buf).await,
            Inner::Other(stream) => stream.try_peek(buf).await,
        }
    }
}

impl UniqueID for DeadlineIo {
    fn id(&self) -> UniqueIDType {
        self.get().id()
    }
}

impl Ssl for DeadlineIo {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.get().get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.get().get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.get().selected_alpn_proto()
    }
}

impl GetTimingDigest for DeadlineIo {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.get().get_timing_digest()
    }

    fn get_read_pending_time(&self) -> std::time::Duration {
        self.get().get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> std::time::Duration {
        self.get().get_write_pending_time()
    }
}

impl GetProxyDigest for DeadlineIo {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.get().get_proxy_digest()
    }
}

impl GetSocketDigest for DeadlineIo {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.get().get_socket_digest()
    }
}
