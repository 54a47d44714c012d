//! Just enough WebSocket (RFC 6455 §5.2) to close a proxied connection
//! cleanly: where each direction's frames begin, and the close frames
//! themselves. A close frame may only go between two frames; a control
//! frame between the fragments of a message is allowed (§5.4), and
//! permessage-deflate leaves the framing alone.

use bytes::{BufMut, Bytes, BytesMut};

/// Close status 1008: policy violation (RFC 6455 §7.4.1).
const POLICY_VIOLATION: u16 = 1008;
const FIN_CLOSE: u8 = 0x88;
const MASKED: u8 = 0x80;

/// Follows one direction's frames by counting: each header is read, each
/// payload skipped, nothing copied or kept.
#[derive(Debug, Default)]
pub struct FrameTracker {
    header: [u8; 14],
    /// Header bytes seen of the frame being read.
    have: u8,
    /// Payload bytes still to come of the current frame.
    remaining: u64,
}

impl FrameTracker {
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let skipped = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.remaining -= skipped as u64;
                data = &data[skipped..];
                continue;
            }
            self.header[usize::from(self.have)] = data[0];
            self.have += 1;
            data = &data[1..];
            let seen = &self.header[..usize::from(self.have)];
            if let Some((length, payload)) = header(seen)
                && seen.len() == length
            {
                self.remaining = payload;
                self.have = 0;
            }
        }
    }

    /// Whether the bytes fed so far end with a whole frame.
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }
}

/// A frame header's length and its payload's, once enough of it is seen
/// to tell; the payload length only once the header is whole.
fn header(seen: &[u8]) -> Option<(usize, u64)> {
    let second = *seen.get(1)?;
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & MASKED != 0 { 4 } else { 0 };
    let length = 2 + extended + mask;
    if seen.len() < length {
        return Some((length, 0));
    }
    let payload = match extended {
        0 => u64::from(second & 0x7f),
        size => seen[2..2 + size]
            .iter()
            .fold(0, |n, byte| (n << 8) | u64::from(*byte)),
    };
    Some((length, payload))
}

/// The payload of a close frame: status 1008 and `reason` (at most 123
/// bytes, as a control frame's payload is at most 125).
fn close_payload(reason: &str) -> Vec<u8> {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&POLICY_VIOLATION.to_be_bytes());
    payload.extend_from_slice(reason);
    payload
}

/// A close frame as a server sends it: unmasked.
pub fn close_to_client(reason: &str) -> Bytes {
    let payload = close_payload(reason);
    let mut frame = BytesMut::with_capacity(2 + payload.len());
    frame.put_u8(FIN_CLOSE);
    frame.put_u8(payload.len() as u8);
    frame.put_slice(&payload);
    frame.freeze()
}

/// A close frame as a client sends it: masked with a fresh random key
/// (RFC 6455 §5.3).
pub fn close_to_upstream(reason: &str) -> Bytes {
    let mut key = [0u8; 4];
    if aws_lc_rs::rand::fill(&mut key).is_err() {
        // The key only keeps intermediaries from caching what they see;
        // any value keeps the frame valid.
        key = [0x5a, 0xa5, 0x3c, 0xc3];
    }
    let payload = close_payload(reason);
    let mut frame = BytesMut::with_capacity(6 + payload.len());
    frame.put_u8(FIN_CLOSE);
    frame.put_u8(MASKED | payload.len() as u8);
    frame.put_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(masked: bool, payload_len: usize) -> Vec<u8> {
        let mut frame = vec![0x82];
        let mask = if masked { MASKED } else { 0 };
        match payload_len {
            0..=125 => frame.push(mask | payload_len as u8),
            126..=0xffff => {
                frame.push(mask | 126);
                frame.extend_from_slice(&(payload_len as u16).to_be_bytes());
            }
            _ => {
                frame.push(mask | 127);
                frame.extend_from_slice(&(payload_len as u64).to_be_bytes());
            }
        }
        if masked {
            frame.extend_from_slice(&[1, 2, 3, 4]);
        }
        frame.extend(std::iter::repeat_n(0x41, payload_len));
        frame
    }

    #[test]
    fn boundaries_are_found_across_any_split_of_the_bytes() {
        for masked in [false, true] {
            let mut bytes = Vec::new();
            for len in [0, 5, 125, 126, 300, 70_000] {
                bytes.extend(frame(masked, len));
            }
            for chunk in [1, 2, 3, 7, 100, 4096, bytes.len()] {
                let mut tracker = FrameTracker::default();
                for piece in bytes.chunks(chunk) {
                    tracker.feed(piece);
                }
                assert!(tracker.at_boundary(), "masked {masked}, chunks of {chunk}");
            }
            let mut tracker = FrameTracker::default();
            let whole = frame(masked, 300);
            tracker.feed(&whole[..1]);
            assert!(!tracker.at_boundary(), "inside a header");
            tracker.feed(&whole[1..whole.len() - 1]);
            assert!(!tracker.at_boundary(), "inside a payload");
            tracker.feed(&whole[whole.len() - 1..]);
            assert!(tracker.at_boundary());
        }
    }

    #[test]
    fn close_frames_carry_1008_and_the_reason() {
        let down = close_to_client("token expired");
        assert_eq!(&down[..], b"\x88\x0f\x03\xf0token expired");

        let up = close_to_upstream("token revoked");
        assert_eq!(up[0], 0x88);
        assert_eq!(up[1], 0x80 | 15, "masked, 15 bytes of payload");
        let key = &up[2..6];
        let payload: Vec<u8> = up[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect();
        assert_eq!(payload, b"\x03\xf0token revoked");
        let mut tracker = FrameTracker::default();
        tracker.feed(&up);
        assert!(tracker.at_boundary());
    }
}
