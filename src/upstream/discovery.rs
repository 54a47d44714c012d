//! Where an upstream's endpoints come from: its `addrs`, IP addresses taken
//! as they are and DNS names resolved (again and again, in the background)
//! through the system resolver or the name servers of `dns.servers`.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use hickory_resolver::Resolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
    ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::{Backend, Extensions};
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use prometheus::IntCounter;

use crate::config::schema::{AsWritten, DnsConfig};

/// Which of the upstream's configured `addrs` an endpoint came from: the
/// TLS server name is chosen by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin(pub usize);

/// One entry of `upstream.addrs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Ip(SocketAddr),
    Name { host: String, port: u16 },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddressError {
    #[error("upstream address {0:?} has no port (host:port)")]
    NoPort(String),
    #[error("upstream address {addr:?}: port {port:?} is not a number from 1 to 65535")]
    BadPort { addr: String, port: String },
    #[error("upstream address {addr:?}: {host:?} is neither an IP address nor a DNS name")]
    BadHost { addr: String, host: String },
    #[error("dns.servers: {0:?} is not an IP address or ip:port")]
    BadServer(String),
    #[error("dns.timeout must be positive")]
    ZeroTimeout,
}

impl Address {
    pub fn parse(addr: &str) -> Result<Self, AddressError> {
        if let Ok(ip) = addr.parse::<SocketAddr>() {
            return Ok(Self::Ip(ip));
        }
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| AddressError::NoPort(addr.to_string()))?;
        let port = match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => {
                return Err(AddressError::BadPort {
                    addr: addr.to_string(),
                    port: port.to_string(),
                });
            }
        };
        if !is_dns_name(host) {
            return Err(AddressError::BadHost {
                addr: addr.to_string(),
                host: host.to_string(),
            });
        }
        Ok(Self::Name {
            host: host.to_string(),
            port,
        })
    }
}

/// Letters, digits, `-` and `_` in dot-separated labels of 1 to 63 bytes
/// (a final dot allowed): what a resolver can be asked about. `_` appears
/// in real service names even though host names may not carry it.
fn is_dns_name(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// How names are resolved: the system's resolver, or the configured name
/// servers asked directly.
#[derive(Debug, Clone)]
pub struct Dns {
    servers: Option<ResolverConfig>,
    timeout: Duration,
    /// As configured, for comparing pools across reloads.
    pub settings: DnsConfig,
}

impl Dns {
    pub fn compile(config: &DnsConfig) -> Result<Self, AddressError> {
        if config.timeout.is_zero() {
            return Err(AddressError::ZeroTimeout);
        }
        let servers = (!config.servers.is_empty())
            .then(|| {
                config
                    .servers
                    .iter()
                    .map(|server| name_server(server))
                    .collect::<Result<Vec<_>, _>>()
                    .map(|servers| ResolverConfig::from_parts(None, Vec::new(), servers))
            })
            .transpose()?;
        Ok(Self {
            servers,
            timeout: config.timeout,
            settings: config.clone(),
        })
    }

    /// Every address `host` resolves to right now, with `port`.
    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        let lookup = async {
            match &self.servers {
                None => tokio::net::lookup_host((host, port))
                    .await
                    .map(|addrs| addrs.collect::<Vec<_>>())
                    .map_err(|e| e.to_string()),
                Some(config) => {
                    // A resolver per pass: nothing outlives the runtime it
                    // ran on, and no cache can hide a change for longer than
                    // the record's interval.
                    let mut options = ResolverOpts::default();
                    options.timeout = self.timeout;
                    options.attempts = 1;
                    options.cache_size = 0;
                    options.use_hosts_file = ResolveHosts::Never;
                    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
                    let resolver = Resolver::builder_with_config(
                        config.clone(),
                        TokioRuntimeProvider::default(),
                    )
                    .with_options(options)
                    .build()
                    .map_err(|e| e.to_string())?;
                    let answer = resolver.lookup_ip(host).await.map_err(|e| e.to_string())?;
                    Ok(answer.iter().map(|ip| SocketAddr::new(ip, port)).collect())
                }
            }
        };
        match tokio::time::timeout(self.timeout, lookup).await {
            Ok(Ok(addrs)) if addrs.is_empty() => Err("no address".into()),
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {}", AsWritten(self.timeout))),
        }
    }
}

fn name_server(server: &str) -> Result<NameServerConfig, AddressError> {
    let addr = server
        .parse::<SocketAddr>()
        .or_else(|_| server.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| AddressError::BadServer(server.to_string()))?;
    let connection = |mut connection: ConnectionConfig| {
        connection.port = addr.port();
        connection
    };
    Ok(NameServerConfig::new(
        addr.ip(),
        true,
        vec![
            connection(ConnectionConfig::udp()),
            connection(ConnectionConfig::tcp()),
        ],
    ))
}

/// What the pool and its discovery share: the last good answer for each
/// address, and where failures are counted.
pub struct Resolved {
    route: String,
    addrs: Vec<Address>,
    dns: Dns,
    last_good: Mutex<Vec<Vec<SocketAddr>>>,
    failures: OnceLock<IntCounter>,
}

impl Resolved {
    pub fn new(route: String, addrs: Vec<Address>, dns: Dns) -> Arc<Self> {
        let last_good = Mutex::new(vec![Vec::new(); addrs.len()]);
        Arc::new(Self {
            route,
            addrs,
            dns,
            last_good,
            failures: OnceLock::new(),
        })
    }

    /// Whether any address is a name, so that resolving again can change
    /// anything.
    pub fn is_dynamic(&self) -> bool {
        self.addrs.iter().any(|a| matches!(a, Address::Name { .. }))
    }

    /// Starts from `previous`'s last good answers when it resolves the same
    /// names the same way: a reload that changed other settings while DNS
    /// is failing keeps the endpoints it had.
    pub fn adopt(&self, previous: &Resolved) {
        if self.addrs != previous.addrs || self.dns.settings != previous.dns.settings {
            return;
        }
        let answers = previous.last_good.lock().expect("not poisoned").clone();
        *self.last_good.lock().expect("not poisoned") = answers;
    }

    /// Each name among the addresses that resolves to nothing now, as
    /// written, with why.
    pub async fn unresolved(&self) -> Vec<(String, String)> {
        let lookups = self.addrs.iter().filter_map(|addr| match addr {
            Address::Name { host, port } => Some(async move {
                let result = self.dns.resolve(host, *port).await;
                result.err().map(|why| (format!("{host}:{port}"), why))
            }),
            Address::Ip(_) => None,
        });
        futures_util::future::join_all(lookups)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    pub fn count_failures_in(&self, counter: IntCounter) {
        let _ = self.failures.set(counter);
    }

    /// Resolves every name; a name that fails keeps its last good addresses.
    async fn endpoints(&self) -> BTreeSet<Backend> {
        let mut answers = Vec::with_capacity(self.addrs.len());
        for address in &self.addrs {
            answers.push(match address {
                Address::Ip(ip) => Some(vec![*ip]),
                Address::Name { host, port } => match self.dns.resolve(host, *port).await {
                    Ok(addrs) => Some(addrs),
                    Err(error) => {
                        if let Some(failures) = self.failures.get() {
                            failures.inc();
                        }
                        tracing::warn!(
                            route = %self.route,
                            name = %host,
                            "resolving an upstream name failed: {error}; keeping its last known addresses"
                        );
                        None
                    }
                },
            });
        }
        let mut last_good = self.last_good.lock().expect("not poisoned");
        let mut endpoints = BTreeSet::new();
        for (origin, answer) in answers.into_iter().enumerate() {
            if let Some(addrs) = answer {
                last_good[origin] = addrs;
            }
            for addr in &last_good[origin] {
                let mut ext = Extensions::new();
                ext.insert(Origin(origin));
                endpoints.insert(Backend {
                    addr: PeerAddr::Inet(*addr),
                    weight: 1,
                    ext,
                });
            }
        }
        endpoints
    }
}

/// The [`ServiceDiscovery`] pingora-load-balancing's `Backends` asks.
pub struct Discovery(pub Arc<Resolved>);

#[async_trait]
impl ServiceDiscovery for Discovery {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let endpoints = self.0.endpoints().await;
        if endpoints.is_empty() {
            // Keeps whatever the pool had; nothing to send traffic to yet.
            return Err(pingora::Error::explain(
                pingora::ErrorType::ConnectNoRoute,
                "no upstream address resolved",
            ));
        }
        Ok((endpoints, HashMap::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_ips_or_names_with_ports() {
        assert_eq!(
            Address::parse("10.0.0.1:80"),
            Ok(Address::Ip("10.0.0.1:80".parse().unwrap()))
        );
        assert_eq!(
            Address::parse("[::1]:8443"),
            Ok(Address::Ip("[::1]:8443".parse().unwrap()))
        );
        assert_eq!(
            Address::parse("api.default.svc.cluster.local.:8080"),
            Ok(Address::Name {
                host: "api.default.svc.cluster.local.".into(),
                port: 8080
            })
        );
        assert_eq!(
            Address::parse("api"),
            Err(AddressError::NoPort("api".into()))
        );
        assert!(matches!(
            Address::parse("api:http"),
            Err(AddressError::BadPort { .. })
        ));
        assert!(matches!(
            Address::parse("api:0"),
            Err(AddressError::BadPort { .. })
        ));
        for host in ["", "a..b", "-a.b", "a b", "::1", "a/b"] {
            assert!(
                matches!(
                    Address::parse(&format!("{host}:80")),
                    Err(AddressError::BadHost { .. })
                ),
                "{host:?}"
            );
        }
    }

    #[test]
    fn name_servers_take_an_optional_port() {
        let dns = |servers: &[&str]| {
            Dns::compile(&DnsConfig {
                servers: servers.iter().map(|s| s.to_string()).collect(),
                timeout: Duration::from_secs(1),
            })
        };
        assert!(dns(&["127.0.0.1:5353", "10.0.0.10", "[::1]:53"]).is_ok());
        assert_eq!(
            dns(&["dns.local"]).unwrap_err(),
            AddressError::BadServer("dns.local".into())
        );
        assert_eq!(
            Dns::compile(&DnsConfig {
                servers: Vec::new(),
                timeout: Duration::ZERO,
            })
            .unwrap_err(),
            AddressError::ZeroTimeout
        );
    }
}
