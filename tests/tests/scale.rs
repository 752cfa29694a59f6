//! Many partitions on a small cluster: replication costs what the traffic costs, not what
//! the partition count costs (one fetch session per broker pair; idle partitions ride in it
//! for free). `scripts/bench-scale.py` is the full-size version (10,000 partitions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use tributary_tests::{Cluster, client, wait_for};

const PARTITIONS: u64 = 1_500;
/// A follower silent (or behind) for 2 s leaves the ISR; broker sessions are long, so only
/// replication can take a follower out.
const EXTRA: &str = "broker_session_timeout_ms: 30000\nbroker_heartbeat_interval_ms: 300\nreplica_lag_max_ms: 2000\n";

fn topic_partitions(c: &reqwest::blocking::Client, url: &str, topic: &str) -> Option<Vec<Value>> {
    let m: Value = c
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .ok()?
        .json()
        .ok()?;
    m["topics"]
        .as_array()?
        .iter()
        .find(|t| t["name"] == topic)?["partitions"]
        .as_array()
        .cloned()
}

/// Partitions whose ISR is not all their replicas.
fn not_in_sync(parts: &[Value]) -> Vec<u64> {
    parts
        .iter()
        .filter(|p| {
            let mut isr: Vec<u64> = p["isr"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_u64)
                .collect();
            let mut all: Vec<u64> = p["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_u64)
                .collect();
            isr.sort_unstable();
            all.sort_unstable();
            isr != all
        })
        .map(|p| p["partition"].as_u64().unwrap())
        .collect()
}

/// Established TCP connections from each node's process to another node's HTTP port,
/// keyed `from->to`.
fn broker_connections(cl: &Cluster) -> BTreeMap<String, usize> {
    let port_of = |addr: &str| addr.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let ports: BTreeMap<u16, usize> = cl
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (port_of(&n.addr), i + 1))
        .collect();
    let mut owner = BTreeMap::new();
    for (i, n) in cl.nodes.iter().enumerate() {
        let pid = n.child.id();
        for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
        {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                let link = link.to_string_lossy().to_string();
                if let Some(inode) = link
                    .strip_prefix("socket:[")
                    .and_then(|s| s.strip_suffix(']'))
                {
                    owner.insert(inode.to_owned(), i + 1);
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    for line in tcp.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (remote, state, inode) = (f[2], f[3], f[9]);
        let Some(from) = owner.get(inode) else {
            continue;
        };
        let port = u16::from_str_radix(remote.rsplit(':').next().unwrap(), 16).unwrap();
        if state == "01"
            && let Some(to) = ports.get(&port)
            && to != from
        {
            *out.entry(format!("{from}->{to}")).or_insert(0) += 1;
        }
    }
    out
}

#[test]
fn an_idle_partition_among_thousands_catches_up_while_the_others_stay_in_sync_over_a_few_connections()
 {
    let tmp = tempfile::tempdir().unwrap();
    let cl = Cluster::start(tmp.path(), 3, EXTRA);
    let c = client();
    let r = c
        .post(cl.nodes[0].url("/v1/topics"))
        .json(&json!({"name": "many", "partitions": PARTITIONS, "replication_factor": 3}))
        .timeout(Duration::from_secs(120))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{:?}", r.text());
    let meta = cl.nodes[0].url("/v1/metadata");
    // Every replica open on every node (each fetcher opened its partitions' logs).
    wait_for(
        Duration::from_secs(180),
        "every replica open on every node",
        || {
            cl.nodes
                .iter()
                .all(|n| {
                    std::fs::read_dir(&n.data)
                        .map(|d| {
                            d.flatten()
                                .filter(|e| e.file_name().to_string_lossy().starts_with("many-"))
                                .count()
                        })
                        .unwrap_or(0)
                        == PARTITIONS as usize
                })
                .then_some(())
        },
    );
    wait_for(Duration::from_secs(120), "every ISR full", || {
        let parts = topic_partitions(&c, &meta, "many")?;
        not_in_sync(&parts).is_empty().then_some(())
    });
    // Idle for three times the lag limit: no request names an idle partition, yet every
    // follower stays in every ISR (each session request counts for all of its partitions).
    std::thread::sleep(Duration::from_secs(6));
    let parts = topic_partitions(&c, &meta, "many").unwrap();
    let out = not_in_sync(&parts);
    assert!(
        out.is_empty(),
        "{} partitions lost a follower while idle, e.g. {:?}",
        out.len(),
        &out[..out.len().min(10)]
    );
    // A handful of connections per broker pair, not one per partition. (Bursts of ISR
    // proposals to the controller while the partitions were created may have opened more;
    // idle pooled connections close after a few seconds.)
    let mut last = BTreeMap::new();
    let settled = (0..40).any(|_| {
        last = broker_connections(&cl);
        let ok = last.len() >= 6 && last.values().all(|n| *n <= 4);
        if !ok {
            std::thread::sleep(Duration::from_millis(500));
        }
        ok
    });
    assert!(settled, "connections between brokers: {last:?}");
    // One descriptor per idle replica (its log file), not three.
    for n in &cl.nodes {
        let fds = std::fs::read_dir(format!("/proc/{}/fd", n.child.id()))
            .unwrap()
            .count();
        assert!(
            fds < PARTITIONS as usize * 3 / 2,
            "{fds} descriptors open for {PARTITIONS} idle replicas"
        );
    }
    // After all that idleness, one partition gets records with acks=all: its followers
    // catch up (acks=all needs them) and hold the same bytes.
    let p = 1_234u64;
    let part = parts.iter().find(|x| x["partition"] == p).unwrap();
    let leader = part["leader"].as_u64().unwrap() as usize;
    let records: Vec<Value> = (0..100)
        .map(|i| json!({"value": format!("late {i}")}))
        .collect();
    let r = c
        .post(cl.nodes[leader - 1].url("/v1/topics/many/records?acks=all"))
        .json(&json!({"partition": p, "records": records}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text());
    let sums = wait_for(
        Duration::from_secs(30),
        "every replica holds the 100 records",
        || {
            let sums: Vec<Value> = cl
                .nodes
                .iter()
                .map(|n| {
                    c.get(n.url(&format!(
                        "/internal/replica/checksum?topic=many&partition={p}&upto=100"
                    )))
                    .send()
                    .ok()?
                    .json::<Value>()
                    .ok()
                })
                .collect::<Option<_>>()?;
            sums.iter().all(|s| s["to"] == 100).then_some(sums)
        },
    );
    assert!(
        sums.windows(2).all(|w| w[0]["crc32c"] == w[1]["crc32c"]),
        "replicas differ: {sums:?}"
    );
    // Still all in sync.
    let parts = topic_partitions(&c, &meta, "many").unwrap();
    assert!(not_in_sync(&parts).is_empty());
}
