//! The Kafka listener with real, unmodified clients: kcat (librdkafka), confluent-kafka
//! (Python, librdkafka 2.x) and kafka-python (a pure-Python client), against real collector
//! processes. Needs `kcat` and the Python packages `confluent_kafka` and `kafka`
//! (scripts/test.sh skips these tests without them, and fails under CI=true; .ci/run
//! installs them). The clients are driven by `tests/kafka/clients.py`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use shared::ProducerStamp;
use tributary_tests::{Collector, client, python_client, read_topic, scrape};

fn kcat(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat is installed (apt-get install kcat)");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn kcat_produces_and_consumes_and_records_cross_between_kafka_and_http() {
    let tmp = tempfile::tempdir().unwrap();
    let col = Collector::start(&tmp.path().join("data"), "");
    let kafka = col.kafka_address();
    let c = client();

    // Kafka in, HTTP out: 1000 lines through kcat's idempotent producer.
    let lines: String = (0..1000).map(|i| format!("kcat line {i}\n")).collect();
    let (ok, _, err) = kcat(
        &[
            "-b",
            &kafka,
            "-P",
            "-t",
            "from-kafka",
            "-X",
            "enable.idempotence=true",
            "-X",
            "acks=all",
        ],
        Some(&lines),
    );
    assert!(ok, "kcat produce failed: {err}");
    let records = read_topic(&c, &col.url(""), "from-kafka");
    let mut values: Vec<String> = records
        .iter()
        .map(|(_, _, _, v)| String::from_utf8(v.clone()).unwrap())
        .collect();
    values.sort_by_key(|v| v[10..].parse::<u32>().unwrap());
    let expected: Vec<String> = (0..1000).map(|i| format!("kcat line {i}")).collect();
    assert_eq!(values, expected, "every line once, nothing else");

    // HTTP in, Kafka out.
    let body = serde_json::json!({"records": (0..50).map(|i| serde_json::json!({"value": format!("http {i}")})).collect::<Vec<_>>(), "partition": 0});
    let r = c
        .post(col.url("/v1/topics/from-http/records"))
        .json(&body)
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    let (ok, out, err) = kcat(
        &[
            "-b",
            &kafka,
            "-C",
            "-t",
            "from-http",
            "-p",
            "0",
            "-o",
            "beginning",
            "-e",
            "-q",
        ],
        None,
    );
    assert!(ok, "kcat consume failed: {err}");
    let got: Vec<&str> = out.lines().collect();
    let want: Vec<String> = (0..50).map(|i| format!("http {i}")).collect();
    assert_eq!(got, want, "in order, each once");

    // Metadata names this broker's Kafka address and the topics.
    let (ok, out, err) = kcat(&["-b", &kafka, "-L"], None);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("broker 1 at {kafka}")), "{out}");
    assert!(out.contains("topic \"from-kafka\""), "{out}");
    // Requests are counted by API.
    let metrics = c.get(col.url("/metrics")).send().unwrap().text().unwrap();
    assert!(
        metrics.contains("tributary_kafka_requests_total{api=\"Produce\""),
        "{metrics}"
    );
}

#[test]
fn confluent_kafka_idempotent_zstd_producer_and_consumer_see_every_record_once() {
    let tmp = tempfile::tempdir().unwrap();
    let col = Collector::start(&tmp.path().join("data"), "");
    let kafka = col.kafka_address();
    let n = 20_000;
    let p = python_client(&["confluent-produce", &kafka, "ck", &n.to_string()]);
    assert_eq!(p["delivered"], n, "{p}");
    assert_eq!(p["error_count"], 0, "{p}");
    assert_eq!(p["distinct_offsets"], n, "{p}");
    let r = python_client(&["confluent-read", &kafka, "ck", &n.to_string()]);
    assert_eq!(r["read"], n, "{r}");
    assert_eq!(r["distinct"], n, "{r}");
    assert_eq!(r["out_of_order"], 0, "{r}");
    assert_eq!(r["hosts"], serde_json::json!(["kafka-test"]), "{r}");
    // KIP-664: the idempotent producer's last sequences, per partition.
    {
        use kafka_protocol::messages::describe_producers_request::TopicRequest;
        use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse};
        let mut s = connect(&kafka);
        let q = DescribeProducersRequest::default().with_topics(vec![
            TopicRequest::default()
                .with_name(TopicName(StrBytes::from_static_str("ck")))
                .with_partition_indexes(vec![0, 1, 2]),
        ]);
        let resp: DescribeProducersResponse = call(&mut s, ApiKey::DescribeProducers, 0, &q);
        let parts = &resp.topics[0].partitions;
        assert_eq!(parts.len(), 3);
        let last: i64 = parts
            .iter()
            .map(|p| {
                assert_eq!(p.error_code, 0, "{resp:?}");
                assert_eq!(p.active_producers.len(), 1, "one producer: {resp:?}");
                i64::from(p.active_producers[0].last_sequence) + 1
            })
            .sum();
        assert_eq!(
            last, n as i64,
            "sequences account for every record: {resp:?}"
        );
    }
    // The same records over HTTP: each once, headers kept, values as sent.
    let records = read_topic(&client(), &col.url(""), "ck");
    assert_eq!(records.len(), n);
    let mut distinct: Vec<&[u8]> = records.iter().map(|(_, _, _, v)| v.as_slice()).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), n);
    assert!(
        records.iter().all(|(_, _, h, v)| v.len() == 200
            && h.contains(&("host".to_owned(), "kafka-test".to_owned())))
    );
}

/// GETs a JSON reply.
fn get_json(c: &reqwest::blocking::Client, url: &str) -> serde_json::Value {
    c.get(url).send().unwrap().json().unwrap()
}

/// A JSON array of strings.
fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect()
}

/// The sum of a group's committed offsets (over HTTP), and the reply it came from.
fn committed_total(
    c: &reqwest::blocking::Client,
    col: &Collector,
    group: &str,
) -> (u64, serde_json::Value) {
    let o = get_json(c, &col.url(&format!("/v1/groups/{group}/offsets")));
    let total = o["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["offset"].as_u64().unwrap())
        .sum();
    (total, o)
}

/// Writes one frame; returns the reply frame, or `None` when the server closed the
/// connection.
fn exchange(stream: &mut TcpStream, frame: &[u8]) -> Option<Vec<u8>> {
    stream.write_all(frame).ok()?;
    let mut len = [0u8; 4];
    if let Err(e) = stream.read_exact(&mut len) {
        assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "no reply and the connection stayed open"
        );
        return None;
    }
    let mut reply = vec![0u8; i32::from_be_bytes(len) as usize];
    stream.read_exact(&mut reply).ok()?;
    Some(reply)
}

fn sized(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as i32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// Whether the server closed the connection (EOF or reset) — a read timing out means it
/// kept it open.
fn closed(stream: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    match stream.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// A Produce v3 frame carrying `batch` for `topic`-0.
fn produce_frame(topic: &str, batch: Vec<u8>) -> Vec<u8> {
    let version = 3;
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("test")))
        .encode(&mut buf, ApiKey::Produce.request_header_version(version))
        .unwrap();
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(batch))),
                ]),
        ])
        .encode(&mut buf, version)
        .unwrap();
    sized(&buf)
}

#[test]
fn bad_kafka_frames_are_refused_and_nothing_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    // A small decompression limit, so a small bomb exceeds it.
    let col = Collector::start(
        &tmp.path().join("data"),
        "limits:\n  max_uncompressed_batch_bytes: 1048576\n",
    );
    let kafka = col.kafka_address();
    let c = client();
    c.post(col.url("/v1/topics"))
        .json(&serde_json::json!({"name": "bad", "partitions": 1}))
        .send()
        .unwrap();

    // A 2 GiB length prefix: closed without reading (or reserving) anything.
    let mut s = connect(&kafka);
    s.write_all(&i32::MAX.to_be_bytes()).unwrap();
    assert!(closed(&mut s), "2 GiB frame accepted");

    // A negative length.
    let mut s = connect(&kafka);
    s.write_all(&(-5i32).to_be_bytes()).unwrap();
    assert!(closed(&mut s));

    // Garbage after a valid-looking header.
    let mut s = connect(&kafka);
    let mut g = Vec::new();
    g.put_i16(ApiKey::Metadata as i16);
    g.put_i16(9);
    g.put_i32(1);
    g.extend_from_slice(&[0xff; 40]);
    assert!(exchange(&mut s, &sized(&g)).is_none(), "garbage answered");

    // Array counts far beyond the frame (2^31 topics in 14 bytes; a compact array claiming
    // 2^32 - 2 in a flexible version): refused without reserving memory for them.
    let mut s = connect(&kafka);
    let mut m = Vec::new();
    m.put_i16(ApiKey::Metadata as i16);
    m.put_i16(1);
    m.put_i32(3);
    m.put_i16(-1);
    m.put_i32(i32::MAX);
    assert!(
        exchange(&mut s, &sized(&m)).is_none(),
        "huge array answered"
    );
    let mut s = connect(&kafka);
    let mut m = Vec::new();
    m.put_i16(ApiKey::Metadata as i16);
    m.put_i16(9);
    m.put_i32(4);
    m.put_i16(-1); // client id (a nullable string, not compact, in header v2)
    m.put_u8(0); // header tagged fields
    m.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]); // varint 2^32 - 1
    assert!(
        exchange(&mut s, &sized(&m)).is_none(),
        "huge compact array answered"
    );
    col.wait_healthy();

    // An unknown API key.
    let mut s = connect(&kafka);
    let mut u = Vec::new();
    u.put_i16(999);
    u.put_i16(0);
    u.put_i32(2);
    u.put_i16(-1);
    assert!(
        exchange(&mut s, &sized(&u)).is_none(),
        "unknown key answered"
    );

    // A truncated frame: the client goes away mid-frame.
    let mut s = connect(&kafka);
    s.write_all(&100i32.to_be_bytes()).unwrap();
    s.write_all(&[0u8; 10]).unwrap();
    drop(s);

    // ApiVersions newer than served: answered in v0 framing with UNSUPPORTED_VERSION (35)
    // and the ranges served.
    let mut s = connect(&kafka);
    let mut a = Vec::new();
    a.put_i16(ApiKey::ApiVersions as i16);
    a.put_i16(99);
    a.put_i32(42);
    a.put_i16(-1);
    let reply = exchange(&mut s, &sized(&a)).expect("ApiVersions v99 answered");
    let mut r = Bytes::from(reply);
    let header = ResponseHeader::decode(&mut r, 0).unwrap();
    assert_eq!(header.correlation_id, 42);
    assert_eq!(r.get_i16(), 35, "UNSUPPORTED_VERSION");
    assert!(r.get_i32() >= 5, "the served ranges are listed");

    // A batch with a broken CRC: CORRUPT_MESSAGE, nothing stored.
    let mut batch = tributary_tests::batch(&["v".repeat(50)], ProducerStamp::NONE, false);
    let last = batch.len() - 1;
    batch[last] ^= 0xff;
    let mut s = connect(&kafka);
    let reply = exchange(&mut s, &produce_frame("bad", batch)).expect("produce answered");
    let mut r = Bytes::from(reply);
    ResponseHeader::decode(&mut r, ApiKey::Produce.response_header_version(3)).unwrap();
    let resp = ProduceResponse::decode(&mut r, 3).unwrap();
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 2, "CORRUPT_MESSAGE: {resp:?}");

    // A zstd bomb (8 MiB of one byte, a few KiB compressed) past the limit: refused before
    // anything is written.
    let big = vec!["a".repeat(1 << 20); 8];
    let bomb = tributary_tests::batch(&big, ProducerStamp::NONE, true);
    let reply = exchange(&mut s, &produce_frame("bad", bomb)).expect("produce answered");
    let mut r = Bytes::from(reply);
    ResponseHeader::decode(&mut r, ApiKey::Produce.response_header_version(3)).unwrap();
    let resp = ProduceResponse::decode(&mut r, 3).unwrap();
    assert_eq!(
        resp.responses[0].partition_responses[0].error_code, 10,
        "MESSAGE_TOO_LARGE (not retriable, unlike CORRUPT_MESSAGE): {resp:?}"
    );

    // Nothing stored, and the server is healthy and still serves Kafka clients.
    assert!(read_topic(&c, &col.url(""), "bad").is_empty());
    col.wait_healthy();
    let (ok, out, err) = kcat(&["-b", &kafka, "-L"], None);
    assert!(ok && out.contains("topic \"bad\""), "{out}{err}");
    assert!(scrape(&col.url("/metrics"), "tributary_kafka_connections").is_some());
}

#[test]
fn kafka_admin_creates_topics_and_assign_consumers_commit_into_the_group_offsets() {
    let tmp = tempfile::tempdir().unwrap();
    let col = Collector::start(&tmp.path().join("data"), "");
    let kafka = col.kafka_address();
    let c = client();

    let r = python_client(&["admin-create", &kafka, "adm", "4"]);
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    let t = get_json(&c, &col.url("/v1/topics/adm"));
    assert_eq!(t["partitions"].as_array().unwrap().len(), 4, "{t}");
    // Creating it again is refused with TOPIC_ALREADY_EXISTS.
    let again = python_client(&["admin-create", &kafka, "adm", "4"]);
    assert!(
        again["errors"][0]
            .as_str()
            .unwrap()
            .contains("TOPIC_ALREADY_EXISTS"),
        "{again}"
    );

    // Growing it: 4 -> 6 partitions; shrinking is refused.
    let grow = python_client(&["admin-grow", &kafka, "adm", "6"]);
    assert_eq!(grow["errors"], serde_json::json!([]), "{grow}");
    let t = get_json(&c, &col.url("/v1/topics/adm"));
    assert_eq!(t["partitions"].as_array().unwrap().len(), 6, "{t}");
    let shrink = python_client(&["admin-grow", &kafka, "adm", "3"]);
    assert!(
        shrink["errors"][0]
            .as_str()
            .unwrap()
            .contains("INVALID_PARTITIONS"),
        "{shrink}"
    );

    let p = python_client(&["confluent-produce", &kafka, "adm", "1000"]);
    assert_eq!(p["delivered"], 1000, "{p}");
    // A consumer with assign(): reads everything, commits its positions into the group.
    let first = python_client(&["confluent-commit", &kafka, "adm", "1000", "kgroup"]);
    assert_eq!(first["read"], 1000, "{first}");
    assert_eq!(first["extra"], 0, "{first}");
    assert_eq!(first["commit_errors"], serde_json::json!([]), "{first}");
    // The commit is the group's, as the HTTP API and `collector groups` see it.
    let (total, o) = committed_total(&c, &col, "kgroup");
    assert_eq!(total, 1000, "{o}");

    // More records; a new consumer of the group resumes from the committed offsets.
    let p = python_client(&["confluent-produce", &kafka, "adm", "500", "1000"]);
    assert_eq!(p["delivered"], 500, "{p}");
    let second = python_client(&["confluent-commit", &kafka, "adm", "500", "kgroup"]);
    assert_eq!(second["read"], 500, "{second}");
    assert_eq!(second["extra"], 0, "{second}");
    let firsts: std::collections::BTreeSet<&str> = first["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(firsts.len(), 1000);
    let seconds: std::collections::BTreeSet<&str> = second["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(seconds.len(), 500);
    assert!(
        seconds
            .iter()
            .all(|v| v[7..15].parse::<u32>().unwrap() >= 1000),
        "the resumed consumer reads only the new records"
    );

    // A group with members (a `collector tail` member) refuses a standalone commit, as
    // Kafka does: the member "" is unknown.
    let hb = c
        .post(col.url("/v1/groups/kgroup/heartbeat"))
        .json(&serde_json::json!({"member_epoch": 0, "topics": ["adm"]}))
        .send()
        .unwrap();
    assert!(hb.status().is_success());
    let refused = python_client(&["commit-offset", &kafka, "adm", "kgroup", "0", "1"]);
    assert!(
        refused["errors"][0]
            .as_str()
            .is_some_and(|e| e.contains("UNKNOWN_MEMBER_ID")),
        "{refused}"
    );
    let (total, after) = committed_total(&c, &col, "kgroup");
    assert_eq!(total, 1500, "the refused commit moved nothing: {after}");

    let d = python_client(&["admin-delete", &kafka, "adm"]);
    assert_eq!(d["errors"], serde_json::json!([]), "{d}");
    let gone = c.get(col.url("/v1/topics/adm")).send().unwrap();
    assert_eq!(gone.status(), 404);
}

#[test]
fn a_kafka_client_on_a_three_node_cluster_follows_leaders_and_reads_what_it_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cl = tributary_tests::Cluster::start(tmp.path(), 3, "");
    let c = client();
    let r = c
        .post(cl.node(1).url("/v1/topics"))
        .json(&serde_json::json!({"name": "rep", "partitions": 3, "replication_factor": 3}))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    // Every broker advertises its own Kafka address; a client bootstrapped from one node
    // produces to each partition's leader (two of three live on other nodes).
    let kafka: Vec<String> = (1..=3).map(|i| cl.node(i).kafka_address()).collect();
    assert_eq!(
        kafka
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        3
    );
    let p = python_client(&["confluent-produce", &kafka[0], "rep", "3000"]);
    assert_eq!(p["delivered"], 3000, "{p}");
    assert_eq!(p["error_count"], 0, "{p}");
    let r = python_client(&["confluent-read", &kafka[2], "rep", "3000"]);
    assert_eq!(r["read"], 3000, "{r}");
    assert_eq!(r["distinct"], 3000, "{r}");
    // Metadata lists the three brokers and the partitions' leaders, replicas and ISR.
    let (ok, out, err) = kcat(&["-b", &kafka[1], "-L", "-t", "rep"], None);
    assert!(ok, "{err}");
    for k in &kafka {
        assert!(out.contains(k.as_str()), "{k} missing in {out}");
    }
    assert_eq!(
        out.matches("replicas: 1,2,3").count()
            + out.matches("replicas: 2,3,1").count()
            + out.matches("replicas: 3,1,2").count(),
        3,
        "{out}"
    );
    // Produce on a node that does not lead the partition: NOT_LEADER_OR_FOLLOWER (6).
    let meta = get_json(&c, &cl.node(1).url("/v1/metadata"));
    let leader0 = meta["topics"][0]["partitions"][0]["leader"]
        .as_u64()
        .unwrap();
    let other = (1..=3u64).find(|i| *i != leader0).unwrap();
    let mut s = connect(&cl.node(other).kafka_address());
    let batch = tributary_tests::batch(&["x".into()], ProducerStamp::NONE, false);
    let reply = exchange(&mut s, &produce_frame("rep", batch)).expect("produce answered");
    let mut r = Bytes::from(reply);
    ResponseHeader::decode(&mut r, ApiKey::Produce.response_header_version(3)).unwrap();
    let resp = ProduceResponse::decode(&mut r, 3).unwrap();
    assert_eq!(
        resp.responses[0].partition_responses[0].error_code, 6,
        "{resp:?}"
    );
}

#[test]
fn lines_shipped_by_the_agent_are_read_by_a_kafka_consumer_with_their_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let col = Collector::start(&tmp.path().join("data"), "");
    let kafka = col.kafka_address();
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let text: String = (0..300).map(|i| format!("agent line {i}\n")).collect();
    std::fs::write(logs.join("app.log"), &text).unwrap();
    let config = tmp.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\ninputs:\n  - paths: [\"{}/*.log\"]\n    topic: shipped\noutput:\n  collectors: [\"{}\"]\n  linger_ms: 20\n",
            tmp.path().join("state").display(),
            logs.display(),
            col.url("")
        ),
    )
    .unwrap();
    let _agent = tributary_tests::AgentProc::start(&config);
    tributary_tests::wait_for(Duration::from_secs(30), "300 lines shipped", || {
        (read_topic(&client(), &col.url(""), "shipped").len() == 300).then_some(())
    });
    let (ok, out, err) = kcat(
        &[
            "-b",
            &kafka,
            "-C",
            "-t",
            "shipped",
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%h|%s\\n",
        ],
        None,
    );
    assert!(ok, "{err}");
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 300, "{out}");
    let path = logs.join("app.log");
    for row in &rows {
        let (headers, value) = row.split_once('|').unwrap();
        assert!(value.starts_with("agent line "), "{row}");
        assert!(headers.contains("host="), "{row}");
        assert!(
            headers.contains(&format!("path={}", path.display())),
            "{row}"
        );
    }
    let mut values: Vec<u32> = rows
        .iter()
        .map(|r| r.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    values.sort_unstable();
    assert_eq!(values, (0..300).collect::<Vec<_>>(), "each line once");
    // A confluent-kafka consumer group (KIP-848) reads them too, headers and all.
    let dir = tmp.path().join("members");
    std::fs::create_dir_all(&dir).unwrap();
    let member = spawn_member(&kafka, "shipped", "indexer", &dir, "i1", "consumer");
    let out = member.wait_with_output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["errors"], serde_json::json!([]), "{v}");
    let mut read = strings(&v["values"]);
    read.sort();
    read.dedup();
    assert_eq!(read.len(), 300, "each line once: {v}");
    let sources = strings(&v["sources"]);
    assert_eq!(sources.len(), 1, "{v}");
    let (host, from) = sources[0].split_once('|').unwrap();
    assert!(!host.is_empty(), "{v}");
    assert_eq!(from, path.display().to_string(), "{v}");
    let (committed, o) = committed_total(&client(), &col, "indexer");
    assert_eq!(committed, 300, "{o}");
}

/// Runs `clients.py group-consume` in the background, in a group of `protocol` (`classic`
/// or `consumer`, KIP-848).
fn spawn_member(
    kafka: &str,
    topic: &str,
    group: &str,
    dir: &std::path::Path,
    name: &str,
    protocol: &str,
) -> std::process::Child {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/kafka/clients.py");
    Command::new("python3")
        .arg(script)
        .args(["group-consume", kafka, topic, group])
        .arg(dir)
        .args([name, "4", protocol])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn member_values(child: std::process::Child) -> Vec<String> {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["errors"], serde_json::json!([]), "{v}");
    strings(&v["values"])
}

#[test]
fn three_classic_group_members_share_six_partitions_and_resume_from_their_commits() {
    three_members_share_six_partitions("classic");
}

#[test]
fn three_kip848_group_members_share_six_partitions_and_resume_from_their_commits() {
    three_members_share_six_partitions("consumer");
}

/// Three confluent-kafka members of a `protocol` group read six partitions: each record
/// once, offsets committed, a later member resumes from them, the empty group is deleted.
fn three_members_share_six_partitions(protocol: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let col = Collector::start(&tmp.path().join("data"), "");
    let kafka = col.kafka_address();
    let c = client();
    let r = c
        .post(col.url("/v1/topics"))
        .json(&serde_json::json!({"name": "grp", "partitions": 6}))
        .send()
        .unwrap();
    assert!(r.status().is_success());
    let dir = tmp.path().join("members");
    std::fs::create_dir_all(&dir).unwrap();
    let members: Vec<_> = ["m1", "m2", "m3"]
        .iter()
        .map(|n| spawn_member(&kafka, "grp", "kg", &dir, n, protocol))
        .collect();
    // Wait until the three hold disjoint, non-empty shares covering all six partitions.
    tributary_tests::wait_for(Duration::from_secs(60), "a stable 3-way assignment", || {
        let shares: Vec<Vec<u64>> = ["m1", "m2", "m3"]
            .iter()
            .map(|n| {
                std::fs::read(dir.join(format!("{n}.assign")))
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or_default()
            })
            .collect();
        let mut all: Vec<u64> = shares.iter().flatten().copied().collect();
        all.sort_unstable();
        (shares.iter().all(|s| !s.is_empty()) && all == (0..6).collect::<Vec<_>>()).then_some(())
    });
    // Kafka's admin views see the group, its three members and their assignment.
    let d = python_client(&["admin-describe", &kafka, "grp", "kg"]);
    assert_eq!(d["groups"], serde_json::json!(["kg"]), "{d}");
    assert!(d["state"].as_str().unwrap().contains("STABLE"), "{d}");
    let kind = if protocol == "consumer" {
        "CONSUMER"
    } else {
        "CLASSIC"
    };
    assert!(d["type"].as_str().unwrap().contains(kind), "{d}");
    assert_eq!(d["members"], serde_json::json!([2, 2, 2]), "{d}");
    assert_eq!(d["retention_ms"], "604800000", "{d}");
    assert_eq!(d["brokers"], 1, "{d}");
    let p = python_client(&["confluent-produce", &kafka, "grp", "6000"]);
    assert_eq!(p["delivered"], 6000, "{p}");
    let mut seen: Vec<String> = Vec::new();
    for m in members {
        let got = member_values(m);
        assert!(!got.is_empty(), "every member read something");
        seen.extend(got);
    }
    let total = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!(total, 6000, "no record read twice");
    assert_eq!(seen.len(), 6000, "none missed");
    // The commits are the group's offsets.
    let (committed, o) = committed_total(&c, &col, "kg");
    assert_eq!(committed, 6000, "{o}");
    // A new member resumes from them and reads only what came after.
    let p = python_client(&["confluent-produce", &kafka, "grp", "600", "6000"]);
    assert_eq!(p["delivered"], 600, "{p}");
    let later = member_values(spawn_member(&kafka, "grp", "kg", &dir, "m4", protocol));
    assert_eq!(later.len(), 600);
    assert!(
        later
            .iter()
            .all(|v| v[7..15].parse::<u32>().unwrap() >= 6000),
        "only new records after the resume"
    );
    // With every member gone, the group can be deleted: its offsets go with it.
    let d = python_client(&["admin-delete-group", &kafka, "kg"]);
    assert_eq!(d["errors"], serde_json::json!([]), "{d}");
    let o = get_json(&c, &col.url("/v1/groups/kg/offsets"));
    assert_eq!(o["offsets"], serde_json::json!([]), "{o}");
}

#[test]
fn a_tail_member_and_a_kip848_consumer_share_one_group_and_its_offsets() {
    let tmp = tempfile::tempdir().unwrap();
    let col = Collector::start(&tmp.path().join("data"), "");
    let kafka = col.kafka_address();
    let c = client();
    let r = c
        .post(col.url("/v1/topics"))
        .json(&serde_json::json!({"name": "mix", "partitions": 4}))
        .send()
        .unwrap();
    assert!(r.status().is_success());
    let base = col.url("");
    let mut tail = tributary_tests::TailProc::start(
        &base,
        &[
            "--group",
            "mixed",
            "--topic",
            "mix",
            "--commit-interval-ms",
            "200",
        ],
    );
    let dir = tmp.path().join("members");
    std::fs::create_dir_all(&dir).unwrap();
    let member = spawn_member(&kafka, "mix", "mixed", &dir, "k1", "consumer");
    // One group, two kinds of member: two partitions each, disjoint.
    let owners = tributary_tests::wait_for(Duration::from_secs(60), "a stable 2-way split", || {
        let d = get_json(&c, &col.url("/v1/groups/mixed"));
        if d["state"] != "stable" || d["members"].as_array()?.len() != 2 {
            return None;
        }
        let kafka_share: Vec<u64> = std::fs::read(dir.join("k1.assign"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())?;
        (kafka_share.len() == 2).then_some((d, kafka_share))
    });
    let (d, kafka_share) = owners;
    // The group's view (HTTP) shows the Kafka member, by its client id, holding what the
    // client itself says it holds.
    let kafka_member = d["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            m["client"]
                .as_str()
                .is_some_and(|c| c.starts_with("kafka:k1/"))
        })
        .unwrap_or_else(|| panic!("no Kafka member in {d}"));
    let held: Vec<u64> = kafka_member["assignment"][0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    assert_eq!(held, kafka_share, "{d}");
    let p = python_client(&["confluent-produce", &kafka, "mix", "2000"]);
    assert_eq!(p["delivered"], 2000, "{p}");
    // The Kafka member reads its two partitions, commits, and leaves after 4 s idle; the
    // tail member then takes them over from those commits.
    let from_kafka = member_values(member);
    assert!(!from_kafka.is_empty(), "the Kafka member read its share");
    let expected_tail = 2000 - from_kafka.len();
    tributary_tests::wait_for(Duration::from_secs(60), "tail reads the rest", || {
        (tail.line_count() >= expected_tail).then_some(())
    });
    // Give a duplicate time to show up before counting.
    std::thread::sleep(Duration::from_millis(1500));
    tail.terminate();
    let from_tail = tail.lines();
    let mut all: Vec<String> = from_kafka.iter().chain(&from_tail).cloned().collect();
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!(
        total,
        2000,
        "no record read twice ({} by tail)",
        from_tail.len()
    );
    assert_eq!(all.len(), 2000, "none missed");
    assert!(!from_tail.is_empty(), "the tail member read its share");
    // Both members committed into the one group: everything is committed.
    let (committed, o) = committed_total(&c, &col, "mixed");
    assert_eq!(committed, 2000, "{o}");
}

/// The leader of `topic`-0 and the HTTP base URLs of the nodes, from node `ask`'s metadata.
fn partition_leader(c: &reqwest::blocking::Client, base: &str, topic: &str) -> Option<u64> {
    let v: serde_json::Value = c
        .get(format!("{base}/v1/metadata"))
        .send()
        .ok()?
        .json()
        .ok()?;
    v["topics"]
        .as_array()?
        .iter()
        .find(|t| t["name"] == topic)?["partitions"][0]["leader"]
        .as_u64()
}

#[test]
fn a_kafka_producer_keeps_every_acknowledged_record_through_two_leader_kills_in_a_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cl = tributary_tests::Cluster::start(tmp.path(), 3, "");
    let c = client();
    let r = c
        .post(cl.node(1).url("/v1/topics"))
        .json(&serde_json::json!({"name": "fo", "partitions": 1, "replication_factor": 3}))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    let bootstrap: Vec<String> = (1..=3).map(|i| cl.node(i).kafka_address()).collect();
    let bootstrap = bootstrap.join(",");
    let progress = tmp.path().join("progress");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/kafka/clients.py");
    let n = 6000;
    // A group member reads along through the failovers (its coordinator may move too).
    let members = tmp.path().join("members");
    std::fs::create_dir_all(&members).unwrap();
    let reader = Command::new("python3")
        .arg(script)
        .args(["group-consume", &bootstrap, "fo", "fog"])
        .arg(&members)
        // Until the test says how many records the log holds: a failover pauses the
        // stream for as long as fencing the dead leader and the client's reconnect
        // backoff take, which no fixed idle time bounds on a loaded machine.
        .args(["r1", "-1"])
        // librdkafka's group log, shown if the reader misses records.
        .env(
            "TRIB_KAFKA_DEBUG",
            std::env::var("TRIB_KAFKA_DEBUG").unwrap_or_else(|_| "cgrp".into()),
        )
        .stdout(Stdio::piped())
        // A file, not a pipe: a pipe nobody drains until the end would stall the client
        // once its log fills the pipe's buffer.
        .stderr(std::fs::File::create(tmp.path().join("reader.log")).unwrap())
        .spawn()
        .unwrap();
    let producer = Command::new("python3")
        .arg(script)
        .args(["produce-paced", &bootstrap, "fo", &n.to_string(), "600"])
        .arg(&progress)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let acked = || {
        std::fs::read_to_string(&progress)
            .ok()
            .and_then(|t| t.trim().parse::<usize>().ok())
            .unwrap_or(0)
    };
    // Kill the leader twice while records are being acknowledged; the first victim comes
    // back before the second kill (min_insync_replicas 2 of 3).
    let mut killed = Vec::new();
    for at in [n / 4, n / 2] {
        tributary_tests::wait_for(Duration::from_secs(60), "records acknowledged", || {
            (acked() >= at).then_some(())
        });
        let survivor = (1..=3u64).find(|i| !killed.contains(i)).unwrap();
        let base = cl.node(survivor).url("");
        let leader = partition_leader(&c, &base, "fo").expect("a leader");
        cl.node(leader).kill9();
        if let Some(prev) = killed.pop() {
            cl.node(prev).restart();
        }
        killed.push(leader);
    }
    for id in killed {
        cl.node(id).restart();
    }
    let out = producer.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["unflushed"], 0, "{}", v["errors"]);
    let acked: Vec<String> = strings(&v["acked"]);
    assert!(
        acked.len() >= n * 9 / 10,
        "most records acknowledged: {}",
        acked.len()
    );
    // Every acknowledged record is in the log exactly once, in the order produced. A
    // leader elected at the very end (the restarted brokers rejoin the ISR) may show a
    // high watermark from before it caught up until its followers' next fetch, as in
    // Kafka: read until every acknowledged record is visible, or 30 s.
    let base = cl.node(1).url("");
    let mut log: Vec<String> = Vec::new();
    let mut lost: Vec<&String> = Vec::new();
    for _ in 0..60 {
        log = tributary_tests::read_topic(&c, &base, "fo")
            .into_iter()
            .map(|(_, _, _, v)| String::from_utf8(v).unwrap())
            .collect();
        let in_log: std::collections::BTreeSet<&String> = log.iter().collect();
        lost = acked.iter().filter(|a| !in_log.contains(a)).collect();
        if lost.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut sorted = log.clone();
    sorted.sort();
    assert_eq!(log, sorted, "in order");
    sorted.dedup();
    assert_eq!(sorted.len(), log.len(), "no record twice");
    assert!(
        lost.is_empty(),
        "acknowledged but lost: {} of {}: {:?} .. {:?}; log has {} records, acked {}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)],
        lost.last(),
        log.len(),
        acked.len()
    );
    // The reader saw every record of the log: no gap (a record may repeat after its
    // coordinator moved, from the last commit on).
    std::fs::write(members.join("r1.stop"), log.len().to_string()).unwrap();
    let out = reader.wait_with_output().unwrap();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "the group reader printed no report ({e}): {}",
            std::fs::read_to_string(tmp.path().join("reader.log")).unwrap_or_default()
        )
    });
    let read: std::collections::BTreeSet<&str> = r["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let missed: Vec<&String> = log.iter().filter(|v| !read.contains(v.as_str())).collect();
    if !missed.is_empty() {
        let stderr = std::fs::read_to_string(tmp.path().join("reader.log")).unwrap_or_default();
        let tail: Vec<&str> = stderr.lines().rev().take(300).collect();
        panic!(
            "the group reader missed {} of {} records, e.g. {:?}; its stalls (at s, for s, \
             after n records): {}; errors: {}; its stderr ends:\n{}",
            missed.len(),
            log.len(),
            &missed[..missed.len().min(5)],
            r["gaps"],
            r["errors"],
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
}

#[test]
fn kafka_python_creates_produces_consumes_in_a_group_commits_and_deletes() {
    let tmp = tempfile::tempdir().unwrap();
    let col = Collector::start(&tmp.path().join("data"), "");
    let kafka = col.kafka_address();
    let c = client();
    let v = python_client(&["kafka-python", &kafka, "kp", "kpg"]);
    assert_eq!(v["created"], true, "{v}");
    let mut values: Vec<String> = strings(&v["values"]);
    values.sort_by_key(|s| s[3..].parse::<u32>().unwrap());
    assert_eq!(
        values,
        (0..300).map(|i| format!("kp-{i}")).collect::<Vec<_>>()
    );
    // Headers and values as sent, over HTTP too; the group's commit is the group's offsets.
    let records = read_topic(&c, &col.url(""), "kp");
    assert_eq!(records.len(), 300);
    assert!(
        records
            .iter()
            .all(|(_, _, h, _)| h.contains(&("origin".to_owned(), "kafka-python".to_owned())))
    );
    let (committed, o) = committed_total(&c, &col, "kpg");
    assert_eq!(committed, 300, "{o}");
    let d = python_client(&["kafka-python-delete", &kafka, "kp"]);
    assert_eq!(d["listed"], false, "{d}");
    assert_eq!(
        c.get(col.url("/v1/topics/kp")).send().unwrap().status(),
        404
    );
}

/// Sends one request of `version` and decodes the reply body.
fn call<Q: Encodable, R: Decodable>(
    stream: &mut TcpStream,
    key: ApiKey,
    version: i16,
    body: &Q,
) -> R {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(11)
        .with_client_id(Some(StrBytes::from_static_str("test")))
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    let reply = exchange(stream, &sized(&buf)).expect("answered");
    let mut r = Bytes::from(reply);
    let h = ResponseHeader::decode(&mut r, key.response_header_version(version)).unwrap();
    assert_eq!(h.correlation_id, 11);
    R::decode(&mut r, version).unwrap()
}

#[test]
fn leader_epochs_are_checked_and_epoch_ends_are_served() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    use kafka_protocol::messages::{
        FetchRequest, FetchResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
    };
    let tmp = tempfile::tempdir().unwrap();
    let col = Collector::start(&tmp.path().join("data"), "");
    let kafka = col.kafka_address();
    let mut s = connect(&kafka);
    // Ten records in epoch 0.
    let batch = tributary_tests::batch(
        &(0..10).map(|i| format!("e{i}")).collect::<Vec<_>>(),
        ProducerStamp::NONE,
        false,
    );
    let resp: ProduceResponse = {
        let reply = exchange(&mut s, &produce_frame("ep", batch)).expect("produce answered");
        let mut r = Bytes::from(reply);
        ResponseHeader::decode(&mut r, ApiKey::Produce.response_header_version(3)).unwrap();
        ProduceResponse::decode(&mut r, 3).unwrap()
    };
    assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
    let fetch = |epoch: i32| {
        FetchRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_static_str("ep")))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(0)
                            .with_current_leader_epoch(epoch)
                            .with_fetch_offset(0)
                            .with_partition_max_bytes(1 << 20),
                    ]),
            ])
    };
    let code = |r: &FetchResponse| r.responses[0].partitions[0].error_code;
    let ok: FetchResponse = call(&mut s, ApiKey::Fetch, 11, &fetch(0));
    assert_eq!(code(&ok), 0, "{ok:?}");
    assert_eq!(ok.responses[0].partitions[0].high_watermark, 10);
    let newer: FetchResponse = call(&mut s, ApiKey::Fetch, 11, &fetch(3));
    assert_eq!(code(&newer), 75, "UNKNOWN_LEADER_EPOCH");
    let unknown: FetchResponse = call(&mut s, ApiKey::Fetch, 11, &fetch(-1));
    assert_eq!(code(&unknown), 0, "-1: no check");
    // Where epoch 0 ends: the log end.
    let q = OffsetForLeaderEpochRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_topics(vec![
            OffsetForLeaderTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("ep")))
                .with_partitions(vec![
                    OffsetForLeaderPartition::default()
                        .with_partition(0)
                        .with_current_leader_epoch(0)
                        .with_leader_epoch(0),
                ]),
        ]);
    let r: OffsetForLeaderEpochResponse = call(&mut s, ApiKey::OffsetForLeaderEpoch, 4, &q);
    let p = &r.topics[0].partitions[0];
    assert_eq!(
        (p.error_code, p.leader_epoch, p.end_offset),
        (0, 0, 10),
        "{r:?}"
    );
}

#[test]
fn gzip_snappy_and_lz4_batches_from_kafka_clients_are_validated_and_stored_as_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let col = Collector::start(&tmp.path().join("data"), "");
    let kafka = col.kafka_address();
    let c = client();
    for codec in ["gzip", "snappy", "lz4", "zstd", "none"] {
        let topic = format!("codec-{codec}");
        let lines: String = (0..500).map(|i| format!("{codec} line {i}\n")).collect();
        let (ok, _, err) = kcat(
            &[
                "-b", &kafka, "-P", "-t", &topic, "-z", codec, "-X", "acks=all",
            ],
            Some(&lines),
        );
        assert!(ok, "{codec}: {err}");
        // Read back over HTTP (the server decompresses to serve JSON) and over Kafka.
        let records = read_topic(&c, &col.url(""), &topic);
        assert_eq!(records.len(), 500, "{codec}");
        let (ok, out, err) = kcat(
            &[
                "-b",
                &kafka,
                "-C",
                "-t",
                &topic,
                "-o",
                "beginning",
                "-e",
                "-q",
            ],
            None,
        );
        assert!(ok, "{err}");
        assert_eq!(out.lines().count(), 500, "{codec}");
        assert!(out.lines().all(|l| l.starts_with(codec)), "{codec}");
    }
}

#[test]
fn topic_ids_name_topics_in_metadata_and_fetch_and_list_offsets_finds_timestamps() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{
        FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
        MetadataResponse,
    };
    use shared::{BatchBuilder, BatchEncoder, Compression};
    let tmp = tempfile::tempdir().unwrap();
    let col = Collector::start(&tmp.path().join("data"), "");
    let mut s = connect(&col.kafka_address());
    // Three records whose timestamps are not in offset order: 1000, 5000, 3000.
    let mut b = BatchBuilder::new();
    for (ts, v) in [(1000, "a"), (5000, "b"), (3000, "c")] {
        b.push(ts, None, Some(v.as_bytes()), &[]);
    }
    let batch = BatchEncoder::new(Compression::None, 0)
        .unwrap()
        .encode(&b, ProducerStamp::NONE)
        .unwrap();
    let reply = exchange(&mut s, &produce_frame("ids", batch)).expect("produce answered");
    let mut r = Bytes::from(reply);
    ResponseHeader::decode(&mut r, ApiKey::Produce.response_header_version(3)).unwrap();
    let produced = ProduceResponse::decode(&mut r, 3).unwrap();
    assert_eq!(produced.responses[0].partition_responses[0].error_code, 0);

    // Metadata by name gives the topic's id; by that id (v12) gives its name back.
    let by_name: MetadataResponse = call(
        &mut s,
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str("ids")))),
        ])),
    );
    let id = by_name.topics[0].topic_id;
    assert!(!id.is_nil(), "a topic id: {by_name:?}");
    let by_id: MetadataResponse = call(
        &mut s,
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default()
                .with_name(None)
                .with_topic_id(id),
        ])),
    );
    assert_eq!(by_id.topics[0].error_code, 0);
    assert_eq!(by_id.topics[0].name.as_ref().unwrap().as_str(), "ids");
    // An unknown id: UNKNOWN_TOPIC_ID (100).
    let unknown: MetadataResponse = call(
        &mut s,
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default()
                .with_name(None)
                .with_topic_id(uuid::Uuid::from_u128(7)),
        ])),
    );
    assert_eq!(unknown.topics[0].error_code, 100);

    // Fetch v13 names the topic by id, in the request and the reply.
    let fetch = |topic_id| {
        FetchRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_max_bytes(1 << 20)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic_id(topic_id)
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(0)
                            .with_current_leader_epoch(-1)
                            .with_partition_max_bytes(1 << 20),
                    ]),
            ])
    };
    let f: FetchResponse = call(&mut s, ApiKey::Fetch, 13, &fetch(id));
    assert_eq!(f.responses[0].topic_id, id);
    let p = &f.responses[0].partitions[0];
    assert_eq!((p.error_code, p.high_watermark), (0, 3), "{p:?}");
    assert!(p.records.as_ref().is_some_and(|r| !r.is_empty()));
    let f: FetchResponse = call(&mut s, ApiKey::Fetch, 13, &fetch(uuid::Uuid::from_u128(7)));
    assert_eq!(f.responses[0].partitions[0].error_code, 100);

    // ListOffsets v10: by timestamp (the first record at or after it, with its own
    // timestamp), max timestamp (-3), earliest local (-4), latest tiered (-5: none).
    let mut list = |ts: i64| -> (i16, i64, i64) {
        let r: ListOffsetsResponse = call(
            &mut s,
            ApiKey::ListOffsets,
            10,
            &ListOffsetsRequest::default()
                .with_replica_id(kafka_protocol::messages::BrokerId(-1))
                .with_topics(vec![
                    ListOffsetsTopic::default()
                        .with_name(TopicName(StrBytes::from_static_str("ids")))
                        .with_partitions(vec![
                            ListOffsetsPartition::default()
                                .with_partition_index(0)
                                .with_current_leader_epoch(-1)
                                .with_timestamp(ts),
                        ]),
                ]),
        );
        let p = &r.topics[0].partitions[0];
        (p.error_code, p.offset, p.timestamp)
    };
    assert_eq!(list(500), (0, 0, 1000));
    assert_eq!(
        list(2000),
        (0, 1, 5000),
        "the first record at or after 2000"
    );
    assert_eq!(list(5001), (0, -1, -1), "no record that recent");
    assert_eq!(
        list(-3),
        (0, 1, 5000),
        "the record with the largest timestamp"
    );
    assert_eq!(list(-4).1, 0);
    assert_eq!(list(-5).1, -1);
    assert_eq!(list(-1).1, 3);
}

/// Three voters with short broker sessions, and `topic` of `partitions` on all three.
fn cluster_with_topic(
    dir: &std::path::Path,
    topic: &str,
    partitions: u32,
) -> tributary_tests::Cluster {
    let cl = tributary_tests::Cluster::start(
        dir,
        3,
        "broker_session_timeout_ms: 2000\nbroker_heartbeat_interval_ms: 300\n",
    );
    let r = client()
        .post(cl.nodes[0].url("/v1/topics"))
        .json(
            &serde_json::json!({"name": topic, "partitions": partitions, "replication_factor": 3}),
        )
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    cl
}

/// A KIP-848 consumer (confluent-kafka, `group.protocol=consumer`) through a `kill -9` of
/// the controller leader, where its group coordinator lives: the new coordinator does not
/// know it, and its heartbeats carry only what changed. Told the coordinator is loading,
/// the client sends its subscription and partitions, and is adopted — same member id, no
/// partition revoked or lost — and reads what is written after the failover.
#[test]
fn a_kip848_consumer_keeps_its_id_and_partitions_through_a_controller_failover() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cl = cluster_with_topic(tmp.path(), "kf", 2);
    let c = client();
    let bootstrap: Vec<String> = (1..=3).map(|i| cl.node(i).kafka_address()).collect();
    let bootstrap = bootstrap.join(",");
    let p = python_client(&["confluent-produce", &bootstrap, "kf", "100"]);
    assert_eq!(p["delivered"], 100, "{p}");
    let dir = tmp.path().join("members");
    std::fs::create_dir_all(&dir).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/kafka/clients.py");
    let member = Command::new("python3")
        .arg(script)
        .args(["group-consume", &bootstrap, "kf", "kfg"])
        .arg(&dir)
        .args(["m1", "-1", "consumer"])
        .env(
            "TRIB_KAFKA_DEBUG",
            std::env::var("TRIB_KAFKA_DEBUG").unwrap_or_else(|_| "cgrp".into()),
        )
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(tmp.path().join("m1.log")).unwrap())
        .spawn()
        .unwrap();
    let events = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.join("m1.events"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    tributary_tests::wait_for(
        Duration::from_secs(60),
        "m1 holding both partitions",
        || {
            let held: Vec<u64> = std::fs::read(dir.join("m1.assign"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            (held == [0, 1]).then_some(())
        },
    );
    let before = events();
    let id = before[0]["member"].clone();
    // The controller leader (the group coordinator) dies.
    let leader = tributary_tests::wait_for(Duration::from_secs(20), "a controller leader", || {
        get_json(&c, &cl.node(1).url("/health"))["controller_leader"].as_u64()
    });
    cl.node(leader).kill9();
    let alive = (1..=3).find(|n| *n != leader).unwrap();
    tributary_tests::wait_for(Duration::from_secs(30), "a new controller leader", || {
        let l = c
            .get(cl.node(alive).url("/health"))
            .send()
            .ok()?
            .json::<serde_json::Value>()
            .ok()?["controller_leader"]
            .as_u64()?;
        (l != leader).then_some(())
    });
    // Heartbeats reach the new coordinator (the member's interval is a few seconds).
    std::thread::sleep(Duration::from_secs(8));
    let p = python_client(&["confluent-produce", &bootstrap, "kf", "100", "100"]);
    assert_eq!(p["delivered"], 100, "{p}");
    std::fs::write(dir.join("m1.stop"), "200").unwrap();
    let during = events();
    let values = member_values(member);
    let log = std::fs::read_to_string(tmp.path().join("m1.log")).unwrap_or_default();
    let mut seen = values.clone();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 200, "every record read once it was written");
    assert_eq!(
        during.len(),
        before.len(),
        "the member was revoked or lost partitions in the failover: {during:?}\n{}",
        log.lines()
            .filter(|l| l.contains("HEARTBEAT") || l.contains("Heartbeat"))
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        events().iter().all(|e| e["member"] == id),
        "the member id changed: {:?}",
        events()
    );
}

/// One OffsetFetch for `group` (version `version`) on `addr`: the error codes answered, of
/// the group (v8+) or of the response (v2–v7).
fn offset_fetch_codes(addr: &str, group: &str, version: i16) -> (i16, Vec<i64>) {
    use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, offset_fetch_request};
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::OffsetFetch as i16)
        .with_request_api_version(version)
        .with_correlation_id(3)
        .with_client_id(Some(StrBytes::from_static_str("test")))
        .encode(
            &mut buf,
            ApiKey::OffsetFetch.request_header_version(version),
        )
        .unwrap();
    let topic = TopicName(StrBytes::from_static_str("of"));
    let req = if version >= 8 {
        OffsetFetchRequest::default().with_groups(vec![
            offset_fetch_request::OffsetFetchRequestGroup::default()
                .with_group_id(StrBytes::from_string(group.to_owned()).into())
                .with_topics(Some(vec![
                    offset_fetch_request::OffsetFetchRequestTopics::default()
                        .with_name(topic)
                        .with_partition_indexes(vec![0]),
                ])),
        ])
    } else {
        OffsetFetchRequest::default()
            .with_group_id(StrBytes::from_string(group.to_owned()).into())
            .with_topics(Some(vec![
                offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(topic)
                    .with_partition_indexes(vec![0]),
            ]))
    };
    req.encode(&mut buf, version).unwrap();
    let mut stream = connect(addr);
    let reply = exchange(&mut stream, &sized(&buf)).expect("a reply");
    let mut r = Bytes::from(reply);
    ResponseHeader::decode(&mut r, ApiKey::OffsetFetch.response_header_version(version)).unwrap();
    let resp = OffsetFetchResponse::decode(&mut r, version).unwrap();
    if version >= 8 {
        let g = &resp.groups[0];
        let offsets = g
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.committed_offset))
            .collect();
        (g.error_code, offsets)
    } else {
        let offsets = resp
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.committed_offset))
            .collect();
        (resp.error_code, offsets)
    }
}

/// OffsetFetch is answered by the group coordinator only (where an acknowledged commit is
/// applied first); any other node answers NOT_COORDINATOR, and the client finds the
/// coordinator again — instead of a committed offset from a lagging copy.
#[test]
fn offset_fetch_is_answered_by_the_coordinator_only() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cl = cluster_with_topic(tmp.path(), "of", 1);
    let c = client();
    let p = python_client(&["confluent-produce", &cl.node(1).kafka_address(), "of", "10"]);
    assert_eq!(p["delivered"], 10, "{p}");
    // A standalone consumer commits offset 7.
    let bootstrap: Vec<String> = (1..=3).map(|i| cl.node(i).kafka_address()).collect();
    let o = python_client(&["commit-offset", &bootstrap.join(","), "of", "ofg", "0", "7"]);
    assert_eq!(o["errors"], serde_json::json!([]), "{o}");
    let leader = tributary_tests::wait_for(Duration::from_secs(20), "a controller leader", || {
        get_json(&c, &cl.node(1).url("/health"))["controller_leader"].as_u64()
    });
    let other = (1..=3).find(|n| *n != leader).unwrap();
    let (at_leader, at_other) = (
        cl.node(leader).kafka_address(),
        cl.node(other).kafka_address(),
    );
    for version in [8, 5] {
        assert_eq!(
            offset_fetch_codes(&at_leader, "ofg", version),
            (0, vec![7]),
            "v{version} at the coordinator"
        );
        let (code, _) = offset_fetch_codes(&at_other, "ofg", version);
        assert_eq!(code, 16, "v{version} elsewhere: NOT_COORDINATOR");
    }
}
