//! The fetch services: a consumer's fetch (a long poll on the high watermark), the JSON
//! fetch, and what followers and other brokers ask a leader (replica fetch, epoch ends,
//! partition offsets, checksums).

use api::acls::{Operation as Op, ResourceType as Rt};
use std::time::Duration;

use api::{
    Checksum, ChecksumQuery, EpochEnd, EpochEndQuery, FetchQuery, JsonFetchQuery, JsonFetchReply,
    PartitionOffsets, RecordJson,
};
use shared::{BatchIter, DecodedRecords};

use super::{Broker, BrokerError, PartitionRef};
use crate::storage::ReadResult;
use crate::storage::StorageError;
use crate::storage::manager::TopicPartition;

/// Fetch size when the request names none.
pub const FETCH_BYTES_DEFAULT: u64 = 1 << 20;
/// JSON fetch record count when the request names none, and its ceiling.
const JSON_FETCH_LIMIT_DEFAULT: usize = 100;
const JSON_FETCH_LIMIT_MAX: usize = 10_000;

fn check_topic(topic: &str) -> Result<(), BrokerError> {
    shared::names::validate_topic(topic).map_err(|e| BrokerError::InvalidTopic(e.to_string()))
}

impl Broker {
    fn fetch_wait(&self, max_wait_ms: Option<u64>) -> Duration {
        Duration::from_millis(
            max_wait_ms
                .unwrap_or(0)
                .min(self.config.limits.max_fetch_wait_ms),
        )
    }

    fn fetch_bytes(&self, max_bytes: Option<u64>) -> usize {
        max_bytes
            .unwrap_or(FETCH_BYTES_DEFAULT)
            .clamp(1, self.config.limits.max_fetch_bytes) as usize
    }

    /// Reads from `offset`, long-polling up to `max_wait` for data to appear below the high
    /// watermark. Never spins: it sleeps on the partition's high-watermark signal.
    async fn read_waiting(
        &self,
        part: &PartitionRef,
        offset: u64,
        max_bytes: usize,
        max_wait: Duration,
    ) -> Result<ReadResult, BrokerError> {
        let deadline = tokio::time::Instant::now() + max_wait;
        let mut hw = part.watch_high_watermark();
        loop {
            let p = part.clone();
            let r = tokio::task::spawn_blocking(move || p.fetch(offset, max_bytes))
                .await
                .map_err(|e| BrokerError::Internal(e.to_string()))?;
            let r = match r {
                Ok(r) => r,
                Err(e) => {
                    self.logs.report_error(&part.tp, &e);
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

    /// A consumer's fetch: whole batches below the high watermark from the one holding
    /// `q.offset`, waiting up to `q.max_wait_ms` for data.
    pub async fn fetch(
        &self,
        caller: &crate::auth::Caller,
        topic: &str,
        partition: u32,
        q: &FetchQuery,
    ) -> Result<ReadResult, BrokerError> {
        check_topic(topic)?;
        self.authorize(caller, Op::Read, Rt::Topic, topic)?;
        let (part, _) = self.leader_partition(topic, partition, false).await?;
        let r = self
            .read_waiting(
                &part,
                q.offset,
                self.fetch_bytes(q.max_bytes),
                self.fetch_wait(q.max_wait_ms),
            )
            .await?;
        self.metrics.fetched_bytes.inc_by(r.bytes.len() as u64);
        Ok(r)
    }

    /// The JSON fetch: up to `q.limit` records from `q.offset`.
    pub async fn fetch_records(
        &self,
        caller: &crate::auth::Caller,
        topic: &str,
        partition: u32,
        q: &JsonFetchQuery,
    ) -> Result<JsonFetchReply, BrokerError> {
        check_topic(topic)?;
        self.authorize(caller, Op::Read, Rt::Topic, topic)?;
        let (part, _) = self.leader_partition(topic, partition, false).await?;
        let limit = q
            .limit
            .unwrap_or(JSON_FETCH_LIMIT_DEFAULT)
            .clamp(1, JSON_FETCH_LIMIT_MAX);
        let wait = self.fetch_wait(q.max_wait_ms);
        let limits = self.config.batch_limits();
        let corrupt = |e: shared::BatchError| BrokerError::CorruptBatch(e.to_string());
        let mut records = Vec::new();
        let mut offset = q.offset;
        let mut first = true;
        loop {
            let r = self
                .read_waiting(
                    &part,
                    offset,
                    FETCH_BYTES_DEFAULT as usize,
                    if first { wait } else { Duration::ZERO },
                )
                .await?;
            first = false;
            let hw = r.high_watermark;
            if r.bytes.is_empty() {
                return Ok(JsonFetchReply {
                    records,
                    high_watermark: hw,
                });
            }
            for item in BatchIter::new(&r.bytes, limits) {
                let (h, batch) = item.map_err(corrupt)?;
                let d = DecodedRecords::new(batch, &limits).map_err(corrupt)?;
                for rec in d.iter() {
                    let o = h.base_offset as u64 + rec.offset_delta as u64;
                    if o < offset || records.len() >= limit {
                        continue;
                    }
                    records.push(RecordJson::new(
                        o,
                        h.base_timestamp.wrapping_add(rec.timestamp_delta),
                        rec.key,
                        rec.value,
                        rec.headers().map(|hd| (hd.key, hd.value)),
                    ));
                }
                offset = h.next_offset() as u64;
            }
            if records.len() >= limit || offset >= hw {
                return Ok(JsonFetchReply {
                    records,
                    high_watermark: hw,
                });
            }
        }
    }

    /// High watermark and log start of a partition this broker leads. Answered only by the
    /// leader itself: never relayed, so views that disagree cannot loop.
    pub async fn leader_offsets(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<PartitionOffsets, BrokerError> {
        check_topic(topic)?;
        let (part, _) = self.leader_partition(topic, partition, false).await?;
        let high_watermark = part.high_watermark();
        let log_start_offset = shared::sys::lock(part.log()).log_start_offset();
        Ok(PartitionOffsets {
            high_watermark,
            log_start_offset,
        })
    }

    /// Where this leader's log ends for the largest leader epoch `<= q.epoch` (KIP-279);
    /// a follower truncates to it before fetching.
    pub async fn epoch_end(&self, q: &EpochEndQuery) -> Result<EpochEnd, BrokerError> {
        check_topic(&q.topic)?;
        let (part, _) = self.leader_partition(&q.topic, q.partition, false).await?;
        let l = shared::sys::lock(part.log());
        // No epoch at or below the follower's: nothing of its log is known to agree.
        let (epoch, end_offset) = l
            .end_offset_for_epoch(q.epoch)
            .unwrap_or((-1, l.log_start_offset()));
        Ok(EpochEnd { epoch, end_offset })
    }

    /// CRC-32C of this broker's copy of a partition's batches below `q.upto`.
    pub async fn checksum(&self, q: &ChecksumQuery) -> Result<Checksum, BrokerError> {
        check_topic(&q.topic)?;
        let tp = TopicPartition::new(&q.topic, q.partition);
        let log = self
            .logs
            .get(&tp)
            .ok_or_else(|| BrokerError::NoLocalReplica(tp.dir_name()))?;
        let upto = q.upto;
        let (crc32c, from, to) =
            tokio::task::spawn_blocking(move || shared::sys::lock(&log).checksum(upto))
                .await
                .map_err(|e| BrokerError::Internal(e.to_string()))?
                .map_err(|e| match e {
                    StorageError::Batch(b) => BrokerError::CorruptBatch(b.to_string()),
                    other => other.into(),
                })?;
        Ok(Checksum { crc32c, from, to })
    }
}

/// One partition of a multi-partition fetch.
#[derive(Debug, Clone)]
pub struct PartitionFetch {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub max_bytes: usize,
    /// The leader epoch the client knows (KIP-320), checked against the current one.
    pub leader_epoch: Option<i32>,
}

/// What `list_offset` looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The high watermark.
    Latest,
    /// The first record with a timestamp at or after this (ms).
    Timestamp(i64),
    /// The first record with the largest timestamp.
    MaxTimestamp,
}

impl Broker {
    /// A fetch of several partitions this broker leads (the Kafka Fetch request): whole
    /// batches below each high watermark, at most `max_bytes` in all (the first non-empty
    /// partition's first batch always whole), waiting up to `max_wait` until `min_bytes`
    /// are there. Each partition answers on its own (an error in one does not fail the
    /// others); an error ends the wait.
    pub async fn fetch_many(
        &self,
        caller: &crate::auth::Caller,
        reqs: &[PartitionFetch],
        max_wait: Duration,
        min_bytes: usize,
        max_bytes: usize,
    ) -> Vec<Result<ReadResult, BrokerError>> {
        let max_wait = max_wait.min(self.fetch_wait(Some(u64::MAX)));
        // More than a reply may hold can never be waited for.
        let min_bytes = min_bytes.min(max_bytes.max(1));
        let deadline = tokio::time::Instant::now() + max_wait;
        let mut parts = Vec::with_capacity(reqs.len());
        let mut errors: Vec<Option<BrokerError>> = Vec::with_capacity(reqs.len());
        for r in reqs {
            let p = match check_topic(&r.topic)
                .and_then(|()| self.authorize(caller, Op::Read, Rt::Topic, &r.topic))
            {
                Ok(()) => self.leader_partition(&r.topic, r.partition, false).await,
                Err(e) => Err(e),
            };
            let p = p.and_then(|(part, epoch)| match r.leader_epoch {
                Some(asked) if asked != epoch => Err(BrokerError::LeaderEpoch {
                    topic: r.topic.clone(),
                    partition: r.partition,
                    asked,
                    current: epoch,
                }),
                _ => Ok((part, epoch)),
            });
            match p {
                Ok((part, _)) => {
                    parts.push(Some(part));
                    errors.push(None);
                }
                Err(e) => {
                    parts.push(None);
                    errors.push(Some(e));
                }
            }
        }
        // A partition that cannot be read ends the wait: its error goes back at once.
        let failed_lookup = errors.iter().any(Option::is_some);
        loop {
            let mut out: Vec<Result<ReadResult, BrokerError>> = Vec::with_capacity(reqs.len());
            let mut budget = max_bytes.max(1);
            let mut total = 0usize;
            let mut failed = failed_lookup;
            for (i, r) in reqs.iter().enumerate() {
                let Some(part) = &parts[i] else {
                    out.push(Err(errors[i].take().unwrap_or_else(|| {
                        BrokerError::Internal("lookup failed".into())
                    })));
                    continue;
                };
                // Once something is taken, later partitions only get what is left.
                let limit = if total == 0 {
                    r.max_bytes.max(1)
                } else {
                    r.max_bytes.min(budget)
                };
                let rr = self
                    .read_waiting(part, r.offset, limit.max(1), Duration::ZERO)
                    .await
                    .map(|mut rr| {
                        if limit == 0 {
                            rr.bytes.clear();
                        }
                        rr
                    });
                match &rr {
                    Ok(rr) => {
                        total += rr.bytes.len();
                        budget = budget.saturating_sub(rr.bytes.len());
                    }
                    Err(_) => failed = true,
                }
                out.push(rr);
            }
            // `min_bytes` 0 answers at once, as Kafka does.
            if failed || total >= min_bytes || tokio::time::Instant::now() >= deadline {
                self.metrics.fetched_bytes.inc_by(total as u64);
                return out;
            }
            // Sleep until any partition's high watermark moves past what this round saw
            // (past the fetch offset is not enough: with less than `min_bytes` there, it
            // already is, and the loop would spin).
            let seen: Vec<Option<u64>> = out
                .iter()
                .map(|r| r.as_ref().ok().map(|rr| rr.high_watermark))
                .collect();
            let mut watches: Vec<_> = reqs
                .iter()
                .zip(&parts)
                .zip(seen)
                .filter_map(|((r, p), seen)| {
                    let part = p.as_ref()?;
                    let mut w = part.watch_high_watermark();
                    let past = seen.unwrap_or(r.offset).max(r.offset);
                    Some(Box::pin(async move {
                        let _ = w.wait_for(|h| *h > past).await;
                    }))
                })
                .collect();
            if watches.is_empty() {
                return out;
            }
            let any = futures::future::select_all(watches.drain(..));
            if tokio::time::timeout_at(deadline, any).await.is_err() {
                self.metrics.fetched_bytes.inc_by(total as u64);
                return out;
            }
        }
    }

    /// An offset of a partition this broker leads: `(offset, timestamp, leader epoch)` —
    /// `None` when no record is at or after a timestamp asked for; the timestamp is the one
    /// asked for when a record was found by it, else -1.
    pub async fn list_offset(
        &self,
        caller: &crate::auth::Caller,
        topic: &str,
        partition: u32,
        spec: OffsetSpec,
    ) -> Result<(Option<u64>, i64, i32), BrokerError> {
        check_topic(topic)?;
        self.authorize(caller, Op::Describe, Rt::Topic, topic)?;
        let (part, epoch) = self.leader_partition(topic, partition, false).await?;
        let limits = self.config.batch_limits();
        let p = part.clone();
        let found =
            tokio::task::spawn_blocking(move || -> Result<Option<(u64, i64)>, StorageError> {
                let l = shared::sys::lock(p.log());
                let hw = p.high_watermark();
                Ok(Some(match spec {
                    OffsetSpec::Earliest => (l.log_start_offset(), -1),
                    OffsetSpec::Latest => (hw, -1),
                    // Kafka answers (-1, -1) when no record is that recent; otherwise
                    // the record's own timestamp.
                    OffsetSpec::Timestamp(ts) => match l.record_at_timestamp(ts, &limits)? {
                        Some((o, ts)) if o < hw => (o, ts),
                        _ => return Ok(None),
                    },
                    OffsetSpec::MaxTimestamp => match l.max_timestamp_record(&limits)? {
                        Some((o, ts)) if o < hw => (o, ts),
                        _ => return Ok(None),
                    },
                }))
            })
            .await
            .map_err(|e| BrokerError::Internal(e.to_string()))??;
        Ok(found.map_or((None, -1, epoch), |(o, ts)| (Some(o), ts, epoch)))
    }
}
