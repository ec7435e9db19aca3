//! What podmortem knows about the pods and containers on its node, independent of the wire
//! format it learnt it from. Sources fill these types; the inventory and the detectors read them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use crate::sources::host::ProgramLookup;
use crate::sources::logs::exec_failure::ExecFailure;

/// Kubelet's label naming the pod a container or sandbox belongs to.
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
/// Kubelet's label naming the pod's namespace.
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// Kubelet's label carrying the pod's uid.
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
/// Kubelet's label naming the container within its pod.
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// The identity of a Kubernetes pod, as far as it is known.
///
/// Fields are empty strings when the runtime did not say (a pod not created by kubelet has no
/// labels); a finding about it still goes out with what is known.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PodRef {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The pod's uid.
    pub uid: String,
}

impl PodRef {
    /// Reads the pod identity from kubelet's labels, falling back to the sandbox metadata.
    pub fn from_labels(labels: &BTreeMap<String, String>, fallback: &PodRef) -> PodRef {
        let pick = |key: &str, fallback: &str| {
            labels
                .get(key)
                .filter(|v| !v.is_empty())
                .cloned()
                .unwrap_or_else(|| fallback.to_owned())
        };
        PodRef {
            namespace: pick(LABEL_POD_NAMESPACE, &fallback.namespace),
            name: pick(LABEL_POD_NAME, &fallback.name),
            uid: pick(LABEL_POD_UID, &fallback.uid),
        }
    }

    /// `namespace/name`, or `?` for the parts that are unknown.
    pub fn display(&self) -> String {
        format!("{}/{}", or_unknown(&self.namespace), or_unknown(&self.name))
    }
}

/// `s`, or `?` when it is empty: how podmortem shows a name the runtime did not give.
pub fn or_unknown(s: &str) -> &str {
    if s.is_empty() {
        "?"
    } else {
        s
    }
}

/// A pod sandbox (the pod's namespaces and pause process) as the runtime reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodInfo {
    /// The sandbox id.
    pub id: String,
    /// Which pod this sandbox is.
    pub pod: PodRef,
    /// Kubelet's attempt counter for the sandbox (bumped when the sandbox is recreated).
    pub attempt: u32,
    /// Whether the sandbox is ready.
    pub state: PodState,
    /// When the sandbox was created.
    pub created_at: Option<SystemTime>,
    /// The sandbox's labels.
    pub labels: BTreeMap<String, String>,
}

/// The state of a pod sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PodState {
    /// The sandbox is up.
    Ready,
    /// The sandbox is stopped or being torn down.
    NotReady,
}

/// The lifecycle state of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    /// Created but not started.
    Created,
    /// Its main process runs.
    Running,
    /// Its main process has exited.
    Exited,
    /// The runtime does not know (or reported a state podmortem does not know).
    Unknown,
}

/// A container as the runtime reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerInfo {
    /// The container id.
    pub id: String,
    /// The sandbox this container runs in.
    pub pod_sandbox_id: String,
    /// The container's name within its pod.
    pub name: String,
    /// Which pod it belongs to.
    pub pod: PodRef,
    /// Kubelet's restart counter: 0 for the first run, N for the N-th restart.
    pub attempt: u32,
    /// Lifecycle state.
    pub state: ContainerState,
    /// When it was created.
    pub created_at: Option<SystemTime>,
    /// When its main process started.
    pub started_at: Option<SystemTime>,
    /// When its main process exited.
    pub finished_at: Option<SystemTime>,
    /// Exit code of the main process, once exited.
    pub exit_code: Option<i32>,
    /// The runtime's one-word reason (`Error`, `OOMKilled`, `Completed`, ...).
    pub reason: String,
    /// The runtime's message, if any.
    pub message: String,
    /// The image as the pod spec names it.
    pub image: String,
    /// The image digest reference.
    pub image_ref: String,
    /// Where the runtime writes the container's log (CRI log format).
    pub log_path: Option<PathBuf>,
    /// The container's mounts.
    pub mounts: Vec<MountInfo>,
    /// Memory limit in bytes, if one is set.
    pub memory_limit_bytes: Option<u64>,
    /// The main process's pid on the host, while it runs.
    pub pid: Option<u32>,
    /// The cgroup path the runtime placed the container in (as given to the OCI runtime).
    pub cgroups_path: Option<String>,
    /// The snapshot holding the container's root filesystem.
    pub rootfs: Option<SnapshotRef>,
    /// The `PATH` the container's process was started with.
    pub path_env: Option<String>,
    /// Whether the root filesystem is mounted read-only (`readOnlyRootFilesystem`), if known.
    pub readonly_rootfs: Option<bool>,
    /// The working directory the process was started in, if known.
    pub cwd: Option<String>,
    /// What was read from the node after the container exited abnormally: its last log lines
    /// and, when they name a program that could not be executed, where that program is.
    pub post_mortem: Option<Arc<PostMortem>>,
    /// Labels (kubelet's included).
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
}

impl ContainerInfo {
    /// A container known only by its id.
    pub fn unknown(id: &str) -> Self {
        ContainerInfo {
            id: id.to_owned(),
            pod_sandbox_id: String::new(),
            name: String::new(),
            pod: PodRef::default(),
            attempt: 0,
            state: ContainerState::Unknown,
            created_at: None,
            started_at: None,
            finished_at: None,
            exit_code: None,
            reason: String::new(),
            message: String::new(),
            image: String::new(),
            image_ref: String::new(),
            log_path: None,
            mounts: Vec::new(),
            memory_limit_bytes: None,
            pid: None,
            cgroups_path: None,
            rootfs: None,
            path_env: None,
            readonly_rootfs: None,
            cwd: None,
            post_mortem: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        }
    }

    /// The container's name, or its id when the name is unknown: what identifies it across
    /// restarts in fingerprints.
    pub fn identity_name(&self) -> &str {
        if self.name.is_empty() {
            &self.id
        } else {
            &self.name
        }
    }

    /// How long the main process ran, if it has started and exited. A process that exits at
    /// once can be recorded as finished before it was recorded as started: that is zero.
    pub fn ran_for(&self) -> Option<std::time::Duration> {
        let (start, end) = (self.started_at?, self.finished_at?);
        Some(end.duration_since(start).unwrap_or_default())
    }
}

/// One mount of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountInfo {
    /// Where it appears inside the container.
    pub container_path: String,
    /// Where it comes from on the host.
    pub host_path: String,
    /// Whether it is mounted read-only.
    pub readonly: bool,
}

/// A container's root filesystem snapshot in containerd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRef {
    /// The snapshotter (`overlayfs`, `native`, ...).
    pub snapshotter: String,
    /// The snapshot's key.
    pub key: String,
}

/// Where a program was looked for, and what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The lookup ran.
    Done(ProgramLookup),
    /// It could not run (the filesystem could not be read, the snapshot is gone); why.
    Unknown(String),
}

/// What podmortem read on the node about an abnormal exit, right after it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostMortem {
    /// The attempt's last log lines, oldest first (a few, for evidence).
    pub log_tail: Vec<String>,
    /// Why the log could not be read, if it could not.
    pub log_error: Option<String>,
    /// A program that could not be executed, as the log or the runtime's message said.
    pub exec_failure: Option<ExecFailure>,
    /// Whether that program is on the host.
    pub on_host: Option<Lookup>,
    /// Whether that program is in the container's image.
    pub in_image: Option<Lookup>,
    /// A log line saying a write failed on a read-only filesystem (the last such line).
    pub erofs: Option<crate::sources::logs::erofs::ErofsLine>,
}

/// What the Kubernetes API says about a pod on this node, beyond what the runtime knows: its
/// owner, volumes, probes and resources. Absent when the API is not reachable; podmortem then
/// works from the runtime's labels alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PodMeta {
    /// Which pod.
    pub pod: PodRef,
    /// The controller that owns it (`ReplicaSet`, `StatefulSet`, `DaemonSet`, `Job`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// Its volumes.
    pub volumes: Vec<PodVolume>,
    /// Its containers (init containers included), as the spec declares them.
    pub containers: Vec<ContainerSpecMeta>,
}

impl PodMeta {
    /// The declared container named `name`.
    pub fn container(&self, name: &str) -> Option<&ContainerSpecMeta> {
        self.containers.iter().find(|c| c.name == name)
    }

    /// The volume named `name`.
    pub fn volume(&self, name: &str) -> Option<&PodVolume> {
        self.volumes.iter().find(|v| v.name == name)
    }
}

/// A pod's controlling owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Owner {
    /// Its kind (`ReplicaSet`, `StatefulSet`, ...).
    pub kind: String,
    /// Its name.
    pub name: String,
}

/// One volume of a pod spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodVolume {
    /// The volume's name in the pod spec.
    pub name: String,
    /// Its type as the spec names it: `configMap`, `secret`, `emptyDir`, `hostPath`,
    /// `persistentVolumeClaim`, `csi`, `projected`, `downwardAPI`, `iscsi`, `nfs`, ...
    pub kind: String,
    /// The CSI driver, for an inline `csi` volume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csi_driver: Option<String>,
    /// Whether the volume itself is read-only (`readOnly` on the source; configMap, secret,
    /// projected and downwardAPI volumes always are).
    pub read_only: bool,
}

/// One container as the pod spec declares it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ContainerSpecMeta {
    /// Its name.
    pub name: String,
    /// Whether it is an init container.
    pub init: bool,
    /// Its volume mounts.
    pub volume_mounts: Vec<VolumeMountMeta>,
    /// Which probes it has: `liveness`, `readiness`, `startup`.
    pub probes: Vec<String>,
    /// Resource limits, as quantities (`memory: 256Mi`, `cpu: 500m`).
    pub limits: BTreeMap<String, String>,
    /// Resource requests, as quantities.
    pub requests: BTreeMap<String, String>,
    /// `securityContext.readOnlyRootFilesystem`, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only_root_filesystem: Option<bool>,
}

/// One volume mount of a declared container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeMountMeta {
    /// The volume's name.
    pub name: String,
    /// Where it is mounted in the container.
    pub mount_path: String,
    /// Whether the mount is read-only.
    pub read_only: bool,
    /// The sub-path mounted, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
}
