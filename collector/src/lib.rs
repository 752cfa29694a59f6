//! The Tributary collector as a library; `src/main.rs` only parses arguments and calls it.
//!
//! # Layout
//! - [`admin`]: the admin CLI (`collector topics …`, `groups …`, `cluster status`).
//! - [`config`]: the YAML configuration, parsed strictly and validated once.
//! - [`storage`]: partitions as segmented, indexed, crash-recoverable logs on local disks.
//! - [`controller`]: cluster metadata through an embedded Raft quorum (openraft).
//! - [`broker`]: partitions this node leads and the services every front end calls
//!   (produce, fetch, topic admin, views) — no HTTP.
//! - [`groups`]: consumer groups: membership, assignment, committed offsets.
//! - [`tail`]: `collector tail`, the group consumer that prints records.
//! - [`server`]: the HTTP front end (axum): router, thin handlers, error replies.
//! - [`node`]: the node's lifecycle: start order, registration, heartbeats, controlled
//!   shutdown, timers.
//! - [`loadgen`]: `collector bench`, the load tool.
//! - [`metrics`]: Prometheus metrics.

pub mod admin;
pub mod auth;
pub mod broker;
pub mod certs;
pub mod config;
pub mod controller;
pub mod groups;
pub mod kafka;
pub mod loadgen;
pub mod metrics;
pub mod node;
pub mod server;
pub mod storage;
pub mod tail;
