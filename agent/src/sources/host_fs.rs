//! The host's mount table, read periodically (and at once when the kernel log reports a
//! filesystem error), so that a filesystem the node needs writable and that became read-only
//! is noticed, and noticed again when it is writable.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::sources::mountinfo::MountTable;
use crate::sources::SourceEvent;

/// The shortest time between two readings asked for by the kernel log.
const NUDGE_GAP: Duration = Duration::from_millis(500);

/// Settings of the host filesystem check (`host_fs:` in the config file).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HostFsConfig {
    /// Check the host's mount table at all.
    pub enabled: bool,
    /// Directories on the host that must be writable for pods to run: the filesystem holding
    /// each is watched.
    pub paths: Vec<PathBuf>,
    /// How often the mount table is read.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// The mount table read, below the host root: the host's init process's one.
    pub mount_table: PathBuf,
}

impl Default for HostFsConfig {
    fn default() -> Self {
        HostFsConfig {
            enabled: true,
            paths: ["/var/lib/containerd", "/var/lib/kubelet", "/var/log"]
                .iter()
                .map(PathBuf::from)
                .collect(),
            interval: Duration::from_secs(10),
            mount_table: PathBuf::from("/proc/1/mountinfo"),
        }
    }
}

/// One reading of the host's mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMounts {
    /// When it was read.
    pub at: SystemTime,
    /// The table, or why it could not be read.
    pub table: Result<MountTable, String>,
}

/// The periodic reader.
#[derive(Debug)]
pub struct HostFsSource {
    table: PathBuf,
    config: HostFsConfig,
    nudge: Arc<Notify>,
}

impl HostFsSource {
    /// A reader of the mount table below `host_root`; `nudge` asks for a reading now.
    pub fn new(host_root: &Path, config: HostFsConfig, nudge: Arc<Notify>) -> Self {
        let relative = config
            .mount_table
            .strip_prefix("/")
            .unwrap_or(&config.mount_table);
        HostFsSource {
            table: host_root.join(relative),
            config,
            nudge,
        }
    }

    /// Reads the table now.
    pub fn read(&self) -> HostMounts {
        HostMounts {
            at: SystemTime::now(),
            table: MountTable::read(&self.table).map_err(|e| e.to_string()),
        }
    }

    /// Sends a reading every interval, and when nudged, until `shutdown`.
    pub async fn run(self, out: mpsc::Sender<SourceEvent>, shutdown: CancellationToken) {
        if !self.config.enabled {
            tracing::info!("host filesystem check disabled");
            shutdown.cancelled().await;
            return;
        }
        let mut interval = tokio::time::interval(self.config.interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        let mut last = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = interval.tick() => {}
                () = self.nudge.notified() => {
                    // A storm of kernel errors is one reading every NUDGE_GAP, not one each.
                    if let Some(wait) = last.map(|l: tokio::time::Instant| NUDGE_GAP.saturating_sub(l.elapsed())) {
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(wait) => {}
                        }
                    }
                }
            }
            last = Some(tokio::time::Instant::now());
            let reading = self.read();
            match &reading.table {
                Err(error) if !failing => {
                    tracing::warn!(%error, "cannot read the host's mount table: read-only host filesystems go unnoticed until it can be read");
                    failing = true;
                }
                Ok(table) => {
                    if failing {
                        tracing::info!("the host's mount table can be read again");
                    }
                    failing = false;
                    if table.skipped > 0 {
                        tracing::debug!(skipped = table.skipped, "skipped malformed mount table lines");
                    }
                }
                Err(_) => {}
            }
            if out
                .send(SourceEvent::HostMounts(Arc::new(reading)))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}
