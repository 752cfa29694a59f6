//! Small state files, written the one durable way: write a temp file, fsync it, rename it over
//! the old one, fsync the directory. A reader sees the old or the new file, never a mix.
//!
//! - `partition.state`: topic, partition, log start offset, recovery point (text, with a CRC line).
//! - `leader-epoch-checkpoint`: Kafka's format — version line, count line, `epoch start_offset` lines.

use std::fs;
use std::path::{Path, PathBuf};

use super::error::{IoContext, StorageError};

/// Writes `contents` to `path` atomically and durably (see `shared::sys::write_atomic`).
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), StorageError> {
    shared::sys::write_atomic(path, contents).ctx(path)
}

/// Fsyncs a directory so that entries created, renamed or removed in it are durable.
pub fn fsync_dir(dir: &Path) -> Result<(), StorageError> {
    shared::sys::fsync_dir(dir).ctx(dir)
}

/// The durable per-partition state that is not derivable from the segment files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    pub topic: String,
    pub partition: u32,
    /// First offset a reader may see; retention and truncation move it forward.
    pub log_start_offset: u64,
    /// Everything below this offset was fsynced; recovery rescans only from its segment.
    pub recovery_point: u64,
}

const STATE_MAGIC: &str = "tributary-partition-state 1";
pub const STATE_FILE: &str = "partition.state";

impl PartitionState {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    fn encode(&self) -> String {
        let body = format!(
            "{STATE_MAGIC}\ntopic {}\npartition {}\nlog_start_offset {}\nrecovery_point {}\n",
            self.topic, self.partition, self.log_start_offset, self.recovery_point
        );
        let crc = crc32c::crc32c(body.as_bytes());
        format!("{body}crc {crc:08x}\n")
    }

    pub fn store(&self, dir: &Path) -> Result<(), StorageError> {
        write_atomic(&Self::path(dir), self.encode().as_bytes())
    }

    /// Loads the state file; `Ok(None)` when it does not exist.
    pub fn load(dir: &Path) -> Result<Option<Self>, StorageError> {
        let path = Self::path(dir);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageError::io(&path, e)),
        };
        Self::decode(&text)
            .map(Some)
            .map_err(|detail| StorageError::Corrupt {
                what: "partition state",
                path,
                detail,
            })
    }

    fn decode(text: &str) -> Result<Self, String> {
        let Some(crc_at) = text.rfind("crc ") else {
            return Err("no crc line".into());
        };
        let (body, crc_line) = text.split_at(crc_at);
        let stored = u32::from_str_radix(crc_line.trim_start_matches("crc ").trim(), 16)
            .map_err(|e| format!("bad crc line: {e}"))?;
        let computed = crc32c::crc32c(body.as_bytes());
        if stored != computed {
            return Err(format!("crc stored {stored:08x}, computed {computed:08x}"));
        }
        let mut lines = body.lines();
        if lines.next() != Some(STATE_MAGIC) {
            return Err("unknown version line".into());
        }
        let mut field = |name: &str| -> Result<String, String> {
            let line = lines.next().ok_or_else(|| format!("missing {name}"))?;
            line.strip_prefix(name)
                .and_then(|r| r.strip_prefix(' '))
                .map(str::to_owned)
                .ok_or_else(|| format!("expected {name}, found {line:?}"))
        };
        let num = |s: String, name: &str| s.parse::<u64>().map_err(|e| format!("{name}: {e}"));
        let topic = field("topic")?;
        let partition = num(field("partition")?, "partition")?;
        let log_start_offset = num(field("log_start_offset")?, "log_start_offset")?;
        let recovery_point = num(field("recovery_point")?, "recovery_point")?;
        Ok(Self {
            topic,
            partition: u32::try_from(partition).map_err(|e| format!("partition: {e}"))?,
            log_start_offset,
            recovery_point,
        })
    }
}

/// The high watermark last checkpointed (`high-watermark`): a restarted leader starts from
/// it, not from its log end, so records the ISR never confirmed are not shown to consumers
/// before the followers have them (Kafka's `replication-offset-checkpoint`).
pub const HIGH_WATERMARK_FILE: &str = "high-watermark";
const HIGH_WATERMARK_MAGIC: &str = "tributary-high-watermark 1";

pub fn store_high_watermark(dir: &Path, hw: u64) -> Result<(), StorageError> {
    let body = format!("{HIGH_WATERMARK_MAGIC}\n{hw}\n");
    let crc = crc32c::crc32c(body.as_bytes());
    write_atomic(
        &dir.join(HIGH_WATERMARK_FILE),
        format!("{body}crc {crc:08x}\n").as_bytes(),
    )
}

/// The checkpointed high watermark; `Ok(None)` when there is none.
pub fn load_high_watermark(dir: &Path) -> Result<Option<u64>, StorageError> {
    let path = dir.join(HIGH_WATERMARK_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io(&path, e)),
    };
    let corrupt = |detail: &str| StorageError::Corrupt {
        what: "high watermark checkpoint",
        path: path.clone(),
        detail: detail.to_owned(),
    };
    let Some(crc_at) = text.rfind("crc ") else {
        return Err(corrupt("no crc line"));
    };
    let (body, crc_line) = text.split_at(crc_at);
    let stored = u32::from_str_radix(crc_line.trim_start_matches("crc ").trim(), 16)
        .map_err(|_| corrupt("bad crc line"))?;
    if stored != crc32c::crc32c(body.as_bytes()) {
        return Err(corrupt("crc mismatch"));
    }
    let mut lines = body.lines();
    if lines.next() != Some(HIGH_WATERMARK_MAGIC) {
        return Err(corrupt("unknown version line"));
    }
    lines
        .next()
        .and_then(|l| l.parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| corrupt("no offset"))
}

/// Which leader epoch began at which offset. Replication uses it to find where a follower's
/// log diverges from the leader's (KIP-101 / KIP-279); the log keeps it in step with appends
/// and truncations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    /// `(epoch, start_offset)`, both strictly increasing.
    entries: Vec<(i32, u64)>,
}

pub const LEADER_EPOCH_FILE: &str = "leader-epoch-checkpoint";

impl LeaderEpochCache {
    pub fn entries(&self) -> &[(i32, u64)] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.0)
    }

    /// Records that `epoch` starts at `start_offset`, if it is newer than the latest.
    /// Returns whether the cache changed (and must be stored).
    pub fn assign(&mut self, epoch: i32, start_offset: u64) -> bool {
        if epoch < 0 {
            return false;
        }
        match self.entries.last() {
            Some(&(last, _)) if epoch <= last => false,
            _ => {
                // A stale entry can start at or after the new start only after a truncation
                // that forgot to clear it; never keep overlapping ranges.
                self.entries.retain(|&(_, s)| s < start_offset);
                self.entries.push((epoch, start_offset));
                true
            }
        }
    }

    /// Forgets epochs starting at or after `end_offset` (the log was truncated to it).
    pub fn truncate_from_end(&mut self, end_offset: u64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|&(_, s)| s < end_offset);
        before != self.entries.len()
    }

    /// The log start moved to `start_offset`: drop epochs wholly below it and clamp the first.
    pub fn truncate_from_start(&mut self, start_offset: u64) -> bool {
        let keep_from = self
            .entries
            .iter()
            .rposition(|&(_, s)| s <= start_offset)
            .unwrap_or(0);
        let mut changed = keep_from > 0;
        self.entries.drain(..keep_from);
        if let Some(first) = self.entries.first_mut()
            && first.1 < start_offset
        {
            first.1 = start_offset;
            changed = true;
        }
        changed
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// KIP-279: the largest epoch `<= epoch` this log knows, and the offset where it ends
    /// (the start of the next epoch, or `log_end_offset` for the latest). `None` when the log
    /// knows no epoch that old.
    pub fn end_offset_for(&self, epoch: i32, log_end_offset: u64) -> Option<(i32, u64)> {
        let idx = self.entries.iter().rposition(|&(e, _)| e <= epoch)?;
        let end = self
            .entries
            .get(idx + 1)
            .map_or(log_end_offset, |&(_, start)| start);
        Some((self.entries[idx].0, end))
    }

    pub fn store(&self, dir: &Path) -> Result<(), StorageError> {
        let mut text = format!("0\n{}\n", self.entries.len());
        for (e, s) in &self.entries {
            text.push_str(&format!("{e} {s}\n"));
        }
        write_atomic(&dir.join(LEADER_EPOCH_FILE), text.as_bytes())
    }

    /// Loads the checkpoint; an absent file is an empty cache.
    pub fn load(dir: &Path) -> Result<Self, StorageError> {
        let path = dir.join(LEADER_EPOCH_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(StorageError::io(&path, e)),
        };
        let corrupt = |detail: String| StorageError::Corrupt {
            what: "leader epoch checkpoint",
            path: path.clone(),
            detail,
        };
        let mut lines = text.lines();
        if lines.next() != Some("0") {
            return Err(corrupt("unknown version".into()));
        }
        let count: usize = lines
            .next()
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| corrupt("bad count line".into()))?;
        let mut entries = Vec::with_capacity(count.min(1024));
        for line in lines.by_ref().take(count) {
            let mut parts = line.split(' ');
            let e = parts.next().and_then(|p| p.parse::<i32>().ok());
            let s = parts.next().and_then(|p| p.parse::<u64>().ok());
            match (e, s, parts.next()) {
                (Some(e), Some(s), None) => entries.push((e, s)),
                _ => return Err(corrupt(format!("bad entry {line:?}"))),
            }
        }
        if entries.len() != count {
            return Err(corrupt(format!(
                "{} entries, count says {count}",
                entries.len()
            )));
        }
        if entries
            .windows(2)
            .any(|w| w[0].0 >= w[1].0 || w[0].1 > w[1].1)
        {
            return Err(corrupt("entries not increasing".into()));
        }
        Ok(Self { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(PartitionState::load(dir.path()).unwrap(), None);
        let s = PartitionState {
            topic: "logs".into(),
            partition: 3,
            log_start_offset: 10,
            recovery_point: 99,
        };
        s.store(dir.path()).unwrap();
        assert_eq!(PartitionState::load(dir.path()).unwrap(), Some(s));
        let p = PartitionState::path(dir.path());
        let text = fs::read_to_string(&p).unwrap().replace("99", "98");
        fs::write(&p, text).unwrap();
        assert!(matches!(
            PartitionState::load(dir.path()),
            Err(StorageError::Corrupt { .. })
        ));
    }

    #[test]
    fn epoch_cache_semantics() {
        let mut c = LeaderEpochCache::default();
        assert!(c.assign(0, 0));
        assert!(!c.assign(0, 5));
        assert!(c.assign(2, 10));
        assert!(c.assign(5, 20));
        // KIP-279: asking for epoch 3 (unknown) answers the largest epoch below it, 2, ending at 20.
        assert_eq!(c.end_offset_for(3, 30), Some((2, 20)));
        assert_eq!(c.end_offset_for(5, 30), Some((5, 30)));
        assert_eq!(c.end_offset_for(0, 30), Some((0, 10)));
        assert_eq!(c.end_offset_for(-1, 30), None);
        assert!(c.truncate_from_end(20));
        assert_eq!(c.entries(), &[(0, 0), (2, 10)]);
        assert!(c.truncate_from_start(12));
        assert_eq!(c.entries(), &[(2, 12)]);
        let dir = tempfile::tempdir().unwrap();
        c.store(dir.path()).unwrap();
        assert_eq!(LeaderEpochCache::load(dir.path()).unwrap(), c);
    }
}
