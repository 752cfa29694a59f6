//! The README's quick start and "see a line arrive" walkthrough, run as written (parsed from
//! README.md, with `target/release/` pointing at the binaries of this build) in a fresh
//! directory. Uses the documented fixed ports (7400, 7480).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The indented command lines right after `<!-- readme-test: NAME -->` in README.md.
fn block(readme: &str, name: &str) -> Vec<String> {
    let marker = format!("<!-- readme-test: {name} -->");
    let mut lines = readme.lines().skip_while(|l| l.trim() != marker).skip(1);
    let mut out = Vec::new();
    for l in lines.by_ref() {
        match l.strip_prefix("    ") {
            Some(cmd) => out.push(cmd.to_owned()),
            None => break,
        }
    }
    assert!(!out.is_empty(), "README.md has no block {marker}");
    out
}

struct Killed(Vec<u32>);

impl Drop for Killed {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    }
}

#[test]
fn readme_quick_start_and_walkthrough_work_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let bin_dir = tributary_tests::binary("collector")
        .parent()
        .unwrap()
        .to_path_buf();
    let subst = |cmd: &str| cmd.replace("target/release/", &format!("{}/", bin_dir.display()));
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("config")).unwrap();
    std::fs::copy(
        root.join("config/agent-local.yaml"),
        tmp.path().join("config/agent-local.yaml"),
    )
    .unwrap();
    let mut pids = Killed(Vec::new());

    // Quick start: the build step is this test's own build; then the collector.
    let quick = block(&readme, "quickstart");
    assert_eq!(quick.len(), 1, "{quick:?}");
    let serve = subst(quick[0].rsplit("&& ").next().unwrap());
    let mut collector = Command::new("bash")
        .args(["-c", &format!("exec {serve}")])
        .current_dir(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    pids.0.push(collector.id());
    let c = tributary_tests::client();
    tributary_tests::wait_for(
        Duration::from_secs(30),
        "the quick-start collector on 127.0.0.1:7400 (is another collector using the port?)",
        || {
            c.get("http://127.0.0.1:7400/health")
                .send()
                .ok()?
                .status()
                .is_success()
                .then_some(())
        },
    );
    assert!(tmp.path().join("data").is_dir(), "data in ./data");

    // The walkthrough: agent in the background, a line, then tail prints it.
    let walk = block(&readme, "walkthrough");
    assert_eq!(walk.len(), 3, "{walk:?}");
    let script = format!(
        "{}\necho $! > agent.pid\n{}\n",
        subst(&walk[0]),
        subst(&walk[1])
    );
    let status = Command::new("bash")
        .args(["-c", &script])
        .current_dir(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let agent_pid: u32 = std::fs::read_to_string(tmp.path().join("agent.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    pids.0.push(agent_pid);
    let mut tail = Command::new("bash")
        .args(["-c", &format!("exec {}", subst(&walk[2]))])
        .current_dir(tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    pids.0.push(tail.id());
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = tail.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
            if seen.iter().any(|l| l == "hello, tributary") {
                break;
            }
        }
    }
    assert!(
        seen.iter().any(|l| l == "hello, tributary"),
        "tail printed {seen:?}"
    );
    assert!(
        tmp.path().join("agent-state").is_dir(),
        "agent state in ./agent-state"
    );
    let _ = tail.kill();
    let _ = tail.wait();
    let _ = collector.kill();
    let _ = collector.wait();
}
