//! The TLS listener's certificate choice. The listener's rustls config is
//! built once, at startup; it asks this resolver on every handshake, and
//! the resolver reads the certificates from the current config snapshot, so
//! a reload that reads new certificate files changes what the next
//! handshake gets without touching the listener or open connections.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::pipeline::Snapshot;

#[derive(Debug)]
pub struct SniResolver {
    snapshot: Arc<ArcSwap<Snapshot>>,
}

impl SniResolver {
    pub fn new(snapshot: Arc<ArcSwap<Snapshot>>) -> Self {
        Self { snapshot }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // `None` only if a snapshot without `listen.https` were served, which
        // a reload refuses (the listener is restart-only): the handshake
        // then fails instead of serving a stale certificate.
        let snapshot = self.snapshot.load();
        let https = snapshot.https.as_ref()?;
        Some(
            https
                .certificates
                .select(client_hello.server_name())
                .clone(),
        )
    }
}
