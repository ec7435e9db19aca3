//! `podmortem check`: a one-shot check of the node's host dependencies, printed as a readable
//! report. Which rules are checked: the ones named with `--rule`, or every dependency with
//! `--all`, or else the rules that apply to the node — `always` rules and the rules matching
//! the pods that CRI lists on it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use crate::catalogue::{Catalogue, Dependency, PodFacts};
use crate::config::Config;
use crate::detect::missing_host_dep::install_command;
use crate::model::PodInfo;
use crate::sources::cri::client::CriClient;
use crate::sources::host::HostView;
use crate::sources::host_deps::{self, CheckState, HostReport};

/// How long `check` waits for the container runtime to list the node's pods.
const CRI_TIMEOUT: Duration = Duration::from_secs(3);

/// What to check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Rules named on the command line.
    pub rules: Vec<String>,
    /// Every dependency of the catalogue.
    pub all: bool,
}

/// Why `check` could not run.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The catalogue is invalid.
    #[error("host_deps: {0}")]
    Catalogue(#[from] crate::catalogue::CatalogueError),
    /// The check itself failed.
    #[error("the host check failed: {0}")]
    Failed(String),
    /// A rule given with `--rule` does not exist.
    #[error("no rule named `{name}` in the catalogue (rules: {known})")]
    UnknownRule {
        /// The name given.
        name: String,
        /// The rules there are.
        known: String,
    },
}

/// The outcome: the report text, and whether something is missing.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The readable report.
    pub text: String,
    /// How many checked dependencies are missing.
    pub missing: usize,
}

/// A rule to check, and why it applies.
struct Applies {
    rule: String,
    needs: Vec<String>,
    because: Vec<String>,
}

/// Runs the check.
pub async fn run(config: &Config, node: &str, selection: &Selection) -> Result<Outcome, CheckError> {
    let catalogue = config.host_deps.build_catalogue()?;
    let mut notes = Vec::new();
    let applies = if selection.all {
        vec![Applies {
            rule: "(all dependencies)".into(),
            needs: catalogue.dependencies().map(|d| d.name.clone()).collect(),
            because: vec!["--all".into()],
        }]
    } else if !selection.rules.is_empty() {
        let mut out = Vec::new();
        for name in &selection.rules {
            let rule = catalogue.rule(name).ok_or_else(|| CheckError::UnknownRule {
                name: name.clone(),
                known: catalogue
                    .rules()
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
            out.push(Applies {
                rule: rule.name.clone(),
                needs: rule.needs.clone(),
                because: vec!["--rule".into()],
            });
        }
        out
    } else {
        let pods = match node_pods(config).await {
            Ok(pods) => pods,
            Err(why) => {
                notes.push(format!(
                    "note: the pods on this node are unknown ({why}); only `always` rules are checked"
                ));
                Vec::new()
            }
        };
        applicable(&catalogue, &pods)
    };
    let names: BTreeSet<&str> = applies
        .iter()
        .flat_map(|a| a.needs.iter().map(String::as_str))
        .collect();
    let deps: Vec<Dependency> = names
        .iter()
        .filter_map(|n| catalogue.dependency(n))
        .cloned()
        .collect();
    let host = HostView::new(&config.host_root);
    let path = config.host_deps.path.clone();
    let report = match tokio::task::spawn_blocking(move || host_deps::check(&host, &path, deps.iter())).await
    {
        Ok(report) => report,
        Err(e) => return Err(CheckError::Failed(e.to_string())),
    };
    Ok(render(config, node, &catalogue, &applies, &report, &notes))
}

/// The rules that apply to a node running `pods` (sandbox and its containers' images).
fn applicable(catalogue: &Catalogue, pods: &[(PodInfo, Vec<String>)]) -> Vec<Applies> {
    let mut out = Vec::new();
    for rule in catalogue.rules() {
        let mut because = Vec::new();
        if rule.matchers.always {
            because.push("always".to_owned());
        }
        for (pod, images) in pods {
            let mut facts = PodFacts::from_cri(pod, std::iter::empty());
            facts.images = images.iter().map(String::as_str).collect();
            if let Some(why) = rule.matchers.matches(&facts) {
                because.push(format!("pod {}: {why}", pod.pod.display()));
            }
        }
        if !because.is_empty() {
            out.push(Applies {
                rule: rule.name.clone(),
                needs: rule.needs.clone(),
                because,
            });
        }
    }
    out
}

/// The node's ready pods and their containers' images, from CRI.
async fn node_pods(config: &Config) -> Result<Vec<(PodInfo, Vec<String>)>, String> {
    let timeout = config.cri.request_timeout.min(CRI_TIMEOUT);
    let (client, _) = CriClient::connect(&config.containerd_address, timeout)
        .await
        .map_err(|e| e.to_string())?;
    let pods = client.list_pods().await.map_err(|e| e.to_string())?;
    let containers = client.list_containers().await.map_err(|e| e.to_string())?;
    let mut images: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in containers {
        if let Some(image) = c.image {
            images.entry(c.pod_sandbox_id).or_default().push(image.image);
        }
    }
    Ok(pods
        .into_iter()
        .filter(|p| p.state == crate::model::PodState::Ready)
        .map(|p| {
            let images = images.remove(&p.id).unwrap_or_default();
            (p, images)
        })
        .collect())
}

fn render(
    config: &Config,
    node: &str,
    catalogue: &Catalogue,
    applies: &[Applies],
    report: &HostReport,
    notes: &[String],
) -> Outcome {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "podmortem check on {node}: {}, kernel {}, host root {}",
        if report.os.is_empty() {
            "unknown OS"
        } else {
            &report.os
        },
        report.kernel.as_deref().unwrap_or("unknown"),
        config.host_root.display()
    );
    for note in notes {
        let _ = writeln!(text, "{note}");
    }
    if applies.is_empty() {
        let _ = writeln!(
            text,
            "no rule applies to this node (name one with --rule, or check everything with --all)"
        );
    }
    let mut missing = BTreeSet::new();
    let mut unknown = BTreeSet::new();
    for applies in applies {
        let _ = writeln!(text, "\nrule {} ({})", applies.rule, applies.because.join("; "));
        for name in &applies.needs {
            let (Some(dep), Some(status)) = (catalogue.dependency(name), report.status(name)) else {
                continue;
            };
            let (word, detail) = match status.state() {
                CheckState::Present(d) => ("ok", d),
                CheckState::Missing(d) => {
                    missing.insert(name.clone());
                    ("MISSING", d)
                }
                CheckState::Unknown(d) => {
                    unknown.insert(name.clone());
                    ("UNKNOWN", d)
                }
            };
            let kinds: Vec<String> = dep.checks().map(|(k, t)| format!("{} {t}", k.as_str())).collect();
            let _ = writeln!(text, "  {word:<8} {name:<12} {}: {detail}", kinds.join(" or "));
            if word == "MISSING" {
                if let Some(package) = dep.package_for(report.family) {
                    let cmd = install_command(report.family, &package)
                        .map(|c| format!(" ({c})"))
                        .unwrap_or_default();
                    let _ = writeln!(text, "  {:<8} install {package}{cmd}", "");
                }
                if !dep.fix.is_empty() {
                    let _ = writeln!(text, "  {:<8} then {}", "", dep.fix);
                }
            }
        }
    }
    let checked = report.dependencies.len();
    let _ = writeln!(text);
    if checked == 0 {
        let _ = write!(text, "nothing checked");
    } else if missing.is_empty() && unknown.is_empty() {
        let _ = write!(text, "all {checked} dependencies present");
    } else if missing.is_empty() {
        let _ = write!(text, "none of {checked} dependencies missing");
    } else {
        let names: Vec<&str> = missing.iter().map(String::as_str).collect();
        let _ = write!(
            text,
            "{} of {checked} dependencies missing: {}",
            missing.len(),
            names.join(", ")
        );
    }
    if !unknown.is_empty() {
        let names: Vec<&str> = unknown.iter().map(String::as_str).collect();
        let _ = write!(text, "; could not check {}", names.join(", "));
    }
    let _ = writeln!(text, " ({:.1} ms)", report.took.as_secs_f64() * 1000.0);
    Outcome {
        text,
        missing: missing.len(),
    }
}
