//! What the OOM detectors share: attributing a kernel OOM kill to a container, which limit was
//! hit, and the evidence each source gives about a kill.

use std::time::{Duration, SystemTime};

use super::format::human_bytes;
use super::{Evidence, EvidenceSource};
use crate::inventory::container_id_from_cgroup;
use crate::sources::kmsg::oom::{OomKill, OomScope};
use crate::sources::memory::ContainerMemory;
use crate::sources::procfs::NodeMemory;

/// A main process that exits this soon after the OOM killer killed another process of its
/// container died with it (an init such as tini passes its child's SIGKILL on as exit code
/// 137): its exit is the container's `OOMKilled`.
pub const DIED_WITH_CHILD: Duration = Duration::from_millis(500);

/// Whether a main process that exited at `exit` died with a process killed (or an OOM
/// announced) at `killed`: within [`DIED_WITH_CHILD`] after it, or up to 100 ms before it, as
/// the two clocks go.
pub fn died_with(exit: SystemTime, killed: SystemTime) -> bool {
    match exit.duration_since(killed) {
        Ok(after) => after <= DIED_WITH_CHILD,
        Err(before) => before.duration() <= Duration::from_millis(100),
    }
}

/// Whose memory limit an OOM kill enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitHit {
    /// The victim's own container's limit.
    Container,
    /// The pod's limit (kubelet's pod-level cgroup), shared by all its containers.
    Pod(String),
    /// Another cgroup above the victim's.
    Ancestor(String),
    /// None: the node ran out of memory.
    Node,
    /// Not said (a cpuset or mempolicy constraint, or an incomplete report).
    Unknown,
}

impl LimitHit {
    /// Which limit an OOM kill enforced, from its report.
    pub fn of(kill: &OomKill) -> LimitHit {
        match kill.scope {
            Some(OomScope::Global) => return LimitHit::Node,
            Some(OomScope::Other) | None => return LimitHit::Unknown,
            Some(OomScope::Memcg) => {}
        }
        match (&kill.oom_memcg, &kill.task_memcg) {
            (Some(oom), Some(task)) if oom == task => LimitHit::Container,
            (Some(oom), _) if is_pod_cgroup(oom) => LimitHit::Pod(oom.clone()),
            (Some(oom), _) => LimitHit::Ancestor(oom.clone()),
            (None, _) => LimitHit::Unknown,
        }
    }

    /// How a summary names the limit.
    pub fn describe(&self) -> &'static str {
        match self {
            LimitHit::Container => "the container's memory limit",
            LimitHit::Pod(_) => "the pod's memory limit",
            LimitHit::Ancestor(_) => "a parent cgroup's memory limit",
            LimitHit::Node => "the node's memory (node-wide OOM)",
            LimitHit::Unknown => "a memory constraint",
        }
    }
}

/// Whether a cgroup path is kubelet's pod-level cgroup (`.../pod<uid>` or `...-pod<uid>.slice`).
fn is_pod_cgroup(path: &str) -> bool {
    pod_uid_from_cgroup(path).is_some() && container_id_from_cgroup(path).is_none()
}

/// The pod uid in a cgroup path: `pod<uid>` (cgroupfs) or `kubepods-…-pod<uid>.slice` (systemd,
/// with `_` for `-`).
pub fn pod_uid_from_cgroup(path: &str) -> Option<String> {
    path.split('/').rev().find_map(|part| {
        let part = part.strip_suffix(".slice").unwrap_or(part);
        let uid = match part.rfind("-pod") {
            Some(i) => &part[i + 4..],
            None => part.strip_prefix("pod")?,
        };
        (uid.len() >= 32
            && uid
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_'))
        .then(|| uid.replace('_', "-"))
    })
}

/// The container id of the victim's memory cgroup, if it is a container's.
pub fn kill_container_id(kill: &OomKill) -> Option<&str> {
    container_id_from_cgroup(kill.task_memcg.as_deref()?)
}

/// The victim's RSS in words: `33.0 MiB`, or `?`.
pub fn rss_words(kill: &OomKill) -> String {
    kill.rss_bytes().map_or_else(|| "?".to_owned(), human_bytes)
}

/// What the kernel log said about a kill.
pub fn kill_evidence(kill: &OomKill, at: Option<SystemTime>) -> Evidence {
    let mut message = format!(
        "kernel OOM killer killed pid {} ({}), RSS {}",
        kill.pid,
        kill.comm,
        rss_words(kill)
    );
    if let (Some(usage), Some(limit)) = (kill.memcg_usage_kib, kill.memcg_limit_kib) {
        message.push_str(&format!(
            ", cgroup usage {} of limit {}",
            human_bytes(usage.saturating_mul(1024)),
            human_bytes(limit.saturating_mul(1024))
        ));
    }
    if let Some(invoker) = &kill.invoker {
        message.push_str(&format!(", invoked by {}", invoker.comm));
    }
    let mut e = Evidence::new(EvidenceSource::Kmsg, at, message)
        .with("pid", kill.pid)
        .with("comm", kill.comm.clone())
        .with("kmsg_seq", kill.seq);
    let numbers = [
        ("uid", kill.uid.map(u64::from)),
        ("total_vm_kib", kill.total_vm_kib),
        ("anon_rss_kib", kill.anon_rss_kib),
        ("file_rss_kib", kill.file_rss_kib),
        ("shmem_rss_kib", kill.shmem_rss_kib),
        ("pgtables_kib", kill.pgtables_kib),
        ("memcg_usage_kib", kill.memcg_usage_kib),
        ("memcg_limit_kib", kill.memcg_limit_kib),
        ("memcg_failcnt", kill.memcg_failcnt),
        ("rss_bytes", kill.rss_bytes()),
    ];
    for (key, value) in numbers {
        if let Some(v) = value {
            e = e.with(key, v);
        }
    }
    if let Some(adj) = kill.oom_score_adj {
        e = e.with("oom_score_adj", adj);
    }
    let texts = [
        ("constraint", kill.constraint.as_deref()),
        ("oom_memcg", kill.oom_memcg.as_deref()),
        ("task_memcg", kill.task_memcg.as_deref()),
        ("invoked_by", kill.invoker.as_ref().map(|i| i.comm.as_str())),
        (
            "gfp_mask",
            kill.invoker.as_ref().and_then(|i| i.gfp_mask.as_deref()),
        ),
    ];
    for (key, value) in texts {
        if let Some(v) = value {
            e = e.with(key, v.to_owned());
        }
    }
    if let Some(order) = kill.invoker.as_ref().and_then(|i| i.order) {
        e = e.with("order", order);
    }
    e
}

/// What containerd's `TaskOOM` event said.
pub fn task_oom_evidence(at: SystemTime) -> Evidence {
    Evidence::new(
        EvidenceSource::ContainerdEvent,
        Some(at),
        "TaskOOM: the kernel's OOM killer acted in the container's memory cgroup",
    )
}

/// What the container's memory cgroup said at its last reading.
/// `when` says when the reading was taken relative to the event: `"before the kill"`.
pub fn memory_evidence(m: &ContainerMemory, taken: SystemTime, when: &str) -> Evidence {
    let s = &m.stats;
    let limit = s.limit_bytes.map_or_else(|| "no limit".to_owned(), human_bytes);
    let message = format!(
        "memory cgroup {}: usage {} (working set {}) of {}{}{}",
        when,
        human_bytes(s.usage_bytes),
        human_bytes(s.working_set_bytes()),
        limit,
        s.oom_kill
            .map(|n| format!(", {n} OOM kills so far"))
            .unwrap_or_default(),
        s.failcnt
            .map(|n| format!(", limit hit {n} times"))
            .unwrap_or_default(),
    );
    let mut e = Evidence::new(EvidenceSource::Cgroup, Some(taken), message)
        .with("cgroup", m.cgroup.clone())
        .with("usage_bytes", s.usage_bytes)
        .with("working_set_bytes", s.working_set_bytes());
    let numbers = [
        ("limit_bytes", s.limit_bytes),
        ("peak_bytes", s.peak_bytes),
        ("failcnt", s.failcnt),
        ("oom_kill", s.oom_kill),
        ("oom", s.oom),
        ("max_events", s.max_events),
    ];
    for (key, value) in numbers {
        if let Some(v) = value {
            e = e.with(key, v);
        }
    }
    if let Some(p) = &s.pressure {
        e = e.with("memory_pressure_some_avg10", p.some.avg10);
    }
    e
}

/// What the node's memory reading said, `when` relative to the event (`"now"`).
pub fn node_memory_evidence(n: &NodeMemory, taken: SystemTime, when: &str) -> Evidence {
    let mut e = Evidence::new(
        EvidenceSource::Procfs,
        Some(taken),
        format!(
            "node memory {when}: {} available of {}",
            human_bytes(n.available_bytes),
            human_bytes(n.total_bytes)
        ),
    )
    .with("mem_total_bytes", n.total_bytes)
    .with("mem_available_bytes", n.available_bytes)
    .with("swap_free_bytes", n.swap_free_bytes);
    if let Some(p) = &n.pressure {
        e = e.with("memory_pressure_some_avg10", p.some.avg10);
        if let Some(full) = &p.full {
            e = e.with("memory_pressure_full_avg10", full.avg10);
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0b8f4e2a-7777-8888-9999-aaaabbbbcccc";
    const ID: &str = "8b1d2c3e4f5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

    fn kill(scope: OomScope, oom: &str, task: &str) -> OomKill {
        OomKill {
            scope: Some(scope),
            oom_memcg: Some(oom.to_owned()),
            task_memcg: Some(task.to_owned()),
            ..OomKill::default()
        }
    }

    #[test]
    fn which_limit_was_hit() {
        let pod = format!("/kubepods/burstable/pod{UID}");
        let ctr = format!("{pod}/{ID}");
        assert_eq!(
            LimitHit::of(&kill(OomScope::Memcg, &ctr, &ctr)),
            LimitHit::Container
        );
        assert_eq!(
            LimitHit::of(&kill(OomScope::Memcg, &pod, &ctr)),
            LimitHit::Pod(pod.clone())
        );
        assert_eq!(
            LimitHit::of(&kill(OomScope::Memcg, "/kubepods", &ctr)),
            LimitHit::Ancestor("/kubepods".into())
        );
        assert_eq!(LimitHit::of(&kill(OomScope::Global, "", &ctr)), LimitHit::Node);
        let systemd = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0b8f4e2a_7777_8888_9999_aaaabbbbcccc.slice";
        assert_eq!(pod_uid_from_cgroup(systemd).as_deref(), Some(UID));
        assert_eq!(pod_uid_from_cgroup(&ctr).as_deref(), Some(UID));
        assert_eq!(pod_uid_from_cgroup("/system.slice/podman.service"), None);
        assert_eq!(kill_container_id(&kill(OomScope::Memcg, &pod, &ctr)), Some(ID));
    }
}
