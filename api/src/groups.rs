//! Consumer groups: heartbeats, commits, offsets, and the operator views.

use serde::{Deserialize, Serialize};

/// `member_epoch` values with a meaning of their own.
pub const JOIN_EPOCH: i32 = 0;
pub const LEAVE_EPOCH: i32 = -1;

/// Partitions of one topic, as sent on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicPartitions {
    pub topic: String,
    pub partitions: Vec<u32>,
}

/// `POST /v1/groups/{group}/heartbeat`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    /// Absent when joining for the first time.
    #[serde(default)]
    pub member_id: Option<String>,
    /// 0 to join, -1 to leave, else the epoch of the last reply received.
    pub member_epoch: i32,
    /// The subscription; required when joining, optional afterwards (unchanged).
    #[serde(default)]
    pub topics: Option<Vec<String>>,
    /// What the member holds now; absent = unchanged.
    #[serde(default)]
    pub owned: Option<Vec<TopicPartitions>>,
    /// Free text shown by `groups describe` (e.g. host and pid).
    #[serde(default)]
    pub client: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: u64,
    /// What the member may read now. Anything it holds outside this it must give up
    /// (commit, stop reading, then heartbeat without it).
    pub assignment: Vec<TopicPartitions>,
    /// True when the assignment equals the member's target (nothing more will move).
    pub stable: bool,
}

/// One committed position: the offset of the next record the group will read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetEntry {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
}

/// `POST /v1/groups/{group}/offsets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRequest {
    pub member_id: String,
    pub member_epoch: i32,
    pub offsets: Vec<OffsetEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitReply {
    pub committed: usize,
}

/// `GET /v1/groups/{group}/offsets`, and the reply to a reset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupOffsetsReply {
    pub group: String,
    pub offsets: Vec<OffsetEntry>,
}

/// `POST /v1/groups/{group}/offsets/reset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    pub topic: String,
    /// `earliest`, `latest`, `offset:N` or `timestamp:MS` (see [`ResetTo`]).
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<Vec<u32>>,
}

/// Where a reset moves a group's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    Earliest,
    Latest,
    Offset(u64),
    Timestamp(i64),
}

impl std::str::FromStr for ResetTo {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?}: use earliest, latest, offset:N or timestamp:MS");
        match s {
            "earliest" => Ok(Self::Earliest),
            "latest" => Ok(Self::Latest),
            _ => {
                if let Some(n) = s.strip_prefix("offset:") {
                    n.parse().map(Self::Offset).map_err(|_| bad())
                } else if let Some(n) = s.strip_prefix("timestamp:") {
                    n.parse().map(Self::Timestamp).map_err(|_| bad())
                } else {
                    Err(bad())
                }
            }
        }
    }
}

impl std::fmt::Display for ResetTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Earliest => f.write_str("earliest"),
            Self::Latest => f.write_str("latest"),
            Self::Offset(n) => write!(f, "offset:{n}"),
            Self::Timestamp(ms) => write!(f, "timestamp:{ms}"),
        }
    }
}

/// One group of `GET /v1/groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSummary {
    pub group: String,
    pub state: String,
    pub members: usize,
    pub partitions_committed: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupList {
    pub groups: Vec<GroupSummary>,
}

/// One partition of `GET /v1/groups/{group}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionView {
    pub topic: String,
    pub partition: u32,
    pub owner: Option<String>,
    pub committed: Option<u64>,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    /// `high_watermark - committed` (from the log start when nothing is committed).
    pub lag: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub member_id: String,
    pub member_epoch: i32,
    pub client: String,
    pub topics: Vec<String>,
    pub assignment: Vec<TopicPartitions>,
    pub revoking: Vec<TopicPartitions>,
}

/// `GET /v1/groups/{group}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupView {
    pub group: String,
    pub state: String,
    pub group_epoch: i32,
    pub members: Vec<MemberView>,
    pub partitions: Vec<PartitionView>,
}
