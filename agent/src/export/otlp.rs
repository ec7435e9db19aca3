//! The OpenTelemetry sink: each finding as one OTLP log record, sent over gRPC or HTTP/protobuf
//! to a collector, held in a bounded queue while the collector is away.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (port 4317 by convention).
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP over HTTP with protobuf bodies (port 4318 by convention).
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// Settings of the OTLP export (`otlp:` in the config file). The standard `OTEL_*`
/// environment variables override them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// The collector's base URL (`OTEL_EXPORTER_OTLP_ENDPOINT`), e.g.
    /// `http://otel-collector:4317`. None: findings go to standard output only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `grpc` or `http/protobuf` (`OTEL_EXPORTER_OTLP_PROTOCOL`). Default: `grpc`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<OtlpProtocol>,
    /// Headers sent with every export, e.g. an API key (`OTEL_EXPORTER_OTLP_HEADERS`).
    pub headers: BTreeMap<String, String>,
    /// Extra resource attributes (`OTEL_RESOURCE_ATTRIBUTES`).
    pub resource_attributes: BTreeMap<String, String>,
    /// `service.name` (`OTEL_SERVICE_NAME`). Default: `podmortem`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// How long one export may take, retries included (`OTEL_EXPORTER_OTLP_TIMEOUT`).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How many findings are held while the collector cannot take them. Findings beyond are
    /// dropped, counted and logged.
    pub queue_size: usize,
    /// The most findings sent in one export.
    pub batch_size: usize,
    /// How long findings wait to fill a batch.
    #[serde(with = "humantime_serde")]
    pub batch_delay: Duration,
    /// The first wait before sending a failed batch again; it doubles up to `retry_max`.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// The longest wait between attempts to send a failed batch.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// How often metrics are exported.
    #[serde(with = "humantime_serde")]
    pub metrics_interval: Duration,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            endpoint: None,
            protocol: None,
            headers: BTreeMap::new(),
            resource_attributes: BTreeMap::new(),
            service_name: None,
            timeout: Duration::from_secs(10),
            queue_size: 10_000,
            batch_size: 512,
            batch_delay: Duration::from_millis(200),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
            metrics_interval: Duration::from_secs(30),
        }
    }
}
