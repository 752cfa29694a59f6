//! Replication, the follower's side, and the leader's ISR upkeep.
//!
//! - [`run`] watches the metadata and keeps one **fetcher per leader broker**: a task that
//!   carries every partition this broker follows there, in one fetch session (see
//!   `sessions.rs` for the leader's side). An idle partition costs no task, timer,
//!   connection or bytes per request; a cluster's replication cost follows its traffic.
//! - A fetcher first truncates each new partition where it may disagree with the leader —
//!   found by asking the leader where the follower's latest leader epoch ends (KIP-101/279,
//!   many partitions per request), never by its own high watermark — then fetches from its
//!   log end, appends the leader's batches unchanged, makes them durable (one `syncfs` for
//!   a data directory when many partitions there took data, else one `fdatasync` each),
//!   and takes `min(leader HW, its log end)` as its HW. Its next request tells the leader
//!   how far it has come.
//! - Fencing: a fetcher writes a partition (append, truncation) only while the log carries
//!   its token (`PartitionLog::replica_token`), checked under the log's lock. A new
//!   fetcher for the partition, or this broker becoming its leader, replaces the token, so
//!   a fetcher that outlived its role — a reply still being applied — cannot write.
//! - [`isr_loop`] (a task of its own, so slow controller proposals never hold up the
//!   fetchers' bookkeeping) shrinks and grows the ISR of the partitions this broker leads.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::Broker;
use crate::controller::state::{CommandResult, IsrChange, MetadataCommand, NodeId};
use crate::storage::log::SyncTarget;
use crate::storage::manager::{SharedLog, TopicPartition};
use crate::storage::{LogConfig, StorageError, ValidatedBatches, durable};
use shared::sys::lock;

/// Bytes a follower asks for per partition in one request.
const REPLICA_FETCH_PARTITION_BYTES: u64 = 8 << 20;
/// Bytes a follower asks for per request, all partitions together.
const REPLICA_FETCH_BYTES: u64 = 32 << 20;
/// How long a follower's fetch waits at the leader when nothing is new.
const REPLICA_FETCH_WAIT_MS: u64 = 500;
/// How long a request opening a session may take: the leader may first open (or create)
/// every partition it lists.
const SESSION_OPEN_TIMEOUT: Duration = Duration::from_secs(120);
/// How often a leader reviews its partitions' ISR.
const ISR_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// ISR change entries proposed to the controller at once.
const ISR_PROPOSALS_IN_FLIGHT: usize = 4;
/// ISR changes carried by one metadata entry.
const ISR_CHANGES_PER_PROPOSAL: usize = 1000;
/// First and longest pause after a failed request (whole fetcher) or a refused partition.
const FOLLOW_RETRY_INITIAL: Duration = Duration::from_millis(100);
const FOLLOW_RETRY_MAX: Duration = Duration::from_secs(2);
/// Epoch-end questions per request.
const EPOCH_ENDS_PER_REQUEST: usize = 2_000;
/// Rounds of epoch-end questions before a follower fetches anyway (each round settles
/// one older epoch; more rounds than this mean a log with that many diverged epochs).
const TRUNCATION_ROUNDS_MAX: u32 = 16;
/// Partitions of one data directory synced in one reply from which one `syncfs` of the
/// directory's filesystem replaces their `fdatasync`s.
const SYNCFS_FROM: usize = 4;

/// Fencing tokens: one per (fetcher, partition) start.
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// What this broker should follow of one leader: partition → leader epoch and topic.
#[derive(Debug, Clone)]
struct Want {
    leader_epoch: i32,
    topic_id: uuid::Uuid,
    config: LogConfig,
}

impl Want {
    fn same(&self, other: &Want) -> bool {
        self.leader_epoch == other.leader_epoch && self.topic_id == other.topic_id
    }
}

/// A fetcher's orders, written by [`reconcile`], read by the fetcher when `generation`
/// moved.
#[derive(Debug, Default)]
struct Orders {
    wanted: Mutex<HashMap<TopicPartition, Want>>,
    generation: AtomicU64,
    changed: tokio::sync::Notify,
}

struct Fetcher {
    address: String,
    orders: Arc<Orders>,
    task: tokio::task::JoinHandle<()>,
}

/// Runs until `stop` changes.
pub async fn run(broker: Arc<Broker>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let isr = tokio::spawn(isr_loop(broker.clone(), stop.clone()));
    let mut meta = broker.controller.subscribe();
    let mut fetchers: HashMap<NodeId, Fetcher> = HashMap::new();
    let mut led: HashSet<TopicPartition> = HashSet::new();
    // The metadata the deleted-topics sweep last saw.
    let mut swept: Option<Arc<crate::controller::state::MetadataState>> = None;
    loop {
        reconcile(&broker, &mut fetchers, &mut led);
        let now = broker.controller.metadata();
        if swept.as_ref().is_none_or(|s| !Arc::ptr_eq(s, &now)) {
            broker.drop_deleted_topics();
            swept = Some(now);
        }
        tokio::select! {
            _ = stop.changed() => break,
            r = meta.changed() => if r.is_err() { break },
        }
    }
    for (_, f) in fetchers {
        f.task.abort();
    }
    isr.abort();
}

/// Hands every followed partition to the fetcher of its leader; drops the leader state of
/// partitions no longer led here.
fn reconcile(
    broker: &Arc<Broker>,
    fetchers: &mut HashMap<NodeId, Fetcher>,
    led: &mut HashSet<TopicPartition>,
) {
    let me = broker.config.node_id;
    let meta = broker.controller.metadata();
    if !broker.registered_in(&meta) {
        // Older metadata than this start: keep things as they are until it catches up.
        return;
    }
    let mut wanted: HashMap<NodeId, (String, HashMap<TopicPartition, Want>)> = HashMap::new();
    let mut now_led = HashSet::new();
    for t in meta.topics.values() {
        let mut config = None;
        for p in &t.partitions {
            let tp = TopicPartition::new(&t.name, p.partition);
            if p.leader == me {
                now_led.insert(tp);
                continue;
            }
            // Not (or no longer) the leader here: drop the leader state, keep the log.
            broker.forget_leadership(&tp);
            if !p.replicas.contains(&me) {
                continue;
            }
            let Some(b) = meta.brokers.get(&p.leader) else {
                continue;
            };
            if b.fenced {
                continue;
            }
            let config = config
                .get_or_insert_with(|| broker.log_config(&t.configs))
                .clone();
            wanted
                .entry(p.leader)
                .or_insert_with(|| (b.address.clone(), HashMap::new()))
                .1
                .insert(
                    tp,
                    Want {
                        leader_epoch: p.leader_epoch,
                        topic_id: t.topic_id(),
                        config,
                    },
                );
        }
    }
    // New leaderships: followers long-polling here may want to add them to their sessions.
    if now_led.iter().any(|tp| !led.contains(tp)) {
        broker.sessions.wake_all();
    }
    *led = now_led;
    fetchers.retain(|leader, f| {
        let keep = wanted.get(leader).is_some_and(|(a, _)| *a == f.address);
        if !keep {
            f.task.abort();
        }
        keep
    });
    for (leader, (address, parts)) in wanted {
        let f = fetchers.entry(leader).or_insert_with(|| {
            let orders = Arc::new(Orders::default());
            let task = tokio::spawn(fetch_loop(broker.clone(), address.clone(), orders.clone()));
            Fetcher {
                address,
                orders,
                task,
            }
        });
        let mut cur = lock(&f.orders.wanted);
        let same = cur.len() == parts.len()
            && parts
                .iter()
                .all(|(tp, w)| cur.get(tp).is_some_and(|c| c.same(w)));
        if !same {
            *cur = parts;
            drop(cur);
            f.orders.generation.fetch_add(1, Ordering::Relaxed);
            f.orders.changed.notify_one();
        }
    }
}

/// As a leader: shrinks the ISR of partitions whose followers fell behind, grows it when
/// they caught up. The controller refuses a change if this broker's view is stale.
pub async fn isr_loop(broker: Arc<Broker>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(ISR_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => maintain_isr(&broker).await,
        }
    }
}

async fn maintain_isr(broker: &Arc<Broker>) {
    let me = broker.config.node_id;
    let meta = broker.controller.metadata();
    if !broker.registered_in(&meta) {
        return;
    }
    let mut changes = Vec::new();
    for part in broker.open_partitions() {
        let Some(pm) = meta
            .topics
            .get(&part.tp.topic)
            .and_then(|t| t.partitions.get(part.tp.partition as usize))
        else {
            continue;
        };
        if pm.leader != me || pm.replicas.len() < 2 {
            continue;
        }
        part.set_isr(me, &pm.isr);
        // Fenced brokers (dead, or in controlled shutdown) are not candidates.
        let candidates: Vec<NodeId> = pm
            .replicas
            .iter()
            .copied()
            .filter(|r| meta.brokers.get(r).is_some_and(|b| !b.fenced))
            .collect();
        // A follower joins only with everything since this leader's epoch began.
        let epoch_start = lock(part.log())
            .leader_epochs()
            .entries()
            .last()
            .map_or(0, |(_, start)| *start);
        let Some(isr) = part.wanted_isr(&candidates, broker.config.replica_lag_max, epoch_start)
        else {
            continue;
        };
        tracing::info!(partition = %part.tp.dir_name(), from = %ids(&pm.isr), to = %ids(&isr), "changing the ISR");
        let added: Vec<NodeId> = isr
            .iter()
            .copied()
            .filter(|r| !pm.isr.contains(r))
            .collect();
        part.begin_isr_add(&added);
        let change = IsrChange {
            topic: part.tp.topic.clone(),
            partition: part.tp.partition,
            leader: me,
            leader_epoch: pm.leader_epoch,
            partition_epoch: pm.partition_epoch,
            isr,
        };
        changes.push((part, change));
    }
    // Many changes share one metadata entry (one Raft round and fsync).
    let mut chunks = Vec::new();
    while !changes.is_empty() {
        let rest = changes.split_off(changes.len().min(ISR_CHANGES_PER_PROPOSAL));
        chunks.push(std::mem::replace(&mut changes, rest));
    }
    futures::stream::iter(chunks)
        .for_each_concurrent(ISR_PROPOSALS_IN_FLIGHT, |chunk| async move {
            let (parts, changes): (Vec<_>, Vec<_>) = chunk.into_iter().unzip();
            let results = match broker
                .controller
                .propose(MetadataCommand::AlterIsrs { changes })
                .await
            {
                Ok(CommandResult::Each(results)) if results.len() == parts.len() => results,
                Ok(other) => {
                    tracing::warn!(result = ?other, "ISR changes: unexpected answer");
                    for part in &parts {
                        part.abort_isr_add();
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(partitions = parts.len(), error = %e, "ISR changes failed");
                    for part in &parts {
                        part.abort_isr_add();
                    }
                    return;
                }
            };
            for (part, result) in parts.iter().zip(results) {
                if result != CommandResult::Done {
                    part.abort_isr_add();
                    tracing::info!(partition = %part.tp.dir_name(), result = ?result, "ISR change refused");
                }
            }
        })
        .await;
}

#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error("{0}")]
    Peer(#[from] client::ClientError),
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Batch(#[from] shared::BatchError),
    #[error("{0}")]
    Internal(String),
    /// Another fetcher, or this broker as leader, took the partition.
    #[error("fenced: the partition has a newer owner")]
    Fenced,
}

/// Where a followed partition stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Ask the leader where this log's latest epoch ends; `round` counts the questions.
    Truncate { round: u32 },
    /// In the session.
    Fetch,
    /// Refused by the leader (or a local failure): try again from truncation at `at`.
    Wait { at: Instant },
}

struct Followed {
    want: Want,
    log: SharedLog,
    token: u64,
    stage: Stage,
    /// This log's end, as this fetcher (its only writer) last left it.
    end: u64,
    /// The offset last told the leader in this session (`None`: not in the session).
    reported: Option<u64>,
    /// Next pause after a refusal.
    backoff: Duration,
}

impl Followed {
    fn refused(&mut self) {
        self.stage = Stage::Wait {
            at: Instant::now() + self.backoff,
        };
        self.backoff = (self.backoff * 2).min(FOLLOW_RETRY_MAX);
        self.reported = None;
    }
}

/// A fetcher's state.
struct State {
    broker: Arc<Broker>,
    base: String,
    parts: HashMap<TopicPartition, Followed>,
    generation: u64,
    session_id: u64,
    session_epoch: u64,
    /// Partitions left since the last request, to be dropped from the session.
    forgotten: Vec<api::PartitionQuery>,
}

/// One leader broker's fetcher: every partition followed there, in one session.
async fn fetch_loop(broker: Arc<Broker>, address: String, orders: Arc<Orders>) {
    let base = broker.peers.config().base_url(&address);
    let mut st = State {
        broker,
        base,
        parts: HashMap::new(),
        generation: u64::MAX,
        session_id: 0,
        session_epoch: 0,
        forgotten: Vec::new(),
    };
    let retry = client::RetryPolicy::new(FOLLOW_RETRY_INITIAL, FOLLOW_RETRY_MAX);
    let mut delays = retry.delays();
    loop {
        st.sync(&orders).await;
        let round = async {
            st.truncate().await?;
            st.fetch(&orders).await
        };
        match round.await {
            Ok(()) => delays = retry.delays(),
            Err(e) => {
                tracing::debug!(leader = %st.base, error = %e, "replica fetch failed; retrying");
                // Whatever the leader last heard may not be what it answered: start over.
                st.reset_session();
                tokio::time::sleep(delays.next().unwrap_or(FOLLOW_RETRY_MAX)).await;
            }
        }
    }
}

impl State {
    fn reset_session(&mut self) {
        self.session_id = 0;
        self.session_epoch = 0;
        self.forgotten.clear();
        for f in self.parts.values_mut() {
            f.reported = None;
        }
    }

    /// Takes the new orders: opens and fences newly followed partitions, lets go of the
    /// others.
    async fn sync(&mut self, orders: &Orders) {
        let generation = orders.generation.load(Ordering::Relaxed);
        if generation == self.generation {
            return;
        }
        self.generation = generation;
        let wanted = lock(&orders.wanted).clone();
        let gone: Vec<TopicPartition> = self
            .parts
            .iter()
            .filter(|(tp, f)| !wanted.get(*tp).is_some_and(|w| w.same(&f.want)))
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in gone {
            if let Some(f) = self.parts.remove(&tp) {
                let mut l = lock(&f.log);
                if l.replica_token() == Some(f.token) {
                    l.set_replica_token(None);
                }
                drop(l);
                forget(&mut self.forgotten, &tp, &f);
            }
        }
        let new: Vec<(TopicPartition, Want)> = wanted
            .into_iter()
            .filter(|(tp, _)| !self.parts.contains_key(tp))
            .collect();
        if new.is_empty() {
            return;
        }
        let broker = self.broker.clone();
        let opened = tokio::task::spawn_blocking(move || {
            new.into_iter()
                .map(|(tp, want)| {
                    let r = broker.open_log(&tp, want.config.clone(), want.topic_id);
                    (tp, want, r)
                })
                .collect::<Vec<_>>()
        })
        .await;
        let Ok(opened) = opened else { return };
        for (tp, want, r) in opened {
            let log = match r {
                Ok(log) => log,
                Err(e) => {
                    tracing::warn!(partition = %tp.dir_name(), error = %e, "cannot open a followed partition");
                    self.broker.logs.report_error(&tp, &e);
                    // Tried again at the next change of orders.
                    continue;
                }
            };
            let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
            let end = {
                let mut l = lock(&log);
                l.set_replica_token(Some(token));
                l.log_end_offset()
            };
            self.parts.insert(
                tp,
                Followed {
                    want,
                    log,
                    token,
                    stage: Stage::Truncate { round: 0 },
                    end,
                    reported: None,
                    backoff: FOLLOW_RETRY_INITIAL,
                },
            );
        }
    }

    /// Truncates every partition that needs it where its log may have diverged from the
    /// leader's (KIP-101/279): ask where the leader's log ends for this log's latest epoch;
    /// if the leader answers with an older epoch, this log's later epochs are not the
    /// leader's — cut to the end of that older epoch here too, and ask again, until both
    /// name the same epoch.
    async fn truncate(&mut self) -> Result<(), FollowError> {
        let now = Instant::now();
        for f in self.parts.values_mut() {
            if matches!(f.stage, Stage::Wait { at } if at <= now) {
                f.stage = Stage::Truncate { round: 0 };
            }
        }
        loop {
            let mut asked: Vec<(TopicPartition, i32)> = Vec::new();
            for (tp, f) in &mut self.parts {
                let Stage::Truncate { round } = f.stage else {
                    continue;
                };
                let latest = lock(&f.log).leader_epochs().latest_epoch();
                match latest {
                    Some(epoch) if round < TRUNCATION_ROUNDS_MAX => {
                        asked.push((tp.clone(), epoch));
                    }
                    // Nothing written under any epoch (or out of rounds): fetch from here.
                    _ => f.stage = Stage::Fetch,
                }
                if asked.len() >= EPOCH_ENDS_PER_REQUEST {
                    break;
                }
            }
            if asked.is_empty() {
                return Ok(());
            }
            let q = api::EpochEndsRequest {
                partitions: asked
                    .iter()
                    .map(|(tp, epoch)| api::EpochEndQuery {
                        topic: tp.topic.clone(),
                        partition: tp.partition,
                        epoch: *epoch,
                    })
                    .collect(),
            };
            let reply = self.broker.peers.epoch_ends_at(&self.base, &q).await?;
            if reply.partitions.len() != asked.len() {
                return Err(FollowError::Internal(format!(
                    "{} epoch ends for {} questions",
                    reply.partitions.len(),
                    asked.len()
                )));
            }
            let mut work = Vec::new();
            for ((tp, epoch), r) in asked.into_iter().zip(reply.partitions) {
                let Some(f) = self.parts.get_mut(&tp) else {
                    continue;
                };
                match (r.error, r.end) {
                    (None, Some(end)) => work.push((tp, epoch, end, f.log.clone(), f.token)),
                    (error, _) => {
                        tracing::debug!(partition = %tp.dir_name(), error = ?error, "the leader refused an epoch-end question");
                        f.refused();
                    }
                }
            }
            let done = tokio::task::spawn_blocking(move || {
                work.into_iter()
                    .map(|(tp, epoch, end, log, token)| {
                        let r = truncate_one(&tp, &log, token, epoch, end);
                        (tp, r)
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(|e| FollowError::Internal(e.to_string()))?;
            for (tp, r) in done {
                let Some(f) = self.parts.get_mut(&tp) else {
                    continue;
                };
                match r {
                    Ok((end, settled)) => {
                        f.end = end;
                        f.stage = if settled {
                            Stage::Fetch
                        } else {
                            match f.stage {
                                Stage::Truncate { round } => Stage::Truncate { round: round + 1 },
                                s => s,
                            }
                        };
                    }
                    Err(e) => self.fail(&tp, e),
                }
            }
        }
    }

    /// A partition failed locally: a fenced one is dropped (its new owner has it), a
    /// storage failure is reported and retried later.
    fn fail(&mut self, tp: &TopicPartition, e: FollowError) {
        match e {
            FollowError::Fenced => {
                if let Some(f) = self.parts.remove(tp) {
                    forget(&mut self.forgotten, tp, &f);
                }
            }
            e => {
                if let FollowError::Storage(s) = &e {
                    self.broker.logs.report_error(tp, s);
                }
                tracing::warn!(partition = %tp.dir_name(), error = %e, "following a partition failed; retrying");
                if let Some(f) = self.parts.get_mut(tp) {
                    forget(&mut self.forgotten, tp, f);
                    f.refused();
                }
            }
        }
    }

    /// One session request and its reply applied.
    async fn fetch(&mut self, orders: &Orders) -> Result<(), FollowError> {
        let full = self.session_id == 0;
        let mut partitions = Vec::new();
        for (tp, f) in &self.parts {
            if f.stage != Stage::Fetch || (!full && f.reported == Some(f.end)) {
                continue;
            }
            partitions.push(api::SessionPartition {
                topic: tp.topic.clone(),
                partition: tp.partition,
                offset: f.end,
                leader_epoch: f.want.leader_epoch,
            });
        }
        let in_session = self.parts.values().any(|f| f.stage == Stage::Fetch);
        if !in_session {
            // Nothing to fetch: sleep until new orders or the next retry.
            let next = self
                .parts
                .values()
                .filter_map(|f| match f.stage {
                    Stage::Wait { at } => Some(at),
                    _ => None,
                })
                .min();
            let changed = orders.changed.notified();
            match next {
                Some(at) => {
                    let _ = tokio::time::timeout_at(at.into(), changed).await;
                }
                None => changed.await,
            }
            self.reset_session();
            return Ok(());
        }
        let q = api::SessionFetchRequest {
            replica: self.broker.config.node_id,
            session_id: self.session_id,
            session_epoch: self.session_epoch,
            max_wait_ms: REPLICA_FETCH_WAIT_MS,
            max_bytes: REPLICA_FETCH_BYTES,
            partition_max_bytes: REPLICA_FETCH_PARTITION_BYTES,
            partitions,
            forgotten: std::mem::take(&mut self.forgotten),
        };
        for p in &q.partitions {
            if let Some(f) = self
                .parts
                .get_mut(&TopicPartition::new(&p.topic, p.partition))
            {
                f.reported = Some(p.offset);
            }
        }
        let reply = match self
            .broker
            .peers
            .session_fetch_at(&self.base, &q, SESSION_OPEN_TIMEOUT)
            .await
        {
            Ok(r) => r,
            Err(e) if e.code() == Some(api::ErrorCode::FetchSessionInvalid) => {
                tracing::debug!(leader = %self.base, error = %e, "fetch session refused; opening a new one");
                self.reset_session();
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        self.session_id = reply.header.session_id;
        self.session_epoch = if full { 1 } else { self.session_epoch + 1 };
        self.apply(reply).await
    }

    /// Applies a session reply: errors, then every partition's batches appended and made
    /// durable, then the high watermarks.
    async fn apply(&mut self, reply: client::SessionFetch) -> Result<(), FollowError> {
        let mut work = Vec::new();
        let mut restart = Vec::new();
        for (p, bytes) in reply.header.partitions.into_iter().zip(reply.data) {
            let tp = TopicPartition::new(&p.topic, p.partition);
            let Some(f) = self.parts.get_mut(&tp) else {
                continue;
            };
            if let Some(err) = p.error {
                f.reported = None;
                if err.code == api::ErrorCode::OffsetOutOfRange {
                    // Below the leader's log start (retention deleted what this replica
                    // lacks), or past its end (truncation needed).
                    restart.push(tp);
                } else {
                    tracing::debug!(partition = %tp.dir_name(), code = %err.code, message = %err.message, "the leader refused a partition");
                    f.refused();
                }
                continue;
            }
            if f.stage != Stage::Fetch {
                continue;
            }
            work.push(Work {
                tp,
                log: f.log.clone(),
                token: f.token,
                hw: p.high_watermark,
                bytes,
            });
        }
        for tp in restart {
            if let Err(e) = self.restart_at_leader_start(&tp).await {
                self.fail(&tp, e);
            }
        }
        if work.is_empty() {
            return Ok(());
        }
        let done = tokio::task::spawn_blocking(move || append_all(work))
            .await
            .map_err(|e| FollowError::Internal(e.to_string()))?;
        for (tp, r) in done {
            match r {
                Ok(end) => {
                    if let Some(f) = self.parts.get_mut(&tp) {
                        f.end = end;
                        f.backoff = FOLLOW_RETRY_INITIAL;
                    }
                }
                Err(e) => self.fail(&tp, e),
            }
        }
        Ok(())
    }

    /// When the leader's log starts above this replica's end, empties this replica and
    /// starts it at the leader's log start; otherwise truncation by epochs sorts it out.
    async fn restart_at_leader_start(&mut self, tp: &TopicPartition) -> Result<(), FollowError> {
        let start = self
            .broker
            .peers
            .partition_offsets_at(&self.base, &tp.topic, tp.partition)
            .await?
            .log_start_offset;
        let Some(f) = self.parts.get_mut(tp) else {
            return Ok(());
        };
        let (log, token) = (f.log.clone(), f.token);
        let restarted = tokio::task::spawn_blocking(move || -> Result<Option<u64>, FollowError> {
            let mut l = lock(&log);
            if l.replica_token() != Some(token) {
                return Err(FollowError::Fenced);
            }
            let end = l.log_end_offset();
            if start <= end {
                return Ok(None);
            }
            l.truncate_fully_and_start_at(start, shared::sys::now_ms())?;
            Ok(Some(end))
        })
        .await
        .map_err(|e| FollowError::Internal(e.to_string()))??;
        if let Some(from) = restarted {
            tracing::warn!(partition = %tp.dir_name(), from, to = start, "the leader's log starts past this replica's end: starting over there");
            f.end = start;
            f.stage = Stage::Fetch;
        } else {
            f.stage = Stage::Truncate { round: 0 };
        }
        Ok(())
    }
}

/// Has the leader drop `tp` from the session at the next request, if the session holds it.
fn forget(forgotten: &mut Vec<api::PartitionQuery>, tp: &TopicPartition, f: &Followed) {
    if f.reported.is_some() {
        forgotten.push(api::PartitionQuery {
            topic: tp.topic.clone(),
            partition: tp.partition,
        });
    }
}

/// One truncation step (see [`State::truncate`]). Returns the log end and whether the
/// partition is settled (may fetch).
fn truncate_one(
    tp: &TopicPartition,
    log: &SharedLog,
    token: u64,
    epoch: i32,
    reply: api::EpochEnd,
) -> Result<(u64, bool), FollowError> {
    let mut l = lock(log);
    if l.replica_token() != Some(token) {
        return Err(FollowError::Fenced);
    }
    let leo = l.log_end_offset();
    let (leader_epoch, leader_end) = (i64::from(reply.epoch), reply.end_offset);
    let target = if leader_epoch == i64::from(epoch) {
        leader_end.min(leo)
    } else {
        // The leader never had this epoch: keep at most what both have of the older one.
        let local_end = i32::try_from(leader_epoch)
            .ok()
            .filter(|e| *e >= 0)
            .and_then(|e| l.end_offset_for_epoch(e))
            .map_or(l.log_start_offset(), |(_, end)| end);
        leader_end.min(local_end).min(leo)
    };
    if target < leo {
        tracing::warn!(partition = %tp.dir_name(), from = leo, to = target, epoch, leader_epoch, "truncating a diverged follower log");
        l.truncate_to(target, shared::sys::now_ms())?;
    }
    let settled = leader_epoch == i64::from(epoch) || target >= leo;
    Ok((l.log_end_offset(), settled))
}

/// One partition's share of a reply.
struct Work {
    tp: TopicPartition,
    log: SharedLog,
    token: u64,
    hw: u64,
    bytes: bytes::Bytes,
}

/// Appends every partition's batches (each under its log's lock, checking the token), makes
/// them durable, then sets each high watermark to `min(leader HW, log end)`. Returns each
/// partition's log end or failure.
fn append_all(work: Vec<Work>) -> Vec<(TopicPartition, Result<u64, FollowError>)> {
    let limits = crate::storage::segment::scan_limits();
    let mut out = Vec::with_capacity(work.len());
    // Appended partitions needing an fsync: (work index, file, offset it makes durable).
    let mut to_sync: Vec<(usize, SyncTarget)> = Vec::new();
    let mut failed: Vec<Option<FollowError>> = Vec::with_capacity(work.len());
    for (i, w) in work.iter().enumerate() {
        let r = (|| -> Result<Option<SyncTarget>, FollowError> {
            let mut l = lock(&w.log);
            if l.replica_token() != Some(w.token) {
                return Err(FollowError::Fenced);
            }
            if w.bytes.is_empty() {
                return Ok(None);
            }
            let batches = ValidatedBatches::new(w.bytes.to_vec(), &limits)?;
            l.append_replica(batches, shared::sys::now_ms())?;
            Ok(Some(l.sync_target()?))
        })();
        match r {
            Ok(Some(target)) => {
                to_sync.push((i, target));
                failed.push(None);
            }
            Ok(None) => failed.push(None),
            Err(e) => failed.push(Some(e)),
        }
    }
    // Durable before the next request reports it to the leader.
    let mut synced: Vec<Option<u64>> = vec![None; work.len()];
    for (i, t) in &to_sync {
        synced[*i] = Some(t.upto);
    }
    for (i, err) in sync_all(&work, &to_sync) {
        if let FollowError::Storage(e) = &err {
            lock(&work[i].log).sync_failed(e);
        }
        failed[i] = Some(err);
    }
    for ((w, err), upto) in work.into_iter().zip(failed).zip(synced) {
        if let Some(e) = err {
            out.push((w.tp, Err(e)));
            continue;
        }
        let mut l = lock(&w.log);
        if let Some(upto) = upto {
            l.mark_flushed(upto);
        }
        let end = l.log_end_offset();
        // Only what is durable here counts.
        let hw = w.hw.min(end).min(l.flushed_offset());
        if hw < l.high_watermark() {
            tracing::debug!(partition = %w.tp.dir_name(), from = l.high_watermark(), to = hw, token = w.token, "follower high watermark moved back");
        }
        l.set_high_watermark(hw);
        out.push((w.tp, Ok(end)));
    }
    out
}

/// Makes the appended files durable: one `syncfs` per data directory with many of them,
/// one `fdatasync` per file otherwise. Returns the work items whose sync failed.
fn sync_all(work: &[Work], to_sync: &[(usize, SyncTarget)]) -> Vec<(usize, FollowError)> {
    let mut by_dir: HashMap<std::path::PathBuf, Vec<usize>> = HashMap::new();
    for (k, (i, _)) in to_sync.iter().enumerate() {
        let dir = lock(&work[*i].log)
            .dir()
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        by_dir.entry(dir).or_default().push(k);
    }
    let mut failed = Vec::new();
    for (dir, ks) in by_dir {
        if ks.len() >= SYNCFS_FROM {
            if let Err(e) = durable::syncfs(&to_sync[ks[0]].1.file, &dir) {
                for k in ks {
                    let i = to_sync[k].0;
                    failed.push((
                        i,
                        FollowError::Storage(StorageError::io(
                            &dir,
                            std::io::Error::new(e.kind(), e.to_string()),
                        )),
                    ));
                }
            }
            continue;
        }
        for k in ks {
            let (i, t) = &to_sync[k];
            if let Err(e) = durable::sync_data(&t.file, &t.path) {
                failed.push((*i, FollowError::Storage(StorageError::io(&dir, e))));
            }
        }
    }
    failed
}

/// Broker ids as `1,2,3` for log lines.
fn ids(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::broker::Partition;
    use crate::storage::LogManager;
    use shared::{BatchBuilder, BatchEncoder, Compression, ProducerStamp};

    /// Three records, stamped at `base_offset` and leader epoch 0.
    fn batch(base_offset: i64) -> bytes::Bytes {
        let mut b = BatchBuilder::new();
        for i in 0..3 {
            b.push(i, None, Some(format!("r{i}").as_bytes()), &[]);
        }
        let mut enc = BatchEncoder::new(Compression::None, 1).unwrap();
        let mut bytes = enc.encode(&b, ProducerStamp::NONE).unwrap();
        shared::batch::restamp(&mut bytes, base_offset, 0);
        bytes::Bytes::from(bytes)
    }

    /// [`batch`], validated as a leader's produce takes it.
    fn validated(base_offset: i64) -> crate::storage::ValidatedBatches {
        crate::storage::ValidatedBatches::new(
            batch(base_offset).to_vec(),
            &shared::BatchLimits::default(),
        )
        .unwrap()
    }

    fn work(tp: &TopicPartition, log: &SharedLog, token: u64, base: i64) -> Vec<Work> {
        vec![Work {
            tp: tp.clone(),
            log: log.clone(),
            token,
            hw: 0,
            bytes: batch(base),
        }]
    }

    /// A follower reports its log end to the leader, which counts it towards the high
    /// watermark (and so towards acks=all): whatever it reported must survive a power cut
    /// of the follower. Reporting an end before its fsync loses records here.
    #[test]
    fn a_follower_keeps_through_a_power_loss_everything_it_reported() {
        let tp = TopicPartition::new("t", 0);
        let mut lost = 0;
        for seed in 0..16u64 {
            let dir = tempfile::tempdir().unwrap();
            let open =
                || LogManager::open(&[dir.path().to_path_buf()], LogConfig::default(), 8).unwrap();
            let reported = {
                let logs = open();
                let log = logs.get_or_create(&tp, None).unwrap();
                lock(&log).set_replica_token(Some(7));
                let mut end = 0u64;
                for _ in 0..2 + seed % 4 {
                    let done = append_all(work(&tp, &log, 7, end as i64));
                    end = *done[0].1.as_ref().unwrap();
                }
                // In flight at the cut: appended, neither synced nor reported.
                lock(&log).append_replica(validated(end as i64), 0).unwrap();
                end
            };
            lost += durable::power_loss(dir.path(), seed);
            let logs = open();
            let log = logs.get_or_create(&tp, None).unwrap();
            let l = lock(&log);
            assert!(
                l.log_end_offset() >= reported,
                "seed {seed}: reported {reported} to the leader, holds {} after a power cut",
                l.log_end_offset()
            );
            let (_, from, to) = l.checksum(reported).unwrap();
            assert_eq!((from, to), (0, reported), "seed {seed}");
        }
        assert!(lost > 0, "the cuts lost nothing: the test could not fail");
    }

    /// The issue-13 race: a follower's reply still being applied when this broker starts
    /// leading the partition. Leading takes the token away under the log's lock, so the
    /// late append is refused and the log the leader opened stays as it was.
    #[test]
    fn a_follower_append_after_this_broker_began_leading_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogManager::open(&[dir.path().to_path_buf()], LogConfig::default(), 8).unwrap();
        let tp = TopicPartition::new("t", 0);
        let log = logs.get_or_create(&tp, None).unwrap();
        lock(&log).set_replica_token(Some(7));
        let done = append_all(work(&tp, &log, 7, 0));
        assert_eq!(done.len(), 1);
        assert_eq!(*done[0].1.as_ref().unwrap(), 3, "the follower appends");
        // Another fetcher's token: refused.
        let done = append_all(work(&tp, &log, 8, 3));
        assert!(matches!(done[0].1, Err(FollowError::Fenced)));
        // This broker becomes the leader.
        let _leader = Partition::open(tp.clone(), log.clone(), true).unwrap();
        let done = append_all(work(&tp, &log, 7, 3));
        assert!(
            matches!(done[0].1, Err(FollowError::Fenced)),
            "{:?}",
            done[0].1
        );
        assert_eq!(
            lock(&log).log_end_offset(),
            3,
            "nothing appended after leading began"
        );
        // Truncation is fenced the same way.
        let end = api::EpochEnd {
            epoch: 0,
            end_offset: 0,
        };
        assert!(matches!(
            truncate_one(&tp, &log, 7, 0, end),
            Err(FollowError::Fenced)
        ));
        assert_eq!(lock(&log).log_end_offset(), 3);
    }

    /// The other side of the race, found by the fault campaign (seed 106): a produce
    /// already past its leadership check (waiting for an earlier sequence, for the lock)
    /// when a fetcher takes the partition must not append: its old-epoch batch would land
    /// on top of what the follower copied from the new leader, under offsets the new leader
    /// gives other batches, and epoch truncation (which asks about the log's latest epoch)
    /// would never remove it.
    #[test]
    fn a_leader_append_after_a_fetcher_took_the_partition_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogManager::open(&[dir.path().to_path_buf()], LogConfig::default(), 8).unwrap();
        let tp = TopicPartition::new("t", 0);
        let log = logs.get_or_create(&tp, None).unwrap();
        let leader = Partition::open(tp.clone(), log.clone(), true).unwrap();
        assert!(
            leader.produce(validated(0), 1).is_ok(),
            "the leader appends"
        );
        // A fetcher follows the partition here now (this broker was deposed).
        lock(&log).set_replica_token(Some(9));
        let r = leader.produce(validated(0), 1);
        assert!(
            matches!(r, Err(super::super::ProduceError::Deposed(_))),
            "{r:?}"
        );
        assert_eq!(lock(&log).log_end_offset(), 3, "nothing appended");
        // Nor under an epoch older than the log's latest.
        lock(&log).set_replica_token(None);
        let r = leader.produce(validated(0), 0);
        assert!(
            matches!(r, Err(super::super::ProduceError::Deposed(_))),
            "{r:?}"
        );
    }

    /// Found by the fault campaign (seed 409): a deposed leader's checkpoint must not write
    /// its producer table as the state at a log end its fetcher has since moved.
    #[test]
    fn a_deposed_leader_writes_no_producer_snapshot_for_what_its_fetcher_appended() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogManager::open(&[dir.path().to_path_buf()], LogConfig::default(), 8).unwrap();
        let tp = TopicPartition::new("t", 0);
        let log = logs.get_or_create(&tp, None).unwrap();
        let leader = Partition::open(tp.clone(), log.clone(), true).unwrap();
        let snapshot = |o: u64| {
            lock(&log)
                .dir()
                .join(format!("{o:020}.{}", crate::storage::log::STATE_FILE_EXT))
        };
        leader.produce(validated(0), 1).unwrap();
        leader.checkpoint(i64::MAX).unwrap();
        assert!(snapshot(3).exists(), "the leader's own state is written");
        // Deposed; a fetcher takes the log and appends what the new leader has.
        leader.depose();
        lock(&log).set_replica_token(Some(5));
        let done = append_all(work(&tp, &log, 5, 3));
        assert_eq!(*done[0].1.as_ref().unwrap(), 6);
        leader.checkpoint(i64::MAX).unwrap();
        assert!(
            !snapshot(6).exists(),
            "no snapshot for a log another writer moved"
        );
    }

    #[test]
    fn a_session_reply_body_round_trips_and_a_torn_one_is_an_error() {
        let header = api::SessionFetchReply {
            session_id: 9,
            partitions: vec![api::SessionPartitionReply {
                topic: "t".into(),
                partition: 1,
                error: None,
                high_watermark: 3,
                log_start_offset: 0,
                bytes: 4,
            }],
        };
        let body = client::SessionFetch::encode(&header, &[b"abcd".to_vec()]).unwrap();
        let parsed = client::SessionFetch::parse(bytes::Bytes::from(body.clone())).unwrap();
        assert_eq!(parsed.header, header);
        assert_eq!(&parsed.data[0][..], b"abcd");
        for cut in [0, 3, 10, body.len() - 1] {
            assert!(client::SessionFetch::parse(bytes::Bytes::from(body[..cut].to_vec())).is_err());
        }
        let mut longer = body;
        longer.push(0);
        assert!(client::SessionFetch::parse(bytes::Bytes::from(longer)).is_err());
    }
}
