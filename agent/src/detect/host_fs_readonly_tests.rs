use std::sync::Arc;

use super::*;
use crate::inventory::Inventory;
use crate::sources::host_fs::{HostFsConfig, HostMounts};
use crate::sources::kmsg::fs_error::{parse_line, FsErrorKind};

const ROOT: &str = "22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,discard,errors=remount-ro\n";
const ROOT_RO: &str = "22 1 252:1 / / ro,relatime shared:1 - ext4 /dev/vda1 ro,discard,errors=remount-ro\n";
const BOOT: &str = "31 22 252:16 / /boot ro,relatime shared:30 - ext4 /dev/vda16 ro\n";
const SNAP: &str =
    "40 22 7:1 / /snap/core22/1621 ro,nodev,relatime shared:34 - squashfs /dev/loop1 ro,errors=continue\n";

const EXT4_ERROR: &str =
    "EXT4-fs error (device loop0): ext4_journal_check_start:83: comm kworker/u8:2: Detected aborted journal";
const EXT4_REMOUNT: &str = "EXT4-fs (loop0): Remounting filesystem read-only";

fn t(s: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
}

/// containerd's filesystem on /dev/loop0, with these mount and superblock options.
fn containerd(mount: &str, sb: &str) -> String {
    format!("95 22 7:0 / /var/lib/containerd {mount},relatime shared:45 - ext4 /dev/loop0 {sb}\n")
}

/// A scratch filesystem on /dev/loop0 that no watched path is on.
fn scratch(mount: &str, sb: &str) -> String {
    format!("60 22 7:0 / /mnt/scratch {mount},relatime shared:60 - ext4 /dev/loop0 {sb}\n")
}

fn table(lines: &[&str]) -> MountTable {
    let table = MountTable::parse(lines.concat().as_bytes());
    assert_eq!(table.skipped, 0);
    table
}

fn reading(lines: &[&str], s: u64) -> SourceEvent {
    SourceEvent::HostMounts(Arc::new(HostMounts {
        at: t(s),
        table: Ok(table(lines)),
    }))
}

fn kmsg(line: &str, s: u64) -> SourceEvent {
    let error = parse_line(line).unwrap_or_else(|| panic!("not a filesystem error: {line}"));
    SourceEvent::Kmsg(KmsgEvent::FsError {
        error: Box::new(error),
        line: line.to_owned(),
        at: Some(t(s)),
    })
}

struct Harness {
    det: HostFsDetector,
    inv: Inventory,
}

impl Harness {
    /// A detector watching the default paths: containerd's, kubelet's, /var/log.
    fn new() -> Self {
        Harness {
            det: HostFsDetector::new(HostFsConfig::default().paths),
            inv: Inventory::default(),
        }
    }

    fn feed(&mut self, event: SourceEvent, s: u64) -> Vec<Finding> {
        let cx = Context {
            node: "n1",
            inventory: &self.inv,
            now: t(s),
        };
        let mut out = Vec::new();
        self.det.on_event(&event, &cx, &mut out);
        out
    }
}

fn node() -> Subject {
    Subject::Node { node: "n1".into() }
}

#[test]
fn a_watched_filesystem_turning_read_only_is_raised_once_and_resolved_when_writable() {
    let mut h = Harness::new();
    let rw = containerd("rw", "rw,errors=remount-ro");
    let ro = containerd("ro", "ro,errors=remount-ro");
    assert!(
        h.feed(reading(&[ROOT, &rw, BOOT, SNAP], 0), 0).is_empty(),
        "writable, and what is read-only is not watched"
    );

    let out = h.feed(reading(&[ROOT, &ro, BOOT, SNAP], 10), 10);
    assert_eq!(out.len(), 1);
    let f = &out[0];
    assert_eq!(
        (f.kind, f.severity, f.resolved, f.count),
        (FindingKind::HostFilesystemReadOnly, Severity::Critical, false, 1)
    );
    assert_eq!(f.subject, node());
    assert_eq!((f.first_seen, f.last_seen), (t(10), t(10)));
    assert_eq!(
        f.summary,
        "the node's filesystem /dev/loop0 (ext4) on /var/lib/containerd is read-only: the filesystem is \
         read-only"
    );
    assert!(f.hint.contains("Cordon and drain the node"), "{}", f.hint);
    assert!(
        f.hint.contains("check the device (/dev/loop0) with fsck"),
        "{}",
        f.hint
    );
    assert!(
        f.hint.contains("mount -o remount,rw /var/lib/containerd"),
        "{}",
        f.hint
    );
    assert_eq!(f.evidence.len(), 1);
    let ev = &f.evidence[0];
    assert_eq!((ev.source, ev.at), (EvidenceSource::Host, Some(t(10))));
    assert_eq!(
        ev.message,
        "host mount table: /dev/loop0 on /var/lib/containerd type ext4 (ro,relatime; filesystem \
         ro,errors=remount-ro)"
    );
    let a = &ev.attributes;
    assert_eq!(a["device"], "/dev/loop0");
    assert_eq!(a["major_minor"], "7:0");
    assert_eq!(a["mount_point"], "/var/lib/containerd");
    assert_eq!(a["fs_type"], "ext4");
    assert_eq!(a["mount_options"], "ro,relatime");
    assert_eq!(a["super_options"], "ro,errors=remount-ro");
    assert_eq!(a["watched_paths"], serde_json::json!(["/var/lib/containerd"]));
    let raised = f.clone();

    assert!(
        h.feed(reading(&[ROOT, &ro, BOOT, SNAP], 20), 20).is_empty(),
        "still read-only: nothing new"
    );
    assert!(h.feed(reading(&[ROOT, &ro, BOOT, SNAP], 30), 30).is_empty());

    let out = h.feed(reading(&[ROOT, &rw, BOOT, SNAP], 40), 40);
    assert_eq!(out.len(), 1);
    let f = &out[0];
    assert!(f.resolved);
    assert_eq!(f.fingerprint, raised.fingerprint);
    assert_eq!(
        (f.kind, f.severity),
        (FindingKind::HostFilesystemReadOnly, Severity::Info)
    );
    assert_eq!(f.subject, node());
    assert_eq!((f.first_seen, f.last_seen), (t(10), t(40)));
    assert_eq!(
        f.summary,
        "the node's filesystem /dev/loop0 on /var/lib/containerd is writable again"
    );
    assert_eq!(f.evidence.len(), 1);
    assert_eq!(f.evidence[0].source, EvidenceSource::Host);
    assert_eq!(
        f.evidence[0].message,
        "the host's mount table shows it read-write"
    );

    assert!(h.feed(reading(&[ROOT, &rw, BOOT, SNAP], 50), 50).is_empty());
    // Read-only again: raised again, with the same fingerprint.
    let out = h.feed(reading(&[ROOT, &ro], 60), 60);
    assert_eq!(out.len(), 1);
    assert!(!out[0].resolved);
    assert_eq!(out[0].fingerprint, raised.fingerprint);
}

#[test]
fn a_read_only_mount_of_a_writable_superblock_is_raised() {
    let mut h = Harness::new();
    let out = h.feed(reading(&[ROOT, &containerd("ro", "rw,errors=remount-ro")], 0), 0);
    assert_eq!(out.len(), 1);
    assert!(
        out[0].summary.ends_with("is read-only: it is mounted read-only"),
        "{}",
        out[0].summary
    );
}

#[test]
fn ext4_emergency_ro_is_raised_although_both_option_lists_say_rw() {
    let mut h = Harness::new();
    let emergency = containerd("rw", "rw,errors=remount-ro,emergency_ro");
    let out = h.feed(reading(&[ROOT, &emergency], 0), 0);
    assert_eq!(out.len(), 1);
    let f = &out[0];
    assert_eq!(f.severity, Severity::Critical);
    assert_eq!(
        f.summary,
        "the node's filesystem /dev/loop0 (ext4) on /var/lib/containerd is read-only: the kernel made it \
         read-only after an error (emergency_ro)"
    );
    assert_eq!(
        f.evidence[0].attributes["super_options"],
        "rw,errors=remount-ro,emergency_ro"
    );
    assert!(h.feed(reading(&[ROOT, &emergency], 10), 10).is_empty());
    let out = h.feed(
        reading(&[ROOT, &containerd("rw", "rw,errors=remount-ro")], 20),
        20,
    );
    assert_eq!(out.len(), 1);
    assert!(out[0].resolved);
    assert_eq!(out[0].fingerprint, f.fingerprint);
}

#[test]
fn a_read_only_root_names_every_watched_path_it_holds() {
    let mut h = Harness::new();
    let out = h.feed(reading(&[ROOT_RO, &containerd("rw", "rw")], 0), 0);
    assert_eq!(out.len(), 1);
    let f = &out[0];
    assert!(
        f.summary.starts_with(
            "the node's filesystem /dev/vda1 (ext4) on / (holding /var/lib/kubelet, /var/log) is read-only"
        ),
        "{}",
        f.summary
    );
    assert_eq!(
        f.evidence[0].attributes["watched_paths"],
        serde_json::json!(["/var/lib/kubelet", "/var/log"])
    );
}

#[test]
fn the_host_fixture_raises_containerds_filesystem_only() {
    let fixture = include_bytes!("../../tests/fixtures/mountinfo/host_emergency_ro.mountinfo");
    let mut h = Harness::new();
    let event = SourceEvent::HostMounts(Arc::new(HostMounts {
        at: t(0),
        table: Ok(MountTable::parse(fixture)),
    }));
    let out = h.feed(event.clone(), 0);
    // Not /boot, the snaps or /mnt/x (read-only, not watched), nor the image cache (the same
    // device, but no watched path is on it and the kernel said nothing).
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(
        out[0].evidence[0].attributes["mount_point"],
        "/var/lib/containerd"
    );
    assert!(out[0].summary.contains("(emergency_ro)"), "{}", out[0].summary);
    assert!(h.feed(event, 10).is_empty());
}

#[test]
fn a_device_the_kernel_complained_about_is_watched_and_its_lines_are_evidence() {
    let mut h = Harness::new();
    let broken = scratch("rw", "rw,errors=remount-ro,emergency_ro");
    assert!(
        h.feed(reading(&[ROOT, &broken], 0), 0).is_empty(),
        "not watched, and the kernel has said nothing"
    );
    assert!(h.feed(kmsg(EXT4_ERROR, 5), 5).is_empty());
    assert!(h.feed(kmsg(EXT4_REMOUNT, 6), 6).is_empty());

    let out = h.feed(reading(&[ROOT, &broken], 10), 10);
    assert_eq!(out.len(), 1);
    let f = &out[0];
    assert_eq!(f.severity, Severity::Critical);
    assert_eq!(
        f.summary,
        "the node's filesystem /dev/loop0 (ext4) on /mnt/scratch is read-only: the kernel made it read-only \
         after an error (emergency_ro)"
    );
    let sources: Vec<EvidenceSource> = f.evidence.iter().map(|e| e.source).collect();
    assert_eq!(
        sources,
        [EvidenceSource::Host, EvidenceSource::Kmsg, EvidenceSource::Kmsg]
    );
    assert_eq!(f.evidence[0].attributes["watched_paths"], serde_json::json!([]));
    assert_eq!(
        (f.evidence[1].message.as_str(), f.evidence[1].at),
        (EXT4_ERROR, Some(t(5)))
    );
    assert_eq!(f.evidence[1].attributes["kind"], "error");
    assert_eq!(f.evidence[1].attributes["device"], "loop0");
    assert_eq!(
        (f.evidence[2].message.as_str(), f.evidence[2].at),
        (EXT4_REMOUNT, Some(t(6)))
    );
    assert_eq!(f.evidence[2].attributes["kind"], "remounted_read_only");
    assert!(h.feed(reading(&[ROOT, &broken], 20), 20).is_empty());

    let out = h.feed(reading(&[ROOT], 30), 30);
    assert_eq!(out.len(), 1);
    let f2 = &out[0];
    assert!(f2.resolved);
    assert_eq!(f2.fingerprint, f.fingerprint);
    assert_eq!(
        f2.summary,
        "the node's filesystem /dev/loop0 on /mnt/scratch is no longer mounted"
    );
    assert_eq!(f2.evidence[0].message, "the host's mount table no longer has it");

    // Mounted again, still broken: the kernel's complaints were forgotten with the recovery.
    assert!(h.feed(reading(&[ROOT, &broken], 40), 40).is_empty());
}

#[test]
fn a_remount_after_a_kernel_error_is_said_so() {
    let mut h = Harness::new();
    h.feed(kmsg(EXT4_REMOUNT, 1), 1);
    let out = h.feed(reading(&[ROOT, &scratch("ro", "ro,errors=remount-ro")], 2), 2);
    assert_eq!(out.len(), 1);
    assert!(
        out[0]
            .summary
            .ends_with("is read-only: the kernel remounted it read-only after an error"),
        "{}",
        out[0].summary
    );
    assert_eq!(out[0].evidence.len(), 2);
}

#[test]
fn a_device_the_kernel_named_is_found_on_every_mount_of_it() {
    let mut h = Harness::new();
    h.feed(kmsg(EXT4_REMOUNT, 1), 1);
    let lines = [
        ROOT,
        &containerd("ro", "ro,errors=remount-ro"),
        "97 22 7:0 /io.containerd.content.v1.content /var/lib/image-cache ro,relatime shared:45 - ext4 \
         /dev/loop0 ro,errors=remount-ro\n",
    ];
    let out = h.feed(reading(&lines, 2), 2);
    let points: Vec<&serde_json::Value> = out
        .iter()
        .map(|f| &f.evidence[0].attributes["mount_point"])
        .collect();
    assert_eq!(points, ["/var/lib/containerd", "/var/lib/image-cache"]);
    assert!(out.iter().all(|f| f.evidence.len() == 2));
    assert_ne!(out[0].fingerprint, out[1].fingerprint);
}

#[test]
fn a_kernel_error_on_a_writable_filesystem_raises_nothing() {
    let mut h = Harness::new();
    assert!(h.feed(kmsg(EXT4_ERROR, 1), 1).is_empty());
    assert!(h
        .feed(
            kmsg(
                "Buffer I/O error on dev sda1, logical block 1234, lost async page write",
                1
            ),
            1
        )
        .is_empty());
    assert!(h
        .feed(reading(&[ROOT, &scratch("rw", "rw,errors=remount-ro")], 2), 2)
        .is_empty());
    // Later errors=continue style errors do not make it read-only either.
    assert!(h
        .feed(reading(&[ROOT, &scratch("rw", "rw,errors=continue")], 3), 3)
        .is_empty());
}

#[test]
fn legitimately_read_only_mounts_are_not_findings() {
    let mut h = Harness::new();
    let lines = [
        ROOT,
        BOOT,
        SNAP,
        "32 31 252:15 / /boot/efi ro,relatime shared:31 - vfat /dev/vda15 ro,fmask=0077\n",
        "1528 22 0:304 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro\n",
        &containerd("rw", "rw,errors=remount-ro"),
    ];
    assert!(h.feed(reading(&lines, 0), 0).is_empty());
    assert!(h.feed(reading(&lines, 10), 10).is_empty());
    // An unrelated device's trouble does not make /boot a finding.
    h.feed(kmsg(EXT4_REMOUNT, 11), 11);
    assert!(h.feed(reading(&lines, 12), 12).is_empty());
}

#[test]
fn an_unreadable_table_neither_raises_nor_resolves() {
    let mut h = Harness::new();
    let out = h.feed(reading(&[ROOT_RO], 0), 0);
    assert_eq!(out.len(), 1);
    let unreadable = SourceEvent::HostMounts(Arc::new(HostMounts {
        at: t(10),
        table: Err("cannot read mount table /host/proc/1/mountinfo: permission denied".into()),
    }));
    assert!(h.feed(unreadable, 10).is_empty());
    assert!(h.feed(reading(&[ROOT_RO], 20), 20).is_empty(), "still active");
    assert_eq!(h.feed(reading(&[ROOT], 30), 30).len(), 1);
}

#[test]
fn the_kernel_events_parse_into_what_the_detector_keys_on() {
    let e = parse_line(EXT4_ERROR).unwrap();
    assert_eq!((e.kind, e.device.as_str()), (FsErrorKind::Error, "loop0"));
    let e = parse_line(EXT4_REMOUNT).unwrap();
    assert_eq!(
        (e.kind, e.device.as_str()),
        (FsErrorKind::RemountedReadOnly, "loop0")
    );
}

#[test]
fn a_device_that_stays_read_only_stays_raised_after_the_kernel_falls_silent() {
    let mut h = Harness::new();
    let broken = scratch("ro", "ro,errors=remount-ro");
    h.feed(kmsg(EXT4_REMOUNT, 0), 0);
    assert_eq!(h.feed(reading(&[ROOT, &broken], 10), 10).len(), 1);
    let mut later = Vec::new();
    for s in (20..=40 * 60).step_by(10) {
        later.extend(h.feed(reading(&[ROOT, &broken], s), s));
    }
    assert!(
        later.is_empty(),
        "the filesystem never stopped being read-only: {:?}",
        later.iter().map(|f| &f.summary).collect::<Vec<_>>()
    );
}

#[test]
fn a_read_only_bind_of_a_device_the_kernel_named_is_not_the_node_filesystem() {
    let mut h = Harness::new();
    h.feed(
        kmsg(
            "Buffer I/O error on dev loop0, logical block 0, lost async page write",
            0,
        ),
        0,
    );
    // The filesystem is writable; one bind of it is read-only on purpose.
    let bind = "61 22 7:0 /snap /mnt/snap ro,relatime - ext4 /dev/loop0 rw,errors=remount-ro\n";
    let out = h.feed(
        reading(&[ROOT, &scratch("rw", "rw,errors=remount-ro"), bind], 5),
        5,
    );
    assert!(
        out.is_empty(),
        "{:?}",
        out.iter().map(|f| &f.summary).collect::<Vec<_>>()
    );
}
