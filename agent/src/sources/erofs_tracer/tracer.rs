//! Loading the kernel program, telling it which syscalls to watch, and attaching it to their
//! tracepoints.

use std::io;
use std::path::{Path, PathBuf};

use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use aya::programs::TracePoint;
use aya::Ebpf;

use super::syscalls::{self, Syscall};

/// The compiled kernel program (built from `bpf/erofs.bpf.c` by the build script).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/erofs.bpf.o"));

/// Where the kernel's BTF is: the program's kernel structure offsets are taken from it.
const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";
/// Where tracefs is looked for, in order (the loader looks in the same places).
const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Why the tracer cannot run.
#[derive(Debug, thiserror::Error)]
pub enum TracerError {
    /// The kernel publishes no BTF.
    #[error("the kernel has no BTF at {KERNEL_BTF} (it needs CONFIG_DEBUG_INFO_BTF, Linux 5.8 or later)")]
    NoBtf,
    /// Syscall tracepoints are not reachable.
    #[error(
        "tracefs is not mounted (looked at {}) and mounting it at {} failed: {source}; \
         mount it on the node (`mount -t tracefs nodev /sys/kernel/tracing`) or give the agent CAP_SYS_ADMIN",
        TRACEFS.join(" and "), TRACEFS[0]
    )]
    Tracefs {
        /// Why the mount failed.
        #[source]
        source: io::Error,
    },
    /// The kernel has no syscall tracepoints.
    #[error("tracefs at {0} has no syscall tracepoints (the kernel needs CONFIG_FTRACE_SYSCALLS)")]
    NoSyscallEvents(PathBuf),
    /// The kernel refused the program or a map.
    #[error("the kernel refused the eBPF program ({what}): {message}{}", permission_hint(*.denied))]
    Load {
        /// What was being loaded.
        what: String,
        /// The loader's message.
        message: String,
        /// Whether it was a permission error.
        denied: bool,
    },
    /// Not even `openat` could be attached.
    #[error("no syscall tracepoint could be attached; openat: {0}")]
    NothingAttached(String),
}

fn permission_hint(denied: bool) -> &'static str {
    if denied {
        " (the agent needs CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN on kernels before 5.8)"
    } else {
        ""
    }
}

fn load_error(what: &str, error: &dyn std::error::Error) -> TracerError {
    let mut message = error.to_string();
    let mut denied = false;
    let mut source = error.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            denied |= matches!(io.kind(), io::ErrorKind::PermissionDenied);
            denied |= io.raw_os_error() == Some(libc::EPERM);
        }
        // Error chains often repeat their source's text: keep each part once.
        let part = e.to_string();
        if !message.contains(&part) {
            message = format!("{message}: {part}");
        }
        source = e.source();
    }
    // The verifier's log can be pages long; the first lines say what matters.
    let mut lines: Vec<&str> = message.lines().take(8).collect();
    if message.lines().count() > 8 {
        lines.push("…");
    }
    TracerError::Load {
        what: what.to_owned(),
        message: lines.join(" "),
        denied,
    }
}

/// The counters the kernel program keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Events sent.
    pub events: u64,
    /// Events dropped because the ring buffer was full.
    pub ring_full: u64,
}

/// The loaded, attached tracer.
pub struct Tracer {
    ebpf: Ebpf,
    /// The syscalls attached at entry and exit.
    pub attached: Vec<&'static str>,
    /// The syscalls that could not be attached (absent on this kernel), with why.
    pub skipped: Vec<(&'static str, String)>,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("attached", &self.attached)
            .field("skipped", &self.skipped)
            .finish_non_exhaustive()
    }
}

/// Finds tracefs, mounting it when the kernel offers it but nobody mounted it.
fn tracefs() -> Result<PathBuf, TracerError> {
    let usable = |dir: &Path| dir.join("events").is_dir();
    if let Some(dir) = TRACEFS.iter().map(Path::new).find(|d| usable(d)) {
        return Ok(dir.to_owned());
    }
    let target = Path::new(TRACEFS[0]);
    nix::mount::mount(
        Some("nodev"),
        target,
        Some("tracefs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|errno| TracerError::Tracefs {
        source: io::Error::from(errno),
    })?;
    tracing::info!(path = %target.display(), "mounted tracefs for the read-only write tracer");
    Ok(target.to_owned())
}

fn attach_all(
    ebpf: &mut Ebpf,
    program: &str,
    phase: &str,
    calls: &[&'static Syscall],
) -> Result<Vec<Result<(), String>>, TracerError> {
    let tp: &mut TracePoint = ebpf
        .program_mut(program)
        .ok_or_else(|| load_error(program, &io::Error::other("not in the object")))?
        .try_into()
        .map_err(|e| load_error(program, &e))?;
    tp.load().map_err(|e| load_error(program, &e))?;
    Ok(calls
        .iter()
        .map(|s| {
            tp.attach("syscalls", &format!("sys_{phase}_{}", s.name))
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .collect())
}

impl Tracer {
    /// Loads the program, fills its syscall table and attaches it; takes a few milliseconds.
    pub fn load() -> Result<(Tracer, RingBuf<MapData>), TracerError> {
        if !Path::new(KERNEL_BTF).exists() {
            return Err(TracerError::NoBtf);
        }
        let tracefs = tracefs()?;
        if !tracefs.join("events/syscalls").is_dir() {
            return Err(TracerError::NoSyscallEvents(tracefs));
        }
        let mut ebpf = Ebpf::load(OBJECT).map_err(|e| load_error("object", &e))?;
        let calls: Vec<&'static Syscall> = syscalls::watched()
            .filter(|s| {
                tracefs
                    .join(format!("events/syscalls/sys_enter_{}", s.name))
                    .is_dir()
            })
            .collect();
        {
            let map = ebpf
                .map_mut("specs")
                .ok_or_else(|| load_error("specs", &io::Error::other("no such map")))?;
            let mut specs: Array<_, u64> = Array::try_from(map).map_err(|e| load_error("specs", &e))?;
            for s in &calls {
                specs
                    .set(s.nr, s.packed_spec(), 0)
                    .map_err(|e| load_error("specs", &e))?;
            }
        }
        // Exit first: an entry remembered before its exit is watched would only linger in the
        // (LRU) table of pending calls.
        let exits = attach_all(&mut ebpf, "erofs_exit", "exit", &calls)?;
        let entries = attach_all(&mut ebpf, "erofs_enter", "enter", &calls)?;
        let mut tracer = Tracer {
            ebpf,
            attached: Vec::new(),
            skipped: Vec::new(),
        };
        for ((s, exit), entry) in calls.iter().zip(exits).zip(entries) {
            match exit.and(entry) {
                Ok(()) => tracer.attached.push(s.name),
                Err(e) => tracer.skipped.push((s.name, e)),
            }
        }
        if !tracer.attached.contains(&"openat") {
            let why = tracer
                .skipped
                .iter()
                .find(|(n, _)| *n == "openat")
                .map_or_else(|| "no tracepoint".to_owned(), |(_, e)| e.clone());
            return Err(TracerError::NothingAttached(why));
        }
        let events = tracer
            .ebpf
            .take_map("events")
            .ok_or_else(|| load_error("events", &io::Error::other("no such map")))?;
        let ring = RingBuf::try_from(events).map_err(|e| load_error("events", &e))?;
        Ok((tracer, ring))
    }

    /// The kernel program's counters, summed over CPUs.
    pub fn stats(&self) -> KernelStats {
        let Some(map) = self.ebpf.map("stats") else {
            return KernelStats::default();
        };
        let Ok(stats) = PerCpuArray::<_, u64>::try_from(map) else {
            return KernelStats::default();
        };
        let sum = |i: u32| stats.get(&i, 0).map_or(0, |v| v.iter().sum());
        KernelStats {
            events: sum(0),
            ring_full: sum(1),
        }
    }
}
