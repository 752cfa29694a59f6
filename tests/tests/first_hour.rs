//! What a new user and an operator meet in the first hour: readiness without collectors,
//! inputs that match nothing, data dirs that are not there, JSON produce against any node
//! of a cluster, and error texts made for people.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use tributary_tests::{AgentProc, Collector, client, free_port, read_topic, scrape, wait_for};

fn append(path: &Path, from: usize, n: usize) -> Vec<String> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let lines: Vec<String> = (from..from + n)
        .map(|i| format!("line-{i:06} GET /x"))
        .collect();
    for l in &lines {
        writeln!(f, "{l}").unwrap();
    }
    lines
}

/// The agent's `/health` on `metrics_listen` port `port`.
fn health(port: u16) -> Option<serde_json::Value> {
    client()
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .ok()?
        .json()
        .ok()
}

/// systemd `Type=notify`: the agent reports READY=1 while no collector answers (it reads
/// and waits), says so in /health and /metrics, and once a collector comes up every line
/// written meanwhile arrives exactly once.
#[test]
fn agent_is_ready_without_collectors_and_delivers_once_they_come() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let port = free_port();
    let mport = free_port();
    let config = tmp.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\ninputs:\n  - paths: [\"{}/*.log\"]\noutput:\n  collectors: [\"http://127.0.0.1:{port}\"]\n  linger_ms: 20\n  retry_backoff_max_ms: 300\nrescan_interval_ms: 200\nmetrics_listen: 127.0.0.1:{mport}\n",
            tmp.path().join("state").display(),
            logs.display()
        ),
    )
    .unwrap();
    let app = logs.join("app.log");
    let mut want = append(&app, 0, 500);
    let sock_path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut agent =
        AgentProc::start_with_env(&config, &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())]);
    let mut buf = [0u8; 256];
    let n = sock
        .recv(&mut buf)
        .expect("no sd_notify message within 20 s");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.contains("READY=1"), "notify message: {msg}");
    let h = health(mport).unwrap();
    assert_eq!(h["status"], "waiting for collectors", "{h}");
    let metrics = format!("http://127.0.0.1:{mport}/metrics");
    assert_eq!(scrape(&metrics, "tributary_agent_connected"), Some(0.0));
    // Lines keep coming, and a rotation happens, while no collector answers.
    want.extend(append(&app, 500, 500));
    std::fs::rename(&app, logs.join("app.log.1")).unwrap();
    want.extend(append(&app, 1000, 300));
    std::thread::sleep(Duration::from_millis(500));
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let ccfg = tmp.path().join("collector.yaml");
    std::fs::write(
        &ccfg,
        format!(
            "listen: 127.0.0.1:{port}\nkafka_listen: 127.0.0.1:0\ndata_dirs: [{}]\n",
            data.display()
        ),
    )
    .unwrap();
    let col = Collector::start_with(&data, &ccfg);
    wait_for(Duration::from_secs(30), "agent connected", || {
        (scrape(&metrics, "tributary_agent_connected") == Some(1.0)).then_some(())
    });
    let c = client();
    let base = col.url("");
    wait_for(Duration::from_secs(60), "every line delivered", || {
        let got = read_topic(&c, &base, "logs");
        (got.len() >= want.len()).then_some(got)
    });
    std::thread::sleep(Duration::from_millis(1000));
    let got = read_topic(&c, &base, "logs")
        .into_iter()
        .map(|r| String::from_utf8(r.3).unwrap());
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for w in &want {
        *counts.entry(w.clone()).or_default() += 1;
    }
    for g in got {
        *counts.entry(g).or_default() -= 1;
    }
    counts.retain(|_, n| *n != 0);
    assert!(
        counts.is_empty(),
        "{} wrong: {:?}",
        counts.len(),
        counts.iter().take(5).collect::<Vec<_>>()
    );
    let h = health(mport).unwrap();
    assert_eq!(h["status"], "ok", "{h}");
    assert!(agent.terminate().success());
}

/// A glob on a missing directory and a directory instead of a glob are reported by
/// `check-config` (still valid) and at start, and shown in /health.
#[test]
fn inputs_matching_nothing_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("logs");
    std::fs::create_dir_all(&dir).unwrap();
    let mport = free_port();
    let config = tmp.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\ninputs:\n  - paths: [\"{}/missing/*.log\", \"{}\"]\noutput:\n  collectors: [\"http://127.0.0.1:{}\"]\nmetrics_listen: 127.0.0.1:{mport}\n",
            tmp.path().join("state").display(),
            dir.display(),
            dir.display(),
            free_port(),
        ),
    )
    .unwrap();
    let out = std::process::Command::new(tributary_tests::binary("agent"))
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("missing: directory") || err.contains("does not exist"),
        "{err}"
    );
    assert!(err.contains("is a directory"), "{err}");
    // `--config FILE` is accepted too.
    let out = std::process::Command::new(tributary_tests::binary("agent"))
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut agent = AgentProc::start(&config);
    let h = wait_for(Duration::from_secs(10), "health lists the inputs", || {
        let h = health(mport)?;
        (h["inputs_matching_nothing"].as_array()?.len() == 2).then_some(h)
    });
    assert_eq!(
        scrape(
            &format!("http://127.0.0.1:{mport}/metrics"),
            "tributary_agent_unmatched_patterns"
        ),
        Some(2.0),
        "{h}"
    );
    assert!(agent.terminate().success());
}

/// No Rust debug output in text meant for people.
fn assert_no_debug_text(what: &str, text: &str) {
    for bad in ["Some(", "None)", "Number(", "String(", "Caused by", " { "] {
        assert!(!text.contains(bad), "{what} shows {bad:?}: {text}");
    }
}

/// A data dir that does not exist (a disk not mounted) is refused with a message naming
/// the likely cause, and not created; `create_data_dirs: true` creates it.
#[test]
fn missing_data_dir_is_refused_not_created() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mnt/disk1/tributary");
    let config = tmp.path().join("collector.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\nkafka_listen: 127.0.0.1:0\ndata_dirs: [{}]\n",
            dir.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(tributary_tests::binary("collector"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not exist")
            && err.contains("mounted")
            && err.contains("create_data_dirs"),
        "{err}"
    );
    assert_eq!(err.matches("does not exist").count(), 1, "said once: {err}");
    assert_no_debug_text("missing data dir", &err);
    assert!(!dir.exists(), "the collector created {}", dir.display());
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\nkafka_listen: 127.0.0.1:0\ndata_dirs: [{}]\ncreate_data_dirs: true\n",
            dir.display()
        ),
    )
    .unwrap();
    let mut c = Collector::start_with(&dir, &config);
    assert!(dir.join(".lock").exists() || dir.is_dir());
    assert!(c.terminate().success());
}

/// Config, CLI and API errors read as sentences: each cause once, key paths once, no debug
/// output.
#[test]
fn error_texts_are_for_people() {
    let tmp = tempfile::tempdir().unwrap();
    let agent_cfg = tmp.path().join("agent.yaml");
    std::fs::write(
        &agent_cfg,
        "state_dir: /tmp/x\ninputs:\n  - paths: [\"/tmp/*.log\"]\noutput:\n  collectors: [\"http://127.0.0.1:7400\"]\n  lingr_ms: 5\n",
    )
    .unwrap();
    let out = std::process::Command::new(tributary_tests::binary("agent"))
        .arg("check-config")
        .arg(&agent_cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("output.lingr_ms: unknown field"), "{err}");
    assert!(
        !err.contains("output: unknown"),
        "key path said twice: {err}"
    );
    assert_no_debug_text("agent config error", &err);
    // A client command against a port where nothing listens names the address and cause.
    let port = free_port();
    let out = std::process::Command::new(tributary_tests::binary("collector"))
        .args(["topics", "list", "--collector"])
        .arg(format!("http://127.0.0.1:{port},127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.to_lowercase().contains("refused"),
        "{err}"
    );
    assert_no_debug_text("unreachable collector", &err);
    // The same through the environment variable, with one node that answers.
    let tmp2 = tempfile::tempdir().unwrap();
    let col = Collector::start(&tmp2.path().join("data"), "");
    let out = std::process::Command::new(tributary_tests::binary("collector"))
        .args(["topics", "list"])
        .env(
            "TRIBUTARY_COLLECTORS",
            format!("http://127.0.0.1:{port},{}", col.url("")),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every option of every command has help text.
#[test]
fn every_cli_option_has_help() {
    let commands: &[(&str, &[&str])] = &[
        ("collector", &["serve"]),
        ("collector", &["check-config"]),
        ("collector", &["tail"]),
        ("collector", &["topics", "list"]),
        ("collector", &["topics", "create"]),
        ("collector", &["topics", "describe"]),
        ("collector", &["topics", "delete"]),
        ("collector", &["groups", "list"]),
        ("collector", &["groups", "describe"]),
        ("collector", &["groups", "reset-offsets"]),
        ("collector", &["cluster", "status"]),
        ("collector", &["bench", "produce"]),
        ("collector", &["bench", "write-logs"]),
        ("collector", &["bench", "consume"]),
        ("agent", &["run"]),
        ("agent", &["check-config"]),
    ];
    let mut missing = Vec::new();
    for (bin, args) in commands {
        let out = std::process::Command::new(tributary_tests::binary(bin))
            .args(*args)
            .arg("--help")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        // Long help: an option line, then its description indented further below.
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim_start();
            let is_option = (t.starts_with("--") || t.starts_with("-h,") || t.starts_with('<'))
                && line.starts_with("  ");
            if !is_option {
                continue;
            }
            let indent = line.len() - t.len();
            let below = lines.get(i + 1).copied().unwrap_or("");
            // Short help puts the text on the same line after two spaces; long help below.
            let same_line = t
                .split_once("  ")
                .is_some_and(|(_, d)| !d.trim().is_empty());
            let described = same_line
                || (!below.trim().is_empty()
                    && below.len() - below.trim_start().len() > indent
                    && !below.trim_start().starts_with('-'));
            if !described {
                missing.push(format!("{bin} {}: {t}", args.join(" ")));
            }
        }
    }
    assert!(missing.is_empty(), "options without help: {missing:#?}");
}

/// In a cluster: a JSON produce with no partition works on every node (records go to a
/// partition the node leads, or are forwarded); a produce naming a partition led elsewhere
/// gets `not_leader` naming the leader's id and address; `cluster status` shows a silent
/// (paused) node as suspect with the time since its last heartbeat, and a killed one as
/// fenced once its port refuses connections (long before its session would end).
#[test]
fn json_produce_on_any_node_and_not_leader_names_the_leader() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cluster = tributary_tests::Cluster::start(tmp.path(), 3, "");
    let c = client();
    let base = cluster.nodes[0].url("");
    let r = c
        .post(format!("{base}/v1/topics"))
        .json(&serde_json::json!({"name": "web", "partitions": 3, "replication_factor": 2}))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    let meta: serde_json::Value = wait_for(Duration::from_secs(20), "leaders", || {
        let m: serde_json::Value = c
            .get(format!("{base}/v1/metadata"))
            .send()
            .ok()?
            .json()
            .ok()?;
        let t = m["topics"]
            .as_array()?
            .iter()
            .find(|t| t["name"] == "web")?
            .clone();
        t["partitions"]
            .as_array()?
            .iter()
            .all(|p| p["leader"].as_u64().is_some())
            .then_some(m)
    });
    let mut produced = 0;
    for node in &cluster.nodes {
        for key in [None, Some("user-7")] {
            let mut rec = serde_json::json!({"value": format!("hello from {}", node.addr)});
            if let Some(k) = key {
                rec["key"] = k.into();
            }
            let r = c
                .post(node.url("/v1/topics/web/records"))
                .json(&serde_json::json!({"records": [rec]}))
                .send()
                .unwrap();
            let status = r.status();
            let body: serde_json::Value = r.json().unwrap();
            assert!(status.is_success(), "node {}: {body}", node.addr);
            assert!(body["offsets"][0]["offset"].as_u64().is_some(), "{body}");
            produced += 1;
        }
    }
    assert_eq!(read_topic(&c, &base, "web").len(), produced);
    // A partition led by another node, named explicitly: not_leader with the leader.
    let addresses: BTreeMap<u64, String> = meta["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["id"].as_u64().unwrap(),
                b["address"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let t = meta["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "web")
        .unwrap();
    let p = &t["partitions"][0];
    let leader = p["leader"].as_u64().unwrap();
    let other = cluster
        .nodes
        .iter()
        .find(|n| n.addr != addresses[&leader])
        .unwrap();
    let r = c
        .post(other.url("/v1/topics/web/records"))
        .json(&serde_json::json!({"records": [{"value": "x"}], "partition": 0}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 421);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "not_leader", "{body}");
    assert_eq!(
        body["error"]["leader"]["id"].as_u64(),
        Some(leader),
        "{body}"
    );
    assert_eq!(
        body["error"]["leader"]["address"],
        addresses[&leader].as_str(),
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(&addresses[&leader]), "{message}");
    assert_no_debug_text("not_leader", message);
    let collectors = format!("{},{}", cluster.nodes[0].url(""), cluster.nodes[1].url(""));
    let status_line = |what: &str| {
        let out = std::process::Command::new(tributary_tests::binary("collector"))
            .args(["cluster", "status", "--collector"])
            .arg(&collectors)
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .any(|l| l.trim_start().starts_with('3') && l.contains(what))
            .then_some(text)
    };
    // A paused node: suspect (session 6 s, heartbeats every 1 s), not fenced: its port
    // still accepts connections.
    cluster.nodes[2].pause();
    let status = wait_for(Duration::from_secs(5), "node 3 suspect", || {
        status_line("suspect")
    });
    assert!(status.contains("s ago"), "{status}");
    cluster.nodes[2].resume();
    // A killed one: fenced as soon as its port refuses connections.
    cluster.node(3).kill9();
    wait_for(Duration::from_secs(5), "node 3 fenced", || {
        status_line("fenced)")
    });
}

/// A voter started before its peers logs what it waits for as INFO/WARN, never ERROR (with
/// the default log filter).
#[test]
fn a_voter_waiting_for_its_peers_logs_no_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let data = tmp.path().join("d1");
    std::fs::create_dir_all(&data).unwrap();
    let config = tmp.path().join("n1.yaml");
    std::fs::write(
        &config,
        format!(
            "node_id: 1\nlisten: 127.0.0.1:{}\nkafka_listen: 127.0.0.1:0\ndata_dirs: [{}]\ncontroller:\n  voters:\n{}",
            ports[0],
            data.display(),
            ports
                .iter()
                .enumerate()
                .map(|(i, p)| format!("    - {{id: {}, address: \"127.0.0.1:{p}\"}}\n", i + 1))
                .collect::<String>()
        ),
    )
    .unwrap();
    let log = tmp.path().join("n1.log");
    let mut child = std::process::Command::new(tributary_tests::binary("collector"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    let errors: Vec<&str> = text.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(text.contains("controller peer unreachable"), "{text}");
}
