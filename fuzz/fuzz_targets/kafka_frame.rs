//! One Kafka frame (its size prefix already read) through the listener's decoding: header
//! checks, request header, and the typed body of every API served. Any input must give a
//! request or a `Close` reason, never a panic, an abort or an unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = collector::kafka::request::decode_frame(bytes::Bytes::copy_from_slice(data));
});
