//! The OTLP queue's memory: 10,000 realistic OOMKilled findings (three pieces of evidence with
//! their raw values, owner, hint) queued while the collector is unreachable (a loopback port
//! nothing listens on), and the heap they hold, in all and per finding; with the time one
//! finding takes to queue (all the exporter thread waits for) and to become a log record (on
//! the delivery task).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant, SystemTime};

use opentelemetry::logs::{Logger as _, LoggerProvider as _};
use opentelemetry_sdk::logs::SdkLoggerProvider;
use podmortem::detect::finding::{Evidence, EvidenceSource, Finding, FindingKind, Severity, Subject};
use podmortem::export::otlp::{attributes, Otlp, OtlpConfig};
use podmortem::export::Sink as _;
use podmortem::model::Owner;
use podmortem::telemetry::Telemetry;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const FINDINGS: usize = 10_000;

/// An OOMKilled finding as the agent makes them, for pod `n`.
fn finding(n: usize) -> Finding {
    let id = format!("{n:0>16}3f1c9e27b4d85a60c1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4");
    let pod = format!("checkout-7d9f8c6b5-{n:05}");
    let at = SystemTime::now();
    let subject = Subject::Container {
        node: "ip-10-0-12-34.eu-west-1.compute.internal".into(),
        namespace: "shop".into(),
        pod: pod.clone(),
        pod_uid: format!("6f1c2d3e-aaaa-bbbb-cccc-{n:012}"),
        container: "app".into(),
        container_id: id.clone(),
        attempt: 3,
    };
    let mut f = Finding::new(
        FindingKind::OomKilled,
        Severity::Warning,
        subject,
        at,
        &["shop", &pod, "app"],
    );
    f.summary = format!(
        "container app of pod shop/{pod} was OOM-killed: the kernel killed pid 4242 (java) at the container's memory limit of 512 MiB (rss 511.7 MiB), restart 3"
    );
    f.hint = "The container needs more memory than its limit: raise resources.limits.memory, or find what grew (heap size, caches, a leak) with `kubectl top pod` and the application's own metrics.".into();
    f.count = 4;
    f.owner = Some(Owner {
        kind: "ReplicaSet".into(),
        name: "checkout-7d9f8c6b5".into(),
    });
    f.evidence = vec![
        Evidence::new(
            EvidenceSource::Kmsg,
            Some(at),
            "Memory cgroup out of memory: Killed process 4242 (java) total-vm:4823412kB, anon-rss:523924kB, file-rss:20480kB, shmem-rss:0kB, UID:1000 pgtables:1580kB oom_score_adj:985",
        )
        .with("pid", 4242)
        .with("comm", "java")
        .with("rss_bytes", 536_498_176u64)
        .with("memcg_limit_kib", 524_288)
        .with("task_memcg", format!("/kubepods/burstable/pod6f1c2d3e/{id}"))
        .with("oom_score_adj", 985),
        Evidence::new(EvidenceSource::ContainerdEvent, Some(at), "TaskOOM, then TaskExit: pid 4242 exited with status 137")
            .with("exit_status", 137)
            .with("pid", 4242),
        Evidence::new(EvidenceSource::Cri, Some(at), "ContainerStatus: state EXITED, exit code 137, reason \"OOMKilled\"")
            .with("exit_code", 137)
            .with("reason", "OOMKilled")
            .with("attempt", 3)
            .with("image", "registry.example.com/shop/checkout:2.14.1")
            .with("started_at", "2024-05-01T10:00:00.000000Z")
            .with("finished_at", "2024-05-01T10:07:12.345678Z")
            .with("log_path", format!("/var/log/pods/shop_{pod}_6f1c2d3e/app/3.log")),
    ];
    f
}

fn start(port: u16) -> Otlp {
    let config = OtlpConfig {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        ..OtlpConfig::default()
    };
    Otlp::start(
        &config,
        "ip-10-0-12-34",
        std::path::Path::new("/"),
        Telemetry::new(),
    )
    .unwrap()
    .unwrap()
}

fn main() {
    let findings: Vec<Finding> = (0..FINDINGS).map(finding).collect();
    let json = serde_json::to_string(&findings[0]).unwrap().len();
    // A loopback port nothing listens on: the collector is unreachable.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // A current-thread runtime: the delivery task runs only when this task waits, so the
    // figures below are the sink's and the queue's alone.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // Time, before the heap profiler slows every allocation down.
    let (queue_us, map_us) = runtime.block_on(async {
        let mut otlp = start(port);
        let started = Instant::now();
        for f in &findings {
            otlp.sink.export(f).unwrap();
        }
        let queue_us = started.elapsed().as_secs_f64() * 1e6 / FINDINGS as f64;
        let logger = SdkLoggerProvider::builder().build().logger("bench");
        let started = Instant::now();
        let records: Vec<_> = findings
            .iter()
            .map(|f| {
                let mut record = logger.create_log_record();
                attributes::fill(&mut record, f, SystemTime::now());
                record
            })
            .collect();
        let map_us = started.elapsed().as_secs_f64() * 1e6 / FINDINGS as f64;
        drop(records);
        (queue_us, map_us)
    });

    let _profiler = dhat::Profiler::builder().testing().build();
    runtime.block_on(async {
        let mut otlp = start(port);
        let before = dhat::HeapStats::get();
        for f in &findings {
            otlp.sink.export(f).unwrap();
        }
        let after = dhat::HeapStats::get();
        let held = otlp.flush.held();
        assert_eq!(held, FINDINGS, "the queue holds them all");
        let bytes = after.curr_bytes - before.curr_bytes;
        println!(
            "OTLP queue: {held} findings held with the collector unreachable: {:.1} MiB of heap, {:.0} bytes per finding (its JSON line: {json} bytes)",
            bytes as f64 / (1024.0 * 1024.0),
            bytes as f64 / held as f64
        );
        // The delivery task takes a batch and makes it records, fails to send it (each attempt
        // encodes the batch as a request) and keeps it while it waits to try again.
        let left = otlp.flush.flush(Duration::from_millis(500)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let waiting = dhat::HeapStats::get();
        println!(
            "OTLP queue with a batch of {} waiting to be sent again: {:.1} MiB of heap ({left} findings held); peak during an attempt {:.1} MiB",
            OtlpConfig::default().batch_size,
            (waiting.curr_bytes - before.curr_bytes) as f64 / (1024.0 * 1024.0),
            (waiting.max_bytes - before.curr_bytes) as f64 / (1024.0 * 1024.0)
        );
    });
    println!(
        "OTLP sink: {queue_us:.2} µs to queue one finding on the exporter thread; {map_us:.2} µs to make it a log record on the delivery task (means over {FINDINGS})"
    );
}
