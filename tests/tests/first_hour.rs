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
    let health: serde_json::Value = client()
        .get(format!("http://127.0.0.1:{mport}/health"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health["status"], "waiting for collectors", "{health}");
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
            "listen: 127.0.0.1:{port}\ndata_dirs: [{}]\n",
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
    let health: serde_json::Value = client()
        .get(format!("http://127.0.0.1:{mport}/health"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health["status"], "ok", "{health}");
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
    let health = wait_for(Duration::from_secs(10), "health lists the inputs", || {
        let h: serde_json::Value = client()
            .get(format!("http://127.0.0.1:{mport}/health"))
            .send()
            .ok()?
            .json()
            .ok()?;
        (h["inputs_matching_nothing"].as_array()?.len() == 2).then_some(h)
    });
    assert_eq!(
        scrape(
            &format!("http://127.0.0.1:{mport}/metrics"),
            "tributary_agent_unmatched_patterns"
        ),
        Some(2.0),
        "{health}"
    );
    assert!(agent.terminate().success());
}
