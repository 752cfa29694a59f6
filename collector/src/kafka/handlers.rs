//! One function per Kafka API: decode, call the broker services, encode.

use api::acls::{Operation as Op, ResourceType as Rt};
use std::time::Duration;

use api::Acks;
use bytes::Bytes;
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::create_partitions_response::{
    CreatePartitionsResponse, CreatePartitionsTopicResult,
};
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicResult, CreateTopicsResponse,
};
use kafka_protocol::messages::delete_groups_response::{
    DeletableGroupResult, DeleteGroupsResponse,
};
use kafka_protocol::messages::delete_topics_response::{
    DeletableTopicResult, DeleteTopicsResponse,
};
use kafka_protocol::messages::describe_cluster_response::{
    DescribeClusterBroker, DescribeClusterResponse,
};
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
};
use kafka_protocol::messages::describe_groups_response::{
    DescribeGroupsResponse, DescribedGroup, DescribedGroupMember,
};
use kafka_protocol::messages::describe_producers_response::{
    DescribeProducersResponse, PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::fetch_response::{
    FetchResponse, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::join_group_response::{JoinGroupResponse, JoinGroupResponseMember};
use kafka_protocol::messages::leave_group_response::{LeaveGroupResponse, MemberResponse};
use kafka_protocol::messages::list_groups_response::{ListGroupsResponse, ListedGroup};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponse, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponse, OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderEpochResponse, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::produce_response::{
    PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreatePartitionsRequest, CreateTopicsRequest, DeleteGroupsRequest,
    DeleteTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest, DescribeGroupsRequest,
    DescribeProducersRequest, FetchRequest, FindCoordinatorRequest, FindCoordinatorResponse,
    GroupId, HeartbeatRequest, HeartbeatResponse, InitProducerIdRequest, InitProducerIdResponse,
    JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest, ListOffsetsRequest, MetadataRequest,
    OffsetCommitRequest, OffsetFetchRequest, OffsetForLeaderEpochRequest, ProduceRequest,
    ProducerId, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::request::Request;
use super::{Close, KafkaServer, Req, Who, consumer_groups, errors, versions};
use crate::broker::BrokerError;
use crate::broker::fetch::{OffsetSpec, PartitionFetch};

/// What Metadata calls the cluster.
const CLUSTER_ID: &str = "tributary";

pub async fn dispatch(
    s: &KafkaServer,
    req: Req,
    who: &Who,
    body: Request,
    conn: &mut super::Conn,
) -> Result<Option<Bytes>, Close> {
    match body {
        Request::SaslHandshake(r) => req
            .reply(&super::security::sasl_handshake(s, conn, r))
            .map(Some),
        Request::SaslAuthenticate(r) => {
            let reply = super::security::sasl_authenticate(s, who, conn, r);
            req.reply(&reply).map(Some)
        }
        Request::DescribeAcls(r) => req.reply(&super::security::describe(s, who, r)).map(Some),
        Request::CreateAcls(r) => req
            .reply(&super::security::create(s, who, r).await)
            .map(Some),
        Request::DeleteAcls(r) => req
            .reply(&super::security::delete(s, who, r).await)
            .map(Some),
        Request::ApiVersions(_) => req.reply(&versions::reply()).map(Some),
        Request::Metadata(r) => req.reply(&metadata(s, who, req, r).await).map(Some),
        Request::Produce(r) => {
            let acks = r.acks;
            let reply = produce(s, who, req, r).await;
            if acks == 0 {
                return Ok(None);
            }
            req.reply(&reply).map(Some)
        }
        Request::Fetch(r) => req.reply(&fetch(s, who, req, r).await).map(Some),
        Request::ListOffsets(r) => req.reply(&list_offsets(s, who, req, r).await).map(Some),
        Request::InitProducerId(r) => req.reply(&init_producer_id(s, who, r).await).map(Some),
        Request::FindCoordinator(r) => req.reply(&find_coordinator(s, req, r)).map(Some),
        Request::OffsetCommit(r) => req.reply(&offset_commit(s, who, r).await).map(Some),
        Request::OffsetFetch(r) => req.reply(&offset_fetch(s, who, req, r)).map(Some),
        Request::JoinGroup(r) => req.reply(&join_group(s, req, who, r).await).map(Some),
        Request::SyncGroup(r) => req.reply(&sync_group(s, who, r).await).map(Some),
        Request::Heartbeat(r) => req.reply(&heartbeat(s, who, r)).map(Some),
        Request::LeaveGroup(r) => req.reply(&leave_group(s, who, req, r)).map(Some),
        Request::OffsetForLeaderEpoch(r) => req
            .reply(&offset_for_leader_epoch(s, who, r).await)
            .map(Some),
        Request::ListGroups(r) => req.reply(&list_groups(s, who, r)).map(Some),
        Request::DescribeGroups(r) => req.reply(&describe_groups(s, who, req, r)).map(Some),
        Request::DescribeCluster(r) => req.reply(&describe_cluster(s, who, req, r)).map(Some),
        Request::DescribeConfigs(r) => req.reply(&describe_configs(s, who, r)).map(Some),
        Request::DeleteGroups(r) => req.reply(&delete_groups(s, who, r).await).map(Some),
        Request::DescribeProducers(r) => req.reply(&describe_producers(s, who, r).await).map(Some),
        Request::CreatePartitions(r) => req.reply(&create_partitions(s, who, r).await).map(Some),
        Request::CreateTopics(r) => req.reply(&create_topics(s, who, r).await).map(Some),
        Request::DeleteTopics(r) => req.reply(&delete_topics(s, who, req, r).await).map(Some),
        Request::ConsumerGroupHeartbeat(r) => req
            .reply(&consumer_groups::heartbeat(s, req, who, r))
            .map(Some),
        Request::ConsumerGroupDescribe(r) => {
            req.reply(&consumer_groups::describe(s, who, r)).map(Some)
        }
    }
}

pub(super) fn name(t: &TopicName) -> String {
    t.0.to_string()
}

pub(super) fn topic_name(t: &str) -> TopicName {
    TopicName(StrBytes::from_string(t.to_owned()))
}

/// `host:port` split for Metadata.
fn host_port(address: &str) -> Option<(String, i32)> {
    let (host, port) = address.rsplit_once(':')?;
    Some((host.trim_matches(['[', ']']).to_owned(), port.parse().ok()?))
}

fn broker_id(id: u64) -> BrokerId {
    BrokerId(i32::try_from(id).unwrap_or(-1))
}

/// One topic a Metadata request names: by name, or (v12+) by topic id alone.
enum Wanted {
    Name(String),
    Id(uuid::Uuid),
    Invalid,
}

async fn metadata(s: &KafkaServer, who: &Who, req: Req, r: MetadataRequest) -> MetadataResponse {
    // Before v4 every Metadata request may create topics.
    let auto = (req.version < 4 || r.allow_auto_topic_creation)
        && s.broker.config.topics.auto_create_topics;
    let wanted: Option<Vec<Wanted>> = r.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| match &t.name {
                Some(n) => Wanted::Name(name(n)),
                // Lookup by id only from v12; before, a null name is invalid.
                None if req.version < 12 => Wanted::Invalid,
                None => Wanted::Id(t.topic_id),
            })
            .collect()
    });
    let mut created_errors = std::collections::HashMap::new();
    for w in wanted.iter().flatten() {
        let Wanted::Name(n) = w else { continue };
        if s.broker.controller.metadata().topics.contains_key(n) {
            continue;
        }
        // Creating on Metadata needs CREATE; without it the topic is reported unknown.
        if auto && let Err(e) = s.broker.authorize_create(&who.caller, n) {
            created_errors.insert(n.clone(), errors::code(&e));
            continue;
        }
        if let Err(e) = s.broker.topic(n, auto).await {
            created_errors.insert(n.clone(), errors::code(&e));
        }
    }
    let meta = s.broker.controller.metadata();
    let live = |id: u64| {
        meta.brokers
            .get(&id)
            .is_some_and(|b| !b.fenced && b.kafka_address.is_some())
    };
    let brokers = meta
        .brokers
        .values()
        .filter(|b| !b.fenced)
        .filter_map(|b| {
            let (host, port) = host_port(b.kafka_address.as_deref()?)?;
            Some(
                MetadataResponseBroker::default()
                    .with_node_id(broker_id(b.id))
                    .with_host(StrBytes::from_string(host))
                    .with_port(port),
            )
        })
        .collect();
    // All topics: those the caller may DESCRIBE (the rest are not shown); named ones the
    // caller may not DESCRIBE answer TOPIC_AUTHORIZATION_FAILED.
    let listing_all = wanted.is_none();
    let wanted = wanted.unwrap_or_else(|| {
        meta.topics
            .keys()
            .filter(|n| s.broker.may_describe(&who.caller, Rt::Topic, n))
            .cloned()
            .map(Wanted::Name)
            .collect()
    });
    let topics = wanted
        .into_iter()
        .map(|w| {
            let found = match &w {
                Wanted::Name(n) => meta.topics.get(n),
                Wanted::Id(id) => meta.topic_by_id(*id),
                Wanted::Invalid => None,
            };
            if let Some(t) = found
                && !listing_all
                && !s.broker.may_describe(&who.caller, Rt::Topic, &t.name)
            {
                return MetadataResponseTopic::default()
                    .with_error_code(E::TopicAuthorizationFailed.code())
                    .with_name(Some(topic_name(&t.name)));
            }
            let Some(t) = found else {
                return match w {
                    Wanted::Name(n) => MetadataResponseTopic::default()
                        .with_error_code(
                            created_errors
                                .get(&n)
                                .copied()
                                .unwrap_or(E::UnknownTopicOrPartition.code()),
                        )
                        .with_name(Some(topic_name(&n))),
                    Wanted::Id(id) => MetadataResponseTopic::default()
                        .with_error_code(E::UnknownTopicId.code())
                        .with_topic_id(id),
                    Wanted::Invalid => MetadataResponseTopic::default()
                        .with_error_code(E::InvalidRequest.code())
                        .with_name(Some(topic_name(""))),
                };
            };
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let up = live(p.leader);
                    MetadataResponsePartition::default()
                        .with_error_code(if up { 0 } else { E::LeaderNotAvailable.code() })
                        .with_partition_index(p.partition as i32)
                        .with_leader_id(if up {
                            broker_id(p.leader)
                        } else {
                            BrokerId(-1)
                        })
                        .with_leader_epoch(p.leader_epoch)
                        .with_replica_nodes(p.replicas.iter().map(|r| broker_id(*r)).collect())
                        .with_isr_nodes(p.isr.iter().map(|r| broker_id(*r)).collect())
                        .with_offline_replicas(
                            p.replicas
                                .iter()
                                .filter(|r| !live(**r))
                                .map(|r| broker_id(*r))
                                .collect(),
                        )
                })
                .collect();
            MetadataResponseTopic::default()
                .with_name(Some(topic_name(&t.name)))
                .with_topic_id(t.topic_id())
                .with_partitions(partitions)
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_static_str(CLUSTER_ID)))
        .with_controller_id(s.broker.controller.leader().map_or(BrokerId(-1), broker_id))
        .with_topics(topics)
}

async fn produce(s: &KafkaServer, who: &Who, req: Req, r: ProduceRequest) -> ProduceResponse {
    let acks = match r.acks {
        0 => Some(Acks::None),
        1 => Some(Acks::Leader),
        -1 => Some(Acks::All),
        _ => None,
    };
    let mut calls = Vec::new();
    for t in &r.topic_data {
        let topic = name(&t.name);
        for p in &t.partition_data {
            let (topic, index, records) = (topic.clone(), p.index, p.records.clone());
            calls.push(async move {
                let result = match (acks, u32::try_from(index), records) {
                    (None, _, _) => Err(E::InvalidRequiredAcks.code()),
                    (_, Err(_), _) => Err(E::UnknownTopicOrPartition.code()),
                    (_, _, None) => Err(E::CorruptMessage.code()),
                    (Some(acks), Ok(partition), Some(bytes)) => s
                        .broker
                        .produce(&who.caller, &topic, partition, bytes.to_vec(), acks)
                        .await
                        .map_err(|e| {
                            log_error("Produce", &topic, index, &e);
                            errors::code(&e)
                        }),
                };
                (topic, index, result)
            });
        }
    }
    let results = futures::future::join_all(calls).await;
    let mut endpoints = std::collections::BTreeMap::new();
    let mut responses: Vec<TopicProduceResponse> = Vec::new();
    for (topic, index, result) in results {
        let mut pr = PartitionProduceResponse::default().with_index(index);
        match result {
            Ok(acked) => {
                let base = acked.first().map_or(-1, |a| a.base_offset as i64);
                let start =
                    u32::try_from(index).map_or(-1, |p| s.broker.local_offsets(&topic, p).1 as i64);
                pr = pr
                    .with_base_offset(base)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(start);
            }
            Err(code) => {
                s.count_error(ApiKey::Produce, code);
                pr = pr.with_error_code(code).with_base_offset(-1);
                // KIP-951 (v10+): where the leader is now.
                if req.version >= 10
                    && leader_moved(code)
                    && let Some(h) = leader_hint(s, &topic, index)
                {
                    pr = pr.with_current_leader(
                        kafka_protocol::messages::produce_response::LeaderIdAndEpoch::default()
                            .with_leader_id(h.leader)
                            .with_leader_epoch(h.epoch),
                    );
                    if let Some(ep) = h.endpoint {
                        endpoints.insert(h.leader, ep);
                    }
                }
            }
        }
        match responses.iter_mut().find(|t| name(&t.name) == topic) {
            Some(t) => t.partition_responses.push(pr),
            None => responses.push(
                TopicProduceResponse::default()
                    .with_name(topic_name(&topic))
                    .with_partition_responses(vec![pr]),
            ),
        }
    }
    let mut reply = ProduceResponse::default().with_responses(responses);
    if req.version >= 10 {
        reply = reply.with_node_endpoints(
            endpoints
                .into_iter()
                .map(|(id, (host, port))| {
                    kafka_protocol::messages::produce_response::NodeEndpoint::default()
                        .with_node_id(id)
                        .with_host(StrBytes::from_string(host))
                        .with_port(port)
                })
                .collect(),
        );
    }
    reply
}

fn log_error(api: &str, topic: &str, partition: i32, e: &BrokerError) {
    match e {
        // Routine: clients refresh metadata and retry.
        BrokerError::NotLeader { .. } | BrokerError::UnknownTopic(_) => {
            tracing::debug!(api, topic, partition, error = %e, "Kafka request refused");
        }
        _ => tracing::info!(api, topic, partition, error = %e, "Kafka request refused"),
    }
}

/// Where a partition's leader is now, for clients told NOT_LEADER_OR_FOLLOWER or
/// FENCED_LEADER_EPOCH (KIP-951: they go there without a Metadata round trip).
struct LeaderHint {
    leader: BrokerId,
    epoch: i32,
    /// The leader's advertised Kafka `(host, port)`.
    endpoint: Option<(String, i32)>,
}

fn leader_hint(s: &KafkaServer, topic: &str, partition: i32) -> Option<LeaderHint> {
    let meta = s.broker.controller.metadata();
    let p = meta
        .topics
        .get(topic)?
        .partitions
        .get(usize::try_from(partition).ok()?)?;
    let b = meta.brokers.get(&p.leader).filter(|b| !b.fenced)?;
    Some(LeaderHint {
        leader: broker_id(p.leader),
        epoch: p.leader_epoch,
        endpoint: b.kafka_address.as_deref().and_then(host_port),
    })
}

/// Whether a partition error deserves a [`LeaderHint`].
fn leader_moved(code: i16) -> bool {
    code == E::NotLeaderOrFollower.code() || code == E::FencedLeaderEpoch.code()
}

async fn fetch(s: &KafkaServer, who: &Who, req: Req, r: FetchRequest) -> FetchResponse {
    let limits = &s.broker.config.limits;
    let clamp = |n: i32| (n.max(0) as u64).min(limits.max_fetch_bytes) as usize;
    let max_bytes = if req.version >= 3 {
        clamp(r.max_bytes)
    } else {
        limits.max_fetch_bytes as usize
    };
    // v13+ names topics by id only.
    let by_id = req.version >= 13;
    let names: Vec<Option<String>> = {
        let meta = s.broker.controller.metadata();
        r.topics
            .iter()
            .map(|t| {
                if by_id {
                    meta.topic_by_id(t.topic_id).map(|m| m.name.clone())
                } else {
                    Some(name(&t.topic))
                }
            })
            .collect()
    };
    let mut wanted = Vec::new();
    // Per request topic, per partition: its index in `wanted`, or the error to answer.
    let mut slots: Vec<Vec<(i32, Result<usize, i16>)>> = Vec::new();
    for (t, topic) in r.topics.iter().zip(&names) {
        let mut row = Vec::new();
        for p in &t.partitions {
            let slot = match (
                topic,
                u32::try_from(p.partition),
                u64::try_from(p.fetch_offset),
            ) {
                (None, _, _) => Err(E::UnknownTopicId.code()),
                (Some(topic), Ok(partition), Ok(offset)) => {
                    wanted.push(PartitionFetch {
                        topic: topic.clone(),
                        partition,
                        offset,
                        max_bytes: clamp(p.partition_max_bytes),
                        // -1: the client does not know it (or the version has no field).
                        leader_epoch: (p.current_leader_epoch >= 0)
                            .then_some(p.current_leader_epoch),
                    });
                    Ok(wanted.len() - 1)
                }
                (Some(_), _, _) => Err(E::OffsetOutOfRange.code()),
            };
            row.push((p.partition, slot));
        }
        slots.push(row);
    }
    let wait = Duration::from_millis(r.max_wait_ms.max(0) as u64);
    let mut results: Vec<Option<_>> = s
        .broker
        .fetch_many(
            &who.caller,
            &wanted,
            wait,
            r.min_bytes.max(0) as usize,
            max_bytes,
        )
        .await
        .into_iter()
        .map(Some)
        .collect();
    let mut endpoints = std::collections::BTreeMap::new();
    let mut responses: Vec<FetchableTopicResponse> = Vec::new();
    for ((t, topic), row) in r.topics.iter().zip(&names).zip(slots) {
        let topic = topic.as_deref().unwrap_or("");
        let mut partitions = Vec::new();
        for (index, slot) in row {
            let base = PartitionData::default()
                .with_partition_index(index)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_preferred_read_replica(BrokerId(-1))
                .with_aborted_transactions(Some(Vec::new()))
                .with_records(Some(Bytes::new()));
            let code = match slot.map(|i| results[i].take()) {
                Ok(Some(Ok(rr))) => {
                    partitions.push(
                        base.with_high_watermark(rr.high_watermark as i64)
                            .with_last_stable_offset(rr.high_watermark as i64)
                            .with_log_start_offset(rr.log_start_offset as i64)
                            .with_records(Some(Bytes::from(rr.bytes))),
                    );
                    continue;
                }
                Ok(Some(Err(e))) => {
                    log_error("Fetch", topic, index, &e);
                    errors::code(&e)
                }
                Ok(None) => E::UnknownServerError.code(),
                Err(code) => code,
            };
            s.count_error(ApiKey::Fetch, code);
            let mut pd = base.with_error_code(code);
            // The current leader: a tagged field from v12, its endpoint from v16.
            if req.version >= 12
                && leader_moved(code)
                && let Some(h) = leader_hint(s, topic, index)
            {
                pd = pd.with_current_leader(
                    kafka_protocol::messages::fetch_response::LeaderIdAndEpoch::default()
                        .with_leader_id(h.leader)
                        .with_leader_epoch(h.epoch),
                );
                if let Some(ep) = h.endpoint {
                    endpoints.insert(h.leader, ep);
                }
            }
            partitions.push(pd);
        }
        let mut tr = FetchableTopicResponse::default().with_partitions(partitions);
        tr = if by_id {
            tr.with_topic_id(t.topic_id)
        } else {
            tr.with_topic(t.topic.clone())
        };
        responses.push(tr);
    }
    let mut reply = FetchResponse::default()
        // No fetch sessions (KIP-227): session id 0 tells clients to send full requests.
        .with_session_id(0)
        .with_responses(responses);
    if req.version >= 16 {
        reply = reply.with_node_endpoints(
            endpoints
                .into_iter()
                .map(|(id, (host, port))| {
                    kafka_protocol::messages::fetch_response::NodeEndpoint::default()
                        .with_node_id(id)
                        .with_host(StrBytes::from_string(host))
                        .with_port(port)
                })
                .collect(),
        );
    }
    reply
}

async fn list_offsets(
    s: &KafkaServer,
    who: &Who,
    req: Req,
    r: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let mut topics = Vec::new();
    for t in &r.topics {
        let topic = name(&t.name);
        let mut partitions = Vec::new();
        for p in &t.partitions {
            // -3 (max timestamp) from v7, -4 (earliest local) from v8, -5 (latest tiered)
            // from v9. Every segment is local and none tiered: -4 is the log start and -5
            // finds no offset.
            let spec = match p.timestamp {
                -1 => Some(OffsetSpec::Latest),
                -2 => Some(OffsetSpec::Earliest),
                -3 if req.version >= 7 => Some(OffsetSpec::MaxTimestamp),
                -4 if req.version >= 8 => Some(OffsetSpec::Earliest),
                ts if ts >= 0 => Some(OffsetSpec::Timestamp(ts)),
                _ => None,
            };
            let base = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1);
            if p.timestamp == -5 && req.version >= 9 {
                partitions.push(base);
                continue;
            }
            let pr = match (spec, u32::try_from(p.partition_index)) {
                (Some(spec), Ok(partition)) => {
                    let looked_up = s
                        .broker
                        .list_offset(&who.caller, &topic, partition, spec)
                        .await
                        .and_then(|found| match p.current_leader_epoch {
                            asked if asked >= 0 && asked != found.2 => {
                                Err(BrokerError::LeaderEpoch {
                                    topic: topic.clone(),
                                    partition,
                                    asked,
                                    current: found.2,
                                })
                            }
                            _ => Ok(found),
                        });
                    match looked_up {
                        Ok((offset, ts, epoch)) => base
                            .with_offset(offset.map_or(-1, |o| o as i64))
                            .with_timestamp(ts)
                            // The field exists from v4 on.
                            .with_leader_epoch(if req.version >= 4 { epoch } else { -1 }),
                        Err(e) => {
                            log_error("ListOffsets", &topic, p.partition_index, &e);
                            let code = errors::code(&e);
                            s.count_error(ApiKey::ListOffsets, code);
                            base.with_error_code(code)
                        }
                    }
                }
                _ => base.with_error_code(E::InvalidRequest.code()),
            };
            partitions.push(pr);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic_name(&topic))
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

async fn init_producer_id(
    s: &KafkaServer,
    who: &Who,
    r: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let reply = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if r.transactional_id.is_some() {
        // Transactions are not served: only idempotent producers get ids.
        tracing::info!("Kafka InitProducerId with a transactional id refused (no transactions)");
        s.count_error(ApiKey::InitProducerId, E::InvalidRequest.code());
        return reply.with_error_code(E::InvalidRequest.code());
    }
    match s.broker.allocate_producer_id(&who.caller).await {
        Ok(id) => reply
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(e) => {
            let code = errors::code(&e);
            s.count_error(ApiKey::InitProducerId, code);
            reply.with_error_code(code)
        }
    }
}

/// Group requests go to the node that coordinates groups: the active controller. v4+
/// asks for several keys at once.
fn find_coordinator(
    s: &KafkaServer,
    req: Req,
    r: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let meta = s.broker.controller.metadata();
    let found = s.broker.controller.leader().and_then(|id| {
        let b = meta.brokers.get(&id).filter(|b| !b.fenced)?;
        let (host, port) = host_port(b.kafka_address.as_deref()?)?;
        Some((id, host, port))
    });
    // Only group coordinators: no transactions (key type 1) or share groups (2).
    let answer: Result<(u64, String, i32), i16> = if r.key_type != 0 {
        tracing::info!(
            key_type = r.key_type,
            "Kafka FindCoordinator for a key type not served"
        );
        Err(E::InvalidRequest.code())
    } else {
        found.ok_or(E::CoordinatorNotAvailable.code())
    };
    if let Err(code) = answer {
        s.count_error(ApiKey::FindCoordinator, code);
    }
    if req.version >= 4 {
        let coordinators = r
            .coordinator_keys
            .iter()
            .map(|key| {
                let c = kafka_protocol::messages::find_coordinator_response::Coordinator::default()
                    .with_key(key.clone());
                match &answer {
                    Ok((id, host, port)) => c
                        .with_node_id(broker_id(*id))
                        .with_host(StrBytes::from_string(host.clone()))
                        .with_port(*port),
                    Err(code) => c
                        .with_node_id(BrokerId(-1))
                        .with_port(-1)
                        .with_error_code(*code),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    match answer {
        Ok((id, host, port)) => FindCoordinatorResponse::default()
            .with_node_id(broker_id(id))
            .with_host(StrBytes::from_string(host))
            .with_port(port),
        Err(code) => FindCoordinatorResponse::default()
            .with_node_id(BrokerId(-1))
            .with_port(-1)
            .with_error_code(code),
    }
}

/// Commits into the same Raft-stored offsets `collector tail` groups use, fenced by the
/// group's kind: a consumer outside any membership (generation -1, no member id: `assign()`
/// consumers) only while the group has no members; a KIP-848 member (v9+) at its member
/// epoch, holding the partitions; a classic member at its generation.
async fn offset_commit(s: &KafkaServer, who: &Who, r: OffsetCommitRequest) -> OffsetCommitResponse {
    let group = r.group_id.0.to_string();
    let mut offsets = Vec::new();
    let mut bad_partition = false;
    for t in &r.topics {
        for p in &t.partitions {
            match (
                u32::try_from(p.partition_index),
                u64::try_from(p.committed_offset),
            ) {
                (Ok(partition), Ok(offset)) => offsets.push(api::OffsetEntry {
                    topic: name(&t.name),
                    partition,
                    offset,
                }),
                _ => bad_partition = true,
            }
        }
    }
    let standalone = r.generation_id_or_member_epoch == -1 && r.member_id.is_empty();
    // READ on the group and on every topic, or nothing is written.
    let denied = s
        .groups
        .authorize(&who.caller, Op::Read, &group)
        .map_err(|e| commit_code(&e))
        .and_then(|()| {
            offsets.iter().try_for_each(|o| {
                s.broker
                    .authorize(&who.caller, Op::Read, Rt::Topic, &o.topic)
                    .map_err(|e| errors::code(&e))
            })
        })
        .err();
    let code = if let Some(code) = denied {
        code
    } else if !s.groups.is_coordinator() {
        E::NotCoordinator.code()
    } else if bad_partition {
        E::InvalidCommitOffsetSize.code()
    } else {
        let done = if standalone {
            s.groups.commit_standalone(&group, offsets).await
        } else if s.groups.has_server_side_members(&group) {
            s.groups
                .commit(
                    &group,
                    api::CommitRequest {
                        member_id: r.member_id.to_string(),
                        member_epoch: r.generation_id_or_member_epoch,
                        offsets,
                    },
                )
                .await
        } else {
            s.groups
                .commit_classic(
                    &group,
                    &r.member_id,
                    r.generation_id_or_member_epoch,
                    offsets,
                )
                .await
        };
        match done {
            Ok(()) => 0,
            Err(e) => {
                tracing::info!(group, error = %e, "Kafka offset commit refused");
                commit_code(&e)
            }
        }
    };
    s.count_error(ApiKey::OffsetCommit, code);
    let topics = r
        .topics
        .iter()
        .map(|t| {
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// GROUP_AUTHORIZATION_FAILED when `who` may not do `op` on `group`.
fn group_denied(s: &KafkaServer, who: &Who, op: Op, group: &str) -> Option<i16> {
    s.groups
        .authorize(&who.caller, op, group)
        .err()
        .map(|e| errors::group_code(&e))
}

/// A refused commit or offset fetch as Kafka answers it.
fn commit_code(e: &crate::groups::GroupsError) -> i16 {
    use crate::groups::{GroupError, GroupsError as G};
    match e {
        // A standalone commit (member "") while the group has members.
        G::NotEmpty { .. } => E::UnknownMemberId.code(),
        // A KIP-848 member behind its epoch, or committing what it no longer holds: it
        // learns its assignment on its next heartbeat and commits again.
        G::Member(GroupError::FencedEpoch { .. } | GroupError::NotOwner { .. }) => {
            E::StaleMemberEpoch.code()
        }
        other => errors::group_code(other),
    }
}

/// A group's committed offsets: `(topic, [(partition, offset or -1)])` for the topics asked
/// (all the group's committed partitions when none are named).
type Committed = Vec<(String, Vec<(i32, i64)>)>;

fn committed(
    s: &KafkaServer,
    who: &Who,
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> Result<Committed, crate::groups::GroupsError> {
    s.groups.authorize(&who.caller, Op::Describe, group)?;
    let committed = s.groups.offsets(group)?;
    let wanted = wanted.unwrap_or_else(|| {
        committed
            .offsets
            .iter()
            .map(|(t, ps)| (t.clone(), ps.keys().map(|p| *p as i32).collect()))
            .collect()
    });
    // Topics the caller may not DESCRIBE are left out.
    Ok(wanted
        .into_iter()
        .filter(|(topic, _)| s.broker.may_describe(&who.caller, Rt::Topic, topic))
        .map(|(topic, parts)| {
            let offsets = parts
                .into_iter()
                .map(|p| {
                    let off = u32::try_from(p)
                        .ok()
                        .and_then(|p| committed.get(&topic, p))
                        .map_or(-1, |o| o as i64);
                    (p, off)
                })
                .collect();
            (topic, offsets)
        })
        .collect())
}

/// Committed offsets (the Raft state is on every node: any node answers). v8+ asks for
/// several groups at once; v9 names the asking KIP-848 member, checked like a commit.
fn offset_fetch(
    s: &KafkaServer,
    who: &Who,
    req: Req,
    r: OffsetFetchRequest,
) -> OffsetFetchResponse {
    use kafka_protocol::messages::offset_fetch_response::{
        OffsetFetchResponseGroup, OffsetFetchResponsePartitions, OffsetFetchResponseTopics,
    };
    // Committed offsets are read where commits are applied first: a follower's copy of the
    // metadata lags (and a node stopping itself may hold a frozen one). The client asks
    // FindCoordinator again.
    if let Some(code) = not_coordinator(s, ApiKey::OffsetFetch) {
        return if req.version >= 8 {
            OffsetFetchResponse::default().with_groups(
                r.groups
                    .iter()
                    .map(|g| {
                        OffsetFetchResponseGroup::default()
                            .with_group_id(g.group_id.clone())
                            .with_error_code(code)
                    })
                    .collect(),
            )
        } else if req.version >= 2 {
            OffsetFetchResponse::default().with_error_code(code)
        } else {
            // Versions 0 and 1 carry errors per partition only.
            OffsetFetchResponse::default().with_topics(
                r.topics
                    .iter()
                    .flatten()
                    .map(|t| {
                        OffsetFetchResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partition_indexes
                                    .iter()
                                    .map(|p| {
                                        OffsetFetchResponsePartition::default()
                                            .with_partition_index(*p)
                                            .with_committed_offset(-1)
                                            .with_error_code(code)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
        };
    }
    if req.version >= 8 {
        let groups = r
            .groups
            .iter()
            .map(|g| {
                let group = g.group_id.0.to_string();
                let wanted = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (name(&t.name), t.partition_indexes.clone()))
                        .collect()
                });
                let checked = match &g.member_id {
                    Some(id) if s.groups.has_server_side_members(&group) => {
                        s.groups.check_member(&group, id, g.member_epoch)
                    }
                    _ => Ok(()),
                };
                let reply = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                match checked.and_then(|()| committed(s, who, &group, wanted)) {
                    Ok(topics) => reply.with_topics(
                        topics
                            .into_iter()
                            .map(|(topic, parts)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(topic_name(&topic))
                                    .with_partitions(
                                        parts
                                            .into_iter()
                                            .map(|(p, off)| {
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(p)
                                                    .with_committed_offset(off)
                                                    .with_committed_leader_epoch(-1)
                                                    .with_metadata(Some(StrBytes::from_static_str(
                                                        "",
                                                    )))
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    ),
                    Err(e) => {
                        let code = commit_code(&e);
                        s.count_error(ApiKey::OffsetFetch, code);
                        reply.with_error_code(code)
                    }
                }
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let group = r.group_id.0.to_string();
    let wanted = r.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (name(&t.name), t.partition_indexes.clone()))
            .collect()
    });
    match committed(s, who, &group, wanted) {
        Ok(topics) => OffsetFetchResponse::default().with_topics(
            topics
                .into_iter()
                .map(|(topic, parts)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(topic_name(&topic))
                        .with_partitions(
                            parts
                                .into_iter()
                                .map(|(p, off)| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(off)
                                        .with_metadata(Some(StrBytes::from_static_str("")))
                                })
                                .collect(),
                        )
                })
                .collect(),
        ),
        Err(e) => {
            let code = errors::group_code(&e);
            s.count_error(ApiKey::OffsetFetch, code);
            if req.version >= 2 {
                OffsetFetchResponse::default().with_error_code(code)
            } else {
                OffsetFetchResponse::default()
            }
        }
    }
}

async fn create_topics(s: &KafkaServer, who: &Who, r: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut results = Vec::new();
    for t in &r.topics {
        let topic = name(&t.name);
        let mut result = CreatableTopicResult::default().with_name(t.name.clone());
        let partitions = (t.num_partitions > 0).then_some(t.num_partitions as u32);
        let rf = (t.replication_factor > 0).then_some(t.replication_factor as u16);
        let code = if !t.assignments.is_empty() || !t.configs.is_empty() {
            // Manual replica assignment and topic configs at creation are not served here
            // (`collector topics create --config` sets configs).
            E::InvalidRequest.code()
        } else if r.validate_only {
            0
        } else {
            match s
                .broker
                .create_topic_from(
                    &who.caller,
                    api::CreateTopic {
                        name: topic.clone(),
                        partitions,
                        replication_factor: rf,
                        configs: api::TopicConfigs::default(),
                    },
                )
                .await
            {
                Ok(d) => {
                    let id = s
                        .broker
                        .controller
                        .metadata()
                        .topics
                        .get(&topic)
                        .map(|t| t.topic_id())
                        .unwrap_or_default();
                    result = result
                        .with_topic_id(id)
                        .with_num_partitions(d.partitions.len() as i32)
                        .with_replication_factor(d.replication_factor as i16);
                    0
                }
                Err(e) => {
                    log_error("CreateTopics", &topic, -1, &e);
                    errors::code(&e)
                }
            }
        };
        s.count_error(ApiKey::CreateTopics, code);
        results.push(result.with_error_code(code));
    }
    CreateTopicsResponse::default().with_topics(results)
}

async fn delete_topics(
    s: &KafkaServer,
    who: &Who,
    req: Req,
    r: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    // v6 names topics in `topics` (by name or id), older versions in `topic_names`.
    let names: Vec<Result<TopicName, uuid::Uuid>> = if req.version >= 6 {
        let meta = s.broker.controller.metadata();
        r.topics
            .iter()
            .map(|t| match &t.name {
                Some(n) => Ok(n.clone()),
                None => meta
                    .topic_by_id(t.topic_id)
                    .map(|m| topic_name(&m.name))
                    .ok_or(t.topic_id),
            })
            .collect()
    } else {
        r.topic_names.iter().cloned().map(Ok).collect()
    };
    let mut results = Vec::new();
    for n in names {
        let n = match n {
            Ok(n) => n,
            Err(id) => {
                s.count_error(ApiKey::DeleteTopics, E::UnknownTopicId.code());
                results.push(
                    DeletableTopicResult::default()
                        .with_topic_id(id)
                        .with_error_code(E::UnknownTopicId.code()),
                );
                continue;
            }
        };
        let topic = name(&n);
        let code = match s.broker.delete_topic(&who.caller, &topic).await {
            Ok(()) => 0,
            Err(e) => {
                log_error("DeleteTopics", &topic, -1, &e);
                errors::code(&e)
            }
        };
        s.count_error(ApiKey::DeleteTopics, code);
        results.push(
            DeletableTopicResult::default()
                .with_name(Some(n))
                .with_error_code(code),
        );
    }
    DeleteTopicsResponse::default().with_responses(results)
}

fn not_coordinator(s: &KafkaServer, api: ApiKey) -> Option<i16> {
    if s.groups.is_coordinator() {
        return None;
    }
    s.count_error(api, E::NotCoordinator.code());
    Some(E::NotCoordinator.code())
}

/// A classic-protocol join: waits for the round to complete (the connection's next request
/// waits with it, as on a Kafka broker).
async fn join_group(
    s: &KafkaServer,
    req: Req,
    who: &Who,
    r: JoinGroupRequest,
) -> JoinGroupResponse {
    let blank = || {
        JoinGroupResponse::default()
            .with_generation_id(-1)
            .with_protocol_name(Some(StrBytes::from_static_str("")))
            .with_leader(StrBytes::from_static_str(""))
            .with_member_id(r.member_id.clone())
    };
    if let Some(code) = not_coordinator(s, ApiKey::JoinGroup) {
        return blank().with_error_code(code);
    }
    let group = r.group_id.0.to_string();
    if let Some(code) = group_denied(s, who, Op::Read, &group) {
        s.count_error(ApiKey::JoinGroup, code);
        return blank().with_error_code(code);
    }
    if let Err(e) = crate::groups::validate_group(&group) {
        let code = errors::group_code(&e);
        s.count_error(ApiKey::JoinGroup, code);
        return blank().with_error_code(code);
    }
    if s.groups.has_server_side_members(&group) {
        // `collector tail` members hold this group: one type at a time.
        let code = E::InconsistentGroupProtocol.code();
        s.count_error(ApiKey::JoinGroup, code);
        return blank().with_error_code(code);
    }
    let session = Duration::from_millis(r.session_timeout_ms.max(1) as u64);
    let rebalance = if req.version >= 1 {
        Duration::from_millis(r.rebalance_timeout_ms.max(1) as u64)
    } else {
        session
    };
    let join = crate::groups::classic::JoinRequest {
        member_id: r.member_id.to_string(),
        client_id: who.client_id.clone(),
        protocol_type: r.protocol_type.to_string(),
        protocols: r
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        session,
        rebalance,
        require_known_member_id: req.version >= 4,
    };
    match s.groups.classic.join(&group, join).await {
        Ok(crate::groups::classic::JoinOutcome::NeedsMemberId(id)) => {
            s.count_error(ApiKey::JoinGroup, E::MemberIdRequired.code());
            blank()
                .with_error_code(E::MemberIdRequired.code())
                .with_member_id(StrBytes::from_string(id))
        }
        Ok(crate::groups::classic::JoinOutcome::Joined(j)) => {
            let mut reply = JoinGroupResponse::default()
                .with_generation_id(j.generation)
                .with_protocol_name(Some(StrBytes::from_string(j.protocol.unwrap_or_default())))
                .with_leader(StrBytes::from_string(j.leader))
                .with_member_id(StrBytes::from_string(j.member_id))
                .with_members(
                    j.members
                        .into_iter()
                        .map(|(id, meta)| {
                            JoinGroupResponseMember::default()
                                .with_member_id(StrBytes::from_string(id))
                                .with_metadata(meta)
                        })
                        .collect(),
                );
            if req.version >= 7 {
                reply = reply.with_protocol_type(Some(StrBytes::from_string(j.protocol_type)));
            }
            reply
        }
        Err(e) => {
            let code = errors::classic_code(e);
            s.count_error(ApiKey::JoinGroup, code);
            blank().with_error_code(code)
        }
    }
}

async fn sync_group(s: &KafkaServer, who: &Who, r: SyncGroupRequest) -> SyncGroupResponse {
    if let Some(code) = not_coordinator(s, ApiKey::SyncGroup) {
        return SyncGroupResponse::default().with_error_code(code);
    }
    let group = r.group_id.0.to_string();
    if let Some(code) = group_denied(s, who, Op::Read, &group) {
        return SyncGroupResponse::default().with_error_code(code);
    }
    let assignments = r
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.clone()))
        .collect();
    match s
        .groups
        .classic
        .sync(&group, &r.member_id, r.generation_id, assignments)
        .await
    {
        Ok(assignment) => SyncGroupResponse::default()
            .with_protocol_type(r.protocol_type.clone())
            .with_protocol_name(r.protocol_name.clone())
            .with_assignment(assignment),
        Err(e) => {
            let code = errors::classic_code(e);
            s.count_error(ApiKey::SyncGroup, code);
            SyncGroupResponse::default().with_error_code(code)
        }
    }
}

fn heartbeat(s: &KafkaServer, who: &Who, r: HeartbeatRequest) -> HeartbeatResponse {
    if let Some(code) = not_coordinator(s, ApiKey::Heartbeat) {
        return HeartbeatResponse::default().with_error_code(code);
    }
    let group = r.group_id.0.to_string();
    if let Some(code) = group_denied(s, who, Op::Read, &group) {
        return HeartbeatResponse::default().with_error_code(code);
    }
    let code = match s
        .groups
        .classic
        .heartbeat(&group, &r.member_id, r.generation_id)
    {
        Ok(()) => 0,
        Err(e) => errors::classic_code(e),
    };
    s.count_error(ApiKey::Heartbeat, code);
    HeartbeatResponse::default().with_error_code(code)
}

fn leave_group(s: &KafkaServer, who: &Who, req: Req, r: LeaveGroupRequest) -> LeaveGroupResponse {
    if let Some(code) = not_coordinator(s, ApiKey::LeaveGroup) {
        return LeaveGroupResponse::default().with_error_code(code);
    }
    let group = r.group_id.0.to_string();
    if let Some(code) = group_denied(s, who, Op::Read, &group) {
        return LeaveGroupResponse::default().with_error_code(code);
    }
    let ids: Vec<String> = if req.version >= 3 {
        r.members.iter().map(|m| m.member_id.to_string()).collect()
    } else {
        vec![r.member_id.to_string()]
    };
    let results = s.groups.classic.leave(&group, &ids);
    if req.version >= 3 {
        let members = ids
            .iter()
            .zip(&results)
            .map(|(id, res)| {
                MemberResponse::default()
                    .with_member_id(StrBytes::from_string(id.clone()))
                    .with_error_code(res.map_or_else(errors::classic_code, |()| 0))
            })
            .collect();
        LeaveGroupResponse::default().with_members(members)
    } else {
        let code = results
            .first()
            .copied()
            .unwrap_or(Ok(()))
            .map_or_else(errors::classic_code, |()| 0);
        s.count_error(ApiKey::LeaveGroup, code);
        LeaveGroupResponse::default().with_error_code(code)
    }
}

/// Where the leader's log ends for each asked epoch (KIP-279): clients compare it with
/// what they fetched to detect a log truncated by a leader change.
async fn offset_for_leader_epoch(
    s: &KafkaServer,
    who: &Who,
    r: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut topics = Vec::new();
    for t in &r.topics {
        let topic = name(&t.topic);
        let mut partitions = Vec::new();
        for p in &t.partitions {
            let base = EpochEndOffset::default()
                .with_partition(p.partition)
                .with_leader_epoch(-1)
                .with_end_offset(-1);
            let result = match u32::try_from(p.partition) {
                Err(_) => Err(E::UnknownTopicOrPartition.code()),
                Ok(partition) => {
                    let current = match p.current_leader_epoch {
                        -1 => Ok(()),
                        asked => s
                            .broker
                            .list_offset(&who.caller, &topic, partition, OffsetSpec::Latest)
                            .await
                            .and_then(|(_, _, epoch)| {
                                if asked == epoch {
                                    Ok(())
                                } else {
                                    Err(BrokerError::LeaderEpoch {
                                        topic: topic.clone(),
                                        partition,
                                        asked,
                                        current: epoch,
                                    })
                                }
                            }),
                    };
                    match current {
                        Err(e) => Err(errors::code(&e)),
                        Ok(()) => s
                            .broker
                            .epoch_end(&api::EpochEndQuery {
                                topic: topic.clone(),
                                partition,
                                epoch: p.leader_epoch,
                            })
                            .await
                            .map_err(|e| errors::code(&e)),
                    }
                }
            };
            let pr = match result {
                Ok(end) => base
                    .with_leader_epoch(end.epoch)
                    .with_end_offset(end.end_offset as i64),
                Err(code) => {
                    s.count_error(ApiKey::OffsetForLeaderEpoch, code);
                    base.with_error_code(code)
                }
            };
            partitions.push(pr);
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(topic_name(&topic))
                .with_partitions(partitions),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

/// The groups this node coordinates (on other nodes: none, as each Kafka broker lists
/// only its own), filtered by state and (v5) type.
fn list_groups(s: &KafkaServer, who: &Who, r: ListGroupsRequest) -> ListGroupsResponse {
    if !s.groups.is_coordinator() {
        return ListGroupsResponse::default();
    }
    let matches = |filter: &[StrBytes], value: &str| {
        filter.is_empty() || filter.iter().any(|f| f.eq_ignore_ascii_case(value))
    };
    let groups = s
        .groups
        .list()
        .into_iter()
        .filter(|g| s.broker.may_describe(&who.caller, Rt::Group, &g.group))
        .filter_map(|g| {
            let kafka = s.groups.classic.view(&g.group);
            let (protocol_type, state, kind) = match &kafka {
                Some(v) if !v.members.is_empty() => {
                    (v.protocol_type.clone(), v.state.to_owned(), "classic")
                }
                // Server-side members: KIP-848 consumers and `collector tail`.
                _ if g.members > 0 => (
                    "consumer".to_owned(),
                    consumer_group_state(&g.state).to_owned(),
                    "consumer",
                ),
                _ => (String::new(), "Empty".to_owned(), "classic"),
            };
            (matches(&r.states_filter, &state) && matches(&r.types_filter, kind)).then(|| {
                ListedGroup::default()
                    .with_group_id(GroupId(StrBytes::from_string(g.group)))
                    .with_protocol_type(StrBytes::from_string(protocol_type))
                    .with_group_state(StrBytes::from_string(state))
                    .with_group_type(StrBytes::from_static_str(kind))
            })
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

/// A server-side group's state under Kafka's names for consumer groups.
fn consumer_group_state(state: &str) -> &'static str {
    match state {
        "stable" => "Stable",
        "reconciling" => "Reconciling",
        _ => "Empty",
    }
}

fn describe_groups(
    s: &KafkaServer,
    who: &Who,
    req: Req,
    r: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let coordinator = s.groups.is_coordinator();
    let groups = r
        .groups
        .iter()
        .map(|id| {
            let base = DescribedGroup::default().with_group_id(id.clone());
            if !coordinator {
                return base.with_error_code(E::NotCoordinator.code());
            }
            if let Some(code) = group_denied(s, who, Op::Describe, &id.0) {
                return base.with_error_code(code);
            }
            if s.groups.has_server_side_members(&id.0) {
                // As Kafka 4.0: a consumer (KIP-848) group is described by
                // ConsumerGroupDescribe.
                let mut g = base.with_error_code(E::GroupIdNotFound.code());
                if req.version >= 6 {
                    g = g.with_error_message(Some(StrBytes::from_string(format!(
                        "group {} is not a classic group",
                        id.0
                    ))));
                }
                return g;
            }
            match s.groups.classic.view(&id.0) {
                Some(v) => base
                    .with_group_state(StrBytes::from_static_str(v.state))
                    .with_protocol_type(StrBytes::from_string(v.protocol_type))
                    .with_protocol_data(StrBytes::from_string(v.protocol))
                    .with_members(
                        v.members
                            .into_iter()
                            .map(|m| {
                                DescribedGroupMember::default()
                                    .with_member_id(StrBytes::from_string(m.member_id))
                                    .with_client_id(StrBytes::from_string(m.client_id))
                                    .with_member_metadata(m.metadata)
                                    .with_member_assignment(m.assignment)
                            })
                            .collect(),
                    ),
                // A group only known by its committed offsets (or by `collector tail`
                // members, which Kafka's classic view cannot show): Empty; none: Dead.
                None if s.groups.offsets(&id.0).is_ok_and(|o| !o.offsets.is_empty()) => {
                    base.with_group_state(StrBytes::from_static_str("Empty"))
                }
                None => base.with_group_state(StrBytes::from_static_str("Dead")),
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

/// The brokers (endpoint type 1); v2 may include fenced ones. Controllers (type 2) are
/// not listed apart: every node runs both roles.
fn describe_cluster(
    s: &KafkaServer,
    who: &Who,
    req: Req,
    r: DescribeClusterRequest,
) -> DescribeClusterResponse {
    if req.version >= 1 && r.endpoint_type != 1 {
        s.count_error(ApiKey::DescribeCluster, E::UnsupportedEndpointType.code());
        return DescribeClusterResponse::default()
            .with_error_code(E::UnsupportedEndpointType.code())
            .with_endpoint_type(r.endpoint_type);
    }
    if let Err(e) = s.broker.authorize(
        &who.caller,
        Op::Describe,
        Rt::Cluster,
        api::acls::CLUSTER_RESOURCE,
    ) {
        return DescribeClusterResponse::default().with_error_code(errors::code(&e));
    }
    let fenced_too = req.version >= 2 && r.include_fenced_brokers;
    let meta = s.broker.controller.metadata();
    let brokers = meta
        .brokers
        .values()
        .filter(|b| fenced_too || !b.fenced)
        .filter_map(|b| {
            let (host, port) = host_port(b.kafka_address.as_deref()?)?;
            Some(
                DescribeClusterBroker::default()
                    .with_broker_id(broker_id(b.id))
                    .with_host(StrBytes::from_string(host))
                    .with_port(port)
                    .with_is_fenced(b.fenced && req.version >= 2),
            )
        })
        .collect();
    DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_static_str(CLUSTER_ID))
        .with_controller_id(s.broker.controller.leader().map_or(BrokerId(-1), broker_id))
        .with_brokers(brokers)
}

/// Topic configs under Kafka's names (read-only; `collector topics` changes them).
fn describe_configs(
    s: &KafkaServer,
    who: &Who,
    r: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    const TOPIC: i8 = 2;
    const DYNAMIC_TOPIC_CONFIG: i8 = 1;
    const DEFAULT_CONFIG: i8 = 5;
    let meta = s.broker.controller.metadata();
    let results = r
        .resources
        .iter()
        .map(|res| {
            let base = DescribeConfigsResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            if res.resource_type != TOPIC {
                // Broker configs: nothing to show under Kafka's names.
                return base;
            }
            if let Err(e) = s.broker.authorize(
                &who.caller,
                Op::DescribeConfigs,
                Rt::Topic,
                res.resource_name.as_str(),
            ) {
                return base.with_error_code(errors::code(&e));
            }
            let Some(t) = meta.topics.get(res.resource_name.as_str()) else {
                return base.with_error_code(E::UnknownTopicOrPartition.code());
            };
            let eff = s.broker.log_config(&t.configs);
            let c = &t.configs;
            let min_isr = s.broker.min_insync(t) as i64;
            let entries: Vec<(&str, String, bool)> = vec![
                (
                    "retention.ms",
                    eff.retention_ms.unwrap_or(-1).to_string(),
                    c.retention_ms.is_some(),
                ),
                (
                    "retention.bytes",
                    eff.retention_bytes.map_or(-1, |b| b as i64).to_string(),
                    c.retention_bytes.is_some(),
                ),
                (
                    "segment.bytes",
                    eff.segment_bytes.to_string(),
                    c.segment_bytes.is_some(),
                ),
                (
                    "segment.ms",
                    eff.segment_ms.to_string(),
                    c.segment_ms.is_some(),
                ),
                (
                    "min.insync.replicas",
                    min_isr.to_string(),
                    c.min_insync_replicas.is_some(),
                ),
                ("cleanup.policy", "delete".to_owned(), false),
            ];
            let wanted = res.configuration_keys.as_ref();
            let configs = entries
                .into_iter()
                .filter(|(k, _, _)| wanted.is_none_or(|w| w.iter().any(|x| x.as_str() == *k)))
                .map(|(k, v, set)| {
                    DescribeConfigsResourceResult::default()
                        .with_name(StrBytes::from_static_str(k))
                        .with_value(Some(StrBytes::from_string(v)))
                        .with_read_only(true)
                        .with_config_source(if set {
                            DYNAMIC_TOPIC_CONFIG
                        } else {
                            DEFAULT_CONFIG
                        })
                })
                .collect();
            base.with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// Deletes groups' committed offsets (refused with `NON_EMPTY_GROUP` while they have
/// members).
async fn delete_groups(s: &KafkaServer, who: &Who, r: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::new();
    for id in &r.groups_names {
        let code = if let Some(code) = group_denied(s, who, Op::Delete, &id.0) {
            code
        } else if !s.groups.is_coordinator() {
            E::NotCoordinator.code()
        } else {
            match s.groups.delete_group(&id.0).await {
                Ok(()) => 0,
                Err(e) => errors::group_code(&e),
            }
        };
        s.count_error(ApiKey::DeleteGroups, code);
        results.push(
            DeletableGroupResult::default()
                .with_group_id(id.clone())
                .with_error_code(code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}

/// KIP-664: each producer's last durable sequence per partition this broker leads.
async fn describe_producers(
    s: &KafkaServer,
    who: &Who,
    r: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let mut topics = Vec::new();
    for t in &r.topics {
        let topic = name(&t.name);
        let mut partitions = Vec::new();
        for &index in &t.partition_indexes {
            let base = PartitionResponse::default().with_partition_index(index);
            let denied = match s.broker.authorize(&who.caller, Op::Read, Rt::Topic, &topic) {
                Err(BrokerError::Forbidden(d)) => Some(d),
                _ => None,
            };
            let part = match (u32::try_from(index), denied) {
                (_, Some(d)) => Err(BrokerError::Forbidden(d)),
                (Ok(p), None) => s.broker.leader_partition(&topic, p, false).await,
                (Err(_), None) => Err(BrokerError::InvalidRequest(format!("partition {index}"))),
            };
            let pr = match part {
                Ok((part, _)) => base.with_active_producers(
                    part.active_producers()
                        .into_iter()
                        .map(|(id, epoch, seq, ts)| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(id))
                                .with_producer_epoch(i32::from(epoch))
                                .with_last_sequence(seq)
                                .with_last_timestamp(ts)
                                .with_coordinator_epoch(-1)
                                .with_current_txn_start_offset(-1)
                        })
                        .collect(),
                ),
                Err(e) => {
                    let code = errors::code(&e);
                    s.count_error(ApiKey::DescribeProducers, code);
                    base.with_error_code(code)
                }
            };
            partitions.push(pr);
        }
        topics.push(
            TopicResponse::default()
                .with_name(topic_name(&topic))
                .with_partitions(partitions),
        );
    }
    DescribeProducersResponse::default().with_topics(topics)
}

/// Grows topics (replica assignments chosen by the controller; explicit ones are refused).
async fn create_partitions(
    s: &KafkaServer,
    who: &Who,
    r: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::new();
    for t in &r.topics {
        let topic = name(&t.name);
        let code = if t.assignments.is_some() {
            E::InvalidReplicaAssignment.code()
        } else if t.count <= 0 {
            E::InvalidPartitions.code()
        } else if r.validate_only {
            0
        } else {
            match s
                .broker
                .add_partitions(&who.caller, &topic, t.count as u32)
                .await
            {
                Ok(()) => 0,
                Err(BrokerError::Metadata(crate::controller::state::MetadataError::Invalid(m))) => {
                    tracing::info!(topic, reason = %m, "Kafka CreatePartitions refused");
                    E::InvalidPartitions.code()
                }
                Err(e) => {
                    log_error("CreatePartitions", &topic, -1, &e);
                    errors::code(&e)
                }
            }
        };
        s.count_error(ApiKey::CreatePartitions, code);
        results.push(
            CreatePartitionsTopicResult::default()
                .with_name(t.name.clone())
                .with_error_code(code),
        );
    }
    CreatePartitionsResponse::default().with_results(results)
}
