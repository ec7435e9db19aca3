//! The CRI source: lists the node's sandboxes and containers over CRI, periodically and on
//! demand, and reads single containers when an event says they changed.

pub mod client;
mod convert;
pub mod post_mortem;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::client::{CriClient, CriError};
use self::post_mortem::{examine_once, PostMortemContext};
use crate::backoff::Backoff;
use crate::model::{ContainerInfo, ContainerState, PodRef};
use crate::sources::{CriSnapshot, SourceEvent};
use crate::telemetry::Telemetry;

/// Settings of the CRI source (`cri:` in the config file).
#[derive(Debug, Clone, serde::Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CriConfig {
    /// How often the full list of sandboxes and containers is read again, even without events.
    #[serde(with = "humantime_serde")]
    pub resync_interval: Duration,
    /// How long one CRI call may take before it counts as failed.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// First wait before trying an unreachable runtime again; doubles on each failure.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Longest wait between tries of an unreachable runtime.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
}

impl Default for CriConfig {
    fn default() -> Self {
        CriConfig {
            resync_interval: Duration::from_secs(30),
            request_timeout: Duration::from_secs(5),
            retry_initial: Duration::from_millis(250),
            retry_max: Duration::from_secs(10),
        }
    }
}

/// A request to read one container now. With `expect_exit`, a container still reported running
/// is read again a few times: the runtime records an exit a moment after publishing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRead {
    /// The container (or, as containerd's events do not tell them apart, a sandbox).
    pub id: String,
    /// Whether an exit was just seen for it.
    pub expect_exit: bool,
}

/// Asks the CRI source for a resync or a single container. Never blocks. Resync requests merge
/// and are never lost; when single reads pile up beyond the channel, the one that does not fit
/// turns into a resync request.
#[derive(Debug, Clone)]
pub struct CriHandle {
    reads: mpsc::Sender<ContainerRead>,
    resync: Arc<Notify>,
}

impl CriHandle {
    /// Asks for a full resync.
    pub fn resync(&self) {
        self.resync.notify_one();
    }

    /// Asks for the current status of one container.
    pub fn refresh(&self, id: &str, expect_exit: bool) {
        let read = ContainerRead {
            id: id.to_owned(),
            expect_exit,
        };
        if self.reads.try_send(read).is_err() {
            tracing::debug!(container_id = id, "CRI source busy; asking for a resync instead");
            self.resync();
        }
    }
}

/// The receiving end of [`CriHandle`].
#[derive(Debug)]
pub struct CriRequests {
    reads: mpsc::Receiver<ContainerRead>,
    resync: Arc<Notify>,
}

/// A handle and its receiver, holding at most `capacity` pending single reads.
pub fn request_channel(capacity: usize) -> (CriHandle, CriRequests) {
    let (tx, rx) = mpsc::channel(capacity);
    let resync = Arc::new(Notify::new());
    (
        CriHandle {
            reads: tx,
            resync: Arc::clone(&resync),
        },
        CriRequests { reads: rx, resync },
    )
}

/// Delays between reads of a container whose exit was published but not yet recorded.
/// containerd's CRI plugin records an exit after it has deleted the task (tens of
/// milliseconds), so the first second is polled finely; about 2.4s in all.
const EXIT_RETRY_DELAYS_MS: [u64; 16] = [
    0, 10, 10, 10, 10, 10, 20, 20, 20, 50, 50, 100, 100, 250, 500, 1000,
];
/// At most this many single-container reads run at once.
const MAX_CONCURRENT_REFRESHES: usize = 16;

/// The name under which the CRI source reports readiness.
pub const READY: &str = "cri";

/// The CRI source task.
#[derive(Debug)]
pub struct CriSource {
    socket: PathBuf,
    config: CriConfig,
    client: Option<CriClient>,
    /// Last status read of each listed container, so a resync only reads the ones that changed.
    cache: HashMap<String, ContainerInfo>,
    refreshes: Arc<Semaphore>,
    post_mortem: Option<Arc<PostMortemContext>>,
    /// Where readiness is reported (`cri`: the last listing succeeded).
    telemetry: Arc<Telemetry>,
}

impl CriSource {
    /// A source for the CRI runtime on `socket`.
    pub fn new(socket: PathBuf, config: CriConfig) -> Self {
        CriSource {
            socket,
            config,
            client: None,
            cache: HashMap::new(),
            refreshes: Arc::new(Semaphore::new(MAX_CONCURRENT_REFRESHES)),
            post_mortem: None,
            telemetry: Telemetry::new(),
        }
    }

    /// Reports readiness in `telemetry`.
    pub fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Examines abnormal exits on the node as they are read (log tail, missing programs).
    pub fn with_post_mortem(mut self, cx: PostMortemContext) -> Self {
        self.post_mortem = Some(Arc::new(cx));
        self
    }

    /// Runs until `shutdown` or until the engine stops listening.
    pub async fn run(
        mut self,
        mut requests: CriRequests,
        out: mpsc::Sender<SourceEvent>,
        shutdown: CancellationToken,
    ) {
        let mut backoff = Backoff::new(self.config.retry_initial, self.config.retry_max);
        let mut next_resync = Instant::now();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(next_resync) => {
                    match self.resync().await {
                        Ok(snapshot) => {
                            self.telemetry.set_ready(READY, true);
                            backoff.reset();
                            next_resync = Instant::now() + self.config.resync_interval;
                            if out.send(SourceEvent::CriSnapshot(snapshot)).await.is_err() {
                                return;
                            }
                        }
                        Err(error) => {
                            self.telemetry.set_ready(READY, false);
                            let retry_in = backoff.next_delay();
                            tracing::warn!(%error, ?retry_in, "CRI resync failed; retrying");
                            next_resync = Instant::now() + retry_in;
                        }
                    }
                }
                () = requests.resync.notified() => next_resync = Instant::now(),
                read = requests.reads.recv() => match read {
                    None => return,
                    Some(read) => match (&self.client, Arc::clone(&self.refreshes).try_acquire_owned()) {
                        (Some(client), Ok(permit)) => {
                            let (client, out) = (client.clone(), out.clone());
                            let post_mortem = self.post_mortem.clone();
                            tokio::spawn(async move {
                                refresh(&client, &read.id, read.expect_exit, post_mortem.as_deref(), &out).await;
                                drop(permit);
                            });
                        }
                        // Not connected, or too many reads in flight: a listing covers it.
                        _ => next_resync = Instant::now(),
                    },
                },
            }
        }
    }

    async fn client(&mut self) -> Result<CriClient, CriError> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        let (client, version) = CriClient::connect(&self.socket, self.config.request_timeout).await?;
        tracing::info!(
            socket = %self.socket.display(),
            runtime = %version.runtime_name,
            version = %version.runtime_version,
            api = %version.api_version,
            "connected to the CRI runtime"
        );
        self.client = Some(client.clone());
        Ok(client)
    }

    /// Lists everything; reads the status of containers that are new or changed state.
    async fn resync(&mut self) -> Result<CriSnapshot, CriError> {
        let client = self.client().await?;
        let taken_at = SystemTime::now();
        let pods = client.list_pods().await?;
        let listed = client.list_containers().await?;
        let pod_refs: HashMap<&str, &PodRef> = pods.iter().map(|p| (p.id.as_str(), &p.pod)).collect();
        let mut containers = Vec::with_capacity(listed.len());
        let mut cache = HashMap::with_capacity(listed.len());
        for listed in listed {
            let state = convert::container_state(listed.state);
            let info = match self.cache.remove(&listed.id) {
                Some(cached) if cached.state == state => Some(cached),
                cached => {
                    let fallback = pod_refs.get(listed.pod_sandbox_id.as_str()).copied().cloned();
                    match client
                        .container_status(
                            &listed.id,
                            Some(&listed.pod_sandbox_id),
                            &fallback.unwrap_or_default(),
                        )
                        .await
                    {
                        Ok(Some(mut info)) => {
                            if let Some(pm) = self.post_mortem.as_deref().filter(|pm| pm.wants(&info)) {
                                info.post_mortem = Some(examine_once(&info, pm, client.channel()).await);
                            }
                            Some(info)
                        }
                        Ok(None) => None,
                        Err(err) if err.is_not_found() => None,
                        // One wedged container must not stop every listing: keep what was
                        // last known of it, and try again next time.
                        Err(error) => {
                            tracing::warn!(%error, container_id = %listed.id, "cannot read container status; keeping its last known status");
                            cached
                        }
                    }
                }
            };
            if let Some(info) = info {
                cache.insert(info.id.clone(), info.clone());
                containers.push(info);
            }
        }
        self.cache = cache;
        Ok(CriSnapshot {
            taken_at,
            pods,
            containers,
        })
    }
}

/// Reads one container (and its sandbox) and sends what it finds.
async fn refresh(
    client: &CriClient,
    id: &str,
    expect_exit: bool,
    post_mortem: Option<&PostMortemContext>,
    out: &mpsc::Sender<SourceEvent>,
) {
    let tries = if expect_exit {
        EXIT_RETRY_DELAYS_MS.len()
    } else {
        1
    };
    for (n, delay) in EXIT_RETRY_DELAYS_MS.iter().take(tries).enumerate() {
        tokio::time::sleep(Duration::from_millis(*delay)).await;
        let mut info = match client.container_status(id, None, &PodRef::default()).await {
            Ok(Some(info)) => info,
            Ok(None) => return,
            // Sandboxes have tasks too, but are not containers to CRI: say what it is, so its
            // pause process's exit is not taken for a crash. Removed containers are covered by
            // the next resync.
            Err(err) if err.is_not_found() => {
                if let Ok(Some(pod)) = client.pod_status(id).await {
                    let _closed = out.send(SourceEvent::CriPod(pod)).await;
                }
                return;
            }
            Err(error) => {
                tracing::warn!(%error, container_id = id, "cannot read container status");
                return;
            }
        };
        if expect_exit && info.state == ContainerState::Running && n + 1 < tries {
            continue;
        }
        tracing::debug!(container_id = id, reads = n + 1, state = ?info.state, "container status read");
        if let Some(pm) = post_mortem.filter(|pm| pm.wants(&info)) {
            info.post_mortem = Some(examine_once(&info, pm, client.channel()).await);
        }
        if !info.pod_sandbox_id.is_empty() {
            match client.pod_status(&info.pod_sandbox_id).await {
                Ok(Some(pod)) => {
                    info.pod = PodRef::from_labels(&info.labels, &pod.pod);
                    if out.send(SourceEvent::CriPod(pod)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(error) => tracing::debug!(%error, container_id = id, "cannot read sandbox status"),
            }
        }
        let _closed = out.send(SourceEvent::CriContainer(Box::new(info))).await;
        return;
    }
}
