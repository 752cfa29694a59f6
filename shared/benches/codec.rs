#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Codec benchmarks on a ~1 MiB zstd batch of varied, realistic log lines (nginx access lines
//! and JSON application lines, generated deterministically):
//! - `validate_restamp`: what the broker does per batch (header + CRC check, then rewrite the
//!   base offset and leader epoch). Throughput in compressed batch bytes.
//! - `decode_iterate`: what a consumer does (decompress, validate every record, then walk all
//!   records and headers). Throughput in uncompressed records-block bytes.
//! - `encode_zstd3`: what the agent does (push every line with its headers, then encode with
//!   zstd level 3). Throughput in raw line bytes.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shared::batch::{restamp, validate_batch};
use shared::{BatchBuilder, BatchEncoder, BatchLimits, Compression, DecodedRecords, ProducerStamp};

/// Target size of the compressed batch.
const BATCH_BYTES: usize = 1 << 20;
const ZSTD_LEVEL: i32 = 3;

/// Seeded (`rand`'s small RNG): deterministic, good enough to vary log lines.
struct Rng(rand::rngs::SmallRng);

impl Rng {
    fn next(&mut self) -> u64 {
        rand::RngCore::next_u64(&mut self.0)
    }
    fn below(&mut self, n: u64) -> u64 {
        rand::Rng::random_range(&mut self.0, 0..n.max(1))
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const METHODS: &[&str] = &[
    "GET", "GET", "GET", "GET", "POST", "POST", "PUT", "DELETE", "HEAD",
];
const PATHS: &[&str] = &[
    "/",
    "/index.html",
    "/api/v1/users/{id}",
    "/api/v1/orders/{id}/items",
    "/api/v2/search?q={word}&page={n}",
    "/static/js/app.{hex}.js",
    "/static/css/main.{hex}.css",
    "/images/products/{id}.jpg",
    "/healthz",
    "/login",
    "/cart/{id}/checkout",
];
const STATUSES: &[&str] = &[
    "200", "200", "200", "200", "200", "200", "304", "301", "404", "500", "201", "204",
];
const REFERERS: &[&str] = &[
    "-",
    "https://www.example.com/",
    "https://www.google.com/",
    "https://shop.example.com/cart",
];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "curl/8.5.0",
    "Go-http-client/1.1",
    "kube-probe/1.29",
];
const WORDS: &[&str] = &[
    "shoes", "laptop", "coffee", "chair", "lamp", "phone", "camera", "desk", "book", "bike",
];
const MONTHS: &[&str] = &[
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const LEVELS: &[&str] = &["info", "info", "info", "info", "debug", "warn", "error"];
const SERVICES: &[&str] = &["checkout", "payments", "inventory", "auth", "search"];
const MESSAGES: &[&str] = &[
    "request completed",
    "cache miss, loading from database",
    "payment authorised",
    "retrying upstream call",
    "user session refreshed",
    "inventory reserved",
    "slow query detected",
    "connection pool exhausted, waiting",
];
const HOSTS: &[&str] = &["web-01", "web-02", "web-03", "app-01", "app-02"];

fn expand(template: &str, rng: &mut Rng) -> String {
    template
        .replace("{id}", &rng.below(1_000_000).to_string())
        .replace("{n}", &(1 + rng.below(20)).to_string())
        .replace("{hex}", &format!("{:08x}", rng.next() as u32))
        .replace("{word}", rng.pick(WORDS))
}

fn nginx_line(rng: &mut Rng, t: u64) -> String {
    let secs = t / 1000;
    format!(
        "{}.{}.{}.{} - - [{:02}/{}/2024:{:02}:{:02}:{:02} +0000] \"{} {} HTTP/1.1\" {} {} \"{}\" \"{}\" rt={}.{:03}",
        10 + rng.below(200),
        rng.below(256),
        rng.below(256),
        1 + rng.below(254),
        1 + (secs / 86_400) % 28,
        MONTHS[((secs / (86_400 * 28)) % 12) as usize],
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60,
        rng.pick(METHODS),
        expand(rng.pick(PATHS), rng),
        rng.pick(STATUSES),
        rng.below(50_000),
        rng.pick(REFERERS),
        rng.pick(AGENTS),
        rng.below(3),
        rng.below(1000),
    )
}

fn json_line(rng: &mut Rng, t: u64) -> String {
    format!(
        "{{\"ts\":{},\"level\":\"{}\",\"service\":\"{}\",\"trace_id\":\"{:016x}{:016x}\",\"msg\":\"{}\",\"user_id\":{},\"latency_ms\":{}.{},\"path\":\"{}\"}}",
        t,
        rng.pick(LEVELS),
        rng.pick(SERVICES),
        rng.next(),
        rng.next(),
        rng.pick(MESSAGES),
        rng.below(5_000_000),
        rng.below(900),
        rng.below(10),
        expand(rng.pick(PATHS), rng),
    )
}

/// One input line: read time, source host and file, and the line itself.
struct Line {
    timestamp: i64,
    host: &'static str,
    path: &'static str,
    text: String,
}

fn lines(count: usize) -> Vec<Line> {
    let mut rng = Rng(rand::SeedableRng::seed_from_u64(0x7472_6962_7574_6172));
    let mut t = 1_717_000_000_000u64;
    (0..count)
        .map(|_| {
            t += rng.below(5);
            let (path, text) = if rng.below(2) == 0 {
                ("/var/log/nginx/access.log", nginx_line(&mut rng, t))
            } else {
                ("/var/log/app/app.json", json_line(&mut rng, t))
            };
            Line {
                timestamp: t as i64,
                host: rng.pick(HOSTS),
                path,
                text,
            }
        })
        .collect()
}

fn fill(builder: &mut BatchBuilder, lines: &[Line]) {
    builder.clear();
    for l in lines {
        builder.push(
            l.timestamp,
            None,
            Some(l.text.as_bytes()),
            &[
                (b"host", l.host.as_bytes()),
                (b"path", l.path.as_bytes()),
                (b"env", b"prod"),
            ],
        );
    }
}

fn encode(lines: &[Line]) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    fill(&mut builder, lines);
    BatchEncoder::new(Compression::Zstd, ZSTD_LEVEL)
        .unwrap()
        .encode(&builder, ProducerStamp::NONE)
        .unwrap()
}

/// Lines whose zstd batch is about [`BATCH_BYTES`], and that batch.
fn dataset() -> (Vec<Line>, Vec<u8>) {
    let probe = 20_000;
    let size = encode(&lines(probe)).len();
    let count = probe * BATCH_BYTES / size;
    let lines = lines(count);
    let batch = encode(&lines);
    (lines, batch)
}

fn benches(c: &mut Criterion) {
    let (lines, batch) = dataset();
    let limits = BatchLimits::default();
    let raw_bytes: usize = lines.iter().map(|l| l.text.len()).sum();
    let block_len = DecodedRecords::new(&batch, &limits).unwrap().block_len();
    eprintln!(
        "dataset: {} lines, {raw_bytes} raw line bytes, records block {block_len} bytes, \
         zstd batch {} bytes (ratio {:.2})",
        lines.len(),
        batch.len(),
        block_len as f64 / batch.len() as f64,
    );

    let mut group = c.benchmark_group("codec");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    group.throughput(Throughput::Bytes(batch.len() as u64));
    let mut stamped = batch.clone();
    let mut offset = 0i64;
    group.bench_function("validate_restamp", |b| {
        b.iter(|| {
            let header = validate_batch(black_box(&stamped), &limits).unwrap();
            offset += i64::from(header.record_count);
            restamp(&mut stamped, offset, 7);
            black_box(&stamped);
        })
    });

    group.throughput(Throughput::Bytes(block_len as u64));
    group.bench_function("decode_iterate", |b| {
        b.iter(|| {
            let decoded = DecodedRecords::new(black_box(&batch), &limits).unwrap();
            let mut acc = 0usize;
            for r in decoded.iter() {
                acc += r.value.map_or(0, <[u8]>::len);
                for h in r.headers() {
                    acc += h.key.len() + h.value.map_or(0, <[u8]>::len);
                }
            }
            black_box(acc)
        })
    });

    group.throughput(Throughput::Bytes(raw_bytes as u64));
    let mut builder = BatchBuilder::with_capacity(block_len);
    let mut encoder = BatchEncoder::new(Compression::Zstd, ZSTD_LEVEL).unwrap();
    let mut out = Vec::with_capacity(batch.len() * 2);
    group.bench_function("encode_zstd3", |b| {
        b.iter(|| {
            fill(&mut builder, black_box(&lines));
            out.clear();
            encoder
                .encode_into(&builder, ProducerStamp::NONE, &mut out)
                .unwrap();
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(codec, benches);
criterion_main!(codec);
