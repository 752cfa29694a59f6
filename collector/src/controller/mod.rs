//! The controller: cluster metadata in a Raft-replicated state machine (openraft).
//!
//! - [`state`]: the metadata and the pure `apply` of each command.
//! - [`raft`]: the openraft type configuration.
//! - [`log_store`]: the durable Raft log (fsynced before openraft is told).
//! - [`state_machine`]: applies entries to the metadata; snapshots.
//! - [`network`]: Raft RPCs over HTTP.
//!
//! Every voter runs the Raft group; a single voter initializes itself, several voters are
//! initialized by the one with the smallest id. Proposals made on a follower are forwarded to
//! the leader over `/internal/controller/propose`.

pub mod log_store;
pub mod network;
pub mod raft;
pub mod state;
pub mod state_machine;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use openraft::BasicNode;
use openraft::error::{ClientWriteError, RaftError};

use self::raft::{Raft, TypeConfig};
use self::state::{CommandResult, MetadataCommand, MetadataState, NodeId};

/// How long a proposal waits for a leader to exist or to answer.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pauses between attempts of a proposal (no leader yet, leader moving).
const PROPOSE_RETRY_INITIAL: Duration = Duration::from_millis(20);
const PROPOSE_RETRY_MAX: Duration = Duration::from_millis(500);
/// How often the active controller looks for brokers silent past their session.
const FENCE_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// Shortest silence after which a broker's port is probed.
const PROBE_AFTER_MIN: Duration = Duration::from_millis(500);
/// How long a probe waits for a connection.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Consecutive refused probes (one per check) that fence a silent broker early.
const PROBE_REFUSALS_TO_FENCE: u32 = 2;

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub node_id: NodeId,
    /// host:port of this node's HTTP listener.
    pub advertise: String,
    /// `(id, host:port)` of every voter.
    pub voters: Vec<(NodeId, String)>,
    /// Where the Raft log, vote and snapshots live.
    pub dir: PathBuf,
    /// A broker silent this long is fenced by the active controller.
    pub broker_session_timeout: Duration,
    /// How often brokers heartbeat: one silent for two of these is probed (see
    /// [`fence_silent_brokers`]).
    pub broker_heartbeat_interval: Duration,
    /// TLS to the other nodes (`https://`), when the node has TLS.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Peer addresses dialled elsewhere (see `Config::dial_overrides`).
    pub dial_overrides: Arc<std::collections::BTreeMap<String, String>>,
}

/// What the active controller knows of broker liveness (memory only: a new active
/// controller starts every broker's clock when it takes over).
#[derive(Debug, Default)]
struct Liveness {
    leader_since: Option<std::time::Instant>,
    last_heartbeat: std::collections::HashMap<NodeId, std::time::Instant>,
    /// Consecutive probes of a silent broker's port that were refused.
    refused: std::collections::HashMap<NodeId, u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("this node is not the controller leader; {}", crate::broker::leader_text(*.leader, .leader_address.as_deref()).replace("broker", "node"))]
    NotLeader {
        leader: Option<NodeId>,
        leader_address: Option<String>,
    },
    #[error("controller unavailable: {0}")]
    Unavailable(String),
    #[error("controller storage: {0}")]
    Storage(String),
}

pub struct Controller {
    raft: Raft,
    node_id: NodeId,
    metadata: tokio::sync::watch::Receiver<Arc<MetadataState>>,
    /// Shared by Raft RPCs and forwarded proposals.
    http: reqwest::Client,
    /// How the other nodes' addresses are reached: scheme and dial overrides.
    peers: client::ClientConfig,
    liveness: std::sync::Mutex<Liveness>,
    broker_session_timeout: Duration,
    /// Silence after which a broker's port is probed.
    probe_after: Duration,
    stop: tokio::sync::watch::Sender<bool>,
    /// Where the Raft log, vote and snapshots live (and [`TENURE_FILE`]).
    dir: PathBuf,
}

/// This node's last leadership tenure: `{"term": T, "tenure": N}` (see
/// [`Controller::new_tenure`]).
const TENURE_FILE: &str = "leader-tenure.json";

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Tenure {
    term: u64,
    tenure: u32,
}

/// See [`Controller::new_tenure`]: the tenure recorded in `dir` for `term`, plus one (0 for
/// a new term), recorded in its place.
fn next_tenure(dir: &std::path::Path, term: u64) -> u32 {
    let path = dir.join(TENURE_FILE);
    let last: Tenure = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let tenure = if last.term == term {
        last.tenure.saturating_add(1)
    } else {
        0
    };
    let bytes = serde_json::to_vec(&Tenure { term, tenure }).unwrap_or_default();
    if let Err(e) = shared::sys::write_atomic(&path, &bytes) {
        tracing::warn!(path = %path.display(), error = %e, "cannot record this leadership tenure");
    }
    tenure
}

#[cfg(test)]
mod tenure_tests {
    #[test]
    fn tenures_count_up_within_a_term_across_restarts_and_start_over_in_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(super::next_tenure(dir.path(), 4), 0);
        assert_eq!(super::next_tenure(dir.path(), 4), 1);
        assert_eq!(super::next_tenure(dir.path(), 4), 2);
        assert_eq!(super::next_tenure(dir.path(), 5), 0);
        assert_eq!(super::next_tenure(dir.path(), 5), 1);
    }
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("node_id", &self.node_id)
            .field("leader", &self.leader())
            .finish_non_exhaustive()
    }
}

impl Controller {
    /// Opens the stores, starts openraft, and initializes the cluster when this node should.
    pub async fn start(config: ControllerConfig) -> Result<Arc<Controller>, ControllerError> {
        let storage = |e: openraft::StorageError<NodeId>| ControllerError::Storage(e.to_string());
        let log = log_store::LogStore::open(&config.dir).map_err(storage)?;
        let sm = state_machine::StateMachine::open(&config.dir).map_err(storage)?;
        let metadata = sm.subscribe();
        let client = client::ClientConfig {
            request_timeout: network::RPC_TIMEOUT,
            tls: config.tls.clone(),
            dial_overrides: config.dial_overrides.clone(),
            ..client::ClientConfig::default()
        };
        let http = client::http_client(&client)
            .map_err(|e| ControllerError::Unavailable(e.to_string()))?;
        let raft_config = openraft::Config {
            cluster_name: "tributary".into(),
            heartbeat_interval: 250,
            election_timeout_min: 1000,
            election_timeout_max: 2000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(1000),
            max_in_snapshot_log_to_keep: 100,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ControllerError::Unavailable(e.to_string()))?;
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            network::Network {
                client: http.clone(),
                peers: client.clone(),
                warned: Default::default(),
            },
            log,
            sm,
        )
        .await
        .map_err(|e| ControllerError::Unavailable(e.to_string()))?;
        let is_voter = config.voters.iter().any(|(id, _)| *id == config.node_id);
        let smallest = config.voters.iter().map(|(id, _)| *id).min();
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| ControllerError::Unavailable(e.to_string()))?;
        if is_voter && !initialized && smallest == Some(config.node_id) {
            let members: BTreeMap<NodeId, BasicNode> = config
                .voters
                .iter()
                .map(|(id, addr)| {
                    let addr = if *id == config.node_id {
                        config.advertise.clone()
                    } else {
                        addr.clone()
                    };
                    (*id, BasicNode { addr })
                })
                .collect();
            match raft.initialize(members).await {
                Ok(())
                | Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(ControllerError::Unavailable(e.to_string())),
            }
        }
        let c = Arc::new(Controller {
            raft,
            node_id: config.node_id,
            metadata,
            http,
            peers: client,
            liveness: std::sync::Mutex::new(Liveness::default()),
            broker_session_timeout: config.broker_session_timeout,
            probe_after: (config.broker_heartbeat_interval * 2).max(PROBE_AFTER_MIN),
            stop: tokio::sync::watch::Sender::new(false),
            dir: config.dir.clone(),
        });
        tokio::spawn(fence_silent_brokers(Arc::downgrade(&c), c.stop.subscribe()));
        Ok(c)
    }

    fn liveness(&self) -> std::sync::MutexGuard<'_, Liveness> {
        shared::sys::lock(&self.liveness)
    }

    /// On the active controller: how long ago each broker last heartbeated (a broker not
    /// heard from since this node became leader counts from then). `None` elsewhere.
    pub fn heartbeat_ages(&self) -> Option<std::collections::HashMap<NodeId, Duration>> {
        if self.leader() != Some(self.node_id) {
            return None;
        }
        let l = self.liveness();
        let now = std::time::Instant::now();
        let since = l.leader_since.unwrap_or(now);
        Some(
            self.metadata()
                .brokers
                .keys()
                .map(|id| {
                    let last = l
                        .last_heartbeat
                        .get(id)
                        .copied()
                        .unwrap_or(since)
                        .max(since);
                    (*id, now.saturating_duration_since(last))
                })
                .collect(),
        )
    }

    /// A broker's heartbeat: recorded by the active controller (forwarded there from any
    /// other node); a fenced broker that heartbeats is unfenced.
    pub async fn broker_heartbeat(&self, id: NodeId) -> Result<(), ControllerError> {
        match self.leader() {
            Some(leader) if leader == self.node_id => {
                self.liveness()
                    .last_heartbeat
                    .insert(id, std::time::Instant::now());
                let fenced = self.metadata().brokers.get(&id).is_some_and(|b| b.fenced);
                if fenced {
                    tracing::info!(broker = id, "broker is back: unfencing");
                    self.propose(MetadataCommand::UnfenceBroker { id }).await?;
                }
                Ok(())
            }
            Some(leader) => {
                let addr = self
                    .raft
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .get_node(&leader)
                    .map(|n| n.addr.clone())
                    .ok_or(ControllerError::NotLeader {
                        leader: Some(leader),
                        leader_address: None,
                    })?;
                let resp = self
                    .http
                    .post(format!(
                        "{}{}",
                        self.peers.base_url(&addr),
                        api::routes::CONTROLLER_HEARTBEAT
                    ))
                    .json(&api::BrokerHeartbeat { id })
                    .send()
                    .await
                    .map_err(|e| {
                        ControllerError::Unavailable(format!("heartbeat to {addr}: {e}"))
                    })?;
                let r: Result<(), String> = resp
                    .json()
                    .await
                    .map_err(|e| ControllerError::Unavailable(format!("reply from {addr}: {e}")))?;
                r.map_err(ControllerError::Unavailable)
            }
            None => Err(ControllerError::NotLeader {
                leader: None,
                leader_address: None,
            }),
        }
    }

    /// Proposes a command; waits until it is committed and applied. On a follower the
    /// proposal is forwarded to the leader.
    pub async fn propose(&self, cmd: MetadataCommand) -> Result<CommandResult, ControllerError> {
        let deadline = tokio::time::Instant::now() + PROPOSE_TIMEOUT;
        let mut delays =
            client::RetryPolicy::new(PROPOSE_RETRY_INITIAL, PROPOSE_RETRY_MAX).delays();
        loop {
            let err = match self.raft.client_write(cmd.clone()).await {
                Ok(resp) => return Ok(resp.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    match f.leader_node {
                        Some(node) if f.leader_id != Some(self.node_id) => {
                            match self.forward(&node.addr, &cmd).await {
                                Ok(r) => return Ok(r),
                                Err(e) => e,
                            }
                        }
                        _ => ControllerError::NotLeader {
                            leader: f.leader_id,
                            leader_address: None,
                        },
                    }
                }
                // This node's Raft core has stopped for good (a storage error): retrying
                // cannot help, and a node stopping itself should not wait out the deadline.
                Err(RaftError::Fatal(f)) => {
                    return Err(ControllerError::Unavailable(format!(
                        "this node's controller stopped: {f}"
                    )));
                }
                Err(e) => ControllerError::Unavailable(e.to_string()),
            };
            let backoff = delays.next().unwrap_or(PROPOSE_RETRY_MAX);
            if tokio::time::Instant::now() + backoff >= deadline {
                return Err(err);
            }
            tokio::time::sleep(backoff).await;
        }
    }

    async fn forward(
        &self,
        addr: &str,
        cmd: &MetadataCommand,
    ) -> Result<CommandResult, ControllerError> {
        let resp = self
            .http
            .post(format!(
                "{}{}",
                self.peers.base_url(addr),
                api::routes::CONTROLLER_PROPOSE
            ))
            .json(cmd)
            .send()
            .await
            .map_err(|e| ControllerError::Unavailable(format!("forwarding to {addr}: {e}")))?;
        let r: Result<CommandResult, String> = resp
            .json()
            .await
            .map_err(|e| ControllerError::Unavailable(format!("reply from {addr}: {e}")))?;
        r.map_err(ControllerError::Unavailable)
    }

    /// The latest applied metadata.
    pub fn metadata(&self) -> Arc<MetadataState> {
        self.metadata.borrow().clone()
    }

    /// Notified on every applied change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<MetadataState>> {
        self.metadata.clone()
    }

    /// The current Raft leader, if known.
    pub fn leader(&self) -> Option<NodeId> {
        let m = self.raft.metrics();
        let m = m.borrow();
        // A stopped Raft core leaves its last metrics behind, naming itself leader: a node
        // whose core died (a failed fsync of its log) must not go on acting as the
        // controller — fencing brokers, coordinating groups — beside the one the others
        // elected (campaign seed 7122: two coordinators answered one member).
        m.running_state
            .is_ok()
            .then_some(m.current_leader)
            .flatten()
    }

    /// Counts this node's tenures as leader of `term`: 0 the first time, then 1, 2, ... A
    /// leader restarted quickly resumes its term (its vote is committed, and no one else
    /// can lead that term), so a term alone does not name one process's tenure; what its
    /// group coordinator hands out must not repeat what the last process of the same term
    /// did. Kept in a small file in the controller's directory, written atomically before
    /// it is answered; if that fails it is logged, and a later restart within the same
    /// term could count the same tenure again.
    pub fn new_tenure(&self, term: u64) -> u32 {
        next_tenure(&self.dir, term)
    }

    /// This node is the active controller and its metadata holds everything committed
    /// before its term: an entry of its own term has been applied (a new or restarted
    /// leader replays what it had not applied yet first). Until then its metadata may lack
    /// topics or commits, and what it decides from them (a group member's partitions) could
    /// be wrong.
    pub fn leader_ready(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.running_state.is_ok()
            && m.current_leader == Some(self.node_id)
            && m.last_applied
                .is_some_and(|l| l.leader_id.term == m.current_term)
    }

    /// The Raft term, when this node is the active controller in it.
    pub fn leader_term(&self) -> Option<u64> {
        let m = self.raft.metrics();
        let m = m.borrow();
        (m.running_state.is_ok() && m.current_leader == Some(self.node_id))
            .then_some(m.current_term)
    }

    /// Whether this node is the active controller.
    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.node_id)
    }

    /// host:port of the active controller, if known.
    pub fn leader_address(&self) -> Option<String> {
        let m = self.raft.metrics().borrow().clone();
        let leader = m
            .running_state
            .is_ok()
            .then_some(m.current_leader)
            .flatten()?;
        m.membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
    }

    /// Whether this node is a voter or learner of the current membership.
    pub fn is_member(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        membership.voter_ids().any(|id| id == self.node_id)
            || membership.learner_ids().any(|id| id == self.node_id)
    }

    /// A broker that is not a voter asks to follow the metadata log as a learner: any
    /// voter forwards the request to the active controller, which adds it.
    pub async fn join_as_learner(
        &self,
        voters: &[(NodeId, String)],
        address: &str,
    ) -> Result<(), ControllerError> {
        let mut last = ControllerError::Unavailable("no voter answered".into());
        for (_, addr) in voters {
            let r = self
                .http
                .post(format!(
                    "{}{}",
                    self.peers.base_url(addr),
                    api::routes::CONTROLLER_ADD_LEARNER
                ))
                .json(&api::AddLearner {
                    id: self.node_id,
                    address: address.to_owned(),
                })
                .send()
                .await;
            match r {
                Ok(resp) => match resp.json::<Result<(), String>>().await {
                    Ok(Ok(())) => return Ok(()),
                    Ok(Err(e)) => last = ControllerError::Unavailable(e),
                    Err(e) => last = ControllerError::Unavailable(e.to_string()),
                },
                Err(e) => last = ControllerError::Unavailable(format!("{addr}: {e}")),
            }
        }
        Err(last)
    }

    /// On the active controller (forwarded there otherwise): adds a learner.
    pub async fn add_learner(&self, id: NodeId, address: String) -> Result<(), ControllerError> {
        if self.is_leader() {
            let known = self
                .raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .get_node(&id)
                .map(|n| n.addr.clone());
            if known.as_deref() == Some(address.as_str()) {
                return Ok(());
            }
            self.raft
                .add_learner(id, BasicNode { addr: address }, false)
                .await
                .map_err(|e| ControllerError::Unavailable(e.to_string()))?;
            return Ok(());
        }
        let addr = self.leader_address().ok_or(ControllerError::NotLeader {
            leader: None,
            leader_address: None,
        })?;
        let resp = self
            .http
            .post(format!(
                "{}{}",
                self.peers.base_url(&addr),
                api::routes::CONTROLLER_ADD_LEARNER
            ))
            .json(&api::AddLearner {
                id,
                address: address.to_owned(),
            })
            .send()
            .await
            .map_err(|e| ControllerError::Unavailable(format!("{addr}: {e}")))?;
        let r: Result<(), String> = resp
            .json()
            .await
            .map_err(|e| ControllerError::Unavailable(format!("reply from {addr}: {e}")))?;
        r.map_err(ControllerError::Unavailable)
    }

    /// The Raft view of this node: role, term, leader, log and apply positions, membership.
    pub fn status(&self) -> api::ControllerStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        api::ControllerStatus {
            node_id: self.node_id,
            state: format!("{:?}", m.state),
            term: m.current_term,
            leader: m
                .running_state
                .is_ok()
                .then_some(m.current_leader)
                .flatten(),
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|l| l.index),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
        }
    }

    /// Voters of the current membership.
    pub fn voters(&self) -> BTreeSet<NodeId> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    /// Internal routes: Raft RPCs and forwarded proposals.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(api::routes::RAFT_APPEND, post(append))
            .route(api::routes::RAFT_VOTE, post(vote))
            .route(api::routes::RAFT_SNAPSHOT, post(snapshot))
            .route(api::routes::CONTROLLER_PROPOSE, post(forwarded))
            .route(api::routes::CONTROLLER_HEARTBEAT, post(heartbeat))
            .route(api::routes::CONTROLLER_ADD_LEARNER, post(add_learner))
            .with_state(self.clone())
    }

    /// Resolves when the Raft core stopped on its own, with what stopped it: openraft ends
    /// its core for good on a storage error (a failed fsync of the metadata log) or a panic,
    /// and a node whose metadata is frozen must not go on serving. Never resolves once
    /// [`Controller::shutdown`] was asked for.
    pub async fn failed(&self) -> String {
        let mut metrics = self.raft.metrics();
        loop {
            let failure = match &metrics.borrow_and_update().running_state {
                Err(openraft::error::Fatal::Stopped) | Ok(()) => None,
                Err(e) => Some(e.to_string()),
            };
            if let Some(f) = failure {
                return f;
            }
            if metrics.changed().await.is_err() {
                let stopping = *self.stop.borrow();
                if stopping {
                    std::future::pending::<()>().await;
                }
                return "the Raft core stopped".into();
            }
        }
    }

    /// Stops openraft.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}

type C = State<Arc<Controller>>;

async fn append(
    State(c): C,
    Json(req): Json<openraft::raft::AppendEntriesRequest<TypeConfig>>,
) -> impl IntoResponse {
    // Serialised by axum: a reply that cannot be serialised is a 500, never `null`.
    Json(c.raft.append_entries(req).await)
}

async fn vote(
    State(c): C,
    Json(req): Json<openraft::raft::VoteRequest<NodeId>>,
) -> impl IntoResponse {
    Json(c.raft.vote(req).await)
}

async fn snapshot(
    State(c): C,
    Json(req): Json<openraft::raft::InstallSnapshotRequest<TypeConfig>>,
) -> impl IntoResponse {
    Json(c.raft.install_snapshot(req).await)
}

async fn forwarded(
    State(c): C,
    Json(cmd): Json<MetadataCommand>,
) -> Json<Result<CommandResult, String>> {
    Json(c.propose(cmd).await.map_err(|e| e.to_string()))
}

async fn add_learner(State(c): C, Json(b): Json<api::AddLearner>) -> Json<Result<(), String>> {
    Json(
        c.add_learner(b.id, b.address)
            .await
            .map_err(|e| e.to_string()),
    )
}

async fn heartbeat(State(c): C, Json(b): Json<api::BrokerHeartbeat>) -> Json<Result<(), String>> {
    Json(c.broker_heartbeat(b.id).await.map_err(|e| e.to_string()))
}

/// On the active controller: fences brokers silent past the session timeout. A controller
/// that just took over gives every broker a full session from that moment.
///
/// A broker silent for two heartbeat intervals is probed: a TCP connection to its advertised
/// address. A dead process's port refuses connections (the kernel answers for it), while a
/// paused or overloaded process's listening socket still completes handshakes (or times out
/// across a partition) — so only refusals, [`PROBE_REFUSALS_TO_FENCE`] in a row, fence a
/// broker before its session ends. A `kill -9`ed leader is fenced in about two heartbeat
/// intervals instead of a whole session; a SIGSTOPped one keeps its session.
async fn fence_silent_brokers(
    c: std::sync::Weak<Controller>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let tick = FENCE_CHECK_INTERVAL;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(tick) => {}
        }
        let Some(c) = c.upgrade() else { return };
        let now = std::time::Instant::now();
        let is_leader = c.leader() == Some(c.node_id);
        let (silent, to_probe): (Vec<NodeId>, Vec<(NodeId, String)>) = {
            let mut l = c.liveness();
            if !is_leader {
                l.leader_since = None;
                l.last_heartbeat.clear();
                l.refused.clear();
                continue;
            }
            let since = *l.leader_since.get_or_insert(now);
            let mut silent = Vec::new();
            let mut to_probe = Vec::new();
            for b in c.metadata().brokers.values().filter(|b| !b.fenced) {
                let last = l
                    .last_heartbeat
                    .get(&b.id)
                    .copied()
                    .unwrap_or(since)
                    .max(since);
                let quiet = now.duration_since(last);
                if quiet > c.broker_session_timeout {
                    silent.push(b.id);
                } else if quiet > c.probe_after && b.id != c.node_id {
                    to_probe.push((b.id, b.address.clone()));
                } else {
                    l.refused.remove(&b.id);
                }
            }
            (silent, to_probe)
        };
        for id in silent {
            tracing::warn!(
                broker = id,
                "broker silent past broker_session_timeout_ms: fencing"
            );
            if let Err(e) = c.propose(MetadataCommand::FenceBroker { id }).await {
                tracing::warn!(broker = id, error = %e, "fencing failed");
            }
        }
        let peers = &c.peers;
        let probes = to_probe.into_iter().map(|(id, address)| async move {
            let r = tokio::time::timeout(
                PROBE_TIMEOUT,
                tokio::net::TcpStream::connect(peers.dial(&address)),
            )
            .await;
            let refused =
                matches!(&r, Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused);
            (id, address, refused)
        });
        for (id, address, refused) in futures::future::join_all(probes).await {
            let count = {
                let mut l = c.liveness();
                if refused {
                    let n = l.refused.entry(id).or_insert(0);
                    *n += 1;
                    *n
                } else {
                    l.refused.remove(&id);
                    0
                }
            };
            if count >= PROBE_REFUSALS_TO_FENCE {
                tracing::warn!(
                    broker = id,
                    %address,
                    "broker silent and its port refuses connections (its process is gone): fencing"
                );
                match c.propose(MetadataCommand::FenceBroker { id }).await {
                    Ok(_) => {
                        c.liveness().refused.remove(&id);
                    }
                    Err(e) => tracing::warn!(broker = id, error = %e, "fencing failed"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
