//! The node condition sink: node-level findings become conditions on the Node podmortem runs
//! on (`MissingHostDependency`, `HostFilesystemReadOnly`, `NodeOOM`, `OOMRisk`), where
//! `kubectl describe node`, alerting on conditions and remediation controllers see them.
//!
//! Only podmortem's condition types are ever sent, as a strategic merge patch of
//! `nodes/{name}/status` (conditions merge by `type`), so kubelet's own conditions are never
//! touched. The conditions are desired state: they are sent when they change and every
//! [`HEARTBEAT`], and a failed patch is retried with backoff, the latest state winning. At
//! start the Node is read first so that a restart carries podmortem's conditions over (see
//! [`desired`]).

pub mod desired;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Node, NodeCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::mpsc;
use tokio::time::Instant;

use self::desired::{condition_type, Condition, Conditions, Observed};
use super::{ExportError, Sink};
use crate::backoff::Backoff;
use crate::detect::Finding;
use crate::kubernetes::KubernetesConfig;
use crate::telemetry::Telemetry;

/// The sink's name in logs and metrics.
pub const SINK: &str = "node_conditions";
/// The conditions are sent again this often even when nothing changed.
pub const HEARTBEAT: Duration = Duration::from_secs(300);
/// Node-level findings waiting for the task; they are few.
const QUEUE: usize = 256;
/// One API call may take this long.
const API_TIMEOUT: Duration = Duration::from_secs(10);
/// The field manager named in patches.
const FIELD_MANAGER: &str = "podmortem";

/// Why the Node could not be read or patched.
#[derive(Debug, thiserror::Error)]
pub enum ConditionError {
    /// Reading the Node failed.
    #[error("cannot read node {node}: {source}")]
    Get {
        /// The node.
        node: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// Patching its status failed.
    #[error("cannot patch the conditions of node {node}: {source}")]
    Patch {
        /// The node.
        node: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// The API server did not answer in time.
    #[error("no answer about node {node} within {timeout:?}")]
    Timeout {
        /// The node.
        node: String,
        /// How long it waited.
        timeout: Duration,
    },
}

/// Keeps podmortem's conditions on the Node.
pub struct ConditionSink {
    tx: mpsc::Sender<Finding>,
    telemetry: Arc<Telemetry>,
}

impl std::fmt::Debug for ConditionSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConditionSink").finish_non_exhaustive()
    }
}

impl ConditionSink {
    /// Starts the task keeping the conditions of `node` (call from inside the runtime).
    pub fn start(
        client: kube::Client,
        node: &str,
        config: &KubernetesConfig,
        unchecked: &[&str],
        telemetry: Arc<Telemetry>,
    ) -> ConditionSink {
        let (tx, rx) = mpsc::channel(QUEUE);
        telemetry.channel(SINK, &tx);
        let task = Task {
            api: Api::all(client),
            node: node.to_owned(),
            state: Conditions::new(config.condition_settle, config.node_oom_window).without(unchecked),
            telemetry: Arc::clone(&telemetry),
        };
        tokio::spawn(task.run(rx));
        ConditionSink { tx, telemetry }
    }
}

impl Sink for ConditionSink {
    fn name(&self) -> &'static str {
        SINK
    }

    fn export(&mut self, finding: &Finding) -> Result<(), ExportError> {
        if condition_type(finding).is_none() {
            return Ok(());
        }
        match self.tx.try_send(finding.clone()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(f)) => {
                self.telemetry.dropped(SINK, "queue_full", 1);
                tracing::warn!(kind = f.kind.as_str(), fingerprint = %f.fingerprint, "node condition update dropped: too many node findings at once");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.telemetry.dropped(SINK, "stopped", 1),
        }
        Ok(())
    }
}

/// A node condition as the API takes it.
fn node_condition(c: &Condition, now: SystemTime) -> NodeCondition {
    let time = |t: SystemTime| k8s_openapi::jiff::Timestamp::try_from(t).ok().map(Time);
    NodeCondition {
        type_: c.type_.to_owned(),
        status: if c.status { "True" } else { "False" }.to_owned(),
        reason: Some(c.reason.to_owned()),
        message: Some(c.message.clone()),
        last_heartbeat_time: time(now),
        last_transition_time: time(c.last_transition),
    }
}

/// The strategic merge patch setting `conditions` (and nothing else) on a Node's status.
pub fn patch_body(conditions: &[Condition], now: SystemTime) -> serde_json::Value {
    let conditions: Vec<NodeCondition> = conditions.iter().map(|c| node_condition(c, now)).collect();
    serde_json::json!({ "status": { "conditions": conditions } })
}

/// The conditions of a Node as podmortem reads them back.
pub fn observed(node: &Node) -> Vec<Observed> {
    node.status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .map(|c| Observed {
            type_: c.type_.clone(),
            status: c.status.clone(),
            message: c.message.clone().unwrap_or_default(),
            last_transition: c.last_transition_time.as_ref().map(|t| SystemTime::from(t.0)),
        })
        .collect()
}

struct Task {
    api: Api<Node>,
    node: String,
    state: Conditions,
    telemetry: Arc<Telemetry>,
}

impl Task {
    async fn get(&self) -> Result<Node, ConditionError> {
        match tokio::time::timeout(API_TIMEOUT, self.api.get(&self.node)).await {
            Ok(Ok(node)) => Ok(node),
            Ok(Err(source)) => Err(ConditionError::Get {
                node: self.node.clone(),
                source,
            }),
            Err(_) => Err(ConditionError::Timeout {
                node: self.node.clone(),
                timeout: API_TIMEOUT,
            }),
        }
    }

    async fn patch(&self, conditions: &[Condition]) -> Result<(), ConditionError> {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        let patch = Patch::Strategic(patch_body(conditions, SystemTime::now()));
        let call = self.api.patch_status(&self.node, &params, &patch);
        match tokio::time::timeout(API_TIMEOUT, call).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(source)) => Err(ConditionError::Patch {
                node: self.node.clone(),
                source,
            }),
            Err(_) => Err(ConditionError::Timeout {
                node: self.node.clone(),
                timeout: API_TIMEOUT,
            }),
        }
    }

    /// Reads the Node, then keeps its conditions, until the sink is dropped.
    async fn run(mut self, mut rx: mpsc::Receiver<Finding>) {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut restored = false;
        let mut failing = false;
        let mut retry_at: Option<Instant> = None;
        let mut sent: Option<(Vec<Condition>, Instant)> = None;
        // Findings taken since the last successful patch.
        let mut pending = 0u64;
        loop {
            let now = Instant::now();
            let wall = SystemTime::now();
            let change = self
                .state
                .next_change(wall)
                .map(|t| now + t.duration_since(wall).unwrap_or_default());
            let heartbeat = sent.as_ref().map(|(_, at)| *at + HEARTBEAT);
            let wake = [retry_at, change, heartbeat]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(now + HEARTBEAT);
            // Nothing to wait for before the first attempt.
            let wake = if restored || retry_at.is_some() { wake } else { now };
            tokio::select! {
                f = rx.recv() => {
                    let Some(f) = f else { return };
                    pending += u64::from(self.state.apply(&f));
                    while let Ok(f) = rx.try_recv() {
                        pending += u64::from(self.state.apply(&f));
                    }
                }
                () = tokio::time::sleep_until(wake) => {}
            }
            let now = Instant::now();
            if retry_at.is_some_and(|at| at > now) {
                continue;
            }
            retry_at = None;
            let mut result = None;
            if !restored {
                let got = self.get().await.map(|node| {
                    self.state.restore(&observed(&node), SystemTime::now());
                    restored = true;
                });
                result = Some(got);
            }
            if restored {
                // Right after reading the Node too: what was read back is confirmed at once.
                let wanted = self.state.desired(SystemTime::now());
                let due = match &sent {
                    Some((last, at)) => *last != wanted || now >= *at + HEARTBEAT,
                    None => true,
                };
                if due {
                    let done = self.patch(&wanted).await.map(|()| {
                        sent = Some((wanted, Instant::now()));
                        self.telemetry.exported(SINK, std::mem::take(&mut pending));
                    });
                    result = Some(done);
                }
            }
            let Some(result) = result else { continue };
            match result {
                Ok(()) => {
                    if failing {
                        tracing::info!(node = %self.node, "the node's conditions can be read and set again");
                    }
                    failing = false;
                    backoff.reset();
                }
                Err(error) => {
                    self.telemetry.export_failure(SINK);
                    if failing {
                        tracing::debug!(%error, "node conditions still not set");
                    } else {
                        tracing::warn!(%error, "cannot set podmortem's node conditions; retrying with backoff");
                    }
                    failing = true;
                    retry_at = Some(Instant::now() + backoff.next_delay());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_holds_only_conditions_with_second_precision_times() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let c = Condition {
            type_: "HostFilesystemReadOnly",
            status: true,
            reason: desired::DETECTED,
            message: "the node's filesystem on /dev/sda1 is read-only".into(),
            last_transition: at,
        };
        let body = patch_body(&[c], at + Duration::from_millis(61_500));
        assert_eq!(
            body,
            serde_json::json!({"status": {"conditions": [{
                "type": "HostFilesystemReadOnly",
                "status": "True",
                "reason": "PodmortemDetected",
                "message": "the node's filesystem on /dev/sda1 is read-only",
                "lastHeartbeatTime": "2023-11-14T22:14:21Z",
                "lastTransitionTime": "2023-11-14T22:13:20Z",
            }]}})
        );
    }

    #[test]
    fn conditions_are_read_back_from_node_json() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "n1"},
            "status": {"conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady",
                 "lastHeartbeatTime": "2023-11-14T22:13:20Z", "lastTransitionTime": "2023-11-14T22:13:20Z"},
                {"type": "NodeOOM", "status": "True", "message": "m",
                 "lastTransitionTime": "2023-11-14T22:13:21Z"},
            ]}
        }))
        .expect("node");
        let o = observed(&node);
        assert_eq!(o.len(), 2);
        assert_eq!(o[1].type_, "NodeOOM");
        assert_eq!(
            o[1].last_transition,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_001))
        );
    }
}
