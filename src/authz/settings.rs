//! `listen.authz` compiled: restart-only, like every listener (compiled by
//! the assembler, which reads the shared secret).

use crate::config::schema::AuthzConvention;

/// The authorization listener's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthzSettings {
    pub addr: String,
    pub convention: AuthzConvention,
    /// Empty, or `/prefix` without a trailing slash.
    pub path_prefix: String,
    pub secret: Option<SharedSecret>,
    /// Envoy's gRPC `Authorization/Check`, when served.
    pub grpc_addr: Option<std::net::SocketAddr>,
}

/// Kept as a SHA-256 digest: comparing digests of equal length in constant
/// time shows neither the secret's length nor where a guess went wrong.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedSecret {
    pub header: http::HeaderName,
    pub digest: [u8; 32],
}

impl std::fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSecret")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl AuthzSettings {
    /// For a refused reload: what changed, never the secret itself.
    pub fn describe(&self) -> String {
        let convention = self.convention.as_str();
        let mut text = format!("{} ({convention}", self.addr);
        if !self.path_prefix.is_empty() {
            text.push_str(&format!(", path_prefix {}", self.path_prefix));
        }
        if let Some(grpc) = &self.grpc_addr {
            text.push_str(&format!(", grpc {grpc}"));
        }
        if let Some(secret) = &self.secret {
            // A changed secret under the same header must still show as a
            // change; eight bits of its digest tell nothing about it.
            text.push_str(&format!(
                ", shared secret in {} #{:02x}",
                secret.header, secret.digest[0]
            ));
        }
        text.push(')');
        text
    }
}
