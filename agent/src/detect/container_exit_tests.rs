use std::time::{Duration, SystemTime};

use super::*;
use crate::detect::format::human_bytes;
use crate::inventory::Inventory;
use crate::model::{PodInfo, PodRef, PodState};
use crate::sources::CriSnapshot;

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn exited(id: &str, code: i32, reason: &str, finished: u64) -> ContainerInfo {
    let mut c = ContainerInfo::unknown(id);
    c.name = "app".into();
    c.pod = PodRef {
        namespace: "shop".into(),
        name: "web-0".into(),
        uid: "uid-1".into(),
    };
    c.pod_sandbox_id = "sb".into();
    c.attempt = 2;
    c.state = ContainerState::Exited;
    c.exit_code = Some(code);
    c.reason = reason.into();
    c.started_at = Some(t(finished - 5));
    c.finished_at = Some(t(finished));
    c
}

struct Harness {
    det: ContainerExitDetector,
    inv: Inventory,
    now: SystemTime,
}

impl Harness {
    fn new(watermark: SystemTime) -> Self {
        Harness {
            det: ContainerExitDetector::new(ExitConfig::default(), watermark),
            inv: Inventory::default(),
            now: t(100),
        }
    }

    fn feed(&mut self, ev: SourceEvent) -> Vec<Finding> {
        self.inv.apply(&ev, self.now);
        let cx = Context {
            node: "node-1",
            inventory: &self.inv,
            now: self.now,
        };
        let mut out = Vec::new();
        self.det.on_event(&ev, &cx, &mut out);
        out
    }

    fn tick(&mut self) -> Vec<Finding> {
        let cx = Context {
            node: "node-1",
            inventory: &self.inv,
            now: self.now,
        };
        let mut out = Vec::new();
        self.det.on_tick(&cx, &mut out);
        out
    }
}

fn task_exit(id: &str, status: u32, at: u64) -> SourceEvent {
    SourceEvent::Containerd(ContainerdEvent::TaskExit {
        container_id: id.into(),
        exec_id: id.into(),
        pid: 4321,
        exit_status: status,
        exited_at: Some(t(at)),
    })
}

#[test]
fn event_and_cri_status_merge_into_one_finding() {
    let mut h = Harness::new(t(0));
    assert!(
        h.feed(task_exit("c1", 3, 50)).is_empty(),
        "waits for CRI's record"
    );
    let out = h.feed(SourceEvent::CriContainer(Box::new(exited("c1", 3, "Error", 50))));
    assert_eq!(out.len(), 1);
    let f = &out[0];
    assert_eq!(f.kind, FindingKind::ContainerExited);
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(
        f.subject,
        Subject::Container {
            node: "node-1".into(),
            namespace: "shop".into(),
            pod: "web-0".into(),
            pod_uid: "uid-1".into(),
            container: "app".into(),
            container_id: "c1".into(),
            attempt: 2,
        }
    );
    assert_eq!(
        f.summary,
        "container app of pod shop/web-0 exited with code 3 (application error) after running 5.0s, restart 2"
    );
    let sources: Vec<_> = f.evidence.iter().map(|e| e.source).collect();
    assert_eq!(
        sources,
        vec![EvidenceSource::ContainerdEvent, EvidenceSource::Cri]
    );
    assert!(
        f.hint.contains("kubectl logs -n shop web-0 -c app --previous"),
        "{}",
        f.hint
    );
    // Seen again by a resync: not reported twice.
    let snap = CriSnapshot {
        taken_at: t(60),
        pods: vec![],
        containers: vec![exited("c1", 3, "Error", 50)],
    };
    assert!(h.feed(SourceEvent::CriSnapshot(snap)).is_empty());
    h.now = t(200);
    assert!(h.tick().is_empty(), "nothing left pending");
}

#[test]
fn an_exit_recorded_before_its_start_ran_for_zero() {
    let mut h = Harness::new(t(0));
    let mut c = exited("fast", 127, "Error", 50);
    c.started_at = Some(t(51));
    let out = h.feed(SourceEvent::CriContainer(Box::new(c)));
    assert!(out[0].summary.contains("after running 0ms"), "{}", out[0].summary);
}

#[test]
fn signals_are_named() {
    let mut h = Harness::new(t(0));
    let kill = h.feed(SourceEvent::CriContainer(Box::new(exited("k", 137, "Error", 50))));
    assert!(
        kill[0].summary.contains("killed by SIGKILL (exit code 137"),
        "{}",
        kill[0].summary
    );
    let segv = h.feed(SourceEvent::CriContainer(Box::new(exited("s", 139, "Error", 50))));
    assert!(segv[0].summary.contains("SIGSEGV"), "{}", segv[0].summary);
    let term = h.feed(SourceEvent::CriContainer(Box::new(exited("t", 143, "Error", 50))));
    assert_eq!(term[0].severity, Severity::Info);
    assert_ne!(kill[0].fingerprint, segv[0].fingerprint);
}

#[test]
fn oom_killed_reason_is_said_plainly() {
    let mut h = Harness::new(t(0));
    let mut c = exited("o", 137, "OOMKilled", 50);
    c.memory_limit_bytes = Some(32 * 1024 * 1024);
    let out = h.feed(SourceEvent::CriContainer(Box::new(c)));
    assert!(
        out[0].summary.contains("was OOM-killed (exit code 137)"),
        "{}",
        out[0].summary
    );
    assert!(out[0].hint.contains("(32 MiB)"), "{}", out[0].hint);
}

#[test]
fn clean_exits_and_old_exits_are_not_reported() {
    let mut h = Harness::new(t(40));
    assert!(h
        .feed(SourceEvent::CriContainer(Box::new(exited(
            "ok",
            0,
            "Completed",
            50
        ))))
        .is_empty());
    assert!(
        h.feed(SourceEvent::CriContainer(Box::new(exited("old", 1, "Error", 30))))
            .is_empty(),
        "finished before the watermark: an earlier run handled it"
    );
    assert_eq!(
        h.feed(SourceEvent::CriContainer(Box::new(exited("new", 1, "Error", 45))))
            .len(),
        1
    );
}

#[test]
fn an_announced_exit_is_reported_even_before_the_watermark() {
    let mut h = Harness::new(t(60));
    h.feed(task_exit("c", 2, 50));
    assert_eq!(
        h.feed(SourceEvent::CriContainer(Box::new(exited("c", 2, "Error", 50))))
            .len(),
        1
    );
}

#[test]
fn exit_the_runtime_never_records_is_reported_from_the_event_after_the_grace() {
    let mut h = Harness::new(t(0));
    let mut running = exited("gone", 0, "", 50);
    running.state = ContainerState::Running;
    running.exit_code = None;
    running.finished_at = None;
    h.feed(SourceEvent::CriContainer(Box::new(running)));
    h.feed(task_exit("gone", 139, 99));
    h.feed(SourceEvent::Containerd(ContainerdEvent::ContainerDelete {
        id: "gone".into(),
    }));
    h.now = t(101);
    assert!(h.tick().is_empty(), "still within the grace period");
    h.now = t(104);
    let out = h.tick();
    assert_eq!(out.len(), 1);
    assert!(
        out[0]
            .summary
            .starts_with("container app of pod shop/web-0 was killed by SIGSEGV"),
        "{}",
        out[0].summary
    );
    assert_eq!(out[0].evidence.len(), 1);
    assert_eq!(out[0].evidence[0].source, EvidenceSource::ContainerdEvent);
}

#[test]
fn sandbox_exits_and_exec_exits_are_ignored() {
    let mut h = Harness::new(t(0));
    let pod = PodInfo {
        id: "sb".into(),
        pod: PodRef::default(),
        attempt: 0,
        state: PodState::NotReady,
        created_at: None,
        labels: Default::default(),
    };
    h.feed(SourceEvent::CriPod(pod));
    h.feed(task_exit("sb", 137, 50));
    h.feed(SourceEvent::Containerd(ContainerdEvent::TaskExit {
        container_id: "c".into(),
        exec_id: "exec-1".into(),
        pid: 1,
        exit_status: 1,
        exited_at: Some(t(50)),
    }));
    h.now = t(200);
    assert!(h.tick().is_empty());
}

#[test]
fn unlabelled_container_still_reported_with_what_is_known() {
    let mut h = Harness::new(t(0));
    let mut c = ContainerInfo::unknown("abcdef0123456789");
    c.state = ContainerState::Exited;
    c.exit_code = Some(1);
    c.finished_at = Some(t(50));
    let out = h.feed(SourceEvent::CriContainer(Box::new(c)));
    assert_eq!(out.len(), 1);
    assert!(
        out[0]
            .summary
            .starts_with("container ? of pod ?/? exited with code 1"),
        "{}",
        out[0].summary
    );
    assert_eq!(out[0].subject.to_string(), "?/?[abcdef012345]");
}

#[test]
fn a_late_listing_does_not_make_an_exit_reported_twice() {
    let mut h = Harness::new(t(0));
    // The listing is taken at t=90; meanwhile a new container exits and is reported at t=100.
    assert_eq!(
        h.feed(SourceEvent::CriContainer(Box::new(exited("new", 3, "Error", 95))))
            .len(),
        1
    );
    let late = CriSnapshot {
        taken_at: t(90),
        pods: vec![],
        containers: vec![],
    };
    assert!(h.feed(SourceEvent::CriSnapshot(late)).is_empty());
    // The next listing has it, exited: it was handled, it stays handled.
    h.now = t(130);
    let next = CriSnapshot {
        taken_at: t(120),
        pods: vec![],
        containers: vec![exited("new", 3, "Error", 95)],
    };
    assert!(h.feed(SourceEvent::CriSnapshot(next)).is_empty());
    // Once a listing taken after it was handled no longer has it, it is forgotten.
    h.now = t(200);
    let gone = CriSnapshot {
        taken_at: t(190),
        pods: vec![],
        containers: vec![],
    };
    h.feed(SourceEvent::CriSnapshot(gone));
    assert!(h.det.handled.is_empty());
}

#[test]
fn a_sandbox_unknown_until_its_exit_is_not_a_crash() {
    let mut h = Harness::new(t(0));
    h.feed(task_exit("pause", 137, 99));
    // The CRI source finds no container by that id, but a sandbox.
    let pod = PodInfo {
        id: "pause".into(),
        pod: PodRef::default(),
        attempt: 0,
        state: PodState::NotReady,
        created_at: None,
        labels: Default::default(),
    };
    h.feed(SourceEvent::CriPod(pod));
    h.now = t(200);
    assert!(h.tick().is_empty());
}

#[test]
fn an_oom_event_turns_an_unrecorded_sigkill_into_an_oom_kill() {
    let mut h = Harness::new(t(0));
    let mut running = exited("o", 0, "", 50);
    running.state = ContainerState::Running;
    running.exit_code = None;
    running.memory_limit_bytes = Some(512 * 1024);
    h.feed(SourceEvent::CriContainer(Box::new(running)));
    h.feed(SourceEvent::Containerd(ContainerdEvent::TaskOom {
        container_id: "o".into(),
        at: Some(t(99)),
    }));
    h.feed(task_exit("o", 137, 99));
    h.now = t(110);
    let out = h.tick();
    assert_eq!(out.len(), 1);
    assert!(
        out[0].summary.contains("was OOM-killed (exit code 137)"),
        "{}",
        out[0].summary
    );
    assert!(out[0].hint.contains("(512 KiB)"), "{}", out[0].hint);
    let messages: Vec<_> = out[0].evidence.iter().map(|e| e.message.as_str()).collect();
    assert!(messages.iter().any(|m| m.starts_with("TaskOOM")), "{messages:?}");
}

#[test]
fn shutdown_reports_exits_still_waiting_for_the_runtime() {
    let mut h = Harness::new(t(0));
    h.feed(task_exit("c", 1, 99));
    let cx = Context {
        node: "node-1",
        inventory: &h.inv,
        now: t(100),
    };
    let mut out = Vec::new();
    h.det.on_shutdown(&cx, &mut out);
    assert_eq!(out.len(), 1);
    assert!(
        out[0].summary.contains("exited with code 1"),
        "{}",
        out[0].summary
    );
}

#[test]
fn a_sigkill_summary_says_it_once() {
    let mut h = Harness::new(t(0));
    let out = h.feed(SourceEvent::CriContainer(Box::new(exited("k", 137, "Error", 50))));
    assert!(
        out[0]
            .summary
            .contains("was killed by SIGKILL (exit code 137) after"),
        "{}",
        out[0].summary
    );
}

#[test]
fn bytes_read_as_people_write_them() {
    assert_eq!(human_bytes(32 * 1024 * 1024), "32 MiB");
    assert_eq!(human_bytes(512 * 1024), "512 KiB");
    assert_eq!(human_bytes(1536 * 1024 * 1024), "1.5 GiB");
    assert_eq!(human_bytes(100), "100 bytes");
}

#[test]
fn a_program_missing_in_the_image_is_command_not_found_instead_of_an_exit() {
    use crate::catalogue::{CatalogueEntries, CatalogueMode};
    use crate::model::{Lookup, PostMortem};
    use crate::sources::host::ProgramLookup;
    use crate::sources::logs::exec_failure::parse_line;

    let catalogue = Catalogue::build(CatalogueMode::Extend, &CatalogueEntries::default()).expect("catalogue");
    let mut h = Harness::new(t(0));
    h.det = ContainerExitDetector::new(ExitConfig::default(), t(0)).with_catalogue(Arc::new(catalogue));
    let mut c = exited("c1", 127, "Error", 50);
    let missing = || {
        Some(Lookup::Done(ProgramLookup::Missing {
            searched: vec!["/bin/iscsiadm".into()],
        }))
    };
    c.post_mortem = Some(Arc::new(PostMortem {
        log_tail: vec!["sh: iscsiadm: not found".into()],
        exec_failure: parse_line("sh: iscsiadm: not found"),
        on_host: missing(),
        in_image: missing(),
        log_error: None,
        erofs: None,
    }));
    let out = h.feed(SourceEvent::CriContainer(Box::new(c.clone())));
    assert_eq!(out.len(), 1);
    let f = &out[0];
    assert_eq!(f.kind, FindingKind::CommandNotFound);
    assert_eq!(
        f.summary,
        "container app of pod shop/web-0 exited with code 127 (command not found) after running 5.0s, restart 2: \
         it ran iscsiadm, which is not in its image: `sh: iscsiadm: not found`"
    );
    assert!(f.hint.starts_with("Fix the pod's command/args or the image"));
    assert!(f.evidence.iter().any(|e| e.source == EvidenceSource::Log));
    assert!(f.evidence.iter().any(|e| e.source == EvidenceSource::Cri));

    // The next attempt of the same container fails the same way: one fingerprint, counted up by
    // the engine.
    let mut again = c;
    again.id = "c2".into();
    again.attempt = 3;
    let next = h.feed(SourceEvent::CriContainer(Box::new(again)));
    assert_eq!(next[0].fingerprint, f.fingerprint);

    // An exit whose log names no program keeps its kind and gains the log's last lines.
    let mut other = exited("c3", 1, "Error", 60);
    other.post_mortem = Some(Arc::new(PostMortem {
        log_tail: vec!["connecting to db".into(), "fatal: connection refused".into()],
        ..PostMortem::default()
    }));
    let out = h.feed(SourceEvent::CriContainer(Box::new(other)));
    assert_eq!(out[0].kind, FindingKind::ContainerExited);
    let log = out[0]
        .evidence
        .iter()
        .find(|e| e.source == EvidenceSource::Log)
        .expect("log evidence");
    assert_eq!(log.message, "last log line: fatal: connection refused");
}

#[test]
fn an_oom_killed_exit_waits_for_the_kernel_report_that_a_polled_log_brings_later() {
    use crate::sources::kmsg::oom::OomKill;
    use crate::sources::kmsg::KmsgEvent;
    let id = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
    let kill = |pid| {
        SourceEvent::Kmsg(KmsgEvent::OomKill {
            kill: Box::new(OomKill {
                pid,
                comm: "app".into(),
                task_memcg: Some(format!("/kubepods/pod1/{id}")),
                ..OomKill::default()
            }),
            at: Some(t(99)),
        })
    };
    let mut h = Harness::new(t(0));
    h.det = ContainerExitDetector::new(ExitConfig::default(), t(0))
        .with_kernel_log_wait(Duration::from_millis(500));
    h.feed(task_exit(id, 137, 99));
    let mut c = exited(id, 137, "OOMKilled", 99);
    c.pid = Some(4321);
    assert!(
        h.feed(SourceEvent::CriContainer(Box::new(c.clone()))).is_empty(),
        "waits for the kernel"
    );
    assert!(h.tick().is_empty(), "still within the wait");
    assert!(
        h.feed(kill(999)).is_empty(),
        "a kill of another process is not this one's"
    );
    let out = h.feed(kill(4321));
    assert_eq!(out.len(), 1, "reported as soon as the kill is read");
    let sources: Vec<EvidenceSource> = out[0].evidence.iter().map(|e| e.source).collect();
    assert!(sources.contains(&EvidenceSource::Kmsg), "{sources:?}");
    assert!(h.tick().is_empty(), "once");

    // No report comes: the exit is reported once the wait is over, without it.
    let mut h = Harness::new(t(0));
    h.det = ContainerExitDetector::new(ExitConfig::default(), t(0))
        .with_kernel_log_wait(Duration::from_millis(500));
    h.feed(task_exit(id, 137, 99));
    assert!(h.feed(SourceEvent::CriContainer(Box::new(c.clone()))).is_empty());
    h.now += Duration::from_millis(500);
    let out = h.tick();
    assert_eq!(out.len(), 1);
    assert!(out[0].summary.contains("OOM-killed"), "{}", out[0].summary);
    assert!(!out[0].evidence.iter().any(|e| e.source == EvidenceSource::Kmsg));

    // A plain SIGKILL (no OOM known), or no wait configured: reported at once.
    let mut h = Harness::new(t(0));
    h.det = ContainerExitDetector::new(ExitConfig::default(), t(0))
        .with_kernel_log_wait(Duration::from_millis(500));
    assert_eq!(
        h.feed(SourceEvent::CriContainer(Box::new(exited("k", 137, "Error", 50))))
            .len(),
        1
    );
    let mut h = Harness::new(t(0));
    assert_eq!(
        h.feed(SourceEvent::CriContainer(Box::new(exited(
            "o",
            137,
            "OOMKilled",
            50
        ))))
        .len(),
        1
    );
}

fn kernel_log_read() -> SourceEvent {
    SourceEvent::Kmsg(KmsgEvent::Checkpoint(crate::sources::kmsg::KmsgPosition {
        boot_id: "b".into(),
        seq: 1,
        syslog: false,
        usec: None,
    }))
}

fn task_oom(id: &str, at: SystemTime) -> SourceEvent {
    SourceEvent::Containerd(ContainerdEvent::TaskOom {
        container_id: id.into(),
        at: Some(at),
    })
}

/// CRI keeps `OOMKilled` once any process of the container was OOM-killed: a stop's SIGKILL
/// seconds later is not an OOM kill when the kernel log says the main process was not killed.
/// The finding for container `id`, SIGKILLed at 99 s with CRI's reason `OOMKilled`, the kernel
/// log read and containerd's `TaskOOM` at `oom_at` seconds.
fn stopped_after_an_oom_at(id: &str, oom_at: u64) -> Vec<Finding> {
    let mut h = Harness::new(t(0));
    h.feed(kernel_log_read());
    h.feed(task_oom(id, t(oom_at)));
    h.feed(task_exit(id, 137, 99));
    h.feed(SourceEvent::CriContainer(Box::new(exited(
        id,
        137,
        "OOMKilled",
        99,
    ))))
}

#[test]
fn a_stop_after_earlier_child_kills_is_a_sigkill_not_an_oom_kill() {
    let out = stopped_after_an_oom_at("c1", 90);
    assert_eq!(out.len(), 1);
    let f = &out[0];
    assert_eq!(f.kind, FindingKind::ContainerExited, "{}", f.summary);
    assert!(f.summary.contains("was killed by SIGKILL"), "{}", f.summary);
    let why = f
        .evidence
        .iter()
        .find(|e| e.message.starts_with("not an OOM kill"))
        .expect("why not");
    assert_eq!(why.attributes["cri_reason"], "OOMKilled");
    assert_eq!(why.attributes["main_pid"], 4321);

    // Right after a kill in its cgroup, the container died with it: an OOM kill.
    let out = stopped_after_an_oom_at("c2", 99);
    assert_eq!(out[0].kind, FindingKind::OomKilled, "{}", out[0].summary);
    assert!(
        out[0]
            .summary
            .contains("right after the OOM killer killed another"),
        "{}",
        out[0].summary
    );
}

/// A kill whose report the kernel rate-limited names no cgroup: the main process is known by
/// its pid.
#[test]
fn a_main_process_killed_without_the_reports_header_is_known_by_its_pid() {
    let id = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
    let mut h = Harness::new(t(0));
    let mut c = exited(id, 137, "OOMKilled", 99);
    c.state = ContainerState::Running;
    c.pid = Some(4321);
    h.feed(SourceEvent::CriContainer(Box::new(c.clone())));
    h.feed(SourceEvent::Kmsg(KmsgEvent::OomKill {
        kill: Box::new(OomKill {
            pid: 4321,
            comm: "app".into(),
            anon_rss_kib: Some(32_000),
            ..OomKill::default()
        }),
        at: Some(t(98)),
    }));
    h.feed(task_exit(id, 137, 99));
    // CRI's record of an exited container has no pid.
    c.state = ContainerState::Exited;
    c.pid = None;
    let out = h.feed(SourceEvent::CriContainer(Box::new(c.clone())));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].kind, FindingKind::OomKilled, "{}", out[0].summary);
    assert!(
        out[0].summary.contains("killed pid 4321 (app)"),
        "{}",
        out[0].summary
    );

    // Read through syslog(2), the report comes after CRI's record of the exit; a child killed
    // after the main process does not hide the main process's kill.
    let mut h = Harness::new(t(0));
    h.det = ContainerExitDetector::new(ExitConfig::default(), t(0))
        .with_kernel_log_wait(Duration::from_millis(500));
    h.feed(kernel_log_read());
    h.feed(task_oom(id, t(90)));
    h.feed(task_exit(id, 137, 99));
    assert!(
        h.feed(SourceEvent::CriContainer(Box::new(c))).is_empty(),
        "waits for the kernel"
    );
    let headerless = |pid| {
        SourceEvent::Kmsg(KmsgEvent::OomKill {
            kill: Box::new(OomKill {
                pid,
                comm: "app".into(),
                anon_rss_kib: Some(32_000),
                ..OomKill::default()
            }),
            at: Some(t(98)),
        })
    };
    let out = h.feed(headerless(4321));
    assert_eq!(out.len(), 1, "the awaited exit's main process");
    assert_eq!(out[0].kind, FindingKind::OomKilled, "{}", out[0].summary);
    assert!(
        out[0].summary.contains("killed pid 4321 (app)"),
        "{}",
        out[0].summary
    );
}
