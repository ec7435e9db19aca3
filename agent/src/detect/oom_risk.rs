//! Detector: a warning before the kill. `OOMRisk` is reported once when a container's working
//! set stays above a share of its memory limit (or its memory pressure stays high, on cgroup v2)
//! for a sustained period, and once more, marked resolved, when that ends. The node gets the
//! same for node-wide memory pressure or a low `MemAvailable`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::format::{human_bytes, human_duration};
use super::oom_evidence::{memory_evidence, node_memory_evidence};
use super::{Context, Detector, Finding, FindingKind, Severity, Subject};
use crate::model::or_unknown;
use crate::sources::memory::{ContainerMemory, MemorySnapshot};
use crate::sources::procfs::NodeMemory;
use crate::sources::SourceEvent;

/// Settings of the OOM risk detector (`oom_risk:` in the config file).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RiskConfig {
    /// A container whose working set is at least this share of its limit (percent) is at risk.
    pub usage_percent: f64,
    /// A container whose memory pressure (cgroup v2 `memory.pressure`, `some avg10`) is at
    /// least this (percent of time stalled) is at risk.
    pub pressure_percent: f64,
    /// The node is at risk when its memory pressure (`/proc/pressure/memory`, `full avg10`) is
    /// at least this ...
    pub node_pressure_percent: f64,
    /// ... or when `MemAvailable` is below this share of `MemTotal` (percent).
    pub node_available_percent: f64,
    /// How long the condition must hold before it is reported.
    #[serde(with = "humantime_serde")]
    pub sustained: Duration,
}

impl Default for RiskConfig {
    fn default() -> Self {
        RiskConfig {
            usage_percent: 90.0,
            pressure_percent: 40.0,
            node_pressure_percent: 10.0,
            node_available_percent: 5.0,
            sustained: Duration::from_secs(60),
        }
    }
}

/// A condition being watched.
#[derive(Debug)]
struct Condition {
    since: SystemTime,
    reported: bool,
}

/// The key the node's condition is kept under.
const NODE: &str = "";

/// The OOM risk detector.
#[derive(Debug)]
pub struct OomRiskDetector {
    config: RiskConfig,
    conditions: HashMap<String, Condition>,
}

impl OomRiskDetector {
    /// A detector with `config`.
    pub fn new(config: RiskConfig) -> Self {
        OomRiskDetector {
            config,
            conditions: HashMap::new(),
        }
    }

    /// Why a container is at risk, if it is.
    fn container_risk(&self, m: &ContainerMemory, limit: Option<u64>) -> Option<String> {
        let s = &m.stats;
        if let Some(limit) = limit.filter(|l| *l > 0) {
            let percent = s.working_set_bytes() as f64 * 100.0 / limit as f64;
            if percent >= self.config.usage_percent {
                return Some(format!(
                    "working set {} is {percent:.0}% of its {} limit",
                    human_bytes(s.working_set_bytes()),
                    human_bytes(limit)
                ));
            }
        }
        let pressure = s.pressure.as_ref()?.some.avg10;
        (pressure >= self.config.pressure_percent)
            .then(|| format!("its processes stalled on memory {pressure:.0}% of the last 10s"))
    }

    /// Why the node is at risk, if it is.
    fn node_risk(&self, n: &NodeMemory) -> Option<String> {
        if let Some(full) = n.pressure.as_ref().and_then(|p| p.full.as_ref()) {
            if full.avg10 >= self.config.node_pressure_percent {
                return Some(format!(
                    "all non-idle tasks stalled on memory {:.0}% of the last 10s",
                    full.avg10
                ));
            }
        }
        let percent = n.available_bytes as f64 * 100.0 / n.total_bytes.max(1) as f64;
        (percent < self.config.node_available_percent).then(|| {
            format!(
                "only {} of {} is available ({percent:.1}%)",
                human_bytes(n.available_bytes),
                human_bytes(n.total_bytes)
            )
        })
    }

    /// Tracks one condition; returns a finding when it has held long enough, or has ended
    /// after being reported. `make` builds it (`true` for the end).
    fn track(
        &mut self,
        key: &str,
        risk: Option<String>,
        at: SystemTime,
        make: impl FnOnce(&str, Duration, bool) -> Finding,
    ) -> Option<Finding> {
        match risk {
            Some(why) => {
                let c = self.conditions.entry(key.to_owned()).or_insert(Condition {
                    since: at,
                    reported: false,
                });
                let held = at.duration_since(c.since).unwrap_or_default();
                if c.reported || held < self.config.sustained {
                    return None;
                }
                c.reported = true;
                Some(make(&why, held, false))
            }
            None => {
                let c = self.conditions.remove(key)?;
                let held = at.duration_since(c.since).unwrap_or_default();
                c.reported.then(|| make("", held, true))
            }
        }
    }

    fn on_snapshot(&mut self, snap: &MemorySnapshot, cx: &Context<'_>, out: &mut Vec<Finding>) {
        for m in &snap.containers {
            let Some(c) = cx.inventory.container(&m.container_id) else {
                continue;
            };
            let risk = self.container_risk(m, m.stats.limit_bytes.or(c.memory_limit_bytes));
            let finding = self.track(&m.container_id, risk, snap.at, |why, held, resolved| {
                let mut f = Finding::new(
                    FindingKind::OomRisk,
                    if resolved { Severity::Info } else { Severity::Warning },
                    Subject::container(cx.node, c),
                    snap.at,
                    &[cx.node, &c.pod.namespace, &c.pod.name, c.identity_name()],
                );
                f.resolved = resolved;
                let who = format!("container {} of pod {}", or_unknown(&c.name), c.pod.display());
                f.summary = if resolved {
                    format!("{who} is no longer close to an OOM kill (the risk lasted {})", human_duration(held))
                } else {
                    format!("{who} is close to an OOM kill: {why}, for {}", human_duration(held))
                };
                f.hint = "Raise resources.limits.memory, or find what grows (a cache, a leak, more workers): the kernel kills a process when the limit is reached.".to_owned();
                f.evidence.push(memory_evidence(m, snap.at, "now"));
                f
            });
            out.extend(finding);
        }
        // Containers no longer read (stopped, removed) are no longer at risk.
        let read: std::collections::HashSet<&str> =
            snap.containers.iter().map(|m| m.container_id.as_str()).collect();
        self.conditions
            .retain(|k, _| k == NODE || read.contains(k.as_str()) || cx.inventory.container(k).is_some());
        if let Some(n) = &snap.node {
            let risk = self.node_risk(n);
            let finding = self.track(NODE, risk, snap.at, |why, held, resolved| {
                let mut f = Finding::new(
                    FindingKind::OomRisk,
                    if resolved { Severity::Info } else { Severity::Warning },
                    Subject::Node {
                        node: cx.node.to_owned(),
                    },
                    snap.at,
                    &[cx.node],
                );
                f.resolved = resolved;
                f.summary = if resolved {
                    format!("the node is no longer short of memory (it lasted {})", human_duration(held))
                } else {
                    format!("the node is short of memory: {why}, for {}", human_duration(held))
                };
                f.hint = "The kernel will soon kill processes node-wide, or kubelet will evict pods: set memory requests close to real use, reserve memory for the system, or move workloads off this node.".to_owned();
                f.evidence.push(node_memory_evidence(n, snap.at, "now"));
                f
            });
            out.extend(finding);
        }
    }
}

impl Detector for OomRiskDetector {
    fn name(&self) -> &'static str {
        "oom_risk"
    }

    fn on_event(&mut self, event: &SourceEvent, cx: &Context<'_>, out: &mut Vec<Finding>) {
        if let SourceEvent::Memory(snapshot) = event {
            self.on_snapshot(snapshot, cx, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Inventory;
    use crate::model::{ContainerInfo, ContainerState};
    use crate::sources::cgroup::{CgroupVersion, MemoryStats};

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    fn stats(usage_mib: u64) -> MemoryStats {
        MemoryStats {
            version: CgroupVersion::V1,
            usage_bytes: usage_mib << 20,
            limit_bytes: Some(100 << 20),
            peak_bytes: None,
            inactive_file_bytes: Some(0),
            failcnt: None,
            oom: None,
            oom_kill: None,
            oom_group_kill: None,
            max_events: None,
            high_events: None,
            under_oom: None,
            pressure: None,
        }
    }

    fn snapshot(at: u64, usage_mib: u64) -> SourceEvent {
        SourceEvent::Memory(Box::new(MemorySnapshot {
            at: t(at),
            containers: vec![ContainerMemory {
                container_id: "c1".into(),
                cgroup: "/k8s.io/c1".into(),
                stats: stats(usage_mib),
            }],
            node: None,
        }))
    }

    #[test]
    fn reported_once_after_it_held_and_resolved_when_it_ends() {
        let mut inv = Inventory::default();
        let mut c = ContainerInfo::unknown("c1");
        c.name = "app".into();
        c.state = ContainerState::Running;
        inv.apply(&SourceEvent::CriContainer(Box::new(c)), t(0));
        let mut det = OomRiskDetector::new(RiskConfig::default());
        let mut run = |at: u64, usage: u64| {
            let cx = Context {
                node: "n",
                inventory: &inv,
                now: t(at),
            };
            let mut out = Vec::new();
            det.on_event(&snapshot(at, usage), &cx, &mut out);
            out
        };
        assert!(run(0, 95).is_empty());
        assert!(run(30, 50).is_empty(), "dipped below: starts over");
        assert!(run(40, 92).is_empty());
        let out = run(100, 93);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].kind, FindingKind::OomRisk);
        assert!(!out[0].resolved);
        assert!(
            out[0].summary.contains("93% of its 100 MiB limit"),
            "{}",
            out[0].summary
        );
        assert!(run(110, 99).is_empty(), "de-duplicated while it holds");
        let out = run(120, 40);
        assert_eq!(out.len(), 1);
        assert!(out[0].resolved);
        assert_eq!(out[0].severity, Severity::Info);
        assert!(run(130, 40).is_empty());
    }
}
