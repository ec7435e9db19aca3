//! The pod watch: the pods scheduled to this node, from the Kubernetes API (list, then watch,
//! with `fieldSelector=spec.nodeName=<node>` so the API server sends no other node's pods).
//! Each pod becomes a [`PodMeta`]: its owner, volumes, containers' mounts, probes and resources,
//! which the runtime does not know. When the API is unreachable the watch retries with backoff
//! and the agent keeps working from the runtime's labels alone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, Pod, Volume};
use kube::api::Api;
use kube::runtime::watcher::{self, watcher, Event};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::model::{ContainerSpecMeta, Owner, PodMeta, PodRef, PodVolume, VolumeMountMeta};
use crate::sources::SourceEvent;
use crate::telemetry::Telemetry;

/// The source's name in metrics.
pub const SOURCE: &str = "pod_watch";

/// Volume types Kubernetes always mounts read-only.
const ALWAYS_READ_ONLY: &[&str] = &["configMap", "secret", "projected", "downwardAPI", "image"];

/// The controlling owner of a pod (`ownerReferences` entry with `controller: true`).
fn owner(pod: &Pod) -> Option<Owner> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| Owner {
            kind: o.kind.clone(),
            name: o.name.clone(),
        })
}

/// A volume of the spec: its type is the one source key it sets, named as in the spec.
fn volume(v: &Volume) -> Option<PodVolume> {
    let json = serde_json::to_value(v).ok()?;
    let (kind, source) = json.as_object()?.iter().find(|(k, _)| k.as_str() != "name")?;
    let read_only = ALWAYS_READ_ONLY.contains(&kind.as_str())
        || source.get("readOnly").and_then(serde_json::Value::as_bool) == Some(true);
    Some(PodVolume {
        name: v.name.clone(),
        kind: kind.clone(),
        csi_driver: v.csi.as_ref().map(|c| c.driver.clone()),
        read_only,
    })
}

fn quantities(
    q: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
) -> BTreeMap<String, String> {
    q.iter()
        .flat_map(|m| m.iter())
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

fn container(c: &Container, init: bool) -> ContainerSpecMeta {
    let probes = [
        ("liveness", c.liveness_probe.is_some()),
        ("readiness", c.readiness_probe.is_some()),
        ("startup", c.startup_probe.is_some()),
    ];
    let resources = c.resources.as_ref();
    ContainerSpecMeta {
        name: c.name.clone(),
        init,
        volume_mounts: c
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| VolumeMountMeta {
                name: m.name.clone(),
                mount_path: m.mount_path.clone(),
                read_only: m.read_only.unwrap_or(false),
                sub_path: m
                    .sub_path
                    .clone()
                    .or_else(|| m.sub_path_expr.clone())
                    .filter(|s| !s.is_empty()),
            })
            .collect(),
        probes: probes
            .iter()
            .filter(|(_, has)| *has)
            .map(|(name, _)| (*name).to_owned())
            .collect(),
        limits: quantities(resources.and_then(|r| r.limits.as_ref())),
        requests: quantities(resources.and_then(|r| r.requests.as_ref())),
        read_only_root_filesystem: c
            .security_context
            .as_ref()
            .and_then(|s| s.read_only_root_filesystem),
    }
}

/// What podmortem keeps of a pod, or `None` when it lacks a namespace, name or uid.
pub fn pod_meta(pod: &Pod) -> Option<PodMeta> {
    let m = &pod.metadata;
    let (namespace, name, uid) = (m.namespace.clone()?, m.name.clone()?, m.uid.clone()?);
    if namespace.is_empty() || name.is_empty() || uid.is_empty() {
        return None;
    }
    let spec = pod.spec.as_ref();
    let init = spec
        .and_then(|s| s.init_containers.as_ref())
        .into_iter()
        .flatten()
        .map(|c| container(c, true));
    let main = spec
        .into_iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| container(c, false));
    Some(PodMeta {
        pod: PodRef { namespace, name, uid },
        owner: owner(pod),
        volumes: spec
            .and_then(|s| s.volumes.as_ref())
            .into_iter()
            .flatten()
            .filter_map(volume)
            .collect(),
        containers: init.chain(main).collect(),
    })
}

/// Watches the pods on one node.
#[derive(Clone)]
pub struct PodWatch {
    client: kube::Client,
    node: String,
    telemetry: Arc<Telemetry>,
    retry_initial: Duration,
    retry_max: Duration,
}

impl std::fmt::Debug for PodWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodWatch")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// What the watch knows, to send only changes and to tell what a relist left out.
#[derive(Debug, Default)]
struct Known {
    pods: HashMap<String, Arc<PodMeta>>,
    /// The uids seen since a (re)list began.
    listing: Option<HashSet<String>>,
}

impl Known {
    /// The events one watch event makes; `None` for a pod that cannot be used.
    fn on(&mut self, event: Event<Pod>) -> Option<Vec<SourceEvent>> {
        match event {
            Event::Init => {
                self.listing = Some(HashSet::new());
                Some(Vec::new())
            }
            Event::InitApply(pod) | Event::Apply(pod) => {
                let meta = pod_meta(&pod)?;
                if let Some(listing) = &mut self.listing {
                    listing.insert(meta.pod.uid.clone());
                }
                if self.pods.get(&meta.pod.uid).is_some_and(|m| **m == meta) {
                    return Some(Vec::new());
                }
                let meta = Arc::new(meta);
                self.pods.insert(meta.pod.uid.clone(), Arc::clone(&meta));
                Some(vec![SourceEvent::PodMeta(meta)])
            }
            Event::Delete(pod) => {
                let uid = pod.metadata.uid.clone()?;
                Some(
                    self.pods
                        .remove(&uid)
                        .map(|_| SourceEvent::PodMetaDeleted(uid))
                        .into_iter()
                        .collect(),
                )
            }
            Event::InitDone => {
                let listed = self.listing.take().unwrap_or_default();
                let gone: Vec<String> = self
                    .pods
                    .keys()
                    .filter(|uid| !listed.contains(*uid))
                    .cloned()
                    .collect();
                Some(
                    gone.into_iter()
                        .map(|uid| {
                            self.pods.remove(&uid);
                            SourceEvent::PodMetaDeleted(uid)
                        })
                        .collect(),
                )
            }
        }
    }
}

impl PodWatch {
    /// A watch of the pods on `node`.
    pub fn new(client: kube::Client, node: &str) -> Self {
        PodWatch {
            client,
            node: node.to_owned(),
            telemetry: Telemetry::new(),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
        }
    }

    /// Counts pods it cannot use in `telemetry`.
    pub fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Sends the node's pods, then their changes, until `shutdown`.
    pub async fn run(self, out: mpsc::Sender<SourceEvent>, shutdown: CancellationToken) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let config = watcher::Config::default().fields(&format!("spec.nodeName={}", self.node));
        let mut stream = watcher(api, config).boxed();
        let mut backoff = Backoff::new(self.retry_initial, self.retry_max);
        let mut known = Known::default();
        let mut failing = false;
        tracing::info!(node = %self.node, "watching the node's pods in the Kubernetes API");
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return,
                next = stream.next() => next,
            };
            let event = match next {
                Some(Ok(event)) => event,
                Some(Err(error)) => {
                    if failing {
                        tracing::debug!(%error, "pod watch still failing");
                    } else {
                        tracing::warn!(%error, "the pod watch cannot reach the Kubernetes API: findings carry the runtime's labels only until it can; retrying with backoff");
                        failing = true;
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                    continue;
                }
                None => {
                    tracing::warn!("the pod watch ended; it stops");
                    shutdown.cancelled().await;
                    return;
                }
            };
            // The watcher announces a (re)list before making it: only what it got proves the
            // API reachable.
            if !matches!(event, Event::Init) {
                if failing {
                    tracing::info!("the pod watch reaches the Kubernetes API again");
                    failing = false;
                }
                backoff.reset();
            }
            let Some(events) = known.on(event) else {
                self.telemetry.parse_error(SOURCE);
                tracing::debug!("a pod without namespace, name or uid: skipped");
                continue;
            };
            for event in events {
                if out.send(event).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "pods_tests.rs"]
mod tests;
