//! Topics and metadata.

use serde::{Deserialize, Serialize};

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

/// `POST /v1/topics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTopic {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<u16>,
    #[serde(default)]
    pub configs: TopicConfigs,
}

impl CreateTopic {
    /// A topic with the collector's defaults.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            partitions: None,
            replication_factor: None,
            configs: TopicConfigs::default(),
        }
    }
}

/// One partition as `describe` and `metadata` show it. The offsets are the answering
/// broker's local view (zero where it holds no replica).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    pub partition: u32,
    pub leader: u64,
    pub leader_epoch: i32,
    pub replicas: Vec<u64>,
    pub isr: Vec<u64>,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    pub size_bytes: u64,
}

/// `GET /v1/topics/{topic}` and the reply to `POST /v1/topics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicDescription {
    pub name: String,
    pub replication_factor: u16,
    pub configs: TopicConfigs,
    pub partitions: Vec<PartitionInfo>,
}

/// One topic of `GET /v1/topics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSummary {
    pub name: String,
    /// The partition count.
    pub partitions: usize,
    pub replication_factor: u16,
    pub configs: TopicConfigs,
}

/// `GET /v1/topics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicList {
    pub topics: Vec<TopicSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub id: u64,
    /// `host:port` it advertises.
    pub address: String,
    pub alive: bool,
    /// `host:port` of its Kafka listener, when it serves one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMetadata {
    pub name: String,
    pub partitions: Vec<PartitionInfo>,
}

/// `GET /v1/metadata`: brokers, the controller leader, and every partition's leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub brokers: Vec<BrokerInfo>,
    pub controller: Option<u64>,
    pub topics: Vec<TopicMetadata>,
}

impl Metadata {
    pub fn broker(&self, id: u64) -> Option<&BrokerInfo> {
        self.brokers.iter().find(|b| b.id == id)
    }

    pub fn topic(&self, name: &str) -> Option<&TopicMetadata> {
        self.topics.iter().find(|t| t.name == name)
    }

    /// `(topic, partition, leader address)` for every partition whose leader is known.
    pub fn leaders(&self) -> impl Iterator<Item = (&str, u32, &str)> + '_ {
        self.topics.iter().flat_map(move |t| {
            t.partitions.iter().filter_map(move |p| {
                let b = self.broker(p.leader)?;
                Some((t.name.as_str(), p.partition, b.address.as_str()))
            })
        })
    }
}
