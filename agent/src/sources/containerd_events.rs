//! The containerd event source: subscribes to containerd's event stream, decodes the task and
//! container events podmortem cares about, and reconnects with backoff when containerd goes
//! away. Every (re)subscription asks the CRI source for a resync, so an exit that happened while
//! the stream was down is still seen.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use containerd_client::events;
use containerd_client::services::v1::events_client::EventsClient;
use containerd_client::services::v1::SubscribeRequest;
use containerd_client::types::Envelope;
use prost::Message;
use serde::Deserialize;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::sources::cri::CriHandle;
use crate::sources::{system_time_from_proto, ContainerdEvent, SourceEvent};
use crate::telemetry::Telemetry;

/// Settings of the containerd event source (`events:` in the config file).
#[derive(Debug, Clone, serde::Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// The containerd namespace whose events are read; kubelet's pods live in `k8s.io`.
    pub namespace: String,
    /// First wait before subscribing again after the stream broke; doubles on each failure.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Longest wait between subscription attempts.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            namespace: "k8s.io".to_owned(),
            retry_initial: Duration::from_millis(250),
            retry_max: Duration::from_secs(10),
        }
    }
}

/// How long a subscription must stand unrefused before it counts as established.
const SUBSCRIBE_SETTLE: Duration = Duration::from_millis(200);

/// Why an event could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The envelope carried no payload.
    #[error("event on topic {topic} has no payload")]
    Empty {
        /// The topic.
        topic: String,
    },
    /// The payload did not decode as the type it claims.
    #[error("event on topic {topic} does not decode as {type_url}: {source}")]
    Payload {
        /// The topic.
        topic: String,
        /// The payload's type.
        type_url: String,
        /// Why.
        #[source]
        source: prost::DecodeError,
    },
}

/// Decodes one envelope. `Ok(None)` for event types podmortem does not use.
pub fn decode(envelope: &Envelope) -> Result<Option<ContainerdEvent>, DecodeError> {
    let Some(any) = &envelope.event else {
        return Err(DecodeError::Empty {
            topic: envelope.topic.clone(),
        });
    };
    // containerd sends the type URL without the leading `/` (`containerd.events.TaskExit`).
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    let payload = any.value.as_slice();
    let fail = |source| DecodeError::Payload {
        topic: envelope.topic.clone(),
        type_url: any.type_url.clone(),
        source,
    };
    let event = match name {
        "containerd.events.TaskStart" => {
            let e = events::TaskStart::decode(payload).map_err(fail)?;
            ContainerdEvent::TaskStart {
                container_id: e.container_id,
                pid: e.pid,
            }
        }
        "containerd.events.TaskExit" => {
            let e = events::TaskExit::decode(payload).map_err(fail)?;
            ContainerdEvent::TaskExit {
                container_id: e.container_id,
                exec_id: e.id,
                pid: e.pid,
                exit_status: e.exit_status,
                exited_at: e.exited_at.as_ref().and_then(system_time_from_proto),
            }
        }
        "containerd.events.TaskOOM" => {
            let e = events::TaskOom::decode(payload).map_err(fail)?;
            ContainerdEvent::TaskOom {
                container_id: e.container_id,
                at: envelope.timestamp.as_ref().and_then(system_time_from_proto),
            }
        }
        "containerd.events.TaskDelete" => {
            let e = events::TaskDelete::decode(payload).map_err(fail)?;
            ContainerdEvent::TaskDelete {
                container_id: e.container_id,
                pid: e.pid,
                exit_status: e.exit_status,
            }
        }
        "containerd.events.ContainerCreate" => {
            let e = events::ContainerCreate::decode(payload).map_err(fail)?;
            ContainerdEvent::ContainerCreate {
                id: e.id,
                image: e.image,
            }
        }
        "containerd.events.ContainerDelete" => {
            let e = events::ContainerDelete::decode(payload).map_err(fail)?;
            ContainerdEvent::ContainerDelete { id: e.id }
        }
        _ => return Ok(None),
    };
    Ok(Some(event))
}

/// The containerd event source task.
#[derive(Debug)]
pub struct ContainerdEventsSource {
    socket: PathBuf,
    config: EventsConfig,
    cri: CriHandle,
    /// Woken after an OOM: the memory sampler reads now, the kernel log is polled now.
    oom_nudges: Vec<Arc<Notify>>,
    /// Where readiness (`containerd_events`: subscribed) and undecodable events are counted.
    telemetry: Arc<Telemetry>,
}

/// The name under which the event source reports readiness and parse errors.
pub const READY: &str = "containerd_events";

impl ContainerdEventsSource {
    /// A source reading containerd's events on `socket`; `cri` is told to resync on every
    /// (re)subscription and to read a container when one of its tasks starts, exits or OOMs.
    pub fn new(socket: PathBuf, config: EventsConfig, cri: CriHandle) -> Self {
        ContainerdEventsSource {
            socket,
            config,
            cri,
            oom_nudges: Vec::new(),
            telemetry: Telemetry::new(),
        }
    }

    /// Reports readiness and undecodable events in `telemetry`.
    pub fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Also wakes `nudge` whenever containerd reports an OOM (a memory reading, a kernel log
    /// poll); may be called more than once.
    pub fn with_oom_nudge(mut self, nudge: Arc<Notify>) -> Self {
        self.oom_nudges.push(nudge);
        self
    }

    /// Runs until `shutdown` or until the engine stops listening.
    pub async fn run(self, out: mpsc::Sender<SourceEvent>, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(self.config.retry_initial, self.config.retry_max);
        loop {
            let outcome = tokio::select! {
                () = shutdown.cancelled() => return,
                outcome = self.stream_once(&out, &mut backoff) => outcome,
            };
            self.telemetry.set_ready(READY, false);
            match outcome {
                Ok(StreamEnd::EngineGone) => return,
                Ok(StreamEnd::Closed) => {
                    tracing::warn!(socket = %self.socket.display(), "containerd closed the event stream; resubscribing");
                }
                Err(error) => {
                    tracing::warn!(socket = %self.socket.display(), %error, "containerd event stream unavailable; retrying");
                }
            }
            let delay = backoff.next_delay();
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Subscribes once and forwards events until the stream ends.
    async fn stream_once(
        &self,
        out: &mpsc::Sender<SourceEvent>,
        backoff: &mut Backoff,
    ) -> Result<StreamEnd, StreamError> {
        let channel = containerd_client::connect(&self.socket)
            .await
            .map_err(|e| StreamError::Connect(e.to_string()))?;
        let mut client = EventsClient::new(channel);
        let ns = &self.config.namespace;
        let request = SubscribeRequest {
            filters: vec![
                format!("namespace=={ns},topic~=\"^/tasks/\""),
                format!("namespace=={ns},topic~=\"^/containers/\""),
            ],
        };
        // containerd sends the response headers of `Subscribe` only with the first event, so the
        // call cannot be awaited to learn that the subscription is in place. It is once the
        // request has been sent and not refused within a moment.
        let mut call = Box::pin(client.subscribe(request));
        let early = tokio::select! {
            response = &mut call => Some(response),
            () = tokio::time::sleep(SUBSCRIBE_SETTLE) => None,
        };
        if let Some(Err(status)) = &early {
            return Err(StreamError::Subscribe(status.message().to_owned()));
        }
        tracing::info!(socket = %self.socket.display(), namespace = %ns, "subscribed to containerd events");
        backoff.reset();
        self.telemetry.set_ready(READY, true);
        // Whatever happened before this subscription is learnt from a fresh listing.
        self.cri.resync();
        let response = match early {
            Some(response) => response,
            None => call.await,
        };
        let mut stream = response
            .map_err(|s| StreamError::Subscribe(s.message().to_owned()))?
            .into_inner();
        loop {
            let envelope = match stream.message().await {
                Ok(Some(envelope)) => envelope,
                Ok(None) => return Ok(StreamEnd::Closed),
                Err(status) => return Err(StreamError::Stream(status.message().to_owned())),
            };
            let event = match decode(&envelope) {
                Ok(Some(event)) => event,
                Ok(None) => continue,
                Err(error) => {
                    self.telemetry.parse_error(READY);
                    tracing::warn!(%error, "skipping undecodable containerd event");
                    continue;
                }
            };
            tracing::debug!(topic = %envelope.topic, ?event, "containerd event");
            self.nudge_cri(&event);
            if out.send(SourceEvent::Containerd(event)).await.is_err() {
                return Ok(StreamEnd::EngineGone);
            }
        }
    }

    /// Asks CRI for the state that the event changed.
    fn nudge_cri(&self, event: &ContainerdEvent) {
        match event {
            ContainerdEvent::TaskStart { container_id, .. } => self.cri.refresh(container_id, false),
            ContainerdEvent::TaskOom { container_id, .. } => {
                self.cri.refresh(container_id, false);
                for nudge in &self.oom_nudges {
                    nudge.notify_one();
                }
            }
            ContainerdEvent::TaskExit {
                container_id,
                exec_id,
                ..
            } if exec_id.is_empty() || exec_id == container_id => self.cri.refresh(container_id, true),
            _ => {}
        }
    }
}

/// How a subscription ended without an error.
enum StreamEnd {
    /// containerd ended the stream (it is shutting down).
    Closed,
    /// The engine no longer listens: podmortem is stopping.
    EngineGone,
}

/// Why a subscription failed.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("subscribe failed: {0}")]
    Subscribe(String),
    #[error("stream broke: {0}")]
    Stream(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::{Any, Timestamp};

    fn envelope<M: Message>(type_url: &str, msg: &M) -> Envelope {
        Envelope {
            timestamp: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            namespace: "k8s.io".into(),
            topic: "/tasks/exit".into(),
            event: Some(Any {
                type_url: type_url.into(),
                value: msg.encode_to_vec(),
            }),
        }
    }

    #[test]
    fn decodes_task_exit_with_containerds_type_url() {
        let exit = events::TaskExit {
            container_id: "c1".into(),
            id: "c1".into(),
            pid: 77,
            exit_status: 137,
            exited_at: Some(Timestamp {
                seconds: 1_700_000_001,
                nanos: 0,
            }),
        };
        let got = decode(&envelope("containerd.events.TaskExit", &exit))
            .ok()
            .flatten();
        assert_eq!(
            got,
            Some(ContainerdEvent::TaskExit {
                container_id: "c1".into(),
                exec_id: "c1".into(),
                pid: 77,
                exit_status: 137,
                exited_at: Some(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_001)),
            })
        );
        // The same with a conventional type URL.
        let got = decode(&envelope("type.googleapis.com/containerd.events.TaskExit", &exit));
        assert!(matches!(got, Ok(Some(ContainerdEvent::TaskExit { pid: 77, .. }))));
    }

    #[test]
    fn decodes_oom_and_container_delete() {
        let oom = events::TaskOom {
            container_id: "c2".into(),
        };
        assert!(matches!(
            decode(&envelope("containerd.events.TaskOOM", &oom)),
            Ok(Some(ContainerdEvent::TaskOom { container_id, at: Some(_) })) if container_id == "c2"
        ));
        let del = events::ContainerDelete { id: "c3".into() };
        assert_eq!(
            decode(&envelope("containerd.events.ContainerDelete", &del))
                .ok()
                .flatten(),
            Some(ContainerdEvent::ContainerDelete { id: "c3".into() })
        );
    }

    #[test]
    fn unknown_types_are_skipped_and_garbage_is_an_error() {
        let del = events::ContainerDelete { id: "c3".into() };
        assert!(matches!(
            decode(&envelope("containerd.events.ImageCreate", &del)),
            Ok(None)
        ));
        let mut garbage = envelope("containerd.events.TaskExit", &del);
        if let Some(any) = garbage.event.as_mut() {
            any.value = vec![0xff, 0xff, 0xff];
        }
        let err = decode(&garbage).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("/tasks/exit") && err.contains("TaskExit"), "{err}");
        let empty = Envelope {
            event: None,
            topic: "/tasks/oom".into(),
            ..Default::default()
        };
        assert!(matches!(decode(&empty), Err(DecodeError::Empty { .. })));
    }
}
