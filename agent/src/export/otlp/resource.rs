//! The OpenTelemetry resource: who sends the findings. `service.name` (`podmortem` unless
//! configured), `service.version`, `k8s.node.name`, `host.name`, the SDK's own
//! `telemetry.sdk.*`, then the configured resource attributes, which may override any of
//! these; `service_name` (`OTEL_SERVICE_NAME`) overrides a `service.name` among them.

use opentelemetry::KeyValue;
use opentelemetry_sdk::resource::TelemetryResourceDetector;
use opentelemetry_sdk::Resource;

use super::OtlpConfig;

/// `service.name`.
pub const SERVICE_NAME: &str = "service.name";
/// `service.version`.
pub const SERVICE_VERSION: &str = "service.version";
/// `host.name`.
pub const HOST_NAME: &str = "host.name";
/// The default `service.name`.
pub const DEFAULT_SERVICE_NAME: &str = "podmortem";

/// The resource for `config` on `node`; `hostname` is the host's name when known (else the
/// node's name stands for it).
pub fn build(config: &OtlpConfig, node: &str, hostname: Option<String>) -> Resource {
    let mut attributes = vec![
        KeyValue::new(SERVICE_NAME, DEFAULT_SERVICE_NAME),
        KeyValue::new(SERVICE_VERSION, env!("CARGO_PKG_VERSION")),
        KeyValue::new(super::attributes::K8S_NODE_NAME, node.to_owned()),
        KeyValue::new(
            HOST_NAME,
            hostname
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| node.to_owned()),
        ),
    ];
    attributes.extend(
        config
            .resource_attributes
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
    );
    if let Some(name) = config.service_name.as_deref().filter(|n| !n.is_empty()) {
        attributes.push(KeyValue::new(SERVICE_NAME, name.to_owned()));
    }
    Resource::builder_empty()
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_attributes(attributes)
        .build()
}

/// The host's name as seen below `host_root` (not the pod's own hostname), when it can be read.
pub fn hostname(host_root: &std::path::Path) -> Option<String> {
    crate::sources::host::hostname(host_root)
}
