//! The fault campaign, short form (CI): episodes of random faults against a real 3-node
//! cluster while workloads run, every operation recorded, then the whole history checked by
//! `tributary_tests::history` (lost acknowledged writes, duplicates, order, divergence,
//! acknowledged offsets, committed offsets, group ownership, topic operations'
//! linearizability, agent lines exactly once in order) and the replicas compared byte for
//! byte up to the high watermark.
//!
//! Faults, one at a time (a majority always stays up): `kill -9` and restart, SIGSTOP/SIGCONT
//! (sometimes longer than the broker session), SIGTERM and restart; network partitions of one
//! node, of the controller leader, one-way cuts, bridges and slow links (every inter-node
//! connection goes through `tributary_tests::netfault` relays); wall-clock jumps of up to
//! 2 h either way on one node (libfaketime); `kill -9` of the agent. Workloads: three
//! idempotent acks=all producers (one per partition), one idempotent acks=1 producer (its
//! losses measured, not held to zero), topic creation/deletion, two consumer-group members
//! committing offsets, and the agent tailing a file rotated by rename.
//!
//! Each episode prints its seed and fault schedule; `CAMPAIGN_SEED=<seed>
//! CAMPAIGN_EPISODES=1` replays one, `CAMPAIGN_EPISODES` and `CAMPAIGN_SECS` make a longer
//! campaign (`scripts/campaign.sh` runs one and sums it up). `CAMPAIGN_MIX=disk` adds full
//! disks (root: each node on its own tmpfs); `CAMPAIGN_MIX=storage` adds failing fsyncs in a
//! running node too (`EIO` injected with strace; the node stops itself and is restarted).
//! `CAMPAIGN_MIX=full` adds power cuts, of one node and of every node at once: `kill -9`
//! and every byte the process had not fsynced lost, torn tails included
//! (`tributary_tests::powerloss`, from each process's power-loss journal).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tributary_tests::fsyncfault::FailingFsyncs;
use tributary_tests::history::{
    Call, History, Member, Outcome, Tp, check_replicas, check_rotated_lines,
};
use tributary_tests::netfault::{LinkState, Net};
use tributary_tests::{AgentProc, Cluster, client, wait_for};

const TOPIC: &str = "campaign";
const PARTITIONS: u32 = 3;
/// Short broker sessions; segments roll every 5 s of wall-clock time, so clock jumps move
/// segment rolls and the time indexes. Retention is off: the workloads' records carry a
/// 2023 timestamp, and the final reads start at offset 0.
const EXTRA: &str = "broker_session_timeout_ms: 2000\nbroker_heartbeat_interval_ms: 300\nreplica_lag_max_ms: 3000\ntopics:\n  segment_ms: 5000\n  retention_ms: -1\n";
/// `Mix::Full`: retention on, one hour, and producers and group offsets expiring after two
/// idle hours — its clock jumps reach a day ahead, past all three, and its records carry
/// the true time. A node whose clock jumps must not expire any of it early.
const EXTRA_FULL: &str = "broker_session_timeout_ms: 2000\nbroker_heartbeat_interval_ms: 300\nreplica_lag_max_ms: 3000\nretention_check_interval_ms: 500\nproducer_id_expiration_ms: 7200000\ngroups:\n  offsets_retention_ms: 7200000\ntopics:\n  segment_ms: 5000\n  retention_ms: 3600000\n";

/// xorshift64*: small, seeded, replayable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What the workloads share: the cluster's addresses, the history, the clock, the stop flag.
#[derive(Clone)]
struct Env {
    addrs: Arc<Vec<String>>,
    history: Arc<Mutex<History>>,
    start: Instant,
    stop: Arc<AtomicBool>,
    /// Records carry the true time (`Mix::Full`, where retention is on), not a fixed 2023 one.
    true_time: bool,
}

impl Env {
    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn record(&self, process: u32, invoke: u64, call: Call, outcome: Outcome) {
        let complete = (outcome != Outcome::Unknown).then(|| self.now());
        self.history
            .lock()
            .unwrap()
            .push(process, invoke, complete, call, outcome);
    }

    fn http(&self) -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }

    /// The base URL of a partition's leader, from any node that answers.
    fn leader(&self, c: &reqwest::blocking::Client, topic: &str, p: u32) -> Option<String> {
        tributary_tests::leader_url(c, &self.addrs, topic, p)
    }
}

/// An idempotent producer of 5-record batches to one partition: each batch is retried
/// (same bytes, same sequence) until acknowledged; one still unacknowledged at the stop has
/// an unknown outcome.
fn producer(env: Env, process: u32, partition: u32, acks_all: bool) -> u64 {
    let c = env.http();
    let pid = loop {
        if env.stop.load(Ordering::Relaxed) {
            return 0;
        }
        if let Some(v) = env.addrs.iter().find_map(|a| {
            c.post(format!("{a}/v1/producers"))
                .send()
                .ok()?
                .json::<Value>()
                .ok()
        }) && let Some(pid) = v["producer_id"].as_i64()
        {
            break pid;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let acks = if acks_all { "all" } else { "1" };
    let mut seq = 0i64;
    let mut acked = 0;
    while !env.stop.load(Ordering::Relaxed) {
        let values: Vec<String> = (seq..seq + 5).map(|s| format!("p{process}-{s}")).collect();
        let stamp = shared::ProducerStamp {
            producer_id: pid,
            producer_epoch: 0,
            base_sequence: seq as i32,
        };
        // Made once: every retry sends the same bytes.
        let bytes = if env.true_time {
            tributary_tests::batch_at(&values, stamp, true, shared::sys::now_ms())
        } else {
            tributary_tests::batch(&values, stamp, true)
        };
        let invoke = env.now();
        let mut offset = None;
        while !env.stop.load(Ordering::Relaxed) {
            if let Some(base) = env.leader(&c, TOPIC, partition)
                && let Ok(r) = c
                    .post(format!(
                        "{base}/v1/topics/{TOPIC}/partitions/{partition}/batches?acks={acks}"
                    ))
                    .header("content-type", "application/vnd.tributary.batches")
                    .body(bytes.clone())
                    .send()
                && r.status().is_success()
                && let Ok(v) = r.json::<Value>()
            {
                offset = v["batches"][0]["base_offset"].as_u64();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let call = Call::Produce {
            tp: (TOPIC.to_owned(), partition),
            producer: pid,
            seq,
            acks_all,
            values,
            offset,
        };
        match offset {
            Some(_) => {
                env.record(process, invoke, call, Outcome::Ok);
                acked += 5;
                seq += 5;
            }
            None => {
                env.record(process, invoke, call, Outcome::Unknown);
                break;
            }
        }
    }
    acked
}

/// The consumer group the members form.
const GROUP: &str = "campaign-readers";

/// A member of [`GROUP`] speaking the HTTP group protocol (as `collector tail` does): it
/// heartbeats to any node, reads exactly its assignment from each partition's leader from the
/// committed offset, and commits past what it read. Assignments, reads, commits and
/// committed-offset reads go into the history. Returns the records it read.
fn group_member(env: Env, process: u32) -> u64 {
    let c = env.http();
    let mut node = process as usize;
    let mut member_id: Option<String> = None;
    let mut epoch = 0i64;
    let mut assignment: Vec<u32> = Vec::new();
    let mut position: std::collections::HashMap<u32, u64> = Default::default();
    let mut interval = Duration::from_millis(500);
    let mut last_heartbeat: Option<Instant> = None;
    let mut read = 0u64;
    let codes = |v: &Value| v["error"]["code"].as_str().map(str::to_owned);
    while !env.stop.load(Ordering::Relaxed) {
        if last_heartbeat.is_none_or(|t| t.elapsed() >= interval) {
            let addr = &env.addrs[node % env.addrs.len()];
            let body = json!({
                "member_id": member_id,
                "member_epoch": epoch,
                "topics": [TOPIC],
                "owned": [{"topic": TOPIC, "partitions": assignment}],
                "client": format!("campaign-{process}"),
            });
            let invoke = env.now();
            let reply = c
                .post(format!("{addr}/v1/groups/{GROUP}/heartbeat"))
                .json(&body)
                .send()
                .ok()
                .map(|r| {
                    (
                        r.status().is_success(),
                        r.json::<Value>().unwrap_or(Value::Null),
                    )
                });
            match reply {
                Some((true, v)) => {
                    let id = v["member_id"].as_str().unwrap_or_default().to_owned();
                    let new_epoch = v["member_epoch"].as_i64().unwrap_or(0);
                    let mut parts: Vec<u32> = v["assignment"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|a| a["topic"] == TOPIC)
                        .flat_map(|a| a["partitions"].as_array().cloned().unwrap_or_default())
                        .filter_map(|p| p.as_u64().map(|p| p as u32))
                        .collect();
                    parts.sort_unstable();
                    if new_epoch != epoch || parts != assignment || member_id.as_ref() != Some(&id)
                    {
                        env.record(
                            process,
                            invoke,
                            Call::Assigned {
                                member: Member {
                                    group: GROUP.into(),
                                    member: id.clone(),
                                    generation: new_epoch as i32,
                                },
                                partitions: parts.iter().map(|p| (TOPIC.to_owned(), *p)).collect(),
                            },
                            Outcome::Ok,
                        );
                    }
                    position.retain(|p, _| parts.contains(p));
                    (member_id, epoch, assignment) = (Some(id), new_epoch, parts);
                    interval = Duration::from_millis(
                        v["heartbeat_interval_ms"]
                            .as_u64()
                            .unwrap_or(500)
                            .clamp(50, 1000),
                    );
                }
                Some((false, v))
                    if matches!(
                        codes(&v).as_deref(),
                        Some("unknown_member_id" | "fenced_member_epoch")
                    ) =>
                {
                    // Drop everything and rejoin (an unknown member under a new id).
                    if codes(&v).as_deref() == Some("unknown_member_id") {
                        member_id = None;
                    }
                    (epoch, assignment) = (0, Vec::new());
                    position.clear();
                }
                _ => {
                    node += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            last_heartbeat = Some(Instant::now());
        }
        let Some(id) = member_id.clone() else {
            continue;
        };
        let member = Member {
            group: GROUP.into(),
            member: id.clone(),
            generation: epoch as i32,
        };
        for &p in &assignment {
            let tp: Tp = (TOPIC.to_owned(), p);
            let from = match position.get(&p) {
                Some(o) => *o,
                None => {
                    let invoke = env.now();
                    let addr = &env.addrs[node % env.addrs.len()];
                    let Some(v) = c
                        .get(format!("{addr}/v1/groups/{GROUP}/offsets"))
                        .send()
                        .ok()
                        .filter(|r| r.status().is_success())
                        .and_then(|r| r.json::<Value>().ok())
                    else {
                        node += 1;
                        continue;
                    };
                    let committed = v["offsets"].as_array().into_iter().flatten().find_map(|o| {
                        (o["topic"] == TOPIC && o["partition"] == p)
                            .then(|| o["offset"].as_u64())
                            .flatten()
                    });
                    env.record(
                        process,
                        invoke,
                        Call::Committed {
                            group: GROUP.into(),
                            tp: tp.clone(),
                            offset: committed,
                        },
                        Outcome::Ok,
                    );
                    committed.unwrap_or(0)
                }
            };
            let Some(leader) = env.leader(&c, TOPIC, p) else {
                continue;
            };
            let invoke = env.now();
            let Ok((records, next, _)) =
                tributary_tests::fetch_once(&c, &leader, TOPIC, p, from, 64 << 10)
            else {
                continue;
            };
            read += records.len() as u64;
            if !records.is_empty() {
                env.record(
                    process,
                    invoke,
                    Call::Read {
                        tp: tp.clone(),
                        records,
                        member: Some(member.clone()),
                    },
                    Outcome::Ok,
                );
            }
            position.insert(p, next);
            if next == from {
                continue;
            }
            let invoke = env.now();
            let r = c
                .post(format!("{leader}/v1/groups/{GROUP}/offsets"))
                .json(&json!({
                    "member_id": id,
                    "member_epoch": epoch,
                    "offsets": [{"topic": TOPIC, "partition": p, "offset": next}],
                }))
                .send();
            let outcome = match r {
                Ok(r) if r.status().is_success() => Outcome::Ok,
                Ok(r) => match (
                    r.status().is_client_error(),
                    codes(&r.json::<Value>().unwrap_or(Value::Null)),
                ) {
                    // Refused: not current, or the partition moved; heartbeat to find out.
                    (true, Some(code)) => {
                        last_heartbeat = None;
                        Outcome::Failed(code)
                    }
                    _ => Outcome::Unknown,
                },
                Err(_) => Outcome::Unknown,
            };
            let call = Call::Commit {
                group: GROUP.into(),
                tp,
                offset: next,
            };
            env.record(process, invoke, call, outcome);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(id) = member_id {
        let _ = c
            .post(format!("{}/v1/groups/{GROUP}/heartbeat", env.addrs[0]))
            .json(&json!({"member_id": id, "member_epoch": -1}))
            .send();
    }
    read
}

/// The topic the agent ships to: one partition, so its log order is the file order.
const AGENT_TOPIC: &str = "agentlogs";
/// Lines per file before the writer rotates it (rename, then a new file).
const ROTATE_EVERY: usize = 1500;

/// Writes numbered lines to `logs/app.log` in small bursts, rotating by rename to
/// `app.log.N` every [`ROTATE_EVERY`] lines. The agent watches `app.log*`, as the docs ask:
/// a file that is created and rotated away while the agent is down is found under its
/// rotated name. Returns every line, in write order.
fn log_writer(env: Env, logs: std::path::PathBuf) -> Vec<String> {
    let path = logs.join("app.log");
    let mut written: Vec<String> = Vec::new();
    let mut rotations = 0;
    while !env.stop.load(Ordering::Relaxed) {
        let burst: Vec<String> = (written.len()..written.len() + 20)
            .map(|i| format!("line-{i:08}"))
            .collect();
        tributary_tests::append_lines(&path, &burst);
        written.extend(burst);
        if written.len() >= (rotations + 1) * ROTATE_EVERY {
            rotations += 1;
            std::fs::rename(&path, logs.join(format!("app.log.{rotations}"))).unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    written
}

/// Creates and deletes topics `m-0`..`m-3` at random through random nodes.
fn metadata_worker(env: Env, process: u32, seed: u64) -> u64 {
    let c = env.http();
    let mut rng = Rng(seed | 1);
    let mut ops = 0;
    while !env.stop.load(Ordering::Relaxed) && ops < 4 * 40 {
        let topic = format!("m-{}", rng.below(4));
        let node = &env.addrs[rng.below(env.addrs.len() as u64) as usize];
        let create = rng.below(2) == 0;
        let invoke = env.now();
        let r = if create {
            c.post(format!("{node}/v1/topics"))
                .json(&json!({"name": topic, "partitions": 1, "replication_factor": 2}))
                .send()
        } else {
            c.delete(format!("{node}/v1/topics/{topic}")).send()
        };
        let outcome = match r {
            Ok(r) if r.status().is_success() => Outcome::Ok,
            Ok(r) => {
                let v: Value = r.json().unwrap_or(Value::Null);
                match v["error"]["code"].as_str() {
                    Some(code @ ("topic_exists" | "unknown_topic")) => {
                        Outcome::Failed(code.to_owned())
                    }
                    // Anything else (no controller, a timeout inside): it may still happen.
                    _ => Outcome::Unknown,
                }
            }
            Err(_) => Outcome::Unknown,
        };
        let call = if create {
            Call::CreateTopic { topic }
        } else {
            Call::DeleteTopic { topic }
        };
        env.record(process, invoke, call, outcome);
        ops += 1;
        std::thread::sleep(Duration::from_millis(100 + rng.below(300)));
    }
    ops
}

/// Which faults an episode draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mix {
    /// Process faults only: the first campaigns' schedules, so their seeds replay.
    Process,
    /// Every kind but a full disk: the mix of the first 100-episode run (RELIABILITY.md),
    /// so its seeds replay.
    All,
    /// Every kind, a full disk too (each node on its own tmpfs; needs root).
    Disk,
    /// Every kind of `Disk`, and failing fsyncs (`EIO`, injected with strace; needs root).
    Storage,
    /// Every kind of `Storage`, and power cuts: of one node, and of every node at once.
    Full,
}

/// Each node's data directory on its own small tmpfs, so one node's disk can be filled.
/// Mounted when the test runs as root (CI does); unmounted on drop.
struct Disks {
    mounts: Vec<std::path::PathBuf>,
}

/// Size of each node's filesystem.
const DISK_BYTES: u64 = 512 << 20;

/// How long a node that said it is stopping itself may take to exit: its controlled
/// shutdown waits up to 15 s for its leaderships to move.
const SELF_STOP_WAIT: Duration = Duration::from_secs(40);

impl Disks {
    /// Mounts one tmpfs per node; fails (never skips) when it cannot: the runner skips
    /// the test that needs it instead (`scripts/test.sh` without root).
    fn mount(dir: &std::path::Path, nodes: u64) -> Self {
        let mut disks = Self { mounts: Vec::new() };
        for id in 1..=nodes {
            let at = dir.join(format!("node{id}"));
            std::fs::create_dir_all(&at).unwrap();
            let ok = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={DISK_BYTES}")])
                .arg(format!("campaign-node{id}"))
                .arg(&at)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "cannot mount a tmpfs for the disk faults (run as root)");
            disks.mounts.push(at);
        }
        disks
    }

    /// Fills node `id`'s filesystem to the last 64 KiB; returns the filler to delete.
    fn fill(&self, id: u64) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.mounts[(id - 1) as usize].join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 1 << 20];
        while f.write_all(&chunk).is_ok() {}
        let len = f.metadata().unwrap().len();
        let _ = f.set_len(len.saturating_sub(64 << 10));
        filler
    }
}

impl Drop for Disks {
    fn drop(&mut self) {
        for m in &self.mounts {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(m)
                .status();
        }
    }
}

/// The controller leader's id, as any node reports it.
fn controller_leader(env: &Env) -> Option<u64> {
    let c = env.http();
    env.addrs.iter().find_map(|a| {
        c.get(format!("{a}/health"))
            .send()
            .ok()?
            .json::<Value>()
            .ok()?["controller_leader"]
            .as_u64()
    })
}

/// Every link between `id` and the other nodes set to `state`, in the directions asked.
fn links_of(net: &Net, id: u64, out: bool, inward: bool, state: LinkState) {
    for other in (1..=3).filter(|o| *o != id) {
        if out {
            net.set(id, other, state);
        }
        if inward {
            net.set(other, id, state);
        }
    }
}

/// What the nemesis acts on.
struct Targets<'a> {
    cl: &'a mut Cluster,
    net: &'a Net,
    agent: &'a mut AgentProc,
    /// Each node's own filesystem, when mounted (`Mix::Disk`).
    disks: Option<&'a Disks>,
}

/// One fault, then its repair. Process faults hit one node; network faults cut or slow
/// links between nodes (never the clients' connections); the agent is killed too.
fn fault(t: &mut Targets, rng: &mut Rng, env: &Env, mix: Mix, log: &mut Vec<String>) {
    let id = 1 + rng.below(3);
    let at = env.now();
    let hold = |rng: &mut Rng, min: u64, span: u64| {
        let ms = min + rng.below(span);
        std::thread::sleep(Duration::from_millis(ms));
        ms
    };
    let kinds = match mix {
        Mix::Process => 4,
        Mix::All => 12,
        Mix::Disk => 13,
        Mix::Storage => 14,
        Mix::Full => 16,
    };
    match rng.below(kinds) {
        0 | 1 => {
            t.cl.node(id).kill9();
            let down = hold(rng, 500, 2500);
            t.cl.node(id).restart();
            log.push(format!(
                "{at} ms: kill -9 node {id}, restarted after {down} ms"
            ));
        }
        2 => {
            t.cl.node(id).pause();
            let pause = hold(rng, 500, 3500);
            t.cl.node(id).resume();
            log.push(format!("{at} ms: SIGSTOP node {id} for {pause} ms"));
        }
        3 => {
            t.cl.node(id).terminate();
            let down = hold(rng, 200, 1500);
            t.cl.node(id).restart();
            log.push(format!(
                "{at} ms: SIGTERM node {id}, restarted after {down} ms"
            ));
        }
        4 => {
            links_of(t.net, id, true, true, LinkState::Blocked);
            let ms = hold(rng, 1000, 5000);
            t.net.heal();
            log.push(format!(
                "{at} ms: partition node {id} from the others for {ms} ms"
            ));
        }
        5 => {
            // The controller leader cut off: the others must elect one and fence it.
            let Some(leader) = controller_leader(env) else {
                return;
            };
            links_of(t.net, leader, true, true, LinkState::Blocked);
            let ms = hold(rng, 1000, 5000);
            t.net.heal();
            log.push(format!(
                "{at} ms: partition the controller leader (node {leader}) for {ms} ms"
            ));
        }
        6 => {
            let out = rng.below(2) == 0;
            links_of(t.net, id, out, !out, LinkState::Blocked);
            let ms = hold(rng, 1000, 4000);
            t.net.heal();
            let dir = if out { "from" } else { "to" };
            log.push(format!(
                "{at} ms: one-way partition: nothing {dir} node {id} for {ms} ms"
            ));
        }
        7 => {
            // A bridge: `id` still reaches both others, which do not reach each other.
            let (a, b) = match id {
                1 => (2, 3),
                2 => (1, 3),
                _ => (1, 2),
            };
            t.net.set(a, b, LinkState::Blocked);
            t.net.set(b, a, LinkState::Blocked);
            let ms = hold(rng, 1000, 5000);
            t.net.heal();
            log.push(format!(
                "{at} ms: bridge through node {id} (nodes {a} and {b} cut) for {ms} ms"
            ));
        }
        11 => {
            // An NTP-style step of the wall clock, forward or back, then back to true time
            // (the monotonic clock stays true). Up to 2 h (a day in `Mix::Full`).
            if !t.cl.has_clock(id) {
                log.push(format!("{at} ms: (clock jump skipped: no libfaketime)"));
                return;
            }
            let sign = if rng.below(2) == 0 { 1 } else { -1 };
            // `Mix::Full`: up to a day, past its retention and expiry settings.
            let span = if mix == Mix::Full { 86_340 } else { 7140 };
            let secs = sign * (60 + rng.below(span)) as i64;
            t.cl.set_clock_offset(id, secs);
            let ms = hold(rng, 2000, 4000);
            t.cl.set_clock_offset(id, 0);
            log.push(format!(
                "{at} ms: clock of node {id} {secs:+} s for {ms} ms"
            ));
        }
        12 => {
            // A full disk: writes fail with ENOSPC until the filler goes.
            let disks = t.disks.expect("Mix::Disk mounts the disks");
            let filler = disks.fill(id);
            let ms = hold(rng, 1000, 3000);
            std::fs::remove_file(&filler).unwrap();
            log.push(format!("{at} ms: disk of node {id} full for {ms} ms"));
        }
        13 => {
            // Failing fsyncs: a node that meets one stops itself (hands its leaderships off,
            // exits with an error) and is restarted, as its service manager would.
            let fault = FailingFsyncs::inject(t.cl.node(id).child.id());
            let ms = hold(rng, 500, 2000);
            drop(fault);
            let node = t.cl.node(id);
            if node.is_stopping_itself() {
                let stopped = Instant::now();
                let status = loop {
                    if let Some(s) = node.child.try_wait().unwrap() {
                        break s;
                    }
                    assert!(
                        stopped.elapsed() < SELF_STOP_WAIT,
                        "node {id} said it was stopping but still runs after {SELF_STOP_WAIT:?}"
                    );
                    std::thread::sleep(Duration::from_millis(100));
                };
                let took = stopped.elapsed().as_millis();
                node.restart();
                log.push(format!(
                    "{at} ms: fsyncs of node {id} failed for {ms} ms: it stopped itself ({status}, {took} ms after the window), restarted"
                ));
            } else {
                log.push(format!(
                    "{at} ms: fsyncs of node {id} failed for {ms} ms: none was attempted"
                ));
            }
        }
        14 => {
            // A power cut of one node: `kill -9`, and everything it had not fsynced is lost
            // (torn tails included); it boots again later.
            let cut = t.cl.node(id).cut_power(rng.next());
            let down = hold(rng, 500, 2500);
            t.cl.node(id).restart();
            log.push(format!(
                "{at} ms: power cut of node {id} ({} bytes lost in {} files), restarted after {down} ms",
                cut.bytes, cut.files
            ));
        }
        15 => {
            // The whole cluster loses power (one room, one feed): every acknowledged acks=all
            // write was fsynced on every in-sync replica, so all of them must come back.
            let cuts: Vec<_> = (1..=3)
                .map(|n| t.cl.node(n).cut_power(rng.next()))
                .collect();
            let down = hold(rng, 500, 2500);
            for n in 1..=3 {
                t.cl.node(n).relaunch();
            }
            for n in 1..=3 {
                t.cl.node(n).wait_healthy();
            }
            let lost: Vec<String> = cuts
                .iter()
                .map(|c| format!("{} B in {} files", c.bytes, c.files))
                .collect();
            log.push(format!(
                "{at} ms: power cut of every node (lost: {}), restarted after {down} ms",
                lost.join(", ")
            ));
        }
        10 => {
            t.agent.kill9();
            let down = hold(rng, 200, 1800);
            t.agent.restart();
            log.push(format!(
                "{at} ms: kill -9 the agent, restarted after {down} ms"
            ));
        }
        _ => {
            let delay = Duration::from_millis(20 + rng.below(280));
            links_of(t.net, id, true, true, LinkState::Slow(delay));
            let ms = hold(rng, 2000, 4000);
            t.net.heal();
            log.push(format!(
                "{at} ms: slow links of node {id} ({} ms a chunk) for {ms} ms",
                delay.as_millis()
            ));
        }
    }
}

fn episode(seed: u64, secs: u64, mix: Mix) {
    let tmp = tempfile::tempdir().unwrap();
    let disks =
        matches!(mix, Mix::Disk | Mix::Storage | Mix::Full).then(|| Disks::mount(tmp.path(), 3));
    let extra = if mix == Mix::Full { EXTRA_FULL } else { EXTRA };
    let (mut cl, net) = Cluster::start_with_net(tmp.path(), 3, extra);
    let c = client();
    let r = c
        .post(cl.node(1).url("/v1/topics"))
        .json(&json!({"name": TOPIC, "partitions": PARTITIONS, "replication_factor": 3}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let r = c
        .post(cl.node(1).url("/v1/topics"))
        .json(&json!({"name": AGENT_TOPIC, "partitions": 1, "replication_factor": 3}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let agent_config = tmp.path().join("agent.yaml");
    let collectors: Vec<String> = cl
        .nodes
        .iter()
        .map(|n| format!("\"{}\"", n.url("")))
        .collect();
    std::fs::write(
        &agent_config,
        format!(
            "state_dir: {}\ninputs:\n  - paths: [\"{}/app.log*\"]\n    topic: {AGENT_TOPIC}\noutput:\n  collectors: [{}]\n  linger_ms: 50\n  request_timeout_ms: 5000\n  retry_backoff_max_ms: 500\nrescan_interval_ms: 100\nmetrics_listen: 127.0.0.1:{}\n",
            tmp.path().join("agent-state").display(),
            logs.display(),
            collectors.join(", "),
            tributary_tests::free_port(),
        ),
    )
    .unwrap();
    let mut agent = AgentProc::start(&agent_config);
    let env = Env {
        addrs: Arc::new(cl.nodes.iter().map(|n| n.url("")).collect()),
        history: Arc::new(Mutex::new(History::new())),
        start: Instant::now(),
        stop: Arc::new(AtomicBool::new(false)),
        true_time: mix == Mix::Full,
    };
    let mut workers = Vec::new();
    for p in 0..PARTITIONS {
        let env = env.clone();
        workers.push(std::thread::spawn(move || producer(env, p, p, true)));
    }
    {
        let env = env.clone();
        workers.push(std::thread::spawn(move || producer(env, 10, 0, false)));
    }
    {
        let env = env.clone();
        workers.push(std::thread::spawn(move || metadata_worker(env, 20, seed)));
    }
    for process in [30, 31] {
        let env = env.clone();
        workers.push(std::thread::spawn(move || group_member(env, process)));
    }
    let writer = {
        let (env, logs) = (env.clone(), logs.clone());
        std::thread::spawn(move || log_writer(env, logs))
    };
    // The nemesis: faults with quiet gaps between them until the episode's time is up.
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut faults = Vec::new();
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(500 + rng.below(1500)));
        fault(
            &mut Targets {
                cl: &mut cl,
                net: &net,
                agent: &mut agent,
                disks: disks.as_ref(),
            },
            &mut rng,
            &env,
            mix,
            &mut faults,
        );
    }
    // Healed: every node up. Let the workloads make progress, then stop them.
    for n in &cl.nodes {
        n.wait_healthy();
    }
    std::thread::sleep(Duration::from_secs(2));
    env.stop.store(true, Ordering::Relaxed);
    let produced: Vec<u64> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let lines = writer.join().unwrap();
    eprintln!(
        "episode seed {seed}: faults:\n  {}\n  acknowledged records per producer / metadata ops / records read by group members: {produced:?}; agent lines written: {}",
        faults.join("\n  "),
        lines.len()
    );
    assert!(
        produced[..PARTITIONS as usize].iter().all(|a| *a > 0),
        "every acks=all producer made progress"
    );
    // Drain: every replica back in sync, then final reads of every partition from its leader
    // and the replicas compared up to the high watermark.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Value::Null;
    loop {
        let meta: Option<Value> = c
            .get(cl.nodes[0].url("/v1/metadata"))
            .send()
            .ok()
            .and_then(|r| r.json().ok());
        let topic = meta.as_ref().and_then(|v| {
            v["topics"]
                .as_array()?
                .iter()
                .find(|t| t["name"] == TOPIC)
                .cloned()
        });
        if let Some(t) = topic {
            let in_sync = (0..PARTITIONS as usize).all(|p| {
                t["partitions"][p]["isr"]
                    .as_array()
                    .is_some_and(|i| i.len() == 3)
            });
            if in_sync {
                break;
            }
            last = t;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: replicas not back in sync 60 s after the faults ended: {last}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut anomalies = Vec::new();
    for p in 0..PARTITIONS {
        let leader = wait_for(Duration::from_secs(30), "the leader", || {
            env.leader(&c, TOPIC, p)
        });
        let invoke = env.now();
        let records = tributary_tests::read_all(&c, &leader, TOPIC, p);
        let hw = records.last().map_or(0, |(o, _)| o + 1);
        env.record(
            99,
            invoke,
            Call::Read {
                tp: (TOPIC.to_owned(), p),
                records,
                member: None,
            },
            Outcome::Ok,
        );
        let tp: Tp = (TOPIC.to_owned(), p);
        let sums = wait_for(
            Duration::from_secs(30),
            "every replica up to the HW",
            || {
                let s: Vec<(u32, Vec<u8>)> = cl
                    .nodes
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        let v: Value = c
                            .get(n.url(&format!(
                                "/internal/replica/checksum?topic={TOPIC}&partition={p}&upto={hw}"
                            )))
                            .send()
                            .ok()?
                            .json()
                            .ok()?;
                        (v["to"] == hw).then(|| (i as u32 + 1, v.to_string().into_bytes()))
                    })
                    .collect::<Option<Vec<_>>>()?;
                Some(s)
            },
        );
        anomalies.extend(check_replicas(&tp, &sums));
    }
    // The agent: every line written reaches its topic exactly once, in file order (it has
    // until the deadline to ship what it read after the faults).
    let mut shipped = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        shipped = tributary_tests::read_topic(&c, &env.addrs[0], AGENT_TOPIC);
        if shipped.len() >= lines.len() {
            // A little longer, for a late duplicate to show.
            std::thread::sleep(Duration::from_secs(1));
            shipped = tributary_tests::read_topic(&c, &env.addrs[0], AGENT_TOPIC);
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "episode seed {seed}: agent: {} lines written, {} records in {AGENT_TOPIC}",
        lines.len(),
        shipped.len()
    );
    shipped.sort_by_key(|r| r.1);
    let logged: Vec<(String, String)> = shipped
        .into_iter()
        .map(|(_, _, headers, v)| {
            let path = headers
                .into_iter()
                .find(|(k, _)| k == "path")
                .map(|(_, p)| p)
                .unwrap_or_default();
            (path, String::from_utf8_lossy(&v).into_owned())
        })
        .collect();
    anomalies.extend(check_rotated_lines(&lines, &logged));
    let report = env.history.lock().unwrap().check();
    eprintln!("episode seed {seed}: {report}");
    for a in &anomalies {
        eprintln!("{a}");
    }
    if !anomalies.is_empty() {
        // Where the replicas differ: each node's files, batch by batch.
        for n in &mut cl.nodes {
            n.terminate();
        }
        for p in 0..PARTITIONS {
            let logs: Vec<Vec<(u64, i32, u32, String)>> = (1..=3)
                .map(|i| on_disk(&tmp.path().join(format!("node{i}/{TOPIC}-{p}"))))
                .collect();
            let n = logs.iter().map(Vec::len).min().unwrap_or(0);
            if let Some(at) = (0..n).find(|k| logs.iter().any(|l| l[*k] != logs[0][*k])) {
                eprintln!("{TOPIC}-{p}: replicas differ at batch #{at}:");
                for (i, l) in logs.iter().enumerate() {
                    eprintln!(
                        "  node {}: {:?}",
                        i + 1,
                        &l[at.saturating_sub(2)..(at + 3).min(l.len())]
                    );
                }
            }
        }
    }
    assert!(
        report.is_clean() && anomalies.is_empty(),
        "seed {seed}: anomalies (replay with CAMPAIGN_SEED={seed} CAMPAIGN_EPISODES=1)"
    );
    assert!(report.acked_all_records > 0);
}

/// Each batch in a partition's segment files: (base offset, leader epoch, CRC, first value).
fn on_disk(dir: &std::path::Path) -> Vec<(u64, i32, u32, String)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|f| f.extension().is_some_and(|e| e == "log"));
    files.sort();
    let limits = shared::BatchLimits::default();
    let mut out = Vec::new();
    for f in files {
        let bytes = std::fs::read(&f).unwrap_or_default();
        for item in shared::BatchIter::new(&bytes, limits) {
            let Ok((h, b)) = item else { break };
            let first = shared::DecodedRecords::new(b, &limits)
                .ok()
                .and_then(|d| {
                    d.iter()
                        .next()
                        .and_then(|r| r.value.map(|v| String::from_utf8_lossy(v).into_owned()))
                })
                .unwrap_or_default();
            out.push((h.base_offset as u64, h.partition_leader_epoch, h.crc, first));
        }
    }
    out
}

/// Seeds of episodes that once found an anomaly, kept as regression cases with the fault
/// mix they ran with (thread timing is not seeded, so a replay re-creates the fault
/// schedule, not every interleaving).
const REGRESSION_SEEDS: &[(u64, Mix)] = &[
    (106, Mix::Process),
    (316, Mix::Process),
    (409, Mix::Process),
    (3021, Mix::All),
    (3039, Mix::All),
];

/// Seeds of full-disk episodes that once found an anomaly (`Mix::Disk`).
const DISK_REGRESSION_SEEDS: &[u64] = &[5];

/// Seeds of episodes with failing fsyncs that once found a bug (`Mix::Storage`): 6002, a
/// node stopping itself after a failed fsync spun forever in its controlled shutdown; 6035,
/// committed offsets read from a lagging node's metadata went backwards.
const STORAGE_REGRESSION_SEEDS: &[u64] = &[6002, 6035];

/// Seeds run with every fault kind (`Mix::Full`): 7001 cuts the power of every node three
/// times in its 15 s; 7116 found a member epoch repeated by a coordinator restarted within
/// its term; 7122 found records exposed by a restarted leader and then lost.
const FULL_SEEDS: &[u64] = &[7001, 7116, 7122];

#[test]
fn a_short_campaign_of_mixed_faults_finds_no_anomaly() {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let secs = env("CAMPAIGN_SECS").unwrap_or(15);
    // CAMPAIGN_SEED/CAMPAIGN_EPISODES (CAMPAIGN_MIX=process for the process faults alone,
    // =disk to add full disks, =storage failing fsyncs, =full power cuts): a run of
    // consecutive seeds; by default one new seed and the regression seeds.
    let mix = match std::env::var("CAMPAIGN_MIX").as_deref() {
        Ok("process") => Mix::Process,
        Ok("all") | Err(_) => Mix::All,
        Ok("disk") => Mix::Disk,
        Ok("storage") => Mix::Storage,
        Ok("full") => Mix::Full,
        Ok(other) => panic!("CAMPAIGN_MIX={other}: use all, process, disk, storage or full"),
    };
    let seeds: Vec<(u64, Mix)> = match env("CAMPAIGN_SEED") {
        Some(first) => (first..first + env("CAMPAIGN_EPISODES").unwrap_or(1))
            .map(|s| (s, mix))
            .collect(),
        None => std::iter::once((1, Mix::All))
            .chain(REGRESSION_SEEDS.iter().copied())
            .collect(),
    };
    // Every episode runs, even after one fails, so a long run counts all its anomalies.
    let failed: Vec<u64> = seeds
        .into_iter()
        .filter(|&(seed, mix)| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| episode(seed, secs, mix)))
                .is_err()
        })
        .map(|(seed, _)| seed)
        .collect();
    assert!(failed.is_empty(), "failed episodes: seeds {failed:?}");
}

/// Full disks (and failing fsyncs, injected with strace, and power cuts) on top of every
/// other fault: each node on its own tmpfs, so it needs root.
/// `scripts/test.sh` runs it when it can mount one (and fails under CI=true when it
/// cannot); elsewhere the runner reports it skipped.
#[test]
#[ignore = "needs root (a tmpfs per node) and strace (scripts/test.sh runs it then)"]
fn a_short_campaign_with_full_disks_finds_no_anomaly() {
    let secs = std::env::var("CAMPAIGN_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    for &seed in DISK_REGRESSION_SEEDS {
        episode(seed, secs, Mix::Disk);
    }
    for &seed in STORAGE_REGRESSION_SEEDS {
        episode(seed, secs, Mix::Storage);
    }
    for &seed in FULL_SEEDS {
        episode(seed, secs, Mix::Full);
    }
}
