//! The API's error replies: `{"error": {"code", "message", "retriable"}}` with a fitting
//! status. Typed service errors map to `api::ErrorCode` here, once, for every route.

use api::ErrorCode as Code;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::broker::producer_state::ProducerError;
use crate::broker::{BrokerError, ProduceError};
use crate::controller::ControllerError;
use crate::controller::state::MetadataError;
use crate::groups::{GroupError, GroupsError};
use crate::storage::StorageError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: api::ErrorEnvelope,
}

impl ApiError {
    /// An error with the code's own status.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(code.status()).unwrap_or(StatusCode::BAD_GATEWAY),
            body: api::ErrorEnvelope::new(code, message),
        }
    }

    /// An error under a status no handler chose a code for (axum's own rejections).
    pub fn with_status(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            body: api::ErrorEnvelope::new(Code::for_status(status.as_u16()), message),
        }
    }

    /// Another broker's error reply, relayed as it is.
    pub fn relayed(body: api::ErrorEnvelope) -> Self {
        Self {
            status: StatusCode::from_u16(body.error.code.status())
                .unwrap_or(StatusCode::BAD_GATEWAY),
            body,
        }
    }

    pub fn code(&self) -> Code {
        self.body.error.code
    }

    pub fn message(&self) -> &str {
        &self.body.error.message
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.body.error.code.as_str();
        let mut resp = (self.status, axum::Json(self.body)).into_response();
        resp.extensions_mut().insert(ErrorTag(code));
        resp
    }
}

/// Attached to error responses so the metrics layer can count errors by code.
#[derive(Debug, Clone, Copy)]
pub struct ErrorTag(pub &'static str);

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match &e {
            StorageError::DiskFull { .. } => Self::new(Code::DiskFull, e.to_string()),
            StorageError::OffsetOutOfRange { .. } => {
                Self::new(Code::OffsetOutOfRange, e.to_string())
            }
            StorageError::Batch(_) => Self::new(Code::InvalidBatch, e.to_string()),
            StorageError::Config { .. } => Self::new(Code::InvalidConfig, e.to_string()),
            StorageError::Offline { .. }
            | StorageError::Io { .. }
            | StorageError::Corrupt { .. } => Self::new(Code::StorageUnavailable, e.to_string()),
            StorageError::NonContiguous { .. } => Self::new(Code::NonContiguous, e.to_string()),
        }
    }
}

impl From<ControllerError> for ApiError {
    fn from(e: ControllerError) -> Self {
        Self::new(Code::ControllerUnavailable, e.to_string())
    }
}

impl From<MetadataError> for ApiError {
    fn from(e: MetadataError) -> Self {
        match &e {
            MetadataError::TopicExists(_) => Self::new(Code::TopicExists, e.to_string()),
            MetadataError::UnknownTopic(_) => Self::new(Code::UnknownTopic, e.to_string()),
            MetadataError::InvalidTopic(_) => Self::new(Code::InvalidTopic, e.to_string()),
            MetadataError::NotEnoughBrokers { .. } => {
                Self::new(Code::NotEnoughBrokers, e.to_string())
            }
            MetadataError::Invalid(_) => Self::new(Code::InvalidRequest, e.to_string()),
            MetadataError::OffsetBackwards { .. } => {
                Self::new(Code::OffsetMovedBackwards, e.to_string())
            }
        }
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::UnknownTopic(_) => Self::new(Code::UnknownTopic, e.to_string()),
            BrokerError::UnknownPartition { .. } => {
                Self::new(Code::UnknownPartition, e.to_string())
            }
            BrokerError::NotLeader {
                leader,
                ref leader_address,
                ..
            } => {
                let mut err = Self::new(Code::NotLeader, e.to_string());
                err.body.error.leader = leader.map(|id| api::LeaderHint {
                    id,
                    address: leader_address.clone(),
                });
                err
            }
            BrokerError::Produce(p) => p.into(),
            BrokerError::InvalidBatch(_) => Self::new(Code::InvalidBatch, e.to_string()),
            BrokerError::InvalidRecord(m) => Self::new(Code::InvalidRecord, m),
            BrokerError::InvalidRequest(m) => Self::new(Code::InvalidRequest, m),
            BrokerError::InvalidTopic(m) => Self::new(Code::InvalidTopic, m),
            BrokerError::CorruptBatch(m) => Self::new(Code::CorruptBatch, m),
            BrokerError::NotEnoughReplicas { .. } => {
                Self::new(Code::NotEnoughReplicas, e.to_string())
            }
            BrokerError::NotEnoughReplicasAfterAppend(m) => {
                Self::new(Code::NotEnoughReplicasAfterAppend, m)
            }
            BrokerError::RequestTimedOut(m) => Self::new(Code::RequestTimedOut, m),
            BrokerError::NotAReplica(m) => Self::new(Code::NotAReplica, m),
            BrokerError::FetchSession(_) => Self::new(Code::FetchSessionInvalid, e.to_string()),
            BrokerError::PastLogEnd { .. } => Self::new(Code::OffsetOutOfRange, e.to_string()),
            BrokerError::ShuttingDown => Self::new(Code::ShuttingDown, e.to_string()),
            BrokerError::NoLocalReplica(_) => Self::new(Code::UnknownPartition, e.to_string()),
            // Only Kafka requests name a leader epoch; for HTTP it would mean "moved".
            BrokerError::LeaderEpoch { .. } => Self::new(Code::NotLeader, e.to_string()),
            BrokerError::PeerUnavailable(m) => Self::new(Code::CoordinatorUnavailable, m),
            BrokerError::LeaderUnavailable(m) => Self::new(Code::LeaderUnavailable, m),
            BrokerError::Relayed(body) => Self::relayed(api::ErrorEnvelope { error: body }),
            BrokerError::Forbidden(d) => Self::new(Code::Forbidden, d.to_string()),
            BrokerError::Metadata(m) => m.into(),
            BrokerError::Controller(c) => c.into(),
            BrokerError::Storage(s) => s.into(),
            BrokerError::Internal(_) => Self::new(Code::Internal, e.to_string()),
        }
    }
}

impl From<ProduceError> for ApiError {
    fn from(e: ProduceError) -> Self {
        match e {
            ProduceError::Producer(p @ ProducerError::Fenced { .. }) => {
                Self::new(Code::ProducerFenced, p.to_string())
            }
            ProduceError::Producer(p @ ProducerError::OutOfOrder { .. }) => {
                Self::new(Code::OutOfOrderSequence, p.to_string())
            }
            ProduceError::Storage(s) => s.into(),
            ProduceError::Deposed(_) => Self::new(Code::NotLeader, e.to_string()),
        }
    }
}

impl From<GroupsError> for ApiError {
    fn from(e: GroupsError) -> Self {
        match e {
            GroupsError::InvalidReset(m) => Self::new(Code::InvalidReset, m),
            GroupsError::CoordinatorMoving => Self::new(Code::CoordinatorMoving, e.to_string()),
            GroupsError::NoController => Self::new(Code::ControllerUnavailable, e.to_string()),
            GroupsError::CoordinatorUnavailable { .. } => {
                Self::new(Code::CoordinatorUnavailable, e.to_string())
            }
            GroupsError::Relayed(body) => Self::relayed(api::ErrorEnvelope { error: body }),
            // Only the Kafka listener makes classic-protocol calls.
            GroupsError::Classic(_) => Self::new(Code::InvalidRequest, e.to_string()),
            GroupsError::InvalidGroup(_) => Self::new(Code::InvalidGroup, e.to_string()),
            GroupsError::Invalid(_) => Self::new(Code::InvalidRequest, e.to_string()),
            GroupsError::Broker(b) => b.into(),
            GroupsError::AboveHighWatermark { .. } => {
                Self::new(Code::OffsetAboveHighWatermark, e.to_string())
            }
            GroupsError::NotEmpty { .. } => Self::new(Code::GroupNotEmpty, e.to_string()),
            GroupsError::UnknownGroup(_) => Self::new(Code::UnknownGroup, e.to_string()),
            GroupsError::Member(m) => {
                let code = match &m {
                    GroupError::UnknownMember { .. } => Code::UnknownMemberId,
                    GroupError::FencedEpoch { .. } => Code::FencedMemberEpoch,
                    GroupError::NotOwner { .. } => Code::NotPartitionOwner,
                    GroupError::GroupFull { .. } => Code::GroupFull,
                    GroupError::TooManyGroups { .. } => Code::TooManyGroups,
                    GroupError::Invalid(_) => Code::InvalidHeartbeat,
                };
                Self::new(code, m.to_string())
            }
        }
    }
}
