//! The inventory: the pods and containers on the node, kept current from the CRI listings and
//! containerd's events. Detectors query it to attribute a container id or a cgroup path to its
//! container and pod.

use std::collections::HashMap;

use crate::model::{ContainerInfo, ContainerState, PodInfo};
use crate::sources::{ContainerdEvent, SourceEvent};

/// Pods and containers by id.
#[derive(Debug, Default)]
pub struct Inventory {
    pods: HashMap<String, PodInfo>,
    containers: HashMap<String, ContainerInfo>,
}

impl Inventory {
    /// Folds one source event into the inventory.
    pub fn apply(&mut self, event: &SourceEvent) {
        match event {
            SourceEvent::CriSnapshot(snapshot) => {
                self.pods = snapshot.pods.iter().map(|p| (p.id.clone(), p.clone())).collect();
                self.containers = snapshot
                    .containers
                    .iter()
                    .map(|c| (c.id.clone(), c.clone()))
                    .collect();
            }
            SourceEvent::CriPod(pod) => {
                self.pods.insert(pod.id.clone(), pod.clone());
            }
            SourceEvent::CriContainer(container) => {
                self.containers
                    .insert(container.id.clone(), (**container).clone());
            }
            SourceEvent::Containerd(ContainerdEvent::ContainerDelete { id }) => {
                self.containers.remove(id);
                self.pods.remove(id);
            }
            SourceEvent::Containerd(ContainerdEvent::TaskStart { container_id, pid }) => {
                if let Some(c) = self.containers.get_mut(container_id) {
                    c.pid = Some(*pid);
                    c.state = ContainerState::Running;
                }
            }
            SourceEvent::Containerd(_) => {}
        }
    }

    /// A container by id.
    pub fn container(&self, id: &str) -> Option<&ContainerInfo> {
        self.containers.get(id)
    }

    /// A sandbox by id.
    pub fn pod(&self, sandbox_id: &str) -> Option<&PodInfo> {
        self.pods.get(sandbox_id)
    }

    /// Whether `id` is a pod sandbox rather than a container.
    pub fn is_sandbox(&self, id: &str) -> bool {
        self.pods.contains_key(id)
    }

    /// All containers.
    pub fn containers(&self) -> impl Iterator<Item = &ContainerInfo> {
        self.containers.values()
    }

    /// How many pods and containers are known.
    pub fn len(&self) -> (usize, usize) {
        (self.pods.len(), self.containers.len())
    }

    /// The container a cgroup path belongs to, in any of the layouts kubelet and containerd
    /// use (see [`container_id_from_cgroup`]).
    pub fn container_by_cgroup(&self, cgroup_path: &str) -> Option<&ContainerInfo> {
        self.containers.get(container_id_from_cgroup(cgroup_path)?)
    }
}

/// Extracts a container id from a cgroup path. Understands
/// - cgroupfs driver: `/kubepods/burstable/pod<uid>/<id>` and containerd's `/k8s.io/<id>`;
/// - systemd driver: `/kubepods.slice/.../cri-containerd-<id>.scope`;
/// - the systemd form given to runc: `kubepods-burstable-pod<uid>.slice:cri-containerd:<id>`.
///
/// Returns `None` unless the last component is a 64-digit hex id.
pub fn container_id_from_cgroup(cgroup_path: &str) -> Option<&str> {
    let last = cgroup_path.trim_end_matches('/').rsplit(['/', ':']).next()?;
    let id = last.strip_suffix(".scope").unwrap_or(last);
    let id = id.rsplit('-').next()?;
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

    #[test]
    fn container_ids_from_every_cgroup_layout() {
        let paths = [
            format!("/kubepods/burstable/pod1234-5678/{ID}"),
            format!("/k8s.io/{ID}"),
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_5678.slice/cri-containerd-{ID}.scope"),
            format!("kubepods-burstable-pod1234_5678.slice:cri-containerd:{ID}"),
            format!("/sys/fs/cgroup/memory/kubepods/besteffort/podabc/{ID}/"),
        ];
        for path in &paths {
            assert_eq!(container_id_from_cgroup(path), Some(ID), "{path}");
        }
    }

    #[test]
    fn non_container_cgroups_yield_none() {
        for path in [
            "/",
            "",
            "/kubepods/burstable/pod1234",
            "/system.slice/containerd.service",
            "/k8s.io/xyz",
        ] {
            assert_eq!(container_id_from_cgroup(path), None, "{path}");
        }
    }
}
