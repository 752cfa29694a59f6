//! A record batch as a producer could send it: the CRC is fixed up first (so the fuzzer
//! reaches decompression and record parsing rather than stopping at the checksum), then the
//! batch is validated, decompressed within small limits and every record decoded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::BatchLimits;
use shared::batch::compute_crc;
use shared::records::DecodedRecords;

/// Where the CRC-32C sits in a batch header, and where the bytes it covers start.
const CRC_AT: usize = 17;
const CRC_FROM: usize = 21;

fuzz_target!(|data: &[u8]| {
    let mut batch = data.to_vec();
    if batch.len() >= CRC_FROM {
        // The batch ends where its length field (bytes 8..12, after the base offset) says.
        let length = i32::from_be_bytes([batch[8], batch[9], batch[10], batch[11]]);
        let end = usize::try_from(length)
            .map_or(batch.len(), |l| (12 + l).min(batch.len()))
            .max(CRC_FROM);
        let crc = compute_crc(&batch[..end]);
        batch[CRC_AT..CRC_FROM].copy_from_slice(&crc.to_be_bytes());
    }
    let limits = BatchLimits {
        batch_bytes_max: 1 << 20,
        uncompressed_bytes_max: 4 << 20,
    };
    if let Ok(decoded) = DecodedRecords::new(&batch, &limits) {
        for r in decoded.iter() {
            std::hint::black_box(r);
        }
    }
});
