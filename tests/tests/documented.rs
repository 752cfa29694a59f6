//! Behaviours the docs promise, each checked end to end against a real collector.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use tributary_tests::{Collector, client};

fn post(c: &reqwest::blocking::Client, url: String, body: Value) -> (u16, Value) {
    let r = c.post(url).json(&body).send().unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

/// Creates `name` with `partitions` partitions, replication factor 1.
fn create_topic(c: &reqwest::blocking::Client, col: &Collector, name: &str, partitions: u32) {
    let (s, body) = post(
        c,
        col.url("/v1/topics"),
        json!({"name": name, "partitions": partitions, "replication_factor": 1}),
    );
    assert_eq!(s, 201, "{body}");
}

/// docs/api.md: a JSON record with a key goes to partition `crc32c(key) mod partitions`.
#[test]
fn json_produce_partitions_records_by_key_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let col = Collector::start(&tmp.path().join("data"), "");
    let c = client();
    create_topic(&c, &col, "k", 4);
    let keys: Vec<String> = (0..40).map(|i| format!("user-{i}")).collect();
    let records: Vec<Value> = keys
        .iter()
        .map(|k| json!({"key": k, "value": format!("v-{k}")}))
        .collect();
    let (s, body) = post(
        &c,
        col.url("/v1/topics/k/records"),
        json!({"records": records}),
    );
    assert_eq!(s, 200, "{body}");
    let offsets = body["offsets"].as_array().unwrap();
    let mut used = std::collections::BTreeSet::new();
    for (k, o) in keys.iter().zip(offsets) {
        let want = crc32c::crc32c(k.as_bytes()) % 4;
        assert_eq!(
            o["partition"].as_u64(),
            Some(u64::from(want)),
            "key {k}: {o}"
        );
        used.insert(want);
        // And it is there, under its key.
        let r: Value = c
            .get(col.url(&format!(
                "/v1/topics/k/partitions/{want}/records?offset={}&limit=1",
                o["offset"]
            )))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(r["records"][0]["key"], k.as_str(), "{r}");
    }
    assert!(used.len() > 1, "40 keys all hashed to one partition?");
}

/// README/docs: `reset-offsets --to timestamp:MS` moves a group to the first record at or
/// after that time (through the `.timeindex`).
#[test]
fn reset_offsets_to_a_timestamp() {
    let tmp = tempfile::tempdir().unwrap();
    let col = Collector::start(&tmp.path().join("data"), "");
    let c = client();
    create_topic(&c, &col, "ts", 1);
    let base = 1_764_000_000_000i64;
    for i in 0..10i64 {
        let (s, body) = post(
            &c,
            col.url("/v1/topics/ts/records"),
            json!({"partition": 0, "records": [{"value": format!("r{i}"), "timestamp": base + 1000 * i}]}),
        );
        assert_eq!(s, 200, "{body}");
    }
    for (to, want) in [
        (base + 5500, 6),
        (base + 5000, 5),
        (base, 0),
        (base + 60_000, 10),
    ] {
        let out = std::process::Command::new(tributary_tests::binary("collector"))
            .args(["groups", "reset-offsets", "g", "--topic", "ts", "--to"])
            .arg(format!("timestamp:{to}"))
            .args(["--collector", &col.url(""), "--output", "json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = c
            .get(col.url("/v1/groups/g/offsets"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let committed = v["offsets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["topic"] == "ts" && o["partition"] == 0)
            .map(|o| o["offset"].as_u64().unwrap());
        assert_eq!(committed, Some(want), "timestamp {to}: {v}");
    }
}

/// `unclean_leader_election: true` (electing a leader outside the ISR, losing data) is
/// refused with a message naming the setting.
#[test]
fn unclean_leader_election_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("c.yaml");
    std::fs::write(&config, "unclean_leader_election: true\n").unwrap();
    let out = std::process::Command::new(tributary_tests::binary("collector"))
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unclean_leader_election"), "{err}");
}
