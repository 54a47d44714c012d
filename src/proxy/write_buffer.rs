//! The writes of an HTTP/1 response gathered into one send, in a buffer
//! held only while the connection is answering a request.
//!
//! Pingora writes a response's head and its body separately and flushes at
//! the end: unbuffered, each write would be a send of its own (a syscall,
//! and over TLS a record of its own). Pingora's listeners buffer writes
//! below every connection for that, allocated at accept and kept for the
//! connection's life: every idle connection held it, HTTP/2 ones too,
//! though `h2` gathers its frames itself. jwtgate's listeners have none;
//! HTTP/1 connections gather their writes here instead, in a buffer
//! allocated at a response's first write and released while the
//! connection waits for its next request.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::AsyncWrite;

/// One TCP segment on a 1500-byte MTU: what Pingora's listeners buffered.
/// A write this large or larger goes straight through.
pub const CAPACITY: usize = 1460;

#[derive(Debug, Default)]
pub struct WriteBuffer {
    pending: Vec<u8>,
}

impl WriteBuffer {
    /// Keeps `buf` for the next send, or sends what is kept first when
    /// `buf` would not fit beside it; a write of [`CAPACITY`] or more goes
    /// straight to `io`. Semantics as tokio's `BufWriter`.
    pub fn poll_write<W: AsyncWrite + ?Sized>(
        &mut self,
        mut io: Pin<&mut W>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.pending.len() + buf.len() > CAPACITY {
            ready!(self.poll_send(io.as_mut(), cx))?;
        }
        if buf.len() >= CAPACITY {
            return io.poll_write(cx, buf);
        }
        if self.pending.capacity() == 0 {
            self.pending.reserve_exact(CAPACITY);
        }
        self.pending.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    /// Sends what is kept; what `io` did not take yet stays kept.
    pub fn poll_send<W: AsyncWrite + ?Sized>(
        &mut self,
        mut io: Pin<&mut W>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        let mut sent = 0;
        let outcome = loop {
            if sent == self.pending.len() {
                break Poll::Ready(Ok(()));
            }
            match io.as_mut().poll_write(cx, &self.pending[sent..]) {
                Poll::Ready(Ok(0)) => break Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(written)) => sent += written,
                Poll::Ready(Err(error)) => break Poll::Ready(Err(error)),
                Poll::Pending => break Poll::Pending,
            }
        };
        self.pending.drain(..sent);
        outcome
    }

    pub fn poll_flush<W: AsyncWrite + ?Sized>(
        &mut self,
        mut io: Pin<&mut W>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        ready!(self.poll_send(io.as_mut(), cx))?;
        io.poll_flush(cx)
    }

    pub fn poll_shutdown<W: AsyncWrite + ?Sized>(
        &mut self,
        mut io: Pin<&mut W>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        ready!(self.poll_send(io.as_mut(), cx))?;
        io.poll_shutdown(cx)
    }

    /// Frees the buffer if nothing is kept in it: the connection is about
    /// to wait for its next request.
    pub fn release(&mut self) {
        if self.pending.is_empty() {
            self.pending = Vec::new();
        }
    }

    #[cfg(test)]
    fn allocated(&self) -> usize {
        self.pending.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    /// A transport that records each send it is given, taking at most
    /// `per_send` bytes of each.
    struct Recorder {
        sends: Vec<Vec<u8>>,
        per_send: usize,
        flushed: bool,
        shut: bool,
    }

    impl Recorder {
        fn new(per_send: usize) -> Self {
            Self {
                sends: Vec::new(),
                per_send,
                flushed: false,
                shut: false,
            }
        }

        fn received(&self) -> Vec<u8> {
            self.sends.concat()
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let taken = buf.len().min(self.per_send);
            self.sends.push(buf[..taken].to_vec());
            Poll::Ready(Ok(taken))
        }

        fn poll_flush(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushed = true;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shut = true;
            Poll::Ready(Ok(()))
        }
    }

    async fn write(buffer: &mut WriteBuffer, io: &mut Recorder, data: &[u8]) {
        let written = poll_fn(|cx| buffer.poll_write(Pin::new(&mut *io), cx, data))
            .await
            .unwrap();
        assert_eq!(written, data.len());
    }

    async fn flush(buffer: &mut WriteBuffer, io: &mut Recorder) {
        poll_fn(|cx| buffer.poll_flush(Pin::new(&mut *io), cx))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_response_head_and_body_leave_in_one_send_at_the_flush() {
        let mut io = Recorder::new(usize::MAX);
        let mut buffer = WriteBuffer::default();
        write(&mut buffer, &mut io, b"HTTP/1.1 200 OK\r\n\r\n").await;
        write(&mut buffer, &mut io, b"hello").await;
        assert!(io.sends.is_empty(), "sent before the flush");
        flush(&mut buffer, &mut io).await;
        assert_eq!(io.sends, vec![b"HTTP/1.1 200 OK\r\n\r\nhello".to_vec()]);
        assert!(io.flushed);
    }

    #[tokio::test]
    async fn a_large_write_goes_straight_through_after_what_was_kept() {
        let mut io = Recorder::new(usize::MAX);
        let mut buffer = WriteBuffer::default();
        let body = vec![b'x'; 4 * CAPACITY];
        write(&mut buffer, &mut io, b"head:").await;
        write(&mut buffer, &mut io, &body).await;
        assert_eq!(io.sends, vec![b"head:".to_vec(), body]);
    }

    #[tokio::test]
    async fn writes_overflowing_the_buffer_arrive_whole_and_in_order_over_partial_sends() {
        let mut io = Recorder::new(700);
        let mut buffer = WriteBuffer::default();
        let mut expected = Vec::new();
        for i in 0..100u8 {
            let chunk = vec![i; 100];
            write(&mut buffer, &mut io, &chunk).await;
            expected.extend_from_slice(&chunk);
        }
        flush(&mut buffer, &mut io).await;
        assert_eq!(io.received(), expected);
        assert!(io.sends.iter().all(|send| send.len() <= 700));
    }

    #[tokio::test]
    async fn the_buffer_is_freed_between_requests_and_only_when_empty() {
        let mut io = Recorder::new(usize::MAX);
        let mut buffer = WriteBuffer::default();
        assert_eq!(buffer.allocated(), 0, "allocated before any write");
        write(&mut buffer, &mut io, b"kept").await;
        buffer.release();
        assert!(buffer.allocated() >= CAPACITY, "freed while holding data");
        flush(&mut buffer, &mut io).await;
        buffer.release();
        assert_eq!(buffer.allocated(), 0);
        assert_eq!(io.received(), b"kept");
    }

    #[tokio::test]
    async fn shutdown_sends_what_was_kept_first() {
        let mut io = Recorder::new(usize::MAX);
        let mut buffer = WriteBuffer::default();
        write(&mut buffer, &mut io, b"last words").await;
        poll_fn(|cx| buffer.poll_shutdown(Pin::new(&mut io), cx))
            .await
            .unwrap();
        assert_eq!(io.received(), b"last words");
        assert!(io.shut);
    }
}
