//! The broker: which partitions this node holds, and the services every front end calls —
//! produce ([`produce`]), fetch ([`fetch`]), topic admin and the views ([`views`]). The
//! HTTP handlers in `server` only translate to and from these calls.
//!
//! Invariant: nothing here sees an HTTP type (axum, status codes, headers) or builds JSON;
//! requests and replies are `api` types, failures are [`BrokerError`] variants. Calls to
//! other brokers go through `client::CollectorClient`.

pub mod acls;
pub mod fetch;
pub mod partition;
#[cfg(test)]
mod power_loss_tests;
pub mod produce;
pub mod producer_state;
pub mod replica;
pub mod sessions;
pub mod views;

use std::collections::HashMap;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use client::{ClientConfig, ClientError, CollectorClient};

use crate::config::Config;
use crate::controller::state::{
    CommandResult, MetadataCommand, MetadataError, TopicConfigs, TopicMeta,
};
use crate::controller::{Controller, ControllerError};
use crate::metrics::Metrics;
use crate::storage::manager::TopicPartition;
use crate::storage::{LogConfig, LogManager, StorageError};
pub use partition::{Acks, BatchAck, Partition, PartitionRef, ProduceError};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    #[error("topic {topic} has no partition {partition} (it has {count})")]
    UnknownPartition {
        topic: String,
        partition: u32,
        count: u32,
    },
    #[error("this broker is not the leader of {topic}-{partition}; {}", leader_text(*.leader, .leader_address.as_deref()))]
    NotLeader {
        topic: String,
        partition: u32,
        leader: Option<u64>,
        /// The leader's advertised `host:port`, when known.
        leader_address: Option<String>,
    },
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Controller(#[from] ControllerError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("internal: {0}")]
    Internal(String),
    #[error(transparent)]
    Produce(#[from] ProduceError),
    /// A produced batch that is refused before anything is written.
    #[error("{0}")]
    InvalidBatch(shared::BatchError),
    #[error("{0}")]
    InvalidRecord(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidTopic(String),
    /// A stored batch that does not decode.
    #[error("{0}")]
    CorruptBatch(String),
    #[error("{topic}-{partition} has {isr} in-sync replicas, min_insync_replicas is {min}")]
    NotEnoughReplicas {
        topic: String,
        partition: u32,
        isr: usize,
        min: usize,
    },
    /// acks=all: appended at the leader, but the in-sync replicas fell below the minimum
    /// while the produce waited.
    #[error("{0}")]
    NotEnoughReplicasAfterAppend(String),
    #[error("{0}")]
    RequestTimedOut(String),
    /// A follower fetch from a broker that is not a follower of the partition.
    #[error("{0}")]
    NotAReplica(String),
    /// A follower's fetch session is not the one this leader has (a reply was lost, or
    /// this leader restarted): the follower opens a new one.
    #[error("fetch session: {0}")]
    FetchSession(String),
    /// A follower asked past this leader's log end (it must truncate first).
    #[error("offset {offset} is past the leader's log end {end}")]
    PastLogEnd { offset: u64, end: u64 },
    #[error("the server is stopping")]
    ShuttingDown,
    #[error("no local replica of {0}")]
    NoLocalReplica(String),
    /// A client named a leader epoch other than the partition's current one (KIP-320):
    /// older means it missed a leader change, newer means this broker has not seen it yet.
    #[error("{topic}-{partition}: leader epoch {asked} asked, the current one is {current}")]
    LeaderEpoch {
        topic: String,
        partition: u32,
        asked: i32,
        current: i32,
    },
    /// A relayed request's target could not be reached.
    #[error("{0}")]
    PeerUnavailable(String),
    /// A JSON produce's partition leader could not be reached.
    #[error("{0}")]
    LeaderUnavailable(String),
    /// Another broker refused a relayed request: its own error, passed on.
    #[error("{}", .0.message)]
    Relayed(api::ErrorBody),
    /// The caller may not do this (ACLs).
    #[error("forbidden: {0}")]
    Forbidden(#[from] crate::auth::Denied),
}

impl BrokerError {
    /// A failed call to another broker: its refusal relayed, or `PeerUnavailable`.
    pub fn from_peer(what: &str, e: ClientError) -> Self {
        match e {
            ClientError::Api { error, .. } => BrokerError::Relayed(api::ErrorBody {
                message: format!("{what}: {}", error.message),
                ..error
            }),
            other => BrokerError::PeerUnavailable(format!("{what}: {other}")),
        }
    }
}

/// Calls to other brokers that answer at once (partition offsets, epoch ends, producer
/// state); a follower's fetch adds its long-poll wait.
pub const PEER_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests relayed for a client (a JSON produce to its leader, a group request to the
/// coordinator): as long as the longest wait the target may take (acks=all), and some.
pub const RELAY_REQUEST_TIMEOUT: Duration = Duration::from_secs(35);
/// Establishing a connection to another broker.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an acks=all produce waits for the in-sync replicas.
pub const ACKS_ALL_TIMEOUT: Duration = Duration::from_secs(30);

/// "the leader is broker 2 at 10.0.0.6:7400", for error messages people read.
pub fn leader_text(leader: Option<u64>, address: Option<&str>) -> String {
    match (leader, address) {
        (Some(id), Some(a)) => format!("the leader is broker {id} at {a}"),
        (Some(id), None) => format!("the leader is broker {id}"),
        (None, _) => "no leader is known yet (an election may be in progress)".to_owned(),
    }
}

/// The file in each partition directory naming the id of the topic it belongs to.
const TOPIC_ID_FILE: &str = "topic-id";

/// How long a topic creation waits for this node's metadata to show the new topic.
const LOCAL_METADATA_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug)]
pub struct Broker {
    pub config: Config,
    pub logs: LogManager,
    pub controller: Arc<Controller>,
    pub metrics: Arc<Metrics>,
    partitions: RwLock<HashMap<TopicPartition, PartitionRef>>,
    /// Calls to other brokers that answer at once ([`PEER_REQUEST_TIMEOUT`]).
    pub peers: CollectorClient,
    /// Requests relayed for clients ([`RELAY_REQUEST_TIMEOUT`]).
    pub relay: CollectorClient,
    /// Spreads keyless JSON produces over the partitions this broker leads.
    spread: AtomicU32,
    /// This process's incarnation, registered with the controller (see
    /// `BrokerMeta::incarnation`).
    pub incarnation: u64,
    /// Serialises [`Broker::open_log`]'s check and write of a partition's `topic-id` (two
    /// requests may open one partition at once).
    topic_ids: std::sync::Mutex<()>,
    /// Who may do what: checked by every client-facing service, once, here.
    pub security: Arc<crate::auth::Security>,
    /// Followers' fetch sessions with this broker as leader.
    pub sessions: sessions::Sessions,
}

impl Broker {
    pub fn new(
        config: Config,
        logs: LogManager,
        controller: Arc<Controller>,
        metrics: Arc<Metrics>,
        tls: Option<Arc<rustls::ClientConfig>>,
        security: Arc<crate::auth::Security>,
    ) -> Result<Self, BrokerError> {
        let peer_client = |request_timeout| {
            CollectorClient::new(
                std::slice::from_ref(&config.advertise),
                ClientConfig {
                    request_timeout,
                    connect_timeout: PEER_CONNECT_TIMEOUT,
                    tls: tls.clone(),
                    dial_overrides: config.dial_overrides.clone(),
                    ..ClientConfig::default()
                },
            )
            .map_err(|e| BrokerError::Internal(e.to_string()))
        };
        Ok(Self {
            peers: peer_client(PEER_REQUEST_TIMEOUT)?,
            relay: peer_client(RELAY_REQUEST_TIMEOUT)?,
            config,
            logs,
            controller,
            metrics,
            partitions: RwLock::new(HashMap::new()),
            spread: AtomicU32::new(0),
            incarnation: uuid::Uuid::new_v4().as_u64_pair().0.max(1),
            topic_ids: std::sync::Mutex::new(()),
            security,
            sessions: sessions::Sessions::default(),
        })
    }

    /// Refuses `caller` doing `operation` on a resource unless the ACLs allow it.
    pub fn authorize(
        &self,
        caller: &crate::auth::Caller,
        operation: api::acls::Operation,
        resource_type: api::acls::ResourceType,
        name: &str,
    ) -> Result<(), BrokerError> {
        if !self.security.authorizer.enforcing() {
            return Ok(());
        }
        let meta = self.controller.metadata();
        self.security
            .authorizer
            .check(&meta.acls, caller, operation, resource_type, name)
            .map_err(BrokerError::Forbidden)
    }

    /// Creating a topic: CREATE on the cluster or on the topic.
    pub fn authorize_create(
        &self,
        caller: &crate::auth::Caller,
        topic: &str,
    ) -> Result<(), BrokerError> {
        use api::acls::{Operation, ResourceType};
        self.authorize(
            caller,
            Operation::Create,
            ResourceType::Cluster,
            api::acls::CLUSTER_RESOURCE,
        )
        .or_else(|_| self.authorize(caller, Operation::Create, ResourceType::Topic, topic))
    }

    /// Writing to a topic: WRITE on it, and CREATE when the write would create it.
    pub fn authorize_write(
        &self,
        caller: &crate::auth::Caller,
        topic: &str,
    ) -> Result<(), BrokerError> {
        self.authorize(
            caller,
            api::acls::Operation::Write,
            api::acls::ResourceType::Topic,
            topic,
        )?;
        if self.config.topics.auto_create_topics
            && !self.controller.metadata().topics.contains_key(topic)
        {
            self.authorize_create(caller, topic)?;
        }
        Ok(())
    }

    /// Whether `caller` may DESCRIBE a resource (listings show only those).
    pub fn may_describe(
        &self,
        caller: &crate::auth::Caller,
        resource_type: api::acls::ResourceType,
        name: &str,
    ) -> bool {
        self.authorize(caller, api::acls::Operation::Describe, resource_type, name)
            .is_ok()
    }

    /// Idempotent producers (a producer id): IDEMPOTENT_WRITE on the cluster, or WRITE on
    /// any topic (Kafka's rule since KIP-679).
    pub fn authorize_idempotent(&self, caller: &crate::auth::Caller) -> Result<(), BrokerError> {
        use api::acls::{Operation, PatternType, Permission, ResourceType};
        let cluster = self.authorize(
            caller,
            Operation::IdempotentWrite,
            ResourceType::Cluster,
            api::acls::CLUSTER_RESOURCE,
        );
        if cluster.is_ok() {
            return cluster;
        }
        let meta = self.controller.metadata();
        let writes_somewhere = crate::auth::any_applies(
            &meta.acls,
            caller,
            ResourceType::Topic,
            Permission::Allow,
            |op| op.covers(Operation::Write),
        );
        // Unless WRITE (or ALL) is denied on every topic.
        let denied_everywhere = meta.acls.iter().any(|a| {
            a.permission == Permission::Deny
                && a.pattern_type == PatternType::Literal
                && a.resource_name == "*"
                && matches!(a.operation, Operation::Write | Operation::All)
                && crate::auth::applies(a, caller, ResourceType::Topic, "*")
        });
        if writes_somewhere && !denied_everywhere {
            Ok(())
        } else {
            cluster
        }
    }

    /// The advertised address of broker `id`, when it is registered and not fenced.
    pub fn live_broker_address(&self, id: u64) -> Option<String> {
        self.controller
            .metadata()
            .brokers
            .get(&id)
            .filter(|b| !b.fenced)
            .map(|b| b.address.clone())
    }

    /// `(high watermark, log start)` of a partition this broker holds; `(0, 0)` before its
    /// log exists.
    pub fn local_offsets(&self, topic: &str, partition: u32) -> (u64, u64) {
        self.logs
            .get(&TopicPartition::new(topic, partition))
            .map_or((0, 0), |log| {
                let l = shared::sys::lock(&log);
                (l.high_watermark(), l.log_start_offset())
            })
    }

    /// `(high watermark, log start)` of any partition: from the local log when this broker
    /// leads it, else asked of its leader.
    pub async fn partition_offsets(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<(u64, u64), BrokerError> {
        let meta = self.controller.metadata();
        let t = meta
            .topics
            .get(topic)
            .ok_or_else(|| BrokerError::UnknownTopic(topic.to_owned()))?;
        let pm =
            t.partitions
                .get(partition as usize)
                .ok_or_else(|| BrokerError::UnknownPartition {
                    topic: topic.to_owned(),
                    partition,
                    count: t.partitions.len() as u32,
                })?;
        if pm.leader == self.config.node_id {
            return Ok(self.local_offsets(topic, partition));
        }
        let addr = meta
            .brokers
            .get(&pm.leader)
            .map(|b| b.address.clone())
            .ok_or_else(|| BrokerError::Internal(format!("leader {} unknown", pm.leader)))?;
        let o = self
            .peers
            .partition_offsets_at(&self.peers.config().base_url(&addr), topic, partition)
            .await
            .map_err(|e| {
                BrokerError::Controller(ControllerError::Unavailable(format!(
                    "offsets of {topic}-{partition} from broker {}: {e}",
                    pm.leader
                )))
            })?;
        Ok((o.high_watermark, o.log_start_offset))
    }

    /// The storage settings of a topic: its own configs over the broker defaults.
    pub fn log_config(&self, configs: &TopicConfigs) -> LogConfig {
        let mut c = self.config.log.clone();
        if let Some(v) = configs.segment_bytes {
            c.segment_bytes = v;
        }
        if let Some(v) = configs.segment_ms {
            c.segment_ms = v;
        }
        if let Some(v) = configs.retention_ms {
            c.retention_ms = (v >= 0).then_some(v);
        }
        if let Some(v) = configs.retention_bytes {
            c.retention_bytes = Some(v);
        }
        c
    }

    /// Creates a topic through the controller.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: Option<u32>,
        replication_factor: Option<u16>,
        configs: TopicConfigs,
    ) -> Result<TopicMeta, BrokerError> {
        shared::names::validate_topic(name)
            .map_err(|e| MetadataError::InvalidTopic(e.to_string()))?;
        self.log_config(&configs).validate()?;
        let live = self
            .controller
            .metadata()
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .count()
            .max(1);
        // Unset: the configured default, else min(3, live brokers). Too few live brokers for
        // an explicit factor is a typed error, never a silently smaller factor.
        let replication_factor = replication_factor
            .or(self.config.topics.default_replication_factor)
            .unwrap_or_else(|| live.min(3) as u16);
        let cmd = MetadataCommand::CreateTopic {
            name: name.to_owned(),
            id: Some(crate::controller::state::new_topic_id()),
            partitions: partitions.unwrap_or(self.config.topics.default_partitions),
            replication_factor,
            configs,
        };
        let t = match self.controller.propose(cmd).await? {
            CommandResult::TopicCreated(t) => t,
            CommandResult::Refused(e) => return Err(e.into()),
            other => {
                return Err(BrokerError::Internal(format!(
                    "unexpected controller reply {other:?}"
                )));
            }
        };
        // A proposal forwarded to the controller leader is answered before this node applies
        // it: wait until the local metadata holds the topic, so nothing here (a log opened
        // for it, the sweep of deleted topics' files) acts on metadata without it.
        let mut meta = self.controller.subscribe();
        let id = t.id;
        let applied = tokio::time::timeout(
            LOCAL_METADATA_WAIT,
            meta.wait_for(|m| m.topics.get(name).is_some_and(|x| x.id == id)),
        )
        .await;
        match applied {
            Ok(Ok(_)) => Ok(t),
            _ => Err(BrokerError::LeaderUnavailable(format!(
                "topic {name} was created but this node's metadata has not caught up within {LOCAL_METADATA_WAIT:?}; retry"
            ))),
        }
    }

    /// Grows a topic to `partitions` partitions through the controller.
    pub async fn add_partitions(
        &self,
        caller: &crate::auth::Caller,
        name: &str,
        partitions: u32,
    ) -> Result<(), BrokerError> {
        self.authorize(
            caller,
            api::acls::Operation::Alter,
            api::acls::ResourceType::Topic,
            name,
        )?;
        match self
            .controller
            .propose(MetadataCommand::AddPartitions {
                name: name.to_owned(),
                partitions,
                request: Some(uuid::Uuid::new_v4()),
            })
            .await?
        {
            CommandResult::Done => Ok(()),
            CommandResult::Refused(e) => Err(e.into()),
            other => Err(BrokerError::Internal(format!(
                "unexpected controller reply {other:?}"
            ))),
        }
    }

    /// Deletes a topic through the controller, then its local partitions.
    pub async fn delete_topic(
        &self,
        caller: &crate::auth::Caller,
        name: &str,
    ) -> Result<(), BrokerError> {
        self.authorize(
            caller,
            api::acls::Operation::Delete,
            api::acls::ResourceType::Topic,
            name,
        )?;
        match self
            .controller
            .propose(MetadataCommand::DeleteTopic {
                name: name.to_owned(),
                request: Some(uuid::Uuid::new_v4()),
            })
            .await?
        {
            CommandResult::Done => {}
            CommandResult::Refused(e) => return Err(e.into()),
            other => {
                return Err(BrokerError::Internal(format!(
                    "unexpected controller reply {other:?}"
                )));
            }
        }
        self.drop_local_topic(name)
    }

    /// Opens (or creates) a partition's log for the topic whose id is `topic_id`. Each
    /// partition directory records the id of the topic it belongs to (`topic-id`); a
    /// directory left by an earlier topic of the same name — deleted and created again while
    /// this broker was down — is removed first, so its records never pass for the new
    /// topic's. (A directory from before ids were recorded adopts the current id.)
    pub fn open_log(
        &self,
        tp: &TopicPartition,
        config: crate::storage::LogConfig,
        topic_id: uuid::Uuid,
    ) -> Result<crate::storage::manager::SharedLog, StorageError> {
        let _one_at_a_time = shared::sys::lock(&self.topic_ids);
        let log = self.logs.get_or_create(tp, Some(config.clone()))?;
        let path = shared::sys::lock(&log).dir().join(TOPIC_ID_FILE);
        let recorded = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| uuid::Uuid::parse_str(t.trim()).ok());
        let log = match recorded {
            Some(id) if id == topic_id => return Ok(log),
            Some(old) => {
                tracing::warn!(partition = %tp.dir_name(), %old, new = %topic_id, "removing a partition of an earlier topic of the same name");
                drop(log);
                self.logs.delete(tp)?;
                self.logs.get_or_create(tp, Some(config))?
            }
            None => log,
        };
        let path = shared::sys::lock(&log).dir().join(TOPIC_ID_FILE);
        // Through `StorageError::io`: a full disk is `DiskFull` (retried when space
        // returns), not an I/O error that takes the whole directory offline.
        shared::sys::write_atomic(&path, topic_id.to_string().as_bytes())
            .map_err(|e| StorageError::io(&path, e))?;
        Ok(log)
    }

    /// Removes the local partitions of topics the metadata no longer has (deleted while this
    /// broker was down, or by another broker), once the metadata is known to hold
    /// everything decided before this run: it shows this process's own registration.
    pub fn drop_deleted_topics(&self) {
        // Local logs first, metadata after: a log exists only once the metadata holding its
        // topic was applied here (creation waits for it), so the metadata read next has it
        // unless it was deleted since.
        let local: Vec<String> = self
            .logs
            .partitions()
            .into_iter()
            .map(|(tp, _)| tp.topic)
            .collect();
        let meta = self.controller.metadata();
        let current = meta
            .brokers
            .get(&self.config.node_id)
            .is_some_and(|b| b.incarnation == self.incarnation);
        if !current {
            return;
        }
        let gone: std::collections::BTreeSet<String> = local
            .into_iter()
            .filter(|t| !meta.topics.contains_key(t))
            .collect();
        for topic in gone {
            tracing::info!(%topic, "deleting the local partitions of a deleted topic");
            if let Err(e) = self.drop_local_topic(&topic) {
                tracing::warn!(%topic, error = %e, "deleting a deleted topic's partitions failed");
            }
        }
    }

    fn drop_local_topic(&self, name: &str) -> Result<(), BrokerError> {
        let doomed: Vec<TopicPartition> = {
            let mut parts = shared::sys::write(&self.partitions);
            let doomed: Vec<_> = parts
                .keys()
                .filter(|tp| tp.topic == name)
                .cloned()
                .collect();
            for tp in &doomed {
                parts.remove(tp);
            }
            doomed
        };
        let mut held: Vec<_> = self
            .logs
            .partitions()
            .into_iter()
            .map(|(tp, _)| tp)
            .filter(|tp| tp.topic == name)
            .collect();
        held.extend(doomed);
        held.sort();
        held.dedup();
        for tp in held {
            self.logs.delete(&tp)?;
        }
        Ok(())
    }

    /// The topic's metadata, creating the topic when it is missing and `auto_create` allows.
    pub async fn topic(&self, name: &str, auto_create: bool) -> Result<TopicMeta, BrokerError> {
        if let Some(t) = self.controller.metadata().topics.get(name) {
            return Ok(t.clone());
        }
        if !(auto_create && self.config.topics.auto_create_topics) {
            return Err(BrokerError::UnknownTopic(name.to_owned()));
        }
        match self
            .create_topic(name, None, None, TopicConfigs::default())
            .await
        {
            Ok(t) => Ok(t),
            // Another request created it first.
            Err(BrokerError::Metadata(MetadataError::TopicExists(_))) => self
                .controller
                .metadata()
                .topics
                .get(name)
                .cloned()
                .ok_or_else(|| BrokerError::UnknownTopic(name.to_owned())),
            Err(e) => Err(e),
        }
    }

    /// The partition this broker leads, opening (or creating) its log on first use.
    /// Returns it with the current leader epoch.
    pub async fn leader_partition(
        &self,
        topic: &str,
        partition: u32,
        auto_create: bool,
    ) -> Result<(PartitionRef, i32), BrokerError> {
        // By reference into the current metadata: a topic of thousands of partitions is
        // not copied per call (followers open every partition through here).
        let state = self.controller.metadata();
        let created;
        let meta = match state.topics.get(topic) {
            Some(t) => t,
            None => {
                created = self.topic(topic, auto_create).await?;
                &created
            }
        };
        let Some(pm) = meta.partitions.get(partition as usize) else {
            return Err(BrokerError::UnknownPartition {
                topic: topic.to_owned(),
                partition,
                count: meta.partitions.len() as u32,
            });
        };
        if pm.leader != self.config.node_id {
            return Err(BrokerError::NotLeader {
                topic: topic.to_owned(),
                partition,
                leader: Some(pm.leader),
                leader_address: self
                    .controller
                    .metadata()
                    .brokers
                    .get(&pm.leader)
                    .map(|b| b.address.clone()),
            });
        }
        // Until this start is registered, the metadata's epoch may be the one of the
        // previous start (the registration moves it on): serve as leader only after.
        let registered = self
            .controller
            .metadata()
            .brokers
            .get(&self.config.node_id)
            .is_some_and(|b| b.incarnation == self.incarnation);
        if !registered {
            return Err(BrokerError::LeaderUnavailable(format!(
                "{topic}-{partition}: this broker has just started and is not registered yet; retry"
            )));
        }
        let tp = TopicPartition::new(topic, partition);
        let epoch = pm.leader_epoch;
        let current = shared::sys::read(&self.partitions).get(&tp).cloned();
        if let Some(p) = &current
            && p.led_epoch() == epoch
        {
            p.set_isr(self.config.node_id, &pm.isr);
            return Ok((p.clone(), epoch));
        }
        if let Some(stale) = current {
            // Opened for another epoch: this broker may have followed in between, and its
            // producer table would miss what the fetcher copied. Retired before the new
            // state reads the log, so nothing it appends can be missed.
            let mut parts = shared::sys::write(&self.partitions);
            if parts.get(&tp).is_some_and(|p| Arc::ptr_eq(p, &stale)) {
                parts.remove(&tp);
            }
            drop(parts);
            self.retire(&tp, &stale);
        }
        let config = self.log_config(&meta.configs);
        let broker = self;
        let topic_id = meta.topic_id();
        let opened = tokio::task::block_in_place(|| -> Result<PartitionRef, BrokerError> {
            let log = broker.open_log(&tp, config, topic_id)?;
            Ok(Arc::new(Partition::open(
                tp.clone(),
                log,
                pm.replicas.len() > 1,
            )?))
        })?;
        opened.set_led_epoch(epoch);
        let mut parts = shared::sys::write(&self.partitions);
        // Checked again under the lock `forget_leadership` takes: if the leadership moved
        // while the log was opened, the reconcile that followed may have found nothing to
        // forget, and state left here would outlive it (a window seen while chasing the
        // campaign's duplicates; no test hits it).
        let me = self.config.node_id;
        let still = self
            .controller
            .metadata()
            .topics
            .get(topic)
            .and_then(|t| t.partitions.get(partition as usize))
            .is_some_and(|p| p.leader == me && p.leader_epoch == epoch);
        let moved = || {
            BrokerError::LeaderUnavailable(format!(
                "{topic}-{partition}: the leadership moved while this broker opened it; retry"
            ))
        };
        if !still {
            drop(parts);
            opened.depose();
            return Err(moved());
        }
        let p = match parts.get(&tp) {
            Some(p) if p.led_epoch() == epoch => p.clone(),
            Some(other) => {
                // Another epoch's state appeared meanwhile: retire it; the retry opens
                // afresh once nothing else writes.
                let other = other.clone();
                parts.remove(&tp);
                drop(parts);
                self.retire(&tp, &other);
                opened.depose();
                return Err(moved());
            }
            None => {
                parts.insert(tp, opened.clone());
                opened.clone()
            }
        };
        drop(parts);
        p.set_isr(self.config.node_id, &pm.isr);
        if Arc::ptr_eq(&p, &opened) {
            // Followers whose sessions already hold this partition report through them.
            self.sessions.attach(&p, pm.leader_epoch);
        }
        Ok((p, pm.leader_epoch))
    }

    /// Forgets the leader state (producer table, followers) of a partition this broker no
    /// longer leads; its log stays. Leading it again rebuilds the state from the log.
    pub fn forget_leadership(&self, tp: &TopicPartition) {
        // Called for every partition not led here on each metadata change: a read lock
        // answers the common case (nothing to forget) without serialising produces.
        if !shared::sys::read(&self.partitions).contains_key(tp) {
            return;
        }
        let removed = shared::sys::write(&self.partitions).remove(tp);
        if let Some(p) = removed {
            tracing::info!(partition = %tp.dir_name(), "no longer the leader");
            self.retire(tp, &p);
        }
    }

    /// Ends a leader state taken out of the map: its appends are refused from now on, and
    /// its producer table is checkpointed if it still describes the log.
    fn retire(&self, tp: &TopicPartition, p: &PartitionRef) {
        p.depose();
        if let Err(e) = p.checkpoint(self.config.producer_id_expiration_ms) {
            tracing::warn!(partition = %tp.dir_name(), error = %e, "checkpoint on leadership loss failed");
        }
    }

    /// `min_insync_replicas` of a topic: its own setting, else 2 when replicated, else 1
    /// (never more than its replication factor).
    pub fn min_insync(&self, topic: &TopicMeta) -> usize {
        let rf = usize::from(topic.replication_factor).max(1);
        let default = if rf > 1 { 2 } else { 1 };
        topic
            .configs
            .min_insync_replicas
            .map_or(default, usize::from)
            .clamp(1, rf)
    }

    /// Whether `meta` shows this process's own registration: everything decided before it
    /// started is then applied, so the metadata is safe to act on (a restarted broker
    /// replays older states first — following or dropping leaderships on those would act
    /// on assignments long gone).
    pub fn registered_in(&self, meta: &crate::controller::state::MetadataState) -> bool {
        meta.brokers
            .get(&self.config.node_id)
            .is_some_and(|b| b.incarnation == self.incarnation)
    }

    /// The leader state of a partition, if this broker holds it (never opens one).
    pub fn led_partition(&self, tp: &TopicPartition) -> Option<PartitionRef> {
        shared::sys::read(&self.partitions).get(tp).cloned()
    }

    /// Every open partition.
    pub fn open_partitions(&self) -> Vec<PartitionRef> {
        shared::sys::read(&self.partitions)
            .values()
            .cloned()
            .collect()
    }

    /// Allocates a producer id through the controller.
    pub async fn allocate_producer_id(
        &self,
        caller: &crate::auth::Caller,
    ) -> Result<i64, BrokerError> {
        self.authorize_idempotent(caller)?;
        match self
            .controller
            .propose(MetadataCommand::AllocateProducerIds { count: 1 })
            .await?
        {
            CommandResult::ProducerIds { first, .. } => Ok(first),
            CommandResult::Refused(e) => Err(e.into()),
            other => Err(BrokerError::Internal(format!(
                "unexpected controller reply {other:?}"
            ))),
        }
    }

    /// Snapshots producer state and recovery points of led partitions (expiring idle
    /// producers), and the recovery points and high watermarks of followed ones, so a
    /// restart after a crash scans only what lies past them. Partitions where nothing
    /// happened since the last checkpoint write nothing.
    pub fn checkpoint_all(&self) {
        let led = self.open_partitions();
        for p in &led {
            if let Err(e) = p.checkpoint(self.config.producer_id_expiration_ms) {
                tracing::warn!(partition = %p.tp.dir_name(), error = %e, "checkpoint failed");
                self.logs.report_error(&p.tp, &e);
            }
        }
        let led: std::collections::HashSet<&TopicPartition> = led.iter().map(|p| &p.tp).collect();
        for (tp, online) in self.logs.partitions() {
            if !online || led.contains(&tp) {
                continue;
            }
            let Some(log) = self.logs.get(&tp) else {
                continue;
            };
            // Two statements: the log's guard must be gone before the snapshot locks it again
            // (one statement kept it to its end — a self-deadlock the campaign found).
            let checkpointed = shared::sys::lock(&log).checkpoint();
            let r = checkpointed.and_then(|()| {
                partition::snapshot_follower(&log, self.config.producer_id_expiration_ms)
                    .map(|_| ())
            });
            if let Err(e) = r {
                tracing::warn!(partition = %tp.dir_name(), error = %e, "checkpoint failed");
                self.logs.report_error(&tp, &e);
            }
        }
    }

    /// Clean shutdown of storage: snapshots, then every log closed and marked clean.
    pub fn close(&self) -> Result<(), StorageError> {
        self.checkpoint_all();
        shared::sys::write(&self.partitions).clear();
        self.logs.close()
    }
}
