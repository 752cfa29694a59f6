//! The two sparse index files of a segment. Both hold fixed-size big-endian entries, appended
//! in increasing order, so lookups are binary searches done with `pread` — no index is held
//! in memory, whatever the segment size.
//!
//! - `.index`: 8 bytes per entry — offset relative to the segment base (u32), byte position
//!   of the batch that starts at that offset in the `.log` file (u32).
//! - `.timeindex`: 12 bytes per entry — timestamp (i64), relative offset (u32). An entry
//!   `(t, o)` says every record before the end of the batch starting at `o` has a timestamp
//!   `<= t`; timestamps of entries strictly increase.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

pub const OFFSET_ENTRY_BYTES: u64 = 8;
pub const TIME_ENTRY_BYTES: u64 = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub rel_offset: u32,
    pub position: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub rel_offset: u32,
}

impl OffsetEntry {
    pub fn encode(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&self.rel_offset.to_be_bytes());
        b[4..].copy_from_slice(&self.position.to_be_bytes());
        b
    }
    pub fn decode(b: &[u8; 8]) -> Self {
        Self {
            rel_offset: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            position: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

impl TimeEntry {
    pub fn encode(&self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[..8].copy_from_slice(&self.timestamp.to_be_bytes());
        b[8..].copy_from_slice(&self.rel_offset.to_be_bytes());
        b
    }
    pub fn decode(b: &[u8; 12]) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[..8]);
        Self {
            timestamp: i64::from_be_bytes(ts),
            rel_offset: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        }
    }
}

pub fn read_offset_entry(file: &File, i: u64) -> io::Result<OffsetEntry> {
    let mut b = [0u8; 8];
    file.read_exact_at(&mut b, i * OFFSET_ENTRY_BYTES)?;
    Ok(OffsetEntry::decode(&b))
}

pub fn read_time_entry(file: &File, i: u64) -> io::Result<TimeEntry> {
    let mut b = [0u8; 12];
    file.read_exact_at(&mut b, i * TIME_ENTRY_BYTES)?;
    Ok(TimeEntry::decode(&b))
}

/// Largest index `i < entries` with `key(i) <= target` (`None` when none is), by binary search.
fn search<K: Ord>(
    entries: u64,
    target: &K,
    mut key: impl FnMut(u64) -> io::Result<K>,
) -> io::Result<Option<u64>> {
    let (mut lo, mut hi) = (0u64, entries);
    // Invariant: every i < lo has key <= target; every i >= hi has key > target.
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if key(mid)? <= *target {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo.checked_sub(1))
}

/// The entry with the largest relative offset `<= rel_offset`.
pub fn lookup_offset(
    file: &File,
    entries: u64,
    rel_offset: u32,
) -> io::Result<Option<OffsetEntry>> {
    match search(entries, &rel_offset, |i| {
        read_offset_entry(file, i).map(|e| e.rel_offset)
    })? {
        Some(i) => read_offset_entry(file, i).map(Some),
        None => Ok(None),
    }
}

/// The entry with the largest timestamp `< timestamp` (scanning may start at its offset).
pub fn lookup_time_before(
    file: &File,
    entries: u64,
    timestamp: i64,
) -> io::Result<Option<TimeEntry>> {
    // Largest key <= timestamp - 1 is the largest key < timestamp.
    let target = timestamp.saturating_sub(1);
    match search(entries, &target, |i| {
        read_time_entry(file, i).map(|e| e.timestamp)
    })? {
        Some(i) => read_time_entry(file, i).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_search_finds_floor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.index");
        let file = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let entries: Vec<_> = (0..100u32)
            .map(|i| OffsetEntry {
                rel_offset: i * 10 + 5,
                position: i * 100,
            })
            .collect();
        for (i, e) in entries.iter().enumerate() {
            file.write_all_at(&e.encode(), i as u64 * 8).unwrap();
        }
        assert_eq!(lookup_offset(&file, 100, 4).unwrap(), None);
        assert_eq!(lookup_offset(&file, 100, 5).unwrap(), Some(entries[0]));
        assert_eq!(lookup_offset(&file, 100, 14).unwrap(), Some(entries[0]));
        assert_eq!(lookup_offset(&file, 100, 15).unwrap(), Some(entries[1]));
        assert_eq!(
            lookup_offset(&file, 100, 100_000).unwrap(),
            Some(entries[99])
        );
        assert_eq!(lookup_offset(&file, 0, 100).unwrap(), None);
    }
}
