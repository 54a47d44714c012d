//! Who the client is. A peer's forwarding headers are evidence only when the
//! peer is one of our own proxies (`server.trusted_proxies`); anyone else
//! could write anything in them. No Pingora in here: a peer address and the
//! `X-Forwarded-For` values in, an address out, so a decision pipeline (rate
//! limits keyed by client) can take the result as plain input.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crate::client_certs::{self, HeaderFormat, Thumbprint};

/// `X-Forwarded-For`, looked up on every request: parsed once.
pub static FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");

/// One CIDR range, e.g. `10.0.0.0/8`, `fd00::/8`, or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not an IP address or CIDR range (like 10.0.0.0/8 or fd00::/8)")]
    NotAnAddress(String),
    /// The range as written, and the longest prefix its family allows.
    #[error("{0:?}: prefix length must be 0 to {1}")]
    PrefixLength(String, u8),
    /// The range as written, and the network it probably meant.
    #[error("{0:?} has bits set past its prefix length; the range is {1}")]
    HostBitsSet(String, String),
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, CidrError> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| CidrError::NotAnAddress(text.to_string()))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix {
            None => Some(max),
            // `u8::from_str` accepts a leading `+`; a range is written without one.
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().ok().filter(|len| *len <= max)
            }
            Some(_) => None,
        }
        .ok_or_else(|| CidrError::PrefixLength(text.to_string(), max))?;
        let cidr = Cidr {
            network,
            prefix_len,
        };
        // `10.0.0.1/8` is usually a typo for a host or for `10.0.0.0/8`;
        // guessing which would widen or narrow what is trusted.
        let masked = cidr.masked(network);
        if masked != network {
            return Err(CidrError::HostBitsSet(
                text.to_string(),
                format!("{masked}/{prefix_len}"),
            ));
        }
        Ok(cidr)
    }
}

impl Cidr {
    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix_len));
                IpAddr::from((u32::from(v4) & mask.unwrap_or(0)).to_be_bytes())
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix_len));
                IpAddr::from((u128::from(v6) & mask.unwrap_or(0)).to_be_bytes())
            }
        }
    }

    /// `0.0.0.0/0` or `::/0`: every address of its family.
    pub fn is_everything(&self) -> bool {
        self.prefix_len == 0
    }

    /// `ip` must already be canonical (an IPv4-mapped IPv6 address as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.network.is_ipv4() && self.masked(ip) == self.network
    }
}

/// The peers whose forwarding headers are believed. Empty by default: then
/// every peer is the client itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    pub fn new(ranges: Vec<Cidr>) -> Self {
        Self(ranges)
    }

    pub fn ranges(&self) -> &[Cidr] {
        &self.0
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|range| range.contains(ip))
    }
}

/// `server.client_cert_header`: the header a TLS-terminating front proxy
/// writes the client's certificate in.
#[derive(Debug, Clone)]
pub struct ClientCertHeader {
    pub name: http::HeaderName,
    pub format: HeaderFormat,
}

/// The certificate a request is attributed to: from a trusted proxy that
/// sent `header`, the one it names (`None` when the value names none, or
/// the header came twice); otherwise the one presented on the TLS
/// connection itself (`tls`), if any.
pub fn client_cert(
    client: Option<ClientAddress>,
    tls: Option<Thumbprint>,
    header: Option<&ClientCertHeader>,
    headers: &http::HeaderMap,
) -> Option<Thumbprint> {
    let trusted = client.is_some_and(|c| c.peer_trusted);
    let Some(header) = header.filter(|_| trusted) else {
        return tls;
    };
    let mut values = headers.get_all(&header.name).iter();
    match (values.next(), values.next()) {
        (None, _) => tls,
        (Some(value), None) => client_certs::from_header(value.as_bytes(), header.format),
        (Some(_), Some(_)) => None,
    }
}

/// Who sent a request: the TCP peer, whether it is a trusted proxy, and the
/// client address the request is attributed to (logs, later rate limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress {
    pub peer: IpAddr,
    pub peer_trusted: bool,
    pub client: IpAddr,
}

impl ClientAddress {
    /// A peer that is not a trusted proxy: it is the client.
    pub fn direct(peer: IpAddr) -> Self {
        let peer = peer.to_canonical();
        Self {
            peer,
            peer_trusted: false,
            client: peer,
        }
    }

    /// From a trusted peer, `X-Forwarded-For` is walked from the right (the
    /// entry our trusted peer added last), skipping trusted proxies; the
    /// first address that is not one is the client, since any entry left of
    /// it was written by someone we can't vouch for. When every entry is a
    /// trusted proxy, the left-most is the best we know; an entry that is not
    /// an address ends the walk at the last hop we believed. (nginx's
    /// `real_ip_recursive on` reasons the same way.)
    ///
    /// `forwarded_for` holds the header's values in arrival order; several
    /// header lines read as one comma-separated list.
    /// [`Self::resolve`] with the `X-Forwarded-For` of `headers`.
    pub fn from_headers(peer: IpAddr, headers: &http::HeaderMap, trusted: &TrustedProxies) -> Self {
        let forwarded_for = headers
            .get_all(&FORWARDED_FOR)
            .iter()
            .map(http::HeaderValue::as_bytes);
        Self::resolve(peer, forwarded_for, trusted)
    }

    pub fn resolve<'a>(
        peer: IpAddr,
        forwarded_for: impl DoubleEndedIterator<Item = &'a [u8]>,
        trusted: &TrustedProxies,
    ) -> Self {
        let peer = peer.to_canonical();
        if !trusted.contains(peer) {
            return Self::direct(peer);
        }
        let mut client = peer;
        let entries = forwarded_for
            .rev()
            .flat_map(|value| value.rsplit(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|entry| !entry.is_empty());
        for entry in entries {
            let Some(hop) = parse_hop(entry) else { break };
            client = hop;
            if !trusted.contains(hop) {
                break;
            }
        }
        Self {
            peer,
            peer_trusted: true,
            client,
        }
    }
}

/// An `X-Forwarded-For` entry: an address, possibly with a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`) as some proxies write it.
fn parse_hop(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?;
    let ip = match text.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => match text.parse::<SocketAddr>() {
            Ok(addr) => addr.ip(),
            Err(_) => text.strip_prefix('[')?.strip_suffix(']')?.parse().ok()?,
        },
    };
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn trusted(ranges: &[&str]) -> TrustedProxies {
        TrustedProxies::new(ranges.iter().map(|r| r.parse().unwrap()).collect())
    }

    fn client(peer: &str, xff: &[&str], ranges: &[&str]) -> IpAddr {
        ClientAddress::resolve(ip(peer), xff.iter().map(|v| v.as_bytes()), &trusted(ranges)).client
    }

    #[test]
    fn ranges_parse_in_both_families() {
        let ranges = trusted(&["10.0.0.0/8", "192.0.2.7", "fd00::/8", "::1", "0.0.0.0/0"]);
        assert!(ranges.contains(ip("10.255.0.1")));
        assert!(ranges.contains(ip("fd12::1")));
        assert!(ranges.contains(ip("::1")));
        assert!(!ranges.contains(ip("fe80::1")));
        let v6_only = trusted(&["::/0"]);
        assert!(v6_only.contains(ip("2001:db8::1")));
        assert!(!v6_only.contains(ip("192.0.2.1")), "::/0 is not IPv4");
        let host = trusted(&["192.0.2.7/32"]);
        assert!(host.contains(ip("192.0.2.7")));
        assert!(!host.contains(ip("192.0.2.8")));
    }

    #[test]
    fn ipv4_mapped_ipv6_peers_match_ipv4_ranges() {
        let ranges = trusted(&["127.0.0.0/8"]);
        assert!(ranges.contains(ip("::ffff:127.0.0.9")));
        let address = ClientAddress::direct(ip("::ffff:192.0.2.1"));
        assert_eq!(address.client, ip("192.0.2.1"));
    }

    #[test]
    fn bad_ranges_name_the_value() {
        for (text, expected) in [
            (
                "10.0.0.0/33",
                "\"10.0.0.0/33\": prefix length must be 0 to 32",
            ),
            (
                "fd00::/129",
                "\"fd00::/129\": prefix length must be 0 to 128",
            ),
            ("10.0.0.0/", "\"10.0.0.0/\": prefix length must be 0 to 32"),
            (
                "10.0.0.0/+8",
                "\"10.0.0.0/+8\": prefix length must be 0 to 32",
            ),
            (
                "10.0.0/8",
                "\"10.0.0/8\" is not an IP address or CIDR range",
            ),
            (
                "localhost",
                "\"localhost\" is not an IP address or CIDR range",
            ),
            (
                "10.0.0.1/8",
                "\"10.0.0.1/8\" has bits set past its prefix length; the range is 10.0.0.0/8",
            ),
            (
                "fd00::1/64",
                "\"fd00::1/64\" has bits set past its prefix length; the range is fd00::/64",
            ),
        ] {
            let error = text.parse::<Cidr>().unwrap_err().to_string();
            assert!(error.starts_with(expected), "{text}: {error}");
        }
    }

    #[test]
    fn a_forwarded_certificate_counts_from_a_trusted_peer_only() {
        let header = ClientCertHeader {
            name: http::HeaderName::from_static("x-forwarded-client-cert"),
            format: HeaderFormat::Xfcc,
        };
        let (forwarded, tls) = (
            Thumbprint::from_sha256(&[7; 32]),
            Thumbprint::of_der(b"tls"),
        );
        let xfcc = format!("Hash={}", "07".repeat(32));
        let mut headers = http::HeaderMap::new();
        headers.insert(&header.name, xfcc.parse().unwrap());
        let ranges = trusted(&["10.0.0.0/8"]);
        let from = |peer: &str| Some(ClientAddress::from_headers(ip(peer), &headers, &ranges));
        let cert = |peer: &str, headers: &http::HeaderMap| {
            client_cert(from(peer), Some(tls), Some(&header), headers)
        };
        assert_eq!(cert("10.1.1.1", &headers), Some(forwarded));
        assert_eq!(
            cert("192.0.2.1", &headers),
            Some(tls),
            "untrusted: TLS only"
        );
        assert_eq!(client_cert(None, None, Some(&header), &headers), None);
        assert_eq!(cert("10.1.1.1", &http::HeaderMap::new()), Some(tls));
        let mut twice = headers.clone();
        twice.append(&header.name, xfcc.parse().unwrap());
        assert_eq!(cert("10.1.1.1", &twice), None, "two values: neither");
        let mut garbage = http::HeaderMap::new();
        garbage.insert(&header.name, "Hash=zz".parse().unwrap());
        assert_eq!(cert("10.1.1.1", &garbage), None);
        assert_eq!(
            client_cert(from("10.1.1.1"), Some(tls), None, &headers),
            Some(tls)
        );
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        assert_eq!(
            client("198.51.100.1", &["192.0.2.1"], &[]),
            ip("198.51.100.1")
        );
        assert_eq!(
            client("198.51.100.1", &["192.0.2.1"], &["10.0.0.0/8"]),
            ip("198.51.100.1")
        );
        let address = ClientAddress::resolve(ip("198.51.100.1"), [].into_iter(), &trusted(&[]));
        assert!(!address.peer_trusted);
    }

    #[test]
    fn a_trusted_peer_is_walked_past_from_the_right() {
        // (X-Forwarded-For lines from 10.0.0.1, a trusted peer; the client)
        let cases: [(&[&str], &str); 11] = [
            // The right-most untrusted entry wins; entries left of it are
            // the client's own claims.
            (&["1.1.1.1, 192.0.2.1, 10.0.0.2"], "192.0.2.1"),
            // Several header lines are one list, in order.
            (&["1.1.1.1", "192.0.2.1", "10.0.0.2"], "192.0.2.1"),
            // Nothing forwarded: the trusted peer itself.
            (&[], "10.0.0.1"),
            // Every entry trusted: the left-most.
            (&["10.0.0.3 , 10.0.0.2"], "10.0.0.3"),
            // Garbage stops the walk at the last hop believed.
            (&["192.0.2.1, unknown, 10.0.0.2"], "10.0.0.2"),
            (&["not-an-ip"], "10.0.0.1"),
            // Empty entries are skipped; ports and brackets are read.
            (&["192.0.2.1:4711,, "], "192.0.2.1"),
            (&["[2001:db8::1]:4711"], "2001:db8::1"),
            (&["[2001:db8::2]"], "2001:db8::2"),
            (&["::ffff:192.0.2.1"], "192.0.2.1"),
            (&["192.0.2.9"], "192.0.2.9"),
        ];
        for (forwarded, expected) in cases {
            let found = client("10.0.0.1", forwarded, &["10.0.0.0/8"]);
            assert_eq!(found, ip(expected), "{forwarded:?}");
        }
    }
}
