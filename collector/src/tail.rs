//! `collector tail --group G`: a consumer-group member that prints records to stdout.
//!
//! Tasks and their channels (every queue bounded):
//! - the **member loop** (this module's `run`) heartbeats, starts and stops fetchers as the
//!   assignment changes, and commits what the writer has flushed;
//! - one **fetcher** per owned partition long-polls the collector and keeps the next fetch in
//!   flight while it renders the previous reply (each batch decompressed once), sending
//!   rendered chunks to the writer over a bounded channel;
//! - the **writer** thread writes chunks to stdout in order and tracks, per partition, the
//!   next offset whose records are all flushed. Only those positions are committed, so what
//!   is committed has been printed (at-least-once to stdout), and a graceful stop commits
//!   exactly what was printed (nothing lost, nothing repeated).
//!
//! A partition the coordinator takes away is stopped, its flushed position committed, and
//! only then reported as given up.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use api::{CommitRequest, ErrorCode, HeartbeatRequest, JOIN_EPOCH, LEAVE_EPOCH, OffsetEntry};
use client::{ClientError, CollectorClient};
use shared::{BatchIter, BatchLimits, DecodedRecords};
use tokio::sync::{mpsc, oneshot};

use crate::groups::coordinator::{from_wire, to_wire};

type Tp = (String, u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StartFrom {
    Earliest,
    Latest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Raw,
    Json,
}

#[derive(Debug, Clone)]
pub struct TailOptions {
    /// Base URLs of the collectors, the one that answered first in front: the member moves
    /// to the next when one stops answering (its coordinator or bootstrap node died).
    pub collectors: Vec<String>,
    /// Timeouts and TLS of the connections to the collectors.
    pub client: client::ClientConfig,
    pub group: String,
    pub topic: String,
    pub from: StartFrom,
    pub format: Format,
    pub follow: bool,
    pub stats: bool,
    /// How often flushed positions are committed.
    pub commit_interval: Duration,
    /// Largest fetch reply asked for.
    pub fetch_bytes: u64,
    /// Long-poll wait of each fetch.
    pub fetch_wait: Duration,
    /// Rendered chunks queued between the fetchers and the writer.
    pub queue_chunks: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
    #[error("{0}")]
    Fatal(String),
}

/// A failed call to the collector, and what the member was doing.
#[derive(Debug)]
struct ApiErr {
    error: ClientError,
    /// "heartbeat", "reading committed offsets", …
    during: Option<&'static str>,
}

impl ApiErr {
    fn during(mut self, what: &'static str) -> Self {
        self.during.get_or_insert(what);
        self
    }

    fn code(&self) -> Option<ErrorCode> {
        self.error.code()
    }
}

impl From<ClientError> for ApiErr {
    fn from(error: ClientError) -> Self {
        Self {
            error,
            during: None,
        }
    }
}

impl std::fmt::Display for ApiErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(what) = self.during {
            write!(f, "{what}: ")?;
        }
        write!(f, "{}", self.error)
    }
}

/// `partition -> (log start, high watermark)` of a topic, as each leader sees it.
async fn partition_offsets(
    api: &CollectorClient,
    topic: &str,
) -> Result<BTreeMap<u32, (u64, u64)>, ApiErr> {
    Ok(api
        .log_offsets(topic)
        .await?
        .into_iter()
        .map(|(p, o)| (p, (o.log_start_offset, o.high_watermark)))
        .collect())
}

/// What the fetchers send the writer.
enum Msg {
    /// Records rendered for stdout; `next_offset` is the offset after the last one.
    Chunk {
        tp: Tp,
        generation: u64,
        bytes: Vec<u8>,
        records: u64,
        next_offset: u64,
    },
    /// Start tracking a partition at `offset`.
    Activate {
        tp: Tp,
        generation: u64,
        offset: u64,
    },
    /// Stop a partition: drop its queued chunks, reply with its flushed position.
    Revoke {
        tp: Tp,
        reply: oneshot::Sender<Option<u64>>,
    },
    /// Flush, then reply with every flushed position.
    Positions {
        reply: oneshot::Sender<BTreeMap<Tp, u64>>,
    },
}

#[derive(Debug, Default)]
struct Counters {
    records: AtomicU64,
    bytes: AtomicU64,
    /// Set when stdout fails (e.g. the reader of the pipe went away).
    closed: AtomicBool,
}

/// The writer thread: the only code touching stdout.
fn writer(
    mut rx: mpsc::Receiver<Msg>,
    counters: Arc<Counters>,
    closed: tokio::sync::watch::Sender<bool>,
) {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    // tp -> (generation, written position, flushed position)
    let mut parts: BTreeMap<Tp, (u64, u64, u64)> = BTreeMap::new();
    let mut failed = false;
    let flush = |out: &mut std::io::BufWriter<std::io::StdoutLock<'_>>,
                 parts: &mut BTreeMap<Tp, (u64, u64, u64)>,
                 failed: &mut bool| {
        if *failed {
            return;
        }
        if out.flush().is_ok() {
            for v in parts.values_mut() {
                v.2 = v.1;
            }
        } else {
            *failed = true;
        }
    };
    loop {
        let msg = match rx.try_recv() {
            Ok(m) => m,
            Err(mpsc::error::TryRecvError::Empty) => {
                // Nothing queued: flush what was written before waiting.
                flush(&mut out, &mut parts, &mut failed);
                match rx.blocking_recv() {
                    Some(m) => m,
                    None => break,
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
        };
        match msg {
            Msg::Chunk {
                tp,
                generation,
                bytes,
                records,
                next_offset,
            } => {
                let Some(state) = parts.get_mut(&tp) else {
                    continue;
                };
                if state.0 != generation || failed {
                    continue;
                }
                if out.write_all(&bytes).is_err() {
                    failed = true;
                } else {
                    state.1 = next_offset;
                    counters.records.fetch_add(records, Ordering::Relaxed);
                    counters
                        .bytes
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                }
            }
            Msg::Activate {
                tp,
                generation,
                offset,
            } => {
                parts.insert(tp, (generation, offset, offset));
            }
            Msg::Revoke { tp, reply } => {
                flush(&mut out, &mut parts, &mut failed);
                let _ = reply.send(parts.remove(&tp).map(|v| v.2));
            }
            Msg::Positions { reply } => {
                flush(&mut out, &mut parts, &mut failed);
                let _ = reply.send(parts.iter().map(|(k, v)| (k.clone(), v.2)).collect());
            }
        }
        if failed && !counters.closed.swap(true, Ordering::SeqCst) {
            let _ = closed.send(true);
        }
    }
    let _ = out.flush();
}

/// Renders the records at or after `from` of a fetch reply. Returns the bytes, the record
/// count and the offset after the last batch.
fn render(
    topic: &str,
    partition: u32,
    reply: &[u8],
    from: u64,
    format: Format,
    limits: &BatchLimits,
) -> Result<(Vec<u8>, u64, u64), String> {
    let mut out = Vec::with_capacity(reply.len() * 4);
    let mut records = 0u64;
    let mut next = from;
    for item in BatchIter::new(reply, *limits) {
        let (h, batch) = item.map_err(|e| format!("bad batch from the collector: {e}"))?;
        let d = DecodedRecords::new(batch, limits)
            .map_err(|e| format!("bad batch from the collector: {e}"))?;
        for r in d.iter() {
            let offset = h.base_offset as u64 + r.offset_delta as u64;
            if offset < from {
                continue;
            }
            records += 1;
            match format {
                Format::Raw => {
                    out.extend_from_slice(r.value.unwrap_or_default());
                    out.push(b'\n');
                }
                Format::Json => {
                    let rec = api::RecordJson::new(
                        offset,
                        h.base_timestamp.wrapping_add(r.timestamp_delta),
                        r.key,
                        r.value,
                        r.headers().map(|hd| (hd.key, hd.value)),
                    )
                    .located(topic, partition);
                    serde_json::to_writer(&mut out, &rec).map_err(|e| e.to_string())?;
                    out.push(b'\n');
                }
            }
        }
        next = next.max(h.next_offset() as u64);
    }
    Ok((out, records, next))
}

/// Aborts a spawned task when dropped (so aborting a fetcher aborts its prefetch too).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type FetchReply = Result<(bytes::Bytes, u64), ApiErr>;

fn spawn_fetch(
    api: &Arc<CollectorClient>,
    base: &str,
    tp: &Tp,
    offset: u64,
    opts: &TailOptions,
) -> AbortOnDrop<FetchReply> {
    let q = api::FetchQuery {
        offset,
        max_bytes: Some(opts.fetch_bytes),
        max_wait_ms: Some(opts.fetch_wait.as_millis() as u64),
    };
    let (api, base, tp) = (api.clone(), base.to_owned(), tp.clone());
    AbortOnDrop(tokio::spawn(async move {
        let r = api.fetch_at(&base, &tp.0, tp.1, &q).await?;
        Ok((r.bytes, r.high_watermark))
    }))
}

/// One partition's fetch loop: runs until aborted.
async fn fetcher(
    api: Arc<CollectorClient>,
    tp: Tp,
    generation: u64,
    mut offset: u64,
    opts: Arc<TailOptions>,
    tx: mpsc::Sender<Msg>,
    hw: Arc<AtomicU64>,
) {
    let limits = BatchLimits {
        batch_bytes_max: crate::storage::segment::BATCH_BYTES_MAX_ON_DISK,
        uncompressed_bytes_max: BatchLimits::default().uncompressed_bytes_max,
    };
    let retry = client::RetryPolicy::new(FETCH_RETRY_INITIAL, FETCH_RETRY_MAX);
    let mut delays = retry.delays();
    // Fetch from the partition's leader, found through the bootstrap collector.
    let leader_of = |api: Arc<CollectorClient>, tp: Tp| async move {
        api.topic_leaders(&tp.0)
            .await
            .ok()
            .and_then(|l| l.get(&tp.1).cloned())
            .unwrap_or_else(|| api.bootstrap_base().to_owned())
    };
    let mut base = leader_of(api.clone(), tp.clone()).await;
    let mut pending = spawn_fetch(&api, &base, &tp, offset, &opts);
    loop {
        let reply = match (&mut pending.0).await {
            Ok(r) => r,
            Err(e) => Err(ApiErr::from(ClientError::Setup(format!("fetch task: {e}")))),
        };
        match reply {
            Ok((bytes, high)) => {
                delays = retry.delays();
                hw.store(high, Ordering::Relaxed);
                if bytes.is_empty() {
                    pending = spawn_fetch(&api, &base, &tp, offset, &opts);
                    continue;
                }
                // The next offset comes from the batch headers alone, so the next fetch
                // starts before this reply is decompressed and printed.
                let mut next = offset;
                for item in BatchIter::new(&bytes, limits) {
                    match item {
                        Ok((h, _)) => next = next.max(h.next_offset() as u64),
                        Err(_) => break,
                    }
                }
                if next > offset {
                    pending = spawn_fetch(&api, &base, &tp, next, &opts);
                }
                let rendered = {
                    let (topic, part, format) = (tp.0.clone(), tp.1, opts.format);
                    tokio::task::spawn_blocking(move || {
                        render(&topic, part, &bytes, offset, format, &limits)
                    })
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()))
                };
                match rendered {
                    Ok((out, records, after)) => {
                        let msg = Msg::Chunk {
                            tp: tp.clone(),
                            generation,
                            bytes: out,
                            records,
                            next_offset: after,
                        };
                        if tx.send(msg).await.is_err() {
                            return;
                        }
                        if after != next {
                            // Only when the header scan stopped early (a bad batch).
                            pending = spawn_fetch(&api, &base, &tp, after, &opts);
                        }
                        offset = after;
                    }
                    Err(msg) => {
                        tracing::error!(partition = %format!("{}-{}", tp.0, tp.1), offset, error = %msg, "cannot decode; retrying");
                        tokio::time::sleep(delays.next().unwrap_or(FETCH_RETRY_MAX)).await;
                        pending = spawn_fetch(&api, &base, &tp, offset, &opts);
                    }
                }
            }
            Err(e) if e.code() == Some(ErrorCode::OffsetOutOfRange) => {
                // Retention deleted what the group had not read, or the offset is past the
                // end: move to the nearest valid offset.
                match partition_offsets(&api, &tp.0).await {
                    Ok(parts) => {
                        if let Some((start, high)) = parts.get(&tp.1) {
                            let to = offset.clamp(*start, *high);
                            tracing::warn!(
                                partition = %format!("{}-{}", tp.0, tp.1),
                                offset,
                                to,
                                "offset out of range; moving to the nearest valid offset"
                            );
                            offset = to;
                            let _ = tx
                                .send(Msg::Activate {
                                    tp: tp.clone(),
                                    generation,
                                    offset,
                                })
                                .await;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "reading partition offsets"),
                }
                tokio::time::sleep(delays.next().unwrap_or(FETCH_RETRY_MAX)).await;
                pending = spawn_fetch(&api, &base, &tp, offset, &opts);
            }
            Err(e) => {
                tracing::warn!(partition = %format!("{}-{}", tp.0, tp.1), error = %e, "fetch failed; retrying");
                tokio::time::sleep(delays.next().unwrap_or(FETCH_RETRY_MAX)).await;
                if e.code() == Some(ErrorCode::NotLeader) || e.code().is_none() {
                    // Leadership moved or the broker is gone: ask the metadata again.
                    base = leader_of(api.clone(), tp.clone()).await;
                }
                pending = spawn_fetch(&api, &base, &tp, offset, &opts);
            }
        }
    }
}

/// Pauses between a fetcher's failed rounds, and between failed heartbeats.
const FETCH_RETRY_INITIAL: Duration = Duration::from_millis(100);
const FETCH_RETRY_MAX: Duration = Duration::from_secs(5);
/// Heartbeat period until the coordinator names one.
const FIRST_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Heartbeat period while partitions are still moving (the assignment is not stable).
const UNSTABLE_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(200);
/// How often `--stats` prints.
const STATS_INTERVAL: Duration = Duration::from_secs(5);

struct Owned {
    _task: AbortOnDrop<()>,
    hw: Arc<AtomicU64>,
}

/// Why the member loop stopped.
enum Stop {
    Signal,
    StdoutClosed,
    CaughtUp,
}

struct Member {
    api: Arc<CollectorClient>,
    opts: Arc<TailOptions>,
    tx: mpsc::Sender<Msg>,
    member_id: Option<String>,
    epoch: i32,
    owned: BTreeMap<Tp, Owned>,
    committed: BTreeMap<Tp, u64>,
    next_generation: u64,
    stable: bool,
    heartbeat_interval: Duration,
    client: String,
}

impl Member {
    async fn writer_call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Msg) -> Option<T> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.ok()?;
        rx.await.ok()
    }

    async fn heartbeat(&mut self) -> Result<(), ApiErr> {
        let req = HeartbeatRequest {
            member_id: self.member_id.clone(),
            member_epoch: if self.member_id.is_some() {
                self.epoch
            } else {
                JOIN_EPOCH
            },
            topics: Some(vec![self.opts.topic.clone()]),
            owned: Some(to_wire(&self.owned.keys().cloned().collect())),
            client: Some(self.client.clone()),
        };
        let reply = match self
            .api
            .heartbeat(None, &self.opts.group, &req, false)
            .await
        {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.code(),
                    Some(ErrorCode::UnknownMemberId | ErrorCode::FencedMemberEpoch)
                ) =>
            {
                tracing::warn!(error = %e, "fenced by the group coordinator; rejoining");
                self.drop_all().await;
                // A fenced member rejoins under its id, which frees what the coordinator
                // still counts as its at once; an unknown one (expired) gets a new id.
                if e.code() == Some(ErrorCode::UnknownMemberId) {
                    self.member_id = None;
                }
                self.epoch = JOIN_EPOCH;
                return Ok(());
            }
            Err(e) => return Err(ApiErr::from(e).during("heartbeat")),
        };
        if self.member_id.as_deref() != Some(reply.member_id.as_str()) {
            tracing::info!(member = %reply.member_id, group = %self.opts.group, "joined");
        }
        self.member_id = Some(reply.member_id.clone());
        self.epoch = reply.member_epoch;
        self.stable = reply.stable;
        self.heartbeat_interval = Duration::from_millis(reply.heartbeat_interval_ms.max(50));
        self.apply(from_wire(&reply.assignment)).await
    }

    /// Gives up what is no longer assigned (committing its position first), starts what is new.
    async fn apply(&mut self, target: BTreeSet<Tp>) -> Result<(), ApiErr> {
        let revoked: Vec<Tp> = self
            .owned
            .keys()
            .filter(|tp| !target.contains(*tp))
            .cloned()
            .collect();
        for tp in &revoked {
            // Dropping the fetcher aborts it and its prefetch.
            self.owned.remove(tp);
            let pos = self
                .writer_call(|reply| Msg::Revoke {
                    tp: tp.clone(),
                    reply,
                })
                .await
                .flatten();
            if let Some(pos) = pos {
                let _ = self.commit(BTreeMap::from([(tp.clone(), pos)])).await;
            }
            self.committed.remove(tp);
            tracing::info!(partition = %format!("{}-{}", tp.0, tp.1), "partition revoked");
        }
        let added: Vec<Tp> = target
            .iter()
            .filter(|tp| !self.owned.contains_key(*tp))
            .cloned()
            .collect();
        if !added.is_empty() {
            let committed = self
                .read_committed()
                .await
                .map_err(|e| e.during("reading the group's committed offsets"))?;
            let parts = partition_offsets(&self.api, &self.opts.topic)
                .await
                .map_err(|e| e.during("reading the topic's partition offsets"))?;
            for tp in added {
                let (start, high) = parts.get(&tp.1).copied().unwrap_or((0, 0));
                let offset = match committed.get(&tp) {
                    Some(o) => *o,
                    None => match self.opts.from {
                        StartFrom::Earliest => start,
                        StartFrom::Latest => high,
                    },
                };
                self.next_generation += 1;
                let generation = self.next_generation;
                if self
                    .tx
                    .send(Msg::Activate {
                        tp: tp.clone(),
                        generation,
                        offset,
                    })
                    .await
                    .is_err()
                {
                    return Ok(());
                }
                let hw = Arc::new(AtomicU64::new(high));
                let task = tokio::spawn(fetcher(
                    self.api.clone(),
                    tp.clone(),
                    generation,
                    offset,
                    self.opts.clone(),
                    self.tx.clone(),
                    hw.clone(),
                ));
                tracing::info!(partition = %format!("{}-{}", tp.0, tp.1), offset, "partition assigned");
                self.committed.insert(tp.clone(), offset);
                self.owned.insert(
                    tp,
                    Owned {
                        _task: AbortOnDrop(task),
                        hw,
                    },
                );
            }
        }
        if !revoked.is_empty() {
            // Tell the coordinator at once, so the partitions move without waiting a beat.
            Box::pin(self.heartbeat()).await?;
        }
        Ok(())
    }

    async fn read_committed(&self) -> Result<BTreeMap<Tp, u64>, ApiErr> {
        let reply = self
            .api
            .group_offsets(None, &self.opts.group, false)
            .await?;
        Ok(reply
            .offsets
            .into_iter()
            .map(|o| ((o.topic, o.partition), o.offset))
            .collect())
    }

    /// Commits positions that moved since the last commit.
    async fn commit(&mut self, positions: BTreeMap<Tp, u64>) -> Result<(), ApiErr> {
        let Some(member_id) = self.member_id.clone() else {
            return Ok(());
        };
        let offsets: Vec<OffsetEntry> = positions
            .iter()
            .filter(|(tp, pos)| self.committed.get(*tp).is_none_or(|c| **pos > *c))
            .map(|(tp, pos)| OffsetEntry {
                topic: tp.0.clone(),
                partition: tp.1,
                offset: *pos,
            })
            .collect();
        if offsets.is_empty() {
            return Ok(());
        }
        let req = CommitRequest {
            member_id,
            member_epoch: self.epoch,
            offsets: offsets.clone(),
        };
        match self.api.commit(None, &self.opts.group, &req, false).await {
            Ok(_) => {
                for e in offsets {
                    tracing::debug!(partition = %format!("{}-{}", e.topic, e.partition), offset = e.offset, "committed");
                    self.committed.insert((e.topic, e.partition), e.offset);
                }
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "commit refused or failed");
                Err(e.into())
            }
        }
    }

    async fn commit_flushed(&mut self) -> Result<BTreeMap<Tp, u64>, ApiErr> {
        let positions = self
            .writer_call(|reply| Msg::Positions { reply })
            .await
            .unwrap_or_default();
        let mine: BTreeMap<Tp, u64> = positions
            .into_iter()
            .filter(|(tp, _)| self.owned.contains_key(tp))
            .collect();
        self.commit(mine.clone()).await?;
        Ok(mine)
    }

    /// Stops every fetcher and forgets every partition without committing (after fencing).
    async fn drop_all(&mut self) {
        let tps: Vec<Tp> = self.owned.keys().cloned().collect();
        self.owned.clear();
        for tp in tps {
            let _ = self.writer_call(|reply| Msg::Revoke { tp, reply }).await;
        }
        self.committed.clear();
    }

    async fn leave(&mut self) {
        let Some(member_id) = self.member_id.clone() else {
            return;
        };
        let req = HeartbeatRequest {
            member_id: Some(member_id),
            member_epoch: LEAVE_EPOCH,
            ..Default::default()
        };
        if let Err(e) = self
            .api
            .heartbeat(None, &self.opts.group, &req, false)
            .await
        {
            tracing::warn!(error = %e, "leaving the group failed; the session will expire");
        }
    }
}

async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

/// Runs `collector tail` until a signal, a closed stdout, or (`--no-follow`) catching up.
pub async fn run(opts: TailOptions) -> Result<(), TailError> {
    crate::groups::validate_group(&opts.group).map_err(|e| TailError::Fatal(e.to_string()))?;
    shared::names::validate_topic(&opts.topic).map_err(|e| TailError::Fatal(e.to_string()))?;
    let api = Arc::new(
        CollectorClient::new(&opts.collectors, opts.client.clone())
            .map_err(|e| TailError::Fatal(e.to_string()))?,
    );
    // --no-follow: the high watermarks to reach.
    let goal: Option<BTreeMap<u32, u64>> = if opts.follow {
        None
    } else {
        match partition_offsets(&api, &opts.topic).await {
            Ok(p) => Some(p.into_iter().map(|(k, (_, hw))| (k, hw)).collect()),
            Err(e) if e.code() == Some(ErrorCode::UnknownTopic) => {
                return Err(TailError::UnknownTopic(opts.topic.clone()));
            }
            Err(e) => return Err(TailError::Fatal(format!("reading {}: {e}", opts.topic))),
        }
    };
    let counters = Arc::new(Counters::default());
    let (tx, rx) = mpsc::channel(opts.queue_chunks.max(1));
    let (closed_tx, mut closed_rx) = tokio::sync::watch::channel(false);
    let writer_thread = {
        let counters = counters.clone();
        std::thread::Builder::new()
            .name("tail-writer".into())
            .spawn(move || writer(rx, counters, closed_tx))
            .map_err(|e| TailError::Fatal(e.to_string()))?
    };
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let mut m = Member {
        api,
        opts: Arc::new(opts.clone()),
        tx,
        member_id: None,
        epoch: JOIN_EPOCH,
        owned: BTreeMap::new(),
        committed: BTreeMap::new(),
        next_generation: 0,
        stable: false,
        heartbeat_interval: FIRST_HEARTBEAT_INTERVAL,
        client: format!("{host}/{}", std::process::id()),
    };
    let mut next_beat = tokio::time::Instant::now();
    let beat_retry = client::RetryPolicy::new(FETCH_RETRY_INITIAL, FETCH_RETRY_MAX);
    let mut beat_delays = beat_retry.delays();
    let mut commit_tick = tokio::time::interval_at(
        tokio::time::Instant::now() + opts.commit_interval,
        opts.commit_interval,
    );
    commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stats_tick = tokio::time::interval(STATS_INTERVAL);
    let mut last_stats = (Instant::now(), 0u64, 0u64);
    let sig = signal();
    tokio::pin!(sig);
    let stop = loop {
        tokio::select! {
            () = &mut sig => break Stop::Signal,
            _ = closed_rx.changed() => break Stop::StdoutClosed,
            () = tokio::time::sleep_until(next_beat) => {
                match m.heartbeat().await {
                    Ok(()) => {
                        beat_delays = beat_retry.delays();
                        // While partitions are still moving, ask again soon.
                        let wait = if m.stable { m.heartbeat_interval } else { m.heartbeat_interval.min(UNSTABLE_HEARTBEAT_INTERVAL) };
                        next_beat = tokio::time::Instant::now() + wait;
                    }
                    // Refused credentials or permission: retrying cannot help.
                    Err(e) if matches!(e.code(), Some(ErrorCode::Unauthenticated | ErrorCode::Forbidden)) => {
                        return Err(TailError::Fatal(e.to_string()));
                    }
                    Err(e) => {
                        tracing::warn!("group member: {e}; retrying");
                        next_beat = tokio::time::Instant::now() + beat_delays.next().unwrap_or(FETCH_RETRY_MAX);
                    }
                }
            }
            _ = commit_tick.tick() => {
                let positions = match m.commit_flushed().await {
                    Ok(p) => p,
                    Err(e) if matches!(e.code(), Some(ErrorCode::UnknownMemberId | ErrorCode::FencedMemberEpoch | ErrorCode::NotPartitionOwner)) => {
                        // The next heartbeat sorts out membership.
                        next_beat = tokio::time::Instant::now();
                        continue;
                    }
                    Err(_) => continue,
                };
                if let Some(goal) = &goal
                    && m.stable
                    && m.member_id.is_some()
                    && m.owned.keys().all(|tp| positions.get(tp).copied().unwrap_or(0) >= goal.get(&tp.1).copied().unwrap_or(0))
                {
                    break Stop::CaughtUp;
                }
            }
            _ = stats_tick.tick(), if opts.stats => {
                let (t, r0, b0) = last_stats;
                let (r1, b1) = (counters.records.load(Ordering::Relaxed), counters.bytes.load(Ordering::Relaxed));
                let secs = t.elapsed().as_secs_f64().max(1e-3);
                let lag: u64 = m.owned.iter().map(|(tp, o)| o.hw.load(Ordering::Relaxed).saturating_sub(m.committed.get(tp).copied().unwrap_or(0))).sum();
                eprintln!(
                    "tail: {} partitions, {:.0} records/s, {:.1} MB/s, lag {} records (committed to high watermark)",
                    m.owned.len(), (r1 - r0) as f64 / secs, (b1 - b0) as f64 / secs / 1e6, lag
                );
                last_stats = (Instant::now(), r1, b1);
            }
        }
    };
    // Stop reading, commit exactly what was printed, leave.
    let positions = m
        .writer_call(|reply| Msg::Positions { reply })
        .await
        .unwrap_or_default();
    let mine: BTreeMap<Tp, u64> = positions
        .into_iter()
        .filter(|(tp, _)| m.owned.contains_key(tp))
        .collect();
    m.owned.clear();
    let joined = m.member_id.is_some();
    if let Err(e) = m.commit(mine).await {
        tracing::warn!(error = %e, "final commit failed; records printed since the last commit will be printed again");
    }
    m.leave().await;
    drop(m);
    let _ = writer_thread.join();
    let left = if joined {
        "left the group"
    } else {
        "never joined the group"
    };
    match stop {
        Stop::Signal => tracing::info!("stopped by signal; {left}"),
        Stop::StdoutClosed => tracing::debug!("stdout closed; {left}"),
        Stop::CaughtUp => tracing::debug!("caught up (--no-follow); {left}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::{BatchBuilder, BatchEncoder, Compression};

    #[test]
    fn render_skips_records_before_the_offset_and_formats_json() {
        let mut b = BatchBuilder::new();
        for v in ["a", "b", "c"] {
            b.push(
                1000,
                None,
                Some(v.as_bytes()),
                &[(b"host".as_slice(), b"h".as_slice())],
            );
        }
        let mut enc = BatchEncoder::new(Compression::Zstd, 3).expect("encoder");
        let bytes = enc.encode(&b, shared::ProducerStamp::NONE).expect("encode");
        let limits = BatchLimits::default();
        let (out, n, next) = render("logs", 0, &bytes, 1, Format::Raw, &limits).expect("raw");
        assert_eq!(out, b"b\nc\n");
        assert_eq!((n, next), (2, 3));
        let (out, _, _) = render("logs", 0, &bytes, 2, Format::Json, &limits).expect("json");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("one json line");
        assert_eq!(v["value"], "c");
        assert_eq!(v["offset"], 2);
        assert_eq!(v["headers"]["host"], "h");
        assert_eq!(v["topic"], "logs");
    }
}
