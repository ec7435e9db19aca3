//! The read-only write tracer: an eBPF program on the syscall tracepoints of every write-intent
//! syscall reports each call that fails with `EROFS`, with the thread, the path it passed and
//! the memory cgroup it runs in (whose name carries the container id). This source reads those
//! reports from the ring buffer, looks up the covering mount in the process's own mount table
//! right away (while the process still exists, usually), and sends one [`ErofsEvent`] per new
//! (container, syscall, path); repeats within [`ErofsConfig::window`] are counted and sent as
//! one event with their count, so a container failing in a loop costs one event per window.
//!
//! When the kernel or the agent's privileges do not allow the tracer, the source says why once
//! and stays idle: read-only writes are then found from container logs only.

pub mod event;
pub mod syscalls;
pub mod tracer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::event::RawEvent;
use self::tracer::Tracer;
use crate::inventory::container_id_from_cgroup;
use crate::sources::mountinfo::{normalize, Mount, MountInfoError, MountTable};
use crate::sources::SourceEvent;

/// Settings of read-only write detection (`erofs:` in the config file).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ErofsConfig {
    /// Load the eBPF tracer. Without it, read-only writes are found from container logs only.
    pub tracer: bool,
    /// Repeats of the same failed write (container, syscall, path) within this window are sent
    /// as one event with a count.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// A finding repeated for the same container and path is reported at most this often;
    /// the occurrences in between are counted into the next report.
    #[serde(with = "humantime_serde")]
    pub repeat_interval: Duration,
}

impl Default for ErofsConfig {
    fn default() -> Self {
        ErofsConfig {
            tracer: true,
            window: Duration::from_secs(1),
            repeat_interval: Duration::from_secs(10),
        }
    }
}

/// What podmortem learnt of the covering mount, in the process's own mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountLookup {
    /// The mount that covers the path.
    Found(Box<Mount>),
    /// Why it is not known (the process exited first, the path is relative, ...).
    Unknown(String),
}

/// A write that failed with `EROFS`, as the kernel tracer saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErofsEvent {
    /// When the syscall returned (the last one, for an event standing for several).
    pub at: SystemTime,
    /// The syscall (`openat`, `mkdirat`, ...).
    pub syscall: &'static str,
    /// The open flags, for the open family.
    pub open_flags: Option<u64>,
    /// The thread id.
    pub pid: u32,
    /// The process id.
    pub tgid: u32,
    /// The command name.
    pub comm: String,
    /// The path as the process passed it (non-UTF-8 bytes replaced).
    pub path: String,
    /// The path was longer than the tracer reads: it is cut.
    pub path_truncated: bool,
    /// The absolute path in the container's view (a relative one joined to the working
    /// directory), when known.
    pub resolved_path: Option<String>,
    /// The memory cgroup's directory name.
    pub cgroup: String,
    /// The container, from the cgroup name.
    pub container_id: Option<String>,
    /// The mount namespace inode.
    pub mnt_ns: u32,
    /// The covering mount in the process's mount table.
    pub mount: MountLookup,
    /// How many failed calls this event stands for.
    pub count: u64,
}

/// Counters of the tracer source.
#[derive(Debug, Default)]
pub struct ErofsStats {
    /// Records read from the ring buffer.
    pub records: AtomicU64,
    /// Records of the wrong size (skipped).
    pub malformed: AtomicU64,
    /// Failed writes by processes in no container (not reported here).
    pub host_processes: AtomicU64,
    /// Records folded into an earlier event's count.
    pub aggregated: AtomicU64,
    /// Events dropped because the engine was behind and the outbox full.
    pub dropped: AtomicU64,
}

/// At most this many (container, syscall, path) windows are open at once.
const MAX_WINDOWS: usize = 4096;
/// At most this many events wait for the engine.
const MAX_OUTBOX: usize = 4096;
/// At most this many records are read per wake-up, so stopping and flushing are not starved.
const READS_PER_WAKEUP: usize = 4096;
/// How often windows are flushed and the kernel's counters read.
const FLUSH_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    container: String,
    nr: u32,
    path: Vec<u8>,
}

#[derive(Debug)]
struct Window {
    opened: Instant,
    repeats: u64,
    last: SystemTime,
    event: ErofsEvent,
}

/// Folds repeats of the same failed write into counted events.
#[derive(Debug)]
struct Aggregator {
    window: Duration,
    open: HashMap<Key, Window>,
}

impl Aggregator {
    fn new(window: Duration) -> Self {
        Aggregator {
            window,
            open: HashMap::new(),
        }
    }

    /// Counts `raw` into its open window and returns `None`, or, when it opens a window,
    /// returns the events to send now: any aggregate it closes, then the new event (made by
    /// `enrich`).
    fn observe(
        &mut self,
        key: Key,
        at: SystemTime,
        now: Instant,
        enrich: impl FnOnce() -> ErofsEvent,
    ) -> Vec<ErofsEvent> {
        let mut out = Vec::new();
        if let Some(w) = self.open.get_mut(&key) {
            if now.duration_since(w.opened) < self.window {
                w.repeats += 1;
                w.last = w.last.max(at);
                return out;
            }
            if let Some(w) = self.open.remove(&key) {
                out.extend(w.aggregate());
            }
        }
        if self.open.len() >= MAX_WINDOWS {
            out.extend(self.flush(now, true));
        }
        let event = enrich();
        self.open.insert(
            key,
            Window {
                opened: now,
                repeats: 0,
                last: at,
                event: event.clone(),
            },
        );
        out.push(event);
        out
    }

    /// Closes the windows that are over (all of them with `all`) and returns their aggregates.
    fn flush(&mut self, now: Instant, all: bool) -> Vec<ErofsEvent> {
        let window = self.window;
        let over: Vec<Key> = self
            .open
            .iter()
            .filter(|(_, w)| all || now.duration_since(w.opened) >= window)
            .map(|(k, _)| k.clone())
            .collect();
        over.into_iter()
            .filter_map(|k| self.open.remove(&k))
            .filter_map(Window::aggregate)
            .collect()
    }
}

impl Window {
    fn aggregate(self) -> Option<ErofsEvent> {
        (self.repeats > 0).then_some(ErofsEvent {
            at: self.last,
            count: self.repeats,
            ..self.event
        })
    }
}

/// Turns a kernel record into an event: the container from the cgroup name, the wall-clock
/// time, and the covering mount read from `/proc/<tgid>/mountinfo` below `host_root`.
fn enrich(raw: &RawEvent, at: SystemTime, container_id: Option<String>, host_root: &Path) -> ErofsEvent {
    let path = String::from_utf8_lossy(&raw.path).into_owned();
    let call = syscalls::by_nr(raw.nr);
    let proc_dir = host_root.join("proc").join(raw.tgid.to_string());
    // The pid may have been reused since the call: its files count only while it is still in
    // the mount namespace the kernel reported. Reading another process's namespace, working
    // directory and descriptors needs ptrace access: a refusal is said as such, not taken for
    // an exit.
    let mut denied = None;
    let same_process = raw.mnt_ns == 0
        || match std::fs::read_link(proc_dir.join("ns/mnt")) {
            Ok(ns) => ns.to_string_lossy() == format!("mnt:[{}]", raw.mnt_ns),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                denied = Some(format!(
                    "/proc/{}/ns/mnt is not readable (permission denied): the writer's working \
                     directory and mount namespace need ptrace read access (CAP_SYS_PTRACE, and \
                     on AppArmor nodes a profile that allows it)",
                    raw.tgid
                ));
                false
            }
            Err(_) => false,
        };
    // A relative path starts from the directory descriptor the `*at` call passed, else from
    // the working directory; either link, read from another mount namespace, reads relative to
    // that namespace's root: the container's view.
    let start = if raw.dirfd == event::AT_FDCWD {
        "cwd".to_owned()
    } else {
        format!("fd/{}", raw.dirfd)
    };
    let resolved_path = if raw.path_unreadable || raw.path.is_empty() {
        None
    } else if path.starts_with('/') {
        normalize(&path)
    } else if same_process {
        std::fs::read_link(proc_dir.join(&start))
            .ok()
            .filter(|dir| dir.is_absolute())
            .and_then(|dir| normalize(&format!("{}/{path}", dir.to_string_lossy())))
    } else {
        None
    };
    let mount = match (&resolved_path, denied) {
        (None, _) if raw.path_unreadable => {
            MountLookup::Unknown("the path could not be read from the process".into())
        }
        (_, Some(why)) => MountLookup::Unknown(why),
        (None, None) if !same_process => MountLookup::Unknown(format!(
            "pid {} exited before the relative path {path:?} could be resolved",
            raw.tgid
        )),
        (None, None) => MountLookup::Unknown(format!(
            "the relative path {path:?} could not be resolved: /proc/{}/{start} is unreadable",
            raw.tgid
        )),
        (Some(_), None) if !same_process => {
            MountLookup::Unknown(format!("pid {} exited before its mount table was read", raw.tgid))
        }
        (Some(p), None) => match MountTable::read(&proc_dir.join("mountinfo")) {
            Ok(table) => match table.covering(p) {
                Some(m) => MountLookup::Found(Box::new(m.clone())),
                None => MountLookup::Unknown(format!("no mount of pid {} covers {p}", raw.tgid)),
            },
            Err(e) if e.is_not_found() => {
                MountLookup::Unknown(format!("pid {} exited before its mount table was read", raw.tgid))
            }
            // A process that is exiting has no mount namespace left to show.
            Err(MountInfoError::Read { source, .. }) if source.raw_os_error() == Some(libc::EINVAL) => {
                MountLookup::Unknown(format!(
                    "pid {} was exiting when its mount table was read",
                    raw.tgid
                ))
            }
            Err(e) => MountLookup::Unknown(e.to_string()),
        },
    };
    ErofsEvent {
        at,
        syscall: call.map_or("unknown", |s| s.name),
        open_flags: call
            .filter(|s| s.flags != syscalls::Flags::None)
            .map(|_| raw.open_flags),
        pid: raw.pid,
        tgid: raw.tgid,
        comm: String::from_utf8_lossy(&raw.comm).into_owned(),
        path,
        path_truncated: raw.path_truncated,
        resolved_path,
        cgroup: String::from_utf8_lossy(&raw.cgroup).into_owned(),
        container_id,
        mnt_ns: raw.mnt_ns,
        mount,
        count: 1,
    }
}

/// Converts `CLOCK_BOOTTIME` nanoseconds to the wall clock (now, if the clock is unreadable).
fn wall_clock(boot_ns: u64) -> SystemTime {
    crate::sources::wall_clock_of(nix::time::ClockId::CLOCK_BOOTTIME, Duration::from_nanos(boot_ns))
        .unwrap_or_else(SystemTime::now)
}

/// Gives memory freed after loading back to the system. Loading parses the kernel's BTF (a few
/// MiB, about 20 MiB once parsed) and frees it, but the allocator keeps freed pages mapped:
/// without this the agent's resident size stays three times what it needs.
#[allow(unsafe_code)]
fn release_freed_memory() {
    // SAFETY: malloc_trim only returns unused heap pages to the kernel; it takes no pointers
    // and is safe to call from any thread at any time.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The tracer source.
#[derive(Debug)]
pub struct ErofsSource {
    host_root: PathBuf,
    config: ErofsConfig,
    stats: Arc<ErofsStats>,
}

impl ErofsSource {
    /// A source reading processes below `host_root`.
    pub fn new(host_root: &Path, config: ErofsConfig) -> Self {
        ErofsSource {
            host_root: host_root.to_owned(),
            config,
            stats: Arc::default(),
        }
    }

    /// The source's counters.
    pub fn stats(&self) -> Arc<ErofsStats> {
        Arc::clone(&self.stats)
    }

    /// Loads the tracer and sends events until `shutdown`. If the tracer cannot run, says why
    /// once and waits for `shutdown`.
    pub async fn run(self, out: mpsc::Sender<SourceEvent>, shutdown: CancellationToken) {
        if !self.config.tracer {
            tracing::info!("read-only write tracer disabled (erofs.tracer: false): read-only writes are found from container logs only");
            shutdown.cancelled().await;
            return;
        }
        let loaded = match tokio::task::spawn_blocking(Tracer::load).await {
            Ok(loaded) => loaded,
            Err(e) => Err(tracer::TracerError::Load {
                what: "loader".into(),
                message: e.to_string(),
                denied: false,
            }),
        };
        release_freed_memory();
        let (tracer, ring) = match loaded {
            Ok(loaded) => loaded,
            Err(error) => {
                tracing::warn!(%error, "the read-only write tracer cannot run on this node: read-only writes are found from container logs only");
                shutdown.cancelled().await;
                return;
            }
        };
        // The ring buffer map owns its descriptor, which is what the newer (unsafe)
        // `AsyncFd::register_with_interest` asks the caller to promise.
        #[allow(deprecated)]
        let ring = AsyncFd::with_interest(ring, Interest::READABLE);
        let ring = match ring {
            Ok(ring) => ring,
            Err(error) => {
                tracing::warn!(%error, "cannot poll the read-only write tracer's ring buffer: read-only writes are found from container logs only");
                shutdown.cancelled().await;
                return;
            }
        };
        tracing::info!(
            syscalls = tracer.attached.len(),
            absent = ?tracer.skipped.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            "read-only write tracer attached"
        );
        self.pump(tracer, ring, out, shutdown).await;
    }

    async fn pump(
        &self,
        tracer: Tracer,
        mut ring: AsyncFd<aya::maps::RingBuf<aya::maps::MapData>>,
        out: mpsc::Sender<SourceEvent>,
        shutdown: CancellationToken,
    ) {
        let mut agg = Aggregator::new(self.config.window);
        let mut outbox = std::collections::VecDeque::new();
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ring_full_seen = 0;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                guard = ring.readable_mut() => {
                    let Ok(mut guard) = guard else { break };
                    let ring = guard.get_inner_mut();
                    let mut n = 0;
                    while n < READS_PER_WAKEUP {
                        let Some(item) = ring.next() else { break };
                        n += 1;
                        self.stats.records.fetch_add(1, Ordering::Relaxed);
                        match RawEvent::parse(&item) {
                            Ok(raw) => self.observe(&raw, &mut agg, &mut outbox),
                            Err(error) => {
                                if self.stats.malformed.fetch_add(1, Ordering::Relaxed) == 0 {
                                    tracing::warn!(%error, "skipped a malformed tracer record");
                                }
                            }
                        }
                    }
                    if n < READS_PER_WAKEUP {
                        guard.clear_ready();
                    }
                }
                _ = flush.tick() => {
                    let aggregates = agg.flush(Instant::now(), false);
                    self.queue(aggregates, &mut outbox);
                    let kernel = tracer.stats();
                    if kernel.ring_full > ring_full_seen {
                        tracing::warn!(
                            dropped = kernel.ring_full - ring_full_seen,
                            total = kernel.ring_full,
                            "the tracer's ring buffer was full: the kernel dropped failed-write records"
                        );
                        ring_full_seen = kernel.ring_full;
                    }
                }
            }
            while let Some(event) = outbox.pop_front() {
                match out.try_send(event) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(event)) => {
                        outbox.push_front(event);
                        break;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
        }
        // Whatever was counted but not yet sent is still worth its count.
        let rest = agg.flush(Instant::now(), true);
        self.queue(rest, &mut outbox);
        for event in outbox {
            if out.send(event).await.is_err() {
                return;
            }
        }
    }

    fn observe(
        &self,
        raw: &RawEvent,
        agg: &mut Aggregator,
        outbox: &mut std::collections::VecDeque<SourceEvent>,
    ) {
        let cgroup = String::from_utf8_lossy(&raw.cgroup);
        let Some(container_id) = container_id_from_cgroup(&cgroup).map(str::to_owned) else {
            if self.stats.host_processes.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::debug!(comm = %String::from_utf8_lossy(&raw.comm), cgroup = %cgroup, "a process outside any container wrote to a read-only filesystem");
            }
            return;
        };
        let key = Key {
            container: container_id.clone(),
            nr: raw.nr,
            path: raw.path.clone(),
        };
        let at = wall_clock(raw.boot_ns);
        let host_root = &self.host_root;
        let events = agg.observe(key, at, Instant::now(), || {
            enrich(raw, at, Some(container_id), host_root)
        });
        if events.is_empty() {
            self.stats.aggregated.fetch_add(1, Ordering::Relaxed);
        }
        self.queue(events, outbox);
    }

    fn queue(&self, events: Vec<ErofsEvent>, outbox: &mut std::collections::VecDeque<SourceEvent>) {
        for event in events {
            if outbox.len() >= MAX_OUTBOX {
                if self.stats.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!("the engine is behind: dropped read-only write events");
                }
                continue;
            }
            outbox.push_back(SourceEvent::Erofs(Box::new(event)));
        }
    }
}

#[cfg(test)]
mod tests;
