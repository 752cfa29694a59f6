//! Small system helpers every crate uses, written once: the wall clock, lock poisoning, and
//! the one durable way to replace a file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The clock expiry decisions use: time-based retention, idle producers, idle groups'
/// committed offsets — everything that deletes because the wall clock says enough time
/// passed.
///
/// It follows the wall clock, but gains on the monotonic clock at most at twice its rate:
/// a forward step of the wall clock (a bad NTP server, a mistyped `date`, a VM resumed
/// with a stale clock corrected) is taken up over as long as the step itself, so a jump of
/// a day past `retention_ms` does not delete a day of data at once. A backward step is
/// followed at once (deleting later is the safe side). A clock already wrong when the
/// process starts is not caught: the first reading is trusted.
pub fn expiry_now_ms() -> i64 {
    static CLOCK: Mutex<ExpiryClock> = Mutex::new(ExpiryClock {
        last: None,
        warned: None,
    });
    lock(&CLOCK).now(now_ms(), std::time::Instant::now())
}

/// See [`expiry_now_ms`]; a value, so it is tested without waiting.
#[derive(Debug, Default)]
pub struct ExpiryClock {
    /// The last reading, and the monotonic instant it was taken.
    last: Option<(i64, std::time::Instant)>,
    /// When the last "wall clock ahead" warning went out.
    warned: Option<std::time::Instant>,
}

/// How far the wall clock may be ahead of the expiry clock before it is reported.
const EXPIRY_CLOCK_REPORT_AHEAD_MS: i64 = 60_000;

impl ExpiryClock {
    /// The expiry time, given the wall clock `wall_ms` read at monotonic instant `mono`.
    pub fn now(&mut self, wall_ms: i64, mono: std::time::Instant) -> i64 {
        let t = match self.last {
            None => wall_ms,
            Some((t0, m0)) => {
                let elapsed = mono.saturating_duration_since(m0).as_millis() as i64;
                wall_ms.min(t0.saturating_add(elapsed.saturating_mul(2)))
            }
        };
        if wall_ms - t > EXPIRY_CLOCK_REPORT_AHEAD_MS
            && self
                .warned
                .is_none_or(|w| mono.saturating_duration_since(w).as_secs() >= 60)
        {
            self.warned = Some(mono);
            tracing::warn!(
                ahead_ms = wall_ms - t,
                "the wall clock stepped forward: expiry (time-based retention, idle producers and \
                 group offsets) takes the step up gradually, at most as fast again as real time"
            );
        }
        self.last = Some((t, mono));
        t
    }
}

/// What a power cut leaves of a file (the fault model of the power-loss tests): its first
/// `durable` bytes (what was fsynced), plus a torn part of the rest that the disk happened
/// to write — none one time in three, else a random prefix, which one time in three reads
/// back as zeros (blocks allocated, data never written). `rng` is drawn from (a seeded
/// xorshift: [`PowerCutRng`]). Returns the bytes lost.
pub fn power_cut_file(path: &Path, durable: u64, rng: &mut PowerCutRng) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let len = std::fs::metadata(path)?.len();
    if len <= durable {
        return Ok(0);
    }
    let unsynced = len - durable;
    let torn = match rng.draw() % 3 {
        0 => 0,
        _ => rng.draw() % (unsynced + 1),
    };
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.set_len(durable + torn)?;
    if torn > 0 && rng.draw().is_multiple_of(3) {
        f.write_all_at(&vec![0u8; torn as usize], durable)?;
    }
    f.sync_all()?;
    Ok(unsynced - torn)
}

/// The seeded xorshift [`power_cut_file`] draws from: a seed replays the same cuts.
#[derive(Debug, Clone)]
pub struct PowerCutRng(u64);

impl PowerCutRng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn draw(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Locks `m`. The one poisoning policy: a panic while holding a lock does not stop the
/// others from using the data. Every state guarded by a mutex here is updated so that a
/// half-done update is still a valid state (counters, caches, maps replaced whole), so
/// going on is safe, and stopping the whole process for one panicked task is worse.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Read-locks `l`, with [`lock`]'s poisoning policy.
pub fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Write-locks `l`, with [`lock`]'s poisoning policy.
pub fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Replaces `path` with `contents` atomically and durably: write `path.tmp`, fsync it,
/// rename it over `path`, fsync the directory. A reader (or a restart after power loss)
/// sees the old file or the new one, never a mix.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    fsync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Fsyncs a directory so that entries created, renamed or removed in it are durable.
pub fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir).and_then(|d| d.sync_all())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_whole_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("state");
        write_atomic(&p, b"one").expect("first write");
        write_atomic(&p, b"two, longer").expect("second write");
        assert_eq!(std::fs::read(&p).expect("read"), b"two, longer");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["state"], "no temp file left behind");
    }

    #[test]
    fn a_poisoned_lock_is_still_usable() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock();
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }
}

#[cfg(test)]
mod expiry_clock_tests {
    use super::ExpiryClock;
    use std::time::{Duration, Instant};

    #[test]
    fn a_forward_step_is_taken_up_over_as_long_as_the_step_a_backward_one_at_once() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut c = ExpiryClock::default();
        let t0 = 1_000_000_000;
        assert_eq!(c.now(t0, at(0)), t0);
        assert_eq!(
            c.now(t0 + 10_000, at(10)),
            t0 + 10_000,
            "true time is followed"
        );
        // The wall clock jumps a day ahead at 10 s.
        let day = 86_400_000;
        let t = c.now(t0 + 11_000 + day, at(11));
        assert_eq!(t, t0 + 12_000, "gains at most 2x real time");
        let t = c.now(t0 + 20_000 + day, at(20));
        assert_eq!(t, t0 + 30_000);
        // Back to true time: followed at once.
        assert_eq!(c.now(t0 + 21_000, at(21)), t0 + 21_000);
        // A step back, then forward again: it catches up at double rate, never past wall.
        assert_eq!(
            c.now(t0 + 22_000 - 3_600_000, at(22)),
            t0 + 22_000 - 3_600_000
        );
        let t = c.now(t0 + 23_000, at(23));
        assert_eq!(t, t0 + 22_000 - 3_600_000 + 2_000);
        let mut last = t;
        for s in 24..4000 {
            let t = c.now(t0 + s as i64 * 1000, at(s));
            assert!(t >= last && t <= t0 + s as i64 * 1000);
            last = t;
        }
        assert_eq!(last, t0 + 3_999_000, "caught up with the wall clock");
    }
}
