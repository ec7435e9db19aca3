//! The CRI container log format, one record a line:
//! `<RFC 3339 timestamp> <stdout|stderr> <tag> <text>`. The tag's first `:`-separated field is
//! `F` (the record ends a line) or `P` (partial: the line goes on in the next record of the same
//! stream); kubelet ignores further fields, and so does podmortem.
//!
//! [`Assembler`] joins records into lines, keeping every line and the number of lines bounded.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use super::{LogLine, Stream, TailConfig};

/// One record of a CRI log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// When the runtime read it; `None` when the timestamp does not parse.
    pub at: Option<SystemTime>,
    /// The stream it came from.
    pub stream: Stream,
    /// Whether the line goes on in the next record of the same stream (tag `P`).
    pub partial: bool,
    /// The text, without the record's newline; not necessarily UTF-8.
    pub text: &'a [u8],
}

/// Why a record could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// A field is missing.
    #[error("no {0} field")]
    Missing(&'static str),
    /// The stream is neither `stdout` nor `stderr`.
    #[error("stream is neither stdout nor stderr")]
    BadStream,
    /// The tag is neither `F` nor `P`.
    #[error("tag is neither F nor P")]
    BadTag,
}

/// Parses one record (without its newline). A record that ends right after its tag has empty
/// text; a timestamp that does not parse gives `at: None`.
pub fn parse_record(raw: &[u8]) -> Result<Record<'_>, RecordError> {
    let (timestamp, rest) = split_space(raw).ok_or(RecordError::Missing("stream"))?;
    let (stream, rest) = split_space(rest).ok_or(RecordError::Missing("tag"))?;
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return Err(RecordError::BadStream),
    };
    let (tag, text) = split_space(rest).unwrap_or((rest, &[]));
    let partial = match tag.split(|b| *b == b':').next() {
        Some(b"P") => true,
        Some(b"F") => false,
        _ => return Err(RecordError::BadTag),
    };
    let at = std::str::from_utf8(timestamp).ok().and_then(parse_timestamp);
    Ok(Record {
        at,
        stream,
        partial,
        text,
    })
}

fn split_space(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = raw.iter().position(|b| *b == b' ')?;
    Some((&raw[..at], &raw[at + 1..]))
}

/// Parses an RFC 3339 timestamp: UTC (`Z`, as containerd writes) or with a `±HH:MM` offset (as
/// CRI-O writes, in local time). `None` for anything else.
pub fn parse_timestamp(text: &str) -> Option<SystemTime> {
    if text.ends_with('Z') {
        return humantime::parse_rfc3339(text).ok();
    }
    let split = text.len().checked_sub(6)?;
    let (local, offset) = (text.get(..split)?, text.get(split..)?.as_bytes());
    let [sign, h1, h2, b':', m1, m2] = *offset else {
        return None;
    };
    let digit = |b: u8| b.is_ascii_digit().then(|| u64::from(b - b'0'));
    let (hours, minutes) = (digit(h1)? * 10 + digit(h2)?, digit(m1)? * 10 + digit(m2)?);
    if hours > 23 || minutes > 59 {
        return None;
    }
    let local = humantime::parse_rfc3339(&format!("{local}Z")).ok()?;
    let offset = Duration::from_secs((hours * 60 + minutes) * 60);
    let utc = match sign {
        b'+' => local.checked_sub(offset),
        b'-' => local.checked_add(offset),
        _ => None,
    }?;
    (utc >= SystemTime::UNIX_EPOCH).then_some(utc)
}

/// Joins records into lines: `P` records with the records of the same stream that follow, up
/// to an `F`. Keeps the last `max_lines` lines, each cut to `max_line_bytes`, so its memory is
/// bounded whatever it is fed.
#[derive(Debug)]
pub struct Assembler {
    max_lines: usize,
    max_line_bytes: usize,
    lines: VecDeque<LogLine>,
    /// The unfinished line of each stream (stdout, stderr).
    pending: [Option<Pending>; 2],
    malformed: u64,
    /// Records seen, to order unfinished lines at the end.
    seq: u64,
}

/// A line whose `F` record has not come yet.
#[derive(Debug)]
struct Pending {
    at: Option<SystemTime>,
    bytes: Vec<u8>,
    /// Whether bytes were dropped for lack of room.
    overflow: bool,
    seq: u64,
}

impl Assembler {
    /// An assembler with the line limits of `config`.
    pub fn new(config: &TailConfig) -> Self {
        Assembler {
            max_lines: config.max_lines,
            max_line_bytes: config.max_line_bytes,
            lines: VecDeque::new(),
            pending: [None, None],
            malformed: 0,
            seq: 0,
        }
    }

    /// Feeds a window of a log file. When `cut` (the window does not start at the file's start),
    /// everything up to the first newline is the end of a record that began before it, and is
    /// dropped. A last record without a newline is kept.
    pub fn feed_window(&mut self, window: &[u8], cut: bool) {
        let mut records = window.split(|b| *b == b'\n');
        if cut {
            records.next();
        }
        let mut records = records.peekable();
        while let Some(raw) = records.next() {
            if raw.is_empty() && records.peek().is_none() {
                break; // after the final newline
            }
            self.feed(raw);
        }
    }

    /// Feeds one record (without its newline); one that does not parse is counted as malformed.
    pub fn feed(&mut self, raw: &[u8]) {
        let Ok(record) = parse_record(raw) else {
            self.malformed += 1;
            return;
        };
        self.seq += 1;
        let cap = self.max_line_bytes.saturating_add(4);
        let slot = &mut self.pending[record.stream as usize];
        let pending = slot.get_or_insert_with(|| Pending {
            at: record.at,
            bytes: Vec::new(),
            overflow: false,
            seq: self.seq,
        });
        let room = cap.saturating_sub(pending.bytes.len());
        let take = record.text.len().min(room);
        pending.bytes.extend_from_slice(&record.text[..take]);
        pending.overflow |= take < record.text.len();
        if !record.partial {
            if let Some(done) = slot.take() {
                self.push(record.stream, done);
            }
        }
    }

    /// Records that did not parse so far.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// Complete lines so far (unfinished ones not counted).
    pub fn complete_lines(&self) -> usize {
        self.lines.len()
    }

    /// The lines, oldest first; unfinished lines (a `P` never followed by its `F`) come last.
    pub fn finish(mut self) -> Vec<LogLine> {
        let mut rest: Vec<(Stream, Pending)> = [Stream::Stdout, Stream::Stderr]
            .into_iter()
            .filter_map(|stream| Some((stream, self.pending[stream as usize].take()?)))
            .collect();
        rest.sort_by_key(|(_, p)| p.seq);
        for (stream, pending) in rest {
            self.push(stream, pending);
        }
        self.lines.into()
    }

    fn push(&mut self, stream: Stream, pending: Pending) {
        if self.max_lines == 0 {
            return;
        }
        let mut text = String::from_utf8_lossy(&pending.bytes).into_owned();
        let mut truncated = pending.overflow;
        if text.len() > self.max_line_bytes {
            text.truncate(crate::text::floor_boundary(&text, self.max_line_bytes));
            truncated = true;
        }
        if self.lines.len() == self.max_lines {
            self.lines.pop_front();
        }
        self.lines.push_back(LogLine {
            at: pending.at,
            stream,
            text,
            truncated,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, nanos: u32) -> Option<SystemTime> {
        Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
    }

    #[test]
    fn parses_containerd_and_cri_o_records() {
        let r = parse_record(b"2026-11-23T02:19:31.820757827Z stderr F /bin/sh: iscsiadm: not found")
            .expect("record");
        assert_eq!(r.at, at(1_795_400_371, 820_757_827));
        assert_eq!((r.stream, r.partial), (Stream::Stderr, false));
        assert_eq!(r.text, b"/bin/sh: iscsiadm: not found");
        let r = parse_record(b"2026-11-23T03:19:31.5+01:00 stdout P:x  two spaces ").expect("record");
        assert_eq!(r.at, at(1_795_400_371, 500_000_000));
        assert_eq!((r.stream, r.partial), (Stream::Stdout, true));
        assert_eq!(r.text, b" two spaces ");
        let r = parse_record(b"2026-11-23T02:19:31Z stdout F").expect("record");
        assert_eq!((r.at, r.text), (at(1_795_400_371, 0), &b""[..]));
        let r = parse_record(b"yesterday stdout F text").expect("record");
        assert_eq!((r.at, r.text), (None, &b"text"[..]));
    }

    #[test]
    fn malformed_records_are_errors() {
        assert_eq!(parse_record(b""), Err(RecordError::Missing("stream")));
        assert_eq!(parse_record(b"ts stdout"), Err(RecordError::Missing("tag")));
        assert_eq!(parse_record(b"ts stdin F x"), Err(RecordError::BadStream));
        assert_eq!(parse_record(b"ts stdout X x"), Err(RecordError::BadTag));
        assert_eq!(parse_record(b"ts stdout  x"), Err(RecordError::BadTag));
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:01-00:30"), at(1801, 0));
        assert_eq!(
            parse_timestamp("1970-01-01T01:00:00.25+01:00"),
            at(0, 250_000_000)
        );
        assert_eq!(
            parse_timestamp("1970-01-01T00:00:00+01:00"),
            None,
            "before the epoch"
        );
        assert_eq!(parse_timestamp("2026-11-23T02:19:31+24:00"), None);
        assert_eq!(parse_timestamp("2026-11-23T02:19:31"), None);
        assert_eq!(parse_timestamp("2026-11-23 02:19:31Z"), None);
        assert_eq!(parse_timestamp("é+01:00"), None);
        assert_eq!(parse_timestamp(""), None);
    }

    #[test]
    fn assembler_joins_partials_per_stream_and_bounds_lines() {
        let config = TailConfig {
            max_bytes: 1 << 20,
            max_lines: 3,
            max_line_bytes: 8,
        };
        let mut a = Assembler::new(&config);
        a.feed_window(
            "cut off\n1970-01-01T00:00:01Z stdout P ab\n\
             1970-01-01T00:00:02Z stderr F err\n\
             garbage\n\
             1970-01-01T00:00:03Z stdout P c\u{e9}\n\
             1970-01-01T00:00:04Z stdout F d\n\
             1970-01-01T00:00:05Z stderr F 0123456\u{e9}89\n\
             1970-01-01T00:00:06Z stdout P never ends"
                .as_bytes(),
            true,
        );
        assert_eq!((a.malformed(), a.complete_lines()), (1, 3));
        let lines = a.finish();
        let got: Vec<_> = lines
            .iter()
            .map(|l| (l.stream, l.text.as_str(), l.truncated))
            .collect();
        assert_eq!(
            got,
            [
                (Stream::Stdout, "abc\u{e9}d", false),
                (Stream::Stderr, "0123456", true),
                (Stream::Stdout, "never en", true),
            ]
        );
        assert_eq!(lines[0].at, at(1, 0), "a joined line has its first record's time");
    }
}
