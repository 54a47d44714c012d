//! The recording upstream: a real HTTP/1.1 server that keeps every request
//! it receives for the test to read back.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query, exactly as received.
    pub path: String,
    /// Lower-case header name → every value, in arrival order.
    pub headers: BTreeMap<String, Vec<String>>,
}

impl Recorded {
    /// The first value of a header (name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .and_then(|values| values.first())
            .map(String::as_str)
    }

    /// Every value of a header (name in any case).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(|values| values.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.headers.contains_key(&name.to_ascii_lowercase())
    }
}

/// A TCP server on its own thread and current-thread runtime, so it keeps
/// serving whatever the test's runtime is doing: every connection goes to
/// `serve`, on a task of its own. Stopped and joined when dropped.
pub struct TcpServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TcpServer {
    /// Binds `addr` (port 0: one the OS picks) and starts serving; `name`
    /// and the port name the thread.
    pub fn start<S, F>(name: &str, addr: SocketAddr, serve: S) -> Self
    where
        S: Fn(tokio::net::TcpStream) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let listener =
            StdTcpListener::bind(addr).unwrap_or_else(|e| panic!("bind the {name} on {addr}: {e}"));
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("server address");
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("{name}-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("server runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    loop {
                        tokio::select! {
                            _ = &mut stopped => break,
                            accepted = listener.accept() => {
                                if let Ok((stream, _)) = accepted {
                                    tokio::spawn(serve(stream));
                                }
                            }
                        }
                    }
                });
            })
            .expect("spawn the server thread");
        Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A real HTTP/1.1 server on 127.0.0.1 that records every request and
/// answers 200 with a small JSON body.
pub struct Upstream {
    server: TcpServer,
    log: Arc<Mutex<Vec<Recorded>>>,
}

impl Upstream {
    pub fn start() -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// [`Upstream::start`] on a chosen address (another loopback IP, or the
    /// port of an upstream that was stopped).
    pub fn start_on(addr: SocketAddr) -> Self {
        let log: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let server_log = log.clone();
        let server = TcpServer::start("upstream", addr, move |stream| {
            let log = server_log.clone();
            async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let log = log.clone();
                    async move { Ok::<_, Infallible>(record(&log, request)) }
                });
                // hyper's own cap (100 fields) is below what jwtgate
                // forwards at its limit plus what it adds.
                let _ = hyper::server::conn::http1::Builder::new()
                    .max_headers(256)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        });
        Self { server, log }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// A copy of every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// The most recent request; panics when there was none.
    pub fn last(&self) -> Recorded {
        self.log
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the upstream received no request")
    }
}

fn record(log: &Mutex<Vec<Recorded>>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in request.headers() {
        headers
            .entry(name.as_str().to_ascii_lowercase())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let path = request
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| request.uri().path().to_string());
    let recorded = Recorded {
        method: request.method().to_string(),
        path: path.clone(),
        headers,
    };
    log.lock().unwrap().push(recorded);
    let body = serde_json::json!({ "upstream": "ok", "path": path }).to_string();
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("x-upstream", "recording")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}
