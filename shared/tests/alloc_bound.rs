//! Decoding never allocates past `BatchLimits`: a counting global allocator measures the
//! peak of live heap bytes while hostile batches are decoded — compression bombs for
//! every codec (zstd with and without a stated content size), records claiming huge
//! lengths, a huge record count. The bound asserted is the decompression limit (plus the
//! `Vec` growth slack of reading to it), not what the bomb expands to.
//!
//! Only Rust-heap allocations are counted (gzip via miniz_oxide and snappy are pure Rust;
//! the output buffers of every codec are Rust `Vec`s); the zstd and lz4 C libraries'
//! internal buffers are bounded separately: zstd's window by `window_log_max` (a frame
//! asking for more is refused, checked here), lz4's by its 4 MiB maximum block size.
//!
//! One test in this binary, so nothing else allocates while it measures.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use shared::batch::{ATTRIBUTES_OFFSET, CRC_OFFSET, LENGTH_OFFSET, LOG_OVERHEAD, RECORDS_OFFSET};
use shared::records::DecodedRecords;
use shared::{BatchBuilder, BatchEncoder, BatchLimits, Compression, ProducerStamp};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards to the system allocator with the same layout; the counters
// only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let grow = new_size - layout.size();
                let now = LIVE.fetch_add(grow, Ordering::SeqCst) + grow;
                // A moved block briefly holds both copies.
                PEAK.fetch_max(now + layout.size(), Ordering::SeqCst);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::SeqCst);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak heap bytes above what was live before, while `f` runs.
fn peak_during(f: impl FnOnce()) -> usize {
    let base = LIVE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    f();
    PEAK.load(Ordering::SeqCst) - base
}

const LIMITS: BatchLimits = BatchLimits {
    batch_bytes_max: 8 << 20,
    uncompressed_bytes_max: 1 << 20,
};
/// The output buffer grows by doubling up to the limit + 1 byte, and a moved buffer is
/// counted twice while it moves; decoding state beyond that is small.
const ALLOWED: usize = 2 * (1 << 20) + (256 << 10);

/// A batch holding `block` as its (compressed) records block with `count` records.
fn with_block(codec: Compression, block: &[u8], count: i32) -> Vec<u8> {
    let mut b = BatchBuilder::new();
    b.push(0, None, Some(b"x"), &[]);
    let mut batch = BatchEncoder::new(Compression::None, 0)
        .unwrap()
        .encode(&b, ProducerStamp::NONE)
        .unwrap();
    batch.truncate(RECORDS_OFFSET);
    batch.extend_from_slice(block);
    let length = (batch.len() - LOG_OVERHEAD) as i32;
    batch[LENGTH_OFFSET..LENGTH_OFFSET + 4].copy_from_slice(&length.to_be_bytes());
    batch[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2]
        .copy_from_slice(&codec.attribute_bits().to_be_bytes());
    batch[RECORDS_OFFSET - 4..RECORDS_OFFSET].copy_from_slice(&count.to_be_bytes());
    let crc = shared::batch::compute_crc(&batch);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    batch
}

/// The uncompressed records block of a valid one-record batch.
fn valid_block() -> Vec<u8> {
    let mut b = BatchBuilder::new();
    b.push(0, None, Some(b"a valid record"), &[]);
    let batch = BatchEncoder::new(Compression::None, 0)
        .unwrap()
        .encode(&b, ProducerStamp::NONE)
        .unwrap();
    batch[RECORDS_OFFSET..].to_vec()
}

fn decode_all(batch: &[u8]) -> bool {
    match DecodedRecords::new(batch, &LIMITS) {
        Ok(d) => {
            for r in d.iter() {
                std::hint::black_box(r);
            }
            true
        }
        Err(_) => false,
    }
}

#[test]
fn hostile_batches_never_allocate_past_the_decompression_limit() {
    // 64 MiB of zeros: every codec packs it small enough to pass the batch size limit.
    let bomb = vec![0u8; 64 << 20];
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for codec in [Compression::Gzip, Compression::Snappy, Compression::Lz4] {
        let packed = shared::compression::compress(codec, &bomb).unwrap();
        cases.push((format!("{codec:?} bomb"), with_block(codec, &packed, 1)));
    }
    // zstd stating its content size (refused before decompressing) and streamed without it
    // (refused one byte past the limit).
    let stated = zstd::bulk::compress(&bomb, 3).unwrap();
    cases.push((
        "zstd bomb, size stated".into(),
        with_block(Compression::Zstd, &stated, 1),
    ));
    let mut streamed = Vec::new();
    {
        let mut e = zstd::stream::Encoder::new(&mut streamed, 3).unwrap();
        e.include_contentsize(false).unwrap();
        std::io::Write::write_all(&mut e, &bomb).unwrap();
        e.finish().unwrap();
    }
    cases.push((
        "zstd bomb, streamed".into(),
        with_block(Compression::Zstd, &streamed, 1),
    ));
    drop(bomb);
    // A tiny zstd frame asking for a 128 MiB window (zstd's default ceiling): the C decoder
    // would allocate it before reading a byte, so the window is refused.
    let mut wide = Vec::new();
    {
        let mut e = zstd::stream::Encoder::new(&mut wide, 3).unwrap();
        e.include_contentsize(false).unwrap();
        e.window_log(27).unwrap();
        std::io::Write::write_all(&mut e, &valid_block()).unwrap();
        e.finish().unwrap();
    }
    cases.push((
        "zstd 128 MiB window".into(),
        with_block(Compression::Zstd, &wide, 1),
    ));
    // Uncompressed records claiming more than they hold: a record length, a key length and
    // a header count of i32::MAX (zigzag varints), and a batch claiming 2^31-1 records.
    let huge_varint = [0xfe, 0xff, 0xff, 0xff, 0x0f];
    let mut record = huge_varint.to_vec();
    record.extend_from_slice(&[0u8; 64]);
    cases.push((
        "record length 2^31-1".into(),
        with_block(Compression::None, &record, 1),
    ));
    let mut record = vec![0x7e, 0x00, 0x00, 0x00];
    record.extend_from_slice(&huge_varint);
    record.extend_from_slice(&[0u8; 60]);
    cases.push((
        "key length 2^31-1".into(),
        with_block(Compression::None, &record, 1),
    ));
    cases.push((
        "record count 2^31-1".into(),
        with_block(Compression::None, &[0u8; 64], i32::MAX),
    ));
    for (what, batch) in &cases {
        let mut decoded = true;
        let peak = peak_during(|| decoded = decode_all(batch));
        assert!(!decoded, "{what}: decoded, should be refused");
        assert!(
            peak <= ALLOWED,
            "{what}: {peak} bytes allocated while decoding (limit {} + slack)",
            LIMITS.uncompressed_bytes_max
        );
        eprintln!("{what}: peak {peak} bytes");
    }
}
