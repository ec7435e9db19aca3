//! Sources: everything podmortem reads from the node. Each source runs as its own task and
//! sends [`SourceEvent`]s into one bounded channel that the detection engine drains. A source
//! never calls a detector or an exporter.

pub mod cgroup;
pub mod containerd_events;
pub mod cri;
pub mod erofs_tracer;
pub mod host;
pub mod host_deps;
pub mod host_fs;
pub mod kmsg;
pub mod logs;
pub mod memory;
pub mod mountinfo;
pub mod pods;
pub mod procfs;

use std::time::SystemTime;

use crate::model::{ContainerInfo, PodInfo};

/// Everything a source can tell the engine.
#[derive(Debug, Clone)]
pub enum SourceEvent {
    /// A complete listing of the node's sandboxes and containers, taken at `taken_at`. Anything
    /// not in it is gone.
    CriSnapshot(CriSnapshot),
    /// The current status of one sandbox, read on demand.
    CriPod(PodInfo),
    /// The current status of one container, read on demand.
    CriContainer(Box<ContainerInfo>),
    /// A task or container event from containerd's event stream.
    Containerd(ContainerdEvent),
    /// What the kernel log said.
    Kmsg(kmsg::KmsgEvent),
    /// A round of memory readings: containers' memory cgroups and the node.
    Memory(Box<memory::MemorySnapshot>),
    /// A round of host dependency checks.
    HostDeps(std::sync::Arc<host_deps::HostReport>),
    /// A write that failed with `EROFS`, from the kernel tracer.
    Erofs(Box<erofs_tracer::ErofsEvent>),
    /// A reading of the host's mount table.
    HostMounts(std::sync::Arc<host_fs::HostMounts>),
    /// The Kubernetes API's view of a pod on this node (added or changed).
    PodMeta(std::sync::Arc<crate::model::PodMeta>),
    /// A pod left this node, by uid.
    PodMetaDeleted(String),
}

impl SourceEvent {
    /// The name of the source that sends this kind of event, for podmortem's own metrics.
    pub fn source_name(&self) -> &'static str {
        match self {
            SourceEvent::CriSnapshot(_) | SourceEvent::CriPod(_) | SourceEvent::CriContainer(_) => "cri",
            SourceEvent::Containerd(_) => "containerd_events",
            SourceEvent::Kmsg(_) => "kmsg",
            SourceEvent::Memory(_) => "memory",
            SourceEvent::HostDeps(_) => "host_deps",
            SourceEvent::Erofs(_) => "erofs_tracer",
            SourceEvent::HostMounts(_) => "host_fs",
            SourceEvent::PodMeta(_) | SourceEvent::PodMetaDeleted(_) => "pod_watch",
        }
    }
}

/// A complete CRI listing.
#[derive(Debug, Clone)]
pub struct CriSnapshot {
    /// When the listing started: every exit that finished before this moment is in it.
    pub taken_at: SystemTime,
    /// Every sandbox on the node.
    pub pods: Vec<PodInfo>,
    /// Every container on the node.
    pub containers: Vec<ContainerInfo>,
}

/// An event from containerd's event stream, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum ContainerdEvent {
    /// A task (a container's main process, or an exec'd process) started.
    TaskStart {
        /// The container.
        container_id: String,
        /// Host pid of the process.
        pid: u32,
    },
    /// A process of a container exited.
    TaskExit {
        /// The container.
        container_id: String,
        /// The exec id; equal to the container id (or empty) for the main process.
        exec_id: String,
        /// Host pid of the process.
        pid: u32,
        /// Its exit status (128+N when killed by signal N).
        exit_status: u32,
        /// When it exited.
        exited_at: Option<SystemTime>,
    },
    /// The kernel's OOM killer acted in the container's memory cgroup.
    TaskOom {
        /// The container.
        container_id: String,
        /// When containerd published the event.
        at: Option<SystemTime>,
    },
    /// A task was deleted (its resources released).
    TaskDelete {
        /// The container.
        container_id: String,
        /// Host pid the task had.
        pid: u32,
        /// Its exit status.
        exit_status: u32,
    },
    /// A container was created in containerd.
    ContainerCreate {
        /// The container.
        id: String,
        /// Its image.
        image: String,
    },
    /// A container was deleted from containerd.
    ContainerDelete {
        /// The container.
        id: String,
    },
}

/// The last second podmortem represents (9999-12-31T23:59:59Z): RFC 3339 has four-digit years,
/// and a later time from the outside world is treated as unknown.
const MAX_UNIX_SECONDS: u64 = 253_402_300_799;

fn system_time(secs: u64, nanos: u32) -> Option<SystemTime> {
    if secs > MAX_UNIX_SECONDS || nanos >= 1_000_000_000 || (secs == 0 && nanos == 0) {
        return None;
    }
    SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::new(secs, nanos))
}

/// The wall-clock time of a kernel timestamp: `since_start` on `clock` (the kernel log uses
/// `CLOCK_MONOTONIC`, the tracer `CLOCK_BOOTTIME`). `None` if the clock cannot be read.
pub(crate) fn wall_clock_of(
    clock: nix::time::ClockId,
    since_start: std::time::Duration,
) -> Option<SystemTime> {
    let now = SystemTime::now();
    let elapsed = clock_now(clock)?;
    now.checked_sub(elapsed)?.checked_add(since_start)
}

/// The time on `clock` (since boot, for the monotonic and boot clocks).
pub(crate) fn clock_now(clock: nix::time::ClockId) -> Option<std::time::Duration> {
    let ts = nix::time::clock_gettime(clock).ok()?;
    Some(std::time::Duration::new(
        u64::try_from(ts.tv_sec()).ok()?,
        u32::try_from(ts.tv_nsec()).ok()?,
    ))
}

/// Converts a protobuf timestamp to [`SystemTime`]; `None` for an unset, pre-epoch, malformed
/// or far-future one.
pub(crate) fn system_time_from_proto(ts: &prost_types::Timestamp) -> Option<SystemTime> {
    system_time(u64::try_from(ts.seconds).ok()?, u32::try_from(ts.nanos).ok()?)
}

/// Converts CRI's nanoseconds-since-epoch to [`SystemTime`]; `None` for 0 (unset) or negative.
pub(crate) fn system_time_from_nanos(nanos: i64) -> Option<SystemTime> {
    let nanos = u64::try_from(nanos).ok()?;
    let (secs, sub) = (nanos / 1_000_000_000, nanos % 1_000_000_000);
    system_time(secs, u32::try_from(sub).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::Timestamp;

    #[test]
    fn timestamps_from_outside_never_panic() {
        let ts = |seconds, nanos| system_time_from_proto(&Timestamp { seconds, nanos });
        assert_eq!(ts(0, 0), None);
        assert_eq!(ts(-5, 0), None);
        assert_eq!(ts(1, -1), None);
        assert_eq!(ts(i64::MAX, 999_999_999), None);
        assert_eq!(ts(5, 1_000_000_000), None);
        assert_eq!(ts(253_402_300_800, 0), None, "year 10000");
        assert_eq!(
            ts(1, 5),
            Some(SystemTime::UNIX_EPOCH + std::time::Duration::new(1, 5))
        );
        assert_eq!(system_time_from_nanos(i64::MAX).map(|_| ()), Some(()));
        assert_eq!(system_time_from_nanos(-1), None);
        assert_eq!(
            system_time_from_nanos(1_500_000_000),
            Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1500))
        );
    }
}
