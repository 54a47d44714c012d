use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use super::KeySet;

/// The current keys of one issuer. Readers take a lock-free snapshot; a
/// writer (a future refresh task) swaps in a whole new set at once, so a
/// request never sees a half-updated key set.
#[derive(Debug, Default)]
pub struct KeyStore {
    current: ArcSwap<KeySet>,
}

impl KeyStore {
    pub fn new(keys: KeySet) -> Self {
        Self {
            current: ArcSwap::from_pointee(keys),
        }
    }

    pub fn current(&self) -> Guard<Arc<KeySet>> {
        self.current.load()
    }

    pub fn replace(&self, keys: KeySet) {
        self.current.store(Arc::new(keys));
    }

    /// Usable keys are present (what `/readyz` asks of every issuer).
    pub fn is_ready(&self) -> bool {
        !self.current.load().is_empty()
    }
}
