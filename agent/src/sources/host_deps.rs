//! The host dependency check (a source): looks up every dependency of the catalogue on the
//! host — programs on its PATH, kernel modules, running daemons, files — at start and every
//! `host_deps.interval`, and sends the result to the engine. Which pods need what is the
//! detector's business; this source only says what the host has.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::host::{searched_dirs, DaemonScan, HostError, HostView, ModuleState, ProgramLookup, DEFAULT_PATH};
use super::SourceEvent;
use crate::catalogue::{
    self, Catalogue, CatalogueEntries, CatalogueError, CatalogueMode, CheckKind, Dependency,
};

/// Settings of the host dependency check (`host_deps:` in the config file).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HostDepsConfig {
    /// Whether the host is checked at all (the reactive attribution of exits still runs).
    pub enabled: bool,
    /// How often the host is checked again.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// The host's PATH: where programs are looked for, in order.
    pub path: Vec<String>,
    /// `extend` the shipped catalogue with the entries below, or `replace` it by them.
    pub catalogue: CatalogueMode,
    /// Dependencies to add (or to replace shipped ones of the same name).
    pub dependencies: Vec<Dependency>,
    /// Rules to add (or to replace shipped ones of the same name).
    pub rules: Vec<catalogue::Rule>,
}

impl Default for HostDepsConfig {
    fn default() -> Self {
        HostDepsConfig {
            enabled: true,
            interval: Duration::from_secs(60),
            path: DEFAULT_PATH.iter().map(|d| (*d).to_owned()).collect(),
            catalogue: CatalogueMode::Extend,
            dependencies: Vec::new(),
            rules: Vec::new(),
        }
    }
}

impl HostDepsConfig {
    /// The catalogue these settings describe.
    pub fn build_catalogue(&self) -> Result<Catalogue, CatalogueError> {
        let entries = CatalogueEntries {
            dependencies: self.dependencies.clone(),
            rules: self.rules.clone(),
        };
        Catalogue::build(self.catalogue, &entries)
    }
}

/// What one check of a dependency found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum CheckState {
    /// It is there; how it was found.
    Present(String),
    /// It is not there; where it was looked for.
    Missing(String),
    /// It could not be told; why.
    Unknown(String),
}

/// One check of a dependency and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// What kind of check.
    pub kind: CheckKind,
    /// What was looked for (program, module, process or file name).
    pub target: String,
    /// What was found.
    #[serde(flatten)]
    pub state: CheckState,
}

/// A dependency's state on the host: present when any check found it, missing when every
/// check said it is not there, unknown otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DependencyStatus {
    /// The dependency's name.
    pub name: String,
    /// Its checks, in catalogue order.
    pub checks: Vec<CheckResult>,
}

impl DependencyStatus {
    /// The overall state: the first present check, else the first unknown one, else missing.
    pub fn state(&self) -> CheckState {
        let pick = |f: fn(&CheckState) -> bool| self.checks.iter().find(|c| f(&c.state));
        if let Some(c) = pick(|s| matches!(s, CheckState::Present(_))) {
            return c.state.clone();
        }
        if let Some(c) = pick(|s| matches!(s, CheckState::Unknown(_))) {
            return c.state.clone();
        }
        let details: Vec<&str> = self
            .checks
            .iter()
            .filter_map(|c| match &c.state {
                CheckState::Missing(d) => Some(d.as_str()),
                _ => None,
            })
            .collect();
        CheckState::Missing(details.join("; "))
    }

    /// Whether every check says it is not there.
    pub fn is_missing(&self) -> bool {
        matches!(self.state(), CheckState::Missing(_))
    }
}

/// One round of checks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostReport {
    /// When the round started.
    #[serde(skip)]
    pub at: SystemTime,
    /// How long it took.
    #[serde(skip)]
    pub took: Duration,
    /// The host's distribution, as os-release names it.
    pub os: String,
    /// Its distribution family (`debian`, `rhel`, ...), when known.
    pub family: Option<&'static str>,
    /// The running kernel's release, when readable.
    pub kernel: Option<String>,
    /// Every dependency checked.
    pub dependencies: Vec<DependencyStatus>,
}

impl HostReport {
    /// The status of the dependency named `name`, if it was checked.
    pub fn status(&self, name: &str) -> Option<&DependencyStatus> {
        self.dependencies.iter().find(|d| d.name == name)
    }
}

/// Checks `deps` on the host. Blocking (file system reads): run it off the async threads.
pub fn check<'a>(
    host: &HostView,
    path: &[String],
    deps: impl IntoIterator<Item = &'a Dependency>,
) -> HostReport {
    let (at, started) = (SystemTime::now(), Instant::now());
    let os = host.os_release();
    let family = catalogue::family(&os.id, os.id_like.iter().map(String::as_str));
    let kernel = host.kernel_release().ok();
    let mut daemons: Option<Result<DaemonScan, HostError>> = None;
    let mut dependencies = Vec::new();
    // A missing or empty host root (a DaemonSet without its hostPath mount) would make
    // everything look missing: then nothing is claimed.
    let unusable = host.unmounted();
    for dep in deps {
        if let Some(why) = &unusable {
            let checks = dep
                .checks()
                .map(|(kind, target)| CheckResult {
                    kind,
                    target: target.to_owned(),
                    state: CheckState::Unknown(why.clone()),
                })
                .collect();
            dependencies.push(DependencyStatus {
                name: dep.name.clone(),
                checks,
            });
            continue;
        }
        let checks = dep
            .checks()
            .map(|(kind, target)| CheckResult {
                kind,
                target: target.to_owned(),
                state: match kind {
                    CheckKind::Binary => program_state(host.find_program(target, path)),
                    CheckKind::Module => module_state(host.module(target), kernel.as_deref()),
                    CheckKind::Daemon => match daemons.get_or_insert_with(|| host.daemons()) {
                        Ok(scan) => match scan.running(target) {
                            Some(pid) => CheckState::Present(format!("running as pid {pid}")),
                            None if !scan.complete() => {
                                CheckState::Unknown("the host has more processes than podmortem scans".into())
                            }
                            None => CheckState::Missing(format!("no process named {target} is running")),
                        },
                        Err(e) => CheckState::Unknown(format!("cannot list the host's processes: {e}")),
                    },
                    CheckKind::File => match host.file(target) {
                        Ok(Some(found)) if found == target => CheckState::Present(format!("{target} exists")),
                        Ok(Some(found)) => CheckState::Present(format!("{target} exists ({found})")),
                        Ok(None) => CheckState::Missing(format!("{target} does not exist")),
                        Err(e) => CheckState::Unknown(e.to_string()),
                    },
                },
            })
            .collect();
        dependencies.push(DependencyStatus {
            name: dep.name.clone(),
            checks,
        });
    }
    HostReport {
        at,
        took: started.elapsed(),
        os: if os.pretty_name.is_empty() {
            os.id.clone()
        } else {
            os.pretty_name.clone()
        },
        family,
        kernel,
        dependencies,
    }
}

/// A program lookup as a check outcome.
pub fn program_state(lookup: Result<ProgramLookup, HostError>) -> CheckState {
    match lookup {
        Ok(ProgramLookup::Found { path, target }) if path == target => CheckState::Present(path),
        Ok(ProgramLookup::Found { path, target }) => CheckState::Present(format!("{path} -> {target}")),
        Ok(ProgramLookup::NotExecutable { path, kind }) => {
            CheckState::Missing(format!("{path} exists but is not an executable file ({kind:?})"))
        }
        Ok(ProgramLookup::Missing { searched }) => {
            CheckState::Missing(format!("not found in {}", searched_dirs(&searched)))
        }
        Err(e) => CheckState::Unknown(e.to_string()),
    }
}

fn module_state(state: Result<ModuleState, HostError>, kernel: Option<&str>) -> CheckState {
    let kernel = kernel.unwrap_or("the running kernel");
    match state {
        Ok(ModuleState::Loaded) => CheckState::Present("loaded".into()),
        Ok(ModuleState::Builtin) => CheckState::Present(format!("built into {kernel}")),
        Ok(ModuleState::Available { path }) => CheckState::Present(format!("available to load ({path})")),
        Ok(ModuleState::Missing) => CheckState::Missing(format!(
            "not loaded, not built in, not among the modules of {kernel}"
        )),
        Ok(ModuleState::Unknown { reason }) => CheckState::Unknown(reason),
        Err(e) => CheckState::Unknown(e.to_string()),
    }
}

/// The host dependency check task.
#[derive(Debug)]
pub struct HostDepsSource {
    host: HostView,
    config: HostDepsConfig,
    catalogue: Arc<Catalogue>,
}

impl HostDepsSource {
    /// A check of `catalogue`'s dependencies on the host at `host`.
    pub fn new(host: HostView, config: HostDepsConfig, catalogue: Arc<Catalogue>) -> Self {
        HostDepsSource {
            host,
            config,
            catalogue,
        }
    }

    /// Checks at once, then every interval, until `shutdown` or until the engine stops
    /// listening.
    pub async fn run(self, out: mpsc::Sender<SourceEvent>, shutdown: CancellationToken) {
        if !self.config.enabled {
            tracing::info!("host dependency check disabled");
            shutdown.cancelled().await;
            return;
        }
        let mut interval = tokio::time::interval(self.config.interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut first = true;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            let (host, path, catalogue) = (
                self.host.clone(),
                self.config.path.clone(),
                Arc::clone(&self.catalogue),
            );
            let report = match tokio::task::spawn_blocking(move || {
                check(&host, &path, catalogue.dependencies())
            })
            .await
            {
                Ok(report) => report,
                Err(error) => {
                    tracing::error!(%error, "host dependency check failed");
                    continue;
                }
            };
            if first {
                let missing: Vec<&str> = report
                    .dependencies
                    .iter()
                    .filter(|d| d.is_missing())
                    .map(|d| d.name.as_str())
                    .collect();
                tracing::info!(
                    os = %report.os,
                    took_ms = report.took.as_secs_f64() * 1000.0,
                    checked = report.dependencies.len(),
                    ?missing,
                    "host dependencies checked"
                );
                first = false;
            }
            if out.send(SourceEvent::HostDeps(Arc::new(report))).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::CatalogueEntries;

    fn shipped() -> Catalogue {
        Catalogue::build(CatalogueMode::Extend, &CatalogueEntries::default()).expect("catalogue")
    }

    #[test]
    fn an_empty_or_absent_host_root_claims_nothing_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = vec!["/usr/sbin".to_owned()];
        for root in [dir.path().to_owned(), dir.path().join("absent")] {
            let report = check(&HostView::new(&root), &path, shipped().dependencies());
            assert!(!report.dependencies.is_empty());
            for dep in &report.dependencies {
                assert!(
                    matches!(dep.state(), CheckState::Unknown(ref why) if why.contains("is it mounted?")),
                    "{dep:?}"
                );
            }
        }
    }

    #[test]
    fn a_host_root_with_a_filesystem_is_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        for d in ["etc", "usr/sbin"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        let report = check(
            &HostView::new(dir.path()),
            &["/usr/sbin".to_owned()],
            shipped().dependencies(),
        );
        let iscsiadm = report.status("iscsiadm").expect("checked");
        assert_eq!(
            iscsiadm.state(),
            CheckState::Missing("not found in /usr/sbin".into())
        );
    }
}
