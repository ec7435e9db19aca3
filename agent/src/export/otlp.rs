//! The OpenTelemetry sink: each finding as one OTLP log record, sent over gRPC or HTTP/protobuf
//! to a collector, held in a bounded queue while the collector is away.
//!
//! - [`env`]: the standard `OTEL_*` variables over the config file (the environment wins).
//! - [`resource`]: who sends (`service.name`, `k8s.node.name`, `host.name`, ...).
//! - [`attributes`]: a finding as a log record (pure).
//! - [`queue`]: the bounded queue and the delivery task, with retries and drops counted.
//! - [`failure`]: which export failures may be retried, per the OTLP specification.
//!
//! [`Otlp::start`] puts them together: the [`OtlpSink`] the exporter thread writes to (it never
//! waits for the network), the [`OtlpFlush`] the agent calls at shutdown, and a metrics exporter
//! for the same collector.

pub mod attributes;
pub mod env;
pub mod failure;
pub mod queue;
#[cfg(test)]
mod queue_tests;
pub mod resource;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::logs::LoggerProvider as _;
use opentelemetry::InstrumentationScope;
use opentelemetry_otlp::{
    ExporterBuildError, LogExporter, MetricExporter, Protocol, RetryPolicy, WithExportConfig, WithHttpConfig,
    WithTonicConfig,
};
use opentelemetry_sdk::logs::{LogExporter as _, SdkLoggerProvider};
use opentelemetry_sdk::Resource;
use serde::{Deserialize, Serialize};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};

use self::queue::{Delivery, DeliveryConfig, Queue, SINK};
use super::{ExportError, Sink};
use crate::detect::Finding;
use crate::telemetry::Telemetry;

/// Why the OTLP export cannot start.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// An `OTEL_*` environment variable is invalid.
    #[error("{variable}: {reason}")]
    Env {
        /// The variable.
        variable: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The collector's endpoint is unusable.
    #[error("OTLP endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The endpoint as configured.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A header cannot be sent (its value is never shown: it may be a secret).
    #[error("OTLP header {name:?}: {reason}")]
    Header {
        /// The header's name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A setting of `otlp:` is out of range.
    #[error("otlp.{setting}: {reason}")]
    Setting {
        /// The setting.
        setting: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// opentelemetry-otlp refused to build an exporter.
    #[error("cannot build the OTLP {signal} exporter for {endpoint}: {source}")]
    Exporter {
        /// `logs` or `metrics`.
        signal: &'static str,
        /// The URL it was built for.
        endpoint: String,
        /// Why.
        #[source]
        source: ExporterBuildError,
    },
    /// [`Otlp::start`] was called outside the tokio runtime.
    #[error("the OTLP export to {endpoint} must start inside the tokio runtime")]
    NoRuntime {
        /// The collector.
        endpoint: String,
    },
}

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
/// environment variables override them ([`OtlpConfig::with_env`]): the environment wins.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// The collector's base URL (`OTEL_EXPORTER_OTLP_ENDPOINT`), e.g.
    /// `http://otel-collector:4317`; plain `http://` only (no TLS yet). Over HTTP, logs go to
    /// `<endpoint>/v1/logs` and metrics to `<endpoint>/v1/metrics`. None: findings go to
    /// standard output only.
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
    /// How often metrics are exported; `0s` turns the metrics export off.
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

impl fmt::Display for OtlpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        })
    }
}

/// The OTLP export, started: the sink for findings, its flush, and a metrics exporter for the
/// same collector.
#[derive(Debug)]
pub struct Otlp {
    /// Where the exporter thread hands findings; never waits for the collector.
    pub sink: OtlpSink,
    /// Delivers what is queued, at shutdown.
    pub flush: OtlpFlush,
    /// An OTLP metrics exporter for the same endpoint, protocol and headers (HTTP path
    /// `/v1/metrics`), for a periodic reader; None when `metrics_interval` is zero.
    pub metrics: Option<MetricExporter>,
    /// The resource every record and metric is sent with.
    pub resource: Resource,
}

impl Otlp {
    /// Starts the OTLP export of findings to `config`'s collector, from `node` (whose host is
    /// visible at `host_root`, for `host.name`), counting in
    /// `telemetry`: builds the exporters and spawns the delivery task (so it must be called
    /// inside the tokio runtime). None when no endpoint is configured (logs once "no OTLP
    /// endpoint configured: findings go to standard output only").
    pub fn start(
        config: &OtlpConfig,
        node: &str,
        host_root: &std::path::Path,
        telemetry: Arc<Telemetry>,
    ) -> Result<Option<Otlp>, OtlpError> {
        let Some(endpoint) = config
            .endpoint
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
        else {
            tracing::info!("no OTLP endpoint configured: findings go to standard output only");
            return Ok(None);
        };
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        check_endpoint(&endpoint)?;
        check_settings(config)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| OtlpError::NoRuntime {
            endpoint: endpoint.clone(),
        })?;
        let protocol = config.protocol.unwrap_or(OtlpProtocol::Grpc);
        let resource = resource::build(config, node, resource::hostname(host_root));
        let mut exporter = log_exporter(config, &endpoint, protocol)?;
        exporter.set_resource(&resource);
        let metrics = if config.metrics_interval.is_zero() {
            None
        } else {
            Some(metric_exporter(config, &endpoint, protocol)?)
        };

        let queue = Arc::new(Queue::new(config.queue_size, Arc::clone(&telemetry)));
        let probe = Arc::downgrade(&queue);
        telemetry.queue(
            SINK,
            Arc::new(move || {
                probe
                    .upgrade()
                    .map_or(0, |q| u64::try_from(q.held()).unwrap_or(u64::MAX))
            }),
        );
        let scope = scope();
        let provider = SdkLoggerProvider::builder()
            .with_resource(resource.clone())
            .build();
        let logger = provider.logger_with_scope(scope.clone());
        let delivery = Delivery::new(
            Arc::clone(&queue),
            exporter,
            logger,
            scope,
            DeliveryConfig {
                endpoint: endpoint.clone(),
                batch_size: config.batch_size,
                batch_delay: config.batch_delay,
                retry_initial: config.retry_initial,
                retry_max: config.retry_max,
            },
        );
        runtime.spawn(delivery.run());
        tracing::info!(
            endpoint = %endpoint,
            %protocol,
            queue_size = config.queue_size,
            metrics = metrics.is_some(),
            "exporting findings to the OTLP collector"
        );
        Ok(Some(Otlp {
            sink: OtlpSink {
                queue: Arc::clone(&queue),
            },
            flush: OtlpFlush { queue },
            metrics,
            resource,
        }))
    }
}

/// The instrumentation scope of podmortem's records.
fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("podmortem")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

/// The sink: each finding goes into the bounded queue, to become a log record on its way out.
#[derive(Debug)]
pub struct OtlpSink {
    queue: Arc<Queue>,
}

impl Sink for OtlpSink {
    fn name(&self) -> &'static str {
        SINK
    }

    /// Queues the finding and returns at once. A full queue drops it (counted and logged by
    /// the queue), which is not an error of the exporter thread.
    fn export(&mut self, finding: &Finding) -> Result<(), ExportError> {
        self.queue.push(finding.clone(), SystemTime::now());
        Ok(())
    }
}

impl Drop for OtlpSink {
    fn drop(&mut self) {
        // Nothing more will come: the delivery task ends once it has delivered the rest.
        self.queue.close();
    }
}

/// Delivers what the OTLP sink holds, at shutdown.
#[derive(Debug, Clone)]
pub struct OtlpFlush {
    queue: Arc<Queue>,
}

impl OtlpFlush {
    /// Delivers what is queued, waiting at most `timeout`; returns how many were left
    /// undelivered. A batch waiting out a backoff is sent again at once.
    pub async fn flush(&self, timeout: Duration) -> usize {
        self.queue.hurry();
        let left = self.queue.drained(tokio::time::Instant::now() + timeout).await;
        self.queue.report_drops(false);
        left
    }

    /// How many findings are held now (queued and being sent).
    pub fn held(&self) -> usize {
        self.queue.held()
    }

    /// How many findings were dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.queue.dropped()
    }
}

/// Only `http://` endpoints: this build has no TLS for OTLP.
fn check_endpoint(endpoint: &str) -> Result<(), OtlpError> {
    let bad = |reason: &str| OtlpError::Endpoint {
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    let (scheme, rest) = endpoint
        .split_once("://")
        .ok_or_else(|| bad("expected a URL such as http://otel-collector:4317"))?;
    match scheme {
        "http" => {}
        "https" => return Err(bad("https is not supported (no TLS in this build): use http://")),
        _ => return Err(bad("the scheme must be http://")),
    }
    if rest.is_empty() || rest.starts_with('/') {
        return Err(bad("no host"));
    }
    Ok(())
}

fn check_settings(config: &OtlpConfig) -> Result<(), OtlpError> {
    if config.queue_size == 0 {
        return Err(OtlpError::Setting {
            setting: "queue_size",
            reason: "must be at least 1",
        });
    }
    if config.batch_size == 0 {
        return Err(OtlpError::Setting {
            setting: "batch_size",
            reason: "must be at least 1",
        });
    }
    if config.timeout.is_zero() {
        return Err(OtlpError::Setting {
            setting: "timeout",
            reason: "must be longer than zero",
        });
    }
    Ok(())
}

/// The configured headers as gRPC metadata (names lower-cased), checked.
fn metadata(headers: &BTreeMap<String, String>) -> Result<MetadataMap, OtlpError> {
    let mut map = MetadataMap::new();
    for (name, value) in headers {
        let key =
            MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(|_| OtlpError::Header {
                name: name.clone(),
                reason: "not a valid header name",
            })?;
        let value = MetadataValue::try_from(value.as_str()).map_err(|_| OtlpError::Header {
            name: name.clone(),
            reason: "the value has characters a header cannot carry",
        })?;
        map.insert(key, value);
    }
    Ok(map)
}

/// The configured headers for HTTP, checked like gRPC metadata.
fn http_headers(headers: &BTreeMap<String, String>) -> Result<HashMap<String, String>, OtlpError> {
    metadata(headers)?;
    Ok(headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// A signal's URL for OTLP/HTTP: the base endpoint and the signal's path.
pub fn http_url(endpoint: &str, path: &str) -> String {
    format!("{}{path}", endpoint.trim_end_matches('/'))
}

fn build_error<'a>(
    signal: &'static str,
    endpoint: &'a str,
) -> impl FnOnce(ExporterBuildError) -> OtlpError + 'a {
    move |source| OtlpError::Exporter {
        signal,
        endpoint: endpoint.to_owned(),
        source,
    }
}

/// The gRPC settings both exporters share.
fn grpc<B: WithExportConfig + WithTonicConfig>(
    builder: B,
    config: &OtlpConfig,
    endpoint: &str,
) -> Result<B, OtlpError> {
    Ok(builder
        .with_protocol(Protocol::Grpc)
        .with_endpoint(endpoint)
        .with_timeout(config.timeout)
        .with_metadata(metadata(&config.headers)?)
        .with_retry_policy(RetryPolicy::recommended()))
}

/// The HTTP/protobuf settings both exporters share; `url` is the signal's own.
fn http<B: WithExportConfig + WithHttpConfig>(
    builder: B,
    config: &OtlpConfig,
    url: &str,
) -> Result<B, OtlpError> {
    Ok(builder
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(config.timeout)
        .with_headers(http_headers(&config.headers)?)
        .with_retry_policy(RetryPolicy::recommended()))
}

fn log_exporter(
    config: &OtlpConfig,
    endpoint: &str,
    protocol: OtlpProtocol,
) -> Result<LogExporter, OtlpError> {
    match protocol {
        OtlpProtocol::Grpc => grpc(LogExporter::builder().with_tonic(), config, endpoint)?
            .build()
            .map_err(build_error("logs", endpoint)),
        OtlpProtocol::HttpProtobuf => {
            let url = http_url(endpoint, "/v1/logs");
            http(LogExporter::builder().with_http(), config, &url)?
                .build()
                .map_err(build_error("logs", &url))
        }
    }
}

fn metric_exporter(
    config: &OtlpConfig,
    endpoint: &str,
    protocol: OtlpProtocol,
) -> Result<MetricExporter, OtlpError> {
    match protocol {
        OtlpProtocol::Grpc => grpc(MetricExporter::builder().with_tonic(), config, endpoint)?
            .build()
            .map_err(build_error("metrics", endpoint)),
        OtlpProtocol::HttpProtobuf => {
            let url = http_url(endpoint, "/v1/metrics");
            http(MetricExporter::builder().with_http(), config, &url)?
                .build()
                .map_err(build_error("metrics", &url))
        }
    }
}
