//! The node conditions podmortem owns, as a pure state machine: node-level findings and the
//! passing of time in, the conditions podmortem wants on its Node out.
//!
//! - `MissingHostDependency`, `HostFilesystemReadOnly` and `OOMRisk` are True while a finding
//!   of that kind is raised and not resolved (distinct fingerprints; the message lists them).
//! - `NodeOOM` is True for the OOM window after the last node-wide OOM kill.
//! - At start, conditions read back from the Node carry over: a True check condition stays
//!   True (same `lastTransitionTime`) if a check raises it again within the settle time, and
//!   turns False after it otherwise; a True `NodeOOM` keeps its window. A restart thus neither
//!   forgets a condition nor adds a transition that did not happen.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::detect::{Finding, FindingKind, Subject};

/// The condition types podmortem owns, in the order they are sent.
pub const TYPES: [&str; 4] = [
    "MissingHostDependency",
    "HostFilesystemReadOnly",
    "NodeOOM",
    "OOMRisk",
];
/// The reason of a True condition.
pub const DETECTED: &str = "PodmortemDetected";
/// The reason of a False condition.
pub const CLEARED: &str = "PodmortemCleared";
/// Messages are cut to this many bytes.
pub const MAX_MESSAGE: usize = 1024;
/// How `NodeOOM`'s message records the last kill, to find its window again after a restart.
const LAST_OOM: &str = "last node OOM kill at ";

/// One condition as podmortem wants it on the Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// One of [`TYPES`].
    pub type_: &'static str,
    /// True or False.
    pub status: bool,
    /// [`DETECTED`] or [`CLEARED`].
    pub reason: &'static str,
    /// What podmortem found, or that it finds nothing.
    pub message: String,
    /// When the status last changed, to the second.
    pub last_transition: SystemTime,
}

/// A condition read back from the Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Its type.
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Its message.
    pub message: String,
    /// When its status last changed.
    pub last_transition: Option<SystemTime>,
}

/// Which of podmortem's condition types a finding feeds, if any: only node-level findings.
pub fn condition_type(f: &Finding) -> Option<&'static str> {
    if !matches!(f.subject, Subject::Node { .. }) {
        return None;
    }
    match f.kind {
        FindingKind::MissingHostDependency => Some(TYPES[0]),
        FindingKind::HostFilesystemReadOnly => Some(TYPES[1]),
        FindingKind::NodeOom => Some(TYPES[2]),
        FindingKind::OomRisk => Some(TYPES[3]),
        _ => None,
    }
}

/// `t` to the second, as the API keeps it.
fn whole_seconds(t: SystemTime) -> SystemTime {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn cut(message: String) -> String {
    crate::text::cut_marked(message, MAX_MESSAGE)
}

#[derive(Debug, Clone)]
struct TypeState {
    type_: &'static str,
    /// Findings raised and not resolved, by fingerprint: their summaries.
    raised: BTreeMap<String, String>,
    /// The status last decided (or read back); `None` before either.
    status: Option<bool>,
    last_transition: SystemTime,
    /// Read back True at start: True until then unless a check raises it again.
    held_until: Option<SystemTime>,
    held_message: String,
}

/// podmortem's node conditions.
#[derive(Debug, Clone)]
pub struct Conditions {
    settle: Duration,
    oom_window: Duration,
    types: Vec<TypeState>,
    /// The last node-wide OOM kill, and what was said about it.
    last_oom: Option<(SystemTime, String)>,
}

impl Conditions {
    /// No finding yet; read-back conditions wait `settle` for a check, `NodeOOM` lasts
    /// `oom_window`.
    pub fn new(settle: Duration, oom_window: Duration) -> Self {
        Conditions {
            settle,
            oom_window,
            types: TYPES
                .iter()
                .map(|t| TypeState {
                    type_: t,
                    raised: BTreeMap::new(),
                    status: None,
                    last_transition: SystemTime::UNIX_EPOCH,
                    held_until: None,
                    held_message: String::new(),
                })
                .collect(),
            last_oom: None,
        }
    }

    /// Leaves out `types`: the conditions of checks that are switched off, which would
    /// otherwise claim a health nobody checked.
    pub fn without(mut self, types: &[&str]) -> Self {
        self.types.retain(|t| !types.contains(&t.type_));
        self
    }

    fn state(&mut self, type_: &str) -> Option<&mut TypeState> {
        self.types.iter_mut().find(|t| t.type_ == type_)
    }

    /// Takes the conditions read back from the Node at start, at `now`. Types that are not
    /// podmortem's are ignored.
    pub fn restore(&mut self, observed: &[Observed], now: SystemTime) {
        let settle = self.settle;
        let mut last_oom = None;
        for o in observed {
            let Some(t) = self.state(&o.type_) else { continue };
            let status = match o.status.as_str() {
                "True" => true,
                "False" => false,
                _ => continue,
            };
            t.status = Some(status);
            t.last_transition = whole_seconds(o.last_transition.unwrap_or(now));
            if !status {
                continue;
            }
            if t.type_ == TYPES[2] {
                // The message says when the last kill was; else the window runs from the
                // transition, the earliest it can have been.
                let (at, summary) = parse_oom_message(&o.message).unwrap_or((t.last_transition, &o.message));
                last_oom = Some((at, summary.to_owned()));
            } else {
                t.held_until = Some(now + settle);
                t.held_message = o.message.clone();
            }
        }
        if let Some((at, summary)) = last_oom {
            if self.last_oom.as_ref().is_none_or(|(known, _)| *known < at) {
                self.last_oom = Some((at, summary));
            }
        }
    }

    /// Takes a finding; returns whether it concerns podmortem's conditions.
    pub fn apply(&mut self, f: &Finding) -> bool {
        let Some(type_) = condition_type(f) else {
            return false;
        };
        if type_ == TYPES[2] {
            if !f.resolved && self.last_oom.as_ref().is_none_or(|(at, _)| *at <= f.last_seen) {
                self.last_oom = Some((f.last_seen, f.summary.clone()));
            }
            return true;
        }
        let Some(t) = self.state(type_) else {
            return false;
        };
        if f.resolved {
            t.raised.remove(&f.fingerprint);
        } else {
            t.raised.insert(f.fingerprint.clone(), f.summary.clone());
            // A check says it again: what was read back is confirmed.
            t.held_until = None;
        }
        true
    }

    /// The conditions wanted at `now`, recording any change of status as a transition.
    pub fn desired(&mut self, now: SystemTime) -> Vec<Condition> {
        let now_s = whole_seconds(now);
        let window = self.oom_window;
        let oom = self
            .last_oom
            .clone()
            .filter(|(at, _)| at.checked_add(window).is_some_and(|end| end > now));
        let mut out = Vec::with_capacity(self.types.len());
        for t in &mut self.types {
            if t.held_until.is_some_and(|until| until <= now) {
                t.held_until = None;
            }
            let (active, message) = if t.type_ == TYPES[2] {
                match &oom {
                    Some((at, summary)) => (
                        true,
                        format!(
                            "{LAST_OOM}{}, True for {} after the last: {summary}",
                            humantime::format_rfc3339_seconds(*at),
                            humantime::format_duration(window)
                        ),
                    ),
                    None => (
                        false,
                        format!(
                            "no node-wide OOM kill in the last {}",
                            humantime::format_duration(window)
                        ),
                    ),
                }
            } else if !t.raised.is_empty() {
                let mut summaries: Vec<&str> = t.raised.values().map(String::as_str).collect();
                summaries.sort_unstable();
                let message = match summaries.as_slice() {
                    [one] => (*one).to_owned(),
                    many => format!("{} findings: {}", many.len(), many.join("; ")),
                };
                (true, message)
            } else if t.held_until.is_some() {
                (true, t.held_message.clone())
            } else {
                (false, cleared_message(t.type_).to_owned())
            };
            if t.status != Some(active) {
                t.status = Some(active);
                t.last_transition = now_s;
            }
            out.push(Condition {
                type_: t.type_,
                status: active,
                reason: if active { DETECTED } else { CLEARED },
                message: cut(message),
                last_transition: t.last_transition,
            });
        }
        out
    }

    /// The next time the conditions change by themselves (a hold or an OOM window ending).
    pub fn next_change(&self, now: SystemTime) -> Option<SystemTime> {
        let oom_end = self
            .last_oom
            .as_ref()
            .and_then(|(at, _)| at.checked_add(self.oom_window));
        self.types
            .iter()
            .filter_map(|t| t.held_until)
            .chain(oom_end)
            .filter(|t| *t > now)
            .min()
    }
}

/// When the last kill was and what was said of it, from a `NodeOOM` message podmortem wrote.
fn parse_oom_message(message: &str) -> Option<(SystemTime, &str)> {
    let (at, rest) = message.strip_prefix(LAST_OOM)?.split_once(", ")?;
    let at = humantime::parse_rfc3339(at).ok()?;
    Some((at, rest.split_once(": ").map_or("", |(_, summary)| summary)))
}

fn cleared_message(type_: &str) -> &'static str {
    match type_ {
        "MissingHostDependency" => "podmortem finds every host dependency the node's pods need",
        "HostFilesystemReadOnly" => "the node filesystems pods need are writable",
        "OOMRisk" => "the node is not short of memory",
        _ => "podmortem finds nothing",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Severity;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    fn node_finding(kind: FindingKind, id: &str, at: u64, resolved: bool) -> Finding {
        let mut f = Finding::new(
            kind,
            Severity::Warning,
            Subject::Node { node: "n1".into() },
            t(at),
            &["n1", id],
        );
        f.summary = format!("{} {id}", kind.as_str());
        f.resolved = resolved;
        f
    }

    fn get<'a>(cs: &'a [Condition], type_: &str) -> &'a Condition {
        cs.iter().find(|c| c.type_ == type_).expect("every type is sent")
    }

    const HFRO: &str = "HostFilesystemReadOnly";
    const MHD: &str = "MissingHostDependency";

    #[test]
    fn switched_off_checks_send_no_condition() {
        let mut c = Conditions::new(Duration::from_secs(120), Duration::from_secs(600)).without(&[HFRO]);
        let start = c.desired(t(0));
        assert_eq!(start.len(), 3);
        assert!(start.iter().all(|c| c.type_ != HFRO));
        assert!(!c.apply(&node_finding(FindingKind::HostFilesystemReadOnly, "d", 1, false)));
        assert!(c.desired(t(2)).iter().all(|c| c.type_ != HFRO));
    }

    #[test]
    fn every_type_starts_false_and_a_finding_raises_and_its_resolution_clears() {
        let mut c = Conditions::new(Duration::from_secs(120), Duration::from_secs(600));
        let start = c.desired(t(0));
        assert_eq!(start.len(), 4);
        assert!(start
            .iter()
            .all(|c| !c.status && c.reason == CLEARED && c.last_transition == t(0)));

        assert!(c.apply(&node_finding(
            FindingKind::HostFilesystemReadOnly,
            "sda1",
            5,
            false
        )));
        assert!(c.apply(&node_finding(
            FindingKind::HostFilesystemReadOnly,
            "sdb1",
            6,
            false
        )));
        let raised = c.desired(t(7));
        let h = get(&raised, HFRO);
        assert!(h.status && h.reason == DETECTED && h.last_transition == t(7));
        assert_eq!(
            h.message,
            "2 findings: HostFilesystemReadOnly sda1; HostFilesystemReadOnly sdb1"
        );
        assert!(!get(&raised, MHD).status, "other types untouched");
        assert_eq!(get(&raised, MHD).last_transition, t(0));

        // One of two resolved: still True, no new transition.
        c.apply(&node_finding(
            FindingKind::HostFilesystemReadOnly,
            "sda1",
            8,
            true,
        ));
        let one = c.desired(t(9));
        assert!(get(&one, HFRO).status);
        assert_eq!(get(&one, HFRO).last_transition, t(7));
        assert_eq!(get(&one, HFRO).message, "HostFilesystemReadOnly sdb1");
        c.apply(&node_finding(
            FindingKind::HostFilesystemReadOnly,
            "sdb1",
            10,
            true,
        ));
        let cleared = c.desired(t(11));
        assert!(!get(&cleared, HFRO).status);
        assert_eq!(get(&cleared, HFRO).last_transition, t(11));
        assert_eq!(get(&cleared, HFRO).reason, CLEARED);
    }

    #[test]
    fn pod_findings_and_other_kinds_are_not_conditions() {
        let mut c = Conditions::new(Duration::from_secs(120), Duration::from_secs(600));
        let mut pod = node_finding(FindingKind::OomRisk, "x", 1, false);
        pod.subject = Subject::Container {
            node: "n1".into(),
            namespace: "a".into(),
            pod: "b".into(),
            pod_uid: "u".into(),
            container: "c".into(),
            container_id: "i".into(),
            attempt: 0,
        };
        assert!(!c.apply(&pod));
        assert!(!c.apply(&node_finding(FindingKind::OomKilled, "x", 1, false)));
        assert!(c.desired(t(2)).iter().all(|c| !c.status));
    }

    #[test]
    fn node_oom_lasts_its_window_after_the_last_kill() {
        let mut c = Conditions::new(Duration::from_secs(120), Duration::from_secs(600));
        c.desired(t(0));
        c.apply(&node_finding(FindingKind::NodeOom, "k1", 100, false));
        let on = c.desired(t(101));
        let oom = get(&on, "NodeOOM");
        assert!(oom.status);
        assert_eq!(
            oom.message,
            "last node OOM kill at 2023-11-14T22:15:00Z, True for 10m after the last: NodeOOM k1"
        );
        assert_eq!(c.next_change(t(101)), Some(t(700)));
        // Another kill extends the window without a transition.
        c.apply(&node_finding(FindingKind::NodeOom, "k1", 500, false));
        assert_eq!(get(&c.desired(t(699)), "NodeOOM").last_transition, t(101));
        assert!(get(&c.desired(t(1099)), "NodeOOM").status);
        let off = c.desired(t(1100));
        assert!(!get(&off, "NodeOOM").status);
        assert_eq!(get(&off, "NodeOOM").last_transition, t(1100));
        // A kill replayed from long ago raises nothing.
        c.apply(&node_finding(FindingKind::NodeOom, "k1", 10, false));
        assert!(!get(&c.desired(t(1101)), "NodeOOM").status);
    }

    #[test]
    fn a_restart_keeps_what_a_check_raises_again_and_clears_the_rest_after_settling() {
        let mut c = Conditions::new(Duration::from_secs(120), Duration::from_secs(600));
        let observed = vec![
            Observed {
                type_: "Ready".into(),
                status: "True".into(),
                message: "kubelet is posting ready status".into(),
                last_transition: Some(t(0)),
            },
            Observed {
                type_: HFRO.into(),
                status: "True".into(),
                message: "HostFilesystemReadOnly sda1".into(),
                last_transition: Some(t(10)),
            },
            Observed {
                type_: MHD.into(),
                status: "True".into(),
                message: "node n1 lacks iscsiadm".into(),
                last_transition: Some(t(20)),
            },
            Observed {
                type_: "OOMRisk".into(),
                status: "False".into(),
                message: String::new(),
                last_transition: Some(t(30)),
            },
        ];
        c.restore(&observed, t(1000));
        let first = c.desired(t(1000));
        assert_eq!(first.len(), 4, "never kubelet's types");
        assert!(get(&first, HFRO).status && get(&first, MHD).status);
        assert_eq!(get(&first, HFRO).last_transition, t(10));
        assert_eq!(get(&first, MHD).message, "node n1 lacks iscsiadm", "held as read");
        assert_eq!(get(&first, "OOMRisk").last_transition, t(30));
        assert_eq!(c.next_change(t(1000)), Some(t(1120)));

        c.apply(&node_finding(
            FindingKind::HostFilesystemReadOnly,
            "sda1",
            1001,
            false,
        ));
        let settled = c.desired(t(1120));
        let h = get(&settled, HFRO);
        assert!(h.status);
        assert_eq!(h.last_transition, t(10), "raised again: no new transition");
        let m = get(&settled, MHD);
        assert!(!m.status);
        assert_eq!(m.last_transition, t(1120));
        assert_eq!(c.next_change(t(1120)), None);
    }

    #[test]
    fn a_node_oom_read_back_keeps_its_window() {
        let mut c = Conditions::new(Duration::from_secs(120), Duration::from_secs(600));
        let message = "last node OOM kill at 2023-11-14T22:15:00Z, True for 10m after the last: \
                       the node ran out of memory: the kernel killed pid 7 (java)";
        c.restore(
            &[Observed {
                type_: "NodeOOM".into(),
                status: "True".into(),
                message: message.into(),
                last_transition: Some(t(50)),
            }],
            t(300),
        );
        let now = c.desired(t(300));
        let oom = get(&now, "NodeOOM");
        assert!(oom.status);
        assert_eq!(oom.last_transition, t(50));
        assert_eq!(oom.message, message, "the same message: nothing to send");
        assert_eq!(c.next_change(t(300)), Some(t(700)));
        assert!(!get(&c.desired(t(700)), "NodeOOM").status);

        // Without the marker, the window runs from the transition.
        let mut c = Conditions::new(Duration::from_secs(120), Duration::from_secs(600));
        c.restore(
            &[Observed {
                type_: "NodeOOM".into(),
                status: "True".into(),
                message: "written by someone else".into(),
                last_transition: Some(t(50)),
            }],
            t(300),
        );
        assert_eq!(c.next_change(t(300)), Some(t(650)));
    }

    #[test]
    fn long_messages_are_cut_on_a_character() {
        let mut c = Conditions::new(Duration::from_secs(120), Duration::from_secs(600));
        let mut f = node_finding(FindingKind::MissingHostDependency, "x", 1, false);
        f.summary = "é".repeat(2000);
        c.apply(&f);
        let now = c.desired(t(2));
        let m = &get(&now, MHD).message;
        assert!(m.len() <= MAX_MESSAGE && m.ends_with('…'));
    }
}
