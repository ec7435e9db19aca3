use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use super::*;
use crate::inventory::Inventory;
use crate::model::PodRef;
use crate::sources::kmsg::oom::{OomScope, TaskMemory};

const UID: &str = "0b8f4e2a-7777-8888-9999-aaaabbbbcccc";
const ID: &str = "8b1d2c3e4f5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

fn t(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms)
}

fn running(pid: u32) -> ContainerInfo {
    let mut c = ContainerInfo::unknown(ID);
    c.name = "web".into();
    c.pod = PodRef {
        namespace: "shop".into(),
        name: "api-0".into(),
        uid: UID.into(),
    };
    c.state = ContainerState::Running;
    c.pid = Some(pid);
    c.memory_limit_bytes = Some(256 << 20);
    c
}

fn kill(pid: u32, scope: OomScope) -> OomKill {
    let task = format!("/kubepods/burstable/pod{UID}/{ID}");
    OomKill {
        seq: 20,
        first_seq: 10,
        scope: Some(scope),
        pid,
        comm: "gunicorn".into(),
        anon_rss_kib: Some(230_104),
        file_rss_kib: Some(1904),
        oom_memcg: Some(format!("/kubepods/burstable/pod{UID}")),
        task_memcg: Some(task),
        ..OomKill::default()
    }
}

struct Harness {
    det: OomKillDetector,
    inv: Inventory,
}

impl Harness {
    fn new(containers: Vec<ContainerInfo>) -> Self {
        let mut inv = Inventory::default();
        for c in containers {
            inv.apply(&SourceEvent::CriContainer(Box::new(c)), t(0));
        }
        Harness {
            det: OomKillDetector::new(OomConfig::default()),
            inv,
        }
    }

    fn event(&mut self, event: SourceEvent, ms: u64) -> Vec<Finding> {
        let cx = Context {
            node: "n1",
            inventory: &self.inv,
            now: t(ms),
        };
        let mut out = Vec::new();
        self.det.on_event(&event, &cx, &mut out);
        out
    }

    fn tick(&mut self, ms: u64) -> Vec<Finding> {
        let cx = Context {
            node: "n1",
            inventory: &self.inv,
            now: t(ms),
        };
        let mut out = Vec::new();
        self.det.on_tick(&cx, &mut out);
        out
    }
}

fn kmsg(k: OomKill) -> SourceEvent {
    SourceEvent::Kmsg(KmsgEvent::OomKill {
        kill: Box::new(k),
        at: Some(t(1)),
    })
}

fn task_oom(ms: u64) -> SourceEvent {
    SourceEvent::Containerd(ContainerdEvent::TaskOom {
        container_id: ID.into(),
        at: Some(t(ms)),
    })
}

#[test]
fn a_killed_worker_in_a_running_container_is_a_child_kill_against_the_pod_limit() {
    let mut h = Harness::new(vec![running(100)]);
    assert!(h.event(kmsg(kill(200, OomScope::Memcg)), 5).is_empty());
    assert!(h.event(task_oom(6), 6).is_empty());
    assert_eq!(
        h.det.kmsg_held_from().map(|h| h.0),
        Some(10),
        "the kill is held back"
    );
    assert!(h.tick(900).is_empty(), "still within the grace period");
    let out = h.tick(1005);
    assert_eq!(out.len(), 1);
    let f = &out[0];
    assert_eq!(f.kind, FindingKind::OomKilledChild);
    assert!(
        matches!(&f.subject, Subject::Container { pod, container, .. } if pod == "api-0" && container == "web")
    );
    assert!(f.summary.contains("pid 200 (gunicorn)"), "{}", f.summary);
    assert!(f.summary.contains("the pod's memory limit"), "{}", f.summary);
    let sources: Vec<EvidenceSource> = f.evidence.iter().map(|e| e.source).collect();
    assert_eq!(
        sources,
        [
            EvidenceSource::Kmsg,
            EvidenceSource::ContainerdEvent,
            EvidenceSource::Cri
        ]
    );
    assert_eq!(h.det.kmsg_held_from(), None);
}

#[test]
fn the_main_process_is_left_to_the_exit_detector_and_a_child_it_died_with_is_a_child_kill() {
    let mut h = Harness::new(vec![running(100)]);
    h.event(kmsg(kill(100, OomScope::Memcg)), 5);
    assert!(h.tick(3000).is_empty(), "main process killed");

    let mut h = Harness::new(vec![running(100)]);
    h.event(kmsg(kill(200, OomScope::Memcg)), 5);
    let exit = ContainerdEvent::TaskExit {
        container_id: ID.into(),
        exec_id: String::new(),
        pid: 100,
        exit_status: 1,
        exited_at: Some(t(50)),
    };
    h.event(SourceEvent::Containerd(exit), 50);
    let out = h.tick(3000);
    assert_eq!(out.len(), 1, "the child's kill is counted where it happened");
    assert!(
        out[0].summary.contains("stopped right after"),
        "the container died with its child: {}",
        out[0].summary
    );
}

#[test]
fn a_node_wide_oom_is_reported_at_once_with_the_largest_users() {
    let mut h = Harness::new(vec![running(4242)]);
    let mut k = kill(4242, OomScope::Global);
    k.oom_memcg = None;
    k.top_tasks = vec![
        TaskMemory {
            pid: 4242,
            comm: "java".into(),
            rss_pages: 2_411_000,
        },
        TaskMemory {
            pid: 811,
            comm: "postgres".into(),
            rss_pages: 130_200,
        },
    ];
    let out = h.event(kmsg(k), 5);
    assert_eq!(out.len(), 1);
    let f = &out[0];
    assert_eq!((f.kind, f.severity), (FindingKind::NodeOom, Severity::Critical));
    assert!(matches!(&f.subject, Subject::Node { node } if node == "n1"));
    assert!(
        f.summary.contains("container web of pod shop/api-0"),
        "{}",
        f.summary
    );
    let users = &f.evidence[1];
    assert!(users.message.contains("4242 (java)"), "{}", users.message);
    assert_eq!(
        users.attributes["largest_users"][0]["container"],
        "shop/api-0[web]"
    );
    assert_eq!(h.det.kmsg_held_from(), None);
}

#[test]
fn kills_outside_known_containers_are_reported_about_the_node() {
    let mut h = Harness::new(vec![]);
    let mut k = kill(77, OomScope::Memcg);
    k.task_memcg = Some("/system.slice/fluentd.service".into());
    k.oom_memcg = k.task_memcg.clone();
    h.event(kmsg(k), 5);
    let out = h.tick(2500);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].kind, FindingKind::OomKilled);
    assert!(matches!(out[0].subject, Subject::Node { .. }));
    assert!(
        out[0].summary.contains("/system.slice/fluentd.service"),
        "{}",
        out[0].summary
    );
}

#[test]
fn without_the_kernel_log_a_task_oom_in_a_running_container_still_counts() {
    let mut h = Harness::new(vec![running(100)]);
    h.event(task_oom(5), 5);
    let out = h.tick(2500);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].kind, FindingKind::OomKilledChild);
    assert!(out[0].summary.contains("victim is unknown"), "{}", out[0].summary);
}

const OTHER: &str = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809";

fn running_other(pid: u32) -> ContainerInfo {
    let mut c = running(pid);
    c.id = OTHER.into();
    c.name = "worker".into();
    c
}

/// A kill as the kernel prints it when its header is rate-limited: `Killed process N` only.
fn headerless(pid: u32) -> OomKill {
    OomKill {
        seq: 30,
        first_seq: 30,
        scope: Some(OomScope::Memcg),
        pid,
        comm: "sh".into(),
        anon_rss_kib: Some(32_000),
        ..OomKill::default()
    }
}

fn counters(at_ms: u64, counts: &[(&str, u64)]) -> SourceEvent {
    use crate::sources::cgroup::{CgroupVersion, MemoryStats};
    use crate::sources::memory::{ContainerMemory, MemorySnapshot};
    SourceEvent::Memory(Box::new(MemorySnapshot {
        at: t(at_ms),
        containers: counts
            .iter()
            .map(|(id, n)| ContainerMemory {
                container_id: (*id).to_owned(),
                cgroup: format!("/k8s.io/{id}"),
                stats: MemoryStats {
                    version: CgroupVersion::V1,
                    usage_bytes: 1 << 20,
                    limit_bytes: Some(32 << 20),
                    peak_bytes: None,
                    inactive_file_bytes: None,
                    failcnt: None,
                    oom: None,
                    oom_kill: Some(*n),
                    oom_group_kill: None,
                    max_events: None,
                    high_events: None,
                    under_oom: None,
                    pressure: None,
                },
            })
            .collect(),
        node: None,
    }))
}

fn task_oom_of(id: &str, ms: u64) -> SourceEvent {
    SourceEvent::Containerd(ContainerdEvent::TaskOom {
        container_id: id.into(),
        at: Some(t(ms)),
    })
}

fn kmsg_at(k: OomKill, ms: u64) -> SourceEvent {
    SourceEvent::Kmsg(KmsgEvent::OomKill {
        kill: Box::new(k),
        at: Some(t(ms)),
    })
}

fn container_of(f: &Finding) -> &str {
    match &f.subject {
        Subject::Container { container_id, .. } => container_id,
        Subject::Node { .. } => "node",
    }
}

#[test]
fn kills_without_a_cgroup_go_where_the_counters_rose_and_are_counted_exactly() {
    let mut h = Harness::new(vec![running(100), running_other(300)]);
    h.event(counters(0, &[(ID, 0), (OTHER, 0)]), 0);
    // Two kills in ID and one in OTHER, none of them naming a cgroup.
    h.event(kmsg_at(headerless(201), 10), 10);
    h.event(task_oom_of(ID, 11), 11);
    h.event(kmsg_at(headerless(301), 20), 20);
    h.event(task_oom_of(OTHER, 21), 21);
    h.event(counters(25, &[(ID, 1), (OTHER, 1)]), 25);
    h.event(kmsg_at(headerless(202), 40), 40);
    h.event(task_oom_of(ID, 41), 41);
    h.event(counters(45, &[(ID, 2), (OTHER, 1)]), 45);
    let out = h.tick(1100);
    let mut per: HashMap<&str, u64> = HashMap::new();
    for f in &out {
        assert_eq!(f.kind, FindingKind::OomKilledChild, "{}", f.summary);
        *per.entry(container_of(f)).or_default() += f.count;
    }
    assert_eq!(per, HashMap::from([(ID, 2), (OTHER, 1)]), "{out:#?}");
    let merged = out.iter().find(|f| container_of(f) == ID).unwrap();
    assert!(merged.summary.contains("2 such kills"), "{}", merged.summary);
    assert_eq!(merged.evidence[0].attributes["placed_by"], "cgroup_counter");
    // Nothing is left to report from the counters.
    assert!(h.tick(10_000).is_empty());
}

#[test]
fn a_headerless_kill_of_a_main_process_is_known_by_its_pid() {
    let mut h = Harness::new(vec![running(100)]);
    h.event(counters(0, &[(ID, 0)]), 0);
    h.event(kmsg_at(headerless(100), 10), 10);
    h.event(counters(20, &[(ID, 1)]), 20);
    assert!(h.tick(1100).is_empty(), "the exit detector's OOMKilled");
    assert!(
        h.tick(10_000).is_empty(),
        "and not a kill the counter counted alone"
    );
}

#[test]
fn a_kill_is_placed_at_once_so_a_container_removed_within_the_grace_keeps_it() {
    let mut h = Harness::new(vec![running(100)]);
    h.event(kmsg(kill(200, OomScope::Memcg)), 5);
    h.inv.apply(
        &SourceEvent::Containerd(ContainerdEvent::ContainerDelete { id: ID.into() }),
        t(50),
    );
    h.event(
        SourceEvent::Containerd(ContainerdEvent::ContainerDelete { id: ID.into() }),
        50,
    );
    let out = h.tick(1100);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].kind, FindingKind::OomKilledChild);
    assert_eq!(container_of(&out[0]), ID);
}

#[test]
fn with_no_counter_a_task_oom_at_the_kill_places_it() {
    let mut h = Harness::new(vec![running(100)]);
    h.event(kmsg_at(headerless(201), 10), 10);
    h.event(task_oom_of(ID, 12), 12);
    let out = h.tick(1100);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(container_of(&out[0]), ID);
    assert_eq!(out[0].evidence[0].attributes["placed_by"], "task_oom");
    // A TaskOOM far from any kill places nothing.
    let mut h = Harness::new(vec![running(100)]);
    h.event(task_oom_of(ID, 12), 12);
    h.event(kmsg_at(headerless(201), 5_000), 5_000);
    let out = h.tick(6_100);
    assert!(
        out.iter().any(|f| matches!(f.subject, Subject::Node { .. })),
        "{out:#?}"
    );
}

#[test]
fn a_rise_no_kernel_report_explains_is_reported_from_the_counter() {
    let mut h = Harness::new(vec![running(100)]);
    h.event(
        SourceEvent::Kmsg(KmsgEvent::Checkpoint(crate::sources::kmsg::KmsgPosition {
            boot_id: "b".into(),
            seq: 1,
            syslog: false,
            usec: None,
        })),
        0,
    );
    h.event(counters(0, &[(ID, 0)]), 0);
    h.event(task_oom_of(ID, 10), 10);
    h.event(counters(20, &[(ID, 3)]), 20);
    assert!(h.tick(1100).is_empty(), "the kernel log may still report them");
    let out = h.tick(3100);
    assert_eq!(out.len(), 1, "{out:#?}");
    let f = &out[0];
    assert_eq!((f.kind, f.count), (FindingKind::OomKilledChild, 3));
    assert!(f.summary.contains("killed 3 processes"), "{}", f.summary);
    assert!(
        f.summary.contains("overwritten"),
        "the log was read: {}",
        f.summary
    );
    assert_eq!(f.evidence[0].attributes["unexplained_kills"], 3);
}

#[test]
fn kills_counted_before_podmortem_watched_are_not_reported() {
    let mut c = running(100);
    // Created before the detector's first event.
    c.created_at = Some(t(0));
    let mut h = Harness::new(vec![c]);
    h.event(counters(1000, &[(ID, 57)]), 1000);
    assert!(h.tick(10_000).is_empty());
}

#[test]
fn a_container_the_inventory_learns_of_during_the_grace_gets_its_kill() {
    let mut h = Harness::new(vec![]);
    h.event(kmsg(kill(200, OomScope::Memcg)), 5);
    h.inv
        .apply(&SourceEvent::CriContainer(Box::new(running(100))), t(300));
    let out = h.tick(1100);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].kind, FindingKind::OomKilledChild);
    assert_eq!(container_of(&out[0]), ID);
}

#[test]
fn a_main_process_killed_with_no_report_read_is_left_to_the_exit_detector() {
    let mut h = Harness::new(vec![running(100)]);
    h.event(counters(0, &[(ID, 0)]), 0);
    h.event(task_oom(10), 10);
    h.event(counters(15, &[(ID, 1)]), 15);
    let exit = ContainerdEvent::TaskExit {
        container_id: ID.into(),
        exec_id: String::new(),
        pid: 100,
        exit_status: 137,
        exited_at: Some(t(12)),
    };
    h.event(SourceEvent::Containerd(exit), 20);
    assert!(h.tick(1100).is_empty());
    assert!(h.tick(4000).is_empty(), "the exit's OOMKilled counts that kill");
}

#[test]
fn a_report_read_after_its_kill_was_counted_alone_is_not_a_second_kill() {
    let mut h = Harness::new(vec![running(100)]);
    h.event(counters(0, &[(ID, 0)]), 0);
    h.event(counters(20, &[(ID, 1)]), 20);
    let out = h.tick(3100);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].count, 1);
    // The kernel log brings the kill late (a slow poll, a backlog).
    h.event(kmsg_at(headerless(201), 10), 3200);
    h.inv
        .apply(&SourceEvent::CriContainer(Box::new(running(100))), t(3200));
    assert!(h.tick(5000).is_empty(), "already counted");
    // The next kill is one again.
    h.event(kmsg(kill(202, OomScope::Memcg)), 6000);
    h.event(counters(6010, &[(ID, 2)]), 6010);
    let out = h.tick(7100);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert!(h.tick(12_000).is_empty());
}
