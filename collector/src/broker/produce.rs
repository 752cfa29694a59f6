//! The produce service: validation, the append, and everything acks=all promises (min ISR
//! up front, the high-watermark wait, the deposed-leader watch, the ISR-shrink recheck);
//! and the JSON produce with its partitioner and forwarding to other leaders.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use api::{Acks, BatchAck, JsonProduce, JsonProduceReply, RecordOffset};
use shared::{BatchBuilder, BatchEncoder, BatchLimits, Compression, DecodedRecords, ProducerStamp};

use super::{ACKS_ALL_TIMEOUT, Broker, BrokerError, PartitionRef};
use crate::metrics::Metrics;
use crate::storage::ValidatedBatches;

/// How often an acks=all wait rechecks that enough replicas are still in sync.
const ISR_RECHECK_INTERVAL: Duration = Duration::from_millis(250);

/// Validates every batch fully (CRC, then decompresses and checks every record within the
/// decompression limit), then appends. Blocking: runs on the blocking pool.
fn validate_and_append(
    part: &PartitionRef,
    bytes: Vec<u8>,
    limits: BatchLimits,
    leader_epoch: i32,
    metrics: &Metrics,
) -> Result<Vec<BatchAck>, BrokerError> {
    let batches = ValidatedBatches::new(bytes, &limits).map_err(BrokerError::InvalidBatch)?;
    for (h, at) in batches.headers() {
        DecodedRecords::from_validated(&batches.bytes()[*at..*at + h.size()], *h, &limits)
            .map_err(BrokerError::InvalidBatch)?;
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

impl Broker {
    fn min_insync_of(&self, topic: &str) -> usize {
        self.controller
            .metadata()
            .topics
            .get(topic)
            .map_or(1, |t| self.min_insync(t))
    }

    /// Appends `bytes` (one or more RecordBatch v2 batches) to a partition this broker
    /// leads and answers once `acks` is met: with `acks=0` at once (the outcome is logged),
    /// with `1` once the leader has it, with `all` once every in-sync replica has it.
    pub async fn produce(
        &self,
        caller: &crate::auth::Caller,
        topic: &str,
        partition: u32,
        bytes: Vec<u8>,
        acks: Acks,
    ) -> Result<Vec<BatchAck>, BrokerError> {
        shared::names::validate_topic(topic)
            .map_err(|e| BrokerError::InvalidTopic(e.to_string()))?;
        self.authorize_write(caller, topic)?;
        let (part, epoch) = self.leader_partition(topic, partition, true).await?;
        if acks == Acks::All {
            // Refused up front when too few replicas are in sync to promise anything.
            let min = self.min_insync_of(topic);
            let isr = part.live_isr_count(self.config.replica_lag_max).max(1);
            if isr < min {
                return Err(BrokerError::NotEnoughReplicas {
                    topic: topic.to_owned(),
                    partition,
                    isr,
                    min,
                });
            }
        }
        // A batch ahead of its producer's next sequence waits for the one before it
        // (`limits.sequence_gap_wait_ms`).
        if let Ok(h) = shared::BatchHeader::parse(&bytes) {
            let wait = Duration::from_millis(self.config.limits.sequence_gap_wait_ms);
            part.wait_for_earlier(&h, wait).await;
        }
        let limits = self.config.batch_limits();
        let waiter = part.clone();
        let metrics = self.metrics.clone();
        let tp = part.tp.clone();
        let task = tokio::task::spawn_blocking(move || {
            validate_and_append(&part, bytes, limits, epoch, &metrics)
        });
        // An I/O error under an append takes its data directory offline (as for reads).
        let task = async {
            let r = task.await;
            if let Ok(Err(BrokerError::Produce(super::ProduceError::Storage(e)))) = &r {
                self.logs.report_error(&tp, e);
            }
            r
        };
        if acks == Acks::None {
            // No acknowledgement, but the append is still waited for: the connection's next
            // request (and its memory) waits behind it, and batches of one partition keep
            // their order. Its outcome is logged, not returned.
            if let Ok(Err(e)) = task.await {
                tracing::debug!(error = %e, "acks=0 produce failed");
            }
            return Ok(Vec::new());
        }
        let acked = task
            .await
            .map_err(|e| BrokerError::Internal(e.to_string()))??;
        if acks == Acks::All
            && let Some(end) = acked.iter().map(|a| a.last_offset + 1).max()
        {
            self.await_in_sync(topic, partition, &waiter, end).await?;
        }
        Ok(acked)
    }

    /// acks=all: waits until the high watermark passes `end` (every in-sync replica has
    /// it), failing when this broker is deposed, the in-sync replicas fall below the
    /// minimum, or [`ACKS_ALL_TIMEOUT`] passes.
    async fn await_in_sync(
        &self,
        topic: &str,
        partition: u32,
        waiter: &Arc<super::Partition>,
        end: u64,
    ) -> Result<(), BrokerError> {
        let mut hw = waiter.watch_high_watermark();
        let mut deposed = waiter.watch_deposed();
        let lag_max = self.config.replica_lag_max;
        let min = self.min_insync_of(topic);
        let mut too_few = false;
        let wait = tokio::time::timeout(ACKS_ALL_TIMEOUT, async {
            let mut check = tokio::time::interval(ISR_RECHECK_INTERVAL);
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
            return Err(BrokerError::NotEnoughReplicasAfterAppend(format!(
                "{topic}-{partition}: appended at the leader, but fewer than \
                 min_insync_replicas {min} replicas are in sync to confirm it; retry \
                 (an idempotent retry is deduplicated)"
            )));
        }
        if *deposed.borrow() {
            // Leadership moved while waiting: the client retries at the new leader, which
            // recognises the batch if it was replicated.
            return Err(BrokerError::NotLeader {
                topic: topic.to_owned(),
                partition,
                leader: None,
                leader_address: None,
            });
        }
        // The HW can also pass because the ISR shrank: below min_insync_replicas the batch
        // is not on enough replicas to acknowledge it as acks=all.
        if matches!(wait, Ok(true)) && waiter.isr().len().max(1) < min {
            return Err(BrokerError::NotEnoughReplicasAfterAppend(format!(
                "{topic}-{partition}: the ISR shrank below min_insync_replicas {min} while \
                 this produce waited; retry (an idempotent retry is deduplicated)"
            )));
        }
        if !matches!(wait, Ok(true)) {
            return Err(BrokerError::RequestTimedOut(format!(
                "the in-sync replicas of {topic}-{partition} did not all confirm offset {} within {:?}; \
                 retry (an idempotent retry is deduplicated)",
                end - 1,
                ACKS_ALL_TIMEOUT
            )));
        }
        Ok(())
    }

    /// A JSON produce. With `req.partition` every record goes there (this broker must lead
    /// it); else a keyed record goes to `crc32c(key) mod partitions` and a keyless one to a
    /// partition this broker leads (round robin). Records of partitions led elsewhere are
    /// forwarded to their leader, unless `forwarded` (a relayed request is never relayed).
    pub async fn produce_json(
        &self,
        caller: &crate::auth::Caller,
        topic: &str,
        req: JsonProduce,
        acks: Acks,
        forwarded: bool,
    ) -> Result<JsonProduceReply, BrokerError> {
        shared::names::validate_topic(topic)
            .map_err(|e| BrokerError::InvalidTopic(e.to_string()))?;
        self.authorize_write(caller, topic)?;
        let max = self.config.limits.max_json_records;
        if req.records.is_empty() {
            return Err(BrokerError::InvalidRequest("records is empty".into()));
        }
        if req.records.len() > max {
            return Err(BrokerError::InvalidRequest(format!(
                "{} records; at most {max} per request",
                req.records.len()
            )));
        }
        let meta = self.topic(topic, true).await?;
        let n = meta.partitions.len() as u32;
        if let Some(p) = req.partition
            && p >= n
        {
            return Err(BrokerError::UnknownPartition {
                topic: topic.to_owned(),
                partition: p,
                count: n,
            });
        }
        let me = self.config.node_id;
        let local: Vec<u32> = (0..n)
            .filter(|p| meta.partitions[*p as usize].leader == me)
            .collect();
        let turn = self.spread.fetch_add(1, Ordering::Relaxed);
        let spread = if local.is_empty() {
            turn % n
        } else {
            local[turn as usize % local.len()]
        };
        let now = shared::sys::now_ms();
        // Group records by partition, keeping request order within each.
        let mut groups: BTreeMap<u32, (BatchBuilder, Vec<usize>)> = BTreeMap::new();
        for (i, r) in req.records.iter().enumerate() {
            let d = r.decode().map_err(BrokerError::InvalidRecord)?;
            let p = match (req.partition, &d.key) {
                (Some(p), _) => p,
                (None, Some(k)) => crc32c::crc32c(k) % n,
                (None, None) => spread,
            };
            let refs: Vec<(&[u8], &[u8])> = d
                .headers
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_slice()))
                .collect();
            let g = groups
                .entry(p)
                .or_insert_with(|| (BatchBuilder::new(), Vec::new()));
            g.0.push(
                d.timestamp.unwrap_or(now),
                d.key.as_deref(),
                d.value.as_deref(),
                &refs,
            );
            g.1.push(i);
        }
        let mut offsets = vec![None; req.records.len()];
        let mut encoder = BatchEncoder::new(Compression::None, 0)
            .map_err(|e| BrokerError::Internal(e.to_string()))?;
        for (p, (builder, idx)) in groups {
            let leader = meta.partitions[p as usize].leader;
            if leader != me && req.partition.is_none() && !forwarded {
                let records = idx.iter().map(|i| req.records[*i].clone()).collect();
                let reply = self.forward_json(topic, p, leader, acks, records).await?;
                for (k, i) in idx.into_iter().enumerate() {
                    offsets[i] = reply.offsets.get(k).copied().flatten();
                }
                continue;
            }
            let bytes = encoder
                .encode(&builder, ProducerStamp::NONE)
                .map_err(|e| BrokerError::InvalidRecord(e.to_string()))?;
            let acked = self.produce(caller, topic, p, bytes, acks).await?;
            if let Some(a) = acked.first() {
                for (k, i) in idx.into_iter().enumerate() {
                    offsets[i] = Some(RecordOffset {
                        partition: p,
                        offset: a.base_offset + k as u64,
                    });
                }
            }
        }
        Ok(JsonProduceReply { offsets })
    }

    /// Sends the records of partition `p` of a JSON produce to its leader (with the
    /// partition named, so the leader never forwards again).
    async fn forward_json(
        &self,
        topic: &str,
        p: u32,
        leader: u64,
        acks: Acks,
        records: Vec<api::JsonRecord>,
    ) -> Result<JsonProduceReply, BrokerError> {
        let not_leader = |address: Option<String>| BrokerError::NotLeader {
            topic: topic.to_owned(),
            partition: p,
            leader: Some(leader),
            leader_address: address,
        };
        let Some(addr) = self.live_broker_address(leader) else {
            return Err(not_leader(None));
        };
        let body = JsonProduce {
            records,
            partition: Some(p),
        };
        match self
            .relay
            .produce_json(
                Some(&self.relay.config().base_url(&addr)),
                topic,
                acks,
                &body,
                true,
            )
            .await
        {
            Ok(r) => Ok(r),
            Err(e) if e.code() == Some(api::ErrorCode::NotLeader) => Err(not_leader(Some(addr))),
            Err(e @ client::ClientError::Api { .. }) => Err(BrokerError::from_peer(
                &format!("the leader of {topic}-{p} refused"),
                e,
            )),
            Err(e) => Err(BrokerError::LeaderUnavailable(format!(
                "forwarding to the leader of {topic}-{p} (broker {leader} at {addr}): {e}"
            ))),
        }
    }
}
