//! Exporters: where findings go. Each sink is its own module; the exporter task hands every
//! finding to every sink in the order the engine produced them.

pub mod stdout;

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

/// Hands every finding to every sink until the engine closes the channel.
pub async fn run(mut sinks: Vec<Box<dyn Sink>>, mut findings: mpsc::Receiver<Finding>) {
    while let Some(finding) = findings.recv().await {
        for sink in &mut sinks {
            if let Err(error) = sink.export(&finding) {
                tracing::warn!(sink = sink.name(), %error, fingerprint = %finding.fingerprint, "finding not exported");
            }
        }
    }
}
