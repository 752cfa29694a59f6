//! Read-only views of the cluster as `api` types: metadata, topics, producers, cluster
//! status and health; and topic admin.

use api::acls::{Operation as Op, ResourceType as Rt};
use std::sync::atomic::{AtomicBool, Ordering};

use api::{
    BrokerInfo, ClusterBroker, ClusterStatus, CreateTopic, Health, Metadata, PartitionInfo,
    ProducerPartition, ProducerState, TopicDescription, TopicList, TopicMetadata, TopicSummary,
};

use super::{Broker, BrokerError};
use crate::controller::state::{PartitionMeta, TopicMeta};
use crate::storage::manager::TopicPartition;

impl Broker {
    fn partition_info(&self, topic: &str, p: &PartitionMeta) -> PartitionInfo {
        let (high_watermark, log_start_offset, size_bytes) = self
            .logs
            .get(&TopicPartition::new(topic, p.partition))
            .map_or((0, 0, 0), |log| {
                let l = shared::sys::lock(&log);
                (l.high_watermark(), l.log_start_offset(), l.size_bytes())
            });
        PartitionInfo {
            partition: p.partition,
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
            high_watermark,
            log_start_offset,
            size_bytes,
        }
    }

    fn topic_description(&self, t: &TopicMeta) -> TopicDescription {
        TopicDescription {
            name: t.name.clone(),
            replication_factor: t.replication_factor,
            configs: t.configs.clone(),
            partitions: t
                .partitions
                .iter()
                .map(|p| self.partition_info(&t.name, p))
                .collect(),
        }
    }

    /// `GET /v1/metadata`.
    pub fn metadata_view(&self, caller: &crate::auth::Caller) -> Metadata {
        let meta = self.controller.metadata();
        Metadata {
            brokers: meta
                .brokers
                .values()
                .map(|b| BrokerInfo {
                    id: b.id,
                    address: b.address.clone(),
                    alive: !b.fenced,
                    kafka_address: b.kafka_address.clone(),
                })
                .collect(),
            controller: self.controller.leader(),
            topics: meta
                .topics
                .values()
                .filter(|t| self.may_describe(caller, Rt::Topic, &t.name))
                .map(|t| TopicMetadata {
                    name: t.name.clone(),
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| self.partition_info(&t.name, p))
                        .collect(),
                })
                .collect(),
        }
    }

    pub fn topic_list(&self, caller: &crate::auth::Caller) -> TopicList {
        TopicList {
            topics: self
                .controller
                .metadata()
                .topics
                .values()
                .filter(|t| self.may_describe(caller, Rt::Topic, &t.name))
                .map(|t| TopicSummary {
                    name: t.name.clone(),
                    partitions: t.partitions.len(),
                    replication_factor: t.replication_factor,
                    configs: t.configs.clone(),
                })
                .collect(),
        }
    }

    pub fn describe_topic(
        &self,
        caller: &crate::auth::Caller,
        name: &str,
    ) -> Result<TopicDescription, BrokerError> {
        shared::names::validate_topic(name)
            .map_err(|e| BrokerError::InvalidTopic(e.to_string()))?;
        self.authorize(caller, Op::Describe, Rt::Topic, name)?;
        let meta = self.controller.metadata();
        let t = meta
            .topics
            .get(name)
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_owned()))?;
        Ok(self.topic_description(t))
    }

    /// `POST /v1/topics`.
    pub async fn create_topic_from(
        &self,
        caller: &crate::auth::Caller,
        req: CreateTopic,
    ) -> Result<TopicDescription, BrokerError> {
        shared::names::validate_topic(&req.name)
            .map_err(|e| BrokerError::InvalidTopic(e.to_string()))?;
        self.authorize_create(caller, &req.name)?;
        let t = self
            .create_topic(
                &req.name,
                req.partitions,
                req.replication_factor,
                req.configs,
            )
            .await?;
        Ok(self.topic_description(&t))
    }

    /// `GET /v1/producers/{id}`: the last durable sequence of a producer on every
    /// partition this broker leads.
    pub async fn producer_state(
        &self,
        caller: &crate::auth::Caller,
        id: i64,
    ) -> Result<ProducerState, BrokerError> {
        self.authorize_idempotent(caller)?;
        let mut partitions = Vec::new();
        let meta = self.controller.metadata();
        for t in meta.topics.values() {
            for p in &t.partitions {
                if p.leader != self.config.node_id {
                    continue;
                }
                // Partitions not opened yet are opened now: their producer state lives in
                // the log.
                let Ok((part, _)) = self.leader_partition(&t.name, p.partition, false).await else {
                    continue;
                };
                if let Some((producer_epoch, last_sequence, last_offset)) = part.last_persisted(id)
                {
                    partitions.push(ProducerPartition {
                        topic: t.name.clone(),
                        partition: p.partition,
                        producer_epoch,
                        last_sequence,
                        last_offset,
                    });
                }
            }
        }
        Ok(ProducerState {
            producer_id: id,
            partitions,
        })
    }

    /// `GET /v1/cluster`: this node's Raft view and every broker's liveness.
    pub fn cluster_status(
        &self,
        caller: &crate::auth::Caller,
    ) -> Result<ClusterStatus, BrokerError> {
        self.authorize(
            caller,
            Op::Describe,
            Rt::Cluster,
            api::acls::CLUSTER_RESOURCE,
        )?;
        let c = &self.controller;
        let meta = c.metadata();
        let voters = c.voters();
        // Only the active controller knows heartbeats; elsewhere these are null.
        let ages = c.heartbeat_ages();
        Ok(ClusterStatus {
            node_id: self.config.node_id,
            controller: c.status(),
            brokers: meta
                .brokers
                .values()
                .map(|b| ClusterBroker {
                    id: b.id,
                    address: b.address.clone(),
                    alive: !b.fenced,
                    voter: voters.contains(&b.id),
                    last_heartbeat_ms_ago: ages
                        .as_ref()
                        .and_then(|a| a.get(&b.id))
                        .map(|d| d.as_millis() as u64),
                })
                .collect(),
            broker_heartbeat_interval_ms: self.config.broker_heartbeat_interval.as_millis() as u64,
            broker_session_timeout_ms: self.config.broker_session_timeout.as_millis() as u64,
        })
    }

    /// Data directories offline now.
    pub fn offline_dirs(&self) -> usize {
        self.logs.dirs().iter().filter(|d| d.is_offline()).count()
    }

    /// `GET /health`: `starting` until `registered`, then `ok` or `degraded`.
    pub fn health(&self, registered: &AtomicBool) -> Health {
        let offline = self.offline_dirs();
        let status = if !registered.load(Ordering::SeqCst) {
            "starting"
        } else if offline == 0 {
            "ok"
        } else {
            "degraded"
        };
        Health {
            status: status.to_owned(),
            node_id: self.config.node_id,
            data_dirs_offline: offline,
            controller_leader: self.controller.leader(),
        }
    }
}
