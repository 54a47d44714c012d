//! The tokens that may change the revocation list through the admin
//! listener, kept as digests: a token's value never stays in memory, and
//! never shows in `Debug` output or in the description a reload compares.

use std::fmt;

/// An admin token: its name (for the audit log) and the SHA-256 of its
/// value.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken {
    pub name: String,
    pub digest: [u8; 32],
    /// Where it was read from, for the reload comparison.
    pub source: String,
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminToken")
            .field("name", &self.name)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}
