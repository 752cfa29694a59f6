//! The API's error replies: `{"error": {"code", "message", "retriable"}}` with a fitting status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::broker::producer_state::ProducerError;
use crate::broker::{BrokerError, ProduceError};
use crate::controller::ControllerError;
use crate::controller::state::MetadataError;
use crate::groups::{GroupError, GroupsError};
use crate::storage::StorageError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retriable: bool,
    /// For `not_leader`: the leader's id and address, as `"leader": {"id", "address"}`.
    pub leader: Option<(u64, Option<String>)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        let retriable = matches!(
            status,
            StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::MISDIRECTED_REQUEST
                | StatusCode::INSUFFICIENT_STORAGE
        );
        Self {
            status,
            code,
            message: message.into(),
            retriable,
            leader: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": {"code": self.code, "message": self.message, "retriable": self.retriable}});
        if let Some((id, address)) = self.leader {
            body["error"]["leader"] = json!({"id": id, "address": address});
        }
        let mut resp = (self.status, axum::Json(body)).into_response();
        resp.extensions_mut().insert(ErrorCode(self.code));
        resp
    }
}

/// Attached to error responses so the metrics layer can count errors by code.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match &e {
            StorageError::DiskFull { .. } => {
                Self::new(StatusCode::INSUFFICIENT_STORAGE, "disk_full", e.to_string())
            }
            StorageError::OffsetOutOfRange { .. } => Self::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "offset_out_of_range",
                e.to_string(),
            ),
            StorageError::Batch(_) => Self::bad_request("invalid_batch", e.to_string()),
            StorageError::Config { .. } => Self::bad_request("invalid_config", e.to_string()),
            StorageError::Offline { .. }
            | StorageError::Io { .. }
            | StorageError::Corrupt { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                e.to_string(),
            ),
            StorageError::NonContiguous { .. } => {
                Self::new(StatusCode::CONFLICT, "non_contiguous", e.to_string())
            }
        }
    }
}

impl From<ControllerError> for ApiError {
    fn from(e: ControllerError) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "controller_unavailable",
            e.to_string(),
        )
    }
}

impl From<MetadataError> for ApiError {
    fn from(e: MetadataError) -> Self {
        match &e {
            MetadataError::TopicExists(_) => {
                Self::new(StatusCode::CONFLICT, "topic_exists", e.to_string())
            }
            MetadataError::UnknownTopic(_) => {
                Self::new(StatusCode::NOT_FOUND, "unknown_topic", e.to_string())
            }
            MetadataError::InvalidTopic(_) => Self::bad_request("invalid_topic", e.to_string()),
            MetadataError::NotEnoughBrokers { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_enough_brokers",
                e.to_string(),
            ),
            MetadataError::Invalid(_) => Self::bad_request("invalid_request", e.to_string()),
            MetadataError::OffsetBackwards { .. } => Self::new(
                StatusCode::CONFLICT,
                "offset_moved_backwards",
                e.to_string(),
            ),
        }
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::UnknownTopic(_) => {
                Self::new(StatusCode::NOT_FOUND, "unknown_topic", e.to_string())
            }
            BrokerError::UnknownPartition { .. } => {
                Self::new(StatusCode::NOT_FOUND, "unknown_partition", e.to_string())
            }
            BrokerError::NotLeader {
                leader,
                ref leader_address,
                ..
            } => {
                let leader = leader.map(|id| (id, leader_address.clone()));
                Self {
                    leader,
                    ..Self::new(StatusCode::MISDIRECTED_REQUEST, "not_leader", e.to_string())
                }
            }
            BrokerError::Metadata(m) => m.into(),
            BrokerError::Controller(c) => c.into(),
            BrokerError::Storage(s) => s.into(),
            BrokerError::Internal(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
        }
    }
}

impl From<ProduceError> for ApiError {
    fn from(e: ProduceError) -> Self {
        match e {
            ProduceError::Producer(p @ ProducerError::Fenced { .. }) => {
                Self::new(StatusCode::CONFLICT, "producer_fenced", p.to_string())
            }
            ProduceError::Producer(p @ ProducerError::OutOfOrder { .. }) => {
                Self::new(StatusCode::CONFLICT, "out_of_order_sequence", p.to_string())
            }
            ProduceError::Storage(s) => s.into(),
        }
    }
}

impl From<GroupsError> for ApiError {
    fn from(e: GroupsError) -> Self {
        match e {
            GroupsError::InvalidGroup(_) => Self::bad_request("invalid_group", e.to_string()),
            GroupsError::Invalid(_) => Self::bad_request("invalid_request", e.to_string()),
            GroupsError::Broker(b) => b.into(),
            GroupsError::AboveHighWatermark { .. } => {
                Self::bad_request("offset_above_high_watermark", e.to_string())
            }
            GroupsError::NotEmpty { .. } => {
                Self::new(StatusCode::CONFLICT, "group_not_empty", e.to_string())
            }
            GroupsError::UnknownGroup(_) => {
                Self::new(StatusCode::NOT_FOUND, "unknown_group", e.to_string())
            }
            GroupsError::Member(m) => {
                let code = match &m {
                    GroupError::UnknownMember { .. } => "unknown_member_id",
                    GroupError::FencedEpoch { .. } => "fenced_member_epoch",
                    GroupError::NotOwner { .. } => "not_partition_owner",
                    GroupError::GroupFull { .. } => "group_full",
                    GroupError::TooManyGroups { .. } => "too_many_groups",
                    GroupError::Invalid(_) => {
                        return Self::bad_request("invalid_heartbeat", m.to_string());
                    }
                };
                let status = match &m {
                    GroupError::GroupFull { .. } | GroupError::TooManyGroups { .. } => {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                    _ => StatusCode::CONFLICT,
                };
                Self::new(status, code, m.to_string())
            }
        }
    }
}
