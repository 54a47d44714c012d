//! The TLS listener's certificates: PEM files read into the form rustls
//! signs handshakes with, each key checked against its certificate, and
//! the SNI name → certificate lookup the listener's resolver asks on every
//! handshake. They are part of the config snapshot, so a reload reads the
//! files again and a bad pair fails the reload before anything is swapped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// A certificate this close to its notAfter deserves a warning (`jwtgate
/// check`, startup, reload): time for a failed renewal to be noticed and
/// fixed.
pub const EXPIRY_WARNING_SECS: i64 = 30 * 24 * 60 * 60;

/// Why a certificate entry can't be served.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} holds no PEM private key", path.display())]
    NoKey { path: PathBuf },
    #[error("{}: the certificate cannot be parsed: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{}: the private key cannot be used: {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error("{} is not the private key of the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
}

/// Why a name can't be one of a certificate's `hosts`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostError {
    #[error("{0:?} is not a DNS name (letters, digits, `-`, dot-separated labels)")]
    NotADnsName(String),
    #[error("{0:?}: a wildcard is only allowed as the whole first label (*.example.com)")]
    MisplacedWildcard(String),
    #[error("{0:?} is listed by two certificates")]
    Duplicate(String),
}

/// One `listen.https.certificates` entry, as read from disk.
#[derive(Debug)]
pub struct LoadedCertificate {
    /// Lower case, as configured (`*.example.com` included).
    pub hosts: Vec<String>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub key: Arc<CertifiedKey>,
    /// The leaf certificate's notAfter, Unix seconds.
    pub not_after: i64,
    /// The leaf's DNS names (subjectAltName), lower case.
    pub names: Vec<String>,
}

impl LoadedCertificate {
    /// Configured hosts the certificate does not name: clients that check
    /// the name (all browsers, curl) would refuse it for them.
    pub fn unnamed_hosts(&self) -> impl Iterator<Item = &str> {
        self.hosts
            .iter()
            .map(String::as_str)
            .filter(|host| !self.names.iter().any(|name| covers(name, host)))
    }
}

/// Whether the certificate name `name` (`a.example.com`, `*.example.com`)
/// is valid for the configured host `host` (which may be a wildcard too).
fn covers(name: &str, host: &str) -> bool {
    if name == host {
        return true;
    }
    match (name.strip_prefix("*."), host.split_once('.')) {
        (Some(parent), Some((label, host_parent))) => label != "*" && parent == host_parent,
        _ => false,
    }
}

/// Every certificate the TLS listener serves, and which name gets which.
#[derive(Debug)]
pub struct Certificates {
    /// Config order; the first is the default.
    entries: Vec<LoadedCertificate>,
    /// Exact name → entry.
    exact: HashMap<String, usize>,
    /// `*.example.com` → entry, keyed by `example.com`.
    wildcard: HashMap<String, usize>,
}

/// Reads a file the config names.
pub type ReadFile<'a> = &'a dyn Fn(&Path) -> std::io::Result<Vec<u8>>;

/// What a certificate entry is read from.
pub struct CertificateFiles<'a> {
    pub hosts: &'a [String],
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Certificates {
    /// Reads and checks every entry; `entries` must not be empty.
    pub fn load<'a>(
        entries: impl IntoIterator<Item = CertificateFiles<'a>>,
        read: ReadFile<'_>,
    ) -> Result<Self, (usize, LoadError)> {
        let mut loaded = Vec::new();
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (index, files) in entries.into_iter().enumerate() {
            let mut hosts = Vec::with_capacity(files.hosts.len());
            for host in files.hosts {
                let host = host.to_ascii_lowercase();
                let (map, key) = match host.strip_prefix("*.") {
                    Some(parent) => (&mut wildcard, parent),
                    None => (&mut exact, host.as_str()),
                };
                check_dns_name(key, &host).map_err(|e| (index, LoadError::Host(e)))?;
                if map.insert(key.to_string(), index).is_some() {
                    return Err((index, LoadError::Host(HostError::Duplicate(host))));
                }
                hosts.push(host);
            }
            let certificate = load_pair(hosts, files.cert, files.key, read)
                .map_err(|e| (index, LoadError::Certificate(e)))?;
            loaded.push(certificate);
        }
        assert!(
            !loaded.is_empty(),
            "listen.https.certificates is checked non-empty"
        );
        Ok(Self {
            entries: loaded,
            exact,
            wildcard,
        })
    }

    /// The certificate for a ClientHello's SNI name: an exact entry, else a
    /// wildcard one for the name's parent, else the first entry.
    pub fn select(&self, server_name: Option<&str>) -> &Arc<CertifiedKey> {
        let index = server_name.and_then(|name| {
            // rustls hands over SNI lower-cased already; only a name that
            // is not pays for a copy.
            let lowered;
            let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
                lowered = name.to_ascii_lowercase();
                lowered.as_str()
            } else {
                name
            };
            let name = name.strip_suffix('.').unwrap_or(name);
            self.exact.get(name).or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent)
            })
        });
        &self.entries[index.copied().unwrap_or(0)].key
    }

    pub fn entries(&self) -> &[LoadedCertificate] {
        &self.entries
    }

    /// Every certificate file and key file, for the watcher.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.entries
            .iter()
            .flat_map(|entry| [entry.cert_path.as_path(), entry.key_path.as_path()])
    }

    /// A warning for each certificate that has expired or expires within
    /// `within_secs` of `now`.
    pub fn expiry_warnings(&self, now: i64, within_secs: i64) -> Vec<String> {
        self.entries
            .iter()
            .filter_map(|entry| {
                expiry_warning(
                    &entry.cert_path,
                    &entry.hosts,
                    entry.not_after,
                    now,
                    within_secs,
                )
            })
            .collect()
    }
}

fn expiry_warning(
    cert_path: &Path,
    hosts: &[String],
    not_after: i64,
    now: i64,
    within_secs: i64,
) -> Option<String> {
    if not_after - now >= within_secs {
        return None;
    }
    let when = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(not_after.max(0) as u64),
    );
    let (cert, hosts) = (cert_path.display(), hosts.join(", "));
    Some(if not_after <= now {
        format!(
            "the certificate in {cert} (hosts {hosts}) expired at {when}: clients will refuse it"
        )
    } else {
        let days = (not_after - now) / 86_400;
        format!("the certificate in {cert} (hosts {hosts}) expires at {when}, in {days} days")
    })
}

/// Why `listen.https.certificates[i]` was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("hosts: {0}")]
    Host(HostError),
    #[error(transparent)]
    Certificate(CertificateError),
}

fn check_dns_name(name: &str, as_written: &str) -> Result<(), HostError> {
    if name.contains('*') {
        return Err(HostError::MisplacedWildcard(as_written.to_string()));
    }
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if name.len() > 253 || !name.split('.').all(valid_label) {
        return Err(HostError::NotADnsName(as_written.to_string()));
    }
    Ok(())
}

/// A certificate file's bytes; unreadable: an error naming it.
pub fn read_file(read: ReadFile<'_>, path: &Path) -> Result<Vec<u8>, CertificateError> {
    read(path).map_err(|source| CertificateError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn load_pair(
    hosts: Vec<String>,
    cert_path: PathBuf,
    key_path: PathBuf,
    read: ReadFile<'_>,
) -> Result<LoadedCertificate, CertificateError> {
    let pem = read_file(read, &cert_path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertificateError::BadCertificate {
            path: cert_path.clone(),
            reason: e.to_string(),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(CertificateError::NoCertificate { path: cert_path });
    };
    let (not_after, names) = match x509_parser::parse_x509_certificate(leaf) {
        Ok((_, parsed)) => (parsed.validity().not_after.timestamp(), dns_names(&parsed)),
        Err(e) => {
            return Err(CertificateError::BadCertificate {
                path: cert_path,
                reason: e.to_string(),
            });
        }
    };
    let key_pem = read_file(read, &key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => CertificateError::NoKey {
            path: key_path.clone(),
        },
        other => CertificateError::BadKey {
            path: key_path.clone(),
            reason: other.to_string(),
        },
    })?;
    // The provider Pingora's listener signs with.
    let provider = rustls::crypto::ring::default_provider();
    let key = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => CertificateError::KeyMismatch {
            cert: cert_path.clone(),
            key: key_path.clone(),
        },
        other => CertificateError::BadKey {
            path: key_path.clone(),
            reason: other.to_string(),
        },
    })?;
    Ok(LoadedCertificate {
        hosts,
        cert_path,
        key_path,
        key: Arc::new(key),
        not_after,
        names,
    })
}

/// The subjectAltName DNS names, which is what clients check a host
/// against (RFC 6125 §6.4.4: not the subject's CN when there are any).
fn dns_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(name) => Some(name.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_warns_within_the_window_and_says_expired_once_past() {
        let hosts = ["a.test".to_string()];
        let path = Path::new("/tls/a.crt");
        let not_after = 1_800_000_000; // 2027-01-15T08:00:00Z
        let day = 86_400;
        assert_eq!(
            expiry_warning(path, &hosts, not_after, not_after - 31 * day, 30 * day),
            None
        );
        assert_eq!(
            expiry_warning(path, &hosts, not_after, not_after - 10 * day - 5, 30 * day).as_deref(),
            Some(
                "the certificate in /tls/a.crt (hosts a.test) expires at 2027-01-15T08:00:00Z, in 10 days"
            )
        );
        assert_eq!(
            expiry_warning(path, &hosts, not_after, not_after + 1, 30 * day).as_deref(),
            Some(
                "the certificate in /tls/a.crt (hosts a.test) expired at 2027-01-15T08:00:00Z: clients will refuse it"
            )
        );
    }

    #[test]
    fn a_certificate_name_covers_itself_and_one_label_under_a_wildcard() {
        assert!(covers("a.example.com", "a.example.com"));
        assert!(covers("*.example.com", "a.example.com"));
        assert!(covers("*.example.com", "*.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(!covers("*.example.com", "a.b.example.com"));
        assert!(!covers("a.example.com", "*.example.com"));
        assert!(!covers("b.example.com", "a.example.com"));
    }

    #[test]
    fn host_names_are_dns_names_with_at_most_a_leading_wildcard() {
        assert_eq!(check_dns_name("api.example.com", "api.example.com"), Ok(()));
        assert_eq!(
            check_dns_name("a.*.example.com", "a.*.example.com"),
            Err(HostError::MisplacedWildcard("a.*.example.com".into()))
        );
        for bad in [
            "",
            "api..example.com",
            "-api.example.com",
            "api_1.example.com",
        ] {
            assert_eq!(
                check_dns_name(bad, bad),
                Err(HostError::NotADnsName(bad.into()))
            );
        }
    }
}
