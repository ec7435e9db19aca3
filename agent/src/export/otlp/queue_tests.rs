//! Unit tests of the OTLP queue and delivery: a fake log exporter that fails as told, for the
//! queue's logic; and the real exporters against loopback ports, for how their failures are
//! classified.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _};
use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::logs::{LogBatch, LogExporter, SdkLogRecord, SdkLogger, SdkLoggerProvider};
use tokio::time::Instant;

use super::failure::{classify, Verdict};
use super::queue::{Delivery, DeliveryConfig, Queue};
use super::{Otlp, OtlpConfig, OtlpProtocol};
use crate::detect::finding::{FindingKind, Severity, Subject};
use crate::detect::Finding;
use crate::export::Sink as _;
use crate::telemetry::{Point, Telemetry};

/// Fails as its script says (then succeeds), keeping the bodies of each batch it took.
#[derive(Debug, Clone, Default)]
struct Fake {
    script: Arc<Mutex<VecDeque<OTelSdkError>>>,
    /// Every attempt's bodies, delivered or not.
    attempts: Arc<Mutex<Vec<Vec<String>>>>,
    delivered: Arc<Mutex<Vec<Vec<String>>>>,
}

impl Fake {
    fn failing(errors: impl IntoIterator<Item = OTelSdkError>) -> Fake {
        let fake = Fake::default();
        fake.script.lock().unwrap().extend(errors);
        fake
    }

    fn delivered(&self) -> Vec<Vec<String>> {
        self.delivered.lock().unwrap().clone()
    }

    fn attempts(&self) -> usize {
        self.attempts.lock().unwrap().len()
    }
}

impl LogExporter for Fake {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let bodies: Vec<String> = batch
            .iter()
            .map(|(record, _)| match record.body() {
                Some(AnyValue::String(s)) => s.to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        self.attempts.lock().unwrap().push(bodies.clone());
        let outcome = self.script.lock().unwrap().pop_front();
        match outcome {
            Some(error) => Err(error),
            None => {
                self.delivered.lock().unwrap().push(bodies);
                Ok(())
            }
        }
    }
}

fn unavailable() -> OTelSdkError {
    OTelSdkError::InternalFailure(
        "TonicLogsClient export failed with gRPC code: Unavailable: transport error: tcp connect error"
            .into(),
    )
}

fn invalid() -> OTelSdkError {
    OTelSdkError::InternalFailure("TonicLogsClient export failed with gRPC code: InvalidArgument".into())
}

fn logger() -> SdkLogger {
    SdkLoggerProvider::builder().build().logger("test")
}

fn record(logger: &SdkLogger, body: &str) -> SdkLogRecord {
    let mut r = logger.create_log_record();
    r.set_body(AnyValue::from(body.to_owned()));
    r.set_observed_timestamp(SystemTime::now());
    r
}

/// A finding whose record's body is `summary`.
fn finding(summary: &str) -> Finding {
    let mut f = Finding::new(
        FindingKind::ContainerExited,
        Severity::Warning,
        Subject::Node {
            node: "node-1".into(),
        },
        SystemTime::now(),
        &[summary],
    );
    f.summary = summary.to_owned();
    f
}

fn push(queue: &Queue, summary: &str) -> bool {
    queue.push(finding(summary), SystemTime::now())
}

fn config(batch_size: usize, retry_initial: Duration) -> DeliveryConfig {
    DeliveryConfig {
        endpoint: "http://test".into(),
        batch_size,
        batch_delay: Duration::from_millis(20),
        retry_initial,
        retry_max: retry_initial * 4,
    }
}

fn start(queue: &Arc<Queue>, fake: &Fake, config: DeliveryConfig) -> tokio::task::JoinHandle<()> {
    let delivery = Delivery::new(
        Arc::clone(queue),
        fake.clone(),
        logger(),
        InstrumentationScope::builder("test").build(),
        config,
    );
    tokio::spawn(delivery.run())
}

fn point(points: &[Point], labels: &[(&str, &str)]) -> u64 {
    points
        .iter()
        .find(|p| {
            p.labels.len() == labels.len()
                && p.labels
                    .iter()
                    .zip(labels)
                    .all(|((k, v), (lk, lv))| k == lk && v == lv)
        })
        .map_or(0, |p| p.value)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn a_full_queue_drops_the_new_finding_and_counts_it() {
    let telemetry = Telemetry::new();
    let queue = Queue::new(3, Arc::clone(&telemetry));
    let kept: Vec<bool> = (0..5).map(|n| push(&queue, &n.to_string())).collect();
    assert_eq!(kept, [true, true, true, false, false]);
    assert_eq!(queue.held(), 3);
    assert_eq!(queue.dropped(), 2);
    assert_eq!(
        point(
            &telemetry.dropped_points(),
            &[("sink", "otlp"), ("reason", "queue_full")]
        ),
        2
    );
}

#[tokio::test]
async fn the_oldest_findings_are_kept_and_leave_in_order_in_batches() {
    let telemetry = Telemetry::new();
    let queue = Arc::new(Queue::new(10, Arc::clone(&telemetry)));
    for n in 0..12 {
        push(&queue, &n.to_string());
    }
    let fake = Fake::default();
    let task = start(&queue, &fake, config(4, Duration::from_millis(1)));
    assert_eq!(queue.drained(Instant::now() + Duration::from_secs(5)).await, 0);
    assert_eq!(
        fake.delivered(),
        [
            strings(&["0", "1", "2", "3"]),
            strings(&["4", "5", "6", "7"]),
            strings(&["8", "9"])
        ]
    );
    assert_eq!(point(&telemetry.exported_points(), &[("sink", "otlp")]), 10);
    queue.close();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_batch_waits_up_to_the_batch_delay_to_fill() {
    let queue = Arc::new(Queue::new(10, Telemetry::new()));
    let fake = Fake::default();
    let mut config = config(3, Duration::from_millis(1));
    config.batch_delay = Duration::from_secs(2);
    let _task = start(&queue, &fake, config);
    push(&queue, "a");
    tokio::time::sleep(Duration::from_millis(50)).await;
    push(&queue, "b");
    assert!(fake.delivered().is_empty(), "still filling");
    assert_eq!(queue.drained(Instant::now() + Duration::from_secs(5)).await, 0);
    assert_eq!(
        fake.delivered(),
        [strings(&["a", "b"])],
        "one batch after the delay"
    );
}

#[tokio::test]
async fn a_retryable_failure_keeps_the_batch_until_it_is_delivered() {
    let telemetry = Telemetry::new();
    let queue = Arc::new(Queue::new(10, Arc::clone(&telemetry)));
    for n in 0..3 {
        push(&queue, &n.to_string());
    }
    let fake = Fake::failing([
        unavailable(),
        OTelSdkError::InternalFailure("HTTP export failed: network error".into()),
        OTelSdkError::Timeout(Duration::from_secs(1)),
    ]);
    let _task = start(&queue, &fake, config(10, Duration::from_millis(5)));
    // Held, and counted against the capacity, while it is retried.
    assert_eq!(queue.drained(Instant::now() + Duration::from_secs(5)).await, 0);
    assert_eq!(fake.attempts(), 4);
    assert_eq!(
        fake.delivered(),
        [strings(&["0", "1", "2"])],
        "once, whole, in order"
    );
    assert_eq!(point(&telemetry.export_failure_points(), &[("sink", "otlp")]), 3);
    assert_eq!(point(&telemetry.exported_points(), &[("sink", "otlp")]), 3);
    assert!(telemetry.dropped_points().is_empty());
}

#[tokio::test]
async fn a_batch_in_flight_counts_against_the_capacity() {
    let queue = Arc::new(Queue::new(2, Telemetry::new()));
    let fake = Fake::failing([unavailable()]);
    let _task = start(&queue, &fake, config(1, Duration::from_millis(200)));
    push(&queue, "first");
    // The first is taken and failed: it waits out its backoff, in flight.
    let deadline = Instant::now() + Duration::from_secs(5);
    while fake.attempts() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(push(&queue, "second"));
    assert!(!push(&queue, "third"), "first in flight + second = 2");
    assert_eq!(queue.drained(Instant::now() + Duration::from_secs(5)).await, 0);
    assert_eq!(fake.delivered(), [strings(&["first"]), strings(&["second"])]);
}

#[tokio::test]
async fn a_rejected_batch_is_dropped_counted_and_the_next_one_goes() {
    let telemetry = Telemetry::new();
    let queue = Arc::new(Queue::new(10, Arc::clone(&telemetry)));
    for n in 0..4 {
        push(&queue, &n.to_string());
    }
    let fake = Fake::failing([invalid()]);
    let _task = start(&queue, &fake, config(2, Duration::from_millis(1)));
    assert_eq!(queue.drained(Instant::now() + Duration::from_secs(5)).await, 0);
    assert_eq!(fake.attempts(), 2, "a rejection is not retried");
    assert_eq!(fake.delivered(), [strings(&["2", "3"])]);
    assert_eq!(
        point(
            &telemetry.dropped_points(),
            &[("sink", "otlp"), ("reason", "rejected")]
        ),
        2
    );
    assert_eq!(point(&telemetry.exported_points(), &[("sink", "otlp")]), 2);
}

#[tokio::test]
async fn a_flush_returns_what_is_left_when_the_collector_stays_away() {
    let queue = Arc::new(Queue::new(10, Telemetry::new()));
    for n in 0..3 {
        push(&queue, &n.to_string());
    }
    let fake = Fake::failing(std::iter::repeat_with(unavailable).take(1000));
    let _task = start(&queue, &fake, config(2, Duration::from_millis(10)));
    queue.hurry();
    let left = queue.drained(Instant::now() + Duration::from_millis(200)).await;
    assert_eq!(left, 3, "two in flight, one queued");
    assert!(fake.attempts() >= 2, "retried while flushing");
}

#[tokio::test]
async fn a_flush_cuts_a_long_backoff_short() {
    let queue = Arc::new(Queue::new(10, Telemetry::new()));
    push(&queue, "x");
    let fake = Fake::failing([unavailable()]);
    let _task = start(&queue, &fake, config(10, Duration::from_secs(600)));
    let deadline = Instant::now() + Duration::from_secs(5);
    while fake.attempts() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    queue.hurry();
    assert_eq!(queue.drained(Instant::now() + Duration::from_secs(5)).await, 0);
    assert_eq!(fake.delivered(), [strings(&["x"])]);
}

#[tokio::test]
async fn the_delivery_task_ends_once_the_sink_is_gone_and_all_is_delivered() {
    let queue = Arc::new(Queue::new(10, Telemetry::new()));
    let fake = Fake::default();
    let task = start(&queue, &fake, config(10, Duration::from_millis(1)));
    push(&queue, "last");
    queue.close();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fake.delivered(), [strings(&["last"])]);
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// An export of one record through the real exporter for `protocol` at `endpoint`.
async fn export_once(protocol: OtlpProtocol, endpoint: &str) -> OTelSdkResult {
    let config = OtlpConfig {
        endpoint: Some(endpoint.to_owned()),
        timeout: Duration::from_millis(500),
        ..OtlpConfig::default()
    };
    let exporter = super::log_exporter(&config, endpoint, protocol).unwrap();
    let record = record(&logger(), "x");
    let scope = InstrumentationScope::builder("test").build();
    exporter.export(LogBatch::new(&[(&record, &scope)])).await
}

#[tokio::test]
async fn real_exporters_to_a_closed_port_fail_retryably() {
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    for protocol in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
        let error = export_once(protocol, &endpoint).await.unwrap_err();
        assert_eq!(classify(&error), Verdict::Retry, "{protocol}: {error}");
    }
}

#[tokio::test]
async fn a_real_http_rejection_is_not_retried() {
    use axum::http::StatusCode;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&hits);
    let app = axum::Router::new().route(
        "/v1/logs",
        axum::routing::post(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { (StatusCode::BAD_REQUEST, "no") }
        }),
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let error = export_once(OtlpProtocol::HttpProtobuf, &endpoint)
        .await
        .unwrap_err();
    assert_eq!(classify(&error), Verdict::Reject, "{error}");
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the exporter did not retry it either"
    );
    server.abort();
}

#[tokio::test]
async fn the_sink_never_waits_for_an_unreachable_collector() {
    let telemetry = Telemetry::new();
    let config = OtlpConfig {
        endpoint: Some(format!("http://127.0.0.1:{}", closed_port())),
        queue_size: 5,
        retry_initial: Duration::from_millis(10),
        retry_max: Duration::from_millis(50),
        ..OtlpConfig::default()
    };
    let Some(mut otlp) = Otlp::start(
        &config,
        "node-1",
        std::path::Path::new("/"),
        Arc::clone(&telemetry),
    )
    .unwrap() else {
        panic!("an endpoint is configured");
    };
    assert!(otlp.metrics.is_some());
    let finding = crate::detect::Finding::new(
        crate::detect::finding::FindingKind::ContainerExited,
        crate::detect::finding::Severity::Warning,
        crate::detect::finding::Subject::Node {
            node: "node-1".into(),
        },
        std::time::SystemTime::now(),
        &[],
    );
    let started = std::time::Instant::now();
    for _ in 0..8 {
        otlp.sink.export(&finding).unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(otlp.flush.held(), 5);
    assert_eq!(otlp.flush.dropped(), 3);
    assert_eq!(point(&telemetry.queue_points(), &[("queue", "otlp")]), 5);
    assert_eq!(otlp.flush.flush(Duration::from_millis(100)).await, 5);
}

#[tokio::test]
async fn no_endpoint_no_export() {
    assert!(Otlp::start(
        &OtlpConfig::default(),
        "n",
        std::path::Path::new("/"),
        Telemetry::new()
    )
    .unwrap()
    .is_none());
}

#[test]
fn starting_outside_the_runtime_is_an_error_not_a_panic() {
    let config = OtlpConfig {
        endpoint: Some("http://127.0.0.1:4317".into()),
        ..OtlpConfig::default()
    };
    let e = Otlp::start(&config, "n", std::path::Path::new("/"), Telemetry::new()).unwrap_err();
    assert!(e.to_string().contains("tokio runtime"), "{e}");
}
