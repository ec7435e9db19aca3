//! Detector: a container's main process exited abnormally (non-zero code or killed by a
//! signal). It merges what containerd's `TaskExit` event and CRI's `ContainerStatus` say about
//! the same exit into one finding, and reports each exit once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::exec_attribution::{attribute, log_evidence, Attribution};
use super::exit_code::{self, ExitCause};
use super::format::{human_bytes, human_duration};
use super::oom_evidence::{
    died_with, kill_container_id, kill_evidence, memory_evidence, rss_words, task_oom_evidence, LimitHit,
};
use super::{Context, Detector, Evidence, EvidenceSource, Finding, FindingKind, Severity, Subject};
use crate::catalogue::Catalogue;
use crate::model::{or_unknown, ContainerInfo, ContainerState};
use crate::sources::kmsg::oom::OomKill;
use crate::sources::kmsg::KmsgEvent;
use crate::sources::{ContainerdEvent, SourceEvent};

/// Settings of the exit detector (`exit:` in the config file).
#[derive(Debug, Clone, serde::Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ExitConfig {
    /// Report exits by SIGTERM (code 143). They are usually stops that kubelet asked for
    /// (deletion, rollout, eviction), so they are reported at `info` severity.
    pub report_sigterm: bool,
    /// How long to wait for the runtime to record an exit that containerd announced before
    /// reporting it from the event alone (the container may have been removed at once).
    #[serde(with = "humantime_serde")]
    pub runtime_grace: Duration,
    /// On the very first start (no state in `--state-dir`), also report exits that happened
    /// this long before podmortem started. Later starts report everything since the last run.
    #[serde(with = "humantime_serde")]
    pub first_start_lookback: Duration,
}

impl Default for ExitConfig {
    fn default() -> Self {
        ExitConfig {
            report_sigterm: true,
            runtime_grace: Duration::from_secs(3),
            first_start_lookback: Duration::from_secs(300),
        }
    }
}

/// At most this many announced exits wait for the runtime's record at once.
const MAX_PENDING: usize = 4096;

/// An exit announced by containerd, waiting for CRI's record of it.
#[derive(Debug, Clone)]
struct PendingExit {
    pid: u32,
    exit_status: u32,
    exited_at: Option<SystemTime>,
    received: SystemTime,
    /// The container as known when the exit was announced.
    container: Option<ContainerInfo>,
}

/// The exit detector.
#[derive(Debug)]
pub struct ContainerExitDetector {
    config: ExitConfig,
    /// Exits that finished at or before this moment were handled by an earlier run.
    watermark: SystemTime,
    pending: HashMap<String, PendingExit>,
    /// Containers whose exit has been handled, and when; pruned as containers disappear.
    handled: HashMap<String, SystemTime>,
    /// Containers in whose memory cgroup containerd reported an OOM kill, and when.
    ooms: HashMap<String, SystemTime>,
    /// The kernel's latest OOM kill in each container's memory cgroup.
    kills: HashMap<String, KillSeen>,
    /// The host dependency catalogue, to name the package of a program the host lacks.
    catalogue: Arc<Catalogue>,
    /// The host's distribution family, from the latest host check.
    family: Option<&'static str>,
    /// How long an exit by SIGKILL waits for the kernel's report of an OOM kill (the kernel
    /// log read through `syslog(2)` is polled, so the report may come after the exit).
    kernel_log_wait: Duration,
    /// Exits by SIGKILL waiting for the kernel's report, by container id.
    awaiting_kill: HashMap<String, AwaitingKill>,
    /// Whether the kernel log is being read: then an exit by SIGKILL is an OOM kill only when
    /// the kernel reported one for the container at the exit.
    kernel_log_read: bool,
}

/// An exit by SIGKILL (code 137) whose finding waits for the kernel log.
#[derive(Debug)]
struct AwaitingKill {
    container: ContainerInfo,
    event: Option<PendingExit>,
    received: SystemTime,
}

/// The exit code of a process killed by SIGKILL.
const KILLED: i32 = 137;

/// Whether what came at `received` has waited `grace` by `now` (always, for no grace).
fn waited(received: SystemTime, grace: Duration, now: SystemTime) -> bool {
    grace.is_zero() || now.duration_since(received).is_ok_and(|w| w >= grace)
}

/// A kernel OOM kill, as the kernel log reported it.
#[derive(Debug, Clone)]
struct KillSeen {
    kill: Box<OomKill>,
    at: Option<SystemTime>,
    received: SystemTime,
}

impl ContainerExitDetector {
    /// A detector that treats exits finished at or before `watermark` as already handled.
    pub fn new(config: ExitConfig, watermark: SystemTime) -> Self {
        ContainerExitDetector {
            config,
            watermark,
            pending: HashMap::new(),
            handled: HashMap::new(),
            ooms: HashMap::new(),
            kills: HashMap::new(),
            catalogue: Arc::new(Catalogue::empty()),
            family: None,
            kernel_log_wait: Duration::ZERO,
            awaiting_kill: HashMap::new(),
            kernel_log_read: false,
        }
    }

    /// Lets an exit by SIGKILL wait up to `wait` for the kernel log's report of the OOM kill
    /// before it is reported: the `syslog(2)` reader sees the kill up to a poll later.
    pub fn with_kernel_log_wait(mut self, wait: Duration) -> Self {
        self.kernel_log_wait = wait;
        self
    }

    /// The kernel's kill of container `c`'s main process, or, with no main pid known, any
    /// kill in its cgroup.
    fn kill_of(&self, c: &ContainerInfo, event: Option<&PendingExit>) -> Option<&KillSeen> {
        self.kills.get(&c.id).filter(|k| is_main(c, event, k.kill.pid))
    }

    /// Reports the exits that waited for the kernel log at least `grace`.
    fn flush_awaiting(&mut self, grace: Duration, cx: &Context<'_>, out: &mut Vec<Finding>) {
        let due: Vec<AwaitingKill> = self
            .awaiting_kill
            .extract_if(|_, a| waited(a.received, grace, cx.now))
            .map(|(_, a)| a)
            .collect();
        for a in due {
            out.extend(self.finding(&a.container, KILLED, a.event.as_ref(), true, cx));
        }
    }

    /// Names packages from `catalogue` when a container fails for a program the host lacks.
    pub fn with_catalogue(mut self, catalogue: Arc<Catalogue>) -> Self {
        self.catalogue = catalogue;
        self
    }

    fn on_task_exit(
        &mut self,
        container_id: &str,
        pid: u32,
        exit_status: u32,
        exited_at: Option<SystemTime>,
        cx: &Context<'_>,
    ) {
        if cx.inventory.is_sandbox(container_id) || self.handled.contains_key(container_id) {
            return;
        }
        if self.pending.len() >= MAX_PENDING && !self.pending.contains_key(container_id) {
            tracing::warn!(
                container_id,
                "too many exits waiting for the runtime; this one is left to the next resync"
            );
            return;
        }
        self.pending.insert(
            container_id.to_owned(),
            PendingExit {
                pid,
                exit_status,
                exited_at,
                received: cx.now,
                container: cx.inventory.container(container_id).cloned(),
            },
        );
    }

    fn on_container(&mut self, c: &ContainerInfo, cx: &Context<'_>, out: &mut Vec<Finding>) {
        if c.state != ContainerState::Exited || self.handled.contains_key(&c.id) {
            return;
        }
        let Some(code) = c.exit_code else { return };
        let pending = self.pending.remove(&c.id);
        self.handled.insert(c.id.clone(), cx.now);
        let before_watermark = c.finished_at.is_some_and(|t| t <= self.watermark);
        if pending.is_none() && before_watermark {
            return;
        }
        // Only when an OOM kill is known from containerd or CRI: a plain SIGKILL is not held.
        let oom_known = c.reason == "OOMKilled" || self.ooms.contains_key(&c.id);
        if code == KILLED
            && oom_known
            && !self.kernel_log_wait.is_zero()
            && self.kill_of(c, pending.as_ref()).is_none()
            && self.awaiting_kill.len() < MAX_PENDING
        {
            self.awaiting_kill.insert(
                c.id.clone(),
                AwaitingKill {
                    container: c.clone(),
                    event: pending,
                    received: cx.now,
                },
            );
            return;
        }
        if let Some(f) = self.finding(c, code, pending.as_ref(), true, cx) {
            out.push(f);
        }
    }

    /// Builds the finding, or `None` when the exit is not abnormal (or not reported).
    fn finding(
        &self,
        c: &ContainerInfo,
        code: i32,
        event: Option<&PendingExit>,
        from_cri: bool,
        cx: &Context<'_>,
    ) -> Option<Finding> {
        let cause = exit_code::explain(code);
        let sigterm = cause.signal.as_ref().is_some_and(|s| s.name == "SIGTERM");
        if code == 0 || (sigterm && !self.config.report_sigterm) {
            return None;
        }
        let oom_at = self.ooms.get(&c.id).copied();
        let kill = self.kill_of(c, event);
        let exited_at = c.finished_at.or_else(|| event.and_then(|e| e.exited_at));
        // An OOM kill is a SIGKILL: exit code 137. CRI's reason (and containerd's TaskOOM) also
        // mark containers whose child was killed and which exited later for another reason (a
        // stop, a deletion): with the kernel log read, only a kill of the main process, or of
        // another of its processes right before the exit, makes the exit an OOM kill.
        let oom_said = c.reason == "OOMKilled" || oom_at.is_some();
        let died_with_child = match (oom_at, exited_at) {
            (Some(oom), Some(exit)) => died_with(exit, oom),
            _ => false,
        };
        let oom_killed =
            code == KILLED && (kill.is_some() || died_with_child || (oom_said && !self.kernel_log_read));
        let mut evidence = Vec::with_capacity(5);
        if code == KILLED && oom_said && !oom_killed {
            evidence.push(not_oom_evidence(c, event));
        }
        if let Some(k) = kill.filter(|_| oom_killed) {
            evidence.push(kill_evidence(&k.kill, k.at));
        }
        if let Some(at) = oom_at {
            evidence.push(task_oom_evidence(at));
        }
        if let Some(e) = event {
            evidence.push(
                Evidence::new(
                    EvidenceSource::ContainerdEvent,
                    e.exited_at,
                    format!("TaskExit: pid {} exited with status {}", e.pid, e.exit_status),
                )
                .with("pid", e.pid)
                .with("exit_status", e.exit_status),
            );
        }
        if from_cri {
            evidence.push(cri_evidence(c, code));
        }
        let attribution = match &c.post_mortem {
            Some(pm) if !oom_killed => {
                let attribution = attribute(c, code, pm, &self.catalogue, self.family);
                if attribution.is_none() {
                    evidence.extend(log_evidence(c, pm));
                }
                attribution
            }
            _ => None,
        };
        if let Some(a) = &attribution {
            evidence.extend(a.evidence.iter().cloned());
        }
        let severity = if sigterm {
            Severity::Info
        } else {
            Severity::Warning
        };
        let at = c
            .finished_at
            .or_else(|| event.and_then(|e| e.exited_at))
            .unwrap_or(cx.now);
        if oom_killed {
            if let Some((m, taken)) = cx.inventory.memory(&c.id) {
                evidence.push(memory_evidence(
                    m,
                    taken,
                    if taken <= at {
                        "before the kill"
                    } else {
                        "after the kill"
                    },
                ));
            }
        }
        let name = c.identity_name();
        let code_text = code.to_string();
        let (kind, identity) = if oom_killed {
            (
                FindingKind::OomKilled,
                vec![cx.node, &c.pod.namespace, &c.pod.name, name],
            )
        } else if let Some(Attribution {
            kind: Some(kind),
            program,
            ..
        }) = &attribution
        {
            (*kind, vec![cx.node, &c.pod.namespace, &c.pod.name, name, program])
        } else {
            (
                FindingKind::ContainerExited,
                vec![cx.node, &c.pod.namespace, &c.pod.name, name, &code_text],
            )
        };
        let mut f = Finding::new(kind, severity, Subject::container(cx.node, c), at, &identity);
        let kill = kill.map(|k| &*k.kill);
        f.summary = summary(c, &cause, oom_killed, kill);
        if oom_killed && kill.is_none() && died_with_child && self.kernel_log_read {
            f.summary.push_str(
                ": it exited right after the OOM killer killed another of its processes (see OOMKilledChild)",
            );
        }
        f.hint = hint(c, &cause, oom_killed, kill);
        if let Some(a) = attribution.filter(|a| !a.what.is_empty()) {
            f.summary = format!("{}: {}", f.summary, a.what);
            if let Some(hint) = a.hint {
                f.hint = hint;
            }
        }
        f.evidence = evidence;
        Some(f)
    }
}

/// Why a SIGKILL exit that CRI or containerd marked as OOM is not an OOM kill.
fn not_oom_evidence(c: &ContainerInfo, event: Option<&PendingExit>) -> Evidence {
    let main = event.map(|e| e.pid).or(c.pid).filter(|p| *p != 0);
    let mut e = Evidence::new(
        EvidenceSource::Kmsg,
        None,
        format!(
            "not an OOM kill: the kernel's OOM killer did not kill the main process{} and killed none of the container's processes right before the exit; containerd marks a container OOMKilled once any process in its memory cgroup was OOM-killed, and another process sent this SIGKILL (a stop or deletion through the runtime, a failed liveness probe, a kill on the node)",
            main.map(|p| format!(" (pid {p})")).unwrap_or_default()
        ),
    )
    .with("cri_reason", c.reason.clone());
    if let Some(pid) = main {
        e = e.with("main_pid", pid);
    }
    e
}

/// Whether the kernel's victim `pid` is container `c`'s main process: the pid that exited, or
/// the container's pid; with neither known, any victim in its cgroup counts.
fn is_main(c: &ContainerInfo, event: Option<&PendingExit>, pid: u32) -> bool {
    event
        .map(|e| e.pid)
        .or(c.pid)
        .filter(|p| *p != 0)
        .is_none_or(|main| main == pid)
}

fn cri_evidence(c: &ContainerInfo, code: i32) -> Evidence {
    let mut e = Evidence::new(
        EvidenceSource::Cri,
        c.finished_at,
        format!(
            "ContainerStatus: state EXITED, exit code {code}, reason {:?}{}",
            c.reason,
            if c.message.is_empty() {
                String::new()
            } else {
                format!(", message {:?}", c.message)
            }
        ),
    )
    .with("exit_code", code)
    .with("reason", c.reason.clone())
    .with("attempt", c.attempt)
    .with("image", c.image.clone());
    if !c.message.is_empty() {
        e = e.with("message", c.message.clone());
    }
    if let Some(t) = c.started_at {
        e = e.with("started_at", super::finding::format_time(t));
    }
    if let Some(t) = c.finished_at {
        e = e.with("finished_at", super::finding::format_time(t));
    }
    if let Some(d) = c.ran_for() {
        e = e.with("ran_for_seconds", d.as_secs_f64());
    }
    if let Some(limit) = c.memory_limit_bytes {
        e = e.with("memory_limit_bytes", limit);
    }
    if let Some(path) = &c.log_path {
        e = e.with("log_path", path.display().to_string());
    }
    e
}

fn summary(c: &ContainerInfo, cause: &ExitCause, oom_killed: bool, kill: Option<&OomKill>) -> String {
    let who = format!("container {} of pod {}", or_unknown(&c.name), c.pod.display());
    let what = match &cause.signal {
        _ if oom_killed => match kill {
            Some(k) => format!(
                "was OOM-killed (exit code {}): the kernel killed pid {} ({}) holding {} at {}",
                cause.code,
                k.pid,
                k.comm,
                rss_words(k),
                LimitHit::of(k).describe()
            ),
            None => format!("was OOM-killed (exit code {})", cause.code),
        },
        // "killed by SIGKILL" needs no gloss; "segmentation fault" does.
        Some(sig) if cause.meaning.starts_with("killed by") => {
            format!("was killed by {} (exit code {})", sig.name, cause.code)
        }
        Some(sig) => format!(
            "was killed by {} (exit code {}, {})",
            sig.name, cause.code, cause.meaning
        ),
        None => format!("exited with code {} ({})", cause.code, cause.meaning),
    };
    let ran = c
        .ran_for()
        .map(|d| format!(" after running {}", human_duration(d)))
        .unwrap_or_default();
    let attempt = if c.attempt > 0 {
        format!(", restart {}", c.attempt)
    } else {
        String::new()
    };
    format!("{who} {what}{ran}{attempt}")
}

fn hint(c: &ContainerInfo, cause: &ExitCause, oom_killed: bool, kill: Option<&OomKill>) -> String {
    let logs = format!(
        "kubectl logs -n {} {} -c {} --previous",
        if c.pod.namespace.is_empty() {
            "<namespace>"
        } else {
            &c.pod.namespace
        },
        if c.pod.name.is_empty() {
            "<pod>"
        } else {
            &c.pod.name
        },
        if c.name.is_empty() { "<container>" } else { &c.name },
    );
    let signal = cause.signal.as_ref().map(|s| s.name.as_ref());
    if oom_killed {
        match kill.map(LimitHit::of) {
            Some(LimitHit::Node) => return "The node ran out of memory and the kernel chose this container: see the NodeOOM finding; set memory requests close to real use so the node is not overcommitted.".to_owned(),
            Some(LimitHit::Pod(_)) => return "The pod's memory limit (the sum of its containers' limits) was hit: another container of the pod may hold the memory; raise the limits or reduce the pod's memory use.".to_owned(),
            _ => {}
        }
        return format!(
            "The container hit its memory limit{}: raise resources.limits.memory or reduce the process's memory use.",
            c.memory_limit_bytes
                .map(|b| format!(" ({})", human_bytes(b)))
                .unwrap_or_default()
        );
    }
    match (cause.code, signal) {
        (126, _) => "The command exists but cannot be executed: check its permissions (chmod +x), its interpreter line, and that the image is built for this node's architecture.".to_owned(),
        (127, _) => format!("The command (or something it runs) was not found: check command/args, that the binary is in the image, and for pods that run tools on the host that the host has them. See `{logs}`."),
        (125, _) => "The runtime could not start the command: check the image and the container's securityContext.".to_owned(),
        (_, Some("SIGKILL")) => format!("SIGKILL comes from the kernel OOM killer, a liveness probe that kept failing past the grace period, or an external kill: check the node's kernel log and the pod's events. See `{logs}`."),
        (_, Some("SIGSEGV" | "SIGBUS")) => format!("The process crashed on a bad memory access: a bug in it or a native library, or a binary built for another libc/CPU. See `{logs}`."),
        (_, Some("SIGILL")) => "The binary uses a CPU instruction this node lacks: build for this node's CPU or schedule the pod on newer nodes.".to_owned(),
        (_, Some("SIGABRT")) => format!("The process aborted itself (failed assertion, uncaught exception, failed allocation). See `{logs}`."),
        (_, Some("SIGTERM")) => "SIGTERM is how kubelet stops containers (pod deletion, rollout, eviction, failed liveness probe); if nothing asked for it, check the pod's events.".to_owned(),
        _ => format!("The application exited with an error: read its last output with `{logs}`."),
    }
}

impl Detector for ContainerExitDetector {
    fn name(&self) -> &'static str {
        "container_exit"
    }

    fn on_event(&mut self, event: &SourceEvent, cx: &Context<'_>, out: &mut Vec<Finding>) {
        match event {
            SourceEvent::Containerd(ContainerdEvent::TaskExit {
                container_id,
                exec_id,
                pid,
                exit_status,
                exited_at,
            }) if exec_id.is_empty() || exec_id == container_id => {
                self.on_task_exit(container_id, *pid, *exit_status, *exited_at, cx);
            }
            SourceEvent::Kmsg(KmsgEvent::OomKill { kill, at }) => {
                self.kernel_log_read = true;
                // A report without its header (rate-limited by the kernel) names no cgroup:
                // a main process is known by its pid.
                let by_pid = || {
                    cx.inventory
                        .container_with_pid(kill.pid)
                        .map(|c| c.id.as_str())
                        .or_else(|| {
                            self.pending
                                .iter()
                                .find(|(_, p)| p.pid == kill.pid)
                                .map(|(id, _)| id.as_str())
                        })
                        // An exit waiting for this report (CRI forgets the pid of an exited
                        // container).
                        .or_else(|| {
                            self.awaiting_kill
                                .iter()
                                .find(|(_, a)| {
                                    a.event.as_ref().map(|e| e.pid).or(a.container.pid) == Some(kill.pid)
                                })
                                .map(|(id, _)| id.as_str())
                        })
                };
                let Some(id) = kill_container_id(kill)
                    .or_else(|| kill.task_memcg.is_none().then(by_pid).flatten())
                    .map(str::to_owned)
                else {
                    return;
                };
                let id = id.as_str();
                // A child killed after the main process does not hide the main process's kill.
                let main = cx
                    .inventory
                    .container(id)
                    .and_then(|c| c.pid)
                    .or_else(|| self.pending.get(id).map(|p| p.pid))
                    .or_else(|| {
                        self.awaiting_kill
                            .get(id)
                            .and_then(|a| a.event.as_ref().map(|e| e.pid))
                    });
                let hides_main = self
                    .kills
                    .get(id)
                    .is_some_and(|k| Some(k.kill.pid) == main && Some(kill.pid) != main);
                if !hides_main && (self.kills.len() < MAX_PENDING || self.kills.contains_key(id)) {
                    let seen = KillSeen {
                        kill: kill.clone(),
                        at: *at,
                        received: cx.now,
                    };
                    self.kills.insert(id.to_owned(), seen);
                }
                // An exit by SIGKILL that waited for this report.
                let awaited = self
                    .awaiting_kill
                    .get(id)
                    .is_some_and(|a| is_main(&a.container, a.event.as_ref(), kill.pid));
                if let Some(a) = awaited.then(|| self.awaiting_kill.remove(id)).flatten() {
                    out.extend(self.finding(&a.container, KILLED, a.event.as_ref(), true, cx));
                }
            }
            SourceEvent::Containerd(ContainerdEvent::TaskOom { container_id, at })
                if self.ooms.len() < MAX_PENDING || self.ooms.contains_key(container_id) =>
            {
                self.ooms.insert(container_id.clone(), at.unwrap_or(cx.now));
            }
            SourceEvent::Kmsg(_) => self.kernel_log_read = true,
            // A sandbox's pause process exited: not a container crash.
            SourceEvent::CriPod(pod) => {
                self.pending.remove(&pod.id);
            }
            SourceEvent::CriContainer(c) => self.on_container(c, cx, out),
            SourceEvent::HostDeps(report) => self.family = report.family,
            SourceEvent::CriSnapshot(snapshot) => {
                for c in &snapshot.containers {
                    self.on_container(c, cx, out);
                }
                for pod in &snapshot.pods {
                    self.pending.remove(&pod.id);
                }
                // Forget containers that are gone. Only what was handled before the listing was
                // taken can be judged by it: a container that exited since is not in it yet.
                let listed: HashSet<&str> = snapshot.containers.iter().map(|c| c.id.as_str()).collect();
                let gone =
                    |id: &String, at: &SystemTime| !listed.contains(id.as_str()) && *at < snapshot.taken_at;
                self.handled.retain(|id, at| !gone(id, at));
                self.ooms.retain(|id, at| !gone(id, at));
                self.kills.retain(|id, k| !gone(id, &k.received));
            }
            _ => {}
        }
    }

    fn on_tick(&mut self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        self.flush_pending(self.config.runtime_grace, cx, out);
        self.flush_awaiting(self.kernel_log_wait, cx, out);
    }

    fn on_shutdown(&mut self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        self.flush_pending(Duration::ZERO, cx, out);
        self.flush_awaiting(Duration::ZERO, cx, out);
    }
}

impl ContainerExitDetector {
    /// Reports, from the event and what the inventory knew, the announced exits that the
    /// runtime has not recorded within `grace`.
    fn flush_pending(&mut self, grace: Duration, cx: &Context<'_>, out: &mut Vec<Finding>) {
        let overdue: Vec<(String, PendingExit)> = self
            .pending
            .extract_if(|_, p| waited(p.received, grace, cx.now))
            .collect();
        for (id, p) in overdue {
            if cx.inventory.is_sandbox(&id) {
                continue;
            }
            self.handled.insert(id.clone(), cx.now);
            let mut c = p
                .container
                .clone()
                .or_else(|| cx.inventory.container(&id).cloned())
                .unwrap_or_else(|| ContainerInfo::unknown(&id));
            c.finished_at = p.exited_at;
            let code = i32::try_from(p.exit_status).unwrap_or(i32::MAX);
            if let Some(f) = self.finding(&c, code, Some(&p), false, cx) {
                out.push(f);
            }
        }
    }
}

#[cfg(test)]
#[path = "container_exit_tests.rs"]
mod tests;
