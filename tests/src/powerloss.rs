//! A power cut of a real collector process: `kill -9` keeps the page cache, so every write
//! the process made survives it; a power cut keeps only what was fsynced.
//!
//! A collector started with `TRIBUTARY_POWER_LOSS_JOURNAL=<file>` (see
//! `collector::storage::durable`) records, per file it writes through its durability layer
//! (segment logs and indexes, the controller's Raft log), the length it had when first
//! touched, each fsync's length and each cut, one line per fact: `<kind> <inode> <length>
//! <path>` with kind `r` (holds exactly this much durable), `s` (fsynced up to) or `c` (cut
//! to). [`cut_power`] runs after the process is dead: each such file loses what was not
//! fsynced, except a torn part the disk happened to write (a prefix of it, or — one time in
//! three — zeros where the filesystem had allocated the blocks). Files written otherwise
//! (checkpoints written to a temporary name, fsynced and renamed) are taken as durable.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What a power cut took.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// Files that lost bytes.
    pub files: u64,
    /// Bytes lost (written but neither fsynced nor torn onto the disk).
    pub bytes: u64,
}

/// Per file, the inode the journal describes and the length a power cut keeps.
fn durable_lengths(journal: &str) -> io::Result<HashMap<PathBuf, (u64, u64)>> {
    let mut files: HashMap<PathBuf, (u64, u64)> = HashMap::new();
    for (n, l) in journal.lines().enumerate() {
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("journal line {}: {l:?}", n + 1),
            )
        };
        let mut parts = l.splitn(4, ' ');
        let (Some(kind), Some(ino), Some(len), Some(path)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            // The last line may be torn if the process died writing it.
            if n + 1 == journal.lines().count() {
                break;
            }
            return Err(bad());
        };
        let ino: u64 = ino.parse().map_err(|_| bad())?;
        let len: u64 = len.parse().map_err(|_| bad())?;
        let e = files.entry(PathBuf::from(path)).or_insert((ino, len));
        match kind {
            "r" => *e = (ino, len),
            "s" if e.0 == ino => e.1 = e.1.max(len),
            // An fsync of a file replaced without a record: what it synced is all we know.
            "s" => *e = (ino, len),
            "c" if e.0 == ino => e.1 = e.1.min(len),
            "c" => {}
            _ => return Err(bad()),
        }
    }
    Ok(files)
}

/// Cuts the power of the (dead) process that wrote `journal`: every file it names loses
/// what was not fsynced; `seed` decides the torn parts. The journal is emptied (the next
/// process starts a new one). Returns what was lost.
pub fn cut_power(journal: &Path, seed: u64) -> io::Result<Cut> {
    let text = match std::fs::read_to_string(journal) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let mut rng = shared::sys::PowerCutRng::new(seed);
    let mut cut = Cut::default();
    let mut files: Vec<(PathBuf, (u64, u64))> = durable_lengths(&text)?.into_iter().collect();
    files.sort();
    for (path, (ino, durable)) in files {
        let Ok(m) = std::fs::metadata(&path) else {
            continue; // deleted since
        };
        if m.ino() != ino || m.len() <= durable {
            continue;
        }
        cut.bytes += shared::sys::power_cut_file(&path, durable, &mut rng)?;
        cut.files += 1;
    }
    std::fs::write(journal, b"")?;
    Ok(cut)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_keeps_the_last_durable_length_of_each_file() {
        let j = "r 7 0 /d/a.log\ns 7 100 /d/a.log\nc 7 40 /d/a.log\ns 7 90 /d/a.log\n\
                 r 8 10 /d/b.log\ns 8 5 /d/b.log\nr 9 0 /d/b.log\nc 9 0 /d/c.log\ns 9 3";
        let f = durable_lengths(j).unwrap();
        assert_eq!(f[Path::new("/d/a.log")], (7, 90));
        // A new inode at the same path starts over; an earlier fsync never lowers it.
        assert_eq!(f[Path::new("/d/b.log")], (9, 0));
        // A cut of a file never recorded before is what is known of it.
        assert_eq!(f[Path::new("/d/c.log")], (9, 0));
        assert!(durable_lengths("x 1 2 /p\nr 1 2 /q\n").is_err());
    }

    #[test]
    fn a_cut_keeps_what_was_fsynced_and_empties_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.log");
        std::fs::write(&a, vec![1u8; 1000]).unwrap();
        let ino = std::fs::metadata(&a).unwrap().ino();
        let journal = dir.path().join("journal");
        for seed in 0..20 {
            std::fs::write(&a, vec![1u8; 1000]).unwrap();
            std::fs::write(
                &journal,
                format!("r {ino} 0 {p}\ns {ino} 300 {p}\n", p = a.display()),
            )
            .unwrap();
            let cut = cut_power(&journal, seed).unwrap();
            let kept = std::fs::read(&a).unwrap();
            assert!(kept.len() >= 300 && kept.len() <= 1000, "{}", kept.len());
            assert!(
                kept[..300].iter().all(|b| *b == 1),
                "the fsynced part is intact"
            );
            assert_eq!(cut.bytes, 1000 - kept.len() as u64);
            assert_eq!(std::fs::read(&journal).unwrap(), b"");
        }
    }
}
