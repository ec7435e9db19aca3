//! Exporters: where findings go. Each sink is its own module; the exporter task hands every
//! finding to every sink in the order the engine produced them.

pub mod kube_events;
pub mod node_conditions;
pub mod otlp;
pub mod stdout;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::detect::Finding;

/// Why a sink could not take a finding.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Writing to the sink failed.
    #[error("cannot write to {sink}: {source}")]
    Io {
        /// The sink's name.
        sink: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A destination for findings.
pub trait Sink: Send {
    /// The sink's name, for logs.
    fn name(&self) -> &'static str;
    /// Takes one finding.
    fn export(&mut self, finding: &Finding) -> Result<(), ExportError>;
}

/// Hands every finding to every sink until the engine closes the channel, counting each one
/// handled in `exported`. Sinks write synchronously, so this runs on a blocking thread
/// (`spawn_blocking`), never on the async workers.
pub fn run_blocking(
    mut sinks: Vec<Box<dyn Sink>>,
    mut findings: mpsc::Receiver<Finding>,
    exported: Arc<AtomicU64>,
) {
    while let Some(finding) = findings.blocking_recv() {
        for sink in &mut sinks {
            if let Err(error) = sink.export(&finding) {
                tracing::warn!(sink = sink.name(), %error, fingerprint = %finding.fingerprint, "finding not exported");
            }
        }
        exported.fetch_add(1, Ordering::Release);
    }
}
