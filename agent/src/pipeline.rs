//! Wires the agent together: sources → engine → exporters, over bounded channels, and watches
//! that none of them stops before podmortem is asked to.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::catalogue::CatalogueError;
use crate::config::Config;
use crate::detect::container_exit::ContainerExitDetector;
use crate::detect::host_fs_readonly::HostFsDetector;
use crate::detect::missing_host_dep::MissingHostDepDetector;
use crate::detect::oom_kill::OomKillDetector;
use crate::detect::oom_risk::OomRiskDetector;
use crate::detect::readonly_write::ReadOnlyWriteDetector;
use crate::detect::Detector;
use crate::engine::{Engine, Stopped};
use crate::export::otlp::{Otlp, OtlpError};
use crate::export::stdout::StdoutSink;
use crate::export::{self, Sink};
use crate::kubernetes::{self, KubeError};
use crate::sources::containerd_events;
use crate::sources::containerd_events::ContainerdEventsSource;
use crate::sources::cri::post_mortem::PostMortemContext;
use crate::sources::cri::{self, CriSource};
use crate::sources::erofs_tracer::ErofsSource;
use crate::sources::host::HostView;
use crate::sources::host_deps::HostDepsSource;
use crate::sources::host_fs::HostFsSource;
use crate::sources::kmsg::KmsgSource;
use crate::sources::logs::TailConfig;
use crate::sources::memory::MemorySampler;
use crate::sources::pods::PodWatch;
use crate::state::{StateError, StateStore};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::Telemetry;

/// Capacity of the sources → engine channel.
pub const SOURCE_CHANNEL: usize = 1024;
/// Capacity of the engine → exporters channel.
pub const FINDING_CHANNEL: usize = 1024;
/// Capacity of the CRI request channel.
pub const CRI_REQUEST_CHANNEL: usize = 256;
/// How long, at shutdown, findings still queued for the OTLP collector may take to go.
pub const OTLP_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The state directory is unusable.
    #[error(transparent)]
    State(#[from] StateError),
    /// The host dependency catalogue is invalid.
    #[error("host_deps: {0}")]
    Catalogue(#[from] CatalogueError),
    /// The HTTP endpoint could not listen.
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    /// Metrics could not be set up.
    #[error(transparent)]
    Metrics(#[from] crate::telemetry::metrics::MetricsError),
    /// The Kubernetes API was asked for and cannot be used.
    #[error(transparent)]
    Kubernetes(#[from] KubeError),
    /// The OTLP export is misconfigured.
    #[error("otlp: {0}")]
    Otlp(#[from] OtlpError),
    /// A part of the agent stopped (or panicked) while it should have kept running.
    #[error("the {0} stopped unexpectedly")]
    TaskStopped(&'static str),
}

/// How a task of the agent ended.
enum Ended {
    Source(&'static str),
    Engine(Box<Stopped>),
    Exporter,
}

impl Ended {
    fn name(&self) -> &'static str {
        match self {
            Ended::Source(name) => name,
            Ended::Engine(_) => "engine",
            Ended::Exporter => "exporter",
        }
    }
}

/// Runs the agent for `node` until `shutdown`, then drains what is in flight.
pub async fn run(config: Config, node: String, shutdown: CancellationToken) -> Result<(), RunError> {
    let state = StateStore::open(&config.state_dir)?;
    let now = std::time::SystemTime::now();
    let resumed = state.exits_seen_until();
    let watermark =
        resumed.unwrap_or_else(|| now.checked_sub(config.exit.first_start_lookback).unwrap_or(now));
    tracing::info!(
        node = %node,
        containerd = %config.containerd_address.display(),
        host_root = %config.host_root.display(),
        state = %config.state_dir.display(),
        resumed = resumed.is_some(),
        "podmortem starting"
    );

    // Started before any source, so that a misconfigured collector stops the agent at once.
    // The standard OTEL_* variables win over the config file.
    let otlp_config = config.otlp.clone().with_env(&|k| std::env::var(k).ok())?;
    let telemetry = Telemetry::new();
    let mut otlp = Otlp::start(&otlp_config, &node, &config.host_root, Arc::clone(&telemetry))?;

    let (source_tx, source_rx) = mpsc::channel(SOURCE_CHANNEL);
    let (finding_tx, finding_rx) = mpsc::channel(FINDING_CHANNEL);
    let (cri_handle, cri_requests) = cri::request_channel(CRI_REQUEST_CHANNEL);
    let exported = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    // The runtime's two connections are what readiness means; the other sources are optional.
    telemetry.set_ready(cri::READY, false);
    telemetry.set_ready(containerd_events::READY, false);
    telemetry.channel("sources", &source_tx);
    telemetry.channel("findings", &finding_tx);

    let sources_stop = shutdown.child_token();
    let kube = kubernetes::connect(&config.kubernetes).await?;
    if let (Some(client), true) = (&kube, config.kubernetes.pod_watch) {
        let pods = PodWatch::new(client.clone(), &node).with_telemetry(Arc::clone(&telemetry));
        let (tx, stop) = (source_tx.clone(), sources_stop.clone());
        tasks.spawn(async move {
            pods.run(tx, stop).await;
            Ended::Source("pod watch")
        });
    }
    let catalogue = Arc::new(config.host_deps.build_catalogue()?);
    let host = HostView::new(&config.host_root);
    let post_mortem = PostMortemContext {
        host: host.clone(),
        host_path: config.host_deps.path.clone(),
        tail: TailConfig::default(),
        since: watermark,
        done: Arc::default(),
    };
    let cri_source = CriSource::new(config.containerd_address.clone(), config.cri.clone())
        .with_post_mortem(post_mortem)
        .with_telemetry(Arc::clone(&telemetry));
    let (tx, stop) = (source_tx.clone(), sources_stop.clone());
    tasks.spawn(async move {
        cri_source.run(cri_requests, tx, stop).await;
        Ended::Source("CRI source")
    });
    let memory_nudge = Arc::new(Notify::new());
    let kmsg_nudge = Arc::new(Notify::new());
    let events_source = ContainerdEventsSource::new(
        config.containerd_address.clone(),
        config.events.clone(),
        cri_handle,
    )
    .with_oom_nudge(Arc::clone(&memory_nudge))
    .with_oom_nudge(Arc::clone(&kmsg_nudge))
    .with_telemetry(Arc::clone(&telemetry));
    let fs_nudge = Arc::new(Notify::new());
    let kmsg_source = KmsgSource::new(&config.host_root, config.kmsg.clone(), state.kmsg().cloned())
        .with_fs_nudge(Arc::clone(&fs_nudge))
        .with_poll_nudge(kmsg_nudge)
        .with_oom_nudge(Arc::clone(&memory_nudge));
    let kmsg_stats = kmsg_source.stats();
    telemetry.parse_errors_from(
        "kmsg",
        Arc::new(move || {
            kmsg_stats.malformed.load(Ordering::Relaxed) + kmsg_stats.oversized.load(Ordering::Relaxed)
        }),
    );
    let host_fs = HostFsSource::new(&config.host_root, config.host_fs.clone(), fs_nudge);
    let (tx, stop) = (source_tx.clone(), sources_stop.clone());
    tasks.spawn(async move {
        host_fs.run(tx, stop).await;
        Ended::Source("host filesystem check")
    });
    let erofs = ErofsSource::new(&config.host_root, config.erofs.clone());
    let (tx, stop) = (source_tx.clone(), sources_stop.clone());
    tasks.spawn(async move {
        erofs.run(tx, stop).await;
        Ended::Source("read-only write tracer")
    });
    let (tx, stop) = (source_tx.clone(), sources_stop.clone());
    tasks.spawn(async move {
        kmsg_source.run(tx, stop).await;
        Ended::Source("kernel log source")
    });
    let (targets_tx, targets_rx) = watch::channel(Arc::from(Vec::new()));
    let sampler = MemorySampler::new(&config.host_root, config.memory.clone(), targets_rx, memory_nudge);
    let (tx, stop) = (source_tx.clone(), sources_stop.clone());
    tasks.spawn(async move {
        sampler.run(tx, stop).await;
        Ended::Source("memory sampler")
    });
    let host_deps = HostDepsSource::new(host, config.host_deps.clone(), Arc::clone(&catalogue));
    let (tx, stop) = (source_tx.clone(), sources_stop.clone());
    tasks.spawn(async move {
        host_deps.run(tx, stop).await;
        Ended::Source("host dependency check")
    });
    tasks.spawn(async move {
        events_source.run(source_tx, sources_stop).await;
        Ended::Source("containerd event source")
    });

    let detectors: Vec<Box<dyn Detector>> = vec![
        Box::new(
            ContainerExitDetector::new(config.exit.clone(), watermark)
                .with_catalogue(Arc::clone(&catalogue))
                .with_kernel_log_wait(kernel_log_wait(&config.kmsg)),
        ),
        Box::new(MissingHostDepDetector::new(catalogue)),
        Box::new(OomKillDetector::new(config.oom.clone())),
        Box::new(OomRiskDetector::new(config.oom_risk.clone())),
        Box::new(ReadOnlyWriteDetector::new(config.erofs.repeat_interval)),
        Box::new(HostFsDetector::new(config.host_fs.paths.clone())),
    ];
    // An exit finished this long before a listing is surely recorded in it, or was reported
    // from its event after the grace period.
    let margin = config.exit.runtime_grace + Duration::from_secs(1);
    let kube_sinks = kube.map(|client| {
        kubernetes::sinks(
            &client,
            &node,
            &config.kubernetes,
            &unchecked_conditions(&config),
            &telemetry,
        )
    });
    let engine = Engine::new(node, detectors, state, margin, Arc::clone(&exported))
        .with_memory_targets(targets_tx)
        .with_telemetry(Arc::clone(&telemetry));
    let stop = shutdown.clone();
    tasks.spawn(async move { Ended::Engine(Box::new(engine.run(source_rx, finding_tx, stop).await)) });

    // One meter provider: /metrics and, with a collector, OTLP every `metrics_interval`.
    let (resource, otlp_metrics) = match &mut otlp {
        Some(otlp) => (
            otlp.resource.clone(),
            otlp.metrics.take().map(|m| (m, otlp_config.metrics_interval)),
        ),
        None => (opentelemetry_sdk::Resource::builder_empty().build(), None),
    };
    let metrics = Metrics::start(Arc::clone(&telemetry), &config.host_root, resource, otlp_metrics)?;
    if let Some(address) = config.http.address {
        let listener = crate::http::bind(address).await?;
        let bound = listener
            .local_addr()
            .map_or_else(|_| address.to_string(), |a| a.to_string());
        tracing::info!(address = %bound, "serving /metrics, /healthz and /readyz");
        let (metrics, telemetry, stop) = (metrics.clone(), Arc::clone(&telemetry), shutdown.clone());
        tokio::spawn(crate::http::serve(listener, metrics, telemetry, stop));
    }

    let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(StdoutSink::stdout(config.output))];
    sinks.extend(kube_sinks.into_iter().flatten());
    let otlp_flush = otlp.map(|otlp| {
        sinks.push(Box::new(otlp.sink));
        otlp.flush
    });
    tasks.spawn_blocking(move || {
        export::run_blocking(sinks, finding_rx, exported);
        Ended::Exporter
    });

    let mut failed = None;
    tokio::select! {
        biased;
        () = shutdown.cancelled() => tracing::info!("podmortem stopping"),
        // Tasks end once shutdown is asked for; before that, one ending is a failure.
        Some(ended) = tasks.join_next(), if !shutdown.is_cancelled() => {
            let name = match &ended {
                Ok(ended) => ended.name(),
                Err(_) => "a task",
            };
            tracing::error!(task = name, "stopped unexpectedly; podmortem stops");
            failed = Some(name);
            shutdown.cancel();
        }
    }
    let mut stopped = None;
    while let Some(ended) = tasks.join_next().await {
        match ended {
            Ok(Ended::Engine(engine)) => stopped = Some(engine),
            Ok(_) => {}
            Err(error) => tracing::error!(%error, "a task failed while stopping"),
        }
    }
    // The exporter has handed everything to the sinks; the collector may still be owed some.
    if let Some(flush) = otlp_flush {
        let left = flush.flush(OTLP_FLUSH_TIMEOUT).await;
        if left > 0 {
            telemetry.dropped("otlp", "shutdown", u64::try_from(left).unwrap_or(u64::MAX));
            tracing::warn!(
                left,
                "{left} finding(s) not delivered to the OTLP collector within {OTLP_FLUSH_TIMEOUT:?} of shutdown"
            );
        }
    }
    // The exporter has written everything the engine emitted: its last progress holds.
    if let Some(Stopped {
        mut state,
        progress: Some(progress),
    }) = stopped.map(|s| *s)
    {
        if let Err(error) = state.record(progress.exits_seen_until, progress.kmsg) {
            tracing::warn!(%error, "cannot record progress at shutdown");
        }
    }
    // The last export waits for the runtime's workers: not from one of them.
    if let Err(error) = tokio::task::spawn_blocking(move || metrics.shutdown()).await {
        tracing::warn!(%error, "metrics shutdown failed");
    }
    match failed {
        Some(name) => Err(RunError::TaskStopped(name)),
        None => Ok(()),
    }
}

/// The node conditions whose checks are switched off: not sent, so that the Node never shows a
/// health nobody checked.
fn unchecked_conditions(config: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if !config.host_deps.enabled {
        out.push("MissingHostDependency");
    }
    if !config.host_fs.enabled {
        out.push("HostFilesystemReadOnly");
    }
    if !config.kmsg.enabled {
        out.push("NodeOOM");
    }
    out
}

/// How long an exit by SIGKILL waits for the kernel log's report of an OOM kill: a poll of the
/// `syslog(2)` reader and some slack, when that reader may be used; none for the device, which
/// wakes the agent as soon as the kernel logs.
fn kernel_log_wait(kmsg: &crate::sources::kmsg::KmsgConfig) -> Duration {
    use crate::sources::kmsg::KmsgReader;
    match kmsg.reader {
        _ if !kmsg.enabled => Duration::ZERO,
        KmsgReader::Device => Duration::ZERO,
        KmsgReader::Auto | KmsgReader::Syslog => kmsg.poll_interval + Duration::from_millis(300),
    }
}
