//! The metrics bridge: OpenTelemetry instruments over [`Telemetry`], read by the Prometheus
//! exporter behind `/metrics` and, when a collector is configured, by the OTLP metrics exporter.
//! Both readers see the same instruments, so the two never disagree.
//!
//! | metric (OTLP name → Prometheus name) | labels |
//! |---|---|
//! | `podmortem.findings` → `podmortem_findings_total` | `kind`, `k8s.namespace.name` |
//! | `podmortem.source.events` → `podmortem_source_events_total` | `source` |
//! | `podmortem.source.parse_errors` → `podmortem_source_parse_errors_total` | `source` |
//! | `podmortem.export.findings` → `podmortem_export_findings_total` | `sink` |
//! | `podmortem.export.failures` → `podmortem_export_failures_total` | `sink` |
//! | `podmortem.export.dropped` → `podmortem_export_dropped_total` | `sink`, `reason` |
//! | `podmortem.queue.depth` → `podmortem_queue_depth` | `queue` |
//! | `podmortem.node.pressure` → `podmortem_node_pressure_ratio` | `resource`, `level`, `window` |
//! | `podmortem.node.pressure.stall` → `podmortem_node_pressure_stall_seconds_total` | `resource`, `level` |

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::metrics::{AsyncInstrument, Meter, MeterProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::periodic_reader_with_async_runtime::PeriodicReader;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::Resource;
use prometheus::{Encoder as _, TextEncoder};

use super::{Point, Telemetry};
use crate::sources::cgroup::PressureLine;
use crate::sources::procfs::read_pressure;

/// The pressure resources reported for the node.
const PRESSURE_RESOURCES: [&str; 3] = ["cpu", "memory", "io"];

/// Why metrics could not be set up or rendered.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The Prometheus exporter could not be built.
    #[error("cannot set up the Prometheus exporter: {0}")]
    Prometheus(String),
    /// The Prometheus text could not be encoded.
    #[error("cannot encode metrics as Prometheus text: {0}")]
    Encode(#[from] prometheus::Error),
}

/// The meter provider and the registry `/metrics` renders.
#[derive(Debug, Clone)]
pub struct Metrics {
    provider: SdkMeterProvider,
    registry: prometheus::Registry,
}

impl Metrics {
    /// Sets up every instrument over `telemetry` and node pressure under `host_root`, read by
    /// the Prometheus registry and, if given, by an OTLP exporter every `interval`.
    pub fn start(
        telemetry: Arc<Telemetry>,
        host_root: &Path,
        resource: Resource,
        otlp: Option<(opentelemetry_otlp::MetricExporter, Duration)>,
    ) -> Result<Metrics, MetricsError> {
        let registry = prometheus::Registry::new();
        let prometheus = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .scope_info_enabled(false)
            .build()
            .map_err(|e| MetricsError::Prometheus(e.to_string()))?;
        let mut builder = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(prometheus);
        if let Some((exporter, interval)) = otlp {
            // Exports run on the agent's tokio runtime: the HTTP exporter's client needs one (the
            // SDK's default reader runs on a bare thread, where it panics).
            let reader = PeriodicReader::builder(exporter, opentelemetry_sdk::runtime::Tokio)
                .with_interval(interval)
                .build();
            builder = builder.with_reader(reader);
        }
        let provider = builder.build();
        register(&provider.meter("podmortem"), telemetry, host_root.to_owned());
        Ok(Metrics { provider, registry })
    }

    /// The current metrics in the Prometheus text format.
    pub fn prometheus_text(&self) -> Result<String, MetricsError> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Exports a last time to the collector, if there is one, and stops.
    pub fn shutdown(&self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::debug!(%error, "metrics provider shutdown");
        }
    }
}

fn observe(points: Vec<Point>, obs: &dyn AsyncInstrument<u64>) {
    for p in points {
        let attrs: Vec<KeyValue> = p.labels.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect();
        obs.observe(p.value, &attrs);
    }
}

type Reader = fn(&Telemetry) -> Vec<Point>;

fn register(meter: &Meter, telemetry: Arc<Telemetry>, host_root: PathBuf) {
    let counters: [(&'static str, &'static str, Reader); 6] = [
        (
            "podmortem.findings",
            "Findings emitted, by kind and namespace",
            Telemetry::finding_points,
        ),
        (
            "podmortem.source.events",
            "Events the engine received, by source",
            Telemetry::events_points,
        ),
        (
            "podmortem.source.parse_errors",
            "Input a source skipped because it could not parse it",
            Telemetry::parse_error_points,
        ),
        (
            "podmortem.export.findings",
            "Findings delivered, by sink",
            Telemetry::exported_points,
        ),
        (
            "podmortem.export.failures",
            "Failed export attempts, by sink",
            Telemetry::export_failure_points,
        ),
        (
            "podmortem.export.dropped",
            "Findings a sink dropped, by sink and reason",
            Telemetry::dropped_points,
        ),
    ];
    for (name, description, read) in counters {
        let t = Arc::clone(&telemetry);
        meter
            .u64_observable_counter(name)
            .with_description(description)
            .with_callback(move |obs| observe(read(&t), obs))
            .build();
    }
    let t = Arc::clone(&telemetry);
    meter
        .u64_observable_gauge("podmortem.queue.depth")
        .with_description("Items waiting in an internal queue")
        .with_callback(move |obs| observe(t.queue_points(), obs))
        .build();

    let root = host_root.clone();
    meter
        .f64_observable_gauge("podmortem.node.pressure")
        .with_unit("1")
        .with_description("Share of recent time the node stalled on a resource (PSI), by window")
        .with_callback(move |obs| {
            for (resource, level, line) in pressure_lines(&root) {
                for (window, value) in [("10s", line.avg10), ("60s", line.avg60), ("300s", line.avg300)] {
                    let attrs = [
                        KeyValue::new("resource", resource),
                        KeyValue::new("level", level),
                        KeyValue::new("window", window),
                    ];
                    obs.observe(value / 100.0, &attrs);
                }
            }
        })
        .build();
    meter
        .f64_observable_counter("podmortem.node.pressure.stall")
        .with_unit("s")
        .with_description("Time the node stalled on a resource since boot (PSI total)")
        .with_callback(move |obs| {
            for (resource, level, line) in pressure_lines(&host_root) {
                let attrs = [KeyValue::new("resource", resource), KeyValue::new("level", level)];
                // Microseconds to seconds; exact for any stall shorter than 285 years.
                #[allow(clippy::cast_precision_loss)]
                let seconds = line.total_us as f64 / 1e6;
                obs.observe(seconds, &attrs);
            }
        })
        .build();
}

/// Every pressure line of the node: (resource, `some`|`full`, line). A kernel without PSI
/// gives none.
fn pressure_lines(host_root: &Path) -> Vec<(&'static str, &'static str, PressureLine)> {
    let mut out = Vec::new();
    for resource in PRESSURE_RESOURCES {
        match read_pressure(host_root, resource) {
            Ok(p) => {
                out.push((resource, "some", p.some));
                if let Some(full) = p.full {
                    out.push((resource, "full", full));
                }
            }
            Err(error) => tracing::trace!(%error, resource, "no node pressure"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let psi = dir.path().join("proc/pressure");
        std::fs::create_dir_all(&psi).expect("mkdir");
        std::fs::write(
            psi.join("memory"),
            "some avg10=12.50 avg60=1.00 avg300=0.00 total=2500000\nfull avg10=5.00 avg60=0.50 avg300=0.00 total=1000000\n",
        )
        .expect("write");
        std::fs::write(
            psi.join("cpu"),
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n",
        )
        .expect("write");
        // io is missing: a kernel with some resources only still reports the others.
        dir
    }

    #[tokio::test]
    async fn prometheus_text_carries_counts_and_node_pressure() {
        let root = fixture_root();
        let t = Telemetry::new();
        t.finding("OOMKilled", "shop");
        t.finding("OOMKilled", "shop");
        t.source_event("kmsg");
        t.dropped("otlp", "queue_full", 4);
        t.queue("findings", Arc::new(|| 9));
        let metrics =
            Metrics::start(t, root.path(), Resource::builder_empty().build(), None).expect("metrics");
        let text = metrics.prometheus_text().expect("text");
        let has = |needle: &str| text.lines().any(|l| l.starts_with(needle));
        assert!(
            has(r#"podmortem_findings_total{k8s_namespace_name="shop",kind="OOMKilled"} 2"#),
            "{text}"
        );
        assert!(has(r#"podmortem_source_events_total{source="kmsg"} 1"#), "{text}");
        assert!(
            has(r#"podmortem_export_dropped_total{reason="queue_full",sink="otlp"} 4"#),
            "{text}"
        );
        assert!(has(r#"podmortem_queue_depth{queue="findings"} 9"#), "{text}");
        assert!(
            has(r#"podmortem_node_pressure_ratio{level="some",resource="memory",window="10s"} 0.125"#),
            "{text}"
        );
        assert!(
            has(r#"podmortem_node_pressure_stall_seconds_total{level="full",resource="memory"} 1"#),
            "{text}"
        );
        assert!(
            !text.contains(r#"resource="io""#),
            "no io pressure file, no io series: {text}"
        );
        assert!(text.contains("# TYPE podmortem_findings_total counter"), "{text}");
    }
}
