//! The Raft state machine: applies committed entries to [`MetadataState`] and publishes each
//! new state on a `watch` channel. Snapshots (the whole metadata as JSON, with the last
//! applied log id and membership) are written temp + fsync + rename to `snapshot.json`, so a
//! restart replays only the log after the snapshot.

// openraft's StorageError is the error type its storage traits require; it is large, but
// it is what every caller here must return anyway.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, watch};

use super::raft::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig, io_err};
use super::state::{CommandResult, MetadataState};
use crate::storage::checkpoint::write_atomic;

const SNAPSHOT_FILE: &str = "snapshot.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    state: MetadataState,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    state: MetadataState,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    /// The last snapshot built or installed, as stored.
    snapshot: Option<(SnapshotMeta, Vec<u8>)>,
    snapshots_built: u64,
}

#[derive(Debug, Clone)]
pub struct StateMachine {
    inner: Arc<Mutex<Inner>>,
    tx: Arc<watch::Sender<Arc<MetadataState>>>,
}

impl StateMachine {
    /// Opens the state machine, restoring the last snapshot if there is one.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Read, e))?;
        let path = dir.join(SNAPSHOT_FILE);
        let mut inner = Inner {
            dir: dir.to_path_buf(),
            state: MetadataState::default(),
            last_applied: None,
            membership: StoredMembership::default(),
            snapshot: None,
            snapshots_built: 0,
        };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let f: SnapshotFile = serde_json::from_slice(&bytes).map_err(|e| {
                    io_err(
                        ErrorSubject::StateMachine,
                        ErrorVerb::Read,
                        format!("{}: {e}", path.display()),
                    )
                })?;
                inner.state = f.state;
                inner.last_applied = f.last_applied;
                inner.membership = f.membership;
                inner.snapshot = Some((f.meta, bytes));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(ErrorSubject::StateMachine, ErrorVerb::Read, e)),
        }
        let tx = watch::Sender::new(Arc::new(inner.state.clone()));
        Ok(Self {
            inner: Arc::new(Mutex::new(inner)),
            tx: Arc::new(tx),
        })
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataState>> {
        self.tx.subscribe()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let mut inner = self.inner.lock().await;
        inner.snapshots_built += 1;
        let meta = SnapshotMeta {
            last_log_id: inner.last_applied,
            last_membership: inner.membership.clone(),
            snapshot_id: format!(
                "{}-{}",
                inner.last_applied.map_or(0, |l| l.index),
                inner.snapshots_built
            ),
        };
        let file = SnapshotFile {
            meta: meta.clone(),
            last_applied: inner.last_applied,
            membership: inner.membership.clone(),
            state: inner.state.clone(),
        };
        let bytes = serde_json::to_vec(&file)
            .map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Write, e))?;
        write_atomic(&inner.dir.join(SNAPSHOT_FILE), &bytes)
            .map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Write, e))?;
        inner.snapshot = Some((meta.clone(), bytes.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let inner = self.inner.lock().await;
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.inner.lock().await;
        let mut out = Vec::new();
        for e in entries {
            inner.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => out.push(CommandResult::Done),
                EntryPayload::Normal(cmd) => out.push(inner.state.apply(&cmd)),
                EntryPayload::Membership(m) => {
                    inner.membership = StoredMembership::new(Some(e.log_id), m);
                    out.push(CommandResult::Done);
                }
            }
        }
        self.tx.send_replace(Arc::new(inner.state.clone()));
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let file: SnapshotFile = serde_json::from_slice(&bytes).map_err(|e| {
            io_err(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                e,
            )
        })?;
        let mut inner = self.inner.lock().await;
        write_atomic(&inner.dir.join(SNAPSHOT_FILE), &bytes).map_err(|e| {
            io_err(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
                e,
            )
        })?;
        inner.state = file.state;
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.snapshot = Some((meta.clone(), bytes));
        self.tx.send_replace(Arc::new(inner.state.clone()));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let inner = self.inner.lock().await;
        Ok(inner.snapshot.as_ref().map(|(meta, bytes)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(bytes.clone())),
        }))
    }
}
