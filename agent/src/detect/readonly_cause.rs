//! Why a write failed with `EROFS`: the container's root filesystem is read-only
//! (`readOnlyRootFilesystem`), the path is on a volume mounted read-only (ConfigMap, Secret,
//! projected and downward API volumes always are), it is on a kernel filesystem containers get
//! read-only (`/proc/sys`, `/sys`), or the host's own filesystem below it is read-only.
//!
//! The best evidence is the covering mount in the process's own mount table, read while the
//! process lived. Without it (the process exited first, or only the log told of the failure),
//! the runtime's view serves: the container's mounts and whether its root is read-only, and the
//! host's mount table for the filesystem below a volume.

use serde::Serialize;

use crate::model::{ContainerInfo, PodMeta};
use crate::sources::mountinfo::{normalize, Mount, MountTable};

/// A Kubernetes volume, as kubelet lays it out on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeRef {
    /// The volume type (`configMap`, `secret`, `projected`, `downwardAPI`, `emptyDir`, `csi`,
    /// or the plugin's own name).
    pub kind: String,
    /// The volume's name in the pod spec (for `csi`, the PersistentVolume's).
    pub name: String,
}

impl VolumeRef {
    /// Whether Kubernetes always mounts this type read-only.
    pub fn always_read_only(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "configMap" | "secret" | "projected" | "downwardAPI"
        )
    }
}

/// The volume a host path belongs to: `<kubelet root>/pods/<uid>/volumes/<plugin>/<name>`
/// (or `volume-subpaths/<name>/...`).
pub fn volume_from_host_path(host_path: &str) -> Option<VolumeRef> {
    let parts: Vec<&str> = host_path.split('/').filter(|p| !p.is_empty()).collect();
    let at = parts.windows(2).position(|w| w[0] == "pods")?;
    match parts.get(at + 2..)? {
        ["volumes", plugin, name, ..] => {
            let plugin = plugin.strip_prefix("kubernetes.io~").unwrap_or(plugin);
            let kind = match plugin {
                "configmap" => "configMap",
                "secret" => "secret",
                "projected" => "projected",
                "downward-api" => "downwardAPI",
                "empty-dir" => "emptyDir",
                "csi" => "csi",
                "local-volume" => "local",
                other => other,
            };
            Some(VolumeRef {
                kind: kind.to_owned(),
                name: (*name).to_owned(),
            })
        }
        ["volume-subpaths", name, ..] => Some(VolumeRef {
            kind: "subPath".to_owned(),
            name: (*name).to_owned(),
        }),
        _ => None,
    }
}

/// Why the write failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum Cause {
    /// The container's root filesystem is mounted read-only.
    ReadOnlyRootfs,
    /// The path is on a volume mounted read-only.
    ReadOnlyVolume {
        /// The volume, when the host path tells.
        volume: Option<VolumeRef>,
        /// Where the volume comes from on the host.
        host_path: Option<String>,
    },
    /// A kernel filesystem containers get read-only (`/proc/sys`, `/sys`, cgroups).
    SystemMount {
        /// Its filesystem type.
        fs_type: String,
    },
    /// The filesystem itself is read-only on the host (remounted after an error, or mounted so).
    HostFilesystem {
        /// The device (`/dev/sda1`) or `major:minor`.
        device: String,
        /// Where it is mounted on the host, when the host's table tells.
        host_mount_point: Option<String>,
        /// The kernel marked it read-only after an error (ext4 `emergency_ro`).
        after_error: bool,
    },
    /// The mount is writable as far as podmortem can tell.
    Unknown,
}

impl Cause {
    /// A short, stable name for the cause.
    pub fn as_str(&self) -> &'static str {
        match self {
            Cause::ReadOnlyRootfs => "read_only_rootfs",
            Cause::ReadOnlyVolume { .. } => "read_only_volume",
            Cause::SystemMount { .. } => "system_mount",
            Cause::HostFilesystem { .. } => "host_filesystem",
            Cause::Unknown => "unknown",
        }
    }
}

/// What the pod spec says of the volume mounted at a path, when the Kubernetes API told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpecMount {
    /// The volume's name in the pod spec.
    pub volume: String,
    /// Its type, as the spec names it.
    pub kind: String,
    /// The container's volumeMount says `readOnly: true`.
    pub mount_read_only: bool,
    /// The volume itself is read-only (its source says so, or its type always is).
    pub volume_read_only: bool,
}

/// The volume the pod spec mounts at `mount_point` in container `container`.
pub fn spec_mount(meta: &PodMeta, container: &str, mount_point: &str) -> Option<SpecMount> {
    let mp = mount_point.trim_end_matches('/');
    let mount = meta
        .container(container)?
        .volume_mounts
        .iter()
        .find(|m| m.mount_path.trim_end_matches('/') == mp)?;
    let volume = meta.volume(&mount.name)?;
    Some(SpecMount {
        volume: volume.name.clone(),
        kind: volume.kind.clone(),
        mount_read_only: mount.read_only,
        volume_read_only: volume.read_only,
    })
}

/// What the mount analysis found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The cause.
    pub cause: Cause,
    /// The covering mount point in the container.
    pub mount_point: Option<String>,
    /// The covering mount, when the process's mount table was read.
    pub mount: Option<Mount>,
    /// What the verdict rests on.
    pub basis: &'static str,
    /// What the pod spec says of the covering mount, when the API told.
    pub spec: Option<SpecMount>,
}

impl Verdict {
    /// Adds what the pod spec (`meta`) says of the covering mount of `container`: the spec's
    /// volume name and type replace what kubelet's host path suggests (for a CSI volume that
    /// is the PersistentVolume's name, not the one the pod spec uses).
    pub fn with_spec(mut self, meta: Option<&PodMeta>, container: &str) -> Verdict {
        let (Some(meta), Some(mp)) = (meta, self.mount_point.as_deref()) else {
            return self;
        };
        let Some(spec) = spec_mount(meta, container, mp) else {
            return self;
        };
        if let Cause::ReadOnlyVolume { volume, .. } = &mut self.cause {
            *volume = Some(VolumeRef {
                kind: spec.kind.clone(),
                name: spec.volume.clone(),
            });
        }
        self.spec = Some(spec);
        self
    }
}

const KERNEL_FS: &[&str] = &[
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "securityfs",
    "debugfs",
    "tracefs",
];

/// The host's view of the filesystem below `host_path`, if it is read-only there.
fn host_read_only(host: Option<&MountTable>, host_path: &str) -> Option<Cause> {
    let m = host?.covering(host_path)?;
    (m.super_read_only() || m.emergency_read_only() || m.mount_read_only())
        .then(|| host_filesystem(m, Some(m.mount_point.clone())))
}

/// The cause for a write refused by the filesystem of `m` itself.
fn host_filesystem(m: &Mount, host_mount_point: Option<String>) -> Cause {
    Cause::HostFilesystem {
        device: m.device_name(),
        host_mount_point,
        after_error: m.emergency_read_only(),
    }
}

/// The runtime's mount covering `path` (longest container path that is a component prefix).
fn runtime_mount<'a>(c: &'a ContainerInfo, path: &str) -> Option<&'a crate::model::MountInfo> {
    c.mounts
        .iter()
        .filter(|m| {
            let mp = m.container_path.trim_end_matches('/');
            path == mp || mp.is_empty() || path.strip_prefix(mp).is_some_and(|r| r.starts_with('/'))
        })
        .max_by_key(|m| m.container_path.trim_end_matches('/').len())
}

/// Classifies a failed write to `path` (absolute, in the container's view). `mount` is the
/// covering mount from the process's own table, `c` the container as the runtime reports it,
/// `host` the host's mount table.
pub fn classify(
    path: &str,
    mount: Option<&Mount>,
    c: Option<&ContainerInfo>,
    host: Option<&MountTable>,
) -> Verdict {
    let path = normalize(path).unwrap_or_else(|| path.to_owned());
    if let Some(m) = mount {
        let host_path = c
            .and_then(|c| {
                c.mounts
                    .iter()
                    .find(|r| r.container_path.trim_end_matches('/') == m.mount_point.trim_end_matches('/'))
            })
            .map(|r| r.host_path.clone());
        let cause = if KERNEL_FS.contains(&m.fs_type.as_str()) {
            Cause::SystemMount {
                fs_type: m.fs_type.clone(),
            }
        } else if m.emergency_read_only()
            || (m.super_read_only()
                && host_path
                    .as_deref()
                    .and_then(|p| host_read_only(host, p))
                    .is_some())
        {
            // Made read-only by the kernel after an error, or read-only on the host itself.
            let host_mount_point = host_path
                .as_deref()
                .and_then(|p| host?.covering(p))
                .map(|hm| hm.mount_point.clone());
            host_filesystem(m, host_mount_point)
        } else if m.mount_read_only() && m.mount_point == "/" {
            Cause::ReadOnlyRootfs
        } else if m.mount_read_only() || m.super_read_only() {
            // Kubelet bind-mounts a volume from the host; the mount's root names it when the
            // runtime's list does not. A filesystem read-only by nature (a read-only NFS export
            // or PersistentVolume, squashfs, an image volume) is a read-only volume too.
            let host_path = host_path.or_else(|| (m.root != "/").then(|| m.root.clone()));
            Cause::ReadOnlyVolume {
                volume: host_path.as_deref().and_then(volume_from_host_path),
                host_path,
            }
        } else {
            // A writable mount: the host filesystem below it may be read-only. For the
            // container's overlay root, that is the one holding its upper directory.
            let upper = m
                .super_options
                .iter()
                .find_map(|o| o.strip_prefix("upperdir="))
                .map(str::to_owned);
            host_path
                .or(upper)
                .as_deref()
                .and_then(|p| host_read_only(host, p))
                .unwrap_or(Cause::Unknown)
        };
        return Verdict {
            cause,
            mount_point: Some(m.mount_point.clone()),
            mount: Some(m.clone()),
            basis: "the process's mount table",
            spec: None,
        };
    }
    let Some(c) = c else {
        return Verdict {
            cause: Cause::Unknown,
            mount_point: None,
            mount: None,
            basis: "nothing: the container is unknown",
            spec: None,
        };
    };
    if let Some(r) = runtime_mount(c, &path) {
        let cause = if r.readonly {
            Cause::ReadOnlyVolume {
                volume: volume_from_host_path(&r.host_path),
                host_path: Some(r.host_path.clone()),
            }
        } else {
            host_read_only(host, &r.host_path).unwrap_or(Cause::Unknown)
        };
        return Verdict {
            cause,
            mount_point: Some(r.container_path.clone()),
            mount: None,
            basis: "the runtime's mount list",
            spec: None,
        };
    }
    let cause = match c.readonly_rootfs {
        Some(true) => Cause::ReadOnlyRootfs,
        _ => Cause::Unknown,
    };
    Verdict {
        cause,
        mount_point: Some("/".to_owned()),
        mount: None,
        basis: "the runtime's container spec",
        spec: None,
    }
}

/// The parent directory of `path`, for hints (`/` for a file at the root).
fn parent(path: &str) -> &str {
    match path.trim_end_matches('/').rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// What to do about a failed write to `path` for `cause`.
pub fn hint(cause: &Cause, path: &str, mount_point: Option<&str>) -> String {
    match cause {
        Cause::ReadOnlyRootfs => {
            let dir = parent(path);
            if dir == "/" {
                format!(
                    "The container runs with readOnlyRootFilesystem: true and writes {path} at the root. Write it \
                     below a directory backed by a volume instead: mount an emptyDir (for example at /data) and \
                     point the application there."
                )
            } else {
                format!(
                    "The container runs with readOnlyRootFilesystem: true. Mount an emptyDir at {dir} (volumes: \
                     - name: scratch, emptyDir: {{}}; volumeMounts: - name: scratch, mountPath: {dir}), or set \
                     readOnlyRootFilesystem: false."
                )
            }
        }
        Cause::ReadOnlyVolume {
            volume: Some(v),
            ..
        } if v.always_read_only() => format!(
            "{path} is on {} volume {:?}, which Kubernetes always mounts read-only. Copy the files the \
             application must change into an emptyDir (an initContainer can do it) and write there.",
            v.kind, v.name
        ),
        Cause::ReadOnlyVolume {
            volume: Some(v),
            ..
        } => format!(
            "{path} is on volume {:?} ({}), mounted read-only: set readOnly: false on its volumeMount (and on the \
             volume or PersistentVolume, if it says readOnly), or write elsewhere.",
            v.name, v.kind
        ),
        Cause::ReadOnlyVolume { host_path, .. } => format!(
            "{path} is on a read-only mount at {}{}: make the mount writable (readOnly: false), or write elsewhere.",
            mount_point.unwrap_or("?"),
            host_path
                .as_deref()
                .map(|h| format!(" (from {h} on the host)"))
                .unwrap_or_default()
        ),
        Cause::SystemMount { fs_type } => format!(
            "{path} is on {fs_type}, which unprivileged containers get read-only. Set kernel parameters through the \
             pod's securityContext.sysctls (or on the node), not from inside the container."
        ),
        Cause::HostFilesystem {
            device, after_error, ..
        } => {
            if *after_error {
                format!(
                    "The node's filesystem on {device} was made read-only by the kernel after an error: every pod \
                     writing to it fails. Cordon and drain the node, check the disk (dmesg, fsck), then remount it."
                )
            } else {
                format!(
                    "The node's filesystem on {device} is mounted read-only: pods cannot write to it. Remount it \
                     read-write on the node, or move the workload."
                )
            }
        }
        Cause::Unknown => format!(
            "{path} is on a filesystem that refused the write as read-only, though its mount looks writable: \
             check the node's mounts (findmnt) and kernel log."
        ),
    }
}

#[cfg(test)]
#[path = "readonly_cause_tests.rs"]
mod tests;
