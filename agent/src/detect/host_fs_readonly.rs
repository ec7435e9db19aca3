//! `HostFilesystemReadOnly`: a filesystem of the node that pods need writable is read-only.
//!
//! Two signals feed it. The host's mount table, read periodically, shows whether the
//! filesystems holding the watched directories (containerd's and kubelet's state, `/var/log`)
//! are read-only, per mount, per superblock, or as ext4's `emergency_ro` after an error (which
//! keeps `rw` in the per-mount options). The kernel log names devices with filesystem errors
//! (`EXT4-fs error`, `Remounting filesystem read-only`, an XFS shutdown, `Buffer I/O error`):
//! the filesystems on those devices are watched too, and their kernel lines become evidence.
//!
//! The finding holds while the filesystem stays read-only and is resolved, with the same
//! fingerprint, as soon as the mount table shows it writable again or unmounted.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::{Context, Detector, Evidence, EvidenceSource, Finding, FindingKind, Severity, Subject};
use crate::sources::kmsg::fs_error::FsError;
use crate::sources::kmsg::KmsgEvent;
use crate::sources::mountinfo::{Mount, MountTable};
use crate::sources::SourceEvent;

/// At most this many devices named by the kernel log are remembered.
const MAX_DEVICES: usize = 64;
/// Kernel lines kept per device, the latest.
const LINES_PER_DEVICE: usize = 5;
/// A device the kernel complained about is watched this long unless it turns read-only.
const DEVICE_MEMORY: Duration = Duration::from_secs(15 * 60);

/// What the kernel said about one device.
#[derive(Debug, Clone)]
struct DeviceNote {
    last: SystemTime,
    lines: Vec<(Option<SystemTime>, FsError, String)>,
}

/// A read-only filesystem being reported.
#[derive(Debug, Clone)]
struct Active {
    finding: Finding,
}

/// The detector.
#[derive(Debug)]
pub struct HostFsDetector {
    paths: Vec<PathBuf>,
    devices: HashMap<String, DeviceNote>,
    active: BTreeMap<(String, String), Active>,
}

impl HostFsDetector {
    /// A detector watching the filesystems that hold `paths` on the host.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        HostFsDetector {
            paths,
            devices: HashMap::new(),
            active: BTreeMap::new(),
        }
    }

    fn note(&mut self, error: &FsError, line: &str, at: Option<SystemTime>, now: SystemTime) {
        if !self.devices.contains_key(&error.device) && self.devices.len() >= MAX_DEVICES {
            // Never the device of a finding still raised: it would be resolved by mistake.
            let active = raised_devices(&self.active);
            let oldest = self
                .devices
                .iter()
                .filter(|(d, _)| !active.contains(&d.as_str()))
                .min_by_key(|(_, n)| n.last)
                .map(|(d, _)| d.clone());
            if let Some(d) = oldest {
                self.devices.remove(&d);
            }
        }
        let note = self.devices.entry(error.device.clone()).or_insert(DeviceNote {
            last: now,
            lines: Vec::new(),
        });
        note.last = now;
        note.lines.push((at, error.clone(), line.to_owned()));
        if note.lines.len() > LINES_PER_DEVICE {
            note.lines.remove(0);
        }
    }

    /// The kernel notes about the device of `m`.
    fn notes_for(&self, m: &Mount) -> Vec<&(Option<SystemTime>, FsError, String)> {
        let name = kernel_name(&m.source);
        self.devices
            .iter()
            .filter(|(d, _)| *d == name || **d == m.device())
            .flat_map(|(_, n)| n.lines.iter())
            .collect()
    }

    fn evaluate(&mut self, table: &MountTable, at: SystemTime, cx: &Context<'_>, out: &mut Vec<Finding>) {
        // The mounts to look at, and the watched directories each holds.
        let mut candidates: BTreeMap<(String, String), (Mount, Vec<String>)> = BTreeMap::new();
        for p in &self.paths {
            let p = p.to_string_lossy();
            if let Some(m) = table.covering(&p) {
                candidates
                    .entry(key(m))
                    .or_insert_with(|| (m.clone(), Vec::new()))
                    .1
                    .push(p.into_owned());
            }
        }
        // A device the kernel complained about counts when its filesystem as a whole is
        // read-only; a read-only bind of it elsewhere (a snap, a container's volume) does not.
        for device in self.devices.keys() {
            for m in table
                .by_device(device)
                .filter(|m| m.super_read_only() || m.emergency_read_only())
            {
                candidates
                    .entry(key(m))
                    .or_insert_with(|| (m.clone(), Vec::new()));
            }
        }
        let read_only: BTreeMap<_, _> = candidates
            .into_iter()
            .filter(|(_, (m, _))| m.read_only())
            .collect();
        for (k, (m, holds)) in &read_only {
            if self.active.contains_key(k) {
                continue;
            }
            let f = self.raised(m, holds, at, cx);
            self.active.insert(k.clone(), Active { finding: f.clone() });
            out.push(f);
        }
        let ended: Vec<_> = self
            .active
            .keys()
            .filter(|k| !read_only.contains_key(*k))
            .cloned()
            .collect();
        for k in ended {
            let Some(a) = self.active.remove(&k) else { continue };
            let still_mounted = table.mounts.iter().any(|m| key(m) == k);
            let mut f = a.finding;
            f.resolved = true;
            f.last_seen = at;
            f.severity = Severity::Info;
            f.summary = format!(
                "the node's filesystem {} on {} is {}",
                k.0,
                k.1,
                if still_mounted {
                    "writable again"
                } else {
                    "no longer mounted"
                }
            );
            f.evidence = vec![Evidence::new(
                EvidenceSource::Host,
                Some(at),
                if still_mounted {
                    "the host's mount table shows it read-write".to_owned()
                } else {
                    "the host's mount table no longer has it".to_owned()
                },
            )];
            // Forget the kernel's complaints about a device that recovered.
            let name = kernel_name(&k.0).to_owned();
            self.devices.remove(&name);
            out.push(f);
        }
        // A device is forgotten some time after the kernel's last word about it, unless its
        // filesystem is still reported read-only.
        let active = raised_devices(&self.active);
        self.devices.retain(|d, n| {
            active.contains(&d.as_str()) || at.duration_since(n.last).unwrap_or_default() < DEVICE_MEMORY
        });
    }

    fn raised(&self, m: &Mount, holds: &[String], at: SystemTime, cx: &Context<'_>) -> Finding {
        let (k0, k1) = key(m);
        let mut f = Finding::new(
            FindingKind::HostFilesystemReadOnly,
            Severity::Critical,
            Subject::Node {
                node: cx.node.to_owned(),
            },
            at,
            &[cx.node, &k0, &k1],
        );
        let notes = self.notes_for(m);
        let how = if m.emergency_read_only() {
            "the kernel made it read-only after an error (emergency_ro)"
        } else if !notes.is_empty() {
            "the kernel remounted it read-only after an error"
        } else if m.super_read_only() {
            "the filesystem is read-only"
        } else {
            "it is mounted read-only"
        };
        let others: Vec<&str> = holds
            .iter()
            .map(String::as_str)
            .filter(|h| *h != m.mount_point)
            .collect();
        let holding = if others.is_empty() {
            String::new()
        } else {
            format!(" (holding {})", others.join(", "))
        };
        f.summary = format!(
            "the node's filesystem {} ({}) on {}{} is read-only: {how}",
            m.source, m.fs_type, m.mount_point, holding
        );
        f.hint = format!(
            "Every pod writing there fails with EROFS (and containerd or kubelet may fail to start containers). \
             Cordon and drain the node, read the kernel log (dmesg) for the error, check the device ({}) with \
             fsck, then remount it read-write (mount -o remount,rw {}) or reboot. This finding clears itself \
             when the filesystem is writable again.",
            m.source, m.mount_point
        );
        f.evidence.push(
            Evidence::new(
                EvidenceSource::Host,
                Some(at),
                format!(
                    "host mount table: {} on {} type {} ({}; filesystem {})",
                    m.source,
                    m.mount_point,
                    m.fs_type,
                    m.mount_options.join(","),
                    m.super_options.join(",")
                ),
            )
            .with("device", m.source.clone())
            .with("major_minor", m.device())
            .with("mount_point", m.mount_point.clone())
            .with("fs_type", m.fs_type.clone())
            .with("mount_options", m.mount_options.join(","))
            .with("super_options", m.super_options.join(","))
            .with("watched_paths", holds.to_vec()),
        );
        for (line_at, e, line) in notes {
            f.evidence.push(
                Evidence::new(EvidenceSource::Kmsg, *line_at, line.clone())
                    .with("kind", serde_json::to_value(e.kind).unwrap_or_default())
                    .with("device", e.device.clone()),
            );
        }
        f
    }
}

/// The kernel's name of a device (`sda1` for `/dev/sda1`).
fn kernel_name(device: &str) -> &str {
    device.rsplit('/').next().unwrap_or(device)
}

/// The kernel names of the devices whose filesystem is reported read-only now.
fn raised_devices(active: &BTreeMap<(String, String), Active>) -> Vec<&str> {
    active.keys().map(|(device, _)| kernel_name(device)).collect()
}

fn key(m: &Mount) -> (String, String) {
    let device = if m.source.starts_with('/') {
        m.source.clone()
    } else {
        format!("{} {}", m.fs_type, m.device())
    };
    (device, m.mount_point.clone())
}

impl Detector for HostFsDetector {
    fn name(&self) -> &'static str {
        "host filesystem read-only"
    }

    fn on_event(&mut self, event: &SourceEvent, cx: &Context<'_>, out: &mut Vec<Finding>) {
        match event {
            SourceEvent::Kmsg(KmsgEvent::FsError { error, line, at }) => self.note(error, line, *at, cx.now),
            SourceEvent::HostMounts(h) => {
                if let Ok(table) = &h.table {
                    self.evaluate(table, h.at, cx, out);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
#[path = "host_fs_readonly_tests.rs"]
mod tests;
