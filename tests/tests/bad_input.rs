//! Bad input never writes anything and never hurts the process: each case gets a typed error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use shared::ProducerStamp;
use tributary_tests::{Collector, batch, client, produce, read_all};

fn good() -> Vec<u8> {
    batch(
        &["a".to_string(), "b".to_string()],
        ProducerStamp::NONE,
        true,
    )
}

fn fix_crc(b: &mut [u8]) {
    let crc = shared::batch::compute_crc(b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// A zstd batch whose records block is `block` compressed (CRC fixed).
fn zstd_batch_around(block: &[u8], count: i32) -> Vec<u8> {
    let mut b = good();
    b.truncate(shared::batch::RECORDS_OFFSET);
    b.extend_from_slice(&zstd::bulk::compress(block, 1).unwrap());
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    b[23..27].copy_from_slice(&(count - 1).to_be_bytes());
    b[57..61].copy_from_slice(&count.to_be_bytes());
    fix_crc(&mut b);
    b
}

#[test]
fn invalid_batches_are_refused_with_typed_codes_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let col = Collector::start(
        &tmp.path().join("data"),
        "limits:\n  max_request_bytes: 1048576\n  max_uncompressed_batch_bytes: 4194304\n",
    );
    let c = client();
    let base = col.url("");
    let (s, _) = produce(&c, &base, "bad", 0, good());
    assert_eq!(s, 200);
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut b = good();
    let n = b.len();
    b[n - 1] ^= 1;
    cases.push(("bad crc", b));
    cases.push(("truncated", good()[..40].to_vec()));
    let mut b = good();
    b[8..12].copy_from_slice(&1_000_000i32.to_be_bytes());
    cases.push(("lying length", b));
    let mut b = good();
    b[57..61].copy_from_slice(&5i32.to_be_bytes());
    fix_crc(&mut b);
    cases.push(("record count mismatch", b));
    let mut b = good();
    b[16] = 1;
    cases.push(("magic 1", b));
    let mut b = good();
    let n = b.len();
    for x in &mut b[shared::batch::RECORDS_OFFSET..n] {
        *x = 0x42;
    }
    fix_crc(&mut b);
    cases.push(("zstd garbage", b));
    cases.push((
        "zstd that decodes to garbage records",
        zstd_batch_around(&[0x55; 300], 2),
    ));
    cases.push((
        "decompression bomb",
        zstd_batch_around(&vec![0u8; 64 << 20], 2),
    ));
    cases.push(("empty body", Vec::new()));
    for (what, bytes) in cases {
        let (status, e) = produce(&c, &base, "bad", 0, bytes);
        assert_eq!(status, 400, "{what}: {e}");
        assert_eq!(e["error"]["code"], "invalid_batch", "{what}: {e}");
        assert_eq!(e["error"]["retriable"], false, "{what}");
    }
    assert_eq!(
        read_all(&c, &base, "bad", 0).len(),
        2,
        "nothing but the good batch was written"
    );
}

#[test]
fn invalid_topic_names_are_refused_and_create_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let col = Collector::start(&data, "");
    let c = client();
    let long = "x".repeat(250);
    for name in [
        "..",
        ".",
        "a%2Fb",
        "a%00b",
        "%2E%2E",
        long.as_str(),
        "a%20b",
    ] {
        let r = c
            .post(col.url(&format!("/v1/topics/{name}/partitions/0/batches")))
            .body(good())
            .send()
            .unwrap();
        // `.` and `..` segments (also percent-encoded) are folded away by the client's URL
        // parser, so the request lands on another route (404 not_found / 405
        // method_not_allowed); everything else reaches the topic check (400 invalid_topic).
        let folded = matches!(name, "." | ".." | "%2E%2E");
        for r in [
            r,
            c.post(col.url(&format!("/v1/topics/{name}/records")))
                .body(r#"{"records":[{"value":"x"}]}"#)
                .send()
                .unwrap(),
        ] {
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().unwrap();
            let code = body["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let expected = match status {
                400 if !folded => "invalid_topic",
                404 if folded => "not_found",
                405 if folded => "method_not_allowed",
                _ => panic!("{name}: {status} {body}"),
            };
            assert_eq!(code, expected, "{name}: {status} {body}");
        }
    }
    let r = c
        .post(col.url("/v1/topics"))
        .body(r#"{"name":"../evil","partitions":1}"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().unwrap();
    assert_eq!(e["error"]["code"], "invalid_topic");
    // Only the data directory's own entries exist; nothing escaped it.
    let entries: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        entries
            .iter()
            .all(|e| e.starts_with('.') || e == "__controller"),
        "{entries:?}"
    );
    let siblings: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(siblings.len(), 2, "only data/ and its config: {siblings:?}");
}

#[test]
fn oversized_bodies_get_413_and_the_server_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let col = Collector::start(
        &tmp.path().join("data"),
        "limits:\n  max_request_bytes: 65536\n  max_in_flight_bytes: 1048576\n",
    );
    let c = client();
    let big = vec![0u8; 200_000];
    let r = c
        .post(col.url("/v1/topics/t/partitions/0/batches"))
        .body(big.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 413);
    let e: Value = r.json().unwrap();
    assert_eq!(e["error"]["code"], "request_too_large");
    // Without a Content-Length (chunked): refused while streaming, not after buffering it all.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..50).map(|_| Ok(vec![1u8; 8192])).collect();
    let body = reqwest::blocking::Body::new(std::io::Cursor::new(
        chunks
            .into_iter()
            .flat_map(|c| c.unwrap())
            .collect::<Vec<u8>>(),
    ));
    // The server answers 413 as soon as the limit is passed and closes the connection, so the
    // client sees either that reply or its upload cut short.
    match c
        .post(col.url("/v1/topics/t/partitions/0/batches"))
        .body(body)
        .send()
    {
        Ok(r) => assert_eq!(r.status(), 413),
        Err(e) => assert!(e.is_body() || e.is_request() || e.is_connect(), "{e}"),
    }
    let (s, _) = produce(&c, &col.url(""), "t", 0, good());
    assert_eq!(s, 200);
}

#[test]
fn fenced_producer_epoch_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let col = Collector::start(&tmp.path().join("data"), "");
    let c = client();
    let base = col.url("");
    let v = vec!["x".to_string()];
    let s1 = ProducerStamp {
        producer_id: 42,
        producer_epoch: 3,
        base_sequence: 0,
    };
    assert_eq!(produce(&c, &base, "f", 0, batch(&v, s1, false)).0, 200);
    let old = ProducerStamp {
        producer_id: 42,
        producer_epoch: 2,
        base_sequence: 1,
    };
    let (status, e) = produce(&c, &base, "f", 0, batch(&v, old, false));
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (409, Some("producer_fenced"))
    );
    assert_eq!(read_all(&c, &base, "f", 0).len(), 1);
}

#[test]
fn malformed_requests_get_json_errors_too() {
    let tmp = tempfile::tempdir().unwrap();
    let col = Collector::start(&tmp.path().join("data"), "");
    let c = client();
    for (method, path, status, code) in [
        (
            "GET",
            "/v1/topics/logs/partitions/0/batches?offset=abc",
            400,
            "bad_request",
        ),
        (
            "GET",
            "/v1/topics/logs/partitions/x/batches?offset=0",
            400,
            "bad_request",
        ),
        ("GET", "/v1/no/such/route", 404, "not_found"),
        ("DELETE", "/v1/metadata", 405, "method_not_allowed"),
        ("POST", "/v1/groups/g/heartbeat", 400, "invalid_json"),
    ] {
        let r = c
            .request(method.parse().unwrap(), col.url(path))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{method} {path}");
        let v: Value = r
            .json()
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON: {e}"));
        assert_eq!(v["error"]["code"], code, "{method} {path}: {v}");
        assert_eq!(v["error"]["retriable"], false);
    }
    // A replication factor larger than the live brokers is refused, not silently lowered.
    let r = c
        .post(col.url("/v1/topics"))
        .json(&serde_json::json!({"name": "r3", "partitions": 1, "replication_factor": 3}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let v: Value = r.json().unwrap();
    assert_eq!(v["error"]["code"], "not_enough_brokers", "{v}");
    let r = c.get(col.url("/v1/topics/r3")).send().unwrap();
    assert_eq!(r.status().as_u16(), 404, "nothing was created");
}
