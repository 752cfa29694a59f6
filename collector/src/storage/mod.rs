//! The storage layer: partitions as segmented, indexed, crash-recoverable logs on local disks.
//!
//! - [`config`]: per-log settings (segment size/age, index interval, retention, flush policy).
//! - [`index`]: the sparse `.index` and `.timeindex` files (fixed-size entries, pread lookups).
//! - [`segment`]: one `.log` file and its two indexes: append, scan, recover, truncate.
//! - [`log`]: [`PartitionLog`], a partition's segments, offsets, reads, truncation, retention.
//! - [`checkpoint`]: small state files written temp + fsync + rename (partition state,
//!   leader-epoch checkpoint).
//! - [`file_cache`]: an LRU of open read handles for closed segments.
//! - [`durable`]: the one way to the files' bytes that durability depends on (segment
//!   writes, truncations, fsyncs); in unit tests it simulates power loss and `EIO` fsyncs.
//! - [`group_commit`]: one fsync covering every append since the last, shared by waiters.
//! - [`manager`]: [`LogManager`], the data directories, partition placement, clean-shutdown
//!   markers, and taking a directory offline after an I/O error.
//!
//! Invariants: storage never touches the network, never decompresses a batch on the append
//! path, and never acknowledges an offset as durable before the fsync covering it returned.

pub mod checkpoint;
pub mod config;
pub mod disk;
pub mod durable;
pub mod error;
pub mod file_cache;
pub mod group_commit;
pub mod index;
pub mod log;
pub mod manager;
pub mod segment;
pub mod validated;

pub use config::{FlushPolicy, LogConfig};
pub use error::StorageError;
pub use file_cache::FileCache;
pub use group_commit::GroupCommit;
pub use log::{AppendInfo, PartitionLog, ReadResult, SyncTarget};
pub use manager::LogManager;
pub use validated::ValidatedBatches;
