#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Integration tests of the RecordBatch v2 codec: a hand-derived test vector, restamping,
//! every typed error (including zstd bombs), and property tests (round trips, and that no
//! byte string — random, or a mutated valid batch — makes the decoder panic).

use std::io::Write;

use proptest::prelude::*;
use shared::batch::{
    ATTRIBUTES_OFFSET, BASE_SEQUENCE_OFFSET, BASE_TIMESTAMP_OFFSET, CRC_OFFSET,
    LAST_OFFSET_DELTA_OFFSET, LENGTH_OFFSET, LOG_OVERHEAD, MAGIC_OFFSET, MAX_TIMESTAMP_OFFSET,
    PARTITION_LEADER_EPOCH_OFFSET, PRODUCER_EPOCH_OFFSET, PRODUCER_ID_OFFSET, RECORD_COUNT_OFFSET,
    RECORDS_OFFSET, compute_crc, restamp, validate_batch,
};
use shared::{
    BatchBuilder, BatchEncoder, BatchError, BatchHeader, BatchIter, BatchLimits, Compression,
    DecodedRecords, ProducerStamp,
};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A bit-by-bit CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), written from the
/// definition so the test vector's CRC does not depend on the crate under test.
fn reference_crc32c(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    crc ^ 0xFFFF_FFFF
}

fn put(batch: &mut [u8], at: usize, bytes: &[u8]) {
    batch[at..at + bytes.len()].copy_from_slice(bytes);
}

/// Rewrites the CRC field to match the bytes (a no-op on a buffer too short to hold it).
fn fix_crc(batch: &mut [u8]) {
    if batch.len() >= ATTRIBUTES_OFFSET {
        let crc = compute_crc(batch);
        put(batch, CRC_OFFSET, &crc.to_be_bytes());
    }
}

/// Rewrites the length field to match the buffer (a no-op on a buffer too short to hold it).
fn fix_len(batch: &mut [u8]) {
    if batch.len() >= LOG_OVERHEAD {
        let length = i32::try_from(batch.len() - LOG_OVERHEAD).unwrap();
        put(batch, LENGTH_OFFSET, &length.to_be_bytes());
    }
}

/// Builds a batch by hand around an arbitrary records block, with a correct length and CRC.
fn wrap_block(block: &[u8], attributes: i16, count: i32) -> Vec<u8> {
    let mut b = vec![0u8; RECORDS_OFFSET];
    put(
        &mut b,
        PARTITION_LEADER_EPOCH_OFFSET,
        &(-1i32).to_be_bytes(),
    );
    b[MAGIC_OFFSET] = 2;
    put(&mut b, ATTRIBUTES_OFFSET, &attributes.to_be_bytes());
    put(&mut b, LAST_OFFSET_DELTA_OFFSET, &(count - 1).to_be_bytes());
    put(&mut b, BASE_TIMESTAMP_OFFSET, &1_000i64.to_be_bytes());
    put(&mut b, MAX_TIMESTAMP_OFFSET, &1_000i64.to_be_bytes());
    put(&mut b, PRODUCER_ID_OFFSET, &(-1i64).to_be_bytes());
    put(&mut b, PRODUCER_EPOCH_OFFSET, &(-1i16).to_be_bytes());
    put(&mut b, BASE_SEQUENCE_OFFSET, &(-1i32).to_be_bytes());
    put(&mut b, RECORD_COUNT_OFFSET, &count.to_be_bytes());
    b.extend_from_slice(block);
    fix_len(&mut b);
    fix_crc(&mut b);
    b
}

/// Runs every decoding entry point over `bytes` and touches every field it yields.
/// Returns a checksum so nothing is optimised away; must never panic.
fn exercise(bytes: &[u8], limits: &BatchLimits) -> usize {
    let mut acc = 0usize;
    let mut touch_batch = |batch: &[u8]| {
        if let Ok(decoded) = DecodedRecords::new(batch, limits) {
            let h = decoded.header();
            acc = acc.wrapping_add(h.size()).wrapping_add(decoded.block_len());
            let _ = (h.compression(), h.last_sequence(), h.has_producer_id());
            let _ = (h.last_offset(), h.next_offset());
            for r in decoded.iter() {
                acc = acc
                    .wrapping_add(r.attributes as usize)
                    .wrapping_add(r.timestamp_delta as usize)
                    .wrapping_add(r.offset_delta as usize)
                    .wrapping_add(r.key.map_or(0, <[u8]>::len))
                    .wrapping_add(r.value.map_or(0, <[u8]>::len))
                    .wrapping_add(r.header_count());
                for hd in r.headers() {
                    acc = acc
                        .wrapping_add(hd.key.len())
                        .wrapping_add(hd.value.map_or(0, <[u8]>::len));
                }
            }
        }
    };
    touch_batch(bytes);
    let _ = BatchHeader::peek_size(bytes);
    let mut iter = BatchIter::new(bytes, *limits);
    while let Some(item) = iter.next() {
        match item {
            Ok((header, batch)) => {
                assert_eq!(batch.len(), header.size());
                touch_batch(batch);
            }
            Err(_) => {
                assert!(iter.next().is_none(), "BatchIter goes on after an error");
                break;
            }
        }
    }
    assert!(iter.position() <= bytes.len());
    acc
}

fn small_limits() -> BatchLimits {
    BatchLimits {
        batch_bytes_max: 1 << 20,
        uncompressed_bytes_max: 1 << 20,
    }
}

// ---------------------------------------------------------------------------------------------
// (a) A test vector derived by hand from the Kafka protocol documentation
// ---------------------------------------------------------------------------------------------

const BASE_TS: i64 = 1_700_000_000_000; // 0x0000_018B_CFE5_6800
const VECTOR_CRC: u32 = 0x92CC_3577;

/// Two records, uncompressed:
/// - offset delta 0, timestamp delta 0, key null, value "hello", header host=a;
/// - offset delta 1, timestamp delta +300, key "k1", value "world", no headers.
///
/// Producer id 1234, epoch 5, base sequence 42; base offset 0 and leader epoch -1 as a
/// producer leaves them.
#[rustfmt::skip]
const VECTOR: [u8; 95] = [
    // ---- batch header ----
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // baseOffset: i64 = 0
    0x00, 0x00, 0x00, 0x53,                         // batchLength: i32 = 83 (95 - 12)
    0xff, 0xff, 0xff, 0xff,                         // partitionLeaderEpoch: i32 = -1
    0x02,                                           // magic: i8 = 2
    0x92, 0xcc, 0x35, 0x77,                         // crc: u32 = CRC-32C(bytes[21..95])
    0x00, 0x00,                                     // attributes: i16 = 0 (no compression)
    0x00, 0x00, 0x00, 0x01,                         // lastOffsetDelta: i32 = 1
    0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, // baseTimestamp: i64 = 1_700_000_000_000
    0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x69, 0x2c, // maxTimestamp: i64 = base + 300
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0xd2, // producerId: i64 = 1234
    0x00, 0x05,                                     // producerEpoch: i16 = 5
    0x00, 0x00, 0x00, 0x2a,                         // baseSequence: i32 = 42
    0x00, 0x00, 0x00, 0x02,                         // records count: i32 = 2
    // ---- record 0 (19 bytes) ----
    0x24,                                           // length: varint = 18 (zigzag 36)
    0x00,                                           // attributes: i8 = 0
    0x00,                                           // timestampDelta: varlong = 0
    0x00,                                           // offsetDelta: varint = 0
    0x01,                                           // keyLength: varint = -1 (null key)
    0x0a,                                           // valueLength: varint = 5
    b'h', b'e', b'l', b'l', b'o',                   // value
    0x02,                                           // headers count: varint = 1
    0x08,                                           //   header key length: varint = 4
    b'h', b'o', b's', b't',                         //   header key
    0x02,                                           //   header value length: varint = 1
    b'a',                                           //   header value
    // ---- record 1 (15 bytes) ----
    0x1c,                                           // length: varint = 14 (zigzag 28)
    0x00,                                           // attributes: i8 = 0
    0xd8, 0x04,                                     // timestampDelta: varlong = 300 (zigzag 600)
    0x02,                                           // offsetDelta: varint = 1
    0x04,                                           // keyLength: varint = 2
    b'k', b'1',                                     // key
    0x0a,                                           // valueLength: varint = 5
    b'w', b'o', b'r', b'l', b'd',                   // value
    0x00,                                           // headers count: varint = 0
];

const VECTOR_STAMP: ProducerStamp = ProducerStamp {
    producer_id: 1234,
    producer_epoch: 5,
    base_sequence: 42,
};

fn vector_builder() -> BatchBuilder {
    let mut b = BatchBuilder::new();
    b.push(BASE_TS, None, Some(b"hello"), &[(b"host", b"a")]);
    b.push(BASE_TS + 300, Some(b"k1"), Some(b"world"), &[]);
    b
}

#[test]
fn crc32c_is_castagnoli() {
    // The standard check value of CRC-32C ("123456789"), from the CRC catalogue / RFC 3720.
    assert_eq!(reference_crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    // The vector's CRC literal, recomputed independently of the crate.
    assert_eq!(reference_crc32c(&VECTOR[ATTRIBUTES_OFFSET..]), VECTOR_CRC);
    assert_eq!(compute_crc(&VECTOR), VECTOR_CRC);
    assert_eq!(
        u32::from_be_bytes(VECTOR[CRC_OFFSET..CRC_OFFSET + 4].try_into().unwrap()),
        VECTOR_CRC
    );
}

#[test]
fn encoder_produces_the_hand_derived_vector() {
    let builder = vector_builder();
    assert_eq!(builder.len(), 2);
    assert_eq!(builder.block_bytes(), 95 - RECORDS_OFFSET);
    let mut enc = BatchEncoder::new(Compression::None, 3).unwrap();
    let bytes = enc.encode(&builder, VECTOR_STAMP).unwrap();
    assert_eq!(bytes.as_slice(), VECTOR.as_slice());

    // encode_into appends after existing bytes without touching them.
    let mut out = b"prefix".to_vec();
    enc.encode_into(&builder, VECTOR_STAMP, &mut out).unwrap();
    assert_eq!(&out[..6], b"prefix");
    assert_eq!(&out[6..], VECTOR.as_slice());
}

#[test]
fn record_bytes_predicts_the_vector_records() {
    let mut b = BatchBuilder::new();
    assert_eq!(
        b.record_bytes(BASE_TS, None, Some(b"hello"), &[(b"host", b"a")]),
        19
    );
    b.push(BASE_TS, None, Some(b"hello"), &[(b"host", b"a")]);
    assert_eq!(
        b.record_bytes(BASE_TS + 300, Some(b"k1"), Some(b"world"), &[]),
        15
    );
}

#[test]
fn decoding_the_vector_returns_its_fields() {
    let limits = BatchLimits::default();
    let header = validate_batch(&VECTOR, &limits).unwrap();
    assert_eq!(
        header,
        BatchHeader {
            base_offset: 0,
            batch_length: 83,
            partition_leader_epoch: -1,
            magic: 2,
            crc: VECTOR_CRC,
            attributes: 0,
            last_offset_delta: 1,
            base_timestamp: BASE_TS,
            max_timestamp: BASE_TS + 300,
            producer_id: 1234,
            producer_epoch: 5,
            base_sequence: 42,
            record_count: 2,
        }
    );
    assert_eq!(header.size(), 95);
    assert_eq!(BatchHeader::peek_size(&VECTOR).unwrap(), 95);
    assert_eq!(header.compression().unwrap(), Compression::None);
    assert_eq!(header.last_offset(), 1);
    assert_eq!(header.next_offset(), 2);
    assert_eq!(header.last_sequence(), 43);
    assert!(header.has_producer_id());

    let decoded = DecodedRecords::new(&VECTOR, &limits).unwrap();
    assert_eq!(decoded.header(), &header);
    assert_eq!(decoded.block_len(), 34);
    let records: Vec<_> = decoded.iter().collect();
    assert_eq!(records.len(), 2);

    let r0 = &records[0];
    assert_eq!(r0.attributes, 0);
    assert_eq!(r0.timestamp_delta, 0);
    assert_eq!(r0.offset_delta, 0);
    assert_eq!(r0.key, None);
    assert_eq!(r0.value, Some(&b"hello"[..]));
    assert_eq!(r0.header_count(), 1);
    let h: Vec<_> = r0.headers().collect();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].key, b"host");
    assert_eq!(h[0].value, Some(&b"a"[..]));

    let r1 = &records[1];
    assert_eq!(r1.attributes, 0);
    assert_eq!(r1.timestamp_delta, 300);
    assert_eq!(header.base_timestamp + r1.timestamp_delta, BASE_TS + 300);
    assert_eq!(r1.offset_delta, 1);
    assert_eq!(r1.key, Some(&b"k1"[..]));
    assert_eq!(r1.value, Some(&b"world"[..]));
    assert_eq!(r1.header_count(), 0);
    assert_eq!(r1.headers().count(), 0);
}

#[test]
fn null_value_and_null_header_value_decode() {
    // A record with a null value and a header whose value is null (length -1): the builder
    // cannot write a null header value, so this block is written by hand.
    #[rustfmt::skip]
    let block = [
        0x12,             // length 9
        0x00, 0x00, 0x00, // attributes, timestamp delta 0, offset delta 0
        0x01, 0x01,       // key null, value null
        0x02,             // 1 header
        0x02, b'x',       //   key "x"
        0x01,             //   value null
    ];
    let batch = wrap_block(&block, 0, 1);
    let decoded = DecodedRecords::new(&batch, &BatchLimits::default()).unwrap();
    let r = decoded.iter().next().unwrap();
    assert_eq!((r.key, r.value), (None, None));
    let h: Vec<_> = r.headers().collect();
    assert_eq!(h.len(), 1);
    assert_eq!((h[0].key, h[0].value), (&b"x"[..], None));
}

#[test]
fn header_arithmetic_does_not_overflow() {
    // The base offset is not covered by the CRC, so a valid batch can carry any base offset;
    // the header's offset arithmetic must not panic on it (nor on any other field value).
    let limits = BatchLimits::default();
    for base_offset in [i64::MAX, i64::MAX - 1, i64::MIN, -1] {
        let mut batch = VECTOR;
        restamp(&mut batch, base_offset, i32::MIN);
        let h = validate_batch(&batch, &limits).unwrap();
        let _ = (h.last_offset(), h.next_offset(), h.last_sequence());
        exercise(&batch, &limits);
    }
    let mut batch = VECTOR;
    put(&mut batch, BASE_SEQUENCE_OFFSET, &i32::MAX.to_be_bytes());
    fix_crc(&mut batch);
    let h = validate_batch(&batch, &limits).unwrap();
    assert_eq!(h.last_sequence(), 0, "sequences wrap at i32::MAX to 0");
}

// ---------------------------------------------------------------------------------------------
// (b) restamp
// ---------------------------------------------------------------------------------------------

fn assert_restamped(before: &[u8], after: &[u8], base_offset: i64, epoch: i32) {
    assert_eq!(before.len(), after.len());
    assert_eq!(&after[0..8], &base_offset.to_be_bytes());
    assert_eq!(&after[8..12], &before[8..12]);
    assert_eq!(&after[12..16], &epoch.to_be_bytes());
    assert_eq!(&after[16..], &before[16..]);
    let old = validate_batch(before, &BatchLimits::default()).unwrap();
    let new = validate_batch(after, &BatchLimits::default()).unwrap();
    assert_eq!(new.base_offset, base_offset);
    assert_eq!(new.partition_leader_epoch, epoch);
    assert_eq!(
        BatchHeader {
            base_offset: old.base_offset,
            partition_leader_epoch: old.partition_leader_epoch,
            ..new
        },
        old
    );
}

#[test]
fn restamp_changes_only_offset_and_epoch() {
    let mut batch = VECTOR;
    restamp(&mut batch, 1_000_000, 7);
    assert_restamped(&VECTOR, &batch, 1_000_000, 7);
    let h = validate_batch(&batch, &BatchLimits::default()).unwrap();
    assert_eq!(h.crc, VECTOR_CRC);
    assert_eq!((h.last_offset(), h.next_offset()), (1_000_001, 1_000_002));
    let a = DecodedRecords::new(&VECTOR, &BatchLimits::default()).unwrap();
    let b = DecodedRecords::new(&batch, &BatchLimits::default()).unwrap();
    assert!(a.iter().eq(b.iter()));
    // Restamping twice is the same as restamping once.
    restamp(&mut batch, 5, 0);
    restamp(&mut batch, 1_000_000, 7);
    assert_restamped(&VECTOR, &batch, 1_000_000, 7);
}

#[test]
fn restamp_works_on_zstd_batches_without_decompressing() {
    let mut builder = BatchBuilder::new();
    for i in 0..200 {
        let line = format!("GET /item/{i} HTTP/1.1 200 {}", i * 37);
        builder.push(
            BASE_TS + i,
            None,
            Some(line.as_bytes()),
            &[(b"host", b"web-1")],
        );
    }
    let mut enc = BatchEncoder::new(Compression::Zstd, 3).unwrap();
    let original = enc.encode(&builder, ProducerStamp::NONE).unwrap();
    assert_eq!(
        BatchHeader::parse(&original)
            .unwrap()
            .compression()
            .unwrap(),
        Compression::Zstd
    );
    let mut batch = original.clone();
    restamp(&mut batch, 42, 3);
    assert_restamped(&original, &batch, 42, 3);
    let a = DecodedRecords::new(&original, &BatchLimits::default()).unwrap();
    let b = DecodedRecords::new(&batch, &BatchLimits::default()).unwrap();
    assert_eq!(b.iter().count(), 200);
    assert!(a.iter().eq(b.iter()));

    // A zstd batch whose block is not zstd at all (but whose CRC is right) still validates
    // and restamps: neither step decompresses. Only decoding the records finds the fault.
    let garbage = wrap_block(b"this is not a zstd frame", 4, 1);
    let mut restamped = garbage.clone();
    restamp(&mut restamped, 9, 9);
    assert_restamped(&garbage, &restamped, 9, 9);
    assert!(matches!(
        DecodedRecords::new(&restamped, &BatchLimits::default()),
        Err(BatchError::Zstd { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// (c) Typed errors
// ---------------------------------------------------------------------------------------------

#[test]
fn truncated_reports_need_and_have() {
    let limits = BatchLimits::default();
    assert_eq!(
        validate_batch(&VECTOR[..50], &limits),
        Err(BatchError::Truncated {
            what: "batch header",
            at: 0,
            need: 61,
            have: 50
        })
    );
    assert_eq!(
        validate_batch(&VECTOR[..90], &limits),
        Err(BatchError::Truncated {
            what: "batch",
            at: 0,
            need: 95,
            have: 90
        })
    );
    assert!(matches!(
        BatchHeader::peek_size(&VECTOR[..11]),
        Err(BatchError::Truncated {
            need: 12,
            have: 11,
            ..
        })
    ));
    assert!(matches!(
        DecodedRecords::new(&VECTOR[..94], &limits),
        Err(BatchError::Truncated {
            need: 95,
            have: 94,
            ..
        })
    ));
    // An iterator over a buffer ending mid-batch yields the good batch, then the error, then ends.
    let mut two = VECTOR.to_vec();
    two.extend_from_slice(&VECTOR[..70]);
    let items: Vec<_> = BatchIter::new(&two, limits).collect();
    assert_eq!(items.len(), 2);
    assert!(items[0].is_ok());
    assert!(matches!(
        items[1],
        Err(BatchError::Truncated {
            what: "batch",
            need: 95,
            have: 70,
            ..
        })
    ));
}

#[test]
fn crc_mismatch_reports_stored_and_computed() {
    let mut batch = VECTOR;
    batch[70] ^= 0x20; // "hello" -> "helLo"
    let computed = reference_crc32c(&batch[ATTRIBUTES_OFFSET..]);
    assert_ne!(computed, VECTOR_CRC);
    let expected = BatchError::CrcMismatch {
        base_offset: 0,
        stored: VECTOR_CRC,
        computed,
    };
    assert_eq!(
        validate_batch(&batch, &BatchLimits::default()),
        Err(expected.clone())
    );
    assert_eq!(
        DecodedRecords::new(&batch, &BatchLimits::default()).err(),
        Some(expected)
    );
    // A changed CRC field is caught the same way.
    let mut batch = VECTOR;
    batch[CRC_OFFSET] ^= 1;
    assert_eq!(
        validate_batch(&batch, &BatchLimits::default()),
        Err(BatchError::CrcMismatch {
            base_offset: 0,
            stored: VECTOR_CRC ^ 0x0100_0000,
            computed: VECTOR_CRC
        })
    );
}

#[test]
fn too_large_reports_size_and_max() {
    let limits = BatchLimits {
        batch_bytes_max: 94,
        ..BatchLimits::default()
    };
    assert_eq!(
        validate_batch(&VECTOR, &limits),
        Err(BatchError::TooLarge { size: 95, max: 94 })
    );
    let limits = BatchLimits {
        batch_bytes_max: 95,
        ..BatchLimits::default()
    };
    assert!(validate_batch(&VECTOR, &limits).is_ok());
    // Checked from the header alone, before the bytes need to be there.
    let mut huge = VECTOR;
    put(&mut huge, LENGTH_OFFSET, &i32::MAX.to_be_bytes());
    assert_eq!(
        validate_batch(&huge, &BatchLimits::default()),
        Err(BatchError::TooLarge {
            size: 12 + i32::MAX as usize,
            max: 16 * 1024 * 1024
        })
    );
}

#[test]
fn record_count_mismatch() {
    let limits = BatchLimits::default();
    // Header count disagrees with the last offset delta.
    let mut batch = VECTOR;
    put(&mut batch, RECORD_COUNT_OFFSET, &3i32.to_be_bytes());
    fix_crc(&mut batch);
    assert_eq!(
        validate_batch(&batch, &limits),
        Err(BatchError::RecordCountMismatch {
            declared: 3,
            found: 2
        })
    );
    // Header agrees with itself but claims more records than the block holds.
    put(&mut batch, LAST_OFFSET_DELTA_OFFSET, &2i32.to_be_bytes());
    fix_crc(&mut batch);
    assert!(validate_batch(&batch, &limits).is_ok());
    assert_eq!(
        DecodedRecords::new(&batch, &limits).err(),
        Some(BatchError::RecordCountMismatch {
            declared: 3,
            found: 2
        })
    );
    // ... or fewer.
    let mut batch = VECTOR;
    put(&mut batch, RECORD_COUNT_OFFSET, &1i32.to_be_bytes());
    put(&mut batch, LAST_OFFSET_DELTA_OFFSET, &0i32.to_be_bytes());
    fix_crc(&mut batch);
    assert_eq!(
        DecodedRecords::new(&batch, &limits).err(),
        Some(BatchError::RecordCountMismatch {
            declared: 1,
            found: 2
        })
    );
    // An uncompressed block of 34 bytes cannot hold more than 34 / 7 = 4 records.
    let mut batch = VECTOR;
    put(&mut batch, RECORD_COUNT_OFFSET, &5i32.to_be_bytes());
    put(&mut batch, LAST_OFFSET_DELTA_OFFSET, &4i32.to_be_bytes());
    fix_crc(&mut batch);
    assert_eq!(
        validate_batch(&batch, &limits),
        Err(BatchError::RecordCountMismatch {
            declared: 5,
            found: 4
        })
    );
}

#[test]
fn bad_magic() {
    for magic in [0u8, 1, 3, 0xff] {
        let mut batch = VECTOR;
        batch[MAGIC_OFFSET] = magic;
        // The magic byte is not covered by the CRC: the magic check alone catches it.
        assert_eq!(
            validate_batch(&batch, &BatchLimits::default()),
            Err(BatchError::BadMagic { magic: magic as i8 })
        );
    }
}

#[test]
fn other_header_errors() {
    let limits = BatchLimits::default();
    let mut batch = VECTOR;
    put(&mut batch, LENGTH_OFFSET, &48i32.to_be_bytes());
    assert_eq!(
        validate_batch(&batch, &limits),
        Err(BatchError::BadLength {
            length: 48,
            min: 49
        })
    );
    put(&mut batch, LENGTH_OFFSET, &(-1i32).to_be_bytes());
    assert!(matches!(
        BatchHeader::peek_size(&batch),
        Err(BatchError::BadLength { length: -1, .. })
    ));

    for (attributes, expected) in [
        (5i16, BatchError::UnsupportedCompression { codec: 5 }), // no such codec
        (7, BatchError::UnsupportedCompression { codec: 7 }),
        (0x10, BatchError::UnsupportedAttributes { attributes: 0x10 }), // transactional
        (0x20, BatchError::UnsupportedAttributes { attributes: 0x20 }), // control
        (0x40, BatchError::UnsupportedAttributes { attributes: 0x40 }),
    ] {
        let mut batch = VECTOR;
        put(&mut batch, ATTRIBUTES_OFFSET, &attributes.to_be_bytes());
        fix_crc(&mut batch);
        assert_eq!(validate_batch(&batch, &limits), Err(expected));
    }
    // Log-append-time timestamp type (bit 3) is accepted.
    let mut batch = VECTOR;
    put(&mut batch, ATTRIBUTES_OFFSET, &0x08i16.to_be_bytes());
    fix_crc(&mut batch);
    assert!(DecodedRecords::new(&batch, &limits).is_ok());

    let mut batch = VECTOR;
    put(&mut batch, RECORD_COUNT_OFFSET, &0i32.to_be_bytes());
    put(&mut batch, LAST_OFFSET_DELTA_OFFSET, &(-1i32).to_be_bytes());
    fix_crc(&mut batch);
    assert_eq!(validate_batch(&batch, &limits), Err(BatchError::Empty));

    let mut enc = BatchEncoder::new(Compression::None, 3).unwrap();
    assert_eq!(
        enc.encode(&BatchBuilder::new(), ProducerStamp::NONE),
        Err(BatchError::Empty)
    );
}

#[test]
fn record_level_errors() {
    let limits = BatchLimits::default();
    let r0 = RECORDS_OFFSET; // record 0 starts the block; record 1 starts at block offset 19
    let r1 = RECORDS_OFFSET + 19;
    let with = |at: usize, byte: u8| {
        let mut b = VECTOR;
        b[at] = byte;
        fix_crc(&mut b);
        DecodedRecords::new(&b, &limits).err()
    };
    // Record 1's offset delta says 2.
    assert_eq!(
        with(r1 + 4, 0x04),
        Some(BatchError::BadOffsetDelta {
            index: 1,
            offset_delta: 2
        })
    );
    // Record 0's value length (63) overruns the record.
    assert_eq!(
        with(r0 + 5, 0x7e),
        Some(BatchError::BadFieldLength {
            what: "value",
            length: 63,
            at: 5
        })
    );
    // Record 0's value length is -2.
    assert_eq!(
        with(r0 + 5, 0x03),
        Some(BatchError::BadFieldLength {
            what: "value",
            length: -2,
            at: 5
        })
    );
    // Record 0 has no headers but declares 18 bytes; its fields use 11.
    assert_eq!(
        with(r0 + 11, 0x00),
        Some(BatchError::RecordLengthMismatch {
            index: 0,
            declared: 18,
            used: 11
        })
    );
    // Record 0's length is -1.
    assert_eq!(
        with(r0, 0x01),
        Some(BatchError::BadFieldLength {
            what: "record",
            length: -1,
            at: 0
        })
    );
    // A header with a null key.
    assert_eq!(
        with(r0 + 12, 0x01),
        Some(BatchError::BadFieldLength {
            what: "header key",
            length: -1,
            at: 13
        })
    );
    // A varint that never ends (every byte has its continuation bit) in the timestamp delta.
    let mut block = vec![0x18u8, 0x00];
    block.extend_from_slice(&[0xff; 11]);
    block.push(0x00);
    assert!(matches!(
        DecodedRecords::new(&wrap_block(&block, 0, 1), &limits),
        Err(BatchError::BadVarint { at: 2 })
    ));
}

/// The content size a zstd frame header states (None: not stated).
fn content_size(frame: &[u8]) -> Option<u64> {
    zstd::zstd_safe::get_frame_content_size(frame).expect("a zstd frame header")
}

/// 50 MiB of zeros, compressed to a few kilobytes.
const BOMB_BYTES: usize = 50 << 20;
const BOMB_LIMITS: BatchLimits = BatchLimits {
    batch_bytes_max: 16 << 20,
    uncompressed_bytes_max: 1 << 20,
};

#[test]
fn zstd_bomb_with_content_size_is_refused() {
    let zeros = vec![0u8; BOMB_BYTES];
    let frame = zstd::bulk::compress(&zeros, 3).unwrap();
    assert!(frame.len() < 64 << 10, "{}", frame.len());
    assert_eq!(content_size(&frame), Some(BOMB_BYTES as u64));
    let batch = wrap_block(&frame, 4, 1);
    assert!(validate_batch(&batch, &BOMB_LIMITS).is_ok());
    assert_eq!(
        DecodedRecords::new(&batch, &BOMB_LIMITS).err(),
        Some(BatchError::DecompressedTooLarge { max: 1 << 20 })
    );
}

#[test]
fn zstd_bomb_without_content_size_is_refused() {
    let zeros = vec![0u8; BOMB_BYTES];
    // The streaming encoder does not know the size up front and so does not write it.
    let mut encoder = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    encoder.write_all(&zeros).unwrap();
    let frame = encoder.finish().unwrap();
    assert!(frame.len() < 64 << 10, "{}", frame.len());
    assert_eq!(content_size(&frame), None);
    let batch = wrap_block(&frame, 4, 1);
    assert!(validate_batch(&batch, &BOMB_LIMITS).is_ok());
    assert_eq!(
        DecodedRecords::new(&batch, &BOMB_LIMITS).err(),
        Some(BatchError::DecompressedTooLarge { max: 1 << 20 })
    );
}

#[test]
fn zstd_limit_is_inclusive_with_and_without_content_size() {
    let block = &VECTOR[RECORDS_OFFSET..];
    let with_size = zstd::bulk::compress(block, 3).unwrap();
    let mut encoder = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    encoder.write_all(block).unwrap();
    let without_size = encoder.finish().unwrap();
    assert_eq!(content_size(&without_size), None);
    for frame in [with_size, without_size] {
        let mut batch = wrap_block(&frame, 4, 2);
        // The same header fields as the vector, so the records decode to the same values.
        put(&mut batch, BASE_TIMESTAMP_OFFSET, &BASE_TS.to_be_bytes());
        fix_crc(&mut batch);
        let at_limit = BatchLimits {
            uncompressed_bytes_max: block.len(),
            ..BatchLimits::default()
        };
        let decoded = DecodedRecords::new(&batch, &at_limit).unwrap();
        assert_eq!(decoded.block_len(), block.len());
        let plain = DecodedRecords::new(&VECTOR, &at_limit).unwrap();
        assert!(decoded.iter().eq(plain.iter()));
        let below = BatchLimits {
            uncompressed_bytes_max: block.len() - 1,
            ..BatchLimits::default()
        };
        assert_eq!(
            DecodedRecords::new(&batch, &below).err(),
            Some(BatchError::DecompressedTooLarge {
                max: block.len() - 1
            })
        );
    }
}

#[test]
fn zstd_garbage_is_a_zstd_error() {
    let limits = BatchLimits::default();
    let frame = zstd::bulk::compress(&VECTOR[RECORDS_OFFSET..], 3).unwrap();
    let cases: Vec<Vec<u8>> = vec![
        b"definitely not zstd".to_vec(),
        vec![0u8; 100],
        // A real frame cut short.
        frame[..frame.len() - 3].to_vec(),
        // A real frame followed by garbage.
        [frame.as_slice(), b"junk"].concat(),
        // A real frame with a corrupted body.
        {
            let mut f = frame.clone();
            let n = f.len();
            f[n / 2] ^= 0xff;
            f[n - 1] ^= 0xff;
            f
        },
    ];
    for (i, block) in cases.iter().enumerate() {
        let batch = wrap_block(block, 4, 2);
        assert!(validate_batch(&batch, &limits).is_ok(), "case {i}");
        match DecodedRecords::new(&batch, &limits) {
            Err(BatchError::Zstd { message }) => assert!(!message.is_empty(), "case {i}"),
            // A corrupted body can still decompress; its records then fail to parse.
            Err(_) if i == 4 => {}
            other => panic!("case {i}: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (d) Properties
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Rec {
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn rec() -> impl Strategy<Value = Rec> {
    let timestamp = prop_oneof![
        // Realistic millisecond times: deltas of either sign against the first record.
        4 => 1_600_000_000_000i64..1_800_000_000_000,
        1 => -1_000i64..1_000,
        1 => any::<i64>(),
    ];
    let value = prop_oneof![
        1 => Just(None),
        6 => bytes(200).prop_map(Some),
        1 => bytes(3000).prop_map(Some),
    ];
    (
        timestamp,
        prop::option::of(bytes(40)),
        value,
        prop::collection::vec((bytes(20), bytes(40)), 0..5),
    )
        .prop_map(|(timestamp, key, value, headers)| Rec {
            timestamp,
            key,
            value,
            headers,
        })
}

fn compression() -> impl Strategy<Value = Compression> {
    prop_oneof![Just(Compression::None), Just(Compression::Zstd)]
}

fn stamp() -> impl Strategy<Value = ProducerStamp> {
    prop_oneof![
        Just(ProducerStamp::NONE),
        (0i64..i64::MAX, 0i16..i16::MAX, 0i32..i32::MAX).prop_map(|(id, epoch, seq)| {
            ProducerStamp {
                producer_id: id,
                producer_epoch: epoch,
                base_sequence: seq,
            }
        }),
    ]
}

fn build(recs: &[Rec]) -> BatchBuilder {
    let mut b = BatchBuilder::new();
    for r in recs {
        let headers: Vec<(&[u8], &[u8])> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        let before = b.block_bytes();
        let predicted = b.record_bytes(r.timestamp, r.key.as_deref(), r.value.as_deref(), &headers);
        b.push(r.timestamp, r.key.as_deref(), r.value.as_deref(), &headers);
        assert_eq!(b.block_bytes() - before, predicted);
    }
    b
}

fn encode(recs: &[Rec], compression: Compression, stamp: ProducerStamp) -> Vec<u8> {
    let mut enc = BatchEncoder::new(compression, 3).unwrap();
    enc.encode(&build(recs), stamp).unwrap()
}

fn check_decoded(batch: &[u8], recs: &[Rec], compression: Compression, stamp: ProducerStamp) {
    let decoded = DecodedRecords::new(batch, &BatchLimits::default()).unwrap();
    let h = decoded.header();
    assert_eq!(h.compression().unwrap(), compression);
    assert_eq!(h.record_count as usize, recs.len());
    assert_eq!(h.last_offset_delta as usize, recs.len() - 1);
    assert_eq!(h.base_timestamp, recs[0].timestamp);
    assert_eq!(
        h.max_timestamp,
        recs.iter().map(|r| r.timestamp).max().unwrap()
    );
    assert_eq!(
        (h.producer_id, h.producer_epoch, h.base_sequence),
        (stamp.producer_id, stamp.producer_epoch, stamp.base_sequence)
    );
    assert_eq!(decoded.iter().count(), recs.len());
    let mut n = 0;
    for (i, (got, want)) in decoded.iter().zip(recs).enumerate() {
        assert_eq!(got.attributes, 0);
        assert_eq!(got.offset_delta as usize, i);
        assert_eq!(
            h.base_timestamp.wrapping_add(got.timestamp_delta),
            want.timestamp
        );
        assert_eq!(got.key, want.key.as_deref());
        assert_eq!(got.value, want.value.as_deref());
        assert_eq!(got.header_count(), want.headers.len());
        let headers: Vec<_> = got.headers().map(|h| (h.key, h.value)).collect();
        let expected: Vec<_> = want
            .headers
            .iter()
            .map(|(k, v)| (k.as_slice(), Some(v.as_slice())))
            .collect();
        assert_eq!(headers, expected);
        n += 1;
    }
    assert_eq!(n, recs.len());
}

/// One edit of a byte string; positions are taken modulo the length.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Set { at: usize, byte: u8 },
    Insert { at: usize, byte: u8 },
    Delete { at: usize },
    Truncate { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        3 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        2 => any::<usize>().prop_map(|at| Mutation::Delete { at }),
        1 => any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len();
    if len == 0 {
        if let Mutation::Insert { byte, .. } = m {
            bytes.push(*byte);
        }
        return;
    }
    match *m {
        Mutation::Flip { at, bit } => bytes[at % len] ^= 1 << bit,
        Mutation::Set { at, byte } => bytes[at % len] = byte,
        Mutation::Insert { at, byte } => bytes.insert(at % (len + 1), byte),
        Mutation::Delete { at } => {
            bytes.remove(at % len);
        }
        Mutation::Truncate { at } => bytes.truncate(at % len),
    }
}

// 256 cases each (proptest's default); set PROPTEST_CASES for a longer run.
proptest! {

    #[test]
    fn round_trip(
        recs in prop::collection::vec(rec(), 1..30),
        compression in compression(),
        stamp in stamp(),
    ) {
        let batch = encode(&recs, compression, stamp);
        let h = validate_batch(&batch, &BatchLimits::default()).unwrap();
        prop_assert_eq!(h.size(), batch.len());
        prop_assert_eq!((h.base_offset, h.partition_leader_epoch), (0, -1));
        check_decoded(&batch, &recs, compression, stamp);
        // Restamped, it decodes the same.
        let mut restamped = batch.clone();
        restamp(&mut restamped, 123_456, 9);
        check_decoded(&restamped, &recs, compression, stamp);
    }

    #[test]
    fn batch_iter_walks_concatenated_batches(
        batches in prop::collection::vec(
            (prop::collection::vec(rec(), 1..8), compression(), stamp()),
            1..6,
        ),
        cut in any::<usize>(),
    ) {
        let mut buf = Vec::new();
        let mut starts = Vec::new();
        let mut next_offset = 0i64;
        for (recs, compression, stamp) in &batches {
            let start = buf.len();
            starts.push(start);
            let mut enc = BatchEncoder::new(*compression, 3).unwrap();
            enc.encode_into(&build(recs), *stamp, &mut buf).unwrap();
            restamp(&mut buf[start..], next_offset, 1);
            next_offset += recs.len() as i64;
        }
        let limits = BatchLimits::default();
        let mut iter = BatchIter::new(&buf, limits);
        let mut expected_offset = 0i64;
        for (i, (recs, compression, stamp)) in batches.iter().enumerate() {
            prop_assert_eq!(iter.position(), starts[i]);
            let (h, bytes) = iter.next().unwrap().unwrap();
            prop_assert_eq!(h.base_offset, expected_offset);
            prop_assert_eq!(h.partition_leader_epoch, 1);
            prop_assert_eq!(bytes.len(), h.size());
            prop_assert_eq!(bytes.as_ptr(), buf[starts[i]..].as_ptr());
            check_decoded(bytes, recs, *compression, *stamp);
            expected_offset = h.next_offset();
        }
        prop_assert!(iter.next().is_none());
        prop_assert_eq!(iter.position(), buf.len());

        // Cut the buffer inside the last batch: every batch before it is yielded, then one
        // truncation error, then nothing.
        let last = *starts.last().unwrap();
        let cut_at = last + 1 + cut % (buf.len() - last - 1);
        let items: Vec<_> = BatchIter::new(&buf[..cut_at], limits).collect();
        prop_assert_eq!(items.len(), batches.len());
        prop_assert!(items[..batches.len() - 1].iter().all(Result::is_ok));
        let is_truncated = matches!(items.last(), Some(Err(BatchError::Truncated { .. })));
        prop_assert!(is_truncated, "{:?}", items.last());
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        exercise(&bytes, &small_limits());
        exercise(&bytes, &BatchLimits::default());
    }

    #[test]
    fn random_headers_never_panic(
        header in prop::collection::vec(any::<u8>(), RECORDS_OFFSET..RECORDS_OFFSET + 1),
        block in bytes(300),
        magic_two in any::<bool>(),
        fix in any::<bool>(),
    ) {
        // Random header fields, but often magic 2 and a right length and CRC, so the random
        // values reach the checks behind those.
        let mut batch = [header, block].concat();
        if magic_two {
            batch[MAGIC_OFFSET] = 2;
        }
        if fix {
            fix_len(&mut batch);
            fix_crc(&mut batch);
        }
        exercise(&batch, &small_limits());
    }

    #[test]
    fn random_record_blocks_never_panic(
        block in bytes(400),
        count in 1i32..20,
        zstd in any::<bool>(),
    ) {
        // A valid header with a right CRC around random records, so that the record parser
        // (or the zstd decoder) sees them.
        let (block, attributes) = if zstd {
            (zstd::bulk::compress(&block, 1).unwrap(), 4)
        } else {
            (block, 0)
        };
        exercise(&wrap_block(&block, attributes, count), &small_limits());
    }

    #[test]
    fn mutated_valid_batches_never_panic(
        recs in prop::collection::vec(rec(), 1..6),
        compression in compression(),
        mutations in prop::collection::vec(mutation(), 1..8),
        fix_length in any::<bool>(),
        fix_checksum in prop::bool::weighted(0.8),
        follow in any::<bool>(),
    ) {
        let mut batch = encode(&recs, compression, ProducerStamp::NONE);
        for m in &mutations {
            apply(&mut batch, m);
        }
        if fix_length {
            fix_len(&mut batch);
        }
        if fix_checksum {
            fix_crc(&mut batch);
        }
        if follow {
            // A valid batch after the mutated one: BatchIter must not get past a bad batch,
            // but may walk on if the mutation left it valid.
            batch.extend_from_slice(&VECTOR);
        }
        exercise(&batch, &small_limits());
    }

    #[test]
    fn mutated_record_blocks_never_panic(
        recs in prop::collection::vec(rec(), 1..6),
        mutations in prop::collection::vec(mutation(), 1..6),
        zstd in any::<bool>(),
    ) {
        // Mutate the uncompressed records block, then wrap it (recompressed, if asked) in a
        // header whose length, count and CRC are right: every mutation reaches the parser.
        let builder = build(&recs);
        let plain = encode(&recs, Compression::None, ProducerStamp::NONE);
        let mut block = plain[RECORDS_OFFSET..].to_vec();
        prop_assert_eq!(block.len(), builder.block_bytes());
        for m in &mutations {
            apply(&mut block, m);
        }
        let (block, attributes) = if zstd {
            (zstd::bulk::compress(&block, 1).unwrap(), 4)
        } else {
            (block, 0)
        };
        let batch = wrap_block(&block, attributes, recs.len() as i32);
        exercise(&batch, &small_limits());
    }
}
