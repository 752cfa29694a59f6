//! Typed codec errors. Each carries the numbers needed to find the fault in a hex dump.

use thiserror::Error;

/// Why a byte string is not a valid record batch (or why a batch cannot be built).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// Fewer bytes than the structure being read needs.
    #[error("truncated {what}: need {need} bytes at position {at}, have {have}")]
    Truncated {
        what: &'static str,
        at: usize,
        need: usize,
        have: usize,
    },
    /// The magic byte is not 2 (only RecordBatch v2 is spoken).
    #[error("unsupported magic {magic} (only 2 is supported)")]
    BadMagic { magic: i8 },
    /// The batch length field is below the fixed header size or otherwise impossible.
    #[error("invalid batch length {length} (minimum {min})")]
    BadLength { length: i32, min: usize },
    /// The batch is larger than the configured maximum.
    #[error("batch too large: {size} bytes (max {max})")]
    TooLarge { size: usize, max: usize },
    /// The decompressed records block is larger than the configured maximum.
    #[error("records block decompresses past {max} bytes")]
    DecompressedTooLarge { max: usize },
    /// The stored CRC-32C does not match the bytes.
    #[error(
        "crc mismatch at base offset {base_offset}: stored {stored:#010x}, computed {computed:#010x}"
    )]
    CrcMismatch {
        base_offset: i64,
        stored: u32,
        computed: u32,
    },
    /// The attributes name a compression codec Tributary does not speak.
    #[error("unsupported compression codec {codec} (none=0, gzip=1, snappy=2, lz4=3, zstd=4)")]
    UnsupportedCompression { codec: u8 },
    /// Attribute bits we refuse (transactional or control batches).
    #[error("unsupported batch attributes {attributes:#06x}")]
    UnsupportedAttributes { attributes: i16 },
    /// Header record count disagrees with the last offset delta or with the records found.
    #[error("record count mismatch: header says {declared}, found {found}")]
    RecordCountMismatch { declared: i64, found: i64 },
    /// A record's offset delta is not its index in the batch.
    #[error("record {index} has offset delta {offset_delta}")]
    BadOffsetDelta { index: usize, offset_delta: i64 },
    /// A varint is longer than its type allows.
    #[error("malformed varint at position {at}")]
    BadVarint { at: usize },
    /// A length field inside a record is negative (other than -1 for null) or overruns.
    #[error("invalid {what} length {length} at position {at}")]
    BadFieldLength {
        what: &'static str,
        length: i64,
        at: usize,
    },
    /// A record's declared length does not match its contents.
    #[error("record {index} declares {declared} bytes but its fields use {used}")]
    RecordLengthMismatch {
        index: usize,
        declared: i64,
        used: usize,
    },
    /// zstd refused the data.
    #[error("zstd: {message}")]
    Zstd { message: String },
    /// gzip, snappy or lz4 refused the data.
    #[error("compression codec {codec}: {message}")]
    Codec { codec: u8, message: String },
    /// An empty batch (no records) where records are required.
    #[error("batch holds no records")]
    Empty,
}
