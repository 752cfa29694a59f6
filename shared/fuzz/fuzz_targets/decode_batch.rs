//! Feeds arbitrary bytes to every decoding entry point of the codec: the batch iterator,
//! full decoding of each batch (decompressing within small limits), and iteration of every
//! record and header. The codec promises that no input panics or allocates past its limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::{BatchHeader, BatchIter, BatchLimits, DecodedRecords};

/// Small limits, so a decompression bomb shows up as an error rather than a slow input.
const LIMITS: BatchLimits = BatchLimits {
    batch_bytes_max: 1 << 20,
    uncompressed_bytes_max: 1 << 20,
};

fn touch(batch: &[u8]) -> usize {
    let Ok(decoded) = DecodedRecords::new(batch, &LIMITS) else {
        return 0;
    };
    let h = decoded.header();
    let _ = (h.compression(), h.last_offset(), h.next_offset());
    let _ = (h.last_sequence(), h.has_producer_id(), h.size());
    let mut acc = decoded.block_len();
    let mut records = 0usize;
    for r in decoded.iter() {
        records += 1;
        acc = acc
            .wrapping_add(r.attributes as usize)
            .wrapping_add(r.timestamp_delta as usize)
            .wrapping_add(r.offset_delta as usize)
            .wrapping_add(r.key.map_or(0, <[u8]>::len))
            .wrapping_add(r.value.map_or(0, <[u8]>::len));
        let mut headers = 0usize;
        for hd in r.headers() {
            headers += 1;
            acc = acc
                .wrapping_add(hd.key.len())
                .wrapping_add(hd.value.map_or(0, <[u8]>::len));
        }
        // Validated once at decode time, iteration must then yield everything.
        assert_eq!(headers, r.header_count());
    }
    assert_eq!(records, h.record_count as usize);
    acc
}

fuzz_target!(|data: &[u8]| {
    let mut acc = touch(data);
    let _ = BatchHeader::peek_size(data);
    let mut iter = BatchIter::new(data, LIMITS);
    while let Some(item) = iter.next() {
        match item {
            Ok((header, batch)) => {
                assert_eq!(batch.len(), header.size());
                acc = acc.wrapping_add(touch(batch));
            }
            Err(_) => {
                assert!(iter.next().is_none(), "BatchIter goes on after an error");
                break;
            }
        }
    }
    assert!(iter.position() <= data.len());
    std::hint::black_box(acc);
});
