//! Consumer groups: who reads which partition, and committed offsets.
//!
//! - [`assignor`]: the balanced, sticky target assignment (pure).
//! - [`coordinator`]: membership, member epochs and the hand-over of partitions (pure,
//!   in memory: members rejoin after a coordinator restart).
//! - this module: the service the HTTP API calls. Committed offsets go through the
//!   controller's Raft state machine, so they are durable and survive restarts.
//!
//! A commit is accepted only from a current member (epoch) that holds every partition it
//! names, only up to the high watermark, and never backwards (`reset_offsets` is the
//! explicit way back, refused while the group has members).

pub mod assignor;
pub mod classic;
pub mod coordinator;

use api::acls::{Operation as Op, ResourceType as Rt};

use crate::auth::Caller;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::broker::partition::now_ms;
use crate::broker::{Broker, BrokerError};
use crate::controller::state::{CommandResult, GroupOffsets, MetadataCommand, OffsetEntry};
use crate::storage::manager::TopicPartition;
use assignor::Tp;
pub use coordinator::{
    Coordinator, GroupError, GroupSettings, HeartbeatReply, HeartbeatRequest, TopicPartitions,
};

#[derive(Debug, thiserror::Error)]
pub enum GroupsError {
    #[error("invalid group name: {0}")]
    InvalidGroup(String),
    #[error(transparent)]
    Member(#[from] GroupError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("offset {offset} for {topic}-{partition} is above the high watermark {high_watermark}")]
    AboveHighWatermark {
        topic: String,
        partition: u32,
        offset: u64,
        high_watermark: u64,
    },
    #[error("group {group} has {members} members; stop them before resetting offsets")]
    NotEmpty { group: String, members: usize },
    #[error("unknown group {0}")]
    UnknownGroup(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("invalid reset: {0}")]
    InvalidReset(String),
    /// A relayed request reached a node that is not the active controller (leadership is
    /// moving).
    #[error("the group coordinator is moving to a new controller leader; retry")]
    CoordinatorMoving,
    #[error("no controller leader yet; retry")]
    NoController,
    #[error("forwarding to the group coordinator at {address}: {message}")]
    CoordinatorUnavailable { address: String, message: String },
    /// A Kafka classic-protocol member's request refused.
    #[error("{0}")]
    Classic(#[from] classic::ClassicError),
    /// The coordinator's own refusal of a relayed request.
    #[error("{}", .0.message)]
    Relayed(api::ErrorBody),
}

impl GroupsError {
    fn from_relay(address: &str, e: client::ClientError) -> Self {
        match e {
            client::ClientError::Api { error, .. } => GroupsError::Relayed(error),
            other => GroupsError::CoordinatorUnavailable {
                address: address.to_owned(),
                message: other.to_string(),
            },
        }
    }
}

pub use api::{CommitRequest, GroupSummary, GroupView, MemberView, PartitionView, ResetTo};

/// A server-side group as Kafka's ConsumerGroupDescribe shows it.
#[derive(Debug, Clone)]
pub struct ConsumerGroupView {
    /// Bumped whenever the target assignment is recomputed.
    pub epoch: i32,
    /// `stable`, `reconciling` (or `empty`).
    pub state: &'static str,
    pub members: Vec<ConsumerMemberView>,
}

#[derive(Debug, Clone)]
pub struct ConsumerMemberView {
    pub member_id: String,
    pub member_epoch: i32,
    pub client: String,
    pub topics: Vec<String>,
    /// What it may read now.
    pub assigned: BTreeSet<Tp>,
    /// What the assignor wants it to have.
    pub target: BTreeSet<Tp>,
}

#[derive(Debug)]
pub struct GroupService {
    broker: Arc<Broker>,
    coordinator: Mutex<Coordinator>,
    /// The controller term in which this node last coordinated (see [`Coordinator::take_over`]).
    coordinating_term: Mutex<Option<u64>>,
    /// Monotonic base for session deadlines.
    started: Instant,
    started_wall_ms: i64,
    /// Wall-clock ms a group last had a member (for offsets retention).
    last_active_ms: Mutex<HashMap<String, i64>>,
    offsets_retention_ms: i64,
    /// Kafka's classic group protocol (JoinGroup/SyncGroup), for Kafka clients.
    pub classic: classic::ClassicGroups,
}

use shared::sys::lock;

pub fn validate_group(name: &str) -> Result<(), GroupsError> {
    // Group names appear in URLs and metric labels: the topic-name rules fit.
    shared::names::validate_topic(name).map_err(|e| GroupsError::InvalidGroup(e.to_string()))
}

impl GroupService {
    pub fn new(broker: Arc<Broker>) -> Self {
        let g = &broker.config.groups;
        let settings = GroupSettings {
            session_timeout_ms: g.session_timeout_ms,
            heartbeat_interval_ms: g.heartbeat_interval_ms,
            max_members_per_group: g.max_members_per_group,
            max_groups: g.max_groups,
        };
        let offsets_retention_ms = g.offsets_retention_ms;
        let wall = now_ms();
        // Member ids stay unique across restarts of this node.
        let prefix = format!("{}-{:x}", broker.config.node_id, wall);
        Self {
            coordinator: Mutex::new(Coordinator::new(settings, prefix)),
            coordinating_term: Mutex::new(None),
            broker,
            started: Instant::now(),
            started_wall_ms: wall,
            last_active_ms: Mutex::new(HashMap::new()),
            offsets_retention_ms,
            classic: classic::ClassicGroups::default(),
        }
    }

    /// The coordinator, taken over afresh when this node coordinates in a new controller
    /// term: members of the previous coordinator are then adopted from their heartbeats.
    fn coordinator(&self) -> std::sync::MutexGuard<'_, Coordinator> {
        let mut c = lock(&self.coordinator);
        if let Some(term) = self.broker.controller.leader_term() {
            let mut seen = lock(&self.coordinating_term);
            if *seen != Some(term) {
                *seen = Some(term);
                let previous = self
                    .broker
                    .controller
                    .metadata()
                    .groups
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>();
                let tenure = self.broker.controller.new_tenure(term);
                tracing::info!(
                    term,
                    tenure,
                    groups = previous.len(),
                    "coordinating groups: adopting the previous coordinator's members from their heartbeats"
                );
                c.take_over(
                    self.mono_ms(),
                    coordinator::epoch_base(term, tenure),
                    previous,
                );
            }
        }
        c
    }

    fn mono_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// topic -> partition count, from the metadata.
    fn partition_counts(&self) -> BTreeMap<String, u32> {
        self.broker
            .controller
            .metadata()
            .topics
            .values()
            .map(|t| (t.name.clone(), t.partitions.len() as u32))
            .collect()
    }

    /// `(high watermark, log start)` of a partition held here; `(0, 0)` before its log exists.
    fn offsets_of(&self, topic: &str, partition: u32) -> (u64, u64) {
        self.broker.local_offsets(topic, partition)
    }

    pub fn heartbeat(
        &self,
        group: &str,
        req: &HeartbeatRequest,
    ) -> Result<HeartbeatReply, GroupsError> {
        validate_group(group)?;
        if self.classic.has_members(group) {
            return Err(GroupsError::Invalid(format!(
                "group {group} has Kafka (classic protocol) members; a group is of one type at a time"
            )));
        }
        let parts = self.partition_counts();
        let reply = self
            .coordinator()
            .heartbeat(group, req, self.mono_ms(), &parts)?;
        lock(&self.last_active_ms).insert(group.to_owned(), now_ms());
        Ok(reply)
    }

    /// Whether this coordinator is adopting the previous one's members and does not know
    /// `member` yet (see [`Coordinator::would_adopt`]).
    pub fn would_adopt(&self, group: &str, member: &str) -> bool {
        self.coordinator()
            .would_adopt(group, member, self.mono_ms())
    }

    /// Checks commit offsets: known partitions, each once, none above its high watermark.
    async fn check_offsets(&self, offsets: &[OffsetEntry]) -> Result<BTreeSet<Tp>, GroupsError> {
        let meta = self.broker.controller.metadata();
        let mut tps: BTreeSet<Tp> = BTreeSet::new();
        for e in offsets {
            let count = meta
                .topics
                .get(&e.topic)
                .map(|t| t.partitions.len() as u32)
                .ok_or_else(|| BrokerError::UnknownTopic(e.topic.clone()))?;
            if e.partition >= count {
                return Err(BrokerError::UnknownPartition {
                    topic: e.topic.clone(),
                    partition: e.partition,
                    count,
                }
                .into());
            }
            if !tps.insert((e.topic.clone(), e.partition)) {
                return Err(GroupsError::Invalid(format!(
                    "{}-{} appears twice",
                    e.topic, e.partition
                )));
            }
            let (hw, _) = self.broker.partition_offsets(&e.topic, e.partition).await?;
            if e.offset > hw {
                return Err(GroupsError::AboveHighWatermark {
                    topic: e.topic.clone(),
                    partition: e.partition,
                    offset: e.offset,
                    high_watermark: hw,
                });
            }
        }
        Ok(tps)
    }

    /// A commit by a consumer outside any membership (a Kafka consumer using `assign()`,
    /// which commits with generation -1): allowed only while the group has no members,
    /// so it cannot move offsets under members that own the partitions.
    pub async fn commit_standalone(
        &self,
        group: &str,
        offsets: Vec<OffsetEntry>,
    ) -> Result<(), GroupsError> {
        validate_group(group)?;
        self.check_offsets(&offsets).await?;
        if let Some(g) = self.coordinator().group(group)
            && !g.members.is_empty()
        {
            return Err(GroupsError::NotEmpty {
                group: group.to_owned(),
                members: g.members.len(),
            });
        }
        if let Some((members, _)) = self.classic.describe(group)
            && members > 0
        {
            return Err(GroupsError::NotEmpty {
                group: group.to_owned(),
                members,
            });
        }
        self.commit_unchecked(group, offsets).await
    }

    /// A commit by a current member of a classic (Kafka JoinGroup) group.
    pub async fn commit_classic(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
        offsets: Vec<OffsetEntry>,
    ) -> Result<(), GroupsError> {
        self.classic.check_commit(group, member_id, generation)?;
        self.check_offsets(&offsets).await?;
        self.commit_unchecked(group, offsets).await
    }

    async fn commit_unchecked(
        &self,
        group: &str,
        offsets: Vec<OffsetEntry>,
    ) -> Result<(), GroupsError> {
        if offsets.is_empty() {
            return Ok(());
        }
        self.propose(MetadataCommand::CommitOffsets {
            group: group.to_owned(),
            offsets,
            now_ms: now_ms(),
        })
        .await
    }

    /// Deletes a group's committed offsets; refused while it has members of either kind.
    pub async fn delete_group(&self, group: &str) -> Result<(), GroupsError> {
        validate_group(group)?;
        let members = self
            .coordinator()
            .group(group)
            .map_or(0, |g| g.members.len())
            + self.classic.describe(group).map_or(0, |(m, _)| m);
        if members > 0 {
            return Err(GroupsError::NotEmpty {
                group: group.to_owned(),
                members,
            });
        }
        if !self.broker.controller.metadata().groups.contains_key(group) {
            return Err(GroupsError::UnknownGroup(group.to_owned()));
        }
        self.propose(MetadataCommand::DeleteGroupOffsets {
            group: group.to_owned(),
        })
        .await?;
        lock(&self.last_active_ms).remove(group);
        Ok(())
    }

    /// Whether the server-side coordinator (`collector tail` members) holds `group`.
    pub fn has_server_side_members(&self, group: &str) -> bool {
        self.coordinator()
            .group(group)
            .is_some_and(|g| !g.members.is_empty())
    }

    /// Checks that `member_id` is a current member of `group` at `member_epoch` (a KIP-848
    /// member fetching its offsets).
    pub fn check_member(
        &self,
        group: &str,
        member_id: &str,
        member_epoch: i32,
    ) -> Result<(), GroupsError> {
        self.coordinator()
            .check_commit(group, member_id, member_epoch, &BTreeSet::new())?;
        Ok(())
    }

    /// A server-side group's members, assignments and targets (for Kafka's
    /// ConsumerGroupDescribe); `None` when it has no members.
    pub fn consumer_view(&self, group: &str) -> Option<ConsumerGroupView> {
        let coord = self.coordinator();
        let g = coord.group(group).filter(|g| !g.members.is_empty())?;
        Some(ConsumerGroupView {
            epoch: g.epoch,
            state: g.state(),
            members: g
                .members
                .values()
                .map(|m| ConsumerMemberView {
                    member_id: m.id.clone(),
                    member_epoch: m.epoch,
                    client: m.client.clone(),
                    topics: m.topics.iter().cloned().collect(),
                    assigned: m.assigned.clone(),
                    target: g
                        .target
                        .iter()
                        .filter(|(_, owner)| **owner == m.id)
                        .map(|(tp, _)| tp.clone())
                        .collect(),
                })
                .collect(),
        })
    }

    /// Whether this node coordinates groups: the active controller, once its metadata has
    /// caught up with its term ([`crate::controller::Controller::leader_ready`]).
    pub fn is_coordinator(&self) -> bool {
        self.broker.controller.leader_ready()
    }

    pub async fn commit(&self, group: &str, req: CommitRequest) -> Result<(), GroupsError> {
        validate_group(group)?;
        let tps = self.check_offsets(&req.offsets).await?;
        self.coordinator()
            .check_commit(group, &req.member_id, req.member_epoch, &tps)?;
        if req.offsets.is_empty() {
            return Ok(());
        }
        self.propose(MetadataCommand::CommitOffsets {
            group: group.to_owned(),
            offsets: req.offsets,
            now_ms: now_ms(),
        })
        .await
    }

    async fn propose(&self, cmd: MetadataCommand) -> Result<(), GroupsError> {
        match self
            .broker
            .controller
            .propose(cmd)
            .await
            .map_err(BrokerError::from)?
        {
            CommandResult::Done => Ok(()),
            CommandResult::Refused(e) => Err(BrokerError::from(e).into()),
            other => {
                Err(BrokerError::Internal(format!("unexpected controller reply {other:?}")).into())
            }
        }
    }

    /// The committed offsets of a group (empty when it has none).
    pub fn offsets(&self, group: &str) -> Result<GroupOffsets, GroupsError> {
        validate_group(group)?;
        Ok(self
            .broker
            .controller
            .metadata()
            .groups
            .get(group)
            .cloned()
            .unwrap_or_default())
    }

    pub fn list(&self) -> Vec<GroupSummary> {
        let meta = self.broker.controller.metadata();
        let coord = self.coordinator();
        let mut names: BTreeSet<String> = meta.groups.keys().cloned().collect();
        names.extend(coord.group_names());
        names.extend(self.classic.group_names());
        names
            .into_iter()
            .map(|name| {
                let g = coord.group(&name);
                // A group of Kafka (classic protocol) members shows their state and count.
                let kafka = self.classic.view(&name).filter(|v| !v.members.is_empty());
                GroupSummary {
                    state: match &kafka {
                        Some(v) => format!("kafka:{}", v.state),
                        None => g.map_or("empty", coordinator::Group::state).to_owned(),
                    },
                    members: kafka
                        .as_ref()
                        .map_or_else(|| g.map_or(0, |g| g.members.len()), |v| v.members.len()),
                    partitions_committed: meta
                        .groups
                        .get(&name)
                        .map_or(0, |o| o.offsets.values().map(BTreeMap::len).sum()),
                    group: name,
                }
            })
            .collect()
    }

    pub async fn describe(&self, group: &str) -> Result<GroupView, GroupsError> {
        validate_group(group)?;
        let meta = self.broker.controller.metadata();
        let committed = meta.groups.get(group);
        // What the coordinator knows, taken under its lock (no await while holding it).
        let (state, group_epoch, members, owners, mut topics) = {
            let coord = self.coordinator();
            let live = coord.group(group);
            if committed.is_none() && live.is_none() {
                return Err(GroupsError::UnknownGroup(group.to_owned()));
            }
            let mut owners: BTreeMap<Tp, String> = BTreeMap::new();
            let mut topics: BTreeSet<String> = BTreeSet::new();
            let mut members = Vec::new();
            if let Some(g) = live {
                for m in g.members.values() {
                    for tp in m.assigned.iter().chain(&m.revoking) {
                        owners.insert(tp.clone(), m.id.clone());
                    }
                    topics.extend(m.topics.iter().cloned());
                    members.push(MemberView {
                        member_id: m.id.clone(),
                        member_epoch: m.epoch,
                        client: m.client.clone(),
                        topics: m.topics.iter().cloned().collect(),
                        assignment: coordinator::to_wire(&m.assigned),
                        revoking: coordinator::to_wire(&m.revoking),
                    });
                }
            }
            (
                live.map_or("empty", coordinator::Group::state),
                live.map_or(0, |g| g.epoch),
                members,
                owners,
                topics,
            )
        };
        // Partitions: every one of a subscribed topic, and every one with an offset.
        if let Some(c) = committed {
            topics.extend(c.offsets.keys().cloned());
        }
        let mut partitions = Vec::new();
        for topic in &topics {
            let Some(t) = meta.topics.get(topic) else {
                continue;
            };
            for p in 0..t.partitions.len() as u32 {
                // A leader that cannot be asked shows as (0, 0) rather than failing it all.
                let (hw, start) = self
                    .broker
                    .partition_offsets(topic, p)
                    .await
                    .unwrap_or((0, 0));
                let c = committed.and_then(|c| c.get(topic, p));
                partitions.push(PartitionView {
                    topic: topic.clone(),
                    partition: p,
                    owner: owners.get(&(topic.clone(), p)).cloned(),
                    committed: c,
                    high_watermark: hw,
                    log_start_offset: start,
                    lag: hw.saturating_sub(c.unwrap_or(start).max(start)),
                });
            }
        }
        Ok(GroupView {
            group: group.to_owned(),
            state: state.to_owned(),
            group_epoch,
            members,
            partitions,
        })
    }

    /// Moves a group's offsets for `topic` (all partitions, or those listed). Refused while
    /// the group has members.
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        partitions: Option<Vec<u32>>,
        to: ResetTo,
    ) -> Result<Vec<OffsetEntry>, GroupsError> {
        validate_group(group)?;
        if let Some(g) = self.coordinator().group(group)
            && !g.members.is_empty()
        {
            return Err(GroupsError::NotEmpty {
                group: group.to_owned(),
                members: g.members.len(),
            });
        }
        let meta = self.broker.controller.metadata();
        let t = meta
            .topics
            .get(topic)
            .ok_or_else(|| BrokerError::UnknownTopic(topic.to_owned()))?;
        let count = t.partitions.len() as u32;
        let parts = partitions.unwrap_or_else(|| (0..count).collect());
        let mut offsets = Vec::with_capacity(parts.len());
        for p in parts {
            if p >= count {
                return Err(BrokerError::UnknownPartition {
                    topic: topic.to_owned(),
                    partition: p,
                    count,
                }
                .into());
            }
            let (hw, start) = self.broker.partition_offsets(topic, p).await?;
            let offset = match to {
                ResetTo::Earliest => start,
                ResetTo::Latest => hw,
                ResetTo::Offset(n) => n.clamp(start, hw),
                ResetTo::Timestamp(ts) => self.offset_for_timestamp(topic, p, ts)?.unwrap_or(hw),
            };
            offsets.push(OffsetEntry {
                topic: topic.to_owned(),
                partition: p,
                offset: offset.min(hw),
            });
        }
        self.propose(MetadataCommand::ResetOffsets {
            group: group.to_owned(),
            offsets: offsets.clone(),
            now_ms: now_ms(),
        })
        .await?;
        Ok(offsets)
    }

    fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        ts: i64,
    ) -> Result<Option<u64>, GroupsError> {
        let Some(log) = self.broker.logs.get(&TopicPartition::new(topic, partition)) else {
            return Ok(None);
        };
        let limits = self.broker.config.batch_limits();
        let l = shared::sys::lock(&log);
        l.offset_for_timestamp(ts, &limits)
            .map_err(|e| BrokerError::from(e).into())
    }

    /// Removes members whose session expired and offsets of groups idle past
    /// `offsets_retention_ms`. Called periodically.
    pub async fn sweep(&self) {
        self.classic.sweep();
        let parts = self.partition_counts();
        let (mut live, expired): (BTreeSet<String>, usize) = {
            let mut c = self.coordinator();
            let n = c.expire(self.mono_ms(), &parts);
            (c.group_names().into_iter().collect(), n)
        };
        // Groups with Kafka classic-protocol members are active too.
        live.extend(self.classic.group_names());
        if expired > 0 {
            tracing::info!(members = expired, "expired group members");
        }
        // A forward step of the wall clock must not expire every idle group's offsets.
        let now = shared::sys::expiry_now_ms();
        let doomed: Vec<String> = {
            let mut active = lock(&self.last_active_ms);
            for g in &live {
                active.insert(g.clone(), now);
            }
            self.broker
                .controller
                .metadata()
                .groups
                .iter()
                .filter(|(name, o)| {
                    let seen = active.get(*name).copied().unwrap_or(self.started_wall_ms);
                    !live.contains(*name)
                        && now - o.updated_ms.max(seen) > self.offsets_retention_ms
                })
                .map(|(name, _)| name.clone())
                .collect()
        };
        for group in doomed {
            tracing::info!(%group, "offsets retention: deleting the offsets of an idle group");
            if let Err(e) = self
                .propose(MetadataCommand::DeleteGroupOffsets {
                    group: group.clone(),
                })
                .await
            {
                tracing::warn!(%group, error = %e, "deleting expired group offsets failed");
            } else {
                lock(&self.last_active_ms).remove(&group);
            }
        }
    }

    // ---- routing: group coordination lives on the active controller ----
    //
    // One coordinator per cluster (the offsets it commits are Raft proposals anyway). Any
    // other node relays group requests there; a relayed request is never relayed again.

    /// Where a group request must go instead, if this node is not the active controller.
    fn coordinator_elsewhere(&self, forwarded: bool) -> Result<Option<String>, GroupsError> {
        let c = &self.broker.controller;
        if c.is_leader() {
            // Not before its metadata has caught up with its term (a retriable answer).
            if !c.leader_ready() {
                return Err(GroupsError::CoordinatorMoving);
            }
            return Ok(None);
        }
        if forwarded {
            return Err(GroupsError::CoordinatorMoving);
        }
        c.leader_address()
            .map(|a| Some(self.broker.relay.config().base_url(&a)))
            .ok_or(GroupsError::NoController)
    }

    /// Runs `local` here when this node coordinates groups, else `remote` with the
    /// coordinator's base URL (callers use the relay client, `self.broker.relay`).
    async fn routed<T, L, R>(
        &self,
        forwarded: bool,
        local: impl FnOnce() -> L,
        remote: impl FnOnce(String) -> R,
    ) -> Result<T, GroupsError>
    where
        L: std::future::Future<Output = Result<T, GroupsError>>,
        R: std::future::Future<Output = Result<T, client::ClientError>>,
    {
        match self.coordinator_elsewhere(forwarded)? {
            None => local().await,
            Some(base) => remote(base.clone())
                .await
                .map_err(|e| GroupsError::from_relay(&base, e)),
        }
    }

    /// A member's heartbeat, wherever the coordinator is.
    pub async fn heartbeat_routed(
        &self,
        caller: &Caller,
        group: &str,
        req: &HeartbeatRequest,
        forwarded: bool,
    ) -> Result<HeartbeatReply, GroupsError> {
        self.authorize(caller, Op::Read, group)?;
        let relay = &self.broker.relay;
        self.routed(
            forwarded,
            || async { self.heartbeat(group, req) },
            |base| async move { relay.heartbeat(Some(&base), group, req, true).await },
        )
        .await
    }

    /// A member's commit, wherever the coordinator is.
    pub async fn commit_routed(
        &self,
        caller: &Caller,
        group: &str,
        req: CommitRequest,
        forwarded: bool,
    ) -> Result<api::CommitReply, GroupsError> {
        self.authorize(caller, Op::Read, group)?;
        for o in &req.offsets {
            self.broker
                .authorize(caller, Op::Read, Rt::Topic, &o.topic)
                .map_err(GroupsError::Broker)?;
        }
        let committed = req.offsets.len();
        let relay = &self.broker.relay;
        let r = &req;
        self.routed(
            forwarded,
            || async {
                self.commit(group, req.clone()).await?;
                Ok(api::CommitReply { committed })
            },
            |base| async move { relay.commit(Some(&base), group, r, true).await },
        )
        .await
    }

    /// The groups `caller` may DESCRIBE.
    pub async fn list_routed(
        &self,
        caller: &Caller,
        forwarded: bool,
    ) -> Result<api::GroupList, GroupsError> {
        let relay = &self.broker.relay;
        let mut list = self
            .routed(
                forwarded,
                || async {
                    Ok(api::GroupList {
                        groups: self.list(),
                    })
                },
                |base| async move { relay.list_groups(Some(&base), true).await },
            )
            .await?;
        list.groups
            .retain(|g| self.broker.may_describe(caller, Rt::Group, &g.group));
        Ok(list)
    }

    /// Refuses `caller` doing `operation` on `group` unless the ACLs allow it.
    pub fn authorize(
        &self,
        caller: &Caller,
        operation: Op,
        group: &str,
    ) -> Result<(), GroupsError> {
        self.broker
            .authorize(caller, operation, Rt::Group, group)
            .map_err(GroupsError::Broker)
    }

    pub async fn describe_routed(
        &self,
        caller: &Caller,
        group: &str,
        forwarded: bool,
    ) -> Result<GroupView, GroupsError> {
        self.authorize(caller, Op::Describe, group)?;
        let relay = &self.broker.relay;
        self.routed(
            forwarded,
            || self.describe(group),
            |base| async move { relay.describe_group(Some(&base), group, true).await },
        )
        .await
    }

    /// Resets a group's offsets (refused while it has members), wherever the coordinator is.
    pub async fn reset_routed(
        &self,
        caller: &Caller,
        group: &str,
        req: api::ResetRequest,
        forwarded: bool,
    ) -> Result<api::GroupOffsetsReply, GroupsError> {
        self.authorize(caller, Op::Read, group)?;
        self.broker
            .authorize(caller, Op::Read, Rt::Topic, &req.topic)
            .map_err(GroupsError::Broker)?;
        shared::names::validate_topic(&req.topic)
            .map_err(|e| GroupsError::Broker(BrokerError::InvalidTopic(e.to_string())))?;
        let to: ResetTo = req.to.parse().map_err(GroupsError::InvalidReset)?;
        let relay = &self.broker.relay;
        let r = &req;
        self.routed(
            forwarded,
            || async {
                let offsets = self
                    .reset_offsets(group, &req.topic, req.partitions.clone(), to)
                    .await?;
                Ok(api::GroupOffsetsReply {
                    group: group.to_owned(),
                    offsets,
                })
            },
            |base| async move { relay.reset_offsets(Some(&base), group, r, true).await },
        )
        .await
    }

    /// The committed offsets of a group as the API shows them.
    /// A group's committed offsets, read on the coordinator (the active controller): a
    /// commit is acknowledged once applied there, so what it answers includes every
    /// acknowledged commit. Any other node's copy may lag — by milliseconds, or for as long
    /// as a node whose Raft core stopped takes to stop itself — and a member starting from
    /// an older offset reads records again (found by the fault campaign, seed 6035).
    pub async fn offsets_routed(
        &self,
        caller: &Caller,
        group: &str,
        forwarded: bool,
    ) -> Result<api::GroupOffsetsReply, GroupsError> {
        self.authorize(caller, Op::Describe, group)?;
        let relay = &self.broker.relay;
        self.routed(
            forwarded,
            || async { self.offsets_reply(group) },
            |base| async move { relay.group_offsets(Some(&base), group, true).await },
        )
        .await
    }

    fn offsets_reply(&self, group: &str) -> Result<api::GroupOffsetsReply, GroupsError> {
        let o = self.offsets(group)?;
        Ok(api::GroupOffsetsReply {
            group: group.to_owned(),
            offsets: o
                .offsets
                .iter()
                .flat_map(|(topic, parts)| {
                    parts.iter().map(move |(p, off)| OffsetEntry {
                        topic: topic.clone(),
                        partition: *p,
                        offset: *off,
                    })
                })
                .collect(),
        })
    }

    /// `(group, topic, partition, lag)` for every committed offset (for `/metrics`).
    pub fn lags(&self) -> Vec<(String, String, u32, u64)> {
        let meta = self.broker.controller.metadata();
        let mut out = Vec::new();
        for (group, o) in &meta.groups {
            for (topic, parts) in &o.offsets {
                for (p, committed) in parts {
                    let (hw, start) = self.offsets_of(topic, *p);
                    out.push((
                        group.clone(),
                        topic.clone(),
                        *p,
                        hw.saturating_sub((*committed).max(start)),
                    ));
                }
            }
        }
        out
    }
}
