//! podmortem's own telemetry: what it has seen, found, exported and dropped, and whether its
//! sources are connected. Every part of the agent counts here (cheap, lock-held for a map
//! update); the metrics bridge reads these counts when a reader collects, so `/metrics` and
//! OTLP show the same figures.
//!
//! Labels stay low-cardinality: source and sink names are fixed strings, and findings are
//! counted by kind and namespace, never by pod.

pub mod metrics;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// The findings counter's namespace label: the semantic conventions' `k8s.namespace.name`
/// (`k8s_namespace_name` in Prometheus, which leaves `namespace` to the scrape's target labels).
pub const NAMESPACE_LABEL: &str = "k8s.namespace.name";
/// The most (kind, namespace) series the findings counter keeps.
pub const MAX_FINDING_SERIES: usize = 1000;
/// Where findings in namespaces beyond [`MAX_FINDING_SERIES`] are counted.
pub const OTHER_NAMESPACES: &str = "_other";

/// A counter read from elsewhere when metrics are collected (a source's own statistics).
pub type Probe = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The agent's counters and readiness.
#[derive(Default)]
pub struct Telemetry {
    events: Mutex<BTreeMap<&'static str, u64>>,
    parse_errors: Mutex<BTreeMap<&'static str, u64>>,
    parse_error_probes: Mutex<Vec<(&'static str, Probe)>>,
    findings: Mutex<BTreeMap<(&'static str, String), u64>>,
    exported: Mutex<BTreeMap<&'static str, u64>>,
    export_failures: Mutex<BTreeMap<&'static str, u64>>,
    dropped: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    queues: Mutex<Vec<(&'static str, Probe)>>,
    ready: Mutex<BTreeMap<&'static str, bool>>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

/// One labelled value of a counter or gauge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    /// Label names and values.
    pub labels: Vec<(&'static str, String)>,
    /// The value.
    pub value: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A counter map stays usable after a panic elsewhere: its values are plain numbers.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn add<K: Ord>(m: &Mutex<BTreeMap<K, u64>>, key: K, n: u64) {
    *lock(m).entry(key).or_default() += n;
}

impl Telemetry {
    /// Empty counters, shared.
    pub fn new() -> Arc<Telemetry> {
        Arc::default()
    }

    /// One event from `source` reached the engine.
    pub fn source_event(&self, source: &'static str) {
        add(&self.events, source, 1);
    }

    /// `source` skipped input it could not parse.
    pub fn parse_error(&self, source: &'static str) {
        add(&self.parse_errors, source, 1);
    }

    /// Counts `source`'s parse errors from its own statistics, read at collection.
    pub fn parse_errors_from(&self, source: &'static str, probe: Probe) {
        lock(&self.parse_error_probes).push((source, probe));
    }

    /// The engine emitted a finding of `kind` about something in `namespace` (empty for the
    /// node). Past [`MAX_FINDING_SERIES`] (kind, namespace) pairs, new ones count under
    /// namespace [`OTHER_NAMESPACES`], so clusters with throwaway namespaces stay bounded.
    pub fn finding(&self, kind: &'static str, namespace: &str) {
        let mut findings = lock(&self.findings);
        let key = (kind, namespace.to_owned());
        let key = if findings.len() >= MAX_FINDING_SERIES && !findings.contains_key(&key) {
            (kind, OTHER_NAMESPACES.to_owned())
        } else {
            key
        };
        *findings.entry(key).or_default() += 1;
    }

    /// `sink` delivered `n` findings.
    pub fn exported(&self, sink: &'static str, n: u64) {
        add(&self.exported, sink, n);
    }

    /// An export attempt to `sink` failed (it may be retried).
    pub fn export_failure(&self, sink: &'static str) {
        add(&self.export_failures, sink, 1);
    }

    /// `sink` dropped `n` findings for `reason` (`queue_full`, `rejected`, `rate_limited`, ...).
    pub fn dropped(&self, sink: &'static str, reason: &'static str, n: u64) {
        add(&self.dropped, (sink, reason), n);
    }

    /// Reports the depth of `queue` through `probe`, read at collection.
    pub fn queue(&self, queue: &'static str, probe: Probe) {
        lock(&self.queues).push((queue, probe));
    }

    /// Reports how many items wait in the channel `tx` sends into, as `queue`. The probe holds
    /// the channel weakly: it never keeps it open after its senders are gone.
    pub fn channel<T: Send + 'static>(&self, queue: &'static str, tx: &tokio::sync::mpsc::Sender<T>) {
        let weak = tx.downgrade();
        self.queue(
            queue,
            Arc::new(move || {
                weak.upgrade().map_or(0, |tx| {
                    u64::try_from(tx.max_capacity().saturating_sub(tx.capacity())).unwrap_or(u64::MAX)
                })
            }),
        );
    }

    /// Records whether `source` is connected to what it reads.
    pub fn set_ready(&self, source: &'static str, ready: bool) {
        lock(&self.ready).insert(source, ready);
    }

    /// Whether every source that reported readiness is connected, and each one's state.
    pub fn readiness(&self) -> (bool, Vec<(&'static str, bool)>) {
        let ready = lock(&self.ready);
        let all = !ready.is_empty() && ready.values().all(|r| *r);
        (all, ready.iter().map(|(k, v)| (*k, *v)).collect())
    }

    /// Events per source: `podmortem.source.events`.
    pub fn events_points(&self) -> Vec<Point> {
        by_one("source", &lock(&self.events))
    }

    /// Parse errors per source: `podmortem.source.parse_errors`.
    pub fn parse_error_points(&self) -> Vec<Point> {
        let mut all = lock(&self.parse_errors).clone();
        for (source, probe) in lock(&self.parse_error_probes).iter() {
            *all.entry(source).or_default() += probe();
        }
        by_one("source", &all)
    }

    /// Findings by kind and namespace: `podmortem.findings`.
    pub fn finding_points(&self) -> Vec<Point> {
        lock(&self.findings)
            .iter()
            .map(|((kind, namespace), v)| Point {
                labels: vec![("kind", (*kind).to_owned()), (NAMESPACE_LABEL, namespace.clone())],
                value: *v,
            })
            .collect()
    }

    /// Findings delivered per sink: `podmortem.export.findings`.
    pub fn exported_points(&self) -> Vec<Point> {
        by_one("sink", &lock(&self.exported))
    }

    /// Failed export attempts per sink: `podmortem.export.failures`.
    pub fn export_failure_points(&self) -> Vec<Point> {
        by_one("sink", &lock(&self.export_failures))
    }

    /// Dropped findings per sink and reason: `podmortem.export.dropped`.
    pub fn dropped_points(&self) -> Vec<Point> {
        lock(&self.dropped)
            .iter()
            .map(|((sink, reason), v)| Point {
                labels: vec![("sink", (*sink).to_owned()), ("reason", (*reason).to_owned())],
                value: *v,
            })
            .collect()
    }

    /// Queue depths: `podmortem.queue.depth`.
    pub fn queue_points(&self) -> Vec<Point> {
        lock(&self.queues)
            .iter()
            .map(|(queue, probe)| Point {
                labels: vec![("queue", (*queue).to_owned())],
                value: probe(),
            })
            .collect()
    }
}

fn by_one(label: &'static str, m: &BTreeMap<&'static str, u64>) -> Vec<Point> {
    m.iter()
        .map(|(k, v)| Point {
            labels: vec![(label, (*k).to_owned())],
            value: *v,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_per_label() {
        let t = Telemetry::new();
        t.source_event("kmsg");
        t.source_event("kmsg");
        t.source_event("cri");
        t.finding("OOMKilled", "shop");
        t.finding("OOMKilled", "shop");
        t.finding("NodeOOM", "");
        t.dropped("otlp", "queue_full", 3);
        t.parse_error("logs");
        t.parse_errors_from("kmsg", Arc::new(|| 7));
        t.queue("findings", Arc::new(|| 5));
        let events = t.events_points();
        assert_eq!(events.len(), 2);
        assert!(events.contains(&Point {
            labels: vec![("source", "kmsg".into())],
            value: 2
        }));
        assert!(t.finding_points().contains(&Point {
            labels: vec![("kind", "OOMKilled".into()), (NAMESPACE_LABEL, "shop".into())],
            value: 2
        }));
        assert_eq!(t.dropped_points()[0].value, 3);
        let parse = t.parse_error_points();
        assert!(parse.contains(&Point {
            labels: vec![("source", "kmsg".into())],
            value: 7
        }));
        assert!(parse.contains(&Point {
            labels: vec![("source", "logs".into())],
            value: 1
        }));
        assert_eq!(t.queue_points()[0].value, 5);
    }

    #[test]
    fn finding_series_are_bounded() {
        let t = Telemetry::new();
        for i in 0..MAX_FINDING_SERIES + 50 {
            t.finding("ContainerExited", &format!("ci-{i}"));
        }
        t.finding("ContainerExited", "ci-0");
        let points = t.finding_points();
        assert_eq!(points.len(), MAX_FINDING_SERIES + 1);
        let other = points
            .iter()
            .find(|p| p.labels[1].1 == OTHER_NAMESPACES)
            .expect("an overflow series");
        assert_eq!(other.value, 50);
        let first = points.iter().find(|p| p.labels[1].1 == "ci-0").expect("kept");
        assert_eq!(first.value, 2, "a known namespace still counts on its own");
    }

    #[test]
    fn ready_only_when_every_reporting_source_is() {
        let t = Telemetry::new();
        assert!(!t.readiness().0, "nothing connected yet");
        t.set_ready("cri", true);
        t.set_ready("containerd_events", false);
        assert!(!t.readiness().0);
        t.set_ready("containerd_events", true);
        assert_eq!(
            t.readiness(),
            (true, vec![("containerd_events", true), ("cri", true)])
        );
    }
}
