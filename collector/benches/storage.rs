//! Storage-layer benchmarks: append MB/s (1 MiB and 16 KiB batches, flush `always` and
//! `never`, and group commit with 4 writers), sequential read MB/s from the page cache, and
//! recovery time of a 1 GiB active segment. Run with `scripts/bench-storage.sh`, which also
//! measures the disk's own sequential-write ceiling with dd in the same run.
//!
//! Data goes under `TRIBUTARY_BENCH_DIR` (default: `target/bench-data`), on the real disk.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use collector::storage::log::PartitionLog;
use collector::storage::{FileCache, FlushPolicy, GroupCommit, LogConfig, ValidatedBatches};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shared::{BatchBuilder, BatchEncoder, BatchLimits, Compression, ProducerStamp};

fn bench_dir() -> PathBuf {
    let dir = std::env::var_os("TRIBUTARY_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A batch of about `bytes` bytes. The storage layer never looks inside, so the records are
/// incompressible filler stored uncompressed: the figure is pure storage cost.
fn batch(bytes: usize) -> Vec<u8> {
    let mut b = BatchBuilder::new();
    let mut x = 0x9e3779b97f4a7c15u64;
    let mut value = vec![0u8; 1000];
    while b.block_bytes() + 1100 < bytes {
        for v in value.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *v = x as u8;
        }
        b.push(0, None, Some(&value), &[]);
    }
    BatchEncoder::new(Compression::None, 0)
        .unwrap()
        .encode(&b, ProducerStamp::NONE)
        .unwrap()
}

fn config(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        segment_bytes: 512 << 20,
        retention_ms: None,
        flush,
        ..LogConfig::default()
    }
}

fn fresh_log(name: &str, cfg: LogConfig) -> (tempfile::TempDir, PartitionLog) {
    let tmp = tempfile::tempdir_in(bench_dir()).unwrap();
    let log = PartitionLog::open(
        &tmp.path().join(name),
        "bench",
        0,
        cfg,
        Arc::new(FileCache::new(64)),
        false,
        0,
    )
    .unwrap();
    (tmp, log)
}

fn append(c: &mut Criterion) {
    let limits = BatchLimits {
        batch_bytes_max: 2 << 20,
        ..BatchLimits::default()
    };
    let mut g = c.benchmark_group("append");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(1));
    for (label, size) in [("1MiB", 1 << 20), ("16KiB", 16 << 10)] {
        let bytes = batch(size);
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        for (flush_label, flush) in [("always", true), ("never", false)] {
            g.bench_function(BenchmarkId::new(label, flush_label), |b| {
                b.iter_custom(|iters| {
                    let (_tmp, mut log) = fresh_log(
                        "a-0",
                        config(if flush {
                            FlushPolicy::Always
                        } else {
                            FlushPolicy::Never
                        }),
                    );
                    let batches: Vec<_> = (0..iters)
                        .map(|_| ValidatedBatches::new(bytes.clone(), &limits).unwrap())
                        .collect();
                    let start = Instant::now();
                    for v in batches {
                        log.append(v, 0, 0).unwrap();
                        if flush {
                            log.flush().unwrap();
                        }
                    }
                    start.elapsed()
                });
            });
        }
        // Group commit: 4 writers, each waits until its batch is durable before the next.
        g.bench_function(BenchmarkId::new(label, "group-commit-4-writers"), |b| {
            b.iter_custom(|iters| {
                let (_tmp, log) = fresh_log("g-0", config(FlushPolicy::Always));
                let log = Arc::new(Mutex::new(log));
                let gc = Arc::new(GroupCommit::new());
                let per = iters.div_ceil(4);
                let start = Instant::now();
                let threads: Vec<_> = (0..4)
                    .map(|_| {
                        let (log, gc, bytes) = (log.clone(), gc.clone(), bytes.clone());
                        std::thread::spawn(move || {
                            for _ in 0..per {
                                let v = ValidatedBatches::new(bytes.clone(), &limits).unwrap();
                                let end =
                                    log.lock().unwrap().append(v, 0, 0).unwrap().last_offset + 1;
                                gc.wait_durable(&log, end).unwrap();
                            }
                        })
                    })
                    .collect();
                for t in threads {
                    t.join().unwrap();
                }
                start.elapsed() * iters as u32 / (per * 4) as u32
            });
        });
    }
    g.finish();
}

fn read(c: &mut Criterion) {
    let limits = BatchLimits {
        batch_bytes_max: 2 << 20,
        ..BatchLimits::default()
    };
    let (_tmp, mut log) = fresh_log("r-0", config(FlushPolicy::Never));
    let bytes = batch(64 << 10);
    for _ in 0..(256 << 20) / bytes.len() {
        log.append(ValidatedBatches::new(bytes.clone(), &limits).unwrap(), 0, 0)
            .unwrap();
    }
    let end = log.log_end_offset();
    log.set_high_watermark(end);
    let total = log.size_bytes();
    let mut g = c.benchmark_group("read");
    g.sample_size(10).throughput(Throughput::Bytes(total));
    g.bench_function("page-cache-256MiB-by-1MiB", |b| {
        b.iter(|| {
            let mut offset = 0;
            let mut n = 0;
            while offset < end {
                let r = log.read(offset, 1 << 20, None).unwrap();
                let last = shared::BatchIter::new(&r.bytes, limits)
                    .last()
                    .unwrap()
                    .unwrap()
                    .0;
                offset = last.next_offset() as u64;
                n += r.bytes.len();
            }
            n
        });
    });
    g.finish();
}

fn recovery(c: &mut Criterion) {
    let limits = BatchLimits {
        batch_bytes_max: 2 << 20,
        ..BatchLimits::default()
    };
    let tmp = tempfile::tempdir_in(bench_dir()).unwrap();
    let dir = tmp.path().join("rec-0");
    let cfg = LogConfig {
        segment_bytes: i32::MAX as u64,
        ..config(FlushPolicy::Never)
    };
    let cache = Arc::new(FileCache::new(8));
    {
        let mut log =
            PartitionLog::open(&dir, "bench", 0, cfg.clone(), cache.clone(), false, 0).unwrap();
        let bytes = batch(1 << 20);
        for _ in 0..1024 {
            log.append(ValidatedBatches::new(bytes.clone(), &limits).unwrap(), 0, 0)
                .unwrap();
        }
        log.flush().unwrap();
        // Dropped without close: the next open is a crash recovery.
    }
    let index = dir.join(format!("{:020}.index", 0));
    let size = std::fs::metadata(dir.join(format!("{:020}.log", 0)))
        .unwrap()
        .len();
    let mut g = c.benchmark_group("recovery");
    g.sample_size(10).throughput(Throughput::Bytes(1 << 30));
    // The whole segment: with no index entry to start from, every batch is validated.
    g.bench_function("1GiB-active-segment-whole", |b| {
        b.iter(|| {
            std::fs::remove_file(&index).unwrap();
            let log =
                PartitionLog::open(&dir, "bench", 0, cfg.clone(), cache.clone(), false, 0).unwrap();
            assert_eq!(log.recovery_report().bytes_scanned, size);
            log.log_end_offset()
        });
    });
    // The usual crash: the recovery point (stored by the last open) lies at the end, so
    // only the batch at the last index entry is scanned.
    g.bench_function("1GiB-active-segment-past-recovery-point", |b| {
        b.iter(|| {
            let log =
                PartitionLog::open(&dir, "bench", 0, cfg.clone(), cache.clone(), false, 0).unwrap();
            assert!(log.recovery_report().bytes_scanned <= 2 << 20);
            log.log_end_offset()
        });
    });
    g.finish();
}

criterion_group!(benches, append, read, recovery);
criterion_main!(benches);
