//! The Tributary agent as a library; `src/main.rs` only parses arguments and calls it.
//!
//! # Layout
//! - [`config`]: the YAML configuration, parsed strictly and validated once.
//! - [`files`]: discovery by glob, fingerprints (identity by first line, not by path).
//! - [`lines`]: the one function that cuts file bytes into records.
//! - [`state`]: the durable state file — producer id, sequences, file checkpoints, and the
//!   journal of sent-but-unacknowledged batches that makes delivery exactly-once.
//! - [`client`]: the collector API client with failover and capped, jittered retries.
//! - [`core`]: the exactly-once state machine without I/O: records, batches, journal
//!   generations, acknowledgements, file checkpoints and resume points.
//! - [`tailer`], [`journal`], [`sender`]: the shells doing its I/O (discovery and reads,
//!   state stores, encoding and produce requests).
//! - [`run`]: the event loop wiring them.
//! - [`metrics`]: `/metrics` and `/health` on `metrics_listen`.

pub mod client;
pub mod config;
pub mod core;
pub mod files;
pub mod journal;
pub mod lines;
pub mod metrics;
pub mod run;
pub mod sender;
pub mod state;
pub mod tailer;
