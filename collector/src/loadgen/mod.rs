//! `collector bench`: the project's own load tool. Produces realistic generated log lines
//! (varied nginx access and JSON application lines, so compression ratios are honest) as
//! idempotent zstd batches from several producers, or consumes a topic, and reports
//! throughput and HDR-histogram latencies. With `--kafka` the same load goes over the
//! Kafka protocol ([`kafka`]), to compare the two front ends.

pub mod kafka;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use client::{ClientConfig, CollectorClient};
use hdrhistogram::Histogram;
use serde_json::json;
use shared::{
    BatchBuilder, BatchEncoder, BatchIter, BatchLimits, Compression, DecodedRecords, ProducerStamp,
};
use tokio::sync::Mutex;

/// A seeded generator (`rand`'s small RNG): the load must be reproducible, not secure.
#[derive(Debug, Clone)]
pub struct Rng(rand::rngs::SmallRng);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(rand::SeedableRng::seed_from_u64(seed))
    }
    pub fn next_u64(&mut self) -> u64 {
        rand::RngCore::next_u64(&mut self.0)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        rand::Rng::random_range(&mut self.0, 0..n.max(1))
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

const PATHS: &[&str] = &[
    "/",
    "/index.html",
    "/api/v1/orders",
    "/api/v1/users/me",
    "/static/app.js",
    "/static/app.css",
    "/login",
    "/search",
    "/healthz",
    "/api/v1/cart/items",
];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "curl/8.5.0",
    "Go-http-client/1.1",
    "kube-probe/1.29",
];
const METHODS: &[&str] = &["GET", "GET", "GET", "POST", "PUT", "DELETE"];
const LEVELS: &[&str] = &["info", "info", "info", "debug", "warn", "error"];
const MSGS: &[&str] = &[
    "request served",
    "cache miss",
    "order created",
    "payment authorized",
    "retrying upstream",
    "user logged in",
    "slow query",
    "connection reset by peer",
];
const SERVICES: &[&str] = &["checkout", "auth", "search", "inventory", "gateway"];

/// One realistic log line of roughly `target` bytes (nginx access or JSON app line).
pub fn log_line(rng: &mut Rng, target: usize) -> String {
    let mut line = if rng.below(2) == 0 {
        let status = [200, 200, 200, 201, 204, 301, 304, 400, 404, 500][rng.below(10) as usize];
        format!(
            "10.{}.{}.{} - - [24/Nov/2026:{:02}:{:02}:{:02} +0000] \"{} {}?id={} HTTP/1.1\" {} {} \"-\" \"{}\"",
            rng.below(256),
            rng.below(256),
            rng.below(256),
            rng.below(24),
            rng.below(60),
            rng.below(60),
            rng.pick(METHODS),
            rng.pick(PATHS),
            rng.below(1_000_000),
            status,
            rng.below(50_000),
            rng.pick(AGENTS)
        )
    } else {
        format!(
            "{{\"ts\":\"2026-11-24T{:02}:{:02}:{:02}.{:03}Z\",\"level\":\"{}\",\"service\":\"{}\",\"msg\":\"{}\",\"trace_id\":\"{:016x}\",\"user_id\":{},\"latency_ms\":{}}}",
            rng.below(24),
            rng.below(60),
            rng.below(60),
            rng.below(1000),
            rng.pick(LEVELS),
            rng.pick(SERVICES),
            rng.pick(MSGS),
            rng.next_u64(),
            rng.below(100_000),
            rng.below(3000)
        )
    };
    while line.len() < target {
        line.push_str(&format!(" k{}={:x}", rng.below(100), rng.next_u64() >> 40));
    }
    line
}

#[derive(Debug, Clone)]
pub struct ProduceOptions {
    pub collector: String,
    /// Timeouts and TLS of the connections to the collectors.
    pub client: ClientConfig,
    pub topic: String,
    pub partitions: u32,
    pub record_bytes: usize,
    pub batch_bytes: usize,
    pub acks: String,
    pub producers: usize,
    pub duration: Duration,
    /// Records per second over all producers; `None` = as fast as possible.
    pub rate: Option<u64>,
    pub zstd_level: i32,
    /// Send over the Kafka protocol to this bootstrap `host:port` (the topic is still
    /// created over HTTP).
    pub kafka: Option<String>,
}

#[derive(Debug, Default)]
struct Totals {
    records: AtomicU64,
    record_bytes: AtomicU64,
    wire_bytes: AtomicU64,
}

fn new_hist() -> Histogram<u64> {
    // 1 µs .. 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 sigfigs is valid"))
    })
}

/// Pre-encoded batch: compressed once; only producer fields change per send (CRC refreshed).
#[derive(Debug, Clone)]
struct Template {
    bytes: Vec<u8>,
    records: u32,
    record_bytes: u64,
}

fn templates(opts: &ProduceOptions, seed: u64, count: usize) -> Vec<Template> {
    let mut rng = Rng::new(seed);
    // Level 0 means no compression (as the option says), not zstd's default level.
    let codec = if opts.zstd_level == 0 {
        Compression::None
    } else {
        Compression::Zstd
    };
    let mut enc = match BatchEncoder::new(codec, opts.zstd_level) {
        Ok(e) => e,
        Err(_) => return Vec::new(),
    };
    (0..count)
        .filter_map(|_| {
            let mut b = BatchBuilder::with_capacity(opts.batch_bytes + 1024);
            let mut raw = 0u64;
            while b.block_bytes() < opts.batch_bytes {
                let line = log_line(&mut rng, opts.record_bytes);
                raw += line.len() as u64;
                b.push(
                    crate::broker::partition::now_ms(),
                    None,
                    Some(line.as_bytes()),
                    &[(b"host".as_slice(), b"bench-host".as_slice())],
                );
            }
            let bytes = enc.encode(&b, ProducerStamp::NONE).ok()?;
            Some(Template {
                bytes,
                records: b.len() as u32,
                record_bytes: raw,
            })
        })
        .collect()
}

fn stamp(t: &Template, producer_id: i64, seq: i32) -> Vec<u8> {
    let mut b = t.bytes.clone();
    b[shared::batch::PRODUCER_ID_OFFSET..shared::batch::PRODUCER_ID_OFFSET + 8]
        .copy_from_slice(&producer_id.to_be_bytes());
    b[shared::batch::PRODUCER_EPOCH_OFFSET..shared::batch::PRODUCER_EPOCH_OFFSET + 2]
        .copy_from_slice(&0i16.to_be_bytes());
    b[shared::batch::BASE_SEQUENCE_OFFSET..shared::batch::BASE_SEQUENCE_OFFSET + 4]
        .copy_from_slice(&seq.to_be_bytes());
    let crc = shared::batch::compute_crc(&b);
    b[shared::batch::CRC_OFFSET..shared::batch::CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    b
}

/// A producer's pause after a failed request (it then sends the next batch).
const ERROR_PAUSE: Duration = Duration::from_millis(50);
/// How often the progress bar updates.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);
/// Bytes asked per fetch by `bench consume`.
const CONSUME_FETCH_BYTES: u64 = 8 << 20;

/// Runs the produce load; returns the report as JSON.
pub async fn produce(opts: ProduceOptions, progress: bool) -> anyhow::Result<serde_json::Value> {
    let acks: api::Acks = opts.acks.parse().map_err(anyhow::Error::msg)?;
    let client = Arc::new(CollectorClient::new(
        std::slice::from_ref(&opts.collector),
        opts.client.clone(),
    )?);
    // Create the topic with the requested partitions (fine if it exists).
    let create = api::CreateTopic {
        partitions: Some(opts.partitions),
        ..api::CreateTopic::named(&opts.topic)
    };
    match client.create_topic(&create).await {
        Ok(_) => {}
        Err(e) if e.code() == Some(api::ErrorCode::TopicExists) => {}
        Err(e) => return Err(e.into()),
    }
    let totals = Arc::new(Totals::default());
    let hist = Arc::new(Mutex::new(new_hist()));
    let errors = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let bar = progress.then(|| {
        let b = indicatif::ProgressBar::new(opts.duration.as_secs());
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len}s {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let start = Instant::now();
    let deadline = start + opts.duration;
    let mut tasks = Vec::new();
    for w in 0..opts.producers {
        let (client, opts) = (client.clone(), opts.clone());
        let (totals, hist, errors) = (totals.clone(), hist.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let tpl = tokio::task::spawn_blocking({
                let o = opts.clone();
                move || templates(&o, 1 + w as u64, 16)
            })
            .await
            .unwrap_or_default();
            if tpl.is_empty() {
                return;
            }
            let mut kafka = match &opts.kafka {
                Some(addr) => match kafka::KafkaLoad::connect(addr, &opts.topic).await {
                    Ok(k) => Some(k),
                    Err(e) => {
                        *errors
                            .lock()
                            .await
                            .entry(format!("kafka: {e}"))
                            .or_default() += 1;
                        return;
                    }
                },
                None => None,
            };
            let pid = match &mut kafka {
                Some(k) => k.producer_id().await.unwrap_or(-1),
                None => client
                    .allocate_producer()
                    .await
                    .map_or(-1, |p| p.producer_id),
            };
            let mut seqs = vec![0i32; opts.partitions as usize];
            let per_producer_rate = opts.rate.map(|r| r as f64 / opts.producers as f64);
            let mut sent_records = 0u64;
            let mut local = new_hist();
            let mut i = w;
            while Instant::now() < deadline {
                let t = &tpl[i % tpl.len()];
                let p = (i % opts.partitions as usize) as u32;
                i += 1;
                if let Some(rate) = per_producer_rate {
                    let due = start + Duration::from_secs_f64(sent_records as f64 / rate);
                    if due > Instant::now() {
                        tokio::time::sleep_until(due.into()).await;
                    }
                }
                let body = stamp(t, pid, seqs[p as usize]);
                let wire = body.len() as u64;
                let sent = Instant::now();
                // The client routes to the partition's leader (refreshed on not_leader or
                // a dead connection).
                let code = match &mut kafka {
                    Some(k) => k
                        .produce(p, kafka_acks(acks), bytes::Bytes::from(body))
                        .await
                        .err(),
                    None => match client
                        .produce(&opts.topic, p, acks, bytes::Bytes::from(body))
                        .await
                    {
                        Ok(_) => None,
                        Err(e) => Some(e.code().map_or("connection", |c| c.as_str()).to_owned()),
                    },
                };
                let _ = local.record(sent.elapsed().as_micros().max(1) as u64);
                sent_records += u64::from(t.records);
                match code {
                    None => {
                        seqs[p as usize] = seqs[p as usize].wrapping_add(t.records as i32);
                        totals
                            .records
                            .fetch_add(u64::from(t.records), Ordering::Relaxed);
                        totals
                            .record_bytes
                            .fetch_add(t.record_bytes, Ordering::Relaxed);
                        totals.wire_bytes.fetch_add(wire, Ordering::Relaxed);
                    }
                    Some(c) => {
                        *errors.lock().await.entry(c).or_default() += 1;
                        tokio::time::sleep(ERROR_PAUSE).await;
                    }
                }
            }
            let _ = hist.lock().await.add(&local);
        }));
    }
    if let Some(bar) = &bar {
        while Instant::now() < deadline {
            tokio::time::sleep(PROGRESS_INTERVAL).await;
            let secs = start.elapsed().as_secs_f64().max(0.001);
            bar.set_position(start.elapsed().as_secs().min(opts.duration.as_secs()));
            bar.set_message(format!(
                "{:.1} MB/s raw, {:.0} records/s",
                totals.record_bytes.load(Ordering::Relaxed) as f64 / secs / 1e6,
                totals.records.load(Ordering::Relaxed) as f64 / secs
            ));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let secs = start.elapsed().as_secs_f64();
    let h = hist.lock().await;
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    let records = totals.records.load(Ordering::Relaxed);
    Ok(json!({
        "mode": "produce",
        "seconds": secs,
        "records": records,
        "records_per_sec": records as f64 / secs,
        "mb_per_sec_uncompressed": totals.record_bytes.load(Ordering::Relaxed) as f64 / secs / 1e6,
        "mb_per_sec_wire": totals.wire_bytes.load(Ordering::Relaxed) as f64 / secs / 1e6,
        "latency_ms": {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p99.9": q(0.999), "max": h.max() as f64 / 1000.0},
        "requests": h.len(),
        "errors": *errors.lock().await,
    }))
}

fn kafka_acks(acks: api::Acks) -> i16 {
    match acks {
        api::Acks::None => 0,
        api::Acks::Leader => 1,
        api::Acks::All => -1,
    }
}

/// What a consume read so far.
#[derive(Debug, Default)]
struct Tally {
    records: u64,
    value_bytes: u64,
    wire: u64,
}

impl Tally {
    /// Counts the records at or past `offset` in fetched bytes; returns the next offset.
    fn add(&mut self, bytes: &[u8], mut offset: u64, limits: &BatchLimits) -> anyhow::Result<u64> {
        self.wire += bytes.len() as u64;
        for item in BatchIter::new(bytes, *limits) {
            let (h, b) = item?;
            let d = DecodedRecords::new(b, limits)?;
            for r in d.iter() {
                if h.base_offset as u64 + r.offset_delta as u64 >= offset {
                    self.records += 1;
                    self.value_bytes += r.value.map_or(0, |v| v.len() as u64);
                }
            }
            offset = h.next_offset() as u64;
        }
        Ok(offset)
    }

    fn report(&self, start: Instant) -> serde_json::Value {
        let secs = start.elapsed().as_secs_f64().max(1e-9);
        json!({
            "mode": "consume",
            "seconds": secs,
            "records": self.records,
            "records_per_sec": self.records as f64 / secs,
            "mb_per_sec_uncompressed": self.value_bytes as f64 / secs / 1e6,
            "mb_per_sec_wire": self.wire as f64 / secs / 1e6,
        })
    }
}

/// Reads every partition of a topic from its start to the high watermark seen at start,
/// over HTTP or (with `kafka`) the Kafka protocol.
pub async fn consume(
    collector: &str,
    client: ClientConfig,
    topic: &str,
    kafka: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    if let Some(addr) = kafka {
        return consume_kafka(addr, topic).await;
    }
    let client = CollectorClient::new(&[collector.to_owned()], client)?;
    // (partition, log start offset, high watermark, leader): each leader knows its own.
    let mut parts: Vec<(u32, u64, u64, String)> = Vec::new();
    let leaders = client.topic_leaders(topic).await?;
    for (p, o) in client.log_offsets(topic).await? {
        if let Some(base) = leaders.get(&p) {
            parts.push((p, o.log_start_offset, o.high_watermark, base.clone()));
        }
    }
    let limits = BatchLimits::default();
    let start = Instant::now();
    let mut tally = Tally::default();
    for (p, start, hw, base) in parts {
        let mut offset = start;
        while offset < hw {
            let q = api::FetchQuery {
                offset,
                max_bytes: Some(CONSUME_FETCH_BYTES),
                max_wait_ms: None,
            };
            let bytes = client.fetch_at(&base, topic, p, &q).await?.bytes;
            if bytes.is_empty() {
                break;
            }
            offset = tally.add(&bytes, offset, &limits)?;
        }
    }
    Ok(tally.report(start))
}

/// `consume` over the Kafka protocol: Fetch from each partition's leader, from its log
/// start (ListOffsets) to the high watermark its first reply shows.
async fn consume_kafka(addr: &str, topic: &str) -> anyhow::Result<serde_json::Value> {
    let mut k = kafka::KafkaLoad::connect(addr, topic).await?;
    let limits = BatchLimits::default();
    let start = Instant::now();
    let mut tally = Tally::default();
    let max = i32::try_from(CONSUME_FETCH_BYTES)?;
    for p in k.partitions() {
        let (mut offset, mut hw) = (k.earliest(p).await?, None);
        loop {
            let (bytes, seen_hw) = k.fetch(p, offset, max).await?;
            let hw = *hw.get_or_insert(seen_hw);
            if bytes.is_empty() || offset >= hw {
                break;
            }
            offset = tally.add(&bytes, offset, &limits)?;
        }
    }
    Ok(tally.report(start))
}

/// Human rendering of a report.
pub fn render(v: &serde_json::Value) -> String {
    let mut out = format!(
        "{} {:.1}s: {} records, {:.0} records/s, {:.1} MB/s uncompressed, {:.1} MB/s wire",
        v["mode"].as_str().unwrap_or(""),
        v["seconds"].as_f64().unwrap_or(0.0),
        v["records"],
        v["records_per_sec"].as_f64().unwrap_or(0.0),
        v["mb_per_sec_uncompressed"].as_f64().unwrap_or(0.0),
        v["mb_per_sec_wire"].as_f64().unwrap_or(0.0),
    );
    if let Some(l) = v.get("latency_ms") {
        out.push_str(&format!(
            "\nlatency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            l["p50"].as_f64().unwrap_or(0.0),
            l["p90"].as_f64().unwrap_or(0.0),
            l["p99"].as_f64().unwrap_or(0.0),
            l["p99.9"].as_f64().unwrap_or(0.0),
            l["max"].as_f64().unwrap_or(0.0)
        ));
    }
    if let Some(e) = v.get("errors").and_then(|e| e.as_object())
        && !e.is_empty()
    {
        out.push_str(&format!(
            "\nerrors: {}",
            serde_json::Value::Object(e.clone())
        ));
    }
    out
}

/// Writes `bytes` of generated log lines (~`line_bytes` each, mixed nginx and JSON) spread
/// over `files` files `app-<n>.log` in `dir`: the input of the agent benchmark.
/// Returns `(lines, bytes)` written.
pub fn write_logs(
    dir: &std::path::Path,
    files: usize,
    bytes: u64,
    line_bytes: usize,
) -> std::io::Result<(u64, u64)> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let files = files.max(1);
    let per_file = bytes / files as u64;
    let (mut lines, mut total) = (0u64, 0u64);
    for n in 0..files {
        let f = std::fs::File::create(dir.join(format!("app-{n}.log")))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        let mut rng = Rng::new(n as u64 + 1);
        let mut written = 0u64;
        // The first line differs per file, so fingerprints do.
        let first = format!("file {n} started\n");
        w.write_all(first.as_bytes())?;
        written += first.len() as u64;
        lines += 1;
        while written < per_file {
            let mut l = log_line(&mut rng, line_bytes);
            l.push('\n');
            w.write_all(l.as_bytes())?;
            written += l.len() as u64;
            lines += 1;
        }
        w.flush()?;
        total += written;
    }
    Ok((lines, total))
}
