//! The journal shell: stores the core's state snapshots durably on the blocking pool, one at
//! a time (so they land in order), and reports each generation stored back to the loop.

use std::path::PathBuf;

use tokio::sync::mpsc;

use crate::core::StoreJob;
use crate::state::{AgentState, StateError};

/// A finished store: the generation it covered, and whether it is durable.
pub type Stored = (u64, Result<(), StateError>);

/// Loads the state in `dir` (a missing file is a first start).
pub fn load(dir: &std::path::Path) -> Result<AgentState, StateError> {
    AgentState::load(dir)
}

/// Runs `job` on the blocking pool and reports it on `done`.
pub fn spawn_store(job: StoreJob, dir: PathBuf, done: mpsc::Sender<Stored>) {
    tokio::spawn(async move {
        let StoreJob { generation, state } = job;
        let result = tokio::task::spawn_blocking(move || state.store(&dir))
            .await
            .unwrap_or_else(|e| {
                Err(StateError::Write {
                    dir: PathBuf::new(),
                    source: std::io::Error::other(e.to_string()),
                })
            });
        let _ = done.send((generation, result)).await;
    });
}
