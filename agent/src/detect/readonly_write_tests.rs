use std::path::Path;

use super::*;
use crate::inventory::Inventory;
use crate::model::{MountInfo, PodRef, PostMortem};
use crate::sources::host_fs::HostMounts;
use crate::sources::mountinfo::normalize;
use crate::sources::CriSnapshot;

const UID: &str = "6f1c1a2e-7b2d-4c1e-9a8f-0123456789ab";
const ID: &str = "4b1d2c3e4f5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const OTHER: &str = "9a8b7c6d5e4f30211203f4e5d6c7b8a99a8b7c6d5e4f30211203f4e5d6c7b8a9";
const CONFIG_HOST: &str =
    "/var/lib/kubelet/pods/6f1c1a2e-7b2d-4c1e-9a8f-0123456789ab/volumes/kubernetes.io~configmap/app-config";
const REPEAT: Duration = Duration::from_secs(10);

fn t(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms)
}

fn container_table() -> MountTable {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/mountinfo/container_overlay.mountinfo"
    );
    MountTable::read(Path::new(path)).unwrap()
}

fn host_table() -> MountTable {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/mountinfo/host_emergency_ro.mountinfo"
    );
    MountTable::read(Path::new(path)).unwrap()
}

/// The `app` container of pod shop/api-0: a ConfigMap at /config, a read-only root.
fn app(id: &str) -> ContainerInfo {
    let mut c = ContainerInfo::unknown(id);
    c.name = "app".into();
    c.pod = PodRef {
        namespace: "shop".into(),
        name: "api-0".into(),
        uid: UID.into(),
    };
    c.state = ContainerState::Running;
    c.pid = Some(4242);
    c.readonly_rootfs = Some(true);
    c.cwd = Some("/app".into());
    c.mounts = vec![
        MountInfo {
            container_path: "/config".into(),
            host_path: CONFIG_HOST.into(),
            readonly: true,
        },
        MountInfo {
            container_path: "/data".into(),
            host_path: format!("/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~empty-dir/data"),
            readonly: false,
        },
    ];
    c
}

/// `c`, exited at `finished` (ms) after its log said `line`.
fn exited(mut c: ContainerInfo, finished: u64, line: &str) -> ContainerInfo {
    let erofs = crate::sources::logs::erofs::parse_line(line);
    assert!(erofs.is_some(), "not an EROFS line: {line}");
    c.state = ContainerState::Exited;
    c.pid = None;
    c.finished_at = Some(t(finished));
    c.exit_code = Some(1);
    c.post_mortem = Some(Arc::new(PostMortem {
        log_tail: vec![line.to_owned()],
        erofs,
        ..PostMortem::default()
    }));
    c
}

/// A tracer event: `openat` of `path` by pid 4242 of container `id`, at `ms`, with the covering
/// mount from the container fixture.
fn traced(id: &str, path: &str, ms: u64) -> ErofsEvent {
    let mount = match container_table().covering(path) {
        Some(m) => MountLookup::Found(Box::new(m.clone())),
        None => MountLookup::Unknown(format!("no mount covers {path}")),
    };
    ErofsEvent {
        at: t(ms),
        syscall: "openat",
        open_flags: Some(0o101),
        pid: 4243,
        tgid: 4242,
        comm: "app".into(),
        path: path.into(),
        path_truncated: false,
        resolved_path: normalize(path),
        cgroup: format!("cri-containerd-{id}.scope"),
        container_id: Some(id.into()),
        mnt_ns: 4_026_532_801,
        mount,
        count: 1,
    }
}

fn erofs(e: ErofsEvent) -> SourceEvent {
    SourceEvent::Erofs(Box::new(e))
}

fn cri(c: ContainerInfo) -> SourceEvent {
    SourceEvent::CriContainer(Box::new(c))
}

struct Harness {
    det: ReadOnlyWriteDetector,
    inv: Inventory,
}

impl Harness {
    fn new() -> Self {
        Harness {
            det: ReadOnlyWriteDetector::new(REPEAT),
            inv: Inventory::default(),
        }
    }

    /// A harness whose inventory holds `containers`.
    fn with(containers: Vec<ContainerInfo>) -> Self {
        let mut h = Harness::new();
        for c in containers {
            h.inv.apply(&cri(c), t(0));
        }
        h
    }

    /// Applies `event` to the inventory, then shows it to the detector, at `ms`.
    fn feed(&mut self, event: SourceEvent, ms: u64) -> Vec<Finding> {
        self.inv.apply(&event, t(ms));
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

    fn shutdown(&mut self, ms: u64) -> Vec<Finding> {
        let cx = Context {
            node: "n1",
            inventory: &self.inv,
            now: t(ms),
        };
        let mut out = Vec::new();
        self.det.on_shutdown(&cx, &mut out);
        out
    }
}

fn app_subject() -> Subject {
    Subject::Container {
        node: "n1".into(),
        namespace: "shop".into(),
        pod: "api-0".into(),
        pod_uid: UID.into(),
        container: "app".into(),
        container_id: ID.into(),
        attempt: 0,
    }
}

#[test]
fn a_traced_write_to_a_configmap_is_one_finding_with_its_cause() {
    let mut h = Harness::with(vec![app(ID)]);
    let out = h.feed(erofs(traced(ID, "/config/app.yaml", 5)), 5);
    assert_eq!(out.len(), 1);
    let f = &out[0];
    assert_eq!(
        (f.kind, f.severity, f.count, f.resolved),
        (FindingKind::ReadOnlyFilesystemWrite, Severity::Warning, 1, false)
    );
    assert_eq!(f.subject, app_subject());
    assert_eq!((f.first_seen, f.last_seen), (t(5), t(5)));
    assert_eq!(
        f.summary,
        "container app in pod shop/api-0 could not write /config/app.yaml (openat returned EROFS): /config is \
         configMap volume \"app-config\", mounted read-only"
    );
    assert!(
        f.hint.starts_with(
            "/config/app.yaml is on configMap volume \"app-config\", which Kubernetes always mounts"
        ),
        "{}",
        f.hint
    );

    let sources: Vec<EvidenceSource> = f.evidence.iter().map(|e| e.source).collect();
    assert_eq!(sources, [EvidenceSource::Tracer, EvidenceSource::Procfs]);
    let call = &f.evidence[0];
    assert_eq!(call.at, Some(t(5)));
    assert_eq!(
        call.message,
        "openat(/config/app.yaml) by pid 4242 (app) returned EROFS"
    );
    let a = &call.attributes;
    assert_eq!(a["syscall"], "openat");
    assert_eq!(a["path"], "/config/app.yaml");
    assert_eq!(a["resolved_path"], "/config/app.yaml");
    assert_eq!((a["pid"].as_u64(), a["tid"].as_u64()), (Some(4242), Some(4243)));
    assert_eq!(a["comm"], "app");
    assert_eq!(a["open_flags"], "0o101");
    assert_eq!(a["detected_by"], "tracer");
    assert!(!a.contains_key("path_truncated"));

    let cause = &f.evidence[1];
    assert_eq!(
        cause.message,
        "covering mount: /dev/vda1 on /config type ext4 (ro,relatime; filesystem rw,discard,errors=remount-ro)"
    );
    let a = &cause.attributes;
    assert_eq!(a["cause"], "read_only_volume");
    assert_eq!(a["basis"], "the process's mount table");
    assert_eq!(a["mount_point"], "/config");
    assert_eq!(a["volume"]["kind"], "configMap");
    assert_eq!(a["volume"]["name"], "app-config");
    assert_eq!(a["host_path"], CONFIG_HOST);
}

#[test]
fn a_traced_write_to_the_read_only_root_and_without_its_mount() {
    let mut h = Harness::with(vec![app(ID)]);
    let out = h.feed(erofs(traced(ID, "/var/cache/app.db", 5)), 5);
    assert_eq!(out.len(), 1);
    assert!(
        out[0].summary.ends_with(
            "/var/cache/app.db (openat returned EROFS): the container's root filesystem is read-only \
             (readOnlyRootFilesystem)"
        ),
        "{}",
        out[0].summary
    );
    assert!(
        out[0].hint.contains("Mount an emptyDir at /var/cache"),
        "{}",
        out[0].hint
    );

    // The process exited before its mount table was read: the runtime's view serves.
    let mut e = traced(ID, "/config/other.yaml", 6);
    e.mount = MountLookup::Unknown("pid 4242 exited before its mount table was read".into());
    let out = h.feed(erofs(e), 6);
    assert_eq!(out.len(), 1);
    let f = &out[0];
    let sources: Vec<EvidenceSource> = f.evidence.iter().map(|e| e.source).collect();
    assert_eq!(
        sources,
        [
            EvidenceSource::Tracer,
            EvidenceSource::Procfs,
            EvidenceSource::Cri
        ]
    );
    assert_eq!(
        f.evidence[1].message,
        "mount table not read: pid 4242 exited before its mount table was read"
    );
    assert_eq!(
        f.evidence[2].message,
        format!("the runtime mounts /config from {CONFIG_HOST} read-only")
    );
    assert_eq!(f.evidence[2].attributes["basis"], "the runtime's mount list");
    assert_eq!(f.evidence[2].attributes["volume"]["name"], "app-config");
}

#[test]
fn a_write_on_an_emergency_read_only_host_filesystem_is_critical() {
    let mut c = app(ID);
    c.mounts.push(MountInfo {
        container_path: "/cache".into(),
        host_path: "/var/lib/containerd/scratch".into(),
        readonly: false,
    });
    let mut h = Harness::with(vec![c]);
    let reading = HostMounts {
        at: t(1),
        table: Ok(host_table()),
    };
    assert!(h.feed(SourceEvent::HostMounts(Arc::new(reading)), 1).is_empty());
    let mut e = traced(ID, "/cache/blob", 5);
    e.mount = MountLookup::Unknown("pid 4242 exited before its mount table was read".into());
    let out = h.feed(erofs(e), 5);
    assert_eq!(out.len(), 1);
    let f = &out[0];
    assert_eq!(f.severity, Severity::Critical);
    assert!(
        f.summary
            .contains("the node's filesystem on /dev/loop0 was made read-only by the kernel after an error"),
        "{}",
        f.summary
    );
    let host = f.evidence.last().unwrap();
    assert_eq!(host.source, EvidenceSource::Host);
    assert!(
        host.message
            .starts_with("host mount: /dev/loop0 on /var/lib/containerd type ext4"),
        "{}",
        host.message
    );
}

#[test]
fn repeats_are_one_finding_now_and_their_count_after_the_interval() {
    let mut h = Harness::with(vec![app(ID)]);
    let mut first = Vec::new();
    for ms in 0..1000 {
        first.extend(h.feed(erofs(traced(ID, "/config/app.yaml", ms)), ms));
    }
    assert_eq!(first.len(), 1, "reported at once, then held back");
    assert_eq!(first[0].count, 1);
    assert!(h.tick(5_000).is_empty());
    assert!(h.tick(9_999).is_empty(), "the interval has not passed");

    let out = h.tick(10_000);
    assert_eq!(out.len(), 1);
    let f = &out[0];
    assert_eq!(f.count, 999, "the occurrences held back");
    assert_eq!(f.fingerprint, first[0].fingerprint);
    assert_eq!(f.last_seen, t(999), "the latest of them");
    assert_eq!(f.subject, app_subject());

    assert!(h.tick(20_000).is_empty(), "nothing more held back");
    assert!(h.tick(60_000).is_empty());
}

#[test]
fn a_repeat_after_the_interval_is_reported_with_what_was_held_back() {
    let mut h = Harness::with(vec![app(ID)]);
    assert_eq!(h.feed(erofs(traced(ID, "/config/app.yaml", 0)), 0).len(), 1);
    for ms in 1..=3 {
        assert!(h.feed(erofs(traced(ID, "/config/app.yaml", ms)), ms).is_empty());
    }
    let out = h.feed(erofs(traced(ID, "/config/app.yaml", 10_000)), 10_000);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].count, 4, "this one and the three held back");
    assert!(h.tick(30_000).is_empty(), "nothing left to flush");
    // The interval starts again from that report.
    assert!(h
        .feed(erofs(traced(ID, "/config/app.yaml", 15_000)), 15_000)
        .is_empty());
    assert_eq!(h.tick(20_000).len(), 1);
}

#[test]
fn a_tracer_event_standing_for_several_calls_counts_them() {
    let mut h = Harness::with(vec![app(ID)]);
    let mut e = traced(ID, "/config/app.yaml", 5);
    e.count = 40;
    let out = h.feed(erofs(e), 5);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].count, 40);
    assert!(
        out[0]
            .summary
            .contains(" (openat returned EROFS, 40 times): /config is"),
        "{}",
        out[0].summary
    );
    let mut e = traced(ID, "/config/app.yaml", 6);
    e.count = 7;
    assert!(h.feed(erofs(e), 6).is_empty());
    let out = h.tick(10_005);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].count, 7);
}

#[test]
fn another_path_is_another_finding() {
    let mut h = Harness::with(vec![app(ID), app(OTHER)]);
    let a = h.feed(erofs(traced(ID, "/config/app.yaml", 5)), 5);
    let b = h.feed(erofs(traced(ID, "/config/other.yaml", 6)), 6);
    assert_eq!((a.len(), b.len()), (1, 1));
    assert_ne!(a[0].fingerprint, b[0].fingerprint);
    assert!(b[0].summary.contains("/config/other.yaml"), "{}", b[0].summary);
    // Another attempt of the same container in the same pod writing the same path is the same
    // problem: held back with it.
    assert!(h.feed(erofs(traced(OTHER, "/config/app.yaml", 7)), 7).is_empty());
    // So is the same path written relative to the working directory, once resolved.
    let mut e = traced(ID, "config/app.yaml", 8);
    e.resolved_path = Some("/config/app.yaml".into());
    assert!(h.feed(erofs(e), 8).is_empty());
    let out = h.tick(10_005);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].fingerprint.as_str(), out[0].count),
        (a[0].fingerprint.as_str(), 2)
    );
}

#[test]
fn a_container_the_inventory_does_not_know_yet_is_waited_for() {
    let mut h = Harness::new();
    assert!(h.feed(erofs(traced(ID, "/config/app.yaml", 5)), 5).is_empty());
    assert!(h.tick(1_000).is_empty(), "waiting for the container");
    // Another container appearing does not release it.
    assert!(h.feed(cri(app(OTHER)), 1_500).is_empty());
    let out = h.feed(cri(app(ID)), 2_000);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].subject, app_subject());
    assert_eq!(out[0].last_seen, t(5), "when the call failed");
    assert!(
        out[0].summary.contains("/config is configMap volume"),
        "{}",
        out[0].summary
    );
    assert!(h.tick(10_000).is_empty(), "reported once");
}

#[test]
fn a_container_the_runtime_never_lists_is_dropped_after_three_seconds() {
    // Not a CRI container (another containerd namespace, another runtime): not reported.
    let mut h = Harness::new();
    assert!(h.feed(erofs(traced(ID, "/config/app.yaml", 5)), 5).is_empty());
    assert!(h.tick(2_999).is_empty());
    assert!(h.tick(3_005).is_empty());
    assert_eq!(h.det.not_cri, 1);
    assert!(h.det.waiting.is_empty(), "no longer waiting");
    // The container appearing later does not bring it back.
    assert!(h.feed(cri(app(ID)), 7_000).is_empty());
    assert!(h.shutdown(8_000).is_empty());
}

#[test]
fn waiting_events_are_bounded() {
    let mut h = Harness::new();
    for i in 0..MAX_WAITING + 10 {
        let path = format!("/data/{i}");
        assert!(h.feed(erofs(traced(ID, &path, 5)), 5).is_empty());
    }
    assert_eq!(h.det.waiting.len(), MAX_WAITING);
    assert_eq!(h.det.not_cri, 10, "the oldest are dropped");
    // The container appears: every event still waiting is reported.
    let out = h.feed(cri(app(ID)), 1_000);
    assert_eq!(out.len(), MAX_WAITING);
    assert!(out[0].summary.contains("/data/10 "), "{}", out[0].summary);
}

#[test]
fn the_log_of_an_exited_container_gives_the_finding_without_the_tracer() {
    let mut h = Harness::with(vec![app(ID)]);
    let line = "touch: /config/app.yaml: Read-only file system";
    let out = h.feed(cri(exited(app(ID), 50, line)), 60);
    assert_eq!(out.len(), 1);
    let f = &out[0];
    assert_eq!(f.kind, FindingKind::ReadOnlyFilesystemWrite);
    assert_eq!(f.subject, app_subject());
    assert_eq!(f.last_seen, t(50), "when it exited");
    assert_eq!(
        f.summary,
        "container app in pod shop/api-0 exited after failing to write /config/app.yaml: /config is configMap \
         volume \"app-config\", mounted read-only (from its log; exit code 1)"
    );
    assert!(f.hint.contains("always mounts read-only"), "{}", f.hint);
    let sources: Vec<EvidenceSource> = f.evidence.iter().map(|e| e.source).collect();
    assert_eq!(sources, [EvidenceSource::Log, EvidenceSource::Cri]);
    let log = &f.evidence[0];
    assert_eq!(log.message, line);
    assert_eq!(log.attributes["detected_by"], "log");
    assert_eq!(log.attributes["path"], "/config/app.yaml");
    assert_eq!(log.attributes["operation"], "touch");
    assert_eq!(f.evidence[1].attributes["cause"], "read_only_volume");

    // The same exit again, in a listing or on its own: reported once.
    let snapshot = CriSnapshot {
        taken_at: t(70),
        pods: vec![],
        containers: vec![exited(app(ID), 50, line)],
    };
    assert!(h.feed(SourceEvent::CriSnapshot(snapshot), 70).is_empty());
    assert!(h.feed(cri(exited(app(ID), 50, line)), 80).is_empty());
    assert!(h.tick(100_000).is_empty());
    assert!(h.shutdown(200_000).is_empty());
}

#[test]
fn a_log_line_with_a_relative_path_or_none() {
    let mut h = Harness::with(vec![app(ID)]);
    let out = h.feed(
        cri(exited(
            app(ID),
            50,
            "OSError: [Errno 30] Read-only file system: 'state/db.lock'",
        )),
        60,
    );
    assert_eq!(out.len(), 1);
    assert!(
        out[0]
            .summary
            .contains("failing to write /app/state/db.lock: the container's root filesystem is read-only"),
        "{}",
        out[0].summary
    );
    assert!(
        out[0].hint.contains("Mount an emptyDir at /app/state"),
        "{}",
        out[0].hint
    );

    let mut c = app(OTHER);
    c.mounts.clear();
    let out = h.feed(
        cri(exited(
            c,
            90,
            "Error: Os { code: 30, kind: ReadOnlyFilesystem, message: \"Read-only file system\" }",
        )),
        95,
    );
    assert_eq!(out.len(), 1);
    assert!(
        out[0]
            .summary
            .contains("failing to write (a path the log does not name): the container's root filesystem"),
        "{}",
        out[0].summary
    );
    assert!(!out[0].evidence[0].attributes.contains_key("path"));
}

#[test]
fn a_running_container_or_one_without_the_signature_is_not_reported_from_its_log() {
    let mut h = Harness::with(vec![app(ID)]);
    let mut c = exited(app(ID), 50, "touch: /config/app.yaml: Read-only file system");
    c.state = ContainerState::Running;
    assert!(h.feed(cri(c), 60).is_empty());
    let mut c = exited(app(ID), 50, "touch: /config/app.yaml: Read-only file system");
    c.post_mortem = Some(Arc::new(PostMortem::default()));
    assert!(h.feed(cri(c), 70).is_empty());
}

#[test]
fn the_log_adds_nothing_when_the_tracer_reported_the_container() {
    let mut h = Harness::with(vec![app(ID)]);
    assert_eq!(h.feed(erofs(traced(ID, "/config/app.yaml", 5)), 5).len(), 1);
    let line = "touch: /config/app.yaml: Read-only file system";
    assert!(h.feed(cri(exited(app(ID), 50, line)), 60).is_empty());
    let snapshot = CriSnapshot {
        taken_at: t(70),
        pods: vec![],
        containers: vec![exited(app(ID), 50, line)],
    };
    assert!(h.feed(SourceEvent::CriSnapshot(snapshot), 70).is_empty());
}

#[test]
fn a_traced_event_waiting_for_its_container_wins_over_the_log_of_the_same_exit() {
    // The container failed at once: the tracer's event comes before the runtime lists it, and
    // the first listing already shows it exited with the signature in its log.
    let mut h = Harness::new();
    assert!(h.feed(erofs(traced(ID, "/config/app.yaml", 5)), 5).is_empty());
    let line = "touch: /config/app.yaml: Read-only file system";
    let out = h.feed(cri(exited(app(ID), 50, line)), 60);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].evidence[0].source, EvidenceSource::Tracer);
}

#[test]
fn shutdown_flushes_what_is_held_back() {
    let mut h = Harness::with(vec![app(ID)]);
    assert_eq!(h.feed(erofs(traced(ID, "/config/app.yaml", 0)), 0).len(), 1);
    for ms in 1..=5 {
        assert!(h.feed(erofs(traced(ID, "/config/app.yaml", ms)), ms).is_empty());
    }
    // Two events still wait for their containers; one of them is listed by now (the
    // detector has not seen the listing yet), the other never is.
    assert!(h.feed(erofs(traced(OTHER, "/data/x", 6)), 6).is_empty());
    let third = "3".repeat(64);
    assert!(h.feed(erofs(traced(&third, "/data/y", 7)), 7).is_empty());
    h.inv.apply(&cri(app(OTHER)), t(8));

    let out = h.shutdown(100);
    assert_eq!(out.len(), 2, "{out:#?}");
    let held = out.iter().find(|f| f.subject == app_subject()).unwrap();
    assert_eq!(held.count, 5);
    assert_eq!(held.last_seen, t(5));
    let waiting = out.iter().find(|f| f.subject != app_subject()).unwrap();
    assert!(
        matches!(&waiting.subject, Subject::Container { container_id, container, .. }
            if container_id == OTHER && container == "app")
    );
    assert!(waiting.summary.contains("/data/x"), "{}", waiting.summary);
    assert_eq!(waiting.count, 1);
    assert!(h.shutdown(200).is_empty(), "nothing twice");
}

#[test]
fn control_characters_and_replaced_bytes_in_a_path_do_not_break_the_summary() {
    let mut h = Harness::with(vec![app(ID)]);
    for (ms, path) in [
        (5, "/data/a\nb.log"),
        (6, "/data/\u{fffd}\u{fffd}.tmp"),
        (7, "/config/\u{fffd}\n\t\u{1b}[31mred"),
        (8, "relative\u{0}path"),
    ] {
        let mut e = traced(ID, path, ms);
        e.path_truncated = true;
        let out = h.feed(erofs(e), ms);
        assert_eq!(out.len(), 1, "{path:?}");
        let f = &out[0];
        assert!(!f.summary.contains('\n'), "{:?}", f.summary);
        assert!(!f.summary.contains('\u{1b}'), "{:?}", f.summary);
        assert!(
            !f.evidence[0].message.contains('\n'),
            "{:?}",
            f.evidence[0].message
        );
        assert_eq!(
            f.evidence[0].attributes["path"], path,
            "kept as is in the attributes"
        );
        assert_eq!(f.evidence[0].attributes["path_truncated"], true);
    }
    let out = h.feed(erofs(traced(ID, "/data/a\nb.log", 20)), 20_000);
    assert_eq!(out.len(), 1);
    assert!(
        out[0]
            .summary
            .contains("could not write \"/data/a\\nb.log\" (openat"),
        "{}",
        out[0].summary
    );
    let out = h.feed(erofs(traced(ID, "/data/\u{fffd}.x", 21)), 21_000);
    assert!(
        out[0]
            .summary
            .contains("could not write /data/\u{fffd}.x (openat"),
        "{}",
        out[0].summary
    );
}

#[test]
fn control_characters_in_a_path_do_not_reach_the_hint() {
    let mut h = Harness::with(vec![app(ID)]);
    for (ms, path) in [
        (5, "/config/a\nb.yaml"),
        (
            6,
            "/var/cache/x\n2024-01-01T00:00:00Z CRITICAL NodeOOM node/n1: forged/y",
        ),
    ] {
        let out = h.feed(erofs(traced(ID, path, ms)), ms);
        assert_eq!(out.len(), 1);
        assert!(!out[0].summary.contains('\n'), "{:?}", out[0].summary);
        assert!(!out[0].hint.contains('\n'), "{:?}", out[0].hint);
    }
}

#[test]
fn a_tracer_event_arriving_after_the_log_reported_the_exit_is_not_counted_again() {
    let mut h = Harness::with(vec![app(ID)]);
    let line = "touch: /config/app.yaml: Read-only file system";
    let out = h.feed(cri(exited(app(ID), 50, line)), 60);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].evidence[0].source, EvidenceSource::Log);
    assert!(h.feed(erofs(traced(ID, "/config/app.yaml", 5)), 61).is_empty());
    assert!(h.tick(100).is_empty(), "no held-back count either");
}

#[test]
fn with_the_pod_spec_the_finding_names_its_volume_and_mount() {
    use crate::model::{ContainerSpecMeta, PodMeta, PodVolume, VolumeMountMeta};
    let mut h = Harness::with(vec![app(ID)]);
    let meta = PodMeta {
        pod: app(ID).pod,
        owner: None,
        volumes: vec![PodVolume {
            name: "settings".into(),
            kind: "configMap".into(),
            csi_driver: None,
            read_only: true,
        }],
        containers: vec![ContainerSpecMeta {
            name: "app".into(),
            volume_mounts: vec![VolumeMountMeta {
                name: "settings".into(),
                mount_path: "/config".into(),
                read_only: true,
                sub_path: None,
            }],
            ..ContainerSpecMeta::default()
        }],
    };
    h.feed(SourceEvent::PodMeta(Arc::new(meta)), 1);
    let out = h.feed(erofs(traced(ID, "/config/app.yaml", 5)), 5);
    assert_eq!(out.len(), 1);
    let f = &out[0];
    assert_eq!(
        f.summary,
        "container app in pod shop/api-0 could not write /config/app.yaml (openat returned EROFS): /config is \
         configMap volume \"settings\", mounted read-only as its volumeMount asks (readOnly: true in the pod spec)"
    );
    let a = &f.evidence[1].attributes;
    assert_eq!(a["volume"]["name"], "settings");
    assert_eq!(a["pod_spec"]["volume"], "settings");
    assert_eq!(a["pod_spec"]["mount_read_only"], true);
}
