//! The tailer shell: discovery by glob, rotation I/O (truncation checks, following a
//! copy-truncate's copy, reclaiming files renamed while the agent was down), open handles
//! and reads. What it reads goes to the [`Core`], which owns file identities, checkpoints
//! and resume points (`taken_end`); the tailer owns only handles, read positions and timers.
//! The rotation rules are in ARCHITECTURE.md.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::{Config, StartAt};
use crate::core::{Core, FileSource};
use crate::files::{self, Found};
use crate::metrics::AgentMetrics;
use crate::state::{FileKey, FileState};

/// How long an unknown file whose first line equals a file being read waits before it is
/// taken for a different file (rather than the copy of a copy-truncate).
const TWIN_GRACE: Duration = Duration::from_secs(5);
/// A file no longer found at any matching path is closed after this long without growth.
pub const DRAIN_IDLE: Duration = Duration::from_secs(5);
/// How often input patterns that still match nothing are logged again.
const UNMATCHED_REPEAT: Duration = Duration::from_secs(300);

pub use shared::sys::now_ms;

#[derive(Debug)]
struct Tailed {
    id: String,
    file: File,
    dev: u64,
    inode: u64,
    /// Size at the last discovery (a change makes discovery check the first line again).
    seen_size: u64,
    last_growth: Instant,
    /// Seen at a matching path in the last discovery.
    present: bool,
    /// Since when bytes after the read offset have waited for their record to end (a multiline
    /// record waits for its next line, at most the input's timeout).
    waiting_since: Option<Instant>,
}

/// How reading one file ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// At its end (or it cannot be read): its successors may be read.
    Drained,
    /// Unread bytes remain (an unfinished record still expected to end).
    More,
    /// `buffer_bytes_max` reached: nothing more is read this round.
    BufferFull,
}

#[derive(Debug)]
pub struct Tailer {
    tailed: HashMap<String, Tailed>,
    /// Unknown files that look like a twin of a tailed one, with when first seen.
    twins: HashMap<(u64, u64), Instant>,
    /// `start_at` applies only to files present at the very first start.
    first_start: bool,
    /// Whether the first discovery after start looked for known files renamed away.
    reclaimed: bool,
    /// The read buffer, reused across reads.
    read_buf: Vec<u8>,
    /// A read found a file changed under it (truncated): discover again before reading on.
    rediscover: bool,
    pub last_discovery: Instant,
    /// Input patterns that matched nothing at the last discovery, and when that was last
    /// logged.
    unmatched: Vec<String>,
    unmatched_warned: Option<Instant>,
}

impl Tailer {
    pub fn new(first_start: bool) -> Self {
        Self {
            tailed: HashMap::new(),
            twins: HashMap::new(),
            first_start,
            reclaimed: false,
            read_buf: Vec::new(),
            rediscover: false,
            last_discovery: Instant::now(),
            unmatched: Vec::new(),
            unmatched_warned: None,
        }
    }

    pub fn open_files(&self) -> usize {
        self.tailed.len()
    }

    /// Stops reading a file (no input matches it any more after a reload).
    pub fn stop(&mut self, core: &mut Core, id: &str) -> bool {
        core.close_file(id);
        self.tailed.remove(id).is_some()
    }

    fn close(&mut self, core: &mut Core, id: &str) -> Option<Tailed> {
        core.close_file(id);
        self.tailed.remove(id)
    }

    /// Discovers (when `rescan`) and reads; a read that found a file truncated under it
    /// triggers another discovery and read right away.
    pub fn poll(&mut self, core: &mut Core, cfg: &Config, m: &AgentMetrics, rescan: bool) {
        if rescan {
            self.discover(core, cfg, m);
        }
        self.read_all(core, cfg, m);
        if std::mem::take(&mut self.rediscover) {
            self.discover(core, cfg, m);
            self.read_all(core, cfg, m);
        }
    }

    pub fn discover(&mut self, core: &mut Core, cfg: &Config, m: &AgentMetrics) {
        for t in self.tailed.values_mut() {
            t.present = false;
        }
        self.last_discovery = Instant::now();
        let files::Discovery { found, unmatched } = files::discover(&cfg.inputs);
        self.report_unmatched(unmatched, m);
        self.forget_gone(core, cfg, &found);
        // Files closed to stay under max_open_files, by inode, with what was acknowledged:
        // one whose size did not move has nothing new and is not reopened.
        let closed: HashMap<(u64, u64), u64> = core
            .files()
            .iter()
            .filter(|(id, _)| !self.tailed.contains_key(*id))
            .map(|(_, (_, st))| ((st.dev, st.inode), st.acked_offset))
            .collect();
        let mut unknown = Vec::new();
        // Known inodes first: notice truncations before matching copies.
        for f in found {
            let known = self
                .tailed
                .values_mut()
                .find(|t| t.dev == f.dev && t.inode == f.inode)
                .map(|t| t.id.clone());
            match known {
                Some(id) => {
                    if self.truncated(core, &id, &f) {
                        // Copy-truncate: what was read so far lives on in the copy, which
                        // continues this identity exactly where reading stopped; this inode
                        // starts over as a new file.
                        tracing::info!(path = %f.path.display(), "file truncated; following the copy and the new content");
                        let offset = core.read_offset(&id).unwrap_or(0);
                        if let Some(t) = self.close(core, &id) {
                            let unread = t.seen_size.saturating_sub(offset);
                            self.follow_copy(core, t.id, offset, unread, &f);
                        }
                        unknown.push(f);
                    } else if let Some(t) = self.tailed.get_mut(&id) {
                        t.present = true;
                        t.seen_size = f.size;
                        let path = f.path.to_string_lossy().into_owned();
                        if core.file(&id).is_some_and(|(_, st)| st.last_path != path)
                            && let Some((_, st)) = core.files_mut().get_mut(&id)
                        {
                            st.last_path = path;
                        }
                    }
                }
                None => {
                    if closed.get(&(f.dev, f.inode)) == Some(&f.size) {
                        continue;
                    }
                    unknown.push(f);
                }
            }
        }
        if !self.reclaimed {
            self.reclaimed = true;
            self.reclaim_renamed(core, &unknown);
        }
        for f in unknown {
            // A copy followed above is tailed already.
            if self
                .tailed
                .values()
                .any(|t| t.dev == f.dev && t.inode == f.inode)
            {
                continue;
            }
            if self.tailed.len() >= cfg.max_open_files {
                self.close_least_active(core, self.tailed.len() + 1 - cfg.max_open_files);
            }
            if self.tailed.len() >= cfg.max_open_files {
                tracing::debug!(path = %f.path.display(), limit = cfg.max_open_files, "max_open_files reached; the file waits for a busy one to go idle");
                continue;
            }
            self.adopt(core, cfg, f);
        }
        self.first_start = false;
    }

    /// Warns about input patterns that match no file: when that changes, and every
    /// [`UNMATCHED_REPEAT`] while it lasts. `/health` and `/metrics` show them too.
    fn report_unmatched(&mut self, unmatched: Vec<String>, m: &AgentMetrics) {
        let due = self
            .unmatched_warned
            .is_none_or(|t| t.elapsed() >= UNMATCHED_REPEAT);
        if !unmatched.is_empty() && (unmatched != self.unmatched || due) {
            for p in &unmatched {
                let why =
                    files::pattern_problem(p).unwrap_or_else(|| format!("{p} matches no file"));
                tracing::warn!("input matches nothing: {why}");
            }
            self.unmatched_warned = Some(Instant::now());
        }
        if unmatched.is_empty() {
            self.unmatched_warned = None;
        }
        m.unmatched_patterns.set(unmatched.len() as i64);
        m.set_unmatched(&unmatched);
        self.unmatched = unmatched;
    }

    /// Marks known files found again as seen; forgets files no glob has found for
    /// `forget_files_after` that are neither open nor named by the journal.
    fn forget_gone(&mut self, core: &mut Core, cfg: &Config, found: &[Found]) {
        let here: HashSet<(u64, u64)> = found.iter().map(|f| (f.dev, f.inode)).collect();
        let limit = cfg.forget_files_after.as_millis() as i64;
        let forgotten = core.forget_gone(&here, now_ms(), limit);
        if forgotten > 0 {
            tracing::info!(
                files = forgotten,
                "forgot files gone for longer than forget_files_after_ms"
            );
        }
    }

    /// Starts tailing a file not currently tailed: resumes a known identity or begins a new one.
    fn adopt(&mut self, core: &mut Core, cfg: &Config, f: Found) {
        let Ok(file) = File::open(&f.path) else {
            return;
        };
        let Ok(Some(fp)) = files::fingerprint(&file) else {
            return;
        };
        let twin_tailed = self
            .tailed
            .keys()
            .any(|id| core.file(id).is_some_and(|(k, _)| k.fingerprint == fp));
        if let Some((id, offset)) = core.resume_candidate(fp, f.dev, f.inode, f.size) {
            if let Some((_, st)) = core.files_mut().get_mut(&id) {
                st.input = f.input;
            }
            tracing::info!(path = %f.path.display(), offset, "resuming file");
            self.resume(core, id, file, &f, offset, true);
            return;
        }
        if twin_tailed {
            // Maybe the copy of a file about to be truncated: wait before calling it new.
            let since = *self
                .twins
                .entry((f.dev, f.inode))
                .or_insert_with(Instant::now);
            if since.elapsed() < TWIN_GRACE {
                return;
            }
        }
        self.twins.remove(&(f.dev, f.inode));
        let input = &cfg.inputs[f.input];
        let start = if self.first_start && input.start_at == StartAt::End {
            f.size
        } else {
            0
        };
        let path = f.path.to_string_lossy().into_owned();
        let id = core.add_file(fp, f.dev, f.inode, path.clone(), f.input, start, now_ms());
        let partition = core.file(&id).map(|(_, st)| st.partition);
        tracing::info!(path = %path, partition, start, "new file");
        self.resume(core, id, file, &f, start, true);
    }

    /// Whether a tailed file was truncated: it is shorter than what was read, or its first
    /// line changed (truncated and written past the old read position before this look).
    fn truncated(&self, core: &Core, id: &str, f: &Found) -> bool {
        let Some(t) = self.tailed.get(id) else {
            return false;
        };
        if f.size < core.read_offset(id).unwrap_or(0) {
            return true;
        }
        if f.size == t.seen_size {
            return false;
        }
        let known = core.file(id).map(|(k, _)| k.fingerprint);
        match files::fingerprint(&t.file) {
            Ok(fp) => fp != known,
            Err(_) => false,
        }
    }

    /// Tails `file` as the known identity `id` from `offset` (a rename, a copy, a restart).
    fn resume(
        &mut self,
        core: &mut Core,
        id: String,
        file: File,
        f: &Found,
        offset: u64,
        present: bool,
    ) {
        core.open_file(
            &id,
            f.dev,
            f.inode,
            f.path.to_string_lossy().into_owned(),
            offset,
        );
        self.twins.remove(&(f.dev, f.inode));
        self.tailed.insert(
            id.clone(),
            Tailed {
                id,
                file,
                dev: f.dev,
                inode: f.inode,
                seen_size: f.size,
                last_growth: Instant::now(),
                present,
                waiting_since: None,
            },
        );
    }

    /// After `id`'s file was truncated: finds the copy its content was saved to (same first
    /// line, at least as long as what was read, in the same directory, not a file known
    /// otherwise; the newest if several) and continues the identity there at exactly the
    /// position reading had reached. Whether the copy's name matches a glob does not matter.
    fn follow_copy(
        &mut self,
        core: &mut Core,
        id: String,
        offset: u64,
        unread: u64,
        truncated: &Found,
    ) {
        let Some((key, st)) = core.file(&id) else {
            return;
        };
        let fp = key.fingerprint;
        let dir = truncated.path.parent().map(Path::to_path_buf).or_else(|| {
            PathBuf::from(&st.last_path)
                .parent()
                .map(|p| p.to_path_buf())
        });
        let known: HashSet<(u64, u64)> = core
            .files()
            .values()
            .map(|(_, st)| (st.dev, st.inode))
            .chain(self.tailed.values().map(|t| (t.dev, t.inode)))
            .chain([(truncated.dev, truncated.inode)])
            .collect();
        let mut best: Option<(std::time::SystemTime, Found, File)> = None;
        for path in dir
            .and_then(|d| std::fs::read_dir(d).ok())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
        {
            // Stat first: only a plausible copy is opened and its first line read.
            let Ok(m) = std::fs::metadata(&path) else {
                continue;
            };
            if !m.is_file() || m.len() < offset || known.contains(&(m.dev(), m.ino())) {
                continue;
            }
            let Ok(file) = File::open(&path) else {
                continue;
            };
            let same = file
                .metadata()
                .is_ok_and(|o| (o.dev(), o.ino()) == (m.dev(), m.ino()));
            if !same || !matches!(files::fingerprint(&file), Ok(Some(x)) if x == fp) {
                continue;
            }
            let mtime = m.modified().unwrap_or(std::time::UNIX_EPOCH);
            if best.as_ref().is_none_or(|(t, _, _)| mtime > *t) {
                let found = Found {
                    input: truncated.input,
                    path,
                    dev: m.dev(),
                    inode: m.ino(),
                    size: m.len(),
                };
                best = Some((mtime, found, file));
            }
        }
        match best {
            Some((_, found, file)) => {
                tracing::info!(copy = %found.path.display(), offset, "continuing a copy-truncated file in its copy");
                self.resume(core, id, file, &found, offset, true);
            }
            None if unread > 0 => {
                tracing::warn!(path = %truncated.path.display(), lost_bytes = unread, "file truncated before it was read to its end, and no copy of it was found: its unread bytes are gone");
            }
            None => {}
        }
    }

    /// At the first discovery after a start: known files that no glob finds any more (renamed
    /// to a name the inputs do not match while the agent was down) but that still exist by
    /// inode at their last path or in its directory, with lines not yet taken, are tailed
    /// again by handle and drained.
    fn reclaim_renamed(&mut self, core: &mut Core, unknown: &[Found]) {
        // Known files whose inode a glob found again, but with another first line or shorter
        // than what was taken: copy-truncated while the agent was down. Their identity goes
        // on in the copy (whatever its name), from where its lines were taken.
        let truncated: Vec<(String, Found)> = core
            .files()
            .iter()
            .filter(|(id, _)| !self.tailed.contains_key(*id))
            .filter_map(|(id, (k, st))| {
                let f = unknown
                    .iter()
                    .find(|f| f.dev == st.dev && f.inode == st.inode)?;
                let fp = File::open(&f.path)
                    .ok()
                    .and_then(|h| files::fingerprint(&h).ok())?;
                (fp != Some(k.fingerprint) || f.size < core.taken_end(id))
                    .then(|| (id.clone(), f.clone()))
            })
            .collect();
        for (id, f) in truncated {
            let offset = core.taken_end(&id);
            self.follow_copy(core, id, offset, 0, &f);
        }
        let found_now: HashSet<(u64, u64)> = unknown
            .iter()
            .map(|f| (f.dev, f.inode))
            .chain(self.tailed.values().map(|t| (t.dev, t.inode)))
            .collect();
        let lost: Vec<(String, FileState, u64)> = core
            .files()
            .iter()
            .filter(|(id, (_, st))| {
                !self.tailed.contains_key(*id) && !found_now.contains(&(st.dev, st.inode))
            })
            .map(|(id, (k, st))| (id.clone(), st.clone(), k.fingerprint))
            .collect();
        // One directory listing per directory, however many files it had.
        let mut by_dir: HashMap<PathBuf, HashMap<(u64, u64), PathBuf>> = HashMap::new();
        for (id, st, fp) in lost {
            let offset = core.taken_end(&id);
            let Some(dir) = Path::new(&st.last_path).parent() else {
                continue;
            };
            let inodes = by_dir.entry(dir.to_path_buf()).or_insert_with(|| {
                std::fs::read_dir(dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(|e| {
                        let m = std::fs::metadata(e.path()).ok()?;
                        m.is_file().then(|| ((m.dev(), m.ino()), e.path()))
                    })
                    .collect()
            });
            let Some(path) = inodes.get(&(st.dev, st.inode)).cloned() else {
                continue;
            };
            let Some((file, m)) = File::open(&path)
                .ok()
                .and_then(|f| Some((f.metadata().ok()?, f)))
                .filter(|(m, _)| m.dev() == st.dev && m.ino() == st.inode)
                .map(|(m, f)| (f, m))
            else {
                continue;
            };
            if m.len() <= offset || !matches!(files::fingerprint(&file), Ok(Some(x)) if x == fp) {
                continue;
            }
            tracing::info!(path = %path.display(), offset, "resuming a file renamed while the agent was down");
            let f = Found {
                input: st.input,
                path,
                dev: m.dev(),
                inode: m.ino(),
                size: m.len(),
            };
            self.resume(core, id, file, &f, offset, false);
        }
    }

    /// Reads every tailed file as far as the buffer allows. Files sharing a `path` stream
    /// (a file and its successors after rotation: same topic, same `path` header) are read
    /// oldest first, and a successor only once its predecessor is read to its end (or has
    /// waited [`DRAIN_IDLE`] on an unfinished last record): a consumer of one path sees the
    /// rest of a rotated file before the first line of the new one.
    fn read_all(&mut self, core: &mut Core, cfg: &Config, m: &AgentMetrics) {
        // (seq, stream, id): a stream is a hash of (topic, path), so a read pass does not copy
        // every file's strings (this runs on every wake-up, for every open file). A collision
        // could only delay a file behind an unrelated older one, never reorder a stream.
        let mut order: Vec<(u64, u64, String)> = self
            .tailed
            .keys()
            .filter_map(|id| {
                let (_, st) = core.file(id)?;
                let mut h = std::collections::hash_map::DefaultHasher::new();
                std::hash::Hash::hash(&(&st.topic, &st.path), &mut h);
                Some((st.seq, std::hash::Hasher::finish(&h), id.clone()))
            })
            .collect();
        order.sort_unstable();
        let mut busy: HashSet<u64> = Default::default();
        for (_, stream, id) in order {
            if busy.contains(&stream) {
                continue;
            }
            match self.read_file(core, cfg, m, &id) {
                Read::Drained => {}
                Read::More => {
                    busy.insert(stream);
                }
                Read::BufferFull => return,
            }
        }
    }

    /// Reads one file until its end, an unfinished record, or the buffer limit.
    fn read_file(&mut self, core: &mut Core, cfg: &Config, m: &AgentMetrics, id: &str) -> Read {
        let chunk = cfg.read_chunk_bytes;
        // A record may be up to max_line_bytes: a chunk without one's end is read again larger.
        let most = chunk.max(cfg.max_line_bytes + 1);
        if !core.readable(id) {
            // Not read before its partition is known (the collectors have not answered).
            return Read::More;
        }
        let mut buf = std::mem::take(&mut self.read_buf);
        let timeout = core
            .file(id)
            .and_then(|(_, st)| cfg.inputs.get(st.input))
            .and_then(|i| i.multiline.as_ref())
            .map(|m| m.timeout);
        let mut want = chunk;
        let mut checked = false;
        let result = loop {
            if core.buffered() >= cfg.buffer_bytes_max as u64 {
                break Read::BufferFull;
            }
            let Some(t) = self.tailed.get(id) else {
                break Read::Drained;
            };
            let Some(offset) = core.read_offset(id) else {
                break Read::Drained;
            };
            // The multiline timeout ends a record that waited long enough for its next line.
            let flush = match (timeout, t.waiting_since) {
                (Some(limit), Some(since)) => since.elapsed() >= limit,
                _ => false,
            };
            if buf.len() < want {
                buf.resize(want, 0);
            }
            let n = match t.file.read_at(&mut buf[..want], offset) {
                Ok(n) => n,
                Err(e) => {
                    // Reported, and not holding its successors back.
                    tracing::warn!(file = %id, error = %e, "read failed");
                    break Read::Drained;
                }
            };
            if n == 0 {
                break Read::Drained;
            }
            if !checked {
                // Still the file that was being read? A copy-truncated file that was written
                // past this offset again before discovery noticed has another first line:
                // its bytes here are not the continuation of what was read.
                checked = true;
                let known = core.file(id).map(|(k, _)| k.fingerprint);
                if offset > 0 && !matches!(files::fingerprint(&t.file), Ok(fp) if fp == known) {
                    self.rediscover = true;
                    break Read::Drained;
                }
            }
            let took = core.take(id, &buf[..n], flush, Instant::now(), now_ms());
            m.records_read.inc_by(took.records);
            m.bytes_read.inc_by(took.consumed as u64);
            m.long_line_pieces.inc_by(took.long_pieces);
            m.multiline_timeouts.inc_by(took.timeouts);
            let consumed = took.consumed;
            let Some(t) = self.tailed.get_mut(id) else {
                break Read::Drained;
            };
            if consumed == 0 {
                if n == want && want < most {
                    want = (want * 2).min(most);
                    continue;
                }
                // An incomplete record: wait for the rest (or the multiline timeout).
                // After a flush that found no whole line, the wait starts over (no spin).
                if flush {
                    t.waiting_since = Some(Instant::now());
                } else {
                    t.waiting_since.get_or_insert_with(Instant::now);
                }
                // An unfinished last record holds a successor back only for a while.
                break if t.last_growth.elapsed() >= DRAIN_IDLE {
                    Read::Drained
                } else {
                    Read::More
                };
            }
            t.last_growth = Instant::now();
            t.waiting_since = (consumed < n).then(Instant::now);
            want = chunk;
        };
        buf.truncate(chunk);
        self.read_buf = buf;
        result
    }

    /// The earliest moment a waiting multiline record times out, if any.
    pub fn next_multiline_deadline(&self, core: &Core, cfg: &Config) -> Option<Instant> {
        self.tailed
            .values()
            .filter_map(|t| {
                let since = t.waiting_since?;
                let (_, st) = core.file(&t.id)?;
                let m = cfg.inputs.get(st.input)?.multiline.as_ref()?;
                Some(since + m.timeout)
            })
            .min()
    }

    /// Closes up to `n` open files that are fully read and fully acknowledged, least recently
    /// active first. They are found again by the next discovery when they grow, and resume
    /// at their acknowledged offset (which is where reading stopped).
    fn close_least_active(&mut self, core: &mut Core, n: usize) {
        let mut idle: Vec<(Instant, String)> = self
            .tailed
            .values()
            .filter(|t| {
                let acked = core.file(&t.id).map(|(_, st)| st.acked_offset);
                let read = core.read_offset(&t.id).unwrap_or(0);
                acked == Some(read) && t.file.metadata().map(|m| m.len() <= read).unwrap_or(false)
            })
            .map(|t| (t.last_growth, t.id.clone()))
            .collect();
        idle.sort();
        for (_, id) in idle.into_iter().take(n) {
            tracing::debug!(file = %id, "closing the least recently active file (max_open_files)");
            self.close(core, &id);
        }
    }

    /// Closes files that are gone from every matching path, fully read and idle.
    pub fn close_drained(&mut self, core: &mut Core) {
        let drained: Vec<String> = self
            .tailed
            .values()
            .filter(|t| !t.present && t.last_growth.elapsed() >= DRAIN_IDLE)
            .filter(|t| {
                let read = core.read_offset(&t.id).unwrap_or(0);
                t.file.metadata().map(|m| m.len() <= read).unwrap_or(true)
            })
            .map(|t| t.id.clone())
            .collect();
        for id in drained {
            tracing::info!(file = %id, "closing a drained file");
            self.close(core, &id);
        }
    }
}

/// Reads journaled ranges back from the files (rebuilding batches after a restart).
#[derive(Debug, Default)]
pub struct DiskFiles;

impl FileSource for DiskFiles {
    fn read_range(
        &mut self,
        key: &FileKey,
        st: &FileState,
        start: u64,
        end: u64,
    ) -> Result<Vec<u8>, String> {
        let file = find_file(st, key)
            .ok_or_else(|| format!("file {} (last seen at {}) is gone", st.path, st.last_path))?;
        let mut data = vec![0u8; (end - start) as usize];
        file.read_exact_at(&mut data, start)
            .map_err(|e| format!("{}: {e}", st.last_path))?;
        Ok(data)
    }
}

/// Opens the file a state entry names: at its last path if the inode matches, else any file
/// matching its fingerprint among the candidates of its last directory.
fn find_file(st: &FileState, key: &FileKey) -> Option<File> {
    // First the same inode (renamed or not), then any file with the same first line
    // (a copy made by copy-truncate while the agent was down).
    let open_if = |p: &Path, same_inode: bool| -> Option<File> {
        let f = File::open(p).ok()?;
        let m = f.metadata().ok()?;
        let inode_ok = !same_inode || (m.dev() == st.dev && m.ino() == st.inode);
        (inode_ok && m.is_file() && files::fingerprint(&f).ok()? == Some(key.fingerprint))
            .then_some(f)
    };
    if let Some(f) = open_if(Path::new(&st.last_path), true) {
        return Some(f);
    }
    let dir = PathBuf::from(&st.last_path).parent()?.to_path_buf();
    let entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    for same_inode in [true, false] {
        for p in &entries {
            if let Some(f) = open_if(p, same_inode) {
                return Some(f);
            }
        }
    }
    None
}
