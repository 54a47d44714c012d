//! Client certificates (RFC 8705): the CA bundle the TLS listener checks
//! them against, and the SHA-256 thumbprint (`x5t#S256`) a
//! certificate-bound token names, whether the certificate came in the TLS
//! handshake or, from a TLS-terminating front proxy, in a header (Envoy's
//! `x-forwarded-client-cert`, NGINX's `$ssl_client_escaped_cert`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;

use crate::certificates::{CertificateError, ReadFile, read_file};
pub use crate::config::schema::{ClientCertHeaderFormat as HeaderFormat, ClientCertMode};

/// The SHA-256 thumbprint of a certificate's DER, base64url without
/// padding: the form of a token's `cnf["x5t#S256"]` (RFC 8705 §3.1).
/// Fixed size and `Copy`, so a request view carries it without allocating.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Thumbprint([u8; Thumbprint::LEN]);

impl Thumbprint {
    /// 32 bytes in base64url without padding.
    pub const LEN: usize = 43;

    /// The thumbprint of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Self {
        Self::from_sha256(&crate::digest::sha256(der))
    }

    /// The thumbprint of a certificate whose SHA-256 digest is known.
    pub fn from_sha256(digest: &[u8; 32]) -> Self {
        let mut text = [0u8; Self::LEN];
        let written = URL_SAFE_NO_PAD
            .encode_slice(digest, &mut text)
            .expect("32 bytes encode to 43");
        debug_assert_eq!(written, Self::LEN);
        Self(text)
    }

    /// As a token's `cnf["x5t#S256"]` writes it.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("base64url is ASCII")
    }
}

impl std::fmt::Debug for Thumbprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Thumbprint({})", self.as_str())
    }
}

impl std::fmt::Display for Thumbprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The CAs client certificates must chain to, and the verifier the TLS
/// listener's handshakes use, built once per config snapshot.
#[derive(Debug)]
pub struct ClientCertAuthority {
    pub ca_path: PathBuf,
    pub mode: ClientCertMode,
    /// How many CA certificates the bundle holds.
    pub roots: usize,
    pub verifier: Arc<dyn ClientCertVerifier>,
}

impl ClientCertAuthority {
    /// Reads the PEM bundle at `ca_path`: at least one certificate, each
    /// one a usable trust anchor.
    pub fn load(
        ca_path: PathBuf,
        mode: ClientCertMode,
        read: ReadFile<'_>,
    ) -> Result<Self, CertificateError> {
        let pem = read_file(read, &ca_path)?;
        let bad = |index: usize, reason: String| CertificateError::BadCertificate {
            path: ca_path.clone(),
            reason: format!("certificate {index} of the bundle: {reason}"),
        };
        let mut store = RootCertStore::empty();
        for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
            let cert = cert.map_err(|e| bad(i + 1, e.to_string()))?;
            store.add(cert).map_err(|e| bad(i + 1, e.to_string()))?;
        }
        if store.is_empty() {
            return Err(CertificateError::NoCertificate { path: ca_path });
        }
        let roots = store.len();
        // The provider Pingora's listener runs its handshakes with.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider);
        let builder = match mode {
            ClientCertMode::Optional => builder.allow_unauthenticated(),
            ClientCertMode::Required => builder,
        };
        // Only fails without roots (checked above) or with CRLs (none given).
        let verifier = builder
            .build()
            .map_err(|e| CertificateError::BadCertificate {
                path: ca_path.clone(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            ca_path,
            mode,
            roots,
            verifier,
        })
    }

    /// The CA file, for the watcher.
    pub fn file(&self) -> &Path {
        &self.ca_path
    }
}

/// The thumbprint of the certificate a front proxy's header describes;
/// `None` when the value is not in `format`, or names no certificate.
pub fn from_header(value: &[u8], format: HeaderFormat) -> Option<Thumbprint> {
    let value = std::str::from_utf8(value).ok()?.trim();
    match format {
        HeaderFormat::Xfcc => from_xfcc(value),
        HeaderFormat::EscapedPem => from_escaped_pem(value),
    }
}

/// The thumbprint of a URL-encoded PEM certificate (NGINX's
/// `$ssl_client_escaped_cert`, Envoy's `Cert=`, and Envoy gRPC
/// `ext_authz`'s `attributes.source.certificate`): the first certificate's.
pub fn from_escaped_pem(value: &str) -> Option<Thumbprint> {
    let pem = percent_encoding::percent_decode_str(value).collect::<Vec<u8>>();
    let der = CertificateDer::pem_slice_iter(&pem).next()?.ok()?;
    Some(Thumbprint::of_der(&der))
}

/// The client certificate in an `x-forwarded-client-cert` value. Each
/// proxy that forwards appends its own element, so the last one is what the
/// proxy next to jwtgate (the trusted one) saw of its client.
fn from_xfcc(value: &str) -> Option<Thumbprint> {
    let element = split_unquoted(value, ',').last()?;
    let mut cert = None;
    for pair in split_unquoted(element, ';') {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"');
        if key.trim().eq_ignore_ascii_case("hash") {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(value, &mut digest).ok()?;
            return Some(Thumbprint::from_sha256(&digest));
        }
        if key.trim().eq_ignore_ascii_case("cert") {
            cert = Some(value);
        }
    }
    from_escaped_pem(cert?)
}

/// `text` split at `separator` outside double quotes (XFCC quotes a
/// `Subject` or `URI` that holds `,` or `;`, and escapes `"` inside with
/// `\`).
fn split_unquoted(text: &str, separator: char) -> impl Iterator<Item = &str> {
    let mut quoted = false;
    let mut escaped = false;
    let mut start = 0;
    let mut cuts = Vec::new();
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                cuts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    cuts.push(&text[start..]);
    cuts.into_iter().filter(|part| !part.trim().is_empty())
}

#[cfg(test)]
mod tests;
