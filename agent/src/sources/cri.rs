//! The CRI source: lists the node's sandboxes and containers over CRI, periodically and on
//! demand, and reads single containers when an event says they changed.

pub mod client;
mod convert;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::client::{CriClient, CriError};
use crate::backoff::Backoff;
use crate::model::{ContainerInfo, ContainerState, PodRef};
use crate::sources::{CriSnapshot, SourceEvent};

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

/// A request to the CRI source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CriRequest {
    /// List everything again now.
    Resync,
    /// Read one container now. With `expect_exit`, a container still reported running is read
    /// again a few times: the runtime records an exit a moment after publishing it.
    Container {
        /// The container.
        id: String,
        /// Whether an exit was just seen for it.
        expect_exit: bool,
    },
}

/// Asks the CRI source for a resync or a single container. Never blocks: when the source is
/// behind, the request is dropped and the next periodic resync covers it.
#[derive(Debug, Clone)]
pub struct CriHandle {
    tx: mpsc::Sender<CriRequest>,
}

impl CriHandle {
    /// Asks for a full resync.
    pub fn resync(&self) {
        self.send(CriRequest::Resync);
    }

    /// Asks for the current status of one container.
    pub fn refresh(&self, id: &str, expect_exit: bool) {
        self.send(CriRequest::Container {
            id: id.to_owned(),
            expect_exit,
        });
    }

    fn send(&self, req: CriRequest) {
        if let Err(err) = self.tx.try_send(req) {
            tracing::debug!(error = %err, "CRI request dropped; the next resync covers it");
        }
    }
}

/// The receiving end of [`CriHandle`].
#[derive(Debug)]
pub struct CriRequests(mpsc::Receiver<CriRequest>);

/// A handle and its receiver, holding at most `capacity` pending requests.
pub fn request_channel(capacity: usize) -> (CriHandle, CriRequests) {
    let (tx, rx) = mpsc::channel(capacity);
    (CriHandle { tx }, CriRequests(rx))
}

/// Delays between reads of a container whose exit was published but not yet recorded.
/// containerd's CRI plugin records an exit after it has deleted the task (tens of
/// milliseconds), so the first second is polled finely; about 2.4s in all.
const EXIT_RETRY_DELAYS_MS: [u64; 16] = [
    0, 10, 10, 10, 10, 10, 20, 20, 20, 50, 50, 100, 100, 250, 500, 1000,
];
/// At most this many single-container reads run at once.
const MAX_CONCURRENT_REFRESHES: usize = 16;

/// The CRI source task.
#[derive(Debug)]
pub struct CriSource {
    socket: PathBuf,
    config: CriConfig,
    client: Option<CriClient>,
    /// Last status read of each listed container, so a resync only reads the ones that changed.
    cache: HashMap<String, ContainerInfo>,
    refreshes: Arc<Semaphore>,
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
        }
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
                            backoff.reset();
                            next_resync = Instant::now() + self.config.resync_interval;
                            if out.send(SourceEvent::CriSnapshot(snapshot)).await.is_err() {
                                return;
                            }
                        }
                        Err(error) => {
                            let retry_in = backoff.next_delay();
                            tracing::warn!(%error, ?retry_in, "CRI resync failed; retrying");
                            next_resync = Instant::now() + retry_in;
                        }
                    }
                }
                req = requests.0.recv() => match req {
                    None => return,
                    Some(CriRequest::Resync) => next_resync = Instant::now(),
                    Some(CriRequest::Container { id, expect_exit }) => match &self.client {
                        Some(client) => self.spawn_refresh(client.clone(), id, expect_exit, out.clone()),
                        None => next_resync = Instant::now(),
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
        let listed = client.list_containers(None).await?;
        let pod_refs: HashMap<&str, &PodRef> = pods.iter().map(|p| (p.id.as_str(), &p.pod)).collect();
        let mut containers = Vec::with_capacity(listed.len());
        let mut cache = HashMap::with_capacity(listed.len());
        for listed in listed {
            let state = convert::container_state(listed.state);
            let info = match self.cache.remove(&listed.id) {
                Some(cached) if cached.state == state => Some(cached),
                _ => {
                    let fallback = pod_refs.get(listed.pod_sandbox_id.as_str()).copied().cloned();
                    match client
                        .container_status(
                            &listed.id,
                            Some(&listed.pod_sandbox_id),
                            &fallback.unwrap_or_default(),
                        )
                        .await
                    {
                        Ok(info) => info,
                        Err(err) if err.is_not_found() => None,
                        Err(err) => return Err(err),
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

    fn spawn_refresh(
        &self,
        client: CriClient,
        id: String,
        expect_exit: bool,
        out: mpsc::Sender<SourceEvent>,
    ) {
        let permits = Arc::clone(&self.refreshes);
        tokio::spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            refresh(&client, &id, expect_exit, &out).await;
        });
    }
}

/// Reads one container (and its sandbox) and sends what it finds.
async fn refresh(client: &CriClient, id: &str, expect_exit: bool, out: &mpsc::Sender<SourceEvent>) {
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
            // Sandboxes have tasks too, but are not containers to CRI; removed containers are
            // covered by the next resync.
            Err(err) if err.is_not_found() => return,
            Err(error) => {
                tracing::warn!(%error, container_id = id, "cannot read container status");
                return;
            }
        };
        if expect_exit && info.state == ContainerState::Running && n + 1 < tries {
            continue;
        }
        tracing::debug!(container_id = id, reads = n + 1, state = ?info.state, "container status read");
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
