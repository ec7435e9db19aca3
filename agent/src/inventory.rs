//! The inventory: the pods and containers on the node, kept current from the CRI listings and
//! containerd's events. Detectors query it to attribute a container id or a cgroup path to its
//! container and pod.

use std::collections::HashMap;
use std::time::SystemTime;

use std::sync::Arc;

use crate::model::{ContainerInfo, ContainerState, PodInfo, PodMeta};
use crate::sources::memory::{ContainerMemory, MemoryTarget};
use crate::sources::procfs::NodeMemory;
use crate::sources::{ContainerdEvent, SourceEvent};

/// An entry and when it was last updated.
#[derive(Debug, Clone)]
struct Entry<T> {
    value: T,
    updated: SystemTime,
}

/// Pods and containers by id, with their latest memory readings.
#[derive(Debug, Default)]
pub struct Inventory {
    pods: HashMap<String, Entry<PodInfo>>,
    containers: HashMap<String, Entry<ContainerInfo>>,
    memory: HashMap<String, Entry<ContainerMemory>>,
    node_memory: Option<Entry<NodeMemory>>,
    /// The Kubernetes API's view of pods on the node, by pod uid.
    pod_meta: HashMap<String, Arc<PodMeta>>,
}

/// Replaces `map` by a listing taken at `taken_at`, keeping entries updated since then: the
/// listing does not know about them yet, or knows an older state.
fn resync<'a, T: Clone + 'a>(
    map: &mut HashMap<String, Entry<T>>,
    listed: impl Iterator<Item = (&'a String, &'a T)>,
    taken_at: SystemTime,
    now: SystemTime,
) {
    map.retain(|_, e| e.updated > taken_at);
    for (id, value) in listed {
        map.entry(id.clone()).or_insert_with(|| Entry {
            value: value.clone(),
            updated: now,
        });
    }
}

impl Inventory {
    /// Folds one source event, received at `now`, into the inventory.
    pub fn apply(&mut self, event: &SourceEvent, now: SystemTime) {
        match event {
            SourceEvent::CriSnapshot(snapshot) => {
                let pods = snapshot.pods.iter().map(|p| (&p.id, p));
                resync(&mut self.pods, pods, snapshot.taken_at, now);
                let containers = snapshot.containers.iter().map(|c| (&c.id, c));
                resync(&mut self.containers, containers, snapshot.taken_at, now);
            }
            SourceEvent::CriPod(pod) => {
                let entry = Entry {
                    value: pod.clone(),
                    updated: now,
                };
                self.pods.insert(pod.id.clone(), entry);
            }
            SourceEvent::CriContainer(container) => {
                let entry = Entry {
                    value: (**container).clone(),
                    updated: now,
                };
                self.containers.insert(container.id.clone(), entry);
            }
            SourceEvent::Containerd(ContainerdEvent::ContainerDelete { id }) => {
                self.containers.remove(id);
                self.pods.remove(id);
            }
            SourceEvent::Containerd(ContainerdEvent::TaskStart { container_id, pid }) => {
                if let Some(e) = self.containers.get_mut(container_id) {
                    e.value.pid = Some(*pid);
                    e.value.state = ContainerState::Running;
                    e.updated = now;
                }
            }
            SourceEvent::Memory(snapshot) => {
                for read in &snapshot.containers {
                    let entry = Entry {
                        value: read.clone(),
                        updated: snapshot.at,
                    };
                    self.memory.insert(read.container_id.clone(), entry);
                }
                if let Some(node) = &snapshot.node {
                    self.node_memory = Some(Entry {
                        value: node.clone(),
                        updated: snapshot.at,
                    });
                }
            }
            SourceEvent::PodMeta(meta) => {
                self.pod_meta.insert(meta.pod.uid.clone(), Arc::clone(meta));
            }
            SourceEvent::PodMetaDeleted(uid) => {
                self.pod_meta.remove(uid);
            }
            SourceEvent::Containerd(_)
            | SourceEvent::Kmsg(_)
            | SourceEvent::HostDeps(_)
            | SourceEvent::Erofs(_)
            | SourceEvent::HostMounts(_) => {}
        }
        // Readings of containers that are gone go with them.
        if matches!(
            event,
            SourceEvent::CriSnapshot(_)
                | SourceEvent::Memory(_)
                | SourceEvent::Containerd(ContainerdEvent::ContainerDelete { .. })
        ) {
            let containers = &self.containers;
            self.memory.retain(|id, _| containers.contains_key(id));
        }
    }

    /// What the Kubernetes API says about the pod with `uid`, if it is reachable and knows it.
    pub fn pod_meta(&self, uid: &str) -> Option<&Arc<PodMeta>> {
        self.pod_meta.get(uid)
    }

    /// A container's latest memory reading, and when it was taken.
    pub fn memory(&self, container_id: &str) -> Option<(&ContainerMemory, SystemTime)> {
        self.memory.get(container_id).map(|e| (&e.value, e.updated))
    }

    /// The node's latest memory reading, and when it was taken.
    pub fn node_memory(&self) -> Option<(&NodeMemory, SystemTime)> {
        self.node_memory.as_ref().map(|e| (&e.value, e.updated))
    }

    /// The running containers, for the memory sampler.
    pub fn memory_targets(&self) -> Vec<MemoryTarget> {
        let mut targets: Vec<MemoryTarget> = self
            .containers
            .values()
            .filter(|e| e.value.state == ContainerState::Running)
            .map(|e| MemoryTarget {
                container_id: e.value.id.clone(),
                pid: e.value.pid,
                cgroups_path: e.value.cgroups_path.clone(),
            })
            .collect();
        targets.sort_by(|a, b| a.container_id.cmp(&b.container_id));
        targets
    }

    /// A container by id.
    pub fn container(&self, id: &str) -> Option<&ContainerInfo> {
        self.containers.get(id).map(|e| &e.value)
    }

    /// The container whose main process is `pid`, while CRI or containerd says it runs.
    pub fn container_with_pid(&self, pid: u32) -> Option<&ContainerInfo> {
        self.containers().find(|c| c.pid == Some(pid))
    }

    /// A sandbox by id.
    pub fn pod(&self, sandbox_id: &str) -> Option<&PodInfo> {
        self.pods.get(sandbox_id).map(|e| &e.value)
    }

    /// Whether `id` is a pod sandbox rather than a container.
    pub fn is_sandbox(&self, id: &str) -> bool {
        self.pods.contains_key(id)
    }

    /// All containers.
    pub fn containers(&self) -> impl Iterator<Item = &ContainerInfo> {
        self.containers.values().map(|e| &e.value)
    }

    /// Every known pod sandbox.
    pub fn pods(&self) -> impl Iterator<Item = &PodInfo> {
        self.pods.values().map(|e| &e.value)
    }

    /// How many pods and containers are known.
    pub fn len(&self) -> (usize, usize) {
        (self.pods.len(), self.containers.len())
    }

    /// The container a cgroup path belongs to, in any of the layouts kubelet and containerd
    /// use (see [`container_id_from_cgroup`]).
    pub fn container_by_cgroup(&self, cgroup_path: &str) -> Option<&ContainerInfo> {
        self.container(container_id_from_cgroup(cgroup_path)?)
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
    fn a_late_listing_keeps_what_was_learnt_after_it_was_taken() {
        use crate::sources::CriSnapshot;
        use std::time::Duration;
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let mut inv = Inventory::default();
        let mut old = ContainerInfo::unknown("old");
        old.state = ContainerState::Running;
        inv.apply(&SourceEvent::CriContainer(Box::new(old.clone())), t(5));
        let mut fresh = ContainerInfo::unknown("fresh");
        fresh.state = ContainerState::Exited;
        inv.apply(&SourceEvent::CriContainer(Box::new(fresh)), t(12));
        // A listing taken at t=10 arrives at t=13: it knows "old" as running, not "fresh".
        let snapshot = CriSnapshot {
            taken_at: t(10),
            pods: vec![],
            containers: vec![ContainerInfo::unknown("listed")],
        };
        inv.apply(&SourceEvent::CriSnapshot(snapshot), t(13));
        assert!(inv
            .container("fresh")
            .is_some_and(|c| c.state == ContainerState::Exited));
        assert!(inv.container("listed").is_some());
        assert!(
            inv.container("old").is_none(),
            "gone: not listed, last seen before the listing"
        );
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
