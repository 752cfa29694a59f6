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
use axum::routing::post;
use axum::{Json, Router};
use openraft::BasicNode;
use openraft::error::{ClientWriteError, RaftError};

use self::raft::{Raft, TypeConfig};
use self::state::{CommandResult, MetadataCommand, MetadataState, NodeId};

/// How long a proposal waits for a leader to exist or to answer.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub node_id: NodeId,
    /// host:port of this node's HTTP listener.
    pub advertise: String,
    /// `(id, host:port)` of every voter.
    pub voters: Vec<(NodeId, String)>,
    /// Where the Raft log, vote and snapshots live.
    pub dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("not the controller leader (leader: {leader:?})")]
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
        let http = reqwest::Client::builder()
            .timeout(network::RPC_TIMEOUT)
            .build()
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
        Ok(Arc::new(Controller {
            raft,
            node_id: config.node_id,
            metadata,
            http,
        }))
    }

    /// Proposes a command; waits until it is committed and applied. On a follower the
    /// proposal is forwarded to the leader.
    pub async fn propose(&self, cmd: MetadataCommand) -> Result<CommandResult, ControllerError> {
        let deadline = tokio::time::Instant::now() + PROPOSE_TIMEOUT;
        let mut backoff = Duration::from_millis(20);
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
                Err(e) => ControllerError::Unavailable(e.to_string()),
            };
            if tokio::time::Instant::now() + backoff >= deadline {
                return Err(err);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    async fn forward(
        &self,
        addr: &str,
        cmd: &MetadataCommand,
    ) -> Result<CommandResult, ControllerError> {
        let resp = self
            .http
            .post(format!("http://{addr}/internal/controller/propose"))
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
        self.raft.metrics().borrow().current_leader
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
            .route("/internal/raft/append", post(append))
            .route("/internal/raft/vote", post(vote))
            .route("/internal/raft/snapshot", post(snapshot))
            .route("/internal/controller/propose", post(forwarded))
            .with_state(self.clone())
    }

    /// Stops openraft.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}

type C = State<Arc<Controller>>;

async fn append(
    State(c): C,
    Json(req): Json<openraft::raft::AppendEntriesRequest<TypeConfig>>,
) -> Json<serde_json::Value> {
    Json(serde_json::to_value(c.raft.append_entries(req).await).unwrap_or_default())
}

async fn vote(
    State(c): C,
    Json(req): Json<openraft::raft::VoteRequest<NodeId>>,
) -> Json<serde_json::Value> {
    Json(serde_json::to_value(c.raft.vote(req).await).unwrap_or_default())
}

async fn snapshot(
    State(c): C,
    Json(req): Json<openraft::raft::InstallSnapshotRequest<TypeConfig>>,
) -> Json<serde_json::Value> {
    Json(serde_json::to_value(c.raft.install_snapshot(req).await).unwrap_or_default())
}

async fn forwarded(
    State(c): C,
    Json(cmd): Json<MetadataCommand>,
) -> Json<Result<CommandResult, String>> {
    Json(c.propose(cmd).await.map_err(|e| e.to_string()))
}

#[cfg(test)]
mod tests;
