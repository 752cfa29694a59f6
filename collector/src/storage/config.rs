//! Per-log settings. Validated once, when a log is opened or a topic is configured.

use std::time::Duration;

use super::error::StorageError;

/// When appended data is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Group commit: one fsync covers every batch appended since the last, before any of them
    /// is acknowledged. The default.
    Always,
    /// The owner fsyncs every interval; appends are acknowledged before they are durable.
    Interval(Duration),
    /// Only segment rolls and clean shutdown fsync; the OS decides the rest.
    Never,
}

/// Settings of one partition log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll a new segment when the active one would grow past this many bytes.
    pub segment_bytes: u64,
    /// Roll a new segment when the active one is older than this (milliseconds).
    pub segment_ms: i64,
    /// Bytes of batches between two sparse index entries.
    pub index_interval_bytes: u64,
    /// Maximum size of one `.index` file; a full index rolls the segment. The `.timeindex`
    /// holds 12-byte entries and is capped at the same number of entries.
    pub segment_index_bytes: u64,
    /// Delete closed segments whose largest timestamp is older than this (milliseconds);
    /// `None` keeps them forever.
    pub retention_ms: Option<i64>,
    /// Delete the oldest closed segments while the partition is larger than this; `None` = no limit.
    pub retention_bytes: Option<u64>,
    /// When appended data is fsynced.
    pub flush: FlushPolicy,
}

/// Largest accepted `segment_bytes`: file positions in the index are u32, and a segment may
/// exceed its target by one batch, so the target stays under 2 GiB as in Kafka.
pub const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;
/// Smallest accepted `segment_bytes`: at least one batch header must fit.
pub const SEGMENT_BYTES_MIN: u64 = 128;
/// An index must hold at least a few entries.
pub const SEGMENT_INDEX_BYTES_MIN: u64 = 8 * 4;

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            segment_index_bytes: 10 * 1024 * 1024,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            flush: FlushPolicy::Always,
        }
    }
}

impl LogConfig {
    /// Checks every value; the error names the setting.
    pub fn validate(&self) -> Result<(), StorageError> {
        let bad = |key: &'static str, reason: String| Err(StorageError::Config { key, reason });
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return bad(
                "segment_bytes",
                format!(
                    "{} is outside {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}",
                    self.segment_bytes
                ),
            );
        }
        if self.segment_ms <= 0 {
            return bad(
                "segment_ms",
                format!("{} must be positive", self.segment_ms),
            );
        }
        if self.index_interval_bytes == 0 {
            return bad("index_interval_bytes", "must be positive".into());
        }
        if self.segment_index_bytes < SEGMENT_INDEX_BYTES_MIN
            || self.segment_index_bytes > u32::MAX as u64
        {
            return bad(
                "segment_index_bytes",
                format!(
                    "{} is outside {SEGMENT_INDEX_BYTES_MIN}..=4 GiB",
                    self.segment_index_bytes
                ),
            );
        }
        if let Some(ms) = self.retention_ms
            && ms <= 0
        {
            return bad(
                "retention_ms",
                format!("{ms} must be positive (or unset for forever)"),
            );
        }
        if let FlushPolicy::Interval(d) = self.flush
            && d.is_zero()
        {
            return bad("flush_interval_ms", "must be positive".into());
        }
        Ok(())
    }

    /// Entries one `.index` file may hold.
    pub fn index_entries_max(&self) -> u64 {
        self.segment_index_bytes / super::index::OFFSET_ENTRY_BYTES
    }
}
