//! The DaemonSet in a box: `deploy/` rendered by kustomize, and its pod template turned into the
//! CRI calls kubelet makes for it, so that the real image runs on the test bed's containerd with
//! exactly the manifest's mounts, capabilities, security settings, resources and environment.
//!
//! The translation is strict: a field of the pod template it does not know fails the test, so a
//! manifest change cannot slip past it untranslated. What the test bed cannot do like a node is
//! said in [`Translated::notes`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, PodSpec as K8sPodSpec, Volume};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use podmortem_proto::cri;
use serde_json::Value;

use crate::{err, Context, Result};

/// `deploy/`, rendered.
#[derive(Debug)]
pub struct Rendered {
    /// The agent's DaemonSet.
    pub daemonset: DaemonSet,
    /// The ConfigMaps (generated names, with their hash suffix).
    pub config_maps: Vec<ConfigMap>,
}

/// Renders `deploy/` with the pinned kustomize that `make tools` installs.
pub fn render() -> Result<Rendered> {
    let kustomize = crate::target_dir().join("tools/kustomize");
    if !kustomize.is_file() {
        return Err(err(format!(
            "{} is missing: run `make tools` (done by `make test`)",
            kustomize.display()
        )));
    }
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let out = Command::new(&kustomize)
        .arg("build")
        .arg(&deploy)
        .output()
        .context(format!("cannot run {}", kustomize.display()))?;
    if !out.status.success() {
        return Err(err(format!(
            "kustomize build {} failed: {}",
            deploy.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let text = String::from_utf8(out.stdout).context("kustomize's output is not UTF-8")?;
    parse_rendered(&text)
}

/// Splits a multi-document YAML stream into objects, and picks the DaemonSet and ConfigMaps.
fn parse_rendered(text: &str) -> Result<Rendered> {
    let mut objects = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let value: Value = serde::Deserialize::deserialize(doc).context("rendered YAML")?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    fn of_kind<'a>(objects: &'a [Value], kind: &'static str) -> impl Iterator<Item = &'a Value> {
        objects.iter().filter(move |o| o["kind"] == kind)
    }
    let mut daemonsets = of_kind(&objects, "DaemonSet");
    let daemonset = daemonsets
        .next()
        .ok_or_else(|| err("deploy/ renders no DaemonSet"))?;
    if daemonsets.next().is_some() {
        return Err(err("deploy/ renders more than one DaemonSet"));
    }
    let daemonset: DaemonSet = serde_json::from_value(daemonset.clone()).context("the DaemonSet")?;
    let config_maps = of_kind(&objects, "ConfigMap")
        .map(|o| serde_json::from_value(o.clone()).context("a ConfigMap"))
        .collect::<Result<Vec<ConfigMap>>>()?;
    Ok(Rendered {
        daemonset,
        config_maps,
    })
}

/// The image `make image` saved (an OCI archive of the runtime image).
pub fn image_archive() -> Result<PathBuf> {
    let path = crate::target_dir().join("image/podmortem.oci.tar");
    if path.is_file() {
        Ok(path)
    } else {
        Err(err(format!(
            "{} is missing: run `make image` (done by `make test`)",
            path.display()
        )))
    }
}

/// How the node the manifest describes maps onto the test bed.
#[derive(Debug, Clone)]
pub struct NodeLayout {
    /// `spec.nodeName`.
    pub node_name: String,
    /// Host paths that live elsewhere on the test bed (node path → test bed path); the
    /// longest matching prefix wins, other paths are used as they are.
    pub host_paths: Vec<(PathBuf, PathBuf)>,
    /// Environment values replaced, as an overlay would (e.g. the collector's address).
    pub env_overrides: BTreeMap<String, String>,
    /// Where kubelet's volume files (ConfigMaps) are written.
    pub volumes_dir: PathBuf,
}

impl NodeLayout {
    /// Where `node_path` of the node is on the test bed.
    pub fn host_path(&self, node_path: &str) -> PathBuf {
        let node_path = Path::new(node_path);
        self.host_paths
            .iter()
            .filter_map(|(from, to)| node_path.strip_prefix(from).ok().map(|rest| (from, to, rest)))
            .max_by_key(|(from, _, _)| from.as_os_str().len())
            .map_or_else(
                || node_path.to_owned(),
                |(_, to, rest)| {
                    if rest.as_os_str().is_empty() {
                        to.clone()
                    } else {
                        to.join(rest)
                    }
                },
            )
    }
}

/// An HTTP probe, to be run by the test as kubelet would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpProbe {
    /// Path requested.
    pub path: String,
    /// Port (the container port the probe names).
    pub port: u16,
}

/// The pod template as CRI calls.
#[derive(Debug)]
pub struct Translated {
    /// The container's config, without kubelet's labels and the pod's namespace options (the CRI
    /// client adds them).
    pub container: cri::ContainerConfig,
    /// `livenessProbe`.
    pub liveness: Option<HttpProbe>,
    /// `readinessProbe`.
    pub readiness: Option<HttpProbe>,
    /// How long StopContainer waits (`terminationGracePeriodSeconds`).
    pub stop_timeout: i64,
    /// What differs from a real node, said once.
    pub notes: Vec<String>,
}

const POD_FIELDS: &[&str] = &[
    "containers",
    "serviceAccountName",
    "priorityClassName",
    "tolerations",
    "terminationGracePeriodSeconds",
    "volumes",
];
const CONTAINER_FIELDS: &[&str] = &[
    "name",
    "image",
    "imagePullPolicy",
    "args",
    "command",
    "env",
    "ports",
    "livenessProbe",
    "readinessProbe",
    "resources",
    "securityContext",
    "volumeMounts",
];
const SECURITY_FIELDS: &[&str] = &[
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "privileged",
    "allowPrivilegeEscalation",
    "readOnlyRootFilesystem",
    "seccompProfile",
    "capabilities",
];

/// Fails on a key of `object` that is not in `known`.
fn only_known(what: &str, object: &Value, known: &[&str]) -> Result<()> {
    let unknown: Vec<&String> = object
        .as_object()
        .map(|o| o.keys().filter(|k| !known.contains(&k.as_str())).collect())
        .unwrap_or_default();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(err(format!(
            "the DaemonSet's {what} sets {unknown:?}, which the in-a-box test does not translate into CRI yet"
        )))
    }
}

/// Translates the DaemonSet's pod template for `layout`; writes ConfigMap volumes below
/// `layout.volumes_dir`.
pub fn translate(rendered: &Rendered, layout: &NodeLayout) -> Result<Translated> {
    let template = rendered
        .daemonset
        .spec
        .as_ref()
        .map(|s| &s.template)
        .ok_or_else(|| err("the DaemonSet has no spec"))?;
    let pod: &K8sPodSpec = template
        .spec
        .as_ref()
        .ok_or_else(|| err("the DaemonSet's template has no spec"))?;
    only_known(
        "pod spec",
        &serde_json::to_value(pod).context("pod spec")?,
        POD_FIELDS,
    )?;
    let [container] = pod.containers.as_slice() else {
        return Err(err("the in-a-box test translates exactly one container"));
    };
    only_known(
        "container",
        &serde_json::to_value(container).context("container")?,
        CONTAINER_FIELDS,
    )?;
    let mut notes = vec![
        "no CNI on the test bed: the pod runs in the node's network namespace".to_owned(),
        "no API server: no service account token is mounted, the agent runs without Kubernetes".to_owned(),
    ];
    let volumes = volumes(pod.volumes.as_deref().unwrap_or_default(), rendered, layout)?;
    let mut mounts = Vec::new();
    for m in container.volume_mounts.as_deref().unwrap_or_default() {
        if m.sub_path.is_some() || m.sub_path_expr.is_some() {
            return Err(err(format!("volumeMount {} uses subPath", m.name)));
        }
        let (host_path, forced_ro) = volumes
            .get(&m.name)
            .ok_or_else(|| err(format!("volumeMount {} names no volume", m.name)))?;
        let propagation = match m.mount_propagation.as_deref() {
            None | Some("None") => cri::MountPropagation::PropagationPrivate,
            Some("HostToContainer") => cri::MountPropagation::PropagationHostToContainer,
            Some("Bidirectional") => cri::MountPropagation::PropagationBidirectional,
            Some(other) => return Err(err(format!("mountPropagation {other}"))),
        };
        match m.recursive_read_only.as_deref() {
            None | Some("Disabled") => {}
            // kubelet asks for it only of runtimes that announce it; containerd 1.6 does not.
            Some("IfPossible") => notes.push(format!(
                "{}: recursiveReadOnly IfPossible is a plain read-only mount on containerd 1.6",
                m.mount_path
            )),
            Some(other) => {
                return Err(err(format!(
                    "{}: recursiveReadOnly {other} needs a runtime this test bed does not have",
                    m.mount_path
                )))
            }
        }
        mounts.push(cri::Mount {
            container_path: m.mount_path.clone(),
            host_path: host_path.to_string_lossy().into_owned(),
            readonly: m.read_only.unwrap_or(false) || *forced_ro,
            propagation: propagation as i32,
            ..Default::default()
        });
    }
    let security = security_context(container)?;
    let resources = resources(container, pod.priority_class_name.as_deref())?;
    let ports: HashMap<&str, u16> = container
        .ports
        .iter()
        .flatten()
        .filter_map(|p| Some((p.name.as_deref()?, u16::try_from(p.container_port).ok()?)))
        .collect();
    let probe = |p: Option<&k8s_openapi::api::core::v1::Probe>| -> Result<Option<HttpProbe>> {
        let Some(p) = p else { return Ok(None) };
        let get = p
            .http_get
            .as_ref()
            .ok_or_else(|| err("only httpGet probes are translated"))?;
        let port = match &get.port {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => {
                u16::try_from(*n).context("probe port")?
            }
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(name) => *ports
                .get(name.as_str())
                .ok_or_else(|| err(format!("probe port {name} names no container port")))?,
        };
        Ok(Some(HttpProbe {
            path: get.path.clone().unwrap_or_else(|| "/".into()),
            port,
        }))
    };
    let image = container
        .image
        .clone()
        .ok_or_else(|| err("the container has no image"))?;
    let config = cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: container.name.clone(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image,
            ..Default::default()
        }),
        command: container.command.clone().unwrap_or_default(),
        args: container.args.clone().unwrap_or_default(),
        envs: envs(container.env.as_deref().unwrap_or_default(), layout)?,
        mounts,
        log_path: format!("{}/0.log", container.name),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(resources),
            security_context: Some(security),
        }),
        ..Default::default()
    };
    Ok(Translated {
        container: config,
        liveness: probe(container.liveness_probe.as_ref())?,
        readiness: probe(container.readiness_probe.as_ref())?,
        stop_timeout: pod.termination_grace_period_seconds.unwrap_or(30),
        notes,
    })
}

/// Volume name → (test bed host path, always read-only).
fn volumes(
    volumes: &[Volume],
    rendered: &Rendered,
    layout: &NodeLayout,
) -> Result<HashMap<String, (PathBuf, bool)>> {
    let mut out = HashMap::new();
    for v in volumes {
        let known = ["name", "hostPath", "configMap"];
        only_known(
            &format!("volume {}", v.name),
            &serde_json::to_value(v).context("volume")?,
            &known,
        )?;
        if let Some(hp) = &v.host_path {
            let path = layout.host_path(&hp.path);
            match hp.type_.as_deref().unwrap_or("") {
                "" => {}
                "Directory" if path.is_dir() => {}
                "DirectoryOrCreate" => {
                    std::fs::create_dir_all(&path).context(format!("hostPath {}", path.display()))?;
                }
                other => {
                    return Err(err(format!(
                        "hostPath {} (from {}) is not a {other} here: kubelet would not start the pod",
                        path.display(),
                        hp.path
                    )))
                }
            }
            out.insert(v.name.clone(), (path, false));
        } else if let Some(cm) = &v.config_map {
            let source = rendered
                .config_maps
                .iter()
                .find(|c| c.metadata.name.as_deref() == Some(cm.name.as_str()))
                .ok_or_else(|| {
                    err(format!(
                        "volume {} names ConfigMap {}, not rendered",
                        v.name, cm.name
                    ))
                })?;
            if cm.items.is_some() {
                return Err(err("configMap items are not translated"));
            }
            let dir = layout.volumes_dir.join(&v.name);
            std::fs::create_dir_all(&dir).context(format!("cannot create {}", dir.display()))?;
            for (key, value) in source.data.iter().flatten() {
                std::fs::write(dir.join(key), value).context(format!("cannot write {key}"))?;
            }
            // kubelet mounts ConfigMap volumes read-only, whatever the mount says.
            out.insert(v.name.clone(), (dir, true));
        }
    }
    Ok(out)
}

fn envs(env: &[EnvVar], layout: &NodeLayout) -> Result<Vec<cri::KeyValue>> {
    env.iter()
        .map(|e| {
            let value = if let Some(v) = layout.env_overrides.get(&e.name) {
                v.clone()
            } else if let Some(v) = &e.value {
                if v.contains("$(") {
                    return Err(err(format!(
                        "env {}: $(VAR) references are not expanded here",
                        e.name
                    )));
                }
                v.clone()
            } else {
                let field = e
                    .value_from
                    .as_ref()
                    .and_then(|f| f.field_ref.as_ref())
                    .ok_or_else(|| {
                        err(format!(
                            "env {}: only values and fieldRefs are translated",
                            e.name
                        ))
                    })?;
                match field.field_path.as_str() {
                    "spec.nodeName" => layout.node_name.clone(),
                    other => return Err(err(format!("env {}: fieldRef {other} is not translated", e.name))),
                }
            };
            Ok(cri::KeyValue {
                key: e.name.clone(),
                value,
            })
        })
        .collect()
}

fn security_context(container: &Container) -> Result<cri::LinuxContainerSecurityContext> {
    let Some(sc) = &container.security_context else {
        return Ok(cri::LinuxContainerSecurityContext::default());
    };
    only_known(
        "securityContext",
        &serde_json::to_value(sc).context("securityContext")?,
        SECURITY_FIELDS,
    )?;
    if sc.run_as_non_root == Some(true) && sc.run_as_user == Some(0) {
        return Err(err("runAsNonRoot with runAsUser 0: kubelet refuses to start it"));
    }
    let seccomp = match sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()) {
        None => None,
        Some("RuntimeDefault") => Some(cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        }),
        Some("Unconfined") => Some(cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::Unconfined as i32,
            localhost_ref: String::new(),
        }),
        Some(other) => return Err(err(format!("seccompProfile {other} is not translated"))),
    };
    let caps = sc.capabilities.as_ref();
    Ok(cri::LinuxContainerSecurityContext {
        capabilities: Some(cri::Capability {
            add_capabilities: caps.and_then(|c| c.add.clone()).unwrap_or_default(),
            drop_capabilities: caps.and_then(|c| c.drop.clone()).unwrap_or_default(),
            add_ambient_capabilities: Vec::new(),
        }),
        privileged: sc.privileged.unwrap_or(false),
        run_as_user: sc.run_as_user.map(|value| cri::Int64Value { value }),
        run_as_group: sc.run_as_group.map(|value| cri::Int64Value { value }),
        readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
        // kubelet: no_new_privs unless privilege escalation is allowed (the default).
        no_new_privs: sc.allow_privilege_escalation == Some(false),
        seccomp,
        ..Default::default()
    })
}

/// A Kubernetes quantity in base units (bytes, or millicores with `milli`).
fn quantity(q: &Quantity, milli: bool) -> Result<i64> {
    let s = q.0.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let number: f64 = number.parse().context(format!("quantity {s}"))?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "m" => 0.001,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(err(format!("quantity {s}: suffix {other} is not translated"))),
    };
    let scale = if milli { 1000.0 } else { 1.0 };
    #[allow(clippy::cast_possible_truncation)]
    Ok((number * factor * scale).round() as i64)
}

fn resources(container: &Container, priority_class: Option<&str>) -> Result<cri::LinuxContainerResources> {
    let r = container.resources.as_ref();
    let get = |which: Option<&BTreeMap<String, Quantity>>, key: &str, milli: bool| {
        which
            .and_then(|m| m.get(key))
            .map(|q| quantity(q, milli))
            .transpose()
    };
    let requests = r.and_then(|r| r.requests.as_ref());
    let limits = r.and_then(|r| r.limits.as_ref());
    let mut out = cri::LinuxContainerResources::default();
    // kubelet: shares from the CPU request (at least 2), a CFS quota from the CPU limit.
    if let Some(m) = get(requests, "cpu", true)? {
        out.cpu_shares = (m * 1024 / 1000).max(2);
    }
    if let Some(m) = get(limits, "cpu", true)? {
        out.cpu_period = 100_000;
        out.cpu_quota = m * 100;
    }
    if let Some(b) = get(limits, "memory", false)? {
        out.memory_limit_in_bytes = b;
    }
    // kubelet gives node-critical pods the guaranteed class's OOM score.
    if priority_class == Some("system-node-critical") {
        out.oom_score_adj = -997;
    }
    Ok(out)
}

impl NodeLayout {
    /// The test bed as a node named `node_name`: containerd's socket directory is the test
    /// bed's, the state directory a fresh one below it, and `env_overrides` as an overlay
    /// would set them.
    pub fn for_bed(
        bed: &crate::TestBed,
        node_name: &str,
        env_overrides: BTreeMap<String, String>,
    ) -> NodeLayout {
        let dir = bed.containerd.dir();
        NodeLayout {
            node_name: node_name.to_owned(),
            host_paths: vec![
                ("/run/containerd".into(), dir.to_owned()),
                ("/var/lib/podmortem".into(), dir.join("podmortem-state")),
            ],
            env_overrides,
            volumes_dir: dir.join("kubelet-volumes"),
        }
    }
}

/// The agent's pod, running on the test bed as `deploy/` describes it.
#[derive(Debug)]
pub struct InBox {
    /// The pod sandbox.
    pub pod: crate::cri::Pod,
    /// The agent's container.
    pub container_id: String,
    /// Its CRI log file (findings on stdout, the agent's own log on stderr).
    pub log: PathBuf,
    /// What it was created from.
    pub translated: Translated,
}

/// Imports the image `make image` saved into the test bed's containerd, and runs the
/// DaemonSet's pod there for `layout`.
pub async fn start_in_box(bed: &crate::TestBed, rendered: &Rendered, layout: &NodeLayout) -> Result<InBox> {
    let archive = image_archive()?;
    let path = archive.to_str().ok_or_else(|| err("image path is not UTF-8"))?;
    bed.containerd.ctr(&["images", "import", path])?;
    let translated = translate(rendered, layout)?;
    let namespace = rendered
        .daemonset
        .metadata
        .namespace
        .clone()
        .ok_or_else(|| err("the DaemonSet has no namespace"))?;
    let pod = bed
        .cri
        .run_pod(&crate::cri::PodSpec::new(&namespace, "podmortem-box"))
        .await?;
    let container_id = bed
        .cri
        .run_container_config(&pod, translated.container.clone())
        .await?;
    let log = pod.log_dir().join(&translated.container.log_path);
    Ok(InBox {
        pod,
        container_id,
        log,
        translated,
    })
}

impl InBox {
    /// Runs the readiness probe as kubelet does until it answers 200.
    pub async fn wait_ready(&self, timeout: std::time::Duration) -> Result<()> {
        let probe = self
            .translated
            .readiness
            .as_ref()
            .ok_or_else(|| err("the DaemonSet has no readiness probe"))?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok((200, _)) = get(probe).await {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(err(format!(
                    "{} never answered 200 within {timeout:?}; the agent's log:\n{}",
                    probe.path,
                    self.stderr()
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// The findings the agent printed so far (its stdout, a JSON object a line).
    pub fn findings(&self) -> Vec<Value> {
        findings(&read_log(&self.log))
    }

    /// The agent's own log so far (its stderr).
    pub fn stderr(&self) -> String {
        stderr_text(&read_log(&self.log))
    }

    /// Waits until the agent has printed a finding for which `pred` holds, and returns it.
    pub async fn wait_for_finding(
        &self,
        what: &str,
        timeout: std::time::Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        self.wait(what, timeout, |lines| {
            findings(lines).into_iter().find(|f| pred(f))
        })
        .await
    }

    /// Waits until the agent's own log satisfies `pred`, and returns it.
    pub async fn wait_for_stderr(
        &self,
        what: &str,
        timeout: std::time::Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        self.wait(what, timeout, |lines| {
            Some(stderr_text(lines)).filter(|t| pred(t))
        })
        .await
    }

    /// Reads the container log every 100 ms until `look` finds something in it.
    async fn wait<T>(
        &self,
        what: &str,
        timeout: std::time::Duration,
        look: impl Fn(&[LogLine]) -> Option<T>,
    ) -> Result<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let lines = read_log(&self.log);
            if let Some(found) = look(&lines) {
                return Ok(found);
            }
            if tokio::time::Instant::now() > deadline {
                let log: Vec<String> = lines.iter().map(|l| format!("{} {}", l.stream, l.text)).collect();
                return Err(err(format!(
                    "no {what} in the agent's container log within {timeout:?}; it has:\n{}",
                    log.join("\n")
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// The agent's memory cgroup (v1, else v2): (usage, peak usage) in bytes.
    pub fn cgroup_memory(&self) -> Result<(u64, u64)> {
        let parent = self.pod.spec.cgroup_parent.clone().unwrap_or_default();
        let cgroup = Path::new(parent.trim_start_matches('/')).join(&self.container_id);
        let v1 = Path::new("/sys/fs/cgroup/memory").join(&cgroup);
        let (dir, usage, peak) = if v1.is_dir() {
            (v1, "memory.usage_in_bytes", "memory.max_usage_in_bytes")
        } else {
            let v2 = Path::new("/sys/fs/cgroup").join(&cgroup);
            (v2, "memory.current", "memory.peak")
        };
        let read = |file: &str| -> Result<u64> {
            std::fs::read_to_string(dir.join(file))
                .context(format!("cannot read {}", dir.join(file).display()))?
                .trim()
                .parse()
                .context(file.to_owned())
        };
        Ok((read(usage)?, read(peak)?))
    }
}

/// An HTTP probe's answer (the pod shares the node's network on the test bed).
pub async fn get(probe: &HttpProbe) -> Result<(u16, String)> {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], probe.port));
    crate::http::get(address, &probe.path).await
}

/// The stdout lines of a container log that are JSON: the agent's findings.
fn findings(lines: &[LogLine]) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| l.stream == "stdout")
        .filter_map(|l| serde_json::from_str(&l.text).ok())
        .collect()
}

/// The stderr lines of a container log, joined.
fn stderr_text(lines: &[LogLine]) -> String {
    lines
        .iter()
        .filter(|l| l.stream == "stderr")
        .map(|l| l.text.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// One line of a CRI container log: the stream and the text (partial lines joined).
#[derive(Debug, Clone, PartialEq, Eq)]
struct LogLine {
    /// `stdout` or `stderr`.
    stream: String,
    /// The line's text.
    text: String,
}

/// Reads a CRI container log file (`<time> <stream> <P|F> <text>`), joining partial lines.
fn read_log(path: &Path) -> Vec<LogLine> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut out = Vec::new();
    let mut partial: HashMap<String, String> = HashMap::new();
    for line in text.lines() {
        let mut parts = line.splitn(4, ' ');
        let (Some(_), Some(stream), Some(tag), rest) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let buf = partial.entry(stream.to_owned()).or_default();
        buf.push_str(rest.unwrap_or(""));
        if tag == "F" {
            out.push(LogLine {
                stream: stream.to_owned(),
                text: std::mem::take(buf),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn quantities_in_base_units() {
        let q = |s: &str| Quantity(s.to_owned());
        assert_eq!(quantity(&q("20m"), true).unwrap(), 20);
        assert_eq!(quantity(&q("1"), true).unwrap(), 1000);
        assert_eq!(quantity(&q("0.5"), true).unwrap(), 500);
        assert_eq!(quantity(&q("48Mi"), false).unwrap(), 48 << 20);
        assert_eq!(quantity(&q("1G"), false).unwrap(), 1_000_000_000);
        assert!(quantity(&q("1Ei"), false).is_err());
    }

    #[test]
    fn host_paths_map_by_longest_prefix() {
        let layout = NodeLayout {
            node_name: "n".into(),
            host_paths: vec![
                ("/run/containerd".into(), "/tmp/bed".into()),
                ("/run".into(), "/tmp/run".into()),
            ],
            env_overrides: BTreeMap::new(),
            volumes_dir: "/tmp/v".into(),
        };
        assert_eq!(layout.host_path("/run/containerd"), Path::new("/tmp/bed"));
        assert_eq!(
            layout.host_path("/run/containerd/x.sock"),
            Path::new("/tmp/bed/x.sock")
        );
        assert_eq!(layout.host_path("/run/other"), Path::new("/tmp/run/other"));
        assert_eq!(layout.host_path("/proc"), Path::new("/proc"));
    }

    #[test]
    fn cri_log_lines_join_partials_per_stream() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(
            &path,
            "t stdout P {\"a\":\nt stderr F err\nt stdout F 1}\nbroken\n",
        )
        .unwrap();
        let lines = read_log(&path);
        assert_eq!(
            lines,
            vec![
                LogLine {
                    stream: "stderr".into(),
                    text: "err".into()
                },
                LogLine {
                    stream: "stdout".into(),
                    text: "{\"a\":1}".into()
                },
            ]
        );
    }
}
