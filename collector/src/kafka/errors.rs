//! Service errors as Kafka error codes (one mapping, used by every API).

use kafka_protocol::error::ResponseError as E;

use shared::BatchError;

use crate::broker::BrokerError;
use crate::broker::ProduceError;
use crate::broker::producer_state::ProducerError;
use crate::controller::state::MetadataError;
use crate::storage::StorageError;

/// The Kafka error code for a failed service call.
pub fn code(e: &BrokerError) -> i16 {
    let kind = match e {
        BrokerError::UnknownTopic(_) | BrokerError::UnknownPartition { .. } => {
            E::UnknownTopicOrPartition
        }
        BrokerError::NoLocalReplica(_) => E::UnknownTopicOrPartition,
        BrokerError::NotLeader { .. } => E::NotLeaderOrFollower,
        BrokerError::NotEnoughReplicas { .. } => E::NotEnoughReplicas,
        BrokerError::NotEnoughReplicasAfterAppend(_) => E::NotEnoughReplicasAfterAppend,
        BrokerError::RequestTimedOut(_) => E::RequestTimedOut,
        // Refusals a retry cannot fix get their own (non-retriable) codes; a bad CRC or a
        // malformed batch stays CORRUPT_MESSAGE, which clients retry.
        BrokerError::InvalidBatch(b) => match b {
            BatchError::TooLarge { .. } | BatchError::DecompressedTooLarge { .. } => {
                E::MessageTooLarge
            }
            BatchError::UnsupportedCompression { .. } => E::UnsupportedCompressionType,
            BatchError::BadMagic { .. } | BatchError::UnsupportedAttributes { .. } => {
                E::UnsupportedForMessageFormat
            }
            _ => E::CorruptMessage,
        },
        BrokerError::CorruptBatch(_) => E::CorruptMessage,
        BrokerError::InvalidRecord(_) => E::InvalidRecord,
        BrokerError::InvalidTopic(_) => E::InvalidTopicException,
        BrokerError::InvalidRequest(_) => E::InvalidRequest,
        BrokerError::Produce(ProduceError::Producer(ProducerError::OutOfOrder { .. })) => {
            E::OutOfOrderSequenceNumber
        }
        BrokerError::Produce(ProduceError::Producer(ProducerError::Fenced { .. })) => {
            E::InvalidProducerEpoch
        }
        BrokerError::Produce(ProduceError::Storage(s)) | BrokerError::Storage(s) => storage(s),
        BrokerError::Produce(ProduceError::Deposed(_)) => E::NotLeaderOrFollower,
        BrokerError::Metadata(MetadataError::TopicExists(_)) => E::TopicAlreadyExists,
        BrokerError::Metadata(MetadataError::UnknownTopic(_)) => E::UnknownTopicOrPartition,
        BrokerError::Metadata(MetadataError::InvalidTopic(_)) => E::InvalidTopicException,
        BrokerError::Metadata(MetadataError::NotEnoughBrokers { .. }) => {
            E::InvalidReplicationFactor
        }
        BrokerError::Metadata(_) => E::InvalidRequest,
        BrokerError::Controller(_) => E::LeaderNotAvailable,
        BrokerError::PastLogEnd { .. } => E::OffsetOutOfRange,
        BrokerError::ShuttingDown
        | BrokerError::PeerUnavailable(_)
        | BrokerError::LeaderUnavailable(_) => E::LeaderNotAvailable,
        BrokerError::NotAReplica(_) => E::NotLeaderOrFollower,
        BrokerError::FetchSession(_) => E::InvalidFetchSessionEpoch,
        BrokerError::LeaderEpoch { asked, current, .. } => {
            if asked < current {
                E::FencedLeaderEpoch
            } else {
                E::UnknownLeaderEpoch
            }
        }
        BrokerError::Relayed(_) | BrokerError::Internal(_) => E::UnknownServerError,
        BrokerError::Forbidden(d) => match d.resource_type {
            api::acls::ResourceType::Topic => E::TopicAuthorizationFailed,
            api::acls::ResourceType::Group => E::GroupAuthorizationFailed,
            api::acls::ResourceType::Cluster => E::ClusterAuthorizationFailed,
            api::acls::ResourceType::TransactionalId => E::TransactionalIdAuthorizationFailed,
        },
    };
    kind.code()
}

fn storage(s: &StorageError) -> E {
    match s {
        StorageError::OffsetOutOfRange { .. } => E::OffsetOutOfRange,
        StorageError::Batch(_) => E::CorruptMessage,
        StorageError::Config { .. } => E::InvalidConfig,
        StorageError::DiskFull { .. }
        | StorageError::Offline { .. }
        | StorageError::Io { .. }
        | StorageError::Corrupt { .. } => E::KafkaStorageError,
        StorageError::NonContiguous { .. } => E::UnknownServerError,
    }
}

/// The Kafka error code for a failed group call.
pub fn group_code(e: &crate::groups::GroupsError) -> i16 {
    use crate::groups::{GroupError, GroupsError as G};
    let kind = match e {
        G::InvalidGroup(_) => E::InvalidGroupId,
        // Offsets a standalone consumer may not move, a group that cannot be deleted: it
        // has members.
        G::NotEmpty { .. } => E::NonEmptyGroup,
        G::AboveHighWatermark { .. } => E::OffsetOutOfRange,
        G::UnknownGroup(_) => E::GroupIdNotFound,
        G::Invalid(_) | G::InvalidReset(_) => E::InvalidRequest,
        G::Member(GroupError::UnknownMember { .. }) => E::UnknownMemberId,
        G::Member(GroupError::FencedEpoch { .. }) => E::FencedMemberEpoch,
        G::Member(_) => E::IllegalGeneration,
        G::CoordinatorMoving | G::NoController | G::CoordinatorUnavailable { .. } => {
            E::CoordinatorNotAvailable
        }
        G::Relayed(_) => E::UnknownServerError,
        G::Classic(c) => return classic_code(*c),
        G::Broker(b) => return code(b),
    };
    kind.code()
}

/// The Kafka error code for a refused classic-protocol call.
pub fn classic_code(e: crate::groups::classic::ClassicError) -> i16 {
    use crate::groups::classic::ClassicError as C;
    match e {
        C::UnknownMemberId => E::UnknownMemberId,
        C::IllegalGeneration => E::IllegalGeneration,
        C::RebalanceInProgress => E::RebalanceInProgress,
        C::InconsistentGroupProtocol => E::InconsistentGroupProtocol,
        C::CoordinatorNotAvailable => E::CoordinatorNotAvailable,
    }
    .code()
}
