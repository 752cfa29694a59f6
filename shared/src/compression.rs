//! The codecs Kafka clients may use besides zstd (which `records.rs` handles with a reused
//! context): gzip, snappy (raw, or in the xerial framing the Java client writes) and lz4
//! (the LZ4 frame format). Every decoder stops one byte past `max`, so a bomb costs at most
//! `max + 1` bytes of memory.

use std::io::Read;

use crate::batch::Compression;
use crate::error::BatchError;

fn codec_error(codec: Compression, e: impl std::fmt::Display) -> BatchError {
    BatchError::Codec {
        codec: codec.attribute_bits() as u8,
        message: e.to_string(),
    }
}

/// Reads `r` to its end, refusing more than `max` bytes. The buffer grows by doubling but
/// never past `max + 1` bytes of capacity (one byte past the limit tells a bomb), so a
/// bomb costs at most that much memory (plus the old buffer while it moves).
pub(crate) fn bounded_read(mut r: impl Read, max: usize) -> std::io::Result<Option<Vec<u8>>> {
    const FIRST: usize = 8 << 10;
    let cap = max.saturating_add(1);
    // `buf[..filled]` holds what was read; `buf[filled..]` is zeroed room (each byte zeroed
    // once, when the room grows).
    let mut buf: Vec<u8> = Vec::new();
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            if filled >= cap {
                return Ok(None);
            }
            let grown = buf.len().saturating_mul(2).max(FIRST).min(cap);
            buf.reserve_exact(grown - buf.len());
            buf.resize(grown, 0);
        }
        let n = loop {
            match r.read(&mut buf[filled..]) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        }?;
        if n == 0 {
            buf.truncate(filled);
            return Ok((filled <= max).then_some(buf));
        }
        filled += n;
    }
}

fn bounded(codec: Compression, r: impl Read, max: usize) -> Result<Vec<u8>, BatchError> {
    bounded_read(r, max)
        .map_err(|e| codec_error(codec, e))?
        .ok_or(BatchError::DecompressedTooLarge { max })
}

/// The xerial snappy framing: a magic header, then `[u32 length][raw snappy block]`s.
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;

fn snappy_block(data: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), BatchError> {
    let len = snap::raw::decompress_len(data).map_err(|e| codec_error(Compression::Snappy, e))?;
    if out.len() + len > max {
        return Err(BatchError::DecompressedTooLarge { max });
    }
    let at = out.len();
    out.resize(at + len, 0);
    snap::raw::Decoder::new()
        .decompress(data, &mut out[at..])
        .map_err(|e| codec_error(Compression::Snappy, e))?;
    Ok(())
}

fn snappy(data: &[u8], max: usize) -> Result<Vec<u8>, BatchError> {
    let mut out = Vec::new();
    if data.len() >= XERIAL_HEADER_LEN && data.starts_with(XERIAL_MAGIC) {
        let mut rest = &data[XERIAL_HEADER_LEN..];
        while !rest.is_empty() {
            if rest.len() < 4 {
                return Err(codec_error(Compression::Snappy, "truncated xerial block"));
            }
            let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let block = rest
                .get(4..4 + n)
                .ok_or_else(|| codec_error(Compression::Snappy, "truncated xerial block"))?;
            snappy_block(block, max, &mut out)?;
            rest = &rest[4 + n..];
        }
        return Ok(out);
    }
    snappy_block(data, max, &mut out)?;
    Ok(out)
}

/// Decompresses a records block of a gzip, snappy or lz4 batch.
pub fn decompress(codec: Compression, data: &[u8], max: usize) -> Result<Vec<u8>, BatchError> {
    match codec {
        Compression::Gzip => bounded(codec, flate2::read::GzDecoder::new(data), max),
        Compression::Lz4 => {
            let d = lz4::Decoder::new(data).map_err(|e| codec_error(codec, e))?;
            bounded(codec, d, max)
        }
        Compression::Snappy => snappy(data, max),
        Compression::None | Compression::Zstd => Err(codec_error(codec, "not handled here")),
    }
}

/// Compresses a records block (for producers and tests; the agent writes zstd).
pub fn compress(codec: Compression, block: &[u8]) -> Result<Vec<u8>, BatchError> {
    use std::io::Write;
    match codec {
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(block).map_err(|e| codec_error(codec, e))?;
            e.finish().map_err(|e| codec_error(codec, e))
        }
        Compression::Snappy => snap::raw::Encoder::new()
            .compress_vec(block)
            .map_err(|e| codec_error(codec, e)),
        Compression::Lz4 => {
            let mut e = lz4::EncoderBuilder::new()
                .build(Vec::new())
                .map_err(|e| codec_error(codec, e))?;
            e.write_all(block).map_err(|e| codec_error(codec, e))?;
            let (out, r) = e.finish();
            r.map_err(|e| codec_error(codec, e))?;
            Ok(out)
        }
        Compression::None | Compression::Zstd => Err(codec_error(codec, "not handled here")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_codec_round_trips_and_refuses_a_bomb() {
        let block: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_be_bytes())
            .collect();
        for codec in [Compression::Gzip, Compression::Snappy, Compression::Lz4] {
            let packed = compress(codec, &block).expect("compress");
            assert_eq!(
                decompress(codec, &packed, block.len()).expect("decompress"),
                block
            );
            assert!(
                matches!(
                    decompress(codec, &packed, block.len() - 1),
                    Err(BatchError::DecompressedTooLarge { .. })
                ),
                "{codec:?} bomb not refused"
            );
            // A truncated stream never yields the whole block (the record checks that follow
            // refuse a short block).
            assert_ne!(
                decompress(codec, &packed[..packed.len() / 2], usize::MAX / 2).ok(),
                Some(block.clone()),
                "{codec:?}"
            );
        }
    }

    /// A reader that hands out a few bytes per call (as decoders fed small input chunks do)
    /// is read in linear time: the room past what was read is zeroed once, not on every
    /// call (4 MiB in 16-byte reads would otherwise zero ~0.5 TB and never finish).
    #[test]
    fn a_trickling_reader_is_read_whole_and_refused_past_the_limit() {
        struct Trickle(usize);
        impl Read for Trickle {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.min(16).min(buf.len());
                buf[..n].fill(7);
                self.0 -= n;
                Ok(n)
            }
        }
        let got = bounded_read(Trickle(4 << 20), 4 << 20).unwrap().unwrap();
        assert_eq!(got.len(), 4 << 20);
        assert!(got.capacity() <= (4 << 20) + 1);
        assert!(
            bounded_read(Trickle((4 << 20) + 1), 4 << 20)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn xerial_framed_snappy_is_read() {
        let block = b"hello xerial snappy framing ".repeat(100);
        let raw = snap::raw::Encoder::new()
            .compress_vec(&block)
            .expect("compress");
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend_from_slice(&1i32.to_be_bytes());
        framed.extend_from_slice(&1i32.to_be_bytes());
        framed.extend_from_slice(&(raw.len() as u32).to_be_bytes());
        framed.extend_from_slice(&raw);
        assert_eq!(
            decompress(Compression::Snappy, &framed, 1 << 20).expect("xerial"),
            block
        );
    }
}
