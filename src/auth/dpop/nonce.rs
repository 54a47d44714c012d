//! Server-provided nonces (RFC 9449 §8): a route that requires them answers
//! a proof without a current one `401` with `error="use_dpop_nonce"` and a
//! fresh `DPoP-Nonce`, which bounds how far ahead a client (or a thief
//! with its key) can make proofs.
//!
//! A nonce is the number of its rotation period and an HMAC of it, so
//! nothing is stored and checking one takes no lock: the current and the
//! previous period's nonces are accepted, so one issued just before a
//! rotation still works for a whole period after it. The key is random per
//! process unless a shared secret is given: replicas behind a balancer
//! without affinity must share one, or a nonce from one is refused by
//! another.

use std::fmt;
use std::time::Duration;

use aws_lc_rs::{constant_time, hmac, rand};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Bytes of the HMAC a nonce carries: 128 bits, beyond guessing.
const TAG_BYTES: usize = 16;
/// The period number, big-endian, then the tag.
const NONCE_BYTES: usize = 8 + TAG_BYTES;

/// Issues nonces and tells the current ones from the others.
pub struct NonceSource {
    key: hmac::Key,
    rotate_secs: i64,
}

/// Never the key.
impl fmt::Debug for NonceSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NonceSource(rotated every {}s)", self.rotate_secs)
    }
}

impl NonceSource {
    /// Nonces under a random key of this process's own.
    pub fn new(rotate_every: Duration) -> Self {
        let mut secret = [0u8; 32];
        rand::fill(&mut secret).expect("system randomness");
        Self::with_secret(&secret, rotate_every)
    }

    /// Nonces under `secret`: replicas given the same one accept each
    /// other's.
    pub fn with_secret(secret: &[u8], rotate_every: Duration) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            rotate_secs: i64::try_from(rotate_every.as_secs())
                .unwrap_or(i64::MAX)
                .max(1),
        }
    }

    /// The nonce to send in `DPoP-Nonce` at `now` (Unix seconds).
    pub fn current(&self, now: i64) -> String {
        URL_SAFE_NO_PAD.encode(self.nonce_of(self.period(now)))
    }

    /// Whether `nonce` is the period's of `now` or the previous one's.
    pub fn accepts(&self, nonce: &str, now: i64) -> bool {
        // Checked before decoding: a nonce is of one length only.
        if nonce.len() != NONCE_BYTES.div_ceil(3) * 4 {
            return false;
        }
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(nonce) else {
            return false;
        };
        let Ok(period) = <[u8; 8]>::try_from(&bytes[..8]).map(i64::from_be_bytes) else {
            return false;
        };
        let now = self.period(now);
        if period != now && period != now - 1 {
            return false;
        }
        constant_time::verify_slices_are_equal(&self.nonce_of(period), &bytes).is_ok()
    }

    fn period(&self, now: i64) -> i64 {
        now.div_euclid(self.rotate_secs)
    }

    fn nonce_of(&self, period: i64) -> [u8; NONCE_BYTES] {
        let mut nonce = [0u8; NONCE_BYTES];
        nonce[..8].copy_from_slice(&period.to_be_bytes());
        let tag = hmac::sign(&self.key, &nonce[..8]);
        nonce[8..].copy_from_slice(&tag.as_ref()[..TAG_BYTES]);
        nonce
    }
}
