//! Tributary's shared crate: the record-batch codec every other part speaks.
//!
//! # Layout
//! - [`batch`]: the Kafka RecordBatch v2 header — named field offsets, parsing, validation
//!   without decompression, and the in-place restamp of base offset and leader epoch.
//! - [`records`]: decoding the records block (decompressing it when needed, within a limit).
//! - [`builder`]: encoding records into a batch, optionally zstd-compressed.
//! - [`varint`]: Kafka's zigzag varints.
//! - [`error`]: [`BatchError`], typed with the numbers needed to debug.
//! - [`report`]: error text for people (one-line cause chains, config messages).
//!
//! # Invariants
//! - This crate does no I/O: it turns bytes into values and values into bytes.
//! - No byte string makes it panic, and no byte string makes it allocate more than the
//!   caller's [`BatchLimits`] allow.

pub mod batch;
pub mod builder;
pub mod compression;
pub mod error;
pub mod names;
pub mod records;
pub mod report;
pub mod sys;
pub mod varint;

pub use batch::{BatchHeader, BatchIter, BatchLimits, Compression};
pub use builder::{BatchBuilder, BatchEncoder, ProducerStamp};
pub use error::BatchError;
pub use records::{DecodedRecords, Header, Record};
