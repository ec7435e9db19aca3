//! The bounded queue between the sink and the collector, and the task that empties it.
//!
//! The sink pushes findings from the exporter's blocking thread and never waits: a full queue
//! drops the new finding, counts it and says so (the first time, then at most every
//! [`DROP_REPORT_EVERY`] with the count). The delivery task takes up to `batch_size` findings
//! (waiting up to `batch_delay` for a batch to fill), makes them log records, exports them, and
//! on a retryable failure keeps the batch and sends it again after an exponential backoff,
//! until it is delivered; a batch the collector rejects for good is dropped, counted and
//! logged. Findings leave the queue in the order they came. The batch being sent still counts
//! against the capacity, so at most `capacity` findings are ever held.
//!
//! The queue holds findings, not log records: a finding takes about two thirds of the heap of
//! its record (whose evidence is a list of hash maps), and a batch is mapped once, by the
//! delivery task, off the exporter thread.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use opentelemetry::logs::Logger as _;
use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::logs::{LogBatch, LogExporter, SdkLogRecord, SdkLogger};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::attributes;
use super::failure::{classify, Verdict};
use crate::backoff::Backoff;
use crate::detect::Finding;
use crate::telemetry::Telemetry;

/// The sink's name in counters and logs.
pub const SINK: &str = "otlp";
/// How often, at most, dropped findings are reported after the first.
pub const DROP_REPORT_EVERY: Duration = Duration::from_secs(10);

/// A finding waiting for the collector, and when the sink took it (the record's observed time).
#[derive(Debug)]
struct Queued {
    finding: Finding,
    observed: SystemTime,
}

/// The findings waiting for the collector, shared by the sink, the delivery task and flushes.
#[derive(Debug)]
pub struct Queue {
    state: Mutex<State>,
    capacity: usize,
    /// A finding arrived, a flush was asked for, or the sink is gone.
    wake: Notify,
    /// A flush wants the batch in backoff sent now.
    hurry: Notify,
    /// A batch was delivered or dropped.
    progress: Notify,
    flushing: AtomicBool,
    closed: AtomicBool,
    telemetry: Arc<Telemetry>,
}

#[derive(Debug, Default)]
struct State {
    findings: VecDeque<Queued>,
    in_flight: usize,
    drops: Drops,
}

/// Findings dropped because the queue was full, for rate-limited reports.
#[derive(Debug, Default)]
struct Drops {
    total: u64,
    unreported: u64,
    last_report: Option<Instant>,
}

impl Queue {
    /// A queue holding at most `capacity` findings (at least one), counting in `telemetry`.
    pub fn new(capacity: usize, telemetry: Arc<Telemetry>) -> Queue {
        Queue {
            state: Mutex::new(State::default()),
            capacity: capacity.max(1),
            wake: Notify::new(),
            hurry: Notify::new(),
            progress: Notify::new(),
            flushing: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            telemetry,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a queue and counters: still consistent after a panic elsewhere.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds `finding`, observed at `observed`, at the end; false when the queue is full and
    /// the finding was dropped. Never waits for the collector.
    pub fn push(&self, finding: Finding, observed: SystemTime) -> bool {
        let mut state = self.lock();
        if state.findings.len() + state.in_flight >= self.capacity {
            state.drops.total += 1;
            state.drops.unreported += 1;
            drop(state);
            self.telemetry.dropped(SINK, "queue_full", 1);
            self.report_drops(true);
            return false;
        }
        state.findings.push_back(Queued { finding, observed });
        drop(state);
        self.wake.notify_one();
        true
    }

    /// Logs the findings dropped since the last report, if any: when `rate_limited`, only if
    /// this is the first report or the last was [`DROP_REPORT_EVERY`] ago.
    pub fn report_drops(&self, rate_limited: bool) {
        let mut state = self.lock();
        let drops = &mut state.drops;
        if drops.unreported == 0 {
            return;
        }
        let now = Instant::now();
        if rate_limited
            && drops
                .last_report
                .is_some_and(|last| now.duration_since(last) < DROP_REPORT_EVERY)
        {
            return;
        }
        let (dropped, total) = (drops.unreported, drops.total);
        drops.unreported = 0;
        drops.last_report = Some(now);
        drop(state);
        tracing::warn!(
            dropped,
            total,
            capacity = self.capacity,
            "OTLP queue full: dropped {dropped} new finding(s) ({total} in all) while {} are held for the collector",
            self.capacity
        );
    }

    /// Findings waiting and being sent.
    pub fn held(&self) -> usize {
        let state = self.lock();
        state.findings.len() + state.in_flight
    }

    /// Findings dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.lock().drops.total
    }

    fn queued(&self) -> usize {
        self.lock().findings.len()
    }

    /// Takes up to `n` findings from the front; they count as in flight until [`Queue::done`].
    fn take(&self, n: usize) -> Vec<Queued> {
        let mut state = self.lock();
        let n = n.min(state.findings.len());
        let batch: Vec<Queued> = state.findings.drain(..n).collect();
        state.in_flight = batch.len();
        batch
    }

    /// The batch in flight was delivered or dropped.
    fn done(&self) {
        self.lock().in_flight = 0;
        self.progress.notify_waiters();
    }

    /// Asks the delivery task to send what it holds now, without waiting to fill a batch or
    /// for the current backoff to end.
    pub fn hurry(&self) {
        self.flushing.store(true, Ordering::Release);
        self.wake.notify_one();
        self.hurry.notify_one();
    }

    /// No more records will come: the delivery task ends once the queue is empty.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    fn flushing(&self) -> bool {
        self.flushing.load(Ordering::Acquire)
    }

    fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Waits until nothing is held or `deadline` passes; returns how many are still held.
    pub async fn drained(&self, deadline: Instant) -> usize {
        loop {
            let progress = self.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            let held = self.held();
            if held == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, progress).await.is_err() {
                return self.held();
            }
        }
    }
}

/// How the delivery task sends batches.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// The collector, for logs.
    pub endpoint: String,
    /// The most findings in one export.
    pub batch_size: usize,
    /// How long findings wait for a batch to fill.
    pub batch_delay: Duration,
    /// The first wait before sending a failed batch again.
    pub retry_initial: Duration,
    /// The longest wait between attempts.
    pub retry_max: Duration,
}

/// Empties a [`Queue`] into a log exporter.
#[derive(Debug)]
pub struct Delivery<E> {
    queue: Arc<Queue>,
    exporter: E,
    logger: SdkLogger,
    scope: InstrumentationScope,
    config: DeliveryConfig,
    backoff: Backoff,
}

impl<E: LogExporter> Delivery<E> {
    /// A delivery task for `queue` through `exporter`, its records made by `logger`, whose
    /// instrumentation scope is `scope`.
    pub fn new(
        queue: Arc<Queue>,
        exporter: E,
        logger: SdkLogger,
        scope: InstrumentationScope,
        config: DeliveryConfig,
    ) -> Self {
        let backoff = Backoff::new(config.retry_initial, config.retry_max);
        Delivery {
            queue,
            exporter,
            logger,
            scope,
            config: DeliveryConfig {
                batch_size: config.batch_size.max(1),
                ..config
            },
            backoff,
        }
    }

    /// Delivers batches until the queue is closed and empty.
    pub async fn run(mut self) {
        while let Some(batch) = self.next_batch().await {
            self.deliver(batch).await;
        }
        let _ = self.exporter.shutdown();
    }

    /// The next batch: waits for a first finding, then up to `batch_delay` for a full batch
    /// (not while flushing). None once the queue is closed and empty.
    async fn next_batch(&self) -> Option<Vec<Queued>> {
        loop {
            if self.queue.queued() > 0 {
                break;
            }
            if self.queue.closed() {
                return None;
            }
            self.queue.wake.notified().await;
        }
        let deadline = Instant::now() + self.config.batch_delay;
        while self.queue.queued() < self.config.batch_size && !self.queue.flushing() && !self.queue.closed() {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                () = self.queue.wake.notified() => {}
            }
        }
        Some(self.queue.take(self.config.batch_size))
    }

    /// Makes `batch` log records and sends them until they are delivered or rejected.
    async fn deliver(&mut self, batch: Vec<Queued>) {
        let batch: Vec<SdkLogRecord> = batch
            .into_iter()
            .map(|Queued { finding, observed }| {
                let mut record = self.logger.create_log_record();
                attributes::fill(&mut record, &finding, observed);
                record
            })
            .collect();
        let n = batch.len();
        let count = u64::try_from(n).unwrap_or(u64::MAX);
        let pairs: Vec<(&SdkLogRecord, &InstrumentationScope)> =
            batch.iter().map(|record| (record, &self.scope)).collect();
        let mut failures = 0u32;
        loop {
            let result = self.exporter.export(LogBatch::new(&pairs)).await;
            let error = match result {
                Ok(()) => {
                    self.queue.telemetry.exported(SINK, count);
                    if failures > 0 {
                        tracing::info!(
                            endpoint = %self.config.endpoint,
                            findings = n,
                            failed_attempts = failures,
                            "OTLP export recovered: findings delivered"
                        );
                    }
                    self.backoff.reset();
                    break;
                }
                Err(error) => error,
            };
            self.queue.telemetry.export_failure(SINK);
            if classify(&error) == Verdict::Reject {
                self.queue.telemetry.dropped(SINK, "rejected", count);
                tracing::error!(
                    endpoint = %self.config.endpoint,
                    %error,
                    dropped = n,
                    "the OTLP collector rejected {n} finding(s) for good: dropped"
                );
                self.backoff.reset();
                break;
            }
            failures += 1;
            let delay = self.backoff.next_delay();
            if failures == 1 {
                tracing::warn!(
                    endpoint = %self.config.endpoint,
                    %error,
                    held = self.queue.held(),
                    "OTLP export failed: findings kept, retrying in {delay:?}"
                );
            } else {
                tracing::debug!(
                    endpoint = %self.config.endpoint,
                    %error,
                    attempt = failures,
                    held = self.queue.held(),
                    "OTLP export failed again: retrying in {delay:?}"
                );
            }
            self.queue.report_drops(true);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.queue.hurry.notified() => {}
            }
        }
        drop(pairs);
        drop(batch);
        self.queue.done();
        self.queue.report_drops(true);
    }
}
