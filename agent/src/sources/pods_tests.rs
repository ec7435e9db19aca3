use super::*;

/// A Deployment's pod as the API server returns it (trimmed of status), with one volume of
/// every common type.
const DEPLOYMENT_POD: &str = r#"{
  "apiVersion": "v1",
  "kind": "Pod",
  "metadata": {
    "name": "web-5d8f7c9b6-x2x7q",
    "generateName": "web-5d8f7c9b6-",
    "namespace": "shop",
    "uid": "6f1c2a3e-8d6b-4c1e-9f00-2b7d1e4a5c6d",
    "resourceVersion": "48213",
    "labels": {"app": "web", "pod-template-hash": "5d8f7c9b6"},
    "ownerReferences": [
      {"apiVersion": "v1", "kind": "ConfigMap", "name": "not-the-controller", "uid": "1"},
      {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d8f7c9b6",
       "uid": "0c1d", "controller": true, "blockOwnerDeletion": true}
    ]
  },
  "spec": {
    "nodeName": "worker-1",
    "initContainers": [{
      "name": "migrate",
      "image": "registry.example.com/shop/web:1.4.2",
      "command": ["/app/migrate"],
      "volumeMounts": [{"name": "config", "mountPath": "/etc/web"}]
    }],
    "containers": [{
      "name": "app",
      "image": "registry.example.com/shop/web:1.4.2",
      "resources": {
        "limits": {"memory": "256Mi", "cpu": "500m"},
        "requests": {"memory": "128Mi", "cpu": "250m"}
      },
      "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
      "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
      "securityContext": {"readOnlyRootFilesystem": true, "runAsNonRoot": true},
      "volumeMounts": [
        {"name": "config", "mountPath": "/etc/web", "readOnly": true},
        {"name": "data", "mountPath": "/var/lib/web"},
        {"name": "scratch", "mountPath": "/tmp"},
        {"name": "secrets-store", "mountPath": "/mnt/secrets", "readOnly": true},
        {"name": "shared", "mountPath": "/shared", "subPath": "web"},
        {"name": "kube-api-access-7xk2p", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}
      ]
    }, {
      "name": "sidecar",
      "image": "busybox:1.36",
      "startupProbe": {"exec": {"command": ["true"]}}
    }],
    "volumes": [
      {"name": "config", "configMap": {"name": "web-config", "defaultMode": 420}},
      {"name": "tls", "secret": {"secretName": "web-tls"}},
      {"name": "data", "persistentVolumeClaim": {"claimName": "web-data"}},
      {"name": "archive", "persistentVolumeClaim": {"claimName": "archive", "readOnly": true}},
      {"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}},
      {"name": "logs", "hostPath": {"path": "/var/log/web", "type": "DirectoryOrCreate"}},
      {"name": "secrets-store", "csi": {"driver": "secrets-store.csi.k8s.io", "readOnly": true,
        "volumeAttributes": {"secretProviderClass": "web"}}},
      {"name": "blocks", "csi": {"driver": "driver.longhorn.io", "volumeAttributes": {"size": "1Gi"}}},
      {"name": "podinfo", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
      {"name": "lun", "iscsi": {"targetPortal": "10.0.2.15:3260", "iqn": "iqn.2001-04.com.example:storage", "lun": 0, "fsType": "ext4"}},
      {"name": "shared", "nfs": {"server": "nfs.example.com", "path": "/exports/shared"}},
      {"name": "kube-api-access-7xk2p", "projected": {"sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}
      ]}}
    ]
  },
  "status": {"phase": "Running"}
}"#;

fn pod(json: &str) -> Pod {
    serde_json::from_str(json).expect("pod json")
}

fn vol<'a>(meta: &'a PodMeta, name: &str) -> &'a PodVolume {
    meta.volume(name).unwrap_or_else(|| panic!("volume {name}"))
}

#[test]
fn a_deployment_pod_becomes_its_metadata() {
    let meta = pod_meta(&pod(DEPLOYMENT_POD)).expect("meta");
    assert_eq!(meta.pod.namespace, "shop");
    assert_eq!(meta.pod.name, "web-5d8f7c9b6-x2x7q");
    assert_eq!(meta.pod.uid, "6f1c2a3e-8d6b-4c1e-9f00-2b7d1e4a5c6d");
    assert_eq!(
        meta.owner,
        Some(Owner {
            kind: "ReplicaSet".into(),
            name: "web-5d8f7c9b6".into()
        }),
        "the controller, not the first owner"
    );

    let kinds: Vec<(&str, &str, bool)> = meta
        .volumes
        .iter()
        .map(|v| (v.name.as_str(), v.kind.as_str(), v.read_only))
        .collect();
    assert_eq!(
        kinds,
        [
            ("config", "configMap", true),
            ("tls", "secret", true),
            ("data", "persistentVolumeClaim", false),
            ("archive", "persistentVolumeClaim", true),
            ("scratch", "emptyDir", false),
            ("logs", "hostPath", false),
            ("secrets-store", "csi", true),
            ("blocks", "csi", false),
            ("podinfo", "downwardAPI", true),
            ("lun", "iscsi", false),
            ("shared", "nfs", false),
            ("kube-api-access-7xk2p", "projected", true),
        ]
    );
    assert_eq!(
        vol(&meta, "blocks").csi_driver.as_deref(),
        Some("driver.longhorn.io")
    );
    assert_eq!(vol(&meta, "data").csi_driver, None);

    let names: Vec<(&str, bool)> = meta
        .containers
        .iter()
        .map(|c| (c.name.as_str(), c.init))
        .collect();
    assert_eq!(names, [("migrate", true), ("app", false), ("sidecar", false)]);
    let app = meta.container("app").expect("app");
    assert_eq!(app.probes, ["liveness", "readiness"]);
    assert_eq!(app.limits.get("memory").map(String::as_str), Some("256Mi"));
    assert_eq!(app.limits.get("cpu").map(String::as_str), Some("500m"));
    assert_eq!(app.requests.get("memory").map(String::as_str), Some("128Mi"));
    assert_eq!(app.read_only_root_filesystem, Some(true));
    let mounts: Vec<(&str, &str, bool, Option<&str>)> = app
        .volume_mounts
        .iter()
        .map(|m| {
            (
                m.name.as_str(),
                m.mount_path.as_str(),
                m.read_only,
                m.sub_path.as_deref(),
            )
        })
        .collect();
    assert_eq!(mounts[0], ("config", "/etc/web", true, None));
    assert_eq!(mounts[1], ("data", "/var/lib/web", false, None));
    assert_eq!(mounts[4], ("shared", "/shared", false, Some("web")));
    let sidecar = meta.container("sidecar").expect("sidecar");
    assert_eq!(sidecar.probes, ["startup"]);
    assert!(sidecar.limits.is_empty() && sidecar.volume_mounts.is_empty());
    assert_eq!(sidecar.read_only_root_filesystem, None);
    assert!(meta.container("migrate").expect("init").probes.is_empty());
}

#[test]
fn a_bare_pod_has_no_owner_and_a_pod_without_identity_is_skipped() {
    let bare = pod(
        r#"{"metadata": {"name": "debug", "namespace": "default", "uid": "u1"},
                     "spec": {"containers": [{"name": "sh", "image": "busybox"}]}}"#,
    );
    let meta = pod_meta(&bare).expect("meta");
    assert_eq!(meta.owner, None);
    assert!(meta.volumes.is_empty());
    assert_eq!(meta.containers.len(), 1);
    let no_uid = pod(r#"{"metadata": {"name": "x", "namespace": "default"}}"#);
    assert_eq!(pod_meta(&no_uid), None);
    let empty_name = pod(r#"{"metadata": {"name": "", "namespace": "default", "uid": "u"}}"#);
    assert_eq!(pod_meta(&empty_name), None);
}

fn uid_of(e: &SourceEvent) -> String {
    match e {
        SourceEvent::PodMeta(m) => format!("+{}", m.pod.uid),
        SourceEvent::PodMetaDeleted(uid) => format!("-{uid}"),
        other => format!("?{}", other.source_name()),
    }
}

fn simple(uid: &str, image: &str) -> Pod {
    pod(&format!(
        r#"{{"metadata": {{"name": "p-{uid}", "namespace": "ns", "uid": "{uid}"}},
            "spec": {{"containers": [{{"name": "c", "image": "{image}"}}]}}}}"#
    ))
}

#[test]
fn a_relist_deletes_what_it_no_longer_lists_and_repeats_are_not_sent() {
    let mut known = Known::default();
    let mut feed =
        |e: Event<Pod>| -> Vec<String> { known.on(e).expect("usable").iter().map(uid_of).collect() };
    assert!(feed(Event::Init).is_empty());
    assert_eq!(feed(Event::InitApply(simple("a", "x"))), ["+a"]);
    assert_eq!(feed(Event::InitApply(simple("b", "x"))), ["+b"]);
    assert!(feed(Event::InitDone).is_empty());
    // A status-only change makes the same metadata: nothing sent.
    assert!(feed(Event::Apply(simple("a", "x"))).is_empty());
    assert!(feed(Event::Apply(simple("a", "x"))).is_empty());
    assert_eq!(feed(Event::Apply(simple("c", "x"))), ["+c"]);
    assert_eq!(feed(Event::Delete(simple("c", "x"))), ["-c"]);
    assert!(feed(Event::Delete(simple("zz", "x"))).is_empty(), "never known");
    // The watch broke; while it was down, b was deleted and a changed.
    assert!(feed(Event::Init).is_empty());
    let mut changed = simple("a", "x");
    if let Some(spec) = changed.spec.as_mut() {
        spec.volumes = Some(vec![Volume {
            name: "v".into(),
            empty_dir: Some(Default::default()),
            ..Volume::default()
        }]);
    }
    assert_eq!(feed(Event::InitApply(changed)), ["+a"]);
    assert_eq!(feed(Event::InitDone), ["-b"]);
    assert!(known
        .on(Event::Apply(pod(r#"{"metadata": {"name": "x"}}"#)))
        .is_none());
}
