//! Routes between brokers (`/internal/...`).

use serde::{Deserialize, Serialize};

/// `?topic=&partition=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionQuery {
    pub topic: String,
    pub partition: u32,
}

/// `GET /internal/partition-offsets`: answered only by the partition's leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionOffsets {
    pub high_watermark: u64,
    pub log_start_offset: u64,
}

/// `GET /internal/replica/fetch`: a follower's fetch; `offset` is its log end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaFetchQuery {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    /// The follower's broker id.
    pub replica: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wait_ms: Option<u64>,
}

/// `GET /internal/replica/epoch-end` (KIP-279).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochEndQuery {
    pub topic: String,
    pub partition: u32,
    pub epoch: i32,
}

/// Where the leader's log ends for the largest epoch `<=` the one asked (`-1`: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochEnd {
    pub epoch: i32,
    pub end_offset: u64,
}

/// `GET /internal/replica/checksum`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChecksumQuery {
    pub topic: String,
    pub partition: u32,
    pub upto: u64,
}

/// CRC-32C of a replica's batches in `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksum {
    pub crc32c: u32,
    pub from: u64,
    pub to: u64,
}

/// `POST /internal/controller/add-learner`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddLearner {
    pub id: u64,
    pub address: String,
}

/// `POST /internal/controller/heartbeat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerHeartbeat {
    pub id: u64,
}
