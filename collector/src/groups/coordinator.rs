//! Group membership and partition ownership: a pure state machine driven by heartbeats and
//! a clock passed in (milliseconds of a monotonic clock), so it is tested without time.
//!
//! The protocol follows the spirit of Kafka's KIP-848: the coordinator owns the assignment;
//! members heartbeat with what they own and get back their assignment and member epoch.
//!
//! Invariants:
//! - No partition is in two members' `assigned ∪ revoking` at once: a partition is handed to
//!   a member only when no other member holds it, and a member holds what it was asked to
//!   give up (`revoking`) until it heartbeats, at its current epoch, without it — or until
//!   its session expires or it leaves.
//! - A heartbeat or commit from an epoch other than the member's current one or the one
//!   before is refused (the member must rejoin).
//! - A member id never gets the same epoch twice, across coordinators too: a member this
//!   coordinator does not know starts at the epoch base of its controller term and tenure
//!   ([`epoch_base`]), above every epoch an earlier coordinator gave (see there for the
//!   bound). Without that, a member fenced by one coordinator that rejoins under its id
//!   at the next would count from 0 again, and a request from its old incarnation at a
//!   repeated epoch would pass the check.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::assignor::{self, Tp};

/// Epochs of one controller term: split among the tenures of its leader (see below).
const EPOCHS_PER_TERM: i64 = 1 << 20;
/// Terms before the bases wrap around (`TERMS_BEFORE_WRAP * EPOCHS_PER_TERM` = 2^31).
const TERMS_BEFORE_WRAP: u64 = 1 << 11;
/// Epochs one coordinator process may give a member before they run into the next
/// tenure's base: 64 tenures per term.
const EPOCHS_PER_TENURE: i64 = 1 << 14;

/// Where the member epochs of a coordinator start: controller term `term`, the `tenure`th
/// process of this node leading it (a leader restarted quickly resumes its term:
/// [`crate::controller::Controller::new_tenure`]).
///
/// Member state is not replicated, so a new coordinator cannot know what epochs the last
/// one gave; it starts members it does not know at a base above them instead. Terms only
/// grow and one node leads a term, so the base is above every epoch an earlier tenure gave
/// as long as no member saw 2^14 (16,384) assignment changes under one coordinator
/// process, and no leader restarted 64 times within one term. The i32 epoch space holds
/// 2,048 terms of bases; then they wrap around. Epochs are only compared for equality,
/// and a repeat needs a request from the same member id delayed across 2,048 controller
/// elections, far longer than any request lives.
pub fn epoch_base(term: u64, tenure: u32) -> i32 {
    let tenure = i64::from(tenure) % (EPOCHS_PER_TERM / EPOCHS_PER_TENURE);
    i32::try_from((term % TERMS_BEFORE_WRAP) as i64 * EPOCHS_PER_TERM + tenure * EPOCHS_PER_TENURE)
        .unwrap_or(0)
}

/// The epoch after `e`: epochs stay positive (0 joins, -1 leaves), wrapping from
/// `i32::MAX` to 1.
fn next_epoch(e: i32) -> i32 {
    if e == i32::MAX { 1 } else { e + 1 }
}

#[derive(Debug, Clone)]
pub struct GroupSettings {
    pub session_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub max_members_per_group: usize,
    pub max_groups: usize,
}

impl Default for GroupSettings {
    fn default() -> Self {
        Self {
            session_timeout_ms: 10_000,
            heartbeat_interval_ms: 1_000,
            max_members_per_group: 1_000,
            max_groups: 10_000,
        }
    }
}

pub fn to_wire(set: &BTreeSet<Tp>) -> Vec<TopicPartitions> {
    let mut out: Vec<TopicPartitions> = Vec::new();
    for (topic, p) in set {
        match out.last_mut() {
            Some(last) if last.topic == *topic => last.partitions.push(*p),
            _ => out.push(TopicPartitions {
                topic: topic.clone(),
                partitions: vec![*p],
            }),
        }
    }
    out
}

pub fn from_wire(list: &[TopicPartitions]) -> BTreeSet<Tp> {
    list.iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.topic.clone(), *p)))
        .collect()
}

pub use api::{HeartbeatReply, HeartbeatRequest, JOIN_EPOCH, LEAVE_EPOCH, TopicPartitions};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("member {member_id} is not in group {group} (it left or its session expired); rejoin")]
    UnknownMember { group: String, member_id: String },
    #[error("member {member_id} sent epoch {got}, its epoch is {current}; rejoin")]
    FencedEpoch {
        member_id: String,
        current: i32,
        got: i32,
    },
    #[error("member {member_id} does not own {topic}-{partition}")]
    NotOwner {
        member_id: String,
        topic: String,
        partition: u32,
    },
    #[error("group {group} already has {max} members (max_members_per_group)")]
    GroupFull { group: String, max: usize },
    #[error("{max} groups exist already (max_groups)")]
    TooManyGroups { max: usize },
    #[error("invalid heartbeat: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub epoch: i32,
    prev_epoch: i32,
    pub topics: BTreeSet<String>,
    /// What the member was told it may read, at `epoch`.
    pub assigned: BTreeSet<Tp>,
    /// What it was asked to give up and has not yet confirmed.
    pub revoking: BTreeSet<Tp>,
    deadline_ms: u64,
    pub client: String,
}

impl Member {
    fn holds(&self, tp: &Tp) -> bool {
        self.assigned.contains(tp) || self.revoking.contains(tp)
    }
}

/// A heartbeat from a member of the previous coordinator.
struct Adopted {
    id: String,
    epoch: i32,
    topics: BTreeSet<String>,
    claims: BTreeSet<Tp>,
    deadline_ms: u64,
    client: String,
}

#[derive(Debug, Clone, Default)]
pub struct Group {
    /// Bumped whenever the target assignment is recomputed.
    pub epoch: i32,
    pub members: BTreeMap<String, Member>,
    pub target: BTreeMap<Tp, String>,
    /// Partition counts (of subscribed topics) the target was computed from.
    partitions: BTreeMap<String, u32>,
    /// While a new coordinator adopts the previous one's members: the partitions whose
    /// holder is known (claimed by an adopted member). Only those may be handed out; any
    /// other may still be held by a member that has not heartbeated yet. `None` after.
    known: Option<BTreeSet<Tp>>,
}

impl Group {
    /// `empty`, `stable` (every member at its target) or `reconciling`.
    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "empty"
        } else if self.members.values().all(|m| {
            m.revoking.is_empty()
                && m.assigned
                    .iter()
                    .all(|tp| self.target.get(tp) == Some(&m.id))
                && self
                    .target
                    .iter()
                    .filter(|(_, o)| **o == m.id)
                    .all(|(tp, _)| m.assigned.contains(tp))
        }) {
            "stable"
        } else {
            "reconciling"
        }
    }

    /// Who holds a partition now, if anyone.
    pub fn owner(&self, tp: &Tp) -> Option<&Member> {
        self.members.values().find(|m| m.holds(tp))
    }

    fn subscribed(&self, all: &BTreeMap<String, u32>) -> BTreeMap<String, u32> {
        let topics: BTreeSet<&String> = self.members.values().flat_map(|m| &m.topics).collect();
        all.iter()
            .filter(|(t, _)| topics.contains(t))
            .map(|(t, n)| (t.clone(), *n))
            .collect()
    }

    fn recompute(&mut self, all: &BTreeMap<String, u32>) {
        self.partitions = self.subscribed(all);
        let subs = self
            .members
            .iter()
            .map(|(id, m)| (id.clone(), m.topics.clone()))
            .collect();
        self.target = assignor::assign(&subs, &self.partitions, &self.target);
        self.epoch += 1;
    }

    /// Moves member `id` toward its target: gives up what is no longer its, takes what is
    /// its and free. Bumps its epoch when its assignment changed.
    fn reconcile(&mut self, id: &str) {
        let Some(m) = self.members.get(id) else {
            return;
        };
        let mine: BTreeSet<Tp> = self
            .target
            .iter()
            .filter(|(_, o)| o.as_str() == id)
            .map(|(tp, _)| tp.clone())
            .collect();
        let revoke: BTreeSet<Tp> = m.assigned.difference(&mine).cloned().collect();
        let adds: BTreeSet<Tp> = mine
            .difference(&m.assigned)
            .filter(|tp| {
                !self
                    .members
                    .values()
                    .any(|other| other.id != id && other.holds(tp))
                    && self.known.as_ref().is_none_or(|k| k.contains(tp))
            })
            .cloned()
            .collect();
        if revoke.is_empty() && adds.is_empty() {
            return;
        }
        if let Some(m) = self.members.get_mut(id) {
            for tp in &revoke {
                m.assigned.remove(tp);
                m.revoking.insert(tp.clone());
            }
            // A partition it is giving up and is its own again: it simply keeps it.
            for tp in adds {
                m.revoking.remove(&tp);
                m.assigned.insert(tp);
            }
            m.prev_epoch = m.epoch;
            m.epoch = next_epoch(m.epoch);
        }
    }

    fn reply(&self, id: &str, settings: &GroupSettings) -> Option<HeartbeatReply> {
        let m = self.members.get(id)?;
        let stable = m.revoking.is_empty()
            && self
                .target
                .iter()
                .filter(|(_, o)| o.as_str() == id)
                .all(|(tp, _)| m.assigned.contains(tp));
        Some(HeartbeatReply {
            member_id: m.id.clone(),
            member_epoch: m.epoch,
            heartbeat_interval_ms: settings.heartbeat_interval_ms,
            assignment: to_wire(&m.assigned),
            stable,
        })
    }
}

#[derive(Debug)]
pub struct Coordinator {
    pub settings: GroupSettings,
    groups: HashMap<String, Group>,
    /// Makes member ids unique across coordinator restarts.
    id_prefix: String,
    next_member: u64,
    /// After taking over ([`Coordinator::take_over`]), until then: a heartbeat of a member
    /// this coordinator does not know, with its epoch, subscription and what it holds, is
    /// adopted (the member goes on at its epoch) instead of answered `unknown_member_id`.
    adopt_until_ms: u64,
    /// Groups that existed before the take-over (they have committed offsets): until
    /// `adopt_until_ms` they hand out only partitions an adopted member claimed. (So does
    /// any group once one of its members is adopted.)
    cautious: BTreeSet<String>,
    /// Where the epochs of members this coordinator does not know start ([`epoch_base`]).
    epoch_base: i32,
}

impl Coordinator {
    pub fn new(settings: GroupSettings, id_prefix: String) -> Self {
        Self {
            settings,
            groups: HashMap::new(),
            id_prefix,
            next_member: 0,
            adopt_until_ms: 0,
            cautious: BTreeSet::new(),
            epoch_base: 0,
        }
    }

    /// This node became the coordinator (a new controller term): whatever it held from an
    /// earlier term is stale, and the members of the previous coordinator are adopted from
    /// their next heartbeats for one session timeout — any live member heartbeats within
    /// it. Until then the groups in `previous` (those with committed offsets) hand out only
    /// partitions whose holder is known, so no partition is given to a second member while
    /// a member not yet heard from still reads it. Members it does not know start at
    /// `epoch_base` (see [`epoch_base`]).
    pub fn take_over(
        &mut self,
        now_ms: u64,
        epoch_base: i32,
        previous: impl IntoIterator<Item = String>,
    ) {
        self.groups.clear();
        self.epoch_base = epoch_base;
        self.adopt_until_ms = now_ms + self.settings.session_timeout_ms;
        self.cautious = previous.into_iter().collect();
    }

    /// Whether a heartbeat of `member` in `group` at `now_ms` would be adopted if it carried
    /// its subscription and partitions: this coordinator took over recently and does not
    /// know the member. (Kafka consumers send those only when they change; told the
    /// coordinator is loading, they send everything on the next heartbeat.)
    pub fn would_adopt(&self, group: &str, member: &str, now_ms: u64) -> bool {
        now_ms < self.adopt_until_ms
            && !self
                .groups
                .get(group)
                .is_some_and(|g| g.members.contains_key(member))
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.get(name)
    }

    pub fn group_names(&self) -> Vec<String> {
        self.groups.keys().cloned().collect()
    }

    /// Handles one heartbeat. `partitions`: topic -> partition count, from the metadata.
    pub fn heartbeat(
        &mut self,
        group: &str,
        req: &HeartbeatRequest,
        now_ms: u64,
        partitions: &BTreeMap<String, u32>,
    ) -> Result<HeartbeatReply, GroupError> {
        self.expire_group(group, now_ms, partitions);
        let adopting = now_ms < self.adopt_until_ms;
        if !adopting && self.adopt_until_ms > 0 {
            // The window is over: every live member had a session to heartbeat in.
            self.adopt_until_ms = 0;
            self.cautious.clear();
            for g in self.groups.values_mut() {
                g.known = None;
            }
        }
        let cautious = adopting && self.cautious.contains(group);
        let settings = self.settings.clone();
        let deadline_ms = now_ms + settings.session_timeout_ms;
        if req.member_epoch == LEAVE_EPOCH {
            let id = req
                .member_id
                .clone()
                .ok_or_else(|| GroupError::Invalid("leaving needs member_id".into()))?;
            if let Some(g) = self.groups.get_mut(group)
                && g.members.remove(&id).is_some()
            {
                g.recompute(partitions);
            }
            self.drop_if_empty(group);
            return Ok(HeartbeatReply {
                member_id: id,
                member_epoch: LEAVE_EPOCH,
                heartbeat_interval_ms: settings.heartbeat_interval_ms,
                assignment: Vec::new(),
                stable: true,
            });
        }
        if req.member_epoch < LEAVE_EPOCH {
            return Err(GroupError::Invalid(format!(
                "member_epoch {} is negative",
                req.member_epoch
            )));
        }
        let topics: Option<BTreeSet<String>> = match &req.topics {
            Some(t) => {
                for name in t {
                    shared::names::validate_topic(name)
                        .map_err(|e| GroupError::Invalid(e.to_string()))?;
                }
                Some(t.iter().cloned().collect())
            }
            None => None,
        };
        if req.member_epoch == JOIN_EPOCH {
            let topics = topics
                .filter(|t| !t.is_empty())
                .ok_or_else(|| GroupError::Invalid("joining needs topics".into()))?;
            if !self.groups.contains_key(group) && self.groups.len() >= settings.max_groups {
                return Err(GroupError::TooManyGroups {
                    max: settings.max_groups,
                });
            }
            let id = match &req.member_id {
                Some(id) if !id.is_empty() => id.clone(),
                _ => {
                    self.next_member += 1;
                    format!("{}-{}", self.id_prefix, self.next_member)
                }
            };
            let base = self.epoch_base;
            let g = self.groups.entry(group.to_owned()).or_default();
            if cautious {
                g.known.get_or_insert_default();
            }
            // A member rejoining under its id starts over: it holds nothing now.
            let rejoin = g.members.remove(&id);
            if rejoin.is_none() && g.members.len() >= settings.max_members_per_group {
                self.drop_if_empty(group);
                return Err(GroupError::GroupFull {
                    group: group.to_owned(),
                    max: settings.max_members_per_group,
                });
            }
            // One it knows goes on from its epoch; any other may have had epochs at an
            // earlier coordinator, all below this term's base.
            let epoch = rejoin.map_or(base, |m| m.epoch);
            g.members.insert(
                id.clone(),
                Member {
                    id: id.clone(),
                    epoch,
                    prev_epoch: epoch,
                    topics,
                    assigned: BTreeSet::new(),
                    revoking: BTreeSet::new(),
                    deadline_ms,
                    client: req.client.clone().unwrap_or_default(),
                },
            );
            g.recompute(partitions);
            g.reconcile(&id);
            // A join always gets a fresh epoch, so epoch 0 is never a current one.
            if let Some(m) = g.members.get_mut(&id)
                && m.epoch == epoch
            {
                m.prev_epoch = m.epoch;
                m.epoch = next_epoch(m.epoch);
            }
            return g
                .reply(&id, &settings)
                .ok_or_else(|| GroupError::Invalid("member vanished".into()));
        }
        // A heartbeat of a current member.
        let id = req
            .member_id
            .clone()
            .ok_or_else(|| GroupError::Invalid("member_id is required".into()))?;
        let unknown = || GroupError::UnknownMember {
            group: group.to_owned(),
            member_id: id.clone(),
        };
        let known = self
            .groups
            .get(group)
            .is_some_and(|g| g.members.contains_key(&id));
        if !known
            && adopting
            && let (Some(topics), Some(owned)) = (topics.clone(), &req.owned)
            && !topics.is_empty()
        {
            let adopted = Adopted {
                id: id.clone(),
                epoch: req.member_epoch,
                topics,
                claims: from_wire(owned),
                deadline_ms,
                client: req.client.clone().unwrap_or_default(),
            };
            return self.adopt(group, adopted, partitions);
        }
        let g = self.groups.get_mut(group).ok_or_else(unknown)?;
        let m = g.members.get_mut(&id).ok_or_else(unknown)?;
        if req.member_epoch != m.epoch && req.member_epoch != m.prev_epoch {
            return Err(GroupError::FencedEpoch {
                member_id: id,
                current: m.epoch,
                got: req.member_epoch,
            });
        }
        m.deadline_ms = deadline_ms;
        if let Some(c) = &req.client {
            m.client.clone_from(c);
        }
        // Only a member that saw its latest assignment can confirm giving something up.
        if req.member_epoch == m.epoch
            && let Some(owned) = &req.owned
        {
            let owned = from_wire(owned);
            m.revoking.retain(|tp| owned.contains(tp));
            m.assigned.retain(|tp| owned.contains(tp));
        }
        let mut changed = false;
        if let Some(t) = topics
            && !t.is_empty()
            && t != m.topics
        {
            m.topics = t;
            changed = true;
        }
        if changed || g.subscribed(partitions) != g.partitions {
            g.recompute(partitions);
        }
        g.reconcile(&id);
        g.reply(&id, &settings)
            .ok_or_else(|| GroupError::Invalid("member vanished".into()))
    }

    /// Checks that a member may commit these partitions: it is current and holds them.
    pub fn check_commit(
        &self,
        group: &str,
        member_id: &str,
        member_epoch: i32,
        partitions: &BTreeSet<Tp>,
    ) -> Result<(), GroupError> {
        let unknown = || GroupError::UnknownMember {
            group: group.to_owned(),
            member_id: member_id.to_owned(),
        };
        let g = self.groups.get(group).ok_or_else(unknown)?;
        let m = g.members.get(member_id).ok_or_else(unknown)?;
        if member_epoch != m.epoch && member_epoch != m.prev_epoch {
            return Err(GroupError::FencedEpoch {
                member_id: member_id.to_owned(),
                current: m.epoch,
                got: member_epoch,
            });
        }
        for tp in partitions {
            if !m.holds(tp) {
                return Err(GroupError::NotOwner {
                    member_id: member_id.to_owned(),
                    topic: tp.0.clone(),
                    partition: tp.1,
                });
            }
        }
        Ok(())
    }

    /// Takes in a member of the previous coordinator at its epoch, holding what it claims —
    /// unless a member already here holds any of it (then it must rejoin).
    fn adopt(
        &mut self,
        group: &str,
        a: Adopted,
        partitions: &BTreeMap<String, u32>,
    ) -> Result<HeartbeatReply, GroupError> {
        let settings = self.settings.clone();
        let unknown = || GroupError::UnknownMember {
            group: group.to_owned(),
            member_id: a.id.clone(),
        };
        if !self.groups.contains_key(group) && self.groups.len() >= settings.max_groups {
            return Err(GroupError::TooManyGroups {
                max: settings.max_groups,
            });
        }
        let g = self.groups.entry(group.to_owned()).or_default();
        // A member to adopt proves the previous coordinator had this group, committed
        // offsets or not: from now on it hands out only what is known to be free.
        g.known.get_or_insert_default();
        // Only partitions that exist, of topics it subscribes to.
        let claimed = a.claims.len();
        let claims: BTreeSet<Tp> = a
            .claims
            .into_iter()
            .filter(|(t, p)| a.topics.contains(t) && partitions.get(t).is_some_and(|n| p < n))
            .collect();
        // Holding less than it claims, it must hear so under a new epoch: at its own epoch
        // it was told the partitions it claims.
        let shrunk = claims.len() != claimed;
        if g.members.len() >= settings.max_members_per_group
            || claims.iter().any(|tp| g.owner(tp).is_some())
        {
            self.drop_if_empty(group);
            return Err(unknown());
        }
        // Sticky: the target starts from what it holds.
        for tp in &claims {
            g.target.insert(tp.clone(), a.id.clone());
        }
        if let Some(k) = &mut g.known {
            k.extend(claims.iter().cloned());
        }
        tracing::info!(group, member = %a.id, epoch = a.epoch, partitions = claims.len(), "adopted a member of the previous coordinator");
        g.members.insert(
            a.id.clone(),
            Member {
                id: a.id.clone(),
                epoch: a.epoch,
                prev_epoch: a.epoch,
                topics: a.topics,
                assigned: claims,
                revoking: BTreeSet::new(),
                deadline_ms: a.deadline_ms,
                client: a.client,
            },
        );
        g.recompute(partitions);
        g.reconcile(&a.id);
        if shrunk
            && let Some(m) = g.members.get_mut(&a.id)
            && m.epoch == a.epoch
        {
            m.prev_epoch = m.epoch;
            m.epoch = next_epoch(m.epoch);
        }
        g.reply(&a.id, &settings)
            .ok_or_else(|| GroupError::Invalid("member vanished".into()))
    }

    /// Removes members whose session expired, in every group. Returns how many.
    pub fn expire(&mut self, now_ms: u64, partitions: &BTreeMap<String, u32>) -> usize {
        let names = self.group_names();
        names
            .iter()
            .map(|g| self.expire_group(g, now_ms, partitions))
            .sum()
    }

    fn expire_group(
        &mut self,
        group: &str,
        now_ms: u64,
        partitions: &BTreeMap<String, u32>,
    ) -> usize {
        let Some(g) = self.groups.get_mut(group) else {
            return 0;
        };
        let before = g.members.len();
        g.members.retain(|id, m| {
            let alive = m.deadline_ms >= now_ms;
            if !alive {
                tracing::info!(group, member = %id, "member session expired");
            }
            alive
        });
        let n = before - g.members.len();
        if n > 0 {
            g.recompute(partitions);
        }
        self.drop_if_empty(group);
        n
    }

    fn drop_if_empty(&mut self, group: &str) {
        if self.groups.get(group).is_some_and(|g| g.members.is_empty()) {
            self.groups.remove(group);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(n: u32) -> BTreeMap<String, u32> {
        BTreeMap::from([("logs".to_owned(), n)])
    }

    fn join(c: &mut Coordinator, now: u64, p: &BTreeMap<String, u32>) -> HeartbeatReply {
        c.heartbeat(
            "g",
            &HeartbeatRequest {
                member_epoch: JOIN_EPOCH,
                topics: Some(vec!["logs".into()]),
                ..Default::default()
            },
            now,
            p,
        )
        .expect("join")
    }

    fn beat(
        c: &mut Coordinator,
        r: &HeartbeatReply,
        owned: &[TopicPartitions],
        now: u64,
        p: &BTreeMap<String, u32>,
    ) -> Result<HeartbeatReply, GroupError> {
        c.heartbeat(
            "g",
            &HeartbeatRequest {
                member_id: Some(r.member_id.clone()),
                member_epoch: r.member_epoch,
                owned: Some(owned.to_vec()),
                ..Default::default()
            },
            now,
            p,
        )
    }

    fn count(r: &HeartbeatReply) -> usize {
        r.assignment.iter().map(|t| t.partitions.len()).sum()
    }

    /// No partition is held by two members.
    fn exclusive(c: &Coordinator) {
        let g = c.group("g").expect("group");
        let mut seen = BTreeSet::new();
        for m in g.members.values() {
            for tp in m.assigned.iter().chain(&m.revoking) {
                assert!(seen.insert(tp.clone()), "{tp:?} held twice: {g:?}");
            }
        }
    }

    /// What members were *told* (their latest replies) never overlaps, among the members the
    /// coordinator still counts: two members never both believe they may read a partition.
    fn told_disjoint(c: &Coordinator, members: &[(HeartbeatReply, HeartbeatReply)]) {
        let Some(g) = c.group("g") else { return };
        let mut seen: BTreeMap<(String, u32), String> = BTreeMap::new();
        for (r, _) in members
            .iter()
            .filter(|(r, _)| g.members.contains_key(&r.member_id))
        {
            for t in &r.assignment {
                for p in &t.partitions {
                    if let Some(other) = seen.insert((t.topic.clone(), *p), r.member_id.clone()) {
                        panic!(
                            "{}-{p} told to {other} and to {}: {members:?}",
                            t.topic, r.member_id
                        );
                    }
                }
            }
        }
    }

    fn leave(c: &mut Coordinator, r: &HeartbeatReply, now: u64, p: &BTreeMap<String, u32>) {
        c.heartbeat(
            "g",
            &HeartbeatRequest {
                member_id: Some(r.member_id.clone()),
                member_epoch: LEAVE_EPOCH,
                ..Default::default()
            },
            now,
            p,
        )
        .expect("leave");
    }

    /// A heartbeat carrying the subscription and what the member holds (what
    /// `collector tail` sends every time).
    fn full_beat(
        c: &mut Coordinator,
        r: &HeartbeatReply,
        now: u64,
        p: &BTreeMap<String, u32>,
    ) -> Result<HeartbeatReply, GroupError> {
        c.heartbeat(
            "g",
            &HeartbeatRequest {
                member_id: Some(r.member_id.clone()),
                member_epoch: r.member_epoch,
                topics: Some(vec!["logs".into()]),
                owned: Some(r.assignment.clone()),
                ..Default::default()
            },
            now,
            p,
        )
    }

    /// A new coordinator (a controller failover) adopts the previous one's members from
    /// their next heartbeats: same id, same epoch, same partitions — no `unknown_member_id`
    /// and no rejoin. Partitions nobody has claimed yet wait until every live member had a
    /// session to heartbeat in, so a member not yet heard from never shares one.
    #[test]
    fn a_new_coordinator_adopts_the_previous_ones_members_from_their_heartbeats() {
        let p = parts(6);
        let session = GroupSettings::default().session_timeout_ms;
        let mut old = Coordinator::new(GroupSettings::default(), "old".into());
        let mut a = join(&mut old, 0, &p);
        let mut b = join(&mut old, 1, &p);
        // Settle: a gives up b's share, b takes it.
        for t in 2..6 {
            a = full_beat(&mut old, &a, t, &p).unwrap();
            b = full_beat(&mut old, &b, t, &p).unwrap();
        }
        assert!(a.stable && b.stable, "{a:?} {b:?}");
        assert_eq!(count(&a) + count(&b), 6);

        let mut new = Coordinator::new(GroupSettings::default(), "new".into());
        new.take_over(1_000, epoch_base(2, 0), ["g".to_owned()]);
        let a2 = full_beat(&mut new, &a, 1_001, &p).expect("adopted, not unknown");
        assert_eq!(
            (&a2.member_id, a2.member_epoch, &a2.assignment),
            (&a.member_id, a.member_epoch, &a.assignment)
        );
        // A newcomer before b is heard from gets none of b's partitions.
        let c = join(&mut new, 1_002, &p);
        let held_by_b: BTreeSet<Tp> = from_wire(&b.assignment);
        assert!(
            from_wire(&c.assignment).is_disjoint(&held_by_b),
            "{c:?} got what b may still read"
        );
        let b2 = full_beat(&mut new, &b, 1_003, &p).expect("adopted");
        // It goes on under its id; the newcomer's share may now be asked of it (a new
        // epoch), never more than it held.
        assert_eq!(b2.member_id, b.member_id);
        assert!(b2.member_epoch >= b.member_epoch);
        assert!(from_wire(&b2.assignment).is_subset(&held_by_b));
        let m = &new.group("g").unwrap().members[&b.member_id];
        assert!(held_by_b.iter().all(|tp| m.holds(tp)), "{m:?}");
        exclusive(&new);
        // A member claiming what another holds is not adopted: it must rejoin.
        let mut thief = a.clone();
        thief.member_id = "old-99".into();
        assert!(matches!(
            full_beat(&mut new, &thief, 1_004, &p),
            Err(GroupError::UnknownMember { .. })
        ));
        // After the window, an unknown member is unknown again.
        let after = 1_000 + session + 1;
        let mut ghost = b.clone();
        ghost.member_id = "old-98".into();
        ghost.assignment = Vec::new();
        assert!(matches!(
            full_beat(&mut new, &ghost, after, &p),
            Err(GroupError::UnknownMember { .. })
        ));
    }

    /// A member fenced by one coordinator rejoins under its id; when that join reaches the
    /// next coordinator (a controller failover in between), which never knew it, its new
    /// epochs must not repeat ones the first gave it: a request of its old incarnation at a
    /// repeated epoch would pass the fencing check (seed 316 of the fault campaign).
    #[test]
    fn a_member_rejoining_at_a_new_coordinator_never_gets_an_epoch_it_had() {
        let p = parts(4);
        let mut old = Coordinator::new(GroupSettings::default(), "old".into());
        old.take_over(0, epoch_base(7, 0), Vec::<String>::new());
        let a = join(&mut old, 1, &p);
        let mut seen = BTreeSet::from([a.member_epoch]);
        let mut last = a.clone();
        // Members come and go: a goes through several epochs.
        for t in 2..8 {
            let b = join(&mut old, t * 10, &p);
            last = full_beat(&mut old, &last, t * 10 + 1, &p).unwrap();
            seen.insert(last.member_epoch);
            leave(&mut old, &b, t * 10 + 2, &p);
            last = full_beat(&mut old, &last, t * 10 + 3, &p).unwrap();
            seen.insert(last.member_epoch);
        }
        assert!(seen.len() > 3, "{seen:?}");
        // The controller moves after the old one fenced a; a rejoins under its id. Then
        // the same node, restarted, resumes term 9 (a second tenure), then term 10.
        for (term, tenure, when) in [
            (7, 1, 5_000),
            (8, 0, 10_000),
            (9, 0, 40_000),
            (9, 1, 50_000),
            (10, 0, 60_000),
        ] {
            let mut new = Coordinator::new(GroupSettings::default(), "new".into());
            new.take_over(when, epoch_base(term, tenure), Vec::<String>::new());
            let mut r = new
                .heartbeat(
                    "g",
                    &HeartbeatRequest {
                        member_id: Some(a.member_id.clone()),
                        member_epoch: JOIN_EPOCH,
                        topics: Some(vec!["logs".into()]),
                        ..Default::default()
                    },
                    when + 1,
                    &p,
                )
                .expect("rejoin");
            assert_eq!(r.member_id, a.member_id);
            let before = seen.clone();
            for t in 0..4 {
                assert!(
                    !before.contains(&r.member_epoch),
                    "term {term} tenure {tenure}: epoch {} was given before: {before:?}",
                    r.member_epoch
                );
                seen.insert(r.member_epoch);
                r = full_beat(&mut new, &r, when + 2 + t, &p).unwrap();
            }
        }
    }

    /// A new coordinator whose metadata does not (yet) show what a member claims adopts it
    /// holding less — and tells it so under a new epoch, never at the epoch at which it was
    /// told it held more (campaign seed 7122: a restarted coordinator answered before its
    /// metadata had caught up).
    #[test]
    fn a_member_adopted_with_less_than_it_claims_gets_a_new_epoch() {
        let p = parts(4);
        let mut old = Coordinator::new(GroupSettings::default(), "old".into());
        let a = join(&mut old, 0, &p);
        assert_eq!(count(&a), 4);
        for (known, then) in [(parts(2), 2), (BTreeMap::new(), 0)] {
            let mut new = Coordinator::new(GroupSettings::default(), "new".into());
            new.take_over(1_000, epoch_base(3, 0), ["g".to_owned()]);
            let r = full_beat(&mut new, &a, 1_001, &known).expect("adopted");
            assert_eq!(r.member_id, a.member_id);
            assert_eq!(count(&r), then);
            assert_ne!(
                r.member_epoch, a.member_epoch,
                "told {then} partitions at the epoch it held 4"
            );
        }
    }

    #[test]
    fn epochs_stay_positive_across_the_wrap() {
        assert_eq!(next_epoch(i32::MAX), 1);
        assert_eq!(next_epoch(5), 6);
        assert_eq!(epoch_base(0, 0), 0);
        assert_eq!(epoch_base(1, 0), 1 << 20);
        assert_eq!(epoch_base(1, 1), (1 << 20) + (1 << 14));
        assert_eq!(
            epoch_base(TERMS_BEFORE_WRAP - 1, 0),
            i32::MAX - (1 << 20) + 1
        );
        assert_eq!(
            epoch_base(TERMS_BEFORE_WRAP - 1, 63),
            i32::MAX - (1 << 14) + 1
        );
        assert_eq!(epoch_base(TERMS_BEFORE_WRAP, 0), 0);
        assert!(epoch_base(3, 63) < epoch_base(4, 0));
        assert_eq!(
            epoch_base(3, 64),
            epoch_base(3, 0),
            "tenures wrap within the term"
        );
    }

    /// The window holds back only partitions nobody claimed: once it ends they are handed
    /// out (their holder, if any, had a whole session to heartbeat).
    #[test]
    fn unclaimed_partitions_are_handed_out_when_the_adoption_window_ends() {
        let p = parts(4);
        let session = GroupSettings::default().session_timeout_ms;
        let mut new = Coordinator::new(GroupSettings::default(), "new".into());
        new.take_over(0, epoch_base(2, 0), ["g".to_owned()]);
        let c = join(&mut new, 1, &p);
        assert_eq!(count(&c), 0, "nothing is known to be free yet");
        let c = full_beat(&mut new, &c, session + 1, &p).unwrap();
        assert_eq!(count(&c), 4);
        // A group without committed offsets becomes careful once a member is adopted: the
        // second old member's partitions are not handed to the first.
        let mut old = Coordinator::new(GroupSettings::default(), "old".into());
        let mut a = join(&mut old, 0, &p);
        let mut b = join(&mut old, 1, &p);
        for t in 2..6 {
            a = full_beat(&mut old, &a, t, &p).unwrap();
            b = full_beat(&mut old, &b, t, &p).unwrap();
        }
        let mut new = Coordinator::new(GroupSettings::default(), "n".into());
        new.take_over(100, epoch_base(2, 0), Vec::<String>::new());
        let a2 = full_beat(&mut new, &a, 101, &p).unwrap();
        assert!(
            from_wire(&a2.assignment).is_disjoint(&from_wire(&b.assignment)),
            "{a2:?} got what b still reads"
        );
        let b2 = full_beat(&mut new, &b, 102, &p).expect("b adopted, not unknown");
        assert_eq!(b2.member_id, b.member_id);
        // A group without committed offsets (never seen before) is not held back.
        let mut fresh = Coordinator::new(GroupSettings::default(), "f".into());
        fresh.take_over(0, epoch_base(2, 0), Vec::<String>::new());
        assert_eq!(count(&join(&mut fresh, 1, &p)), 4);
    }

    #[test]
    fn a_partition_moves_only_after_its_owner_gives_it_up() {
        let p = parts(4);
        let mut c = Coordinator::new(GroupSettings::default(), "t".into());
        let a = join(&mut c, 0, &p);
        assert_eq!(count(&a), 4);
        assert!(a.stable);
        let b = join(&mut c, 1, &p);
        // b's share is still a's: b gets nothing yet.
        assert_eq!(count(&b), 0);
        assert!(!b.stable);
        exclusive(&c);
        // a heartbeats with all four and is told to keep two.
        let a2 = beat(&mut c, &a, &a.assignment, 2, &p).expect("a");
        assert_eq!(count(&a2), 2);
        assert!(a2.member_epoch > a.member_epoch);
        // b still gets nothing: a has not confirmed.
        let b2 = beat(&mut c, &b, &b.assignment, 3, &p).expect("b");
        assert_eq!(count(&b2), 0);
        exclusive(&c);
        // a confirms at its new epoch; then b gets two.
        let a3 = beat(&mut c, &a2, &a2.assignment, 4, &p).expect("a");
        assert!(a3.stable);
        let b3 = beat(&mut c, &b2, &b2.assignment, 5, &p).expect("b");
        assert_eq!(count(&b3), 2);
        assert!(b3.stable);
        exclusive(&c);
        assert_eq!(c.group("g").map(Group::state), Some("stable"));
    }

    #[test]
    fn an_old_epoch_cannot_confirm_a_revocation() {
        let p = parts(2);
        let mut c = Coordinator::new(GroupSettings::default(), "t".into());
        let a = join(&mut c, 0, &p);
        let _b = join(&mut c, 1, &p);
        let a2 = beat(&mut c, &a, &a.assignment, 2, &p).expect("a");
        assert_eq!(count(&a2), 1);
        // The reply to a was lost: a heartbeats again at the previous epoch with nothing
        // owned. That does not release anything.
        let a_again = beat(&mut c, &a, &[], 3, &p).expect("previous epoch is accepted");
        assert_eq!(a_again.member_epoch, a2.member_epoch);
        let g = c.group("g").expect("g");
        let am = &g.members[&a.member_id];
        assert_eq!(am.revoking.len(), 1);
        exclusive(&c);
    }

    #[test]
    fn stale_and_unknown_members_are_fenced() {
        let p = parts(2);
        let mut c = Coordinator::new(GroupSettings::default(), "t".into());
        let stale = join(&mut c, 0, &p);
        let _b = join(&mut c, 1, &p);
        let a2 = beat(&mut c, &stale, &stale.assignment, 2, &p).expect("a");
        let a3 = beat(&mut c, &a2, &a2.assignment, 3, &parts(4)).expect("a");
        assert!(
            a3.member_epoch >= stale.member_epoch + 2,
            "{stale:?} {a3:?}"
        );
        assert!(matches!(
            beat(&mut c, &stale, &[], 4, &parts(4)),
            Err(GroupError::FencedEpoch { .. })
        ));
        let tp = BTreeSet::from([("logs".to_owned(), 0)]);
        assert!(matches!(
            c.check_commit("g", &stale.member_id, stale.member_epoch, &tp),
            Err(GroupError::FencedEpoch { .. })
        ));
        // Session expiry removes a member; it is unknown afterwards.
        let late = 4 + GroupSettings::default().session_timeout_ms + 1;
        assert!(matches!(
            beat(&mut c, &a3, &a3.assignment, late, &parts(4)),
            Err(GroupError::UnknownMember { .. })
        ));
        assert!(matches!(
            c.check_commit("g", &a3.member_id, a3.member_epoch, &tp),
            Err(GroupError::UnknownMember { .. })
        ));
    }

    #[test]
    fn commits_need_ownership_and_leave_frees_at_once() {
        let p = parts(2);
        let mut c = Coordinator::new(GroupSettings::default(), "t".into());
        let a = join(&mut c, 0, &p);
        let b = join(&mut c, 1, &p);
        let a2 = beat(&mut c, &a, &a.assignment, 2, &p).expect("a");
        let mine = from_wire(&a2.assignment);
        c.check_commit("g", &a.member_id, a2.member_epoch, &mine)
            .expect("own");
        // The partition being given up can still be committed (its final offset).
        let giving_up: BTreeSet<Tp> = from_wire(&a.assignment)
            .difference(&mine)
            .cloned()
            .collect();
        c.check_commit("g", &a.member_id, a2.member_epoch, &giving_up)
            .expect("revoking");
        assert!(matches!(
            c.check_commit("g", &b.member_id, b.member_epoch, &giving_up),
            Err(GroupError::NotOwner { .. })
        ));
        // a leaves: b gets everything at its next heartbeat.
        leave(&mut c, &a, 3, &p);
        let b2 = beat(&mut c, &b, &b.assignment, 4, &p).expect("b");
        assert_eq!(count(&b2), 2);
        exclusive(&c);
    }

    #[test]
    fn new_partitions_are_assigned() {
        let mut c = Coordinator::new(GroupSettings::default(), "t".into());
        let a = join(&mut c, 0, &parts(1));
        assert_eq!(count(&a), 1);
        let a2 = beat(&mut c, &a, &a.assignment, 1, &parts(3)).expect("a");
        assert_eq!(count(&a2), 3);
    }

    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        Join,
        /// Heartbeat of member i (mod count) acknowledging what it was told.
        Beat(usize),
        /// Heartbeat of member i replaying its previous reply (a lost reply).
        Stale(usize),
        Leave(usize),
        Tick(u64),
        Partitions(u32),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            1 => Just(Step::Join),
            6 => (0usize..8).prop_map(Step::Beat),
            1 => (0usize..8).prop_map(Step::Stale),
            1 => (0usize..8).prop_map(Step::Leave),
            1 => (0u64..6_000).prop_map(Step::Tick),
            1 => (1u32..12).prop_map(Step::Partitions),
        ]
    }

    /// What a client does with a heartbeat error: a fenced member rejoins under its id
    /// (holding nothing), an unknown one is gone.
    fn settle_error(
        c: &mut Coordinator,
        members: &mut Vec<(HeartbeatReply, HeartbeatReply)>,
        k: usize,
        e: GroupError,
        now: u64,
        p: &BTreeMap<String, u32>,
    ) {
        match e {
            GroupError::FencedEpoch { member_id, .. } => {
                let r = c
                    .heartbeat(
                        "g",
                        &HeartbeatRequest {
                            member_id: Some(member_id),
                            member_epoch: JOIN_EPOCH,
                            topics: Some(vec!["logs".into()]),
                            ..Default::default()
                        },
                        now,
                        p,
                    )
                    .expect("rejoin");
                members[k] = (r.clone(), r);
            }
            _ => {
                members.remove(k);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        /// Whatever happens, no partition is held by two members; and once everyone
        /// heartbeats a few times, the group settles with every partition owned.
        #[test]
        fn exclusive_ownership_and_convergence(steps in proptest::collection::vec(step(), 1..80)) {
            let mut c = Coordinator::new(GroupSettings::default(), "t".into());
            let mut now = 0u64;
            let mut p = parts(4);
            // member id -> (latest reply, previous reply)
            let mut members: Vec<(HeartbeatReply, HeartbeatReply)> = Vec::new();
            for s in steps {
                match s {
                    Step::Join => {
                        let r = join(&mut c, now, &p);
                        members.push((r.clone(), r));
                    }
                    Step::Beat(i) | Step::Stale(i) | Step::Leave(i) if members.is_empty() => { let _ = i; }
                    Step::Beat(i) => {
                        let k = i % members.len();
                        let last = members[k].0.clone();
                        match beat(&mut c, &last, &last.assignment, now, &p) {
                            Ok(r) => members[k] = (r, last),
                            Err(e) => { settle_error(&mut c, &mut members, k, e, now, &p); }
                        }
                    }
                    Step::Stale(i) => {
                        let k = i % members.len();
                        let prev = members[k].1.clone();
                        // What a member that missed a reply holds: its previous assignment.
                        let _ = beat(&mut c, &prev, &prev.assignment, now, &p);
                    }
                    Step::Leave(i) => {
                        let k = i % members.len();
                        let (r, _) = members.remove(k);
                        c.heartbeat("g", &HeartbeatRequest {
                            member_id: Some(r.member_id),
                            member_epoch: LEAVE_EPOCH,
                            ..Default::default()
                        }, now, &p).expect("leave");
                    }
                    Step::Tick(ms) => {
                        now += ms;
                        c.expire(now, &p);
                        // Members expired by the coordinator find out on their next beat.
                    }
                    Step::Partitions(n) => p = parts(n),
                }
                if c.group("g").is_some() {
                    exclusive(&c);
                    told_disjoint(&c, &members);
                }
            }
            // Settle: everyone still alive heartbeats a few rounds without time passing.
            for _ in 0..4 {
                let mut k = 0;
                while k < members.len() {
                    let last = members[k].0.clone();
                    match beat(&mut c, &last, &last.assignment, now, &p) {
                        Ok(r) => { members[k] = (r, last); k += 1; }
                        Err(e) => { settle_error(&mut c, &mut members, k, e, now, &p); }
                    }
                }
            }
            if !members.is_empty() {
                let g = c.group("g").expect("group");
                prop_assert_eq!(g.state(), "stable");
                let held: usize = members.iter().map(|(r, _)| count(r)).sum();
                prop_assert_eq!(held, p["logs"] as usize);
                exclusive(&c);
                // Disjoint and as many as there are partitions: the replies cover them all.
                told_disjoint(&c, &members);
            }
        }
    }
}
