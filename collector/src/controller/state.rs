//! The controller's replicated state machine: cluster metadata, never records.
//!
//! [`MetadataState::apply`] is a pure function of the state and one [`MetadataCommand`]; the
//! Raft layer (see `raft.rs`) calls it for every committed log entry in order on every node,
//! so every node holds the same metadata.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Broker ids are the `node_id` of each collector.
pub type NodeId = u64;

/// Per-topic settings; `None` means "the broker's default".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfigs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_insync_replicas: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerMeta {
    pub id: NodeId,
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMeta {
    pub partition: u32,
    pub leader: NodeId,
    pub leader_epoch: i32,
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub partitions: Vec<PartitionMeta>,
    pub replication_factor: u16,
    pub configs: TopicConfigs,
}

/// A change to the metadata, proposed through Raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataCommand {
    /// A broker announces itself (on start).
    RegisterBroker {
        id: NodeId,
        address: String,
    },
    /// Create a topic, assigning replicas round-robin over the registered brokers.
    CreateTopic {
        name: String,
        partitions: u32,
        replication_factor: u16,
        configs: TopicConfigs,
    },
    DeleteTopic {
        name: String,
    },
    /// Allocate `count` fresh producer ids (never reused).
    AllocateProducerIds {
        count: u32,
    },
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
}

/// The outcome of applying a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    Done,
    TopicCreated(TopicMeta),
    ProducerIds { first: i64, count: u32 },
    Refused(MetadataError),
}

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
}

impl MetadataState {
    pub fn apply(&mut self, cmd: &MetadataCommand) -> CommandResult {
        match cmd {
            MetadataCommand::RegisterBroker { id, address } => {
                self.brokers.insert(
                    *id,
                    BrokerMeta {
                        id: *id,
                        address: address.clone(),
                    },
                );
                CommandResult::Done
            }
            MetadataCommand::CreateTopic {
                name,
                partitions,
                replication_factor,
                configs,
            } => match self.create_topic(name, *partitions, *replication_factor, configs) {
                Ok(t) => CommandResult::TopicCreated(t),
                Err(e) => CommandResult::Refused(e),
            },
            MetadataCommand::DeleteTopic { name } => {
                if self.topics.remove(name).is_some() {
                    CommandResult::Done
                } else {
                    CommandResult::Refused(MetadataError::UnknownTopic(name.clone()))
                }
            }
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
        }
    }

    fn create_topic(
        &mut self,
        name: &str,
        partitions: u32,
        replication_factor: u16,
        configs: &TopicConfigs,
    ) -> Result<TopicMeta, MetadataError> {
        shared::names::validate_topic(name)
            .map_err(|e| MetadataError::InvalidTopic(e.to_string()))?;
        if self.topics.contains_key(name) {
            return Err(MetadataError::TopicExists(name.to_owned()));
        }
        if partitions == 0 || partitions > TOPIC_PARTITIONS_MAX {
            return Err(MetadataError::Invalid(format!(
                "partitions must be 1..={TOPIC_PARTITIONS_MAX}, got {partitions}"
            )));
        }
        let brokers: Vec<NodeId> = self.brokers.keys().copied().collect();
        if replication_factor == 0 || usize::from(replication_factor) > brokers.len() {
            return Err(MetadataError::NotEnoughBrokers {
                requested: replication_factor,
                available: brokers.len(),
            });
        }
        // DESIGN §1: partition p starts at broker (start + p) mod n; the next replicas follow
        // in broker order, so leaders spread evenly.
        let n = brokers.len();
        let start = (self.topics_created % n as u64) as usize;
        let parts = (0..partitions)
            .map(|p| {
                let first = (start + p as usize) % n;
                let replicas: Vec<NodeId> = (0..usize::from(replication_factor))
                    .map(|r| brokers[(first + r) % n])
                    .collect();
                PartitionMeta {
                    partition: p,
                    leader: replicas[0],
                    leader_epoch: 0,
                    isr: replicas.clone(),
                    replicas,
                }
            })
            .collect();
        let topic = TopicMeta {
            name: name.to_owned(),
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
            });
        }
        s
    }

    #[test]
    fn round_robin_assignment_spreads_leaders() {
        let mut s = with_brokers(3);
        let r = s.apply(&MetadataCommand::CreateTopic {
            name: "logs".into(),
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
