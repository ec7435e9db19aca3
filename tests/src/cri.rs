//! Creating pods and containers through CRI, the way kubelet does, with the options tests need.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use podmortem_proto::cri::{self, runtime_service_client::RuntimeServiceClient};
use tonic::transport::Channel;

use crate::{err, image, Context, Result};

/// A CRI client for the test bed.
#[derive(Debug, Clone)]
pub struct Cri {
    client: RuntimeServiceClient<Channel>,
    log_root: PathBuf,
}

/// What a test wants of a pod.
#[derive(Debug, Clone)]
pub struct PodSpec {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Uid.
    pub uid: String,
    /// kubelet-style cgroup parent (e.g. `/kubepods/burstable/pod<uid>`), or none.
    pub cgroup_parent: Option<String>,
    /// Share the host's pid namespace (`hostPID: true`).
    pub host_pid: bool,
    /// Allow privileged containers in the pod.
    pub privileged: bool,
}

impl PodSpec {
    /// A pod in `namespace` named `name`, with a fresh uid and kubelet's cgroupfs parent.
    pub fn new(namespace: &str, name: &str) -> PodSpec {
        let uid = format!(
            "{:08x}-e2e0-4000-8000-{:012x}",
            std::process::id(),
            rand_u64() & 0xffff_ffff_ffff
        );
        PodSpec {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            cgroup_parent: Some(format!("/kubepods/burstable/pod{uid}")),
            uid,
            host_pid: false,
            privileged: false,
        }
    }
}

/// Doubles a shell variable until the memory limit stops it.
pub const HOG: &str = "x=a; while :; do x=$x$x; done";
/// The memory limit the hogs run under: reached in about 100 ms.
pub const HOG_LIMIT: i64 = 32 << 20;

/// What a test wants of a container.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    /// Name within the pod.
    pub name: String,
    /// Command (busybox applets are on `PATH`).
    pub command: Vec<String>,
    /// Restart attempt, as kubelet counts it.
    pub attempt: u32,
    /// Memory limit in bytes.
    pub memory_limit: Option<i64>,
    /// Read-only root filesystem.
    pub readonly_rootfs: bool,
    /// Mounts: (host path, container path, read-only).
    pub mounts: Vec<(PathBuf, String, bool)>,
    /// Privileged (all capabilities, host devices); the pod must allow it.
    pub privileged: bool,
}

impl ContainerSpec {
    /// A container named `name` running `sh -c script` under the hogs' memory limit.
    pub fn limited(name: &str, script: &str) -> ContainerSpec {
        ContainerSpec {
            memory_limit: Some(HOG_LIMIT),
            ..ContainerSpec::shell(name, script)
        }
    }

    /// A container named `name` that its memory limit kills: [`HOG`] under [`HOG_LIMIT`].
    pub fn memory_hog(name: &str) -> ContainerSpec {
        ContainerSpec::limited(name, HOG)
    }

    /// A container named `name` running `sh -c script`.
    pub fn shell(name: &str, script: &str) -> ContainerSpec {
        ContainerSpec {
            name: name.to_owned(),
            command: vec!["sh".into(), "-c".into(), script.to_owned()],
            ..ContainerSpec::default()
        }
    }
}

/// A running pod sandbox.
#[derive(Debug, Clone)]
pub struct Pod {
    /// The sandbox id.
    pub id: String,
    /// What it was created from.
    pub spec: PodSpec,
    config: cri::PodSandboxConfig,
}

impl Pod {
    /// The directory of the pod's container logs.
    pub fn log_dir(&self) -> &Path {
        Path::new(&self.config.log_directory)
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The labels kubelet puts on a container of `pod`.
fn container_labels(pod: &Pod, name: &str) -> HashMap<String, String> {
    labels(&[
        ("io.kubernetes.pod.name", &pod.spec.name),
        ("io.kubernetes.pod.namespace", &pod.spec.namespace),
        ("io.kubernetes.pod.uid", &pod.spec.uid),
        ("io.kubernetes.container.name", name),
    ])
}

impl Cri {
    /// Connects to the CRI socket; container logs go below `log_root`.
    pub async fn connect(socket: &Path, log_root: &Path) -> Result<Cri> {
        let channel = containerd_client::connect(socket)
            .await
            .context(format!("cannot connect to {}", socket.display()))?;
        Ok(Cri {
            client: RuntimeServiceClient::new(channel),
            log_root: log_root.to_owned(),
        })
    }

    /// Runs a pod sandbox like kubelet does (labels, log directory, cgroup parent), in the
    /// node's network namespace (no CNI here) and with a shared pid namespace.
    pub async fn run_pod(&self, spec: &PodSpec) -> Result<Pod> {
        let ns = cri::NamespaceOption {
            network: cri::NamespaceMode::Node as i32,
            pid: if spec.host_pid {
                cri::NamespaceMode::Node as i32
            } else {
                cri::NamespaceMode::Pod as i32
            },
            ipc: cri::NamespaceMode::Pod as i32,
            target_id: String::new(),
        };
        let log_dir = self
            .log_root
            .join(format!("{}_{}_{}", spec.namespace, spec.name, spec.uid));
        std::fs::create_dir_all(&log_dir).context("cannot create the pod log directory")?;
        let config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: spec.name.clone(),
                uid: spec.uid.clone(),
                namespace: spec.namespace.clone(),
                attempt: 0,
            }),
            // Must be empty without a private UTS namespace.
            hostname: String::new(),
            log_directory: log_dir.to_string_lossy().into_owned(),
            labels: labels(&[
                ("io.kubernetes.pod.name", &spec.name),
                ("io.kubernetes.pod.namespace", &spec.namespace),
                ("io.kubernetes.pod.uid", &spec.uid),
            ]),
            annotations: HashMap::new(),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: spec.cgroup_parent.clone().unwrap_or_default(),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(ns),
                    privileged: spec.privileged,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        let resp = self
            .client
            .clone()
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .context(format!("RunPodSandbox {}/{}", spec.namespace, spec.name))?;
        Ok(Pod {
            id: resp.into_inner().pod_sandbox_id,
            spec: spec.clone(),
            config,
        })
    }

    /// Creates and starts a container in `pod`; returns its id.
    pub async fn run_container(&self, pod: &Pod, spec: &ContainerSpec) -> Result<String> {
        let id = self.create_container(pod, spec).await?;
        self.client
            .clone()
            .start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .context(format!("StartContainer {}", spec.name))?;
        Ok(id)
    }

    /// Starts a created container.
    pub async fn start(&self, id: &str) -> Result<()> {
        self.client
            .clone()
            .start_container(cri::StartContainerRequest {
                container_id: id.to_owned(),
            })
            .await
            .context(format!("StartContainer {id}"))?;
        Ok(())
    }

    /// Creates (without starting) a container in `pod`; returns its id.
    pub async fn create_container(&self, pod: &Pod, spec: &ContainerSpec) -> Result<String> {
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: spec.name.clone(),
                attempt: spec.attempt,
            }),
            image: Some(cri::ImageSpec {
                image: image::NAME.to_owned(),
                ..Default::default()
            }),
            command: spec.command.clone(),
            log_path: format!("{}/{}.log", spec.name, spec.attempt),
            mounts: spec
                .mounts
                .iter()
                .map(|(host, container, ro)| cri::Mount {
                    container_path: container.clone(),
                    host_path: host.to_string_lossy().into_owned(),
                    readonly: *ro,
                    ..Default::default()
                })
                .collect(),
            linux: Some(cri::LinuxContainerConfig {
                resources: Some(cri::LinuxContainerResources {
                    memory_limit_in_bytes: spec.memory_limit.unwrap_or(0),
                    ..Default::default()
                }),
                security_context: Some(cri::LinuxContainerSecurityContext {
                    readonly_rootfs: spec.readonly_rootfs,
                    privileged: spec.privileged,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        self.create_config(pod, config).await
    }

    /// Creates and starts a container from a full CRI config (as kubelet builds it), in
    /// `pod`'s namespaces; returns its id.
    pub async fn run_container_config(&self, pod: &Pod, config: cri::ContainerConfig) -> Result<String> {
        let id = self.create_config(pod, config).await?;
        self.start(&id).await?;
        Ok(id)
    }

    /// CreateContainer with `config` in `pod`: with kubelet's labels, in the pod's namespaces.
    async fn create_config(&self, pod: &Pod, mut config: cri::ContainerConfig) -> Result<String> {
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        config.labels.extend(container_labels(pod, &name));
        config
            .linux
            .get_or_insert_default()
            .security_context
            .get_or_insert_default()
            .namespace_options = pod
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone());
        let resp = self
            .client
            .clone()
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.id.clone(),
                config: Some(config),
                sandbox_config: Some(pod.config.clone()),
            })
            .await
            .context(format!("CreateContainer {name}"))?;
        Ok(resp.into_inner().container_id)
    }

    /// Stops a container, giving it `timeout` seconds after SIGTERM.
    pub async fn stop(&self, id: &str, timeout: i64) -> Result<()> {
        self.client
            .clone()
            .stop_container(cri::StopContainerRequest {
                container_id: id.to_owned(),
                timeout,
            })
            .await
            .context(format!("StopContainer {id}"))?;
        Ok(())
    }

    async fn status_response(&self, id: &str) -> Result<cri::ContainerStatusResponse> {
        Ok(self
            .client
            .clone()
            .container_status(cri::ContainerStatusRequest {
                container_id: id.to_owned(),
                verbose: true,
            })
            .await
            .context(format!("ContainerStatus {id}"))?
            .into_inner())
    }

    /// The CRI status of a container.
    pub async fn status(&self, id: &str) -> Result<cri::ContainerStatus> {
        self.status_response(id)
            .await?
            .status
            .ok_or_else(|| err(format!("ContainerStatus {id}: no status")))
    }

    /// The host pid of a running container's main process.
    pub async fn pid(&self, id: &str) -> Result<i32> {
        let resp = self.status_response(id).await?;
        let info = resp.info.get("info").ok_or_else(|| err("no verbose info"))?;
        let doc: serde_json::Value = serde_json::from_str(info).context("verbose info")?;
        doc.get("pid")
            .and_then(serde_json::Value::as_i64)
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| err(format!("container {id} has no pid")))
    }

    /// Waits until a container has exited; returns its status.
    pub async fn wait_exited(&self, id: &str, timeout: Duration) -> Result<cri::ContainerStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status = self.status(id).await?;
            if status.state == cri::ContainerState::ContainerExited as i32 {
                return Ok(status);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(err(format!("container {id} did not exit within {timeout:?}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops a pod: its containers are killed (SIGKILL), as kubelet's StopPodSandbox does
    /// after their grace periods.
    pub async fn stop_pod(&self, pod: &Pod) -> Result<()> {
        self.client
            .clone()
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod.id.clone(),
            })
            .await
            .context("StopPodSandbox")?;
        Ok(())
    }

    /// Stops and removes a pod and its containers.
    pub async fn remove_pod(&self, pod: &Pod) -> Result<()> {
        self.stop_pod(pod).await?;
        self.client
            .clone()
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: pod.id.clone(),
            })
            .await
            .context("RemovePodSandbox")?;
        Ok(())
    }
}
