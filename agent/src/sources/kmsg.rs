//! The kernel log source: reads `<host-root>/dev/kmsg`, or the same log through `syslog(2)`
//! when the device cannot be opened (see [`syslog`]), assembles the OOM killer's reports and
//! sends one event per killed process, and periodically a checkpoint (boot id and sequence
//! number, and the timestamp cursor) that the engine records once the findings before it are
//! written.
//!
//! - `kmsg.reader: auto` (the default) reads the device, and falls back to `syslog(2)`, polled
//!   every `kmsg.poll_interval`, when opening the device is refused (`EPERM`, `EACCES`: a
//!   container's device cgroup refuses `/dev/kmsg` even with `CAP_SYSLOG`) or it is missing.
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
pub mod syslog;
pub mod victim;

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
use self::syslog::{Klog, KlogError, ScanError, UsecCursor};
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
    /// How the log is read: `/dev/kmsg`, `syslog(2)`, or the device and else `syslog(2)`.
    pub reader: KmsgReader,
    /// How often the `syslog(2)` reader looks for new records (the device wakes the agent).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

impl Default for KmsgConfig {
    fn default() -> Self {
        KmsgConfig {
            enabled: true,
            max_records_per_second: 20_000,
            reader: KmsgReader::Auto,
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// How the kernel log is read (`kmsg.reader`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KmsgReader {
    /// `/dev/kmsg`, and `syslog(2)` when the device is refused or missing.
    #[default]
    Auto,
    /// `/dev/kmsg` only.
    Device,
    /// `syslog(2)` only, polled every `poll_interval`.
    Syslog,
}

/// Where reading the kernel log got to: every record up to `seq` of boot `boot_id` is handled.
///
/// Positions written before the timestamp cursor existed hold only `boot_id` and `seq`, and
/// still load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmsgPosition {
    /// The kernel's boot id (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: String,
    /// The last sequence number handled: the kernel's, or, when `syslog` is set, the
    /// `syslog(2)` reader's own count, which means nothing to the device reader.
    pub seq: u64,
    /// Written by the `syslog(2)` reader: `seq` is not the kernel's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub syslog: bool,
    /// The same position by timestamp, which both readers understand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usec: Option<UsecCursor>,
}

/// Why the kernel log cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum KmsgError {
    /// Opening or reading the device failed.
    #[error("cannot read {}: {source}", path.display())]
    Device {
        /// The device's path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `syslog(2)` failed.
    #[error("cannot read the kernel log through syslog(2): {source}; {}", tried_text(path, device_error.as_deref()))]
    Syslog {
        /// The device tried first (or not tried, when `kmsg.reader` is `syslog`).
        path: PathBuf,
        /// Why the device could not be used, when it was tried.
        device_error: Option<String>,
        /// The error.
        source: KlogError,
    },
    /// The log read through `syslog(2)` cannot be followed.
    #[error("{source}; {}", tried_text(path, device_error.as_deref()))]
    Unfollowable {
        /// The device tried first (or not tried, when `kmsg.reader` is `syslog`).
        path: PathBuf,
        /// Why the device could not be used, when it was tried.
        device_error: Option<String>,
        /// Why the log cannot be followed.
        source: ScanError,
    },
}

fn tried_text(path: &Path, device_error: Option<&str>) -> String {
    match device_error {
        Some(e) => format!("{} could not be used either: {e}", path.display()),
        None => format!("{} was not tried (kmsg.reader: syslog)", path.display()),
    }
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
    /// OOM kills whose report did not name the victim's memory cgroup, placed by reading
    /// `/proc/<pid>/cgroup` while the victim was still there.
    pub victims_from_procfs: AtomicU64,
}

/// The largest record read; the kernel's own limit is 8 KiB with its dictionary.
const MAX_RECORD: usize = 16 * 1024;
/// How often a checkpoint is sent when reading advanced.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// How long after a nudged poll of `syslog(2)` the second one comes.
const NUDGE_AGAIN: Duration = Duration::from_millis(100);
/// At most this many reads per wake-up, so that stopping and checkpoints are not starved.
const READS_PER_WAKEUP: usize = 256;

/// Where to start reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// At the end of the buffer: only new records.
    End,
    /// At the beginning, skipping records up to and including this sequence number; with the
    /// same position by timestamp, when it was recorded (the `syslog(2)` reader goes by it).
    After(u64, Option<UsecCursor>),
    /// At the beginning, skipping records up to and including this cursor (a position the
    /// `syslog(2)` reader wrote, or one without a kernel sequence number).
    AfterUsec(UsecCursor),
    /// At the beginning of the buffer.
    Beginning,
}

/// Records already handled, skipped when read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    /// Up to and including this kernel sequence number.
    Seq(u64),
    /// Up to and including this timestamp cursor.
    Usec(UsecCursor),
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
    host_root: PathBuf,
    boot_id: String,
    config: KmsgConfig,
    start: Start,
    stats: Arc<KmsgStats>,
    fs_nudge: Option<Arc<tokio::sync::Notify>>,
    poll_nudge: Arc<tokio::sync::Notify>,
    oom_nudge: Option<Arc<tokio::sync::Notify>>,
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
            Some(p) if !boot_id.is_empty() && p.boot_id == boot_id => {
                match p.usec {
                    Some(usec) if p.syslog => Start::AfterUsec(usec),
                    // The syslog(2) reader's own count, before it had read a timestamp: nothing
                    // before that position was handled.
                    None if p.syslog => Start::Beginning,
                    usec => Start::After(p.seq, usec),
                }
            }
            Some(_) => Start::Beginning,
            None => Start::End,
        };
        KmsgSource {
            path: host_root.join("dev/kmsg"),
            host_root: host_root.to_owned(),
            boot_id,
            config,
            start,
            stats: Arc::default(),
            fs_nudge: None,
            poll_nudge: Arc::default(),
            oom_nudge: None,
        }
    }

    /// Reads the kernel log at once whenever `nudge` is notified (containerd reported an
    /// OOM), instead of at the next `poll_interval`: `syslog(2)` is polled, and slowly, since
    /// every poll costs the kernel a pass over its whole buffer. The device reader is woken by
    /// the kernel itself and ignores it.
    pub fn with_poll_nudge(mut self, nudge: Arc<tokio::sync::Notify>) -> Self {
        self.poll_nudge = nudge;
        self
    }

    /// Wakes `nudge` whenever the kernel reports an OOM kill: the memory sampler then reads the
    /// cgroups' kill counters before a dying container's cgroup is gone (a kill whose report
    /// names no cgroup is placed by them, and containerd may publish no `TaskOOM` for a
    /// container it is stopping).
    pub fn with_oom_nudge(mut self, nudge: Arc<tokio::sync::Notify>) -> Self {
        self.oom_nudge = Some(nudge);
        self
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
        let mut reader = self.reader(tx);
        let mut start = self.start;
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut failures = 0u32;
        let mut told_fallback = false;
        loop {
            let result = self
                .read_once(&mut reader, start, &stop, &mut told_fallback)
                .await;
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
                            %error,
                            "cannot read the kernel log; OOM kills are seen only through containerd and CRI until it can be read"
                        );
                    } else {
                        tracing::debug!(%error, "kernel log still unreadable");
                    }
                    backoff.next_delay()
                }
            };
            // Reopen where reading got to.
            start = reader.resume_start().unwrap_or(start);
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
        reader.checkpoint().await;
    }

    /// The state kept across reopenings of the log, starting where the source starts.
    fn reader(&self, tx: mpsc::Sender<SourceEvent>) -> Reader {
        Reader {
            boot_id: self.boot_id.clone(),
            stats: Arc::clone(&self.stats),
            splitter: Splitter::new(MAX_RECORD),
            asm: Assembler::default(),
            skip: match self.start {
                Start::After(seq, _) => Some(Skip::Seq(seq)),
                Start::AfterUsec(cursor) => Some(Skip::Usec(cursor)),
                Start::End | Start::Beginning => None,
            },
            last_seq: None,
            sent_seq: None,
            cursor: None,
            report_cursor: None,
            syslog_seq: 0,
            mode: None,
            limit: RateLimit::new(self.config.max_records_per_second),
            tx,
            fs_nudge: self.fs_nudge.clone(),
            oom_nudge: self.oom_nudge.clone(),
            victims: victim::VictimLookup::new(&self.host_root),
        }
    }

    /// Reads the log once through the configured reader, until it closes, fails or `stop`.
    async fn read_once(
        &self,
        reader: &mut Reader,
        start: Start,
        stop: &CancellationToken,
        told_fallback: &mut bool,
    ) -> Result<Closed, KmsgError> {
        let path = &self.path;
        let device_error = match self.config.reader {
            KmsgReader::Syslog => None,
            KmsgReader::Device | KmsgReader::Auto => match open(path, start) {
                Ok(file) => {
                    tracing::info!(path = %path.display(), from = ?start, "reading the kernel log");
                    reader.enter(Mode::Device);
                    return reader.read(file, stop).await.map_err(|source| KmsgError::Device {
                        path: path.clone(),
                        source,
                    });
                }
                Err(source) if self.config.reader == KmsgReader::Auto && falls_back(&source) => {
                    Some(source.to_string())
                }
                Err(source) => {
                    return Err(KmsgError::Device {
                        path: path.clone(),
                        source,
                    })
                }
            },
        };
        let klog = Klog::open().map_err(|source| KmsgError::Syslog {
            path: path.clone(),
            device_error: device_error.clone(),
            source,
        })?;
        let poll = humantime::format_duration(self.config.poll_interval);
        match &device_error {
            Some(error) if !*told_fallback => {
                *told_fallback = true;
                tracing::info!(
                    path = %path.display(), %error, poll_interval = %poll,
                    "cannot open the kernel log device (a container's device cgroup refuses it unless privileged); reading the kernel log through syslog(2) every poll_interval instead"
                );
            }
            _ => {
                tracing::info!(poll_interval = %poll, from = ?start, "reading the kernel log through syslog(2)")
            }
        }
        reader.enter(Mode::Syslog);
        reader
            .follow(klog, start, self.config.poll_interval, &self.poll_nudge, stop)
            .await
            .map_err(|error| match error {
                FollowError::Klog(source) => KmsgError::Syslog {
                    path: path.clone(),
                    device_error,
                    source,
                },
                FollowError::Scan(source) => KmsgError::Unfollowable {
                    path: path.clone(),
                    device_error,
                    source,
                },
            })
    }
}

/// Whether `auto` reads through `syslog(2)` after this error opening the device: refused (a
/// device cgroup, no capability) or missing.
fn falls_back(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(nix::libc::EPERM | nix::libc::EACCES | nix::libc::ENOENT)
    )
}

fn open(path: &Path, start: Start) -> std::io::Result<File> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)?;
    match start {
        Start::End => file.seek(SeekFrom::End(0))?,
        Start::After(..) | Start::AfterUsec(_) | Start::Beginning => file.seek(SeekFrom::Start(0))?,
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

/// Which reader is reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Device,
    Syslog,
}

/// Why following the log through `syslog(2)` stopped.
enum FollowError {
    Klog(KlogError),
    Scan(ScanError),
}

/// State kept across reopenings of the log.
struct Reader {
    boot_id: String,
    stats: Arc<KmsgStats>,
    splitter: Splitter,
    asm: Assembler,
    /// Records handled already.
    skip: Option<Skip>,
    last_seq: Option<u64>,
    sent_seq: Option<u64>,
    /// The timestamp cursor after the last record read.
    cursor: Option<UsecCursor>,
    /// The cursor just before the OOM report in progress.
    report_cursor: Option<UsecCursor>,
    /// The sequence numbers given to records read through `syslog(2)`.
    syslog_seq: u64,
    mode: Option<Mode>,
    limit: RateLimit,
    tx: mpsc::Sender<SourceEvent>,
    /// Woken when the kernel reports a filesystem error (the host mount table is read again).
    fs_nudge: Option<Arc<tokio::sync::Notify>>,
    /// Woken when the kernel reports an OOM kill (the memory sampler reads the counters).
    oom_nudge: Option<Arc<tokio::sync::Notify>>,
    /// Places kills whose report did not name the victim's cgroup.
    victims: victim::VictimLookup,
}

impl Reader {
    /// Switches to `mode`; sequence numbers of the other reader mean nothing to it.
    fn enter(&mut self, mode: Mode) {
        if self.mode.is_some_and(|m| m != mode) {
            self.last_seq = None;
            self.sent_seq = None;
            self.asm = Assembler::default();
        }
        if mode == Mode::Device {
            // Counted again from the records read.
            self.cursor = None;
        }
        self.mode = Some(mode);
    }

    /// Where to reopen the log: after the last record read.
    fn resume_start(&mut self) -> Option<Start> {
        match (self.mode, self.last_seq, self.cursor) {
            (Some(Mode::Device), Some(seq), _) => {
                self.skip = Some(Skip::Seq(seq));
                Some(Start::After(seq, self.cursor))
            }
            (_, _, Some(cursor)) => {
                self.skip = Some(Skip::Usec(cursor));
                Some(Start::AfterUsec(cursor))
            }
            _ => None,
        }
    }

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

    /// Follows the log through `syslog(2)`, polling every `poll` and when `nudge` is notified,
    /// until a read fails or `stop`.
    async fn follow(
        &mut self,
        mut klog: impl syslog::ReadAll,
        start: Start,
        poll: Duration,
        nudge: &tokio::sync::Notify,
        stop: &CancellationToken,
    ) -> Result<Closed, FollowError> {
        let at_end = match start {
            Start::End => self.cursor.is_none(),
            Start::After(_, resume) if self.cursor.is_none() => {
                self.cursor = resume;
                if resume.is_none() {
                    tracing::info!(
                        "the recorded kernel log position has no timestamp (an older podmortem wrote it); syslog(2) reading starts at the end of the buffer"
                    );
                }
                resume.is_none()
            }
            Start::AfterUsec(cursor) => {
                self.cursor = self.cursor.or(Some(cursor));
                false
            }
            Start::After(..) | Start::Beginning => false,
        };
        if at_end {
            // `Klog::open` read the buffer once: what is there was logged before.
            self.cursor = syslog::end_cursor(klog.contents());
            syslog::scan(klog.contents(), self.cursor).map_err(FollowError::Scan)?;
        }
        if matches!(self.skip, Some(Skip::Seq(_))) {
            // A sequence number of /dev/kmsg means nothing to this reader's own count: the
            // cursor says where to go on from.
            self.skip = self.cursor.map(Skip::Usec);
        }
        let mut checkpoints = tokio::time::interval(CHECKPOINT_EVERY);
        checkpoints.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut polls = tokio::time::interval(poll);
        polls.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // After a nudge, a second poll a little later: on cgroup v1 containerd hears of a
        // memory cgroup's OOM before the kernel has printed all of its report. Nudges that come
        // meanwhile wait for it, so a storm of OOMs polls at most twice per NUDGE_AGAIN.
        let mut again: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => return Ok(Closed::Stopped),
                _ = checkpoints.tick() => {
                    self.checkpoint().await;
                    continue;
                }
                _ = polls.tick() => {}
                () = nudge.notified(), if again.is_none() => {
                    polls.reset();
                    again = Some(tokio::time::Instant::now() + NUDGE_AGAIN);
                }
                () = tokio::time::sleep_until(again.unwrap_or_else(tokio::time::Instant::now)), if again.is_some() => {
                    again = None;
                }
            }
            if !self.poll(&mut klog, stop).await? {
                return Ok(Closed::Stopped);
            }
        }
    }

    /// Reads the buffer once and handles the records after the cursor. `false` when stopping
    /// or the engine is gone.
    async fn poll(
        &mut self,
        klog: &mut impl syslog::ReadAll,
        stop: &CancellationToken,
    ) -> Result<bool, FollowError> {
        let buf = klog.read_all().map_err(FollowError::Klog)?;
        let scan = syslog::scan(buf, self.cursor).map_err(FollowError::Scan)?;
        if scan.complete_end < buf.len() {
            self.malformed(&syslog::LineError::Truncated);
        }
        if scan.lost > 0 {
            let total = self.stats.lost.fetch_add(scan.lost, Ordering::Relaxed) + scan.lost;
            tracing::warn!(
                lost = scan.lost,
                total,
                "kernel log records were overwritten before podmortem read them (estimated)"
            );
        }
        let mut lines = Vec::new();
        syslog::new_lines(buf, &scan, self.cursor, |line| lines.push(line));
        for chunk in lines.chunks(READS_PER_WAKEUP) {
            let mut events = Vec::new();
            for line in chunk {
                self.stats.records.fetch_add(1, Ordering::Relaxed);
                match line {
                    Ok(line) => {
                        self.syslog_seq += 1;
                        self.handle_parsed(self.syslog_seq, line.usec, line.facility, line.text, &mut events);
                    }
                    Err(error) => self.malformed(error),
                }
            }
            if !self.deliver(events, chunk.len(), stop).await {
                return Ok(false);
            }
        }
        Ok(true)
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
        self.deliver(events, count, stop).await
    }

    /// Sends `events` found in `count` records; pauses when over the rate. `false` when
    /// stopping or the engine is gone.
    async fn deliver(&mut self, events: Vec<KmsgEvent>, count: usize, stop: &CancellationToken) -> bool {
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

    /// Counts a record that could not be parsed.
    fn malformed(&self, error: &dyn std::fmt::Display) {
        let n = self.stats.malformed.fetch_add(1, Ordering::Relaxed);
        if n.is_power_of_two() || n == 0 {
            tracing::warn!(%error, malformed = n + 1, "skipping malformed kernel log records");
        }
    }

    fn handle_record(&mut self, raw: &[u8], events: &mut Vec<KmsgEvent>) {
        self.stats.records.fetch_add(1, Ordering::Relaxed);
        match parse_record(raw) {
            Ok(r) => self.handle_parsed(r.seq, r.usec, r.facility, r.text, events),
            Err(error) => self.malformed(&error),
        }
    }

    /// Handles one parsed record, from either reader.
    fn handle_parsed(&mut self, seq: u64, usec: u64, facility: u32, text: &str, events: &mut Vec<KmsgEvent>) {
        let before = self.cursor;
        let cursor = UsecCursor::advance(before, usec);
        self.cursor = Some(cursor);
        let skip_seq = match self.skip {
            Some(Skip::Seq(s)) if seq <= s => return,
            Some(Skip::Usec(c)) if cursor <= c => return,
            Some(Skip::Seq(s)) => Some(s),
            Some(Skip::Usec(_)) | None => None,
        };
        let expected = self.last_seq.or(skip_seq).map(|s| s + 1);
        if let Some(expected) = expected.filter(|e| seq > *e) {
            let lost = seq - expected;
            let total = self.stats.lost.fetch_add(lost, Ordering::Relaxed) + lost;
            tracing::warn!(
                lost,
                total,
                "kernel log records were overwritten before podmortem read them"
            );
        }
        if self.last_seq.is_some_and(|s| seq < s) {
            // The sequence went back: a saved log read again, or a new buffer.
            self.asm = Assembler::default();
        }
        self.last_seq = Some(seq);
        self.skip = None;
        if facility != 0 {
            return;
        }
        let abandoned = self.asm.abandoned;
        let was_open = self.asm.open_since();
        let kill = self.asm.feed(seq, usec, text);
        if self
            .asm
            .open_since()
            .is_some_and(|first| first == seq && was_open != Some(seq))
        {
            self.report_cursor = before;
        }
        self.stats
            .abandoned_reports
            .fetch_add(self.asm.abandoned - abandoned, Ordering::Relaxed);
        if let Some(error) = fs_error::parse_line(text) {
            self.stats.fs_errors.fetch_add(1, Ordering::Relaxed);
            if let Some(nudge) = &self.fs_nudge {
                nudge.notify_one();
            }
            events.push(KmsgEvent::FsError {
                error: Box::new(error),
                line: crate::text::cut(text, 1024).to_owned(),
                at: wall_clock(usec),
            });
        }
        if let Some(mut kill) = kill {
            self.stats.oom_kills.fetch_add(1, Ordering::Relaxed);
            kill.before = if kill.first_seq == seq {
                before
            } else {
                self.report_cursor
            };
            if self.victims.fill(&mut kill, age(usec)) {
                self.stats.victims_from_procfs.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(nudge) = &self.oom_nudge {
                nudge.notify_one();
            }
            events.push(KmsgEvent::OomKill {
                kill: Box::new(kill),
                at: wall_clock(usec),
            });
        }
    }

    /// Sends a checkpoint if reading advanced: everything before the report in progress.
    async fn checkpoint(&mut self) {
        let Some(last) = self.last_seq else { return };
        let (safe, usec) = match self.asm.open_since() {
            Some(first) => (first.saturating_sub(1).min(last), self.report_cursor),
            None => (last, self.cursor),
        };
        if self.sent_seq.is_some_and(|s| s >= safe) || self.boot_id.is_empty() {
            return;
        }
        self.sent_seq = Some(safe);
        let position = KmsgPosition {
            boot_id: self.boot_id.clone(),
            seq: safe,
            syslog: self.mode == Some(Mode::Syslog),
            usec,
        };
        // The engine being gone means podmortem is stopping; nothing to do then.
        let _ = self
            .tx
            .send(SourceEvent::Kmsg(KmsgEvent::Checkpoint(position)))
            .await;
    }
}

/// How long ago a kernel timestamp (microseconds since boot) was, on the monotonic clock; a
/// timestamp ahead of it (the two clocks drift apart slowly) is now.
fn age(usec: u64) -> Option<Duration> {
    let now = crate::sources::clock_now(nix::time::ClockId::CLOCK_MONOTONIC)?;
    Some(now.saturating_sub(Duration::from_micros(usec)))
}

/// Converts a kernel timestamp (microseconds since boot, on the monotonic clock) to wall time.
pub fn wall_clock(usec: u64) -> Option<SystemTime> {
    crate::sources::wall_clock_of(nix::time::ClockId::CLOCK_MONOTONIC, Duration::from_micros(usec))
}

#[cfg(test)]
#[path = "kmsg_tests.rs"]
mod tests;
