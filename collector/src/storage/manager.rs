//! [`LogManager`]: every partition log of a broker, spread over one or more data directories.
//!
//! - Placement: a new partition goes to the online directory holding the fewest partitions.
//! - Clean shutdown: closing writes `.clean-shutdown` in each directory whose logs all closed
//!   cleanly; opening removes it (durably) before any write, so a later crash is seen as one.
//! - Failure isolation: an I/O error (other than disk-full) in one directory takes that
//!   directory and all its partitions offline, logged once; the other directories go on.
//! - Exclusive use: each directory is locked (`.lock`) so two brokers never share it.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::checkpoint::{fsync_dir, write_atomic};
use super::config::LogConfig;
use super::error::{IoContext, StorageError};
use super::file_cache::FileCache;
use super::log::PartitionLog;

pub const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";
pub const LOCK_FILE: &str = ".lock";

pub use shared::names::TopicPartition;

/// One data directory.
#[derive(Debug)]
pub struct DataDir {
    pub path: PathBuf,
    offline: AtomicBool,
    /// Held for the broker's lifetime: the advisory lock on `.lock`.
    _lock: File,
}

impl DataDir {
    pub fn is_offline(&self) -> bool {
        self.offline.load(Ordering::Relaxed)
    }
}

/// A log shared between request handlers.
pub type SharedLog = Arc<Mutex<PartitionLog>>;

#[derive(Debug)]
struct Entry {
    dir: usize,
    log: SharedLog,
}

#[derive(Debug)]
pub struct LogManager {
    dirs: Vec<DataDir>,
    cache: Arc<FileCache>,
    default_config: LogConfig,
    logs: Mutex<HashMap<TopicPartition, Entry>>,
    /// Set when the node can no longer serve safely: an fsync failed, or every data
    /// directory went offline (what happened).
    failure: super::log::FailureAlarm,
}

use shared::sys::lock;

use shared::sys::now_ms;

impl LogManager {
    /// Opens every partition found in `dirs`. A directory whose logs fail with an I/O error
    /// is taken offline and reported; the others open normally. `open_files_max` bounds the
    /// cache of read handles for closed segments.
    pub fn open(
        dirs: &[PathBuf],
        default_config: LogConfig,
        open_files_max: usize,
    ) -> Result<Self, StorageError> {
        default_config.validate()?;
        if dirs.is_empty() {
            return Err(StorageError::Config {
                key: "data_dirs",
                reason: "at least one data directory is needed".into(),
            });
        }
        let cache = Arc::new(FileCache::new(open_files_max));
        let mut data_dirs = Vec::new();
        for path in dirs {
            std::fs::create_dir_all(path).ctx(path)?;
            let lock_path = path.join(LOCK_FILE);
            let lock_file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .ctx(&lock_path)?;
            if lock_file.try_lock().is_err() {
                return Err(StorageError::Config {
                    key: "data_dirs",
                    reason: format!("{} is in use by another process", path.display()),
                });
            }
            data_dirs.push(DataDir {
                path: path.clone(),
                offline: AtomicBool::new(false),
                _lock: lock_file,
            });
        }
        // Each data directory loads (and, after a crash, recovers) on its own thread: they
        // are separate disks, usually.
        let loaded: Vec<(HashMap<TopicPartition, Entry>, Result<(), StorageError>)> =
            std::thread::scope(|scope| {
                let handles: Vec<_> = data_dirs
                    .iter()
                    .enumerate()
                    .map(|(i, dir)| {
                        let (config, cache) = (&default_config, &cache);
                        scope.spawn(move || {
                            let mut logs = HashMap::new();
                            let r = Self::load_dir(i, dir, config, cache, &mut logs);
                            (logs, r)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            (
                                HashMap::new(),
                                Err(StorageError::Corrupt {
                                    what: "data directory",
                                    path: PathBuf::new(),
                                    detail: "loading it panicked".into(),
                                }),
                            )
                        })
                    })
                    .collect()
            });
        let mut logs: HashMap<TopicPartition, Entry> = HashMap::new();
        for ((found, result), dir) in loaded.into_iter().zip(&data_dirs) {
            let mut result = result;
            for (tp, entry) in found {
                if let Some(other) = logs.get(&tp) {
                    result = result.and(Err(StorageError::Corrupt {
                        what: "data directories",
                        path: dir.path.join(tp.dir_name()),
                        detail: format!(
                            "partition {} also lives in data directory #{}",
                            tp.dir_name(),
                            other.dir
                        ),
                    }));
                    continue;
                }
                logs.insert(tp, entry);
            }
            if let Err(e) = result {
                tracing::error!(dir = %dir.path.display(), error = %e, "data directory offline");
                dir.offline.store(true, Ordering::Relaxed);
            }
        }
        let failure = Arc::new(tokio::sync::watch::Sender::new(None));
        for e in logs.values() {
            lock(&e.log).set_failure_alarm(failure.clone());
        }
        Ok(Self {
            dirs: data_dirs,
            cache,
            default_config,
            logs: Mutex::new(logs),
            failure,
        })
    }

    fn load_dir(
        index: usize,
        dir: &DataDir,
        config: &LogConfig,
        cache: &Arc<FileCache>,
        logs: &mut HashMap<TopicPartition, Entry>,
    ) -> Result<(), StorageError> {
        let marker = dir.path.join(CLEAN_SHUTDOWN_FILE);
        let clean = marker.exists();
        let now = now_ms();
        for entry in std::fs::read_dir(&dir.path).ctx(&dir.path)? {
            let entry = entry.ctx(&dir.path)?;
            if !entry.file_type().ctx(&entry.path())?.is_dir() {
                continue;
            }
            let name = entry.file_name();
            let Some(tp) = name.to_str().and_then(TopicPartition::parse_dir_name) else {
                continue;
            };
            let log = PartitionLog::open(
                &entry.path(),
                &tp.topic,
                tp.partition,
                config.clone(),
                cache.clone(),
                clean,
                now,
            )?;
            let report = log.recovery_report();
            if report.segments_scanned > 0 || report.bytes_truncated > 0 {
                tracing::warn!(
                    partition = %tp.dir_name(),
                    segments_scanned = report.segments_scanned,
                    bytes_scanned = report.bytes_scanned,
                    bytes_truncated = report.bytes_truncated,
                    segments_deleted = report.segments_deleted,
                    "recovered partition after unclean shutdown"
                );
            }
            logs.insert(
                tp,
                Entry {
                    dir: index,
                    log: Arc::new(Mutex::new(log)),
                },
            );
        }
        if clean {
            // From here on a crash must be recognised as one.
            std::fs::remove_file(&marker).ctx(&marker)?;
            fsync_dir(&dir.path)?;
        }
        Ok(())
    }

    pub fn dirs(&self) -> &[DataDir] {
        &self.dirs
    }

    pub fn default_config(&self) -> &LogConfig {
        &self.default_config
    }

    /// The log of a partition, if this broker holds it and its directory is online.
    pub fn get(&self, tp: &TopicPartition) -> Option<SharedLog> {
        let logs = lock(&self.logs);
        let e = logs.get(tp)?;
        (!self.dirs[e.dir].is_offline()).then(|| e.log.clone())
    }

    /// Every partition held, with whether its directory is online.
    pub fn partitions(&self) -> Vec<(TopicPartition, bool)> {
        let logs = lock(&self.logs);
        let mut out: Vec<_> = logs
            .iter()
            .map(|(tp, e)| (tp.clone(), !self.dirs[e.dir].is_offline()))
            .collect();
        out.sort();
        out
    }

    /// The log of a partition, created (in the online directory with the fewest partitions)
    /// with `config` if it does not exist.
    pub fn get_or_create(
        &self,
        tp: &TopicPartition,
        config: Option<LogConfig>,
    ) -> Result<SharedLog, StorageError> {
        shared::names::validate_topic(&tp.topic).map_err(|e| StorageError::Config {
            key: "topic",
            reason: e.to_string(),
        })?;
        let mut logs = lock(&self.logs);
        if let Some(e) = logs.get(tp) {
            if self.dirs[e.dir].is_offline() {
                return Err(StorageError::Offline {
                    path: self.dirs[e.dir].path.clone(),
                });
            }
            return Ok(e.log.clone());
        }
        let mut counts = vec![0usize; self.dirs.len()];
        if self.dirs.len() > 1 {
            for e in logs.values() {
                counts[e.dir] += 1;
            }
        }
        let dir = (0..self.dirs.len())
            .filter(|&i| !self.dirs[i].is_offline())
            .min_by_key(|&i| counts[i])
            .ok_or_else(|| StorageError::Offline {
                path: self.dirs[0].path.clone(),
            })?;
        let path = self.dirs[dir].path.join(tp.dir_name());
        let config = config.unwrap_or_else(|| self.default_config.clone());
        let log = PartitionLog::open(
            &path,
            &tp.topic,
            tp.partition,
            config,
            self.cache.clone(),
            true,
            now_ms(),
        );
        let log = match log {
            Ok(l) => l,
            Err(e) => {
                self.report(dir, &e);
                return Err(e);
            }
        };
        let mut log = log;
        log.set_failure_alarm(self.failure.clone());
        let shared = Arc::new(Mutex::new(log));
        logs.insert(
            tp.clone(),
            Entry {
                dir,
                log: shared.clone(),
            },
        );
        Ok(shared)
    }

    /// Reports an error from a partition's log; a fatal I/O error takes its directory offline.
    pub fn report_error(&self, tp: &TopicPartition, error: &StorageError) {
        let dir = lock(&self.logs).get(tp).map(|e| e.dir);
        if let Some(dir) = dir {
            self.report(dir, error);
        }
    }

    fn report(&self, dir: usize, error: &StorageError) {
        if error.is_fatal_io() && !self.dirs[dir].offline.swap(true, Ordering::Relaxed) {
            tracing::error!(
                dir = %self.dirs[dir].path.display(),
                error = %error,
                "data directory taken offline after an I/O error; its partitions are unavailable"
            );
            // One directory offline leaves the others serving (JBOD); none left, nothing can.
            if self.dirs.iter().all(DataDir::is_offline) {
                self.failure.send_replace(Some(format!(
                    "every data directory is offline; the last, {}: {error}",
                    self.dirs[dir].path.display()
                )));
            }
        }
    }

    /// Watches for what stops the node: an fsync of a partition log failed, or every data
    /// directory went offline while serving. `Some(what happened)` from then on.
    pub fn failures(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.failure.subscribe()
    }

    /// Deletes a partition's log and directory.
    pub fn delete(&self, tp: &TopicPartition) -> Result<(), StorageError> {
        let Some(entry) = lock(&self.logs).remove(tp) else {
            return Ok(());
        };
        // Closed to every writer first: a periodic checkpoint still holding the log wrote its
        // state file into the directory being removed — its write failed, or the removal
        // found the directory not empty and the delete failed (seen in CI).
        lock(&entry.log).close_for_delete();
        let path = self.dirs[entry.dir].path.join(tp.dir_name());
        self.cache.evict_dir(&path);
        // A producer snapshot is written outside the log's lock and may still land once.
        let mut retries = 0;
        loop {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty && retries < 5 => {
                    retries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => return Err(StorageError::io(&path, e)),
            }
        }
        fsync_dir(&self.dirs[entry.dir].path)
    }

    /// Runs retention on every online partition; returns the segments deleted.
    pub fn apply_retention(&self, now_ms: i64) -> usize {
        let entries: Vec<_> = lock(&self.logs)
            .iter()
            .map(|(tp, e)| (tp.clone(), e.dir, e.log.clone()))
            .collect();
        let mut deleted = 0;
        for (tp, dir, log) in entries {
            if self.dirs[dir].is_offline() {
                continue;
            }
            match lock(&log).apply_retention(now_ms) {
                Ok(o) => deleted += o.segments_deleted,
                Err(e) => {
                    tracing::warn!(partition = %tp.dir_name(), error = %e, "retention failed");
                    self.report(dir, &e);
                }
            }
        }
        deleted
    }

    /// Clean shutdown: closes every log, then marks each directory whose logs all closed
    /// cleanly with `.clean-shutdown`.
    pub fn close(&self) -> Result<(), StorageError> {
        let logs = std::mem::take(&mut *lock(&self.logs));
        let mut dir_ok = vec![true; self.dirs.len()];
        for (i, d) in self.dirs.iter().enumerate() {
            dir_ok[i] = !d.is_offline();
        }
        for (tp, e) in logs {
            if let Err(err) = lock(&e.log).close() {
                tracing::error!(partition = %tp.dir_name(), error = %err, "closing partition failed");
                dir_ok[e.dir] = false;
            }
        }
        for (i, d) in self.dirs.iter().enumerate() {
            if dir_ok[i] {
                write_atomic(&d.path.join(CLEAN_SHUTDOWN_FILE), b"")?;
            }
        }
        Ok(())
    }

    /// Path of a partition's directory, if held.
    pub fn partition_dir(&self, tp: &TopicPartition) -> Option<PathBuf> {
        let logs = lock(&self.logs);
        logs.get(tp)
            .map(|e| self.dirs[e.dir].path.join(tp.dir_name()))
    }

    /// Whether `path` is one of the data directories.
    pub fn is_data_dir(&self, path: &Path) -> bool {
        self.dirs.iter().any(|d| d.path == path)
    }
}
