//! The Tributary collector as a library; `src/main.rs` only parses arguments and calls it.
//!
//! # Layout
//! - [`storage`]: partitions as segmented, indexed, crash-recoverable logs on local disks.
//! - [`controller`]: cluster metadata through an embedded Raft quorum (openraft).

pub mod controller;
pub mod storage;
