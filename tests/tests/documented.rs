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

/// A batch of `n` records stamped `ts` (ms), values `{prefix}-{i}`.
fn stamped_batch(ts: i64, prefix: &str, n: usize) -> Vec<u8> {
    let mut b = shared::BatchBuilder::new();
    for i in 0..n {
        b.push(ts, None, Some(format!("{prefix}-{i}").as_bytes()), &[]);
    }
    shared::BatchEncoder::new(shared::Compression::None, 0)
        .unwrap()
        .encode(&b, shared::ProducerStamp::NONE)
        .unwrap()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The `.log` files of a partition, by base offset.
fn segment_files(col: &Collector, topic: &str, partition: u32) -> Vec<u64> {
    let dir = col.data.join(format!("{topic}-{partition}"));
    let mut bases: Vec<u64> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    bases.sort_unstable();
    bases
}

/// `(log start, high watermark)` of `topic`-0 from its description.
fn offsets(c: &reqwest::blocking::Client, col: &Collector, topic: &str) -> (u64, u64) {
    let d: Value = c
        .get(col.url(&format!("/v1/topics/{topic}")))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let p = &d["partitions"][0];
    (
        p["log_start_offset"].as_u64().unwrap(),
        p["high_watermark"].as_u64().unwrap(),
    )
}

/// A collector (with `extra` config) and one topic `name` of one partition with `configs`.
fn collector_with_topic(
    dir: &std::path::Path,
    extra: &str,
    name: &str,
    configs: Value,
) -> Collector {
    let col = Collector::start(&dir.join("data"), extra);
    let (s, body) = post(
        &client(),
        col.url("/v1/topics"),
        json!({"name": name, "partitions": 1, "replication_factor": 1, "configs": configs}),
    );
    assert_eq!(s, 201, "{body}");
    col
}

/// docs: `segment_ms` rolls a segment once it is that old (checked on the next append), and
/// `retention_ms` deletes closed segments whose newest record is older than that, moving
/// the log start: the files go, a fetch below the log start is `offset_out_of_range`
/// naming the valid range, and fetch replies carry the new log start in their headers.
#[test]
fn segments_roll_by_age_and_time_retention_deletes_them_and_moves_the_log_start() {
    let tmp = tempfile::tempdir().unwrap();
    let col = collector_with_topic(
        tmp.path(),
        "retention_check_interval_ms: 100\n",
        "aged",
        json!({"segment_ms": 300, "retention_ms": 60000}),
    );
    let c = client();
    let base = col.url("");
    // Five records stamped ten minutes ago: past retention_ms, but in the active segment,
    // which retention never deletes.
    let (s, r) = tributary_tests::produce(
        &c,
        &base,
        "aged",
        0,
        stamped_batch(now_ms() - 600_000, "old", 5),
    );
    assert_eq!(s, 200, "{r}");
    std::thread::sleep(std::time::Duration::from_millis(800));
    assert_eq!(offsets(&c, &col, "aged").0, 0, "the active segment stays");
    assert_eq!(segment_files(&col, "aged", 0), vec![0]);
    // The segment is now older than segment_ms: the next append rolls it, closing it.
    let (s, r) = tributary_tests::produce(&c, &base, "aged", 0, stamped_batch(now_ms(), "new", 3));
    assert_eq!(s, 200, "{r}");
    // Closed and expired: retention deletes it and the log starts at 5.
    tributary_tests::wait_for(std::time::Duration::from_secs(10), "log start 5", || {
        (offsets(&c, &col, "aged") == (5, 8)).then_some(())
    });
    assert_eq!(
        segment_files(&col, "aged", 0),
        vec![5],
        "the old segment's files are gone"
    );
    // Below the log start: 416 offset_out_of_range with the valid range.
    let r = c
        .get(col.url("/v1/topics/aged/partitions/0/batches?offset=0"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 416);
    let e: Value = r.json().unwrap();
    assert_eq!(e["error"]["code"], "offset_out_of_range", "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains('5'), "{e}");
    // From the log start: the new records, and the offsets in the headers.
    let r = c
        .get(col.url("/v1/topics/aged/partitions/0/batches?offset=5"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["tributary-log-start-offset"], "5");
    assert_eq!(r.headers()["tributary-high-watermark"], "8");
    let got = tributary_tests::read_topic(&c, &base, "aged");
    let values: Vec<String> = got
        .iter()
        .map(|(_, _, _, v)| String::from_utf8(v.clone()).unwrap())
        .collect();
    assert_eq!(values, ["new-0", "new-1", "new-2"]);
}

/// docs: `retention_bytes` deletes the oldest closed segments while the partition holds
/// more than that, never the active one.
#[test]
fn size_retention_keeps_a_partition_near_its_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let col = collector_with_topic(
        tmp.path(),
        "retention_check_interval_ms: 100\n",
        "sized",
        json!({"segment_bytes": 1024, "retention_bytes": 3000}),
    );
    let c = client();
    let base = col.url("");
    // 20 batches of ~10 records each: each segment holds one or two batches.
    for i in 0..20 {
        let (s, r) = tributary_tests::produce(
            &c,
            &base,
            "sized",
            0,
            stamped_batch(
                now_ms(),
                &format!("batch{i:02}-padding-padding-padding"),
                10,
            ),
        );
        assert_eq!(s, 200, "{r}");
    }
    let size = |col: &Collector| -> u64 {
        segment_files(col, "sized", 0)
            .iter()
            .map(|b| {
                std::fs::metadata(col.data.join(format!("sized-0/{b:020}.log")))
                    .unwrap()
                    .len()
            })
            .sum()
    };
    tributary_tests::wait_for(
        std::time::Duration::from_secs(10),
        "retention by size",
        || {
            let (start, hw) = offsets(&c, &col, "sized");
            (hw == 200 && start > 0 && size(&col) <= 3000 + 1024).then_some(())
        },
    );
    let (start, _) = offsets(&c, &col, "sized");
    let files = segment_files(&col, "sized", 0);
    assert_eq!(files[0], start, "the log starts at the oldest segment kept");
    // What is kept reads back from the log start to the end.
    let got = tributary_tests::read_topic(&c, &base, "sized");
    assert_eq!(got.len() as u64, 200 - start);
    assert_eq!(got[0].1, start);
}

/// docs: flush `always` fsyncs before acknowledging (one fsync per write when writes come
/// one at a time), `interval` fsyncs on its timer only, `never` leaves it to the OS — as
/// counted by `tributary_log_fsyncs`.
#[test]
fn flush_policies_fsync_per_write_per_interval_or_never() {
    use std::time::{Duration, Instant};
    let writes = 20u64;
    let run = |policy: &str| -> (f64, Duration, Collector) {
        let tmp = tempfile::tempdir().unwrap().keep();
        let col = Collector::start(
            &tmp.join("data"),
            &format!("flush:\n  policy: {policy}\n  interval_ms: 500\n"),
        );
        let c = client();
        create_topic(&c, &col, "f", 1);
        let base = col.url("");
        let started = Instant::now();
        for i in 0..writes {
            let (s, r) = tributary_tests::produce(
                &c,
                &base,
                "f",
                0,
                stamped_batch(now_ms(), &format!("w{i}"), 5),
            );
            assert_eq!(s, 200, "{r}");
        }
        let took = started.elapsed();
        let fsyncs = tributary_tests::scrape(&col.url("/metrics"), "tributary_log_fsyncs").unwrap();
        (fsyncs, took, col)
    };
    let (always, _, _a) = run("always");
    assert!(
        always >= writes as f64,
        "always: {always} fsyncs for {writes} writes"
    );

    let (interval, took, col) = run("interval");
    // At most one per timer tick while writing (and one the first tick may fire at once).
    let ticks = took.as_millis() as f64 / 500.0 + 2.0;
    assert!(interval <= ticks, "interval: {interval} fsyncs in {took:?}");
    // The timer flushes what was written, then has nothing more to flush.
    let settled = tributary_tests::wait_for(Duration::from_secs(10), "a timer flush", || {
        let n = tributary_tests::scrape(&col.url("/metrics"), "tributary_log_fsyncs")?;
        (n >= 1.0).then_some(n)
    });
    std::thread::sleep(Duration::from_millis(1500));
    let later = tributary_tests::scrape(&col.url("/metrics"), "tributary_log_fsyncs").unwrap();
    assert!(
        later <= settled + 1.0,
        "interval: {settled} then {later} with nothing written"
    );

    let (never, _, col) = run("never");
    std::thread::sleep(Duration::from_millis(1200));
    let never_later =
        tributary_tests::scrape(&col.url("/metrics"), "tributary_log_fsyncs").unwrap();
    assert_eq!((never, never_later), (0.0, 0.0), "never: no fsync");
    // Acknowledged and readable all the same.
    let got = tributary_tests::read_topic(&client(), &col.url(""), "f");
    assert_eq!(got.len() as u64, writes * 5);
}

/// Joins `group` (subscribed to `topic`), commits `offset` on partition 0, returns
/// `(member id, member epoch)`.
fn join_and_commit(
    c: &reqwest::blocking::Client,
    col: &Collector,
    group: &str,
    topic: &str,
    offset: u64,
) -> (String, i64) {
    let (s, hb) = post(
        c,
        col.url(&format!("/v1/groups/{group}/heartbeat")),
        json!({"member_epoch": 0, "topics": [topic]}),
    );
    assert_eq!(s, 200, "{hb}");
    let id = hb["member_id"].as_str().unwrap().to_owned();
    let epoch = hb["member_epoch"].as_i64().unwrap();
    assert_eq!(hb["assignment"][0]["partitions"], json!([0]), "{hb}");
    let (s, r) = post(
        c,
        col.url(&format!("/v1/groups/{group}/offsets")),
        json!({"member_id": id, "member_epoch": epoch,
               "offsets": [{"topic": topic, "partition": 0, "offset": offset}]}),
    );
    assert_eq!(s, 200, "{r}");
    (id, epoch)
}

fn committed(c: &reqwest::blocking::Client, col: &Collector, group: &str) -> Value {
    c.get(col.url(&format!("/v1/groups/{group}/offsets")))
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap()["offsets"]
        .clone()
}

/// docs: `groups.offsets_retention_ms` deletes the committed offsets of a group that has had
/// no member for that long; a group with members keeps them however old they are.
#[test]
fn offsets_of_groups_idle_past_retention_are_deleted_live_groups_keep_theirs() {
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    let col = Collector::start(
        &tmp.path().join("data"),
        "groups:\n  offsets_retention_ms: 1500\n",
    );
    let c = client();
    create_topic(&c, &col, "o", 1);
    let (s, r) =
        tributary_tests::produce(&c, &col.url(""), "o", 0, stamped_batch(now_ms(), "r", 5));
    assert_eq!(s, 200, "{r}");
    // "idle" commits and leaves; "busy" commits and stays.
    let (idle, _) = join_and_commit(&c, &col, "idle", "o", 5);
    let (s, r) = post(
        &c,
        col.url("/v1/groups/idle/heartbeat"),
        json!({"member_id": idle, "member_epoch": -1}),
    );
    assert_eq!(s, 200, "{r}");
    let left_at = Instant::now();
    let (busy, mut busy_epoch) = join_and_commit(&c, &col, "busy", "o", 3);
    assert_eq!(committed(&c, &col, "idle")[0]["offset"], 5);
    // Until the idle group's offsets go, the busy member keeps heartbeating.
    loop {
        let (s, hb) = post(
            &c,
            col.url("/v1/groups/busy/heartbeat"),
            json!({"member_id": busy, "member_epoch": busy_epoch}),
        );
        assert_eq!(s, 200, "{hb}");
        busy_epoch = hb["member_epoch"].as_i64().unwrap();
        if committed(&c, &col, "idle") == json!([]) {
            break;
        }
        assert!(
            left_at.elapsed() < Duration::from_secs(20),
            "idle offsets never deleted"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        left_at.elapsed() >= Duration::from_millis(1400),
        "deleted after {:?}, before offsets_retention_ms",
        left_at.elapsed()
    );
    assert_eq!(
        committed(&c, &col, "busy")[0]["offset"],
        3,
        "a live group keeps its offsets"
    );
}

/// Sends a request to `url` on its own thread; returns when it finished, after `start`.
fn timed_get(url: String) -> std::thread::JoinHandle<(u16, std::time::Instant)> {
    std::thread::spawn(move || {
        let r = client().get(url).send().unwrap();
        (r.status().as_u16(), std::time::Instant::now())
    })
}

/// docs: `limits.max_in_flight_requests` requests are handled at once; more wait. One
/// long-polling fetch fills a limit of 1, so a metadata request finishes only after it;
/// with a limit of 2 the metadata request overtakes it.
#[test]
fn max_in_flight_requests_makes_further_requests_wait() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    for limit in [1, 2] {
        let tmp = tempfile::tempdir().unwrap();
        let col = Collector::start(
            &tmp.path().join("data"),
            &format!("limits:\n  max_in_flight_requests: {limit}\n"),
        );
        create_topic(&client(), &col, "w", 1);
        // The long poll is written on its own connection before anything else is sent, and
        // given a second to be taken up; nothing at offset 0, so it waits its full 3 s.
        let addr = col.url("").trim_start_matches("http://").to_owned();
        let mut poll = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            poll,
            "GET /v1/topics/w/partitions/0/batches?offset=0&max_wait_ms=3000 HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        let poll = std::thread::spawn(move || {
            let mut reply = String::new();
            poll.read_to_string(&mut reply).unwrap();
            assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
            Instant::now()
        });
        std::thread::sleep(Duration::from_millis(1000));
        let meta = timed_get(col.url("/v1/metadata"));
        let poll_done = poll.join().unwrap();
        let (status, meta_done) = meta.join().unwrap();
        assert_eq!(status, 200);
        if limit == 1 {
            assert!(
                meta_done >= poll_done,
                "limit 1: metadata answered while the fetch held the only slot"
            );
        } else {
            assert!(
                meta_done < poll_done,
                "limit 2: metadata waited for the fetch"
            );
        }
    }
}

/// docs: `limits.max_in_flight_bytes` bounds the request-body bytes held at once, counted
/// as they arrive. A slow upload that has sent most of the budget makes a produce whose
/// body does not fit in the rest wait until it is gone; one that has sent less does not.
#[test]
fn max_in_flight_bytes_makes_bodies_wait_for_room() {
    use std::io::Write;
    use std::time::{Duration, Instant};
    // (bytes the slow upload has sent of its 65536, whether a 10 KB produce must wait)
    for (sent, must_wait) in [(60000usize, true), (30000, false)] {
        let declared = 65536usize;
        let tmp = tempfile::tempdir().unwrap();
        let col = Collector::start(
            &tmp.path().join("data"),
            "limits:\n  max_request_bytes: 65536\n  max_in_flight_bytes: 65536\n",
        );
        create_topic(&client(), &col, "b", 1);
        // The slow upload: headers and part of its body, then it stalls and hangs up.
        let addr = col.url("").trim_start_matches("http://").to_owned();
        let mut slow = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            slow,
            "POST /v1/topics/b/partitions/0/batches HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/vnd.tributary.batches\r\ncontent-length: {declared}\r\n\r\n"
        )
        .unwrap();
        slow.write_all(&vec![0u8; sent]).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let hang_up = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1200));
            drop(slow);
        });
        let started = Instant::now();
        let (s, r) = post(
            &client(),
            col.url("/v1/topics/b/records"),
            json!({"records": [{"value": "x".repeat(10_000)}]}),
        );
        let waited = started.elapsed();
        hang_up.join().unwrap();
        assert_eq!(s, 200, "{r}");
        if must_wait {
            assert!(
                waited >= Duration::from_millis(1000),
                "{sent} bytes held: answered after {waited:?}"
            );
        } else {
            assert!(
                waited < Duration::from_millis(1000),
                "{sent} bytes held: waited {waited:?}"
            );
        }
    }
}
