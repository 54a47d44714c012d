//! Request ids: unique per request, cheap to make. A random UUID per request
//! would cost a `getrandom` system call each time; instead one random seed
//! per process is mixed with a counter through a bijective 64-bit mixer
//! (SplitMix64's finalizer), so ids never repeat within a process and don't
//! reveal the request count, and two replicas collide only if their 128-bit
//! seeds do.

use std::fmt::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

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
    let generator = generator();
    let n = generator.counter.fetch_add(1, Ordering::Relaxed);
    let high = mix(n ^ generator.seed[0]);
    let low = mix(n.wrapping_add(generator.seed[1]));
    let mut id = String::with_capacity(36);
    let _ = write!(
        id,
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        high >> 32,
        (high >> 16) & 0xffff,
        high & 0xffff,
        low >> 48,
        low & 0xffff_ffff_ffff
    );
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
}
