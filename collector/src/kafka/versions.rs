//! The Kafka APIs served and their versions. The maxima are those of Apache Kafka 4.0 for
//! each API served (clients infer what a broker can do from them; 4.0 is the first release
//! with KIP-848 consumer groups generally available); the minima are the oldest versions
//! the `kafka-protocol` crate (Kafka 4.1 schemas) still decodes.

use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};

/// `(api, min, max)` of every API served.
pub const SERVED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 12),
    (ApiKey::Fetch, 4, 17),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::Metadata, 1, 13),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    // v1 only: v0 sends the SASL tokens unframed after the handshake.
    (ApiKey::SaslHandshake, 1, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
];

/// The versions served of `api`, if it is served.
pub fn range(api: ApiKey) -> Option<(i16, i16)> {
    SERVED
        .iter()
        .find(|(k, _, _)| *k == api)
        .map(|(_, min, max)| (*min, *max))
}

pub fn served(api: ApiKey, version: i16) -> bool {
    range(api).is_some_and(|(min, max)| (min..=max).contains(&version))
}

fn api_keys() -> Vec<ApiVersion> {
    SERVED
        .iter()
        .map(|(k, min, max)| {
            ApiVersion::default()
                .with_api_key(*k as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect()
}

/// The ApiVersions reply.
pub fn reply() -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(api_keys())
}

/// The reply to an ApiVersions request of a version not served (sent in v0 framing).
pub fn unsupported_reply() -> ApiVersionsResponse {
    reply().with_error_code(kafka_protocol::error::ResponseError::UnsupportedVersion.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_versions_are_ones_the_crate_decodes() {
        for (k, min, max) in SERVED {
            let v = k.valid_versions();
            assert!(
                v.min <= *min && *max <= v.max,
                "{k:?} {min}..={max} vs {v:?}"
            );
        }
    }
}
