//! Cutting file bytes into records. One pure function decides where every record ends, used
//! both while tailing and when a journaled batch is rebuilt after a crash, so the same byte
//! range always yields the same records.

/// Where the next record in `buf` ends, given records may not exceed `max_line_bytes`.
/// Returns `(record_len_without_newline, consumed)`, or `None` when `buf` holds no complete
/// record yet (no newline within `max_line_bytes` and fewer than `max_line_bytes` bytes).
/// A line longer than `max_line_bytes` is cut into pieces of exactly that size; the newline,
/// when it comes, ends the last piece.
pub fn next_record(buf: &[u8], max_line_bytes: usize) -> Option<(usize, usize)> {
    let window = &buf[..buf.len().min(max_line_bytes + 1)];
    match memchr::memchr(b'\n', window) {
        // A newline right after exactly max bytes ends that piece too.
        Some(i) => Some((i, i + 1)),
        _ if buf.len() > max_line_bytes => Some((max_line_bytes, max_line_bytes)),
        _ => None,
    }
}

/// Splits a byte range known to hold whole records into them.
pub fn split_records(mut buf: &[u8], max_line_bytes: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((len, used)) = next_record(buf, max_line_bytes) {
        out.push(&buf[..len]);
        buf = &buf[used..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_long_lines() {
        assert_eq!(next_record(b"abc\ndef", 10), Some((3, 4)));
        assert_eq!(next_record(b"abc", 10), None);
        assert_eq!(next_record(b"\n", 10), Some((0, 1)));
        // 12 bytes without a newline, max 5: pieces of 5.
        assert_eq!(next_record(b"aaaaaaaaaaaa", 5), Some((5, 5)));
        assert_eq!(next_record(b"aaaaa\n", 5), Some((5, 6)));
        assert_eq!(next_record(b"aaaaa", 5), None);
        assert_eq!(
            split_records(b"a\nbb\n\nccccccc\n", 3),
            vec![&b"a"[..], b"bb", b"", b"ccc", b"ccc", b"c"]
        );
    }
}
