//! Failing fsyncs in a running process: `strace` attaches to every thread of it and makes
//! each `fsync`, `fdatasync` and `syncfs` return `EIO` without running it, until the fault
//! is dropped (strace detaches). The page cache is untouched: this shows what the process
//! does when the kernel reports a failed writeback, not a lost write.
//!
//! Needs `strace` (Debian package) and the right to trace the process (root, or
//! `kernel.yama.ptrace_scope` 0); `scripts/test.sh` runs the tests that use it only then.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// While alive, every fsync of the traced process fails with `EIO`.
#[derive(Debug)]
pub struct FailingFsyncs {
    strace: Child,
}

/// How long attaching may take before the fault is reported as not injected.
const ATTACH_WAIT: Duration = Duration::from_secs(10);

impl FailingFsyncs {
    /// Attaches to `pid` (all its threads); returns once strace says it is attached.
    /// Panics when strace is missing or cannot attach: a fault that was not injected must
    /// not pass for one that was survived.
    pub fn inject(pid: u32) -> Self {
        let mut strace = Command::new("strace")
            .args(["-f", "-p", &pid.to_string()])
            .args(["-e", "trace=fsync,fdatasync,syncfs"])
            .args(["-e", "inject=fsync,fdatasync,syncfs:error=EIO"])
            .args(["-o", "/dev/null"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("strace (Debian package strace) is needed to inject failing fsyncs");
        let stderr = strace.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut said = Vec::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let attached = line.contains("attached");
                said.push(line);
                if attached {
                    let _ = tx.send(Ok(()));
                }
            }
            let _ = tx.send(Err(said.join("\n")));
        });
        match rx.recv_timeout(ATTACH_WAIT) {
            Ok(Ok(())) => Self { strace },
            Ok(Err(said)) => panic!("strace could not attach to {pid}: {said}"),
            Err(_) => panic!("strace did not attach to {pid} within {ATTACH_WAIT:?}"),
        }
    }

    /// Fsyncs work again (strace detaches).
    pub fn heal(self) {}
}

impl Drop for FailingFsyncs {
    fn drop(&mut self) {
        // SIGTERM: strace detaches from every thread before it exits.
        let pid = self.strace.id() as i32;
        #[allow(unsafe_code)]
        // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let _ = self.strace.wait();
    }
}
