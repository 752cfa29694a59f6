//! Rotation while the agent is busy, placed deterministically: lines read into a pending
//! batch (or journaled and in flight) when a file is copy-truncated or renamed, with and
//! without a `kill -9` of the agent at that point. Every line must arrive exactly once, and
//! each `path` stream (the lines the agent labels with one path) in the order written: the
//! rest of a rotated file before the first line of its successor.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tributary_tests::{
    AgentProc, Collector, TopicRecord, append_lines, client, free_port, log_lines, read_topic,
    scrape,
};

fn copy_truncate(path: &Path, to: &Path) {
    std::fs::copy(path, to).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(0)
        .unwrap();
}

struct Setup {
    _tmp: tempfile::TempDir,
    logs: PathBuf,
    col: Collector,
    config: PathBuf,
    metrics: String,
}

/// A collector and an agent config watching `logs/<glob>`.
fn setup(glob: &str, output: &str, extra: &str) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let col = Collector::start(&tmp.path().join("data"), "");
    let port = free_port();
    let config = tmp.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\ninputs:\n  - paths: [\"{}/{glob}\"]\noutput:\n  collectors: [\"{}\"]\n  retry_backoff_max_ms: 200\n{output}rescan_interval_ms: 100\nmetrics_listen: 127.0.0.1:{port}\n{extra}",
            tmp.path().join("state").display(),
            logs.display(),
            col.url(""),
        ),
    )
    .unwrap();
    Setup {
        _tmp: tmp,
        logs,
        col,
        config,
        metrics: format!("http://127.0.0.1:{port}/metrics"),
    }
}

impl Setup {
    fn metric(&self, name: &str) -> f64 {
        scrape(&self.metrics, name).unwrap_or(0.0)
    }

    fn wait_metric(&self, name: &str, at_least: f64) {
        tributary_tests::wait_metric(&self.metrics, name, at_least);
    }

    /// Waits until `want` records are stored (and a little longer, for late duplicates).
    fn delivered(&self, want: usize) -> Vec<TopicRecord> {
        let c = client();
        let base = self.col.url("");
        let deadline = Instant::now() + Duration::from_secs(60);
        while read_topic(&c, &base, "logs").len() < want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(1000));
        read_topic(&c, &base, "logs")
    }
}

/// Every wanted line exactly once; and within each `(partition, path header)` stream, in
/// offset order, the lines' `(stream name, number)` never go backwards. Stream names are
/// chosen so that a file's successor sorts after it (`b0` then `b1`).
fn check(got: &[TopicRecord], want: &[String]) {
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for w in want {
        *counts.entry(w.as_str()).or_default() += 1;
    }
    let values: Vec<String> = got
        .iter()
        .map(|r| String::from_utf8_lossy(&r.3).into_owned())
        .collect();
    for v in &values {
        *counts.entry(v.as_str()).or_default() -= 1;
    }
    let wrong: Vec<String> = counts
        .iter()
        .filter(|(_, n)| **n != 0)
        .take(8)
        .map(|(v, n)| format!("{n:+} {}", &v[..v.len().min(24)]))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} records for {} lines; first differences (+missing/-extra): {wrong:?}",
        got.len(),
        want.len()
    );
    let mut sorted: Vec<&TopicRecord> = got.iter().collect();
    sorted.sort_by_key(|r| (r.0, r.1));
    let mut last: BTreeMap<(u32, String), String> = BTreeMap::new();
    for r in sorted {
        let path =
            r.2.iter()
                .find(|(k, _)| k == "path")
                .map(|(_, v)| v.clone())
                .expect("every record has a path header");
        let v = String::from_utf8_lossy(&r.3);
        let key = v.split(' ').next().unwrap().to_owned();
        if let Some(prev) = last.insert((r.0, path.clone()), key.clone()) {
            assert!(
                prev < key,
                "path {path} (partition {}): {key} at offset {} follows {prev}",
                r.0,
                r.1
            );
        }
    }
}

/// Writes 100 lines to `file` and ships them; then, with the collector paused, 3000 more
/// of which the agent reads only what `buffer_bytes_max` allows; then kills the agent.
/// Returns the stopped agent (to restart) and the lines written.
fn killed_with_unread_lines(s: &Setup, file: &Path, stream: &str) -> (AgentProc, Vec<String>) {
    append_lines(file, &log_lines(stream, 0, 100));
    let mut want = log_lines(stream, 0, 100);
    let mut agent = AgentProc::start(&s.config);
    s.wait_metric("tributary_agent_batches_acked_total", 1.0);
    s.wait_metric("tributary_agent_records_read_total", 100.0);
    s.col.pause();
    append_lines(file, &log_lines(stream, 100, 3000));
    want.extend(log_lines(stream, 100, 3000));
    s.wait_metric("tributary_agent_buffered_bytes", 60_000.0);
    agent.kill9();
    (agent, want)
}

const LONG_LINGER: &str = "  linger_ms: 3000\n  batch_bytes_max: 4194304\n";

/// The case from the field: lines read from `b.log` wait in a pending batch (long linger)
/// when it is copy-truncated; the copy must continue after them, not read them again.
#[test]
fn copy_truncate_while_reads_are_pending() {
    let s = setup("*.log*", LONG_LINGER, "");
    let b = s.logs.join("b.log");
    append_lines(&b, &log_lines("b0", 0, 500));
    let mut want = log_lines("b0", 0, 500);
    let mut agent = AgentProc::start(&s.config);
    s.wait_metric("tributary_agent_records_read_total", 500.0);
    assert_eq!(
        s.metric("tributary_agent_batches_sent_total"),
        0.0,
        "the 500 lines must still be pending (linger 3 s) when the file is copy-truncated"
    );
    copy_truncate(&b, &s.logs.join("b.log.1"));
    append_lines(&b, &log_lines("b1", 0, 100));
    want.extend(log_lines("b1", 0, 100));
    check(&s.delivered(want.len()), &want);
    assert!(agent.terminate().success());
}

/// As above, and the agent is killed while the copy's lines and the new file's are pending:
/// the restarted agent reads both again, once, the copy first.
#[test]
fn copy_truncate_while_pending_then_kill() {
    let s = setup("*.log*", LONG_LINGER, "");
    let b = s.logs.join("b.log");
    append_lines(&b, &log_lines("b0", 0, 500));
    let mut want = log_lines("b0", 0, 500);
    let mut agent = AgentProc::start(&s.config);
    s.wait_metric("tributary_agent_records_read_total", 500.0);
    copy_truncate(&b, &s.logs.join("b.log.1"));
    append_lines(&b, &log_lines("b1", 0, 100));
    want.extend(log_lines("b1", 0, 100));
    // The truncation was noticed and the new content read (into the same pending batch).
    s.wait_metric("tributary_agent_records_read_total", 600.0);
    assert_eq!(s.metric("tributary_agent_batches_sent_total"), 0.0);
    agent.kill9();
    agent.restart();
    check(&s.delivered(want.len()), &want);
    assert!(agent.terminate().success());
}

/// Batches journaled and in flight (the collector is stopped) when the file is
/// copy-truncated, then the agent is killed: the journaled batches are rebuilt from the copy,
/// and the copy continues after them.
#[test]
fn copy_truncate_while_journaled_then_kill() {
    let s = setup("*.log*", "  linger_ms: 20\n  batch_bytes_max: 8192\n", "");
    let b = s.logs.join("b.log");
    append_lines(&b, &log_lines("b0", 0, 300));
    let mut want = log_lines("b0", 0, 300);
    let mut agent = AgentProc::start(&s.config);
    s.wait_metric("tributary_agent_batches_acked_total", 1.0);
    s.col.pause();
    append_lines(&b, &log_lines("b0", 300, 700));
    want.extend(log_lines("b0", 300, 700));
    s.wait_metric("tributary_agent_records_read_total", 1000.0);
    s.wait_metric("tributary_agent_journal_batches", 2.0);
    copy_truncate(&b, &s.logs.join("b.log.1"));
    append_lines(&b, &log_lines("b1", 0, 100));
    want.extend(log_lines("b1", 0, 100));
    s.wait_metric("tributary_agent_records_read_total", 1100.0);
    agent.kill9();
    s.col.resume();
    agent.restart();
    check(&s.delivered(want.len()), &want);
    assert!(agent.terminate().success());
}

/// Three files renamed while the agent has unread data in them (reading is held back by
/// `buffer_bytes_max` while the collector is stopped), each followed by a new file at the
/// same path: each path's stream must carry the old file's rest before the new file's lines.
/// The rotated names do not match the glob: the agent drains them by open handle.
#[test]
fn rename_keeps_each_path_stream_in_order() {
    let s = setup(
        "*.log",
        "  linger_ms: 20\n  batch_bytes_max: 16384\n",
        "buffer_bytes_max: 65536\n",
    );
    let mut want = Vec::new();
    for f in ["a", "b", "c"] {
        append_lines(
            &s.logs.join(format!("{f}.log")),
            &log_lines(&format!("{f}0"), 0, 100),
        );
        want.extend(log_lines(&format!("{f}0"), 0, 100));
    }
    let mut agent = AgentProc::start(&s.config);
    s.wait_metric("tributary_agent_records_read_total", 300.0);
    s.col.pause();
    for f in ["a", "b", "c"] {
        append_lines(
            &s.logs.join(format!("{f}.log")),
            &log_lines(&format!("{f}0"), 100, 3000),
        );
        want.extend(log_lines(&format!("{f}0"), 100, 3000));
    }
    // Reading stops at the buffer limit with most of the three files unread.
    s.wait_metric("tributary_agent_buffered_bytes", 60_000.0);
    for f in ["a", "b", "c"] {
        let p = s.logs.join(format!("{f}.log"));
        std::fs::rename(&p, s.logs.join(format!("{f}.log.1"))).unwrap();
        append_lines(&p, &log_lines(&format!("{f}1"), 0, 3000));
        want.extend(log_lines(&format!("{f}1"), 0, 3000));
    }
    // Let discovery adopt the new files while reading is still held back.
    s.wait_metric("tributary_agent_files_open", 6.0);
    s.col.resume();
    check(&s.delivered(want.len()), &want);
    assert!(agent.terminate().success());
}

/// A file rotated by `rotate(file, rotated name)` while the agent is down with lines of it
/// unread; the rotated name matches no glob. Then a new file at the old path; the restarted
/// agent must ship the rest of the old file (before the new one's lines) and the new one.
fn rotated_while_agent_down(rotate: fn(&Path, &Path)) {
    let s = setup(
        "*.log",
        "  linger_ms: 20\n  batch_bytes_max: 16384\n",
        "buffer_bytes_max: 65536\n",
    );
    let file = s.logs.join("a.log");
    let (mut agent, mut want) = killed_with_unread_lines(&s, &file, "a0");
    rotate(&file, &s.logs.join("a.log-20261129"));
    append_lines(&file, &log_lines("a1", 0, 500));
    want.extend(log_lines("a1", 0, 500));
    s.col.resume();
    agent.restart();
    check(&s.delivered(want.len()), &want);
    assert!(agent.terminate().success());
}

/// Renamed while the agent is down: found again by inode.
#[test]
fn rename_to_unmatched_name_while_agent_down() {
    rotated_while_agent_down(|from, to| std::fs::rename(from, to).unwrap());
}

/// Copy-truncated while the agent is down: the file's first line changed, so the agent
/// looks for the copy by its first line and continues there.
#[test]
fn copy_truncate_while_agent_down_unmatched_copy() {
    rotated_while_agent_down(copy_truncate);
}
