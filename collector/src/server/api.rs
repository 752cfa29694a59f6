//! Route handlers: translate HTTP and JSON to broker calls and back. The only module that
//! knows the wire encoding of requests.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::{Value, json};
use shared::{
    BatchBuilder, BatchEncoder, BatchIter, BatchLimits, Compression, DecodedRecords, ProducerStamp,
};
use tokio::sync::Semaphore;

use super::error::ApiError;
use crate::broker::{Acks, BatchAck, Broker, BrokerError, PartitionRef};
use crate::controller::state::{GroupOffsets, TopicConfigs};
use crate::groups::{CommitRequest, GroupService, HeartbeatReply, HeartbeatRequest, ResetTo};
use crate::metrics::Metrics;
use crate::storage::ValidatedBatches;
use crate::storage::manager::TopicPartition;

pub const BATCHES_CONTENT_TYPE: &str = "application/vnd.tributary.batches";
pub const HW_HEADER: &str = "tributary-high-watermark";
pub const LOG_START_HEADER: &str = "tributary-log-start-offset";

/// Fetch size when the request names none.
const FETCH_BYTES_DEFAULT: u64 = 1 << 20;
/// JSON fetch record count when the request names none, and its ceiling.
const JSON_FETCH_LIMIT_DEFAULT: usize = 100;
const JSON_FETCH_LIMIT_MAX: usize = 10_000;

#[derive(Debug)]
pub struct AppState {
    pub broker: Arc<Broker>,
    /// Forwards group requests to the active controller.
    pub http: reqwest::Client,
    pub groups: Arc<GroupService>,
    pub metrics: Arc<Metrics>,
    /// Request-body bytes held at once, across all requests.
    pub inflight_bytes: Arc<Semaphore>,
    /// Spreads keyless JSON produces over partitions.
    pub spread: AtomicU32,
    /// Set once this broker is registered with the controller.
    pub registered: Arc<std::sync::atomic::AtomicBool>,
}

type S = State<Arc<AppState>>;

fn check_topic(topic: &str) -> Result<(), ApiError> {
    shared::names::validate_topic(topic)
        .map_err(|e| ApiError::bad_request("invalid_topic", e.to_string()))
}

fn parse_acks(q: &BTreeMap<String, String>) -> Result<Acks, ApiError> {
    q.get("acks")
        .map_or(Ok(Acks::All), |a| a.parse())
        .map_err(|e: String| ApiError::bad_request("invalid_acks", e))
}

/// Reads a request body of at most `max_request_bytes`, holding in-flight-byte permits for
/// it. A declared length over the limit is refused before reading anything.
async fn read_body(
    s: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Bytes, tokio::sync::OwnedSemaphorePermit), ApiError> {
    let max = s.broker.config.limits.max_request_bytes;
    let too_large = |n: String| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
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
    let permits = declared.unwrap_or(max).clamp(1, u64::from(u32::MAX)) as u32;
    let permit = s
        .inflight_bytes
        .clone()
        .acquire_many_owned(permits)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is stopping",
            )
        })?;
    let bytes = axum::body::to_bytes(body, max as usize)
        .await
        .map_err(|e| {
            let limit = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if limit {
                too_large(format!("more than {max}"))
            } else {
                ApiError::bad_request("bad_body", format!("reading the request body failed: {e}"))
            }
        })?;
    Ok((bytes, permit))
}

pub async fn health(State(s): S) -> Response {
    let offline = s
        .broker
        .logs
        .dirs()
        .iter()
        .filter(|d| d.is_offline())
        .count();
    let registered = s.registered.load(Ordering::SeqCst);
    let status = if !registered {
        "starting"
    } else if offline == 0 {
        "ok"
    } else {
        "degraded"
    };
    let body = Json(json!({
        "status": status,
        "node_id": s.broker.config.node_id,
        "data_dirs_offline": offline,
        "controller_leader": s.broker.controller.leader(),
    }));
    if registered {
        body.into_response()
    } else {
        let mut resp = (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
        resp.extensions_mut()
            .insert(super::error::ErrorCode("starting"));
        resp
    }
}

pub async fn metrics(State(s): S) -> Response {
    let parts = s.broker.logs.partitions();
    s.metrics.partitions.set(parts.len() as i64);
    let mut bytes = 0u64;
    for (tp, _) in &parts {
        if let Some(log) = s.broker.logs.get(tp) {
            bytes += log.lock().map(|l| l.size_bytes()).unwrap_or(0);
        }
    }
    s.metrics.log_bytes.set(bytes as i64);
    let producers: usize = s
        .broker
        .open_partitions()
        .iter()
        .map(|p| p.producer_count())
        .sum();
    s.metrics.producers.set(producers as i64);
    let offline = s
        .broker
        .logs
        .dirs()
        .iter()
        .filter(|d| d.is_offline())
        .count();
    s.metrics.data_dirs_offline.set(offline as i64);
    // Lag gauges are rebuilt on each scrape, so deleted groups disappear.
    s.metrics.group_lag.clear();
    for (group, topic, partition, lag) in s.groups.lags() {
        s.metrics
            .group_lag
            .get_or_create(&crate::metrics::LagLabels {
                group,
                topic,
                partition,
            })
            .set(lag as i64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

/// Offsets of a partition held locally: `(high watermark, log start, size)`.
fn local_offsets(s: &AppState, topic: &str, partition: u32) -> Option<(u64, u64, u64)> {
    let log = s.broker.logs.get(&TopicPartition::new(topic, partition))?;
    let l = log.lock().ok()?;
    Some((l.high_watermark(), l.log_start_offset(), l.size_bytes()))
}

fn partition_json(s: &AppState, topic: &str, p: &crate::controller::state::PartitionMeta) -> Value {
    let (hw, start, size) = local_offsets(s, topic, p.partition).unwrap_or((0, 0, 0));
    json!({
        "partition": p.partition,
        "leader": p.leader,
        "leader_epoch": p.leader_epoch,
        "replicas": p.replicas,
        "isr": p.isr,
        "high_watermark": hw,
        "log_start_offset": start,
        "size_bytes": size,
    })
}

pub async fn metadata(State(s): S) -> Json<Value> {
    let meta = s.broker.controller.metadata();
    let brokers: Vec<Value> = meta
        .brokers
        .values()
        .map(|b| json!({"id": b.id, "address": b.address, "alive": !b.fenced}))
        .collect();
    let topics: Vec<Value> = meta
        .topics
        .values()
        .map(|t| {
            json!({
                "name": t.name,
                "partitions": t.partitions.iter().map(|p| partition_json(&s, &t.name, p)).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!({"brokers": brokers, "controller": s.broker.controller.leader(), "topics": topics}))
}

pub async fn list_topics(State(s): S) -> Json<Value> {
    let meta = s.broker.controller.metadata();
    let topics: Vec<Value> = meta
        .topics
        .values()
        .map(|t| json!({"name": t.name, "partitions": t.partitions.len(), "replication_factor": t.replication_factor, "configs": t.configs}))
        .collect();
    Json(json!({"topics": topics}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTopic {
    name: String,
    partitions: Option<u32>,
    replication_factor: Option<u16>,
    #[serde(default)]
    configs: TopicConfigs,
}

fn json_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))
}

pub async fn create_topic(
    State(s): S,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (bytes, _permit) = read_body(&s, &headers, body).await?;
    let req: CreateTopic = json_body(&bytes)?;
    check_topic(&req.name)?;
    let t = s
        .broker
        .create_topic(
            &req.name,
            req.partitions,
            req.replication_factor,
            req.configs,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(topic_json(&s, &t))).into_response())
}

fn topic_json(s: &AppState, t: &crate::controller::state::TopicMeta) -> Value {
    json!({
        "name": t.name,
        "replication_factor": t.replication_factor,
        "configs": t.configs,
        "partitions": t.partitions.iter().map(|p| partition_json(s, &t.name, p)).collect::<Vec<_>>(),
    })
}

pub async fn describe_topic(
    State(s): S,
    Path(topic): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_topic(&topic)?;
    let meta = s.broker.controller.metadata();
    let t = meta
        .topics
        .get(&topic)
        .ok_or(BrokerError::UnknownTopic(topic.clone()))?;
    Ok(Json(topic_json(&s, t)))
}

pub async fn delete_topic(State(s): S, Path(topic): Path<String>) -> Result<StatusCode, ApiError> {
    check_topic(&topic)?;
    s.broker.delete_topic(&topic).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn allocate_producer(State(s): S) -> Result<Json<Value>, ApiError> {
    let id = s.broker.allocate_producer_id().await?;
    Ok(Json(json!({"producer_id": id, "producer_epoch": 0})))
}

pub async fn producer_state(State(s): S, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    let mut parts = Vec::new();
    let meta = s.broker.controller.metadata();
    for t in meta.topics.values() {
        for p in &t.partitions {
            if p.leader != s.broker.config.node_id {
                continue;
            }
            // Partitions not opened yet are opened now: their producer state lives in the log.
            let Ok((part, _)) = s.broker.leader_partition(&t.name, p.partition, false).await else {
                continue;
            };
            if let Some((epoch, seq, offset)) = part.last_persisted(id) {
                parts.push(json!({
                    "topic": t.name, "partition": p.partition,
                    "producer_epoch": epoch, "last_sequence": seq, "last_offset": offset,
                }));
            }
        }
    }
    Ok(Json(json!({"producer_id": id, "partitions": parts})))
}

fn acks_json(acks: &[BatchAck]) -> Value {
    json!({"batches": acks.iter().map(|a| json!({
        "base_offset": a.base_offset,
        "last_offset": a.last_offset,
        "log_append_time_ms": a.log_append_time_ms,
        "duplicate": a.duplicate,
    })).collect::<Vec<_>>()})
}

/// Validates every batch fully (CRC, then decompresses and checks every record within the
/// decompression limit), then appends. Blocking: runs on the blocking pool.
fn validate_and_produce(
    part: &PartitionRef,
    bytes: Vec<u8>,
    limits: BatchLimits,
    leader_epoch: i32,
    metrics: &Metrics,
) -> Result<Vec<BatchAck>, ApiError> {
    let batches = ValidatedBatches::new(bytes, &limits)
        .map_err(|e| ApiError::bad_request("invalid_batch", e.to_string()))?;
    for (h, at) in batches.headers() {
        DecodedRecords::from_validated(&batches.bytes()[*at..*at + h.size()], *h, &limits)
            .map_err(|e| ApiError::bad_request("invalid_batch", e.to_string()))?;
    }
    let records = batches.record_count();
    let size = batches.len() as u64;
    let acks = part.produce(batches, leader_epoch)?;
    let dups = acks.iter().filter(|a| a.duplicate).count() as u64;
    metrics.duplicate_batches.inc_by(dups);
    if dups < acks.len() as u64 {
        metrics.produced_bytes.inc_by(size);
        metrics.produced_records.inc_by(records);
    }
    Ok(acks)
}

async fn produce_bytes(
    s: &Arc<AppState>,
    topic: &str,
    partition: u32,
    bytes: Vec<u8>,
    acks: Acks,
) -> Result<Vec<BatchAck>, ApiError> {
    let (part, epoch) = s.broker.leader_partition(topic, partition, true).await?;
    if acks == Acks::All {
        // Refused up front when too few replicas are in sync to promise anything.
        let min = s
            .broker
            .controller
            .metadata()
            .topics
            .get(topic)
            .map_or(1, |t| s.broker.min_insync(t));
        let isr = part.live_isr_count(s.broker.config.replica_lag_max).max(1);
        if isr < min {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_enough_replicas",
                format!(
                    "{topic}-{partition} has {isr} in-sync replicas, min_insync_replicas is {min}"
                ),
            ));
        }
    }
    let limits = s.broker.config.batch_limits();
    let waiter = part.clone();
    let metrics = s.metrics.clone();
    let task = tokio::task::spawn_blocking(move || {
        validate_and_produce(&part, bytes, limits, epoch, &metrics)
    });
    if acks == Acks::None {
        // Fire and forget: the append runs on; its outcome is logged, not returned.
        tokio::spawn(async move {
            if let Ok(Err(e)) = task.await {
                tracing::debug!(code = e.code, message = %e.message, "acks=0 produce failed");
            }
        });
        return Ok(Vec::new());
    }
    let acked = task.await.map_err(|e| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    })??;
    if acks == Acks::All
        && let Some(end) = acked.iter().map(|a| a.last_offset + 1).max()
    {
        // acks=all: every in-sync replica has it once the high watermark passes it.
        let mut hw = waiter.watch_high_watermark();
        let mut deposed = waiter.watch_deposed();
        let lag_max = s.broker.config.replica_lag_max;
        let min = s
            .broker
            .controller
            .metadata()
            .topics
            .get(topic)
            .map_or(1, |t| s.broker.min_insync(t));
        let mut too_few = false;
        let wait = tokio::time::timeout(ACKS_ALL_TIMEOUT, async {
            let mut check = tokio::time::interval(Duration::from_millis(250));
            loop {
                tokio::select! {
                    r = hw.wait_for(|h| *h >= end) => return r.is_ok(),
                    _ = deposed.wait_for(|d| *d) => return false,
                    _ = check.tick() => {
                        // The followers went silent after the append: stop waiting for them.
                        if waiter.live_isr_count(lag_max) < min {
                            too_few = true;
                            return false;
                        }
                    }
                }
            }
        })
        .await;
        if too_few {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_enough_replicas_after_append",
                format!(
                    "{topic}-{partition}: appended at the leader, but fewer than \
                     min_insync_replicas {min} replicas are in sync to confirm it; retry \
                     (an idempotent retry is deduplicated)"
                ),
            ));
        }
        if *deposed.borrow() {
            // Leadership moved while waiting: the client retries at the new leader, which
            // recognises the batch if it was replicated.
            return Err(ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "not_leader",
                format!(
                    "this broker stopped leading {topic}-{partition}; refresh the metadata and retry"
                ),
            ));
        }
        // The HW can also pass because the ISR shrank: below min_insync_replicas the batch
        // is not on enough replicas to acknowledge it as acks=all.
        if matches!(wait, Ok(true)) && waiter.isr().len().max(1) < min {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_enough_replicas_after_append",
                format!(
                    "{topic}-{partition}: the ISR shrank below min_insync_replicas {min} while \
                     this produce waited; retry (an idempotent retry is deduplicated)"
                ),
            ));
        }
        if !matches!(wait, Ok(true)) {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "request_timed_out",
                format!(
                    "the in-sync replicas of {topic}-{partition} did not all confirm offset {} within {:?}; \
                     retry (an idempotent retry is deduplicated)",
                    end - 1,
                    ACKS_ALL_TIMEOUT
                ),
            ));
        }
    }
    Ok(acked)
}

/// How long an acks=all produce waits for the in-sync replicas.
const ACKS_ALL_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn produce(
    State(s): S,
    Path((topic, partition)): Path<(String, u32)>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    check_topic(&topic)?;
    let acks = parse_acks(&q)?;
    let (bytes, _permit) = read_body(&s, &headers, body).await?;
    // Zero-copy when the body buffer is not shared.
    let out = produce_bytes(&s, &topic, partition, Vec::from(bytes), acks).await?;
    Ok(Json(acks_json(&out)))
}

#[derive(Debug, Deserialize)]
pub struct FetchQuery {
    offset: u64,
    max_bytes: Option<u64>,
    max_wait_ms: Option<u64>,
}

/// Reads from `offset`, long-polling up to `max_wait_ms` for data to appear below the high
/// watermark. Never spins: it sleeps on the partition's high-watermark signal.
async fn fetch_inner(
    s: &AppState,
    part: &PartitionRef,
    offset: u64,
    max_bytes: usize,
    max_wait: Duration,
) -> Result<crate::storage::ReadResult, ApiError> {
    let deadline = tokio::time::Instant::now() + max_wait;
    let mut hw = part.watch_high_watermark();
    loop {
        let p = part.clone();
        let r = tokio::task::spawn_blocking(move || p.fetch(offset, max_bytes))
            .await
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })?;
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                s.broker.logs.report_error(&part.tp, &e);
                return Err(e.into());
            }
        };
        if !r.bytes.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(r);
        }
        match tokio::time::timeout_at(deadline, hw.wait_for(|h| *h > offset)).await {
            Ok(Ok(_)) => continue,
            // Deadline, or the partition went away: answer with what there is (nothing).
            _ => return Ok(r),
        }
    }
}

pub async fn fetch(
    State(s): S,
    Path((topic, partition)): Path<(String, u32)>,
    Query(q): Query<FetchQuery>,
) -> Result<Response, ApiError> {
    check_topic(&topic)?;
    let limits = &s.broker.config.limits;
    let (part, _) = s.broker.leader_partition(&topic, partition, false).await?;
    let max_bytes = q
        .max_bytes
        .unwrap_or(FETCH_BYTES_DEFAULT)
        .clamp(1, limits.max_fetch_bytes) as usize;
    let wait = Duration::from_millis(q.max_wait_ms.unwrap_or(0).min(limits.max_fetch_wait_ms));
    let r = fetch_inner(&s, &part, q.offset, max_bytes, wait).await?;
    s.metrics.fetched_bytes.inc_by(r.bytes.len() as u64);
    let mut resp = Response::new(Body::from(r.bytes));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(BATCHES_CONTENT_TYPE),
    );
    h.insert(HW_HEADER, HeaderValue::from(r.high_watermark));
    h.insert(LOG_START_HEADER, HeaderValue::from(r.log_start_offset));
    Ok(resp)
}

/// Bytes as JSON: a string when valid UTF-8 (`name`), else base64 (`name_b64`).
fn put_bytes(obj: &mut serde_json::Map<String, Value>, name: &str, b: Option<&[u8]>) {
    match b {
        None => {
            obj.insert(name.to_owned(), Value::Null);
        }
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => {
                obj.insert(name.to_owned(), Value::String(s.to_owned()));
            }
            Err(_) => {
                obj.insert(format!("{name}_b64"), Value::String(B64.encode(b)));
            }
        },
    }
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct JsonRecord {
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    key_b64: Option<String>,
    value: Option<String>,
    value_b64: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, Value>,
    timestamp: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonProduce {
    records: Vec<JsonRecord>,
    partition: Option<u32>,
}

fn decode_field(
    text: &Option<String>,
    b64: &Option<String>,
    what: &str,
) -> Result<Option<Vec<u8>>, ApiError> {
    match (text, b64) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "invalid_record",
            format!("give {what} or {what}_b64, not both"),
        )),
        (Some(t), None) => Ok(Some(t.as_bytes().to_vec())),
        (None, Some(b)) => B64
            .decode(b)
            .map(Some)
            .map_err(|e| ApiError::bad_request("invalid_record", format!("{what}_b64: {e}"))),
        (None, None) => Ok(None),
    }
}

fn decode_header(v: &Value) -> Result<Vec<u8>, ApiError> {
    match v {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Object(o) => match o.get("b64") {
            Some(Value::String(b)) => B64
                .decode(b)
                .map_err(|e| ApiError::bad_request("invalid_record", format!("header b64: {e}"))),
            _ => Err(ApiError::bad_request(
                "invalid_record",
                "a header value is a string or {\"b64\": ...}",
            )),
        },
        _ => Err(ApiError::bad_request(
            "invalid_record",
            "a header value is a string or {\"b64\": ...}",
        )),
    }
}

pub async fn produce_json(
    State(s): S,
    Path(topic): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    check_topic(&topic)?;
    let acks = parse_acks(&q)?;
    let (bytes, _permit) = read_body(&s, &headers, body).await?;
    let req: JsonProduce = json_body(&bytes)?;
    if req.records.is_empty() {
        return Err(ApiError::bad_request("invalid_request", "records is empty"));
    }
    if req.records.len() > s.broker.config.limits.max_json_records {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!(
                "{} records; at most {} per request",
                req.records.len(),
                s.broker.config.limits.max_json_records
            ),
        ));
    }
    let meta = s.broker.topic(&topic, true).await?;
    let n = meta.partitions.len() as u32;
    if let Some(p) = req.partition
        && p >= n
    {
        return Err(BrokerError::UnknownPartition {
            topic,
            partition: p,
            count: n,
        }
        .into());
    }
    // Records with neither partition nor key go to a partition this node leads (spread
    // over them); records of a partition led elsewhere are forwarded to its leader.
    let me = s.broker.config.node_id;
    let local: Vec<u32> = (0..n)
        .filter(|p| meta.partitions[*p as usize].leader == me)
        .collect();
    let turn = s.spread.fetch_add(1, Ordering::Relaxed);
    let spread = if local.is_empty() {
        turn % n
    } else {
        local[turn as usize % local.len()]
    };
    let now = crate::broker::partition::now_ms();
    // Group records by partition, keeping request order within each.
    let mut groups: BTreeMap<u32, (BatchBuilder, Vec<usize>)> = BTreeMap::new();
    for (i, r) in req.records.iter().enumerate() {
        let key = decode_field(&r.key, &r.key_b64, "key")?;
        let value = decode_field(&r.value, &r.value_b64, "value")?;
        let hdrs: Vec<(Vec<u8>, Vec<u8>)> = r
            .headers
            .iter()
            .map(|(k, v)| Ok((k.as_bytes().to_vec(), decode_header(v)?)))
            .collect::<Result<_, ApiError>>()?;
        let p = match (req.partition, &key) {
            (Some(p), _) => p,
            (None, Some(k)) => crc32c::crc32c(k) % n,
            (None, None) => spread,
        };
        let refs: Vec<(&[u8], &[u8])> = hdrs
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        let g = groups
            .entry(p)
            .or_insert_with(|| (BatchBuilder::new(), Vec::new()));
        g.0.push(
            r.timestamp.unwrap_or(now),
            key.as_deref(),
            value.as_deref(),
            &refs,
        );
        g.1.push(i);
    }
    let mut offsets = vec![Value::Null; req.records.len()];
    let mut encoder = BatchEncoder::new(Compression::None, 0)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    for (p, (builder, idx)) in groups {
        let leader = meta.partitions[p as usize].leader;
        if leader != me && req.partition.is_none() && !headers.contains_key(FORWARDED_HEADER) {
            let records: Vec<&JsonRecord> = idx.iter().map(|i| &req.records[*i]).collect();
            let reply = forward_json_produce(&s, &topic, p, leader, &q, &records).await?;
            for (k, i) in idx.into_iter().enumerate() {
                offsets[i] = reply.get(k).cloned().unwrap_or(Value::Null);
            }
            continue;
        }
        let bytes = encoder
            .encode(&builder, ProducerStamp::NONE)
            .map_err(|e| ApiError::bad_request("invalid_record", e.to_string()))?;
        let acks_out = produce_bytes(&s, &topic, p, bytes, acks).await?;
        if let Some(a) = acks_out.first() {
            for (k, i) in idx.into_iter().enumerate() {
                offsets[i] = json!({"partition": p, "offset": a.base_offset + k as u64});
            }
        }
    }
    Ok(Json(json!({"offsets": offsets})))
}

/// Sends the records of partition `p` of a JSON produce to its leader `leader` (with the
/// partition named, so the leader never forwards again) and returns their offsets.
async fn forward_json_produce(
    s: &AppState,
    topic: &str,
    p: u32,
    leader: u64,
    q: &BTreeMap<String, String>,
    records: &[&JsonRecord],
) -> Result<Vec<Value>, ApiError> {
    let not_leader = |address: Option<String>| -> ApiError {
        BrokerError::NotLeader {
            topic: topic.to_owned(),
            partition: p,
            leader: Some(leader),
            leader_address: address,
        }
        .into()
    };
    let Some(addr) = s
        .broker
        .controller
        .metadata()
        .brokers
        .get(&leader)
        .filter(|b| !b.fenced)
        .map(|b| b.address.clone())
    else {
        return Err(not_leader(None));
    };
    let acks = q.get("acks").map_or("all", String::as_str);
    let body = json!({"records": records, "partition": p});
    let resp = s
        .http
        .post(format!(
            "http://{addr}/v1/topics/{topic}/records?acks={acks}"
        ))
        .header(FORWARDED_HEADER, "1")
        .json(&body)
        .send()
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "leader_unavailable",
                format!(
                    "forwarding to the leader of {topic}-{p} (broker {leader} at {addr}): {}",
                    crate::net::describe(&e)
                ),
            )
        })?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let code = v["error"]["code"].as_str().unwrap_or("forwarded");
        if code == "not_leader" {
            return Err(not_leader(Some(addr)));
        }
        // The leader's own code, when it is one of ours.
        const CODES: &[&str] = &[
            "not_enough_replicas",
            "not_enough_replicas_after_append",
            "disk_full",
            "unavailable",
            "storage_unavailable",
            "shutting_down",
            "invalid_record",
            "request_too_large",
            "request_timed_out",
            "timeout",
        ];
        let code = CODES
            .iter()
            .find(|c| **c == code)
            .copied()
            .unwrap_or("forwarded");
        return Err(ApiError::new(
            StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
            code,
            format!(
                "the leader of {topic}-{p} refused: {}",
                v["error"]["message"].as_str().unwrap_or("no reason given")
            ),
        ));
    }
    Ok(v["offsets"].as_array().cloned().unwrap_or_default())
}

#[derive(Debug, Deserialize)]
pub struct JsonFetchQuery {
    offset: u64,
    limit: Option<usize>,
    max_wait_ms: Option<u64>,
}

pub async fn fetch_json(
    State(s): S,
    Path((topic, partition)): Path<(String, u32)>,
    Query(q): Query<JsonFetchQuery>,
) -> Result<Json<Value>, ApiError> {
    check_topic(&topic)?;
    let (part, _) = s.broker.leader_partition(&topic, partition, false).await?;
    let limit = q
        .limit
        .unwrap_or(JSON_FETCH_LIMIT_DEFAULT)
        .clamp(1, JSON_FETCH_LIMIT_MAX);
    let wait = Duration::from_millis(
        q.max_wait_ms
            .unwrap_or(0)
            .min(s.broker.config.limits.max_fetch_wait_ms),
    );
    let limits = s.broker.config.batch_limits();
    let mut records = Vec::new();
    let mut offset = q.offset;
    let mut hw;
    let mut first = true;
    loop {
        let r = fetch_inner(
            &s,
            &part,
            offset,
            FETCH_BYTES_DEFAULT as usize,
            if first { wait } else { Duration::ZERO },
        )
        .await?;
        first = false;
        hw = r.high_watermark;
        if r.bytes.is_empty() {
            break;
        }
        for item in BatchIter::new(&r.bytes, limits) {
            let (h, batch) = item.map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "corrupt_batch",
                    e.to_string(),
                )
            })?;
            let d = DecodedRecords::new(batch, &limits).map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "corrupt_batch",
                    e.to_string(),
                )
            })?;
            for rec in d.iter() {
                let o = h.base_offset as u64 + rec.offset_delta as u64;
                if o < offset || records.len() >= limit {
                    continue;
                }
                let mut obj = serde_json::Map::new();
                obj.insert("offset".into(), json!(o));
                obj.insert(
                    "timestamp".into(),
                    json!(h.base_timestamp.wrapping_add(rec.timestamp_delta)),
                );
                put_bytes(&mut obj, "key", rec.key);
                put_bytes(&mut obj, "value", rec.value);
                let mut hdrs = serde_json::Map::new();
                for hd in rec.headers() {
                    let k = String::from_utf8_lossy(hd.key).into_owned();
                    let v = match hd.value.map(std::str::from_utf8) {
                        Some(Ok(t)) => json!(t),
                        Some(Err(_)) => json!({"b64": B64.encode(hd.value.unwrap_or_default())}),
                        None => Value::Null,
                    };
                    hdrs.insert(k, v);
                }
                obj.insert("headers".into(), Value::Object(hdrs));
                records.push(Value::Object(obj));
            }
            offset = h.next_offset() as u64;
        }
        if records.len() >= limit || offset >= hw {
            break;
        }
    }
    Ok(Json(json!({"records": records, "high_watermark": hw})))
}

// ---- consumer groups ----
//
// Group coordination lives on the active controller (one coordinator per cluster, and the
// offsets it commits are Raft proposals anyway). Any other node forwards group requests
// there; a forwarded request is never forwarded again.

const FORWARDED_HEADER: &str = "tributary-forwarded";

/// Where a group request must go instead, if this node is not the active controller.
fn coordinator_elsewhere(s: &AppState, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let c = &s.broker.controller;
    if c.is_leader() {
        return Ok(None);
    }
    if headers.contains_key(FORWARDED_HEADER) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "coordinator_moving",
            "the group coordinator is moving to a new controller leader; retry",
        ));
    }
    c.leader_address().map(Some).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "controller_unavailable",
            "no controller leader yet; retry",
        )
    })
}

/// Relays a request to the active controller and its reply back.
async fn forward(
    s: &AppState,
    addr: &str,
    method: reqwest::Method,
    path_and_query: &str,
    body: Option<Bytes>,
) -> Result<Response, ApiError> {
    let unavailable = |e: String| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "coordinator_unavailable",
            format!("forwarding to the group coordinator at {addr}: {e}"),
        )
    };
    let mut req = s
        .http
        .request(method, format!("http://{addr}{path_and_query}"))
        .header(FORWARDED_HEADER, "1");
    if let Some(b) = body {
        req = req.header(header::CONTENT_TYPE, "application/json").body(b);
    }
    let resp = req.send().await.map_err(|e| unavailable(e.to_string()))?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let bytes = resp.bytes().await.map_err(|e| unavailable(e.to_string()))?;
    let mut out = Response::new(Body::from(bytes));
    *out.status_mut() = status;
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if !status.is_success() {
        // The coordinator's error reply is already JSON: keep it as it is.
        out.extensions_mut()
            .insert(super::error::ErrorCode("forwarded"));
    }
    Ok(out)
}

pub async fn list_groups(State(s): S, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(addr) = coordinator_elsewhere(&s, &headers)? {
        return forward(&s, &addr, reqwest::Method::GET, "/v1/groups", None).await;
    }
    Ok(Json(json!({"groups": s.groups.list()})).into_response())
}

pub async fn describe_group(
    State(s): S,
    Path(group): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(addr) = coordinator_elsewhere(&s, &headers)? {
        let path = format!("/v1/groups/{group}");
        return forward(&s, &addr, reqwest::Method::GET, &path, None).await;
    }
    let v = s.groups.describe(&group).await?;
    Ok(Json(serde_json::to_value(v).unwrap_or_default()).into_response())
}

pub async fn heartbeat(
    State(s): S,
    Path(group): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (bytes, _permit) = read_body(&s, &headers, body).await?;
    if let Some(addr) = coordinator_elsewhere(&s, &headers)? {
        let path = format!("/v1/groups/{group}/heartbeat");
        return forward(&s, &addr, reqwest::Method::POST, &path, Some(bytes)).await;
    }
    let req: HeartbeatRequest = json_body(&bytes)?;
    let reply: HeartbeatReply = s.groups.heartbeat(&group, &req)?;
    Ok(Json(reply).into_response())
}

pub async fn commit_offsets(
    State(s): S,
    Path(group): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (bytes, _permit) = read_body(&s, &headers, body).await?;
    if let Some(addr) = coordinator_elsewhere(&s, &headers)? {
        let path = format!("/v1/groups/{group}/offsets");
        return forward(&s, &addr, reqwest::Method::POST, &path, Some(bytes)).await;
    }
    let req: CommitRequest = json_body(&bytes)?;
    let n = req.offsets.len();
    s.groups.commit(&group, req).await?;
    Ok(Json(json!({"committed": n})).into_response())
}

fn offsets_json(o: &GroupOffsets) -> Vec<Value> {
    o.offsets
        .iter()
        .flat_map(|(topic, parts)| {
            parts
                .iter()
                .map(move |(p, off)| json!({"topic": topic, "partition": p, "offset": off}))
        })
        .collect()
}

pub async fn group_offsets(
    State(s): S,
    Path(group): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let o = s.groups.offsets(&group)?;
    Ok(Json(json!({"group": group, "offsets": offsets_json(&o)})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetRequest {
    topic: String,
    to: String,
    #[serde(default)]
    partitions: Option<Vec<u32>>,
}

pub async fn reset_offsets(
    State(s): S,
    Path(group): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (bytes, _permit) = read_body(&s, &headers, body).await?;
    if let Some(addr) = coordinator_elsewhere(&s, &headers)? {
        let path = format!("/v1/groups/{group}/offsets/reset");
        return forward(&s, &addr, reqwest::Method::POST, &path, Some(bytes)).await;
    }
    let req: ResetRequest = json_body(&bytes)?;
    check_topic(&req.topic)?;
    let to: ResetTo = req
        .to
        .parse()
        .map_err(|e: String| ApiError::bad_request("invalid_reset", e))?;
    let offsets = s
        .groups
        .reset_offsets(&group, &req.topic, req.partitions, to)
        .await?;
    Ok(Json(json!({"group": group, "offsets": offsets})).into_response())
}

/// `GET /v1/cluster`: this node's Raft view and every broker's liveness.
pub async fn cluster(State(s): S) -> Json<Value> {
    let c = &s.broker.controller;
    let meta = c.metadata();
    let voters = c.voters();
    // Only the active controller knows heartbeats; elsewhere these are null.
    let ages = c.heartbeat_ages();
    let brokers: Vec<Value> = meta
        .brokers
        .values()
        .map(|b| {
            json!({
                "id": b.id,
                "address": b.address,
                "alive": !b.fenced,
                "voter": voters.contains(&b.id),
                "last_heartbeat_ms_ago": ages.as_ref().and_then(|a| a.get(&b.id)).map(|d| d.as_millis() as u64),
            })
        })
        .collect();
    Json(json!({
        "node_id": s.broker.config.node_id,
        "controller": c.status(),
        "brokers": brokers,
        "broker_heartbeat_interval_ms": s.broker.config.broker_heartbeat_interval.as_millis() as u64,
        "broker_session_timeout_ms": s.broker.config.broker_session_timeout.as_millis() as u64,
    }))
}

#[derive(Debug, Deserialize)]
pub struct PartitionQuery {
    topic: String,
    partition: u32,
}

/// `GET /internal/partition-offsets`: the high watermark and log start of a partition this
/// broker leads (the group coordinator asks it for commits and `describe`).
pub async fn partition_offsets(
    State(s): S,
    Query(q): Query<PartitionQuery>,
) -> Result<Json<Value>, ApiError> {
    check_topic(&q.topic)?;
    // Answered only by the leader itself: never relayed, so views that disagree cannot loop.
    let (part, _) = s
        .broker
        .leader_partition(&q.topic, q.partition, false)
        .await?;
    let hw = part.high_watermark();
    let start = part.log().lock().map_or(0, |l| l.log_start_offset());
    Ok(Json(
        json!({"high_watermark": hw, "log_start_offset": start}),
    ))
}

// ---- replication (internal) ----

#[derive(Debug, Deserialize)]
pub struct ReplicaFetchQuery {
    topic: String,
    partition: u32,
    offset: u64,
    replica: u64,
    max_bytes: Option<u64>,
    max_wait_ms: Option<u64>,
}

/// `GET /internal/replica/fetch`: a follower's fetch. Its offset is its log end, which the
/// leader records (it may move the high watermark); the reply holds whole batches up to the
/// leader's log end, and the high watermark in a header.
pub async fn replica_fetch(
    State(s): S,
    Query(q): Query<ReplicaFetchQuery>,
) -> Result<Response, ApiError> {
    check_topic(&q.topic)?;
    let (part, _) = s
        .broker
        .leader_partition(&q.topic, q.partition, false)
        .await?;
    let replicas: Vec<u64> = s
        .broker
        .controller
        .metadata()
        .topics
        .get(&q.topic)
        .and_then(|t| t.partitions.get(q.partition as usize))
        .map(|p| p.replicas.clone())
        .unwrap_or_default();
    if !replicas.contains(&q.replica) || q.replica == s.broker.config.node_id {
        return Err(ApiError::bad_request(
            "not_a_replica",
            format!(
                "broker {} is not a follower of {}-{}",
                q.replica, q.topic, q.partition
            ),
        ));
    }
    // The log's own end (the watch lags appends until they are published).
    let end = part.log().lock().map_or(0, |l| l.log_end_offset());
    if q.offset > end {
        // The follower has more than this leader: it must truncate (by epochs) first; its
        // offset must not count toward the high watermark.
        return Err(ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "offset_out_of_range",
            format!("offset {} is past the leader's log end {end}", q.offset),
        ));
    }
    part.follower_fetched(q.replica, q.offset);
    let mut end = part.watch_log_end();
    if *end.borrow() <= q.offset {
        let wait = Duration::from_millis(
            q.max_wait_ms
                .unwrap_or(0)
                .min(s.broker.config.limits.max_fetch_wait_ms),
        );
        let _ = tokio::time::timeout(wait, end.wait_for(|e| *e > q.offset)).await;
    }
    let max = q
        .max_bytes
        .unwrap_or(FETCH_BYTES_DEFAULT)
        .clamp(1, s.broker.config.limits.max_fetch_bytes) as usize;
    let p = part.clone();
    let offset = q.offset;
    let r = tokio::task::spawn_blocking(move || p.read_for_replica(offset, max))
        .await
        .map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })??;
    let mut resp = Response::new(Body::from(r.bytes));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(BATCHES_CONTENT_TYPE),
    );
    h.insert(HW_HEADER, HeaderValue::from(part.high_watermark()));
    Ok(resp)
}

#[derive(Debug, Deserialize)]
pub struct EpochEndQuery {
    topic: String,
    partition: u32,
    epoch: i32,
}

/// `GET /internal/replica/epoch-end`: where the leader's log ends for the largest leader
/// epoch `<= epoch` (KIP-279); a follower truncates to it before fetching.
pub async fn replica_epoch_end(
    State(s): S,
    Query(q): Query<EpochEndQuery>,
) -> Result<Json<Value>, ApiError> {
    check_topic(&q.topic)?;
    let (part, _) = s
        .broker
        .leader_partition(&q.topic, q.partition, false)
        .await?;
    let l = part.log().lock().map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "log lock poisoned",
        )
    })?;
    // No epoch at or below the follower's: nothing of its log is known to agree.
    let (epoch, end) = l
        .end_offset_for_epoch(q.epoch)
        .unwrap_or((-1, l.log_start_offset()));
    Ok(Json(json!({"epoch": epoch, "end_offset": end})))
}

#[derive(Debug, Deserialize)]
pub struct ChecksumQuery {
    topic: String,
    partition: u32,
    upto: u64,
}

/// `GET /internal/replica/checksum`: CRC-32C of this broker's copy of a partition's batches
/// below `upto` (tests compare replicas with it), with the offsets it covers.
pub async fn replica_checksum(
    State(s): S,
    Query(q): Query<ChecksumQuery>,
) -> Result<Json<Value>, ApiError> {
    check_topic(&q.topic)?;
    let log = s
        .broker
        .logs
        .get(&TopicPartition::new(&q.topic, q.partition))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_partition",
                "no local replica",
            )
        })?;
    let upto = q.upto;
    let (crc, from, to) =
        tokio::task::spawn_blocking(move || -> Result<(u32, u64, u64), ApiError> {
            let l = log.lock().map_err(|_| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "log lock poisoned",
                )
            })?;
            let start = l.log_start_offset();
            let mut offset = start;
            let mut crc = 0u32;
            let limit = upto.min(l.log_end_offset());
            while offset < limit {
                let r = l.read(offset, 4 << 20, Some(limit))?;
                if r.bytes.is_empty() {
                    break;
                }
                let mut last = offset;
                for item in BatchIter::new(&r.bytes, crate::storage::segment::scan_limits()) {
                    let (h, b) = item.map_err(|e| {
                        ApiError::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "corrupt_batch",
                            e.to_string(),
                        )
                    })?;
                    if (h.next_offset() as u64) <= limit {
                        crc = crc32c::crc32c_append(crc, b);
                        last = h.next_offset() as u64;
                    } else {
                        last = limit;
                        break;
                    }
                }
                if last == offset {
                    break;
                }
                offset = last;
            }
            Ok((crc, start, offset))
        })
        .await
        .map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })??;
    Ok(Json(json!({"crc32c": crc, "from": from, "to": to})))
}
