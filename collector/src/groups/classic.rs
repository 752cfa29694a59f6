//! Kafka's classic group protocol (JoinGroup / SyncGroup / Heartbeat / LeaveGroup) for
//! Kafka clients that `subscribe()`: the coordinator only runs the rounds — members join,
//! one is chosen leader and given every member's subscription, the leader computes the
//! assignment client-side (range, roundrobin, cooperative-sticky: passed through as bytes,
//! never parsed) and hands it back through SyncGroup. Committed offsets are the same
//! Raft-stored offsets every other group uses.
//!
//! Membership is in memory on the coordinating node, like the server-side coordinator's.
//! A round ("generation") completes when every known member has rejoined, or when the
//! rebalance timeout passes (who did not rejoin is dropped); a new group waits
//! [`INITIAL_JOIN_DELAY`] for the others to arrive so they start in one round.
//!
//! Invariants: a member's assignment is only handed out for the generation it was computed
//! for; a heartbeat, sync or commit from another generation is refused
//! (`IllegalGeneration`), so a member that missed a round stops before it reads on.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

use shared::sys::lock;

/// How long a new group's first round waits for more members.
pub const INITIAL_JOIN_DELAY: Duration = Duration::from_millis(1500);
/// The longest any round waits for members to rejoin, whatever they ask for.
pub const REBALANCE_TIMEOUT_MAX: Duration = Duration::from_secs(60);

/// Why a classic-group call is refused (Kafka error names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClassicError {
    #[error("unknown member")]
    UnknownMemberId,
    #[error("not the group's current generation")]
    IllegalGeneration,
    #[error("the group is rebalancing")]
    RebalanceInProgress,
    #[error("the member's protocols do not match the group's")]
    InconsistentGroupProtocol,
    #[error("the coordinator is stopping or moved")]
    CoordinatorNotAvailable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Empty,
    /// Collecting joins until `until` (or every known member has joined, once past
    /// `not_before`).
    Joining {
        not_before: Instant,
        until: Instant,
    },
    /// The round is done; waiting for the leader's assignment.
    Syncing,
    Stable,
}

impl Phase {
    /// The state names Kafka's admin APIs use.
    fn kafka_name(self) -> &'static str {
        match self {
            Phase::Empty => "Empty",
            Phase::Joining { .. } => "PreparingRebalance",
            Phase::Syncing => "CompletingRebalance",
            Phase::Stable => "Stable",
        }
    }
}

/// One member in [`ClassicView`].
#[derive(Debug, Clone)]
pub struct ClassicMember {
    pub member_id: String,
    pub client_id: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A classic group as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct ClassicView {
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<ClassicMember>,
}

#[derive(Debug)]
struct Member {
    client_id: String,
    protocols: Vec<(String, Bytes)>,
    session: Duration,
    rebalance: Duration,
    last_seen: Instant,
    /// Joined in the round being collected.
    joined: bool,
}

#[derive(Debug)]
struct Group {
    generation: i32,
    phase: Phase,
    protocol_type: String,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    assignments: HashMap<String, Bytes>,
    changed: watch::Sender<u64>,
}

impl Group {
    fn new() -> Self {
        Self {
            generation: 0,
            phase: Phase::Empty,
            protocol_type: String::new(),
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            assignments: HashMap::new(),
            changed: watch::channel(0).0,
        }
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Starts collecting a new round (members must rejoin).
    fn start_round(&mut self, now: Instant, first: bool) {
        if matches!(self.phase, Phase::Joining { .. }) {
            return;
        }
        let wait = self
            .members
            .values()
            .map(|m| m.rebalance)
            .max()
            .unwrap_or(Duration::ZERO)
            .min(REBALANCE_TIMEOUT_MAX);
        let not_before = now
            + if first {
                INITIAL_JOIN_DELAY
            } else {
                Duration::ZERO
            };
        self.phase = Phase::Joining {
            not_before,
            until: not_before.max(now + wait),
        };
        for m in self.members.values_mut() {
            m.joined = false;
        }
        self.assignments.clear();
        self.notify();
    }

    /// Completes the round being collected if it is due.
    fn maybe_complete(&mut self, now: Instant) {
        let Phase::Joining { not_before, until } = self.phase else {
            return;
        };
        let all = self.members.values().all(|m| m.joined);
        if !((all && now >= not_before) || now >= until) {
            return;
        }
        self.members.retain(|_, m| m.joined);
        // Everyone who made the round starts a fresh session now (it may have waited in
        // JoinGroup longer than its session for slower members).
        for m in self.members.values_mut() {
            m.last_seen = now;
        }
        if self.members.is_empty() {
            self.phase = Phase::Empty;
            self.leader = None;
            self.protocol = None;
            self.notify();
            return;
        }
        self.generation += 1;
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        // The first of the leader's protocols every member supports.
        let members = &self.members;
        self.protocol = self
            .leader
            .as_ref()
            .and_then(|l| members.get(l))
            .and_then(|leader| {
                leader.protocols.iter().map(|(n, _)| n.clone()).find(|n| {
                    members
                        .values()
                        .all(|m| m.protocols.iter().any(|(p, _)| p == n))
                })
            });
        self.phase = Phase::Syncing;
        self.notify();
    }

    /// Drops members silent past their session (a round then starts for the rest).
    fn expire(&mut self, now: Instant) {
        let before = self.members.len();
        let phase = self.phase;
        self.members.retain(|_, m| {
            // While joining, members are waited for by the round's own deadline.
            matches!(phase, Phase::Joining { .. }) || now.duration_since(m.last_seen) <= m.session
        });
        if self.members.len() < before {
            if self.members.is_empty() {
                self.phase = Phase::Empty;
                self.leader = None;
                self.notify();
            } else {
                self.start_round(now, false);
            }
        }
    }

    fn check_member(&self, member_id: &str, generation: i32) -> Result<(), ClassicError> {
        if !self.members.contains_key(member_id) {
            return Err(ClassicError::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(ClassicError::IllegalGeneration);
        }
        Ok(())
    }
}

/// A completed round, as one member sees it.
#[derive(Debug, Clone)]
pub struct Joined {
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// For the leader: every member's id and metadata for the chosen protocol.
    pub members: Vec<(String, Bytes)>,
}

/// What a JoinGroup gets.
#[derive(Debug, Clone)]
pub enum JoinOutcome {
    Joined(Joined),
    /// KIP-394: join again with this member id.
    NeedsMemberId(String),
}

/// One JoinGroup.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub client_id: String,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub session: Duration,
    pub rebalance: Duration,
    /// Kafka 2.2+ clients (JoinGroup v4+) first get an id, then join with it (KIP-394).
    pub require_known_member_id: bool,
}

#[derive(Debug, Default)]
pub struct ClassicGroups {
    groups: std::sync::Mutex<HashMap<String, Group>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl ClassicGroups {
    /// Whether `group` has members of the classic protocol.
    pub fn has_members(&self, group: &str) -> bool {
        lock(&self.groups)
            .get(group)
            .is_some_and(|g| !g.members.is_empty())
    }

    /// `(members, generation)` of a group, for views.
    pub fn describe(&self, group: &str) -> Option<(usize, i32)> {
        lock(&self.groups)
            .get(group)
            .map(|g| (g.members.len(), g.generation))
    }

    /// A group as Kafka's DescribeGroups shows it, if this node knows it.
    pub fn view(&self, group: &str) -> Option<ClassicView> {
        let groups = lock(&self.groups);
        let g = groups.get(group)?;
        let protocol = g.protocol.clone().unwrap_or_default();
        Some(ClassicView {
            state: g.phase.kafka_name(),
            protocol_type: g.protocol_type.clone(),
            protocol: protocol.clone(),
            members: g
                .members
                .iter()
                .map(|(id, m)| ClassicMember {
                    member_id: id.clone(),
                    client_id: m.client_id.clone(),
                    metadata: m
                        .protocols
                        .iter()
                        .find(|(n, _)| *n == protocol)
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default(),
                    assignment: g.assignments.get(id).cloned().unwrap_or_default(),
                })
                .collect(),
        })
    }

    /// `(group, state)` of every group this node knows.
    pub fn list(&self) -> Vec<(String, &'static str)> {
        lock(&self.groups)
            .iter()
            .map(|(n, g)| (n.clone(), g.phase.kafka_name()))
            .collect()
    }

    /// Groups that have members.
    pub fn group_names(&self) -> Vec<String> {
        lock(&self.groups)
            .iter()
            .filter(|(_, g)| !g.members.is_empty())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Drops silent members of every group.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut groups = lock(&self.groups);
        for g in groups.values_mut() {
            g.expire(now);
            g.maybe_complete(now);
        }
        groups.retain(|_, g| !g.members.is_empty() || g.phase != Phase::Empty);
    }

    fn new_member_id(&self, client_id: &str) -> String {
        let n = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let client = if client_id.is_empty() {
            "consumer"
        } else {
            client_id
        };
        format!("{client}-{:x}-{n}", shared::sys::now_ms())
    }

    /// Joins (or rejoins) a member and waits for the round to complete.
    pub async fn join(&self, group: &str, req: JoinRequest) -> Result<JoinOutcome, ClassicError> {
        let now = Instant::now();
        let (member_id, mut changes) = {
            let mut groups = lock(&self.groups);
            let g = groups.entry(group.to_owned()).or_insert_with(Group::new);
            g.expire(now);
            // A joiner must share the protocol type and at least one assignor with every
            // other member (else the round could pick no protocol).
            let others_share = |name: &str| {
                g.members
                    .iter()
                    .filter(|(id, _)| **id != req.member_id)
                    .all(|(_, m)| m.protocols.iter().any(|(p, _)| p == name))
            };
            if req.protocols.is_empty()
                || (!g.members.is_empty() && g.protocol_type != req.protocol_type)
                || !req.protocols.iter().any(|(p, _)| others_share(p))
            {
                return Err(ClassicError::InconsistentGroupProtocol);
            }
            let member_id = if req.member_id.is_empty() {
                let id = self.new_member_id(&req.client_id);
                if req.require_known_member_id {
                    // Not a member until it joins with the id.
                    return Ok(JoinOutcome::NeedsMemberId(id));
                }
                id
            } else {
                req.member_id.clone()
            };
            let first = g.members.is_empty();
            g.protocol_type = req.protocol_type.clone();
            let m = g
                .members
                .entry(member_id.clone())
                .or_insert_with(|| Member {
                    client_id: req.client_id.clone(),
                    protocols: Vec::new(),
                    session: req.session,
                    rebalance: req.rebalance,
                    last_seen: now,
                    joined: false,
                });
            m.protocols = req.protocols.clone();
            m.session = req.session;
            m.rebalance = req.rebalance;
            m.last_seen = now;
            m.client_id = req.client_id.clone();
            g.start_round(now, first);
            if let Some(m) = g.members.get_mut(&member_id) {
                m.joined = true;
            }
            g.maybe_complete(now);
            (member_id, g.changed.subscribe())
        };
        loop {
            let wake = {
                let mut groups = lock(&self.groups);
                let Some(g) = groups.get_mut(group) else {
                    return Err(ClassicError::CoordinatorNotAvailable);
                };
                let now = Instant::now();
                g.maybe_complete(now);
                match g.phase {
                    Phase::Joining { until, not_before } => {
                        if !g.members.contains_key(&member_id) {
                            return Err(ClassicError::UnknownMemberId);
                        }
                        // Before `not_before` the round cannot complete; after it, only
                        // a join (a change) or the deadline completes it.
                        if now < not_before { not_before } else { until }
                    }
                    Phase::Syncing | Phase::Stable => {
                        if !g.members.contains_key(&member_id) {
                            return Err(ClassicError::UnknownMemberId);
                        }
                        let leader = g.leader.clone().unwrap_or_default();
                        let members = if leader == member_id {
                            let protocol = g.protocol.clone().unwrap_or_default();
                            g.members
                                .iter()
                                .map(|(id, m)| {
                                    let meta = m
                                        .protocols
                                        .iter()
                                        .find(|(n, _)| *n == protocol)
                                        .map(|(_, b)| b.clone())
                                        .unwrap_or_default();
                                    (id.clone(), meta)
                                })
                                .collect()
                        } else {
                            Vec::new()
                        };
                        return Ok(JoinOutcome::Joined(Joined {
                            generation: g.generation,
                            protocol_type: g.protocol_type.clone(),
                            protocol: g.protocol.clone(),
                            leader,
                            member_id,
                            members,
                        }));
                    }
                    Phase::Empty => return Err(ClassicError::UnknownMemberId),
                }
            };
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(wake));
            tokio::select! {
                () = sleep => {}
                r = changes.changed() => if r.is_err() {
                    return Err(ClassicError::CoordinatorNotAvailable);
                },
            }
        }
    }

    /// The leader hands in the assignment; every member gets its own share.
    pub async fn sync(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<Bytes, ClassicError> {
        let mut changes = {
            let mut groups = lock(&self.groups);
            let g = groups.get_mut(group).ok_or(ClassicError::UnknownMemberId)?;
            g.check_member(member_id, generation)?;
            if matches!(g.phase, Phase::Joining { .. }) {
                return Err(ClassicError::RebalanceInProgress);
            }
            if let Some(m) = g.members.get_mut(member_id) {
                m.last_seen = Instant::now();
            }
            if g.leader.as_deref() == Some(member_id) && g.phase == Phase::Syncing {
                g.assignments = assignments.into_iter().collect();
                g.phase = Phase::Stable;
                g.notify();
            }
            g.changed.subscribe()
        };
        loop {
            let deadline = {
                let groups = lock(&self.groups);
                let g = groups.get(group).ok_or(ClassicError::UnknownMemberId)?;
                g.check_member(member_id, generation)?;
                match g.phase {
                    Phase::Stable => {
                        return Ok(g.assignments.get(member_id).cloned().unwrap_or_default());
                    }
                    Phase::Joining { .. } | Phase::Empty => {
                        return Err(ClassicError::RebalanceInProgress);
                    }
                    Phase::Syncing => g
                        .members
                        .get(member_id)
                        .map_or(Instant::now(), |m| m.last_seen + m.session),
                }
            };
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline));
            tokio::select! {
                () = sleep => return Err(ClassicError::RebalanceInProgress),
                r = changes.changed() => if r.is_err() {
                    return Err(ClassicError::CoordinatorNotAvailable);
                },
            }
        }
    }

    pub fn heartbeat(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
    ) -> Result<(), ClassicError> {
        let now = Instant::now();
        let mut groups = lock(&self.groups);
        let g = groups.get_mut(group).ok_or(ClassicError::UnknownMemberId)?;
        g.expire(now);
        g.maybe_complete(now);
        g.check_member(member_id, generation)?;
        if let Some(m) = g.members.get_mut(member_id) {
            m.last_seen = now;
        }
        match g.phase {
            Phase::Joining { .. } => Err(ClassicError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// Members leave at once; the others rebalance.
    pub fn leave(&self, group: &str, member_ids: &[String]) -> Vec<Result<(), ClassicError>> {
        let now = Instant::now();
        let mut groups = lock(&self.groups);
        let Some(g) = groups.get_mut(group) else {
            return member_ids
                .iter()
                .map(|_| Err(ClassicError::UnknownMemberId))
                .collect();
        };
        let out: Vec<Result<(), ClassicError>> = member_ids
            .iter()
            .map(|id| {
                g.members
                    .remove(id)
                    .map(|_| ())
                    .ok_or(ClassicError::UnknownMemberId)
            })
            .collect();
        if out.iter().all(Result::is_err) {
            // Nobody left (an expired member saying goodbye): no rebalance for the rest.
        } else if g.members.is_empty() {
            g.phase = Phase::Empty;
            g.leader = None;
            g.notify();
        } else {
            g.start_round(now, false);
            g.maybe_complete(now);
        }
        out
    }

    /// Whether a commit by `member_id` at `generation` is the group's current one.
    pub fn check_commit(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
    ) -> Result<(), ClassicError> {
        let groups = lock(&self.groups);
        let g = groups.get(group).ok_or(ClassicError::UnknownMemberId)?;
        g.check_member(member_id, generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(member_id: &str) -> JoinRequest {
        JoinRequest {
            member_id: member_id.to_owned(),
            client_id: "c".into(),
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"sub"))],
            session: Duration::from_secs(10),
            rebalance: Duration::from_secs(5),
            require_known_member_id: true,
        }
    }

    fn joined(o: JoinOutcome) -> Joined {
        match o {
            JoinOutcome::Joined(j) => j,
            JoinOutcome::NeedsMemberId(id) => panic!("asked for an id: {id}"),
        }
    }

    #[tokio::test]
    async fn two_members_join_one_round_sync_and_a_stale_generation_is_refused() {
        let g = std::sync::Arc::new(ClassicGroups::default());
        // KIP-394: the first join only hands out an id.
        let JoinOutcome::NeedsMemberId(a) = g.join("g", req("")).await.expect("join") else {
            panic!("no id handed out");
        };
        let JoinOutcome::NeedsMemberId(b) = g.join("g", req("")).await.expect("join") else {
            panic!("no id handed out");
        };
        assert_ne!(a, b);
        let (ja, jb) = tokio::join!(g.join("g", req(&a)), g.join("g", req(&b)));
        let (ja, jb) = (joined(ja.expect("a")), joined(jb.expect("b")));
        assert_eq!(ja.generation, 1);
        assert_eq!(jb.generation, 1);
        assert_eq!(ja.leader, jb.leader, "one leader");
        let (leader, follower) = if ja.leader == a {
            (&ja, &jb)
        } else {
            (&jb, &ja)
        };
        assert_eq!(leader.members.len(), 2, "the leader sees every member");
        assert!(follower.members.is_empty());
        assert_eq!(leader.protocol.as_deref(), Some("range"));
        // The follower's sync waits for the leader's assignment.
        let assignments = vec![
            (a.clone(), Bytes::from_static(b"for-a")),
            (b.clone(), Bytes::from_static(b"for-b")),
        ];
        let (fa, la) = tokio::join!(
            g.sync("g", &follower.member_id, 1, Vec::new()),
            g.sync("g", &leader.member_id, 1, assignments)
        );
        let mine = |id: &str| {
            if id == a {
                &b"for-a"[..]
            } else {
                &b"for-b"[..]
            }
        };
        assert_eq!(&fa.expect("follower sync")[..], mine(&follower.member_id));
        assert_eq!(&la.expect("leader sync")[..], mine(&leader.member_id));
        assert_eq!(g.heartbeat("g", &a, 1), Ok(()));
        assert_eq!(
            g.heartbeat("g", &a, 0),
            Err(ClassicError::IllegalGeneration)
        );
        assert_eq!(
            g.heartbeat("g", "nobody", 1),
            Err(ClassicError::UnknownMemberId)
        );
        assert_eq!(
            g.check_commit("g", &b, 0),
            Err(ClassicError::IllegalGeneration)
        );
        // A member leaves: the other is told to rejoin, and a new round has it alone.
        assert_eq!(g.leave("g", std::slice::from_ref(&a)), vec![Ok(())]);
        assert_eq!(
            g.heartbeat("g", &b, 1),
            Err(ClassicError::RebalanceInProgress)
        );
        let jb2 = joined(g.join("g", req(&b)).await.expect("rejoin"));
        assert_eq!(jb2.generation, 2);
        assert_eq!(jb2.leader, b);
        assert_eq!(
            g.check_commit("g", &b, 1),
            Err(ClassicError::IllegalGeneration)
        );
    }

    #[tokio::test]
    async fn a_member_with_another_protocol_type_is_refused() {
        let g = ClassicGroups::default();
        let mut r = req("m1");
        r.require_known_member_id = false;
        joined(g.join("g", r).await.expect("join"));
        let mut other = req("m2");
        other.protocol_type = "connect".into();
        assert_eq!(
            g.join("g", other).await.map(|_| ()),
            Err(ClassicError::InconsistentGroupProtocol)
        );
    }
}
