//! The RecordBatch v2 header: layout, parsing, validation and restamping.
//!
//! Byte layout (all integers big-endian), as in Kafka's protocol documentation:
//!
//! | offset | size | field                  | covered by CRC |
//! |-------:|-----:|------------------------|:--------------:|
//! |      0 |    8 | base offset            |                |
//! |      8 |    4 | batch length (bytes after this field) |  |
//! |     12 |    4 | partition leader epoch |                |
//! |     16 |    1 | magic (= 2)            |                |
//! |     17 |    4 | CRC-32C                |                |
//! |     21 |    2 | attributes             | yes            |
//! |     23 |    4 | last offset delta      | yes            |
//! |     27 |    8 | base timestamp         | yes            |
//! |     35 |    8 | max timestamp          | yes            |
//! |     43 |    8 | producer id            | yes            |
//! |     51 |    2 | producer epoch         | yes            |
//! |     53 |    4 | base sequence          | yes            |
//! |     57 |    4 | record count           | yes            |
//! |     61 |    … | records (maybe compressed) | yes        |
//!
//! Because the CRC starts at the attributes, the broker can rewrite the base offset and the
//! partition leader epoch without recomputing it — and without decompressing anything.

use crate::error::BatchError;

pub const BASE_OFFSET_OFFSET: usize = 0;
pub const LENGTH_OFFSET: usize = 8;
pub const PARTITION_LEADER_EPOCH_OFFSET: usize = 12;
pub const MAGIC_OFFSET: usize = 16;
pub const CRC_OFFSET: usize = 17;
pub const ATTRIBUTES_OFFSET: usize = 21;
pub const LAST_OFFSET_DELTA_OFFSET: usize = 23;
pub const BASE_TIMESTAMP_OFFSET: usize = 27;
pub const MAX_TIMESTAMP_OFFSET: usize = 35;
pub const PRODUCER_ID_OFFSET: usize = 43;
pub const PRODUCER_EPOCH_OFFSET: usize = 51;
pub const BASE_SEQUENCE_OFFSET: usize = 53;
pub const RECORD_COUNT_OFFSET: usize = 57;
/// Where the records block starts; also the size of the fixed header.
pub const RECORDS_OFFSET: usize = 61;
/// Bytes before the length field's span starts: base offset (8) + length (4).
pub const LOG_OVERHEAD: usize = 12;
/// The only supported magic value.
pub const MAGIC_V2: i8 = 2;
/// Producer id, epoch and sequence of a batch sent without idempotence.
pub const NO_PRODUCER_ID: i64 = -1;
pub const NO_PRODUCER_EPOCH: i16 = -1;
pub const NO_SEQUENCE: i32 = -1;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_TIMESTAMP_TYPE: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

const _: () = assert!(RECORD_COUNT_OFFSET + 4 == RECORDS_OFFSET);
const _: () = assert!(LENGTH_OFFSET + 4 == LOG_OVERHEAD);
const _: () = assert!(CRC_OFFSET + 4 == ATTRIBUTES_OFFSET);

/// The compression of a batch's records block (attribute bits 0..=2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// The attribute bits Kafka assigns: none = 0, gzip = 1, snappy = 2, lz4 = 3, zstd = 4.
    pub fn attribute_bits(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

/// Size limits applied while validating and decoding. Every decoder allocation is bounded by these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Largest whole batch (header + records block) accepted, in bytes.
    pub batch_bytes_max: usize,
    /// Largest records block after decompression, in bytes (the decompression-bomb guard).
    pub uncompressed_bytes_max: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        // 16 MiB matches the collector's default request size limit; a compressed batch of
        // log lines rarely shrinks below a tenth, so 256 MiB leaves room without inviting bombs.
        Self {
            batch_bytes_max: 16 * 1024 * 1024,
            uncompressed_bytes_max: 256 * 1024 * 1024,
        }
    }
}

/// The fixed 61-byte header of a batch, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

#[inline]
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
#[inline]
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
#[inline]
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

impl BatchHeader {
    /// Parses the fixed header at the start of `buf`. Checks only that the 61 bytes are there;
    /// [`BatchHeader::validate`] checks the rest.
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < RECORDS_OFFSET {
            return Err(BatchError::Truncated {
                what: "batch header",
                at: 0,
                need: RECORDS_OFFSET,
                have: buf.len(),
            });
        }
        Ok(Self {
            base_offset: be_i64(buf, BASE_OFFSET_OFFSET),
            batch_length: be_i32(buf, LENGTH_OFFSET),
            partition_leader_epoch: be_i32(buf, PARTITION_LEADER_EPOCH_OFFSET),
            magic: buf[MAGIC_OFFSET] as i8,
            crc: be_i32(buf, CRC_OFFSET) as u32,
            attributes: be_i16(buf, ATTRIBUTES_OFFSET),
            last_offset_delta: be_i32(buf, LAST_OFFSET_DELTA_OFFSET),
            base_timestamp: be_i64(buf, BASE_TIMESTAMP_OFFSET),
            max_timestamp: be_i64(buf, MAX_TIMESTAMP_OFFSET),
            producer_id: be_i64(buf, PRODUCER_ID_OFFSET),
            producer_epoch: be_i16(buf, PRODUCER_EPOCH_OFFSET),
            base_sequence: be_i32(buf, BASE_SEQUENCE_OFFSET),
            record_count: be_i32(buf, RECORD_COUNT_OFFSET),
        })
    }

    /// Reads only the total size of the batch at the start of `buf` from its first 12 bytes:
    /// what a reader of a log file needs to step from batch to batch.
    pub fn peek_size(buf: &[u8]) -> Result<usize, BatchError> {
        if buf.len() < LOG_OVERHEAD {
            return Err(BatchError::Truncated {
                what: "batch length",
                at: 0,
                need: LOG_OVERHEAD,
                have: buf.len(),
            });
        }
        let length = be_i32(buf, LENGTH_OFFSET);
        size_from_length(length)
    }

    /// Total size of the batch in bytes (offset and length fields included).
    pub fn size(&self) -> usize {
        // validate() has checked batch_length >= RECORDS_OFFSET - LOG_OVERHEAD.
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    /// The compression codec named by the attributes.
    pub fn compression(&self) -> Result<Compression, BatchError> {
        match (self.attributes & ATTR_COMPRESSION_MASK) as u8 {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            codec => Err(BatchError::UnsupportedCompression { codec }),
        }
    }

    /// Offset of the last record (base offset + last offset delta). The base offset is not
    /// covered by the CRC, so any value can arrive here: the sum wraps rather than panics.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .wrapping_add(i64::from(self.last_offset_delta))
    }

    /// The offset after this batch (wrapping, like [`BatchHeader::last_offset`]).
    pub fn next_offset(&self) -> i64 {
        self.last_offset().wrapping_add(1)
    }

    /// Sequence number of the last record, or [`NO_SEQUENCE`] for non-idempotent batches.
    /// Sequences wrap at i32::MAX to 0, as in Kafka.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence == NO_SEQUENCE {
            return NO_SEQUENCE;
        }
        let last = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        (last % (i64::from(i32::MAX) + 1)) as i32
    }

    /// Whether the batch carries an idempotent producer identity.
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }

    /// Validates the header fields that do not need the records block: magic, length, size
    /// limit, attributes and the count/offset-delta agreement. Does not check the CRC.
    pub fn validate(&self, limits: &BatchLimits) -> Result<(), BatchError> {
        if self.magic != MAGIC_V2 {
            return Err(BatchError::BadMagic { magic: self.magic });
        }
        let size = size_from_length(self.batch_length)?;
        if size > limits.batch_bytes_max {
            return Err(BatchError::TooLarge {
                size,
                max: limits.batch_bytes_max,
            });
        }
        if self.attributes & (ATTR_TRANSACTIONAL | ATTR_CONTROL) != 0
            || self.attributes & !(ATTR_COMPRESSION_MASK | ATTR_TIMESTAMP_TYPE) != 0
        {
            return Err(BatchError::UnsupportedAttributes {
                attributes: self.attributes,
            });
        }
        self.compression()?;
        if self.record_count <= 0 {
            return Err(BatchError::Empty);
        }
        if i64::from(self.last_offset_delta) + 1 != i64::from(self.record_count) {
            return Err(BatchError::RecordCountMismatch {
                declared: i64::from(self.record_count),
                found: i64::from(self.last_offset_delta) + 1,
            });
        }
        // Every record takes at least 7 bytes uncompressed (length, attributes, timestamp
        // delta, offset delta, key length, value length, header count); an uncompressed block
        // cannot hold more records than that allows.
        let block = size - RECORDS_OFFSET;
        if self.compression()? == Compression::None && (self.record_count as usize) > block / 7 {
            return Err(BatchError::RecordCountMismatch {
                declared: i64::from(self.record_count),
                found: (block / 7) as i64,
            });
        }
        Ok(())
    }
}

fn size_from_length(length: i32) -> Result<usize, BatchError> {
    let min = RECORDS_OFFSET - LOG_OVERHEAD;
    if length < min as i32 {
        return Err(BatchError::BadLength { length, min });
    }
    Ok(LOG_OVERHEAD + length as usize)
}

/// Computes the CRC-32C over the span the format defines (attributes to the end).
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_OFFSET.min(batch.len())..])
}

/// Validates the batch at the start of `buf` without decompressing it: header fields, that the
/// whole batch is present, and the CRC. Returns the header; the batch is `buf[..header.size()]`.
pub fn validate_batch(buf: &[u8], limits: &BatchLimits) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(buf)?;
    header.validate(limits)?;
    let size = header.size();
    if buf.len() < size {
        return Err(BatchError::Truncated {
            what: "batch",
            at: 0,
            need: size,
            have: buf.len(),
        });
    }
    let computed = compute_crc(&buf[..size]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            base_offset: header.base_offset,
            stored: header.crc,
            computed,
        });
    }
    Ok(header)
}

/// Rewrites the base offset and partition leader epoch of the batch at the start of `batch`.
/// Neither field is covered by the CRC, so the CRC stays valid and nothing is decompressed.
pub fn restamp(batch: &mut [u8], base_offset: i64, partition_leader_epoch: i32) {
    batch[BASE_OFFSET_OFFSET..BASE_OFFSET_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
    batch[PARTITION_LEADER_EPOCH_OFFSET..PARTITION_LEADER_EPOCH_OFFSET + 4]
        .copy_from_slice(&partition_leader_epoch.to_be_bytes());
}

/// Walks a buffer holding back-to-back batches, validating each (header and CRC).
/// Yields `(header, start position)`; stops at the end or at the first error, which it yields.
#[derive(Debug, Clone)]
pub struct BatchIter<'a> {
    buf: &'a [u8],
    pos: usize,
    limits: BatchLimits,
    failed: bool,
}

impl<'a> BatchIter<'a> {
    pub fn new(buf: &'a [u8], limits: BatchLimits) -> Self {
        Self {
            buf,
            pos: 0,
            limits,
            failed: false,
        }
    }

    /// Position of the next batch (after the last one yielded).
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<(BatchHeader, &'a [u8]), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let rest = &self.buf[self.pos..];
        match validate_batch(rest, &self.limits) {
            Ok(header) => {
                let bytes = &rest[..header.size()];
                self.pos += header.size();
                Some(Ok((header, bytes)))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}
