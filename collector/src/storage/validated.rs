//! [`ValidatedBatches`]: a buffer of record batches whose headers and CRCs have been checked.
//! The append path accepts only this type, so every byte written was checked right before.

use shared::batch::BatchIter;
use shared::{BatchError, BatchHeader, BatchLimits};

/// One or more whole, valid batches, back to back, with their parsed headers.
#[derive(Debug, Clone)]
pub struct ValidatedBatches {
    pub(crate) bytes: Vec<u8>,
    pub(crate) headers: Vec<(BatchHeader, usize)>,
}

impl ValidatedBatches {
    /// Validates every batch in `bytes` (header fields, length, CRC) without decompressing.
    pub fn new(bytes: Vec<u8>, limits: &BatchLimits) -> Result<Self, BatchError> {
        let mut headers = Vec::new();
        let mut iter = BatchIter::new(&bytes, *limits);
        let mut pos = 0;
        for item in iter.by_ref() {
            let (header, _) = item?;
            headers.push((header, pos));
            pos += header.size();
        }
        if headers.is_empty() {
            return Err(BatchError::Empty);
        }
        Ok(Self { bytes, headers })
    }

    /// The batches' headers with each batch's position in [`ValidatedBatches::bytes`].
    pub fn headers(&self) -> &[(BatchHeader, usize)] {
        &self.headers
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Total records over all batches.
    pub fn record_count(&self) -> u64 {
        self.headers
            .iter()
            .map(|(h, _)| h.record_count as u64)
            .sum()
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}
