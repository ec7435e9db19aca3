//! Detector: the node lacks something that pods on it need. It joins the host dependency check
//! (what the host has) with the catalogue's rules (which pods need what) and the inventory
//! (which pods are here), and raises one node-level `MissingHostDependency` per missing
//! dependency — when the check finds it missing, or as soon as a pod that needs it appears —
//! then one marked resolved when the dependency appears or no pod needs it any more. A
//! dependency whose state could not be told is never reported missing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::{Context, Detector, Evidence, EvidenceSource, Finding, FindingKind, Severity, Subject};
use crate::catalogue::{Catalogue, Dependency, PodFacts};
use crate::model::{ContainerInfo, PodState};
use crate::sources::host_deps::{CheckState, DependencyStatus, HostReport};
use crate::sources::SourceEvent;

/// At most this many pods are named in one finding's evidence.
const MAX_PODS_NAMED: usize = 10;

/// Who needs a dependency, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Need {
    /// `namespace/name` of the pod, or empty for `always` rules.
    pod: String,
    rule: String,
    why: String,
}

/// The missing host dependency detector.
#[derive(Debug)]
pub struct MissingHostDepDetector {
    catalogue: Arc<Catalogue>,
    report: Option<Arc<HostReport>>,
    /// Dependencies reported missing, and the pods that need them.
    raised: BTreeMap<String, BTreeSet<String>>,
}

impl MissingHostDepDetector {
    /// A detector applying `catalogue`'s rules.
    pub fn new(catalogue: Arc<Catalogue>) -> Self {
        MissingHostDepDetector {
            catalogue,
            report: None,
            raised: BTreeMap::new(),
        }
    }

    /// Which dependency each pod on the node (and each `always` rule) needs.
    fn needs(&self, cx: &Context<'_>) -> BTreeMap<String, Vec<Need>> {
        let mut needs: BTreeMap<String, Vec<Need>> = BTreeMap::new();
        for rule in self.catalogue.rules() {
            if rule.matchers.always {
                for dep in &rule.needs {
                    needs.entry(dep.clone()).or_default().push(Need {
                        pod: String::new(),
                        rule: rule.name.clone(),
                        why: "always".into(),
                    });
                }
            }
        }
        let mut by_pod: HashMap<&str, Vec<&ContainerInfo>> = HashMap::new();
        for c in cx.inventory.containers() {
            by_pod.entry(&c.pod_sandbox_id).or_default().push(c);
        }
        for pod in cx.inventory.pods().filter(|p| p.state == PodState::Ready) {
            let containers = by_pod.get(pod.id.as_str()).into_iter().flatten().copied();
            let mut facts = PodFacts::from_cri(pod, containers);
            if let Some(meta) = cx.inventory.pod_meta(&pod.pod.uid) {
                facts = facts.with_meta(meta);
            }
            for rule in self.catalogue.rules() {
                let Some(why) = rule.matchers.matches(&facts) else {
                    continue;
                };
                for dep in &rule.needs {
                    needs.entry(dep.clone()).or_default().push(Need {
                        pod: pod.pod.display(),
                        rule: rule.name.clone(),
                        why: why.clone(),
                    });
                }
            }
        }
        for list in needs.values_mut() {
            list.sort();
            list.dedup();
        }
        needs
    }

    /// Raises what is missing and needed; with `settle` (a host check round), also resolves
    /// what is present now or no longer needed. Between rounds a pod being recreated must not
    /// make a finding flap.
    fn evaluate(&mut self, cx: &Context<'_>, settle: bool, out: &mut Vec<Finding>) {
        let Some(report) = self.report.clone() else {
            return;
        };
        let needs = self.needs(cx);
        for (name, who) in &needs {
            let (Some(dep), Some(status)) = (self.catalogue.dependency(name), report.status(name)) else {
                continue;
            };
            if !status.is_missing() {
                continue;
            }
            let pods: BTreeSet<String> = who.iter().map(|n| n.pod.clone()).collect();
            let new_pods = match self.raised.get(name) {
                None => true,
                Some(raised) => !pods.is_subset(raised),
            };
            if new_pods {
                out.push(missing(cx, dep, status, &report, who));
            }
            // The pods that need it now: one leaving and coming back is said again.
            self.raised.insert(name.clone(), pods);
        }
        let cleared: Vec<(String, String)> = self
            .raised
            .keys()
            .filter_map(|name| {
                let why = match report.status(name).map(DependencyStatus::state) {
                    Some(CheckState::Present(how)) => format!("it is present now ({how})"),
                    None => "it is no longer in the catalogue".into(),
                    _ if settle && !needs.contains_key(name) => {
                        "no pod on the node needs it any more (it is still missing)".into()
                    }
                    _ => return None,
                };
                Some((name.clone(), why))
            })
            .collect();
        for (name, why) in cleared {
            self.raised.remove(&name);
            let mut f = Finding::new(
                FindingKind::MissingHostDependency,
                Severity::Info,
                Subject::Node {
                    node: cx.node.to_owned(),
                },
                cx.now,
                &[cx.node, &name],
            );
            f.resolved = true;
            f.summary = match why.strip_suffix(" (it is still missing)") {
                Some(why) => format!(
                    "node {}: {name} is no longer needed: {why}, though it is still missing",
                    cx.node
                ),
                None => format!("node {} no longer lacks {name}: {why}", cx.node),
            };
            if let Some(status) = report.status(&name) {
                f.evidence.push(check_evidence(status, &report));
            }
            out.push(f);
        }
    }
}

/// The shell command that installs `package` on a host of `family`, when both are plain.
pub fn install_command(family: Option<&str>, package: &str) -> Option<String> {
    let plain = !package.is_empty()
        && package
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c));
    let tool = match family? {
        "debian" => "apt-get install -y",
        "rhel" => "dnf install -y",
        "suse" => "zypper install -y",
        "arch" => "pacman -S --noconfirm",
        "alpine" => "apk add",
        _ => return None,
    };
    plain.then(|| format!("{tool} {package}"))
}

/// What to do about a missing dependency: install its package, then its extra step.
pub fn fix_hint(dep: &Dependency, family: Option<&str>) -> String {
    let mut hint = match dep.package_for(family) {
        Some(package) => match install_command(family, &package) {
            Some(cmd) => format!("Install {package} on the node (`{cmd}`)"),
            None => format!("Install {package} on the node"),
        },
        None => format!("Install what provides {} on the node", dep.name),
    };
    if !dep.fix.is_empty() {
        hint.push_str(&format!(", then `{}`", dep.fix));
    }
    hint.push_str(". Bake it into the node image so new nodes have it; `podmortem check` verifies a node.");
    hint
}

/// Evidence of a dependency's checks on the host.
pub fn check_evidence(status: &DependencyStatus, report: &HostReport) -> Evidence {
    let detail: Vec<String> = status
        .checks
        .iter()
        .map(|c| {
            let (word, text) = match &c.state {
                CheckState::Present(t) => ("present", t),
                CheckState::Missing(t) => ("missing", t),
                CheckState::Unknown(t) => ("unknown", t),
            };
            format!("{} {}: {word} ({text})", c.kind.as_str(), c.target)
        })
        .collect();
    let mut e = Evidence::new(
        EvidenceSource::Host,
        Some(report.at),
        format!("host check on {}: {}", report.os, detail.join("; ")),
    )
    .with("dependency", status.name.clone())
    .with("os", report.os.clone());
    if let Some(family) = report.family {
        e = e.with("os_family", family);
    }
    if let Ok(checks) = serde_json::to_value(&status.checks) {
        e = e.with("checks", checks);
    }
    e
}

fn missing(
    cx: &Context<'_>,
    dep: &Dependency,
    status: &DependencyStatus,
    report: &HostReport,
    who: &[Need],
) -> Finding {
    let mut f = Finding::new(
        FindingKind::MissingHostDependency,
        Severity::Warning,
        Subject::Node {
            node: cx.node.to_owned(),
        },
        cx.now,
        &[cx.node, &dep.name],
    );
    let kinds: Vec<&str> = dep.checks().map(|(k, _)| k.as_str()).collect();
    let package = dep
        .package_for(report.family)
        .map(|p| format!("; package {p}"))
        .unwrap_or_default();
    let pods: Vec<&Need> = who.iter().filter(|n| !n.pod.is_empty()).collect();
    let needed_by = match pods.as_slice() {
        [] => {
            let rules: BTreeSet<&str> = who.iter().map(|n| n.rule.as_str()).collect();
            format!(
                "required by rule {}",
                rules.into_iter().collect::<Vec<_>>().join(", ")
            )
        }
        [one] => format!("needed by pod {} (rule {}: {})", one.pod, one.rule, one.why),
        [one, rest @ ..] => format!(
            "needed by pod {} (rule {}: {}) and {} more",
            one.pod,
            one.rule,
            one.why,
            rest.len()
        ),
    };
    f.summary = format!(
        "node {} lacks {} ({}{package}), {needed_by}",
        cx.node,
        dep.name,
        kinds.join(" or ")
    );
    if !dep.why.is_empty() {
        f.summary.push_str(&format!("; {}: {}", dep.name, dep.why));
    }
    f.hint = fix_hint(dep, report.family);
    f.evidence.push(check_evidence(status, report));
    for need in pods.iter().take(MAX_PODS_NAMED) {
        f.evidence.push(
            Evidence::new(
                EvidenceSource::Cri,
                None,
                format!("pod {} matches rule {} ({})", need.pod, need.rule, need.why),
            )
            .with("pod", need.pod.clone())
            .with("rule", need.rule.clone()),
        );
    }
    f
}

impl Detector for MissingHostDepDetector {
    fn name(&self) -> &'static str {
        "missing_host_dependency"
    }

    fn on_event(&mut self, event: &SourceEvent, cx: &Context<'_>, out: &mut Vec<Finding>) {
        match event {
            SourceEvent::HostDeps(report) => {
                self.report = Some(Arc::clone(report));
                self.evaluate(cx, true, out);
            }
            SourceEvent::CriSnapshot(_)
            | SourceEvent::CriPod(_)
            | SourceEvent::CriContainer(_)
            | SourceEvent::PodMeta(_)
            | SourceEvent::PodMetaDeleted(_) => {
                self.evaluate(cx, false, out);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
#[path = "missing_host_dep_tests.rs"]
mod tests;
