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
fn the_main_process_or_an_exit_within_the_grace_leaves_it_to_the_exit_detector() {
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
    assert!(h.tick(3000).is_empty(), "the container died with its child");
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
