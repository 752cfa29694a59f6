//! The Tributary agent as a library; `src/main.rs` only parses arguments and calls it.
//!
//! # Layout
//! - [`config`]: the YAML configuration, parsed strictly and validated once.
//!
//! Tailing, batching, the exactly-once journal and shipping land with the agent issue.

pub mod config;
