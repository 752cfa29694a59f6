//! Decoding the records block of a batch.
//!
//! Record layout (inside the block, after decompression):
//! `length: varint` (bytes that follow), `attributes: i8`, `timestamp_delta: varlong`,
//! `offset_delta: varint`, `key_length: varint` (-1 = null), `key`, `value_length: varint`
//! (-1 = null), `value`, `header_count: varint`, then per header `key_length: varint`, `key`,
//! `value_length: varint` (-1 = null), `value`.
//!
//! [`DecodedRecords::new`] validates every record once (lengths, counts, offset deltas);
//! iterating afterwards yields borrowed slices and allocates nothing.

use crate::batch::{BatchHeader, BatchLimits, Compression, RECORDS_OFFSET, validate_batch};
use crate::error::BatchError;
use crate::varint::{get_varint, get_varlong};

/// One header of a record: a UTF-8 key by convention (bytes here) and an optional value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
}

/// One record, borrowed from its decoded block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub attributes: i8,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    headers_raw: &'a [u8],
    header_count: usize,
}

impl<'a> Record<'a> {
    /// The record's headers, in order.
    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter {
            buf: self.headers_raw,
            pos: 0,
            left: self.header_count,
        }
    }

    /// Number of headers.
    pub fn header_count(&self) -> usize {
        self.header_count
    }
}

/// Iterator over a record's headers (already validated when the block was decoded).
#[derive(Debug, Clone)]
pub struct HeaderIter<'a> {
    buf: &'a [u8],
    pos: usize,
    left: usize,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = Header<'a>;
    fn next(&mut self) -> Option<Header<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // The bytes were validated by parse_header; an error here cannot happen, and ending
        // the iteration early is the safe answer if it somehow did.
        parse_header(self.buf, &mut self.pos, 0).ok()
    }
}

/// A batch's records block, decompressed if needed and fully validated.
#[derive(Debug, Clone)]
pub struct DecodedRecords<'a> {
    header: BatchHeader,
    block: Block<'a>,
}

#[derive(Debug, Clone)]
enum Block<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
}

impl<'a> DecodedRecords<'a> {
    /// Validates the batch at the start of `batch` (header, CRC), decompresses its records
    /// block within `limits`, and validates every record.
    pub fn new(batch: &'a [u8], limits: &BatchLimits) -> Result<Self, BatchError> {
        let header = validate_batch(batch, limits)?;
        Self::from_validated(batch, header, limits)
    }

    /// As [`DecodedRecords::new`] for a batch whose header and CRC were already checked by
    /// [`validate_batch`] (the CRC is not computed again). `header` must be that result.
    pub fn from_validated(
        batch: &'a [u8],
        header: BatchHeader,
        limits: &BatchLimits,
    ) -> Result<Self, BatchError> {
        if batch.len() < header.size() {
            return Err(BatchError::Truncated {
                what: "batch",
                at: 0,
                need: header.size(),
                have: batch.len(),
            });
        }
        let raw = &batch[RECORDS_OFFSET..header.size()];
        let block = match header.compression()? {
            Compression::None => Block::Borrowed(raw),
            Compression::Zstd => Block::Owned(decompress_zstd(raw, limits.uncompressed_bytes_max)?),
            other => Block::Owned(crate::compression::decompress(
                other,
                raw,
                limits.uncompressed_bytes_max,
            )?),
        };
        let decoded = Self { header, block };
        decoded.check()?;
        Ok(decoded)
    }

    /// The batch header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// Size of the uncompressed records block.
    pub fn block_len(&self) -> usize {
        self.bytes().len()
    }

    fn bytes(&self) -> &[u8] {
        match &self.block {
            Block::Borrowed(b) => b,
            Block::Owned(v) => v,
        }
    }

    /// The records, in offset order.
    pub fn iter(&self) -> RecordIter<'_> {
        RecordIter {
            buf: self.bytes(),
            pos: 0,
            left: self.header.record_count.max(0) as usize,
        }
    }

    fn check(&self) -> Result<(), BatchError> {
        let buf = self.bytes();
        let declared = self.header.record_count.max(0) as usize;
        let mut pos = 0;
        let mut index = 0;
        while pos < buf.len() {
            if index == declared {
                return Err(BatchError::RecordCountMismatch {
                    declared: declared as i64,
                    found: index as i64 + 1,
                });
            }
            let record = parse_record(buf, &mut pos, index)?;
            if record.offset_delta as usize != index || record.offset_delta < 0 {
                return Err(BatchError::BadOffsetDelta {
                    index,
                    offset_delta: i64::from(record.offset_delta),
                });
            }
            index += 1;
        }
        if index != declared {
            return Err(BatchError::RecordCountMismatch {
                declared: declared as i64,
                found: index as i64,
            });
        }
        Ok(())
    }
}

/// Iterator over a validated block's records.
#[derive(Debug, Clone)]
pub struct RecordIter<'a> {
    buf: &'a [u8],
    pos: usize,
    left: usize,
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Record<'a>;
    fn next(&mut self) -> Option<Record<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // Validated in DecodedRecords::check, so the header walk is skipped; see HeaderIter::next.
        parse_record_inner(self.buf, &mut self.pos, 0, false).ok()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

thread_local! {
    static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn decompress_zstd(data: &[u8], max: usize) -> Result<Vec<u8>, BatchError> {
    let zerr = |e: std::io::Error| BatchError::Zstd {
        message: e.to_string(),
    };
    // When the frame states its size (ours always do), refuse early and allocate exactly once.
    if let Ok(Some(size)) = zstd::zstd_safe::get_frame_content_size(data) {
        if size > max as u64 {
            return Err(BatchError::DecompressedTooLarge { max });
        }
        // One zstd context per thread, reused: creating one per batch costs more than
        // decompressing a small batch.
        return DCTX.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = Some(zstd::bulk::Decompressor::new().map_err(zerr)?);
            }
            match slot.as_mut() {
                Some(d) => d.decompress(data, size as usize).map_err(zerr),
                None => Err(BatchError::Zstd {
                    message: "no decompression context".into(),
                }),
            }
        });
    }
    // Otherwise stream, reading at most one byte past the limit to detect a bomb. The
    // window a frame may ask the decoder to hold is bounded by the limit too, with an 8 MiB
    // floor (the window zstd's levels 1-19 choose for a stream of unknown size), so a tiny
    // frame cannot make the decoder allocate zstd's default maximum of 128 MiB.
    let mut decoder = zstd::stream::read::Decoder::with_buffer(data).map_err(zerr)?;
    let window_log = (usize::BITS - max.max(1).leading_zeros()).clamp(23, 27);
    decoder.window_log_max(window_log).map_err(zerr)?;
    match crate::compression::bounded_read(decoder, max) {
        Ok(Some(out)) => Ok(out),
        Ok(None) => Err(BatchError::DecompressedTooLarge { max }),
        // zstd's "Frame requires too much memory for decoding": the window is over the cap.
        Err(e) if e.to_string().contains("too much memory") => {
            Err(BatchError::DecompressedTooLarge { max })
        }
        Err(e) => Err(zerr(e)),
    }
}

fn field_len(
    buf: &[u8],
    pos: &mut usize,
    base: usize,
    what: &'static str,
) -> Result<Option<usize>, BatchError> {
    let at = *pos;
    let len = get_varint(buf, pos, base)?;
    if len == -1 {
        return Ok(None);
    }
    if len < 0 || buf.len() - *pos < len as usize {
        return Err(BatchError::BadFieldLength {
            what,
            length: i64::from(len),
            at: base + at,
        });
    }
    Ok(Some(len as usize))
}

fn take<'a>(buf: &'a [u8], pos: &mut usize, len: Option<usize>) -> Option<&'a [u8]> {
    len.map(|n| {
        let s = &buf[*pos..*pos + n];
        *pos += n;
        s
    })
}

fn parse_header<'a>(buf: &'a [u8], pos: &mut usize, base: usize) -> Result<Header<'a>, BatchError> {
    let klen = field_len(buf, pos, base, "header key")?;
    let Some(klen) = klen else {
        return Err(BatchError::BadFieldLength {
            what: "header key",
            length: -1,
            at: base + *pos,
        });
    };
    let key = &buf[*pos..*pos + klen];
    *pos += klen;
    let vlen = field_len(buf, pos, base, "header value")?;
    let value = take(buf, pos, vlen);
    Ok(Header { key, value })
}

fn parse_record<'a>(
    buf: &'a [u8],
    pos: &mut usize,
    index: usize,
) -> Result<Record<'a>, BatchError> {
    parse_record_inner(buf, pos, index, true)
}

/// Parses one record; `check_headers` walks and validates every header (skipped only for
/// blocks already validated).
fn parse_record_inner<'a>(
    buf: &'a [u8],
    pos: &mut usize,
    index: usize,
    check_headers: bool,
) -> Result<Record<'a>, BatchError> {
    let start = *pos;
    let length = get_varint(buf, pos, 0)?;
    if length < 1 || buf.len() - *pos < length as usize {
        return Err(BatchError::BadFieldLength {
            what: "record",
            length: i64::from(length),
            at: start,
        });
    }
    let body_start = *pos;
    let body_end = body_start + length as usize;
    // Parse within the record's own span so a lying field cannot read its neighbour.
    let body = &buf[..body_end];
    let mut p = body_start;
    let attributes = body[p] as i8;
    p += 1;
    let timestamp_delta = get_varlong(body, &mut p, 0)?;
    let offset_delta = get_varint(body, &mut p, 0)?;
    let klen = field_len(body, &mut p, 0, "key")?;
    let key = take(body, &mut p, klen);
    let vlen = field_len(body, &mut p, 0, "value")?;
    let value = take(body, &mut p, vlen);
    let count_at = p;
    let header_count = get_varint(body, &mut p, 0)?;
    if header_count < 0 {
        return Err(BatchError::BadFieldLength {
            what: "header count",
            length: i64::from(header_count),
            at: count_at,
        });
    }
    let headers_start = p;
    if !check_headers {
        *pos = body_end;
        return Ok(Record {
            attributes,
            timestamp_delta,
            offset_delta,
            key,
            value,
            headers_raw: &buf[headers_start..body_end],
            header_count: header_count as usize,
        });
    }
    for _ in 0..header_count {
        parse_header(body, &mut p, 0)?;
    }
    if p != body_end {
        return Err(BatchError::RecordLengthMismatch {
            index,
            declared: i64::from(length),
            used: p - body_start,
        });
    }
    *pos = body_end;
    Ok(Record {
        attributes,
        timestamp_delta,
        offset_delta,
        key,
        value,
        headers_raw: &buf[headers_start..body_end],
        header_count: header_count as usize,
    })
}
