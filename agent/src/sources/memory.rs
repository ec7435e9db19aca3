//! The memory sampler: periodically, and at once when an OOM is announced, reads the memory
//! cgroup of every running container and the node's memory and memory pressure.
//!
//! A container that starts gets its first reading at once, not at the next round: one that is
//! OOM-killed within a second of starting still has its cgroup's reading in the finding, even
//! when containerd removes the cgroup before the round that `TaskOOM` asks for.
//!
//! Which containers run, with their pid and CRI cgroup path, comes from the engine's inventory
//! through a watch channel. A container's memory cgroup is taken from `/proc/<pid>/cgroup`
//! when its pid is known, else from the cgroup path CRI reported (cgroupfs and systemd
//! layouts).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::sources::cgroup::{cgroup_from_cri, CgroupFs, MemoryStats};
use crate::sources::procfs::{read_node_memory, NodeMemory};
use crate::sources::SourceEvent;

/// Settings of the memory sampler (`memory:` in the config file).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// How often every running container's memory cgroup is read.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            interval: Duration::from_secs(5),
        }
    }
}

/// A container to sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryTarget {
    /// The container.
    pub container_id: String,
    /// Its main process, if known.
    pub pid: Option<u32>,
    /// The cgroup path CRI reported.
    pub cgroups_path: Option<String>,
}

/// One container's memory cgroup, read.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerMemory {
    /// The container.
    pub container_id: String,
    /// Its memory cgroup, inside the hierarchy.
    pub cgroup: String,
    /// What its files said.
    pub stats: MemoryStats,
}

/// One round of readings.
#[derive(Debug, Clone, PartialEq)]
pub struct MemorySnapshot {
    /// When the round started.
    pub at: SystemTime,
    /// Containers whose cgroup could be read: every running one, or in the round that gives
    /// newly started containers their first reading, only those.
    pub containers: Vec<ContainerMemory>,
    /// The node's memory, unless it could not be read or the round read only new containers.
    pub node: Option<NodeMemory>,
}

/// Counters of what the sampler could not read.
#[derive(Debug, Default)]
pub struct MemoryStatsCounters {
    /// Rounds taken.
    pub rounds: AtomicU64,
    /// Container cgroups that could not be found or read (skipped).
    pub unreadable: AtomicU64,
}

/// The memory sampler task.
#[derive(Debug)]
pub struct MemorySampler {
    host_root: PathBuf,
    config: MemoryConfig,
    targets: watch::Receiver<Arc<[MemoryTarget]>>,
    nudge: Arc<Notify>,
    counters: Arc<MemoryStatsCounters>,
}

impl MemorySampler {
    /// A sampler reading below `host_root` the containers `targets` names; `nudge` asks for a
    /// round now.
    pub fn new(
        host_root: &Path,
        config: MemoryConfig,
        targets: watch::Receiver<Arc<[MemoryTarget]>>,
        nudge: Arc<Notify>,
    ) -> Self {
        MemorySampler {
            host_root: host_root.to_owned(),
            config,
            targets,
            nudge,
            counters: Arc::default(),
        }
    }

    /// The sampler's counters.
    pub fn counters(&self) -> Arc<MemoryStatsCounters> {
        Arc::clone(&self.counters)
    }

    /// Runs until `stop`.
    pub async fn run(self, tx: mpsc::Sender<SourceEvent>, stop: CancellationToken) {
        let cgroups = match CgroupFs::detect(&self.host_root) {
            Ok(fs) => {
                tracing::info!(version = ?fs.version(), hierarchy = %fs.hierarchy().display(), "reading memory cgroups");
                Some(fs)
            }
            Err(error) => {
                tracing::error!(%error, "cannot find the memory cgroups; no container memory readings (OOM risk, usage before a kill)");
                None
            }
        };
        let mut state = Sampling {
            host_root: self.host_root,
            cgroups,
            resolved: HashMap::new(),
            first_read: HashSet::new(),
            counters: self.counters,
        };
        let mut targets = self.targets;
        let mut watching = true;
        let mut tick = tokio::time::interval(self.config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let round = tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => Round::All,
                () = self.nudge.notified() => Round::All,
                changed = targets.changed(), if watching => {
                    // The engine is gone when its sender is: the periodic rounds go on alone.
                    watching = changed.is_ok();
                    Round::Started
                }
            };
            let current = Arc::clone(&targets.borrow_and_update());
            if round == Round::Started && !state.any_new(&current) {
                continue;
            }
            let (next, snapshot) = match tokio::task::spawn_blocking(move || {
                let snapshot = state.sample(&current, round);
                (state, snapshot)
            })
            .await
            {
                Ok(done) => done,
                Err(error) => {
                    tracing::error!(%error, "memory sampling failed");
                    return;
                }
            };
            state = next;
            if tx.send(SourceEvent::Memory(Box::new(snapshot))).await.is_err() {
                return;
            }
        }
    }
}

/// Which containers a round reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// Every running container, and the node.
    All,
    /// Only the containers that have not had a reading yet.
    Started,
}

/// What the sampler keeps between rounds.
struct Sampling {
    host_root: PathBuf,
    cgroups: Option<CgroupFs>,
    /// Each container's memory cgroup, once found.
    resolved: HashMap<String, String>,
    /// The running containers that have had a first reading (or an attempt at one).
    first_read: HashSet<String>,
    counters: Arc<MemoryStatsCounters>,
}

impl Sampling {
    /// Whether a container in `targets` has not had its first reading (never, without cgroups).
    fn any_new(&self, targets: &[MemoryTarget]) -> bool {
        self.cgroups.is_some() && targets.iter().any(|t| !self.first_read.contains(&t.container_id))
    }

    fn sample(&mut self, targets: &[MemoryTarget], round: Round) -> MemorySnapshot {
        let at = SystemTime::now();
        self.counters.rounds.fetch_add(1, Ordering::Relaxed);
        let running: HashSet<&str> = targets.iter().map(|t| t.container_id.as_str()).collect();
        self.resolved.retain(|id, _| running.contains(id.as_str()));
        self.first_read.retain(|id| running.contains(id.as_str()));
        let mut containers = Vec::with_capacity(targets.len());
        if let Some(fs) = &self.cgroups {
            for target in targets {
                let first = !self.first_read.contains(&target.container_id)
                    && self.first_read.insert(target.container_id.clone());
                if round == Round::Started && !first {
                    continue;
                }
                match read_container(fs, &mut self.resolved, target) {
                    Some(read) => containers.push(read),
                    None => {
                        self.counters.unreadable.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        let node = (round == Round::All)
            .then(|| {
                read_node_memory(&self.host_root)
                    .map_err(|error| tracing::debug!(%error, "cannot read node memory"))
                    .ok()
            })
            .flatten();
        MemorySnapshot { at, containers, node }
    }
}

/// Finds (once) and reads one container's memory cgroup.
fn read_container(
    fs: &CgroupFs,
    resolved: &mut HashMap<String, String>,
    target: &MemoryTarget,
) -> Option<ContainerMemory> {
    let cgroup = match resolved.get(&target.container_id) {
        Some(cgroup) => cgroup.clone(),
        None => {
            let from_pid = target.pid.and_then(|pid| fs.cgroup_of_pid(pid).ok());
            // A pid's cgroup that is the root means the process was not in the container's.
            let from_pid = from_pid.filter(|c| c != "/" && c.contains(target.container_id.as_str()));
            let cgroup = from_pid.or_else(|| target.cgroups_path.as_deref().and_then(cgroup_from_cri))?;
            resolved.insert(target.container_id.clone(), cgroup.clone());
            cgroup
        }
    };
    match fs.read_memory(&cgroup) {
        Ok(stats) => Some(ContainerMemory {
            container_id: target.container_id.clone(),
            cgroup,
            stats,
        }),
        Err(error) => {
            if error.is_gone() {
                resolved.remove(&target.container_id);
            }
            tracing::debug!(container_id = %target.container_id, %error, "cannot read memory cgroup");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/cgroup")
            .join(name)
    }

    #[test]
    fn samples_fixture_containers_by_cri_path_and_skips_the_missing() {
        for version in ["v1", "v2"] {
            let root = fixture(version);
            let fs = CgroupFs::detect(&root).expect("fixture hierarchy");
            let mut state = Sampling {
                host_root: root.clone(),
                cgroups: Some(fs),
                resolved: HashMap::new(),
                first_read: HashSet::new(),
                counters: Arc::default(),
            };
            let listed = std::fs::read_to_string(root.join("cri-cgroups-path")).expect("cri-cgroups-path");
            let (id, path) = listed.trim().split_once(' ').expect("id and path");
            let targets = [
                MemoryTarget {
                    container_id: id.to_owned(),
                    pid: None,
                    cgroups_path: Some(path.to_owned()),
                },
                MemoryTarget {
                    container_id: "gone".into(),
                    pid: Some(999_999),
                    cgroups_path: Some("/kubepods/gone".into()),
                },
            ];
            let snapshot = state.sample(&targets, Round::All);
            assert_eq!(snapshot.containers.len(), 1, "{version}");
            assert_eq!(snapshot.containers[0].container_id, id);
            assert!(snapshot.containers[0].stats.usage_bytes > 0);
            assert_eq!(state.counters.unreadable.load(Ordering::Relaxed), 1);
        }
    }

    fn fixture_target() -> (PathBuf, MemoryTarget) {
        let root = fixture("v1");
        let listed = std::fs::read_to_string(root.join("cri-cgroups-path")).expect("cri-cgroups-path");
        let (id, path) = listed.trim().split_once(' ').expect("id and path");
        let target = MemoryTarget {
            container_id: id.to_owned(),
            pid: None,
            cgroups_path: Some(path.to_owned()),
        };
        (root, target)
    }

    #[test]
    fn a_started_round_reads_only_containers_without_a_first_reading() {
        let (root, target) = fixture_target();
        let mut state = Sampling {
            // The node's readings come from the procfs fixture, beside the cgroup one.
            host_root: Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
            cgroups: Some(CgroupFs::detect(&root).expect("fixture hierarchy")),
            resolved: HashMap::new(),
            first_read: HashSet::new(),
            counters: Arc::default(),
        };
        let targets = [target.clone()];
        assert!(state.any_new(&targets));
        let first = state.sample(&targets, Round::Started);
        assert_eq!(first.containers.len(), 1);
        assert_eq!(first.node, None, "a started round does not read the node");
        assert!(!state.any_new(&targets));
        assert!(state.sample(&targets, Round::Started).containers.is_empty());
        let all = state.sample(&targets, Round::All);
        assert_eq!(all.containers.len(), 1);
        assert!(all.node.is_some());
        // A container that stops and comes back (same id) gets a first reading again.
        state.sample(&[], Round::All);
        assert!(state.any_new(&targets));
        // Without a cgroup hierarchy there is nothing to read when a container starts.
        state.cgroups = None;
        assert!(!state.any_new(&targets));
    }

    #[tokio::test]
    async fn a_container_that_starts_is_read_before_the_next_round() {
        let (root, target) = fixture_target();
        let (targets_tx, targets_rx) = watch::channel(Arc::from(Vec::new()));
        let config = MemoryConfig {
            interval: Duration::from_secs(3600),
        };
        let sampler = MemorySampler::new(&root, config, targets_rx, Arc::new(Notify::new()));
        let (tx, mut rx) = mpsc::channel(8);
        let stop = CancellationToken::new();
        let task = tokio::spawn(sampler.run(tx, stop.clone()));
        let wait = Duration::from_secs(10);
        let SourceEvent::Memory(first) = tokio::time::timeout(wait, rx.recv()).await.unwrap().unwrap() else {
            panic!("not a memory snapshot");
        };
        assert!(first.containers.is_empty());
        targets_tx.send_replace(Arc::from(vec![target.clone()]));
        let SourceEvent::Memory(started) = tokio::time::timeout(wait, rx.recv()).await.unwrap().unwrap()
        else {
            panic!("not a memory snapshot");
        };
        assert_eq!(started.containers.len(), 1);
        assert_eq!(started.containers[0].container_id, target.container_id);
        // The engine going away leaves only the periodic rounds.
        drop(targets_tx);
        assert!(tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err());
        stop.cancel();
        task.await.unwrap();
    }
}
