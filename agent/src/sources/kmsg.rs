//! The kernel log source: reads `<host-root>/dev/kmsg`, assembles the OOM killer's reports and
//! sends one event per killed process, and periodically a checkpoint (boot id and sequence
//! number) that the engine records once the findings before it are written.
//!
//! - First start: reads from the end of the buffer (what is already there was logged before
//!   podmortem watched). Restart on the same boot: resumes after the last record handled. A new
//!   boot: reads the whole buffer, since none of it was handled.
//! - Records overwritten before they were read (`EPIPE`, or a gap in sequence numbers) are
//!   counted and reading carries on. The device is reopened if it closes or fails.
//! - Reading is rate-limited: a flood of kernel messages costs at most
//!   `max_records_per_second` records' work; what the kernel overwrites meanwhile is counted.
//! - Only kernel records (facility 0) count: text written to `/dev/kmsg` from user space, or
//!   printed by a container, never makes a finding.

pub mod fs_error;
pub mod oom;
pub mod record;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::oom::{Assembler, OomKill};
use self::record::{parse_record, Splitter};
use crate::backoff::Backoff;
use crate::sources::SourceEvent;

/// Settings of the kernel log source (`kmsg:` in the config file).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KmsgConfig {
    /// Read the kernel log. Without it, OOM kills are seen only through containerd and CRI
    /// (no victim details, no kills of child processes, no node-wide OOM).
    pub enabled: bool,
    /// At most this many records are read per second; a flood beyond it is skipped (and
    /// counted) rather than allowed to take the agent's CPU.
    pub max_records_per_second: u32,
}

impl Default for KmsgConfig {
    fn default() -> Self {
        KmsgConfig {
            enabled: true,
            max_records_per_second: 20_000,
        }
    }
}

/// Where reading the kernel log got to: every record up to `seq` of boot `boot_id` is handled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmsgPosition {
    /// The kernel's boot id (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: String,
    /// The last sequence number handled.
    pub seq: u64,
}

/// What the kernel log source tells the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum KmsgEvent {
    /// The OOM killer killed a process.
    OomKill {
        /// The kill and its report.
        kill: Box<OomKill>,
        /// When it was logged, on the wall clock.
        at: Option<SystemTime>,
    },
    /// The kernel reported a filesystem or block device error.
    FsError {
        /// What it said, parsed.
        error: Box<fs_error::FsError>,
        /// The kernel's line (cut to 1 KiB).
        line: String,
        /// When it was logged, on the wall clock.
        at: Option<SystemTime>,
    },
    /// Every record up to this position has been sent.
    Checkpoint(KmsgPosition),
}

/// Counters of what the source read and skipped.
#[derive(Debug, Default)]
pub struct KmsgStats {
    /// Records read.
    pub records: AtomicU64,
    /// Records that could not be parsed (skipped).
    pub malformed: AtomicU64,
    /// Records longer than the read buffer (skipped).
    pub oversized: AtomicU64,
    /// Records the kernel overwrote before they were read.
    pub lost: AtomicU64,
    /// OOM kills reported.
    pub oom_kills: AtomicU64,
    /// OOM reports that ended without a kill, or were cut short.
    pub abandoned_reports: AtomicU64,
    /// Filesystem and block device errors reported.
    pub fs_errors: AtomicU64,
}

/// The largest record read; the kernel's own limit is 8 KiB with its dictionary.
const MAX_RECORD: usize = 16 * 1024;
/// How often a checkpoint is sent when reading advanced.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// At most this many reads per wake-up, so that stopping and checkpoints are not starved.
const READS_PER_WAKEUP: usize = 256;

/// Where to start reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// At the end of the buffer: only new records.
    End,
    /// At the beginning, skipping records up to and including this sequence number.
    After(u64),
    /// At the beginning of the buffer.
    Beginning,
}

/// How a read of the log ended.
enum Closed {
    Stopped,
    Eof,
}

/// The kernel log source task.
#[derive(Debug)]
pub struct KmsgSource {
    path: PathBuf,
    boot_id: String,
    config: KmsgConfig,
    start: Start,
    stats: Arc<KmsgStats>,
    fs_nudge: Option<Arc<tokio::sync::Notify>>,
}

impl KmsgSource {
    /// A source reading `<host_root>/dev/kmsg`, resuming after `resume` if it was recorded on
    /// the current boot.
    pub fn new(host_root: &Path, config: KmsgConfig, resume: Option<KmsgPosition>) -> Self {
        let boot_id = crate::sources::procfs::boot_id(host_root).unwrap_or_else(|error| {
            tracing::warn!(%error, "cannot read the boot id; kernel log position will not be resumed");
            String::new()
        });
        let start = match resume {
            Some(p) if !boot_id.is_empty() && p.boot_id == boot_id => Start::After(p.seq),
            Some(_) => Start::Beginning,
            None => Start::End,
        };
        KmsgSource {
            path: host_root.join("dev/kmsg"),
            boot_id,
            config,
            start,
            stats: Arc::default(),
            fs_nudge: None,
        }
    }

    /// Wakes `nudge` whenever the kernel reports a filesystem error.
    pub fn with_fs_nudge(mut self, nudge: Arc<tokio::sync::Notify>) -> Self {
        self.fs_nudge = Some(nudge);
        self
    }

    /// The source's counters.
    pub fn stats(&self) -> Arc<KmsgStats> {
        Arc::clone(&self.stats)
    }

    /// Runs until `stop`.
    pub async fn run(self, tx: mpsc::Sender<SourceEvent>, stop: CancellationToken) {
        if !self.config.enabled {
            tracing::info!("kernel log disabled; OOM kills are seen only through containerd and CRI");
            stop.cancelled().await;
            return;
        }
        let mut reader = Reader {
            boot_id: self.boot_id,
            stats: self.stats,
            splitter: Splitter::new(MAX_RECORD),
            asm: Assembler::default(),
            skip_through: match self.start {
                Start::After(seq) => Some(seq),
                _ => None,
            },
            last_seq: None,
            sent_seq: None,
            limit: RateLimit::new(self.config.max_records_per_second),
            tx,
            fs_nudge: self.fs_nudge,
        };
        let mut start = self.start;
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut failures = 0u32;
        loop {
            let result = match open(&self.path, start) {
                Ok(file) => {
                    tracing::info!(path = %self.path.display(), from = ?start, "reading the kernel log");
                    reader.read(file, &stop).await
                }
                Err(error) => Err(error),
            };
            let wait = match result {
                Ok(Closed::Stopped) => break,
                Ok(Closed::Eof) => {
                    backoff.reset();
                    Duration::from_secs(1)
                }
                Err(error) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::error!(
                            path = %self.path.display(), %error,
                            "cannot read the kernel log; OOM kills are seen only through containerd and CRI until it can be read (needs root, or CAP_SYSLOG, and the host's /dev mounted)"
                        );
                    } else {
                        tracing::debug!(path = %self.path.display(), %error, "kernel log still unreadable");
                    }
                    backoff.next_delay()
                }
            };
            // Reopen where reading got to.
            start = match reader.last_seq {
                Some(seq) => {
                    reader.skip_through = Some(seq);
                    Start::After(seq)
                }
                None => start,
            };
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
        reader.checkpoint().await;
    }
}

fn open(path: &Path, start: Start) -> std::io::Result<File> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)?;
    match start {
        Start::End => file.seek(SeekFrom::End(0))?,
        Start::After(_) | Start::Beginning => file.seek(SeekFrom::Start(0))?,
    };
    Ok(file)
}

/// A token bucket over records, refilled at `rate` per second, holding at most one second's.
#[derive(Debug)]
struct RateLimit {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        RateLimit {
            rate,
            tokens: rate,
            last: Instant::now(),
        }
    }

    /// Takes `n` tokens; returns how long to pause when the bucket runs dry.
    fn take(&mut self, n: usize) -> Option<Duration> {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate);
        self.last = now;
        self.tokens -= n as f64;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / self.rate))
    }
}

/// State kept across reopenings of the log.
struct Reader {
    boot_id: String,
    stats: Arc<KmsgStats>,
    splitter: Splitter,
    asm: Assembler,
    /// Records up to this sequence number were handled already.
    skip_through: Option<u64>,
    last_seq: Option<u64>,
    sent_seq: Option<u64>,
    limit: RateLimit,
    tx: mpsc::Sender<SourceEvent>,
    /// Woken when the kernel reports a filesystem error (the host mount table is read again).
    fs_nudge: Option<Arc<tokio::sync::Notify>>,
}

impl Reader {
    /// Reads one opened log until it closes, fails, or `stop`.
    async fn read(&mut self, file: File, stop: &CancellationToken) -> std::io::Result<Closed> {
        let is_device = file.metadata()?.file_type().is_char_device();
        let mut buf = vec![0u8; MAX_RECORD];
        let mut checkpoints = tokio::time::interval(CHECKPOINT_EVERY);
        checkpoints.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if !is_device {
            // A regular file (a saved log): read it through, then treat it as closed.
            let mut file = file;
            loop {
                if stop.is_cancelled() {
                    return Ok(Closed::Stopped);
                }
                let n = match file.read(&mut buf) {
                    Ok(0) => return Ok(Closed::Eof),
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                if !self.handle_chunk(&buf[..n], false, stop).await {
                    return Ok(Closed::Stopped);
                }
                self.checkpoint().await;
            }
        }
        // `File` owns its descriptor, which is what the newer (unsafe) `AsyncFd::register`
        // asks the caller to promise; `new` is deprecated only for types that do not.
        #[allow(deprecated)]
        let fd = AsyncFd::new(file)?;
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => return Ok(Closed::Stopped),
                _ = checkpoints.tick() => self.checkpoint().await,
                guard = fd.readable() => {
                    let mut guard = guard?;
                    for _ in 0..READS_PER_WAKEUP {
                        match guard.try_io(|inner| inner.get_ref().read(&mut buf)) {
                            Err(_would_block) => break,
                            Ok(Ok(0)) => return Ok(Closed::Eof),
                            Ok(Ok(n)) => {
                                if !self.handle_chunk(&buf[..n], true, stop).await {
                                    return Ok(Closed::Stopped);
                                }
                            }
                            // Records were overwritten before we read them; the gap in
                            // sequence numbers counts them.
                            Ok(Err(e)) if e.raw_os_error() == Some(nix::libc::EPIPE) => {}
                            Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Ok(Err(e)) => return Err(e),
                        }
                    }
                }
            }
        }
    }

    /// Handles the records in a chunk (exactly one when read from the device); pauses when
    /// over the rate. `false` when stopping or the engine is gone.
    async fn handle_chunk(&mut self, chunk: &[u8], one_record: bool, stop: &CancellationToken) -> bool {
        let mut events = Vec::new();
        let count = if one_record {
            self.handle_record(chunk, &mut events);
            1
        } else {
            let mut records = Vec::new();
            let oversized = self.splitter.feed(chunk, |r| records.push(r.to_vec()));
            self.stats.oversized.fetch_add(oversized, Ordering::Relaxed);
            for r in &records {
                self.handle_record(r, &mut events);
            }
            records.len()
        };
        for event in events {
            if self.tx.send(SourceEvent::Kmsg(event)).await.is_err() {
                return false;
            }
        }
        if let Some(pause) = self.limit.take(count) {
            tokio::select! {
                () = stop.cancelled() => return false,
                () = tokio::time::sleep(pause) => {}
            }
        }
        true
    }

    fn handle_record(&mut self, raw: &[u8], events: &mut Vec<KmsgEvent>) {
        self.stats.records.fetch_add(1, Ordering::Relaxed);
        let record = match parse_record(raw) {
            Ok(r) => r,
            Err(error) => {
                let n = self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                if n.is_power_of_two() || n == 0 {
                    tracing::warn!(%error, malformed = n + 1, "skipping malformed kernel log records");
                }
                return;
            }
        };
        if self.skip_through.is_some_and(|s| record.seq <= s) {
            return;
        }
        let expected = self.last_seq.or(self.skip_through).map(|s| s + 1);
        if let Some(expected) = expected.filter(|e| record.seq > *e) {
            let lost = record.seq - expected;
            let total = self.stats.lost.fetch_add(lost, Ordering::Relaxed) + lost;
            tracing::warn!(
                lost,
                total,
                "kernel log records were overwritten before podmortem read them"
            );
        }
        if self.last_seq.is_some_and(|s| record.seq < s) {
            // The sequence went back: a saved log read again, or a new buffer.
            self.asm = Assembler::default();
        }
        self.last_seq = Some(record.seq);
        self.skip_through = None;
        if record.facility != 0 {
            return;
        }
        let abandoned = self.asm.abandoned;
        let kill = self.asm.feed(record.seq, record.usec, record.text);
        self.stats
            .abandoned_reports
            .fetch_add(self.asm.abandoned - abandoned, Ordering::Relaxed);
        if let Some(error) = fs_error::parse_line(record.text) {
            self.stats.fs_errors.fetch_add(1, Ordering::Relaxed);
            if let Some(nudge) = &self.fs_nudge {
                nudge.notify_one();
            }
            events.push(KmsgEvent::FsError {
                error: Box::new(error),
                line: crate::text::cut(record.text, 1024).to_owned(),
                at: wall_clock(record.usec),
            });
        }
        if let Some(kill) = kill {
            self.stats.oom_kills.fetch_add(1, Ordering::Relaxed);
            let at = wall_clock(record.usec);
            events.push(KmsgEvent::OomKill {
                kill: Box::new(kill),
                at,
            });
        }
    }

    /// Sends a checkpoint if reading advanced: everything before the report in progress.
    async fn checkpoint(&mut self) {
        let Some(last) = self.last_seq else { return };
        let safe = match self.asm.open_since() {
            Some(first) => first.saturating_sub(1).min(last),
            None => last,
        };
        if self.sent_seq.is_some_and(|s| s >= safe) || self.boot_id.is_empty() {
            return;
        }
        self.sent_seq = Some(safe);
        let position = KmsgPosition {
            boot_id: self.boot_id.clone(),
            seq: safe,
        };
        // The engine being gone means podmortem is stopping; nothing to do then.
        let _ = self
            .tx
            .send(SourceEvent::Kmsg(KmsgEvent::Checkpoint(position)))
            .await;
    }
}

/// Converts a kernel timestamp (microseconds since boot, on the monotonic clock) to wall time.
pub fn wall_clock(usec: u64) -> Option<SystemTime> {
    crate::sources::wall_clock_of(nix::time::ClockId::CLOCK_MONOTONIC, Duration::from_micros(usec))
}

#[cfg(test)]
#[path = "kmsg_tests.rs"]
mod tests;
