//! `ReadOnlyFilesystemWrite`: a container tried to write where the filesystem is read-only.
//!
//! Two signals feed it. The kernel tracer reports the failing syscall itself (path, syscall,
//! process) and the covering mount read while the process lived. When the tracer cannot run,
//! or missed the call, the exited attempt's log saying `Read-only file system` gives the same
//! finding with less detail. Either way the mount analysis
//! ([`classify`](super::readonly_cause::classify)) names the cause and the fix.
//!
//! Repeats of the same container and path are one finding with a count: it is reported at
//! once, then at most every `repeat_interval` with the occurrences in between counted in.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::readonly_cause::{classify, hint, Cause, Verdict};
use super::{Context, Detector, Evidence, EvidenceSource, Finding, FindingKind, Severity, Subject};
use crate::model::{or_unknown, ContainerInfo, ContainerState};
use crate::sources::erofs_tracer::{ErofsEvent, MountLookup};
use crate::sources::host_fs::HostMounts;
use crate::sources::logs::erofs::ErofsLine;
use crate::sources::mountinfo::{Mount, MountTable};
use crate::sources::SourceEvent;

/// How long a tracer event waits for its container to appear in the inventory (a container
/// that fails at once can be reported by the kernel before the runtime lists it). A container
/// the runtime does not list by then is not a CRI container (another containerd namespace,
/// another runtime): its event is dropped and counted.
const WAIT_FOR_CONTAINER: Duration = Duration::from_secs(3);
/// At most this many tracer events wait for their container.
const MAX_WAITING: usize = 256;
/// At most this many findings are tracked for repeats.
const MAX_TRACKED: usize = 4096;
/// At most this many containers are remembered as reported by the tracer, or as handled exits.
const MAX_REMEMBERED: usize = 4096;

/// A finding being repeated.
#[derive(Debug)]
struct Tracked {
    last_reported: SystemTime,
    /// Occurrences since then, and the latest of them.
    pending: u64,
    latest: Option<Finding>,
}

/// A bounded set remembering the most recent insertions.
#[derive(Debug, Default)]
struct Recent<T: std::hash::Hash + Eq + Clone> {
    set: HashSet<T>,
    order: VecDeque<T>,
}

impl<T: std::hash::Hash + Eq + Clone> Recent<T> {
    /// Inserts `item`; `false` if it was there.
    fn insert(&mut self, item: T) -> bool {
        if !self.set.insert(item.clone()) {
            return false;
        }
        self.order.push_back(item);
        if self.order.len() > MAX_REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    fn contains(&self, item: &T) -> bool {
        self.set.contains(item)
    }
}

/// The detector.
#[derive(Debug)]
pub struct ReadOnlyWriteDetector {
    repeat_interval: Duration,
    /// The latest readable reading of the host's mount table (shared with the source's event).
    host: Option<Arc<HostMounts>>,
    waiting: VecDeque<(SystemTime, Box<ErofsEvent>)>,
    tracked: HashMap<String, Tracked>,
    /// Containers the tracer reported a failed write for.
    traced: Recent<String>,
    /// Exits whose log was looked at: (container id, finished at).
    exits: Recent<(String, Option<SystemTime>)>,
    /// Tracer events dropped: their container was never listed by the runtime.
    not_cri: u64,
    /// Containers reported from their log (a tracer event arriving later adds nothing).
    logged: Recent<String>,
}

impl ReadOnlyWriteDetector {
    /// A detector reporting a repeated finding at most every `repeat_interval`.
    pub fn new(repeat_interval: Duration) -> Self {
        ReadOnlyWriteDetector {
            repeat_interval,
            host: None,
            waiting: VecDeque::new(),
            tracked: HashMap::new(),
            traced: Recent::default(),
            exits: Recent::default(),
            not_cri: 0,
            logged: Recent::default(),
        }
    }

    /// The host's mount table, if it has been read.
    fn host_table(&self) -> Option<&MountTable> {
        self.host.as_ref().and_then(|h| h.table.as_ref().ok())
    }

    /// Reports `f` now, or counts it into the next report of its fingerprint.
    fn occur(&mut self, mut f: Finding, now: SystemTime, out: &mut Vec<Finding>) {
        if !self.tracked.contains_key(&f.fingerprint) && self.tracked.len() >= MAX_TRACKED {
            let oldest = self
                .tracked
                .iter()
                .min_by_key(|(_, t)| t.last_reported)
                .map(|(k, _)| k.clone());
            if let Some(t) = oldest.and_then(|k| self.tracked.remove(&k)) {
                out.extend(t.latest.map(|mut l| {
                    l.count = t.pending;
                    l
                }));
            }
        }
        match self.tracked.get_mut(&f.fingerprint) {
            Some(t) if now.duration_since(t.last_reported).unwrap_or_default() < self.repeat_interval => {
                t.pending += f.count;
                t.latest = Some(f);
            }
            Some(t) => {
                f.count += t.pending;
                t.pending = 0;
                t.latest = None;
                t.last_reported = now;
                out.push(f);
            }
            None => {
                self.tracked.insert(
                    f.fingerprint.clone(),
                    Tracked {
                        last_reported: now,
                        pending: 0,
                        latest: None,
                    },
                );
                out.push(f);
            }
        }
    }

    fn flush(&mut self, now: SystemTime, all: bool, out: &mut Vec<Finding>) {
        for t in self.tracked.values_mut() {
            let due = all || now.duration_since(t.last_reported).unwrap_or_default() >= self.repeat_interval;
            if due && t.pending > 0 {
                if let Some(mut f) = t.latest.take() {
                    f.count = t.pending;
                    out.push(f);
                }
                t.pending = 0;
                t.last_reported = now;
            }
        }
    }

    fn on_traced(&mut self, e: &ErofsEvent, c: &ContainerInfo, cx: &Context<'_>, out: &mut Vec<Finding>) {
        // The exit was already reported from the log (the tracer's event came late): the same
        // failure must not be counted twice.
        if self.logged.contains(&c.id) {
            return;
        }
        self.traced.insert(c.id.clone());
        let path = e.resolved_path.as_deref().unwrap_or(&e.path);
        let mount = match &e.mount {
            MountLookup::Found(m) => Some(&**m),
            MountLookup::Unknown(_) => None,
        };
        let meta = cx.inventory.pod_meta(&c.pod.uid).map(|m| &**m);
        let verdict = classify(path, mount, Some(c), self.host_table()).with_spec(meta, &c.name);
        let mut f = finding(c, path, &verdict, e.at, cx);
        f.count = e.count.max(1);
        f.summary = format!(
            "container {} in pod {} could not write {} ({} returned EROFS{}): {}",
            or_unknown(&c.name),
            c.pod.display(),
            shown(path),
            e.syscall,
            if e.count > 1 {
                format!(", {} times", e.count)
            } else {
                String::new()
            },
            describe(&verdict),
        );
        let mut ev = Evidence::new(
            EvidenceSource::Tracer,
            Some(e.at),
            format!(
                "{}({}) by pid {} ({}) returned EROFS",
                e.syscall,
                shown(&e.path),
                e.tgid,
                e.comm
            ),
        )
        .with("syscall", e.syscall)
        .with("path", e.path.clone())
        .with("pid", e.tgid)
        .with("tid", e.pid)
        .with("comm", e.comm.clone())
        .with("count", e.count)
        .with("mnt_ns", e.mnt_ns)
        .with("detected_by", "tracer");
        if let Some(p) = &e.resolved_path {
            ev = ev.with("resolved_path", p.clone());
        }
        if let Some(flags) = e.open_flags {
            ev = ev.with("open_flags", format!("{flags:#o}"));
        }
        if e.path_truncated {
            ev = ev.with("path_truncated", true);
        }
        f.evidence.push(ev);
        if let MountLookup::Unknown(why) = &e.mount {
            f.evidence.push(Evidence::new(
                EvidenceSource::Procfs,
                Some(e.at),
                format!("mount table not read: {why}"),
            ));
        }
        push_mount_evidence(&mut f, &verdict, c, self.host_table(), e.at);
        self.occur(f, cx.now, out);
    }

    fn on_exit(&mut self, c: &ContainerInfo, line: &ErofsLine, cx: &Context<'_>, out: &mut Vec<Finding>) {
        if !self.exits.insert((c.id.clone(), c.finished_at)) {
            return;
        }
        // The tracer saw the call itself: its finding is the better one.
        if self.traced.contains(&c.id) {
            return;
        }
        self.logged.insert(c.id.clone());
        let at = c.finished_at.unwrap_or(cx.now);
        let path = line.path.as_deref().map(|p| {
            if p.starts_with('/') {
                p.to_owned()
            } else {
                format!("{}/{p}", c.cwd.as_deref().unwrap_or("").trim_end_matches('/'))
            }
        });
        let verdict = match &path {
            Some(p) => classify(p, None, Some(c), self.host_table())
                .with_spec(cx.inventory.pod_meta(&c.pod.uid).map(|m| &**m), &c.name),
            None => Verdict {
                cause: match c.readonly_rootfs {
                    Some(true) if c.mounts.iter().all(|m| !m.readonly) => Cause::ReadOnlyRootfs,
                    _ => Cause::Unknown,
                },
                mount_point: None,
                mount: None,
                basis: "the runtime's container spec",
                spec: None,
            },
        };
        let shown_path = path.as_deref().unwrap_or("(a path the log does not name)");
        let mut f = finding(c, path.as_deref().unwrap_or(""), &verdict, at, cx);
        f.summary = format!(
            "container {} in pod {} exited after failing to write {}: {} (from its log{})",
            or_unknown(&c.name),
            c.pod.display(),
            shown(shown_path),
            describe(&verdict),
            c.exit_code
                .map(|code| format!("; exit code {code}"))
                .unwrap_or_default()
        );
        let mut ev =
            Evidence::new(EvidenceSource::Log, Some(at), line.line.clone()).with("detected_by", "log");
        if let Some(op) = &line.operation {
            ev = ev.with("operation", op.clone());
        }
        if let Some(p) = &line.path {
            ev = ev.with("path", p.clone());
        }
        f.evidence.push(ev);
        push_mount_evidence(&mut f, &verdict, c, self.host_table(), at);
        self.occur(f, cx.now, out);
    }

    fn exited(&mut self, c: &ContainerInfo, cx: &Context<'_>, out: &mut Vec<Finding>) {
        if c.state != ContainerState::Exited {
            return;
        }
        if let Some(line) = c.post_mortem.as_ref().and_then(|pm| pm.erofs.as_ref()) {
            self.on_exit(c, line, cx, out);
        }
    }

    fn retry_waiting(&mut self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        let waiting = std::mem::take(&mut self.waiting);
        for (since, e) in waiting {
            let id = e.container_id.clone().unwrap_or_default();
            match cx.inventory.container(&id) {
                Some(c) => {
                    let c = c.clone();
                    self.on_traced(&e, &c, cx, out);
                }
                None if cx.now.duration_since(since).unwrap_or_default() >= WAIT_FOR_CONTAINER => {
                    self.not_cri += 1;
                    if self.not_cri.is_power_of_two() {
                        tracing::debug!(
                            container_id = %id,
                            dropped = self.not_cri,
                            "a failed write in a container the runtime does not list: not reported"
                        );
                    }
                }
                None => self.waiting.push_back((since, e)),
            }
        }
    }
}

/// A path for a one-line message: control characters escaped.
fn shown(path: &str) -> String {
    if path.chars().any(char::is_control) {
        format!("{path:?}")
    } else {
        path.to_owned()
    }
}

fn describe(v: &Verdict) -> String {
    match &v.cause {
        Cause::ReadOnlyRootfs => {
            "the container's root filesystem is read-only (readOnlyRootFilesystem)".to_owned()
        }
        Cause::ReadOnlyVolume {
            volume: Some(vol), ..
        } => format!(
            "{} is {} volume {:?}, mounted read-only{}",
            v.mount_point
                .as_deref()
                .map_or_else(|| "the path".to_owned(), shown),
            vol.kind,
            vol.name,
            match &v.spec {
                Some(s) if s.mount_read_only => " as its volumeMount asks (readOnly: true in the pod spec)",
                Some(_) if vol.always_read_only() => "",
                Some(s) if s.volume_read_only =>
                    " as the volume's source asks (readOnly: true in the pod spec)",
                Some(_) => ", though the pod spec does not ask for it",
                None => "",
            }
        ),
        Cause::ReadOnlyVolume { host_path, .. } => format!(
            "{} is a read-only mount{}",
            v.mount_point
                .as_deref()
                .map_or_else(|| "the path".to_owned(), shown),
            host_path
                .as_deref()
                .map(|h| format!(" of {}", shown(h)))
                .unwrap_or_default()
        ),
        Cause::SystemMount { fs_type } => format!("{fs_type} is read-only in the container"),
        Cause::HostFilesystem {
            device, after_error, ..
        } => {
            if *after_error {
                format!("the node's filesystem on {device} was made read-only by the kernel after an error")
            } else {
                format!("the node's filesystem on {device} is read-only")
            }
        }
        Cause::Unknown => "the filesystem refused the write as read-only".to_owned(),
    }
}

fn finding(c: &ContainerInfo, path: &str, v: &Verdict, at: SystemTime, cx: &Context<'_>) -> Finding {
    let severity = match v.cause {
        Cause::HostFilesystem { .. } => Severity::Critical,
        _ => Severity::Warning,
    };
    let mut f = Finding::new(
        FindingKind::ReadOnlyFilesystemWrite,
        severity,
        Subject::container(cx.node, c),
        at,
        &[cx.node, &c.pod.namespace, &c.pod.name, c.identity_name(), path],
    );
    // Paths come from the container: control characters are escaped so a path cannot break
    // the one-line output.
    let path = if path.is_empty() {
        "the path".to_owned()
    } else {
        shown(path)
    };
    let mount_point = v.mount_point.as_deref().map(shown);
    f.hint = hint(&v.cause, &path, mount_point.as_deref());
    f
}

fn mount_line(m: &Mount) -> String {
    format!(
        "{} on {} type {} ({}; filesystem {})",
        m.source,
        m.mount_point,
        m.fs_type,
        m.mount_options.join(","),
        m.super_options.join(",")
    )
}

fn push_mount_evidence(
    f: &mut Finding,
    v: &Verdict,
    c: &ContainerInfo,
    host: Option<&MountTable>,
    at: SystemTime,
) {
    let cause = serde_json::to_value(&v.cause).unwrap_or_default();
    let mut ev = match &v.mount {
        Some(m) => Evidence::new(
            EvidenceSource::Procfs,
            Some(at),
            format!("covering mount: {}", mount_line(m)),
        )
        .with("mount_point", m.mount_point.clone())
        .with("fs_type", m.fs_type.clone())
        .with("mount_source", m.source.clone())
        .with("mount_options", m.mount_options.join(","))
        .with("super_options", m.super_options.join(","))
        .with("mount_root", m.root.clone()),
        None => Evidence::new(
            EvidenceSource::Cri,
            Some(at),
            match (&v.cause, &v.mount_point) {
                (Cause::ReadOnlyRootfs, _) => {
                    "the runtime spec mounts the root filesystem read-only".to_owned()
                }
                (_, Some(mp)) if mp != "/" => format!(
                    "the runtime mounts {mp}{}",
                    c.mounts
                        .iter()
                        .find(|m| &m.container_path == mp)
                        .map(|m| format!(
                            " from {}{}",
                            m.host_path,
                            if m.readonly { " read-only" } else { " read-write" }
                        ))
                        .unwrap_or_default()
                ),
                _ => "the runtime's spec shows no read-only mount for the path".to_owned(),
            },
        ),
    };
    ev = ev.with("cause", v.cause.as_str()).with("basis", v.basis);
    if let Some(spec) = v.spec.as_ref().and_then(|s| serde_json::to_value(s).ok()) {
        ev = ev.with("pod_spec", spec);
    }
    if let Some(obj) = cause.as_object() {
        for (k, val) in obj.iter().filter(|(k, _)| k.as_str() != "cause") {
            ev = ev.with(k, val.clone());
        }
    }
    f.evidence.push(ev);
    if let (
        Cause::HostFilesystem {
            host_mount_point: Some(hmp),
            ..
        },
        Some(host),
    ) = (&v.cause, host)
    {
        if let Some(hm) = host.covering(hmp) {
            f.evidence.push(Evidence::new(
                EvidenceSource::Host,
                Some(at),
                format!("host mount: {}", mount_line(hm)),
            ));
        }
    }
}

impl Detector for ReadOnlyWriteDetector {
    fn name(&self) -> &'static str {
        "read-only write"
    }

    fn on_event(&mut self, event: &SourceEvent, cx: &Context<'_>, out: &mut Vec<Finding>) {
        match event {
            SourceEvent::Erofs(e) => {
                let id = e.container_id.clone().unwrap_or_default();
                match cx.inventory.container(&id) {
                    Some(c) => {
                        let c = c.clone();
                        self.on_traced(e, &c, cx, out);
                    }
                    None => {
                        if self.waiting.len() >= MAX_WAITING && self.waiting.pop_front().is_some() {
                            self.not_cri += 1;
                        }
                        self.waiting.push_back((cx.now, e.clone()));
                    }
                }
            }
            SourceEvent::HostMounts(h) if h.table.is_ok() => self.host = Some(Arc::clone(h)),
            SourceEvent::CriContainer(c) => {
                self.retry_waiting(cx, out);
                self.exited(c, cx, out);
            }
            SourceEvent::CriSnapshot(s) => {
                self.retry_waiting(cx, out);
                for c in &s.containers {
                    self.exited(c, cx, out);
                }
            }
            _ => {}
        }
    }

    fn on_tick(&mut self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        self.retry_waiting(cx, out);
        self.flush(cx.now, false, out);
    }

    fn on_shutdown(&mut self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        let waiting = std::mem::take(&mut self.waiting);
        for (_, e) in waiting {
            let id = e.container_id.clone().unwrap_or_default();
            if let Some(c) = cx.inventory.container(&id).cloned() {
                self.on_traced(&e, &c, cx, out);
            }
        }
        self.flush(cx.now, true, out);
    }
}

#[cfg(test)]
#[path = "readonly_write_tests.rs"]
mod tests;
