//! The leader's side of replication: one fetch session per follower broker.
//!
//! A follower sends one request for every partition it follows on this broker (see
//! `replica.rs`). The session remembers, per partition, the follower's offset and the high
//! watermark and log start last sent, so a request lists only partitions whose offset moved
//! and a reply holds only partitions with something new. Partitions tell the sessions
//! following them when their log end or high watermark moves ([`SessionSignal`]): a long
//! poll sleeps on one `Notify` per session, never on one timer or task per partition.
//!
//! The session also keeps the follower's liveness for the ISR: a request counts as a fetch
//! at the remembered offset of every partition it did not list (see
//! `Partition::follower_fetched`), so an idle, caught-up follower stays in the ISR without
//! naming its idle partitions.
//!
//! Invariants: a session is used by one request at a time (its `tokio` mutex); a request
//! whose `session_epoch` is not the expected one is refused, so a reply the follower never
//! received cannot leave the two sides disagreeing (the follower opens a new session); the
//! number of sessions is bounded by the number of brokers (one per follower broker, a new
//! one replacing the old).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use api::{SessionFetchRequest, SessionPartition};

use super::{Broker, BrokerError, PartitionRef};
use crate::storage::manager::TopicPartition;
use shared::sys::lock;

/// Wakes a session's long poll. Held (weakly) by every partition in the session.
#[derive(Debug, Default)]
pub struct SessionSignal {
    /// The session's id: ids only grow, so a partition keeps the newest session it heard
    /// of even if an older, abandoned request reaches it later.
    pub id: u64,
    dirty: Mutex<Dirty>,
    notify: tokio::sync::Notify,
    /// Answer the waiting request now (this broker gained leaderships: the follower may
    /// want to add partitions).
    wake: AtomicBool,
    /// When the follower's last request arrived, in ms since [`epoch`].
    heard_ms: AtomicU64,
}

#[derive(Debug, Default)]
struct Dirty {
    order: Vec<TopicPartition>,
    set: HashSet<TopicPartition>,
}

/// The base of the session clocks.
fn epoch() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

impl SessionSignal {
    /// A partition has something new for this session.
    pub fn mark(&self, tp: &TopicPartition) {
        {
            let mut d = lock(&self.dirty);
            if !d.set.contains(tp) {
                d.set.insert(tp.clone());
                d.order.push(tp.clone());
            }
        }
        self.notify.notify_one();
    }

    fn take(&self) -> Vec<TopicPartition> {
        let mut d = lock(&self.dirty);
        d.set.clear();
        std::mem::take(&mut d.order)
    }

    fn heard(&self) {
        let ms = epoch().elapsed().as_millis() as u64;
        self.heard_ms.store(ms, Ordering::Relaxed);
    }

    /// When the follower last sent a request.
    pub fn last_heard(&self) -> Instant {
        epoch() + Duration::from_millis(self.heard_ms.load(Ordering::Relaxed))
    }
}

/// What a session remembers of one partition.
#[derive(Debug)]
struct Entry {
    /// The follower's log end, as last reported.
    offset: u64,
    leader_epoch: i32,
    hw_sent: Option<u64>,
    start_sent: Option<u64>,
}

#[derive(Debug)]
struct Session {
    id: u64,
    /// The epoch the next request must carry.
    next_epoch: u64,
    replica: u64,
    /// Shared with the slot: a partition whose leader state is (re)opened while the session
    /// waits reads its follower's offset from here (see [`Sessions::attach`]).
    parts: Arc<Mutex<HashMap<TopicPartition, Entry>>>,
}

/// One follower broker's session, and its signal (reachable without the session's lock,
/// which a waiting request holds).
#[derive(Debug, Clone)]
struct Slot {
    signal: Arc<SessionSignal>,
    session: Arc<tokio::sync::Mutex<Session>>,
    parts: Arc<Mutex<HashMap<TopicPartition, Entry>>>,
}

/// Every open session of this leader, one per follower broker.
#[derive(Debug, Default)]
pub struct Sessions {
    by_replica: Mutex<HashMap<u64, Slot>>,
    next_id: AtomicU64,
}

impl Sessions {
    /// Ends every waiting long poll (this broker's leaderships grew: followers may want to
    /// add partitions to their sessions).
    pub fn wake_all(&self) {
        for slot in lock(&self.by_replica).values() {
            slot.signal.wake.store(true, Ordering::Relaxed);
            slot.signal.notify.notify_one();
        }
    }

    /// Open sessions.
    pub fn count(&self) -> usize {
        lock(&self.by_replica).len()
    }

    /// A new session for `replica`, replacing its previous one.
    fn open(&self, replica: u64) -> Slot {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let parts = Arc::new(Mutex::new(HashMap::new()));
        let slot = Slot {
            parts: parts.clone(),
            signal: Arc::new(SessionSignal {
                id,
                ..SessionSignal::default()
            }),
            session: Arc::new(tokio::sync::Mutex::new(Session {
                id,
                next_epoch: 1,
                replica,
                parts,
            })),
        };
        lock(&self.by_replica).insert(replica, slot.clone());
        slot
    }

    /// This broker (re)opened its leader state of `part` at `leader_epoch`: each session
    /// holding the partition at that epoch registers with it and counts as a fetch at its
    /// remembered offset — a session names an idle partition only once, so the new leader
    /// state would otherwise never hear of that follower.
    pub fn attach(&self, part: &PartitionRef, leader_epoch: i32) {
        let slots: Vec<(u64, Slot)> = lock(&self.by_replica)
            .iter()
            .map(|(r, s)| (*r, s.clone()))
            .collect();
        for (replica, slot) in slots {
            let offset = lock(&slot.parts)
                .get(&part.tp)
                .filter(|e| e.leader_epoch == leader_epoch)
                .map(|e| e.offset);
            if let Some(offset) = offset {
                part.listen(&slot.signal);
                part.follower_fetched(replica, offset, Some(&slot.signal));
                slot.signal.mark(&part.tp);
            }
        }
    }

    fn find(&self, replica: u64) -> Option<Slot> {
        lock(&self.by_replica).get(&replica).cloned()
    }

    /// Whether `id` is still `replica`'s session (a newer one replaces it when the follower
    /// gave up on a request, e.g. on a timeout, while this broker still works on it).
    fn is_current(&self, replica: u64, id: u64) -> bool {
        lock(&self.by_replica)
            .get(&replica)
            .is_some_and(|s| s.signal.id == id)
    }
}

/// One partition of a session reply.
#[derive(Debug)]
pub struct SessionPart {
    pub tp: TopicPartition,
    /// `(high watermark, log start, batches)`, or why the partition left the session.
    pub result: Result<(u64, u64, Vec<u8>), BrokerError>,
}

/// A session reply.
#[derive(Debug)]
pub struct SessionReply {
    pub session_id: u64,
    pub parts: Vec<SessionPart>,
}

/// What to read for one partition of a reply.
struct Plan {
    tp: TopicPartition,
    part: PartitionRef,
    offset: u64,
}

impl Broker {
    /// A follower's session fetch (see the module docs).
    pub async fn session_fetch(
        &self,
        q: &SessionFetchRequest,
    ) -> Result<SessionReply, BrokerError> {
        if q.replica == self.config.node_id {
            return Err(BrokerError::NotAReplica(format!(
                "broker {} cannot follow itself",
                q.replica
            )));
        }
        let slot = if q.session_id == 0 {
            self.sessions.open(q.replica)
        } else {
            self.sessions.find(q.replica).ok_or_else(|| {
                BrokerError::FetchSession(format!(
                    "no session {} for broker {}",
                    q.session_id, q.replica
                ))
            })?
        };
        let mut s = slot.session.lock().await;
        if q.session_id != 0 && (s.id != q.session_id || s.next_epoch != q.session_epoch) {
            return Err(BrokerError::FetchSession(format!(
                "session {} epoch {} from broker {}; expected session {} epoch {}",
                q.session_id, q.session_epoch, q.replica, s.id, s.next_epoch
            )));
        }
        if q.session_id != 0 {
            // The opening request is epoch 0; the first one after it carries 1.
            s.next_epoch += 1;
        }
        let signal = slot.signal.clone();
        signal.heard();
        signal.wake.store(false, Ordering::Relaxed);
        for f in &q.forgotten {
            let tp = TopicPartition::new(&f.topic, f.partition);
            let removed = lock(&s.parts).remove(&tp).is_some();
            if removed && let Some(part) = self.led_partition(&tp) {
                part.leave_session(q.replica, s.id);
            }
        }
        let mut out = Vec::new();
        let mut candidates = Vec::with_capacity(q.partitions.len());
        for p in &q.partitions {
            if !self.sessions.is_current(q.replica, s.id) {
                return Err(BrokerError::FetchSession(format!(
                    "session {} of broker {} was replaced",
                    s.id, q.replica
                )));
            }
            let tp = TopicPartition::new(&p.topic, p.partition);
            match self.session_add(&signal, s.replica, p).await {
                Ok(()) => {
                    let mut parts = lock(&s.parts);
                    let e = parts.entry(tp.clone()).or_insert(Entry {
                        offset: p.offset,
                        leader_epoch: p.leader_epoch,
                        hw_sent: None,
                        start_sent: None,
                    });
                    if e.leader_epoch != p.leader_epoch {
                        e.hw_sent = None;
                        e.start_sent = None;
                    }
                    e.offset = p.offset;
                    e.leader_epoch = p.leader_epoch;
                    drop(parts);
                    candidates.push(tp);
                }
                Err(e) => {
                    lock(&s.parts).remove(&tp);
                    out.push(SessionPart { tp, result: Err(e) });
                }
            }
        }
        let wait = Duration::from_millis(q.max_wait_ms.min(self.config.limits.max_fetch_wait_ms));
        let deadline = tokio::time::Instant::now() + wait;
        let max_bytes = q.max_bytes.clamp(1, self.config.limits.max_fetch_bytes) as usize;
        let part_max = q.partition_max_bytes.clamp(1, max_bytes as u64) as usize;
        loop {
            let notified = signal.notify.notified();
            candidates.extend(signal.take());
            let mut seen = HashSet::new();
            {
                let parts = lock(&s.parts);
                candidates.retain(|tp| parts.contains_key(tp) && seen.insert(tp.clone()));
            }
            let (parts, rest) = self
                .session_read(&mut s, std::mem::take(&mut candidates), max_bytes, part_max)
                .await?;
            out.extend(parts);
            if !rest.is_empty() {
                // Over the byte budget: the next request gets them.
                for tp in &rest {
                    signal.mark(tp);
                }
            }
            if !out.is_empty()
                || signal.wake.swap(false, Ordering::Relaxed)
                || tokio::time::Instant::now() >= deadline
            {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        Ok(SessionReply {
            session_id: s.id,
            parts: out,
        })
    }

    /// Checks one listed partition and registers the session with it: this broker leads it
    /// at the follower's epoch, the follower is one of its replicas, and its offset is not
    /// past this log's end (it must truncate first).
    async fn session_add(
        &self,
        signal: &Arc<SessionSignal>,
        replica: u64,
        p: &SessionPartition,
    ) -> Result<(), BrokerError> {
        shared::names::validate_topic(&p.topic)
            .map_err(|e| BrokerError::InvalidTopic(e.to_string()))?;
        let (part, epoch) = self.leader_partition(&p.topic, p.partition, false).await?;
        if epoch != p.leader_epoch {
            return Err(BrokerError::LeaderEpoch {
                topic: p.topic.clone(),
                partition: p.partition,
                asked: p.leader_epoch,
                current: epoch,
            });
        }
        let is_replica = self
            .controller
            .metadata()
            .topics
            .get(&p.topic)
            .and_then(|t| t.partitions.get(p.partition as usize))
            .is_some_and(|pm| pm.replicas.contains(&replica));
        if !is_replica {
            return Err(BrokerError::NotAReplica(format!(
                "broker {replica} is not a follower of {}-{}",
                p.topic, p.partition
            )));
        }
        let end = lock(part.log()).log_end_offset();
        if p.offset > end {
            return Err(BrokerError::PastLogEnd {
                offset: p.offset,
                end,
            });
        }
        part.listen(signal);
        part.follower_fetched(replica, p.offset, Some(signal));
        Ok(())
    }

    /// Reads what `candidates` have for the follower, within the byte budgets. Returns the
    /// reply's partitions and the candidates left over the budget.
    async fn session_read(
        &self,
        s: &mut Session,
        candidates: Vec<TopicPartition>,
        max_bytes: usize,
        part_max: usize,
    ) -> Result<(Vec<SessionPart>, Vec<TopicPartition>), BrokerError> {
        if candidates.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let mut plans = Vec::with_capacity(candidates.len());
        let mut out = Vec::new();
        let meta = self.controller.metadata();
        let me = self.config.node_id;
        {
            let mut parts = lock(&s.parts);
            for tp in candidates {
                let Some(e) = parts.get(&tp) else { continue };
                let pm = meta
                    .topics
                    .get(&tp.topic)
                    .and_then(|t| t.partitions.get(tp.partition as usize));
                // Only the leadership the follower added the partition under: data of a
                // later epoch must reach it through truncation first.
                let current =
                    pm.is_some_and(|pm| pm.leader == me && pm.leader_epoch == e.leader_epoch);
                match self.led_partition(&tp) {
                    Some(part) if current && !part.is_deposed() => plans.push(Plan {
                        tp,
                        part,
                        offset: e.offset,
                    }),
                    _ => {
                        let asked = e.leader_epoch;
                        parts.remove(&tp);
                        let result = match pm {
                            Some(pm) if pm.leader == me => Err(BrokerError::LeaderEpoch {
                                topic: tp.topic.clone(),
                                partition: tp.partition,
                                asked,
                                current: pm.leader_epoch,
                            }),
                            _ => Err(BrokerError::NotLeader {
                                topic: tp.topic.clone(),
                                partition: tp.partition,
                                leader: pm.map(|p| p.leader),
                                leader_address: None,
                            }),
                        };
                        out.push(SessionPart { result, tp });
                    }
                }
            }
        }
        let read = tokio::task::spawn_blocking(move || {
            let mut budget = max_bytes;
            let mut read = Vec::with_capacity(plans.len());
            let mut rest = Vec::new();
            for plan in plans {
                let (end, start) = {
                    let l = lock(plan.part.log());
                    (l.log_end_offset(), l.log_start_offset())
                };
                let hw = plan.part.high_watermark();
                if plan.offset < end && budget == 0 {
                    rest.push(plan.tp);
                    continue;
                }
                let r = if plan.offset < end {
                    plan.part
                        .read_for_replica(plan.offset, part_max.min(budget))
                        .map(|r| r.bytes)
                } else {
                    Ok(Vec::new())
                };
                if let Ok(b) = &r {
                    budget = budget.saturating_sub(b.len());
                }
                read.push((plan.tp, hw, start, r));
            }
            (read, rest)
        })
        .await
        .map_err(|e| BrokerError::Internal(e.to_string()))?;
        let (read, rest) = read;
        let mut parts = lock(&s.parts);
        for (tp, hw, start, r) in read {
            let Some(e) = parts.get_mut(&tp) else {
                continue;
            };
            match r {
                Ok(bytes) => {
                    if bytes.is_empty() && e.hw_sent == Some(hw) && e.start_sent == Some(start) {
                        continue;
                    }
                    e.hw_sent = Some(hw);
                    e.start_sent = Some(start);
                    out.push(SessionPart {
                        tp,
                        result: Ok((hw, start, bytes)),
                    });
                }
                Err(err) => {
                    self.logs.report_error(&tp, &err);
                    parts.remove(&tp);
                    out.push(SessionPart {
                        tp,
                        result: Err(err.into()),
                    });
                }
            }
        }
        Ok((out, rest))
    }
}
