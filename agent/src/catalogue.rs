//! The catalogue of host dependencies: programs, kernel modules, daemons and files that
//! storage and network add-ons need on the node itself, the packages that provide them per
//! distribution family, and the rules that say which pods need them.
//!
//! A shipped default (`catalogue/default.yaml`) is compiled in; the config file's
//! `host_deps` section extends it (an entry with a shipped entry's name replaces it) or replaces
//! it. [`Catalogue::build`] checks the result: every rule must name known dependencies, every
//! dependency must say what to check.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::model::{ContainerInfo, PodInfo, PodMeta};

/// The shipped catalogue, as YAML.
pub const DEFAULT_YAML: &str = include_str!("catalogue/default.yaml");

/// One thing a node may need. It is present when *any* of its checks passes, so alternatives
/// can be listed (a daemon running, or its socket unit enabled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dependency {
    /// The dependency's name, used by rules and in findings.
    pub name: String,
    /// A program searched on the host's PATH (or a path, when it contains `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
    /// A kernel module: loaded, built in, or available to load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// A process name (`/proc/<pid>/comm`) that must be running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon: Option<String>,
    /// A file (or directory) that must exist on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// What it is for, in a few words.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub why: String,
    /// The package that provides it, by distribution family (`debian`, `rhel`, `suse`, `arch`,
    /// `alpine`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub packages: BTreeMap<String, String>,
    /// What to do besides installing the package (e.g. `systemctl enable --now iscsid`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fix: String,
}

/// One check of a dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// A program on the PATH.
    Binary,
    /// A kernel module.
    Module,
    /// A running process.
    Daemon,
    /// A file.
    File,
}

impl CheckKind {
    /// The kind's name, as in the catalogue.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Binary => "binary",
            CheckKind::Module => "module",
            CheckKind::Daemon => "daemon",
            CheckKind::File => "file",
        }
    }
}

impl Dependency {
    /// The checks it lists, in a fixed order.
    pub fn checks(&self) -> impl Iterator<Item = (CheckKind, &str)> {
        [
            (CheckKind::Binary, &self.binary),
            (CheckKind::Module, &self.module),
            (CheckKind::Daemon, &self.daemon),
            (CheckKind::File, &self.file),
        ]
        .into_iter()
        .filter_map(|(kind, v)| v.as_deref().map(|v| (kind, v)))
    }

    /// The package to install on a host of `family` (see [`family`]), or every known package
    /// with its family when the family is unknown or not listed.
    pub fn package_for(&self, family: Option<&str>) -> Option<String> {
        if let Some(p) = family.and_then(|f| self.packages.get(f)) {
            return Some(p.clone());
        }
        if self.packages.is_empty() {
            return None;
        }
        Some(
            self.packages
                .iter()
                .map(|(family, p)| format!("{p} ({family})"))
                .collect::<Vec<_>>()
                .join(", "),
        )
    }
}

/// Which pods a rule applies to. Any listed matcher that matches is enough.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Matchers {
    /// The rule applies to the node whatever runs on it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub always: bool,
    /// CSI driver names of the pod's volumes; `*.suffix` matches any prefix.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub csi_drivers: Vec<String>,
    /// In-tree volume types of the pod's volumes (`nfs`, `iscsi`, `rbd`, `cephfs`, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volume_types: Vec<String>,
    /// Image repositories (`longhornio/longhorn-manager`), matched with or without a registry,
    /// whatever the tag or digest.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    /// Pod namespaces.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Pod labels that must all be present with these values.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Matchers {
    /// Whether nothing is listed: the rule is checked only when named.
    pub fn is_empty(&self) -> bool {
        !self.always
            && self.csi_drivers.is_empty()
            && self.volume_types.is_empty()
            && self.images.is_empty()
            && self.namespaces.is_empty()
            && self.labels.is_empty()
    }

    /// Why `pod` matches, or `None`.
    pub fn matches(&self, pod: &PodFacts<'_>) -> Option<String> {
        if let Some(ns) = self.namespaces.iter().find(|ns| **ns == pod.namespace) {
            return Some(format!("namespace {ns}"));
        }
        if !self.labels.is_empty()
            && self
                .labels
                .iter()
                .all(|(k, v)| pod.labels.is_some_and(|l| l.get(k) == Some(v)))
        {
            let labels: Vec<String> = self.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            return Some(format!("labels {}", labels.join(",")));
        }
        for image in &pod.images {
            if let Some(want) = self.images.iter().find(|want| image_matches(image, want)) {
                return Some(format!("image {want}"));
            }
        }
        for driver in &pod.csi_drivers {
            if let Some(want) = self.csi_drivers.iter().find(|want| driver_matches(driver, want)) {
                return Some(format!("CSI driver {want}"));
            }
        }
        if let Some(t) = pod
            .volume_types
            .iter()
            .find(|t| self.volume_types.iter().any(|v| v == **t))
        {
            return Some(format!("{t} volume"));
        }
        None
    }
}

/// Whether the image reference `image` (`registry/repo/name:tag@digest`) is of repository
/// `want` (`repo/name`, with or without a registry).
pub fn image_matches(image: &str, want: &str) -> bool {
    let repo = image.split('@').next().unwrap_or(image);
    // A `:` after the last `/` starts the tag; one before it is a registry's port.
    let repo = match repo.rfind(':') {
        Some(i) if !repo[i..].contains('/') => &repo[..i],
        _ => repo,
    };
    let want = want.trim_matches('/');
    !want.is_empty()
        && (repo == want
            || repo
                .strip_suffix(want)
                .is_some_and(|prefix| prefix.ends_with('/')))
}

fn driver_matches(driver: &str, want: &str) -> bool {
    match want.strip_prefix('*') {
        Some(suffix) if suffix.starts_with('.') => driver.ends_with(suffix) && driver.len() > suffix.len(),
        _ => driver == want,
    }
}

/// A rule: pods it matches need the dependencies it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The rule's name (often the add-on's).
    pub name: String,
    /// Names of the dependencies it needs.
    pub needs: Vec<String>,
    /// Which pods it applies to.
    #[serde(default, rename = "match", skip_serializing_if = "Matchers::is_empty")]
    pub matchers: Matchers,
}

/// What is known about a pod for matching rules.
#[derive(Debug, Clone, Default)]
pub struct PodFacts<'a> {
    /// The namespace.
    pub namespace: &'a str,
    /// The pod's labels (kubelet copies them onto the sandbox).
    pub labels: Option<&'a BTreeMap<String, String>>,
    /// Its containers' images.
    pub images: Vec<&'a str>,
    /// CSI drivers of its volumes, when known.
    pub csi_drivers: Vec<&'a str>,
    /// In-tree volume types of its volumes, when known.
    pub volume_types: Vec<&'a str>,
}

impl<'a> PodFacts<'a> {
    /// The facts CRI gives about a sandbox and its containers.
    pub fn from_cri(pod: &'a PodInfo, containers: impl Iterator<Item = &'a ContainerInfo>) -> Self {
        let mut images: Vec<&str> = containers.map(|c| c.image.as_str()).collect();
        images.sort_unstable();
        images.dedup();
        PodFacts {
            namespace: &pod.pod.namespace,
            labels: Some(&pod.labels),
            images,
            csi_drivers: Vec::new(),
            volume_types: Vec::new(),
        }
    }

    /// Adds what the Kubernetes API says of the pod: its volumes' CSI drivers and types.
    pub fn with_meta(mut self, meta: &'a PodMeta) -> Self {
        for v in &meta.volumes {
            if let Some(driver) = v.csi_driver.as_deref() {
                self.csi_drivers.push(driver);
            }
            self.volume_types.push(&v.kind);
        }
        for list in [&mut self.csi_drivers, &mut self.volume_types] {
            list.sort_unstable();
            list.dedup();
        }
        self
    }
}

/// How the config file's entries combine with the shipped catalogue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatalogueMode {
    /// The shipped entries, plus the config file's (which replace shipped ones of the same name).
    #[default]
    Extend,
    /// Only the config file's entries.
    Replace,
}

/// The catalogue file's shape (the shipped one; the config file uses the same two lists).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogueEntries {
    /// Dependencies.
    pub dependencies: Vec<Dependency>,
    /// Rules.
    pub rules: Vec<Rule>,
}

/// A checked catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalogue {
    dependencies: BTreeMap<String, Dependency>,
    rules: Vec<Rule>,
}

/// What is wrong with a catalogue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogueError {
    /// The shipped catalogue does not parse (a build defect).
    #[error("the shipped catalogue is invalid: {0}")]
    Shipped(String),
    /// A rule names a dependency that does not exist.
    #[error(
        "rule `{rule}` needs `{dependency}`, which is not a dependency in the catalogue (known: {known})"
    )]
    UnknownDependency {
        /// The rule.
        rule: String,
        /// The name it gave.
        dependency: String,
        /// The names it could have meant.
        known: String,
    },
    /// A dependency lists nothing to check.
    #[error("dependency `{0}` says nothing to check: give at least one of binary, module, daemon, file")]
    NothingToCheck(String),
    /// A name is empty or used twice.
    #[error("{what} name `{name}` is empty or given twice")]
    BadName {
        /// `dependency` or `rule`.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A rule needs nothing.
    #[error("rule `{0}` needs nothing: list dependencies under `needs`")]
    EmptyRule(String),
}

impl Catalogue {
    /// The shipped catalogue.
    pub fn shipped() -> Result<CatalogueEntries, CatalogueError> {
        serde_yaml_ng::from_str(DEFAULT_YAML).map_err(|e| CatalogueError::Shipped(e.to_string()))
    }

    /// The shipped catalogue combined with `extra` as `mode` says, checked.
    pub fn build(mode: CatalogueMode, extra: &CatalogueEntries) -> Result<Catalogue, CatalogueError> {
        let mut entries = match mode {
            CatalogueMode::Extend => Catalogue::shipped()?,
            CatalogueMode::Replace => CatalogueEntries::default(),
        };
        for (what, names) in [
            (
                "dependency",
                extra.dependencies.iter().map(|d| &d.name).collect::<Vec<_>>(),
            ),
            ("rule", extra.rules.iter().map(|r| &r.name).collect()),
        ] {
            let mut seen = BTreeSet::new();
            if let Some(name) = names
                .into_iter()
                .find(|n| n.trim().is_empty() || !seen.insert(*n))
            {
                return Err(CatalogueError::BadName {
                    what,
                    name: name.clone(),
                });
            }
        }
        for dep in &extra.dependencies {
            entries.dependencies.retain(|d| d.name != dep.name);
            entries.dependencies.push(dep.clone());
        }
        for rule in &extra.rules {
            entries.rules.retain(|r| r.name != rule.name);
            entries.rules.push(rule.clone());
        }
        let mut dependencies = BTreeMap::new();
        for dep in entries.dependencies {
            if dep.checks().next().is_none() {
                return Err(CatalogueError::NothingToCheck(dep.name));
            }
            dependencies.insert(dep.name.clone(), dep);
        }
        for rule in &entries.rules {
            if rule.needs.is_empty() {
                return Err(CatalogueError::EmptyRule(rule.name.clone()));
            }
            if let Some(missing) = rule.needs.iter().find(|n| !dependencies.contains_key(*n)) {
                return Err(CatalogueError::UnknownDependency {
                    rule: rule.name.clone(),
                    dependency: missing.clone(),
                    known: dependencies.keys().cloned().collect::<Vec<_>>().join(", "),
                });
            }
        }
        Ok(Catalogue {
            dependencies,
            rules: entries.rules,
        })
    }

    /// A catalogue with nothing in it.
    pub fn empty() -> Catalogue {
        Catalogue {
            dependencies: BTreeMap::new(),
            rules: Vec::new(),
        }
    }

    /// Every dependency, by name.
    pub fn dependencies(&self) -> impl Iterator<Item = &Dependency> {
        self.dependencies.values()
    }

    /// The dependency named `name`.
    pub fn dependency(&self, name: &str) -> Option<&Dependency> {
        self.dependencies.get(name)
    }

    /// Every rule, in catalogue order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rule named `name`.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// The dependency whose program is `program` (a name, or a path whose file name is it).
    pub fn by_binary(&self, program: &str) -> Option<&Dependency> {
        let name = program.rsplit('/').next().unwrap_or(program);
        self.dependencies
            .values()
            .find(|d| d.binary.as_deref().is_some_and(|b| b == program || b == name))
    }
}

/// The distribution family of a host from its os-release `ID` and `ID_LIKE`: `debian`,
/// `rhel`, `suse`, `arch` or `alpine`; `None` when unknown.
pub fn family<'a>(id: &str, id_like: impl IntoIterator<Item = &'a str>) -> Option<&'static str> {
    let of = |id: &str| match id {
        "debian" | "ubuntu" | "linuxmint" | "pop" | "raspbian" => Some("debian"),
        "rhel" | "centos" | "fedora" | "rocky" | "almalinux" | "ol" | "amzn" | "azurelinux" | "mariner" => {
            Some("rhel")
        }
        "suse" | "sles" | "opensuse" | "opensuse-leap" | "opensuse-tumbleweed" | "sle-micro" => Some("suse"),
        "arch" | "manjaro" => Some("arch"),
        "alpine" => Some("alpine"),
        _ => None,
    };
    of(id).or_else(|| id_like.into_iter().find_map(of))
}

#[cfg(test)]
#[path = "catalogue/tests.rs"]
mod tests;
