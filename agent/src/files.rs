//! Finding files and knowing them again.
//!
//! Files are found by glob (plus a notify watch on their directories for prompt wake-ups)
//! and identified by a fingerprint — the CRC-32C of their first line (at most
//! [`FINGERPRINT_BYTES`]) — never by path, so a renamed file keeps its identity and a
//! copy-truncated file's copy is recognised as the file that was being read.
//!
//! - A file whose first line is not complete yet (no newline within the first
//!   [`FINGERPRINT_BYTES`]) has no fingerprint and is not read until it has one.
//! - Two live files with identical first lines: the inode breaks the tie. A file is the
//!   same as a known one when its inode matches; a new inode takes over a known fingerprint
//!   only when no live file holds that fingerprint any more (copy-truncate, or a rotation
//!   while the agent was down).

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::config::Input;

/// Bytes of the first line that make the fingerprint.
pub const FINGERPRINT_BYTES: usize = 1024;

/// The fingerprint of an open file, or `None` while its first line is incomplete.
pub fn fingerprint(file: &File) -> std::io::Result<Option<u64>> {
    let mut buf = vec![0u8; FINGERPRINT_BYTES];
    let mut n = 0;
    while n < buf.len() {
        let r = file.read_at(&mut buf[n..], n as u64)?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let head = &buf[..n];
    let first = match memchr::memchr(b'\n', head) {
        Some(i) => &head[..=i],
        None if n == FINGERPRINT_BYTES => head,
        None => return Ok(None),
    };
    Ok(Some(
        (u64::from(crc32c::crc32c(first)) << 16) | first.len() as u64,
    ))
}

/// A file found on disk.
#[derive(Debug, Clone)]
pub struct Found {
    pub input: usize,
    pub path: PathBuf,
    pub dev: u64,
    pub inode: u64,
    pub size: u64,
}

/// Every regular file matching an input's globs and none of its excludes. An exclude
/// pattern matches against the whole path or the file name.
pub fn discover(inputs: &[Input]) -> Discovery {
    let mut out = Vec::new();
    let mut unmatched = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, input) in inputs.iter().enumerate() {
        for pattern in &input.paths {
            let Ok(paths) = glob::glob(pattern.as_str()) else {
                unmatched.push(pattern.as_str().to_owned());
                continue;
            };
            let before = out.len();
            for path in paths.flatten() {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if input
                    .exclude
                    .iter()
                    .any(|x| x.matches_path(&path) || x.matches(name))
                {
                    continue;
                }
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                if !meta.is_file() || !seen.insert((meta.dev(), meta.ino())) {
                    continue;
                }
                out.push(Found {
                    input: i,
                    path,
                    dev: meta.dev(),
                    inode: meta.ino(),
                    size: meta.len(),
                });
            }
            if out.len() == before {
                unmatched.push(pattern.as_str().to_owned());
            }
        }
    }
    Discovery {
        found: out,
        unmatched,
    }
}

/// What one discovery found.
#[derive(Debug, Default)]
pub struct Discovery {
    pub found: Vec<Found>,
    /// Patterns that matched no file this time.
    pub unmatched: Vec<String>,
}

/// Why a path pattern may never match a file, for `check-config` and the start-up log:
/// it names a directory (not the files in it), or the directory it looks in does not exist,
/// or it matches nothing now. `None` when it matches at least one regular file.
pub fn pattern_problem(pattern: &str) -> Option<String> {
    let p = Path::new(pattern);
    if p.is_dir() {
        return Some(format!(
            "{pattern} is a directory: name the files, e.g. {}",
            p.join("*.log").display()
        ));
    }
    let root = watch_root(pattern);
    if !root.is_dir() {
        return Some(format!(
            "{pattern}: directory {} does not exist",
            root.display()
        ));
    }
    let matches = glob::glob(pattern)
        .ok()?
        .flatten()
        .any(|path| path.is_file());
    (!matches).then(|| format!("{pattern} matches no file (yet)"))
}

/// The first input whose globs match `path` and whose excludes do not.
pub fn input_for(inputs: &[Input], path: &Path) -> Option<usize> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    inputs.iter().position(|input| {
        input.paths.iter().any(|p| p.matches_path(path))
            && !input
                .exclude
                .iter()
                .any(|x| x.matches_path(path) || x.matches(name))
    })
}

/// Directories to watch for an input glob: the longest leading part without glob characters.
pub fn watch_root(pattern: &str) -> PathBuf {
    let mut root = PathBuf::from("/");
    for comp in Path::new(pattern).components().skip(1) {
        let s = comp.as_os_str().to_string_lossy();
        if s.contains(['*', '?', '[']) {
            break;
        }
        root.push(comp);
    }
    // A pattern naming one file: watch its directory.
    if !pattern.contains(['*', '?', '[']) {
        root.pop();
    }
    root
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_needs_a_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        std::fs::write(&p, b"partial").unwrap();
        assert_eq!(fingerprint(&File::open(&p).unwrap()).unwrap(), None);
        std::fs::write(&p, b"first line\nsecond").unwrap();
        let a = fingerprint(&File::open(&p).unwrap()).unwrap().unwrap();
        std::fs::write(&p, b"first line\nother second line\n").unwrap();
        assert_eq!(
            fingerprint(&File::open(&p).unwrap()).unwrap(),
            Some(a),
            "only the first line counts"
        );
    }

    #[test]
    fn watch_roots() {
        assert_eq!(
            watch_root("/var/log/nginx/*.log"),
            PathBuf::from("/var/log/nginx")
        );
        assert_eq!(
            watch_root("/var/log/app/**/*.log"),
            PathBuf::from("/var/log/app")
        );
        assert_eq!(watch_root("/var/log/syslog"), PathBuf::from("/var/log"));
    }
}
