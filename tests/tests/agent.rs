//! The agent, end to end: real files, a real collector, `kill -9` of both, rotation by rename,
//! by copy-truncate and deletion, long lines — every line must reach the log exactly once,
//! whole, in file order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use tributary_tests::{
    AgentProc, Collector, TopicRecord, append_lines, client, free_port, log_lines, read_topic,
    wait_metric,
};

const MAX_LINE: usize = 1000;

/// Appends the lines `stream-from..from+n` to `path` and adds them to what the log must hold.
fn write(path: &Path, want: &mut Vec<Vec<u8>>, stream: &str, from: usize, n: usize) {
    let lines = log_lines(stream, from, n);
    append_lines(path, &lines);
    want.extend(lines.into_iter().map(String::into_bytes));
}

fn wait_for(c: &reqwest::blocking::Client, base: &str, want: usize) -> Vec<TopicRecord> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = read_topic(c, base, "logs");
        if got.len() >= want || Instant::now() > deadline {
            // A little longer, to catch duplicates arriving late.
            std::thread::sleep(Duration::from_millis(1500));
            return read_topic(c, base, "logs");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn every_line_exactly_once_through_rotations_and_crashes() {
    exactly_once_through_rotations_and_crashes(false);
}

/// The same test, unchanged, with TLS everywhere: the collector requires a client
/// certificate (from `collector certs init`), the agent shows one.
#[test]
fn every_line_exactly_once_over_tls_with_client_certificates() {
    exactly_once_through_rotations_and_crashes(true);
}

fn exactly_once_through_rotations_and_crashes(tls: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let certs = tmp.path().join("certs");
    let (server_tls, agent_tls) = if tls {
        tributary_tests::certs_init(&certs, 1, &["agent"]);
        let d = certs.display();
        (
            tributary_tests::node_tls_yaml(&certs, "required").replace("{id}", "1"),
            format!(
                "  tls: {{ca_file: {d}/ca.pem, cert_file: {d}/agent.pem, key_file: {d}/agent-key.pem}}\n"
            ),
        )
    } else {
        (String::new(), String::new())
    };
    let mut col = Collector::start(&tmp.path().join("data"), &server_tls);
    let config = tmp.path().join("agent.yaml");
    let mport = free_port();
    let metrics = format!("http://127.0.0.1:{mport}/metrics");
    let write_config = |url: &str| {
        // (A closure so a test can point the agent elsewhere.)
        std::fs::write(
            &config,
            format!(
                "state_dir: {}\ninputs:\n  - paths: [\"{}/app.log*\"]\n    exclude: [\"*.gz\"]\n    labels: {{service: test}}\noutput:\n  collectors: [\"{url}\"]\n  linger_ms: 20\n  batch_bytes_max: 65536\n  retry_backoff_max_ms: 300\n{agent_tls}max_line_bytes: {MAX_LINE}\nrescan_interval_ms: 200\nbuffer_bytes_max: 1048576\nmetrics_listen: 127.0.0.1:{mport}\n",
                tmp.path().join("state").display(),
                logs.display()
            ),
        )
        .unwrap();
    };
    write_config(&col.url(""));
    let app = logs.join("app.log");
    let mut want = Vec::new();
    write(&app, &mut want, "a", 0, 2000);
    let mut agent = AgentProc::start(&config);
    write(&app, &mut want, "a", 2000, 2000);
    // Rename rotation: the app writes a little more to the old file, then a new one.
    std::fs::rename(&app, logs.join("app.log.1")).unwrap();
    write(&logs.join("app.log.1"), &mut want, "a", 4000, 500);
    write(&app, &mut want, "b", 0, 1000);
    // A long line is split into pieces of max_line_bytes, never dropped.
    {
        let long = "L".repeat(2 * MAX_LINE + 123);
        let mut f = std::fs::OpenOptions::new().append(true).open(&app).unwrap();
        writeln!(f, "{long}").unwrap();
        want.push(long.as_bytes()[..MAX_LINE].to_vec());
        want.push(long.as_bytes()[MAX_LINE..2 * MAX_LINE].to_vec());
        want.push(long.as_bytes()[2 * MAX_LINE..].to_vec());
    }
    // Agent killed with batches journaled and in flight (the collector is stopped so they
    // cannot be acknowledged first); lines keep coming while it is down.
    wait_metric(&metrics, "tributary_agent_connected", 1.0);
    col.pause();
    // Lines written now are read and journaled but cannot be acknowledged.
    write(&app, &mut want, "b", 1000, 500);
    wait_metric(&metrics, "tributary_agent_journal_batches", 1.0);
    agent.kill9();
    col.resume();
    write(&app, &mut want, "b", 1500, 500);
    agent.restart();
    std::thread::sleep(Duration::from_millis(500));
    // Copy-truncate: the copy carries on where the agent was; the original starts over.
    std::fs::copy(&app, logs.join("app.log.2")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&app)
        .unwrap()
        .set_len(0)
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    write(&app, &mut want, "c", 0, 1000);
    // The collector dies and comes back; the agent retries.
    col.kill9();
    write(&app, &mut want, "c", 1000, 1000);
    std::thread::sleep(Duration::from_millis(500));
    let before = col.url("");
    col.restart();
    assert_eq!(
        col.url(""),
        before,
        "the collector came back on the same port"
    );
    // Deletion after rotation.
    std::thread::sleep(Duration::from_millis(1000));
    std::fs::remove_file(logs.join("app.log.1")).unwrap();
    write(&app, &mut want, "c", 2000, 500);

    let c = col.http.clone();
    let got = wait_for(&c, &col.url(""), want.len());
    // Exactly once: the same multiset of records.
    let mut values: Vec<Vec<u8>> = got.iter().map(|r| r.3.clone()).collect();
    values.sort();
    let mut expected = want.clone();
    expected.sort();
    if values != expected {
        let mut counts: BTreeMap<&[u8], i64> = BTreeMap::new();
        for v in &expected {
            *counts.entry(v).or_default() += 1;
        }
        for v in &values {
            *counts.entry(v).or_default() -= 1;
        }
        let missing: Vec<_> = counts
            .iter()
            .filter(|(_, n)| **n > 0)
            .take(5)
            .map(|(v, _)| String::from_utf8_lossy(v).into_owned())
            .collect();
        let extra: Vec<_> = counts
            .iter()
            .filter(|(_, n)| **n < 0)
            .take(5)
            .map(|(v, _)| String::from_utf8_lossy(v).into_owned())
            .collect();
        panic!(
            "{} records, expected {}; missing (first 5): {missing:?}; duplicated (first 5): {extra:?}",
            values.len(),
            expected.len()
        );
    }
    // In file order: within each stream, line numbers increase with offsets.
    let mut by_partition = got.clone();
    by_partition.sort_by_key(|r| (r.0, r.1));
    let mut last: BTreeMap<(u32, String), String> = BTreeMap::new();
    for (p, _, _, v) in &by_partition {
        let s = String::from_utf8_lossy(v);
        if let Some((stream, rest)) = s.split_once('-')
            && stream.len() == 1
        {
            let n = rest[..6].to_owned();
            if let Some(prev) = last.insert((*p, stream.to_owned()), n.clone()) {
                assert!(
                    prev < n,
                    "stream {stream}: {n} after {prev} in partition {p}"
                );
            }
        }
    }
    // Headers: host, path and the input's labels.
    let (_, _, headers, _) = &got[0];
    let h: BTreeMap<_, _> = headers.iter().cloned().collect();
    assert!(h.contains_key("host"));
    // The path is where the agent read the line, which after a rename may
    // be the rotated name.
    assert!(h["path"].contains("/logs/app.log"), "{h:?}");
    assert_eq!(h["service"], "test");
    let status = agent.terminate();
    assert!(status.success(), "{status:?}");
}

/// `java.log`'s record `i`: a start line and `i % 5` continuation lines.
fn java_record(i: usize) -> String {
    let mut r = format!("2026-11-25 12:00:{:02} ERROR request {i} failed", i % 60);
    for j in 0..i % 5 {
        r.push_str(&format!("\n  at com.example.Handler.run(Handler.java:{j})"));
    }
    r
}

fn append_text(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

#[test]
fn multiline_records_are_joined_exactly_once_across_a_crash_and_the_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let col = Collector::start(&tmp.path().join("data"), "");
    let config = tmp.path().join("agent.yaml");
    let mport = free_port();
    let metrics = format!("http://127.0.0.1:{mport}/metrics");
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\ninputs:\n  - paths: [\"{d}/java.log\"]\n    multiline: {{start_pattern: '^\\d{{4}}-', max_lines: 50, timeout_ms: 500}}\n  - paths: [\"{d}/plain.log\"]\noutput:\n  collectors: [\"{}\"]\n  linger_ms: 20\n  batch_bytes_max: 65536\nrescan_interval_ms: 200\nmetrics_listen: 127.0.0.1:{mport}\n",
            tmp.path().join("state").display(),
            col.url(""),
            d = logs.display(),
        ),
    )
    .unwrap();
    let java = logs.join("java.log");
    let plain = logs.join("plain.log");
    let mut want: Vec<String> = Vec::new();
    let write_java = |from: usize, to: usize, want: &mut Vec<String>| {
        let mut text = String::new();
        for i in from..to {
            text.push_str(&java_record(i));
            text.push('\n');
            want.push(java_record(i));
        }
        append_text(&java, &text);
    };
    write_java(0, 2000, &mut want);
    // A line longer than the read chunk (64 KiB) but under max_line_bytes (256 KiB) is one
    // record, whole.
    let big = format!("big {}", "b".repeat(100_000));
    append_text(
        &plain,
        &format!("first plain line\n{big}\nlast plain line\n"),
    );
    want.extend([
        "first plain line".to_owned(),
        big,
        "last plain line".to_owned(),
    ]);
    let mut agent = AgentProc::start(&config);
    write_java(2000, 4000, &mut want);
    // A crash with batches journaled and in flight (the collector is stopped so they cannot
    // be acknowledged first): they are rebuilt by joining the same lines again.
    wait_metric(&metrics, "tributary_agent_connected", 1.0);
    col.pause();
    // Records written now are read and journaled but cannot be acknowledged.
    write_java(4000, 5000, &mut want);
    wait_metric(&metrics, "tributary_agent_journal_batches", 1.0);
    agent.kill9();
    col.resume();
    write_java(5000, 6000, &mut want);
    agent.restart();
    // A record with more than max_lines lines is cut at 50.
    let mut long = "2026-11-25 13:00:00 ERROR deep".to_owned();
    for j in 0..60 {
        long.push_str(&format!("\n  at frame{j}"));
    }
    append_text(&java, &format!("{long}\n"));
    let lines: Vec<&str> = long.split('\n').collect();
    want.push(lines[..50].join("\n"));
    want.push(lines[50..].join("\n"));
    // The last record has no next line: the 500 ms timeout ends it. A continuation line
    // written after that is a record of its own.
    let c = client();
    let base = col.url("");
    let check = |got: &[TopicRecord], want: &[String]| {
        let mut counts: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
        for w in want {
            *counts.entry(w.as_bytes().to_vec()).or_default() += 1;
        }
        for (_, _, _, v) in got {
            *counts.entry(v.clone()).or_default() -= 1;
        }
        let wrong: Vec<String> = counts
            .iter()
            .filter(|(_, n)| **n != 0)
            .take(3)
            .map(|(v, n)| {
                format!(
                    "{n:+} {:?}",
                    String::from_utf8_lossy(&v[..v.len().min(120)])
                )
            })
            .collect();
        assert!(
            wrong.is_empty(),
            "{} records for {}: {wrong:?}",
            got.len(),
            want.len()
        );
    };
    check(&wait_for(&c, &base, want.len()), &want);
    append_text(&java, "  at late.frame(Late.java:1)\n");
    want.push("  at late.frame(Late.java:1)".to_owned());
    check(&wait_for(&c, &base, want.len()), &want);
    assert!(agent.terminate().success());
}
