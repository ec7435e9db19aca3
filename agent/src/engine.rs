//! The engine: drains the sources' channel in order, keeps the inventory current, runs every
//! detector on every event and on a periodic tick, counts repeats and hands findings to the
//! exporters' channel. It also records, in the state file, the time up to which every exit has
//! been reported and the kernel log position up to which every record has been handled, once
//! the exporters confirm they have written what came before them; and it publishes the running
//! containers to the memory sampler.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::detect::occurrences::{Occurrences, DEFAULT_CAPACITY};
use crate::detect::Subject;
use crate::detect::{Context, Detector, Finding};
use crate::inventory::Inventory;
use crate::sources::kmsg::{KmsgEvent, KmsgPosition};
use crate::sources::memory::MemoryTarget;
use crate::sources::{ContainerdEvent, SourceEvent};
use crate::state::StateStore;
use crate::telemetry::Telemetry;

/// How often detectors get a tick.
pub const TICK: Duration = Duration::from_millis(250);

/// Progress the engine can record once the exporters have caught up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Every exit that finished before this time has been handled.
    pub exits_seen_until: Option<SystemTime>,
    /// Every kernel log record up to this one has been handled.
    pub kmsg: Option<KmsgPosition>,
    /// ... once this many findings have been exported.
    pub after_findings: u64,
}

/// What the detectors are called for.
#[derive(Clone, Copy)]
enum Phase<'a> {
    Event(&'a SourceEvent),
    Tick,
    Shutdown,
}

/// The detection engine.
pub struct Engine {
    node: String,
    inventory: Inventory,
    detectors: Vec<Box<dyn Detector>>,
    occurrences: Occurrences,
    state: StateStore,
    /// How far before a listing the runtime may still be recording exits.
    margin: Duration,
    emitted: u64,
    exported: Arc<AtomicU64>,
    progress: Option<Progress>,
    /// The kernel log source's latest checkpoint.
    kmsg_checkpoint: Option<KmsgPosition>,
    /// The kernel log position last put into `progress`.
    kmsg_progressed: Option<KmsgPosition>,
    /// Where the running containers are published for the memory sampler.
    memory_targets: Option<watch::Sender<Arc<[MemoryTarget]>>>,
    /// podmortem's own counters.
    telemetry: Arc<Telemetry>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("node", &self.node)
            .field(
                "detectors",
                &self.detectors.iter().map(|d| d.name()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// What the engine leaves when it stops: the state, and progress not yet recorded in it.
#[derive(Debug)]
pub struct Stopped {
    /// The state file.
    pub state: StateStore,
    /// Progress to record once the exporters have written everything.
    pub progress: Option<Progress>,
}

impl Engine {
    /// An engine for `node` running `detectors`, persisting progress in `state`. Progress taken
    /// from a listing is moved back by `margin` (the runtime records an exit a little after it
    /// happens), and recorded only once `exported` (counted by the exporters) has caught up.
    pub fn new(
        node: String,
        detectors: Vec<Box<dyn Detector>>,
        state: StateStore,
        margin: Duration,
        exported: Arc<AtomicU64>,
    ) -> Self {
        Engine {
            node,
            inventory: Inventory::default(),
            detectors,
            occurrences: Occurrences::new(DEFAULT_CAPACITY),
            state,
            margin,
            emitted: 0,
            exported,
            progress: None,
            kmsg_checkpoint: None,
            kmsg_progressed: None,
            memory_targets: None,
            telemetry: Telemetry::new(),
        }
    }

    /// Counts events and findings in `telemetry`.
    pub fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Publishes the running containers (with pid and cgroup path) on `targets` whenever they
    /// change.
    pub fn with_memory_targets(mut self, targets: watch::Sender<Arc<[MemoryTarget]>>) -> Self {
        self.memory_targets = Some(targets);
        self
    }

    /// Runs until the sources are gone or `shutdown`; on shutdown, first handles what the
    /// sources already sent and lets the detectors report what they still hold.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<SourceEvent>,
        findings: mpsc::Sender<Finding>,
        shutdown: CancellationToken,
    ) -> Stopped {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => {
                        if !self.handle(&event, &findings).await {
                            break;
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    let out = self.detect(Phase::Tick);
                    if !self.emit(out, &findings).await {
                        break;
                    }
                    self.progress_kmsg();
                    self.record_progress();
                }
                () = shutdown.cancelled() => {
                    events.close();
                    while let Some(event) = events.recv().await {
                        if !self.handle(&event, &findings).await {
                            break;
                        }
                    }
                    break;
                }
            }
        }
        let out = self.detect(Phase::Shutdown);
        self.emit(out, &findings).await;
        self.progress_kmsg();
        Stopped {
            state: self.state,
            progress: self.progress,
        }
    }

    /// Applies one event and runs the detectors on it. `false` when the exporters are gone.
    async fn handle(&mut self, event: &SourceEvent, findings: &mpsc::Sender<Finding>) -> bool {
        let now = SystemTime::now();
        self.telemetry.source_event(event.source_name());
        self.inventory.apply(event, now);
        let out = self.detect(Phase::Event(event));
        let sent = self.emit(out, findings).await;
        match event {
            SourceEvent::CriSnapshot(snapshot) => {
                let (pods, containers) = self.inventory.len();
                tracing::debug!(pods, containers, "inventory resynced");
                if let Some(until) = snapshot.taken_at.checked_sub(self.margin) {
                    self.add_progress(Some(until), None);
                }
                self.publish_targets();
            }
            SourceEvent::CriContainer(_)
            | SourceEvent::Containerd(
                ContainerdEvent::TaskStart { .. } | ContainerdEvent::ContainerDelete { .. },
            ) => {
                self.publish_targets();
            }
            SourceEvent::Kmsg(KmsgEvent::Checkpoint(position)) => {
                self.kmsg_checkpoint = Some(position.clone());
                self.progress_kmsg();
            }
            _ => {}
        }
        sent
    }

    /// Adds to the progress to record once the findings emitted so far are written.
    fn add_progress(&mut self, exits_seen_until: Option<SystemTime>, kmsg: Option<KmsgPosition>) {
        let pending = self.progress.take();
        self.progress = Some(Progress {
            exits_seen_until: exits_seen_until.or(pending.as_ref().and_then(|p| p.exits_seen_until)),
            kmsg: kmsg.or(pending.and_then(|p| p.kmsg)),
            after_findings: self.emitted,
        });
    }

    /// The kernel log position that is safe to record: the source's checkpoint, but before any
    /// kill a detector still holds back.
    fn progress_kmsg(&mut self) {
        let Some(checkpoint) = &self.kmsg_checkpoint else {
            return;
        };
        let held = self
            .detectors
            .iter()
            .filter_map(|d| d.kmsg_held_from())
            .min_by_key(|(seq, _)| *seq);
        let position = match held {
            // Before the held kill's report, so that a restart reads it again.
            Some((first, before)) if first <= checkpoint.seq => KmsgPosition {
                seq: first.saturating_sub(1),
                usec: before,
                ..checkpoint.clone()
            },
            _ => checkpoint.clone(),
        };
        if self.kmsg_progressed.as_ref() == Some(&position) {
            return;
        }
        self.kmsg_progressed = Some(position.clone());
        self.add_progress(None, Some(position));
    }

    /// Publishes the running containers to the memory sampler, if they changed.
    fn publish_targets(&self) {
        let Some(targets) = &self.memory_targets else {
            return;
        };
        let now = self.inventory.memory_targets();
        targets.send_if_modified(|current| {
            if current[..] == now[..] {
                return false;
            }
            *current = now.into();
            true
        });
    }

    /// Runs every detector in `phase`.
    fn detect(&mut self, phase: Phase<'_>) -> Vec<Finding> {
        let cx = Context {
            node: &self.node,
            inventory: &self.inventory,
            now: SystemTime::now(),
        };
        let mut out = Vec::new();
        for detector in &mut self.detectors {
            match phase {
                Phase::Event(event) => detector.on_event(event, &cx, &mut out),
                Phase::Tick => detector.on_tick(&cx, &mut out),
                Phase::Shutdown => detector.on_shutdown(&cx, &mut out),
            }
        }
        out
    }

    async fn emit(&mut self, out: Vec<Finding>, findings: &mpsc::Sender<Finding>) -> bool {
        for mut finding in out {
            self.occurrences.record(&mut finding);
            let namespace = match &finding.subject {
                Subject::Container {
                    namespace, pod_uid, ..
                } => {
                    if finding.owner.is_none() {
                        finding.owner = self.inventory.pod_meta(pod_uid).and_then(|m| m.owner.clone());
                    }
                    namespace.as_str()
                }
                Subject::Node { .. } => "",
            };
            self.telemetry.finding(finding.kind.as_str(), namespace);
            if findings.send(finding).await.is_err() {
                return false;
            }
            self.emitted += 1;
        }
        true
    }

    /// Saves the progress once the exporters have written every finding that came before it.
    fn record_progress(&mut self) {
        let Some(progress) = &self.progress else { return };
        if self.exported.load(Ordering::Acquire) < progress.after_findings {
            return;
        }
        let Some(progress) = self.progress.take() else {
            return;
        };
        if let Err(error) = self.state.record(progress.exits_seen_until, progress.kmsg) {
            tracing::warn!(%error, "cannot record progress; a restart may report recent exits again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::container_exit::{ContainerExitDetector, ExitConfig};
    use crate::model::{ContainerInfo, ContainerState};
    use crate::sources::kmsg::syslog::UsecCursor;
    use crate::sources::CriSnapshot;

    fn exited(id: &str, finished: SystemTime) -> ContainerInfo {
        let mut c = ContainerInfo::unknown(id);
        c.state = ContainerState::Exited;
        c.exit_code = Some(2);
        c.finished_at = Some(finished);
        c
    }

    #[tokio::test]
    async fn progress_is_saved_only_after_the_exporters_wrote_what_came_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateStore::open(dir.path()).expect("state");
        let exported = Arc::new(AtomicU64::new(0));
        let start = SystemTime::now() - Duration::from_secs(60);
        let detectors: Vec<Box<dyn Detector>> =
            vec![Box::new(ContainerExitDetector::new(ExitConfig::default(), start))];
        let engine = Engine::new(
            "n".into(),
            detectors,
            state,
            Duration::from_secs(4),
            Arc::clone(&exported),
        );
        let (src_tx, src_rx) = mpsc::channel(8);
        let (out_tx, mut out_rx) = mpsc::channel(8);
        let stop = CancellationToken::new();
        let task = tokio::spawn(engine.run(src_rx, out_tx, stop.clone()));

        let taken_at = SystemTime::now();
        let snapshot = CriSnapshot {
            taken_at,
            pods: vec![],
            containers: vec![exited("c", taken_at - Duration::from_secs(1))],
        };
        src_tx
            .send(SourceEvent::CriSnapshot(snapshot))
            .await
            .expect("send");
        let finding = out_rx.recv().await.expect("a finding");
        assert_eq!(finding.count, 1);
        tokio::time::sleep(TICK * 3).await;
        let saved = || StateStore::open(dir.path()).expect("reopen").exits_seen_until();
        assert_eq!(saved(), None, "the finding is not written yet");
        exported.store(1, Ordering::Release);
        tokio::time::sleep(TICK * 3).await;
        assert_eq!(saved(), Some(taken_at - Duration::from_secs(4)));

        stop.cancel();
        let stopped = task.await.expect("engine");
        assert_eq!(stopped.progress, None, "already recorded");
    }

    /// Holds a kill whose report starts at `seq`, read just after `before`.
    struct Holding(u64, Option<UsecCursor>);

    impl Detector for Holding {
        fn name(&self) -> &'static str {
            "holding"
        }

        fn on_event(&mut self, _: &SourceEvent, _: &crate::detect::Context<'_>, _: &mut Vec<Finding>) {}

        fn kmsg_held_from(&self) -> Option<(u64, Option<UsecCursor>)> {
            Some((self.0, self.1))
        }
    }

    #[test]
    fn a_held_kill_moves_the_recorded_position_and_its_cursor_before_its_report() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateStore::open(dir.path()).expect("state");
        let before = Some(UsecCursor { usec: 5, count: 2 });
        let held: Vec<Box<dyn Detector>> = vec![Box::new(Holding(40, before))];
        let mut engine = Engine::new("n".into(), held, state, Duration::ZERO, Arc::default());
        let checkpoint = KmsgPosition {
            boot_id: "b".into(),
            seq: 100,
            syslog: true,
            usec: Some(UsecCursor { usec: 9, count: 1 }),
        };
        engine.kmsg_checkpoint = Some(checkpoint.clone());
        engine.progress_kmsg();
        let recorded = engine.progress.as_ref().and_then(|p| p.kmsg.clone());
        assert_eq!(
            recorded,
            Some(KmsgPosition {
                seq: 39,
                usec: before,
                ..checkpoint.clone()
            })
        );
        // A kill held from after the checkpoint does not move it.
        engine.detectors = vec![Box::new(Holding(200, None))];
        engine.progress_kmsg();
        let recorded = engine.progress.as_ref().and_then(|p| p.kmsg.clone());
        assert_eq!(recorded, Some(checkpoint));
    }
}
