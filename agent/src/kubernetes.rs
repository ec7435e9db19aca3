//! The Kubernetes API client: in-cluster (service account) or from a kubeconfig. Without
//! either, the Kubernetes sinks and the pod watch are off, and the agent says so once.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Whether to talk to the Kubernetes API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KubeMode {
    /// When a service account or kubeconfig is found.
    #[default]
    Auto,
    /// Always; the agent fails to start without credentials.
    On,
    /// Never.
    Off,
}

/// Settings of the Kubernetes sinks and the pod watch (`kubernetes:` in the config file).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// Whether to use the API at all.
    pub mode: KubeMode,
    /// A kubeconfig to use instead of `$KUBECONFIG`, `~/.kube/config` or the service account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// Post findings about pods as Events on the pod.
    pub events: bool,
    /// Events posted per second from this node, on average.
    pub events_per_second: f64,
    /// Events that may be posted at once after a quiet spell.
    pub events_burst: u32,
    /// Set node conditions for node-level findings.
    pub conditions: bool,
    /// How long after start conditions read back from the Node wait to be raised again by a
    /// check before they are set back to False.
    #[serde(with = "humantime_serde")]
    pub condition_settle: Duration,
    /// How long the `NodeOOM` condition stays True after the kernel's last node-wide OOM kill.
    #[serde(with = "humantime_serde")]
    pub node_oom_window: Duration,
    /// Watch the pods on this node for owner, volumes, probes and limits.
    pub pod_watch: bool,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            mode: KubeMode::Auto,
            kubeconfig: None,
            events: true,
            events_per_second: 1.0,
            events_burst: 25,
            conditions: true,
            condition_settle: Duration::from_secs(120),
            node_oom_window: Duration::from_secs(600),
            pod_watch: true,
        }
    }
}
