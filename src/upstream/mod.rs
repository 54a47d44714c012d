//! A route's upstream endpoints: discovered (DNS names resolved again in
//! the background), checked (active health checks, and endpoints that
//! refuse a connection set aside for a while), and chosen round robin, on
//! pingora-load-balancing's `Backends`, health checks and `RoundRobin`.
//! An upstream of IP addresses without health checks has nothing to
//! discover or check, and keeps its endpoints in a plain list instead
//! ([`fixed`]).
//!
//! A pool is compiled with its snapshot but lives in the runtime: a reload
//! whose route has the same upstream settings keeps the running pool, with
//! its endpoints and their health (see [`pools::UpstreamPools`]).

pub mod discovery;
mod fixed;
pub mod health;
pub mod pools;
pub mod tls;

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora::lb::selection::{BackendIter, BackendSelection, RoundRobin};
use pingora::lb::{Backend, Backends};
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use prometheus::IntCounter;
use tokio::sync::Notify;

use crate::config::schema::{AsWritten, DnsConfig, HealthCheckConfig, UpstreamConfig};
use crate::upstream::tls::UpstreamTls;
use discovery::{Address, AddressError, Discovery, Dns, Origin, Resolved};
use fixed::FixedEndpoints;
use health::{HealthCheckError, MIN_INTERVAL, Probe};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    #[error("upstream.addrs must list at least one host:port")]
    NoAddress,
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error(transparent)]
    HealthCheck(#[from] HealthCheckError),
    #[error("upstream.resolve_interval is {0}; it must be at least 100ms")]
    ResolveInterval(String),
    #[error("upstream.eject_for is {0}; it must be 0s (off) or whole seconds")]
    EjectFor(String),
}

/// What decides whether a running pool can serve a new snapshot's route:
/// everything the pool was built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolIdentity {
    route: String,
    addrs: Vec<String>,
    resolve_interval: Duration,
    eject_for: Duration,
    health_check: Option<HealthCheckConfig>,
    /// Only for pools with names to resolve.
    dns: Option<DnsConfig>,
    /// The TLS settings health checks connect with.
    tls: Option<u64>,
}

/// Where a route's requests go: its pool of endpoints, handed out by the
/// runtime (a reload that leaves the settings alone keeps the running
/// pool), and how to connect to them.
#[derive(Debug)]
pub struct RouteUpstream {
    pub pool: Arc<UpstreamPool>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    /// How long an unused connection stays in Pingora's pool for reuse.
    pub keepalive_timeout: Duration,
    /// `None`: clear text.
    pub tls: Option<UpstreamTls>,
}

/// One chosen endpoint: where to connect, and which configured address it
/// came from (for the TLS server name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub origin: usize,
}

/// Pools get a process-unique id, so the runtime can tell them apart.
static NEXT_POOL: AtomicU64 = AtomicU64::new(0);

pub struct UpstreamPool {
    id: u64,
    identity: PoolIdentity,
    endpoints: Endpoints,
    resolve_interval: Duration,
    health_interval: Option<Duration>,
    /// Seconds; 0: endpoints are never set aside.
    eject_for: i64,
    /// Endpoints set aside after a refused connection, and until when
    /// (`None`: just reported, the background loop sets the deadline).
    /// Touched on the request path only when a connection fails.
    ejected: Mutex<Vec<(SocketAddr, Option<i64>)>>,
    /// Wakes the background loop: an endpoint was set aside.
    wake: Notify,
}

enum Endpoints {
    /// IP addresses, no health checks.
    Fixed(FixedEndpoints),
    /// Names to resolve, or health checks to run.
    Balanced(Box<Balanced>),
}

/// pingora-load-balancing's `Backends`, chosen round robin.
struct Balanced {
    resolved: Arc<Resolved>,
    backends: Backends,
    selector: ArcSwap<RoundRobin>,
}

impl fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("route", &self.identity.route)
            .field("addrs", &self.identity.addrs)
            .finish()
    }
}

impl UpstreamPool {
    /// The pool of `route`'s upstream. IP addresses are its endpoints at
    /// once; names are resolved when the runtime starts the pool.
    pub fn compile(
        route: &str,
        config: &UpstreamConfig,
        dns: &Dns,
        tls: Option<&UpstreamTls>,
    ) -> Result<Self, PoolError> {
        if config.addrs.is_empty() {
            return Err(PoolError::NoAddress);
        }
        let addrs = config
            .addrs
            .iter()
            .map(|addr| Address::parse(addr))
            .collect::<Result<Vec<_>, _>>()?;
        if config.resolve_interval < MIN_INTERVAL {
            return Err(PoolError::ResolveInterval(
                AsWritten(config.resolve_interval).to_string(),
            ));
        }
        if config.eject_for.subsec_nanos() != 0 {
            return Err(PoolError::EjectFor(AsWritten(config.eject_for).to_string()));
        }
        let probe = config
            .health_check
            .as_ref()
            .map(|check| Probe::compile(route, check, &config.addrs, tls))
            .transpose()?;
        let ips: Option<Vec<SocketAddr>> = addrs
            .iter()
            .map(|address| match address {
                Address::Ip(ip) => Some(*ip),
                Address::Name { .. } => None,
            })
            .collect();
        let (endpoints, dynamic) = match (ips, probe) {
            (Some(ips), None) => (Endpoints::Fixed(FixedEndpoints::new(ips)), false),
            (_, probe) => {
                let resolved = Resolved::new(route.to_string(), addrs, dns.clone());
                let dynamic = resolved.is_dynamic();
                let mut backends = Backends::new(Box::new(Discovery(resolved.clone())));
                if let Some(probe) = probe {
                    backends.set_health_check(Box::new(probe));
                }
                let selector = ArcSwap::from_pointee(RoundRobin::build(&BTreeSet::new()));
                let balanced = Endpoints::Balanced(Box::new(Balanced {
                    resolved,
                    backends,
                    selector,
                }));
                (balanced, dynamic)
            }
        };
        let pool = Self {
            id: NEXT_POOL.fetch_add(1, Ordering::Relaxed),
            identity: PoolIdentity {
                route: route.to_string(),
                addrs: config.addrs.clone(),
                resolve_interval: config.resolve_interval,
                eject_for: config.eject_for,
                health_check: config.health_check.clone(),
                dns: dynamic.then(|| dns.settings.clone()),
                tls: tls.map(UpstreamTls::fingerprint),
            },
            endpoints,
            resolve_interval: config.resolve_interval,
            health_interval: config.health_check.as_ref().map(|check| check.interval),
            eject_for: config.eject_for.as_secs() as i64,
            ejected: Mutex::new(Vec::new()),
            wake: Notify::new(),
        };
        if !dynamic {
            // Nothing to wait for: the endpoints are the addresses, which
            // are never none.
            let _ = now_or_never(pool.update());
        }
        Ok(pool)
    }

    pub fn identity(&self) -> &PoolIdentity {
        &self.identity
    }

    pub fn route(&self) -> &str {
        &self.identity.route
    }

    /// The addresses as configured.
    pub fn addrs(&self) -> &[String] {
        &self.identity.addrs
    }

    pub fn is_dynamic(&self) -> bool {
        match &self.endpoints {
            Endpoints::Fixed(_) => false,
            Endpoints::Balanced(balanced) => balanced.resolved.is_dynamic(),
        }
    }

    /// Each of this pool's names that resolves to nothing now, with why:
    /// what `jwtgate check` warns about.
    pub async fn unresolved_names(&self) -> Vec<(String, String)> {
        match &self.endpoints {
            Endpoints::Fixed(_) => Vec::new(),
            Endpoints::Balanced(balanced) => balanced.resolved.unresolved().await,
        }
    }

    /// Counts the failures of resolving this pool's names in `counter`.
    pub fn count_resolve_failures_in(&self, counter: IntCounter) {
        if let Endpoints::Balanced(balanced) = &self.endpoints {
            balanced.resolved.count_failures_in(counter);
        }
    }

    /// Starts from `previous`'s last good answers where it resolves the
    /// same names the same way.
    pub fn adopt_answers(&self, previous: &UpstreamPool) {
        if let (Endpoints::Balanced(next), Endpoints::Balanced(previous)) =
            (&self.endpoints, &previous.endpoints)
        {
            next.resolved.adopt(&previous.resolved);
        }
    }

    /// Asks discovery again and, when the endpoints changed, rebuilds the
    /// round robin. A failure leaves the endpoints as they were.
    pub async fn update(&self) -> pingora::Result<()> {
        let Endpoints::Balanced(balanced) = &self.endpoints else {
            return Ok(());
        };
        balanced
            .backends
            .update(|endpoints| {
                if self.is_dynamic() {
                    tracing::info!(
                        route = %self.identity.route,
                        endpoints = %Listed(&endpoints),
                        "upstream endpoints changed"
                    );
                }
                balanced
                    .selector
                    .store(Arc::new(RoundRobin::build(&endpoints)));
            })
            .await
    }

    /// Every endpoint, and whether it gets traffic (healthy and not set
    /// aside).
    pub fn states(&self) -> Vec<(SocketAddr, bool)> {
        match &self.endpoints {
            Endpoints::Fixed(fixed) => fixed.states().collect(),
            Endpoints::Balanced(balanced) => {
                let backends = &balanced.backends;
                backends
                    .get_backend()
                    .iter()
                    .map(|backend| (endpoint(backend).addr, backends.ready(backend)))
                    .collect()
            }
        }
    }

    /// How many endpoints there are: how many a request may try.
    pub fn len(&self) -> usize {
        match &self.endpoints {
            Endpoints::Fixed(fixed) => fixed.len(),
            Endpoints::Balanced(balanced) => balanced.backends.get_backend().len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next endpoint round robin that is healthy and not set aside.
    /// When there is none, the next one all the same: an upstream whose
    /// checks all fail may still serve, and refusing everything would be
    /// sure to fail. `None` only before any address resolved. Allocates
    /// nothing.
    pub fn select(&self) -> Option<Endpoint> {
        let balanced = match &self.endpoints {
            Endpoints::Fixed(fixed) => return Some(fixed.select()),
            Endpoints::Balanced(balanced) => balanced,
        };
        let backends = &balanced.backends;
        let selector = balanced.selector.load();
        let mut candidates = selector.iter(&[]);
        let first = candidates.next()?;
        if backends.ready(first) {
            return Some(endpoint(first));
        }
        let first = endpoint(first);
        // The round robin moves on for every request, so a few more steps
        // usually find a ready one; a scan settles it.
        let endpoints = backends.get_backend();
        for _ in 0..endpoints.len().min(4) {
            if let Some(next) = candidates.next()
                && backends.ready(next)
            {
                return Some(endpoint(next));
            }
        }
        endpoints
            .iter()
            .find(|b| backends.ready(b))
            .map(endpoint)
            .or(Some(first))
    }

    fn set_ready(&self, addr: SocketAddr, ready: bool) {
        match &self.endpoints {
            Endpoints::Fixed(fixed) => fixed.set_ready(addr, ready),
            Endpoints::Balanced(balanced) => balanced.backends.set_enable(&backend(addr), ready),
        }
    }

    /// Sets `addr` aside after a connection to it failed, for `eject_for`.
    /// On the request path, only for failed connections: a short lock and
    /// no allocation once the list has room.
    pub fn eject(&self, addr: SocketAddr) {
        if self.eject_for == 0 {
            return;
        }
        self.set_ready(addr, false);
        let mut ejected = self.ejected.lock().unwrap_or_else(|e| e.into_inner());
        if !ejected.iter().any(|(a, _)| *a == addr) {
            ejected.push((addr, None));
        }
        drop(ejected);
        self.wake.notify_one();
    }

    /// Whether any endpoint is set aside, so that time alone will change
    /// the pool.
    pub fn has_ejections(&self) -> bool {
        !self
            .ejected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Gives back the endpoints whose time aside is over at `now` (Unix
    /// seconds), and starts the clock for those just set aside.
    pub fn settle_ejections(&self, now: i64) {
        let mut ejected = self.ejected.lock().unwrap_or_else(|e| e.into_inner());
        ejected.retain_mut(|(addr, until)| {
            let until = *until.get_or_insert(now + self.eject_for);
            if until > now {
                return true;
            }
            self.set_ready(*addr, true);
            tracing::info!(route = %self.identity.route, endpoint = %addr, "upstream endpoint gets traffic again");
            false
        });
    }

    pub async fn run_health_check(&self) {
        if let Endpoints::Balanced(balanced) = &self.endpoints {
            balanced.backends.run_health_check(true).await;
        }
    }
}

/// A set of endpoints as `addr,addr`, for the log.
struct Listed<'a>(&'a BTreeSet<Backend>);

impl fmt::Display for Listed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, endpoint) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}", endpoint.addr)?;
        }
        Ok(())
    }
}

/// The endpoints' readiness is keyed by address and weight; every
/// endpoint has weight 1, so an address finds its entry.
fn backend(addr: SocketAddr) -> Backend {
    Backend {
        addr: PeerAddr::Inet(addr),
        weight: 1,
        ext: Default::default(),
    }
}

fn endpoint(backend: &Backend) -> Endpoint {
    let addr = match &backend.addr {
        PeerAddr::Inet(addr) => *addr,
        // Discovery makes only IP endpoints.
        PeerAddr::Unix(_) => unreachable!("upstream endpoints are IP addresses"),
    };
    Endpoint {
        addr,
        origin: backend.ext.get::<Origin>().map_or(0, |origin| origin.0),
    }
}

/// The output of a future that is ready at once (a discovery of IP
/// addresses awaits nothing), else `None`.
fn now_or_never<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(yaml: &str) -> UpstreamConfig {
        serde_saphyr::from_str(yaml).expect("valid upstream YAML")
    }

    fn system_dns() -> Dns {
        Dns::compile(&DnsConfig::default()).unwrap()
    }

    fn pool(yaml: &str) -> Result<UpstreamPool, PoolError> {
        UpstreamPool::compile("r", &upstream(yaml), &system_dns(), None)
    }

    fn error(yaml: &str) -> String {
        pool(yaml).expect_err(yaml).to_string()
    }

    #[test]
    fn settings_are_checked_and_named_in_errors() {
        assert_eq!(
            error("addrs: []"),
            "upstream.addrs must list at least one host:port"
        );
        assert_eq!(
            error("addrs: [\"api\"]"),
            "upstream address \"api\" has no port (host:port)"
        );
        assert_eq!(
            error("{ addrs: [\"10.0.0.1:80\"], resolve_interval: 10ms }"),
            "upstream.resolve_interval is 10ms; it must be at least 100ms"
        );
        assert_eq!(
            error("{ addrs: [\"10.0.0.1:80\"], eject_for: 1500ms }"),
            "upstream.eject_for is 1500ms; it must be 0s (off) or whole seconds"
        );
        let check = |settings: &str| {
            error(&format!(
                "{{ addrs: [\"10.0.0.1:80\"], health_check: {{ {settings} }} }}"
            ))
        };
        assert_eq!(
            check("interval: 50ms"),
            "upstream.health_check.interval is 50ms; it must be at least 100ms"
        );
        assert_eq!(
            check("timeout: 0s"),
            "upstream.health_check.timeout must be positive"
        );
        assert_eq!(
            check("unhealthy_threshold: 0"),
            "upstream.health_check.unhealthy_threshold is 0; it must be at least 1"
        );
        assert_eq!(
            check("expected_status: 700"),
            "upstream.health_check.expected_status is 700; it must be from 100 to 599"
        );
        assert_eq!(
            check("protocol: http, path: healthz"),
            "upstream.health_check.path \"healthz\" is not a path (it must start with / and be a valid request target)"
        );
        assert!(
            serde_saphyr::from_str::<UpstreamConfig>(
                "{ addrs: [\"10.0.0.1:80\"], health_check: { protocol: udp } }"
            )
            .is_err()
        );
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ip_addresses_are_endpoints_at_once_and_taken_in_turn() {
        let pool = pool("addrs: [\"10.0.0.1:80\", \"10.0.0.2:80\"]").unwrap();
        assert!(!pool.is_dynamic());
        assert_eq!(pool.len(), 2);
        let chosen: Vec<_> = (0..4).map(|_| pool.select().unwrap().addr).collect();
        assert_eq!(
            chosen,
            [
                addr("10.0.0.1:80"),
                addr("10.0.0.2:80"),
                addr("10.0.0.1:80"),
                addr("10.0.0.2:80")
            ]
        );
        assert_eq!(pool.select().unwrap().origin, 0);
        assert_eq!(pool.select().unwrap().origin, 1);
    }

    #[test]
    fn health_checked_addresses_are_taken_in_turn_too() {
        let pool =
            pool("{ addrs: [\"10.0.0.1:80\", \"10.0.0.2:80\"], health_check: { protocol: tcp } }")
                .unwrap();
        assert!(matches!(pool.endpoints, Endpoints::Balanced(_)));
        assert_eq!(pool.len(), 2);
        let chosen: Vec<_> = (0..4).map(|_| pool.select().unwrap().addr).collect();
        assert_eq!(chosen[0], chosen[2]);
        assert_eq!(chosen[1], chosen[3]);
        assert_ne!(chosen[0], chosen[1]);
    }

    /// The background loop sleeps without a timer while nothing is set
    /// aside: that is what this tells it.
    #[test]
    fn ejections_are_pending_only_until_settled() {
        let pool = pool("{ addrs: [\"10.0.0.1:80\"], eject_for: 5s }").unwrap();
        assert!(matches!(pool.endpoints, Endpoints::Fixed(_)));
        assert!(!pool.has_ejections());
        pool.eject(addr("10.0.0.1:80"));
        assert!(pool.has_ejections());
        assert_eq!(pool.states(), [(addr("10.0.0.1:80"), false)]);
        pool.settle_ejections(100);
        assert!(pool.has_ejections());
        pool.settle_ejections(105);
        assert!(!pool.has_ejections());
        assert_eq!(pool.states(), [(addr("10.0.0.1:80"), true)]);
    }

    #[test]
    fn a_name_has_no_endpoint_until_resolved() {
        let pool = pool("addrs: [\"backend.invalid:80\"]").unwrap();
        assert!(pool.is_dynamic());
        assert_eq!(pool.select(), None);
    }

    #[test]
    fn an_endpoint_set_aside_comes_back_after_eject_for() {
        let pool = pool("{ addrs: [\"10.0.0.1:80\", \"10.0.0.2:80\"], eject_for: 10s }").unwrap();
        pool.eject(addr("10.0.0.2:80"));
        for _ in 0..4 {
            assert_eq!(pool.select().unwrap().addr, addr("10.0.0.1:80"));
        }
        // The clock starts when the loop first sees the ejection.
        pool.settle_ejections(1_000);
        pool.settle_ejections(1_009);
        assert!((0..4).all(|_| pool.select().unwrap().addr == addr("10.0.0.1:80")));
        pool.settle_ejections(1_010);
        let chosen: Vec<_> = (0..2).map(|_| pool.select().unwrap().addr).collect();
        assert!(chosen.contains(&addr("10.0.0.2:80")), "{chosen:?}");
    }

    #[test]
    fn with_every_endpoint_set_aside_one_is_still_chosen() {
        let pool = pool("addrs: [\"10.0.0.1:80\", \"10.0.0.2:80\"]").unwrap();
        pool.eject(addr("10.0.0.1:80"));
        pool.eject(addr("10.0.0.2:80"));
        assert!(pool.states().iter().all(|(_, ready)| !ready));
        let chosen: Vec<_> = (0..2).map(|_| pool.select().unwrap().addr).collect();
        assert_eq!(chosen, [addr("10.0.0.1:80"), addr("10.0.0.2:80")]);
    }

    #[test]
    fn eject_for_zero_never_sets_aside() {
        let pool = pool("{ addrs: [\"10.0.0.1:80\", \"10.0.0.2:80\"], eject_for: 0s }").unwrap();
        pool.eject(addr("10.0.0.2:80"));
        assert!(pool.states().iter().all(|(_, ready)| *ready));
    }

    #[test]
    fn a_pool_is_the_same_only_with_the_same_settings() {
        let base = "{ addrs: [\"10.0.0.1:80\"] }";
        let same = pool(base).unwrap();
        assert_eq!(same.identity(), pool(base).unwrap().identity());
        for changed in [
            "{ addrs: [\"10.0.0.2:80\"] }",
            "{ addrs: [\"10.0.0.1:80\"], eject_for: 5s }",
            "{ addrs: [\"10.0.0.1:80\"], health_check: { protocol: tcp } }",
        ] {
            assert_ne!(
                same.identity(),
                pool(changed).unwrap().identity(),
                "{changed}"
            );
        }
        let other_route =
            UpstreamPool::compile("other", &upstream(base), &system_dns(), None).unwrap();
        assert_ne!(same.identity(), other_route.identity());
    }
}
