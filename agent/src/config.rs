//! The configuration file (`--config FILE`, YAML). Every key is optional; unknown keys are
//! rejected, naming the file, line and key. Command-line flags override the file.
//!
//! ```yaml
//! containerd_address: /run/containerd/containerd.sock
//! node_name: worker-1          # default: $NODE_NAME, else the hostname
//! host_root: /host             # where the host's /proc, /sys and /dev are visible
//! state_dir: /var/lib/podmortem
//! output: json                 # auto | text | json
//! cri:
//!   resync_interval: 30s
//!   request_timeout: 5s
//!   retry_initial: 250ms
//!   retry_max: 10s
//! events:
//!   namespace: k8s.io
//!   retry_initial: 250ms
//!   retry_max: 10s
//! exit:
//!   report_sigterm: true
//!   runtime_grace: 3s
//!   first_start_lookback: 5m
//! kmsg:
//!   enabled: true
//!   max_records_per_second: 20000
//!   reader: auto               # auto | device | syslog
//!   poll_interval: 1s          # how often the syslog(2) reader polls (and at once after an OOM)
//! memory:
//!   interval: 5s
//! oom:
//!   child_grace: 1s
//! oom_risk:
//!   usage_percent: 90
//!   pressure_percent: 40
//!   node_pressure_percent: 10
//!   node_available_percent: 5
//!   sustained: 1m
//! host_deps:
//!   enabled: true
//!   interval: 1m
//!   path: [/usr/local/sbin, /usr/local/bin, /usr/sbin, /usr/bin, /sbin, /bin]
//!   catalogue: extend          # extend the shipped catalogue, or replace it
//!   dependencies:
//!     - name: drbdadm
//!       binary: drbdadm
//!       why: manages DRBD replicated volumes
//!       packages: { debian: drbd-utils, rhel: drbd-utils }
//!   rules:
//!     - name: linstor
//!       needs: [drbdadm]
//!       match:
//!         csi_drivers: [linstor.csi.linbit.com]
//!         namespaces: [piraeus-datastore]
//! otlp:                        # the OTEL_* environment variables override these
//!   endpoint: http://otel-collector.monitoring:4317
//!   protocol: grpc             # grpc | http/protobuf
//!   headers: { x-api-key: secret }
//!   resource_attributes: { k8s.cluster.name: prod-eu }
//!   queue_size: 10000
//! kubernetes:
//!   mode: auto                 # auto | on | off
//!   events_per_second: 1
//!   events_burst: 25
//!   condition_settle: 2m
//! http:
//!   address: 0.0.0.0:9464
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::detect::container_exit::ExitConfig;
use crate::detect::oom_kill::OomConfig;
use crate::detect::oom_risk::RiskConfig;
use crate::export::otlp::OtlpConfig;
use crate::export::stdout::OutputFormat;
use crate::http::HttpConfig;
use crate::kubernetes::KubernetesConfig;
use crate::sources::containerd_events::EventsConfig;
use crate::sources::cri::CriConfig;
use crate::sources::erofs_tracer::ErofsConfig;
use crate::sources::host_deps::HostDepsConfig;
use crate::sources::host_fs::HostFsConfig;
use crate::sources::kmsg::KmsgConfig;
use crate::sources::memory::MemoryConfig;

/// Everything podmortem can be told.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// containerd's gRPC socket. CRI and the event stream are both read from it.
    pub containerd_address: PathBuf,
    /// The node's name, as Kubernetes knows it. Default: `$NODE_NAME`, else the hostname.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Where the host's root filesystem is visible (`/` when podmortem runs on the host,
    /// `/host` in the DaemonSet). `/proc`, `/sys` and `/dev/kmsg` are read below it.
    pub host_root: PathBuf,
    /// Where small state that must survive a restart is kept.
    pub state_dir: PathBuf,
    /// How findings are printed on standard output.
    pub output: OutputFormat,
    /// The CRI source.
    pub cri: CriConfig,
    /// The containerd event source.
    pub events: EventsConfig,
    /// The container exit detector.
    pub exit: ExitConfig,
    /// The kernel log source.
    pub kmsg: KmsgConfig,
    /// The memory sampler.
    pub memory: MemoryConfig,
    /// The OOM kill detector.
    pub oom: OomConfig,
    /// The OOM risk detector.
    pub oom_risk: RiskConfig,
    /// The host dependency check and its catalogue.
    pub host_deps: HostDepsConfig,
    /// Writes that fail on read-only filesystems: the kernel tracer and repeats.
    pub erofs: ErofsConfig,
    /// The check of the host's own filesystems.
    pub host_fs: HostFsConfig,
    /// OpenTelemetry export of findings and metrics.
    pub otlp: OtlpConfig,
    /// Events, node conditions and the pod watch through the Kubernetes API.
    pub kubernetes: KubernetesConfig,
    /// `/metrics`, `/healthz` and `/readyz`.
    pub http: HttpConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            containerd_address: PathBuf::from("/run/containerd/containerd.sock"),
            node_name: None,
            host_root: PathBuf::from("/"),
            state_dir: PathBuf::from("/var/lib/podmortem"),
            output: OutputFormat::Auto,
            cri: CriConfig::default(),
            events: EventsConfig::default(),
            exit: ExitConfig::default(),
            kmsg: KmsgConfig::default(),
            memory: MemoryConfig::default(),
            oom: OomConfig::default(),
            oom_risk: RiskConfig::default(),
            host_deps: HostDepsConfig::default(),
            erofs: ErofsConfig::default(),
            host_fs: HostFsConfig::default(),
            otlp: OtlpConfig::default(),
            kubernetes: KubernetesConfig::default(),
            http: HttpConfig::default(),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML, or a key is unknown or has the wrong type.
    #[error("{path}:{line}:{column}: key `{key}`: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when unknown).
        line: usize,
        /// 1-based column (0 when unknown).
        column: usize,
        /// The dotted key path where parsing failed.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A value parsed but makes no sense.
    #[error("{path}: key `{key}`: {message}")]
    Invalid {
        /// The file (or `<command line>`).
        path: PathBuf,
        /// The dotted key path.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and checks config text; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|err| {
            let key = err.path().to_string();
            let inner = err.into_inner();
            let (line, column) = inner.location().map_or((0, 0), |l| (l.line(), l.column()));
            let message = tidy_message(&inner.to_string(), &key);
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                column,
                key,
                message,
            }
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message: message.to_owned(),
        };
        let at_least = |key: &str, d: Duration, min: Duration| {
            if d < min {
                Err(invalid(
                    key,
                    &format!("must be at least {}", humantime::format_duration(min)),
                ))
            } else {
                Ok(())
            }
        };
        let ms = Duration::from_millis;
        at_least(
            "cri.resync_interval",
            self.cri.resync_interval,
            Duration::from_secs(1),
        )?;
        at_least("cri.request_timeout", self.cri.request_timeout, ms(10))?;
        at_least("cri.retry_initial", self.cri.retry_initial, ms(1))?;
        at_least("events.retry_initial", self.events.retry_initial, ms(1))?;
        if self.cri.retry_max < self.cri.retry_initial {
            return Err(invalid(
                "cri.retry_max",
                "must not be shorter than cri.retry_initial",
            ));
        }
        if self.events.retry_max < self.events.retry_initial {
            return Err(invalid(
                "events.retry_max",
                "must not be shorter than events.retry_initial",
            ));
        }
        at_least("memory.interval", self.memory.interval, ms(100))?;
        at_least("erofs.window", self.erofs.window, ms(10))?;
        at_least("host_fs.interval", self.host_fs.interval, ms(100))?;
        at_least("otlp.timeout", self.otlp.timeout, ms(10))?;
        at_least("otlp.retry_initial", self.otlp.retry_initial, ms(1))?;
        if !self.otlp.metrics_interval.is_zero() {
            // Zero turns the metrics export off.
            at_least(
                "otlp.metrics_interval",
                self.otlp.metrics_interval,
                Duration::from_secs(1),
            )?;
        }
        if self.otlp.retry_max < self.otlp.retry_initial {
            return Err(invalid(
                "otlp.retry_max",
                "must not be shorter than otlp.retry_initial",
            ));
        }
        if self.otlp.queue_size == 0 {
            return Err(invalid("otlp.queue_size", "must be at least 1"));
        }
        if self.otlp.batch_size == 0 {
            return Err(invalid("otlp.batch_size", "must be at least 1"));
        }
        if let Some(p) = self.host_fs.paths.iter().find(|p| !p.is_absolute()) {
            return Err(invalid(
                "host_fs.paths",
                &format!("{} is not an absolute path", p.display()),
            ));
        }
        if !self.host_fs.mount_table.is_absolute() {
            return Err(invalid("host_fs.mount_table", "must be an absolute path"));
        }
        if self.kmsg.max_records_per_second < 100 {
            return Err(invalid("kmsg.max_records_per_second", "must be at least 100"));
        }
        at_least("kmsg.poll_interval", self.kmsg.poll_interval, ms(10))?;
        if self.kmsg.poll_interval > Duration::from_secs(10) {
            return Err(invalid("kmsg.poll_interval", "must be at most 10s"));
        }
        let percents = [
            ("oom_risk.usage_percent", self.oom_risk.usage_percent),
            ("oom_risk.pressure_percent", self.oom_risk.pressure_percent),
            (
                "oom_risk.node_pressure_percent",
                self.oom_risk.node_pressure_percent,
            ),
            (
                "oom_risk.node_available_percent",
                self.oom_risk.node_available_percent,
            ),
        ];
        for (key, value) in percents {
            if !(0.0..=100.0).contains(&value) {
                return Err(invalid(key, "must be a percentage between 0 and 100"));
            }
        }
        if self.events.namespace.is_empty() {
            return Err(invalid("events.namespace", "must not be empty"));
        }
        if self.node_name.as_deref() == Some("") {
            return Err(invalid("node_name", "must not be empty"));
        }
        at_least(
            "host_deps.interval",
            self.host_deps.interval,
            Duration::from_secs(1),
        )?;
        if self.host_deps.path.iter().any(|d| !d.starts_with('/')) {
            return Err(invalid("host_deps.path", "every directory must be absolute"));
        }
        if let Err(error) = self.host_deps.build_catalogue() {
            return Err(invalid("host_deps", &error.to_string()));
        }
        let k = &self.kubernetes;
        if !(k.events_per_second.is_finite() && k.events_per_second > 0.0) {
            return Err(invalid(
                "kubernetes.events_per_second",
                "must be a positive number",
            ));
        }
        if k.events_burst == 0 {
            return Err(invalid("kubernetes.events_burst", "must be at least 1"));
        }
        at_least(
            "kubernetes.node_oom_window",
            k.node_oom_window,
            Duration::from_secs(1),
        )?;
        let day = Duration::from_secs(86_400);
        for (key, value) in [
            ("kubernetes.node_oom_window", k.node_oom_window),
            ("kubernetes.condition_settle", k.condition_settle),
        ] {
            if value > day {
                return Err(invalid(key, "must be at most 1 day"));
            }
        }
        Ok(())
    }
}

/// The YAML library's message without the key prefix and position suffix that
/// [`ConfigError::Parse`] already shows.
fn tidy_message(message: &str, key: &str) -> String {
    // The library prefixes the path it was at: the key itself, or its parent for an unknown key.
    let message = match message.split_once(": ") {
        Some((prefix, rest)) if !prefix.is_empty() && key.starts_with(prefix) => rest,
        _ => message,
    };
    let message = match message.rfind(" at line ") {
        Some(i) if message[i..].contains(" column ") => &message[..i],
        _ => message,
    };
    message.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The config files the DaemonSet and the example overlay ship load, and say what the
    /// DaemonSet's mounts expect.
    #[test]
    fn the_shipped_daemonset_configs_load() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for file in ["deploy/config.yaml", "examples/overlay/config.yaml"] {
            let c = Config::load(&repo.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(c.host_root, Path::new("/host"), "{file}");
            assert_eq!(
                c.containerd_address,
                Path::new("/run/containerd/containerd.sock"),
                "{file}"
            );
            assert_eq!(c.state_dir, Path::new("/var/lib/podmortem"), "{file}");
        }
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/podmortem.yaml"))
    }

    #[test]
    fn empty_file_gives_defaults_and_keys_override() {
        assert_eq!(parse("").ok(), Some(Config::default()));
        let c = parse("node_name: w1\ncri:\n  resync_interval: 2m\nexit:\n  report_sigterm: false\n")
            .expect("valid");
        assert_eq!(c.node_name.as_deref(), Some("w1"));
        assert_eq!(c.cri.resync_interval, Duration::from_secs(120));
        assert_eq!(c.cri.request_timeout, CriConfig::default().request_timeout);
        assert!(!c.exit.report_sigterm);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let err = parse("node_name: w1\ncri:\n  resync_intervall: 2m\n")
            .expect_err("unknown key")
            .to_string();
        assert!(err.starts_with("/etc/podmortem.yaml:3:"), "{err}");
        assert!(err.contains("resync_intervall"), "{err}");
        assert!(err.contains("key `cri"), "{err}");
        assert!(!err.contains(" at line "), "position said once: {err}");
    }

    #[test]
    fn wrong_types_and_bad_yaml_are_errors_with_a_line() {
        let err = parse("cri:\n  resync_interval: soon\n")
            .expect_err("bad duration")
            .to_string();
        assert!(
            err.contains(":2:") && err.contains("cri.resync_interval"),
            "{err}"
        );
        let err = parse("cri: [unclosed\n").expect_err("bad yaml").to_string();
        assert!(err.starts_with("/etc/podmortem.yaml:"), "{err}");
        let err = parse("output: xml\n").expect_err("bad enum").to_string();
        assert!(err.contains("output"), "{err}");
    }

    #[test]
    fn kmsg_reader_and_poll_interval_parse() {
        let c = parse("kmsg:\n  reader: syslog\n  poll_interval: 50ms\n").expect("config");
        assert_eq!(c.kmsg.reader, crate::sources::kmsg::KmsgReader::Syslog);
        assert_eq!(c.kmsg.poll_interval, Duration::from_millis(50));
        let c = parse("kmsg:\n  reader: device\n").expect("config");
        assert_eq!(c.kmsg.reader, crate::sources::kmsg::KmsgReader::Device);
        assert_eq!(
            Config::default().kmsg.reader,
            crate::sources::kmsg::KmsgReader::Auto
        );
        assert_eq!(Config::default().kmsg.poll_interval, Duration::from_secs(1));
    }

    #[test]
    fn nonsense_values_are_rejected() {
        let err = parse("cri:\n  resync_interval: 10ms\n")
            .expect_err("too short")
            .to_string();
        assert_eq!(
            err,
            "/etc/podmortem.yaml: key `cri.resync_interval`: must be at least 1s"
        );
        assert!(parse("events:\n  namespace: ''\n").is_err());
        for (text, key) in [
            ("otlp:\n  queue_size: 0\n", "otlp.queue_size"),
            ("otlp:\n  retry_initial: 10s\n  retry_max: 1s\n", "otlp.retry_max"),
            (
                "kubernetes:\n  events_per_second: 0\n",
                "kubernetes.events_per_second",
            ),
            (
                "kubernetes:\n  events_per_second: .nan\n",
                "kubernetes.events_per_second",
            ),
            ("kubernetes:\n  events_burst: 0\n", "kubernetes.events_burst"),
            ("kmsg:\n  poll_interval: 5ms\n", "kmsg.poll_interval"),
            ("kmsg:\n  poll_interval: 11s\n", "kmsg.poll_interval"),
            ("kmsg:\n  reader: dmesg\n", "kmsg.reader"),
            (
                "kubernetes:\n  condition_settle: 1000000000y\n",
                "kubernetes.condition_settle",
            ),
        ] {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(&format!("key `{key}`")), "{text}: {err}");
        }
    }

    #[test]
    fn otlp_kubernetes_and_http_sections_parse() {
        let c = parse(
            "otlp:\n  endpoint: http://collector:4318\n  protocol: http/protobuf\n  headers: {x-api-key: k}\n\
             kubernetes:\n  mode: off\nhttp:\n  address: 127.0.0.1:9000\n",
        )
        .expect("valid");
        assert_eq!(c.otlp.endpoint.as_deref(), Some("http://collector:4318"));
        assert_eq!(
            c.otlp.protocol,
            Some(crate::export::otlp::OtlpProtocol::HttpProtobuf)
        );
        assert_eq!(c.otlp.headers.get("x-api-key").map(String::as_str), Some("k"));
        assert_eq!(c.kubernetes.mode, crate::kubernetes::KubeMode::Off);
        assert_eq!(
            c.http.address,
            Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9000)))
        );
        let err = parse("otlp:\n  protocol: http/json\n")
            .expect_err("unsupported")
            .to_string();
        assert!(err.contains("otlp.protocol"), "{err}");
    }

    #[test]
    fn a_catalogue_typo_names_the_rule_and_the_dependency() {
        let err = parse("host_deps:\n  rules:\n    - name: mine\n      needs: [iscsiadmm]\n")
            .expect_err("typo")
            .to_string();
        assert!(
            err.starts_with("/etc/podmortem.yaml: key `host_deps`: rule `mine` needs `iscsiadmm`"),
            "{err}"
        );
        let err = parse("host_deps:\n  dependencies:\n    - name: x\n      bianry: y\n")
            .expect_err("unknown key")
            .to_string();
        assert!(err.starts_with("/etc/podmortem.yaml:4:"), "{err}");
        assert!(err.contains("bianry"), "{err}");
    }

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("config.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```yaml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| {
                format!(
                    "{}\n",
                    l.trim_start_matches("//!").strip_prefix(' ').unwrap_or("")
                )
            })
            .collect();
        let c = parse(&example).expect("documented example");
        assert_eq!(c.node_name.as_deref(), Some("worker-1"));
        assert_eq!(c.output, OutputFormat::Json);
        let catalogue = c.host_deps.build_catalogue().expect("catalogue");
        assert!(catalogue.rule("linstor").is_some() && catalogue.rule("longhorn").is_some());
    }
}
