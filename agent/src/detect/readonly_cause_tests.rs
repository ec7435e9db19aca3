use std::path::Path;

use super::*;
use crate::model::MountInfo;

const UID: &str = "6f1c1a2e-7b2d-4c1e-9a8f-0123456789ab";
const CONFIG_HOST: &str =
    "/var/lib/kubelet/pods/6f1c1a2e-7b2d-4c1e-9a8f-0123456789ab/volumes/kubernetes.io~configmap/app-config";

fn container_table() -> MountTable {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/mountinfo/container_overlay.mountinfo"
    );
    let table = MountTable::read(Path::new(path)).unwrap();
    assert_eq!(table.skipped, 0);
    table
}

fn host_table() -> MountTable {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/mountinfo/host_emergency_ro.mountinfo"
    );
    let table = MountTable::read(Path::new(path)).unwrap();
    assert_eq!(table.skipped, 0);
    table
}

/// The one mount of a single mountinfo line.
fn mount(line: &str) -> Mount {
    let table = MountTable::parse(line.as_bytes());
    assert_eq!(table.mounts.len(), 1, "{line}");
    table.mounts[0].clone()
}

fn mounted(container_path: &str, host_path: &str, readonly: bool) -> MountInfo {
    MountInfo {
        container_path: container_path.into(),
        host_path: host_path.into(),
        readonly,
    }
}

fn container(mounts: Vec<MountInfo>, readonly_rootfs: Option<bool>) -> ContainerInfo {
    let mut c = ContainerInfo::unknown("4b1d2c3e");
    c.name = "app".into();
    c.mounts = mounts;
    c.readonly_rootfs = readonly_rootfs;
    c
}

fn volume(kind: &str, name: &str) -> Option<VolumeRef> {
    Some(VolumeRef {
        kind: kind.into(),
        name: name.into(),
    })
}

fn pod_volume(plugin: &str, rest: &str) -> String {
    format!("/var/lib/kubelet/pods/{UID}/volumes/{plugin}/{rest}")
}

// The process's own mount table.

#[test]
fn a_read_only_overlay_root_is_a_read_only_rootfs() {
    let table = container_table();
    let m = table.covering("/var/cache/app/state.db").unwrap();
    assert_eq!((m.mount_point.as_str(), m.fs_type.as_str()), ("/", "overlay"));
    let v = classify("/var/cache/app/state.db", Some(m), None, None);
    assert_eq!(v.cause, Cause::ReadOnlyRootfs);
    assert_eq!(v.cause.as_str(), "read_only_rootfs");
    assert_eq!(v.mount_point.as_deref(), Some("/"));
    assert_eq!(v.mount.as_ref(), Some(m));
    assert_eq!(v.basis, "the process's mount table");

    let h = hint(&v.cause, "/var/cache/app/state.db", v.mount_point.as_deref());
    assert!(h.contains("readOnlyRootFilesystem: true"), "{h}");
    assert!(h.contains("Mount an emptyDir at /var/cache/app"), "{h}");
    assert!(h.contains("mountPath: /var/cache/app"), "{h}");
}

#[test]
fn a_rootfs_hint_for_a_file_at_the_root_suggests_another_directory() {
    for path in ["/app.pid", "/tmp/"] {
        let h = hint(&Cause::ReadOnlyRootfs, path, Some("/"));
        assert!(h.contains(&format!("writes {path} at the root")), "{h}");
        assert!(h.contains("mount an emptyDir (for example at /data)"), "{h}");
    }
    let h = hint(&Cause::ReadOnlyRootfs, "/tmp/x/", Some("/"));
    assert!(h.contains("Mount an emptyDir at /tmp "), "{h}");
}

#[test]
fn a_configmap_volume_is_read_only_from_the_mount_root() {
    let table = container_table();
    let m = table.covering("/config/app.yaml").unwrap();
    let v = classify("/config/app.yaml", Some(m), None, None);
    assert_eq!(
        v.cause,
        Cause::ReadOnlyVolume {
            volume: volume("configMap", "app-config"),
            host_path: Some(CONFIG_HOST.into()),
        }
    );
    assert_eq!(v.cause.as_str(), "read_only_volume");
    assert_eq!(v.mount_point.as_deref(), Some("/config"));

    let h = hint(&v.cause, "/config/app.yaml", v.mount_point.as_deref());
    assert!(
        h.starts_with("/config/app.yaml is on configMap volume \"app-config\", which Kubernetes always mounts read-only"),
        "{h}"
    );
    assert!(h.contains("emptyDir"), "{h}");
    assert!(!h.contains("readOnly: false"), "{h}");
}

#[test]
fn the_runtime_host_path_names_the_volume_when_the_mount_root_does_not() {
    // The service account token: a tmpfs whose root is `/`; only the runtime knows its source.
    let table = container_table();
    let path = "/var/run/secrets/kubernetes.io/serviceaccount/token";
    let m = table.covering(path).unwrap();
    assert_eq!(m.root, "/");

    let v = classify(path, Some(m), None, None);
    assert_eq!(
        v.cause,
        Cause::ReadOnlyVolume {
            volume: None,
            host_path: None
        }
    );
    let h = hint(&v.cause, path, v.mount_point.as_deref());
    assert!(
        h.contains(
            "on a read-only mount at /var/run/secrets/kubernetes.io/serviceaccount: make the mount writable"
        ),
        "{h}"
    );

    let token = pod_volume("kubernetes.io~projected", "kube-api-access-7xk2p");
    let c = container(
        vec![mounted(
            "/var/run/secrets/kubernetes.io/serviceaccount",
            &token,
            true,
        )],
        None,
    );
    let v = classify(path, Some(m), Some(&c), None);
    assert_eq!(
        v.cause,
        Cause::ReadOnlyVolume {
            volume: volume("projected", "kube-api-access-7xk2p"),
            host_path: Some(token),
        }
    );
    let h = hint(&v.cause, path, v.mount_point.as_deref());
    assert!(h.contains("always mounts read-only"), "{h}");
}

#[test]
fn a_read_only_csi_or_host_path_volume_can_be_made_writable() {
    let pvc = pod_volume("kubernetes.io~csi", "pvc-3c1f/mount");
    let m = mount(&format!(
        "1600 1523 252:1 {pvc} /data ro,relatime - ext4 /dev/vda1 rw,discard,errors=remount-ro"
    ));
    let v = classify("/data/db/wal", Some(&m), None, None);
    assert_eq!(
        v.cause,
        Cause::ReadOnlyVolume {
            volume: volume("csi", "pvc-3c1f"),
            host_path: Some(pvc),
        }
    );
    let h = hint(&v.cause, "/data/db/wal", v.mount_point.as_deref());
    assert!(
        h.contains("is on volume \"pvc-3c1f\" (csi), mounted read-only"),
        "{h}"
    );
    assert!(h.contains("set readOnly: false on its volumeMount"), "{h}");

    // A hostPath volume: the host path names no Kubernetes volume.
    let m = mount("1601 1523 252:1 /srv/shared\\040volume /mnt/shared ro,relatime - ext4 /dev/vda1 rw");
    let v = classify("/mnt/shared/out.csv", Some(&m), None, None);
    assert_eq!(
        v.cause,
        Cause::ReadOnlyVolume {
            volume: None,
            host_path: Some("/srv/shared volume".into()),
        }
    );
    let h = hint(&v.cause, "/mnt/shared/out.csv", v.mount_point.as_deref());
    assert_eq!(
        h,
        "/mnt/shared/out.csv is on a read-only mount at /mnt/shared (from /srv/shared volume on the host): make \
         the mount writable (readOnly: false), or write elsewhere."
    );
}

#[test]
fn kernel_filesystems_are_system_mounts() {
    let table = container_table();
    for (path, fs_type) in [
        ("/proc/sys/net/core/somaxconn", "proc"),
        ("/proc/sys/vm/overcommit_memory", "proc"),
        ("/sys/kernel/mm/transparent_hugepage/enabled", "sysfs"),
        ("/sys/fs/cgroup/memory.max", "cgroup2"),
    ] {
        let m = table.covering(path).unwrap();
        let v = classify(path, Some(m), None, None);
        assert_eq!(
            v.cause,
            Cause::SystemMount {
                fs_type: fs_type.into()
            },
            "{path}"
        );
        assert_eq!(v.cause.as_str(), "system_mount");
    }
    let h = hint(
        &Cause::SystemMount {
            fs_type: "proc".into(),
        },
        "/proc/sys/net/core/somaxconn",
        Some("/proc/sys"),
    );
    assert!(
        h.contains("is on proc, which unprivileged containers get read-only"),
        "{h}"
    );
    assert!(h.contains("securityContext.sysctls"), "{h}");
}

#[test]
fn an_emergency_read_only_superblock_is_the_host_filesystem_after_an_error() {
    let m = mount(
        "1540 1523 7:0 /io.containerd.content.v1.content /cache rw,relatime - ext4 /dev/loop0 \
         rw,errors=remount-ro,emergency_ro",
    );
    assert!(!m.mount_read_only(), "both option lists say rw");

    // Without the runtime's view, the host mount point is not known.
    let v = classify("/cache/blob", Some(&m), None, None);
    assert_eq!(
        v.cause,
        Cause::HostFilesystem {
            device: "/dev/loop0".into(),
            host_mount_point: None,
            after_error: true,
        }
    );
    assert_eq!(v.cause.as_str(), "host_filesystem");
    assert_eq!(v.mount_point.as_deref(), Some("/cache"));

    // With it, the host's table tells where the filesystem is mounted.
    let c = container(
        vec![mounted(
            "/cache/",
            "/var/lib/image-cache/io.containerd.content.v1.content",
            false,
        )],
        None,
    );
    let host = host_table();
    let v = classify("/cache/blob", Some(&m), Some(&c), Some(&host));
    assert_eq!(
        v.cause,
        Cause::HostFilesystem {
            device: "/dev/loop0".into(),
            host_mount_point: Some("/var/lib/image-cache".into()),
            after_error: true,
        }
    );

    let h = hint(&v.cause, "/cache/blob", v.mount_point.as_deref());
    assert!(
        h.contains("on /dev/loop0 was made read-only by the kernel after an error"),
        "{h}"
    );
    assert!(h.contains("Cordon and drain the node"), "{h}");
}

#[test]
fn a_filesystem_read_only_by_nature_is_a_read_only_volume_not_the_node() {
    // A tmpfs (or NFS export, squashfs, read-only PV) mounted read-only as a whole: nothing
    // says the node's own filesystem failed.
    let m = mount("1541 1523 0:61 / /scratch rw,relatime - tmpfs tmpfs ro,size=1024k");
    let v = classify("/scratch/x", Some(&m), None, None);
    assert_eq!(
        v.cause,
        Cause::ReadOnlyVolume {
            volume: None,
            host_path: None,
        }
    );
    let h = hint(&v.cause, "/scratch/x", v.mount_point.as_deref());
    assert!(h.contains("read-only mount at /scratch"), "{h}");
}

#[test]
fn a_writable_mount_on_a_read_only_host_filesystem_is_the_host_filesystem() {
    let table = container_table();
    let host = host_table();
    let m = table.covering("/data/out").unwrap();
    assert!(!m.read_only());

    // `/data` comes from below the host's `/var/lib/containerd`, which is emergency_ro there.
    let c = container(
        vec![mounted("/data", "/var/lib/containerd/scratch/data", false)],
        None,
    );
    let v = classify("/data/out", Some(m), Some(&c), Some(&host));
    assert_eq!(
        v.cause,
        Cause::HostFilesystem {
            device: "/dev/loop0".into(),
            host_mount_point: Some("/var/lib/containerd".into()),
            after_error: true,
        }
    );
    assert_eq!(v.basis, "the process's mount table");

    // A writable mount on a writable host filesystem: nothing to blame.
    let c = container(
        vec![mounted("/data", "/var/lib/kubelet/pods/x/data", false)],
        None,
    );
    let v = classify("/data/out", Some(m), Some(&c), Some(&host));
    assert_eq!(v.cause, Cause::Unknown);
    let h = hint(&v.cause, "/data/out", v.mount_point.as_deref());
    assert!(h.contains("though its mount looks writable"), "{h}");
    // Nor without the host's table.
    let c = container(
        vec![mounted("/data", "/var/lib/containerd/scratch/data", false)],
        None,
    );
    assert_eq!(
        classify("/data/out", Some(m), Some(&c), None).cause,
        Cause::Unknown
    );
}

// The runtime's view, without the process's mount table.

#[test]
fn a_read_only_runtime_mount_is_a_read_only_volume() {
    let c = container(vec![mounted("/config", CONFIG_HOST, true)], Some(false));
    let v = classify("/config/app.yaml", None, Some(&c), None);
    assert_eq!(
        v.cause,
        Cause::ReadOnlyVolume {
            volume: volume("configMap", "app-config"),
            host_path: Some(CONFIG_HOST.into()),
        }
    );
    assert_eq!(v.mount_point.as_deref(), Some("/config"));
    assert_eq!(v.mount, None);
    assert_eq!(v.basis, "the runtime's mount list");
    // The mount point itself is covered too, and the path is normalised first.
    let v = classify("/config", None, Some(&c), None);
    assert_eq!(v.mount_point.as_deref(), Some("/config"));
    let v = classify("//config/./sub/../app.yaml", None, Some(&c), None);
    assert_eq!(v.mount_point.as_deref(), Some("/config"));
}

#[test]
fn the_longest_runtime_mount_wins() {
    let secret = pod_volume("kubernetes.io~secret", "tls");
    let c = container(
        vec![
            mounted("/etc/app", "/srv/app-etc", false),
            mounted("/etc/app/tls/", &secret, true),
        ],
        None,
    );
    let v = classify("/etc/app/tls/key.pem", None, Some(&c), None);
    assert_eq!(
        v.cause,
        Cause::ReadOnlyVolume {
            volume: volume("secret", "tls"),
            host_path: Some(secret),
        }
    );
    assert_eq!(v.mount_point.as_deref(), Some("/etc/app/tls/"));
    let v = classify("/etc/app/app.conf", None, Some(&c), None);
    assert_eq!(
        (v.cause, v.mount_point.as_deref()),
        (Cause::Unknown, Some("/etc/app"))
    );
}

#[test]
fn a_read_only_root_from_the_runtime_spec() {
    let c = container(vec![mounted("/config", CONFIG_HOST, true)], Some(true));
    let v = classify("/var/run/app.pid", None, Some(&c), None);
    assert_eq!(v.cause, Cause::ReadOnlyRootfs);
    assert_eq!(v.mount_point.as_deref(), Some("/"));
    assert_eq!(v.basis, "the runtime's container spec");

    for readonly_rootfs in [Some(false), None] {
        let c = container(vec![], readonly_rootfs);
        let v = classify("/var/run/app.pid", None, Some(&c), None);
        assert_eq!(v.cause, Cause::Unknown, "{readonly_rootfs:?}");
        assert_eq!(v.mount_point.as_deref(), Some("/"));
    }
}

#[test]
fn a_writable_runtime_mount_on_a_read_only_host_filesystem() {
    let host = host_table();
    let c = container(
        vec![mounted("/cache", "/var/lib/containerd/scratch/cache", false)],
        Some(false),
    );
    let v = classify("/cache/index", None, Some(&c), Some(&host));
    assert_eq!(
        v.cause,
        Cause::HostFilesystem {
            device: "/dev/loop0".into(),
            host_mount_point: Some("/var/lib/containerd".into()),
            after_error: true,
        }
    );
    assert_eq!(v.mount_point.as_deref(), Some("/cache"));
    assert_eq!(v.basis, "the runtime's mount list");

    // /boot is read-only on the host, per mount and per superblock, without an error.
    let c = container(vec![mounted("/host-boot", "/boot/grub", false)], None);
    let v = classify("/host-boot/grub.cfg", None, Some(&c), Some(&host));
    assert_eq!(
        v.cause,
        Cause::HostFilesystem {
            device: "/dev/vda16".into(),
            host_mount_point: Some("/boot".into()),
            after_error: false,
        }
    );

    // A mount from a writable host filesystem.
    let c = container(
        vec![mounted("/logs", "/var/lib/kubelet/pods/x/logs", false)],
        None,
    );
    let v = classify("/logs/a.log", None, Some(&c), Some(&host));
    assert_eq!(v.cause, Cause::Unknown);
}

#[test]
fn an_unknown_container_is_unknown() {
    let host = host_table();
    let v = classify("/config/app.yaml", None, None, Some(&host));
    assert_eq!(
        v,
        Verdict {
            cause: Cause::Unknown,
            mount_point: None,
            mount: None,
            basis: "nothing: the container is unknown",
            spec: None,
        }
    );
    assert_eq!(v.cause.as_str(), "unknown");
}

#[test]
fn a_mount_point_matches_whole_components_only() {
    // The runtime's list: `/config` does not cover `/configuration`.
    let c = container(vec![mounted("/config", CONFIG_HOST, true)], Some(false));
    let v = classify("/configuration/app.yaml", None, Some(&c), None);
    assert_eq!(v.cause, Cause::Unknown);
    assert_eq!(v.mount_point.as_deref(), Some("/"));
    let c = container(vec![mounted("/config", CONFIG_HOST, true)], Some(true));
    let v = classify("/configuration/app.yaml", None, Some(&c), None);
    assert_eq!(v.cause, Cause::ReadOnlyRootfs);

    // The process's table: the covering mount of `/configuration` is the root.
    let table = container_table();
    let m = table.covering("/configuration/app.yaml").unwrap();
    assert_eq!(m.mount_point, "/");
    let v = classify("/configuration/app.yaml", Some(m), Some(&c), None);
    assert_eq!(v.cause, Cause::ReadOnlyRootfs);
}

#[test]
fn causes_serialize_with_a_tag() {
    let cause = Cause::ReadOnlyVolume {
        volume: volume("configMap", "app-config"),
        host_path: Some(CONFIG_HOST.into()),
    };
    let json = serde_json::to_value(&cause).unwrap();
    assert_eq!(json["cause"], "read_only_volume");
    assert_eq!(json["volume"]["kind"], "configMap");
    assert_eq!(json["volume"]["name"], "app-config");
    assert_eq!(json["host_path"], CONFIG_HOST);
    let json = serde_json::to_value(Cause::HostFilesystem {
        device: "/dev/loop0".into(),
        host_mount_point: None,
        after_error: true,
    })
    .unwrap();
    assert_eq!(json["cause"], "host_filesystem");
    assert_eq!(json["after_error"], true);
}

// Volumes from host paths.

#[test]
fn volumes_from_kubelet_host_paths() {
    let cases = [
        (
            "kubernetes.io~configmap",
            "app-config",
            "configMap",
            "app-config",
            true,
        ),
        (
            "kubernetes.io~secret",
            "db-creds/password",
            "secret",
            "db-creds",
            true,
        ),
        (
            "kubernetes.io~projected",
            "kube-api-access-7xk2p",
            "projected",
            "kube-api-access-7xk2p",
            true,
        ),
        (
            "kubernetes.io~downward-api",
            "podinfo/labels",
            "downwardAPI",
            "podinfo",
            true,
        ),
        ("kubernetes.io~empty-dir", "scratch", "emptyDir", "scratch", false),
        ("kubernetes.io~csi", "pvc-3c1f/mount", "csi", "pvc-3c1f", false),
        (
            "kubernetes.io~local-volume",
            "local-pv-1",
            "local",
            "local-pv-1",
            false,
        ),
        ("kubernetes.io~nfs", "share", "nfs", "share", false),
        ("flexvolume~rook", "vol", "flexvolume~rook", "vol", false),
    ];
    for (plugin, rest, kind, name, always) in cases {
        let path = pod_volume(plugin, rest);
        let v = volume_from_host_path(&path);
        assert_eq!(v, volume(kind, name), "{path}");
        assert_eq!(v.map(|v| v.always_read_only()), Some(always), "{path}");
    }
}

#[test]
fn sub_paths_and_other_kubelet_roots() {
    assert_eq!(
        volume_from_host_path(&format!(
            "/var/lib/kubelet/pods/{UID}/volume-subpaths/app-config/app/0"
        )),
        volume("subPath", "app-config")
    );
    assert_eq!(
        volume_from_host_path(&format!(
            "/data/kubelet/pods/{UID}/volumes/kubernetes.io~secret/s/"
        )),
        volume("secret", "s")
    );
    assert_eq!(
        volume_from_host_path(&format!("pods/{UID}/volumes/kubernetes.io~secret/s")),
        volume("secret", "s"),
        "relative"
    );
    assert_eq!(
        volume_from_host_path(&format!(
            "//var/lib/kubelet//pods/{UID}//volumes/kubernetes.io~secret//s"
        )),
        volume("secret", "s"),
        "repeated slashes"
    );
    assert!(!volume("subPath", "x").unwrap().always_read_only());
}

#[test]
fn garbage_host_paths_name_no_volume() {
    for path in [
        "",
        "/",
        "/srv/shared volume",
        "/var/lib/kubelet",
        "/var/lib/kubelet/pods",
        "/var/lib/kubelet/pods/",
        &format!("/var/lib/kubelet/pods/{UID}"),
        &format!("/var/lib/kubelet/pods/{UID}/etc-hosts"),
        &format!("/var/lib/kubelet/pods/{UID}/containers/app/4b1d2c3e"),
        &format!("/var/lib/kubelet/pods/{UID}/volumes"),
        &format!("/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~configmap"),
        &format!("/var/lib/kubelet/pods/{UID}/volume-subpaths"),
        "pods",
        "\u{0}pods\n/\u{fffd}/volumes",
    ] {
        assert_eq!(volume_from_host_path(path), None, "{path:?}");
    }
}

#[test]
fn a_writable_overlay_root_whose_upper_directory_is_on_a_read_only_host_filesystem() {
    let table = MountTable::parse(
        b"1 0 0:40 / / rw,relatime - overlay overlay rw,lowerdir=/var/lib/containerd/l1,upperdir=/var/lib/containerd/snap/9/fs,workdir=/var/lib/containerd/snap/9/work\n",
    );
    let host = MountTable::parse(
        b"20 1 7:0 / /var/lib/containerd rw,relatime - ext4 /dev/loop0 rw,errors=remount-ro,emergency_ro\n",
    );
    let root = table.covering("/data.txt").cloned();
    let v = classify("/data.txt", root.as_ref(), None, Some(&host));
    assert_eq!(
        v.cause,
        Cause::HostFilesystem {
            device: "/dev/loop0".into(),
            host_mount_point: Some("/var/lib/containerd".into()),
            after_error: true,
        }
    );
}

fn spec_meta() -> crate::model::PodMeta {
    use crate::model::{ContainerSpecMeta, PodMeta, PodVolume, VolumeMountMeta};
    let mount = |name: &str, path: &str, read_only: bool| VolumeMountMeta {
        name: name.into(),
        mount_path: path.into(),
        read_only,
        sub_path: None,
    };
    let volume = |name: &str, kind: &str, read_only: bool| PodVolume {
        name: name.into(),
        kind: kind.into(),
        csi_driver: None,
        read_only,
    };
    PodMeta {
        volumes: vec![
            volume("db", "persistentVolumeClaim", false),
            volume("archive", "persistentVolumeClaim", true),
            volume("scratch", "emptyDir", false),
        ],
        containers: vec![ContainerSpecMeta {
            name: "app".into(),
            volume_mounts: vec![
                mount("db", "/data", true),
                mount("archive", "/archive/", false),
                mount("scratch", "/tmp", false),
            ],
            ..ContainerSpecMeta::default()
        }],
        ..PodMeta::default()
    }
}

#[test]
fn the_pod_spec_names_the_volume_and_says_who_made_it_read_only() {
    let meta = spec_meta();
    let pvc = pod_volume("kubernetes.io~csi", "pvc-3c1f/mount");
    let m = mount(&format!(
        "1600 1523 252:1 {pvc} /data ro,relatime - ext4 /dev/vda1 rw,discard,errors=remount-ro"
    ));
    let v = classify("/data/db/wal", Some(&m), None, None).with_spec(Some(&meta), "app");
    // The spec's name, not the PersistentVolume's from the host path.
    assert_eq!(
        v.cause,
        Cause::ReadOnlyVolume {
            volume: volume("persistentVolumeClaim", "db"),
            host_path: Some(pvc),
        }
    );
    assert_eq!(
        v.spec,
        Some(SpecMount {
            volume: "db".into(),
            kind: "persistentVolumeClaim".into(),
            mount_read_only: true,
            volume_read_only: false,
        })
    );
    let archive = spec_mount(&meta, "app", "/archive").expect("trailing slash ignored");
    assert!(!archive.mount_read_only && archive.volume_read_only);

    // Another container, an unmounted path, no metadata: the verdict is unchanged.
    let plain = classify("/data/db/wal", Some(&m), None, None);
    assert_eq!(plain.clone().with_spec(Some(&meta), "sidecar"), plain);
    assert_eq!(plain.clone().with_spec(None, "app"), plain);
    assert_eq!(spec_mount(&meta, "app", "/dat"), None);
    // A cause that is not a volume keeps its cause; the spec is still told.
    let rootfs = Verdict {
        cause: Cause::ReadOnlyRootfs,
        mount_point: Some("/tmp".into()),
        mount: None,
        basis: "test",
        spec: None,
    }
    .with_spec(Some(&meta), "app");
    assert_eq!(rootfs.cause, Cause::ReadOnlyRootfs);
    assert_eq!(rootfs.spec.map(|s| s.volume), Some("scratch".into()));
}
