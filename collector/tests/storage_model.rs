//! Model-based test of the partition log: random sequences of append / read / roll /
//! truncate / retention / clean close+reopen / crash (drop without shutdown, then cut the
//! tail at a random byte or flip a byte) checked against a plain in-memory model.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use collector::storage::log::PartitionLog;
use collector::storage::{FileCache, FlushPolicy, LogConfig, ValidatedBatches};
use proptest::prelude::*;
use shared::{BatchBuilder, BatchEncoder, BatchLimits, Compression, DecodedRecords, ProducerStamp};

#[derive(Debug, Clone)]
enum Op {
    Append {
        batches: u8,
        records: u8,
        value_len: u16,
        zstd: bool,
        ts_step: u16,
    },
    Read {
        pick: u32,
        max_bytes: u16,
    },
    Roll,
    Truncate {
        pick: u32,
    },
    Retention {
        keep_bytes: Option<u16>,
        keep_ms: Option<u16>,
        /// The high watermark this many batches below the log end first (retention never
        /// deletes a segment that is not wholly below it).
        hw_back: u8,
    },
    Reopen,
    Crash {
        damage: Damage,
    },
    FindTimestamp {
        pick: u32,
    },
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    None,
    Cut(u32),
    Flip(u32),
    Garbage(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u8..4, 1u8..6, 0u16..600, any::<bool>(), 0u16..50).prop_map(|(batches, records, value_len, zstd, ts_step)| Op::Append { batches, records, value_len, zstd, ts_step }),
        3 => (any::<u32>(), 1u16..4000).prop_map(|(pick, max_bytes)| Op::Read { pick, max_bytes }),
        1 => Just(Op::Roll),
        1 => any::<u32>().prop_map(|pick| Op::Truncate { pick }),
        2 => (proptest::option::of(0u16..3000), proptest::option::of(1u16..400), 0u8..4)
            .prop_map(|(keep_bytes, keep_ms, hw_back)| Op::Retention { keep_bytes, keep_ms, hw_back }),
        1 => Just(Op::Reopen),
        2 => prop_oneof![
            Just(Damage::None),
            any::<u32>().prop_map(Damage::Cut),
            any::<u32>().prop_map(Damage::Flip),
            (1u8..80).prop_map(Damage::Garbage),
        ].prop_map(|damage| Op::Crash { damage }),
        1 => any::<u32>().prop_map(|pick| Op::FindTimestamp { pick }),
    ]
}

/// One batch as the model knows it: offsets and record values.
#[derive(Debug, Clone)]
struct ModelBatch {
    base: u64,
    values: Vec<Vec<u8>>,
    timestamps: Vec<i64>,
    size: usize,
}

impl ModelBatch {
    fn next(&self) -> u64 {
        self.base + self.values.len() as u64
    }
}

struct Harness {
    dir: tempfile::TempDir,
    config: LogConfig,
    cache: Arc<FileCache>,
    log: Option<PartitionLog>,
    model: Vec<ModelBatch>,
    log_start: u64,
    end: u64,
    next_value: u64,
    now: i64,
}

fn limits() -> BatchLimits {
    BatchLimits::default()
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes: 4096,
            index_interval_bytes: 512,
            segment_index_bytes: 64,
            retention_ms: None,
            retention_bytes: None,
            flush: FlushPolicy::Always,
            ..LogConfig::default()
        };
        let cache = Arc::new(FileCache::new(4));
        let log = PartitionLog::open(
            &dir.path().join("t-0"),
            "t",
            0,
            config.clone(),
            cache.clone(),
            false,
            0,
        )
        .unwrap();
        Self {
            dir,
            config,
            cache,
            log: Some(log),
            model: Vec::new(),
            log_start: 0,
            end: 0,
            next_value: 0,
            now: 1_000,
        }
    }

    fn log(&mut self) -> &mut PartitionLog {
        self.log.as_mut().unwrap()
    }

    fn reopen(&mut self, clean: bool) {
        let path = self.dir.path().join("t-0");
        let log = PartitionLog::open(
            &path,
            "t",
            0,
            self.config.clone(),
            self.cache.clone(),
            clean,
            self.now,
        )
        .unwrap();
        self.log = Some(log);
    }

    fn append(&mut self, batches: u8, records: u8, value_len: u16, zstd: bool, ts_step: u16) {
        let mut enc = BatchEncoder::new(
            if zstd {
                Compression::Zstd
            } else {
                Compression::None
            },
            1,
        )
        .unwrap();
        let mut bytes = Vec::new();
        let mut pending = Vec::new();
        let mut base = self.end;
        for _ in 0..batches {
            let mut b = BatchBuilder::new();
            let mut values = Vec::new();
            let mut timestamps = Vec::new();
            for _ in 0..records {
                let mut v = format!("v{}-", self.next_value).into_bytes();
                v.resize(
                    v.len() + value_len as usize,
                    b'a' + (self.next_value % 26) as u8,
                );
                self.next_value += 1;
                self.now += i64::from(ts_step);
                b.push(self.now, None, Some(&v), &[(b"h", b"x")]);
                values.push(v);
                timestamps.push(self.now);
            }
            let start = bytes.len();
            enc.encode_into(&b, ProducerStamp::NONE, &mut bytes)
                .unwrap();
            let size = bytes.len() - start;
            pending.push(ModelBatch {
                base,
                values,
                timestamps,
                size,
            });
            base += u64::from(records);
        }
        let info = self
            .log()
            .append(ValidatedBatches::new(bytes, &limits()).unwrap(), 3, 0)
            .unwrap();
        assert_eq!(info.first_offset, self.end);
        assert_eq!(info.last_offset, base - 1);
        let end = self.log().log_end_offset();
        self.log().flush().unwrap();
        self.log().set_high_watermark(end);
        self.end = base;
        self.model.extend(pending);
    }

    /// Reads everything from the log start and compares it with the model.
    fn check_all(&mut self) {
        let log = self.log.as_ref().unwrap();
        assert_eq!(log.log_start_offset(), self.log_start, "log start");
        assert_eq!(log.log_end_offset(), self.end, "log end");
        let mut offset = self.log_start;
        let mut seen = Vec::new();
        while offset < self.end {
            let r = log.read(offset, 1000, None).unwrap();
            assert!(
                !r.bytes.is_empty(),
                "empty read at {offset} below end {}",
                self.end
            );
            for (h, batch) in shared::BatchIter::new(&r.bytes, limits()).map(Result::unwrap) {
                let d = DecodedRecords::new(batch, &limits()).unwrap();
                for rec in d.iter() {
                    let o = h.base_offset as u64 + rec.offset_delta as u64;
                    if o >= offset {
                        seen.push((o, rec.value.unwrap().to_vec()));
                    }
                }
                offset = h.next_offset() as u64;
            }
        }
        let expected: Vec<(u64, Vec<u8>)> = self
            .model
            .iter()
            .flat_map(|b| {
                b.values
                    .iter()
                    .enumerate()
                    .map(move |(i, v)| (b.base + i as u64, v.clone()))
            })
            .filter(|(o, _)| *o >= self.log_start)
            .collect();
        assert_eq!(seen, expected);
    }

    fn read(&mut self, pick: u32, max_bytes: u16) {
        let span = self.end - self.log_start + 1;
        let offset = self.log_start + u64::from(pick) % span;
        let r = self
            .log
            .as_ref()
            .unwrap()
            .read(offset, max_bytes as usize, None)
            .unwrap();
        if offset == self.end {
            assert!(r.bytes.is_empty());
            return;
        }
        // The first batch holds the offset; batches follow the model exactly.
        let first = self.model.iter().position(|b| b.next() > offset).unwrap();
        let mut n = 0;
        for (i, item) in shared::BatchIter::new(&r.bytes, limits()).enumerate() {
            let (h, batch) = item.unwrap();
            let m = &self.model[first + i];
            assert_eq!(h.base_offset as u64, m.base);
            assert_eq!(batch.len(), m.size);
            let d = DecodedRecords::new(batch, &limits()).unwrap();
            let values: Vec<_> = d.iter().map(|r| r.value.unwrap().to_vec()).collect();
            assert_eq!(values, m.values);
            n += batch.len();
        }
        assert_eq!(n, r.bytes.len());
        assert!(n > 0, "a read below the end returns at least one batch");
        assert!(n <= (max_bytes as usize).max(self.model[first].size));
    }

    fn truncate(&mut self, pick: u32) {
        let span = self.end - self.log_start + 1;
        let target = self.log_start + u64::from(pick) % span;
        let now = self.now;
        let new_end = self.log().truncate_to(target, now).unwrap();
        // Rounded down to the start of the batch holding the target.
        self.model.retain(|b| b.next() <= target);
        let expected_end = self
            .model
            .last()
            .map_or(self.log_start, ModelBatch::next)
            .max(self.log_start);
        assert_eq!(new_end, expected_end);
        self.end = new_end;
    }

    /// Retention by size and by time with the high watermark possibly below the end, checked
    /// against the model's own reckoning: the oldest segments (never the active one, never
    /// one reaching past the high watermark) go while the rest is still at least
    /// `retention_bytes`, or while their newest record is older than `retention_ms`; the log
    /// start moves to the end of the last one deleted. Segment boundaries are read from the
    /// log; sizes, timestamps and offsets come from the model.
    fn retention(&mut self, keep_bytes: Option<u16>, keep_ms: Option<u16>, hw_back: u8) {
        let hw = match self.model.len().checked_sub(usize::from(hw_back)) {
            Some(i) if hw_back > 0 => self.model[i].base.max(self.log_start),
            _ => self.end,
        };
        self.log().set_high_watermark(hw);
        let bases = self.log().segment_bases();
        let model_total: u64 = self.model.iter().map(|b| b.size as u64).sum();
        assert_eq!(self.log().size_bytes(), model_total, "log size");
        let mut total = model_total;
        let mut expected_start = self.log_start;
        for (i, base) in bases.iter().enumerate() {
            let Some(next_base) = bases.get(i + 1) else {
                break; // the active segment stays
            };
            let batches: Vec<&ModelBatch> = self
                .model
                .iter()
                .filter(|b| b.base >= *base && b.base < *next_base)
                .collect();
            let size: u64 = batches.iter().map(|b| b.size as u64).sum();
            let next = batches.last().map_or(*base, |b| b.next());
            let max_ts = batches
                .iter()
                .flat_map(|b| b.timestamps.iter().copied())
                .max()
                .unwrap_or(i64::MIN);
            if next > hw {
                break;
            }
            let expired = keep_ms.is_some_and(|ms| max_ts < self.now - i64::from(ms));
            let oversize = keep_bytes.is_some_and(|max| total - size >= u64::from(max));
            if !(expired || oversize) {
                break;
            }
            total -= size;
            expected_start = expected_start.max(next);
        }
        self.config.retention_bytes = keep_bytes.map(u64::from);
        self.config.retention_ms = keep_ms.map(i64::from);
        let c = self.config.clone();
        self.log().set_config(c).unwrap();
        let now = self.now;
        self.log().apply_retention(now).unwrap();
        let start = self.log().log_start_offset();
        assert_eq!(
            start, expected_start,
            "log start after retention (bytes {keep_bytes:?}, ms {keep_ms:?}, hw {hw}, segments {bases:?})"
        );
        assert_eq!(self.log().size_bytes(), total, "size after retention");
        self.log_start = start;
        self.model.retain(|b| b.base >= start);
        self.config.retention_bytes = None;
        self.config.retention_ms = None;
        let c = self.config.clone();
        self.log().set_config(c).unwrap();
        let end = self.log().log_end_offset();
        self.log().set_high_watermark(end);
    }

    fn crash(&mut self, damage: Damage) {
        let log = self.log.take().unwrap();
        let active_base = *log.segment_bases().last().unwrap();
        let active_path = self
            .dir
            .path()
            .join("t-0")
            .join(format!("{active_base:020}.log"));
        drop(log); // no close: an unclean stop
        let len = std::fs::metadata(&active_path).unwrap().len();
        let last = self
            .model
            .last()
            .filter(|b| b.base >= active_base && len > 0)
            .cloned();
        match (damage, last) {
            (Damage::Cut(at), Some(last)) => {
                let start = len - last.size as u64;
                let cut = start + u64::from(at) % last.size as u64;
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&active_path)
                    .unwrap()
                    .set_len(cut)
                    .unwrap();
                self.model.pop();
            }
            (Damage::Flip(at), Some(last)) => {
                // Any byte but the leader epoch (not covered by the CRC, as in Kafka).
                let start = len - last.size as u64;
                let mut rel = u64::from(at) % last.size as u64;
                if (12..17).contains(&rel) {
                    rel = 20;
                }
                let mut data = std::fs::read(&active_path).unwrap();
                data[(start + rel) as usize] ^= 0x5a;
                std::fs::write(&active_path, data).unwrap();
                self.model.pop();
            }
            (Damage::Garbage(n), _) => {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&active_path)
                    .unwrap();
                f.write_all(&vec![0xab; n as usize]).unwrap();
            }
            _ => {}
        }
        self.end = self
            .model
            .last()
            .map_or(self.log_start, ModelBatch::next)
            .max(self.log_start);
        self.reopen(false);
        let end = self.log().log_end_offset();
        self.log().set_high_watermark(end);
    }

    fn find_timestamp(&mut self, pick: u32) {
        let all: Vec<(u64, i64)> = self
            .model
            .iter()
            .flat_map(|b| {
                b.timestamps
                    .iter()
                    .enumerate()
                    .map(move |(i, t)| (b.base + i as u64, *t))
            })
            .filter(|(o, _)| *o >= self.log_start)
            .collect();
        let target = match all.len() {
            0 => 5,
            n => all[pick as usize % n].1 + i64::from(pick % 3) - 1,
        };
        let expected = all.iter().find(|(_, t)| *t >= target).map(|(o, _)| *o);
        let got = self
            .log
            .as_ref()
            .unwrap()
            .offset_for_timestamp(target, &limits())
            .unwrap();
        assert_eq!(got, expected, "first offset at or after timestamp {target}");
    }

    fn run(&mut self, op: Op) {
        match op {
            Op::Append {
                batches,
                records,
                value_len,
                zstd,
                ts_step,
            } => self.append(batches, records, value_len, zstd, ts_step),
            Op::Read { pick, max_bytes } => self.read(pick, max_bytes),
            Op::Roll => {
                let now = self.now;
                self.log().roll(now).unwrap();
            }
            Op::Truncate { pick } => self.truncate(pick),
            Op::Retention {
                keep_bytes,
                keep_ms,
                hw_back,
            } => self.retention(keep_bytes, keep_ms, hw_back),
            Op::Reopen => {
                self.log().close().unwrap();
                self.log = None;
                self.reopen(true);
            }
            Op::Crash { damage } => self.crash(damage),
            Op::FindTimestamp { pick } => self.find_timestamp(pick),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
    #[test]
    fn log_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        let mut h = Harness::new();
        for op in ops {
            h.run(op);
            h.check_all();
        }
    }
}
