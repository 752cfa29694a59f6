//! The durable Raft log store.
//!
//! Files in the controller directory:
//! - `raft.log`: append-only records `[len: u32 BE][crc32c: u32 BE][entry as JSON]`. A torn or
//!   corrupt tail (short record, bad CRC, unparsable JSON) is cut on open.
//! - `vote`: the last vote, JSON, written temp + fsync + rename.
//! - `purged`: the last purged log id, JSON, written the same way.
//!
//! `append` writes and fsyncs the records before telling openraft they are durable; `truncate`
//! cuts the file and fsyncs; `purge` records the purged id, then rewrites the file without the
//! purged entries (temp + fsync + rename). The entries are also kept in memory: the metadata
//! log is small and purged after every snapshot.

// openraft's StorageError is the error type its storage traits require; it is large, but
// it is what every caller here must return anyway.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend};
use tokio::sync::Mutex;

use super::raft::{Entry, LogId, StorageError, TypeConfig, Vote, io_err};
use crate::storage::checkpoint::write_atomic;
use crate::storage::durable;

/// `ENOSPC`: no space left on the device.
const ENOSPC: i32 = 28;
/// First pause before writing the Raft log again on a full disk; doubles up to the max.
const DISK_FULL_RETRY_INITIAL: std::time::Duration = std::time::Duration::from_millis(100);
const DISK_FULL_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(2);
/// How often a Raft log waiting for space is reported.
const DISK_FULL_REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

const LOG_FILE: &str = "raft.log";
const VOTE_FILE: &str = "vote";
const PURGED_FILE: &str = "purged";
/// A single entry larger than this is treated as corruption (metadata commands are small).
const ENTRY_BYTES_MAX: usize = 64 << 20;

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    file: File,
    /// Entries by index, with each record's position in `raft.log`.
    entries: BTreeMap<u64, (Entry, u64)>,
    /// End of the last valid record.
    file_len: u64,
    vote: Option<Vote>,
    last_purged: Option<LogId>,
}

/// Clone-able handle; openraft uses one copy as the store and others as readers.
#[derive(Debug, Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StorageError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            io_err(
                ErrorSubject::Store,
                ErrorVerb::Read,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(
            ErrorSubject::Store,
            ErrorVerb::Read,
            format!("{}: {e}", path.display()),
        )),
    }
}

fn encode_record(entry: &Entry) -> Result<Vec<u8>, StorageError> {
    let json =
        serde_json::to_vec(entry).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
    let mut rec = Vec::with_capacity(json.len() + 8);
    rec.extend_from_slice(&(json.len() as u32).to_be_bytes());
    rec.extend_from_slice(&crc32c::crc32c(&json).to_be_bytes());
    rec.extend_from_slice(&json);
    Ok(rec)
}

/// Parses records from `data`; returns the entries with positions and the valid length.
fn parse_records(data: &[u8]) -> (Vec<(Entry, u64)>, u64) {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while data.len() - pos >= 8 {
        let len =
            u32::from_be_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        let crc = u32::from_be_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]);
        if len > ENTRY_BYTES_MAX || data.len() - pos - 8 < len {
            break;
        }
        let body = &data[pos + 8..pos + 8 + len];
        if crc32c::crc32c(body) != crc {
            break;
        }
        let Ok(entry) = serde_json::from_slice::<Entry>(body) else {
            break;
        };
        out.push((entry, pos as u64));
        pos += 8 + len;
    }
    (out, pos as u64)
}

impl LogStore {
    /// Opens (or creates) the store in `dir`, cutting a torn tail.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        let w = |e: std::io::Error| {
            io_err(
                ErrorSubject::Logs,
                ErrorVerb::Read,
                format!("{}: {e}", dir.display()),
            )
        };
        std::fs::create_dir_all(dir).map_err(w)?;
        let path = dir.join(LOG_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(w)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(w)?;
        let (records, valid) = parse_records(&data);
        if valid < data.len() as u64 {
            tracing::warn!(path = %path.display(), cut = data.len() as u64 - valid, "cutting torn tail of the raft log");
            durable::set_len(&file, &path, valid).map_err(w)?;
            durable::sync_all(&file, &path).map_err(w)?;
        }
        let last_purged: Option<LogId> = read_json(&dir.join(PURGED_FILE))?;
        let purged_index = last_purged.map(|l| l.index);
        let entries = records
            .into_iter()
            .filter(|(e, _)| purged_index.is_none_or(|p| e.log_id.index > p))
            .map(|(e, pos)| (e.log_id.index, (e, pos)))
            .collect();
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner {
                dir: dir.to_path_buf(),
                file,
                entries,
                file_len: valid,
                vote: read_json(&dir.join(VOTE_FILE))?,
                last_purged,
            })),
        })
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let inner = self.inner.lock().await;
        Ok(inner
            .entries
            .range(range)
            .map(|(_, (e, _))| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let inner = self.inner.lock().await;
        let last = inner
            .entries
            .values()
            .next_back()
            .map(|(e, _)| e.log_id)
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let mut inner = self.inner.lock().await;
        let bytes = serde_json::to_vec(vote)
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        write_atomic(&inner.dir.join(VOTE_FILE), &bytes)
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.inner.lock().await.vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.inner.lock().await;
        let path = inner.dir.join(LOG_FILE);
        let mut buf = Vec::new();
        let mut placed = Vec::new();
        for e in entries {
            let at = inner.file_len + buf.len() as u64;
            buf.extend_from_slice(&encode_record(&e)?);
            placed.push((e, at));
        }
        // A full disk is waited out: openraft stops the Raft core for good on any storage
        // error, which left a node serving with metadata frozen until restarted (found by
        // the fault campaign's full-disk faults). Other errors stay fatal.
        let mut pause = DISK_FULL_RETRY_INITIAL;
        let mut reported: Option<std::time::Instant> = None;
        let result = loop {
            let r = durable::write_at(&inner.file, &path, &buf, inner.file_len)
                .and_then(|()| durable::sync_data(&inner.file, &path));
            match r {
                Err(e) if e.raw_os_error() == Some(ENOSPC) => {
                    let _ = durable::set_len(&inner.file, &path, inner.file_len);
                    if reported.is_none_or(|t| t.elapsed() >= DISK_FULL_REPORT_EVERY) {
                        tracing::error!(dir = %inner.dir.display(), "controller log: disk full; waiting for space (Raft is paused on this node)");
                        reported = Some(std::time::Instant::now());
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(DISK_FULL_RETRY_MAX);
                }
                r => break r,
            }
        };
        match result {
            Ok(()) => {
                inner.file_len += buf.len() as u64;
                for (e, at) in placed {
                    inner.entries.insert(e.log_id.index, (e, at));
                }
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let msg = e.to_string();
                let len = inner.file_len;
                let _ = durable::set_len(&inner.file, &path, len);
                callback.log_io_completed(Err(e));
                Err(io_err(ErrorSubject::Logs, ErrorVerb::Write, msg))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut inner = self.inner.lock().await;
        let Some(cut) = inner
            .entries
            .range(log_id.index..)
            .next()
            .map(|(_, (_, pos))| *pos)
        else {
            return Ok(());
        };
        let path = inner.dir.join(LOG_FILE);
        durable::set_len(&inner.file, &path, cut)
            .and_then(|()| durable::sync_all(&inner.file, &path))
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        inner.file_len = cut;
        inner.entries.retain(|i, _| *i < log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut inner = self.inner.lock().await;
        let bytes = serde_json::to_vec(&log_id)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        write_atomic(&inner.dir.join(PURGED_FILE), &bytes)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        inner.last_purged = Some(log_id);
        inner.entries.retain(|i, _| *i > log_id.index);
        // Rewrite the file with what is left, so it does not grow without bound.
        let mut buf = Vec::new();
        let mut rebuilt = BTreeMap::new();
        for (i, (e, _)) in std::mem::take(&mut inner.entries) {
            let at = buf.len() as u64;
            buf.extend_from_slice(&encode_record(&e)?);
            rebuilt.insert(i, (e, at));
        }
        let path = inner.dir.join(LOG_FILE);
        write_atomic(&path, &buf).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        durable::replaced(&path);
        inner.file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        inner.file_len = buf.len() as u64;
        inner.entries = rebuilt;
        let _ = inner.file.flush();
        Ok(())
    }
}
