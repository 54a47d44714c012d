//! Upstreams that move, against the real binary: DNS names re-resolved in
//! the background (through a small DNS server on a loopback UDP port that
//! the test controls, named in `dns.servers`), active health checks,
//! endpoints set aside after a refused connection, and pools kept across
//! reloads. Endpoints are real HTTP servers on loopback addresses
//! (127.0.0.2, 127.0.0.3: one name's addresses share its port).

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Config, Gateway, Upstream, closed_addr, poll};
use serde_json::Value;

const NAME: &str = "backend.test";

/// Counts the allocations of the threads that ask it to, to show that
/// choosing an endpoint allocates nothing.
struct CountingAllocator;

thread_local! {
    static COUNTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static ALLOCATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if COUNTING.with(|counting| counting.get()) {
            ALLOCATIONS.with(|count| count.set(count.get() + 1));
        }
        // SAFETY: the caller's layout is passed on unchanged.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// How many allocations `work` made on this thread.
fn allocations(work: impl FnOnce()) -> usize {
    ALLOCATIONS.with(|count| count.set(0));
    COUNTING.with(|counting| counting.set(true));
    work();
    COUNTING.with(|counting| counting.set(false));
    ALLOCATIONS.with(|count| count.get())
}

/// An authoritative-only DNS server for one name: A queries get the
/// current addresses (TTL 0), AAAA queries an empty answer, other names
/// NXDOMAIN; with `failing` set, every query gets SERVFAIL.
struct DnsServer {
    addr: SocketAddr,
    addresses: Arc<Mutex<Vec<Ipv4Addr>>>,
    failing: Arc<AtomicBool>,
    queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DnsServer {
    fn start(addresses: &[Ipv4Addr]) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the DNS server");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let addr = socket.local_addr().expect("DNS server address");
        let shared = Arc::new(Mutex::new(addresses.to_vec()));
        let failing = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, failing, queries, stop) = (
                shared.clone(),
                failing.clone(),
                queries.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let mut buffer = [0u8; 512];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((length, from)) = socket.recv_from(&mut buffer) else {
                        continue;
                    };
                    queries.fetch_add(1, Ordering::Relaxed);
                    let addresses = shared.lock().unwrap().clone();
                    if let Some(reply) = answer(
                        &buffer[..length],
                        &addresses,
                        failing.load(Ordering::Relaxed),
                    ) {
                        let _ = socket.send_to(&reply, from);
                    }
                }
            })
        };
        Self {
            addr,
            addresses: shared,
            failing,
            queries,
            stop,
            thread: Some(thread),
        }
    }

    fn set(&self, addresses: &[Ipv4Addr]) {
        *self.addresses.lock().unwrap() = addresses.to_vec();
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The reply to one query (RFC 1035 §4.1), or `None` for what isn't one.
fn answer(query: &[u8], addresses: &[Ipv4Addr], failing: bool) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    let mut name = Vec::new();
    let mut at = 12;
    while *query.get(at)? != 0 {
        let length = query[at] as usize;
        name.push(String::from_utf8_lossy(query.get(at + 1..at + 1 + length)?).to_lowercase());
        at += 1 + length;
    }
    let question_end = at + 5;
    let record_type = u16::from_be_bytes([*query.get(at + 1)?, *query.get(at + 2)?]);
    if question_end > query.len() {
        return None;
    }
    let rcode = if failing {
        2
    } else if name.join(".") != NAME {
        3
    } else {
        0
    };
    let answers: &[Ipv4Addr] = if rcode == 0 && record_type == 1 {
        addresses
    } else {
        &[]
    };
    let mut reply = Vec::with_capacity(64);
    reply.extend_from_slice(&query[..2]);
    // QR, authoritative, RD as asked; RA; the response code.
    reply.push(0x84 | (query[2] & 0x01));
    reply.push(0x80 | rcode);
    reply.extend_from_slice(&[0, 1]);
    reply.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]);
    reply.extend_from_slice(&query[12..question_end]);
    for address in answers {
        // The question's name by pointer, A, IN, TTL 0, 4 bytes.
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
        reply.extend_from_slice(&address.octets());
    }
    Some(reply)
}

const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// Recording upstreams on 127.0.0.2 and 127.0.0.3, on one port.
fn upstreams_sharing_a_port() -> (Upstream, Upstream) {
    for _ in 0..20 {
        let first = Upstream::start_on(SocketAddr::from((A, 0)));
        let port = first.addr().port();
        if std::net::TcpListener::bind((B, port)).is_ok() {
            return (first, Upstream::start_on(SocketAddr::from((B, port))));
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

/// Requests the upstream received, health checks left out.
fn served(upstream: &Upstream) -> usize {
    upstream
        .requests()
        .iter()
        .filter(|r| r.path != "/healthz")
        .count()
}

async fn eventually<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    poll(Duration::from_secs(15), Duration::from_millis(50), || {
        let done = done();
        async move {
            if done.await {
                Ok(())
            } else {
                Err(what.to_string())
            }
        }
    })
    .await
}

/// `jwtgate_upstream_healthy` of one endpoint; `None` when there is no
/// such series.
async fn healthy(gateway: &Gateway, route: &str, addr: SocketAddr) -> Option<f64> {
    let text = gateway.metrics().await;
    let addr = addr.to_string();
    text.lines()
        .filter_map(common::parse_sample)
        .find(|(name, labels, _)| {
            name == "jwtgate_upstream_healthy"
                && labels.get("route").map(String::as_str) == Some(route)
                && labels.get("addr") == Some(&addr)
        })
        .map(|(_, _, value)| value)
}

async fn get_ok(gateway: &Gateway, path: &str) {
    let response = gateway.get(path, None).await;
    assert_eq!(response.status(), 200, "GET {path}");
}

/// One public route, `route`, to `upstream` (a flow mapping); `dns` answers
/// for upstream names.
fn dns_config(dns: &DnsServer, route: &str, upstream: &str) -> String {
    Config::new()
        .default_server()
        .section(&format!(
            "dns: {{ servers: [\"{}\"], timeout: 1s }}",
            dns.addr
        ))
        .routes(&public_route(route, upstream))
}

fn public_route(name: &str, upstream: &str) -> String {
    format!(
        "  - name: {name}\n    match: {{ path_prefix: / }}\n    upstream: {upstream}\n    auth: {{ mode: off }}"
    )
}

/// An upstream named `NAME` on `port`, resolved again every 100 ms.
fn resolved(port: u16) -> String {
    format!(r#"{{ addrs: ["{NAME}:{port}"], resolve_interval: 100ms }}"#)
}

#[tokio::test]
async fn a_name_whose_addresses_change_is_followed_without_a_reload() {
    let (a, b) = upstreams_sharing_a_port();
    let port = a.addr().port();
    let dns = DnsServer::start(&[A]);
    let upstream = resolved(port);
    let gateway = Gateway::start(&dns_config(&dns, "moving", &upstream), &a).await;

    // Resolved before the listeners opened: the first request has a place
    // to go.
    get_ok(&gateway, "/first").await;
    assert_eq!((served(&a), served(&b)), (1, 0));
    assert_eq!(healthy(&gateway, "moving", a.addr()).await, Some(1.0));

    // The name moves to B: traffic follows, and A's series goes.
    dns.set(&[B]);
    eventually("traffic moves to the name's new address", || async {
        get_ok(&gateway, "/moving").await;
        served(&b) > 0
    })
    .await;
    eventually("the old address's series is removed", || async {
        healthy(&gateway, "moving", a.addr()).await.is_none()
    })
    .await;
    let before = served(&a);
    for _ in 0..4 {
        get_ok(&gateway, "/after").await;
    }
    assert_eq!(served(&a), before, "nothing more reaches the old address");

    // Two addresses: round robin across both.
    dns.set(&[A, B]);
    eventually("both addresses are endpoints", || async {
        healthy(&gateway, "moving", a.addr()).await == Some(1.0)
    })
    .await;
    let (a_before, b_before) = (served(&a), served(&b));
    for _ in 0..4 {
        get_ok(&gateway, "/both").await;
    }
    assert_eq!(
        (served(&a) - a_before, served(&b) - b_before),
        (2, 2),
        "round robin alternates"
    );
    assert!(dns.queries.load(Ordering::Relaxed) >= 3);
    let log = gateway.log();
    let both = format!("upstream endpoints changed route=moving endpoints={A}:{port},{B}:{port}");
    assert!(log.contains(&both), "{log}");
}

#[tokio::test]
async fn a_failed_resolution_keeps_the_last_good_addresses() {
    let (a, _b) = upstreams_sharing_a_port();
    let port = a.addr().port();
    let dns = DnsServer::start(&[A]);
    let upstream = resolved(port);
    let gateway = Gateway::start(&dns_config(&dns, "kept", &upstream), &a).await;
    get_ok(&gateway, "/before").await;

    dns.failing.store(true, Ordering::Relaxed);
    eventually("a failed resolution is counted", || async {
        gateway
            .metric(
                "jwtgate_upstream_resolve_failures_total",
                &[("route", "kept")],
            )
            .await
            >= 1.0
    })
    .await;
    get_ok(&gateway, "/during").await;
    assert_eq!(served(&a), 2, "the last good address still serves");
    assert_eq!(healthy(&gateway, "kept", a.addr()).await, Some(1.0));
    let log = gateway.log();
    assert!(
        log.contains("resolving an upstream name failed") && log.contains(NAME),
        "{log}"
    );

    // A reload that makes a new pool for the route while DNS still fails
    // starts from the addresses the old one knew.
    let changed = upstream.replace("100ms", "150ms");
    std::fs::write(
        gateway.config_path(),
        gateway.render(&dns_config(&dns, "kept", &changed), &a),
    )
    .expect("write the config");
    let (_, body) = gateway.reload_json().await;
    assert_eq!(body["upstreams"]["started"], 1, "{body}");
    get_ok(&gateway, "/after-reload").await;
    assert_eq!(served(&a), 3);
}

#[tokio::test]
async fn a_name_that_never_resolved_answers_502_until_it_does() {
    let (a, _b) = upstreams_sharing_a_port();
    let port = a.addr().port();
    let dns = DnsServer::start(&[]);
    let upstream = resolved(port);
    let gateway = Gateway::start(&dns_config(&dns, "late", &upstream), &a).await;

    let response = gateway.get("/early", None).await;
    assert_eq!(response.status(), 502);
    dns.set(&[A]);
    eventually("the name resolves in the background", || async {
        gateway.get("/late", None).await.status() == 200
    })
    .await;
    assert_eq!(served(&a), 1);
}

fn health_config(upstream: &str) -> String {
    Config::new()
        .default_server()
        .routes(&public_route("checked", upstream))
}

#[tokio::test]
async fn an_endpoint_that_goes_down_gets_no_traffic_until_it_comes_back() {
    let a = Upstream::start();
    let b = Upstream::start();
    let b_addr = b.addr();
    let upstream = format!(
        r#"{{ addrs: ["{}", "{b_addr}"], eject_for: 0s, health_check: {{ protocol: http, path: /healthz, interval: 100ms, unhealthy_threshold: 1, healthy_threshold: 1 }} }}"#,
        a.addr()
    );
    let gateway = Gateway::start(&health_config(&upstream), &a).await;

    eventually("the health checks reach the endpoints", || async {
        a.requests().iter().any(|r| r.path == "/healthz")
    })
    .await;
    let check = a
        .requests()
        .into_iter()
        .find(|r| r.path == "/healthz")
        .unwrap();
    assert_eq!(check.method, "GET");
    assert_eq!(check.header("host"), Some(a.addr().to_string().as_str()));
    assert_eq!(check.header("user-agent"), Some("jwtgate-health-check"));
    assert_eq!(healthy(&gateway, "checked", b_addr).await, Some(1.0));

    drop(b);
    eventually("the stopped endpoint is marked unhealthy", || async {
        healthy(&gateway, "checked", b_addr).await == Some(0.0)
    })
    .await;
    let before = served(&a);
    for _ in 0..6 {
        get_ok(&gateway, "/down").await;
    }
    assert_eq!(
        served(&a) - before,
        6,
        "all traffic goes to the healthy one"
    );

    let b = Upstream::start_on(b_addr);
    eventually("the endpoint that came back is healthy", || async {
        healthy(&gateway, "checked", b_addr).await == Some(1.0)
    })
    .await;
    for _ in 0..4 {
        get_ok(&gateway, "/back").await;
    }
    assert_eq!(served(&b), 2, "traffic returns to it");
    let log = gateway.log();
    assert!(log.contains("failed its health checks"), "{log}");
    assert!(log.contains("is healthy again"), "{log}");
}

#[tokio::test]
async fn an_upstream_whose_every_endpoint_fails_its_checks_still_gets_traffic() {
    let a = Upstream::start();
    // The recording upstream answers 200, never the 204 asked for.
    let upstream = format!(
        r#"{{ addrs: ["{}"], health_check: {{ protocol: http, path: /healthz, expected_status: 204, interval: 100ms, unhealthy_threshold: 1 }} }}"#,
        a.addr()
    );
    let gateway = Gateway::start(&health_config(&upstream), &a).await;
    eventually("the endpoint fails its checks", || async {
        healthy(&gateway, "checked", a.addr()).await == Some(0.0)
    })
    .await;
    get_ok(&gateway, "/anyway").await;
    assert_eq!(served(&a), 1, "fails open to the upstream");

    // An unchanged upstream keeps its pool, health state included.
    let (_, body) = gateway.reload_json().await;
    assert_eq!(body["upstreams"]["kept"], 1, "{body}");
    assert_eq!(body["upstreams"]["started"], 0, "{body}");
    assert_eq!(healthy(&gateway, "checked", a.addr()).await, Some(0.0));

    // A changed health check is a new pool; the old one stops.
    let fixed = upstream.replace("expected_status: 204", "expected_status: 200");
    std::fs::write(
        gateway.config_path(),
        gateway.render(&health_config(&fixed), &a),
    )
    .expect("write the config");
    let (_, body) = gateway.reload_json().await;
    assert_eq!(
        (&body["upstreams"]["started"], &body["upstreams"]["stopped"]),
        (&Value::from(1), &Value::from(1)),
        "{body}"
    );
    eventually("the new checks pass", || async {
        healthy(&gateway, "checked", a.addr()).await == Some(1.0)
    })
    .await;
}

#[tokio::test]
async fn a_refused_connection_sets_the_endpoint_aside_for_eject_for() {
    let a = Upstream::start();
    let closed = closed_addr();
    // Long enough that a loaded machine still reads the endpoint set aside
    // after the requests; short enough to wait out at the end.
    let upstream = format!(
        r#"{{ addrs: ["{}", "{closed}"], eject_for: 4s }}"#,
        a.addr()
    );
    let gateway = Gateway::start(&health_config(&upstream), &a).await;
    assert_eq!(healthy(&gateway, "checked", closed).await, Some(1.0));

    // Whichever endpoint the round robin picks first, both requests are
    // answered: a refused connection moves on to the other endpoint.
    get_ok(&gateway, "/one").await;
    get_ok(&gateway, "/two").await;
    assert_eq!(healthy(&gateway, "checked", closed).await, Some(0.0));
    for _ in 0..4 {
        get_ok(&gateway, "/aside").await;
    }
    // One refusal sets it aside: no request tried it again.
    let log = gateway.log();
    let refused = format!("Fail to connect to addr: {closed}");
    assert_eq!(log.matches(&refused).count(), 1, "{log}");

    eventually(
        "the endpoint gets traffic again after eject_for",
        || async { healthy(&gateway, "checked", closed).await == Some(1.0) },
    )
    .await;
    assert_eq!(served(&a), 6);
}

#[test]
fn choosing_an_endpoint_allocates_nothing() {
    let yaml = r#"
routes:
  - name: r
    upstream: { addrs: ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"] }
    auth: { mode: off }
"#;
    let path = std::path::Path::new("gateway.yaml");
    let config = jwtgate::config::parse(path, yaml, &|_| None).expect("valid config");
    let compiled = jwtgate::assemble::compile_reusing(path, config, &()).expect("compiles");
    let pool = &compiled.upstreams[0].as_ref().expect("an upstream").pool;
    let choose = || {
        for _ in 0..1000 {
            std::hint::black_box(pool.select().expect("an endpoint"));
        }
    };
    // The counter sees this thread's allocations.
    assert_eq!(allocations(|| drop(std::hint::black_box(vec![0u8; 8]))), 1);
    // Thread-local state of the first call (arc-swap's debt list) is set up
    // once per thread, not per request.
    choose();
    assert_eq!(allocations(choose), 0, "all endpoints ready");

    // An endpoint set aside: the round robin steps past it.
    pool.eject("10.0.0.2:80".parse().unwrap());
    choose();
    assert_eq!(allocations(choose), 0, "one endpoint set aside");
    // Every endpoint set aside: the scan, then failing open.
    for addr in ["10.0.0.1:80", "10.0.0.3:80"] {
        pool.eject(addr.parse().unwrap());
    }
    choose();
    assert_eq!(allocations(choose), 0, "every endpoint set aside");
}
