//! The agent's durable state, one file written temp + fsync + rename + directory fsync:
//! the producer identity, each partition's next sequence, each file's acknowledged offset,
//! and the journal of batches sent but not yet known to be acknowledged.
//!
//! The journal is what makes delivery exactly-once: a batch's composition (partition,
//! sequences, file ranges, timestamp) is durable *before* it is sent, so after a crash the
//! agent asks the collector for its last persisted sequence per partition, marks journaled
//! batches at or below it delivered, and rebuilds the others from the same file bytes with
//! the same sequences.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const STATE_FILE: &str = "agent.state";

use shared::sys::now_ms;
const STATE_VERSION: u32 = 1;

/// Identity of a tailed file: a checksum of its first bytes plus the inode it had when first
/// seen (the inode breaks ties between files whose first line is the same).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FileKey {
    pub fingerprint: u64,
    pub dev: u64,
    pub inode: u64,
    /// Bumped when the same inode starts over with the same first line (truncated and
    /// rewritten), so it is a new file.
    pub generation: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileState {
    /// Path at first discovery: the `path` header and the partition key, kept across renames.
    pub path: String,
    /// Index of the input (in the config) whose glob found it: its labels and multiline.
    #[serde(default)]
    pub input: usize,
    /// Wall-clock ms it was last found by a glob (for forgetting files gone for good).
    #[serde(default = "now_ms")]
    pub last_seen_ms: i64,
    pub topic: String,
    pub partition: u32,
    /// Every byte below this was acknowledged by the collector.
    pub acked_offset: u64,
    /// Last path it was seen under (for finding it again after a restart).
    pub last_path: String,
    /// Inode it was last read through (a copy-truncated file moves to a new inode).
    pub dev: u64,
    pub inode: u64,
    /// Order of first discovery (per agent state). Files sharing a `path` stream are read
    /// oldest first: the rest of a rotated file before its successor's lines.
    #[serde(default)]
    pub seq: u64,
}

/// One journaled batch: everything needed to rebuild it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub topic: String,
    pub partition: u32,
    pub base_sequence: i32,
    pub record_count: u32,
    pub timestamp_ms: i64,
    /// Byte ranges `[start, end)` of files, in record order; each holds whole records.
    pub ranges: Vec<(FileKey, u64, u64)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    pub version: u32,
    pub producer_id: Option<i64>,
    pub producer_epoch: i16,
    /// Next sequence per partition, keyed `topic/partition` on disk (`TopicPartition`'s
    /// `Display` in the agent).
    pub next_sequence: BTreeMap<String, i32>,
    pub files: BTreeMap<String, (FileKey, FileState)>,
    pub journal: Vec<JournalEntry>,
    /// Partition count of each topic, as last learnt from the collectors.
    #[serde(default)]
    pub topic_partitions: BTreeMap<String, u32>,
    /// The `seq` the next newly discovered file gets.
    #[serde(default)]
    pub next_file_seq: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot write state in {dir}: {source}")]
    Write {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "state file {path} is corrupt ({detail}); refusing to start rather than ship every \
         file again. Inspect it, or run `agent run --reset-state` to start from scratch"
    )]
    Corrupt { path: PathBuf, detail: String },
}

/// `FileState::partition` of a file found before the collectors told the topic's partition
/// count: it is held open but not read until then.
pub const UNASSIGNED: u32 = u32::MAX;

pub fn file_id(key: &FileKey) -> String {
    format!(
        "{:016x}-{}-{}-{}",
        key.fingerprint, key.dev, key.inode, key.generation
    )
}

impl AgentState {
    /// Loads the state; a missing file is a first start.
    pub fn load(dir: &Path) -> Result<Self, StateError> {
        let path = dir.join(STATE_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self {
                    version: STATE_VERSION,
                    ..Self::default()
                });
            }
            Err(source) => return Err(StateError::Read { path, source }),
        };
        // Layout: 8 hex digits of CRC-32C, newline, JSON.
        let corrupt = |detail: String| StateError::Corrupt {
            path: path.clone(),
            detail,
        };
        if bytes.len() < 9 || bytes[8] != b'\n' {
            return Err(corrupt("no checksum line".into()));
        }
        let stored = std::str::from_utf8(&bytes[..8])
            .ok()
            .and_then(|s| u32::from_str_radix(s, 16).ok())
            .ok_or_else(|| corrupt("bad checksum line".into()))?;
        let body = &bytes[9..];
        let computed = crc32c::crc32c(body);
        if stored != computed {
            return Err(corrupt(format!(
                "checksum {stored:08x}, computed {computed:08x}"
            )));
        }
        let state: Self = serde_json::from_slice(body).map_err(|e| corrupt(e.to_string()))?;
        if state.version != STATE_VERSION {
            return Err(corrupt(format!("unknown version {}", state.version)));
        }
        Ok(state)
    }

    /// Writes the state durably: temp file, fsync, rename, directory fsync.
    pub fn store(&self, dir: &Path) -> Result<(), StateError> {
        let w = |source| StateError::Write {
            dir: dir.to_path_buf(),
            source,
        };
        let body = serde_json::to_vec(self).map_err(|e| w(std::io::Error::other(e)))?;
        let mut contents = format!("{:08x}\n", crc32c::crc32c(&body)).into_bytes();
        contents.extend_from_slice(&body);
        shared::sys::write_atomic(&dir.join(STATE_FILE), &contents).map_err(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = AgentState::load(dir.path()).unwrap();
        s.producer_id = Some(7);
        s.next_sequence.insert("logs/0".into(), 42);
        s.store(dir.path()).unwrap();
        assert_eq!(AgentState::load(dir.path()).unwrap(), s);
        let p = dir.path().join(STATE_FILE);
        let mut b = std::fs::read(&p).unwrap();
        let n = b.len();
        b[n - 3] ^= 1;
        std::fs::write(&p, b).unwrap();
        let e = AgentState::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("--reset-state"), "{e}");
    }
}
