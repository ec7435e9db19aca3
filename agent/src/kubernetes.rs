//! The Kubernetes API client: in-cluster (service account) or from a kubeconfig. Without
//! either, the Kubernetes sinks and the pod watch are off, and the agent says so once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::export::kube_events::EventSink;
use crate::export::node_conditions::ConditionSink;
use crate::export::Sink;
use crate::telemetry::Telemetry;

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

/// Why the Kubernetes API client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig named in the config file cannot be read or used.
    #[error("kubernetes.kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// `mode: on`, and neither a kubeconfig nor an in-cluster service account is usable.
    #[error("kubernetes.mode is on but no Kubernetes credentials are usable (in-cluster service account or kubeconfig): {0}")]
    NoCredentials(String),
    /// The client could not be built from credentials that were found.
    #[error("cannot make a Kubernetes client for {server}: {source}")]
    Client {
        /// The API server's URL.
        server: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
}

/// Whether credentials are there to be tried: `$KUBECONFIG`, `~/.kube/config`, or the
/// in-cluster service account's environment. `env` reads an environment variable.
fn credentials_present(env: impl Fn(&str) -> Option<String>, exists: impl Fn(&Path) -> bool) -> bool {
    let set = |name: &str| env(name).is_some_and(|v| !v.is_empty());
    set("KUBECONFIG")
        || (set("KUBERNETES_SERVICE_HOST") && set("KUBERNETES_SERVICE_PORT"))
        || env("HOME").is_some_and(|home| !home.is_empty() && exists(&Path::new(&home).join(".kube/config")))
}

/// The Kubernetes API client `config` asks for: `None` when the mode is off, or when it is
/// `auto` and no credentials are found (said once in the log). An explicit `kubeconfig` must
/// be usable; `mode: on` without credentials is an error.
pub async fn connect(config: &KubernetesConfig) -> Result<Option<kube::Client>, KubeError> {
    const OFF: &str = "Events, node conditions and the pod watch are off";
    if config.mode == KubeMode::Off {
        tracing::info!("kubernetes.mode is off: {OFF}");
        return Ok(None);
    }
    let kube_config = match &config.kubeconfig {
        Some(path) => {
            let kubeconfig = |source| KubeError::Kubeconfig {
                path: path.clone(),
                source,
            };
            let file = kube::config::Kubeconfig::read_from(path).map_err(kubeconfig)?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(kubeconfig)?
        }
        None => {
            let present = credentials_present(|k| std::env::var(k).ok(), Path::exists);
            if config.mode == KubeMode::Auto && !present {
                tracing::info!("no Kubernetes credentials (in-cluster service account or kubeconfig): {OFF}");
                return Ok(None);
            }
            match kube::Config::infer().await {
                Ok(c) => c,
                Err(error) if config.mode == KubeMode::Auto => {
                    tracing::warn!(%error, "Kubernetes credentials found but unusable: {OFF}");
                    return Ok(None);
                }
                Err(error) => return Err(KubeError::NoCredentials(error.to_string())),
            }
        }
    };
    let server = kube_config.cluster_url.to_string();
    let client = kube::Client::try_from(kube_config).map_err(|source| KubeError::Client {
        server: server.clone(),
        source,
    })?;
    tracing::info!(%server, "using the Kubernetes API");
    Ok(Some(client))
}

/// The Kubernetes sinks `config` turns on, for findings on `node`. Call from inside the
/// runtime: each sink spawns the task that talks to the API.
pub fn sinks(
    client: &kube::Client,
    node: &str,
    config: &KubernetesConfig,
    unchecked: &[&str],
    telemetry: &Arc<Telemetry>,
) -> Vec<Box<dyn Sink>> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if config.events {
        sinks.push(Box::new(EventSink::start(
            client.clone(),
            node,
            config,
            Arc::clone(telemetry),
        )));
    }
    if config.conditions {
        sinks.push(Box::new(ConditionSink::start(
            client.clone(),
            node,
            config,
            unchecked,
            Arc::clone(telemetry),
        )));
    }
    sinks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_looked_for_where_clients_look() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
        };
        let none = |_: &Path| false;
        assert!(!credentials_present(env(&[]), none));
        assert!(!credentials_present(env(&[("KUBECONFIG", "")]), none));
        assert!(credentials_present(env(&[("KUBECONFIG", "/k")]), none));
        assert!(!credentials_present(
            env(&[("KUBERNETES_SERVICE_HOST", "10.0.0.1")]),
            none
        ));
        assert!(credentials_present(
            env(&[
                ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
                ("KUBERNETES_SERVICE_PORT", "443")
            ]),
            none
        ));
        let home_config = |p: &Path| p == Path::new("/root/.kube/config");
        assert!(credentials_present(env(&[("HOME", "/root")]), home_config));
        assert!(!credentials_present(env(&[("HOME", "/home/x")]), home_config));
    }

    #[tokio::test]
    async fn off_is_none_and_an_explicit_kubeconfig_must_be_readable() {
        let off = KubernetesConfig {
            mode: KubeMode::Off,
            kubeconfig: Some(PathBuf::from("/nonexistent")),
            ..KubernetesConfig::default()
        };
        assert!(matches!(connect(&off).await, Ok(None)));
        let missing = KubernetesConfig {
            kubeconfig: Some(PathBuf::from("/nonexistent/kubeconfig")),
            ..KubernetesConfig::default()
        };
        let Err(err) = connect(&missing).await else {
            panic!("an unreadable kubeconfig must be an error");
        };
        let err = err.to_string();
        assert!(err.contains("/nonexistent/kubeconfig"), "{err}");
    }

    #[tokio::test]
    async fn a_kubeconfig_with_a_token_makes_a_client() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kubeconfig");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:1\n\
             users:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n\
             current-context: x\n",
        )
        .expect("write");
        let config = KubernetesConfig {
            mode: KubeMode::On,
            kubeconfig: Some(path),
            ..KubernetesConfig::default()
        };
        assert!(matches!(connect(&config).await, Ok(Some(_))));
    }
}
