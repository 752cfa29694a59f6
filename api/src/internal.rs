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

/// `POST /internal/replica/fetch`: one follower's fetch of every partition it follows on
/// this leader, in a fetch session (KIP-227's idea): the first request (`session_id` 0)
/// lists every partition; later ones list only partitions whose offset changed (and those
/// to forget), and the reply holds only partitions with something new — data, a moved
/// high watermark or log start, or an error. An idle partition costs nothing per request.
///
/// The reply body is `u32` (big-endian) header length, the header ([`SessionFetchReply`])
/// as JSON, then each listed partition's batches, in list order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionFetchRequest {
    /// The follower's broker id.
    pub replica: u64,
    /// 0 opens a new session (replacing this follower's previous one); otherwise the id
    /// the leader gave.
    pub session_id: u64,
    /// 1 for the first request after the one that opened the session, then +1 each
    /// request; a gap (a reply lost) makes the leader refuse with `fetch_session_invalid`
    /// and the follower opens a new session.
    pub session_epoch: u64,
    pub max_wait_ms: u64,
    /// Budget for the whole reply's batches.
    pub max_bytes: u64,
    /// Budget per partition.
    pub partition_max_bytes: u64,
    /// Added partitions, and those whose offset (the follower's log end) changed.
    #[serde(default)]
    pub partitions: Vec<SessionPartition>,
    /// Partitions to drop from the session.
    #[serde(default)]
    pub forgotten: Vec<PartitionQuery>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionPartition {
    pub topic: String,
    pub partition: u32,
    /// The follower's log end: everything below it is durable there.
    pub offset: u64,
    /// The leader epoch the follower's metadata shows; the leader refuses another.
    pub leader_epoch: i32,
}

/// The JSON header of a session fetch reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionFetchReply {
    pub session_id: u64,
    #[serde(default)]
    pub partitions: Vec<SessionPartitionReply>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionPartitionReply {
    pub topic: String,
    pub partition: u32,
    /// Set when the leader will not serve the partition in this session (it is dropped
    /// from the session; the follower adds it again when it may).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::ErrorBody>,
    #[serde(default)]
    pub high_watermark: u64,
    #[serde(default)]
    pub log_start_offset: u64,
    /// Length of this partition's batches in the body.
    #[serde(default)]
    pub bytes: u64,
}

/// `POST /internal/replica/epoch-ends` (KIP-279, many partitions at once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochEndsRequest {
    pub partitions: Vec<EpochEndQuery>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochEndsReply {
    /// In request order.
    pub partitions: Vec<EpochEndResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochEndResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::ErrorBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<EpochEnd>,
}

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
