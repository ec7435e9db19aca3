//! Detector: OOM kills that are not a container's main process dying.
//!
//! - `OOMKilledChild`: the kernel killed a process of a container that kept running (a worker,
//!   a forked job). Kubelet never reports it. Seen from the kernel log, or, when the log cannot
//!   be read, from containerd's `TaskOOM` for a container that did not exit.
//! - `NodeOOM`: a node-wide OOM; the victim, its pod if it was in one, the largest memory users
//!   at that moment (the kernel's task table) and the node's memory reading.
//! - `OOMKilled` about the node: a kill in a memory cgroup that belongs to no known container.
//!
//! Every kill is placed in a container, taken as it was known at the kill (it may be removed
//! before the kill is reported). On arrival: by the memory cgroup the report names, or, since
//! the kernel prints that part of its reports at most 10 times per 5 s, by the victim's
//! `/proc/<pid>/cgroup` (read by the source) or the container's main pid. At the end of
//! `child_grace`: by the cgroups' `oom_kill` counters (see [`oom_ledger`](super::oom_ledger)),
//! or containerd's `TaskOOM` at the kill. The grace also lets the kills of one container be one
//! finding counting them. A kill of a main process is the exit detector's `OOMKilled`;
//! every other kill is an `OOMKilledChild`, also when the container stops right after it. Per
//! container, the kills reported add up to what its counter counted while podmortem watched.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::format::{human_bytes, human_duration};
use super::oom_evidence::{
    died_with, kill_container_id, kill_evidence, memory_evidence, node_memory_evidence, pod_uid_from_cgroup,
    rss_words, task_oom_evidence, LimitHit,
};
use super::oom_ledger::{created_after, Explained, OomLedger, Unexplained};
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
    /// How long a kill waits before it is reported: for the cgroups' counters and containerd's
    /// `TaskOOM` to place a kill the kernel's report did not, for the container's main process
    /// to exit (the summary then says it stopped right after), and for one container's kills to
    /// be one finding.
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

/// At most this many kills wait at once; past it the oldest is reported at once. At most this
/// many containers have `TaskOOM`s waiting; past it theirs are not kept.
const MAX_PENDING: usize = 1024;
/// At most this many `TaskOOM`s wait per container; past it the oldest goes.
const MAX_TASK_OOMS: usize = 64;
/// How long an exit is remembered for matching a kill to it.
const EXIT_MEMORY: Duration = Duration::from_secs(60);
/// A `TaskOOM` this close to a kill the kernel log did not place may be its container's.
const TASK_OOM_WINDOW: Duration = Duration::from_secs(2);
/// Kills the cgroup counters counted are reported from the counters alone once no kernel log
/// report has explained them for this long past `child_grace` (the log read through syslog(2)
/// is polled).
const COUNTER_SLACK: Duration = Duration::from_secs(2);
/// How far apart the kernel log's clock and the wall clock may be.
const CLOCKS: Duration = Duration::from_millis(50);

/// How a kill was placed in its container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placed {
    /// The kernel's report named the victim's memory cgroup.
    Report,
    /// `/proc/<pid>/cgroup`, read while the victim was there.
    Procfs,
    /// The victim was the container's main process.
    MainPid,
    /// The container's `oom_kill` counter rose by more than the kills placed in it.
    Counter,
    /// containerd's `TaskOOM` for the container, at the kill (no counter to read).
    TaskOom,
}

impl Placed {
    fn as_str(self) -> &'static str {
        match self {
            Placed::Report => "kernel_report",
            Placed::Procfs => "procfs",
            Placed::MainPid => "main_pid",
            Placed::Counter => "cgroup_counter",
            Placed::TaskOom => "task_oom",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Placed::Report => "the kernel's report named the victim's memory cgroup",
            Placed::Procfs => "the victim's /proc/<pid>/cgroup, read as it died (the kernel's report did not name the cgroup: it prints that part at most 10 times per 5 s)",
            Placed::MainPid => "the victim was the container's main process",
            Placed::Counter => "the container's oom_kill counter rose by one more kill than the kernel log had named (the kernel's report did not name the cgroup: it prints that part at most 10 times per 5 s)",
            Placed::TaskOom => "containerd's TaskOOM for the container came with the kill (the kernel's report did not name the cgroup)",
        }
    }
}

#[derive(Debug)]
struct PendingKill {
    kill: Box<OomKill>,
    at: Option<SystemTime>,
    received: SystemTime,
    task_oom: Option<SystemTime>,
    /// The container, as known at the kill, and how the kill was placed in it.
    placed: Option<(ContainerInfo, Placed)>,
    /// The kill was reported from its container's counter before its report was read.
    already_reported: bool,
}

impl PendingKill {
    /// When the kill was made, as well as it is known.
    fn time(&self) -> SystemTime {
        self.at.unwrap_or(self.received)
    }
}

/// A container's main process exiting, from containerd's `TaskExit`.
#[derive(Debug, Clone, Copy)]
struct ExitSeen {
    at: SystemTime,
    pid: u32,
    status: u32,
}

/// The OOM kill detector.
#[derive(Debug)]
pub struct OomKillDetector {
    config: OomConfig,
    pending: Vec<PendingKill>,
    /// `TaskOOM`s not matched to a kill yet: container id → (event time, received), oldest first.
    task_ooms: HashMap<String, VecDeque<(SystemTime, SystemTime)>>,
    /// Containers whose main process exited recently.
    exits: HashMap<String, ExitSeen>,
    /// Containers whose main process's kill the kernel log reported (recently exited ones).
    mains_killed: HashSet<String>,
    /// The kernel's own kill counts per container.
    ledger: OomLedger,
    /// The containers the ledger accounts for, as last known (they may be removed before their
    /// kills are reported).
    known: HashMap<String, ContainerInfo>,
    /// When the detector saw its first event.
    started: Option<SystemTime>,
    /// Whether the kernel log is being read.
    kernel_log_read: bool,
}

impl OomKillDetector {
    /// A detector with `config`.
    pub fn new(config: OomConfig) -> Self {
        OomKillDetector {
            config,
            pending: Vec::new(),
            task_ooms: HashMap::new(),
            exits: HashMap::new(),
            mains_killed: HashSet::new(),
            ledger: OomLedger::default(),
            known: HashMap::new(),
            started: None,
            kernel_log_read: false,
        }
    }

    /// Container `id` as the inventory knows it now, or as it was last known.
    fn container<'a>(&'a self, id: &str, cx: &Context<'a>) -> Option<&'a ContainerInfo> {
        cx.inventory.container(id).or_else(|| self.known.get(id))
    }

    fn on_kill(&mut self, kill: &OomKill, at: Option<SystemTime>, cx: &Context<'_>, out: &mut Vec<Finding>) {
        if LimitHit::of(kill) == LimitHit::Node {
            out.push(node_oom(kill, at, cx));
            return;
        }
        let mut pending = PendingKill {
            kill: Box::new(kill.clone()),
            at,
            received: cx.now,
            task_oom: None,
            placed: None,
            already_reported: false,
        };
        // Placed now, while the container is known: it may be removed within the grace.
        self.place_on_arrival(&mut pending, cx);
        if self.pending.len() >= MAX_PENDING {
            let mut oldest = self.pending.remove(0);
            self.place(&mut oldest, cx);
            self.resolve(&oldest, cx, out);
        }
        self.pending.push(pending);
    }

    /// Puts kill `p` in container `c`'s account, placed `how`.
    fn settle_in(&mut self, p: &mut PendingKill, c: ContainerInfo, how: Placed) {
        p.already_reported = self.ledger.explain(&c.id, p.time()) == Explained::AlreadyReported;
        p.task_oom = self.take_task_oom(&c.id, p.time());
        if self.is_main(&c, p.kill.pid) {
            self.mains_killed.insert(c.id.clone());
        }
        p.placed = Some((c, how));
    }

    /// Whether `pid` is container `c`'s main process (as CRI or containerd's `TaskExit` said).
    fn is_main(&self, c: &ContainerInfo, pid: u32) -> bool {
        c.pid == Some(pid) || self.exits.get(&c.id).is_some_and(|e| e.pid == pid)
    }

    /// How far from `at` container `id`'s nearest waiting `TaskOOM` is.
    fn nearest_task_oom(&self, id: &str, at: SystemTime) -> Option<Duration> {
        self.task_ooms
            .get(id)?
            .iter()
            .map(|(t, _)| distance(*t, at))
            .min()
    }

    /// Takes container `id`'s `TaskOOM` nearest to `at`, if one waits.
    fn take_task_oom(&mut self, id: &str, at: SystemTime) -> Option<SystemTime> {
        let waiting = self.task_ooms.get_mut(id)?;
        let nearest = (0..waiting.len()).min_by_key(|&i| distance(waiting[i].0, at))?;
        let taken = waiting.remove(nearest).map(|(t, _)| t);
        if waiting.is_empty() {
            self.task_ooms.remove(id);
        }
        taken
    }

    fn on_task_oom(&mut self, container_id: &str, at: SystemTime, cx: &Context<'_>) {
        let waiting = self
            .pending
            .iter_mut()
            .find(|p| p.task_oom.is_none() && p.placed.as_ref().is_some_and(|(c, _)| c.id == container_id));
        match waiting {
            Some(p) => p.task_oom = Some(at),
            None if self.task_ooms.len() < MAX_PENDING || self.task_ooms.contains_key(container_id) => {
                let queue = self.task_ooms.entry(container_id.to_owned()).or_default();
                if queue.len() >= MAX_TASK_OOMS {
                    queue.pop_front();
                }
                queue.push_back((at, cx.now));
            }
            None => {}
        }
    }

    /// Folds a memory round's `oom_kill` counters into the ledger.
    fn on_memory(&mut self, snapshot: &crate::sources::memory::MemorySnapshot, cx: &Context<'_>) {
        for read in &snapshot.containers {
            let Some(counter) = read.stats.oom_kill else {
                continue;
            };
            let c = cx.inventory.container(&read.container_id);
            let fresh = created_after(c.or(self.known.get(&read.container_id)), self.started);
            self.ledger
                .reading(&read.container_id, counter, snapshot.at, fresh);
            if let Some(c) = c {
                if self.ledger.knows(&c.id) {
                    self.known.insert(c.id.clone(), c.clone());
                }
            }
        }
    }

    /// Places a kill the kernel log did not place: in the container whose counter counted a
    /// kill not placed yet (the oldest such count first, then the `TaskOOM` nearest the kill),
    /// else in the container of the `TaskOOM` nearest the kill, within [`TASK_OOM_WINDOW`].
    /// Places kill `p` by what it says itself: the memory cgroup its report names (or the
    /// source read from `/proc`), else the main pid of a container, also one that has exited
    /// (the kernel log read through syslog(2) may bring its kill after the exit).
    fn place_on_arrival(&mut self, p: &mut PendingKill, cx: &Context<'_>) {
        if p.placed.is_some() {
            return;
        }
        let placed = match kill_container_id(&p.kill) {
            Some(id) => {
                let how = if p.kill.memcg_from_procfs {
                    Placed::Procfs
                } else {
                    Placed::Report
                };
                self.container(id, cx).map(|c| (c.clone(), how))
            }
            None if p.kill.task_memcg.is_none() => cx
                .inventory
                .container_with_pid(p.kill.pid)
                .map(|c| c.id.clone())
                .or_else(|| {
                    self.exits
                        .iter()
                        .find(|(_, e)| e.pid == p.kill.pid)
                        .map(|(id, _)| id.clone())
                })
                .and_then(|id| self.container(&id, cx).cloned())
                .map(|c| (c, Placed::MainPid)),
            None => None,
        };
        if let Some((c, how)) = placed {
            self.settle_in(p, c, how);
        }
    }

    fn place(&mut self, p: &mut PendingKill, cx: &Context<'_>) {
        // Again, for a container the inventory learnt of during the grace (killed as it
        // started).
        self.place_on_arrival(p, cx);
        if p.placed.is_some() || p.kill.task_memcg.is_some() {
            return;
        }
        let at = p.time();
        // A rise counted at or after the kill (less a little for the clocks), nearest first,
        // before an older one; then the TaskOOM nearest the kill.
        let by_counter = self
            .ledger
            .with_surplus()
            .filter(|id| self.container(id, cx).is_some())
            .min_by_key(|id| {
                let task_oom = self.nearest_task_oom(id, at).unwrap_or(Duration::MAX);
                let seen = self.ledger.oldest_surplus(id).unwrap_or(at);
                let before_the_kill = seen.checked_add(CLOCKS).is_some_and(|s| s < at);
                (before_the_kill, distance(seen, at), task_oom, id.to_string())
            })
            .map(str::to_owned);
        if let Some(c) = by_counter.and_then(|id| self.container(&id, cx).cloned()) {
            self.settle_in(p, c, Placed::Counter);
            return;
        }
        // A kill already reported from a counter, whose report came late.
        let late = self
            .ledger
            .reported_since(at)
            .filter(|id| self.container(id, cx).is_some())
            .min()
            .map(str::to_owned);
        if let Some(c) = late.and_then(|id| self.container(&id, cx).cloned()) {
            self.settle_in(p, c, Placed::Counter);
            return;
        }
        // No counter counted it (the cgroup may be gone before it was read): the TaskOOM
        // nearest the kill.
        let by_task_oom = self
            .task_ooms
            .keys()
            .filter_map(|id| Some((self.nearest_task_oom(id, at)?, id)))
            .filter(|(d, _)| *d <= TASK_OOM_WINDOW)
            .min()
            .map(|(_, id)| id.clone());
        if let Some(c) = by_task_oom.and_then(|id| self.container(&id, cx).cloned()) {
            self.settle_in(p, c, Placed::TaskOom);
        }
    }

    /// Reports what waited at least `grace`.
    fn flush(&mut self, grace: Duration, cx: &Context<'_>, out: &mut Vec<Finding>) {
        let due = |received: SystemTime| cx.now.duration_since(received).is_ok_and(|w| w >= grace);
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| due(p.received));
        self.pending = waiting;
        let mut found = Vec::new();
        for mut p in ready {
            self.place(&mut p, cx);
            self.resolve(&p, cx, &mut found);
        }
        // TaskOOMs no kill claimed: where a counter is read, it tells the kills; elsewhere the
        // TaskOOM is all there is.
        let ready: Vec<(String, SystemTime, u64)> = self
            .task_ooms
            .iter()
            .filter(|(_, q)| q.front().is_some_and(|(_, received)| due(*received)))
            .map(|(id, q)| {
                let n = q.iter().filter(|(_, received)| due(*received)).count() as u64;
                (id.clone(), q.front().map_or(cx.now, |(at, _)| *at), n)
            })
            .collect();
        for (id, at, n) in ready {
            if let Some(q) = self.task_ooms.get_mut(&id) {
                q.retain(|(_, received)| !due(*received));
                if q.is_empty() {
                    self.task_ooms.remove(&id);
                }
            }
            if self.ledger.knows(&id) {
                continue;
            }
            if let Some(c) = self.container(&id, cx).filter(|c| self.kept_running(c, None, cx)) {
                let mut f = child_without_kernel_log(c, at, self.kernel_log_read, cx);
                f.count = n;
                found.push(f);
            }
        }
        // Kills the counters counted and no kernel log report explained.
        let counted_before = if grace.is_zero() {
            Some(cx.now)
        } else {
            cx.now.checked_sub(grace.saturating_add(COUNTER_SLACK))
        };
        let unexplained = counted_before.map_or_else(Vec::new, |before| self.ledger.take_unexplained(before));
        for mut u in unexplained {
            // A main process killed with no report read: the exit detector's OOMKilled.
            let main_killed = self.exits.get(&u.container_id).is_some_and(|e| {
                e.status == 137 && distance(e.at, u.first_seen) <= grace.saturating_add(COUNTER_SLACK)
            });
            if main_killed && self.mains_killed.insert(u.container_id.clone()) {
                u.kills -= 1;
            }
            if u.kills == 0 {
                continue;
            }
            if let Some(c) = self.container(&u.container_id, cx) {
                let running = self.kept_running(c, None, cx);
                found.push(counted_only(c, &u, running, self.kernel_log_read, cx));
            }
        }
        out.extend(merge(found));
        self.exits
            .retain(|_, e| cx.now.duration_since(e.at).map_or(true, |d| d < EXIT_MEMORY));
        let exits = &self.exits;
        self.mains_killed.retain(|id| exits.contains_key(id));
        let pending = &self.pending;
        let inventory = cx.inventory;
        let keep = |id: &str| {
            inventory.container(id).is_some()
                || exits.contains_key(id)
                || pending
                    .iter()
                    .any(|p| p.placed.as_ref().is_some_and(|(c, _)| c.id == id))
        };
        self.ledger.retain(keep);
        let ledger = &self.ledger;
        self.known.retain(|id, _| ledger.knows(id));
    }

    /// Whether container `c` runs (without a victim), or kept running after the kill of
    /// `victim` (pid, when): the victim was not its main process and the main process did not
    /// exit right after.
    fn kept_running(&self, c: &ContainerInfo, victim: Option<(u32, SystemTime)>, cx: &Context<'_>) -> bool {
        if victim.is_some_and(|(pid, _)| c.pid == Some(pid)) {
            return false;
        }
        if victim.is_some_and(|(pid, _)| self.is_main(c, pid)) {
            return false;
        }
        match (self.exits.get(&c.id), victim) {
            (Some(exit), Some((_, killed))) => !died_with(exit.at, killed),
            (Some(_), None) => false,
            (None, _) => cx
                .inventory
                .container(&c.id)
                .is_none_or(|now| now.state != ContainerState::Exited),
        }
    }

    /// Reports kill `p`: every kill but a main process's, which is the exit detector's
    /// `OOMKilled`.
    fn resolve(&self, p: &PendingKill, cx: &Context<'_>, out: &mut Vec<Finding>) {
        let Some((c, how)) = &p.placed else {
            out.push(unattributed(&p.kill, p.at, cx));
            return;
        };
        if self.is_main(c, p.kill.pid) || p.already_reported {
            return;
        }
        let kept_running = self.kept_running(c, Some((p.kill.pid, p.time())), cx);
        out.push(child_kill(c, p, *how, kept_running, cx));
    }
}

/// How far apart two moments are.
fn distance(a: SystemTime, b: SystemTime) -> Duration {
    a.duration_since(b)
        .or_else(|_| b.duration_since(a))
        .unwrap_or(Duration::ZERO)
}

/// Findings of one flush with the same fingerprint, as one finding counting them all: the
/// latest one's summary and evidence, the earliest first time.
fn merge(found: Vec<Finding>) -> Vec<Finding> {
    let mut merged: Vec<(Finding, usize)> = Vec::with_capacity(found.len());
    let mut index: HashMap<String, usize> = HashMap::new();
    for f in found {
        match index.get(&f.fingerprint).and_then(|&i| merged.get_mut(i)) {
            Some((m, n)) => {
                let count = m.count.max(1).saturating_add(f.count.max(1));
                let first = m.first_seen.min(f.first_seen);
                let last = m.last_seen.max(f.last_seen);
                *m = f;
                m.count = count;
                m.first_seen = first;
                m.last_seen = last;
                *n += 1;
            }
            None => {
                index.insert(f.fingerprint.clone(), merged.len());
                merged.push((f, 1));
            }
        }
    }
    merged
        .into_iter()
        .map(|(mut m, n)| {
            if n > 1 {
                let span = m.last_seen.duration_since(m.first_seen).unwrap_or_default();
                m.summary = format!(
                    "{} ({} such kills within {})",
                    m.summary,
                    m.count,
                    human_duration(span)
                );
            }
            m
        })
        .collect()
}

fn child_kill(
    c: &ContainerInfo,
    p: &PendingKill,
    how: Placed,
    kept_running: bool,
    cx: &Context<'_>,
) -> Finding {
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
        "a process of container {} in pod {} was OOM-killed and the container {}: the kernel killed pid {} ({}) holding {} at {}",
        or_unknown(&c.name),
        c.pod.display(),
        if kept_running {
            "kept running"
        } else {
            "stopped right after (its main process was not the victim)"
        },
        k.pid,
        k.comm,
        rss_words(k),
        limit_words(k, c)
    );
    f.hint = child_hint(c);
    f.evidence
        .push(kill_evidence(k, p.at).with("placed_by", how.as_str()));
    if how != Placed::Report {
        f.evidence.push(Evidence::new(
            EvidenceSource::Kmsg,
            p.at,
            format!("placed in the container by {}", how.describe()),
        ));
    }
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

/// Which limit a kill enforced, in words; a report without its header names none, and then the
/// container's own limit is the likely one.
fn limit_words(k: &OomKill, c: &ContainerInfo) -> &'static str {
    match LimitHit::of(k) {
        LimitHit::Unknown if k.oom_memcg.is_none() && c.memory_limit_bytes.is_some() => {
            "a memory cgroup limit (the report did not say which: likely the container's)"
        }
        hit => hit.describe(),
    }
}

fn child_hint(c: &ContainerInfo) -> String {
    format!(
        "Kubelet does not report this: a child process (a worker, a forked job) used the memory and died while the main process carried on, possibly degraded. Raise resources.limits.memory{}, or bound the workers' memory (fewer workers, a heap limit below the container's limit).",
        c.memory_limit_bytes
            .map(|b| format!(" (now {})", human_bytes(b)))
            .unwrap_or_default()
    )
}

/// An `OOMKilledChild` of container `c` whose victims are unknown, seen at `at`, with the
/// container's CRI and memory cgroup evidence after `evidence`.
fn unnamed_victims(c: &ContainerInfo, at: SystemTime, evidence: Evidence, cx: &Context<'_>) -> Finding {
    let mut f = Finding::new(
        FindingKind::OomKilledChild,
        Severity::Warning,
        Subject::container(cx.node, c),
        at,
        &[cx.node, &c.pod.namespace, &c.pod.name, c.identity_name(), "?"],
    );
    f.evidence.push(evidence);
    f.evidence.push(running_evidence(c));
    if let Some((m, taken)) = cx.inventory.memory(&c.id) {
        f.evidence.push(memory_evidence(m, taken, "at the last reading"));
    }
    f
}

/// A `TaskOOM` for a container that kept running, with no kernel log report and no counter to
/// name or count the victim.
fn child_without_kernel_log(
    c: &ContainerInfo,
    at: SystemTime,
    kernel_log_read: bool,
    cx: &Context<'_>,
) -> Finding {
    let mut f = unnamed_victims(c, at, task_oom_evidence(at), cx);
    let why = if kernel_log_read {
        "the kernel log did not report the kill"
    } else {
        "the kernel log was not read"
    };
    f.summary = format!(
        "the OOM killer acted in container {} of pod {} and the container kept running ({why}, so the victim is unknown)",
        or_unknown(&c.name),
        c.pod.display()
    );
    f.hint = if kernel_log_read {
        "A process other than the main one was likely killed; raise resources.limits.memory or bound the workers' memory.".to_owned()
    } else {
        "A process other than the main one was likely killed: let podmortem read the kernel log (/dev/kmsg) to name it; raise resources.limits.memory or bound the workers' memory.".to_owned()
    };
    f
}

/// Kills container `c`'s `oom_kill` counter counted that no kernel log report explained (the
/// log was not read, or the kernel overwrote the records before they were read).
fn counted_only(
    c: &ContainerInfo,
    u: &Unexplained,
    kept_running: bool,
    kernel_log_read: bool,
    cx: &Context<'_>,
) -> Finding {
    let counter = Evidence::new(
        EvidenceSource::Cgroup,
        Some(u.last_seen),
        format!(
            "the memory cgroup's oom_kill counter rose by {} that no kernel log report explained (now {})",
            u.kills, u.counter
        ),
    )
    .with("oom_kill", u.counter)
    .with("unexplained_kills", u.kills);
    let mut f = unnamed_victims(c, u.first_seen, counter, cx);
    f.last_seen = u.last_seen;
    f.count = u.kills;
    let why = if kernel_log_read {
        "the kernel log did not report them in time: the kernel may have overwritten its records before they were read"
    } else {
        "the kernel log was not read"
    };
    f.summary = format!(
        "the kernel's OOM killer killed {} process{} in container {} of pod {} and the container {} ({why}, so the victims are unknown)",
        u.kills,
        if u.kills == 1 { "" } else { "es" },
        or_unknown(&c.name),
        c.pod.display(),
        if kept_running { "kept running" } else { "has stopped since" }
    );
    f.hint = child_hint(c);
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
        self.started.get_or_insert(cx.now);
        match event {
            SourceEvent::Kmsg(KmsgEvent::OomKill { kill, at }) => {
                self.kernel_log_read = true;
                self.on_kill(kill, *at, cx, out);
            }
            SourceEvent::Kmsg(_) => self.kernel_log_read = true,
            SourceEvent::Containerd(ContainerdEvent::TaskOom { container_id, at }) => {
                self.on_task_oom(container_id, at.unwrap_or(cx.now), cx);
            }
            SourceEvent::Containerd(ContainerdEvent::TaskExit {
                container_id,
                exec_id,
                pid,
                exit_status,
                exited_at,
            }) if (exec_id.is_empty() || exec_id == container_id) && self.exits.len() < MAX_PENDING * 4 => {
                let exit = ExitSeen {
                    at: exited_at.unwrap_or(cx.now),
                    pid: *pid,
                    status: *exit_status,
                };
                self.exits.insert(container_id.clone(), exit);
            }
            SourceEvent::Memory(snapshot) => self.on_memory(snapshot, cx),
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
