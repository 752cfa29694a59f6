//! Route handlers: parse the request into `api` types, call the broker or group service,
//! and answer with its `api` reply or its error mapped to a status and envelope
//! ([`super::error`]). No logic of their own beyond that translation.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::error::{ApiError, ErrorTag};
use crate::auth::Caller;
use crate::broker::{Broker, BrokerError};
use crate::groups::GroupService;
use crate::metrics::Metrics;

#[derive(Debug)]
pub struct AppState {
    pub broker: Arc<Broker>,
    pub groups: Arc<GroupService>,
    pub metrics: Arc<Metrics>,
    /// Request-body bytes held at once, across all requests.
    pub inflight_bytes: Arc<Semaphore>,
    /// Set once this broker is registered with the controller.
    pub registered: Arc<AtomicBool>,
    /// Failed authentications are logged at most this often.
    pub auth_failures_log: super::listener::RateLimitedLog,
}

type S = State<Arc<AppState>>;

/// A request body of at most `max_request_bytes` (already received, and counted against
/// `max_in_flight_bytes`, by `body::receive`). A declared length over the limit is refused
/// before reading anything.
async fn read_body(s: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let max = s.broker.config.limits.max_request_bytes;
    let too_large = |n: String| {
        ApiError::new(
            api::ErrorCode::RequestTooLarge,
            format!("request body of {n} bytes exceeds max_request_bytes {max}"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared
        && n > max
    {
        return Err(too_large(n.to_string()));
    }
    let bytes = axum::body::to_bytes(body, max as usize)
        .await
        .map_err(|e| {
            let limit = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if limit {
                too_large(format!("more than {max}"))
            } else {
                ApiError::new(
                    api::ErrorCode::BadBody,
                    format!("reading the request body failed: {e}"),
                )
            }
        })?;
    Ok(bytes)
}

/// A JSON body of type `T`, read within the request limits.
async fn json_body<T: serde::de::DeserializeOwned>(
    s: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    let bytes = read_body(s, headers, body).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(api::ErrorCode::InvalidJson, e.to_string()))
}

fn acks(q: &api::ProduceQuery) -> Result<api::Acks, ApiError> {
    q.acks()
        .map_err(|e| ApiError::new(api::ErrorCode::InvalidAcks, e))
}

fn forwarded(headers: &HeaderMap) -> bool {
    headers.contains_key(api::FORWARDED_HEADER)
}

/// A reply of batches, with the partition's offsets in headers.
fn batches_reply(bytes: Vec<u8>, hw: u64, log_start: Option<u64>) -> Response {
    let mut resp = Response::new(Body::from(bytes));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(api::BATCHES_CONTENT_TYPE),
    );
    h.insert(api::HW_HEADER, HeaderValue::from(hw));
    if let Some(start) = log_start {
        h.insert(api::LOG_START_HEADER, HeaderValue::from(start));
    }
    resp
}

pub async fn health(State(s): S) -> Response {
    let h = s.broker.health(&s.registered);
    if h.status == "starting" {
        let mut resp = (StatusCode::SERVICE_UNAVAILABLE, Json(h)).into_response();
        resp.extensions_mut().insert(ErrorTag("starting"));
        resp
    } else {
        Json(h).into_response()
    }
}

pub async fn metrics(State(s): S, Extension(caller): Extension<Caller>) -> Response {
    // It names every topic and group: with ACLs, DESCRIBE on the cluster.
    if let Err(e) = s.broker.authorize(
        &caller,
        api::acls::Operation::Describe,
        api::acls::ResourceType::Cluster,
        api::acls::CLUSTER_RESOURCE,
    ) {
        return ApiError::from(e).into_response();
    }
    s.metrics.refresh(&s.broker, &s.groups);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

pub async fn metadata(State(s): S, Extension(caller): Extension<Caller>) -> Json<api::Metadata> {
    Json(s.broker.metadata_view(&caller))
}

pub async fn cluster(
    State(s): S,
    Extension(caller): Extension<Caller>,
) -> Result<Json<api::ClusterStatus>, ApiError> {
    s.broker
        .cluster_status(&caller)
        .map(Json)
        .map_err(ApiError::from)
}

pub async fn list_topics(
    State(s): S,
    Extension(caller): Extension<Caller>,
) -> Json<api::TopicList> {
    Json(s.broker.topic_list(&caller))
}

pub async fn create_topic(
    State(s): S,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req: api::CreateTopic = json_body(&s, &headers, body).await?;
    let t = s.broker.create_topic_from(&caller, req).await?;
    Ok((StatusCode::CREATED, Json(t)).into_response())
}

pub async fn describe_topic(
    State(s): S,
    Extension(caller): Extension<Caller>,
    Path(topic): Path<String>,
) -> Result<Json<api::TopicDescription>, ApiError> {
    Ok(Json(s.broker.describe_topic(&caller, &topic)?))
}

pub async fn delete_topic(
    State(s): S,
    Extension(caller): Extension<Caller>,
    Path(topic): Path<String>,
) -> Result<StatusCode, ApiError> {
    shared::names::validate_topic(&topic)
        .map_err(|e| ApiError::from(BrokerError::InvalidTopic(e.to_string())))?;
    s.broker.delete_topic(&caller, &topic).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn allocate_producer(
    State(s): S,
    Extension(caller): Extension<Caller>,
) -> Result<Json<api::ProducerId>, ApiError> {
    let producer_id = s.broker.allocate_producer_id(&caller).await?;
    Ok(Json(api::ProducerId {
        producer_id,
        producer_epoch: 0,
    }))
}

pub async fn producer_state(
    State(s): S,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
) -> Result<Json<api::ProducerState>, ApiError> {
    Ok(Json(s.broker.producer_state(&caller, id).await?))
}

pub async fn produce(
    State(s): S,
    Extension(caller): Extension<Caller>,
    Path((topic, partition)): Path<(String, u32)>,
    Query(q): Query<api::ProduceQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<api::ProduceReply>, ApiError> {
    shared::names::validate_topic(&topic)
        .map_err(|e| ApiError::from(BrokerError::InvalidTopic(e.to_string())))?;
    let acks = acks(&q)?;
    let bytes = read_body(&s, &headers, body).await?;
    // Zero-copy when the body buffer is not shared.
    let batches = s
        .broker
        .produce(&caller, &topic, partition, Vec::from(bytes), acks)
        .await?;
    Ok(Json(api::ProduceReply { batches }))
}

pub async fn fetch(
    State(s): S,
    Extension(caller): Extension<Caller>,
    Path((topic, partition)): Path<(String, u32)>,
    Query(q): Query<api::FetchQuery>,
) -> Result<Response, ApiError> {
    let r = s.broker.fetch(&caller, &topic, partition, &q).await?;
    Ok(batches_reply(
        r.bytes,
        r.high_watermark,
        Some(r.log_start_offset),
    ))
}

pub async fn produce_json(
    State(s): S,
    Extension(caller): Extension<Caller>,
    Path(topic): Path<String>,
    Query(q): Query<api::ProduceQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<api::JsonProduceReply>, ApiError> {
    shared::names::validate_topic(&topic)
        .map_err(|e| ApiError::from(BrokerError::InvalidTopic(e.to_string())))?;
    let acks = acks(&q)?;
    let req: api::JsonProduce = json_body(&s, &headers, body).await?;
    let reply = s
        .broker
        .produce_json(&caller, &topic, req, acks, forwarded(&headers))
        .await?;
    Ok(Json(reply))
}

pub async fn fetch_json(
    State(s): S,
    Extension(caller): Extension<Caller>,
    Path((topic, partition)): Path<(String, u32)>,
    Query(q): Query<api::JsonFetchQuery>,
) -> Result<Json<api::JsonFetchReply>, ApiError> {
    Ok(Json(
        s.broker
            .fetch_records(&caller, &topic, partition, &q)
            .await?,
    ))
}

// ---- ACLs ----

pub async fn list_acls(
    State(s): S,
    Extension(caller): Extension<Caller>,
    Query(filter): Query<api::acls::AclFilter>,
) -> Result<Json<api::acls::AclList>, ApiError> {
    Ok(Json(s.broker.acls(&caller, &filter)?))
}

pub async fn create_acls(
    State(s): S,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req: api::acls::CreateAcls = json_body(&s, &headers, body).await?;
    let created = s.broker.create_acls(&caller, req.acls).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

pub async fn delete_acls(
    State(s): S,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<api::acls::AclList>, ApiError> {
    let filter: api::acls::AclFilter = json_body(&s, &headers, body).await?;
    Ok(Json(s.broker.delete_acls(&caller, filter).await?))
}

// ---- consumer groups (any node: the service relays to the coordinator) ----

pub async fn list_groups(
    State(s): S,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Result<Json<api::GroupList>, ApiError> {
    Ok(Json(
        s.groups.list_routed(&caller, forwarded(&headers)).await?,
    ))
}

pub async fn describe_group(
    State(s): S,
    Extension(caller): Extension<Caller>,
    Path(group): Path<String>,
    headers: HeaderMap,
) -> Result<Json<api::GroupView>, ApiError> {
    Ok(Json(
        s.groups
            .describe_routed(&caller, &group, forwarded(&headers))
            .await?,
    ))
}

pub async fn heartbeat(
    State(s): S,
    Extension(caller): Extension<Caller>,
    Path(group): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<api::HeartbeatReply>, ApiError> {
    let req: api::HeartbeatRequest = json_body(&s, &headers, body).await?;
    Ok(Json(
        s.groups
            .heartbeat_routed(&caller, &group, &req, forwarded(&headers))
            .await?,
    ))
}

pub async fn commit_offsets(
    State(s): S,
    Extension(caller): Extension<Caller>,
    Path(group): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<api::CommitReply>, ApiError> {
    let req: api::CommitRequest = json_body(&s, &headers, body).await?;
    Ok(Json(
        s.groups
            .commit_routed(&caller, &group, req, forwarded(&headers))
            .await?,
    ))
}

pub async fn group_offsets(
    State(s): S,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(group): Path<String>,
) -> Result<Json<api::GroupOffsetsReply>, ApiError> {
    Ok(Json(
        s.groups
            .offsets_routed(&caller, &group, forwarded(&headers))
            .await?,
    ))
}

pub async fn reset_offsets(
    State(s): S,
    Extension(caller): Extension<Caller>,
    Path(group): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<api::GroupOffsetsReply>, ApiError> {
    let req: api::ResetRequest = json_body(&s, &headers, body).await?;
    Ok(Json(
        s.groups
            .reset_routed(&caller, &group, req, forwarded(&headers))
            .await?,
    ))
}

// ---- between brokers ----

pub async fn partition_offsets(
    State(s): S,
    Query(q): Query<api::PartitionQuery>,
) -> Result<Json<api::PartitionOffsets>, ApiError> {
    Ok(Json(s.broker.leader_offsets(&q.topic, q.partition).await?))
}

pub async fn replica_fetch(
    State(s): S,
    Json(q): Json<api::SessionFetchRequest>,
) -> Result<Response, ApiError> {
    let r = s.broker.session_fetch(&q).await?;
    let mut header = api::SessionFetchReply {
        session_id: r.session_id,
        partitions: Vec::with_capacity(r.parts.len()),
    };
    let mut data = Vec::with_capacity(r.parts.len());
    for p in r.parts {
        let mut entry = api::SessionPartitionReply {
            topic: p.tp.topic,
            partition: p.tp.partition,
            error: None,
            high_watermark: 0,
            log_start_offset: 0,
            bytes: 0,
        };
        match p.result {
            Ok((hw, start, bytes)) => {
                entry.high_watermark = hw;
                entry.log_start_offset = start;
                entry.bytes = bytes.len() as u64;
                data.push(bytes);
            }
            Err(e) => entry.error = Some(ApiError::from(e).body.error),
        }
        header.partitions.push(entry);
    }
    let body = client::SessionFetch::encode(&header, &data)
        .map_err(|e| ApiError::new(api::ErrorCode::Internal, e.to_string()))?;
    let mut resp = Response::new(Body::from(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(resp)
}

pub async fn replica_epoch_ends(
    State(s): S,
    Json(q): Json<api::EpochEndsRequest>,
) -> Result<Json<api::EpochEndsReply>, ApiError> {
    let mut out = Vec::with_capacity(q.partitions.len());
    for p in &q.partitions {
        out.push(match s.broker.epoch_end(p).await {
            Ok(end) => api::EpochEndResult {
                error: None,
                end: Some(end),
            },
            Err(e) => api::EpochEndResult {
                error: Some(ApiError::from(e).body.error),
                end: None,
            },
        });
    }
    Ok(Json(api::EpochEndsReply { partitions: out }))
}

pub async fn replica_checksum(
    State(s): S,
    Query(q): Query<api::ChecksumQuery>,
) -> Result<Json<api::Checksum>, ApiError> {
    Ok(Json(s.broker.checksum(&q).await?))
}
