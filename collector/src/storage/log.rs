//! [`PartitionLog`]: one partition's ordered, append-only log of record batches.
//!
//! A log is a directory `<data_dir>/<topic>-<partition>/` holding segments (see [`segment`]),
//! `partition.state` (log start offset, recovery point) and `leader-epoch-checkpoint`.
//! Offsets are dense: the log assigns `log_end_offset..` to each appended batch's records by
//! rewriting the batch's base offset and leader epoch, nothing else.
//!
//! Durability protocol (also in ARCHITECTURE.md):
//! 1. Append writes batch bytes with `pwrite` at the segment end, then index entries. A failed
//!    write is undone by cutting the files back, so no partial batch is ever visible.
//! 2. Data is durable once [`PartitionLog::flush`] (or a group-commit fsync through
//!    [`PartitionLog::sync_target`]) returned; only then does `flushed_offset` pass it.
//! 3. Rolling fsyncs the old segment's three files, creates the new ones, fsyncs the directory,
//!    then records the new recovery point in `partition.state` (temp + fsync + rename).
//! 4. After an unclean stop, every segment from the one holding the recovery point on is
//!    scanned and validated; the log is cut after the last valid batch and indexes rebuilt.
//!
//! [`segment`]: super::segment

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use shared::batch::restamp;
use shared::{BatchLimits, DecodedRecords};

use super::checkpoint::{LeaderEpochCache, PartitionState, fsync_dir};
use super::config::LogConfig;
use super::error::{IoContext, StorageError};
use super::file_cache::FileCache;
use super::segment::{Segment, segment_file};
use super::validated::ValidatedBatches;

/// Bytes read at a time by [`PartitionLog::checksum`].
const CHECKSUM_READ_BYTES: usize = 4 << 20;

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendInfo {
    pub first_offset: u64,
    pub last_offset: u64,
    /// `(base offset, last offset)` of each appended batch, in order.
    pub batches: Vec<(u64, u64)>,
    /// Wall-clock time of the append (ms).
    pub log_append_time_ms: i64,
}

/// What a read returned, with the log's offsets at that moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// Whole batches, the first one holding the requested offset.
    pub bytes: Vec<u8>,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    pub log_end_offset: u64,
}

/// What opening the log found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments scanned and validated (0 after a clean shutdown).
    pub segments_scanned: usize,
    /// Bytes scanned and validated: after an unclean stop, what lies past the recovery
    /// point (from the last index entry at or below it).
    pub bytes_scanned: u64,
    /// Bytes cut from torn or corrupt tails.
    pub bytes_truncated: u64,
    /// Segments deleted because they followed a corrupt one or were below the log start.
    pub segments_deleted: usize,
}

/// What retention deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
}

/// What an fsync made outside the log's lock needs: the active segment's data file, its
/// path, and the offset below which the fsync makes everything durable.
#[derive(Debug, Clone)]
pub struct SyncTarget {
    pub file: Arc<File>,
    pub path: PathBuf,
    pub upto: u64,
}

#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    topic: String,
    partition: u32,
    config: LogConfig,
    /// Shared LRU of read handles for closed segments.
    cache: Arc<FileCache>,
    /// Segments by base offset; the last one is the active segment.
    segments: BTreeMap<u64, Segment>,
    log_start_offset: u64,
    /// Set by the owner (replication); reads stop below it by default.
    high_watermark: u64,
    /// Below this everything is fsynced (in memory; `recovery_point` is its durable copy).
    flushed_offset: u64,
    /// The recovery point last written to `partition.state`.
    recovery_point: u64,
    /// The high watermark last written to `high-watermark`.
    hw_checkpointed: Option<u64>,
    epochs: LeaderEpochCache,
    /// Set after an I/O error other than disk-full: the log refuses everything until reopened.
    offline: bool,
    /// Which follower task may append and truncate as a replica (`None`: none — the
    /// partition is led here or not followed). Set by the follower when it starts
    /// following a leader epoch, cleared by the leader when it starts leading; checked
    /// under the log's lock, so a follower task that outlived its role cannot write.
    replica_token: Option<u64>,
    recovery: RecoveryReport,
    /// Told when an fsync of this log fails (the node stops: see [`FailureAlarm`]).
    alarm: Option<FailureAlarm>,
}

/// Where a log reports a failed fsync: the owner of the process (the node) stops it, since
/// the state it holds in memory — flushed offsets, high watermarks, producer tables — may
/// describe pages the kernel dropped, and only a recovery from what is on disk is safe.
pub type FailureAlarm = std::sync::Arc<tokio::sync::watch::Sender<Option<String>>>;

fn parse_segment_name(name: &str) -> Option<(u64, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, ext))
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir`. `clean` says the previous stop wrote its
    /// clean-shutdown marker: the segments are then trusted and only the last one's tail is
    /// read; otherwise every segment from the recovery point on is validated.
    pub fn open(
        dir: &Path,
        topic: &str,
        partition: u32,
        config: LogConfig,
        cache: Arc<FileCache>,
        clean: bool,
        now_ms: i64,
    ) -> Result<Self, StorageError> {
        config.validate()?;
        if !dir.exists() {
            std::fs::create_dir_all(dir).ctx(dir)?;
            if let Some(parent) = dir.parent() {
                fsync_dir(parent)?;
            }
        }
        let state = PartitionState::load(dir)?;
        let (state_start, state_recovery) = state
            .as_ref()
            .map_or((0, 0), |s| (s.log_start_offset, s.recovery_point));
        let mut log = Self {
            dir: dir.to_path_buf(),
            topic: topic.to_owned(),
            partition,
            config,
            cache,
            segments: BTreeMap::new(),
            log_start_offset: state_start,
            high_watermark: 0,
            flushed_offset: 0,
            recovery_point: state_recovery,
            hw_checkpointed: super::checkpoint::load_high_watermark(dir)?,
            epochs: LeaderEpochCache::default(),
            offline: false,
            replica_token: None,
            recovery: RecoveryReport::default(),
            alarm: None,
        };
        let recovered_epochs = log.load_segments(clean, now_ms)?;
        let first_base = log.segments.keys().next().copied().unwrap_or(0);
        let end = log.log_end_offset();
        // Recovery may have cut a tail that a producer snapshot was written after.
        remove_state_files_after(dir, Some(end))?;
        log.log_start_offset = log.log_start_offset.max(first_base).min(end);
        log.epochs = LeaderEpochCache::load(dir)?;
        let mut epochs_changed = log.epochs.truncate_from_end(end);
        for (offset, epoch) in recovered_epochs {
            epochs_changed |= log.epochs.assign(epoch, offset);
        }
        epochs_changed |= log.epochs.truncate_from_start(log.log_start_offset);
        if epochs_changed {
            log.epochs.store(dir)?;
        }
        // Everything on disk now was either fsynced at a roll/clean close or validated and
        // fsynced by recovery.
        log.flushed_offset = end;
        // What was confirmed before the stop, when known (a log that never checkpointed one,
        // e.g. from before checkpoints, shows what it has, as it always did).
        log.high_watermark = log
            .hw_checkpointed
            .map_or(end, |hw| hw.clamp(log.log_start_offset, end));
        if state.is_none() || log.recovery_point != end || state_start != log.log_start_offset {
            log.recovery_point = end;
            log.store_state()?;
        }
        Ok(log)
    }

    /// Lists, opens and (if needed) recovers the segments. Returns the `(offset, epoch)` of
    /// every batch recovery scanned, for the leader-epoch cache.
    fn load_segments(&mut self, clean: bool, now_ms: i64) -> Result<Vec<(u64, i32)>, StorageError> {
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(&self.dir).ctx(&self.dir)? {
            let entry = entry.ctx(&self.dir)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".tmp") {
                // A state file write that did not reach its rename: the old file stands.
                std::fs::remove_file(entry.path()).ctx(&entry.path())?;
                continue;
            }
            match parse_segment_name(name) {
                Some((base, "log")) => bases.push(base),
                // An index without its log: a segment whose deletion was interrupted.
                Some((base, "index" | "timeindex"))
                    if !segment_file(&self.dir, base, "log").exists() =>
                {
                    std::fs::remove_file(entry.path()).ctx(&entry.path())?;
                }
                _ => {}
            }
        }
        bases.sort_unstable();
        // Segments wholly below the log start were being deleted by retention.
        while bases.len() > 1 && bases[1] <= self.log_start_offset {
            let base = bases.remove(0);
            Segment::open_closed(&self.dir, base, base)?.delete(&self.cache)?;
            self.recovery.segments_deleted += 1;
        }
        if bases.is_empty() {
            let seg = Segment::create(&self.dir, self.log_start_offset, now_ms)?;
            fsync_dir(&self.dir)?;
            self.segments.insert(self.log_start_offset, seg);
            return Ok(Vec::new());
        }
        // First segment to validate: the one holding the recovery point.
        let recover_from = if clean {
            bases.len()
        } else {
            bases
                .iter()
                .rposition(|&b| b <= self.recovery_point)
                .unwrap_or(0)
        };
        let mut epochs = Vec::new();
        let interval = self.config.index_interval_bytes;
        let last = bases.len() - 1;
        let mut i = 0;
        while i < bases.len() {
            let base = bases[i];
            let next = bases.get(i + 1).copied();
            let opened = if i < recover_from && i < last {
                Segment::open_closed(&self.dir, base, next.unwrap_or(base)).ok()
            } else if i < recover_from {
                Segment::open_active_clean(&self.dir, base).ok()
            } else {
                None
            };
            let seg = match opened {
                Some(seg) => seg,
                None => {
                    let mut seg = Segment::open_closed(&self.dir, base, base).or_else(|_| {
                        // Broken index files: recovery rewrites them.
                        for ext in ["index", "timeindex"] {
                            let _ = std::fs::remove_file(segment_file(&self.dir, base, ext));
                        }
                        Segment::open_closed(&self.dir, base, base)
                    })?;
                    // The segment holding the recovery point is scanned from there on;
                    // later ones lie wholly past it.
                    let from = if i == recover_from {
                        self.recovery_point
                    } else {
                        0
                    };
                    let r = seg.recover_from(interval, from)?;
                    let (found, cut) = (r.epochs, r.cut);
                    self.recovery.segments_scanned += 1;
                    self.recovery.bytes_scanned += r.scanned;
                    self.recovery.bytes_truncated += cut;
                    epochs.extend(found);
                    if let Some(next_base) = next {
                        if seg.next_offset() != next_base {
                            // A hole or a cut in the middle: the later segments cannot follow on.
                            for &b in &bases[i + 1..] {
                                Segment::open_closed(&self.dir, b, b)
                                    .map(|s| s.delete(&self.cache))
                                    .unwrap_or(Ok(()))?;
                                self.recovery.segments_deleted += 1;
                            }
                            fsync_dir(&self.dir)?;
                            bases.truncate(i + 1);
                        } else {
                            seg.close()?;
                        }
                    }
                    seg
                }
            };
            self.segments.insert(base, seg);
            i += 1;
        }
        Ok(epochs)
    }

    fn active(&self) -> &Segment {
        // open() always leaves at least one segment, and nothing removes the last one
        // without inserting a replacement.
        match self.segments.values().next_back() {
            Some(s) => s,
            None => unreachable!("a partition log always has an active segment"),
        }
    }

    fn active_mut(&mut self) -> &mut Segment {
        match self.segments.values_mut().next_back() {
            Some(s) => s,
            None => unreachable!("a partition log always has an active segment"),
        }
    }

    fn store_state(&self) -> Result<(), StorageError> {
        PartitionState {
            topic: self.topic.clone(),
            partition: self.partition,
            log_start_offset: self.log_start_offset,
            recovery_point: self.recovery_point,
        }
        .store(&self.dir)
    }

    fn check_online(&self) -> Result<(), StorageError> {
        if self.offline {
            return Err(StorageError::Offline {
                path: self.dir.clone(),
            });
        }
        Ok(())
    }

    /// Marks the log offline when `result` is a fatal I/O error.
    fn guard<T>(&mut self, result: Result<T, StorageError>) -> Result<T, StorageError> {
        if let Err(e) = &result
            && e.is_fatal_io()
        {
            tracing::error!(dir = %self.dir.display(), error = %e, "partition log going offline");
            self.offline = true;
        }
        result
    }

    /// Records that an fsync of this log, made outside its lock (group commit, a follower's
    /// sync), failed. The kernel may have dropped the unsynced pages with the error, so a
    /// later fsync that succeeds would vouch for data that is gone: the log goes offline
    /// until a restart, whose recovery trusts only what is on disk.
    pub fn sync_failed(&mut self, e: &StorageError) {
        tracing::error!(dir = %self.dir.display(), error = %e, "fsync failed: partition log going offline");
        self.offline = true;
        if let Some(alarm) = &self.alarm {
            alarm.send_replace(Some(format!("an fsync failed: {e}")));
        }
    }

    /// Where a failed fsync is reported from now on.
    pub fn set_failure_alarm(&mut self, alarm: FailureAlarm) {
        self.alarm = Some(alarm);
    }

    /// The partition is being deleted: every later call is refused as if offline (a
    /// checkpoint racing the delete writes nothing into the directory going away).
    pub fn close_for_delete(&mut self) {
        self.offline = true;
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn topic(&self) -> &str {
        &self.topic
    }
    pub fn partition(&self) -> u32 {
        self.partition
    }
    pub fn config(&self) -> &LogConfig {
        &self.config
    }
    /// Changes the log's settings (a topic's configs were altered); applies to later appends.
    pub fn set_config(&mut self, config: LogConfig) -> Result<(), StorageError> {
        config.validate()?;
        self.config = config;
        Ok(())
    }
    pub fn log_start_offset(&self) -> u64 {
        self.log_start_offset
    }
    pub fn log_end_offset(&self) -> u64 {
        self.active().next_offset()
    }
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark
    }
    pub fn flushed_offset(&self) -> u64 {
        self.flushed_offset
    }
    pub fn recovery_point(&self) -> u64 {
        self.recovery_point
    }
    pub fn is_offline(&self) -> bool {
        self.offline
    }
    /// See the field: the follower task allowed to write as a replica.
    pub fn replica_token(&self) -> Option<u64> {
        self.replica_token
    }
    pub fn set_replica_token(&mut self, token: Option<u64>) {
        self.replica_token = token;
    }
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }
    pub fn leader_epochs(&self) -> &LeaderEpochCache {
        &self.epochs
    }
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
    /// Base offsets of the segments, oldest first.
    pub fn segment_bases(&self) -> Vec<u64> {
        self.segments.keys().copied().collect()
    }
    /// Bytes of all segment data files.
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(Segment::size).sum()
    }

    /// Sets the high watermark (clamped to the log). Replication owns it; a single node
    /// moves it to the log end once data is durable.
    pub fn set_high_watermark(&mut self, offset: u64) {
        self.high_watermark = offset.clamp(self.log_start_offset, self.log_end_offset());
    }

    /// KIP-279: the largest leader epoch `<= epoch` and the offset where it ends here.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, u64)> {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    /// Appends batches as leader: assigns offsets from the log end and stamps `leader_epoch`.
    pub fn append(
        &mut self,
        mut batches: ValidatedBatches,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        self.check_online()?;
        let mut next = self.log_end_offset();
        let first = next;
        let mut info = Vec::with_capacity(batches.headers.len());
        for (h, at) in batches.headers.iter_mut() {
            restamp(&mut batches.bytes[*at..], next as i64, leader_epoch);
            h.base_offset = next as i64;
            h.partition_leader_epoch = leader_epoch;
            info.push((next, h.last_offset() as u64));
            next = h.next_offset() as u64;
        }
        self.append_stamped(&batches, now_ms)?;
        if self.epochs.assign(leader_epoch, first) {
            let r = self.epochs.store(&self.dir);
            self.guard(r)?;
        }
        Ok(AppendInfo {
            first_offset: first,
            last_offset: next - 1,
            batches: info,
            log_append_time_ms: now_ms,
        })
    }

    /// Appends batches as a follower: keeps their offsets and epochs, which must continue
    /// the log exactly.
    pub fn append_replica(
        &mut self,
        batches: ValidatedBatches,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        self.check_online()?;
        let mut next = self.log_end_offset();
        let first = next;
        let mut info = Vec::with_capacity(batches.headers.len());
        for (h, _) in &batches.headers {
            if h.base_offset < 0 || h.base_offset as u64 != next {
                return Err(StorageError::NonContiguous {
                    base_offset: h.base_offset,
                    log_end_offset: next,
                });
            }
            info.push((next, h.last_offset() as u64));
            next = h.next_offset() as u64;
        }
        self.append_stamped(&batches, now_ms)?;
        let mut changed = false;
        for (h, _) in &batches.headers {
            changed |= self
                .epochs
                .assign(h.partition_leader_epoch, h.base_offset as u64);
        }
        if changed {
            let r = self.epochs.store(&self.dir);
            self.guard(r)?;
        }
        Ok(AppendInfo {
            first_offset: first,
            last_offset: next - 1,
            batches: info,
            log_append_time_ms: now_ms,
        })
    }

    fn append_stamped(
        &mut self,
        batches: &ValidatedBatches,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let last_offset = batches
            .headers
            .last()
            .map_or(self.log_end_offset(), |(h, _)| h.last_offset() as u64);
        if self.active().needs_roll(
            batches.bytes.len() as u64,
            batches.headers.len() as u64,
            last_offset,
            now_ms,
            &self.config,
        ) {
            let r = self.roll(now_ms);
            self.guard(r)?;
        }
        let interval = self.config.index_interval_bytes;
        let r = self
            .active_mut()
            .append(&batches.bytes, &batches.headers, interval);
        self.guard(r)
    }

    /// Closes the active segment and starts a new one at the log end.
    pub fn roll(&mut self, now_ms: i64) -> Result<(), StorageError> {
        let base = self.log_end_offset();
        if self.active().base_offset == base {
            return Ok(()); // the active segment is empty: nothing to roll
        }
        // Create the new files first: if that fails (disk full), the old segment stays active.
        let seg = match Segment::create(&self.dir, base, now_ms) {
            Ok(s) => s,
            Err(e) => {
                for ext in ["log", "index", "timeindex"] {
                    let _ = std::fs::remove_file(segment_file(&self.dir, base, ext));
                }
                return Err(e);
            }
        };
        self.active_mut().close()?;
        fsync_dir(&self.dir)?;
        self.segments.insert(base, seg);
        // Every older segment is now fsynced.
        self.flushed_offset = self.flushed_offset.max(base);
        self.recovery_point = base;
        self.store_state()
    }

    /// Fsyncs the active segment; everything appended so far is durable afterwards.
    pub fn flush(&mut self) -> Result<(), StorageError> {
        self.check_online()?;
        let end = self.log_end_offset();
        let r = self.active().sync_data();
        self.guard(r)?;
        self.flushed_offset = end;
        Ok(())
    }

    /// For group commit: the file whose fsync makes everything below the returned offset
    /// durable. The caller fsyncs it without holding the log, then calls `mark_flushed`.
    pub fn sync_target(&self) -> Result<SyncTarget, StorageError> {
        self.check_online()?;
        let file = self
            .active()
            .active_log()
            .ok_or_else(|| StorageError::Offline {
                path: self.dir.clone(),
            })?;
        Ok(SyncTarget {
            file,
            path: self.active().log_path().to_path_buf(),
            upto: self.log_end_offset(),
        })
    }

    /// Records that an fsync made everything below `offset` durable.
    pub fn mark_flushed(&mut self, offset: u64) {
        self.flushed_offset = self.flushed_offset.max(offset.min(self.log_end_offset()));
    }

    /// Writes the flushed offset as the durable recovery point (owners call this
    /// periodically, to bound recovery work after a crash).
    pub fn checkpoint(&mut self) -> Result<(), StorageError> {
        self.check_online()?;
        if self.recovery_point != self.flushed_offset {
            self.recovery_point = self.flushed_offset;
            let r = self.store_state();
            self.guard(r)?;
        }
        self.checkpoint_high_watermark()
    }

    /// Writes the high watermark to `high-watermark` if it moved since the last time.
    fn checkpoint_high_watermark(&mut self) -> Result<(), StorageError> {
        if self.hw_checkpointed != Some(self.high_watermark) {
            let r = super::checkpoint::store_high_watermark(&self.dir, self.high_watermark);
            self.guard(r)?;
            self.hw_checkpointed = Some(self.high_watermark);
        }
        Ok(())
    }

    /// Clean close: fsync and close the active segment, store the state.
    pub fn close(&mut self) -> Result<(), StorageError> {
        self.check_online()?;
        let end = self.log_end_offset();
        self.active_mut().close()?;
        self.flushed_offset = end;
        self.recovery_point = end;
        self.store_state()?;
        self.checkpoint_high_watermark()?;
        // Closed: every later call is refused as if offline.
        self.offline = true;
        Ok(())
    }

    /// Reads whole batches from the one holding `offset`, up to `max_bytes` (the first batch
    /// is always whole), and only below `upper` (default: the high watermark).
    pub fn read(
        &self,
        offset: u64,
        max_bytes: usize,
        upper: Option<u64>,
    ) -> Result<ReadResult, StorageError> {
        self.check_online()?;
        let end = self.log_end_offset();
        let upper = upper.unwrap_or(self.high_watermark).min(end);
        let result = |bytes| ReadResult {
            bytes,
            high_watermark: self.high_watermark,
            log_start_offset: self.log_start_offset,
            log_end_offset: end,
        };
        if offset < self.log_start_offset || offset > end {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: end,
            });
        }
        if offset >= upper {
            return Ok(result(Vec::new()));
        }
        for (_, seg) in self
            .segments
            .range(..=offset)
            .next_back()
            .into_iter()
            .chain(self.segments.range(offset + 1..))
        {
            if let Some(loc) = seg.locate(offset, &self.cache)? {
                let bytes = seg.read_from(loc, max_bytes, upper, &self.cache)?;
                return Ok(result(bytes));
            }
        }
        Ok(result(Vec::new()))
    }

    /// CRC-32C over this replica's batches from the log start up to `upto` (whole batches
    /// only), and the offsets `[from, to)` it covers: replicas that agree give the same
    /// checksum. A batch that does not decode is `StorageError::Batch`.
    pub fn checksum(&self, upto: u64) -> Result<(u32, u64, u64), StorageError> {
        let start = self.log_start_offset();
        let mut offset = start;
        let mut crc = 0u32;
        let limit = upto.min(self.log_end_offset());
        while offset < limit {
            let r = self.read(offset, CHECKSUM_READ_BYTES, Some(limit))?;
            if r.bytes.is_empty() {
                break;
            }
            let mut last = offset;
            for item in shared::BatchIter::new(&r.bytes, super::segment::scan_limits()) {
                let (h, b) = item?;
                if (h.next_offset() as u64) <= limit {
                    crc = crc32c::crc32c_append(crc, b);
                    last = h.next_offset() as u64;
                } else {
                    last = limit;
                    break;
                }
            }
            if last == offset {
                break;
            }
            offset = last;
        }
        Ok((crc, start, offset))
    }

    /// The offset of the first record with a timestamp `>= timestamp`, or `None` when every
    /// record is older.
    pub fn offset_for_timestamp(
        &self,
        timestamp: i64,
        limits: &BatchLimits,
    ) -> Result<Option<u64>, StorageError> {
        Ok(self.record_at_timestamp(timestamp, limits)?.map(|(o, _)| o))
    }

    /// The first record with a timestamp `>= timestamp`: its offset and timestamp, or
    /// `None` when every record is older.
    pub fn record_at_timestamp(
        &self,
        timestamp: i64,
        limits: &BatchLimits,
    ) -> Result<Option<(u64, i64)>, StorageError> {
        self.check_online()?;
        for seg in self.segments.values() {
            let Some(loc) = seg.locate_timestamp(timestamp, &self.cache)? else {
                continue;
            };
            let bytes = seg.read_from(loc, 0, u64::MAX, &self.cache)?;
            let decoded = DecodedRecords::new(&bytes, limits)?;
            let h = decoded.header();
            for r in decoded.iter() {
                let ts = h.base_timestamp.wrapping_add(r.timestamp_delta);
                if ts >= timestamp {
                    let offset = h.base_offset as u64 + r.offset_delta as u64;
                    return Ok(Some((offset.max(self.log_start_offset), ts)));
                }
            }
        }
        Ok(None)
    }

    /// The first record carrying the largest timestamp in the log (Kafka's
    /// `MAX_TIMESTAMP`): its offset and timestamp, or `None` for an empty log.
    pub fn max_timestamp_record(
        &self,
        limits: &BatchLimits,
    ) -> Result<Option<(u64, i64)>, StorageError> {
        self.check_online()?;
        // The earliest segment holding the maximum (a later one only ties or is below).
        let mut max: Option<i64> = None;
        for seg in self.segments.values() {
            if seg.size() > 0 && max.is_none_or(|m| seg.max_timestamp() > m) {
                max = Some(seg.max_timestamp());
            }
        }
        match max {
            Some(ts) => self.record_at_timestamp(ts, limits),
            None => Ok(None),
        }
    }

    /// Removes every batch at or after `offset` (rounded down to the start of the batch that
    /// holds it). Returns the new log end offset.
    pub fn truncate_to(&mut self, offset: u64, now_ms: i64) -> Result<u64, StorageError> {
        self.check_online()?;
        if offset >= self.log_end_offset() {
            return Ok(self.log_end_offset());
        }
        if offset < self.log_start_offset {
            self.truncate_fully_and_start_at(offset, now_ms)?;
            return Ok(offset);
        }
        let r = self.truncate_inner(offset);
        self.guard(r)?;
        Ok(self.log_end_offset())
    }

    fn truncate_inner(&mut self, offset: u64) -> Result<(), StorageError> {
        // Drop whole segments above the cut, keeping at least the first.
        let first_base = self.segments.keys().next().copied().unwrap_or(0);
        let doomed: Vec<u64> = self
            .segments
            .range(offset.max(first_base + 1)..)
            .map(|(b, _)| *b)
            .collect();
        for b in &doomed {
            if let Some(seg) = self.segments.remove(b) {
                seg.delete(&self.cache)?;
            }
        }
        if !doomed.is_empty() {
            fsync_dir(&self.dir)?;
        }
        let cache = self.cache.clone();
        let seg = self.active_mut();
        let loc = seg.locate(offset, &cache)?;
        if loc.is_some() || offset <= seg.base_offset {
            seg.truncate_at(loc, &cache)?;
        } else {
            seg.open_files()?;
        }
        let end = self.log_end_offset();
        if self.epochs.truncate_from_end(end) {
            self.epochs.store(&self.dir)?;
        }
        remove_state_files_after(&self.dir, Some(end))?;
        self.high_watermark = self.high_watermark.min(end);
        self.flushed_offset = self.flushed_offset.min(end);
        if self.recovery_point > end {
            self.recovery_point = end;
            self.store_state()?;
        }
        Ok(())
    }

    /// Deletes every segment and restarts the log, empty, at `offset` (a follower too far
    /// behind, or diverged before the leader's log start).
    pub fn truncate_fully_and_start_at(
        &mut self,
        offset: u64,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        self.check_online()?;
        let r = self.truncate_fully_inner(offset, now_ms);
        self.guard(r)
    }

    fn truncate_fully_inner(&mut self, offset: u64, now_ms: i64) -> Result<(), StorageError> {
        // Record the new start first: a crash in the middle then deletes leftovers on open.
        self.log_start_offset = offset;
        self.recovery_point = offset;
        self.store_state()?;
        remove_state_files_after(&self.dir, None)?;
        for (_, seg) in std::mem::take(&mut self.segments) {
            seg.delete(&self.cache)?;
        }
        let seg = Segment::create(&self.dir, offset, now_ms)?;
        fsync_dir(&self.dir)?;
        self.segments.insert(offset, seg);
        self.epochs.clear();
        self.epochs.store(&self.dir)?;
        self.high_watermark = offset;
        self.flushed_offset = offset;
        Ok(())
    }

    /// Deletes closed segments past the retention time or size, never the active segment
    /// and never data at or above the high watermark. Advances the log start offset.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<RetentionOutcome, StorageError> {
        self.check_online()?;
        let mut total = self.size_bytes();
        let mut doomed = Vec::new();
        let active_base = self.active().base_offset;
        for (base, seg) in &self.segments {
            if *base == active_base || seg.next_offset() > self.high_watermark {
                break;
            }
            let expired = self
                .config
                .retention_ms
                .is_some_and(|ms| seg.max_timestamp() < now_ms.saturating_sub(ms));
            let oversize = self
                .config
                .retention_bytes
                .is_some_and(|max| total - seg.size() >= max);
            if !(expired || oversize) {
                break;
            }
            total -= seg.size();
            doomed.push(*base);
        }
        if doomed.is_empty() {
            return Ok(RetentionOutcome::default());
        }
        let r = self.delete_oldest(&doomed);
        self.guard(r)
    }

    fn delete_oldest(&mut self, doomed: &[u64]) -> Result<RetentionOutcome, StorageError> {
        let mut out = RetentionOutcome::default();
        let new_start = doomed
            .last()
            .and_then(|b| self.segments.get(b))
            .map_or(self.log_start_offset, Segment::next_offset);
        // Durable new start first: a crash mid-way leaves files that open() deletes.
        self.log_start_offset = self.log_start_offset.max(new_start);
        self.store_state()?;
        for b in doomed {
            if let Some(seg) = self.segments.remove(b) {
                out.bytes_deleted += seg.size();
                out.segments_deleted += 1;
                seg.delete(&self.cache)?;
            }
        }
        fsync_dir(&self.dir)?;
        if self.epochs.truncate_from_start(self.log_start_offset) {
            self.epochs.store(&self.dir)?;
        }
        Ok(out)
    }
}

/// Extension of the per-offset state files the broker keeps beside a partition's segments
/// (`<offset>.snapshot`: its producer state as of that offset).
pub const STATE_FILE_EXT: &str = "snapshot";

/// Removes the partition's per-offset state files above `end` (all of them with `None`):
/// once the log end moves back (truncation, a recovered crash, a full restart), such a file
/// describes a history the log no longer has, and a later leader of this log, finding one at
/// or below its new end, would trust it — a producer's batches missing from it are then
/// accepted again as new (duplicates).
fn remove_state_files_after(dir: &Path, end: Option<u64>) -> Result<(), StorageError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).ctx(dir),
    };
    let mut removed = false;
    for entry in entries {
        let entry = entry.ctx(dir)?;
        let name = entry.file_name();
        let Some(offset) = name
            .to_str()
            .and_then(|n| n.strip_suffix(STATE_FILE_EXT))
            .and_then(|n| n.strip_suffix('.'))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if end.is_none_or(|end| offset > end) {
            std::fs::remove_file(entry.path()).ctx(&entry.path())?;
            removed = true;
        }
    }
    if removed {
        fsync_dir(dir)?;
    }
    Ok(())
}
