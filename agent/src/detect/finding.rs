//! The finding: what podmortem tells its users. One typed record per thing that went wrong,
//! whatever detector found it and whatever sink carries it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::model::{or_unknown, ContainerInfo};

/// What kind of thing went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum FindingKind {
    /// A container's main process exited with a non-zero code or was killed by a signal.
    ContainerExited,
    /// The kernel's OOM killer killed a container's main process (or, with a node subject, a
    /// process in a memory cgroup that belongs to no known container).
    #[serde(rename = "OOMKilled")]
    OomKilled,
    /// The OOM killer killed a process other than the container's main process, and the
    /// container kept running. Kubelet never reports this.
    #[serde(rename = "OOMKilledChild")]
    OomKilledChild,
    /// The node ran out of memory and the kernel killed a process to free some.
    #[serde(rename = "NodeOOM")]
    NodeOom,
    /// A container (or the node) has been close to its memory limit, or stalled on memory,
    /// for a sustained period: an OOM kill is likely.
    #[serde(rename = "OOMRisk")]
    OomRisk,
    /// The node lacks a program, kernel module, daemon or file that pods on it need (a
    /// node-level finding, raised before the pods fail when it can be), or a container failed
    /// because the host lacks a program it ran there.
    MissingHostDependency,
    /// A container's command, or a program it ran, is not in its image: the pod's command or
    /// image is wrong.
    CommandNotFound,
    /// A container tried to write where the filesystem is read-only: its root filesystem, a
    /// read-only volume, or a node filesystem the kernel made read-only.
    ReadOnlyFilesystemWrite,
    /// A filesystem of the node that pods need writable is read-only (a condition: it is
    /// resolved when the filesystem is writable again).
    HostFilesystemReadOnly,
}

impl FindingKind {
    /// The kind's stable name, as exported.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::ContainerExited => "ContainerExited",
            FindingKind::OomKilled => "OOMKilled",
            FindingKind::OomKilledChild => "OOMKilledChild",
            FindingKind::NodeOom => "NodeOOM",
            FindingKind::OomRisk => "OOMRisk",
            FindingKind::MissingHostDependency => "MissingHostDependency",
            FindingKind::CommandNotFound => "CommandNotFound",
            FindingKind::ReadOnlyFilesystemWrite => "ReadOnlyFilesystemWrite",
            FindingKind::HostFilesystemReadOnly => "HostFilesystemReadOnly",
        }
    }
}

/// How urgent a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; usually expected (a container stopped on request).
    Info,
    /// Something failed and will likely fail again.
    Warning,
    /// The node or a workload is losing work now.
    Critical,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "INFO",
            Severity::Warning => "WARNING",
            Severity::Critical => "CRITICAL",
        })
    }
}

/// What a finding is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "scope", rename_all = "lowercase")]
pub enum Subject {
    /// The node as a whole.
    Node {
        /// The node's name.
        node: String,
    },
    /// One container of one pod.
    Container {
        /// The node's name.
        node: String,
        /// The pod's namespace.
        namespace: String,
        /// The pod's name.
        pod: String,
        /// The pod's uid.
        pod_uid: String,
        /// The container's name.
        container: String,
        /// The container's id.
        container_id: String,
        /// Kubelet's restart attempt of this container.
        attempt: u32,
    },
}

impl Subject {
    /// The subject for a container on `node`.
    pub fn container(node: &str, c: &ContainerInfo) -> Subject {
        Subject::Container {
            node: node.to_owned(),
            namespace: c.pod.namespace.clone(),
            pod: c.pod.name.clone(),
            pod_uid: c.pod.uid.clone(),
            container: c.name.clone(),
            container_id: c.id.clone(),
            attempt: c.attempt,
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Node { node } => write!(f, "node/{node}"),
            Subject::Container {
                namespace,
                pod,
                container,
                container_id,
                ..
            } => {
                let container = if container.is_empty() {
                    container_id.get(..12).unwrap_or(container_id).to_owned()
                } else {
                    container.clone()
                };
                write!(f, "{}/{}[{}]", or_unknown(namespace), or_unknown(pod), container)
            }
        }
    }
}

/// Where a piece of evidence came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceSource {
    /// The CRI runtime's view (`ContainerStatus`, `PodSandboxStatus`).
    Cri,
    /// containerd's event stream.
    ContainerdEvent,
    /// The kernel log.
    Kmsg,
    /// A cgroup file.
    Cgroup,
    /// procfs.
    Procfs,
    /// The container's log.
    Log,
    /// The host's filesystem.
    Host,
    /// The container's image (its snapshot's layers on the host).
    Image,
    /// The kernel tracer (eBPF on syscall tracepoints).
    Tracer,
}

/// One observation backing a finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    /// Which source saw it.
    pub source: EvidenceSource,
    /// When it happened, if the source said.
    #[serde(with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub at: Option<SystemTime>,
    /// What was seen, in one line.
    pub message: String,
    /// The raw values, by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, serde_json::Value>,
}

impl Evidence {
    /// Evidence from `source` saying `message`.
    pub fn new(source: EvidenceSource, at: Option<SystemTime>, message: impl Into<String>) -> Self {
        Evidence {
            source,
            at,
            message: message.into(),
            attributes: BTreeMap::new(),
        }
    }

    /// Adds a raw value.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.attributes.insert(key.to_owned(), value.into());
        self
    }
}

/// A finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// What went wrong.
    pub kind: FindingKind,
    /// How urgent it is.
    pub severity: Severity,
    /// What it happened to.
    pub subject: Subject,
    /// One line a human can act on.
    pub summary: String,
    /// What was seen, each piece naming its source.
    pub evidence: Vec<Evidence>,
    /// What to do about it.
    pub hint: String,
    /// Stable across repeats of the same problem on the same subject, for de-duplication.
    pub fingerprint: String,
    /// When this problem was first seen on this subject.
    #[serde(with = "rfc3339")]
    pub first_seen: SystemTime,
    /// When it was seen last (this occurrence).
    #[serde(with = "rfc3339")]
    pub last_seen: SystemTime,
    /// How many times it has been seen.
    pub count: u64,
    /// For a condition that holds over time (`OOMRisk`): this finding says it has ended.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub resolved: bool,
    /// The controller owning the subject's pod, when the Kubernetes API told.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<crate::model::Owner>,
}

impl Finding {
    /// A new finding seen once, at `at`; its fingerprint is made from `identity`.
    pub fn new(
        kind: FindingKind,
        severity: Severity,
        subject: Subject,
        at: SystemTime,
        identity: &[&str],
    ) -> Self {
        let mut parts = vec![kind.as_str()];
        parts.extend_from_slice(identity);
        Finding {
            kind,
            severity,
            subject,
            summary: String::new(),
            evidence: Vec::new(),
            hint: String::new(),
            fingerprint: fingerprint(&parts),
            first_seen: at,
            last_seen: at,
            count: 1,
            resolved: false,
            owner: None,
        }
    }
}

/// A fingerprint from the parts that identify a problem: sha256 over them, 16 hex digits.
pub fn fingerprint(parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part.as_bytes());
        hash.update([0u8]);
    }
    hash.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Formats a time as RFC 3339 with microseconds, UTC.
pub fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

mod rfc3339 {
    use std::time::SystemTime;

    pub(super) fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_time(*t))
    }
}

mod rfc3339_opt {
    use std::time::SystemTime;

    pub(super) fn serialize<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::rfc3339::serialize(t, s),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_stable_and_separate_parts() {
        assert_eq!(fingerprint(&["a", "b"]), fingerprint(&["a", "b"]));
        assert_ne!(fingerprint(&["ab", ""]), fingerprint(&["a", "b"]));
        assert_eq!(fingerprint(&["ContainerExited"]).len(), 16);
        // Pinned: the fingerprint must not change between releases.
        assert_eq!(fingerprint(&["x"]), "14f825b2bbc32dd8");
    }

    #[test]
    fn subject_displays_namespace_pod_and_container() {
        let s = Subject::Container {
            node: "n".into(),
            namespace: "shop".into(),
            pod: "web-0".into(),
            pod_uid: String::new(),
            container: String::new(),
            container_id: "0123456789abcdef".into(),
            attempt: 0,
        };
        assert_eq!(s.to_string(), "shop/web-0[0123456789ab]");
    }
}
