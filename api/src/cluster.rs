//! Cluster status and health.

use serde::{Deserialize, Serialize};

/// This node's view of the controller's Raft group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerStatus {
    pub node_id: u64,
    /// `Leader`, `Follower`, `Candidate`, `Learner`, `Shutdown`.
    pub state: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterBroker {
    pub id: u64,
    pub address: String,
    pub alive: bool,
    pub voter: bool,
    /// Known only on the active controller; `null` elsewhere.
    pub last_heartbeat_ms_ago: Option<u64>,
}

/// `GET /v1/cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub node_id: u64,
    pub controller: ControllerStatus,
    pub brokers: Vec<ClusterBroker>,
    pub broker_heartbeat_interval_ms: u64,
    pub broker_session_timeout_ms: u64,
}

/// `GET /health` (503 with `"status": "starting"` until the broker is registered).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `starting`, `ok` or `degraded` (a data directory is offline).
    pub status: String,
    pub node_id: u64,
    pub data_dirs_offline: usize,
    pub controller_leader: Option<u64>,
}
