//! Client certificates on the TLS listener. The listener's rustls config is
//! built once, at startup, with [`SnapshotClientVerifier`]; it asks the
//! current config snapshot on every handshake whether to request a
//! certificate, whether one is required and which CAs it must chain to, so
//! a reload that changes `listen.https.client_certs` applies to the next
//! handshake, as new server certificates do. [`Thumbprints`] hashes the
//! certificate a client presented once, when the handshake completes, and
//! leaves the thumbprint in the connection's TLS digest, where each
//! request on the connection (HTTP/1 or HTTP/2) reads it.

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::proxy::Session;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::client_certs::{ClientCertMode, Thumbprint};
use crate::pipeline::Snapshot;

#[derive(Debug)]
pub struct SnapshotClientVerifier {
    snapshot: Arc<ArcSwap<Snapshot>>,
    /// The algorithms of the provider the listener runs its handshakes
    /// with: a client's signature over the handshake does not depend on
    /// which CAs are configured.
    algorithms: WebPkiSupportedAlgorithms,
}

impl SnapshotClientVerifier {
    pub fn new(snapshot: Arc<ArcSwap<Snapshot>>) -> Self {
        Self {
            snapshot,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }

    fn mode(&self) -> Option<ClientCertMode> {
        let snapshot = self.snapshot.load();
        let client_certs = snapshot.https.as_ref()?.client_certs.as_ref()?;
        Some(client_certs.mode)
    }
}

impl ClientCertVerifier for SnapshotClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.mode().is_some()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mode() == Some(ClientCertMode::Required)
    }

    /// No CA names in the certificate request: they would have to outlive
    /// every snapshot the listener serves. The CAs are not secret; clients
    /// that pick a certificate by them (browsers) then offer every one
    /// they have, and curl, openssl and service clients send the one they
    /// are configured with anyway.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let snapshot = self.snapshot.load();
        // Only asked after offer_client_auth; a reload in between that
        // removed client_certs leaves nothing to trust the certificate to.
        let Some(client_certs) = snapshot
            .https
            .as_ref()
            .and_then(|https| https.client_certs.as_ref())
        else {
            return Err(rustls::Error::General(
                "client certificates are no longer configured".into(),
            ));
        };
        client_certs
            .verifier
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Hashes a client's certificate once per connection, when its handshake
/// completes; Pingora keeps what this returns in the connection's TLS
/// digest.
pub struct Thumbprints;

#[async_trait]
impl TlsAccept for Thumbprints {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let der = tls.peer_certificate_der()?;
        Some(Arc::new(Thumbprint::of_der(der)))
    }
}

/// The thumbprint of the certificate the client presented on the session's
/// TLS connection, if it presented one.
pub fn presented(session: &Session) -> Option<Thumbprint> {
    let digest = session.digest()?;
    let tls = digest.ssl_digest.as_ref()?;
    tls.extension.get::<Thumbprint>().copied()
}
