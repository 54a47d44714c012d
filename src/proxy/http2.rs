//! HTTP/2 client connections, each served by a loop of jwtgate's own.
//!
//! Pingora serves an HTTP/2 connection inside the future of its
//! `process_new`, boxed apart from the task and holding, beside `h2`'s
//! connection, room for its h2c preface peek and an idle timer jwtgate
//! never sets. An edge keeps thousands of HTTP/2 connections open with
//! nothing in flight, so the loop here holds `h2`'s connection and the
//! wait for its next stream or the drain, in the connection's own task.

use std::sync::Arc;

use pingora::apps::HttpServerApp;
use pingora::protocols::Digest;
use pingora::protocols::Stream;
use pingora::protocols::http::ServerSession;
use pingora::protocols::http::v2::server::{self, H2Accept, HttpSession};
use pingora::server::ShutdownWatch;

/// Streams refused as malformed (a forbidden byte in the target, an
/// ambiguous `Content-Length` or authority) before the connection is cut,
/// as Pingora's own loop counts them: each costs the gateway a response
/// and nothing of the client's.
const MAX_REFUSED_STREAMS: usize = 32;

/// Serves `stream` as HTTP/2 (its preface not read yet), each stream a
/// task of its own handed to `app`, until the client closes it or, once
/// `draining` fires, the streams in flight end (`GOAWAY` first).
pub async fn serve<A>(app: &Arc<A>, stream: Stream, mut draining: ShutdownWatch)
where
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
    let mut refused = 0;
    let mut closing = false;
    loop {
        let accepted = if closing {
            HttpSession::from_h2_conn(&mut connection, Arc::clone(&digest)).await
        } else {
            tokio::select! {
                // The drain first, so that a connection busy with new
                // streams still hears it.
                biased;
                _ = draining.changed() => {
                    // Streams already open or arriving below the last id
                    // the GOAWAY names are still served.
                    connection.graceful_shutdown();
                    closing = true;
                    continue;
                }
                accepted = HttpSession::from_h2_conn(&mut connection, Arc::clone(&digest)) => accepted,
            }
        };
        match accepted {
            Ok(Some(H2Accept::Session(session))) => {
                let app = Arc::clone(app);
                let draining = draining.clone();
                tokio::spawn(async move {
                    app.process_new_http(ServerSession::new_http2(session), &draining)
                        .await;
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
