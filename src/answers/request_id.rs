//! Request ids: unique per request, cheap to make. A random UUID per request
//! would cost a `getrandom` system call each time; instead one random seed
//! per process is mixed with a counter through a bijective 64-bit mixer
//! (SplitMix64's finalizer), so ids never repeat within a process and don't
//! reveal the request count, and two replicas collide only if their 128-bit
//! seeds do.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderName, HeaderValue};

pub const REQUEST_ID: &str = "x-request-id";
/// Looked up on every request: parsed once, not per lookup.
pub static REQUEST_ID_NAME: HeaderName = HeaderName::from_static(REQUEST_ID);
const MAX_REQUEST_ID_LEN: usize = 128;

/// The request's id: the client's `X-Request-Id` when it looks like an id
/// (visible ASCII, bounded length), so traces join up across hops;
/// otherwise a new one. A header value, so each header it goes into
/// shares it rather than copying it; marked sensitive, so HTTP/2's HPACK
/// never indexes it: a value sent once would only push the headers that
/// repeat out of both sides' tables.
pub fn request_id_in(headers: &HeaderMap) -> HeaderValue {
    let mut id = headers
        .get(&REQUEST_ID_NAME)
        .filter(|v| {
            let v = v.as_bytes();
            !v.is_empty() && v.len() <= MAX_REQUEST_ID_LEN && v.iter().all(|b| b.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(new_request_id_header);
    id.set_sensitive(true);
    id
}

/// The request id as text, for logs and JSON bodies. Both kinds of id are
/// visible ASCII; empty before one is assigned.
pub fn request_id_text(id: &HeaderValue) -> &str {
    id.to_str().unwrap_or_default()
}

struct Generator {
    seed: [u64; 2],
    counter: AtomicU64,
}

fn generator() -> &'static Generator {
    static GENERATOR: OnceLock<Generator> = OnceLock::new();
    GENERATOR.get_or_init(|| {
        let mut bytes = [0u8; 16];
        // Without randomness ids are still unique within the process.
        let _ = aws_lc_rs::rand::fill(&mut bytes);
        Generator {
            seed: [
                u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")),
                u64::from_le_bytes(bytes[8..].try_into().expect("8 bytes")),
            ],
            counter: AtomicU64::new(0),
        }
    })
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A new id in the familiar 8-4-4-4-12 hex form.
pub fn new_request_id() -> String {
    let id = next_id();
    String::from_utf8(id.to_vec()).expect("hex digits and dashes are ASCII")
}

/// [`new_request_id`] as the header value it is sent in: one allocation,
/// no formatting machinery, on every request that brings no id of its own.
/// The bytes are reference-counted from the start, so the copies that go
/// upstream and back to the client share them without another allocation.
pub fn new_request_id_header() -> HeaderValue {
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(next_id()))
        .expect("hex digits and dashes are a valid header value")
}

fn next_id() -> [u8; 36] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let generator = generator();
    let n = generator.counter.fetch_add(1, Ordering::Relaxed);
    let high = mix(n ^ generator.seed[0]);
    let low = mix(n.wrapping_add(generator.seed[1]));
    let mut hex = [0u8; 32];
    let bytes = high.to_be_bytes().into_iter().chain(low.to_be_bytes());
    for (pair, byte) in hex.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
    // 32 hex digits of high then low, dashes after digits 8, 12, 16, 20.
    let mut id = [b'-'; 36];
    id[..8].copy_from_slice(&hex[..8]);
    id[9..13].copy_from_slice(&hex[8..12]);
    id[14..18].copy_from_slice(&hex[12..16]);
    id[19..23].copy_from_slice(&hex[16..20]);
    id[24..].copy_from_slice(&hex[20..]);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_well_formed() {
        let ids: std::collections::HashSet<String> =
            (0..10_000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(10) {
            assert_eq!(id.len(), 36);
            let groups: Vec<usize> = id.split('-').map(str::len).collect();
            assert_eq!(groups, [8, 4, 4, 4, 12]);
            assert!(id.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()));
        }
    }

    /// The id is the old `{:08x}-{:04x}-{:04x}-{:04x}-{:012x}` of the two
    /// mixed words, digit for digit.
    #[test]
    fn ids_spell_the_mixed_words_in_hex() {
        let n = generator().counter.load(Ordering::Relaxed);
        let id = new_request_id_header();
        let generator = generator();
        let mut matched = false;
        // Other tests take ids concurrently: find the counter value used.
        for n in n..n + 10_000 {
            let high = mix(n ^ generator.seed[0]);
            let low = mix(n.wrapping_add(generator.seed[1]));
            let expected = format!(
                "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                high >> 32,
                (high >> 16) & 0xffff,
                high & 0xffff,
                low >> 48,
                low & 0xffff_ffff_ffff
            );
            if id.as_bytes() == expected.as_bytes() {
                matched = true;
                break;
            }
        }
        assert!(matched, "{id:?} is not the hex of the mixed counter");
    }
}
