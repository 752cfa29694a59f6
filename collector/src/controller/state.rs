//! The controller's replicated state machine: cluster metadata, never records.
//!
//! [`MetadataState::apply`] is a pure function of the state and one [`MetadataCommand`]; the
//! Raft layer (see `raft.rs`) calls it for every committed log entry in order on every node,
//! so every node holds the same metadata.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Broker ids are the `node_id` of each collector.
pub use api::{OffsetEntry, TopicConfigs};

pub type NodeId = u64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerMeta {
    pub id: NodeId,
    pub address: String,
    /// Silent past `broker_session_timeout_ms` (or never heard from since the active
    /// controller took over): not alive until it heartbeats again.
    #[serde(default)]
    pub fenced: bool,
    /// Its Kafka listener's advertised `host:port`, when it serves one.
    #[serde(default)]
    pub kafka_address: Option<String>,
    /// Chosen by the broker process at start and registered: once a broker sees its own
    /// incarnation in its metadata, that metadata holds everything decided before this run
    /// (Raft applies in order), so what it lacks — deleted topics — can be removed locally.
    #[serde(default)]
    pub incarnation: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMeta {
    pub partition: u32,
    pub leader: NodeId,
    pub leader_epoch: i32,
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    /// Bumped by every ISR or leader change; an ISR change proposed against an older
    /// partition epoch (a stale leader's) is refused.
    #[serde(default)]
    pub partition_epoch: i32,
}

impl PartitionMeta {
    /// A new partition whose `rf` replicas are the brokers from position `first` on (mod
    /// their count), the first of them leading, all in sync, at epoch 0. Callers check
    /// `1 <= rf <= brokers.len()` first.
    fn assigned(partition: u32, brokers: &[NodeId], first: usize, rf: usize) -> Self {
        let replicas: Vec<NodeId> = (0..rf)
            .map(|r| brokers[(first + r) % brokers.len()])
            .collect();
        Self {
            partition,
            leader: replicas[0],
            leader_epoch: 0,
            isr: replicas.clone(),
            replicas,
            partition_epoch: 0,
        }
    }

    /// Moves leadership to `to`: a new leader epoch.
    fn elect(&mut self, to: NodeId) {
        self.leader = to;
        self.leader_epoch += 1;
        self.partition_epoch += 1;
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    /// Kafka's topic id: chosen when the topic is created, never reused (a topic deleted
    /// and created again under its name gets a new one). Nil only in state written before
    /// topics had ids; [`TopicMeta::topic_id`] derives a stable one for those.
    #[serde(default)]
    pub id: uuid::Uuid,
    pub partitions: Vec<PartitionMeta>,
    pub replication_factor: u16,
    pub configs: TopicConfigs,
}

/// One partition's ISR change, as its leader proposes it (its view: leader and partition
/// epochs it saw, refused if stale).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsrChange {
    pub topic: String,
    pub partition: u32,
    pub leader: NodeId,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<NodeId>,
}

/// A change to the metadata, proposed through Raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataCommand {
    /// A broker announces itself (on start).
    RegisterBroker {
        id: NodeId,
        address: String,
        /// Its Kafka listener's advertised `host:port`, when it serves one.
        #[serde(default)]
        kafka_address: Option<String>,
        /// The broker process's incarnation (see [`BrokerMeta::incarnation`]).
        #[serde(default)]
        incarnation: u64,
    },
    /// The active controller stopped hearing from a broker.
    FenceBroker { id: NodeId },
    /// A fenced broker heartbeats again.
    UnfenceBroker { id: NodeId },
    /// A partition leader changes its ISR (a follower fell behind, or caught up).
    AlterIsr {
        topic: String,
        partition: u32,
        leader: NodeId,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<NodeId>,
    },
    /// A partition leader's ISR changes for many partitions at once (after a restart a
    /// leader has thousands to make); each is judged alone, as [`MetadataCommand::AlterIsr`].
    /// The result is [`CommandResult::Each`], one per change in order.
    AlterIsrs { changes: Vec<IsrChange> },
    /// Create a topic, assigning replicas round-robin over the registered brokers.
    CreateTopic {
        name: String,
        /// Chosen (at random) by the proposer; absent in entries written before topics had
        /// ids, which get one derived from the name and the creation count.
        #[serde(default)]
        id: Option<uuid::Uuid>,
        partitions: u32,
        replication_factor: u16,
        configs: TopicConfigs,
    },
    DeleteTopic {
        name: String,
        /// Chosen (at random) by the proposer, so a retry of a proposal that was applied
        /// (the reply lost to a failed forward or a dying controller leader) is answered
        /// `Done` again instead of `unknown_topic`. Absent in older entries.
        #[serde(default)]
        request: Option<uuid::Uuid>,
    },
    /// Grow a topic to `partitions` partitions (a topic never shrinks); the new ones are
    /// assigned like a new topic's, over the live brokers.
    AddPartitions {
        name: String,
        partitions: u32,
        /// As [`MetadataCommand::DeleteTopic`]'s.
        #[serde(default)]
        request: Option<uuid::Uuid>,
    },
    /// Allocate `count` fresh producer ids (never reused).
    AllocateProducerIds { count: u32 },
    /// A group member's commit (fencing was checked by the coordinator). Refused as a whole
    /// when any offset would move backwards.
    CommitOffsets {
        group: String,
        offsets: Vec<OffsetEntry>,
        now_ms: i64,
    },
    /// `groups reset-offsets`: sets the offsets, backwards or not.
    ResetOffsets {
        group: String,
        offsets: Vec<OffsetEntry>,
        now_ms: i64,
    },
    /// Forgets a group's offsets (expired by `offsets_retention_ms`).
    DeleteGroupOffsets { group: String },
    /// Adds ACLs (one already present is not added twice).
    CreateAcls { acls: Vec<api::acls::Acl> },
    /// Removes every ACL the filter matches; the result lists them.
    DeleteAcls { filter: api::acls::AclFilter },
}

/// A group's committed offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupOffsets {
    /// topic -> partition -> next offset to read.
    pub offsets: BTreeMap<String, BTreeMap<u32, u64>>,
    /// Wall-clock ms of the last commit or reset.
    pub updated_ms: i64,
}

impl GroupOffsets {
    pub fn get(&self, topic: &str, partition: u32) -> Option<u64> {
        self.offsets.get(topic)?.get(&partition).copied()
    }
}

/// Why a command was refused (deterministically, on every node alike).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MetadataError {
    #[error("topic {0} already exists")]
    TopicExists(String),
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
    #[error("invalid topic: {0}")]
    InvalidTopic(String),
    #[error("replication factor {requested} is larger than the {available} registered brokers")]
    NotEnoughBrokers { requested: u16, available: usize },
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error(
        "commit of offset {requested} for {topic}-{partition} would move the committed offset {committed} backwards (use reset-offsets)"
    )]
    OffsetBackwards {
        topic: String,
        partition: u32,
        committed: u64,
        requested: u64,
    },
}

/// The outcome of applying a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    Done,
    TopicCreated(TopicMeta),
    ProducerIds {
        first: i64,
        count: u32,
    },
    /// The ACLs a `DeleteAcls` removed.
    AclsDeleted(Vec<api::acls::Acl>),
    Refused(MetadataError),
    /// One result per part of a batched command, in order.
    Each(Vec<CommandResult>),
}

/// Most ACLs a cluster keeps (a bound on metadata size and on each authorization's scan).
pub const ACLS_MAX: usize = 10_000;

/// Most partitions one topic may have (a bound on metadata size and on directories created).
pub const TOPIC_PARTITIONS_MAX: u32 = 10_000;

/// The whole cluster metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataState {
    pub brokers: BTreeMap<NodeId, BrokerMeta>,
    pub topics: BTreeMap<String, TopicMeta>,
    /// The next producer id to hand out; only grows.
    pub next_producer_id: i64,
    /// Topics ever created: rotates the first replica of new topics over the brokers.
    pub topics_created: u64,
    /// Committed offsets per consumer group.
    #[serde(default)]
    pub groups: BTreeMap<String, GroupOffsets>,
    /// Access control lists (kept sorted, without duplicates).
    #[serde(default)]
    pub acls: Vec<api::acls::Acl>,
    /// The request ids of the last [`APPLIED_REQUESTS_KEPT`] applied topic deletions and
    /// partition additions, oldest first: what makes a retry of one idempotent.
    #[serde(default)]
    pub applied_requests: std::collections::VecDeque<uuid::Uuid>,
}

/// How many applied requests' ids the state remembers. A retry comes within the proposal
/// timeout, so this only needs to outlast the deletions and additions proposed in that time.
pub const APPLIED_REQUESTS_KEPT: usize = 1024;

impl TopicMeta {
    /// The topic's Kafka id (never nil).
    pub fn topic_id(&self) -> uuid::Uuid {
        if self.id.is_nil() {
            derived_topic_id(&self.name, 0)
        } else {
            self.id
        }
    }
}

/// A topic id for state written before topics had ids: the same on every node whether it
/// replays the old `CreateTopic` or restores a snapshot holding the topic (a hash of the
/// name), never nil.
fn derived_topic_id(name: &str, serial: u64) -> uuid::Uuid {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    uuid::Uuid::from_u64_pair(h, serial.wrapping_add(1))
}

/// A new random topic id (what a proposer puts in `CreateTopic`).
pub fn new_topic_id() -> uuid::Uuid {
    uuid::Uuid::new_v4()
}

impl MetadataState {
    /// The topic with Kafka id `id`.
    pub fn topic_by_id(&self, id: uuid::Uuid) -> Option<&TopicMeta> {
        self.topics.values().find(|t| t.topic_id() == id)
    }

    pub fn apply(&mut self, cmd: &MetadataCommand) -> CommandResult {
        match cmd {
            MetadataCommand::RegisterBroker {
                id,
                address,
                kafka_address,
                incarnation,
            } => {
                let restarted = self
                    .brokers
                    .get(id)
                    .is_some_and(|b| b.incarnation != *incarnation);
                self.brokers.insert(
                    *id,
                    BrokerMeta {
                        id: *id,
                        address: address.clone(),
                        kafka_address: kafka_address.clone(),
                        fenced: false,
                        incarnation: *incarnation,
                    },
                );
                if restarted {
                    // Back from a restart within its session (it was not fenced): its old
                    // process is gone as if fenced, as Kafka's controller treats a new
                    // incarnation. It may have lost an unflushed tail, and what it held
                    // is not what the ISR vouched for: it leaves every ISR (unless the last
                    // member) and its leaderships go to another in-sync replica; it comes
                    // back into an ISR by catching up, as a follower. A partition with no
                    // other in-sync replica stays with it under a new leader epoch, so
                    // what it writes from now on never shares an epoch with what it wrote,
                    // and followers may hold, before. (Campaign seed 7122: a restarted
                    // leader that led on exposed records a replica it still counted in
                    // sync did not have; that replica then led and they were lost.)
                    self.fail_over(*id);
                    for t in self.topics.values_mut() {
                        for p in t.partitions.iter_mut().filter(|p| p.leader == *id) {
                            p.elect(*id);
                        }
                    }
                }
                CommandResult::Done
            }
            MetadataCommand::FenceBroker { id } | MetadataCommand::UnfenceBroker { id } => {
                let fence = matches!(cmd, MetadataCommand::FenceBroker { .. });
                match self.brokers.get_mut(id) {
                    Some(b) => b.fenced = fence,
                    None => {
                        return CommandResult::Refused(MetadataError::Invalid(format!(
                            "unknown broker {id}"
                        )));
                    }
                }
                if fence {
                    self.fail_over(*id);
                }
                CommandResult::Done
            }
            MetadataCommand::AlterIsr {
                topic,
                partition,
                leader,
                leader_epoch,
                partition_epoch,
                isr,
            } => self.alter_isr(
                topic,
                *partition,
                *leader,
                *leader_epoch,
                *partition_epoch,
                isr,
            ),
            MetadataCommand::AlterIsrs { changes } => CommandResult::Each(
                changes
                    .iter()
                    .map(|c| {
                        self.alter_isr(
                            &c.topic,
                            c.partition,
                            c.leader,
                            c.leader_epoch,
                            c.partition_epoch,
                            &c.isr,
                        )
                    })
                    .collect(),
            ),
            MetadataCommand::CreateTopic {
                name,
                id,
                partitions,
                replication_factor,
                configs,
            } => match self.create_topic(name, *id, *partitions, *replication_factor, configs) {
                Ok(t) => CommandResult::TopicCreated(t),
                Err(e) => CommandResult::Refused(e),
            },
            MetadataCommand::AddPartitions {
                name,
                partitions,
                request,
            } => self.once(*request, |s| match s.add_partitions(name, *partitions) {
                Ok(()) => CommandResult::Done,
                Err(e) => CommandResult::Refused(e),
            }),
            MetadataCommand::DeleteTopic { name, request } => self.once(*request, |s| {
                if s.topics.remove(name).is_some() {
                    // A topic created later under the same name starts with no offsets.
                    for g in s.groups.values_mut() {
                        g.offsets.remove(name);
                    }
                    CommandResult::Done
                } else {
                    CommandResult::Refused(MetadataError::UnknownTopic(name.clone()))
                }
            }),
            MetadataCommand::AllocateProducerIds { count } => {
                if *count == 0 {
                    return CommandResult::Refused(MetadataError::Invalid(
                        "count must be positive".into(),
                    ));
                }
                let first = self.next_producer_id;
                self.next_producer_id += i64::from(*count);
                CommandResult::ProducerIds {
                    first,
                    count: *count,
                }
            }
            MetadataCommand::CommitOffsets {
                group,
                offsets,
                now_ms,
            } => {
                if let Some(g) = self.groups.get(group) {
                    for e in offsets {
                        if let Some(committed) = g.get(&e.topic, e.partition)
                            && e.offset < committed
                        {
                            return CommandResult::Refused(MetadataError::OffsetBackwards {
                                topic: e.topic.clone(),
                                partition: e.partition,
                                committed,
                                requested: e.offset,
                            });
                        }
                    }
                }
                self.set_offsets(group, offsets, *now_ms);
                CommandResult::Done
            }
            MetadataCommand::ResetOffsets {
                group,
                offsets,
                now_ms,
            } => {
                self.set_offsets(group, offsets, *now_ms);
                CommandResult::Done
            }
            MetadataCommand::DeleteGroupOffsets { group } => {
                self.groups.remove(group);
                CommandResult::Done
            }
            MetadataCommand::CreateAcls { acls } => {
                if self.acls.len() + acls.len() > ACLS_MAX {
                    return CommandResult::Refused(MetadataError::Invalid(format!(
                        "more than {ACLS_MAX} ACLs"
                    )));
                }
                self.acls.extend(acls.iter().cloned());
                self.acls.sort();
                self.acls.dedup();
                CommandResult::Done
            }
            MetadataCommand::DeleteAcls { filter } => {
                let (gone, kept) = std::mem::take(&mut self.acls)
                    .into_iter()
                    .partition(|a| filter.matches(a));
                self.acls = kept;
                CommandResult::AclsDeleted(gone)
            }
        }
    }

    /// Ids of the brokers not fenced, in id order.
    pub fn live_brokers(&self) -> Vec<NodeId> {
        self.brokers
            .values()
            .filter(|b| !b.fenced)
            .map(|b| b.id)
            .collect()
    }

    fn set_offsets(&mut self, group: &str, offsets: &[OffsetEntry], now_ms: i64) {
        let g = self.groups.entry(group.to_owned()).or_default();
        for e in offsets {
            // Offsets of topics deleted meanwhile are dropped.
            if self.topics.contains_key(&e.topic) {
                g.offsets
                    .entry(e.topic.clone())
                    .or_default()
                    .insert(e.partition, e.offset);
            }
        }
        g.updated_ms = g.updated_ms.max(now_ms);
    }

    /// A broker was fenced: it leaves every ISR it is in (unless it is the last member, so
    /// the ISR still names who has all the data), and each partition it led gets a new
    /// leader from the rest of the ISR — never from outside it (no unclean election). With
    /// no other ISR member the partition stays with its fenced leader: offline, not lossy.
    fn fail_over(&mut self, fenced: NodeId) {
        let live = self.live_brokers();
        for t in self.topics.values_mut() {
            for p in &mut t.partitions {
                if !p.isr.contains(&fenced) || p.isr.len() == 1 {
                    continue;
                }
                let successor = p
                    .replicas
                    .iter()
                    .copied()
                    .find(|r| *r != fenced && p.isr.contains(r) && live.contains(r));
                if p.leader == fenced && successor.is_none() {
                    // Nobody to take over: the ISR keeps naming who has the data.
                    continue;
                }
                p.isr.retain(|r| *r != fenced);
                p.partition_epoch += 1;
                if p.leader == fenced
                    && let Some(next) = successor
                {
                    p.elect(next);
                }
            }
        }
    }

    fn alter_isr(
        &mut self,
        topic: &str,
        partition: u32,
        leader: NodeId,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: &[NodeId],
    ) -> CommandResult {
        let live = self.live_brokers();
        let Some(p) = self
            .topics
            .get_mut(topic)
            .and_then(|t| t.partitions.get_mut(partition as usize))
        else {
            return CommandResult::Refused(MetadataError::UnknownTopic(topic.to_owned()));
        };
        if p.leader != leader
            || p.leader_epoch != leader_epoch
            || p.partition_epoch != partition_epoch
        {
            return CommandResult::Refused(MetadataError::Invalid(format!(
                "stale ISR change for {topic}-{partition}: leader {leader} epoch {leader_epoch} \
                 partition epoch {partition_epoch}, current leader {} epoch {} partition epoch {}",
                p.leader, p.leader_epoch, p.partition_epoch
            )));
        }
        let mut unique = isr.to_vec();
        unique.sort_unstable();
        unique.dedup();
        if unique.len() != isr.len() || isr.iter().any(|r| *r != leader && !live.contains(r)) {
            return CommandResult::Refused(MetadataError::Invalid(format!(
                "ISR {isr:?} of {topic}-{partition} repeats a broker or names a fenced one"
            )));
        }
        if !isr.contains(&leader) || isr.iter().any(|r| !p.replicas.contains(r)) {
            return CommandResult::Refused(MetadataError::Invalid(format!(
                "ISR {isr:?} must hold the leader and only replicas of {topic}-{partition}"
            )));
        }
        p.isr = isr.to_vec();
        p.partition_epoch += 1;
        // Leadership returns to the preferred replica once it is back in the ISR.
        let preferred = p.replicas[0];
        if p.leader != preferred && p.isr.contains(&preferred) && live.contains(&preferred) {
            p.elect(preferred);
        }
        CommandResult::Done
    }

    /// Applies a command that carries a request id once: a retry of one already applied
    /// (`Done`) is answered `Done` again, and changes nothing.
    fn once(
        &mut self,
        request: Option<uuid::Uuid>,
        apply: impl FnOnce(&mut Self) -> CommandResult,
    ) -> CommandResult {
        let request = request.filter(|r| !r.is_nil());
        if request.is_some_and(|r| self.applied_requests.contains(&r)) {
            return CommandResult::Done;
        }
        let result = apply(self);
        if let (Some(r), CommandResult::Done) = (request, &result) {
            if self.applied_requests.len() >= APPLIED_REQUESTS_KEPT {
                self.applied_requests.pop_front();
            }
            self.applied_requests.push_back(r);
        }
        result
    }

    fn add_partitions(&mut self, name: &str, partitions: u32) -> Result<(), MetadataError> {
        let brokers = self.live_brokers();
        let t = self
            .topics
            .get_mut(name)
            .ok_or_else(|| MetadataError::UnknownTopic(name.to_owned()))?;
        let have = t.partitions.len() as u32;
        if partitions <= have || partitions > TOPIC_PARTITIONS_MAX {
            return Err(MetadataError::Invalid(format!(
                "{name} has {have} partitions; it can only grow, up to {TOPIC_PARTITIONS_MAX} \
                 (asked {partitions})"
            )));
        }
        let rf = usize::from(t.replication_factor);
        if rf == 0 || rf > brokers.len() {
            return Err(MetadataError::NotEnoughBrokers {
                requested: t.replication_factor,
                available: brokers.len(),
            });
        }
        for p in have..partitions {
            t.partitions
                .push(PartitionMeta::assigned(p, &brokers, p as usize, rf));
        }
        Ok(())
    }

    fn create_topic(
        &mut self,
        name: &str,
        id: Option<uuid::Uuid>,
        partitions: u32,
        replication_factor: u16,
        configs: &TopicConfigs,
    ) -> Result<TopicMeta, MetadataError> {
        shared::names::validate_topic(name)
            .map_err(|e| MetadataError::InvalidTopic(e.to_string()))?;
        if let Some(t) = self.topics.get(name) {
            // A retry of the proposal that created it (its reply lost to a failed forward or
            // a dying controller leader) carries the same id: it gets the first answer.
            if id.is_some_and(|id| !id.is_nil() && id == t.id) {
                return Ok(t.clone());
            }
            return Err(MetadataError::TopicExists(name.to_owned()));
        }
        if partitions == 0 || partitions > TOPIC_PARTITIONS_MAX {
            return Err(MetadataError::Invalid(format!(
                "partitions must be 1..={TOPIC_PARTITIONS_MAX}, got {partitions}"
            )));
        }
        // Live brokers only: a fenced one would get replicas it cannot serve.
        let brokers = self.live_brokers();
        if replication_factor == 0 || usize::from(replication_factor) > brokers.len() {
            return Err(MetadataError::NotEnoughBrokers {
                requested: replication_factor,
                available: brokers.len(),
            });
        }
        // DESIGN §1: partition p starts at broker (start + p) mod n; the next replicas follow
        // in broker order, so leaders spread evenly.
        let start = (self.topics_created % brokers.len() as u64) as usize;
        let parts = (0..partitions)
            .map(|p| {
                PartitionMeta::assigned(
                    p,
                    &brokers,
                    start + p as usize,
                    usize::from(replication_factor),
                )
            })
            .collect();
        let id = id
            .filter(|id| !id.is_nil())
            .unwrap_or_else(|| derived_topic_id(name, 0));
        let topic = TopicMeta {
            name: name.to_owned(),
            id,
            partitions: parts,
            replication_factor,
            configs: configs.clone(),
        };
        self.topics_created += 1;
        self.topics.insert(name.to_owned(), topic.clone());
        Ok(topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_brokers(n: u64) -> MetadataState {
        let mut s = MetadataState::default();
        for id in 1..=n {
            s.apply(&MetadataCommand::RegisterBroker {
                id,
                address: format!("127.0.0.1:{}", 7400 + id),
                kafka_address: None,
                incarnation: 1,
            });
        }
        s
    }

    #[test]
    fn a_topic_grows_but_never_shrinks() {
        let mut s = with_brokers(3);
        s.apply(&MetadataCommand::CreateTopic {
            name: "logs".into(),
            id: None,
            partitions: 2,
            replication_factor: 2,
            configs: TopicConfigs::default(),
        });
        let grow = |s: &mut MetadataState, n| {
            s.apply(&MetadataCommand::AddPartitions {
                name: "logs".into(),
                partitions: n,
                request: None,
            })
        };
        assert_eq!(grow(&mut s, 5), CommandResult::Done);
        let t = &s.topics["logs"];
        assert_eq!(t.partitions.len(), 5);
        for (i, p) in t.partitions.iter().enumerate() {
            assert_eq!(p.partition, i as u32);
            assert_eq!(p.replicas.len(), 2);
            assert_eq!(p.isr, p.replicas);
        }
        assert!(matches!(
            grow(&mut s, 5),
            CommandResult::Refused(MetadataError::Invalid(_))
        ));
        assert!(matches!(
            grow(&mut s, 3),
            CommandResult::Refused(MetadataError::Invalid(_))
        ));
        assert!(matches!(
            s.apply(&MetadataCommand::AddPartitions {
                name: "nope".into(),
                partitions: 9,
                request: None,
            }),
            CommandResult::Refused(MetadataError::UnknownTopic(_))
        ));
    }

    /// The proposer retries a proposal whose reply it lost (a forward timed out, the
    /// controller leader died after committing): the retry must get the first answer, not
    /// `topic_exists` / `unknown_topic` for its own effect (campaign seed 316).
    #[test]
    fn a_retried_create_grow_or_delete_gets_the_answer_of_the_first_attempt() {
        let mut s = with_brokers(3);
        let create = |id| MetadataCommand::CreateTopic {
            name: "logs".into(),
            id: Some(id),
            partitions: 1,
            replication_factor: 2,
            configs: TopicConfigs::default(),
        };
        let first_id = new_topic_id();
        let CommandResult::TopicCreated(first) = s.apply(&create(first_id)) else {
            panic!("not created")
        };
        assert_eq!(
            s.apply(&create(first_id)),
            CommandResult::TopicCreated(first)
        );
        assert_eq!(s.topics_created, 1, "a retry creates nothing");
        // Another creation of the name is refused.
        assert_eq!(
            s.apply(&create(new_topic_id())),
            CommandResult::Refused(MetadataError::TopicExists("logs".into()))
        );
        let grow = |request| MetadataCommand::AddPartitions {
            name: "logs".into(),
            partitions: 2,
            request: Some(request),
        };
        let request = uuid::Uuid::new_v4();
        assert_eq!(s.apply(&grow(request)), CommandResult::Done);
        assert_eq!(s.apply(&grow(request)), CommandResult::Done);
        assert_eq!(s.topics["logs"].partitions.len(), 2);
        assert!(matches!(
            s.apply(&grow(uuid::Uuid::new_v4())),
            CommandResult::Refused(MetadataError::Invalid(_))
        ));
        let delete = |request| MetadataCommand::DeleteTopic {
            name: "logs".into(),
            request: Some(request),
        };
        let request = uuid::Uuid::new_v4();
        assert_eq!(s.apply(&delete(request)), CommandResult::Done);
        assert_eq!(s.apply(&delete(request)), CommandResult::Done);
        assert_eq!(
            s.apply(&delete(uuid::Uuid::new_v4())),
            CommandResult::Refused(MetadataError::UnknownTopic("logs".into()))
        );
        // Remembered through a snapshot, and only the last APPLIED_REQUESTS_KEPT.
        let mut restored: MetadataState =
            serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(restored.apply(&delete(request)), CommandResult::Done);
        for _ in 0..APPLIED_REQUESTS_KEPT {
            restored.apply(&create(new_topic_id()));
            restored.apply(&delete(uuid::Uuid::new_v4()));
        }
        assert_eq!(restored.applied_requests.len(), APPLIED_REQUESTS_KEPT);
        assert!(!restored.applied_requests.contains(&request));
    }

    #[test]
    fn round_robin_assignment_spreads_leaders() {
        let mut s = with_brokers(3);
        let r = s.apply(&MetadataCommand::CreateTopic {
            name: "logs".into(),
            id: None,
            partitions: 6,
            replication_factor: 3,
            configs: TopicConfigs::default(),
        });
        let CommandResult::TopicCreated(t) = r else {
            panic!("{r:?}")
        };
        let leaders: Vec<_> = t.partitions.iter().map(|p| p.leader).collect();
        assert_eq!(leaders, [1, 2, 3, 1, 2, 3]);
        assert_eq!(t.partitions[1].replicas, [2, 3, 1]);
        for p in &t.partitions {
            let mut r = p.replicas.clone();
            r.sort();
            r.dedup();
            assert_eq!(r.len(), 3, "replicas on distinct brokers");
        }
    }

    #[test]
    fn refusals_are_typed() {
        let mut s = with_brokers(1);
        let create = |name: &str, rf| MetadataCommand::CreateTopic {
            name: name.into(),
            id: None,
            partitions: 1,
            replication_factor: rf,
            configs: TopicConfigs::default(),
        };
        assert!(matches!(
            s.apply(&create("a", 2)),
            CommandResult::Refused(MetadataError::NotEnoughBrokers { .. })
        ));
        assert!(matches!(
            s.apply(&create("..", 1)),
            CommandResult::Refused(MetadataError::InvalidTopic(_))
        ));
        assert!(matches!(
            s.apply(&create("a", 1)),
            CommandResult::TopicCreated(_)
        ));
        assert!(matches!(
            s.apply(&create("a", 1)),
            CommandResult::Refused(MetadataError::TopicExists(_))
        ));
    }

    #[test]
    fn commits_never_move_backwards_but_resets_do() {
        let mut s = with_brokers(1);
        s.apply(&MetadataCommand::CreateTopic {
            name: "logs".into(),
            id: None,
            partitions: 2,
            replication_factor: 1,
            configs: TopicConfigs::default(),
        });
        let e = |p, o| OffsetEntry {
            topic: "logs".into(),
            partition: p,
            offset: o,
        };
        let commit = |offsets| MetadataCommand::CommitOffsets {
            group: "g".into(),
            offsets,
            now_ms: 5,
        };
        assert_eq!(
            s.apply(&commit(vec![e(0, 10), e(1, 3)])),
            CommandResult::Done
        );
        assert!(matches!(
            s.apply(&commit(vec![e(1, 4), e(0, 9)])),
            CommandResult::Refused(MetadataError::OffsetBackwards {
                committed: 10,
                requested: 9,
                ..
            })
        ));
        // Refused as a whole: partition 1 did not move.
        assert_eq!(s.groups["g"].get("logs", 1), Some(3));
        s.apply(&MetadataCommand::ResetOffsets {
            group: "g".into(),
            offsets: vec![e(0, 0)],
            now_ms: 6,
        });
        assert_eq!(s.groups["g"].get("logs", 0), Some(0));
        // Offsets of an unknown topic are not kept; deleting a topic drops its offsets.
        s.apply(&commit(vec![OffsetEntry {
            topic: "nope".into(),
            partition: 0,
            offset: 1,
        }]));
        assert!(!s.groups["g"].offsets.contains_key("nope"));
        s.apply(&MetadataCommand::DeleteTopic {
            name: "logs".into(),
            request: None,
        });
        assert!(s.groups["g"].offsets.is_empty());
        s.apply(&MetadataCommand::DeleteGroupOffsets { group: "g".into() });
        assert!(!s.groups.contains_key("g"));
    }

    #[test]
    fn a_broker_registering_with_a_new_incarnation_hands_its_leaderships_to_the_isr() {
        let mut s = MetadataState::default();
        for id in [1, 2] {
            s.apply(&MetadataCommand::RegisterBroker {
                id,
                address: format!("127.0.0.1:{}", 7400 + id),
                kafka_address: None,
                incarnation: 1,
            });
        }
        let CommandResult::TopicCreated(t) = s.apply(&MetadataCommand::CreateTopic {
            name: "t".into(),
            id: None,
            partitions: 2,
            replication_factor: 2,
            configs: TopicConfigs::default(),
        }) else {
            panic!("created")
        };
        let led_by = |s: &MetadataState, id: u64| -> Vec<(i32, i32)> {
            s.topics["t"]
                .partitions
                .iter()
                .filter(|p| p.leader == id)
                .map(|p| (p.leader_epoch, p.partition_epoch))
                .collect()
        };
        assert_eq!(t.partitions.len(), 2);
        let before1 = led_by(&s, 1);
        let before2 = led_by(&s, 2);
        assert!(!before1.is_empty() && !before2.is_empty());
        // The same incarnation again (an address update): nothing moves.
        s.apply(&MetadataCommand::RegisterBroker {
            id: 1,
            address: "127.0.0.1:7401".into(),
            kafka_address: None,
            incarnation: 1,
        });
        assert_eq!(led_by(&s, 1), before1);
        // A restart: broker 1's leaderships go to broker 2 (in sync) at the next epoch,
        // and broker 1 leaves the ISRs; it is back by catching up.
        s.apply(&MetadataCommand::RegisterBroker {
            id: 1,
            address: "127.0.0.1:7401".into(),
            kafka_address: None,
            incarnation: 2,
        });
        assert!(led_by(&s, 1).is_empty());
        assert_eq!(led_by(&s, 2).len(), 2);
        for p in &s.topics["t"].partitions {
            assert_eq!(p.isr, vec![2], "{p:?}");
        }
        // The ones it took over are at a new epoch; its own kept theirs.
        let epochs: Vec<(i32, i32)> = led_by(&s, 2);
        assert_eq!(
            epochs.iter().filter(|(e, _)| *e == 1).count(),
            before1.len()
        );
        assert_eq!(
            epochs.iter().filter(|(e, _)| *e == 0).count(),
            before2.len()
        );
        // Restarted again while the only in-sync replica, broker 2 keeps leading, at a
        // new epoch each time.
        let epochs: Vec<i32> = s.topics["t"]
            .partitions
            .iter()
            .map(|p| p.leader_epoch)
            .collect();
        s.apply(&MetadataCommand::RegisterBroker {
            id: 2,
            address: "127.0.0.1:7402".into(),
            kafka_address: None,
            incarnation: 2,
        });
        for (p, e) in s.topics["t"].partitions.iter().zip(epochs) {
            assert_eq!((p.leader, p.leader_epoch), (2, e + 1), "{p:?}");
            assert_eq!(p.isr, vec![2]);
        }
    }

    #[test]
    fn fencing_moves_leadership_within_the_isr_and_stale_isr_changes_are_refused() {
        let mut s = with_brokers(3);
        s.apply(&MetadataCommand::CreateTopic {
            name: "t".into(),
            id: None,
            partitions: 1,
            replication_factor: 3,
            configs: TopicConfigs::default(),
        });
        let p = |s: &MetadataState| s.topics["t"].partitions[0].clone();
        assert_eq!((p(&s).leader, p(&s).leader_epoch), (1, 0));
        // The leader is fenced: the next ISR member leads, with a new epoch.
        s.apply(&MetadataCommand::FenceBroker { id: 1 });
        let after = p(&s);
        assert_eq!((after.leader, after.leader_epoch), (2, 1));
        assert_eq!(after.isr, [2, 3]);
        // The old leader's ISR change (old epochs) is refused.
        let stale = MetadataCommand::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
            isr: vec![1],
        };
        assert!(matches!(s.apply(&stale), CommandResult::Refused(_)));
        // The new leader shrinks the ISR to itself; fencing its last member changes nothing.
        let shrink = MetadataCommand::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader: 2,
            leader_epoch: after.leader_epoch,
            partition_epoch: after.partition_epoch,
            isr: vec![2],
        };
        assert_eq!(s.apply(&shrink), CommandResult::Done);
        s.apply(&MetadataCommand::FenceBroker { id: 2 });
        assert_eq!(p(&s).leader, 2, "no unclean election");
        assert_eq!(p(&s).isr, [2]);
        // Broker 1 returns and rejoins the ISR: leadership goes back to the preferred replica.
        s.apply(&MetadataCommand::UnfenceBroker { id: 1 });
        s.apply(&MetadataCommand::UnfenceBroker { id: 2 });
        let cur = p(&s);
        s.apply(&MetadataCommand::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader: 2,
            leader_epoch: cur.leader_epoch,
            partition_epoch: cur.partition_epoch,
            isr: vec![2, 1],
        });
        assert_eq!(p(&s).leader, 1);
        assert_eq!(p(&s).leader_epoch, cur.leader_epoch + 1);
        // Batched: each change judged alone, results in order.
        let cur = p(&s);
        let change = |isr: Vec<NodeId>, partition_epoch| IsrChange {
            topic: "t".into(),
            partition: 0,
            leader: 1,
            leader_epoch: cur.leader_epoch,
            partition_epoch,
            isr,
        };
        let r = s.apply(&MetadataCommand::AlterIsrs {
            changes: vec![
                change(vec![1, 2], cur.partition_epoch),
                change(vec![1], cur.partition_epoch), // stale now: the first one bumped it
                change(vec![1], cur.partition_epoch + 1),
            ],
        });
        let CommandResult::Each(results) = r else {
            panic!("{r:?}")
        };
        assert_eq!(results[0], CommandResult::Done);
        assert!(matches!(results[1], CommandResult::Refused(_)));
        assert_eq!(results[2], CommandResult::Done);
        assert_eq!(p(&s).isr, [1]);
    }

    #[test]
    fn producer_ids_never_repeat() {
        let mut s = MetadataState::default();
        let a = s.apply(&MetadataCommand::AllocateProducerIds { count: 1 });
        let b = s.apply(&MetadataCommand::AllocateProducerIds { count: 5 });
        let c = s.apply(&MetadataCommand::AllocateProducerIds { count: 1 });
        assert_eq!(a, CommandResult::ProducerIds { first: 0, count: 1 });
        assert_eq!(b, CommandResult::ProducerIds { first: 1, count: 5 });
        assert_eq!(c, CommandResult::ProducerIds { first: 6, count: 1 });
    }
}
