use super::*;
use crate::model::{PodRef, PodState};

fn pod(namespace: &str, labels: &[(&str, &str)]) -> PodInfo {
    PodInfo {
        id: "sb".into(),
        pod: PodRef {
            namespace: namespace.into(),
            name: "p".into(),
            uid: "u".into(),
        },
        attempt: 0,
        state: PodState::Ready,
        created_at: None,
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

fn container(image: &str) -> ContainerInfo {
    let mut c = ContainerInfo::unknown("c");
    c.image = image.into();
    c
}

fn shipped() -> Catalogue {
    Catalogue::build(CatalogueMode::Extend, &CatalogueEntries::default()).expect("shipped catalogue")
}

fn matching_rules(catalogue: &Catalogue, facts: &PodFacts<'_>) -> Vec<String> {
    catalogue
        .rules()
        .iter()
        .filter(|r| r.matchers.matches(facts).is_some())
        .map(|r| r.name.clone())
        .collect()
}

#[test]
fn the_shipped_catalogue_covers_the_common_storage_add_ons() {
    let c = shipped();
    for rule in [
        "longhorn",
        "openebs-iscsi",
        "openebs-mayastor",
        "nfs-volumes",
        "iscsi-volumes",
        "ceph-rbd",
        "cephfs",
        "multipath",
        "nvme-of",
        "encrypted-volumes",
    ] {
        assert!(c.rule(rule).is_some(), "{rule}");
    }
    let iscsiadm = c.by_binary("/usr/sbin/iscsiadm").expect("iscsiadm");
    assert_eq!(
        iscsiadm.package_for(Some("debian")).as_deref(),
        Some("open-iscsi")
    );
    assert_eq!(
        iscsiadm.package_for(Some("rhel")).as_deref(),
        Some("iscsi-initiator-utils")
    );
    let any = iscsiadm.package_for(None).expect("all families");
    assert!(any.contains("open-iscsi (debian)") && any.contains("iscsi-initiator-utils (rhel)"));
    assert_eq!(
        c.by_binary("mount.nfs").map(|d| d.name.as_str()),
        Some("mount.nfs")
    );
    let iscsid = c.dependency("iscsid").expect("iscsid");
    let checks: Vec<_> = iscsid.checks().map(|(k, _)| k).collect();
    assert_eq!(
        checks,
        [CheckKind::Daemon, CheckKind::File],
        "running, or socket-activated"
    );
}

#[test]
fn rules_match_by_namespace_image_label_csi_driver_and_volume_type() {
    let c = shipped();
    let longhorn_ns = pod("longhorn-system", &[]);
    let facts = PodFacts::from_cri(&longhorn_ns, std::iter::empty());
    assert_eq!(matching_rules(&c, &facts), ["longhorn"]);

    let other = pod("storage", &[]);
    let images = [container("docker.io/longhornio/longhorn-manager:v1.6.2")];
    let facts = PodFacts::from_cri(&other, images.iter());
    assert_eq!(matching_rules(&c, &facts), ["longhorn"]);
    let images = [container("registry:5000/mirror/openebs/jiva-csi@sha256:00")];
    let facts = PodFacts::from_cri(&other, images.iter());
    assert_eq!(matching_rules(&c, &facts), ["openebs-iscsi"]);
    // Not a prefix of a longer repository name, nor a different repository that ends alike.
    let images = [
        container("longhornio/longhorn-manager-helper:1"),
        container("evil-longhornio/longhorn-manager:1"),
    ];
    let facts = PodFacts::from_cri(&other, images.iter());
    assert!(matching_rules(&c, &facts).is_empty());

    let mut facts = PodFacts::from_cri(&other, std::iter::empty());
    facts.csi_drivers = vec!["rook-ceph.rbd.csi.ceph.com"];
    facts.volume_types = vec!["nfs"];
    assert_eq!(matching_rules(&c, &facts), ["nfs-volumes", "ceph-rbd"]);
    facts.csi_drivers = vec![".rbd.csi.ceph.com"];
    facts.volume_types = vec![];
    assert!(matching_rules(&c, &facts).is_empty(), "`*.` needs a prefix");

    // Rules without a match apply to nothing until named.
    for name in ["multipath", "nvme-of", "encrypted-volumes", "longhorn-rwx"] {
        assert!(c.rule(name).expect(name).matchers.is_empty(), "{name}");
    }
}

#[test]
fn config_entries_extend_or_replace_the_shipped_ones() {
    let extra: CatalogueEntries = serde_yaml_ng::from_str(
        "dependencies:\n  - name: iscsiadm\n    binary: /opt/iscsi/bin/iscsiadm\n    packages: {debian: my-iscsi}\n\
         rules:\n  - name: my-app\n    needs: [iscsiadm]\n    match:\n      labels: {app: db, tier: storage}\n",
    )
    .expect("yaml");
    let c = Catalogue::build(CatalogueMode::Extend, &extra).expect("extended");
    assert_eq!(
        c.dependency("iscsiadm").and_then(|d| d.binary.as_deref()),
        Some("/opt/iscsi/bin/iscsiadm")
    );
    assert!(c.rule("longhorn").is_some(), "shipped rules stay");
    let both = pod("x", &[("app", "db"), ("tier", "storage"), ("other", "1")]);
    let one = pod("x", &[("app", "db")]);
    let rule = c.rule("my-app").expect("rule");
    assert_eq!(
        rule.matchers
            .matches(&PodFacts::from_cri(&both, std::iter::empty()))
            .as_deref(),
        Some("labels app=db,tier=storage")
    );
    assert_eq!(
        rule.matchers
            .matches(&PodFacts::from_cri(&one, std::iter::empty())),
        None
    );

    let c = Catalogue::build(CatalogueMode::Replace, &extra).expect("replaced");
    assert_eq!(c.dependencies().count(), 1);
    assert_eq!(c.rules().len(), 1);
}

#[test]
fn a_typo_in_the_catalogue_is_a_clear_error() {
    let entries = |yaml: &str| serde_yaml_ng::from_str::<CatalogueEntries>(yaml).expect("yaml");
    let err = Catalogue::build(
        CatalogueMode::Extend,
        &entries("rules:\n  - name: mine\n    needs: [iscsiadmm]\n"),
    )
    .expect_err("unknown dependency");
    assert!(err
        .to_string()
        .starts_with("rule `mine` needs `iscsiadmm`, which is not a dependency"));
    assert!(err.to_string().contains("iscsiadm, iscsid"), "{err}");

    let err = Catalogue::build(
        CatalogueMode::Extend,
        &entries("dependencies:\n  - name: x\n    why: nothing\n"),
    )
    .expect_err("nothing to check");
    assert_eq!(err, CatalogueError::NothingToCheck("x".into()));

    let err = Catalogue::build(
        CatalogueMode::Replace,
        &entries("dependencies:\n  - name: x\n    file: /a\n  - name: x\n    file: /b\n"),
    )
    .expect_err("twice");
    assert!(matches!(
        err,
        CatalogueError::BadName {
            what: "dependency",
            ..
        }
    ));

    let err = Catalogue::build(
        CatalogueMode::Extend,
        &entries("rules:\n  - name: r\n    needs: []\n"),
    )
    .expect_err("empty");
    assert_eq!(err, CatalogueError::EmptyRule("r".into()));

    // Unknown keys are rejected by the parser (the config loader reports the line).
    assert!(
        serde_yaml_ng::from_str::<CatalogueEntries>("dependencies:\n  - name: x\n    bianry: y\n").is_err()
    );
}

#[test]
fn image_references_match_by_repository() {
    assert!(image_matches(
        "longhornio/longhorn-manager",
        "longhornio/longhorn-manager"
    ));
    assert!(image_matches(
        "docker.io/longhornio/longhorn-manager:v1",
        "longhornio/longhorn-manager"
    ));
    assert!(image_matches(
        "localhost:5000/longhornio/longhorn-manager",
        "longhornio/longhorn-manager"
    ));
    assert!(image_matches(
        "longhornio/longhorn-manager@sha256:ab",
        "longhornio/longhorn-manager/"
    ));
    assert!(!image_matches("longhornio/longhorn-manager", ""));
    assert!(!image_matches(
        "xlonghornio/longhorn-manager",
        "longhornio/longhorn-manager"
    ));
    assert!(!image_matches("", "a"));
    assert!(!image_matches(":::@@@", "a"));
}

#[test]
fn families_come_from_id_then_id_like() {
    assert_eq!(family("debian", []), Some("debian"));
    assert_eq!(family("pop", []), Some("debian"));
    assert_eq!(family("rocky", ["rhel", "centos", "fedora"]), Some("rhel"));
    assert_eq!(family("somethingnew", ["ubuntu", "debian"]), Some("debian"));
    assert_eq!(family("opensuse-leap", ["suse"]), Some("suse"));
    assert_eq!(family("nixos", []), None);
}
