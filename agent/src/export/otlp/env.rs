//! The standard `OTEL_*` environment variables over the config file's `otlp:` settings.
//!
//! The environment wins: a variable that is set (and not empty, which the specification reads
//! as unset) replaces the file's value. Headers and resource attributes are merged key by key,
//! the environment's value winning for a key both name.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{OtlpConfig, OtlpError, OtlpProtocol};

/// `OTEL_EXPORTER_OTLP_ENDPOINT`: the collector's base URL.
pub const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// `OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc` or `http/protobuf`.
pub const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
/// `OTEL_EXPORTER_OTLP_HEADERS`: `key=value,key2=value2`, values percent-encoded.
pub const HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
/// `OTEL_EXPORTER_OTLP_TIMEOUT`: milliseconds.
pub const TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
/// `OTEL_RESOURCE_ATTRIBUTES`: `key=value,key2=value2`, values percent-encoded.
pub const RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
/// `OTEL_SERVICE_NAME`.
pub const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";

impl OtlpConfig {
    /// These settings with the standard `OTEL_*` variables applied, read through `env`
    /// (`|k| std::env::var(k).ok()` in the agent). The environment wins over the config file;
    /// headers and resource attributes are merged key by key. An error names the variable
    /// (never a header's value, which may be a secret).
    pub fn with_env(mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<OtlpConfig, OtlpError> {
        let get = |name: &str| env(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        if let Some(endpoint) = get(ENDPOINT) {
            self.endpoint = Some(endpoint);
        }
        if let Some(protocol) = get(PROTOCOL) {
            self.protocol = Some(parse_protocol(PROTOCOL, &protocol)?);
        }
        if let Some(headers) = get(HEADERS) {
            self.headers.extend(parse_list(HEADERS, &headers, false)?);
        }
        if let Some(timeout) = get(TIMEOUT) {
            let ms = timeout.parse::<u64>().map_err(|_| OtlpError::Env {
                variable: TIMEOUT,
                reason: format!("{timeout:?} is not a whole number of milliseconds"),
            })?;
            self.timeout = Duration::from_millis(ms);
        }
        if let Some(attributes) = get(RESOURCE_ATTRIBUTES) {
            self.resource_attributes
                .extend(parse_list(RESOURCE_ATTRIBUTES, &attributes, true)?);
        }
        if let Some(name) = get(SERVICE_NAME) {
            self.service_name = Some(name);
        }
        Ok(self)
    }
}

/// A protocol's name as the specification spells it.
pub fn parse_protocol(variable: &'static str, value: &str) -> Result<OtlpProtocol, OtlpError> {
    match value {
        "grpc" => Ok(OtlpProtocol::Grpc),
        "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
        "http/json" => Err(OtlpError::Env {
            variable,
            reason: "http/json is not supported: use grpc or http/protobuf".to_owned(),
        }),
        other => Err(OtlpError::Env {
            variable,
            reason: format!("unknown protocol {other:?}: use grpc or http/protobuf"),
        }),
    }
}

/// `key=value` pairs separated by commas (the W3C baggage form the specification uses):
/// whitespace around keys and values is ignored, values are percent-decoded, an empty member
/// is skipped. `show_values`: whether an error may quote the value (not for headers).
pub fn parse_list(
    variable: &'static str,
    text: &str,
    show_values: bool,
) -> Result<BTreeMap<String, String>, OtlpError> {
    let mut out = BTreeMap::new();
    for (n, member) in text.split(',').enumerate() {
        let member = member.trim();
        if member.is_empty() {
            continue;
        }
        let what = |reason: &str| OtlpError::Env {
            variable,
            reason: if show_values {
                format!("entry {} ({member:?}): {reason}", n + 1)
            } else {
                format!("entry {}: {reason}", n + 1)
            },
        };
        let (key, value) = member.split_once('=').ok_or_else(|| what("expected key=value"))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(what("the key is empty"));
        }
        let value = percent_decode(value.trim()).ok_or_else(|| what("invalid percent-encoding"))?;
        out.insert(key.to_owned(), value);
    }
    Ok(out)
}

/// Decodes `%XX` escapes; None when an escape is cut short, not hexadecimal, or decodes to
/// something that is not UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    if !text.contains('%') {
        return Some(text.to_owned());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
