//! The `/dev/kmsg` record format: `prio,seq,usec,flags[,more];text`, then optional
//! continuation lines (` KEY=value`) that belong to the same record.
//!
//! One `read(2)` of the device returns exactly one record. A regular file (a fixture, a saved
//! log) holds many; [`Splitter`] cuts either into records.

/// One kernel log record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Syslog level (0 emergency … 7 debug).
    pub level: u8,
    /// Syslog facility (0 for the kernel).
    pub facility: u32,
    /// The kernel's sequence number; increases by one per record since boot.
    pub seq: u64,
    /// When it was logged, in microseconds since boot.
    pub usec: u64,
    /// Whether the record continues the previous one (flag `c`).
    pub continuation: bool,
    /// The message, without the continuation lines.
    pub text: &'a str,
}

/// Why a record could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// No `;` separates the prefix from the message.
    #[error("no ';' after the record prefix")]
    NoPrefix,
    /// A prefix field is missing or not a number.
    #[error("bad record prefix field {0}")]
    BadField(&'static str),
    /// The message is not UTF-8 (the kernel escapes non-printable bytes, so this is garbage).
    #[error("record is not UTF-8")]
    NotUtf8,
}

/// Parses one record. Continuation lines after the first newline are ignored.
pub fn parse_record(raw: &[u8]) -> Result<Record<'_>, RecordError> {
    let first = raw.split(|b| *b == b'\n').next().unwrap_or(raw);
    let line = std::str::from_utf8(first).map_err(|_| RecordError::NotUtf8)?;
    let (prefix, text) = line.split_once(';').ok_or(RecordError::NoPrefix)?;
    let mut fields = prefix.split(',');
    let mut number = |name: &'static str| -> Result<u64, RecordError> {
        fields
            .next()
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or(RecordError::BadField(name))
    };
    let prio = number("prio")?;
    let seq = number("seq")?;
    let usec = number("usec")?;
    let flags = fields.next().ok_or(RecordError::BadField("flags"))?;
    Ok(Record {
        level: u8::try_from(prio & 7).unwrap_or(7),
        facility: u32::try_from(prio >> 3).map_err(|_| RecordError::BadField("prio"))?,
        seq,
        usec,
        continuation: flags.starts_with('c'),
        text,
    })
}

/// Cuts a byte stream into records: a record is a line not starting with a space, together
/// with the continuation lines (starting with a space) that follow it. Bytes after the last
/// newline are kept for the next chunk, up to `max_record` bytes; a longer record is dropped.
#[derive(Debug)]
pub struct Splitter {
    pending: Vec<u8>,
    max_record: usize,
    /// Whether the rest of the current line is being skipped (oversized, or a continuation).
    skipping: bool,
}

impl Splitter {
    /// A splitter that drops records longer than `max_record` bytes.
    pub fn new(max_record: usize) -> Self {
        Splitter {
            pending: Vec::new(),
            max_record,
            skipping: false,
        }
    }

    /// Feeds a chunk; calls `each` with every complete record's first line. Returns how many
    /// oversized records were dropped.
    pub fn feed(&mut self, chunk: &[u8], mut each: impl FnMut(&[u8])) -> u64 {
        let mut dropped = 0;
        for line in chunk.split_inclusive(|b| *b == b'\n') {
            let complete = line.ends_with(b"\n");
            if self.skipping {
                self.skipping = !complete;
                continue;
            }
            // A continuation line (` KEY=value`): not needed; skip it, even across chunks.
            if self.pending.is_empty() && line.first() == Some(&b' ') {
                self.skipping = !complete;
                continue;
            }
            if self.pending.len() + line.len() > self.max_record {
                self.pending.clear();
                self.skipping = !complete;
                dropped += 1;
                continue;
            }
            self.pending.extend_from_slice(line);
            if complete {
                each(self.pending.strip_suffix(b"\n").unwrap_or(&self.pending));
                self.pending.clear();
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prefix_fields_and_text() {
        let r = parse_record(
            b"3,1187,5312453,-,caller=T812;oom-kill:constraint=CONSTRAINT_MEMCG\n SUBSYSTEM=x\n",
        )
        .expect("record");
        assert_eq!((r.level, r.facility, r.seq, r.usec), (3, 0, 1187, 5_312_453));
        assert!(!r.continuation);
        assert_eq!(r.text, "oom-kill:constraint=CONSTRAINT_MEMCG");
        let r = parse_record(b"14,7,8,c;user text").expect("record");
        assert_eq!((r.level, r.facility), (6, 1));
        assert!(r.continuation);
    }

    #[test]
    fn malformed_records_are_errors() {
        assert_eq!(parse_record(b"no prefix"), Err(RecordError::NoPrefix));
        assert_eq!(parse_record(b"6,x,1,-;t"), Err(RecordError::BadField("seq")));
        assert_eq!(parse_record(b"6,1,1;t"), Err(RecordError::BadField("flags")));
        assert_eq!(parse_record(b"6,1,1,-;\xff\xfe"), Err(RecordError::NotUtf8));
        assert_eq!(parse_record(b""), Err(RecordError::NoPrefix));
    }

    #[test]
    fn splitter_joins_chunks_and_skips_continuations_and_giants() {
        let mut s = Splitter::new(64);
        let mut out = Vec::new();
        let mut push = |r: &[u8]| out.push(String::from_utf8_lossy(r).into_owned());
        s.feed(b"6,1,1,-;first\n SUBSYSTEM=a\n DEVICE=b\n6,2,", &mut push);
        s.feed(b"2,-;second\n", &mut push);
        let dropped = s.feed(&[b'x'; 100], &mut push);
        let dropped = dropped + s.feed(b"tail of giant\n6,3,3,-;third\n", &mut push);
        assert_eq!(dropped, 1);
        assert_eq!(out, ["6,1,1,-;first", "6,2,2,-;second", "6,3,3,-;third"]);
    }
}
