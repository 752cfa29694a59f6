//! Kafka's variable-length integers: zigzag-encoded, 7 bits per byte, least significant first
//! (the protobuf encoding). `varint` holds an i32 (at most 5 bytes), `varlong` an i64 (10).

use crate::error::BatchError;

/// Maximum encoded size of a varint (i32).
pub const VARINT_BYTES_MAX: usize = 5;
/// Maximum encoded size of a varlong (i64).
pub const VARLONG_BYTES_MAX: usize = 10;

#[inline]
fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
fn unzigzag64(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Encoded size of `v` as a varlong (also right for varints, which are i32 values).
#[inline]
pub fn size_of_varlong(v: i64) -> usize {
    let z = zigzag64(v);
    // Number of significant bits, at least one, 7 per byte.
    let bits = 64 - (z | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Appends `v` as a varlong.
#[inline]
pub fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = zigzag64(v);
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Appends `v` as a varint.
#[inline]
pub fn put_varint(out: &mut Vec<u8>, v: i32) {
    put_varlong(out, i64::from(v));
}

/// Reads a varlong at `*pos`, advancing it. `base` is added to positions in errors.
#[inline]
pub fn get_varlong(buf: &[u8], pos: &mut usize, base: usize) -> Result<i64, BatchError> {
    get_unsigned(buf, pos, base, VARLONG_BYTES_MAX).map(unzigzag64)
}

/// Reads a varint (an i32) at `*pos`, advancing it.
#[inline]
pub fn get_varint(buf: &[u8], pos: &mut usize, base: usize) -> Result<i32, BatchError> {
    let start = *pos;
    let v = unzigzag64(get_unsigned(buf, pos, base, VARINT_BYTES_MAX)?);
    i32::try_from(v).map_err(|_| BatchError::BadVarint { at: base + start })
}

#[inline]
fn get_unsigned(
    buf: &[u8],
    pos: &mut usize,
    base: usize,
    bytes_max: usize,
) -> Result<u64, BatchError> {
    let start = *pos;
    // Fast path: most varints in a record (attributes, small lengths, deltas) are one byte.
    if let Some(&b) = buf.get(start)
        && b & 0x80 == 0
    {
        *pos = start + 1;
        return Ok(u64::from(b));
    }
    let mut value: u64 = 0;
    for i in 0..bytes_max {
        let Some(&byte) = buf.get(start + i) else {
            return Err(BatchError::Truncated {
                what: "varint",
                at: base + start,
                need: i + 1,
                have: buf.len().saturating_sub(start),
            });
        };
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *pos = start + i + 1;
            return Ok(value);
        }
    }
    Err(BatchError::BadVarint { at: base + start })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: i64) -> Vec<u8> {
        let mut out = Vec::new();
        put_varlong(&mut out, v);
        out
    }

    #[test]
    fn known_encodings() {
        // From the protobuf zigzag table: 0->0, -1->1, 1->2, -2->3, 63->126, -64->127, 64->128.
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(-1), [0x01]);
        assert_eq!(enc(1), [0x02]);
        assert_eq!(enc(-2), [0x03]);
        assert_eq!(enc(63), [0x7e]);
        assert_eq!(enc(-64), [0x7f]);
        assert_eq!(enc(64), [0x80, 0x01]);
        assert_eq!(enc(300), [0xd8, 0x04]);
        assert_eq!(enc(i64::MIN).len(), VARLONG_BYTES_MAX);
    }

    #[test]
    fn sizes_match_encodings() {
        for v in [
            0,
            1,
            -1,
            63,
            64,
            -65,
            8191,
            8192,
            i32::MAX as i64,
            i64::MAX,
            i64::MIN,
        ] {
            assert_eq!(size_of_varlong(v), enc(v).len(), "{v}");
        }
    }

    #[test]
    fn rejects_overlong_and_out_of_range() {
        let mut pos = 0;
        assert!(matches!(
            get_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01], &mut pos, 0),
            Err(BatchError::BadVarint { at: 0 })
        ));
        // A valid varlong that does not fit an i32.
        let big = enc(i64::from(i32::MAX) + 1);
        let mut pos = 0;
        assert!(get_varint(&big, &mut pos, 0).is_err());
        let mut pos = 0;
        assert!(matches!(
            get_varlong(&[0x80], &mut pos, 0),
            Err(BatchError::Truncated { .. })
        ));
    }
}
