//! [`Partition`]: a partition log this broker leads, with its producer table, its group
//! commit and the high-watermark signal that wakes long-polling fetches.
//!
//! Everything here is blocking (file I/O, fsync); the HTTP layer calls it from
//! `spawn_blocking`. Lock order: producer table, then log. No lock is held during an fsync.

use std::sync::{Arc, Mutex, Weak};

use shared::batch::BatchIter;
use shared::{BatchHeader, BatchLimits};
use tokio::sync::watch;

use super::producer_state::{self, ProducerError, ProducerTable, Verdict};
use super::sessions::SessionSignal;
use crate::storage::manager::{SharedLog, TopicPartition};
use crate::storage::{FlushPolicy, GroupCommit, ReadResult, StorageError, ValidatedBatches};

pub use api::{Acks, BatchAck};

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error(transparent)]
    Producer(#[from] ProducerError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// This broker stopped leading the partition while the request was on its way (a
    /// fetcher follows it now): nothing was written.
    #[error("{0} is no longer led by this broker")]
    Deposed(String),
}

#[derive(Debug)]
pub struct Partition {
    pub tp: TopicPartition,
    log: SharedLog,
    gc: GroupCommit,
    producers: Mutex<ProducerTable>,
    flush: FlushPolicy,
    hw: watch::Sender<u64>,
    /// The log end, for followers' long polls.
    leo: watch::Sender<u64>,
    /// This broker, the ISR and what each follower has.
    repl: Mutex<Replication>,
    /// Set when this broker stops leading the partition (acks=all waits end with not_leader).
    deposed: watch::Sender<bool>,
    /// The followers' fetch sessions holding this partition: told when its log end or
    /// high watermark moves, or it is deposed.
    listeners: Mutex<Vec<Weak<SessionSignal>>>,
    /// The log end of the newest producer snapshot (written, or loaded at open): a
    /// checkpoint with nothing new writes none.
    snapshot_at: Mutex<Option<u64>>,
    /// Told whenever producers' batches are recorded: a batch that arrived ahead of the one
    /// before it waits on this (see [`Partition::wait_for_earlier`]).
    recorded: tokio::sync::Notify,
    /// The log end the producer table describes (set at open and by each append here,
    /// under the log's lock). A log that ends elsewhere was written by another writer (a
    /// fetcher, once this broker was deposed): no snapshot is written for it.
    table_end: std::sync::atomic::AtomicU64,
    /// The leader epoch this state was opened for (-1: not set). Leading in another epoch
    /// means opening afresh: in between this broker may have followed, and the producer
    /// table would miss what it copied.
    led_epoch: std::sync::atomic::AtomicI32,
}

/// What the leader knows of its followers.
#[derive(Debug)]
struct Replication {
    node_id: u64,
    isr: Vec<u64>,
    /// Followers this leader proposed adding to the ISR, not yet in the metadata. The high
    /// watermark already waits for them (Kafka's "maximal ISR"): otherwise a record
    /// acknowledged while the change is in flight could be missing on a new ISR member,
    /// which could then be elected.
    pending_add: Vec<u64>,
    followers: std::collections::HashMap<u64, Follower>,
    /// When this broker started leading: ISR members get one lag period to show up.
    started: std::time::Instant,
}

#[derive(Debug, Clone)]
struct Follower {
    /// Its log end offset: the offset it fetched from last.
    leo: u64,
    /// The leader's log end when it fetched last.
    leader_end_at_last_fetch: u64,
    /// When it last had everything the leader had at its previous fetch (Kafka's rule, so
    /// a follower keeping up with a steady stream counts as caught up).
    caught_up: std::time::Instant,
    /// Its fetch session (id, signal): each of its requests counts as a fetch at `leo`
    /// (an idle partition is not listed in them).
    session: Option<(u64, Weak<SessionSignal>)>,
    /// Since when the leader holds records this follower lacks (`None`: it has them all).
    behind_since: Option<std::time::Instant>,
}

impl Follower {
    /// When it was last caught up: at its last fetch that had everything the leader had
    /// (Kafka's rule), or — while in a fetch session — at its session's last request made
    /// before the leader took records it lacks (`behind_since`).
    fn caught_up_at(&self) -> std::time::Instant {
        let heard = self
            .session
            .as_ref()
            .and_then(|(_, s)| s.upgrade())
            .map(|s| s.last_heard());
        let heard = match (heard, self.behind_since) {
            (Some(h), Some(b)) => Some(h.min(b)),
            (h, _) => h,
        };
        heard.map_or(self.caught_up, |t| t.max(self.caught_up))
    }
}

use shared::sys::lock;

pub use shared::sys::now_ms;

/// Chunk size used when replaying the log to rebuild producer state.
const REBUILD_READ_BYTES: usize = 4 << 20;

/// Records into `table` every batch of `log` from `from` to `end`, each producer seen at
/// `seen`.
fn replay(
    log: &crate::storage::PartitionLog,
    from: u64,
    end: u64,
    table: &mut ProducerTable,
    seen: i64,
) -> Result<(), StorageError> {
    let limits = BatchLimits {
        batch_bytes_max: crate::storage::segment::BATCH_BYTES_MAX_ON_DISK,
        uncompressed_bytes_max: 0,
    };
    let mut offset = from;
    while offset < end {
        let r = log.read(offset, REBUILD_READ_BYTES, Some(end))?;
        if r.bytes.is_empty() {
            break;
        }
        for item in BatchIter::new(&r.bytes, limits) {
            let (h, _) = item?;
            if h.next_offset() as u64 > offset {
                table.record(&h, seen);
            }
            offset = h.next_offset() as u64;
        }
    }
    Ok(())
}

/// A follower's producer snapshot: the newest snapshot plus the batches its fetcher copied
/// since, written at its log end — so that, promoted, it replays only what came after,
/// not its whole log. Done under the log's lock, so the snapshot describes exactly the log
/// up to that end (a truncation cannot interleave; it removes snapshots above its cut).
/// Returns whether one was written (nothing new: none).
pub fn snapshot_follower(
    log: &SharedLog,
    producer_expiration_ms: i64,
) -> Result<bool, StorageError> {
    let l = lock(log);
    let end = l.log_end_offset();
    // Nothing copied since the last one (most followed partitions, most of the time): a
    // stat, not a parse of the newest snapshot.
    if end == l.log_start_offset() || producer_state::has_snapshot_at(l.dir(), end) {
        return Ok(false);
    }
    let (from, mut table) = producer_state::load_snapshot(l.dir(), l.log_start_offset(), end);
    replay(&l, from, end, &mut table, now_ms())?;
    table.expire(shared::sys::expiry_now_ms(), producer_expiration_ms);
    producer_state::write_snapshot(l.dir(), end, &table)?;
    Ok(true)
}

impl Partition {
    /// Wraps an open log, rebuilding the producer table from the newest snapshot plus the
    /// batches after it.
    ///
    /// `replicated`: the partition has other replicas. Then the high watermark stays where
    /// this broker had it (as a follower: what the old leader had confirmed) and moves on
    /// only as the ISR confirms; records this log holds beyond it are not visible before.
    pub fn open(
        tp: TopicPartition,
        log: SharedLog,
        replicated: bool,
    ) -> Result<Self, StorageError> {
        let (table, flush, hw, leo, snapshot_at) = {
            let mut l = lock(&log);
            // Leading from here on: appends of a follower task still running for the
            // previous leader are refused from now (checked under this lock).
            l.set_replica_token(None);
            let end = l.log_end_offset();
            if !replicated {
                // One replica: what recovery kept is durable, so it is all visible.
                l.set_high_watermark(end);
            }
            let (from, mut table) =
                producer_state::load_snapshot(l.dir(), l.log_start_offset(), end);
            let snapshot_at = (from == end).then_some(end);
            // Rebuilt producers count as seen now. Their batches' own timestamps are the
            // clients' (CreateTime, any age): taken as "last seen", an old one made the next
            // checkpoint expire the producer, and its retry was stored a second time (found
            // by the fault campaign, seeds 3021, 3033, 3039, 3047).
            replay(&l, from, end, &mut table, now_ms())?;
            (
                table,
                l.config().flush,
                l.high_watermark(),
                l.log_end_offset(),
                snapshot_at,
            )
        };
        Ok(Self {
            tp,
            log,
            gc: GroupCommit::new(),
            producers: Mutex::new(table),
            flush,
            hw: watch::Sender::new(hw),
            leo: watch::Sender::new(leo),
            deposed: watch::Sender::new(false),
            listeners: Mutex::new(Vec::new()),
            recorded: tokio::sync::Notify::new(),
            table_end: std::sync::atomic::AtomicU64::new(leo),
            led_epoch: std::sync::atomic::AtomicI32::new(-1),
            snapshot_at: Mutex::new(snapshot_at),
            repl: Mutex::new(Replication {
                node_id: 0,
                isr: Vec::new(),
                pending_add: Vec::new(),
                followers: std::collections::HashMap::new(),
                started: std::time::Instant::now(),
            }),
        })
    }

    pub fn log(&self) -> &SharedLog {
        &self.log
    }

    /// Subscribes to high-watermark changes (for long-poll fetches).
    pub fn watch_high_watermark(&self) -> watch::Receiver<u64> {
        self.hw.subscribe()
    }

    pub fn high_watermark(&self) -> u64 {
        *self.hw.borrow()
    }

    /// Appends a request's batches: duplicates are answered from the producer table, the
    /// rest are sequence-checked (all or nothing), appended in one write and, unless
    /// `acks` is `None`, made durable per the flush policy before returning.
    pub fn produce(
        &self,
        batches: ValidatedBatches,
        leader_epoch: i32,
    ) -> Result<Vec<BatchAck>, ProduceError> {
        let now = now_ms();
        let mut producers = lock(&self.producers);
        // Judge every batch first, against the table as the earlier batches would leave it.
        let mut scratch = producers.subset(batches.headers().iter().map(|(h, _)| h.producer_id));
        let mut verdicts = Vec::with_capacity(batches.headers().len());
        for (h, _) in batches.headers() {
            let v = scratch.check(h)?;
            if v == Verdict::Append {
                let mut stamped = *h;
                stamped.base_offset = 0; // placeholder: only sequences matter in the scratch table
                scratch.record(&stamped, now);
            }
            verdicts.push(v);
        }
        drop(scratch);
        let fresh: Vec<usize> = verdicts
            .iter()
            .enumerate()
            .filter(|(_, v)| **v == Verdict::Append)
            .map(|(i, _)| i)
            .collect();
        let mut acks_out = Vec::with_capacity(verdicts.len());
        let mut durable_needed = 0u64;
        let appended = if fresh.is_empty() {
            None
        } else {
            let to_write = if fresh.len() == verdicts.len() {
                batches.clone()
            } else {
                let mut bytes = Vec::new();
                for &i in &fresh {
                    let (h, at) = batches.headers()[i];
                    bytes.extend_from_slice(&batches.bytes()[at..at + h.size()]);
                }
                ValidatedBatches::new(
                    bytes,
                    &BatchLimits {
                        batch_bytes_max: usize::MAX,
                        uncompressed_bytes_max: 0,
                    },
                )
                .map_err(StorageError::from)?
            };
            let mut log = lock(&self.log);
            // Fenced under the log's lock: once a fetcher follows the partition here (this
            // broker was deposed while the request was on its way), a late append would
            // put this epoch's batch under offsets the new leader gives other batches, and
            // the follower — which reported its log end before it — would keep it.
            // Nor may a batch go under an epoch older than one the log already holds.
            let older = log
                .leader_epochs()
                .latest_epoch()
                .is_some_and(|latest| leader_epoch < latest);
            if log.replica_token().is_some() || self.is_deposed() || older {
                return Err(ProduceError::Deposed(self.tp.dir_name()));
            }
            let info = log.append(to_write, leader_epoch, now)?;
            self.table_end
                .store(log.log_end_offset(), std::sync::atomic::Ordering::Relaxed);
            Some(info)
        };
        let mut fresh_iter = appended.iter().flat_map(|i| i.batches.iter());
        for (i, v) in verdicts.iter().enumerate() {
            match v {
                Verdict::Duplicate(b) => {
                    durable_needed = durable_needed.max(b.last_offset + 1);
                    acks_out.push(BatchAck {
                        base_offset: b.base_offset,
                        last_offset: b.last_offset,
                        log_append_time_ms: b.append_time_ms,
                        duplicate: true,
                    });
                }
                Verdict::Append => {
                    let Some(&(base, last)) = fresh_iter.next() else {
                        break;
                    };
                    let mut h: BatchHeader = batches.headers()[i].0;
                    h.base_offset = base as i64;
                    producers.record(&h, now);
                    durable_needed = durable_needed.max(last + 1);
                    acks_out.push(BatchAck {
                        base_offset: base,
                        last_offset: last,
                        log_append_time_ms: now,
                        duplicate: false,
                    });
                }
            }
        }
        drop(producers);
        if appended.is_some() {
            // A later batch of the same producer may be waiting for this one (it goes on
            // while this one waits for its group commit).
            self.recorded.notify_waiters();
        }
        if self.flush == FlushPolicy::Always {
            // Group commit; with acks=0 the HTTP layer replied already, but the data still
            // becomes visible to consumers only once durable.
            self.gc.wait_durable(&self.log, durable_needed)?;
            self.advance_high_watermark(true);
        } else {
            self.advance_high_watermark(false);
        }
        Ok(acks_out)
    }

    /// Moves the high watermark to the smallest log end among the in-sync replicas — this
    /// broker's counting only what is durable (`durable_only`) — never backwards, and wakes
    /// waiting fetches and acks=all produces.
    fn advance_high_watermark(&self, durable_only: bool) {
        let mut moved = false;
        let hw = {
            let mut repl = lock(&self.repl);
            let mut l = lock(&self.log);
            let end = l.log_end_offset();
            let now = std::time::Instant::now();
            for f in repl.followers.values_mut() {
                if f.leo < end && f.behind_since.is_none() {
                    f.behind_since = Some(now);
                }
            }
            moved |= self.leo.send_if_modified(|cur| {
                let changed = *cur != end;
                *cur = end;
                changed
            });
            let mut target = if durable_only {
                l.flushed_offset()
            } else {
                end
            };
            for r in repl.isr.iter().chain(&repl.pending_add) {
                if *r == repl.node_id {
                    continue;
                }
                // A follower not heard from yet holds the watermark where it is.
                let leo = repl.followers.get(r).map_or(0, |f| f.leo);
                target = target.min(leo);
            }
            if target > l.high_watermark() {
                l.set_high_watermark(target);
            }
            l.high_watermark()
        };
        moved |= self.hw.send_if_modified(|cur| {
            if hw > *cur {
                *cur = hw;
                true
            } else {
                false
            }
        });
        if moved {
            self.signal_sessions();
        }
    }

    /// Registers a follower's fetch session to hear of this partition's changes.
    pub fn listen(&self, signal: &Arc<SessionSignal>) {
        let mut ls = lock(&self.listeners);
        ls.retain(|w| w.strong_count() > 0);
        if !ls
            .iter()
            .any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(signal)))
        {
            ls.push(Arc::downgrade(signal));
        }
    }

    fn signal_sessions(&self) {
        let ls: Vec<Arc<SessionSignal>> = lock(&self.listeners)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for s in ls {
            s.mark(&self.tp);
        }
    }

    /// Sets this broker's id and the ISR from the metadata.
    pub fn set_isr(&self, node_id: u64, isr: &[u64]) {
        let changed = {
            let mut r = lock(&self.repl);
            r.node_id = node_id;
            let changed = r.isr != isr;
            if changed {
                r.isr = isr.to_vec();
                // Additions the metadata now shows are no longer pending.
                r.pending_add.retain(|id| !isr.contains(id));
            }
            changed
        };
        if changed {
            // A smaller ISR may let the watermark move.
            self.advance_high_watermark(self.flush == FlushPolicy::Always);
        }
    }

    /// Before proposing to add `ids` to the ISR: count them for the high watermark now.
    pub fn begin_isr_add(&self, ids: &[u64]) {
        let mut r = lock(&self.repl);
        for id in ids {
            if !r.isr.contains(id) && !r.pending_add.contains(id) {
                r.pending_add.push(*id);
            }
        }
    }

    /// The proposal failed: stop waiting for those followers.
    pub fn abort_isr_add(&self) {
        lock(&self.repl).pending_add.clear();
        self.advance_high_watermark(self.flush == FlushPolicy::Always);
    }

    /// The ISR as this leader knows it.
    pub fn isr(&self) -> Vec<u64> {
        lock(&self.repl).isr.clone()
    }

    /// How many ISR members this leader has itself seen caught up within `lag_max` (itself
    /// included). Smaller than the recorded ISR when followers went silent and the
    /// controller could not (yet) record the shrink — e.g. without a quorum.
    pub fn live_isr_count(&self, lag_max: std::time::Duration) -> usize {
        let r = lock(&self.repl);
        let now = std::time::Instant::now();
        r.isr
            .iter()
            .filter(|id| {
                **id == r.node_id
                    || match r.followers.get(id) {
                        Some(f) => now.duration_since(f.caught_up_at()) <= lag_max,
                        None => now.duration_since(r.started) <= lag_max,
                    }
            })
            .count()
    }

    /// A follower fetched from `offset`: everything below it is in its log. `session`: the
    /// fetch session it fetches in (its later requests count as fetches at `offset`).
    pub fn follower_fetched(
        &self,
        replica: u64,
        offset: u64,
        session: Option<&Arc<SessionSignal>>,
    ) {
        {
            let end = lock(&self.log).log_end_offset();
            let mut r = lock(&self.repl);
            let now = std::time::Instant::now();
            let started = r.started;
            let f = r.followers.entry(replica).or_insert(Follower {
                leo: offset,
                leader_end_at_last_fetch: end,
                // Not caught up until it shows it (a first fetch may be far behind).
                caught_up: started,
                session: None,
                behind_since: None,
            });
            if let Some(s) = session {
                // Never back to an older session (an abandoned request finishing late).
                if f.session.as_ref().is_some_and(|(id, _)| *id > s.id) {
                    return;
                }
                f.session = Some((s.id, Arc::downgrade(s)));
            }
            f.leo = offset;
            if offset >= end {
                f.behind_since = None;
            } else if f.behind_since.is_none() {
                f.behind_since = Some(now);
            }
            if offset >= end || offset >= f.leader_end_at_last_fetch {
                f.caught_up = now;
            }
            f.leader_end_at_last_fetch = end;
        }
        self.advance_high_watermark(self.flush == FlushPolicy::Always);
    }

    /// A follower dropped this partition from its fetch session: its requests no longer
    /// count as fetches here.
    pub fn leave_session(&self, replica: u64, session: u64) {
        if let Some(f) = lock(&self.repl).followers.get_mut(&replica)
            && f.session.as_ref().is_some_and(|(id, _)| *id == session)
        {
            f.session = None;
        }
    }

    /// The ISR this leader wants: itself, the members still within `lag_max` of catching
    /// up, and the followers that have caught up with the high watermark. `None` when it
    /// is the current one.
    pub fn wanted_isr(
        &self,
        replicas: &[u64],
        lag_max: std::time::Duration,
        epoch_start: u64,
    ) -> Option<Vec<u64>> {
        let hw = self.high_watermark();
        let r = lock(&self.repl);
        let now = std::time::Instant::now();
        let wanted: Vec<u64> = replicas
            .iter()
            .copied()
            .filter(|id| {
                if *id == r.node_id {
                    return true;
                }
                match r.followers.get(id) {
                    // Never heard from since this leader started: keep an ISR member
                    // for one lag period, do not add others.
                    None => r.isr.contains(id) && now.duration_since(r.started) <= lag_max,
                    Some(f) if r.isr.contains(id) => {
                        now.duration_since(f.caught_up_at()) <= lag_max
                    }
                    Some(f) => {
                        f.leo >= hw.max(epoch_start)
                            && now.duration_since(f.caught_up_at()) <= lag_max
                    }
                }
            })
            .collect();
        let mut a = wanted.clone();
        let mut b = r.isr.clone();
        a.sort_unstable();
        b.sort_unstable();
        (a != b).then_some(wanted)
    }

    /// Marks the partition as no longer led here.
    pub fn depose(&self) {
        self.deposed.send_replace(true);
        // Sessions answer the follower that the partition left them.
        self.signal_sessions();
    }

    /// The leader epoch this state serves (see [`Partition::set_led_epoch`]).
    pub fn led_epoch(&self) -> i32 {
        self.led_epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Records the leader epoch this state was opened for.
    pub fn set_led_epoch(&self, epoch: i32) {
        self.led_epoch
            .store(epoch, std::sync::atomic::Ordering::Release);
    }

    pub fn is_deposed(&self) -> bool {
        *self.deposed.borrow()
    }

    /// Resolves when the partition stops being led here.
    pub fn watch_deposed(&self) -> watch::Receiver<bool> {
        self.deposed.subscribe()
    }

    /// Watches the log end (followers long-poll on it).
    pub fn watch_log_end(&self) -> watch::Receiver<u64> {
        self.leo.subscribe()
    }

    /// Reads for a follower: whole batches from `offset` up to the log end.
    pub fn read_for_replica(
        &self,
        offset: u64,
        max_bytes: usize,
    ) -> Result<ReadResult, StorageError> {
        let l = lock(&self.log);
        let end = l.log_end_offset();
        l.read(offset, max_bytes, Some(end))
    }

    /// Fsyncs now (flush `interval` calls this on a timer) and publishes the result.
    /// fsyncs issued for this partition's log since it opened.
    pub fn fsyncs(&self) -> u64 {
        self.gc.fsyncs()
    }

    pub fn flush_now(&self) -> Result<(), StorageError> {
        let end = lock(&self.log).log_end_offset();
        self.gc.wait_durable(&self.log, end)?;
        if self.flush != FlushPolicy::Always {
            return Ok(());
        }
        self.advance_high_watermark(true);
        Ok(())
    }

    /// Reads whole batches from `offset`, below the high watermark.
    pub fn fetch(&self, offset: u64, max_bytes: usize) -> Result<ReadResult, StorageError> {
        lock(&self.log).read(offset, max_bytes, None)
    }

    /// `(epoch, last sequence, last offset)` of `producer_id`'s last batch below the high
    /// watermark here.
    pub fn last_persisted(&self, producer_id: i64) -> Option<(i16, i32, u64)> {
        let hw = self.high_watermark();
        lock(&self.producers).last_persisted(producer_id, hw)
    }

    /// Writes a producer snapshot at the current log end and checkpoints the recovery point;
    /// also expires idle producers.
    /// Nothing is written for a partition where nothing happened since the last one.
    pub fn checkpoint(&self, producer_expiration_ms: i64) -> Result<(), StorageError> {
        let mut producers = lock(&self.producers);
        let expired = producers.expire(shared::sys::expiry_now_ms(), producer_expiration_ms);
        let mut l = lock(&self.log);
        l.checkpoint()?;
        let end = l.log_end_offset();
        let dir = l.dir().to_path_buf();
        let ours = end == self.table_end.load(std::sync::atomic::Ordering::Relaxed);
        drop(l);
        if !ours {
            // Found by the fault campaign (seed 409): a deposed leader's checkpoint wrote
            // its table as the state at an end its fetcher had moved; leading again, the
            // broker trusted it and stored a retried batch a second time.
            tracing::debug!(partition = %self.tp.dir_name(), end, "log moved under another writer: no producer snapshot");
            return Ok(());
        }
        let mut at = lock(&self.snapshot_at);
        if expired == 0 && *at == Some(end) {
            return Ok(());
        }
        producer_state::write_snapshot(&dir, end, &producers)?;
        *at = Some(end);
        Ok(())
    }

    /// Waits, at most `max`, while `h` is ahead of its producer's next expected sequence:
    /// a client with several batches of a partition in flight on different connections
    /// (the agent) sees them arrive in any order, and without this the later ones would be
    /// refused `out_of_order_sequence` and sent again. A real gap is refused after the wait.
    pub async fn wait_for_earlier(&self, h: &BatchHeader, max: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            let recorded = self.recorded.notified();
            tokio::pin!(recorded);
            recorded.as_mut().enable();
            if !lock(&self.producers).ahead_of_next(h) || self.is_deposed() {
                return;
            }
            if tokio::time::timeout_at(deadline, recorded).await.is_err() {
                return;
            }
        }
    }

    /// Number of producers tracked.
    pub fn producer_count(&self) -> usize {
        lock(&self.producers).len()
    }

    /// Producers whose last durable batch is below the high watermark.
    pub fn active_producers(&self) -> Vec<(i64, i16, i32, i64)> {
        let hw = self.high_watermark();
        lock(&self.producers).active(hw)
    }
}

/// Shared handle.
pub type PartitionRef = Arc<Partition>;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::storage::{LogConfig, LogManager};
    use shared::{BatchBuilder, BatchEncoder, Compression, ProducerStamp};

    /// An idempotent batch of producer 7 whose records carry a 2023 timestamp.
    fn old_batch(seq: i32) -> ValidatedBatches {
        let mut b = BatchBuilder::new();
        b.push(1_700_000_000_000, None, Some(b"old".as_slice()), &[]);
        let stamp = ProducerStamp {
            producer_id: 7,
            producer_epoch: 0,
            base_sequence: seq,
        };
        let bytes = BatchEncoder::new(Compression::None, 1)
            .unwrap()
            .encode(&b, stamp)
            .unwrap();
        ValidatedBatches::new(bytes, &BatchLimits::default()).unwrap()
    }

    /// A follower's checkpoint writes a producer snapshot at its log end, built from the
    /// previous one plus what it copied since; promoted, it replays nothing (it used to
    /// scan its whole log), and knows every producer as well as a full replay would.
    #[test]
    fn a_follower_snapshots_its_producers_so_a_promoted_one_replays_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogManager::open(&[dir.path().to_path_buf()], LogConfig::default(), 8).unwrap();
        let tp = TopicPartition::new("t", 0);
        let log = logs.get_or_create(&tp, None).unwrap();
        let week = 7 * 24 * 3600 * 1000;
        // Copied from a leader, as a follower's fetcher does.
        for seq in 0..3 {
            lock(&log).append(old_batch(seq), 0, now_ms()).unwrap();
        }
        assert!(snapshot_follower(&log, week).unwrap());
        assert!(!snapshot_follower(&log, week).unwrap(), "nothing new: none");
        for seq in 3..5 {
            lock(&log).append(old_batch(seq), 0, now_ms()).unwrap();
        }
        assert!(snapshot_follower(&log, week).unwrap());
        let (start, end) = {
            let l = lock(&log);
            (l.log_start_offset(), l.log_end_offset())
        };
        let (from, table) =
            producer_state::load_snapshot(dir.path().join("t-0").as_path(), start, end);
        assert_eq!(
            from, end,
            "a promoted follower would replay from {from}, not {end}"
        );
        let mut full = ProducerTable::default();
        replay(&lock(&log), start, end, &mut full, 0).unwrap();
        assert_eq!(
            table.last_persisted(7, end),
            full.last_persisted(7, end),
            "the snapshot knows the producer as a full replay does"
        );
        // Promoted: the retry of the last batch is a duplicate.
        let p = Partition::open(tp, log, false).unwrap();
        let acks = p.produce(old_batch(4), 1).unwrap();
        assert!(acks[0].duplicate && acks[0].base_offset == 4, "{acks:?}");
    }

    /// A leader that rebuilt its producer table from the log (a promoted follower, a
    /// restart) still knows a producer whose records carry old timestamps after its next
    /// checkpoint: the retry of its last batch is a duplicate, not a new batch.
    #[test]
    fn a_rebuilt_producer_with_old_record_timestamps_survives_the_next_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogManager::open(&[dir.path().to_path_buf()], LogConfig::default(), 8).unwrap();
        let tp = TopicPartition::new("t", 0);
        let log = logs.get_or_create(&tp, None).unwrap();
        // Written by another leader (this broker copied it as a follower).
        lock(&log).append(old_batch(0), 0, now_ms()).unwrap();
        let p = Partition::open(tp, log, false).unwrap();
        let week = 7 * 24 * 3600 * 1000;
        p.checkpoint(week).unwrap();
        let acks = p.produce(old_batch(0), 1).unwrap();
        assert!(
            acks[0].duplicate && acks[0].base_offset == 0,
            "the retry was stored again: {acks:?}"
        );
    }
}
