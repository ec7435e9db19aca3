//! The kernel log read through `syslog(2)` (`klogctl`), for when `/dev/kmsg` cannot be
//! opened: a non-privileged container may hold `CAP_SYSLOG` and still be refused the device by
//! its device cgroup, while `syslog(2)` needs only the capability.
//!
//! `SYSLOG_ACTION_READ_ALL` copies the newest records of the ring buffer, formatted as
//! `<N>[seconds.micros] text` lines (`N` = facility × 8 + level; 5.x kernels built with
//! `CONFIG_PRINTK_CALLER` add `[  T123]` after the time). It gives no sequence numbers, so
//! where reading got to is a [`UsecCursor`]: the timestamp of the last record handled and how
//! many records with that same timestamp were handled. Each poll finds the cursor by scanning
//! the buffer backwards from its end, so a poll costs (besides the system call) in proportion
//! to the new lines, not the buffer.
//!
//! A message of several lines is printed with the prefix on every line; each line is one
//! record here (the OOM and filesystem parsers look at one line at a time).

use std::io;

use serde::{Deserialize, Serialize};

/// `SYSLOG_ACTION_READ_ALL`: copy the newest records, without consuming them.
const SYSLOG_ACTION_READ_ALL: libc::c_int = 3;
/// `SYSLOG_ACTION_SIZE_BUFFER`: the size of the kernel's log buffer.
const SYSLOG_ACTION_SIZE_BUFFER: libc::c_int = 10;
/// The read buffer is this many times the kernel's: the ring holds the text without the
/// `<N>[time] ` prefixes, which the formatted copy adds to every line.
const BUFFER_FACTOR: usize = 2;
/// Bounds of the read buffer, whatever the kernel reports.
const MIN_BUFFER: usize = 16 * 1024;
/// The largest read buffer (a kernel with `log_buf_len=32M` is read through its newest 64 MiB).
pub const MAX_BUFFER: usize = 64 * 1024 * 1024;

/// Where reading got to, by timestamp: every record up to the `count`-th one logged at `usec`
/// was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UsecCursor {
    /// The last handled record's timestamp, in microseconds since boot.
    pub usec: u64,
    /// How many records with that timestamp were handled.
    pub count: u32,
}

impl UsecCursor {
    /// The cursor after handling a record logged at `usec`. It never goes back: a record two
    /// CPUs timestamped slightly out of order, older than one already handled, leaves it
    /// where it is (going back would hand the records after it out again).
    pub fn advance(cursor: Option<UsecCursor>, usec: u64) -> UsecCursor {
        match cursor {
            Some(c) if usec < c.usec => c,
            Some(c) if c.usec == usec => UsecCursor {
                usec,
                count: c.count.saturating_add(1),
            },
            _ => UsecCursor { usec, count: 1 },
        }
    }
}

/// One line of `syslog(2)` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    /// Syslog level (0 emergency … 7 debug).
    pub level: u8,
    /// Syslog facility (0 for the kernel).
    pub facility: u32,
    /// When it was logged, in microseconds since boot.
    pub usec: u64,
    /// The message.
    pub text: &'a str,
}

/// Why a line could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// The line does not start with `<N>`.
    #[error("no <priority> prefix")]
    NoPriority,
    /// `<N>` is not followed by `[seconds.micros]`: printk timestamps are off (or garbage).
    #[error("no [seconds.micros] timestamp after the priority")]
    NoTimestamp,
    /// The line is not UTF-8 (the kernel escapes non-printable bytes, so this is garbage).
    #[error("line is not UTF-8")]
    NotUtf8,
    /// The buffer ended in the middle of a line.
    #[error("the last line is cut short")]
    Truncated,
}

/// Parses one line (without its newline).
pub fn parse_line(raw: &[u8]) -> Result<Line<'_>, LineError> {
    let line = std::str::from_utf8(raw).map_err(|_| LineError::NotUtf8)?;
    let (prio, rest) = line
        .strip_prefix('<')
        .and_then(|r| r.split_once('>'))
        .ok_or(LineError::NoPriority)?;
    if prio.is_empty() || prio.len() > 10 || !prio.bytes().all(|b| b.is_ascii_digit()) {
        return Err(LineError::NoPriority);
    }
    let prio: u64 = prio.parse().map_err(|_| LineError::NoPriority)?;
    let (usec, rest) = timestamp(rest).ok_or(LineError::NoTimestamp)?;
    // `[  T123]` or `[   C2]` right after the time: the caller (CONFIG_PRINTK_CALLER). A task
    // table row (`[  15888] …`) comes after the space, so it is not taken for one.
    let rest = match rest.strip_prefix('[').and_then(|r| r.split_once(']')) {
        Some((caller, after)) if caller.len() <= 12 && is_caller(caller.trim_start()) => after,
        _ => rest,
    };
    Ok(Line {
        level: u8::try_from(prio & 7).unwrap_or(7),
        facility: u32::try_from(prio >> 3).map_err(|_| LineError::NoPriority)?,
        usec,
        text: rest.strip_prefix(' ').unwrap_or(rest),
    })
}

/// `T123` or `C4`.
fn is_caller(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('T' | 'C'))
        && !s[1..].is_empty()
        && s[1..].bytes().all(|b| b.is_ascii_digit())
}

/// `[ 1234.567890]`: microseconds since boot, and what follows the `]`.
fn timestamp(s: &str) -> Option<(u64, &str)> {
    let (inside, rest) = s.strip_prefix('[')?.split_once(']')?;
    let (secs, micros) = inside.trim_start().split_once('.')?;
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    if !digits(secs) || micros.len() != 6 || !digits(micros) {
        return None;
    }
    let usec = secs
        .parse::<u64>()
        .ok()?
        .checked_mul(1_000_000)?
        .checked_add(micros.parse::<u64>().ok()?)?;
    Some((usec, rest))
}

/// What a poll found in the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Byte offset of the first line after the cursor.
    pub new_from: usize,
    /// The lines at the cursor's timestamp that were handled already and lie at or after
    /// `new_from`: skip this many timestamped lines at `cursor.usec` first.
    pub skip_at_cursor: u32,
    /// Estimated records overwritten since the cursor (0 when the cursor is still in the
    /// buffer). Approximate: it assumes the lost records came at the rate of those kept.
    pub lost: u64,
    /// Where the buffer's complete lines end (a trailing partial line starts there).
    pub complete_end: usize,
}

/// Why the buffer cannot be followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// The newest line has a priority but no timestamp: the kernel prints none.
    #[error(
        "the kernel log read through syslog(2) has no timestamps, so it cannot be followed: \
         boot with printk.time=1 (or write Y to /sys/module/printk/parameters/time)"
    )]
    NoTimestamps,
}

/// Finds the lines after `cursor` in `buf` (`None`: every line is new), scanning backwards
/// from the end and stopping at the first line logged before the cursor.
pub fn scan(buf: &[u8], cursor: Option<UsecCursor>) -> Result<Scan, ScanError> {
    let complete_end = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let complete = &buf[..complete_end];
    let newest = lines_backwards(complete).next();
    if let Some((_, raw)) = newest {
        if parse_line(raw) == Err(LineError::NoTimestamp) {
            return Err(ScanError::NoTimestamps);
        }
    }
    let Some(cursor) = cursor else {
        return Ok(Scan {
            new_from: 0,
            skip_at_cursor: 0,
            lost: 0,
            complete_end,
        });
    };
    let mut new_from = complete_end;
    let mut at_cursor = 0u32;
    let mut newest_usec = None;
    let mut oldest_usec = None;
    let mut timestamped = 0u64;
    for (start, raw) in lines_backwards(complete) {
        let Ok(line) = parse_line(raw) else {
            new_from = start;
            continue;
        };
        if line.usec < cursor.usec {
            return Ok(Scan {
                new_from,
                skip_at_cursor: cursor.count.min(at_cursor),
                lost: 0,
                complete_end,
            });
        }
        if line.usec == cursor.usec {
            at_cursor = at_cursor.saturating_add(1);
        }
        newest_usec.get_or_insert(line.usec);
        oldest_usec = Some(line.usec);
        timestamped += 1;
        new_from = start;
    }
    // The whole buffer is at or after the cursor: the records just after the cursor may have
    // been overwritten (or the log cleared).
    let lost = match (oldest_usec, newest_usec) {
        (Some(oldest), Some(newest)) if oldest > cursor.usec => {
            estimate_lost(timestamped, oldest, newest, oldest - cursor.usec)
        }
        // The oldest line has the cursor's timestamp: what was handled is (partly) still there.
        _ => 0,
    };
    Ok(Scan {
        new_from: 0,
        skip_at_cursor: cursor.count.min(at_cursor),
        lost,
        complete_end,
    })
}

/// Records that came in `gap` microseconds, at the rate of the `kept` records seen between
/// `oldest` and `newest`; at least one.
fn estimate_lost(kept: u64, oldest: u64, newest: u64, gap: u64) -> u64 {
    let span = newest.saturating_sub(oldest);
    if span == 0 {
        return 1;
    }
    let estimate = u128::from(kept) * u128::from(gap) / u128::from(span);
    u64::try_from(estimate).unwrap_or(u64::MAX).max(1)
}

/// The complete lines of `buf` (which ends with a newline, or is empty), newest first, each
/// with its start offset and without its newline.
fn lines_backwards(buf: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut end = buf.len().saturating_sub(1);
    let mut done = buf.is_empty();
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let start = buf[..end].iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let line = &buf[start..end];
        if start == 0 {
            done = true;
        } else {
            end = start - 1;
        }
        Some((start, line))
    })
}

/// Calls `each` with every line after `cursor` (the one the scan was made with), oldest
/// first: `Ok` for a timestamped line, `Err` for one that cannot be parsed.
pub fn new_lines<'a>(
    buf: &'a [u8],
    scan: &Scan,
    cursor: Option<UsecCursor>,
    mut each: impl FnMut(Result<Line<'a>, LineError>),
) {
    let mut skip = scan.skip_at_cursor;
    let region = buf.get(scan.new_from..scan.complete_end).unwrap_or_default();
    for raw in region.split(|b| *b == b'\n') {
        if raw.is_empty() {
            continue;
        }
        match parse_line(raw) {
            Ok(line) if skip > 0 && cursor.is_some_and(|c| c.usec == line.usec) => skip -= 1,
            // A garbage line before a handled one was counted when it was new.
            Err(_) if skip > 0 => {}
            parsed => each(parsed),
        }
    }
}

/// The cursor at the end of `buf`: its newest timestamped line, counted among those that
/// share its timestamp. `None` when no line has a timestamp.
pub fn end_cursor(buf: &[u8]) -> Option<UsecCursor> {
    let complete_end = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let mut cursor: Option<UsecCursor> = None;
    for (_, raw) in lines_backwards(&buf[..complete_end]) {
        let Ok(line) = parse_line(raw) else { continue };
        match &mut cursor {
            None => {
                cursor = Some(UsecCursor {
                    usec: line.usec,
                    count: 1,
                })
            }
            Some(c) if c.usec == line.usec => c.count = c.count.saturating_add(1),
            Some(_) => break,
        }
    }
    cursor
}

/// Why `syslog(2)` failed.
#[derive(Debug, thiserror::Error)]
pub enum KlogError {
    /// The call was refused or failed.
    #[error("syslog(2) {action} failed: {source}{hint}")]
    Call {
        /// Which action (`SYSLOG_ACTION_READ_ALL`, …).
        action: &'static str,
        /// The error.
        source: io::Error,
        /// What would make it work, if known.
        hint: &'static str,
    },
}

impl KlogError {
    /// Whether the call was refused for want of a capability.
    pub fn is_permission(&self) -> bool {
        let KlogError::Call { source, .. } = self;
        matches!(source.raw_os_error(), Some(libc::EPERM | libc::EACCES))
    }
}

/// A source of the formatted log: [`Klog`], or fixed text in tests.
pub trait ReadAll {
    /// Reads the newest records; returns them.
    fn read_all(&mut self) -> Result<&[u8], KlogError>;
    /// What the last read returned.
    fn contents(&self) -> &[u8];
}

/// Reads the kernel log through `syslog(2)`, into one buffer reused on every read.
#[derive(Debug)]
pub struct Klog {
    buf: Vec<u8>,
    len: usize,
}

impl Klog {
    /// Sizes the buffer after the kernel's and reads once, so that a refusal shows now.
    pub fn open() -> Result<Klog, KlogError> {
        let size = klogctl(SYSLOG_ACTION_SIZE_BUFFER, &mut [], "SYSLOG_ACTION_SIZE_BUFFER")?;
        let size = size.saturating_mul(BUFFER_FACTOR).clamp(MIN_BUFFER, MAX_BUFFER);
        let mut klog = Klog {
            buf: vec![0; size],
            len: 0,
        };
        klog.read_all()?;
        Ok(klog)
    }

    /// The size of the read buffer.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }
}

impl ReadAll for Klog {
    /// Copies the newest records that fit into the buffer; returns them.
    fn read_all(&mut self) -> Result<&[u8], KlogError> {
        self.len = klogctl(SYSLOG_ACTION_READ_ALL, &mut self.buf, "SYSLOG_ACTION_READ_ALL")?;
        Ok(&self.buf[..self.len])
    }

    fn contents(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// One `klogctl` call: `buf` is written to (its length is passed), the result is a length.
fn klogctl(action: libc::c_int, buf: &mut [u8], name: &'static str) -> Result<usize, KlogError> {
    let len = libc::c_int::try_from(buf.len()).unwrap_or(libc::c_int::MAX);
    loop {
        // `klogctl` has no safe wrapper in libc or nix; it is the one way to read the kernel
        // log without `/dev/kmsg`, which a container's device cgroup may refuse.
        #[allow(unsafe_code)]
        // SAFETY: `buf` is a live, exclusively borrowed buffer of at least `len` bytes for the
        // whole call; the kernel writes at most `len` bytes into it (none for actions that do
        // not read, which ignore the pointer), and keeps no reference after returning.
        let n = unsafe { libc::klogctl(action, buf.as_mut_ptr().cast::<libc::c_char>(), len) };
        if let Ok(n) = usize::try_from(n) {
            // Actions that read return at most `len`; the size query returns a size.
            return Ok(if buf.is_empty() { n } else { n.min(buf.len()) });
        }
        let source = io::Error::last_os_error();
        if source.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        let hint = match source.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => {
                " (reading the kernel log needs CAP_SYSLOG while kernel.dmesg_restrict=1, \
                 and a seccomp profile that allows syslog(2))"
            }
            Some(libc::ENOSYS) => " (the kernel or a seccomp profile does not allow syslog(2))",
            _ => "",
        };
        return Err(KlogError::Call {
            action: name,
            source,
            hint,
        });
    }
}

#[cfg(test)]
#[path = "syslog_tests.rs"]
mod tests;
