//! Error codes and the envelope every error reply carries:
//! `{"error": {"code", "message", "retriable", "leader"?}}`.

use serde::{Deserialize, Serialize};

macro_rules! codes {
    ($($variant:ident = $text:literal => $status:literal),* $(,)?) => {
        /// Every error code the API answers with (`docs/api.md` lists them by status).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $($variant,)*
            /// A code this build does not know (from a newer server).
            #[serde(other)]
            Unknown,
        }

        impl ErrorCode {
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $text,)*
                    ErrorCode::Unknown => "unknown",
                }
            }

            /// The HTTP status this code is answered with.
            pub fn status(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $status,)*
                    ErrorCode::Unknown => 502,
                }
            }
        }
    };
}

codes! {
    BadRequest = "bad_request" => 400,
    InvalidBatch = "invalid_batch" => 400,
    InvalidTopic = "invalid_topic" => 400,
    InvalidJson = "invalid_json" => 400,
    InvalidRecord = "invalid_record" => 400,
    InvalidAcks = "invalid_acks" => 400,
    InvalidRequest = "invalid_request" => 400,
    BadBody = "bad_body" => 400,
    InvalidGroup = "invalid_group" => 400,
    InvalidHeartbeat = "invalid_heartbeat" => 400,
    InvalidReset = "invalid_reset" => 400,
    InvalidConfig = "invalid_config" => 400,
    OffsetAboveHighWatermark = "offset_above_high_watermark" => 400,
    NotAReplica = "not_a_replica" => 400,
    FetchSessionInvalid = "fetch_session_invalid" => 409,
    Unauthenticated = "unauthenticated" => 401,
    Forbidden = "forbidden" => 403,
    NotFound = "not_found" => 404,
    UnknownTopic = "unknown_topic" => 404,
    UnknownPartition = "unknown_partition" => 404,
    UnknownGroup = "unknown_group" => 404,
    MethodNotAllowed = "method_not_allowed" => 405,
    BodyTimeout = "body_timeout" => 408,
    OutOfOrderSequence = "out_of_order_sequence" => 409,
    ProducerFenced = "producer_fenced" => 409,
    TopicExists = "topic_exists" => 409,
    UnknownMemberId = "unknown_member_id" => 409,
    FencedMemberEpoch = "fenced_member_epoch" => 409,
    NotPartitionOwner = "not_partition_owner" => 409,
    OffsetMovedBackwards = "offset_moved_backwards" => 409,
    GroupNotEmpty = "group_not_empty" => 409,
    NonContiguous = "non_contiguous" => 409,
    RequestTooLarge = "request_too_large" => 413,
    UnsupportedMediaType = "unsupported_media_type" => 415,
    OffsetOutOfRange = "offset_out_of_range" => 416,
    NotLeader = "not_leader" => 421,
    Internal = "internal" => 500,
    CorruptBatch = "corrupt_batch" => 500,
    ControllerUnavailable = "controller_unavailable" => 503,
    StorageUnavailable = "storage_unavailable" => 503,
    NotEnoughBrokers = "not_enough_brokers" => 503,
    NotEnoughReplicas = "not_enough_replicas" => 503,
    NotEnoughReplicasAfterAppend = "not_enough_replicas_after_append" => 503,
    RequestTimedOut = "request_timed_out" => 503,
    CoordinatorUnavailable = "coordinator_unavailable" => 503,
    CoordinatorMoving = "coordinator_moving" => 503,
    GroupFull = "group_full" => 503,
    TooManyGroups = "too_many_groups" => 503,
    LeaderUnavailable = "leader_unavailable" => 503,
    ShuttingDown = "shutting_down" => 503,
    Starting = "starting" => 503,
    DiskFull = "disk_full" => 507,
}

impl ErrorCode {
    /// Worth retrying as is: the condition is expected to pass (unavailable, moved, full).
    pub fn retriable(self) -> bool {
        matches!(self.status(), 421 | 503 | 507)
    }

    /// The generic code for a status no handler chose a code for (axum's own rejections).
    pub fn for_status(status: u16) -> Self {
        match status {
            401 => ErrorCode::Unauthenticated,
            403 => ErrorCode::Forbidden,
            404 => ErrorCode::NotFound,
            405 => ErrorCode::MethodNotAllowed,
            413 => ErrorCode::RequestTooLarge,
            415 => ErrorCode::UnsupportedMediaType,
            400..=499 => ErrorCode::BadRequest,
            _ => ErrorCode::Internal,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// For `not_leader`: the partition's leader, when one is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderHint {
    pub id: u64,
    pub address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    pub retriable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<LeaderHint>,
}

/// The body of every error reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

impl ErrorEnvelope {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorBody {
                code,
                message: message.into(),
                retriable: code.retriable(),
                leader: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialise_as_their_text() {
        for c in ErrorCode::ALL {
            let v = serde_json::to_value(c).expect("serialises");
            assert_eq!(v, serde_json::Value::String(c.as_str().to_owned()));
            let back: ErrorCode = serde_json::from_value(v).expect("parses");
            assert_eq!(back, *c);
        }
        let unknown: ErrorCode = serde_json::from_str("\"from_the_future\"").expect("parses");
        assert_eq!(unknown, ErrorCode::Unknown);
    }

    #[test]
    fn retriable_follows_the_status() {
        assert!(ErrorCode::NotLeader.retriable());
        assert!(ErrorCode::DiskFull.retriable());
        assert!(ErrorCode::RequestTimedOut.retriable());
        assert!(!ErrorCode::OutOfOrderSequence.retriable());
        assert!(!ErrorCode::InvalidBatch.retriable());
    }
}
