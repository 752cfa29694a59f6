//! Raft RPCs over HTTP: one shared `reqwest::Client`, JSON bodies, a timeout on every call.
//! Peers serve them under `/internal/raft/{append,vote,snapshot}` (see `Controller::router`).

use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::raft::{NodeId, TypeConfig};

/// Longest a single Raft RPC may take (snapshots can be larger; metadata stays small).
pub const RPC_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Network {
    pub client: reqwest::Client,
    /// Scheme and dial overrides of the peers' addresses.
    pub peers: client::ClientConfig,
    /// When each peer was last reported unreachable (openraft makes a connection per
    /// attempt, so this lives here).
    pub warned:
        std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>>,
}

#[derive(Debug)]
pub struct Connection {
    client: reqwest::Client,
    /// The peer's base URL.
    base: String,
    addr: String,
    /// When a peer was last reported unreachable (at most every [`UNREACHABLE_LOG_EVERY`]).
    warned: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>>,
}

/// How often an unreachable controller peer is reported (it is normal while peers start).
const UNREACHABLE_LOG_EVERY: Duration = Duration::from_secs(30);

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, _target: NodeId, node: &BasicNode) -> Connection {
        Connection {
            client: self.client.clone(),
            base: self.peers.base_url(&node.addr),
            addr: node.addr.clone(),
            warned: self.warned.clone(),
        }
    }
}

impl Connection {
    async fn call<Req, Resp, E>(
        &self,
        route: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let url = format!("{}/internal/raft/{route}", self.base);
        let timeout = option.hard_ttl().min(RPC_TIMEOUT);
        let resp = self
            .client
            .post(&url)
            .json(req)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    let mut warned = shared::sys::lock(&self.warned);
                    let last = warned.get(&self.addr).copied();
                    if last.is_none_or(|t| t.elapsed() >= UNREACHABLE_LOG_EVERY) {
                        warned.insert(self.addr.clone(), std::time::Instant::now());
                        tracing::warn!(
                            peer = %self.addr,
                            "controller peer unreachable ({}); retrying",
                            client::describe(&e)
                        );
                    }
                    RPCError::Unreachable(Unreachable::new(&e))
                } else {
                    RPCError::Network(NetworkError::new(&e))
                }
            })?;
        let result: Result<Resp, E> = resp
            .json()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(0, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("vote", &rpc, &option).await
    }
}
