//! Consumer groups end to end: real `collector serve` and `collector tail` processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shared::ProducerStamp;
use tributary_tests::{Collector, TailProc, batch, client, produce, wait_for};

const SESSION_MS: u64 = 3000;

fn group_config() -> String {
    format!("groups:\n  session_timeout_ms: {SESSION_MS}\n  heartbeat_interval_ms: 300\n")
}

fn create_topic(c: &reqwest::blocking::Client, col: &Collector, name: &str, partitions: u32) {
    let r = c
        .post(col.url("/v1/topics"))
        .json(&json!({"name": name, "partitions": partitions}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{:?}", r.text());
}

/// Appends records `p{p}-{i:07}` for i in `from..to` to every partition; with one writer
/// per partition, record i lands at offset i.
fn fill(
    c: &reqwest::blocking::Client,
    col: &Collector,
    topic: &str,
    parts: u32,
    from: u64,
    to: u64,
) {
    for p in 0..parts {
        let mut i = from;
        while i < to {
            let end = (i + 100).min(to);
            let values: Vec<String> = (i..end).map(|k| format!("p{p}-{k:07}")).collect();
            let (status, body) = produce(
                c,
                &format!("http://{}", col.addr),
                topic,
                p,
                batch(&values, ProducerStamp::NONE, true),
            );
            assert_eq!(status, 200, "{body}");
            i = end;
        }
    }
}

fn parse(line: &str) -> (u32, u64) {
    let (p, i) = line
        .strip_prefix('p')
        .and_then(|s| s.split_once('-'))
        .unwrap_or_else(|| panic!("unexpected line {line:?}"));
    (p.parse().unwrap(), i.parse().unwrap())
}

fn describe(c: &reqwest::blocking::Client, col: &Collector, group: &str) -> Value {
    c.get(col.url(&format!("/v1/groups/{group}")))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// partition -> owning member id, once the group is stable with every partition owned.
fn stable_owners(
    c: &reqwest::blocking::Client,
    col: &Collector,
    group: &str,
) -> Option<BTreeMap<u32, String>> {
    let d = describe(c, col, group);
    if d["state"] != "stable" {
        return None;
    }
    let mut out = BTreeMap::new();
    for p in d["partitions"].as_array()? {
        out.insert(
            p["partition"].as_u64()? as u32,
            p["owner"].as_str()?.to_owned(),
        );
    }
    Some(out)
}

/// member id -> pid of the tail process (the `client` field is `host/pid`).
fn member_pids(
    c: &reqwest::blocking::Client,
    col: &Collector,
    group: &str,
) -> BTreeMap<String, u32> {
    describe(c, col, group)["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let client = m["client"].as_str().unwrap();
            let pid = client.rsplit('/').next().unwrap().parse().unwrap();
            (m["member_id"].as_str().unwrap().to_owned(), pid)
        })
        .collect()
}

fn per_member(owners: &BTreeMap<u32, String>) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    for m in owners.values() {
        *c.entry(m.clone()).or_default() += 1;
    }
    c
}

#[test]
fn three_members_share_six_partitions_exactly_once_and_a_fourth_joins_incrementally() {
    let tmp = tempfile::tempdir().unwrap();
    let col = Collector::start(&tmp.path().join("data"), &group_config());
    let c = client();
    let base = format!("http://{}", col.addr);
    create_topic(&c, &col, "t", 6);
    fill(&c, &col, "t", 6, 0, 200);
    // No periodic commits: hand-overs must commit on their own (revocation) and stops
    // (graceful exit) for exactly-once to hold.
    let args = [
        "--group",
        "g",
        "--topic",
        "t",
        "--commit-interval-ms",
        "600000",
    ];
    let mut tails: Vec<TailProc> = (0..3).map(|_| TailProc::start(&base, &args)).collect();
    let own3 = wait_for(
        Duration::from_secs(30),
        "three members with two partitions each",
        || {
            let o = stable_owners(&c, &col, "g")?;
            let counts = per_member(&o);
            (counts.len() == 3 && counts.values().all(|n| *n == 2)).then_some(o)
        },
    );
    let all_lines =
        |tails: &[TailProc]| -> Vec<String> { tails.iter().flat_map(TailProc::lines).collect() };
    let expect = |to: u64| -> BTreeSet<(u32, u64)> {
        (0..6).flat_map(|p| (0..to).map(move |i| (p, i))).collect()
    };
    wait_for(Duration::from_secs(30), "1200 records printed", || {
        let got: BTreeSet<_> = all_lines(&tails).iter().map(|l| parse(l)).collect();
        (got == expect(200)).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(all_lines(&tails).len(), 1200, "every record exactly once");
    // A fourth member: one partition moves to it, the others stay where they were.
    tails.push(TailProc::start(&base, &args));
    let own4 = wait_for(Duration::from_secs(30), "four members", || {
        let o = stable_owners(&c, &col, "g")?;
        (per_member(&o).len() == 4).then_some(o)
    });
    let mut counts: Vec<usize> = per_member(&own4).into_values().collect();
    counts.sort_unstable();
    assert_eq!(counts, [1, 1, 2, 2]);
    let old: BTreeSet<&String> = own3.values().collect();
    let moved: Vec<u32> = (0..6).filter(|p| own3[p] != own4[p]).collect();
    assert_eq!(moved.len(), 1, "incremental: {own3:?} -> {own4:?}");
    assert!(
        !old.contains(&own4[&moved[0]]),
        "it moved to the new member"
    );
    // More records: still exactly once across the hand-over.
    fill(&c, &col, "t", 6, 200, 300);
    wait_for(Duration::from_secs(30), "1800 records printed", || {
        let got: BTreeSet<_> = all_lines(&tails).iter().map(|l| parse(l)).collect();
        (got == expect(300)).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(all_lines(&tails).len(), 1800, "every record exactly once");
    // The records produced after the rebalance were printed by their partition's owner only.
    let pids = member_pids(&c, &col, "g");
    for t in &tails {
        let me = pids.iter().find(|(_, pid)| **pid == t.pid()).unwrap().0;
        for l in t.lines() {
            let (p, i) = parse(&l);
            if i >= 200 {
                assert_eq!(&own4[&p], me, "{l} printed by a non-owner");
            }
        }
    }
    for t in &mut tails {
        assert!(t.terminate().success());
    }
    // A graceful stop commits exactly what was printed and leaves.
    let d = describe(&c, &col, "g");
    assert_eq!(d["state"], "empty");
    for p in d["partitions"].as_array().unwrap() {
        assert_eq!(p["committed"], 300, "{d}");
        assert_eq!(p["lag"], 0);
    }
    let metrics = c.get(col.url("/metrics")).send().unwrap().text().unwrap();
    assert!(
        metrics.contains("tributary_group_lag_records{group=\"g\",topic=\"t\",partition=\"0\"} 0"),
        "{metrics}"
    );
}

#[test]
fn a_killed_member_s_partitions_move_and_only_uncommitted_records_repeat() {
    let tmp = tempfile::tempdir().unwrap();
    let col = Collector::start(&tmp.path().join("data"), &group_config());
    let c = client();
    let base = format!("http://{}", col.addr);
    create_topic(&c, &col, "k", 6);
    // A steady producer, so records are in flight when the member dies.
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let stop = stop.clone();
        let addr = col.addr.clone();
        std::thread::spawn(move || {
            let c = client();
            let mut next = [0u64; 6];
            while !stop.load(Ordering::Relaxed) {
                for (p, n) in next.iter_mut().enumerate() {
                    let values: Vec<String> =
                        (*n..*n + 20).map(|k| format!("p{p}-{k:07}")).collect();
                    let (status, body) = produce(
                        &c,
                        &format!("http://{addr}"),
                        "k",
                        p as u32,
                        batch(&values, ProducerStamp::NONE, true),
                    );
                    assert_eq!(status, 200, "{body}");
                    *n += 20;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            next
        })
    };
    let args = [
        "--group",
        "g",
        "--topic",
        "k",
        "--commit-interval-ms",
        "200",
    ];
    let mut a = TailProc::start(&base, &args);
    let mut b = TailProc::start(&base, &args);
    let own = wait_for(
        Duration::from_secs(30),
        "two members with three partitions each",
        || {
            let o = stable_owners(&c, &col, "g")?;
            let counts = per_member(&o);
            (counts.len() == 2 && counts.values().all(|n| *n == 3)).then_some(o)
        },
    );
    let pids = member_pids(&c, &col, "g");
    let a_id = pids.iter().find(|(_, p)| **p == a.pid()).unwrap().0.clone();
    let a_parts: BTreeSet<u32> = own
        .iter()
        .filter(|(_, m)| **m == a_id)
        .map(|(p, _)| *p)
        .collect();
    wait_for(Duration::from_secs(30), "both members printing", || {
        (a.line_count() > 1000 && b.line_count() > 1000).then_some(())
    });
    a.kill9();
    let killed = Instant::now();
    wait_for(Duration::from_secs(30), "b to own every partition", || {
        let o = stable_owners(&c, &col, "g")?;
        (per_member(&o).len() == 1).then_some(())
    });
    let moved_after = killed.elapsed();
    eprintln!("partitions of the killed member were reassigned after {moved_after:?}");
    assert!(
        moved_after < Duration::from_millis(SESSION_MS + 5000),
        "took {moved_after:?} with a {SESSION_MS} ms session timeout"
    );
    stop.store(true, Ordering::Relaxed);
    let produced = producer.join().unwrap();
    let expected: BTreeSet<(u32, u64)> = (0..6u32)
        .flat_map(|p| (0..produced[p as usize]).map(move |i| (p, i)))
        .collect();
    wait_for(Duration::from_secs(60), "every record printed", || {
        let got: BTreeSet<_> = a
            .lines()
            .iter()
            .chain(b.lines().iter())
            .map(|l| parse(l))
            .collect();
        (got == expected).then_some(())
    });
    assert!(b.terminate().success());
    let a_lines: Vec<(u32, u64)> = a.lines().iter().map(|l| parse(l)).collect();
    let b_lines: Vec<(u32, u64)> = b.lines().iter().map(|l| parse(l)).collect();
    // Nobody printed a record twice on its own.
    for lines in [&a_lines, &b_lines] {
        let set: BTreeSet<_> = lines.iter().collect();
        assert_eq!(set.len(), lines.len(), "a member printed a record twice");
    }
    // The last commit the killed member logged, per partition.
    let mut a_committed: BTreeMap<u32, u64> = BTreeMap::new();
    for l in a.stderr() {
        if l.contains("committed")
            && let (Some(p), Some(o)) = (field(&l, "partition=k-"), field(&l, "offset="))
        {
            let e = a_committed.entry(p as u32).or_default();
            *e = (*e).max(o);
        }
    }
    // The checks below compare b's start with a's commits: they mean something only if a
    // committed (a partition without a logged commit is compared with 0).
    assert!(
        a_parts.iter().any(|p| a_committed.contains_key(p)),
        "the killed member logged no commit for its partitions {a_parts:?}"
    );
    let a_set: BTreeSet<_> = a_lines.iter().copied().collect();
    let mut duplicates = 0;
    for p in &a_parts {
        let committed = a_committed.get(p).copied().unwrap_or(0);
        let a_max = a_lines
            .iter()
            .filter(|(q, _)| q == p)
            .map(|(_, o)| *o)
            .max();
        // Where b started on the partition when it took it over: its last assignment of it.
        // (b may have read the partition earlier too, before a joined.)
        let b_first = b
            .stderr()
            .iter()
            .filter(|l| {
                l.contains("partition assigned") && l.contains(&format!("partition=k-{p} "))
            })
            .filter_map(|l| field(l, "offset="))
            .next_back()
            .unwrap();
        assert!(
            b_first >= committed,
            "partition {p}: b started at {b_first}, below a's commit {committed}"
        );
        assert!(
            b_first <= a_max.map_or(0, |m| m + 1),
            "partition {p}: gap between a's last record {a_max:?} and b's first {b_first}"
        );
        // Repeats are exactly a's records from b's start on: printed after a's last commit.
        let dup: Vec<u64> = b_lines
            .iter()
            .filter(|(q, o)| q == p && a_set.contains(&(*q, *o)))
            .map(|(_, o)| *o)
            .collect();
        assert!(
            dup.iter().all(|o| *o >= committed),
            "partition {p}: repeated a committed record"
        );
        duplicates += dup.len();
    }
    for p in (0..6).filter(|p| !a_parts.contains(p)) {
        assert!(
            !b_lines
                .iter()
                .any(|(q, o)| *q == p && a_set.contains(&(*q, *o))),
            "partition {p} was b's all along and repeated something"
        );
    }
    eprintln!("{duplicates} records repeated after kill -9 (printed after the last commit)");
}

fn field(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn tail_once(base: &str, group: &str, topic: &str) -> Vec<String> {
    let mut t = TailProc::start(base, &["--group", group, "--topic", topic, "--no-follow"]);
    let status = t.wait();
    assert!(status.success(), "{:?}", t.stderr());
    t.lines()
}

#[test]
fn groups_are_independent_offsets_survive_restart_and_fencing_is_enforced() {
    let tmp = tempfile::tempdir().unwrap();
    let mut col = Collector::start(&tmp.path().join("data"), &group_config());
    let c = client();
    let base = format!("http://{}", col.addr);
    create_topic(&c, &col, "f", 3);
    fill(&c, &col, "f", 3, 0, 50);
    assert_eq!(tail_once(&base, "one", "f").len(), 150);
    assert_eq!(
        tail_once(&base, "two", "f").len(),
        150,
        "another group reads everything too"
    );
    assert!(
        tail_once(&base, "one", "f").is_empty(),
        "nothing new for group one"
    );
    // Offsets are in the Raft log: they survive kill -9 of the collector.
    col.kill9();
    col.restart();
    fill(&c, &col, "f", 3, 50, 60);
    let again = tail_once(&base, "one", "f");
    let got: BTreeSet<_> = again.iter().map(|l| parse(l)).collect();
    let want: BTreeSet<_> = (0..3).flat_map(|p| (50..60).map(move |i| (p, i))).collect();
    assert_eq!(got, want, "group one resumes where it was");
    assert_eq!(again.len(), 30);

    // reset-offsets moves a group back; refused while it has members.
    let out = std::process::Command::new(tributary_tests::binary("collector"))
        .args([
            "groups",
            "reset-offsets",
            "two",
            "--topic",
            "f",
            "--to",
            "offset:55",
            "--collector",
            &base,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tail_once(&base, "two", "f").len(), 15);

    // The protocol at the HTTP level: join, fence, refuse.
    let hb = |body: Value| -> (u16, Value) {
        let r = c
            .post(col.url("/v1/groups/api/heartbeat"))
            .json(&body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap())
    };
    let commit = |body: Value| -> (u16, Value) {
        let r = c
            .post(col.url("/v1/groups/api/offsets"))
            .json(&body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap())
    };
    let (s, m1) = hb(json!({"member_epoch": 0, "topics": ["f"]}));
    assert_eq!(s, 200, "{m1}");
    let id1 = m1["member_id"].as_str().unwrap().to_owned();
    let e1 = m1["member_epoch"].as_i64().unwrap();
    assert_eq!(m1["assignment"][0]["partitions"], json!([0, 1, 2]));
    let (s, _) = commit(
        json!({"member_id": id1, "member_epoch": e1, "offsets": [{"topic": "f", "partition": 0, "offset": 10}]}),
    );
    assert_eq!(s, 200);
    // Backwards, above the high watermark, from a wrong epoch: refused with typed codes.
    let (s, e) = commit(
        json!({"member_id": id1, "member_epoch": e1, "offsets": [{"topic": "f", "partition": 0, "offset": 5}]}),
    );
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("offset_moved_backwards"))
    );
    let (s, e) = commit(
        json!({"member_id": id1, "member_epoch": e1, "offsets": [{"topic": "f", "partition": 0, "offset": 61}]}),
    );
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (400, Some("offset_above_high_watermark"))
    );
    let (s, e) = commit(
        json!({"member_id": id1, "member_epoch": e1 + 7, "offsets": [{"topic": "f", "partition": 0, "offset": 11}]}),
    );
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("fenced_member_epoch"))
    );
    // A second member joins; the first is asked to give partitions up. Until it does, the
    // second may not commit them.
    let (_, m2) = hb(json!({"member_epoch": 0, "topics": ["f"]}));
    let id2 = m2["member_id"].as_str().unwrap().to_owned();
    assert_eq!(m2["assignment"], json!([]));
    let (s, e) = commit(
        json!({"member_id": id2, "member_epoch": m2["member_epoch"], "offsets": [{"topic": "f", "partition": 0, "offset": 12}]}),
    );
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("not_partition_owner"))
    );
    // reset-offsets is refused while the group has members.
    let r = c
        .post(col.url("/v1/groups/api/offsets/reset"))
        .json(&json!({"topic": "f", "to": "earliest"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
    // The first member leaves; its id is fenced afterwards.
    let (s, _) = hb(json!({"member_id": id1, "member_epoch": -1}));
    assert_eq!(s, 200);
    let (s, e) = commit(
        json!({"member_id": id1, "member_epoch": e1, "offsets": [{"topic": "f", "partition": 0, "offset": 11}]}),
    );
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("unknown_member_id"))
    );
    let (s, e) = hb(json!({"member_id": id1, "member_epoch": e1}));
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("unknown_member_id"))
    );
    // Bad names are refused.
    let r = c.get(col.url("/v1/groups/..")).send().unwrap();
    assert!(r.status().is_client_error());
}

#[test]
fn a_closed_stdout_ends_tail_quietly_and_leaves_the_group() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let col = Collector::start(&tmp.path().join("data"), &group_config());
    let c = client();
    let base = format!("http://{}", col.addr);
    create_topic(&c, &col, "h", 1);
    fill(&c, &col, "h", 1, 0, 20_000);
    // `collector tail | head -n 5`
    let mut child = std::process::Command::new(tributary_tests::binary("collector"))
        .args([
            "tail",
            "--group",
            "head",
            "--topic",
            "h",
            "--collector",
            &base,
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for i in 0..5 {
        assert_eq!(lines.next().unwrap().unwrap(), format!("p0-{i:07}"));
    }
    drop(lines);
    let status = wait_for(Duration::from_secs(30), "tail to exit", || {
        child.try_wait().unwrap()
    });
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{status:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    // It left: no members. It commits only what a successful flush put into the pipe: at
    // most what fits there before `head` closed it (64 KiB of 11-byte lines, ~5,960), far
    // below the 20,000 records it fetched. A flush cut short by the closed pipe is not
    // counted, so nothing may be committed at all (then the group is gone altogether; the
    // 5 lines are read again by the next member: at least once, never lost).
    let d = describe(&c, &col, "head");
    if d["error"]["code"] != "unknown_group" {
        assert_eq!(d["members"], json!([]), "{d}");
        let committed = d["partitions"][0]["committed"].as_u64().unwrap_or(0);
        assert!(committed <= 65_536 / 11 + 5, "committed {committed}: {d}");
    }
}
