//! A finding as one OTLP log record: severity, body, timestamps and attributes named after the
//! OpenTelemetry semantic conventions where one exists (`k8s.*`, `container.id`,
//! `process.exit.code`), `podmortem.*` for the rest. Pure: nothing here reads the clock or the
//! system.

use std::collections::HashMap;
use std::time::SystemTime;

use opentelemetry::logs::{AnyValue, LogRecord, Severity as OtelSeverity};
use opentelemetry::Key;

use crate::detect::finding::{format_time, Evidence, EvidenceSource, Finding, Severity, Subject};

/// The event name of every record podmortem exports.
pub const EVENT_NAME: &str = "podmortem.finding";

/// `k8s.namespace.name`.
pub const K8S_NAMESPACE_NAME: &str = "k8s.namespace.name";
/// `k8s.pod.name`.
pub const K8S_POD_NAME: &str = "k8s.pod.name";
/// `k8s.pod.uid`.
pub const K8S_POD_UID: &str = "k8s.pod.uid";
/// `k8s.container.name`.
pub const K8S_CONTAINER_NAME: &str = "k8s.container.name";
/// `k8s.container.restart_count`: kubelet's attempt of the container.
pub const K8S_CONTAINER_RESTART_COUNT: &str = "k8s.container.restart_count";
/// `container.id`.
pub const CONTAINER_ID: &str = "container.id";
/// `k8s.node.name`.
pub const K8S_NODE_NAME: &str = "k8s.node.name";
/// `process.exit.code`: the container's exit code, when known.
pub const PROCESS_EXIT_CODE: &str = "process.exit.code";
/// `k8s.container.status.last_terminated_reason`: the runtime's reason for the exit.
pub const K8S_CONTAINER_LAST_TERMINATED_REASON: &str = "k8s.container.status.last_terminated_reason";
/// `k8s.replicaset.name`.
pub const K8S_REPLICASET_NAME: &str = "k8s.replicaset.name";
/// `k8s.statefulset.name`.
pub const K8S_STATEFULSET_NAME: &str = "k8s.statefulset.name";
/// `k8s.daemonset.name`.
pub const K8S_DAEMONSET_NAME: &str = "k8s.daemonset.name";
/// `k8s.job.name`.
pub const K8S_JOB_NAME: &str = "k8s.job.name";
/// `k8s.owner.kind`: the kind of an owner with no attribute of its own.
pub const K8S_OWNER_KIND: &str = "k8s.owner.kind";
/// `k8s.owner.name`: the name of an owner with no attribute of its own.
pub const K8S_OWNER_NAME: &str = "k8s.owner.name";
/// `podmortem.finding.kind`.
pub const FINDING_KIND: &str = "podmortem.finding.kind";
/// `podmortem.finding.fingerprint`.
pub const FINDING_FINGERPRINT: &str = "podmortem.finding.fingerprint";
/// `podmortem.finding.severity`: `info`, `warning` or `critical`.
pub const FINDING_SEVERITY: &str = "podmortem.finding.severity";
/// `podmortem.finding.count`.
pub const FINDING_COUNT: &str = "podmortem.finding.count";
/// `podmortem.finding.first_seen`, RFC 3339.
pub const FINDING_FIRST_SEEN: &str = "podmortem.finding.first_seen";
/// `podmortem.finding.resolved`.
pub const FINDING_RESOLVED: &str = "podmortem.finding.resolved";
/// `podmortem.finding.hint`.
pub const FINDING_HINT: &str = "podmortem.finding.hint";
/// `podmortem.evidence`: a list of maps (`source`, `at`, `message`, `attributes`).
pub const EVIDENCE: &str = "podmortem.evidence";

/// The OpenTelemetry severity number and text of a finding's severity.
pub fn severity(severity: Severity) -> (OtelSeverity, &'static str) {
    match severity {
        Severity::Info => (OtelSeverity::Info, "INFO"),
        Severity::Warning => (OtelSeverity::Warn, "WARN"),
        Severity::Critical => (OtelSeverity::Error, "ERROR"),
    }
}

/// Fills `record` with `finding`, observed at `observed`.
pub fn fill<R: LogRecord>(record: &mut R, finding: &Finding, observed: SystemTime) {
    let (number, text) = severity(finding.severity);
    record.set_event_name(EVENT_NAME);
    record.set_severity_number(number);
    record.set_severity_text(text);
    record.set_body(AnyValue::from(finding.summary.clone()));
    record.set_timestamp(finding.last_seen);
    record.set_observed_timestamp(observed);
    for (key, value) in attributes(finding) {
        record.add_attribute(key, value);
    }
}

/// Every attribute of `finding`'s record, in a stable order; empty strings are left out.
pub fn attributes(finding: &Finding) -> Vec<(Key, AnyValue)> {
    let mut out = Attributes(Vec::with_capacity(24));
    match &finding.subject {
        Subject::Node { node } => out.text(K8S_NODE_NAME, node),
        Subject::Container {
            node,
            namespace,
            pod,
            pod_uid,
            container,
            container_id,
            attempt,
        } => {
            out.text(K8S_NAMESPACE_NAME, namespace);
            out.text(K8S_POD_NAME, pod);
            out.text(K8S_POD_UID, pod_uid);
            out.text(K8S_CONTAINER_NAME, container);
            out.push(K8S_CONTAINER_RESTART_COUNT, AnyValue::Int(i64::from(*attempt)));
            out.text(CONTAINER_ID, container_id);
            out.text(K8S_NODE_NAME, node);
        }
    }
    if let Some(code) = exit_code(&finding.evidence) {
        out.push(PROCESS_EXIT_CODE, AnyValue::Int(code));
    }
    if let Some(reason) = terminated_reason(&finding.evidence) {
        out.text(K8S_CONTAINER_LAST_TERMINATED_REASON, reason);
    }
    if let Some(owner) = &finding.owner {
        let key = match owner.kind.as_str() {
            "ReplicaSet" => Some(K8S_REPLICASET_NAME),
            "StatefulSet" => Some(K8S_STATEFULSET_NAME),
            "DaemonSet" => Some(K8S_DAEMONSET_NAME),
            "Job" => Some(K8S_JOB_NAME),
            _ => None,
        };
        match key {
            Some(key) => out.text(key, &owner.name),
            None => {
                out.text(K8S_OWNER_KIND, &owner.kind);
                out.text(K8S_OWNER_NAME, &owner.name);
            }
        }
    }
    out.push(FINDING_KIND, AnyValue::from(finding.kind.as_str()));
    out.text(FINDING_FINGERPRINT, &finding.fingerprint);
    out.push(FINDING_SEVERITY, AnyValue::from(severity_name(finding.severity)));
    out.push(FINDING_COUNT, AnyValue::Int(saturating_i64(finding.count)));
    out.push(
        FINDING_FIRST_SEEN,
        AnyValue::from(format_time(finding.first_seen)),
    );
    out.push(FINDING_RESOLVED, AnyValue::Boolean(finding.resolved));
    out.text(FINDING_HINT, &finding.hint);
    if !finding.evidence.is_empty() {
        out.push(
            EVIDENCE,
            AnyValue::ListAny(Box::new(finding.evidence.iter().map(evidence).collect())),
        );
    }
    out.0
}

struct Attributes(Vec<(Key, AnyValue)>);

impl Attributes {
    fn push(&mut self, key: &'static str, value: AnyValue) {
        self.0.push((Key::from_static_str(key), value));
    }

    fn text(&mut self, key: &'static str, value: &str) {
        if !value.is_empty() {
            self.push(key, AnyValue::from(value.to_owned()));
        }
    }
}

/// The finding's severity as podmortem names it elsewhere (its JSON output).
fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The exit code an evidence reports (`exit_code`, an integer), the runtime's first.
fn exit_code(evidence: &[Evidence]) -> Option<i64> {
    let code = |e: &Evidence| e.attributes.get("exit_code").and_then(serde_json::Value::as_i64);
    evidence
        .iter()
        .filter(|e| e.source == EvidenceSource::Cri)
        .find_map(code)
        .or_else(|| evidence.iter().find_map(code))
}

/// The runtime's reason for the exit (`reason` of the CRI evidence), when it gave one.
fn terminated_reason(evidence: &[Evidence]) -> Option<&str> {
    evidence
        .iter()
        .filter(|e| e.source == EvidenceSource::Cri)
        .find_map(|e| e.attributes.get("reason").and_then(serde_json::Value::as_str))
        .filter(|reason| !reason.is_empty())
}

/// One evidence as a map: `source`, `at` (when known), `message`, `attributes`.
fn evidence(e: &Evidence) -> AnyValue {
    let mut map = HashMap::with_capacity(4);
    map.insert(
        Key::from_static_str("source"),
        AnyValue::from(source_name(e.source)),
    );
    if let Some(at) = e.at {
        map.insert(Key::from_static_str("at"), AnyValue::from(format_time(at)));
    }
    if !e.message.is_empty() {
        map.insert(Key::from_static_str("message"), AnyValue::from(e.message.clone()));
    }
    if !e.attributes.is_empty() {
        let attributes = e
            .attributes
            .iter()
            .filter_map(|(k, v)| Some((Key::from(k.clone()), json(v)?)))
            .collect();
        map.insert(
            Key::from_static_str("attributes"),
            AnyValue::Map(Box::new(attributes)),
        );
    }
    AnyValue::Map(Box::new(map))
}

/// The source's name as the JSON output spells it.
fn source_name(source: EvidenceSource) -> &'static str {
    match source {
        EvidenceSource::Cri => "cri",
        EvidenceSource::ContainerdEvent => "containerd_event",
        EvidenceSource::Kmsg => "kmsg",
        EvidenceSource::Cgroup => "cgroup",
        EvidenceSource::Procfs => "procfs",
        EvidenceSource::Log => "log",
        EvidenceSource::Host => "host",
        EvidenceSource::Image => "image",
        EvidenceSource::Tracer => "tracer",
    }
}

/// A JSON value as an OTLP value. `null` has none: in an object its key is left out, in an
/// array it becomes an empty string (so that positions hold). Integers beyond `i64` stay exact,
/// as text.
pub fn json(value: &serde_json::Value) -> Option<AnyValue> {
    use serde_json::Value;
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => AnyValue::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => AnyValue::Int(i),
            // Above i64::MAX: exact as text, not rounded through a double.
            (None, _) if n.is_u64() => AnyValue::from(n.to_string()),
            (None, Some(f)) => AnyValue::Double(f),
            (None, None) => AnyValue::from(n.to_string()),
        },
        Value::String(s) => AnyValue::from(s.clone()),
        Value::Array(items) => AnyValue::ListAny(Box::new(
            items
                .iter()
                .map(|v| json(v).unwrap_or_else(|| AnyValue::from("")))
                .collect(),
        )),
        Value::Object(fields) => AnyValue::Map(Box::new(
            fields
                .iter()
                .filter_map(|(k, v)| Some((Key::from(k.clone()), json(v)?)))
                .collect(),
        )),
    })
}
