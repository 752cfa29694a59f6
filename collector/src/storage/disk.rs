//! What a data directory sits on: checked and reported at start, so that a directory on a
//! disk that is not mounted is refused rather than silently created on the root filesystem.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::StorageError;

/// The filesystem a path lives on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskInfo {
    /// Mount point, filesystem type and source (device) from `/proc/self/mountinfo`.
    pub mount_point: Option<PathBuf>,
    pub fs_type: Option<String>,
    pub source: Option<String>,
    /// `major:minor` of the device holding the directory.
    pub device: String,
    pub free_bytes: u64,
    pub total_bytes: u64,
}

/// Reads what `path` (which must exist) is stored on.
pub fn disk_info(path: &Path) -> std::io::Result<DiskInfo> {
    let meta = std::fs::metadata(path)?;
    let dev = meta.dev();
    let st = rustix::fs::statvfs(path).map_err(std::io::Error::from)?;
    let canonical = std::fs::canonicalize(path)?;
    let mount = std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|text| longest_mount(&text, &canonical));
    let (mount_point, fs_type, source) = match mount {
        Some((m, t, s)) => (Some(m), Some(t), Some(s)),
        None => (None, None, None),
    };
    Ok(DiskInfo {
        mount_point,
        fs_type,
        source,
        device: format!("{}:{}", rustix::fs::major(dev), rustix::fs::minor(dev)),
        free_bytes: st.f_bavail.saturating_mul(st.f_frsize),
        total_bytes: st.f_blocks.saturating_mul(st.f_frsize),
    })
}

/// The mount (point, type, source) in `mountinfo` text whose mount point is the longest
/// prefix of `path`.
fn longest_mount(mountinfo: &str, path: &Path) -> Option<(PathBuf, String, String)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // id parent major:minor root mount-point options [optional...] - type source opts
            let fields: Vec<&str> = line.split(' ').collect();
            let point = PathBuf::from(unescape(fields.get(4)?));
            let dash = fields.iter().position(|f| *f == "-")?;
            let fs_type = (*fields.get(dash + 1)?).to_owned();
            let source = unescape(fields.get(dash + 2)?);
            path.starts_with(&point).then_some((point, fs_type, source))
        })
        .max_by_key(|(p, _, _)| p.as_os_str().len())
}

/// `mountinfo` escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Checks every data directory before anything is opened: a missing one is created only
/// when `create` is set, else refused with a message naming the likely cause. Logs what
/// each directory is stored on and its free space.
pub fn prepare_data_dirs(dirs: &[PathBuf], create: bool) -> Result<(), StorageError> {
    for dir in dirs {
        if !dir.exists() {
            if !create {
                return Err(StorageError::Config {
                    key: "data_dirs",
                    reason: format!(
                        "{} does not exist. If it is on a disk, is the disk mounted? Create the \
                         directory, or set create_data_dirs: true to let the collector create it",
                        dir.display()
                    ),
                });
            }
            std::fs::create_dir_all(dir).map_err(|source| StorageError::Io {
                path: dir.clone(),
                source,
            })?;
            tracing::info!(dir = %dir.display(), "created data directory");
        } else if !dir.is_dir() {
            return Err(StorageError::Config {
                key: "data_dirs",
                reason: format!("{} is not a directory", dir.display()),
            });
        }
        match disk_info(dir) {
            Ok(d) => tracing::info!(
                dir = %dir.display(),
                mount_point = %d.mount_point.as_deref().map_or_else(|| "?".into(), |p| p.display().to_string()),
                filesystem = d.fs_type.as_deref().unwrap_or("?"),
                source = d.source.as_deref().unwrap_or("?"),
                device = %d.device,
                free = %human_bytes(d.free_bytes),
                size = %human_bytes(d.total_bytes),
                "data directory"
            ),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot read the data directory's filesystem")
            }
        }
    }
    Ok(())
}

/// "12.3 GiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_mount_wins() {
        let text = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
                    30 22 8:17 / /mnt/disk\\0401 rw - xfs /dev/sdb1 rw\n";
        let (p, t, s) = longest_mount(text, Path::new("/mnt/disk 1/tributary")).unwrap();
        assert_eq!(
            (p, t.as_str(), s.as_str()),
            (PathBuf::from("/mnt/disk 1"), "xfs", "/dev/sdb1")
        );
        let (p, t, _) = longest_mount(text, Path::new("/var/lib")).unwrap();
        assert_eq!((p, t.as_str()), (PathBuf::from("/"), "ext4"));
    }

    #[test]
    fn missing_dir_is_refused_unless_created() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("disk1/tributary");
        let e = prepare_data_dirs(std::slice::from_ref(&missing), false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mounted") && e.contains("create_data_dirs"),
            "{e}"
        );
        assert!(!missing.exists());
        prepare_data_dirs(std::slice::from_ref(&missing), true).unwrap();
        assert!(missing.is_dir());
        assert!(disk_info(&missing).unwrap().total_bytes > 0);
    }
}
