//! Wires the agent together: sources → engine → exporters, over bounded channels.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::detect::container_exit::ContainerExitDetector;
use crate::detect::Detector;
use crate::engine::Engine;
use crate::export::stdout::StdoutSink;
use crate::export::{self, Sink};
use crate::sources::containerd_events::ContainerdEventsSource;
use crate::sources::cri::{self, CriSource};
use crate::state::{StateError, StateStore};

/// Capacity of the sources → engine channel.
pub const SOURCE_CHANNEL: usize = 1024;
/// Capacity of the engine → exporters channel.
pub const FINDING_CHANNEL: usize = 1024;
/// Capacity of the CRI request channel.
pub const CRI_REQUEST_CHANNEL: usize = 256;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The state directory is unusable.
    #[error(transparent)]
    State(#[from] StateError),
}

/// Runs the agent for `node` until `shutdown`, then drains what is in flight.
pub async fn run(config: Config, node: String, shutdown: CancellationToken) -> Result<(), RunError> {
    let state = StateStore::open(&config.state_dir)?;
    let now = std::time::SystemTime::now();
    let watermark = match state.exits_seen_until() {
        Some(t) => t,
        None => now.checked_sub(config.exit.first_start_lookback).unwrap_or(now),
    };
    tracing::info!(
        node = %node,
        containerd = %config.containerd_address.display(),
        host_root = %config.host_root.display(),
        state = %config.state_dir.display(),
        resumed = state.found(),
        "podmortem starting"
    );

    let (source_tx, source_rx) = mpsc::channel(SOURCE_CHANNEL);
    let (finding_tx, finding_rx) = mpsc::channel(FINDING_CHANNEL);
    let (cri_handle, cri_requests) = cri::request_channel(CRI_REQUEST_CHANNEL);

    let sources_stop = shutdown.child_token();
    let cri_source = CriSource::new(config.containerd_address.clone(), config.cri.clone());
    let cri_task = tokio::spawn(cri_source.run(cri_requests, source_tx.clone(), sources_stop.clone()));
    let events_source = ContainerdEventsSource::new(
        config.containerd_address.clone(),
        config.events.clone(),
        cri_handle,
    );
    let events_task = tokio::spawn(events_source.run(source_tx, sources_stop.clone()));

    let detectors: Vec<Box<dyn Detector>> = vec![Box::new(ContainerExitDetector::new(
        config.exit.clone(),
        watermark,
    ))];
    let engine = Engine::new(node, detectors, state);
    let engine_task = tokio::spawn(engine.run(source_rx, finding_tx, shutdown.clone()));

    let sinks: Vec<Box<dyn Sink>> = vec![Box::new(StdoutSink::stdout(config.output))];
    let export_task = tokio::spawn(export::run(sinks, finding_rx));

    shutdown.cancelled().await;
    tracing::info!("podmortem stopping");
    for task in [cri_task, events_task, engine_task, export_task] {
        if let Err(error) = task.await {
            tracing::error!(%error, "a task failed while stopping");
        }
    }
    Ok(())
}
