//! The Kubernetes Event sink: each finding about a container becomes an Event on its Pod
//! (`events.k8s.io/v1`), where `kubectl describe pod` and `kubectl events` show it next to
//! kubelet's own. Repeats of a finding on the same container are one Event whose `series`
//! counts them, as kubelet does, through kube's [`Recorder`].
//!
//! The API server is protected by a token bucket per node (`events_per_second`,
//! `events_burst`): Events beyond the burst wait for a token in a bounded queue. What does not
//! fit in the queue is dropped (`queue_full`), and so is an Event that would have waited longer
//! than [`MAX_DELAY`] (`rate_limited`): a late Event misleads more than a missing one, and the
//! finding still went to every other sink. Drops are counted and logged at most every 10 s.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{ExportError, Sink};
use crate::detect::{Finding, Severity, Subject};
use crate::kubernetes::KubernetesConfig;
use crate::telemetry::Telemetry;

/// The sink's name in logs and metrics.
pub const SINK: &str = "kubernetes_events";
/// The reporting controller named in every Event.
pub const CONTROLLER: &str = "podmortem";
/// The Event's action: podmortem diagnosed the failure; it did not act on the pod.
pub const ACTION: &str = "Diagnosed";
/// How many Events may wait for a token.
pub const QUEUE: usize = 256;
/// The longest an Event may wait for a token before it is dropped as `rate_limited`.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// The API server takes at most this many bytes of note.
pub const MAX_NOTE: usize = 1024;
/// One post may take this long.
const API_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at one Event when the API server is unreachable or overloaded.
const ATTEMPTS: u32 = 3;
/// Drops and API errors are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// At most this many pieces of evidence are quoted in a note.
const NOTE_EVIDENCE: usize = 3;

/// Why an Event could not be posted.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The API server answered with an error, or could not be reached.
    #[error("cannot post the Event on pod {namespace}/{pod}: {source}")]
    Api {
        /// The pod's namespace.
        namespace: String,
        /// The pod's name.
        pod: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// The API server did not answer in time.
    #[error("cannot post the Event on pod {namespace}/{pod}: no answer within {timeout:?}")]
    Timeout {
        /// The pod's namespace.
        namespace: String,
        /// The pod's name.
        pod: String,
        /// How long it waited.
        timeout: Duration,
    },
}

impl EventError {
    /// Whether another attempt may succeed: the server was unreachable, slow, overloaded or
    /// failing, not refusing the Event.
    fn transient(&self) -> bool {
        match self {
            EventError::Timeout { .. } => true,
            EventError::Api {
                source: kube::Error::Api(status),
                ..
            } => status.code == 429 || status.code >= 500,
            EventError::Api { .. } => true,
        }
    }
}

/// A token bucket: `burst` tokens at most, refilled at `rate` per second.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`. A rate below one per day counts as one per day; a burst below
    /// one as one.
    pub fn new(rate: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: if rate.is_finite() {
                rate.max(1.0 / 86_400.0)
            } else {
                1.0
            },
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes a token at `now`, or says how long until one is there.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = self.last.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// The Event's note: the summary, then the key evidence, cut to [`MAX_NOTE`] bytes on a
/// character boundary (ending in `…` when cut).
pub fn note(f: &Finding) -> String {
    let mut note = f.summary.trim_end_matches('.').to_owned();
    let evidence: Vec<&str> = f
        .evidence
        .iter()
        .map(|e| e.message.trim())
        .filter(|m| !m.is_empty())
        .take(NOTE_EVIDENCE)
        .collect();
    if !evidence.is_empty() {
        note.push_str(". Evidence: ");
        note.push_str(&evidence.join("; "));
    }
    crate::text::cut_marked(note, MAX_NOTE)
}

/// The Pod (and container, as kubelet names it) a finding is about, or `None` for a finding
/// that is not about a pod the API can know.
pub fn regarding(f: &Finding) -> Option<ObjectReference> {
    let Subject::Container {
        namespace,
        pod,
        pod_uid,
        container,
        ..
    } = &f.subject
    else {
        return None;
    };
    if namespace.is_empty() || pod.is_empty() || pod_uid.is_empty() {
        return None;
    }
    Some(ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("Pod".to_owned()),
        namespace: Some(namespace.clone()),
        name: Some(pod.clone()),
        uid: Some(pod_uid.clone()),
        // Kubelet's own container Events say which container; repeats aggregate per container.
        field_path: (!container.is_empty()).then(|| format!("spec.containers{{{container}}}")),
        resource_version: None,
    })
}

/// The Event posted for a finding.
fn event(f: &Finding) -> Event {
    Event {
        type_: match f.severity {
            Severity::Info => EventType::Normal,
            Severity::Warning | Severity::Critical => EventType::Warning,
        },
        reason: f.kind.as_str().to_owned(),
        note: Some(note(f)),
        action: ACTION.to_owned(),
        secondary: None,
    }
}

/// Logs something at most every [`LOG_EVERY`], counting what it did not log.
#[derive(Debug, Default)]
struct EveryTen {
    last: Option<Instant>,
    suppressed: u64,
}

impl EveryTen {
    /// Whether to log now, and how many were not logged since the last time.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < LOG_EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Counts and logs drops, shared by the sink and its task.
#[derive(Debug, Clone)]
struct Drops {
    telemetry: Arc<Telemetry>,
    log: Arc<Mutex<EveryTen>>,
}

impl Drops {
    fn drop(&self, reason: &'static str, req: &Request) {
        self.telemetry.dropped(SINK, reason, 1);
        let allowed = self
            .log
            .lock()
            .map(|mut l| l.allow(Instant::now()))
            .unwrap_or(None);
        if let Some(suppressed) = allowed {
            tracing::warn!(
                reason,
                namespace = %req.namespace,
                pod = %req.pod,
                kind = %req.event.reason,
                also_dropped = suppressed,
                "Kubernetes Event dropped to protect the API server (the finding went to the other sinks)"
            );
        }
    }
}

/// One Event waiting to be posted.
struct Request {
    reference: ObjectReference,
    event: Event,
    namespace: String,
    pod: String,
    queued: Instant,
}

/// Posts findings about containers as Events on their Pods.
pub struct EventSink {
    tx: mpsc::Sender<Request>,
    drops: Drops,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink").finish_non_exhaustive()
    }
}

impl EventSink {
    /// Starts the task posting Events for `node` (call from inside the runtime).
    pub fn start(
        client: kube::Client,
        node: &str,
        config: &KubernetesConfig,
        telemetry: Arc<Telemetry>,
    ) -> EventSink {
        let (tx, rx) = mpsc::channel(QUEUE);
        telemetry.channel(SINK, &tx);
        let drops = Drops {
            telemetry,
            log: Arc::default(),
        };
        let recorder = Recorder::new(
            client,
            Reporter {
                controller: CONTROLLER.to_owned(),
                instance: Some(node.to_owned()),
            },
        );
        let bucket = TokenBucket::new(config.events_per_second, config.events_burst, Instant::now());
        tokio::spawn(deliver(rx, recorder, bucket, drops.clone()));
        EventSink { tx, drops }
    }
}

impl Sink for EventSink {
    fn name(&self) -> &'static str {
        SINK
    }

    fn export(&mut self, finding: &Finding) -> Result<(), ExportError> {
        if finding.resolved {
            return Ok(());
        }
        let Some(reference) = regarding(finding) else {
            if matches!(finding.subject, Subject::Container { .. }) {
                // A container not created by kubelet: no Pod to post on.
                self.drops.telemetry.dropped(SINK, "no_pod", 1);
            }
            return Ok(());
        };
        let req = Request {
            namespace: reference.namespace.clone().unwrap_or_default(),
            pod: reference.name.clone().unwrap_or_default(),
            reference,
            event: event(finding),
            queued: Instant::now(),
        };
        match self.tx.try_send(req) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(req)) => self.drops.drop("queue_full", &req),
            Err(mpsc::error::TrySendError::Closed(req)) => self.drops.drop("stopped", &req),
        }
        Ok(())
    }
}

/// Posts queued Events as tokens allow, until the sink is dropped.
async fn deliver(mut rx: mpsc::Receiver<Request>, recorder: Recorder, mut bucket: TokenBucket, drops: Drops) {
    let mut errors = EveryTen::default();
    'next: while let Some(req) = rx.recv().await {
        loop {
            let now = Instant::now();
            match bucket.take(now) {
                Ok(()) => break,
                Err(wait) if (now + wait).saturating_duration_since(req.queued) > MAX_DELAY => {
                    drops.drop("rate_limited", &req);
                    continue 'next;
                }
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
        for attempt in 1..=ATTEMPTS {
            match post(&recorder, &req).await {
                Ok(()) => {
                    drops.telemetry.exported(SINK, 1);
                    break;
                }
                Err(error) => {
                    drops.telemetry.export_failure(SINK);
                    let last = attempt == ATTEMPTS || !error.transient();
                    if let Some(suppressed) = errors.allow(Instant::now()) {
                        tracing::warn!(
                            namespace = %req.namespace,
                            pod = %req.pod,
                            kind = %req.event.reason,
                            attempt,
                            gives_up = last,
                            also_failed = suppressed,
                            %error,
                            "Kubernetes Event not posted"
                        );
                    }
                    if last {
                        let reason = if error.transient() {
                            "unreachable"
                        } else {
                            "rejected"
                        };
                        drops.telemetry.dropped(SINK, reason, 1);
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
                }
            }
        }
    }
}

async fn post(recorder: &Recorder, req: &Request) -> Result<(), EventError> {
    match tokio::time::timeout(API_TIMEOUT, recorder.publish(&req.event, &req.reference)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(EventError::Api {
            namespace: req.namespace.clone(),
            pod: req.pod.clone(),
            source,
        }),
        Err(_) => Err(EventError::Timeout {
            namespace: req.namespace.clone(),
            pod: req.pod.clone(),
            timeout: API_TIMEOUT,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{Evidence, EvidenceSource, FindingKind};
    use std::time::SystemTime;

    fn finding(summary: &str) -> Finding {
        let mut f = Finding::new(
            FindingKind::OomKilled,
            Severity::Critical,
            Subject::Container {
                node: "n1".into(),
                namespace: "shop".into(),
                pod: "web-0".into(),
                pod_uid: "6f1c".into(),
                container: "app".into(),
                container_id: "c1".into(),
                attempt: 0,
            },
            SystemTime::UNIX_EPOCH,
            &["x"],
        );
        f.summary = summary.to_owned();
        f
    }

    #[test]
    fn the_bucket_gives_the_burst_then_one_token_per_interval() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut b = TokenBucket::new(0.5, 2, t0);
        assert_eq!(b.take(at(0)), Ok(()));
        assert_eq!(b.take(at(0)), Ok(()));
        assert_eq!(b.take(at(0)), Err(Duration::from_secs(2)));
        assert_eq!(b.take(at(1000)), Err(Duration::from_secs(1)));
        assert_eq!(b.take(at(2000)), Ok(()));
        // A long quiet spell refills the burst, no more.
        assert_eq!(b.take(at(100_000)), Ok(()));
        assert_eq!(b.take(at(100_000)), Ok(()));
        assert!(b.take(at(100_000)).is_err());
        // A clock read out of order takes nothing back.
        assert!(b.take(at(50_000)).is_err());
    }

    #[test]
    fn nonsense_rates_are_bounded() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0.0, 0, t0);
        assert_eq!(b.take(t0), Ok(()));
        assert_eq!(b.take(t0), Err(Duration::from_secs(86_400)));
        let mut b = TokenBucket::new(f64::NAN, 1, t0);
        assert_eq!(b.take(t0), Ok(()));
        assert_eq!(b.take(t0), Err(Duration::from_secs(1)));
    }

    #[test]
    fn the_note_is_the_summary_and_evidence_cut_on_a_character() {
        let mut f = finding("container app of pod shop/web-0 was OOM-killed.");
        f.evidence.push(Evidence::new(
            EvidenceSource::Kmsg,
            None,
            "Memory cgroup out of memory: Killed process 42 (java)",
        ));
        f.evidence.push(Evidence::new(
            EvidenceSource::Cri,
            None,
            "reason OOMKilled, exit code 137",
        ));
        assert_eq!(
            note(&f),
            "container app of pod shop/web-0 was OOM-killed. Evidence: Memory cgroup out of memory: \
             Killed process 42 (java); reason OOMKilled, exit code 137"
        );
        let long = finding(&"日".repeat(400));
        let n = note(&long);
        assert!(n.len() <= MAX_NOTE, "{}", n.len());
        assert!(n.ends_with("…"));
        assert!(n.trim_end_matches('…').chars().all(|c| c == '日'));
        assert_eq!(note(&finding("short")), "short");
    }

    #[test]
    fn events_regard_the_pod_and_container_kubelet_would() {
        let f = finding("s");
        let r = regarding(&f).expect("a pod");
        assert_eq!(r.api_version.as_deref(), Some("v1"));
        assert_eq!(r.kind.as_deref(), Some("Pod"));
        assert_eq!(r.namespace.as_deref(), Some("shop"));
        assert_eq!(r.name.as_deref(), Some("web-0"));
        assert_eq!(r.uid.as_deref(), Some("6f1c"));
        assert_eq!(r.field_path.as_deref(), Some("spec.containers{app}"));
        let e = event(&f);
        assert_eq!((e.reason.as_str(), e.type_), ("OOMKilled", EventType::Warning));
        let mut node = f.clone();
        node.subject = Subject::Node { node: "n1".into() };
        assert!(regarding(&node).is_none());
        let mut unlabelled = f;
        if let Subject::Container { pod_uid, .. } = &mut unlabelled.subject {
            pod_uid.clear();
        }
        assert!(regarding(&unlabelled).is_none());
    }

    #[test]
    fn drops_are_logged_at_most_every_ten_seconds() {
        let t0 = Instant::now();
        let mut log = EveryTen::default();
        assert_eq!(log.allow(t0), Some(0));
        assert_eq!(log.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(log.allow(t0 + Duration::from_secs(9)), None);
        assert_eq!(log.allow(t0 + Duration::from_secs(10)), Some(2));
    }
}
