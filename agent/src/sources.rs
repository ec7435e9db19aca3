//! Sources: everything podmortem reads from the node. Each source runs as its own task and
//! sends [`SourceEvent`]s into one bounded channel that the detection engine drains. A source
//! never calls a detector or an exporter.

pub mod containerd_events;
pub mod cri;

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

/// Converts a protobuf timestamp to [`SystemTime`]; `None` for an unset or pre-epoch one.
pub(crate) fn system_time_from_proto(ts: &prost_types::Timestamp) -> Option<SystemTime> {
    let secs = u64::try_from(ts.seconds).ok()?;
    let nanos = u32::try_from(ts.nanos).ok()?;
    if secs == 0 && nanos == 0 {
        return None;
    }
    Some(SystemTime::UNIX_EPOCH + std::time::Duration::new(secs, nanos))
}

/// Converts CRI's nanoseconds-since-epoch to [`SystemTime`]; `None` for 0 (unset) or negative.
pub(crate) fn system_time_from_nanos(nanos: i64) -> Option<SystemTime> {
    let nanos = u64::try_from(nanos).ok().filter(|n| *n > 0)?;
    Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(nanos))
}
