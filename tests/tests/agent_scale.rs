//! The agent under scale and outage: a thousand files at once with an idle agent that does
//! not spin, and a collector down for 30 s while files grow and rotate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use tributary_tests::{
    AgentProc, Collector, append_lines, client, free_port, metric_value, read_topic, scrape,
};

/// CPU ticks (user + system) a process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

fn clock_ticks_per_sec() -> f64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Waits until the topic holds `want` records (at most 120 s), then a little longer to
/// catch late duplicates; returns every value.
fn values_when(c: &reqwest::blocking::Client, base: &str, want: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = read_topic(c, base, "logs");
        if got.len() >= want || Instant::now() > deadline {
            std::thread::sleep(Duration::from_millis(1500));
            return read_topic(c, base, "logs")
                .into_iter()
                .map(|(_, _, _, v)| v)
                .collect();
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn assert_exactly_once(got: &[Vec<u8>], want: &[String]) {
    let mut counts: BTreeMap<&[u8], i64> = BTreeMap::new();
    for w in want {
        *counts.entry(w.as_bytes()).or_default() += 1;
    }
    for g in got {
        *counts.entry(g.as_slice()).or_default() -= 1;
    }
    let missing = counts.values().filter(|n| **n > 0).count();
    let extra = counts.values().filter(|n| **n < 0).count();
    assert!(
        missing == 0 && extra == 0,
        "{} records for {} lines: {missing} missing, {extra} duplicated or unexpected",
        got.len(),
        want.len()
    );
}

#[test]
fn a_thousand_files_are_tailed_and_an_idle_agent_does_not_spin() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let col = Collector::start(&tmp.path().join("data"), "");
    let mut want = Vec::new();
    for i in 0..1000 {
        let l = format!("file-{i:04} line-0 started");
        append_lines(&logs.join(format!("f{i:04}.log")), std::slice::from_ref(&l));
        want.push(l);
    }
    let config = tmp.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\ninputs:\n  - paths: [\"{}/*.log\"]\noutput:\n  collectors: [\"{}\"]\n  linger_ms: 50\n",
            tmp.path().join("state").display(),
            logs.display(),
            col.url("")
        ),
    )
    .unwrap();
    let mut agent = AgentProc::start(&config);
    let c = client();
    let got = values_when(&c, &col.url(""), 1000);
    assert_exactly_once(&got, &want);
    // Every file grows once more.
    for i in 0..1000 {
        let l = format!("file-{i:04} line-1");
        append_lines(&logs.join(format!("f{i:04}.log")), std::slice::from_ref(&l));
        want.push(l);
    }
    let got = values_when(&c, &col.url(""), 2000);
    assert_exactly_once(&got, &want);
    // Idle: nothing is written; the agent sleeps on inotify and a 1 s rescan.
    std::thread::sleep(Duration::from_secs(2));
    let pid = agent.child.id();
    let before = cpu_ticks(pid);
    let window = Duration::from_secs(5);
    std::thread::sleep(window);
    let used = (cpu_ticks(pid) - before) as f64 / clock_ticks_per_sec();
    let share = used / window.as_secs_f64();
    eprintln!(
        "idle agent with 1000 files: {:.2}% of one core",
        share * 100.0
    );
    assert!(
        share < 0.05,
        "an idle agent used {:.1}% of a core: it must sleep, not poll",
        share * 100.0
    );
    assert!(agent.terminate().success());
}

#[test]
fn collector_down_for_30s_while_files_grow_and_rotate_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut col = Collector::start(&tmp.path().join("data"), "");
    let config = tmp.path().join("agent.yaml");
    let mport = free_port();
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\ninputs:\n  - paths: [\"{}/app.log*\"]\noutput:\n  collectors: [\"{}\"]\n  linger_ms: 20\n  batch_bytes_max: 65536\n  retry_backoff_max_ms: 1000\nbuffer_bytes_max: 1048576\nrescan_interval_ms: 200\nmetrics_listen: 127.0.0.1:{mport}\n",
            tmp.path().join("state").display(),
            logs.display(),
            col.url("")
        ),
    )
    .unwrap();
    let metrics = format!("http://127.0.0.1:{mport}/metrics");
    let app = logs.join("app.log");
    let line = |g: usize, i: usize| {
        format!(
            "g{g}-{i:07} GET /api/v1/orders?id={i} 200 {}",
            "x".repeat(i % 80)
        )
    };
    let mut want: Vec<String> = (0..5000).map(|i| line(0, i)).collect();
    append_lines(&app, &want);
    let mut agent = AgentProc::start(&config);
    let c = client();
    let got = values_when(&c, &col.url(""), want.len());
    assert_exactly_once(&got, &want);

    col.kill9();
    let pid = agent.child.id();
    let mut max_rss = 0;
    let mut max_buffered: f64 = 0.0;
    let started = Instant::now();
    let mut generation = 1;
    let mut i = 0;
    // 30 s down: ~90 MB of ~1 KB lines (90 times the agent's buffer) and two rename
    // rotations. An agent that buffered instead of pausing would grow past the bound.
    while started.elapsed() < Duration::from_secs(30) {
        let batch: Vec<String> = (i..i + 3000)
            .map(|k| format!("{} {}", line(generation, k), "y".repeat(900)))
            .collect();
        append_lines(&app, &batch);
        want.extend(batch);
        i += 3000;
        let s = started.elapsed().as_secs();
        if (s >= 10 && generation == 1) || (s >= 20 && generation == 2) {
            let rotated = logs.join(format!("app.log.{generation}"));
            std::fs::rename(&app, &rotated).unwrap();
            generation += 1;
            i = 0;
        }
        max_rss = max_rss.max(rss_kib(pid));
        // What the agent holds is bounded by buffer_bytes_max (1 MiB), plus at most one
        // read chunk that crossed it (64 KiB).
        let buffered = scrape(&metrics, "tributary_agent_buffered_bytes").unwrap();
        max_buffered = max_buffered.max(buffered);
        assert!(
            buffered <= (1 << 20) as f64 + 65_536.0,
            "agent buffered {buffered} bytes with buffer_bytes_max 1 MiB"
        );
        std::thread::sleep(Duration::from_millis(1000));
    }
    eprintln!(
        "while the collector was down: agent peak RSS {max_rss} KiB, peak buffered {max_buffered} bytes"
    );
    // Reading paused at the limit (it did not stop early either).
    assert!(max_buffered >= 900_000.0, "peak buffered {max_buffered}");
    col.restart();
    let got = values_when(&c, &col.url(""), want.len());
    assert_exactly_once(&got, &want);
    assert!(agent.terminate().success());
}

/// Files of `dir` the process holds open.
fn open_files_under(pid: u32, dir: &Path) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|p| p.starts_with(dir))
        .count()
}

#[test]
fn max_open_files_closes_the_least_active_and_reopens_them_when_they_grow() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let col = Collector::start(&tmp.path().join("data"), "");
    let config = tmp.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\ninputs:\n  - paths: [\"{}/*.log\"]\noutput:\n  collectors: [\"{}\"]\n  linger_ms: 20\nmax_open_files: 10\nrescan_interval_ms: 200\n",
            tmp.path().join("state").display(),
            logs.display(),
            col.url("")
        ),
    )
    .unwrap();
    let mut want = Vec::new();
    let round = |r: usize, want: &mut Vec<String>| {
        for i in 0..40 {
            let l = format!("file-{i:02} round-{r} {}", "z".repeat(i));
            append_lines(&logs.join(format!("f{i:02}.log")), std::slice::from_ref(&l));
            want.push(l);
        }
    };
    round(0, &mut want);
    let mut agent = AgentProc::start(&config);
    let c = client();
    let pid = agent.child.id();
    let mut max_open = 0;
    for r in 1..5 {
        let got = values_when(&c, &col.url(""), want.len());
        assert_exactly_once(&got, &want);
        max_open = max_open.max(open_files_under(pid, &logs));
        round(r, &mut want);
    }
    let got = values_when(&c, &col.url(""), want.len());
    assert_exactly_once(&got, &want);
    max_open = max_open.max(open_files_under(pid, &logs));
    assert!(max_open <= 10, "the agent held {max_open} log files open");
    assert!(agent.terminate().success());
}

#[allow(unsafe_code)]
fn sighup(pid: u32) {
    // SAFETY: sending a signal to a process id has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
}

#[test]
fn sighup_reloads_inputs_in_place_and_an_invalid_config_keeps_the_running_one() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let col = Collector::start(&tmp.path().join("data"), "");
    let config = tmp.path().join("agent.yaml");
    let write_config = |glob: &str| {
        std::fs::write(
            &config,
            format!(
                "state_dir: {}\ninputs:\n  - paths: [\"{}/{glob}\"]\n    labels: {{input: \"{glob}\"}}\noutput:\n  collectors: [\"{}\"]\n  linger_ms: 20\nrescan_interval_ms: 200\n",
                tmp.path().join("state").display(),
                logs.display(),
                col.url("")
            ),
        )
        .unwrap();
    };
    write_config("a*.log");
    let (a, b) = (logs.join("a.log"), logs.join("b.log"));
    append_lines(&a, &["a-0".to_owned()]);
    append_lines(&b, &["b-0 (before b is an input)".to_owned()]);
    let mut agent = AgentProc::start(&config);
    let pid = agent.child.id();
    let c = client();
    let got = values_when(&c, &col.url(""), 1);
    assert_exactly_once(&got, &["a-0".to_owned()]);
    // Reload: b*.log replaces a*.log.
    write_config("b*.log");
    sighup(pid);
    let mut want = vec!["a-0".to_owned(), "b-0 (before b is an input)".to_owned()];
    let got = values_when(&c, &col.url(""), want.len());
    assert_exactly_once(&got, &want);
    append_lines(&a, &["a-1 (after a stopped being an input)".to_owned()]);
    append_lines(&b, &["b-1".to_owned()]);
    want.push("b-1".to_owned());
    let got = values_when(&c, &col.url(""), want.len());
    assert_exactly_once(&got, &want);
    // An invalid config is reported; the agent goes on with the running one.
    std::fs::write(&config, "inputs: [this is not valid\n").unwrap();
    sighup(pid);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent exited"
    );
    append_lines(&b, &["b-2".to_owned()]);
    want.push("b-2".to_owned());
    let got = values_when(&c, &col.url(""), want.len());
    assert_exactly_once(&got, &want);
    // Still the same process, running the config from before the invalid one.
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent exited"
    );
    assert!(agent.terminate().success());
}

#[test]
fn files_gone_for_forget_files_after_leave_the_state() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let col = Collector::start(&tmp.path().join("data"), "");
    let config = tmp.path().join("agent.yaml");
    let state_dir = tmp.path().join("state");
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\ninputs:\n  - paths: [\"{}/*.log\"]\noutput:\n  collectors: [\"{}\"]\n  linger_ms: 20\nrescan_interval_ms: 200\nforget_files_after_ms: 1000\n",
            state_dir.display(),
            logs.display(),
            col.url("")
        ),
    )
    .unwrap();
    let (gone, kept) = (logs.join("gone.log"), logs.join("kept.log"));
    append_lines(&gone, &["gone-0".to_owned()]);
    append_lines(&kept, &["kept-0".to_owned()]);
    let mut agent = AgentProc::start(&config);
    let c = client();
    let got = values_when(&c, &col.url(""), 2);
    assert_exactly_once(&got, &["gone-0".to_owned(), "kept-0".to_owned()]);
    let state = || std::fs::read_to_string(state_dir.join("agent.state")).unwrap();
    assert!(state().contains("gone.log") && state().contains("kept.log"));
    std::fs::remove_file(&gone).unwrap();
    // Drained and closed after 5 s idle, then forgotten 1 s after it was last found.
    let deadline = Instant::now() + Duration::from_secs(30);
    while state().contains("gone.log") {
        assert!(Instant::now() < deadline, "gone.log never left the state");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(state().contains("kept.log"), "a present file is kept");
    // The kept file goes on from its checkpoint.
    append_lines(&kept, &["kept-1".to_owned()]);
    let got = values_when(&c, &col.url(""), 3);
    assert_exactly_once(
        &got,
        &[
            "gone-0".to_owned(),
            "kept-0".to_owned(),
            "kept-1".to_owned(),
        ],
    );
    assert!(agent.terminate().success());
}

#[test]
fn agent_metrics_and_health_are_served_on_metrics_listen() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let col = Collector::start(&tmp.path().join("data"), "");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = tmp.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\ninputs:\n  - paths: [\"{}/*.log\"]\noutput:\n  collectors: [\"{}\"]\n  linger_ms: 20\nmax_line_bytes: 100\nmetrics_listen: 127.0.0.1:{port}\n",
            tmp.path().join("state").display(),
            logs.display(),
            col.url("")
        ),
    )
    .unwrap();
    // Two short lines and one of 250 bytes: cut into 100 + 100 + 50.
    let long = "L".repeat(250);
    append_lines(
        &logs.join("m.log"),
        &["one".to_owned(), long.clone(), "three".to_owned()],
    );
    let mut agent = AgentProc::start(&config);
    let c = client();
    let got = values_when(&c, &col.url(""), 5);
    assert_exactly_once(
        &got,
        &[
            "one".to_owned(),
            long[..100].to_owned(),
            long[100..200].to_owned(),
            long[200..].to_owned(),
            "three".to_owned(),
        ],
    );
    let text = c
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for (name, want) in [
        ("tributary_agent_records_read_total", 5.0),
        ("tributary_agent_long_line_pieces_total", 2.0),
        ("tributary_agent_files_open", 1.0),
        ("tributary_agent_journal_batches", 0.0),
        ("tributary_agent_connected", 1.0),
        ("tributary_agent_unmatched_patterns", 0.0),
    ] {
        assert_eq!(metric_value(&text, name), Some(want), "{name} in:\n{text}");
    }
    let health: serde_json::Value = c
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert!(agent.terminate().success());
}
