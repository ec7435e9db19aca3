//! The engine: drains the sources' channel in order, keeps the inventory current, runs every
//! detector on every event and on a periodic tick, counts repeats and hands findings to the
//! exporters' channel.

use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::detect::occurrences::{Occurrences, DEFAULT_CAPACITY};
use crate::detect::{Context, Detector, Finding};
use crate::inventory::Inventory;
use crate::sources::SourceEvent;
use crate::state::StateStore;

/// How often detectors get a tick.
pub const TICK: Duration = Duration::from_millis(250);

/// The detection engine.
pub struct Engine {
    node: String,
    inventory: Inventory,
    detectors: Vec<Box<dyn Detector>>,
    occurrences: Occurrences,
    state: StateStore,
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

impl Engine {
    /// An engine for `node` running `detectors`, persisting progress in `state`.
    pub fn new(node: String, detectors: Vec<Box<dyn Detector>>, state: StateStore) -> Self {
        Engine {
            node,
            inventory: Inventory::default(),
            detectors,
            occurrences: Occurrences::new(DEFAULT_CAPACITY),
            state,
        }
    }

    /// Runs until the sources are gone or `shutdown`; on shutdown, first handles what the
    /// sources already sent.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<SourceEvent>,
        findings: mpsc::Sender<Finding>,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => {
                        if !self.handle(&event, &findings).await {
                            return;
                        }
                    }
                    None => return,
                },
                _ = tick.tick() => {
                    let out = self.detect(None);
                    if !self.emit(out, &findings).await {
                        return;
                    }
                }
                () = shutdown.cancelled() => {
                    events.close();
                    while let Some(event) = events.recv().await {
                        if !self.handle(&event, &findings).await {
                            return;
                        }
                    }
                    return;
                }
            }
        }
    }

    /// Applies one event and runs the detectors on it. `false` when the exporters are gone.
    async fn handle(&mut self, event: &SourceEvent, findings: &mpsc::Sender<Finding>) -> bool {
        self.inventory.apply(event);
        let out = self.detect(Some(event));
        if let SourceEvent::CriSnapshot(snapshot) = event {
            let (pods, containers) = self.inventory.len();
            tracing::debug!(pods, containers, "inventory resynced");
            if let Err(error) = self.state.set_exits_seen_until(snapshot.taken_at) {
                tracing::warn!(%error, "cannot record progress; a restart may report recent exits again");
            }
        }
        self.emit(out, findings).await
    }

    /// Runs every detector on `event`, or their periodic tick when there is none.
    fn detect(&mut self, event: Option<&SourceEvent>) -> Vec<Finding> {
        let cx = Context {
            node: &self.node,
            inventory: &self.inventory,
            now: SystemTime::now(),
        };
        let mut out = Vec::new();
        for detector in &mut self.detectors {
            match event {
                Some(event) => detector.on_event(event, &cx, &mut out),
                None => detector.on_tick(&cx, &mut out),
            }
        }
        out
    }

    async fn emit(&mut self, out: Vec<Finding>, findings: &mpsc::Sender<Finding>) -> bool {
        for mut finding in out {
            self.occurrences.record(&mut finding);
            if findings.send(finding).await.is_err() {
                return false;
            }
        }
        true
    }
}
