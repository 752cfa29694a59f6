//! A generated file-action model test of the agent: a seeded random sequence of writes,
//! bursts, long lines, rename rotations, copy-truncates, deletions of drained files,
//! truncations, `kill -9` of the agent and of the collector — then the topic must hold every
//! line exactly once, whole, and each file's lines in file order.
//!
//! The seed is printed; `TRIBUTARY_MODEL_SEED=<n>` replays a run, `TRIBUTARY_MODEL_STEPS`
//! makes it longer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tributary_tests::{AgentProc, Cluster, Collector, TopicRecord, client, read_topic};

const MAX_LINE: usize = 1000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The world as the model knows it.
struct Model {
    dir: PathBuf,
    /// Generation of the file now at `app.log`.
    current: usize,
    /// Lines written to each generation so far.
    written: BTreeMap<usize, usize>,
    /// What the topic must hold.
    want: Vec<Vec<u8>>,
    rotated: Vec<PathBuf>,
    next_rotation: usize,
}

impl Model {
    fn app(&self) -> PathBuf {
        self.dir.join("app.log")
    }

    /// Appends `n` lines to the current file; one in `long_every` is longer than MAX_LINE.
    fn write(&mut self, rng: &mut Rng, n: usize) {
        let g = self.current;
        let start = *self.written.get(&g).unwrap_or(&0);
        let mut buf = Vec::new();
        for i in start..start + n {
            let filler = if rng.below(500) == 0 {
                "L".repeat(MAX_LINE * 2 + rng.below(300) as usize)
            } else {
                "x".repeat(rng.below(120) as usize)
            };
            let line = format!("g{g:03}-{i:07} {filler}");
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
            // Long lines arrive as pieces of MAX_LINE bytes.
            for piece in line.as_bytes().chunks(MAX_LINE) {
                self.want.push(piece.to_vec());
            }
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.app())
            .unwrap();
        f.write_all(&buf).unwrap();
        self.written.insert(g, start + n);
    }

    fn rotate_name(&mut self) -> PathBuf {
        self.next_rotation += 1;
        self.dir.join(format!("app.log.{}", self.next_rotation))
    }
}

/// Waits (up to 120 s) until the topic holds `want` records. An agent that exited fails the
/// run at once (it would never deliver them).
fn wait_all(
    c: &reqwest::blocking::Client,
    base: &str,
    want: usize,
    agent: &mut AgentProc,
) -> Vec<TopicRecord> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = agent.child.try_wait().unwrap() {
            panic!("the agent exited ({status}); its error is above");
        }
        let got = read_topic(c, base, "logs");
        if got.len() >= want || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Where the agent ships: one collector, or a cluster whose nodes the model kills.
enum Backend {
    One(Collector),
    Many(Cluster),
}

impl Backend {
    fn urls(&self) -> Vec<String> {
        match self {
            Backend::One(c) => vec![c.url("")],
            Backend::Many(cl) => cl.nodes.iter().map(|n| n.url("")).collect(),
        }
    }

    /// `kill -9` a collector (in a cluster: any node, often a partition leader); returns
    /// which.
    fn kill(&mut self, rng: &mut Rng) -> u64 {
        match self {
            Backend::One(c) => {
                c.kill9();
                1
            }
            Backend::Many(cl) => {
                let id = 1 + rng.below(cl.nodes.len() as u64);
                cl.node(id).kill9();
                // Long enough for the node to be fenced and its leaderships to move.
                std::thread::sleep(Duration::from_millis(2500));
                id
            }
        }
    }

    fn restart(&mut self, id: u64) {
        match self {
            Backend::One(c) => c.restart(),
            Backend::Many(cl) => cl.node(id).restart(),
        }
    }
}

#[test]
fn generated_file_actions_deliver_every_line_exactly_once_in_order() {
    for seed in seeds(3) {
        model(1, seed);
    }
}

#[test]
fn generated_file_actions_deliver_every_line_exactly_once_through_cluster_failovers() {
    for seed in seeds(1) {
        model(3, seed);
    }
}

/// `TRIBUTARY_MODEL_SEED=<n>` replays one run; otherwise `TRIBUTARY_MODEL_SEEDS` (default
/// `default`) runs from fresh seeds, each printed.
fn seeds(default: usize) -> Vec<u64> {
    if let Some(seed) = std::env::var("TRIBUTARY_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![seed];
    }
    let n = std::env::var("TRIBUTARY_MODEL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = Rng(base | 1);
    (0..n).map(|_| rng.next() | 1).collect()
}

fn model(nodes: usize, seed: u64) {
    let seed = seed | 1;
    let steps: usize = std::env::var("TRIBUTARY_MODEL_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let mut rng = Rng(seed);
    // Long lingers keep reads pending (unjournaled) when files rotate or the agent dies.
    let linger_ms = [20, 20, 400, 2000][rng.below(4) as usize];
    eprintln!(
        "model seed {seed} ({steps} steps, linger {linger_ms} ms): TRIBUTARY_MODEL_SEED={seed} replays it"
    );
    let mut kills = (0usize, 0usize);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("logs");
    std::fs::create_dir_all(&dir).unwrap();
    let mut backend = if nodes == 1 {
        Backend::One(Collector::start(&tmp.path().join("data"), ""))
    } else {
        Backend::Many(Cluster::start(
            tmp.path(),
            nodes,
            "broker_session_timeout_ms: 2000\nbroker_heartbeat_interval_ms: 300\nreplica_lag_max_ms: 3000\n",
        ))
    };
    let urls = backend.urls();
    let collectors = urls
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let config = tmp.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\ninputs:\n  - paths: [\"{}/app.log*\"]\noutput:\n  collectors: [{collectors}]\n  linger_ms: {linger_ms}\n  batch_bytes_max: 65536\n  retry_backoff_max_ms: 300\nmax_line_bytes: {MAX_LINE}\nrescan_interval_ms: 200\nbuffer_bytes_max: 1048576\n",
            tmp.path().join("state").display(),
            dir.display(),
        ),
    )
    .unwrap();
    let mut m = Model {
        dir,
        current: 0,
        written: BTreeMap::new(),
        want: Vec::new(),
        rotated: Vec::new(),
        next_rotation: 0,
    };
    m.write(&mut rng, 100);
    let mut agent = AgentProc::start(&config);
    let c = client();
    let base = urls[0].clone();
    for step in 0..steps {
        let mut action = rng.below(100);
        // Every run kills the agent and a collector at least once.
        if step == steps / 3 && kills.0 == 0 {
            action = 80;
        }
        if step == 2 * steps / 3 && kills.1 == 0 {
            action = 90;
        }
        let what = match action {
            0..=34 => {
                let n = 1 + rng.below(500) as usize;
                m.write(&mut rng, n);
                format!("write {n}")
            }
            35..=42 => {
                m.write(&mut rng, 5000);
                "burst 5000".to_owned()
            }
            43..=54 => {
                // Rename rotation right after a write (lines of the old file are typically
                // unread or pending in a batch); the writer goes on in a new file at once.
                // Sometimes the agent is killed at that very point.
                let n = 1 + rng.below(300) as usize;
                m.write(&mut rng, n);
                let to = m.rotate_name();
                std::fs::rename(m.app(), &to).unwrap();
                m.rotated.push(to);
                m.current += 1;
                let kill = rng.below(3) == 0;
                if kill {
                    agent.kill9();
                }
                m.write(&mut rng, 10);
                if kill {
                    agent.restart();
                    kills.0 += 1;
                }
                format!(
                    "rename-rotate{}",
                    if kill { " + kill -9 agent" } else { "" }
                )
            }
            55..=62 => {
                // Copy-truncate (as logrotate does) right after a write, so reads of the
                // original are typically pending, unjournaled, when it is truncated. Nothing
                // is written between the copy and the truncation (the writer pauses: otherwise
                // the lines written between them are lost by the rotation itself, for any
                // tailer). Sometimes the agent is killed right after the truncation.
                let n = 1 + rng.below(300) as usize;
                m.write(&mut rng, n);
                let to = m.rotate_name();
                std::fs::copy(m.app(), &to).unwrap();
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(m.app())
                    .unwrap()
                    .set_len(0)
                    .unwrap();
                m.rotated.push(to);
                m.current += 1;
                let kill = rng.below(3) == 0;
                if kill {
                    agent.kill9();
                }
                std::thread::sleep(Duration::from_millis(rng.below(300)));
                m.write(&mut rng, 10);
                if kill {
                    agent.restart();
                    kills.0 += 1;
                }
                format!(
                    "copy-truncate{}",
                    if kill { " + kill -9 agent" } else { "" }
                )
            }
            63..=69 => {
                // Delete the oldest rotated file once everything so far is delivered.
                if m.rotated.is_empty() {
                    "delete (nothing rotated)".to_owned()
                } else {
                    wait_all(&c, &base, m.want.len(), &mut agent);
                    let p = m.rotated.remove(0);
                    std::fs::remove_file(&p).unwrap();
                    format!("delete {}", p.file_name().unwrap().to_string_lossy())
                }
            }
            70..=75 => {
                // Truncate in place (no copy) once everything so far is delivered; what
                // follows is a new file at the same path.
                wait_all(&c, &base, m.want.len(), &mut agent);
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(m.app())
                    .unwrap()
                    .set_len(0)
                    .unwrap();
                m.current += 1;
                std::thread::sleep(Duration::from_millis(300));
                m.write(&mut rng, 10);
                "truncate".to_owned()
            }
            76..=85 => {
                agent.kill9();
                m.write(&mut rng, 200);
                agent.restart();
                kills.0 += 1;
                "kill -9 agent".to_owned()
            }
            86..=93 => {
                let id = backend.kill(&mut rng);
                m.write(&mut rng, 200);
                backend.restart(id);
                kills.1 += 1;
                format!("kill -9 collector {id}")
            }
            _ => {
                std::thread::sleep(Duration::from_millis(rng.below(400)));
                "pause".to_owned()
            }
        };
        eprintln!("step {step}: {what}");
        std::thread::sleep(Duration::from_millis(rng.below(150)));
    }
    let got = wait_all(&c, &base, m.want.len(), &mut agent);
    std::thread::sleep(Duration::from_millis(1500));
    let got = if got.len() >= m.want.len() {
        read_topic(&c, &base, "logs")
    } else {
        got
    };
    // Exactly once, whole.
    let mut counts: BTreeMap<&[u8], i64> = BTreeMap::new();
    for w in &m.want {
        *counts.entry(w.as_slice()).or_default() += 1;
    }
    for (_, _, _, v) in &got {
        *counts.entry(v.as_slice()).or_default() -= 1;
    }
    let wrong: Vec<String> = counts
        .iter()
        .filter(|(_, n)| **n != 0)
        .take(5)
        .map(|(v, n)| format!("{n:+} {:?}", String::from_utf8_lossy(&v[..v.len().min(40)])))
        .collect();
    assert!(
        wrong.is_empty(),
        "seed {seed}: {} records for {} lines; first differences (+missing/-extra): {wrong:?}",
        got.len(),
        m.want.len()
    );
    // In order: each `path` stream (the lines labelled with one path: a file and its
    // successors at that path) carries generations and line numbers in the order written —
    // the rest of a rotated file before the first line of the next.
    let mut by_offset = got.clone();
    by_offset.sort_by_key(|r| (r.0, r.1));
    let mut last: BTreeMap<(u32, String), (String, u64)> = BTreeMap::new();
    for (p, o, headers, v) in &by_offset {
        let s = String::from_utf8_lossy(v);
        if s.len() >= 12 && s.starts_with('g') && s.as_bytes()[4] == b'-' {
            let path = headers
                .iter()
                .find(|(k, _)| k == "path")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let line = s[..12].to_owned();
            if let Some((prev, at)) = last.insert((*p, path.clone()), (line.clone(), *o)) {
                assert!(
                    prev < line,
                    "seed {seed}: path {path}: {line} (offset {o}) after {prev} (offset {at})"
                );
            }
        }
    }
    assert!(kills.0 > 0 && kills.1 > 0, "seed {seed}: {kills:?}");
    assert!(agent.terminate().success());
}
