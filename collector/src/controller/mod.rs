//! The controller: cluster metadata in a Raft-replicated state machine (openraft).
//!
//! - [`state`]: the metadata and the pure `apply` of each command.
pub mod state;
