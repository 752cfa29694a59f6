//! Produce through power loss (`storage::durable::power_loss`): every write a partition
//! acknowledged survives a cut of everything not fsynced, and a failed fsync acknowledges
//! nothing. Acknowledging before the fsync (the bug class these find) loses records here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use shared::sys::lock;
use shared::{BatchBuilder, BatchEncoder, Compression, ProducerStamp};

use crate::broker::Partition;
use crate::storage::manager::TopicPartition;
use crate::storage::{LogConfig, LogManager, ValidatedBatches, durable};

/// Two records, `v{n}-0` and `v{n}-1`.
fn batch(n: u64) -> ValidatedBatches {
    let mut b = BatchBuilder::new();
    for i in 0..2 {
        b.push(0, None, Some(format!("v{n}-{i}").as_bytes()), &[]);
    }
    let bytes = BatchEncoder::new(Compression::None, 1)
        .unwrap()
        .encode(&b, ProducerStamp::NONE)
        .unwrap();
    ValidatedBatches::new(bytes, &shared::BatchLimits::default()).unwrap()
}

/// Every record value in the partition's log after reopening `dir` (a restart: recovery
/// runs), with its offset.
fn reopened(dir: &Path, tp: &TopicPartition) -> Vec<(u64, String)> {
    let logs = LogManager::open(&[dir.to_path_buf()], LogConfig::default(), 8).unwrap();
    let log = logs.get_or_create(tp, None).unwrap();
    let l = lock(&log);
    let limits = shared::BatchLimits::default();
    let mut out = Vec::new();
    let mut offset = l.log_start_offset();
    let end = l.log_end_offset();
    while offset < end {
        let r = l.read(offset, 1 << 20, Some(end)).unwrap();
        if r.bytes.is_empty() {
            break;
        }
        for item in shared::BatchIter::new(&r.bytes, limits) {
            let (h, body) = item.unwrap();
            for rec in shared::DecodedRecords::new(body, &limits).unwrap().iter() {
                let value = String::from_utf8_lossy(rec.value.unwrap()).into_owned();
                out.push((h.base_offset as u64 + rec.offset_delta as u64, value));
            }
            offset = h.next_offset() as u64;
        }
    }
    out
}

#[test]
fn every_acknowledged_produce_survives_a_power_loss() {
    let tp = TopicPartition::new("t", 0);
    let mut lost_total = 0;
    for seed in 0..24u64 {
        let dir = tempfile::tempdir().unwrap();
        let mut acked = Vec::new();
        {
            let logs =
                LogManager::open(&[dir.path().to_path_buf()], LogConfig::default(), 8).unwrap();
            let log = logs.get_or_create(&tp, None).unwrap();
            let p = Partition::open(tp.clone(), log.clone(), false).unwrap();
            for n in 0..3 + seed % 5 {
                let ack = p.produce(batch(n), 0).unwrap();
                acked.push((ack[0].base_offset, format!("v{n}-0")));
                acked.push((ack[0].base_offset + 1, format!("v{n}-1")));
            }
            // In flight at the cut: written, never acknowledged.
            lock(&log).append(batch(99), 0, 0).unwrap();
            // Dropped without closing: the process is gone.
        }
        lost_total += durable::power_loss(dir.path(), seed);
        let after = reopened(dir.path(), &tp);
        for (offset, value) in &acked {
            assert!(
                after.contains(&(*offset, value.clone())),
                "seed {seed}: acknowledged {value} at {offset} lost in a power cut; the log holds {after:?}"
            );
        }
    }
    assert!(
        lost_total > 0,
        "the cuts lost nothing: the test would not see an unsynced acknowledgement"
    );
}

#[test]
fn a_failed_fsync_acknowledges_nothing_and_nothing_after_it() {
    let tp = TopicPartition::new("t", 0);
    let dir = tempfile::tempdir().unwrap();
    let mut acked = Vec::new();
    {
        let logs = LogManager::open(&[dir.path().to_path_buf()], LogConfig::default(), 8).unwrap();
        let log = logs.get_or_create(&tp, None).unwrap();
        let p = Partition::open(tp.clone(), log.clone(), false).unwrap();
        for n in 0..3 {
            let ack = p.produce(batch(n), 0).unwrap();
            acked.push((ack[0].base_offset, format!("v{n}-0")));
        }
        let hw = p.high_watermark();
        let failures = logs.failures();
        durable::fail_syncs_under(dir.path(), true);
        assert!(failures.borrow().is_none());
        assert!(p.produce(batch(3), 0).is_err(), "acknowledged over EIO");
        // The node is told to stop (node::run hands off and exits for a restart).
        assert!(
            failures
                .borrow()
                .as_deref()
                .is_some_and(|f| f.contains("fsync failed")),
            "{:?}",
            failures.borrow()
        );
        // The kernel may have dropped the dirty pages with the error: a second fsync that
        // "succeeds" proves nothing, so the log stays refused even once fsyncs work again.
        durable::fail_syncs_under(dir.path(), false);
        assert!(
            p.produce(batch(4), 0).is_err(),
            "acknowledged after a failed fsync"
        );
        assert_eq!(
            p.high_watermark(),
            hw,
            "the high watermark passed what is durable"
        );
    }
    durable::power_loss(dir.path(), 7);
    let after = reopened(dir.path(), &tp);
    for (offset, value) in &acked {
        assert!(after.contains(&(*offset, value.clone())), "{value} lost");
    }
}
