//! Typed storage errors. Disk-full is its own variant because it is retriable and must not
//! take the partition offline; other I/O errors do.

use std::io;
use std::path::PathBuf;

use shared::BatchError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StorageError {
    /// The filesystem is full. Nothing partial was left visible; retry once space is freed.
    #[error("disk full while writing {path}")]
    DiskFull { path: PathBuf },
    /// Any other I/O error. The owner takes the log's directory offline.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The log (or its whole data directory) is offline after an earlier I/O error.
    #[error("log {path} is offline after an I/O error")]
    Offline { path: PathBuf },
    /// A read or truncation outside the log.
    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: u64,
        log_start_offset: u64,
        log_end_offset: u64,
    },
    /// A batch that does not fit the log (bad bytes, or offsets that do not follow on).
    #[error("invalid batch: {0}")]
    Batch(#[from] BatchError),
    /// A replica append whose first offset is not the log end.
    #[error("batch at offset {base_offset} does not follow the log end offset {log_end_offset}")]
    NonContiguous {
        base_offset: i64,
        log_end_offset: u64,
    },
    /// A state or index file whose contents cannot be right.
    #[error("corrupt {what} {path}: {detail}")]
    Corrupt {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    /// A setting out of range.
    #[error("invalid setting {key}: {reason}")]
    Config { key: &'static str, reason: String },
}

impl StorageError {
    /// Wraps an I/O error, recognising a full disk.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if source.kind() == io::ErrorKind::StorageFull || source.raw_os_error() == Some(28) {
            StorageError::DiskFull { path }
        } else {
            StorageError::Io { path, source }
        }
    }

    /// Whether the error means the disk or directory is unusable (take it offline).
    pub fn is_fatal_io(&self) -> bool {
        matches!(self, StorageError::Io { .. } | StorageError::Corrupt { .. })
    }

    /// Whether a client may retry the same request later.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            StorageError::DiskFull { .. } | StorageError::Offline { .. } | StorageError::Io { .. }
        )
    }
}

/// Shorthand for mapping an `io::Result` with the path it concerned.
pub(crate) trait IoContext<T> {
    fn ctx(self, path: &std::path::Path) -> Result<T, StorageError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, path: &std::path::Path) -> Result<T, StorageError> {
        self.map_err(|e| StorageError::io(path, e))
    }
}
