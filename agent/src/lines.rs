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

/// Splits a byte range known to hold whole records into them. The range's end ends a
/// record: bytes left at the end are a piece of a long line that was cut there while tailing
/// (exactly `max_line_bytes`, its line going on in the next range) — one record, as it was.
pub fn split_records(mut buf: &[u8], max_line_bytes: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((len, used)) = next_record(buf, max_line_bytes) {
        out.push(&buf[..len]);
        buf = &buf[used..];
    }
    if !buf.is_empty() {
        out.push(buf);
    }
    out
}

/// How lines join into multiline records (a stack trace after its first line, say).
#[derive(Debug, Clone, Copy)]
pub enum Join<'a> {
    /// A line matching this starts a new record; any other line continues the current one.
    Start(&'a regex::bytes::Regex),
    /// A line matching this continues the current record; any other starts a new one.
    Continuation(&'a regex::bytes::Regex),
    /// Every line is a record of its own.
    Lines,
}

impl Join<'_> {
    fn continues(&self, line: &[u8]) -> bool {
        match self {
            Join::Start(re) => !re.is_match(line),
            Join::Continuation(re) => re.is_match(line),
            Join::Lines => false,
        }
    }
}

/// The next multiline record in `buf`: `(record_len, consumed)` where the record is its
/// lines joined by `\n` (without the final newline), or `None` while where it ends is not
/// known yet.
///
/// A record ends where the next line does not continue it, at `max_lines` lines, or before a
/// line that would take it past `max_bytes`. Whether it has ended is decided by content
/// alone, except at the end of what was read: there `flush` (the multiline timeout, or the
/// end of a journaled range) ends it. A first line longer than `max_bytes` is cut into
/// pieces as [`next_record`] does. The same bytes and the same `flush` always give the same
/// records, which is what rebuilding a journaled batch relies on.
pub fn next_multiline(
    buf: &[u8],
    join: Join<'_>,
    max_lines: usize,
    max_bytes: usize,
    flush: bool,
) -> Option<(usize, usize)> {
    let (first_len, mut pos) = next_record(buf, max_bytes)?;
    if first_len == max_bytes && buf.get(first_len) != Some(&b'\n') {
        // A piece of an over-long first line is a record of its own.
        return Some((first_len, pos));
    }
    let mut end = first_len;
    let mut lines = 1;
    while lines < max_lines {
        let Some(i) = memchr::memchr(b'\n', &buf[pos..]) else {
            // Where this record ends depends on the next line, which is not here yet.
            return flush.then_some((end, pos));
        };
        let line = &buf[pos..pos + i];
        if !join.continues(line) || pos + i > max_bytes {
            break;
        }
        end = pos + i;
        pos += i + 1;
        lines += 1;
    }
    Some((end, pos))
}

/// Splits a byte range known to hold whole multiline records into them (the range's end
/// ends its last record).
pub fn split_multiline<'a>(
    mut buf: &'a [u8],
    join: Join<'_>,
    max_lines: usize,
    max_bytes: usize,
) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    while let Some((len, used)) = next_multiline(buf, join, max_lines, max_bytes, true) {
        out.push(&buf[..len]);
        buf = &buf[used..];
    }
    // As in `split_records`: what is left is a piece of an over-long line cut at the end.
    if !buf.is_empty() {
        out.push(buf);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tailing cuts records from whatever was read; a journaled range (which may end right
    /// after a piece of a long line) must split into the same records when rebuilt.
    #[test]
    fn a_range_ending_after_a_long_line_piece_rebuilds_the_same_records() {
        let max = 10;
        let data = b"short\nABCDEFGHIJKLMNOPQRSTUVWXYZ\nend\n";
        // While tailing, with more bytes after it, the first piece is a record.
        let mut tailed = Vec::new();
        let mut pos = 0;
        while let Some((len, used)) = next_record(&data[pos..], max) {
            tailed.push((pos, &data[pos..pos + len]));
            pos += used;
        }
        // Cut a range after each record: it rebuilds to the records taken up to there.
        for (i, (start, rec)) in tailed.iter().enumerate() {
            let end = start + rec.len();
            let end = if data.get(end) == Some(&b'\n') {
                end + 1
            } else {
                end
            };
            let rebuilt = split_records(&data[..end], max);
            let want: Vec<&[u8]> = tailed[..=i].iter().map(|(_, r)| *r).collect();
            assert_eq!(rebuilt, want, "range ending at {end}");
        }
        let start = regex::bytes::Regex::new(r"^[a-z]").unwrap();
        let ml = split_multiline(&data[..16], Join::Start(&start), 50, max);
        assert_eq!(ml, vec![&b"short"[..], &b"ABCDEFGHIJ"[..]]);
    }

    #[test]
    fn multiline_records_end_by_content_limits_or_flush() {
        let start = regex::bytes::Regex::new(r"^\d{4}-").unwrap();
        let j = Join::Start(&start);
        let buf = b"2026-01-01 boom\n  at a\n  at b\n2026-01-02 next\n  at c\n";
        // The first record ends where the next start line begins.
        assert_eq!(next_multiline(buf, j, 100, 1000, false), Some((29, 30)));
        assert_eq!(&buf[..29], b"2026-01-01 boom\n  at a\n  at b");
        // The second one's end is not known without a following line, unless flushed.
        assert_eq!(next_multiline(&buf[30..], j, 100, 1000, false), None);
        assert_eq!(
            next_multiline(&buf[30..], j, 100, 1000, true),
            Some((22, 23))
        );
        // max_lines ends a record by count.
        assert_eq!(next_multiline(buf, j, 2, 1000, false), Some((22, 23)));
        // A line that would pass max_bytes starts the next record.
        assert_eq!(next_multiline(buf, j, 100, 25, false), Some((22, 23)));
        // Incomplete first line: nothing yet.
        assert_eq!(next_multiline(b"2026-01-01 bo", j, 100, 1000, true), None);
        assert_eq!(
            split_multiline(buf, j, 100, 1000),
            vec![&buf[..29], &buf[30..52]]
        );
        let cont = regex::bytes::Regex::new(r"^\s").unwrap();
        let c = Join::Continuation(&cont);
        assert_eq!(
            split_multiline(buf, c, 100, 1000),
            split_multiline(buf, j, 100, 1000)
        );
        // Over-long first lines are cut into pieces, like single lines.
        assert_eq!(
            next_multiline(b"aaaaaaaaaa\n", j, 100, 4, false),
            Some((4, 4))
        );
    }

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
