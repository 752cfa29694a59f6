//! One segment: a `.log` file of back-to-back batches and its `.index` / `.timeindex`.
//!
//! File names are the segment's base offset, zero-padded to 20 digits. While a segment is
//! active it holds its `.log` open for writing, and each index file from its first entry
//! on (an index gets an entry only every `index_interval_bytes`, so an idle or small
//! partition holds one descriptor, not three; a missing index file is an empty index).
//! Closed segments are read through the broker's [`FileCache`]. Memory per segment is a few
//! counters: indexes live on disk.
//!
//! Index entries are decided by [`Segment::track`], the one function used both while
//! appending and while rebuilding after a crash, so a rebuilt index equals the original.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use shared::batch::{BatchHeader, RECORDS_OFFSET, validate_batch};
use shared::{BatchError, BatchLimits};

use super::durable;
use super::error::{IoContext, StorageError};
use super::file_cache::FileCache;
use super::index::{
    self, OFFSET_ENTRY_BYTES, OffsetEntry, TIME_ENTRY_BYTES, TimeEntry, lookup_offset,
    lookup_time_before,
};

/// Largest batch recovery accepts on disk. The collector's request limit must stay below it,
/// so that no batch it ever accepted is later mistaken for garbage.
pub const BATCH_BYTES_MAX_ON_DISK: usize = 256 * 1024 * 1024;
/// Read size of the sequential scan used by recovery.
const SCAN_CHUNK_BYTES: usize = 1024 * 1024;

pub(crate) fn scan_limits() -> BatchLimits {
    BatchLimits {
        batch_bytes_max: BATCH_BYTES_MAX_ON_DISK,
        uncompressed_bytes_max: 0,
    }
}

pub fn segment_file(dir: &Path, base_offset: u64, ext: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{ext}"))
}

/// The open files of the active segment (an index file is opened at its first write).
#[derive(Debug)]
struct ActiveFiles {
    log: Arc<File>,
    index: Option<File>,
    time: Option<File>,
}

/// The file in `slot`, opened (created) at `path` on first use.
fn lazy<'a>(slot: &'a mut Option<File>, path: &Path) -> Result<&'a File, StorageError> {
    if slot.is_none() {
        *slot = Some(open_rw(path, false)?);
    }
    slot.as_ref().ok_or_else(|| StorageError::Offline {
        path: path.to_path_buf(),
    })
}

/// Cuts the file at `path` (open in `slot`, or on disk) to `len` bytes, in place (cached
/// read handles keep seeing the same file); a missing file is empty already.
fn cut_to(slot: &Option<File>, path: &Path, len: u64) -> std::io::Result<()> {
    match slot {
        Some(f) => durable::set_len(f, path, len),
        None => match OpenOptions::new().write(true).open(path) {
            Ok(f) => durable::set_len(&f, path, len),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        },
    }
}

/// What recovering a segment found.
#[derive(Debug)]
pub struct Recovered {
    /// `(base offset, leader epoch)` of each batch scanned.
    pub epochs: Vec<(u64, i32)>,
    /// Bytes cut from the end (a torn or corrupt tail).
    pub cut: u64,
    /// Bytes scanned and validated.
    pub scanned: u64,
}

/// Where recovery of a segment starts when not at its beginning: the index bytes kept and
/// the counters there.
#[derive(Debug)]
struct Resume {
    index_bytes: Vec<u8>,
    time_bytes: Vec<u8>,
    tail: Tail,
}

/// Derived counters of a segment, snapshotted so a failed append can be undone exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tail {
    next_offset: u64,
    size: u64,
    max_timestamp: i64,
    index_entries: u64,
    time_entries: u64,
    last_time_ts: Option<i64>,
    bytes_since_index: u64,
    last_batch_rel: u32,
}

#[derive(Debug)]
pub struct Segment {
    pub base_offset: u64,
    /// Wall-clock creation time (ms), for time-based rolling.
    pub created_ms: i64,
    tail: Tail,
    log_path: PathBuf,
    index_path: PathBuf,
    time_path: PathBuf,
    active: Option<ActiveFiles>,
}

/// Where a batch lives in a segment.
#[derive(Debug, Clone, Copy)]
pub struct BatchLocation {
    pub position: u64,
    pub header: BatchHeader,
}

fn open_rw(path: &Path, truncate: bool) -> Result<File, StorageError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .open(path)
        .ctx(path)
}

impl Segment {
    fn new_paths(dir: &Path, base_offset: u64, created_ms: i64) -> Self {
        Self {
            base_offset,
            created_ms,
            tail: Tail {
                next_offset: base_offset,
                size: 0,
                max_timestamp: i64::MIN,
                index_entries: 0,
                time_entries: 0,
                last_time_ts: None,
                bytes_since_index: 0,
                last_batch_rel: 0,
            },
            log_path: segment_file(dir, base_offset, "log"),
            index_path: segment_file(dir, base_offset, "index"),
            time_path: segment_file(dir, base_offset, "timeindex"),
            active: None,
        }
    }

    /// Creates a new, empty, active segment (truncating any leftover files of that name).
    /// The caller fsyncs the directory.
    pub fn create(dir: &Path, base_offset: u64, now_ms: i64) -> Result<Self, StorageError> {
        let mut s = Self::new_paths(dir, base_offset, now_ms);
        // Leftover indexes of that name would pass for this segment's: emptied (files are
        // created at their first entry).
        for p in [&s.index_path, &s.time_path] {
            cut_to(&None, p, 0).ctx(p)?;
        }
        s.active = Some(ActiveFiles {
            log: Arc::new(open_rw(&s.log_path, true)?),
            index: None,
            time: None,
        });
        Ok(s)
    }

    /// Opens a closed segment cheaply: sizes and the last time-index entry, no scan.
    /// `next_offset` is the next segment's base offset.
    pub fn open_closed(
        dir: &Path,
        base_offset: u64,
        next_offset: u64,
    ) -> Result<Self, StorageError> {
        let mut s = Self::new_paths(dir, base_offset, 0);
        let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ctx(p);
        s.tail.size = len(&s.log_path)?;
        s.tail.next_offset = next_offset;
        let index_len = len(&s.index_path).unwrap_or(0);
        let time_len = len(&s.time_path).unwrap_or(0);
        if index_len % OFFSET_ENTRY_BYTES != 0 || time_len % TIME_ENTRY_BYTES != 0 {
            return Err(StorageError::Corrupt {
                what: "segment index",
                path: s.index_path.clone(),
                detail: format!(
                    "index {index_len} bytes, time index {time_len} bytes: partial entry"
                ),
            });
        }
        s.tail.index_entries = index_len / OFFSET_ENTRY_BYTES;
        s.tail.time_entries = time_len / TIME_ENTRY_BYTES;
        if s.tail.time_entries > 0 {
            let f = File::open(&s.time_path).ctx(&s.time_path)?;
            let last = index::read_time_entry(&f, s.tail.time_entries - 1).ctx(&s.time_path)?;
            s.tail.max_timestamp = last.timestamp;
            s.tail.last_time_ts = Some(last.timestamp);
        }
        s.created_ms = std::fs::metadata(&s.log_path)
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64);
        Ok(s)
    }

    /// Opens the last segment after a clean shutdown: trusts the indexes and scans only the
    /// batches after the last index entry to find the end. Fails with `Corrupt` if that tail
    /// does not parse, in which case the caller recovers the segment instead.
    pub fn open_active_clean(dir: &Path, base_offset: u64) -> Result<Self, StorageError> {
        let mut s = Self::open_closed(dir, base_offset, base_offset)?;
        s.open_files()?;
        s.reload_tail()?;
        if s.tail.size != s.file_len()? {
            return Err(StorageError::Corrupt {
                what: "segment",
                path: s.log_path.clone(),
                detail: format!("tail does not parse up to the end ({} bytes)", s.tail.size),
            });
        }
        Ok(s)
    }

    /// Opens the segment's files for appending (it becomes the active segment again).
    pub fn open_files(&mut self) -> Result<(), StorageError> {
        if self.active.is_none() {
            self.active = Some(ActiveFiles {
                log: Arc::new(open_rw(&self.log_path, false)?),
                index: None,
                time: None,
            });
        }
        Ok(())
    }

    fn file_len(&self) -> Result<u64, StorageError> {
        std::fs::metadata(&self.log_path)
            .map(|m| m.len())
            .ctx(&self.log_path)
    }

    pub fn next_offset(&self) -> u64 {
        self.tail.next_offset
    }
    pub fn size(&self) -> u64 {
        self.tail.size
    }
    pub fn max_timestamp(&self) -> i64 {
        self.tail.max_timestamp
    }
    pub fn index_entries(&self) -> u64 {
        self.tail.index_entries
    }
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }
    pub fn is_empty(&self) -> bool {
        self.tail.size == 0
    }
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
    pub fn paths(&self) -> [&Path; 3] {
        [&self.log_path, &self.index_path, &self.time_path]
    }

    /// Recomputes the derived counters from the index counts: scans batch headers from the
    /// last index entry to the end of the valid data. Sets `size` to the end of the last
    /// whole batch found.
    fn reload_tail(&mut self) -> Result<(), StorageError> {
        let log = self.log_file(None)?;
        let file_len = log.metadata().map(|m| m.len()).ctx(&self.log_path)?;
        let mut start = OffsetEntry {
            rel_offset: 0,
            position: 0,
        };
        if self.tail.index_entries > 0 {
            let idx = File::open(&self.index_path).ctx(&self.index_path)?;
            start = index::read_offset_entry(&idx, self.tail.index_entries - 1)
                .ctx(&self.index_path)?;
        }
        let mut tail = Tail {
            next_offset: self.base_offset + u64::from(start.rel_offset),
            size: u64::from(start.position),
            max_timestamp: self.tail.last_time_ts.unwrap_or(i64::MIN),
            bytes_since_index: 0,
            ..self.tail
        };
        let mut pos = u64::from(start.position);
        while pos < file_len {
            let Some(h) = read_header(&log, &self.log_path, pos, file_len)? else {
                break;
            };
            if h.base_offset < 0
                || h.base_offset as u64 != tail.next_offset
                || h.validate(&scan_limits()).is_err()
            {
                break;
            }
            tail.max_timestamp = tail.max_timestamp.max(h.max_timestamp);
            tail.last_batch_rel = (h.base_offset as u64 - self.base_offset) as u32;
            tail.next_offset = h.next_offset() as u64;
            pos += h.size() as u64;
            tail.size = pos;
        }
        // bytes since the last index entry: everything from its batch on (or from the start).
        tail.bytes_since_index = tail.size - u64::from(start.position);
        self.tail = tail;
        Ok(())
    }

    /// Decides the index entries for a batch appended at `position`, and updates the
    /// counters. The single source of truth for index contents (append and rebuild).
    fn track(
        tail: &mut Tail,
        base_offset: u64,
        header: &BatchHeader,
        position: u64,
        index_interval_bytes: u64,
    ) -> (Option<OffsetEntry>, Option<TimeEntry>) {
        let rel = (header.base_offset as u64 - base_offset) as u32;
        let mut out = (None, None);
        tail.max_timestamp = tail.max_timestamp.max(header.max_timestamp);
        if tail.bytes_since_index >= index_interval_bytes {
            out.0 = Some(OffsetEntry {
                rel_offset: rel,
                position: position as u32,
            });
            tail.index_entries += 1;
            tail.bytes_since_index = 0;
            if tail.last_time_ts.is_none_or(|t| tail.max_timestamp > t) {
                out.1 = Some(TimeEntry {
                    timestamp: tail.max_timestamp,
                    rel_offset: rel,
                });
                tail.time_entries += 1;
                tail.last_time_ts = Some(tail.max_timestamp);
            }
        }
        tail.bytes_since_index += header.size() as u64;
        tail.last_batch_rel = rel;
        tail.next_offset = header.next_offset() as u64;
        tail.size = position + header.size() as u64;
        (out.0, out.1)
    }

    /// Whether appending `bytes` more in `batches` batches (last offset `last_offset`) needs
    /// a new segment first.
    pub fn needs_roll(
        &self,
        bytes: u64,
        batches: u64,
        last_offset: u64,
        now_ms: i64,
        config: &super::LogConfig,
    ) -> bool {
        if self.tail.size == 0 {
            return false;
        }
        self.tail.size + bytes > config.segment_bytes
            || now_ms.saturating_sub(self.created_ms) > config.segment_ms
            || self.tail.index_entries + batches > config.index_entries_max()
            || last_offset - self.base_offset > u64::from(u32::MAX)
    }

    /// Appends already-restamped batches (`headers` give each batch's position in `chunk`).
    /// On any error the files and counters are put back as they were, so no partial batch
    /// is ever visible.
    pub fn append(
        &mut self,
        chunk: &[u8],
        headers: &[(BatchHeader, usize)],
        index_interval_bytes: u64,
    ) -> Result<(), StorageError> {
        let Some(files) = &mut self.active else {
            return Err(StorageError::Corrupt {
                what: "segment",
                path: self.log_path.clone(),
                detail: "append to a closed segment".into(),
            });
        };
        let before = self.tail;
        let mut tail = self.tail;
        let mut index_buf = Vec::new();
        let mut time_buf = Vec::new();
        for (h, at) in headers {
            let (oe, te) = Self::track(
                &mut tail,
                self.base_offset,
                h,
                before.size + *at as u64,
                index_interval_bytes,
            );
            if let Some(e) = oe {
                index_buf.extend_from_slice(&e.encode());
            }
            if let Some(e) = te {
                time_buf.extend_from_slice(&e.encode());
            }
        }
        let result = (|| {
            durable::write_at(&files.log, &self.log_path, chunk, before.size)
                .ctx(&self.log_path)?;
            if !index_buf.is_empty() {
                let f = lazy(&mut files.index, &self.index_path)?;
                let at = before.index_entries * OFFSET_ENTRY_BYTES;
                durable::write_at(f, &self.index_path, &index_buf, at).ctx(&self.index_path)?;
            }
            if !time_buf.is_empty() {
                let f = lazy(&mut files.time, &self.time_path)?;
                let at = before.time_entries * TIME_ENTRY_BYTES;
                durable::write_at(f, &self.time_path, &time_buf, at).ctx(&self.time_path)?;
            }
            Ok::<(), StorageError>(())
        })();
        if let Err(e) = result {
            // Undo: cut every file back to its size before this append. If even that fails
            // the segment cannot be trusted; report the original error and let the owner
            // take the log offline (recovery will cut the tail on the next start).
            let undo = durable::set_len(&files.log, &self.log_path, before.size)
                .and_then(|_| {
                    cut_to(
                        &files.index,
                        &self.index_path,
                        before.index_entries * OFFSET_ENTRY_BYTES,
                    )
                })
                .and_then(|_| {
                    cut_to(
                        &files.time,
                        &self.time_path,
                        before.time_entries * TIME_ENTRY_BYTES,
                    )
                });
            if let Err(undo_err) = undo {
                return Err(StorageError::Io {
                    path: self.log_path.clone(),
                    source: std::io::Error::other(format!(
                        "{e}; and undoing the partial append failed: {undo_err}"
                    )),
                });
            }
            return Err(e);
        }
        self.tail = tail;
        Ok(())
    }

    /// The open log file of the active segment (for group-commit fsyncs).
    pub fn active_log(&self) -> Option<Arc<File>> {
        self.active.as_ref().map(|f| f.log.clone())
    }

    /// Fsyncs the active segment's data file.
    pub fn sync_data(&self) -> Result<(), StorageError> {
        if let Some(f) = &self.active {
            durable::sync_data(&f.log, &self.log_path).ctx(&self.log_path)?;
        }
        Ok(())
    }

    /// Closes the active segment: adds the final time-index entry (so a closed segment's
    /// largest timestamp is its last time entry), fsyncs all three files, releases them.
    pub fn close(&mut self) -> Result<(), StorageError> {
        let Some(files) = &mut self.active else {
            return Ok(());
        };
        if self.tail.size > 0
            && self
                .tail
                .last_time_ts
                .is_none_or(|t| self.tail.max_timestamp > t)
        {
            let e = TimeEntry {
                timestamp: self.tail.max_timestamp,
                rel_offset: self.tail.last_batch_rel,
            };
            let f = lazy(&mut files.time, &self.time_path)?;
            let at = self.tail.time_entries * TIME_ENTRY_BYTES;
            durable::write_at(f, &self.time_path, &e.encode(), at).ctx(&self.time_path)?;
            self.tail.time_entries += 1;
            self.tail.last_time_ts = Some(self.tail.max_timestamp);
        }
        durable::sync_all(&files.log, &self.log_path).ctx(&self.log_path)?;
        if let Some(f) = &files.index {
            durable::sync_all(f, &self.index_path).ctx(&self.index_path)?;
        }
        if let Some(f) = &files.time {
            durable::sync_all(f, &self.time_path).ctx(&self.time_path)?;
        }
        self.active = None;
        Ok(())
    }

    /// Recovers the segment holding the log's recovery point after an unclean stop,
    /// scanning only what lies past it: everything below the recovery point was fsynced, so
    /// the scan starts at the last offset-index entry at or below it (and the index entries
    /// before that are kept). The index files were not fsynced with the data, so their
    /// entries are trusted only in order (offsets and positions strictly increasing, inside
    /// the data, every time entry on an offset entry) and the chosen entry only if the log
    /// holds a batch starting at its offset there; otherwise the whole segment is recovered.
    /// With `recovery_point` 0 (or at the segment's base) the whole `.log` is scanned.
    /// Every batch scanned is validated (length, CRC, contiguous offsets); the file is cut
    /// after the last valid one and both indexes rewritten. The epochs found go to the
    /// leader-epoch cache.
    pub fn recover_from(
        &mut self,
        index_interval_bytes: u64,
        recovery_point: u64,
    ) -> Result<Recovered, StorageError> {
        let resume = self.resume_point(index_interval_bytes, recovery_point)?;
        self.recover_at(index_interval_bytes, resume)
    }

    /// Where [`Segment::recover_from`] may start: the kept index bytes and the counters at
    /// that point, or `None` to scan the whole segment.
    fn resume_point(
        &self,
        index_interval_bytes: u64,
        recovery_point: u64,
    ) -> Result<Option<Resume>, StorageError> {
        let base = self.base_offset;
        if recovery_point <= base {
            return Ok(None);
        }
        let log = self.log_file(None)?;
        let file_len = log.metadata().map(|m| m.len()).ctx(&self.log_path)?;
        let read_all = |path: &Path| match std::fs::read(path) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).ctx(path),
        };
        let index = read_all(&self.index_path)?;
        // The entries in order, inside the data, at or below the recovery point.
        let mut entries: Vec<OffsetEntry> = Vec::new();
        for chunk in index.chunks_exact(OFFSET_ENTRY_BYTES as usize) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            let e = OffsetEntry::decode(&b);
            let in_order = entries
                .last()
                .is_none_or(|p| e.rel_offset > p.rel_offset && e.position > p.position);
            if !in_order
                || e.position == 0
                || u64::from(e.position) >= file_len
                || base + u64::from(e.rel_offset) > recovery_point
            {
                break;
            }
            entries.push(e);
        }
        // The last entry naming a batch that starts at its offset (a few tries back).
        let mut chosen = None;
        for k in (0..entries.len()).rev().take(8) {
            let e = entries[k];
            if let Some(h) = read_header(&log, &self.log_path, u64::from(e.position), file_len)?
                && h.base_offset >= 0
                && h.base_offset as u64 == base + u64::from(e.rel_offset)
                && h.validate(&scan_limits()).is_ok()
            {
                chosen = Some(k);
                break;
            }
        }
        let Some(k) = chosen else {
            return Ok(None);
        };
        let start = entries[k];
        // Time entries before the chosen batch, each on a kept offset entry.
        let kept_rels: HashSet<u32> = entries[..k].iter().map(|e| e.rel_offset).collect();
        let time = read_all(&self.time_path)?;
        let mut times: Vec<TimeEntry> = Vec::new();
        for chunk in time.chunks_exact(TIME_ENTRY_BYTES as usize) {
            let mut b = [0u8; 12];
            b.copy_from_slice(chunk);
            let e = TimeEntry::decode(&b);
            let in_order = times
                .last()
                .is_none_or(|p| e.timestamp > p.timestamp && e.rel_offset > p.rel_offset);
            if !in_order || e.rel_offset >= start.rel_offset || !kept_rels.contains(&e.rel_offset) {
                break;
            }
            times.push(e);
        }
        // The largest timestamp before the chosen batch: the last time entry covers every
        // batch up to the last kept offset entry's; the few between it and the chosen one are
        // read (headers only: they lie below the recovery point, fsynced).
        let mut max_timestamp = times.last().map_or(i64::MIN, |t| t.timestamp);
        let (mut pos, mut next) = match k.checked_sub(1).map(|i| entries[i]) {
            Some(e) => (u64::from(e.position), base + u64::from(e.rel_offset)),
            None => (0, base),
        };
        while pos < u64::from(start.position) {
            let Some(h) = read_header(&log, &self.log_path, pos, file_len)? else {
                return Ok(None);
            };
            if h.base_offset < 0 || h.base_offset as u64 != next {
                return Ok(None);
            }
            max_timestamp = max_timestamp.max(h.max_timestamp);
            next = h.next_offset() as u64;
            pos += h.size() as u64;
        }
        if pos != u64::from(start.position) {
            return Ok(None);
        }
        let mut index_bytes = Vec::with_capacity(k * OFFSET_ENTRY_BYTES as usize);
        for e in &entries[..k] {
            index_bytes.extend_from_slice(&e.encode());
        }
        let mut time_bytes = Vec::with_capacity(times.len() * TIME_ENTRY_BYTES as usize);
        for e in &times {
            time_bytes.extend_from_slice(&e.encode());
        }
        Ok(Some(Resume {
            index_bytes,
            time_bytes,
            tail: Tail {
                next_offset: base + u64::from(start.rel_offset),
                size: u64::from(start.position),
                max_timestamp,
                index_entries: k as u64,
                time_entries: times.len() as u64,
                last_time_ts: times.last().map(|t| t.timestamp),
                // The chosen batch gets its index entry again, as it did when appended.
                bytes_since_index: index_interval_bytes,
                last_batch_rel: start.rel_offset,
            },
        }))
    }

    /// Scans from `resume` (or the start); see [`Segment::recover_from`].
    fn recover_at(
        &mut self,
        index_interval_bytes: u64,
        resume: Option<Resume>,
    ) -> Result<Recovered, StorageError> {
        self.open_files()?;
        let log = self.log_file(None)?;
        let file_len = log.metadata().map(|m| m.len()).ctx(&self.log_path)?;
        let (mut tail, mut index_buf, mut time_buf) = match resume {
            Some(r) => (r.tail, r.index_bytes, r.time_bytes),
            None => (
                Tail {
                    next_offset: self.base_offset,
                    size: 0,
                    max_timestamp: i64::MIN,
                    index_entries: 0,
                    time_entries: 0,
                    last_time_ts: None,
                    bytes_since_index: 0,
                    last_batch_rel: 0,
                },
                Vec::new(),
                Vec::new(),
            ),
        };
        let scan_from = tail.size;
        let mut epochs = Vec::new();
        let base = self.base_offset;
        let mut expected = tail.next_offset;
        scan_batches(&log, &self.log_path, scan_from, file_len, |h, pos| {
            if h.base_offset < 0
                || h.base_offset as u64 != expected
                || h.last_offset() as u64 - base > u64::from(u32::MAX)
            {
                return false;
            }
            expected = h.next_offset() as u64;
            epochs.push((h.base_offset as u64, h.partition_leader_epoch));
            let (oe, te) = Self::track(&mut tail, base, h, pos, index_interval_bytes);
            if let Some(e) = oe {
                index_buf.extend_from_slice(&e.encode());
            }
            if let Some(e) = te {
                time_buf.extend_from_slice(&e.encode());
            }
            true
        })?;
        let files = self.active.as_mut().ok_or_else(|| StorageError::Corrupt {
            what: "segment",
            path: self.log_path.clone(),
            detail: "files not open".into(),
        })?;
        let cut = file_len - tail.size;
        durable::set_len(&files.log, &self.log_path, tail.size).ctx(&self.log_path)?;
        durable::sync_all(&files.log, &self.log_path).ctx(&self.log_path)?;
        for (slot, path, buf) in [
            (&mut files.index, &self.index_path, &index_buf),
            (&mut files.time, &self.time_path, &time_buf),
        ] {
            if buf.is_empty() && slot.is_none() {
                cut_to(slot, path, 0).ctx(path)?;
                continue;
            }
            let f = lazy(slot, path)?;
            durable::set_len(f, path, 0).ctx(path)?;
            durable::write_at(f, path, buf, 0).ctx(path)?;
            durable::sync_all(f, path).ctx(path)?;
        }
        self.tail = tail;
        Ok(Recovered {
            epochs,
            cut,
            scanned: file_len - scan_from,
        })
    }

    /// A handle on the `.log` file: the active one, or one from the cache.
    fn log_file(&self, cache: Option<&FileCache>) -> Result<Arc<File>, StorageError> {
        if let Some(f) = &self.active {
            return Ok(f.log.clone());
        }
        match cache {
            Some(c) => c.get(&self.log_path),
            None => Ok(Arc::new(File::open(&self.log_path).ctx(&self.log_path)?)),
        }
    }

    fn index_file(&self, cache: &FileCache) -> Result<Arc<File>, StorageError> {
        // The active index is written through its own handle; reading it through a separate
        // cached handle sees the same page cache.
        cache.get(&self.index_path)
    }

    /// Finds the batch holding `offset` (the first batch whose next offset is past it).
    pub fn locate(
        &self,
        offset: u64,
        cache: &FileCache,
    ) -> Result<Option<BatchLocation>, StorageError> {
        if offset < self.base_offset || offset >= self.tail.next_offset {
            return Ok(None);
        }
        let rel = (offset - self.base_offset) as u32;
        let mut pos = 0u64;
        if self.tail.index_entries > 0 {
            let idx = self.index_file(cache)?;
            if let Some(e) =
                lookup_offset(&idx, self.tail.index_entries, rel).ctx(&self.index_path)?
            {
                pos = u64::from(e.position);
            }
        }
        self.scan_headers_from(pos, cache, |h| h.next_offset() as u64 > offset)
    }

    /// Finds the first batch whose max timestamp is `>= timestamp`.
    pub fn locate_timestamp(
        &self,
        timestamp: i64,
        cache: &FileCache,
    ) -> Result<Option<BatchLocation>, StorageError> {
        if self.tail.max_timestamp < timestamp || self.tail.size == 0 {
            return Ok(None);
        }
        let mut pos = 0u64;
        if self.tail.time_entries > 0 {
            let time = cache.get(&self.time_path)?;
            if let Some(te) =
                lookup_time_before(&time, self.tail.time_entries, timestamp).ctx(&self.time_path)?
                && let Some(loc) =
                    self.locate(self.base_offset + u64::from(te.rel_offset), cache)?
            {
                pos = loc.position;
            }
        }
        self.scan_headers_from(pos, cache, |h| h.max_timestamp >= timestamp)
    }

    fn scan_headers_from(
        &self,
        mut pos: u64,
        cache: &FileCache,
        mut found: impl FnMut(&BatchHeader) -> bool,
    ) -> Result<Option<BatchLocation>, StorageError> {
        let log = self.log_file(Some(cache))?;
        while pos < self.tail.size {
            let Some(header) = read_header(&log, &self.log_path, pos, self.tail.size)? else {
                break;
            };
            if found(&header) {
                return Ok(Some(BatchLocation {
                    position: pos,
                    header,
                }));
            }
            pos += header.size() as u64;
        }
        Ok(None)
    }

    /// Reads whole batches starting at `position`: at most `max_bytes`, but always the first
    /// batch whole (so a reader makes progress), and only batches ending at or below
    /// `upper_offset`.
    pub fn read_from(
        &self,
        first: BatchLocation,
        max_bytes: usize,
        upper_offset: u64,
        cache: &FileCache,
    ) -> Result<Vec<u8>, StorageError> {
        if first.header.next_offset() as u64 > upper_offset {
            return Ok(Vec::new());
        }
        let log = self.log_file(Some(cache))?;
        let available = (self.tail.size - first.position) as usize;
        let want = max_bytes.max(first.header.size()).min(available);
        let mut buf = vec![0u8; want];
        log.read_exact_at(&mut buf, first.position)
            .ctx(&self.log_path)?;
        // Keep only whole batches below the upper offset.
        let mut end = 0usize;
        while end + RECORDS_OFFSET <= buf.len() {
            let Ok(h) = BatchHeader::parse(&buf[end..]) else {
                break;
            };
            if h.batch_length < (RECORDS_OFFSET - 12) as i32
                || end + h.size() > buf.len()
                || h.next_offset() as u64 > upper_offset
            {
                break;
            }
            end += h.size();
        }
        buf.truncate(end);
        Ok(buf)
    }

    /// Cuts the segment so that it ends just before the batch at `location` (which must be
    /// a batch of this segment), fixing both indexes. The segment becomes (or stays) active.
    pub fn truncate_at(
        &mut self,
        location: Option<BatchLocation>,
        cache: &FileCache,
    ) -> Result<(), StorageError> {
        let (pos, rel) = match location {
            Some(l) => (
                l.position,
                (l.header.base_offset as u64 - self.base_offset) as u32,
            ),
            None => (0, 0),
        };
        cache.evict(&self.log_path);
        cache.evict(&self.index_path);
        cache.evict(&self.time_path);
        // Entries to keep: those of batches strictly before the cut (entries are in
        // increasing relative-offset order in both files).
        let keep_index = if self.tail.index_entries == 0 {
            0
        } else {
            let idx = File::open(&self.index_path).ctx(&self.index_path)?;
            count_upto(self.tail.index_entries, |i| {
                index::read_offset_entry(&idx, i).map(|x| x.rel_offset < rel)
            })
            .ctx(&self.index_path)?
        };
        let keep_time = if self.tail.time_entries == 0 {
            0
        } else {
            let time = File::open(&self.time_path).ctx(&self.time_path)?;
            count_upto(self.tail.time_entries, |i| {
                index::read_time_entry(&time, i).map(|x| x.rel_offset < rel)
            })
            .ctx(&self.time_path)?
        };
        self.open_files()?;
        if let Some(files) = &mut self.active {
            durable::set_len(&files.log, &self.log_path, pos).ctx(&self.log_path)?;
            durable::sync_all(&files.log, &self.log_path).ctx(&self.log_path)?;
            for (slot, path, len) in [
                (
                    &mut files.index,
                    &self.index_path,
                    keep_index * OFFSET_ENTRY_BYTES,
                ),
                (
                    &mut files.time,
                    &self.time_path,
                    keep_time * TIME_ENTRY_BYTES,
                ),
            ] {
                if len == 0 && slot.is_none() {
                    cut_to(slot, path, 0).ctx(path)?;
                    continue;
                }
                let f = lazy(slot, path)?;
                durable::set_len(f, path, len).ctx(path)?;
                durable::sync_all(f, path).ctx(path)?;
            }
        }
        self.tail.index_entries = keep_index;
        self.tail.time_entries = keep_time;
        self.tail.last_time_ts = None;
        if keep_time > 0 {
            let time = File::open(&self.time_path).ctx(&self.time_path)?;
            self.tail.last_time_ts = Some(
                index::read_time_entry(&time, keep_time - 1)
                    .ctx(&self.time_path)?
                    .timestamp,
            );
        }
        self.reload_tail()
    }

    /// Removes the segment's three files. The caller fsyncs the directory.
    pub fn delete(self, cache: &FileCache) -> Result<(), StorageError> {
        for p in self.paths() {
            cache.evict(p);
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io(p, e)),
            }
        }
        Ok(())
    }
}

/// Number of leading entries `i < n` for which `pred(i)` holds (pred is monotone: true…false).
fn count_upto(n: u64, mut pred: impl FnMut(u64) -> std::io::Result<bool>) -> std::io::Result<u64> {
    let (mut lo, mut hi) = (0u64, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid)? {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// Reads the batch header at `pos`; `None` when fewer than a header's bytes remain before `end`
/// or the length field is impossible.
pub(crate) fn read_header(
    file: &File,
    path: &Path,
    pos: u64,
    end: u64,
) -> Result<Option<BatchHeader>, StorageError> {
    if end.saturating_sub(pos) < RECORDS_OFFSET as u64 {
        return Ok(None);
    }
    let mut b = [0u8; RECORDS_OFFSET];
    file.read_exact_at(&mut b, pos).ctx(path)?;
    let Ok(h) = BatchHeader::parse(&b) else {
        return Ok(None);
    };
    if BatchHeader::peek_size(&b).is_err() || pos + h.size() as u64 > end {
        return Ok(None);
    }
    Ok(Some(h))
}

/// Scans batches sequentially from `start` to `end` with large reads, validating each
/// (header, length, CRC) and calling `f(header, position)`; stops at the first invalid or
/// incomplete batch, or when `f` returns false. Returns the position after the last
/// accepted batch and the validation error that stopped the scan, if any.
pub(crate) fn scan_batches(
    file: &File,
    path: &Path,
    start: u64,
    end: u64,
    mut f: impl FnMut(&BatchHeader, u64) -> bool,
) -> Result<(u64, Option<BatchError>), StorageError> {
    let limits = scan_limits();
    let mut buf: Vec<u8> = Vec::with_capacity(SCAN_CHUNK_BYTES);
    let mut buf_pos = start; // file position of buf[0]
    let mut cur = 0usize; // index in buf of the next batch
    loop {
        let pos = buf_pos + cur as u64;
        if pos >= end {
            return Ok((pos, None));
        }
        // Make sure the length field is buffered, then the whole batch.
        let mut need = shared::batch::LOG_OVERHEAD;
        loop {
            if buf.len() - cur < need {
                let have_to_end = (end - buf_pos - buf.len() as u64) as usize;
                let missing = need - (buf.len() - cur);
                if missing > have_to_end {
                    let err = BatchError::Truncated {
                        what: "batch",
                        at: pos as usize,
                        need,
                        have: (end - pos) as usize,
                    };
                    return Ok((pos, Some(err)));
                }
                buf.drain(..cur);
                buf_pos += cur as u64;
                cur = 0;
                let read = missing.max(SCAN_CHUNK_BYTES).min(have_to_end);
                let old = buf.len();
                buf.resize(old + read, 0);
                file.read_exact_at(&mut buf[old..], buf_pos + old as u64)
                    .ctx(path)?;
            }
            if need > shared::batch::LOG_OVERHEAD {
                break;
            }
            match BatchHeader::peek_size(&buf[cur..]) {
                Ok(size) if size <= limits.batch_bytes_max => need = size.max(RECORDS_OFFSET),
                Ok(size) => {
                    return Ok((
                        pos,
                        Some(BatchError::TooLarge {
                            size,
                            max: limits.batch_bytes_max,
                        }),
                    ));
                }
                Err(e) => return Ok((pos, Some(e))),
            }
        }
        match validate_batch(&buf[cur..cur + need], &limits) {
            Ok(h) => {
                if !f(&h, pos) {
                    return Ok((pos, None));
                }
                cur += h.size();
            }
            Err(e) => return Ok((pos, Some(e))),
        }
    }
}
