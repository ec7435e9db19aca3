//! Container logs: the tail of one attempt's CRI log file, read when the container exits.
//!
//! The file is the one CRI names (`/var/log/pods/<ns>_<pod>_<uid>/<container>/<attempt>.log`),
//! in the format of [`record`]. Only a bounded window at its end is read, so a huge file (or a
//! huge line) costs no more than a small one. Kubelet rotates the file by renaming it to
//! `<name>.<YYYYMMDD-HHMMSS>` (and later compresses older ones to `.gz`), after which the runtime
//! writes a new, empty one: when the current file holds too little, the newest uncompressed
//! rotated file supplies the lines before it.
//!
//! All of it is synchronous `std::fs`: callers run it on a blocking thread.

pub mod erofs;
pub mod exec_failure;
pub mod record;

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use record::Assembler;

/// At most this many directory entries are looked at when searching for a rotated file.
const MAX_DIR_ENTRIES: usize = 4096;

/// How much of a log file to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailConfig {
    /// Bytes read from the end of the file(s), in all.
    pub max_bytes: u64,
    /// Lines kept: the last ones.
    pub max_lines: usize,
    /// Longer lines are cut to this many bytes (on a character boundary).
    pub max_line_bytes: usize,
}

impl Default for TailConfig {
    fn default() -> Self {
        TailConfig {
            max_bytes: 64 * 1024,
            max_lines: 50,
            max_line_bytes: 4096,
        }
    }
}

/// The stream a line was written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Standard output.
    Stdout = 0,
    /// Standard error.
    Stderr = 1,
}

impl Stream {
    /// `stdout` or `stderr`, as in the log file.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One line a container wrote, joined from its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When its first record was read by the runtime; `None` when the timestamp did not parse.
    pub at: Option<SystemTime>,
    /// Where it was written.
    pub stream: Stream,
    /// The text, without the newline; bytes that are not UTF-8 are replaced by U+FFFD.
    pub text: String,
    /// Whether the text was cut to `max_line_bytes`.
    pub truncated: bool,
}

/// The end of a container's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogTail {
    /// The file asked for.
    pub path: PathBuf,
    /// The last lines, oldest first. The first may be the end of a longer line that began before
    /// the window read; a line whose `F` record never came (the container died mid-line) is
    /// last.
    pub lines: Vec<LogLine>,
    /// Records in the window that were not CRI log records, skipped.
    pub malformed: u64,
    /// The rotated file whose tail was read before the current file's (or instead of it, when
    /// the current file is missing).
    pub rotated_from: Option<PathBuf>,
}

/// What can go wrong reading a log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file could not be read (or does not exist).
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl LogError {
    /// True when the file does not exist (and no rotated file replaces it).
    pub fn is_not_found(&self) -> bool {
        match self {
            LogError::Read { source, .. } => source.kind() == io::ErrorKind::NotFound,
        }
    }
}

/// Reads the last lines of the log file at `path`, within the limits of `config`.
///
/// When the file's window holds fewer than `max_lines` complete lines and does not use all of
/// `max_bytes`, the tail of the newest uncompressed rotated file (`<name>.<digits>-<digits>`)
/// is read too, in the bytes left, and its lines come first. When the file is missing, the
/// rotated file is read instead; when neither exists, the error
/// [`is_not_found`](LogError::is_not_found).
pub fn read_tail(path: &Path, config: &TailConfig) -> Result<LogTail, LogError> {
    let read_error = |path: &Path, source| LogError::Read {
        path: path.to_path_buf(),
        source,
    };
    let (current, missing) = match read_window(path, config.max_bytes) {
        Ok(window) => (Some(window), None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => (None, Some(e)),
        Err(source) => return Err(read_error(path, source)),
    };
    let mut assembler = Assembler::new(config);
    let mut budget = config.max_bytes;
    if let Some(window) = &current {
        assembler.feed_window(&window.bytes, window.cut);
        budget = budget.saturating_sub(window.len());
        if assembler.complete_lines() >= config.max_lines || budget == 0 {
            return Ok(tail(path, assembler, None));
        }
    }
    let rotated = newest_rotated(path).and_then(|rotated| match read_window(&rotated, budget) {
        Ok(window) => Some(Ok((rotated, window))),
        Err(_) if current.is_some() => None, // best effort: the current file was read
        Err(source) => Some(Err(read_error(&rotated, source))),
    });
    match (rotated.transpose()?, current, missing) {
        (Some((rotated, older)), current, _) => {
            let mut assembler = Assembler::new(config);
            assembler.feed_window(&older.bytes, older.cut);
            if let Some(window) = current {
                assembler.feed_window(&window.bytes, window.cut);
            }
            Ok(tail(path, assembler, Some(rotated)))
        }
        (None, Some(_), _) => Ok(tail(path, assembler, None)),
        (None, None, missing) => Err(read_error(
            path,
            missing.unwrap_or_else(|| io::Error::from(io::ErrorKind::NotFound)),
        )),
    }
}

fn tail(path: &Path, assembler: Assembler, rotated_from: Option<PathBuf>) -> LogTail {
    let malformed = assembler.malformed();
    LogTail {
        path: path.to_path_buf(),
        lines: assembler.finish(),
        malformed,
        rotated_from,
    }
}

/// The bytes at the end of a file.
#[derive(Debug)]
struct Window {
    bytes: Vec<u8>,
    /// Whether it starts after the file's start.
    cut: bool,
}

impl Window {
    fn len(&self) -> u64 {
        u64::try_from(self.bytes.len()).unwrap_or(u64::MAX)
    }
}

/// Reads at most `max_bytes` from the end of a regular file.
fn read_window(path: &Path, max_bytes: u64) -> io::Result<Window> {
    if !fs::metadata(path)?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(max_bytes);
    if start > 0 {
        file.seek(SeekFrom::Start(start))?;
    }
    let expected = usize::try_from((len - start).min(max_bytes)).unwrap_or(0);
    let mut bytes = Vec::with_capacity(expected);
    file.take(max_bytes).read_to_end(&mut bytes)?;
    Ok(Window {
        bytes,
        cut: start > 0,
    })
}

/// The newest rotated file next to `path`: `<name>.<digits>-<digits>`, as kubelet names them
/// (`0.log.20261123-101010`); compressed (`.gz`) and temporary files do not match.
fn newest_rotated(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::read_dir(dir)
        .ok()?
        .take(MAX_DIR_ENTRIES)
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let file_name = entry.file_name();
            let stamp = rotation_stamp(file_name.to_str()?.strip_prefix(name)?.strip_prefix('.')?)?;
            Some((stamp, entry.path()))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, path)| path)
}

/// `YYYYMMDD-HHMMSS` (any non-empty digits on both sides) as a sortable pair.
fn rotation_stamp(suffix: &str) -> Option<(u64, u64)> {
    let (date, time) = suffix.split_once('-')?;
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    Some((number(date)?, number(time)?))
}

#[cfg(test)]
mod tests;
