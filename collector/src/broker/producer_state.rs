//! Idempotent-producer state of one partition (DESIGN §2).
//!
//! Per producer id the leader keeps the epoch and the sequence ranges and offsets of the last
//! [`BATCHES_CACHED`] batches. A batch from an older epoch is fenced; a batch whose sequence
//! does not follow on is refused; a retried batch equal to a cached one is answered with its
//! original offsets and not written again. The table is rebuilt from the log (batch headers
//! carry producer id, epoch and sequences), starting from the latest snapshot.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shared::BatchHeader;

/// Batches remembered per producer (Kafka keeps five, matching in-flight requests <= 5).
pub const BATCHES_CACHED: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: u64,
    pub last_offset: u64,
    pub append_time_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchMeta>,
    /// Last append (ms), for expiration.
    pub last_seen_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProducerError {
    #[error("producer {producer_id} epoch {epoch} is fenced by epoch {current}")]
    Fenced {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    #[error("producer {producer_id}: expected sequence {expected}, got {got}")]
    OutOfOrder {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
}

/// What to do with one incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Append,
    Duplicate(BatchMeta),
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX { 0 } else { seq + 1 }
}

/// The producer table of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerTable {
    entries: HashMap<i64, ProducerEntry>,
}

impl ProducerTable {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A copy holding only the given producers (to judge a request without cloning all).
    pub fn subset(&self, ids: impl IntoIterator<Item = i64>) -> Self {
        let mut entries = HashMap::new();
        for id in ids {
            if let Some(e) = self.entries.get(&id) {
                entries.insert(id, e.clone());
            }
        }
        Self { entries }
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.entries.get(&producer_id)
    }

    /// Whether `h` comes after a batch of its producer (same epoch) this table has not
    /// seen yet: its sequence is ahead of the next one expected. A batch that overtook the
    /// one before it on another connection looks like this for a moment.
    pub fn ahead_of_next(&self, h: &BatchHeader) -> bool {
        if !h.has_producer_id() {
            return false;
        }
        let Some(last) = self
            .entries
            .get(&h.producer_id)
            .filter(|e| e.epoch == h.producer_epoch)
            .and_then(|e| e.batches.back())
        else {
            return false;
        };
        let gap = h.base_sequence.wrapping_sub(next_seq(last.last_seq));
        gap > 0 && gap < 1 << 30
    }

    /// Judges a batch against the table (not changing it).
    pub fn check(&self, h: &BatchHeader) -> Result<Verdict, ProducerError> {
        if !h.has_producer_id() {
            return Ok(Verdict::Append);
        }
        let Some(e) = self.entries.get(&h.producer_id) else {
            // Unknown (new, or expired): any starting sequence is accepted.
            return Ok(Verdict::Append);
        };
        if h.producer_epoch < e.epoch {
            return Err(ProducerError::Fenced {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                current: e.epoch,
            });
        }
        if h.producer_epoch > e.epoch {
            // A new epoch restarts the sequence at 0.
            if h.base_sequence != 0 {
                return Err(ProducerError::OutOfOrder {
                    producer_id: h.producer_id,
                    expected: 0,
                    got: h.base_sequence,
                });
            }
            return Ok(Verdict::Append);
        }
        if let Some(b) = e
            .batches
            .iter()
            .find(|b| b.first_seq == h.base_sequence && b.last_seq == h.last_sequence())
        {
            return Ok(Verdict::Duplicate(*b));
        }
        let expected = e
            .batches
            .back()
            .map_or(h.base_sequence, |b| next_seq(b.last_seq));
        if h.base_sequence != expected {
            return Err(ProducerError::OutOfOrder {
                producer_id: h.producer_id,
                expected,
                got: h.base_sequence,
            });
        }
        Ok(Verdict::Append)
    }

    /// Records an appended batch (with its assigned offsets).
    pub fn record(&mut self, h: &BatchHeader, append_time_ms: i64) {
        if !h.has_producer_id() || h.base_offset < 0 {
            return;
        }
        let e = self
            .entries
            .entry(h.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: h.producer_epoch,
                batches: VecDeque::new(),
                last_seen_ms: append_time_ms,
            });
        if h.producer_epoch > e.epoch {
            e.epoch = h.producer_epoch;
            e.batches.clear();
        }
        e.batches.push_back(BatchMeta {
            first_seq: h.base_sequence,
            last_seq: h.last_sequence(),
            base_offset: h.base_offset as u64,
            last_offset: h.last_offset() as u64,
            append_time_ms,
        });
        while e.batches.len() > BATCHES_CACHED {
            e.batches.pop_front();
        }
        e.last_seen_ms = e.last_seen_ms.max(append_time_ms);
    }

    /// Forgets producers idle for longer than `expiration_ms`.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|_, e| now_ms.saturating_sub(e.last_seen_ms) <= expiration_ms);
        before - self.entries.len()
    }

    /// Forgets batches at or after `offset` (the log was truncated).
    pub fn truncate(&mut self, offset: u64) {
        for e in self.entries.values_mut() {
            e.batches.retain(|b| b.last_offset < offset);
        }
        self.entries.retain(|_, e| !e.batches.is_empty());
    }

    /// Every producer with a batch wholly below `upper`: `(id, epoch, last sequence, last
    /// append time)` (KIP-664's view).
    pub fn active(&self, upper: u64) -> Vec<(i64, i16, i32, i64)> {
        let mut out: Vec<_> = self
            .entries
            .iter()
            .filter_map(|(id, e)| {
                let b = e.batches.iter().rev().find(|b| b.last_offset < upper)?;
                Some((*id, e.epoch, b.last_seq, b.append_time_ms))
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// `(epoch, last sequence)` of the producer's last batch that lies wholly below `upper`
    /// (the offsets that are durable and visible).
    pub fn last_persisted(&self, producer_id: i64, upper: u64) -> Option<(i16, i32, u64)> {
        let e = self.entries.get(&producer_id)?;
        e.batches
            .iter()
            .rev()
            .find(|b| b.last_offset < upper)
            .map(|b| (e.epoch, b.last_seq, b.last_offset))
    }
}

/// A snapshot file: the table as of `offset` (every batch below it is included).
#[derive(Debug, Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    offset: u64,
    table: ProducerTable,
}

const SNAPSHOT_EXT: &str = crate::storage::log::STATE_FILE_EXT;
/// Snapshots kept per partition (older ones are deleted when a new one is written).
const SNAPSHOTS_KEPT: usize = 2;

fn snapshot_path(dir: &Path, offset: u64) -> PathBuf {
    dir.join(format!("{offset:020}.{SNAPSHOT_EXT}"))
}

fn snapshot_offsets(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".snapshot")
            && let Ok(o) = stem.parse::<u64>()
        {
            out.push(o);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Whether a snapshot at `offset` exists (a stat, no parsing).
pub fn has_snapshot_at(dir: &Path, offset: u64) -> bool {
    snapshot_path(dir, offset).exists()
}

/// Writes a snapshot of `table` at `offset`, then deletes all but the newest few.
pub fn write_snapshot(
    dir: &Path,
    offset: u64,
    table: &ProducerTable,
) -> Result<(), crate::storage::StorageError> {
    let snap = Snapshot {
        version: 1,
        offset,
        table: table.clone(),
    };
    let bytes = serde_json::to_vec(&snap).map_err(|e| crate::storage::StorageError::Corrupt {
        what: "producer snapshot",
        path: dir.to_path_buf(),
        detail: e.to_string(),
    })?;
    crate::storage::checkpoint::write_atomic(&snapshot_path(dir, offset), &bytes)?;
    let offsets = snapshot_offsets(dir).map_err(|e| crate::storage::StorageError::io(dir, e))?;
    for old in offsets.iter().rev().skip(SNAPSHOTS_KEPT) {
        let _ = std::fs::remove_file(snapshot_path(dir, *old));
    }
    Ok(())
}

/// Loads the newest readable snapshot at or below `log_end`: `(offset, table)`, or
/// `(log_start, empty)` when there is none. A snapshot that fails to parse is skipped (the
/// log is the truth; the snapshot only saves work).
pub fn load_snapshot(dir: &Path, log_start: u64, log_end: u64) -> (u64, ProducerTable) {
    let offsets = snapshot_offsets(dir).unwrap_or_else(|e| {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot list producer snapshots; rebuilding from the log");
        Vec::new()
    });
    for &o in offsets.iter().rev() {
        if o > log_end || o < log_start {
            continue;
        }
        let parsed = std::fs::read(snapshot_path(dir, o))
            .ok()
            .and_then(|b| serde_json::from_slice::<Snapshot>(&b).ok());
        match parsed {
            Some(s) if s.version == 1 && s.offset == o => return (o, s.table),
            _ => {
                tracing::warn!(dir = %dir.display(), offset = o, "ignoring unreadable producer snapshot")
            }
        }
    }
    (log_start, ProducerTable::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: i32, base_offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: count,
        }
    }

    #[test]
    fn sequence_rules() {
        let mut t = ProducerTable::default();
        assert_eq!(t.check(&header(7, 0, 0, 3, 0)), Ok(Verdict::Append));
        t.record(&header(7, 0, 0, 3, 0), 1);
        // Retry of the same batch: duplicate with the original offsets.
        let Ok(Verdict::Duplicate(b)) = t.check(&header(7, 0, 0, 3, -1)) else {
            panic!()
        };
        assert_eq!((b.base_offset, b.last_offset), (0, 2));
        // A gap is refused; the next sequence is accepted.
        assert_eq!(
            t.check(&header(7, 0, 5, 1, 0)),
            Err(ProducerError::OutOfOrder {
                producer_id: 7,
                expected: 3,
                got: 5
            })
        );
        assert_eq!(t.check(&header(7, 0, 3, 1, 0)), Ok(Verdict::Append));
        // Older epoch fenced; newer epoch must start at 0.
        t.record(&header(7, 1, 0, 1, 3), 2);
        assert!(matches!(
            t.check(&header(7, 0, 3, 1, 0)),
            Err(ProducerError::Fenced { .. })
        ));
        assert!(matches!(
            t.check(&header(7, 2, 4, 1, 0)),
            Err(ProducerError::OutOfOrder { .. })
        ));
        // Only the last five batches are remembered.
        for i in 1..10 {
            t.record(&header(7, 1, i, 1, 3 + i64::from(i)), 3);
        }
        assert_eq!(t.get(7).unwrap().batches.len(), BATCHES_CACHED);
        assert_eq!(t.last_persisted(7, 100), Some((1, 9, 12)));
        assert_eq!(t.last_persisted(7, 12), Some((1, 8, 11)));
        assert_eq!(t.expire(1_000, 10), 1);
    }

    #[test]
    fn snapshots_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = ProducerTable::default();
        t.record(&header(1, 0, 0, 2, 0), 5);
        for o in [2, 5, 9] {
            write_snapshot(dir.path(), o, &t).unwrap();
        }
        assert_eq!(snapshot_offsets(dir.path()).unwrap(), vec![5, 9]);
        assert_eq!(load_snapshot(dir.path(), 0, 20), (9, t.clone()));
        assert_eq!(load_snapshot(dir.path(), 0, 6).0, 5);
        std::fs::write(snapshot_path(dir.path(), 9), b"{garbage").unwrap();
        assert_eq!(load_snapshot(dir.path(), 0, 20).0, 5);
    }
}
