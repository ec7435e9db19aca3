//! Detector: OOM kills that are not a container's main process dying.
//!
//! - `OOMKilledChild`: the kernel killed a process of a container that kept running (a worker,
//!   a forked job). Kubelet never reports it. Seen from the kernel log, or, when the log cannot
//!   be read, from containerd's `TaskOOM` for a container that did not exit.
//! - `NodeOOM`: a node-wide OOM; the victim, its pod if it was in one, the largest memory users
//!   at that moment (the kernel's task table) and the node's memory reading.
//! - `OOMKilled` about the node: a kill in a memory cgroup that belongs to no known container.
//!
//! A kill in a container's cgroup is held for `child_grace`: if the container's main process
//! exits meanwhile (or was the victim), the exit detector reports it as `OOMKilled`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::format::human_bytes;
use super::oom_evidence::{
    kill_container_id, kill_evidence, memory_evidence, node_memory_evidence, pod_uid_from_cgroup, rss_words,
    task_oom_evidence, LimitHit,
};
use super::{Context, Detector, Evidence, EvidenceSource, Finding, FindingKind, Severity, Subject};
use crate::model::{or_unknown, ContainerInfo, ContainerState};
use crate::sources::kmsg::oom::OomKill;
use crate::sources::kmsg::syslog::UsecCursor;
use crate::sources::kmsg::KmsgEvent;
use crate::sources::{ContainerdEvent, SourceEvent};

/// Settings of the OOM kill detector (`oom:` in the config file).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OomConfig {
    /// How long a kill in a container's cgroup waits to see whether the container's main
    /// process exits (then it is an `OOMKilled`) or it keeps running (an `OOMKilledChild`).
    #[serde(with = "humantime_serde")]
    pub child_grace: Duration,
}

impl Default for OomConfig {
    fn default() -> Self {
        OomConfig {
            child_grace: Duration::from_secs(1),
        }
    }
}

/// At most this many kills (or `TaskOOM`s) wait at once; more are reported at once.
const MAX_PENDING: usize = 1024;
/// How long an exit is remembered for matching a kill to it.
const EXIT_MEMORY: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct PendingKill {
    kill: Box<OomKill>,
    at: Option<SystemTime>,
    received: SystemTime,
    task_oom: Option<SystemTime>,
}

/// The OOM kill detector.
#[derive(Debug)]
pub struct OomKillDetector {
    config: OomConfig,
    pending: Vec<PendingKill>,
    /// `TaskOOM`s not matched to a kill yet: container id → (event time, received).
    task_ooms: HashMap<String, (SystemTime, SystemTime)>,
    /// Containers whose main process exited recently, and when.
    exits: HashMap<String, SystemTime>,
}

impl OomKillDetector {
    /// A detector with `config`.
    pub fn new(config: OomConfig) -> Self {
        OomKillDetector {
            config,
            pending: Vec::new(),
            task_ooms: HashMap::new(),
            exits: HashMap::new(),
        }
    }

    fn on_kill(&mut self, kill: &OomKill, at: Option<SystemTime>, cx: &Context<'_>, out: &mut Vec<Finding>) {
        if LimitHit::of(kill) == LimitHit::Node {
            out.push(node_oom(kill, at, cx));
            return;
        }
        let task_oom = kill_container_id(kill)
            .and_then(|id| self.task_ooms.remove(id))
            .map(|(at, _)| at);
        let pending = PendingKill {
            kill: Box::new(kill.clone()),
            at,
            received: cx.now,
            task_oom,
        };
        if self.pending.len() >= MAX_PENDING {
            self.resolve(pending, cx, out);
        } else {
            self.pending.push(pending);
        }
    }

    fn on_task_oom(&mut self, container_id: &str, at: SystemTime, cx: &Context<'_>) {
        let waiting = self
            .pending
            .iter_mut()
            .find(|p| p.task_oom.is_none() && kill_container_id(&p.kill) == Some(container_id));
        match waiting {
            Some(p) => p.task_oom = Some(at),
            None if self.task_ooms.len() < MAX_PENDING => {
                self.task_ooms.insert(container_id.to_owned(), (at, cx.now));
            }
            None => {}
        }
    }

    /// Reports what waited at least `grace`.
    fn flush(&mut self, grace: Duration, cx: &Context<'_>, out: &mut Vec<Finding>) {
        let due = |received: SystemTime| cx.now.duration_since(received).is_ok_and(|w| w >= grace);
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| due(p.received));
        self.pending = waiting;
        for p in ready {
            self.resolve(p, cx, out);
        }
        let ready: Vec<(String, SystemTime)> = self
            .task_ooms
            .iter()
            .filter(|(_, (_, received))| due(*received))
            .map(|(id, (at, _))| (id.clone(), *at))
            .collect();
        for (id, at) in ready {
            self.task_ooms.remove(&id);
            if let Some(c) = self.still_running(&id, None, cx) {
                out.push(child_without_kernel_log(c, at, cx));
            }
        }
        self.exits
            .retain(|_, t| cx.now.duration_since(*t).map_or(true, |d| d < EXIT_MEMORY));
    }

    /// The container, if it is known, running, and `victim` was not its main process.
    fn still_running<'a>(
        &self,
        id: &str,
        victim: Option<u32>,
        cx: &Context<'a>,
    ) -> Option<&'a ContainerInfo> {
        let c = cx.inventory.container(id)?;
        let main_killed = victim.is_some() && c.pid == victim;
        let exited = self.exits.contains_key(id) || c.state == ContainerState::Exited;
        (!main_killed && !exited).then_some(c)
    }

    fn resolve(&self, p: PendingKill, cx: &Context<'_>, out: &mut Vec<Finding>) {
        let Some(id) = kill_container_id(&p.kill) else {
            out.push(unattributed(&p.kill, p.at, cx));
            return;
        };
        if cx.inventory.container(id).is_none() {
            out.push(unattributed(&p.kill, p.at, cx));
            return;
        }
        // The main process died: the exit detector reports the `OOMKilled`.
        if let Some(c) = self.still_running(id, Some(p.kill.pid), cx) {
            out.push(child_kill(c, &p, cx));
        }
    }
}

fn child_kill(c: &ContainerInfo, p: &PendingKill, cx: &Context<'_>) -> Finding {
    let k = &p.kill;
    let at = p.at.unwrap_or(p.received);
    let mut f = Finding::new(
        FindingKind::OomKilledChild,
        Severity::Warning,
        Subject::container(cx.node, c),
        at,
        &[cx.node, &c.pod.namespace, &c.pod.name, c.identity_name(), &k.comm],
    );
    f.summary = format!(
        "a process of container {} in pod {} was OOM-killed and the container kept running: the kernel killed pid {} ({}) holding {} at {}",
        or_unknown(&c.name),
        c.pod.display(),
        k.pid,
        k.comm,
        rss_words(k),
        LimitHit::of(k).describe()
    );
    f.hint = format!(
        "Kubelet does not report this: a child process (a worker, a forked job) used the memory and died while the main process carried on, possibly degraded. Raise resources.limits.memory{}, or bound the workers' memory (fewer workers, a heap limit below the container's limit).",
        c.memory_limit_bytes
            .map(|b| format!(" (now {})", human_bytes(b)))
            .unwrap_or_default()
    );
    f.evidence.push(kill_evidence(k, p.at));
    if let Some(t) = p.task_oom {
        f.evidence.push(task_oom_evidence(t));
    }
    f.evidence.push(running_evidence(c));
    if let Some((m, taken)) = cx.inventory.memory(&c.id) {
        f.evidence.push(memory_evidence(
            m,
            taken,
            if taken <= at {
                "before the kill"
            } else {
                "after the kill"
            },
        ));
    }
    f
}

/// A `TaskOOM` for a container that kept running, with no kernel log to name the victim.
fn child_without_kernel_log(c: &ContainerInfo, at: SystemTime, cx: &Context<'_>) -> Finding {
    let mut f = Finding::new(
        FindingKind::OomKilledChild,
        Severity::Warning,
        Subject::container(cx.node, c),
        at,
        &[cx.node, &c.pod.namespace, &c.pod.name, c.identity_name(), "?"],
    );
    f.summary = format!(
        "the OOM killer acted in container {} of pod {} and the container kept running (the kernel log was not read, so the victim is unknown)",
        or_unknown(&c.name),
        c.pod.display()
    );
    f.hint = "A process other than the main one was likely killed: let podmortem read the kernel log (/dev/kmsg) to name it; raise resources.limits.memory or bound the workers' memory.".to_owned();
    f.evidence.push(task_oom_evidence(at));
    f.evidence.push(running_evidence(c));
    if let Some((m, taken)) = cx.inventory.memory(&c.id) {
        f.evidence.push(memory_evidence(m, taken, "at the last reading"));
    }
    f
}

fn running_evidence(c: &ContainerInfo) -> Evidence {
    let mut e = Evidence::new(
        EvidenceSource::Cri,
        None,
        format!(
            "ContainerStatus: state {:?}{}",
            c.state,
            c.pid
                .map(|p| format!(", main process pid {p}"))
                .unwrap_or_default()
        ),
    )
    .with("attempt", c.attempt)
    .with("reason", c.reason.clone());
    if let Some(pid) = c.pid {
        e = e.with("pid", pid);
    }
    if let Some(limit) = c.memory_limit_bytes {
        e = e.with("memory_limit_bytes", limit);
    }
    e
}

/// A node-wide OOM.
fn node_oom(k: &OomKill, at: Option<SystemTime>, cx: &Context<'_>) -> Finding {
    let at_ = at.unwrap_or(cx.now);
    let victim = kill_container_id(k).and_then(|id| cx.inventory.container(id));
    let mut f = Finding::new(
        FindingKind::NodeOom,
        Severity::Critical,
        Subject::Node {
            node: cx.node.to_owned(),
        },
        at_,
        &[cx.node],
    );
    let whose = match victim {
        Some(c) => format!(", container {} of pod {}", or_unknown(&c.name), c.pod.display()),
        None => match k.task_memcg.as_deref().and_then(pod_uid_from_cgroup) {
            Some(uid) => format!(", pod uid {uid}"),
            None => String::new(),
        },
    };
    f.summary = format!(
        "the node ran out of memory: the kernel killed pid {} ({}{}) holding {}",
        k.pid,
        k.comm,
        whose,
        rss_words(k)
    );
    f.hint = "Pods and daemons together used more memory than the node has: set memory requests close to real use so the scheduler does not overcommit the node, reserve memory for the system (kubelet --system-reserved, eviction thresholds), and look at the largest users in the evidence.".to_owned();
    f.evidence.push(kill_evidence(k, at));
    if !k.top_tasks.is_empty() {
        let page = procfs::page_size();
        let users: Vec<serde_json::Value> = k
            .top_tasks
            .iter()
            .map(|t| {
                let owner = cx
                    .inventory
                    .containers()
                    .find(|c| c.pid == Some(t.pid))
                    .map(|c| format!("{}[{}]", c.pod.display(), or_unknown(&c.name)));
                serde_json::json!({
                    "pid": t.pid,
                    "comm": t.comm,
                    "rss_bytes": t.rss_pages.saturating_mul(page),
                    "container": owner,
                })
            })
            .collect();
        let words: Vec<String> = k
            .top_tasks
            .iter()
            .map(|t| {
                format!(
                    "{} ({}) {}",
                    t.pid,
                    t.comm,
                    human_bytes(t.rss_pages.saturating_mul(page))
                )
            })
            .collect();
        f.evidence.push(
            Evidence::new(
                EvidenceSource::Kmsg,
                at,
                format!("largest memory users at the kill: {}", words.join(", ")),
            )
            .with("largest_users", serde_json::Value::Array(users)),
        );
    }
    if let Some((m, taken)) = cx.inventory.node_memory() {
        f.evidence
            .push(node_memory_evidence(m, taken, "at the last reading"));
    }
    f
}

/// A kill in a memory cgroup that is no known container's.
fn unattributed(k: &OomKill, at: Option<SystemTime>, cx: &Context<'_>) -> Finding {
    let cgroup = k.task_memcg.as_deref().unwrap_or("?");
    let mut f = Finding::new(
        FindingKind::OomKilled,
        Severity::Warning,
        Subject::Node {
            node: cx.node.to_owned(),
        },
        at.unwrap_or(cx.now),
        &[cx.node, cgroup, &k.comm],
    );
    f.summary = format!(
        "process {} ({}) in memory cgroup {} (no container podmortem knows) was OOM-killed holding {} at {}",
        k.pid,
        k.comm,
        cgroup,
        rss_words(k),
        LimitHit::of(k).describe()
    );
    f.hint = "The cgroup belongs to no running Kubernetes container: a system service, another runtime's container, or a container already removed. Raise that cgroup's memory limit or reduce its use.".to_owned();
    f.evidence.push(kill_evidence(k, at));
    f
}

impl Detector for OomKillDetector {
    fn name(&self) -> &'static str {
        "oom_kill"
    }

    fn on_event(&mut self, event: &SourceEvent, cx: &Context<'_>, out: &mut Vec<Finding>) {
        match event {
            SourceEvent::Kmsg(KmsgEvent::OomKill { kill, at }) => self.on_kill(kill, *at, cx, out),
            SourceEvent::Containerd(ContainerdEvent::TaskOom { container_id, at }) => {
                self.on_task_oom(container_id, at.unwrap_or(cx.now), cx);
            }
            SourceEvent::Containerd(ContainerdEvent::TaskExit {
                container_id,
                exec_id,
                ..
            }) if (exec_id.is_empty() || exec_id == container_id) && self.exits.len() < MAX_PENDING * 4 => {
                self.exits.insert(container_id.clone(), cx.now);
            }
            _ => {}
        }
    }

    fn on_tick(&mut self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        self.flush(self.config.child_grace, cx, out);
    }

    fn on_shutdown(&mut self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        self.flush(Duration::ZERO, cx, out);
    }

    fn kmsg_held_from(&self) -> Option<(u64, Option<UsecCursor>)> {
        self.pending
            .iter()
            .map(|p| (p.kill.first_seq, p.kill.before))
            .min_by_key(|(seq, _)| *seq)
    }
}

#[cfg(test)]
#[path = "oom_kill_tests.rs"]
mod tests;
