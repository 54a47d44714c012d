//! HTTP/2 streams (gRPC, and any streamed response over h2 or h2c) that
//! outlive their token.
//!
//! Pingora runs each HTTP/2 stream as a task of its own, and no hook of
//! its proxy loop runs while no data flows, so an idle stream can't end
//! itself. [`StreamDeadlines`] wraps the proxy application: each HTTP/2
//! stream runs in a task-local slot a hook arms with the connection's
//! [`KillSwitch`], polled next to the request. Once the switch fires:
//!
//! - while data flows, either way, the body filters return an error, and
//!   `fail_to_proxy` ends the stream with `grpc-status: 16`
//!   (UNAUTHENTICATED) trailers ([`end_with_trailers`]);
//! - a stream with nothing to carry for [`GRACE`] is dropped: h2 resets it
//!   toward the client and the upstream (`RST_STREAM` CANCEL, a gRPC
//!   client's CANCELLED), and the access-log line the request would have
//!   written is written here, since Pingora's `logging` never runs for a
//!   dropped request.
//!
//! An HTTP/1 request passes through with one check; an HTTP/2 stream that
//! is never armed costs a task-local scope and a look at an empty slot per
//! poll.

use std::cell::OnceCell;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;
use http::{HeaderMap, HeaderValue, StatusCode};
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::protocols::Stream;
use pingora::protocols::http::ServerSession;
use pingora::protocols::http::v2::server::H2Options;
use pingora::proxy::Session;
use pingora::server::ShutdownWatch;
use tokio::time::Sleep;

use crate::state::live::{EndReason, KillSwitch};

/// How long a fired stream may go on carrying data before it is dropped:
/// data in either direction within it takes the trailers path, so a busy
/// stream ends UNAUTHENTICATED and only an idle one CANCELLED. Short
/// enough that a revoked stream ends within a second.
pub const GRACE: Duration = Duration::from_millis(500);

/// The `grpc-status` of a stream ended for its token: UNAUTHENTICATED.
const GRPC_UNAUTHENTICATED: HeaderValue = HeaderValue::from_static("16");

tokio::task_local! {
    /// The armed HTTP/2 stream of this task, if any.
    static STREAM: OnceCell<Arc<ArmedStream>>;
}

/// What [`StreamDeadlines`] needs of an armed stream.
struct ArmedStream {
    switch: Arc<KillSwitch>,
    /// Run once, when the stream is dropped.
    dropped: Mutex<Option<OnDrop>>,
}

/// What is done for a stream that is dropped instead of ending: its
/// access-log line and request count, for the reason it ended.
pub type OnDrop = Box<dyn FnOnce(EndReason) + Send>;

/// Arms the HTTP/2 stream this task serves: once `switch` fires it ends as
/// the module says, and `dropped` runs if it has to be dropped. `false`
/// outside an HTTP/2 stream (HTTP/1 has its own transport) or when the
/// stream was armed already.
pub fn arm_stream(switch: Arc<KillSwitch>, dropped: OnDrop) -> bool {
    let armed = Arc::new(ArmedStream {
        switch,
        dropped: Mutex::new(Some(dropped)),
    });
    STREAM
        .try_with(|slot| slot.set(armed).is_ok())
        .unwrap_or(false)
}

/// Whether the request is a gRPC call over HTTP/2: its `content-type` is
/// `application/grpc` or one of its `+proto`, `+json` forms. Armed from
/// its start, since a server-streaming call may send nothing, not even
/// its headers, for a long time.
pub fn is_grpc(session: &Session) -> bool {
    session.is_http2() && content_type_is(&session.req_header().headers, b"application/grpc")
}

/// Whether a response over HTTP/2 is a stream of server-sent events; any
/// other reply is left alone, since an HTTP/2 response often has no length
/// without being long-lived.
pub fn is_event_stream(session: &Session, response: &ResponseHeader) -> bool {
    session.is_http2() && content_type_is(&response.headers, b"text/event-stream")
}

fn content_type_is(headers: &HeaderMap, prefix: &[u8]) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(prefix))
}

/// Ends an HTTP/2 stream for `reason` with gRPC trailers
/// (`grpc-status: 16`, `grpc-message`), after a `200` with
/// `content-type: application/grpc` when no response had started: every
/// gRPC client reads that as UNAUTHENTICATED. The status written, for the
/// request's log (0: the client went away first).
pub async fn end_with_trailers(session: &mut Session, reason: EndReason) -> u16 {
    let downstream = session.as_downstream_mut();
    if downstream.response_written().is_none() {
        let mut header =
            ResponseHeader::build(StatusCode::OK, Some(1)).expect("a 200 header builds");
        let _ = header.insert_header(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        if downstream
            .write_response_header(Box::new(header))
            .await
            .is_err()
        {
            return 0;
        }
    }
    let mut trailers = HeaderMap::with_capacity(2);
    trailers.insert("grpc-status", GRPC_UNAUTHENTICATED);
    trailers.insert("grpc-message", HeaderValue::from_static(reason.message()));
    match downstream.write_response_trailers(trailers).await {
        Ok(()) => StatusCode::OK.as_u16(),
        Err(_) => 0,
    }
}

/// The proxy application `A` with its HTTP/2 streams ending when their
/// token does (see the module).
pub struct StreamDeadlines<A> {
    inner: Arc<A>,
}

impl<A> StreamDeadlines<A> {
    pub fn new(inner: Arc<A>) -> Self {
        Self { inner }
    }
}

#[async_trait]
impl<A> HttpServerApp for StreamDeadlines<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        // KeepAlive sends only HTTP/2 connections here; an HTTP/1 session
        // that still comes is served as it is.
        if !session.is_http2() {
            return self.inner.process_new_http(session, shutdown).await;
        }
        serve_stream(self.inner.process_new_http(session, shutdown))
            .await
            .flatten()
    }

    fn h2_options(&self) -> Option<H2Options> {
        self.inner.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.inner.server_options()
    }

    async fn http_cleanup(&self) {
        self.inner.http_cleanup().await;
    }

    async fn process_custom_session(
        self: Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        Arc::clone(&self.inner)
            .process_custom_session(stream, shutdown)
            .await
    }
}

/// Runs an HTTP/2 stream's `request` with the slot [`arm_stream`] fills:
/// `None` when it was dropped.
async fn serve_stream<F: Future>(request: F) -> Option<F::Output> {
    STREAM
        .scope(OnceCell::new(), async {
            match until_dropped(request).await {
                Ok(done) => Some(done),
                Err((armed, reason)) => {
                    let dropped = armed.dropped.lock();
                    let dropped = dropped.unwrap_or_else(PoisonError::into_inner).take();
                    if let Some(dropped) = dropped {
                        dropped(reason);
                    }
                    None
                }
            }
        })
        .await
}

/// Runs `request` to its end, unless the stream is armed, its switch
/// fires and [`GRACE`] passes without the request ending: then the request
/// is dropped (by returning), and the stream with the reason is returned.
async fn until_dropped<F>(request: F) -> Result<F::Output, (Arc<ArmedStream>, EndReason)>
where
    F: Future,
{
    let mut request = pin!(request);
    let mut grace: Option<Pin<Box<Sleep>>> = None;
    poll_fn(|cx| {
        if let Poll::Ready(done) = request.as_mut().poll(cx) {
            return Poll::Ready(Ok(done));
        }
        // Borrowed in place: a poll of an armed, live stream copies nothing.
        let fired = STREAM.with(|slot| {
            let armed = slot.get()?;
            match armed.switch.poll_fired(cx) {
                Poll::Ready(reason) => Some((Arc::clone(armed), reason)),
                Poll::Pending => None,
            }
        });
        let Some((armed, reason)) = fired else {
            return Poll::Pending;
        };
        // One timer, made only for a stream whose switch fired.
        let grace = grace.get_or_insert_with(|| Box::pin(tokio::time::sleep(GRACE)));
        match grace.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err((armed, reason))),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An [`OnDrop`] that keeps the reason it was run with.
    fn recorder() -> (OnDrop, Arc<Mutex<Option<EndReason>>>) {
        let seen = Arc::new(Mutex::new(None));
        let sink = Arc::clone(&seen);
        let on_drop: OnDrop = Box::new(move |reason| *sink.lock().unwrap() = Some(reason));
        (on_drop, seen)
    }

    #[tokio::test(start_paused = true)]
    async fn an_unarmed_stream_runs_to_its_end() {
        let done = serve_stream(async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            "done"
        })
        .await;
        assert_eq!(done, Some("done"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_fired_stream_is_dropped_after_the_grace() {
        let switch = Arc::new(KillSwitch::default());
        let fire = Arc::clone(&switch);
        let (on_drop, seen) = recorder();
        let started = tokio::time::Instant::now();
        let ended = serve_stream(async move {
            assert!(arm_stream(switch, on_drop));
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                fire.fire(EndReason::Expired);
            });
            // Never ends by itself: nothing flows.
            std::future::pending::<()>().await
        })
        .await;
        assert_eq!(ended, None);
        assert_eq!(*seen.lock().unwrap(), Some(EndReason::Expired));
        assert_eq!(started.elapsed(), Duration::from_secs(2) + GRACE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_ending_within_the_grace_ends_by_itself() {
        let switch = Arc::new(KillSwitch::default());
        let (on_drop, seen) = recorder();
        let ended = serve_stream(async move {
            assert!(arm_stream(Arc::clone(&switch), on_drop));
            switch.fire(EndReason::Revoked);
            // The trailers path: the next chunk's filter ends the request.
            tokio::time::sleep(GRACE / 2).await;
            "trailers"
        })
        .await;
        assert_eq!(ended, Some("trailers"));
        assert_eq!(*seen.lock().unwrap(), None, "not dropped");
    }

    #[tokio::test]
    async fn arming_needs_a_stream_and_happens_once() {
        let (on_drop, _) = recorder();
        assert!(!arm_stream(Arc::default(), on_drop), "outside an h2 stream");
        let twice = serve_stream(async {
            let first = arm_stream(Arc::default(), recorder().0);
            let second = arm_stream(Arc::default(), recorder().0);
            (first, second)
        })
        .await;
        assert_eq!(twice, Some((true, false)));
    }
}
