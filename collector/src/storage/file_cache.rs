//! An LRU of open read-only handles for closed segment files, shared by every log of a
//! broker, so a broker holding thousands of segments keeps a bounded number of descriptors.

use std::fs::File;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::error::{IoContext, StorageError};

/// Bounded cache of `Arc<File>` keyed by path. A handle evicted while a reader still holds
/// its `Arc` stays open until that reader drops it.
#[derive(Debug)]
pub struct FileCache {
    files: Mutex<LruCache<PathBuf, Arc<File>>>,
}

/// Default number of cached handles: well under the usual 1024 soft descriptor limit once
/// sockets and active segments (three files each) are counted.
pub const OPEN_SEGMENT_FILES_MAX_DEFAULT: usize = 256;

impl FileCache {
    pub fn new(capacity: usize) -> Self {
        let cap = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        Self {
            files: Mutex::new(LruCache::new(cap)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<PathBuf, Arc<File>>> {
        // A panic while holding this lock cannot leave the map inconsistent (each operation
        // is a single LruCache call), so a poisoned lock is still usable.
        shared::sys::lock(&self.files)
    }

    /// Returns an open handle for `path`, opening it (read-only) on a miss.
    pub fn get(&self, path: &Path) -> Result<Arc<File>, StorageError> {
        if let Some(f) = self.lock().get(path) {
            return Ok(f.clone());
        }
        let file = Arc::new(File::open(path).ctx(path)?);
        self.lock().put(path.to_path_buf(), file.clone());
        Ok(file)
    }

    /// Forgets `path` (its file is being deleted or rewritten).
    pub fn evict(&self, path: &Path) {
        self.lock().pop(path);
    }

    /// Forgets every handle under `dir`.
    pub fn evict_dir(&self, dir: &Path) {
        let mut files = self.lock();
        let keys: Vec<PathBuf> = files
            .iter()
            .filter(|(k, _)| k.starts_with(dir))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            files.pop(&k);
        }
    }

    /// Number of cached handles.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_evicts_least_recent() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileCache::new(2);
        let paths: Vec<_> = (0..3).map(|i| dir.path().join(format!("{i}"))).collect();
        for p in &paths {
            std::fs::write(p, b"x").unwrap();
        }
        cache.get(&paths[0]).unwrap();
        cache.get(&paths[1]).unwrap();
        cache.get(&paths[0]).unwrap();
        cache.get(&paths[2]).unwrap();
        assert_eq!(cache.len(), 2);
        assert!(cache.lock().contains(&paths[0]));
        assert!(!cache.lock().contains(&paths[1]));
        cache.evict_dir(dir.path());
        assert!(cache.is_empty());
    }
}
