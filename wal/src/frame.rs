//! Record framing: `len: u32 | crc32c: u32 | seq: u64 | payload[len]`, little-endian.
//!
//! The checksum covers the sequence number and the payload, so a record that decodes is exactly
//! the record that was written, at the position it was written.

/// Bytes before the payload.
pub const HEADER_BYTES: usize = 16;

/// Largest payload a record may carry; larger lengths are treated as garbage.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 30;

/// The result of reading one frame at an offset.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole, valid record and the bytes it occupies.
    Record {
        /// Sequence number.
        seq: u64,
        /// Payload.
        payload: &'a [u8],
        /// Frame length including the header.
        len: usize,
    },
    /// The buffer ends before the frame does (a torn write, or the end of the log).
    Incomplete,
    /// The frame is complete but its checksum or length is wrong.
    Corrupt,
}

fn checksum(seq: u64, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&seq.to_le_bytes()), payload)
}

/// Appends the frame of a record to `out`.
pub fn encode(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&checksum(seq, payload).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Reads the frame at the start of `buf`.
pub fn decode(buf: &[u8]) -> Decoded<'_> {
    if buf.len() < HEADER_BYTES {
        return Decoded::Incomplete;
    }
    let word = |at: usize| u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
    let len = word(0) as usize;
    if len > MAX_PAYLOAD_BYTES {
        return Decoded::Corrupt;
    }
    let crc = word(4);
    let mut seq_bytes = [0u8; 8];
    seq_bytes.copy_from_slice(&buf[8..16]);
    let seq = u64::from_le_bytes(seq_bytes);
    let end = HEADER_BYTES + len;
    if buf.len() < end {
        return Decoded::Incomplete;
    }
    let payload = &buf[HEADER_BYTES..end];
    if checksum(seq, payload) != crc {
        return Decoded::Corrupt;
    }
    Decoded::Record {
        seq,
        payload,
        len: end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The frame as logs on disk hold it, worked out by hand (CRC-32C, Castagnoli, over the
    /// little-endian sequence number and the payload): a change to the layout fails here.
    #[test]
    fn a_frame_is_laid_out_as_documented() {
        let mut buf = Vec::new();
        encode(9, b"skein", &mut buf);
        let expected: [u8; 21] = [
            0x05, 0x00, 0x00, 0x00, // len
            0x10, 0x98, 0xd3, 0xd2, // crc32c
            0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // seq
            b's', b'k', b'e', b'i', b'n',
        ];
        assert_eq!(buf, expected);
        assert_eq!(
            decode(&expected),
            Decoded::Record {
                seq: 9,
                payload: b"skein",
                len: 21
            }
        );
    }

    proptest! {
        #[test]
        fn round_trip(seq in any::<u64>(), payload in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut buf = Vec::new();
            encode(seq, &payload, &mut buf);
            prop_assert_eq!(decode(&buf), Decoded::Record { seq, payload: &payload, len: buf.len() });
            for cut in 0..buf.len() {
                prop_assert_eq!(decode(&buf[..cut]), Decoded::Incomplete);
            }
        }

        #[test]
        fn bit_flips_never_decode_as_another_record(
            seq in any::<u64>(),
            payload in proptest::collection::vec(any::<u8>(), 1..256),
            bit in any::<prop::sample::Index>(),
        ) {
            let mut buf = Vec::new();
            encode(seq, &payload, &mut buf);
            let at = bit.index(buf.len() * 8);
            buf[at / 8] ^= 1 << (at % 8);
            match decode(&buf) {
                Decoded::Record { seq: s, payload: p, .. } => {
                    prop_assert!(false, "a flipped bit decoded as seq {} with {} bytes", s, p.len());
                }
                Decoded::Incomplete | Decoded::Corrupt => {}
            }
        }
    }
}
