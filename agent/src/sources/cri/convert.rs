//! Conversion of CRI messages into podmortem's model. Missing or unexpected data is kept as
//! "unknown" rather than rejected: a finding about a container with odd labels still goes out.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use podmortem_proto::cri;

use crate::model::{
    ContainerInfo, ContainerState, MountInfo, PodInfo, PodRef, PodState, SnapshotRef, LABEL_CONTAINER_NAME,
};
use crate::sources::system_time_from_nanos;

fn sorted(map: HashMap<String, String>) -> BTreeMap<String, String> {
    map.into_iter().collect()
}

/// Maps a CRI container state number; unknown numbers become [`ContainerState::Unknown`].
pub(crate) fn container_state(raw: i32) -> ContainerState {
    match cri::ContainerState::try_from(raw) {
        Ok(cri::ContainerState::ContainerCreated) => ContainerState::Created,
        Ok(cri::ContainerState::ContainerRunning) => ContainerState::Running,
        Ok(cri::ContainerState::ContainerExited) => ContainerState::Exited,
        Ok(cri::ContainerState::ContainerUnknown) | Err(_) => ContainerState::Unknown,
    }
}

/// Converts a sandbox from `ListPodSandbox`.
pub(crate) fn pod_from_list(sandbox: cri::PodSandbox) -> PodInfo {
    let meta = sandbox.metadata.unwrap_or_default();
    let labels = sorted(sandbox.labels);
    pod_info(sandbox.id, meta, sandbox.state, sandbox.created_at, labels)
}

/// Converts a sandbox from `PodSandboxStatus`.
pub(crate) fn pod_from_status(status: cri::PodSandboxStatus) -> PodInfo {
    let meta = status.metadata.unwrap_or_default();
    let labels = sorted(status.labels);
    pod_info(status.id, meta, status.state, status.created_at, labels)
}

fn pod_info(
    id: String,
    meta: cri::PodSandboxMetadata,
    state: i32,
    created_at: i64,
    labels: BTreeMap<String, String>,
) -> PodInfo {
    let from_meta = PodRef {
        namespace: meta.namespace,
        name: meta.name,
        uid: meta.uid,
    };
    PodInfo {
        id,
        pod: PodRef::from_labels(&labels, &from_meta),
        attempt: meta.attempt,
        state: match cri::PodSandboxState::try_from(state) {
            Ok(cri::PodSandboxState::SandboxReady) => PodState::Ready,
            _ => PodState::NotReady,
        },
        created_at: system_time_from_nanos(created_at),
        labels,
    }
}

/// What the verbose `info` of a `ContainerStatus` adds: sandbox id, pid and cgroup path.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct VerboseInfo {
    pub(crate) sandbox_id: Option<String>,
    pub(crate) pid: Option<u32>,
    pub(crate) cgroups_path: Option<String>,
    pub(crate) rootfs: Option<SnapshotRef>,
    pub(crate) path_env: Option<String>,
    pub(crate) readonly_rootfs: Option<bool>,
    pub(crate) cwd: Option<String>,
}

/// Reads containerd's verbose container info (a JSON document under the key `info`).
/// Anything unreadable yields an empty [`VerboseInfo`].
pub(crate) fn verbose_info(info: &HashMap<String, String>) -> VerboseInfo {
    let Some(doc) = info
        .get("info")
        .and_then(|raw| serde_json::from_str::<serde_json::Value>(raw).ok())
    else {
        return VerboseInfo::default();
    };
    VerboseInfo {
        sandbox_id: doc
            .get("sandboxID")
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        pid: doc
            .get("pid")
            .and_then(serde_json::Value::as_u64)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0),
        cgroups_path: doc
            .pointer("/runtimeSpec/linux/cgroupsPath")
            .and_then(serde_json::Value::as_str)
            .filter(|p| !p.is_empty())
            .map(str::to_owned),
        rootfs: match (doc.get("snapshotter"), doc.get("snapshotKey")) {
            (Some(serde_json::Value::String(snapshotter)), Some(serde_json::Value::String(key)))
                if !snapshotter.is_empty() && !key.is_empty() =>
            {
                Some(SnapshotRef {
                    snapshotter: snapshotter.clone(),
                    key: key.clone(),
                })
            }
            _ => None,
        },
        path_env: doc
            .pointer("/runtimeSpec/process/env")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_str)
            .find_map(|v| v.strip_prefix("PATH="))
            .map(str::to_owned),
        readonly_rootfs: doc
            .pointer("/runtimeSpec/root/readonly")
            .and_then(serde_json::Value::as_bool)
            .or_else(|| doc.pointer("/runtimeSpec/root").map(|_| false)),
        cwd: doc
            .pointer("/runtimeSpec/process/cwd")
            .and_then(serde_json::Value::as_str)
            .filter(|c| c.starts_with('/'))
            .map(str::to_owned),
    }
}

/// Converts a `ContainerStatus`. `pod_fallback` names the pod when the labels do not.
pub(crate) fn container_from_status(
    status: cri::ContainerStatus,
    pod_sandbox_id: String,
    info: VerboseInfo,
    pod_fallback: &PodRef,
) -> ContainerInfo {
    let meta = status.metadata.unwrap_or_default();
    let labels = sorted(status.labels);
    let name = if meta.name.is_empty() {
        labels.get(LABEL_CONTAINER_NAME).cloned().unwrap_or_default()
    } else {
        meta.name
    };
    let state = container_state(status.state);
    let memory_limit_bytes = status
        .resources
        .and_then(|r| r.linux)
        .and_then(|l| u64::try_from(l.memory_limit_in_bytes).ok())
        .filter(|b| *b > 0);
    ContainerInfo {
        id: status.id,
        pod_sandbox_id,
        name,
        pod: PodRef::from_labels(&labels, pod_fallback),
        attempt: meta.attempt,
        state,
        created_at: system_time_from_nanos(status.created_at),
        started_at: system_time_from_nanos(status.started_at),
        finished_at: system_time_from_nanos(status.finished_at),
        exit_code: (state == ContainerState::Exited).then_some(status.exit_code),
        reason: status.reason,
        message: status.message,
        image: status.image.map(|i| i.image).unwrap_or_default(),
        image_ref: status.image_ref,
        log_path: Some(status.log_path).filter(|p| !p.is_empty()).map(PathBuf::from),
        mounts: status
            .mounts
            .into_iter()
            .map(|m| MountInfo {
                container_path: m.container_path,
                host_path: m.host_path,
                readonly: m.readonly,
            })
            .collect(),
        memory_limit_bytes,
        pid: info.pid.filter(|_| state == ContainerState::Running),
        cgroups_path: info.cgroups_path,
        rootfs: info.rootfs,
        path_env: info.path_env,
        readonly_rootfs: info.readonly_rootfs,
        cwd: info.cwd,
        post_mortem: None,
        labels,
        annotations: sorted(status.annotations),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> cri::ContainerStatus {
        cri::ContainerStatus {
            id: "abc".into(),
            metadata: Some(cri::ContainerMetadata {
                name: "app".into(),
                attempt: 4,
            }),
            state: cri::ContainerState::ContainerExited as i32,
            started_at: 1_000_000_000,
            finished_at: 3_500_000_000,
            exit_code: 137,
            reason: "OOMKilled".into(),
            log_path: "/var/log/pods/shop_web-0_u-1/app/4.log".into(),
            mounts: vec![cri::Mount {
                container_path: "/data".into(),
                host_path: "/var/lib/kubelet/pods/u-1/volumes/data".into(),
                readonly: true,
                ..Default::default()
            }],
            labels: [
                ("io.kubernetes.pod.name", "web-0"),
                ("io.kubernetes.pod.namespace", "shop"),
                ("io.kubernetes.pod.uid", "u-1"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn exited_container_keeps_exit_data_and_pod_identity() {
        let c = container_from_status(status(), "sb".into(), VerboseInfo::default(), &PodRef::default());
        assert_eq!(c.state, ContainerState::Exited);
        assert_eq!(c.exit_code, Some(137));
        assert_eq!(c.attempt, 4);
        assert_eq!(c.pod.display(), "shop/web-0");
        assert_eq!(c.pod.uid, "u-1");
        assert_eq!(c.ran_for(), Some(std::time::Duration::from_millis(2500)));
        assert_eq!(
            c.log_path.as_deref(),
            Some(std::path::Path::new("/var/log/pods/shop_web-0_u-1/app/4.log"))
        );
        assert_eq!(
            c.mounts,
            vec![MountInfo {
                container_path: "/data".into(),
                host_path: "/var/lib/kubelet/pods/u-1/volumes/data".into(),
                readonly: true,
            }]
        );
    }

    #[test]
    fn missing_labels_and_unknown_state_still_convert() {
        let raw = cri::ContainerStatus {
            id: "x".into(),
            state: 42,
            ..Default::default()
        };
        let fallback = PodRef {
            namespace: "ns".into(),
            name: "from-sandbox".into(),
            uid: String::new(),
        };
        let c = container_from_status(raw, "sb".into(), VerboseInfo::default(), &fallback);
        assert_eq!(c.state, ContainerState::Unknown);
        assert_eq!(c.exit_code, None);
        assert_eq!(c.name, "");
        assert_eq!(c.pod.display(), "ns/from-sandbox");
        assert_eq!(c.finished_at, None);
    }

    #[test]
    fn verbose_info_yields_pid_and_cgroup_and_tolerates_garbage() {
        let mut info = HashMap::new();
        info.insert(
            "info".to_owned(),
            r#"{"sandboxID":"sb-1","pid":4242,"snapshotter":"overlayfs","snapshotKey":"abc",
                "runtimeSpec":{"linux":{"cgroupsPath":"/kubepods/burstable/podu-1/abc"},
                "root":{"path":"rootfs","readonly":true},
                "process":{"env":["HOME=/root","PATH=/usr/bin:/bin"],"cwd":"/app"}}}"#
                .to_owned(),
        );
        assert_eq!(
            verbose_info(&info),
            VerboseInfo {
                sandbox_id: Some("sb-1".into()),
                pid: Some(4242),
                cgroups_path: Some("/kubepods/burstable/podu-1/abc".into()),
                rootfs: Some(SnapshotRef {
                    snapshotter: "overlayfs".into(),
                    key: "abc".into()
                }),
                path_env: Some("/usr/bin:/bin".into()),
                readonly_rootfs: Some(true),
                cwd: Some("/app".into()),
            }
        );
        // The OCI spec's default: a root without `readonly` is writable.
        info.insert(
            "info".to_owned(),
            r#"{"runtimeSpec":{"root":{"path":"rootfs"}}}"#.to_owned(),
        );
        assert_eq!(verbose_info(&info).readonly_rootfs, Some(false));
        info.insert("info".to_owned(), "{not json".to_owned());
        assert_eq!(verbose_info(&info), VerboseInfo::default());
    }

    #[test]
    fn sandbox_identity_prefers_labels_then_metadata() {
        let sb = cri::PodSandbox {
            id: "sb".into(),
            metadata: Some(cri::PodSandboxMetadata {
                name: "meta-name".into(),
                uid: "meta-uid".into(),
                namespace: "meta-ns".into(),
                attempt: 1,
            }),
            state: cri::PodSandboxState::SandboxNotready as i32,
            ..Default::default()
        };
        let p = pod_from_list(sb);
        assert_eq!(p.pod.display(), "meta-ns/meta-name");
        assert_eq!(p.state, PodState::NotReady);
    }
}
