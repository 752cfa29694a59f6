//! The collector's HTTP API as Rust types: every route path, request and reply body, query,
//! header name, `Acks`, error code and the error envelope, for the public `/v1` routes and
//! the internal routes between brokers.
//!
//! The server (`collector::server`) and every client (`client::CollectorClient`) use these
//! types; nothing outside this crate builds or picks apart API JSON by hand.
//!
//! Invariants: this crate has no I/O and knows no HTTP library (statuses are plain `u16`);
//! a type here changes only with `docs/api.md`.

pub mod acls;
pub mod cluster;
pub mod error;
pub mod groups;
pub mod internal;
pub mod produce;
pub mod records;
pub mod routes;
pub mod topics;

pub use cluster::*;
pub use error::{ErrorBody, ErrorCode, ErrorEnvelope, LeaderHint};
pub use groups::*;
pub use internal::*;
pub use produce::*;
pub use records::*;
pub use topics::*;

/// Content type of a body of Kafka RecordBatch v2 batches.
pub const BATCHES_CONTENT_TYPE: &str = "application/vnd.tributary.batches";
/// Fetch replies: the partition's high watermark.
pub const HW_HEADER: &str = "tributary-high-watermark";
/// Fetch replies: the partition's log start offset.
pub const LOG_START_HEADER: &str = "tributary-log-start-offset";
/// Set on a request one broker relays to another; a relayed request is never relayed again.
pub const FORWARDED_HEADER: &str = "tributary-forwarded";
