//! The metrics bridge: OpenTelemetry instruments over [`super::Telemetry`], read by the Prometheus
//! exporter behind `/metrics` and, when a collector is configured, by the OTLP metrics exporter.
