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
//!
//! For the fault campaign the real binary keeps a journal of the same facts when the
//! environment variable [`POWER_LOSS_JOURNAL_ENV`] names a file (a test hook, off unless
//! set): per file, its length when this process first touched it and at each fsync, and
//! each cut. After a `kill -9`, the harness (`tributary_tests::powerloss`) cuts every file
//! back to what the journal says was fsynced, tearing the tail as [`power_loss`] does: the
//! process-level form of a power cut, which `kill -9` alone is not (the page cache keeps
//! every write).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Writes all of `buf` at `at` in `file` (whose path is `path`).
pub fn write_at(file: &File, path: &Path, buf: &[u8], at: u64) -> io::Result<()> {
    journal::touch(file, path);
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
    journal::touch(file, path);
    #[cfg(test)]
    ledger::before_write(file, path)?;
    file.set_len(len)?;
    journal::cut(file, path, len);
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
    let journaled = journal::before_sync(file, path);
    #[cfg(test)]
    let written = ledger::before_sync(file, path)?;
    how(file)?;
    journal::synced(path, journaled);
    #[cfg(test)]
    ledger::synced(path, written);
    #[cfg(not(test))]
    let _ = path;
    Ok(())
}

/// `syncfs` of the filesystem holding `file`, which lies in the data directory `dir`:
/// everything written there so far is durable afterwards.
pub fn syncfs(file: &File, dir: &Path) -> io::Result<()> {
    let journaled = journal::before_syncfs(dir);
    #[cfg(test)]
    let written = ledger::before_syncfs(dir)?;
    rustix::fs::syncfs(file)?;
    journal::synced_all(journaled);
    #[cfg(test)]
    ledger::synced_all(written);
    #[cfg(not(test))]
    let _ = dir;
    Ok(())
}

/// `path` was just replaced whole by a file written, fsynced and renamed into place (its
/// directory entry taken as durable, as above): all of it survives a power cut.
pub fn replaced(path: &Path) {
    journal::replaced(path);
}

#[cfg(test)]
pub use ledger::{fail_syncs_under, power_loss};

/// The environment variable that turns the power-loss journal on (a test hook).
pub const POWER_LOSS_JOURNAL_ENV: &str = "TRIBUTARY_POWER_LOSS_JOURNAL";

/// The power-loss journal (see the module docs). One line per fact, appended with one
/// `write` each, so a `kill -9` keeps every line written: `<kind> <inode> <length> <path>`,
/// where kind `r` is "holds exactly `length` durable bytes" (first touched by this process,
/// or replaced whole), `s` "fsynced up to `length`", and `c` "cut to `length`".
mod journal {
    use std::collections::HashSet;
    use std::fs::File;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};
    use std::sync::{Mutex, OnceLock};

    struct Journal {
        out: File,
        /// Files (path, inode) this process has recorded.
        seen: HashSet<(PathBuf, u64)>,
    }

    fn journal() -> Option<&'static Mutex<Journal>> {
        static J: OnceLock<Option<Mutex<Journal>>> = OnceLock::new();
        J.get_or_init(|| {
            let path = std::env::var_os(super::POWER_LOSS_JOURNAL_ENV)?;
            let out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .ok()?;
            tracing::warn!(journal = ?path, "power-loss journal on (a test hook): every fsync is recorded");
            Some(Mutex::new(Journal {
                out,
                seen: HashSet::new(),
            }))
        })
        .as_ref()
    }

    fn lock(j: &Mutex<Journal>) -> std::sync::MutexGuard<'_, Journal> {
        j.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn line(j: &mut Journal, kind: char, ino: u64, len: u64, path: &Path) {
        let _ = j
            .out
            .write_all(format!("{kind} {ino} {len} {}\n", path.display()).as_bytes());
    }

    /// Before a write: a file first touched here holds what survived until now.
    pub(super) fn touch(file: &File, path: &Path) {
        let Some(j) = journal() else { return };
        let Ok(m) = file.metadata() else { return };
        let mut j = lock(j);
        if j.seen.insert((path.to_path_buf(), m.ino())) {
            line(&mut j, 'r', m.ino(), m.len(), path);
        }
    }

    pub(super) fn cut(file: &File, path: &Path, len: u64) {
        let Some(j) = journal() else { return };
        let Ok(m) = file.metadata() else { return };
        line(&mut lock(j), 'c', m.ino(), len, path);
    }

    /// The file's inode and length before an fsync: what the fsync makes durable.
    pub(super) fn before_sync(file: &File, path: &Path) -> Option<(u64, u64)> {
        journal()?;
        touch(file, path);
        let m = file.metadata().ok()?;
        Some((m.ino(), m.len()))
    }

    pub(super) fn synced(path: &Path, before: Option<(u64, u64)>) {
        if let (Some(j), Some((ino, len))) = (journal(), before) {
            line(&mut lock(j), 's', ino, len, path);
        }
    }

    /// Every file recorded under `dir`, with its inode and length before a `syncfs`.
    pub(super) fn before_syncfs(dir: &Path) -> Vec<(PathBuf, u64, u64)> {
        let Some(j) = journal() else {
            return Vec::new();
        };
        let seen: Vec<(PathBuf, u64)> = lock(j)
            .seen
            .iter()
            .filter(|(p, _)| p.starts_with(dir))
            .cloned()
            .collect();
        seen.into_iter()
            .filter_map(|(p, ino)| {
                let m = std::fs::metadata(&p).ok()?;
                (m.ino() == ino).then_some((p, ino, m.len()))
            })
            .collect()
    }

    pub(super) fn synced_all(files: Vec<(PathBuf, u64, u64)>) {
        let Some(j) = journal() else { return };
        let mut j = lock(j);
        for (p, ino, len) in files {
            line(&mut j, 's', ino, len, &p);
        }
    }

    pub(super) fn replaced(path: &Path) {
        let Some(j) = journal() else { return };
        let Ok(m) = std::fs::metadata(path) else {
            return;
        };
        let mut j = lock(j);
        j.seen.insert((path.to_path_buf(), m.ino()));
        line(&mut j, 'r', m.ino(), m.len(), path);
    }
}

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
        let mut rng = shared::sys::PowerCutRng::new(seed);
        let mut l = ledger();
        let paths: Vec<PathBuf> = l.keys().filter(|p| p.starts_with(dir)).cloned().collect();
        paths
            .into_iter()
            .map(|p| {
                let e = l.remove(&p).unwrap();
                match shared::sys::power_cut_file(&p, e.synced, &mut rng) {
                    Ok(lost) => lost,
                    // A file deleted since loses nothing more.
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => 0,
                    Err(err) => panic!("power cut of {}: {err}", p.display()),
                }
            })
            .sum()
    }
}
