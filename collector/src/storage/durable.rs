//! The narrow interface through which everything durability depends on passes: writes to
//! segment files (data, offset index, time index), their truncations, and the fsyncs that
//! make them durable (`fdatasync`, `fsync`, `syncfs`). Production code calls straight
//! through to the OS.
//!
//! In unit tests the same calls also keep a ledger: per file, how far it is written and how
//! far fsynced. [`power_loss`] then does to a data directory what a power cut does: every
//! byte written but not fsynced is lost, except a torn part the disk happened to write (a
//! prefix of it, or zeros where the filesystem had allocated the blocks). Tests that
//! acknowledge a write and then cut the power find any path that acknowledges before its
//! fsync. [`fail_syncs_under`] makes every fsync under a directory fail with `EIO`.
//!
//! The model covers file contents. Directory entries are taken as durable when made (new
//! segment files are created and the directory fsynced before any acknowledged write goes
//! into them; checkpoint files are written to a temporary name, fsynced and renamed).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Writes all of `buf` at `at` in `file` (whose path is `path`).
pub fn write_at(file: &File, path: &Path, buf: &[u8], at: u64) -> io::Result<()> {
    #[cfg(test)]
    ledger::before_write(file, path)?;
    file.write_all_at(buf, at)?;
    #[cfg(test)]
    ledger::wrote(path, at + buf.len() as u64);
    #[cfg(not(test))]
    let _ = path;
    Ok(())
}

/// Cuts or extends `file` to `len` bytes.
pub fn set_len(file: &File, path: &Path, len: u64) -> io::Result<()> {
    #[cfg(test)]
    ledger::before_write(file, path)?;
    file.set_len(len)?;
    #[cfg(test)]
    ledger::cut(path, len);
    #[cfg(not(test))]
    let _ = path;
    Ok(())
}

/// `fdatasync`: the file's data written so far is durable afterwards.
pub fn sync_data(file: &File, path: &Path) -> io::Result<()> {
    sync(file, path, File::sync_data)
}

/// `fsync`: the file's data and metadata written so far are durable afterwards.
pub fn sync_all(file: &File, path: &Path) -> io::Result<()> {
    sync(file, path, File::sync_all)
}

fn sync(file: &File, path: &Path, how: fn(&File) -> io::Result<()>) -> io::Result<()> {
    #[cfg(test)]
    let written = ledger::before_sync(file, path)?;
    how(file)?;
    #[cfg(test)]
    ledger::synced(path, written);
    #[cfg(not(test))]
    let _ = path;
    Ok(())
}

/// `syncfs` of the filesystem holding `file`, which lies in the data directory `dir`:
/// everything written there so far is durable afterwards.
pub fn syncfs(file: &File, dir: &Path) -> io::Result<()> {
    #[cfg(test)]
    let written = ledger::before_syncfs(dir)?;
    rustix::fs::syncfs(file)?;
    #[cfg(test)]
    ledger::synced_all(written);
    #[cfg(not(test))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
pub use ledger::{fail_syncs_under, power_loss};

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod ledger {
    use std::collections::BTreeMap;
    use std::fs::File;
    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    #[derive(Debug, Clone, Copy)]
    struct Entry {
        /// End of the furthest write (or the length after a cut).
        written: u64,
        /// What a power cut keeps.
        synced: u64,
    }

    /// Files written through this module (by every test of the process: each uses its own
    /// directory, and [`power_loss`] touches only the one it is given).
    static LEDGER: Mutex<BTreeMap<PathBuf, Entry>> = Mutex::new(BTreeMap::new());
    /// Directories under which every fsync fails.
    static FAILING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    fn ledger() -> std::sync::MutexGuard<'static, BTreeMap<PathBuf, Entry>> {
        LEDGER.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A file first seen here: what it holds already survived (it was written before this
    /// "boot", or by a power cut that kept it).
    pub(super) fn before_write(file: &File, path: &Path) -> io::Result<()> {
        if !ledger().contains_key(path) {
            let len = file.metadata()?.len();
            ledger().entry(path.to_path_buf()).or_insert(Entry {
                written: len,
                synced: len,
            });
        }
        Ok(())
    }

    pub(super) fn wrote(path: &Path, end: u64) {
        if let Some(e) = ledger().get_mut(path) {
            e.written = e.written.max(end);
        }
    }

    pub(super) fn cut(path: &Path, len: u64) {
        if let Some(e) = ledger().get_mut(path) {
            e.written = len;
            e.synced = e.synced.min(len);
        }
    }

    fn failing(path: &Path) -> io::Result<()> {
        let failing = FAILING.lock().unwrap_or_else(|p| p.into_inner());
        if failing.iter().any(|d| path.starts_with(d)) {
            return Err(io::Error::from_raw_os_error(libc_eio()));
        }
        Ok(())
    }

    const fn libc_eio() -> i32 {
        5 // EIO on Linux
    }

    pub(super) fn before_sync(file: &File, path: &Path) -> io::Result<Option<u64>> {
        failing(path)?;
        before_write(file, path)?;
        Ok(ledger().get(path).map(|e| e.written))
    }

    pub(super) fn synced(path: &Path, written: Option<u64>) {
        if let (Some(w), Some(e)) = (written, ledger().get_mut(path)) {
            e.synced = e.synced.max(w.min(e.written));
        }
    }

    pub(super) fn before_syncfs(dir: &Path) -> io::Result<Vec<(PathBuf, u64)>> {
        failing(dir)?;
        Ok(ledger()
            .iter()
            .filter(|(p, _)| p.starts_with(dir))
            .map(|(p, e)| (p.clone(), e.written))
            .collect())
    }

    pub(super) fn synced_all(written: Vec<(PathBuf, u64)>) {
        let mut l = ledger();
        for (p, w) in written {
            if let Some(e) = l.get_mut(&p) {
                e.synced = e.synced.max(w.min(e.written));
            }
        }
    }

    /// Every fsync of a file under `dir` fails with `EIO` from now on (`false`: works again).
    pub fn fail_syncs_under(dir: &Path, fail: bool) {
        let mut f = FAILING.lock().unwrap_or_else(|p| p.into_inner());
        f.retain(|d| d != dir);
        if fail {
            f.push(dir.to_path_buf());
        }
    }

    /// A power cut of everything under `dir` (its owner must be gone: drop the logs without
    /// closing them first, as a crash would). Each file written here loses what was not
    /// fsynced; `seed` picks, per file, how much of that the disk had written anyway (a
    /// prefix, which for one file in three reads back as zeros). Returns the bytes lost.
    pub fn power_loss(dir: &Path, seed: u64) -> u64 {
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut lost = 0;
        let mut l = ledger();
        let paths: Vec<PathBuf> = l.keys().filter(|p| p.starts_with(dir)).cloned().collect();
        for p in paths {
            let e = l.remove(&p).unwrap();
            let Ok(len) = std::fs::metadata(&p).map(|m| m.len()) else {
                continue;
            };
            if len <= e.synced {
                continue;
            }
            let unsynced = len - e.synced;
            let torn = match next() % 3 {
                0 => 0,
                _ => next() % (unsynced + 1),
            };
            let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
            f.set_len(e.synced + torn).unwrap();
            if torn > 0 && next() % 3 == 0 {
                use std::os::unix::fs::FileExt;
                f.write_all_at(&vec![0u8; torn as usize], e.synced).unwrap();
            }
            lost += unsynced - torn;
        }
        lost
    }
}
