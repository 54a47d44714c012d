//! `upstream.tls` compiled into the forms Pingora's peer takes: the CA list
//! and the client certificate are read and parsed once per config, shared by
//! every request through an `Arc`, and each address's server name is
//! settled, so choosing a TLS peer per request copies no certificate.

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use pingora::protocols::tls::CaType;
use pingora::tls::{
    CertificateDer, ClientConfig, PrivateKeyDer, RootCertStore, RusTlsError, ServerName, version,
};
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::{CertKey, WrappedX509, parse_x509};
use rustls_pki_types::pem::{self, PemObject};

use crate::certificates::ReadFile;
use crate::config::resolve_path;
use crate::config::schema::{UpstreamConfig, UpstreamTlsConfig};

/// Concurrent requests one HTTP/2 connection to an upstream may carry
/// (Pingora's default is 1, which would open a connection per concurrent
/// request); the upstream's own `SETTINGS_MAX_CONCURRENT_STREAMS` still
/// applies.
const H2_STREAMS_PER_CONNECTION: usize = 100;

/// A route's upstream TLS settings, ready for [`UpstreamTls::peer`].
pub struct UpstreamTls {
    /// Per address, in the order of `Upstream::addrs`: the name the
    /// certificate must be valid for. A DNS name is also sent as SNI; an IP
    /// address is not (RFC 6066 allows only host names there).
    server_names: Vec<String>,
    verify: bool,
    /// `None`: the system roots Pingora loaded at startup.
    ca: Option<Arc<CaType>>,
    client_cert: Option<Arc<CertKey>>,
    h2: bool,
    /// Keeps pooled connections apart by what they were verified with:
    /// Pingora's own pool key covers the address, SNI, client certificate
    /// serial and `verify`, but not the CA list nor ALPN, so without it a
    /// connection checked against a CA a reload retired could be reused.
    group_key: u64,
}

impl UpstreamTls {
    /// What the connections are made with (CA list, client certificate,
    /// ALPN, verification, server names), as one number: an upstream pool
    /// whose TLS settings changed is a new pool.
    pub fn fingerprint(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        self.group_key.hash(&mut hasher);
        self.verify.hash(&mut hasher);
        self.server_names.hash(&mut hasher);
        hasher.finish()
    }

    /// The peer for the address at `index` of the upstream's addresses.
    /// Pingora's peer owns its SNI, so the name is the one copy made here;
    /// everything else is a flag or an `Arc`.
    pub fn peer(&self, addr: SocketAddr, index: usize) -> HttpPeer {
        let mut peer = HttpPeer::new(addr, true, self.server_names[index].clone());
        peer.client_cert_key = self.client_cert.clone();
        peer.group_key = self.group_key;
        peer.options.verify_cert = self.verify;
        peer.options.ca = self.ca.clone();
        if self.h2 {
            peer.options.set_http_version(2, 1);
            peer.options.max_h2_streams = H2_STREAMS_PER_CONNECTION;
        }
        peer
    }
}

// Certificates' Debug output is pages long; the names and flags say what a
// snapshot dump needs.
impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_names", &self.server_names)
            .field("verify", &self.verify)
            .field("ca_certificates", &self.ca.as_ref().map(|ca| ca.len()))
            .field("client_cert", &self.client_cert.is_some())
            .field("h2", &self.h2)
            .finish()
    }
}

/// Why `upstream.tls` can't be used. Paths are shown, file contents never.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    #[error("upstream.tls.sni: {0:?} is not a DNS name or IP address")]
    BadSni(String),
    #[error(
        "upstream address {addr:?}: {host:?} can't be checked against a certificate (not a DNS name or IP address); set upstream.tls.sni"
    )]
    BadHost { addr: String, host: String },
    #[error(
        "upstream.tls.client_cert and upstream.tls.client_key go together; client_cert is {cert}, client_key is {key}"
    )]
    HalfClientIdentity { cert: String, key: String },
    #[error("upstream.tls.{field}: cannot read {}: {source}", path.display())]
    Read {
        field: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("upstream.tls.{field}: {} is not valid PEM: {detail}", path.display())]
    BadPem {
        field: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("upstream.tls.{field}: {} holds no CERTIFICATE block", path.display())]
    NoCertificate { field: &'static str, path: PathBuf },
    #[error("upstream.tls.{field}: certificate {index} in {} can't be parsed: {detail}", path.display())]
    BadCertificate {
        field: &'static str,
        path: PathBuf,
        index: usize,
        detail: String,
    },
    #[error("upstream.tls.client_key: {} holds no private key (PKCS#8, PKCS#1 or SEC1 PEM)", path.display())]
    NoKey { path: PathBuf },
    #[error(
        "upstream.tls.client_key: {} does not match the certificate in upstream.tls.client_cert {}",
        key.display(),
        cert.display()
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("upstream.tls.client_key: {} can't be used with upstream.tls.client_cert {}: {detail}", key.display(), cert.display())]
    BadKey {
        cert: PathBuf,
        key: PathBuf,
        detail: String,
    },
    #[error(
        "upstream.tls: no ca_file is set and no system root certificates were found (SSL_CERT_FILE, SSL_CERT_DIR or the system store); install them (Debian: ca-certificates) or set upstream.tls.ca_file"
    )]
    NoSystemRoots,
}

/// The compiled TLS settings of `upstream`, `None` for clear text.
/// Relative paths are read from `base_dir`.
pub fn compile(
    upstream: &UpstreamConfig,
    base_dir: &Path,
    read: ReadFile<'_>,
) -> Result<Option<UpstreamTls>, UpstreamTlsError> {
    let Some(config) = upstream.tls.as_ref().filter(|tls| tls.enabled) else {
        return Ok(None);
    };
    // `check` and reloads validate keys before any connector is built.
    crate::tls_provider::install();

    let server_names = server_names(config, &upstream.addrs)?;
    let mut group = DefaultHasher::new();
    config.h2.hash(&mut group);
    let ca = match &config.ca_file {
        Some(file) => {
            let path = resolve_path(base_dir, file);
            let certificates = certificates("ca_file", &path, read)?;
            trust_anchors(&path, &certificates)?;
            certificates.hash(&mut group);
            Some(Arc::from(wrap(certificates)))
        }
        None => {
            if !system_roots_exist() {
                return Err(UpstreamTlsError::NoSystemRoots);
            }
            None
        }
    };
    let client_cert = match (&config.client_cert, &config.client_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            let cert = resolve_path(base_dir, cert);
            let key = resolve_path(base_dir, key);
            let identity = client_identity(&cert, &key, read)?;
            // The chain names the key (they were just checked to match), so
            // hashing the public half keeps key material out of the key.
            for certificate in identity.certificates() {
                certificate.hash(&mut group);
            }
            Some(Arc::new(identity.into_cert_key()))
        }
        (cert, key) => {
            let describe = |path: &Option<PathBuf>| {
                path.as_ref()
                    .map_or_else(|| "not set".to_string(), |p| format!("{:?}", p.display()))
            };
            return Err(UpstreamTlsError::HalfClientIdentity {
                cert: describe(cert),
                key: describe(key),
            });
        }
    };
    Ok(Some(UpstreamTls {
        server_names,
        verify: config.verify,
        ca,
        client_cert,
        h2: config.h2,
        group_key: group.finish(),
    }))
}

/// The warning a route gets for `verify: false`, logged at startup and on
/// each reload (and printed by `check`).
pub fn warning(route: &str, upstream: &UpstreamConfig) -> Option<String> {
    let tls = upstream.tls.as_ref()?;
    (tls.enabled && !tls.verify).then(|| {
        format!(
            "route {route:?}: upstream.tls.verify is false: the upstream's certificate is not checked, so anything on the network path can pose as the upstream and read its traffic"
        )
    })
}

/// `sni` for every address, or each address's own host.
fn server_names(
    config: &UpstreamTlsConfig,
    addrs: &[String],
) -> Result<Vec<String>, UpstreamTlsError> {
    if let Some(sni) = &config.sni {
        if ServerName::try_from(sni.as_str()).is_err() {
            return Err(UpstreamTlsError::BadSni(sni.clone()));
        }
        return Ok(vec![sni.clone(); addrs.len()]);
    }
    addrs
        .iter()
        .map(|addr| {
            let host = host_of(addr);
            match ServerName::try_from(host) {
                Ok(_) => Ok(host.to_string()),
                Err(_) => Err(UpstreamTlsError::BadHost {
                    addr: addr.clone(),
                    host: host.to_string(),
                }),
            }
        })
        .collect()
}

/// The host of `host:port`, without the brackets of an IPv6 address.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    // A fully qualified name's final dot is not part of the name a
    // certificate lists.
    match host.parse::<IpAddr>() {
        Ok(_) => host,
        Err(_) => host.trim_end_matches('.'),
    }
}

/// Every CERTIFICATE block of a PEM file, in order, each checked by the
/// parser Pingora will run on it (which panics on what it can't parse).
fn certificates(
    field: &'static str,
    path: &Path,
    read: ReadFile<'_>,
) -> Result<Vec<CertificateDer<'static>>, UpstreamTlsError> {
    let text = read_file(read, field, path)?;
    let mut certificates = Vec::new();
    for item in CertificateDer::pem_slice_iter(&text) {
        let certificate = item.map_err(|e| UpstreamTlsError::BadPem {
            field,
            path: path.to_path_buf(),
            detail: pem_error(e),
        })?;
        if let Err(e) = x509_parser::parse_x509_certificate(&certificate) {
            return Err(UpstreamTlsError::BadCertificate {
                field,
                path: path.to_path_buf(),
                index: certificates.len() + 1,
                detail: e.to_string(),
            });
        }
        certificates.push(certificate);
    }
    if certificates.is_empty() {
        return Err(UpstreamTlsError::NoCertificate {
            field,
            path: path.to_path_buf(),
        });
    }
    Ok(certificates)
}

/// The CA list must load into a root store as Pingora loads it per
/// connection, or every handshake would fail.
fn trust_anchors(
    path: &Path,
    certificates: &[CertificateDer<'static>],
) -> Result<(), UpstreamTlsError> {
    let mut store = RootCertStore::empty();
    for (index, certificate) in certificates.iter().enumerate() {
        store
            .add(certificate.clone())
            .map_err(|e| UpstreamTlsError::BadCertificate {
                field: "ca_file",
                path: path.to_path_buf(),
                index: index + 1,
                detail: e.to_string(),
            })?;
    }
    Ok(())
}

fn wrap(certificates: Vec<CertificateDer<'static>>) -> Vec<WrappedX509> {
    certificates
        .into_iter()
        .map(|der| WrappedX509::new(der.to_vec(), parse_x509))
        .collect()
}

/// A client certificate chain and the key that goes with it.
struct ClientIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl ClientIdentity {
    fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    fn into_cert_key(self) -> CertKey {
        let chain = self.chain.iter().map(|der| der.to_vec()).collect();
        CertKey::new(chain, self.key.secret_der().to_vec())
    }
}

/// Reads the chain and the key and checks them the way Pingora uses them
/// at connect time: the key bytes re-read as DER (Pingora unwraps that), a
/// rustls client config built from the pair, which refuses a key that
/// doesn't match the leaf certificate.
fn client_identity(
    cert: &Path,
    key: &Path,
    read: ReadFile<'_>,
) -> Result<ClientIdentity, UpstreamTlsError> {
    let chain = certificates("client_cert", cert, read)?;
    let key_text = read_file(read, "client_key", key)?;
    let private_key = PrivateKeyDer::from_pem_slice(&key_text).map_err(|e| match e {
        pem::Error::NoItemsFound => UpstreamTlsError::NoKey {
            path: key.to_path_buf(),
        },
        e => UpstreamTlsError::BadPem {
            field: "client_key",
            path: key.to_path_buf(),
            detail: pem_error(e),
        },
    })?;
    let bad_key = |detail: String| UpstreamTlsError::BadKey {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        detail,
    };
    let as_pingora_reads_it = PrivateKeyDer::try_from(private_key.secret_der().to_vec())
        .map_err(|e| bad_key(e.to_string()))?;
    let built = ClientConfig::builder_with_protocol_versions(&[&version::TLS12, &version::TLS13])
        .with_root_certificates(RootCertStore::empty())
        .with_client_auth_cert(chain.clone(), as_pingora_reads_it);
    match built {
        Ok(_) => Ok(ClientIdentity {
            chain,
            key: private_key,
        }),
        Err(RusTlsError::InconsistentKeys(_)) => Err(UpstreamTlsError::KeyMismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        }),
        Err(e) => Err(bad_key(e.to_string())),
    }
}

fn read_file(
    read: ReadFile<'_>,
    field: &'static str,
    path: &Path,
) -> Result<Vec<u8>, UpstreamTlsError> {
    read(path).map_err(|source| UpstreamTlsError::Read {
        field,
        path: path.to_path_buf(),
        source,
    })
}

/// PEM errors in words; none of them carries the file's bytes.
fn pem_error(error: pem::Error) -> String {
    match error {
        pem::Error::MissingSectionEnd { .. } => "a BEGIN line has no matching END line".into(),
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed".into(),
        pem::Error::Base64Decode(_) => "a block is not valid base64".into(),
        pem::Error::NoItemsFound => "no PEM block found".into(),
        other => format!("{other:?}"),
    }
}

/// Whether the system roots Pingora loads at startup (the same loader,
/// with SSL_CERT_FILE and SSL_CERT_DIR) hold anything. Read once, as
/// Pingora does: a reload can't change what its connector trusts.
fn system_roots_exist() -> bool {
    static EXIST: OnceLock<bool> = OnceLock::new();
    *EXIST.get_or_init(|| pingora::tls::load_native_certs().is_ok_and(|roots| !roots.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_of_an_address_is_its_server_name() {
        assert_eq!(host_of("api.internal:443"), "api.internal");
        assert_eq!(host_of("api.internal.:443"), "api.internal");
        assert_eq!(host_of("10.0.0.7:8443"), "10.0.0.7");
        assert_eq!(host_of("[::1]:8443"), "::1");
    }
}
