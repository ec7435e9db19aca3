use std::time::{Duration, SystemTime};

use super::*;
use crate::catalogue::{CatalogueEntries, CatalogueMode, CheckKind};
use crate::inventory::Inventory;
use crate::model::{PodInfo, PodRef};
use crate::sources::host_deps::CheckResult;
use crate::sources::CriSnapshot;

fn t(s: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
}

fn pod(id: &str, namespace: &str) -> PodInfo {
    PodInfo {
        id: id.into(),
        pod: PodRef {
            namespace: namespace.into(),
            name: format!("pod-{id}"),
            uid: format!("uid-{id}"),
        },
        attempt: 0,
        state: PodState::Ready,
        created_at: None,
        labels: BTreeMap::new(),
    }
}

fn report(at: u64, states: &[(&str, CheckState)]) -> Arc<HostReport> {
    Arc::new(HostReport {
        at: t(at),
        took: Duration::ZERO,
        os: "Debian GNU/Linux 12 (bookworm)".into(),
        family: Some("debian"),
        kernel: Some("6.1.0".into()),
        dependencies: states
            .iter()
            .map(|(name, state)| DependencyStatus {
                name: (*name).into(),
                checks: vec![CheckResult {
                    kind: CheckKind::Binary,
                    target: (*name).into(),
                    state: state.clone(),
                }],
            })
            .collect(),
    })
}

struct Harness {
    det: MissingHostDepDetector,
    inv: Inventory,
}

impl Harness {
    fn new(extra: &str) -> Self {
        let extra: CatalogueEntries = serde_yaml_ng::from_str(extra).expect("yaml");
        let catalogue = Catalogue::build(CatalogueMode::Extend, &extra).expect("catalogue");
        Harness {
            det: MissingHostDepDetector::new(Arc::new(catalogue)),
            inv: Inventory::default(),
        }
    }

    fn feed(&mut self, event: SourceEvent, now: u64) -> Vec<Finding> {
        self.inv.apply(&event, t(now));
        let cx = Context {
            node: "worker-1",
            inventory: &self.inv,
            now: t(now),
        };
        let mut out = Vec::new();
        self.det.on_event(&event, &cx, &mut out);
        out
    }

    fn pods(&mut self, pods: Vec<PodInfo>, now: u64) -> Vec<Finding> {
        let snapshot = CriSnapshot {
            taken_at: t(now),
            pods,
            containers: vec![],
        };
        self.feed(SourceEvent::CriSnapshot(snapshot), now)
    }
}

fn missing() -> CheckState {
    CheckState::Missing("not found in /usr/sbin:/usr/bin".into())
}

#[test]
fn raised_when_a_pod_that_needs_it_appears_and_cleared_when_installed() {
    let mut h = Harness::new("");
    let absent = report(0, &[("iscsiadm", missing()), ("iscsid", missing())]);
    assert!(
        h.feed(SourceEvent::HostDeps(absent.clone()), 0).is_empty(),
        "nobody needs it yet"
    );
    assert!(
        h.pods(vec![pod("a", "default")], 1).is_empty(),
        "not a Longhorn pod"
    );

    let out = h.pods(vec![pod("a", "default"), pod("m", "longhorn-system")], 2);
    let names: Vec<String> = out.iter().map(|f| f.summary.clone()).collect();
    assert_eq!(out.len(), 2, "{names:?}");
    let f = &out[0];
    assert_eq!(f.kind, FindingKind::MissingHostDependency);
    assert_eq!(
        f.subject,
        Subject::Node {
            node: "worker-1".into()
        }
    );
    assert_eq!(
        f.summary,
        "node worker-1 lacks iscsiadm (binary; package open-iscsi), needed by pod longhorn-system/pod-m \
         (rule longhorn: namespace longhorn-system); iscsiadm: attaches iSCSI disks (Longhorn volumes, OpenEBS \
         Jiva/cStor, iscsi volumes)"
    );
    assert!(f
        .hint
        .starts_with("Install open-iscsi on the node (`apt-get install -y open-iscsi`)"));
    assert!(out[1]
        .summary
        .contains("lacks iscsid (daemon or file; package open-iscsi)"));
    assert!(out[1].hint.contains("then `systemctl enable --now iscsid`"));
    assert_eq!(f.evidence[0].source, EvidenceSource::Host);
    assert!(f.evidence[0]
        .message
        .contains("binary iscsiadm: missing (not found in /usr/sbin:/usr/bin)"));
    assert_eq!(f.evidence[1].source, EvidenceSource::Cri);

    // The same pods again, or another check round saying the same: nothing new.
    assert!(h
        .pods(vec![pod("a", "default"), pod("m", "longhorn-system")], 3)
        .is_empty());
    assert!(h.feed(SourceEvent::HostDeps(absent), 4).is_empty());
    // A second pod that needs it: said again, naming it.
    let out = h.pods(vec![pod("m", "longhorn-system"), pod("n", "longhorn-system")], 5);
    assert_eq!(out.len(), 2);
    assert!(out[0].summary.contains("and 1 more"), "{}", out[0].summary);

    let installed = report(
        6,
        &[
            ("iscsiadm", CheckState::Present("/usr/sbin/iscsiadm".into())),
            ("iscsid", missing()),
        ],
    );
    let out = h.feed(SourceEvent::HostDeps(installed), 6);
    assert_eq!(out.len(), 1);
    assert!(out[0].resolved);
    assert_eq!(
        out[0].summary,
        "node worker-1 no longer lacks iscsiadm: it is present now (/usr/sbin/iscsiadm)"
    );
    // Its fingerprint is the raised one's: the sinks can pair them.
    assert_eq!(out[0].fingerprint, f.fingerprint);

    // The pods go away: nothing flaps until the next check round, which says it is no longer
    // needed (and still missing).
    assert!(h.pods(vec![pod("a", "default")], 7).is_empty());
    let out = h.feed(SourceEvent::HostDeps(report(8, &[("iscsid", missing())])), 8);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].summary,
        "node worker-1: iscsid is no longer needed: no pod on the node needs it any more, though it is still missing"
    );
}

#[test]
fn unknown_is_never_reported_as_missing() {
    let mut h = Harness::new("");
    h.pods(vec![pod("m", "longhorn-system")], 0);
    let unknown = report(
        1,
        &[
            (
                "iscsiadm",
                CheckState::Unknown("permission denied: /host/usr/sbin".into()),
            ),
            ("iscsid", CheckState::Present("running as pid 7".into())),
        ],
    );
    assert!(h.feed(SourceEvent::HostDeps(unknown), 1).is_empty());
}

#[test]
fn always_rules_apply_without_pods_and_not_ready_pods_do_not_count() {
    let mut h =
        Harness::new("rules:\n  - name: multipath\n    needs: [multipathd]\n    match: {always: true}\n");
    let mut gone = pod("m", "longhorn-system");
    gone.state = PodState::NotReady;
    h.pods(vec![gone], 0);
    let out = h.feed(
        SourceEvent::HostDeps(report(1, &[("multipathd", missing()), ("iscsiadm", missing())])),
        1,
    );
    assert_eq!(out.len(), 1);
    assert!(out[0].summary.contains("lacks multipathd"), "{}", out[0].summary);
    assert!(
        out[0].summary.contains("required by rule multipath"),
        "{}",
        out[0].summary
    );
}

#[test]
fn install_commands_only_for_plain_package_names() {
    assert_eq!(
        install_command(Some("rhel"), "iscsi-initiator-utils").as_deref(),
        Some("dnf install -y iscsi-initiator-utils")
    );
    assert_eq!(install_command(None, "open-iscsi"), None);
    assert_eq!(install_command(Some("debian"), "the distribution kernel"), None);
    assert_eq!(install_command(Some("debian"), "x; rm -rf /"), None);
}

fn meta_with_csi(p: &PodInfo, driver: &str) -> SourceEvent {
    SourceEvent::PodMeta(Arc::new(crate::model::PodMeta {
        pod: p.pod.clone(),
        owner: None,
        volumes: vec![crate::model::PodVolume {
            name: "blocks".into(),
            kind: "csi".into(),
            csi_driver: Some(driver.into()),
            read_only: false,
        }],
        containers: vec![],
    }))
}

#[test]
fn a_csi_driver_rule_fires_for_a_pod_whose_api_metadata_names_the_driver() {
    let mut h = Harness::new("");
    let absent = report(0, &[("iscsiadm", missing()), ("iscsid", missing())]);
    h.feed(SourceEvent::HostDeps(absent), 0);
    let app = pod("db", "shop");
    assert!(
        h.pods(vec![app.clone()], 1).is_empty(),
        "the runtime alone cannot tell"
    );
    let out = h.feed(meta_with_csi(&app, "driver.longhorn.io"), 2);
    assert_eq!(out.len(), 2, "iscsiadm and iscsid");
    assert!(
        out[0]
            .summary
            .contains("needed by pod shop/pod-db (rule longhorn: CSI driver driver.longhorn.io)"),
        "{}",
        out[0].summary
    );
    // Another driver matches nothing.
    let mut h = Harness::new("");
    h.feed(SourceEvent::HostDeps(report(0, &[("iscsiadm", missing())])), 0);
    h.pods(vec![app.clone()], 1);
    assert!(h.feed(meta_with_csi(&app, "ebs.csi.aws.com"), 2).is_empty());
}
