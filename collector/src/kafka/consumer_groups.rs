//! KIP-848 consumer groups: ConsumerGroupHeartbeat and ConsumerGroupDescribe, mapped onto
//! the server-side coordinator that `collector tail --group` members use. A Kafka consumer
//! with `group.protocol=consumer` and a `tail` member in the same group share its
//! partitions and commit into the same offsets.
//!
//! The coordinator already speaks KIP-848's terms (member epochs, the assignment owned by
//! the coordinator, partitions handed over only once revoked); what this module adds is
//! the translation: topic ids on the wire, topic names in the coordinator, and Kafka's
//! error codes. The member epoch changes exactly when a member's assignment does, so the
//! assignment is sent only when the epoch a member reports differs from its current one
//! (or what it reports owning differs from it), as KIP-848 lets a broker do.

use std::collections::BTreeSet;

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::consumer_group_describe_response::{
    self as describe_response, ConsumerGroupDescribeResponse, DescribedGroup,
};
use kafka_protocol::messages::consumer_group_heartbeat_response::{
    Assignment, ConsumerGroupHeartbeatResponse, TopicPartitions,
};
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupDescribeRequest, ConsumerGroupHeartbeatRequest,
};
use kafka_protocol::protocol::StrBytes;

use super::handlers::{name, topic_name};
use super::{KafkaServer, Req, Who, errors};
use crate::groups::assignor::Tp;
use crate::groups::coordinator::LEAVE_EPOCH;
use crate::groups::{GroupError, GroupsError, HeartbeatRequest};

/// KIP-848's epoch for a static member leaving for a while (treated as leaving: static
/// membership is not served).
const STATIC_LEAVE_EPOCH: i32 = -2;

/// How a Kafka member's `client` text starts (`kafka:<client id>/<host>`); `collector
/// tail` members show `<host>/<pid>`.
const KAFKA_CLIENT: &str = "kafka:";

/// The one server-side assignor (balanced and sticky), under Kafka's name for its default.
const ASSIGNOR: &str = "uniform";

fn refused(code: i16, message: String) -> ConsumerGroupHeartbeatResponse {
    ConsumerGroupHeartbeatResponse::default()
        .with_error_code(code)
        .with_error_message(Some(StrBytes::from_string(message)))
}

pub fn heartbeat(
    s: &KafkaServer,
    req: Req,
    who: &Who,
    r: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let reply = heartbeat_inner(s, req, who, &r);
    if reply.error_code != 0 {
        s.count_error(ApiKey::ConsumerGroupHeartbeat, reply.error_code);
        tracing::debug!(
            group = %r.group_id.0,
            member = %r.member_id,
            code = reply.error_code,
            message = ?reply.error_message,
            "Kafka ConsumerGroupHeartbeat refused"
        );
    }
    reply
}

fn heartbeat_inner(
    s: &KafkaServer,
    req: Req,
    who: &Who,
    r: &ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    if !s.groups.is_coordinator() {
        return refused(
            E::NotCoordinator.code(),
            "this node does not coordinate groups".into(),
        );
    }
    let group = r.group_id.0.to_string();
    if let Err(e) = s
        .groups
        .authorize(&who.caller, api::acls::Operation::Read, &group)
    {
        return refused(errors::group_code(&e), e.to_string());
    }
    if let Err(e) = crate::groups::validate_group(&group) {
        return refused(errors::group_code(&e), e.to_string());
    }
    if s.groups.classic.has_members(&group) {
        return refused(
            E::GroupIdNotFound.code(),
            format!(
                "group {group} is a classic group (JoinGroup members); a group is of one type at a time"
            ),
        );
    }
    if r.subscribed_topic_regex
        .as_ref()
        .is_some_and(|re| !re.is_empty())
    {
        return refused(
            E::InvalidRequest.code(),
            "regular-expression subscriptions are not served; subscribe to topic names".into(),
        );
    }
    if let Some(a) = &r.server_assignor
        && a.as_str() != ASSIGNOR
    {
        return refused(
            E::UnsupportedAssignor.code(),
            format!("server assignor {a} is not served (only {ASSIGNOR})"),
        );
    }
    let leaving = r.member_epoch == LEAVE_EPOCH || r.member_epoch == STATIC_LEAVE_EPOCH;
    // v1 members choose their own id (a UUID) and send it from the first heartbeat on.
    if req.version >= 1 && r.member_id.is_empty() {
        return refused(
            E::InvalidRequest.code(),
            "member_id is required from version 1 on".into(),
        );
    }
    // A member of the previous coordinator (a controller failover) heartbeating with only
    // what changed: told the coordinator is loading, a KIP-848 client sends its whole
    // state (subscription and partitions) next, and is adopted with its id, epoch and
    // partitions instead of being fenced into a rejoin.
    if !leaving
        && r.member_epoch > 0
        && (r.subscribed_topic_names.is_none() || r.topic_partitions.is_none())
        && s.groups.would_adopt(&group, r.member_id.as_str())
    {
        return refused(
            E::CoordinatorLoadInProgress.code(),
            "the group coordinator moved; send the subscription and owned partitions".into(),
        );
    }
    let meta = s.broker.controller.metadata();
    // What the member owns, by name; partitions of topics deleted since are dropped.
    let owned = r.topic_partitions.as_ref().map(|tps| {
        let mut set: BTreeSet<Tp> = BTreeSet::new();
        for t in tps {
            if let Some(topic) = meta.topic_by_id(t.topic_id) {
                for p in &t.partitions {
                    if let Ok(p) = u32::try_from(*p) {
                        set.insert((topic.name.clone(), p));
                    }
                }
            }
        }
        set
    });
    let hb = HeartbeatRequest {
        member_id: (!r.member_id.is_empty()).then(|| r.member_id.to_string()),
        member_epoch: if leaving { LEAVE_EPOCH } else { r.member_epoch },
        topics: r
            .subscribed_topic_names
            .as_ref()
            .map(|ts| ts.iter().map(name).collect()),
        owned: owned.as_ref().map(crate::groups::coordinator::to_wire),
        client: Some(format!("{KAFKA_CLIENT}{}/{}", who.client_id, who.host)),
    };
    let got = match s.groups.heartbeat(&group, &hb) {
        Ok(got) => got,
        Err(e) => {
            let code = match &e {
                GroupsError::Member(GroupError::UnknownMember { .. }) => E::UnknownMemberId.code(),
                GroupsError::Member(GroupError::FencedEpoch { .. }) => E::FencedMemberEpoch.code(),
                GroupsError::Member(
                    GroupError::GroupFull { .. } | GroupError::TooManyGroups { .. },
                ) => E::GroupMaxSizeReached.code(),
                GroupsError::Member(GroupError::Invalid(_)) => E::InvalidRequest.code(),
                other => errors::group_code(other),
            };
            return refused(code, e.to_string());
        }
    };
    let mut reply = ConsumerGroupHeartbeatResponse::default()
        .with_member_id(Some(StrBytes::from_string(got.member_id)))
        .with_member_epoch(got.member_epoch)
        .with_heartbeat_interval_ms(i32::try_from(got.heartbeat_interval_ms).unwrap_or(i32::MAX));
    if leaving {
        return reply;
    }
    let assigned = crate::groups::coordinator::from_wire(&got.assignment);
    if got.member_epoch != r.member_epoch || owned.as_ref().is_some_and(|o| *o != assigned) {
        let mut topics: Vec<TopicPartitions> = Vec::new();
        for (topic, partitions) in by_topic(&assigned) {
            // A topic deleted under the member: nothing of it to read.
            let Some(t) = meta.topics.get(&topic) else {
                continue;
            };
            topics.push(
                TopicPartitions::default()
                    .with_topic_id(t.topic_id())
                    .with_partitions(partitions),
            );
        }
        reply = reply.with_assignment(Some(Assignment::default().with_topic_partitions(topics)));
    }
    reply
}

/// `(topic, partitions)` of a set, in topic order.
fn by_topic(set: &BTreeSet<Tp>) -> Vec<(String, Vec<i32>)> {
    let mut out: Vec<(String, Vec<i32>)> = Vec::new();
    for (topic, p) in set {
        let p = i32::try_from(*p).unwrap_or(i32::MAX);
        match out.last_mut() {
            Some((t, ps)) if t == topic => ps.push(p),
            _ => out.push((topic.clone(), vec![p])),
        }
    }
    out
}

pub fn describe(
    s: &KafkaServer,
    who: &Who,
    r: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let coordinator = s.groups.is_coordinator();
    let meta = s.broker.controller.metadata();
    let assignment = |set: &BTreeSet<Tp>| {
        describe_response::Assignment::default().with_topic_partitions(
            by_topic(set)
                .into_iter()
                .filter_map(|(topic, partitions)| {
                    let t = meta.topics.get(&topic)?;
                    Some(
                        describe_response::TopicPartitions::default()
                            .with_topic_id(t.topic_id())
                            .with_topic_name(topic_name(&topic))
                            .with_partitions(partitions),
                    )
                })
                .collect(),
        )
    };
    let groups = r
        .group_ids
        .iter()
        .map(|id| {
            let base = DescribedGroup::default().with_group_id(id.clone());
            let not_found = |why: String| {
                s.count_error(ApiKey::ConsumerGroupDescribe, E::GroupIdNotFound.code());
                base.clone()
                    .with_error_code(E::GroupIdNotFound.code())
                    .with_error_message(Some(StrBytes::from_string(why)))
            };
            if !coordinator {
                s.count_error(ApiKey::ConsumerGroupDescribe, E::NotCoordinator.code());
                return base.with_error_code(E::NotCoordinator.code());
            }
            if let Err(e) = s
                .groups
                .authorize(&who.caller, api::acls::Operation::Describe, &id.0)
            {
                let code = errors::group_code(&e);
                s.count_error(ApiKey::ConsumerGroupDescribe, code);
                return base.with_error_code(code);
            }
            // Classic groups and groups known only by their offsets are described by
            // DescribeGroups (clients fall back to it on GROUP_ID_NOT_FOUND).
            let Some(v) = s.groups.consumer_view(&id.0) else {
                return not_found(format!("group {} is not a consumer group", id.0));
            };
            base.with_group_state(StrBytes::from_static_str(match v.state {
                "stable" => "Stable",
                "reconciling" => "Reconciling",
                _ => "Empty",
            }))
            .with_group_epoch(v.epoch)
            .with_assignment_epoch(v.epoch)
            .with_assignor_name(StrBytes::from_static_str(ASSIGNOR))
            .with_members(
                v.members
                    .iter()
                    .map(|m| {
                        let (client_id, host) = m
                            .client
                            .strip_prefix(KAFKA_CLIENT)
                            .and_then(|c| c.rsplit_once('/'))
                            .unwrap_or((m.client.as_str(), ""));
                        describe_response::Member::default()
                            .with_member_id(StrBytes::from_string(m.member_id.clone()))
                            .with_member_epoch(m.member_epoch)
                            .with_client_id(StrBytes::from_string(client_id.to_owned()))
                            .with_client_host(StrBytes::from_string(host.to_owned()))
                            .with_subscribed_topic_names(
                                m.topics.iter().map(|t| topic_name(t)).collect(),
                            )
                            .with_assignment(assignment(&m.assigned))
                            .with_target_assignment(assignment(&m.target))
                    })
                    .collect(),
            )
        })
        .collect();
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_group_by_topic_in_order() {
        let set: BTreeSet<Tp> = [("a".into(), 2), ("a".into(), 0), ("b".into(), 1)]
            .into_iter()
            .collect();
        assert_eq!(
            by_topic(&set),
            vec![("a".to_owned(), vec![0, 2]), ("b".to_owned(), vec![1])]
        );
    }
}
