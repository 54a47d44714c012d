//! A Status List (draft-ietf-oauth-status-list §4): `bits` per token,
//! packed least significant bit first into bytes, zlib-compressed and
//! base64url-encoded as `lst`. Decoded once per fetch; a request reads
//! one entry with a shift and a mask.

use std::io::Read;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A decoded list: the status bytes, ready for lookups.
#[derive(Debug, PartialEq, Eq)]
pub struct StatusBits {
    bits: u8,
    bytes: Box<[u8]>,
}

/// Why a `status_list` claim can't be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("bits must be 1, 2, 4 or 8")]
    Bits,
    #[error("lst is not base64url")]
    Base64,
    #[error("lst is not zlib data")]
    Zlib,
    #[error("lst inflates to more than {0} bytes")]
    TooLarge(usize),
}

impl StatusBits {
    /// Decodes `lst`, refusing more than `max_bytes` of status bytes
    /// before they are all inflated (a compression bomb stops there).
    pub fn decode(bits: u64, lst: &str, max_bytes: usize) -> Result<Self, DecodeError> {
        let bits = match bits {
            1 | 2 | 4 | 8 => bits as u8,
            _ => return Err(DecodeError::Bits),
        };
        // Some encoders pad; the draft says unpadded. Both mean the same bytes.
        let compressed = URL_SAFE_NO_PAD
            .decode(lst.trim_end_matches('='))
            .map_err(|_| DecodeError::Base64)?;
        let mut bytes = Vec::new();
        flate2::read::ZlibDecoder::new(compressed.as_slice())
            .take(max_bytes as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|_| DecodeError::Zlib)?;
        if bytes.len() > max_bytes {
            return Err(DecodeError::TooLarge(max_bytes));
        }
        Ok(Self {
            bits,
            bytes: bytes.into_boxed_slice(),
        })
    }

    /// The status at `index`, or `None` past the end of the list.
    #[inline]
    pub fn get(&self, index: u64) -> Option<u8> {
        let bit = index.checked_mul(u64::from(self.bits))?;
        let byte = *self.bytes.get(usize::try_from(bit / 8).ok()?)?;
        let mask = ((1u16 << self.bits) - 1) as u8;
        Some((byte >> (bit % 8)) & mask)
    }

    /// How many entries the list has.
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64 * 8 / u64::from(self.bits)
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// What keeping the list costs in memory.
    pub fn memory_bytes(&self) -> usize {
        size_of::<Self>() + self.bytes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn compressed(bytes: &[u8]) -> String {
        let mut encoder =
            flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).unwrap();
        URL_SAFE_NO_PAD.encode(encoder.finish().unwrap())
    }

    #[test]
    fn the_drafts_one_bit_example() {
        // draft-ietf-oauth-status-list §4.1, bits: 1.
        let list = StatusBits::decode(1, "eNrbuRgAAhcBXQ", 1024).unwrap();
        let expected = [1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1];
        let found: Vec<u8> = (0..16).map(|i| list.get(i).unwrap()).collect();
        assert_eq!(found, expected);
        assert_eq!(list.len(), 16);
        assert_eq!(list.get(16), None);
    }

    #[test]
    fn the_drafts_two_bit_example() {
        // §4.1, bits: 2.
        let list = StatusBits::decode(2, "eNo76fITAAPfAgc", 1024).unwrap();
        let expected = [1, 2, 0, 3, 0, 1, 0, 1, 1, 2, 3, 3];
        let found: Vec<u8> = (0..12).map(|i| list.get(i).unwrap()).collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn four_and_eight_bit_entries() {
        let four = StatusBits::decode(4, &compressed(&[0x21, 0xF3]), 16).unwrap();
        assert_eq!(
            (0..4).map(|i| four.get(i).unwrap()).collect::<Vec<_>>(),
            [1, 2, 3, 15]
        );
        let eight = StatusBits::decode(8, &compressed(&[0, 1, 2, 255]), 16).unwrap();
        assert_eq!(eight.get(3), Some(255));
        assert_eq!(eight.get(4), None);
        assert_eq!(eight.get(u64::MAX), None, "no overflow on a huge index");
    }

    #[test]
    fn bounds_and_garbage_are_refused() {
        assert_eq!(
            StatusBits::decode(3, "eNrbuRgAAhcBXQ", 16),
            Err(DecodeError::Bits)
        );
        assert_eq!(
            StatusBits::decode(1, "not base64!", 16),
            Err(DecodeError::Base64)
        );
        assert_eq!(StatusBits::decode(1, "AAAA", 16), Err(DecodeError::Zlib));
        // A megabyte of zeros compresses to about a kilobyte.
        let bomb = compressed(&vec![0; 1 << 20]);
        assert!(bomb.len() < 4096);
        assert_eq!(
            StatusBits::decode(1, &bomb, 1 << 16),
            Err(DecodeError::TooLarge(1 << 16))
        );
        assert!(StatusBits::decode(1, &bomb, 1 << 20).is_ok());
        let padded = format!("{}=", "eNrbuRgAAhcBXQ");
        assert!(StatusBits::decode(1, &padded, 16).is_ok());
    }
}
