//! SHA-256, for what jwtgate keeps or compares without keeping the value
//! itself: tokens in the cache and the revocation list's Redis keys, admin
//! tokens and shared secrets.

use aws_lc_rs::digest;

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    digest::digest(&digest::SHA256, bytes)
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// `bytes` as lower-case hex, for digests in Redis keys and messages.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}
