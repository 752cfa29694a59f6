//! Replication: followers pull from their partition leaders; leaders keep the ISR.
//!
//! - [`run`] watches the metadata and keeps one follower task per partition this broker
//!   follows (restarted when the leader or its epoch changes), drops the leader state of
//!   partitions it no longer leads, and, as a leader, proposes ISR changes.
//! - A follower first truncates its log where it may disagree with the leader's — found by
//!   asking the leader where the follower's latest leader epoch ends (KIP-101/279), never
//!   by its own high watermark — then fetches from its log end, appends the leader's
//!   batches unchanged, fsyncs, and takes `min(leader HW, its log end)` as its HW. Its
//!   next fetch offset tells the leader how far it has come.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::Broker;
use crate::controller::state::{CommandResult, MetadataCommand, NodeId};
use crate::storage::manager::TopicPartition;
use crate::storage::{LogConfig, ValidatedBatches};

/// Bytes a follower asks for per fetch.
const REPLICA_FETCH_BYTES: u64 = 8 << 20;
/// How often a leader reviews its partitions' ISR.
const ISR_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// First and longest pause between a follower's failed fetch rounds.
const FOLLOW_RETRY_INITIAL: Duration = Duration::from_millis(100);
const FOLLOW_RETRY_MAX: Duration = Duration::from_secs(2);
/// How long a follower's fetch waits at the leader's log end.
const REPLICA_FETCH_WAIT_MS: u64 = 500;

struct Following {
    leader: NodeId,
    leader_epoch: i32,
    address: String,
    task: tokio::task::JoinHandle<()>,
}

/// Runs until `stop` changes.
pub async fn run(broker: Arc<Broker>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut meta = broker.controller.subscribe();
    let mut following: HashMap<TopicPartition, Following> = HashMap::new();
    let mut isr_tick = tokio::time::interval(ISR_CHECK_INTERVAL);
    isr_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The metadata the deleted-topics sweep last saw: topics only go away with a metadata
    // change, so the ISR ticks skip it.
    let mut swept: Option<Arc<crate::controller::state::MetadataState>> = None;
    loop {
        reconcile(&broker, &mut following);
        let now = broker.controller.metadata();
        if swept.as_ref().is_none_or(|s| !Arc::ptr_eq(s, &now)) {
            broker.drop_deleted_topics();
            swept = Some(now);
        }
        tokio::select! {
            _ = stop.changed() => break,
            r = meta.changed() => if r.is_err() { break },
            _ = isr_tick.tick() => maintain_isr(&broker).await,
        }
    }
    for (_, f) in following {
        f.task.abort();
    }
}

/// Starts and stops follower tasks to match the metadata.
fn reconcile(broker: &Arc<Broker>, following: &mut HashMap<TopicPartition, Following>) {
    let me = broker.config.node_id;
    let meta = broker.controller.metadata();
    let mut wanted: HashMap<TopicPartition, (NodeId, i32, String, LogConfig)> = HashMap::new();
    for t in meta.topics.values() {
        for p in &t.partitions {
            let tp = TopicPartition::new(&t.name, p.partition);
            if p.leader == me {
                continue;
            }
            // Not (or no longer) the leader here: drop the leader state, keep the log.
            broker.forget_leadership(&tp);
            if !p.replicas.contains(&me) {
                continue;
            }
            let Some(b) = meta.brokers.get(&p.leader) else {
                continue;
            };
            if b.fenced {
                continue;
            }
            wanted.insert(
                tp,
                (
                    p.leader,
                    p.leader_epoch,
                    b.address.clone(),
                    broker.log_config(&t.configs),
                ),
            );
        }
    }
    following.retain(|tp, f| {
        let keep = wanted
            .get(tp)
            .is_some_and(|(l, e, a, _)| *l == f.leader && *e == f.leader_epoch && *a == f.address);
        if !keep {
            f.task.abort();
        }
        keep
    });
    for (tp, (leader, leader_epoch, addr, config)) in wanted {
        if following.contains_key(&tp) {
            continue;
        }
        let task = tokio::spawn(follow(broker.clone(), tp.clone(), addr.clone(), config));
        following.insert(
            tp,
            Following {
                leader,
                leader_epoch,
                address: addr,
                task,
            },
        );
    }
}

/// As a leader: shrinks the ISR of partitions whose followers fell behind, grows it when
/// they caught up. The controller refuses the change if this broker's view is stale.
async fn maintain_isr(broker: &Arc<Broker>) {
    let me = broker.config.node_id;
    let meta = broker.controller.metadata();
    for part in broker.open_partitions() {
        let Some(pm) = meta
            .topics
            .get(&part.tp.topic)
            .and_then(|t| t.partitions.get(part.tp.partition as usize))
        else {
            continue;
        };
        if pm.leader != me || pm.replicas.len() < 2 {
            continue;
        }
        part.set_isr(me, &pm.isr);
        // Fenced brokers (dead, or in controlled shutdown) are not candidates.
        let candidates: Vec<NodeId> = pm
            .replicas
            .iter()
            .copied()
            .filter(|r| meta.brokers.get(r).is_some_and(|b| !b.fenced))
            .collect();
        // A follower joins only with everything since this leader's epoch began.
        let epoch_start = shared::sys::lock(part.log())
            .leader_epochs()
            .entries()
            .last()
            .map_or(0, |(_, start)| *start);
        let Some(isr) = part.wanted_isr(&candidates, broker.config.replica_lag_max, epoch_start)
        else {
            continue;
        };
        tracing::info!(partition = %part.tp.dir_name(), from = %ids(&pm.isr), to = %ids(&isr), "changing the ISR");
        let added: Vec<NodeId> = isr
            .iter()
            .copied()
            .filter(|r| !pm.isr.contains(r))
            .collect();
        part.begin_isr_add(&added);
        let cmd = MetadataCommand::AlterIsr {
            topic: part.tp.topic.clone(),
            partition: part.tp.partition,
            leader: me,
            leader_epoch: pm.leader_epoch,
            partition_epoch: pm.partition_epoch,
            isr,
        };
        match broker.controller.propose(cmd).await {
            Ok(CommandResult::Done) => {}
            Ok(other) => {
                part.abort_isr_add();
                tracing::info!(partition = %part.tp.dir_name(), result = ?other, "ISR change refused");
            }
            Err(e) => {
                part.abort_isr_add();
                tracing::warn!(partition = %part.tp.dir_name(), error = %e, "ISR change failed");
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error("{0}")]
    Http(String),
    #[error("{0}")]
    Storage(#[from] crate::storage::StorageError),
    #[error("{0}")]
    Batch(#[from] shared::BatchError),
}

/// When the leader's log starts above this replica's end, empties this replica and starts
/// it at the leader's log start.
async fn restart_at_leader_start(
    broker: &Arc<Broker>,
    tp: &TopicPartition,
    leader: &str,
    log: &crate::storage::manager::SharedLog,
    offset: u64,
) -> Result<(), FollowError> {
    let start = broker
        .peers
        .partition_offsets_at(
            &broker.peers.config().base_url(leader),
            &tp.topic,
            tp.partition,
        )
        .await
        .map_err(|e| FollowError::Http(e.to_string()))?
        .log_start_offset;
    if start > offset {
        tracing::warn!(partition = %tp.dir_name(), from = offset, to = start, "the leader's log starts past this replica's end: starting over there");
        shared::sys::lock(log).truncate_fully_and_start_at(start, shared::sys::now_ms())?;
    }
    Ok(())
}

/// One follower: truncate to agreement with the leader, then fetch and append forever.
async fn follow(broker: Arc<Broker>, tp: TopicPartition, leader: String, config: LogConfig) {
    let retry = client::RetryPolicy::new(FOLLOW_RETRY_INITIAL, FOLLOW_RETRY_MAX);
    let mut delays = retry.delays();
    loop {
        match follow_once(&broker, &tp, &leader, &config).await {
            Ok(()) => delays = retry.delays(),
            Err(e) => {
                tracing::debug!(partition = %tp.dir_name(), %leader, error = %e, "replica fetch failed; retrying");
                tokio::time::sleep(delays.next().unwrap_or(FOLLOW_RETRY_MAX)).await;
            }
        }
    }
}

async fn follow_once(
    broker: &Arc<Broker>,
    tp: &TopicPartition,
    leader: &str,
    config: &LogConfig,
) -> Result<(), FollowError> {
    let base = broker.peers.config().base_url(leader);
    let Some(topic_id) = broker
        .controller
        .metadata()
        .topics
        .get(&tp.topic)
        .map(|t| t.topic_id())
    else {
        return Err(FollowError::Http(format!("topic {} is gone", tp.topic)));
    };
    let (b, tp2, config2) = (broker.clone(), tp.clone(), config.clone());
    let log = tokio::task::spawn_blocking(move || b.open_log(&tp2, config2, topic_id))
        .await
        .map_err(|e| FollowError::Http(e.to_string()))??;
    // 1. Truncate where this log may have diverged (KIP-101/279): ask where the leader's
    //    log ends for this log's latest epoch; if the leader answers with an older epoch,
    //    this log's later epochs are not the leader's — cut to the end of that older epoch
    //    here too, and ask again, until both name the same epoch.
    for _round in 0..16 {
        let (latest, leo) = {
            let l = shared::sys::lock(&log);
            (l.leader_epochs().latest_epoch(), l.log_end_offset())
        };
        let Some(epoch) = latest else { break };
        let q = api::EpochEndQuery {
            topic: tp.topic.clone(),
            partition: tp.partition,
            epoch,
        };
        let reply = broker
            .peers
            .epoch_end_at(&base, &q)
            .await
            .map_err(|e| FollowError::Http(e.to_string()))?;
        let (leader_epoch, leader_end) = (i64::from(reply.epoch), reply.end_offset);
        let mut l = shared::sys::lock(&log);
        let target = if leader_epoch == i64::from(epoch) {
            leader_end.min(leo)
        } else {
            // The leader never had this epoch: keep at most what both have of the older one.
            let local_end = i32::try_from(leader_epoch)
                .ok()
                .filter(|e| *e >= 0)
                .and_then(|e| l.end_offset_for_epoch(e))
                .map_or(l.log_start_offset(), |(_, end)| end);
            leader_end.min(local_end).min(leo)
        };
        if target < leo {
            tracing::warn!(partition = %tp.dir_name(), from = leo, to = target, epoch, leader_epoch, "truncating a diverged follower log");
            l.truncate_to(target, shared::sys::now_ms())?;
        }
        if leader_epoch == i64::from(epoch) || target >= leo {
            break;
        }
    }
    // 2. Fetch and append.
    let limits = crate::storage::segment::scan_limits();
    loop {
        let offset = shared::sys::lock(&log).log_end_offset();
        let q = api::ReplicaFetchQuery {
            topic: tp.topic.clone(),
            partition: tp.partition,
            offset,
            replica: broker.config.node_id,
            max_bytes: Some(REPLICA_FETCH_BYTES),
            max_wait_ms: Some(REPLICA_FETCH_WAIT_MS),
        };
        let reply = match broker.peers.replica_fetch_at(&base, &q).await {
            Ok(r) => r,
            Err(e) => {
                if e.code() == Some(api::ErrorCode::OffsetOutOfRange) {
                    // Below the leader's log start (retention deleted what this replica
                    // lacks): start over where the leader's log starts. (Above its end is
                    // handled by the epoch truncation when this function runs again.)
                    restart_at_leader_start(broker, tp, leader, &log, offset).await?;
                }
                return Err(FollowError::Http(e.to_string()));
            }
        };
        let (hw, bytes) = (reply.high_watermark, reply.bytes);
        let log2 = log.clone();
        tokio::task::spawn_blocking(move || -> Result<(), FollowError> {
            let mut l = shared::sys::lock(&log2);
            if !bytes.is_empty() {
                let batches = ValidatedBatches::new(bytes.to_vec(), &limits)?;
                l.append_replica(batches, shared::sys::now_ms())?;
                // Durable before the next fetch reports it to the leader.
                l.flush()?;
            }
            let end = l.log_end_offset();
            l.set_high_watermark(hw.min(end));
            Ok(())
        })
        .await
        .map_err(|e| FollowError::Http(e.to_string()))??;
    }
}

/// Broker ids as `1,2,3` for log lines.
fn ids(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}
