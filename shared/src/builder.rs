//! Encoding records into a RecordBatch v2.
//!
//! [`BatchBuilder`] appends records to an uncompressed block; [`BatchEncoder`] turns a builder
//! into batch bytes, compressing the block as one zstd frame and reusing its zstd context
//! across batches. Producers leave the base offset at 0 and the partition leader epoch at -1;
//! the broker stamps both.

use crate::batch::{
    ATTRIBUTES_OFFSET, BASE_SEQUENCE_OFFSET, BASE_TIMESTAMP_OFFSET, CRC_OFFSET, Compression,
    LAST_OFFSET_DELTA_OFFSET, LENGTH_OFFSET, LOG_OVERHEAD, MAGIC_OFFSET, MAGIC_V2,
    MAX_TIMESTAMP_OFFSET, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE,
    PARTITION_LEADER_EPOCH_OFFSET, PRODUCER_EPOCH_OFFSET, PRODUCER_ID_OFFSET, RECORD_COUNT_OFFSET,
    RECORDS_OFFSET, compute_crc,
};
use crate::error::BatchError;
use crate::varint::{put_varint, put_varlong, size_of_varlong};

/// The idempotent-producer fields of a batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStamp {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl ProducerStamp {
    /// A batch sent without idempotence.
    pub const NONE: ProducerStamp = ProducerStamp {
        producer_id: NO_PRODUCER_ID,
        producer_epoch: NO_PRODUCER_EPOCH,
        base_sequence: NO_SEQUENCE,
    };
}

/// Accumulates records (uncompressed) for one batch.
#[derive(Debug, Default, Clone)]
pub struct BatchBuilder {
    block: Vec<u8>,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
}

impl BatchBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder whose block buffer starts with `bytes` of capacity.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            block: Vec::with_capacity(bytes),
            ..Self::default()
        }
    }

    /// Number of records so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of the uncompressed records block so far.
    pub fn block_bytes(&self) -> usize {
        self.block.len()
    }

    /// Encoded size a record would add to the block.
    pub fn record_bytes(
        &self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], &[u8])],
    ) -> usize {
        let body = self.body_len(timestamp, key, value, headers);
        size_of_varlong(body as i64) + body
    }

    fn body_len(
        &self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], &[u8])],
    ) -> usize {
        let ts_delta = if self.count == 0 {
            0
        } else {
            timestamp.wrapping_sub(self.base_timestamp)
        };
        let bytes_field = |b: Option<&[u8]>| match b {
            Some(b) => size_of_varlong(b.len() as i64) + b.len(),
            None => 1,
        };
        let mut n = 1 // attributes
            + size_of_varlong(ts_delta)
            + size_of_varlong(i64::from(self.count))
            + bytes_field(key)
            + bytes_field(value)
            + size_of_varlong(headers.len() as i64);
        for (k, v) in headers {
            n += bytes_field(Some(k)) + bytes_field(Some(v));
        }
        n
    }

    /// Appends one record. The first record's timestamp becomes the batch's base timestamp.
    pub fn push(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], &[u8])],
    ) {
        if self.count == 0 {
            self.base_timestamp = timestamp;
            self.max_timestamp = timestamp;
        }
        let body = self.body_len(timestamp, key, value, headers);
        let out = &mut self.block;
        out.reserve(body + 5);
        put_varint(out, body as i32);
        out.push(0); // record attributes: unused in v2
        put_varlong(out, timestamp.wrapping_sub(self.base_timestamp));
        put_varint(out, self.count);
        put_bytes(out, key);
        put_bytes(out, value);
        put_varint(out, headers.len() as i32);
        for (k, v) in headers {
            put_bytes(out, Some(k));
            put_bytes(out, Some(v));
        }
        self.max_timestamp = self.max_timestamp.max(timestamp);
        self.count += 1;
    }

    /// Forgets all records, keeping the buffer's capacity.
    pub fn clear(&mut self) {
        self.block.clear();
        self.count = 0;
    }
}

fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_varint(out, b.len() as i32);
            out.extend_from_slice(b);
        }
        None => put_varint(out, -1),
    }
}

/// Turns builders into batch bytes. Holds a reusable zstd context.
pub struct BatchEncoder {
    compressor: zstd::bulk::Compressor<'static>,
    compression: Compression,
}

impl std::fmt::Debug for BatchEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchEncoder")
            .field("compression", &self.compression)
            .finish_non_exhaustive()
    }
}

impl BatchEncoder {
    /// An encoder producing `compression`-compressed batches (`zstd_level` applies to zstd).
    pub fn new(compression: Compression, zstd_level: i32) -> Result<Self, BatchError> {
        let mut compressor =
            zstd::bulk::Compressor::new(zstd_level).map_err(|e| BatchError::Zstd {
                message: e.to_string(),
            })?;
        // Record the decompressed size in the frame: decoders check it against their limit
        // before allocating.
        compressor
            .include_contentsize(true)
            .map_err(|e| BatchError::Zstd {
                message: e.to_string(),
            })?;
        Ok(Self {
            compressor,
            compression,
        })
    }

    /// Encodes `builder`'s records as one batch appended to `out`. Base offset 0, partition
    /// leader epoch -1. Fails only on an empty builder or a zstd error.
    pub fn encode_into(
        &mut self,
        builder: &BatchBuilder,
        stamp: ProducerStamp,
        out: &mut Vec<u8>,
    ) -> Result<(), BatchError> {
        if builder.is_empty() {
            return Err(BatchError::Empty);
        }
        let start = out.len();
        out.resize(start + RECORDS_OFFSET, 0);
        match self.compression {
            Compression::None => out.extend_from_slice(&builder.block),
            Compression::Zstd => {
                let bound = zstd::zstd_safe::compress_bound(builder.block.len());
                out.resize(start + RECORDS_OFFSET + bound, 0);
                let n = self
                    .compressor
                    .compress_to_buffer(&builder.block, &mut out[start + RECORDS_OFFSET..])
                    .map_err(|e| BatchError::Zstd {
                        message: e.to_string(),
                    })?;
                out.truncate(start + RECORDS_OFFSET + n);
            }
            other => out.extend_from_slice(&crate::compression::compress(other, &builder.block)?),
        }
        let batch = &mut out[start..];
        let length = (batch.len() - LOG_OVERHEAD) as i32;
        let put =
            |b: &mut [u8], at: usize, bytes: &[u8]| b[at..at + bytes.len()].copy_from_slice(bytes);
        put(batch, 0, &0i64.to_be_bytes());
        put(batch, LENGTH_OFFSET, &length.to_be_bytes());
        put(batch, PARTITION_LEADER_EPOCH_OFFSET, &(-1i32).to_be_bytes());
        batch[MAGIC_OFFSET] = MAGIC_V2 as u8;
        put(
            batch,
            ATTRIBUTES_OFFSET,
            &self.compression.attribute_bits().to_be_bytes(),
        );
        put(
            batch,
            LAST_OFFSET_DELTA_OFFSET,
            &(builder.count - 1).to_be_bytes(),
        );
        put(
            batch,
            BASE_TIMESTAMP_OFFSET,
            &builder.base_timestamp.to_be_bytes(),
        );
        put(
            batch,
            MAX_TIMESTAMP_OFFSET,
            &builder.max_timestamp.to_be_bytes(),
        );
        put(batch, PRODUCER_ID_OFFSET, &stamp.producer_id.to_be_bytes());
        put(
            batch,
            PRODUCER_EPOCH_OFFSET,
            &stamp.producer_epoch.to_be_bytes(),
        );
        put(
            batch,
            BASE_SEQUENCE_OFFSET,
            &stamp.base_sequence.to_be_bytes(),
        );
        put(batch, RECORD_COUNT_OFFSET, &builder.count.to_be_bytes());
        let crc = compute_crc(batch);
        put(batch, CRC_OFFSET, &crc.to_be_bytes());
        Ok(())
    }

    /// Encodes `builder` as one batch in a new vector.
    pub fn encode(
        &mut self,
        builder: &BatchBuilder,
        stamp: ProducerStamp,
    ) -> Result<Vec<u8>, BatchError> {
        let mut out = Vec::with_capacity(RECORDS_OFFSET + builder.block.len() / 2);
        self.encode_into(builder, stamp, &mut out)?;
        Ok(out)
    }
}
