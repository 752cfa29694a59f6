//! Group commit: many appenders, one fsync. An appender that needs its data durable calls
//! [`GroupCommit::wait_durable`]; if no fsync is running it becomes the flusher and fsyncs
//! everything appended so far; otherwise it waits for the running fsync and, if that did not
//! cover it, for the next one. One fsync thus covers every batch appended since the last.
//!
//! Lock order: the group-commit state, then the log; the log lock is never held while
//! taking the state lock, and never held during an fsync.

use std::sync::{Condvar, Mutex};

use super::error::StorageError;
use super::log::PartitionLog;

#[derive(Debug, Default)]
struct State {
    /// An fsync is running.
    flushing: bool,
    /// Bumped after every fsync attempt, so waiters can tell one finished.
    round: u64,
    /// Round number and message of the last failed fsync.
    failed: Option<(u64, String)>,
}

/// Coordinates fsyncs of one partition log among concurrent appenders.
#[derive(Debug, Default)]
pub struct GroupCommit {
    state: Mutex<State>,
    done: Condvar,
    /// fsyncs issued, for metrics and for tests that check coalescing.
    fsyncs: std::sync::atomic::AtomicU64,
}

use shared::sys::lock;

impl GroupCommit {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of fsyncs issued so far.
    pub fn fsyncs(&self) -> u64 {
        self.fsyncs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Blocks until everything below `offset` in `log` is fsynced (the log's flushed offset
    /// is the single truth of what is durable).
    pub fn wait_durable(&self, log: &Mutex<PartitionLog>, offset: u64) -> Result<(), StorageError> {
        let mut st = lock(&self.state);
        loop {
            if lock(log).flushed_offset() >= offset {
                return Ok(());
            }
            if !st.flushing {
                break;
            }
            let waited_round = st.round;
            st = self.done.wait(st).unwrap_or_else(|p| p.into_inner());
            if let Some((round, msg)) = &st.failed
                && *round > waited_round
            {
                return Err(StorageError::Io {
                    path: lock(log).dir().to_path_buf(),
                    source: std::io::Error::other(msg.clone()),
                });
            }
        }
        st.flushing = true;
        drop(st);
        self.fsyncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Take the target under the log lock, fsync without it so appends continue. (One
        // statement would keep the guard until its end: the fsync ran under the lock, and a
        // failed fsync locked it again to name the directory — a deadlock on EIO, found by
        // the fsync-failure test.)
        let target = lock(log).sync_target();
        let result = target.and_then(|t| {
            super::durable::sync_data(&t.file, &t.path)
                .map_err(|e| StorageError::io(&t.path, e))
                .map(|_| t.upto)
        });
        let mut st = lock(&self.state);
        st.flushing = false;
        st.round += 1;
        let out = match result {
            Ok(upto) => {
                lock(log).mark_flushed(upto);
                Ok(())
            }
            Err(e) => {
                lock(log).sync_failed(&e);
                st.failed = Some((st.round, e.to_string()));
                Err(e)
            }
        };
        drop(st);
        self.done.notify_all();
        out?;
        // If a roll or truncation raced the fsync, the loop above finds out and goes again.
        self.wait_durable(log, offset)
    }
}
